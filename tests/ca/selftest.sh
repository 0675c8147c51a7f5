#!/bin/bash
# Self-test of the RFC 8823 test environment: starts tests/testenv in a
# temporary directory (free ports), runs tests/ca/client_selftest.py against
# the CA in six settings (default STRING; BYTES with strict response checks;
# every fault knob; a lax CA with RSA keys; S/MIME-signed challenge mails with
# DKIM from pebble-challtestsrv and S/MIME decoys; opaque S/MIME without DKIM,
# 2048-bit DKIM record from fake_dns.py), stops everything (also on failure
# or Ctrl-C) and prints "N passed, N failed" as its last line.
#   tests/ca/selftest.sh [-k]     -k: keep the directory (logs) afterwards
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TESTS=$(cd "$HERE/.." && pwd)
PY=/usr/bin/python3
KEEP=0; [ "${1:-}" = -k ] && KEEP=1
D=$(mktemp -d "${TMPDIR:-/tmp}/acme-selftest.XXXXXX")
chmod 755 "$D"
pass=0; fail=0; t0=$(date +%s.%N)

cleanup() {
  "$TESTS/testenv" stop "$D" >/dev/null 2>&1
  if [ "$KEEP" = 1 ] || [ "$fail" -gt 0 ]; then echo "logs kept in $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

count() {  # count OUTPUT: add its "N passed, N failed" line
  local line p f
  line=$(printf '%s\n' "$1" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
  if [ -z "$line" ]; then fail=$((fail + 1)); return; fi
  p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
  pass=$((pass + p)); fail=$((fail + f))
}

run_phase() {  # run_phase NAME: run client_selftest.py --phase NAME with DIR/env
  local out
  # shellcheck disable=SC1091
  out=$(set -a; . "$D/env"; set +a; timeout 120 "$PY" "$HERE/client_selftest.py" --phase "$1" 2>&1)
  printf '%s\n' "$out" | grep -vE '^[0-9]+ passed, [0-9]+ failed$'
  count "$out"
}

echo "== testenv start"
if TESTENV_PORTS=auto "$TESTS/testenv" start "$D"; then
  pass=$((pass + 1))
  echo "== phase main (CA defaults: STRING)"
  run_phase main
  BYTES_ENV=(CA_CONCAT=bytes CA_SUBJECT=folded CA_TOKEN1_PAD=1 CA_FROM_TAG=1 CA_REQUIRE_IN_REPLY_TO=1
             CA_STRICT_FROM=1 CA_DKIM_ALG=ed25519 CA_VALIDATE_WINDOW=3 CA_CERT_LIFETIME=300)
  echo "== phase bytes (${BYTES_ENV[*]})"
  if env "${BYTES_ENV[@]}" "$TESTS/testenv" restart-ca "$D" >/dev/null; then
    run_phase bytes
  else
    echo "FAIL restart-ca (bytes)"; fail=$((fail + 1))
  fi
  # shellcheck disable=SC2054  # commas are inside values
  FAULT_ENV=(CA_NONCE_REJECT=50 CA_FAULT_429=new-order:1 CA_FAULT_500=finalize CA_FAULT_DROP=authz
             CA_PROCESSING_POLLS=2 CA_MAIL_AT=order CA_DECOY=sender,reply,unsigned,baddkim,noauto,wrongto CA_STALE=1 CA_SUBJECT=q
             CA_MAIL_DELAY=0.5)
  echo "== phase faults (${FAULT_ENV[*]})"
  if env "${FAULT_ENV[@]}" "$TESTS/testenv" restart-ca "$D" >/dev/null; then
    run_phase faults
  else
    echo "FAIL restart-ca (faults)"; fail=$((fail + 1))
  fi
  # shellcheck disable=SC2054
  LAX_ENV=(CA_MAIL_OMIT=auto-submitted,message-id,date,dkim CA_MAIL_FROM_NAME= CA_SUBJECT=b
           CA_PKI_ALG=rsa CA_TLS_ALG=rsa CA_TLS_MAX=1.2 CA_POP3_MODE=pop3s)
  echo "== phase lax (${LAX_ENV[*]})"
  if env "${LAX_ENV[@]}" "$TESTS/testenv" restart-ca "$D" >/dev/null; then
    run_phase lax
  else
    echo "FAIL restart-ca (lax)"; fail=$((fail + 1))
  fi
  # shellcheck disable=SC2054
  SMIME_ENV=(CA_SMIME_SIGN=1 CA_SMIME_CHAIN=intermediate CA_DECOY=badsmime,smimesigner,smimeheaders,baddkim,unsigned)
  echo "== phase smime (${SMIME_ENV[*]})"
  if env "${SMIME_ENV[@]}" "$TESTS/testenv" restart-ca "$D" >/dev/null; then
    run_phase smime
  else
    echo "FAIL restart-ca (smime)"; fail=$((fail + 1))
  fi
  OPAQUE_ENV=(CA_SMIME_SIGN=opaque CA_DKIM=0 CA_DKIM_BITS=2048)
  echo "== phase opaque (${OPAQUE_ENV[*]})"
  if env "${OPAQUE_ENV[@]}" "$TESTS/testenv" restart-ca "$D" >/dev/null; then
    run_phase opaque
  else
    echo "FAIL restart-ca (opaque)"; fail=$((fail + 1))
  fi
  echo "== testenv stop"
  pids=$(cat "$D/ca.pid" "$D/dns.pid" "$D/mail/dovecot.pid" "$D/mail/smtp.pid" 2>/dev/null)
  "$TESTS/testenv" stop "$D" >/dev/null
  left=""
  for f in "$D/ca.pid" "$D/dns.pid" "$D/mail/dovecot.pid" "$D/mail/smtp.pid"; do [ -f "$f" ] && left="$left $f"; done
  for p in $pids; do
    if [ -r "/proc/$p/stat" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$p/stat"; then left="$left pid:$p"; fi
  done
  if [ -z "$left" ]; then echo "PASS testenv stop ended every server (${pids//$'\n'/ })"; pass=$((pass + 1))
  else echo "FAIL testenv stop left$left"; fail=$((fail + 1)); fi
else
  echo "FAIL testenv start"; fail=$((fail + 1))
  tail -20 "$D/ca.stderr" "$D/mail/"*.log 2>/dev/null
fi
echo "selftest took $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }") s"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
