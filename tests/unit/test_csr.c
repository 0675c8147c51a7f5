/* Section 4: the PKCS#10 CSR writer. */
#define _POSIX_C_SOURCE 200809L
#include "acme_smime.c"
#include "testutil.h"

#include <unistd.h>

/* protocol.md section 13.8: CertificationRequestInfo for the RFC 7515 A.3
 * key, CN and rfc822Name alexey@example.com, keyUsage critical
 * digitalSignature + keyAgreement. */
static const char tbs_vector_hex[] =
	"3081bf020100301d311b301906035504030c12616c65786579406578616d706c"
	"652e636f6d3059301306072a8648ce3d020106082a8648ce3d03010703420004"
	"7fcdce2770f6c45d4183cbee6fdb4b7b580733357be9ef13bacf6e3c7bd15445"
	"c7f144cd1bbd9b7e872cdfedb9eeb9f4b3695d6ea90b24ad8a4623288588e5ad"
	"a040303e06092a864886f70d01090e3131302f301d0603551d11041630148112"
	"616c65786579406578616d706c652e636f6d300e0603551d0f0101ff04040302"
	"0388";

static const acme_smime_identifier alexey = { ACME_SMIME_ID_EMAIL, "alexey@example.com" };

/* Split a CSR into its TBS, algorithm and signature (a minimal DER walk
 * for the tests). Returns the TBS length and sets *tbs_off. */
static size_t
der_len_at(const unsigned char *p, size_t *hdr)
{
	if (p[1] < 0x80) {
		*hdr = 2;
		return p[1];
	}
	if (p[1] == 0x81) {
		*hdr = 3;
		return p[2];
	}
	assert_int_equal(p[1], 0x82);
	*hdr = 4;
	return ((size_t)p[2] << 8) | p[3];
}

static void
csr_tbs(const unsigned char *csr, size_t len, size_t *off, size_t *tbs_len)
{
	size_t h_outer, h_tbs, body, tl;

	assert_int_equal(csr[0], 0x30);
	body = der_len_at(csr, &h_outer);
	assert_int_equal(h_outer + body, len);
	assert_int_equal(csr[h_outer], 0x30);
	tl = der_len_at(csr + h_outer, &h_tbs);
	*off = h_outer;
	*tbs_len = h_tbs + tl;
}

static void
csr_request_info_is_byte_exact_with_vector(void **state)
{
	acme_smime_key key;
	unsigned char csr[512], want[256];
	size_t off, tbs_len, want_len;
	int n;

	(void)state;
	load_rfc7515_a3_key(&key);
	want_len = from_hex(tbs_vector_hex, want, sizeof want);
	assert_int_equal(want_len, 194);
	n = acme_smime_csr_write(csr, sizeof csr, &key, &alexey, 1, ACME_SMIME_KU_DUAL);
	assert_true(n > 0);
	csr_tbs(csr, (size_t)n, &off, &tbs_len);
	assert_int_equal(tbs_len, want_len);
	assert_memory_equal(csr + off, want, want_len);
	/* then ecdsa-with-SHA256 and the BIT STRING signature */
	assert_memory_equal(csr + off + tbs_len, der_sig_ecdsa_sha256,
	    sizeof der_sig_ecdsa_sha256);
	assert_int_equal(csr[off + tbs_len + sizeof der_sig_ecdsa_sha256], 0x03);
}

static void
csr_signature_verifies_with_bearssl(void **state)
{
	acme_smime_key key;
	unsigned char csr[512], hash[32];
	size_t off, tbs_len, sig_off, h;
	pub_view pv;
	br_sha256_context sha;
	int n;

	(void)state;
	load_rfc7515_a3_key(&key);
	n = acme_smime_csr_write(csr, sizeof csr, &key, &alexey, 1, ACME_SMIME_KU_DUAL);
	csr_tbs(csr, (size_t)n, &off, &tbs_len);
	br_sha256_init(&sha);
	br_sha256_update(&sha, csr + off, tbs_len);
	br_sha256_out(&sha, hash);
	sig_off = off + tbs_len + sizeof der_sig_ecdsa_sha256;
	der_len_at(csr + sig_off, &h);
	pub_view_open(&pv, &key);
	assert_int_equal(br_ecdsa_vrfy_asn1_get_default()(br_ec_get_default(), hash, 32,
	    &pv.pk, csr + sig_off + h + 1, (size_t)n - sig_off - h - 1), 1);
}

/* Write the CSR to a file and run `openssl req -verify` (and -text). */
static void
openssl_check(const unsigned char *csr, size_t len, const char *must_contain[],
	size_t nmust, const char *must_not[], size_t nnot)
{
	char dir[] = "/tmp/acme-smime-csr-XXXXXX";
	char path[64], txt[80], cmd[256], text[8192];
	size_t i;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/req.der", dir);
	snprintf(txt, sizeof txt, "%s/req.txt", dir);
	write_file(path, csr, len);
	snprintf(cmd, sizeof cmd, "sh tests/tools/csr_verify.sh %s >/dev/null", path);
	assert_int_equal(system(cmd), 0);
	snprintf(cmd, sizeof cmd, "openssl req -inform DER -in %s -noout -text > %s", path, txt);
	assert_int_equal(system(cmd), 0);
	read_file(txt, text, sizeof text);
	for (i = 0; i < nmust; i++) {
		if (strstr(text, must_contain[i]) == NULL) {
			fail_msg("missing '%s' in:\n%s", must_contain[i], text);
		}
	}
	for (i = 0; i < nnot; i++) {
		if (strstr(text, must_not[i]) != NULL) {
			fail_msg("unexpected '%s' in:\n%s", must_not[i], text);
		}
	}
	unlink(path);
	unlink(txt);
	rmdir(dir);
}

static void
csr_verifies_with_openssl(void **state)
{
	acme_smime_key key;
	unsigned char csr[512];
	const char *must[] = { "CN = alexey@example.com", "email:alexey@example.com",
		"Digital Signature, Key Agreement", "X509v3 Key Usage: critical" };
	const char *mustnot[] = { "Key Encipherment", "Extended Key Usage" };
	int n;

	(void)state;
	load_rfc7515_a3_key(&key);
	n = acme_smime_csr_write(csr, sizeof csr, &key, &alexey, 1, ACME_SMIME_KU_DUAL);
	openssl_check(csr, (size_t)n, must, 4, mustnot, 2);
}

static void
csr_key_usage_profiles_for_ec_keys(void **state)
{
	acme_smime_key key;
	unsigned char csr[512];
	const char *sign[] = { "Digital Signature" };
	const char *sign_not[] = { "Key Agreement", "Key Encipherment" };
	const char *enc[] = { "Key Agreement" };
	const char *enc_not[] = { "Digital Signature", "Key Encipherment" };
	const char *none_not[] = { "Key Usage" };
	int n;

	(void)state;
	load_rfc7515_a3_key(&key);
	n = acme_smime_csr_write(csr, sizeof csr, &key, &alexey, 1, ACME_SMIME_KU_SIGN);
	openssl_check(csr, (size_t)n, sign, 1, sign_not, 2);
	n = acme_smime_csr_write(csr, sizeof csr, &key, &alexey, 1, ACME_SMIME_KU_ENCRYPT);
	openssl_check(csr, (size_t)n, enc, 1, enc_not, 2);
	n = acme_smime_csr_write(csr, sizeof csr, &key, &alexey, 1, ACME_SMIME_KU_NONE);
	openssl_check(csr, (size_t)n, NULL, 0, none_not, 1);
}

static void
csr_carries_several_identifiers_email_and_dns(void **state)
{
	acme_smime_key key;
	unsigned counter = 3;
	unsigned char csr[1024];
	const acme_smime_identifier ids[] = {
		{ ACME_SMIME_ID_EMAIL, "dev1@mail.test" },
		{ ACME_SMIME_ID_EMAIL, "alias+tag@Mail.Test" },
		{ ACME_SMIME_ID_DNS, "gw.example.net" },
	};
	const char *must[] = { "CN = dev1@mail.test",
		"email:dev1@mail.test, email:alias+tag@Mail.Test, DNS:gw.example.net" };
	int n;

	(void)state;
	assert_int_equal(acme_smime_key_generate(&key, ACME_SMIME_KEY_P256, test_entropy,
	    &counter), ACME_SMIME_OK);
	n = acme_smime_csr_write(csr, sizeof csr, &key, ids, 3, ACME_SMIME_KU_DUAL);
	assert_true(n > 0);
	openssl_check(csr, (size_t)n, must, 2, NULL, 0);
}

static void
csr_with_p384_key_uses_ecdsa_sha384(void **state)
{
	acme_smime_key key;
	unsigned counter = 9;
	unsigned char csr[1024];
	const char *must[] = { "ecdsa-with-SHA384", "NIST CURVE: P-384" };
	int n;

	(void)state;
	assert_int_equal(acme_smime_key_generate(&key, ACME_SMIME_KEY_P384, test_entropy,
	    &counter), ACME_SMIME_OK);
	n = acme_smime_csr_write(csr, sizeof csr, &key, &alexey, 1, ACME_SMIME_KU_DUAL);
	assert_true(n > 0);
	openssl_check(csr, (size_t)n, must, 2, NULL, 0);
}

static void
csr_omits_common_name_over_64_characters(void **state)
{
	acme_smime_key key;
	unsigned char csr[1024];
	const acme_smime_identifier longid = { ACME_SMIME_ID_EMAIL,
		"a-very-long-local-part-for-testing-the-bound@subdomain.example.com" };
	const char *must[] = { "Subject: \n", "email:a-very-long-local-part" };
	const char *mustnot[] = { "CN =" };
	int n;

	(void)state;
	assert_true(strlen(longid.value) > 64);
	load_rfc7515_a3_key(&key);
	n = acme_smime_csr_write(csr, sizeof csr, &key, &longid, 1, ACME_SMIME_KU_DUAL);
	assert_true(n > 0);
	openssl_check(csr, (size_t)n, must, 2, mustnot, 1);
}

static void
csr_refuses_bad_identifiers(void **state)
{
	acme_smime_key key;
	unsigned char csr[512];
	acme_smime_identifier id;
	static const char *bad_email[] = { "", "no-at-sign", "a@b@c", "@x.test",
		"x@", "sp ace@x.test", "*@x.test", "new\nline@x.test", "caf\xc3\xa9@x.test" };
	size_t i;

	(void)state;
	load_rfc7515_a3_key(&key);
	for (i = 0; i < ARRAY_LEN(bad_email); i++) {
		id.type = ACME_SMIME_ID_EMAIL;
		id.value = bad_email[i];
		assert_int_equal(acme_smime_csr_write(csr, sizeof csr, &key, &id, 1,
		    ACME_SMIME_KU_DUAL), ACME_SMIME_ERR_INVALID);
	}
	id.type = 7;
	id.value = "a@b.test";
	assert_int_equal(acme_smime_csr_write(csr, sizeof csr, &key, &id, 1,
	    ACME_SMIME_KU_DUAL), ACME_SMIME_ERR_INVALID);
	assert_int_equal(acme_smime_csr_write(csr, sizeof csr, &key, &alexey, 0,
	    ACME_SMIME_KU_DUAL), ACME_SMIME_ERR_INVALID);
	assert_int_equal(acme_smime_csr_write(csr, sizeof csr, &key, &alexey, 1, 9),
	    ACME_SMIME_ERR_INVALID);
}

static void
csr_reports_small_buffer_at_every_size(void **state)
{
	acme_smime_key key;
	unsigned char csr[512], buf[512];
	int need, size;

	(void)state;
	load_rfc7515_a3_key(&key);
	need = acme_smime_csr_write(csr, sizeof csr, &key, &alexey, 1, ACME_SMIME_KU_DUAL);
	for (size = 0; size < need; size++) {
		memset(buf, 0xEE, sizeof buf);
		assert_int_equal(acme_smime_csr_write(buf, (size_t)size, &key, &alexey, 1,
		    ACME_SMIME_KU_DUAL), ACME_SMIME_ERR_BUFFER);
		assert_int_equal(buf[size], 0xEE);
	}
	assert_int_equal(acme_smime_csr_write(buf, (size_t)need, &key, &alexey, 1,
	    ACME_SMIME_KU_DUAL), need);
	assert_memory_equal(buf, csr, (size_t)need);
}

static void
der_header_handles_long_lengths(void **state)
{
	unsigned char buf[8];
	der_writer w;

	(void)state;
	w.buf = buf;
	w.pos = sizeof buf;
	w.overflow = 0;
	der_put_header(&w, 0x30, 0x1234);
	assert_int_equal(sizeof buf - w.pos, 4);
	assert_int_equal(der_header_len(0x1234), 4);
	assert_memory_equal(buf + w.pos, "\x30\x82\x12\x34", 4);
	assert_int_equal(der_header_len(0x7F), 2);
	assert_int_equal(der_header_len(0x80), 3);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(csr_request_info_is_byte_exact_with_vector),
		cmocka_unit_test(csr_signature_verifies_with_bearssl),
		cmocka_unit_test(csr_verifies_with_openssl),
		cmocka_unit_test(csr_key_usage_profiles_for_ec_keys),
		cmocka_unit_test(csr_carries_several_identifiers_email_and_dns),
		cmocka_unit_test(csr_with_p384_key_uses_ecdsa_sha384),
		cmocka_unit_test(csr_omits_common_name_over_64_characters),
		cmocka_unit_test(csr_refuses_bad_identifiers),
		cmocka_unit_test(csr_reports_small_buffer_at_every_size),
		cmocka_unit_test(der_header_handles_long_lengths),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
