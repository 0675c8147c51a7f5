#!/usr/bin/python3
"""Regenerate the DKIM test mails of this directory (run with Debian's
/usr/bin/python3 and python3-dkim, from this directory).

Keys: ca-s1.key and wrong.key are RSA-2048 test keys made for this project
(openssl genrsa -traditional 2048); k1024.key is RSA-1024 (RFC 8301's
floor), for pebble-challtestsrv, which cannot serve a TXT string over 255
bytes (tests/dns_txt_test.sh); ed25519 uses the fixed seed
01 02 .. 20. Their public TXT records are written to *.txt. The signature
time is pinned (t=1767225600, 2026-01-01) so the output is reproducible:
RSA PKCS#1 v1.5 signatures are deterministic.
"""
import base64
import subprocess
import time

import dkim
import nacl.signing

T = 1767225600
time.time = lambda: T

DOMAIN = b'ca.example'
SEL = b's1'
TOKEN = b'LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME'

# The fields protocol.md 4.2 requires (absent ones are listed too: that
# signs their absence), plus two X-Test instances to exercise bottom-up
# selection of repeated fields.
H_FULL = [b'from', b'sender', b'reply-to', b'to', b'cc', b'subject', b'date',
          b'in-reply-to', b'references', b'message-id', b'auto-submitted',
          b'content-type', b'content-transfer-encoding', b'mime-version',
          b'x-test', b'x-test']
H_NO_AUTOSUBMITTED = [h for h in H_FULL if h != b'auto-submitted']


def mail(frm=b'ACME CA <acme@ca.example>'):
    # Body: trailing white space, inner runs of it, a tab, empty lines in
    # the middle and at the end: the canonicalisations differ on all.
    return (b'From: ' + frm + b'\r\n'
            b'To: alice@example.org\r\n'
            b'Subject: ACME: ' + TOKEN + b'\r\n'
            b'Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n'
            b'Message-ID: <challenge-1@ca.example>\r\n'
            b'Auto-Submitted: auto-generated; type=acme\r\n'
            b'X-Test: first\r\n'
            b'X-Test:   second  \r\n'
            b'MIME-Version: 1.0\r\n'
            b'Content-Type: text/plain; charset=us-ascii\r\n'
            b'\r\n'
            b'This is an automatically generated ACME challenge   \r\n'
            b'for\temail address  "alice@example.org".\r\n'
            b'\r\n'
            b'  If you did not request it, ignore this mail.\r\n'
            b'\r\n'
            b'\r\n')


def sign(msg, key, domain=DOMAIN, sel=SEL, canon=(b'relaxed', b'relaxed'),
         headers=H_FULL, alg=b'rsa-sha256', length=False):
    return dkim.sign(msg, sel, domain, key, canonicalize=canon,
                     include_headers=headers, signature_algorithm=alg,
                     length=length) + msg


def txt_rsa(keyfile):
    der = subprocess.run(['openssl', 'rsa', '-in', keyfile, '-pubout',
                          '-outform', 'DER'], capture_output=True,
                         check=True).stdout
    return b'v=DKIM1; k=rsa; p=' + base64.b64encode(der)


ca = open('ca-s1.key', 'rb').read()
wrong = open('wrong.key', 'rb').read()
k1024 = open('k1024.key', 'rb').read()
ed = nacl.signing.SigningKey(bytes(range(1, 33)))
ed_priv = base64.b64encode(bytes(ed))

open('ca-s1.txt', 'wb').write(txt_rsa('ca-s1.key') + b'\n')
open('wrong.txt', 'wb').write(txt_rsa('wrong.key') + b'\n')
open('k1024.txt', 'wb').write(txt_rsa('k1024.key') + b'\n')
open('ed1.txt', 'wb').write(b'v=DKIM1; k=ed25519; p=' +
                            base64.b64encode(bytes(ed.verify_key)) + b'\n')

out = {
    'relaxed.eml': sign(mail(), ca),
    'simple.eml': sign(mail(), ca, canon=(b'simple', b'simple')),
    'relaxed-simple.eml': sign(mail(), ca, canon=(b'relaxed', b'simple')),
    'no-autosubmitted-h.eml': sign(mail(), ca, headers=H_NO_AUTOSUBMITTED),
    'other-domain.eml': sign(mail(), ca, domain=b'other.example'),
    'wrong-key.eml': sign(mail(), wrong),
    'ed25519.eml': sign(mail(), ed_priv, sel=b'ed1', alg=b'ed25519-sha256'),
    'length.eml': sign(mail(), ca, length=True),
    'relaxed-1024.eml': sign(mail(), k1024, sel=b'k1024'),
}
# RFC 8463 dual signing: an Ed25519 and an RSA signature on one mail.
out['dual.eml'] = sign(sign(mail(), ca), ed_priv, sel=b'ed1',
                       alg=b'ed25519-sha256')

for name, data in out.items():
    open(name, 'wb').write(data)
    print(name, len(data))
