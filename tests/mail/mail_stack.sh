#!/bin/bash
# Private, systemd-free mail stack for the tests: Dovecot POP3 (plain + STLS,
# and POP3S) and an SMTP server (Postfix, or python3-aiosmtpd when Postfix
# cannot run) delivering into per-user Maildirs that Dovecot serves.
# Everything lives under DIR and listens on $LISTEN (127.0.0.1).
#
#   mail_stack.sh start DIR    set up, start, wait until every port answers,
#                              write DIR/env
#   mail_stack.sh stop  DIR    stop what `start` started, by PID
#
# Ports (env):  POP3_PORT (plain + STLS)  POP3S_PORT (implicit TLS)
#               SMTP_PORT (MX role: no AUTH, delivers to the local domains;
#                          the test CA sends its challenge mails here)
#               SUBM_PORT (submission: STARTTLS required, then AUTH PLAIN/LOGIN)
#               SMTPS_PORT (submission over implicit TLS, AUTH required)
# Other env:    LISTEN=127.0.0.1 (one IPv4 address; another one, such as
#                 10.99.0.1 in a network namespace, is added to the servers'
#                 certificate as DNS: and IP: entries)
#               TLS_NAMES="mail.test ..." extra names (space or comma list) for
#                 the servers' certificate: DNS:name each, IP:name as well
#                 for IPv4 literals (default none)
#               MAIL_USERS="device@mail.test device2@mail.test ca@acme.test"
#                 mailbox addresses (login = address); their domains are the
#                 local domains; "+tag" sub-addresses deliver to the user
#               SMTP_IMPL=auto|postfix|aiosmtpd (auto: Postfix when root)
#               CERT_TYPE=ec|rsa  key of the mail servers' certificate
#               MAIL_SENDER_CHECK=1  submission refuses MAIL FROM addresses
#                 other than the logged-in user's own (0 = allow any)
# Passwords are random, one file per user: DIR/pw/<address> (no newline).
# TLS: DIR/tls/root.pem is the trust anchor (CA:TRUE) that issued the servers'
# certificate (CN=localhost, SAN DNS:localhost, DNS:127.0.0.1, IP:127.0.0.1,
# plus LISTEN and TLS_NAMES as above).
# Needs: dovecot-core dovecot-pop3d postfix python3-aiosmtpd openssl
set -euo pipefail
cmd=${1:-}
D=${2:-}
if [ -z "$cmd" ] || [ -z "$D" ]; then
  echo "usage: $0 start|stop DIR" >&2; exit 2
fi
mkdir -p "$D"; D=$(cd "$D" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
LISTEN=${LISTEN:-127.0.0.1}
POP3_PORT=${POP3_PORT:-11110}; POP3S_PORT=${POP3S_PORT:-11995}
SMTP_PORT=${SMTP_PORT:-10025}; SUBM_PORT=${SUBM_PORT:-10587}; SMTPS_PORT=${SMTPS_PORT:-10465}
CERT_TYPE=${CERT_TYPE:-ec}
TLS_NAMES=${TLS_NAMES:-}
SMTP_IMPL=${SMTP_IMPL:-auto}
MAIL_USERS=${MAIL_USERS:-device@mail.test device2@mail.test ca@acme.test}
MAIL_SENDER_CHECK=${MAIL_SENDER_CHECK:-1}
if [ "$SMTP_IMPL" = auto ]; then
  if [ "$(id -u)" = 0 ] && [ -x /usr/sbin/postfix ]; then SMTP_IMPL=postfix; else SMTP_IMPL=aiosmtpd; fi
fi
if [ "$(id -u)" = 0 ]; then
  RUN_USER=nobody; RUN_GROUP=$(id -gn nobody)
  ASUSER=(setpriv --reuid=nobody --regid="$RUN_GROUP" --clear-groups env HOME="$D")
else
  RUN_USER=$(id -un); RUN_GROUP=$(id -gn); ASUSER=(env)
fi
RUN_UID=$(id -u "$RUN_USER"); RUN_GID=$(getent group "$RUN_GROUP" | cut -d: -f3)

wait_port() {
  for _ in $(seq 1 1000); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.01
  done
  echo "mail_stack: port $1:$2 did not come up" >&2; return 1
}

# alive but not a zombie (PID 1 here may reap orphans late)
alive() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat" 2>/dev/null; }

domains() {
  local u; for u in $MAIL_USERS; do echo "${u#*@}"; done | tr '[:upper:]' '[:lower:]' | sort -u | tr '\n' ' '
}

# The servers' subjectAltName: the defaults, then LISTEN and TLS_NAMES.
server_sans() {
  local sans="DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1" n
  for n in $LISTEN ${TLS_NAMES//,/ }; do
    case ",$sans," in *",DNS:$n,"*) continue ;; esac
    sans="$sans,DNS:$n"
    if [[ $n =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then sans="$sans,IP:$n"; fi
  done
  printf '%s' "$sans"
}

make_tls() {
  local T=$D/tls kopt
  mkdir -p "$T"
  if [ "$CERT_TYPE" = rsa ]; then kopt=(-newkey rsa:2048); else kopt=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); fi
  openssl req -x509 "${kopt[@]}" -nodes -keyout "$T/root.key" -out "$T/root.pem" -days 3650 \
    -subj "/O=acme_smime tests/CN=mail test root" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -new "${kopt[@]}" -nodes -keyout "$T/key.pem" -out "$T/server.csr" \
    -subj "/O=acme_smime tests/CN=localhost" 2>/dev/null
  # DNS:127.0.0.1 as well: BearSSL matches the server name against dNSName entries only
  printf '%s\n' "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=$(server_sans)" > "$T/server.ext"
  openssl x509 -req -in "$T/server.csr" -CA "$T/root.pem" -CAkey "$T/root.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$T/server.ext" -out "$T/cert.pem" 2>/dev/null
  cat "$T/cert.pem" "$T/root.pem" > "$T/chain.pem"
  openssl x509 -in "$T/root.pem" -outform DER -out "$T/root.der"
  rm -f "$T/server.csr" "$T/root.srl" "$T/server.ext"
}

setup() {
  rm -rf "$D"/{tls,mail,pw,dovecot,postfix,users}
  mkdir -p "$D"/{mail,pw,dovecot/run,dovecot/state}
  chmod 755 "$D"
  make_tls
  local u pw
  : > "$D/users"
  for u in $MAIL_USERS; do
    pw=$(openssl rand -hex 12)
    printf '%s' "$pw" > "$D/pw/$u"
    echo "$u:{PLAIN}$pw:$RUN_UID:$RUN_GID::$D/mail/$u" >> "$D/users"
    mkdir -p "$D/mail/$u/Maildir"/{cur,new,tmp}
  done
  chmod 700 "$D/pw"; chmod 600 "$D/pw"/*
  cat > "$D/dovecot/dovecot.conf" <<EOF
base_dir = $D/dovecot/run
state_dir = $D/dovecot/state
instance_name = acme-mail-$$
log_path = /dev/stderr
info_log_path = /dev/stderr
protocols = pop3
listen = $LISTEN
default_internal_user = $RUN_USER
default_internal_group = $RUN_GROUP
default_login_user = $RUN_USER
ssl = yes
ssl_min_protocol = TLSv1.2
ssl_cert = <$D/tls/chain.pem
ssl_key = <$D/tls/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $D/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $D/users
}
mail_location = maildir:~/Maildir
pop3_uidl_format = %08Xu%08Xv
service pop3-login {
  chroot =
  inet_listener pop3 {
    port = $POP3_PORT
  }
  inet_listener pop3s {
    port = $POP3S_PORT
    ssl = yes
  }
}
service anvil {
  chroot =
}
service auth {
  unix_listener $D/dovecot/run/auth-smtp {
    mode = 0666
  }
}
EOF
  chown -R "$RUN_USER:$RUN_GROUP" "$D/mail" "$D/dovecot" "$D/users" "$D/tls"
  if [ "$SMTP_IMPL" = postfix ]; then setup_postfix; fi
}

setup_postfix() {
  local P=$D/postfix q u sender_opts=()
  mkdir -p "$P"/{etc,spool,data}
  if [ "$MAIL_SENDER_CHECK" = 1 ]; then
    sender_opts=("  -o smtpd_sender_login_maps=texthash:$P/etc/senders"
                 "  -o smtpd_sender_restrictions=reject_sender_login_mismatch")
  fi
  cat > "$P/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $P/spool
data_directory = $P/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.mail.test
mydomain = mail.test
myorigin = mail.test
mydestination =
inet_interfaces = $LISTEN
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = /dev/stdout
smtputf8_enable = no
alias_maps =
alias_database =
local_recipient_maps =
biff = no
recipient_delimiter = +
virtual_mailbox_domains = $(domains)
virtual_mailbox_base = $D/mail
virtual_mailbox_maps = texthash:$P/etc/vmailbox
virtual_uid_maps = static:$RUN_UID
virtual_gid_maps = static:$RUN_GID
virtual_minimum_uid = 1
smtpd_tls_cert_file = $D/tls/chain.pem
smtpd_tls_key_file = $D/tls/key.pem
smtpd_tls_security_level = may
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_protocols = >=TLSv1.2
smtpd_sasl_type = dovecot
smtpd_sasl_path = $D/dovecot/run/auth-smtp
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
# add missing Message-Id/Date only for authenticated submission, not for mail
# arriving on the MX port (the test CA's CA_MAIL_OMIT must reach the device as sent)
local_header_rewrite_clients = permit_sasl_authenticated
EOF
  {
    echo "$LISTEN:$SMTP_PORT inet n - n - - smtpd"
    echo "$LISTEN:$SUBM_PORT inet n - n - - smtpd"
    echo "  -o syslog_name=postfix/submission"
    echo "  -o smtpd_tls_security_level=encrypt"
    echo "  -o smtpd_sasl_auth_enable=yes"
    echo "  -o smtpd_tls_auth_only=yes"
    echo "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject"
    echo "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
    printf '%s\n' "${sender_opts[@]}"
    echo "$LISTEN:$SMTPS_PORT inet n - n - - smtpd"
    echo "  -o syslog_name=postfix/submissions"
    echo "  -o smtpd_tls_wrappermode=yes"
    echo "  -o smtpd_sasl_auth_enable=yes"
    echo "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject"
    echo "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
    printf '%s\n' "${sender_opts[@]}"
    cat <<EOF
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
  } | grep -v '^$' > "$P/etc/master.cf"
  : > "$P/etc/vmailbox"; : > "$P/etc/senders"
  for u in $MAIL_USERS; do
    printf '%s %s/Maildir/\n' "$u" "$u" >> "$P/etc/vmailbox"
    printf '%s %s\n' "$u" "$u" >> "$P/etc/senders"
  done
  # what `postfix set-permissions create-missing` would do (that takes ~3 s)
  for q in active bounce corrupt defer deferred flush hold incoming private saved trace; do
    install -d -o postfix -g root -m 700 "$P/spool/$q"
  done
  install -d -o postfix -g postdrop -m 730 "$P/spool/maildrop"
  install -d -o postfix -g postdrop -m 710 "$P/spool/public"
  install -d -o root -g root -m 755 "$P/spool/pid"
  install -d -o postfix -g root -m 700 "$P/data"
  touch "$P/spool/quick-start"   # postfix-script then skips its ~2-3 s integrity checks
  # Postfix re-reads a config file (300 ms sleeps) while its mtime is in the
  # future: back-date the freshly written files.
  touch -d '-1 minute' "$P"/etc/*
}

port_free() { ! (exec 3<>"/dev/tcp/$LISTEN/$1") 2>/dev/null; }

start() {
  local p
  if [ -f "$D/dovecot.pid" ] || [ -f "$D/smtp.pid" ]; then
    echo "mail_stack: $D already has a running stack (stop it first)" >&2; return 1
  fi
  for p in "$POP3_PORT" "$POP3S_PORT" "$SMTP_PORT" "$SUBM_PORT" "$SMTPS_PORT"; do
    port_free "$p" || { echo "mail_stack: port $LISTEN:$p is already in use" >&2; return 1; }
  done
  setup
  if [ "$(id -u)" = 0 ] && ! "${ASUSER[@]}" test -r "$D/users" -a -x "$D/mail"; then
    echo "mail_stack: user $RUN_USER cannot reach $D (make its parent directories world-searchable)" >&2
    return 1
  fi
  "${ASUSER[@]}" dovecot -F -c "$D/dovecot/dovecot.conf" >"$D/dovecot.log" 2>&1 &
  echo $! > "$D/dovecot.pid"
  wait_port "$LISTEN" "$POP3_PORT"; wait_port "$LISTEN" "$POP3S_PORT"
  if [ "$SMTP_IMPL" = postfix ]; then
    # master stays in the foreground under postfix-script; master.pid is the one to signal
    postfix -c "$D/postfix/etc" start-fg >"$D/smtp.log" 2>&1 &
    echo $! > "$D/smtp.pid"
    wait_port "$LISTEN" "$SMTP_PORT"; wait_port "$LISTEN" "$SUBM_PORT"; wait_port "$LISTEN" "$SMTPS_PORT"
    for _ in $(seq 1 500); do [ -s "$D/postfix/spool/pid/master.pid" ] && break; sleep 0.01; done
    tr -d ' ' < "$D/postfix/spool/pid/master.pid" > "$D/smtp.pid"
  else
    local sc=()
    [ "$MAIL_SENDER_CHECK" = 1 ] && sc=(--sender-check)
    "${ASUSER[@]}" "$PY" "$HERE/smtp_maildir.py" --listen "$LISTEN" --port "$SMTP_PORT" \
      --subm-port "$SUBM_PORT" --smtps-port "$SMTPS_PORT" --mail-base "$D/mail" --users "$D/users" \
      --cert "$D/tls/chain.pem" --key "$D/tls/key.pem" "${sc[@]}" >"$D/smtp.log" 2>&1 &
    echo $! > "$D/smtp.pid"
    wait_port "$LISTEN" "$SMTP_PORT"; wait_port "$LISTEN" "$SUBM_PORT"; wait_port "$LISTEN" "$SMTPS_PORT"
  fi
  cat > "$D/env" <<EOF
MAIL_DIR=$D
LISTEN=$LISTEN
POP3_PORT=$POP3_PORT
POP3S_PORT=$POP3S_PORT
SMTP_PORT=$SMTP_PORT
SUBM_PORT=$SUBM_PORT
SMTPS_PORT=$SMTPS_PORT
SMTP_IMPL=$SMTP_IMPL
MAIL_CA_FILE=$D/tls/root.pem
MAIL_USERS="$MAIL_USERS"
EOF
  echo "mail_stack: dovecot pid $(cat "$D/dovecot.pid"), $SMTP_IMPL pid $(cat "$D/smtp.pid")"
}

stop() {
  local f pid rc=0
  if [ -f "$D/env" ]; then
    SMTP_PORT=$(sed -n 's/^SMTP_PORT=//p' "$D/env")
    LISTEN=$(sed -n 's/^LISTEN=//p' "$D/env"); LISTEN=${LISTEN:-127.0.0.1}
  fi
  for f in smtp dovecot; do
    [ -f "$D/$f.pid" ] || continue
    pid=$(cat "$D/$f.pid"); rm -f "$D/$f.pid"
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 500); do alive "$pid" || break; sleep 0.01; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    echo "mail_stack: stopped $f (pid $pid)"
  done
  # Postfix children exit by themselves once master is gone; wait briefly so
  # the ports are free when stop returns.
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/$LISTEN/$SMTP_PORT") 2>/dev/null || break
    sleep 0.01
  done
  return $rc
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
