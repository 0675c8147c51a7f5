#!/bin/bash
# shellcheck disable=SC2154 # counts come from ev_summary (eval)
# kill -9 of the CLI during an RFC 8823 enrollment, then a rerun with the
# same store (issue 3, process level): once right when each distinct state
# of a complete enrollment shows on its stderr ("state X"; plus the second
# pop3-connect, where the challenge mail is fetched), and at 20 seeded
# random moments. After each kill the rerun must complete (exit 0) with a
# certificate that verifies; counted at the test CA over both runs: at most
# one account, at most one response per challenge, no decoy answered; and
# no challenge mail answered again after a reply to it may have left.
#
# Fresh store and empty mailbox per case; the cases run in E2E_LANES
# (default 3) parallel lanes, each with its own test environment. One
# "PASS/FAIL kill9-..." line per case, last line "N passed, N failed".
# About 75 s with three lanes (95 s with two) on 2 cores. E2E_SEED changes
# the list of random moments (default 8823).

# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

LANES=${E2E_LANES:-3}
CLI_TIMEOUT=60
SEED=${E2E_SEED:-8823}
for l in $(seq 1 "$LANES"); do
	env_start "lane$l" || e2e_abort "tests/testenv start failed" "$E2E_T/lane$l.start.log"
done
EMAIL=$(envget "$E2E_T/lane1" EMAIL)

# --- the reference run: which states an enrollment goes through -------------

D=$E2E_T/lane1
t0=$(date +%s%N)
cli "$D" "$E2E_T/ref.flash" "$E2E_T/ref.log" --out-cert "$E2E_T/ref.pem" --out-key "$E2E_T/ref.key"
RC=$?
t1=$(date +%s%N)
if [ "$RC" -ne 0 ]; then
	e2e_abort "the complete run failed (exit $RC)" "$E2E_T/ref.log"
fi
if why=$(cert_check "$D" "$E2E_T/ref.pem" "$E2E_T/ref.key" "$EMAIL"); then
	pass complete-run
else
	fail complete-run "$why" "$E2E_T/ref.log"
fi
mapfile -t STATES < <(sed -n 's/^acme-smime-enroll: state \([a-z0-9-]*\)$/\1/p' "$E2E_T/ref.log" |
	grep -vx failed | awk '!seen[$0]++')
echo "# a complete enrollment: $(( (t1 - t0) / 1000000 )) ms, ${#STATES[@]} states: ${STATES[*]}"

# The cases: "state NAME NTH" or "after SECONDS".
CASES=()
for st in "${STATES[@]}"; do
	CASES+=("state $st 1")
done
CASES+=("state pop3-connect 2")
# 20 moments in 0.05..3 s (a complete enrollment takes about 3.1 s here),
# the same list on every run.
mapfile -t DELAYS < <(awk -v seed="$SEED" 'BEGIN { srand(seed); for (i = 0; i < 20; i++) printf "%.2f\n", 0.05 + rand() * 2.95 }')
for t in "${DELAYS[@]}"; do
	CASES+=("after $t")
done

# --- one case --------------------------------------------------------------------

# case_i I DIR: run case I, write its result block to $E2E_T/res/I.
case_i() {
	local i=$1 d=$2 s=$E2E_T/c$1 name n why='' rc2 killed=1 kind arg nth
	read -r kind arg nth <<<"${CASES[$i]}"
	if [ "$kind" = state ]; then
		name=kill9-state-$arg
		[ "$nth" -gt 1 ] && name=$name-$nth
	else
		name=kill9-after-${arg}s
	fi
	mailbox_clear "$d" >/dev/null 2>&1
	n=$(ev_lines "$d")
	if [ "$kind" = state ]; then
		cli_kill_at "$d" "$s.flash" "$s.kill.log" "^acme-smime-enroll: state $arg\$" "$nth" && killed=0
	else
		cli_kill_after "$d" "$s.flash" "$s.kill.log" "$arg" && killed=0
	fi
	if [ "$killed" -ne 0 ] && [ "$KILL_RC" -ne 0 ]; then
		why="the run ended with exit $KILL_RC before the kill"
	fi
	cli "$d" "$s.flash" "$s.rerun.log" --out-cert "$s.pem" --out-key "$s.key"
	rc2=$?
	ev_summary "$d" "$n"
	[ -n "$why" ] || why=$(rerun_verdict "$d" "$s.kill.log" "$s.rerun.log" "$rc2" "$s")
	{
		if [ -z "$why" ]; then
			if [ "$killed" -eq 0 ]; then
				echo "PASS $name (killed in state $(sed -n 's/^acme-smime-enroll: state //p' \
					"$s.kill.log" | tail -n 1); $orders orders, $responses responses)"
			else
				echo "PASS $name (the run had completed; $orders orders, $responses responses)"
			fi
		else
			echo "FAIL $name ($why)"
			echo "    | --- the killed run (exit $KILL_RC):"
			tail -n 8 "$s.kill.log" | sed 's/^/    | /'
			echo "    | --- the rerun (exit $rc2):"
			tail -n 15 "$s.rerun.log" | sed 's/^/    | /'
		fi
	} >"$E2E_T/res/$i"
}

mkdir -p "$E2E_T/res"
lane_pids=()
for l in $(seq 1 "$LANES"); do
	(
		for i in $(seq $((l - 1)) "$LANES" $((${#CASES[@]} - 1))); do
			case_i "$i" "$E2E_T/lane$l"
		done
	) &
	lane_pids+=("$!")
	E2E_PIDS+=("$!")
done
wait "${lane_pids[@]}"

for i in $(seq 0 $((${#CASES[@]} - 1))); do
	if [ ! -s "$E2E_T/res/$i" ]; then
		fail "kill9-case-$i" "no result (${CASES[$i]})"
		continue
	fi
	head -n 1 "$E2E_T/res/$i" | grep -q '^PASS' && E2E_PASSED=$((E2E_PASSED + 1)) ||
		E2E_FAILED=$((E2E_FAILED + 1))
	cat "$E2E_T/res/$i"
done

e2e_finish
