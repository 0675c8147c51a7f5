/*
 * fuzz_util.h -- shared by the libFuzzer targets in tests/fuzz/.
 *
 * Each target includes acme_smime.c itself (to reach the static parsers)
 * and is built alone: see `make fuzz-build`. FUZZ_CHECK aborts with the
 * failed condition and its line, so libFuzzer saves the input as a crash.
 */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond) do { \
		if (!(cond)) { \
			fprintf(stderr, "%s:%d: invariant violated: %s\n", \
			    __FILE__, __LINE__, #cond); \
			abort(); \
		} \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Is s[0..n) well-formed UTF-8 without NUL (the library's own checker). */
#define FUZZ_UTF8_OK(s, n) fuzz_utf8_ok((const unsigned char *)(s), (n))
static inline int
fuzz_utf8_ok(const unsigned char *s, size_t n)
{
	size_t i = 0, k;

	while (i < n) {
		if (s[i] == 0) {
			return 0;
		}
		k = utf8_sequence_len(s + i, n - i);
		if (k == 0) {
			return 0;
		}
		i += k;
	}
	return 1;
}

/* Is the NUL-terminated string inside field[0..size)? */
static inline int
fuzz_terminated(const char *field, size_t size)
{
	return memchr(field, '\0', size) != NULL;
}

#endif
