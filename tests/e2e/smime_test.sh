#!/bin/bash
# shellcheck disable=SC2154 # counts come from ev_summary (eval)
# End-to-end challenge-mail authenticity (issue 6) with build/acme-smime-enroll
# against the project's test CA and real mail servers: S/MIME-signed challenge
# mails (CA_SMIME_SIGN: multipart/signed and opaque pkcs7-mime, header
# protection by a signed message/rfc822 copy, signer under the CA's own S/MIME
# root SMIME_CA_FILE) checked with --smime-ca-file, and DKIM with the key from
# the test environment's DNS server: pebble-challtestsrv for a 1024-bit key
# (one TXT string), tests/tools/fake_dns.py for a 2048-bit key (several).
# Prints "PASS name" / "FAIL name (why)" per check, last line
# "N passed, N failed". About 40 s. E2E_KEEP=1 keeps the logs.
#
# Every enrollment uses a fresh store and the strict policy; which proof can
# hold is set by the mail (CA_DKIM, CA_SMIME_SIGN) and by what the client is
# given (--smime-ca-file; --dns-resolver with POLICY=strict, none with
# POLICY=strict-no-dns), so that each check has exactly one way to pass.

# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

# Normal runs take 2-4 s: a hang costs this much, not the default 120 s.
CLI_TIMEOUT=30

env_start sm CA_DKIM=0 CA_SMIME_SIGN=1 || e2e_abort "tests/testenv start failed" "$E2E_T/sm.start.log"
D=$E2E_T/sm
# shellcheck disable=SC1091
. "$D/env"

# enroll (tests/e2e/lib.sh): one enrollment with a fresh store, its whole
# output in LOG.

# ok_signed_enrollment FORM DKIM: ok_enrollment (tests/e2e/lib.sh), and the
# challenge mail was S/MIME-signed in FORM (- = not at all) and DKIM-signed
# DKIM (0/1) times.
ok_signed_enrollment() {
	ok_enrollment || return 1
	[ "$mail_smime" = "$1" ] || { echo "challenge mail S/MIME form '$mail_smime', not '$1'"; return 1; }
	[ "$mail_dkim" -eq "$2" ] || { echo "$mail_dkim DKIM-signed challenge mails, not $2"; return 1; }
}

# expect_signed_ok NAME FORM DKIM [CLI options...]: an enrollment that must succeed
# (--mail-wait 15: a refused mail ends the run with its reason in the log).
expect_signed_ok() {
	local name=$1 form=$2 dk=$3 why
	shift 3
	enroll "$name" --mail-wait 15 "$@"
	if why=$(ok_signed_enrollment "$form" "$dk"); then pass "$name"; else fail "$name" "$why" "$LOG"; fi
}

# expect_refused NAME REASON [CLI options...]: the run must give up
# (--mail-wait 3) without answering: no response mail sent (none at the
# CA, no SMTP session), exit 6 or 8, "ignoring a message: REASON" on stderr.
expect_refused() {
	local name=$1 reason=$2
	shift 2
	enroll "$name" --mail-wait 3 "$@"
	if [ "$RC" -ne 6 ] && [ "$RC" -ne 8 ]; then fail "$name" "exit $RC (want 6 or 8)" "$LOG"
	elif ! grep -q "ignoring a message: $reason" "$LOG"; then fail "$name" "no 'ignoring a message: $reason' on stderr" "$LOG"
	elif ! grep -q 'failed in state\|no valid challenge mail arrived' "$LOG"; then fail "$name" "no failure line" "$LOG"
	elif [ "$responses" -ne 0 ] || [ "$decoy_answers" -ne 0 ] || grep -q 'SMTP: sending\|challenge mail accepted' "$LOG"; then
		fail "$name" "a response was sent ($responses at the CA)" "$LOG"
	elif [ "$mails" -lt 1 ]; then fail "$name" "the CA sent no challenge mail" "$LOG"
	else pass "$name"; fi
}

# restart NAME [CA_KNOB=value...]: the CA with only these knobs (a failed
# restart is a failed check and ends the suite: the rest depends on it).
restart() {
	local name=$1
	shift
	if ! ca_restart "$D" "$@"; then
		fail "$name" "tests/testenv restart-ca $* failed" "$D.restart.log"
		e2e_finish
		exit 1
	fi
	# shellcheck disable=SC1091
	. "$D/env"
}

UNTRUSTED='S/MIME signer certificate not valid or not from a trusted CA'

# --- S/MIME the only proof (CA_DKIM=0, no DNS resolver) --------------------------

check env-smime-ca-file "SMIME_CA_FILE='${SMIME_CA_FILE:-}' is not the CA's own S/MIME root" "" \
	test -s "${SMIME_CA_FILE:-/nonexistent}" -a "${SMIME_CA_FILE:-}" = "$D/ca/smime-root.pem" \
	-a "$(openssl x509 -in "${SMIME_CA_FILE:-/dev/null}" -noout -subject 2>&1)" != \
	"$(openssl x509 -in "$TEST_ROOT" -noout -subject 2>&1)"

POLICY=strict-no-dns expect_signed_ok smime-detached-strict detached 0 --smime-ca-file "$SMIME_CA_FILE"
[ -s "$CERT" ] && leaf_of "$CERT" "$E2E_T/leaf.pem"
openssl verify -CAfile "$TEST_ROOT" -untrusted "$TEST_INTERMEDIATE" -purpose smimesign \
	"$E2E_T/leaf.pem" >"$E2E_T/leaf.verify" 2>&1
check smime-detached-chain-verifies "openssl verify -purpose smimesign: $(tr '\n' ' ' <"$E2E_T/leaf.verify")" "" \
	grep -q ': OK$' "$E2E_T/leaf.verify"

# a wrong anchor (the CA's HTTPS root), and none at all
POLICY=strict-no-dns expect_refused smime-wrong-anchor-refused "$UNTRUSTED" --smime-ca-file "$ACME_CA_FILE"
POLICY=strict-no-dns expect_refused smime-no-anchor-refused "$UNTRUSTED"

restart smime-opaque CA_DKIM=0 CA_SMIME_SIGN=opaque
POLICY=strict-no-dns expect_signed_ok smime-opaque-strict opaque 0 --smime-ca-file "$SMIME_CA_FILE"

# RSA signer under a signing intermediate carried in the CMS
restart smime-rsa-intermediate CA_DKIM=0 CA_SMIME_SIGN=1 CA_SMIME_CHAIN=intermediate CA_PKI_ALG=rsa
POLICY=strict-no-dns expect_signed_ok smime-rsa-intermediate-strict detached 0 --smime-ca-file "$SMIME_CA_FILE"

# Signatures that do not fit beside the mail in the 8 KiB mail area (an RSA
# chain: 2.5-3.2 KB of DER after a 5-6 KB mail): the check is deferred until
# the connection is closed and takes the TLS area. Detached with a 2048-bit
# DKIM signature too (not checkable here: no resolver), opaque, and opaque
# through the mailbox hooks (the ACME connection is closed for it, then
# resumed).
DEFERRED='checked once the connection is closed'
restart smime-rsa-large CA_SMIME_SIGN=1 CA_SMIME_CHAIN=intermediate CA_PKI_ALG=rsa CA_DKIM_BITS=2048
POLICY=strict-no-dns expect_signed_ok smime-large-detached-deferred detached 1 --smime-ca-file "$SMIME_CA_FILE"
check smime-large-detached-was-deferred "no '$DEFERRED' line" "$LOG" grep -q "$DEFERRED" "$LOG"
restart smime-rsa-large-opaque CA_DKIM=0 CA_SMIME_SIGN=opaque CA_SMIME_CHAIN=intermediate CA_PKI_ALG=rsa
POLICY=strict-no-dns expect_signed_ok smime-large-opaque-deferred opaque 0 --smime-ca-file "$SMIME_CA_FILE"
check smime-large-opaque-was-deferred "no '$DEFERRED' line" "$LOG" grep -q "$DEFERRED" "$LOG"
MAILBOX=maildir POLICY=strict-no-dns expect_signed_ok smime-large-opaque-hooks opaque 0 \
	--smime-ca-file "$SMIME_CA_FILE"
check smime-large-opaque-hooks-was-deferred "no '$DEFERRED' line" "$LOG" grep -q "$DEFERRED" "$LOG"

# S/MIME decoys just before the real mail, none DKIM-signed: content changed
# after signing, a signer certificate for another address, a protected
# Subject that differs from the outer one; and one unsigned
restart smime-decoys CA_DKIM=0 CA_SMIME_SIGN=1 CA_DECOY=badsmime,smimesigner,smimeheaders,unsigned
POLICY=strict-no-dns enroll smime-decoys-ignored --mail-wait 15 --smime-ca-file "$SMIME_CA_FILE"
if ! why=$(ok_signed_enrollment detached 0); then fail smime-decoys-ignored "$why" "$LOG"
elif [ "$decoys" -ne 4 ]; then fail smime-decoys-ignored "the CA sent $decoys decoys, not 4" "$LOG"
else
	missing=
	for r in 'S/MIME message digest does not match the signed content' \
		'S/MIME signer certificate is not for the From address' \
		'S/MIME protected From, To or Subject differs from the header' \
		'no S/MIME or DKIM signature'; do
		grep -q "ignoring a message: $r" "$LOG" || missing="$missing '$r'"
	done
	if [ -n "$missing" ]; then fail smime-decoys-ignored "not ignored for:$missing" "$LOG"
	else pass smime-decoys-ignored; fi
fi

# --- S/MIME and DKIM on one mail (DKIM over the final S/MIME mail) ---------------

restart smime-and-dkim CA_SMIME_SIGN=1
# no S/MIME anchor: only the DKIM signature can hold
POLICY=strict expect_signed_ok smime-and-dkim-accepted-by-dkim detached 1
# no DNS resolver: only the S/MIME signature can hold
POLICY=strict-no-dns expect_signed_ok smime-and-dkim-accepted-by-smime detached 1 --smime-ca-file "$SMIME_CA_FILE"

# --- DKIM only: the key from pebble-challtestsrv (1024) or fake_dns.py (2048) ----

# dkim_env BITS SERVER STRINGS: the DKIM key has BITS bits and the test
# environment's DNS server is SERVER, serving the record in STRINGS strings.
dkim_env() {
	local bits got
	bits=$(openssl pkey -pubin -in "$DKIM_PUBKEY_FILE" -noout -text 2>/dev/null |
		sed -n 's/.*Public-Key: (\([0-9]*\) bit).*/\1/p')
	[ "$bits" = "$1" ] || { echo "DKIM key of ${bits:-?} bits, not $1"; return 1; }
	[ "$DNS_SERVER" = "$2" ] || { echo "DNS_SERVER=$DNS_SERVER, not $2"; return 1; }
	got=$("$PY" "$E2E_TOP/tests/tools/dns_txt_get.py" "$DNS_RESOLVER" \
		"$DKIM_SELECTOR._domainkey.$DKIM_DOMAIN" --expect "$DKIM_TXT_FILE" 2>&1) ||
		{ echo "$DNS_RESOLVER does not serve the record: $got"; return 1; }
	[ "$(printf '%s\n' "$got" | sed -n 's/^strings=//p')" = "$3" ] ||
		{ echo "record in $(printf '%s\n' "$got" | sed -n 's/^strings=//p') strings, not $3"; return 1; }
}

restart dkim-challtestsrv
if why=$(dkim_env 1024 pebble-challtestsrv 1); then pass dkim-default-1024-served-by-challtestsrv
else fail dkim-default-1024-served-by-challtestsrv "$why"; fi
POLICY=strict expect_signed_ok dkim-1024-challtestsrv-strict - 1

restart dkim-fake-dns CA_DKIM_BITS=2048
if why=$(dkim_env 2048 fake_dns 2); then pass dkim-2048-served-by-fake-dns
else fail dkim-2048-served-by-fake-dns "$why"; fi
POLICY=strict expect_signed_ok dkim-2048-fake-dns-strict - 1

e2e_finish
