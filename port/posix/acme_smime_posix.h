/*
 * acme_smime_posix.h -- the POSIX port of acme_smime: the acme_smime_ports
 * hooks over BSD sockets, poll(), clock_gettime(), getrandom() and stderr,
 * plus a tiny http-01 responder for dns identifiers.
 *
 * Usage:
 *
 *   static struct acme_smime_posix posix;
 *   acme_smime_ports ports;
 *
 *   acme_smime_posix_init(&posix, &ports);     fills every hook but flash
 *   posix.verbosity = ACME_SMIME_LOG_DEBUG;    optional
 *   acme_smime_posix_http01_listen(&posix, "127.0.0.1:5002");  optional
 *   ports.flash = ...;                          optional (flash_file.h)
 *   ... acme_smime_init(&ctx, &cfg, &ports, ...), acme_smime_run(&ctx) ...
 *   acme_smime_posix_close(&posix);
 *
 * No threads and no malloc in the hooks. The http-01 responder is served
 * from inside net_wait, sleep_ms and the challenge hook, so it answers the
 * CA's validation requests while the engine waits for its own replies or
 * sleeps between polls. A caller that waits by other means calls
 * acme_smime_posix_serve(). Its key authorizations and answers are
 * port/common/http01.c's, compiled with this file.
 *
 * Blocking calls, by design of a desktop port: getaddrinfo() in net_connect,
 * and, when a host name has several addresses, a bounded wait
 * (connect_try_ms) for each address but the last so that a refused ::1
 * falls through to 127.0.0.1. The connect to the last address is left in
 * progress; its failure shows on the first send/recv.
 */
#ifndef ACME_SMIME_POSIX_H
#define ACME_SMIME_POSIX_H

#include <stddef.h>
#include <stdint.h>

#include "acme_smime.h"
#include "http01.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Key authorizations published at once (one per dns identifier). */
#ifndef ACME_SMIME_POSIX_HTTP01_SLOTS
#define ACME_SMIME_POSIX_HTTP01_SLOTS ACME_SMIME_MAX_IDENTIFIERS
#endif

/* Validation clients served at once; a new one evicts the oldest that is
 * still silent. */
#ifndef ACME_SMIME_POSIX_HTTP01_CONNS
#define ACME_SMIME_POSIX_HTTP01_CONNS 4
#endif

/* Longest request head (request line and headers) accepted. */
#ifndef ACME_SMIME_POSIX_HTTP01_REQUEST
#define ACME_SMIME_POSIX_HTTP01_REQUEST 2048
#endif

struct acme_smime_posix_http01_conn {
	int fd;                           /* -1 when the slot is free */
	uint64_t since_ms;                /* accepted at (monotonic) */
	size_t req_len;
	char req[ACME_SMIME_POSIX_HTTP01_REQUEST];
	size_t resp_len, resp_sent;       /* resp_len 0: still reading */
	char resp[ACME_SMIME_HTTP01_RESPONSE_SIZE];
};

struct acme_smime_posix {
	/* Options: set after acme_smime_posix_init(). */
	int verbosity;            /* log messages with level <= this
	                             (ACME_SMIME_LOG_*; -1 silences all) */
	const char *log_name;     /* prefix of every log line */
	uint32_t connect_try_ms;  /* per address when more follow (1000) */
	uint32_t http01_idle_ms;  /* drop a silent validation client (10000) */

	/* Counters, for tests and progress lines. */
	unsigned connections;     /* net_connect calls that returned a handle */
	unsigned http01_served;   /* 200 answers */
	unsigned http01_refused;  /* 404 and 400 answers */

	/* http-01 responder (private); the key authorizations it serves are
	 * kept by port/common/http01.c. */
	int listen_fd;            /* -1: no responder */
	struct acme_smime_http01 http01;
	struct acme_smime_http01_entry http01_slots[ACME_SMIME_POSIX_HTTP01_SLOTS];
	struct acme_smime_posix_http01_conn conns[ACME_SMIME_POSIX_HTTP01_CONNS];
};

/* Reset p to defaults (verbosity ACME_SMIME_LOG_INFO, no responder) and
 * point every hook of ports at it: ports->user = p, net_*, sleep_ms,
 * unix_time, monotonic_ms, entropy, log and challenge. ports->flash is set
 * to NULL: the caller adds its store. */
void acme_smime_posix_init(struct acme_smime_posix *p, acme_smime_ports *ports);

/* Open the http-01 responder on "ADDR:PORT" ("[::1]:PORT" for IPv6; ADDR
 * may be a host name). Returns 0, or -1 with the reason logged. Without a
 * responder the challenge hook refuses to provision. */
int acme_smime_posix_http01_listen(struct acme_smime_posix *p,
	const char *addr_port);

/* Sleep timeout_ms while answering validation requests (0: serve what is
 * ready now and return). Without a responder it is a plain sleep. */
void acme_smime_posix_serve(struct acme_smime_posix *p, uint32_t timeout_ms);

/* Close the responder and its connections, wipe the published key
 * authorizations. Safe to call more than once. */
void acme_smime_posix_close(struct acme_smime_posix *p);

/* The hooks themselves, for callers who assemble their own ports (user is
 * a struct acme_smime_posix *, except for unix_time, monotonic_ms and
 * entropy, which ignore it: examples/lwip uses them as its board's
 * clocks and entropy). net_wait returns the ready ACME_SMIME_IO_*
 * events (an error or hang-up on the socket counts as ready, so that the
 * next send/recv reports it), 0 on timeout, negative when poll() fails;
 * a negative handle makes it a serving sleep. send maps EPIPE to
 * ACME_SMIME_NET_CLOSED. unix_time reports 0 (unknown) for a clock set
 * before 2020. */
int acme_smime_posix_net_connect(void *user, const char *host, unsigned port);
int acme_smime_posix_net_send(void *user, int handle, const unsigned char *buf,
	size_t len);
int acme_smime_posix_net_recv(void *user, int handle, unsigned char *buf,
	size_t len);
void acme_smime_posix_net_close(void *user, int handle);
int acme_smime_posix_net_wait(void *user, int handle, int events,
	uint32_t timeout_ms);
void acme_smime_posix_sleep_ms(void *user, uint32_t ms);
uint64_t acme_smime_posix_unix_time(void *user);
uint64_t acme_smime_posix_monotonic_ms(void *user);
int acme_smime_posix_entropy(void *user, unsigned char *buf, size_t len);
void acme_smime_posix_log(void *user, int level, const char *msg);
int acme_smime_posix_challenge(void *user, int op, const char *identifier,
	const char *token, const char *key_authorization);

#ifdef __cplusplus
}
#endif

#endif /* ACME_SMIME_POSIX_H */
