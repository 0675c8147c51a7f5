/*
 * Section 6 (mail): the RFC 8823 challenge-mail checks and the response
 * writer. The mails come from tests/vectors/rfc8823 (run from the repo
 * root); the negative cases are the acme4j challenge with one line changed.
 */
#include "acme_smime.c"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#define VECTORS "tests/vectors/rfc8823/"
#define ACME4J_MAIL VECTORS "acme4j-smime/email/"

#define TOKEN1 "LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME="
#define DIGEST "AjXW0h9_4YMP6Sv-9tKQNUrapI0us7ayBn0nCGOkUsk"
#define ME "alexey@example.com"
#define CA "acme-generator@example.org"


static char mail_buf[32768];
static size_t mail_len;
static char variant_buf[32768];
static size_t variant_len;
static acme_smime_mail_verdict verdict;

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

static void
load(const char *path)
{
	FILE *f = fopen(path, "rb");

	assert_non_null(f);
	mail_len = fread(mail_buf, 1, sizeof mail_buf, f);
	assert_true(mail_len > 0 && mail_len < sizeof mail_buf);
	mail_buf[mail_len] = '\0';
	fclose(f);
}

/* Run the check; the return code must agree with the reason. */
static int
check_buf(const char *mail, size_t len, const char *identifier,
	const char *from, unsigned policy)
{
	acme_smime_pending p;
	int rc;

	memset(&p, 0, sizeof p);
	p.identifier = identifier;
	p.from = from;
	p.policy = policy;
	rc = acme_smime_check_challenge_mail(mail, len, &p, &verdict);
	if (verdict.reason == ACME_SMIME_MAIL_OK) {
		assert_int_equal(rc, ACME_SMIME_OK);
	} else {
		assert_int_equal(rc, ACME_SMIME_ERR_MAIL);
	}
	return verdict.reason;
}

static int
check_file(const char *path, const char *identifier, const char *from,
	unsigned policy)
{
	load(path);
	return check_buf(mail_buf, mail_len, identifier, from, policy);
}

/*
 * The acme4j challenge with the header line starting with prefix replaced
 * by with (which may hold several CRLF-separated lines), or removed when
 * with is NULL. When no line starts with prefix, with is added as the
 * first line.
 */
static void
make_variant(const char *prefix, const char *with)
{
	size_t pos = 0, plen = strlen(prefix), end, n;
	int found = 0;

	load(ACME4J_MAIL "challenge.eml");
	variant_len = 0;
	while (pos < mail_len) {
		for (end = pos; end < mail_len && mail_buf[end] != '\n'; end++) {
			continue;
		}
		end = end < mail_len ? end + 1 : end;
		if (!found && end - pos >= plen
		    && memcmp(mail_buf + pos, prefix, plen) == 0) {
			found = 1;
			if (with != NULL) {
				n = strlen(with);
				memcpy(variant_buf + variant_len, with, n);
				variant_len += n;
				memcpy(variant_buf + variant_len, "\r\n", 2);
				variant_len += 2;
			}
		} else {
			memcpy(variant_buf + variant_len, mail_buf + pos, end - pos);
			variant_len += end - pos;
		}
		pos = end;
	}
	if (!found) {
		n = strlen(with);
		memmove(variant_buf + n + 2, variant_buf, variant_len);
		memcpy(variant_buf, with, n);
		memcpy(variant_buf + n, "\r\n", 2);
		variant_len += n + 2;
	}
	variant_buf[variant_len] = '\0';
}

static int
check_variant_policy(const char *prefix, const char *with, unsigned policy)
{
	make_variant(prefix, with);
	return check_buf(variant_buf, variant_len, ME, CA, policy);
}

static int
check_variant(const char *prefix, const char *with)
{
	return check_variant_policy(prefix, with, ACME_SMIME_MAIL_ALLOW_UNSIGNED);
}

static int
check_text(const char *mail)
{
	return check_buf(mail, strlen(mail), ME, CA,
		ACME_SMIME_MAIL_ALLOW_UNSIGNED);
}

/* ------------------------------------------------------------------------
 * The vectors
 * ---------------------------------------------------------------------- */

static void
test_acme4j_challenge_accepted_when_unsigned_allowed(void **state)
{
	(void)state;
	assert_int_equal(check_file(ACME4J_MAIL "challenge.eml", ME, CA,
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.token_part1, TOKEN1);
	assert_int_equal(verdict.reply_count, 1);
	assert_string_equal(verdict.reply_to[0], "acme-validator@example.org");
	assert_string_equal(verdict.message_id, "<A2299BB.FF7788@example.org>");
	assert_string_equal(verdict.references, "");
}

static void
test_acme4j_challenge_refused_as_unsigned_by_strict_policy(void **state)
{
	(void)state;
	assert_int_equal(check_file(ACME4J_MAIL "challenge.eml", ME, CA, 0),
		ACME_SMIME_MAIL_UNSIGNED);
}

static void
test_acme4j_challenge_refused_for_mismatch_json_sender(void **state)
{
	(void)state;
	/* from of json/emailReplyChallengeMismatch.json */
	assert_int_equal(check_file(ACME4J_MAIL "challenge.eml", ME,
		"acme-challenge+2i211oi1204310@example.com",
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_FROM_MISMATCH);
}

static void
test_rfc_figure1_accepted_and_reply_goes_to_from(void **state)
{
	(void)state;
	assert_int_equal(check_file(VECTORS "rfc-figures/figure1-challenge.eml",
		ME, CA, ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.token_part1, TOKEN1);
	assert_int_equal(verdict.reply_count, 1);
	assert_string_equal(verdict.reply_to[0], CA);
	assert_string_equal(verdict.message_id, "<A2299BB.FF7788@example.org>");
}

static int
check_acme4j_signed(const char *file, unsigned policy)
{
	char path[256];

	snprintf(path, sizeof path, "%s%s", ACME4J_MAIL, file);
	return check_file(path, "recipient@example.org", "valid-ca@example.com",
		policy);
}

static void
test_acme4j_valid_mail_outer_header_accepted(void **state)
{
	(void)state;
	assert_int_equal(check_acme4j_signed("valid-mail.eml",
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.token_part1, TOKEN1);
	assert_string_equal(verdict.reply_to[0], "valid-ca@example.com");
}

static void
test_acme4j_valid_mail_refused_by_strict_policy_without_smime_setup(void **state)
{
	(void)state;
	/* No work buffer, anchors or time here (test_auth.c has them): the
	 * signature cannot be checked, so strict refuses the mail. */
	assert_int_equal(check_acme4j_signed("valid-mail.eml", 0),
		ACME_SMIME_MAIL_SMIME_LIMIT);
}

static void
test_acme4j_invalid_signed_mail_outer_header_accepted(void **state)
{
	(void)state;
	/* Only the signer differs: a later signature check catches it. */
	assert_int_equal(check_acme4j_signed("invalid-signed-mail.eml",
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_OK);
}

static void
test_acme4j_invalid_nosan_outer_header_accepted(void **state)
{
	(void)state;
	assert_int_equal(check_acme4j_signed("invalid-nosan.eml",
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_OK);
}

static void
test_acme4j_invalid_cert_mismatch_refused_for_from(void **state)
{
	(void)state;
	assert_int_equal(check_acme4j_signed("invalid-cert-mismatch.eml",
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_FROM_MISMATCH);
}

static void
test_acme4j_tampered_from_refused(void **state)
{
	(void)state;
	assert_int_equal(check_acme4j_signed("invalid-protected-mail-from.eml",
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_FROM_MISMATCH);
}

static void
test_acme4j_tampered_to_refused(void **state)
{
	(void)state;
	assert_int_equal(check_acme4j_signed("invalid-protected-mail-to.eml",
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_TO_MISMATCH);
}

static void
test_acme4j_tampered_subject_refused_as_short_token(void **state)
{
	(void)state;
	/* "aDiFfErEnTtOkEn": 15 characters, 11 bytes. */
	assert_int_equal(check_acme4j_signed("invalid-protected-mail-subject.eml",
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_SHORT_TOKEN);
}

static void
test_acme4j_rfc7508_mail_accepted(void **state)
{
	(void)state;
	assert_int_equal(check_file(ACME4J_MAIL "valid-mail-7508.eml",
		"gitlab@dc-bsd.my.corp", "acme-challenge@dc-bsd.my.corp",
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.token_part1,
		"ABxfL5s4bjvmyVRvl6y-Y_GhdzTdWpKqlmrKAIVe");
	assert_string_equal(verdict.reply_to[0], "acme-challenge@dc-bsd.my.corp");
	assert_string_equal(verdict.message_id,
		"<ee3f3a6d-12c4-7cc0-aff2-b5a9b19a9f7e@dc-bsd.my.corp>");
}

/* ------------------------------------------------------------------------
 * Subject: RFC 2047 decoding
 * ---------------------------------------------------------------------- */

static void
expect_token1_with_subject(const char *subject_line)
{
	assert_int_equal(check_variant("Subject:", subject_line),
		ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.token_part1, TOKEN1);
}

static void
test_subject_b_encoded_word_decoded(void **state)
{
	(void)state;
	expect_token1_with_subject("Subject: =?US-ASCII?B?QUNNRTogTGdZZW1KTHkz"
		"RjFMRGtpSnJkSUdiRXp5Rkp5T3lmNnZCZHlaMVRHM3NNRT0=?=");
}

static void
test_subject_plain_folded_across_lines(void **state)
{
	(void)state;
	expect_token1_with_subject("Subject: ACME:\r\n LgYemJLy3F1LDkiJrdIG\r\n"
		"\tbEzyFJyOyf6vBdyZ1TG3sME=");
}

static void
test_subject_whitespace_between_encoded_words_dropped(void **state)
{
	(void)state;
	expect_token1_with_subject("Subject: =?UTF-8?Q?ACME:_LgYemJLy3F1LDki?="
		"\r\n  =?UTF-8?Q?JrdIGbEzyFJyOyf6vBdyZ1TG3sME=3D?=");
}

static void
test_subject_lowercase_encoding_and_charset_accepted(void **state)
{
	(void)state;
	expect_token1_with_subject("Subject: =?utf-8?q?ACME:_"
		"LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME=3d?=");
}

static void
test_subject_language_tag_ignored(void **state)
{
	(void)state;
	expect_token1_with_subject("Subject: =?US-ASCII*en?Q?ACME:_"
		"LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME=3D?=");
}

static void
test_subject_encoded_word_after_plain_label(void **state)
{
	(void)state;
	expect_token1_with_subject("Subject: ACME: =?UTF-8?B?"
		"TGdZZW1KTHkzRjFMRGtpSnJkSUdiRXp5Rkp5T3lmNnZCZHlaMVRHM3NNRT0=?=");
}

static void
test_subject_decode_keeps_space_between_word_and_text(void **state)
{
	char s[64] = "=?UTF-8?Q?a_b?= c  =?UTF-8?Q?d?=   =?UTF-8?B?ZQ==?= f";
	size_t len = strlen(s);

	(void)state;
	assert_int_equal(subject_decode(s, &len), ACME_SMIME_MAIL_OK);
	assert_int_equal(len, strlen("a b c  de f"));
	assert_string_equal(s, "a b c  de f");
}

static void
test_subject_iso_8859_1_refused_as_bad_charset(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:", "Subject: =?ISO-8859-1?Q?"
		"ACME:_LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME=3D?="),
		ACME_SMIME_MAIL_BAD_CHARSET);
}

static void
test_subject_bad_q_hex_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:", "Subject: =?UTF-8?Q?"
		"ACME:_LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME=3G?="),
		ACME_SMIME_MAIL_BAD_ENCODED_WORD);
}

static void
test_subject_truncated_q_escape_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:",
		"Subject: =?UTF-8?Q?ACME:_abc=3?="), ACME_SMIME_MAIL_BAD_ENCODED_WORD);
}

static void
test_subject_q_control_character_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:", "Subject: =?UTF-8?Q?"
		"ACME:_LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME=0A?="),
		ACME_SMIME_MAIL_BAD_ENCODED_WORD);
}

static void
test_subject_b_nul_byte_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:", "Subject: =?UTF-8?B?QUNNRTog"
		"AA==?="), ACME_SMIME_MAIL_BAD_ENCODED_WORD);
}

static void
test_subject_bad_base64_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:",
		"Subject: =?UTF-8?B?QUNN*E==?="), ACME_SMIME_MAIL_BAD_ENCODED_WORD);
}

static void
test_subject_unterminated_encoded_word_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:",
		"Subject: =?UTF-8?Q?ACME:_" TOKEN1), ACME_SMIME_MAIL_BAD_ENCODED_WORD);
}

static void
test_subject_unknown_encoding_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:",
		"Subject: =?UTF-8?X?ACME:_" TOKEN1 "?="),
		ACME_SMIME_MAIL_BAD_ENCODED_WORD);
}

/* ------------------------------------------------------------------------
 * Subject: "ACME:" and token-part1
 * ---------------------------------------------------------------------- */

static void
test_subject_re_prefix_refused_as_reply(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:", "Subject: Re: ACME: " TOKEN1),
		ACME_SMIME_MAIL_REPLY_SUBJECT);
}

static void
test_subject_uppercase_re_prefix_refused_as_reply(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:", "Subject: RE: ACME: " TOKEN1),
		ACME_SMIME_MAIL_REPLY_SUBJECT);
}

static void
test_subject_fwd_prefix_refused_as_reply(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:", "Subject: Fwd: ACME: " TOKEN1),
		ACME_SMIME_MAIL_REPLY_SUBJECT);
}

static void
test_subject_fw_prefix_refused_as_reply(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:", "Subject: fw: ACME: " TOKEN1),
		ACME_SMIME_MAIL_REPLY_SUBJECT);
}

static void
test_subject_encoded_reply_prefix_refused_as_reply(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:",
		"Subject: =?UTF-8?Q?Re:_ACME:_"
		"LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME=3D?="),
		ACME_SMIME_MAIL_REPLY_SUBJECT);
}

static void
test_subject_without_acme_label_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:", "Subject: Hello " TOKEN1),
		ACME_SMIME_MAIL_NOT_ACME_SUBJECT);
}

static void
test_subject_lowercase_acme_label_accepted(void **state)
{
	(void)state;
	/* Decision: RFC 5234 literals are case-insensitive. */
	expect_token1_with_subject("Subject: acme: " TOKEN1);
}

static void
test_subject_missing_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:", NULL),
		ACME_SMIME_MAIL_NO_SUBJECT);
}

static void
test_subject_empty_token_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:", "Subject: ACME:   "),
		ACME_SMIME_MAIL_BAD_TOKEN);
}

static void
test_subject_token_with_plus_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:",
		"Subject: ACME: LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3s+E="),
		ACME_SMIME_MAIL_BAD_TOKEN);
}

static void
test_subject_token_with_misplaced_padding_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:",
		"Subject: ACME: LgYemJLy3F1LDkiJrdIG=bEzyFJyOyf6vBdyZ1TG3sME"),
		ACME_SMIME_MAIL_BAD_TOKEN);
}

static void
test_subject_short_token_refused(void **state)
{
	(void)state;
	/* 20 characters = 15 bytes, one under 128 bits. */
	assert_int_equal(check_variant("Subject:",
		"Subject: ACME: LgYemJLy3F1LDkiJrdIG"), ACME_SMIME_MAIL_SHORT_TOKEN);
}

static void
test_subject_sixteen_byte_token_accepted(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:",
		"Subject: ACME: LgYemJLy3F1LDkiJrdIGbA"), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.token_part1, "LgYemJLy3F1LDkiJrdIGbA");
}

static void
make_long_token_subject(char *line, size_t token_len)
{
	size_t n = strlen("Subject: ACME: ");

	memcpy(line, "Subject: ACME: ", n);
	memset(line + n, 'A', token_len);
	line[n + token_len] = '\0';
}

static void
test_subject_token_at_limit_accepted(void **state)
{
	char line[ACME_SMIME_MAX_TOKEN + 32];

	(void)state;
	make_long_token_subject(line, ACME_SMIME_MAX_TOKEN);
	assert_int_equal(check_variant("Subject:", line), ACME_SMIME_MAIL_OK);
	assert_int_equal(strlen(verdict.token_part1), ACME_SMIME_MAX_TOKEN);
}

static void
test_subject_token_over_limit_refused(void **state)
{
	char line[ACME_SMIME_MAX_TOKEN + 32];

	(void)state;
	make_long_token_subject(line, ACME_SMIME_MAX_TOKEN + 4);
	assert_int_equal(check_variant("Subject:", line),
		ACME_SMIME_MAIL_LONG_TOKEN);
}

/* ------------------------------------------------------------------------
 * Auto-Submitted
 * ---------------------------------------------------------------------- */

static void
test_auto_submitted_missing_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Auto-Submitted:", NULL),
		ACME_SMIME_MAIL_NO_AUTO_SUBMITTED);
}

static void
test_auto_submitted_missing_tolerated_by_policy(void **state)
{
	(void)state;
	assert_int_equal(check_variant_policy("Auto-Submitted:", NULL,
		ACME_SMIME_MAIL_ALLOW_UNSIGNED | ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT),
		ACME_SMIME_MAIL_OK);
}

static void
test_auto_submitted_no_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Auto-Submitted:", "Auto-Submitted: no"),
		ACME_SMIME_MAIL_NOT_AUTO_GENERATED);
}

static void
test_auto_submitted_no_refused_even_by_relaxed_policy(void **state)
{
	(void)state;
	assert_int_equal(check_variant_policy("Auto-Submitted:",
		"Auto-Submitted: no",
		ACME_SMIME_MAIL_ALLOW_UNSIGNED | ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT),
		ACME_SMIME_MAIL_NOT_AUTO_GENERATED);
}

static void
test_auto_submitted_auto_replied_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Auto-Submitted:",
		"Auto-Submitted: auto-replied"), ACME_SMIME_MAIL_NOT_AUTO_GENERATED);
}

static void
test_auto_submitted_any_case_accepted(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Auto-Submitted:",
		"Auto-submitted: AUTO-GENERATED"), ACME_SMIME_MAIL_OK);
}

static void
test_auto_submitted_with_comments_and_parameters_accepted(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Auto-Submitted:",
		"Auto-Submitted: (by CA) auto-generated (robot) ; type=acme; x=\"y\""),
		ACME_SMIME_MAIL_OK);
}

static void
test_auto_submitted_duplicate_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Auto-Submitted:",
		"Auto-Submitted: auto-generated\r\nAuto-Submitted: no"),
		ACME_SMIME_MAIL_DUPLICATE_FIELD);
}

/* ------------------------------------------------------------------------
 * From
 * ---------------------------------------------------------------------- */

static void
test_from_display_name_and_comment_accepted(void **state)
{
	(void)state;
	assert_int_equal(check_variant("From:",
		"From: \"CA\" <acme-generator@example.org> (robot)"),
		ACME_SMIME_MAIL_OK);
}

static void
test_from_domain_compared_without_case(void **state)
{
	(void)state;
	assert_int_equal(check_variant("From:",
		"From: acme-generator@EXAMPLE.Org"), ACME_SMIME_MAIL_OK);
}

static void
test_from_local_part_compared_with_case(void **state)
{
	(void)state;
	assert_int_equal(check_variant("From:",
		"From: ACME-generator@example.org"), ACME_SMIME_MAIL_FROM_MISMATCH);
}

static void
test_from_two_mailboxes_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("From:",
		"From: acme-generator@example.org, evil@example.net"),
		ACME_SMIME_MAIL_BAD_FROM);
}

static void
test_from_group_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("From:",
		"From: CA: acme-generator@example.org;"), ACME_SMIME_MAIL_BAD_FROM);
}

static void
test_from_unclosed_angle_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("From:",
		"From: CA <acme-generator@example.org"), ACME_SMIME_MAIL_BAD_FROM);
}

static void
test_from_missing_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("From:", NULL), ACME_SMIME_MAIL_NO_FROM);
}

static void
test_from_with_cfws_inside_addr_spec_accepted(void **state)
{
	(void)state;
	assert_int_equal(check_variant("From:",
		"From: acme-generator (x) @ (y (nested)) example . org"),
		ACME_SMIME_MAIL_OK);
}

static void
test_addr_spec_extracted_without_cfws(void **state)
{
	static const char list[] = " (c) \"J. \\\"Q\\\" Doe\" <a . \"b c\" (x) @"
		" (y (z)) Example . ORG > , d@[10.0.0.1]";
	char addr[ACME_SMIME_MAX_ADDR + 1];
	addr_list al;

	(void)state;
	addr_list_init(&al, list, strlen(list), 1);
	assert_int_equal(addr_list_next(&al, addr, sizeof addr), 1);
	assert_string_equal(addr, "a.\"b c\"@Example.ORG");
	assert_int_equal(addr_list_next(&al, addr, sizeof addr), 1);
	assert_string_equal(addr, "d@[10.0.0.1]");
	assert_int_equal(addr_list_next(&al, addr, sizeof addr), 0);
}

/* ------------------------------------------------------------------------
 * To
 * ---------------------------------------------------------------------- */

static void
test_to_without_identifier_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:", "To: someone@example.com"),
		ACME_SMIME_MAIL_TO_MISMATCH);
}

static void
test_to_missing_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:", NULL), ACME_SMIME_MAIL_NO_TO);
}

static void
test_to_unparsable_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:", "To: alexey@example.com, <broken"),
		ACME_SMIME_MAIL_BAD_TO);
}

static void
test_to_empty_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:", "To:  "), ACME_SMIME_MAIL_BAD_TO);
}

static void
test_to_identifier_among_several_accepted(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:",
		"To: a@example.net, \"Smith, J.\" <j@example.net>,\r\n"
		" Alexey <alexey@example.com>"), ACME_SMIME_MAIL_OK);
}

static void
test_to_group_syntax_accepted(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:",
		"To: Team: a@example.net, alexey@example.com;, Nobody:;"),
		ACME_SMIME_MAIL_OK);
}

static void
test_to_unclosed_group_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:", "To: Team: alexey@example.com"),
		ACME_SMIME_MAIL_BAD_TO);
}

static void
test_to_quoted_local_part_matched(void **state)
{
	(void)state;
	make_variant("To:", "To: \"a b\" @example.com");
	assert_int_equal(check_buf(variant_buf, variant_len, "\"a b\"@example.com",
		CA, ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_OK);
}

static void
test_to_domain_compared_without_case(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:", "To: alexey@EXAMPLE.COM"),
		ACME_SMIME_MAIL_OK);
}

static void
test_to_local_part_compared_with_case(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:", "To: Alexey@example.com"),
		ACME_SMIME_MAIL_TO_MISMATCH);
}

static void
test_to_comments_nested_too_deep_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:",
		"To: alexey@example.com (1(2(3(4(5(6(7(8(9)))))))))"),
		ACME_SMIME_MAIL_BAD_TO);
}

static void
test_to_address_over_limit_refused(void **state)
{
	char line[ACME_SMIME_MAX_ADDR + 64];
	size_t n = strlen("To: alexey@example.com, ");

	(void)state;
	memcpy(line, "To: alexey@example.com, ", n);
	memset(line + n, 'x', ACME_SMIME_MAX_ADDR);
	strcpy(line + n + ACME_SMIME_MAX_ADDR, "@b");
	assert_int_equal(check_variant("To:", line), ACME_SMIME_MAIL_BAD_TO);
}

static void
test_to_obsolete_route_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:",
		"To: <@relay.example:alexey@example.com>"), ACME_SMIME_MAIL_BAD_TO);
}

/* ------------------------------------------------------------------------
 * Reply-To
 * ---------------------------------------------------------------------- */

static void
test_reply_to_two_addresses_kept(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Reply-To:",
		"Reply-To: Validator <v1@example.org>, (backup) v2@Example.org"),
		ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.reply_count, 2);
	assert_string_equal(verdict.reply_to[0], "v1@example.org");
	assert_string_equal(verdict.reply_to[1], "v2@Example.org");
}

static void
test_reply_to_at_limit_kept(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Reply-To:",
		"Reply-To: a@x.org, b@x.org, c@x.org, d@x.org"), ACME_SMIME_MAIL_OK);
	assert_int_equal(verdict.reply_count, ACME_SMIME_MAX_REPLY_TO);
	assert_string_equal(verdict.reply_to[3], "d@x.org");
}

static void
test_reply_to_too_many_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Reply-To:",
		"Reply-To: a@x.org, b@x.org, c@x.org, d@x.org, e@x.org"),
		ACME_SMIME_MAIL_BAD_REPLY_TO);
}

static void
test_reply_to_unparsable_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Reply-To:", "Reply-To: nobody"),
		ACME_SMIME_MAIL_BAD_REPLY_TO);
}

static void
test_reply_to_empty_group_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Reply-To:",
		"Reply-To: undisclosed-recipients:;"), ACME_SMIME_MAIL_BAD_REPLY_TO);
}

static void
test_reply_to_eight_bit_address_refused(void **state)
{
	(void)state;
	/* Parsable (RFC 6532), but our 7-bit response could not reach it. */
	assert_int_equal(check_variant("Reply-To:",
		"Reply-To: v\xc3\xa9rif@example.org"), ACME_SMIME_MAIL_BAD_REPLY_TO);
}

static void
test_reply_to_angle_in_quoted_local_part_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Reply-To:",
		"Reply-To: \"a>b\"@example.org"), ACME_SMIME_MAIL_BAD_REPLY_TO);
}

static void
test_reply_to_quoted_local_part_answered(void **state)
{
	static char out_mail[2048];
	acme_smime_response r;

	(void)state;
	assert_int_equal(check_variant("Reply-To:",
		"Reply-To: \"acme validator\"@example.org"), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.reply_to[0], "\"acme validator\"@example.org");
	memset(&r, 0, sizeof r);
	r.from = ME;
	r.challenge = &verdict;
	r.digest = DIGEST;
	assert_true(acme_smime_write_response_mail(out_mail, sizeof out_mail,
		&r) > 0);
	assert_non_null(strstr(out_mail,
		"\r\nTo: <\"acme validator\"@example.org>\r\n"));
}

/* ------------------------------------------------------------------------
 * Message-ID and References
 * ---------------------------------------------------------------------- */

static void
test_message_id_without_brackets_dropped(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Message-ID:", "Message-ID: abc@example.org"),
		ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.message_id, "");
}

static void
test_message_id_with_space_inside_dropped(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Message-ID:",
		"Message-ID: <abc @example.org>"), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.message_id, "");
}

static void
test_message_id_folded_and_padded_kept(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Message-ID:",
		"Message-Id:\r\n   <m1@example.org>  "), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.message_id, "<m1@example.org>");
}

static void
test_references_whitespace_collapsed(void **state)
{
	(void)state;
	assert_int_equal(check_variant("References:",
		"References:  <a@x>\t <b@x>\r\n\t<c@x>  "), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.references, "<a@x> <b@x> <c@x>");
}

static void
test_references_with_eight_bit_bytes_dropped(void **state)
{
	(void)state;
	assert_int_equal(check_variant("References:",
		"References: <a@x> <\xc3\xa9@x>"), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.references, "");
}

static void
test_references_duplicate_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("References:",
		"References: <a@x>\r\nReferences: <b@x>"),
		ACME_SMIME_MAIL_DUPLICATE_FIELD);
}

/* ------------------------------------------------------------------------
 * Header structure
 * ---------------------------------------------------------------------- */

static void
test_duplicate_subject_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Subject:",
		"Subject: ACME: " TOKEN1 "\r\nsubject: ACME: " TOKEN1),
		ACME_SMIME_MAIL_DUPLICATE_FIELD);
}

static void
test_duplicate_from_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("From:",
		"From: " CA "\r\nFROM: evil@example.net"),
		ACME_SMIME_MAIL_DUPLICATE_FIELD);
}

static void
test_examined_field_over_limit_refused(void **state)
{
	static char line[ACME_SMIME_MAX_HEADER + 64];
	size_t n = strlen("Subject: ACME: " TOKEN1);

	(void)state;
	strcpy(line, "Subject: ACME: " TOKEN1);
	memset(line + n, ' ', ACME_SMIME_MAX_HEADER);
	line[n + ACME_SMIME_MAX_HEADER] = '\0';
	assert_int_equal(check_variant("Subject:", line),
		ACME_SMIME_MAIL_HEADER_TOO_LONG);
}

static void
test_examined_field_over_limit_by_folding_refused(void **state)
{
	static char line[4 * ACME_SMIME_MAX_HEADER];
	size_t n = 0, unfolded;

	(void)state;
	n += (size_t)sprintf(line, "Subject: ACME: " TOKEN1);
	unfolded = n - strlen("Subject:");
	while (unfolded <= ACME_SMIME_MAX_HEADER) {
		memcpy(line + n, "\r\n   ", 5);
		n += 5;
		unfolded += 3;
	}
	line[n] = '\0';
	assert_int_equal(check_variant("Subject:", line),
		ACME_SMIME_MAIL_HEADER_TOO_LONG);
}

static void
test_examined_field_at_limit_accepted(void **state)
{
	static char line[ACME_SMIME_MAX_HEADER + 64];
	size_t n = strlen("Subject: ACME: " TOKEN1), value = n - strlen("Subject:");

	(void)state;
	strcpy(line, "Subject: ACME: " TOKEN1);
	memset(line + n, ' ', ACME_SMIME_MAX_HEADER - value);
	line[n + ACME_SMIME_MAX_HEADER - value] = '\0';
	assert_int_equal(check_variant("Subject:", line), ACME_SMIME_MAIL_OK);
}

static void
test_long_skipped_field_accepted(void **state)
{
	static char line[8 * ACME_SMIME_MAX_HEADER];

	(void)state;
	strcpy(line, "X-Padding: ");
	memset(line + 11, 'p', sizeof line - 12);
	line[sizeof line - 1] = '\0';
	assert_int_equal(check_variant("X-Padding:", line), ACME_SMIME_MAIL_OK);
}

static void
test_nul_in_header_refused(void **state)
{
	(void)state;
	make_variant("Content-Type:", "Content-Type: text/plain");
	memcpy(strstr(variant_buf, "text/plain"), "text\0plain", 10);
	assert_int_equal(check_buf(variant_buf, variant_len, ME, CA,
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_MALFORMED);
}

static void
test_nul_in_body_ignored(void **state)
{
	char *body;

	(void)state;
	make_variant("Content-Type:", "Content-Type: text/plain");
	body = strstr(variant_buf, "\r\n\r\n") + 4;
	body[3] = '\0';
	assert_int_equal(check_buf(variant_buf, variant_len, ME, CA,
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_OK);
}

static void
test_line_without_colon_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Content-Type:", "Content-Type text/plain"),
		ACME_SMIME_MAIL_MALFORMED);
}

static void
test_space_inside_field_name_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Content-Type:",
		"From nobody Sat Dec  5 10:08:55 2020"), ACME_SMIME_MAIL_MALFORMED);
}

static void
test_space_before_colon_tolerated(void **state)
{
	(void)state;
	expect_token1_with_subject("Subject : ACME: " TOKEN1);
}

static void
test_bare_cr_in_header_refused(void **state)
{
	(void)state;
	assert_int_equal(check_variant("Content-Type:",
		"Content-Type: text/plain\rSubject: ACME: x"),
		ACME_SMIME_MAIL_MALFORMED);
}

static void
test_continuation_before_any_field_refused(void **state)
{
	(void)state;
	assert_int_equal(check_text(" Subject: ACME: " TOKEN1 "\r\n"),
		ACME_SMIME_MAIL_MALFORMED);
}

static void
test_lf_line_ends_accepted(void **state)
{
	size_t i, n = 0;

	(void)state;
	load(ACME4J_MAIL "challenge.eml");
	for (i = 0; i < mail_len; i++) {
		if (mail_buf[i] != '\r') {
			variant_buf[n++] = mail_buf[i];
		}
	}
	assert_int_equal(check_buf(variant_buf, n, ME, CA,
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.token_part1, TOKEN1);
	assert_string_equal(verdict.reply_to[0], "acme-validator@example.org");
}

static void
test_mail_without_body_accepted(void **state)
{
	(void)state;
	load(ACME4J_MAIL "challenge.eml");
	mail_len = (size_t)(strstr(mail_buf, "\r\n\r\n") - mail_buf);
	assert_int_equal(check_buf(mail_buf, mail_len, ME, CA,
		ACME_SMIME_MAIL_ALLOW_UNSIGNED), ACME_SMIME_MAIL_OK);
	assert_string_equal(verdict.message_id, "<A2299BB.FF7788@example.org>");
}

static void
test_empty_mail_refused_as_malformed(void **state)
{
	(void)state;
	assert_int_equal(check_buf("", 0, ME, CA, ACME_SMIME_MAIL_ALLOW_UNSIGNED),
		ACME_SMIME_MAIL_MALFORMED);
}

static void
test_mail_starting_with_empty_line_refused_as_malformed(void **state)
{
	(void)state;
	assert_int_equal(check_text("\r\nSubject: ACME: " TOKEN1 "\r\n"),
		ACME_SMIME_MAIL_MALFORMED);
}

static void
test_fields_after_empty_line_not_header(void **state)
{
	(void)state;
	assert_int_equal(check_text("Subject: ACME: " TOKEN1 "\r\n\r\n"
		"From: " CA "\r\n"), ACME_SMIME_MAIL_NO_FROM);
}

static void
test_check_order_reports_subject_before_from(void **state)
{
	(void)state;
	assert_int_equal(check_text("Subject: Re: ACME: " TOKEN1 "\r\n"),
		ACME_SMIME_MAIL_REPLY_SUBJECT);
}

/* ------------------------------------------------------------------------
 * Arguments and reasons
 * ---------------------------------------------------------------------- */

static void
test_null_verdict_is_invalid(void **state)
{
	acme_smime_pending p;

	(void)state;
	memset(&p, 0, sizeof p);
	p.identifier = ME;
	p.from = CA;
	assert_int_equal(acme_smime_check_challenge_mail("x", 1, &p, NULL),
		ACME_SMIME_ERR_INVALID);
}

static void
test_incomplete_pending_is_invalid(void **state)
{
	acme_smime_pending empty_from, null_id;

	(void)state;
	memset(&empty_from, 0, sizeof empty_from);
	empty_from.identifier = ME;
	empty_from.from = "";
	memset(&null_id, 0, sizeof null_id);
	null_id.from = CA;
	assert_int_equal(acme_smime_check_challenge_mail("x", 1, NULL, &verdict),
		ACME_SMIME_ERR_INVALID);
	assert_int_equal(verdict.reason, ACME_SMIME_MAIL_BAD_ARGUMENT);
	verdict.reason = 0;
	assert_int_equal(acme_smime_check_challenge_mail("x", 1, &empty_from,
		&verdict), ACME_SMIME_ERR_INVALID);
	assert_int_equal(verdict.reason, ACME_SMIME_MAIL_BAD_ARGUMENT);
	verdict.reason = 0;
	assert_int_equal(acme_smime_check_challenge_mail("x", 1, &null_id,
		&verdict), ACME_SMIME_ERR_INVALID);
	assert_int_equal(verdict.reason, ACME_SMIME_MAIL_BAD_ARGUMENT);
	assert_int_equal(acme_smime_check_challenge_mail(NULL, 0, &empty_from,
		&verdict), ACME_SMIME_ERR_INVALID);
}

static void
test_refusal_leaves_no_partial_result(void **state)
{
	(void)state;
	assert_int_equal(check_variant("To:", "To: someone@example.com"),
		ACME_SMIME_MAIL_TO_MISMATCH);
	assert_string_equal(verdict.token_part1, "");
	assert_string_equal(verdict.reply_to[0], "");
}

static void
test_every_reason_has_distinct_text(void **state)
{
	const char *text[ACME_SMIME_MAIL_REASON_COUNT];
	int i, j;

	(void)state;
	for (i = 0; i < ACME_SMIME_MAIL_REASON_COUNT; i++) {
		text[i] = acme_smime_mail_reason_text(i);
		assert_non_null(text[i]);
		assert_true(text[i][0] != '\0');
		assert_string_not_equal(text[i], "unknown reason");
		for (j = 0; j < i; j++) {
			assert_string_not_equal(text[i], text[j]);
		}
	}
	assert_string_equal(acme_smime_mail_reason_text(-1), "unknown reason");
	assert_string_equal(acme_smime_mail_reason_text(
		ACME_SMIME_MAIL_REASON_COUNT), "unknown reason");
}

/* ------------------------------------------------------------------------
 * The response mail
 * ---------------------------------------------------------------------- */

static const char expected_response[] =
	"From: <alexey@example.com>\r\n"
	"To: <acme-validator@example.org>\r\n"
	"Subject: Re: ACME: LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME=\r\n"
	"Date: Sat, 5 Dec 2020 11:01:45 +0000\r\n"
	"Message-ID: <r1@example.com>\r\n"
	"In-Reply-To: <A2299BB.FF7788@example.org>\r\n"
	"References: <A2299BB.FF7788@example.org>\r\n"
	"Auto-Submitted: auto-replied\r\n"
	"MIME-Version: 1.0\r\n"
	"Content-Type: text/plain; charset=US-ASCII\r\n"
	"Content-Transfer-Encoding: 7bit\r\n"
	"\r\n"
	"-----BEGIN ACME RESPONSE-----\r\n"
	"AjXW0h9_4YMP6Sv-9tKQNUrapI0us7ayBn0nCGOkUsk\r\n"
	"-----END ACME RESPONSE-----\r\n";

static acme_smime_mail_verdict challenge;
static acme_smime_response response;
static char out[8192];

/* The accepted acme4j challenge and the response of the test vector. */
static int
setup_response(void **state)
{
	(void)state;
	load(ACME4J_MAIL "challenge.eml");
	check_buf(mail_buf, mail_len, ME, CA, ACME_SMIME_MAIL_ALLOW_UNSIGNED);
	assert_int_equal(verdict.reason, ACME_SMIME_MAIL_OK);
	challenge = verdict;
	response.from = ME;
	response.challenge = &challenge;
	response.digest = DIGEST;
	response.message_id = "<r1@example.com>";
	response.date = 1607166105;
	return 0;
}

static int
write_response(void)
{
	return acme_smime_write_response_mail(out, sizeof out, &response);
}

static void
assert_crlf_only(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] == '\n') {
			assert_true(i > 0 && s[i - 1] == '\r');
		}
		if (s[i] == '\r') {
			assert_true(s[i + 1] == '\n');
		}
	}
}

static void
test_response_matches_expected_text(void **state)
{
	(void)state;
	assert_int_equal(write_response(), (int)strlen(expected_response));
	assert_string_equal(out, expected_response);
	assert_crlf_only(out);
}

static void
test_response_without_date_has_no_date_field(void **state)
{
	(void)state;
	response.date = 0;
	assert_true(write_response() > 0);
	assert_null(strstr(out, "Date:"));
	assert_crlf_only(out);
}

static void
test_response_without_message_id_has_no_message_id_field(void **state)
{
	(void)state;
	response.message_id = NULL;
	assert_true(write_response() > 0);
	assert_null(strstr(out, "Message-ID:"));
	assert_non_null(strstr(out, "In-Reply-To:"));
}

static void
test_response_to_mail_without_message_id_has_no_threading(void **state)
{
	(void)state;
	challenge.message_id[0] = '\0';
	assert_true(write_response() > 0);
	assert_null(strstr(out, "In-Reply-To:"));
	assert_null(strstr(out, "References:"));
	assert_crlf_only(out);
}

static void
test_response_references_append_message_id(void **state)
{
	(void)state;
	strcpy(challenge.references, "<a@x> <b@x>");
	assert_true(write_response() > 0);
	assert_non_null(strstr(out,
		"\r\nReferences: <a@x> <b@x> <A2299BB.FF7788@example.org>\r\n"));
}

static void
test_response_long_references_folded(void **state)
{
	char *p, *line;

	(void)state;
	strcpy(challenge.references,
		"<aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.org> "
		"<bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb@example.org>");
	assert_true(write_response() > 0);
	line = strstr(out, "\r\nReferences: ");
	assert_non_null(line);
	assert_non_null(strstr(out, "\r\nReferences: <aaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaa@example.org>\r\n <bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb@example.org>"
		" <A2299BB.FF7788@example.org>\r\n"));
	for (p = out; (line = strstr(p, "\r\n")) != NULL; p = line + 2) {
		assert_true(line - p <= 78);
	}
}

static void
test_response_goes_to_every_reply_address(void **state)
{
	(void)state;
	challenge.reply_count = 2;
	strcpy(challenge.reply_to[1], "second@example.org");
	assert_true(write_response() > 0);
	assert_non_null(strstr(out,
		"\r\nTo: <acme-validator@example.org>, <second@example.org>\r\n"));
}

static void
test_response_long_to_line_folded(void **state)
{
	(void)state;
	challenge.reply_count = 3;
	strcpy(challenge.reply_to[1], "second-validator-mailbox@example.org");
	strcpy(challenge.reply_to[2], "third@example.org");
	assert_true(write_response() > 0);
	assert_non_null(strstr(out, "\r\nTo: <acme-validator@example.org>, "
		"<second-validator-mailbox@example.org>,\r\n <third@example.org>\r\n"));
}

static void
test_response_exact_buffer_accepted(void **state)
{
	int len;

	(void)state;
	len = write_response();
	assert_true(len > 0);
	assert_int_equal(acme_smime_write_response_mail(out, (size_t)len + 1,
		&response), len);
	assert_string_equal(out, expected_response);
}

static void
test_response_buffer_one_byte_short_refused(void **state)
{
	int len;

	(void)state;
	len = write_response();
	assert_true(len > 0);
	assert_int_equal(acme_smime_write_response_mail(out, (size_t)len,
		&response), ACME_SMIME_ERR_BUFFER);
	assert_int_equal(acme_smime_write_response_mail(out, 0, &response),
		ACME_SMIME_ERR_BUFFER);
}

static void
test_response_short_digest_invalid(void **state)
{
	(void)state;
	response.digest = "AjXW0h9_4YMP6Sv-9tKQNUrapI0us7ayBn0nCGOkUs";
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
}

static void
test_response_long_digest_invalid(void **state)
{
	(void)state;
	response.digest = DIGEST "A";
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
}

static void
test_response_padded_digest_invalid(void **state)
{
	(void)state;
	response.digest = "AjXW0h9_4YMP6Sv-9tKQNUrapI0us7ayBn0nCGOkUs=";
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
}

static void
test_response_line_break_in_from_invalid(void **state)
{
	(void)state;
	response.from = "alexey@example.com\r\nBcc: x@example.net";
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
	response.from = "alexey@example.com\n";
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
}

static void
test_response_from_not_addr_spec_invalid(void **state)
{
	(void)state;
	response.from = "Alexey <alexey@example.com>";
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
	response.from = "alexey";
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
	response.from = "a@b@example.com";
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
}

static void
test_response_bad_message_id_invalid(void **state)
{
	(void)state;
	response.message_id = "r1@example.com";
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
	response.message_id = "<r1@example.com>\r\nBcc: x@y";
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
}

static void
test_response_without_reply_address_invalid(void **state)
{
	(void)state;
	challenge.reply_count = 0;
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
	challenge.reply_count = ACME_SMIME_MAX_REPLY_TO + 1;
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
}

static void
test_response_injected_reply_address_invalid(void **state)
{
	(void)state;
	strcpy(challenge.reply_to[0], "a@example.org>\r\nBcc: <x@y");
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
}

static void
test_response_bad_token_invalid(void **state)
{
	(void)state;
	strcpy(challenge.token_part1, "Lg Ye");
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
	challenge.token_part1[0] = '\0';
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
}

static void
test_response_null_arguments_invalid(void **state)
{
	(void)state;
	assert_int_equal(acme_smime_write_response_mail(NULL, 10, &response),
		ACME_SMIME_ERR_INVALID);
	assert_int_equal(acme_smime_write_response_mail(out, sizeof out, NULL),
		ACME_SMIME_ERR_INVALID);
	response.challenge = NULL;
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
}

static void
test_response_date_beyond_year_9999_invalid(void **state)
{
	(void)state;
	response.date = MAIL_DATE_MAX + 1;
	assert_int_equal(write_response(), ACME_SMIME_ERR_INVALID);
}

static void
test_response_largest_fits_proposed_bound(void **state)
{
	static char from[ACME_SMIME_MAX_ADDR + 1];
	size_t i;
	int len;
	char *refs = challenge.references;

	(void)state;
	challenge.reply_count = ACME_SMIME_MAX_REPLY_TO;
	for (i = 0; i < ACME_SMIME_MAX_REPLY_TO; i++) {
		memset(challenge.reply_to[i], 'r', ACME_SMIME_MAX_ADDR);
		challenge.reply_to[i][ACME_SMIME_MAX_ADDR - 2] = '@';
		challenge.reply_to[i][ACME_SMIME_MAX_ADDR] = '\0';
	}
	memset(challenge.token_part1, 'A', ACME_SMIME_MAX_TOKEN);
	challenge.token_part1[ACME_SMIME_MAX_TOKEN] = '\0';
	memset(challenge.message_id, 'm', ACME_SMIME_MAX_MSGID);
	challenge.message_id[0] = '<';
	challenge.message_id[ACME_SMIME_MAX_MSGID - 1] = '>';
	challenge.message_id[ACME_SMIME_MAX_MSGID] = '\0';
	/* Items just long enough that every one is folded. */
	memset(refs, 'x', ACME_SMIME_MAX_REFERENCES);
	for (i = 70; i < ACME_SMIME_MAX_REFERENCES; i += 71) {
		refs[i] = ' ';
	}
	refs[ACME_SMIME_MAX_REFERENCES] = '\0';
	memset(from, 'f', ACME_SMIME_MAX_ADDR);
	from[64] = '@';
	memcpy(from + ACME_SMIME_MAX_ADDR - 4, ".org", 5);
	response.from = from;
	response.message_id = challenge.message_id;
	response.date = MAIL_DATE_MAX;
	len = write_response();
	assert_true(len > 0);
	assert_true((size_t)len + 1 <= ACME_SMIME_RESPONSE_MAIL_MAX);
	assert_crlf_only(out);
	assert_non_null(strstr(out, "Date: Fri, 31 Dec 9999 23:59:59 +0000\r\n"));
}

static void
expect_date(uint64_t t, const char *line)
{
	char buf[64];
	textbuf tb;

	tb_init(&tb, buf, sizeof buf);
	put_date_line(&tb, t);
	assert_true(tb_finish(&tb) > 0);
	assert_string_equal(buf, line);
}

static void
test_date_lines_computed_in_utc(void **state)
{
	(void)state;
	expect_date(1607166105, "Date: Sat, 5 Dec 2020 11:01:45 +0000\r\n");
	expect_date(1, "Date: Thu, 1 Jan 1970 00:00:01 +0000\r\n");
	expect_date(951782400, "Date: Tue, 29 Feb 2000 00:00:00 +0000\r\n");
	expect_date(1709164800, "Date: Thu, 29 Feb 2024 00:00:00 +0000\r\n");
	expect_date(4102444800u, "Date: Fri, 1 Jan 2100 00:00:00 +0000\r\n");
	expect_date(4107542400u, "Date: Mon, 1 Mar 2100 00:00:00 +0000\r\n");
	expect_date(MAIL_DATE_MAX, "Date: Fri, 31 Dec 9999 23:59:59 +0000\r\n");
}

#define RESPONSE_TEST(t) cmocka_unit_test_setup(t, setup_response)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_acme4j_challenge_accepted_when_unsigned_allowed),
		cmocka_unit_test(test_acme4j_challenge_refused_as_unsigned_by_strict_policy),
		cmocka_unit_test(test_acme4j_challenge_refused_for_mismatch_json_sender),
		cmocka_unit_test(test_rfc_figure1_accepted_and_reply_goes_to_from),
		cmocka_unit_test(test_acme4j_valid_mail_outer_header_accepted),
		cmocka_unit_test(test_acme4j_valid_mail_refused_by_strict_policy_without_smime_setup),
		cmocka_unit_test(test_acme4j_invalid_signed_mail_outer_header_accepted),
		cmocka_unit_test(test_acme4j_invalid_nosan_outer_header_accepted),
		cmocka_unit_test(test_acme4j_invalid_cert_mismatch_refused_for_from),
		cmocka_unit_test(test_acme4j_tampered_from_refused),
		cmocka_unit_test(test_acme4j_tampered_to_refused),
		cmocka_unit_test(test_acme4j_tampered_subject_refused_as_short_token),
		cmocka_unit_test(test_acme4j_rfc7508_mail_accepted),

		cmocka_unit_test(test_subject_b_encoded_word_decoded),
		cmocka_unit_test(test_subject_plain_folded_across_lines),
		cmocka_unit_test(test_subject_whitespace_between_encoded_words_dropped),
		cmocka_unit_test(test_subject_lowercase_encoding_and_charset_accepted),
		cmocka_unit_test(test_subject_language_tag_ignored),
		cmocka_unit_test(test_subject_encoded_word_after_plain_label),
		cmocka_unit_test(test_subject_decode_keeps_space_between_word_and_text),
		cmocka_unit_test(test_subject_iso_8859_1_refused_as_bad_charset),
		cmocka_unit_test(test_subject_bad_q_hex_refused),
		cmocka_unit_test(test_subject_truncated_q_escape_refused),
		cmocka_unit_test(test_subject_q_control_character_refused),
		cmocka_unit_test(test_subject_b_nul_byte_refused),
		cmocka_unit_test(test_subject_bad_base64_refused),
		cmocka_unit_test(test_subject_unterminated_encoded_word_refused),
		cmocka_unit_test(test_subject_unknown_encoding_refused),

		cmocka_unit_test(test_subject_re_prefix_refused_as_reply),
		cmocka_unit_test(test_subject_uppercase_re_prefix_refused_as_reply),
		cmocka_unit_test(test_subject_fwd_prefix_refused_as_reply),
		cmocka_unit_test(test_subject_fw_prefix_refused_as_reply),
		cmocka_unit_test(test_subject_encoded_reply_prefix_refused_as_reply),
		cmocka_unit_test(test_subject_without_acme_label_refused),
		cmocka_unit_test(test_subject_lowercase_acme_label_accepted),
		cmocka_unit_test(test_subject_missing_refused),
		cmocka_unit_test(test_subject_empty_token_refused),
		cmocka_unit_test(test_subject_token_with_plus_refused),
		cmocka_unit_test(test_subject_token_with_misplaced_padding_refused),
		cmocka_unit_test(test_subject_short_token_refused),
		cmocka_unit_test(test_subject_sixteen_byte_token_accepted),
		cmocka_unit_test(test_subject_token_at_limit_accepted),
		cmocka_unit_test(test_subject_token_over_limit_refused),

		cmocka_unit_test(test_auto_submitted_missing_refused),
		cmocka_unit_test(test_auto_submitted_missing_tolerated_by_policy),
		cmocka_unit_test(test_auto_submitted_no_refused),
		cmocka_unit_test(test_auto_submitted_no_refused_even_by_relaxed_policy),
		cmocka_unit_test(test_auto_submitted_auto_replied_refused),
		cmocka_unit_test(test_auto_submitted_any_case_accepted),
		cmocka_unit_test(test_auto_submitted_with_comments_and_parameters_accepted),
		cmocka_unit_test(test_auto_submitted_duplicate_refused),

		cmocka_unit_test(test_from_display_name_and_comment_accepted),
		cmocka_unit_test(test_from_domain_compared_without_case),
		cmocka_unit_test(test_from_local_part_compared_with_case),
		cmocka_unit_test(test_from_two_mailboxes_refused),
		cmocka_unit_test(test_from_group_refused),
		cmocka_unit_test(test_from_unclosed_angle_refused),
		cmocka_unit_test(test_from_missing_refused),
		cmocka_unit_test(test_from_with_cfws_inside_addr_spec_accepted),
		cmocka_unit_test(test_addr_spec_extracted_without_cfws),

		cmocka_unit_test(test_to_without_identifier_refused),
		cmocka_unit_test(test_to_missing_refused),
		cmocka_unit_test(test_to_unparsable_refused),
		cmocka_unit_test(test_to_empty_refused),
		cmocka_unit_test(test_to_identifier_among_several_accepted),
		cmocka_unit_test(test_to_group_syntax_accepted),
		cmocka_unit_test(test_to_unclosed_group_refused),
		cmocka_unit_test(test_to_quoted_local_part_matched),
		cmocka_unit_test(test_to_domain_compared_without_case),
		cmocka_unit_test(test_to_local_part_compared_with_case),
		cmocka_unit_test(test_to_comments_nested_too_deep_refused),
		cmocka_unit_test(test_to_address_over_limit_refused),
		cmocka_unit_test(test_to_obsolete_route_refused),

		cmocka_unit_test(test_reply_to_two_addresses_kept),
		cmocka_unit_test(test_reply_to_at_limit_kept),
		cmocka_unit_test(test_reply_to_too_many_refused),
		cmocka_unit_test(test_reply_to_unparsable_refused),
		cmocka_unit_test(test_reply_to_empty_group_refused),
		cmocka_unit_test(test_reply_to_eight_bit_address_refused),
		cmocka_unit_test(test_reply_to_angle_in_quoted_local_part_refused),
		cmocka_unit_test(test_reply_to_quoted_local_part_answered),

		cmocka_unit_test(test_message_id_without_brackets_dropped),
		cmocka_unit_test(test_message_id_with_space_inside_dropped),
		cmocka_unit_test(test_message_id_folded_and_padded_kept),
		cmocka_unit_test(test_references_whitespace_collapsed),
		cmocka_unit_test(test_references_with_eight_bit_bytes_dropped),
		cmocka_unit_test(test_references_duplicate_refused),

		cmocka_unit_test(test_duplicate_subject_refused),
		cmocka_unit_test(test_duplicate_from_refused),
		cmocka_unit_test(test_examined_field_over_limit_refused),
		cmocka_unit_test(test_examined_field_over_limit_by_folding_refused),
		cmocka_unit_test(test_examined_field_at_limit_accepted),
		cmocka_unit_test(test_long_skipped_field_accepted),
		cmocka_unit_test(test_nul_in_header_refused),
		cmocka_unit_test(test_nul_in_body_ignored),
		cmocka_unit_test(test_line_without_colon_refused),
		cmocka_unit_test(test_space_inside_field_name_refused),
		cmocka_unit_test(test_space_before_colon_tolerated),
		cmocka_unit_test(test_bare_cr_in_header_refused),
		cmocka_unit_test(test_continuation_before_any_field_refused),
		cmocka_unit_test(test_lf_line_ends_accepted),
		cmocka_unit_test(test_mail_without_body_accepted),
		cmocka_unit_test(test_empty_mail_refused_as_malformed),
		cmocka_unit_test(test_mail_starting_with_empty_line_refused_as_malformed),
		cmocka_unit_test(test_fields_after_empty_line_not_header),
		cmocka_unit_test(test_check_order_reports_subject_before_from),

		cmocka_unit_test(test_null_verdict_is_invalid),
		cmocka_unit_test(test_incomplete_pending_is_invalid),
		cmocka_unit_test(test_refusal_leaves_no_partial_result),
		cmocka_unit_test(test_every_reason_has_distinct_text),

		RESPONSE_TEST(test_response_matches_expected_text),
		RESPONSE_TEST(test_response_without_date_has_no_date_field),
		RESPONSE_TEST(test_response_without_message_id_has_no_message_id_field),
		RESPONSE_TEST(test_response_to_mail_without_message_id_has_no_threading),
		RESPONSE_TEST(test_response_references_append_message_id),
		RESPONSE_TEST(test_response_long_references_folded),
		RESPONSE_TEST(test_response_goes_to_every_reply_address),
		RESPONSE_TEST(test_response_long_to_line_folded),
		RESPONSE_TEST(test_response_exact_buffer_accepted),
		RESPONSE_TEST(test_response_buffer_one_byte_short_refused),
		RESPONSE_TEST(test_response_short_digest_invalid),
		RESPONSE_TEST(test_response_long_digest_invalid),
		RESPONSE_TEST(test_response_padded_digest_invalid),
		RESPONSE_TEST(test_response_line_break_in_from_invalid),
		RESPONSE_TEST(test_response_from_not_addr_spec_invalid),
		RESPONSE_TEST(test_response_bad_message_id_invalid),
		RESPONSE_TEST(test_response_without_reply_address_invalid),
		RESPONSE_TEST(test_response_injected_reply_address_invalid),
		RESPONSE_TEST(test_response_bad_token_invalid),
		RESPONSE_TEST(test_response_null_arguments_invalid),
		RESPONSE_TEST(test_response_date_beyond_year_9999_invalid),
		RESPONSE_TEST(test_response_largest_fits_proposed_bound),
		cmocka_unit_test(test_date_lines_computed_in_utc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
