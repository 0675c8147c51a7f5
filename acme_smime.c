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
 *   5. RFC 8823                    (token assembly and digest)
 *   6. mail                        (RFC 5322 headers, RFC 2047, addresses,
 *                                   challenge-mail checks, response writer)
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
		acc = (acc << 6) | (unsigned long)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (out >= dst_size) {
				return ACME_SMIME_ERR_BUFFER;
			}
			dst[out++] = (unsigned char)(acc >> bits);
			acc &= (1ul << bits) - 1;
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
