/*
 * fuzz_base64.c -- libFuzzer target for base64/base64url (section 1) and
 * the RFC 8823 digest (section 5).
 *
 * The whole input is decoded with every flag combination and checked
 * against the encoder. Then input[0] picks a split point in the rest:
 * token-part1 | token-part2, fed to acme_smime_rfc8823_digest() in both
 * modes with a fixed valid thumbprint.
 */
#include "acme_smime.c"
#include "fuzz_util.h"

/* 43 base64url characters that decode to 32 bytes. */
static const char thumbprint[] = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

static int
is_url_text(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (b64_value((unsigned char)s[i], B64_URL) < 0) {
			return 0;
		}
	}
	return 1;
}

static void
check_decode(const char *src, size_t n, unsigned flags)
{
	size_t cap = n / 4 * 3 + 3, body = n, pad = 0, i, keep;
	unsigned char *dst = malloc(cap);
	unsigned char *again;
	char *enc, *padded;
	int r, r2;

	FUZZ_CHECK(dst != NULL);
	r = b64_decode(dst, cap, src, n, flags);
	FUZZ_CHECK(r >= 0 || r == ACME_SMIME_ERR_ENCODING);
	if (r < 0) {
		free(dst);
		return;
	}
	while (pad < 2 && body > 0 && src[body - 1] == '=') {
		body--;
		pad++;
	}
	FUZZ_CHECK(pad == 0 || ((flags & B64_PAD_OK) && n % 4 == 0));
	FUZZ_CHECK(body % 4 != 1);
	FUZZ_CHECK((size_t)r == body * 6 / 8);
	for (i = 0; i < body; i++) {
		FUZZ_CHECK(b64_value((unsigned char)src[i], flags) >= 0);
	}

	/* Exactly enough room, and one byte less. */
	again = malloc((size_t)r + 1);
	FUZZ_CHECK(again != NULL);
	FUZZ_CHECK(b64_decode(again, (size_t)r, src, n, flags) == r);
	FUZZ_CHECK(memcmp(again, dst, (size_t)r) == 0);
	if (r > 0) {
		FUZZ_CHECK(b64_decode(again, (size_t)r - 1, src, n, flags) ==
		    ACME_SMIME_ERR_BUFFER);
	}

	/* Re-encode: the same text up to the unused low bits of the last
	 * character, identical when those are zero (canonical). */
	enc = malloc(B64_ENCODED_LEN((size_t)r) + 1);
	FUZZ_CHECK(enc != NULL);
	b64_encode_raw(enc, dst, (size_t)r, flags & B64_URL);
	FUZZ_CHECK(B64_ENCODED_LEN((size_t)r) == body);
	if (body > 0) {
		int a = b64_value((unsigned char)src[body - 1], flags);
		int b = b64_value((unsigned char)enc[body - 1], flags);
		int mask = body % 4 == 2 ? 0x30 : body % 4 == 3 ? 0x3C : 0x3F;

		FUZZ_CHECK(memcmp(enc, src, body - 1) == 0);
		FUZZ_CHECK(b == (a & mask));
	}
	if (flags & B64_URL) {
		FUZZ_CHECK(b64url_encode(enc, body + 1, dst, (size_t)r) == (int)body);
		FUZZ_CHECK(enc[body] == '\0' && is_url_text(enc, body));
		FUZZ_CHECK(b64url_encode(enc, body, dst, (size_t)r) ==
		    ACME_SMIME_ERR_BUFFER);
	}
	/* The canonical text decodes back to the same bytes, with and
	 * without the padding the length calls for. */
	r2 = b64_decode(again, (size_t)r + 1, enc, body, flags);
	FUZZ_CHECK(r2 == r && memcmp(again, dst, (size_t)r) == 0);
	keep = (4 - body % 4) % 4;
	padded = malloc(body + keep + 1);
	FUZZ_CHECK(padded != NULL);
	memcpy(padded, enc, body);
	memset(padded + body, '=', keep);
	r2 = b64_decode(again, (size_t)r + 1, padded, body + keep,
	    flags | B64_PAD_OK);
	FUZZ_CHECK(r2 == r && memcmp(again, dst, (size_t)r) == 0);
	if (keep > 0) {
		FUZZ_CHECK(b64_decode(again, (size_t)r + 1, padded, body + keep,
		    flags & ~B64_PAD_OK) == ACME_SMIME_ERR_ENCODING);
	}
	free(padded);
	free(enc);
	free(again);
	free(dst);
}

/* Arbitrary bytes -> base64url -> the same bytes. */
static void
check_encode(const unsigned char *src, size_t n)
{
	size_t elen = B64_ENCODED_LEN(n);
	char *enc = malloc(elen + 1);
	unsigned char *dec = malloc(n + 1);

	FUZZ_CHECK(enc != NULL && dec != NULL);
	FUZZ_CHECK(b64url_encode(enc, elen + 1, src, n) == (int)elen);
	FUZZ_CHECK(strlen(enc) == elen && is_url_text(enc, elen));
	FUZZ_CHECK(b64_decode(dec, n + 1, enc, elen, B64_URL) == (int)n);
	FUZZ_CHECK(memcmp(dec, src, n) == 0);
	b64_encode_raw(enc, src, n, 0);
	FUZZ_CHECK(b64_decode(dec, n + 1, enc, elen, 0) == (int)n);
	FUZZ_CHECK(memcmp(dec, src, n) == 0);
	free(enc);
	free(dec);
}

static int
digest(const char *p1, const char *p2, int mode, char out[ACME_SMIME_DIGEST_SIZE])
{
	int r;

	memset(out, 'x', ACME_SMIME_DIGEST_SIZE);
	r = acme_smime_rfc8823_digest(p1, p2, thumbprint, mode, out);
	FUZZ_CHECK(r == ACME_SMIME_OK || r == ACME_SMIME_ERR_INVALID ||
	    r == ACME_SMIME_ERR_LIMIT || r == ACME_SMIME_ERR_ENCODING);
	if (r == ACME_SMIME_OK) {
		FUZZ_CHECK(strlen(out) == ACME_SMIME_DIGEST_SIZE - 1);
		FUZZ_CHECK(is_url_text(out, ACME_SMIME_DIGEST_SIZE - 1));
	} else {
		FUZZ_CHECK(out[0] == '\0');
	}
	return r;
}

static void
check_digest(const unsigned char *data, size_t size)
{
	char *p1, *p2, *p1s;
	char out_s[ACME_SMIME_DIGEST_SIZE], out_b[ACME_SMIME_DIGEST_SIZE];
	char out_ws[ACME_SMIME_DIGEST_SIZE];
	size_t split, n1, n2, i, o = 0;
	int rs, rb, rw;

	if (size == 0) {
		return;
	}
	split = data[0] % size;          /* 0 .. size-1 bytes of the rest */
	data++;
	size--;
	n1 = split;
	n2 = size - split;
	p1 = malloc(n1 + 1);
	p2 = malloc(n2 + 1);
	p1s = malloc(n1 + 1);
	FUZZ_CHECK(p1 != NULL && p2 != NULL && p1s != NULL);
	memcpy(p1, data, n1);
	p1[n1] = '\0';
	memcpy(p2, data + n1, n2);
	p2[n2] = '\0';

	rs = digest(p1, p2, ACME_SMIME_CONCAT_STRING, out_s);
	rb = digest(p1, p2, ACME_SMIME_CONCAT_BYTES, out_b);
	/* Both modes accept the same inputs. */
	FUZZ_CHECK(rs == rb);
	FUZZ_CHECK(acme_smime_rfc8823_digest(p1, p2, thumbprint, 2, out_ws) ==
	    ACME_SMIME_ERR_INVALID && out_ws[0] == '\0');

	/* Whitespace in part1 is ignored. */
	for (i = 0; p1[i] != '\0'; i++) {
		if (!is_space((unsigned char)p1[i])) {
			p1s[o++] = p1[i];
		}
	}
	p1s[o] = '\0';
	rw = digest(p1s, p2, ACME_SMIME_CONCAT_STRING, out_ws);
	FUZZ_CHECK(rw == rs);
	if (rs == ACME_SMIME_OK) {
		size_t l2 = strlen(p2);
		unsigned char bytes[ACME_SMIME_MAX_TOKEN];
		char canon[ACME_SMIME_MAX_TOKEN + 1];
		int nb;

		FUZZ_CHECK(strcmp(out_ws, out_s) == 0);
		/* The modes agree when part1 is whole 3-byte groups and part2
		 * is canonical and unpadded. */
		nb = b64_decode(bytes, sizeof bytes, p2, l2, B64_URL);
		if (o % 4 == 0 && strchr(p1s, '=') == NULL && nb >= 0 &&
		    b64url_encode(canon, sizeof canon, bytes, (size_t)nb) == (int)l2 &&
		    memcmp(canon, p2, l2) == 0) {
			FUZZ_CHECK(strcmp(out_s, out_b) == 0);
		}
	}
	free(p1);
	free(p2);
	free(p1s);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	unsigned flags;

	for (flags = 0; flags < 4; flags++) {
		check_decode(s, size, flags);
	}
	check_encode(data, size);
	check_digest(data, size);
	return 0;
}
