/*
 * fuzz_http.c -- libFuzzer target for the HTTP/1.1 response parser
 * http_parse() (section 9), on a context set up like tests/unit/test_http.c.
 *
 * Input: data[0] picks the request kind (bits 0-1: GET, HEAD, POST,
 * POST_PEM), whether a 200 body streams to flash like a certificate chain
 * (bit 2) and the size of the HTTP area (bits 3-7: 0 is the default
 * ACME_SMIME_HTTP_AREA, else 8 * s * s - 7 bytes, from 1 byte up);
 * data[1..4] are the split points: the pieces handed to http_parse() have
 * data[1 + k % 4] + 1 bytes (255: all that is left); the rest is what the
 * server sent.
 *
 * The work buffer is allocated to its exact size, so AddressSanitizer
 * catches a write past the area; the TLS part in front of it is filled
 * with a pattern that must survive. The response is parsed twice, whole
 * and in pieces, and both must agree. Checked after each piece and at the
 * end: the parser takes at most what it is given and stops early only at
 * the end of the response; body_len always leaves room for the NUL that
 * http_exchange() writes after a complete body (written here too); the
 * line buffer stays in bounds; every kept header is NUL-terminated within
 * its field; a Replay-Nonce is base64url; a completed response has a final
 * (2xx-9xx) status and a Content-Length body of exactly that length; an
 * error leaves a sticky error in the context; a body streamed to flash
 * (however little of it the area kept) reads back from the record as the
 * whole body.
 */
#define _POSIX_C_SOURCE 200809L
#include "acme_smime.c"
#include "../../port/posix/flash_file.c"
#include "fuzz_util.h"

#define FLASH_SECTOR 4096
#define FLASH_SIZE   ACME_SMIME_STORE_SIZE(FLASH_SECTOR, 1)
#define TLS_FILL     0x5A

static unsigned char flash_mem[FLASH_SIZE];
static struct flash_file ff;
static acme_smime_ports ports;

static uint64_t
fixed_time(void *user)
{
	(void)user;
	return 1796000000u;   /* 2026-11-30 */
}

typedef struct {
	acme_smime_ctx ctx;
	unsigned char *work;
	long result;            /* last http_parse() result */
	size_t used;            /* bytes taken in all */
} run_state;

static void
setup(run_state *rs, int kind, int sink, size_t area)
{
	memset(&rs->ctx, 0, sizeof rs->ctx);
	rs->work = malloc(ACME_SMIME_TLS_AREA + area);
	FUZZ_CHECK(rs->work != NULL);
	memset(rs->work, TLS_FILL, ACME_SMIME_TLS_AREA);
	memset(rs->work + ACME_SMIME_TLS_AREA, 0xEE, area);
	rs->ctx.ports = &ports;
	rs->ctx.work = rs->work;
	rs->ctx.work_size = ACME_SMIME_TLS_AREA + area;
	rs->ctx.req_kind = kind;
	rs->ctx.sock = -1;
	if (sink) {
		memset(flash_mem, 0xFF, sizeof flash_mem);
		FUZZ_CHECK(flash_mem_open(&ff, flash_mem, FLASH_SIZE,
		    FLASH_SECTOR, 1) == 0);
		rs->ctx.sink_wanted = 1;
	}
	http_response_reset(&rs->ctx);
	rs->result = 0;
	rs->used = 0;
}

static int
nonce_ok(const char *n)
{
	size_t i, len = strlen(n);

	for (i = 0; i < len; i++) {
		if (b64_value((unsigned char)n[i], B64_URL) < 0) {
			return 0;
		}
	}
	return len <= ACME_SMIME_MAX_NONCE;
}

/* What must hold after every call. */
static void
check_state(const run_state *rs)
{
	const acme_smime_ctx *c = &rs->ctx;

	FUZZ_CHECK(c->body_len < http_area_size(c));
	FUZZ_CHECK(c->line_len <= ACME_SMIME_MAX_HEADER_LINE);
	FUZZ_CHECK(c->resp_state >= RS_STATUS && c->resp_state <= RS_DONE);
	FUZZ_CHECK(fuzz_terminated(c->location, sizeof c->location));
	FUZZ_CHECK(fuzz_terminated(c->resp_nonce, sizeof c->resp_nonce));
	FUZZ_CHECK(nonce_ok(c->resp_nonce));
	if (c->resp_state == RS_BODY) {
		FUZZ_CHECK(c->content_length != CONTENT_LENGTH_NONE);
		FUZZ_CHECK(c->body_total < c->content_length);
	}
	if (c->sink) {
		/* The area keeps the start of what went to flash. */
		FUZZ_CHECK(c->sink_len == c->body_total);
		FUZZ_CHECK(c->body_len <= c->body_total);
		FUZZ_CHECK(c->status == 200);
	} else {
		FUZZ_CHECK(c->body_len == c->body_total);
	}
}

/* Feed data[0..len) in pieces; returns when the parser fails, finishes
 * or the data ends. */
static void
feed(run_state *rs, const uint8_t *data, size_t len, const uint8_t *split)
{
	size_t k = 0;

	while (rs->used < len) {
		size_t n = len - rs->used;
		long r;

		if (split != NULL && split[k % 4] != 0xFF &&
		    (size_t)split[k % 4] + 1 < n) {
			n = (size_t)split[k % 4] + 1;
		}
		k++;
		r = http_parse(&rs->ctx, data + rs->used, n);
		rs->result = r;
		if (r < 0) {
			FUZZ_CHECK(rs->ctx.err.code != 0);
			return;
		}
		FUZZ_CHECK((size_t)r <= n);
		FUZZ_CHECK((size_t)r == n || rs->ctx.resp_state == RS_DONE);
		rs->used += (size_t)r;
		check_state(rs);
		if (rs->ctx.resp_state == RS_DONE) {
			break;
		}
	}
	/* An interim 1xx response restarts the count; a response that got
	 * any byte never reads as untouched (http_reopen() relies on it). */
	FUZZ_CHECK(rs->ctx.resp_bytes <= rs->used);
	FUZZ_CHECK((rs->used > 0) == (rs->ctx.resp_bytes > 0));
	/* The connection closes here: an until-close body is complete. */
	if (rs->ctx.resp_state == RS_UNTIL_CLOSE) {
		rs->ctx.resp_state = RS_DONE;
	}
	if (rs->ctx.resp_state != RS_DONE) {
		return;
	}
	/* What http_exchange() does with a complete response. */
	http_area(&rs->ctx)[rs->ctx.body_len] = '\0';
	FUZZ_CHECK(rs->ctx.status >= 200 && rs->ctx.status <= 999);
	if (rs->ctx.req_kind == REQ_HEAD || rs->ctx.status == 204 ||
	    rs->ctx.status == 304) {
		FUZZ_CHECK(rs->ctx.body_len == 0);
	} else if (!rs->ctx.chunked &&
	    rs->ctx.content_length != CONTENT_LENGTH_NONE) {
		FUZZ_CHECK(rs->ctx.body_total == rs->ctx.content_length);
	}
}

static void
finish(run_state *rs)
{
	static unsigned char fill[ACME_SMIME_TLS_AREA];

	/* Nothing was written in front of the area. */
	if (fill[0] != TLS_FILL) {
		memset(fill, TLS_FILL, sizeof fill);
	}
	FUZZ_CHECK(memcmp(rs->work, fill, sizeof fill) == 0);
	if (rs->ctx.sink) {
		store_abort(&rs->ctx.store_writer);
	}
	free(rs->work);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static run_state whole, split;
	int kind, sink;
	size_t area, len, cmp;
	unsigned sel;
	const acme_smime_ctx *a = &whole.ctx, *b = &split.ctx;

	if (size < 5) {
		return 0;
	}
	kind = data[0] & 3;
	sink = (data[0] >> 2) & 1;
	sel = data[0] >> 3;
	area = sel == 0 ? ACME_SMIME_HTTP_AREA : 8u * sel * sel - 7u;
	memset(&ports, 0, sizeof ports);
	ports.unix_time = fixed_time;
	ports.flash = sink ? &ff.flash : NULL;
	len = size - 5;

	setup(&whole, kind, sink, area);
	feed(&whole, data + 5, len, NULL);
	setup(&split, kind, sink, area);
	feed(&split, data + 5, len, data + 1);

	/* The same verdict whatever the chunking. */
	FUZZ_CHECK((whole.result < 0) == (split.result < 0));
	if (whole.result < 0) {
		FUZZ_CHECK(a->err.code == b->err.code);
		FUZZ_CHECK(strcmp(a->err.text, b->err.text) == 0);
	} else {
		FUZZ_CHECK(whole.used == split.used);
		FUZZ_CHECK(a->resp_state == b->resp_state);
		FUZZ_CHECK(a->status == b->status);
		FUZZ_CHECK(a->body_len == b->body_len);
		FUZZ_CHECK(a->sink_len == b->sink_len);
		FUZZ_CHECK(a->body_total == b->body_total);
		cmp = a->body_len + (a->resp_state == RS_DONE);
		FUZZ_CHECK(memcmp(http_area((acme_smime_ctx *)a),
		    http_area((acme_smime_ctx *)b), cmp) == 0);
		FUZZ_CHECK(strcmp(a->location, b->location) == 0);
		FUZZ_CHECK(strcmp(a->resp_nonce, b->resp_nonce) == 0);
		FUZZ_CHECK(a->has_retry_after == b->has_retry_after);
		FUZZ_CHECK(a->retry_after_s == b->retry_after_s);
		FUZZ_CHECK(a->problem_json == b->problem_json);
		FUZZ_CHECK(a->keep_alive == b->keep_alive);
		FUZZ_CHECK(a->chunked == b->chunked);
		FUZZ_CHECK(a->content_length == b->content_length);
	}
	/* A body streamed to flash is the whole body, whatever the area
	 * kept: commit the record and compare with a parse into an area
	 * large enough for all of it. */
	if (split.result >= 0 && b->resp_state == RS_DONE && b->sink) {
		static unsigned char rec[ACME_SMIME_STORE_MAX_CERT];
		static run_state ref;
		size_t n = 0;

		setup(&ref, kind, 0, len + 1);
		feed(&ref, data + 5, len, NULL);
		FUZZ_CHECK(ref.result >= 0 && ref.ctx.resp_state == RS_DONE);
		FUZZ_CHECK(ref.ctx.body_total == b->body_total);
		FUZZ_CHECK(store_commit(&split.ctx.store_writer) == ACME_SMIME_OK);
		split.ctx.sink = 0;
		FUZZ_CHECK(store_read(&ff.flash, STORE_REC_CERT, rec, sizeof rec,
		    &n) == ACME_SMIME_OK);
		FUZZ_CHECK(n == b->sink_len);
		FUZZ_CHECK(memcmp(rec, http_area(&ref.ctx), n) == 0);
		finish(&ref);
	}
	finish(&whole);
	finish(&split);
	return 0;
}
