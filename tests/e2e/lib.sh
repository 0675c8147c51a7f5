# shellcheck shell=bash
# Shared helpers of the end-to-end suites in tests/e2e/ (sourced, not run).
#
# Each suite starts its own test environment(s) (tests/testenv, with
# TESTENV_PORTS=auto) in a private temporary directory, prints one line
# "PASS name" or "FAIL name (why)" per check and ends with the single line
# "N passed, N failed"; it exits 1 when a check failed. E2E_KEEP=1 keeps the
# temporary directory (logs, stores, CA events) for a post-mortem.
#
# The CLI runs with the device mailbox of $BOX (1 = EMAIL, 2 = EMAIL2), POP3
# over $POP3_MODE (stls | pop3s | plain), SMTP over $SMTP_MODE (starttls |
# smtps | mx) or, with MAILBOX=maildir, the library's mailbox hooks (the
# mailbox's Maildir and Postfix's sendmail), the challenge-mail policy of $POLICY (strict, the default:
# DKIM verified with the key from the test environment's DNS_RESOLVER;
# strict-no-dns: strict without a resolver; unsigned-ok), and the shortest
# waits the CLI allows (--reply-grace 1 --mail-poll 1).

set -u

E2E_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=/usr/bin/python3
CLI=${CLI:-$E2E_TOP/build/acme-smime-enroll}
TESTENV=$E2E_TOP/tests/testenv
EVENTS_PY=$E2E_TOP/tests/e2e/events.py
MAILTOOL=$E2E_TOP/tests/e2e/mailtool.py
E2E_PASSED=0
E2E_FAILED=0
E2E_T0=$(date +%s)
E2E_ENVS=()
E2E_PIDS=()

# Knobs must come from the suites only, never from the caller's shell.
for _v in $(compgen -e | grep -E '^(CA_|TESTENV_|ACME_SMIME_)' || true); do
	unset "$_v"
done
unset _v

E2E_T=$(mktemp -d /tmp/acme-e2e.XXXXXX)
chmod 755 "$E2E_T"   # the mail servers run as nobody

e2e_cleanup() {
	local p d
	# only processes still running as our own children (PIDs get reused)
	for p in "${E2E_PIDS[@]}"; do
		if [ "$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')" = "$$" ]; then
			kill -9 "$p" 2>/dev/null
		fi
	done
	for d in "${E2E_ENVS[@]}"; do
		"$TESTENV" stop "$d" >/dev/null 2>&1
	done
	if [ -n "${E2E_KEEP:-}" ]; then
		echo "e2e: kept $E2E_T" >&2
	else
		rm -rf "$E2E_T"
	fi
}
trap e2e_cleanup EXIT
trap 'exit 130' INT TERM HUP

pass() {
	echo "PASS $1"
	E2E_PASSED=$((E2E_PASSED + 1))
}

# fail NAME [WHY [LOG]]: a failed check; the tail of LOG is shown.
fail() {
	echo "FAIL $1${2:+ ($2)}"
	E2E_FAILED=$((E2E_FAILED + 1))
	if [ -n "${3:-}" ] && [ -f "$3" ]; then
		tail -n 25 "$3" | sed 's/^/    | /'
	fi
}

# check NAME WHY-IF-FAILED LOG COMMAND...: PASS when COMMAND succeeds.
check() {
	local name=$1 why=$2 log=$3
	shift 3
	if "$@"; then
		pass "$name"
	else
		fail "$name" "$why" "$log"
	fi
}

e2e_finish() {
	echo "# run time $(($(date +%s) - E2E_T0)) s"
	echo "$E2E_PASSED passed, $E2E_FAILED failed"
	[ "$E2E_FAILED" -eq 0 ]
}

# A fatal set-up problem: counted as one failure, then the summary.
e2e_abort() {
	fail "setup" "$1" "${2:-}"
	e2e_finish
	exit 1
}

[ -x "$CLI" ] || e2e_abort "$CLI is missing (make all)"

# env_start NAME [CA_KNOB=value...]: start a test environment in $E2E_T/NAME.
env_start() {
	local d=$E2E_T/$1
	shift
	if ! env TESTENV_PORTS=auto "$@" "$TESTENV" start "$d" >"$d.start.log" 2>&1; then
		cat "$d.start.log" >&2
		return 1
	fi
	E2E_ENVS+=("$d")
}

# ca_restart DIR [CA_KNOB=value...]: the CA again with only these knobs.
ca_restart() {
	local d=$1
	shift
	env "$@" "$TESTENV" restart-ca "$d" >>"$d.restart.log" 2>&1
}

# envget DIR KEY: a value of DIR/env.
envget() {
	(set +u; . "$1/env"; eval "printf '%s' \"\${$2:-}\"")
}

# cli_args DIR STORE: the CLI's arguments for the environment DIR into
# CLI_ARGS (see the top for BOX, POP3_MODE, SMTP_MODE, POLICY).
# DIRECTORY overrides the directory URL.
cli_args() {
	local d=$1 store=$2 email user pw maildir
	DNS_RESOLVER=
	# shellcheck disable=SC1091
	. "$d/env"
	email=$EMAIL user=$MAIL_USER pw=$MAIL_PASS_FILE maildir=$MAILDIR
	if [ "${BOX:-1}" = 2 ]; then
		email=$EMAIL2 user=$MAIL_USER2 pw=$MAIL_PASS_FILE2 maildir=$MAILDIR2
	fi
	CLI_ARGS=(--directory "${DIRECTORY:-$ACME_DIRECTORY}" --ca-file "$ACME_CA_FILE"
		--agree-tos --email "$email")
	if [ "${MAILBOX:-pop3}" = maildir ]; then
		# the library's mailbox hooks: the Maildir and Postfix's sendmail
		CLI_ARGS+=(--maildir "$maildir" --sendmail "$SENDMAIL")
	else
		CLI_ARGS+=(--pop3-user "$user" --pop3-pass-file "$pw")
		cli_args_servers
	fi
	CLI_ARGS+=(--reply-grace 1 --mail-poll 1 --store "$store")
	case ${POLICY:-strict} in
	strict) CLI_ARGS+=(--mail-policy strict)
		[ -n "${DNS_RESOLVER:-}" ] && CLI_ARGS+=(--dns-resolver "$DNS_RESOLVER") ;;
	strict-no-dns) CLI_ARGS+=(--mail-policy strict) ;;
	unsigned-ok) CLI_ARGS+=(--mail-policy unsigned-ok) ;;
	esac
}

# The POP3 and SMTP options of cli_args.
cli_args_servers() {
	case ${POP3_MODE:-stls} in
	stls) CLI_ARGS+=(--pop3 "$POP3_STLS" --pop3-tls starttls) ;;
	pop3s) CLI_ARGS+=(--pop3 "$POP3S" --pop3-tls implicit) ;;
	plain) CLI_ARGS+=(--pop3 "$POP3_PLAIN" --pop3-tls none) ;;
	esac
	case ${SMTP_MODE:-starttls} in
	starttls) CLI_ARGS+=(--smtp "$SMTP_STARTTLS" --smtp-tls starttls
		--smtp-user "$user" --smtp-pass-file "$pw") ;;
	smtps) CLI_ARGS+=(--smtp "$SMTPS" --smtp-tls implicit
		--smtp-user "$user" --smtp-pass-file "$pw") ;;
	mx) CLI_ARGS+=(--smtp "$SMTP_MX" --smtp-tls none) ;;
	esac
	CLI_ARGS+=(--mail-ca-file "$MAIL_CA_FILE")
}

# cli DIR STORE LOG [more CLI options...]: run the CLI (killed after
# CLI_TIMEOUT s, default 120), all output to LOG; returns its exit status.
cli() {
	local d=$1 store=$2 log=$3
	shift 3
	cli_args "$d" "$store"
	timeout -s KILL "${CLI_TIMEOUT:-120}" "$CLI" "${CLI_ARGS[@]}" "$@" >"$log" 2>&1
}

# ev_lines DIR: the current number of lines of the CA's events file.
ev_lines() {
	local f=$1/ca-events.jsonl
	if [ -f "$f" ]; then wc -l <"$f"; else echo 0; fi
}

# ev_summary DIR [SINCE]: set the variables of events.py (accounts, orders,
# responses, max_resp, twice, issued, serials, invalid, ...).
ev_summary() {
	eval "$("$PY" "$EVENTS_PY" "$1/ca-events.jsonl" "${2:-0}")"
}

# stat_of LOG WORD: a number from the CLI's "stats:" line ("TCP connections",
# "flash operations", "HTTP requests", "TLS handshakes").
stat_of() {
	sed -n "s/.*stats:.* \([0-9][0-9]*\) $2.*/\1/p" "$1" | tail -n 1
}

# leaf_of CHAIN OUT: the first certificate of a PEM chain.
leaf_of() {
	awk '/-----BEGIN CERTIFICATE-----/ { n++ } n == 1 { print } /-----END CERTIFICATE-----/ && n == 1 { exit }' "$1" >"$2"
}

serial_of() {
	openssl x509 -in "$1" -noout -serial 2>/dev/null | sed 's/^serial=//'
}

# cert_check DIR CHAIN KEY EMAIL: the chain verifies for S/MIME signing
# against the test root, the leaf has exactly the rfc822Name EMAIL, EKU
# emailProtection, key usage digitalSignature + keyAgreement, and KEY is
# its private key. Prints what is wrong, returns non-zero then.
cert_check() {
	local d=$1 chain=$2 key=$3 email=$4 leaf ext root inter bad=0
	leaf=$chain.leaf
	root=$(envget "$d" TEST_ROOT)
	inter=$(envget "$d" TEST_INTERMEDIATE)
	[ -s "$chain" ] || { echo "no certificate file $chain"; return 1; }
	leaf_of "$chain" "$leaf"
	if ! openssl verify -CAfile "$root" -untrusted "$inter" -purpose smimesign \
		"$leaf" >"$leaf.verify" 2>&1; then
		echo "openssl verify: $(tr '\n' ' ' <"$leaf.verify")"
		bad=1
	fi
	if ! openssl verify -CAfile "$root" -untrusted "$chain" -purpose smimesign \
		"$leaf" >/dev/null 2>&1; then
		echo "the downloaded chain does not lead to the test root"
		bad=1
	fi
	ext=$(openssl x509 -in "$leaf" -noout \
		-ext subjectAltName,extendedKeyUsage,keyUsage 2>&1)
	# The SAN: exactly one entry, email:EMAIL.
	if [ "$(printf '%s\n' "$ext" | sed -n '/Subject Alternative Name/{n;p}' |
		sed 's/^ *//')" != "email:$email" ]; then
		echo "SAN is not exactly email:$email: $ext"
		bad=1
	fi
	if ! printf '%s\n' "$ext" | sed -n '/Extended Key Usage/{n;p}' |
		grep -qx ' *E-mail Protection'; then
		echo "EKU is not exactly emailProtection: $ext"
		bad=1
	fi
	if ! printf '%s\n' "$ext" | sed -n '/X509v3 Key Usage/{n;p}' |
		grep -qx ' *Digital Signature, Key Agreement'; then
		echo "key usage is not digitalSignature + keyAgreement: $ext"
		bad=1
	fi
	if [ -n "$key" ]; then
		if [ "$(openssl pkey -in "$key" -pubout 2>&1)" != \
			"$(openssl x509 -in "$leaf" -noout -pubkey 2>&1)" ]; then
			echo "$key is not the certificate's key"
			bad=1
		fi
	fi
	return $bad
}

# mailbox_clear DIR [BOX] / mailbox_count DIR [BOX]: delete every message
# of a device mailbox / print how many it holds (POP3 STLS).
mailbox_clear() {
	mailbox_tool clear "$@"
}
mailbox_count() {
	mailbox_tool count "$@"
}
mailbox_tool() {
	local cmd=$1 d=$2 box=${3:-1} user pw
	if [ "$box" = 2 ]; then
		user=$(envget "$d" MAIL_USER2) pw=$(envget "$d" MAIL_PASS_FILE2)
	else
		user=$(envget "$d" MAIL_USER) pw=$(envget "$d" MAIL_PASS_FILE)
	fi
	"$PY" "$MAILTOOL" "$cmd" "$(envget "$d" POP3_STLS)" "$user" "$pw" "$(envget "$d" MAIL_CA_FILE)"
}

# cli_kill_at DIR STORE LOG REGEX [NTH [more CLI options...]]: run the CLI
# and kill -9 it as soon as its NTH (default 1) output line matching REGEX
# (bash =~) appears. Returns 0 when it was killed, 1 when it ended first;
# KILL_RC is its exit status either way (137 when killed).
cli_kill_at() {
	local d=$1 store=$2 log=$3 re=$4 nth=${5:-1} fifo pid line seen=0 killed=1 dog me=$BASHPID
	shift 4
	[ $# -gt 0 ] && shift
	fifo=$E2E_T/fifo.$BASHPID.$RANDOM
	cli_args "$d" "$store"
	mkfifo "$fifo" || return 2
	"$CLI" "${CLI_ARGS[@]}" "$@" >"$fifo" 2>&1 &
	pid=$!
	E2E_PIDS+=("$pid")
	# watchdog: kills only while the CLI is still this shell's child
	(sleep "${CLI_TIMEOUT:-120}" &
	 s=$!
	 trap 'kill "$s"; exit 0' TERM
	 wait "$s"
	 [ "$(ps -o ppid= -p "$pid" | tr -d ' ')" = "$me" ] && kill -9 "$pid") 2>/dev/null &
	dog=$!
	while IFS= read -r line; do
		printf '%s\n' "$line" >>"$log"
		if [ "$killed" -ne 0 ] && [[ $line =~ $re ]]; then
			seen=$((seen + 1))
			if [ "$seen" -ge "$nth" ]; then
				kill -9 "$pid" 2>/dev/null
				killed=0
				printf '%s\n' "-- e2e: kill -9 here --" >>"$log"
			fi
		fi
	done <"$fifo"
	# EOF: the CLI has ended (not yet reaped, its PID still ours)
	kill "$dog" 2>/dev/null
	wait "$dog" 2>/dev/null
	wait "$pid"
	KILL_RC=$?
	rm -f "$fifo"
	[ "$KILL_RC" -eq 137 ] && [ "$killed" -eq 0 ]
}

# cli_kill_after DIR STORE LOG SECONDS: run the CLI and kill -9 it after
# SECONDS (fractions allowed). Returns 0 when it was killed, 1 when it had
# ended; KILL_RC is its exit status.
cli_kill_after() {
	local d=$1 store=$2 log=$3 delay=$4 pid
	cli_args "$d" "$store"
	"$CLI" "${CLI_ARGS[@]}" >"$log" 2>&1 &
	pid=$!
	E2E_PIDS+=("$pid")
	sleep "$delay"
	kill -9 "$pid" 2>/dev/null
	wait "$pid"
	KILL_RC=$?
	[ "$KILL_RC" -eq 137 ]
}

# enroll NAME [CLI options...]: one enrollment in the environment $D with a
# fresh store ($STORE when set); sets RC, LOG, the event counts since its
# start (ev_summary), and CERT, KEY.
enroll() {
	local name=$1 n
	shift
	LOG=$E2E_T/$name.log CERT=$E2E_T/$name.pem KEY=$E2E_T/$name.key
	n=$(ev_lines "$D")
	cli "$D" "${STORE:-$E2E_T/$name.flash}" "$LOG" --out-cert "$CERT" --out-key "$KEY" "$@"
	RC=$?
	ev_summary "$D" "$n"
}

# ok_enrollment: RC 0, a good certificate, one account, one order, exactly
# one response for the one challenge, one certificate. Prints what is wrong.
ok_enrollment() {
	local why
	[ "$RC" -eq 0 ] || { echo "exit $RC"; return 1; }
	why=$(cert_check "$D" "$CERT" "$KEY" "$EMAIL") || { echo "$why"; return 1; }
	[ "$accounts" -le 1 ] || { echo "$accounts accounts created"; return 1; }
	[ "$responses" -eq 1 ] || { echo "$responses responses"; return 1; }
	[ "$max_resp" -eq 1 ] || { echo "a challenge answered $max_resp times"; return 1; }
	[ "$decoy_answers" -eq 0 ] || { echo "$decoy_answers decoy/stale mails answered"; return 1; }
	[ "$issued" -eq 1 ] || { echo "$issued certificates issued"; return 1; }
}

# expect_ok NAME [CLI options...]: an enrollment that must succeed.
expect_ok() {
	local name=$1 why
	shift
	enroll "$name" "$@"
	if why=$(ok_enrollment); then pass "$name"; else fail "$name" "$why" "$LOG"; fi
}

# rerun_verdict DIR FIRST_LOG RERUN_LOG RC PREFIX: after a run that was
# interrupted (FIRST_LOG) and its rerun (RERUN_LOG, exit RC, certificate
# and key at PREFIX.pem/.key, the events counted by ev_summary): prints
# what is wrong, nothing when all holds. A mail the first run answered
# counts only when its reply may have left (the SMTP session began:
# "answered" was stored before it).
rerun_verdict() {
	local d=$1 first=$2 rerun=$3 rc=$4 prefix=$5 ids= why
	if grep -q 'SMTP: sending the reply' "$first"; then
		ids=$(sed -n 's/.*challenge mail accepted: answering \(<[^>]*>\).*/\1/p' \
			"$first" "$rerun" | sort | uniq -d)
	fi
	if [ "$rc" -ne 0 ]; then echo "the rerun exited $rc"
	elif ! why=$(cert_check "$d" "$prefix.pem" "$prefix.key" "$EMAIL"); then echo "$why"
	elif [ "$accounts" -gt 1 ]; then echo "$accounts accounts created"
	elif [ "$max_resp" -gt 1 ]; then echo "challenge $twice answered $max_resp times (CA)"
	elif [ -n "$ids" ]; then echo "challenge mail $ids answered again after its reply may have left"
	elif [ "$decoy_answers" -gt 0 ]; then echo "a decoy was answered"
	elif [ "$issued" -lt 1 ]; then echo "no certificate issued"
	fi
}
