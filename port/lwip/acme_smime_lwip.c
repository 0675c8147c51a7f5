/*
 * acme_smime_lwip.c -- the lwIP port of acme_smime (see the header).
 *
 * Sections:
 *   1. helpers (logging, errno, addresses)
 *   2. TCP hooks: connect, send, recv, close
 *   3. waiting: net_wait and sleep_ms, which also serve http-01
 *   4. the http-01 responder and the challenge hook
 *   5. init and close
 *
 * Only lwip_* functions are called (never the libc socket calls, which on
 * a host would bypass lwIP), so the file builds whatever LWIP_COMPAT_SOCKETS
 * says.
 */
/* Debian's liblwip-dev uses the glibc socket headers
 * (LWIP_SOCKET_EXTERNAL_HEADERS) and its arch.h typedefs ssize_t as int
 * unless SSIZE_MAX is visible: under -std=c99 the POSIX names must be
 * switched on before any header. Harmless on an embedded libc. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "acme_smime_lwip.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lwip/opt.h"
#include "lwip/api.h"
#include "lwip/def.h"
#include "lwip/errno.h"
#include "lwip/ip_addr.h"
#include "lwip/sockets.h"
#include "lwip/sys.h"

#if LWIP_SOCKET_EXTERNAL_HEADERS
#include <fcntl.h>              /* F_GETFL, O_NONBLOCK of the host libc */
#endif

#if NO_SYS || !LWIP_SOCKET
#error "acme_smime_lwip needs lwIP with NO_SYS 0 and LWIP_SOCKET 1"
#endif
#if !LWIP_SOCKET_POLL
#error "acme_smime_lwip needs LWIP_SOCKET_POLL 1 (lwip_poll)"
#endif
#if !LWIP_TCP
#error "acme_smime_lwip needs LWIP_TCP 1"
#endif

/* lwIP and the BSDs agree on the option number; the external glibc
 * headers name it only in <netinet/tcp.h>, which must stay out of lwIP
 * code: it also defines TCP_MSS (512), the cause of Debian's tapif bug
 * (see examples/lwip/tapdev.c). */
#ifndef TCP_NODELAY
#define TCP_NODELAY 0x01
#endif

#ifndef POLLHUP
#define POLLHUP 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define LWIP_PORT_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define LWIP_PORT_PRINTF(f, a)
#endif

/* Connection states of the responder. */
#define HC_LINE   0     /* reading the request line */
#define HC_HEAD   1     /* skipping header lines to the empty one */
#define HC_ANSWER 2     /* sending buf[0..len) */

/* ------------------------------------------------------------------------
 * 1. Helpers
 * ---------------------------------------------------------------------- */

/* user is the struct acme_smime_lwip (also the http-01 table's log). */
static void
plog(void *user, int level, const char *fmt, ...)
	LWIP_PORT_PRINTF(3, 4);

static void
plog(void *user, int level, const char *fmt, ...)
{
	const struct acme_smime_lwip *p = user;
	char msg[160];
	va_list ap;

	if (p->ports == NULL || p->ports->log == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	p->ports->log(p->ports->user, level, msg);
}

/* A name for the errno values lwIP sets (err_to_errno), without
 * strerror(), which an embedded libc may not have. */
static const char *
errno_name(int e)
{
	switch (e) {
	case ECONNREFUSED: return "connection refused";
	case ECONNRESET: return "connection reset";
	case ECONNABORTED: return "connection aborted";
	case ETIMEDOUT: return "timed out";
	case EHOSTUNREACH: return "host unreachable";
	case ENOTCONN: return "not connected";
	case ENOMEM: return "out of memory (lwIP pools)";
	case ENOBUFS: return "no buffer space (lwIP pools)";
	case ENFILE: return "no free lwIP socket (MEMP_NUM_NETCONN)";
	case EADDRINUSE: return "address in use";
	case EIO: return "I/O error";
	case EINVAL: return "invalid argument";
	case EBADF: return "bad socket";
	default: return "error";
	}
}

static uint32_t
since(uint32_t start)
{
	return (uint32_t)(sys_now() - start);
}

static int
set_nonblocking(int fd)
{
	int fl = lwip_fcntl(fd, F_GETFL, 0);

	if (fl < 0)
		fl = 0;
	return lwip_fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -1 : 0;
}

static int
ascii_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int
name_equal(const char *a, const char *b)
{
	while (*a != '\0' && ascii_lower((unsigned char)*a) ==
			ascii_lower((unsigned char)*b)) {
		a++;
		b++;
	}
	return *a == '\0' && *b == '\0';
}

/* Parse an IP literal, with or without [] around an IPv6 one. */
static int
parse_ip(const char *text, ip_addr_t *ip)
{
	char tmp[48];
	size_t n = strlen(text);

	if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
		if (n - 2 >= sizeof tmp)
			return -1;
		memcpy(tmp, text + 1, n - 2);
		tmp[n - 2] = '\0';
		text = tmp;
	}
	return ipaddr_aton(text, ip) ? 0 : -1;
}

/* The address for host: the table, an IP literal, or (LWIP_DNS) the
 * resolver. Returns 0 or -1 (logged). */
static int
host_address(struct acme_smime_lwip *p, const char *host, ip_addr_t *ip)
{
	size_t i;

	for (i = 0; i < p->host_count && p->hosts != NULL; i++) {
		const struct acme_smime_lwip_host *h = &p->hosts[i];
		if (h->name == NULL || h->addr == NULL || !name_equal(h->name, host))
			continue;
		if (parse_ip(h->addr, ip) == 0)
			return 0;
		plog(p, ACME_SMIME_LOG_ERROR, "host table: %s maps to %s, "
			"which is not an IP address", h->name, h->addr);
		return -1;
	}
	if (parse_ip(host, ip) == 0)
		return 0;
#if LWIP_DNS
	if (netconn_gethostbyname(host, ip) == ERR_OK)
		return 0;
	plog(p, ACME_SMIME_LOG_ERROR, "resolve %s: not in the host table and "
		"DNS failed", host);
#else
	plog(p, ACME_SMIME_LOG_ERROR, "no address for %s: add it to the host "
		"table (this lwIP has no DNS)", host);
#endif
	return -1;
}

union sockaddr_any {
	struct sockaddr sa;
#if LWIP_IPV4
	struct sockaddr_in in;
#endif
#if LWIP_IPV6
	struct sockaddr_in6 in6;
#endif
};

/* Fill sa for ip:port; returns its length, or 0 for an address family
 * this lwIP lacks. */
static socklen_t
make_sockaddr(union sockaddr_any *sa, ip_addr_t *ip, unsigned port)
{
	memset(sa, 0, sizeof *sa);
#if LWIP_IPV6
	if (IP_IS_V6(ip)) {
		sa->in6.sin6_family = AF_INET6;
		sa->in6.sin6_port = lwip_htons((u16_t)port);
		memcpy(&sa->in6.sin6_addr, ip_2_ip6(ip)->addr, 16);
		return (socklen_t)sizeof sa->in6;
	}
#endif
#if LWIP_IPV4
	if (IP_IS_V4(ip)) {
		sa->in.sin_family = AF_INET;
		sa->in.sin_port = lwip_htons((u16_t)port);
		sa->in.sin_addr.s_addr = ip4_addr_get_u32(ip_2_ip4(ip));
		return (socklen_t)sizeof sa->in;
	}
#endif
	return 0;
}

/* ------------------------------------------------------------------------
 * 2. TCP hooks
 * ---------------------------------------------------------------------- */

int
acme_smime_lwip_net_connect(void *user, const char *host, unsigned port)
{
	struct acme_smime_lwip *p = user;
	union sockaddr_any sa;
	ip_addr_t ip;
	socklen_t salen;
	char where[IPADDR_STRLEN_MAX];
	int fd, one = 1, err;

	if (host == NULL || port == 0 || port > 65535)
		return ACME_SMIME_NET_ERROR;
	if (host_address(p, host, &ip) != 0)
		return ACME_SMIME_NET_ERROR;
	salen = make_sockaddr(&sa, &ip, port);
	ipaddr_ntoa_r(&ip, where, sizeof where);
	if (salen == 0) {
		plog(p, ACME_SMIME_LOG_ERROR, "connect %s: address family not "
			"built into lwIP", where);
		return ACME_SMIME_NET_ERROR;
	}
	fd = lwip_socket(sa.sa.sa_family, SOCK_STREAM, 0);
	if (fd < 0) {
		plog(p, ACME_SMIME_LOG_ERROR, "socket: %s (errno %d)",
			errno_name(errno), errno);
		return ACME_SMIME_NET_ERROR;
	}
	if (set_nonblocking(fd) != 0) {
		plog(p, ACME_SMIME_LOG_ERROR, "socket: cannot make it non-blocking");
		lwip_close(fd);
		return ACME_SMIME_NET_ERROR;
	}
	if (p->nodelay)
		(void)lwip_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
			sizeof one);
	if (lwip_connect(fd, &sa.sa, salen) != 0) {
		err = errno;
		if (err != EINPROGRESS && err != EALREADY && err != EWOULDBLOCK &&
				err != EINTR) {
			plog(p, ACME_SMIME_LOG_ERROR, "connect %s (%s:%u): %s "
				"(errno %d)", host, where, port, errno_name(err), err);
			lwip_close(fd);
			return ACME_SMIME_NET_ERROR;
		}
	}
	p->connections++;
	plog(p, ACME_SMIME_LOG_DEBUG, "connect %s:%u via lwIP to %s "
		"(socket %d, connection %u)", host, port, where, fd,
		p->connections);
	return fd;
}

/* The pending error of a socket (a failed connect), or 0. */
static int
socket_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof err;

	if (lwip_getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return errno;
	return err;
}

/* Map a failed send/recv: 0 would block, CLOSED, or ERROR (logged). */
static int
io_failure(struct acme_smime_lwip *p, int fd, const char *what)
{
	int err = errno;

	/* EINPROGRESS/EALREADY: lwIP's answer while the connect is still
	 * going on. */
	if (err == EWOULDBLOCK || err == EAGAIN || err == EINTR ||
			err == EINPROGRESS || err == EALREADY)
		return ACME_SMIME_NET_WOULD_BLOCK;
	if (err == ENOTCONN) {
		int pending = socket_error(fd);
		if (pending == 0 || pending == EINPROGRESS || pending == EALREADY)
			return ACME_SMIME_NET_WOULD_BLOCK;
		err = pending;
	}
	if (err == EPIPE) {
		plog(p, ACME_SMIME_LOG_DEBUG, "%s: peer closed the connection",
			what);
		return ACME_SMIME_NET_CLOSED;
	}
	plog(p, ACME_SMIME_LOG_ERROR, "%s: %s (errno %d)", what,
		errno_name(err), err);
	return ACME_SMIME_NET_ERROR;
}

/* One send (out set) or recv (in set) of at most len bytes: the byte
 * count, 0 when it would block, ACME_SMIME_NET_CLOSED when the peer has
 * closed (recv), else what io_failure makes of errno. */
static int
io_transfer(struct acme_smime_lwip *p, int fd, const unsigned char *out,
	unsigned char *in, size_t len)
{
	ssize_t n;

	if (len == 0)
		return 0;
	if (len > INT_MAX)
		len = INT_MAX;
	if (out != NULL)
		n = lwip_send(fd, out, len, MSG_DONTWAIT);
	else
		n = lwip_recv(fd, in, len, MSG_DONTWAIT);
	if (n > 0)
		return (int)n;
	if (n == 0)
		return out != NULL ? ACME_SMIME_NET_WOULD_BLOCK :
			ACME_SMIME_NET_CLOSED;
	return io_failure(p, fd, out != NULL ? "send" : "recv");
}

int
acme_smime_lwip_net_send(void *user, int handle, const unsigned char *buf,
	size_t len)
{
	return io_transfer(user, handle, buf, NULL, len);
}

int
acme_smime_lwip_net_recv(void *user, int handle, unsigned char *buf,
	size_t len)
{
	return io_transfer(user, handle, NULL, buf, len);
}

void
acme_smime_lwip_net_close(void *user, int handle)
{
	(void)user;
	if (handle >= 0)
		lwip_close(handle);
}

/* ------------------------------------------------------------------------
 * 3. Waiting
 * ---------------------------------------------------------------------- */

static void http01_collect(struct acme_smime_lwip *p, struct pollfd *fds,
	nfds_t *n);
static void http01_service(struct acme_smime_lwip *p,
	const struct pollfd *fds, nfds_t first, nfds_t n);

/* lwip_poll handle (if >= 0) together with the responder until handle is
 * ready or timeout_ms passes. Returns the ready ACME_SMIME_IO_* events
 * (an error counts as ready for what was asked, so send/recv report it),
 * 0 on timeout, ACME_SMIME_NET_ERROR when lwip_poll fails or the handle
 * is not a socket. */
static int
wait_and_serve(struct acme_smime_lwip *p, int handle, int events,
	uint32_t timeout_ms)
{
	struct pollfd fds[2 + ACME_SMIME_LWIP_HTTP01_CONNS];
	uint32_t start = sys_now(), elapsed, left;
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
		elapsed = since(start);
		left = elapsed >= timeout_ms ? 0 : timeout_ms - elapsed;
		if (n == 0) {
			if (left > 0)
				sys_msleep(left);
			return 0;
		}
		/* Wake up now and then while validation clients are
		 * connected, to drop the silent ones. */
		if (n > first + 1 && left > 1000)
			left = 1000;
		r = lwip_poll(fds, n, left > INT_MAX ? INT_MAX : (int)left);
		if (r < 0 && errno != EINTR) {
			plog(p, ACME_SMIME_LOG_ERROR, "lwip_poll: %s (errno %d)",
				errno_name(errno), errno);
			return ACME_SMIME_NET_ERROR;
		}
		if (r > 0) {
			http01_service(p, fds, first, n);
			if (handle >= 0 && fds[0].revents != 0) {
				if (fds[0].revents & POLLNVAL)
					return ACME_SMIME_NET_ERROR;
				ready = 0;
				if (fds[0].revents & (POLLIN | POLLHUP | POLLERR))
					ready |= ACME_SMIME_IO_READ;
				if (fds[0].revents & (POLLOUT | POLLHUP | POLLERR))
					ready |= ACME_SMIME_IO_WRITE;
				ready &= events;
				return ready != 0 ? ready : events;
			}
		}
		if (since(start) >= timeout_ms)
			return 0;
	}
}

int
acme_smime_lwip_net_wait(void *user, int handle, int events,
	uint32_t timeout_ms)
{
	return wait_and_serve(user, handle, events, timeout_ms);
}

void
acme_smime_lwip_serve(struct acme_smime_lwip *p, uint32_t timeout_ms)
{
	(void)wait_and_serve(p, -1, 0, timeout_ms);
}

void
acme_smime_lwip_sleep_ms(void *user, uint32_t ms)
{
	acme_smime_lwip_serve(user, ms);
}

/* ------------------------------------------------------------------------
 * 4. The http-01 responder
 *
 * One listening socket and a few connection slots, all non-blocking and
 * served from lwip_poll() in wait_and_serve(). Each connection reads one
 * request line, skips the header lines without storing them, gets one
 * answer and is closed (Connection: close). The published key
 * authorizations and the answer to the request line are
 * port/common/http01.c's.
 * ---------------------------------------------------------------------- */

static void
conn_close(struct acme_smime_lwip_http01_conn *c)
{
	if (c->fd >= 0)
		lwip_close(c->fd);
	c->fd = -1;
	c->state = HC_LINE;
	c->newlines = 0;
	c->len = 0;
	c->sent = 0;
}

/* Put the answer in c->buf (the request line is no longer needed). */
static void
conn_respond(struct acme_smime_lwip_http01_conn *c, int status,
	const char *body)
{
	c->state = HC_ANSWER;
	c->len = acme_smime_http01_response(c->buf, sizeof c->buf, status,
		body, 1);
	c->sent = 0;
}

/* Answer the request line in c->buf (NUL-terminated), in c->buf. */
static void
conn_answer(struct acme_smime_lwip *p, struct acme_smime_lwip_http01_conn *c)
{
	if (acme_smime_http01_answer(&p->http01, c->buf, c->buf,
			sizeof c->buf, &c->len) == 200)
		p->http01_served++;
	else
		p->http01_refused++;
	c->state = HC_ANSWER;
	c->sent = 0;
}

/* Feed received bytes to the request parser; may switch to HC_ANSWER. */
static void
conn_feed(struct acme_smime_lwip *p, struct acme_smime_lwip_http01_conn *c,
	const char *data, size_t n)
{
	size_t i;

	for (i = 0; i < n && c->state != HC_ANSWER; i++) {
		char ch = data[i];
		if (ch == '\0') {
			p->http01_refused++;
			conn_respond(c, 400, "bad request\n");
		} else if (c->state == HC_LINE) {
			if (ch == '\n') {
				if (c->len > 0 && c->buf[c->len - 1] == '\r')
					c->len--;
				c->buf[c->len] = '\0';
				c->state = HC_HEAD;
				c->newlines = 1;
			} else if (c->len < ACME_SMIME_LWIP_HTTP01_LINE - 1) {
				c->buf[c->len++] = ch;
			} else {
				p->http01_refused++;
				plog(p, ACME_SMIME_LOG_WARN, "http-01: request "
					"line over %u bytes",
					(unsigned)ACME_SMIME_LWIP_HTTP01_LINE - 1);
				conn_respond(c, 400, "request too long\n");
			}
		} else if (ch == '\n') {
			if (++c->newlines == 2)
				conn_answer(p, c);
		} else if (ch != '\r') {
			c->newlines = 0;
		}
	}
}

static void
conn_read(struct acme_smime_lwip *p, struct acme_smime_lwip_http01_conn *c)
{
	char chunk[128];
	ssize_t n;

	while (c->fd >= 0 && c->state != HC_ANSWER) {
		n = lwip_recv(c->fd, chunk, sizeof chunk, MSG_DONTWAIT);
		if (n < 0 && (errno == EWOULDBLOCK || errno == EAGAIN ||
				errno == EINTR))
			return;
		if (n <= 0) {
			conn_close(c);
			return;
		}
		conn_feed(p, c, chunk, (size_t)n);
	}
}

static void
conn_write(struct acme_smime_lwip_http01_conn *c)
{
	ssize_t n;

	if (c->len == 0) {              /* the answer did not fit */
		conn_close(c);
		return;
	}
	n = lwip_send(c->fd, c->buf + c->sent, c->len - c->sent, MSG_DONTWAIT);
	if (n < 0 && (errno == EWOULDBLOCK || errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(c);
		return;
	}
	c->sent += (size_t)n;
	/* Everything is queued: lwIP sends it, then the FIN. The whole
	 * request was read, so the close is graceful (no RST). */
	if (c->sent == c->len)
		conn_close(c);
}

/* A slot for a new client: a free one, else the oldest still reading (a
 * silent client must not lock the CA's validation out). */
static struct acme_smime_lwip_http01_conn *
conn_slot_for_new(struct acme_smime_lwip *p)
{
	struct acme_smime_lwip_http01_conn *c, *old = NULL;
	size_t i;

	for (i = 0; i < ACME_SMIME_LWIP_HTTP01_CONNS; i++)
		if (p->conns[i].fd < 0)
			return &p->conns[i];
	for (i = 0; i < ACME_SMIME_LWIP_HTTP01_CONNS; i++) {
		c = &p->conns[i];
		if (c->state != HC_ANSWER && (old == NULL ||
				(int32_t)(c->since - old->since) < 0))
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
http01_accept(struct acme_smime_lwip *p)
{
	struct acme_smime_lwip_http01_conn *c;
	int fd;

	for (;;) {
		fd = lwip_accept(p->listen_fd, NULL, NULL);
		if (fd < 0)
			return;
		c = conn_slot_for_new(p);
		if (c == NULL || set_nonblocking(fd) != 0) {
			/* Every slot is writing an answer: refuse this one. */
			lwip_close(fd);
			continue;
		}
		c->fd = fd;
		c->since = sys_now();
		c->state = HC_LINE;
		c->newlines = 0;
		c->len = 0;
		c->sent = 0;
	}
}

/* Add the responder's sockets to fds[*n...]: the listener, each
 * connection for reading or writing. Drops idle ones. */
static void
http01_collect(struct acme_smime_lwip *p, struct pollfd *fds, nfds_t *n)
{
	size_t i;

	if (p->listen_fd < 0)
		return;
	for (i = 0; i < ACME_SMIME_LWIP_HTTP01_CONNS; i++) {
		struct acme_smime_lwip_http01_conn *c = &p->conns[i];
		if (c->fd >= 0 && since(c->since) > p->http01_idle_ms) {
			plog(p, ACME_SMIME_LOG_DEBUG, "http-01: idle client dropped");
			conn_close(c);
		}
	}
	fds[*n].fd = p->listen_fd;
	fds[*n].events = POLLIN;
	fds[*n].revents = 0;
	(*n)++;
	for (i = 0; i < ACME_SMIME_LWIP_HTTP01_CONNS; i++) {
		struct acme_smime_lwip_http01_conn *c = &p->conns[i];
		if (c->fd < 0)
			continue;
		fds[*n].fd = c->fd;
		fds[*n].events = c->state == HC_ANSWER ? POLLOUT : POLLIN;
		fds[*n].revents = 0;
		(*n)++;
	}
}

static struct acme_smime_lwip_http01_conn *
conn_of_fd(struct acme_smime_lwip *p, int fd)
{
	size_t i;

	for (i = 0; i < ACME_SMIME_LWIP_HTTP01_CONNS; i++)
		if (p->conns[i].fd == fd)
			return &p->conns[i];
	return NULL;
}

static void
http01_service(struct acme_smime_lwip *p, const struct pollfd *fds,
	nfds_t first, nfds_t n)
{
	nfds_t i;
	int accept_ready = 0;

	for (i = first; i < n; i++) {
		struct acme_smime_lwip_http01_conn *c;
		if (fds[i].revents == 0)
			continue;
		if (fds[i].fd == p->listen_fd) {
			accept_ready = 1;
			continue;
		}
		c = conn_of_fd(p, fds[i].fd);
		if (c == NULL)
			continue;
		if (c->state != HC_ANSWER)
			conn_read(p, c);
		if (c->fd >= 0 && c->state == HC_ANSWER)
			conn_write(c);
	}
	if (accept_ready)
		http01_accept(p);
}

int
acme_smime_lwip_http01_listen(struct acme_smime_lwip *p, unsigned port)
{
	union sockaddr_any sa;
	ip_addr_t any;
	socklen_t salen;
	int fd, one = 1;

	if (port == 0 || port > 65535) {
		plog(p, ACME_SMIME_LOG_ERROR, "http-01 listen: bad port %u", port);
		return -1;
	}
#if LWIP_IPV4
	ip_addr_set_any(0, &any);
#else
	ip_addr_set_any(1, &any);
#endif
	salen = make_sockaddr(&sa, &any, port);
	fd = lwip_socket(sa.sa.sa_family, SOCK_STREAM, 0);
	if (fd < 0) {
		plog(p, ACME_SMIME_LOG_ERROR, "http-01 listen: socket: %s",
			errno_name(errno));
		return -1;
	}
	(void)lwip_setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (set_nonblocking(fd) != 0 || lwip_bind(fd, &sa.sa, salen) != 0 ||
			lwip_listen(fd, ACME_SMIME_LWIP_HTTP01_CONNS) != 0) {
		plog(p, ACME_SMIME_LOG_ERROR, "http-01 listen on port %u: %s "
			"(errno %d)", port, errno_name(errno), errno);
		lwip_close(fd);
		return -1;
	}
	if (p->listen_fd >= 0)
		lwip_close(p->listen_fd);
	p->listen_fd = fd;
	plog(p, ACME_SMIME_LOG_DEBUG, "http-01: listening on lwIP port %u", port);
	return 0;
}

int
acme_smime_lwip_challenge(void *user, int op, const char *identifier,
	const char *token, const char *key_authorization)
{
	struct acme_smime_lwip *p = user;

	if (acme_smime_http01_challenge(&p->http01, op, identifier, token,
			key_authorization, p->listen_fd >= 0, sys_now()) != 0)
		return -1;
	if (op == ACME_SMIME_CHALLENGE_PROVISION)
		acme_smime_lwip_serve(p, 0);
	return 0;
}

/* ------------------------------------------------------------------------
 * 5. Init and close
 * ---------------------------------------------------------------------- */

void
acme_smime_lwip_init(struct acme_smime_lwip *p, acme_smime_ports *ports)
{
	size_t i;

	memset(p, 0, sizeof *p);
	p->http01_idle_ms = 10000;
	p->nodelay = 1;
	p->listen_fd = -1;
	p->ports = ports;
	acme_smime_http01_init(&p->http01, p->http01_slots,
		ACME_SMIME_LWIP_HTTP01_SLOTS, plog, p);
	/* Two slots: one left behind by a stopped enrollment must not lock
	 * the next one out. */
	p->http01.replace_oldest = 1;
	for (i = 0; i < ACME_SMIME_LWIP_HTTP01_CONNS; i++)
		p->conns[i].fd = -1;

	ports->user = p;
	ports->net_connect = acme_smime_lwip_net_connect;
	ports->net_send = acme_smime_lwip_net_send;
	ports->net_recv = acme_smime_lwip_net_recv;
	ports->net_close = acme_smime_lwip_net_close;
	ports->net_wait = acme_smime_lwip_net_wait;
	ports->sleep_ms = acme_smime_lwip_sleep_ms;
	ports->challenge = acme_smime_lwip_challenge;
}

void
acme_smime_lwip_close(struct acme_smime_lwip *p)
{
	size_t i;

	for (i = 0; i < ACME_SMIME_LWIP_HTTP01_CONNS; i++)
		conn_close(&p->conns[i]);
	acme_smime_http01_wipe(&p->http01);
	if (p->listen_fd >= 0)
		lwip_close(p->listen_fd);
	p->listen_fd = -1;
}
