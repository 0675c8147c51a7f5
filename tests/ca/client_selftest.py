#!/usr/bin/python3
"""client_selftest.py - an independent ACME + RFC 8823 client in Python that
proves the test CA (acme_ca.py) and the mail stack work end to end.

Reads the variables of DIR/env (tests/testenv start DIR) from the
environment. Run with Debian's /usr/bin/python3.

  client_selftest.py --phase main    the CA as started by default (STRING)
  client_selftest.py --phase bytes   a CA restarted with CA_CONCAT=bytes
                                     and more (see tests/ca/selftest.sh)
  client_selftest.py --phase faults  a CA restarted with the fault knobs set by
                                     tests/ca/selftest.sh (see FAULT_ENV there)
  client_selftest.py --phase smime   CA_SMIME_SIGN=1 (+ DKIM, 1024-bit key from
                                     pebble-challtestsrv) and S/MIME decoys
  client_selftest.py --phase opaque  CA_SMIME_SIGN=opaque, CA_DKIM=0 (the
                                     2048-bit DKIM record from fake_dns.py)

A challenge mail passes when its S/MIME signature verifies (OpenSSL, anchor
SMIME_CA_FILE, signer rfc822Name = From, signed message/rfc822 copy with the
outer From, To and Subject) or its DKIM signature does.

Prints one PASS/FAIL line per check and, last, "N passed, N failed".
"""
import argparse
import base64
import email
import email.header
import email.policy
import email.utils
import hashlib
import http.client
import json
import os
import poplib
import re
import secrets
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.hazmat.primitives.asymmetric import ec, rsa, padding, utils as asym_utils
from cryptography.x509.oid import ExtendedKeyUsageOID

E = os.environ
ERR = 'urn:ietf:params:acme:error:'
passed = failed = 0
VERBOSE = False


def check(name, cond, extra=''):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
    show = extra != '' and (not cond or VERBOSE)
    print(('PASS ' if cond else 'FAIL ') + name + (('  [' + str(extra)[:600] + ']') if show else ''), flush=True)
    return cond


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def b64u_dec(text):
    text = re.sub(r'\s+', '', text).rstrip('=')
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


def hostport(v):
    h, _, p = v.rpartition(':')
    return h, int(p)


# ---------------------------------------------------------------------------
# account keys and JWS
# ---------------------------------------------------------------------------
class Key:
    def __init__(self, kind='ES256'):
        self.alg = kind
        if kind == 'ES256':
            self.priv, self.size = ec.generate_private_key(ec.SECP256R1()), 32
        elif kind == 'ES384':
            self.priv, self.size = ec.generate_private_key(ec.SECP384R1()), 48
        elif kind == 'RS256':
            self.priv, self.size = rsa.generate_private_key(65537, 2048), None
        else:
            raise ValueError(kind)
        pub = self.priv.public_key()
        if self.size:
            n = pub.public_numbers()
            crv = 'P-256' if self.size == 32 else 'P-384'
            self.jwk = {'crv': crv, 'kty': 'EC', 'x': b64u(n.x.to_bytes(self.size, 'big')),
                        'y': b64u(n.y.to_bytes(self.size, 'big'))}
        else:
            n = pub.public_numbers()
            self.jwk = {'e': b64u(n.e.to_bytes((n.e.bit_length() + 7) // 8, 'big')), 'kty': 'RSA',
                        'n': b64u(n.n.to_bytes((n.n.bit_length() + 7) // 8, 'big'))}
        canon = json.dumps(self.jwk, sort_keys=True, separators=(',', ':'))
        self.thumb = b64u(hashlib.sha256(canon.encode()).digest())

    def sign(self, data):
        if self.size:
            h = hashes.SHA256() if self.size == 32 else hashes.SHA384()
            r, s = asym_utils.decode_dss_signature(self.priv.sign(data, ec.ECDSA(h)))
            return r.to_bytes(self.size, 'big') + s.to_bytes(self.size, 'big')
        return self.priv.sign(data, padding.PKCS1v15(), hashes.SHA256())


def jws(key, url, payload, nonce, kid=None, extra_hdr=None, alg=None):
    hdr = {'alg': alg or key.alg, 'nonce': nonce, 'url': url}
    if kid:
        hdr['kid'] = kid
    else:
        hdr['jwk'] = key.jwk
    if extra_hdr:
        hdr.update(extra_hdr)
    p = b64u(json.dumps(hdr).encode())
    pl = '' if payload is None else b64u(json.dumps(payload).encode())
    sig = key.sign((p + '.' + pl).encode())
    return {'protected': p, 'payload': pl, 'signature': b64u(sig)}


# ---------------------------------------------------------------------------
# HTTP + ACME
# ---------------------------------------------------------------------------
class Resp:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def hdr(self, name):
        return self.headers.get(name.lower())

    def hdrs(self, name):
        return [v for k, v in self.raw_headers if k.lower() == name.lower()]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def ptype(self):
        j = self.json()
        return (j or {}).get('type', '') if isinstance(j, dict) else ''


class Acme:
    def __init__(self, directory_url, cafile, key=None):
        self.dir_url = directory_url
        u = urllib.parse.urlsplit(directory_url)
        self.host, self.port = u.hostname, u.port
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.key = key or Key('ES256')
        self.kid = None
        self.nonce = None
        self.stats = {'badNonce': 0, '429': 0, '500': 0, 'drop': 0, 'retry_after': [], 'processing': 0}
        self.d = self.request('GET', directory_url).json()

    def request(self, method, url, body=None, ctype='application/jose+json', accept=None, ua=True):
        u = urllib.parse.urlsplit(url)
        path = u.path + ('?' + u.query if u.query else '')
        c = http.client.HTTPSConnection(u.hostname, u.port, context=self.ctx, timeout=30)
        try:
            hdrs = {}
            if ua:
                hdrs['User-Agent'] = 'acme_smime-client-selftest/1'
            if body is not None:
                hdrs['Content-Type'] = ctype
            if accept:
                hdrs['Accept'] = accept
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            resp = Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
            resp.raw_headers = r.getheaders()
        finally:
            c.close()
        n = resp.hdr('Replay-Nonce')
        if n:
            self.nonce = n
        return resp

    def new_nonce(self):
        r = self.request('HEAD', self.d['newNonce'])
        return r.hdr('Replay-Nonce')

    def post(self, url, payload, use_jwk=False, accept=None, key=None, retries=True):
        """Signed POST with badNonce/429/500/dropped-connection handling."""
        key = key or self.key
        attempts = bad_nonces = 0
        while True:
            attempts += 1
            if not self.nonce:
                self.nonce = self.new_nonce()
            nonce, self.nonce = self.nonce, None
            body = json.dumps(jws(key, url, payload, nonce, None if use_jwk else self.kid)).encode()
            try:
                r = self.request('POST', url, body, accept=accept)
            except (http.client.HTTPException, ConnectionError, ssl.SSLError, OSError) as e:
                self.stats['drop'] += 1
                if not retries or attempts > 8:
                    raise
                if VERBOSE:
                    print('  (connection dropped: %s; retrying)' % e)
                time.sleep(0.1)
                continue
            if not retries:
                return r
            t = r.ptype()
            if r.status == 400 and t == ERR + 'badNonce' and bad_nonces < 60:
                self.stats['badNonce'] += 1
                bad_nonces += 1
                continue
            if attempts - bad_nonces > 12:
                return r
            if r.status == 429 or (r.status == 503 and r.hdr('Retry-After')):
                self.stats['429'] += 1
                ra = r.hdr('Retry-After')
                self.stats['retry_after'].append(ra)
                time.sleep(min(float(ra or 1), 5))
                continue
            if r.status == 500:
                self.stats['500'] += 1
                time.sleep(0.2)
                continue
            return r

    def get(self, url, accept=None):
        return self.post(url, None, accept=accept)

    def account(self, tos=True, contact=None):
        r = self.post(self.d['newAccount'], {'termsOfServiceAgreed': tos,
                                             'contact': contact or []}, use_jwk=True)
        if r.status in (200, 201):
            self.kid = r.hdr('Location')
        return r

    def poll(self, url, want, timeout=30):
        deadline = time.time() + timeout
        while True:
            r = self.get(url)
            j = r.json() or {}
            if j.get('status') in want or time.time() > deadline:
                return r
            ra = r.hdr('Retry-After')
            if j.get('status') == 'processing':
                self.stats['processing'] += 1
                if ra:
                    self.stats['retry_after'].append(ra)
            time.sleep(min(float(ra), 3) if ra else 0.2)


# ---------------------------------------------------------------------------
# mail
# ---------------------------------------------------------------------------
def mail_ctx():
    c = ssl.create_default_context(cafile=E['MAIL_CA_FILE'])
    return c


class Mailbox:
    def __init__(self, user, pass_file, mode='stls'):
        self.user, self.pw, self.mode = user, open(pass_file).read().strip(), mode

    def connect(self):
        if self.mode == 'pop3s':
            h, p = hostport(E['POP3S'])
            c = poplib.POP3_SSL(h, p, context=mail_ctx(), timeout=20)
        else:
            h, p = hostport(E['POP3_STLS'] if self.mode == 'stls' else E['POP3_PLAIN'])
            c = poplib.POP3(h, p, timeout=20)
            if self.mode == 'stls':
                c.stls(mail_ctx())
        c.user(self.user)
        c.pass_(self.pw)
        return c

    def uidls(self):
        c = self.connect()
        try:
            return {l.decode().split()[1] for l in c.uidl()[1]}
        finally:
            c.quit()

    def new_messages(self, exclude):
        c = self.connect()
        try:
            out = []
            for l in c.uidl()[1]:
                num, uid = l.decode().split()
                if uid in exclude:
                    continue
                out.append((uid, b'\r\n'.join(c.retr(int(num))[1]) + b'\r\n'))
            return out
        finally:
            c.quit()


def dkim_dns(name, timeout=5):
    want = '%s._domainkey.%s.' % (E['DKIM_SELECTOR'], E['DKIM_DOMAIN'])
    n = name.decode() if isinstance(name, bytes) else name
    if n.rstrip('.') + '.' == want:
        return open(E['DKIM_TXT_FILE'], 'rb').read().strip()
    return None


def decode_subject(raw):
    raw = re.sub(r'\r?\n(?=[ \t])', '', raw or '')
    return str(email.header.make_header(email.header.decode_header(raw)))


DKIM_MUST = {'from', 'to', 'subject', 'date', 'message-id', 'auto-submitted'}


def unfold(v):
    return re.sub(r'\s+', ' ', re.sub(r'\r?\n(?=[ \t])', '', v or '')).strip()


def is_smime(msg):
    ct = msg.get_content_type()
    return ct == 'multipart/signed' or (ct == 'application/pkcs7-mime' and
                                        (msg.get_param('smime-type') or '').lower() == 'signed-data')


def smime_parts(raw, msg):
    """(form, signed content bytes or None, CMS DER) of an S/MIME mail, split from the raw bytes as
    RFC 1847 says: the first part runs up to the CRLF before the next delimiter."""
    head, _, body = raw.partition(b'\r\n\r\n')
    if msg.get_content_type() == 'application/pkcs7-mime':
        return 'opaque', None, base64.b64decode(body)
    b = ('--' + msg.get_boundary()).encode()
    first = body.index(b + b'\r\n') + len(b) + 2
    end = body.index(b'\r\n' + b + b'\r\n', first)
    content = body[first:end]
    sig = body[end + len(b) + 4:]
    sig = sig[:sig.index(b'\r\n' + b + b'--')]
    shead, _, sbody = sig.partition(b'\r\n\r\n')
    if b'application/pkcs7-signature' not in shead.lower() or b'base64' not in shead.lower():
        raise ValueError('second part is not a base64 application/pkcs7-signature')
    return 'detached', content, base64.b64decode(sbody)


def smime_check(raw, msg, from_addr):
    """Verify an S/MIME challenge mail with OpenSSL (the signature over the exact signed bytes, the
    signer chain to SMIME_CA_FILE for S/MIME signing), the signer's rfc822Name = From, and header
    protection: a signed message/rfc822 whose From, To and Subject are the outer ones.
    Returns (None, info) when it holds, else (reason, info)."""
    info = {}
    if not E.get('SMIME_CA_FILE'):
        return 'S/MIME: no anchor (SMIME_CA_FILE)', info
    try:
        form, content, der = smime_parts(raw, msg)
    except (ValueError, TypeError) as e:
        return 'S/MIME structure: %s' % e, info
    info['form'] = form
    if form == 'detached':
        info['micalg'] = (msg.get_param('micalg') or '').lower()
        info['protocol'] = (msg.get_param('protocol') or '').lower()
    with tempfile.TemporaryDirectory() as td:
        fder, fcontent, fsigner = (os.path.join(td, n) for n in ('sig.der', 'content', 'signer.pem'))
        open(fder, 'wb').write(der)
        cmd = ['openssl', 'cms', '-verify', '-binary', '-inform', 'DER', '-in', fder, '-CAfile',
               E['SMIME_CA_FILE'], '-purpose', 'smimesign', '-signer', fsigner]
        if content is not None:
            open(fcontent, 'wb').write(content)
            cmd += ['-content', fcontent, '-out', os.devnull]
        else:
            cmd += ['-out', fcontent]
        r = subprocess.run(cmd, capture_output=True)
        if r.returncode != 0:
            return 'S/MIME signature does not verify: %s' % r.stderr.decode(errors='replace').strip()[:200], info
        signed = open(fcontent, 'rb').read()
        signer = x509.load_pem_x509_certificate(open(fsigner, 'rb').read())
    info['cms_certs'] = pkcs7.load_der_pkcs7_certificates(der)
    info['signer'] = signer
    try:
        san = signer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.RFC822Name)
    except x509.ExtensionNotFound:
        names = []
    if not any(n.rpartition('@')[0] == from_addr.rpartition('@')[0] and
               n.rpartition('@')[2].lower() == from_addr.rpartition('@')[2].lower() for n in names):
        return 'S/MIME signer %r is not for From %s' % (names, from_addr), info
    ehead, _, inner = signed.partition(b'\r\n\r\n')
    if not ehead.lower().startswith(b'content-type: message/rfc822'):
        return 'S/MIME signed entity is not message/rfc822 (no header protection)', info
    im = email.message_from_bytes(inner, policy=email.policy.compat32)
    info['inner'] = im
    for h in ('From', 'To', 'Subject'):
        if unfold(im.get(h)) != unfold(msg.get(h)):
            return 'S/MIME protected %s differs: %r vs %r' % (h, im.get(h), msg.get(h)), info
    return None, info


RELAXED = False      # skip the Auto-Submitted, Message-ID, Date and DKIM checks (lax CAs)


def check_challenge_mail(raw, chall, ident, not_before):
    """Return (None, info) when raw is an acceptable challenge mail, else (reason, info)."""
    import dkim
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    info = {'raw': raw}
    subj = decode_subject(msg.get('Subject', ''))
    info['subject'] = subj
    m = re.match(r'^ACME:(.*)$', subj.strip(), re.S)
    if not m:
        return 'subject is not "ACME: ..." (%r)' % subj, info
    info['token1'] = re.sub(r'\s+', '', m.group(1))
    froms = email.utils.getaddresses(msg.get_all('From') or [])
    if len(froms) != 1 or froms[0][1].lower() != chall['from'].lower():
        return 'From %r is not the challenge from %s' % (froms, chall['from']), info
    tos = [a for _, a in email.utils.getaddresses(msg.get_all('To') or [])]
    if not any(t.lower() == ident.lower() for t in tos):
        return 'To %r does not name %s' % (tos, ident), info
    info['message_id'] = (msg.get('Message-ID') or '').strip() or None
    if RELAXED:
        return None, info
    autos = msg.get_all('Auto-Submitted') or []
    if len(autos) != 1 or autos[0].split(';')[0].strip().lower() != 'auto-generated':
        return 'Auto-Submitted is %r' % autos, info
    if not info['message_id']:
        return 'no Message-ID', info
    date = msg.get('Date')
    if not date:
        return 'no Date', info
    ts = email.utils.parsedate_to_datetime(date).timestamp()
    if ts < not_before:
        return 'stale: Date %s is before the order' % date, info
    sigs = msg.get_all('DKIM-Signature') or []
    if is_smime(msg):
        why, info['smime'] = smime_check(raw, msg, chall['from'])
        info['smime_why'] = why
        if why is None:
            info['proof'] = 'smime'
            # a DKIM signature too: verified for the record, not needed
            info['dkim_ok'] = bool(sigs) and bool(dkim.verify(raw, dnsfunc=dkim_dns))
            return None, info
        if not sigs:
            return why, info
    if not sigs:
        return 'not DKIM-signed', info
    tags = dict(t.strip().split('=', 1) for t in re.sub(r'\s+', '', sigs[0]).split(';') if '=' in t)
    if tags.get('d', '').lower() != chall['from'].rpartition('@')[2].lower():
        return 'DKIM d=%s is not the From domain' % tags.get('d'), info
    h = {x.lower() for x in tags.get('h', '').split(':')}
    if not DKIM_MUST <= h:
        return 'DKIM h= lacks %s' % (DKIM_MUST - h), info
    if not dkim.verify(raw, dnsfunc=dkim_dns):
        return 'DKIM signature does not verify', info
    info['h'] = h
    info['proof'] = 'dkim'
    info['dkim_ok'] = True
    return None, info


ANSWERED = set()     # Message-IDs of the challenge mails this client has answered


def wait_challenge_mail(box, snapshot, chall, ident, not_before, timeout=20):
    """Poll box for new messages until one passes check_challenge_mail. Returns (info, ignored)."""
    deadline = time.time() + timeout
    seen, ignored = set(snapshot), []
    while time.time() < deadline:
        for uid, raw in box.new_messages(seen):
            seen.add(uid)
            why, info = check_challenge_mail(raw, chall, ident, not_before)
            if why is None and info['message_id'] and info['message_id'] in ANSWERED:
                why = 'already answered: %s' % info['message_id']
            if why is None:
                info['uid'] = uid
                return info, ignored
            ignored.append((uid, why, info))
        time.sleep(0.15)
    return None, ignored


def digest(token1, token2, thumb, mode='string'):
    if mode == 'bytes':
        token = b64u(b64u_dec(token1) + b64u_dec(token2))
    else:
        token = token1 + token2
    return b64u(hashlib.sha256((token + '.' + thumb).encode()).digest())


def response_mail(ident, to, token1, msgid, dig, from_form='angle'):
    frm = {'angle': '<%s>' % ident, 'bare': ident, 'name': 'Device <%s>' % ident}[from_form]
    lines = ['From: ' + frm, 'To: ' + to, 'Subject: Re: ACME: ' + token1,
             'Date: ' + email.utils.formatdate(localtime=True),
             'Message-ID: <%s@%s>' % (secrets.token_hex(8), ident.rpartition('@')[2])]
    if msgid:
        lines += ['In-Reply-To: ' + msgid, 'References: ' + msgid]
    lines += ['Auto-Submitted: auto-replied', 'MIME-Version: 1.0',
              'Content-Type: text/plain; charset=US-ASCII', 'Content-Transfer-Encoding: 7bit']
    body = '-----BEGIN ACME RESPONSE-----\r\n%s\r\n-----END ACME RESPONSE-----\r\n' % dig
    return ('\r\n'.join(lines) + '\r\n\r\n' + body).encode('ascii')


def smtp_send(user, pass_file, rcpt, msg, mode='starttls'):
    pw = open(pass_file).read().strip()
    if mode == 'smtps':
        h, p = hostport(E['SMTPS'])
        s = smtplib.SMTP_SSL(h, p, context=mail_ctx(), local_hostname='device.test', timeout=20)
        s.ehlo()
    else:
        h, p = hostport(E['SMTP_STARTTLS'])
        s = smtplib.SMTP(h, p, local_hostname='device.test', timeout=20)
        s.ehlo()
        s.starttls(context=mail_ctx())
        s.ehlo()
    s.login(user, pw)
    refused = s.sendmail(user, [rcpt], msg)
    s.quit()
    return refused


def answer_mail(info):
    """The response goes to Reply-To if present, else From."""
    msg = email.message_from_bytes(info['raw'], policy=email.policy.compat32)
    rt = email.utils.getaddresses(msg.get_all('Reply-To') or [])
    if rt:
        return rt[0][1]
    return email.utils.getaddresses(msg.get_all('From'))[0][1]


# ---------------------------------------------------------------------------
# CSR and certificate checks
# ---------------------------------------------------------------------------
def make_csr(addrs, key=None, ku='dual'):
    key = key or ec.generate_private_key(ec.SECP256R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, addrs[0])]))
    b = b.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(a) for a in addrs]), critical=False)
    if ku == 'sign':
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), True)
    csr = b.sign(key, hashes.SHA256())
    return key, csr.public_bytes(serialization.Encoding.DER)


def verify_chain(pem, addrs, tag, ku='dual'):
    blocks = re.findall(b'-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?', pem, re.S)
    check('%s: chain is leaf + intermediate' % tag, len(blocks) == 2, len(blocks))
    check('%s: chain has nothing but PEM blocks' % tag, b''.join(blocks) == pem)
    if len(blocks) < 2:
        return
    with tempfile.TemporaryDirectory() as td:
        leaf, inter = os.path.join(td, 'leaf.pem'), os.path.join(td, 'inter.pem')
        open(leaf, 'wb').write(blocks[0])
        open(inter, 'wb').write(blocks[1])
        r = subprocess.run(['openssl', 'verify', '-CAfile', E['TEST_ROOT'], '-untrusted', inter, leaf],
                           capture_output=True, text=True)
        check('%s: openssl verify -CAfile TEST_ROOT -untrusted intermediate' % tag, r.returncode == 0,
              (r.stdout + r.stderr).strip())
        r = subprocess.run(['openssl', 'verify', '-purpose', 'smimesign', '-CAfile', E['TEST_ROOT'],
                            '-untrusted', inter, leaf], capture_output=True, text=True)
        check('%s: openssl verify -purpose smimesign' % tag, r.returncode == 0, (r.stdout + r.stderr).strip())
    cert = x509.load_pem_x509_certificate(blocks[0])
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    check('%s: EKU emailProtection' % tag, list(eku) == [ExtendedKeyUsageOID.EMAIL_PROTECTION])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    got = sorted(san.get_values_for_type(x509.RFC822Name))
    check('%s: SAN rfc822Name = %s' % (tag, ','.join(addrs)), got == sorted(addrs), got)
    k = cert.extensions.get_extension_for_class(x509.KeyUsage)
    if ku == 'sign':
        ok = k.value.digital_signature and not k.value.key_agreement
    else:
        ok = k.value.digital_signature and k.value.key_agreement
    check('%s: key usage (%s) critical' % (tag, ku), k.critical and ok, k.value)
    return cert


# ---------------------------------------------------------------------------
# flows
# ---------------------------------------------------------------------------
def events():
    """The CA's events since its last (re)start."""
    out = []
    with open(E['CA_EVENTS']) as f:
        for line in f:
            e = json.loads(line)
            if e['event'] == 'ca-started':
                out = []
            out.append(e)
    return out


def enroll(acme, idents, boxes, tag, mode='string', pop_mode='stls', smtp_mode='starttls', mail_at='authz',
           wrong_digest=False, from_form='angle', finalize=True, ku='dual', csr_checks=False, respond=True):
    """One order for idents; boxes: {ident: (user, pass_file)}. Returns dict of results."""
    res = {'ok': False}
    mb = {i: Mailbox(boxes[i][0], boxes[i][1], pop_mode) for i in idents}
    snap = {i: mb[i].uidls() for i in idents}
    t0 = time.time()
    r = acme.post(acme.d['newOrder'], {'identifiers': [{'type': 'email', 'value': i} for i in idents]})
    if not check('%s: newOrder 201 + Location' % tag, r.status == 201 and r.hdr('Location'),
                 (r.status, r.body[:200])):
        return res
    order_url, order = r.hdr('Location'), r.json()
    res['order_url'] = order_url
    check('%s: order pending, %d authorization(s)' % (tag, len(idents)),
          order['status'] == 'pending' and len(order['authorizations']) == len(idents))
    if mail_at == 'order':
        # the CA mails at newOrder: the challenge mail must arrive before any authz fetch
        for i in idents:
            deadline = time.time() + 10
            got = []
            while time.time() < deadline and not got:
                got = [raw for _, raw in mb[i].new_messages(snap[i]) if b'ACME: ' in raw or b'?Q?ACME' in raw]
                time.sleep(0.1)
            check('%s: challenge mail for %s arrived before any authorization fetch' % (tag, i), bool(got))
    challs = {}
    for zurl in order['authorizations']:
        z = acme.get(zurl).json()
        ident = z['identifier']['value']
        ch = [c for c in z['challenges'] if c['type'] == 'email-reply-00']
        if not check('%s: authz for %s has one email-reply-00 with from + 43-char token' % (tag, ident),
                     len(ch) == 1 and 'from' in ch[0] and len(ch[0]['token']) == 43 and
                     re.match(r'^[A-Za-z0-9_-]+$', ch[0]['token']), z):
            return res
        challs[ident] = (zurl, ch[0])
    for ident in idents:
        zurl, ch = challs[ident]
        info, ignored = wait_challenge_mail(mb[ident], snap[ident], ch, ident, t0 - 60)
        res.setdefault('ignored', []).extend(ignored)
        if not check('%s: challenge mail for %s fetched over POP3 (%s) and checked (S/MIME or DKIM, headers)' %
                     (tag, ident, pop_mode), info is not None, [w for _, w, _ in ignored]):
            return res
        res.setdefault('mails', {})[ident] = info
        t1 = info['token1']
        check('%s: token-part1 decodes to 32 bytes' % tag, len(b64u_dec(t1)) == 32, t1)
        dig = digest(t1, ch['token'], acme.key.thumb, mode)
        if wrong_digest:
            dig = digest(t1, ch['token'], Key('ES256').thumb, mode)
        msg = response_mail(ident, answer_mail(info), t1, info['message_id'], dig, from_form)
        ANSWERED.add(info['message_id'])
        if not respond:
            continue
        refused = smtp_send(boxes[ident][0], boxes[ident][1], answer_mail(info), msg, smtp_mode)
        check('%s: response for %s submitted (%s + AUTH)' % (tag, ident, smtp_mode), refused == {})
    for ident in idents:
        zurl, ch = challs[ident]
        r = acme.post(ch['url'], {})
        check('%s: POST {} to the challenge -> 200 processing/valid, Link rel=up' % tag,
              r.status == 200 and (r.json() or {}).get('status') in ('processing', 'valid', 'invalid') and
              any('rel="up"' in v and zurl in v for v in r.hdrs('Link')), (r.status, r.body[:200]))
    states = {}
    for ident in idents:
        zurl, ch = challs[ident]
        z = acme.poll(zurl, ('valid', 'invalid', 'deactivated', 'expired', 'revoked')).json()
        states[ident] = z
    res['authz'] = states
    if any(z['status'] != 'valid' for z in states.values()):
        res['order'] = acme.get(order_url).json()
        return res
    r = acme.poll(order_url, ('ready', 'invalid'))
    if not check('%s: order ready after all authorizations are valid' % tag, r.json()['status'] == 'ready',
                 r.json()):
        return res
    if not finalize:
        res['ok'] = True
        return res
    if csr_checks:
        _, bad = make_csr(idents[:1] + ['other@' + idents[0].rpartition('@')[2]])
        r = acme.post(order['finalize'], {'csr': b64u(bad)})
        check('%s: finalize with a CSR whose SANs differ from the order -> badCSR' % tag,
              r.status == 400 and r.ptype() == ERR + 'badCSR', r.body[:200])
        _, bad = make_csr(idents, key=acme.key.priv) if acme.key.size else (None, None)
        if bad:
            r = acme.post(order['finalize'], {'csr': b64u(bad)})
            check('%s: finalize with the account key in the CSR -> badCSR' % tag,
                  r.status == 400 and r.ptype() == ERR + 'badCSR', r.body[:200])
        _, good = make_csr(idents)
        tampered = bytearray(good)
        tampered[-5] ^= 1
        r = acme.post(order['finalize'], {'csr': b64u(bytes(tampered))})
        check('%s: finalize with a CSR whose signature is broken -> badCSR' % tag,
              r.status == 400 and r.ptype() == ERR + 'badCSR', r.body[:200])
    key, csr = make_csr(idents, ku=ku)
    r = acme.post(order['finalize'], {'csr': b64u(csr)})
    check('%s: finalize -> 200 (processing|valid)' % tag,
          r.status == 200 and r.json()['status'] in ('processing', 'valid'), (r.status, r.body[:200]))
    res['finalize_status'] = (r.json() or {}).get('status')
    o = acme.poll(order_url, ('valid', 'invalid')).json()
    if not check('%s: order valid with a certificate URL' % tag, o['status'] == 'valid' and 'certificate' in o, o):
        return res
    r = acme.post(o['certificate'], None, accept='application/pem-certificate-chain')
    check('%s: certificate download: 200 application/pem-certificate-chain' % tag,
          r.status == 200 and r.hdr('Content-Type') == 'application/pem-certificate-chain', r.status)
    res['cert'] = verify_chain(r.body, idents, tag, ku)
    res['pem'] = r.body
    res['ok'] = True
    return res


def raw_post(acme, url, body, ctype='application/jose+json'):
    return acme.request('POST', url, body if isinstance(body, bytes) else json.dumps(body).encode(), ctype)


def fresh(acme):
    return acme.new_nonce()


def phase_main():
    acme = Acme(E['ACME_DIRECTORY'], E['ACME_CA_FILE'])
    d = acme.d
    check('directory has newNonce/newAccount/newOrder/revokeCert/keyChange',
          all(k in d for k in ('newNonce', 'newAccount', 'newOrder', 'revokeCert', 'keyChange')), d)
    r = acme.request('HEAD', d['newNonce'])
    check('HEAD newNonce: 200 + Replay-Nonce + Cache-Control: no-store',
          r.status == 200 and r.hdr('Replay-Nonce') and 'no-store' in (r.hdr('Cache-Control') or ''))
    r = acme.request('GET', d['newNonce'])
    check('GET newNonce: 204 + Replay-Nonce', r.status == 204 and r.hdr('Replay-Nonce'))
    check('Link rel="index" on newNonce', any('rel="index"' in v for v in r.hdrs('Link')))

    # accounts
    k2 = Key('ES256')
    other = Acme(E['ACME_DIRECTORY'], E['ACME_CA_FILE'], k2)
    r = other.post(d['newAccount'], {'contact': []}, use_jwk=True)
    check('newAccount without termsOfServiceAgreed -> userActionRequired',
          r.status == 403 and r.ptype() == ERR + 'userActionRequired', r.body[:200])
    r = other.post(d['newAccount'], {'onlyReturnExisting': True}, use_jwk=True)
    check('newAccount onlyReturnExisting for an unknown key -> accountDoesNotExist',
          r.status == 400 and r.ptype() == ERR + 'accountDoesNotExist', r.body[:200])
    r = other.post(d['newAccount'], {'termsOfServiceAgreed': True, 'contact': ['tel:+1555']}, use_jwk=True)
    check('newAccount with a tel: contact -> unsupportedContact',
          r.ptype() == ERR + 'unsupportedContact', r.body[:200])
    r = acme.account(contact=['mailto:' + E['EMAIL']])
    check('newAccount (ES256) -> 201 + Location', r.status == 201 and acme.kid, (r.status, r.body[:200]))
    r2 = acme.account()
    check('newAccount again with the same key -> 200, same Location',
          r2.status == 200 and r2.hdr('Location') == acme.kid, r2.status)
    r = other.account()
    check('second account -> 201', r.status == 201)

    # full enrollment: POP3 STLS + SMTP STARTTLS, STRING mode
    boxes = {E['EMAIL']: (E['MAIL_USER'], E['MAIL_PASS_FILE']),
             E['EMAIL2']: (E['MAIL_USER2'], E['MAIL_PASS_FILE2'])}
    res = enroll(acme, [E['EMAIL']], boxes, 'enroll STLS/STARTTLS', csr_checks=True)
    check('enroll STLS/STARTTLS: certificate issued', res['ok'])
    mail = res.get('mails', {}).get(E['EMAIL'])
    if mail:
        raw = mail['raw']
        check('challenge mail: Auto-Submitted: auto-generated; type=acme',
              b'\nAuto-Submitted: auto-generated; type=acme\r\n' in raw)
        check('challenge mail: DKIM h= covers the RFC 8823 MUST list',
              {'sender', 'reply-to', 'cc', 'in-reply-to', 'references', 'content-type',
               'content-transfer-encoding'} <= mail['h'], mail['h'])
        check('challenge mail: text/plain body', b'Content-Type: text/plain' in raw)
    # a tampered challenge mail must fail DKIM with the published key
    if mail:
        import dkim
        bad = mail['raw'].replace(mail['token1'].encode(), mail['token1'][::-1].encode(), 1)
        check('DKIM: tampered challenge mail fails with the published key', not dkim.verify(bad, dnsfunc=dkim_dns))

    # resources of another account
    if res.get('order_url'):
        r = other.get(res['order_url'])
        check('POST-as-GET of another account\'s order -> unauthorized',
              r.status == 403 and r.ptype() == ERR + 'unauthorized', r.body[:200])
        # protocol negatives on a real order URL
        r = acme.request('GET', res['order_url'])
        check('plain GET on an order -> 405 malformed',
              r.status == 405 and r.ptype() == ERR + 'malformed' and r.hdr('Replay-Nonce'), (r.status, r.body))
        body = json.dumps(jws(acme.key, res['order_url'], None, fresh(acme), acme.kid)).encode()
        r1 = raw_post(acme, res['order_url'], body)
        r2 = raw_post(acme, res['order_url'], body)
        check('replayed nonce: first use 200, second -> badNonce with a fresh Replay-Nonce',
              r1.status == 200 and r2.status == 400 and r2.ptype() == ERR + 'badNonce' and
              r2.hdr('Replay-Nonce') and r2.hdr('Replay-Nonce') != r1.hdr('Replay-Nonce'), (r1.status, r2.body))
        check('problem document has Content-Type application/problem+json',
              r2.hdr('Content-Type') == 'application/problem+json')
        j = jws(acme.key, res['order_url'], None, fresh(acme), acme.kid)
        sig = bytearray(b64u_dec(j['signature']))
        sig[3] ^= 0x40
        j['signature'] = b64u(bytes(sig))
        r = raw_post(acme, res['order_url'], j)
        check('bad JWS signature -> 400 malformed', r.status == 400 and r.ptype() == ERR + 'malformed', r.body)
        j = jws(acme.key, res['order_url'] + 'x', None, fresh(acme), acme.kid)
        r = raw_post(acme, res['order_url'], j)
        check('wrong url in the protected header -> unauthorized',
              r.status == 403 and r.ptype() == ERR + 'unauthorized', r.body)
        j = jws(acme.key, res['order_url'], None, fresh(acme), acme.kid)
        r = raw_post(acme, res['order_url'], j, ctype='application/json')
        check('Content-Type application/json -> 415 malformed', r.status == 415 and r.ptype() == ERR + 'malformed',
              r.status)
        j = jws(acme.key, res['order_url'], None, fresh(acme), acme.kid)
        j['protected'] += '='
        r = raw_post(acme, res['order_url'], j)
        check('padded base64url -> malformed', r.status == 400 and r.ptype() == ERR + 'malformed', r.body)
        j = jws(acme.key, res['order_url'], None, fresh(acme), acme.kid, alg='none')
        r = raw_post(acme, res['order_url'], j)
        check('alg none -> badSignatureAlgorithm', r.ptype() == ERR + 'badSignatureAlgorithm', r.body)
        j = jws(acme.key, res['order_url'], None, fresh(acme), acme.kid, alg='ES384')
        r = raw_post(acme, res['order_url'], j)
        check('alg ES384 with a P-256 key -> badSignatureAlgorithm', r.ptype() == ERR + 'badSignatureAlgorithm',
              r.body)
        j = jws(acme.key, res['order_url'], None, fresh(acme), None)
        r = raw_post(acme, res['order_url'], j)
        check('jwk instead of kid on an order -> malformed', r.ptype() == ERR + 'malformed', r.body)
        j = jws(acme.key, res['order_url'], None, fresh(acme), acme.kid + 'nope')
        r = raw_post(acme, res['order_url'], j)
        check('unknown kid -> accountDoesNotExist', r.ptype() == ERR + 'accountDoesNotExist', r.body)
        j = jws(acme.key, res['order_url'], None, fresh(acme), acme.kid)
        j['header'] = {'foo': 1}
        r = raw_post(acme, res['order_url'], j)
        check('unprotected JWS header -> malformed', r.ptype() == ERR + 'malformed', r.body)
        j = jws(acme.key, res['order_url'], {}, fresh(acme), acme.kid)
        r = raw_post(acme, res['order_url'], j)
        check('order read with payload {} instead of POST-as-GET -> malformed', r.ptype() == ERR + 'malformed',
              r.body)
        r = raw_post(acme, res['order_url'], b'{"protected": "e30", "payload": ')
        check('garbage body -> malformed, server alive', r.ptype() == ERR + 'malformed', r.body)
    r = acme.request('GET', d['newNonce'])
    check('server still answers after the bad requests', r.status == 204)
    r = acme.post(d['newOrder'], {'identifiers': [{'type': 'dns', 'value': 'mail.test'}]})
    check('newOrder with a dns identifier -> unsupportedIdentifier',
          r.ptype() == ERR + 'unsupportedIdentifier', r.body[:200])
    r = acme.post(d['newOrder'], {'identifiers': [{'type': 'email', 'value': '*@mail.test'}]})
    check('newOrder with a wildcard email -> rejectedIdentifier', r.ptype() == ERR + 'rejectedIdentifier',
          r.body[:200])
    r = acme.post(d['newOrder'], {'identifiers': [{'type': 'email', 'value': E['EMAIL']}]})
    if r.status == 201:
        _, csr = make_csr([E['EMAIL']])
        r2 = acme.post(r.json()['finalize'], {'csr': b64u(csr)})
        check('finalize of a pending order -> orderNotReady', r2.status == 403 and
              r2.ptype() == ERR + 'orderNotReady', r2.body[:200])
        # deactivate without fetching it first: no challenge mail goes out for it
        r3 = acme.post(r.json()['authorizations'][0], {'status': 'deactivated'})
        check('authorization deactivated', (r3.json() or {}).get('status') == 'deactivated', r3.body[:200])

    # wrong digest -> invalid
    res = enroll(acme, [E['EMAIL']], boxes, 'wrong digest', wrong_digest=True)
    z = (res.get('authz') or {}).get(E['EMAIL'], {})
    ch = [c for c in z.get('challenges', []) if c['type'] == 'email-reply-00']
    check('wrong digest: authorization invalid', z.get('status') == 'invalid', z.get('status'))
    check('wrong digest: challenge invalid with incorrectResponse',
          bool(ch) and ch[0]['status'] == 'invalid' and ch[0].get('error', {}).get('type') ==
          ERR + 'incorrectResponse', ch)
    check('wrong digest: order invalid', (res.get('order') or {}).get('status') == 'invalid',
          (res.get('order') or {}).get('status'))

    # second account: ES384, POP3S + SMTPS, two identifiers (two mailboxes), signing-only key usage
    a384 = Acme(E['ACME_DIRECTORY'], E['ACME_CA_FILE'], Key('ES384'))
    r = a384.account()
    check('newAccount (ES384) -> 201', r.status == 201, r.body[:200])
    res = enroll(a384, [E['EMAIL'], E['EMAIL2']], boxes, 'enroll ES384 POP3S/SMTPS 2 ids', pop_mode='pop3s',
                 smtp_mode='smtps', ku='sign', from_form='name')
    check('enroll ES384 POP3S/SMTPS 2 ids: certificate issued', res['ok'])
    # RSA account, plain POP3
    ars = Acme(E['ACME_DIRECTORY'], E['ACME_CA_FILE'], Key('RS256'))
    r = ars.account()
    check('newAccount (RS256) -> 201', r.status == 201, r.body[:200])
    res = enroll(ars, [E['EMAIL2']], boxes, 'enroll RS256 POP3 plain', pop_mode='plain', finalize=True)
    check('enroll RS256 POP3 plain: certificate issued', res['ok'])
    if res.get('pem'):
        cert = res['cert']
        der = cert.public_bytes(serialization.Encoding.DER)
        r = ars.post(d['revokeCert'], {'certificate': b64u(der), 'reason': 4})
        check('revokeCert (kid) -> 200', r.status == 200, r.body[:200])
        r = ars.post(d['revokeCert'], {'certificate': b64u(der), 'reason': 4})
        check('revokeCert again -> alreadyRevoked', r.ptype() == ERR + 'alreadyRevoked', r.body[:200])

    # events
    ev = events()
    kinds = {e['event'] for e in ev}
    for k in ('account-created', 'order-created', 'challenge-mail-sent', 'response-received', 'challenge-valid',
              'challenge-invalid', 'certificate-issued'):
        check('event %s logged' % k, k in kinds)
    check('every account/order/challenge event carries its ids',
          all('account' in e and 'order' in e and 'challenge' in e for e in ev
              if e['event'] in ('challenge-mail-sent', 'challenge-valid', 'challenge-invalid')) and
          all('account' in e and 'order' in e for e in ev if e['event'] in ('order-created', 'certificate-issued')))
    check('no warning events (this client is well-behaved)', not [e for e in ev if e['event'] == 'warning'],
          [e.get('detail') for e in ev if e['event'] == 'warning'][:3])


def phase_bytes():
    acme = Acme(E['ACME_DIRECTORY'], E['ACME_CA_FILE'])
    check('restarted CA: newAccount', acme.account().status == 201)
    boxes = {E['EMAIL']: (E['MAIL_USER'], E['MAIL_PASS_FILE'])}
    res = enroll(acme, [E['EMAIL']], boxes, 'BYTES CA + BYTES client', mode='bytes')
    check('BYTES CA + BYTES client: certificate issued', res['ok'])
    if res.get('cert'):
        life = res['cert'].not_valid_after.timestamp() - time.time()
        check('CA_CERT_LIFETIME=300: notAfter about 300 s from now', 280 < life <= 300, life)
    mail = res.get('mails', {}).get(E['EMAIL'])
    if mail:
        check('CA_SUBJECT=folded: Subject is folded inside token-part1',
              re.search(rb'\nSubject: ACME:\r\n [A-Za-z0-9_-]+\r\n [A-Za-z0-9_=-]+\r\n', mail['raw']) is not None)
        check('CA_TOKEN1_PAD=1: token-part1 carries = padding', mail['token1'].endswith('='), mail['token1'])
        frm = email.utils.getaddresses([email.message_from_bytes(mail['raw']).get('From')])[0][1]
        check('CA_FROM_TAG=1: challenge from is ca+tag@ and the response to it was accepted', '+' in frm, frm)
    res = enroll(acme, [E['EMAIL']], boxes, 'BYTES CA + STRING client', mode='string', finalize=False)
    z = (res.get('authz') or {}).get(E['EMAIL'], {})
    ch = [c for c in z.get('challenges', []) if c['type'] == 'email-reply-00']
    err = ch[0].get('error', {}) if ch else {}
    check('BYTES CA + STRING client: challenge invalid (incorrectResponse)',
          z.get('status') == 'invalid' and err.get('type') == ERR + 'incorrectResponse', z.get('status'))
    check('BYTES CA + STRING client: problem detail names both modes',
          'BYTES' in err.get('detail', '') and 'STRING' in err.get('detail', ''), err.get('detail'))
    res = enroll(acme, [E['EMAIL']], boxes, 'CA_STRICT_FROM + bare From', mode='bytes', from_form='bare',
                 finalize=False)
    z = (res.get('authz') or {}).get(E['EMAIL'], {})
    check('CA_STRICT_FROM=1: response with a bare From -> invalid', z.get('status') == 'invalid', z.get('status'))
    t = time.time()
    res = enroll(acme, [E['EMAIL']], boxes, 'no response', mode='bytes', finalize=False, respond=False)
    z = (res.get('authz') or {}).get(E['EMAIL'], {})
    ch = [c for c in z.get('challenges', []) if c['type'] == 'email-reply-00']
    det = ch[0].get('error', {}).get('detail', '') if ch else ''
    check('CA_VALIDATE_WINDOW=3: challenge POSTed without a response -> invalid after the window',
          z.get('status') == 'invalid' and 'no response mail' in det and time.time() - t >= 3, det)
    ev = events()
    check('CA_DKIM_ALG=ed25519: CA started with it, and its mails verified',
          ev[0].get('settings', {}).get('CA_DKIM_ALG') == 'ed25519' and
          open(E['DKIM_TXT_FILE']).read().startswith('v=DKIM1; k=ed25519;'))


def phase_faults():
    acme = Acme(E['ACME_DIRECTORY'], E['ACME_CA_FILE'])
    r = acme.account()
    check('faulty CA: newAccount despite nonce rejections', r.status == 201, r.body[:200])
    boxes = {E['EMAIL']: (E['MAIL_USER'], E['MAIL_PASS_FILE'])}
    res = enroll(acme, [E['EMAIL']], boxes, 'faults', mail_at='order')
    check('faults: certificate issued despite every fault', res['ok'])
    st = acme.stats
    check('CA_FAULT_429=new-order: 429 rateLimited with Retry-After seen', st['429'] >= 1 and '1' in
          st['retry_after'], st)
    check('CA_FAULT_500=finalize: one 500 seen', st['500'] == 1, st['500'])
    check('CA_FAULT_DROP=authz: a dropped connection seen', st['drop'] >= 1, st['drop'])
    check('CA_PROCESSING_POLLS=2: finalize answered processing', res.get('finalize_status') == 'processing',
          res.get('finalize_status'))
    check('CA_PROCESSING_POLLS=2: two processing polls with Retry-After', st['processing'] >= 2, st['processing'])
    whys = [w for _, w, _ in res.get('ignored', [])]
    check('CA_DECOY=sender: the decoy from a wrong sender was ignored', any('is not the challenge from' in w
                                                                         for w in whys), whys)
    check('CA_DECOY=reply: the "Re: ACME:" decoy was ignored', any('subject is not' in w for w in whys), whys)
    check('CA_DECOY=unsigned: the unsigned decoy was ignored', 'not DKIM-signed' in whys, whys)
    check('CA_DECOY=baddkim: the decoy with a broken signature was ignored',
          'DKIM signature does not verify' in whys, whys)
    check('CA_DECOY=noauto: the decoy without Auto-Submitted was ignored',
          any(w.startswith('Auto-Submitted') for w in whys), whys)
    check('CA_DECOY=wrongto: the decoy addressed to someone else was ignored',
          any(w.startswith('To ') for w in whys), whys)
    check('CA_STALE=1: the stale challenge mail (older Date) was ignored', any(w.startswith('stale') for w in whys),
          whys)
    mail = res.get('mails', {}).get(E['EMAIL'])
    if mail:
        check('CA_SUBJECT=q: Subject was RFC 2047 Q-encoded', b'?Q?ACME' in mail['raw'])
    ev = events()
    kinds = [e['event'] for e in ev]
    check('events: decoy-mail-sent x6, stale-mail-sent, no decoy-answered',
          kinds.count('decoy-mail-sent') == 6 and 'stale-mail-sent' in kinds and 'decoy-answered' not in kinds,
          [k for k in kinds if 'decoy' in k or 'stale' in k])
    check('events: fault 429/500/drop recorded',
          {('429', 'new-order'), ('500', 'finalize'), ('drop', 'authz')} <=
          {(e.get('kind'), e.get('endpoint')) for e in ev if e['event'] == 'fault'})
    # respond-once accounting: exactly one response-received for the valid challenge
    vc = [e['challenge'] for e in ev if e['event'] == 'challenge-valid']
    check('events: exactly one response-received for the validated challenge',
          len(vc) == 1 and sum(1 for e in ev if e['event'] == 'response-received' and
                               e.get('challenge') == vc[0]) == 1)
    # second order: the stale mail is now a verbatim re-delivery of the first challenge mail
    res = enroll(acme, [E['EMAIL']], boxes, 'faults 2nd order', mail_at='order', finalize=False)
    check('faults 2nd order: authorization valid', res['ok'])
    whys = [w for _, w, _ in res.get('ignored', [])]
    check('CA_STALE=1: re-delivered old challenge mail ignored (already answered)',
          any(w.startswith('already answered') for w in whys), whys)
    check('CA_NONCE_REJECT=50: badNonce seen and survived', acme.stats['badNonce'] > 0, acme.stats['badNonce'])
    ev = events()
    check('events: stale-mail-sent names the old challenge',
          any(e['event'] == 'stale-mail-sent' and e.get('old_challenge') == vc[0] for e in ev))


def phase_lax():
    global RELAXED
    RELAXED = True
    acme = Acme(E['ACME_DIRECTORY'], E['ACME_CA_FILE'])
    check('CA_TLS_ALG=rsa CA_TLS_MAX=1.2: HTTPS answers (RSA root)', isinstance(
        x509.load_pem_x509_certificate(open(E['ACME_CA_FILE'], 'rb').read()).public_key(), rsa.RSAPublicKey))
    u = urllib.parse.urlsplit(E['ACME_DIRECTORY'])
    import socket
    with socket.create_connection((u.hostname, u.port)) as sk:
        with acme.ctx.wrap_socket(sk, server_hostname=u.hostname) as tls:
            check('CA_TLS_MAX=1.2: the CA negotiates TLS 1.2', tls.version() == 'TLSv1.2', tls.version())
    check('lax CA: newAccount', acme.account().status == 201)
    boxes = {E['EMAIL']: (E['MAIL_USER'], E['MAIL_PASS_FILE'])}
    res = enroll(acme, [E['EMAIL']], boxes, 'lax CA (relaxed client)')
    check('lax CA: certificate issued under an RSA root (CA_PKI_ALG=rsa)', res['ok'] and isinstance(
        x509.load_pem_x509_certificate(open(E['TEST_ROOT'], 'rb').read()).public_key(), rsa.RSAPublicKey))
    mail = res.get('mails', {}).get(E['EMAIL'])
    if mail:
        head = mail['raw'].split(b'\r\n\r\n', 1)[0].lower()
        for h in (b'auto-submitted', b'message-id', b'date', b'dkim-signature'):
            check('CA_MAIL_OMIT: challenge mail has no %s' % h.decode(), (b'\n' + h + b':') not in head)
        check('CA_MAIL_FROM_NAME="": bare From: ca@acme.test', b'\nfrom: ca@acme.test\r' in head)
        check('CA_SUBJECT=b: Subject B-encoded', b'?b?' in head)


def dns_check(tag, bits, server, strings):
    """The CA's DKIM key has `bits` bits and DNS_RESOLVER (run by `server`) serves its record, whole, in
    `strings` character-strings."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
    from dns_txt_get import txt_query
    pub = serialization.load_pem_public_key(open(E['DKIM_PUBKEY_FILE'], 'rb').read())
    check('%s: DKIM key is RSA %d (CA_DKIM_BITS)' % (tag, bits), pub.key_size == bits, pub.key_size)
    check('%s: DNS_SERVER=%s' % (tag, server), E.get('DNS_SERVER') == server, E.get('DNS_SERVER'))
    h, p = hostport(E['DNS_RESOLVER'])
    got = txt_query((h, p), '%s._domainkey.%s' % (E['DKIM_SELECTOR'], E['DKIM_DOMAIN']))
    want = open(E['DKIM_TXT_FILE'], 'rb').read().strip()
    check('%s: DNS_RESOLVER serves the DKIM record in %d string(s) (%d bytes)' % (tag, strings, len(want)),
          got is not None and b''.join(got) == want and len(got) == strings,
          got and [len(x) for x in got])


def smime_mail_checks(tag, mail, form, dkim_signed, chain):
    """The accepted challenge mail: S/MIME in `form`, header protection, the signer certificate."""
    raw = mail['raw']
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    sm = mail.get('smime') or {}
    check('%s: accepted on its S/MIME signature (OpenSSL cms -verify -binary -purpose smimesign, '
          'anchor SMIME_CA_FILE)' % tag, mail.get('proof') == 'smime', mail.get('smime_why'))
    if form == 'detached':
        check('%s: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256' % tag,
              msg.get_content_type() == 'multipart/signed' and sm.get('protocol') == 'application/pkcs7-signature'
              and sm.get('micalg') == 'sha-256', msg.get('Content-Type'))
    else:
        check('%s: application/pkcs7-mime; smime-type=signed-data, base64' % tag,
              msg.get_content_type() == 'application/pkcs7-mime' and
              msg.get_param('smime-type') == 'signed-data' and
              (msg.get('Content-Transfer-Encoding') or '').lower() == 'base64', msg.get('Content-Type'))
    im = sm.get('inner')
    same = im is not None and all(unfold(im.get(h)) == unfold(msg.get(h)) for h in
                                  ('Auto-Submitted', 'Date', 'Message-ID', 'From', 'To', 'Subject'))
    check('%s: header protection: the signed message/rfc822 repeats Auto-Submitted, Date, Message-ID, '
          'From, To, Subject' % tag, same)
    check('%s: the signed copy is text/plain with the challenge text' % tag,
          im is not None and im.get_content_type() == 'text/plain' and
          'automatically generated ACME challenge' in im.get_payload(), im and im.get('Content-Type'))
    c = sm.get('signer')
    if c is not None:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        ku = c.extensions.get_extension_for_class(x509.KeyUsage)
        check('%s: signer: SAN rfc822Name = %s only, EKU emailProtection, KU digitalSignature (critical)' %
              (tag, E['CA_EMAIL']),
              san.get_values_for_type(x509.RFC822Name) == [E['CA_EMAIL']] and len(list(san)) == 1 and
              list(eku) == [ExtendedKeyUsageOID.EMAIL_PROTECTION] and ku.critical and ku.value.digital_signature
              and not ku.value.key_cert_sign, (san, eku, ku))
        root = x509.load_pem_x509_certificate(open(E['SMIME_CA_FILE'], 'rb').read())
        certs = sm.get('cms_certs', [])
        if chain == 'direct':
            ok = c.issuer == root.subject and len(certs) == 1
        else:
            ok = (c.issuer != root.subject and len(certs) == 2 and
                  any(x.subject == c.issuer and x.issuer == root.subject for x in certs))
        check('%s: signer issued %s the S/MIME root (CA_SMIME_CHAIN=%s), %d certificate(s) in the CMS' %
              (tag, 'by' if chain == 'direct' else 'by an intermediate under', chain, len(certs)), ok,
              c.issuer.rfc4514_string())
    has = b'\ndkim-signature:' in (b'\n' + raw.split(b'\r\n\r\n', 1)[0].lower())
    if dkim_signed:
        check('%s: DKIM-signed too, and the DKIM signature over the S/MIME mail verifies' % tag,
              has and mail.get('dkim_ok'))
    else:
        check('%s: no DKIM-Signature (CA_DKIM=0): S/MIME is the only proof' % tag, not has)


def smime_env_checks(tag):
    f = E.get('SMIME_CA_FILE', '')
    ok = bool(f) and os.path.exists(f)
    root = x509.load_pem_x509_certificate(open(f, 'rb').read()) if ok else None
    check('%s: DIR/env SMIME_CA_FILE is DIR/ca/smime-root.pem, a CA, not the issuing root' % tag,
          ok and f.endswith('/ca/smime-root.pem') and
          root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca and
          root.subject != x509.load_pem_x509_certificate(open(E['TEST_ROOT'], 'rb').read()).subject, f)


def smime_phase_enroll(tag, bits, server, strings, form, dkim, chain):
    """The environment and DNS checks of an S/MIME phase, then one enrollment
    of EMAIL whose challenge mail is checked; returns the enrollment."""
    smime_env_checks(tag)
    dns_check(tag, bits, server, strings)
    acme = Acme(E['ACME_DIRECTORY'], E['ACME_CA_FILE'])
    check('%s: newAccount' % tag, acme.account().status == 201)
    boxes = {E['EMAIL']: (E['MAIL_USER'], E['MAIL_PASS_FILE'])}
    res = enroll(acme, [E['EMAIL']], boxes, tag)
    check('%s: certificate issued' % tag, res['ok'])
    mail = res.get('mails', {}).get(E['EMAIL'])
    if mail:
        smime_mail_checks(tag, mail, form, dkim, chain)
    return res


def phase_smime():
    res = smime_phase_enroll('S/MIME + DKIM', 1024, 'pebble-challtestsrv', 1,
                             'detached', True, 'intermediate')
    whys = [w for _, w, _ in res.get('ignored', [])]
    check('CA_DECOY=badsmime: the decoy whose signed content changed was ignored',
          any(w.startswith('S/MIME signature does not verify') for w in whys), whys)
    check('CA_DECOY=smimesigner: the decoy signed for %s was ignored' % E.get('CA_DECOY_FROM', 'ca@evil.test'),
          any(w.startswith('S/MIME signer') for w in whys), whys)
    check('CA_DECOY=smimeheaders: the decoy whose protected Subject differs was ignored',
          any(w.startswith('S/MIME protected Subject differs') for w in whys), whys)
    check('CA_DECOY=baddkim (S/MIME-signed too): ignored, neither signature verifies',
          'DKIM signature does not verify' in whys, whys)
    check('CA_DECOY=unsigned: no S/MIME, no DKIM: ignored', 'not DKIM-signed' in whys, whys)
    ev = events()
    sent = [e for e in ev if e['event'] == 'challenge-mail-sent']
    dec = {e.get('kind'): (e.get('smime'), e.get('dkim')) for e in ev if e['event'] == 'decoy-mail-sent'}
    check('events: challenge-mail-sent smime=detached dkim=true; S/MIME decoys without DKIM; unsigned without both',
          [(e.get('smime'), e.get('dkim')) for e in sent] == [('detached', True)] and
          dec.get('badsmime') == ('detached', False) and dec.get('smimesigner') == ('detached', False) and
          dec.get('smimeheaders') == ('detached', False) and dec.get('unsigned') == (None, False) and
          dec.get('baddkim') == ('detached', True), (sent, dec))


def phase_opaque():
    smime_phase_enroll('opaque S/MIME only', 2048, 'fake_dns', 2, 'opaque', False, 'direct')
    ev = events()
    sent = [(e.get('smime'), e.get('dkim')) for e in ev if e['event'] == 'challenge-mail-sent']
    check('events: challenge-mail-sent smime=opaque dkim=false', sent == [('opaque', False)], sent)


def main():
    global VERBOSE
    ap = argparse.ArgumentParser()
    ap.add_argument('--phase', choices=('main', 'bytes', 'faults', 'lax', 'smime', 'opaque'), default='main')
    ap.add_argument('-v', action='store_true')
    a = ap.parse_args()
    VERBOSE = a.v
    t0 = time.time()
    try:
        {'main': phase_main, 'bytes': phase_bytes, 'faults': phase_faults, 'lax': phase_lax,
         'smime': phase_smime, 'opaque': phase_opaque}[a.phase]()
    except Exception:
        traceback.print_exc()
        check('phase %s ran to the end' % a.phase, False)
    print('phase %s: %.1f s' % (a.phase, time.time() - t0))
    print('%d passed, %d failed' % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
