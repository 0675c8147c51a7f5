#!/bin/bash
# shellcheck disable=SC2154 # counts come from ev_summary (eval)
# Power cut at every flash operation of a complete RFC 8823 enrollment,
# process level (issue 3), with the CLI's test hook
# ACME_SMIME_FLASH_CUT_AFTER=k: the k-th erase/program is left half done and
# the flash refuses everything after it, so the run fails (exit 7).
#
# A complete run first tells the number N of flash operations. Then, for
# every k in 1..N, with a fresh store and an empty mailbox: the run cut at
# operation k, then a run without the cut ("after the reboot") that must
# complete (exit 0) with a certificate that verifies. Counted at the test
# CA over both runs: at most one account created (the key is stored before
# newAccount), at most one response per challenge, no decoy answered; and
# no challenge mail (Message-ID) answered again by the second run once a
# reply to it may have left in the first (its SMTP session had begun).
#
# The cases run in E2E_LANES (default 3) parallel lanes, each with its own
# test environment, so the CA events of a case are its own. One
# "PASS/FAIL powercut-k<k>" line per k, last line "N passed, N failed".
# About 75 s with three lanes (85 s with two) on 2 cores.

# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

LANES=${E2E_LANES:-3}
CLI_TIMEOUT=60
for l in $(seq 1 "$LANES"); do
	env_start "lane$l" || e2e_abort "tests/testenv start failed" "$E2E_T/lane$l.start.log"
done
EMAIL=$(envget "$E2E_T/lane1" EMAIL)

# --- the reference run ---------------------------------------------------------

D=$E2E_T/lane1
n=$(ev_lines "$D")
cli "$D" "$E2E_T/ref.flash" "$E2E_T/ref.log" --out-cert "$E2E_T/ref.pem" --out-key "$E2E_T/ref.key"
RC=$?
N=$(stat_of "$E2E_T/ref.log" 'flash operations')
if [ "$RC" -ne 0 ] || [ -z "$N" ] || [ "$N" -lt 1 ]; then
	e2e_abort "the complete run failed (exit $RC)" "$E2E_T/ref.log"
fi
if why=$(cert_check "$D" "$E2E_T/ref.pem" "$E2E_T/ref.key" "$EMAIL"); then
	pass complete-run
else
	fail complete-run "$why" "$E2E_T/ref.log"
fi
echo "# $N flash operations in a complete enrollment: cutting at each, $LANES lanes"

# --- one k ---------------------------------------------------------------------

# case_k K DIR: writes the result block to $E2E_T/res/K.
case_k() {
	local k=$1 d=$2 out=$E2E_T/res/$1 s=$E2E_T/k$1 n rc1 rc2 why='' ops state
	mailbox_clear "$d" >/dev/null 2>&1
	n=$(ev_lines "$d")
	ACME_SMIME_FLASH_CUT_AFTER=$k cli "$d" "$s.flash" "$s.cut.log"
	rc1=$?
	ops=$(stat_of "$s.cut.log" 'flash operations')
	state=$(sed -n 's/.*failed in state \([^:]*\):.*/\1/p' "$s.cut.log" | tail -n 1)
	if [ "$rc1" -ne 7 ] && ! { [ "$rc1" -eq 0 ] && [ "${ops:-0}" -lt "$k" ]; }; then
		why="the cut run exited $rc1 (want 7)"
	fi
	cli "$d" "$s.flash" "$s.rerun.log" --out-cert "$s.pem" --out-key "$s.key"
	rc2=$?
	ev_summary "$d" "$n"
	[ -n "$why" ] || why=$(rerun_verdict "$d" "$s.cut.log" "$s.rerun.log" "$rc2" "$s")
	{
		if [ -z "$why" ]; then
			echo "PASS powercut-k$k (cut in ${state:-?}; $orders orders, $responses responses)"
		else
			echo "FAIL powercut-k$k (cut in ${state:-?}: $why)"
			echo "    | --- the cut run (exit $rc1):"
			tail -n 8 "$s.cut.log" | sed 's/^/    | /'
			echo "    | --- the run after it (exit $rc2):"
			tail -n 15 "$s.rerun.log" | sed 's/^/    | /'
		fi
	} >"$out"
}

mkdir -p "$E2E_T/res"
lane_pids=()
for l in $(seq 1 "$LANES"); do
	(
		for k in $(seq "$l" "$LANES" "$N"); do
			case_k "$k" "$E2E_T/lane$l"
		done
	) &
	lane_pids+=("$!")
	E2E_PIDS+=("$!")
done
wait "${lane_pids[@]}"

for k in $(seq 1 "$N"); do
	if [ ! -s "$E2E_T/res/$k" ]; then
		fail "powercut-k$k" "no result"
		continue
	fi
	head -n 1 "$E2E_T/res/$k" | grep -q '^PASS' && E2E_PASSED=$((E2E_PASSED + 1)) ||
		E2E_FAILED=$((E2E_FAILED + 1))
	cat "$E2E_T/res/$k"
done

e2e_finish
