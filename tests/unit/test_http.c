/* Sections 8 and 9: trust anchors from PEM, URL splitting, the HTTP/1.1
 * response parser fed in every chunking. */
#define _POSIX_C_SOURCE 200809L
#include "acme_smime.c"
#include "testutil.h"

static unsigned char work[ACME_SMIME_WORKBUF_SIZE];
static acme_smime_ctx ctx;
static acme_smime_ports ports;

static uint64_t
fixed_time(void *user)
{
	(void)user;
	return 1764403200u;   /* 2025-11-29 08:00:00 UTC */
}

static void
reset_ctx(int req_kind)
{
	memset(&ctx, 0, sizeof ctx);
	memset(&ports, 0, sizeof ports);
	ports.unix_time = fixed_time;
	ctx.ports = &ports;
	ctx.work = work;
	ctx.work_size = sizeof work;
	ctx.req_kind = req_kind;
	http_response_reset(&ctx);
}

/* Feed text in pieces of size step; return the final parser state. */
static int
feed(const char *text, size_t step)
{
	size_t len = strlen(text), i = 0;

	while (i < len) {
		size_t n = len - i < step ? len - i : step;
		long used = http_parse(&ctx, (const unsigned char *)text + i, n);

		if (used < 0) {
			return (int)used;
		}
		i += (size_t)used;
		if (ctx.resp_state == RS_DONE) {
			break;
		}
		if ((size_t)used < n) {
			return -100;
		}
	}
	return ctx.resp_state;
}

static const char acme_response[] =
	"HTTP/1.1 201 Created\r\n"
	"Server: test\r\n"
	"Content-Type: application/json\r\n"
	"Replay-Nonce: abc_DEF-123\r\n"
	"Location: https://ca.test/acme/order/7\r\n"
	"Link: <https://ca.test/dir>;rel=\"index\"\r\n"
	"Retry-After: 7\r\n"
	"Content-Length: 17\r\n"
	"\r\n"
	"{\"status\":\"ok\"}\r\n";

static void
response_parses_in_every_chunking(void **state)
{
	size_t step;

	(void)state;
	for (step = 1; step <= sizeof acme_response; step++) {
		reset_ctx(REQ_POST);
		assert_int_equal(feed(acme_response, step), RS_DONE);
		assert_int_equal(ctx.status, 201);
		assert_string_equal(ctx.resp_nonce, "abc_DEF-123");
		assert_string_equal(ctx.location, "https://ca.test/acme/order/7");
		assert_int_equal(ctx.retry_after_s, 7);
		assert_int_equal(ctx.body_len, 17);
		assert_memory_equal(http_area(&ctx), "{\"status\":\"ok\"}\r\n", 17);
		assert_true(ctx.keep_alive);
	}
}

static void
link_headers_count_alternates(void **state)
{
	static const char text[] =
	    "HTTP/1.1 200 OK\r\n"
	    "Link: <https://ca.test/dir>;rel=\"index\"\r\n"
	    "Link: <https://ca.test/cert/1/1>;rel=\"alternate\", "
	    "<https://ca.test/cert/1/2>; rel=alternate\r\n"
	    "Link: <https://ca.test/authz/7>;rel=up;title=\"a,b\"\r\n"
	    "Content-Length: 0\r\n\r\n";

	(void)state;
	reset_ctx(REQ_POST);
	assert_int_equal(feed(text, 5), RS_DONE);
	assert_int_equal(ctx.link_alternates, 2);
	reset_ctx(REQ_POST);
	assert_int_equal(feed("HTTP/1.1 200 OK\r\nLink: garbage<\r\nLink: <x\r\n"
	    "Content-Length: 0\r\n\r\n", 3), RS_DONE);
	assert_int_equal(ctx.link_alternates, 0);
}

static void
chunked_body_is_reassembled(void **state)
{
	static const char text[] =
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
	    "Content-Type: application/problem+json; charset=utf-8\r\n\r\n"
	    "5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";
	size_t step;

	(void)state;
	for (step = 1; step < sizeof text; step++) {
		reset_ctx(REQ_POST);
		assert_int_equal(feed(text, step), RS_DONE);
		assert_int_equal(ctx.body_len, 16);
		assert_memory_equal(http_area(&ctx), "hello 0123456789", 16);
		assert_true(ctx.problem_json);
	}
}

static void
head_response_has_no_body(void **state)
{
	static const char text[] = "HTTP/1.1 200 OK\r\nReplay-Nonce: n1\r\n"
	    "Content-Length: 1234\r\n\r\n";

	(void)state;
	reset_ctx(REQ_HEAD);
	assert_int_equal(feed(text, 7), RS_DONE);
	assert_string_equal(ctx.resp_nonce, "n1");
	assert_int_equal(ctx.body_len, 0);
}

static void
body_until_close_without_length(void **state)
{
	static const char text[] = "HTTP/1.0 200 OK\r\n\r\nsome body";

	(void)state;
	reset_ctx(REQ_GET);
	assert_int_equal(feed(text, 5), RS_UNTIL_CLOSE);
	assert_false(ctx.keep_alive);
	assert_int_equal(ctx.body_len, 9);
}

static void
interim_100_response_is_skipped(void **state)
{
	static const char text[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";

	(void)state;
	reset_ctx(REQ_POST);
	assert_int_equal(feed(text, 3), RS_DONE);
	assert_int_equal(ctx.status, 204);
}

static void
connection_close_is_honoured(void **state)
{
	static const char text[] = "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n"
	    "Content-Length: 0\r\n\r\n";

	(void)state;
	reset_ctx(REQ_GET);
	assert_int_equal(feed(text, 64), RS_DONE);
	assert_false(ctx.keep_alive);
}

static void
invalid_nonce_is_ignored(void **state)
{
	static const char text[] = "HTTP/1.1 200 OK\r\nReplay-Nonce: bad+nonce=\r\n"
	    "Content-Length: 0\r\n\r\n";

	(void)state;
	reset_ctx(REQ_GET);
	assert_int_equal(feed(text, 64), RS_DONE);
	assert_string_equal(ctx.resp_nonce, "");
}

static void
overlong_needed_header_is_an_error(void **state)
{
	char text[2048];
	char loc[ACME_SMIME_MAX_HEADER_LINE + 10];

	(void)state;
	memset(loc, 'x', sizeof loc - 1);
	loc[sizeof loc - 1] = '\0';
	snprintf(text, sizeof text, "HTTP/1.1 200 OK\r\nLocation: https://%s\r\n\r\n", loc);
	reset_ctx(REQ_GET);
	assert_int_equal(feed(text, 100), ACME_SMIME_ERR_HTTP);
	assert_non_null(strstr(ctx.err.text, "too long") ? ctx.err.text :
	    strstr(ctx.err.text, "longer"));
}

static void
overlong_location_within_line_limit_is_an_error(void **state)
{
	char text[1024];
	char loc[ACME_SMIME_MAX_URL + 10];

	(void)state;
	memset(loc, 'y', sizeof loc - 1);
	loc[sizeof loc - 1] = '\0';
	assert_true(sizeof loc + 20 < ACME_SMIME_MAX_HEADER_LINE);
	snprintf(text, sizeof text, "HTTP/1.1 200 OK\r\nLocation: %s\r\n\r\n", loc);
	reset_ctx(REQ_GET);
	assert_int_equal(feed(text, 100), ACME_SMIME_ERR_HTTP);
}

static void
overlong_unneeded_header_is_skipped(void **state)
{
	char text[2048];
	char v[ACME_SMIME_MAX_HEADER_LINE + 300];

	(void)state;
	memset(v, 'z', sizeof v - 1);
	v[sizeof v - 1] = '\0';
	snprintf(text, sizeof text, "HTTP/1.1 200 OK\r\nX-Junk: %s\r\nContent-Length: 2\r\n\r\nok", v);
	reset_ctx(REQ_GET);
	assert_int_equal(feed(text, 100), RS_DONE);
	assert_int_equal(ctx.body_len, 2);
}

static void
malformed_responses_are_refused(void **state)
{
	static const char *bad[] = {
		"HTTP/2 200 OK\r\n\r\n",
		"HTTP/1.1 2x0 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nNoColonHere\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
		"garbage\r\n\r\n",
	};
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(bad); i++) {
		reset_ctx(REQ_GET);
		if (feed(bad[i], 3) >= 0) {
			fail_msg("accepted: %s", bad[i]);
		}
	}
}

static void
body_larger_than_area_is_a_limit_error(void **state)
{
	char head[128];
	static char chunk[4096];
	size_t total = 0;
	long r = 0;

	(void)state;
	reset_ctx(REQ_GET);
	snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %lu\r\n\r\n",
	    (unsigned long)ACME_SMIME_HTTP_AREA + 10);
	assert_int_equal(feed(head, 200), RS_BODY);
	memset(chunk, 'b', sizeof chunk);
	while (total < ACME_SMIME_HTTP_AREA + 10 && r >= 0) {
		r = http_parse(&ctx, (unsigned char *)chunk, sizeof chunk);
		total += sizeof chunk;
	}
	assert_int_equal(r, ACME_SMIME_ERR_LIMIT);
}

static void
retry_after_accepts_seconds_and_http_dates(void **state)
{
	(void)state;
	reset_ctx(REQ_GET);
	http_retry_after(&ctx, "120", 3);
	assert_true(ctx.has_retry_after);
	assert_int_equal(ctx.retry_after_s, 120);
	reset_ctx(REQ_GET);
	/* fixed_time() + 90 s */
	http_retry_after(&ctx, "Sat, 29 Nov 2025 08:01:30 GMT", 29);
	assert_true(ctx.has_retry_after);
	assert_int_equal(ctx.retry_after_s, 90);
	reset_ctx(REQ_GET);
	http_retry_after(&ctx, "Sat, 29 Nov 2025 07:00:00 GMT", 29);
	assert_int_equal(ctx.retry_after_s, 0);
	reset_ctx(REQ_GET);
	http_retry_after(&ctx, "soon", 4);
	assert_false(ctx.has_retry_after);
	assert_int_equal(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT", 29), 0);
	assert_int_equal(parse_http_date("Tue, 29 Feb 2000 12:00:00 GMT", 29), 951825600);
	assert_int_equal(parse_http_date("Tue, 29 Foo 2000 12:00:00 GMT", 29), -1);
}

static void
url_split_handles_ports_and_paths(void **state)
{
	url_parts u;

	(void)state;
	assert_int_equal(url_split("https://ca.test/dir", &u), 0);
	assert_string_equal(u.host, "ca.test");
	assert_int_equal(u.port, 443);
	assert_string_equal(u.path, "/dir");
	assert_int_equal(url_split("https://localhost:14000", &u), 0);
	assert_int_equal(u.port, 14000);
	assert_string_equal(u.path, "/");
	assert_int_equal(url_split("https://h:1/a?b", &u), 0);
	assert_string_equal(u.path, "/a?b");
	assert_int_equal(url_split("http://ca.test/dir", &u), ACME_SMIME_ERR_INVALID);
	assert_int_equal(url_split("https://:443/", &u), ACME_SMIME_ERR_INVALID);
	assert_int_equal(url_split("https://h:/", &u), ACME_SMIME_ERR_INVALID);
	assert_int_equal(url_split("https://h:70000/", &u), ACME_SMIME_ERR_INVALID);
	assert_int_equal(url_split("https://h:0/", &u), ACME_SMIME_ERR_INVALID);
	assert_int_equal(url_split("https://h:8x/", &u), ACME_SMIME_ERR_INVALID);
}

/* A self-signed EC CA made by OpenSSL, and an RSA one. */
static void
trust_anchors_load_from_openssl_pem(void **state)
{
	char pem[8192];
	unsigned char storage[4096];
	br_x509_trust_anchor tas[4];
	size_t n;
	int r;

	(void)state;
	assert_int_equal(system("cd build && openssl req -x509 -newkey ec -pkeyopt "
	    "ec_paramgen_curve:P-256 -nodes -keyout /dev/null -out ta-ec.pem -days 2 "
	    "-subj /CN=ta-ec 2>/dev/null && openssl req -x509 -newkey rsa:2048 -nodes "
	    "-keyout /dev/null -out ta-rsa.pem -days 2 -subj /CN=ta-rsa 2>/dev/null && "
	    "cat ta-ec.pem ta-rsa.pem > ta-both.pem"), 0);
	n = read_file("build/ta-both.pem", pem, sizeof pem);
	r = acme_smime_trust_anchors_from_pem(pem, n, storage, sizeof storage, tas, 4);
	assert_int_equal(r, 2);
	assert_int_equal(tas[0].pkey.key_type, BR_KEYTYPE_EC);
	assert_int_equal(tas[0].pkey.key.ec.qlen, 65);
	assert_int_equal(tas[1].pkey.key_type, BR_KEYTYPE_RSA);
	assert_int_equal(tas[1].pkey.key.rsa.nlen, 256);
	assert_int_equal(tas[0].flags & BR_X509_TA_CA, BR_X509_TA_CA);
	/* too little room */
	assert_int_equal(acme_smime_trust_anchors_from_pem(pem, n, storage, 100, tas, 4),
	    ACME_SMIME_ERR_BUFFER);
	assert_int_equal(acme_smime_trust_anchors_from_pem(pem, n, storage, sizeof storage,
	    tas, 1), ACME_SMIME_ERR_BUFFER);
	/* truncated PEM */
	assert_int_equal(acme_smime_trust_anchors_from_pem(pem, n / 3, storage,
	    sizeof storage, tas, 4), ACME_SMIME_ERR_ENCODING);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(response_parses_in_every_chunking),
		cmocka_unit_test(link_headers_count_alternates),
		cmocka_unit_test(chunked_body_is_reassembled),
		cmocka_unit_test(head_response_has_no_body),
		cmocka_unit_test(body_until_close_without_length),
		cmocka_unit_test(interim_100_response_is_skipped),
		cmocka_unit_test(connection_close_is_honoured),
		cmocka_unit_test(invalid_nonce_is_ignored),
		cmocka_unit_test(overlong_needed_header_is_an_error),
		cmocka_unit_test(overlong_location_within_line_limit_is_an_error),
		cmocka_unit_test(overlong_unneeded_header_is_skipped),
		cmocka_unit_test(malformed_responses_are_refused),
		cmocka_unit_test(body_larger_than_area_is_a_limit_error),
		cmocka_unit_test(retry_after_accepts_seconds_and_http_dates),
		cmocka_unit_test(url_split_handles_ports_and_paths),
		cmocka_unit_test(trust_anchors_load_from_openssl_pem),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
