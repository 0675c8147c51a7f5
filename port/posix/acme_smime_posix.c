/*
 * acme_smime_posix.c -- the POSIX port of acme_smime (see the header).
 *
 * Sections:
 *   1. small helpers (time, logging)
 *   2. TCP hooks: connect, send, recv, close
 *   3. waiting: net_wait and sleep_ms, which also serve http-01
 *   4. clocks and entropy
 *   5. the http-01 responder and the challenge hook
 *   6. init and close
 *
 * Linux and the BSDs; getrandom() needs glibc 2.25 or a BSD libc of 2018+.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE 1       /* getrandom, MSG_NOSIGNAL on glibc */

#include "acme_smime_posix.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0          /* macOS: rely on SO_NOSIGPIPE below */
#endif

#if defined(__GNUC__) || defined(__clang__)
#define POSIX_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define POSIX_PRINTF(f, a)
#endif

/* A wall clock before this (2020-01-01) means "not set": report unknown,
 * so the engine refuses TLS instead of accepting expired certificates. */
#define UNIX_TIME_SANE 1577836800u

/* ------------------------------------------------------------------------
 * 1. Helpers
 * ---------------------------------------------------------------------- */

static uint64_t
mono_ms(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* user is the struct acme_smime_posix (also the http-01 table's log). */
static void
plog(void *user, int level, const char *fmt, ...)
	POSIX_PRINTF(3, 4);

static void
plog(void *user, int level, const char *fmt, ...)
{
	const struct acme_smime_posix *p = user;
	char msg[256];
	va_list ap;

	if (level > p->verbosity)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	acme_smime_posix_log(user, level, msg);
}

static int
set_nonblocking(int fd)
{
	int fl = fcntl(fd, F_GETFL, 0);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* The pending error of a socket (a failed non-blocking connect), or 0. */
static int
socket_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return errno;
	return err;
}

static void
addr_text(const struct sockaddr *sa, socklen_t len, char *out, size_t size)
{
	char host[NI_MAXHOST], serv[NI_MAXSERV];

	if (getnameinfo(sa, len, host, sizeof host, serv, sizeof serv,
			NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(out, size, "?");
		return;
	}
	if (sa->sa_family == AF_INET6)
		snprintf(out, size, "[%s]:%s", host, serv);
	else
		snprintf(out, size, "%s:%s", host, serv);
}

/* ------------------------------------------------------------------------
 * 2. TCP hooks
 * ---------------------------------------------------------------------- */

/* Start a connect; 1 connected, 0 in progress, -1 failed (errno set). */
static int
connect_start(int fd, const struct addrinfo *ai)
{
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return 1;
	if (errno == EINPROGRESS || errno == EINTR)
		return 0;
	return -1;
}

/* Wait up to ms for a connect in progress; 1 connected, 0 still in
 * progress, -1 failed (errno set). */
static int
connect_finish(int fd, uint32_t ms)
{
	struct pollfd pfd;
	int r, err;

	pfd.fd = fd;
	pfd.events = POLLOUT;
	pfd.revents = 0;
	r = poll(&pfd, 1, ms > INT_MAX ? INT_MAX : (int)ms);
	if (r == 0)
		return 0;
	if (r < 0)
		return -1;
	err = socket_error(fd);
	if (err != 0) {
		errno = err;
		return -1;
	}
	return 1;
}

static int
open_socket(const struct addrinfo *ai)
{
	int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
	int one = 1;

	if (fd < 0)
		return -1;
	if (set_nonblocking(fd) != 0) {
		close(fd);
		return -1;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef SO_NOSIGPIPE
	(void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
	return fd;
}

int
acme_smime_posix_net_connect(void *user, const char *host, unsigned port)
{
	struct acme_smime_posix *p = user;
	struct addrinfo hints, *res = NULL, *ai;
	char serv[8], where[NI_MAXHOST + NI_MAXSERV + 4];
	int fd = -1, r, gai, err = 0;

	if (host == NULL || port == 0 || port > 65535)
		return ACME_SMIME_NET_ERROR;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(serv, sizeof serv, "%u", port);
	gai = getaddrinfo(host, serv, &hints, &res);
	if (gai != 0) {
		plog(p, ACME_SMIME_LOG_ERROR, "resolve %s: %s", host,
			gai_strerror(gai));
		return ACME_SMIME_NET_ERROR;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		addr_text(ai->ai_addr, ai->ai_addrlen, where, sizeof where);
		fd = open_socket(ai);
		if (fd < 0) {
			err = errno;
			continue;
		}
		r = connect_start(fd, ai);
		/* Not the last address: give this one a bounded chance, so a
		 * refused or silent ::1 does not hide a working 127.0.0.1. */
		if (r == 0 && ai->ai_next != NULL && p->connect_try_ms > 0)
			r = connect_finish(fd, p->connect_try_ms);
		if (r > 0 || (r == 0 && ai->ai_next == NULL))
			break;
		err = r < 0 ? errno : ETIMEDOUT;
		plog(p, ACME_SMIME_LOG_DEBUG, "connect %s: %s", where,
			strerror(err));
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		plog(p, ACME_SMIME_LOG_ERROR, "connect %s:%u: %s", host, port,
			strerror(err != 0 ? err : ECONNREFUSED));
		return ACME_SMIME_NET_ERROR;
	}
	p->connections++;
	plog(p, ACME_SMIME_LOG_DEBUG, "connect %s:%u via %s (connection %u)",
		host, port, where, p->connections);
	return fd;
}

/* Map a failed send/recv: 0 would block, CLOSED, or ERROR (logged). */
static int
io_failure(struct acme_smime_posix *p, int fd, const char *what)
{
	int err = errno;

	if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
		return ACME_SMIME_NET_WOULD_BLOCK;
	if (err == ENOTCONN) {
		/* Some systems say ENOTCONN while a connect is in progress. */
		int pending = socket_error(fd);
		if (pending == 0)
			return ACME_SMIME_NET_WOULD_BLOCK;
		err = pending;
	}
	if (err == EPIPE) {
		plog(p, ACME_SMIME_LOG_DEBUG, "%s: peer closed the connection",
			what);
		return ACME_SMIME_NET_CLOSED;
	}
	plog(p, ACME_SMIME_LOG_ERROR, "%s: %s", what, strerror(err));
	return ACME_SMIME_NET_ERROR;
}

int
acme_smime_posix_net_send(void *user, int handle, const unsigned char *buf,
	size_t len)
{
	ssize_t n;

	if (len > INT_MAX)
		len = INT_MAX;
	n = send(handle, buf, len, MSG_NOSIGNAL);
	if (n >= 0)
		return (int)n;
	return io_failure(user, handle, "send");
}

int
acme_smime_posix_net_recv(void *user, int handle, unsigned char *buf,
	size_t len)
{
	ssize_t n;

	if (len == 0)
		return 0;
	if (len > INT_MAX)
		len = INT_MAX;
	n = recv(handle, buf, len, 0);
	if (n > 0)
		return (int)n;
	if (n == 0)
		return ACME_SMIME_NET_CLOSED;
	return io_failure(user, handle, "recv");
}

void
acme_smime_posix_net_close(void *user, int handle)
{
	(void)user;
	if (handle >= 0)
		close(handle);
}

/* ------------------------------------------------------------------------
 * 3. Waiting
 * ---------------------------------------------------------------------- */

static void http01_collect(struct acme_smime_posix *p, struct pollfd *fds,
	nfds_t *n);
static void http01_service(struct acme_smime_posix *p,
	const struct pollfd *fds, nfds_t first, nfds_t n);

/* Poll handle (if >= 0) together with the responder until handle is ready
 * or timeout_ms passes. Returns the ready ACME_SMIME_IO_* events (an error
 * or hang-up counts as ready for what was asked, so send/recv report it),
 * 0 on timeout, ACME_SMIME_NET_ERROR when poll fails. */
static int
wait_and_serve(struct acme_smime_posix *p, int handle, int events,
	uint32_t timeout_ms)
{
	struct pollfd fds[2 + ACME_SMIME_POSIX_HTTP01_CONNS];
	uint64_t deadline = mono_ms() + timeout_ms, now;
	nfds_t n, first;
	int r, ready;

	for (;;) {
		n = 0;
		if (handle >= 0) {
			fds[0].fd = handle;
			fds[0].events = (short)(((events & ACME_SMIME_IO_READ) ?
				POLLIN : 0) | ((events & ACME_SMIME_IO_WRITE) ?
				POLLOUT : 0));
			fds[0].revents = 0;
			n = 1;
		}
		first = n;
		http01_collect(p, fds, &n);
		now = mono_ms();
		if (n == 0 && now >= deadline)
			return 0;
		r = poll(fds, n, now >= deadline ? 0 :
			(deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now)));
		if (r < 0 && errno != EINTR) {
			plog(p, ACME_SMIME_LOG_ERROR, "poll: %s", strerror(errno));
			return ACME_SMIME_NET_ERROR;
		}
		if (r > 0) {
			http01_service(p, fds, first, n);
			if (handle >= 0 && fds[0].revents != 0) {
				ready = 0;
				if (fds[0].revents & (POLLIN | POLLHUP | POLLERR))
					ready |= ACME_SMIME_IO_READ;
				if (fds[0].revents & (POLLOUT | POLLHUP | POLLERR))
					ready |= ACME_SMIME_IO_WRITE;
				if (fds[0].revents & POLLNVAL)
					return ACME_SMIME_NET_ERROR;
				ready &= events;
				return ready != 0 ? ready : events;
			}
		}
		if (mono_ms() >= deadline)
			return 0;
	}
}

int
acme_smime_posix_net_wait(void *user, int handle, int events,
	uint32_t timeout_ms)
{
	return wait_and_serve(user, handle, events, timeout_ms);
}

void
acme_smime_posix_serve(struct acme_smime_posix *p, uint32_t timeout_ms)
{
	struct timespec ts;

	if (p->listen_fd >= 0) {
		(void)wait_and_serve(p, -1, 0, timeout_ms);
		return;
	}
	ts.tv_sec = (time_t)(timeout_ms / 1000u);
	ts.tv_nsec = (long)(timeout_ms % 1000u) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

void
acme_smime_posix_sleep_ms(void *user, uint32_t ms)
{
	acme_smime_posix_serve(user, ms);
}

/* ------------------------------------------------------------------------
 * 4. Clocks, entropy, logging
 * ---------------------------------------------------------------------- */

uint64_t
acme_smime_posix_unix_time(void *user)
{
	struct timespec ts;

	(void)user;
	if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || ts.tv_sec < 0 ||
			(uint64_t)ts.tv_sec < UNIX_TIME_SANE)
		return 0;
	return (uint64_t)ts.tv_sec;
}

uint64_t
acme_smime_posix_monotonic_ms(void *user)
{
	(void)user;
	return mono_ms();
}

int
acme_smime_posix_entropy(void *user, unsigned char *buf, size_t len)
{
	ssize_t n;

	(void)user;
	while (len > 0) {
		n = getrandom(buf, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

void
acme_smime_posix_log(void *user, int level, const char *msg)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	const struct acme_smime_posix *p = user;
	struct timespec ts;
	struct tm tm;
	char stamp[32] = "";

	if (p != NULL && level > p->verbosity)
		return;
	if (clock_gettime(CLOCK_REALTIME, &ts) == 0 &&
			gmtime_r(&ts.tv_sec, &tm) != NULL) {
		size_t k = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(stamp + k, sizeof stamp - k, ".%03ldZ",
			ts.tv_nsec / 1000000L);
	}
	fprintf(stderr, "%s %s %s: %s\n", stamp,
		p != NULL && p->log_name != NULL ? p->log_name : "acme_smime",
		level >= 0 && level <= 3 ? names[level] : "log", msg);
}

/* ------------------------------------------------------------------------
 * 5. The http-01 responder
 *
 * One listening socket and a few connection slots, all non-blocking and
 * served from poll() in wait_and_serve(). Each connection reads one
 * request head, gets one answer and is closed (Connection: close). The
 * published key authorizations and the answer to the request line are
 * port/common/http01.c's.
 * ---------------------------------------------------------------------- */

static void
conn_close(struct acme_smime_posix_http01_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->req_len = 0;
	c->resp_len = 0;
	c->resp_sent = 0;
}

static void
conn_respond(struct acme_smime_posix_http01_conn *c, int status,
	const char *body)
{
	c->resp_len = acme_smime_http01_response(c->resp, sizeof c->resp,
		status, body, 1);
	c->resp_sent = 0;
}

/* Answer the request line in c->req (NUL-terminated). */
static void
conn_answer(struct acme_smime_posix *p, struct acme_smime_posix_http01_conn *c)
{
	if (acme_smime_http01_answer(&p->http01, c->req, c->resp,
			sizeof c->resp, &c->resp_len) == 200)
		p->http01_served++;
	else
		p->http01_refused++;
	c->resp_sent = 0;
}

static void
conn_read(struct acme_smime_posix *p, struct acme_smime_posix_http01_conn *c)
{
	ssize_t n;
	char *end;

	n = recv(c->fd, c->req + c->req_len, sizeof c->req - 1 - c->req_len, 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(c);
		return;
	}
	c->req_len += (size_t)n;
	c->req[c->req_len] = '\0';
	if (memchr(c->req, '\0', c->req_len) != NULL) {
		p->http01_refused++;
		conn_respond(c, 400, "bad request\n");
		return;
	}
	end = strstr(c->req, "\r\n\r\n");
	if (end == NULL)
		end = strstr(c->req, "\n\n");
	if (end != NULL) {
		/* Only the request line matters. */
		char *eol = strpbrk(c->req, "\r\n");
		*eol = '\0';
		conn_answer(p, c);
	} else if (c->req_len == sizeof c->req - 1) {
		p->http01_refused++;
		plog(p, ACME_SMIME_LOG_WARN, "http-01: request head over %lu bytes",
			(unsigned long)(sizeof c->req - 1));
		conn_respond(c, 400, "request too long\n");
	}
}

static void
conn_write(struct acme_smime_posix_http01_conn *c)
{
	ssize_t n = send(c->fd, c->resp + c->resp_sent,
		c->resp_len - c->resp_sent, MSG_NOSIGNAL);

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(c);
		return;
	}
	c->resp_sent += (size_t)n;
	if (c->resp_sent == c->resp_len) {
		(void)shutdown(c->fd, SHUT_WR);
		conn_close(c);
	}
}

static struct acme_smime_posix_http01_conn *
conn_free_slot(struct acme_smime_posix *p)
{
	size_t i;

	for (i = 0; i < ACME_SMIME_POSIX_HTTP01_CONNS; i++)
		if (p->conns[i].fd < 0)
			return &p->conns[i];
	return NULL;
}

/* A slot for a new client: a free one, else the oldest still reading (a
 * silent client must not lock the CA's validation out). */
static struct acme_smime_posix_http01_conn *
conn_slot_for_new(struct acme_smime_posix *p)
{
	struct acme_smime_posix_http01_conn *c = conn_free_slot(p), *old = NULL;
	size_t i;

	if (c != NULL)
		return c;
	for (i = 0; i < ACME_SMIME_POSIX_HTTP01_CONNS; i++) {
		c = &p->conns[i];
		if (c->resp_len == 0 && (old == NULL || c->since_ms < old->since_ms))
			old = c;
	}
	if (old != NULL) {
		plog(p, ACME_SMIME_LOG_DEBUG, "http-01: dropped the oldest idle "
			"client for a new one");
		conn_close(old);
	}
	return old;
}

static void
http01_accept(struct acme_smime_posix *p)
{
	struct acme_smime_posix_http01_conn *c;
	int fd;

	for (;;) {
		fd = accept(p->listen_fd, NULL, NULL);
		if (fd < 0)
			return;
		c = conn_slot_for_new(p);
		if (c == NULL) {
			/* Every slot is writing an answer: refuse this one. */
			close(fd);
			continue;
		}
		if (set_nonblocking(fd) != 0) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->since_ms = mono_ms();
		c->req_len = 0;
		c->resp_len = 0;
		c->resp_sent = 0;
	}
}

/* Add the responder's descriptors to fds[*n...]: the listener, each
 * connection for reading or writing. Drops idle ones. */
static void
http01_collect(struct acme_smime_posix *p, struct pollfd *fds, nfds_t *n)
{
	uint64_t now = mono_ms();
	size_t i;

	if (p->listen_fd < 0)
		return;
	for (i = 0; i < ACME_SMIME_POSIX_HTTP01_CONNS; i++) {
		struct acme_smime_posix_http01_conn *c = &p->conns[i];
		if (c->fd >= 0 && now - c->since_ms > p->http01_idle_ms) {
			plog(p, ACME_SMIME_LOG_DEBUG, "http-01: idle client dropped");
			conn_close(c);
		}
	}
	fds[*n].fd = p->listen_fd;
	fds[*n].events = POLLIN;
	fds[*n].revents = 0;
	(*n)++;
	for (i = 0; i < ACME_SMIME_POSIX_HTTP01_CONNS; i++) {
		struct acme_smime_posix_http01_conn *c = &p->conns[i];
		if (c->fd < 0)
			continue;
		fds[*n].fd = c->fd;
		fds[*n].events = c->resp_len > 0 ? POLLOUT : POLLIN;
		fds[*n].revents = 0;
		(*n)++;
	}
}

static struct acme_smime_posix_http01_conn *
conn_of_fd(struct acme_smime_posix *p, int fd)
{
	size_t i;

	for (i = 0; i < ACME_SMIME_POSIX_HTTP01_CONNS; i++)
		if (p->conns[i].fd == fd)
			return &p->conns[i];
	return NULL;
}

static void
http01_service(struct acme_smime_posix *p, const struct pollfd *fds,
	nfds_t first, nfds_t n)
{
	nfds_t i;
	int accept_ready = 0;

	for (i = first; i < n; i++) {
		struct acme_smime_posix_http01_conn *c;
		if (fds[i].revents == 0)
			continue;
		if (fds[i].fd == p->listen_fd) {
			accept_ready = 1;
			continue;
		}
		c = conn_of_fd(p, fds[i].fd);
		if (c == NULL)
			continue;
		if (c->resp_len == 0)
			conn_read(p, c);
		if (c->fd >= 0 && c->resp_len > 0)
			conn_write(c);
	}
	if (accept_ready)
		http01_accept(p);
}

int
acme_smime_posix_http01_listen(struct acme_smime_posix *p,
	const char *addr_port)
{
	struct addrinfo hints, *res = NULL;
	char host[NI_MAXHOST];
	const char *colon, *h = addr_port;
	size_t hlen;
	int fd, one = 1, gai;

	if (addr_port == NULL || (colon = strrchr(addr_port, ':')) == NULL ||
			colon[1] == '\0') {
		plog(p, ACME_SMIME_LOG_ERROR, "http-01 listen: want ADDR:PORT");
		return -1;
	}
	hlen = (size_t)(colon - addr_port);
	if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof host) {
		plog(p, ACME_SMIME_LOG_ERROR, "http-01 listen: bad address");
		return -1;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	gai = getaddrinfo(host, colon + 1, &hints, &res);
	if (gai != 0) {
		plog(p, ACME_SMIME_LOG_ERROR, "http-01 listen %s: %s", addr_port,
			gai_strerror(gai));
		return -1;
	}
	fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
	if (fd < 0 || set_nonblocking(fd) != 0 ||
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
			bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
			listen(fd, 16) != 0) {
		plog(p, ACME_SMIME_LOG_ERROR, "http-01 listen %s: %s", addr_port,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	if (p->listen_fd >= 0)
		close(p->listen_fd);
	p->listen_fd = fd;
	plog(p, ACME_SMIME_LOG_DEBUG, "http-01: listening on %s", addr_port);
	return 0;
}

int
acme_smime_posix_challenge(void *user, int op, const char *identifier,
	const char *token, const char *key_authorization)
{
	struct acme_smime_posix *p = user;

	if (acme_smime_http01_challenge(&p->http01, op, identifier, token,
			key_authorization, p->listen_fd >= 0, (uint32_t)mono_ms()) != 0)
		return -1;
	if (op == ACME_SMIME_CHALLENGE_PROVISION)
		acme_smime_posix_serve(p, 0);
	return 0;
}

/* ------------------------------------------------------------------------
 * 6. Init and close
 * ---------------------------------------------------------------------- */

void
acme_smime_posix_init(struct acme_smime_posix *p, acme_smime_ports *ports)
{
	size_t i;

	memset(p, 0, sizeof *p);
	p->verbosity = ACME_SMIME_LOG_INFO;
	p->log_name = "acme_smime";
	p->connect_try_ms = 1000;
	p->http01_idle_ms = 10000;
	p->listen_fd = -1;
	acme_smime_http01_init(&p->http01, p->http01_slots,
		ACME_SMIME_POSIX_HTTP01_SLOTS, plog, p);
	for (i = 0; i < ACME_SMIME_POSIX_HTTP01_CONNS; i++)
		p->conns[i].fd = -1;

	memset(ports, 0, sizeof *ports);
	ports->user = p;
	ports->net_connect = acme_smime_posix_net_connect;
	ports->net_send = acme_smime_posix_net_send;
	ports->net_recv = acme_smime_posix_net_recv;
	ports->net_close = acme_smime_posix_net_close;
	ports->net_wait = acme_smime_posix_net_wait;
	ports->sleep_ms = acme_smime_posix_sleep_ms;
	ports->unix_time = acme_smime_posix_unix_time;
	ports->monotonic_ms = acme_smime_posix_monotonic_ms;
	ports->entropy = acme_smime_posix_entropy;
	ports->log = acme_smime_posix_log;
	ports->flash = NULL;
	ports->challenge = acme_smime_posix_challenge;
}

void
acme_smime_posix_close(struct acme_smime_posix *p)
{
	size_t i;

	for (i = 0; i < ACME_SMIME_POSIX_HTTP01_CONNS; i++)
		conn_close(&p->conns[i]);
	acme_smime_http01_wipe(&p->http01);
	if (p->listen_fd >= 0)
		close(p->listen_fd);
	p->listen_fd = -1;
}
