/*
 * dns_txt.h -- a small UDP DNS client for TXT records: the dns_txt hook
 * of acme_smime_pending (DKIM keys), asking one configured resolver.
 *
 * Usage:
 *
 *   static struct acme_smime_dns_resolver res;
 *
 *   if (acme_smime_dns_resolver_init(&res, "127.0.0.1:53") != 0) ...
 *   pending.dns_txt = acme_smime_posix_dns_txt;
 *   pending.dns_user = &res;
 *
 * One query per lookup (RD set, EDNS0 with a 1232-byte payload), a random
 * ID checked in the answer together with the question, a timeout per
 * attempt and one retry with a fresh ID. The socket is connected, so only
 * the resolver's address can answer. Blocking, like the rest of the POSIX
 * port. Not done: TCP fallback (a truncated answer is a failure), DNSSEC,
 * following a CNAME's owner name (the first TXT record of the answer is
 * taken): the resolver is trusted, as RFC 6376 expects.
 */
#ifndef ACME_SMIME_DNS_TXT_H
#define ACME_SMIME_DNS_TXT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct acme_smime_dns_resolver {
	char host[64];            /* address or name of the resolver */
	char port[6];
	unsigned timeout_ms;      /* per attempt; init sets 2000 */
	unsigned attempts;        /* init sets 2: one retry */
};

/* "host:port", "[v6addr]:port", or "host" (port 53). Returns 0, or -1
 * when the text is malformed or too long. */
int acme_smime_dns_resolver_init(struct acme_smime_dns_resolver *res,
	const char *host_port);

/* The acme_smime_dns_txt_fn hook; user is a struct acme_smime_dns_resolver.
 * Writes the first TXT record of name (its strings joined, NUL-terminated)
 * and returns its length; 0 when the name does not exist or has no TXT
 * record; -1 on any failure (timeout, refused, truncated, malformed, or
 * out too small). */
int acme_smime_posix_dns_txt(void *user, const char *name, char *out,
	size_t out_size);

#ifdef __cplusplus
}
#endif

#endif /* ACME_SMIME_DNS_TXT_H */
