#!/usr/bin/env python3
"""Write the seed corpora of fuzz_pem and fuzz_engine (tests/fuzz/).

    python3 tests/fuzz/make_seeds.py pem
    python3 tests/fuzz/make_seeds.py engine CERT_KEY_HEX

The seeds are committed; run this again only when a seed has to change.
fuzz_pem's certificates are made for the fixed P-256 key of fuzz_pem.c.
fuzz_engine's certificate must carry the certificate key the engine
generates from the target's fixed entropy: `make fuzz-build` builds
build/fuzz/fuzz_engine_replay, whose --cert-key option prints it, and
whose --expect-done option checks that the full seeds still reach
ACME_SMIME_DONE (tests/run_tests.sh does that):

    python3 tests/fuzz/make_seeds.py engine \\
        $(build/fuzz/fuzz_engine_replay --cert-key)
    build/fuzz/fuzz_engine_replay --expect-done tests/fuzz/corpus/fuzz_engine/full-*

Needs python3-cryptography (Debian bookworm: python3-cryptography).
"""
import base64
import datetime
import hashlib
import json
import os
import struct
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
NOT_BEFORE = datetime.datetime(2026, 1, 1)
NOT_AFTER = datetime.datetime(2036, 1, 1)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def certificate(subject_key, cn, issuer_key=None, issuer_cn=None, ca=False,
                email=None, not_before=NOT_BEFORE, not_after=NOT_AFTER):
    b = (x509.CertificateBuilder()
         .subject_name(name(cn))
         .issuer_name(name(issuer_cn or cn))
         .public_key(subject_key.public_key())
         .serial_number(int.from_bytes(hashlib.sha256(cn.encode()).digest()[:8], "big"))
         .not_valid_before(not_before)
         .not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if email:
        b = b.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]),
                            critical=False)
    return b.sign(issuer_key or subject_key, hashes.SHA256())


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def write(directory, fname, data):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, fname), "wb") as f:
        f.write(data)


def key_from_hex(h, curve=ec.SECP256R1()):
    return ec.derive_private_key(int(h, 16), curve)


# A CA (RSA) and an EC intermediate: fixed keys would need no randomness,
# but the seeds only need their shapes.
def ca_chain():
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    inter_key = ec.generate_private_key(ec.SECP384R1())
    root = certificate(root_key, "Fuzz Root CA", ca=True)
    inter = certificate(inter_key, "Fuzz Intermediate", root_key, "Fuzz Root CA", ca=True)
    return root_key, root, inter_key, inter


def pem_seeds():
    out = os.path.join(HERE, "corpus", "fuzz_pem")
    leaf_key = key_from_hex(hashlib.sha256(b"acme_smime fuzz_pem P-256").hexdigest())
    root_key, root, inter_key, inter = ca_chain()
    leaf = certificate(leaf_key, "dev@example.com", inter_key, "Fuzz Intermediate",
                       email="dev@example.com")
    self_signed = certificate(leaf_key, "dev@example.com", email="dev@example.com")
    other = certificate(ec.generate_private_key(ec.SECP256R1()), "other@example.com",
                        email="other@example.com")
    # flags: bits 0-2 max anchors, 3 DER, 4 P-384 key; then storage / 8.
    write(out, "chain-leaf-first", b"\x07\xff" + pem(leaf) + pem(inter) + pem(root))
    write(out, "self-signed", b"\x01\x40" + pem(self_signed))
    write(out, "self-signed-der", b"\x09\x40" + der(self_signed))
    write(out, "leaf-der-p384-key", b"\x1a\x10" + der(leaf))
    write(out, "other-key", b"\x03\x20" + pem(other) + pem(root))
    write(out, "ca-bundle-small-storage", b"\x02\x08" + pem(root) + pem(inter))
    write(out, "ca-bundle-too-many", b"\x01\xff" + pem(root) + pem(inter) + pem(leaf))
    key_pem = leaf_key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    write(out, "key-then-cert", b"\x03\x80" + key_pem + pem(self_signed))
    write(out, "crlf-comments", b"\x03\x80" + b"# bundle\r\n" +
          pem(self_signed).replace(b"\n", b"\r\n") + b"trailing text\r\n")
    write(out, "unterminated", b"\x03\x80" + pem(self_signed)[:-30])
    # notBefore 1970-01-01, notAfter 2049-12-31 patched to 1969-12-31 (the
    # UTCTime year 69 is 1969): no signature is checked on the way.
    odd = der(certificate(leaf_key, "dev@example.com", not_before=datetime.datetime(1970, 1, 1),
                          not_after=datetime.datetime(2049, 12, 31)))
    i = odd.index(b"491231000000Z")
    odd = odd[:i] + b"69" + odd[i + 2:]
    write(os.path.join(HERE, "regressions", "fuzz_pem"), "not-after-1969-der",
          b"\x09\x40" + odd)


# ---------------------------------------------------------------- engine

ACME = "https://acme.test"
EMAIL = "dev@example.com"
DNS = "device.example.com"
CA_FROM = "ca@ca.test"
TOKEN1 = "LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME"
TOKEN2 = "DGyRejmCefe7v4NfDGDKfA"
HTTP_TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


class Script:
    """A fuzz_engine input: a config header, then the peers' bytes as
    chunks (2-byte big-endian length, then the bytes), one per recv."""

    def __init__(self, cfg0, cfg1=0):
        self.data = bytearray([cfg0, cfg1])
        self.nonce = 0

    def chunk(self, b):
        assert len(b) < 0xFFFF
        self.data += struct.pack(">H", len(b)) + b

    def chunks(self, b, *cuts):
        last = 0
        for c in cuts:
            self.chunk(b[last:c])
            last = c
        self.chunk(b[last:])

    def reboot(self):
        self.data += b"\xff\xff"

    def would_block(self):
        self.chunk(b"")

    def http(self, status, body=b"", headers=(), nonce=True, split=()):
        reason = {200: "OK", 201: "Created", 400: "Bad Request",
                  503: "Service Unavailable"}.get(status, "X")
        h = ["HTTP/1.1 %d %s" % (status, reason), "Server: fuzz"]
        if nonce:
            self.nonce += 1
            h.append("Replay-Nonce: nonce-%04d_AAAAAAAAAAAAAAAA" % self.nonce)
        h += list(headers)
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            if not any(x.lower().startswith("content-type") for x in headers):
                h.append("Content-Type: application/json")
        h.append("Content-Length: %d" % len(body))
        self.chunks(("\r\n".join(h) + "\r\n\r\n").encode() + body, *split)

    # --- ACME ---
    def directory(self, **meta):
        d = {"newNonce": ACME + "/nonce", "newAccount": ACME + "/account",
             "newOrder": ACME + "/order", "revokeCert": ACME + "/revoke"}
        if meta:
            d["meta"] = meta
        self.http(200, d, nonce=False)

    def new_nonce(self):
        self.http(200, b"", headers=["Cache-Control: no-store"])

    def new_account(self, status=201):
        self.http(status, {"status": "valid", "contact": ["mailto:" + EMAIL]},
                  headers=["Location: " + ACME + "/acct/1"])

    def order(self, status, authz, cert=False, code=200, location=False):
        o = {"status": status, "expires": "2026-12-01T00:00:00Z",
             "identifiers": [], "authorizations": [ACME + "/authz/%d" % a for a in authz],
             "finalize": ACME + "/finalize/1"}
        if cert:
            o["certificate"] = ACME + "/cert/1"
        hdr = ["Location: " + ACME + "/order/1"] if location else []
        if status == "processing":
            hdr.append("Retry-After: 1")
        self.http(code, o, headers=hdr)

    def authz_email(self, n, status="pending"):
        self.http(200, {"status": status, "expires": "2026-12-01T00:00:00Z",
                        "identifier": {"type": "email", "value": EMAIL},
                        "challenges": [
                            {"type": "email-reply-00", "url": ACME + "/chall/%d" % n,
                             "status": "pending", "from": CA_FROM, "token": TOKEN2}]})

    def authz_dns(self, n, status="pending", token=HTTP_TOKEN):
        self.http(200, {"status": status, "expires": "2026-12-01T00:00:00Z",
                        "identifier": {"type": "dns", "value": DNS},
                        "challenges": [
                            {"type": "http-01", "url": ACME + "/chall/%d" % n,
                             "status": "pending", "token": token}]})

    def challenge_ok(self, n):
        self.http(200, {"type": "email-reply-00", "url": ACME + "/chall/%d" % n,
                        "status": "processing"},
                  headers=['Link: <%s/authz/%d>;rel="up"' % (ACME, n)])

    def authz_valid(self):
        self.http(200, {"status": "valid", "identifier": {"type": "email", "value": EMAIL},
                        "challenges": []})

    def certificate(self, chain):
        self.http(200, chain, headers=["Content-Type: application/pem-certificate-chain"],
                  split=(100,))

    def problem(self, status, kind, detail="", headers=()):
        self.http(status, {"type": "urn:ietf:params:acme:error:" + kind, "detail": detail},
                  headers=["Content-Type: application/problem+json"] + list(headers))

    # --- mail ---
    def pop3_login(self):
        self.chunk(b"+OK POP3 fuzz ready <1.2@pop.test>\r\n")
        self.chunk(b"+OK\r\nTOP\r\nUSER\r\nUIDL\r\nSASL PLAIN\r\n.\r\n")   # CAPA
        self.chunk(b"+OK send PASS\r\n")
        self.chunk(b"+OK logged in\r\n")

    def pop3_snapshot(self, uids=("old-1",)):
        self.pop3_login()
        listing = b"".join(b"%d %s\r\n" % (i + 1, u.encode()) for i, u in enumerate(uids))
        self.chunk(b"+OK\r\n" + listing + b".\r\n")
        self.chunk(b"+OK bye\r\n")

    def pop3_fetch(self, mail, uids=("old-1", "acme-1")):
        self.pop3_login()
        listing = b"".join(b"%d %s\r\n" % (i + 1, u.encode()) for i, u in enumerate(uids))
        self.chunk(b"+OK\r\n" + listing + b".\r\n")
        self.chunk(b"+OK %d %d\r\n" % (len(uids), len(mail)))          # LIST n
        header = mail.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        self.chunk(b"+OK\r\n" + self.dot_stuff(header) + b".\r\n")    # TOP n 0
        self.chunks(b"+OK %d octets\r\n" % len(mail) + self.dot_stuff(mail) + b"\r\n.\r\n", 40)
        self.chunk(b"+OK bye\r\n")

    @staticmethod
    def dot_stuff(text):
        return b"\r\n".join((b"." + l if l.startswith(b".") else l)
                              for l in text.split(b"\r\n"))

    def pop3_empty(self, uids=("old-1",)):
        self.pop3_login()
        listing = b"".join(b"%d %s\r\n" % (i + 1, u.encode()) for i, u in enumerate(uids))
        self.chunk(b"+OK\r\n" + listing + b".\r\n")
        self.chunk(b"+OK bye\r\n")

    def smtp(self, auth):
        self.chunk(b"220 smtp.test ESMTP fuzz\r\n")
        self.chunk(b"250-smtp.test\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n"
                   b"250 8BITMIME\r\n")
        if auth:
            self.chunk(b"235 2.7.0 Authentication successful\r\n")
        self.chunk(b"250 2.1.0 Ok\r\n")
        self.chunk(b"250 2.1.5 Ok\r\n")
        self.chunk(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        self.chunk(b"250 2.0.0 Ok: queued as 4711\r\n")
        self.chunk(b"221 2.0.0 Bye\r\n")


def challenge_mail(token1=TOKEN1, ar=False):
    return (("Authentication-Results: " + MX_ID + "; dkim=pass header.d=ca.test "
             "header.s=sel; spf=pass smtp.mailfrom=ca.test\r\n" if ar else "") +
            "Auto-Submitted: auto-generated; type=acme\r\n"
            "Date: Mon, 30 Nov 2026 00:53:20 +0000\r\n"
            "Message-ID: <chall-1@ca.test>\r\n"
            "From: " + CA_FROM + "\r\n"
            "To: " + EMAIL + "\r\n"
            "Subject: ACME: " + token1 + "\r\n"
            "Content-Type: text/plain\r\n"
            "MIME-Version: 1.0\r\n"
            "\r\n"
            "This is an automatically generated ACME challenge for " + EMAIL + ".\r\n"
            ".a line that starts with a dot\r\n").encode()


# Config bytes of fuzz_engine.c (keep in sync).
ID_EMAIL, ID_DNS, ID_BOTH, ID_BOTH_DNS_FIRST = 0, 1, 2, 3
SMTP_AUTH = 0x04
FLASH = 0x08
CONCAT_BYTES = 0x10
HOOK_WAIT = 0x20
MAIL_WAIT_SHORT = 0x40
MAIL_STARTTLS = 0x80
# second byte
EAB = 0x01
CONTACT = 0x02
CERT_P384 = 0x04
RETRIES_1 = 0x08
FORCE_RENEW = 0x10
STRICT_AR = 0x20
MAILBOX_HOOK = 0x40
MAIL_DELETE = 0x80
MX_ID = "mx.example.com"


def email_authz_flow(s, n, auth, empty_polls=0, snapshot=("old-1",), ar=False):
    s.authz_email(n)
    for _ in range(empty_polls):
        s.pop3_empty(snapshot)
    s.pop3_fetch(challenge_mail(ar=ar), snapshot + ("acme-1",))
    s.smtp(auth)
    s.challenge_ok(n)
    s.authz_valid()


def dns_authz_flow(s, n):
    s.authz_dns(n)
    s.challenge_ok(n)
    s.http(200, {"status": "pending", "identifier": {"type": "dns", "value": DNS},
                 "challenges": []}, headers=["Retry-After: 2"])
    s.authz_valid()


def finish(s, chain, processing=True):
    if processing:
        s.order("processing", [1])
        s.order("valid", [1], cert=True)
    else:
        s.order("valid", [1], cert=True)
    s.certificate(chain)


def engine_seeds(cert_key_hex):
    out = os.path.join(HERE, "corpus", "fuzz_engine")
    leaf_key = key_from_hex(cert_key_hex)
    root_key, root, inter_key, inter = ca_chain()
    leaf = certificate(leaf_key, EMAIL, inter_key, "Fuzz Intermediate", email=EMAIL)
    chain = pem(leaf) + pem(inter)

    # The complete RFC 8823 enrollment, as a real exchange runs: the
    # mailbox snapshot comes first, before any ACME request.
    s = Script(ID_EMAIL | SMTP_AUTH | FLASH)
    s.pop3_snapshot()
    s.directory(termsOfService=ACME + "/tos")
    s.new_nonce()
    s.new_account()
    s.order("pending", [1], code=201, location=True)
    email_authz_flow(s, 1, auth=True)
    finish(s, chain)
    write(out, "full-email", bytes(s.data))

    # The same without flash and SMTP login, nothing in the first poll.
    s = Script(ID_EMAIL | CONCAT_BYTES)
    s.pop3_snapshot(uids=())
    s.directory()
    s.new_nonce()
    s.new_account(status=200)
    s.order("pending", [1], code=201, location=True)
    email_authz_flow(s, 1, auth=False, empty_polls=1, snapshot=())
    finish(s, chain, processing=False)
    write(out, "full-email-noflash", bytes(s.data))

    # The strict policy: the mail passes on the trusted receiving
    # server's Authentication-Results.
    s = Script(ID_EMAIL | SMTP_AUTH | FLASH, STRICT_AR)
    s.pop3_snapshot()
    s.directory()
    s.new_nonce()
    s.new_account()
    s.order("pending", [1], code=201, location=True)
    email_authz_flow(s, 1, auth=True, ar=True)
    finish(s, chain)
    write(out, "full-email-strict-ar", bytes(s.data))

    # The caller's mailbox hooks instead of POP3 and SMTP: list (snapshot),
    # list and read (the challenge), remove (mail_delete); send takes no
    # input.
    s = Script(ID_EMAIL | FLASH, MAILBOX_HOOK | MAIL_DELETE)
    s.chunk(b"old-1")
    s.directory()
    s.new_nonce()
    s.new_account()
    s.order("pending", [1], code=201, location=True)
    s.authz_email(1)
    s.chunk(b"")                     # the list hook: not yet
    s.chunk(b"old-1\n1764370000.M1P2.dev")
    s.chunk(challenge_mail())
    s.challenge_ok(1)
    s.authz_valid()
    finish(s, chain)
    write(out, "full-email-hooks", bytes(s.data))

    # dns identifier, http-01 through the hook.
    s = Script(ID_DNS | FLASH, CONTACT)
    s.directory()
    s.new_nonce()
    s.new_account()
    s.order("pending", [1], code=201, location=True)
    dns_authz_flow(s, 1)
    finish(s, chain)
    write(out, "full-dns", bytes(s.data))

    # Both identifiers in one order, with a badNonce retry, a 503 with
    # Retry-After and a hook that asks to wait.
    s = Script(ID_BOTH | SMTP_AUTH | FLASH | HOOK_WAIT, CONTACT | EAB)
    s.pop3_snapshot()
    s.directory(externalAccountRequired=True)
    s.new_nonce()
    s.problem(400, "badNonce", "stale nonce")
    s.new_account()
    s.order("pending", [1, 2], code=201, location=True)
    email_authz_flow(s, 1, auth=True)
    s.problem(503, "serverInternal", "busy", headers=["Retry-After: 3"])
    dns_authz_flow(s, 2)
    finish(s, chain)
    write(out, "full-both", bytes(s.data))

    # A power cut after the reply left: the stored order is resumed.
    s = Script(ID_EMAIL | SMTP_AUTH | FLASH)
    s.pop3_snapshot()
    s.directory()
    s.new_nonce()
    s.new_account()
    s.order("pending", [1], code=201, location=True)
    s.authz_email(1)
    s.pop3_fetch(challenge_mail())
    s.smtp(True)
    s.reboot()
    s.directory()
    s.new_nonce()
    s.order("pending", [1])          # the stored order, read again
    s.authz_email(1)                 # reply sent: POST the challenge
    s.challenge_ok(1)
    s.authz_valid()
    finish(s, chain)
    write(out, "full-email-reboot", bytes(s.data))

    # Reproducers of bugs found (tests/fuzz/README.md), kept in
    # regressions/: any run that stores a certificate (the trailer of the
    # stored certificate was read with an uninitialised "bad" flag), and
    # a leaf whose DER has trailing bytes (BearSSL's X.509 decoder was fed
    # after it had stopped: NULL dereference).
    reg = os.path.join(HERE, "regressions", "fuzz_engine")
    write(reg, "stored-cert-trailer-uninit", open(os.path.join(out, "full-dns"), "rb").read())
    s = Script(ID_DNS)
    s.directory()
    s.new_nonce()
    s.new_account()
    s.order("pending", [1], code=201, location=True)
    dns_authz_flow(s, 1)
    bad = der(leaf) + b"\0" * 1000
    finish(s, b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bad) +
           b"-----END CERTIFICATE-----\n" + pem(inter))
    write(reg, "cert-der-trailing-bytes", bytes(s.data))

    # An http-01 token that is no base64url (RFC 8555 section 8.1) went
    # to the challenge hook as it was: a hook that writes
    # <webroot>/.well-known/acme-challenge/<token> writes elsewhere.
    s = Script(ID_DNS)
    s.directory()
    s.new_nonce()
    s.new_account()
    s.order("pending", [1], code=201, location=True)
    s.authz_dns(1, token="../../../../etc/cron.d/x")
    s.challenge_ok(1)
    write(reg, "http01-token-not-base64url", bytes(s.data))

    # A URL from the server with a JSON-escaped CRLF went into the request
    # line as it was: header lines injected into the next request.
    s = Script(ID_DNS)
    s.http(200, {"newNonce": ACME + "/nonce", "newOrder": ACME + "/order",
                 "newAccount": ACME + "/acct\r\nX-Injected: 1\r\nX-Other: 2"},
           nonce=False)
    s.new_nonce()
    s.new_account()
    write(reg, "url-crlf-request-line", bytes(s.data))

    # Short ones that end in errors the engine must handle.
    s = Script(ID_DNS | FLASH)
    s.directory()
    s.new_nonce()
    s.problem(403, "unauthorized", "no")
    write(out, "account-refused", bytes(s.data))

    s = Script(ID_EMAIL | MAIL_WAIT_SHORT)
    s.pop3_snapshot()
    s.directory()
    s.new_nonce()
    s.new_account()
    s.order("pending", [1], code=201, location=True)
    s.authz_email(1)
    s.pop3_empty()
    write(out, "mail-timeout", bytes(s.data))

    s = Script(ID_EMAIL | MAIL_STARTTLS)
    s.chunk(b"+OK ready\r\n")
    s.chunk(b"+OK\r\nSTLS\r\n.\r\n")
    s.chunk(b"+OK begin TLS\r\n")
    s.chunk(b"\x16\x03\x03\x00\x04\x0e\x00\x00\x00")
    write(out, "pop3-stls-garbage", bytes(s.data))


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "pem":
        pem_seeds()
    elif len(sys.argv) == 3 and sys.argv[1] == "engine":
        engine_seeds(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
