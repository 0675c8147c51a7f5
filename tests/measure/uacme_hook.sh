#!/bin/sh
# http-01 challenge hook for uacme in `make bench-pebble`: uacme runs it as
#   uacme_hook.sh METHOD TYPE IDENT TOKEN KEY_AUTH
# and it publishes (begin) or removes (done, failed) the key authorization
# under $UACME_CHALLENGE_PATH, which a static HTTP server (python3 -m
# http.server, started by bench_pebble.sh) serves on Pebble's http-01
# port. Exit 1 declines other challenge types, so uacme picks http-01.
[ $# -eq 5 ] || { echo "usage: $0 method type ident token auth" >&2; exit 85; }
dir=${UACME_CHALLENGE_PATH:?UACME_CHALLENGE_PATH is not set}
[ "$2" = http-01 ] || exit 1
case $1 in
	begin) printf '%s' "$5" >"$dir/$4" ;;
	done|failed) rm -f "$dir/$4" ;;
	*) echo "$0: unknown method $1" >&2; exit 85 ;;
esac
