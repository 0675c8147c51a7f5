/*
 * dns_txt.c -- a small UDP DNS client for TXT records (see the header).
 *
 * Every length in an answer is checked against what was received; names
 * in the answer section are skipped, never followed, so compression
 * pointers cannot loop.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE 1       /* getrandom */

#include "dns_txt.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define DNS_HEADER   12
#define DNS_TYPE_TXT 16
#define DNS_TYPE_OPT 41
#define DNS_CLASS_IN 1
#define DNS_EDNS_PAYLOAD 1232   /* the DNS flag day 2020 size */
#define DNS_MAX_NAME 255        /* encoded, RFC 1035 section 2.3.4 */

static unsigned
get16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static void
put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static long
elapsed_ms(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long)(t.tv_sec - t0->tv_sec) * 1000 +
	    (t.tv_nsec - t0->tv_nsec) / 1000000;
}

int
acme_smime_dns_resolver_init(struct acme_smime_dns_resolver *res,
	const char *host_port)
{
	const char *host = host_port, *port = "53", *end;
	size_t hlen;

	memset(res, 0, sizeof *res);
	if (host_port == NULL) {
		return -1;
	}
	if (host[0] == '[') {
		end = strchr(host, ']');
		if (end == NULL || (end[1] != '\0' && end[1] != ':')) {
			return -1;
		}
		host++;
		hlen = (size_t)(end - host);
		if (end[1] == ':') {
			port = end + 2;
		}
	} else {
		end = strrchr(host, ':');
		if (end != NULL && strchr(host, ':') != end) {
			end = NULL;             /* a bare IPv6 address */
		}
		hlen = end != NULL ? (size_t)(end - host) : strlen(host);
		if (end != NULL) {
			port = end + 1;
		}
	}
	if (hlen == 0 || hlen >= sizeof res->host || port[0] == '\0' ||
	    strlen(port) >= sizeof res->port ||
	    strspn(port, "0123456789") != strlen(port)) {
		return -1;
	}
	memcpy(res->host, host, hlen);
	res->host[hlen] = '\0';
	strcpy(res->port, port);
	res->timeout_ms = 2000;
	res->attempts = 2;
	return 0;
}

/* The question: name as labels, TXT, IN. Returns its length or -1. */
static int
put_question(unsigned char *q, const char *name)
{
	size_t n = 0, len;
	const char *dot;

	while (*name != '\0') {
		dot = strchr(name, '.');
		len = dot != NULL ? (size_t)(dot - name) : strlen(name);
		if (len == 0 || len > 63 || n + 1 + len + 1 > DNS_MAX_NAME) {
			return -1;
		}
		q[n++] = (unsigned char)len;
		memcpy(q + n, name, len);
		n += len;
		name += len;
		if (*name == '.') {
			name++;
		}
	}
	if (n == 0) {
		return -1;
	}
	q[n++] = 0;
	put16(q + n, DNS_TYPE_TXT);
	put16(q + n + 2, DNS_CLASS_IN);
	return (int)(n + 4);
}

/* The query: header (RD, one question, one additional: EDNS0 OPT). */
static size_t
build_query(unsigned char *buf, unsigned id, const unsigned char *question,
	size_t qlen)
{
	unsigned char *p = buf + DNS_HEADER + qlen;

	memset(buf, 0, DNS_HEADER);
	put16(buf, id);
	buf[2] = 0x01;                  /* RD */
	put16(buf + 4, 1);
	put16(buf + 10, 1);
	memcpy(buf + DNS_HEADER, question, qlen);
	p[0] = 0;                       /* root name */
	put16(p + 1, DNS_TYPE_OPT);
	put16(p + 3, DNS_EDNS_PAYLOAD);
	memset(p + 5, 0, 6);            /* extended RCODE, version, flags, RDLEN */
	return DNS_HEADER + qlen + 11;
}

/* Skip a (possibly compressed) name at *pos; -1 when it runs off the end. */
static int
skip_name(const unsigned char *m, size_t len, size_t *pos)
{
	size_t p = *pos;
	unsigned labels = 0;

	while (p < len && labels++ < 128) {
		if (m[p] == 0) {
			*pos = p + 1;
			return 0;
		}
		if ((m[p] & 0xC0) == 0xC0) {
			if (p + 2 > len) {
				return -1;
			}
			*pos = p + 2;
			return 0;
		}
		if (m[p] & 0xC0) {
			return -1;
		}
		p += 1 + m[p];
	}
	return -1;
}

/* Does the answer repeat our question (names compared in any case)? */
static int
same_question(const unsigned char *m, size_t len, const unsigned char *q,
	size_t qlen)
{
	size_t i;

	if (get16(m + 4) != 1 || len < DNS_HEADER + qlen) {
		return 0;
	}
	for (i = 0; i < qlen; i++) {
		unsigned char a = m[DNS_HEADER + i], b = q[i];

		if (a >= 'A' && a <= 'Z') {
			a = (unsigned char)(a + 32);
		}
		if (b >= 'A' && b <= 'Z') {
			b = (unsigned char)(b + 32);
		}
		if (a != b) {
			return 0;
		}
	}
	return 1;
}

/* The first TXT record of the answer section into out. */
static int
read_answer(const unsigned char *m, size_t len, size_t pos, char *out,
	size_t out_size)
{
	unsigned count = get16(m + 6), type, cls, rdlen, k;
	size_t end, n = 0, s;

	for (k = 0; k < count; k++) {
		if (skip_name(m, len, &pos) < 0 || pos + 10 > len) {
			return -1;
		}
		type = get16(m + pos);
		cls = get16(m + pos + 2);
		rdlen = get16(m + pos + 8);
		pos += 10;
		if (rdlen > len - pos) {
			return -1;
		}
		end = pos + rdlen;
		if (type == DNS_TYPE_TXT && cls == DNS_CLASS_IN) {
			while (pos < end) {
				s = m[pos++];
				if (s > end - pos || n + s + 1 > out_size ||
				    memchr(m + pos, 0, s) != NULL) {
					return -1;
				}
				memcpy(out + n, m + pos, s);
				n += s;
				pos += s;
			}
			out[n] = '\0';
			return (int)n;
		}
		pos = end;
	}
	return 0;
}

/* Check one datagram: -2 when it is not the answer to our query (ignored:
 * a late answer to an earlier attempt, or spoofing), else the result. */
static int
parse_response(const unsigned char *m, size_t len, unsigned id,
	const unsigned char *q, size_t qlen, char *out, size_t out_size)
{
	if (len < DNS_HEADER || get16(m) != id || !(m[2] & 0x80) ||
	    (m[2] & 0x78) != 0 || !same_question(m, len, q, qlen)) {
		return -2;
	}
	if (m[2] & 0x02) {
		return -1;                  /* truncated: no TCP fallback */
	}
	switch (m[3] & 0x0F) {
	case 0:
		return read_answer(m, len, DNS_HEADER + qlen, out, out_size);
	case 3:
		return 0;                   /* NXDOMAIN */
	default:
		return -1;
	}
}

static int
open_socket(const struct acme_smime_dns_resolver *res)
{
	struct addrinfo hints, *ai, *a;
	int fd = -1;

	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(res->host, res->port, &hints, &ai) != 0) {
		return -1;
	}
	for (a = ai; a != NULL && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
		if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(ai);
	return fd;
}

/* Send the query and wait up to the timeout for its answer. */
static int
attempt(int fd, const struct acme_smime_dns_resolver *res,
	const unsigned char *q, size_t qlen, char *out, size_t out_size)
{
	unsigned char query[DNS_HEADER + DNS_MAX_NAME + 4 + 11], ans[4096];
	unsigned char rnd[2];
	struct pollfd pfd;
	struct timespec t0;
	unsigned id;
	long left;
	ssize_t n;
	int r;

	if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
		return -1;
	}
	id = get16(rnd);
	if (send(fd, query, build_query(query, id, q, qlen), 0) < 0) {
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		left = (long)res->timeout_ms - elapsed_ms(&t0);
		if (left <= 0) {
			return -3;              /* timeout: the caller retries */
		}
		pfd.fd = fd;
		pfd.events = POLLIN;
		r = poll(&pfd, 1, (int)left);
		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r <= 0) {
			return r == 0 ? -3 : -1;
		}
		n = recv(fd, ans, sizeof ans, 0);
		if (n < 0) {
			return -1;              /* ICMP refused, among others */
		}
		r = parse_response(ans, (size_t)n, id, q, qlen, out, out_size);
		if (r != -2) {
			return r;
		}
	}
}

int
acme_smime_posix_dns_txt(void *user, const char *name, char *out,
	size_t out_size)
{
	const struct acme_smime_dns_resolver *res = user;
	unsigned char q[DNS_MAX_NAME + 4];
	unsigned k;
	int qlen, fd, r = -1;

	if (res == NULL || name == NULL || out == NULL || out_size == 0) {
		return -1;
	}
	out[0] = '\0';
	qlen = put_question(q, name);
	if (qlen < 0 || (fd = open_socket(res)) < 0) {
		return -1;
	}
	for (k = 0; k < (res->attempts > 0 ? res->attempts : 1); k++) {
		r = attempt(fd, res, q, (size_t)qlen, out, out_size);
		if (r != -3) {
			break;
		}
	}
	close(fd);
	if (r < 0) {
		out[0] = '\0';
		return -1;
	}
	return r;
}
