/*
 * fuzz_json.c -- libFuzzer target for the JSON layer (section 2):
 * json_parse() on arbitrary bytes, then every reader on every token of a
 * document it accepts.
 */
#include "acme_smime.c"
#include "fuzz_util.h"

#define SMALL_OUT 8
#define BIG_TOKENS 1024

static const char *const probe_keys[] = {
	"type", "url", "status", "token", "from", "challenges", "identifier",
	"newNonce", "detail", ""
};

/* Containers among the ancestors of token i (parent links). */
static unsigned
container_depth(const json_doc *d, int i)
{
	unsigned n = 0;
	int p = d->tok[i].parent, steps = 0;

	while (p >= 0) {
		FUZZ_CHECK(p < i && ++steps <= d->count);
		if (d->tok[p].type == JSMN_OBJECT || d->tok[p].type == JSMN_ARRAY) {
			n++;
		}
		p = d->tok[p].parent;
	}
	return n;
}

static void
check_string(const json_doc *d, int i)
{
	size_t raw = (size_t)(d->tok[i].end - d->tok[i].start);
	char *big = malloc(raw + 1);    /* decoding never grows the text */
	char *small = malloc(SMALL_OUT);
	char one[1];
	int rb, rs, r1;

	FUZZ_CHECK(big != NULL && small != NULL);
	rb = json_get_string(d, i, big, raw + 1);
	rs = json_get_string(d, i, small, SMALL_OUT);
	r1 = json_get_string(d, i, one, sizeof one);
	FUZZ_CHECK(rb >= 0 || rb == ACME_SMIME_ERR_JSON);
	if (rb >= 0) {
		FUZZ_CHECK((size_t)rb <= raw);
		FUZZ_CHECK(strlen(big) == (size_t)rb);
		FUZZ_CHECK(FUZZ_UTF8_OK(big, (size_t)rb));
		if (rb < SMALL_OUT) {
			FUZZ_CHECK(rs == rb && memcmp(small, big, (size_t)rb + 1) == 0);
		} else {
			FUZZ_CHECK(rs == ACME_SMIME_ERR_BUFFER && small[0] == '\0');
		}
		FUZZ_CHECK(rb == 0 ? (r1 == 0 && one[0] == '\0')
		    : (r1 == ACME_SMIME_ERR_BUFFER && one[0] == '\0'));
		/* Exactly enough room, and one byte less. */
		FUZZ_CHECK(json_get_string(d, i, big, (size_t)rb + 1) == rb);
		if (rb > 0) {
			FUZZ_CHECK(json_get_string(d, i, big, (size_t)rb) ==
			    ACME_SMIME_ERR_BUFFER);
		}
	} else {
		FUZZ_CHECK(rs < 0 && r1 < 0);
	}
	if (rs >= 0) {
		FUZZ_CHECK(rs < SMALL_OUT && strlen(small) == (size_t)rs);
	}
	free(big);
	free(small);
}

static void
check_object(const json_doc *d, int obj, int after)
{
	char first[32];
	size_t k;
	int i, n, v, rf;

	/* Members: key string, value subtree, ... exactly filling [obj+1, after). */
	i = obj + 1;
	for (n = 0; n < d->tok[obj].size; n++) {
		FUZZ_CHECK(i < after && d->tok[i].type == JSMN_STRING);
		FUZZ_CHECK(d->tok[i].size == 1);
		FUZZ_CHECK(i + 1 < after);
		i = json_skip(d, i + 1);
	}
	FUZZ_CHECK(i == after);

	for (k = 0; k < ARRAY_LEN(probe_keys); k++) {
		v = json_find(d, obj, probe_keys[k]);
		if (v >= 0) {
			char name[32];

			FUZZ_CHECK(v > obj + 1 && v < after);
			FUZZ_CHECK(d->tok[v - 1].type == JSMN_STRING);
			FUZZ_CHECK(d->tok[v - 1].parent == obj);
			FUZZ_CHECK(json_get_string(d, v - 1, name, sizeof name) >= 0);
			FUZZ_CHECK(strcmp(name, probe_keys[k]) == 0);
		}
		/* json_member_is / json_get_member must agree with json_find. */
		{
			char val[24];
			int rg = json_get_member(d, obj, probe_keys[k], val, sizeof val);

			FUZZ_CHECK(rg < (int)sizeof val);
			if (v < 0) {
				FUZZ_CHECK(rg == ACME_SMIME_ERR_JSON);
			}
			FUZZ_CHECK(json_member_is(d, obj, probe_keys[k], "pending") ==
			    (rg >= 0 && strcmp(val, "pending") == 0));
		}
	}

	/* The first member is found by its own (short enough) name. */
	if (d->tok[obj].size > 0) {
		rf = json_get_string(d, obj + 1, first, sizeof first);
		if (rf >= 0) {
			FUZZ_CHECK(json_find(d, obj, first) == obj + 2);
		}
	}
	FUZZ_CHECK(json_array_item(d, obj, 0) == -1);
}

static void
check_array(const json_doc *d, int arr, int after)
{
	int i, n;

	i = arr + 1;
	for (n = 0; n < d->tok[arr].size; n++) {
		FUZZ_CHECK(i < after);
		FUZZ_CHECK(json_array_item(d, arr, n) == i);
		FUZZ_CHECK(d->tok[i].parent == arr);
		i = json_skip(d, i);
	}
	FUZZ_CHECK(i == after);
	FUZZ_CHECK(json_array_item(d, arr, d->tok[arr].size) == -1);
	FUZZ_CHECK(json_array_item(d, arr, -1) == -1);
	FUZZ_CHECK(json_find(d, arr, "type") == -1);
}

static void
walk(const json_doc *d)
{
	char out[16];
	int i, j, after;

	FUZZ_CHECK(d->count >= 1 && d->tok[0].type == JSMN_OBJECT);
	FUZZ_CHECK(json_skip(d, 0) == d->count);
	FUZZ_CHECK(json_get_string(d, -1, out, sizeof out) == ACME_SMIME_ERR_JSON);
	FUZZ_CHECK(json_get_string(d, d->count, out, sizeof out) ==
	    ACME_SMIME_ERR_JSON);
	FUZZ_CHECK(json_find(d, -1, "type") == -1);
	FUZZ_CHECK(json_find(d, d->count, "type") == -1);

	for (i = 0; i < d->count; i++) {
		const jsmntok_t *t = &d->tok[i];

		/* Every token lies inside the input, in text order. */
		FUZZ_CHECK(t->start >= 0 && t->start <= t->end);
		FUZZ_CHECK((size_t)t->end <= d->len);
		if (i > 0) {
			FUZZ_CHECK(t->start > d->tok[i - 1].start);
		}
		FUZZ_CHECK(container_depth(d, i) <= ACME_SMIME_JSON_MAX_DEPTH);

		after = json_skip(d, i);
		FUZZ_CHECK(after > i && after <= d->count);
		for (j = i + 1; j < after; j++) {
			FUZZ_CHECK(d->tok[j].start >= t->start && d->tok[j].end <= t->end);
		}
		if (after < d->count) {
			FUZZ_CHECK(d->tok[after].start >= t->end);
		}

		switch (t->type) {
		case JSMN_STRING:
			FUZZ_CHECK(t->start >= 1 && (size_t)t->end < d->len);
			FUZZ_CHECK(d->js[t->start - 1] == '"' && d->js[t->end] == '"');
			check_string(d, i);
			break;
		case JSMN_PRIMITIVE:
			FUZZ_CHECK(after == i + 1);
			FUZZ_CHECK(json_get_string(d, i, out, sizeof out) ==
			    ACME_SMIME_ERR_JSON);
			FUZZ_CHECK(json_primitive_ok(d->js + t->start,
			    (size_t)(t->end - t->start)));
			break;
		case JSMN_OBJECT:
			FUZZ_CHECK(d->js[t->start] == '{' && d->js[t->end - 1] == '}');
			check_object(d, i, after);
			break;
		case JSMN_ARRAY:
			FUZZ_CHECK(d->js[t->start] == '[' && d->js[t->end - 1] == ']');
			check_array(d, i, after);
			break;
		default:
			FUZZ_CHECK(0);
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static jsmntok_t big[BIG_TOKENS];
	jsmntok_t tok[ACME_SMIME_JSON_TOKENS];
	const char *js = (const char *)data;
	json_doc d, d2;
	int r, r2;

	r = json_parse(&d, js, size, tok, ACME_SMIME_JSON_TOKENS);
	FUZZ_CHECK(r == ACME_SMIME_OK || r == ACME_SMIME_ERR_JSON ||
	    r == ACME_SMIME_ERR_LIMIT);
	if (r == ACME_SMIME_OK) {
		FUZZ_CHECK(d.count >= 1 && d.count <= ACME_SMIME_JSON_TOKENS);
		/* The token budget is exact: one token less is a limit. */
		r2 = json_parse(&d2, js, size, big, (unsigned)d.count);
		FUZZ_CHECK(r2 == ACME_SMIME_OK && d2.count == d.count);
		r2 = json_parse(&d2, js, size, big, (unsigned)d.count - 1);
		FUZZ_CHECK(r2 == ACME_SMIME_ERR_LIMIT ||
		    (d.count == 1 && r2 == ACME_SMIME_ERR_JSON));
		walk(&d);
	} else {
		FUZZ_CHECK(d.count == 0);
		if (r == ACME_SMIME_ERR_LIMIT) {
			/* Exercise the validator and readers on larger documents. */
			r2 = json_parse(&d2, js, size, big, BIG_TOKENS);
			FUZZ_CHECK(r2 != ACME_SMIME_OK || d2.count > ACME_SMIME_JSON_TOKENS);
			if (r2 == ACME_SMIME_OK) {
				walk(&d2);
			}
		} else {
			/* Malformed stays malformed with more tokens. */
			r2 = json_parse(&d2, js, size, big, BIG_TOKENS);
			FUZZ_CHECK(r2 == ACME_SMIME_ERR_JSON);
		}
	}
	return 0;
}
