#!/bin/bash
# Run libFuzzer targets built by `make fuzz-build` (build/fuzz/<target>).
#
#   run_fuzz.sh -t SECONDS target...   time-limited campaign (make fuzz-smoke, make fuzz)
#   run_fuzz.sh -r RUNS target...      fixed number of inputs, -seed=1: deterministic
#                                      (make test counts each target as one test)
#
# A target's dictionary (tests/fuzz/fuzz_mail.dict, fuzz_json.dict for
# fuzz_json and fuzz_authz, fuzz_http.dict, fuzz_engine.dict) is passed
# with -dict.
# Each target starts from a fresh copy of tests/fuzz/corpus/<target>/ plus
# tests/fuzz/regressions/<target>/ in build/fuzz/work/<target>/, so nothing
# is ever written into the repository. Crash inputs go to
# build/fuzz/artifacts/<target>/. Prints one line per target (runs, exec/s,
# libFuzzer's cov: figure) and exits non-zero if any target crashed, timed
# out, leaked, broke an invariant or is missing.
#
# Environment: FUZZ_ARGS (extra libFuzzer flags), VERBOSE=1 (full log),
# FUZZ_KEEP=1 (keep build/fuzz/work/<target>/ from the last run and add
# the seeds to it: make fuzz-long).
set -u

cd "$(dirname "$0")/../.." || exit 1

mode=
amount=
case ${1:-} in
    -t) mode=time ;;
    -r) mode=runs ;;
    *)  echo "usage: $0 -t SECONDS|-r RUNS target..." >&2; exit 2 ;;
esac
amount=${2:-}
case $amount in
    ''|*[!0-9]*) echo "$0: $1 needs a number" >&2; exit 2 ;;
esac
shift 2
[ $# -gt 0 ] || { echo "$0: no target given" >&2; exit 2; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
for target in "$@"; do
    bin=build/fuzz/$target
    work=build/fuzz/work/$target
    art=build/fuzz/artifacts/$target
    log=build/fuzz/$target.log
    if [ ! -x "$bin" ]; then
        echo "FAIL  $target: $bin is missing (make fuzz-build)"
        failed=1
        continue
    fi
    case $target in
        fuzz_mail|fuzz_auth) max_len=16384 ;;
        fuzz_engine) max_len=16384 ;;
        *)         max_len=8192 ;;
    esac
    dict=
    case $target in
        fuzz_mail|fuzz_auth)  dict=tests/fuzz/fuzz_mail.dict ;;
        fuzz_json|fuzz_authz) dict=tests/fuzz/fuzz_json.dict ;;
        fuzz_http)            dict=tests/fuzz/fuzz_http.dict ;;
        fuzz_engine)          dict=tests/fuzz/fuzz_engine.dict ;;
    esac
    if [ -n "$dict" ]; then
        dict="-dict=$dict"
    fi
    if [ "${FUZZ_KEEP:-0}" != 1 ]; then
        rm -rf "$work"
    fi
    mkdir -p "$work" "$art"
    touch "$work.start"
    for seeds in tests/fuzz/corpus/$target tests/fuzz/regressions/$target; do
        if [ -d "$seeds" ]; then
            find "$seeds" -maxdepth 1 -type f -exec cp {} "$work"/ \;
        fi
    done
    if [ "$mode" = time ]; then
        limit="-max_total_time=$amount"
    else
        limit="-runs=$amount -seed=1"
    fi
    t0=$(date +%s%N)
    # shellcheck disable=SC2086  # $limit and $FUZZ_ARGS are word lists
    "$bin" $limit -max_len=$max_len -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$art/" $dict ${FUZZ_ARGS:-} \
        "$work" >"$log" 2>&1 </dev/null
    rc=$?
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    stats=$(grep -E '^#[0-9]+' "$log" | tail -1)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    # libFuzzer reports 0 exec/s for runs under a second: use our clock.
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    if [ "${speed:-0}" = 0 ] && [ -n "$runs" ] && [ "$ms" -gt 0 ]; then
        speed=$(( runs * 1000 / ms ))
    fi
    cov=$(echo "$stats" | sed -nE 's/.* cov: ([0-9]+).*/\1/p')
    ft=$(echo "$stats" | sed -nE 's/.* ft: ([0-9]+).*/\1/p')
    corp=$(echo "$stats" | sed -nE 's/.* corp: ([0-9]+).*/\1/p')
    if [ "$rc" -eq 0 ]; then
        echo "PASS  $target: ${runs:-?} runs in $((ms / 1000)).$(printf %03d $((ms % 1000))) s, ${speed:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}"
        if [ "${VERBOSE:-0}" = 1 ]; then sed 's/^/    | /' "$log"; fi
    else
        echo "FAIL  $target: fuzzer exit status $rc (log: $log)"
        # The report lines and the stack frames in our code, not libFuzzer's.
        grep -E 'ERROR|invariant violated|SUMMARY|runtime error|Test unit written|^ *#[0-9]+ .*(acme_smime|tests/fuzz)' "$log" |
            head -30 | sed 's/^/    | /'
        find "$art" -type f -newer "$work.start" | while read -r a; do
            echo "    reproduce: $bin $a"
        done
        failed=1
    fi
done
exit $failed
