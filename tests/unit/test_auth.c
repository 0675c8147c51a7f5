/*
 * Section 6b (mail authenticity): S/MIME, DKIM and trusted
 * Authentication-Results, through acme_smime_check_challenge_mail().
 *
 * Vectors (run from the repo root): the acme4j S/MIME mails with the
 * verdicts of their README (tests/vectors/rfc8823/), our own S/MIME PKI
 * and mails for ECDSA, chains and pkcs7-mime (tests/vectors/smime/), and
 * mails signed with python3-dkim (tests/vectors/dkim/), whose TXT records
 * the dns_txt hook serves from a static table. Negative cases are these
 * mails with one thing changed in memory.
 */
#include "acme_smime.c"
#include "testutil.h"

#define ACME4J "tests/vectors/rfc8823/acme4j-smime/"
#define DKIMV  "tests/vectors/dkim/"
#define SMIMEV "tests/vectors/smime/"

/* 2026-01-01 00:00:00 UTC: inside every certificate's validity but the
 * 7508 signer's (2022-11-24 .. 2023-02-22). */
#define NOW_2026 UINT64_C(1767225600)
/* The 7508 mail's Date: 2022-11-26 21:09:38 UTC. */
#define NOW_7508 UINT64_C(1669496978)
/* 2033-01-01: after valid-signer.pem expires (2032-11-01). */
#define NOW_2033 UINT64_C(1988150400)

#define DKIM_TOKEN "LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME"
#define ACME4J_TOKEN "LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME="

static char mail[65536];
static size_t mail_len;
static acme_smime_mail_verdict verdict;
static acme_smime_pending pend;
static unsigned char work[ACME_SMIME_SMIME_WORK_SIZE];
static unsigned char ta_store[16384];
static br_x509_trust_anchor tas[4];

/* ------------------------------------------------------------------------
 * The DNS table behind the dns_txt hook
 * ---------------------------------------------------------------------- */

typedef struct {
	const char *name;
	char text[ACME_SMIME_MAX_DNS_TXT + 1];
} txt_record;

static txt_record zone[4];
static unsigned zone_count;
static unsigned lookups;
static int dns_fails;             /* the hook reports a failed lookup */

static int
table_txt(void *user, const char *name, char *out, size_t out_size)
{
	unsigned i;
	size_t n;

	assert_ptr_equal(user, zone);
	assert_int_equal(out_size, ACME_SMIME_MAX_DNS_TXT + 1);
	lookups++;
	if (dns_fails) {
		return -1;
	}
	for (i = 0; i < zone_count; i++) {
		if (strcmp(zone[i].name, name) == 0) {
			n = strlen(zone[i].text);
			assert_true(n < out_size);
			memcpy(out, zone[i].text, n + 1);
			return (int)n;
		}
	}
	return 0;
}

/* Serve text (or the first line of a file) at name. */
static void
zone_set(const char *name, const char *text)
{
	unsigned i;

	for (i = 0; i < zone_count && strcmp(zone[i].name, name) != 0; i++) {
		continue;
	}
	if (i == zone_count) {
		assert_true(zone_count < ARRAY_LEN(zone));
		zone_count++;
	}
	zone[i].name = name;
	assert_true(strlen(text) < sizeof zone[i].text);
	strcpy(zone[i].text, text);
}

static void
zone_set_file(const char *name, const char *path)
{
	char buf[ACME_SMIME_MAX_DNS_TXT + 2];

	read_file(path, buf, sizeof buf);
	buf[strcspn(buf, "\r\n")] = '\0';
	zone_set(name, buf);
}

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

static void
load(const char *path)
{
	mail_len = read_file(path, mail, sizeof mail);
}

static size_t
load_anchors(const char *path)
{
	char pem[8192];
	size_t n = read_file(path, pem, sizeof pem);
	int r = acme_smime_trust_anchors_from_pem(pem, n, ta_store,
	    sizeof ta_store, tas, ARRAY_LEN(tas));

	assert_true(r > 0);
	pend.smime_anchors = tas;
	pend.smime_anchor_count = (size_t)r;
	return (size_t)r;
}

/* A pending challenge with every proof available but S/MIME anchors. */
static void
pending(const char *identifier, const char *from, unsigned policy)
{
	memset(&pend, 0, sizeof pend);
	pend.identifier = identifier;
	pend.from = from;
	pend.policy = policy;
	pend.now = NOW_2026;
	pend.smime_work = work;
	pend.smime_work_size = sizeof work;
	pend.dns_txt = table_txt;
	pend.dns_user = zone;
	lookups = 0;
	dns_fails = 0;
}

/* Run the check; the return code must agree with the reason. */
static int
check(void)
{
	int rc = acme_smime_check_challenge_mail(mail, mail_len, &pend, &verdict);

	if (verdict.reason == ACME_SMIME_MAIL_OK) {
		assert_int_equal(rc, ACME_SMIME_OK);
	} else {
		assert_int_equal(rc, ACME_SMIME_ERR_MAIL);
		assert_string_not_equal(acme_smime_mail_reason_text(verdict.reason),
		    "unknown reason");
	}
	return verdict.reason;
}

/* Replace the first occurrence of from by to. */
static void
edit(const char *from, const char *to)
{
	char *p = strstr(mail, from);
	size_t fl = strlen(from), tl = strlen(to);

	assert_non_null(p);
	assert_true(mail_len - fl + tl < sizeof mail);
	memmove(p + tl, p + fl, mail_len - (size_t)(p - mail) - fl + 1);
	memcpy(p, to, tl);
	mail_len = mail_len - fl + tl;
}

static void
prepend(const char *text)
{
	size_t n = strlen(text);

	assert_true(mail_len + n < sizeof mail);
	memmove(mail + n, mail, mail_len + 1);
	memcpy(mail, text, n);
	mail_len += n;
}

/* Store the mail with LF line ends, as a Maildir might. */
static void
to_lf(void)
{
	size_t i, o = 0;

	for (i = 0; i < mail_len; i++) {
		if (mail[i] == '\r' && i + 1 < mail_len && mail[i + 1] == '\n') {
			continue;
		}
		mail[o++] = mail[i];
	}
	mail[o] = '\0';
	mail_len = o;
}

/* The acme4j S/MIME mails: us recipient@example.org, the CA valid-ca. */
static void
acme4j(const char *file, unsigned policy)
{
	char path[256];

	snprintf(path, sizeof path, ACME4J "email/%s", file);
	load(path);
	pending("recipient@example.org", "valid-ca@example.com", policy);
	load_anchors(ACME4J "keys/valid-signer.pem");
}

/* Our S/MIME mails: us alice@example.org, the CA acme@ca.example. */
static void
smime(const char *file, unsigned policy)
{
	char path[256];

	snprintf(path, sizeof path, SMIMEV "%s", file);
	load(path);
	pending("alice@example.org", "acme@ca.example", policy);
	load_anchors(SMIMEV "root.pem");
}

/* The DKIM mails, same parties. */
static void
dkim(const char *file, unsigned policy)
{
	char path[256];

	snprintf(path, sizeof path, DKIMV "%s", file);
	load(path);
	pending("alice@example.org", "acme@ca.example", policy);
}

/* Flip one byte of the decoded signature part, count bytes from its end
 * (the signature value ends a one-signer CMS without unsigned
 * attributes), and put it back re-encoded. */
static void
corrupt_p7s(size_t from_end)
{
	static unsigned char der[8192];
	static char text[12000];
	char *b64 = strstr(mail, "filename=\"smime.p7s\"\r\n\r\n"), *end;
	size_t start, n, tl;
	int len;

	assert_non_null(b64);
	b64 += 24;
	end = strstr(b64, "\r\n\r\n");
	assert_non_null(end);
	len = b64_decode_text(der, sizeof der, b64, (size_t)(end - b64));
	assert_true(len > (int)from_end);
	der[(size_t)len - from_end] ^= 0x01;
	tl = B64_ENCODED_LEN((size_t)len);
	assert_true(tl < sizeof text);
	b64_encode_raw(text, der, (size_t)len, 0);
	start = (size_t)(b64 - mail);
	n = (size_t)(end - b64);
	memmove(mail + start + tl, end, mail_len - start - n + 1);
	memcpy(mail + start, text, tl);
	mail_len = mail_len - n + tl;
}

/* A certificate file's DER, parsed, in a static buffer per slot. */
static void
load_cert(const char *path, cert_view *c, int slot)
{
	static unsigned char der[3][4096];
	char pem[8192], *b, *e;
	der_in tlv;
	int n;

	read_file(path, pem, sizeof pem);
	b = strstr(pem, "-----BEGIN CERTIFICATE-----");
	assert_non_null(b);
	b += 27;
	e = strstr(b, "-----END");
	assert_non_null(e);
	n = b64_decode_text(der[slot], sizeof der[slot], b, (size_t)(e - b));
	assert_true(n > 0);
	tlv.p = der[slot];
	tlv.len = (size_t)n;
	assert_int_equal(cert_parse(tlv, c), 0);
}

static int
setup_zone(void **state)
{
	(void)state;
	zone_count = 0;
	zone_set_file("s1._domainkey.ca.example", DKIMV "ca-s1.txt");
	zone_set_file("s1._domainkey.other.example", DKIMV "ca-s1.txt");
	zone_set_file("ed1._domainkey.ca.example", DKIMV "ed1.txt");
	return 0;
}

/* ------------------------------------------------------------------------
 * S/MIME: the acme4j vectors, with the verdicts of their README
 * ---------------------------------------------------------------------- */

static void
test_smime_valid_mail_is_accepted(void **state)
{
	(void)state;
	acme4j("valid-mail.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.proof, ACME_SMIME_PROOF_SMIME);
	assert_int_equal(verdict.relaxed, 0);
	assert_string_equal(verdict.token_part1, ACME4J_TOKEN);
	assert_string_equal(verdict.message_id, "<A2299BB.FF7788@example.org>");
	assert_int_equal(lookups, 0);
}

static void
test_smime_valid_mail_with_lf_line_ends_is_accepted(void **state)
{
	(void)state;
	acme4j("valid-mail.eml", 0);
	to_lf();
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
}

static void
test_smime_without_time_is_refused(void **state)
{
	(void)state;
	acme4j("valid-mail.eml", 0);
	pend.now = 0;
	assert_int_equal(check(), ACME_SMIME_MAIL_NO_TIME);
}

static void
test_smime_without_anchors_is_untrusted(void **state)
{
	(void)state;
	acme4j("valid-mail.eml", 0);
	pend.smime_anchors = NULL;
	pend.smime_anchor_count = 0;
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_UNTRUSTED);
}

static void
test_smime_after_signer_expiry_is_untrusted(void **state)
{
	(void)state;
	acme4j("valid-mail.eml", 0);
	pend.now = NOW_2033;
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_UNTRUSTED);
}

static void
test_smime_work_buffer_too_small_is_a_limit(void **state)
{
	(void)state;
	acme4j("valid-mail.eml", 0);
	pend.smime_work_size = 1000;
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_LIMIT);
	pend.smime_work = NULL;
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_LIMIT);
}

static void
test_smime_tampered_content_is_a_digest_mismatch(void **state)
{
	(void)state;
	acme4j("valid-mail.eml", 0);
	edit("automatically generated", "automatically GENERATED");
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_DIGEST_MISMATCH);
}

static void
test_smime_invalid_signer_is_untrusted(void **state)
{
	(void)state;
	acme4j("invalid-signed-mail.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_UNTRUSTED);
}

static void
test_smime_cert_not_for_from_is_refused(void **state)
{
	(void)state;
	acme4j("invalid-cert-mismatch.eml", 0);
	pend.from = "different-ca@example.org";
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_SIGNER_MISMATCH);
}

static void
test_smime_cert_without_san_is_refused(void **state)
{
	(void)state;
	acme4j("invalid-nosan.eml", 0);
	load_anchors(ACME4J "keys/valid-signer-nosan.pem");
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_NO_SAN);
}

static void
test_smime_tampered_from_is_refused_in_both_modes(void **state)
{
	static const unsigned modes[2] = {
		0, ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION
	};
	unsigned k;

	(void)state;
	for (k = 0; k < 2; k++) {
		/* The forger's From is what the challenge names... */
		acme4j("invalid-protected-mail-from.eml", modes[k]);
		pend.from = "tampered-ca@example.org";
		assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_SIGNER_MISMATCH);
	}
	/* ...or the genuine CA's, which the outer From no longer is. */
	acme4j("invalid-protected-mail-from.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_FROM_MISMATCH);
}

static void
test_smime_tampered_to_is_refused_in_both_modes(void **state)
{
	(void)state;
	acme4j("invalid-protected-mail-to.eml", 0);
	pend.identifier = "tampered-recipient@example.com";
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_HEADER_MISMATCH);
	acme4j("invalid-protected-mail-to.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_TO_MISMATCH);
	/* Relaxed takes the signed To, which is not the forged recipient. */
	acme4j("invalid-protected-mail-to.eml",
	    ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION);
	pend.identifier = "tampered-recipient@example.com";
	assert_int_equal(check(), ACME_SMIME_MAIL_TO_MISMATCH);
}

static void
test_smime_tampered_subject_is_refused_in_strict_mode(void **state)
{
	(void)state;
	/* The forged token is too short to pass even the Subject check. */
	acme4j("invalid-protected-mail-subject.eml", 0);
	assert_int_not_equal(check(), ACME_SMIME_MAIL_OK);
	/* A forged token of a valid length fails header protection. */
	edit("ACME: aDiFfErEnTtOkEn", "ACME: aDiFfErEnTtOkEnaDiFfErEnTtOkEn");
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_HEADER_MISMATCH);
}

static void
test_smime_tampered_subject_is_accepted_in_relaxed_mode(void **state)
{
	(void)state;
	acme4j("invalid-protected-mail-subject.eml",
	    ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.proof, ACME_SMIME_PROOF_SMIME);
	/* The token is the signed Subject's, and the verdict says that the
	 * relaxed mode let it through. */
	assert_string_equal(verdict.token_part1, ACME4J_TOKEN);
	assert_int_equal(verdict.relaxed,
	    ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION);
}

static void
test_smime_relaxed_mode_on_a_matching_mail_reports_nothing(void **state)
{
	(void)state;
	acme4j("valid-mail.eml", ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.relaxed, 0);
}

static void
rfc7508(const char *anchor, uint64_t now)
{
	load(ACME4J "email/valid-mail-7508.eml");
	pending("gitlab@dc-bsd.my.corp", "acme-challenge@dc-bsd.my.corp", 0);
	load_anchors(anchor);
	pend.now = now;
}

static void
test_smime_rfc7508_mail_is_accepted_with_its_ca_at_its_time(void **state)
{
	(void)state;
	rfc7508(ACME4J "keys/7508-valid-ca.cert.pem", NOW_7508);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.proof, ACME_SMIME_PROOF_SMIME);
	assert_string_equal(verdict.token_part1,
	    "ABxfL5s4bjvmyVRvl6y-Y_GhdzTdWpKqlmrKAIVe");
}

static void
test_smime_rfc7508_mail_is_refused_with_the_fake_ca(void **state)
{
	(void)state;
	rfc7508(ACME4J "keys/7508-fake-ca.cert.pem", NOW_7508);
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_UNTRUSTED);
}

static void
test_smime_rfc7508_mail_is_refused_after_expiry(void **state)
{
	(void)state;
	rfc7508(ACME4J "keys/7508-valid-ca.cert.pem", NOW_2026);
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_UNTRUSTED);
}

static void
test_smime_rfc7508_secure_headers_protect_the_subject(void **state)
{
	(void)state;
	rfc7508(ACME4J "keys/7508-valid-ca.cert.pem", NOW_7508);
	edit("Subject: ACME: ABxfL5s4bjvmyVRvl6y-Y_GhdzTdWpKqlmrKAIVe",
	    "Subject: ACME: ABxfL5s4bjvmyVRvl6y-Y_GhdzTdWpKqlmrKAIVf");
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_HEADER_MISMATCH);
	pend.policy = ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION;
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.token_part1,
	    "ABxfL5s4bjvmyVRvl6y-Y_GhdzTdWpKqlmrKAIVe");
}

/* ------------------------------------------------------------------------
 * S/MIME: our own vectors (ECDSA, chains, pkcs7-mime, key identifiers)
 * ---------------------------------------------------------------------- */

static void
test_smime_ecdsa_p256_through_an_intermediate_is_accepted(void **state)
{
	(void)state;
	smime("p256-detached.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.proof, ACME_SMIME_PROOF_SMIME);
	assert_string_equal(verdict.token_part1, DKIM_TOKEN);
}

static void
test_smime_ecdsa_p384_pkcs7_mime_by_key_id_is_accepted(void **state)
{
	(void)state;
	smime("p384-opaque.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.proof, ACME_SMIME_PROOF_SMIME);
}

static void
test_smime_chain_to_another_root_is_untrusted(void **state)
{
	(void)state;
	smime("p256-detached.eml", 0);
	load_anchors(ACME4J "keys/valid-signer.pem");
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_UNTRUSTED);
	smime("p384-opaque.eml", 0);
	load_anchors(SMIMEV "inter.pem");
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_UNTRUSTED);
}

static void
test_smime_pkcs7_mime_without_base64_is_malformed(void **state)
{
	(void)state;
	smime("p384-opaque.eml", 0);
	edit("Content-Transfer-Encoding: base64", "Content-Transfer-Encoding: 7bit");
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_MALFORMED);
}

static void
test_smime_broken_multipart_is_malformed(void **state)
{
	(void)state;
	smime("p256-detached.eml", 0);
	edit("boundary=\"----", "boundary=\"----X");
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_MALFORMED);
}

static void
test_smime_enveloped_data_is_not_a_signature(void **state)
{
	(void)state;
	smime("p384-opaque.eml", 0);
	edit("smime-type=signed-data", "smime-type=enveloped-data");
	assert_int_equal(check(), ACME_SMIME_MAIL_UNSIGNED);
}

/* Every truncation of the CMS is refused without a read past the buffer
 * (ASan watches), and none is accepted. */
static void
test_smime_truncated_signature_is_never_accepted(void **state)
{
	static char orig[sizeof mail];
	size_t orig_len, start, end, cut;
	char *b64;

	(void)state;
	smime("p256-detached.eml", 0);
	memcpy(orig, mail, mail_len + 1);
	orig_len = mail_len;
	b64 = strstr(orig, "filename=\"smime.p7s\"\r\n\r\n");
	assert_non_null(b64);
	start = (size_t)(b64 - orig) + 24;
	end = (size_t)(strstr(orig + start, "\r\n\r\n") - orig);
	for (cut = start; cut < end; cut += 7) {
		memcpy(mail, orig, start);
		memcpy(mail + start, orig + start, cut - start);
		memcpy(mail + cut, orig + end, orig_len - end + 1);
		mail_len = cut + orig_len - end;
		assert_int_not_equal(check(), ACME_SMIME_MAIL_OK);
	}
}

static void
test_smime_forged_signature_is_refused(void **state)
{
	(void)state;
	acme4j("valid-mail.eml", 0);
	corrupt_p7s(5);
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_BAD_SIGNATURE);
	smime("p256-detached.eml", 0);
	corrupt_p7s(5);
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_BAD_SIGNATURE);
}

static void
test_smime_root_with_the_same_name_but_another_key_is_untrusted(void **state)
{
	(void)state;
	smime("p384-opaque.eml", 0);
	load_anchors(SMIMEV "fake-root.pem");
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_UNTRUSTED);
	smime("p256-detached.eml", 0);
	load_anchors(SMIMEV "fake-root.pem");
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_UNTRUSTED);
}

static void
test_smime_intermediate_that_did_not_sign_the_signer_is_untrusted(void **state)
{
	(void)state;
	/* The intermediate chains to the root, but is not the signer's. */
	smime("p256-wrong-inter.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_UNTRUSTED);
}

static void
test_smime_certificate_signatures_are_checked_with_the_issuer_key(void **state)
{
	cert_view leaf, inter, root;
	br_x509_pkey ik, rk;

	(void)state;
	load_cert(SMIMEV "p256.pem", &leaf, 0);
	load_cert(SMIMEV "inter.pem", &inter, 1);
	load_cert(SMIMEV "root.pem", &root, 2);
	assert_int_equal(spki_parse(inter.spki, &ik), 0);
	assert_int_equal(spki_parse(root.spki, &rk), 0);
	assert_true(cert_signed_by(&leaf, &ik));
	assert_false(cert_signed_by(&leaf, &rk));
	assert_true(cert_signed_by(&inter, &rk));
	assert_true(cert_signed_by(&root, &rk));
	leaf.tbs.p[leaf.tbs.len - 1] ^= 1;
	assert_false(cert_signed_by(&leaf, &ik));
}

static void
test_smime_certificate_roles_are_enforced(void **state)
{
	cert_view c;
	der_in san, ski;

	(void)state;
	load_cert(SMIMEV "p256.pem", &c, 0);
	assert_int_equal(cert_extensions(&c, CERT_LEAF, &san, &ski), 0);
	assert_true(san.len > 0 && ski.len == 20);
	assert_int_equal(cert_extensions(&c, CERT_CA, &san, &ski), -1);
	load_cert(SMIMEV "inter.pem", &c, 0);
	assert_int_equal(cert_extensions(&c, CERT_CA, &san, &ski), 0);
	assert_int_equal(cert_extensions(&c, CERT_LEAF, &san, &ski), -1);
	load_cert(SMIMEV "bad-eku.pem", &c, 0);
	assert_int_equal(cert_extensions(&c, CERT_LEAF, &san, &ski), -1);
	load_cert(SMIMEV "bad-ku.pem", &c, 0);
	assert_int_equal(cert_extensions(&c, CERT_LEAF, &san, &ski), -1);
	load_cert(SMIMEV "crit-ext.pem", &c, 0);
	assert_int_equal(cert_extensions(&c, CERT_LEAF, &san, &ski), -1);
	assert_int_equal(cert_extensions(&c, CERT_ANY, &san, &ski), -1);
	load_cert(SMIMEV "not-ca.pem", &c, 0);
	assert_int_equal(cert_extensions(&c, CERT_CA, &san, &ski), -1);
}

/* Why the signer is not fed to BearSSL's X.509 engine: the 7508 signer
 * has a critical extendedKeyUsage (emailProtection), which the engine
 * refuses; our own leaf check accepts it. */
static void
test_smime_critical_eku_signer_passes_our_leaf_check_only(void **state)
{
	br_x509_minimal_context xc;
	const br_x509_class **vt = &xc.vtable;
	auth_state st;
	smime_msg m;
	cms_signer si;
	cert_view leaf, issuer;
	der_in san, ski;

	(void)state;
	rfc7508(ACME4J "keys/7508-valid-ca.cert.pem", NOW_7508);
	auth_init(&st, mail, mail_len, NULL, &pend);
	assert_int_equal(smime_locate(&st, &m), ACME_SMIME_MAIL_OK);
	assert_int_equal(cms_parse(&m), 0);
	assert_int_equal(cms_next_signer(&m.signers, &si), ACME_SMIME_MAIL_OK);
	assert_true(cms_signer_cert(&m, &si, &leaf));
	assert_int_equal(cert_extensions(&leaf, CERT_LEAF, &san, &ski), 0);
	assert_true(cert_find_subject(&m.certs, &leaf.issuer, &issuer));

	br_x509_minimal_init(&xc, &br_sha256_vtable, tas, pend.smime_anchor_count);
	br_x509_minimal_set_hash(&xc, br_sha256_ID, &br_sha256_vtable);
	br_x509_minimal_set_rsa(&xc, br_rsa_pkcs1_vrfy_get_default());
	br_x509_minimal_set_time(&xc, X509_DAYS_AT_UNIX_EPOCH + NOW_7508 / 86400,
	    NOW_7508 % 86400);
	(*vt)->start_chain(vt, NULL);
	(*vt)->start_cert(vt, (uint32_t)leaf.tlv.len);
	(*vt)->append(vt, leaf.tlv.p, leaf.tlv.len);
	(*vt)->end_cert(vt);
	(*vt)->start_cert(vt, (uint32_t)issuer.tlv.len);
	(*vt)->append(vt, issuer.tlv.p, issuer.tlv.len);
	(*vt)->end_cert(vt);
	assert_int_equal((*vt)->end_chain(vt), BR_ERR_X509_CRITICAL_EXTENSION);
}

/* ------------------------------------------------------------------------
 * DKIM
 * ---------------------------------------------------------------------- */

static void
test_dkim_relaxed_relaxed_is_accepted(void **state)
{
	(void)state;
	dkim("relaxed.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.proof, ACME_SMIME_PROOF_DKIM);
	assert_string_equal(verdict.token_part1, DKIM_TOKEN);
	assert_int_equal(lookups, 1);
}

static void
test_dkim_simple_simple_is_accepted(void **state)
{
	(void)state;
	dkim("simple.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.proof, ACME_SMIME_PROOF_DKIM);
}

static void
test_dkim_relaxed_simple_is_accepted(void **state)
{
	(void)state;
	dkim("relaxed-simple.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
}

static void
test_dkim_survives_lf_line_ends_and_prepended_trace_fields(void **state)
{
	static const char *const files[] = {
		"relaxed.eml", "simple.eml", "relaxed-simple.eml"
	};
	size_t k;

	(void)state;
	for (k = 0; k < ARRAY_LEN(files); k++) {
		dkim(files[k], 0);
		to_lf();
		assert_int_equal(check(), ACME_SMIME_MAIL_OK);
		dkim(files[k], 0);
		prepend("Received: from mx.ca.example by mx.example.org;\r\n"
		    "\tThu, 1 Jan 2026 00:00:01 +0000\r\n");
		assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	}
}

static void
test_dkim_tampered_body_is_refused(void **state)
{
	(void)state;
	dkim("relaxed.eml", 0);
	edit("ignore this mail", "answer this mail");
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_BODY_HASH);
	/* No key lookup for a body that does not match. */
	assert_int_equal(lookups, 0);
}

static void
test_dkim_whitespace_changes_break_only_simple(void **state)
{
	(void)state;
	dkim("relaxed.eml", 0);
	edit("challenge   \r\n", "challenge \t\r\n");
	edit("\r\n\r\n\r\n", "\r\n\r\n\r\n\r\n\r\n");
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	dkim("simple.eml", 0);
	edit("challenge   \r\n", "challenge \t\r\n");
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_BODY_HASH);
	dkim("simple.eml", 0);
	edit("\r\n\r\n\r\n", "\r\n\r\n\r\n\r\n\r\n");   /* trailing empty lines */
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
}

static void
test_dkim_tampered_subject_is_refused(void **state)
{
	(void)state;
	dkim("relaxed.eml", 0);
	edit("Subject: ACME: LgYem", "Subject: ACME: XgYem");
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_BAD_SIGNATURE);
}

static void
test_dkim_repeated_fields_are_taken_from_the_bottom(void **state)
{
	(void)state;
	dkim("relaxed.eml", 0);
	edit("X-Test: first\r\nX-Test:   second  ",
	    "X-Test:   second  \r\nX-Test: first");
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_BAD_SIGNATURE);
	/* A field added above the signed instances is not signed. */
	dkim("relaxed.eml", 0);
	edit("From:", "X-Test: added\r\nFrom:");
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	/* A signed absent field that appears breaks the signature. */
	dkim("relaxed.eml", 0);
	edit("From:", "Cc: bob@example.org\r\nFrom:");
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_BAD_SIGNATURE);
}

static void
test_dkim_missing_required_h_field_is_refused(void **state)
{
	(void)state;
	dkim("no-autosubmitted-h.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_HEADERS_UNSIGNED);
	assert_int_equal(lookups, 0);
	/* A CA allowed to omit Auto-Submitted may leave it unsigned too. */
	dkim("no-autosubmitted-h.eml", ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
}

static void
test_dkim_domain_other_than_from_is_refused(void **state)
{
	(void)state;
	dkim("other-domain.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_DOMAIN_MISMATCH);
	/* Not a parent or sub-domain either; the case does not matter. */
	dkim("relaxed.eml", 0);
	pend.from = "acme@sub.ca.example";
	edit("From: ACME CA <acme@ca.example>", "From: acme@sub.ca.example");
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_DOMAIN_MISMATCH);
	dkim("relaxed.eml", 0);
	pend.from = "acme@CA.Example";
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
}

static void
test_dkim_wrong_key_is_refused(void **state)
{
	(void)state;
	dkim("wrong-key.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_BAD_SIGNATURE);
}

static void
test_dkim_ed25519_is_not_supported(void **state)
{
	(void)state;
	dkim("ed25519.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_ED25519);
	assert_int_equal(lookups, 0);
}

static void
test_dkim_dual_signed_mail_passes_on_rsa(void **state)
{
	(void)state;
	dkim("dual.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.proof, ACME_SMIME_PROOF_DKIM);
	/* The RSA signature's failure outranks the Ed25519 one. */
	dkim("dual.eml", 0);
	edit("Subject: ACME: LgYem", "Subject: ACME: XgYem");
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_BAD_SIGNATURE);
}

static void
test_dkim_length_tag_is_refused(void **state)
{
	(void)state;
	dkim("length.eml", 0);
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_LENGTH_TAG);
}

static void
test_dkim_rsa_sha1_is_refused(void **state)
{
	(void)state;
	dkim("relaxed.eml", 0);
	edit("a=rsa-sha256", "a=rsa-sha1");
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_ALGORITHM);
}

static void
test_dkim_expiry_is_honoured_when_the_time_is_known(void **state)
{
	(void)state;
	dkim("relaxed.eml", 0);
	edit("t=1767225600;", "t=1767225600; x=1767229200;");
	pend.now = NOW_2026 + 7200;
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_EXPIRED);
	/* Before it, the check goes on (the edit breaks the signature). */
	pend.now = NOW_2026 + 60;
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_BAD_SIGNATURE);
	pend.now = 0;
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_BAD_SIGNATURE);
	/* x= before t= is malformed. */
	dkim("relaxed.eml", 0);
	edit("t=1767225600;", "t=1767225600; x=1767225599;");
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_MALFORMED);
}

static void
test_dkim_malformed_signatures_are_refused(void **state)
{
	static const char *const edits[][2] = {
		{ "v=1;", "v=2;" },
		{ "v=1;", "" },                                 /* v= missing */
		{ "s=s1;", "s=s1; s=s1;" },                     /* repeated tag */
		{ "c=relaxed/relaxed", "c=relaxed/fancy" },
		{ "d=ca.example;", "d=ca.example; =x;" },       /* empty name */
		{ "t=1767225600;", "t=17672256OO;" },
	};
	char many[600] = "h=";
	size_t k;

	(void)state;
	for (k = 0; k < ARRAY_LEN(edits); k++) {
		dkim("relaxed.eml", 0);
		edit(edits[k][0], edits[k][1]);
		assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_MALFORMED);
	}
	/* More than 64 names in h= (each costs a pass over the header). */
	for (k = 0; k < 49; k++) {
		strcat(many, "x-a:");
	}
	strcat(many, "from");
	dkim("relaxed.eml", 0);
	edit("h=from", many);
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_MALFORMED);
}

static void
test_dkim_key_lookup_failures_are_refused(void **state)
{
	(void)state;
	dkim("relaxed.eml", 0);
	dns_fails = 1;
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_KEY_UNAVAILABLE);
	dkim("relaxed.eml", 0);
	pend.dns_txt = NULL;
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_KEY_UNAVAILABLE);
	dkim("relaxed.eml", 0);
	edit("s=s1;", "s=s2;");                         /* no such record */
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_KEY_UNAVAILABLE);
	dkim("relaxed.eml", 0);
	edit("s=s1;", "s=s1.x\"y;");                    /* not a DNS name */
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_MALFORMED);
}

static void
test_dkim_unusable_key_records_are_refused(void **state)
{
	static const char *const records[] = {
		"v=DKIM1; k=rsa; p=",                           /* revoked */
		"v=DKIM1; k=ed25519; p=ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=",
		"v=DKIM2; p=AAAA",
		"v=DKIM1; p=!!!!",
		"v=DKIM1; h=sha1; p=AAAA",
		"v=DKIM1; p=MAA=",                              /* not a key */
	};
	char saved[sizeof zone[0].text];
	size_t k;

	(void)state;
	strcpy(saved, zone[0].text);
	for (k = 0; k < ARRAY_LEN(records); k++) {
		dkim("relaxed.eml", 0);
		zone_set("s1._domainkey.ca.example", records[k]);
		assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_BAD_KEY);
	}
	/* Testing mode: the RFC says to treat the mail as unsigned. */
	dkim("relaxed.eml", 0);
	zone_set("s1._domainkey.ca.example", saved);
	strcat(zone[0].text, "; t=y:s");
	assert_int_equal(check(), ACME_SMIME_MAIL_DKIM_BAD_KEY);
	/* Other tags and flags are fine. */
	dkim("relaxed.eml", 0);
	zone_set("s1._domainkey.ca.example", saved);
	strcat(zone[0].text, "; t=s; h=sha1:sha256; n=notes");
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	zone_set("s1._domainkey.ca.example", saved);
}

/* ------------------------------------------------------------------------
 * Authentication-Results
 * ---------------------------------------------------------------------- */

/* The DKIM mail without its signature, vouched for by our server. */
static void
ar_mail(const char *ar)
{
	char *sig_end;

	dkim("relaxed.eml", 0);
	sig_end = strstr(mail, "\r\nFrom:");
	assert_non_null(sig_end);
	memmove(mail, sig_end + 2, mail_len - (size_t)(sig_end + 2 - mail) + 1);
	mail_len -= (size_t)(sig_end + 2 - mail);
	if (ar != NULL) {
		prepend(ar);
	}
	pend.authserv_id = "mx.example.org";
}

static void
test_ar_from_the_trusted_server_is_accepted(void **state)
{
	static const char *const good[] = {
		"Authentication-Results: mx.example.org; dkim=pass header.d=ca.example\r\n",
		("Authentication-Results: MX.Example.Org 1; spf=pass\r\n"
		"  smtp.mailfrom=acme@ca.example;\r\n"
		"  dkim=pass (2048-bit key) reason=\"signature ok\"\r\n"
		"  header.d=CA.example header.s=s1 header.b=\"abc\"\r\n"),
		("Authentication-Results: (ours) mx.example.org;\r\n"
		" dkim=fail header.d=other.example; DKIM = pass header.d = ca.example\r\n"),
	};
	size_t k;

	(void)state;
	for (k = 0; k < ARRAY_LEN(good); k++) {
		ar_mail(good[k]);
		assert_int_equal(check(), ACME_SMIME_MAIL_OK);
		assert_int_equal(verdict.proof, ACME_SMIME_PROOF_AUTH_RESULTS);
	}
}

static void
test_ar_without_dkim_pass_for_the_from_domain_is_refused(void **state)
{
	static const char *const bad[] = {
		"Authentication-Results: mx.example.org; dkim=fail header.d=ca.example\r\n",
		"Authentication-Results: mx.example.org; dkim=pass header.d=other.example\r\n",
		"Authentication-Results: mx.example.org; dkim=pass header.d=sub.ca.example\r\n",
		"Authentication-Results: mx.example.org; spf=pass header.d=ca.example\r\n",
		"Authentication-Results: mx.example.org; none\r\n",
		"Authentication-Results: mx.example.org; dkim=pass header.i=@ca.example\r\n",
		"Authentication-Results: mx.example.org; dkim=pass header.d\r\n",
	};
	size_t k;

	(void)state;
	for (k = 0; k < ARRAY_LEN(bad); k++) {
		ar_mail(bad[k]);
		assert_int_equal(check(), ACME_SMIME_MAIL_AR_NO_PASS);
	}
}

static void
test_ar_only_the_topmost_field_counts(void **state)
{
	(void)state;
	/* A forged pass below our server's own result. */
	ar_mail(("Authentication-Results: mx.example.org; dkim=none\r\n"
	    "Authentication-Results: mx.example.org; dkim=pass header.d=ca.example\r\n"));
	assert_int_equal(check(), ACME_SMIME_MAIL_AR_NO_PASS);
	/* Our id below another server's field. */
	ar_mail("Authentication-Results: relay.example.net; dkim=none\r\n"
	    "Authentication-Results: mx.example.org; dkim=pass header.d=ca.example\r\n");
	assert_int_equal(check(), ACME_SMIME_MAIL_AR_UNTRUSTED);
}

static void
test_ar_from_another_server_is_refused(void **state)
{
	(void)state;
	ar_mail("Authentication-Results: mx.example.org.evil; dkim=pass header.d=ca.example\r\n");
	assert_int_equal(check(), ACME_SMIME_MAIL_AR_UNTRUSTED);
}

static void
test_ar_is_ignored_unless_an_authserv_id_is_configured(void **state)
{
	(void)state;
	ar_mail("Authentication-Results: mx.example.org; dkim=pass header.d=ca.example\r\n");
	pend.authserv_id = NULL;
	assert_int_equal(check(), ACME_SMIME_MAIL_UNSIGNED);
	ar_mail(NULL);
	assert_int_equal(check(), ACME_SMIME_MAIL_UNSIGNED);
}

/* ------------------------------------------------------------------------
 * Policy
 * ---------------------------------------------------------------------- */

static void
test_policy_strict_refuses_an_unsigned_mail(void **state)
{
	(void)state;
	ar_mail(NULL);
	pend.authserv_id = NULL;
	assert_int_equal(check(), ACME_SMIME_MAIL_UNSIGNED);
}

static void
test_policy_unsigned_ok_skips_every_proof_and_says_so(void **state)
{
	(void)state;
	ar_mail(NULL);
	pend.policy = ACME_SMIME_MAIL_ALLOW_UNSIGNED;
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.proof, ACME_SMIME_PROOF_NONE);
	assert_int_equal(verdict.relaxed, ACME_SMIME_MAIL_ALLOW_UNSIGNED);
	/* A signed mail is not even looked at (no DNS traffic). */
	dkim("wrong-key.eml", ACME_SMIME_MAIL_ALLOW_UNSIGNED);
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(lookups, 0);
}

static void
test_policy_missing_auto_submitted_is_reported_when_allowed(void **state)
{
	(void)state;
	dkim("no-autosubmitted-h.eml", ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT);
	edit("Auto-Submitted: auto-generated; type=acme\r\n", "");
	/* Removing the field changes no signed content: it was unsigned. */
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.relaxed, ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT);
}

static void
test_policy_first_carried_proof_names_the_refusal(void **state)
{
	(void)state;
	/* S/MIME fails, DKIM is absent, the A-R is not trusted: S/MIME's. */
	acme4j("valid-mail.eml", 0);
	pend.smime_anchor_count = 0;
	pend.authserv_id = "mx.example.org";
	prepend("Authentication-Results: mx.example.org; dkim=fail\r\n");
	assert_int_equal(check(), ACME_SMIME_MAIL_SMIME_UNTRUSTED);
	/* DKIM fails, then a trusted A-R passes: accepted. */
	dkim("wrong-key.eml", 0);
	pend.authserv_id = "mx.example.org";
	prepend("Authentication-Results: mx.example.org; dkim=pass header.d=ca.example\r\n");
	assert_int_equal(check(), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.proof, ACME_SMIME_PROOF_AUTH_RESULTS);
}

static void
test_policy_structural_reasons_come_before_authenticity(void **state)
{
	(void)state;
	dkim("wrong-key.eml", 0);
	pend.from = "someone@ca.example";
	assert_int_equal(check(), ACME_SMIME_MAIL_FROM_MISMATCH);
	assert_int_equal(lookups, 0);
}

static void
test_policy_anchors_without_array_are_a_bad_argument(void **state)
{
	(void)state;
	dkim("relaxed.eml", 0);
	pend.smime_anchor_count = 1;
	assert_int_equal(acme_smime_check_challenge_mail(mail, mail_len, &pend,
	    &verdict), ACME_SMIME_ERR_INVALID);
	assert_int_equal(verdict.reason, ACME_SMIME_MAIL_BAD_ARGUMENT);
}

static void
test_every_reason_has_its_own_text(void **state)
{
	int a, b;

	(void)state;
	for (a = 0; a < ACME_SMIME_MAIL_REASON_COUNT; a++) {
		assert_string_not_equal(acme_smime_mail_reason_text(a), "unknown reason");
		for (b = 0; b < a; b++) {
			assert_string_not_equal(acme_smime_mail_reason_text(a),
			    acme_smime_mail_reason_text(b));
		}
	}
	assert_string_equal(acme_smime_mail_reason_text(ACME_SMIME_MAIL_REASON_COUNT),
	    "unknown reason");
}

/* ------------------------------------------------------------------------
 * Building blocks
 * ---------------------------------------------------------------------- */

static void
test_der_reader_refuses_indefinite_and_overlong_lengths(void **state)
{
	static unsigned char indefinite[] = { 0x30, 0x80, 0x00, 0x00 };
	static unsigned char overlong[] = { 0x04, 0x85, 1, 0, 0, 0, 0 };
	static unsigned char past_end[] = { 0x04, 0x82, 0x01, 0x00, 0xAA };
	static unsigned char high_tag[] = { 0x1F, 0x81, 0x01, 0x00 };
	static unsigned char ok[] = { 0x04, 0x81, 0x01, 0xAA };
	der_in in, v;

	(void)state;
	in.p = indefinite; in.len = sizeof indefinite;
	assert_int_equal(der_next(&in, &v, NULL), -1);
	in.p = overlong; in.len = sizeof overlong;
	assert_int_equal(der_next(&in, &v, NULL), -1);
	in.p = past_end; in.len = sizeof past_end;
	assert_int_equal(der_next(&in, &v, NULL), -1);
	in.p = high_tag; in.len = sizeof high_tag;
	assert_int_equal(der_next(&in, &v, NULL), -1);
	in.p = ok; in.len = sizeof ok;
	assert_int_equal(der_next(&in, &v, NULL), 0x04);
	assert_int_equal(v.len, 1);
	assert_int_equal(in.len, 0);
}

static void
test_x509_times_convert_to_unix_seconds(void **state)
{
	static unsigned char utc[] = "221126210938Z";
	static unsigned char gen[] = "20450101000000Z";
	static unsigned char bad[] = "221326210938Z";
	der_in v;
	uint64_t t;

	(void)state;
	v.p = utc; v.len = 13;
	assert_int_equal(der_time(DER_UTC_TIME, &v, &t), 0);
	assert_true(t == NOW_7508);
	v.p = gen; v.len = 15;
	assert_int_equal(der_time(DER_GEN_TIME, &v, &t), 0);
	assert_true(t == UINT64_C(2366841600));
	v.p = bad; v.len = 13;
	assert_int_equal(der_time(DER_UTC_TIME, &v, &t), -1);
}

static void
test_relaxed_body_canonicalisation_matches_rfc6376(void **state)
{
	/* RFC 6376 section 3.4.5's example body, and the empty body. */
	static const char body[] = " C \r\nD \t E\r\n\r\n\r\n";
	static const char want[] = " C\r\nD E\r\n";
	auth_hasher a, b;
	unsigned char ha[32], hb[32];

	(void)state;
	ah_init(&a, &br_sha256_vtable);
	dkim_hash_body(&a, body, strlen(body), 1);
	ah_out(&a, ha);
	ah_init(&b, &br_sha256_vtable);
	ah_put(&b, want, strlen(want));
	ah_out(&b, hb);
	assert_memory_equal(ha, hb, 32);
	/* simple keeps the white space but not the trailing empty lines */
	ah_init(&a, &br_sha256_vtable);
	dkim_hash_body(&a, body, strlen(body), 0);
	ah_out(&a, ha);
	ah_init(&b, &br_sha256_vtable);
	ah_put(&b, " C \r\nD \t E\r\n", 12);
	ah_out(&b, hb);
	assert_memory_equal(ha, hb, 32);
	/* an empty body: nothing (relaxed), one CRLF (simple) */
	ah_init(&a, &br_sha256_vtable);
	dkim_hash_body(&a, "", 0, 1);
	ah_out(&a, ha);
	ah_init(&b, &br_sha256_vtable);
	ah_out(&b, hb);
	assert_memory_equal(ha, hb, 32);
	ah_init(&a, &br_sha256_vtable);
	dkim_hash_body(&a, "\r\n\r\n", 4, 0);
	ah_out(&a, ha);
	ah_init(&b, &br_sha256_vtable);
	ah_put(&b, "\r\n", 2);
	ah_out(&b, hb);
	assert_memory_equal(ha, hb, 32);
}

static void
test_dkim_canonicalisation_tag_forms(void **state)
{
	static const struct {
		const char *c;
		int r, header, body;
	} cases[] = {
		{ "relaxed", 0, 1, 0 }, { "simple/relaxed", 0, 0, 1 },
		{ "Relaxed/RELAXED", 0, 1, 1 }, { "relaxed/", -1, 0, 0 },
		{ "", -1, 0, 0 }, { "relaxed/simple/x", -1, 0, 0 },
	};
	dkim_sig sig;
	text_span c;
	size_t k;

	(void)state;
	for (k = 0; k < ARRAY_LEN(cases); k++) {
		memset(&sig, 0, sizeof sig);
		c.p = cases[k].c;
		c.len = strlen(cases[k].c);
		assert_int_equal(dkim_canon(&c, &sig), cases[k].r);
		if (cases[k].r == 0) {
			assert_int_equal(sig.relaxed_header, cases[k].header);
			assert_int_equal(sig.relaxed_body, cases[k].body);
		}
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_smime_valid_mail_is_accepted),
		cmocka_unit_test(test_smime_valid_mail_with_lf_line_ends_is_accepted),
		cmocka_unit_test(test_smime_without_time_is_refused),
		cmocka_unit_test(test_smime_without_anchors_is_untrusted),
		cmocka_unit_test(test_smime_after_signer_expiry_is_untrusted),
		cmocka_unit_test(test_smime_work_buffer_too_small_is_a_limit),
		cmocka_unit_test(test_smime_tampered_content_is_a_digest_mismatch),
		cmocka_unit_test(test_smime_invalid_signer_is_untrusted),
		cmocka_unit_test(test_smime_cert_not_for_from_is_refused),
		cmocka_unit_test(test_smime_cert_without_san_is_refused),
		cmocka_unit_test(test_smime_tampered_from_is_refused_in_both_modes),
		cmocka_unit_test(test_smime_tampered_to_is_refused_in_both_modes),
		cmocka_unit_test(test_smime_tampered_subject_is_refused_in_strict_mode),
		cmocka_unit_test(test_smime_tampered_subject_is_accepted_in_relaxed_mode),
		cmocka_unit_test(test_smime_relaxed_mode_on_a_matching_mail_reports_nothing),
		cmocka_unit_test(test_smime_rfc7508_mail_is_accepted_with_its_ca_at_its_time),
		cmocka_unit_test(test_smime_rfc7508_mail_is_refused_with_the_fake_ca),
		cmocka_unit_test(test_smime_rfc7508_mail_is_refused_after_expiry),
		cmocka_unit_test(test_smime_rfc7508_secure_headers_protect_the_subject),
		cmocka_unit_test(test_smime_ecdsa_p256_through_an_intermediate_is_accepted),
		cmocka_unit_test(test_smime_ecdsa_p384_pkcs7_mime_by_key_id_is_accepted),
		cmocka_unit_test(test_smime_chain_to_another_root_is_untrusted),
		cmocka_unit_test(test_smime_pkcs7_mime_without_base64_is_malformed),
		cmocka_unit_test(test_smime_broken_multipart_is_malformed),
		cmocka_unit_test(test_smime_enveloped_data_is_not_a_signature),
		cmocka_unit_test(test_smime_truncated_signature_is_never_accepted),
		cmocka_unit_test(test_smime_forged_signature_is_refused),
		cmocka_unit_test(test_smime_root_with_the_same_name_but_another_key_is_untrusted),
		cmocka_unit_test(test_smime_intermediate_that_did_not_sign_the_signer_is_untrusted),
		cmocka_unit_test(test_smime_certificate_signatures_are_checked_with_the_issuer_key),
		cmocka_unit_test(test_smime_certificate_roles_are_enforced),
		cmocka_unit_test(test_smime_critical_eku_signer_passes_our_leaf_check_only),
		cmocka_unit_test_setup(test_dkim_relaxed_relaxed_is_accepted, setup_zone),
		cmocka_unit_test_setup(test_dkim_simple_simple_is_accepted, setup_zone),
		cmocka_unit_test_setup(test_dkim_relaxed_simple_is_accepted, setup_zone),
		cmocka_unit_test_setup(test_dkim_survives_lf_line_ends_and_prepended_trace_fields, setup_zone),
		cmocka_unit_test_setup(test_dkim_tampered_body_is_refused, setup_zone),
		cmocka_unit_test_setup(test_dkim_whitespace_changes_break_only_simple, setup_zone),
		cmocka_unit_test_setup(test_dkim_tampered_subject_is_refused, setup_zone),
		cmocka_unit_test_setup(test_dkim_repeated_fields_are_taken_from_the_bottom, setup_zone),
		cmocka_unit_test_setup(test_dkim_missing_required_h_field_is_refused, setup_zone),
		cmocka_unit_test_setup(test_dkim_domain_other_than_from_is_refused, setup_zone),
		cmocka_unit_test_setup(test_dkim_wrong_key_is_refused, setup_zone),
		cmocka_unit_test_setup(test_dkim_ed25519_is_not_supported, setup_zone),
		cmocka_unit_test_setup(test_dkim_dual_signed_mail_passes_on_rsa, setup_zone),
		cmocka_unit_test_setup(test_dkim_length_tag_is_refused, setup_zone),
		cmocka_unit_test_setup(test_dkim_rsa_sha1_is_refused, setup_zone),
		cmocka_unit_test_setup(test_dkim_expiry_is_honoured_when_the_time_is_known, setup_zone),
		cmocka_unit_test_setup(test_dkim_malformed_signatures_are_refused, setup_zone),
		cmocka_unit_test_setup(test_dkim_key_lookup_failures_are_refused, setup_zone),
		cmocka_unit_test_setup(test_dkim_unusable_key_records_are_refused, setup_zone),
		cmocka_unit_test_setup(test_ar_from_the_trusted_server_is_accepted, setup_zone),
		cmocka_unit_test_setup(test_ar_without_dkim_pass_for_the_from_domain_is_refused, setup_zone),
		cmocka_unit_test_setup(test_ar_only_the_topmost_field_counts, setup_zone),
		cmocka_unit_test_setup(test_ar_from_another_server_is_refused, setup_zone),
		cmocka_unit_test_setup(test_ar_is_ignored_unless_an_authserv_id_is_configured, setup_zone),
		cmocka_unit_test_setup(test_policy_strict_refuses_an_unsigned_mail, setup_zone),
		cmocka_unit_test_setup(test_policy_unsigned_ok_skips_every_proof_and_says_so, setup_zone),
		cmocka_unit_test_setup(test_policy_missing_auto_submitted_is_reported_when_allowed, setup_zone),
		cmocka_unit_test_setup(test_policy_first_carried_proof_names_the_refusal, setup_zone),
		cmocka_unit_test_setup(test_policy_structural_reasons_come_before_authenticity, setup_zone),
		cmocka_unit_test_setup(test_policy_anchors_without_array_are_a_bad_argument, setup_zone),
		cmocka_unit_test(test_every_reason_has_its_own_text),
		cmocka_unit_test(test_der_reader_refuses_indefinite_and_overlong_lengths),
		cmocka_unit_test(test_x509_times_convert_to_unix_seconds),
		cmocka_unit_test(test_relaxed_body_canonicalisation_matches_rfc6376),
		cmocka_unit_test(test_dkim_canonicalisation_tag_forms),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
