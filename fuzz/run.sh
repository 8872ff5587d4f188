#!/usr/bin/env bash
# Runs fuzz targets one after the other, each for RUNS inputs (default 1,000,000), from the
# committed seeds (fuzz/seeds/TARGET) and whatever corpus earlier runs kept (fuzz/corpus/TARGET),
# and prints one line per target: inputs run, seconds, and the outcome. A crash leaves its input
# in fuzz/artifacts/TARGET/ and the run's output in fuzz/artifacts/logs/TARGET.log.
#
#   fuzz/run.sh                          # every target
#   RUNS=100000 fuzz/run.sh worker_reply # some targets, fewer inputs
set -uo pipefail
cd "$(dirname "$0")"
runs="${RUNS:-1000000}"
if [[ $# -gt 0 ]]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi
mkdir -p artifacts/logs
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    log="artifacts/logs/$t.log"
    start=$(date +%s)
    dict=()
    case "$t" in
        booking_request | worker_command | worker_reply) dict=(-dict=dicts/messages.dict) ;;
    esac
    if cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -runs="$runs" -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
        outcome=ok
    else
        outcome="CRASH (see $log)"
        failed=1
    fi
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    printf '%-28s %10s inputs %6s s  %s\n' "$t" "$execs" "$(($(date +%s) - start))" "$outcome"
done
exit $failed
