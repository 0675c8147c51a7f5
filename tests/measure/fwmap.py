#!/usr/bin/python3
"""Per-component size of a linked image from its GNU ld map file
(-Wl,-Map=FILE): our code (acme_smime.o), the firmware stub (fw_main.o),
BearSSL, libc (newlib-nano, libnosys), libgcc and the C start-up files.

  fwmap.py FILE.map [--top N] [--kv FILE]

FLASH = everything loaded except .bss (code, constants, .data initial
values, unwind tables); RAM = .data + .bss (the stack and heap are not
sections here). --top N also lists the N largest BearSSL objects.
"""
import collections
import os
import re
import sys

args = sys.argv[1:]
if not args:
    sys.exit(__doc__)
path = args[0]
top = int(args[args.index('--top') + 1]) if '--top' in args else 0
kvfile = args[args.index('--kv') + 1] if '--kv' in args else None

text = open(path, errors='replace').read().split('\n')
try:
    start = next(i for i, l in enumerate(text) if l.startswith('Linker script and memory map'))
except StopIteration:
    sys.exit(path + ': not a GNU ld map file')


def component(f):
    """Map an input file ("dir/lib.a(member.o)" or "dir/x.o") to a component."""
    m = re.match(r'^(.*)\((.*)\)$', f)
    archive, member = (m.group(1), m.group(2)) if m else (f, None)
    base = os.path.basename(archive)
    if base == 'acme_smime.o':
        return 'our code (acme_smime.o)', None
    if base == 'fw_main.o':
        return 'firmware stub (fw_main.o)', None
    if 'bearssl' in base:
        return 'BearSSL', member
    if base.startswith('libgcc'):
        return 'libgcc', member
    if base.startswith(('libc', 'libg', 'libnosys', 'libm')):
        return 'libc (newlib-nano)', member
    if base.startswith('crt'):
        return 'C start-up (crt*.o)', None
    return 'other: ' + base, member


ENTRY = re.compile(r'^ (\S+)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$')
OUT = re.compile(r'^(\.[\w.]+|[A-Za-z_][\w.]*)(\s|$)')
out_sec = None
pending = None
sums = collections.defaultdict(collections.Counter)     # component -> kind -> bytes
members = collections.Counter()                          # BearSSL member -> flash bytes
covered = {}                                             # output section -> end of counted bytes


def kind_of(sec):
    if sec in ('.bss', '.noinit') or sec.startswith('.bss'):
        return 'bss'
    if sec.startswith('.data'):
        return 'data'
    if sec.startswith('.rodata'):
        return 'rodata'
    if sec.startswith('.text'):
        return 'text'
    return 'other'   # .ARM.exidx, .init_array, ...


for l in text[start:]:
    m = OUT.match(l)
    if m and not l.startswith(' '):
        out_sec = m.group(1)
        continue
    if re.match(r'^ \S+$', l):
        pending = l.strip()
        continue
    m = re.match(r'^ \*fill\*\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)', l)
    if m and out_sec and not out_sec.startswith(('.debug', '.comment', '.ARM.attributes')):
        a, n = int(m.group(1), 16), int(m.group(2), 16)
        if a >= covered.get(out_sec, 0):
            sums['alignment padding'][kind_of(out_sec) if out_sec != '.text' else 'text'] += n
            covered[out_sec] = a + n
        continue
    m = ENTRY.match(l)
    if not (m and out_sec):
        pending = None
        continue
    name = m.group(1) or pending
    pending = None
    addr, size, f = int(m.group(2), 16), int(m.group(3), 16), m.group(4).strip()
    if size == 0 or f.startswith('load address') or '=' in f or not name:
        continue
    if out_sec.startswith(('.debug', '.comment', '.ARM.attributes', '.stab')) or \
            out_sec == '/DISCARD/':
        continue
    if addr == 0 and not out_sec.startswith(('.text', '.rodata', '.data', '.bss')):
        continue
    # Merged string sections are listed with overlapping ranges: count
    # each byte once, for the first input section that claims it.
    end = addr + size
    if addr < covered.get(out_sec, 0):
        size = max(0, end - covered[out_sec])
    covered[out_sec] = max(covered.get(out_sec, 0), end)
    if size == 0:
        continue
    comp, member = component(f)
    # Classify by the output section, except constants placed in .text.
    k = kind_of(name if out_sec == '.text' else out_sec)
    if out_sec == '.text' and k not in ('text', 'rodata'):
        k = 'text'
    sums[comp][k] += size
    if comp == 'BearSSL' and k != 'bss':
        members[member] += size

KINDS = ('text', 'rodata', 'data', 'bss', 'other')


def flash(c):
    return c['text'] + c['rodata'] + c['data'] + c['other']


def ram(c):
    return c['data'] + c['bss']


order = sorted(sums, key=lambda k: -flash(sums[k]))
print('%-28s %8s %8s %6s %7s %6s %8s %7s' % ('component', '.text', '.rodata', '.data',
                                           '.bss', 'other', 'FLASH', 'RAM'))
tot = collections.Counter()
for comp in order:
    c = sums[comp]
    tot.update(c)
    print('%-28s %8d %8d %6d %7d %6d %8d %7d' % (comp, c['text'], c['rodata'], c['data'],
                                               c['bss'], c['other'], flash(c), ram(c)))
print('%-28s %8d %8d %6d %7d %6d %8d %7d' % ('TOTAL', tot['text'], tot['rodata'], tot['data'],
                                           tot['bss'], tot['other'], flash(tot), ram(tot)))
print('(other = .ARM.exidx unwind table, init/fini arrays; RAM excludes the stack)')
if top:
    print('\nlargest BearSSL objects in the image (flash bytes):')
    for member, size in members.most_common(top):
        print('  %6d  %s' % (size, member))

if kvfile:
    keys = {'our code (acme_smime.o)': 'ours', 'firmware stub (fw_main.o)': 'stub',
            'BearSSL': 'bearssl', 'libc (newlib-nano)': 'libc', 'libgcc': 'libgcc',
            'C start-up (crt*.o)': 'crt'}
    with open(kvfile, 'w') as f:
        for comp, c in sums.items():
            k = keys.get(comp, 'other')
            f.write('fw_%s_flash=%d\nfw_%s_ram=%d\n' % (k, flash(c), k, ram(c)))
        f.write('fw_total_flash=%d\nfw_total_ram=%d\n' % (flash(tot), ram(tot)))
