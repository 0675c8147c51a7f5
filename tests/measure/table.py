#!/usr/bin/python3
"""The one table of `make bench`, from the KEY=VALUE files that size.sh,
enroll_measure.sh and bench_pebble.sh leave in DIR (build/measure/results).

  table.py DIR [--markdown FILE]

Prints the table (figures, issue 9 targets, met or missed) and the
machine; --markdown also writes it as a Markdown table.
"""
import datetime
import os
import platform
import re
import subprocess
import sys

args = sys.argv[1:]
if not args:
    sys.exit(__doc__)
d = args[0]
md = args[args.index('--markdown') + 1] if '--markdown' in args else None

kv = {}
for name in ('size.kv', 'ram.kv', 'cpu.kv', 'pebble.kv'):
    path = os.path.join(d, name)
    if not os.path.exists(path):
        continue
    prefix = {'cpu.kv': 'cpu_', 'ram.kv': 'ram_'}.get(name, '')
    for line in open(path):
        k, _, v = line.strip().partition('=')
        if k:
            kv[prefix + k if prefix and not k.startswith(('host_', 'arm_')) else k] = v


def num(k):
    v = kv.get(k)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def n(v):
    return 'n/a' if v is None else format(int(round(v)), ',')


def kb(v):
    return 'n/a' if v is None else '%s B (%.1f KiB)' % (format(int(v), ','), v / 1024.0)


rows = []   # (group, metric, value, target, verdict)


def row(group, metric, value, target='', verdict=''):
    rows.append((group, metric, value, target, verdict))


def miss(value, limit, unit='B'):
    if value is None or limit is None:
        return 'n/a'
    if value <= limit:
        return 'met (%s %s to spare)' % (n(limit - value), unit)
    return 'MISSED by %s %s (%.0f%%)' % (n(value - limit), unit, 100.0 * (value - limit) / limit)


# ---- flash ----
text = num('obj_text')
if text is not None:
    row('flash', 'acme_smime.o .text (Cortex-M4 -Os; code + constants)', kb(text),
        '<= 24 KiB with POP3/SMTP', miss(text, 24 * 1024))
    row('flash', '  of which code / constants', '%s / %s' % (n(num('obj_text_code')), n(num('obj_rodata'))))
    row('flash', 'acme_smime.o .data / .bss', '%s / %s' % (n(num('obj_data')), n(num('obj_bss'))))
    m10, m11 = num('mail_sec10'), num('mail_sec11')
    if m10 is not None:
        row('flash', '  POP3/SMTP clients (section 10 + their engine states)',
            '%s B (without: %s)' % (n(m10 + m11), n(text - m10 - m11)),
            '', 'no ACME_SMIME_NO_POP3/NO_SMTP yet')
if num('fw_total_flash') is not None:
    row('flash', 'firmware image flash (fw_main + lib + BearSSL + newlib-nano)', kb(num('fw_total_flash')))
    row('flash', '  our code / BearSSL / libc+libgcc / start-up+stub',
        '%s / %s / %s / %s' % (n(num('fw_ours_flash')), n(num('fw_bearssl_flash')),
                               n((num('fw_libc_flash') or 0) + (num('fw_libgcc_flash') or 0)),
                               n((num('fw_crt_flash') or 0) + (num('fw_stub_flash') or 0) +
                                 (num('fw_other_flash') or 0))))
    row('flash', 'firmware image RAM (.data+.bss: ctx, work buffer, libc)', kb(num('fw_total_ram')))

# ---- RAM ----
ctx_arm, ctx_host = num('arm_acme_smime_ctx'), num('host_acme_smime_ctx')
work = num('arm_workbuf')
stack = num('ram_stack_peak')
if ctx_arm is not None:
    row('RAM', 'sizeof(acme_smime_ctx) Cortex-M4 / x86-64', '%s / %s B' % (n(ctx_arm), n(ctx_host)))
    row('RAM', '  of which br_ssl_client_context + br_x509_minimal_context',
        '%s B' % n(num('arm_br_ssl_client_context') + num('arm_br_x509_minimal_context')))
    row('RAM', 'work buffer ACME_SMIME_WORKBUF_SIZE (TLS record buffer + HTTP area)',
        '%s B (%s + %s)' % (n(work), n(num('arm_ssl_record_buffer')), n(num('arm_http_area'))))
if stack is not None:
    row('RAM', 'peak stack, complete RFC 8823 enrollment (x86-64, painted)',
        '%s B (state %s)' % (n(stack), kv.get('ram_stack_peak_state', '?')))
    row('RAM', '  POSIX port hooks (own stack; getaddrinfo, stdio)', '%s B' % n(num('ram_hook_stack_peak')))
if ctx_arm is not None and stack is not None:
    total = ctx_arm + work + stack
    row('RAM', 'ctx (M4) + work buffer + peak stack (x86-64)', kb(total), '<= 32 KiB', miss(total, 32 * 1024))
if num('ram_heap_library_allocs') is not None:
    h = num('ram_heap_library_allocs')
    row('RAM', 'heap allocations by the library during the enrollment', n(h), '0',
        'met' if h == 0 else 'MISSED')
    row('RAM', '  by the POSIX port inside hooks (getaddrinfo, stdio)',
        '%s (%s B)' % (n(num('ram_heap_port_allocs')), n(num('ram_heap_port_bytes'))))

# ---- CPU and protocol ----
ir = num('cpu_ir_client')
if ir is not None:
    row('CPU', 'instructions, RFC 8823 enrollment, client side (callgrind)',
        '%s (%s TLS handshakes in this run)' % (n(ir), n(num('cpu_handshakes'))))
    for k, label in (('handshake', 'TLS handshakes'), ('sign', 'ECDSA signing (JWS, CSR)'),
                     ('verify', 'ECDSA check of own signatures'), ('keygen', 'EC key generation'),
                     ('records', 'TLS records'), ('hooks', 'port hooks'),
                     ('rest', 'everything else')):
        v = num('cpu_ir_' + k)
        row('CPU', '  ' + label, '%s (%.1f%%)' % (n(v), 100.0 * v / ir))
# The native-speed run (RAM): mail timing as on a device; under callgrind
# the client is slower and may find the mail at its first POP3 poll.
src = 'ram_' if num('ram_handshakes') is not None else 'cpu_'
hs = num(src + 'handshakes')
if hs is not None:
    acme = num(src + 'conn_acme')
    row('protocol', 'TLS handshakes per RFC 8823 enrollment (ACME / POP3 / SMTP)',
        '%s (%s / %s / %s)' % (n(hs), n(acme), n(num(src + 'conn_pop3')), n(num(src + 'conn_smtp'))),
        'ACME: 1 (floor: 3 in all)', miss(acme, 1, 'handshakes'))
    row('protocol', 'HTTP requests per RFC 8823 enrollment', n(num(src + 'http_requests')),
        'RFC 8555 floor: 8', 'met' if num(src + 'http_requests') <= 8 else 'above the floor')

# ---- Pebble ----
clients = [c for c in ('ours', 'uacme', 'lego') if 'pebble_%s_wall' % c in kv]
for c in clients:
    def p(k):
        return kv.get('pebble_%s_%s' % (c, k), 'n/a')
    irv = num('pebble_%s_ir' % c)
    row('Pebble', '%s: wall s / CPU s / peak RSS kB / instructions / HTTP req / TLS hs' % c,
        '%s / %s / %s / %s / %s / %s' % (p('wall'), p('cpu'), p('rss'), n(irv) if irv else 'n/a',
                                         p('req'), p('hs')))
if 'ours' in clients and 'uacme' in clients:
    oi, ui = num('pebble_ours_ir'), num('pebble_uacme_ir')
    orss, urss = num('pebble_ours_rss'), num('pebble_uacme_rss')
    if oi and ui:
        row('Pebble', 'instructions: ours / uacme', '%.2f (%.1fx fewer)' % (oi / ui, ui / oi),
            '< 1', 'met' if oi < ui else 'MISSED')
    if orss and urss:
        row('Pebble', 'peak RSS: ours / uacme', '%.2f (%.1fx less)' % (orss / urss, urss / orss),
            '< 1', 'met' if orss < urss else 'MISSED')


def machine():
    cpu = '?'
    try:
        cpu = next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration):
        pass
    cores = os.cpu_count()
    osname = '?'
    try:
        osname = re.search(r'PRETTY_NAME="(.*)"', open('/etc/os-release').read()).group(1)
    except (OSError, AttributeError):
        pass

    def ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.split('\n')[0]
        except OSError:
            return '?'
    src = ver(['git', 'describe', '--always', '--dirty']) or '?'
    return ('%s, %s cores, %s, kernel %s; %s; %s; source git %s; date %s' % (
        cpu, cores, osname, platform.release(), ver(['arm-none-eabi-gcc', '--version']),
        ver(['valgrind', '--version']), src, datetime.date.today().isoformat()))


wm = max(len(r[1]) for r in rows) if rows else 10
wv = max(len(r[2]) for r in rows) if rows else 10
group = None
for g, m, v, t, verdict in rows:
    if g != group:
        print('--- %s' % g)
        group = g
    line = '%-*s  %-*s' % (wm, m, wv, v)
    if t or verdict:
        line += '  [%s%s%s]' % (t, ': ' if t and verdict else '', verdict)
    print(line.rstrip())
print('machine: ' + machine())

if md:
    with open(md, 'w') as f:
        f.write('| | Figure | Value | Target | Result |\n|---|---|---|---|---|\n')
        for g, m, v, t, verdict in rows:
            f.write('| %s | %s | %s | %s | %s |\n' % (g, m.strip(), v, t, verdict))
        f.write('\nMachine: %s\n' % machine())
