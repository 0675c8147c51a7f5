/*
 * acme_smime.c -- ACME for S/MIME (RFC 8823 over RFC 8555) for embedded devices.
 *
 * The public API and its documentation are in acme_smime.h. This file is
 * laid out in sections, each opened by a banner, in dependency order: a
 * section uses only the sections above it.
 *
 *   1. limits and small utilities  (bounded text, base64/base64url, wipe)
 *   2. JSON on jsmn                (validate, find, unescape, build)
 *   3. keys and JOSE               (key generation, JWK, thumbprint, ES256 JWS)
 *   4. PKCS#10 CSR writer          (DER, rfc822Name/dNSName SANs, key usage)
 *   5. ACME objects and RFC 8823   (request payloads, authorizations,
 *                                   token assembly and digest)
 *   6. mail                        (RFC 5322 headers, RFC 2047, addresses,
 *                                   challenge-mail checks, response writer)
 *  6b. mail authenticity           (S/MIME CMS and X.509, DKIM,
 *                                   Authentication-Results)
 *   7. store                       (power-safe A/B records on NOR flash)
 *   8. transport                   (BearSSL client over the socket hooks,
 *                                   trust anchors from PEM)
 *   9. HTTP/1.1 client             (request writer, streaming response parser)
 *  10. POP3 and SMTP clients       (commands, multi-line bodies, listings
 *                                   line by line, SMTP replies)
 *  11. engine                      (the RFC 8555 and RFC 8823 flow as a
 *                                   state machine)
 *
 * Nothing here allocates memory, keeps global state or blocks.
 */
#include "acme_smime.h"

#include <string.h>

#include <bearssl.h>

#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

/* ========================================================================
 * 1. Limits and small utilities
 * ====================================================================== */

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

const char *
acme_smime_strerror(int code)
{
	switch (code) {
	case ACME_SMIME_OK:              return "success";
	case ACME_SMIME_ERR_INVALID:     return "invalid argument";
	case ACME_SMIME_ERR_BUFFER:      return "output buffer too small";
	case ACME_SMIME_ERR_LIMIT:       return "input exceeds a compile-time limit";
	case ACME_SMIME_ERR_ENCODING:    return "bad base64 or base64url encoding";
	case ACME_SMIME_ERR_JSON:        return "malformed JSON";
	case ACME_SMIME_ERR_CRYPTO:      return "cryptographic operation failed";
	case ACME_SMIME_ERR_ENTROPY:     return "entropy source failed";
	case ACME_SMIME_ERR_UNSUPPORTED: return "not supported by this build";
	case ACME_SMIME_ERR_MAIL:        return "challenge mail refused";
	case ACME_SMIME_ERR_NET:         return "network failure";
	case ACME_SMIME_ERR_TLS:         return "TLS failure";
	case ACME_SMIME_ERR_HTTP:        return "malformed or unexpected HTTP";
	case ACME_SMIME_ERR_ACME:        return "the ACME server reported a problem";
	case ACME_SMIME_ERR_TIME:        return "the clock is unknown";
	case ACME_SMIME_ERR_TIMEOUT:     return "a wait or retry bound ran out";
	case ACME_SMIME_ERR_STORE:       return "flash store failure";
	case ACME_SMIME_ERR_STATE:       return "order or authorization went invalid";
	case ACME_SMIME_ERR_HOOK:        return "a caller hook failed";
	default:                         return "unknown error";
	}
}

/* Overwrite secrets. The volatile pointer keeps the stores from being
 * optimised away when the buffer is not read again. */
static void
wipe(void *p, size_t len)
{
	volatile unsigned char *v = (volatile unsigned char *)p;

	while (len-- > 0) {
		*v++ = 0;
	}
}

static int
is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int
to_lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* Case-insensitive ASCII comparison of a counted string and a literal. */
static int
ascii_caseeq(const char *s, size_t len, const char *lit)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (lit[i] == '\0' || to_lower((unsigned char)s[i]) !=
		    to_lower((unsigned char)lit[i])) {
			return 0;
		}
	}
	return lit[len] == '\0';
}

/* Copy a counted string into a fixed field, NUL-terminated. Returns 0, or
 * ACME_SMIME_ERR_LIMIT when it does not fit (dst is then ""). */
static int
copy_field(char *dst, size_t dst_size, const char *src, size_t len)
{
	if (len >= dst_size) {
		if (dst_size > 0) {
			dst[0] = '\0';
		}
		return ACME_SMIME_ERR_LIMIT;
	}
	memcpy(dst, src, len);
	dst[len] = '\0';
	return 0;
}

/*
 * Bounded text output. Appends never overrun; an append that does not fit
 * sets the sticky overflow flag and the final length check reports it.
 */
typedef struct {
	char *buf;
	size_t size;
	size_t len;
	int overflow;
} textbuf;

static void
tb_init(textbuf *tb, char *buf, size_t size)
{
	tb->buf = buf;
	tb->size = size;
	tb->len = 0;
	tb->overflow = 0;
}

static void
tb_putn(textbuf *tb, const char *s, size_t n)
{
	if (tb->overflow || n > tb->size - tb->len) {
		tb->overflow = 1;
		return;
	}
	/* memmove: tb_put_b64url() appends bytes that may already sit at
	 * the write position. */
	memmove(tb->buf + tb->len, s, n);
	tb->len += n;
}

static void
tb_puts(textbuf *tb, const char *s)
{
	tb_putn(tb, s, strlen(s));
}

static void
tb_putc(textbuf *tb, char c)
{
	tb_putn(tb, &c, 1);
}

static void
tb_putu(textbuf *tb, unsigned long v, unsigned min_digits)
{
	char tmp[24];
	size_t n = 0;

	do {
		tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0 || n < min_digits);
	tb_putn(tb, tmp + sizeof tmp - n, n);
}

/* NUL-terminate; returns the length, or ACME_SMIME_ERR_BUFFER. */
static int
tb_finish(textbuf *tb)
{
	if (tb->overflow || tb->len >= tb->size) {
		if (tb->size > 0) {
			tb->buf[0] = '\0';
		}
		return ACME_SMIME_ERR_BUFFER;
	}
	tb->buf[tb->len] = '\0';
	return (int)tb->len;
}

/*
 * Base64 (RFC 4648 section 4) and base64url (section 5).
 *
 * The encoder never pads: ACME forbids '=' (RFC 8555 section 6.1) and the
 * only other user, mail, wraps its own lines. The decoder is strict about
 * the alphabet; padding is refused unless B64_PAD_OK allows the exact
 * amount, as RFC 8823 token parts and RFC 2047 B-words need.
 */
#define B64_URL    0x01u   /* '-' '_' instead of '+' '/' */
#define B64_PAD_OK 0x02u   /* accept correct trailing '=' padding */

static const char b64_std_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#define B64_ENCODED_LEN(n) (((n) / 3) * 4 + ((n) % 3 == 0 ? 0 : (n) % 3 + 1))

/* Value of one character in the chosen alphabet, or -1. */
static int
b64_value(int c, unsigned flags)
{
	if (c >= 'A' && c <= 'Z') {
		return c - 'A';
	}
	if (c >= 'a' && c <= 'z') {
		return c - 'a' + 26;
	}
	if (c >= '0' && c <= '9') {
		return c - '0' + 52;
	}
	if (flags & B64_URL) {
		return c == '-' ? 62 : c == '_' ? 63 : -1;
	}
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Encode len bytes; dst receives B64_ENCODED_LEN(len) characters (no NUL).
 * src and dst may overlap only as b64_encode_tail() arranges. */
static void
b64_encode_raw(char *dst, const unsigned char *src, size_t len, unsigned flags)
{
	const char *abc = (flags & B64_URL) ? b64_url_alphabet : b64_std_alphabet;
	unsigned long w;

	while (len >= 3) {
		w = ((unsigned long)src[0] << 16) | ((unsigned long)src[1] << 8) | src[2];
		src += 3;
		len -= 3;
		dst[0] = abc[(w >> 18) & 63];
		dst[1] = abc[(w >> 12) & 63];
		dst[2] = abc[(w >> 6) & 63];
		dst[3] = abc[w & 63];
		dst += 4;
	}
	if (len > 0) {
		w = (unsigned long)src[0] << 16;
		if (len == 2) {
			w |= (unsigned long)src[1] << 8;
		}
		dst[0] = abc[(w >> 18) & 63];
		dst[1] = abc[(w >> 12) & 63];
		if (len == 2) {
			dst[2] = abc[(w >> 6) & 63];
		}
	}
}

/* base64url into a NUL-terminated string. Returns the length or
 * ACME_SMIME_ERR_BUFFER. */
static int
b64url_encode(char *dst, size_t dst_size, const unsigned char *src, size_t len)
{
	size_t n = B64_ENCODED_LEN(len);

	if (n >= dst_size) {
		return ACME_SMIME_ERR_BUFFER;
	}
	b64_encode_raw(dst, src, len, B64_URL);
	dst[n] = '\0';
	return (int)n;
}

/* Add one 6-bit group to a decoder's accumulator; each complete byte
 * goes to dst[*out]. Returns 0 or ACME_SMIME_ERR_BUFFER. */
static int
b64_put6(unsigned char *dst, size_t dst_size, size_t *out, unsigned long *acc,
	unsigned *bits, int v)
{
	*acc = (*acc << 6) | (unsigned long)v;
	*bits += 6;
	if (*bits >= 8) {
		*bits -= 8;
		if (*out >= dst_size) {
			return ACME_SMIME_ERR_BUFFER;
		}
		dst[(*out)++] = (unsigned char)(*acc >> *bits);
		*acc &= (1ul << *bits) - 1;
	}
	return 0;
}

/* Decode src_len characters. Returns the decoded length, or
 * ACME_SMIME_ERR_ENCODING (bad character, impossible length, misplaced or
 * unwanted padding), or ACME_SMIME_ERR_BUFFER. Non-zero unused bits in the
 * last character are accepted: token parts are random strings, not
 * necessarily canonical encodings. */
static int
b64_decode(unsigned char *dst, size_t dst_size, const char *src, size_t src_len,
	unsigned flags)
{
	size_t pad = 0, i, out = 0;
	unsigned long acc = 0;
	unsigned bits = 0;

	while (pad < 2 && src_len > 0 && src[src_len - 1] == '=') {
		src_len--;
		pad++;
	}
	if (pad > 0) {
		if (!(flags & B64_PAD_OK) || (src_len + pad) % 4 != 0) {
			return ACME_SMIME_ERR_ENCODING;
		}
	}
	if (src_len % 4 == 1) {
		return ACME_SMIME_ERR_ENCODING;
	}
	if (pad > 0 && (src_len % 4) + pad != 4) {
		return ACME_SMIME_ERR_ENCODING;
	}
	for (i = 0; i < src_len; i++) {
		int v = b64_value((unsigned char)src[i], flags);

		if (v < 0) {
			return ACME_SMIME_ERR_ENCODING;
		}
		if (b64_put6(dst, dst_size, &out, &acc, &bits, v) < 0) {
			return ACME_SMIME_ERR_BUFFER;
		}
	}
	return (int)out;
}

/* ========================================================================
 * 2. JSON on jsmn
 *
 * jsmn only tokenizes: even in strict mode it lets through missing commas
 * and colons, bad literals, bad escapes and raw control characters. So
 * json_parse() walks the token tree once and checks every byte between
 * and inside the tokens against the JSON grammar (RFC 8259). After that
 * the readers below can trust token boundaries and string escapes.
 * Tokens index into the caller's text; nothing is copied until a caller
 * asks for one unescaped string.
 * ====================================================================== */

typedef struct {
	const char *js;
	size_t len;
	jsmntok_t *tok;
	int count;           /* tokens in use */
} json_doc;

static size_t
json_skip_ws(const json_doc *d, size_t pos)
{
	while (pos < d->len && (d->js[pos] == ' ' || d->js[pos] == '\t' ||
	    d->js[pos] == '\r' || d->js[pos] == '\n')) {
		pos++;
	}
	return pos;
}

static int
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* Parse n decimal digits at s; -1 if any is not a digit. */
static long
parse_digits(const char *s, size_t n)
{
	long v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (!is_digit((unsigned char)s[i])) {
			return -1;
		}
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

static int
hex_value(int c)
{
	if (is_digit(c)) {
		return c - '0';
	}
	c = to_lower(c);
	return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* true, false, null, or a number: -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)? */
static int
json_primitive_ok(const char *s, size_t n)
{
	size_t i = 0;

	if ((n == 4 && memcmp(s, "true", 4) == 0) ||
	    (n == 5 && memcmp(s, "false", 5) == 0) ||
	    (n == 4 && memcmp(s, "null", 4) == 0)) {
		return 1;
	}
	if (i < n && s[i] == '-') {
		i++;
	}
	if (i >= n || !is_digit((unsigned char)s[i])) {
		return 0;
	}
	if (s[i] == '0') {
		i++;
	} else {
		while (i < n && is_digit((unsigned char)s[i])) {
			i++;
		}
	}
	if (i < n && s[i] == '.') {
		if (++i >= n || !is_digit((unsigned char)s[i])) {
			return 0;
		}
		while (i < n && is_digit((unsigned char)s[i])) {
			i++;
		}
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < n && (s[i] == '+' || s[i] == '-')) {
			i++;
		}
		if (i >= n || !is_digit((unsigned char)s[i])) {
			return 0;
		}
		while (i < n && is_digit((unsigned char)s[i])) {
			i++;
		}
	}
	return i == n;
}

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), or 0.
 * Overlong forms, surrogates and code points above U+10FFFF are refused. */
static size_t
utf8_sequence_len(const unsigned char *s, size_t n)
{
	unsigned long cp;
	size_t len, i;

	if (s[0] < 0x80) {
		return 1;
	} else if (s[0] >= 0xC2 && s[0] <= 0xDF) {
		len = 2;
		cp = s[0] & 0x1Fu;
	} else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
		len = 3;
		cp = s[0] & 0x0Fu;
	} else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
		len = 4;
		cp = s[0] & 0x07u;
	} else {
		return 0;
	}
	if (len > n) {
		return 0;
	}
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xC0) != 0x80) {
			return 0;
		}
		cp = (cp << 6) | (s[i] & 0x3Fu);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) {
		return 0;
	}
	return len;
}

/* String body between the quotes: valid escapes, no raw control
 * characters, well-formed UTF-8. */
static int
json_string_ok(const char *s, size_t n)
{
	size_t i = 0, k;

	while (i < n) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20) {
			return 0;
		}
		if (c == '\\') {
			if (i + 1 >= n) {
				return 0;
			}
			c = (unsigned char)s[i + 1];
			if (c == 'u') {
				if (i + 6 > n) {
					return 0;
				}
				for (k = 2; k < 6; k++) {
					if (hex_value((unsigned char)s[i + k]) < 0) {
						return 0;
					}
				}
				i += 6;
			} else if (strchr("\"\\/bfnrt", c) != NULL && c != '\0') {
				i += 2;
			} else {
				return 0;
			}
		} else if (c == '"') {
			return 0;
		} else {
			k = utf8_sequence_len((const unsigned char *)s + i, n - i);
			if (k == 0) {
				return 0;
			}
			i += k;
		}
	}
	return 1;
}

/* Check the value whose first token is i, starting the scan at *pos.
 * Returns the index of the token after its subtree, or -1. The recursion
 * is bounded by ACME_SMIME_JSON_MAX_DEPTH. */
static int
json_check_value(const json_doc *d, int i, size_t *pos, unsigned depth)
{
	const jsmntok_t *t;
	size_t p, start, end;
	int k, next;

	if (i >= d->count) {
		return -1;
	}
	t = &d->tok[i];
	p = json_skip_ws(d, *pos);
	start = (size_t)t->start;
	end = (size_t)t->end;
	switch (t->type) {
	case JSMN_STRING:
		if (start == 0 || p != start - 1 || d->js[p] != '"' ||
		    end >= d->len || d->js[end] != '"' ||
		    !json_string_ok(d->js + start, end - start)) {
			return -1;
		}
		*pos = end + 1;
		return i + 1;
	case JSMN_PRIMITIVE:
		if (p != start || !json_primitive_ok(d->js + start, end - start)) {
			return -1;
		}
		*pos = end;
		return i + 1;
	case JSMN_OBJECT:
	case JSMN_ARRAY:
		break;
	default:
		return -1;
	}
	if (depth >= ACME_SMIME_JSON_MAX_DEPTH || p != start) {
		return -1;
	}
	p = start + 1;
	next = i + 1;
	for (k = 0; k < t->size; k++) {
		if (k > 0) {
			p = json_skip_ws(d, p);
			if (p >= d->len || d->js[p] != ',') {
				return -1;
			}
			p++;
		}
		if (t->type == JSMN_OBJECT) {
			if (next >= d->count || d->tok[next].type != JSMN_STRING) {
				return -1;
			}
			next = json_check_value(d, next, &p, depth + 1);
			if (next < 0) {
				return -1;
			}
			p = json_skip_ws(d, p);
			if (p >= d->len || d->js[p] != ':') {
				return -1;
			}
			p++;
		}
		next = json_check_value(d, next, &p, depth + 1);
		if (next < 0) {
			return -1;
		}
	}
	p = json_skip_ws(d, p);
	if (p >= d->len || d->js[p] != (t->type == JSMN_OBJECT ? '}' : ']') ||
	    p + 1 != end) {
		return -1;
	}
	*pos = end;
	return next;
}

/* Tokenize and validate one JSON object that fills js[0..len) (leading and
 * trailing whitespace allowed). Returns ACME_SMIME_OK, ACME_SMIME_ERR_JSON
 * or ACME_SMIME_ERR_LIMIT (more tokens than ntok). */
static int
json_parse(json_doc *d, const char *js, size_t len, jsmntok_t *tok,
	unsigned ntok)
{
	jsmn_parser parser;
	size_t pos = 0;
	int r;

	d->js = js;
	d->len = len;
	d->tok = tok;
	d->count = 0;
	if (len > 0x7FFFFFFF || ntok > 0x7FFFFFFF) {
		return ACME_SMIME_ERR_LIMIT;
	}
	jsmn_init(&parser);
	r = jsmn_parse(&parser, js, len, tok, ntok);
	if (r == JSMN_ERROR_NOMEM) {
		return ACME_SMIME_ERR_LIMIT;
	}
	if (r < 1 || tok[0].type != JSMN_OBJECT) {
		return ACME_SMIME_ERR_JSON;
	}
	d->count = r;
	if (json_check_value(d, 0, &pos, 0) != r ||
	    json_skip_ws(d, pos) != len) {
		d->count = 0;
		return ACME_SMIME_ERR_JSON;
	}
	return ACME_SMIME_OK;
}

/* Index of the token after the subtree rooted at i. Tokens are in text
 * order, so the subtree is every following token that starts before i
 * ends. */
static int
json_skip(const json_doc *d, int i)
{
	int end = d->tok[i].end;

	i++;
	while (i < d->count && d->tok[i].start < end) {
		i++;
	}
	return i;
}

/* Decode the escapes of string token i into out (NUL-terminated UTF-8).
 * Returns the length, ACME_SMIME_ERR_BUFFER when it does not fit, or
 * ACME_SMIME_ERR_JSON for a non-string, an escaped NUL or a lone
 * surrogate. */
static int
json_get_string(const json_doc *d, int i, char *out, size_t out_size)
{
	const char *s;
	size_t n, k = 0, o = 0;
	unsigned long cp;

	if (i < 0 || i >= d->count || d->tok[i].type != JSMN_STRING ||
	    out_size == 0) {
		return ACME_SMIME_ERR_JSON;
	}
	s = d->js + d->tok[i].start;
	n = (size_t)(d->tok[i].end - d->tok[i].start);
	while (k < n) {
		char c = s[k];
		unsigned char enc[4];
		size_t elen = 1;

		if (c != '\\') {
			enc[0] = (unsigned char)c;
			k++;
		} else if (s[k + 1] != 'u') {
			static const char from[] = "\"\\/bfnrt";
			static const char to[] = "\"\\/\b\f\n\r\t";

			enc[0] = (unsigned char)to[strchr(from, s[k + 1]) - from];
			k += 2;
		} else {
			cp = 0;
			for (elen = 2; elen < 6; elen++) {
				cp = (cp << 4) | (unsigned long)hex_value((unsigned char)s[k + elen]);
			}
			k += 6;
			if (cp >= 0xDC00 && cp <= 0xDFFF) {
				return ACME_SMIME_ERR_JSON;
			}
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				unsigned long lo = 0;
				size_t h;

				if (k + 6 > n || s[k] != '\\' || s[k + 1] != 'u') {
					return ACME_SMIME_ERR_JSON;
				}
				for (h = 2; h < 6; h++) {
					lo = (lo << 4) | (unsigned long)hex_value((unsigned char)s[k + h]);
				}
				if (lo < 0xDC00 || lo > 0xDFFF) {
					return ACME_SMIME_ERR_JSON;
				}
				k += 6;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			}
			if (cp == 0) {
				return ACME_SMIME_ERR_JSON;
			}
			if (cp < 0x80) {
				enc[0] = (unsigned char)cp;
				elen = 1;
			} else if (cp < 0x800) {
				enc[0] = (unsigned char)(0xC0 | (cp >> 6));
				enc[1] = (unsigned char)(0x80 | (cp & 0x3F));
				elen = 2;
			} else if (cp < 0x10000) {
				enc[0] = (unsigned char)(0xE0 | (cp >> 12));
				enc[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
				enc[2] = (unsigned char)(0x80 | (cp & 0x3F));
				elen = 3;
			} else {
				enc[0] = (unsigned char)(0xF0 | (cp >> 18));
				enc[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
				enc[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
				enc[3] = (unsigned char)(0x80 | (cp & 0x3F));
				elen = 4;
			}
		}
		if (elen >= out_size - o) {
			out[0] = '\0';
			return ACME_SMIME_ERR_BUFFER;
		}
		memcpy(out + o, enc, elen);
		o += elen;
	}
	out[o] = '\0';
	return (int)o;
}

/* Index of the value of member key in object token obj, or -1. */
static int
json_find(const json_doc *d, int obj, const char *key)
{
	char name[32];
	int i, k;

	if (obj < 0 || obj >= d->count || d->tok[obj].type != JSMN_OBJECT) {
		return -1;
	}
	i = obj + 1;
	for (k = 0; k < d->tok[obj].size; k++) {
		if (json_get_string(d, i, name, sizeof name) >= 0 &&
		    strcmp(name, key) == 0) {
			return i + 1;
		}
		i = json_skip(d, i + 1);
	}
	return -1;
}

/* Index of element n of array token arr, or -1. */
static int
json_array_item(const json_doc *d, int arr, int n)
{
	int i, k;

	if (arr < 0 || arr >= d->count || d->tok[arr].type != JSMN_ARRAY ||
	    n < 0 || n >= d->tok[arr].size) {
		return -1;
	}
	i = arr + 1;
	for (k = 0; k < n; k++) {
		i = json_skip(d, i);
	}
	return i;
}

/* Unescaped string member key of object obj into out; see
 * json_get_string(). A missing member is ACME_SMIME_ERR_JSON. */
static int
json_get_member(const json_doc *d, int obj, const char *key, char *out,
	size_t out_size)
{
	return json_get_string(d, json_find(d, obj, key), out, out_size);
}

/* Does string member key of object obj equal lit? */
static int
json_member_is(const json_doc *d, int obj, const char *key, const char *lit)
{
	char v[24];

	return json_get_member(d, obj, key, v, sizeof v) >= 0 && strcmp(v, lit) == 0;
}

/* Append s as a quoted JSON string. Escapes what RFC 8259 requires. */
static void
json_put_string(textbuf *tb, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	tb_putc(tb, '"');
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			tb_putc(tb, '\\');
			tb_putc(tb, (char)c);
		} else if (c < 0x20) {
			tb_puts(tb, "\\u00");
			tb_putc(tb, hex[c >> 4]);
			tb_putc(tb, hex[c & 15]);
		} else {
			tb_putc(tb, (char)c);
		}
	}
	tb_putc(tb, '"');
}

/* Append "key": */
static void
json_put_key(textbuf *tb, const char *key)
{
	json_put_string(tb, key);
	tb_putc(tb, ':');
}

/* ========================================================================
 * 3. Keys and JOSE
 *
 * ECDSA keys on BearSSL. Account requests are JWS (RFC 7515) in flattened
 * JSON serialization with ES256 (P-256) or ES384 (P-384): the signature is
 * raw r || s, not the DER form X.509 uses. Each signature is verified
 * right after it is made: deterministic ECDSA (RFC 6979) leaks the key if
 * a fault corrupts one signature, and the check catches that fault.
 * ====================================================================== */

/* Order n of each curve, big-endian: a private scalar must be in [1, n-1]. */
static const unsigned char p256_order[32] = {
	0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00,
	0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
	0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84,
	0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51
};
static const unsigned char p384_order[48] = {
	0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
	0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
	0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
	0xC7, 0x63, 0x4D, 0x81, 0xF4, 0x37, 0x2D, 0xDF,
	0x58, 0x1A, 0x0D, 0xB2, 0x48, 0xB0, 0xA7, 0x7A,
	0xEC, 0xEC, 0x19, 0x6A, 0xCC, 0xC5, 0x29, 0x73
};

/* Per key type: BearSSL curve, scalar size, hash, JOSE names. */
typedef struct {
	int curve;
	size_t scalar_len;
	const unsigned char *order;
	const br_hash_class *hash;
	size_t hash_len;
	const char *jws_alg;
	const char *jwk_crv;
} key_params;

static const key_params *
key_params_of(int type)
{
	static const key_params p256 = {
		BR_EC_secp256r1, 32, p256_order, &br_sha256_vtable, 32,
		"ES256", "P-256"
	};
	static const key_params p384 = {
		BR_EC_secp384r1, 48, p384_order, &br_sha384_vtable, 48,
		"ES384", "P-384"
	};

	switch (type) {
	case ACME_SMIME_KEY_P256: return &p256;
	case ACME_SMIME_KEY_P384: return &p384;
	default:                  return NULL;
	}
}

/*
 * BearSSL's key structures point at mutable bytes while ours are const, so
 * a key is used through a short-lived copy; the private copy is wiped
 * when the operation ends.
 */
typedef struct {
	br_ec_private_key sk;
	unsigned char x[48];
} priv_view;

typedef struct {
	br_ec_public_key pk;
	unsigned char q[97];
} pub_view;

static void
priv_view_open(priv_view *v, const acme_smime_key *key)
{
	memcpy(v->x, key->priv, key->priv_len);
	v->sk.curve = key_params_of(key->type)->curve;
	v->sk.x = v->x;
	v->sk.xlen = key->priv_len;
}

static void
pub_view_open(pub_view *v, const acme_smime_key *key)
{
	memcpy(v->q, key->pub, key->pub_len);
	v->pk.curve = key_params_of(key->type)->curve;
	v->pk.q = v->q;
	v->pk.qlen = key->pub_len;
}

/* Is the key structure complete and consistent in its sizes? */
static int
key_usable(const acme_smime_key *key)
{
	const key_params *kp;

	if (key == NULL || (kp = key_params_of(key->type)) == NULL) {
		return 0;
	}
	return key->priv_len == kp->scalar_len &&
	    key->pub_len == 2 * kp->scalar_len + 1 && key->pub[0] == 0x04;
}

/* 1 <= d < n, big-endian, constant time in the value of d. */
static int
scalar_in_range(const unsigned char *d, const unsigned char *n, size_t len)
{
	unsigned nonzero = 0, lt = 0, gt = 0;
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned a = d[i], b = n[i];
		unsigned undecided = 1u ^ (lt | gt);

		nonzero |= a;
		lt |= undecided & ((a - b) >> 8 & 1u);
		gt |= undecided & ((b - a) >> 8 & 1u);
	}
	return nonzero != 0 && lt;
}

int
acme_smime_key_from_private(acme_smime_key *key, int type,
	const unsigned char *priv, size_t priv_len)
{
	const key_params *kp = key_params_of(type);
	priv_view v;
	size_t qlen;

	if (key == NULL || priv == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	if (kp == NULL) {
		return ACME_SMIME_ERR_UNSUPPORTED;
	}
	if (priv_len != kp->scalar_len ||
	    !scalar_in_range(priv, kp->order, priv_len)) {
		return ACME_SMIME_ERR_INVALID;
	}
	memset(key, 0, sizeof *key);
	key->type = type;
	key->priv_len = priv_len;
	memcpy(key->priv, priv, priv_len);
	priv_view_open(&v, key);
	qlen = br_ec_compute_pub(br_ec_get_default(), NULL, key->pub, &v.sk);
	wipe(&v, sizeof v);
	if (qlen != 2 * kp->scalar_len + 1) {
		acme_smime_key_wipe(key);
		return ACME_SMIME_ERR_CRYPTO;
	}
	key->pub_len = qlen;
	return ACME_SMIME_OK;
}

int
acme_smime_key_generate(acme_smime_key *key, int type,
	acme_smime_entropy_fn entropy, void *entropy_user)
{
	const key_params *kp = key_params_of(type);
	br_hmac_drbg_context drbg;
	unsigned char seed[48];
	br_ec_private_key sk;
	unsigned char x[BR_EC_KBUF_PRIV_MAX_SIZE];
	size_t xlen;
	int r;

	if (key == NULL || entropy == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	if (kp == NULL) {
		return ACME_SMIME_ERR_UNSUPPORTED;
	}
	if (entropy(entropy_user, seed, sizeof seed) != 0) {
		wipe(seed, sizeof seed);
		return ACME_SMIME_ERR_ENTROPY;
	}
	br_hmac_drbg_init(&drbg, &br_sha256_vtable, seed, sizeof seed);
	xlen = br_ec_keygen(&drbg.vtable, br_ec_get_default(), &sk, x, kp->curve);
	r = xlen == kp->scalar_len ?
	    acme_smime_key_from_private(key, type, x, xlen) : ACME_SMIME_ERR_CRYPTO;
	wipe(&drbg, sizeof drbg);
	wipe(seed, sizeof seed);
	wipe(x, sizeof x);
	wipe(&sk, sizeof sk);
	return r;
}

void
acme_smime_key_wipe(acme_smime_key *key)
{
	if (key != NULL) {
		wipe(key, sizeof *key);
	}
}

/* The public JWK with exactly the members RFC 7638 hashes, in its order,
 * so one text serves both the "jwk" header and the thumbprint. */
static void
jwk_put(textbuf *tb, const acme_smime_key *key)
{
	const key_params *kp = key_params_of(key->type);
	char coord[65];

	tb_puts(tb, "{\"crv\":\"");
	tb_puts(tb, kp->jwk_crv);
	tb_puts(tb, "\",\"kty\":\"EC\",\"x\":\"");
	b64url_encode(coord, sizeof coord, key->pub + 1, kp->scalar_len);
	tb_puts(tb, coord);
	tb_puts(tb, "\",\"y\":\"");
	b64url_encode(coord, sizeof coord, key->pub + 1 + kp->scalar_len,
	    kp->scalar_len);
	tb_puts(tb, coord);
	tb_puts(tb, "\"}");
}

int
acme_smime_jwk_thumbprint(const acme_smime_key *key,
	char out[ACME_SMIME_THUMBPRINT_SIZE])
{
	char jwk[192];
	textbuf tb;
	br_sha256_context sha;
	unsigned char h[32];
	int n;

	if (out == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	out[0] = '\0';
	if (!key_usable(key)) {
		return ACME_SMIME_ERR_INVALID;
	}
	tb_init(&tb, jwk, sizeof jwk);
	jwk_put(&tb, key);
	n = tb_finish(&tb);
	if (n < 0) {
		return n;
	}
	br_sha256_init(&sha);
	br_sha256_update(&sha, jwk, (size_t)n);
	br_sha256_out(&sha, h);
	b64url_encode(out, ACME_SMIME_THUMBPRINT_SIZE, h, sizeof h);
	return ACME_SMIME_OK;
}

/* Raw (r || s) ECDSA check of a hash: 1 when valid. */
static int
ecdsa_verify_raw(const acme_smime_key *key, const unsigned char *hash,
	size_t hash_len, const unsigned char *sig, size_t sig_len)
{
	pub_view v;

	if (key == NULL || key_params_of(key->type) == NULL ||
	    key->pub_len != 2 * key_params_of(key->type)->scalar_len + 1) {
		return 0;
	}
	pub_view_open(&v, key);
	return br_ecdsa_vrfy_raw_get_default()(br_ec_get_default(), hash, hash_len,
	    &v.pk, sig, sig_len) == 1;
}

/* Sign a hash, raw r || s; then verify it (see the banner). Returns the
 * signature length or ACME_SMIME_ERR_CRYPTO. sig holds 96 bytes. */
static int
ecdsa_sign_raw(const acme_smime_key *key, const unsigned char *hash,
	unsigned char *sig)
{
	const key_params *kp = key_params_of(key->type);
	priv_view v;
	size_t n;

	priv_view_open(&v, key);
	n = br_ecdsa_sign_raw_get_default()(br_ec_get_default(), kp->hash, hash,
	    &v.sk, sig);
	wipe(&v, sizeof v);
	if (n != 2 * kp->scalar_len ||
	    !ecdsa_verify_raw(key, hash, kp->hash_len, sig, n)) {
		return ACME_SMIME_ERR_CRYPTO;
	}
	return (int)n;
}

/* Hash with the key's JWS hash (SHA-256 or SHA-384). */
typedef struct {
	br_hash_compat_context ctx;
	const br_hash_class *cls;
} key_hash;

static void
key_hash_init(key_hash *h, const acme_smime_key *key)
{
	h->cls = key_params_of(key->type)->hash;
	h->cls->init(&h->ctx.vtable);
}

static void
key_hash_update(key_hash *h, const void *data, size_t len)
{
	h->cls->update(&h->ctx.vtable, data, len);
}

static void
key_hash_out(key_hash *h, unsigned char *out)
{
	h->cls->out(&h->ctx.vtable, out);
}

/*
 * Base64url-encode in place: the raw_len bytes at buf[pos] become
 * B64_ENCODED_LEN(raw_len) characters at buf[pos]. The raw bytes are
 * first moved to the end of the buffer; the encoder writes 4 characters
 * only after reading 3 bytes, so with the output ending before the moved
 * input starts plus one group, it never overtakes what it still has to
 * read. Returns the encoded length or ACME_SMIME_ERR_BUFFER.
 */
static int
b64url_inplace(char *buf, size_t size, size_t pos, size_t raw_len)
{
	size_t enc = B64_ENCODED_LEN(raw_len);
	size_t tail;

	if (pos > size || raw_len > size - pos || enc + 1 > size - pos ||
	    raw_len > size || pos + raw_len / 3 + 1 > size - raw_len) {
		return ACME_SMIME_ERR_BUFFER;
	}
	tail = size - raw_len;
	memmove(buf + tail, buf + pos, raw_len);
	b64_encode_raw(buf + pos, (const unsigned char *)buf + tail, raw_len,
	    B64_URL);
	return (int)enc;
}

/* Append raw bytes base64url-encoded, using the free end of the buffer as
 * scratch (see b64url_inplace). */
static void
tb_put_b64url(textbuf *tb, const void *data, size_t len)
{
	size_t pos = tb->len;
	int n;

	tb_putn(tb, (const char *)data, len);
	if (tb->overflow) {
		return;
	}
	n = b64url_inplace(tb->buf, tb->size, pos, len);
	if (n < 0) {
		tb->overflow = 1;
		return;
	}
	tb->len = pos + (size_t)n;
}

/* What goes into a JWS protected header besides "alg". */
typedef struct {
	const char *nonce;   /* Replay-Nonce, or NULL (EAB inner JWS) */
	const char *url;     /* exact request URL */
	const char *kid;     /* account URL; NULL puts the "jwk" instead */
} jws_header;

/*
 * Write a flattened JWS:
 *   {"protected":"<b64url>","payload":"<b64url>","signature":"<b64url>"}
 * signed with key. payload is JSON text of payload_len bytes; "" (length
 * 0) makes a POST-as-GET. Everything is built in out: each part is written
 * raw, then encoded in place, so no scratch buffer is needed.
 * Returns the length (out is NUL-terminated) or an error.
 */
static int
jws_write(char *out, size_t out_size, const acme_smime_key *key,
	const jws_header *hdr, const char *payload, size_t payload_len)
{
	const key_params *kp;
	textbuf tb;
	key_hash h;
	unsigned char hash[48], sig[96];
	size_t mark, raw;
	int siglen;

	if (!key_usable(key) || hdr == NULL || hdr->url == NULL ||
	    (payload == NULL && payload_len > 0)) {
		return ACME_SMIME_ERR_INVALID;
	}
	kp = key_params_of(key->type);
	tb_init(&tb, out, out_size);
	tb_puts(&tb, "{\"protected\":\"");
	mark = tb.len;
	tb_puts(&tb, "{\"alg\":\"");
	tb_puts(&tb, kp->jws_alg);
	tb_putc(&tb, '"');
	if (hdr->kid != NULL) {
		tb_puts(&tb, ",\"kid\":");
		json_put_string(&tb, hdr->kid);
	} else {
		tb_puts(&tb, ",\"jwk\":");
		jwk_put(&tb, key);
	}
	if (hdr->nonce != NULL) {
		tb_puts(&tb, ",\"nonce\":");
		json_put_string(&tb, hdr->nonce);
	}
	tb_puts(&tb, ",\"url\":");
	json_put_string(&tb, hdr->url);
	tb_putc(&tb, '}');
	if (tb.overflow) {
		return tb_finish(&tb);
	}
	raw = tb.len - mark;
	tb.len = mark;
	tb_put_b64url(&tb, out + mark, raw);
	if (tb.overflow) {
		return tb_finish(&tb);
	}
	key_hash_init(&h, key);
	key_hash_update(&h, out + mark, tb.len - mark);
	key_hash_update(&h, ".", 1);
	tb_puts(&tb, "\",\"payload\":\"");
	mark = tb.len;
	tb_put_b64url(&tb, payload, payload_len);
	if (tb.overflow) {
		return tb_finish(&tb);
	}
	key_hash_update(&h, out + mark, tb.len - mark);
	key_hash_out(&h, hash);
	siglen = ecdsa_sign_raw(key, hash, sig);
	if (siglen < 0) {
		return siglen;
	}
	tb_puts(&tb, "\",\"signature\":\"");
	tb_put_b64url(&tb, sig, (size_t)siglen);
	tb_puts(&tb, "\"}");
	return tb_finish(&tb);
}

/* ========================================================================
 * 4. PKCS#10 CSR writer
 *
 * DER is written backwards, from the end of the buffer towards its start:
 * a constructed value's length is known once its contents are written, so
 * no length has to be guessed or patched. Only the signature breaks the
 * pattern (it covers the request info written before it); see
 * acme_smime_csr_write().
 * ====================================================================== */

typedef struct {
	unsigned char *buf;
	size_t pos;          /* first byte written so far; writes go below */
	int overflow;
} der_writer;

static void
der_put(der_writer *w, const void *data, size_t len)
{
	if (w->overflow || len > w->pos) {
		w->overflow = 1;
		return;
	}
	w->pos -= len;
	memcpy(w->buf + w->pos, data, len);
}

static void
der_put_byte(der_writer *w, unsigned char b)
{
	der_put(w, &b, 1);
}

/* Identifier and length octets, for contents of len bytes. */
static void
der_put_header(der_writer *w, unsigned char tag, size_t len)
{
	size_t n = len;

	if (len < 0x80) {
		der_put_byte(w, (unsigned char)len);
	} else {
		unsigned char count = 0;

		while (n > 0) {
			der_put_byte(w, (unsigned char)(n & 0xFF));
			n >>= 8;
			count++;
		}
		der_put_byte(w, (unsigned char)(0x80 | count));
	}
	der_put_byte(w, tag);
}

/* Close a constructed value whose contents start at w->pos and end at
 * end (the position saved before they were written). */
static void
der_wrap(der_writer *w, unsigned char tag, size_t end)
{
	if (!w->overflow) {
		der_put_header(w, tag, end - w->pos);
	}
}

static void
der_put_tlv(der_writer *w, unsigned char tag, const void *data, size_t len)
{
	der_put(w, data, len);
	der_put_header(w, tag, len);
}

/* Bytes of the identifier and length octets for contents of len bytes. */
static size_t
der_header_len(size_t len)
{
	size_t n = 2;

	if (len < 0x80) {
		return n;
	}
	while (len > 0) {
		n++;
		len >>= 8;
	}
	return n;
}

#define DER_SEQUENCE   0x30
#define DER_SET        0x31
#define DER_INTEGER    0x02
#define DER_BIT_STRING 0x03
#define DER_OCTET_STR  0x04
#define DER_OID        0x06
#define DER_UTF8       0x0C
#define DER_CTX0_CONS  0xA0
#define DER_GN_EMAIL   0x81   /* GeneralName [1] rfc822Name, IA5String */
#define DER_GN_DNS     0x82   /* GeneralName [2] dNSName, IA5String */

static const unsigned char oid_common_name[] = { 0x55, 0x04, 0x03 };
static const unsigned char oid_ext_request[] = {
	0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x0E
};
static const unsigned char oid_san[] = { 0x55, 0x1D, 0x11 };
static const unsigned char oid_key_usage[] = { 0x55, 0x1D, 0x0F };
static const unsigned char der_true[] = { 0x01, 0x01, 0xFF };

/* AlgorithmIdentifier of the public key, then of the signature. */
static const unsigned char der_alg_p256[] = {
	0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01,
	0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07
};
static const unsigned char der_alg_p384[] = {
	0x30, 0x10, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01,
	0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22
};
static const unsigned char der_sig_ecdsa_sha256[] = {
	0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02
};
static const unsigned char der_sig_ecdsa_sha384[] = {
	0x30, 0x0A, 0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03
};

/* keyUsage BIT STRING contents (unused-bits count first), per profile,
 * for EC keys: digitalSignature is bit 0, keyAgreement bit 4. */
static const unsigned char ku_ec_dual[] = { 0x03, 0x88 };
static const unsigned char ku_ec_sign[] = { 0x07, 0x80 };
static const unsigned char ku_ec_encrypt[] = { 0x03, 0x08 };

/* X.520 ub-common-name: a longer address cannot be the CN. */
#define CSR_MAX_CN 64

/* An identifier value we can put in an IA5String: printable ASCII, no
 * space, bounded, and no wildcard in an address (RFC 8823 section 3). */
static int
identifier_ok(const acme_smime_identifier *id)
{
	size_t i, len;

	if (id->value == NULL || (id->type != ACME_SMIME_ID_EMAIL &&
	    id->type != ACME_SMIME_ID_DNS)) {
		return 0;
	}
	len = strlen(id->value);
	if (len == 0 || len > ACME_SMIME_MAX_ADDR) {
		return 0;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)id->value[i];

		if (c <= 0x20 || c >= 0x7F || c == '"' || c == '\\' ||
		    (id->type == ACME_SMIME_ID_EMAIL && c == '*')) {
			return 0;
		}
	}
	return id->type != ACME_SMIME_ID_EMAIL ||
	    (strchr(id->value, '@') != NULL && strchr(id->value, '@') ==
	    strrchr(id->value, '@') && id->value[0] != '@' &&
	    id->value[len - 1] != '@');
}

static int
identifiers_ok(const acme_smime_identifier *ids, size_t n)
{
	size_t i;

	if (ids == NULL || n == 0 || n > ACME_SMIME_MAX_IDENTIFIERS) {
		return 0;
	}
	for (i = 0; i < n; i++) {
		if (!identifier_ok(&ids[i])) {
			return 0;
		}
	}
	return 1;
}

/* The extensionRequest attribute: subjectAltName, then keyUsage. */
static void
csr_put_extensions(der_writer *w, const acme_smime_identifier *ids, size_t n,
	int ku_profile)
{
	const unsigned char *ku = NULL;
	size_t end_attr = w->pos, end_set, end_exts, end, end_os, end_names, i;

	switch (ku_profile) {
	case ACME_SMIME_KU_DUAL:    ku = ku_ec_dual; break;
	case ACME_SMIME_KU_SIGN:    ku = ku_ec_sign; break;
	case ACME_SMIME_KU_ENCRYPT: ku = ku_ec_encrypt; break;
	default:                    break;
	}
	end_set = w->pos;
	end_exts = w->pos;
	if (ku != NULL) {
		end = w->pos;
		end_os = w->pos;
		der_put_tlv(w, DER_BIT_STRING, ku, 2);
		der_wrap(w, DER_OCTET_STR, end_os);
		der_put(w, der_true, sizeof der_true);
		der_put_tlv(w, DER_OID, oid_key_usage, sizeof oid_key_usage);
		der_wrap(w, DER_SEQUENCE, end);
	}
	end = w->pos;
	end_os = w->pos;
	end_names = w->pos;
	for (i = n; i-- > 0;) {
		der_put_tlv(w, ids[i].type == ACME_SMIME_ID_EMAIL ? DER_GN_EMAIL :
		    DER_GN_DNS, ids[i].value, strlen(ids[i].value));
	}
	der_wrap(w, DER_SEQUENCE, end_names);
	der_wrap(w, DER_OCTET_STR, end_os);
	der_put_tlv(w, DER_OID, oid_san, sizeof oid_san);
	der_wrap(w, DER_SEQUENCE, end);
	der_wrap(w, DER_SEQUENCE, end_exts);
	der_wrap(w, DER_SET, end_set);
	der_put_tlv(w, DER_OID, oid_ext_request, sizeof oid_ext_request);
	der_wrap(w, DER_SEQUENCE, end_attr);
}

/* CertificationRequestInfo (RFC 2986 section 4.1). */
static void
csr_put_info(der_writer *w, const acme_smime_key *key,
	const acme_smime_identifier *ids, size_t n, int ku_profile)
{
	static const unsigned char version0[] = { 0x02, 0x01, 0x00 };
	size_t end_info = w->pos, end, end_bits;
	size_t cn_len = strlen(ids[0].value);

	end = w->pos;
	csr_put_extensions(w, ids, n, ku_profile);
	der_wrap(w, DER_CTX0_CONS, end);

	end = w->pos;
	end_bits = w->pos;
	der_put(w, key->pub, key->pub_len);
	der_put_byte(w, 0x00);
	der_wrap(w, DER_BIT_STRING, end_bits);
	if (key->type == ACME_SMIME_KEY_P256) {
		der_put(w, der_alg_p256, sizeof der_alg_p256);
	} else {
		der_put(w, der_alg_p384, sizeof der_alg_p384);
	}
	der_wrap(w, DER_SEQUENCE, end);

	end = w->pos;
	if (cn_len <= CSR_MAX_CN) {
		size_t end_set, end_atv = w->pos;

		der_put_tlv(w, DER_UTF8, ids[0].value, cn_len);
		der_put_tlv(w, DER_OID, oid_common_name, sizeof oid_common_name);
		der_wrap(w, DER_SEQUENCE, end_atv);
		end_set = end;
		der_wrap(w, DER_SET, end_set);
	}
	der_wrap(w, DER_SEQUENCE, end);

	der_put(w, version0, sizeof version0);
	der_wrap(w, DER_SEQUENCE, end_info);
}

int
acme_smime_csr_write(unsigned char *out, size_t out_size,
	const acme_smime_key *key, const acme_smime_identifier *ids,
	size_t id_count, int ku_profile)
{
	const unsigned char *sig_alg;
	size_t sig_alg_len, info_len, body_len, hdr_len, bits_hdr, pos;
	der_writer w;
	key_hash h;
	priv_view v;
	pub_view pv;
	unsigned char hash[48], sig[BR_EC_KBUF_PUB_MAX_SIZE + 16];
	size_t siglen;

	if (out == NULL || !key_usable(key) || !identifiers_ok(ids, id_count) ||
	    ku_profile < ACME_SMIME_KU_DUAL || ku_profile > ACME_SMIME_KU_NONE) {
		return ACME_SMIME_ERR_INVALID;
	}
	w.buf = out;
	w.pos = out_size;
	w.overflow = 0;
	csr_put_info(&w, key, ids, id_count, ku_profile);
	if (w.overflow) {
		return ACME_SMIME_ERR_BUFFER;
	}
	info_len = out_size - w.pos;

	key_hash_init(&h, key);
	key_hash_update(&h, out + w.pos, info_len);
	key_hash_out(&h, hash);
	priv_view_open(&v, key);
	siglen = br_ecdsa_sign_asn1_get_default()(br_ec_get_default(),
	    key_params_of(key->type)->hash, hash, &v.sk, sig);
	wipe(&v, sizeof v);
	if (siglen == 0) {
		return ACME_SMIME_ERR_CRYPTO;
	}
	pub_view_open(&pv, key);
	if (br_ecdsa_vrfy_asn1_get_default()(br_ec_get_default(), hash,
	    key_params_of(key->type)->hash_len, &pv.pk, sig, siglen) != 1) {
		return ACME_SMIME_ERR_CRYPTO;
	}
	if (key->type == ACME_SMIME_KEY_P256) {
		sig_alg = der_sig_ecdsa_sha256;
		sig_alg_len = sizeof der_sig_ecdsa_sha256;
	} else {
		sig_alg = der_sig_ecdsa_sha384;
		sig_alg_len = sizeof der_sig_ecdsa_sha384;
	}

	/* The info sits at the end of out; slide it to the front behind the
	 * outer header and append the algorithm and the signature. */
	bits_hdr = der_header_len(siglen + 1);
	body_len = info_len + sig_alg_len + bits_hdr + 1 + siglen;
	hdr_len = der_header_len(body_len);
	if (hdr_len + body_len > out_size) {
		return ACME_SMIME_ERR_BUFFER;
	}
	memmove(out + hdr_len, out + w.pos, info_len);
	w.pos = hdr_len;
	der_put_header(&w, DER_SEQUENCE, body_len);
	pos = hdr_len + info_len;
	memcpy(out + pos, sig_alg, sig_alg_len);
	pos += sig_alg_len + bits_hdr;
	w.pos = pos;
	der_put_header(&w, DER_BIT_STRING, siglen + 1);
	out[pos++] = 0x00;
	memcpy(out + pos, sig, siglen);
	pos += siglen;
	return (int)pos;
}

/* ========================================================================
 * 5. ACME objects and the RFC 8823 digest
 *
 * Request bodies and the parts of server objects a client acts on, for
 * the engine and for callers with their own transport; and the one piece
 * of arithmetic RFC 8823 adds to RFC 8555: the digest of the key
 * authorization built from two token halves.
 * ====================================================================== */

int
acme_smime_jws_sign(char *out, size_t out_size, const acme_smime_key *key,
	const char *nonce, const char *url, const char *kid,
	const char *payload, size_t payload_len)
{
	jws_header hdr;

	if (out == NULL || nonce == NULL || nonce[0] == '\0' || url == NULL ||
	    url[0] == '\0' || payload == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	hdr.nonce = nonce;
	hdr.url = url;
	hdr.kid = kid;
	return jws_write(out, out_size, key, &hdr, payload, payload_len);
}

int
acme_smime_order_payload(char *out, size_t out_size,
	const acme_smime_identifier *ids, size_t id_count)
{
	textbuf tb;
	size_t i;

	if (out == NULL || !identifiers_ok(ids, id_count)) {
		return ACME_SMIME_ERR_INVALID;
	}
	tb_init(&tb, out, out_size);
	tb_puts(&tb, "{");
	json_put_key(&tb, "identifiers");
	tb_putc(&tb, '[');
	for (i = 0; i < id_count; i++) {
		tb_puts(&tb, i == 0 ? "{" : ",{");
		json_put_key(&tb, "type");
		json_put_string(&tb, ids[i].type == ACME_SMIME_ID_EMAIL ? "email" : "dns");
		tb_putc(&tb, ',');
		json_put_key(&tb, "value");
		json_put_string(&tb, ids[i].value);
		tb_putc(&tb, '}');
	}
	tb_puts(&tb, "]}");
	return tb_finish(&tb);
}

/* Map a json_get_string() failure to the caller's view: a field too long
 * for its fixed buffer is a limit, anything else malformed JSON. */
static int
json_field_error(int r)
{
	return r == ACME_SMIME_ERR_BUFFER ? ACME_SMIME_ERR_LIMIT : ACME_SMIME_ERR_JSON;
}

int
acme_smime_parse_authorization(const char *json, size_t json_len,
	const char *type, acme_smime_challenge *ch)
{
	jsmntok_t tok[ACME_SMIME_JSON_TOKENS];
	json_doc d;
	int r, list, item, k;
	int email = 0;

	if (json == NULL || type == NULL || ch == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	memset(ch, 0, sizeof *ch);
	r = json_parse(&d, json, json_len, tok, ARRAY_LEN(tok));
	if (r != ACME_SMIME_OK) {
		return r;
	}
	list = json_find(&d, 0, "challenges");
	if (list < 0 || d.tok[list].type != JSMN_ARRAY) {
		return ACME_SMIME_ERR_JSON;
	}
	for (k = 0; (item = json_array_item(&d, list, k)) >= 0; k++) {
		if (json_member_is(&d, item, "type", type)) {
			break;
		}
	}
	if (item < 0) {
		return ACME_SMIME_ERR_JSON;
	}
	email = strcmp(type, "email-reply-00") == 0;
	if ((r = json_get_member(&d, item, "url", ch->url, sizeof ch->url)) < 0 ||
	    (r = json_get_member(&d, item, "status", ch->status,
	    sizeof ch->status)) < 0) {
		memset(ch, 0, sizeof *ch);
		return json_field_error(r);
	}
	r = json_get_member(&d, item, "token", ch->token, sizeof ch->token);
	if (r < 0 && (email || json_find(&d, item, "token") >= 0)) {
		memset(ch, 0, sizeof *ch);
		return json_field_error(r);
	}
	if (email) {
		r = json_get_member(&d, item, "from", ch->from, sizeof ch->from);
		if (r <= 0 || ch->token[0] == '\0') {
			memset(ch, 0, sizeof *ch);
			return r < 0 ? json_field_error(r) : ACME_SMIME_ERR_JSON;
		}
	}
	return ACME_SMIME_OK;
}

/* Is s[0..n) base64url text, with at most the padding a length allows? */
static int
token_chars_ok(const char *s, size_t n)
{
	unsigned char scratch[ACME_SMIME_MAX_TOKEN];

	return n > 0 && n <= ACME_SMIME_MAX_TOKEN &&
	    b64_decode(scratch, sizeof scratch, s, n, B64_URL | B64_PAD_OK) >= 0;
}

/* Copy s with all whitespace removed; returns the length or -1. */
static int
strip_whitespace(char *out, size_t out_size, const char *s)
{
	size_t o = 0;

	for (; *s != '\0'; s++) {
		if (is_space((unsigned char)*s)) {
			continue;
		}
		if (o + 1 >= out_size) {
			return -1;
		}
		out[o++] = *s;
	}
	out[o] = '\0';
	return (int)o;
}

/* Feed bytes to SHA-256 as base64url text, three bytes at a time, so
 * BYTES mode never holds the joined token. */
typedef struct {
	br_sha256_context *sha;
	unsigned char pend[3];
	size_t npend;
} b64url_hash_stream;

static void
b64url_hash_push(b64url_hash_stream *st, const unsigned char *p, size_t n)
{
	char enc[4];

	while (n-- > 0) {
		st->pend[st->npend++] = *p++;
		if (st->npend == 3) {
			b64_encode_raw(enc, st->pend, 3, B64_URL);
			br_sha256_update(st->sha, enc, 4);
			st->npend = 0;
		}
	}
}

static void
b64url_hash_finish(b64url_hash_stream *st)
{
	char enc[4];

	if (st->npend > 0) {
		b64_encode_raw(enc, st->pend, st->npend, B64_URL);
		br_sha256_update(st->sha, enc, st->npend + 1);
		st->npend = 0;
	}
}

int
acme_smime_rfc8823_digest(const char *token_part1, const char *token_part2,
	const char *thumbprint, int concat_mode, char out[ACME_SMIME_DIGEST_SIZE])
{
	char part1[ACME_SMIME_MAX_TOKEN + 1];
	unsigned char bytes[ACME_SMIME_MAX_TOKEN];
	br_sha256_context sha;
	unsigned char h[32];
	size_t len2, lent;
	int len1, n;

	if (out == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	out[0] = '\0';
	if (token_part1 == NULL || token_part2 == NULL || thumbprint == NULL ||
	    (concat_mode != ACME_SMIME_CONCAT_STRING &&
	    concat_mode != ACME_SMIME_CONCAT_BYTES)) {
		return ACME_SMIME_ERR_INVALID;
	}
	len1 = strip_whitespace(part1, sizeof part1, token_part1);
	len2 = strlen(token_part2);
	lent = strlen(thumbprint);
	if (len1 < 0 || len2 > ACME_SMIME_MAX_TOKEN) {
		return ACME_SMIME_ERR_LIMIT;
	}
	if (!token_chars_ok(part1, (size_t)len1) ||
	    !token_chars_ok(token_part2, len2) || lent != 43 ||
	    b64_decode(bytes, sizeof bytes, thumbprint, lent, B64_URL) != 32) {
		return ACME_SMIME_ERR_ENCODING;
	}
	br_sha256_init(&sha);
	if (concat_mode == ACME_SMIME_CONCAT_STRING) {
		br_sha256_update(&sha, part1, (size_t)len1);
		br_sha256_update(&sha, token_part2, len2);
	} else {
		b64url_hash_stream st;

		st.sha = &sha;
		st.npend = 0;
		n = b64_decode(bytes, sizeof bytes, part1, (size_t)len1,
		    B64_URL | B64_PAD_OK);
		b64url_hash_push(&st, bytes, (size_t)n);
		n = b64_decode(bytes, sizeof bytes, token_part2, len2,
		    B64_URL | B64_PAD_OK);
		b64url_hash_push(&st, bytes, (size_t)n);
		b64url_hash_finish(&st);
	}
	br_sha256_update(&sha, ".", 1);
	br_sha256_update(&sha, thumbprint, lent);
	br_sha256_out(&sha, h);
	b64url_encode(out, ACME_SMIME_DIGEST_SIZE, h, sizeof h);
	return ACME_SMIME_OK;
}

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
	FIELD_DATE,
	FIELD_COUNT
};

static const char *const mail_field_names[FIELD_COUNT] = {
	"Subject", "From", "To", "Reply-To", "Auto-Submitted", "Message-ID",
	"References", "Date"
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
#define MAIL_DATE_MAX UINT64_C(253402300799)

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

/* NUL and the control characters but TAB: they have no business in a
 * decoded Subject or a quoted string, and could hide text in a log line. */
static int
is_forbidden_control(int c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
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

/* Position of the colon that ends the field name opening a line, or 0
 * when the line has no valid name (RFC 5322 ftext; the obsolete white
 * space before the colon is tolerated). */
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
header_scan_field(header_scan_state *st, const char *line, size_t len,
	size_t name_len, size_t colon)
{
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
	size_t pos = 0, end, next, name_len = 0, colon;

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
		} else {
			colon = header_name_end(mail + pos, end - pos, &name_len);
			if (colon == 0) {
				return ACME_SMIME_MAIL_MALFORMED;
			}
			header_scan_field(&st, mail + pos, end - pos, name_len, colon);
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
		if (is_forbidden_control(c)) {
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
		if (is_forbidden_control((unsigned char)out[i])) {
			return -1;
		}
	}
	return n < 0 ? -1 : n;
}

/*
 * Decode the encoded-words of an unfolded Subject in place; *len is
 * updated. In place is safe because decoding only shrinks: an encoded-word
 * is at least eight characters longer than what it decodes to, so the write
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
	t->text = lx->s + lx->pos;
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
	} else if (c != '\0' && strchr("<>@,;:.", c) != NULL) {
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
	addr_token closing;

	if (addr_tok_is(t, '@')) {
		al->lx.pos = start;
		if (addr_read_spec(&al->lx, out, out_size) < 0) {
			return -1;
		}
	} else {
		if (addr_read_spec(&al->lx, out, out_size) < 0) {
			return -1;
		}
		addr_lex(&al->lx, &closing);
		if (!addr_tok_is(&closing, '>')) {
			return -1;
		}
	}
	al->items++;
	return addr_list_mailbox_end(al) < 0 ? -1 : 1;
}

/* ':' opens a group (its words were the group's name), ';' closes it. */
static int
addr_list_group_mark(addr_list *al, const addr_token *t, unsigned phrase)
{
	addr_token after;

	if (addr_tok_is(t, ':')) {
		if (!al->allow_groups || al->in_group || phrase == 0) {
			return -1;
		}
		al->in_group = 1;
		al->items++;
		return 0;
	}
	if (!al->in_group || phrase != 0) {
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
	unsigned phrase;

	for (;;) {
		/* A phrase: words and dots ("J. Smith"), or a local part. */
		start = al->lx.pos;
		phrase = 0;
		for (;;) {
			addr_lex(&al->lx, &t);
			if (!addr_tok_is_word(&t) && !addr_tok_is(&t, '.')) {
				break;
			}
			phrase++;
		}
		if (addr_tok_is(&t, '@') || addr_tok_is(&t, '<')) {
			return addr_list_mailbox(al, start, &t, out, out_size);
		}
		if (addr_tok_is(&t, ':') || addr_tok_is(&t, ';')) {
			if (addr_list_group_mark(al, &t, phrase) < 0) {
				return -1;
			}
			continue;
		}
		if (phrase != 0 || (t.type == ADDR_TOK_END && al->in_group)) {
			return -1;
		}
		if (t.type == ADDR_TOK_END) {
			return 0;
		}
		if (!addr_tok_is(&t, ',')) {
			return -1;
		}
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

/* Can the response go to this address? The parser accepts quoted local
 * parts and UTF-8 (RFC 6532), but our response is a 7-bit mail with the
 * address between angle brackets: it must be printable US-ASCII and unable
 * to close the brackets or break the line. */
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

/* Every Reply-To address is kept: the response goes to all of them, or to
 * the From already in reply_to[0]. A mail accepted here is one that
 * acme_smime_write_response_mail() can answer. */
static int
collect_reply_to(const mail_header *hdr, char *scratch,
	acme_smime_mail_verdict *verdict)
{
	char addr[ACME_SMIME_MAX_ADDR + 1];
	addr_list al;
	size_t len;
	unsigned count = 0, i;
	int r = 0;

	if (field_unfold(hdr, FIELD_REPLY_TO, scratch, &len)) {
		addr_list_init(&al, scratch, len, 1);
		while ((r = addr_list_next(&al, addr, sizeof addr)) == 1) {
			if (count == ACME_SMIME_MAX_REPLY_TO) {
				return ACME_SMIME_MAIL_BAD_REPLY_TO;
			}
			memcpy(verdict->reply_to[count++], addr, strlen(addr) + 1);
		}
	} else {
		count = 1;
	}
	if (r < 0 || count == 0) {
		return ACME_SMIME_MAIL_BAD_REPLY_TO;
	}
	for (i = 0; i < count; i++) {
		if (!addr_is_writable(verdict->reply_to[i])) {
			return ACME_SMIME_MAIL_BAD_REPLY_TO;
		}
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
	if (!token_chars_ok(ch->token_part1,
	    bounded_len(ch->token_part1, ACME_SMIME_MAX_TOKEN))
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

/* ========================================================================
 * 6b. Mail authenticity: S/MIME, DKIM, trusted Authentication-Results
 *
 * RFC 8823 section 3.1: a challenge mail is signed with S/MIME or DKIM and
 * the client checks the signature before it answers (protocol.md 4.2,
 * 16.2). Three proofs are accepted, tried in this order until one holds:
 *
 *   S/MIME  multipart/signed or application/pkcs7-mime signed-data; the
 *           CMS SignedData is walked here, the signer's issuer chain goes
 *           through BearSSL's X.509 engine, the signer certificate must
 *           name the From address (rfc822Name) and the signed copy of
 *           From, To and Subject must match the outer header;
 *   DKIM    rsa-sha256 with the key from DNS through the caller's dns_txt
 *           hook, d= equal to the From domain, h= covering the fields
 *           the challenge depends on;
 *   A-R     the topmost Authentication-Results field, when its authserv-id
 *           is the one the caller trusts, reporting dkim=pass for the
 *           From domain.
 *
 * The From address and domain compared are the pending challenge's: the
 * From field was already checked against it. A mail with none of the
 * proofs is refused with the reason of the first proof it carried, or
 * ACME_SMIME_MAIL_UNSIGNED.
 *
 * Not done: BER (indefinite lengths, constructed OCTET STRINGs) in the CMS,
 * S/MIME nested in other S/MIME layers (a signed part inside an encrypted
 * one is just unsigned here), RFC 9788 header protection, certificate
 * policies and name constraints (a critical one refuses the certificate),
 * revocation, DNSSEC. The whole mail is in memory; the DER of an S/MIME
 * signature is decoded into the caller's smime_work.
 * ====================================================================== */

/* A proof check's answer when the mail does not carry that proof at all,
 * and the S/MIME result before it was computed: distinct from every
 * acme_smime_mail_reason. */
#define AUTH_ABSENT  (-1)
#define AUTH_NOT_RUN (-2)

/* Most DKIM-Signature fields and CMS signers examined in one mail,
 * certificates followed from the signer's issuer towards an anchor, and
 * names in a DKIM h= (each costs a pass over the header: the bound keeps
 * a hostile mail from costing quadratic time). */
#define AUTH_MAX_TRIES  4
#define SMIME_MAX_CHAIN 4
#define DKIM_MAX_H      64

/* RSA keys under 1024 bits are refused (RFC 8301 section 3.2); BearSSL's
 * own bound is 4096 bits. */
#define AUTH_RSA_MIN_BYTES 128
#define AUTH_RSA_MAX_BYTES 512

/* The proof checks and the chain check keep their large locals (an X.509
 * context, a key record, a signature) in frames of their own: inlined
 * into their callers they would all be live at once. */
#if defined(__GNUC__) || defined(__clang__)
#define AUTH_NOINLINE __attribute__((noinline))
#else
#define AUTH_NOINLINE
#endif

/* BearSSL counts days from 1 January of year 0. */
#define X509_DAYS_AT_UNIX_EPOCH 719528u

#define DER_ENUMERATED 0x0A
#define DER_VISIBLE    0x1A
#define DER_UTC_TIME   0x17
#define DER_GEN_TIME   0x18
#define DER_BOOLEAN    0x01
#define DER_CTX1_CONS  0xA1
#define DER_CTX3_CONS  0xA3
#define DER_CTX0_PRIM  0x80

/* ------------------------------------------------------------------------
 * 6b.1 Header fields, text and hashing helpers
 * ---------------------------------------------------------------------- */

typedef struct {
	const char *p;
	size_t len;
} text_span;

/* One header field as it stands in the mail: its name, and its value from
 * after the colon to the end of its last line (folds included, the final
 * line end excluded). */
typedef struct {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
} hfield;

/* Walks the fields of a header section. Inner headers (a MIME part, a
 * message/rfc822 copy) were not checked by header_scan(), so every line
 * is checked again here. */
typedef struct {
	const char *s;
	size_t len;
	size_t pos;          /* after the end: the body */
	int done;
} hfield_iter;

static void
hfield_iter_init(hfield_iter *it, const char *s, size_t len)
{
	it->s = s;
	it->len = len;
	it->pos = 0;
	it->done = 0;
}

/* The next field: 1, 0 after the empty line that ends the section (or at
 * the end of the text), -1 when a line is malformed. */
static int
hfield_next(hfield_iter *it, hfield *f)
{
	size_t end, next, colon, name_len = 0;

	if (it->done || it->pos >= it->len) {
		it->done = 1;
		return 0;
	}
	if (header_line_bounds(it->s, it->len, it->pos, &end, &next) < 0) {
		return -1;
	}
	if (end == it->pos) {
		it->pos = next;
		it->done = 1;
		return 0;
	}
	colon = header_name_end(it->s + it->pos, end - it->pos, &name_len);
	if (colon == 0) {
		return -1;
	}
	f->name = it->s + it->pos;
	f->name_len = name_len;
	f->value = f->name + colon + 1;
	it->pos = next;
	while (it->pos < it->len && is_wsp((unsigned char)it->s[it->pos])) {
		if (header_line_bounds(it->s, it->len, it->pos, &end, &next) < 0) {
			return -1;
		}
		it->pos = next;
	}
	f->value_len = (size_t)(it->s + end - f->value);
	return 1;
}

/* The field called name (there must be at most one): 1 with it in *f, 0
 * when absent, -1 when repeated or when the section is malformed. */
static int
hfield_find(const char *s, size_t len, const char *name, hfield *f)
{
	hfield_iter it;
	hfield cur;
	int r, found = 0;

	hfield_iter_init(&it, s, len);
	while ((r = hfield_next(&it, &cur)) > 0) {
		if (ascii_caseeq(cur.name, cur.name_len, name)) {
			if (found++ > 0) {
				return -1;
			}
			*f = cur;
		}
	}
	return r < 0 ? -1 : found;
}

/* Offset of the body of the entity s (its length when there is none), or
 * -1 when its header section is malformed. */
static long
hfield_body(const char *s, size_t len)
{
	hfield_iter it;
	hfield f;
	int r;

	hfield_iter_init(&it, s, len);
	while ((r = hfield_next(&it, &f)) > 0) {
		continue;
	}
	return r < 0 ? -1 : (long)it.pos;
}

/* Unfold a value into buf (NUL-terminated): line breaks go, the white
 * space after them stays. Returns the length, or -1 when it does not fit. */
static int
hfield_unfold(const hfield *f, char *buf, size_t size)
{
	size_t i, n = 0;

	for (i = 0; i < f->value_len; i++) {
		if (f->value[i] == '\r' || f->value[i] == '\n') {
			continue;
		}
		if (n + 1 >= size) {
			return -1;
		}
		buf[n++] = f->value[i];
	}
	buf[n] = '\0';
	return (int)n;
}

/* Is the value of f, white space trimmed, the word w (any case)? */
static int
hfield_value_is(const hfield *f, const char *w)
{
	size_t a = 0, b = f->value_len;

	while (a < b && is_space((unsigned char)f->value[a])) {
		a++;
	}
	while (b > a && is_space((unsigned char)f->value[b - 1])) {
		b--;
	}
	return ascii_caseeq(f->value + a, b - a, w);
}

/*
 * The next character of s in the form RFC 6376 relaxed canonicalisation
 * gives a header value: line breaks gone, each run of white space one
 * space, none at either end; -1 at the end. The bytes in [hole_start,
 * hole_end) are skipped as if absent (the b= value of a DKIM signature).
 */
static int
relaxed_next(const char *s, size_t len, size_t hole_start, size_t hole_end,
	size_t *pos)
{
	size_t p = *pos;
	int ws = 0;

	while (p < len) {
		if (p >= hole_start && p < hole_end) {
			p = hole_end;
		} else if (is_space((unsigned char)s[p])) {
			p++;
			ws = 1;
		} else {
			break;
		}
	}
	if (p >= len) {
		*pos = p;
		return -1;
	}
	if (ws && *pos != 0) {
		*pos = p;
		return ' ';
	}
	*pos = p + 1;
	return (unsigned char)s[p];
}

/* Equal once white space is normalised as above: protected and outer
 * header values differ in folding and little else. */
static int
value_equal_relaxed(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t i = 0, j = 0;
	int c, d;

	do {
		c = relaxed_next(a, alen, 0, 0, &i);
		d = relaxed_next(b, blen, 0, 0, &j);
		if (c != d) {
			return 0;
		}
	} while (c >= 0);
	return 1;
}

/* Case-insensitive equality of a span and counted text. */
static int
spans_caseeq(const text_span *t, const char *s, size_t len)
{
	size_t i;

	if (t->len != len) {
		return 0;
	}
	for (i = 0; i < len; i++) {
		if (to_lower((unsigned char)t->p[i]) != to_lower((unsigned char)s[i])) {
			return 0;
		}
	}
	return 1;
}

/* Tag names: ALPHA *(ALPHA / DIGIT / "_"). */
static int
is_tag_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '_';
}

/* The domain of the challenge's sender ("" when it has none). */
static const char *
from_domain(const acme_smime_pending *pending)
{
	const char *at = strrchr(pending->from, '@');

	return at != NULL ? at + 1 : "";
}

/* Base64 text with white space anywhere (a MIME body, a DKIM tag value,
 * a key record). Returns the decoded length, ACME_SMIME_ERR_ENCODING or
 * ACME_SMIME_ERR_BUFFER. */
static int
b64_decode_text(unsigned char *dst, size_t dst_size, const char *s, size_t len)
{
	unsigned long acc = 0;
	unsigned bits = 0;
	size_t i, n = 0, pad = 0, out = 0;
	int v;

	for (i = 0; i < len; i++) {
		if (is_space((unsigned char)s[i])) {
			continue;
		}
		if (s[i] == '=') {
			pad++;
			continue;
		}
		v = b64_value((unsigned char)s[i], 0);
		if (v < 0 || pad > 0) {
			return ACME_SMIME_ERR_ENCODING;
		}
		n++;
		if (b64_put6(dst, dst_size, &out, &acc, &bits, v) < 0) {
			return ACME_SMIME_ERR_BUFFER;
		}
	}
	if (n % 4 == 1 || pad > 2 || (pad > 0 && (n + pad) % 4 != 0)) {
		return ACME_SMIME_ERR_ENCODING;
	}
	return (int)out;
}

/* Any of the hash functions a signature may use. */
typedef struct {
	const br_hash_class *cls;
	br_hash_compat_context ctx;
} auth_hasher;

static void
ah_init(auth_hasher *h, const br_hash_class *cls)
{
	h->cls = cls;
	cls->init(&h->ctx.vtable);
}

static void
ah_put(auth_hasher *h, const void *p, size_t n)
{
	h->cls->update(&h->ctx.vtable, p, n);
}

static void
ah_putc(auth_hasher *h, int c)
{
	unsigned char b = (unsigned char)c;

	ah_put(h, &b, 1);
}

/* Hash text with every bare LF as CR LF: signatures cover the canonical
 * form, and a mail may have been stored with LF line ends. */
static void
ah_put_crlf(auth_hasher *h, const char *s, size_t len)
{
	size_t i, start = 0;

	for (i = 0; i < len; i++) {
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) {
			ah_put(h, s + start, i - start);
			ah_putc(h, '\r');
			start = i;
		}
	}
	ah_put(h, s + start, len - start);
}

/* Finish; returns the hash length. */
static size_t
ah_out(auth_hasher *h, unsigned char *out)
{
	h->cls->out(&h->ctx.vtable, out);
	return (h->cls->desc >> BR_HASHDESC_OUT_OFF) & BR_HASHDESC_OUT_MASK;
}

/* ------------------------------------------------------------------------
 * 6b.2 DER reader, algorithms, keys, signatures
 *
 * The reader takes one element at a time from a span and checks every
 * length against what is left: nothing is read past the span, nothing is
 * recursive. DER only: BER's indefinite lengths are refused.
 * ---------------------------------------------------------------------- */

typedef struct {
	unsigned char *p;    /* mutable: BearSSL keys point into it */
	size_t len;
} der_in;

/* Take the element at the front of *in: its contents into *val and, when
 * tlv is not NULL, its whole encoding. Returns its tag, or -1 (truncated,
 * multi-byte tag, indefinite or over-long length). */
static int
der_next(der_in *in, der_in *val, der_in *tlv)
{
	size_t hl = 2, n, k;
	int tag;

	if (in->len < 2 || (in->p[0] & 0x1F) == 0x1F) {
		return -1;
	}
	tag = in->p[0];
	n = in->p[1];
	if (n & 0x80) {
		k = n & 0x7F;
		if (k == 0 || k > 4 || in->len - 2 < k) {
			return -1;
		}
		for (n = 0; k > 0; k--) {
			n = (n << 8) | in->p[hl++];
		}
	}
	if (n > in->len - hl) {
		return -1;
	}
	val->p = in->p + hl;
	val->len = n;
	if (tlv != NULL) {
		tlv->p = in->p;
		tlv->len = hl + n;
	}
	in->p += hl + n;
	in->len -= hl + n;
	return tag;
}

static int
der_expect(der_in *in, int tag, der_in *val)
{
	return der_next(in, val, NULL) == tag ? 0 : -1;
}

static int
der_peek(const der_in *in)
{
	return in->len > 0 ? in->p[0] : -1;
}

static int
der_is(const der_in *v, const unsigned char *bytes, size_t len)
{
	return v->len == len && memcmp(v->p, bytes, len) == 0;
}

static int
der_equal(const der_in *a, const der_in *b)
{
	return der_is(a, b->p, b->len);
}

/* An INTEGER's magnitude without its leading zero bytes. */
static void
der_strip_zeros(der_in *v)
{
	while (v->len > 0 && v->p[0] == 0) {
		v->p++;
		v->len--;
	}
}

/* AlgorithmIdentifier: its OID (the parameters are not needed: hashes
 * take none, curves come from the key). */
static int
der_alg(der_in *in, der_in *oid)
{
	der_in seq;

	return der_expect(in, DER_SEQUENCE, &seq) < 0 ? -1 :
	    der_expect(&seq, DER_OID, oid);
}

static const unsigned char oid_pkcs7_signed[] = {
	0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02
};
static const unsigned char oid_pkcs7_data[] = {
	0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x01
};
static const unsigned char oid_attr_content_type[] = {
	0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x03
};
static const unsigned char oid_attr_message_digest[] = {
	0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x04
};
/* id-aa-secureHeaderFieldsIdentifier, RFC 7508 */
static const unsigned char oid_attr_secure_headers[] = {
	0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x10, 0x02, 0x37
};
static const unsigned char oid_rsa_encryption[] = {
	0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01
};
static const unsigned char oid_ec_public_key[] = {
	0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01
};
static const unsigned char oid_p256[] = {
	0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07
};
static const unsigned char oid_p384[] = { 0x2B, 0x81, 0x04, 0x00, 0x22 };
static const unsigned char oid_p521[] = { 0x2B, 0x81, 0x04, 0x00, 0x23 };
static const unsigned char oid_kp_email[] = {
	0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04
};
static const unsigned char oid_aia[] = {
	0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01
};

/* Hashes of a SignerInfo's digestAlgorithm; the OIDs are BearSSL's
 * DigestInfo prefixes (a length byte, then the OID). */
typedef struct {
	int id;
	const br_hash_class *cls;
	const unsigned char *oid;
} auth_hash_alg;

static const auth_hash_alg auth_hash_algs[] = {
	{ br_sha1_ID,   &br_sha1_vtable,   BR_HASH_OID_SHA1 },
	{ br_sha256_ID, &br_sha256_vtable, BR_HASH_OID_SHA256 },
	{ br_sha384_ID, &br_sha384_vtable, BR_HASH_OID_SHA384 },
	{ br_sha512_ID, &br_sha512_vtable, BR_HASH_OID_SHA512 }
};

static const auth_hash_alg *
hash_alg_find(const der_in *oid, int id)
{
	size_t k;

	for (k = 0; k < ARRAY_LEN(auth_hash_algs); k++) {
		const auth_hash_alg *a = &auth_hash_algs[k];

		if (oid != NULL ? der_is(oid, a->oid + 1, a->oid[0]) : a->id == id) {
			return a;
		}
	}
	return NULL;
}

/* Signature algorithms: the key type, and the hash when the OID names
 * one (0: the SignerInfo's digestAlgorithm decides). RSA-PSS, DSA and
 * MD5 are not here and so are refused. */
typedef struct {
	unsigned char oid_len;
	unsigned char oid[9];
	unsigned char key_type;
	unsigned char hash_id;
} sig_alg;

static const sig_alg sig_algs[] = {
	{ 9, { 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01 },
	  BR_KEYTYPE_RSA, 0 },
	{ 9, { 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x05 },
	  BR_KEYTYPE_RSA, br_sha1_ID },
	{ 9, { 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0B },
	  BR_KEYTYPE_RSA, br_sha256_ID },
	{ 9, { 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0C },
	  BR_KEYTYPE_RSA, br_sha384_ID },
	{ 9, { 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0D },
	  BR_KEYTYPE_RSA, br_sha512_ID },
	{ 7, { 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01 }, BR_KEYTYPE_EC, 0 },
	{ 7, { 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x01 },
	  BR_KEYTYPE_EC, br_sha1_ID },
	{ 8, { 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02 },
	  BR_KEYTYPE_EC, br_sha256_ID },
	{ 8, { 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x03 },
	  BR_KEYTYPE_EC, br_sha384_ID },
	{ 8, { 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x04 },
	  BR_KEYTYPE_EC, br_sha512_ID }
};

static const sig_alg *
sig_alg_find(const der_in *oid)
{
	size_t k;

	for (k = 0; k < ARRAY_LEN(sig_algs); k++) {
		if (der_is(oid, sig_algs[k].oid, sig_algs[k].oid_len)) {
			return &sig_algs[k];
		}
	}
	return NULL;
}

/* SubjectPublicKeyInfo (its contents) into a BearSSL key that points into
 * it: RSA of 1024 to 4096 bits, or EC on P-256, P-384 or P-521. */
static int
spki_parse(der_in spki, br_x509_pkey *key)
{
	der_in alg, oid, bits, seq, n, e;

	if (der_expect(&spki, DER_SEQUENCE, &alg) < 0 ||
	    der_expect(&alg, DER_OID, &oid) < 0 ||
	    der_expect(&spki, DER_BIT_STRING, &bits) < 0 ||
	    bits.len < 2 || bits.p[0] != 0) {
		return -1;
	}
	bits.p++;
	bits.len--;
	if (der_is(&oid, oid_rsa_encryption, sizeof oid_rsa_encryption)) {
		if (der_expect(&bits, DER_SEQUENCE, &seq) < 0 ||
		    der_expect(&seq, DER_INTEGER, &n) < 0 ||
		    der_expect(&seq, DER_INTEGER, &e) < 0) {
			return -1;
		}
		der_strip_zeros(&n);
		der_strip_zeros(&e);
		if (n.len < AUTH_RSA_MIN_BYTES || n.len > AUTH_RSA_MAX_BYTES ||
		    e.len == 0 || e.len > 4) {
			return -1;
		}
		key->key_type = BR_KEYTYPE_RSA;
		key->key.rsa.n = n.p;
		key->key.rsa.nlen = n.len;
		key->key.rsa.e = e.p;
		key->key.rsa.elen = e.len;
		return 0;
	}
	if (!der_is(&oid, oid_ec_public_key, sizeof oid_ec_public_key) ||
	    der_expect(&alg, DER_OID, &oid) < 0) {
		return -1;
	}
	key->key_type = BR_KEYTYPE_EC;
	if (der_is(&oid, oid_p256, sizeof oid_p256)) {
		key->key.ec.curve = BR_EC_secp256r1;
	} else if (der_is(&oid, oid_p384, sizeof oid_p384)) {
		key->key.ec.curve = BR_EC_secp384r1;
	} else if (der_is(&oid, oid_p521, sizeof oid_p521)) {
		key->key.ec.curve = BR_EC_secp521r1;
	} else {
		return -1;
	}
	key->key.ec.q = bits.p;
	key->key.ec.qlen = bits.len;
	return 0;
}

/* Check sig over a hash: RSA PKCS#1 v1.5 with the DigestInfo of hash_id,
 * or ECDSA with a DER signature. 1 when valid. */
static int
auth_verify(const br_x509_pkey *key, int hash_id, const unsigned char *hash,
	size_t hash_len, const unsigned char *sig, size_t sig_len)
{
	const auth_hash_alg *ha = hash_alg_find(NULL, hash_id);
	unsigned char out[64];

	if (ha == NULL) {
		return 0;
	}
	if (key->key_type == BR_KEYTYPE_RSA) {
		return br_rsa_pkcs1_vrfy_get_default()(sig, sig_len, ha->oid,
		    hash_len, &key->key.rsa, out) == 1 &&
		    memcmp(out, hash, hash_len) == 0;
	}
	return key->key_type == BR_KEYTYPE_EC &&
	    br_ecdsa_vrfy_asn1_get_default()(br_ec_get_default(), hash,
	    hash_len, &key->key.ec, sig, sig_len) == 1;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian, H. Hinnant's
 * days_from_civil); negative before 1970. Section 9 uses it for HTTP
 * dates. */
static long
days_from_civil(long y, unsigned m, unsigned d)
{
	long era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (long)doe - 719468;
}

/* An X.509 Time (UTCTime or GeneralizedTime, in the "Z" form RFC 5280
 * prescribes) as Unix seconds; times before 1970 become 0. */
static int
der_time(int tag, const der_in *v, uint64_t *t)
{
	unsigned f[6], k;
	size_t i = 0, ylen = tag == DER_UTC_TIME ? 2 : 4;
	long year = 0, days;

	if ((tag != DER_UTC_TIME && tag != DER_GEN_TIME) ||
	    v->len != ylen + 11 || v->p[v->len - 1] != 'Z') {
		return -1;
	}
	for (i = 0; i + 1 < v->len; i++) {
		if (v->p[i] < '0' || v->p[i] > '9') {
			return -1;
		}
	}
	for (i = 0; i < ylen; i++) {
		year = year * 10 + (v->p[i] - '0');
	}
	if (tag == DER_UTC_TIME) {
		year += year < 50 ? 2000 : 1900;
	}
	for (k = 0; k < 5; k++, i += 2) {
		f[k] = (unsigned)(v->p[i] - '0') * 10 + (unsigned)(v->p[i + 1] - '0');
	}
	/* f: month, day, hour, minute, second */
	if (f[0] < 1 || f[0] > 12 || f[1] < 1 || f[1] > 31 || f[2] > 23 ||
	    f[3] > 59 || f[4] > 60) {
		return -1;
	}
	days = days_from_civil(year, f[0], f[1]);
	*t = days < 0 ? 0 : (uint64_t)days * 86400u + f[2] * 3600u +
	    f[3] * 60u + f[4];
	return 0;
}

/* ------------------------------------------------------------------------
 * 6b.3 Certificates
 * ---------------------------------------------------------------------- */

/* The parts of a certificate we look at; spans point into the DER. */
typedef struct {
	der_in tlv;               /* the whole certificate */
	der_in tbs;               /* TBSCertificate encoding: what is signed */
	der_in serial;            /* INTEGER contents */
	der_in issuer, subject;   /* whole Name encodings */
	uint64_t not_before, not_after;
	der_in spki;              /* SubjectPublicKeyInfo contents */
	der_in ext;               /* Extensions contents, or empty */
	const sig_alg *alg;       /* NULL: not one we verify */
	der_in sig;               /* signature bits */
} cert_view;

static int
cert_parse(der_in tlv, cert_view *c)
{
	der_in in = tlv, cert, tbs, v, oid, val;
	int tag;

	memset(c, 0, sizeof *c);
	c->tlv = tlv;
	if (der_expect(&in, DER_SEQUENCE, &cert) < 0 ||
	    der_next(&cert, &tbs, &c->tbs) != DER_SEQUENCE ||
	    der_alg(&cert, &oid) < 0 ||
	    der_expect(&cert, DER_BIT_STRING, &c->sig) < 0 ||
	    c->sig.len < 2 || c->sig.p[0] != 0) {
		return -1;
	}
	c->alg = sig_alg_find(&oid);
	c->sig.p++;
	c->sig.len--;
	if (der_peek(&tbs) == DER_CTX0_CONS) {
		der_next(&tbs, &v, NULL);
	}
	if (der_expect(&tbs, DER_INTEGER, &c->serial) < 0 ||
	    der_expect(&tbs, DER_SEQUENCE, &v) < 0 ||
	    der_next(&tbs, &v, &c->issuer) != DER_SEQUENCE ||
	    der_expect(&tbs, DER_SEQUENCE, &v) < 0 ||
	    der_time(der_next(&v, &val, NULL), &val, &c->not_before) < 0 ||
	    der_time(der_next(&v, &val, NULL), &val, &c->not_after) < 0 ||
	    der_next(&tbs, &v, &c->subject) != DER_SEQUENCE ||
	    der_expect(&tbs, DER_SEQUENCE, &c->spki) < 0) {
		return -1;
	}
	while (tbs.len > 0) {
		tag = der_next(&tbs, &v, NULL);
		if (tag < 0) {
			return -1;
		}
		if (tag == DER_CTX3_CONS &&
		    der_expect(&v, DER_SEQUENCE, &c->ext) < 0) {
			return -1;
		}
	}
	return 0;
}

/* What a certificate is checked for by cert_extensions(). */
#define CERT_ANY  0   /* only read SAN and key identifier */
#define CERT_LEAF 1   /* the signer: may sign mail */
#define CERT_CA   2   /* the signer's issuer: may sign certificates */

/* Extensions under 2.5.29 that we read or may safely ignore; any other
 * critical extension refuses the certificate (RFC 5280 section 4.2). */
#define EXT_SKI  0x0E
#define EXT_KU   0x0F
#define EXT_SAN  0x11
#define EXT_BC   0x13
#define EXT_EKU  0x25
static const unsigned char ext_ignorable[] = {
	0x09, 0x12, 0x1F, 0x20, 0x23, 0x2E  /* subject directory attributes,
	                                       IAN, CRL DP, policies, AKI,
	                                       FreshestCRL: BearSSL's set */
};

/* Key usage: digitalSignature, nonRepudiation; keyCertSign. */
#define KU_SIGN      0xC0
#define KU_CERT_SIGN 0x04

static int
ext_eku_allows_email(der_in v)
{
	der_in seq, oid;
	static const unsigned char any_eku[] = { 0x55, 0x1D, 0x25, 0x00 };

	if (der_expect(&v, DER_SEQUENCE, &seq) < 0) {
		return 0;
	}
	while (der_expect(&seq, DER_OID, &oid) == 0) {
		if (der_is(&oid, oid_kp_email, sizeof oid_kp_email) ||
		    der_is(&oid, any_eku, sizeof any_eku)) {
			return 1;
		}
	}
	return 0;
}

/*
 * Check the extensions of c for its role and return the subjectAltName
 * value and the subjectKeyIdentifier (empty when absent). The signer must
 * be allowed to sign (keyUsage) and to protect mail (extendedKeyUsage,
 * when present); the issuer must be a CA (basicConstraints) allowed to
 * sign certificates. Returns 0 or -1.
 */
static int
cert_extensions(const cert_view *c, int role, der_in *san, der_in *ski)
{
	der_in exts = c->ext, ext, oid, v, crit, seq;
	uint64_t seen = 0, bit;
	int ku = -1, is_ca = 0, eku_ok = 1;

	san->len = 0;
	ski->len = 0;
	while (exts.len > 0) {
		if (der_expect(&exts, DER_SEQUENCE, &ext) < 0 ||
		    der_expect(&ext, DER_OID, &oid) < 0) {
			return -1;
		}
		crit.len = 0;
		if (der_peek(&ext) == DER_BOOLEAN &&
		    der_expect(&ext, DER_BOOLEAN, &crit) < 0) {
			return -1;
		}
		if (der_expect(&ext, DER_OCTET_STR, &v) < 0) {
			return -1;
		}
		if (oid.len != 3 || oid.p[0] != 0x55 || oid.p[1] != 0x1D) {
			if (crit.len == 1 && crit.p[0] != 0 &&
			    !der_is(&oid, oid_aia, sizeof oid_aia)) {
				return -1;
			}
			continue;
		}
		bit = (uint64_t)1 << (oid.p[2] & 0x3F);
		if (seen & bit) {
			return -1;   /* RFC 5280: one instance per extension */
		}
		seen |= bit;
		switch (oid.p[2]) {
		case EXT_SKI:
			if (der_expect(&v, DER_OCTET_STR, ski) < 0) {
				return -1;
			}
			break;
		case EXT_SAN:
			*san = v;
			break;
		case EXT_KU:
			if (der_expect(&v, DER_BIT_STRING, &seq) < 0 || seq.len < 1) {
				return -1;
			}
			ku = seq.len > 1 ? seq.p[1] : 0;
			break;
		case EXT_BC:
			if (der_expect(&v, DER_SEQUENCE, &seq) < 0) {
				return -1;
			}
			is_ca = der_expect(&seq, DER_BOOLEAN, &v) == 0 &&
			    v.len == 1 && v.p[0] != 0;
			break;
		case EXT_EKU:
			eku_ok = ext_eku_allows_email(v);
			break;
		default:
			if (crit.len == 1 && crit.p[0] != 0 &&
			    memchr(ext_ignorable, oid.p[2], sizeof ext_ignorable) == NULL) {
				return -1;
			}
			break;
		}
	}
	if (role == CERT_LEAF) {
		return (ku < 0 || (ku & KU_SIGN)) && eku_ok ? 0 : -1;
	}
	if (role == CERT_CA) {
		return is_ca && (ku < 0 || (ku & KU_CERT_SIGN)) ? 0 : -1;
	}
	return 0;
}

/* Is c signed by key? SHA-1 certificate signatures are refused (chosen-
 * prefix collisions); the CMS signature may still use SHA-1. */
static int
cert_signed_by(const cert_view *c, const br_x509_pkey *key)
{
	const auth_hash_alg *ha;
	auth_hasher h;
	unsigned char hash[64];
	size_t n;

	if (c->alg == NULL || c->alg->key_type != key->key_type ||
	    c->alg->hash_id == br_sha1_ID ||
	    (ha = hash_alg_find(NULL, c->alg->hash_id)) == NULL) {
		return 0;
	}
	ah_init(&h, ha->cls);
	ah_put(&h, c->tbs.p, c->tbs.len);
	n = ah_out(&h, hash);
	return auth_verify(key, ha->id, hash, n, c->sig.p, c->sig.len);
}

/* The certificate of the set whose subject is dn: 1 with it in *c, or 0. */
static int
cert_find_subject(const der_in *certs, const der_in *dn, cert_view *c)
{
	der_in set = *certs, v, tlv;

	while (set.len > 0) {
		if (der_next(&set, &v, &tlv) < 0) {
			return 0;
		}
		if (cert_parse(tlv, c) == 0 && der_equal(&c->subject, dn)) {
			return 1;
		}
	}
	return 0;
}

/* Feed the issuer of the signer, and what issued it in turn as far as
 * the message's certificates go, to BearSSL's X.509 engine; on success
 * the issuer's key (now trusted) is in *key, valid while xc lives. */
static int
chain_to_anchor(br_x509_minimal_context *xc, const der_in *certs,
	cert_view *cur, const acme_smime_pending *pending,
	const br_x509_pkey **key)
{
	const br_x509_class **vt = &xc->vtable;
	cert_view next;
	unsigned depth, usages;

	br_x509_minimal_init(xc, &br_sha256_vtable, pending->smime_anchors,
	    pending->smime_anchor_count);
	br_x509_minimal_set_hash(xc, br_sha256_ID, &br_sha256_vtable);
	br_x509_minimal_set_hash(xc, br_sha384_ID, &br_sha384_vtable);
	br_x509_minimal_set_hash(xc, br_sha512_ID, &br_sha512_vtable);
	br_x509_minimal_set_rsa(xc, br_rsa_pkcs1_vrfy_get_default());
	br_x509_minimal_set_ecdsa(xc, br_ec_get_default(),
	    br_ecdsa_vrfy_asn1_get_default());
	br_x509_minimal_set_time(xc, (uint32_t)(X509_DAYS_AT_UNIX_EPOCH +
	    pending->now / 86400u), (uint32_t)(pending->now % 86400u));
	(*vt)->start_chain(vt, NULL);
	for (depth = 1; ; depth++) {
		(*vt)->start_cert(vt, (uint32_t)cur->tlv.len);
		(*vt)->append(vt, cur->tlv.p, cur->tlv.len);
		(*vt)->end_cert(vt);
		if (depth == SMIME_MAX_CHAIN || der_equal(&cur->issuer, &cur->subject) ||
		    !cert_find_subject(certs, &cur->issuer, &next)) {
			break;
		}
		*cur = next;
	}
	if ((*vt)->end_chain(vt) != 0) {
		return -1;
	}
	*key = (*vt)->get_pkey(vt, &usages);
	return *key != NULL ? 0 : -1;
}

/*
 * Is the signer certificate valid now and issued, through the message's
 * certificates, by a configured anchor? The issuer and everything above
 * it go through BearSSL's X.509 engine. The signer itself is checked
 * here: the engine refuses the critical extendedKeyUsage S/MIME
 * certificates often carry, and its key usage rules are TLS's. A signer
 * issued directly by an anchor (or self-signed and configured as one) is
 * checked against the anchor's key.
 */
static AUTH_NOINLINE int
smime_chain(const der_in *certs, const cert_view *leaf,
	const acme_smime_pending *pending)
{
	br_x509_minimal_context xc;
	const br_x509_trust_anchor *ta;
	const br_x509_pkey *key;
	der_in san, ski;
	cert_view issuer;
	size_t i;

	if (pending->now < leaf->not_before || pending->now > leaf->not_after) {
		return ACME_SMIME_MAIL_SMIME_UNTRUSTED;
	}
	if (!der_equal(&leaf->issuer, &leaf->subject) &&
	    cert_find_subject(certs, &leaf->issuer, &issuer) &&
	    cert_extensions(&issuer, CERT_CA, &san, &ski) == 0 &&
	    chain_to_anchor(&xc, certs, &issuer, pending, &key) == 0 &&
	    cert_signed_by(leaf, key)) {
		return ACME_SMIME_MAIL_OK;
	}
	for (i = 0; i < pending->smime_anchor_count; i++) {
		ta = &pending->smime_anchors[i];
		if ((ta->flags & BR_X509_TA_CA) && ta->dn.len == leaf->issuer.len &&
		    memcmp(ta->dn.data, leaf->issuer.p, ta->dn.len) == 0 &&
		    cert_signed_by(leaf, &ta->pkey)) {
			return ACME_SMIME_MAIL_OK;
		}
	}
	return ACME_SMIME_MAIL_SMIME_UNTRUSTED;
}

/* RFC 8823 section 3.1: an rfc822Name of the signer is the From address
 * (local part exact, domain in any case). */
static int
san_names_sender(der_in san, const char *from)
{
	char addr[ACME_SMIME_MAX_ADDR + 1];
	der_in names, v;
	int tag, seen = 0;

	if (der_expect(&san, DER_SEQUENCE, &names) < 0) {
		return ACME_SMIME_MAIL_SMIME_NO_SAN;
	}
	while (names.len > 0) {
		tag = der_next(&names, &v, NULL);
		if (tag < 0) {
			break;
		}
		if (tag != DER_GN_EMAIL) {
			continue;
		}
		seen = 1;
		if (v.len < sizeof addr && memchr(v.p, 0, v.len) == NULL) {
			memcpy(addr, v.p, v.len);
			addr[v.len] = '\0';
			if (addr_equal(addr, from)) {
				return ACME_SMIME_MAIL_OK;
			}
		}
	}
	return seen ? ACME_SMIME_MAIL_SMIME_SIGNER_MISMATCH :
	    ACME_SMIME_MAIL_SMIME_NO_SAN;
}

/* ------------------------------------------------------------------------
 * 6b.4 S/MIME: MIME structure (RFC 8551 section 3.5, RFC 1847)
 * ---------------------------------------------------------------------- */

/* The Content-Type parts we need; spans point into the unfolded value. */
typedef struct {
	text_span type;          /* "type/subtype" as written */
	text_span boundary, protocol, smime_type;
} mime_type;

/* RFC 2045 token characters. */
static int
mime_token_char(int c)
{
	return is_vchar(c) && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

static void
mime_token(addr_lexer *lx, text_span *t, int slash)
{
	size_t start = lx->pos;

	while (lx->pos < lx->len && (mime_token_char((unsigned char)lx->s[lx->pos]) ||
	    (slash && lx->s[lx->pos] == '/'))) {
		lx->pos++;
	}
	t->p = lx->s + start;
	t->len = lx->pos - start;
}

/* An unfolded Content-Type value; quoted parameter values lose their
 * quotes. RFC 2231 parameter continuations are not decoded: S/MIME's
 * parameters never need them. Returns 0 or -1. */
static int
mime_type_parse(const char *s, size_t len, mime_type *mt)
{
	addr_lexer lx;
	text_span name, value, *slot;
	size_t n;

	memset(mt, 0, sizeof *mt);
	lx.s = s;
	lx.len = len;
	lx.pos = 0;
	if (addr_skip_cfws(&lx) < 0) {
		return -1;
	}
	mime_token(&lx, &mt->type, 1);
	if (mt->type.len == 0) {
		return -1;
	}
	for (;;) {
		if (addr_skip_cfws(&lx) < 0) {
			return -1;
		}
		if (lx.pos == len) {
			return 0;
		}
		if (s[lx.pos++] != ';' || addr_skip_cfws(&lx) < 0) {
			return -1;
		}
		if (lx.pos == len) {
			return 0;      /* a trailing ';' is common and harmless */
		}
		mime_token(&lx, &name, 0);
		if (name.len == 0 || addr_skip_cfws(&lx) < 0 || lx.pos == len ||
		    s[lx.pos++] != '=' || addr_skip_cfws(&lx) < 0 || lx.pos == len) {
			return -1;
		}
		if (s[lx.pos] == '"') {
			n = addr_delimited_len(&lx, '"');
			if (n == 0) {
				return -1;
			}
			value.p = s + lx.pos + 1;
			value.len = n - 2;
			lx.pos += n;
		} else {
			mime_token(&lx, &value, 0);
			if (value.len == 0) {
				return -1;
			}
		}
		slot = ascii_caseeq(name.p, name.len, "boundary") ? &mt->boundary :
		    ascii_caseeq(name.p, name.len, "protocol") ? &mt->protocol :
		    ascii_caseeq(name.p, name.len, "smime-type") ? &mt->smime_type :
		    NULL;
		if (slot != NULL) {
			if (slot->p != NULL) {
				return -1;
			}
			*slot = value;
		}
	}
}

/* The Content-Type of the entity s, parsed from buf (which must outlive
 * mt): 1, 0 when it has none, -1 when it is repeated or broken. */
static int
mime_entity_type(const char *s, size_t len, char *buf, size_t size,
	mime_type *mt)
{
	hfield f;
	int r = hfield_find(s, len, "Content-Type", &f), n;

	if (r <= 0) {
		return r;
	}
	n = hfield_unfold(&f, buf, size);
	return n < 0 || mime_type_parse(buf, (size_t)n, mt) < 0 ? -1 : 1;
}

static int
span_caseeq(const text_span *t, const char *lit)
{
	return t->p != NULL && ascii_caseeq(t->p, t->len, lit);
}

/* application/pkcs7-signature (mime 0) or application/pkcs7-mime (mime
 * 1), or their x- forms, which RFC 8551 section 3.8 still accepts. */
static int
is_pkcs7_type(const text_span *t, int mime)
{
	static const char *const names[2][2] = {
		{ "application/pkcs7-signature", "application/x-pkcs7-signature" },
		{ "application/pkcs7-mime", "application/x-pkcs7-mime" }
	};

	return span_caseeq(t, names[mime][0]) || span_caseeq(t, names[mime][1]);
}

/* Does the entity s declare Content-Transfer-Encoding: base64? */
static int
mime_is_base64(const char *s, size_t len)
{
	hfield f;

	return hfield_find(s, len, "Content-Transfer-Encoding", &f) == 1 &&
	    hfield_value_is(&f, "base64");
}

/*
 * Find the next delimiter line "--boundary" (transport padding allowed
 * after it) at or after pos, which starts a line: 1 for a delimiter, 2
 * for the close delimiter "--boundary--", 0 when there is none. *line is
 * where it starts, *after where the next line starts.
 */
static int
mime_next_delim(const char *s, size_t len, size_t pos, const char *b,
	size_t blen, size_t *line, size_t *after)
{
	size_t e, k, q;
	int close;

	while (pos < len) {
		for (e = pos; e < len && s[e] != '\n'; e++) {
			continue;
		}
		k = (e > pos && s[e - 1] == '\r') ? e - 1 : e;
		if (k - pos >= 2 + blen && s[pos] == '-' && s[pos + 1] == '-' &&
		    memcmp(s + pos + 2, b, blen) == 0) {
			q = pos + 2 + blen;
			close = k - q >= 2 && s[q] == '-' && s[q + 1] == '-';
			for (q += close ? 2 : 0; q < k && is_wsp((unsigned char)s[q]); q++) {
				continue;
			}
			if (q == k) {
				*line = pos;
				*after = e < len ? e + 1 : len;
				return close ? 2 : 1;
			}
		}
		pos = e + 1;
	}
	return 0;
}

/* The two parts of a multipart/signed body (RFC 1847): exactly two, each
 * ending before the line break that precedes the next delimiter. */
static int
mime_split_signed(const char *s, size_t len, const char *b, size_t blen,
	size_t start[2], size_t end[2])
{
	size_t line = 0, after = 0;
	int k, r;

	if (mime_next_delim(s, len, 0, b, blen, &line, &after) != 1) {
		return -1;
	}
	for (k = 0; k < 2; k++) {
		start[k] = after;
		r = mime_next_delim(s, len, after, b, blen, &line, &after);
		if (r != (k == 0 ? 1 : 2)) {
			return -1;
		}
		if (line > start[k] && s[line - 1] == '\n') {
			line--;
			if (line > start[k] && s[line - 1] == '\r') {
				line--;
			}
		}
		end[k] = line;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * 6b.5 S/MIME: CMS SignedData (RFC 5652) and the checks
 * ---------------------------------------------------------------------- */

/* What the authenticity checks share. */
typedef struct {
	const char *mail;
	size_t mail_len;
	size_t body;                        /* offset of the body */
	const mail_header *outer;           /* the fields header_scan() found */
	const acme_smime_pending *pending;
	field_span prot[3];                 /* protected From, To, Subject */
	int hp_differs;                     /* some protected value differs */
} auth_state;

/* The signed message located in the mail. */
typedef struct {
	der_in der;                /* the CMS, decoded into smime_work */
	der_in certs;              /* contents of certificates [0] */
	der_in signers;            /* contents of signerInfos */
	const char *content;       /* the signed MIME entity */
	size_t content_len;
	int detached;              /* multipart/signed: hash with CR LF */
} smime_msg;

typedef struct {
	int by_ski;
	der_in issuer, serial;     /* issuerAndSerialNumber, or */
	der_in ski;                /* subjectKeyIdentifier */
	const auth_hash_alg *hash; /* digestAlgorithm */
	der_in attrs;              /* the signedAttrs encoding (p NULL: none) */
	der_in md;                 /* message-digest attribute */
	der_in headers;            /* RFC 7508 attribute values (p NULL: none) */
	const sig_alg *alg;
	der_in sig;
} cms_signer;

/* The SignedData wrapper: ContentInfo, version, digest algorithms,
 * encapsulated content (id-data, present or not), certificates, CRLs
 * (skipped), signer infos. */
static int
cms_parse(smime_msg *m)
{
	der_in in = m->der, ci, sd, v, encap, oid, content;

	content.p = NULL;
	content.len = 0;
	if (der_expect(&in, DER_SEQUENCE, &ci) < 0 || in.len != 0 ||
	    der_expect(&ci, DER_OID, &oid) < 0 ||
	    !der_is(&oid, oid_pkcs7_signed, sizeof oid_pkcs7_signed) ||
	    der_expect(&ci, DER_CTX0_CONS, &v) < 0 ||
	    der_expect(&v, DER_SEQUENCE, &sd) < 0 ||
	    der_expect(&sd, DER_INTEGER, &v) < 0 ||
	    der_expect(&sd, DER_SET, &v) < 0 ||
	    der_expect(&sd, DER_SEQUENCE, &encap) < 0 ||
	    der_expect(&encap, DER_OID, &oid) < 0 ||
	    !der_is(&oid, oid_pkcs7_data, sizeof oid_pkcs7_data)) {
		return -1;
	}
	if (encap.len > 0 && (der_expect(&encap, DER_CTX0_CONS, &v) < 0 ||
	    der_expect(&v, DER_OCTET_STR, &content) < 0)) {
		return -1;
	}
	m->certs.len = 0;
	if (der_peek(&sd) == DER_CTX0_CONS) {
		der_next(&sd, &m->certs, NULL);
	}
	if (der_peek(&sd) == DER_CTX1_CONS) {
		der_next(&sd, &v, NULL);
	}
	if (der_expect(&sd, DER_SET, &m->signers) < 0) {
		return -1;
	}
	if (!m->detached) {
		if (content.p == NULL) {
			return -1;
		}
		m->content = (const char *)content.p;
		m->content_len = content.len;
	}
	return 0;
}

/* Signed attributes: content-type (id-data) and message-digest, once
 * each, as RFC 5652 section 5.3 requires; the RFC 7508 secure headers
 * when present. */
static int
cms_signed_attrs(der_in attrs, cms_signer *si)
{
	der_in a, type, vals, v;
	int seen_type = 0;

	while (attrs.len > 0) {
		if (der_expect(&attrs, DER_SEQUENCE, &a) < 0 ||
		    der_expect(&a, DER_OID, &type) < 0 ||
		    der_expect(&a, DER_SET, &vals) < 0) {
			return -1;
		}
		if (der_is(&type, oid_attr_content_type, sizeof oid_attr_content_type)) {
			if (seen_type++ || der_expect(&vals, DER_OID, &v) < 0 ||
			    vals.len != 0 ||
			    !der_is(&v, oid_pkcs7_data, sizeof oid_pkcs7_data)) {
				return -1;
			}
		} else if (der_is(&type, oid_attr_message_digest,
		    sizeof oid_attr_message_digest)) {
			if (si->md.p != NULL ||
			    der_expect(&vals, DER_OCTET_STR, &si->md) < 0 ||
			    vals.len != 0) {
				return -1;
			}
		} else if (der_is(&type, oid_attr_secure_headers,
		    sizeof oid_attr_secure_headers)) {
			if (si->headers.p != NULL) {
				return -1;
			}
			si->headers = vals;
		}
	}
	return seen_type && si->md.p != NULL ? 0 : -1;
}

/* The next SignerInfo: OK, SMIME_MALFORMED or SMIME_UNSUPPORTED. */
static int
cms_next_signer(der_in *signers, cms_signer *si)
{
	der_in s, v, oid, sid;
	int tag;

	memset(si, 0, sizeof *si);
	if (der_expect(signers, DER_SEQUENCE, &s) < 0 ||
	    der_expect(&s, DER_INTEGER, &v) < 0) {
		return ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	tag = der_next(&s, &sid, NULL);
	if (tag == DER_CTX0_PRIM) {
		si->by_ski = 1;
		si->ski = sid;
	} else if (tag != DER_SEQUENCE ||
	    der_next(&sid, &v, &si->issuer) != DER_SEQUENCE ||
	    der_expect(&sid, DER_INTEGER, &si->serial) < 0) {
		return ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	if (der_alg(&s, &oid) < 0) {
		return ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	si->hash = hash_alg_find(&oid, 0);
	if (der_peek(&s) == DER_CTX0_CONS &&
	    (der_next(&s, &v, &si->attrs) < 0 || cms_signed_attrs(v, si) < 0)) {
		return ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	if (der_alg(&s, &oid) < 0 ||
	    der_expect(&s, DER_OCTET_STR, &si->sig) < 0) {
		return ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	si->alg = sig_alg_find(&oid);
	if (si->hash == NULL || si->alg == NULL ||
	    (si->alg->hash_id != 0 && si->alg->hash_id != si->hash->id)) {
		return ACME_SMIME_MAIL_SMIME_UNSUPPORTED;
	}
	return ACME_SMIME_MAIL_OK;
}

/* The signer's certificate among the message's: 1 with it in *c, or 0. */
static int
cms_signer_cert(const smime_msg *m, const cms_signer *si, cert_view *c)
{
	der_in set = m->certs, v, tlv, san, ski;

	while (set.len > 0) {
		if (der_next(&set, &v, &tlv) < 0) {
			return 0;
		}
		if (cert_parse(tlv, c) < 0) {
			continue;
		}
		if (si->by_ski ? cert_extensions(c, CERT_ANY, &san, &ski) == 0 &&
		    ski.len > 0 && der_equal(&ski, &si->ski) :
		    der_equal(&c->issuer, &si->issuer) &&
		    der_equal(&c->serial, &si->serial)) {
			return 1;
		}
	}
	return 0;
}

/* Which protected field a name is: 0 From, 1 To, 2 Subject, or -1. */
static int
protected_index(const char *name, size_t len)
{
	static const char *const names[3] = { "From", "To", "Subject" };
	int k;

	for (k = 0; k < 3; k++) {
		if (ascii_caseeq(name, len, names[k])) {
			return k;
		}
	}
	return -1;
}

/* RFC 7508 SecureHeaderFields: SET { canonAlgorithm ENUMERATED,
 * SEQUENCE OF { name VisibleString, value UTF8String, status INTEGER
 * DEFAULT duplicated } }. A "deleted" From, To or Subject cannot match
 * the outer header. */
static int
hp_from_7508(der_in vals, field_span prot[3])
{
	der_in shf, v, fields, hf, name, value, status;
	int k;

	if (der_expect(&vals, DER_SET, &shf) < 0 || vals.len != 0 ||
	    der_expect(&shf, DER_ENUMERATED, &v) < 0 ||
	    der_expect(&shf, DER_SEQUENCE, &fields) < 0) {
		return ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	while (fields.len > 0) {
		status.len = 0;
		if (der_expect(&fields, DER_SEQUENCE, &hf) < 0 ||
		    der_expect(&hf, DER_VISIBLE, &name) < 0 ||
		    der_expect(&hf, DER_UTF8, &value) < 0 ||
		    (hf.len > 0 && der_expect(&hf, DER_INTEGER, &status) < 0)) {
			return ACME_SMIME_MAIL_SMIME_MALFORMED;
		}
		k = protected_index((const char *)name.p, name.len);
		if (k < 0) {
			continue;
		}
		if (prot[k].raw != NULL || (status.len == 1 && status.p[0] == 1)) {
			return ACME_SMIME_MAIL_SMIME_HEADER_MISMATCH;
		}
		prot[k].raw = (const char *)value.p;
		prot[k].raw_len = value.len;
	}
	return ACME_SMIME_MAIL_OK;
}

/* Header protection by a signed message/rfc822 copy: the inner message's
 * From, To and Subject. */
static int
hp_from_inner_message(const smime_msg *m, field_span prot[3])
{
	char buf[ACME_SMIME_MAX_HEADER + 1];
	mime_type mt;
	hfield_iter it;
	hfield f;
	long body;
	int r, k;

	if (mime_entity_type(m->content, m->content_len, buf, sizeof buf, &mt) != 1 ||
	    !span_caseeq(&mt.type, "message/rfc822") ||
	    (body = hfield_body(m->content, m->content_len)) < 0) {
		return ACME_SMIME_MAIL_SMIME_NO_HEADER_PROTECTION;
	}
	hfield_iter_init(&it, m->content + body, m->content_len - (size_t)body);
	while ((r = hfield_next(&it, &f)) > 0) {
		k = protected_index(f.name, f.name_len);
		if (k < 0) {
			continue;
		}
		if (prot[k].raw != NULL) {
			return ACME_SMIME_MAIL_SMIME_HEADER_MISMATCH;
		}
		prot[k].raw = f.value;
		prot[k].raw_len = f.value_len;
	}
	return r < 0 ? ACME_SMIME_MAIL_SMIME_MALFORMED : ACME_SMIME_MAIL_OK;
}

/*
 * Header protection (RFC 8823 section 3.1): the signed From, To and
 * Subject, from the RFC 7508 attribute or an inner message/rfc822. Strict
 * mode wants all three, equal to the outer fields; the relaxed mode takes
 * whichever are protected, in place of the outer ones, and notes when
 * they differ.
 */
static int
smime_header_protection(auth_state *st, const smime_msg *m,
	const cms_signer *si)
{
	static const int outer_field[3] = { FIELD_FROM, FIELD_TO, FIELD_SUBJECT };
	int relaxed = (st->pending->policy &
	    ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION) != 0;
	field_span prot[3];
	const field_span *o;
	int r, k, any = 0;
	size_t i;

	memset(prot, 0, sizeof prot);
	r = si->headers.p != NULL ? hp_from_7508(si->headers, prot) :
	    hp_from_inner_message(m, prot);
	if (r != ACME_SMIME_MAIL_OK) {
		return r;
	}
	for (k = 0; k < 3; k++) {
		o = &st->outer->field[outer_field[k]];
		if (prot[k].raw == NULL) {
			if (!relaxed) {
				return ACME_SMIME_MAIL_SMIME_NO_HEADER_PROTECTION;
			}
			continue;
		}
		any = 1;
		if (prot[k].raw_len > ACME_SMIME_MAX_HEADER) {
			return ACME_SMIME_MAIL_HEADER_TOO_LONG;
		}
		for (i = 0; i < prot[k].raw_len; i++) {
			if (prot[k].raw[i] == '\0') {
				return ACME_SMIME_MAIL_SMIME_HEADER_MISMATCH;
			}
		}
		if (o->raw == NULL ||
		    !value_equal_relaxed(prot[k].raw, prot[k].raw_len, o->raw, o->raw_len)) {
			if (!relaxed) {
				return ACME_SMIME_MAIL_SMIME_HEADER_MISMATCH;
			}
			st->hp_differs = 1;
		}
	}
	if (!any) {
		return ACME_SMIME_MAIL_SMIME_NO_HEADER_PROTECTION;
	}
	memcpy(st->prot, prot, sizeof prot);
	return ACME_SMIME_MAIL_OK;
}

/*
 * One signer, in the order that names the most telling failure: the
 * content digest, the signer's certificate and key, the signature over
 * the signed attributes, the chain to an anchor, the sender's address in
 * the certificate, header protection.
 */
static int
smime_check_signer(auth_state *st, const smime_msg *m, const cms_signer *si)
{
	unsigned char digest[64], hash[64];
	auth_hasher h;
	cert_view leaf;
	br_x509_pkey key;
	der_in san, ski;
	size_t n;
	int r;

	ah_init(&h, si->hash->cls);
	if (m->detached) {
		ah_put_crlf(&h, m->content, m->content_len);
	} else {
		ah_put(&h, m->content, m->content_len);
	}
	n = ah_out(&h, digest);
	memcpy(hash, digest, n);
	if (si->attrs.p != NULL) {
		if (!der_is(&si->md, digest, n)) {
			return ACME_SMIME_MAIL_SMIME_DIGEST_MISMATCH;
		}
		/* The signature covers the attributes with a SET tag in
		 * place of their [0] (RFC 5652 section 5.4). */
		ah_init(&h, si->hash->cls);
		ah_putc(&h, DER_SET);
		ah_put(&h, si->attrs.p + 1, si->attrs.len - 1);
		ah_out(&h, hash);
	}
	if (!cms_signer_cert(m, si, &leaf) ||
	    cert_extensions(&leaf, CERT_LEAF, &san, &ski) < 0) {
		return ACME_SMIME_MAIL_SMIME_UNTRUSTED;
	}
	if (spki_parse(leaf.spki, &key) < 0 || key.key_type != si->alg->key_type) {
		return ACME_SMIME_MAIL_SMIME_UNSUPPORTED;
	}
	if (!auth_verify(&key, si->hash->id, hash, n, si->sig.p, si->sig.len)) {
		return ACME_SMIME_MAIL_SMIME_BAD_SIGNATURE;
	}
	r = smime_chain(&m->certs, &leaf, st->pending);
	if (r == ACME_SMIME_MAIL_OK) {
		r = san_names_sender(san, st->pending->from);
	}
	if (r == ACME_SMIME_MAIL_OK) {
		r = smime_header_protection(st, m, si);
	}
	return r;
}

/* Decode the base64 body of an entity into smime_work. */
static int
smime_decode(auth_state *st, const char *s, size_t len, der_in *der)
{
	const acme_smime_pending *p = st->pending;
	int n;

	if (p->smime_work == NULL) {
		return ACME_SMIME_MAIL_SMIME_LIMIT;
	}
	n = b64_decode_text(p->smime_work, p->smime_work_size, s, len);
	if (n < 0) {
		return n == ACME_SMIME_ERR_BUFFER ? ACME_SMIME_MAIL_SMIME_LIMIT :
		    ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	der->p = p->smime_work;
	der->len = (size_t)n;
	return ACME_SMIME_MAIL_OK;
}

/*
 * Find the S/MIME structure: multipart/signed with a pkcs7-signature
 * second part (the first part is the signed entity), or pkcs7-mime
 * signed-data (the entity is inside the CMS). Anything else, PGP/MIME and
 * encrypted mail included, carries no S/MIME signature: AUTH_ABSENT.
 */
static int
smime_locate(auth_state *st, smime_msg *m)
{
	char buf[ACME_SMIME_MAX_HEADER + 1], bnd[71];
	const char *body = st->mail + st->body;
	size_t body_len = st->mail_len - st->body, start[2], end[2], blen;
	mime_type mt;
	long sig_body;
	int r;

	memset(m, 0, sizeof *m);
	r = mime_entity_type(st->mail, st->mail_len, buf, sizeof buf, &mt);
	if (r < 0) {
		return ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	if (r == 0) {
		return AUTH_ABSENT;
	}
	if (is_pkcs7_type(&mt.type, 1)) {
		if (mt.smime_type.p != NULL &&
		    !span_caseeq(&mt.smime_type, "signed-data")) {
			return AUTH_ABSENT;
		}
		if (!mime_is_base64(st->mail, st->mail_len)) {
			return ACME_SMIME_MAIL_SMIME_MALFORMED;
		}
		return smime_decode(st, body, body_len, &m->der);
	}
	if (!span_caseeq(&mt.type, "multipart/signed") ||
	    !is_pkcs7_type(&mt.protocol, 0)) {
		return AUTH_ABSENT;
	}
	/* The boundary lives in buf, which the part's type reuses. */
	blen = mt.boundary.len;
	if (mt.boundary.p == NULL || blen == 0 || blen >= sizeof bnd) {
		return ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	memcpy(bnd, mt.boundary.p, blen);
	if (mime_split_signed(body, body_len, bnd, blen, start, end) < 0 ||
	    mime_entity_type(body + start[1], end[1] - start[1], buf, sizeof buf,
	    &mt) != 1 || !is_pkcs7_type(&mt.type, 0) ||
	    !mime_is_base64(body + start[1], end[1] - start[1])) {
		return ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	sig_body = hfield_body(body + start[1], end[1] - start[1]);
	if (sig_body < 0) {
		return ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	m->detached = 1;
	m->content = body + start[0];
	m->content_len = end[0] - start[0];
	return smime_decode(st, body + start[1] + sig_body,
	    end[1] - start[1] - (size_t)sig_body, &m->der);
}

/* The S/MIME proof: OK (protected values in st->prot), AUTH_ABSENT, or
 * the reason of the signer that came closest to passing. */
static AUTH_NOINLINE int
smime_check(auth_state *st)
{
	smime_msg m;
	cms_signer si;
	unsigned tries;
	int r, best = AUTH_ABSENT;

	r = smime_locate(st, &m);
	if (r != ACME_SMIME_MAIL_OK) {
		return r;
	}
	/* protocol.md 16.3: no certificate is judged without the time. */
	if (st->pending->now == 0) {
		return ACME_SMIME_MAIL_NO_TIME;
	}
	if (cms_parse(&m) < 0) {
		return ACME_SMIME_MAIL_SMIME_MALFORMED;
	}
	for (tries = 0; tries < AUTH_MAX_TRIES && m.signers.len > 0; tries++) {
		r = cms_next_signer(&m.signers, &si);
		if (r == ACME_SMIME_MAIL_OK) {
			r = smime_check_signer(st, &m, &si);
		}
		if (r == ACME_SMIME_MAIL_OK) {
			return r;
		}
		if (r > best) {
			best = r;
		}
		if (r == ACME_SMIME_MAIL_SMIME_MALFORMED) {
			break;
		}
	}
	return best == AUTH_ABSENT ? ACME_SMIME_MAIL_SMIME_MALFORMED : best;
}

/* ------------------------------------------------------------------------
 * 6b.6 DKIM (RFC 6376, rsa-sha256 only)
 *
 * ed25519-sha256 (RFC 8463) is not supported: BearSSL has no Ed25519. A
 * mail signed both ways passes on its RSA signature. l= is refused: it
 * lets anyone append to the signed body. rsa-sha1 is refused (RFC 8301).
 * ---------------------------------------------------------------------- */

typedef struct {
	hfield field;                   /* the DKIM-Signature field */
	text_span b, bh, d, s, h;
	size_t hole_start, hole_end;    /* the b= value, offsets in value */
	int relaxed_header, relaxed_body;
	int has_expiry;
	uint64_t expiry;                /* x= */
} dkim_sig;

/* An RFC 6376 tag-list: "name=value; ..." with folding white space. */
typedef struct {
	const char *s;
	size_t len;
	size_t pos;
	size_t raw_value, raw_end;      /* the last value, white space included */
} tag_iter;

static void
tag_iter_init(tag_iter *it, const char *s, size_t len)
{
	it->s = s;
	it->len = len;
	it->pos = 0;
}

/* The next tag: 1, 0 at the end, -1 when the list is malformed. */
static int
tag_next(tag_iter *it, text_span *name, text_span *value)
{
	size_t p = it->pos, e;

	while (p < it->len && is_space((unsigned char)it->s[p])) {
		p++;
	}
	if (p >= it->len) {
		return 0;
	}
	name->p = it->s + p;
	while (p < it->len && is_tag_char((unsigned char)it->s[p])) {
		p++;
	}
	name->len = (size_t)(it->s + p - name->p);
	while (p < it->len && is_space((unsigned char)it->s[p])) {
		p++;
	}
	if (name->len == 0 || p >= it->len || it->s[p] != '=') {
		return -1;
	}
	it->raw_value = ++p;
	for (e = p; e < it->len && it->s[e] != ';'; e++) {
		continue;
	}
	it->raw_end = e;
	it->pos = e < it->len ? e + 1 : e;
	while (p < e && is_space((unsigned char)it->s[p])) {
		p++;
	}
	while (e > p && is_space((unsigned char)it->s[e - 1])) {
		e--;
	}
	value->p = it->s + p;
	value->len = e - p;
	return 1;
}

static int
span_is(const text_span *t, const char *lit)
{
	return t->len == strlen(lit) && memcmp(t->p, lit, t->len) == 0;
}

/* The next name of a colon-separated list (h= of a signature, h= of a key
 * record), white space around it removed: 1, or 0 at the end. */
static int
list_next(const text_span *list, size_t *pos, text_span *item)
{
	size_t p = *pos, e;

	while (p < list->len) {
		for (e = p; e < list->len && list->p[e] != ':'; e++) {
			continue;
		}
		*pos = e + 1;
		while (p < e && is_space((unsigned char)list->p[p])) {
			p++;
		}
		while (e > p && is_space((unsigned char)list->p[e - 1])) {
			e--;
		}
		if (e > p) {
			item->p = list->p + p;
			item->len = e - p;
			return 1;
		}
		p = *pos;
	}
	return 0;
}

static size_t
list_count(const text_span *list)
{
	text_span item;
	size_t pos = 0, n = 0;

	while (list_next(list, &pos, &item)) {
		n++;
	}
	return n;
}

static int
list_has(const text_span *list, const char *name)
{
	text_span item;
	size_t pos = 0;

	while (list_next(list, &pos, &item)) {
		if (ascii_caseeq(item.p, item.len, name)) {
			return 1;
		}
	}
	return 0;
}

/* A decimal of at most 12 digits (t=, x=). */
static int
span_decimal(const text_span *t, uint64_t *v)
{
	size_t i;

	*v = 0;
	if (t->len == 0 || t->len > 12) {
		return -1;
	}
	for (i = 0; i < t->len; i++) {
		if (t->p[i] < '0' || t->p[i] > '9') {
			return -1;
		}
		*v = *v * 10 + (uint64_t)(t->p[i] - '0');
	}
	return 0;
}

/* c= "header[/body]", each "simple" or "relaxed" (any case); absent:
 * simple/simple, and a missing body part is simple. */
static int
dkim_canon(const text_span *c, dkim_sig *sig)
{
	text_span part;
	size_t slash = 0;
	int k, *out[2];

	out[0] = &sig->relaxed_header;
	out[1] = &sig->relaxed_body;
	if (c->p == NULL) {
		return 0;
	}
	while (slash < c->len && c->p[slash] != '/') {
		slash++;
	}
	part.p = c->p;
	part.len = slash;
	for (k = 0; ; k++) {
		if (ascii_caseeq(part.p, part.len, "relaxed")) {
			*out[k] = 1;
		} else if (!ascii_caseeq(part.p, part.len, "simple")) {
			return -1;
		}
		if (k == 1 || slash == c->len) {
			return 0;
		}
		part.p = c->p + slash + 1;
		part.len = c->len - slash - 1;
	}
}

enum {
	DKIM_TAG_V, DKIM_TAG_A, DKIM_TAG_B, DKIM_TAG_BH, DKIM_TAG_C, DKIM_TAG_D,
	DKIM_TAG_H, DKIM_TAG_L, DKIM_TAG_S, DKIM_TAG_T, DKIM_TAG_X, DKIM_TAG_I,
	DKIM_TAG_Q, DKIM_TAG_Z, DKIM_TAG_COUNT
};

/* Parse a DKIM-Signature; a repeated tag invalidates it (RFC 6376
 * section 3.2), unknown tags are ignored. */
static int
dkim_parse(const hfield *f, dkim_sig *sig)
{
	static const char *const names[DKIM_TAG_COUNT] = {
		"v", "a", "b", "bh", "c", "d", "h", "l", "s", "t", "x", "i", "q", "z"
	};
	static const unsigned required = (1u << DKIM_TAG_V) | (1u << DKIM_TAG_A) |
	    (1u << DKIM_TAG_B) | (1u << DKIM_TAG_BH) | (1u << DKIM_TAG_D) |
	    (1u << DKIM_TAG_H) | (1u << DKIM_TAG_S);
	text_span val[DKIM_TAG_COUNT], name, v;
	tag_iter it;
	unsigned seen = 0, k;
	uint64_t t = 0;
	int r;

	memset(sig, 0, sizeof *sig);
	memset(val, 0, sizeof val);
	sig->field = *f;
	tag_iter_init(&it, f->value, f->value_len);
	while ((r = tag_next(&it, &name, &v)) > 0) {
		for (k = 0; k < DKIM_TAG_COUNT && !span_is(&name, names[k]); k++) {
			continue;
		}
		if (k == DKIM_TAG_COUNT) {
			continue;
		}
		if (seen & (1u << k)) {
			return ACME_SMIME_MAIL_DKIM_MALFORMED;
		}
		seen |= 1u << k;
		val[k] = v;
		if (k == DKIM_TAG_B) {
			sig->hole_start = it.raw_value;
			sig->hole_end = it.raw_end;
		}
	}
	if (r < 0 || (seen & required) != required || !span_is(&val[DKIM_TAG_V], "1") ||
	    list_count(&val[DKIM_TAG_H]) > DKIM_MAX_H ||
	    dkim_canon(&val[DKIM_TAG_C], sig) < 0 ||
	    (val[DKIM_TAG_T].p != NULL && span_decimal(&val[DKIM_TAG_T], &t) < 0) ||
	    (val[DKIM_TAG_X].p != NULL &&
	    (span_decimal(&val[DKIM_TAG_X], &sig->expiry) < 0 || sig->expiry < t))) {
		return ACME_SMIME_MAIL_DKIM_MALFORMED;
	}
	if (span_is(&val[DKIM_TAG_A], "ed25519-sha256")) {
		return ACME_SMIME_MAIL_DKIM_ED25519;
	}
	if (!span_is(&val[DKIM_TAG_A], "rsa-sha256")) {
		return ACME_SMIME_MAIL_DKIM_ALGORITHM;
	}
	if (val[DKIM_TAG_L].p != NULL) {
		return ACME_SMIME_MAIL_DKIM_LENGTH_TAG;
	}
	sig->has_expiry = val[DKIM_TAG_X].p != NULL;
	sig->b = val[DKIM_TAG_B];
	sig->bh = val[DKIM_TAG_BH];
	sig->d = val[DKIM_TAG_D];
	sig->s = val[DKIM_TAG_S];
	sig->h = val[DKIM_TAG_H];
	return ACME_SMIME_MAIL_OK;
}

/* Body canonicalisation (RFC 6376 sections 3.4.3 and 3.4.4), streamed:
 * empty lines are only counted until a line with content follows them,
 * so the trailing ones are never hashed. */
static void
dkim_hash_body(auth_hasher *h, const char *s, size_t len, int relaxed)
{
	size_t i = 0, e, end, k, pending = 0;
	int started, ws, any = 0;

	while (i < len) {
		for (e = i; e < len && s[e] != '\n'; e++) {
			continue;
		}
		end = (e > i && s[e - 1] == '\r') ? e - 1 : e;
		started = 0;
		ws = 0;
		for (k = i; k < end; k++) {
			if (relaxed && is_wsp((unsigned char)s[k])) {
				ws = 1;
				continue;
			}
			if (!started) {
				for (; pending > 0; pending--) {
					ah_put(h, "\r\n", 2);
				}
				started = 1;
			}
			if (ws) {
				ah_putc(h, ' ');
				ws = 0;
			}
			ah_putc(h, s[k]);
		}
		if (started) {
			pending = 1;
			any = 1;
		} else {
			pending++;
		}
		i = e + 1;
	}
	/* simple: an empty body is one CRLF; relaxed: nothing */
	if (any || !relaxed) {
		ah_put(h, "\r\n", 2);
	}
}

/* Header canonicalisation of one field (RFC 6376 sections 3.4.1 and
 * 3.4.2), without the bytes [hole_start, hole_end) of its value. */
static void
dkim_hash_field(auth_hasher *h, const hfield *f, int relaxed,
	size_t hole_start, size_t hole_end, int crlf)
{
	size_t i, pos = 0;
	int c;

	if (relaxed) {
		for (i = 0; i < f->name_len; i++) {
			ah_putc(h, to_lower((unsigned char)f->name[i]));
		}
		ah_putc(h, ':');
		while ((c = relaxed_next(f->value, f->value_len, hole_start, hole_end,
		    &pos)) >= 0) {
			ah_putc(h, c);
		}
	} else {
		ah_put_crlf(h, f->name, (size_t)(f->value - f->name));
		ah_put_crlf(h, f->value, hole_start < hole_end ? hole_start :
		    f->value_len);
		if (hole_start < hole_end) {
			ah_put_crlf(h, f->value + hole_end, f->value_len - hole_end);
		}
	}
	if (crlf) {
		ah_put(h, "\r\n", 2);
	}
}

/* The fields h= names, in its order; repeated names take the instances
 * of the field from the bottom up, a missing instance adds nothing (RFC
 * 6376 section 5.4.2). */
static void
dkim_hash_headers(auth_hasher *h, const auth_state *st, const dkim_sig *sig)
{
	text_span name, earlier;
	size_t pos = 0, epos, item, j, total, k, idx;
	hfield_iter it;
	hfield f;

	for (item = 0; list_next(&sig->h, &pos, &name); item++) {
		k = 0;
		epos = 0;
		for (j = 0; j < item && list_next(&sig->h, &epos, &earlier); j++) {
			k += spans_caseeq(&earlier, name.p, name.len);
		}
		total = 0;
		hfield_iter_init(&it, st->mail, st->mail_len);
		while (hfield_next(&it, &f) > 0) {
			total += spans_caseeq(&name, f.name, f.name_len);
		}
		if (k >= total) {
			continue;
		}
		idx = total - 1 - k;
		hfield_iter_init(&it, st->mail, st->mail_len);
		while (hfield_next(&it, &f) > 0) {
			if (spans_caseeq(&name, f.name, f.name_len) && idx-- == 0) {
				dkim_hash_field(h, &f, sig->relaxed_header, 0, 0, 1);
				break;
			}
		}
	}
}

/* A selector or domain we may put in a DNS name: letters, digits, '-',
 * '_' and '.' (so no label can be forged around ours). */
static int
dns_name_ok(const text_span *t)
{
	size_t i;

	for (i = 0; i < t->len; i++) {
		if (!is_tag_char((unsigned char)t->p[i]) && t->p[i] != '-' &&
		    t->p[i] != '.') {
			return 0;
		}
	}
	return t->len > 0;
}

/*
 * Fetch "s._domainkey.d" through the dns_txt hook and parse the key
 * record (RFC 6376 section 3.6.1) into pk, which points into kbuf. A
 * record in testing mode (t=y) proves nothing (the RFC: treat as
 * unsigned); an empty p= is a revoked key.
 */
static int
dkim_fetch_key(const acme_smime_pending *pending, const dkim_sig *sig,
	unsigned char *kbuf, size_t ksize, br_rsa_public_key *pk)
{
	char name[254], txt[ACME_SMIME_MAX_DNS_TXT + 1];
	text_span tname, v, key_p, flag;
	tag_iter it;
	textbuf tb;
	br_x509_pkey key;
	der_in spki, contents;
	size_t pos;
	int n;

	tb_init(&tb, name, sizeof name);
	tb_putn(&tb, sig->s.p, sig->s.len);
	tb_puts(&tb, "._domainkey.");
	tb_putn(&tb, sig->d.p, sig->d.len);
	if (!dns_name_ok(&sig->s) || !dns_name_ok(&sig->d) || tb_finish(&tb) < 0) {
		return ACME_SMIME_MAIL_DKIM_MALFORMED;
	}
	if (pending->dns_txt == NULL) {
		return ACME_SMIME_MAIL_DKIM_KEY_UNAVAILABLE;
	}
	n = pending->dns_txt(pending->dns_user, name, txt, sizeof txt);
	if (n <= 0 || (size_t)n >= sizeof txt) {
		return ACME_SMIME_MAIL_DKIM_KEY_UNAVAILABLE;
	}
	key_p.p = NULL;
	key_p.len = 0;
	tag_iter_init(&it, txt, (size_t)n);
	while ((n = tag_next(&it, &tname, &v)) > 0) {
		if ((span_is(&tname, "v") && !span_is(&v, "DKIM1")) ||
		    (span_is(&tname, "k") && !span_is(&v, "rsa")) ||
		    (span_is(&tname, "h") && !list_has(&v, "sha256"))) {
			return ACME_SMIME_MAIL_DKIM_BAD_KEY;
		}
		if (span_is(&tname, "t")) {
			for (pos = 0; list_next(&v, &pos, &flag);) {
				if (span_is(&flag, "y")) {
					return ACME_SMIME_MAIL_DKIM_BAD_KEY;
				}
			}
		}
		if (span_is(&tname, "p")) {
			key_p = v;
		}
	}
	if (n < 0 || key_p.len == 0) {
		return ACME_SMIME_MAIL_DKIM_BAD_KEY;
	}
	n = b64_decode_text(kbuf, ksize, key_p.p, key_p.len);
	if (n < 0) {
		return ACME_SMIME_MAIL_DKIM_BAD_KEY;
	}
	spki.p = kbuf;
	spki.len = (size_t)n;
	if (der_expect(&spki, DER_SEQUENCE, &contents) < 0 ||
	    spki_parse(contents, &key) < 0 || key.key_type != BR_KEYTYPE_RSA) {
		return ACME_SMIME_MAIL_DKIM_BAD_KEY;
	}
	*pk = key.key.rsa;
	return ACME_SMIME_MAIL_OK;
}

/* One signature, cheapest checks first: the body hash before the DNS
 * lookup, the lookup before the RSA operation. */
static AUTH_NOINLINE int
dkim_check_one(const auth_state *st, const hfield *f)
{
	static const char *const needed[] = {
		"from", "to", "subject", "date", "message-id", "auto-submitted"
	};
	unsigned char hash[32], bh[33], sig_bytes[AUTH_RSA_MAX_BYTES], out[32];
	unsigned char kbuf[AUTH_RSA_MAX_BYTES + 64];
	const acme_smime_pending *p = st->pending;
	br_rsa_public_key pk;
	auth_hasher h;
	dkim_sig sig;
	size_t k, count = ARRAY_LEN(needed);
	int r, n;

	r = dkim_parse(f, &sig);
	if (r != ACME_SMIME_MAIL_OK) {
		return r;
	}
	if (!ascii_caseeq(sig.d.p, sig.d.len, from_domain(p))) {
		return ACME_SMIME_MAIL_DKIM_DOMAIN_MISMATCH;
	}
	/* protocol.md 4.2: the fields the challenge depends on. A CA that
	 * omits Auto-Submitted (allowed by policy) may not sign it either. */
	if (p->policy & ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT) {
		count--;
	}
	for (k = 0; k < count; k++) {
		if (!list_has(&sig.h, needed[k])) {
			return ACME_SMIME_MAIL_DKIM_HEADERS_UNSIGNED;
		}
	}
	if (sig.has_expiry && p->now != 0 && p->now > sig.expiry) {
		return ACME_SMIME_MAIL_DKIM_EXPIRED;
	}
	ah_init(&h, &br_sha256_vtable);
	dkim_hash_body(&h, st->mail + st->body, st->mail_len - st->body,
	    sig.relaxed_body);
	ah_out(&h, hash);
	if (b64_decode_text(bh, sizeof bh, sig.bh.p, sig.bh.len) != 32 ||
	    memcmp(bh, hash, 32) != 0) {
		return ACME_SMIME_MAIL_DKIM_BODY_HASH;
	}
	r = dkim_fetch_key(p, &sig, kbuf, sizeof kbuf, &pk);
	if (r != ACME_SMIME_MAIL_OK) {
		return r;
	}
	ah_init(&h, &br_sha256_vtable);
	dkim_hash_headers(&h, st, &sig);
	dkim_hash_field(&h, &sig.field, sig.relaxed_header, sig.hole_start,
	    sig.hole_end, 0);
	ah_out(&h, hash);
	n = b64_decode_text(sig_bytes, sizeof sig_bytes, sig.b.p, sig.b.len);
	if (n <= 0 || br_rsa_pkcs1_vrfy_get_default()(sig_bytes, (size_t)n,
	    BR_HASH_OID_SHA256, sizeof hash, &pk, out) != 1 ||
	    memcmp(out, hash, sizeof hash) != 0) {
		return ACME_SMIME_MAIL_DKIM_BAD_SIGNATURE;
	}
	return ACME_SMIME_MAIL_OK;
}

/* The DKIM proof: OK, AUTH_ABSENT, or the reason of the signature that
 * came closest to passing (the reasons are numbered in check order). */
static int
dkim_check(const auth_state *st)
{
	hfield_iter it;
	hfield f;
	unsigned tries = 0;
	int r, best = AUTH_ABSENT;

	hfield_iter_init(&it, st->mail, st->mail_len);
	while (tries < AUTH_MAX_TRIES && hfield_next(&it, &f) > 0) {
		if (!ascii_caseeq(f.name, f.name_len, "DKIM-Signature")) {
			continue;
		}
		tries++;
		r = dkim_check_one(st, &f);
		if (r == ACME_SMIME_MAIL_OK) {
			return r;
		}
		if (r > best) {
			best = r;
		}
	}
	return best;
}

/* ------------------------------------------------------------------------
 * 6b.7 Authentication-Results (RFC 8601)
 *
 * Only the topmost field counts: the receiving server adds its own on top,
 * and must remove forged ones carrying its authserv-id (RFC 8601 section
 * 5); fields further down came from elsewhere. protocol.md 4.2.
 * ---------------------------------------------------------------------- */

#define AR_END  0
#define AR_WORD 1
#define AR_SEMI 2
#define AR_EQ   3
#define AR_ERR  4

/* The next token of an Authentication-Results value: a word (a quoted
 * string loses its quotes), ';' or '='; comments and folds are skipped. */
static int
ar_lex(addr_lexer *lx, text_span *t)
{
	size_t start, n;
	int c;

	while (lx->pos < lx->len) {
		if (is_space((unsigned char)lx->s[lx->pos])) {
			lx->pos++;
		} else if (lx->s[lx->pos] == '(') {
			if (addr_skip_comment(lx) < 0) {
				return AR_ERR;
			}
		} else {
			break;
		}
	}
	if (lx->pos >= lx->len) {
		return AR_END;
	}
	c = (unsigned char)lx->s[lx->pos];
	if (c == ';' || c == '=') {
		lx->pos++;
		return c == ';' ? AR_SEMI : AR_EQ;
	}
	if (c == '"') {
		n = addr_delimited_len(lx, '"');
		if (n == 0) {
			return AR_ERR;
		}
		t->p = lx->s + lx->pos + 1;
		t->len = n - 2;
		lx->pos += n;
		return AR_WORD;
	}
	start = lx->pos;
	while (lx->pos < lx->len && is_vchar((unsigned char)lx->s[lx->pos]) &&
	    strchr(";=()\"", lx->s[lx->pos]) == NULL) {
		lx->pos++;
	}
	t->p = lx->s + start;
	t->len = lx->pos - start;
	return t->len > 0 ? AR_WORD : AR_ERR;
}

/* authserv-id [version] *(";" method["/"version] "=" result
 * *(property "=" value)): look for dkim=pass with header.d = From domain. */
static AUTH_NOINLINE int
ar_check(const auth_state *st)
{
	const char *id = st->pending->authserv_id, *dom = from_domain(st->pending);
	addr_lexer lx;
	hfield_iter it;
	hfield f;
	text_span t, method, result, prop;
	size_t i;
	int tok, found = 0, pass;

	if (id == NULL || id[0] == '\0') {
		return AUTH_ABSENT;
	}
	hfield_iter_init(&it, st->mail, st->mail_len);
	while (!found && hfield_next(&it, &f) > 0) {
		found = ascii_caseeq(f.name, f.name_len, "Authentication-Results");
	}
	if (!found) {
		return AUTH_ABSENT;
	}
	lx.s = f.value;
	lx.len = f.value_len;
	lx.pos = 0;
	if (ar_lex(&lx, &t) != AR_WORD || !ascii_caseeq(t.p, t.len, id)) {
		return ACME_SMIME_MAIL_AR_UNTRUSTED;
	}
	tok = ar_lex(&lx, &t);
	if (tok == AR_WORD) {
		for (i = 0; i < t.len && t.p[i] >= '0' && t.p[i] <= '9'; i++) {
			continue;
		}
		if (i < t.len) {
			return ACME_SMIME_MAIL_AR_NO_PASS;
		}
		tok = ar_lex(&lx, &t);
	}
	while (tok == AR_SEMI) {
		if (ar_lex(&lx, &method) != AR_WORD || ar_lex(&lx, &t) != AR_EQ ||
		    ar_lex(&lx, &result) != AR_WORD) {
			return ACME_SMIME_MAIL_AR_NO_PASS;
		}
		pass = (ascii_caseeq(method.p, method.len, "dkim") ||
		    ascii_caseeq(method.p, method.len, "dkim/1")) &&
		    ascii_caseeq(result.p, result.len, "pass");
		while ((tok = ar_lex(&lx, &prop)) == AR_WORD) {
			if (ar_lex(&lx, &t) != AR_EQ || ar_lex(&lx, &t) != AR_WORD) {
				return ACME_SMIME_MAIL_AR_NO_PASS;
			}
			if (pass && ascii_caseeq(prop.p, prop.len, "header.d") &&
			    ascii_caseeq(t.p, t.len, dom)) {
				return ACME_SMIME_MAIL_OK;
			}
		}
	}
	return ACME_SMIME_MAIL_AR_NO_PASS;
}

/* ------------------------------------------------------------------------
 * 6b.8 The challenge-mail check
 * ---------------------------------------------------------------------- */

static void
auth_init(auth_state *st, const char *mail, size_t mail_len,
	const mail_header *hdr, const acme_smime_pending *pending)
{
	long body = hfield_body(mail, mail_len);

	memset(st, 0, sizeof *st);
	st->mail = mail;
	st->mail_len = mail_len;
	st->body = body < 0 ? mail_len : (size_t)body;
	st->outer = hdr;
	st->pending = pending;
}

/* Relaxed header protection: the signed From, To and Subject replace the
 * outer ones for the checks that follow. */
static void
auth_take_protected(const auth_state *st, mail_header *hdr)
{
	static const int outer_field[3] = { FIELD_FROM, FIELD_TO, FIELD_SUBJECT };
	int k;

	for (k = 0; k < 3; k++) {
		if (st->prot[k].raw != NULL) {
			hdr->field[outer_field[k]] = st->prot[k];
		}
	}
}

/*
 * One of the three proofs must hold unless the policy allows unsigned
 * mail. smime is the S/MIME result when it was already computed (relaxed
 * header protection), else AUTH_NOT_RUN. The refusal names the first
 * proof the mail carried.
 */
static int
auth_decide(auth_state *st, int smime, acme_smime_mail_verdict *verdict)
{
	int r, first = AUTH_ABSENT;

	if (st->pending->policy & ACME_SMIME_MAIL_ALLOW_UNSIGNED) {
		verdict->proof = ACME_SMIME_PROOF_NONE;
		verdict->relaxed |= ACME_SMIME_MAIL_ALLOW_UNSIGNED;
		return ACME_SMIME_MAIL_OK;
	}
	r = smime == AUTH_NOT_RUN ? smime_check(st) : smime;
	if (r == ACME_SMIME_MAIL_OK) {
		verdict->proof = ACME_SMIME_PROOF_SMIME;
		if (st->hp_differs) {
			verdict->relaxed |= ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION;
		}
		return r;
	}
	first = r;
	r = dkim_check(st);
	if (r == ACME_SMIME_MAIL_OK) {
		verdict->proof = ACME_SMIME_PROOF_DKIM;
		return r;
	}
	if (first == AUTH_ABSENT) {
		first = r;
	}
	r = ar_check(st);
	if (r == ACME_SMIME_MAIL_OK) {
		verdict->proof = ACME_SMIME_PROOF_AUTH_RESULTS;
		return r;
	}
	if (first == AUTH_ABSENT) {
		first = r;
	}
	return first == AUTH_ABSENT ? ACME_SMIME_MAIL_UNSIGNED : first;
}

/*
 * The checks in the order that names the most telling reason: structure,
 * Subject, From, To, Auto-Submitted, Reply-To, then authenticity. With
 * relaxed header protection the S/MIME check comes first, so that the
 * other checks see the signed From, To and Subject.
 */
/* Next word of an RFC 5322 date: letters/digits/':'/'+'/'-' runs;
 * commas, spaces and comments separate. */
static size_t
date_word(const char *s, size_t n, size_t *pos, const char **w)
{
	size_t i = *pos, st;

	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == ',' || s[i] == '(')) {
		if (s[i] == '(') {
			while (i < n && s[i] != ')') {
				i++;
			}
		}
		i++;
	}
	st = i;
	while (i < n && s[i] != ' ' && s[i] != '\t' && s[i] != ',' && s[i] != '(') {
		i++;
	}
	*pos = i;
	*w = s + (st < n ? st : n);
	return i > st ? i - st : 0;
}

/* Clock difference tolerated between the device and the CA's mail. */
#define MAIL_DATE_SKEW 600u

/* "[Sat,] 5 Dec 2020 10:08:55 +0100" -> Unix seconds, or -1. */
static long long
mail_date_parse(const char *s, size_t n)
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	const char *w;
	size_t pos = 0, len;
	long day, year, hh, mm, ss = 0, zone = 0;
	unsigned m;

	len = date_word(s, n, &pos, &w);
	if (len == 3 && !is_digit((unsigned char)w[0])) {
		len = date_word(s, n, &pos, &w);        /* day of week */
	}
	day = len >= 1 && len <= 2 ? parse_digits(w, len) : -1;
	len = date_word(s, n, &pos, &w);
	for (m = 0; m < 12 && !(len == 3 &&
	    to_lower((unsigned char)w[0]) == months[3 * m] &&
	    to_lower((unsigned char)w[1]) == months[3 * m + 1] &&
	    to_lower((unsigned char)w[2]) == months[3 * m + 2]); m++) {
	}
	len = date_word(s, n, &pos, &w);
	year = len == 4 ? parse_digits(w, 4) : -1;
	len = date_word(s, n, &pos, &w);
	if (len != 5 && len != 8) {
		return -1;
	}
	hh = parse_digits(w, 2);
	mm = w[2] == ':' ? parse_digits(w + 3, 2) : -1;
	if (len == 8) {
		ss = w[5] == ':' ? parse_digits(w + 6, 2) : -1;
	}
	len = date_word(s, n, &pos, &w);
	if (len == 5 && (w[0] == '+' || w[0] == '-') && parse_digits(w + 1, 4) >= 0) {
		zone = parse_digits(w + 1, 2) * 3600 + parse_digits(w + 3, 2) * 60;
		zone = w[0] == '-' ? -zone : zone;
	}
	if (day < 1 || day > 31 || m == 12 || year < 1970 || hh < 0 || hh > 23 ||
	    mm < 0 || mm > 59 || ss < 0 || ss > 60) {
		return -1;
	}
	return (long long)days_from_civil(year, m + 1, (unsigned)day) * 86400 +
	    hh * 3600 + mm * 60 + ss - zone;
}

/* A mail dated well before the order began is a stale challenge from an
 * earlier order that arrived late: answering it would spend this
 * challenge on a wrong digest. Without a (readable) Date the snapshot
 * alone decides. */
static int
check_date(const mail_header *hdr, char *scratch, uint64_t not_before)
{
	size_t len;
	long long t;

	if (not_before == 0 || !field_unfold(hdr, FIELD_DATE, scratch, &len)) {
		return ACME_SMIME_MAIL_OK;
	}
	t = mail_date_parse(scratch, len);
	return t >= 0 && (uint64_t)t + MAIL_DATE_SKEW < not_before ?
	    ACME_SMIME_MAIL_STALE : ACME_SMIME_MAIL_OK;
}

/* The header fields the challenge is recognised by: Subject, From, To
 * (skipped when only the form is judged), Date, Auto-Submitted. */
static int
check_fields(const mail_header *hdr, char *scratch, const acme_smime_pending *pending,
	acme_smime_mail_verdict *verdict, int form_only)
{
	int reason = ACME_SMIME_MAIL_OK;

	if (!form_only) {
		reason = check_subject(hdr, scratch, verdict);
		if (reason == ACME_SMIME_MAIL_OK) {
			reason = check_from(hdr, scratch, pending, verdict);
		}
		if (reason == ACME_SMIME_MAIL_OK) {
			reason = check_to(hdr, scratch, pending);
		}
	}
	if (reason == ACME_SMIME_MAIL_OK) {
		reason = check_date(hdr, scratch, pending->not_before);
	}
	if (reason == ACME_SMIME_MAIL_OK) {
		reason = check_auto_submitted(hdr, scratch, pending->policy);
		if (hdr->field[FIELD_AUTO_SUBMITTED].raw == NULL) {
			verdict->relaxed |= ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT;
		}
	}
	return reason;
}

static int
check_mail(const char *mail, size_t mail_len,
	const acme_smime_pending *pending, acme_smime_mail_verdict *verdict)
{
	char scratch[ACME_SMIME_MAX_HEADER + 1];
	mail_header hdr;
	auth_state st;
	int reason, smime = AUTH_NOT_RUN;

	reason = header_scan(&hdr, mail, mail_len);
	if (reason != ACME_SMIME_MAIL_OK) {
		return reason;
	}
	auth_init(&st, mail, mail_len, &hdr, pending);
	if ((pending->policy & (ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION |
	    ACME_SMIME_MAIL_ALLOW_UNSIGNED)) ==
	    ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION) {
		smime = smime_check(&st);
		if (smime == ACME_SMIME_MAIL_OK) {
			auth_take_protected(&st, &hdr);
		}
	}
	reason = check_fields(&hdr, scratch, pending, verdict, 0);
	if (reason == ACME_SMIME_MAIL_OK) {
		reason = collect_reply_to(&hdr, scratch, verdict);
	}
	if (reason == ACME_SMIME_MAIL_OK) {
		collect_message_id(&hdr, scratch, verdict);
		collect_references(&hdr, scratch, verdict);
		reason = auth_decide(&st, smime, verdict);
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
	    || pending->from == NULL || pending->from[0] == '\0'
	    || (pending->smime_anchors == NULL && pending->smime_anchor_count > 0)) {
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
	case ACME_SMIME_MAIL_STALE:
		return "dated before the order began: a late mail of an earlier order";
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
		return "no answerable Reply-To (unparsable, too many, not 7-bit)";
	case ACME_SMIME_MAIL_UNSIGNED:
		return "no S/MIME or DKIM signature, no trusted Authentication-Results";
	case ACME_SMIME_MAIL_BAD_ARGUMENT:
		return "the pending challenge is incomplete";
	case ACME_SMIME_MAIL_NO_TIME:
		return "S/MIME signed, but the time is unknown (pending.now is 0)";
	case ACME_SMIME_MAIL_SMIME_MALFORMED:
		return "broken S/MIME structure or CMS SignedData";
	case ACME_SMIME_MAIL_SMIME_LIMIT:
		return "S/MIME signature larger than the work buffer";
	case ACME_SMIME_MAIL_SMIME_UNSUPPORTED:
		return "S/MIME digest, signature or key algorithm not supported";
	case ACME_SMIME_MAIL_SMIME_DIGEST_MISMATCH:
		return "S/MIME message digest does not match the signed content";
	case ACME_SMIME_MAIL_SMIME_BAD_SIGNATURE:
		return "S/MIME signature does not verify";
	case ACME_SMIME_MAIL_SMIME_UNTRUSTED:
		return "S/MIME signer certificate not valid or not from a trusted CA";
	case ACME_SMIME_MAIL_SMIME_NO_SAN:
		return "S/MIME signer certificate has no rfc822Name";
	case ACME_SMIME_MAIL_SMIME_SIGNER_MISMATCH:
		return "S/MIME signer certificate is not for the From address";
	case ACME_SMIME_MAIL_SMIME_NO_HEADER_PROTECTION:
		return "S/MIME signature does not protect From, To and Subject";
	case ACME_SMIME_MAIL_SMIME_HEADER_MISMATCH:
		return "S/MIME protected From, To or Subject differs from the header";
	case ACME_SMIME_MAIL_DKIM_MALFORMED:
		return "broken DKIM-Signature (syntax, v=, a missing or repeated tag)";
	case ACME_SMIME_MAIL_DKIM_ALGORITHM:
		return "DKIM algorithm not rsa-sha256";
	case ACME_SMIME_MAIL_DKIM_ED25519:
		return "DKIM ed25519-sha256 is not supported (RSA only)";
	case ACME_SMIME_MAIL_DKIM_LENGTH_TAG:
		return "DKIM signature covers part of the body only (l=)";
	case ACME_SMIME_MAIL_DKIM_DOMAIN_MISMATCH:
		return "DKIM d= is not the From domain";
	case ACME_SMIME_MAIL_DKIM_HEADERS_UNSIGNED:
		return "DKIM h= lacks From, To, Subject, Date, Message-ID or Auto-Submitted";
	case ACME_SMIME_MAIL_DKIM_EXPIRED:
		return "DKIM signature expired (x=)";
	case ACME_SMIME_MAIL_DKIM_BODY_HASH:
		return "DKIM body hash does not match";
	case ACME_SMIME_MAIL_DKIM_KEY_UNAVAILABLE:
		return "DKIM key not found (DNS failure, no record or no dns_txt hook)";
	case ACME_SMIME_MAIL_DKIM_BAD_KEY:
		return "DKIM key record unusable (revoked, testing, not RSA, malformed)";
	case ACME_SMIME_MAIL_DKIM_BAD_SIGNATURE:
		return "DKIM signature does not verify";
	case ACME_SMIME_MAIL_AR_UNTRUSTED:
		return "topmost Authentication-Results is not from the trusted server";
	case ACME_SMIME_MAIL_AR_NO_PASS:
		return "trusted Authentication-Results has no dkim=pass for the From domain";
	default:
		return "unknown reason";
	}
}

/* ========================================================================
 * 7. Store
 *
 * Power-safe records on the caller's NOR flash (design.md section 4). A
 * fixed set of records, each with two slots A and B. A write goes to the
 * slot that does not hold the current value: erase it, program the
 * payload, then program the header last. Until the header is complete the
 * slot reads as invalid, so a power cut at any instant leaves the previous
 * value readable; the slot holding it is never touched by the write.
 *
 * Slot layout (little-endian), at the start of the slot:
 *
 *    0  4  magic "ACMS"
 *    4  1  record id (STORE_REC_*)
 *    5  1  format version (1)
 *    6  2  reserved, 0
 *    8  4  sequence number (the newer slot has the higher one)
 *   12  4  payload length
 *   16  4  CRC-32 of the payload
 *   20  4  CRC-32 of bytes 0..19
 *
 * then 0xFF up to the header area (32 bytes, or one program unit when
 * that is larger), then the payload. The slot is a whole number of
 * sectors; the slots lie in record order from address 0: account A,
 * account B, enrollment A, ... A slot is valid when its header is intact
 * (magic, id, version, header CRC), its length is within the record's
 * maximum and its payload matches the payload CRC. The current value is
 * the valid slot with the newer sequence number. Everything read from
 * flash is bounded before use: random bytes read as "no record".
 *
 * Changing the maximum sizes or the flash geometry moves the slots: erase
 * the store (store_erase_all) after such a change.
 * ====================================================================== */

#define STORE_REC_ACCOUNT    0
#define STORE_REC_ENROLLMENT 1
#define STORE_REC_CERT       2
#define STORE_REC_TIME       3
#define STORE_REC_COUNT      4

/* store_read() and friends: the record has no valid slot. Not an error:
 * the record was never written, or was erased. */
#define STORE_NONE 1

#define STORE_HEADER_LEN  24
#define STORE_VERSION     1
/* SPI NOR page program wraps at 256-byte boundaries: no program call
 * crosses one, so a port can pass each call straight to the chip. */
#define STORE_PAGE        256
/* Bytes read at a time to check or compare a payload (stack cost). */
#define STORE_CHUNK       64

static const unsigned char store_magic[4] = { 'A', 'C', 'M', 'S' };

static const uint32_t store_max[STORE_REC_COUNT] = {
	ACME_SMIME_STORE_MAX_ACCOUNT,
	ACME_SMIME_STORE_MAX_ENROLLMENT,
	ACME_SMIME_STORE_MAX_CERT,
	ACME_SMIME_STORE_MAX_TIME
};

/* CRC-32 (IEEE 802.3, reflected, as zlib), four bits at a time: a
 * 64-byte table instead of 1 KiB. Incremental: crc = store_crc32(crc, ...)
 * starting from 0. */
static const uint32_t store_crc_nibble[16] = {
	0x00000000, 0x1DB71064, 0x3B6E20C8, 0x26D930AC,
	0x76DC4190, 0x6B6B51F4, 0x4DB26158, 0x5005713C,
	0xEDB88320, 0xF00F9344, 0xD6D6A3E8, 0xCB61B38C,
	0x9B64C2B0, 0x86D3D2D4, 0xA00AE278, 0xBDBDF21C
};

static uint32_t
store_crc32(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = (const unsigned char *)data;

	crc = ~crc;
	while (len-- > 0) {
		crc ^= *p++;
		crc = (crc >> 4) ^ store_crc_nibble[crc & 15];
		crc = (crc >> 4) ^ store_crc_nibble[crc & 15];
	}
	return ~crc;
}

static void
store_put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static uint32_t
store_get32(const unsigned char *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) |
	    ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Serial-number order (RFC 1982): a is newer than b when it is ahead by
 * less than half the number space, so the counter may wrap. Only two
 * values are ever compared and they differ by one in practice. */
static int
store_seq_newer(uint32_t a, uint32_t b)
{
	uint32_t d = a - b;

	return d != 0 && d < 0x80000000u;
}

static int
store_is_pow2(uint32_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

/* Where the payload starts in a slot: the header gets program units of
 * its own, so it can be programmed last. */
static uint32_t
store_header_area(uint32_t program_unit)
{
	return ACME_SMIME_STORE_HEADER_AREA(program_unit);
}

typedef struct {
	uint32_t header_area;
	uint32_t slot[STORE_REC_COUNT];       /* address of slot A */
	uint32_t slot_size[STORE_REC_COUNT];  /* slot B is at slot + slot_size */
	uint32_t end;                         /* first address not used */
} store_layout;

/* Check the geometry documented with acme_smime_flash and lay out the
 * slots. Every sum is bounded by flash->size, so nothing overflows. */
static int
store_layout_get(const acme_smime_flash *f, store_layout *l)
{
	uint32_t need, size;
	unsigned r;

	if (f == NULL || f->read == NULL || f->program == NULL ||
	    f->erase == NULL || f->sector_size < 256 ||
	    !store_is_pow2(f->sector_size) || f->size == 0 ||
	    f->size % f->sector_size != 0 ||
	    !store_is_pow2(f->program_unit) || f->program_unit > STORE_PAGE ||
	    f->program_unit > ACME_SMIME_MAX_PROGRAM_UNIT) {
		return ACME_SMIME_ERR_STORE;
	}
	l->header_area = store_header_area(f->program_unit);
	l->end = 0;
	for (r = 0; r < STORE_REC_COUNT; r++) {
		if (store_max[r] > f->size - l->header_area) {
			return ACME_SMIME_ERR_STORE;
		}
		need = l->header_area + store_max[r];
		size = ((need - 1) / f->sector_size + 1) * f->sector_size;
		if (size > (f->size - l->end) / 2) {
			return ACME_SMIME_ERR_STORE;
		}
		l->slot[r] = l->end;
		l->slot_size[r] = size;
		l->end += 2 * size;
	}
	return ACME_SMIME_OK;
}

static int
store_layout_ok(const acme_smime_flash *f)
{
	store_layout l;

	return store_layout_get(f, &l);
}

/* What one slot holds. */
typedef struct {
	uint32_t addr;
	uint32_t seq;
	uint32_t len;
	uint32_t crc;
	int intact;       /* the header is complete and well-formed */
} store_slot;

/* Both slots of a record and the verdict on them. */
typedef struct {
	store_layout layout;
	store_slot s[2];
	int cur;          /* valid slot with the newest value, or -1 */
	int newest;       /* intact header with the highest seq, or -1 */
} store_scan_result;

static int
store_flash_read(const acme_smime_flash *f, uint32_t addr, void *buf,
	size_t len)
{
	return f->read(f->user, addr, (unsigned char *)buf, len) < 0 ?
	    ACME_SMIME_ERR_STORE : ACME_SMIME_OK;
}

static int
store_read_header(const acme_smime_flash *f, unsigned rec, store_slot *s)
{
	unsigned char h[STORE_HEADER_LEN];

	s->intact = 0;
	if (store_flash_read(f, s->addr, h, sizeof h) < 0) {
		return ACME_SMIME_ERR_STORE;
	}
	if (memcmp(h, store_magic, 4) != 0 || h[4] != rec ||
	    h[5] != STORE_VERSION || h[6] != 0 || h[7] != 0 ||
	    store_crc32(0, h, 20) != store_get32(h + 20)) {
		return ACME_SMIME_OK;
	}
	s->seq = store_get32(h + 8);
	s->len = store_get32(h + 12);
	s->crc = store_get32(h + 16);
	s->intact = 1;
	return ACME_SMIME_OK;
}

/* Stream the payload through CRC-32. Returns 1 when it matches, 0 when
 * not, or ACME_SMIME_ERR_STORE. len was bounded by the caller. */
static int
store_payload_ok(const acme_smime_flash *f, uint32_t header_area,
	const store_slot *s)
{
	unsigned char buf[STORE_CHUNK];
	uint32_t crc = 0, off = 0, n;
	int r = ACME_SMIME_OK;

	while (off < s->len) {
		n = s->len - off < sizeof buf ? s->len - off : sizeof buf;
		r = store_flash_read(f, s->addr + header_area + off, buf, n);
		if (r < 0) {
			break;
		}
		crc = store_crc32(crc, buf, n);
		off += n;
	}
	/* Payloads hold private keys. */
	wipe(buf, sizeof buf);
	return r < 0 ? r : crc == s->crc;
}

/*
 * Examine both slots of rec: headers first, then the payload of the
 * newest intact slot, and of the other only when the newest is bad, so a
 * read costs one pass over the payload. A slot whose payload was not
 * checked is never reported as current.
 */
static int
store_scan(const acme_smime_flash *f, unsigned rec, store_scan_result *sc)
{
	int i, order[2], r;

	if (rec >= STORE_REC_COUNT) {
		return ACME_SMIME_ERR_INVALID;
	}
	if (store_layout_get(f, &sc->layout) < 0) {
		return ACME_SMIME_ERR_STORE;
	}
	sc->cur = -1;
	sc->newest = -1;
	for (i = 0; i < 2; i++) {
		sc->s[i].addr = sc->layout.slot[rec] +
		    (uint32_t)i * sc->layout.slot_size[rec];
		if (store_read_header(f, rec, &sc->s[i]) < 0) {
			return ACME_SMIME_ERR_STORE;
		}
		if (sc->s[i].intact && sc->s[i].len > store_max[rec]) {
			sc->s[i].intact = 0;
		}
	}
	if (sc->s[0].intact && sc->s[1].intact) {
		sc->newest = store_seq_newer(sc->s[1].seq, sc->s[0].seq);
	} else if (sc->s[0].intact || sc->s[1].intact) {
		sc->newest = sc->s[1].intact;
	}
	if (sc->newest < 0) {
		return ACME_SMIME_OK;
	}
	order[0] = sc->newest;
	order[1] = 1 - sc->newest;
	for (i = 0; i < 2; i++) {
		if (!sc->s[order[i]].intact) {
			continue;
		}
		r = store_payload_ok(f, sc->layout.header_area, &sc->s[order[i]]);
		if (r < 0) {
			return r;
		}
		if (r == 1) {
			sc->cur = order[i];
			break;
		}
	}
	return ACME_SMIME_OK;
}

/*
 * Read a whole record into buf. Returns ACME_SMIME_OK with *len set,
 * STORE_NONE (*len = 0) when the record has no valid slot,
 * ACME_SMIME_ERR_BUFFER when it does not fit (*len is then its length),
 * ACME_SMIME_ERR_STORE on a flash error or bad geometry, or
 * ACME_SMIME_ERR_INVALID.
 */
static int
store_read(const acme_smime_flash *f, unsigned rec, unsigned char *buf,
	size_t size, size_t *len)
{
	store_scan_result sc;
	const store_slot *s;
	int r;

	if (len == NULL || (buf == NULL && size > 0)) {
		return ACME_SMIME_ERR_INVALID;
	}
	*len = 0;
	r = store_scan(f, rec, &sc);
	if (r < 0) {
		return r;
	}
	if (sc.cur < 0) {
		return STORE_NONE;
	}
	s = &sc.s[sc.cur];
	*len = s->len;
	if (s->len > size) {
		return ACME_SMIME_ERR_BUFFER;
	}
	if (s->len > 0 && store_flash_read(f, s->addr + sc.layout.header_area,
	    buf, s->len) < 0) {
		return ACME_SMIME_ERR_STORE;
	}
	/* The check above read the flash once; what landed in buf is what
	 * the caller trusts, so check that too. */
	if (store_crc32(0, buf, s->len) != s->crc) {
		wipe(buf, s->len);
		*len = 0;
		return ACME_SMIME_ERR_STORE;
	}
	return ACME_SMIME_OK;
}

/* Length and sequence number of the current value of rec. Returns
 * ACME_SMIME_OK, STORE_NONE, or an error as store_read(). */
static int
store_record_info(const acme_smime_flash *f, unsigned rec, size_t *len,
	uint32_t *seq)
{
	store_scan_result sc;
	int r;

	r = store_scan(f, rec, &sc);
	if (r < 0) {
		return r;
	}
	if (sc.cur < 0) {
		return STORE_NONE;
	}
	if (len != NULL) {
		*len = sc.s[sc.cur].len;
	}
	if (seq != NULL) {
		*seq = sc.s[sc.cur].seq;
	}
	return ACME_SMIME_OK;
}

/* Read n bytes at offset of the current value of rec, for records larger
 * than a caller's buffer. Each call checks the whole record's CRC again
 * (one pass over it): read in large pieces. Returns ACME_SMIME_OK,
 * STORE_NONE, ACME_SMIME_ERR_INVALID when the range is outside the record,
 * or ACME_SMIME_ERR_STORE. */
static int
store_read_chunk(const acme_smime_flash *f, unsigned rec, size_t offset,
	unsigned char *buf, size_t n)
{
	store_scan_result sc;
	const store_slot *s;
	int r;

	if (buf == NULL && n > 0) {
		return ACME_SMIME_ERR_INVALID;
	}
	r = store_scan(f, rec, &sc);
	if (r < 0) {
		return r;
	}
	if (sc.cur < 0) {
		return STORE_NONE;
	}
	s = &sc.s[sc.cur];
	if (offset > s->len || n > s->len - offset) {
		return ACME_SMIME_ERR_INVALID;
	}
	if (n == 0) {
		return ACME_SMIME_OK;
	}
	return store_flash_read(f, s->addr + sc.layout.header_area +
	    (uint32_t)offset, buf, n);
}

/*
 * Is every record's newest value readable? Returns a bit mask (bit rec
 * set for each damaged record; 0 = healthy), or ACME_SMIME_ERR_STORE on a
 * flash error or bad geometry. A record is damaged when its newest
 * complete header has a payload that fails its CRC: the store never
 * produces that, not even cut at any instant (the header goes last), so it
 * means bit rot or foreign data, and the record reads as its older value or
 * as "no record". A header torn by a power cut is indistinguishable from
 * a damaged one and counts as absent.
 */
static int
store_check(const acme_smime_flash *f)
{
	store_scan_result sc;
	unsigned rec;
	int mask = 0;

	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		if (store_scan(f, rec, &sc) < 0) {
			return ACME_SMIME_ERR_STORE;
		}
		if (sc.newest >= 0 && sc.cur != sc.newest) {
			mask |= 1 << rec;
		}
	}
	return mask;
}

static int
store_erase_slot(const acme_smime_flash *f, uint32_t addr, uint32_t size)
{
	uint32_t off;

	/* The header's sector first: once it is blank the slot is
	 * invalid, whatever a cut leaves in the sectors after it. */
	for (off = 0; off < size; off += f->sector_size) {
		if (f->erase(f->user, addr + off) < 0) {
			return ACME_SMIME_ERR_STORE;
		}
	}
	return ACME_SMIME_OK;
}

/* Factory reset: every record reads as "no record" afterwards. Only the
 * store's layout is erased, slot by slot, each header first. */
static int
store_erase_all(const acme_smime_flash *f)
{
	store_layout l;
	unsigned r;

	if (store_layout_get(f, &l) < 0) {
		return ACME_SMIME_ERR_STORE;
	}
	for (r = 0; r < STORE_REC_COUNT; r++) {
		if (store_erase_slot(f, l.slot[r], 2 * l.slot_size[r]) < 0) {
			return ACME_SMIME_ERR_STORE;
		}
	}
	return ACME_SMIME_OK;
}

/* Program len bytes (a multiple of the program unit) at addr, split at
 * page boundaries. */
static int
store_program(const acme_smime_flash *f, uint32_t addr,
	const unsigned char *p, size_t len)
{
	size_t n;

	while (len > 0) {
		n = STORE_PAGE - addr % STORE_PAGE;
		if (n > len) {
			n = len;
		}
		if (f->program(f->user, addr, p, n) < 0) {
			return ACME_SMIME_ERR_STORE;
		}
		addr += (uint32_t)n;
		p += n;
		len -= n;
	}
	return ACME_SMIME_OK;
}

/* Record a writer failure: later calls return it; the buffered bytes
 * (perhaps part of a key) are wiped. */
static int
store_fail(acme_smime_store_writer *w, int err)
{
	w->failed = err;
	w->pending = 0;
	wipe(w->unit, sizeof w->unit);
	return err;
}

/* Start writing rec into the slot that does not hold its current value.
 * Once that slot is erased the only header left to outrank is the other
 * slot's (current, or damaged), so the new value follows it by one. */
static int
store_begin_scanned(acme_smime_store_writer *w, const acme_smime_flash *f,
	unsigned rec, const store_scan_result *sc)
{
	int target = sc->cur < 0 ? 0 : 1 - sc->cur;
	const store_slot *other = &sc->s[1 - target];

	w->flash = f;
	w->record = rec;
	w->slot = sc->s[target].addr;
	w->seq = other->intact ? other->seq + 1 : 1;
	w->length = 0;
	w->crc = 0;
	w->pending = 0;
	w->failed = 0;
	if (store_erase_slot(f, w->slot, sc->layout.slot_size[rec]) < 0) {
		return store_fail(w, ACME_SMIME_ERR_STORE);
	}
	return ACME_SMIME_OK;
}

/*
 * Streaming write of a record whose content is not known in advance (the
 * certificate chain as it downloads): store_begin(), store_append() any
 * number of times with pieces of any size, store_commit(). The new value
 * becomes visible only when store_commit() returns ACME_SMIME_OK; until
 * then, and after any failure or store_abort(), the record reads as its
 * previous value. Each call returns ACME_SMIME_OK or an error, sticky in
 * the writer: ACME_SMIME_ERR_STORE (flash), ACME_SMIME_ERR_LIMIT (the
 * record's maximum is exceeded), ACME_SMIME_ERR_INVALID.
 */
static int
store_begin(acme_smime_store_writer *w, const acme_smime_flash *f,
	unsigned rec)
{
	store_scan_result sc;
	int r;

	if (w == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	w->flash = NULL;
	r = store_scan(f, rec, &sc);
	if (r < 0) {
		return r;
	}
	return store_begin_scanned(w, f, rec, &sc);
}

static int
store_append(acme_smime_store_writer *w, const void *data, size_t n)
{
	const unsigned char *p = (const unsigned char *)data;
	const acme_smime_flash *f;
	uint32_t pu, addr;
	size_t k;

	if (w == NULL || w->flash == NULL || (p == NULL && n > 0)) {
		return ACME_SMIME_ERR_INVALID;
	}
	if (w->failed) {
		return w->failed;
	}
	if (n > store_max[w->record] - w->length) {
		return store_fail(w, ACME_SMIME_ERR_LIMIT);
	}
	f = w->flash;
	pu = f->program_unit;
	w->crc = store_crc32(w->crc, p, n);
	while (n > 0) {
		addr = w->slot + store_header_area(pu) +
		    (w->length - (uint32_t)w->pending);
		if (w->pending > 0 || n < pu) {
			/* A partial program unit waits in unit[]. */
			k = pu - w->pending < n ? pu - w->pending : n;
			memcpy(w->unit + w->pending, p, k);
			w->pending += k;
			if (w->pending == pu) {
				if (f->program(f->user, addr, w->unit, pu) < 0) {
					return store_fail(w, ACME_SMIME_ERR_STORE);
				}
				w->pending = 0;
			}
		} else {
			/* Whole units straight from the caller's data, up
			 * to the page end (a multiple of pu, as addr is). */
			k = STORE_PAGE - addr % STORE_PAGE;
			if (k > n - n % pu) {
				k = n - n % pu;
			}
			if (f->program(f->user, addr, p, k) < 0) {
				return store_fail(w, ACME_SMIME_ERR_STORE);
			}
		}
		w->length += (uint32_t)k;
		p += k;
		n -= k;
	}
	return ACME_SMIME_OK;
}

static void
store_abort(acme_smime_store_writer *w)
{
	if (w != NULL) {
		/* The slot keeps a blank header: invalid, erased by the next
		 * write of the record. */
		store_fail(w, ACME_SMIME_ERR_INVALID);
		w->flash = NULL;
	}
}

static int
store_commit(acme_smime_store_writer *w)
{
	const acme_smime_flash *f;
	uint32_t pu, area;
	int r = ACME_SMIME_OK;

	if (w == NULL || w->flash == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	f = w->flash;
	pu = f->program_unit;
	area = store_header_area(pu);
	if (w->failed) {
		r = w->failed;
	} else if (w->pending > 0) {
		/* 0xFF leaves the rest of the last unit erased. */
		memset(w->unit + w->pending, 0xFF, pu - w->pending);
		if (f->program(f->user, w->slot + area +
		    (w->length - (uint32_t)w->pending), w->unit, pu) < 0) {
			r = ACME_SMIME_ERR_STORE;
		}
	}
	if (r == ACME_SMIME_OK) {
		memset(w->unit, 0xFF, area);
		memcpy(w->unit, store_magic, 4);
		w->unit[4] = (unsigned char)w->record;
		w->unit[5] = STORE_VERSION;
		w->unit[6] = 0;
		w->unit[7] = 0;
		store_put32(w->unit + 8, w->seq);
		store_put32(w->unit + 12, w->length);
		store_put32(w->unit + 16, w->crc);
		store_put32(w->unit + 20, store_crc32(0, w->unit, 20));
		if (store_program(f, w->slot, w->unit, area) < 0) {
			r = ACME_SMIME_ERR_STORE;
		}
	}
	store_fail(w, r);
	w->flash = NULL;
	return r;
}

/* Does the payload of s equal data[0..len)? 1, 0, or ACME_SMIME_ERR_STORE. */
static int
store_payload_equal(const acme_smime_flash *f, uint32_t header_area,
	const store_slot *s, const unsigned char *data, size_t len)
{
	unsigned char buf[STORE_CHUNK];
	uint32_t off = 0, n;
	int r = 1;

	if (s->len != len) {
		return 0;
	}
	while (off < s->len && r == 1) {
		n = s->len - off < sizeof buf ? s->len - off : sizeof buf;
		if (store_flash_read(f, s->addr + header_area + off, buf, n) < 0) {
			r = ACME_SMIME_ERR_STORE;
		} else if (memcmp(buf, data + off, n) != 0) {
			r = 0;
		}
		off += n;
	}
	wipe(buf, sizeof buf);
	return r;
}

/*
 * Write a whole record. An unchanged record is left alone (no erase, no
 * program: flash wears out). An empty record (len 0) is a value like any
 * other: it is how the engine clears the enrollment without ever making
 * the record read as "no record". Uses a writer on the stack
 * (ACME_SMIME_MAX_PROGRAM_UNIT + about 40 bytes). Returns ACME_SMIME_OK,
 * ACME_SMIME_ERR_LIMIT, ACME_SMIME_ERR_STORE or ACME_SMIME_ERR_INVALID.
 */
static int
store_write(const acme_smime_flash *f, unsigned rec, const void *data,
	size_t len)
{
	acme_smime_store_writer w;
	store_scan_result sc;
	int r;

	if (data == NULL && len > 0) {
		return ACME_SMIME_ERR_INVALID;
	}
	r = store_scan(f, rec, &sc);
	if (r < 0) {
		return r;
	}
	if (len > store_max[rec]) {
		return ACME_SMIME_ERR_LIMIT;
	}
	/* Skipped only when no damaged newer header outranks the current
	 * value: a write leaves the record healthy for store_check(). */
	if (sc.cur >= 0 && sc.cur == sc.newest) {
		r = store_payload_equal(f, sc.layout.header_area, &sc.s[sc.cur],
		    (const unsigned char *)data, len);
		if (r != 0) {
			return r < 0 ? r : ACME_SMIME_OK;
		}
	}
	r = store_begin_scanned(&w, f, rec, &sc);
	if (r == ACME_SMIME_OK) {
		r = store_append(&w, data, len);
	}
	if (r == ACME_SMIME_OK) {
		return store_commit(&w);
	}
	store_abort(&w);
	return r;
}

/* ========================================================================
 * 8. Transport: BearSSL's client engine over the caller's socket hooks
 *
 * One TLS 1.2 connection at a time, driven like BearSSL's own br_sslio
 * loop but without blocking: when the socket would block, the engine
 * returns ACME_SMIME_WANT_IO with the events it waits for and resumes
 * from the same place on the next step. Certificates are checked against
 * the caller's trust anchors at the time the `unix_time` hook gives.
 * ====================================================================== */

/* Connection states. */
#define CONN_CLOSED 0
#define CONN_OPEN   1   /* TCP connected or connecting, TLS running */

/* Results of the transport calls besides errors. */
#define IO_READY 1
#define IO_BLOCK 0

/* The Unix epoch in BearSSL's calendar (days since 1 Jan of year 0). */
#define BR_DAYS_AT_UNIX_EPOCH 719528u

static const uint16_t tls_suites[] = {
	BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
};

static void engine_fail(acme_smime_ctx *ctx, int code, int retryable,
	const char *text);

/* BearSSL's TLS error codes in words (the X.509 ones matter most). */
static const char *
tls_error_text(int err)
{
	switch (err) {
	case BR_ERR_X509_NOT_TRUSTED:     return "server certificate not trusted (unknown issuer)";
	case BR_ERR_X509_BAD_SERVER_NAME: return "server certificate does not match the host name";
	case BR_ERR_X509_EXPIRED:         return "server certificate expired or not yet valid";
	case BR_ERR_X509_TIME_UNKNOWN:    return "time unknown: cannot check the server certificate";
	case BR_ERR_X509_CRITICAL_EXTENSION: return "server certificate has an unsupported critical extension";
	case BR_ERR_X509_FORBIDDEN_KEY_USAGE: return "server certificate key usage forbids TLS";
	case BR_ERR_X509_WEAK_PUBLIC_KEY:  return "server certificate key too weak";
	case BR_ERR_X509_UNSUPPORTED:      return "server certificate uses an unsupported algorithm";
	case BR_ERR_BAD_VERSION:           return "server does not speak TLS 1.2";
	case BR_ERR_BAD_CIPHER_SUITE:      return "no cipher suite in common with the server";
	case BR_ERR_UNEXPECTED:            return "unexpected TLS message";
	case BR_ERR_BAD_MAC:               return "TLS record authentication failed";
	case BR_ERR_IO:                    return "connection failed during TLS";
	default:
		if (err >= BR_ERR_RECV_FATAL_ALERT && err < BR_ERR_RECV_FATAL_ALERT + 256) {
			return "server sent a fatal TLS alert";
		}
		if (err >= BR_ERR_X509_OK && err < BR_ERR_X509_OK + 64) {
			return "server certificate rejected";
		}
		return "TLS failure";
	}
}

/* The TLS set-up: TLS 1.2, ECDHE with AES-GCM or ChaCha20-Poly1305,
 * ECDSA and RSA server keys. A short list keeps the linked code small. */
static void
tls_setup(acme_smime_ctx *ctx, unsigned char *iobuf, size_t iobuf_len)
{
	br_ssl_client_context *cc = &ctx->ssl;

	br_ssl_client_zero(cc);
	br_ssl_engine_set_versions(&cc->eng, BR_TLS12, BR_TLS12);
	br_ssl_engine_set_suites(&cc->eng, tls_suites, ARRAY_LEN(tls_suites));
	br_ssl_engine_set_hash(&cc->eng, br_sha256_ID, &br_sha256_vtable);
	br_ssl_engine_set_hash(&cc->eng, br_sha384_ID, &br_sha384_vtable);
	br_ssl_engine_set_prf_sha256(&cc->eng, &br_tls12_sha256_prf);
	br_ssl_engine_set_prf_sha384(&cc->eng, &br_tls12_sha384_prf);
	br_ssl_engine_set_default_ec(&cc->eng);
	br_ssl_engine_set_default_aes_gcm(&cc->eng);
	br_ssl_engine_set_default_chapol(&cc->eng);
	br_ssl_client_set_default_rsapub(cc);
	br_ssl_engine_set_default_ecdsa(&cc->eng);
	/* The X.509 engine is set per connection (tls_start): the ACME
	 * server and the mail servers have their own anchors. */
	br_ssl_engine_set_buffer(&cc->eng, iobuf, iobuf_len, 0);
}

static void
tls_close(acme_smime_ctx *ctx)
{
	if (ctx->sock >= 0) {
		ctx->ports->net_close(ctx->ports->user, ctx->sock);
	}
	ctx->sock = -1;
	ctx->conn_state = CONN_CLOSED;
}

/* Start TLS on the open socket, checking the server against anchors
 * (the ACME server's or the mail servers'). A session from the previous
 * connection to the same host is resumed (a cheaper handshake when the
 * server closed on us). */
static int
tls_start(acme_smime_ctx *ctx, const br_x509_trust_anchor *tas, size_t ntas,
	int resume)
{
	br_x509_minimal_context *xc = &ctx->x509;
	uint64_t now = ctx->ports->unix_time(ctx->ports->user);

	if (now == 0) {
		tls_close(ctx);
		engine_fail(ctx, ACME_SMIME_ERR_TIME, 1,
		    "the clock is unknown: cannot check the server certificate");
		return ACME_SMIME_ERR_TIME;
	}
	if (tas == NULL || ntas == 0) {
		tls_close(ctx);
		engine_fail(ctx, ACME_SMIME_ERR_INVALID, 0, "no trust anchors for this server");
		return ACME_SMIME_ERR_INVALID;
	}
	br_x509_minimal_init(xc, &br_sha256_vtable, tas, ntas);
	br_x509_minimal_set_hash(xc, br_sha256_ID, &br_sha256_vtable);
	br_x509_minimal_set_hash(xc, br_sha384_ID, &br_sha384_vtable);
	br_x509_minimal_set_hash(xc, br_sha512_ID, &br_sha512_vtable);
	br_x509_minimal_set_rsa(xc, br_rsa_pkcs1_vrfy_get_default());
	br_x509_minimal_set_ecdsa(xc, br_ec_get_default(), br_ecdsa_vrfy_asn1_get_default());
	br_x509_minimal_set_time(xc,
	    (uint32_t)(BR_DAYS_AT_UNIX_EPOCH + now / 86400u), (uint32_t)(now % 86400u));
	br_ssl_engine_set_x509(&ctx->ssl.eng, &xc->vtable);
	if (!br_ssl_client_reset(&ctx->ssl, ctx->conn_host, resume)) {
		tls_close(ctx);
		engine_fail(ctx, ACME_SMIME_ERR_TLS, 0, "TLS set-up failed");
		return ACME_SMIME_ERR_TLS;
	}
	ctx->conn_tls = 1;
	ctx->handshake_counted = 0;
	return ACME_SMIME_OK;
}

/* Open a TCP connection to host:port and, unless plain, start TLS on it
 * with the given anchors. mail marks a connection to a mail server (it is
 * never reused for HTTP). The ACME server's TLS session is kept across
 * the mail connections in between, so coming back to it costs a resumed
 * handshake, not a full one, where the server keeps sessions. */
static int
conn_open(acme_smime_ctx *ctx, const char *host, unsigned port, int tls,
	const br_x509_trust_anchor *tas, size_t ntas, int mail)
{
	int resume = 0;

	tls_close(ctx);
	ctx->handshake_counted = 0;
	if (copy_field(ctx->conn_host, sizeof ctx->conn_host, host, strlen(host)) < 0) {
		engine_fail(ctx, ACME_SMIME_ERR_LIMIT, 0, "server host name too long");
		return ACME_SMIME_ERR_LIMIT;
	}
	if (!mail && ctx->acme_session_port == port &&
	    strcmp(host, ctx->acme_session_host) == 0) {
		br_ssl_engine_set_session_parameters(&ctx->ssl.eng, &ctx->acme_session);
		resume = 1;
	}
	ctx->conn_port = port;
	ctx->conn_mail = mail;
	ctx->conn_tls = 0;
	ctx->sock = ctx->ports->net_connect(ctx->ports->user, host, port);
	if (ctx->sock < 0) {
		ctx->sock = -1;
		engine_fail(ctx, ACME_SMIME_ERR_NET, 1, mail ?
		    "cannot connect to the mail server" : "cannot connect to the ACME server");
		return ACME_SMIME_ERR_NET;
	}
	ctx->conn_state = CONN_OPEN;
	return tls ? tls_start(ctx, tas, ntas, resume) : ACME_SMIME_OK;
}

/* The engine closed: a clean close_notify is ACME_SMIME_NET_CLOSED, a
 * failure is reported in words. */
static int
tls_closed(acme_smime_ctx *ctx)
{
	int err = br_ssl_engine_last_error(&ctx->ssl.eng);

	tls_close(ctx);
	if (err == BR_ERR_OK) {
		return ACME_SMIME_NET_CLOSED;
	}
	engine_fail(ctx, err == BR_ERR_IO ? ACME_SMIME_ERR_NET : ACME_SMIME_ERR_TLS,
	    err == BR_ERR_IO, tls_error_text(err));
	return ctx->err.code;
}

/*
 * Move records between BearSSL and the socket until the engine can take
 * application data (want = BR_SSL_SENDAPP) or has some (BR_SSL_RECVAPP).
 * Returns IO_READY, IO_BLOCK (ctx->io_events says on what),
 * ACME_SMIME_NET_CLOSED when the peer closed, or an error.
 */
static int
tls_pump(acme_smime_ctx *ctx, unsigned want)
{
	br_ssl_engine_context *eng = &ctx->ssl.eng;
	const acme_smime_ports *p = ctx->ports;

	for (;;) {
		unsigned st = br_ssl_engine_current_state(eng);
		unsigned char *buf;
		size_t len;
		int n;

		if (st & BR_SSL_CLOSED) {
			return tls_closed(ctx);
		}
		if (!ctx->handshake_counted && (st & (BR_SSL_SENDAPP | BR_SSL_RECVAPP))) {
			ctx->handshake_counted = 1;
			ctx->stats.tls_handshakes++;
			if (!ctx->conn_mail) {
				/* Kept for the next ACME connection (see conn_open). */
				br_ssl_engine_get_session_parameters(eng, &ctx->acme_session);
				memcpy(ctx->acme_session_host, ctx->conn_host,
				    sizeof ctx->acme_session_host);
				ctx->acme_session_port = ctx->conn_port;
			}
		}
		if (st & BR_SSL_SENDREC) {
			buf = br_ssl_engine_sendrec_buf(eng, &len);
			n = p->net_send(p->user, ctx->sock, buf, len);
			if (n > 0) {
				br_ssl_engine_sendrec_ack(eng, (size_t)n);
				continue;
			}
			if (n == 0) {
				ctx->io_events = ACME_SMIME_IO_WRITE;
				return IO_BLOCK;
			}
			tls_close(ctx);
			return ACME_SMIME_NET_CLOSED;
		}
		if (st & want) {
			return IO_READY;
		}
		if (st & BR_SSL_RECVREC) {
			buf = br_ssl_engine_recvrec_buf(eng, &len);
			n = p->net_recv(p->user, ctx->sock, buf, len);
			if (n > 0) {
				br_ssl_engine_recvrec_ack(eng, (size_t)n);
				continue;
			}
			if (n == 0) {
				ctx->io_events = ACME_SMIME_IO_READ;
				return IO_BLOCK;
			}
			/* A peer that drops the connection before the handshake
			 * ends is a TLS failure; afterwards it is a closed
			 * keep-alive connection. */
			if (!ctx->handshake_counted) {
				tls_close(ctx);
				engine_fail(ctx, ACME_SMIME_ERR_TLS, 1,
				    "connection closed during the TLS handshake");
				return ACME_SMIME_ERR_TLS;
			}
			tls_close(ctx);
			return ACME_SMIME_NET_CLOSED;
		}
		/* Neither side can move: BearSSL wants application data we
		 * do not have (e.g. SENDAPP while we want RECVAPP). */
		if (want == BR_SSL_RECVAPP && (st & BR_SSL_SENDAPP)) {
			br_ssl_engine_flush(eng, 0);
			if (br_ssl_engine_current_state(eng) == st) {
				ctx->io_events = ACME_SMIME_IO_READ;
				return IO_BLOCK;
			}
			continue;
		}
		ctx->io_events = ACME_SMIME_IO_READ;
		return IO_BLOCK;
	}
}

/* A consumer of received bytes: returns how many it took, or an error. */
typedef long (*conn_parser)(acme_smime_ctx *ctx, const unsigned char *data,
	size_t len);

/* Send src[*sent..len) on the connection, TLS or plain. Returns IO_READY
 * once all of it is handed over (and TLS flushed), IO_BLOCK,
 * ACME_SMIME_NET_CLOSED, or an error. */
static int
conn_send(acme_smime_ctx *ctx, const unsigned char *src, size_t len, size_t *sent)
{
	br_ssl_engine_context *eng = &ctx->ssl.eng;
	const acme_smime_ports *p = ctx->ports;
	unsigned char *buf;
	size_t n;
	int r;

	while (*sent < len) {
		if (ctx->conn_tls) {
			r = tls_pump(ctx, BR_SSL_SENDAPP);
			if (r != IO_READY) {
				return r;
			}
			buf = br_ssl_engine_sendapp_buf(eng, &n);
			if (n > len - *sent) {
				n = len - *sent;
			}
			memcpy(buf, src + *sent, n);
			br_ssl_engine_sendapp_ack(eng, n);
			*sent += n;
			continue;
		}
		r = p->net_send(p->user, ctx->sock, src + *sent, len - *sent);
		if (r > 0) {
			*sent += (size_t)r;
		} else if (r == 0) {
			ctx->io_events = ACME_SMIME_IO_WRITE;
			return IO_BLOCK;
		} else {
			tls_close(ctx);
			return ACME_SMIME_NET_CLOSED;
		}
	}
	if (ctx->conn_tls) {
		br_ssl_engine_flush(eng, 0);
	}
	return IO_READY;
}

/* Give whatever has arrived to parse. Returns IO_READY after parse took
 * its share, IO_BLOCK, ACME_SMIME_NET_CLOSED, or an error. Without TLS
 * the idle TLS buffer receives; bytes parse leaves are dropped, which a
 * request/response protocol without pipelining never has. */
static int
conn_recv(acme_smime_ctx *ctx, conn_parser parse)
{
	const acme_smime_ports *p = ctx->ports;
	unsigned char *buf;
	size_t len;
	long used;
	int r;

	if (ctx->conn_tls) {
		r = tls_pump(ctx, BR_SSL_RECVAPP);
		if (r != IO_READY) {
			return r;
		}
		buf = br_ssl_engine_recvapp_buf(&ctx->ssl.eng, &len);
	} else {
		r = p->net_recv(p->user, ctx->sock, ctx->work, BR_SSL_BUFSIZE_MONO);
		if (r == 0) {
			ctx->io_events = ACME_SMIME_IO_READ;
			return IO_BLOCK;
		}
		if (r < 0) {
			tls_close(ctx);
			return ACME_SMIME_NET_CLOSED;
		}
		buf = ctx->work;
		len = (size_t)r;
	}
	used = parse(ctx, buf, len);
	if (used < 0) {
		tls_close(ctx);
		return (int)used;
	}
	if (ctx->conn_tls) {
		br_ssl_engine_recvapp_ack(&ctx->ssl.eng, (size_t)used);
	}
	return IO_READY;
}

/* Trust anchors from PEM (section 6 of the header). */

typedef struct {
	unsigned char *storage;
	size_t size, used;
	int overflow;
	int trailing;             /* bytes after the certificate's DER */
	br_x509_decoder_context x509;
} ta_loader;

static void
ta_append_dn(void *arg, const void *data, size_t len)
{
	ta_loader *tl = (ta_loader *)arg;

	if (tl->overflow || len > tl->size - tl->used) {
		tl->overflow = 1;
		return;
	}
	memcpy(tl->storage + tl->used, data, len);
	tl->used += len;
}

/* BearSSL's decoder must not be pushed bytes once it has finished (it
 * faults on them): bytes after the certificate make it unusable. */
static void
x509_push_once(br_x509_decoder_context *x, int *trailing, const void *data,
	size_t len)
{
	if (x->decoded || x->err != 0) {
		*trailing |= len > 0;
		return;
	}
	br_x509_decoder_push(x, data, len);
}

static void
ta_push_der(void *arg, const void *data, size_t len)
{
	ta_loader *tl = (ta_loader *)arg;

	x509_push_once(&tl->x509, &tl->trailing, data, len);
}

/* Copy n bytes into storage; NULL when full. */
static unsigned char *
ta_keep(ta_loader *tl, const unsigned char *data, size_t n)
{
	unsigned char *p;

	if (tl->overflow || n > tl->size - tl->used) {
		tl->overflow = 1;
		return NULL;
	}
	p = tl->storage + tl->used;
	memcpy(p, data, n);
	tl->used += n;
	return p;
}

/* Finish one certificate: make it an anchor. Returns 1 added, 0 skipped,
 * or an error. */
static int
ta_finish(ta_loader *tl, size_t dn_start, br_x509_trust_anchor *ta)
{
	br_x509_pkey *pk;

	if (tl->overflow) {
		return ACME_SMIME_ERR_BUFFER;
	}
	if (br_x509_decoder_last_error(&tl->x509) != 0 || tl->trailing ||
	    (pk = br_x509_decoder_get_pkey(&tl->x509)) == NULL) {
		tl->used = dn_start;
		return 0;
	}
	ta->dn.data = tl->storage + dn_start;
	ta->dn.len = tl->used - dn_start;
	ta->flags = br_x509_decoder_isCA(&tl->x509) ? BR_X509_TA_CA : 0;
	ta->pkey.key_type = pk->key_type;
	if (pk->key_type == BR_KEYTYPE_RSA) {
		ta->pkey.key.rsa.n = ta_keep(tl, pk->key.rsa.n, pk->key.rsa.nlen);
		ta->pkey.key.rsa.nlen = pk->key.rsa.nlen;
		ta->pkey.key.rsa.e = ta_keep(tl, pk->key.rsa.e, pk->key.rsa.elen);
		ta->pkey.key.rsa.elen = pk->key.rsa.elen;
	} else if (pk->key_type == BR_KEYTYPE_EC) {
		ta->pkey.key.ec.curve = pk->key.ec.curve;
		ta->pkey.key.ec.q = ta_keep(tl, pk->key.ec.q, pk->key.ec.qlen);
		ta->pkey.key.ec.qlen = pk->key.ec.qlen;
	} else {
		tl->used = dn_start;
		return 0;
	}
	return tl->overflow ? ACME_SMIME_ERR_BUFFER : 1;
}

int
acme_smime_trust_anchors_from_pem(const char *pem, size_t pem_len,
	unsigned char *storage, size_t storage_size,
	br_x509_trust_anchor *tas, size_t max_tas)
{
	br_pem_decoder_context pc;
	ta_loader tl;
	size_t count = 0, dn_start = 0;
	int in_cert = 0;

	if (pem == NULL || storage == NULL || tas == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	tl.storage = storage;
	tl.size = storage_size;
	tl.used = 0;
	tl.overflow = 0;
	br_pem_decoder_init(&pc);
	while (pem_len > 0) {
		size_t n = br_pem_decoder_push(&pc, pem, pem_len);
		int r, ev;

		pem += n;
		pem_len -= n;
		ev = br_pem_decoder_event(&pc);
		if (n == 0 && ev == 0) {
			return ACME_SMIME_ERR_ENCODING;
		}
		switch (ev) {
		case BR_PEM_BEGIN_OBJ:
			in_cert = strcmp(br_pem_decoder_name(&pc), "CERTIFICATE") == 0 ||
			    strcmp(br_pem_decoder_name(&pc), "X509 CERTIFICATE") == 0;
			if (in_cert) {
				if (count >= max_tas) {
					return ACME_SMIME_ERR_BUFFER;
				}
				dn_start = tl.used;
				tl.trailing = 0;
				br_x509_decoder_init(&tl.x509, ta_append_dn, &tl);
				br_pem_decoder_setdest(&pc, ta_push_der, &tl);
			} else {
				br_pem_decoder_setdest(&pc, NULL, NULL);
			}
			break;
		case BR_PEM_END_OBJ:
			if (in_cert) {
				r = ta_finish(&tl, dn_start, &tas[count]);
				if (r < 0) {
					return r;
				}
				count += (size_t)r;
			}
			in_cert = 0;
			break;
		case BR_PEM_ERROR:
			return ACME_SMIME_ERR_ENCODING;
		default:
			break;
		}
	}
	if (in_cert) {
		return ACME_SMIME_ERR_ENCODING;
	}
	return (int)count;
}

/* ========================================================================
 * 9. HTTP/1.1 client
 *
 * Requests are built whole in the HTTP area of the work buffer and pushed
 * through TLS; responses are parsed as they arrive, in any chunking:
 * status line, headers (only the few ACME needs are kept, each bounded;
 * a needed header that exceeds its bound is an error, never truncated),
 * then a Content-Length, chunked or until-close body into the same area.
 * ====================================================================== */

/* Layout of the HTTP area while a request is built: the head is written
 * last, in front of the body; the payload of a JWS is prepared at the
 * end, out of the way of the JWS writer. */
#define HTTP_HEAD_ROOM   512
#define HTTP_PAYLOAD_ROOM 2048

#define REQ_GET      0
#define REQ_HEAD     1
#define REQ_POST     2   /* application/jose+json */
#define REQ_POST_PEM 3   /* same, accepting application/pem-certificate-chain */

/* Response parser states. */
#define RS_STATUS      0
#define RS_HEADER      1
#define RS_BODY        2
#define RS_CHUNK_SIZE  3
#define RS_CHUNK_DATA  4
#define RS_CHUNK_END   5
#define RS_TRAILER     6
#define RS_UNTIL_CLOSE 7
#define RS_DONE        8

/* Exchange phases. */
#define XS_SEND 0
#define XS_RECV 1

/* Fuzzing builds talk plain text to the ACME server so that a fuzzer can
 * play it. Never define ACME_SMIME_FUZZING in a product. */
#ifdef ACME_SMIME_FUZZING
#define HTTP_TLS 0
#else
#define HTTP_TLS 1
#endif

#define CONTENT_LENGTH_NONE ((size_t)-1)

static unsigned char *
http_area(acme_smime_ctx *ctx)
{
	return ctx->work + ACME_SMIME_TLS_AREA;
}

static size_t
http_area_size(const acme_smime_ctx *ctx)
{
	return ctx->work_size - ACME_SMIME_TLS_AREA;
}

/* https://host[:port][/path] -> host, port, path. */
typedef struct {
	char host[ACME_SMIME_MAX_HOST + 1];
	unsigned port;
	const char *path;
} url_parts;

static int
url_split(const char *url, url_parts *u)
{
	const char *h, *end, *colon;
	size_t hlen;

	if (strncmp(url, "https://", 8) != 0) {
		return ACME_SMIME_ERR_INVALID;
	}
	h = url + 8;
	end = h;
	while (*end != '\0' && *end != '/' && *end != '?' && *end != '#') {
		end++;
	}
	colon = NULL;
	if (*h == '[') {
		return ACME_SMIME_ERR_UNSUPPORTED;   /* IPv6 literals: not yet */
	}
	for (colon = h; colon < end && *colon != ':'; colon++) {
	}
	hlen = (size_t)(colon - h);
	if (hlen == 0 || copy_field(u->host, sizeof u->host, h, hlen) < 0) {
		return ACME_SMIME_ERR_INVALID;
	}
	u->port = 443;
	if (colon < end) {
		unsigned long port = 0;
		const char *d;

		if (colon + 1 == end) {
			return ACME_SMIME_ERR_INVALID;
		}
		for (d = colon + 1; d < end; d++) {
			if (!is_digit((unsigned char)*d) || (port = port * 10 +
			    (unsigned long)(*d - '0')) > 65535) {
				return ACME_SMIME_ERR_INVALID;
			}
		}
		if (port == 0) {
			return ACME_SMIME_ERR_INVALID;
		}
		u->port = (unsigned)port;
	}
	u->path = *end == '\0' ? "/" : end;
	/* A URL from the server goes into the request line: nothing but
	 * printable ASCII without spaces may pass (no CR/LF injection). */
	for (end = url; *end != '\0'; end++) {
		if ((unsigned char)*end <= 0x20 || (unsigned char)*end >= 0x7F) {
			return ACME_SMIME_ERR_INVALID;
		}
	}
	return ACME_SMIME_OK;
}

/*
 * Finish a request whose body (body_len bytes) sits at HTTP_HEAD_ROOM in
 * the area: write the head in front of it and note the total length.
 */
static int
http_prepare(acme_smime_ctx *ctx, int kind, const char *url, size_t body_len)
{
	static const char *const method[] = { "GET ", "HEAD ", "POST ", "POST " };
	unsigned char *area = http_area(ctx);
	url_parts u;
	textbuf tb;
	int n;

	if (url_split(url, &u) != ACME_SMIME_OK) {
		engine_fail(ctx, ACME_SMIME_ERR_INVALID, 0, "URL is not https://host[:port]/path");
		return ACME_SMIME_ERR_INVALID;
	}
	tb_init(&tb, ctx->line, sizeof ctx->line);
	tb_puts(&tb, method[kind]);
	tb_puts(&tb, u.path);
	tb_puts(&tb, " HTTP/1.1\r\nHost: ");
	tb_puts(&tb, u.host);
	if (u.port != 443) {
		tb_putc(&tb, ':');
		tb_putu(&tb, u.port, 1);
	}
	tb_puts(&tb, "\r\nUser-Agent: acme_smime/0.1 BearSSL\r\n"
	    "Accept-Language: en\r\n");
	if (kind == REQ_POST_PEM) {
		tb_puts(&tb, "Accept: application/pem-certificate-chain\r\n");
	}
	if (kind >= REQ_POST) {
		tb_puts(&tb, "Content-Type: application/jose+json\r\nContent-Length: ");
		tb_putu(&tb, (unsigned long)body_len, 1);
		tb_puts(&tb, "\r\n");
	}
	tb_puts(&tb, "\r\n");
	n = tb_finish(&tb);
	if (n < 0 || (size_t)n > HTTP_HEAD_ROOM) {
		engine_fail(ctx, ACME_SMIME_ERR_LIMIT, 0, "HTTP request head too long");
		return ACME_SMIME_ERR_LIMIT;
	}
	memmove(area + n, area + HTTP_HEAD_ROOM, body_len);
	memcpy(area, ctx->line, (size_t)n);
	ctx->req_kind = kind;
	ctx->req_len = (size_t)n + body_len;
	ctx->req_sent = 0;
	ctx->resp_bytes = 0;
	ctx->xfer = XS_SEND;
	if (ctx->conn_state == CONN_OPEN && (strcmp(u.host, ctx->conn_host) != 0 ||
	    u.port != ctx->conn_port || ctx->conn_mail)) {
		tls_close(ctx);
	}
	ctx->req_port = u.port;
	copy_field(ctx->req_host, sizeof ctx->req_host, u.host, strlen(u.host));
	ctx->stats.http_requests++;
	return ACME_SMIME_OK;
}

static void
http_response_reset(acme_smime_ctx *ctx)
{
	ctx->resp_state = RS_STATUS;
	ctx->status = 0;
	ctx->content_length = CONTENT_LENGTH_NONE;
	ctx->chunked = 0;
	ctx->keep_alive = 1;
	ctx->chunk_left = 0;
	ctx->body_len = 0;
	ctx->body_total = 0;
	ctx->line_len = 0;
	ctx->line_overflow = 0;
	ctx->location[0] = '\0';
	ctx->link_alternates = 0;
	ctx->resp_nonce[0] = '\0';
	ctx->retry_after_s = 0;
	ctx->has_retry_after = 0;
	ctx->problem_json = 0;
	ctx->resp_bytes = 0;
	if (ctx->sink) {
		store_abort(&ctx->store_writer);
		ctx->sink = 0;
	}
}

static int
http_fail(acme_smime_ctx *ctx, const char *text)
{
	engine_fail(ctx, ACME_SMIME_ERR_HTTP, 1, text);
	return ACME_SMIME_ERR_HTTP;
}

/* IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT" -> Unix seconds, or -1. */
static long long
parse_http_date(const char *s, size_t n)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	long day, year, hh, mm, ss;
	unsigned m;

	if (n != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
	    s[16] != ' ' || s[19] != ':' || s[22] != ':' || memcmp(s + 25, " GMT", 4) != 0) {
		return -1;
	}
	for (m = 0; m < 12; m++) {
		if (memcmp(s + 8, months + 3 * m, 3) == 0) {
			break;
		}
	}
	day = parse_digits(s + 5, 2);
	year = parse_digits(s + 12, 4);
	hh = parse_digits(s + 17, 2);
	mm = parse_digits(s + 20, 2);
	ss = parse_digits(s + 23, 2);
	if (m == 12 || day < 1 || day > 31 || year < 1970 || hh < 0 || hh > 23 ||
	    mm < 0 || mm > 59 || ss < 0 || ss > 60) {
		return -1;
	}
	return (long long)days_from_civil(year, m + 1, (unsigned)day) * 86400 +
	    hh * 3600 + mm * 60 + ss;
}

/* Retry-After: delta-seconds or an HTTP-date (RFC 9110 section 10.2.3). */
static void
http_retry_after(acme_smime_ctx *ctx, const char *v, size_t n)
{
	long long when, now;

	if (n > 0 && n <= 9 && parse_digits(v, n) >= 0) {
		ctx->retry_after_s = (uint32_t)parse_digits(v, n);
		ctx->has_retry_after = 1;
		return;
	}
	when = parse_http_date(v, n);
	now = (long long)ctx->ports->unix_time(ctx->ports->user);
	if (when >= 0 && now > 0) {
		ctx->retry_after_s = when > now ? (uint32_t)(when - now) : 0;
		ctx->has_retry_after = 1;
	}
}

/* Does the comma-separated list v contain token tok (case-insensitive)? */
static int
http_list_has(const char *v, size_t n, const char *tok)
{
	size_t i = 0, tlen = strlen(tok);

	while (i < n) {
		size_t s, e;

		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) {
			i++;
		}
		s = i;
		while (i < n && v[i] != ',') {
			i++;
		}
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) {
			e--;
		}
		if (e - s == tlen && ascii_caseeq(v + s, tlen, tok)) {
			return 1;
		}
	}
	return 0;
}

/* Headers we keep; everything else is skipped. */
static int
http_header_needed(const char *name, size_t n)
{
	static const char *const needed[] = {
		"content-length", "transfer-encoding", "connection", "replay-nonce",
		"location", "retry-after", "content-type", "link",
	};
	size_t i;

	for (i = 0; i < ARRAY_LEN(needed); i++) {
		if (ascii_caseeq(name, n, needed[i])) {
			return 1;
		}
	}
	return 0;
}

/*
 * Link (RFC 8288), as ACME uses it (RFC 8555 section 7.4.2 and others):
 * "<url>;rel=up, <url>;rel="alternate"", possibly over several header
 * lines. The number of alternate certificate chains is kept (the engine
 * logs that the default chain was taken); other relations ("up",
 * "index", "terms-of-service") are skipped: the engine knows the URLs
 * they name.
 */
static void
http_links(acme_smime_ctx *ctx, const char *v, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t pe;

		while (i < n && (v[i] == ' ' || v[i] == ',' || v[i] == '\t')) {
			i++;
		}
		if (i >= n || v[i] != '<') {
			return;
		}
		while (i < n && v[i] != '>') {
			i++;
		}
		if (i >= n) {
			return;
		}
		/* The parameters run to the next comma outside quotes. */
		for (pe = ++i; pe < n && v[pe] != ','; pe++) {
			if (v[pe] == '"') {
				while (++pe < n && v[pe] != '"') {
				}
			}
		}
		for (; i + 4 <= pe; i++) {
			if (ascii_caseeq(v + i, 4, "rel=")) {
				const char *r = v + i + 4;
				size_t rl = 0;

				if (r < v + pe && r[0] == '"') {
					r++;
					while (r + rl < v + pe && r[rl] != '"') {
						rl++;
					}
				} else {
					while (r + rl < v + pe && r[rl] != ';' && r[rl] != ' ') {
						rl++;
					}
				}
				if (ascii_caseeq(r, rl, "alternate")) {
					ctx->link_alternates++;
				}
				break;
			}
		}
		i = pe;
	}
}

static int
http_header(acme_smime_ctx *ctx, const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);
	const char *v;
	size_t n, vn;

	if (colon == NULL || colon == line) {
		return http_fail(ctx, "malformed HTTP header line");
	}
	n = (size_t)(colon - line);
	if (ctx->line_overflow) {
		if (http_header_needed(line, n)) {
			return http_fail(ctx, "HTTP header longer than ACME_SMIME_MAX_HEADER_LINE");
		}
		return 0;
	}
	v = colon + 1;
	vn = len - n - 1;
	while (vn > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		vn--;
	}
	while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t')) {
		vn--;
	}
	if (ascii_caseeq(line, n, "content-length")) {
		long cl = vn > 0 && vn <= 9 ? parse_digits(v, vn) : -1;

		if (cl < 0 || (ctx->content_length != CONTENT_LENGTH_NONE &&
		    ctx->content_length != (size_t)cl)) {
			return http_fail(ctx, "bad Content-Length");
		}
		ctx->content_length = (size_t)cl;
	} else if (ascii_caseeq(line, n, "transfer-encoding")) {
		if (!http_list_has(v, vn, "chunked")) {
			return http_fail(ctx, "unsupported Transfer-Encoding");
		}
		ctx->chunked = 1;
	} else if (ascii_caseeq(line, n, "connection")) {
		if (http_list_has(v, vn, "close")) {
			ctx->keep_alive = 0;
		}
	} else if (ascii_caseeq(line, n, "replay-nonce")) {
		size_t i;

		for (i = 0; i < vn && b64_value((unsigned char)v[i], B64_URL) >= 0; i++) {
		}
		/* RFC 8555 section 6.5.1: an invalid nonce is ignored. */
		if (i == vn && vn > 0 && vn <= ACME_SMIME_MAX_NONCE) {
			copy_field(ctx->resp_nonce, sizeof ctx->resp_nonce, v, vn);
		}
	} else if (ascii_caseeq(line, n, "location")) {
		if (copy_field(ctx->location, sizeof ctx->location, v, vn) < 0) {
			return http_fail(ctx, "Location longer than ACME_SMIME_MAX_URL");
		}
	} else if (ascii_caseeq(line, n, "retry-after")) {
		http_retry_after(ctx, v, vn);
	} else if (ascii_caseeq(line, n, "link")) {
		http_links(ctx, v, vn);
	} else if (ascii_caseeq(line, n, "content-type")) {
		size_t e = 0;

		while (e < vn && v[e] != ';' && v[e] != ' ') {
			e++;
		}
		ctx->problem_json = ascii_caseeq(v, e, "application/problem+json");
	}
	return 0;
}

static int
http_status_line(acme_smime_ctx *ctx, const char *line, size_t len)
{
	long code;

	if (ctx->line_overflow || len < 12 || memcmp(line, "HTTP/1.", 7) != 0 ||
	    line[8] != ' ' || (len > 12 && line[12] != ' ') ||
	    (code = parse_digits(line + 9, 3)) < 100) {
		return http_fail(ctx, "malformed HTTP status line");
	}
	ctx->status = (int)code;
	if (line[7] == '0') {
		ctx->keep_alive = 0;
	}
	return 0;
}

/* The header block ended: decide how the body is delimited. */
static int
http_headers_done(acme_smime_ctx *ctx)
{
	if (ctx->status >= 100 && ctx->status < 200) {
		http_response_reset(ctx);   /* interim response: skip it */
		return 0;
	}
	/* A certificate chain goes to flash as it arrives (only its start
	 * stays in RAM, for the engine to read the leaf). */
	if (ctx->sink_wanted && ctx->status == 200 && ctx->ports->flash != NULL) {
		int r = store_begin(&ctx->store_writer, ctx->ports->flash,
		    STORE_REC_CERT);

		if (r < 0) {
			engine_fail(ctx, ACME_SMIME_ERR_STORE, 0,
			    "cannot start writing the certificate to flash");
			return r;
		}
		ctx->sink = 1;
		ctx->sink_len = 0;
	}
	if (ctx->req_kind == REQ_HEAD || ctx->status == 204 || ctx->status == 304) {
		ctx->resp_state = RS_DONE;
	} else if (ctx->chunked) {
		ctx->resp_state = RS_CHUNK_SIZE;
	} else if (ctx->content_length != CONTENT_LENGTH_NONE) {
		ctx->resp_state = ctx->content_length == 0 ? RS_DONE : RS_BODY;
	} else {
		ctx->keep_alive = 0;
		ctx->resp_state = RS_UNTIL_CLOSE;
	}
	return 0;
}

static int
http_chunk_size(acme_smime_ctx *ctx, const char *line, size_t len)
{
	size_t i, size = 0;

	for (i = 0; i < len && hex_value((unsigned char)line[i]) >= 0; i++) {
		if (size > (SIZE_MAX >> 8)) {
			return http_fail(ctx, "HTTP chunk too large");
		}
		size = size * 16 + (size_t)hex_value((unsigned char)line[i]);
	}
	if (i == 0 || ctx->line_overflow || (i < len && line[i] != ';' &&
	    line[i] != ' ' && line[i] != '\t')) {
		return http_fail(ctx, "malformed HTTP chunk size");
	}
	ctx->chunk_left = size;
	ctx->resp_state = size == 0 ? RS_TRAILER : RS_CHUNK_DATA;
	return 0;
}

/* A complete line in ctx->line (CR removed). */
static int
http_line(acme_smime_ctx *ctx)
{
	const char *line = ctx->line;
	size_t len = ctx->line_len;
	int r = 0;

	switch (ctx->resp_state) {
	case RS_STATUS:
		r = http_status_line(ctx, line, len);
		ctx->resp_state = RS_HEADER;
		break;
	case RS_HEADER:
		r = len == 0 && !ctx->line_overflow ? http_headers_done(ctx) :
		    http_header(ctx, line, len);
		break;
	case RS_CHUNK_SIZE:
		r = http_chunk_size(ctx, line, len);
		break;
	case RS_CHUNK_END:
		if (len != 0) {
			return http_fail(ctx, "missing CRLF after HTTP chunk");
		}
		ctx->resp_state = RS_CHUNK_SIZE;
		break;
	case RS_TRAILER:
		if (len == 0 && !ctx->line_overflow) {
			ctx->resp_state = RS_DONE;
		}
		break;
	default:
		break;
	}
	ctx->line_len = 0;
	ctx->line_overflow = 0;
	return r;
}

/* Append body bytes to the area; the last byte is kept for a NUL. When
 * the body streams to flash, the area keeps what fits of its start. */
static int
http_body(acme_smime_ctx *ctx, const unsigned char *data, size_t n)
{
	if (ctx->sink) {
		size_t room = http_area_size(ctx) - 1 - ctx->body_len;

		if (store_append(&ctx->store_writer, data, n) < 0) {
			engine_fail(ctx, ctx->store_writer.failed == ACME_SMIME_ERR_LIMIT ?
			    ACME_SMIME_ERR_LIMIT : ACME_SMIME_ERR_STORE, 0,
			    "cannot write the certificate chain to flash");
			return ctx->err.code;
		}
		ctx->sink_len += n;
		ctx->body_total += n;
		memcpy(http_area(ctx) + ctx->body_len, data, n < room ? n : room);
		ctx->body_len += n < room ? n : room;
		return 0;
	}
	if (n >= http_area_size(ctx) - ctx->body_len) {
		engine_fail(ctx, ACME_SMIME_ERR_LIMIT, 0,
		    "HTTP response body larger than ACME_SMIME_HTTP_AREA");
		return ACME_SMIME_ERR_LIMIT;
	}
	memcpy(http_area(ctx) + ctx->body_len, data, n);
	ctx->body_len += n;
	ctx->body_total += n;
	return 0;
}

/* Feed received bytes to the parser; returns how many it took (it stops
 * at the end of the response) or an error. */
static long
http_parse(acme_smime_ctx *ctx, const unsigned char *data, size_t len)
{
	size_t i = 0;
	int r;

	while (i < len && ctx->resp_state != RS_DONE) {
		size_t take;

		switch (ctx->resp_state) {
		case RS_BODY:
		case RS_CHUNK_DATA:
			take = ctx->resp_state == RS_BODY ?
			    ctx->content_length - ctx->body_total : ctx->chunk_left;
			if (take > len - i) {
				take = len - i;
			}
			if ((r = http_body(ctx, data + i, take)) < 0) {
				return r;
			}
			i += take;
			if (ctx->resp_state == RS_BODY) {
				if (ctx->body_total == ctx->content_length) {
					ctx->resp_state = RS_DONE;
				}
			} else if ((ctx->chunk_left -= take) == 0) {
				ctx->resp_state = RS_CHUNK_END;
			}
			break;
		case RS_UNTIL_CLOSE:
			if ((r = http_body(ctx, data + i, len - i)) < 0) {
				return r;
			}
			i = len;
			break;
		default:
			if (data[i] == '\n') {
				if (ctx->line_len > 0 && ctx->line[ctx->line_len - 1] == '\r') {
					ctx->line_len--;
				}
				ctx->line[ctx->line_len] = '\0';
				if ((r = http_line(ctx)) < 0) {
					return r;
				}
			} else if (ctx->line_len < ACME_SMIME_MAX_HEADER_LINE) {
				ctx->line[ctx->line_len++] = (char)data[i];
			} else {
				ctx->line_overflow = 1;
			}
			i++;
			break;
		}
	}
	ctx->resp_bytes += i;
	return (long)i;
}

/* The server closed the connection. If it was a kept-alive connection
 * closed before any byte of the answer, open a new one and send again
 * (servers close idle connections at any time); else it is an error. */
static int
http_reopen(acme_smime_ctx *ctx)
{
	if (ctx->conn_requests > 0 && ctx->resp_bytes == 0) {
		ctx->conn_requests = 0;
		ctx->req_sent = 0;
		ctx->xfer = XS_SEND;
		return 0;
	}
	engine_fail(ctx, ACME_SMIME_ERR_NET, 1, "connection closed by the server");
	return ACME_SMIME_ERR_NET;
}

/*
 * Drive the prepared request through the connection and parse the
 * response. Returns IO_READY when the response is complete (the body is
 * NUL-terminated in the area), IO_BLOCK, or an error.
 */
static int
http_exchange(acme_smime_ctx *ctx)
{
	int r;

	for (;;) {
		if (ctx->conn_state == CONN_CLOSED) {
			r = conn_open(ctx, ctx->req_host, ctx->req_port, HTTP_TLS,
			    ctx->cfg->trust_anchors, ctx->cfg->trust_anchor_count, 0);
			if (r < 0) {
				return r;
			}
			ctx->conn_requests = 0;
		}
		if (ctx->xfer == XS_SEND) {
			r = conn_send(ctx, http_area(ctx), ctx->req_len, &ctx->req_sent);
			if (r == IO_READY) {
				ctx->xfer = XS_RECV;
				http_response_reset(ctx);
				continue;
			}
		} else {
			r = conn_recv(ctx, http_parse);
			if (r == IO_READY) {
				if (ctx->resp_state == RS_DONE) {
					break;
				}
				continue;
			}
			if (r == ACME_SMIME_NET_CLOSED && ctx->resp_state == RS_UNTIL_CLOSE) {
				ctx->resp_state = RS_DONE;
				break;
			}
		}
		if (r != ACME_SMIME_NET_CLOSED) {
			return r;
		}
		if ((r = http_reopen(ctx)) < 0) {
			return r;
		}
	}
	http_area(ctx)[ctx->body_len] = '\0';
	ctx->conn_requests++;
	if (!ctx->keep_alive) {
		/* Orderly close; BearSSL's close_notify is not waited for. */
		tls_close(ctx);
	}
	return IO_READY;
}

/* ========================================================================
 * 10. POP3 and SMTP clients
 *
 * The mail dialogues of RFC 8823 on the same connection machinery as
 * HTTP: one command, one response at a time, plain, STARTTLS or implicit
 * TLS. Commands are built in ctx->line and wiped after sending when they
 * carry a secret; responses are parsed as they arrive: POP3 status lines,
 * POP3 multi-line bodies (dot-unstuffed into the HTTP area, bounded) and
 * SMTP replies (multi-line, with the EHLO capabilities we use).
 *
 * ACME_SMIME_NO_MAIL_CLIENTS leaves the clients out (about 4 KB of code
 * on Cortex-M4): email identifiers then need the caller's mailbox hooks.
 * ====================================================================== */

#ifndef ACME_SMIME_NO_MAIL_CLIENTS

/* Response kinds. */
#define MX_POP3_LINE  1   /* a status line */
#define MX_POP3_MULTI 2   /* a multi-line body, into the HTTP area */
#define MX_SMTP       3
#define MX_POP3_LIST  4   /* a multi-line listing, line by line, unbounded */

/* Exchange states. */
#define MXS_SEND    0
#define MXS_STATUS  1   /* the first (POP3) or any (SMTP) reply line */
#define MXS_BOL     2   /* POP3 body, at the beginning of a line */
#define MXS_MID     3
#define MXS_DOT     4   /* a '.' at the beginning of a line */
#define MXS_DOTCR   5
#define MXS_DONE    6

/* Capabilities from SMTP EHLO or POP3 CAPA (RFC 2449). */
#define CAP_STARTTLS   1u   /* SMTP STARTTLS, POP3 STLS */
#define CAP_AUTH_PLAIN 2u
#define CAP_AUTH_LOGIN 4u
#define CAP_TOP        8u
#define CAP_UIDL       16u
#define CAP_USER       32u
#define CAP_KNOWN      64u  /* POP3: CAPA answered, what it lacks is absent */

/* Where the bytes to send are: ctx->line or the HTTP area. */
#define MX_FROM_LINE 0
#define MX_FROM_AREA 1

/* Prepare a command "a[ b]\r\n" (a NULL: only read the greeting). A
 * secret command is wiped from memory once sent. */
static int
mx_command(acme_smime_ctx *ctx, int kind, const char *a, const char *b, int secret)
{
	textbuf tb;

	ctx->mx_kind = kind;
	ctx->mx_ok = 0;
	ctx->mx_code = 0;
	ctx->mx_truncated = 0;
	ctx->mx_secret = secret;
	ctx->mx_from = MX_FROM_LINE;
	ctx->req_sent = 0;
	ctx->req_len = 0;
	ctx->line_len = 0;
	ctx->body_len = 0;
	ctx->mx_state = a == NULL ? MXS_STATUS : MXS_SEND;
	if (a == NULL) {
		return 0;
	}
	tb_init(&tb, ctx->line, sizeof ctx->line);
	tb_puts(&tb, a);
	if (b != NULL) {
		tb_putc(&tb, ' ');
		tb_puts(&tb, b);
	}
	tb_puts(&tb, "\r\n");
	if (tb_finish(&tb) < 0) {
		wipe(ctx->line, sizeof ctx->line);
		engine_fail(ctx, ACME_SMIME_ERR_LIMIT, 0, "mail command too long");
		return ACME_SMIME_ERR_LIMIT;
	}
	ctx->req_len = tb.len;
	return 0;
}

static void pop3_body_line(acme_smime_ctx *ctx);

/* Append one body byte to the area; past its end the body is marked
 * truncated (the caller refuses it) but still read to its end. A
 * listing goes to ctx->line instead, one line at a time. */
static void
mx_emit(acme_smime_ctx *ctx, unsigned char c)
{
	if (ctx->mx_kind == MX_POP3_LIST) {
		if (c == '\n') {
			if (ctx->line_len > 0 && ctx->line[ctx->line_len - 1] == '\r') {
				ctx->line_len--;
			}
			ctx->line[ctx->line_len] = '\0';
			pop3_body_line(ctx);
			ctx->line_len = 0;
		} else if (ctx->line_len < ACME_SMIME_MAX_HEADER_LINE) {
			ctx->line[ctx->line_len++] = (char)c;
		} else {
			ctx->list_bad = 1;
		}
		return;
	}
	if (ctx->body_len + 1 < http_area_size(ctx)) {
		http_area(ctx)[ctx->body_len++] = c;
	} else {
		ctx->mx_truncated = 1;
	}
}

/* Is word one of the space-separated words of s (case-insensitive)? */
static int
mx_has_word(const char *s, size_t n, const char *word)
{
	size_t i = 0, wl = strlen(word);

	while (i < n) {
		size_t st;

		while (i < n && s[i] == ' ') {
			i++;
		}
		st = i;
		while (i < n && s[i] != ' ') {
			i++;
		}
		if (i - st == wl && ascii_caseeq(s + st, wl, word)) {
			return 1;
		}
	}
	return 0;
}

/* An SMTP reply line: code, continuation, and EHLO capabilities. */
static void
mx_smtp_line(acme_smime_ctx *ctx)
{
	const char *l = ctx->line;
	size_t n = ctx->line_len;
	long code = n >= 3 ? parse_digits(l, 3) : -1;

	if (code < 200 || code > 599 || (n > 3 && l[3] != ' ' && l[3] != '-')) {
		ctx->mx_code = -1;
		ctx->mx_state = MXS_DONE;
		return;
	}
	if (code == 250 && n > 4) {
		if (ascii_caseeq(l + 4, n - 4, "STARTTLS")) {
			ctx->mail_caps |= CAP_STARTTLS;
		} else if (n > 9 && ascii_caseeq(l + 4, 5, "AUTH ")) {
			if (mx_has_word(l + 9, n - 9, "PLAIN")) {
				ctx->mail_caps |= CAP_AUTH_PLAIN;
			}
			if (mx_has_word(l + 9, n - 9, "LOGIN")) {
				ctx->mail_caps |= CAP_AUTH_LOGIN;
			}
		}
	}
	ctx->mx_code = (int)code;
	if (n <= 3 || l[3] == ' ') {
		ctx->mx_state = MXS_DONE;
	}
}

/* Feed received bytes; returns how many were used. */
static long
mx_parse(acme_smime_ctx *ctx, const unsigned char *data, size_t len)
{
	size_t i;

	for (i = 0; i < len && ctx->mx_state != MXS_DONE; i++) {
		unsigned char c = data[i];

		switch (ctx->mx_state) {
		case MXS_STATUS:
			if (c != '\n') {
				if (ctx->line_len < ACME_SMIME_MAX_HEADER_LINE) {
					ctx->line[ctx->line_len++] = (char)c;
				}
				break;
			}
			if (ctx->line_len > 0 && ctx->line[ctx->line_len - 1] == '\r') {
				ctx->line_len--;
			}
			ctx->line[ctx->line_len] = '\0';
			if (ctx->mx_kind == MX_SMTP) {
				mx_smtp_line(ctx);
			} else {
				ctx->mx_ok = ctx->line_len >= 3 && memcmp(ctx->line, "+OK", 3) == 0;
				ctx->mx_state = ctx->mx_kind != MX_POP3_LINE && ctx->mx_ok ?
				    MXS_BOL : MXS_DONE;
			}
			if (ctx->mx_state == MXS_STATUS || ctx->mx_state == MXS_BOL) {
				ctx->line_len = 0;
			}
			break;
		case MXS_BOL:
			if (c == '.') {
				ctx->mx_state = MXS_DOT;
				break;
			}
			mx_emit(ctx, c);
			ctx->mx_state = c == '\n' ? MXS_BOL : MXS_MID;
			break;
		case MXS_MID:
			mx_emit(ctx, c);
			if (c == '\n') {
				ctx->mx_state = MXS_BOL;
			}
			break;
		case MXS_DOT:
			/* ".\r\n" ends the body; any other dot was stuffed. */
			if (c == '\r') {
				ctx->mx_state = MXS_DOTCR;
			} else if (c == '\n') {
				ctx->mx_state = MXS_DONE;
			} else {
				mx_emit(ctx, c);
				ctx->mx_state = MXS_MID;
			}
			break;
		default: /* MXS_DOTCR */
			if (c == '\n') {
				ctx->mx_state = MXS_DONE;
			} else {
				mx_emit(ctx, '\r');
				mx_emit(ctx, c);
				ctx->mx_state = MXS_MID;
			}
			break;
		}
	}
	return (long)i;
}

/*
 * Run the prepared command: send it, then read its response. Returns
 * IO_READY when the response is complete, IO_BLOCK, or an error.
 */
static int
mx_exchange(acme_smime_ctx *ctx)
{
	int r;

	for (;;) {
		if (ctx->conn_state == CONN_CLOSED) {
			engine_fail(ctx, ACME_SMIME_ERR_NET, 1,
			    "connection closed by the mail server");
			return ACME_SMIME_ERR_NET;
		}
		if (ctx->mx_state == MXS_SEND) {
			r = conn_send(ctx, ctx->mx_from == MX_FROM_AREA ? http_area(ctx) :
			    (const unsigned char *)ctx->line, ctx->req_len, &ctx->req_sent);
			if (r != IO_READY) {
				if (r == ACME_SMIME_NET_CLOSED) {
					continue;
				}
				return r;
			}
			if (ctx->mx_secret) {
				wipe(ctx->line, sizeof ctx->line);
			}
			ctx->line_len = 0;
			ctx->mx_state = MXS_STATUS;
		}
		if (ctx->mx_state == MXS_DONE) {
			if (ctx->mx_kind == MX_POP3_MULTI) {
				http_area(ctx)[ctx->body_len] = '\0';
			}
			return IO_READY;
		}
		r = conn_recv(ctx, mx_parse);
		if (r != IO_READY && r != ACME_SMIME_NET_CLOSED) {
			return r;
		}
	}
}

/* Replace the command's closing CRLF by base64 (with padding) of data,
 * then CRLF again: SMTP AUTH arguments. */
static int
mx_put_base64(acme_smime_ctx *ctx, const unsigned char *data, size_t n)
{
	size_t enc = (n + 2) / 3 * 4, raw = B64_ENCODED_LEN(n);
	size_t len = ctx->req_len >= 2 ? ctx->req_len - 2 : 0;

	if (len + enc + 2 >= sizeof ctx->line) {
		wipe(ctx->line, sizeof ctx->line);
		engine_fail(ctx, ACME_SMIME_ERR_LIMIT, 0, "SMTP AUTH argument too long");
		return ACME_SMIME_ERR_LIMIT;
	}
	b64_encode_raw(ctx->line + len, data, n, 0);
	memset(ctx->line + len + raw, '=', enc - raw);
	memcpy(ctx->line + len + enc, "\r\n", 2);
	ctx->req_len = len + enc + 2;
	return 0;
}

#else /* ACME_SMIME_NO_MAIL_CLIENTS: no state talks to a mail server */

static int
mx_exchange(acme_smime_ctx *ctx)
{
	engine_fail(ctx, ACME_SMIME_ERR_UNSUPPORTED, 0, "built without the mail clients");
	return ACME_SMIME_ERR_UNSUPPORTED;
}
#endif /* ACME_SMIME_NO_MAIL_CLIENTS */

/* ========================================================================
 * 11. Engine: the RFC 8555 and RFC 8823 flow as a resumable state machine
 *
 * The state table (engine_states[]) is the map of the client. Each state
 * that talks to the ACME server or to a mail server has a request builder
 * and a response handler; the step function around them handles what
 * every exchange shares: nonces, badNonce retries, rate limits, server
 * errors, lost connections, waits. What must survive a power cut is
 * written to the store (section 7) before the step that depends on it.
 * Mail goes through the POP3 and SMTP states, or, when the caller gives
 * its own mailbox (ports->mailbox), through local states that call its
 * hooks; the RFC 8823 rules around them are the same code.
 * ====================================================================== */

/* Engine states (ctx->state); order matches engine_states[]. */
enum {
	ST_DIRECTORY,
	ST_NONCE,
	ST_ACCOUNT,
	ST_ORDER,
	ST_AUTHZ,
	ST_CHALLENGE_PROVISION,
	ST_CHALLENGE_RESPOND,
	ST_AUTHZ_POLL,
	ST_FINALIZE,
	ST_ORDER_POLL,
	ST_DOWNLOAD,
	ST_RESUME,
	ST_POP3_CONNECT,
	ST_POP3_CAPA,
	ST_POP3_STLS,
	ST_POP3_USER,
	ST_POP3_PASS,
	ST_POP3_UIDL,
	ST_POP3_LIST,
	ST_POP3_TOP,
	ST_POP3_RETR,
	ST_POP3_DELE,
	ST_POP3_QUIT,
	ST_SMTP_CONNECT,
	ST_SMTP_EHLO,
	ST_SMTP_STARTTLS,
	ST_SMTP_AUTH,
	ST_SMTP_AUTH_USER,
	ST_SMTP_AUTH_PASS,
	ST_SMTP_MAIL,
	ST_SMTP_RCPT,
	ST_SMTP_DATA,
	ST_SMTP_BODY,
	ST_SMTP_QUIT,
	ST_MBOX_LIST,
	ST_MBOX_READ,
	ST_MBOX_REMOVE,
	ST_MBOX_SEND,
	ST_DONE,
	ST_COUNT
};

/* Phases of a state (ctx->phase). */
#define PH_BUILD    0   /* build the request, or run a local state */
#define PH_EXCHANGE 1   /* request in flight */
#define PH_WAIT     2   /* waiting until ctx->wake_ms */

/* What was done for the current email-reply-00 challenge (persisted). */
#define EMAIL_ANSWERED 1u   /* recorded before the reply is sent: never twice */
#define EMAIL_SENT     2u   /* the SMTP server accepted the reply */
#define EMAIL_POSTED   4u   /* the challenge was POSTed */

/* Why a POP3 session runs. */
#define MBOX_SNAPSHOT 0
#define MBOX_FETCH    1

static void
engine_log(acme_smime_ctx *ctx, int level, const char *a, const char *b)
{
	char msg[ACME_SMIME_MAX_URL + 96];
	textbuf tb;

	if (ctx->ports->log == NULL) {
		return;
	}
	tb_init(&tb, msg, sizeof msg);
	tb_puts(&tb, a);
	if (b != NULL) {
		tb_puts(&tb, b);
	}
	if (tb_finish(&tb) < 0) {
		memcpy(msg + sizeof msg - 4, "...", 4);
	}
	ctx->ports->log(ctx->ports->user, level, msg);
}

/* Record the sticky error (the first one wins). */
static void
engine_fail(acme_smime_ctx *ctx, int code, int retryable, const char *text)
{
	if (ctx->err.code != 0) {
		return;
	}
	ctx->err.code = code;
	ctx->err.retryable = retryable;
	copy_field(ctx->err.text, sizeof ctx->err.text, text,
	    strlen(text) < sizeof ctx->err.text ? strlen(text) : sizeof ctx->err.text - 1);
	engine_log(ctx, ACME_SMIME_LOG_ERROR, "error: ", ctx->err.text);
}

static uint64_t
engine_now_ms(const acme_smime_ctx *ctx)
{
	return ctx->ports->monotonic_ms(ctx->ports->user);
}

/* Wait seconds, then continue in state next; why is a short reason for
 * progress displays ("poll", "retry-after", "rate-limited", ...). */
static int
engine_wait(acme_smime_ctx *ctx, uint32_t seconds, int next, const char *why)
{
	char msg[48];
	textbuf tb;

	tb_init(&tb, msg, sizeof msg);
	tb_putu(&tb, seconds, 1);
	tb_puts(&tb, " s (");
	tb_puts(&tb, why);
	tb_putc(&tb, ')');
	tb_finish(&tb);
	engine_log(ctx, ACME_SMIME_LOG_INFO, "waiting ", msg);
	ctx->wait_reason = why;
	ctx->wake_ms = engine_now_ms(ctx) + (uint64_t)seconds * 1000u;
	ctx->phase = PH_WAIT;
	ctx->state = next;
	return ACME_SMIME_WANT_TIME;
}

static uint32_t
cfg_or(uint32_t v, uint32_t dflt)
{
	return v != 0 ? v : dflt;
}

/* The next poll delay: the server's Retry-After, clamped; without one, a
 * delay that doubles from poll_min_s up to poll_max_s. */
static uint32_t
engine_poll_delay(acme_smime_ctx *ctx)
{
	uint32_t lo = cfg_or(ctx->cfg->poll_min_s, 1);
	uint32_t hi = cfg_or(ctx->cfg->poll_max_s, 60);
	uint32_t d;

	if (hi < lo) {
		hi = lo;
	}
	if (ctx->has_retry_after) {
		d = ctx->retry_after_s;
	} else {
		d = ctx->poll_delay_s < lo ? lo : ctx->poll_delay_s;
		ctx->poll_delay_s = d > hi / 2 ? hi : d * 2;
	}
	return d < lo ? lo : d > hi ? hi : d;
}

/* Tokens for parsing the response body go after it in the HTTP area,
 * aligned for jsmntok_t: the area starts ACME_SMIME_TLS_AREA (a multiple
 * of 8) into the work buffer, which acme_smime_init() requires to be
 * int-aligned. Returns the count. */
static unsigned
engine_tokens(acme_smime_ctx *ctx, jsmntok_t **tok)
{
	unsigned char *area = http_area(ctx);
	size_t off = (ctx->body_len + sizeof(jsmntok_t)) / sizeof(jsmntok_t) *
	    sizeof(jsmntok_t);
	size_t room = http_area_size(ctx) > off ? http_area_size(ctx) - off : 0;
	size_t ntok = room / sizeof(jsmntok_t);

	*tok = (jsmntok_t *)(void *)(area + off);
	return (unsigned)(ntok > ACME_SMIME_JSON_TOKENS ? ACME_SMIME_JSON_TOKENS : ntok);
}

/* Why the next poll waits: the server said so, or our back-off. */
static const char *
engine_poll_reason(const acme_smime_ctx *ctx)
{
	return ctx->has_retry_after ? "retry-after" : "backoff";
}

/* Wait before polling again, then continue in state next. */
static int
engine_poll(acme_smime_ctx *ctx, int next)
{
	const char *why = engine_poll_reason(ctx);

	return engine_wait(ctx, engine_poll_delay(ctx), next, why);
}

/* Parse the response body as JSON. */
static int
engine_json(acme_smime_ctx *ctx, json_doc *d)
{
	jsmntok_t *tok;
	unsigned ntok = engine_tokens(ctx, &tok);
	int r = json_parse(d, (const char *)http_area(ctx), ctx->body_len, tok, ntok);

	if (r != ACME_SMIME_OK) {
		engine_fail(ctx, r, 0, r == ACME_SMIME_ERR_LIMIT ?
		    "server JSON has more tokens than ACME_SMIME_JSON_TOKENS" :
		    "server sent malformed JSON");
	}
	return r;
}

/* Copy string member key of object obj into a fixed field. */
static int
engine_member(acme_smime_ctx *ctx, const json_doc *d, int obj, const char *key,
	char *out, size_t out_size)
{
	int r = json_get_member(d, obj, key, out, out_size);

	if (r < 0) {
		engine_log(ctx, ACME_SMIME_LOG_ERROR, "missing or bad JSON member: ", key);
		engine_fail(ctx, r == ACME_SMIME_ERR_BUFFER ? ACME_SMIME_ERR_LIMIT :
		    ACME_SMIME_ERR_JSON, 0, "server object lacks a field or it is too long");
		return ctx->err.code;
	}
	return 0;
}

/* Keep a problem document's type, detail and subproblems in ctx->err. */
static void
engine_problem(acme_smime_ctx *ctx, const json_doc *d)
{
	int sub, item, k;
	textbuf tb;

	json_get_member(d, 0, "type", ctx->err.problem_type, sizeof ctx->err.problem_type);
	if (json_get_member(d, 0, "detail", ctx->err.problem_detail,
	    sizeof ctx->err.problem_detail) < 0) {
		ctx->err.problem_detail[0] = '\0';
	}
	sub = json_find(d, 0, "subproblems");
	tb_init(&tb, ctx->err.problem_detail, sizeof ctx->err.problem_detail);
	tb.len = strlen(ctx->err.problem_detail);
	for (k = 0; (item = json_array_item(d, sub, k)) >= 0; k++) {
		char v[96];
		int id = json_find(d, item, "identifier");

		tb_puts(&tb, "; ");
		if (json_get_member(d, id, "value", v, sizeof v) >= 0) {
			tb_puts(&tb, v);
			tb_puts(&tb, ": ");
		}
		if (json_get_member(d, item, "detail", v, sizeof v) >= 0) {
			tb_puts(&tb, v);
		}
	}
	if (tb_finish(&tb) < 0) {
		/* Keep what fitted, marked as cut. */
		size_t n = sizeof ctx->err.problem_detail;

		json_get_member(d, 0, "detail", ctx->err.problem_detail, n);
		memcpy(ctx->err.problem_detail + n - 4, "...", 4);
	}
}

static int
problem_is(const acme_smime_ctx *ctx, const char *name)
{
	static const char prefix[] = "urn:ietf:params:acme:error:";

	return strncmp(ctx->err.problem_type, prefix, sizeof prefix - 1) == 0 &&
	    strcmp(ctx->err.problem_type + sizeof prefix - 1, name) == 0;
}

static int engine_email_authz(acme_smime_ctx *ctx);
static int engine_has_email(const acme_smime_config *cfg);
static int engine_mailbox(acme_smime_ctx *ctx, int purpose);

/* --- persistence: the records of section 7, as the engine lays them out ---
 *
 * All integers little-endian; strings as a 16-bit length and the bytes.
 *   account:    version 1, key type, key length, key, directory URL,
 *               account URL
 *   enrollment: version 1, identity hash (32), order URL, certificate key
 *               type, length, key; empty when no order is in progress
 *   cert:       the PEM chain, then a fixed trailer (CERT_TRAILER_LEN):
 *               version 1, key type, key length, key (48, zero padded),
 *               notBefore, notAfter (Unix seconds, 64-bit), identity hash,
 *               chain length (32-bit)
 *   time:       a Unix time the clock can never be behind (64-bit)
 * The identity hash is SHA-256 over the directory URL and the identifiers:
 * a stored order or certificate belongs to the configuration that made it.
 */

#define CERT_TRAILER_LEN (3 + 48 + 8 + 8 + 32 + 4)

typedef struct {
	const unsigned char *p;
	size_t len, pos;
	int bad;
} rec_in;

/* Records are built with the bounded writer of section 1. */
typedef textbuf rec_out;

static void
rec_put(rec_out *o, const void *data, size_t n)
{
	tb_putn(o, (const char *)data, n);
}

static void
rec_put_uint(rec_out *o, uint64_t v, unsigned bytes)
{
	unsigned char b[8];
	unsigned i;

	for (i = 0; i < bytes; i++) {
		b[i] = (unsigned char)(v >> (8 * i));
	}
	rec_put(o, b, bytes);
}

static void
rec_put_str(rec_out *o, const char *str)
{
	size_t n = strlen(str);

	rec_put_uint(o, n, 2);
	rec_put(o, str, n);
}

static void
rec_put_key(rec_out *o, const acme_smime_key *key)
{
	rec_put_uint(o, (uint64_t)key->type, 1);
	rec_put_uint(o, key->priv_len, 1);
	rec_put(o, key->priv, key->priv_len);
}

static uint64_t
rec_get_uint(rec_in *in, unsigned bytes)
{
	uint64_t v = 0;
	unsigned i;

	if (in->bad || bytes > in->len - in->pos) {
		in->bad = 1;
		return 0;
	}
	for (i = 0; i < bytes; i++) {
		v |= (uint64_t)in->p[in->pos + i] << (8 * i);
	}
	in->pos += bytes;
	return v;
}

static void
rec_get_bytes(rec_in *in, void *out, size_t n)
{
	if (in->bad || n > in->len - in->pos) {
		in->bad = 1;
		return;
	}
	memcpy(out, in->p + in->pos, n);
	in->pos += n;
}

static void
rec_get_str(rec_in *in, char *out, size_t size)
{
	size_t n = (size_t)rec_get_uint(in, 2);

	if (in->bad || n >= size || n > in->len - in->pos ||
	    memchr(in->p + in->pos, '\0', n) != NULL) {
		in->bad = 1;
		out[0] = '\0';
		return;
	}
	rec_get_bytes(in, out, n);
	out[n] = '\0';
}

/* A key as stored: it must load (scalar in range), or the record is bad. */
static void
rec_get_key(rec_in *in, acme_smime_key *key)
{
	unsigned char priv[48];
	int type = (int)rec_get_uint(in, 1);
	size_t n = (size_t)rec_get_uint(in, 1);

	if (in->bad || n > sizeof priv) {
		in->bad = 1;
		return;
	}
	rec_get_bytes(in, priv, n);
	if (in->bad || acme_smime_key_from_private(key, type, priv, n) != ACME_SMIME_OK) {
		in->bad = 1;
	}
	wipe(priv, sizeof priv);
}

/* SHA-256 over the directory URL and the identifiers. */
static void
engine_identity_hash(const acme_smime_config *cfg, unsigned char out[32])
{
	br_sha256_context sha;
	size_t i;

	br_sha256_init(&sha);
	br_sha256_update(&sha, cfg->directory_url, strlen(cfg->directory_url) + 1);
	for (i = 0; i < cfg->identifier_count; i++) {
		unsigned char t = (unsigned char)cfg->identifiers[i].type;

		br_sha256_update(&sha, &t, 1);
		br_sha256_update(&sha, cfg->identifiers[i].value,
		    strlen(cfg->identifiers[i].value) + 1);
	}
	br_sha256_out(&sha, out);
}

static int
engine_store_error(acme_smime_ctx *ctx, int r, const char *what)
{
	engine_fail(ctx, r == ACME_SMIME_ERR_LIMIT ? ACME_SMIME_ERR_LIMIT :
	    ACME_SMIME_ERR_STORE, r != ACME_SMIME_ERR_LIMIT, what);
	return ctx->err.code;
}

/* Write the account record (after newAccount). */
static int
engine_save_account(acme_smime_ctx *ctx)
{
	unsigned char buf[ACME_SMIME_STORE_MAX_ACCOUNT];
	rec_out o;
	int r;

	if (ctx->ports->flash == NULL) {
		return 0;
	}
	tb_init(&o, (char *)buf, sizeof buf);
	rec_put_uint(&o, 1, 1);
	rec_put_key(&o, &ctx->account_key);
	rec_put_str(&o, ctx->cfg->directory_url);
	rec_put_str(&o, ctx->url_account);
	rec_put_uint(&o, ctx->answered_count, 1);
	{
		unsigned i;

		for (i = 0; i < ctx->answered_count; i++) {
			rec_put_uint(&o, ctx->answered_tokens[i], 4);
		}
	}
	r = o.overflow ? ACME_SMIME_ERR_LIMIT :
	    store_write(ctx->ports->flash, STORE_REC_ACCOUNT, buf, o.len);
	wipe(buf, sizeof buf);
	return r < 0 ? engine_store_error(ctx, r, "cannot store the account") : 0;
}

/* Write (len > 0) or clear the enrollment record. */
static int
engine_save_enrollment(acme_smime_ctx *ctx, int clear)
{
	unsigned char buf[ACME_SMIME_MAX_URL + 128 + 4 * ACME_SMIME_MAX_SNAPSHOT];
	rec_out o;
	unsigned i;
	int r;

	if (ctx->ports->flash == NULL) {
		return 0;
	}
	tb_init(&o, (char *)buf, sizeof buf);
	if (!clear) {
		rec_put_uint(&o, 2, 1);   /* layout version */
		rec_put(&o, ctx->ident_hash, sizeof ctx->ident_hash);
		rec_put_str(&o, ctx->url_order);
		rec_put_key(&o, &ctx->cert_key);
		rec_put_uint(&o, ctx->snapshot_total, 4);
		rec_put_uint(&o, ctx->snapshot_count, 2);
		for (i = 0; i < ctx->snapshot_count; i++) {
			rec_put_uint(&o, ctx->snapshot[i], 4);
		}
		rec_put_uint(&o, ctx->flags_authz, 1);
		rec_put_uint(&o, ctx->email_flags, 1);
		rec_put_uint(&o, ctx->answered_uid, 4);
		rec_put_uint(&o, ctx->snapshot_time, 8);
	}
	r = o.overflow ? ACME_SMIME_ERR_LIMIT :
	    store_write(ctx->ports->flash, STORE_REC_ENROLLMENT, buf, o.len);
	wipe(buf, sizeof buf);
	return r < 0 ? engine_store_error(ctx, r, "cannot store the order in progress") : 0;
}

/* Raise the time floor to t (never lower it). */
static void
engine_save_time_floor(acme_smime_ctx *ctx, uint64_t t)
{
	unsigned char b[8];
	unsigned i;

	if (ctx->ports->flash == NULL || t <= ctx->time_floor) {
		return;
	}
	for (i = 0; i < 8; i++) {
		b[i] = (unsigned char)(t >> (8 * i));
	}
	if (store_write(ctx->ports->flash, STORE_REC_TIME, b, sizeof b) == ACME_SMIME_OK) {
		ctx->time_floor = t;
	}
}

/* The decoded trailer of a stored certificate. */
typedef struct {
	acme_smime_key key;
	uint64_t not_before, not_after;
	unsigned char ident_hash[32];
	size_t chain_len;
} cert_trailer;

/* Read the trailer of the stored certificate. Returns ACME_SMIME_OK,
 * STORE_NONE (no certificate, or a record that does not parse), or
 * ACME_SMIME_ERR_STORE. */
static int
cert_trailer_read(const acme_smime_flash *f, cert_trailer *t)
{
	unsigned char buf[CERT_TRAILER_LEN];
	size_t len;
	rec_in in;
	int r;

	memset(t, 0, sizeof *t);
	r = store_record_info(f, STORE_REC_CERT, &len, NULL);
	if (r != ACME_SMIME_OK) {
		return r;
	}
	if (len < CERT_TRAILER_LEN) {
		return STORE_NONE;
	}
	r = store_read_chunk(f, STORE_REC_CERT, len - CERT_TRAILER_LEN, buf, sizeof buf);
	if (r != ACME_SMIME_OK) {
		return r;
	}
	in.p = buf;
	in.len = sizeof buf;
	in.pos = 0;
	in.bad = 0;
	in.bad = rec_get_uint(&in, 1) != 1;
	{
		/* The key sits in a fixed 48-byte field. */
		rec_in k = in;

		k.len = in.pos + 2 + 48;
		rec_get_key(&k, &t->key);
		in.bad |= k.bad;
		in.pos += 2 + 48;
	}
	t->not_before = rec_get_uint(&in, 8);
	t->not_after = rec_get_uint(&in, 8);
	rec_get_bytes(&in, t->ident_hash, sizeof t->ident_hash);
	t->chain_len = (size_t)rec_get_uint(&in, 4);
	wipe(buf, sizeof buf);
	if (in.bad || t->chain_len != len - CERT_TRAILER_LEN ||
	    t->not_after <= t->not_before) {
		acme_smime_key_wipe(&t->key);
		return STORE_NONE;
	}
	return ACME_SMIME_OK;
}

/* The renewal point: renew_percent (default 67: two thirds) of the
 * lifetime after notBefore. */
static uint64_t
cert_renew_at(const acme_smime_config *cfg, uint64_t nb, uint64_t na)
{
	unsigned pct = cfg != NULL && cfg->renew_percent > 0 && cfg->renew_percent < 100 ?
	    cfg->renew_percent : 67;

	return nb + (na - nb) / 100 * pct + (na - nb) % 100 * pct / 100;
}

/*
 * At init: take the account, the certificate and an order in progress
 * from the store. Sets the starting state: ST_DONE when a certificate for
 * this configuration is stored and not yet due (no network at all).
 */
static int
engine_load(acme_smime_ctx *ctx, int have_account_key)
{
	const acme_smime_flash *f = ctx->ports->flash;
	unsigned char buf[ACME_SMIME_STORE_MAX_ACCOUNT];
	cert_trailer t;
	size_t len;
	rec_in in;
	int r, damaged;
	uint64_t now;

	if (store_layout_ok(f) < 0) {
		engine_fail(ctx, ACME_SMIME_ERR_STORE, 0, "the flash geometry cannot hold the store");
		return ACME_SMIME_ERR_STORE;
	}
	damaged = store_check(f);
	if (damaged < 0) {
		engine_fail(ctx, ACME_SMIME_ERR_STORE, 1, "cannot read the flash");
		return ACME_SMIME_ERR_STORE;
	}
	if (damaged > 0) {
		engine_log(ctx, ACME_SMIME_LOG_WARN,
		    "store: damaged records found, older copies used", NULL);
	}

	/* Time floor. */
	r = store_read(f, STORE_REC_TIME, buf, sizeof buf, &len);
	if (r == ACME_SMIME_OK && len == 8) {
		in.p = buf;
		in.len = len;
		in.pos = 0;
		in.bad = 0;
		ctx->time_floor = rec_get_uint(&in, 8);
	}

	/* Account: only for this directory. */
	r = store_read(f, STORE_REC_ACCOUNT, buf, sizeof buf, &len);
	if (r == ACME_SMIME_OK && !have_account_key) {
		acme_smime_key key;
		char dir[ACME_SMIME_MAX_URL + 1];

		in.p = buf;
		in.len = len;
		in.pos = 0;
		in.bad = 0;
		in.bad = rec_get_uint(&in, 1) != 1;
		rec_get_key(&in, &key);
		rec_get_str(&in, dir, sizeof dir);
		rec_get_str(&in, ctx->url_account, sizeof ctx->url_account);
		if (!in.bad && in.pos < in.len) {
			unsigned k, n = (unsigned)rec_get_uint(&in, 1);

			for (k = 0; k < n && k < ARRAY_LEN(ctx->answered_tokens); k++) {
				ctx->answered_tokens[k] = (uint32_t)rec_get_uint(&in, 4);
			}
			ctx->answered_count = in.bad ? 0 : k;
		}
		if (!in.bad && strcmp(dir, ctx->cfg->directory_url) == 0) {
			ctx->account_key = key;
			engine_log(ctx, ACME_SMIME_LOG_INFO, "stored account: ", ctx->url_account[0] ?
			    ctx->url_account : "(key only: not yet registered)");
		} else {
			ctx->url_account[0] = '\0';
		}
		acme_smime_key_wipe(&key);
	}
	wipe(buf, sizeof buf);

	/* Certificate: done until its renewal point. */
	if (cert_trailer_read(f, &t) == ACME_SMIME_OK &&
	    memcmp(t.ident_hash, ctx->ident_hash, sizeof t.ident_hash) == 0) {
		engine_save_time_floor(ctx, t.not_before);
		now = ctx->ports->unix_time(ctx->ports->user);
		if (now == 0 || now < ctx->time_floor) {
			acme_smime_key_wipe(&t.key);
			engine_fail(ctx, ACME_SMIME_ERR_TIME, 1,
			    "the clock is unknown or behind: cannot judge the stored certificate");
			return ACME_SMIME_ERR_TIME;
		}
		ctx->renew_at = cert_renew_at(ctx->cfg, t.not_before, t.not_after);
		if (now < ctx->renew_at && !ctx->cfg->force_renew) {
			ctx->cert_key = t.key;
			ctx->state = ST_DONE;
			engine_log(ctx, ACME_SMIME_LOG_INFO,
			    "stored certificate is valid and not due for renewal", NULL);
			acme_smime_key_wipe(&t.key);
			return 0;
		}
		engine_log(ctx, ACME_SMIME_LOG_INFO, "stored certificate is due: renewing", NULL);
	}
	acme_smime_key_wipe(&t.key);

	/* An order in progress for this configuration: resume it. */
	r = store_read(f, STORE_REC_ENROLLMENT, buf, sizeof buf, &len);
	if (r == ACME_SMIME_OK && len > 0) {
		unsigned char h[32];

		in.p = buf;
		in.len = len;
		in.pos = 0;
		in.bad = 0;
		in.bad = rec_get_uint(&in, 1) != 2;
		rec_get_bytes(&in, h, sizeof h);
		rec_get_str(&in, ctx->url_order, sizeof ctx->url_order);
		rec_get_key(&in, &ctx->cert_key);
		ctx->snapshot_total = (uint32_t)rec_get_uint(&in, 4);
		ctx->snapshot_count = (unsigned)rec_get_uint(&in, 2);
		if (ctx->snapshot_count > ACME_SMIME_MAX_SNAPSHOT ||
		    ctx->snapshot_count > ctx->snapshot_total) {
			in.bad = 1;
		} else {
			unsigned k;

			for (k = 0; k < ctx->snapshot_count; k++) {
				ctx->snapshot[k] = (uint32_t)rec_get_uint(&in, 4);
			}
		}
		ctx->flags_authz = (unsigned)rec_get_uint(&in, 1);
		ctx->email_flags = (unsigned)rec_get_uint(&in, 1);
		ctx->answered_uid = (uint32_t)rec_get_uint(&in, 4);
		ctx->snapshot_time = rec_get_uint(&in, 8);
		if (!in.bad && memcmp(h, ctx->ident_hash, sizeof h) == 0) {
			ctx->snapshot_taken = 1;
			ctx->resume_order = 1;
			engine_log(ctx, ACME_SMIME_LOG_INFO, "resuming order: ", ctx->url_order);
		} else {
			ctx->url_order[0] = '\0';
			acme_smime_key_wipe(&ctx->cert_key);
			ctx->snapshot_count = 0;
			ctx->email_flags = 0;
		}
	}
	wipe(buf, sizeof buf);
	return 0;
}

/* --- requests --- */

/* Sign payload (JSON text at the end of the area) for url and prepare the
 * POST. kid: the account URL, or NULL for a jwk-signed request. */
static int
engine_post(acme_smime_ctx *ctx, const char *url, const char *payload,
	size_t payload_len, int use_jwk, int kind)
{
	unsigned char *area = http_area(ctx);
	size_t room = http_area_size(ctx) - HTTP_HEAD_ROOM - HTTP_PAYLOAD_ROOM;
	jws_header hdr;
	int n;

	hdr.nonce = ctx->nonce;
	hdr.url = url;
	hdr.kid = use_jwk ? NULL : ctx->url_account;
	n = jws_write((char *)area + HTTP_HEAD_ROOM, room, &ctx->account_key, &hdr,
	    payload, payload_len);
	/* A nonce is good for one request, whatever the answer. */
	ctx->nonce[0] = '\0';
	if (n < 0) {
		engine_fail(ctx, n, 0, n == ACME_SMIME_ERR_BUFFER ?
		    "request does not fit in ACME_SMIME_HTTP_AREA" : "signing failed");
		return n;
	}
	engine_log(ctx, ACME_SMIME_LOG_INFO, "POST ", url);
	return http_prepare(ctx, kind, url, (size_t)n);
}

/* The payload scratch at the end of the HTTP area. */
static char *
engine_payload_room(acme_smime_ctx *ctx)
{
	return (char *)http_area(ctx) + http_area_size(ctx) - HTTP_PAYLOAD_ROOM;
}

static int
engine_post_as_get(acme_smime_ctx *ctx, const char *url)
{
	return engine_post(ctx, url, "", 0, 0, REQ_POST);
}

static int
req_directory(acme_smime_ctx *ctx)
{
	engine_log(ctx, ACME_SMIME_LOG_INFO, "GET ", ctx->cfg->directory_url);
	return http_prepare(ctx, REQ_GET, ctx->cfg->directory_url, 0);
}

static int
req_nonce(acme_smime_ctx *ctx)
{
	engine_log(ctx, ACME_SMIME_LOG_INFO, "HEAD ", ctx->url_new_nonce);
	return http_prepare(ctx, REQ_HEAD, ctx->url_new_nonce, 0);
}

/* External account binding (RFC 8555 section 7.3.4): a JWS over the
 * account JWK, MACed with the CA-provided key (HS256). */
static int
engine_put_eab(acme_smime_ctx *ctx, textbuf *tb)
{
	unsigned char key[128], mac[32];
	br_hmac_key_context kc;
	br_hmac_context hc;
	size_t mark, prot, prot_end, raw;
	int klen;

	klen = b64_decode(key, sizeof key, ctx->cfg->eab_hmac_key,
	    strlen(ctx->cfg->eab_hmac_key), B64_URL | B64_PAD_OK);
	if (klen <= 0) {
		engine_fail(ctx, ACME_SMIME_ERR_INVALID, 0, "EAB HMAC key is not base64url");
		return ACME_SMIME_ERR_INVALID;
	}
	tb_puts(tb, "{\"protected\":\"");
	mark = tb->len;
	tb_puts(tb, "{\"alg\":\"HS256\",\"kid\":");
	json_put_string(tb, ctx->cfg->eab_kid);
	tb_puts(tb, ",\"url\":");
	json_put_string(tb, ctx->url_new_account);
	tb_putc(tb, '}');
	raw = tb->len - mark;
	tb->len = mark;
	if (!tb->overflow) {
		tb_put_b64url(tb, tb->buf + mark, raw);
	}
	prot = mark;
	prot_end = tb->len;
	tb_puts(tb, "\",\"payload\":\"");
	mark = tb->len;
	jwk_put(tb, &ctx->account_key);
	raw = tb->len - mark;
	tb->len = mark;
	if (!tb->overflow) {
		tb_put_b64url(tb, tb->buf + mark, raw);
	}
	if (!tb->overflow) {
		br_hmac_key_init(&kc, &br_sha256_vtable, key, (size_t)klen);
		br_hmac_init(&hc, &kc, 0);
		br_hmac_update(&hc, tb->buf + prot, prot_end - prot);
		br_hmac_update(&hc, ".", 1);
		br_hmac_update(&hc, tb->buf + mark, tb->len - mark);
		br_hmac_out(&hc, mac);
		tb_puts(tb, "\",\"signature\":\"");
		tb_put_b64url(tb, mac, sizeof mac);
		tb_puts(tb, "\"}");
	}
	wipe(key, sizeof key);
	wipe(&kc, sizeof kc);
	wipe(&hc, sizeof hc);
	return 0;
}

static int
req_account(acme_smime_ctx *ctx)
{
	char *p = engine_payload_room(ctx);
	textbuf tb;
	int n, first = 1;

	/* The key is stored before the server hears of it: cut off after
	 * this POST, the next run sends the same key and gets the same
	 * account back (200) instead of a second one. */
	if (engine_save_account(ctx) < 0) {
		return ctx->err.code;
	}

	tb_init(&tb, p, HTTP_PAYLOAD_ROOM);
	tb_putc(&tb, '{');
	if (ctx->cfg->agree_tos) {
		tb_puts(&tb, "\"termsOfServiceAgreed\":true");
		first = 0;
	}
	if (ctx->cfg->contact != NULL) {
		tb_puts(&tb, first ? "\"contact\":[" : ",\"contact\":[");
		json_put_string(&tb, ctx->cfg->contact);
		tb_putc(&tb, ']');
		first = 0;
	}
	if (ctx->cfg->eab_kid != NULL && ctx->cfg->eab_hmac_key != NULL) {
		tb_puts(&tb, first ? "\"externalAccountBinding\":" :
		    ",\"externalAccountBinding\":");
		if (engine_put_eab(ctx, &tb) < 0) {
			return ctx->err.code;
		}
	}
	tb_putc(&tb, '}');
	if ((n = tb_finish(&tb)) < 0) {
		engine_fail(ctx, ACME_SMIME_ERR_LIMIT, 0, "account request too large");
		return ACME_SMIME_ERR_LIMIT;
	}
	return engine_post(ctx, ctx->url_new_account, p, (size_t)n, 1, REQ_POST);
}

static int
req_order(acme_smime_ctx *ctx)
{
	char *p = engine_payload_room(ctx);
	int n = acme_smime_order_payload(p, HTTP_PAYLOAD_ROOM, ctx->cfg->identifiers,
	    ctx->cfg->identifier_count);

	if (n < 0) {
		engine_fail(ctx, n, 0, "bad identifiers in the configuration");
		return n;
	}
	return engine_post(ctx, ctx->url_new_order, p, (size_t)n, 0, REQ_POST);
}

static int
req_authz(acme_smime_ctx *ctx)
{
	return engine_post_as_get(ctx, ctx->url_authz[ctx->authz_index]);
}

static int
req_challenge_respond(acme_smime_ctx *ctx)
{
	return engine_post(ctx, ctx->challenge.url, "{}", 2, 0, REQ_POST);
}

/* The certificate key: generated once per order (RFC 8555 section 11.1:
 * never the account key). */
static int
engine_cert_key(acme_smime_ctx *ctx)
{
	int r;

	if (ctx->cert_key.type != 0) {
		return 0;
	}
	r = acme_smime_key_generate(&ctx->cert_key,
	    ctx->cfg->cert_key_type ? ctx->cfg->cert_key_type : ACME_SMIME_KEY_P256,
	    ctx->ports->entropy, ctx->ports->user);
	if (r < 0) {
		engine_fail(ctx, r, 0, "certificate key generation failed");
	}
	return r;
}

static int
req_finalize(acme_smime_ctx *ctx)
{
	char *p = engine_payload_room(ctx);
	unsigned char *der = (unsigned char *)p + HTTP_PAYLOAD_ROOM / 2;
	textbuf tb;
	int n, r;

	if ((r = engine_cert_key(ctx)) < 0) {
		return r;
	}
	n = acme_smime_csr_write(der, HTTP_PAYLOAD_ROOM / 2, &ctx->cert_key,
	    ctx->cfg->identifiers, ctx->cfg->identifier_count, ctx->cfg->key_usage);
	if (n < 0) {
		engine_fail(ctx, n, 0, "cannot build the CSR");
		return n;
	}
	tb_init(&tb, p, HTTP_PAYLOAD_ROOM / 2);
	tb_puts(&tb, "{\"csr\":\"");
	tb_put_b64url(&tb, der, (size_t)n);
	tb_puts(&tb, "\"}");
	if ((n = tb_finish(&tb)) < 0) {
		engine_fail(ctx, ACME_SMIME_ERR_LIMIT, 0, "CSR too large");
		return ACME_SMIME_ERR_LIMIT;
	}
	return engine_post(ctx, ctx->url_finalize, p, (size_t)n, 0, REQ_POST);
}

static int
req_order_poll(acme_smime_ctx *ctx)
{
	return engine_post_as_get(ctx, ctx->url_order);
}

static int
req_download(acme_smime_ctx *ctx)
{
	ctx->sink_wanted = 1;
	return engine_post(ctx, ctx->url_certificate, "", 0, 0, REQ_POST_PEM);
}

/* --- responses: each returns the next state, or an error --- */

static int
expect_status(acme_smime_ctx *ctx, int a, int b)
{
	if (ctx->status != a && ctx->status != b) {
		engine_fail(ctx, ACME_SMIME_ERR_HTTP, 1, "unexpected HTTP status from the server");
		ctx->err.http_status = ctx->status;
		return ACME_SMIME_ERR_HTTP;
	}
	return 0;
}

/* What comes before a new order: resuming the stored one, or, for email
 * identifiers, the mailbox snapshot (some CAs mail at newOrder time:
 * only messages absent from it can be the challenge). */
static int
engine_before_order(acme_smime_ctx *ctx)
{
	if (ctx->resume_order) {
		return ST_RESUME;
	}
	if (engine_has_email(ctx->cfg) && !ctx->snapshot_taken) {
		return engine_mailbox(ctx, MBOX_SNAPSHOT);
	}
	return ST_ORDER;
}

static int
resp_directory(acme_smime_ctx *ctx)
{
	json_doc d;
	int meta;

	if (expect_status(ctx, 200, 200) < 0 || engine_json(ctx, &d) < 0 ||
	    engine_member(ctx, &d, 0, "newNonce", ctx->url_new_nonce,
	    sizeof ctx->url_new_nonce) < 0 ||
	    engine_member(ctx, &d, 0, "newAccount", ctx->url_new_account,
	    sizeof ctx->url_new_account) < 0 ||
	    engine_member(ctx, &d, 0, "newOrder", ctx->url_new_order,
	    sizeof ctx->url_new_order) < 0) {
		return ctx->err.code;
	}
	meta = json_find(&d, 0, "meta");
	if (meta >= 0) {
		int e = json_find(&d, meta, "externalAccountRequired");

		if (e >= 0 && d.tok[e].type == JSMN_PRIMITIVE && d.js[d.tok[e].start] == 't' &&
		    ctx->cfg->eab_kid == NULL && ctx->url_account[0] == '\0') {
			engine_fail(ctx, ACME_SMIME_ERR_INVALID, 0,
			    "the server requires external account binding (EAB key id and MAC key)");
			return ctx->err.code;
		}
	}
	if (ctx->url_account[0] == '\0') {
		return ST_ACCOUNT;
	}
	return engine_before_order(ctx);
}

static int
resp_nonce(acme_smime_ctx *ctx)
{
	if (ctx->resp_nonce[0] == '\0') {
		return http_fail(ctx, "newNonce answered without a Replay-Nonce");
	}
	return ctx->after;
}

static int
resp_account(acme_smime_ctx *ctx)
{
	json_doc d;

	if (expect_status(ctx, 200, 201) < 0 || engine_json(ctx, &d) < 0) {
		return ctx->err.code;
	}
	if (ctx->location[0] == '\0') {
		return http_fail(ctx, "newAccount answered without a Location");
	}
	if (!json_member_is(&d, 0, "status", "valid")) {
		engine_fail(ctx, ACME_SMIME_ERR_STATE, 0, "the account is not valid");
		return ctx->err.code;
	}
	memcpy(ctx->url_account, ctx->location, sizeof ctx->url_account);
	engine_log(ctx, ACME_SMIME_LOG_INFO, ctx->status == 201 ?
	    "account created: " : "account found: ", ctx->url_account);
	if (engine_save_account(ctx) < 0) {
		return ctx->err.code;
	}
	return engine_before_order(ctx);
}

/* Read an order object: status, authorizations, finalize, certificate.
 * Returns the state that follows from its status. */
static int
engine_order_object(acme_smime_ctx *ctx)
{
	json_doc d;
	int list, item, k;
	char status[16];

	if (engine_json(ctx, &d) < 0 ||
	    engine_member(ctx, &d, 0, "status", status, sizeof status) < 0 ||
	    engine_member(ctx, &d, 0, "finalize", ctx->url_finalize,
	    sizeof ctx->url_finalize) < 0) {
		return ctx->err.code;
	}
	list = json_find(&d, 0, "authorizations");
	if (list < 0 || d.tok[list].type != JSMN_ARRAY || d.tok[list].size < 1) {
		return http_fail(ctx, "order without authorizations");
	}
	if (d.tok[list].size > ACME_SMIME_MAX_AUTHZ) {
		engine_fail(ctx, ACME_SMIME_ERR_LIMIT, 0,
		    "order has more authorizations than ACME_SMIME_MAX_AUTHZ");
		return ctx->err.code;
	}
	for (k = 0; (item = json_array_item(&d, list, k)) >= 0; k++) {
		if (json_get_string(&d, item, ctx->url_authz[k], sizeof ctx->url_authz[k]) < 0) {
			engine_fail(ctx, ACME_SMIME_ERR_LIMIT, 0, "authorization URL too long");
			return ctx->err.code;
		}
	}
	ctx->authz_count = (unsigned)k;
	if (strcmp(status, "valid") == 0) {
		if (engine_member(ctx, &d, 0, "certificate", ctx->url_certificate,
		    sizeof ctx->url_certificate) < 0) {
			return ctx->err.code;
		}
		return ST_DOWNLOAD;
	}
	if (strcmp(status, "ready") == 0) {
		return ST_FINALIZE;
	}
	if (strcmp(status, "processing") == 0) {
		return ST_ORDER_POLL;
	}
	if (strcmp(status, "pending") == 0) {
		ctx->authz_index = 0;
		return ST_AUTHZ;
	}
	engine_fail(ctx, ACME_SMIME_ERR_STATE, 0, "the order is invalid");
	return ctx->err.code;
}

static int
resp_order(acme_smime_ctx *ctx)
{
	int next;

	if (expect_status(ctx, 201, 201) < 0) {
		return ctx->err.code;
	}
	if (ctx->location[0] == '\0') {
		return http_fail(ctx, "newOrder answered without a Location");
	}
	memcpy(ctx->url_order, ctx->location, sizeof ctx->url_order);
	engine_log(ctx, ACME_SMIME_LOG_INFO, "order: ", ctx->url_order);
	ctx->email_flags = 0;
	ctx->flags_authz = 0;
	/* The certificate key is made with the order and stored with it, so
	 * a reboot after finalize still holds the key of the CSR. */
	if (engine_cert_key(ctx) < 0 || engine_save_enrollment(ctx, 0) < 0) {
		return ctx->err.code;
	}
	next = engine_order_object(ctx);
	return next == ST_ORDER_POLL ? engine_poll(ctx, next) : next;
}

/* After an authorization is valid: the next one, or finalize. */
static int
engine_next_authz(acme_smime_ctx *ctx)
{
	ctx->poll_delay_s = 0;
	if (++ctx->authz_index < ctx->authz_count) {
		return ST_AUTHZ;
	}
	return ST_FINALIZE;
}

/* The failing challenge's problem, kept as the error. */
static void
engine_challenge_error(acme_smime_ctx *ctx, const json_doc *d)
{
	int list = json_find(d, 0, "challenges"), item, k;

	for (k = 0; (item = json_array_item(d, list, k)) >= 0; k++) {
		int e = json_find(d, item, "error");

		if (e >= 0 && d->tok[e].type == JSMN_OBJECT) {
			json_get_member(d, e, "type", ctx->err.problem_type,
			    sizeof ctx->err.problem_type);
			json_get_member(d, e, "detail", ctx->err.problem_detail,
			    sizeof ctx->err.problem_detail);
			return;
		}
	}
}

/* Read an authorization; pick the challenge this client answers. */
static int
resp_authz(acme_smime_ctx *ctx)
{
	json_doc d;
	char status[16], type[8];
	int id, r;

	if (expect_status(ctx, 200, 200) < 0 || engine_json(ctx, &d) < 0 ||
	    engine_member(ctx, &d, 0, "status", status, sizeof status) < 0) {
		return ctx->err.code;
	}
	if (strcmp(status, "valid") == 0) {
		engine_log(ctx, ACME_SMIME_LOG_INFO, "authorization already valid: ",
		    ctx->url_authz[ctx->authz_index]);
		return engine_next_authz(ctx);
	}
	if (strcmp(status, "pending") != 0) {
		engine_challenge_error(ctx, &d);
		engine_fail(ctx, ACME_SMIME_ERR_STATE, 0, "the authorization is not pending");
		return ctx->err.code;
	}
	id = json_find(&d, 0, "identifier");
	if (engine_member(ctx, &d, id, "type", type, sizeof type) < 0 ||
	    engine_member(ctx, &d, id, "value", ctx->authz_identifier,
	    sizeof ctx->authz_identifier) < 0) {
		return ctx->err.code;
	}
	if (strcmp(type, "email") == 0) {
		return engine_email_authz(ctx);
	}
	if (strcmp(type, "dns") != 0) {
		engine_fail(ctx, ACME_SMIME_ERR_UNSUPPORTED, 0,
		    "the authorization is for an identifier type this client does not know");
		return ctx->err.code;
	}
	r = acme_smime_parse_authorization((const char *)http_area(ctx), ctx->body_len,
	    "http-01", &ctx->challenge);
	if (r < 0) {
		engine_fail(ctx, r, 0, "the authorization offers no usable http-01 challenge");
		return r;
	}
	/* The token names a file on the caller's web server (RFC 8555
	 * section 8.3): base64url only, so it cannot name anything else. */
	if (!token_chars_ok(ctx->challenge.token, strlen(ctx->challenge.token)) ||
	    strchr(ctx->challenge.token, '=') != NULL) {
		engine_fail(ctx, ACME_SMIME_ERR_JSON, 0, "the http-01 token is not base64url");
		return ctx->err.code;
	}
	return ST_CHALLENGE_PROVISION;
}

/* Local state: have the caller publish the http-01 key authorization. */
static int
local_challenge_provision(acme_smime_ctx *ctx)
{
	char tp[ACME_SMIME_THUMBPRINT_SIZE];
	char ka[ACME_SMIME_MAX_TOKEN + ACME_SMIME_THUMBPRINT_SIZE + 2];
	textbuf tb;
	int r;

	if (ctx->ports->challenge == NULL) {
		engine_fail(ctx, ACME_SMIME_ERR_UNSUPPORTED, 0,
		    "dns identifiers need the challenge hook");
		return ctx->err.code;
	}
	acme_smime_jwk_thumbprint(&ctx->account_key, tp);
	tb_init(&tb, ka, sizeof ka);
	tb_puts(&tb, ctx->challenge.token);
	tb_putc(&tb, '.');
	tb_puts(&tb, tp);
	if (tb_finish(&tb) < 0) {
		engine_fail(ctx, ACME_SMIME_ERR_LIMIT, 0, "challenge token too long");
		return ctx->err.code;
	}
	r = ctx->ports->challenge(ctx->ports->user, ACME_SMIME_CHALLENGE_PROVISION,
	    ctx->authz_identifier, ctx->challenge.token, ka);
	if (r < 0) {
		engine_fail(ctx, ACME_SMIME_ERR_HOOK, 1, "the challenge hook failed");
		return ctx->err.code;
	}
	if (r > 0) {
		return engine_wait(ctx, cfg_or(ctx->cfg->poll_min_s, 1),
		    ST_CHALLENGE_PROVISION, "challenge-hook");
	}
	return ST_CHALLENGE_RESPOND;
}

static void
engine_challenge_withdraw(acme_smime_ctx *ctx)
{
	if (ctx->ports->challenge != NULL) {
		ctx->ports->challenge(ctx->ports->user, ACME_SMIME_CHALLENGE_REMOVE,
		    ctx->authz_identifier, ctx->challenge.token, "");
	}
}

static int
resp_challenge_respond(acme_smime_ctx *ctx)
{
	if (expect_status(ctx, 200, 200) < 0) {
		return ctx->err.code;
	}
	if (ctx->email_flags & EMAIL_SENT) {
		/* Never POST twice what was POSTed once. */
		ctx->email_flags |= EMAIL_POSTED;
		if (engine_save_enrollment(ctx, 0) < 0) {
			return ctx->err.code;
		}
	}
	ctx->poll_delay_s = 0;
	return engine_poll(ctx, ST_AUTHZ_POLL);
}

static int
resp_authz_poll(acme_smime_ctx *ctx)
{
	json_doc d;
	char status[16];

	if (expect_status(ctx, 200, 200) < 0 || engine_json(ctx, &d) < 0 ||
	    engine_member(ctx, &d, 0, "status", status, sizeof status) < 0) {
		return ctx->err.code;
	}
	if (strcmp(status, "valid") == 0) {
		engine_log(ctx, ACME_SMIME_LOG_INFO, "authorization valid: ",
		    ctx->authz_identifier);
		if (ctx->email_flags != 0) {
			ctx->email_flags = 0;
			if (engine_save_enrollment(ctx, 0) < 0) {
				return ctx->err.code;
			}
		} else {
			engine_challenge_withdraw(ctx);
		}
		return engine_next_authz(ctx);
	}
	if (strcmp(status, "pending") == 0) {
		return engine_poll(ctx, ST_AUTHZ_POLL);
	}
	engine_challenge_withdraw(ctx);
	engine_challenge_error(ctx, &d);
	engine_fail(ctx, ACME_SMIME_ERR_STATE, 0, "the challenge failed: authorization invalid");
	return ctx->err.code;
}

static int
resp_finalize(acme_smime_ctx *ctx)
{
	int next;

	if (expect_status(ctx, 200, 200) < 0) {
		return ctx->err.code;
	}
	next = engine_order_object(ctx);
	if (next == ST_ORDER_POLL) {
		ctx->poll_delay_s = 0;
		return engine_poll(ctx, next);
	}
	if (next >= 0 && next != ST_DOWNLOAD) {
		engine_fail(ctx, ACME_SMIME_ERR_STATE, 0, "the order did not move on after finalize");
		return ctx->err.code;
	}
	return next;
}

static int
resp_order_poll(acme_smime_ctx *ctx)
{
	int next;

	if (expect_status(ctx, 200, 200) < 0) {
		return ctx->err.code;
	}
	next = engine_order_object(ctx);
	if (next == ST_ORDER_POLL) {
		return engine_poll(ctx, next);
	}
	if (next >= 0 && next != ST_DOWNLOAD) {
		engine_fail(ctx, ACME_SMIME_ERR_STATE, 0, "the order went back from processing");
		return ctx->err.code;
	}
	return next;
}

/* DER bytes of the leaf, gathered by the PEM decoder. */
typedef struct {
	br_x509_decoder_context x509;
	int trailing;
} leaf_reader;

static void
leaf_push(void *arg, const void *data, size_t len)
{
	leaf_reader *lr = (leaf_reader *)arg;

	x509_push_once(&lr->x509, &lr->trailing, data, len);
}

/* Decode the first certificate of the PEM text: validity, and its key
 * must be our certificate key. */
static int
engine_check_leaf(acme_smime_ctx *ctx, const char *pem, size_t len,
	uint64_t *not_before, uint64_t *not_after)
{
	br_pem_decoder_context pc;
	leaf_reader lr;
	const br_x509_pkey *pk;
	int done = 0;

	br_pem_decoder_init(&pc);
	br_x509_decoder_init(&lr.x509, NULL, NULL);
	lr.trailing = 0;
	while (len > 0 && !done) {
		size_t n = br_pem_decoder_push(&pc, pem, len);
		int ev = br_pem_decoder_event(&pc);

		pem += n;
		len -= n;
		if (ev == BR_PEM_BEGIN_OBJ) {
			br_pem_decoder_setdest(&pc, leaf_push, &lr);
		} else if (ev == BR_PEM_END_OBJ) {
			done = 1;
		} else if (ev == BR_PEM_ERROR || (n == 0 && ev == 0)) {
			break;
		}
	}
	pk = done && !lr.trailing ? br_x509_decoder_get_pkey(&lr.x509) : NULL;
	if (pk == NULL || br_x509_decoder_last_error(&lr.x509) != 0) {
		return http_fail(ctx, "the certificate does not decode");
	}
	if (pk->key_type != BR_KEYTYPE_EC || pk->key.ec.qlen != ctx->cert_key.pub_len ||
	    memcmp(pk->key.ec.q, ctx->cert_key.pub, ctx->cert_key.pub_len) != 0) {
		engine_fail(ctx, ACME_SMIME_ERR_STATE, 0,
		    "the certificate is not for our key");
		return ctx->err.code;
	}
	if (lr.x509.notbefore_days < BR_DAYS_AT_UNIX_EPOCH ||
	    lr.x509.notafter_days < BR_DAYS_AT_UNIX_EPOCH) {
		return http_fail(ctx, "the certificate has an odd validity period");
	}
	*not_before = ((uint64_t)lr.x509.notbefore_days - BR_DAYS_AT_UNIX_EPOCH) * 86400u +
	    lr.x509.notbefore_seconds;
	*not_after = ((uint64_t)lr.x509.notafter_days - BR_DAYS_AT_UNIX_EPOCH) * 86400u +
	    lr.x509.notafter_seconds;
	if (*not_after <= *not_before) {
		return http_fail(ctx, "the certificate has an odd validity period");
	}
	return 0;
}

/* Complete the certificate record: the trailer, then the commit that
 * makes it the current certificate (the old one stays until then). */
static int
engine_commit_cert(acme_smime_ctx *ctx, uint64_t nb, uint64_t na)
{
	unsigned char tr[CERT_TRAILER_LEN];
	rec_out o;
	int r;

	memset(tr, 0, sizeof tr);
	tb_init(&o, (char *)tr, sizeof tr);
	rec_put_uint(&o, 1, 1);
	rec_put_key(&o, &ctx->cert_key);
	o.len = 3 + 48;
	rec_put_uint(&o, nb, 8);
	rec_put_uint(&o, na, 8);
	rec_put(&o, ctx->ident_hash, sizeof ctx->ident_hash);
	rec_put_uint(&o, ctx->sink_len, 4);
	r = store_append(&ctx->store_writer, tr, sizeof tr);
	wipe(tr, sizeof tr);
	if (r == ACME_SMIME_OK) {
		r = store_commit(&ctx->store_writer);
	}
	ctx->sink = 0;
	if (r < 0) {
		store_abort(&ctx->store_writer);
		return engine_store_error(ctx, r, "cannot store the certificate");
	}
	return 0;
}

static int
resp_download(acme_smime_ctx *ctx)
{
	static const char begin[] = "-----BEGIN CERTIFICATE-----";
	uint64_t nb, na;

	ctx->sink_wanted = 0;
	if (expect_status(ctx, 200, 200) < 0) {
		return ctx->err.code;
	}
	if (ctx->body_len < sizeof begin ||
	    memcmp(http_area(ctx), begin, sizeof begin - 1) != 0) {
		return http_fail(ctx, "the certificate is not a PEM chain");
	}
	if (engine_check_leaf(ctx, (const char *)http_area(ctx), ctx->body_len,
	    &nb, &na) < 0) {
		return ctx->err.code;
	}
	ctx->renew_at = cert_renew_at(ctx->cfg, nb, na);
	if (ctx->sink) {
		if (engine_commit_cert(ctx, nb, na) < 0) {
			return ctx->err.code;
		}
		engine_save_time_floor(ctx, nb);
		if (engine_save_enrollment(ctx, 1) < 0) {
			return ctx->err.code;
		}
		engine_log(ctx, ACME_SMIME_LOG_INFO, "certificate stored", NULL);
	}
	/* In RAM too when it fitted whole. */
	ctx->chain_len = ctx->sink_len == 0 || ctx->sink_len == ctx->body_len ?
	    ctx->body_len : 0;
	engine_log(ctx, ACME_SMIME_LOG_INFO, "certificate downloaded", NULL);
	if (ctx->link_alternates > 0) {
		engine_log(ctx, ACME_SMIME_LOG_DEBUG,
		    "the server offers alternate chains; the default one is kept", NULL);
	}
	return ST_DONE;
}

/* Local resume: the stored order is read again and the flow continues
 * from its status; an order the server no longer knows, or that went
 * invalid, is dropped for a new one. */
static int
resp_resume(acme_smime_ctx *ctx)
{
	json_doc d;
	char status[16];

	if (ctx->status != 200 || engine_json(ctx, &d) < 0 ||
	    json_get_member(&d, 0, "status", status, sizeof status) < 0 ||
	    strcmp(status, "invalid") == 0) {
		/* engine_json() may have failed the context: undo that. */
		memset(&ctx->err, 0, sizeof ctx->err);
		engine_log(ctx, ACME_SMIME_LOG_WARN, "stored order unusable: new order", NULL);
		ctx->resume_order = 0;
		acme_smime_key_wipe(&ctx->cert_key);
		/* Nothing of the old order's challenges carries over; a new
		 * snapshot holds the old order's mails. */
		ctx->email_flags = 0;
		ctx->flags_authz = 0;
		ctx->snapshot_taken = 0;
		if (engine_save_enrollment(ctx, 1) < 0) {
			return ctx->err.code;
		}
		if (engine_has_email(ctx->cfg)) {
			return engine_mailbox(ctx, MBOX_SNAPSHOT);
		}
		return ST_ORDER;
	}
	ctx->resume_order = 0;
	return engine_order_object(ctx);
}

/* --- RFC 8823: the mailbox and the reply --- */

static int
engine_has_email(const acme_smime_config *cfg)
{
	size_t i;

	for (i = 0; i < cfg->identifier_count; i++) {
		if (cfg->identifiers[i].type == ACME_SMIME_ID_EMAIL) {
			return 1;
		}
	}
	return 0;
}

static uint32_t
uid_hash(const char *uid, size_t n)
{
	return store_crc32(0, (const unsigned char *)uid, n);
}

static int
uid_in(const uint32_t *list, unsigned n, uint32_t h)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		if (list[i] == h) {
			return 1;
		}
	}
	return 0;
}

/*
 * Listings: POP3 UIDL or the mailbox hook's list, one entry at a time in
 * mailbox (arrival) order, nothing buffered. A snapshot keeps the ids of
 * the last ACME_SMIME_MAX_SNAPSHOT messages. A poll keeps, as candidates,
 * the first new messages after the last one known: not in the snapshot,
 * not examined before, not the answered one. Whatever is listed before a
 * snapshot message (in a mailbox larger than the snapshot) or before the
 * last message examined is old or was looked at.
 */
static void
mbox_start_listing(acme_smime_ctx *ctx)
{
	if (ctx->mbox_purpose == MBOX_SNAPSHOT) {
		ctx->snapshot_count = 0;
		ctx->snapshot_total = 0;
	}
	ctx->candidate_count = 0;
	ctx->candidate_index = 0;
	ctx->listed = 0;
	ctx->list_bad = 0;
}

static void
mbox_entry(acme_smime_ctx *ctx, const char *id, size_t n, unsigned num, size_t size)
{
	unsigned cap = ctx->ports->mailbox != NULL ? 1 : ACME_SMIME_MAX_EXAMINED;
	unsigned kept = ctx->examined_count < ACME_SMIME_MAX_EXAMINED_KEPT ?
	    ctx->examined_count : ACME_SMIME_MAX_EXAMINED_KEPT;
	uint32_t h;

	if (n == 0 || n > ACME_SMIME_MAX_MAIL_ID || memchr(id, '\0', n) != NULL) {
		ctx->list_bad = 1;
		return;
	}
	h = uid_hash(id, n);
	ctx->listed++;
	if (ctx->mbox_purpose == MBOX_SNAPSHOT) {
		ctx->snapshot[ctx->snapshot_total % ACME_SMIME_MAX_SNAPSHOT] = h;
		if (ctx->snapshot_total < 0xFFFFFFFFu) {
			ctx->snapshot_total++;
		}
		if (ctx->snapshot_count < ACME_SMIME_MAX_SNAPSHOT) {
			ctx->snapshot_count++;
		}
		return;
	}
	if (uid_in(ctx->snapshot, ctx->snapshot_count, h)) {
		if (ctx->snapshot_total > ctx->snapshot_count) {
			ctx->candidate_count = 0;
		}
		return;
	}
	if (ctx->examined_count > 0 && h == ctx->examined_last) {
		ctx->candidate_count = 0;
		return;
	}
	if (uid_in(ctx->examined, kept, h) || h == ctx->answered_uid ||
	    ctx->candidate_count == cap) {
		return;
	}
	if (ctx->ports->mailbox != NULL) {
		memcpy(ctx->mail_id, id, n);
		ctx->mail_id[n] = '\0';
		ctx->mail_size = size;
	}
	ctx->candidate[ctx->candidate_count] = num;
	ctx->candidate_uid[ctx->candidate_count++] = h;
}

/* The listing is complete. */
static void
mbox_listed(acme_smime_ctx *ctx)
{
	if (ctx->mbox_purpose == MBOX_SNAPSHOT) {
		ctx->snapshot_taken = 1;
		ctx->snapshot_time = ctx->ports->unix_time(ctx->ports->user);
		if (ctx->snapshot_total > ctx->snapshot_count) {
			engine_log(ctx, ACME_SMIME_LOG_INFO, "large mailbox: the snapshot keeps "
			    "its newest messages; older ones are known by their place", NULL);
		}
	}
}

/* A candidate was looked at (and not answered): not again. */
static void
mbox_examined(acme_smime_ctx *ctx, uint32_t h)
{
	ctx->examined[ctx->examined_count % ACME_SMIME_MAX_EXAMINED_KEPT] = h;
	ctx->examined_last = h;
	if (ctx->examined_count < 0xFFFFFFFFu) {
		ctx->examined_count++;
	}
}

/* Where a mailbox visit starts: the built-in POP3 client or the hook. */
static int
engine_mailbox(acme_smime_ctx *ctx, int purpose)
{
	ctx->mbox_purpose = purpose;
	return ctx->ports->mailbox != NULL ? ST_MBOX_LIST : ST_POP3_CONNECT;
}

/* After the snapshot: the first run goes to the directory; a snapshot
 * taken again after an abandoned order goes to newOrder. */
static int
engine_after_snapshot(acme_smime_ctx *ctx)
{
	return ctx->url_new_order[0] != '\0' ? ST_ORDER : ST_DIRECTORY;
}

/* No challenge mail yet: look again later, until mail_wait_s. */
static int
engine_mail_poll(acme_smime_ctx *ctx, int state)
{
	if (engine_now_ms(ctx) > ctx->mail_deadline_ms) {
		engine_fail(ctx, ACME_SMIME_ERR_TIMEOUT, 1,
		    "no valid challenge mail arrived in time (mail_wait_s)");
		return ctx->err.code;
	}
	return engine_wait(ctx, cfg_or(ctx->cfg->mail_poll_s, 10), state, "mail-poll");
}

/* The pending challenge, as the mail checks want it. */
static void
engine_pending(acme_smime_ctx *ctx, acme_smime_pending *pending)
{
	memset(pending, 0, sizeof *pending);
	pending->identifier = ctx->authz_identifier;
	pending->from = ctx->challenge.from;
	pending->policy = ctx->cfg->mail_policy;
	pending->now = ctx->ports->unix_time(ctx->ports->user);
	pending->smime_anchors = ctx->cfg->smime_trust_anchors;
	pending->smime_anchor_count = ctx->cfg->smime_trust_anchor_count;
	pending->dns_txt = ctx->ports->dns_txt;
	pending->dns_user = ctx->ports->user;
	pending->authserv_id = ctx->cfg->trusted_authserv_id;
	pending->not_before = ctx->snapshot_time;
}

/* The k-th address of the reply's To field (written as <addr>, see the
 * response writer), or 0 when there is none. */
static int
reply_recipient(acme_smime_ctx *ctx, unsigned k, char *out, size_t size)
{
	const char *a = (const char *)http_area(ctx);
	const char *end = a + ctx->reply_len, *p;

	p = a;
	while (p + 4 < end && memcmp(p, "To: ", 4) != 0) {
		p = memchr(p, '\n', (size_t)(end - p));
		if (p == NULL) {
			return 0;
		}
		p++;
	}
	/* The field runs until a line that does not start with a space. */
	for (; p < end; p++) {
		if (*p == '\n' && (p + 1 >= end || p[1] != ' ')) {
			return 0;
		}
		if (*p == '<') {
			const char *q = memchr(p, '>', (size_t)(end - p));

			if (q == NULL) {
				return 0;
			}
			if (k-- == 0) {
				return copy_field(out, size, p + 1, (size_t)(q - p - 1)) == 0;
			}
			p = q;
		}
	}
	return 0;
}

/*
 * The challenge mail is ours: compute the digest, write the reply into
 * the area and record "answered" in flash before anything is sent (RFC
 * 8823 section 3: a challenge mail is answered once, even across a
 * reboot).
 */
static int
engine_answer(acme_smime_ctx *ctx, const acme_smime_mail_verdict *v)
{
	char tp[ACME_SMIME_THUMBPRINT_SIZE], digest[ACME_SMIME_DIGEST_SIZE];
	char other[ACME_SMIME_DIGEST_SIZE], msgid[ACME_SMIME_MAX_ADDR + 32];
	unsigned char rnd[16];
	acme_smime_response resp;
	const char *at = strrchr(ctx->authz_identifier, '@');
	int mode = ctx->cfg->token_concat, r;
	textbuf tb;

	acme_smime_jwk_thumbprint(&ctx->account_key, tp);
	r = acme_smime_rfc8823_digest(v->token_part1, ctx->challenge.token, tp, mode, digest);
	if (r < 0) {
		engine_fail(ctx, r, 0, "cannot compute the RFC 8823 digest");
		return r;
	}
	if (acme_smime_rfc8823_digest(v->token_part1, ctx->challenge.token, tp, !mode,
	    other) == ACME_SMIME_OK && strcmp(other, digest) != 0) {
		engine_log(ctx, ACME_SMIME_LOG_INFO, mode == ACME_SMIME_CONCAT_BYTES ?
		    "token joined as BYTES (STRING would differ)" :
		    "token joined as STRING (BYTES would differ)", NULL);
	}
	if (ctx->ports->entropy(ctx->ports->user, rnd, sizeof rnd) != 0) {
		engine_fail(ctx, ACME_SMIME_ERR_ENTROPY, 1, "entropy source failed");
		return ctx->err.code;
	}
	tb_init(&tb, msgid, sizeof msgid);
	tb_putc(&tb, '<');
	tb_put_b64url(&tb, rnd, sizeof rnd);
	tb_puts(&tb, at != NULL ? at : "@acme-smime.invalid");
	tb_putc(&tb, '>');
	tb_finish(&tb);
	memset(&resp, 0, sizeof resp);
	resp.from = ctx->authz_identifier;
	resp.challenge = v;
	resp.digest = digest;
	resp.message_id = msgid;
	resp.date = ctx->ports->unix_time(ctx->ports->user);
	r = acme_smime_write_response_mail((char *)http_area(ctx), http_area_size(ctx), &resp);
	if (r < 0) {
		engine_fail(ctx, r, 0, "cannot write the response mail");
		return r;
	}
	ctx->reply_len = (size_t)r;
	ctx->email_flags = EMAIL_ANSWERED;
	ctx->answered_uid = ctx->candidate_uid[ctx->candidate_index];
	/* Remembered with the account, beyond this order: the same mail
	 * delivered again later is never answered again. */
	if (ctx->answered_count == ARRAY_LEN(ctx->answered_tokens)) {
		memmove(ctx->answered_tokens, ctx->answered_tokens + 1,
		    sizeof ctx->answered_tokens - sizeof ctx->answered_tokens[0]);
		ctx->answered_count--;
	}
	ctx->answered_tokens[ctx->answered_count++] =
	    uid_hash(v->token_part1, strlen(v->token_part1));
	engine_log(ctx, ACME_SMIME_LOG_INFO, "challenge mail accepted: answering ", v->message_id);
	/* The order's record first: cut between the two writes, the next
	 * boot knows the mail was taken (answered, maybe not sent) and
	 * starts a new order; the account's list only guards against the
	 * same mail delivered again later. */
	if (engine_save_enrollment(ctx, 0) < 0) {
		return ctx->err.code;
	}
	return engine_save_account(ctx);
}

/* What engine_examine() found. */
#define EXAMINE_REFUSED  0
#define EXAMINE_ANSWERED 1
#define EXAMINE_DEFER    2   /* the S/MIME signature needs more room */

/*
 * The message in the HTTP area (body_len bytes) may be the challenge:
 * check it, and answer it when it is ours and was never answered. The
 * decoded S/MIME signature goes to the rest of the HTTP area; when the
 * mail and its signature do not fit together, the check is deferred
 * until no connection is open, and then the TLS area takes it (roomy:
 * ACME_SMIME_TLS_AREA bytes). Returns EXAMINE_* or an error.
 */

static int
engine_examine(acme_smime_ctx *ctx, int roomy)
{
	acme_smime_pending pending;
	acme_smime_mail_verdict v;
	int r;

	engine_pending(ctx, &pending);
	if (roomy) {
		pending.smime_work = ctx->work;
		pending.smime_work_size = ACME_SMIME_TLS_AREA;
	} else {
		pending.smime_work = http_area(ctx) + ctx->body_len + 1;
		pending.smime_work_size = http_area_size(ctx) - ctx->body_len - 1;
	}
	r = acme_smime_check_challenge_mail((const char *)http_area(ctx), ctx->body_len,
	    &pending, &v);
	if (roomy) {
		wipe(ctx->work, ACME_SMIME_TLS_AREA);
	} else if (r != ACME_SMIME_OK && v.reason == ACME_SMIME_MAIL_SMIME_LIMIT) {
		engine_log(ctx, ACME_SMIME_LOG_INFO, "S/MIME signature larger than the "
		    "rest of the buffer: checked once the connection is closed", NULL);
		return EXAMINE_DEFER;
	}
	if (r == ACME_SMIME_OK && uid_in(ctx->answered_tokens, ctx->answered_count,
	    uid_hash(v.token_part1, strlen(v.token_part1)))) {
		/* The same challenge mail again (re-delivered, copied): it
		 * was answered once and never will be twice. */
		engine_log(ctx, ACME_SMIME_LOG_INFO,
		    "ignoring a message: answered before: ", v.message_id);
		return EXAMINE_REFUSED;
	}
	if (r != ACME_SMIME_OK) {
		engine_log(ctx, ACME_SMIME_LOG_INFO, "ignoring a message: ",
		    acme_smime_mail_reason_text(v.reason));
		return EXAMINE_REFUSED;
	}
	if (v.relaxed != 0) {
		engine_log(ctx, ACME_SMIME_LOG_WARN,
		    "relaxed challenge-mail policy let this mail through", NULL);
	}
	r = engine_answer(ctx, &v);
	wipe(&v, sizeof v);
	if (r < 0) {
		return r;
	}
	ctx->mail_found = 1;
	return EXAMINE_ANSWERED;
}

/* The reply is on its way: give it time to reach the CA's mailbox before
 * the challenge POST makes the CA look (protocol.md 6). */
static int
engine_reply_grace(acme_smime_ctx *ctx)
{
	return engine_wait(ctx, cfg_or(ctx->cfg->reply_grace_s, 30), ST_CHALLENGE_RESPOND,
	    "reply-grace");
}

/* --- the built-in POP3 and SMTP clients (section 10) --- */

#ifndef ACME_SMIME_NO_MAIL_CLIENTS

static int
mail_fail(acme_smime_ctx *ctx, int retryable, const char *text)
{
	tls_close(ctx);
	engine_fail(ctx, ACME_SMIME_ERR_MAIL, retryable, text);
	if (ctx->line[0] != '\0') {
		engine_log(ctx, ACME_SMIME_LOG_ERROR, "server said: ", ctx->line);
	}
	return ctx->err.code;
}

static int
req_pop3_connect(acme_smime_ctx *ctx)
{
	const acme_smime_mail_server *m = &ctx->cfg->pop3;
	int r;

	if (m->host == NULL || m->user == NULL || m->password == NULL) {
		engine_fail(ctx, ACME_SMIME_ERR_INVALID, 0,
		    "email identifiers need a POP3 server, user and password");
		return ctx->err.code;
	}
	engine_log(ctx, ACME_SMIME_LOG_INFO, ctx->mbox_purpose == MBOX_SNAPSHOT ?
	    "POP3: mailbox snapshot at " : "POP3: looking for the challenge at ", m->host);
	r = conn_open(ctx, m->host, m->port, m->tls == ACME_SMIME_TLS_IMPLICIT,
	    ctx->cfg->mail_trust_anchors, ctx->cfg->mail_trust_anchor_count, 1);
	return r < 0 ? r : mx_command(ctx, MX_POP3_LINE, NULL, NULL, 0);
}

static int
resp_pop3_greeting(acme_smime_ctx *ctx)
{
	if (!ctx->mx_ok) {
		return mail_fail(ctx, 1, "POP3 server greeting is not +OK");
	}
	return ST_POP3_CAPA;
}

/* CAPA, at the start and again over TLS (RFC 2595 section 4): a server
 * without it (-ERR) gets every command tried. */
static int
req_pop3_capa(acme_smime_ctx *ctx)
{
	ctx->mail_caps = 0;
	return mx_command(ctx, MX_POP3_LIST, "CAPA", NULL, 0);
}

/* A capability line: its first word. */
static void
pop3_capa_line(acme_smime_ctx *ctx)
{
	static const struct {
		const char *word;
		unsigned cap;
	} known[] = {
		{ "STLS", CAP_STARTTLS }, { "TOP", CAP_TOP }, { "UIDL", CAP_UIDL },
		{ "USER", CAP_USER },
	};
	size_t n = strcspn(ctx->line, " "), k;

	for (k = 0; k < ARRAY_LEN(known); k++) {
		if (ascii_caseeq(ctx->line, n, known[k].word)) {
			ctx->mail_caps |= known[k].cap;
		}
	}
}

static int
resp_pop3_capa(acme_smime_ctx *ctx)
{
	unsigned caps = ctx->mx_ok ? ctx->mail_caps | CAP_KNOWN : 0;

	ctx->mail_caps = caps;
	if (ctx->cfg->pop3.tls == ACME_SMIME_TLS_STARTTLS && !ctx->conn_tls) {
		if ((caps & CAP_KNOWN) && !(caps & CAP_STARTTLS)) {
			return mail_fail(ctx, 0, "POP3 server does not offer STLS");
		}
		return ST_POP3_STLS;
	}
	if ((caps & CAP_KNOWN) && !(caps & CAP_USER)) {
		return mail_fail(ctx, 0, "POP3 server does not offer USER/PASS login");
	}
	if ((caps & CAP_KNOWN) && !(caps & CAP_UIDL)) {
		return mail_fail(ctx, 0, "POP3 server does not offer UIDL");
	}
	return ST_POP3_USER;
}

static int
req_pop3_stls(acme_smime_ctx *ctx)
{
	return mx_command(ctx, MX_POP3_LINE, "STLS", NULL, 0);
}

static int
resp_pop3_stls(acme_smime_ctx *ctx)
{
	if (!ctx->mx_ok) {
		return mail_fail(ctx, 0, "POP3 server refused STLS");
	}
	if (tls_start(ctx, ctx->cfg->mail_trust_anchors, ctx->cfg->mail_trust_anchor_count,
	    0) < 0) {
		return ctx->err.code;
	}
	return ST_POP3_CAPA;
}

static int
req_pop3_user(acme_smime_ctx *ctx)
{
	return mx_command(ctx, MX_POP3_LINE, "USER", ctx->cfg->pop3.user, 0);
}

static int
resp_pop3_user(acme_smime_ctx *ctx)
{
	return ctx->mx_ok ? ST_POP3_PASS : mail_fail(ctx, 0, "POP3 server refused USER");
}

static int
req_pop3_pass(acme_smime_ctx *ctx)
{
	return mx_command(ctx, MX_POP3_LINE, "PASS", ctx->cfg->pop3.password, 1);
}

static int
resp_pop3_pass(acme_smime_ctx *ctx)
{
	return ctx->mx_ok ? ST_POP3_UIDL : mail_fail(ctx, 0, "POP3 login refused");
}

static int
req_pop3_uidl(acme_smime_ctx *ctx)
{
	mbox_start_listing(ctx);
	return mx_command(ctx, MX_POP3_LIST, "UIDL", NULL, 0);
}

/* A line of a CAPA or UIDL listing; a UIDL line is "number uid". */
static void
pop3_body_line(acme_smime_ctx *ctx)
{
	const char *p = ctx->line, *sp;
	long num;

	if (ctx->state == ST_POP3_CAPA) {
		pop3_capa_line(ctx);
		return;
	}
	sp = memchr(p, ' ', ctx->line_len);
	num = sp != NULL && sp > p && sp - p <= 9 ? parse_digits(p, (size_t)(sp - p)) : -1;
	if (num <= 0) {
		ctx->list_bad = 1;
		return;
	}
	mbox_entry(ctx, sp + 1, ctx->line_len - (size_t)(sp + 1 - p), (unsigned)num, 0);
}

static int
resp_pop3_uidl(acme_smime_ctx *ctx)
{
	if (!ctx->mx_ok || ctx->list_bad) {
		return mail_fail(ctx, 1, ctx->mx_ok ? "malformed POP3 UIDL listing" :
		    "POP3 server refused UIDL");
	}
	mbox_listed(ctx);
	return ctx->candidate_count > 0 ? ST_POP3_LIST : ST_POP3_QUIT;
}

/* "LIST n", "TOP n 0" or "RETR n" for the current candidate. */
static int
pop3_candidate_command(acme_smime_ctx *ctx, int kind, const char *cmd, int top)
{
	char arg[16];
	textbuf tb;

	tb_init(&tb, arg, sizeof arg);
	tb_putu(&tb, ctx->candidate[ctx->candidate_index], 1);
	if (top) {
		tb_puts(&tb, " 0");
	}
	tb_finish(&tb);
	return mx_command(ctx, kind, cmd, arg, 0);
}

/* The current candidate is done with (not ours): on to the next. */
static int
pop3_next_candidate(acme_smime_ctx *ctx)
{
	mbox_examined(ctx, ctx->candidate_uid[ctx->candidate_index]);
	return ++ctx->candidate_index < ctx->candidate_count ? ST_POP3_LIST : ST_POP3_QUIT;
}

static int
req_pop3_list(acme_smime_ctx *ctx)
{
	return pop3_candidate_command(ctx, MX_POP3_LINE, "LIST", 0);
}

/* "+OK n size": a message that cannot fit the work buffer is not read. */
static int
resp_pop3_list(acme_smime_ctx *ctx)
{
	const char *sp;
	size_t n;
	long size;

	if (!ctx->mx_ok) {
		engine_log(ctx, ACME_SMIME_LOG_INFO, "skipping a message the server "
		    "would not list", NULL);
		return pop3_next_candidate(ctx);
	}
	sp = ctx->line_len > 4 ? memchr(ctx->line + 4, ' ', ctx->line_len - 4) : NULL;
	n = sp != NULL ? strcspn(sp + 1, " ") : 0;
	size = n > 0 && n <= 9 ? parse_digits(sp + 1, n) : -1;
	if (n > 9 || (size >= 0 && (size_t)size + 1 >= http_area_size(ctx))) {
		engine_log(ctx, ACME_SMIME_LOG_WARN, "skipping a message larger than "
		    "the work buffer", NULL);
		return pop3_next_candidate(ctx);
	}
	return (ctx->mail_caps & CAP_KNOWN) && !(ctx->mail_caps & CAP_TOP) ?
	    ST_POP3_RETR : ST_POP3_TOP;
}

/*
 * The header alone (POP3 "TOP n 0"): could this be the pending challenge?
 * The header checks of check_mail(), none of the proofs. With relaxed
 * header protection the outer From, To and Subject may be replaced by the
 * signed ones, so only the header's form and Date are judged.
 */
static int
screen_mail_header(const char *text, size_t len, const acme_smime_pending *pending)
{
	char scratch[ACME_SMIME_MAX_HEADER + 1];
	acme_smime_mail_verdict v;
	mail_header hdr;
	int reason;

	memset(&v, 0, sizeof v);
	reason = header_scan(&hdr, text, len);
	if (reason == ACME_SMIME_MAIL_OK) {
		reason = check_fields(&hdr, scratch, pending, &v,
		    (pending->policy & ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION) != 0);
	}
	return reason;
}

static int
req_pop3_top(acme_smime_ctx *ctx)
{
	return pop3_candidate_command(ctx, MX_POP3_MULTI, "TOP", 1);
}

/* The header alone: most mail that is not the challenge stops here. TOP
 * is optional (RFC 1939): without it, the whole mail is read. */
static int
resp_pop3_top(acme_smime_ctx *ctx)
{
	acme_smime_pending pending;
	int reason;

	if (!ctx->mx_ok) {
		return ST_POP3_RETR;
	}
	if (ctx->mx_truncated) {
		engine_log(ctx, ACME_SMIME_LOG_WARN, "skipping a message whose header is "
		    "larger than the work buffer", NULL);
		return pop3_next_candidate(ctx);
	}
	engine_pending(ctx, &pending);
	reason = screen_mail_header((const char *)http_area(ctx), ctx->body_len, &pending);
	if (reason != ACME_SMIME_MAIL_OK) {
		engine_log(ctx, ACME_SMIME_LOG_INFO, "ignoring a message: ",
		    acme_smime_mail_reason_text(reason));
		return pop3_next_candidate(ctx);
	}
	return ST_POP3_RETR;
}

static int
req_pop3_retr(acme_smime_ctx *ctx)
{
	return pop3_candidate_command(ctx, MX_POP3_MULTI, "RETR", 0);
}

static int
resp_pop3_retr(acme_smime_ctx *ctx)
{
	int r;

	if (!ctx->mx_ok || ctx->mx_truncated) {
		engine_log(ctx, ACME_SMIME_LOG_WARN, ctx->mx_ok ?
		    "skipping a message larger than the work buffer" :
		    "skipping a message the server would not give", NULL);
		return pop3_next_candidate(ctx);
	}
	r = engine_examine(ctx, 0);
	if (r < 0) {
		return r;
	}
	if (r == EXAMINE_REFUSED) {
		return pop3_next_candidate(ctx);
	}
	if (r == EXAMINE_DEFER) {
		ctx->mail_deferred = 1;
		ctx->mail_size = ctx->body_len;   /* QUIT resets body_len */
		return ST_POP3_QUIT;
	}
	return ctx->cfg->mail_delete ? ST_POP3_DELE : ST_POP3_QUIT;
}

/* The answered challenge mail goes (at QUIT, RFC 1939 UPDATE state). */
static int
req_pop3_dele(acme_smime_ctx *ctx)
{
	return pop3_candidate_command(ctx, MX_POP3_LINE, "DELE", 0);
}

static int
resp_pop3_dele(acme_smime_ctx *ctx)
{
	if (!ctx->mx_ok) {
		engine_log(ctx, ACME_SMIME_LOG_WARN,
		    "the POP3 server did not delete the answered mail", NULL);
	}
	return ST_POP3_QUIT;
}

static int
req_pop3_quit(acme_smime_ctx *ctx)
{
	return mx_command(ctx, MX_POP3_LINE, "QUIT", NULL, 0);
}

static int
resp_pop3_quit(acme_smime_ctx *ctx)
{
	if (ctx->mail_found && ctx->cfg->mail_delete && !ctx->mx_ok) {
		engine_log(ctx, ACME_SMIME_LOG_WARN,
		    "POP3 QUIT failed: the answered mail may not be deleted", NULL);
	}
	tls_close(ctx);
	if (ctx->mbox_purpose == MBOX_SNAPSHOT) {
		return engine_after_snapshot(ctx);
	}
	if (ctx->mail_deferred) {
		/* No connection now: the TLS area is free for the signature.
		 * The candidates after this one come in the next session. */
		int r;

		ctx->body_len = ctx->mail_size;
		r = engine_examine(ctx, 1);

		ctx->mail_deferred = 0;
		if (r < 0) {
			return r;
		}
		if (r == EXAMINE_REFUSED) {
			mbox_examined(ctx, ctx->candidate_uid[ctx->candidate_index]);
			return ctx->candidate_index + 1 < ctx->candidate_count ?
			    ST_POP3_CONNECT : engine_mail_poll(ctx, ST_POP3_CONNECT);
		}
		if (ctx->cfg->mail_delete) {
			engine_log(ctx, ACME_SMIME_LOG_WARN, "the answered mail stays in the "
			    "mailbox: its signature was checked after the session", NULL);
		}
	}
	return ctx->mail_found ? ST_SMTP_CONNECT : engine_mail_poll(ctx, ST_POP3_CONNECT);
}

/* SMTP submission of the reply. */

static int
smtp_fail(acme_smime_ctx *ctx, const char *what)
{
	/* 4xx: the server asks to try later; 5xx: it refuses. */
	return mail_fail(ctx, ctx->mx_code >= 400 && ctx->mx_code < 500, what);
}

static int
req_smtp_connect(acme_smime_ctx *ctx)
{
	const acme_smime_mail_server *m = &ctx->cfg->smtp;
	int r;

	if (m->host == NULL) {
		engine_fail(ctx, ACME_SMIME_ERR_INVALID, 0,
		    "email identifiers need an SMTP submission server");
		return ctx->err.code;
	}
	engine_log(ctx, ACME_SMIME_LOG_INFO, "SMTP: sending the reply through ", m->host);
	ctx->mail_caps = 0;
	r = conn_open(ctx, m->host, m->port, m->tls == ACME_SMIME_TLS_IMPLICIT,
	    ctx->cfg->mail_trust_anchors, ctx->cfg->mail_trust_anchor_count, 1);
	return r < 0 ? r : mx_command(ctx, MX_SMTP, NULL, NULL, 0);
}

static int
resp_smtp_greeting(acme_smime_ctx *ctx)
{
	return ctx->mx_code == 220 ? ST_SMTP_EHLO : smtp_fail(ctx, "SMTP greeting is not 220");
}

static int
req_smtp_ehlo(acme_smime_ctx *ctx)
{
	const char *at = strrchr(ctx->authz_identifier, '@');

	ctx->mail_caps = 0;
	return mx_command(ctx, MX_SMTP, "EHLO", at != NULL ? at + 1 : "localhost", 0);
}

static int
resp_smtp_ehlo(acme_smime_ctx *ctx)
{
	if (ctx->mx_code != 250) {
		return smtp_fail(ctx, "SMTP server refused EHLO");
	}
	if (ctx->cfg->smtp.tls == ACME_SMIME_TLS_STARTTLS && !ctx->conn_tls) {
		if (!(ctx->mail_caps & CAP_STARTTLS)) {
			return mail_fail(ctx, 0, "SMTP server does not offer STARTTLS");
		}
		return ST_SMTP_STARTTLS;
	}
	return ctx->cfg->smtp.user != NULL ? ST_SMTP_AUTH : ST_SMTP_MAIL;
}

static int
req_smtp_starttls(acme_smime_ctx *ctx)
{
	return mx_command(ctx, MX_SMTP, "STARTTLS", NULL, 0);
}

static int
resp_smtp_starttls(acme_smime_ctx *ctx)
{
	if (ctx->mx_code != 220) {
		return smtp_fail(ctx, "SMTP server refused STARTTLS");
	}
	if (tls_start(ctx, ctx->cfg->mail_trust_anchors, ctx->cfg->mail_trust_anchor_count,
	    0) < 0) {
		return ctx->err.code;
	}
	return ST_SMTP_EHLO;   /* RFC 3207: EHLO again over TLS */
}

/* "AUTH PLAIN <base64(\0user\0password)>" or the first step of LOGIN. */
static int
req_smtp_auth(acme_smime_ctx *ctx)
{
	const acme_smime_mail_server *m = &ctx->cfg->smtp;
	unsigned char raw[2 * ACME_SMIME_MAX_ADDR + 4];
	size_t ul, pl;
	int r;

	if (!(ctx->mail_caps & CAP_AUTH_PLAIN)) {
		if (ctx->mail_caps & CAP_AUTH_LOGIN) {
			return mx_command(ctx, MX_SMTP, "AUTH", "LOGIN", 0);
		}
		return mail_fail(ctx, 0, "SMTP server offers neither AUTH PLAIN nor LOGIN");
	}
	ul = strlen(m->user);
	pl = m->password != NULL ? strlen(m->password) : 0;
	if (ul + pl + 2 > sizeof raw) {
		return mail_fail(ctx, 0, "SMTP user name or password too long");
	}
	raw[0] = 0;
	memcpy(raw + 1, m->user, ul);
	raw[1 + ul] = 0;
	memcpy(raw + 2 + ul, m->password, pl);
	r = mx_command(ctx, MX_SMTP, "AUTH PLAIN", "", 1);
	if (r == 0) {
		r = mx_put_base64(ctx, raw, ul + pl + 2);
	}
	wipe(raw, sizeof raw);
	return r;
}

static int
resp_smtp_auth(acme_smime_ctx *ctx)
{
	if (ctx->mx_code == 235) {
		return ST_SMTP_MAIL;
	}
	if (ctx->mx_code == 334) {
		return ST_SMTP_AUTH_USER;
	}
	return smtp_fail(ctx, "SMTP authentication refused");
}

/* One AUTH LOGIN answer: base64 of the user name or the password. */
static int
smtp_login_step(acme_smime_ctx *ctx, const char *secret)
{
	int r = mx_command(ctx, MX_SMTP, "", NULL, 1);

	/* mx_command wrote an empty line: the value goes before its CRLF. */
	if (r == 0) {
		r = mx_put_base64(ctx, (const unsigned char *)secret,
		    secret != NULL ? strlen(secret) : 0);
	}
	return r;
}

static int
req_smtp_auth_user(acme_smime_ctx *ctx)
{
	return smtp_login_step(ctx, ctx->cfg->smtp.user);
}

static int
resp_smtp_auth_user(acme_smime_ctx *ctx)
{
	return ctx->mx_code == 334 ? ST_SMTP_AUTH_PASS :
	    smtp_fail(ctx, "SMTP AUTH LOGIN refused the user name");
}

static int
req_smtp_auth_pass(acme_smime_ctx *ctx)
{
	return smtp_login_step(ctx, ctx->cfg->smtp.password);
}

static int
resp_smtp_auth_pass(acme_smime_ctx *ctx)
{
	return ctx->mx_code == 235 ? ST_SMTP_MAIL :
	    smtp_fail(ctx, "SMTP authentication refused");
}

static int
req_smtp_mail(acme_smime_ctx *ctx)
{
	char arg[ACME_SMIME_MAX_ADDR + 8];
	textbuf tb;

	tb_init(&tb, arg, sizeof arg);
	tb_puts(&tb, "FROM:<");
	tb_puts(&tb, ctx->authz_identifier);
	tb_putc(&tb, '>');
	tb_finish(&tb);
	return mx_command(ctx, MX_SMTP, "MAIL", arg, 0);
}

static int
resp_smtp_mail(acme_smime_ctx *ctx)
{
	if (ctx->mx_code != 250) {
		return smtp_fail(ctx, "SMTP server refused MAIL FROM");
	}
	ctx->rcpt_index = 0;
	return ST_SMTP_RCPT;
}

static int
req_smtp_rcpt(acme_smime_ctx *ctx)
{
	char addr[ACME_SMIME_MAX_ADDR + 1], arg[ACME_SMIME_MAX_ADDR + 8];
	textbuf tb;

	if (!reply_recipient(ctx, ctx->rcpt_index, addr, sizeof addr)) {
		return mail_fail(ctx, 0, "the reply has no recipient");
	}
	tb_init(&tb, arg, sizeof arg);
	tb_puts(&tb, "TO:<");
	tb_puts(&tb, addr);
	tb_putc(&tb, '>');
	tb_finish(&tb);
	return mx_command(ctx, MX_SMTP, "RCPT", arg, 0);
}

static int
resp_smtp_rcpt(acme_smime_ctx *ctx)
{
	char addr[ACME_SMIME_MAX_ADDR + 1];

	if (ctx->mx_code != 250 && ctx->mx_code != 251) {
		return smtp_fail(ctx, "SMTP server refused a recipient");
	}
	ctx->rcpt_index++;
	return reply_recipient(ctx, ctx->rcpt_index, addr, sizeof addr) ?
	    ST_SMTP_RCPT : ST_SMTP_DATA;
}

static int
req_smtp_data(acme_smime_ctx *ctx)
{
	return mx_command(ctx, MX_SMTP, "DATA", NULL, 0);
}

static int
resp_smtp_data(acme_smime_ctx *ctx)
{
	return ctx->mx_code == 354 ? ST_SMTP_BODY : smtp_fail(ctx, "SMTP server refused DATA");
}

/* In-place SMTP dot-stuffing of the n bytes at the start of the area,
 * then the ".\r\n" terminator. Returns the new length or an error. */
static long
engine_dot_stuff(acme_smime_ctx *ctx, size_t n)
{
	unsigned char *a = http_area(ctx);
	size_t dots = 0, i, j;

	for (i = 0; i < n; i++) {
		dots += a[i] == '.' && (i == 0 || a[i - 1] == '\n');
	}
	if (n + dots + 3 > http_area_size(ctx)) {
		return ACME_SMIME_ERR_LIMIT;
	}
	for (i = n, j = n + dots; i > 0; i--) {
		a[--j] = a[i - 1];
		if (a[i - 1] == '.' && (i == 1 || a[i - 2] == '\n')) {
			a[--j] = '.';
		}
	}
	memcpy(a + n + dots, ".\r\n", 3);
	return (long)(n + dots + 3);
}

/* The reply, dot-stuffed and terminated in place, from the area. */
static int
req_smtp_body(acme_smime_ctx *ctx)
{
	long n = engine_dot_stuff(ctx, ctx->reply_len);
	int r;

	if (n < 0) {
		engine_fail(ctx, (int)n, 0, "the response mail does not fit once dot-stuffed");
		return (int)n;
	}
	r = mx_command(ctx, MX_SMTP, "", NULL, 0);
	ctx->mx_from = MX_FROM_AREA;
	ctx->req_len = ctx->reply_len = (size_t)n;
	return r;
}

static int
resp_smtp_body(acme_smime_ctx *ctx)
{
	if (ctx->mx_code != 250) {
		return smtp_fail(ctx, "SMTP server refused the reply");
	}
	engine_log(ctx, ACME_SMIME_LOG_INFO, "reply accepted by the SMTP server", NULL);
	ctx->email_flags |= EMAIL_SENT;
	return engine_save_enrollment(ctx, 0) < 0 ? ctx->err.code : ST_SMTP_QUIT;
}

static int
req_smtp_quit(acme_smime_ctx *ctx)
{
	return mx_command(ctx, MX_SMTP, "QUIT", NULL, 0);
}

/* Whatever QUIT gets, the reply is out. */
static int
resp_smtp_quit(acme_smime_ctx *ctx)
{
	tls_close(ctx);
	return engine_reply_grace(ctx);
}

#endif /* ACME_SMIME_NO_MAIL_CLIENTS */

/* --- the caller's mailbox (ports->mailbox) instead of POP3 and SMTP --- */

/* A hook said "not yet" (ask again in a second) or failed. */
static int
mbox_hook_again(acme_smime_ctx *ctx, int r, int state, const char *failure)
{
	if (r > 0) {
		return engine_wait(ctx, 1, state, "mailbox-hook");
	}
	engine_fail(ctx, ACME_SMIME_ERR_HOOK, 1, failure);
	return ctx->err.code;
}

static void
mbox_hook_entry(void *arg, const char *id, size_t id_len, size_t size)
{
	acme_smime_ctx *ctx = (acme_smime_ctx *)arg;

	if (id == NULL) {
		ctx->list_bad = 1;
		return;
	}
	mbox_entry(ctx, id, id_len, ctx->listed + 1, size);
}

static int
local_mbox_list(acme_smime_ctx *ctx)
{
	const acme_smime_mailbox *mb = ctx->ports->mailbox;
	int r;

	mbox_start_listing(ctx);
	r = mb->list(ctx->ports->user, mbox_hook_entry, ctx);
	if (r != 0) {
		return mbox_hook_again(ctx, r, ST_MBOX_LIST,
		    "the mailbox hook could not list the mailbox");
	}
	if (ctx->list_bad) {
		engine_fail(ctx, ACME_SMIME_ERR_HOOK, 0,
		    "the mailbox hook listed an empty or too long message id");
		return ctx->err.code;
	}
	mbox_listed(ctx);
	if (ctx->mbox_purpose == MBOX_SNAPSHOT) {
		return engine_after_snapshot(ctx);
	}
	return ctx->candidate_count > 0 ? ST_MBOX_READ : engine_mail_poll(ctx, ST_MBOX_LIST);
}

/* Read the candidate and examine it; the next one comes from a new list. */
static int
local_mbox_read(acme_smime_ctx *ctx)
{
	const acme_smime_mailbox *mb = ctx->ports->mailbox;
	size_t room = http_area_size(ctx) - 1, len = 0;
	int r = ACME_SMIME_ERR_LIMIT;

	if (ctx->mail_size < room) {
		r = mb->read(ctx->ports->user, ctx->mail_id, (char *)http_area(ctx), room, &len);
	}
	if (r > 0) {
		return mbox_hook_again(ctx, r, ST_MBOX_READ, "");
	}
	if (r == 0 && len > room) {
		engine_fail(ctx, ACME_SMIME_ERR_HOOK, 0,
		    "the mailbox hook read more than the buffer holds");
		return ctx->err.code;
	}
	if (r == ACME_SMIME_ERR_LIMIT || r == ACME_SMIME_ERR_INVALID) {
		engine_log(ctx, ACME_SMIME_LOG_WARN, r == ACME_SMIME_ERR_LIMIT ?
		    "skipping a message larger than the work buffer" :
		    "skipping a message that is gone", NULL);
		mbox_examined(ctx, ctx->candidate_uid[0]);
		return ST_MBOX_LIST;
	}
	if (r < 0) {
		return mbox_hook_again(ctx, r, ST_MBOX_READ,
		    "the mailbox hook could not read a message");
	}
	http_area(ctx)[len] = '\0';
	ctx->body_len = len;
	r = engine_examine(ctx, 0);
	if (r == EXAMINE_DEFER) {
		/* The ACME connection goes (it is resumed later) so that the
		 * TLS area can take the signature. */
		tls_close(ctx);
		r = engine_examine(ctx, 1);
	}
	if (r < 0) {
		return r;
	}
	if (r == EXAMINE_REFUSED) {
		mbox_examined(ctx, ctx->candidate_uid[0]);
		return ST_MBOX_LIST;
	}
	return ctx->cfg->mail_delete && mb->remove != NULL ? ST_MBOX_REMOVE : ST_MBOX_SEND;
}

static int
local_mbox_remove(acme_smime_ctx *ctx)
{
	int r = ctx->ports->mailbox->remove(ctx->ports->user, ctx->mail_id);

	if (r > 0) {
		return mbox_hook_again(ctx, r, ST_MBOX_REMOVE, "");
	}
	if (r < 0) {
		engine_log(ctx, ACME_SMIME_LOG_WARN,
		    "the mailbox hook did not delete the answered mail", NULL);
	}
	return ST_MBOX_SEND;
}

/* Hand the reply to the hook: the envelope recipients are the reply's To
 * addresses, written after the reply in the area. */
static int
local_mbox_send(acme_smime_ctx *ctx)
{
	const char *to[ACME_SMIME_MAX_REPLY_TO + 1];
	char *dst = (char *)http_area(ctx) + ctx->reply_len + 1;
	size_t room = http_area_size(ctx) - ctx->reply_len - 1;
	unsigned k;
	int r;

	for (k = 0; k < ARRAY_LEN(to) && reply_recipient(ctx, k, dst, room); k++) {
		size_t n = strlen(dst) + 1;

		to[k] = dst;
		dst += n;
		room -= n;
	}
	if (k == 0) {
		engine_fail(ctx, ACME_SMIME_ERR_MAIL, 0, "the reply has no recipient");
		return ctx->err.code;
	}
	r = ctx->ports->mailbox->send(ctx->ports->user, ctx->authz_identifier, to, k,
	    (const char *)http_area(ctx), ctx->reply_len);
	if (r != 0) {
		return mbox_hook_again(ctx, r, ST_MBOX_SEND,
		    "the mailbox hook could not send the reply");
	}
	engine_log(ctx, ACME_SMIME_LOG_INFO, "reply handed to the mailbox hook", NULL);
	ctx->email_flags |= EMAIL_SENT;
	return engine_save_enrollment(ctx, 0) < 0 ? ctx->err.code : engine_reply_grace(ctx);
}

/* An email authorization: continue from what is recorded for it, or
 * look for its challenge mail. */
static int
engine_email_authz(acme_smime_ctx *ctx)
{
	int r = acme_smime_parse_authorization((const char *)http_area(ctx), ctx->body_len,
	    "email-reply-00", &ctx->challenge);

	if (r < 0) {
		engine_fail(ctx, r, 0,
		    "the authorization offers no usable email-reply-00 challenge");
		return r;
	}
	if (ctx->flags_authz == ctx->authz_index && ctx->email_flags != 0) {
		if (ctx->email_flags & EMAIL_POSTED) {
			return engine_poll(ctx, ST_AUTHZ_POLL);
		}
		if (ctx->email_flags & EMAIL_SENT) {
			return ST_CHALLENGE_RESPOND;
		}
		/* Answered but maybe never sent, and a challenge mail is
		 * answered once: this order cannot succeed. Start over with a
		 * new snapshot (it then holds the old mail) and a new order. */
		engine_log(ctx, ACME_SMIME_LOG_WARN,
		    "the reply may not have left before a restart: new order", NULL);
		ctx->email_flags = 0;
		ctx->snapshot_taken = 0;
		acme_smime_key_wipe(&ctx->cert_key);
		if (engine_save_enrollment(ctx, 1) < 0) {
			return ctx->err.code;
		}
		return engine_mailbox(ctx, MBOX_SNAPSHOT);
	}
	ctx->flags_authz = ctx->authz_index;
	ctx->email_flags = 0;
	ctx->mail_found = 0;
	ctx->examined_count = 0;
	ctx->mail_deadline_ms = engine_now_ms(ctx) +
	    (uint64_t)cfg_or(ctx->cfg->mail_wait_s, 600) * 1000u;
	/* The CA mails when it answered this fetch (or at newOrder): give
	 * the mail a moment to be delivered before the first look. */
	return engine_wait(ctx, cfg_or(ctx->cfg->mail_poll_s, 10) < 2 ?
	    cfg_or(ctx->cfg->mail_poll_s, 10) : 2, engine_mailbox(ctx, MBOX_FETCH),
	    "mail-delivery");
}

/* The mail states' functions, or NULL without the mail clients (those
 * states are then never entered). */
#ifndef ACME_SMIME_NO_MAIL_CLIENTS
#define MAIL_FN(f) f
#else
#define MAIL_FN(f) NULL
#endif

/* How a state talks: not at all, over HTTP to the ACME server, or with a
 * mail server. */
#define TALK_LOCAL 0
#define TALK_HTTP  1
#define TALK_MAIL  2

typedef struct {
	const char *name;
	int (*request)(acme_smime_ctx *ctx);   /* NULL: a local state */
	int (*response)(acme_smime_ctx *ctx);  /* or the local action */
	unsigned char talk;                    /* TALK_* */
	unsigned char signed_request;          /* needs a nonce */
} engine_state;

static const engine_state engine_states[ST_COUNT] = {
	{ "directory",            req_directory,                resp_directory,                TALK_HTTP,   0 },
	{ "new-nonce",            req_nonce,                    resp_nonce,                    TALK_HTTP,   0 },
	{ "new-account",          req_account,                  resp_account,                  TALK_HTTP,   1 },
	{ "new-order",            req_order,                    resp_order,                    TALK_HTTP,   1 },
	{ "authorization",        req_authz,                    resp_authz,                    TALK_HTTP,   1 },
	{ "challenge-provision",  NULL,                         local_challenge_provision,     TALK_LOCAL,  0 },
	{ "challenge-respond",    req_challenge_respond,        resp_challenge_respond,        TALK_HTTP,   1 },
	{ "authorization-poll",   req_authz,                    resp_authz_poll,               TALK_HTTP,   1 },
	{ "finalize",             req_finalize,                 resp_finalize,                 TALK_HTTP,   1 },
	{ "order-poll",           req_order_poll,               resp_order_poll,               TALK_HTTP,   1 },
	{ "download",             req_download,                 resp_download,                 TALK_HTTP,   1 },
	{ "resume-order",         req_order_poll,               resp_resume,                   TALK_HTTP,   1 },
	{ "pop3-connect",         MAIL_FN(req_pop3_connect),    MAIL_FN(resp_pop3_greeting),   TALK_MAIL,   0 },
	{ "pop3-capa",            MAIL_FN(req_pop3_capa),       MAIL_FN(resp_pop3_capa),       TALK_MAIL,   0 },
	{ "pop3-stls",            MAIL_FN(req_pop3_stls),       MAIL_FN(resp_pop3_stls),       TALK_MAIL,   0 },
	{ "pop3-user",            MAIL_FN(req_pop3_user),       MAIL_FN(resp_pop3_user),       TALK_MAIL,   0 },
	{ "pop3-pass",            MAIL_FN(req_pop3_pass),       MAIL_FN(resp_pop3_pass),       TALK_MAIL,   0 },
	{ "pop3-uidl",            MAIL_FN(req_pop3_uidl),       MAIL_FN(resp_pop3_uidl),       TALK_MAIL,   0 },
	{ "pop3-list",            MAIL_FN(req_pop3_list),       MAIL_FN(resp_pop3_list),       TALK_MAIL,   0 },
	{ "pop3-top",             MAIL_FN(req_pop3_top),        MAIL_FN(resp_pop3_top),        TALK_MAIL,   0 },
	{ "pop3-retr",            MAIL_FN(req_pop3_retr),       MAIL_FN(resp_pop3_retr),       TALK_MAIL,   0 },
	{ "pop3-dele",            MAIL_FN(req_pop3_dele),       MAIL_FN(resp_pop3_dele),       TALK_MAIL,   0 },
	{ "pop3-quit",            MAIL_FN(req_pop3_quit),       MAIL_FN(resp_pop3_quit),       TALK_MAIL,   0 },
	{ "smtp-connect",         MAIL_FN(req_smtp_connect),    MAIL_FN(resp_smtp_greeting),   TALK_MAIL,   0 },
	{ "smtp-ehlo",            MAIL_FN(req_smtp_ehlo),       MAIL_FN(resp_smtp_ehlo),       TALK_MAIL,   0 },
	{ "smtp-starttls",        MAIL_FN(req_smtp_starttls),   MAIL_FN(resp_smtp_starttls),   TALK_MAIL,   0 },
	{ "smtp-auth",            MAIL_FN(req_smtp_auth),       MAIL_FN(resp_smtp_auth),       TALK_MAIL,   0 },
	{ "smtp-auth-user",       MAIL_FN(req_smtp_auth_user),  MAIL_FN(resp_smtp_auth_user),  TALK_MAIL,   0 },
	{ "smtp-auth-pass",       MAIL_FN(req_smtp_auth_pass),  MAIL_FN(resp_smtp_auth_pass),  TALK_MAIL,   0 },
	{ "smtp-mail-from",       MAIL_FN(req_smtp_mail),       MAIL_FN(resp_smtp_mail),       TALK_MAIL,   0 },
	{ "smtp-rcpt-to",         MAIL_FN(req_smtp_rcpt),       MAIL_FN(resp_smtp_rcpt),       TALK_MAIL,   0 },
	{ "smtp-data",            MAIL_FN(req_smtp_data),       MAIL_FN(resp_smtp_data),       TALK_MAIL,   0 },
	{ "smtp-reply",           MAIL_FN(req_smtp_body),       MAIL_FN(resp_smtp_body),       TALK_MAIL,   0 },
	{ "smtp-quit",            MAIL_FN(req_smtp_quit),       MAIL_FN(resp_smtp_quit),       TALK_MAIL,   0 },
	{ "mailbox-list",         NULL,                         local_mbox_list,               TALK_LOCAL,  0 },
	{ "mailbox-read",         NULL,                         local_mbox_read,               TALK_LOCAL,  0 },
	{ "mailbox-remove",       NULL,                         local_mbox_remove,             TALK_LOCAL,  0 },
	{ "mailbox-send",         NULL,                         local_mbox_send,               TALK_LOCAL,  0 },
	{ "done",                 NULL,                         NULL,                          TALK_LOCAL,  0 },
};

/*
 * What every response shares, before its state's handler: keep the new
 * nonce; on an error status read the problem document and decide between
 * a retry (badNonce at once; rateLimited/503 after Retry-After; other 5xx
 * with back-off; each bounded) and failure. Returns 1 when the handler
 * should run, 0 when the request is to be retried, or an error.
 */
static int
engine_check_response(acme_smime_ctx *ctx)
{
	uint32_t max_retries = cfg_or(ctx->cfg->request_retries, 5);
	json_doc d;

	if (ctx->resp_nonce[0] != '\0') {
		memcpy(ctx->nonce, ctx->resp_nonce, sizeof ctx->nonce);
	}
	if (ctx->status < 400) {
		ctx->retries = 0;
		ctx->nonce_retries = 0;
		return 1;
	}
	ctx->err.problem_type[0] = '\0';
	ctx->err.problem_detail[0] = '\0';
	if (ctx->problem_json) {
		jsmntok_t *tok;
		unsigned ntok = engine_tokens(ctx, &tok);

		if (json_parse(&d, (const char *)http_area(ctx), ctx->body_len, tok,
		    ntok) == ACME_SMIME_OK) {
			engine_problem(ctx, &d);
		}
	}
	/* A server that lost the stored account (a test CA restarted, an
	 * account purged): register the same key again, once, and go on. */
	if (problem_is(ctx, "accountDoesNotExist") && ctx->url_account[0] != '\0' &&
	    ctx->state != ST_ACCOUNT && !ctx->account_renewed) {
		engine_log(ctx, ACME_SMIME_LOG_WARN,
		    "the server does not know the stored account: registering again", NULL);
		ctx->account_renewed = 1;
		ctx->url_account[0] = '\0';
		ctx->state = ST_ACCOUNT;
		return 0;
	}
	/* badNonce has its own, larger bound: a server may reject any share
	 * of nonces (Pebble's test knob rejects half), and each retry costs
	 * one request, no wait. */
	if (ctx->status == 400 && problem_is(ctx, "badNonce") &&
	    ctx->nonce_retries < ACME_SMIME_MAX_BAD_NONCE) {
		ctx->nonce_retries++;
		ctx->stats.bad_nonce_retries++;
		engine_log(ctx, ACME_SMIME_LOG_INFO, "badNonce: retrying", NULL);
		return 0;
	}
	if (ctx->retries < max_retries) {
		if ((problem_is(ctx, "rateLimited") || ctx->status == 503 ||
		    ctx->status == 429) && ctx->has_retry_after &&
		    ctx->retry_after_s <= cfg_or(ctx->cfg->retry_after_max_s, 300)) {
			ctx->retries++;
			engine_log(ctx, ACME_SMIME_LOG_INFO, "rate limited: retrying later", NULL);
			engine_wait(ctx, ctx->retry_after_s, ctx->state, "rate-limited");
			return 0;
		}
		if (ctx->status >= 500 && !problem_is(ctx, "rateLimited")) {
			ctx->retries++;
			engine_log(ctx, ACME_SMIME_LOG_INFO, "server error: retrying later", NULL);
			engine_wait(ctx, 1u << (ctx->retries < 6 ? ctx->retries : 6), ctx->state,
			    "server-error");
			return 0;
		}
	}
	if (ctx->state == ST_RESUME && ctx->status < 500) {
		return 1;   /* resp_resume() drops the stored order */
	}
	engine_fail(ctx, ACME_SMIME_ERR_ACME, ctx->status >= 500 || problem_is(ctx, "rateLimited"),
	    ctx->err.problem_type[0] != '\0' ? "the ACME server refused the request" :
	    "the ACME server answered with an error status");
	ctx->err.http_status = ctx->status;
	return ctx->err.code;
}

/* --- the public engine API --- */

int
acme_smime_init(acme_smime_ctx *ctx, const acme_smime_config *cfg,
	const acme_smime_ports *ports, unsigned char *work, size_t work_size,
	const acme_smime_key *account_key)
{
	int r;

	if (ctx == NULL || cfg == NULL || ports == NULL || work == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	memset(ctx, 0, sizeof *ctx);
	ctx->cfg = cfg;
	ctx->ports = ports;
	ctx->work = work;
	ctx->work_size = work_size;
	ctx->sock = -1;
	if (work_size < ACME_SMIME_TLS_AREA + HTTP_HEAD_ROOM + HTTP_PAYLOAD_ROOM + 2048 ||
	    ((size_t)work & (sizeof(int) - 1)) != 0 || cfg->directory_url == NULL ||
	    ports->net_connect == NULL || ports->net_send == NULL ||
	    ports->net_recv == NULL || ports->net_close == NULL ||
	    ports->unix_time == NULL || ports->monotonic_ms == NULL ||
	    ports->entropy == NULL || !identifiers_ok(cfg->identifiers, cfg->identifier_count) ||
	    cfg->trust_anchors == NULL || cfg->trust_anchor_count == 0 ||
	    (ports->mailbox != NULL && (ports->mailbox->list == NULL ||
	    ports->mailbox->read == NULL || ports->mailbox->send == NULL))) {
		engine_fail(ctx, ACME_SMIME_ERR_INVALID, 0,
		    "incomplete configuration, ports or work buffer");
		return ACME_SMIME_ERR_INVALID;
	}
	if (account_key != NULL) {
		if (!key_usable(account_key)) {
			engine_fail(ctx, ACME_SMIME_ERR_INVALID, 0, "the account key is not usable");
			return ACME_SMIME_ERR_INVALID;
		}
		ctx->account_key = *account_key;
	}
#ifdef ACME_SMIME_NO_MAIL_CLIENTS
	if (engine_has_email(cfg) && ports->mailbox == NULL) {
		engine_fail(ctx, ACME_SMIME_ERR_UNSUPPORTED, 0,
		    "built without the mail clients: email identifiers need ports.mailbox");
		return ACME_SMIME_ERR_UNSUPPORTED;
	}
#endif
	tls_setup(ctx, work, BR_SSL_BUFSIZE_MONO);
	ctx->state = ST_DIRECTORY;
	ctx->phase = PH_BUILD;
	engine_identity_hash(cfg, ctx->ident_hash);
	if (ports->flash != NULL && engine_load(ctx, account_key != NULL) < 0) {
		return ctx->err.code;
	}
	/* The mailbox snapshot comes before any ACME request: the mail
	 * connection then does not cut the ACME connection in two. */
	if (ctx->state == ST_DIRECTORY && engine_has_email(cfg) && !ctx->snapshot_taken) {
		ctx->state = engine_mailbox(ctx, MBOX_SNAPSHOT);
	}
	if (ctx->account_key.type == 0 && ctx->state != ST_DONE) {
		r = acme_smime_key_generate(&ctx->account_key,
		    cfg->account_key_type ? cfg->account_key_type : ACME_SMIME_KEY_P256,
		    ports->entropy, ports->user);
		if (r < 0) {
			engine_fail(ctx, r, 0, "account key generation failed");
			return r;
		}
	}
	ctx->deadline_ms = ports->monotonic_ms(ports->user) +
	    (uint64_t)cfg_or(cfg->deadline_s, 3600) * 1000u;
	return ACME_SMIME_OK;
}

/* Enter state next (or stay on error). */
static int
engine_enter(acme_smime_ctx *ctx, int next)
{
	if (next < 0) {
		return next;
	}
	if (ctx->phase == PH_WAIT) {
		return ACME_SMIME_WANT_TIME;   /* the handler chose to wait */
	}
	if (next != ctx->state) {
		engine_log(ctx, ACME_SMIME_LOG_DEBUG, "state: ", engine_states[next].name);
	}
	ctx->state = next;
	ctx->phase = PH_BUILD;
	return next == ST_DONE ? ACME_SMIME_DONE : ACME_SMIME_AGAIN;
}

/*
 * The ACME connection failed in the middle of an exchange (dropped or
 * reset after the handshake): try again after a back-off, a bounded
 * number of times. The nonce is gone with the request, so a new one is fetched. A
 * finalize that may have reached the server is not sent twice: the order
 * is read instead, and says what happened.
 */
static int
engine_retry_lost(acme_smime_ctx *ctx, int r)
{
	int next = ctx->state;

	/* Only a connection that worked and then broke: a server that
	 * cannot be reached at all is reported at once (the caller decides
	 * when to try again). */
	if ((r != ACME_SMIME_ERR_NET && r != ACME_SMIME_ERR_TLS) || !ctx->err.retryable ||
	    !ctx->handshake_counted ||
	    ctx->retries >= cfg_or(ctx->cfg->request_retries, 5)) {
		return r;
	}
	ctx->retries++;
	engine_log(ctx, ACME_SMIME_LOG_WARN, "connection lost: trying again: ", ctx->err.text);
	memset(&ctx->err, 0, sizeof ctx->err);
	tls_close(ctx);
	ctx->nonce[0] = '\0';
	if (next == ST_FINALIZE) {
		next = ST_ORDER_POLL;
	}
	return engine_wait(ctx, 1u << (ctx->retries < 6 ? ctx->retries : 6), next,
	    "connection-lost");
}

int
acme_smime_step(acme_smime_ctx *ctx)
{
	const engine_state *st;
	int r;

	if (ctx == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	if (ctx->err.code != 0) {
		return ctx->err.code;
	}
	if (ctx->state == ST_DONE) {
		return ACME_SMIME_DONE;
	}
	if (engine_now_ms(ctx) > ctx->deadline_ms) {
		tls_close(ctx);
		engine_fail(ctx, ACME_SMIME_ERR_TIMEOUT, 1, "the enrollment deadline passed");
		return ctx->err.code;
	}
	st = &engine_states[ctx->state];
	switch (ctx->phase) {
	case PH_WAIT:
		if (engine_now_ms(ctx) < ctx->wake_ms) {
			return ACME_SMIME_WANT_TIME;
		}
		ctx->phase = PH_BUILD;
		return ACME_SMIME_AGAIN;
	case PH_BUILD:
		if (st->talk == TALK_LOCAL) {
			return engine_enter(ctx, st->response(ctx));
		}
		if (st->signed_request && ctx->nonce[0] == '\0') {
			ctx->after = ctx->state;
			ctx->state = ST_NONCE;
			st = &engine_states[ST_NONCE];
		}
		if ((r = st->request(ctx)) < 0) {
			return r;
		}
		ctx->phase = PH_EXCHANGE;
		/* fall through */
	default:
		r = st->talk == TALK_MAIL ? mx_exchange(ctx) : http_exchange(ctx);
		if (r == IO_BLOCK) {
			return ACME_SMIME_WANT_IO;
		}
		if (r < 0 && (ctx->state == ST_POP3_QUIT || ctx->state == ST_SMTP_QUIT)) {
			/* The work is done before QUIT (a DELE aside, which the
			 * handler reports): a connection lost now costs nothing. */
			memset(&ctx->err, 0, sizeof ctx->err);
			engine_log(ctx, ACME_SMIME_LOG_INFO, "going on: the mail was done", NULL);
			ctx->mx_ok = 0;
			r = IO_READY;
		}
		if (r < 0) {
			return st->talk == TALK_HTTP ? engine_retry_lost(ctx, r) : r;
		}
		ctx->phase = PH_BUILD;
		if (st->talk == TALK_MAIL) {
			return engine_enter(ctx, st->response(ctx));
		}
		r = engine_check_response(ctx);
		if (r <= 0) {
			return r < 0 ? r : ctx->phase == PH_WAIT ? ACME_SMIME_WANT_TIME :
			    ACME_SMIME_AGAIN;
		}
		return engine_enter(ctx, st->response(ctx));
	}
}

int
acme_smime_run(acme_smime_ctx *ctx)
{
	const acme_smime_ports *p;

	if (ctx == NULL || ctx->ports == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	p = ctx->ports;
	for (;;) {
		int r = acme_smime_step(ctx);

		if (r == ACME_SMIME_DONE || r < 0) {
			return r;
		}
		if (r == ACME_SMIME_WANT_IO && p->net_wait != NULL) {
			p->net_wait(p->user, ctx->sock, ctx->io_events, 1000);
		} else if (r == ACME_SMIME_WANT_TIME && p->sleep_ms != NULL) {
			uint64_t now = engine_now_ms(ctx);

			if (ctx->wake_ms > now) {
				uint64_t ms = ctx->wake_ms - now;

				p->sleep_ms(p->user, ms > 1000 ? 1000 : (uint32_t)ms);
			}
		}
	}
}

int
acme_smime_io(const acme_smime_ctx *ctx, int *events)
{
	if (events != NULL) {
		*events = ctx->io_events;
	}
	return ctx->sock;
}

uint64_t
acme_smime_wake_ms(const acme_smime_ctx *ctx)
{
	return ctx->wake_ms;
}

const char *
acme_smime_wait_reason(const acme_smime_ctx *ctx)
{
	return ctx->phase == PH_WAIT && ctx->wait_reason != NULL ? ctx->wait_reason : "";
}

const char *
acme_smime_state_name(const acme_smime_ctx *ctx)
{
	if (ctx->err.code != 0) {
		return "failed";
	}
	return engine_states[ctx->state].name;
}

const acme_smime_error *
acme_smime_last_error(const acme_smime_ctx *ctx)
{
	return ctx->err.code != 0 ? &ctx->err : NULL;
}

const acme_smime_key *
acme_smime_account_key(const acme_smime_ctx *ctx)
{
	return &ctx->account_key;
}

const char *
acme_smime_account_url(const acme_smime_ctx *ctx)
{
	return ctx->url_account;
}

const acme_smime_key *
acme_smime_cert_key(const acme_smime_ctx *ctx)
{
	return ctx->state == ST_DONE ? &ctx->cert_key : NULL;
}

const char *
acme_smime_cert_chain(const acme_smime_ctx *ctx, size_t *len)
{
	if (ctx->state != ST_DONE || ctx->chain_len == 0) {
		return NULL;
	}
	if (len != NULL) {
		*len = ctx->chain_len;
	}
	return (const char *)ctx->work + ACME_SMIME_TLS_AREA;
}

const acme_smime_stats *
acme_smime_get_stats(const acme_smime_ctx *ctx)
{
	return &ctx->stats;
}

void
acme_smime_close(acme_smime_ctx *ctx)
{
	if (ctx == NULL) {
		return;
	}
	if (ctx->ports != NULL) {
		tls_close(ctx);
	}
	if (ctx->work != NULL) {
		wipe(ctx->work, ctx->work_size);
	}
	wipe(ctx, sizeof *ctx);
	ctx->sock = -1;
}

/* --- the stored certificate, for the application --- */

int
acme_smime_stored_cert(const acme_smime_flash *flash, const acme_smime_config *cfg,
	acme_smime_cert_info *info, acme_smime_key *key)
{
	cert_trailer t;
	int r;

	if (flash == NULL || info == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	memset(info, 0, sizeof *info);
	if (key != NULL) {
		memset(key, 0, sizeof *key);
	}
	if (store_layout_ok(flash) < 0) {
		return ACME_SMIME_ERR_STORE;
	}
	r = cert_trailer_read(flash, &t);
	if (r < 0) {
		return ACME_SMIME_ERR_STORE;
	}
	if (r == STORE_NONE) {
		return 0;
	}
	info->not_before = t.not_before;
	info->not_after = t.not_after;
	info->renew_at = cert_renew_at(cfg, t.not_before, t.not_after);
	info->chain_len = t.chain_len;
	if (cfg != NULL) {
		unsigned char h[32];

		engine_identity_hash(cfg, h);
		info->matches_config = memcmp(h, t.ident_hash, sizeof h) == 0;
	}
	if (key != NULL) {
		*key = t.key;
	}
	acme_smime_key_wipe(&t.key);
	return 1;
}

int
acme_smime_stored_chain(const acme_smime_flash *flash, size_t offset, char *buf,
	size_t len)
{
	cert_trailer t;
	int r;

	if (flash == NULL || (buf == NULL && len > 0)) {
		return ACME_SMIME_ERR_INVALID;
	}
	if (store_layout_ok(flash) < 0) {
		return ACME_SMIME_ERR_STORE;
	}
	r = cert_trailer_read(flash, &t);
	acme_smime_key_wipe(&t.key);
	if (r != ACME_SMIME_OK) {
		return r < 0 ? ACME_SMIME_ERR_STORE : ACME_SMIME_ERR_INVALID;
	}
	if (offset > t.chain_len) {
		return ACME_SMIME_ERR_INVALID;
	}
	if (len > t.chain_len - offset) {
		len = t.chain_len - offset;
	}
	if (len > 0x7FFFFFFF) {
		len = 0x7FFFFFFF;
	}
	r = store_read_chunk(flash, STORE_REC_CERT, offset, (unsigned char *)buf, len);
	return r == ACME_SMIME_OK ? (int)len : ACME_SMIME_ERR_STORE;
}

int
acme_smime_store_erase(const acme_smime_flash *flash)
{
	if (flash == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	return store_erase_all(flash) < 0 ? ACME_SMIME_ERR_STORE : ACME_SMIME_OK;
}

int
acme_smime_key_to_der(const acme_smime_key *key, unsigned char *out, size_t out_size)
{
	priv_view v;
	size_t n;

	if (!key_usable(key) || out == NULL) {
		return ACME_SMIME_ERR_INVALID;
	}
	priv_view_open(&v, key);
	n = br_encode_ec_pkcs8_der(NULL, &v.sk, NULL);
	if (n == 0 || n > out_size) {
		wipe(&v, sizeof v);
		return n == 0 ? ACME_SMIME_ERR_CRYPTO : ACME_SMIME_ERR_BUFFER;
	}
	{
		pub_view pv;

		pub_view_open(&pv, key);
		n = br_encode_ec_pkcs8_der(out, &v.sk, &pv.pk);
	}
	wipe(&v, sizeof v);
	return n == 0 ? ACME_SMIME_ERR_CRYPTO : (int)n;
}

int
acme_smime_key_to_pem(const acme_smime_key *key, char *out, size_t out_size)
{
	unsigned char der[200];
	size_t n;
	int r = acme_smime_key_to_der(key, der, sizeof der);

	if (r < 0) {
		return r;
	}
	if (out == NULL) {
		wipe(der, sizeof der);
		return ACME_SMIME_ERR_INVALID;
	}
	n = br_pem_encode(NULL, der, (size_t)r, "PRIVATE KEY", BR_PEM_LINE64);
	if (n + 1 > out_size) {
		wipe(der, sizeof der);
		return ACME_SMIME_ERR_BUFFER;
	}
	n = br_pem_encode(out, der, (size_t)r, "PRIVATE KEY", BR_PEM_LINE64);
	wipe(der, sizeof der);
	return (int)n;
}
