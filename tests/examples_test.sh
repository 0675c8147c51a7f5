#!/bin/bash
# The offline example build/acme-smime-reply on the RFC 8823 vectors: it
# answers the acme4j challenge with acme4j's published digest, refuses an
# unsigned mail under the strict default and a mail from the wrong sender.
# Prints PASS/FAIL lines and ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/.." || exit 1
BIN=build/acme-smime-reply
V=tests/vectors/rfc8823
passed=0
failed=0
check() {
	local name=$1
	shift
	if "$@"; then
		echo "PASS $name"
		passed=$((passed + 1))
	else
		echo "FAIL $name"
		failed=$((failed + 1))
	fi
}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

args=(--mail "$V/acme4j-smime/email/challenge.eml" --identifier alexey@example.com
	--from acme-generator@example.org --token2 DGyRejmCefe7v4NfDGDKfA
	--thumbprint 1_nKJnlH9boVxdoO63T8zP7O2w42qZL4d6xj35Hy5aI)

"$BIN" "${args[@]}" --allow-unsigned --message-id '<r1@example.com>' \
	--date 1607166105 >"$T/resp" 2>"$T/err"
rc=$?
check "reply-exit-0" [ "$rc" -eq 0 ]
check "reply-digest-is-acme4j-value" grep -q $'^AjXW0h9_4YMP6Sv-9tKQNUrapI0us7ayBn0nCGOkUsk\r$' "$T/resp"
check "reply-to-reply-to-address" grep -q $'^To: <acme-validator@example.org>\r$' "$T/resp"
check "reply-in-reply-to" grep -q $'^In-Reply-To: <A2299BB.FF7788@example.org>\r$' "$T/resp"
check "reply-crlf-only" [ "$(tr -d '\r' <"$T/resp" | wc -c)" -eq $(( $(wc -c <"$T/resp") - $(wc -l <"$T/resp") )) ]
check "relaxed-policy-warns" grep -q "relaxed challenge-mail policy" "$T/err"

"$BIN" "${args[@]}" >"$T/resp2" 2>"$T/err2"
rc=$?
check "strict-refuses-unsigned-exit-1" [ "$rc" -eq 1 ]
check "strict-refusal-names-reason" grep -q "no S/MIME or DKIM signature" "$T/err2"
check "strict-prints-no-mail" [ ! -s "$T/resp2" ]

"$BIN" --mail "$V/acme4j-smime/email/challenge.eml" --identifier alexey@example.com \
	--from acme-challenge+2i211oi1204310@example.com --token2 DGyRejmCefe7v4NfDGDKfA \
	--thumbprint 1_nKJnlH9boVxdoO63T8zP7O2w42qZL4d6xj35Hy5aI --allow-unsigned \
	>/dev/null 2>"$T/err3"
rc=$?
check "wrong-sender-refused" [ "$rc" -eq 1 ]
check "wrong-sender-reason" grep -qi "from" "$T/err3"

"$BIN" --mail "$V/acme4j-smime/email/challenge.eml" >/dev/null 2>&1
check "usage-exit-2" [ $? -eq 2 ]

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
