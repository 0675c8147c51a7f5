#!/bin/bash
# The enrollment through lwIP (issue 7): build/acme-smime-lwip runs lwIP on
# a tap device inside a private network namespace and gets certificates
# from Pebble (dns identifiers, http-01) and from the project's RFC 8823
# test CA (an email identifier: POP3 in, SMTP out), which run with the mail
# servers in the same namespace on the tap's host side.
#
#   host side (Linux, namespace $NS): tap0 10.99.0.1/24
#       Pebble ACME on 10.99.0.1, its management port and
#       pebble-challtestsrv on 127.0.0.1; challtestsrv answers every name
#       with 10.99.0.2, so Pebble's http-01 requests cross the tap
#       tests/testenv with TESTENV_LISTEN=10.99.0.1: the test CA, Dovecot
#       POP3 and Postfix on 10.99.0.1; their certificates also name
#       10.99.0.1 and mail.test
#   lwIP side (the example, same namespace): 10.99.0.2, host table
#       localhost=10.99.0.1 (the directory URL is https://localhost:PORT/dir,
#       "localhost" stays the TLS server name); in the mail run
#       mail.test=10.99.0.1 (POP3 and SMTP as mail.test:PORT, "mail.test"
#       the TLS server name) and the test CA's directory by IP literal
#
#   bash tests/lwip/lwip_test.sh
#
# Needs root (ip netns, /dev/net/tun); without it the suite prints a SKIP
# line and "0 passed, 0 failed". Each check prints "PASS name" or
# "FAIL name"; the last line is "N passed, N failed"; the exit status is
# non-zero when a check failed. Leaves nothing behind (trap).
#
# Environment: LWIP_BIN (default build/acme-smime-lwip; built with make when
# missing), LWIP_RUN_TIMEOUT (seconds per enrollment, default 120), KEEP=1
# keeps the temp dir, VERBOSE=1 shows the example's stderr.
# Packages: tests/lwip/packages.txt (lwIP, Pebble, and the test CA's and mail
# servers' packages).
# Checks run through check/eval and trap: shellcheck cannot see the uses.
# shellcheck disable=SC2317,SC2016,SC2034,SC1091
set -u

cd "$(dirname "$0")/../.." || exit 1
BIN=${LWIP_BIN:-build/acme-smime-lwip}
RUN_TIMEOUT=${LWIP_RUN_TIMEOUT:-120}
NS=acmelwip$$
TAP=tap0
HOST_IP=10.99.0.1
DEV_IP=10.99.0.2
PORT_BASE=14300

passed=0
failed=0
T=
PEBBLE_DIR=
TESTENV_DIR=

pass() {
	echo "PASS $1"
	passed=$((passed + 1))
}

fail() {
	echo "FAIL $1${2:+: $2}"
	failed=$((failed + 1))
}

check() {
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}

show() {
	sed 's/^/    | /' "$1"
}

cleanup() {
	local d
	if [ -n "$TESTENV_DIR" ] && [ -f "$TESTENV_DIR/env" ]; then
		bash tests/testenv stop "$TESTENV_DIR" >/dev/null 2>&1
	fi
	for d in "$PEBBLE_DIR" "${PEBBLE_B:-}"; do
		if [ -n "$d" ] && [ -f "$d/pids" ]; then
			bash tests/pebble/pebble_env.sh stop "$d" 2>/dev/null
		fi
	done
	ip netns del "$NS" 2>/dev/null
	if [ -n "$T" ]; then
		if [ "${KEEP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit $?
}

if [ "$(id -u)" != 0 ] || [ ! -c /dev/net/tun ]; then
	echo "SKIP lwip: needs root and /dev/net/tun (ip netns, tap device)"
	finish
fi

T=$(mktemp -d /tmp/acme-smime-lwip.XXXXXX)
# The mail servers run as nobody and must reach $T/testenv/mail.
chmod 711 "$T"

# in_ns COMMAND...: run inside the namespace.
in_ns() {
	ip netns exec "$NS" "$@"
}

# ---------------------------------------------------------------------
# The example itself (no network needed)

if [ ! -x "$BIN" ]; then
	make -s "$BIN" >"$T/make.log" 2>&1
fi
if [ ! -x "$BIN" ]; then
	fail "lwip-example-built" "$BIN missing and make failed"
	show "$T/make.log" | tail -20
	finish
fi
pass "lwip-example-built"

"$BIN" --help >"$T/help.out" 2>&1
RC=$?
check "lwip-help" eval '[ $RC -eq 0 ] && grep -q -- "--host-map NAME=IP" "$T/help.out"'
"$BIN" --directory https://localhost:1/dir --ca-file /dev/null \
	--email a@example.test >/dev/null 2>"$T/mail.err"
RC=$?
check "lwip-email-without-pop3-smtp-exit-2" eval '[ $RC -eq 2 ] && grep -q -- "--email needs --pop3" "$T/mail.err"'
"$BIN" --directory https://localhost:1/dir --ca-file /dev/null \
	--email a@example.test --pop3 mail.test:110 --pop3-user a \
	--pop3-pass secret --smtp mail.test:587 >/dev/null 2>"$T/pass.err"
RC=$?
check "lwip-password-on-command-line-exit-2" eval '[ $RC -eq 2 ] && grep -q "never taken from the command line" "$T/pass.err"'

# ---------------------------------------------------------------------
# Namespace, tap device, Pebble

if ! { ip netns add "$NS" &&
	ip -n "$NS" link set lo up &&
	ip -n "$NS" tuntap add dev "$TAP" mode tap &&
	ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP" &&
	ip -n "$NS" link set "$TAP" up; } 2>"$T/ns.err"; then
	fail "namespace-and-tap" "see below"
	show "$T/ns.err"
	finish
fi
pass "namespace-and-tap"

PEBBLE_DIR=$T/pebble
if ! in_ns env PEBBLE_PORT_BASE=$PORT_BASE PEBBLE_LISTEN_ADDR=$HOST_IP \
		PEBBLE_DEFAULT_IPV4=$DEV_IP PEBBLE_VA_NOSLEEP=1 \
		bash tests/pebble/pebble_env.sh start "$PEBBLE_DIR" \
		2>"$T/pebble-start.log" ||
	! in_ns bash tests/pebble/fetch_roots.sh "$PEBBLE_DIR" \
		"$T/roots.pem" "$T/intermediates.pem" 2>>"$T/pebble-start.log"; then
	fail "pebble-in-namespace"
	show "$T/pebble-start.log"
	finish
fi
pass "pebble-in-namespace"
# shellcheck source=/dev/null
. "$PEBBLE_DIR/env"

tap_bytes() {
	# rx + tx bytes of the host side of the tap device
	local rx tx
	rx=$(in_ns cat "/sys/class/net/$TAP/statistics/rx_bytes")
	tx=$(in_ns cat "/sys/class/net/$TAP/statistics/tx_bytes")
	echo $((rx + tx))
}

# enroll OUTNAME ARGS...: run the example in the namespace; stderr in
# $T/OUTNAME.err; sets RC and SECS.
enroll() {
	local out=$1 t0 t1
	shift
	t0=$(date +%s.%N)
	in_ns timeout "$RUN_TIMEOUT" "$BIN" --tap "$TAP" --ip "$DEV_IP/24" \
		--gw "$HOST_IP" "$@" >"$T/$out.out" 2>"$T/$out.err"
	RC=$?
	t1=$(date +%s.%N)
	SECS=$(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }")
	if [ "${VERBOSE:-0}" = 1 ]; then show "$T/$out.err"; fi
}

rc_is() {
	[ "$RC" -eq "$1" ] || { echo "    exit status $RC, want $1"; show "$T/$2.err" | tail -15; return 1; }
}

chain_ok() {
	openssl verify -purpose sslserver -CAfile "$T/roots.pem" \
		-untrusted "$T/intermediates.pem" -untrusted "$1" "$1" \
		>"$T/verify.out" 2>&1 || { show "$T/verify.out"; return 1; }
}

# sans_are CERT NAME...: the leaf's subjectAltName holds exactly these.
sans_are() {
	local cert=$1 got want
	shift
	got=$(openssl x509 -in "$cert" -noout -ext subjectAltName 2>/dev/null |
		tail -n +2 | tr ',' '\n' | sed 's/^ *//' | sort | tr '\n' ' ')
	want=$(printf 'DNS:%s\n' "$@" | sort | tr '\n' ' ')
	[ "$got" = "$want" ] || { echo "    SANs: $got (want $want)"; return 1; }
}

key_matches() {
	local a b mode
	a=$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null | openssl pkey -pubin -outform DER 2>/dev/null | sha256sum)
	b=$(openssl pkey -in "$2" -pubout -outform DER 2>/dev/null | sha256sum)
	mode=$(stat -c %a "$2")
	grep -q 'BEGIN PRIVATE KEY' "$2" && [ "$a" = "$b" ] && [ "$mode" = 600 ]
}

accounts() {
	sed -nE 's/.*There are now ([0-9]+) accounts.*/\1/p' "$PEBBLE_LOG" |
		sort -n | tail -1
}

COMMON=(--host-map "localhost=$HOST_IP" --directory "$ACME_DIRECTORY"
	--ca-file "$ACME_CA_FILE" --agree-tos --http01-listen-port "$HTTP01_PORT")

# ---------------------------------------------------------------------
# 1. Two names, through lwIP

bytes_before=$(tap_bytes)
enroll e1 "${COMMON[@]}" --dns a.example.test --dns b.example.test \
	--contact mailto:admin@example.test --store "$T/dev.flash" \
	--out-cert "$T/e1.pem" --out-key "$T/e1.key" -v
bytes_after=$(tap_bytes)
echo "    enrollment of 2 names through lwIP: ${SECS}s"
grep -E 'acme-smime-lwip: (stats|stack|ram):' "$T/e1.err" | sed 's/^acme-smime-lwip: /    /'
check "lwip-issue-two-names" rc_is 0 e1
check "lwip-chain-verifies-against-pebble-roots" chain_ok "$T/e1.pem"
check "lwip-certificate-names" sans_are "$T/e1.pem" a.example.test b.example.test
check "lwip-key-is-pkcs8-0600-and-matches" key_matches "$T/e1.pem" "$T/e1.key"
served=$(grep -c 'http-01: served' "$T/e1.err")
check "lwip-http01-answered-by-lwip-responder" eval '[ "$served" -ge 2 ] && grep -q "Attempting to validate w/ HTTP: http://a.example.test:$HTTP01_PORT/" "$PEBBLE_LOG"'
check "lwip-traffic-crossed-the-tap" eval '[ $((bytes_after - bytes_before)) -gt 10000 ] && grep -qE "tap [1-9][0-9]* frames in" "$T/e1.err"'

# ---------------------------------------------------------------------
# 2. Again with the same store: the account is reused

accounts_before=$(accounts)
enroll e2 "${COMMON[@]}" --dns a.example.test --store "$T/dev.flash" \
	--out-cert "$T/e2.pem" -v
echo "    second enrollment (stored account): ${SECS}s"
check "lwip-second-run-issues" rc_is 0 e2
check "lwip-second-run-chain-verifies" chain_ok "$T/e2.pem"
check "lwip-second-run-no-new-account" eval '[ "$(accounts)" = "$accounts_before" ] && [ "$accounts_before" = 1 ]'

# ---------------------------------------------------------------------
# 3. A harder server: half the nonces rejected, validation delayed by up
#    to 3 s (the responder answers while the engine sleeps between polls)

PEBBLE_B=$T/pebble-b
if in_ns env PEBBLE_PORT_BASE=$((PORT_BASE + 10)) PEBBLE_LISTEN_ADDR=$HOST_IP \
		PEBBLE_DEFAULT_IPV4=$DEV_IP PEBBLE_WFE_NONCEREJECT=50 \
		PEBBLE_VA_SLEEPTIME=3 \
		bash tests/pebble/pebble_env.sh start "$PEBBLE_B" \
		2>"$T/pebble-b-start.log" &&
	in_ns bash tests/pebble/fetch_roots.sh "$PEBBLE_B" \
		"$T/roots-b.pem" "$T/intermediates-b.pem" 2>>"$T/pebble-b-start.log"; then
	B_DIRECTORY=$(. "$PEBBLE_B/env"; echo "$ACME_DIRECTORY")
	B_HTTP01_PORT=$(. "$PEBBLE_B/env"; echo "$HTTP01_PORT")
	enroll hard --host-map "localhost=$HOST_IP" --directory "$B_DIRECTORY" \
		--ca-file "$(. "$PEBBLE_B/env"; echo "$ACME_CA_FILE")" --agree-tos \
		--dns a.example.test --dns b.example.test \
		--http01-listen-port "$B_HTTP01_PORT" --store "$T/hard.flash" \
		--out-cert "$T/hard.pem" -v
	echo "    nonce-reject 50 %, validation sleep up to 3 s: ${SECS}s, $(grep -o '[0-9]* badNonce retries' "$T/hard.err" | tail -1)"
	check "lwip-nonce-reject-and-slow-validation-succeeds" rc_is 0 hard
	check "lwip-nonce-reject-chain-verifies" eval 'openssl verify -purpose sslserver -CAfile "$T/roots-b.pem" -untrusted "$T/intermediates-b.pem" -untrusted "$T/hard.pem" "$T/hard.pem" >/dev/null 2>&1'
	bash tests/pebble/pebble_env.sh stop "$PEBBLE_B" 2>/dev/null
else
	fail "lwip-nonce-reject-and-slow-validation-succeeds" "pebble did not start"
	show "$T/pebble-b-start.log"
fi

# ---------------------------------------------------------------------
# 4. Failures reported plainly

# A host name without an entry: no DNS in this lwIP, so no connection.
enroll nomap --directory "https://acme.invalid:$PORT_BASE/dir" \
	--ca-file "$ACME_CA_FILE" --agree-tos --dns a.example.test \
	--store "$T/nomap.flash" -v
check "lwip-unmapped-host-exit-4" eval 'rc_is 4 nomap && grep -q "no address for acme.invalid" "$T/nomap.err"'

# A trust anchor that did not sign Pebble's certificate: TLS fails over lwIP.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-days 1 -subj "/CN=wrong test CA" -keyout "$T/wrong.key" \
	-out "$T/wrong-ca.pem" 2>/dev/null
enroll wrong --host-map "localhost=$HOST_IP" --directory "$ACME_DIRECTORY" \
	--ca-file "$T/wrong-ca.pem" --agree-tos --dns a.example.test \
	--store "$T/wrong.flash" -v
check "lwip-wrong-trust-anchor-exit-3" rc_is 3 wrong

# ---------------------------------------------------------------------
# 5. RFC 8823 through lwIP: the test CA and the mail servers on 10.99.0.1
#    in the namespace; the device reads its challenge mail over POP3 (STLS)
#    and sends the response over SMTP submission (STARTTLS, AUTH), both to
#    "mail.test" through the host table. The CA's challenge mails are
#    DKIM-signed, but checking that is a separate issue: unsigned-ok.

# email_san_is CERT ADDR: the leaf's subjectAltName is exactly email:ADDR.
email_san_is() {
	local got
	got=$(openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null |
		tail -n +2 | sed 's/^ *//')
	[ "$got" = "email:$2" ] || { echo "    SAN: $got (want email:$2)"; return 1; }
}

eku_is_email_protection() {
	local got
	got=$(openssl x509 -in "$1" -noout -ext extendedKeyUsage 2>/dev/null |
		tail -n +2 | sed 's/^ *//')
	[ "$got" = "E-mail Protection" ] || { echo "    EKU: $got"; return 1; }
}

# one_response_for EVENTS ADDR: one challenge mail went to ADDR, and its
# challenge got exactly one response-received event and became valid.
one_response_for() {
	/usr/bin/python3 - "$1" "$2" <<'PYEOF'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ch = [e.get('challenge') for e in ev if e['event'] == 'challenge-mail-sent' and e.get('to') == sys.argv[2]]
if len(ch) != 1:
    sys.exit('    challenge mails to %s: %d (want 1)' % (sys.argv[2], len(ch)))
resp = [e for e in ev if e['event'] == 'response-received' and e.get('challenge') == ch[0]]
valid = [e for e in ev if e['event'] == 'challenge-valid' and e.get('challenge') == ch[0]]
if len(resp) != 1 or len(valid) != 1:
    sys.exit('    challenge %s: %d response-received, %d challenge-valid (want 1, 1)'
             % (ch[0], len(resp), len(valid)))
PYEOF
}

# mail_via_lwip DIR ADDR: Dovecot and Postfix saw ADDR log in from lwIP's
# address (so POP3 and SMTP crossed the tap).
mail_via_lwip() {
	grep -q "pop3-login: .*Login: user=<$2>.*rip=$DEV_IP" "$1/mail/dovecot.log" &&
		grep -qE "client=[^ ]*\[$DEV_IP\].*sasl_username=$2" "$1/mail/smtp.log"
}

TESTENV_DIR=$T/testenv
if in_ns env TESTENV_LISTEN=$HOST_IP TESTENV_TLS_NAMES=mail.test \
		TESTENV_PORTS=auto bash tests/testenv start "$TESTENV_DIR" \
		>"$T/testenv-start.log" 2>&1; then
	pass "lwip-testenv-in-namespace"
	for k in ACME_DIRECTORY ACME_CA_FILE TEST_ROOT TEST_INTERMEDIATE \
			MAIL_CA_FILE EMAIL MAIL_USER MAIL_PASS_FILE POP3_STLS \
			SMTP_STARTTLS CA_EVENTS; do
		# M_KEY: KEY of $TESTENV_DIR/env
		printf -v "M_$k" '%s' "$(. "$TESTENV_DIR/env"; printf '%s' "${!k}")"
	done
	bytes_before=$(tap_bytes)
	enroll mail --host-map "mail.test=$HOST_IP" --directory "$M_ACME_DIRECTORY" \
		--ca-file "$M_ACME_CA_FILE" --agree-tos --email "$M_EMAIL" \
		--pop3 "mail.test:${M_POP3_STLS##*:}" --pop3-tls starttls \
		--pop3-user "$M_MAIL_USER" --pop3-pass-file "$M_MAIL_PASS_FILE" \
		--smtp "mail.test:${M_SMTP_STARTTLS##*:}" --smtp-tls starttls \
		--smtp-user "$M_MAIL_USER" --smtp-pass-file "$M_MAIL_PASS_FILE" \
		--mail-ca-file "$M_MAIL_CA_FILE" --mail-policy unsigned-ok \
		--reply-grace 1 --mail-poll 1 --mail-wait 30 \
		--store "$T/mail.flash" --out-cert "$T/mail.pem" \
		--out-key "$T/mail.key" -v
	bytes_after=$(tap_bytes)
	echo "    RFC 8823 enrollment of $M_EMAIL through lwIP (${M_ACME_DIRECTORY}, mail.test): ${SECS}s"
	grep -E 'acme-smime-lwip: (stats|stack):' "$T/mail.err" | sed 's/^acme-smime-lwip: /    /'
	check "lwip-email-enrollment" rc_is 0 mail
	check "lwip-email-chain-verifies-smimesign" eval 'openssl verify -CAfile "$M_TEST_ROOT" -untrusted "$M_TEST_INTERMEDIATE" -purpose smimesign "$T/mail.pem" >"$T/verify-mail.out" 2>&1 || { show "$T/verify-mail.out"; false; }'
	check "lwip-email-san-rfc822name" email_san_is "$T/mail.pem" "$M_EMAIL"
	check "lwip-email-eku-email-protection" eku_is_email_protection "$T/mail.pem"
	check "lwip-email-key-is-pkcs8-0600-and-matches" key_matches "$T/mail.pem" "$T/mail.key"
	check "lwip-email-exactly-one-response-received" one_response_for "$M_CA_EVENTS" "$M_EMAIL"
	check "lwip-email-traffic-crossed-the-tap" eval '[ $((bytes_after - bytes_before)) -gt 10000 ] && grep -qE "tap [1-9][0-9]* frames in" "$T/mail.err"'
	check "lwip-email-pop3-and-smtp-from-lwip-address" mail_via_lwip "$TESTENV_DIR" "$M_EMAIL"
else
	fail "lwip-testenv-in-namespace" "see below"
	show "$T/testenv-start.log" | tail -20
fi

# ---------------------------------------------------------------------
# Clean-up, checked

# shellcheck disable=SC2153  # PEBBLE_PIDS comes from $PEBBLE_DIR/env
pebble_pids=$PEBBLE_PIDS
bash tests/pebble/pebble_env.sh stop "$PEBBLE_DIR" 2>/dev/null
testenv_pids=
for f in ca.pid mail/dovecot.pid mail/smtp.pid; do
	if [ -f "$TESTENV_DIR/$f" ]; then testenv_pids="$testenv_pids $(cat "$TESTENV_DIR/$f")"; fi
done
if [ -f "$TESTENV_DIR/env" ]; then
	bash tests/testenv stop "$TESTENV_DIR" >/dev/null 2>&1
fi
# Nothing may run in the namespace any more (Postfix's children exit on
# their own shortly after its master).
for _ in $(seq 1 100); do
	[ -z "$(ip netns pids "$NS" 2>/dev/null)" ] && break
	sleep 0.05
done
ns_left=$(ip netns pids "$NS" 2>/dev/null | tr '\n' ' ')
ip netns del "$NS" 2>/dev/null
left=0
[ -z "$ns_left" ] || { echo "    still in the namespace: $ns_left"; left=1; }
for pid in $pebble_pids $testenv_pids; do
	# alive and not a zombie (PID 1 here may reap the testenv's orphans late)
	if [ -r "/proc/$pid/stat" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$pid/stat" 2>/dev/null; then
		echo "    still running: $pid"; left=1
	fi
done
check "lwip-cleanup-nothing-left" eval '[ "$left" = 0 ] && ! ip netns list | grep -qw "$NS"'

finish
