#!/usr/bin/env bash
# The instruction budget of a proxied request, checked in CI.
#
#   bash benches/callgrind/budget.sh [BINARY]      (default: the release build)
#   KEEP=/tmp/prof bash benches/callgrind/budget.sh   (keeps the callgrind output)
#   WORKERS=2 bash benches/callgrind/budget.sh        (the same load over two workers)
#   REPLICAS=3 bash benches/callgrind/budget.sh       (a version with three endpoints)
#   REFUSED=1 bash benches/callgrind/budget.sh        (an unknown token: 401 answers)
#   ACCESS_LOG=1 bash benches/callgrind/budget.sh     (the access log on, to a file)
#
# Counts the instructions the gateway executes per proxied request (valgrind's
# callgrind: instructions, not seconds, so the noise of a shared machine does not blur
# it): one worker, access log off, metrics on, a 2-byte answer from an nginx upstream on
# loopback, h2load --h1 with 32 connections; 2,000 warm-up requests, then N (5,000)
# counted. Fails when the count is more than 3 % over the figure in
# benches/callgrind/budget.txt. That figure changes only in a commit that says why.
# Needs valgrind, nginx, h2load (nghttp2-client) and curl; .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-${CARGO_TARGET_DIR:-target}/release/switchyard}
N=${N:-5000}
BUDGET=$(grep -Eo '^[0-9]+' benches/callgrind/budget.txt | head -1)
for tool in valgrind callgrind_control nginx h2load curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "budget: $tool is missing"; exit 1; }
done
[ -x "$BIN" ] || { echo "budget: no binary at $BIN (cargo build --release)"; exit 1; }

free_port() { # a loopback port below the ephemeral range with no socket in any state
    local p
    for p in $(seq "$1" $(( $1 + 200 ))); do
        ss -Htan "sport = :$p" | grep -q . || { echo "$p"; return 0; }
    done
    return 1
}
UP=$(free_port 26100); GW=$(free_port 26400); AD=$(free_port 26700)
# further upstream ports for REPLICAS > 1: the same nginx listens on each
EXTRA=()
for i in $(seq 2 "${REPLICAS:-1}"); do EXTRA+=("$(free_port $((26100 + 20 * i)))"); done
W=$(mktemp -d /tmp/switchyard-budget.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

mkdir -p "$W/logs" "$W/tmp"
cat > "$W/upstream.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $W/upstream.pid;
error_log $W/logs/upstream.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $W/tmp/body;
    proxy_temp_path $W/tmp/proxy;
    fastcgi_temp_path $W/tmp/fastcgi;
    uwsgi_temp_path $W/tmp/uwsgi;
    scgi_temp_path $W/tmp/scgi;
    keepalive_requests 10000000;
    server {
        listen 127.0.0.1:$UP;
$(for p in "${EXTRA[@]}"; do echo "        listen 127.0.0.1:$p;"; done)
        location = / { return 200 "ok"; }
    }
}
EOF
nginx -p "$W/" -c "$W/upstream.conf" > "$W/logs/upstream.out" 2>&1 &
pids+=($!)

cat > "$W/gw.toml" <<EOF
workers = ${WORKERS:-1}
[log]
access_log = $([ -n "${ACCESS_LOG:-}" ] && echo true || echo false)
EOF
SWITCHYARD_ADMIN_TOKEN=budget-admin valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$W/cg.out" "$BIN" serve --config "$W/gw.toml" \
    --listen "127.0.0.1:$GW" --admin-listen "127.0.0.1:$AD" --store "sqlite://$W/s.db" \
    > "$W/logs/gw.log" 2>&1 &
GWP=$!
pids+=($GWP)
for _ in $(seq 1 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$AD/readyz" && break
    sleep 0.2
done
admin() {
    curl -sf -H 'authorization: Bearer budget-admin' -H 'content-type: application/json' \
        -X POST "http://127.0.0.1:$AD$1" -d "$2"
}
admin /v1/agents '{"name":"budget"}' >/dev/null
UPS="\"http://127.0.0.1:$UP\""
for p in "${EXTRA[@]}"; do UPS="$UPS,\"http://127.0.0.1:$p\""; done
admin /v1/agents/budget/versions "{\"upstreams\":[$UPS]}" >/dev/null
admin /v1/agents/budget/environments/sandbox/deploy '{"version":"v1"}' >/dev/null
TOKEN=$(admin /v1/agents/budget/environments/sandbox/tokens '{}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')

[ -n "${REFUSED:-}" ] && TOKEN=swy_unknown_to_this_gateway
load() {
    h2load --h1 -n "$1" -c 32 -t 1 -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$GW/"
}
load 2000 > /dev/null 2>&1
callgrind_control -i on "$GWP" > /dev/null
load "$N" > "$W/h2load.out" 2>&1
callgrind_control -i off "$GWP" > /dev/null
callgrind_control -d "$GWP" > /dev/null
sleep 1
# the answers expected: 2xx, or 4xx for REFUSED
ok=$(awk -v col="$([ -n "${REFUSED:-}" ] && echo 7 || echo 3)" '/^status codes:/ {print $col}' "$W/h2load.out")
if [ "${ok:-0}" != "$N" ]; then
    echo "budget: only ${ok:-0} of $N requests answered as expected ($([ -n "${REFUSED:-}" ] && echo 4xx || echo 2xx))"
    tail -n 20 "$W/h2load.out" "$W/logs/gw.log"
    exit 1
fi
if [ -n "${KEEP:-}" ]; then # keep the profile for callgrind_annotate
    mkdir -p "$KEEP" && cp "$W"/cg.out* "$KEEP"/
fi
total=$(cat "$W"/cg.out* | awk '/^summary:|^totals:/ {s += $2} END {print s + 0}')
per=$(( total / N ))
limit=$(( BUDGET * 103 / 100 ))
echo "instructions per proxied request: $per (budget $BUDGET, failing above $limit)"
if [ -n "${ACCESS_LOG:-}${REFUSED:-}" ] || [ "${REPLICAS:-1}" -gt 1 ]; then
    echo "(another kind of request than the budget's: not checked against it)"
    exit 0
fi
if [ "$per" -gt "$limit" ]; then
    echo "budget: $per instructions per request is more than 3 % over $BUDGET."
    echo "Find what grew (callgrind_annotate --inclusive=yes on a kept run) or, if the"
    echo "growth is meant, update benches/callgrind/budget.txt in a commit that says why."
    exit 1
fi
