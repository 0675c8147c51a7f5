/*
 * http01.h -- the half of an http-01 responder that does not depend on the
 * network stack, shared by the ports (port/posix, port/lwip): the table of
 * published key authorizations behind the challenge hook, and the answer
 * to a request line.
 *
 * A port keeps the sockets: it accepts the CA's connections, reads each
 * request head its own way, hands the request line to
 * acme_smime_http01_answer() and sends what it wrote. Its challenge hook
 * calls acme_smime_http01_challenge().
 *
 *   static struct acme_smime_http01_entry slots[2];
 *   static struct acme_smime_http01 h;
 *
 *   acme_smime_http01_init(&h, slots, 2, port_log, port);
 *   h.replace_oldest = 1;                         optional
 *   ... challenge hook: acme_smime_http01_challenge(&h, op, ...)
 *   ... a request line: acme_smime_http01_answer(&h, line, out, size, &len)
 *   acme_smime_http01_wipe(&h);
 *
 * No allocation, no clock of its own (the caller passes the time), no
 * network call. Messages go through the port's log function.
 */
#ifndef ACME_SMIME_HTTP01_H
#define ACME_SMIME_HTTP01_H

#include <stddef.h>
#include <stdint.h>

#include "acme_smime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A key authorization: token "." base64url(SHA-256 thumbprint). */
#define ACME_SMIME_HTTP01_KEYAUTH_SIZE \
	(ACME_SMIME_MAX_TOKEN + 1 + ACME_SMIME_THUMBPRINT_SIZE)

/* Room for any answer: the status line and headers (under 100 bytes)
 * and the longest key authorization. */
#define ACME_SMIME_HTTP01_RESPONSE_SIZE (ACME_SMIME_HTTP01_KEYAUTH_SIZE + 128)

/* The most of a refused request target a log line shows. */
#define ACME_SMIME_HTTP01_SHOWN 100

struct acme_smime_http01_entry {
	int used;
	uint32_t since;                   /* the caller's clock when published */
	char identifier[ACME_SMIME_MAX_ADDR + 1];
	char token[ACME_SMIME_MAX_TOKEN + 1];
	char key_authorization[ACME_SMIME_HTTP01_KEYAUTH_SIZE];
};

/* The port's log: level ACME_SMIME_LOG_*, then printf arguments. */
typedef void (*acme_smime_http01_log_fn)(void *user, int level,
	const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
	__attribute__((format(printf, 3, 4)))
#endif
	;

struct acme_smime_http01 {
	/* Option: set after acme_smime_http01_init(). */
	int replace_oldest;       /* every slot taken: 1 replaces the oldest
	                             (with a warning), 0 refuses (default) */

	/* Private. */
	struct acme_smime_http01_entry *slots;
	size_t slot_count;
	acme_smime_http01_log_fn log;
	void *log_user;
};

/* Take slots[0..count) (emptied) as the table; messages go to
 * log(log_user, ...). */
void acme_smime_http01_init(struct acme_smime_http01 *h,
	struct acme_smime_http01_entry *slots, size_t count,
	acme_smime_http01_log_fn log, void *log_user);

/* The work of the challenge hook (acme_smime_ports.challenge): op
 * ACME_SMIME_CHALLENGE_PROVISION publishes key_authorization for token,
 * ACME_SMIME_CHALLENGE_REMOVE withdraws and wipes it. listening says
 * whether the port has a responder open (without one nothing is
 * published); now is the caller's clock, which only orders the slots for
 * replace_oldest. Returns 0, or -1 (logged unless the arguments are
 * invalid). */
int acme_smime_http01_challenge(struct acme_smime_http01 *h, int op,
	const char *identifier, const char *token, const char *key_authorization,
	int listening, uint32_t now);

/* Answer a request line (NUL-terminated, without its line end): 200 and
 * the key authorization for "GET /.well-known/acme-challenge/TOKEN" of a
 * published token (HEAD: the same without the body), 404 for any other
 * target or method, 400 when the line is not "METHOD TARGET VERSION".
 * The whole response goes to out, its length to *len (0 if it does not
 * fit in size; ACME_SMIME_HTTP01_RESPONSE_SIZE always does). out may be
 * the buffer that holds line: the line is read before out is written.
 * Returns the status. */
int acme_smime_http01_answer(const struct acme_smime_http01 *h,
	const char *line, char *out, size_t size, size_t *len);

/* A complete "Connection: close" response of status (200, 404, 400) with
 * a text/plain body (its length is announced either way; with_body 0
 * leaves it out, for HEAD). Returns the length written to out, or 0 if it
 * does not fit. */
size_t acme_smime_http01_response(char *out, size_t size, int status,
	const char *body, int with_body);

/* Wipe every published key authorization. */
void acme_smime_http01_wipe(struct acme_smime_http01 *h);

#ifdef __cplusplus
}
#endif

#endif /* ACME_SMIME_HTTP01_H */
