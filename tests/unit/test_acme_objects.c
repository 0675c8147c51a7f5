/* Section 5: the RFC 8823 digest and the ACME request/response objects. */
#include "acme_smime.c"
#include "testutil.h"

/* protocol.md 13.2: RFC 8823 example tokens + acme4j's test account key. */
static const char acme4j_part1[] = "LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME=";
static const char acme4j_part2[] = "DGyRejmCefe7v4NfDGDKfA";
static const char acme4j_thumb[] = "1_nKJnlH9boVxdoO63T8zP7O2w42qZL4d6xj35Hy5aI";
/* protocol.md 13.3: acmez. */
static const char acmez_part1[] = "V4nE8NhYh6edBpfQTg5qqQ";
static const char acmez_part2[] = "x6I65YvEk6xC4KV0QMvdJw";
static const char acmez_thumb[] = "hC4xyXNn8ZDH4yrcp93Zj3qgQs7LyT_GUL45YD7IVMQ";

static void
digest_string_mode_matches_acme4j(void **state)
{
	char out[ACME_SMIME_DIGEST_SIZE];

	(void)state;
	assert_int_equal(acme_smime_rfc8823_digest(acme4j_part1, acme4j_part2, acme4j_thumb,
	    ACME_SMIME_CONCAT_STRING, out), ACME_SMIME_OK);
	assert_string_equal(out, "AjXW0h9_4YMP6Sv-9tKQNUrapI0us7ayBn0nCGOkUsk");
}

static void
digest_bytes_mode_on_acme4j_inputs(void **state)
{
	char out[ACME_SMIME_DIGEST_SIZE];

	(void)state;
	assert_int_equal(acme_smime_rfc8823_digest(acme4j_part1, acme4j_part2, acme4j_thumb,
	    ACME_SMIME_CONCAT_BYTES, out), ACME_SMIME_OK);
	assert_string_equal(out, "xyC6Z01DHFuV0pZgacdI2xN9nIKkPSARDv1gLbxY8Xk");
}

static void
digest_bytes_mode_matches_acmez(void **state)
{
	char out[ACME_SMIME_DIGEST_SIZE];

	(void)state;
	assert_int_equal(acme_smime_rfc8823_digest(acmez_part1, acmez_part2, acmez_thumb,
	    ACME_SMIME_CONCAT_BYTES, out), ACME_SMIME_OK);
	assert_string_equal(out, "Fjt2SD7KoqSt3I6jwgg8ljjkP9Er7h1w0wF0UihvQIU");
}

static void
digest_string_mode_on_acmez_inputs(void **state)
{
	char out[ACME_SMIME_DIGEST_SIZE];

	(void)state;
	assert_int_equal(acme_smime_rfc8823_digest(acmez_part1, acmez_part2, acmez_thumb,
	    ACME_SMIME_CONCAT_STRING, out), ACME_SMIME_OK);
	assert_string_equal(out, "gtzugYfQ1gO_Pi-ripWZTUtKP_xzPoQe-brDkSOvX5c");
}

static void
digest_ignores_whitespace_in_part1(void **state)
{
	char out[ACME_SMIME_DIGEST_SIZE];

	(void)state;
	assert_int_equal(acme_smime_rfc8823_digest(
	    " LgYemJLy3F1LDki JrdIGbEzyFJyOyf\r\n\t 6vBdyZ1TG3sME= ", acme4j_part2,
	    acme4j_thumb, ACME_SMIME_CONCAT_STRING, out), ACME_SMIME_OK);
	assert_string_equal(out, "AjXW0h9_4YMP6Sv-9tKQNUrapI0us7ayBn0nCGOkUsk");
}

/* When part1 is unpadded and a multiple of 4 characters, both modes agree
 * (protocol.md 3.2). 24 random bytes -> 32 characters. */
static void
digest_modes_agree_for_aligned_part1(void **state)
{
	char s[ACME_SMIME_DIGEST_SIZE], b[ACME_SMIME_DIGEST_SIZE];

	(void)state;
	acme_smime_rfc8823_digest("abcdefghijklmnopqrstuvwxyz012345", "AAECAwQFBgcICQoLDA0ODw",
	    acmez_thumb, ACME_SMIME_CONCAT_STRING, s);
	acme_smime_rfc8823_digest("abcdefghijklmnopqrstuvwxyz012345", "AAECAwQFBgcICQoLDA0ODw",
	    acmez_thumb, ACME_SMIME_CONCAT_BYTES, b);
	assert_string_equal(s, b);
}

static void
digest_refuses_bad_tokens_and_thumbprints(void **state)
{
	char out[ACME_SMIME_DIGEST_SIZE];
	char longtok[ACME_SMIME_MAX_TOKEN + 6];

	(void)state;
	assert_int_equal(acme_smime_rfc8823_digest("abc+def", acme4j_part2, acme4j_thumb,
	    ACME_SMIME_CONCAT_STRING, out), ACME_SMIME_ERR_ENCODING);
	assert_string_equal(out, "");
	assert_int_equal(acme_smime_rfc8823_digest("", acme4j_part2, acme4j_thumb,
	    ACME_SMIME_CONCAT_STRING, out), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(acme_smime_rfc8823_digest(acme4j_part1, "DGy Rej", acme4j_thumb,
	    ACME_SMIME_CONCAT_STRING, out), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(acme_smime_rfc8823_digest(acme4j_part1, acme4j_part2, "short",
	    ACME_SMIME_CONCAT_STRING, out), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(acme_smime_rfc8823_digest(acme4j_part1, acme4j_part2,
	    "1_nKJnlH9boVxdoO63T8zP7O2w42qZL4d6xj35Hy5a=", ACME_SMIME_CONCAT_STRING, out),
	    ACME_SMIME_ERR_ENCODING);
	assert_int_equal(acme_smime_rfc8823_digest(acme4j_part1, acme4j_part2, acme4j_thumb,
	    7, out), ACME_SMIME_ERR_INVALID);
	assert_int_equal(acme_smime_rfc8823_digest(NULL, acme4j_part2, acme4j_thumb,
	    ACME_SMIME_CONCAT_STRING, out), ACME_SMIME_ERR_INVALID);
	memset(longtok, 'A', sizeof longtok - 1);
	longtok[sizeof longtok - 1] = '\0';
	assert_int_equal(acme_smime_rfc8823_digest(longtok, acme4j_part2, acme4j_thumb,
	    ACME_SMIME_CONCAT_STRING, out), ACME_SMIME_ERR_LIMIT);
	assert_int_equal(acme_smime_rfc8823_digest(acme4j_part1, longtok, acme4j_thumb,
	    ACME_SMIME_CONCAT_STRING, out), ACME_SMIME_ERR_LIMIT);
}

/* The whole public chain for a P-256 account: key -> thumbprint -> digest,
 * checked against a digest computed by hand with BearSSL's SHA-256. */
static void
digest_from_account_key_thumbprint(void **state)
{
	acme_smime_key key;
	char tp[ACME_SMIME_THUMBPRINT_SIZE], out[ACME_SMIME_DIGEST_SIZE], want[44];
	char ka[160];
	unsigned char h[32];
	br_sha256_context sha;

	(void)state;
	load_rfc7515_a3_key(&key);
	assert_int_equal(acme_smime_jwk_thumbprint(&key, tp), ACME_SMIME_OK);
	assert_int_equal(acme_smime_rfc8823_digest(acme4j_part1, acme4j_part2, tp,
	    ACME_SMIME_CONCAT_STRING, out), ACME_SMIME_OK);
	snprintf(ka, sizeof ka, "%s%s.%s", acme4j_part1, acme4j_part2,
	    "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
	br_sha256_init(&sha);
	br_sha256_update(&sha, ka, strlen(ka));
	br_sha256_out(&sha, h);
	b64url_encode(want, sizeof want, h, 32);
	assert_string_equal(out, want);
	assert_int_equal(strlen(out), 43);
}

/* --- authorization objects --- */

static const char authz_json[] =
	"{\n"
	"  \"status\": \"pending\",\n"
	"  \"expires\": \"2026-12-01T00:00:00Z\",\n"
	"  \"identifier\": {\"type\": \"email\", \"value\": \"alexey@example.com\"},\n"
	"  \"challenges\": [\n"
	"    {\"type\": \"http-01\", \"url\": \"https://ca.test/chall/1\", \"status\": \"pending\","
	"     \"token\": \"tok-http\"},\n"
	"    {\"type\": \"email-reply-00\", \"url\": \"https:\\/\\/ca.test\\/chall\\/ABprV_B7yEyA4f\","
	"     \"status\": \"pending\", \"from\": \"acme-challenge+2i211oi1204310@example.com\","
	"     \"token\": \"DGyRejmCefe7v4NfDGDKfA\", \"extra\": {\"nested\": [1, 2, {\"x\": null}]}}\n"
	"  ]\n"
	"}";

static void
authorization_yields_email_reply_challenge(void **state)
{
	acme_smime_challenge ch;

	(void)state;
	assert_int_equal(acme_smime_parse_authorization(authz_json, strlen(authz_json),
	    "email-reply-00", &ch), ACME_SMIME_OK);
	assert_string_equal(ch.url, "https://ca.test/chall/ABprV_B7yEyA4f");
	assert_string_equal(ch.token, "DGyRejmCefe7v4NfDGDKfA");
	assert_string_equal(ch.from, "acme-challenge+2i211oi1204310@example.com");
	assert_string_equal(ch.status, "pending");
}

static void
authorization_yields_other_challenge_types(void **state)
{
	acme_smime_challenge ch;

	(void)state;
	assert_int_equal(acme_smime_parse_authorization(authz_json, strlen(authz_json),
	    "http-01", &ch), ACME_SMIME_OK);
	assert_string_equal(ch.token, "tok-http");
	assert_string_equal(ch.from, "");
	assert_int_equal(acme_smime_parse_authorization(authz_json, strlen(authz_json),
	    "dns-01", &ch), ACME_SMIME_ERR_JSON);
}

static void
authorization_reads_the_acme4j_challenge_object(void **state)
{
	char json[1024], wrapped[1200];
	acme_smime_challenge ch;

	(void)state;
	read_file("tests/vectors/rfc8823/acme4j-smime/json/emailReplyChallenge.json", json,
	    sizeof json);
	snprintf(wrapped, sizeof wrapped, "{\"status\":\"pending\",\"challenges\":[%s]}", json);
	assert_int_equal(acme_smime_parse_authorization(wrapped, strlen(wrapped),
	    "email-reply-00", &ch), ACME_SMIME_OK);
	assert_string_equal(ch.from, "acme-generator@example.org");
	assert_string_equal(ch.token, "DGyRejmCefe7v4NfDGDKfA");
	assert_string_equal(ch.url, "https://example.com/acme/chall/ABprV_B7yEyA4f");
}

static void
authorization_refuses_email_challenge_without_from_or_token(void **state)
{
	static const char nofrom[] = "{\"challenges\":[{\"type\":\"email-reply-00\","
	    "\"url\":\"https://x/c\",\"status\":\"pending\",\"token\":\"abc\"}]}";
	static const char notoken[] = "{\"challenges\":[{\"type\":\"email-reply-00\","
	    "\"url\":\"https://x/c\",\"status\":\"pending\",\"from\":\"a@b.c\"}]}";
	static const char nourl[] = "{\"challenges\":[{\"type\":\"email-reply-00\","
	    "\"status\":\"pending\",\"from\":\"a@b.c\",\"token\":\"abc\"}]}";
	static const char badtype[] = "{\"challenges\":{\"type\":\"email-reply-00\"}}";
	acme_smime_challenge ch;

	(void)state;
	assert_int_equal(acme_smime_parse_authorization(nofrom, strlen(nofrom),
	    "email-reply-00", &ch), ACME_SMIME_ERR_JSON);
	assert_int_equal(acme_smime_parse_authorization(notoken, strlen(notoken),
	    "email-reply-00", &ch), ACME_SMIME_ERR_JSON);
	assert_int_equal(acme_smime_parse_authorization(nourl, strlen(nourl),
	    "email-reply-00", &ch), ACME_SMIME_ERR_JSON);
	assert_int_equal(acme_smime_parse_authorization(badtype, strlen(badtype),
	    "email-reply-00", &ch), ACME_SMIME_ERR_JSON);
}

static void
authorization_refuses_overlong_fields(void **state)
{
	char json[2048];
	char url[ACME_SMIME_MAX_URL + 2];
	acme_smime_challenge ch;

	(void)state;
	memset(url, 'u', sizeof url - 1);
	url[sizeof url - 1] = '\0';
	snprintf(json, sizeof json, "{\"challenges\":[{\"type\":\"email-reply-00\","
	    "\"url\":\"%s\",\"status\":\"pending\",\"from\":\"a@b.c\",\"token\":\"abc\"}]}", url);
	assert_int_equal(acme_smime_parse_authorization(json, strlen(json),
	    "email-reply-00", &ch), ACME_SMIME_ERR_LIMIT);
	assert_string_equal(ch.url, "");
}

static void
authorization_refuses_malformed_json(void **state)
{
	static const char bad[] = "{\"challenges\":[{\"type\":\"email-reply-00\" \"url\":\"x\"}]}";
	acme_smime_challenge ch;

	(void)state;
	assert_int_equal(acme_smime_parse_authorization(bad, strlen(bad), "email-reply-00",
	    &ch), ACME_SMIME_ERR_JSON);
	assert_int_equal(acme_smime_parse_authorization(bad, 0, "email-reply-00", &ch),
	    ACME_SMIME_ERR_JSON);
}

/* --- newOrder payload --- */

static void
order_payload_lists_identifiers(void **state)
{
	const acme_smime_identifier ids[] = {
		{ ACME_SMIME_ID_EMAIL, "alexey@example.com" },
		{ ACME_SMIME_ID_DNS, "gw.example.net" },
	};
	char out[256];
	int n;

	(void)state;
	n = acme_smime_order_payload(out, sizeof out, ids, 2);
	assert_int_equal(n, (int)strlen(out));
	assert_string_equal(out, "{\"identifiers\":[{\"type\":\"email\",\"value\":"
	    "\"alexey@example.com\"},{\"type\":\"dns\",\"value\":\"gw.example.net\"}]}");
	assert_int_equal(acme_smime_order_payload(out, 20, ids, 2), ACME_SMIME_ERR_BUFFER);
	assert_int_equal(acme_smime_order_payload(out, sizeof out, ids, 0), ACME_SMIME_ERR_INVALID);
}

static void
strerror_names_every_code(void **state)
{
	int c;

	(void)state;
	for (c = ACME_SMIME_ERR_MAIL; c <= ACME_SMIME_OK; c++) {
		assert_string_not_equal(acme_smime_strerror(c), "unknown error");
	}
	assert_string_equal(acme_smime_strerror(-1000), "unknown error");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(digest_string_mode_matches_acme4j),
		cmocka_unit_test(digest_bytes_mode_on_acme4j_inputs),
		cmocka_unit_test(digest_bytes_mode_matches_acmez),
		cmocka_unit_test(digest_string_mode_on_acmez_inputs),
		cmocka_unit_test(digest_ignores_whitespace_in_part1),
		cmocka_unit_test(digest_modes_agree_for_aligned_part1),
		cmocka_unit_test(digest_refuses_bad_tokens_and_thumbprints),
		cmocka_unit_test(digest_from_account_key_thumbprint),
		cmocka_unit_test(authorization_yields_email_reply_challenge),
		cmocka_unit_test(authorization_yields_other_challenge_types),
		cmocka_unit_test(authorization_reads_the_acme4j_challenge_object),
		cmocka_unit_test(authorization_refuses_email_challenge_without_from_or_token),
		cmocka_unit_test(authorization_refuses_overlong_fields),
		cmocka_unit_test(authorization_refuses_malformed_json),
		cmocka_unit_test(order_payload_lists_identifiers),
		cmocka_unit_test(strerror_names_every_code),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
