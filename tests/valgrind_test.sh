#!/bin/bash
# The integration tests once under valgrind memcheck (issue 8): one Pebble
# issuance for a dns identifier (http-01), then a second run on the same
# store that finds the certificate not yet due (the store read back), and
# one RFC 8823 enrollment against the local test CA and real mail servers
# (tests/testenv), each with build/acme-smime-enroll running under
#
#   valgrind --error-exitcode=99 --leak-check=full
#            --errors-for-leak-kinds=definite
#
# so that an invalid read or write, a use of uninitialised memory or a
# definitely lost block in the CLI fails the check.
#
#   bash tests/valgrind_test.sh
#
# Each check prints "PASS name" or "FAIL name"; the last line is
# "N passed, N failed"; the exit status is non-zero when a check failed.
#
# Environment: CLI (default build/acme-smime-enroll), PEBBLE_PORT_BASE
# (default 14400; uses BASE..BASE+5), CLI_TIMEOUT (seconds per run under
# valgrind, default 900), KEEP=1 keeps the temp dir, VERBOSE=1 shows the
# CLI's stderr and the valgrind log of every run.
# Needs valgrind, the packages of tests/pebble/packages.txt and those of
# the test environment (tests/install_deps.sh).
# shellcheck disable=SC2317
set -u

cd "$(dirname "$0")/.." || exit 1
CLI=${CLI:-build/acme-smime-enroll}
CLI_TIMEOUT=${CLI_TIMEOUT:-900}
export PEBBLE_PORT_BASE=${PEBBLE_PORT_BASE:-14400}

T=$(mktemp -d /tmp/acme-smime-valgrind.XXXXXX)
chmod 755 "$T"   # the mail servers run as other users below it
PEBBLE_DIR=
MAIL_DIR=
passed=0
failed=0

cleanup() {
	if [ -n "$PEBBLE_DIR" ]; then
		bash tests/pebble/pebble_env.sh stop "$PEBBLE_DIR" >/dev/null 2>&1
	fi
	if [ -n "$MAIL_DIR" ]; then
		bash tests/testenv stop "$MAIL_DIR" >/dev/null 2>&1
	fi
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

finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit $?
}

show() {
	sed 's/^/    | /' "$1"
}

# vg NAME ARGS...: run the CLI under memcheck; its stderr goes to
# $T/NAME.err, valgrind's report to $T/NAME.vg; sets RC.
vg() {
	local name=$1
	shift
	timeout "$CLI_TIMEOUT" valgrind --error-exitcode=99 --leak-check=full \
		--errors-for-leak-kinds=definite --show-leak-kinds=definite \
		--track-origins=yes --log-file="$T/$name.vg" \
		"$CLI" "$@" >"$T/$name.out" 2>"$T/$name.err"
	RC=$?
	if [ "${VERBOSE:-0}" = 1 ]; then
		show "$T/$name.err"
		show "$T/$name.vg"
	fi
}

# judge NAME CERT: three checks of one run: it succeeded, memcheck found
# no error, and nothing was definitely lost.
judge() {
	local name=$1 cert=$2
	if [ "$RC" -eq 0 ] && grep -q 'BEGIN CERTIFICATE' "$cert" 2>/dev/null; then
		pass "$name-issues"
	elif [ "$RC" -eq 99 ]; then
		fail "$name-issues" "valgrind reported errors (below)"
	elif [ "$RC" -eq 124 ]; then
		fail "$name-issues" "timed out after $CLI_TIMEOUT s"
		tail -15 "$T/$name.err" | sed 's/^/    | /'
	else
		fail "$name-issues" "exit status $RC"
		tail -15 "$T/$name.err" | sed 's/^/    | /'
	fi
	# The report's summary lines prove that memcheck ran to the end.
	if [ "$RC" -eq 124 ] || ! grep -q 'ERROR SUMMARY:' "$T/$name.vg" 2>/dev/null; then
		fail "$name-memcheck-clean" "no complete valgrind report"
	elif grep -q 'ERROR SUMMARY: 0 errors' "$T/$name.vg"; then
		pass "$name-memcheck-clean"
	else
		fail "$name-memcheck-clean" "$(grep -o 'ERROR SUMMARY:.*' "$T/$name.vg")"
		grep -vE '^==[0-9]+== *$' "$T/$name.vg" | grep -B2 -A14 -E 'Invalid|uninitialised|definitely lost in' |
			head -60 | sed 's/^/    | /'
	fi
	if [ "$RC" -eq 124 ] || ! grep -q 'HEAP SUMMARY:' "$T/$name.vg" 2>/dev/null; then
		fail "$name-no-definite-leak" "no complete valgrind report"
	elif grep -qE 'definitely lost: [1-9]' "$T/$name.vg"; then
		fail "$name-no-definite-leak" "$(grep -o 'definitely lost:.*' "$T/$name.vg")"
	else
		pass "$name-no-definite-leak"
	fi
}

if ! command -v valgrind >/dev/null 2>&1; then
	fail "valgrind-installed" "apt-get install valgrind"
	finish
fi
if [ ! -x "$CLI" ]; then
	make -s "$CLI" >"$T/make.log" 2>&1
fi
if [ ! -x "$CLI" ]; then
	fail "cli-built" "$CLI missing and make failed"
	show "$T/make.log" | tail -20
	finish
fi

# ---------------------------------------------------------------------
# 1. Pebble: a dns identifier, http-01 served by the CLI itself.

export PEBBLE_VA_NOSLEEP=1
unset PEBBLE_WFE_NONCEREJECT PEBBLE_VA_SLEEPTIME PEBBLE_VA_ALWAYS_VALID
if bash tests/pebble/pebble_env.sh start "$T/pebble" 2>"$T/pebble.start.log"; then
	PEBBLE_DIR=$T/pebble
	(
		# shellcheck source=/dev/null
		. "$T/pebble/env"
		vg pebble-dns --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" \
			--agree-tos --contact mailto:admin@example.test \
			--dns vg.example.test --http01-listen "127.0.0.1:$HTTP01_PORT" \
			--store "$T/pebble.flash" --out-cert "$T/pebble.pem" \
			--out-key "$T/pebble.key" -v
		judge pebble-dns "$T/pebble.pem"
		# The next boot reads the store back: the certificate is not
		# due, so the CLI exits 0 at once without network traffic.
		vg pebble-dns-stored --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" \
			--agree-tos --dns vg.example.test \
			--http01-listen "127.0.0.1:$HTTP01_PORT" --store "$T/pebble.flash" \
			--renew-if-due --out-cert "$T/pebble-again.pem" -v
		judge pebble-dns-stored "$T/pebble-again.pem"
		echo "$passed $failed" >"$T/counts"
	)
	read -r passed failed <"$T/counts"
	bash tests/pebble/pebble_env.sh stop "$PEBBLE_DIR" >/dev/null 2>&1
	PEBBLE_DIR=
else
	fail "pebble-start"
	show "$T/pebble.start.log" | tail -20
fi

# ---------------------------------------------------------------------
# 2. RFC 8823: an email identifier, POP3 STLS in, SMTP submission with
# STARTTLS out, against the project's test CA (the command of
# tests/demo.sh).

if TESTENV_PORTS=auto bash tests/testenv start "$T/mail" >"$T/mail.start.log" 2>&1; then
	MAIL_DIR=$T/mail
	(
		# shellcheck source=/dev/null
		. "$T/mail/env"
		vg rfc8823 --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" \
			--agree-tos --email "$EMAIL" \
			--pop3 "$POP3_STLS" --pop3-tls starttls --pop3-user "$MAIL_USER" \
			--pop3-pass-file "$MAIL_PASS_FILE" \
			--smtp "$SMTP_STARTTLS" --smtp-tls starttls --smtp-user "$MAIL_USER" \
			--smtp-pass-file "$MAIL_PASS_FILE" --mail-ca-file "$MAIL_CA_FILE" \
			--reply-grace 1 --mail-poll 2 --mail-policy unsigned-ok \
			--store "$T/rfc8823.flash" --out-cert "$T/rfc8823.pem" \
			--out-key "$T/rfc8823.key" -v
		judge rfc8823 "$T/rfc8823.pem"
		echo "$passed $failed" >"$T/counts"
	)
	read -r passed failed <"$T/counts"
else
	fail "testenv-start"
	show "$T/mail.start.log" | tail -20
fi

finish
