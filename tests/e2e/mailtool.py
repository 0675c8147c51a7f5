#!/usr/bin/python3
"""Mailbox tools for the e2e tests (POP3 STLS on the test mail stack).

    mailtool.py clear HOST:PORT USER PASSFILE CAFILE
        delete every message of the mailbox
    mailtool.py count HOST:PORT USER PASSFILE CAFILE
        print the number of messages
    mailtool.py sniff HOST:PORT USER PASSFILE CAFILE OUTDIR STOPFILE
        until STOPFILE exists (or 60 s): copy every message that shows up
        into OUTDIR/<uidl>.eml without deleting anything (a second POP3
        session beside the device's, every 50 ms)
    mailtool.py inject HOST:PORT ENVFROM RCPT FILE
        deliver FILE verbatim by SMTP (no AUTH: the MX port), as a mail
        server re-delivering an old message would
    mailtool.py fill MAILDIR N [SIZE]
        deliver N plain mails of about SIZE bytes (default 300) straight
        into MAILDIR/new, as a local delivery agent would (owned by the
        Maildir's owner), named to sort after what is there
"""
import os
import poplib
import smtplib
import ssl
import sys
import time


def pop(hostport, user, passfile, cafile):
    host, port = hostport.rsplit(':', 1)
    p = poplib.POP3(host, int(port), timeout=20)
    p.stls(ssl.create_default_context(cafile=cafile))
    p.user(user)
    with open(passfile) as f:
        p.pass_(f.read().strip())
    return p


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'clear':
        p = pop(*args[:4])
        for i in range(1, p.stat()[0] + 1):
            p.dele(i)
        p.quit()
    elif cmd == 'count':
        p = pop(*args[:4])
        print(p.stat()[0])
        p.quit()
    elif cmd == 'sniff':
        outdir, stop = args[4], args[5]
        os.makedirs(outdir, exist_ok=True)
        seen = set()
        end = time.time() + 60
        while not os.path.exists(stop) and time.time() < end:
            try:
                p = pop(*args[:4])
                for line in p.uidl()[1]:
                    num, uid = line.decode().split(' ', 1)
                    if uid in seen:
                        continue
                    try:
                        lines = p.retr(int(num))[1]
                    except poplib.error_proto:
                        continue   # expunged by the device meanwhile
                    seen.add(uid)
                    with open(os.path.join(outdir, uid + '.eml'), 'wb') as f:
                        f.write(b'\r\n'.join(lines) + b'\r\n')
                p.quit()
            except (OSError, poplib.error_proto):
                pass
            time.sleep(0.05)
    elif cmd == 'inject':
        hostport, envfrom, rcpt, path = args
        host, port = hostport.rsplit(':', 1)
        with open(path, 'rb') as f:
            msg = f.read()
        s = smtplib.SMTP(host, int(port), timeout=20)
        s.sendmail(envfrom, [rcpt], msg)
        s.quit()
    elif cmd == 'fill':
        maildir, n = args[0], int(args[1])
        size = int(args[2]) if len(args) > 2 else 300
        st = os.stat(maildir)
        t = int(time.time())
        for i in range(n):
            name = '%d.F%06dP%d.fill' % (t, i, os.getpid())
            body = ('filler line %d\n' % i) * max(1, size // 16)
            text = ('From: <news@list.test>\nTo: <device@mail.test>\n'
                    'Subject: newsletter %d\nMessage-ID: <f%d.%d@list.test>\n\n%s'
                    % (i, i, t, body))
            tmp = os.path.join(maildir, 'tmp', name)
            with open(tmp, 'w') as f:
                f.write(text)
            os.chown(tmp, st.st_uid, st.st_gid)
            os.rename(tmp, os.path.join(maildir, 'new', name))
    else:
        sys.exit('unknown command ' + cmd)


if __name__ == '__main__':
    main()
