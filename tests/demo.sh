#!/bin/bash
# make demo: one complete RFC 8823 enrollment on this machine. Starts the
# project's test CA and real mail servers (tests/testenv), runs the CLI as
# a device would (POP3 STLS in, SMTP submission with STARTTLS out), prints
# the S/MIME certificate it got and checks it, then stops everything. The
# device is alice@example.test.
set -euo pipefail
cd "$(dirname "$0")/.."
D=$(mktemp -d /tmp/acme-smime-demo.XXXXXX)
cleanup() {
	bash tests/testenv stop "$D" >/dev/null 2>&1 || true
	rm -rf "$D"
}
trap cleanup EXIT

echo "== starting the test CA and the mail servers"
TESTENV_PORTS=auto TESTENV_EMAIL=alice@example.test bash tests/testenv start "$D" | tail -n 1
# shellcheck disable=SC1091
. "$D/env"

echo "== enrolling $EMAIL"
# Strict policy (the default): the challenge mail must carry a valid
# DKIM signature; the key comes from the test environment's DNS server.
build/acme-smime-enroll --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" \
	--agree-tos --email "$EMAIL" \
	--pop3 "$POP3_STLS" --pop3-tls starttls --pop3-user "$MAIL_USER" \
	--pop3-pass-file "$MAIL_PASS_FILE" \
	--smtp "$SMTP_STARTTLS" --smtp-tls starttls --smtp-user "$MAIL_USER" \
	--smtp-pass-file "$MAIL_PASS_FILE" --mail-ca-file "$MAIL_CA_FILE" \
	--reply-grace 2 --dns-resolver "$DNS_RESOLVER" \
	--store "$D/device.flash" --out-cert "$D/cert.pem" --out-key "$D/key.pem"

echo "== the certificate"
cat "$D/cert.pem"
openssl x509 -in "$D/cert.pem" -noout -subject -issuer -dates \
	-ext subjectAltName,keyUsage,extendedKeyUsage
echo "== chain check"
openssl verify -CAfile "$TEST_ROOT" -untrusted "$TEST_INTERMEDIATE" \
	-purpose smimesign "$D/cert.pem"
