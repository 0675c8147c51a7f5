/* Section 1 and 2: base64/base64url and JSON on jsmn. */
#include "acme_smime.c"
#include "testutil.h"

static void
b64url_encodes_rfc4648_vectors_without_padding(void **state)
{
	static const char *in[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *out[] = { "", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy" };
	char buf[16];
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(in); i++) {
		assert_int_equal(b64url_encode(buf, sizeof buf,
		    (const unsigned char *)in[i], strlen(in[i])), strlen(out[i]));
		assert_string_equal(buf, out[i]);
	}
}

static void
b64url_encodes_payload_vectors(void **state)
{
	char buf[32];

	(void)state;
	b64url_encode(buf, sizeof buf, (const unsigned char *)"{}", 2);
	assert_string_equal(buf, "e30");
	b64url_encode(buf, sizeof buf, (const unsigned char *)"{\"alg\":\"ES256\"}", 15);
	assert_string_equal(buf, "eyJhbGciOiJFUzI1NiJ9");
}

static void
b64url_uses_url_alphabet(void **state)
{
	static const unsigned char bytes[] = { 0xFB, 0xFF, 0xBF };
	char buf[8];
	unsigned char back[3];

	(void)state;
	b64url_encode(buf, sizeof buf, bytes, 3);
	assert_string_equal(buf, "-_-_");
	assert_int_equal(b64_decode(back, 3, "-_-_", 4, B64_URL), 3);
	assert_memory_equal(back, bytes, 3);
	assert_int_equal(b64_decode(back, 3, "+/+/", 4, B64_URL), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(back, 3, "+/+/", 4, 0), 3);
	assert_memory_equal(back, bytes, 3);
}

static void
b64url_encode_reports_small_buffer(void **state)
{
	char buf[5];

	(void)state;
	assert_int_equal(b64url_encode(buf, 4, (const unsigned char *)"foo", 3),
	    ACME_SMIME_ERR_BUFFER);
	assert_int_equal(b64url_encode(buf, sizeof buf, (const unsigned char *)"foo", 3), 4);
}

static void
b64_decode_refuses_padding_unless_allowed(void **state)
{
	unsigned char out[8];

	(void)state;
	assert_int_equal(b64_decode(out, sizeof out, "Zg==", 4, B64_URL), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(out, sizeof out, "Zg==", 4, B64_URL | B64_PAD_OK), 1);
	assert_int_equal(b64_decode(out, sizeof out, "Zm8=", 4, B64_URL | B64_PAD_OK), 2);
	assert_int_equal(b64_decode(out, sizeof out, "Zg", 2, B64_URL | B64_PAD_OK), 1);
}

static void
b64_decode_refuses_wrong_padding(void **state)
{
	unsigned char out[8];
	unsigned f = B64_URL | B64_PAD_OK;

	(void)state;
	assert_int_equal(b64_decode(out, sizeof out, "Zg=", 3, f), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(out, sizeof out, "Zm8==", 5, f), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(out, sizeof out, "Zm9v=", 5, f), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(out, sizeof out, "Z===", 4, f), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(out, sizeof out, "Zg=a", 4, f), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(out, sizeof out, "=", 1, f), ACME_SMIME_ERR_ENCODING);
}

static void
b64_decode_refuses_bad_characters_and_lengths(void **state)
{
	unsigned char out[8];

	(void)state;
	assert_int_equal(b64_decode(out, sizeof out, "Zm 9v", 5, B64_URL), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(out, sizeof out, "Zm9v\n", 5, B64_URL), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(out, sizeof out, "Zm9.", 4, B64_URL), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(out, sizeof out, "Z", 1, B64_URL), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(out, sizeof out, "Zm9vY", 5, B64_URL), ACME_SMIME_ERR_ENCODING);
	assert_int_equal(b64_decode(out, sizeof out, "", 0, B64_URL), 0);
}

static void
b64_decode_reports_small_buffer(void **state)
{
	unsigned char out[2];

	(void)state;
	assert_int_equal(b64_decode(out, sizeof out, "Zm9v", 4, B64_URL), ACME_SMIME_ERR_BUFFER);
}

static void
b64_decode_round_trips_every_length(void **state)
{
	unsigned char in[64], back[64];
	char enc[100];
	size_t len, i;

	(void)state;
	for (i = 0; i < sizeof in; i++) {
		in[i] = (unsigned char)(i * 37 + 11);
	}
	for (len = 0; len <= sizeof in; len++) {
		int n = b64url_encode(enc, sizeof enc, in, len);

		assert_int_equal(n, B64_ENCODED_LEN(len));
		assert_int_equal(b64_decode(back, sizeof back, enc, (size_t)n, B64_URL), len);
		assert_memory_equal(back, in, len);
	}
}

static void
b64url_inplace_encodes_inside_one_buffer(void **state)
{
	char buf[64];
	int n;

	(void)state;
	memset(buf, '#', sizeof buf);
	memcpy(buf + 5, "foobar!", 7);
	/* Tight: 5 + 10 encoded chars + the moved 7 raw bytes need 22+. */
	n = b64url_inplace(buf, 24, 5, 7);
	assert_int_equal(n, 10);
	assert_memory_equal(buf + 5, "Zm9vYmFyIQ", 10);
	assert_int_equal(b64url_inplace(buf, 12, 5, 7), ACME_SMIME_ERR_BUFFER);
}

/* --- JSON --- */

static int
parse(json_doc *d, jsmntok_t *tok, unsigned ntok, const char *text)
{
	return json_parse(d, text, strlen(text), tok, ntok);
}

static void
json_accepts_valid_documents(void **state)
{
	static const char *good[] = {
		"{}",
		" {\"a\":1} ",
		"{\"a\":[1,2.5,-3e+7,0.0,true,false,null],\"b\":{\"c\":\"d\"}}",
		"{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"}",
		"{\"utf8\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}",
		"{\"a\" : [ ] , \"b\" :\n{ }\t}",
		"{\"n\":-0,\"m\":1E5,\"k\":0.5e-3}",
	};
	jsmntok_t tok[64];
	json_doc d;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(good); i++) {
		assert_int_equal(parse(&d, tok, 64, good[i]), ACME_SMIME_OK);
	}
}

/* Each of these passes jsmn's tokenizer (or fails it); all must be
 * refused by json_parse. */
static void
json_refuses_what_jsmn_lets_through(void **state)
{
	static const char *bad[] = {
		"{\"a\" \"b\"}",            /* missing colon */
		"{\"a\":1 \"b\":2}",        /* missing comma */
		"{\"a\":1,}",               /* trailing comma */
		"{\"a\":[1,]}",
		"{\"a\":[1 2]}",
		"{\"a\":tru}",              /* bad literal */
		"{\"a\":nul}",
		"{\"a\":01}",               /* leading zero */
		"{\"a\":1.}",
		"{\"a\":.5}",
		"{\"a\":-}",
		"{\"a\":1e}",
		"{\"a\":+1}",
		"{\"a\":\"\\x\"}",           /* bad escape */
		"{\"a\":\"\\u12G4\"}",
		"{\"a\":\"tab\there\"}",     /* raw control character */
		"{\"a\":\"\xc3\"}",          /* truncated UTF-8 */
		"{\"a\":\"\xc0\xaf\"}",      /* overlong UTF-8 */
		"{\"a\":\"\xed\xa0\x80\"}",  /* UTF-8 surrogate */
		"{1:2}",                    /* non-string key */
		"{\"a\":1}}",
		"{\"a\":1} x",
		"[1,2]",                    /* not an object */
		"\"str\"",
		"{\"a\":1",
		"",
		"{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":{\"g\":{\"h\":{}}}}}}}}}", /* too deep */
	};
	jsmntok_t tok[64];
	json_doc d;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(bad); i++) {
		int r = parse(&d, tok, 64, bad[i]);

		if (r == ACME_SMIME_OK) {
			fail_msg("accepted: %s", bad[i]);
		}
		assert_int_equal(r, ACME_SMIME_ERR_JSON);
	}
}

static void
json_reports_token_shortage_as_limit(void **state)
{
	jsmntok_t tok[4];
	json_doc d;

	(void)state;
	assert_int_equal(parse(&d, tok, 4, "{\"a\":1,\"b\":2,\"c\":3}"), ACME_SMIME_ERR_LIMIT);
}

static void
json_finds_members_and_skips_nested_values(void **state)
{
	static const char text[] =
	    "{\"x\":{\"url\":\"no\"},\"list\":[{\"a\":[1,{\"b\":2}]},\"two\"],\"url\":\"yes\"}";
	jsmntok_t tok[64];
	json_doc d;
	char out[16];
	int list;

	(void)state;
	assert_int_equal(parse(&d, tok, 64, text), ACME_SMIME_OK);
	assert_int_equal(json_get_member(&d, 0, "url", out, sizeof out), 3);
	assert_string_equal(out, "yes");
	list = json_find(&d, 0, "list");
	assert_true(list > 0);
	assert_int_equal(d.tok[json_array_item(&d, list, 0)].type, JSMN_OBJECT);
	assert_int_equal(json_get_string(&d, json_array_item(&d, list, 1), out, sizeof out), 3);
	assert_string_equal(out, "two");
	assert_int_equal(json_array_item(&d, list, 2), -1);
	assert_int_equal(json_find(&d, 0, "missing"), -1);
	assert_true(json_member_is(&d, 0, "url", "yes"));
	assert_false(json_member_is(&d, 0, "url", "no"));
}

static void
json_unescapes_strings(void **state)
{
	static const char text[] =
	    "{\"u\":\"https:\\/\\/ex.com\\/a\",\"e\":\"\\u00e9\\u20ac\",\"p\":\"\\ud83d\\ude00\",\"q\":\"a\\\"b\\\\c\\n\"}";
	jsmntok_t tok[16];
	json_doc d;
	char out[32];

	(void)state;
	assert_int_equal(parse(&d, tok, 16, text), ACME_SMIME_OK);
	assert_int_equal(json_get_member(&d, 0, "u", out, sizeof out), 16);
	assert_string_equal(out, "https://ex.com/a");
	json_get_member(&d, 0, "e", out, sizeof out);
	assert_string_equal(out, "\xc3\xa9\xe2\x82\xac");
	json_get_member(&d, 0, "p", out, sizeof out);
	assert_string_equal(out, "\xf0\x9f\x98\x80");
	json_get_member(&d, 0, "q", out, sizeof out);
	assert_string_equal(out, "a\"b\\c\n");
}

static void
json_refuses_lone_surrogates_and_nul(void **state)
{
	static const char *bad[] = {
		"{\"s\":\"\\ud83d\"}", "{\"s\":\"\\ude00\"}", "{\"s\":\"\\ud83dx\"}",
		"{\"s\":\"\\ud83d\\u0041\"}", "{\"s\":\"a\\u0000b\"}",
	};
	jsmntok_t tok[8];
	json_doc d;
	char out[16];
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(bad); i++) {
		assert_int_equal(parse(&d, tok, 8, bad[i]), ACME_SMIME_OK);
		assert_int_equal(json_get_member(&d, 0, "s", out, sizeof out), ACME_SMIME_ERR_JSON);
	}
}

static void
json_string_reports_small_buffer(void **state)
{
	jsmntok_t tok[8];
	json_doc d;
	char out[4];

	(void)state;
	assert_int_equal(parse(&d, tok, 8, "{\"s\":\"abcd\"}"), ACME_SMIME_OK);
	assert_int_equal(json_get_member(&d, 0, "s", out, sizeof out), ACME_SMIME_ERR_BUFFER);
	assert_int_equal(parse(&d, tok, 8, "{\"s\":\"abc\"}"), ACME_SMIME_OK);
	assert_int_equal(json_get_member(&d, 0, "s", out, sizeof out), 3);
}

static void
json_builder_escapes_and_round_trips(void **state)
{
	char buf[128], out[64];
	jsmntok_t tok[8];
	json_doc d;
	textbuf tb;

	(void)state;
	tb_init(&tb, buf, sizeof buf);
	tb_putc(&tb, '{');
	json_put_key(&tb, "k");
	json_put_string(&tb, "q\"b\\s\x01\n/");
	tb_putc(&tb, '}');
	assert_true(tb_finish(&tb) > 0);
	assert_string_equal(buf, "{\"k\":\"q\\\"b\\\\s\\u0001\\u000a/\"}");
	assert_int_equal(json_parse(&d, buf, strlen(buf), tok, 8), ACME_SMIME_OK);
	json_get_member(&d, 0, "k", out, sizeof out);
	assert_string_equal(out, "q\"b\\s\x01\n/");
}

static void
textbuf_overflow_is_sticky_and_reported(void **state)
{
	char buf[4];
	textbuf tb;

	(void)state;
	tb_init(&tb, buf, sizeof buf);
	tb_puts(&tb, "abcd");
	tb_puts(&tb, "");
	assert_int_equal(tb_finish(&tb), ACME_SMIME_ERR_BUFFER);
	tb_init(&tb, buf, sizeof buf);
	tb_puts(&tb, "abc");
	assert_int_equal(tb_finish(&tb), 3);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(b64url_encodes_rfc4648_vectors_without_padding),
		cmocka_unit_test(b64url_encodes_payload_vectors),
		cmocka_unit_test(b64url_uses_url_alphabet),
		cmocka_unit_test(b64url_encode_reports_small_buffer),
		cmocka_unit_test(b64_decode_refuses_padding_unless_allowed),
		cmocka_unit_test(b64_decode_refuses_wrong_padding),
		cmocka_unit_test(b64_decode_refuses_bad_characters_and_lengths),
		cmocka_unit_test(b64_decode_reports_small_buffer),
		cmocka_unit_test(b64_decode_round_trips_every_length),
		cmocka_unit_test(b64url_inplace_encodes_inside_one_buffer),
		cmocka_unit_test(json_accepts_valid_documents),
		cmocka_unit_test(json_refuses_what_jsmn_lets_through),
		cmocka_unit_test(json_reports_token_shortage_as_limit),
		cmocka_unit_test(json_finds_members_and_skips_nested_values),
		cmocka_unit_test(json_unescapes_strings),
		cmocka_unit_test(json_refuses_lone_surrogates_and_nul),
		cmocka_unit_test(json_string_reports_small_buffer),
		cmocka_unit_test(json_builder_escapes_and_round_trips),
		cmocka_unit_test(textbuf_overflow_is_sticky_and_reported),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
