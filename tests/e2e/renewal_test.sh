#!/bin/bash
# shellcheck disable=SC2154 # counts come from ev_summary (eval)
# Renewal with short-lived certificates, and a corrupted store (issue 3).
#
# The test CA issues certificates valid 105 s (CA_CERT_LIFETIME=75 after
# issuance, CA_CERT_BACKDATE=30 before), so the renewal point (two thirds)
# falls 40 s after issuance (time enough for the corrupted-store checks).
#  1. --renew-if-due on an empty store enrolls.
#  2. Before the renewal point --renew-if-due exits 0 without network
#     traffic (stats: 0 TCP connections, no new CA events) and --out-cert /
#     --out-key write the stored certificate and key; once more just before
#     the renewal point.
#  3. While waiting: a corrupted store (seeded random bytes; damaged
#     records) is reported or started over, never a crash; valgrind finds
#     no memory error in loading one; a store file of the wrong size is
#     refused clearly.
#  4. After the renewal point: a renewal in one run (new serial, one
#     certificate-issued event, no new account). Then, from the same store
#     as before it, a renewal interrupted by kill -9 at several
#     states (new-order, pop3-retr, challenge-respond, finalize) keeps the
#     old certificate readable from the store after each kill. The store
#     is read with tests/e2e/store_read.c: the library's accessors over the
#     same file, the way the device's application reads it after a reboot,
#     with no network at all (the CLI itself exports only after a
#     successful run, and a renewal that is due always goes to the network).
#  5. The renewal then completes: new serial, one certificate-issued event,
#     and the renewed certificate is not due.
#  6. A power cut at every flash operation of the end of that renewal (from
#     the store as the kill at finalize left it): after each cut the store
#     holds exactly the old or exactly the new certificate (old before one
#     commit point, new after it), and a run after the cut completes with
#     the new certificate.
# Last line "N passed, N failed". About 55 s.

# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=60
LIFETIME=75 BACKDATE=30
env_start ca CA_CERT_LIFETIME=$LIFETIME CA_CERT_BACKDATE=$BACKDATE ||
	e2e_abort "tests/testenv start failed" "$E2E_T/ca.start.log"
D=$E2E_T/ca
EMAIL=$(envget "$D" EMAIL)

READER=$E2E_T/store_read
if ! gcc -std=c99 -Wall -Wextra -Werror -O1 -g -I"$E2E_TOP" -I"$E2E_TOP/port/posix" \
	"$E2E_TOP/tests/e2e/store_read.c" "$E2E_TOP/port/posix/flash_file.c" \
	"$E2E_TOP/build/gcc/acme_smime.o" -lbearssl -o "$READER" >"$E2E_T/reader.log" 2>&1; then
	e2e_abort "cannot build tests/e2e/store_read.c" "$E2E_T/reader.log"
fi

S=$E2E_T/dev.flash

# not_due NAME STORE OUTPREFIX WANT_CHAIN WANT_KEY: --renew-if-due must exit 0
# with no network and write the stored certificate and key.
not_due() {
	local name=$1 store=$2 out=$3 chain=$4 key=$5 n log=$3.log why=''
	n=$(ev_lines "$D")
	cli "$D" "$store" "$log" --renew-if-due --out-cert "$out.pem" --out-key "$out.key"
	RC=$?
	if [ "$RC" -ne 0 ]; then why="exit $RC"
	elif [ "$(stat_of "$log" 'TCP connections')" != 0 ]; then why="$(stat_of "$log" 'TCP connections') TCP connections"
	elif [ "$(stat_of "$log" 'HTTP requests')" != 0 ]; then why="HTTP requests made"
	elif [ "$(ev_lines "$D")" -ne "$n" ]; then why="the CA saw it"
	elif ! cmp -s "$out.pem" "$chain"; then why="--out-cert is not the stored certificate"
	elif [ "$(openssl pkey -in "$out.key" -pubout 2>&1)" != "$(openssl pkey -in "$key" -pubout 2>&1)" ]; then
		why="--out-key is not the stored key"
	fi
	if [ -z "$why" ]; then pass "$name"; else fail "$name" "$why" "$log"; fi
}

# --- 1. the first enrollment -----------------------------------------------------

n0=$(ev_lines "$D")
cli "$D" "$S" "$E2E_T/enroll.log" --renew-if-due --out-cert "$E2E_T/old.pem" --out-key "$E2E_T/old.key"
RC=$?
T_ISSUE=$(date +%s)
ev_summary "$D" "$n0"
if [ "$RC" -ne 0 ]; then
	e2e_abort "the first enrollment failed (exit $RC)" "$E2E_T/enroll.log"
fi
if why=$(cert_check "$D" "$E2E_T/old.pem" "$E2E_T/old.key" "$EMAIL") && [ "$issued" -eq 1 ]; then
	pass renew-if-due-enrolls-empty-store
else
	fail renew-if-due-enrolls-empty-store "$why $issued issued" "$E2E_T/enroll.log"
fi
OLD_SERIAL=$(serial_of "$E2E_T/old.pem.leaf")
INFO=$("$READER" "$S")
NB=$(sed -n 's/.*not_before=\([0-9]*\).*/\1/p' <<<"$INFO")
NA=$(sed -n 's/.*not_after=\([0-9]*\).*/\1/p' <<<"$INFO")
RENEW_AT=$(sed -n 's/.*renew_at=\([0-9]*\).*/\1/p' <<<"$INFO")
if [ -n "$RENEW_AT" ] && [ $((NA - NB)) -eq $((LIFETIME + BACKDATE)) ] &&
	[ $((RENEW_AT - NB)) -ge $(((LIFETIME + BACKDATE) * 2 / 3 - 1)) ] &&
	[ $((RENEW_AT - NB)) -le $(((LIFETIME + BACKDATE) * 2 / 3 + 1)) ]; then
	pass stored-renewal-point-two-thirds
else
	fail stored-renewal-point-two-thirds "store_read: $INFO"
fi
echo "# certificate $OLD_SERIAL: valid $((NA - NB)) s, renewal due $((RENEW_AT - T_ISSUE)) s from now"

# --- 2. not due ---------------------------------------------------------------------

not_due not-due-no-network-writes-old-cert "$S" "$E2E_T/nd1" "$E2E_T/old.pem" "$E2E_T/old.key"

# --- 3. corrupted stores, while the renewal point approaches ------------------------
# Copies of the device's store (or random bytes), never the store itself.

SIZE=$(stat -c %s "$S")
# crashed RC LOG: a crash or an abort (signal exit, sanitizer, timeout)
crashed() { [ "$1" -ge 128 ] || grep -qiE 'segmentation|assert|abort' "$2"; }

"$PY" -c "import random, sys; random.seed(8823); sys.stdout.buffer.write(bytes(random.getrandbits(8) for _ in range($SIZE)))" \
	>"$E2E_T/random.flash"
cp "$E2E_T/random.flash" "$E2E_T/random-vg.flash"
cp "$E2E_T/random.flash" "$E2E_T/rnd.flash"
cli "$D" "$E2E_T/rnd.flash" "$E2E_T/rnd.log" --renew-if-due --out-cert "$E2E_T/rnd.pem" --out-key "$E2E_T/rnd.key"
RC=$?
if crashed "$RC" "$E2E_T/rnd.log"; then fail corrupt-store-random-bytes "crash: exit $RC" "$E2E_T/rnd.log"
elif [ "$RC" -eq 0 ] && why=$(cert_check "$D" "$E2E_T/rnd.pem" "$E2E_T/rnd.key" "$EMAIL"); then
	if grep -qiE 'store:|damaged' "$E2E_T/rnd.log"; then
		pass "corrupt-store-random-bytes (reported, started over)"
	else
		pass "corrupt-store-random-bytes (started over; nothing logged about the store)"
	fi
elif [ "$RC" -eq 7 ] && grep -qiE 'store|flash' "$E2E_T/rnd.log"; then pass "corrupt-store-random-bytes (refused clearly)"
else fail corrupt-store-random-bytes "exit $RC ${why:-}" "$E2E_T/rnd.log"; fi

# damaged records: 3 spans of 1..24 random bytes inside written 16-byte
# units of a copy of the device's store
for seed in 1 2 3 4 5; do
	c=$E2E_T/dmg$seed
	cp "$S" "$c.flash"
	"$PY" - "$c.flash" "$seed" <<'EOF'
import random, sys
path, seed = sys.argv[1], int(sys.argv[2])
random.seed(seed)
b = bytearray(open(path, 'rb').read())
used = [i for i in range(0, len(b), 16) if any(x != 0xff for x in b[i:i + 16])]
for _ in range(3):
    off = random.choice(used) + random.randrange(16)
    for j in range(random.randrange(1, 25)):
        if off + j < len(b):
            b[off + j] = random.getrandbits(8)
open(path, 'wb').write(b)
EOF
	cp "$c.flash" "$c.orig.flash"
	cli "$D" "$c.flash" "$c.log" --renew-if-due --out-cert "$c.pem" --out-key "$c.key"
	RC=$?
	how=$(grep -o 'store: [^,]*' "$c.log" | head -n 1)
	if crashed "$RC" "$c.log"; then fail "corrupt-store-damaged-$seed" "crash: exit $RC" "$c.log"
	elif [ "$RC" -eq 0 ] && why=$(cert_check "$D" "$c.pem" "$c.key" "$EMAIL"); then
		pass "corrupt-store-damaged-$seed (${how:-nothing logged}; $(grep -q 'TCP connections' "$c.log" &&
			[ "$(stat_of "$c.log" 'TCP connections')" = 0 ] && echo 'stored certificate intact' || echo 'enrolled again'))"
	elif [ "$RC" -eq 7 ] && grep -qiE 'store|flash' "$c.log"; then pass "corrupt-store-damaged-$seed (refused clearly)"
	else fail "corrupt-store-damaged-$seed" "exit $RC ${why:-}" "$c.log"; fi
done

# valgrind: loading the random store and the damaged ones (the directory is
# unreachable, so the run stops after loading the store and one connection)
if command -v valgrind >/dev/null 2>&1; then
	vg_bad=
	DIRECTORY=https://127.0.0.1:1/directory cli_args "$D" "$E2E_T/random-vg.flash"
	valgrind -q --error-exitcode=99 "$CLI" "${CLI_ARGS[@]}" --renew-if-due >"$E2E_T/vg-cli.log" 2>&1
	rc=$?
	[ "$rc" -eq 99 ] || crashed "$rc" "$E2E_T/vg-cli.log" && vg_bad="the CLI on random bytes (exit $rc)"
	for seed in 1 2 3 4 5; do
		cp "$E2E_T/dmg$seed.orig.flash" "$E2E_T/dmg$seed.vg.flash"
		DIRECTORY=https://127.0.0.1:1/directory cli_args "$D" "$E2E_T/dmg$seed.vg.flash"
		valgrind -q --error-exitcode=99 "$CLI" "${CLI_ARGS[@]}" --renew-if-due \
			>"$E2E_T/vg-cli$seed.log" 2>&1
		rc=$?
		[ "$rc" -eq 99 ] || crashed "$rc" "$E2E_T/vg-cli$seed.log" &&
			vg_bad="$vg_bad the CLI on damaged store $seed (exit $rc)"
		valgrind -q --error-exitcode=99 "$READER" "$E2E_T/dmg$seed.orig.flash" /dev/null /dev/null \
			>"$E2E_T/vg-read$seed.log" 2>&1
		rc=$?
		[ "$rc" -eq 99 ] || [ "$rc" -ge 128 ] && vg_bad="$vg_bad store_read on damaged store $seed (exit $rc)"
	done
	if [ -z "$vg_bad" ]; then pass corrupt-store-valgrind-clean
	else fail corrupt-store-valgrind-clean "$vg_bad" "$E2E_T/vg-cli.log"; fi
else
	echo "SKIP corrupt-store-valgrind-clean (no valgrind)"
fi

head -c 1000 /dev/zero >"$E2E_T/short.flash"
cli "$D" "$E2E_T/short.flash" "$E2E_T/short.log" --renew-if-due
RC=$?
if [ "$RC" -eq 7 ] && grep -q -- "--store $E2E_T/short.flash" "$E2E_T/short.log"; then
	pass corrupt-store-wrong-size-refused
else
	fail corrupt-store-wrong-size-refused "exit $RC (want 7 and the store named)" "$E2E_T/short.log"
fi

# --- 2b. just before the renewal point ------------------------------------------------

now=$(date +%s)
if [ "$now" -le $((RENEW_AT - 3)) ]; then
	sleep $((RENEW_AT - 2 - now))
	not_due not-due-just-before-renewal-point "$S" "$E2E_T/nd2" "$E2E_T/old.pem" "$E2E_T/old.key"
else
	fail not-due-just-before-renewal-point "the checks above took too long: $((now - RENEW_AT)) s past"
fi
now=$(date +%s)
[ "$now" -le "$RENEW_AT" ] && sleep $((RENEW_AT + 1 - now))

# --- 4a. a renewal in one run ----------------------------------------------------------

cp "$S" "$E2E_T/one.flash"
n=$(ev_lines "$D")
cli "$D" "$E2E_T/one.flash" "$E2E_T/one.log" --renew-if-due --out-cert "$E2E_T/one.pem" --out-key "$E2E_T/one.key"
RC=$?
ev_summary "$D" "$n"
if [ "$RC" -ne 0 ]; then fail renewal-single-run "exit $RC" "$E2E_T/one.log"
elif ! why=$(cert_check "$D" "$E2E_T/one.pem" "$E2E_T/one.key" "$EMAIL"); then
	fail renewal-single-run "$why" "$E2E_T/one.log"
elif [ "$(serial_of "$E2E_T/one.pem")" = "$OLD_SERIAL" ] || [ "$issued" -ne 1 ] || [ "$accounts" -ne 0 ]; then
	fail renewal-single-run "serial $(serial_of "$E2E_T/one.pem"), $issued issued, $accounts accounts created" "$E2E_T/one.log"
else
	pass renewal-single-run
fi

# --- 4b. a renewal interrupted by kill -9: the old certificate stays readable ----------

cp "$S" "$E2E_T/ren.flash"
n_due=$(ev_lines "$D")
chain_ok=1
for st in new-order pop3-retr challenge-respond finalize; do
	log=$E2E_T/ren-kill-$st.log
	if ! cli_kill_at "$D" "$E2E_T/ren.flash" "$log" "^acme-smime-enroll: state $st\$" 1 --renew-if-due; then
		fail "renewal-kill-at-$st-old-cert-readable" "not killed: the run ended with exit $KILL_RC" "$log"
		chain_ok=0
		break
	fi
	"$READER" "$E2E_T/ren.flash" "$E2E_T/ren-kill-$st.pem" "$E2E_T/ren-kill-$st.key" >"$log.read" 2>&1
	rc=$?
	if [ "$rc" -eq 0 ] && cmp -s "$E2E_T/ren-kill-$st.pem" "$E2E_T/old.pem" &&
		[ "$(openssl pkey -in "$E2E_T/ren-kill-$st.key" -pubout)" = "$(openssl pkey -in "$E2E_T/old.key" -pubout)" ]; then
		pass "renewal-kill-at-$st-old-cert-readable"
	else
		fail "renewal-kill-at-$st-old-cert-readable" "store_read exit $rc: $(head -n 1 "$log.read")" "$log"
	fi
done
cp "$E2E_T/ren.flash" "$E2E_T/fin.flash"

# --- 5. the renewal completes ----------------------------------------------------------

if [ "$chain_ok" -eq 1 ]; then
	cp "$E2E_T/fin.flash" "$E2E_T/r2.flash"
	cli "$D" "$E2E_T/r2.flash" "$E2E_T/r2.log" --renew-if-due --out-cert "$E2E_T/new.pem" --out-key "$E2E_T/new.key"
	RC=$?
	ev_summary "$D" "$n_due"
	M=$(stat_of "$E2E_T/r2.log" 'flash operations')
	NEW_SERIAL=$(serial_of "$E2E_T/new.pem" 2>/dev/null)
	if [ "$RC" -ne 0 ]; then fail renewal-after-two-thirds "exit $RC" "$E2E_T/r2.log"
	elif ! why=$(cert_check "$D" "$E2E_T/new.pem" "$E2E_T/new.key" "$EMAIL"); then
		fail renewal-after-two-thirds "$why" "$E2E_T/r2.log"
	elif [ "$NEW_SERIAL" = "$OLD_SERIAL" ] || [ -z "$NEW_SERIAL" ]; then
		fail renewal-after-two-thirds "same serial $NEW_SERIAL" "$E2E_T/r2.log"
	elif [ "$issued" -ne 1 ] || [ "$accounts" -ne 0 ] || [ "$max_resp" -gt 1 ]; then
		fail renewal-after-two-thirds "$issued certificates issued, $accounts accounts created, at most $max_resp responses per challenge" "$E2E_T/r2.log"
	else
		pass "renewal-after-two-thirds (serial $OLD_SERIAL -> $NEW_SERIAL)"
	fi
	not_due renewed-cert-not-due "$E2E_T/r2.flash" "$E2E_T/nd3" "$E2E_T/new.pem" "$E2E_T/new.key"
else
	fail renewal-after-two-thirds "not run: the interrupted renewal did not go as planned"
	M=
fi

# --- 6. a power cut at every flash operation of the end of the renewal -----------------

if [ -n "$M" ] && [ "$M" -gt 0 ] && [ -s "$E2E_T/new.pem" ]; then
	echo "# cutting at each of the $M flash operations from the store left by the kill at finalize"
	states=
	for k in $(seq 1 "$M"); do
		c=$E2E_T/cut$k
		cp "$E2E_T/fin.flash" "$c.flash"
		ACME_SMIME_FLASH_CUT_AFTER=$k cli "$D" "$c.flash" "$c.log" --renew-if-due
		rc1=$?
		"$READER" "$c.flash" "$c.read.pem" "$c.read.key" >"$c.read" 2>&1
		rrc=$?
		has=
		if [ "$rrc" -eq 0 ] && cmp -s "$c.read.pem" "$E2E_T/old.pem" &&
			[ "$(openssl pkey -in "$c.read.key" -pubout)" = "$(openssl pkey -in "$E2E_T/old.key" -pubout)" ]; then
			has=old
		elif [ "$rrc" -eq 0 ] && cmp -s "$c.read.pem" "$E2E_T/new.pem" &&
			[ "$(openssl pkey -in "$c.read.key" -pubout)" = "$(openssl pkey -in "$E2E_T/new.key" -pubout)" ]; then
			has=new
		fi
		cli "$D" "$c.flash" "$c.rerun.log" --renew-if-due --out-cert "$c.out.pem"
		rc2=$?
		where=$(sed -n 's/.*failed in state \([^:]*\):.*/\1/p' "$c.log" | tail -n 1)
		if [ "$rc1" -ne 7 ] && [ "$rc1" -ne 0 ]; then
			fail "renewal-cut-k$k" "the cut run exited $rc1" "$c.log"
		elif [ -z "$has" ]; then
			fail "renewal-cut-k$k" "the store holds neither certificate: store_read exit $rrc: $(head -n 1 "$c.read")" "$c.log"
		elif [ "$rc2" -ne 0 ] || ! cmp -s "$c.out.pem" "$E2E_T/new.pem"; then
			fail "renewal-cut-k$k" "the run after the cut: exit $rc2, or not the new certificate" "$c.rerun.log"
		else
			pass "renewal-cut-k$k (cut in ${where:-?}: the store holds the $has certificate)"
		fi
		states="$states${has:-x}"
	done
	# old...old new...new: one commit point
	if [[ $states =~ ^(old)+(new)*$ ]]; then
		pass "renewal-cut-one-commit-point (the new certificate is committed by flash operation $(grep -o old <<<"$states" | wc -l) of $M)"
	else
		fail renewal-cut-one-commit-point "sequence by k: $states"
	fi
else
	fail renewal-cut-every-operation "not run: no completed renewal to compare with"
fi

e2e_finish
