#!/usr/bin/env bash
# Swaps under load: wrk at 32 connections against Switchyard, once alone and once while
# an admin loop moves the pointer (deploy v2 / roll back to v1) RATE times a second.
# Each repetition runs still, moving and a second still run ("again") back to back,
# in reverse order in even repetitions, so the moving run always sits between two still
# ones. The headline ratio is moving ÷ the mean of those two (a drift on a busy machine
# during the repetition cancels out); moving/still is the plain ratio, and again/still
# the same comparison with no moves at all: how far two runs differ here by chance.
# Prints throughput of each, the ratios per repetition and their medians, non-2xx
# responses and socket errors, and the admin move latency.
#
#   bash benches/load/swaps.sh        (DURATION=10 REPS=7 RATE=60 CONNS=32)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10}; REPS=${REPS:-7}; RATE=${RATE:-60}; CONNS=${CONNS:-32}
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk nginx"; exit 1; }
(cd "$ROOT" && cargo build --release --quiet && cargo bench --bench swaps --no-run --quiet 2>/dev/null)
SWAPS_BIN=$(ls -t "${CARGO_TARGET_DIR:-$ROOT/target}"/release/deps/swaps-* | grep -v '\.d$' | head -1)
prepare; trap stop_all EXIT; stop_all
start_nginx upstream upstream.conf "$UPSTREAM_PORT"
start_gateway gateway "$GATEWAY_PORT" "$GATEWAY_ADMIN" true
HDR="Authorization: Bearer $(cat "$BENCH_TMP/run/gateway.token")"
URL="http://127.0.0.1:$GATEWAY_PORT/"
wrk -t1 -c"$CONNS" -d2s -H "$HDR" "$URL" >/dev/null
OUT="$BENCH_TMP/results/swaps-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
still() { wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "$HDR" "$URL" > "$OUT/${2:-still}_$1.txt" 2>&1; }
moving() {
    ADMIN=127.0.0.1:$GATEWAY_ADMIN TOKEN=$ADMIN_TOKEN RATE=$RATE SECONDS=$DURATION "$SWAPS_BIN" > "$OUT/moves_$1.txt" 2>&1 &
    local mover=$!
    wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "$HDR" "$URL" > "$OUT/moving_$1.txt" 2>&1
    wait "$mover"
}
for rep in $(seq 1 "$REPS"); do
    if [ $((rep % 2)) = 1 ]; then
        still "$rep"; moving "$rep"; still "$rep" again
    else
        still "$rep" again; moving "$rep"; still "$rep"
    fi
    for k in still moving again; do
        f="$OUT/${k}_$rep.txt"
        printf '%s rep %s: %s req/s; %s\n' "$k" "$rep" "$(awk '/Requests\/sec:/{print $2}' "$f")" \
            "$(awk '/Socket errors|Non-2xx/{gsub(/^ +/,""); printf "%s; ", $0} END{if(!NR)print ""}' "$f")"
    done
    cat "$OUT/moves_$rep.txt"
done | tee "$OUT/summary.txt"
awk '/^still/{s[++a]=$4} /^moving/{m[++b]=$4} /^again/{g[++c]=$4} /non-2xx|Non-2xx|Socket errors/{bad=1}
  # median of x[1..n] (insertion sort; a handful of values)
  function median(x, n,   i, j, v) {
      for(i=2;i<=n;i++) { v=x[i]; for(j=i-1;j>=1 && x[j]>v;j--) x[j+1]=x[j]; x[j+1]=v }
      return (n%2) ? x[(n+1)/2] : (x[n/2]+x[n/2+1])/2 }
  END{ for(i=1;i<=a;i++) { r[i]=m[i]/s[i]; q[i]=g[i]/s[i]; d[i]=m[i]/((s[i]+g[i])/2)
           printf "rep %d: moving/mean of still and again = %.3f, moving/still = %.3f, again/still = %.3f\n", i, d[i], r[i], q[i] }
       printf "median moving/(mean of the still runs around it) = %.3f over %d repetitions\n", median(d, a), a
       printf "median moving/still = %.3f\n", median(r, a)
       printf "median again/still = %.3f (no moves: the spread of two runs here)\n", median(q, a)
       if(!bad) print "no socket errors, no non-2xx responses" }' "$OUT/summary.txt" | tee -a "$OUT/summary.txt"
