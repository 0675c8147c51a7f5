#!/usr/bin/python3
"""A misbehaving DNS server for tests/dns_txt_test.sh (stdlib only).

    fake_dns.py PORT MODE

Listens on 127.0.0.1:PORT (UDP) and answers every TXT query according to
MODE, with the record text "v=DKIM1; p=fake":

  silent        never answers (the client times out and retries)
  wrong-id      first an answer with another ID, then the right one
  wrong-name    first an answer to another question, then the right one
  retry         ignores the first query, answers the second (the retry)
  truncated     sets TC
  long          one record of 600 bytes in three character-strings
  servfail      RCODE 2
  upper         echoes the question name in upper case
  file:PATH     the first line of PATH as the record, in strings of 255

Prints "ready" on stdout once bound; runs until killed.
"""
import socket
import struct
import sys

port, mode = int(sys.argv[1]), sys.argv[2]
TEXT = b'v=DKIM1; p=fake'
if mode.startswith('file:'):
    TEXT = open(mode[5:], 'rb').read().splitlines()[0]


def question_end(q):
    p = 12
    while q[p]:
        p += 1 + q[p]
    return p + 5


def answer(q, qid=None, rcode=0, tc=False, strings=None, qname=None):
    if strings is None:
        strings = [TEXT[i:i + 255] for i in range(0, len(TEXT), 255)]
    qid = struct.unpack('>H', q[:2])[0] if qid is None else qid
    question = q[12:question_end(q)]
    if qname is not None:
        question = qname + question[-4:]
    if mode == 'upper':
        question = question.upper()
    flags = 0x8180 | rcode | (0x0200 if tc else 0)
    rdata = b''.join(bytes([len(s)]) + s for s in strings)
    rr = b'\xc0\x0c' + struct.pack('>HHIH', 16, 1, 60, len(rdata)) + rdata
    return struct.pack('>HHHHHH', qid, flags, 1, 1, 0, 0) + question + rr


s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', port))
print('ready', flush=True)
seen = 0
while True:
    q, peer = s.recvfrom(2048)
    seen += 1
    if mode == 'silent' or (mode == 'retry' and seen % 2 == 1):
        continue
    if mode == 'wrong-id':
        s.sendto(answer(q, qid=(struct.unpack('>H', q[:2])[0] + 1) & 0xFFFF), peer)
    if mode == 'wrong-name':
        s.sendto(answer(q, qname=b'\x05other\x07example\x00'), peer)
    if mode == 'truncated':
        s.sendto(answer(q, tc=True), peer)
    elif mode == 'long':
        s.sendto(answer(q, strings=(b'a' * 255, b'b' * 255, b'c' * 90)), peer)
    elif mode == 'servfail':
        s.sendto(answer(q, rcode=2, strings=()), peer)
    else:
        s.sendto(answer(q), peer)
