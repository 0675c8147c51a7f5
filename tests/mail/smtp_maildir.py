#!/usr/bin/python3
"""Small SMTP server for the tests (Debian python3-aiosmtpd), delivering into
the Maildirs that Dovecot serves. Used by mail_stack.sh when Postfix cannot
run (not root). Run with Debian's /usr/bin/python3.

  smtp_maildir.py --listen 127.0.0.1 --port P --subm-port P --smtps-port P \\
      --mail-base DIR --users USERSFILE --cert CHAIN --key KEY [--sender-check]

* --port       MX role: no AUTH, STARTTLS offered, accepts recipients that are
               known users (a "+tag" sub-address goes to the user)
* --subm-port  submission: STARTTLS required, then AUTH PLAIN/LOGIN required
               (Dovecot passwd-file USERSFILE, {PLAIN} passwords)
* --smtps-port submission over implicit TLS (RFC 8314), AUTH required
* --sender-check  submission refuses MAIL FROM other than the login
Mail for user U goes to DIR/U/Maildir. Runs until SIGTERM; prints READY.
"""
import argparse
import mailbox
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def load_users(path):
    users = {}
    with open(path) as f:
        for line in f:
            if ':' not in line or line.startswith('#'):
                continue
            name, pw = line.split(':')[0:2]
            if pw.startswith('{PLAIN}'):
                pw = pw[len('{PLAIN}'):]
            users[name.lower()] = pw
    return users


def mailbox_of(address):
    local, _, dom = address.rpartition('@')
    local = local.split('+', 1)[0]
    return (local + '@' + dom).lower()


class MaildirHandler:
    def __init__(self, base, users, sender_check=False):
        self.base, self.users, self.sender_check = base, users, sender_check

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.sender_check:
            login = getattr(session.auth_data, 'login', b'') or b''
            if isinstance(login, bytes):
                login = login.decode('utf-8', 'replace')
            if address.lower() != login.lower():
                return '553 5.7.1 <%s>: Sender address rejected: not owned by user %s' % (address, login)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return '250 2.1.0 Ok'

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if mailbox_of(address) not in self.users:
            return '550 5.1.1 <%s>: Recipient address rejected: User unknown' % address
        envelope.rcpt_tos.append(address)
        return '250 2.1.5 Ok'

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode()
        for rcpt in envelope.rcpt_tos:
            hdr = ('Return-Path: <%s>\r\nDelivered-To: %s\r\n' % (envelope.mail_from, rcpt)).encode()
            d = os.path.join(self.base, mailbox_of(rcpt))
            os.makedirs(d, exist_ok=True)
            mailbox.Maildir(os.path.join(d, 'Maildir'), create=True).add(hdr + data)
        return '250 2.0.0 Ok: delivered'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--listen', default='127.0.0.1')
    ap.add_argument('--port', type=int, default=10025)
    ap.add_argument('--subm-port', type=int, default=10587)
    ap.add_argument('--smtps-port', type=int, default=10465)
    ap.add_argument('--mail-base', required=True)
    ap.add_argument('--users', required=True)
    ap.add_argument('--cert')
    ap.add_argument('--key')
    ap.add_argument('--sender-check', action='store_true')
    a = ap.parse_args()

    users = load_users(a.users)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and \
            users.get(auth_data.login.decode().lower()) == auth_data.password.decode()
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    tls = None
    if a.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(a.cert, a.key)
    mx_h = MaildirHandler(a.mail_base, users)
    sub_h = MaildirHandler(a.mail_base, users, a.sender_check)
    mx = Controller(mx_h, hostname=a.listen, port=a.port, tls_context=tls,
                    authenticator=authenticator, auth_require_tls=True,
                    ident='aiosmtpd-mx')
    sub = Controller(sub_h, hostname=a.listen, port=a.subm_port, tls_context=tls,
                     require_starttls=tls is not None, auth_required=True,
                     auth_require_tls=tls is not None,
                     authenticator=authenticator, ident='aiosmtpd-submission')
    ctls = [mx, sub]
    if tls is not None:
        ctls.append(Controller(sub_h, hostname=a.listen, port=a.smtps_port, ssl_context=tls,
                               auth_required=True, auth_require_tls=False,
                               authenticator=authenticator, ident='aiosmtpd-submissions'))
    for c in ctls:
        c.start()
    print('READY', flush=True)
    # a test server: on SIGTERM/SIGINT just leave (Controller.stop() is slow)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    threading.Event().wait()


if __name__ == '__main__':
    sys.exit(main())
