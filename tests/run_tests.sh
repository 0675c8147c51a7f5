#!/bin/bash
# Run every unit-test binary built by `make test-bins` (both configurations:
# build/test-gcc and build/test-asan), plus a few build checks, and print one
# closing line "N passed, N failed". Exit non-zero if anything failed or if no
# unit test ran.
#
# Counting, per binary (cmocka 1.1.5 standard output):
#   declared = sum of "[==========] Running N test(s)."
#   passed   = sum of "[  PASSED  ] N test(s)."
#   failed   = sum of "[  FAILED  ] N test(s), listed below:"
#   skipped  = sum of "[  SKIPPED ] N test(s), listed below:"
#   passed is raised to the number of "[       OK ] name" lines if higher
#   (a binary that crashes prints no summary). Tests declared but never
#   reported (crash or sanitizer abort mid-run) count as failed. A binary that
#   exits non-zero with no failure counted, is missing, or times out counts as
#   at least 1 failure.
# Each extra check below counts as one test, and so does each libFuzzer
# target of tests/fuzz/ (built by `make fuzz-build`): it replays its seeds
# and regressions, then runs FUZZ_RUNS inputs with -seed=1 (deterministic;
# fuzz_engine a quarter of them), and fuzz_engine's complete seeds must
# still reach ACME_SMIME_DONE.
#
# Environment: TEST_TIMEOUT (seconds per binary, default 600), VERBOSE=1 to
# print every binary's output, not only failing ones, FUZZ_RUNS (inputs per
# fuzz target, default 20000; 0 skips the fuzz targets).
set -u

cd "$(dirname "$0")/.." || exit 1

TEST_TIMEOUT=${TEST_TIMEOUT:-600}
FUZZ_RUNS=${FUZZ_RUNS:-20000}
export CMOCKA_MESSAGE_OUTPUT=stdout
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

CONFIGS="test-gcc test-asan"
LIB_OBJS="build/gcc/acme_smime.o build/clang/acme_smime.o"
HEAP_FUNCS="malloc calloc realloc free strdup strndup aligned_alloc posix_memalign"

total_passed=0
total_failed=0
total_skipped=0
unit_ran=0

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# sum_matches REGEX: add up capture group 1 of every line of $log matching
# the extended regex.
sum_matches() {
    sed -nE "s/.*$1.*/\\1/p" "$log" | awk '{ s += $1 } END { print s + 0 }'
}

show_log() {
    sed 's/^/    | /' "$log"
}

run_binary() {
    local label=$1 bin=$2 rc declared passed failed skipped ok_lines lost why
    if [ ! -x "$bin" ]; then
        echo "FAIL  $label: binary $bin is missing (build failed?)"
        total_failed=$((total_failed + 1))
        return
    fi

    timeout "$TEST_TIMEOUT" "$bin" >"$log" 2>&1 </dev/null
    rc=$?

    declared=$(sum_matches '\[==========\] Running ([0-9]+) test\(s\)\.')
    passed=$(sum_matches '\[  PASSED  \] ([0-9]+) test\(s\)\.')
    failed=$(sum_matches '\[  FAILED  \] ([0-9]+) test\(s\), listed below:')
    skipped=$(sum_matches '\[  SKIPPED \] ([0-9]+) test\(s\), listed below:')
    # A crash leaves no summary: then count the tests that printed OK.
    ok_lines=$(grep -c '^\[       OK \] ' "$log")
    if [ "$ok_lines" -gt "$passed" ]; then
        passed=$ok_lines
    fi

    lost=$((declared - passed - failed - skipped))
    if [ "$lost" -gt 0 ]; then
        failed=$((failed + lost))
    fi
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        failed=1
    fi

    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
    total_skipped=$((total_skipped + skipped))
    unit_ran=$((unit_ran + passed + failed + skipped))

    if [ "$failed" -eq 0 ]; then
        echo "PASS  $label: $passed of $declared ok, $skipped skipped"
        if [ "${VERBOSE:-0}" = 1 ]; then show_log; fi
    else
        case $rc in
            0)   why="exit status 0" ;;
            124) why="timed out after ${TEST_TIMEOUT}s" ;;
            *)   if [ "$rc" -gt 128 ]; then
                     why="killed by signal $((rc - 128))"
                 else
                     why="exit status $rc"
                 fi ;;
        esac
        echo "FAIL  $label: $failed of $declared not ok ($why)"
        show_log
    fi
}

# run_check NAME COMMAND...: one extra test, passes when COMMAND succeeds.
run_check() {
    local name=$1
    shift
    if "$@" >"$log" 2>&1; then
        echo "PASS  check: $name"
        total_passed=$((total_passed + 1))
    else
        echo "FAIL  check: $name"
        show_log
        total_failed=$((total_failed + 1))
    fi
}

check_built() {
    local obj ok=0
    for obj in $LIB_OBJS; do
        if [ ! -f "$obj" ]; then
            echo "$obj is missing"
            ok=1
        elif [ "$obj" -ot acme_smime.c ] || [ "$obj" -ot acme_smime.h ]; then
            echo "$obj is older than the source (stale build)"
            ok=1
        fi
    done
    return $ok
}

check_no_heap() {
    local obj sym ok=0
    for obj in $LIB_OBJS; do
        [ -f "$obj" ] || { echo "$obj is missing"; ok=1; continue; }
        for sym in $(nm -u "$obj" | awk '{ print $NF }'); do
            sym=${sym%%@*}
            for f in $HEAP_FUNCS; do
                if [ "$sym" = "$f" ]; then
                    echo "$obj references $sym"
                    ok=1
                fi
            done
        done
    done
    return $ok
}

run_check "acme_smime.c builds warning-free with gcc and clang" check_built
run_check "acme_smime.c never calls the heap allocator" check_no_heap

nsrc=0
for src in tests/unit/test_*.c; do
    [ -e "$src" ] || continue
    nsrc=$((nsrc + 1))
    name=$(basename "$src" .c)
    for cfg in $CONFIGS; do
        run_binary "$cfg/$name" "build/$cfg/$name"
    done
done

if [ "$FUZZ_RUNS" -gt 0 ]; then
    for src in tests/fuzz/fuzz_*.c; do
        [ -e "$src" ] || continue
        name=$(basename "$src" .c)
        runs=$FUZZ_RUNS
        # Whole enrollments: about 800 a second, a quarter of the budget.
        if [ "$name" = fuzz_engine ]; then
            runs=$(( (FUZZ_RUNS + 3) / 4 ))
        fi
        run_check "$name ($runs runs)" timeout "$TEST_TIMEOUT" \
            bash tests/fuzz/run_fuzz.sh -r "$runs" "$name"
    done
    # The engine's complete seeds still end in ACME_SMIME_DONE.
    run_check "fuzz_engine seeds reach DONE" \
        build/fuzz/fuzz_engine_replay --expect-done tests/fuzz/corpus/fuzz_engine/full-*
fi

# Integration scripts print PASS/FAIL lines and end with "N passed, N
# failed"; their counts join the totals. A script that dies without that
# line counts as one failure. suite_run SCRIPT OUT runs one, its output
# into OUT and its time into OUT.time; suite_report NAME OUT counts it.
suite_run() {
    local t0=$SECONDS
    if timeout "$SUITE_TIMEOUT" bash "$1" >"$2" 2>&1; then :; fi
    echo $((SECONDS - t0)) >"$2.time"
}

suite_report() {
    local name=$1 out=$2 last p f t
    t=$(cat "$out.time" 2>/dev/null || echo "?")
    last=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
    if [ -z "$last" ]; then
        echo "FAIL  suite: $name (no summary line, $t s)"
        sed 's/^/    | /' "$out"
        total_failed=$((total_failed + 1))
        return
    fi
    p=${last%% passed*}
    f=${last#*passed, }
    f=${f%% failed*}
    total_passed=$((total_passed + p))
    total_failed=$((total_failed + f))
    if [ "$f" -eq 0 ]; then
        echo "PASS  suite: $name ($p passed, $t s)"
    else
        echo "FAIL  suite: $name ($p passed, $f failed, $t s)"
        grep -E '^FAIL' "$out" | sed 's/^/    /'
        [ "${VERBOSE:-0}" = 1 ] && sed 's/^/    | /' "$out"
    fi
}

SUITE_TIMEOUT=${SUITE_TIMEOUT:-900}
# Suites that start the test environment take free ports: nothing else
# running on this machine can collide with them. They spend most of their
# time waiting on servers and timers, so they run in two lanes at once
# (SUITE_LANES=1: one after the other); results are reported in order.
export TESTENV_PORTS=auto
LANE_A="tests/examples_test.sh tests/pebble/cli_pebble_test.sh tests/ca/selftest.sh
    tests/lwip/lwip_test.sh tests/dns_txt_test.sh tests/e2e/rfc8823_test.sh
    tests/valgrind_test.sh"
LANE_B="tests/e2e/mailbox_test.sh tests/e2e/smime_test.sh tests/e2e/powercut_test.sh
    tests/e2e/kill9_test.sh tests/e2e/renewal_test.sh"
if [ "${INTEGRATION:-1}" != 0 ]; then
    suites_dir=$(mktemp -d)
    out_of() { echo "$suites_dir/$(echo "$1" | tr / _)"; }
    run_lane() {
        local suite
        for suite in $1; do
            [ -e "$suite" ] && suite_run "$suite" "$(out_of "$suite")"
        done
        return 0
    }
    if [ "${SUITE_LANES:-2}" = 1 ]; then
        run_lane "$LANE_A $LANE_B"
    else
        run_lane "$LANE_B" &
        lane_b=$!
        run_lane "$LANE_A"
        wait "$lane_b"
    fi
    for suite in $LANE_A $LANE_B; do
        [ -e "$suite" ] && suite_report "$suite" "$(out_of "$suite")"
    done
    rm -rf "$suites_dir"
    # The README's first command: its script ends with the chain check.
    run_check "make demo's enrollment (tests/demo.sh)" bash tests/demo.sh
fi

if [ "$unit_ran" -eq 0 ]; then
    echo "ERROR: no unit test ran ($nsrc test source(s) in tests/unit)"
fi

summary="$total_passed passed, $total_failed failed"
if [ "$total_skipped" -gt 0 ]; then
    summary="$summary, $total_skipped skipped"
fi
echo "# run time $SECONDS s"
echo "$summary"

[ "$total_failed" -eq 0 ] && [ "$unit_ran" -gt 0 ]
