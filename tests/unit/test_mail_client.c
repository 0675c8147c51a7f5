/* Section 10: POP3 and SMTP response parsing, SMTP dot-stuffing and AUTH
 * arguments, the reply's recipients; fed in every chunking. Section 11's
 * mailbox listings: the snapshot, which messages are new, and the order
 * in which they are examined. */
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
		assert_int_equal(ctx.mail_caps, CAP_STARTTLS | CAP_AUTH_PLAIN | CAP_AUTH_LOGIN);
	}
}

static void
smtp_auth_capability_words_are_exact(void **state)
{
	(void)state;
	reset(MX_SMTP);
	feed("250-x\r\n250 AUTH XPLAINX CRAM-MD5\r\n", 100);
	assert_int_equal(ctx.mail_caps, 0);
	reset(MX_SMTP);
	feed("250 auth plain\r\n", 100);
	assert_int_equal(ctx.mail_caps, CAP_AUTH_PLAIN);
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

/* --- listings (POP3 UIDL or the mailbox hook) --- */

static uint64_t
fixed_time(void *user)
{
	(void)user;
	return 1796000000u;
}

/* The id of message k of a test mailbox. */
static const char *
mid(unsigned k)
{
	static char buf[32];

	snprintf(buf, sizeof buf, "uid-%05u", k);
	return buf;
}

/* List messages first..last (ids mid(k)) in order, as one listing. */
static void
list_range(unsigned first, unsigned last)
{
	unsigned k;

	mbox_start_listing(&ctx);
	for (k = first; k <= last; k++) {
		mbox_entry(&ctx, mid(k), strlen(mid(k)), k - first + 1, 100);
	}
	mbox_listed(&ctx);
}

static void
reset_mailbox(int purpose)
{
	reset(MX_POP3_LIST);
	ports.unix_time = fixed_time;
	ctx.mbox_purpose = purpose;
}

static void
uidl_listing_streams_in_every_chunking(void **state)
{
	static const char resp[] = "+OK\r\n1 uid-00001\r\n2 uid-00002\r\n3 uid-00003\r\n.\r\n";
	size_t step;

	(void)state;
	for (step = 1; step < sizeof resp; step++) {
		reset_mailbox(MBOX_SNAPSHOT);
		mbox_start_listing(&ctx);
		feed(resp, step);
		assert_int_equal(ctx.mx_state, MXS_DONE);
		assert_true(ctx.mx_ok);
		assert_false(ctx.list_bad);
		assert_int_equal(ctx.snapshot_total, 3);
		assert_true(uid_in(ctx.snapshot, ctx.snapshot_count, uid_hash("uid-00002", 9)));
		assert_int_equal(ctx.body_len, 0);   /* nothing went to the HTTP area */
	}
}

/* 3,000 messages: a listing far larger than the work buffer. */
static void
uidl_listing_of_any_size_keeps_the_newest_ids(void **state)
{
	char line[64];
	unsigned k;

	(void)state;
	reset_mailbox(MBOX_SNAPSHOT);
	mbox_start_listing(&ctx);
	feed("+OK 3000 messages\r\n", 7);
	for (k = 1; k <= 3000; k++) {
		snprintf(line, sizeof line, "%u %s\r\n", k, mid(k));
		feed(line, 5);
	}
	feed(".\r\n", 1);
	assert_int_equal(ctx.mx_state, MXS_DONE);
	assert_false(ctx.list_bad);
	assert_int_equal(ctx.snapshot_total, 3000);
	assert_int_equal(ctx.snapshot_count, ACME_SMIME_MAX_SNAPSHOT);
	assert_true(uid_in(ctx.snapshot, ctx.snapshot_count, uid_hash(mid(3000), 9)));
	assert_true(uid_in(ctx.snapshot, ctx.snapshot_count,
	    uid_hash(mid(3001 - ACME_SMIME_MAX_SNAPSHOT), 9)));
	assert_false(uid_in(ctx.snapshot, ctx.snapshot_count,
	    uid_hash(mid(3000 - ACME_SMIME_MAX_SNAPSHOT), 9)));
}

static void
uidl_malformed_lines_are_reported(void **state)
{
	static const char *const bad[] = {
		"+OK\r\nuid-1\r\n.\r\n",            /* no number */
		"+OK\r\n0 uid-1\r\n.\r\n",          /* number 0 */
		"+OK\r\n1 \r\n.\r\n",               /* empty id */
		"+OK\r\n1234567890 uid\r\n.\r\n",   /* number too long */
	};
	char longid[ACME_SMIME_MAX_MAIL_ID + 16];
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(bad); i++) {
		reset_mailbox(MBOX_FETCH);
		mbox_start_listing(&ctx);
		feed(bad[i], 4);
		assert_int_equal(ctx.mx_state, MXS_DONE);
		assert_true(ctx.list_bad);
	}
	/* an id over ACME_SMIME_MAX_MAIL_ID (POP3: 70) */
	memset(longid, 'x', sizeof longid);
	memcpy(longid, "+OK\r\n1 ", 7);
	memcpy(longid + 7 + ACME_SMIME_MAX_MAIL_ID + 1, "\r\n.\r\n", 6);
	reset_mailbox(MBOX_FETCH);
	mbox_start_listing(&ctx);
	feed(longid, 9);
	assert_true(ctx.list_bad);
}

/* Messages after the snapshot are new, in order, at most
 * ACME_SMIME_MAX_EXAMINED per poll. */
static void
new_messages_follow_the_snapshot(void **state)
{
	(void)state;
	reset_mailbox(MBOX_SNAPSHOT);
	list_range(1, 10);
	assert_int_equal(ctx.snapshot_total, 10);
	assert_true(ctx.snapshot_taken);
	ctx.mbox_purpose = MBOX_FETCH;
	list_range(1, 13);
	assert_int_equal(ctx.candidate_count, 3);
	assert_int_equal(ctx.candidate[0], 11);
	assert_int_equal(ctx.candidate_uid[2], uid_hash(mid(13), 9));
	list_range(1, 10 + ACME_SMIME_MAX_EXAMINED + 5);
	assert_int_equal(ctx.candidate_count, ACME_SMIME_MAX_EXAMINED);
	assert_int_equal(ctx.candidate[0], 11);
}

/* With the whole mailbox in the snapshot, membership alone decides: a
 * message listed before old ones (a server that lists in another order)
 * is still new. */
static void
complete_snapshot_decides_by_membership(void **state)
{
	unsigned k;

	(void)state;
	reset_mailbox(MBOX_SNAPSHOT);
	list_range(1, 10);
	ctx.mbox_purpose = MBOX_FETCH;
	mbox_start_listing(&ctx);
	mbox_entry(&ctx, "new-first", 9, 1, 100);
	for (k = 1; k <= 10; k++) {
		mbox_entry(&ctx, mid(k), 9, k + 1, 100);
	}
	assert_int_equal(ctx.candidate_count, 1);
	assert_int_equal(ctx.candidate[0], 1);
}

/* A mailbox larger than the snapshot: what is listed before a kept old
 * message is old too, even though its id was not kept. */
static void
large_mailbox_old_messages_known_by_place(void **state)
{
	(void)state;
	reset_mailbox(MBOX_SNAPSHOT);
	list_range(1, 500);
	assert_int_equal(ctx.snapshot_count, ACME_SMIME_MAX_SNAPSHOT);
	ctx.mbox_purpose = MBOX_FETCH;
	list_range(1, 502);
	assert_int_equal(ctx.candidate_count, 2);
	assert_int_equal(ctx.candidate[0], 501);
	assert_int_equal(ctx.candidate[1], 502);
	/* Messages deleted meanwhile by another client: numbers shift, the
	 * result does not. */
	list_range(200, 502);
	assert_int_equal(ctx.candidate_count, 2);
	assert_int_equal(ctx.candidate_uid[0], uid_hash(mid(501), 9));
}

/* Forty new messages that are not the challenge, then the challenge:
 * every poll goes on after the last message examined, so each message is
 * read once and the challenge is reached, though only
 * ACME_SMIME_MAX_EXAMINED_KEPT examined ids are remembered. */
static void
polls_go_on_after_the_last_examined(void **state)
{
	unsigned reads[60], polls = 0, k;
	uint32_t target = uid_hash(mid(46), 9);
	int found = 0;

	(void)state;
	memset(reads, 0, sizeof reads);
	reset_mailbox(MBOX_SNAPSHOT);
	list_range(1, 5);
	ctx.mbox_purpose = MBOX_FETCH;
	while (!found && polls++ < 20) {
		list_range(1, 46);
		assert_true(ctx.candidate_count > 0);
		for (k = 0; k < ctx.candidate_count; k++) {
			reads[ctx.candidate[k]]++;
			if (ctx.candidate_uid[k] == target) {
				found = 1;
				break;
			}
			mbox_examined(&ctx, ctx.candidate_uid[k]);
		}
	}
	assert_true(found);
	assert_int_equal(polls, (41 + ACME_SMIME_MAX_EXAMINED - 1) / ACME_SMIME_MAX_EXAMINED);
	for (k = 6; k <= 46; k++) {
		assert_int_equal(reads[k], 1);
	}
	assert_int_equal(reads[1] + reads[5], 0);
}

/* The answered message is never a candidate again. */
static void
answered_message_is_not_listed_again(void **state)
{
	(void)state;
	reset_mailbox(MBOX_SNAPSHOT);
	list_range(1, 3);
	ctx.mbox_purpose = MBOX_FETCH;
	ctx.answered_uid = uid_hash(mid(4), 9);
	list_range(1, 5);
	assert_int_equal(ctx.candidate_count, 1);
	assert_int_equal(ctx.candidate[0], 5);
}

/* The mailbox hook path takes one candidate at a time and keeps its id
 * and size for the read hook. */
static void
hook_listing_keeps_one_candidate_with_its_id(void **state)
{
	static const acme_smime_mailbox mb;

	(void)state;
	reset_mailbox(MBOX_SNAPSHOT);
	ports.mailbox = &mb;
	list_range(1, 2);
	ctx.mbox_purpose = MBOX_FETCH;
	mbox_start_listing(&ctx);
	mbox_hook_entry(&ctx, "uid-00001", 9, 10);
	mbox_hook_entry(&ctx, "1700000000.M1P2.host", 20, 4321);
	mbox_hook_entry(&ctx, "1700000001.M1P2.host", 20, 99);
	assert_int_equal(ctx.candidate_count, 1);
	assert_string_equal(ctx.mail_id, "1700000000.M1P2.host");
	assert_int_equal(ctx.mail_size, 4321);
	mbox_hook_entry(&ctx, NULL, 0, 0);
	assert_true(ctx.list_bad);
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
		cmocka_unit_test(uidl_listing_streams_in_every_chunking),
		cmocka_unit_test(uidl_listing_of_any_size_keeps_the_newest_ids),
		cmocka_unit_test(uidl_malformed_lines_are_reported),
		cmocka_unit_test(new_messages_follow_the_snapshot),
		cmocka_unit_test(complete_snapshot_decides_by_membership),
		cmocka_unit_test(large_mailbox_old_messages_known_by_place),
		cmocka_unit_test(polls_go_on_after_the_last_examined),
		cmocka_unit_test(answered_message_is_not_listed_again),
		cmocka_unit_test(hook_listing_keeps_one_candidate_with_its_id),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
