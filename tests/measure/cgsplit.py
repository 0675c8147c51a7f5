#!/usr/bin/python3
"""Split the instructions of an enrollment, from a callgrind output file,
into what a firmware engineer asks about. Client side only: the count
starts at the calls the program makes into the library (acme_smime_init,
acme_smime_step, ...), so start-up, reading PEM files and the driver loop
are left out (the whole-process total is printed too).

  cgsplit.py callgrind.out [--lib acme_smime.c] [--kv FILE]

Categories (inclusive costs of call arcs, so nothing is counted twice):
  TLS handshakes    arcs into br_ssl_hs_client_run (BearSSL's handshake
                    code: ECDHE, X.509 chain validation, the server's
                    signature, key schedule, Finished)
  TLS records       the rest of what the library's calls into br_ssl_*
                    cost: AES-GCM/ChaCha20 of application data, record
                    framing
  ECDSA signing     the library's calls into br_ecdsa_*sign* (JWS, CSR)
  ECDSA self-check  the library's calls into br_ecdsa_*vrfy* (each JWS
                    signature is verified before it leaves)
  key generation    the library's calls into br_ec_keygen, br_ec_compute_pub
  port hooks        the library's calls into the port (enroll_stack.c's
                    wrappers, port/posix/*.c, port/common/http01.c):
                    sockets, getaddrinfo, clock, entropy, log, flash,
                    http-01 responder
  everything else   the library's own code: JSON, JWS/base64url, SHA-256
                    of requests, HTTP, POP3/SMTP, mail checks, CSR, store
"""
import collections
import re
import sys

args = sys.argv[1:]
if not args:
    sys.exit(__doc__)
path = args[0]
lib = args[args.index('--lib') + 1] if '--lib' in args else 'acme_smime.c'
kvfile = args[args.index('--kv') + 1] if '--kv' in args else None

files = {}     # id -> name (fl/fi/fe/cfi/cfl share one table)
fns = {}       # id -> name
fn_file = {}   # fn name -> file name where it is defined (first fn= seen)
self_cost = collections.Counter()
arcs = collections.Counter()   # (caller, callee) -> inclusive cost
total = 0
events = None


def name_of(table, spec):
    m = re.match(r'^\((\d+)\)(?: (.*))?$', spec)
    if not m:
        return spec
    if m.group(2) is not None:
        table[m.group(1)] = m.group(2)
    return table.get(m.group(1), '?')


cur_file = cur_fn = None
call_pending = None
with open(path, errors='replace') as f:
    for line in f:
        line = line.rstrip('\n')
        if not line:
            continue
        c = line[0]
        if c.isdigit() or c in '+-*':
            parts = line.split()
            cost = int(parts[1]) if len(parts) > 1 else 0
            if call_pending is not None:
                arcs[(cur_fn, call_pending)] += cost
                call_pending = None
            else:
                self_cost[cur_fn] += cost
            continue
        m = re.match(r'^(summary|totals|events):\s*(.*)$', line)
        if m:
            if m.group(1) == 'events':
                events = m.group(2).split()
            else:
                total = max(total, int(m.group(2).split()[0]))
            continue
        key, _, val = line.partition('=')
        if key == 'fl':
            cur_file = name_of(files, val)
        elif key in ('fi', 'fe'):
            name_of(files, val)
        elif key == 'fn':
            cur_fn = name_of(fns, val)
            fn_file.setdefault(cur_fn, cur_file)
        elif key in ('cfi', 'cfl'):
            name_of(files, val)
        elif key == 'cfn':
            callee = name_of(fns, val)
        elif key == 'calls':
            call_pending = callee

if events and events[0] != 'Ir':
    sys.exit('expected Ir as the first event, got %s' % events)


def base(fn):
    return fn.split("'")[0]


def in_lib(fn):
    return (fn_file.get(fn) or '').endswith('/' + lib) or fn_file.get(fn) == lib


def arcs_into(pred_callee, pred_caller=lambda fn: True):
    return sum(c for (a, b), c in arcs.items()
               if pred_callee(base(b)) and pred_caller(a) and not pred_callee(base(a)))


# Entry: the program's calls into the library.
client = arcs_into(lambda fn: fn.startswith('acme_smime_') and in_lib(fn),
                   lambda fn: not in_lib(fn))
handshake = arcs_into(lambda fn: fn == 'br_ssl_hs_client_run')
ssl_total = arcs_into(lambda fn: fn.startswith('br_ssl_'), in_lib)
sign = arcs_into(lambda fn: re.match(r'br_ecdsa_.*sign', fn) is not None, in_lib)
verify = arcs_into(lambda fn: re.match(r'br_ecdsa_.*vrfy', fn) is not None, in_lib)
keygen = arcs_into(lambda fn: fn in ('br_ec_keygen', 'br_ec_compute_pub'), in_lib)
PORT_FILES = re.compile(r'(enroll_stack|acme_smime_posix|flash_file|acme-smime-enroll)\.c$')
hooks = sum(c for (a, b), c in arcs.items()
            if in_lib(a) and not in_lib(b) and PORT_FILES.search(fn_file.get(b) or ''))
records = ssl_total - handshake
rest = client - ssl_total - sign - verify - keygen - hooks

rows = [
    ('TLS handshakes', handshake),
    ('TLS records (application data)', records),
    ('ECDSA signing (JWS, CSR)', sign),
    ('ECDSA verification of own signatures', verify),
    ('EC key generation', keygen),
    ('port hooks (POSIX: sockets, DNS, log...)', hooks),
    ('everything else (library code)', rest),
]
print('%-44s %14s %7s' % ('instructions (callgrind Ir)', 'Ir', 'share'))
for name, v in rows:
    print('%-44s %14s %6.1f%%' % (name, format(v, ','), 100.0 * v / client if client else 0))
print('%-44s %14s' % ('client side (library calls, incl. hooks)', format(client, ',')))
print('%-44s %14s' % ('whole process', format(total, ',')))

if kvfile:
    with open(kvfile, 'w') as f:
        for k, v in (('ir_client', client), ('ir_total', total), ('ir_handshake', handshake),
                     ('ir_records', records), ('ir_sign', sign), ('ir_verify', verify),
                     ('ir_keygen', keygen), ('ir_hooks', hooks), ('ir_rest', rest)):
            f.write('%s=%d\n' % (k, v))
