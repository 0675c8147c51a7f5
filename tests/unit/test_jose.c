/* Section 3: keys, JWK thumbprint, ES256/ES384 JWS. */
#define _POSIX_C_SOURCE 200809L
#include "acme_smime.c"
#include "testutil.h"

#include <unistd.h>

static const char a3_x[] = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
static const char a3_y[] = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

static void
key_from_private_computes_rfc7515_a3_public_point(void **state)
{
	acme_smime_key key;
	unsigned char x[32], y[32];

	(void)state;
	load_rfc7515_a3_key(&key);
	assert_int_equal(key.pub_len, 65);
	assert_int_equal(key.pub[0], 0x04);
	b64_decode(x, 32, a3_x, strlen(a3_x), B64_URL);
	b64_decode(y, 32, a3_y, strlen(a3_y), B64_URL);
	assert_memory_equal(key.pub + 1, x, 32);
	assert_memory_equal(key.pub + 33, y, 32);
}

static void
thumbprint_of_rfc7515_a3_key_matches_rfc7638_vector(void **state)
{
	acme_smime_key key;
	char tp[ACME_SMIME_THUMBPRINT_SIZE];

	(void)state;
	load_rfc7515_a3_key(&key);
	assert_int_equal(acme_smime_jwk_thumbprint(&key, tp), ACME_SMIME_OK);
	assert_string_equal(tp, "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
}

static void
jwk_has_thumbprint_members_in_order(void **state)
{
	acme_smime_key key;
	char buf[200];
	textbuf tb;

	(void)state;
	load_rfc7515_a3_key(&key);
	tb_init(&tb, buf, sizeof buf);
	jwk_put(&tb, &key);
	assert_true(tb_finish(&tb) > 0);
	assert_string_equal(buf, "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\""
	    "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\",\"y\":\""
	    "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}");
}

static void
key_from_private_refuses_out_of_range_scalars(void **state)
{
	acme_smime_key key;
	unsigned char d[48];

	(void)state;
	memset(d, 0, sizeof d);
	assert_int_equal(acme_smime_key_from_private(&key, ACME_SMIME_KEY_P256, d, 32),
	    ACME_SMIME_ERR_INVALID);
	memcpy(d, p256_order, 32);
	assert_int_equal(acme_smime_key_from_private(&key, ACME_SMIME_KEY_P256, d, 32),
	    ACME_SMIME_ERR_INVALID);
	d[31] -= 1;   /* n - 1 is the largest valid scalar */
	assert_int_equal(acme_smime_key_from_private(&key, ACME_SMIME_KEY_P256, d, 32),
	    ACME_SMIME_OK);
	memset(d, 0xFF, sizeof d);
	assert_int_equal(acme_smime_key_from_private(&key, ACME_SMIME_KEY_P384, d, 48),
	    ACME_SMIME_ERR_INVALID);
	assert_int_equal(acme_smime_key_from_private(&key, ACME_SMIME_KEY_P256, d, 31),
	    ACME_SMIME_ERR_INVALID);
	assert_int_equal(acme_smime_key_from_private(&key, 99, d, 32),
	    ACME_SMIME_ERR_UNSUPPORTED);
}

static void
key_generate_gives_distinct_valid_keys_per_seed(void **state)
{
	acme_smime_key a, b;
	unsigned counter = 0;
	char ta[ACME_SMIME_THUMBPRINT_SIZE], tb2[ACME_SMIME_THUMBPRINT_SIZE];

	(void)state;
	assert_int_equal(acme_smime_key_generate(&a, ACME_SMIME_KEY_P256, test_entropy,
	    &counter), ACME_SMIME_OK);
	assert_int_equal(acme_smime_key_generate(&b, ACME_SMIME_KEY_P256, test_entropy,
	    &counter), ACME_SMIME_OK);
	assert_int_equal(a.priv_len, 32);
	assert_memory_not_equal(a.priv, b.priv, 32);
	assert_true(scalar_in_range(a.priv, p256_order, 32));
	acme_smime_jwk_thumbprint(&a, ta);
	acme_smime_jwk_thumbprint(&b, tb2);
	assert_string_not_equal(ta, tb2);
	assert_int_equal(acme_smime_key_generate(&a, ACME_SMIME_KEY_P384, test_entropy,
	    &counter), ACME_SMIME_OK);
	assert_int_equal(a.priv_len, 48);
	assert_int_equal(a.pub_len, 97);
}

static void
key_generate_reports_entropy_failure(void **state)
{
	acme_smime_key key;

	(void)state;
	assert_int_equal(acme_smime_key_generate(&key, ACME_SMIME_KEY_P256,
	    failing_entropy, NULL), ACME_SMIME_ERR_ENTROPY);
	assert_int_equal(acme_smime_key_generate(&key, ACME_SMIME_KEY_P256, NULL, NULL),
	    ACME_SMIME_ERR_INVALID);
}

static void
key_wipe_clears_everything(void **state)
{
	acme_smime_key key;
	static const acme_smime_key zero;

	(void)state;
	load_rfc7515_a3_key(&key);
	acme_smime_key_wipe(&key);
	assert_memory_equal(&key, &zero, sizeof key);
}

static void
verifier_accepts_rfc7515_a3_signature(void **state)
{
	static const char input[] = "eyJhbGciOiJFUzI1NiJ9."
	    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
	static const char sig_b64[] = "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
	acme_smime_key pub;
	unsigned char sig[64], hash[32];
	br_sha256_context sha;

	(void)state;
	memset(&pub, 0, sizeof pub);
	pub.type = ACME_SMIME_KEY_P256;
	pub.pub_len = 65;
	pub.pub[0] = 0x04;
	b64_decode(pub.pub + 1, 32, a3_x, strlen(a3_x), B64_URL);
	b64_decode(pub.pub + 33, 32, a3_y, strlen(a3_y), B64_URL);
	assert_int_equal(b64_decode(sig, sizeof sig, sig_b64, strlen(sig_b64), B64_URL), 64);
	br_sha256_init(&sha);
	br_sha256_update(&sha, input, strlen(input));
	br_sha256_out(&sha, hash);
	assert_true(ecdsa_verify_raw(&pub, hash, 32, sig, 64));
	sig[10] ^= 1;
	assert_false(ecdsa_verify_raw(&pub, hash, 32, sig, 64));
}

/* Our own check of a flattened JWS: parse it, rebuild the signing input,
 * verify the raw signature with key. Returns the payload length or -1. */
static int
verify_flattened(const char *jws, const acme_smime_key *key, char *payload,
	size_t payload_size, char *protected_json, size_t protected_size)
{
	jsmntok_t tok[16];
	json_doc d;
	char prot[600], pay[300], sigtxt[140];
	unsigned char sig[96], hash[48];
	key_hash h;
	int plen, n;

	if (json_parse(&d, jws, strlen(jws), tok, 16) != ACME_SMIME_OK ||
	    d.tok[0].size != 3 ||
	    json_get_member(&d, 0, "protected", prot, sizeof prot) < 0 ||
	    json_get_member(&d, 0, "payload", pay, sizeof pay) < 0 ||
	    json_get_member(&d, 0, "signature", sigtxt, sizeof sigtxt) < 0) {
		return -1;
	}
	key_hash_init(&h, key);
	key_hash_update(&h, prot, strlen(prot));
	key_hash_update(&h, ".", 1);
	key_hash_update(&h, pay, strlen(pay));
	key_hash_out(&h, hash);
	n = b64_decode(sig, sizeof sig, sigtxt, strlen(sigtxt), B64_URL);
	if (n != (int)(2 * key->priv_len) ||
	    !ecdsa_verify_raw(key, hash, key_params_of(key->type)->hash_len, sig, (size_t)n)) {
		return -1;
	}
	n = b64_decode((unsigned char *)protected_json, protected_size - 1, prot,
	    strlen(prot), B64_URL);
	if (n < 0) {
		return -1;
	}
	protected_json[n] = '\0';
	plen = b64_decode((unsigned char *)payload, payload_size - 1, pay, strlen(pay), B64_URL);
	if (plen < 0) {
		return -1;
	}
	payload[plen] = '\0';
	return plen;
}

static void
jws_with_kid_verifies_and_carries_header_fields(void **state)
{
	acme_smime_key key;
	char jws[1024], payload[64], prot[512];
	int n;

	(void)state;
	load_rfc7515_a3_key(&key);
	n = acme_smime_jws_sign(jws, sizeof jws, &key, "nonce-1_x",
	    "https://ca.test/acme/order/1", "https://ca.test/acme/acct/7",
	    "{}", 2);
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(jws));
	assert_int_equal(verify_flattened(jws, &key, payload, sizeof payload, prot,
	    sizeof prot), 2);
	assert_string_equal(payload, "{}");
	assert_string_equal(prot, "{\"alg\":\"ES256\",\"kid\":\"https://ca.test/acme/acct/7\","
	    "\"nonce\":\"nonce-1_x\",\"url\":\"https://ca.test/acme/order/1\"}");
	assert_non_null(strstr(jws, "\"payload\":\"e30\""));
}

static void
jws_post_as_get_has_empty_payload(void **state)
{
	acme_smime_key key;
	char jws[1024], payload[8], prot[512];

	(void)state;
	load_rfc7515_a3_key(&key);
	assert_true(acme_smime_jws_sign(jws, sizeof jws, &key, "n", "https://ca.test/a",
	    "https://ca.test/acct/1", "", 0) > 0);
	assert_non_null(strstr(jws, "\"payload\":\"\""));
	assert_int_equal(verify_flattened(jws, &key, payload, sizeof payload, prot,
	    sizeof prot), 0);
}

static void
jws_with_jwk_embeds_public_key(void **state)
{
	acme_smime_key key;
	char jws[1024], payload[64], prot[512];

	(void)state;
	load_rfc7515_a3_key(&key);
	assert_true(acme_smime_jws_sign(jws, sizeof jws, &key, "abc",
	    "https://ca.test/new-acct", NULL,
	    "{\"termsOfServiceAgreed\":true}", 28) > 0);
	assert_int_equal(verify_flattened(jws, &key, payload, sizeof payload, prot,
	    sizeof prot), 28);
	assert_string_equal(prot, "{\"alg\":\"ES256\",\"jwk\":{\"crv\":\"P-256\",\"kty\":\"EC\","
	    "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
	    "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"},"
	    "\"nonce\":\"abc\",\"url\":\"https://ca.test/new-acct\"}");
}

static void
jws_escapes_url_and_kid(void **state)
{
	acme_smime_key key;
	char jws[1024], payload[8], prot[512];

	(void)state;
	load_rfc7515_a3_key(&key);
	assert_true(acme_smime_jws_sign(jws, sizeof jws, &key, "n", "https://x/\"q\"",
	    "https://x/a\\b", "", 0) > 0);
	verify_flattened(jws, &key, payload, sizeof payload, prot, sizeof prot);
	assert_non_null(strstr(prot, "\"kid\":\"https://x/a\\\\b\""));
	assert_non_null(strstr(prot, "\"url\":\"https://x/\\\"q\\\"\""));
}

static void
jws_es384_with_p384_key(void **state)
{
	acme_smime_key key;
	unsigned counter = 5;
	char jws[1200], payload[8], prot[600];

	(void)state;
	assert_int_equal(acme_smime_key_generate(&key, ACME_SMIME_KEY_P384, test_entropy,
	    &counter), ACME_SMIME_OK);
	assert_true(acme_smime_jws_sign(jws, sizeof jws, &key, "n", "https://x/y",
	    "https://x/acct", "{}", 2) > 0);
	assert_int_equal(verify_flattened(jws, &key, payload, sizeof payload, prot,
	    sizeof prot), 2);
	assert_non_null(strstr(prot, "\"alg\":\"ES384\""));
}

/* Every buffer size from 0 up to the exact need: an error below it, the
 * same text at it, never a write past the given size. */
static void
jws_reports_small_buffer_at_every_size(void **state)
{
	acme_smime_key key;
	char ref[1024], buf[1024];
	int need, size;

	(void)state;
	load_rfc7515_a3_key(&key);
	need = acme_smime_jws_sign(ref, sizeof ref, &key, "n", "https://x/y", NULL, "{}", 2);
	assert_true(need > 0);
	for (size = 0; size <= need; size++) {
		memset(buf, 'Z', sizeof buf);
		assert_int_equal(acme_smime_jws_sign(buf, (size_t)size, &key, "n",
		    "https://x/y", NULL, "{}", 2), ACME_SMIME_ERR_BUFFER);
		assert_int_equal(buf[size], 'Z');
	}
	assert_int_equal(acme_smime_jws_sign(buf, (size_t)need + 1, &key, "n",
	    "https://x/y", NULL, "{}", 2), need);
	/* ECDSA here is deterministic (RFC 6979): same input, same bytes. */
	assert_string_equal(buf, ref);
}

static void
jws_refuses_missing_arguments(void **state)
{
	acme_smime_key key, none;
	char buf[512];

	(void)state;
	load_rfc7515_a3_key(&key);
	memset(&none, 0, sizeof none);
	assert_int_equal(acme_smime_jws_sign(buf, sizeof buf, &key, NULL, "u", NULL, "", 0),
	    ACME_SMIME_ERR_INVALID);
	assert_int_equal(acme_smime_jws_sign(buf, sizeof buf, &key, "n", NULL, NULL, "", 0),
	    ACME_SMIME_ERR_INVALID);
	assert_int_equal(acme_smime_jws_sign(buf, sizeof buf, &none, "n", "u", NULL, "", 0),
	    ACME_SMIME_ERR_INVALID);
}

/* Independent implementation: python3-jwcrypto verifies our JWS. */
static void
jws_verifies_with_jwcrypto(void **state)
{
	acme_smime_key key;
	unsigned counter = 77;
	char dir[] = "/tmp/acme-smime-jws-XXXXXX";
	char path_jws[64], path_jwk[64], cmd[256], jws[1200], jwk[256];
	textbuf tb;
	int n, k;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path_jws, sizeof path_jws, "%s/jws.json", dir);
	snprintf(path_jwk, sizeof path_jwk, "%s/key.json", dir);
	for (k = 0; k < 4; k++) {
		int type = k < 2 ? ACME_SMIME_KEY_P256 : ACME_SMIME_KEY_P384;

		assert_int_equal(acme_smime_key_generate(&key, type, test_entropy, &counter),
		    ACME_SMIME_OK);
		tb_init(&tb, jwk, sizeof jwk);
		jwk_put(&tb, &key);
		assert_true(tb_finish(&tb) > 0);
		write_file(path_jwk, jwk, strlen(jwk));
		n = acme_smime_jws_sign(jws, sizeof jws, &key, "nonceXYZ",
		    "https://ca.test/acme/x", (k & 1) ? "https://ca.test/acct/1" : NULL,
		    (k & 1) ? "" : "{\"a\":\"b\"}", (k & 1) ? 0 : 9);
		assert_true(n > 0);
		write_file(path_jws, jws, (size_t)n);
		snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/tools/jws_verify.py %s %s >/dev/null",
		    path_jws, path_jwk);
		assert_int_equal(system(cmd), 0);
		/* and a tampered one is refused */
		jws[n - 5] = jws[n - 5] == 'A' ? 'B' : 'A';
		write_file(path_jws, jws, (size_t)n);
		snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/tools/jws_verify.py %s %s >/dev/null 2>&1",
		    path_jws, path_jwk);
		assert_int_not_equal(system(cmd), 0);
	}
	unlink(path_jws);
	unlink(path_jwk);
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(key_from_private_computes_rfc7515_a3_public_point),
		cmocka_unit_test(thumbprint_of_rfc7515_a3_key_matches_rfc7638_vector),
		cmocka_unit_test(jwk_has_thumbprint_members_in_order),
		cmocka_unit_test(key_from_private_refuses_out_of_range_scalars),
		cmocka_unit_test(key_generate_gives_distinct_valid_keys_per_seed),
		cmocka_unit_test(key_generate_reports_entropy_failure),
		cmocka_unit_test(key_wipe_clears_everything),
		cmocka_unit_test(verifier_accepts_rfc7515_a3_signature),
		cmocka_unit_test(jws_with_kid_verifies_and_carries_header_fields),
		cmocka_unit_test(jws_post_as_get_has_empty_payload),
		cmocka_unit_test(jws_with_jwk_embeds_public_key),
		cmocka_unit_test(jws_escapes_url_and_kid),
		cmocka_unit_test(jws_es384_with_p384_key),
		cmocka_unit_test(jws_reports_small_buffer_at_every_size),
		cmocka_unit_test(jws_refuses_missing_arguments),
		cmocka_unit_test(jws_verifies_with_jwcrypto),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
