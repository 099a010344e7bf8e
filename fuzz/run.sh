#!/usr/bin/env bash
# Runs every fuzz target (or those named) for a bounded time each, at the lowest CPU priority, and
# prints one summary line per target. Needs nightly and cargo-fuzz (`cargo install cargo-fuzz --locked`).
#   fuzz/run.sh            # 120 s per target
#   FUZZ_SECONDS=600 fuzz/run.sh jwt_internal webhook_url
# The corpus grown by a run is kept in fuzz/corpus/<target> (not committed; fuzz/seeds/<target> is),
# crashes land in fuzz/artifacts/<target>/, each run's libFuzzer log in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-120}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    exit 1
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
mkdir -p logs
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="logs/$t.log"
    # Built now, so that regressions are replayed against the code as it is at this moment.
    if ! nice -n 19 cargo +nightly fuzz build "$t" >"logs/$t.build.log" 2>&1; then
        cat "logs/$t.build.log" >&2
        exit 1
    fi
    # Regressions (inputs that crashed) are replayed one by one: a fixed bug stays fixed.
    if [ -d "regressions/$t" ]; then
        for input in "regressions/$t"/*; do
            if "target/$triple/release/$t" "$input" >"logs/$t.regression.log" 2>&1; then
                echo "$t: regression $input passes"
            else
                echo "$t: regression $input STILL CRASHES: $(grep -m1 -A1 panicked "logs/$t.regression.log" | tr '\n' ' ')"
                status=1
            fi
        done
    fi
    # One dictionary per target, from the shared pieces (libFuzzer takes one -dict).
    case "$t" in
        jwt_*) dicts=(json jwt) ;;
        spark_*) dicts=(json spark) ;;
        delivery_cursor) dicts=(cursor) ;;
        clever_*) dicts=(json clever) ;;
        webhook_url) dicts=(url json) ;;
        *) dicts=(json) ;;
    esac
    for d in "${dicts[@]}"; do cat "dicts/$d.dict"; done >"logs/$t.dict"
    if nice -n 19 cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- -dict="logs/$t.dict" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        result="nothing found"
    else
        result="CRASH: $(grep -m1 panicked "$log" || echo "see $log") (input in artifacts/$t/)"
        status=1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9a-zA-Z]+' || echo "?")
    printf '%-20s %5ss  %10s execs  %-40s %s\n' "$t" "$seconds" "$execs" "$last" "$result"
done
exit $status
