#!/bin/bash
# Integration tests of build/acme-smime-enroll against Pebble (issue 4):
# real TLS, real http-01 validation by Pebble against the CLI's listener,
# pebble-challtestsrv as Pebble's DNS (every name -> 127.0.0.1).
#
#   bash tests/pebble/cli_pebble_test.sh
#
# Each check prints "PASS name" or "FAIL name"; the last line is
# "N passed, N failed"; the exit status is non-zero when a check failed.
#
# Environment: CLI (default build/acme-smime-enroll), PEBBLE_TEST_PORT_BASE
# (default 14200; the Pebble instances use BASE, BASE+10, ... up to +49),
# KEEP=1 keeps the temp dir, VERBOSE=1 shows every CLI's stderr.
# Needs the packages of tests/pebble/packages.txt; tcpdump (root) for the
# "nothing in clear" capture, else the server's log alone decides.
# Checks run through check/eval and trap: shellcheck cannot see the uses.
# shellcheck disable=SC2317,SC2016,SC2034
set -u

cd "$(dirname "$0")/../.." || exit 1
HERE=tests/pebble
CLI=${CLI:-build/acme-smime-enroll}
BASE=${PEBBLE_TEST_PORT_BASE:-14200}
CLI_TIMEOUT=${CLI_TIMEOUT:-180}

T=$(mktemp -d /tmp/acme-smime-pebble.XXXXXX)
PEBBLES=()
TCPDUMP_PID=
passed=0
failed=0

cleanup() {
	local d
	if [ -n "$TCPDUMP_PID" ]; then
		kill "$TCPDUMP_PID" 2>/dev/null
		wait "$TCPDUMP_PID" 2>/dev/null
	fi
	for d in "${PEBBLES[@]}"; do
		bash "$HERE/pebble_env.sh" stop "$d" 2>/dev/null
	done
	if [ "${KEEP:-0}" = 1 ]; then
		echo "kept $T"
	else
		rm -rf "$T"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() {
	echo "PASS $1"
	passed=$((passed + 1))
}

fail() {
	echo "FAIL $1${2:+: $2}"
	failed=$((failed + 1))
}

# check NAME CONDITION-COMMAND...
check() {
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}

finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit $?
}

show() {
	sed 's/^/    | /' "$1"
}

# start_pebble NAME OFFSET [--eab]: start an instance in $T/NAME with ports
# from BASE+OFFSET, environment as given by the caller (env VAR=... before
# the call does not pass through a function: callers export/unset).
start_pebble() {
	local name=$1 offset=$2
	shift 2
	if ! PEBBLE_PORT_BASE=$((BASE + offset)) \
			bash "$HERE/pebble_env.sh" start "$T/$name" "$@" \
			2>"$T/$name.start.log"; then
		show "$T/$name.start.log"
		return 1
	fi
	PEBBLES+=("$T/$name")
	bash "$HERE/fetch_roots.sh" "$T/$name" "$T/$name/roots.pem" \
		"$T/$name/intermediates.pem"
}

# load NAME: the instance's variables (ACME_DIRECTORY, HTTP01_PORT, ...).
load() {
	# shellcheck source=/dev/null
	. "$T/$1/env"
}

# enroll OUTNAME ARGS...: run the CLI (with a timeout); stderr goes to
# $T/OUTNAME.err; sets RC.
enroll() {
	local out=$1
	shift
	timeout "$CLI_TIMEOUT" "$CLI" "$@" 2>"$T/$out.err" >"$T/$out.out"
	RC=$?
	if [ "${VERBOSE:-0}" = 1 ]; then show "$T/$out.err"; fi
}

# pebble_count NAME REGEX: lines of the instance's log matching REGEX.
pebble_count() {
	grep -cE "$2" "$T/$1/pebble.log"
}

# accounts NAME: the highest "There are now N accounts" Pebble logged.
accounts() {
	sed -nE 's/.*There are now ([0-9]+) accounts.*/\1/p' "$T/$1/pebble.log" |
		sort -n | tail -1
}

# chain_ok NAME CERT: the chain verifies against the instance's root and
# intermediates, for TLS server use.
chain_ok() {
	openssl verify -purpose sslserver -CAfile "$T/$1/roots.pem" \
		-untrusted "$T/$1/intermediates.pem" -untrusted "$2" "$2" \
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

# key_matches CERT KEY: same public key, and KEY is mode 600.
key_matches() {
	local a b mode
	a=$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null | openssl pkey -pubin -outform DER 2>/dev/null | sha256sum)
	b=$(openssl pkey -in "$2" -pubout -outform DER 2>/dev/null | sha256sum)
	mode=$(stat -c %a "$2")
	grep -q 'BEGIN PRIVATE KEY' "$2" && [ "$a" = "$b" ] && [ "$mode" = 600 ]
}

rc_is() {
	[ "$RC" -eq "$1" ] || { echo "    exit status $RC, want $1"; show "$T/$2.err" | tail -15; return 1; }
}

# ---------------------------------------------------------------------
# The CLI itself (no server needed)

if [ ! -x "$CLI" ]; then
	make -s "$CLI" >"$T/make.log" 2>&1
fi
if [ ! -x "$CLI" ]; then
	fail "cli-built" "$CLI missing and make failed"
	show "$T/make.log" | tail -20
	finish
fi
pass "cli-built"

"$CLI" --help >"$T/help.out" 2>&1
RC=$?
check "cli-help" eval '[ $RC -eq 0 ] && grep -q -- "--http01-listen ADDR:PORT" "$T/help.out" && grep -q "Exit status" "$T/help.out"'
"$CLI" --bogus >/dev/null 2>&1
RC=$?
check "cli-usage-exit-2" [ "$RC" -eq 2 ]
"$CLI" --directory https://localhost:1/dir --email a@example.test \
	--ca-file /etc/ssl/certs/ca-certificates.crt >/dev/null 2>"$T/mail.err"
RC=$?
check "cli-email-needs-mail-servers" eval '[ $RC -eq 2 ] && grep -q "needs --pop3" "$T/mail.err"'

# ---------------------------------------------------------------------
# Pebble A: issuance for two names, then account reuse, then a wrong
# trust anchor (nothing must reach the server's HTTP layer).

export PEBBLE_VA_NOSLEEP=1
unset PEBBLE_WFE_NONCEREJECT PEBBLE_VA_SLEEPTIME PEBBLE_VA_ALWAYS_VALID
if ! start_pebble a 0; then
	fail "pebble-start"
	finish
fi
pass "pebble-start"
load a

enroll a1 --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" \
	--agree-tos --contact mailto:admin@example.test \
	--dns a.example.test --dns b.example.test \
	--http01-listen "127.0.0.1:$HTTP01_PORT" --store "$T/a.flash" \
	--out-cert "$T/a1.pem" --out-key "$T/a1.key" -v
check "issue-two-names" rc_is 0 a1
check "chain-verifies-against-pebble-roots" chain_ok a "$T/a1.pem"
check "certificate-names-both-identifiers" sans_are "$T/a1.pem" a.example.test b.example.test
check "key-is-pkcs8-0600-and-matches" key_matches "$T/a1.pem" "$T/a1.key"
check "progress-names-states" grep -q 'state ' "$T/a1.err"

accounts_before=$(accounts a)
enroll a2 --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" \
	--agree-tos --dns a.example.test \
	--http01-listen "127.0.0.1:$HTTP01_PORT" --store "$T/a.flash" \
	--out-cert "$T/a2.pem" -v
url1=$(sed -nE 's/.*account (https:[^ ]*).*/\1/p' "$T/a1.err" | head -1)
url2=$(sed -nE 's/.*account (https:[^ ]*).*/\1/p' "$T/a2.err" | head -1)
check "second-run-issues" rc_is 0 a2
check "second-run-no-new-account" eval '[ "$(accounts a)" = "$accounts_before" ] && [ "$accounts_before" = 1 ]'
check "second-run-same-account-url" eval '[ -n "$url1" ] && [ "$url1" = "$url2" ]'

# Wrong trust anchor: a CA that did not sign Pebble's certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	-days 1 -subj "/CN=wrong test CA" -keyout "$T/wrong.key" \
	-out "$T/wrong-ca.pem" 2>/dev/null
acme_port=${ACME_DIRECTORY#https://localhost:}
acme_port=${acme_port%%/*}
if command -v tcpdump >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
	tcpdump -i lo --immediate-mode -U -w "$T/wrong.pcap" "tcp port $acme_port" \
		>/dev/null 2>"$T/tcpdump.err" &
	TCPDUMP_PID=$!
	for _ in $(seq 1 100); do
		grep -q 'listening on' "$T/tcpdump.err" && break
		sleep 0.05
	done
fi
requests_before=$(pebble_count a 'calling handler')
enroll wrong --directory "$ACME_DIRECTORY" --ca-file "$T/wrong-ca.pem" \
	--agree-tos --dns a.example.test --store "$T/wrong.flash" -v
requests_after=$(pebble_count a 'calling handler')
check "wrong-trust-anchor-exit-3" rc_is 3 wrong
check "wrong-trust-anchor-no-http-request" [ "$requests_before" = "$requests_after" ]
if [ -n "$TCPDUMP_PID" ]; then
	sleep 0.2
	kill "$TCPDUMP_PID" 2>/dev/null
	wait "$TCPDUMP_PID" 2>/dev/null
	TCPDUMP_PID=
	packets=$(tcpdump -r "$T/wrong.pcap" -nn "tcp dst port $acme_port and tcp[tcpflags] & tcp-push != 0" 2>/dev/null | wc -l)
	clear=$(tcpdump -r "$T/wrong.pcap" -nn -A "tcp dst port $acme_port" 2>/dev/null |
		grep -cE 'HTTP/1\.|GET /|POST /|HEAD /|"protected"')
	check "wrong-trust-anchor-nothing-in-clear" eval '[ "$packets" -gt 0 ] && [ "$clear" -eq 0 ]'
	[ "$packets" -gt 0 ] || echo "    no client data captured (tcpdump)"
else
	echo "note: tcpdump unavailable or not root: the capture check is skipped"
fi

# ---------------------------------------------------------------------
# Pebble B: half the good nonces rejected.

export PEBBLE_WFE_NONCEREJECT=50
if start_pebble b 10; then
	load b
	enroll nonce --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" \
		--agree-tos --dns a.example.test --dns b.example.test \
		--http01-listen "127.0.0.1:$HTTP01_PORT" --store "$T/b.flash" \
		--out-cert "$T/b.pem" -v
	check "nonce-reject-50-succeeds" rc_is 0 nonce
	check "nonce-reject-50-chain-verifies" chain_ok b "$T/b.pem"
	retries=$(grep -o '[0-9]* badNonce retries' "$T/nonce.err" | tail -1)
	[ -z "$retries" ] || echo "    $retries"
else
	fail "nonce-reject-50-succeeds" "pebble did not start"
fi
unset PEBBLE_WFE_NONCEREJECT

# ---------------------------------------------------------------------
# Pebble C: validation sleeps (PEBBLE_VA_NOSLEEP unset): the client must
# wait between polls, not spin.

unset PEBBLE_VA_NOSLEEP
export PEBBLE_VA_SLEEPTIME=4
if start_pebble c 20; then
	load c
	t0=$(date +%s.%N)
	enroll poll --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" \
		--agree-tos --dns a.example.test --dns b.example.test \
		--http01-listen "127.0.0.1:$HTTP01_PORT" --store "$T/c.flash" \
		--out-cert "$T/c.pem" -v
	t1=$(date +%s.%N)
	elapsed=$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")
	polls=$(pebble_count c 'POST /(authZ|my-order)/')
	waits=$(grep -c 'wait [0-9]' "$T/poll.err")
	# One poll a second at most (the default minimum), plus the first
	# fetch of each authorization and of the order: a busy loop makes
	# hundreds.
	max_polls=$(awk "BEGIN { printf \"%d\", $elapsed + 2 * 2 + 3 }")
	echo "    ${elapsed%.*}s, $polls POST-as-GET to authorizations and order (bound $max_polls), $waits wait lines"
	check "slow-validation-succeeds" rc_is 0 poll
	check "slow-validation-no-busy-poll" [ "$polls" -le "$max_polls" ]
	# Waits must show unless no poll was needed at all.
	check "slow-validation-waits-shown" eval '[ "$waits" -gt 0 ] || [ "$polls" -le 3 ]'
else
	fail "slow-validation-succeeds" "pebble did not start"
fi
unset PEBBLE_VA_SLEEPTIME
export PEBBLE_VA_NOSLEEP=1

# ---------------------------------------------------------------------
# Pebble D: external account binding required.

if start_pebble d 30 --eab; then
	load d
	enroll eab-ok --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" \
		--agree-tos --dns a.example.test \
		--http01-listen "127.0.0.1:$HTTP01_PORT" --store "$T/d1.flash" \
		--eab-kid "$EAB_KID" --eab-hmac-key "$EAB_HMAC_KEY" \
		--out-cert "$T/d.pem" -v
	check "eab-right-key-succeeds" rc_is 0 eab-ok
	# A different 48-byte key under the same kid.
	wrong_key=$(head -c 48 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')
	enroll eab-bad --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" \
		--agree-tos --dns a.example.test \
		--http01-listen "127.0.0.1:$HTTP01_PORT" --store "$T/d2.flash" \
		--eab-kid "$EAB_KID" --eab-hmac-key "$wrong_key" -v
	check "eab-wrong-key-exit-5" rc_is 5 eab-bad
	check "eab-wrong-key-problem-printed" \
		grep -q 'ACME problem urn:ietf:params:acme:error:' "$T/eab-bad.err"
	enroll eab-none --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" \
		--agree-tos --dns a.example.test \
		--http01-listen "127.0.0.1:$HTTP01_PORT" --store "$T/d3.flash" -v
	# Refused by the server (5) or, reading the directory's
	# externalAccountRequired, by the CLI itself (2).
	check "eab-missing-refused" eval '[ "$RC" -eq 5 ] || [ "$RC" -eq 2 ]'
else
	fail "eab-right-key-succeeds" "pebble did not start"
fi

finish
