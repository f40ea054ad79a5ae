# Shared helpers of the load comparison (sourced). Loopback only; scratch under
# $BENCH_TMP. Adapted from the project's shared bench harness.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/../.." && pwd)"
BENCH_TMP="${BENCH_TMP:-/tmp/switchyard-bench}"
UPSTREAM_PORT=28080
UPSTREAM_H2C_PORT=28090
NGINX_PORT=28081
NGINX_H2C_PORT=28083
HYPER_PORT=28084
GATEWAY_PORT=28085
GATEWAY_ADMIN=28086
NOMETRICS_PORT=28087
NOMETRICS_ADMIN=28088
NGINX_LOG_PORT=28082
LOGGING_PORT=28091
LOGGING_ADMIN=28092
PGO_PORT=28093
PGO_ADMIN=28094
REPLICA_PORTS="$UPSTREAM_PORT 28095 28096"   # upstream.conf listens on all three
NGINX3_PORT=28097
GATEWAY3_PORT=28098
GATEWAY3_ADMIN=28099
NGINX_FIELDS_PORT=28100
ADMIN_TOKEN=bench-admin-token
NGINX="${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}"
HYPER_BIN="${HYPER_BIN:-/tmp/hypermin-bin/hyper-min}"
GATEWAY_BIN="${GATEWAY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/switchyard}"
# the production build of scripts/pgo-build.sh (target gateway-pgo)
GATEWAY_PGO_BIN="${GATEWAY_PGO_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/pgo/switchyard}"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local i
    for i in $(seq 1 200); do
        kill -0 "$2" 2>/dev/null || { log "pid $2 exited before port $1 opened"; return 1; }
        port_open "$1" && return 0
        sleep 0.05
    done
    log "port $1 did not open"; return 1
}

prepare() {
    mkdir -p "$BENCH_TMP"/{logs,tmp,www,run,results,gw}
    [ -s "$BENCH_TMP/www/16k" ] || head -c 16384 /dev/zero | tr '\0' 'x' > "$BENCH_TMP/www/16k"
}

start_nginx() { # NAME CONF PORT  (CONF relative to this directory, or absolute)
    local conf=$2
    [[ $conf = /* ]] || conf="$BENCH_DIR/$conf"
    "$NGINX" -p "$BENCH_TMP/" -c "$conf" -t -q
    "$NGINX" -p "$BENCH_TMP/" -c "$conf" >"$BENCH_TMP/logs/$1.out" 2>&1 &
    echo $! > "$BENCH_TMP/run/$1.pid"
    wait_port "$3" "$!"
}

# derive_nginx NAME TMP PORT [SED_ARGS...]: proxy-nginx.conf as NAME (its own pid, error
# log and temp paths TMP, listening on PORT only, no h2c listener) with SED_ARGS applied
# too; prints the derived file's path
derive_nginx() {
    local name=$1 tmp=$2 port=$3 conf="$BENCH_TMP/run/$1.conf"
    shift 3
    sed -e "s#^pid proxy-nginx.pid;#pid $name.pid;#" \
        -e "s#logs/proxy-nginx.err#logs/$name.err#" \
        -e "s#tmp/px_#tmp/${tmp}_#" \
        -e "s#listen 127.0.0.1:$NGINX_PORT #listen 127.0.0.1:$port #" \
        -e "/listen 127.0.0.1:$NGINX_H2C_PORT /d" \
        "$@" "$BENCH_DIR/proxy-nginx.conf" > "$conf"
    echo "$conf"
}

# nginx as the reverse proxy of proxy-nginx.conf, on NGINX_LOG_PORT, with its access log
# on (the `combined` format, to logs/proxy-nginx-log.access, unbuffered: its default)
start_nginx_logging() {
    local conf
    rm -f "$BENCH_TMP/logs/proxy-nginx-log.access"
    conf=$(derive_nginx proxy-nginx-log pl "$NGINX_LOG_PORT" \
        -e "s#^    access_log off;#    access_log logs/proxy-nginx-log.access combined;#")
    grep -q "access_log logs/proxy-nginx-log.access" "$conf" || { log "proxy-nginx.conf changed: cannot derive the logging variant"; return 1; }
    start_nginx proxy-nginx-log "$conf" "$NGINX_LOG_PORT"
}

# nginx as the reverse proxy of proxy-nginx.conf with the three replica ports in its
# upstream block (its default round robin), on NGINX3_PORT
start_nginx_replicas() {
    local conf servers="" p
    for p in $REPLICA_PORTS; do servers="$servers        server 127.0.0.1:$p;\n"; done
    conf=$(derive_nginx proxy-nginx-3 p3 "$NGINX3_PORT" \
        -e "s#^        server 127.0.0.1:$UPSTREAM_PORT;#$servers#")
    [ "$(grep -c '        server 127.0.0.1:' "$conf")" = 3 ] || { log "proxy-nginx.conf changed: cannot derive the 3-replica variant"; return 1; }
    start_nginx proxy-nginx-3 "$conf" "$NGINX3_PORT"
}

# nginx as the reverse proxy of proxy-nginx.conf doing the header work the gateway does on
# a forwarded request, on NGINX_FIELDS_PORT: the client's `authorization` (the gateway's
# token) is not forwarded, the seven fields the gateway sets go upstream (x-forwarded-for,
# -proto, -host, x-request-id from nginx's $request_id, x-switchyard-agent, -environment,
# -version as the bench deployment has them), and the answer gets x-switchyard-version and
# x-request-id. wrk sends it the gateway's `authorization` field (hdr_of).
start_nginx_fields() {
    local conf i='            '
    local set="${i}proxy_set_header Authorization \"\";\n${i}proxy_set_header X-Forwarded-For \$remote_addr;\n${i}proxy_set_header X-Forwarded-Proto \$scheme;\n${i}proxy_set_header X-Forwarded-Host \$http_host;\n${i}proxy_set_header X-Request-Id \$request_id;\n${i}proxy_set_header X-Switchyard-Agent bench;\n${i}proxy_set_header X-Switchyard-Environment staging;\n${i}proxy_set_header X-Switchyard-Version v1;\n${i}add_header X-Switchyard-Version v1 always;\n${i}add_header X-Request-Id \$request_id always;"
    conf=$(derive_nginx proxy-nginx-fields pf "$NGINX_FIELDS_PORT" \
        -e "s#^${i}proxy_set_header Connection \"\";#${i}proxy_set_header Connection \"\";\n$set#")
    grep -q 'X-Switchyard-Version v1;' "$conf" || { log "proxy-nginx.conf changed: cannot derive the fields variant"; return 1; }
    start_nginx proxy-nginx-fields "$conf" "$NGINX_FIELDS_PORT"
}

# start_gateway NAME PORT ADMIN_PORT METRICS(true|false) [ACCESS_LOG(false|true)] [REPLICAS(1|3)]
# (with the access log: level "info", lines to logs/NAME.out like nginx's to a file)
start_gateway() {
    local dir="$BENCH_TMP/gw/$1"
    rm -rf "$dir"; mkdir -p "$dir"
    cat > "$dir/switchyard.toml" <<CONF
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:$3"
store = "sqlite://$dir/switchyard.db"
workers = ${GATEWAY_WORKERS:-1}
[limits]
upstream_idle_per_host = 1024
[log]
level = "$([ "${5:-false}" = true ] && echo info || echo warn)"
access_log = ${5:-false}
[metrics]
enabled = $4
CONF
    SWITCHYARD_ADMIN_TOKEN=$ADMIN_TOKEN "${GW_BIN:-$GATEWAY_BIN}" serve --config "$dir/switchyard.toml" >"$BENCH_TMP/logs/$1.out" 2>&1 &
    echo $! > "$BENCH_TMP/run/$1.pid"
    wait_port "$2" "$!"
    local a="http://127.0.0.1:$3" h="authorization: Bearer $ADMIN_TOKEN"
    curl -fsS -H "$h" -d '{"name":"bench"}' "$a/v1/agents" >/dev/null
    local ups="\"http://127.0.0.1:$UPSTREAM_PORT\"" p
    if [ "${6:-1}" = 3 ]; then
        ups=""; for p in $REPLICA_PORTS; do ups="$ups${ups:+,}\"http://127.0.0.1:$p\""; done
    fi
    curl -fsS -H "$h" -d "{\"upstreams\":[$ups]}" "$a/v1/agents/bench/versions" >/dev/null
    curl -fsS -H "$h" -d "{\"upstreams\":[$ups],\"description\":\"v2\"}" "$a/v1/agents/bench/versions" >/dev/null
    curl -fsS -H "$h" -d '{"version":"v1"}' "$a/v1/agents/bench/environments/staging/deploy" >/dev/null
    curl -fsS -H "$h" -d '{}' "$a/v1/agents/bench/environments/staging/tokens" \
        | sed -n 's/.*"token":"\([^"]*\)".*/\1/p' > "$BENCH_TMP/run/$1.token"
}

start_hyper() {
    [ -x "$HYPER_BIN" ] || { log "no hyper peer at $HYPER_BIN (../shared/bench/build-hyper-peer.sh); skipping it"; return 1; }
    local v=${HYPER_VARIANT:-tpc1-conn} client=legacy
    case "-$v-" in *-conn-*) client=conn ;; esac
    HYPER_LISTEN="127.0.0.1:$HYPER_PORT" HYPER_UPSTREAM="127.0.0.1:$UPSTREAM_PORT" HYPER_MODE="${v%%-*}" \
        HYPER_CLIENT=$client "$HYPER_BIN" >"$BENCH_TMP/logs/hyper.out" 2>&1 &
    echo $! > "$BENCH_TMP/run/hyper.pid"
    wait_port "$HYPER_PORT" "$!"
}

stop_all() {
    local f pid
    for f in "$BENCH_TMP"/run/*.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$f"
    done
}

# pids_of NAME: the processes doing the work (nginx: the workers)
pids_of() {
    local f="$BENCH_TMP/run/$1.pid"
    [ -f "$f" ] || return 0
    case $1 in
        upstream|proxy-nginx|proxy-nginx-log|proxy-nginx-3|proxy-nginx-fields) pgrep -P "$(cat "$f")" || true ;;
        *) cat "$f" ;;
    esac
}

cpu_ticks() {
    local p t=0 v
    for p in "$@"; do
        v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null) || v=0
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

to_ms() {
    awk -v v="$1" 'BEGIN{
        if (v ~ /us$/) { sub(/us$/,"",v); printf "%.3f", v/1000 }
        else if (v ~ /ms$/) { sub(/ms$/,"",v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/,"",v); printf "%.3f", v*1000 }
        else print "NA" }'
}
