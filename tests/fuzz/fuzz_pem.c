/*
 * fuzz_pem.c -- libFuzzer target for PEM chain handling (sections 8 and
 * 11): acme_smime_trust_anchors_from_pem() with small storage, and
 * engine_check_leaf(), the check of a downloaded chain's first
 * certificate against the certificate key.
 *
 * Input: data[0] bits 0-2: the most anchors (max_tas, 0..7); bit 3: the
 * rest is DER, wrapped here in one CERTIFICATE PEM object (so that the
 * fuzzer mutates the certificate itself, not its base64); bit 4: the
 * context's certificate key is the P-384 key (else the P-256 key whose
 * certificates are in the seeds, tests/fuzz/make_seeds.py); bit 5: the
 * leaf check only; data[1]:
 * storage bytes / 8 (0..2040); the rest is the text.
 *
 * Storage, anchors and the text are allocated to their exact size, so
 * AddressSanitizer catches any access past them. Checked:
 *   - the anchor loader returns a count up to max_tas or a clean error;
 *     every anchor's name and key lie inside storage; the same text with
 *     ample room gives the same anchors;
 *   - the leaf check succeeds only for our key with a sane validity
 *     (1970 <= notBefore < notAfter <= year 9999), and fails with a
 *     sticky error of the right kind otherwise.
 */
#include "acme_smime.c"
#include "fuzz_util.h"

#define FLAG_DER  0x08
#define FLAG_P384 0x10
#define FLAG_LEAF 0x20

/* The seeds' certificate key: SHA-256("acme_smime fuzz_pem P-256"). */
static const unsigned char p256_priv[32] = {
	0x68, 0x3c, 0xd9, 0xba, 0x21, 0x8e, 0x04, 0x5c, 0xb0, 0x49, 0x45, 0xbb,
	0x25, 0xda, 0x1d, 0x47, 0x56, 0x03, 0xcc, 0x81, 0x2f, 0x93, 0x62, 0x55,
	0x0d, 0x50, 0xbe, 0xe5, 0xbb, 0xae, 0x4c, 0xe8,
};
static const unsigned char p384_priv[48] = {
	0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c,
	0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
	0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x24,
	0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30,
};

static acme_smime_key key256, key384;
static acme_smime_ports ports;

/* Is [p, p + n) inside [base, base + size)? */
static int
inside(const void *p, size_t n, const unsigned char *base, size_t size)
{
	const unsigned char *q = (const unsigned char *)p;

	return q != NULL && q >= base && (size_t)(q - base) <= size &&
	    n <= size - (size_t)(q - base);
}

static void
check_anchor(const br_x509_trust_anchor *ta, const unsigned char *st,
	size_t size)
{
	FUZZ_CHECK(ta->dn.len == 0 || inside(ta->dn.data, ta->dn.len, st, size));
	FUZZ_CHECK((ta->flags & ~(unsigned)BR_X509_TA_CA) == 0);
	if (ta->pkey.key_type == BR_KEYTYPE_RSA) {
		FUZZ_CHECK(inside(ta->pkey.key.rsa.n, ta->pkey.key.rsa.nlen, st, size));
		FUZZ_CHECK(inside(ta->pkey.key.rsa.e, ta->pkey.key.rsa.elen, st, size));
	} else {
		FUZZ_CHECK(ta->pkey.key_type == BR_KEYTYPE_EC);
		FUZZ_CHECK(inside(ta->pkey.key.ec.q, ta->pkey.key.ec.qlen, st, size));
	}
}

static int
same_anchor(const br_x509_trust_anchor *a, const br_x509_trust_anchor *b)
{
	if (a->dn.len != b->dn.len || memcmp(a->dn.data, b->dn.data, a->dn.len) != 0 ||
	    a->flags != b->flags || a->pkey.key_type != b->pkey.key_type) {
		return 0;
	}
	if (a->pkey.key_type == BR_KEYTYPE_RSA) {
		return a->pkey.key.rsa.nlen == b->pkey.key.rsa.nlen &&
		    a->pkey.key.rsa.elen == b->pkey.key.rsa.elen &&
		    memcmp(a->pkey.key.rsa.n, b->pkey.key.rsa.n, a->pkey.key.rsa.nlen) == 0 &&
		    memcmp(a->pkey.key.rsa.e, b->pkey.key.rsa.e, a->pkey.key.rsa.elen) == 0;
	}
	return a->pkey.key.ec.curve == b->pkey.key.ec.curve &&
	    a->pkey.key.ec.qlen == b->pkey.key.ec.qlen &&
	    memcmp(a->pkey.key.ec.q, b->pkey.key.ec.q, a->pkey.key.ec.qlen) == 0;
}

static void
anchors(const char *pem, size_t len, size_t size, size_t max_tas)
{
	static unsigned char big[1 << 16];
	static br_x509_trust_anchor big_tas[64];
	unsigned char *st = malloc(size > 0 ? size : 1);
	br_x509_trust_anchor *tas = malloc(max_tas > 0 ? max_tas * sizeof *tas : 1);
	int r, r2, i;

	FUZZ_CHECK(st != NULL && tas != NULL);
	r = acme_smime_trust_anchors_from_pem(pem, len, st, size, tas, max_tas);
	FUZZ_CHECK(r == ACME_SMIME_ERR_BUFFER || r == ACME_SMIME_ERR_ENCODING ||
	    (r >= 0 && (size_t)r <= max_tas));
	for (i = 0; i < r; i++) {
		check_anchor(&tas[i], st, size);
	}
	/* With room to spare: the same anchors. */
	r2 = acme_smime_trust_anchors_from_pem(pem, len, big, sizeof big, big_tas,
	    ARRAY_LEN(big_tas));
	FUZZ_CHECK(r2 == ACME_SMIME_ERR_BUFFER || r2 == ACME_SMIME_ERR_ENCODING ||
	    r2 >= 0);
	if (r >= 0) {
		FUZZ_CHECK(r2 == r);
		for (i = 0; i < r; i++) {
			FUZZ_CHECK(same_anchor(&tas[i], &big_tas[i]));
		}
	}
	free(st);
	free(tas);
}

static void
leaf(const char *pem, size_t len, const acme_smime_key *key)
{
	static unsigned char work[ACME_SMIME_WORKBUF_SIZE];
	static acme_smime_ctx ctx;
	uint64_t nb = 7, na = 7;
	int r;

	memset(&ctx, 0, sizeof ctx);
	ctx.ports = &ports;
	ctx.work = work;
	ctx.work_size = sizeof work;
	ctx.sock = -1;
	ctx.cert_key = *key;
	r = engine_check_leaf(&ctx, pem, len, &nb, &na);
	if (r == 0) {
		FUZZ_CHECK(ctx.err.code == 0);
		FUZZ_CHECK(nb < na);
		/* 9999-12-31T23:59:59Z, the last time X.509 can say. */
		FUZZ_CHECK(na <= 253402300799u);
	} else {
		FUZZ_CHECK(r == ctx.err.code);
		FUZZ_CHECK(r == ACME_SMIME_ERR_HTTP || r == ACME_SMIME_ERR_STATE);
		FUZZ_CHECK(fuzz_terminated(ctx.err.text, sizeof ctx.err.text));
	}
}

/* DER -> one CERTIFICATE PEM object, 64 characters a line. */
static char *
wrap_der(const uint8_t *der, size_t n, size_t *out_len)
{
	size_t len = br_pem_encode(NULL, der, n, "CERTIFICATE", BR_PEM_LINE64);
	char *out = malloc(len + 1);

	FUZZ_CHECK(out != NULL);
	FUZZ_CHECK(br_pem_encode(out, der, n, "CERTIFICATE", BR_PEM_LINE64) == len);
	*out_len = len;
	return out;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int keys_ready;
	char *text;
	size_t len;

	if (!keys_ready) {
		FUZZ_CHECK(acme_smime_key_from_private(&key256, ACME_SMIME_KEY_P256,
		    p256_priv, sizeof p256_priv) == ACME_SMIME_OK);
		FUZZ_CHECK(acme_smime_key_from_private(&key384, ACME_SMIME_KEY_P384,
		    p384_priv, sizeof p384_priv) == ACME_SMIME_OK);
		keys_ready = 1;
	}
	if (size < 2) {
		return 0;
	}
	if (data[0] & FLAG_DER) {
		text = wrap_der(data + 2, size - 2, &len);
	} else {
		len = size - 2;
		text = malloc(len > 0 ? len : 1);
		FUZZ_CHECK(text != NULL);
		memcpy(text, data + 2, len);
	}
	if (!(data[0] & FLAG_LEAF)) {
		anchors(text, len, (size_t)data[1] * 8, data[0] & 7u);
	}
	leaf(text, len, data[0] & FLAG_P384 ? &key384 : &key256);
	free(text);
	return 0;
}
