/* ========================================================================
 * 6. Mail: RFC 5322 header fields, RFC 2047 encoded-words, addresses,
 *    the RFC 8823 challenge-mail checks and the response-mail writer
 * ====================================================================== */

/*
 * The challenge mail is hostile input: anyone can send us mail. It is read
 * in place and never copied whole. One pass over the header finds the few
 * fields we examine; each is then unfolded, one at a time, into a single
 * scratch buffer of ACME_SMIME_MAX_HEADER bytes. Everything else in the
 * header (DKIM signatures, Received chains) is skipped, whatever its size.
 */

/* The fields we examine; any of them appearing twice refuses the mail,
 * since a forger could hope that we read one copy and a signature
 * checker the other. */
enum mail_field {
	FIELD_SUBJECT,
	FIELD_FROM,
	FIELD_TO,
	FIELD_REPLY_TO,
	FIELD_AUTO_SUBMITTED,
	FIELD_MESSAGE_ID,
	FIELD_REFERENCES,
	FIELD_COUNT
};

static const char *const mail_field_names[FIELD_COUNT] = {
	"Subject", "From", "To", "Reply-To", "Auto-Submitted", "Message-ID",
	"References"
};

/* Where a field's value (after the colon, still folded) lies in the mail. */
typedef struct {
	const char *raw;        /* NULL when the field is absent */
	size_t raw_len;
} field_span;

typedef struct {
	field_span field[FIELD_COUNT];
} mail_header;

/* Deepest nesting of RFC 5322 comments we follow. */
#define MAIL_COMMENT_DEPTH 8

/* Bytes a token part decodes to, at most. */
#define MAIL_TOKEN_BYTES ((ACME_SMIME_MAX_TOKEN + 3) / 4 * 3)

/* RFC 8823 section 3.1: token-part1 carries at least 128 bits. */
#define MAIL_TOKEN_MIN_BYTES 16

/* RFC 5322 section 2.1.1: lines SHOULD stay within 78 characters. */
#define MAIL_LINE_SOFT_MAX 78

/* Largest Unix time whose date has a four-digit year (9999-12-31). */
#define MAIL_DATE_MAX 253402300799u

static int
is_wsp(int c)
{
	return c == ' ' || c == '\t';
}

/* Printable US-ASCII, space excluded (RFC 5322 VCHAR). */
static int
is_vchar(int c)
{
	return c > 0x20 && c < 0x7f;
}

/* RFC 5322 atext, plus the UTF-8 bytes RFC 6532 allows in addresses. */
static int
is_atext(int c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
	    || (c >= '0' && c <= '9') || c >= 0x80) {
		return 1;
	}
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* Bytes that may not appear in a decoded Subject: they have no business in
 * a token and could hide text from a log line. */
static int
is_forbidden_control(int c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

static int
hex_value(int c)
{
	if (c >= '0' && c <= '9') {
		return c - '0';
	}
	c = to_lower(c);
	if (c >= 'a' && c <= 'f') {
		return c - 'a' + 10;
	}
	return -1;
}

/* Length of s when it ends within max characters, else max + 1. Reads at
 * most max + 1 bytes, so a fixed field of max + 1 bytes that lost its NUL
 * is still read within bounds. */
static size_t
bounded_len(const char *s, size_t max)
{
	size_t n = 0;

	while (n <= max && s[n] != '\0') {
		n++;
	}
	return n;
}

/* ------------------------------------------------------------------------
 * 6.1 Header scan
 * ---------------------------------------------------------------------- */

/*
 * Bounds of the line starting at pos: its text ends at *end (before CR LF
 * or LF), the next line starts at *next. A NUL, or a CR that does not end
 * the line, makes the header malformed: both let two parsers disagree on
 * where a field stops. A lone CR at the very end of the mail is taken as a
 * truncated line end.
 */
static int
header_line_bounds(const char *mail, size_t mail_len, size_t pos,
	size_t *end, size_t *next)
{
	size_t i;

	for (i = pos; i < mail_len; i++) {
		if (mail[i] == '\n') {
			*end = i;
			*next = i + 1;
			return 0;
		}
		if (mail[i] == '\0') {
			return -1;
		}
		if (mail[i] == '\r') {
			if (i + 1 < mail_len && mail[i + 1] != '\n') {
				return -1;
			}
			*end = i;
			*next = (i + 1 < mail_len) ? i + 2 : mail_len;
			return 0;
		}
	}
	*end = mail_len;
	*next = mail_len;
	return 0;
}

/* Position of the colon after a field name starting at pos, or 0 when the
 * line has no valid name (RFC 5322 ftext, with the obsolete white space
 * before the colon tolerated). */
static size_t
header_name_end(const char *line, size_t len, size_t *name_len)
{
	size_t i = 0, n;

	while (i < len && is_vchar((unsigned char)line[i]) && line[i] != ':') {
		i++;
	}
	n = i;
	while (i < len && is_wsp((unsigned char)line[i])) {
		i++;
	}
	if (n == 0 || i >= len || line[i] != ':') {
		return 0;
	}
	*name_len = n;
	return i;
}

static int
mail_field_lookup(const char *name, size_t len)
{
	int k;

	for (k = 0; k < FIELD_COUNT; k++) {
		if (ascii_caseeq(name, len, mail_field_names[k])) {
			return k;
		}
	}
	return FIELD_COUNT;
}

/* State of the header scan between lines. */
typedef struct {
	mail_header *hdr;
	int current;            /* field being continued; FIELD_COUNT = skipped */
	int have_field;         /* a field line was seen (continuations allowed) */
	size_t unfolded;        /* unfolded length of the current examined field */
	int too_long;
	int duplicate;
} header_scan_state;

static void
header_scan_field(header_scan_state *st, const char *line, size_t len)
{
	size_t name_len = 0, colon = header_name_end(line, len, &name_len);
	int which = mail_field_lookup(line, name_len);

	st->have_field = 1;
	st->current = FIELD_COUNT;
	if (which == FIELD_COUNT) {
		return;
	}
	st->unfolded = len - (colon + 1);
	if (st->unfolded > ACME_SMIME_MAX_HEADER) {
		st->too_long = 1;
	}
	if (st->hdr->field[which].raw != NULL) {
		st->duplicate = 1;
		return;
	}
	st->hdr->field[which].raw = line + colon + 1;
	st->hdr->field[which].raw_len = len - (colon + 1);
	st->current = which;
}

static void
header_scan_continuation(header_scan_state *st, const char *line, size_t len)
{
	field_span *f;

	if (st->current == FIELD_COUNT) {
		return;
	}
	st->unfolded += len;
	if (st->unfolded > ACME_SMIME_MAX_HEADER) {
		st->too_long = 1;
	}
	/* The span runs on over the line break; unfolding drops CR and LF. */
	f = &st->hdr->field[st->current];
	f->raw_len = (size_t)(line + len - f->raw);
}

/*
 * Find the examined fields. The header ends at the first empty line or at
 * the end of the mail. Structural faults win over limits and duplicates,
 * so the scan reads the whole header before reporting those.
 */
static int
header_scan(mail_header *hdr, const char *mail, size_t mail_len)
{
	header_scan_state st;
	size_t pos = 0, end, next, name_len;

	memset(hdr, 0, sizeof *hdr);
	memset(&st, 0, sizeof st);
	st.hdr = hdr;
	st.current = FIELD_COUNT;
	while (pos < mail_len) {
		if (header_line_bounds(mail, mail_len, pos, &end, &next) < 0) {
			return ACME_SMIME_MAIL_MALFORMED;
		}
		if (end == pos) {
			break;
		}
		if (is_wsp((unsigned char)mail[pos])) {
			if (!st.have_field) {
				return ACME_SMIME_MAIL_MALFORMED;
			}
			header_scan_continuation(&st, mail + pos, end - pos);
		} else if (header_name_end(mail + pos, end - pos, &name_len) == 0) {
			return ACME_SMIME_MAIL_MALFORMED;
		} else {
			header_scan_field(&st, mail + pos, end - pos);
		}
		pos = next;
	}
	if (!st.have_field) {
		return ACME_SMIME_MAIL_MALFORMED;
	}
	if (st.too_long) {
		return ACME_SMIME_MAIL_HEADER_TOO_LONG;
	}
	if (st.duplicate) {
		return ACME_SMIME_MAIL_DUPLICATE_FIELD;
	}
	return ACME_SMIME_MAIL_OK;
}

/* Unfold a field's value into scratch (ACME_SMIME_MAX_HEADER + 1 bytes,
 * NUL-terminated). The scan refused bare CRs, so every CR and LF inside a
 * span is a fold. Returns 0 when the field is absent. */
static int
field_unfold(const mail_header *hdr, int which, char *scratch, size_t *len)
{
	const field_span *f = &hdr->field[which];
	size_t i, n = 0;

	if (f->raw == NULL) {
		return 0;
	}
	for (i = 0; i < f->raw_len && n < ACME_SMIME_MAX_HEADER; i++) {
		if (f->raw[i] != '\r' && f->raw[i] != '\n') {
			scratch[n++] = f->raw[i];
		}
	}
	scratch[n] = '\0';
	*len = n;
	return 1;
}

/* ------------------------------------------------------------------------
 * 6.2 RFC 2047 encoded-words (Subject only)
 * ---------------------------------------------------------------------- */

/* The parts of one "=?charset[*lang]?enc?text?=" word. */
typedef struct {
	size_t charset, charset_len;
	int encoding;           /* 'q' or 'b' */
	size_t text, text_len;
	size_t end;             /* just after the closing "?=" */
} encoded_word;

/*
 * Split the encoded-word starting at s[pos] ("=?"). An "=?" that does not
 * open a complete word is refused rather than kept as text: no token
 * contains "=?", so such a Subject is either broken or crafted.
 */
static int
encoded_word_split(const char *s, size_t len, size_t pos, encoded_word *ew)
{
	size_t p = pos + 2;

	ew->charset = p;
	while (p < len && s[p] != '?' && is_vchar((unsigned char)s[p])) {
		p++;
	}
	if (p + 2 >= len || s[p] != '?' || s[p + 2] != '?') {
		return ACME_SMIME_MAIL_BAD_ENCODED_WORD;
	}
	ew->charset_len = p - ew->charset;
	ew->encoding = to_lower((unsigned char)s[p + 1]);
	p += 3;
	ew->text = p;
	while (p < len && s[p] != '?' && is_vchar((unsigned char)s[p])) {
		p++;
	}
	if (p + 1 >= len || s[p] != '?' || s[p + 1] != '=') {
		return ACME_SMIME_MAIL_BAD_ENCODED_WORD;
	}
	ew->text_len = p - ew->text;
	ew->end = p + 2;
	if (ew->charset_len == 0
	    || (ew->encoding != 'q' && ew->encoding != 'b')) {
		return ACME_SMIME_MAIL_BAD_ENCODED_WORD;
	}
	return ACME_SMIME_MAIL_OK;
}

/* RFC 8823 section 3.1 allows only UTF-8 and US-ASCII; an RFC 2231
 * language suffix ("*en") is ignored. */
static int
encoded_word_charset_ok(const char *charset, size_t len)
{
	size_t n = 0;

	while (n < len && charset[n] != '*') {
		n++;
	}
	if (n < len && n + 1 == len) {
		return 0;
	}
	return ascii_caseeq(charset, n, "utf-8")
		|| ascii_caseeq(charset, n, "us-ascii");
}

/* Q encoding: '_' is a space, "=XX" a hex byte. Writes at out, which never
 * runs ahead of the text being read. Returns the decoded length or -1. */
static int
q_decode(char *out, const char *text, size_t len)
{
	size_t i = 0, n = 0;
	int c, hi, lo;

	while (i < len) {
		c = (unsigned char)text[i++];
		if (c == '_') {
			c = ' ';
		} else if (c == '=') {
			if (len - i < 2) {
				return -1;
			}
			hi = hex_value((unsigned char)text[i]);
			lo = hex_value((unsigned char)text[i + 1]);
			if (hi < 0 || lo < 0) {
				return -1;
			}
			c = hi * 16 + lo;
			i += 2;
		}
		if (c == '\0' || is_forbidden_control(c)) {
			return -1;
		}
		out[n++] = (char)c;
	}
	return (int)n;
}

/* B encoding: standard base64 with padding. */
static int
b_decode(char *out, size_t out_size, const char *text, size_t len)
{
	int n, i;

	n = b64_decode((unsigned char *)out, out_size, text, len, B64_PAD_OK);
	for (i = 0; i < n; i++) {
		if (out[i] == '\0' || is_forbidden_control((unsigned char)out[i])) {
			return -1;
		}
	}
	return n < 0 ? -1 : n;
}

/*
 * Decode the encoded-words of an unfolded Subject in place; *len is
 * updated. In place is safe because decoding only shrinks: an encoded-word
 * is at least 7 characters longer than what it decodes to, so the write
 * position stays behind the read position. White space between two
 * adjacent encoded-words is dropped (RFC 2047 section 6.2).
 */
static int
subject_decode(char *s, size_t *len)
{
	size_t r = 0, w = 0, after_word = 0;
	int have_word = 0, n, reason;
	encoded_word ew;

	while (r < *len) {
		if (s[r] != '=' || r + 1 >= *len || s[r + 1] != '?') {
			if (!is_wsp((unsigned char)s[r])) {
				have_word = 0;
			}
			s[w++] = s[r++];
			continue;
		}
		reason = encoded_word_split(s, *len, r, &ew);
		if (reason != ACME_SMIME_MAIL_OK) {
			return reason;
		}
		if (!encoded_word_charset_ok(s + ew.charset, ew.charset_len)) {
			return ACME_SMIME_MAIL_BAD_CHARSET;
		}
		if (have_word) {
			w = after_word;
		}
		if (ew.encoding == 'q') {
			n = q_decode(s + w, s + ew.text, ew.text_len);
		} else {
			n = b_decode(s + w, *len - w, s + ew.text, ew.text_len);
		}
		if (n < 0) {
			return ACME_SMIME_MAIL_BAD_ENCODED_WORD;
		}
		w += (size_t)n;
		r = ew.end;
		after_word = w;
		have_word = 1;
	}
	*len = w;
	s[w] = '\0';
	return ACME_SMIME_MAIL_OK;
}

/* ------------------------------------------------------------------------
 * 6.3 Subject: "ACME:" and token-part1
 * ---------------------------------------------------------------------- */

/* Does the Subject start with a reply or forward marker ("Re:", "Fwd:",
 * "Fw:", any case, white space tolerated before the colon)? Localised
 * markers ("AW:", "SV:") fail the "ACME:" test that follows anyway. */
static int
subject_is_reply(const char *s, size_t len)
{
	static const char *const prefixes[] = { "re", "fwd", "fw" };
	size_t k, n, i;

	for (k = 0; k < ARRAY_LEN(prefixes); k++) {
		n = strlen(prefixes[k]);
		if (len < n || !ascii_caseeq(s, n, prefixes[k])) {
			continue;
		}
		for (i = n; i < len && is_wsp((unsigned char)s[i]); i++) {
			continue;
		}
		if (i < len && s[i] == ':') {
			return 1;
		}
	}
	return 0;
}

/*
 * Check the decoded Subject and extract token-part1 into token.
 * "ACME:" is matched case-insensitively: RFC 8823 writes it in ABNF, and
 * RFC 5234 quoted strings are case-insensitive. All white space after it is
 * removed (RFC 8823 section 3.1); '=' padding is kept verbatim because
 * STRING concatenation uses the text exactly as received.
 */
static int
subject_extract_token(const char *s, size_t len,
	char token[ACME_SMIME_MAX_TOKEN + 1])
{
	unsigned char bytes[MAIL_TOKEN_BYTES];
	size_t i = 0, n = 0;
	int decoded;

	while (i < len && is_space((unsigned char)s[i])) {
		i++;
	}
	if (subject_is_reply(s + i, len - i)) {
		return ACME_SMIME_MAIL_REPLY_SUBJECT;
	}
	if (len - i < 5 || !ascii_caseeq(s + i, 5, "ACME:")) {
		return ACME_SMIME_MAIL_NOT_ACME_SUBJECT;
	}
	for (i += 5; i < len; i++) {
		if (is_space((unsigned char)s[i])) {
			continue;
		}
		if (n == ACME_SMIME_MAX_TOKEN) {
			return ACME_SMIME_MAIL_LONG_TOKEN;
		}
		token[n++] = s[i];
	}
	token[n] = '\0';
	if (n == 0) {
		return ACME_SMIME_MAIL_BAD_TOKEN;
	}
	decoded = b64_decode(bytes, sizeof bytes, token, n, B64_URL | B64_PAD_OK);
	if (decoded < 0) {
		return ACME_SMIME_MAIL_BAD_TOKEN;
	}
	if (decoded < MAIL_TOKEN_MIN_BYTES) {
		return ACME_SMIME_MAIL_SHORT_TOKEN;
	}
	return ACME_SMIME_MAIL_OK;
}

/* ------------------------------------------------------------------------
 * 6.4 Addresses (RFC 5322 section 3.4, the parts real mail uses)
 *
 * A lexer turns an unfolded value into words, specials and literals,
 * skipping CFWS; a small parser reads mailboxes and groups from the tokens
 * and writes each addr-spec with the CFWS removed. Obsolete routes
 * ("<@a,@b:x@y>") and nested groups are refused.
 * ---------------------------------------------------------------------- */

enum addr_token_type {
	ADDR_TOK_END,
	ADDR_TOK_ATOM,          /* run of atext */
	ADDR_TOK_QUOTED,        /* "..." with its quotes */
	ADDR_TOK_LITERAL,       /* [...] with its brackets */
	ADDR_TOK_SPECIAL,       /* one of < > @ , ; : . */
	ADDR_TOK_ERROR
};

typedef struct {
	int type;
	const char *text;
	size_t len;
} addr_token;

typedef struct {
	const char *s;
	size_t len;
	size_t pos;
} addr_lexer;

/* Skip one comment, nested at most MAIL_COMMENT_DEPTH deep; pos is on its
 * opening parenthesis. */
static int
addr_skip_comment(addr_lexer *lx)
{
	unsigned depth = 0;
	int c;

	while (lx->pos < lx->len) {
		c = (unsigned char)lx->s[lx->pos++];
		if (c == '\\') {
			if (lx->pos >= lx->len) {
				return -1;
			}
			lx->pos++;
		} else if (c == '(') {
			if (++depth > MAIL_COMMENT_DEPTH) {
				return -1;
			}
		} else if (c == ')') {
			if (--depth == 0) {
				return 0;
			}
		}
	}
	return -1;
}

static int
addr_skip_cfws(addr_lexer *lx)
{
	while (lx->pos < lx->len) {
		if (is_wsp((unsigned char)lx->s[lx->pos])) {
			lx->pos++;
		} else if (lx->s[lx->pos] == '(') {
			if (addr_skip_comment(lx) < 0) {
				return -1;
			}
		} else {
			break;
		}
	}
	return 0;
}

/* Length of the quoted string or domain literal at pos (delimiters
 * included), or 0 when it is unterminated or holds a control character. */
static size_t
addr_delimited_len(const addr_lexer *lx, int close)
{
	size_t i = lx->pos + 1;
	int c;

	while (i < lx->len) {
		c = (unsigned char)lx->s[i++];
		if (c == close) {
			return i - lx->pos;
		}
		if (is_forbidden_control(c) || (close == ']' && c == '[')) {
			return 0;
		}
		if (c == '\\') {
			if (close == ']' || i >= lx->len) {
				return 0;
			}
			i++;
		}
	}
	return 0;
}

static void
addr_lex(addr_lexer *lx, addr_token *t)
{
	int c;
	size_t n;

	t->type = ADDR_TOK_ERROR;
	t->len = 0;
	if (addr_skip_cfws(lx) < 0) {
		return;
	}
	t->text = lx->s + lx->pos;
	if (lx->pos >= lx->len) {
		t->type = ADDR_TOK_END;
		return;
	}
	c = (unsigned char)lx->s[lx->pos];
	if (c == '"' || c == '[') {
		n = addr_delimited_len(lx, c == '"' ? '"' : ']');
		if (n == 0) {
			return;
		}
		t->type = c == '"' ? ADDR_TOK_QUOTED : ADDR_TOK_LITERAL;
	} else if (strchr("<>@,;:.", c) != NULL) {
		n = 1;
		t->type = ADDR_TOK_SPECIAL;
	} else if (is_atext(c)) {
		for (n = 0; lx->pos + n < lx->len
		    && is_atext((unsigned char)lx->s[lx->pos + n]); n++) {
			continue;
		}
		t->type = ADDR_TOK_ATOM;
	} else {
		return;
	}
	t->len = n;
	lx->pos += n;
}

static int
addr_tok_is(const addr_token *t, char special)
{
	return t->type == ADDR_TOK_SPECIAL && t->text[0] == special;
}

static int
addr_tok_is_word(const addr_token *t)
{
	return t->type == ADDR_TOK_ATOM || t->type == ADDR_TOK_QUOTED;
}

/* Peek at the next token without consuming it. */
static void
addr_peek(addr_lexer *lx, addr_token *t)
{
	size_t pos = lx->pos;

	addr_lex(lx, t);
	lx->pos = pos;
}

/* Read "local-part @ domain" and write it without CFWS into out. Returns 0
 * or -1 (bad syntax, or longer than out allows). */
static int
addr_read_spec(addr_lexer *lx, char *out, size_t out_size)
{
	textbuf tb;
	addr_token t;

	tb_init(&tb, out, out_size);
	addr_lex(lx, &t);
	for (;;) {
		if (!addr_tok_is_word(&t)) {
			return -1;
		}
		tb_putn(&tb, t.text, t.len);
		addr_lex(lx, &t);
		if (addr_tok_is(&t, '@')) {
			break;
		}
		if (!addr_tok_is(&t, '.')) {
			return -1;
		}
		tb_putc(&tb, '.');
		addr_lex(lx, &t);
	}
	tb_putc(&tb, '@');
	addr_lex(lx, &t);
	if (t.type == ADDR_TOK_LITERAL) {
		tb_putn(&tb, t.text, t.len);
		return tb_finish(&tb) < 0 ? -1 : 0;
	}
	for (;;) {
		if (t.type != ADDR_TOK_ATOM) {
			return -1;
		}
		tb_putn(&tb, t.text, t.len);
		addr_peek(lx, &t);
		if (!addr_tok_is(&t, '.')) {
			break;
		}
		addr_lex(lx, &t);
		tb_putc(&tb, '.');
		addr_lex(lx, &t);
	}
	return tb_finish(&tb) < 0 ? -1 : 0;
}

/* An address-list (or mailbox-list when groups are not allowed) being read
 * one mailbox at a time. */
typedef struct {
	addr_lexer lx;
	int allow_groups;
	int in_group;
	unsigned items;         /* mailboxes and groups read so far */
} addr_list;

static void
addr_list_init(addr_list *al, const char *s, size_t len, int allow_groups)
{
	al->lx.s = s;
	al->lx.len = len;
	al->lx.pos = 0;
	al->allow_groups = allow_groups;
	al->in_group = 0;
	al->items = 0;
}

/* After a mailbox: a ',' is consumed; a ';' closing a group or the end is
 * left for the next call. */
static int
addr_list_mailbox_end(addr_list *al)
{
	addr_token t;

	addr_peek(&al->lx, &t);
	if (addr_tok_is(&t, ',')) {
		addr_lex(&al->lx, &t);
		return 0;
	}
	if (t.type == ADDR_TOK_END || (al->in_group && addr_tok_is(&t, ';'))) {
		return 0;
	}
	return -1;
}

/* A mailbox whose first token is the word or '<' just read. The words
 * before '@' are re-read as a local part; words before '<' were a display
 * name (quoted strings and encoded-words alike) and are dropped. */
static int
addr_list_mailbox(addr_list *al, size_t start, const addr_token *t,
	char *out, size_t out_size)
{
	addr_token close;

	if (addr_tok_is(t, '@')) {
		al->lx.pos = start;
		if (addr_read_spec(&al->lx, out, out_size) < 0) {
			return -1;
		}
	} else {
		if (addr_read_spec(&al->lx, out, out_size) < 0) {
			return -1;
		}
		addr_lex(&al->lx, &close);
		if (!addr_tok_is(&close, '>')) {
			return -1;
		}
	}
	al->items++;
	return addr_list_mailbox_end(al) < 0 ? -1 : 1;
}

/* ':' opens a group (its words were the group's name), ';' closes it. */
static int
addr_list_group_mark(addr_list *al, const addr_token *t, unsigned words)
{
	addr_token after;

	if (addr_tok_is(t, ':')) {
		if (!al->allow_groups || al->in_group || words == 0) {
			return -1;
		}
		al->in_group = 1;
		al->items++;
		return 0;
	}
	if (!al->in_group || words != 0) {
		return -1;
	}
	al->in_group = 0;
	addr_peek(&al->lx, &after);
	if (addr_tok_is(&after, ',')) {
		addr_lex(&al->lx, &after);
		return 0;
	}
	return after.type == ADDR_TOK_END ? 0 : -1;
}

/*
 * The next mailbox of the list, as an addr-spec in out. Returns 1, 0 at
 * the end of the list, or -1 when the list is malformed or an address does
 * not fit out. Empty list elements (",,") are skipped as RFC 5322 obsolete
 * syntax allows.
 */
static int
addr_list_next(addr_list *al, char *out, size_t out_size)
{
	addr_token t;
	size_t start;
	unsigned words, tokens;

	for (;;) {
		start = al->lx.pos;
		words = 0;
		tokens = 0;
		for (;;) {
			addr_lex(&al->lx, &t);
			if (!addr_tok_is_word(&t) && !addr_tok_is(&t, '.')) {
				break;
			}
			words += addr_tok_is_word(&t);
			tokens++;
		}
		if (addr_tok_is(&t, '@') || addr_tok_is(&t, '<')) {
			return addr_list_mailbox(al, start, &t, out, out_size);
		}
		if (addr_tok_is(&t, ':') || addr_tok_is(&t, ';')) {
			if (addr_list_group_mark(al, &t, tokens) < 0) {
				return -1;
			}
			continue;
		}
		if (tokens != 0 || (t.type == ADDR_TOK_END && al->in_group)) {
			return -1;
		}
		if (t.type == ADDR_TOK_END) {
			return 0;
		}
		if (!addr_tok_is(&t, ',')) {
			return -1;
		}
		(void)words;
	}
}

/* Position of the last '@' (a quoted local part may hold others), or len. */
static size_t
addr_last_at(const char *a, size_t len)
{
	size_t i = len;

	while (i > 0) {
		if (a[--i] == '@') {
			return i;
		}
	}
	return len;
}

/* RFC 5321 section 2.4: the local part is compared exactly, the domain
 * without regard to case. */
static int
addr_equal(const char *a, const char *b)
{
	size_t alen = strlen(a), blen = strlen(b);
	size_t at = addr_last_at(a, alen);

	if (at == alen || at != addr_last_at(b, blen) || alen != blen) {
		return 0;
	}
	if (memcmp(a, b, at) != 0) {
		return 0;
	}
	for (at++; at < alen; at++) {
		if (to_lower((unsigned char)a[at]) != to_lower((unsigned char)b[at])) {
			return 0;
		}
	}
	return 1;
}

/* ------------------------------------------------------------------------
 * 6.5 The challenge-mail checks (RFC 8823 section 3.1, protocol.md 4.2)
 * ---------------------------------------------------------------------- */

static int
check_subject(const mail_header *hdr, char *scratch,
	acme_smime_mail_verdict *verdict)
{
	size_t len;
	int reason;

	if (!field_unfold(hdr, FIELD_SUBJECT, scratch, &len)) {
		return ACME_SMIME_MAIL_NO_SUBJECT;
	}
	reason = subject_decode(scratch, &len);
	if (reason != ACME_SMIME_MAIL_OK) {
		return reason;
	}
	return subject_extract_token(scratch, len, verdict->token_part1);
}

/* From must be exactly one mailbox, the challenge's "from". It is kept in
 * reply_to[0]: the response goes there unless Reply-To says otherwise. */
static int
check_from(const mail_header *hdr, char *scratch,
	const acme_smime_pending *pending, acme_smime_mail_verdict *verdict)
{
	char extra[ACME_SMIME_MAX_ADDR + 1];
	addr_list al;
	size_t len;

	if (!field_unfold(hdr, FIELD_FROM, scratch, &len)) {
		return ACME_SMIME_MAIL_NO_FROM;
	}
	addr_list_init(&al, scratch, len, 0);
	if (addr_list_next(&al, verdict->reply_to[0],
	    sizeof verdict->reply_to[0]) != 1
	    || addr_list_next(&al, extra, sizeof extra) != 0) {
		return ACME_SMIME_MAIL_BAD_FROM;
	}
	if (!addr_equal(verdict->reply_to[0], pending->from)) {
		return ACME_SMIME_MAIL_FROM_MISMATCH;
	}
	return ACME_SMIME_MAIL_OK;
}

/* The whole To list must parse, even past our own address: a list we
 * cannot read is not one we vouch for. Cc is not consulted. */
static int
check_to(const mail_header *hdr, char *scratch,
	const acme_smime_pending *pending)
{
	char addr[ACME_SMIME_MAX_ADDR + 1];
	addr_list al;
	size_t len;
	int r, found = 0;

	if (!field_unfold(hdr, FIELD_TO, scratch, &len)) {
		return ACME_SMIME_MAIL_NO_TO;
	}
	addr_list_init(&al, scratch, len, 1);
	while ((r = addr_list_next(&al, addr, sizeof addr)) == 1) {
		found |= addr_equal(addr, pending->identifier);
	}
	if (r < 0 || al.items == 0) {
		return ACME_SMIME_MAIL_BAD_TO;
	}
	return found ? ACME_SMIME_MAIL_OK : ACME_SMIME_MAIL_TO_MISMATCH;
}

/*
 * RFC 3834 keyword before any ";" parameters. ACME_SMIME_MAIL_ALLOW_NO_-
 * AUTOSUBMIT forgives only the absence of the field: an explicit other
 * value ("no" means a human wrote the mail) is refused in every mode.
 */
static int
check_auto_submitted(const mail_header *hdr, char *scratch, unsigned policy)
{
	addr_lexer lx;
	addr_token t;
	size_t len;

	if (!field_unfold(hdr, FIELD_AUTO_SUBMITTED, scratch, &len)) {
		return (policy & ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT)
			? ACME_SMIME_MAIL_OK : ACME_SMIME_MAIL_NO_AUTO_SUBMITTED;
	}
	lx.s = scratch;
	lx.len = len;
	lx.pos = 0;
	addr_lex(&lx, &t);
	if (t.type != ADDR_TOK_ATOM
	    || !ascii_caseeq(t.text, t.len, "auto-generated")) {
		return ACME_SMIME_MAIL_NOT_AUTO_GENERATED;
	}
	addr_lex(&lx, &t);
	if (t.type != ADDR_TOK_END && !addr_tok_is(&t, ';')) {
		return ACME_SMIME_MAIL_NOT_AUTO_GENERATED;
	}
	return ACME_SMIME_MAIL_OK;
}

/* Every Reply-To address is kept: the response goes to all of them. */
static int
collect_reply_to(const mail_header *hdr, char *scratch,
	acme_smime_mail_verdict *verdict)
{
	char addr[ACME_SMIME_MAX_ADDR + 1];
	addr_list al;
	size_t len;
	unsigned count = 0;
	int r;

	if (!field_unfold(hdr, FIELD_REPLY_TO, scratch, &len)) {
		verdict->reply_count = 1;
		return ACME_SMIME_MAIL_OK;
	}
	addr_list_init(&al, scratch, len, 1);
	while ((r = addr_list_next(&al, addr, sizeof addr)) == 1) {
		if (count == ACME_SMIME_MAX_REPLY_TO) {
			return ACME_SMIME_MAIL_BAD_REPLY_TO;
		}
		memcpy(verdict->reply_to[count++], addr, sizeof addr);
	}
	if (r < 0 || count == 0) {
		return ACME_SMIME_MAIL_BAD_REPLY_TO;
	}
	verdict->reply_count = count;
	return ACME_SMIME_MAIL_OK;
}

/* "<...>" with printable characters and no white space inside. */
static int
msgid_is_valid(const char *s, size_t len)
{
	size_t i;

	if (len < 3 || len > ACME_SMIME_MAX_MSGID
	    || s[0] != '<' || s[len - 1] != '>') {
		return 0;
	}
	for (i = 1; i + 1 < len; i++) {
		if (!is_vchar((unsigned char)s[i]) || s[i] == '<' || s[i] == '>') {
			return 0;
		}
	}
	return 1;
}

/* Message-ID and References only thread the response; a value we cannot
 * reproduce safely is dropped, not a reason to refuse the mail. */
static void
collect_message_id(const mail_header *hdr, char *scratch,
	acme_smime_mail_verdict *verdict)
{
	size_t len, start = 0;

	verdict->message_id[0] = '\0';
	if (!field_unfold(hdr, FIELD_MESSAGE_ID, scratch, &len)) {
		return;
	}
	while (start < len && is_wsp((unsigned char)scratch[start])) {
		start++;
	}
	while (len > start && is_wsp((unsigned char)scratch[len - 1])) {
		len--;
	}
	if (msgid_is_valid(scratch + start, len - start)) {
		copy_field(verdict->message_id, sizeof verdict->message_id,
			scratch + start, len - start);
	}
}

static void
collect_references(const mail_header *hdr, char *scratch,
	acme_smime_mail_verdict *verdict)
{
	textbuf tb;
	size_t len, i;
	int pending_space = 0;

	verdict->references[0] = '\0';
	if (!field_unfold(hdr, FIELD_REFERENCES, scratch, &len)) {
		return;
	}
	tb_init(&tb, verdict->references, sizeof verdict->references);
	for (i = 0; i < len; i++) {
		if (is_wsp((unsigned char)scratch[i])) {
			pending_space = tb.len > 0;
			continue;
		}
		if (!is_vchar((unsigned char)scratch[i])) {
			verdict->references[0] = '\0';
			return;
		}
		if (pending_space) {
			tb_putc(&tb, ' ');
			pending_space = 0;
		}
		tb_putc(&tb, scratch[i]);
	}
	if (tb_finish(&tb) < 0) {
		verdict->references[0] = '\0';
	}
}

/*
 * The checks in the order that names the most telling reason: structure,
 * Subject, From, To, Auto-Submitted, Reply-To, then authenticity (not built
 * in: only ACME_SMIME_MAIL_ALLOW_UNSIGNED lets a mail through).
 */
static int
check_mail(const char *mail, size_t mail_len,
	const acme_smime_pending *pending, acme_smime_mail_verdict *verdict)
{
	char scratch[ACME_SMIME_MAX_HEADER + 1];
	mail_header hdr;
	int reason;

	reason = header_scan(&hdr, mail, mail_len);
	if (reason == ACME_SMIME_MAIL_OK) {
		reason = check_subject(&hdr, scratch, verdict);
	}
	if (reason == ACME_SMIME_MAIL_OK) {
		reason = check_from(&hdr, scratch, pending, verdict);
	}
	if (reason == ACME_SMIME_MAIL_OK) {
		reason = check_to(&hdr, scratch, pending);
	}
	if (reason == ACME_SMIME_MAIL_OK) {
		reason = check_auto_submitted(&hdr, scratch, pending->policy);
	}
	if (reason == ACME_SMIME_MAIL_OK) {
		reason = collect_reply_to(&hdr, scratch, verdict);
	}
	if (reason == ACME_SMIME_MAIL_OK) {
		collect_message_id(&hdr, scratch, verdict);
		collect_references(&hdr, scratch, verdict);
		if (!(pending->policy & ACME_SMIME_MAIL_ALLOW_UNSIGNED)) {
			reason = ACME_SMIME_MAIL_UNSIGNED;
		}
	}
	return reason;
}

int
acme_smime_check_challenge_mail(const char *mail, size_t mail_len,
	const acme_smime_pending *pending, acme_smime_mail_verdict *verdict)
{
	int reason;

	if (verdict == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	memset(verdict, 0, sizeof *verdict);
	if (mail == NULL || pending == NULL
	    || pending->identifier == NULL || pending->identifier[0] == '\0'
	    || pending->from == NULL || pending->from[0] == '\0') {
		verdict->reason = ACME_SMIME_MAIL_BAD_ARGUMENT;
		return ACME_SMIME_ERR_INVALID;
	}
	reason = check_mail(mail, mail_len, pending, verdict);
	if (reason != ACME_SMIME_MAIL_OK) {
		/* Half-filled fields must not be mistaken for a result. */
		memset(verdict, 0, sizeof *verdict);
		verdict->reason = reason;
		return ACME_SMIME_ERR_MAIL;
	}
	return ACME_SMIME_OK;
}

const char *
acme_smime_mail_reason_text(int reason)
{
	switch (reason) {
	case ACME_SMIME_MAIL_OK:
		return "accepted";
	case ACME_SMIME_MAIL_MALFORMED:
		return "malformed header (no fields, no colon, NUL or bare CR)";
	case ACME_SMIME_MAIL_HEADER_TOO_LONG:
		return "an examined header field is too long";
	case ACME_SMIME_MAIL_NO_SUBJECT:
		return "no Subject field";
	case ACME_SMIME_MAIL_DUPLICATE_FIELD:
		return "a From, To, Subject or similar field appears twice";
	case ACME_SMIME_MAIL_BAD_ENCODED_WORD:
		return "broken RFC 2047 encoded-word in the Subject";
	case ACME_SMIME_MAIL_BAD_CHARSET:
		return "Subject encoded-word charset is not UTF-8 or US-ASCII";
	case ACME_SMIME_MAIL_REPLY_SUBJECT:
		return "Subject is a reply or forward";
	case ACME_SMIME_MAIL_NOT_ACME_SUBJECT:
		return "Subject does not start with \"ACME:\"";
	case ACME_SMIME_MAIL_BAD_TOKEN:
		return "token-part1 is missing or not base64url";
	case ACME_SMIME_MAIL_SHORT_TOKEN:
		return "token-part1 carries fewer than 128 bits";
	case ACME_SMIME_MAIL_LONG_TOKEN:
		return "token-part1 is longer than ACME_SMIME_MAX_TOKEN";
	case ACME_SMIME_MAIL_NO_FROM:
		return "no From field";
	case ACME_SMIME_MAIL_BAD_FROM:
		return "From is not exactly one mailbox";
	case ACME_SMIME_MAIL_FROM_MISMATCH:
		return "From is not the challenge's sender";
	case ACME_SMIME_MAIL_NO_TO:
		return "no To field";
	case ACME_SMIME_MAIL_BAD_TO:
		return "To cannot be parsed";
	case ACME_SMIME_MAIL_TO_MISMATCH:
		return "To does not contain our address";
	case ACME_SMIME_MAIL_NO_AUTO_SUBMITTED:
		return "no Auto-Submitted field";
	case ACME_SMIME_MAIL_NOT_AUTO_GENERATED:
		return "Auto-Submitted is not auto-generated";
	case ACME_SMIME_MAIL_BAD_REPLY_TO:
		return "Reply-To cannot be parsed or lists too many addresses";
	case ACME_SMIME_MAIL_UNSIGNED:
		return "authenticity (DKIM or S/MIME) not established";
	case ACME_SMIME_MAIL_BAD_ARGUMENT:
		return "the pending challenge is incomplete";
	default:
		return "unknown reason";
	}
}

/* ------------------------------------------------------------------------
 * 6.6 The response mail (RFC 8823 section 3.2, protocol.md 5.3)
 *
 * Largest output, NUL included, with A = ACME_SMIME_MAX_ADDR, R =
 * ACME_SMIME_MAX_REPLY_TO, T = ACME_SMIME_MAX_TOKEN, M = ACME_SMIME_MAX_MSGID
 * and F = ACME_SMIME_MAX_REFERENCES:
 *
 *   352 + A + R * (A + 6) + T + 3 * M + 2 * F
 *
 * 352 are the fixed lines (Date with a four-digit year, the MIME lines, the
 * body block, NUL); From is A + 10; To at most R * (A + 6) + 2 with every
 * address folded onto its own line; Subject T + 21; Message-ID and
 * In-Reply-To M + 14 and M + 15; References at most 2 * F + M + 17, each
 * fold adding two bytes and F bytes holding at most (F + 1) / 2 items.
 * With the default limits this is 3524 bytes.
 * ---------------------------------------------------------------------- */

/* An addr-spec we may put in our own From: dot-atom characters only,
 * exactly one '@', neither part empty. */
static int
addr_is_plain(const char *s)
{
	size_t len = bounded_len(s, ACME_SMIME_MAX_ADDR), i, at = 0, ats = 0;

	if (len > ACME_SMIME_MAX_ADDR) {
		return 0;
	}
	for (i = 0; i < len; i++) {
		if (s[i] == '@') {
			at = i;
			ats++;
		} else if (s[i] != '.' && (!is_atext((unsigned char)s[i])
		    || (unsigned char)s[i] >= 0x80)) {
			return 0;
		}
	}
	return ats == 1 && at > 0 && at + 1 < len;
}

/* A reply address from a verdict: it went through the address parser, so
 * it may hold a quoted local part; it must still be 7-bit, free of line
 * breaks and unable to close the angle brackets it is written in. */
static int
addr_is_writable(const char *s)
{
	size_t len = bounded_len(s, ACME_SMIME_MAX_ADDR), i, at;

	if (len > ACME_SMIME_MAX_ADDR) {
		return 0;
	}
	for (i = 0; i < len; i++) {
		if ((!is_vchar((unsigned char)s[i]) && s[i] != ' ')
		    || s[i] == '<' || s[i] == '>') {
			return 0;
		}
	}
	at = addr_last_at(s, len);
	return at > 0 && at + 1 < len;
}

static int
token_is_valid(const char *s)
{
	unsigned char bytes[MAIL_TOKEN_BYTES];
	size_t len = bounded_len(s, ACME_SMIME_MAX_TOKEN);

	return len > 0 && len <= ACME_SMIME_MAX_TOKEN
		&& b64_decode(bytes, sizeof bytes, s, len, B64_URL | B64_PAD_OK) >= 0;
}

static int
digest_is_valid(const char *s)
{
	size_t i, len = bounded_len(s, ACME_SMIME_DIGEST_SIZE - 1);

	if (len != ACME_SMIME_DIGEST_SIZE - 1) {
		return 0;
	}
	for (i = 0; i < len; i++) {
		if (b64_value((unsigned char)s[i], B64_URL) < 0) {
			return 0;
		}
	}
	return 1;
}

static int
references_is_valid(const char *s)
{
	size_t i, len = bounded_len(s, ACME_SMIME_MAX_REFERENCES);

	if (len > ACME_SMIME_MAX_REFERENCES) {
		return 0;
	}
	for (i = 0; i < len; i++) {
		if (!is_vchar((unsigned char)s[i]) && s[i] != ' ') {
			return 0;
		}
	}
	return 1;
}

/* Every field is checked before a byte is written: each ends up in a
 * header line, where a stray CR or LF would forge further fields. */
static int
response_is_valid(const acme_smime_response *rsp)
{
	const acme_smime_mail_verdict *ch = rsp->challenge;
	size_t msgid_len;
	unsigned i;

	if (rsp->from == NULL || !addr_is_plain(rsp->from)
	    || rsp->digest == NULL || !digest_is_valid(rsp->digest)
	    || rsp->date > MAIL_DATE_MAX || ch == NULL) {
		return 0;
	}
	if (rsp->message_id != NULL) {
		msgid_len = bounded_len(rsp->message_id, ACME_SMIME_MAX_MSGID);
		if (!msgid_is_valid(rsp->message_id, msgid_len)) {
			return 0;
		}
	}
	if (!token_is_valid(ch->token_part1)
	    || ch->reply_count == 0 || ch->reply_count > ACME_SMIME_MAX_REPLY_TO) {
		return 0;
	}
	for (i = 0; i < ch->reply_count; i++) {
		if (!addr_is_writable(ch->reply_to[i])) {
			return 0;
		}
	}
	msgid_len = bounded_len(ch->message_id, ACME_SMIME_MAX_MSGID);
	if (msgid_len != 0 && !msgid_is_valid(ch->message_id, msgid_len)) {
		return 0;
	}
	return references_is_valid(ch->references);
}

/* A header line holding a list, folded before an item that would carry
 * the line past MAIL_LINE_SOFT_MAX characters. */
typedef struct {
	textbuf *tb;
	size_t line_start;
	unsigned items;
} folded_line;

static void
folded_line_begin(folded_line *fl, textbuf *tb, const char *name)
{
	fl->tb = tb;
	fl->line_start = tb->len;
	fl->items = 0;
	tb_puts(tb, name);
}

/* Append an item (between angle brackets when angled), after sep when it
 * is not the first. */
static void
folded_line_item(folded_line *fl, const char *sep, const char *item,
	size_t len, int angled)
{
	size_t width = len + (angled ? 2 : 0) + 1;

	if (fl->items++ > 0) {
		tb_puts(fl->tb, sep);
		if (fl->tb->len - fl->line_start + width > MAIL_LINE_SOFT_MAX) {
			tb_puts(fl->tb, "\r\n");
			fl->line_start = fl->tb->len;
		}
	}
	tb_putc(fl->tb, ' ');
	if (angled) {
		tb_putc(fl->tb, '<');
	}
	tb_putn(fl->tb, item, len);
	if (angled) {
		tb_putc(fl->tb, '>');
	}
}

static void
folded_line_end(folded_line *fl)
{
	tb_puts(fl->tb, "\r\n");
}

/* Weekday (0 = Sunday) and civil date of a day count since 1970-01-01,
 * proleptic Gregorian (H. Hinnant's days_from_civil inverse). */
static void
civil_from_days(unsigned long days, unsigned long *year, unsigned *month,
	unsigned *mday, unsigned *wday)
{
	unsigned long z = days + 719468, era, doe, yoe, doy, mp;

	*wday = (unsigned)((days + 4) % 7);
	era = z / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*mday = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
	*month = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
	*year = yoe + era * 400 + (*month <= 2 ? 1 : 0);
}

/* "Date: Sat, 5 Dec 2020 11:01:45 +0000" (RFC 5322 section 3.3), UTC. */
static void
put_date_line(textbuf *tb, uint64_t t)
{
	static const char wdays[7][4] = {
		"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
	};
	static const char months[12][4] = {
		"Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
	};
	unsigned long secs = (unsigned long)(t % 86400), year;
	unsigned month, mday, wday;

	civil_from_days((unsigned long)(t / 86400), &year, &month, &mday, &wday);
	tb_puts(tb, "Date: ");
	tb_putn(tb, wdays[wday], 3);
	tb_puts(tb, ", ");
	tb_putu(tb, mday, 1);
	tb_putc(tb, ' ');
	tb_putn(tb, months[month - 1], 3);
	tb_putc(tb, ' ');
	tb_putu(tb, year, 4);
	tb_putc(tb, ' ');
	tb_putu(tb, secs / 3600, 2);
	tb_putc(tb, ':');
	tb_putu(tb, secs / 60 % 60, 2);
	tb_putc(tb, ':');
	tb_putu(tb, secs % 60, 2);
	tb_puts(tb, " +0000\r\n");
}

static void
put_line(textbuf *tb, const char *name, const char *value)
{
	tb_puts(tb, name);
	tb_puts(tb, value);
	tb_puts(tb, "\r\n");
}

/* References: the parent's References, then its Message-ID (RFC 5322
 * section 3.6.4), folded between message identifiers. */
static void
put_references_line(textbuf *tb, const acme_smime_mail_verdict *ch)
{
	folded_line fl;
	const char *r = ch->references;
	size_t n;

	folded_line_begin(&fl, tb, "References:");
	while (*r != '\0') {
		for (n = 0; r[n] != '\0' && r[n] != ' '; n++) {
			continue;
		}
		if (n > 0) {
			folded_line_item(&fl, "", r, n, 0);
		}
		r += n;
		if (*r == ' ') {
			r++;
		}
	}
	folded_line_item(&fl, "", ch->message_id, strlen(ch->message_id), 0);
	folded_line_end(&fl);
}

/* From in angle brackets: Pebble's RFC 8823 branch refuses a bare
 * addr-spec (protocol.md 15.3). */
static void
put_response_header(textbuf *tb, const acme_smime_response *rsp)
{
	const acme_smime_mail_verdict *ch = rsp->challenge;
	folded_line fl;
	unsigned i;

	tb_puts(tb, "From: <");
	tb_puts(tb, rsp->from);
	tb_puts(tb, ">\r\n");
	folded_line_begin(&fl, tb, "To:");
	for (i = 0; i < ch->reply_count; i++) {
		folded_line_item(&fl, ",", ch->reply_to[i],
			strlen(ch->reply_to[i]), 1);
	}
	folded_line_end(&fl);
	put_line(tb, "Subject: Re: ACME: ", ch->token_part1);
	if (rsp->date != 0) {
		put_date_line(tb, rsp->date);
	}
	if (rsp->message_id != NULL) {
		put_line(tb, "Message-ID: ", rsp->message_id);
	}
	if (ch->message_id[0] != '\0') {
		put_line(tb, "In-Reply-To: ", ch->message_id);
		put_references_line(tb, ch);
	}
	/* RFC 3834 section 5: a reply is auto-replied, never auto-generated. */
	tb_puts(tb, "Auto-Submitted: auto-replied\r\n"
		"MIME-Version: 1.0\r\n"
		"Content-Type: text/plain; charset=US-ASCII\r\n"
		"Content-Transfer-Encoding: 7bit\r\n"
		"\r\n");
}

int
acme_smime_write_response_mail(char *out, size_t out_size,
	const acme_smime_response *response)
{
	textbuf tb;

	if (out == NULL || response == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	if (!response_is_valid(response)) {
		if (out_size > 0) {
			out[0] = '\0';
		}
		return ACME_SMIME_ERR_INVALID;
	}
	tb_init(&tb, out, out_size);
	put_response_header(&tb, response);
	/* One line for the digest: acme2certifier refuses a split one. */
	tb_puts(&tb, "-----BEGIN ACME RESPONSE-----\r\n");
	tb_puts(&tb, response->digest);
	tb_puts(&tb, "\r\n-----END ACME RESPONSE-----\r\n");
	return tb_finish(&tb);
}
