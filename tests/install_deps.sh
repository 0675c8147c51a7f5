#!/bin/sh
# Install the Debian packages that building and testing acme_smime need.
# Idempotent and quick: when every package is already installed, apt is not
# touched at all (not even `apt-get update`).
#
# To add a package, append it to PACKAGES below (one list for everything:
# build, unit tests, demo, fuzzing, cross compilers...).
# libclang-rt-14-dev holds the ASan/UBSan and libFuzzer runtimes that
# clang -fsanitize=... links; apt only recommends it, and recommends are
# not installed here.
set -eu

PACKAGES="
    build-essential
    clang
    clang-14
    libclang-rt-14-dev
    libfuzzer-14-dev
    libbearssl-dev
    libjsmn-dev
    libcmocka-dev
    python3
    python3-jwcrypto
    python3-cryptography
    openssl
    pkg-config
    valgrind
    pebble
    curl
    iproute2
    tcpdump
    python3-dkim
    python3-nacl
    python3-aiosmtpd
    dovecot-core
    dovecot-pop3d
    postfix
    liblwip-dev
    gcc-arm-none-eabi
    libnewlib-arm-none-eabi
    dpkg-dev
    uacme
    lego
    time
"

missing=""
for pkg in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing="$missing $pkg"
    fi
done

if [ -z "$missing" ]; then
    echo "install_deps: all packages already installed"
    exit 0
fi

echo "install_deps: installing:$missing"

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install_deps: not root and sudo is not available" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Postfix would ask how to configure itself: the tests run it from a
# private configuration, so none is wanted here.
echo "postfix postfix/main_mailer_type select No configuration" |
    $SUDO debconf-set-selections
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086  # word splitting of $missing is intended
$SUDO env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends $missing
