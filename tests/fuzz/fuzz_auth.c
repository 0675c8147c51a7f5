/*
 * fuzz_auth.c -- libFuzzer target for section 6b (mail authenticity):
 * acme_smime_check_challenge_mail() with every proof configured (S/MIME
 * anchors, a work buffer and a time; a dns_txt hook over a fixed table;
 * a trusted authserv-id), strict and with relaxed header protection; and
 * the DER walkers (CMS, certificate, key) on the raw input.
 *
 * The anchors and the DKIM key record are the test vectors' own, read at
 * the first call (run from the repo root, as run_fuzz.sh does), so that
 * mutations of the seed mails reach the signature checks.
 */
#include "acme_smime.c"
#include "fuzz_util.h"

#define NOW_2026 UINT64_C(1767225600)
#define NOW_7508 UINT64_C(1669496978)

/* The parties of the seed mails: the From domain picks the set. */
typedef struct {
	const char *domain;         /* in the mail: use this set */
	const char *identifier;
	const char *from;
	const char *anchor;         /* PEM file */
	uint64_t now;
} party;

static const party parties[] = {
	{ "dc-bsd.my.corp", "gitlab@dc-bsd.my.corp", "acme-challenge@dc-bsd.my.corp",
	  "tests/vectors/rfc8823/acme4j-smime/keys/7508-valid-ca.cert.pem", NOW_7508 },
	{ "ca.example", "alice@example.org", "acme@ca.example",
	  "tests/vectors/smime/root.pem", NOW_2026 },
	{ "", "recipient@example.org", "valid-ca@example.com",
	  "tests/vectors/rfc8823/acme4j-smime/keys/valid-signer.pem", NOW_2026 },
};

static struct {
	int loaded;
	unsigned char store[ARRAY_LEN(parties)][4096];
	br_x509_trust_anchor ta[ARRAY_LEN(parties)][2];
	size_t ta_count[ARRAY_LEN(parties)];
	char txt[ACME_SMIME_MAX_DNS_TXT + 1];
} fixed;

static unsigned lookups;

static int
contains(const uint8_t *data, size_t size, const char *word)
{
	size_t n = strlen(word), i;

	for (i = 0; n <= size && i <= size - n; i++) {
		if (memcmp(data + i, word, n) == 0) {
			return 1;
		}
	}
	return 0;
}

static size_t
slurp(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	FUZZ_CHECK(f != NULL);
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = '\0';
	return n;
}

static void
load_fixed(void)
{
	char pem[4096];
	size_t k, n;
	int r;

	for (k = 0; k < ARRAY_LEN(parties); k++) {
		n = slurp(parties[k].anchor, pem, sizeof pem);
		r = acme_smime_trust_anchors_from_pem(pem, n, fixed.store[k],
		    sizeof fixed.store[k], fixed.ta[k], ARRAY_LEN(fixed.ta[k]));
		FUZZ_CHECK(r > 0);
		fixed.ta_count[k] = (size_t)r;
	}
	slurp("tests/vectors/dkim/ca-s1.txt", fixed.txt, sizeof fixed.txt);
	fixed.txt[strcspn(fixed.txt, "\r\n")] = '\0';
	fixed.loaded = 1;
}

/* The fixed table: the CA's key at s1, a revoked key at s2, nothing
 * elsewhere; every name asked for must be one we could have built. */
static int
table_txt(void *user, const char *name, char *out, size_t out_size)
{
	size_t n = strlen(name), i;
	const char *text = NULL;

	(void)user;
	lookups++;
	FUZZ_CHECK(out_size == ACME_SMIME_MAX_DNS_TXT + 1);
	FUZZ_CHECK(n > 0 && n < 254 && strstr(name, "._domainkey.") != NULL);
	for (i = 0; i < n; i++) {
		FUZZ_CHECK(is_tag_char((unsigned char)name[i]) || name[i] == '-' ||
		    name[i] == '.');
	}
	if (strcmp(name, "s1._domainkey.ca.example") == 0) {
		text = fixed.txt;
	} else if (strcmp(name, "s2._domainkey.ca.example") == 0) {
		text = "v=DKIM1; k=rsa; p=";
	} else {
		return 0;
	}
	n = strlen(text);
	memcpy(out, text, n + 1);
	return (int)n;
}

static unsigned char work[ACME_SMIME_SMIME_WORK_SIZE * 2];

static int
check(const char *mail, size_t len, size_t who, unsigned policy,
	acme_smime_mail_verdict *v)
{
	acme_smime_pending p;
	int r;

	memset(&p, 0, sizeof p);
	p.identifier = parties[who].identifier;
	p.from = parties[who].from;
	p.policy = policy;
	p.now = parties[who].now;
	p.smime_anchors = fixed.ta[who];
	p.smime_anchor_count = fixed.ta_count[who];
	p.smime_work = work;
	p.smime_work_size = sizeof work;
	p.dns_txt = table_txt;
	p.authserv_id = "mx.example.org";
	r = acme_smime_check_challenge_mail(mail, len, &p, v);
	if (r == ACME_SMIME_OK) {
		FUZZ_CHECK(v->reason == ACME_SMIME_MAIL_OK);
		FUZZ_CHECK(fuzz_terminated(v->token_part1, sizeof v->token_part1));
		FUZZ_CHECK(v->reply_count >= 1 &&
		    v->reply_count <= ACME_SMIME_MAX_REPLY_TO);
		if (policy & ACME_SMIME_MAIL_ALLOW_UNSIGNED) {
			FUZZ_CHECK(v->proof == ACME_SMIME_PROOF_NONE);
		} else {
			FUZZ_CHECK(v->proof >= ACME_SMIME_PROOF_SMIME &&
			    v->proof <= ACME_SMIME_PROOF_AUTH_RESULTS);
			FUZZ_CHECK(!(v->relaxed & ACME_SMIME_MAIL_ALLOW_UNSIGNED));
		}
		FUZZ_CHECK((v->relaxed & ~policy) == 0);
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

/* The DER walkers straight on the input: no read outside it (ASan), no
 * endless loop. */
static void
walk_der(const uint8_t *data, size_t size)
{
	static unsigned char buf[16384];
	smime_msg m;
	cms_signer si;
	cert_view c;
	der_in tlv, san, ski, v;
	br_x509_pkey key;
	unsigned k;

	if (size > sizeof buf) {
		return;
	}
	memcpy(buf, data, size);
	memset(&m, 0, sizeof m);
	m.der.p = buf;
	m.der.len = size;
	if (cms_parse(&m) == 0) {
		for (k = 0; k < AUTH_MAX_TRIES && m.signers.len > 0; k++) {
			if (cms_next_signer(&m.signers, &si) != ACME_SMIME_MAIL_OK) {
				break;
			}
			if (cms_signer_cert(&m, &si, &c)) {
				cert_extensions(&c, CERT_LEAF, &san, &ski);
				san_names_sender(san, "acme@ca.example");
				spki_parse(c.spki, &key);
			}
			if (si.headers.p != NULL) {
				field_span prot[3];

				memset(prot, 0, sizeof prot);
				hp_from_7508(si.headers, prot);
			}
		}
	}
	tlv.p = buf;
	tlv.len = size;
	if (cert_parse(tlv, &c) == 0) {
		cert_extensions(&c, CERT_CA, &san, &ski);
		cert_extensions(&c, CERT_LEAF, &san, &ski);
	}
	if (der_expect(&tlv, DER_SEQUENCE, &v) == 0) {
		spki_parse(v, &key);
	}
}

static __attribute__((noinline)) void
scribble_stack(unsigned char pattern)
{
	volatile unsigned char area[32768];
	size_t i;

	for (i = 0; i < sizeof area; i++) {
		area[i] = pattern;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static acme_smime_mail_verdict strict, again, relaxed, lax;
	const char *mail = (const char *)data;
	size_t who;
	int rs, rr;

	if (!fixed.loaded) {
		load_fixed();
	}
	for (who = 0; who + 1 < ARRAY_LEN(parties); who++) {
		if (contains(data, size, parties[who].domain)) {
			break;
		}
	}
	scribble_stack(0x5A);
	rs = check(mail, size, who, 0, &strict);
	scribble_stack(0xA5);
	FUZZ_CHECK(check(mail, size, who, 0, &again) == rs);
	FUZZ_CHECK(memcmp(&strict, &again, sizeof strict) == 0);
	rr = check(mail, size, who, ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION,
	    &relaxed);
	/* A mail that passes S/MIME strictly has equal protected and outer
	 * fields: the relaxed mode sees the same mail. */
	if (rs == ACME_SMIME_OK && strict.proof == ACME_SMIME_PROOF_SMIME) {
		FUZZ_CHECK(rr == ACME_SMIME_OK);
		FUZZ_CHECK(relaxed.relaxed == 0);
		FUZZ_CHECK(strcmp(relaxed.token_part1, strict.token_part1) == 0);
	}
	/* unsigned-ok never looks at signatures (no DNS traffic). */
	lookups = 0;
	check(mail, size, who, ACME_SMIME_MAIL_ALLOW_UNSIGNED, &lax);
	FUZZ_CHECK(lookups == 0);
	if (rs == ACME_SMIME_OK) {
		FUZZ_CHECK(lax.reason == ACME_SMIME_MAIL_OK);
	}
	walk_der(data, size);
	return 0;
}
