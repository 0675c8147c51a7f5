#!/bin/bash
# The POSIX port's DNS client (port/posix/dns_txt.c) against a real DNS
# server, pebble-challtestsrv (package pebble), which serves TXT records set
# through its management API, and against tests/tools/fake_dns.py for the
# failures a real server will not produce. The last checks run the DKIM
# proof of acme_smime_check_challenge_mail() with the key from the server.
#
#   tests/dns_txt_test.sh          prints PASS/FAIL lines, then
#                                  "N passed, N failed"; exit 1 on a failure
#
# Ports 14353 (DNS), 14354 (fake DNS), 14355 (management) on 127.0.0.1.
# Environment: ACME_SMIME_SRC, the directory of acme_smime.c/.h (default:
# the repository root).
set -u
cd "$(dirname "$0")/.." || exit 1

DNS_PORT=14353
FAKE_PORT=14354
MGMT_PORT=14355
SRC=${ACME_SMIME_SRC:-.}
W=$(mktemp -d)
PIDS=
passed=0
failed=0

cleanup() {
    for pid in $PIDS; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$W"
}
trap cleanup EXIT

result() { # result NAME OK [DETAIL]
    if [ "$2" = 1 ]; then
        echo "PASS $1"
        passed=$((passed + 1))
    else
        echo "FAIL $1${3:+: $3}"
        failed=$((failed + 1))
    fi
}

finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

query() { # query [-t MS] RESOLVER NAME: the driver's output
    "$W/dns_txt_query" "$@" 2>&1
}

# The driver: the library, the DNS client, and nothing else.
if ! gcc -std=c99 -Wall -Wextra -Werror -O1 -g -I"$SRC" -I. -Iport/posix \
        tests/tools/dns_txt_query.c port/posix/dns_txt.c -lbearssl \
        -o "$W/dns_txt_query" 2>"$W/cc.log"; then
    result "build the driver" 0 "$(head -5 "$W/cc.log")"
    finish
fi
result "build the driver" 1

pebble-challtestsrv -dns01 127.0.0.1:$DNS_PORT -http01 "" -https01 "" \
    -tlsalpn01 "" -management 127.0.0.1:$MGMT_PORT -defaultIPv4 127.0.0.1 \
    -defaultIPv6 "" >"$W/challtestsrv.log" 2>&1 &
PIDS="$PIDS $!"
up=0
for _ in $(seq 100); do
    if curl -s -o /dev/null http://127.0.0.1:$MGMT_PORT/; then
        up=1
        break
    fi
    sleep 0.05
done
result "pebble-challtestsrv starts" $up
[ $up = 1 ] || finish

set_txt() { # set_txt HOST VALUE
    curl -s -f -d "{\"host\":\"$1\",\"value\":\"$2\"}" \
        http://127.0.0.1:$MGMT_PORT/set-txt >/dev/null
}
clear_txt() {
    curl -s -f -d "{\"host\":\"$1\"}" http://127.0.0.1:$MGMT_PORT/clear-txt >/dev/null
}

# 1. A short record, and a DKIM key record. challtestsrv cannot serve a
#    string over 255 bytes, so its key is the 1024-bit one (234 bytes); the
#    2048-bit record, in two strings, comes from the fake server below.
set_txt short._domainkey.ca.example. "v=DKIM1; p=short"
out=$(query 127.0.0.1:$DNS_PORT short._domainkey.ca.example)
result "short TXT record" "$([ "$out" = "$(printf 'rc=16\ntext=v=DKIM1; p=short')" ] && echo 1)" "$out"

K1024=$(head -1 tests/vectors/dkim/k1024.txt | tr -d '\r\n')
set_txt k1024._domainkey.ca.example. "$K1024"
out=$(query 127.0.0.1:$DNS_PORT k1024._domainkey.ca.example)
result "DKIM key record of ${#K1024} bytes" "$([ "$out" = "$(printf 'rc=%d\ntext=%s' ${#K1024} "$K1024")" ] && echo 1)" "$out"

# 2. Names without a record.
out=$(query 127.0.0.1:$DNS_PORT none._domainkey.ca.example)
result "no record: 0" "$([ "$out" = "rc=0" ] && echo 1)" "$out"

# 3. Names the client refuses to send.
out=$(query 127.0.0.1:$DNS_PORT "a..b")
result "empty label refused" "$([ "$out" = "rc=-1" ] && echo 1)" "$out"
out=$(query 127.0.0.1:$DNS_PORT "$(printf 'x%.0s' $(seq 64)).example")
result "64-byte label refused" "$([ "$out" = "rc=-1" ] && echo 1)" "$out"

# 4. The DKIM proof end to end: our mails, their key from the server.
check_mail() { # check_mail RESOLVER MAIL
    "$W/dns_txt_query" -m "$1" "tests/vectors/dkim/$2" alice@example.org acme@ca.example 2>&1
}
out=$(check_mail 127.0.0.1:$DNS_PORT relaxed-1024.eml)
result "DKIM mail accepted with its key from DNS" "$(echo "$out" | grep -q '^reason=0 proof=2' && echo 1)" "$out"
set_txt s1._domainkey.ca.example. "$K1024"
out=$(check_mail 127.0.0.1:$DNS_PORT relaxed.eml)
result "DKIM mail refused with another key in DNS" "$(echo "$out" | grep -q 'DKIM signature does not verify' && echo 1)" "$out"
clear_txt k1024._domainkey.ca.example.
out=$(check_mail 127.0.0.1:$DNS_PORT relaxed-1024.eml)
result "DKIM mail refused once the key is withdrawn" "$(echo "$out" | grep -q 'DKIM key not found' && echo 1)" "$out"

# 5. Failures: nothing listening (ICMP refused), and the fake server.
out=$(query -t 300 127.0.0.1:$FAKE_PORT x._domainkey.ca.example)
result "refused port: -1" "$([ "$out" = "rc=-1" ] && echo 1)" "$out"

fake() { # fake MODE: restart the fake server in MODE
    if [ -n "${FAKE_PID:-}" ]; then
        kill "$FAKE_PID" 2>/dev/null
        wait "$FAKE_PID" 2>/dev/null
    fi
    # The background job truncates its output file only once it runs:
    # remove the old one first, or its "ready" would be read.
    rm -f "$W/fake.out"
    /usr/bin/python3 tests/tools/fake_dns.py $FAKE_PORT "$1" >"$W/fake.out" 2>&1 &
    FAKE_PID=$!
    PIDS="$PIDS $FAKE_PID"
    for _ in $(seq 100); do
        grep -q ready "$W/fake.out" 2>/dev/null && return
        sleep 0.05
    done
}

fake silent
t0=$(date +%s%N)
out=$(query -t 300 127.0.0.1:$FAKE_PORT x._domainkey.ca.example)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
result "timeout: -1 after two attempts (${ms} ms)" "$([ "$out" = "rc=-1" ] && [ $ms -ge 580 ] && [ $ms -lt 1500 ] && echo 1)" "$out"

fake retry
out=$(query -t 300 127.0.0.1:$FAKE_PORT x._domainkey.ca.example)
result "answer to the retry accepted" "$([ "$out" = "$(printf 'rc=15\ntext=v=DKIM1; p=fake')" ] && echo 1)" "$out"

fake wrong-id
out=$(query -t 300 127.0.0.1:$FAKE_PORT x._domainkey.ca.example)
result "answer with another ID ignored" "$([ "$out" = "$(printf 'rc=15\ntext=v=DKIM1; p=fake')" ] && echo 1)" "$out"

fake wrong-name
out=$(query -t 300 127.0.0.1:$FAKE_PORT x._domainkey.ca.example)
result "answer to another question ignored" "$([ "$out" = "$(printf 'rc=15\ntext=v=DKIM1; p=fake')" ] && echo 1)" "$out"

fake truncated
out=$(query -t 300 127.0.0.1:$FAKE_PORT x._domainkey.ca.example)
result "truncated answer: -1" "$([ "$out" = "rc=-1" ] && echo 1)" "$out"

fake servfail
out=$(query -t 300 127.0.0.1:$FAKE_PORT x._domainkey.ca.example)
result "SERVFAIL: -1" "$([ "$out" = "rc=-1" ] && echo 1)" "$out"

fake long
out=$(query -t 300 127.0.0.1:$FAKE_PORT x._domainkey.ca.example)
result "three character-strings joined" "$([ "$(echo "$out" | head -1)" = "rc=600" ] && echo 1)" "$(echo "$out" | head -1)"

fake upper
out=$(query -t 300 127.0.0.1:$FAKE_PORT x._domainkey.ca.example)
result "question echoed in another case accepted" "$([ "$out" = "$(printf 'rc=15\ntext=v=DKIM1; p=fake')" ] && echo 1)" "$out"

fake file:tests/vectors/dkim/ca-s1.txt
KEY=$(head -1 tests/vectors/dkim/ca-s1.txt | tr -d '\r\n')
out=$(query -t 300 127.0.0.1:$FAKE_PORT s1._domainkey.ca.example)
result "2048-bit key record in two strings" "$([ "$out" = "$(printf 'rc=%d\ntext=%s' ${#KEY} "$KEY")" ] && echo 1)" "$(echo "$out" | head -1)"
out=$(check_mail 127.0.0.1:$FAKE_PORT relaxed.eml)
result "DKIM mail accepted with its 2048-bit key" "$(echo "$out" | grep -q '^reason=0 proof=2' && echo 1)" "$out"

finish
