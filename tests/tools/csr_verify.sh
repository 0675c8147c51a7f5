#!/bin/sh
# Verify the self-signature of a DER-encoded PKCS#10 CSR with OpenSSL.
# Usage: tests/tools/csr_verify.sh FILE.der
# Prints OpenSSL's text; exits 0 when the signature verifies, 1 otherwise.
#
# OpenSSL 3.0 (Debian bookworm) exits 0 even when it prints
# "self-signature verify failure", so its message is checked as well.
if [ $# -ne 1 ]; then
    echo "usage: $0 FILE.der" >&2
    exit 2
fi
out=$(openssl req -inform DER -in "$1" -noout -verify 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 0 ]; then
    exit 1
fi
case $out in
    *"verify failure"*) exit 1 ;;
    *"verify OK"*) exit 0 ;;
    *) exit 1 ;;
esac
