#!/bin/bash
# RAM and CPU of a complete RFC 8823 enrollment (`make ram`, `make cpu`).
#
#   tests/measure/enroll_measure.sh ram|cpu|all
#
# ram: sizeof(acme_smime_ctx) and its big members on x86-64 and Cortex-M4
#      (ctx_size.c), the work buffer (ACME_SMIME_WORKBUF_SIZE), the peak
#      stack of each public helper (stack_paint.c), then one
#      enrollment against tests/testenv (the project's RFC 8823 CA, Dovecot
#      POP3, Postfix submission; TESTENV_PORTS=auto) by enroll_stack.c:
#      every library call on a painted stack (LD_BIND_NOW=1), the heap
#      counted by zone (LD_PRELOAD=malloc_zone.so): the library must make
#      no allocation; the POSIX port's (getaddrinfo, stdio) are shown apart.
# cpu: the same enrollment under valgrind --tool=callgrind (enroll_stack
#      --plain, BearSSL linked statically so every function has a name),
#      split by cgsplit.py; TLS handshakes and HTTP requests from the
#      engine's counters, TCP connections per server from the hooks.
#
# Figures go to build/measure/results/{ram,cpu}.kv. The host programs are
# built here (gcc -O2 -g, Debian's libbearssl.a).
# Flag variables are split on purpose.
# shellcheck disable=SC2086
set -euo pipefail
cd "$(dirname "$0")/../.."
what=${1:-all}
case $what in ram|cpu|all) ;; *) echo "usage: $0 ram|cpu|all" >&2; exit 2 ;; esac
HERE=tests/measure
B=build/measure/host
R=build/measure/results
mkdir -p "$B" "$R"

CC=${CC:-gcc}
# MEASURE_CFLAGS: a configuration to measure, e.g. -DACME_SMIME_HTTP_AREA=4608
# (the smallest work buffer acme_smime_init accepts).
MEASURE_CFLAGS=${MEASURE_CFLAGS:-}
HOST_CFLAGS="-std=c99 -Wall -Wextra -Werror -O2 -g $MEASURE_CFLAGS"
$CC $HOST_CFLAGS -I. -Iport/posix -Iport/common "$HERE/enroll_stack.c" port/posix/acme_smime_posix.c \
	port/common/http01.c port/posix/flash_file.c acme_smime.c -l:libbearssl.a -o "$B/enroll_stack"
$CC -O2 -Wall -Wextra -shared -fPIC "$HERE/malloc_zone.c" -o "$B/malloc_zone.so" -ldl

T=$(mktemp -d /tmp/acme-smime-measure.XXXXXX)
chmod 755 "$T"   # the mail servers run as nobody
cleanup() {
	bash tests/testenv stop "$T/env" >/dev/null 2>&1 || true
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_env() {
	TESTENV_PORTS=auto bash tests/testenv start "$T/env" >"$T/testenv.log" 2>&1 || {
		cat "$T/testenv.log" >&2
		exit 1
	}
	set -a
	# shellcheck disable=SC1091
	. "$T/env/env"
	set +a
}

kv() { sed -n 's/^kv: //p' "$1"; }

ram() {
	local W=build/measure/arm
	echo "== RAM: structures (bytes)"
	$CC -std=c99 $MEASURE_CFLAGS -I. "$HERE/ctx_size.c" -o "$B/ctx_size"
	"$B/ctx_size" >"$T/host.sizes"
	mkdir -p "$W/inc"
	ln -sfn /usr/include/bearssl.h "$W/inc/bearssl.h"
	ln -sfn /usr/include/bearssl "$W/inc/bearssl"
	ln -sfn /usr/include/jsmn.h "$W/inc/jsmn.h"
	arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os -std=c99 -fno-common -DSIZES_AS_SYMBOLS $MEASURE_CFLAGS \
		-I"$W/inc" -I. -c "$HERE/ctx_size.c" -o "$W/ctx_size.o"
	arm-none-eabi-nm -S -t d "$W/ctx_size.o" | awk '{sub(/^sizeof_/, "", $4); print $4, $2 + 0}' >"$T/arm.sizes"
	printf '%-28s %9s %12s\n' structure x86-64 cortex-m4
	while read -r name size; do
		printf '%-28s %9d %12d\n' "$name" "$size" "$(awk -v n="$name" '$1==n{print $2}' "$T/arm.sizes")"
	done <"$T/host.sizes"

	echo
	echo "== RAM: peak stack of each public helper (stack_paint.c, x86-64)"
	$CC $HOST_CFLAGS -I. "$HERE/stack_paint.c" acme_smime.c -l:libbearssl.a -o "$B/stack_paint"
	LD_BIND_NOW=1 "$B/stack_paint" | grep 'peak stack'

	echo
	echo "== RAM: a complete RFC 8823 enrollment on a painted stack, heap counted by zone"
	start_env
	LD_BIND_NOW=1 LD_PRELOAD="$PWD/$B/malloc_zone.so" "$B/enroll_stack" >"$T/ram.out" 2>"$T/ram.err" || {
		cat "$T/ram.out" "$T/ram.err" >&2
		exit 1
	}
	grep -v '^kv:' "$T/ram.out"
	{
		awk '{print "host_" $1 "=" $2}' "$T/host.sizes"
		awk '{print "arm_" $1 "=" $2}' "$T/arm.sizes"
		kv "$T/ram.out"
	} >"$R/ram.kv"
	local lib
	lib=$(sed -n 's/^heap_library_allocs=//p' "$R/ram.kv")
	if [ "$lib" != 0 ]; then
		echo "FAIL: the library allocated $lib times" >&2
		exit 1
	fi
}

cpu() {
	echo
	echo "== CPU: the same enrollment under callgrind (client side)"
	[ -n "${ACME_DIRECTORY:-}" ] || start_env
	valgrind --tool=callgrind --callgrind-out-file="$T/cg.out" "$B/enroll_stack" --plain \
		>"$T/cpu.out" 2>"$T/cpu.err" || {
		cat "$T/cpu.out" "$T/cpu.err" >&2
		exit 1
	}
	cp "$T/cg.out" "$B/callgrind.enroll.out"
	/usr/bin/python3 "$HERE/cgsplit.py" "$T/cg.out" --kv "$T/cpu.kv"
	grep -E '^TLS handshakes' "$T/cpu.out"
	{ cat "$T/cpu.kv"; kv "$T/cpu.out"; } >"$R/cpu.kv"
	echo "(callgrind_annotate --inclusive=yes $B/callgrind.enroll.out for details)"
}

case $what in
	ram) ram ;;
	cpu) cpu ;;
	all) ram; cpu ;;
esac
