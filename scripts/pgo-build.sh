#!/usr/bin/env bash
# The production build: a release binary optimised with a profile of its own hot path
# (profile-guided optimisation).
#
#   rustup component add llvm-tools        # once: llvm-profdata
#   apt-get install nginx nghttp2-client curl   # once: the training's upstream and load
#   bash scripts/pgo-build.sh              # -> ${CARGO_TARGET_DIR:-target}/pgo/switchyard
#   bash scripts/pgo-build.sh --train BIN  # only the training load, against BIN (CI runs
#                                          # it on the plain build: every request succeeds)
#
# 1. builds the gateway instrumented (-Cprofile-generate) in a target directory of its
#    own, so the plain release build is left as it is;
# 2. trains it: one worker in front of an nginx upstream on loopback, proxied requests
#    as production sees them (HTTP/1.1 with 2-byte and 16 KiB answers, POSTs with a
#    body, h2c with streams in flight), bounded by count, not time;
# 3. merges the counts (llvm-profdata) and builds again with -Cprofile-use.
#
# The code is the same as the plain build's; the compiler lays it out by what ran:
# the request's path together, cold branches out of its way, inlining where calls are
# hot. On the proxied request that is about a fifth fewer instructions and half the
# instruction-cache misses (README, Performance).
# Knobs: PGO_DIR (scratch, default $CARGO_TARGET_DIR/pgo-work), PGO_REQUESTS (per
# training load, default 40000).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
WORK=${PGO_DIR:-$TARGET/pgo-work}
N=${PGO_REQUESTS:-40000}
TRAIN_ONLY=
if [ "${1:-}" = --train ]; then
    TRAIN_ONLY=${2:?--train needs the binary to train}
    [ -x "$TRAIN_ONLY" ] || { echo "pgo: no binary at $TRAIN_ONLY"; exit 1; }
fi

PROFDATA=
if [ -z "$TRAIN_ONLY" ]; then
    PROFDATA=$(ls "$(rustc --print sysroot)"/lib/rustlib/*/bin/llvm-profdata 2>/dev/null | head -1 || true)
    [ -n "$PROFDATA" ] && [ -x "$PROFDATA" ] || { echo "pgo: llvm-profdata missing: rustup component add llvm-tools"; exit 1; }
fi
for tool in nginx h2load curl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "pgo: $tool is missing (apt-get install nginx nghttp2-client curl)"; exit 1; }
done

say() { printf '[pgo %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

rm -rf "$WORK/profiles"; mkdir -p "$WORK/profiles"
BIN=$TRAIN_ONLY
if [ -z "$BIN" ]; then
    say "building the instrumented binary"
    RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$WORK/profiles" CARGO_TARGET_DIR="$WORK/gen" \
        cargo build --release --bin switchyard
    BIN=$WORK/gen/release/switchyard
fi

say "training"
export BENCH_TMP="$WORK/bench" GATEWAY_BIN="$BIN"
. "$ROOT/benches/load/lib.sh"
prepare
trap stop_all EXIT
stop_all
start_nginx upstream upstream.conf "$UPSTREAM_PORT"
start_gateway gateway "$GATEWAY_PORT" "$GATEWAY_ADMIN" true
auth="authorization: Bearer $(cat "$BENCH_TMP/run/gateway.token")"
url="http://127.0.0.1:$GATEWAY_PORT"
head -c 4096 /dev/zero | tr '\0' 'p' > "$WORK/post-body"
train() { # h2load arguments; every request must succeed
    local out
    out=$(h2load -t1 -n "$N" -H "$auth" "$@" 2>&1)
    grep -q "succeeded, 0 failed, 0 errored" <<<"$out" && grep -q "requests: $N total" <<<"$out" \
        || { echo "$out" | tail -8; echo "pgo: a training load failed: $*"; exit 1; }
    say "  $* : $(grep -Eo '[0-9.]+ req/s' <<<"$out" | head -1)"
}
train --h1 -c32 "$url/"
train --h1 -c128 "$url/"
train --h1 -c32 "$url/16k"
train --h1 -c32 -d "$WORK/post-body" "$url/"
train -c32 -m10 "$url/"
# the profile is written when the process exits: a graceful stop
pid=$(cat "$BENCH_TMP/run/gateway.pid")
kill -TERM "$pid"
for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && { echo "pgo: the trained gateway did not stop"; exit 1; }
rm -f "$BENCH_TMP/run/gateway.pid"
stop_all
trap - EXIT
if [ -n "$TRAIN_ONLY" ]; then say "training load done"; exit 0; fi
ls "$WORK"/profiles/*.profraw >/dev/null 2>&1 || { echo "pgo: no profile was written"; exit 1; }

"$PROFDATA" merge -o "$WORK/switchyard.profdata" "$WORK/profiles"
say "building with the profile"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$WORK/switchyard.profdata" CARGO_TARGET_DIR="$WORK/use" \
    cargo build --release --bin switchyard
mkdir -p "$TARGET/pgo"
cp "$WORK/use/release/switchyard" "$TARGET/pgo/switchyard"
say "done: $TARGET/pgo/switchyard"
