#!/bin/bash
# Fetch the CA certificates a running Pebble issues under (they are
# regenerated at each start) from its management port:
#
#   fetch_roots.sh DIR OUT.pem [INTERMEDIATES.pem]
#
# DIR is the directory given to pebble_env.sh start. OUT.pem receives
# /roots/0; INTERMEDIATES.pem (default OUT.pem with .pem replaced by
# -intermediates.pem) receives /intermediates/0. Verify an issued chain with
#   openssl verify -CAfile OUT.pem -untrusted INTERMEDIATES.pem leaf.pem
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
	echo "usage: $0 DIR OUT.pem [INTERMEDIATES.pem]" >&2
	exit 2
fi
D=$1
OUT=$2
INTER=${3:-${OUT%.pem}-intermediates.pem}
# shellcheck source=/dev/null
. "$D/env"

fetch() {
	curl -sSf --cacert "$ACME_CA_FILE" -o "$2" "$PEBBLE_MGMT$1"
	if ! grep -q -- '-----BEGIN CERTIFICATE-----' "$2"; then
		echo "fetch_roots: $PEBBLE_MGMT$1 returned no certificate" >&2
		exit 1
	fi
}

fetch /roots/0 "$OUT"
fetch /intermediates/0 "$INTER"
