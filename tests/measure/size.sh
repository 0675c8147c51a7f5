#!/bin/bash
# `make size`: Cortex-M4 flash and RAM of acme_smime.
#
#   1. acme_smime.o alone: arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os
#      -ffunction-sections -fdata-sections; .text/.data/.bss (Berkeley:
#      .text includes .rodata), then code vs constants, per banner section
#      of acme_smime.c (sections.py) and the mail clients' share.
#   2. BearSSL for Cortex-M4 from Debian's source package (apt-get source
#      bearssl; a deb-src entry for bookworm is added if missing), built
#      once under build/measure/bearssl-m4/ with -DBR_ARMEL_CORTEXM_GCC
#      -DBR_USE_UNIX_TIME=0 -DBR_USE_URANDOM=0. Never committed.
#   3. A whole firmware image: tests/measure/fw_main.c (bare-metal main,
#      stub hooks, acme_smime_init + acme_smime_step) + acme_smime.o +
#      BearSSL + newlib-nano (--specs=nano.specs --specs=nosys.specs),
#      --gc-sections; per component from the map file (fwmap.py).
#
# Extra arguments are passed to the acme_smime.c compile (e.g.
# -DACME_SMIME_MAX_AUTHZ=1). Figures also go to build/measure/results/size.kv.
# Needs gcc-arm-none-eabi libnewlib-arm-none-eabi dpkg-dev libbearssl-dev
# libjsmn-dev, and network access the first time (apt-get source).
# Flag variables are split on purpose.
# shellcheck disable=SC2086
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tests/measure
W=build/measure/arm
R=build/measure/results
BR=build/measure/bearssl-m4
CF="-mcpu=cortex-m4 -mthumb -Os -ffunction-sections -fdata-sections"
BRDEFS="-DBR_ARMEL_CORTEXM_GCC -DBR_USE_UNIX_TIME=0 -DBR_USE_URANDOM=0"
mkdir -p "$W/inc" "$R" "$BR"

for tool in arm-none-eabi-gcc arm-none-eabi-size arm-none-eabi-nm; do
	command -v $tool >/dev/null || {
		echo "size.sh: $tool missing (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)" >&2
		exit 1
	}
done

# Only these headers: -I/usr/include would pull glibc into the cross build.
ln -sfn /usr/include/bearssl.h "$W/inc/bearssl.h"
ln -sfn /usr/include/bearssl "$W/inc/bearssl"
ln -sfn /usr/include/jsmn.h "$W/inc/jsmn.h"

echo "== 1. acme_smime.o for Cortex-M4 ($CF${*:+ $*})"
# -g only gives sections.py the source line of each symbol; it changes no
# loaded section.
# -fstack-usage: the largest frames on the target (BearSSL's not included).
arm-none-eabi-gcc $CF -g -fstack-usage -std=c99 -Wall -Wextra -Werror -I"$W/inc" -I. "$@" \
	-c acme_smime.c -o "$W/acme_smime.o"
arm-none-eabi-size "$W/acme_smime.o"
/usr/bin/python3 "$HERE/sections.py" "$W/acme_smime.o" acme_smime.c --kv "$R/size-sections.kv"
echo
echo "largest stack frames of acme_smime.c on Cortex-M4 (gcc -fstack-usage, bytes):"
sort -t"$(printf '\t')" -k2 -n -r "$W/acme_smime.su" | awk 'NR<=8' |
	awk -F'\t' '{n=split($1,a,":"); printf "  %6d  %s\n", $2, a[n]}'
read -r text data bss _ < <(arm-none-eabi-size "$W/acme_smime.o" | awk 'NR==2')
# The same without the POP3 and SMTP clients (the mailbox hooks instead).
arm-none-eabi-gcc $CF -std=c99 -Wall -Wextra -Werror -I"$W/inc" -I. "$@" \
	-DACME_SMIME_NO_MAIL_CLIENTS -c acme_smime.c -o "$W/acme_smime_nomail.o"
text_nomail=$(arm-none-eabi-size "$W/acme_smime_nomail.o" | awk 'NR==2 {print $1}')
echo "with -DACME_SMIME_NO_MAIL_CLIENTS: text $text_nomail"

echo
echo "== 2. BearSSL for Cortex-M4 from Debian's source"
LIB=$BR/libbearssl-m4.a
if [ ! -f "$LIB" ]; then
	bearssl_src() {
		local d
		for d in build/measure/bearssl-src/bearssl-*/; do
			if [ -d "$d" ]; then echo "$d"; return 0; fi
		done
		return 0
	}
	SRC=$(bearssl_src)
	if [ -z "$SRC" ]; then
		if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
			echo "adding a deb-src entry for bookworm (/etc/apt/sources.list.d/debian-src.sources)"
			cat >/etc/apt/sources.list.d/debian-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
			apt-get update -qq
		fi
		mkdir -p build/measure/bearssl-src
		(cd build/measure/bearssl-src && { apt-get source -qq bearssl 2>&1 |
			grep -v 'unsandboxed' || true; })
		SRC=$(bearssl_src)
		[ -n "$SRC" ] || { echo "size.sh: apt-get source bearssl failed" >&2; exit 1; }
	fi
	rm -rf "$BR/obj"
	mkdir -p "$BR/obj"
	# shellcheck disable=SC2016  # $1..$3 belong to the inner sh
	(cd "$SRC" && find src -name '*.c' | sort) |
		xargs -P "$(nproc)" -I{} sh -c 'arm-none-eabi-gcc '"$CF $BRDEFS"' -fstack-usage -I"$1/inc" -I"$1/src" \
			-c "$1/$2" -o "$3/obj/$(echo "$2" | tr / _ | sed "s/\.c$/.o/")"' \
			sh "$SRC" {} "$BR"
	arm-none-eabi-ar rcs "$LIB" "$BR"/obj/*.o
	echo "built $(find "$BR/obj" -name '*.o' | wc -l) objects from $SRC"
fi
echo "$LIB: $(arm-none-eabi-size -t "$LIB" | awk 'END{print $1 " bytes .text (all of BearSSL, before --gc-sections)"}')"

echo
echo "== 3. firmware image: fw_main.c + acme_smime.o + BearSSL + newlib-nano, --gc-sections"
arm-none-eabi-gcc $CF -std=c99 -Wall -Wextra -Werror -I"$W/inc" -I. \
	-c "$HERE/fw_main.c" -o "$W/fw_main.o"
# nosys.specs: the libc system calls are stubs that warn when linked.
arm-none-eabi-gcc $CF --specs=nano.specs --specs=nosys.specs -Wl,--gc-sections \
	-Wl,-Map="$W/fw.map" "$W/fw_main.o" "$W/acme_smime.o" "$LIB" -o "$W/fw.elf" 2>&1 |
	grep -v 'is not implemented and will always fail' || true
arm-none-eabi-size "$W/fw.elf"
/usr/bin/python3 "$HERE/fwmap.py" "$W/fw.map" --top 12 --kv "$R/size-fw.kv"
echo
echo "largest stack frames of the functions in the image (Cortex-M4, gcc -fstack-usage, bytes):"
arm-none-eabi-nm "$W/fw.elf" | awk '$2 ~ /^[tT]$/ {print $3}' | sort -u >"$W/fw.syms"
cat "$BR"/obj/*.su "$W/acme_smime.su" 2>/dev/null |
	awk -F'\t' '{n=split($1,a,":"); print a[n] "\t" $2}' | sort -u |
	awk -F'\t' 'NR==FNR {in_image[$1]=1; next} ($1 in in_image) {print $2 "\t" $1}' "$W/fw.syms" - |
	sort -n -r | awk -F'\t' 'NR<=10 {printf "  %6d  %s\n", $1, $2}'

{
	echo "obj_text=$text"
	echo "obj_text_nomail=$text_nomail"
	echo "obj_data=$data"
	echo "obj_bss=$bss"
	cat "$R/size-sections.kv" "$R/size-fw.kv"
} >"$R/size.kv"
echo
echo "(figures in $R/size.kv)"
