/*
 * fuzz_engine.c -- libFuzzer target for the whole client (section 11): the
 * fuzzer plays every peer at once -- the ACME server (plain-text HTTP in
 * this ACME_SMIME_FUZZING build), the POP3 mailbox and the SMTP submission
 * server (ACME_SMIME_TLS_NONE) -- through the ports, and acme_smime_step()
 * runs the state machine on what it says.
 *
 * Input: two configuration bytes (CFG_* and CFG2_* below: identifiers,
 * SMTP login, flash, token joining, a challenge hook that first asks to
 * wait, a short mail wait, STARTTLS to the mail servers, EAB, contact,
 * P-384 certificate key, one retry, forced renewal, the strict mail
 * policy with a trusted Authentication-Results server, the mailbox hooks
 * in place of POP3 and SMTP, deleting the answered mail), then chunks: a
 * 2-byte big-endian length and that many bytes (fewer when the input
 * ends). Each net_recv() call gets the next chunk (or the rest of one
 * larger than its buffer), whatever the connection; length 0 is a recv
 * that would block; length 0xFFFF is a power cut: the context is dropped
 * and the device boots again on the same flash. The dns_txt hook (DKIM
 * keys) takes the next chunk as the TXT record (length 0: no record,
 * 0xFFFF: the lookup fails). So do the mailbox hooks: list takes a chunk
 * of '\n'-separated message ids, read a chunk as the message (length 0:
 * "not yet"; 0xFFFF: the hook fails). When the input is used up, recv
 * reports the
 * connection closed and DNS lookups fail. net_send() takes everything,
 * unix_time is fixed, monotonic_ms jumps 1000 s a call (every wait ends
 * at once), entropy is a fixed pattern (so the certificate key is the
 * same in every run: the seeds carry a certificate for it). At most
 * MAX_STEPS steps, until ACME_SMIME_DONE or an error.
 *
 * Checked on the way:
 *   - acme_smime_step() returns AGAIN, WANT_IO (on an open handle, with
 *     read or write), WANT_TIME, DONE, or a known error that is sticky;
 *     the context's bounded fields stay in bounds;
 *   - handles: send, recv and close only on open ones, no double close,
 *     none left open after acme_smime_close();
 *   - secrets: the POP3 password goes only to the POP3 server, the SMTP
 *     credentials only to the SMTP server, neither ever to the log;
 *   - an email challenge is POSTed only after the SMTP server (or the
 *     send hook) accepted the reply; the send hook gets our address, 1 to
 *     ACME_SMIME_MAX_REPLY_TO + 1 one-line recipients and CRLF text that
 *     is not dot-stuffed; remove comes only with mail_delete, for the
 *     message answered; with the hooks no mail server is connected;
 *     an http-01 challenge only after the hook published its
 *     key authorization, which is token "." thumbprint of the account,
 *     and the token the hook gets is base64url (RFC 8555 section 8.1);
 *   - DONE: the certificate key is usable; the chain in RAM (if any) is
 *     PEM and NUL-terminated; with flash, the stored certificate matches
 *     the configuration, the key and the chain, and the next boot is DONE
 *     at once without any network traffic while renewal is not due.
 *
 * Built with -DFUZZ_ENGINE_MAIN (build/fuzz/fuzz_engine_replay) it is a
 * plain program instead: it replays files and prints how each ended;
 * --expect-done fails unless every file ends in ACME_SMIME_DONE (the
 * seeds' check in make test); --cert-key prints the certificate key the
 * fixed entropy gives, for tests/fuzz/make_seeds.py; -v logs the run.
 */
#define _POSIX_C_SOURCE 200809L
#ifndef ACME_SMIME_FUZZING
#define ACME_SMIME_FUZZING 1
#endif
#include "acme_smime.c"
#include "../../port/posix/flash_file.c"
#include "fuzz_util.h"

#define MAX_STEPS   2000
#define MAX_REBOOTS 4
#define MAX_HANDLES 64
#define FIXED_TIME  1796000000u   /* 2026-11-29 */
#define TICK_MS     1000000u      /* longer than any wait the engine takes */

#define FLASH_SECTOR 4096
#define FLASH_SIZE   ACME_SMIME_STORE_SIZE(FLASH_SECTOR, 1)

/* data[0] */
#define CFG_IDS_MASK      0x03  /* 0 email, 1 dns, 2 email+dns, 3 dns+email */
#define CFG_SMTP_AUTH     0x04
#define CFG_FLASH         0x08
#define CFG_CONCAT_BYTES  0x10
#define CFG_HOOK_WAIT     0x20
#define CFG_MAIL_WAIT_SHORT 0x40
#define CFG_MAIL_STARTTLS 0x80
/* data[1] */
#define CFG2_EAB          0x01
#define CFG2_CONTACT      0x02
#define CFG2_CERT_P384    0x04
#define CFG2_RETRIES_1    0x08
#define CFG2_FORCE_RENEW  0x10
#define CFG2_STRICT_AR    0x20  /* strict mail policy, trusted A-R from MX_ID */
#define CFG2_MAILBOX_HOOK 0x40  /* the mailbox hooks instead of POP3/SMTP */
#define CFG2_MAIL_DELETE  0x80

#define ACME_HOST  "acme.test"
#define MX_ID      "mx.example.com"
#define POP3_HOST  "pop.test"
#define SMTP_HOST  "smtp.test"
#define POP3_PASS  "pop3-Secret-pw"
#define SMTP_USER  "dev-smtp"
#define SMTP_PASS  "smtp-Secret-pw"
/* base64 of "\0dev-smtp\0smtp-Secret-pw" (AUTH PLAIN), of the LOGIN
 * user and password. */
#define SMTP_PLAIN_B64 "AGRldi1zbXRwAHNtdHAtU2VjcmV0LXB3"
#define SMTP_USER_B64  "ZGV2LXNtdHA="
#define SMTP_PASS_B64  "c210cC1TZWNyZXQtcHc="

static int verbose;

/* --- the peers: chunks of the input --- */

static const uint8_t *in_data;
static size_t in_len, in_pos;
static const uint8_t *chunk_ptr;
static size_t chunk_left;
static int reboot_pending;

static struct {
	int open;
	char host[ACME_SMIME_MAX_HOST + 1];
	unsigned port;
} handles[MAX_HANDLES];
static int handle_count;
static unsigned long net_calls;
static uint64_t mono_now;

static acme_smime_ctx ctx;
static acme_smime_config cfg;
static acme_smime_ports ports;
static struct flash_file ff;
static unsigned char flash_mem[FLASH_SIZE];
static acme_smime_key account_key;
static char provisioned[ACME_SMIME_MAX_TOKEN + 1];
static int hook_wait, hook_waited;

static int
handle_ok(int h)
{
	return h >= 0 && h < handle_count && handles[h].open;
}

static int
fz_connect(void *user, const char *host, unsigned port)
{
	int h;

	(void)user;
	net_calls++;
	FUZZ_CHECK(host != NULL && host[0] != '\0');
	FUZZ_CHECK(strlen(host) <= ACME_SMIME_MAX_HOST);
	FUZZ_CHECK(port > 0 && port < 65536);
	if (handle_count == MAX_HANDLES) {
		return -1;   /* a connect that fails */
	}
	FUZZ_CHECK(ports.mailbox == NULL ||
	    (strcmp(host, POP3_HOST) != 0 && strcmp(host, SMTP_HOST) != 0));
	h = handle_count++;
	handles[h].open = 1;
	strcpy(handles[h].host, host);
	handles[h].port = port;
	if (verbose) {
		fprintf(stderr, "  [connect %d %s:%u]\n", h, host, port);
	}
	return h;
}

static int
contains(const unsigned char *buf, size_t len, const char *s)
{
	size_t n = strlen(s), i;

	for (i = 0; n <= len && i <= len - n; i++) {
		if (buf[i] == (unsigned char)s[0] && memcmp(buf + i, s, n) == 0) {
			return 1;
		}
	}
	return 0;
}

static int
is_host(int h, const char *host)
{
	return strcmp(handles[h].host, host) == 0;
}

/* Set when the input itself holds a secret (the fuzzer learns them from
 * the comparisons): echoing the server's own text is no leak. */
static int secrets_in_input;

static int
has_secret(const unsigned char *buf, size_t len)
{
	return contains(buf, len, POP3_PASS) || contains(buf, len, SMTP_PASS) ||
	    contains(buf, len, SMTP_PLAIN_B64) || contains(buf, len, SMTP_USER_B64) ||
	    contains(buf, len, SMTP_PASS_B64);
}

/* A CR, LF or NUL in buf[0..n)? */
static int
line_breaks(const unsigned char *buf, size_t n)
{
	return memchr(buf, '\r', n) != NULL || memchr(buf, '\n', n) != NULL ||
	    memchr(buf, '\0', n) != NULL;
}

static void
check_http_head(const unsigned char *buf, size_t len)
{
	size_t i, head = 0, spaces = 0;

	for (i = 0; i + 3 < len; i++) {
		if (memcmp(buf + i, "\r\n\r\n", 4) == 0) {
			head = i + 2;
			break;
		}
	}
	FUZZ_CHECK(head > 0);
	for (i = 0; i < head; i++) {
		unsigned char c = buf[i];

		if (c == '\r') {
			FUZZ_CHECK(buf[i + 1] == '\n');
		} else if (c == '\n') {
			FUZZ_CHECK(i > 0 && buf[i - 1] == '\r');
		} else {
			FUZZ_CHECK(c >= 0x20 && c != 0x7f);
		}
	}
	for (i = 0; buf[i] != '\r'; i++) {
		spaces += buf[i] == ' ';
	}
	FUZZ_CHECK(spaces == 2);
}

static void
check_reply_mail(const unsigned char *buf, size_t len)
{
	size_t i;

	FUZZ_CHECK(len >= 5 && memcmp(buf + len - 5, "\r\n.\r\n", 5) == 0);
	for (i = 0; i < len; i++) {
		unsigned char c = buf[i];

		FUZZ_CHECK(c != 0 && c < 0x80);
		if (c == '\r') {
			FUZZ_CHECK(i + 1 < len && buf[i + 1] == '\n');
		} else if (c == '\n') {
			FUZZ_CHECK(i > 0 && buf[i - 1] == '\r');
			/* a line of a lone dot only at the very end */
			FUZZ_CHECK(!(i + 3 < len && buf[i + 1] == '.' && buf[i + 2] == '\r') ||
			    i + 4 == len);
		}
	}
}

static int
fz_send(void *user, int h, const unsigned char *buf, size_t len)
{
	(void)user;
	net_calls++;
	FUZZ_CHECK(handle_ok(h));
	FUZZ_CHECK(len > 0);
	/* The credentials go to their own server only. */
	if (secrets_in_input) {
		/* nothing to tell */
	} else if (!is_host(h, POP3_HOST)) {
		FUZZ_CHECK(!contains(buf, len, POP3_PASS));
	}
	if (!secrets_in_input && !is_host(h, SMTP_HOST)) {
		FUZZ_CHECK(!contains(buf, len, SMTP_PASS));
		FUZZ_CHECK(!contains(buf, len, SMTP_PLAIN_B64));
		FUZZ_CHECK(!contains(buf, len, SMTP_PASS_B64));
	}
	/* Whatever the servers sent, what goes out is well-formed: an HTTP
	 * request head of CRLF lines without control characters and a
	 * request line of three parts; a mail command is one line; the
	 * reply mail is CRLF text, dot-stuffed, ending in the lone dot. */
	if (!ctx.conn_tls && ctx.req_sent == 0 && len == ctx.req_len) {
		if (!ctx.conn_mail) {
			check_http_head(buf, len);
		} else if (ctx.mx_from == MX_FROM_LINE) {
			FUZZ_CHECK(len >= 2 && buf[len - 2] == '\r' && buf[len - 1] == '\n');
			FUZZ_CHECK(!line_breaks(buf, len - 2));
		} else {
			check_reply_mail(buf, len);
		}
	}
	/* An HTTP request answering a challenge ("{}" is "e30"). */
	if (!ctx.conn_mail && contains(buf, len, "\"payload\":\"e30\"")) {
		if (ctx.challenge.from[0] != '\0') {
			FUZZ_CHECK(ctx.email_flags & EMAIL_SENT);
		} else {
			FUZZ_CHECK(strcmp(provisioned, ctx.challenge.token) == 0);
		}
	}
	if (verbose) {
		fprintf(stderr, "  [send %d: %zu bytes: %.*s]\n", h, len,
		    (int)(len < 60 ? len : 60), (const char *)buf);
	}
	return len > 0x7FFFFFFF ? 0x7FFFFFFF : (int)len;
}

/* Next chunk header; returns its length, or -1 at the end of the input.
 * (Only between whole chunks: a recv may have left part of one.) */
static long
next_chunk(void)
{
	unsigned want;

	if (in_len - in_pos < 2) {
		return -1;
	}
	want = (unsigned)in_data[in_pos] << 8 | in_data[in_pos + 1];
	in_pos += 2;
	return (long)want;
}

static int
fz_recv(void *user, int h, unsigned char *buf, size_t len)
{
	size_t n;

	(void)user;
	net_calls++;
	FUZZ_CHECK(handle_ok(h));
	FUZZ_CHECK(len > 0);
	if (chunk_left == 0) {
		long want = next_chunk();

		if (want < 0) {
			return ACME_SMIME_NET_CLOSED;
		}
		if (want == 0xFFFF) {
			reboot_pending = 1;
			return ACME_SMIME_NET_WOULD_BLOCK;
		}
		if (want == 0) {
			return ACME_SMIME_NET_WOULD_BLOCK;
		}
		chunk_ptr = in_data + in_pos;
		chunk_left = (size_t)want < in_len - in_pos ? (size_t)want : in_len - in_pos;
		in_pos += chunk_left;
	}
	n = chunk_left < len ? chunk_left : len;
	memcpy(buf, chunk_ptr, n);
	chunk_ptr += n;
	chunk_left -= n;
	if (verbose) {
		fprintf(stderr, "  [recv %d: %zu bytes: %.*s]\n", h, n,
		    (int)(n < 60 ? n : 60), (const char *)buf);
	}
	return (int)n;
}

static int
fz_dns_txt(void *user, const char *name, char *out, size_t out_size)
{
	long want;
	size_t n;

	(void)user;
	FUZZ_CHECK(name != NULL && name[0] != '\0');
	FUZZ_CHECK(out != NULL && out_size == ACME_SMIME_MAX_DNS_TXT + 1);
	if (chunk_left > 0) {
		return -1;   /* the ACME server is half-way through a reply */
	}
	want = next_chunk();
	if (want < 0 || want == 0xFFFF) {
		return -1;
	}
	n = (size_t)want < in_len - in_pos ? (size_t)want : in_len - in_pos;
	if (n > out_size - 1) {
		n = out_size - 1;
	}
	memcpy(out, in_data + in_pos, n);
	out[n] = '\0';
	in_pos += (size_t)want < in_len - in_pos ? (size_t)want : in_len - in_pos;
	if (verbose) {
		fprintf(stderr, "  [dns_txt %s: %zu bytes]\n", name, n);
	}
	return (int)strlen(out);
}

static void
fz_close(void *user, int h)
{
	(void)user;
	FUZZ_CHECK(handle_ok(h));
	handles[h].open = 0;
	if (verbose) {
		fprintf(stderr, "  [close %d]\n", h);
	}
}

static uint64_t
fz_time(void *user)
{
	(void)user;
	return FIXED_TIME;
}

static uint64_t
fz_mono(void *user)
{
	(void)user;
	mono_now += TICK_MS;
	return mono_now;
}

static int
fz_entropy(void *user, unsigned char *buf, size_t len)
{
	size_t i;

	(void)user;
	for (i = 0; i < len; i++) {
		buf[i] = (unsigned char)(i * 31u + 7u);
	}
	return 0;
}

static void
fz_log(void *user, int level, const char *msg)
{
	(void)user;
	FUZZ_CHECK(level >= ACME_SMIME_LOG_ERROR && level <= ACME_SMIME_LOG_DEBUG);
	FUZZ_CHECK(msg != NULL);
	FUZZ_CHECK(secrets_in_input ||
	    !has_secret((const unsigned char *)msg, strlen(msg)));
	if (verbose) {
		fprintf(stderr, "log %d: %s\n", level, msg);
	}
}

/* Only base64url characters (no padding). */
#define FUZZ_B64URL_OK(s) b64url_only(s)
static int
b64url_only(const char *s)
{
	for (; *s != '\0'; s++) {
		if (b64_value((unsigned char)*s, B64_URL) < 0) {
			return 0;
		}
	}
	return 1;
}

static int
fz_challenge(void *user, int op, const char *identifier, const char *token,
	const char *key_authorization)
{
	char tp[ACME_SMIME_THUMBPRINT_SIZE], ka[ACME_SMIME_MAX_TOKEN + 64];

	(void)user;
	FUZZ_CHECK(identifier != NULL && token != NULL && key_authorization != NULL);
	if (op == ACME_SMIME_CHALLENGE_REMOVE) {
		if (strcmp(provisioned, token) == 0) {
			provisioned[0] = '\0';
		}
		return 0;
	}
	FUZZ_CHECK(op == ACME_SMIME_CHALLENGE_PROVISION);
	/* RFC 8555 section 8.1: the token is base64url, and hooks build
	 * paths and file names from it. */
	FUZZ_CHECK(token[0] != '\0' && strlen(token) <= ACME_SMIME_MAX_TOKEN);
	FUZZ_CHECK(FUZZ_B64URL_OK(token));
	/* RFC 8555 section 8.1: token "." base64url(JWK thumbprint). */
	FUZZ_CHECK(acme_smime_jwk_thumbprint(&ctx.account_key, tp) == ACME_SMIME_OK);
	snprintf(ka, sizeof ka, "%s.%s", token, tp);
	FUZZ_CHECK(strcmp(ka, key_authorization) == 0);
	if (hook_wait && !hook_waited) {
		hook_waited = 1;
		return 1;
	}
	strcpy(provisioned, token);
	return 0;
}

/* --- the mailbox hooks (CFG2_MAILBOX_HOOK) --- */

/* The next whole chunk for a hook: 1 with *p, *n set; 0 for an empty
 * chunk; -1 at the end, at a power cut marker, or mid-chunk. */
static int
hook_chunk(const uint8_t **p, size_t *n)
{
	long want;

	if (chunk_left > 0) {
		return -1;
	}
	want = next_chunk();
	if (want < 0 || want == 0xFFFF) {
		return -1;
	}
	*p = in_data + in_pos;
	*n = (size_t)want < in_len - in_pos ? (size_t)want : in_len - in_pos;
	in_pos += *n;
	return want == 0 ? 0 : 1;
}

static int
fz_mb_list(void *user, acme_smime_mail_entry_fn entry, void *arg)
{
	const uint8_t *p, *end;
	size_t n;
	int r;

	(void)user;
	FUZZ_CHECK(entry != NULL && arg == &ctx);
	r = hook_chunk(&p, &n);
	if (r <= 0) {
		return r < 0 ? -1 : 1;
	}
	for (end = p + n; p <= end; ) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = (size_t)((nl != NULL ? nl : end) - p);

		entry(arg, (const char *)p, len, len * 97);
		p += len + 1;
	}
	if (verbose) {
		fprintf(stderr, "  [mailbox list: %zu bytes]\n", n);
	}
	return 0;
}

static int
fz_mb_read(void *user, const char *id, char *buf, size_t size, size_t *len)
{
	const uint8_t *p;
	size_t n;
	int r;

	(void)user;
	FUZZ_CHECK(id != NULL && id[0] != '\0' && strlen(id) <= ACME_SMIME_MAX_MAIL_ID);
	FUZZ_CHECK(strcmp(id, ctx.mail_id) == 0);
	FUZZ_CHECK(buf != NULL && len != NULL && size > 0);
	r = hook_chunk(&p, &n);
	if (r <= 0) {
		return r < 0 ? -1 : 1;
	}
	if (n > size) {
		return ACME_SMIME_ERR_LIMIT;
	}
	memcpy(buf, p, n);
	*len = n;
	if (verbose) {
		fprintf(stderr, "  [mailbox read %s: %zu bytes]\n", id, n);
	}
	return 0;
}

static int
fz_mb_send(void *user, const char *from, const char *const *to, size_t to_count,
	const char *mail, size_t len)
{
	size_t i;

	(void)user;
	FUZZ_CHECK(from != NULL && strcmp(from, ctx.authz_identifier) == 0);
	FUZZ_CHECK(to != NULL && to_count >= 1 && to_count <= ACME_SMIME_MAX_REPLY_TO + 1);
	for (i = 0; i < to_count; i++) {
		FUZZ_CHECK(to[i] != NULL && to[i][0] != '\0');
		FUZZ_CHECK(!line_breaks((const unsigned char *)to[i], strlen(to[i])));
	}
	FUZZ_CHECK(mail != NULL && len >= 2 && memcmp(mail + len - 2, "\r\n", 2) == 0);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)mail[i];

		FUZZ_CHECK(c != 0 && c < 0x80);
		FUZZ_CHECK(c != '\r' || (i + 1 < len && mail[i + 1] == '\n'));
		FUZZ_CHECK(c != '\n' || (i > 0 && mail[i - 1] == '\r'));
	}
	/* Not dot-stuffed: the hook's own transport does that. */
	FUZZ_CHECK(!(len >= 5 && memcmp(mail + len - 5, "\r\n.\r\n", 5) == 0));
	if (verbose) {
		fprintf(stderr, "  [mailbox send: %zu bytes to %zu]\n", len, to_count);
	}
	return 0;
}

static int
fz_mb_remove(void *user, const char *id)
{
	(void)user;
	FUZZ_CHECK(cfg.mail_delete);
	FUZZ_CHECK(id != NULL && strcmp(id, ctx.mail_id) == 0);
	FUZZ_CHECK(ctx.email_flags & EMAIL_ANSWERED);
	return 0;
}

static const acme_smime_mailbox fz_mailbox = {
	fz_mb_list, fz_mb_read, fz_mb_send, fz_mb_remove
};

/* --- configuration --- */

static const acme_smime_identifier id_sets[4][2] = {
	{ { ACME_SMIME_ID_EMAIL, "dev@example.com" } },
	{ { ACME_SMIME_ID_DNS, "device.example.com" } },
	{ { ACME_SMIME_ID_EMAIL, "dev@example.com" },
	  { ACME_SMIME_ID_DNS, "device.example.com" } },
	{ { ACME_SMIME_ID_DNS, "device.example.com" },
	  { ACME_SMIME_ID_EMAIL, "dev@example.com" } },
};

/* A trust anchor the engine never gets to use (nothing here is TLS but
 * STARTTLS to the mail servers, which never completes). */
static const unsigned char fake_dn[] = { 0x30, 0x00 };
static unsigned char fake_q[65] = { 0x04 };
static const br_x509_trust_anchor fake_tas[1] = { {
	{ (unsigned char *)fake_dn, sizeof fake_dn }, BR_X509_TA_CA,
	{ BR_KEYTYPE_EC, { .ec = { BR_EC_secp256r1, fake_q, sizeof fake_q } } }
} };

static void
configure(uint8_t c0, uint8_t c1)
{
	int mail_tls = c0 & CFG_MAIL_STARTTLS ? ACME_SMIME_TLS_STARTTLS :
	    ACME_SMIME_TLS_NONE;
	size_t ids = c0 & CFG_IDS_MASK;

	memset(&cfg, 0, sizeof cfg);
	cfg.directory_url = "https://" ACME_HOST "/directory";
	cfg.identifiers = id_sets[ids];
	cfg.identifier_count = ids >= 2 ? 2 : 1;
	cfg.agree_tos = 1;
	cfg.contact = c1 & CFG2_CONTACT ? "mailto:dev@example.com" : NULL;
	if (c1 & CFG2_EAB) {
		cfg.eab_kid = "kid-1";
		cfg.eab_hmac_key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
	}
	cfg.key_usage = ACME_SMIME_KU_DUAL;
	cfg.cert_key_type = c1 & CFG2_CERT_P384 ? ACME_SMIME_KEY_P384 : 0;
	cfg.trust_anchors = fake_tas;
	cfg.trust_anchor_count = 1;
	hook_wait = (c0 & CFG_HOOK_WAIT) != 0;
	cfg.request_retries = c1 & CFG2_RETRIES_1 ? 1 : 0;
	cfg.deadline_s = 10000000u;
	cfg.force_renew = (c1 & CFG2_FORCE_RENEW) != 0;
	cfg.pop3.host = POP3_HOST;
	cfg.pop3.port = 110;
	cfg.pop3.tls = mail_tls;
	cfg.pop3.user = "dev";
	cfg.pop3.password = POP3_PASS;
	cfg.smtp.host = SMTP_HOST;
	cfg.smtp.port = 587;
	cfg.smtp.tls = mail_tls;
	cfg.smtp.user = c0 & CFG_SMTP_AUTH ? SMTP_USER : NULL;
	cfg.smtp.password = c0 & CFG_SMTP_AUTH ? SMTP_PASS : NULL;
	cfg.mail_trust_anchors = fake_tas;
	cfg.mail_trust_anchor_count = 1;
	if (c1 & CFG2_STRICT_AR) {
		cfg.mail_policy = 0;
		cfg.trusted_authserv_id = MX_ID;
	} else {
		cfg.mail_policy = ACME_SMIME_MAIL_ALLOW_UNSIGNED |
		    ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT;
	}
	cfg.token_concat = c0 & CFG_CONCAT_BYTES ? ACME_SMIME_CONCAT_BYTES :
	    ACME_SMIME_CONCAT_STRING;
	cfg.mail_wait_s = c0 & CFG_MAIL_WAIT_SHORT ? 1 : 10000000u;
	cfg.mail_delete = (c1 & CFG2_MAIL_DELETE) != 0;

	memset(&ports, 0, sizeof ports);
	ports.net_connect = fz_connect;
	ports.net_send = fz_send;
	ports.net_recv = fz_recv;
	ports.net_close = fz_close;
	ports.unix_time = fz_time;
	ports.monotonic_ms = fz_mono;
	ports.entropy = fz_entropy;
	ports.log = fz_log;
	ports.challenge = fz_challenge;
	ports.dns_txt = fz_dns_txt;
	ports.mailbox = c1 & CFG2_MAILBOX_HOOK ? &fz_mailbox : NULL;
	ports.flash = NULL;
	if (c0 & CFG_FLASH) {
		memset(flash_mem, 0xFF, sizeof flash_mem);
		FUZZ_CHECK(flash_mem_open(&ff, flash_mem, FLASH_SIZE, FLASH_SECTOR, 1) == 0);
		ports.flash = &ff.flash;
	}
}

/* --- checks --- */

static int
known_error(int r)
{
	switch (r) {
	case ACME_SMIME_ERR_INVALID: case ACME_SMIME_ERR_BUFFER:
	case ACME_SMIME_ERR_LIMIT: case ACME_SMIME_ERR_ENCODING:
	case ACME_SMIME_ERR_JSON: case ACME_SMIME_ERR_CRYPTO:
	case ACME_SMIME_ERR_ENTROPY: case ACME_SMIME_ERR_UNSUPPORTED:
	case ACME_SMIME_ERR_MAIL: case ACME_SMIME_ERR_NET: case ACME_SMIME_ERR_TLS:
	case ACME_SMIME_ERR_HTTP: case ACME_SMIME_ERR_ACME: case ACME_SMIME_ERR_TIME:
	case ACME_SMIME_ERR_TIMEOUT: case ACME_SMIME_ERR_STORE:
	case ACME_SMIME_ERR_STATE: case ACME_SMIME_ERR_HOOK:
		return 1;
	default:
		return 0;
	}
}

#define TERMINATED(f) FUZZ_CHECK(fuzz_terminated((f), sizeof (f)))

static void
check_ctx(void)
{
	unsigned i;

	TERMINATED(ctx.nonce);
	TERMINATED(ctx.url_new_nonce);
	TERMINATED(ctx.url_new_account);
	TERMINATED(ctx.url_new_order);
	TERMINATED(ctx.url_account);
	TERMINATED(ctx.url_order);
	TERMINATED(ctx.url_finalize);
	TERMINATED(ctx.url_certificate);
	for (i = 0; i < ACME_SMIME_MAX_AUTHZ; i++) {
		TERMINATED(ctx.url_authz[i]);
	}
	TERMINATED(ctx.challenge.url);
	TERMINATED(ctx.challenge.token);
	TERMINATED(ctx.challenge.from);
	TERMINATED(ctx.authz_identifier);
	TERMINATED(ctx.location);
	TERMINATED(ctx.resp_nonce);
	TERMINATED(ctx.err.text);
	TERMINATED(ctx.err.problem_type);
	TERMINATED(ctx.err.problem_detail);
	FUZZ_CHECK(ctx.state >= 0 && ctx.state < ST_COUNT);
	FUZZ_CHECK(ctx.body_len < http_area_size(&ctx));
	FUZZ_CHECK(ctx.line_len <= ACME_SMIME_MAX_HEADER_LINE);
	FUZZ_CHECK(ctx.authz_count <= ACME_SMIME_MAX_AUTHZ);
	FUZZ_CHECK(ctx.snapshot_count <= ACME_SMIME_MAX_SNAPSHOT);
	FUZZ_CHECK(ctx.snapshot_count <= ctx.snapshot_total);
	FUZZ_CHECK(ctx.candidate_count <= ACME_SMIME_MAX_EXAMINED);
	FUZZ_CHECK(ctx.candidate_index <= ctx.candidate_count);
	FUZZ_CHECK(ctx.req_sent <= ctx.req_len);
	FUZZ_CHECK(ctx.sock == -1 || handle_ok(ctx.sock));
	FUZZ_CHECK(acme_smime_state_name(&ctx) != NULL);
}

static void
check_done(void)
{
	const acme_smime_key *key = acme_smime_cert_key(&ctx);
	const char *chain;
	size_t len = 0;

	FUZZ_CHECK(key != NULL && key_usable(key));
	chain = acme_smime_cert_chain(&ctx, &len);
	if (chain != NULL) {
		FUZZ_CHECK(len > 27 && len < http_area_size(&ctx));
		FUZZ_CHECK(memcmp(chain, "-----BEGIN CERTIFICATE-----", 27) == 0);
		FUZZ_CHECK(chain[len] == '\0');
	}
	if (ports.flash != NULL) {
		static char stored[ACME_SMIME_STORE_MAX_CERT];
		acme_smime_cert_info info;
		acme_smime_key skey;

		FUZZ_CHECK(acme_smime_stored_cert(ports.flash, &cfg, &info, &skey) == 1);
		FUZZ_CHECK(info.matches_config);
		FUZZ_CHECK(skey.type == key->type && skey.priv_len == key->priv_len &&
		    memcmp(skey.priv, key->priv, key->priv_len) == 0);
		if (chain != NULL) {
			FUZZ_CHECK(info.chain_len == len);
			FUZZ_CHECK(acme_smime_stored_chain(ports.flash, 0, stored,
			    sizeof stored) == (int)len);
			FUZZ_CHECK(memcmp(stored, chain, len) == 0);
		}
	}
}

static unsigned char *work;

static void
boot(const acme_smime_key *key)
{
	int r = acme_smime_init(&ctx, &cfg, &ports, work, ACME_SMIME_WORKBUF_SIZE, key);

	if (verbose) {
		fprintf(stderr, "boot: %d %s\n", r, r < 0 ? ctx.err.text : "");
	}
	/* Only a store the run itself damaged could stop a boot. */
	FUZZ_CHECK(r == ACME_SMIME_OK || (ports.flash != NULL && known_error(r)));
}

/* Run to the end; returns the last step's result. */
static int
drive(void)
{
	int r = ACME_SMIME_AGAIN, steps, reboots = 0, ev;

	if (ctx.err.code != 0) {
		return ctx.err.code;
	}
	for (steps = 0; steps < MAX_STEPS; steps++) {
		r = acme_smime_step(&ctx);
		if (verbose) {
			fprintf(stderr, "step %d: %d %s\n", steps, r, acme_smime_state_name(&ctx));
		}
		check_ctx();
		if (r < 0) {
			FUZZ_CHECK(known_error(r));
			FUZZ_CHECK(r == ctx.err.code && acme_smime_last_error(&ctx) != NULL);
			FUZZ_CHECK(acme_smime_step(&ctx) == r);   /* sticky */
			break;
		}
		FUZZ_CHECK(r == ACME_SMIME_AGAIN || r == ACME_SMIME_WANT_IO ||
		    r == ACME_SMIME_WANT_TIME || r == ACME_SMIME_DONE);
		FUZZ_CHECK(acme_smime_last_error(&ctx) == NULL);
		if (r == ACME_SMIME_DONE) {
			check_done();
			break;
		}
		if (r == ACME_SMIME_WANT_IO) {
			FUZZ_CHECK(handle_ok(acme_smime_io(&ctx, &ev)));
			FUZZ_CHECK(ev == ACME_SMIME_IO_READ || ev == ACME_SMIME_IO_WRITE);
		}
		if (r == ACME_SMIME_WANT_TIME) {
			FUZZ_CHECK(acme_smime_wait_reason(&ctx)[0] != '\0');
		}
		if (reboot_pending) {
			int h;

			reboot_pending = 0;
			if (++reboots > MAX_REBOOTS) {
				break;
			}
			/* The power is gone: so are the connections and RAM. */
			for (h = 0; h < handle_count; h++) {
				handles[h].open = 0;
			}
			chunk_left = 0;
			memset(&ctx, 0xA5, sizeof ctx);
			memset(work, 0xA5, ACME_SMIME_WORKBUF_SIZE);
			provisioned[0] = '\0';
			boot(ports.flash != NULL ? NULL : &account_key);
			if (ctx.err.code != 0) {
				return ctx.err.code;
			}
		}
	}
	return r;
}

/* The fixed account key, made once (a P-256 key from a constant). */
static void
keys_once(void)
{
	static int ready;
	unsigned char priv[32];
	size_t i;

	if (ready) {
		return;
	}
	for (i = 0; i < sizeof priv; i++) {
		priv[i] = (unsigned char)(0x40 + i);
	}
	FUZZ_CHECK(acme_smime_key_from_private(&account_key, ACME_SMIME_KEY_P256,
	    priv, sizeof priv) == ACME_SMIME_OK);
	fake_q[0] = 0x04;
	ready = 1;
}

static int last_result;
static char last_error[sizeof ctx.err.text];

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int r, h;

	keys_once();
	if (size < 2) {
		return 0;
	}
	in_data = data;
	in_len = size;
	secrets_in_input = has_secret(data, size);
	in_pos = 2;
	chunk_left = 0;
	reboot_pending = 0;
	handle_count = 0;
	net_calls = 0;
	mono_now = 1000;
	provisioned[0] = '\0';
	hook_waited = 0;
	configure(data[0], data[1]);
	work = malloc(ACME_SMIME_WORKBUF_SIZE);
	FUZZ_CHECK(work != NULL);

	boot(&account_key);
	r = drive();
	last_result = r;
	memcpy(last_error, ctx.err.text, sizeof last_error);

	/* The next boot with a certificate not yet due: DONE at once, no
	 * network. */
	if (r == ACME_SMIME_DONE && ports.flash != NULL && !cfg.force_renew) {
		acme_smime_cert_info info;
		unsigned long before;

		FUZZ_CHECK(acme_smime_stored_cert(ports.flash, &cfg, &info, NULL) == 1);
		if (FIXED_TIME >= info.not_before && FIXED_TIME < info.renew_at) {
			acme_smime_close(&ctx);
			boot(NULL);
			before = net_calls;
			FUZZ_CHECK(acme_smime_step(&ctx) == ACME_SMIME_DONE);
			FUZZ_CHECK(net_calls == before);
			check_done();
		}
	}
	acme_smime_close(&ctx);
	for (h = 0; h < handle_count; h++) {
		FUZZ_CHECK(!handles[h].open);
	}
	free(work);
	return 0;
}

#ifdef FUZZ_ENGINE_MAIN
static int
replay(const char *path, int expect_done)
{
	static uint8_t buf[1 << 20];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL) {
		perror(path);
		return 1;
	}
	n = fread(buf, 1, sizeof buf, f);
	fclose(f);
	LLVMFuzzerTestOneInput(buf, n);
	printf("%s %s: %d (%s)%s%s\n", last_result == ACME_SMIME_DONE || !expect_done ?
	    "PASS" : "FAIL", path, last_result, last_result == ACME_SMIME_DONE ? "done" :
	    last_result < 0 ? acme_smime_strerror(last_result) : "not finished",
	    last_result < 0 ? ": " : "", last_result < 0 ? last_error : "");
	return expect_done && last_result != ACME_SMIME_DONE;
}

int
main(int argc, char **argv)
{
	int i, expect_done = 0, failed = 0, files = 0;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--cert-key") == 0) {
			acme_smime_key k;
			size_t j;

			FUZZ_CHECK(acme_smime_key_generate(&k, ACME_SMIME_KEY_P256,
			    fz_entropy, NULL) == ACME_SMIME_OK);
			for (j = 0; j < k.priv_len; j++) {
				printf("%02x", k.priv[j]);
			}
			printf("\n");
			return 0;
		} else if (strcmp(argv[i], "--expect-done") == 0) {
			expect_done = 1;
		} else if (strcmp(argv[i], "-v") == 0) {
			verbose = 1;
		} else {
			failed |= replay(argv[i], expect_done);
			files++;
		}
	}
	if (files == 0) {
		fprintf(stderr, "usage: %s [-v] [--expect-done] FILE... | --cert-key\n",
		    argv[0]);
		return 2;
	}
	return failed;
}
#endif
