/*
 * fuzz_authz.c -- libFuzzer target for acme_smime_parse_authorization()
 * (section 5) with an "email-reply-00" and an "http-01" challenge type.
 */
#include "acme_smime.c"
#include "fuzz_util.h"

static int
all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;

	while (n-- > 0) {
		if (*b++ != 0) {
			return 0;
		}
	}
	return 1;
}

/* A field holds a NUL-terminated UTF-8 string inside its size. */
static void
check_field(const char *f, size_t size)
{
	FUZZ_CHECK(fuzz_terminated(f, size));
	FUZZ_CHECK(FUZZ_UTF8_OK(f, strlen(f)));
}

static void
run(const char *json, size_t len, const char *type)
{
	acme_smime_challenge ch;
	int r;

	memset(&ch, 0xA5, sizeof ch);
	r = acme_smime_parse_authorization(json, len, type, &ch);
	FUZZ_CHECK(r == ACME_SMIME_OK || r == ACME_SMIME_ERR_JSON ||
	    r == ACME_SMIME_ERR_LIMIT);
	if (r != ACME_SMIME_OK) {
		/* Nothing half-filled is left behind. */
		FUZZ_CHECK(all_zero(&ch, sizeof ch));
		return;
	}
	check_field(ch.status, sizeof ch.status);
	check_field(ch.url, sizeof ch.url);
	check_field(ch.token, sizeof ch.token);
	check_field(ch.from, sizeof ch.from);
	if (strcmp(type, "email-reply-00") == 0) {
		FUZZ_CHECK(ch.token[0] != '\0' && ch.from[0] != '\0');
	} else {
		FUZZ_CHECK(ch.from[0] == '\0');
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run((const char *)data, size, "email-reply-00");
	run((const char *)data, size, "http-01");
	return 0;
}
