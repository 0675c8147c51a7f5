#!/usr/bin/python3
"""Ask a DNS server for a TXT record over UDP (stdlib only).

    dns_txt_get.py HOST:PORT NAME [--expect FILE] [--tries N]

Prints "strings=N" (the character-strings of the first TXT record) and
"text=..." (them joined). With --expect, exits 0 only when the joined text
is the first line of FILE; without it, exits 0 when a TXT record came.
tests/testenv uses it to check that the DKIM key server (pebble-challtestsrv
or tests/tools/fake_dns.py) serves the CA's record; the module's txt_query()
is used by tests/ca/client_selftest.py.
"""
import os
import socket
import struct
import sys


def _name(q, p):
    """Skip a (possibly compressed) domain name at offset p; return the offset after it."""
    while True:
        n = q[p]
        if n == 0:
            return p + 1
        if n & 0xC0 == 0xC0:
            return p + 2
        p += 1 + n


def txt_query(server, name, timeout=1.0, tries=3):
    """The character-strings of the first TXT record of name at server (host, port), as a list of
    bytes; [] when the answer has none; None when no answer came."""
    qname = b''.join(bytes([len(l)]) + l.encode('ascii') for l in name.rstrip('.').split('.')) + b'\0'
    for _ in range(tries):
        qid = struct.unpack('>H', os.urandom(2))[0]
        q = struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack('>HH', 16, 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        try:
            s.sendto(q, server)
            while True:
                r = s.recv(4096)
                if len(r) >= 12 and struct.unpack('>H', r[:2])[0] == qid:
                    break
        except (socket.timeout, OSError):
            continue
        finally:
            s.close()
        _, flags, qd, an = struct.unpack('>HHHH', r[:8])
        if flags & 0x000F:
            return []
        p = 12
        for _ in range(qd):
            p = _name(r, p) + 4
        for _ in range(an):
            p = _name(r, p)
            rtype, _, _, rdlen = struct.unpack('>HHIH', r[p:p + 10])
            p += 10
            if rtype == 16:
                out, end = [], p + rdlen
                while p < end:
                    out.append(r[p + 1:p + 1 + r[p]])
                    p += 1 + r[p]
                return out
            p += rdlen
        return []
    return None


def main():
    args = sys.argv[1:]
    expect, tries = None, 3
    if '--expect' in args:
        i = args.index('--expect')
        expect = open(args[i + 1], 'rb').read().splitlines()[0]
        del args[i:i + 2]
    if '--tries' in args:
        i = args.index('--tries')
        tries = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        sys.exit(__doc__)
    host, _, port = args[0].rpartition(':')
    got = txt_query((host, int(port)), args[1], tries=tries)
    if got is None:
        print('no answer')
        sys.exit(1)
    text = b''.join(got)
    print('strings=%d' % len(got))
    print('text=%s' % text.decode('ascii', 'replace'))
    sys.exit(0 if (text == expect if expect is not None else bool(got)) else 1)


if __name__ == '__main__':
    main()
