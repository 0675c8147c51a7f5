#!/bin/bash
# `make bench-pebble`: the same issuance (a new account, one order for two
# dns names, http-01) by our CLI, Debian's uacme and Debian's lego, against
# one private Pebble (tests/pebble/pebble_env.sh; PEBBLE_VA_NOSLEEP=1,
# PEBBLE_WFE_NONCEREJECT=0, PEBBLE_AUTHZREUSE=0). Per client:
#
#   wall, user+sys CPU, peak RSS   /usr/bin/time -v, median of BENCH_RUNS
#                                  runs (default 3), each with a fresh
#                                  account
#   instructions                   valgrind --tool=callgrind, one run, the
#                                  client process only (hook children not
#                                  traced); lego: n/a (valgrind 3.19 aborts
#                                  on Go binaries)
#   HTTP requests                  Pebble's "-> calling handler()" log lines
#                                  during the run
#   TLS handshakes, TCP conns      ClientHello records and SYNs to Pebble's
#                                  ACME port, captured with tcpdump on lo
#                                  (root; probe connections, subtracted,
#                                  prove the capture live); "n/a" without
#                                  tcpdump
#
# uacme has no CA-file option: it runs in a private mount namespace
# (unshare -m) where Pebble's HTTPS CA is bind-mounted over
# /etc/ssl/certs/ca-certificates.crt. It runs twice (`new`, then `issue`):
# its figures are the sum (peak RSS: the larger). Its http-01 hook
# (uacme_hook.sh) writes key authorizations that python3 -m http.server
# serves on Pebble's validation port; our CLI and lego serve http-01
# themselves. Keys: EC P-256 everywhere (uacme -t EC -b 256, lego
# --key-type ec256, our default).
#
# Environment: BENCH_RUNS, BENCH_CLIENTS (default "ours uacme lego"),
# PEBBLE_PORT_BASE (default: a free range), KEEP=1 keeps the work dir.
# Figures go to build/measure/results/pebble.kv.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/tests/measure
R=$ROOT/build/measure/results
CLI=$ROOT/build/acme-smime-enroll
RUNS=${BENCH_RUNS:-3}
CLIENTS=${BENCH_CLIENTS:-ours uacme lego}
NAMES=(bench-a.example.com bench-b.example.com)
mkdir -p "$R"
[ -x "$CLI" ] || { echo "bench_pebble: $CLI missing (make build/acme-smime-enroll)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench_pebble: /usr/bin/time missing (apt-get install time)" >&2; exit 1; }

W=$(mktemp -d /tmp/acme-smime-bench.XXXXXX)
chmod 755 "$W"
HTTPD_PID=
TCPDUMP_PID=
cleanup() {
	stop_httpd
	stop_capture
	bash "$ROOT/tests/pebble/pebble_env.sh" stop "$W/pebble" >/dev/null 2>&1 || true
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A base port with 6 free ports above it.
if [ -z "${PEBBLE_PORT_BASE:-}" ]; then
	PEBBLE_PORT_BASE=$(/usr/bin/python3 - <<'EOF'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 40000, 10)
    try:
        ss = []
        for p in range(base, base + 6):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, kind)
                s.bind(('127.0.0.1', p))
                ss.append(s)
        print(base)
        break
    except OSError:
        pass
    finally:
        for s in ss:
            s.close()
EOF
)
fi
export PEBBLE_PORT_BASE PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0
bash "$ROOT/tests/pebble/pebble_env.sh" start "$W/pebble" 2>"$W/pebble-start.log" || {
	cat "$W/pebble-start.log" >&2
	exit 1
}
# shellcheck disable=SC1091
. "$W/pebble/env"
ACME_PORT=${ACME_DIRECTORY#https://localhost:}
ACME_PORT=${ACME_PORT%%/*}

have_tcpdump=0
if command -v tcpdump >/dev/null && [ "$(id -u)" = 0 ]; then have_tcpdump=1; fi

# libpcap drops the first packets after "listening on" here, so the
# capture is proven live with probe connections (a bare TCP connect to the
# ACME port: a SYN, no ClientHello, no HTTP request) before the client
# runs, and a last probe shows that everything before it was written.
syns() {   # syns FILE: SYNs to the ACME port in the capture so far
	tcpdump -r "$1" -nn 'tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0' \
		2>/dev/null | wc -l
}

probe() { (exec 3<>"/dev/tcp/127.0.0.1/$ACME_PORT") 2>/dev/null || true; }

start_capture() {   # start_capture FILE
	[ $have_tcpdump = 1 ] || return 0
	tcpdump --immediate-mode -i lo -nn -s 128 -U -w "$1" "tcp dst port $ACME_PORT" 2>"$1.err" &
	TCPDUMP_PID=$!
	for _ in $(seq 1 100); do
		probe
		sleep 0.1
		[ "$(syns "$1")" -gt 0 ] && break
	done
	syns "$1" >"$1.before"
}

stop_capture() {   # stop_capture FILE: probes seen go to FILE.probes
	[ -n "$TCPDUMP_PID" ] || return 0
	if [ -n "${1:-}" ]; then
		local n
		n=$(syns "$1")
		for _ in $(seq 1 50); do
			probe
			sleep 0.1
			[ "$(syns "$1")" -gt "$n" ] && break
		done
		echo $(($(cat "$1.before") + $(syns "$1") - n)) >"$1.probes"
	fi
	kill -INT "$TCPDUMP_PID" 2>/dev/null || true
	wait "$TCPDUMP_PID" 2>/dev/null || true
	TCPDUMP_PID=
}

count_pcap() {   # count_pcap FILE FILTER
	if [ $have_tcpdump = 1 ] && [ -f "$1" ]; then
		tcpdump -r "$1" -nn "$2" 2>/dev/null | wc -l
	else
		echo n/a
	fi
}

start_httpd() {   # python3 http.server on Pebble's http-01 port, for uacme
	mkdir -p "$W/www/.well-known/acme-challenge"
	(cd "$W/www" && exec /usr/bin/python3 -m http.server --bind 127.0.0.1 "$HTTP01_PORT" \
		>"$W/httpd.log" 2>&1) &
	HTTPD_PID=$!
	for _ in $(seq 1 100); do
		curl -s -o /dev/null "http://127.0.0.1:$HTTP01_PORT/" && return 0
		sleep 0.05
	done
	echo "bench_pebble: http.server did not start" >&2
	exit 1
}

stop_httpd() {
	if [ -n "$HTTPD_PID" ]; then
		kill "$HTTPD_PID" 2>/dev/null || true
		wait "$HTTPD_PID" 2>/dev/null || true
		HTTPD_PID=
	fi
}

pebble_requests() { grep -c -- '-> calling handler()' "$PEBBLE_LOG" || true; }

# ---- the clients: client_NAME RUNDIR PREFIX... runs one issuance with
# PREFIX (e.g. /usr/bin/time -v -o FILE) before the client command.
client_ours() {
	local d=$1
	shift
	"$@" "$CLI" -q --directory "$ACME_DIRECTORY" --ca-file "$ACME_CA_FILE" --agree-tos \
		--dns "${NAMES[0]}" --dns "${NAMES[1]}" --http01-listen "127.0.0.1:$HTTP01_PORT" \
		--store "$d/store.flash" --out-cert "$d/cert.pem"
}

client_uacme() {
	local d=$1
	shift
	mkdir -p "$d/conf"
	export UACME_CHALLENGE_PATH=$W/www/.well-known/acme-challenge
	# Both runs in one namespace; the PREFIX goes before each uacme.
	# shellcheck disable=SC2016  # expanded by the inner sh
	"$@" unshare -m sh -c '
		ca=$1 conf=$2 dir=$3 hook=$4 pfx=$5 a=$6 b=$7
		mount --bind "$ca" /etc/ssl/certs/ca-certificates.crt || exit 1
		eval "$pfx" uacme -y -c "$conf" -t EC -b 256 -a "$dir" -h "$hook" new &&
		eval "$pfx" uacme -c "$conf" -t EC -b 256 -a "$dir" -h "$hook" issue "$a" "$b"
	' sh "$ACME_CA_FILE" "$d/conf" "$ACME_DIRECTORY" "$HERE/uacme_hook.sh" \
		"${UACME_PREFIX:-}" "${NAMES[0]}" "${NAMES[1]}" >"$d/uacme.log" 2>&1
}

client_lego() {
	local d=$1
	shift
	LEGO_CA_CERTIFICATES=$ACME_CA_FILE "$@" lego --server "$ACME_DIRECTORY" --accept-tos \
		--email bench@example.com --domains "${NAMES[0]}" --domains "${NAMES[1]}" \
		--http --http.port "127.0.0.1:$HTTP01_PORT" --key-type ec256 --path "$d/lego" \
		run >"$d/lego.log" 2>&1
}

median() { sort -g | awk '{v[NR]=$1} END{if (NR) print v[int((NR+1)/2)]; else print "n/a"}'; }

declare -A RES
for c in $CLIENTS; do
	case $c in
		ours) ;;
		uacme) command -v uacme >/dev/null || { echo "skip uacme (not installed)"; continue; } ;;
		lego) command -v lego >/dev/null || { echo "skip lego (not installed)"; continue; } ;;
		*) echo "bench_pebble: unknown client $c" >&2; exit 2 ;;
	esac
	[ "$c" = uacme ] && start_httpd
	: >"$W/$c.wall"; : >"$W/$c.cpu"; : >"$W/$c.rss"; : >"$W/$c.req"; : >"$W/$c.hs"; : >"$W/$c.tcp"
	for i in $(seq 1 "$RUNS"); do
		d=$W/$c-$i
		mkdir -p "$d"
		n0=$(pebble_requests)
		start_capture "$d/acme.pcap"
		# uacme: time wraps the namespace (both uacme runs, hooks, mount).
		UACME_PREFIX='' client_"$c" "$d" /usr/bin/time -v -o "$d/time.txt" || {
			echo "bench_pebble: $c run $i failed" >&2
			cat "$d"/*.log 2>/dev/null | tail -20 >&2
			exit 1
		}
		stop_capture "$d/acme.pcap"
		n1=$(pebble_requests)
		echo $((n1 - n0)) >>"$W/$c.req"
		awk -F': ' '/Elapsed \(wall clock\)/{n=split($2,t,":"); s=0; for(k=1;k<=n;k++) s=s*60+t[k]; print s}' \
			"$d/time.txt" >>"$W/$c.wall"
		awk -F': ' '/User time/{u=$2} /System time/{s=$2} END{print u+s}' "$d/time.txt" >>"$W/$c.cpu"
		awk -F': ' '/Maximum resident set size/{print $2}' "$d/time.txt" >>"$W/$c.rss"
		count_pcap "$d/acme.pcap" 'tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16 and tcp[((tcp[12:1] & 0xf0) >> 2) + 5:1] = 0x01' >>"$W/$c.hs"
		if [ $have_tcpdump = 1 ]; then
			echo $(($(syns "$d/acme.pcap") - $(cat "$d/acme.pcap.probes"))) >>"$W/$c.tcp"
		else
			echo n/a >>"$W/$c.tcp"
		fi
	done
	# Instructions: one more issuance under callgrind.
	d=$W/$c-cg
	mkdir -p "$d"
	ir=n/a
	if [ "$c" = lego ]; then
		:
	elif [ "$c" = uacme ]; then
		UACME_PREFIX="valgrind --tool=callgrind --callgrind-out-file=$d/cg.%p.out" \
			client_uacme "$d" && ir=$(grep -h '^==[0-9]*== Collected' "$d/uacme.log" |
			awk '{s+=$NF} END{printf "%.0f\n", s}')
	else
		client_ours "$d" valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" \
			2>"$d/vg.log" && ir=$(awk '/Collected/{print $NF}' "$d/vg.log")
		echo "our CLI's instructions, by kind:"
		/usr/bin/python3 "$HERE/cgsplit.py" "$d/cg.out" --kv "$d/split.kv"
		sed 's/^/pebble_ours_/' "$d/split.kv" >"$W/ours.split"
	fi
	[ "$c" = uacme ] && stop_httpd
	RES[$c.wall]=$(median <"$W/$c.wall")
	RES[$c.cpu]=$(median <"$W/$c.cpu")
	RES[$c.rss]=$(median <"$W/$c.rss")
	RES[$c.req]=$(median <"$W/$c.req")
	RES[$c.hs]=$(median <"$W/$c.hs")
	RES[$c.tcp]=$(median <"$W/$c.tcp")
	RES[$c.ir]=$ir
	RES[$c.runs]=$(paste -sd/ "$W/$c.wall")
done

{
	echo "pebble_runs=$RUNS"
	for k in "${!RES[@]}"; do echo "pebble_${k/./_}=${RES[$k]}"; done | sort
	cat "$W/ours.split" 2>/dev/null || true
} >"$R/pebble.kv"

fmt_ir() { case $1 in ''|n/a) echo n/a ;; *) echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' ;; esac; }
echo
echo "Same Pebble, new account + one order for 2 dns names (http-01), EC P-256;"
echo "median of $RUNS runs (instructions: one callgrind run)"
printf '%-16s %9s %9s %10s %16s %9s %8s %6s\n' client wall_s cpu_s peak_RSS_kB instructions HTTP_req TLS_hs TCP
for c in $CLIENTS; do
	[ -n "${RES[$c.wall]:-}" ] || continue
	printf '%-16s %9s %9s %10s %16s %9s %8s %6s\n' "$c" "${RES[$c.wall]}" "${RES[$c.cpu]}" \
		"${RES[$c.rss]}" "$(fmt_ir "${RES[$c.ir]}")" "${RES[$c.req]}" "${RES[$c.hs]}" "${RES[$c.tcp]}"
done
echo "(wall times of each run: $(for c in $CLIENTS; do [ -n "${RES[$c.runs]:-}" ] && printf '%s %s  ' "$c" "${RES[$c.runs]}"; done))"
echo "(figures in $R/pebble.kv)"
