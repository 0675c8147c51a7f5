#!/bin/bash
# `make bench`: every footprint and performance figure in one table.
#
#   1. tests/measure/size.sh             Cortex-M4 object, sections, image
#   2. tests/measure/enroll_measure.sh   RAM (structures, painted stack,
#                                        heap) and CPU (callgrind) of an
#                                        RFC 8823 enrollment on tests/testenv
#   3. tests/measure/bench_pebble.sh     our CLI vs uacme vs lego on Pebble
#   4. tests/measure/table.py            the table, with the issue 9 targets
#
# Each step's full output goes to build/measure/results/*.log; the table
# is printed and written as Markdown to build/measure/results/bench.md.
# About 2 minutes. BENCH_RUNS (default 3) is passed to bench_pebble.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=build/measure/results
mkdir -p "$R"
rm -f "$R"/*.kv

step() {   # step NAME LOG COMMAND...
	local name=$1 log=$2
	shift 2
	printf 'bench: %-34s' "$name" >&2
	local t0=$SECONDS
	if "$@" >"$log" 2>&1; then
		echo " done ($((SECONDS - t0)) s, $log)" >&2
	else
		echo " FAILED, see $log:" >&2
		tail -20 "$log" >&2
		exit 1
	fi
}

step "size (Cortex-M4)" "$R/size.log" bash tests/measure/size.sh
step "RAM + CPU (RFC 8823 enrollment)" "$R/enroll.log" bash tests/measure/enroll_measure.sh all
step "Pebble: ours, uacme, lego" "$R/pebble.log" bash tests/measure/bench_pebble.sh
echo >&2
/usr/bin/python3 tests/measure/table.py "$R" --markdown "$R/bench.md"
echo "(Markdown: $R/bench.md; details: $R/size.log, enroll.log, pebble.log)"
