/*
 * http01.c -- the network-independent half of the ports' http-01
 * responders (see the header): the published key authorizations and the
 * answer to a request line.
 */
#include "http01.h"

#include <stdio.h>
#include <string.h>

#define WELL_KNOWN "/.well-known/acme-challenge/"

/* A token as the CA sends it: base64url, no padding. Anything else is
 * never looked up, so a target cannot smuggle a path or a control byte. */
static int
token_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > ACME_SMIME_MAX_TOKEN)
		return 0;
	for (i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
				(ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return 0;
	}
	return 1;
}

static struct acme_smime_http01_entry *
entry_of(const struct acme_smime_http01 *h, const char *token, size_t n)
{
	size_t i;

	for (i = 0; i < h->slot_count; i++) {
		struct acme_smime_http01_entry *e = &h->slots[i];
		if (e->used && strlen(e->token) == n &&
				memcmp(e->token, token, n) == 0)
			return e;
	}
	return NULL;
}

static void
entry_wipe(struct acme_smime_http01_entry *e)
{
	volatile unsigned char *v = (volatile unsigned char *)e;
	size_t i;

	for (i = 0; i < sizeof *e; i++)
		v[i] = 0;
}

void
acme_smime_http01_init(struct acme_smime_http01 *h,
	struct acme_smime_http01_entry *slots, size_t count,
	acme_smime_http01_log_fn log, void *log_user)
{
	memset(h, 0, sizeof *h);
	h->slots = slots;
	h->slot_count = count;
	h->log = log;
	h->log_user = log_user;
	acme_smime_http01_wipe(h);
}

void
acme_smime_http01_wipe(struct acme_smime_http01 *h)
{
	size_t i;

	for (i = 0; i < h->slot_count; i++)
		entry_wipe(&h->slots[i]);
}

/* A slot for a new key authorization: a free one; when all are taken, the
 * oldest (replace_oldest) or none. */
static struct acme_smime_http01_entry *
slot_for_new(struct acme_smime_http01 *h)
{
	struct acme_smime_http01_entry *e;
	size_t i;

	for (i = 0; i < h->slot_count; i++)
		if (!h->slots[i].used)
			return &h->slots[i];
	if (!h->replace_oldest || h->slot_count == 0) {
		h->log(h->log_user, ACME_SMIME_LOG_ERROR,
			"http-01: all %u slots in use", (unsigned)h->slot_count);
		return NULL;
	}
	/* An enrollment that stopped before withdrawing left them. */
	e = &h->slots[0];
	for (i = 1; i < h->slot_count; i++)
		if ((int32_t)(h->slots[i].since - e->since) < 0)
			e = &h->slots[i];
	h->log(h->log_user, ACME_SMIME_LOG_WARN, "http-01: all %u slots in use, "
		"replacing %s", (unsigned)h->slot_count, e->identifier);
	entry_wipe(e);
	return e;
}

int
acme_smime_http01_challenge(struct acme_smime_http01 *h, int op,
	const char *identifier, const char *token, const char *key_authorization,
	int listening, uint32_t now)
{
	struct acme_smime_http01_entry *e;

	if (token == NULL || !token_ok(token, strlen(token)))
		return -1;
	e = entry_of(h, token, strlen(token));
	if (op == ACME_SMIME_CHALLENGE_REMOVE) {
		if (e != NULL) {
			h->log(h->log_user, ACME_SMIME_LOG_DEBUG,
				"http-01: withdrew %s", e->identifier);
			entry_wipe(e);
		}
		return 0;
	}
	if (op != ACME_SMIME_CHALLENGE_PROVISION || identifier == NULL ||
			key_authorization == NULL)
		return -1;
	if (!listening) {
		h->log(h->log_user, ACME_SMIME_LOG_ERROR,
			"http-01 challenge for %s but no responder is listening",
			identifier);
		return -1;
	}
	if (strlen(identifier) >= sizeof e->identifier ||
			strlen(key_authorization) >= sizeof e->key_authorization) {
		h->log(h->log_user, ACME_SMIME_LOG_ERROR, "http-01: identifier "
			"or key authorization too long");
		return -1;
	}
	if (e == NULL && (e = slot_for_new(h)) == NULL)
		return -1;
	e->used = 1;
	e->since = now;
	strcpy(e->identifier, identifier);
	strcpy(e->token, token);
	strcpy(e->key_authorization, key_authorization);
	h->log(h->log_user, ACME_SMIME_LOG_INFO, "http-01: published %s token %s",
		identifier, token);
	return 0;
}

size_t
acme_smime_http01_response(char *out, size_t size, int status,
	const char *body, int with_body)
{
	const char *reason = status == 200 ? "OK" :
		status == 404 ? "Not Found" : "Bad Request";
	int n;

	n = snprintf(out, size,
		"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
		"Content-Length: %lu\r\nConnection: close\r\n\r\n%s",
		status, reason, (unsigned long)strlen(body),
		with_body ? body : "");
	return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

int
acme_smime_http01_answer(const struct acme_smime_http01 *h,
	const char *line, char *out, size_t size, size_t *len)
{
	const struct acme_smime_http01_entry *e = NULL;
	const char *sp1, *sp2, *tok;
	size_t mlen, wlen = strlen(WELL_KNOWN);
	int head;

	sp1 = strchr(line, ' ');
	sp2 = sp1 != NULL ? strchr(sp1 + 1, ' ') : NULL;
	if (sp1 == NULL || sp2 == NULL) {
		h->log(h->log_user, ACME_SMIME_LOG_WARN,
			"http-01: malformed request");
		*len = acme_smime_http01_response(out, size, 400,
			"bad request\n", 1);
		return 400;
	}
	mlen = (size_t)(sp1 - line);
	head = mlen == 4 && memcmp(line, "HEAD", 4) == 0;
	if ((head || (mlen == 3 && memcmp(line, "GET", 3) == 0)) &&
			(size_t)(sp2 - sp1 - 1) > wlen &&
			memcmp(sp1 + 1, WELL_KNOWN, wlen) == 0) {
		tok = sp1 + 1 + wlen;
		if (token_ok(tok, (size_t)(sp2 - tok)))
			e = entry_of(h, tok, (size_t)(sp2 - tok));
	}
	if (e != NULL) {
		h->log(h->log_user, ACME_SMIME_LOG_INFO,
			"http-01: served %s token %s", e->identifier, e->token);
		*len = acme_smime_http01_response(out, size, 200,
			e->key_authorization, !head);
		return 200;
	} else {
		char shown[ACME_SMIME_HTTP01_SHOWN + 1];
		size_t i, n = (size_t)(sp2 - sp1 - 1);
		/* The target comes from the network: no control bytes in
		 * the log. */
		for (i = 0; i < n && i < sizeof shown - 1; i++)
			shown[i] = sp1[1 + i] > ' ' && sp1[1 + i] < 127 ?
				sp1[1 + i] : '?';
		shown[i] = '\0';
		h->log(h->log_user, ACME_SMIME_LOG_INFO, "http-01: 404 for %s",
			shown);
		*len = acme_smime_http01_response(out, size, 404,
			"not found\n", !head);
		return 404;
	}
}
