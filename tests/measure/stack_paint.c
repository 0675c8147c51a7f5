/*
 * Peak stack of each public helper, by stack painting: the call runs on a
 * ucontext stack filled with a pattern, and the deepest overwritten byte
 * gives its peak use (BearSSL included). Run with LD_BIND_NOW=1 so lazy
 * symbol binding is not counted.
 *
 *   build/measure/stack_paint     prints one line per helper
 */
#define _XOPEN_SOURCE 700
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include "acme_smime.h"

#define STACK_SIZE (64 * 1024)
#define PATTERN 0xA5

static ucontext_t uc_main, uc_work;
static void (*current)(void);
static int failures;

static acme_smime_key key;
static char tp[ACME_SMIME_THUMBPRINT_SIZE];
static char digest[ACME_SMIME_DIGEST_SIZE];
static char jws[1024], resp_mail[2048];
static unsigned char csr[512];
static acme_smime_mail_verdict verdict;
static acme_smime_challenge challenge;
static char mail[8192];
static size_t mail_len;

static int
entropy(void *user, unsigned char *buf, size_t len)
{
	(void)user;
	memset(buf, 0x5C, len);
	return 0;
}

static void
check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "FAILED: %s\n", what);
		failures++;
	}
}

static void
run_key_generate(void)
{
	check(acme_smime_key_generate(&key, ACME_SMIME_KEY_P256, entropy, NULL) == 0,
	    "key_generate");
}

static void
run_thumbprint(void)
{
	check(acme_smime_jwk_thumbprint(&key, tp) == 0, "thumbprint");
}

static void
run_jws_sign(void)
{
	check(acme_smime_jws_sign(jws, sizeof jws, &key, "nonce", "https://ca.test/acme/order",
	    NULL, "{}", 2) > 0, "jws_sign");
}

static void
run_csr_write(void)
{
	const acme_smime_identifier id = { ACME_SMIME_ID_EMAIL, "alexey@example.com" };

	check(acme_smime_csr_write(csr, sizeof csr, &key, &id, 1, ACME_SMIME_KU_DUAL) > 0,
	    "csr_write");
}

static void
run_digest(void)
{
	check(acme_smime_rfc8823_digest("LgYemJLy3F1LDkiJrdIGbEzyFJyOyf6vBdyZ1TG3sME=",
	    "DGyRejmCefe7v4NfDGDKfA", tp, ACME_SMIME_CONCAT_BYTES, digest) == 0, "digest");
}

static void
run_parse_authorization(void)
{
	static const char json[] = "{\"status\":\"pending\",\"identifier\":{\"type\":\"email\","
	    "\"value\":\"alexey@example.com\"},\"challenges\":[{\"type\":\"email-reply-00\","
	    "\"url\":\"https://ca.test/chall/1\",\"status\":\"pending\","
	    "\"from\":\"acme-generator@example.org\",\"token\":\"DGyRejmCefe7v4NfDGDKfA\"}]}";

	check(acme_smime_parse_authorization(json, sizeof json - 1, "email-reply-00",
	    &challenge) == 0, "parse_authorization");
}

static void
run_check_mail(void)
{
	acme_smime_pending p;

	memset(&p, 0, sizeof p);
	p.identifier = "alexey@example.com";
	p.from = "acme-generator@example.org";
	p.policy = ACME_SMIME_MAIL_ALLOW_UNSIGNED;
	check(acme_smime_check_challenge_mail(mail, mail_len, &p, &verdict) == 0,
	    "check_challenge_mail");
}

static void
run_write_response(void)
{
	acme_smime_response r;

	memset(&r, 0, sizeof r);
	r.from = "alexey@example.com";
	r.challenge = &verdict;
	r.digest = digest;
	r.message_id = "<1@example.com>";
	r.date = 1607166105;
	check(acme_smime_write_response_mail(resp_mail, sizeof resp_mail, &r) > 0,
	    "write_response_mail");
}

static void
trampoline(void)
{
	current();
}

static size_t
peak_stack(void (*fn)(void))
{
	static unsigned char stack[STACK_SIZE];
	size_t i;

	memset(stack, PATTERN, sizeof stack);
	current = fn;
	getcontext(&uc_work);
	uc_work.uc_stack.ss_sp = stack;
	uc_work.uc_stack.ss_size = sizeof stack;
	uc_work.uc_link = &uc_main;
	makecontext(&uc_work, trampoline, 0);
	swapcontext(&uc_main, &uc_work);
	for (i = 0; i < sizeof stack && stack[i] == PATTERN; i++) {
	}
	return sizeof stack - i;
}

int
main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} runs[] = {
		{ "acme_smime_key_generate (P-256)", run_key_generate },
		{ "acme_smime_jwk_thumbprint", run_thumbprint },
		{ "acme_smime_jws_sign (ES256, jwk)", run_jws_sign },
		{ "acme_smime_csr_write (1 address)", run_csr_write },
		{ "acme_smime_rfc8823_digest (BYTES)", run_digest },
		{ "acme_smime_parse_authorization", run_parse_authorization },
		{ "acme_smime_check_challenge_mail", run_check_mail },
		{ "acme_smime_write_response_mail", run_write_response },
	};
	FILE *f;
	size_t i;

	f = fopen(argc > 1 ? argv[1] :
	    "tests/vectors/rfc8823/acme4j-smime/email/challenge.eml", "rb");
	if (f == NULL) {
		perror("challenge mail");
		return 2;
	}
	mail_len = fread(mail, 1, sizeof mail, f);
	fclose(f);

	printf("sizeof(acme_smime_key)          %5lu\n", (unsigned long)sizeof(acme_smime_key));
	printf("sizeof(acme_smime_mail_verdict) %5lu\n",
	    (unsigned long)sizeof(acme_smime_mail_verdict));
	printf("sizeof(acme_smime_challenge)    %5lu\n",
	    (unsigned long)sizeof(acme_smime_challenge));
	for (i = 0; i < sizeof runs / sizeof runs[0]; i++) {
		printf("peak stack %-36s %5lu bytes\n", runs[i].name,
		    (unsigned long)peak_stack(runs[i].fn));
	}
	return failures == 0 ? 0 : 1;
}
