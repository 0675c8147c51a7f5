/*
 * dns_txt_query.c -- driver for tests/dns_txt_test.sh.
 *
 *   dns_txt_query [-t MS] RESOLVER NAME
 *       one lookup through acme_smime_posix_dns_txt(); prints "rc=N" and,
 *       when N > 0, "text=..." on a second line
 *   dns_txt_query [-t MS] -m RESOLVER MAIL IDENTIFIER FROM
 *       acme_smime_check_challenge_mail() on the mail file, DKIM key from
 *       the resolver; prints "reason=N proof=N (text)"
 *
 * Built with the library (it includes acme_smime.c) and the POSIX port's
 * DNS client.
 */
#define _POSIX_C_SOURCE 200809L

#include "acme_smime.c"
#include "dns_txt.h"

#include <stdio.h>
#include <stdlib.h>

static size_t
slurp(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL) {
		perror(path);
		exit(2);
	}
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = '\0';
	return n;
}

int
main(int argc, char **argv)
{
	static char mail[65536], out[ACME_SMIME_MAX_DNS_TXT + 1];
	struct acme_smime_dns_resolver res;
	acme_smime_pending p;
	acme_smime_mail_verdict v;
	unsigned timeout = 0;
	int i = 1, mode_mail = 0, r;
	size_t n;

	if (argc > 2 && strcmp(argv[i], "-t") == 0) {
		timeout = (unsigned)atoi(argv[i + 1]);
		i += 2;
	}
	if (i < argc && strcmp(argv[i], "-m") == 0) {
		mode_mail = 1;
		i++;
	}
	if (argc - i != (mode_mail ? 4 : 2)) {
		fprintf(stderr, "usage: %s [-t MS] RESOLVER NAME\n"
		    "       %s [-t MS] -m RESOLVER MAIL IDENTIFIER FROM\n",
		    argv[0], argv[0]);
		return 2;
	}
	if (acme_smime_dns_resolver_init(&res, argv[i]) != 0) {
		printf("bad resolver\n");
		return 2;
	}
	if (timeout != 0) {
		res.timeout_ms = timeout;
	}
	if (!mode_mail) {
		r = acme_smime_posix_dns_txt(&res, argv[i + 1], out, sizeof out);
		printf("rc=%d\n", r);
		if (r > 0) {
			printf("text=%s\n", out);
		}
		return 0;
	}
	n = slurp(argv[i + 1], mail, sizeof mail);
	memset(&p, 0, sizeof p);
	p.identifier = argv[i + 2];
	p.from = argv[i + 3];
	p.dns_txt = acme_smime_posix_dns_txt;
	p.dns_user = &res;
	acme_smime_check_challenge_mail(mail, n, &p, &v);
	printf("reason=%d proof=%d (%s)\n", v.reason, v.proof,
	    acme_smime_mail_reason_text(v.reason));
	return 0;
}
