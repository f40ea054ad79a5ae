#!/usr/bin/env bash
# Runs every fuzz target (cargo-fuzz, libFuzzer) over its corpus in fuzz/corpus.
#   bash fuzz/run.sh 25            each target for 25 seconds (what CI runs)
#   bash fuzz/run.sh runs=1000000  each target for 1,000,000 executions
# New inputs go to a temporary directory, so the committed corpus only changes when
# you copy them over (after `cargo fuzz cmin`). Crashes land in fuzz/artifacts/.
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); the stable toolchain is
# enough: RUSTC_BOOTSTRAP lets it pass the sanitizer-coverage flags. No sanitizer:
# the gateway forbids unsafe code, and coverage-guided runs are 5x faster without it.
set -euo pipefail
cd "$(dirname "$0")"
limit="${1:-25}"
case "$limit" in
    runs=*) arg="-runs=${limit#runs=}" ;;
    *) arg="-max_total_time=$limit" ;;
esac
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-target}/fuzz"
cargo fuzz build -s none --target-dir "$target_dir"
new=$(mktemp -d /tmp/switchyard-fuzz.XXXXXX)
trap 'rm -rf "$new"' EXIT
for t in token_header config routing_ops admin_api; do
    mkdir -p "$new/$t" "corpus/$t"
    echo "== $t ($arg)"
    # the fuzzer's own exit status decides, read before any filter runs (a pipe into
    # `grep … || true` would hide it)
    status=0
    cargo fuzz run -s none --target-dir "$target_dir" "$t" "$new/$t" "corpus/$t" -- \
        "$arg" -print_final_stats=1 > "$new/$t.log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY)|panicked|Crash' "$new/$t.log" || true
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $t failed (exit $status); the end of its output:"
        tail -n 40 "$new/$t.log"
        exit 1
    fi
done
