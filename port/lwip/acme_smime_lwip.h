/*
 * acme_smime_lwip.h -- the lwIP port of acme_smime: the network hooks of
 * acme_smime_ports over lwIP's socket API, and a small http-01 responder
 * on an lwIP listening socket for dns identifiers.
 *
 * What the port fills in ports (acme_smime_lwip_init):
 *   net_connect, net_send, net_recv, net_close, net_wait, sleep_ms,
 *   challenge; user = the struct acme_smime_lwip.
 * What the board fills in itself (the port does not touch them):
 *   unix_time, monotonic_ms, entropy, log, flash. They are called with
 *   user = the struct acme_smime_lwip; its board field is free for the
 *   board's own context.
 *
 * Usage:
 *
 *   static const struct acme_smime_lwip_host hosts[] = {
 *       { "acme.example.net", "192.0.2.10" },   name in the URL -> address
 *   };
 *   static struct acme_smime_lwip lw;
 *   static acme_smime_ports ports;             must outlive lw
 *
 *   acme_smime_lwip_init(&lw, &ports);
 *   lw.hosts = hosts; lw.host_count = 1;
 *   ports.unix_time = ...; ports.monotonic_ms = ...; ports.entropy = ...;
 *   ports.log = ...; ports.flash = ...;       the board's
 *   acme_smime_lwip_http01_listen(&lw, 80);   for dns identifiers
 *   ... acme_smime_init(&ctx, &cfg, &ports, ...), acme_smime_run(&ctx) ...
 *   acme_smime_lwip_close(&lw);
 *
 * Host names. The engine passes net_connect the host name of the URL (it
 * also sends it as the TLS server name and checks the server certificate
 * against it). The port maps it to an address with the caller's table;
 * an IP literal ("10.0.0.1", "fd00::1", or "[fd00::1]") is used as it is.
 * With LWIP_DNS enabled a name missing from the table is resolved with
 * lwip_getaddrinfo() (blocking); without it such a name fails.
 *
 * Threads. The hooks are meant for one application task (the one that
 * calls acme_smime_step/acme_smime_run); they call only the thread-safe
 * lwip_* socket functions and keep no thread of their own. The http-01
 * responder is served from inside net_wait, sleep_ms and the challenge
 * hook; a task that waits by other means calls acme_smime_lwip_serve().
 * Its key authorizations and answers are port/common/http01.c's, compiled
 * with this file. Nothing here allocates memory: all state is in struct
 * acme_smime_lwip.
 *
 * Needs lwIP 2.x with NO_SYS 0, LWIP_SOCKET 1 and LWIP_SOCKET_POLL 1
 * (lwip_poll); nothing else from lwipopts.h (see port/lwip/README.md).
 */
#ifndef ACME_SMIME_LWIP_H
#define ACME_SMIME_LWIP_H

#include <stddef.h>
#include <stdint.h>

#include "acme_smime.h"
#include "http01.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Key authorizations published at once. The engine validates one
 * authorization at a time and withdraws it before the next, so 2 is
 * ample; when every slot is taken the oldest is replaced (with a
 * warning). */
#ifndef ACME_SMIME_LWIP_HTTP01_SLOTS
#define ACME_SMIME_LWIP_HTTP01_SLOTS 2
#endif

/* Validation clients served at once (each holds an lwIP socket while
 * connected); a new one evicts the oldest that is still silent. CAs
 * validate from several vantage points at the same time (Pebble: 3
 * concurrent requests per challenge), so keep at least 3. */
#ifndef ACME_SMIME_LWIP_HTTP01_CONNS
#define ACME_SMIME_LWIP_HTTP01_CONNS 4
#endif

/* Longest request line kept ("GET /.well-known/acme-challenge/TOKEN
 * HTTP/1.1"); header lines are skipped without being stored. */
#ifndef ACME_SMIME_LWIP_HTTP01_LINE
#define ACME_SMIME_LWIP_HTTP01_LINE 224
#endif

/* A connection's buffer: the request line, then the answer. */
#define ACME_SMIME_LWIP_HTTP01_BUF \
	(ACME_SMIME_LWIP_HTTP01_LINE > ACME_SMIME_HTTP01_RESPONSE_SIZE ? \
	ACME_SMIME_LWIP_HTTP01_LINE : ACME_SMIME_HTTP01_RESPONSE_SIZE)

/* One entry of the host table: a name as it appears in URLs (compared
 * without regard to case) and the address to connect to, as text. */
struct acme_smime_lwip_host {
	const char *name;
	const char *addr;
};

struct acme_smime_lwip_http01_conn {
	int fd;                           /* -1 when the slot is free */
	uint32_t since;                   /* sys_now() when accepted */
	int state;                        /* reading the line, the head, answering */
	int newlines;                     /* consecutive line ends seen */
	size_t len;                       /* request line bytes, or answer length */
	size_t sent;                      /* answer bytes sent */
	char buf[ACME_SMIME_LWIP_HTTP01_BUF];
};

struct acme_smime_lwip {
	/* Options: set after acme_smime_lwip_init(). */
	const struct acme_smime_lwip_host *hosts;   /* name -> address table */
	size_t host_count;
	void *board;              /* free for the board's hooks */
	uint32_t http01_idle_ms;  /* drop a silent validation client (10000) */
	int nodelay;              /* TCP_NODELAY on ACME connections (1) */

	/* Counters, for tests and progress lines. */
	unsigned connections;     /* net_connect calls that returned a handle */
	unsigned http01_served;   /* 200 answers */
	unsigned http01_refused;  /* 404 and 400 answers */

	/* Private. */
	const acme_smime_ports *ports;   /* for the board's log hook */
	int listen_fd;                   /* -1: no responder */
	struct acme_smime_http01 http01; /* port/common/http01.c's table */
	struct acme_smime_http01_entry http01_slots[ACME_SMIME_LWIP_HTTP01_SLOTS];
	struct acme_smime_lwip_http01_conn conns[ACME_SMIME_LWIP_HTTP01_CONNS];
};

/* Reset p to defaults (no hosts, no responder) and point the network
 * hooks of ports at it: ports->user = p, net_*, sleep_ms, challenge.
 * The board's hooks (unix_time, monotonic_ms, entropy, log, flash) are
 * left as they are. ports must outlive p: the port logs through
 * ports->log. */
void acme_smime_lwip_init(struct acme_smime_lwip *p, acme_smime_ports *ports);

/* Open the http-01 responder on TCP port (all local addresses; the CA
 * connects to port 80 of the name being validated unless it is a test
 * CA told otherwise). Returns 0, or -1 with the reason logged. Without a
 * responder the challenge hook refuses to provision. */
int acme_smime_lwip_http01_listen(struct acme_smime_lwip *p, unsigned port);

/* Wait timeout_ms while answering validation requests (0: serve what is
 * ready now and return). Without a responder it is a plain sys_msleep. */
void acme_smime_lwip_serve(struct acme_smime_lwip *p, uint32_t timeout_ms);

/* Close the responder and its connections, wipe the published key
 * authorizations. Safe to call more than once. */
void acme_smime_lwip_close(struct acme_smime_lwip *p);

/* The hooks themselves, for callers who assemble their own ports (user is
 * a struct acme_smime_lwip *). net_connect returns an lwIP socket (>= 0)
 * whose connect may still be in progress. net_send/net_recv return the
 * byte count, 0 when the socket would block (also while the connect is in
 * progress), ACME_SMIME_NET_CLOSED on an orderly close by the peer, else
 * ACME_SMIME_NET_ERROR. net_wait returns the ready ACME_SMIME_IO_* events
 * (an error on the socket counts as ready, so that the next send/recv
 * reports it), 0 on timeout, negative when lwip_poll fails; a negative
 * handle makes it a serving sleep. */
int acme_smime_lwip_net_connect(void *user, const char *host, unsigned port);
int acme_smime_lwip_net_send(void *user, int handle, const unsigned char *buf,
	size_t len);
int acme_smime_lwip_net_recv(void *user, int handle, unsigned char *buf,
	size_t len);
void acme_smime_lwip_net_close(void *user, int handle);
int acme_smime_lwip_net_wait(void *user, int handle, int events,
	uint32_t timeout_ms);
void acme_smime_lwip_sleep_ms(void *user, uint32_t ms);
int acme_smime_lwip_challenge(void *user, int op, const char *identifier,
	const char *token, const char *key_authorization);

#ifdef __cplusplus
}
#endif

#endif /* ACME_SMIME_LWIP_H */
