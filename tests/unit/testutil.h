/* Shared helpers for the unit tests. Include after acme_smime.c. */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

/* Deterministic "entropy" for reproducible tests: a counter stream. */
static inline int
test_entropy(void *user, unsigned char *buf, size_t len)
{
	unsigned *counter = (unsigned *)user;
	size_t i;

	for (i = 0; i < len; i++) {
		buf[i] = (unsigned char)(*counter * 31u + i * 7u + 1u);
	}
	(*counter)++;
	return 0;
}

static inline int
failing_entropy(void *user, unsigned char *buf, size_t len)
{
	(void)user;
	(void)buf;
	(void)len;
	return -1;
}

/* Read a whole file into buf (NUL-terminated); returns its length. */
static inline size_t
read_file(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, size - 1, f);
	assert_true(n < size - 1);
	fclose(f);
	buf[n] = '\0';
	return n;
}

static inline void
write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* Decode a hex string into out; returns the byte count. */
static inline size_t
from_hex(const char *hex, unsigned char *out, size_t size)
{
	size_t n = 0;

	while (hex[0] != '\0' && hex[1] != '\0') {
		assert_true(n < size);
		out[n++] = (unsigned char)(hex_value((unsigned char)hex[0]) * 16 +
		    hex_value((unsigned char)hex[1]));
		hex += 2;
	}
	return n;
}

/* The RFC 7515 appendix A.3 P-256 key. */
static inline void
load_rfc7515_a3_key(acme_smime_key *key)
{
	static const char d[] = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";
	unsigned char priv[32];

	assert_int_equal(b64_decode(priv, sizeof priv, d, strlen(d), B64_URL), 32);
	assert_int_equal(acme_smime_key_from_private(key, ACME_SMIME_KEY_P256,
	    priv, sizeof priv), ACME_SMIME_OK);
}

#endif
