#!/bin/sh
# Cortex-M4 code size of acme_smime.c alone (BearSSL and libc not included):
# arm-none-eabi-gcc -Os, one section per function, then arm-none-eabi-size
# and the largest functions. Needs gcc-arm-none-eabi and
# libnewlib-arm-none-eabi (make measure-deps).
#   tests/measure/armsize.sh [extra CFLAGS...]
set -eu
W=build/measure/arm
mkdir -p "$W/inc"
# Only these headers: -I/usr/include would pull glibc into the cross build.
ln -sfn /usr/include/bearssl.h "$W/inc/bearssl.h"
ln -sfn /usr/include/bearssl "$W/inc/bearssl"
ln -sfn /usr/include/jsmn.h "$W/inc/jsmn.h"
arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os -ffunction-sections -fdata-sections \
	-std=c99 -Wall -Wextra -Werror -I"$W/inc" -I. "$@" -c acme_smime.c -o "$W/acme_smime.o"
arm-none-eabi-size "$W/acme_smime.o"
echo "largest functions (bytes):"
arm-none-eabi-nm --size-sort -S -t d "$W/acme_smime.o" | tail -12 |
	awk "{ print \"  \" \$2 \" \" \$4 }"
