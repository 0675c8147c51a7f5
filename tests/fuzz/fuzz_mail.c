/*
 * fuzz_mail.c -- libFuzzer target for the mail section (section 6):
 * acme_smime_check_challenge_mail() on arbitrary bytes under three
 * policies, and acme_smime_write_response_mail() on every accepted verdict.
 */
#include "acme_smime.c"
#include "fuzz_util.h"

#define IDENTIFIER "alexey@example.com"
#define CA_FROM    "acme-generator@example.org"
#define DIGEST     "AjXW0h9_4YMP6Sv-9tKQNUrapI0us7ayBn0nCGOkUsk"
#define OUR_MSGID  "<response-1@example.com>"
#define RFC5322_LINE_MAX 998

static const char body[] =
	"-----BEGIN ACME RESPONSE-----\r\n" DIGEST "\r\n"
	"-----END ACME RESPONSE-----\r\n";

/* No control character (TAB excepted) and no DEL: every verdict string
 * ends up inside a header line of the response. */
static int
no_controls(const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			return 0;
		}
	}
	return 1;
}

static int
is_7bit_text(const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c >= 0x7f || (c < 0x20 && c != '\t')) {
			return 0;
		}
	}
	return 1;
}

static void
check_verdict(const acme_smime_mail_verdict *v)
{
	size_t n, i;

	FUZZ_CHECK(v->reason == ACME_SMIME_MAIL_OK);
	FUZZ_CHECK(fuzz_terminated(v->token_part1, sizeof v->token_part1));
	n = strlen(v->token_part1);
	FUZZ_CHECK(n >= 22 && n <= ACME_SMIME_MAX_TOKEN);   /* >= 128 bits */
	for (i = 0; i < n; i++) {
		FUZZ_CHECK(b64_value((unsigned char)v->token_part1[i], B64_URL) >= 0 ||
		    v->token_part1[i] == '=');
	}
	FUZZ_CHECK(v->reply_count >= 1 && v->reply_count <= ACME_SMIME_MAX_REPLY_TO);
	for (i = 0; i < v->reply_count; i++) {
		FUZZ_CHECK(fuzz_terminated(v->reply_to[i], sizeof v->reply_to[i]));
		FUZZ_CHECK(v->reply_to[i][0] != '\0');
		FUZZ_CHECK(strchr(v->reply_to[i], '@') != NULL);
		FUZZ_CHECK(no_controls(v->reply_to[i]));
	}
	FUZZ_CHECK(fuzz_terminated(v->message_id, sizeof v->message_id));
	n = strlen(v->message_id);
	if (n > 0) {
		FUZZ_CHECK(n >= 3 && v->message_id[0] == '<' &&
		    v->message_id[n - 1] == '>');
		FUZZ_CHECK(no_controls(v->message_id));
	}
	FUZZ_CHECK(fuzz_terminated(v->references, sizeof v->references));
	FUZZ_CHECK(no_controls(v->references));
}

/* CRLF only, 7-bit, lines within RFC 5322's limit, a header of fields and
 * continuation lines, then exactly the RFC 8823 body. */
static void
check_response_text(const char *out, size_t len, const acme_smime_mail_verdict *v,
	uint64_t date)
{
	size_t i, line = 0, hdr_end = 0;
	char subject[ACME_SMIME_MAX_TOKEN + 32];
	const char *p, *e;
	int first = 1;

	FUZZ_CHECK(strlen(out) == len);
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)out[i];

		if (c == '\r') {
			FUZZ_CHECK(i + 1 < len && out[i + 1] == '\n');   /* bare CR */
		} else if (c == '\n') {
			FUZZ_CHECK(i > 0 && out[i - 1] == '\r');         /* bare LF */
			FUZZ_CHECK(line <= RFC5322_LINE_MAX + 1);
			line = 0;
			continue;
		} else {
			FUZZ_CHECK(c >= 0x20 && c < 0x7f);
		}
		line++;
	}
	FUZZ_CHECK(len >= 2 && out[len - 2] == '\r' && out[len - 1] == '\n');

	/* Header lines up to the first empty line. */
	for (p = out; ; p = e + 2) {
		e = strstr(p, "\r\n");
		FUZZ_CHECK(e != NULL);
		if (e == p) {
			hdr_end = (size_t)(e + 2 - out);
			break;
		}
		if (*p == ' ' || *p == '\t') {
			FUZZ_CHECK(!first);                 /* continuation line */
		} else {
			const char *c = memchr(p, ':', (size_t)(e - p));

			FUZZ_CHECK(c != NULL && c > p);     /* field-name ":" */
		}
		first = 0;
	}
	FUZZ_CHECK(strcmp(out + hdr_end, body) == 0);

	snprintf(subject, sizeof subject, "\r\nSubject: Re: ACME: %s\r\n",
	    v->token_part1);
	FUZZ_CHECK(strstr(out, subject) != NULL &&
	    (size_t)(strstr(out, subject) - out) < hdr_end);
	for (i = 0; i < v->reply_count; i++) {
		FUZZ_CHECK(strstr(out, v->reply_to[i]) != NULL);
	}
	if (v->message_id[0] != '\0') {
		FUZZ_CHECK(strstr(out, "In-Reply-To: ") != NULL);
	}
	FUZZ_CHECK((strstr(out, "\r\nDate: ") != NULL) == (date != 0));
	if (date != 0) {
		/* "Date: Www, D Mmm YYYY HH:MM:SS +0000" */
		const char *d = strstr(out, "\r\nDate: ") + 8;
		size_t dl = (size_t)(strstr(d, "\r\n") - d);

		FUZZ_CHECK(dl >= 30 && dl <= 31 && d[3] == ',' &&
		    memcmp(d + dl - 6, " +0000", 6) == 0);
	}
}

/* FNV-1a of the mail: varies the response's Date and Message-ID. */
static uint64_t
mail_hash(const uint8_t *data, size_t size)
{
	uint64_t h = UINT64_C(14695981039346656037);

	while (size-- > 0) {
		h = (h ^ *data++) * UINT64_C(1099511628211);
	}
	return h;
}

static void
check_response(const acme_smime_mail_verdict *v, uint64_t hash)
{
	static const size_t small_sizes[] = { 0, 1, 2 };
	acme_smime_response rsp;
	char *out = malloc(4096), *small;
	size_t sizes[5], k, writable = 1;
	int r, rs;

	FUZZ_CHECK(out != NULL);
	memset(&rsp, 0, sizeof rsp);
	rsp.from = IDENTIFIER;
	rsp.challenge = v;
	rsp.digest = DIGEST;
	/* Any date up to 9999-12-31 (0 = no Date field), with or without
	 * our own Message-ID. */
	rsp.message_id = (hash & 1) ? OUR_MSGID : NULL;
	rsp.date = (hash >> 1) % (UINT64_C(253402300799) + 1);

	r = acme_smime_write_response_mail(out, 4096, &rsp);
	/* The writer is stricter than the checker on what an address may
	 * hold: 7-bit only, no angle brackets. Anything else must be written. */
	for (k = 0; k < v->reply_count; k++) {
		if (!is_7bit_text(v->reply_to[k]) || strpbrk(v->reply_to[k], "<>")) {
			writable = 0;
		}
	}
	if (!writable) {
		FUZZ_CHECK(r >= 0 || r == ACME_SMIME_ERR_INVALID);
	} else {
		FUZZ_CHECK(r >= 0);
	}
	if (r < 0) {
		FUZZ_CHECK(out[0] == '\0');
		free(out);
		return;
	}
	FUZZ_CHECK(r < 4096);
	if (v->reply_count == 1) {
		FUZZ_CHECK(r < 1024);            /* acme_smime.h: 1024 suffice */
	}
	check_response_text(out, (size_t)r, v, rsp.date);

	/* Too small by one, by half, and tiny: refused, nothing overrun. */
	sizes[0] = (size_t)r;
	sizes[1] = (size_t)r / 2;
	for (k = 0; k < ARRAY_LEN(small_sizes); k++) {
		sizes[2 + k] = small_sizes[k];
	}
	for (k = 0; k < ARRAY_LEN(sizes); k++) {
		small = malloc(sizes[k] > 0 ? sizes[k] : 1);
		FUZZ_CHECK(small != NULL);
		if (sizes[k] > 0) {
			memset(small, 'x', sizes[k]);
		}
		rs = acme_smime_write_response_mail(small, sizes[k], &rsp);
		FUZZ_CHECK(rs == ACME_SMIME_ERR_BUFFER);
		if (sizes[k] > 0) {
			FUZZ_CHECK(small[0] == '\0');
		}
		free(small);
	}
	/* Exactly enough room. */
	small = malloc((size_t)r + 1);
	FUZZ_CHECK(small != NULL);
	FUZZ_CHECK(acme_smime_write_response_mail(small, (size_t)r + 1, &rsp) == r);
	FUZZ_CHECK(memcmp(small, out, (size_t)r + 1) == 0);
	free(small);
	free(out);
}

/* Fill the stack below us with a pattern, so that stack bytes copied
 * into a verdict without being written first differ between two calls
 * scribbled with different patterns: the determinism check then catches
 * them whatever the stack held before. */
static __attribute__((noinline)) void
scribble_stack(unsigned char pattern)
{
	volatile unsigned char area[16384];
	size_t i;

	for (i = 0; i < sizeof area; i++) {
		area[i] = pattern;
	}
}

static int
check(const char *mail, size_t len, unsigned policy, acme_smime_mail_verdict *v)
{
	acme_smime_pending pending;
	int r;

	memset(&pending, 0, sizeof pending);
	pending.identifier = IDENTIFIER;
	pending.from = CA_FROM;
	pending.policy = policy;
	r = acme_smime_check_challenge_mail(mail, len, &pending, v);
	if (r == ACME_SMIME_OK) {
		FUZZ_CHECK(v->reason == ACME_SMIME_MAIL_OK);
	} else {
		FUZZ_CHECK(r == ACME_SMIME_ERR_MAIL);
		FUZZ_CHECK(v->reason > ACME_SMIME_MAIL_OK &&
		    v->reason < ACME_SMIME_MAIL_REASON_COUNT &&
		    v->reason != ACME_SMIME_MAIL_BAD_ARGUMENT);
		FUZZ_CHECK(strcmp(acme_smime_mail_reason_text(v->reason),
		    "unknown reason") != 0);
	}
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static acme_smime_mail_verdict strict, relaxed, lax, again;
	const char *mail = (const char *)data;
	int rs, rr, rl;

	scribble_stack(0x5A);
	rs = check(mail, size, 0, &strict);
	rr = check(mail, size, ACME_SMIME_MAIL_ALLOW_UNSIGNED, &relaxed);
	rl = check(mail, size, ACME_SMIME_MAIL_ALLOW_UNSIGNED |
	    ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT, &lax);

	/* Strict never accepts here: no anchors, work buffer, dns_txt hook
	 * or authserv-id, so no proof can hold (fuzz_auth.c has them). */
	FUZZ_CHECK(rs != ACME_SMIME_OK);
	/* ALLOW_UNSIGNED only lifts the last check, authenticity, whose
	 * reasons are UNSIGNED and those after BAD_ARGUMENT. */
	if (strict.reason == ACME_SMIME_MAIL_UNSIGNED ||
	    strict.reason > ACME_SMIME_MAIL_BAD_ARGUMENT) {
		FUZZ_CHECK(rr == ACME_SMIME_OK);
	} else {
		FUZZ_CHECK(relaxed.reason == strict.reason);
	}
	/* ALLOW_NO_AUTOSUBMIT only lifts the absent Auto-Submitted field. */
	if (relaxed.reason == ACME_SMIME_MAIL_NO_AUTO_SUBMITTED) {
		FUZZ_CHECK(lax.reason == ACME_SMIME_MAIL_OK ||
		    lax.reason == ACME_SMIME_MAIL_BAD_REPLY_TO);
	} else {
		FUZZ_CHECK(lax.reason == relaxed.reason);
		if (rr == ACME_SMIME_OK) {
			FUZZ_CHECK(memcmp(&lax, &relaxed, sizeof lax) == 0);
		}
	}
	if (rl == ACME_SMIME_OK) {
		check_verdict(&lax);
		/* Deterministic, even over a differently dirty stack. */
		scribble_stack(0xA5);
		FUZZ_CHECK(check(mail, size, ACME_SMIME_MAIL_ALLOW_UNSIGNED |
		    ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT, &again) == ACME_SMIME_OK);
		FUZZ_CHECK(memcmp(&again, &lax, sizeof lax) == 0);
		check_response(&lax, mail_hash(data, size));
	}
	return 0;
}
