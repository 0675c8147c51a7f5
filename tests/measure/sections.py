#!/usr/bin/python3
"""Flash use of acme_smime.o per banner section of acme_smime.c.

  sections.py OBJ SOURCE [--nm NM] [--functions N] [--kv FILE]

OBJ is an ELF32 object built with -ffunction-sections -fdata-sections -g
(debug info only gives each symbol its source line; it changes no loaded
section). Every loaded input section is charged to a function or object:

  .text.F, .rodata.F.str1.1 (strings only F uses)   -> F
  .rodata.X, .data.X, .bss.X                        -> object X
  .rodata.CSWTCH.N (switch tables)                  -> the function whose
                                                       relocations name it
  .rodata.str1.1 (strings several functions share)  -> per string, the first
                                                       function or table whose
                                                       relocations point at it
and each function or object to the banner section ("/* ===... N. Title")
of SOURCE its definition line falls in (nm -l). Prints one row per
section (.text = code, .rodata = constants and strings), the mail-client
share (section 10 plus the POP3/SMTP states of section 11) and the
largest functions. --kv FILE writes the figures as KEY=VALUE lines.
"""
import collections
import re
import struct
import subprocess
import sys

args = sys.argv[1:]
if len(args) < 2:
    sys.exit(__doc__)
obj, source = args[0], args[1]
nm = args[args.index('--nm') + 1] if '--nm' in args else 'arm-none-eabi-nm'
top = int(args[args.index('--functions') + 1]) if '--functions' in args else 15
kvfile = args[args.index('--kv') + 1] if '--kv' in args else None

# ---- banner sections of the source ------------------------------------
banners = []   # (first line, number, title)
src = open(source, encoding='utf-8', errors='replace').read().split('\n')
for i, line in enumerate(src):
    if line.startswith('/* ====') and i + 1 < len(src):
        m = re.match(r'^ \* (\d+)\. (.*)$', src[i + 1])
        if m:
            title = m.group(2).rstrip(',').strip()
            banners.append((i + 1, int(m.group(1)), title))
if not banners:
    sys.exit('no "/* ===" banners with " * N. Title" in ' + source)


def banner_of(line):
    best = None
    for first, num, title in banners:
        if line >= first:
            best = (num, title)
    return best or (0, 'before section 1')


# ---- ELF32 little-endian: sections, symbols, relocations ----------------
data = open(obj, 'rb').read()
if data[:4] != b'\x7fELF' or data[4] != 1:
    sys.exit(obj + ': not an ELF32 object')
e_shoff, = struct.unpack_from('<I', data, 0x20)
e_shentsize, e_shnum, e_shstrndx = struct.unpack_from('<HHH', data, 0x2e)
secs = []
for i in range(e_shnum):
    (name, typ, flags, addr, off, size, link, info, align,
     entsize) = struct.unpack_from('<10I', data, e_shoff + i * e_shentsize)
    secs.append(dict(name=name, type=typ, flags=flags, off=off, size=size,
                     link=link, info=info, entsize=entsize))
shstr = secs[e_shstrndx]


def cstr(off):
    return data[off:data.index(b'\0', off)].decode('latin-1')


for s in secs:
    s['name'] = cstr(shstr['off'] + s['name'])
symtab = next(s for s in secs if s['type'] == 2)
strtab = secs[symtab['link']]
syms = []
for i in range(symtab['size'] // 16):
    st_name, st_value, st_size, st_info, st_other, st_shndx = struct.unpack_from(
        '<IIIBBH', data, symtab['off'] + i * 16)
    syms.append(dict(name=cstr(strtab['off'] + st_name), value=st_value,
                     size=st_size, type=st_info & 15, shndx=st_shndx))

SHF_ALLOC = 2
SHT_NOBITS = 8


def loaded(s):
    return s['flags'] & SHF_ALLOC and s['size'] > 0


# ---- source line of every defined symbol (nm -l) ----------------------
lines = {}
out = subprocess.run([nm, '-l', '--defined-only', obj], capture_output=True,
                     text=True, check=True).stdout
for l in out.split('\n'):
    m = re.match(r'^[0-9a-f]+ \w (\S+)\s+(\S+):(\d+)$', l)
    if m:
        lines[m.group(1)] = int(m.group(3))

# ---- charge every loaded section to a symbol ---------------------------
charge = collections.defaultdict(lambda: collections.Counter())  # sym -> kind -> bytes
unowned = collections.Counter()


def kind_of(secname):
    for k in ('.text', '.rodata', '.data', '.bss'):
        if secname == k or secname.startswith(k + '.'):
            return k
    return secname


def first_fn_referring(secidx):
    """Functions whose .rel.text.F relocations point into section secidx."""
    for s in secs:
        if s['type'] != 9 or not s['name'].startswith('.rel.text.'):
            continue
        for j in range(s['size'] // 8):
            r_off, r_info = struct.unpack_from('<II', data, s['off'] + j * 8)
            if syms[r_info >> 8]['shndx'] == secidx:
                return s['name'][len('.rel.text.'):]
    return None


shared_pools = []
owner_of_sec = {}
for idx, s in enumerate(secs):
    if not loaded(s):
        continue
    name, kind = s['name'], kind_of(s['name'])
    m = re.match(r'^\.(?:text|rodata|data|bss)\.(.+?)(?:\.str\d+\.\d+)?$', name)
    if name.startswith('.rodata.str') or name.startswith('.rodata.cst'):
        shared_pools.append(idx)
        continue
    owner = m.group(1) if m else None
    if owner and owner.startswith('CSWTCH'):
        owner = first_fn_referring(idx) or owner
    if owner is None:
        unowned[name] += s['size']
        continue
    owner_of_sec[idx] = owner
    charge[owner][kind] += s['size']

# Shared string pools: split string by string among the functions whose
# literal pools (R_ARM_ABS32, addend in place: ARM uses REL) point at it.
for idx in shared_pools:
    pool = secs[idx]
    taken = {}
    for s in secs:
        if s['type'] != 9 or s['info'] not in owner_of_sec:
            continue
        fn = owner_of_sec[s['info']]
        target = secs[s['info']]
        for j in range(s['size'] // 8):
            r_off, r_info = struct.unpack_from('<II', data, s['off'] + j * 8)
            sym = syms[r_info >> 8]
            if sym['shndx'] != idx or (r_info & 0xff) != 2:   # R_ARM_ABS32
                continue
            addend, = struct.unpack_from('<I', data, target['off'] + r_off)
            start = sym['value'] + addend
            if start not in taken:
                taken[start] = fn
    # Walk the pool string by string (tail-merged strings may start inside
    # another: each byte goes to the owner of the string it starts in).
    pdata = data[pool['off']:pool['off'] + pool['size']]
    covered_end = 0
    total = 0
    for st in sorted(taken):
        if st < covered_end:
            continue
        end = pdata.index(b'\0', st) + 1 if b'\0' in pdata[st:] else len(pdata)
        charge[taken[st]]['.rodata'] += end - st
        total += end - st
        covered_end = end
    if pool['size'] > total:
        unowned[pool['name'] + ' (padding, unreferenced)'] += pool['size'] - total

# ---- per banner section -----------------------------------------------
per = collections.defaultdict(collections.Counter)
fn_rows = []
for owner, c in charge.items():
    line = lines.get(owner)
    if line is None:
        base = re.sub(r'\.(part|isra|constprop|cold)\.\d+.*$', '', owner)
        line = lines.get(base)
    sec = banner_of(line) if line else (99, 'unknown')
    per[sec].update(c)
    fn_rows.append((sum(c.values()), owner, sec[0], line or 0))

# Mail clients: section 10 whole, plus the POP3/SMTP states of the engine.
MAIL_RE = re.compile(r'pop3|smtp|^mail_fail|^reply_recipient')
mail_sec10 = sum(v for (n, _), c in per.items() if n == 10 for v in c.values())
mail_sec11 = sum(tot for tot, owner, n, _ in fn_rows if n == 11 and MAIL_RE.search(owner))
mail_sec11_names = sorted(owner for tot, owner, n, _ in fn_rows
                          if n == 11 and MAIL_RE.search(owner))

kinds = ['.text', '.rodata', '.data', '.bss']
print('%-4s %-52s %7s %8s %6s %6s %7s' % ('sec', 'banner section of acme_smime.c',
                                         'code', 'rodata', 'data', 'bss', 'flash'))
tot = collections.Counter()
for (num, title) in sorted(per):
    c = per[(num, title)]
    tot.update(c)
    print('%-4s %-52s %7d %8d %6d %6d %7d' % (
        num, title[:52], c['.text'], c['.rodata'], c['.data'], c['.bss'],
        c['.text'] + c['.rodata'] + c['.data']))
for name, size in sorted(unowned.items()):
    print('%-4s %-52s %7s %8d' % ('-', name[:52], '', size))
    tot['.rodata'] += size
print('%-4s %-52s %7d %8d %6d %6d %7d' % ('', 'TOTAL', tot['.text'], tot['.rodata'],
      tot['.data'], tot['.bss'], tot['.text'] + tot['.rodata'] + tot['.data']))
strings = sum(x['size'] for x in secs if loaded(x) and re.match(r'^\.rodata.*\.str\d', x['name']))
print('constants: %d B of string literals (log and error texts, protocol keywords), %d B of tables'
      % (strings, tot['.rodata'] - strings))
print()
print('mail clients (what ACME_SMIME_NO_POP3/NO_SMTP could remove; the macros do not exist yet):')
print('  section 10 (POP3/SMTP dialogue machinery)      %6d bytes' % mail_sec10)
print('  section 11 POP3/SMTP engine states (%d functions) %6d bytes' % (
    len(mail_sec11_names), mail_sec11))
print('  together                                       %6d bytes; without them .text+.rodata = %d'
      % (mail_sec10 + mail_sec11, tot['.text'] + tot['.rodata'] - mail_sec10 - mail_sec11))
print()
print('largest functions/objects (bytes incl. their constants, section):')
for size, owner, num, line in sorted(fn_rows, reverse=True)[:top]:
    print('  %6d  %-36s %s (line %d)' % (size, owner, num, line))

if kvfile:
    with open(kvfile, 'w') as f:
        f.write('obj_text_code=%d\nobj_rodata=%d\nobj_data=%d\nobj_bss=%d\n' % (
            tot['.text'], tot['.rodata'], tot['.data'], tot['.bss']))
        f.write('mail_sec10=%d\nmail_sec11=%d\n' % (mail_sec10, mail_sec11))
        f.write('obj_strings=%d\n' % strings)
        for (num, title) in sorted(per):
            c = per[(num, title)]
            f.write('sec%d=%d\n' % (num, c['.text'] + c['.rodata'] + c['.data']))
