#!/usr/bin/python3
"""acme_ca.py - the project's RFC 8823 (ACME for S/MIME) test CA.

A strict RFC 8555 server over HTTPS on 127.0.0.1 that validates `email`
identifiers with `email-reply-00` challenges (RFC 8823) through real mail
servers: the challenge mail goes out by SMTP to the device's mailbox, the
response is read by POP3 from the CA's own mailbox. Certificates are S/MIME
end-entity certificates under a test root and intermediate.

Run with Debian's /usr/bin/python3 (needs python3-cryptography; python3-dkim
and python3-nacl for DKIM). Normally started by tests/testenv.

  acme_ca.py --dir DIR [--port N] [--host 127.0.0.1]

Files: DIR/ca.log (log), DIR/ca-events.jsonl (one JSON object per event),
DIR/ca/ (keys, certificates, DKIM key, S/MIME signing root, `ready`). Existing PKI files in DIR/ca
are reused, so a restarted CA keeps its roots (unless CA_PKI_ALG / CA_TLS_ALG
asks for another key type).

Settings and fault knobs are environment variables, listed by --help.
"""
import argparse
import base64
import collections
import datetime
import email
import email.header
import email.policy
import email.utils
import hashlib
import http.server
import importlib
import ipaddress
import json
import logging
import os
import poplib
import random
import re
import secrets
import signal
import smtplib
import socket
import ssl
import threading
import time
import traceback
import urllib.parse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils as asym_utils
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

ERR = 'urn:ietf:params:acme:error:'

# ---------------------------------------------------------------------------
# Settings (environment variables). (name, default, help)
# ---------------------------------------------------------------------------
KNOBS = [
    # where things are
    ('CA_HOST', '127.0.0.1', 'address to listen on (also the host in every URL)'),
    ('CA_TLS_NAMES', '', 'comma list of extra names for the HTTPS certificate (made at the first start): '
                         'each a dNSName, an IP literal also an iPAddress (e.g. 10.99.0.1,ca.test)'),
    ('CA_PORT', '14000', 'HTTPS port'),
    ('CA_ADDR', 'ca@acme.test', "the CA's mailbox: `from` of the challenges, From: of the challenge mails"),
    ('CA_FROM_TAG', '0', '1 = per-challenge `from` ca+<challenge id>@domain (RFC 8823 example style)'),
    ('CA_MAIL_FROM_NAME', 'ACME test CA', 'display name in the challenge From: ("" = bare addr-spec)'),
    ('CA_SMTP', '127.0.0.1:10025', 'host:port of the SMTP server (MX role, no AUTH) the challenge mails go to'),
    ('CA_POP3', '127.0.0.1:11110', "host:port of the POP3 server holding the CA's mailbox"),
    ('CA_POP3_MODE', 'stls', 'stls | pop3s | plain'),
    ('CA_POP3_SOURCE', '127.0.0.3', "source address of the CA's POP3 connections ('' = any), so that Dovecot's "
                                    "login delay after a device's failed login (per client IP) never slows the CA"),
    ('CA_MAIL_USER', '', "POP3 login of the CA's mailbox (default CA_ADDR)"),
    ('CA_MAIL_PASS_FILE', '', "file holding the POP3 password of the CA's mailbox"),
    ('CA_MAIL_CA_FILE', '', 'trust anchor of the mail servers (for STLS/STARTTLS)'),
    ('CA_EMAIL_DOMAINS', '', 'comma list: only identifiers in these domains are accepted (empty = any)'),
    # protocol settings
    ('CA_CONCAT', 'string', 'token joining: string (part1 || part2 as text) | bytes (decode, join, re-encode)'),
    ('CA_TOKEN1_PAD', '0', "1 = token-part1 in the Subject carries base64 '=' padding"),
    ('CA_MAIL_AT', 'authz', 'when the challenge mail is sent: authz (first authorization fetch, RFC 8823) | order (at newOrder)'),
    ('CA_MAIL_DELAY', '0', 'seconds to wait before sending the challenge mail'),
    ('CA_SUBJECT', 'plain', 'challenge Subject form: plain | folded | q | b | q-lang (RFC 2047 Q/B words; q-lang = RFC 2231 language tag)'),
    ('CA_DKIM', '1', '1 = DKIM-sign the challenge mails (key and TXT record in DIR/ca/dkim/)'),
    ('CA_DKIM_ALG', 'rsa', 'rsa (rsa-sha256, CA_DKIM_BITS) | ed25519 (ed25519-sha256)'),
    ('CA_DKIM_BITS', '1024', 'RSA DKIM key size, 1024..4096 (RFC 8301: at least 1024). 1024 makes a 234-byte TXT '
                             'record, one character-string, that pebble-challtestsrv serves (tests/testenv); 2048 '
                             'makes a 410-byte record, over the 255 bytes of one string, that testenv serves with '
                             'tests/tools/fake_dns.py as several strings'),
    ('CA_DKIM_SELECTOR', 'acme', 'DKIM selector (d= is the domain of CA_ADDR)'),
    ('CA_SMIME_SIGN', '0', 'S/MIME-sign the challenge mails (RFC 8823 section 3.1, RFC 8551): 1 or detached = '
                           'multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256 (detached '
                           'CMS SignedData); opaque = application/pkcs7-mime; smime-type=signed-data; 0 = no. The '
                           'signed entity is a message/rfc822 copy of the whole mail (every header field and the '
                           'text body: header protection). Signer: a certificate for the From address (rfc822Name, '
                           'EKU emailProtection, KU digitalSignature, key type CA_PKI_ALG) under the S/MIME root '
                           'DIR/ca/smime-root.pem (not the issuing root). With CA_DKIM=1 the DKIM signature covers '
                           'the final S/MIME mail'),
    ('CA_SMIME_CHAIN', 'direct', 'direct = the S/MIME signer certificate is issued by smime-root; intermediate = by '
                                 'a signing CA under it (DIR/ca/smime-intermediate.pem), sent in the CMS'),
    ('CA_MAIL_OMIT', '', 'comma list of challenge-mail parts to leave out, mimicking lax CAs: '
                         'auto-submitted, message-id, date, dkim'),
    ('CA_VALIDATE_WINDOW', '10', 'seconds the CA keeps looking for the response mail after the challenge POST'),
    ('CA_POP_INTERVAL', '1', "seconds between background polls of the CA's mailbox (responses are counted even without a POST)"),
    ('CA_KEEP_MAIL', '0', "1 = leave processed mails in the CA's mailbox (default: DELE)"),
    ('CA_REQUIRE_IN_REPLY_TO', '0', '1 = the response must carry In-Reply-To: <challenge Message-ID>'),
    ('CA_STRICT_FROM', '0', '1 = refuse a response whose From: is a bare addr-spec (no angle brackets)'),
    ('CA_ALLOW_DNS', '0', '1 = accept `dns` identifiers (authorized without a challenge); default unsupportedIdentifier'),
    ('CA_TOS', '1', '1 = directory has meta.termsOfService and newAccount requires termsOfServiceAgreed'),
    ('CA_REQUIRE_UA', '0', '1 = refuse requests without User-Agent (default: warning event only)'),
    ('CA_ALGS', 'ES256,ES384,ES512,RS256,EdDSA', 'JWS algorithms accepted'),
    ('CA_ORDER_TTL', '3600', 'seconds until a pending order / authorization expires'),
    ('CA_CERT_LIFETIME', '7776000', 'issued certificate lifetime in seconds (notAfter = issuance + this)'),
    ('CA_CERT_BACKDATE', '60', 'notBefore = issuance - this many seconds'),
    ('CA_PKI_ALG', 'ec', 'key type of the test root and intermediate: ec (P-256) | rsa (2048)'),
    ('CA_TLS_ALG', 'ec', "key type of the HTTPS server certificate and its root: ec | rsa"),
    ('CA_TLS_MAX', '', "highest TLS version the HTTPS server speaks: '' (default) | 1.2"),
    # fault knobs
    ('CA_NONCE_REJECT', '0', 'percent of valid nonces rejected with badNonce'),
    ('CA_FAULT_429', '', 'ENDPOINT[:N][,...]: the first N (1) requests to ENDPOINT get 429 rateLimited + Retry-After'),
    ('CA_FAULT_500', '', 'ENDPOINT[:N][,...]: the first N (1) requests to ENDPOINT get 500 serverInternal'),
    ('CA_FAULT_DROP', '', 'ENDPOINT[:N][,...]: the first N (1) responses of ENDPOINT are cut mid-body and the connection '
                          'closed (the request HAS been processed)'),
    ('CA_FAULT_RETRY_AFTER', '1', 'Retry-After (seconds) sent with 429'),
    ('CA_PROCESSING_POLLS', '0', 'after finalize the order stays `processing` (with Retry-After) for N order fetches'),
    ('CA_RETRY_AFTER', '1', 'Retry-After (seconds) on `processing` orders, authorizations and challenges'),
    ('CA_DECOY', '', 'comma list of decoy challenge mails sent just before the real one: sender (From a wrong '
                     'address, CA_DECOY_FROM), reply (Subject "Re: ACME: ..."), unsigned (no DKIM, no S/MIME), '
                     'baddkim (body changed after signing: breaks DKIM, and S/MIME when signed), noauto (no '
                     'Auto-Submitted), wrongto (To: another address); S/MIME-signed (the CA_SMIME_SIGN form, '
                     'detached when 0) and never DKIM-signed: badsmime (signed content changed after signing), '
                     'smimesigner (signer certificate for CA_DECOY_FROM), smimeheaders (the protected Subject '
                     'differs from the outer one); 1 = sender'),
    ('CA_DECOY_FROM', 'ca@evil.test', 'From: address of the `sender` decoy'),
    ('CA_STALE', '0', "1 = just before the real challenge mail, send a stale one: a verbatim re-delivery of this "
                      "identifier's previous challenge mail (same Message-ID, Date, token-part1), or, if there is "
                      "none, one for a made-up older order dated one hour earlier"),
]
ENDPOINTS = ['directory', 'new-nonce', 'new-account', 'new-order', 'revoke-cert', 'key-change', 'acct',
             'orders', 'order', 'finalize', 'authz', 'chall', 'cert']

DKIM_HEADERS = ['from', 'sender', 'reply-to', 'to', 'cc', 'subject', 'date', 'in-reply-to', 'references',
                'message-id', 'auto-submitted', 'content-type', 'content-transfer-encoding', 'mime-version',
                'resent-date', 'resent-from', 'resent-to', 'resent-cc', 'list-id', 'list-help',
                'list-unsubscribe', 'list-subscribe', 'list-post', 'list-owner', 'list-archive',
                'list-unsubscribe-post']


class Config:
    def __init__(self, env):
        self.raw = {}
        for name, default, _ in KNOBS:
            self.raw[name] = env.get(name, default)
            setattr(self, name.lower()[3:], self.raw[name])
        self.port = int(self.port)
        self.concat = self.concat.strip().lower()
        if self.concat not in ('string', 'bytes'):
            raise SystemExit('CA_CONCAT must be string or bytes')
        self.mail_at = self.mail_at.strip().lower()
        if self.mail_at not in ('authz', 'order'):
            raise SystemExit('CA_MAIL_AT must be authz or order')
        if self.subject not in ('plain', 'folded', 'q', 'b', 'q-lang'):
            raise SystemExit('CA_SUBJECT must be plain, folded, q, b or q-lang')
        self.mail_user = self.mail_user or self.addr
        if self.pop3_mode not in ('stls', 'pop3s', 'plain'):
            raise SystemExit('CA_POP3_MODE must be stls, pop3s or plain')
        if self.dkim_alg not in ('rsa', 'ed25519'):
            raise SystemExit('CA_DKIM_ALG must be rsa or ed25519')
        try:
            self.dkim_bits = int(self.dkim_bits)
        except ValueError:
            self.dkim_bits = 0
        if not 1024 <= self.dkim_bits <= 4096:
            raise SystemExit('CA_DKIM_BITS must be a number from 1024 to 4096')
        sm = self.smime_sign.strip().lower()
        if sm in ('', '0', 'no', 'false'):
            self.smime_sign = None
        elif sm in ('1', 'yes', 'true', 'detached', 'multipart'):
            self.smime_sign = 'detached'
        elif sm == 'opaque':
            self.smime_sign = 'opaque'
        else:
            raise SystemExit('CA_SMIME_SIGN must be 0, 1 (detached) or opaque')
        self.smime_chain = self.smime_chain.strip().lower()
        if self.smime_chain not in ('direct', 'intermediate'):
            raise SystemExit('CA_SMIME_CHAIN must be direct or intermediate')
        if not ADDR_RE.match(self.addr):
            raise SystemExit('CA_ADDR is not an address')
        self.flags = {}
        for k in ('from_tag', 'token1_pad', 'dkim', 'keep_mail', 'require_in_reply_to', 'strict_from',
                  'allow_dns', 'tos', 'require_ua', 'stale'):
            setattr(self, k, getattr(self, k).strip() not in ('', '0', 'no', 'false'))
        for k in ('mail_delay', 'validate_window', 'pop_interval', 'nonce_reject', 'fault_retry_after',
                  'retry_after'):
            setattr(self, k, float(getattr(self, k)))
        for k in ('order_ttl', 'cert_lifetime', 'cert_backdate', 'processing_polls'):
            setattr(self, k, int(getattr(self, k)))
        self.algs = [a.strip() for a in self.algs.split(',') if a.strip()]
        self.mail_omit = {x.strip().lower() for x in self.mail_omit.split(',') if x.strip()}
        dec = [x.strip().lower() for x in self.decoy.split(',') if x.strip() and x.strip() != '0']
        self.decoys = ['sender' if d == '1' else d for d in dec]
        for d in self.decoys:
            if d not in ('sender', 'reply', 'unsigned', 'baddkim', 'noauto', 'wrongto', 'badsmime',
                         'smimesigner', 'smimeheaders'):
                raise SystemExit('CA_DECOY: unknown kind %r' % d)
        self.domains = {d.strip().lower() for d in self.email_domains.split(',') if d.strip()}
        self.faults = {}
        for kind in ('429', '500', 'drop'):
            spec = getattr(self, 'fault_' + kind)
            counts = {}
            for item in spec.split(','):
                item = item.strip()
                if not item:
                    continue
                ep, _, n = item.partition(':')
                if ep not in ENDPOINTS:
                    raise SystemExit('CA_FAULT_%s: unknown endpoint %r (one of %s)' % (kind.upper(), ep,
                                                                                       ', '.join(ENDPOINTS)))
                counts[ep] = int(n) if n else 1
            self.faults[kind] = counts

    def public(self):
        return dict(self.raw)


def knob_help():
    lines = ['environment variables (settings and fault knobs):']
    for name, default, text in KNOBS:
        lines.append('  %-22s %s (default %r)' % (name, text, default))
    lines.append('')
    lines.append('ENDPOINT names for the CA_FAULT_* knobs: ' + ', '.join(ENDPOINTS))
    return '\n'.join(lines)


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------
B64U_RE = re.compile(r'^[A-Za-z0-9_-]*$')


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def b64u_decode(text, what='value'):
    """Strict base64url (RFC 7515 section 2): no padding, URL alphabet only."""
    if not isinstance(text, str) or not B64U_RE.match(text) or len(text) % 4 == 1:
        raise Problem('malformed', '%s is not unpadded base64url' % what)
    raw = base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))
    if b64u(raw) != text:
        raise Problem('malformed', '%s is not canonical base64url' % what)
    return raw


def b64u_decode_lenient(text):
    text = re.sub(r'\s+', '', text).rstrip('=')
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


def strict_json(raw, what):
    def no_dups(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise ValueError('duplicate member %r' % k)
            d[k] = v
        return d
    try:
        text = raw.decode('utf-8') if isinstance(raw, bytes) else raw
        return json.loads(text, object_pairs_hook=no_dups)
    except (ValueError, UnicodeDecodeError) as e:
        raise Problem('malformed', '%s is not valid JSON: %s' % (what, e))


def rfc3339(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def new_id(n=9):
    return secrets.token_urlsafe(n)


def split_addr(addr):
    local, _, dom = addr.rpartition('@')
    return local, dom.lower()


def same_addr(a, b):
    return split_addr(a) == split_addr(b) and '@' in a and '@' in b


ADDR_RE = re.compile(r'^[A-Za-z0-9.!#$%&\'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?'
                     r'(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$')


class Problem(Exception):
    STATUS = {'malformed': 400, 'badNonce': 400, 'unauthorized': 403, 'accountDoesNotExist': 400,
              'badSignatureAlgorithm': 400, 'badPublicKey': 400, 'rateLimited': 429,
              'serverInternal': 500, 'orderNotReady': 403, 'badCSR': 400, 'unsupportedIdentifier': 400,
              'rejectedIdentifier': 400, 'invalidContact': 400, 'unsupportedContact': 400,
              'alreadyRevoked': 400, 'badRevocationReason': 400, 'userActionRequired': 403,
              'incorrectResponse': 403, 'externalAccountRequired': 400}

    def __init__(self, kind, detail, status=None, headers=None, extra=None):
        super().__init__(detail)
        self.kind, self.detail = kind, detail
        self.status = status or self.STATUS.get(kind, 400)
        self.headers = headers or []
        self.extra = extra or {}

    def doc(self):
        d = {'type': ERR + self.kind, 'detail': self.detail, 'status': self.status}
        d.update(self.extra)
        return d


# ---------------------------------------------------------------------------
# events and log
# ---------------------------------------------------------------------------
class Events:
    def __init__(self, path):
        self.path, self.lock = path, threading.Lock()

    def emit(self, event, **fields):
        rec = {'ts': round(time.time(), 3), 'event': event}
        rec.update({k: v for k, v in fields.items() if v is not None})
        line = json.dumps(rec, sort_keys=False)
        with self.lock:
            with open(self.path, 'a') as f:
                f.write(line + '\n')
        log.info('event %s', line)


log = logging.getLogger('acme_ca')


# ---------------------------------------------------------------------------
# keys: JWK parsing, thumbprints, signature verification
# ---------------------------------------------------------------------------
EC_CURVES = {'P-256': (ec.SECP256R1, 32, 'ES256', hashes.SHA256),
             'P-384': (ec.SECP384R1, 48, 'ES384', hashes.SHA384),
             'P-521': (ec.SECP521R1, 66, 'ES512', hashes.SHA512)}
RSA_ALGS = {'RS256': hashes.SHA256, 'RS384': hashes.SHA384, 'RS512': hashes.SHA512}


class PubKey:
    """A parsed public JWK: .kty, .crv, .key (cryptography object), .jwk (public members), .thumb."""

    def __init__(self, jwk):
        if not isinstance(jwk, dict):
            raise Problem('malformed', 'jwk is not a JSON object')
        kty = jwk.get('kty')
        self.kty, self.crv = kty, jwk.get('crv')
        if not isinstance(kty, str) or not isinstance(self.crv, (str, type(None))):
            raise Problem('badPublicKey', 'jwk kty/crv must be strings')
        for priv in ('d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'):
            if priv in jwk:
                raise Problem('badPublicKey', 'jwk carries private key member %r' % priv)
        try:
            if kty == 'EC':
                if self.crv not in EC_CURVES:
                    raise Problem('badPublicKey', 'unsupported EC curve %r' % self.crv)
                curve, size, _, _ = EC_CURVES[self.crv]
                x = b64u_decode(jwk.get('x'), 'jwk x')
                y = b64u_decode(jwk.get('y'), 'jwk y')
                if len(x) != size or len(y) != size:
                    raise Problem('badPublicKey', 'EC coordinates must be %d octets (got %d, %d)' %
                                  (size, len(x), len(y)))
                try:
                    self.key = ec.EllipticCurvePublicKey.from_encoded_point(curve(), b'\x04' + x + y)
                except ValueError:
                    raise Problem('badPublicKey', 'EC point is not on the curve')
                self.jwk = {'crv': self.crv, 'kty': 'EC', 'x': jwk['x'], 'y': jwk['y']}
            elif kty == 'RSA':
                n = b64u_decode(jwk.get('n'), 'jwk n')
                e = b64u_decode(jwk.get('e'), 'jwk e')
                if not n or not e or n[0] == 0 or e[0] == 0:
                    raise Problem('badPublicKey', 'RSA n/e must use the minimum number of octets')
                ni, ei = int.from_bytes(n, 'big'), int.from_bytes(e, 'big')
                if ni.bit_length() < 2048 or ni.bit_length() > 8192:
                    raise Problem('badPublicKey', 'RSA key must be 2048..8192 bits (got %d)' % ni.bit_length())
                if ei < 3 or ei % 2 == 0:
                    raise Problem('badPublicKey', 'bad RSA exponent')
                self.key = rsa.RSAPublicNumbers(ei, ni).public_key()
                self.jwk = {'e': jwk['e'], 'kty': 'RSA', 'n': jwk['n']}
            elif kty == 'OKP':
                if self.crv != 'Ed25519':
                    raise Problem('badPublicKey', 'unsupported OKP curve %r' % self.crv)
                x = b64u_decode(jwk.get('x'), 'jwk x')
                if len(x) != 32:
                    raise Problem('badPublicKey', 'Ed25519 x must be 32 octets')
                self.key = ed25519.Ed25519PublicKey.from_public_bytes(x)
                self.jwk = {'crv': 'Ed25519', 'kty': 'OKP', 'x': jwk['x']}
            else:
                raise Problem('badPublicKey', 'unsupported key type %r' % kty)
        except Problem as p:
            if p.kind == 'malformed':
                raise Problem('badPublicKey', p.detail)
            raise
        canon = json.dumps(self.jwk, sort_keys=True, separators=(',', ':'))
        self.thumb = b64u(hashlib.sha256(canon.encode()).digest())
        self.spki = self.key.public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)

    def check_alg(self, alg):
        ok = ((self.kty == 'EC' and EC_CURVES[self.crv][2] == alg) or
              (self.kty == 'RSA' and alg in RSA_ALGS) or
              (self.kty == 'OKP' and alg == 'EdDSA'))
        if not ok:
            raise Problem('badSignatureAlgorithm', 'alg %s does not fit a %s%s key' %
                          (alg, self.kty, ' ' + self.crv if self.crv else ''))

    def verify(self, alg, sig, data):
        try:
            if self.kty == 'EC':
                _, size, _, h = EC_CURVES[self.crv]
                if len(sig) != 2 * size:
                    return False
                r = int.from_bytes(sig[:size], 'big')
                s = int.from_bytes(sig[size:], 'big')
                self.key.verify(asym_utils.encode_dss_signature(r, s), data, ec.ECDSA(h()))
            elif self.kty == 'RSA':
                self.key.verify(sig, data, padding.PKCS1v15(), RSA_ALGS[alg]())
            else:
                self.key.verify(sig, data)
            return True
        except (InvalidSignature, ValueError):
            return False


# ---------------------------------------------------------------------------
# PKI: HTTPS root + server certificate, S/MIME root + intermediate, DKIM key
# ---------------------------------------------------------------------------
def gen_key(kind):
    if kind == 'rsa':
        return rsa.generate_private_key(65537, 2048)
    return ec.generate_private_key(ec.SECP256R1())


def write_pem(path, data, mode=0o644):
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'acme_smime tests'),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def ca_cert(subject_key, subject, issuer_cert, issuer_key, days, pathlen, eku=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject)
         .issuer_name(issuer_cert.subject if issuer_cert else subject)
         .public_key(subject_key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                      crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False))
    if issuer_cert:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class PKI:
    def __init__(self, cfg, d):
        self.cfg, self.d = cfg, d
        os.makedirs(d, exist_ok=True)
        os.makedirs(os.path.join(d, 'dkim'), exist_ok=True)

    def p(self, *names):
        return os.path.join(self.d, *names)

    def load_or_make(self, cert_file, key_file, make, kind, force=False):
        """Reuse DIR/ca files when present and of the wanted key type; else make new ones.
        Returns (cert, key, made)."""
        if not force and os.path.exists(self.p(cert_file)) and os.path.exists(self.p(key_file)):
            cert = x509.load_pem_x509_certificate(open(self.p(cert_file), 'rb').read())
            key = serialization.load_pem_private_key(open(self.p(key_file), 'rb').read(), None)
            if isinstance(key, rsa.RSAPrivateKey) == (kind == 'rsa'):
                return cert, key, False
        cert, key = make()
        write_pem(self.p(key_file), key_pem(key), 0o600)
        write_pem(self.p(cert_file), cert_pem(cert))
        return cert, key, True

    def setup(self):
        cfg = self.cfg

        def https_root():
            k = gen_key(cfg.tls_alg)
            return ca_cert(k, name('ACME test CA HTTPS root'), None, k, 3650, None), k
        self.https_root, self.https_root_key, made = self.load_or_make('https-root.pem', 'https-root.key',
                                                                       https_root, cfg.tls_alg)

        def https_leaf():
            k = gen_key(cfg.tls_alg)
            now = datetime.datetime.now(datetime.timezone.utc)
            # DNS:127.0.0.1 as well: BearSSL matches the server name against dNSName entries only
            sans = [x509.DNSName('localhost'), x509.DNSName('127.0.0.1'),
                    x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]
            try:
                ip = ipaddress.ip_address(cfg.host)
                if ip != ipaddress.ip_address('127.0.0.1'):
                    sans.append(x509.IPAddress(ip))
            except ValueError:
                if cfg.host != 'localhost':
                    sans.append(x509.DNSName(cfg.host))
            for extra in (n.strip() for n in cfg.tls_names.split(',')):
                if not extra or x509.DNSName(extra) in sans:
                    continue
                sans.append(x509.DNSName(extra))
                try:
                    ip = x509.IPAddress(ipaddress.ip_address(extra))
                    if ip not in sans:
                        sans.append(ip)
                except ValueError:
                    pass
            c = (x509.CertificateBuilder().subject_name(name('localhost'))
                 .issuer_name(self.https_root.subject).public_key(k.public_key())
                 .serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(hours=1))
                 .not_valid_after(now + datetime.timedelta(days=397))
                 .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                 .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                              key_encipherment=cfg.tls_alg == 'rsa', data_encipherment=False,
                                              key_agreement=False, key_cert_sign=False, crl_sign=False,
                                              encipher_only=False, decipher_only=False), critical=True)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                 .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                     self.https_root_key.public_key()), critical=False)
                 .sign(self.https_root_key, hashes.SHA256()))
            return c, k
        self.https_cert, self.https_key, _ = self.load_or_make('https-cert.pem', 'https-cert.key', https_leaf,
                                                               cfg.tls_alg, made)

        def root():
            k = gen_key(cfg.pki_alg)
            return ca_cert(k, name('ACME test S/MIME root'), None, k, 3650, None), k
        self.root, self.root_key, made = self.load_or_make('root.pem', 'root.key', root, cfg.pki_alg)

        def inter():
            k = gen_key(cfg.pki_alg)
            return ca_cert(k, name('ACME test S/MIME issuing CA'), self.root, self.root_key, 1825, 0,
                           [ExtendedKeyUsageOID.EMAIL_PROTECTION]), k
        self.inter, self.inter_key, _ = self.load_or_make('intermediate.pem', 'intermediate.key', inter,
                                                          cfg.pki_alg, made)
        write_pem(self.p('chain.pem'), cert_pem(self.inter) + cert_pem(self.root))
        self.setup_dkim()
        self.setup_smime()

    # -- S/MIME signing of the challenge mails (CA_SMIME_SIGN) ---------------
    def setup_smime(self):
        """The S/MIME root of the CA's own signing certificates (DIR/ca/smime-root.pem, separate from
        the root of the issued certificates), the signing intermediate (CA_SMIME_CHAIN=intermediate) and
        the signer for CA_ADDR (DIR/ca/smime-signer.pem, for reference). Made at every start, used only
        when the CA S/MIME-signs."""
        cfg = self.cfg

        def sroot():
            k = gen_key(cfg.pki_alg)
            return ca_cert(k, name('ACME test CA challenge-mail S/MIME root'), None, k, 3650, None), k
        self.smime_root, self.smime_root_key, made = self.load_or_make('smime-root.pem', 'smime-root.key', sroot,
                                                                       cfg.pki_alg)

        def sinter():
            k = gen_key(cfg.pki_alg)
            return ca_cert(k, name('ACME test CA challenge-mail signing CA'), self.smime_root,
                           self.smime_root_key, 1825, 0, [ExtendedKeyUsageOID.EMAIL_PROTECTION]), k
        self.smime_inter, self.smime_inter_key, _ = self.load_or_make('smime-intermediate.pem',
                                                                      'smime-intermediate.key', sinter,
                                                                      cfg.pki_alg, made)
        self.smime_signers = {}
        self.smime_lock = threading.Lock()
        cert, key, _ = self.smime_signer(cfg.addr)
        write_pem(self.p('smime-signer.key'), key_pem(key), 0o600)
        write_pem(self.p('smime-signer.pem'), cert_pem(cert))

    def smime_signer(self, addr):
        """(certificate, key, [intermediate certificates]) signing mails From addr: an end-entity
        certificate with the rfc822Name addr, made on first use (CA_FROM_TAG gives each challenge its own
        From address)."""
        with self.smime_lock:
            hit = self.smime_signers.get((addr.lower(), self.cfg.smime_chain))
            if hit:
                return hit
            if self.cfg.smime_chain == 'intermediate':
                icert, ikey, extra = self.smime_inter, self.smime_inter_key, [self.smime_inter]
            else:
                icert, ikey, extra = self.smime_root, self.smime_root_key, []
            k = gen_key(self.cfg.pki_alg)
            now = datetime.datetime.now(datetime.timezone.utc)
            c = (x509.CertificateBuilder()
                 .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'acme_smime tests'),
                                          x509.NameAttribute(NameOID.COMMON_NAME, addr)]))
                 .issuer_name(icert.subject).public_key(k.public_key())
                 .serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(hours=1))
                 .not_valid_after(now + datetime.timedelta(days=90))
                 .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                 .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                              key_encipherment=False, data_encipherment=False, key_agreement=False,
                                              key_cert_sign=False, crl_sign=False, encipher_only=False,
                                              decipher_only=False), critical=True)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
                 .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(addr)]), critical=False)
                 .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), critical=False)
                 .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ikey.public_key()),
                                critical=False)
                 .sign(ikey, hashes.SHA256()))
            hit = (c, k, extra)
            self.smime_signers[(addr.lower(), self.cfg.smime_chain)] = hit
            return hit

    def setup_dkim(self):
        cfg = self.cfg
        self.dkim_domain = split_addr(cfg.addr)[1]
        self.dkim_selector = cfg.dkim_selector
        # one key file per algorithm and size: a restart with the same knobs keeps its key
        kfile = self.p('dkim', 'private-%s.pem' % (cfg.dkim_alg if cfg.dkim_alg == 'ed25519' else
                                                   'rsa%d' % cfg.dkim_bits))
        if cfg.dkim_alg == 'ed25519':
            if os.path.exists(kfile):
                k = serialization.load_pem_private_key(open(kfile, 'rb').read(), None)
            else:
                k = ed25519.Ed25519PrivateKey.generate()
                write_pem(kfile, key_pem(k), 0o600)
            seed = k.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                   serialization.NoEncryption())
            self.dkim_key = base64.b64encode(seed)
            pub = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            txt = 'v=DKIM1; k=ed25519; p=' + base64.b64encode(pub).decode()
            self.dkim_algo = b'ed25519-sha256'
        else:
            if os.path.exists(kfile):
                k = serialization.load_pem_private_key(open(kfile, 'rb').read(), None)
            else:
                k = rsa.generate_private_key(65537, cfg.dkim_bits)
                write_pem(kfile, key_pem(k), 0o600)
            self.dkim_key = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.NoEncryption())
            spki = k.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
            txt = 'v=DKIM1; k=rsa; p=' + base64.b64encode(spki).decode()
            self.dkim_algo = b'rsa-sha256'
        pub_pem = k.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        self.dkim_txt = txt
        self.dkim_name = '%s._domainkey.%s' % (self.dkim_selector, self.dkim_domain)
        write_pem(self.p('dkim', 'public.pem'), pub_pem)
        write_pem(self.p('dkim', 'txt'), txt.encode())
        write_pem(self.p('dkim', 'zone'), ('%s. 300 IN TXT "%s"\n' % (self.dkim_name, txt)).encode())
        write_pem(self.p('dkim', 'record'), ('%s\n' % self.dkim_name).encode())

    def issue(self, csr, sans, ku, subject, lifetime, backdate):
        now = datetime.datetime.now(datetime.timezone.utc)
        pub = csr.public_key()
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.inter.subject)
             .public_key(pub).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(seconds=backdate))
             .not_valid_after(now + datetime.timedelta(seconds=lifetime))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(ku, critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
             .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(a) for a in sans]),
                            critical=len(subject) == 0)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.inter_key.public_key()),
                            critical=False)
             .add_extension(x509.CertificatePolicies([x509.PolicyInformation(
                 ObjectIdentifier('2.23.140.1.5.1.3'), None)]), critical=False))
        return b.sign(self.inter_key, hashes.SHA256())


# ---------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------
class Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class Faults:
    def __init__(self, cfg):
        self.left = {k: dict(v) for k, v in cfg.faults.items()}
        self.lock = threading.Lock()

    def take(self, kind, endpoint):
        with self.lock:
            n = self.left.get(kind, {}).get(endpoint, 0)
            if n > 0:
                self.left[kind][endpoint] = n - 1
                return True
            return False


class Nonces:
    def __init__(self, limit=100000):
        self.valid = collections.OrderedDict()
        self.lock = threading.Lock()
        self.limit = limit

    def new(self):
        n = b64u(secrets.token_bytes(16))
        with self.lock:
            self.valid[n] = True
            while len(self.valid) > self.limit:
                self.valid.popitem(last=False)
        return n

    def use(self, n):
        with self.lock:
            return self.valid.pop(n, None) is not None


# ---------------------------------------------------------------------------
# the CA
# ---------------------------------------------------------------------------
class CA:
    def __init__(self, cfg, d):
        self.cfg, self.dir = cfg, d
        self.base = 'https://%s:%d' % (cfg.host if ':' not in cfg.host else '[%s]' % cfg.host, cfg.port)
        self.lock = threading.RLock()
        self.nonces = Nonces()
        self.faults = Faults(cfg)
        self.events = Events(os.path.join(d, 'ca-events.jsonl'))
        self.pki = PKI(cfg, os.path.join(d, 'ca'))
        self.accounts, self.orders, self.authzs, self.challs, self.certs = {}, {}, {}, {}, {}
        self.by_thumb = {}
        self.token1_index = {}       # token-part1 (unpadded) -> ('chall', id) | ('decoy', kind, to)
        self.last_mail = {}          # identifier (lower) -> bytes of its latest challenge mail
        self.poll_lock = threading.Lock()
        self.seen_uidls = set()
        self.stop_event = threading.Event()
        self.mail_pw = None

    # -- URLs --------------------------------------------------------------
    def url(self, *parts):
        return self.base + '/' + '/'.join(parts)

    def directory(self):
        d = {'newNonce': self.url('new-nonce'), 'newAccount': self.url('new-account'),
             'newOrder': self.url('new-order'), 'revokeCert': self.url('revoke-cert'),
             'keyChange': self.url('key-change'),
             'meta': {'website': 'https://github.com/acme_smime (test CA)',
                      'externalAccountRequired': False}}
        if self.cfg.tos:
            d['meta']['termsOfService'] = self.url('terms')
        return d

    # -- object views ------------------------------------------------------
    def account_json(self, a):
        return {'status': a.status, 'contact': a.contact, 'termsOfServiceAgreed': a.tos,
                'orders': self.url('acct', a.id, 'orders'), 'key': a.key.jwk,
                'createdAt': rfc3339(a.created)}

    def chall_json(self, c):
        j = {'type': c.type, 'url': self.url('chall', c.id), 'status': c.status, 'token': c.token2}
        if c.type == 'email-reply-00':
            j['from'] = c.from_addr
        if c.validated:
            j['validated'] = rfc3339(c.validated)
        if c.error:
            j['error'] = c.error
        return j

    def authz_status(self, z):
        if z.status == 'pending' and time.time() > z.expires:
            z.status = 'expired'
        return z.status

    def authz_json(self, z):
        st = self.authz_status(z)
        j = {'identifier': z.identifier, 'status': st, 'expires': rfc3339(z.expires),
             'challenges': [self.chall_json(self.challs[c]) for c in z.challs]}
        return j

    def order_status(self, o):
        if o.status in ('invalid', 'processing', 'valid'):
            return o.status
        sts = [self.authz_status(self.authzs[z]) for z in o.authzs]
        if any(s != 'valid' and s != 'pending' for s in sts):
            o.status = 'invalid'
            if not o.error:
                bad = [self.authzs[z] for z in o.authzs if self.authzs[z].status != 'valid'
                       and self.authzs[z].status != 'pending']
                errs = [self.challs[c].error for z in bad for c in z.challs if self.challs[c].error]
                o.error = {'type': ERR + 'unauthorized', 'status': 403,
                           'detail': 'authorization for %s is %s' % (bad[0].identifier['value'], bad[0].status)}
                if errs:
                    o.error['subproblems'] = [dict(e, identifier=z.identifier) for z in bad
                                              for c in z.challs for e in [self.challs[c].error] if e]
            return o.status
        if o.status == 'pending' and time.time() > o.expires:
            o.status = 'invalid'
            o.error = {'type': ERR + 'malformed', 'status': 400, 'detail': 'order expired'}
            return o.status
        if all(s == 'valid' for s in sts):
            o.status = 'ready'
        return o.status

    def order_json(self, o):
        st = self.order_status(o)
        j = {'status': st, 'expires': rfc3339(o.expires), 'identifiers': o.identifiers,
             'authorizations': [self.url('authz', z) for z in o.authzs],
             'finalize': self.url('order', o.id, 'finalize')}
        if o.error:
            j['error'] = o.error
        if st == 'valid' and o.cert:
            j['certificate'] = self.url('cert', o.cert)
        return j

    # -- mail: challenge mails --------------------------------------------
    def subject_header(self, token1):
        style = self.cfg.subject
        if style == 'plain':
            return 'Subject: ACME: %s' % token1
        if style == 'folded':
            return 'Subject: ACME:\r\n %s\r\n %s' % (token1[:21], token1[21:])
        if style in ('q', 'q-lang'):
            cs = 'US-ASCII*en' if style == 'q-lang' else 'US-ASCII'

            def q(s):
                out = ''
                for ch in s:
                    if ch.isalnum() or ch in '-!*+/':
                        out += ch
                    elif ch == ' ':
                        out += '_'
                    else:
                        out += '=%02X' % ord(ch)
                return out
            words, chunk = [], ''
            for ch in 'ACME: ' + token1:
                if len('=?%s?Q?%s?=' % (cs, q(chunk + ch))) > 75:
                    words.append(chunk)
                    chunk = ''
                chunk += ch
            words.append(chunk)
            return 'Subject: ' + '\r\n '.join('=?%s?Q?%s?=' % (cs, q(w)) for w in words)
        # b: two encoded words (one would exceed 75 characters)
        text = 'ACME: ' + token1
        half = len(text) // 2
        return 'Subject: ' + '\r\n '.join('=?UTF-8?B?%s?=' % base64.b64encode(p.encode()).decode()
                                          for p in (text[:half], text[half:]))

    SMIME_DECOYS = ('badsmime', 'smimesigner', 'smimeheaders')

    def mail_signing(self, kind=None):
        """How a challenge mail of this kind (None: the real one) is signed: (S/MIME form or None, DKIM)."""
        omit = self.cfg.mail_omit
        form = self.cfg.smime_sign
        if kind in self.SMIME_DECOYS:
            return form or 'detached', False
        if kind == 'unsigned':
            return None, False
        return form, self.cfg.dkim and 'dkim' not in omit

    def build_mail(self, from_addr, to_addr, token1, kind=None, date=None, msgid=None):
        omit = self.cfg.mail_omit
        dom = split_addr(from_addr)[1]
        msgid = msgid or '<%s.%s@%s>' % (time.strftime('%Y%m%d%H%M%S'), secrets.token_hex(8), dom)
        display = self.cfg.mail_from_name
        frm = ('%s <%s>' % (display, from_addr)) if display else from_addr
        subject = self.subject_header(token1)
        if kind == 'reply':
            subject = 'Subject: Re: ACME: %s' % token1
        lines = []
        if 'auto-submitted' not in omit and kind != 'noauto':
            lines.append('Auto-Submitted: auto-generated; type=acme')
        if 'date' not in omit:
            lines.append('Date: ' + (date or email.utils.formatdate(localtime=True)))
        if 'message-id' not in omit:
            lines.append('Message-ID: ' + msgid)
        lines += ['From: ' + frm, 'To: ' + to_addr, subject]
        text = ['MIME-Version: 1.0', 'Content-Type: text/plain; charset=US-ASCII',
                'Content-Transfer-Encoding: 7bit']
        body = ('This is an automatically generated ACME challenge for email address\r\n'
                '"%s". If you have not requested an S/MIME certificate for this\r\n'
                'address, ignore this message. If you did, your ACME client answers it\r\n'
                'by itself (RFC 8823).\r\n' % to_addr)
        form, dkim_sign = self.mail_signing(kind)
        if form:
            inner = lines
            if kind == 'smimeheaders':   # the signed copy names another token
                inner = [l if not l.startswith('Subject:') else 'Subject: ACME: ' + self.make_token1()
                         for l in lines]
            signer = self.cfg.decoy_from if kind == 'smimesigner' else from_addr
            msg = self.smime_wrap(lines, inner, text, body, form, signer)
        else:
            msg = ('\r\n'.join(lines + text) + '\r\n\r\n' + body).encode('ascii')
        if dkim_sign:
            import dkim
            sig = dkim.sign(msg, self.pki.dkim_selector.encode(), self.pki.dkim_domain.encode(),
                            self.pki.dkim_key, signature_algorithm=self.pki.dkim_algo,
                            canonicalize=(b'relaxed', b'relaxed'),
                            include_headers=[h.encode() for h in DKIM_HEADERS])
            msg = sig + msg
        if kind in ('baddkim', 'badsmime'):   # change the signed body after signing
            msg = tamper_body(msg)
        return msg, (msgid if 'message-id' not in omit else None)

    def smime_wrap(self, outer, inner, text, body, form, signer_addr):
        """The S/MIME mail (RFC 8551): header fields `outer`, then the signed entity, a message/rfc822
        holding the header fields `inner` + `text` and the body (header protection, RFC 8823 section 3.1:
        the signature covers From, To, Subject and the rest). form: detached (multipart/signed, RFC 1847
        and RFC 8551 section 3.5) or opaque (application/pkcs7-mime; smime-type=signed-data, section 3.4).
        The CMS is made over the exact CRLF-canonical bytes of the entity (PKCS7 Binary: no
        re-canonicalisation by OpenSSL)."""
        from cryptography.hazmat.primitives.serialization import pkcs7
        entity = ('Content-Type: message/rfc822; forwarded=no\r\n\r\n' +
                  '\r\n'.join(inner + text) + '\r\n\r\n' + body).encode('ascii')
        cert, key, extra = self.pki.smime_signer(signer_addr)
        b = pkcs7.PKCS7SignatureBuilder().set_data(entity).add_signer(cert, key, hashes.SHA256())
        for c in extra:          # after add_signer: it drops the certificates added before it
            b = b.add_certificate(c)
        opts = [pkcs7.PKCS7Options.Binary]
        if form == 'detached':
            opts.append(pkcs7.PKCS7Options.DetachedSignature)
        der = b.sign(serialization.Encoding.DER, opts)
        head = '\r\n'.join(outer) + '\r\nMIME-Version: 1.0\r\n'
        if form == 'opaque':
            return (head + 'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
                    'Content-Transfer-Encoding: base64\r\n'
                    'Content-Disposition: attachment; filename="smime.p7m"\r\n\r\n').encode('ascii') + \
                b64_lines(der)
        bnd = '----=_acme_smime_' + secrets.token_hex(12)
        return (head + 'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256;\r\n'
                ' boundary="%s"\r\n\r\n'
                'This is an S/MIME signed message (RFC 8551).\r\n'
                '--%s\r\n' % (bnd, bnd)).encode('ascii') + entity + \
            ('\r\n--%s\r\n'
             'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
             'Content-Transfer-Encoding: base64\r\n'
             'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n' % bnd).encode('ascii') + \
            b64_lines(der) + ('--%s--\r\n' % bnd).encode('ascii')

    def smtp_send(self, env_from, rcpt, msg):
        host, _, port = self.cfg.smtp.rpartition(':')
        last = None
        for attempt in range(5):
            try:
                s = smtplib.SMTP(host, int(port), local_hostname='ca.acme.test', timeout=20)
                try:
                    s.ehlo()
                    if s.has_extn('starttls') and self.cfg.mail_ca_file:
                        ctx = ssl.create_default_context(cafile=self.cfg.mail_ca_file)
                        s.starttls(context=ctx)
                        s.ehlo()
                    s.sendmail(env_from, [rcpt], msg)
                finally:
                    try:
                        s.quit()
                    except Exception:
                        pass
                return
            except (OSError, smtplib.SMTPException) as e:
                last = e
                log.warning('SMTP to %s failed (attempt %d): %s', self.cfg.smtp, attempt + 1, e)
                time.sleep(0.3)
        raise RuntimeError('cannot send mail via %s: %s' % (self.cfg.smtp, last))

    def schedule_mail(self, z):
        """Send the challenge mail for authorization z (once), in the background."""
        with self.lock:
            if z.mail_scheduled:
                return
            z.mail_scheduled = True
        delay = self.cfg.mail_delay
        t = threading.Timer(max(delay, 0.05), self.send_challenge_mail, args=(z.id,))
        t.daemon = True
        t.start()

    def send_challenge_mail(self, zid):
        try:
            with self.lock:
                z = self.authzs[zid]
                c = next((self.challs[i] for i in z.challs if self.challs[i].type == 'email-reply-00'), None)
                if c is None:
                    return
                o = self.orders[z.order]
                to = z.identifier['value']
            cfg = self.cfg
            # stale mail first
            if cfg.stale:
                prev = self.last_mail.get(to.lower())
                if prev is not None:
                    self.smtp_send(cfg.addr, to, prev[0])
                    self.events.emit('stale-mail-sent', account=o.account, order=o.id, authz=z.id,
                                     challenge=c.id, old_challenge=prev[1], to=to)
                else:
                    t1 = self.make_token1()
                    old_date = email.utils.formatdate(time.time() - 3600, localtime=True)
                    msg, mid = self.build_mail(cfg.addr, to, t1, date=old_date)
                    with self.lock:
                        self.token1_index[t1.rstrip('=')] = ('decoy', 'stale', to)
                    self.smtp_send(cfg.addr, to, msg)
                    self.events.emit('stale-mail-sent', account=o.account, order=o.id, authz=z.id,
                                     challenge=c.id, message_id=mid, token1=t1, to=to)
                time.sleep(0.2)
            for kind in cfg.decoys:
                t1 = self.make_token1()
                frm = cfg.decoy_from if kind == 'sender' else c.from_addr
                rcpt = to
                msg, mid = self.build_mail(frm, to if kind != 'wrongto' else 'someone-else@' +
                                           split_addr(to)[1], t1, kind=kind)
                with self.lock:
                    self.token1_index[t1.rstrip('=')] = ('decoy', kind, to)
                self.smtp_send(frm, rcpt, msg)
                form, dk = self.mail_signing(kind)
                self.events.emit('decoy-mail-sent', account=o.account, order=o.id, authz=z.id,
                                 challenge=c.id, kind=kind, message_id=mid, token1=t1, to=to, smime=form,
                                 dkim=dk)
                time.sleep(0.2)
            msg, mid = self.build_mail(c.from_addr, to, c.token1)
            with self.lock:
                c.message_id = mid
            self.smtp_send(cfg.addr, to, msg)
            with self.lock:
                c.mail_sent = time.time()
                self.last_mail[to.lower()] = (msg, c.id)
            form, dk = self.mail_signing()
            self.events.emit('challenge-mail-sent', account=o.account, order=o.id, authz=z.id,
                             challenge=c.id, message_id=mid, token1=c.token1, to=to, smime=form, dkim=dk,
                             **{'from': c.from_addr})
        except Exception as e:
            log.error('challenge mail for authz %s failed: %s\n%s', zid, e, traceback.format_exc())
            self.events.emit('challenge-mail-failed', authz=zid, detail=str(e))

    def make_token1(self):
        t = b64u(secrets.token_bytes(32))
        if self.cfg.token1_pad:
            t += '=' * (-len(t) % 4)
        return t

    # -- mail: the CA's mailbox -------------------------------------------
    def pop_connect(self):
        host, _, port = self.cfg.pop3.rpartition(':')
        port = int(port)
        ctx = ssl.create_default_context(cafile=self.cfg.mail_ca_file or None)
        mode = self.cfg.pop3_mode
        src = self.cfg.pop3_source if host.startswith('127.') else ''
        if mode == 'pop3s':
            p = POP3SSLFrom(src, host, port, context=ctx, timeout=20)
        else:
            p = POP3From(src, host, port, timeout=20)
            if mode == 'stls':
                p.stls(ctx)
        if self.mail_pw is None:
            self.mail_pw = open(self.cfg.mail_pass_file).read().strip() if self.cfg.mail_pass_file else ''
        p.user(self.cfg.mail_user)
        p.pass_(self.mail_pw)
        return p

    def poll_mailbox(self):
        """Fetch new mails from the CA's mailbox and file each as a response to its challenge."""
        with self.poll_lock:
            try:
                p = self.pop_connect()
            except Exception as e:
                log.warning('POP3 login to %s failed: %s', self.cfg.pop3, e)
                return
            try:
                _, lines, _ = p.uidl()
                for line in lines:
                    num, uid = line.decode().split()
                    if uid in self.seen_uidls:
                        continue
                    _, body, _ = p.retr(int(num))
                    raw = b'\r\n'.join(body) + b'\r\n'
                    self.seen_uidls.add(uid)
                    try:
                        self.file_mail(raw, uid)
                    except Exception as e:
                        log.error('cannot process mail %s: %s\n%s', uid, e, traceback.format_exc())
                    if not self.cfg.keep_mail:
                        p.dele(int(num))
                p.quit()
            except Exception as e:
                log.warning('POP3 session failed: %s', e)
                try:
                    p.close()
                except Exception:
                    pass

    def mailbox_loop(self):
        while not self.stop_event.wait(self.cfg.pop_interval):
            if self.cfg.mail_pass_file:
                self.poll_mailbox()

    def file_mail(self, raw, uid):
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        subj_raw = msg.get('Subject', '')
        subject = decode_subject(subj_raw)
        mid = msg.get('Message-ID', '')
        m = re.search(r'ACME:(.*)$', subject, re.S)
        frm = msg.get('From', '')
        if not m:
            self.events.emit('mail-unmatched', uid=uid, message_id=mid, subject=subject, **{'from': frm})
            return
        token1 = re.sub(r'\s+', '', m.group(1))
        key = token1.rstrip('=')
        with self.lock:
            hit = self.token1_index.get(key)
        if hit is None:
            self.events.emit('mail-unmatched', uid=uid, message_id=mid, subject=subject, **{'from': frm})
            return
        if hit[0] == 'decoy':
            self.events.emit('decoy-answered', kind=hit[1], uid=uid, message_id=mid, token1=token1,
                             **{'from': frm})
            self.events.emit('response-received', challenge=None, decoy=hit[1], uid=uid, message_id=mid,
                             **{'from': frm})
            return
        with self.lock:
            c = self.challs[hit[1]]
            z = self.authzs[c.authz]
            o = self.orders[z.order]
            c.responses.append(Obj(raw=raw, msg=msg, subject=subject, token1=token1, uid=uid,
                                   received=time.time()))
            n = len(c.responses)
        self.events.emit('response-received', account=o.account, order=o.id, authz=z.id, challenge=c.id,
                         uid=uid, message_id=mid, count=n, **{'from': frm})

    # -- validation --------------------------------------------------------
    def expected_digest(self, c, thumb, mode, token1=None):
        t1 = c.token1 if token1 is None else token1
        if mode == 'bytes':
            token = b64u(b64u_decode_lenient(t1) + b64u_decode_lenient(c.token2))
        else:
            token = t1 + c.token2
        return b64u(hashlib.sha256((token + '.' + thumb).encode()).digest())

    def check_response(self, c, z, a, r):
        """Return (ok, detail, warnings) for response r to challenge c."""
        msg, warns = r.msg, []
        ident = z.identifier['value']
        froms = msg.get_all('From') or []
        if len(froms) != 1:
            return False, 'response has %d From: fields' % len(froms), warns
        addrs = email.utils.getaddresses(froms)
        if len(addrs) != 1 or not addrs[0][1]:
            return False, 'response From: %r is not one mailbox' % froms[0], warns
        fa = addrs[0][1]
        if '<' not in froms[0]:
            if self.cfg.strict_from:
                return False, 'response From: %r is a bare addr-spec; this CA requires <...>' % froms[0], warns
            warns.append('From: without angle brackets')
        if not same_addr(fa, ident):
            return False, 'response From: %s is not the identifier %s' % (fa, ident), warns
        if r.token1 != c.token1:
            warns.append('token-part1 in the Subject differs from the one sent (%r vs %r)' % (r.token1, c.token1))
        irt = msg.get('In-Reply-To')
        if c.message_id:
            if irt is None:
                if self.cfg.require_in_reply_to:
                    return False, 'response has no In-Reply-To (expected %s)' % c.message_id, warns
                warns.append('no In-Reply-To')
            elif irt.strip() != c.message_id:
                if self.cfg.require_in_reply_to:
                    return False, 'In-Reply-To %s is not the challenge Message-ID %s' % (irt.strip(),
                                                                                         c.message_id), warns
                warns.append('In-Reply-To %s is not the challenge Message-ID' % irt.strip())
        lists = [k for k in msg.keys() if k.lower().startswith('list-')]
        if lists:
            return False, 'response carries List-* fields (%s)' % ', '.join(lists), warns
        tos = email.utils.getaddresses(msg.get_all('To') or [])
        if not any(same_addr(t[1], c.from_addr) for t in tos):
            warns.append('response To: does not contain %s' % c.from_addr)
        # body: text/plain (or inside multipart/alternative), decoded
        m2 = email.message_from_bytes(r.raw, policy=email.policy.default)
        part = m2.get_body(preferencelist=('plain',))
        if part is None:
            return False, 'response has no text/plain part', warns
        try:
            text = part.get_content()
        except Exception as e:
            return False, 'response body cannot be decoded: %s' % e, warns
        lines = text.replace('\r\n', '\n').replace('\r', '\n').split('\n')
        try:
            i = next(k for k, l in enumerate(lines) if l.strip() == '-----BEGIN ACME RESPONSE-----')
            j = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == '-----END ACME RESPONSE-----')
        except StopIteration:
            return False, 'response body has no -----BEGIN/END ACME RESPONSE----- block', warns
        got = re.sub(r'\s+', '', ''.join(lines[i + 1:j]))
        if got.endswith('='):
            warns.append('digest carries base64 padding')
            got = got.rstrip('=')
        if j - i > 2:
            warns.append('digest split over %d lines' % (j - i - 1))
        mode = self.cfg.concat
        want = self.expected_digest(c, a.key.thumb, mode)
        if got == want:
            return True, None, warns
        other = 'bytes' if mode == 'string' else 'string'
        detail = ('digest in the response is wrong: this CA joins token-part1 and token-part2 as %s '
                  '(CA_CONCAT=%s)' % (mode.upper(), mode))
        if got == self.expected_digest(c, a.key.thumb, other):
            detail += '; the response was computed with %s concatenation' % other.upper()
        elif c.token1.endswith('=') and got == self.expected_digest(c, a.key.thumb, mode, c.token1.rstrip('=')):
            detail += "; the response was computed with token-part1 stripped of its '=' padding"
        else:
            detail += '; it matches neither STRING nor BYTES concatenation for this account key'
        return False, detail, warns

    def start_validation(self, c):
        t = threading.Thread(target=self.validate, args=(c.id,), daemon=True)
        t.start()

    def validate(self, cid):
        deadline = time.time() + self.cfg.validate_window
        try:
            while True:
                self.poll_mailbox()
                with self.lock:
                    c = self.challs[cid]
                    if c.responses:
                        r = c.responses[0]
                        z = self.authzs[c.authz]
                        a = self.accounts[z.account]
                        ok, detail, warns = self.check_response(c, z, a, r)
                        self.finish_challenge(c, ok, detail, warns, r)
                        return
                if time.time() >= deadline:
                    break
                time.sleep(0.25)
            with self.lock:
                c = self.challs[cid]
                self.finish_challenge(c, False, 'no response mail for this challenge arrived in the CA mailbox '
                                                '%s within %g s of the challenge POST' %
                                      (c.from_addr, self.cfg.validate_window), [], None)
        except Exception as e:
            log.error('validation of %s crashed: %s\n%s', cid, e, traceback.format_exc())
            with self.lock:
                self.finish_challenge(self.challs[cid], False, 'internal error during validation', [], None)

    def finish_challenge(self, c, ok, detail, warns, r):
        z = self.authzs[c.authz]
        o = self.orders[z.order]
        for w in warns:
            self.events.emit('warning', account=o.account, order=o.id, challenge=c.id, detail=w)
        if ok:
            c.status, c.validated = 'valid', time.time()
            z.status = 'valid'
            z.expires = time.time() + 30 * 86400
            self.events.emit('challenge-valid', account=o.account, order=o.id, authz=z.id, challenge=c.id,
                             uid=r.uid if r else None)
        else:
            c.status = 'invalid'
            c.error = {'type': ERR + 'incorrectResponse', 'status': 403, 'detail': detail}
            z.status = 'invalid'
            self.events.emit('challenge-invalid', account=o.account, order=o.id, authz=z.id, challenge=c.id,
                             detail=detail, uid=r.uid if r else None)

    # -- request handling --------------------------------------------------
    def verify_jws(self, body, url, endpoint):
        obj = strict_json(body, 'request body')
        if not isinstance(obj, dict):
            raise Problem('malformed', 'request body is not a JSON object')
        if 'signatures' in obj:
            raise Problem('malformed', 'general JWS serialization is not allowed; use flattened JSON')
        if 'header' in obj:
            raise Problem('malformed', 'JWS unprotected header is not allowed')
        missing = {'protected', 'payload', 'signature'} - set(obj)
        if missing:
            raise Problem('malformed', 'JWS lacks %s' % ', '.join(sorted(missing)))
        extra = set(obj) - {'protected', 'payload', 'signature'}
        if extra:
            raise Problem('malformed', 'JWS has unexpected members %s' % ', '.join(sorted(extra)))
        for k in ('protected', 'payload', 'signature'):
            if not isinstance(obj[k], str):
                raise Problem('malformed', 'JWS %s is not a string' % k)
        hdr = strict_json(b64u_decode(obj['protected'], 'JWS protected'), 'JWS protected header')
        if not isinstance(hdr, dict):
            raise Problem('malformed', 'JWS protected header is not an object')
        payload_raw = b64u_decode(obj['payload'], 'JWS payload')
        sig = b64u_decode(obj['signature'], 'JWS signature')
        alg = hdr.get('alg')
        if not isinstance(alg, str):
            raise Problem('malformed', 'JWS protected header has no alg')
        if alg not in self.cfg.algs:
            raise Problem('badSignatureAlgorithm', 'JWS alg %r is not supported' % alg,
                          extra={'algorithms': self.cfg.algs})
        if 'b64' in hdr or 'crit' in hdr:
            raise Problem('malformed', 'JWS header parameters b64/crit are not allowed')
        has_jwk, has_kid = 'jwk' in hdr, 'kid' in hdr
        if has_jwk == has_kid:
            raise Problem('malformed', 'JWS protected header needs exactly one of jwk and kid')
        account = None
        if has_jwk:
            if endpoint not in ('new-account', 'revoke-cert'):
                raise Problem('malformed', 'jwk is only allowed for newAccount and revokeCert; use kid (the '
                                           'account URL)')
            key = PubKey(hdr['jwk'])
            with self.lock:
                account = self.accounts.get(self.by_thumb.get(key.thumb))
        else:
            if endpoint == 'new-account':
                raise Problem('malformed', 'newAccount must be signed with jwk, not kid')
            kid = hdr['kid']
            if not isinstance(kid, str):
                raise Problem('malformed', 'kid is not a string')
            prefix = self.url('acct', '')
            with self.lock:
                account = self.accounts.get(kid[len(prefix):]) if kid.startswith(prefix) else None
            if account is None:
                raise Problem('accountDoesNotExist', 'no account with kid %r' % kid)
            if account.status != 'valid':
                raise Problem('unauthorized', 'account is %s' % account.status)
            key = account.key
        key.check_alg(alg)
        if not key.verify(alg, sig, (obj['protected'] + '.' + obj['payload']).encode('ascii')):
            raise Problem('malformed', 'JWS signature verification failed')
        nonce = hdr.get('nonce')
        if not isinstance(nonce, str) or not nonce:
            raise Problem('badNonce', 'JWS protected header has no nonce')
        if not self.nonces.use(nonce):
            raise Problem('badNonce', 'nonce %r is unknown or already used' % nonce)
        if self.cfg.nonce_reject > 0 and random.random() * 100 < self.cfg.nonce_reject:
            raise Problem('badNonce', 'nonce rejected (CA_NONCE_REJECT=%g%%)' % self.cfg.nonce_reject)
        u = hdr.get('url')
        if not isinstance(u, str):
            raise Problem('malformed', 'JWS protected header has no url')
        if u != url:
            raise Problem('unauthorized', 'JWS url %r does not match the request URL %r' % (u, url))
        if payload_raw == b'':
            payload = None
        else:
            payload = strict_json(payload_raw, 'JWS payload')
            if not isinstance(payload, dict):
                raise Problem('malformed', 'JWS payload is not a JSON object')
        return Obj(hdr=hdr, payload=payload, account=account, key=key, alg=alg, obj=obj)

    def owned(self, ctx, thing, what):
        if thing.account != ctx.account.id:
            raise Problem('unauthorized', '%s belongs to another account' % what)

    # endpoint handlers: return (status, json-or-bytes, headers)
    def h_new_account(self, ctx):
        p = ctx.payload
        if p is None:
            raise Problem('malformed', 'newAccount needs a JSON payload')
        only = p.get('onlyReturnExisting', False)
        if not isinstance(only, bool):
            raise Problem('malformed', 'onlyReturnExisting must be a boolean')
        with self.lock:
            a = self.accounts.get(self.by_thumb.get(ctx.key.thumb))
            if a is not None:
                if a.status != 'valid':
                    raise Problem('unauthorized', 'account is %s' % a.status)
                return 200, self.account_json(a), [('Location', self.url('acct', a.id))]
            if only:
                raise Problem('accountDoesNotExist', 'no account exists for this key')
            contact = self.check_contact(p.get('contact', []))
            tos = p.get('termsOfServiceAgreed', False)
            if not isinstance(tos, bool):
                raise Problem('malformed', 'termsOfServiceAgreed must be a boolean')
            if self.cfg.tos and not tos:
                raise Problem('userActionRequired', 'newAccount must agree to the terms of service %s' %
                              self.url('terms'), headers=[('Link', '<%s>;rel="terms-of-service"' %
                                                           self.url('terms'))],
                              extra={'instance': self.url('terms')})
            if 'externalAccountBinding' in p:
                raise Problem('malformed', 'this CA does not use external account binding')
            a = Obj(id=new_id(), key=ctx.key, status='valid', contact=contact, tos=tos, orders=[],
                    created=time.time())
            self.accounts[a.id] = a
            self.by_thumb[ctx.key.thumb] = a.id
        self.events.emit('account-created', account=a.id, thumbprint=ctx.key.thumb, alg=ctx.alg)
        return 201, self.account_json(a), [('Location', self.url('acct', a.id))]

    def check_contact(self, contact):
        if not isinstance(contact, list) or not all(isinstance(c, str) for c in contact):
            raise Problem('malformed', 'contact must be an array of strings')
        for c in contact:
            if not c.lower().startswith('mailto:'):
                raise Problem('unsupportedContact', 'contact %r: only mailto: is supported' % c)
            addr = c[7:]
            if '?' in addr or ',' in addr or not ADDR_RE.match(addr):
                raise Problem('invalidContact', 'contact %r is not a single mailto: address' % c)
        return contact

    def h_acct(self, ctx, aid):
        with self.lock:
            a = self.accounts.get(aid)
            if a is None:
                raise Problem('accountDoesNotExist', 'no such account', status=404)
            if a.id != ctx.account.id:
                raise Problem('unauthorized', 'kid does not match the account URL')
            p = ctx.payload
            if p:
                if 'contact' in p:
                    a.contact = self.check_contact(p['contact'])
                if p.get('status') == 'deactivated':
                    a.status = 'deactivated'
                    self.events.emit('account-deactivated', account=a.id)
                elif 'status' in p:
                    raise Problem('malformed', 'status can only be set to deactivated')
            return 200, self.account_json(a), []

    def h_orders(self, ctx, aid):
        with self.lock:
            a = self.accounts.get(aid)
            if a is None or a.id != ctx.account.id:
                raise Problem('unauthorized', 'not your account')
            if ctx.payload is not None:
                raise Problem('malformed', 'orders list is read with POST-as-GET (empty payload)')
            return 200, {'orders': [self.url('order', o) for o in a.orders
                                    if self.order_status(self.orders[o]) in ('pending', 'ready', 'processing',
                                                                            'valid')]}, []

    def h_new_order(self, ctx):
        p = ctx.payload
        if p is None:
            raise Problem('malformed', 'newOrder needs a JSON payload')
        ids = p.get('identifiers')
        if not isinstance(ids, list) or not ids:
            raise Problem('malformed', 'identifiers must be a non-empty array')
        for k in ('notBefore', 'notAfter'):
            if k in p:
                raise Problem('malformed', 'this CA does not support %s' % k)
        seen, clean = set(), []
        for ident in ids:
            if not isinstance(ident, dict) or set(ident) != {'type', 'value'} or \
                    not isinstance(ident.get('type'), str) or not isinstance(ident.get('value'), str):
                raise Problem('malformed', 'identifier %r must be {"type":..,"value":..}' % (ident,))
            t, v = ident['type'], ident['value']
            if t == 'email':
                if '*' in v:
                    raise Problem('rejectedIdentifier', 'email identifier %r contains a wildcard' % v)
                if not ADDR_RE.match(v):
                    raise Problem('rejectedIdentifier', 'email identifier %r is not an ASCII addr-spec' % v)
                if self.cfg.domains and split_addr(v)[1] not in self.cfg.domains:
                    raise Problem('rejectedIdentifier', 'this CA only serves %s' %
                                  ', '.join(sorted(self.cfg.domains)))
                key = ('email',) + split_addr(v)
            elif t == 'dns' and self.cfg.allow_dns:
                key = ('dns', v.lower())
            else:
                raise Problem('unsupportedIdentifier', 'identifier type %r is not supported (only email)' % t,
                              extra={'subproblems': [{'type': ERR + 'unsupportedIdentifier',
                                                      'detail': 'type %s' % t, 'identifier': ident}]})
            if key in seen:
                raise Problem('malformed', 'duplicate identifier %r' % v)
            seen.add(key)
            clean.append({'type': t, 'value': v})
        now = time.time()
        a = ctx.account
        with self.lock:
            o = Obj(id=new_id(), account=a.id, identifiers=clean, authzs=[], status='pending',
                    expires=now + self.cfg.order_ttl, error=None, cert=None, polls_left=0, created=now)
            for ident in clean:
                z = Obj(id=new_id(), account=a.id, order=o.id, identifier=ident, status='pending',
                        expires=now + self.cfg.order_ttl, challs=[], mail_scheduled=False, fetched=False)
                if ident['type'] == 'email':
                    cid = new_id()
                    from_addr = self.cfg.addr
                    if self.cfg.from_tag:
                        loc, dom = from_addr.rsplit('@', 1)
                        from_addr = '%s+%s@%s' % (loc, cid.replace('_', '').replace('-', '').lower()[:10], dom)
                    c = Obj(id=cid, authz=z.id, type='email-reply-00', status='pending',
                            token1=self.make_token1(), token2=b64u(secrets.token_bytes(32)), from_addr=from_addr,
                            validated=None, error=None, message_id=None, mail_sent=None, responses=[])
                    self.challs[c.id] = c
                    self.token1_index[c.token1.rstrip('=')] = ('chall', c.id)
                    z.challs.append(c.id)
                else:
                    z.status = 'valid'
                self.authzs[z.id] = z
                o.authzs.append(z.id)
            self.orders[o.id] = o
            a.orders.append(o.id)
            body = self.order_json(o)
        self.events.emit('order-created', account=a.id, order=o.id,
                         identifiers=[i['value'] for i in clean], authzs=o.authzs,
                         challenges=[c for z in o.authzs for c in self.authzs[z].challs])
        if self.cfg.mail_at == 'order':
            for zid in o.authzs:
                if self.authzs[zid].challs:
                    self.schedule_mail(self.authzs[zid])
        return 201, body, [('Location', self.url('order', o.id))]

    def h_order(self, ctx, oid):
        with self.lock:
            o = self.orders.get(oid)
            if o is None:
                raise Problem('malformed', 'no such order', status=404)
            self.owned(ctx, o, 'order')
            if ctx.payload is not None:
                raise Problem('malformed', 'an order is read with POST-as-GET (empty payload)')
            hdrs = []
            if o.status == 'processing':
                if o.polls_left > 0:
                    o.polls_left -= 1
                else:
                    self.complete_order(o)
            if o.status == 'processing':
                hdrs.append(('Retry-After', fmt_secs(self.cfg.retry_after)))
            return 200, self.order_json(o), hdrs

    def complete_order(self, o):
        o.status = 'valid'
        self.events.emit('certificate-issued', account=o.account, order=o.id, certificate=o.cert,
                         serial='%x' % self.certs[o.cert].leaf.serial_number,
                         identifiers=[i['value'] for i in o.identifiers])

    def h_authz(self, ctx, zid):
        with self.lock:
            z = self.authzs.get(zid)
            if z is None:
                raise Problem('malformed', 'no such authorization', status=404)
            self.owned(ctx, z, 'authorization')
            p = ctx.payload
            if p is not None:
                if p != {'status': 'deactivated'}:
                    raise Problem('malformed', 'an authorization accepts POST-as-GET or {"status":"deactivated"}')
                if z.status not in ('pending', 'valid'):
                    raise Problem('malformed', 'authorization is %s' % z.status)
                z.status = 'deactivated'
                self.events.emit('authz-deactivated', account=z.account, order=z.order, authz=z.id)
            first = not z.fetched
            z.fetched = True
            body = self.authz_json(z)
            hdrs = []
            if any(self.challs[c].status == 'processing' for c in z.challs):
                hdrs.append(('Retry-After', fmt_secs(self.cfg.retry_after)))
        if first and self.cfg.mail_at == 'authz' and z.challs and z.status == 'pending':
            self.schedule_mail(z)
        return 200, body, hdrs

    def h_chall(self, ctx, cid):
        start = False
        with self.lock:
            c = self.challs.get(cid)
            if c is None:
                raise Problem('malformed', 'no such challenge', status=404)
            z = self.authzs[c.authz]
            self.owned(ctx, z, 'challenge')
            p = ctx.payload
            if p is not None:
                if p != {}:
                    self.events.emit('warning', account=z.account, order=z.order, challenge=c.id,
                                     detail='challenge response object is not {}: %s' % json.dumps(p))
                if c.status == 'pending':
                    if self.authz_status(z) != 'pending':
                        raise Problem('malformed', 'authorization is %s' % z.status)
                    c.status = 'processing'
                    start = True
                    self.events.emit('challenge-posted', account=z.account, order=z.order, authz=z.id,
                                     challenge=c.id)
            body = self.chall_json(c)
            hdrs = [('Link', '<%s>;rel="up"' % self.url('authz', z.id))]
            if c.status == 'processing':
                hdrs.append(('Retry-After', fmt_secs(self.cfg.retry_after)))
        if start:
            self.start_validation(c)
        return 200, body, hdrs

    def h_finalize(self, ctx, oid):
        with self.lock:
            o = self.orders.get(oid)
            if o is None:
                raise Problem('malformed', 'no such order', status=404)
            self.owned(ctx, o, 'order')
            p = ctx.payload
            if p is None or not isinstance(p.get('csr'), str):
                raise Problem('malformed', 'finalize needs {"csr": "<base64url DER>"}')
            st = self.order_status(o)
            if st != 'ready':
                raise Problem('orderNotReady', 'order is %s, not ready' % st)
            try:
                der = b64u_decode(p['csr'], 'csr')
            except Problem as e:
                raise Problem('badCSR', e.detail)
            csr, sans, ku, subject = self.check_csr(der, o)
            cert = self.pki.issue(csr, sans, ku, subject, self.cfg.cert_lifetime, self.cfg.cert_backdate)
            cid = new_id()
            pem = (cert_pem(cert) + cert_pem(self.pki.inter)).decode('ascii')
            self.certs[cid] = Obj(id=cid, account=o.account, order=o.id, leaf=cert, pem=pem,
                                  der=cert.public_bytes(serialization.Encoding.DER), revoked=False)
            o.cert = cid
            o.status = 'processing'
            o.polls_left = self.cfg.processing_polls
            if o.polls_left == 0:
                self.complete_order(o)
            hdrs = [('Location', self.url('order', o.id))]
            if o.status == 'processing':
                hdrs.append(('Retry-After', fmt_secs(self.cfg.retry_after)))
            return 200, self.order_json(o), hdrs

    def check_csr(self, der, o):
        try:
            csr = x509.load_der_x509_csr(der)
        except ValueError as e:
            raise Problem('badCSR', 'CSR does not parse: %s' % e)
        if not csr.is_signature_valid:
            raise Problem('badCSR', 'CSR signature is invalid')
        pub = csr.public_key()
        if isinstance(pub, ec.EllipticCurvePublicKey):
            if pub.curve.name not in ('secp256r1', 'secp384r1'):
                raise Problem('badCSR', 'EC curve %s is not allowed (P-256, P-384)' % pub.curve.name)
            kt = 'ec'
        elif isinstance(pub, rsa.RSAPublicKey):
            if pub.key_size < 2048 or pub.key_size > 8192:
                raise Problem('badCSR', 'RSA key size %d is not allowed' % pub.key_size)
            kt = 'rsa'
        else:
            raise Problem('badCSR', 'CSR key type is not allowed (EC P-256/P-384 or RSA)')
        spki = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if any(a.key.spki == spki for a in self.accounts.values()):
            raise Problem('badCSR', 'CSR key is an account key; use a separate key for the certificate')
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            raise Problem('badCSR', 'CSR has no subjectAltName extension request')
        emails = []
        for gn in san:
            if not isinstance(gn, x509.RFC822Name):
                raise Problem('badCSR', 'CSR requests a SAN that is not an rfc822Name: %s' % gn)
            emails.append(gn.value)
        want = {split_addr(i['value']) for i in o.identifiers if i['type'] == 'email'}
        got = [split_addr(e) for e in emails]
        if len(set(got)) != len(got):
            raise Problem('badCSR', 'CSR repeats a SAN address')
        if set(got) != want or any(i['type'] != 'email' for i in o.identifiers):
            raise Problem('badCSR', 'CSR rfc822Name SANs %s do not equal the order identifiers %s' %
                          (sorted(emails), sorted(i['value'] for i in o.identifiers)))
        for attr in csr.subject:
            if attr.oid not in (NameOID.COMMON_NAME, NameOID.EMAIL_ADDRESS, NameOID.SERIAL_NUMBER):
                raise Problem('badCSR', 'CSR subject attribute %s is not allowed for a mailbox-validated '
                                        'certificate (CN, emailAddress, serialNumber only)' % attr.oid._name)
            if attr.oid in (NameOID.COMMON_NAME, NameOID.EMAIL_ADDRESS) and split_addr(attr.value) not in want:
                raise Problem('badCSR', 'CSR subject %s=%r is not one of the order addresses' %
                              (attr.oid._name, attr.value))
        try:
            ku = csr.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            ku = None
        if ku is None:
            ku = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=kt == 'rsa',
                               data_encipherment=False, key_agreement=kt == 'ec', key_cert_sign=False,
                               crl_sign=False, encipher_only=False, decipher_only=False)
        else:
            bad = []
            if ku.key_cert_sign or ku.crl_sign or ku.data_encipherment:
                bad.append('keyCertSign/cRLSign/dataEncipherment')
            if kt == 'ec' and ku.key_encipherment:
                bad.append('keyEncipherment with an EC key')
            if kt == 'rsa' and ku.key_agreement:
                bad.append('keyAgreement with an RSA key')
            if ku.key_agreement and (ku.encipher_only or ku.decipher_only):
                bad.append('encipherOnly/decipherOnly')
            if not (ku.digital_signature or ku.content_commitment or ku.key_encipherment or ku.key_agreement):
                bad.append('no usable bit')
            if bad:
                raise Problem('badCSR', 'CSR key usage not allowed: %s' % ', '.join(bad))
            ku = x509.KeyUsage(digital_signature=ku.digital_signature, content_commitment=ku.content_commitment,
                               key_encipherment=ku.key_encipherment, data_encipherment=False,
                               key_agreement=ku.key_agreement, key_cert_sign=False, crl_sign=False,
                               encipher_only=False, decipher_only=False)
        try:
            bc = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
            if bc.ca:
                raise Problem('badCSR', 'CSR asks for CA:TRUE')
        except x509.ExtensionNotFound:
            pass
        try:
            eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if list(eku) != [ExtendedKeyUsageOID.EMAIL_PROTECTION]:
                raise Problem('badCSR', 'CSR extended key usage must be emailProtection only')
        except x509.ExtensionNotFound:
            pass
        return csr, emails, ku, csr.subject

    def h_cert(self, ctx, cid, accept):
        with self.lock:
            c = self.certs.get(cid)
            if c is None:
                raise Problem('malformed', 'no such certificate', status=404)
            self.owned(ctx, c, 'certificate')
            if ctx.payload is not None:
                raise Problem('malformed', 'a certificate is read with POST-as-GET (empty payload)')
            o = self.orders[c.order]
            if o.status != 'valid':
                raise Problem('malformed', 'certificate is not available yet', status=404)
        if accept:
            types = [t.split(';')[0].strip().lower() for t in accept.split(',')]
            if not any(t in ('application/pem-certificate-chain', '*/*', 'application/*') for t in types):
                raise Problem('malformed', 'only application/pem-certificate-chain is offered (Accept: %s)' %
                              accept, status=406)
        return 200, c.pem.encode('ascii'), [('Content-Type', 'application/pem-certificate-chain')]

    def h_revoke(self, ctx):
        p = ctx.payload
        if p is None or not isinstance(p.get('certificate'), str):
            raise Problem('malformed', 'revokeCert needs {"certificate": "<base64url DER>"}')
        der = b64u_decode(p['certificate'], 'certificate')
        reason = p.get('reason', 0)
        if not isinstance(reason, int) or isinstance(reason, bool):
            raise Problem('malformed', 'reason must be an integer')
        with self.lock:
            c = next((c for c in self.certs.values() if c.der == der), None)
            if c is None:
                raise Problem('malformed', 'certificate was not issued by this CA', status=404)
            if 'jwk' in ctx.hdr:
                spki = c.leaf.public_key().public_bytes(serialization.Encoding.DER,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
                if spki != ctx.key.spki:
                    raise Problem('unauthorized', 'jwk is not the certificate key')
            else:
                self.owned(ctx, c, 'certificate')
            if reason not in (0, 1, 3, 4, 5):
                raise Problem('badRevocationReason', 'reason %d is not allowed' % reason)
            if c.revoked:
                raise Problem('alreadyRevoked', 'certificate is already revoked')
            c.revoked = True
        self.events.emit('certificate-revoked', account=c.account, order=c.order, certificate=c.id,
                         reason=reason)
        return 200, b'', []

    def h_key_change(self, ctx):
        inner = ctx.payload
        if not isinstance(inner, dict):
            raise Problem('malformed', 'keyChange payload must be a JWS')
        for k in ('protected', 'payload', 'signature'):
            if not isinstance(inner.get(k), str):
                raise Problem('malformed', 'inner JWS lacks %s' % k)
        if set(inner) != {'protected', 'payload', 'signature'}:
            raise Problem('malformed', 'inner JWS has unexpected members')
        ih = strict_json(b64u_decode(inner['protected'], 'inner protected'), 'inner protected header')
        if not isinstance(ih, dict) or 'jwk' not in ih or 'kid' in ih:
            raise Problem('malformed', 'inner JWS must carry jwk (the new key) and no kid')
        if 'nonce' in ih:
            raise Problem('malformed', 'inner JWS must not carry a nonce')
        if ih.get('url') != ctx.hdr['url']:
            raise Problem('malformed', 'inner JWS url differs from the outer url')
        alg = ih.get('alg')
        if alg not in self.cfg.algs:
            raise Problem('badSignatureAlgorithm', 'inner alg %r not supported' % alg,
                          extra={'algorithms': self.cfg.algs})
        newkey = PubKey(ih['jwk'])
        newkey.check_alg(alg)
        if not newkey.verify(alg, b64u_decode(inner['signature'], 'inner signature'),
                             (inner['protected'] + '.' + inner['payload']).encode('ascii')):
            raise Problem('malformed', 'inner JWS signature verification failed')
        ip = strict_json(b64u_decode(inner['payload'], 'inner payload'), 'inner payload')
        a = ctx.account
        if not isinstance(ip, dict) or ip.get('account') != self.url('acct', a.id):
            raise Problem('malformed', 'inner payload account does not match kid')
        try:
            old = PubKey(ip.get('oldKey'))
        except Problem:
            raise Problem('malformed', 'inner payload oldKey is not a valid JWK')
        if old.thumb != a.key.thumb:
            raise Problem('malformed', 'oldKey is not the current account key')
        with self.lock:
            other = self.by_thumb.get(newkey.thumb)
            if other is not None:
                raise Problem('malformed', 'new key is already in use by an account', status=409,
                              headers=[('Location', self.url('acct', other))])
            del self.by_thumb[a.key.thumb]
            a.key = newkey
            self.by_thumb[newkey.thumb] = a.id
        self.events.emit('account-key-changed', account=a.id, thumbprint=newkey.thumb)
        return 200, self.account_json(a), []


class POP3From(poplib.POP3):
    """poplib.POP3 connecting from a chosen source address."""

    def __init__(self, src, *a, **k):
        self.src = src
        super().__init__(*a, **k)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.src, 0) if self.src else None)


class POP3SSLFrom(poplib.POP3_SSL):
    def __init__(self, src, *a, **k):
        self.src = src
        super().__init__(*a, **k)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self.src, 0) if self.src else None)
        return self.context.wrap_socket(sock, server_hostname=self.host)


def fmt_secs(s):
    return str(int(s)) if float(s).is_integer() else str(int(s + 0.999))


def b64_lines(data):
    """base64 in lines of 76 characters (RFC 2045), each ending in CRLF."""
    t = base64.b64encode(data)
    return b''.join(t[i:i + 76] + b'\r\n' for i in range(0, len(t), 76))


def tamper_body(msg):
    """One letter of the challenge text changed (same length), where the text is: in the body, or inside
    the base64 CMS of an opaque S/MIME mail."""
    a, b = b'generated ACME challenge', b'generated ACME challengE'
    if a in msg:
        return msg.replace(a, b, 1)
    head, sep, body = msg.partition(b'\r\n\r\n')
    der = base64.b64decode(body)
    assert a in der
    return head + sep + b64_lines(der.replace(a, b, 1))


def decode_subject(raw):
    raw = re.sub(r'\r?\n(?=[ \t])', '', raw or '')
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except Exception:
        return raw


# ---------------------------------------------------------------------------
# HTTP(S) front end
# ---------------------------------------------------------------------------
ROUTES = [
    (re.compile(r'^/directory$'), 'directory'),
    (re.compile(r'^/new-nonce$'), 'new-nonce'),
    (re.compile(r'^/new-account$'), 'new-account'),
    (re.compile(r'^/new-order$'), 'new-order'),
    (re.compile(r'^/revoke-cert$'), 'revoke-cert'),
    (re.compile(r'^/key-change$'), 'key-change'),
    (re.compile(r'^/acct/([A-Za-z0-9_-]+)$'), 'acct'),
    (re.compile(r'^/acct/([A-Za-z0-9_-]+)/orders$'), 'orders'),
    (re.compile(r'^/order/([A-Za-z0-9_-]+)$'), 'order'),
    (re.compile(r'^/order/([A-Za-z0-9_-]+)/finalize$'), 'finalize'),
    (re.compile(r'^/authz/([A-Za-z0-9_-]+)$'), 'authz'),
    (re.compile(r'^/chall/([A-Za-z0-9_-]+)$'), 'chall'),
    (re.compile(r'^/cert/([A-Za-z0-9_-]+)$'), 'cert'),
    (re.compile(r'^/terms$'), 'terms'),
]
MAX_BODY = 256 * 1024


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'acme_smime-test-CA/1'
    sys_version = ''
    timeout = 30
    ca = None   # set on the class

    def log_message(self, fmt, *args):
        log.info('%s %s', self.client_address[0], fmt % args)

    def send_error(self, code, message=None, explain=None):
        # errors raised by BaseHTTPRequestHandler itself (bad request line, ...)
        try:
            p = Problem('malformed', message or 'HTTP error %d' % code, status=code)
            self.close_connection = True
            self.respond(p.status, json.dumps(p.doc()).encode(), 'application/problem+json', [], None)
        except Exception:
            pass

    def do_GET(self):
        self.dispatch('GET')

    def do_HEAD(self):
        self.dispatch('HEAD')

    def do_POST(self):
        self.dispatch('POST')

    def do_PUT(self):
        self.dispatch('PUT')

    def do_DELETE(self):
        self.dispatch('DELETE')

    def do_PATCH(self):
        self.dispatch('PATCH')

    def do_OPTIONS(self):
        self.dispatch('OPTIONS')

    def read_body(self):
        te = self.headers.get('Transfer-Encoding')
        if te:
            if te.strip().lower() != 'chunked':
                raise Problem('malformed', 'unsupported Transfer-Encoding %r' % te, status=501)
            out = b''
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise Problem('malformed', 'truncated chunked body')
                try:
                    n = int(line.split(b';')[0].strip(), 16)
                except ValueError:
                    raise Problem('malformed', 'bad chunk size')
                if n == 0:
                    while self.rfile.readline(1024) not in (b'\r\n', b'\n', b''):
                        pass
                    return out
                if len(out) + n > MAX_BODY:
                    raise Problem('malformed', 'request body too large', status=413)
                out += self.rfile.read(n)
                self.rfile.readline(1024)
        cl = self.headers.get('Content-Length')
        if cl is None:
            raise Problem('malformed', 'POST needs Content-Length', status=411)
        try:
            n = int(cl)
        except ValueError:
            raise Problem('malformed', 'bad Content-Length')
        if n < 0 or n > MAX_BODY:
            raise Problem('malformed', 'request body too large', status=413)
        data = self.rfile.read(n)
        if len(data) != n:
            raise Problem('malformed', 'truncated body')
        return data

    def dispatch(self, method):
        ca = self.ca
        endpoint = None
        try:
            path = urllib.parse.urlsplit(self.path).path
            arg = None
            for rx, ep in ROUTES:
                m = rx.match(path)
                if m:
                    endpoint = ep
                    arg = m.group(1) if m.groups() else None
                    break
            body = None
            if method == 'POST':
                body = self.read_body()   # always drain, keeps keep-alive sane
            if endpoint is None:
                raise Problem('malformed', 'no such resource %s' % path, status=404)
            if not self.headers.get('User-Agent'):
                if ca.cfg.require_ua:
                    raise Problem('malformed', 'requests must carry User-Agent (RFC 8555 section 6.1)')
                ca.events.emit('warning', detail='request without User-Agent: %s %s' % (method, path))
            if endpoint in ('directory', 'new-nonce', 'terms'):
                if method not in ('GET', 'HEAD') or (endpoint == 'directory' and method == 'HEAD'):
                    raise Problem('malformed', '%s is not allowed on %s' % (method, path), status=405,
                                  headers=[('Allow', 'GET, HEAD' if endpoint == 'new-nonce' else 'GET')])
                self.fault_before(endpoint)
                if endpoint == 'directory':
                    return self.send_json(200, ca.directory(), [], endpoint, index=False)
                if endpoint == 'terms':
                    return self.respond(200, b'Test CA terms: for tests only.\n', 'text/plain', [], endpoint)
                return self.respond(200 if method == 'HEAD' else 204, b'', None,
                                    [('Cache-Control', 'no-store')], endpoint)
            if method != 'POST':
                raise Problem('malformed', '%s is not allowed on %s; read resources with POST-as-GET' %
                              (method, path), status=405, headers=[('Allow', 'POST')])
            ctype = (self.headers.get('Content-Type') or '').split(';')[0].strip().lower()
            if ctype != 'application/jose+json':
                raise Problem('malformed', 'Content-Type must be application/jose+json (got %r)' %
                              self.headers.get('Content-Type'), status=415)
            req_url = self.path if self.path.startswith('https://') else ca.base + self.path
            ctx = ca.verify_jws(body, req_url, endpoint)
            self.fault_before(endpoint)
            if endpoint == 'new-account':
                st, out, hdrs = ca.h_new_account(ctx)
            elif ctx.account is None:
                if endpoint != 'revoke-cert':
                    raise Problem('accountDoesNotExist', 'no account for this key')
                st, out, hdrs = ca.h_revoke(ctx)
            elif endpoint == 'revoke-cert':
                st, out, hdrs = ca.h_revoke(ctx)
            elif endpoint == 'key-change':
                st, out, hdrs = ca.h_key_change(ctx)
            elif endpoint == 'new-order':
                st, out, hdrs = ca.h_new_order(ctx)
            elif endpoint == 'acct':
                st, out, hdrs = ca.h_acct(ctx, arg)
            elif endpoint == 'orders':
                st, out, hdrs = ca.h_orders(ctx, arg)
            elif endpoint == 'order':
                st, out, hdrs = ca.h_order(ctx, arg)
            elif endpoint == 'finalize':
                st, out, hdrs = ca.h_finalize(ctx, arg)
            elif endpoint == 'authz':
                st, out, hdrs = ca.h_authz(ctx, arg)
            elif endpoint == 'chall':
                st, out, hdrs = ca.h_chall(ctx, arg)
            elif endpoint == 'cert':
                st, out, hdrs = ca.h_cert(ctx, arg, self.headers.get('Accept'))
            else:
                raise Problem('malformed', 'no such resource', status=404)
            if isinstance(out, bytes):
                ct = next((v for k, v in hdrs if k == 'Content-Type'), None)
                hdrs = [(k, v) for k, v in hdrs if k != 'Content-Type']
                return self.respond(st, out, ct, hdrs, endpoint)
            return self.send_json(st, out, hdrs, endpoint)
        except Problem as p:
            log.info('problem %s %s: %s %s', method, self.path, p.kind, p.detail)
            return self.respond(p.status, json.dumps(p.doc()).encode(), 'application/problem+json', p.headers,
                                endpoint, fault_ok=False)
        except (ConnectionError, socket.timeout, ssl.SSLError):
            self.close_connection = True
        except Exception as e:
            log.error('internal error on %s %s: %s\n%s', method, self.path, e, traceback.format_exc())
            p = Problem('serverInternal', 'internal error: %s' % e)
            try:
                self.respond(500, json.dumps(p.doc()).encode(), 'application/problem+json', [], endpoint,
                             fault_ok=False)
            except Exception:
                self.close_connection = True

    def fault_before(self, endpoint):
        ca = self.ca
        if ca.faults.take('500', endpoint):
            ca.events.emit('fault', kind='500', endpoint=endpoint)
            raise Problem('serverInternal', 'injected fault (CA_FAULT_500)', status=500)
        if ca.faults.take('429', endpoint):
            ca.events.emit('fault', kind='429', endpoint=endpoint)
            raise Problem('rateLimited', 'injected fault (CA_FAULT_429): try again later', status=429,
                          headers=[('Retry-After', fmt_secs(ca.cfg.fault_retry_after))])

    def send_json(self, status, obj, headers, endpoint, index=True):
        return self.respond(status, json.dumps(obj, indent=2).encode(), 'application/json', headers, endpoint,
                            index=index)

    def respond(self, status, body, ctype, headers, endpoint, index=True, fault_ok=True):
        ca = self.ca
        self.send_response(status)
        self.send_header('Replay-Nonce', ca.nonces.new())
        if ctype:
            self.send_header('Content-Type', ctype)
        if status != 204:
            self.send_header('Content-Length', str(len(body)))
        if index:
            self.send_header('Link', '<%s>;rel="index"' % ca.url('directory'))
        for k, v in headers:
            self.send_header(k, v)
        if self.command == 'HEAD':
            self.end_headers()
            return
        if fault_ok and endpoint and ca.faults.take('drop', endpoint):
            ca.events.emit('fault', kind='drop', endpoint=endpoint)
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        # headers and body in one write (one TLS record, no Nagle/delayed-ACK stall)
        if not hasattr(self, '_headers_buffer'):
            self._headers_buffer = []
        self._headers_buffer.append(b'\r\n')
        self._headers_buffer.append(body)
        self.wfile.write(b''.join(self._headers_buffer))
        self._headers_buffer = []


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, handler, ctx):
        self.tls = ctx
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        request.settimeout(15)
        try:
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log.info('TLS handshake with %s failed: %s', client_address[0], e)
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        log.warning('connection from %s ended with %s', client_address[0],
                    traceback.format_exc().strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description='RFC 8823 (ACME for S/MIME) test CA.',
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=knob_help())
    ap.add_argument('--dir', required=True, help='state directory (ca.log, ca-events.jsonl, ca/)')
    ap.add_argument('--port', type=int, help='HTTPS port (overrides CA_PORT)')
    ap.add_argument('--host', help='listen address (overrides CA_HOST)')
    args = ap.parse_args()
    env = dict(os.environ)
    if args.port:
        env['CA_PORT'] = str(args.port)
    if args.host:
        env['CA_HOST'] = args.host
    cfg = Config(env)
    if cfg.dkim:
        try:
            importlib.import_module('dkim')   # python3-dkim
        except ImportError:
            raise SystemExit('CA_DKIM=1 needs python3-dkim (and python3-nacl for ed25519)')
    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    logging.basicConfig(filename=os.path.join(d, 'ca.log'), level=logging.INFO,
                        format='%(asctime)s.%(msecs)03d %(threadName)s %(levelname)s %(message)s',
                        datefmt='%H:%M:%S')
    ca = CA(cfg, d)
    ready = os.path.join(d, 'ca', 'ready')
    if os.path.exists(ready):
        os.unlink(ready)
    ca.pki.setup()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.tls_max == '1.2':
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(ca.pki.p('https-cert.pem'), ca.pki.p('https-cert.key'))
    Handler.ca = ca
    srv = Server((cfg.host, cfg.port), Handler, ctx)

    def bye(*_):
        log.info('stopping (signal)')
        logging.shutdown()
        os._exit(0)
    signal.signal(signal.SIGTERM, bye)
    signal.signal(signal.SIGINT, bye)
    threading.Thread(target=ca.mailbox_loop, name='mailbox', daemon=True).start()
    log.info('listening on %s, directory %s, settings %s', cfg.port, ca.url('directory'),
             json.dumps(cfg.public(), sort_keys=True))
    ca.events.emit('ca-started', directory=ca.url('directory'), pid=os.getpid(),
                   settings=cfg.public())
    write_pem(ready, (ca.url('directory') + '\n').encode())
    srv.serve_forever(poll_interval=0.5)


if __name__ == '__main__':
    main()
