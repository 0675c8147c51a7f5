#!/bin/sh
# Regenerate the S/MIME test PKI and mails of this directory (OpenSSL 3).
# Test keys made for this project, valid 2025-01-01 .. 2045-01-01:
#   root.pem        EC P-256 root CA (the trust anchor)
#   inter.pem       EC P-256 intermediate, issued by root
#   p256.pem       signer acme@ca.example, P-256, issued by inter;
#                   keyUsage and extendedKeyUsage (emailProtection) critical
#   p384.pem       signer acme@ca.example, P-384, issued by root directly
# Mails (CRLF, challenge for alice@example.org from acme@ca.example):
#   p256-detached.eml  multipart/signed, SHA-256, signer by issuer+serial,
#                      intermediate included, inner message/rfc822
#   p384-opaque.eml    application/pkcs7-mime signed-data, SHA-384, signer
#                      by subjectKeyIdentifier, inner message/rfc822
#   p256-wrong-inter.eml  as p256-detached.eml, but the intermediate in it
#                      is another one with the same name (issued by root,
#                      another key): the signer's signature fails
set -eu
cd "$(dirname "$0")"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

cat > "$T/ca.cnf" <<'EOF'
[ca]
default_ca = test
[test]
database = $ENV::T/index.txt
new_certs_dir = $ENV::T
serial = $ENV::T/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[bad_eku_ext]
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = email:acme@ca.example
[bad_ku_ext]
keyUsage = critical, keyAgreement
subjectAltName = email:acme@ca.example
[crit_ext]
keyUsage = critical, digitalSignature
subjectAltName = email:acme@ca.example
1.2.3.4 = critical, DER:05:00
[not_ca_ext]
basicConstraints = CA:FALSE
keyUsage = critical, keyCertSign
[signer_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, emailProtection
subjectAltName = email:acme@ca.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
export T
: > "$T/index.txt"
echo 1000 > "$T/serial"
ca() { # ca ISSUER_CERT ISSUER_KEY CSR EXT OUT
	openssl ca -batch -config "$T/ca.cnf" -cert "$1" -keyfile "$2" -in "$3" \
		-extensions "$4" -startdate 20250101000000Z -enddate 20450101000000Z \
		-notext -out "$5" 2>/dev/null
}

openssl ecparam -name prime256v1 -genkey -noout -out root.key
openssl req -new -key root.key -subj "/CN=acme_smime test root" -out "$T/root.csr"
openssl ca -batch -selfsign -config "$T/ca.cnf" -keyfile root.key -in "$T/root.csr" \
	-extensions ca_ext -startdate 20250101000000Z -enddate 20450101000000Z \
	-notext -out root.pem 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$T/inter.key"
openssl req -new -key "$T/inter.key" -subj "/CN=acme_smime test intermediate" -out "$T/inter.csr"
ca root.pem root.key "$T/inter.csr" ca_ext inter.pem
openssl ecparam -name prime256v1 -genkey -noout -out p256.key
openssl req -new -key p256.key -subj "/CN=acme@ca.example" -out "$T/p256.csr"
ca inter.pem "$T/inter.key" "$T/p256.csr" signer_ext p256.pem
openssl ecparam -name secp384r1 -genkey -noout -out p384.key
openssl req -new -key p384.key -subj "/CN=acme@ca.example" -out "$T/p384.csr"
ca root.pem root.key "$T/p384.csr" signer_ext p384.pem

for kind in bad_eku bad_ku crit not_ca; do
	openssl ecparam -name prime256v1 -genkey -noout -out "$T/$kind.key"
	openssl req -new -key "$T/$kind.key" -subj "/CN=$kind" -out "$T/$kind.csr"
done
ca root.pem root.key "$T/bad_eku.csr" bad_eku_ext bad-eku.pem
ca root.pem root.key "$T/bad_ku.csr" bad_ku_ext bad-ku.pem
ca root.pem root.key "$T/crit.csr" crit_ext crit-ext.pem
ca root.pem root.key "$T/not_ca.csr" not_ca_ext not-ca.pem
openssl ecparam -name prime256v1 -genkey -noout -out "$T/fake.key"
openssl req -new -key "$T/fake.key" -subj "/CN=acme_smime test root" -out "$T/fake.csr"
openssl ca -batch -selfsign -config "$T/ca.cnf" -keyfile "$T/fake.key" -in "$T/fake.csr" \
	-extensions ca_ext -startdate 20250101000000Z -enddate 20450101000000Z \
	-notext -out fake-root.pem 2>/dev/null

TOKEN=LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME
outer() { # the unsigned outer header fields
	printf 'From: acme@ca.example\r\nTo: alice@example.org\r\n'
	printf 'Subject: ACME: %s\r\n' "$TOKEN"
	printf 'Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <%s@ca.example>\r\n' "$1"
	printf 'Auto-Submitted: auto-generated; type=acme\r\n'
}
inner() { # the signed entity: a message/rfc822 copy of the header
	printf 'Content-Type: message/rfc822\r\n\r\n'
	printf 'From: acme@ca.example\r\nTo: alice@example.org\r\n'
	printf 'Subject: ACME: %s\r\nMessage-ID: <%s@ca.example>\r\n' "$TOKEN" "$1"
	printf 'Content-Type: text/plain; charset=us-ascii\r\n\r\n'
	printf 'This is an automatically generated ACME challenge.\r\n'
}

inner d1 > "$T/in1"
{ outer d1; openssl cms -sign -binary -in "$T/in1" -signer p256.pem -inkey p256.key \
	-certfile inter.pem -md sha256; } > p256-detached.eml
openssl ecparam -name prime256v1 -genkey -noout -out "$T/finter.key"
openssl req -new -key "$T/finter.key" -subj "/CN=acme_smime test intermediate" -out "$T/finter.csr"
ca root.pem root.key "$T/finter.csr" ca_ext "$T/finter.pem"
{ outer d1; openssl cms -sign -binary -in "$T/in1" -signer p256.pem -inkey p256.key \
	-certfile "$T/finter.pem" -md sha256; } > p256-wrong-inter.eml
inner o1 > "$T/in2"
{ outer o1; openssl cms -sign -binary -nodetach -keyid -in "$T/in2" -signer p384.pem \
	-inkey p384.key -md sha384; } > p384-opaque.eml
# openssl writes LF line ends around the MIME structure: make it all CRLF.
for f in p256-detached.eml p256-wrong-inter.eml p384-opaque.eml; do
	sed -i 's/\r*$/\r/' "$f"
done
openssl cms -verify -in p256-detached.eml -CAfile root.pem -purpose any -out /dev/null
openssl cms -verify -in p384-opaque.eml -CAfile root.pem -purpose any -out /dev/null
rm -f root.key p256.key p384.key   # not needed by the tests
