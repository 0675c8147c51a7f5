#!/bin/bash
# shellcheck disable=SC2154 # counts come from ev_summary (eval)
# The mailbox side of an RFC 8823 enrollment (issue 5), against the test CA
# and the real mail stack: the POP3 client's LIST size bound, TOP header
# screening and DELE of the answered mail; a mailbox larger than the
# snapshot; and the library's mailbox hooks (a Maildir read directly and
# Postfix's sendmail) in place of the built-in POP3 and SMTP clients.
# Dovecot's own session log ("top=N/bytes, retr=N/bytes, del=N/messages")
# witnesses what the client asked the POP3 server for. Last, the CLI built
# with ACME_SMIME_NO_MAIL_CLIENTS (hooks only).
# Prints "PASS name" / "FAIL name (why)" per check, last line
# "N passed, N failed". About 1 minute. E2E_KEEP=1 keeps the logs.

# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

CLI_TIMEOUT=40

env_start mb || e2e_abort "tests/testenv start failed" "$E2E_T/mb.start.log"
D=$E2E_T/mb
# shellcheck disable=SC1091
. "$D/env"
DOVELOG=$D/mail/dovecot.log
[ -n "$SENDMAIL" ] || e2e_abort "the mailbox-hook checks need Postfix (SMTP_IMPL=$SMTP_IMPL)"

# pop3_stats SINCE: "top retr del retr_bytes" summed over the device's POP3
# sessions logged after line SINCE of Dovecot's log.
pop3_stats() {
	tail -n +"$(($1 + 1))" "$DOVELOG" | grep -a "pop3($EMAIL)" |
		sed -n 's/.*top=\([0-9]*\)\/[0-9]*, retr=\([0-9]*\)\/\([0-9]*\), del=\([0-9]*\)\/.*/\1 \2 \4 \3/p' |
		awk '{ t += $1; r += $2; d += $3; b += $4 } END { print t + 0, r + 0, d + 0, b + 0 }'
}
log_lines() { wc -l <"$DOVELOG"; }
maildir_count() { find "$1/new" "$1/cur" -type f | wc -l; }

# --- TOP screens, RETR reads only what may be the challenge -----------------
# Six decoys come before the real mail: four are refused on their header
# alone (wrong sender, "Re:", no Auto-Submitted, To another address), two
# only by their signature (none, broken), which needs the whole mail: at
# most 3 RETR, and at least two mails refused on TOP alone.

mailbox_clear "$D"
ca_restart "$D" CA_DECOY=sender,reply,noauto,wrongto,unsigned,baddkim
n=$(log_lines)
enroll top-screens-decoys
read -r top retr del _ <<<"$(pop3_stats "$n")"
if ! why=$(ok_enrollment); then fail top-screens-decoys "$why" "$LOG"
elif [ "$decoys" -ne 6 ]; then fail top-screens-decoys "the CA sent $decoys decoys" "$LOG"
elif [ "$retr" -gt 3 ] || [ "$top" -gt 7 ] || [ "$top" -lt $((retr + 2)) ]; then
	# 7 and 3 when every decoy is listed before the challenge; Dovecot may
	# number mails delivered between two polls in another order, and what
	# comes after the challenge is never read
	fail top-screens-decoys "TOP $top times, RETR $retr times (want at most 3 RETR, TOP at least RETR + 2)" "$LOG"
else pass top-screens-decoys; fi
check keeps-mail-by-default "del=$del, $(mailbox_count "$D") messages left" "$LOG" \
	test "$del" -eq 0 -a "$(mailbox_count "$D")" -eq 7

# --- DELE of the answered challenge mail (--mail-delete) ---------------------

mailbox_clear "$D"
n=$(log_lines)
enroll dele-answered --mail-delete
read -r top retr del _ <<<"$(pop3_stats "$n")"
left=$(mailbox_count "$D")
if ! why=$(ok_enrollment); then fail dele-answered "$why" "$LOG"
elif [ "$del" -ne 1 ] || [ "$left" -ne 6 ]; then
	fail dele-answered "del=$del, $left messages left (want 1 and the 6 decoys)" "$LOG"
else pass dele-answered; fi

# --- a mailbox larger than the snapshot ---------------------------------------
# The mailbox holds the previous run's decoys, then 150 mails: the
# snapshot keeps the newest 64 ids only. The oldest messages include a
# genuine, DKIM-valid challenge mail of an earlier order (kept from the
# first check, dated minutes ago): it must be known as old by its place,
# never read, never answered.

mailbox_clear "$D"
ca_restart "$D"
enroll keep-one-challenge
"$PY" "$MAILTOOL" fill "$MAILDIR" 150
before=$(mailbox_count "$D")
n=$(log_lines)
enroll large-mailbox
read -r top retr del _ <<<"$(pop3_stats "$n")"
if [ "$before" -ne 151 ]; then fail large-mailbox "the mailbox held $before messages, not 151"
elif ! why=$(ok_enrollment); then fail large-mailbox "$why" "$LOG"
elif ! grep -q 'large mailbox' "$LOG"; then fail large-mailbox "no 'large mailbox' line" "$LOG"
elif [ "$top" -ne 1 ] || [ "$retr" -ne 1 ]; then
	fail large-mailbox "TOP $top, RETR $retr: old messages were read" "$LOG"
else pass large-mailbox; fi

# --- a message larger than the work buffer ------------------------------------
# It arrives after the snapshot, 3 s before the challenge mail: LIST gives
# its size and it is skipped unread.

mailbox_clear "$D"
ca_restart "$D" CA_MAIL_DELAY=3
BIG=$E2E_T/big.eml
{
	printf 'From: <big@list.test>\r\nTo: <%s>\r\nSubject: ACME: large\r\n\r\n' "$EMAIL"
	for _ in $(seq 1 2000); do printf '%s\r\n' "0123456789012345678901234567890123456789012345678"; done
} >"$BIG"
n=$(log_lines)
ev0=$(ev_lines "$D")
LOG=$E2E_T/big-message.log CERT=$E2E_T/big-message.pem KEY=$E2E_T/big-message.key
cli "$D" "$E2E_T/big-message.flash" "$LOG" --out-cert "$CERT" --out-key "$KEY" &
cli_pid=$!
for _ in $(seq 1 200); do
	tail -n +"$((ev0 + 1))" "$D/ca-events.jsonl" 2>/dev/null | grep -q order-created && break
	sleep 0.05
done
"$PY" "$MAILTOOL" inject "$SMTP_MX" big@list.test "$EMAIL" "$BIG"
wait "$cli_pid"
RC=$?
ev_summary "$D" "$ev0"
read -r top retr del rbytes <<<"$(pop3_stats "$n")"
if ! why=$(ok_enrollment); then fail big-message-skipped "$why" "$LOG"
elif ! grep -q 'skipping a message larger than the work buffer' "$LOG"; then
	fail big-message-skipped "no 'skipping a message larger' line" "$LOG"
elif [ "$rbytes" -ge 100000 ] || [ "$retr" -ne 1 ]; then
	fail big-message-skipped "RETR $retr messages, $rbytes bytes: the big one was read" "$LOG"
else pass big-message-skipped; fi

# --- the mailbox hooks: a Maildir and Postfix's sendmail ------------------------

# The Maildir port lists in delivery order, also within one second, where
# names do not sort so: Postfix writes "SEC.V<dev>I<inode>M<usec>.host"
# (the inode first), Dovecot "SEC.M<usec>P<pid>.host". Names as both write
# them, in a Maildir of our own; the order must follow SEC, then usec.
MD=$E2E_T/order-maildir
mkdir -p "$MD/new" "$MD/cur" "$MD/tmp"
for name in 1795955005.Vfe00Iaa6299M714090.vm 1795955005.Vfe00Iaa629bM624794.vm \
	1795955006.M100P7.host 1795955005.Vfe00Iaa629cM805157.vm:2,S \
	1795955004.Vfe00Iaa6290M999999.vm; do
	sub=new
	case $name in *:2,*) sub=cur ;; esac
	printf 'Subject: x\n\nx\n' >"$MD/$sub/$name"
done
order=$("$E2E_TOP/build/maildir_list" "$MD" | sed 's/.*M\([0-9]*\).*/\1/' | tr '\n' ' ')
check maildir-lists-in-delivery-order "listed as: $order" "" \
	test "$order" = "999999 624794 714090 805157 100 "

mailbox_clear "$D"
ca_restart "$D"
MAILBOX=maildir enroll hooks-maildir-sendmail --mail-delete
if ! why=$(ok_enrollment); then fail hooks-maildir-sendmail "$why" "$LOG"
elif ! grep -q 'reply handed to the mailbox hook' "$LOG"; then
	fail hooks-maildir-sendmail "the reply did not go through the hook" "$LOG"
elif grep -q 'state pop3\|state smtp' "$LOG"; then
	fail hooks-maildir-sendmail "the built-in POP3/SMTP clients ran" "$LOG"
elif [ "$(maildir_count "$MAILDIR")" -ne 0 ]; then
	fail hooks-maildir-sendmail "the answered mail is still in the Maildir" "$LOG"
else pass hooks-maildir-sendmail; fi
# No mail server connection in between: the ACME connection is never cut.
check hooks-one-tls-handshake "$(stat_of "$LOG" 'TLS handshakes') TLS handshakes" "$LOG" \
	test "$(stat_of "$LOG" 'TLS handshakes')" = 1

ca_restart "$D" CA_DECOY=sender,reply,noauto,wrongto,unsigned,baddkim
MAILBOX=maildir enroll hooks-decoys-ignored
if ! why=$(ok_enrollment); then fail hooks-decoys-ignored "$why" "$LOG"
elif [ "$decoys" -ne 6 ] || [ "$(grep -c 'ignoring a message' "$LOG")" -lt 6 ]; then
	fail hooks-decoys-ignored "$decoys decoys, $(grep -c 'ignoring a message' "$LOG") ignored" "$LOG"
else pass hooks-decoys-ignored; fi

# respond-once through the hooks: kill -9 in the reply grace wait (the reply
# was handed over and recorded as sent); the rerun POSTs without a second
# reply.
ca_restart "$D"
n=$(ev_lines "$D")
if MAILBOX=maildir cli_kill_at "$D" "$E2E_T/hooks-respond-once.flash" \
	"$E2E_T/hooks-respond-once.log" 'wait [0-9.]* s before challenge-respond'; then
	LOG=$E2E_T/hooks-respond-once.rerun.log CERT=$E2E_T/hooks-respond-once.pem KEY=
	MAILBOX=maildir cli "$D" "$E2E_T/hooks-respond-once.flash" "$LOG" --out-cert "$CERT"
	RC=$?
	ev_summary "$D" "$n"
	if ! why=$(ok_enrollment); then fail hooks-respond-once "$why" "$LOG"
	elif [ "$orders" -ne 1 ]; then fail hooks-respond-once "$orders orders" "$LOG"
	else pass hooks-respond-once; fi
else
	fail hooks-respond-once "the run was not killed in the grace wait" "$E2E_T/hooks-respond-once.log"
fi

# --- the library built without its mail clients (ACME_SMIME_NO_MAIL_CLIENTS) ---
# The hooks work as before; the POP3/SMTP options are refused at init
# with a clear message, and nothing is sent.

NOMAIL_CLI=$E2E_TOP/build/acme-smime-enroll-nomail
ca_restart "$D"
CLI=$NOMAIL_CLI MAILBOX=maildir enroll nomail-hooks --mail-delete
if ! why=$(ok_enrollment); then fail nomail-build-hooks "$why" "$LOG"
elif ! grep -q 'reply handed to the mailbox hook' "$LOG"; then
	fail nomail-build-hooks "the reply did not go through the hook" "$LOG"
else pass nomail-build-hooks; fi
CLI=$NOMAIL_CLI enroll nomail-pop3-refused
if [ "$RC" -eq 0 ]; then fail nomail-build-refuses-pop3 "exit 0" "$LOG"
elif ! grep -q 'built without the mail clients' "$LOG"; then
	fail nomail-build-refuses-pop3 "no 'built without the mail clients' message" "$LOG"
elif [ "$orders" -ne 0 ] || [ "$responses" -ne 0 ]; then
	fail nomail-build-refuses-pop3 "$orders orders, $responses responses" "$LOG"
else pass nomail-build-refuses-pop3; fi

e2e_finish
