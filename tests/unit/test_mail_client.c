/* Section 10: POP3 and SMTP response parsing, SMTP dot-stuffing and AUTH
 * arguments, the reply's recipients; fed in every chunking. */
#define _POSIX_C_SOURCE 200809L
#include "acme_smime.c"
#include "testutil.h"

static unsigned char work[ACME_SMIME_WORKBUF_SIZE];
static acme_smime_ctx ctx;
static acme_smime_ports ports;

static void
reset(int kind)
{
	memset(&ctx, 0, sizeof ctx);
	memset(&ports, 0, sizeof ports);
	ctx.ports = &ports;
	ctx.work = work;
	ctx.work_size = sizeof work;
	mx_command(&ctx, kind, NULL, NULL, 0);
}

static void
feed(const char *text, size_t step)
{
	size_t len = strlen(text), i = 0;

	while (i < len && ctx.mx_state != MXS_DONE) {
		size_t n = len - i < step ? len - i : step;

		i += mx_parse(&ctx, (const unsigned char *)text + i, n);
	}
}

static void
pop3_status_line_ok_and_err(void **state)
{
	(void)state;
	reset(MX_POP3_LINE);
	feed("+OK Dovecot ready.\r\n", 3);
	assert_int_equal(ctx.mx_state, MXS_DONE);
	assert_true(ctx.mx_ok);
	reset(MX_POP3_LINE);
	feed("-ERR [AUTH] Authentication failed.\r\n", 5);
	assert_int_equal(ctx.mx_state, MXS_DONE);
	assert_false(ctx.mx_ok);
}

static void
pop3_multiline_is_dot_unstuffed_in_every_chunking(void **state)
{
	static const char resp[] = "+OK 120 octets\r\nSubject: x\r\n\r\n..leading dot\r\n"
	    ".\r\n";   /* the terminator; nothing after it is read */
	static const char body[] = "Subject: x\r\n\r\n.leading dot\r\n";
	size_t step;

	(void)state;
	for (step = 1; step < sizeof resp; step++) {
		reset(MX_POP3_MULTI);
		feed(resp, step);
		assert_int_equal(ctx.mx_state, MXS_DONE);
		assert_true(ctx.mx_ok);
		assert_int_equal(ctx.body_len, strlen(body));
		assert_memory_equal(http_area(&ctx), body, strlen(body));
	}
}

static void
pop3_multiline_stops_at_terminator(void **state)
{
	static const char resp[] = "+OK\r\n1 aaa\r\n2 bbb\r\n.\r\n+OK next";
	size_t used;

	(void)state;
	reset(MX_POP3_MULTI);
	used = mx_parse(&ctx, (const unsigned char *)resp, strlen(resp));
	assert_int_equal(ctx.mx_state, MXS_DONE);
	assert_int_equal(used, strlen(resp) - strlen("+OK next"));
	assert_int_equal(ctx.body_len, 14);
}

static void
pop3_multiline_error_has_no_body(void **state)
{
	(void)state;
	reset(MX_POP3_MULTI);
	feed("-ERR no such message\r\n", 4);
	assert_int_equal(ctx.mx_state, MXS_DONE);
	assert_false(ctx.mx_ok);
	assert_int_equal(ctx.body_len, 0);
}

static void
pop3_oversized_body_is_marked_truncated(void **state)
{
	static char big[ACME_SMIME_HTTP_AREA + 100];
	size_t i;

	(void)state;
	reset(MX_POP3_MULTI);
	feed("+OK\r\n", 64);
	for (i = 0; i < sizeof big - 1; i++) {
		big[i] = (i % 70 == 69) ? '\n' : 'x';
	}
	big[sizeof big - 1] = '\0';
	feed(big, 1000);
	feed("\r\n.\r\n", 2);
	assert_int_equal(ctx.mx_state, MXS_DONE);
	assert_true(ctx.mx_truncated);
	assert_true(ctx.body_len < http_area_size(&ctx));
}

static void
smtp_multiline_reply_collects_capabilities(void **state)
{
	static const char resp[] = "250-mail.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n"
	    "250-AUTH LOGIN PLAIN\r\n250 8BITMIME\r\n";
	size_t step;

	(void)state;
	for (step = 1; step < sizeof resp; step++) {
		reset(MX_SMTP);
		feed(resp, step);
		assert_int_equal(ctx.mx_state, MXS_DONE);
		assert_int_equal(ctx.mx_code, 250);
		assert_int_equal(ctx.smtp_caps, CAP_STARTTLS | CAP_AUTH_PLAIN | CAP_AUTH_LOGIN);
	}
}

static void
smtp_auth_capability_words_are_exact(void **state)
{
	(void)state;
	reset(MX_SMTP);
	feed("250-x\r\n250 AUTH XPLAINX CRAM-MD5\r\n", 100);
	assert_int_equal(ctx.smtp_caps, 0);
	reset(MX_SMTP);
	feed("250 auth plain\r\n", 100);
	assert_int_equal(ctx.smtp_caps, CAP_AUTH_PLAIN);
}

static void
smtp_reply_codes_and_garbage(void **state)
{
	(void)state;
	reset(MX_SMTP);
	feed("220 ready\r\n", 3);
	assert_int_equal(ctx.mx_code, 220);
	reset(MX_SMTP);
	feed("554 5.7.1 relay denied\r\n", 7);
	assert_int_equal(ctx.mx_code, 554);
	reset(MX_SMTP);
	feed("hello\r\n", 7);
	assert_int_equal(ctx.mx_state, MXS_DONE);
	assert_int_equal(ctx.mx_code, -1);
	reset(MX_SMTP);
	feed("250\r\n", 7);
	assert_int_equal(ctx.mx_code, 250);
}

static void
dot_stuffing_doubles_leading_dots_and_terminates(void **state)
{
	static const char in[] = ".a\r\nb.\r\n..c\r\n";
	static const char out[] = "..a\r\nb.\r\n...c\r\n.\r\n";
	long n;

	(void)state;
	reset(MX_SMTP);
	memcpy(http_area(&ctx), in, strlen(in));
	n = engine_dot_stuff(&ctx, strlen(in));
	assert_int_equal(n, strlen(out));
	assert_memory_equal(http_area(&ctx), out, strlen(out));
}

static void
auth_plain_argument_is_base64_with_padding(void **state)
{
	static const unsigned char raw[] = "\0user\0pw";

	(void)state;
	reset(MX_SMTP);
	assert_int_equal(mx_command(&ctx, MX_SMTP, "AUTH PLAIN", "", 1), 0);
	assert_int_equal(mx_put_base64(&ctx, raw, 8), 0);
	ctx.line[ctx.req_len] = '\0';
	/* base64 of "\0user\0pw" is AHVzZXIAcHc= */
	assert_string_equal(ctx.line, "AUTH PLAIN AHVzZXIAcHc=\r\n");
	assert_true(ctx.mx_secret);
}

static void
reply_recipients_come_from_the_to_field(void **state)
{
	static const char mail[] = "From: <me@x.test>\r\nTo: <a@ca.test>, <b@ca.test>,\r\n"
	    " <c@ca.test>\r\nSubject: Re: ACME: t <not@this>\r\n\r\nbody <x@y>\r\n";
	char addr[64];

	(void)state;
	reset(MX_SMTP);
	memcpy(http_area(&ctx), mail, strlen(mail));
	ctx.reply_len = strlen(mail);
	assert_true(reply_recipient(&ctx, 0, addr, sizeof addr));
	assert_string_equal(addr, "a@ca.test");
	assert_true(reply_recipient(&ctx, 1, addr, sizeof addr));
	assert_string_equal(addr, "b@ca.test");
	assert_true(reply_recipient(&ctx, 2, addr, sizeof addr));
	assert_string_equal(addr, "c@ca.test");
	assert_false(reply_recipient(&ctx, 3, addr, sizeof addr));
}

static void
commands_are_bounded(void **state)
{
	char longarg[ACME_SMIME_MAX_HEADER_LINE + 10];

	(void)state;
	memset(longarg, 'a', sizeof longarg - 1);
	longarg[sizeof longarg - 1] = '\0';
	reset(MX_SMTP);
	assert_int_equal(mx_command(&ctx, MX_SMTP, "RCPT", longarg, 0), ACME_SMIME_ERR_LIMIT);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pop3_status_line_ok_and_err),
		cmocka_unit_test(pop3_multiline_is_dot_unstuffed_in_every_chunking),
		cmocka_unit_test(pop3_multiline_stops_at_terminator),
		cmocka_unit_test(pop3_multiline_error_has_no_body),
		cmocka_unit_test(pop3_oversized_body_is_marked_truncated),
		cmocka_unit_test(smtp_multiline_reply_collects_capabilities),
		cmocka_unit_test(smtp_auth_capability_words_are_exact),
		cmocka_unit_test(smtp_reply_codes_and_garbage),
		cmocka_unit_test(dot_stuffing_doubles_leading_dots_and_terminates),
		cmocka_unit_test(auth_plain_argument_is_base64_with_padding),
		cmocka_unit_test(reply_recipients_come_from_the_to_field),
		cmocka_unit_test(commands_are_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
