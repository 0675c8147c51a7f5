/*
 * fuzz_pop3_smtp.c -- libFuzzer target for the mail response parser
 * mx_parse() (section 10): a POP3 status line (MX_POP3_LINE), a POP3
 * multi-line response with dot-unstuffing (MX_POP3_MULTI), an SMTP
 * reply with EHLO capabilities (MX_SMTP) and a UIDL listing taken line
 * by line into the mailbox snapshot (MX_POP3_LIST, section 11's
 * listing code), set up like tests/unit/test_mail_client.c.
 *
 * Input: data[0] picks the kind (data[0] % 4) and the size of the HTTP
 * area the POP3 body lands in (data[0] / 4 % 32: 0 is the default
 * ACME_SMIME_HTTP_AREA, else 4 * s * s - 3 bytes, from 1 byte up);
 * data[1..4] are the split points (pieces of data[1 + k % 4] + 1 bytes,
 * 255: all that is left); the rest is what the server sent.
 *
 * The work buffer has its exact size (AddressSanitizer sees a write past
 * the area) and a pattern in its TLS part that must survive. Checked: the
 * parser takes at most what it is given and stops early only when the
 * response is complete; the result is the same whole and in pieces, and
 * the same as an independent model of the protocols written here (the
 * status line, RFC 1939 dot-unstuffing with the body cut at the area, the
 * RFC 5321 reply code, continuation lines and the STARTTLS and AUTH
 * capabilities, and for a listing the valid "number id" lines, the
 * ring of the last ACME_SMIME_MAX_SNAPSHOT ids and whether a line was
 * malformed); a complete multi-line body has room for its NUL.
 */
#include "acme_smime.c"
#include "fuzz_util.h"

#define TLS_FILL 0x5A

static acme_smime_ports ports;

typedef struct {
	acme_smime_ctx ctx;
	unsigned char *work;
	size_t used;
} run_state;

static void
setup(run_state *rs, int kind, size_t area)
{
	memset(&rs->ctx, 0, sizeof rs->ctx);
	rs->work = malloc(ACME_SMIME_TLS_AREA + area);
	FUZZ_CHECK(rs->work != NULL);
	memset(rs->work, TLS_FILL, ACME_SMIME_TLS_AREA);
	memset(rs->work + ACME_SMIME_TLS_AREA, 0xEE, area);
	rs->ctx.ports = &ports;
	rs->ctx.work = rs->work;
	rs->ctx.work_size = ACME_SMIME_TLS_AREA + area;
	rs->ctx.sock = -1;
	rs->ctx.state = ST_POP3_UIDL;
	rs->ctx.mbox_purpose = MBOX_SNAPSHOT;
	mbox_start_listing(&rs->ctx);
	FUZZ_CHECK(mx_command(&rs->ctx, kind, NULL, NULL, 0) == 0);
	rs->used = 0;
}

static void
feed(run_state *rs, const uint8_t *data, size_t len, const uint8_t *split)
{
	acme_smime_ctx *c = &rs->ctx;
	size_t k = 0;

	while (rs->used < len && c->mx_state != MXS_DONE) {
		size_t n = len - rs->used;
		long r;

		if (split != NULL && split[k % 4] != 0xFF &&
		    (size_t)split[k % 4] + 1 < n) {
			n = (size_t)split[k % 4] + 1;
		}
		k++;
		r = mx_parse(c, data + rs->used, n);
		FUZZ_CHECK(r >= 0 && (size_t)r <= n);
		FUZZ_CHECK((size_t)r == n || c->mx_state == MXS_DONE);
		rs->used += (size_t)r;
		FUZZ_CHECK(c->body_len < http_area_size(c));
		FUZZ_CHECK(c->line_len <= ACME_SMIME_MAX_HEADER_LINE);
		FUZZ_CHECK(c->mx_state >= MXS_STATUS && c->mx_state <= MXS_DONE);
		FUZZ_CHECK(c->snapshot_count <= ACME_SMIME_MAX_SNAPSHOT &&
		    c->snapshot_count <= c->snapshot_total);
	}
	if (c->mx_state == MXS_DONE && c->mx_kind == MX_POP3_MULTI) {
		/* What mx_exchange() does with a complete response. */
		http_area(c)[c->body_len] = '\0';
	}
}

/* --- the model --- */

typedef struct {
	int done, ok, code, truncated;
	unsigned caps;
	size_t used;           /* bytes up to the end of the response */
	unsigned char *body;   /* the whole unstuffed body, uncut */
	size_t body_len;
} model;

static int
lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* s[0..n) equals w ignoring ASCII case. */
static int
same_word(const char *s, size_t n, const char *w)
{
	size_t i;

	if (n != strlen(w)) {
		return 0;
	}
	for (i = 0; i < n; i++) {
		if (lower((unsigned char)s[i]) != lower((unsigned char)w[i])) {
			return 0;
		}
	}
	return 1;
}

static int
digit(char c)
{
	return c >= '0' && c <= '9';
}

/* One line as the parser keeps it: at most MAX_HEADER_LINE bytes, one
 * CR at the end of what is kept removed. */
static size_t
model_line(const uint8_t *raw, size_t n, char *out)
{
	if (n > ACME_SMIME_MAX_HEADER_LINE) {
		n = ACME_SMIME_MAX_HEADER_LINE;
	}
	memcpy(out, raw, n);
	if (n > 0 && out[n - 1] == '\r') {
		n--;
	}
	out[n] = '\0';
	return n;
}

static int
model_word(const char *s, size_t n, const char *w)
{
	size_t i = 0;

	while (i < n) {
		size_t st;

		while (i < n && s[i] == ' ') {
			i++;
		}
		st = i;
		while (i < n && s[i] != ' ') {
			i++;
		}
		if (same_word(s + st, i - st, w)) {
			return 1;
		}
	}
	return 0;
}

static void
model_smtp(model *m, const uint8_t *d, size_t len)
{
	char l[ACME_SMIME_MAX_HEADER_LINE + 1];
	size_t pos = 0;

	while (!m->done) {
		const uint8_t *nl = memchr(d + pos, '\n', len - pos);
		size_t n;
		int code;

		if (nl == NULL) {
			return;
		}
		n = model_line(d + pos, (size_t)(nl - (d + pos)), l);
		pos = (size_t)(nl - d) + 1;
		m->used = pos;
		code = n >= 3 && digit(l[0]) && digit(l[1]) && digit(l[2]) ?
		    (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0') : -1;
		if (code < 200 || code > 599 || (n > 3 && l[3] != ' ' && l[3] != '-')) {
			m->code = -1;
			m->done = 1;
			return;
		}
		if (code == 250 && n > 4) {
			if (same_word(l + 4, n - 4, "STARTTLS")) {
				m->caps |= CAP_STARTTLS;
			} else if (n > 9 && same_word(l + 4, 5, "AUTH ")) {
				m->caps |= model_word(l + 9, n - 9, "PLAIN") ? CAP_AUTH_PLAIN : 0;
				m->caps |= model_word(l + 9, n - 9, "LOGIN") ? CAP_AUTH_LOGIN : 0;
			}
		}
		m->code = code;
		m->done = n == 3 || l[3] == ' ';
	}
}

static void
model_put(model *m, uint8_t c)
{
	m->body[m->body_len++] = c;
}

static void
model_pop3(model *m, int kind, const uint8_t *d, size_t len)
{
	char l[ACME_SMIME_MAX_HEADER_LINE + 1];
	const uint8_t *nl = memchr(d, '\n', len);
	size_t n, pos;
	int bol = 1;

	if (nl == NULL) {
		return;
	}
	n = model_line(d, (size_t)(nl - d), l);
	m->ok = n >= 3 && memcmp(l, "+OK", 3) == 0;
	pos = (size_t)(nl - d) + 1;
	m->used = pos;
	if (kind == MX_POP3_LINE || !m->ok) {
		m->done = 1;
		return;
	}
	while (pos < len) {
		uint8_t c = d[pos];

		if (bol && c == '.') {
			/* ".\r\n" or ".\n" ends the body; else the dot goes. */
			if (pos + 1 < len && d[pos + 1] == '\n') {
				m->done = 1;
				m->used = pos + 2;
				return;
			}
			if (pos + 2 < len && d[pos + 1] == '\r' && d[pos + 2] == '\n') {
				m->done = 1;
				m->used = pos + 3;
				return;
			}
			if (pos + 1 >= len || (pos + 2 >= len && d[pos + 1] == '\r')) {
				return;   /* cannot tell yet: nothing emitted */
			}
			pos++;
			bol = 0;
			continue;
		}
		model_put(m, c);
		bol = c == '\n';
		pos++;
	}
}

/* A UIDL listing: the complete lines of the unstuffed body, each kept
 * as the parser keeps it; a valid one is "number id" (1 to 9 digits, not
 * 0; an id of 1 to ACME_SMIME_MAX_MAIL_ID bytes without NUL). Counts the
 * valid lines, keeps the hashes of the last ACME_SMIME_MAX_SNAPSHOT and
 * says whether any line was malformed or too long (the last one too,
 * while it is still open). */
static void
model_listing(const model *m, uint32_t *total, uint32_t *ring, int *bad)
{
	char l[ACME_SMIME_MAX_HEADER_LINE + 1];
	size_t pos = 0;

	*total = 0;
	*bad = 0;
	for (;;) {
		const uint8_t *nl = memchr(m->body + pos, '\n', m->body_len - pos);
		size_t raw, n, d = 0, idl;
		const char *id;

		if (nl == NULL) {
			/* a line still open is already too long */
			*bad |= m->body_len - pos > ACME_SMIME_MAX_HEADER_LINE;
			return;
		}
		raw = (size_t)(nl - (m->body + pos));
		*bad |= raw > ACME_SMIME_MAX_HEADER_LINE;
		n = model_line(m->body + pos, raw, l);
		pos += raw + 1;
		while (d < n && digit(l[d])) {
			d++;
		}
		id = l + d + 1;
		idl = d < n ? n - d - 1 : 0;
		if (d == 0 || d > 9 || d >= n || l[d] != ' ' || strspn(l, "0") == d ||
		    idl == 0 || idl > ACME_SMIME_MAX_MAIL_ID || memchr(id, '\0', idl) != NULL) {
			*bad = 1;
			continue;
		}
		ring[*total % ACME_SMIME_MAX_SNAPSHOT] = store_crc32(0,
		    (const unsigned char *)id, idl);
		++*total;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int kinds[4] = { MX_POP3_LINE, MX_POP3_MULTI, MX_SMTP, MX_POP3_LIST };
	static unsigned char fill[ACME_SMIME_TLS_AREA];
	static run_state whole, split;
	const acme_smime_ctx *a = &whole.ctx, *b = &split.ctx;
	model m;
	size_t area, len, keep;
	unsigned sel;
	int kind;

	if (size < 5) {
		return 0;
	}
	if (fill[0] != TLS_FILL) {
		memset(fill, TLS_FILL, sizeof fill);
	}
	kind = kinds[data[0] % 4];
	sel = data[0] / 4 % 32;
	area = sel == 0 ? ACME_SMIME_HTTP_AREA : 4u * sel * sel - 3u;
	memset(&ports, 0, sizeof ports);
	data += 5;
	len = size - 5;

	setup(&whole, kind, area);
	feed(&whole, data, len, NULL);
	setup(&split, kind, area);
	feed(&split, data, len, data - 4);

	/* Whole and in pieces alike. */
	FUZZ_CHECK(whole.used == split.used);
	FUZZ_CHECK(a->mx_state == b->mx_state && a->mx_ok == b->mx_ok &&
	    a->mx_code == b->mx_code && a->mx_truncated == b->mx_truncated &&
	    a->mail_caps == b->mail_caps && a->body_len == b->body_len);
	FUZZ_CHECK(memcmp(http_area((acme_smime_ctx *)a),
	    http_area((acme_smime_ctx *)b), a->body_len) == 0);
	FUZZ_CHECK(a->snapshot_total == b->snapshot_total && a->list_bad == b->list_bad &&
	    memcmp(a->snapshot, b->snapshot, sizeof a->snapshot) == 0);

	/* As the model says. */
	memset(&m, 0, sizeof m);
	m.body = malloc(len + 1);
	FUZZ_CHECK(m.body != NULL);
	if (kind == MX_SMTP) {
		model_smtp(&m, data, len);
		FUZZ_CHECK(a->mx_code == m.code && a->mail_caps == m.caps);
		FUZZ_CHECK(a->body_len == 0);
	} else if (kind == MX_POP3_LIST) {
		static uint32_t ring[ACME_SMIME_MAX_SNAPSHOT];
		uint32_t total;
		unsigned k;
		int bad;

		model_pop3(&m, kind, data, len);
		FUZZ_CHECK(a->mx_ok == m.ok);
		FUZZ_CHECK(a->body_len == 0 && !a->mx_truncated);
		model_listing(&m, &total, ring, &bad);
		FUZZ_CHECK(a->snapshot_total == total && a->list_bad == bad);
		FUZZ_CHECK(a->snapshot_count == (total < ACME_SMIME_MAX_SNAPSHOT ?
		    total : ACME_SMIME_MAX_SNAPSHOT));
		for (k = 0; k < a->snapshot_count; k++) {
			FUZZ_CHECK(a->snapshot[k] == ring[k]);
		}
	} else {
		model_pop3(&m, kind, data, len);
		FUZZ_CHECK(a->mx_ok == m.ok);
		keep = m.body_len < area - 1 ? m.body_len : area - 1;
		FUZZ_CHECK(a->body_len == keep);
		FUZZ_CHECK(memcmp(http_area((acme_smime_ctx *)a), m.body, keep) == 0);
		FUZZ_CHECK(a->mx_truncated == (m.body_len > area - 1));
	}
	FUZZ_CHECK((a->mx_state == MXS_DONE) == m.done);
	if (m.done) {
		FUZZ_CHECK(whole.used == m.used);
	} else {
		FUZZ_CHECK(whole.used == len);
	}
	free(m.body);

	FUZZ_CHECK(memcmp(whole.work, fill, sizeof fill) == 0);
	FUZZ_CHECK(memcmp(split.work, fill, sizeof fill) == 0);
	free(whole.work);
	free(split.work);
	return 0;
}
