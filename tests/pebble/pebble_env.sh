#!/bin/bash
# A private Pebble (RFC 8555 test CA) and pebble-challtestsrv (its DNS) on
# 127.0.0.1, for the integration tests. Everything lives in DIR.
#
#   pebble_env.sh start DIR [--eab]   generate TLS certs and config, start
#                                     both servers, wait until they answer,
#                                     write DIR/env (sourceable)
#   pebble_env.sh stop DIR            stop both by PID
#
# Ports (PEBBLE_PORT_BASE, default 14100; each test run picks its own base):
#   base+0 ACME (https://localhost:PORT/dir)   base+1 Pebble management
#   base+2 challtestsrv DNS (udp+tcp)          base+3 challtestsrv management
#   base+4 HTTP01_PORT: where Pebble fetches http-01 key authorizations (the
#          client under test listens there)   base+5 tlsPort (never bound)
#
# Pebble reads its knobs from the environment, which passes through:
# PEBBLE_VA_NOSLEEP, PEBBLE_VA_SLEEPTIME, PEBBLE_WFE_NONCEREJECT,
# PEBBLE_AUTHZREUSE, PEBBLE_VA_ALWAYS_VALID, PEBBLE_CHAIN_LENGTH,
# PEBBLE_ALTERNATE_ROOTS. PEBBLE_CERT_TYPE=ec|rsa picks the key type of
# Pebble's own HTTPS certificate (default ec).
#
# For clients that reach Pebble over a network (the lwIP test runs all of
# this inside a network namespace; unset, nothing changes):
#   PEBBLE_LISTEN_ADDR   address of the ACME port (default 127.0.0.1); the
#                        management port and challtestsrv stay on 127.0.0.1
#   PEBBLE_DEFAULT_IPV4  the A record challtestsrv gives every name, i.e.
#                        where Pebble connects for http-01 (default 127.0.0.1)
#   PEBBLE_EXTRA_SAN     more subjectAltName entries for Pebble's HTTPS
#                        certificate, e.g. "IP:10.99.0.1,DNS:acme.test"
#
# DIR/env defines ACME_DIRECTORY, ACME_CA_FILE (the CA of Pebble's HTTPS
# certificate, not of the certificates it issues: see fetch_roots.sh),
# PEBBLE_MGMT (https://localhost:PORT), CHALLTEST_MGMT, HTTP01_PORT,
# PEBBLE_LOG, EAB_KID and EAB_HMAC_KEY (empty without --eab), PEBBLE_PIDS,
# PEBBLE_LISTEN_ADDR (the ACME port's address).
#
# Needs the Debian packages pebble, openssl and curl (tests/pebble/packages.txt).
set -euo pipefail

usage() {
	echo "usage: $0 start DIR [--eab] | stop DIR" >&2
	exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
D=$2
shift 2
EAB=0
for a in "$@"; do
	case $a in
		--eab) EAB=1 ;;
		*) usage ;;
	esac
done

BASE=${PEBBLE_PORT_BASE:-14100}
ACME_PORT=$BASE
MGMT_PORT=$((BASE + 1))
DNS_PORT=$((BASE + 2))
CTS_MGMT_PORT=$((BASE + 3))
HTTP01_PORT=$((BASE + 4))
TLS_PORT=$((BASE + 5))
LISTEN_ADDR=${PEBBLE_LISTEN_ADDR:-127.0.0.1}
DEFAULT_IPV4=${PEBBLE_DEFAULT_IPV4:-127.0.0.1}
SAN="DNS:localhost,IP:127.0.0.1${PEBBLE_EXTRA_SAN:+,$PEBBLE_EXTRA_SAN}"
# curl must reach "localhost" at the ACME port's address when it moved.
ACME_RESOLVE=()
if [ "$LISTEN_ADDR" != 127.0.0.1 ]; then
	ACME_RESOLVE=(--resolve "localhost:$ACME_PORT:$LISTEN_ADDR")
fi
# A fixed test key: base64url of 48 bytes, as Pebble's example config has.
EAB_KID_VALUE=kid-1
EAB_KEY_VALUE=zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W

log() { echo "pebble_env: $*" >&2; }

make_certs() {
	local kopt
	if [ "${PEBBLE_CERT_TYPE:-ec}" = rsa ]; then
		kopt=(-newkey rsa:2048)
	else
		kopt=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
	fi
	mkdir -p "$D/tls"
	openssl req -x509 "${kopt[@]}" -nodes -days 30 \
		-keyout "$D/tls/ca.key" -out "$D/tls/ca.pem" \
		-subj "/CN=acme_smime test Pebble HTTPS CA" \
		-addext basicConstraints=critical,CA:TRUE \
		-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
	openssl req -new "${kopt[@]}" -nodes \
		-keyout "$D/tls/key.pem" -out "$D/tls/leaf.csr" \
		-subj /CN=localhost 2>/dev/null
	printf '%s\n' \
		'basicConstraints=critical,CA:FALSE' \
		'keyUsage=critical,digitalSignature,keyEncipherment' \
		'extendedKeyUsage=serverAuth' \
		"subjectAltName=$SAN" >"$D/tls/leaf.ext"
	openssl x509 -req -in "$D/tls/leaf.csr" -days 30 \
		-CA "$D/tls/ca.pem" -CAkey "$D/tls/ca.key" -CAcreateserial \
		-extfile "$D/tls/leaf.ext" -out "$D/tls/cert.pem" 2>/dev/null
	rm -f "$D/tls/leaf.csr" "$D/tls/leaf.ext"
}

write_config() {
	local eab_lines
	if [ "$EAB" = 1 ]; then
		eab_lines="\"externalAccountBindingRequired\": true,
    \"externalAccountMACKeys\": { \"$EAB_KID_VALUE\": \"$EAB_KEY_VALUE\" }"
	else
		eab_lines='"externalAccountBindingRequired": false'
	fi
	cat >"$D/pebble-config.json" <<EOF
{
  "pebble": {
    "listenAddress": "$LISTEN_ADDR:$ACME_PORT",
    "managementListenAddress": "127.0.0.1:$MGMT_PORT",
    "certificate": "$D/tls/cert.pem",
    "privateKey": "$D/tls/key.pem",
    "httpPort": $HTTP01_PORT,
    "tlsPort": $TLS_PORT,
    "ocspResponderURL": "",
    $eab_lines
  }
}
EOF
}

port_busy() {
	# ss lists listening TCP and bound UDP sockets; any match is a clash.
	ss -Hltun "( sport = :$1 )" | grep -q .
}

# wait_for NAME COMMAND...: retry for up to 15 s.
wait_for() {
	local name=$1 _
	shift
	for _ in $(seq 1 300); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.05
	done
	log "$name did not answer; see $D/*.log"
	return 1
}

# alive PID: is it still running (not a zombie)?
alive() { kill -0 "$1" 2>/dev/null; }

start() {
	local p cts_pid pebble_pid
	for p in $ACME_PORT $MGMT_PORT $DNS_PORT $CTS_MGMT_PORT $HTTP01_PORT; do
		if port_busy "$p"; then
			log "port $p is in use (set PEBBLE_PORT_BASE)"
			exit 1
		fi
	done
	if [ -f "$D/pids" ]; then
		log "$D/pids exists: stop the previous instance first"
		exit 1
	fi
	mkdir -p "$D"
	make_certs
	write_config

	# challtestsrv answers every A query with 127.0.0.1 (or
	# PEBBLE_DEFAULT_IPV4; and no AAAA), so Pebble validates http-01 for
	# any name against our listener.
	pebble-challtestsrv -dns01 "127.0.0.1:$DNS_PORT" -http01 "" -https01 "" \
		-tlsalpn01 "" -management "127.0.0.1:$CTS_MGMT_PORT" \
		-defaultIPv4 "$DEFAULT_IPV4" -defaultIPv6 "" \
		>"$D/challtestsrv.log" 2>&1 </dev/null &
	cts_pid=$!
	pebble -config "$D/pebble-config.json" -dnsserver "127.0.0.1:$DNS_PORT" \
		>"$D/pebble.log" 2>&1 </dev/null &
	pebble_pid=$!
	echo "$pebble_pid $cts_pid" >"$D/pids"

	if ! wait_for challtestsrv curl -s -o /dev/null \
			"http://127.0.0.1:$CTS_MGMT_PORT/" ||
		! wait_for pebble curl -sf --cacert "$D/tls/ca.pem" \
			${ACME_RESOLVE[@]+"${ACME_RESOLVE[@]}"} \
			"https://localhost:$ACME_PORT/dir" ||
		! wait_for pebble-management curl -sf --cacert "$D/tls/ca.pem" \
			"https://localhost:$MGMT_PORT/roots/0"; then
		stop
		exit 1
	fi
	if ! alive "$pebble_pid" || ! alive "$cts_pid"; then
		stop
		exit 1
	fi
	local eab_kid="" eab_key=""
	if [ "$EAB" = 1 ]; then
		eab_kid=$EAB_KID_VALUE
		eab_key=$EAB_KEY_VALUE
	fi

	cat >"$D/env" <<EOF
ACME_DIRECTORY=https://localhost:$ACME_PORT/dir
ACME_CA_FILE=$D/tls/ca.pem
PEBBLE_MGMT=https://localhost:$MGMT_PORT
CHALLTEST_MGMT=http://127.0.0.1:$CTS_MGMT_PORT
HTTP01_PORT=$HTTP01_PORT
PEBBLE_LOG=$D/pebble.log
PEBBLE_PIDS="$pebble_pid $cts_pid"
EAB_KID=$eab_kid
EAB_HMAC_KEY=$eab_key
PEBBLE_LISTEN_ADDR=$LISTEN_ADDR
EOF
	log "up: https://localhost:$ACME_PORT/dir (eab=$EAB, pids $pebble_pid $cts_pid)"
}

stop() {
	local pid pids any _
	[ -f "$D/pids" ] || return 0
	read -r -a pids <"$D/pids"
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for _ in $(seq 1 100); do
		any=0
		for pid in "${pids[@]}"; do
			if alive "$pid"; then any=1; fi
		done
		[ "$any" = 0 ] && break
		sleep 0.05
	done
	for pid in "${pids[@]}"; do
		kill -9 "$pid" 2>/dev/null || true
	done
	rm -f "$D/pids"
}

case $cmd in
	start) start ;;
	stop) stop ;;
	*) usage ;;
esac
