/*
 * acme-smime-reply -- answer one RFC 8823 challenge mail, offline.
 *
 * For a device (or a person) that fetches and sends mail with its own
 * tools: check a challenge mail against the pending challenge and print
 * the response mail to submit over SMTP. Uses only the public helpers of
 * acme_smime.h.
 *
 *   acme-smime-reply --mail FILE --identifier ADDR --from CA_FROM
 *                    --token2 TOKEN (--thumbprint TP | --key-d B64URL)
 *                    [--bytes] [--allow-unsigned] [--allow-no-autosubmit]
 *                    [--message-id <ID@DOMAIN>] [--date UNIX_SECONDS]
 *
 * Exit status: 0 response printed, 1 the mail must not be answered (the
 * reason is printed), 2 usage or input error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acme_smime.h"

#define MAX_MAIL (64 * 1024)

static void
usage(void)
{
	fputs("usage: acme-smime-reply --mail FILE --identifier ADDR --from CA_FROM\n"
	    "         --token2 TOKEN (--thumbprint TP | --key-d B64URL)\n"
	    "         [--bytes] [--allow-unsigned] [--allow-no-autosubmit]\n"
	    "         [--message-id <ID@DOMAIN>] [--date UNIX_SECONDS]\n", stderr);
	exit(2);
}

static size_t
read_all(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL) {
		perror(path);
		exit(2);
	}
	n = fread(buf, 1, size, f);
	if (n == size) {
		fprintf(stderr, "%s: larger than %lu bytes\n", path, (unsigned long)size);
		exit(2);
	}
	fclose(f);
	return n;
}

static int
b64url_value(int c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	if (c == '-') return 62;
	if (c == '_') return 63;
	return -1;
}

/* The private scalar d of a P-256 JWK: 43 base64url characters. */
static int
thumbprint_from_d(const char *d, char tp[ACME_SMIME_THUMBPRINT_SIZE])
{
	unsigned char priv[33];
	unsigned long acc = 0;
	unsigned bits = 0;
	size_t i, n = 0;
	acme_smime_key key;
	int r;

	if (strlen(d) != 43) {
		return -1;
	}
	for (i = 0; i < 43; i++) {
		int v = b64url_value((unsigned char)d[i]);

		if (v < 0) {
			return -1;
		}
		acc = (acc << 6) | (unsigned long)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			priv[n++] = (unsigned char)(acc >> bits);
			acc &= (1ul << bits) - 1;
		}
	}
	r = acme_smime_key_from_private(&key, ACME_SMIME_KEY_P256, priv, 32);
	memset(priv, 0, sizeof priv);
	if (r == ACME_SMIME_OK) {
		r = acme_smime_jwk_thumbprint(&key, tp);
	}
	acme_smime_key_wipe(&key);
	return r;
}

int
main(int argc, char **argv)
{
	static char mail[MAX_MAIL];
	static char out[4096];
	const char *mail_path = NULL, *token2 = NULL, *thumb = NULL, *key_d = NULL;
	char tp[ACME_SMIME_THUMBPRINT_SIZE], digest[ACME_SMIME_DIGEST_SIZE];
	acme_smime_pending pending;
	acme_smime_mail_verdict verdict;
	acme_smime_response resp;
	int mode = ACME_SMIME_CONCAT_STRING, i, r;
	size_t mail_len;

	memset(&pending, 0, sizeof pending);
	memset(&resp, 0, sizeof resp);
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--bytes") == 0) {
			mode = ACME_SMIME_CONCAT_BYTES;
			continue;
		} else if (strcmp(a, "--allow-unsigned") == 0) {
			pending.policy |= ACME_SMIME_MAIL_ALLOW_UNSIGNED;
			continue;
		} else if (strcmp(a, "--allow-no-autosubmit") == 0) {
			pending.policy |= ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT;
			continue;
		}
		if (v == NULL) {
			usage();
		}
		if (strcmp(a, "--mail") == 0) {
			mail_path = v;
		} else if (strcmp(a, "--identifier") == 0) {
			pending.identifier = v;
		} else if (strcmp(a, "--from") == 0) {
			pending.from = v;
		} else if (strcmp(a, "--token2") == 0) {
			token2 = v;
		} else if (strcmp(a, "--thumbprint") == 0) {
			thumb = v;
		} else if (strcmp(a, "--key-d") == 0) {
			key_d = v;
		} else if (strcmp(a, "--message-id") == 0) {
			resp.message_id = v;
		} else if (strcmp(a, "--date") == 0) {
			resp.date = (uint64_t)strtoull(v, NULL, 10);
		} else {
			usage();
		}
		i++;
	}
	if (mail_path == NULL || pending.identifier == NULL || pending.from == NULL ||
	    token2 == NULL || (thumb == NULL) == (key_d == NULL)) {
		usage();
	}
	if (key_d != NULL) {
		if (thumbprint_from_d(key_d, tp) != ACME_SMIME_OK) {
			fputs("--key-d: not a P-256 private scalar (43 base64url characters)\n",
			    stderr);
			return 2;
		}
		thumb = tp;
	}
	if (pending.policy != 0) {
		fputs("warning: relaxed challenge-mail policy: forged challenges are not "
		    "detected\n", stderr);
	}

	mail_len = read_all(mail_path, mail, sizeof mail);
	r = acme_smime_check_challenge_mail(mail, mail_len, &pending, &verdict);
	if (r == ACME_SMIME_ERR_MAIL) {
		fprintf(stderr, "not answering: %s\n",
		    acme_smime_mail_reason_text(verdict.reason));
		return 1;
	}
	if (r != ACME_SMIME_OK) {
		fprintf(stderr, "error: %s\n", acme_smime_strerror(r));
		return 2;
	}
	r = acme_smime_rfc8823_digest(verdict.token_part1, token2, thumb, mode, digest);
	if (r != ACME_SMIME_OK) {
		fprintf(stderr, "digest: %s\n", acme_smime_strerror(r));
		return 2;
	}
	resp.from = pending.identifier;
	resp.challenge = &verdict;
	resp.digest = digest;
	r = acme_smime_write_response_mail(out, sizeof out, &resp);
	if (r < 0) {
		fprintf(stderr, "response: %s\n", acme_smime_strerror(r));
		return 2;
	}
	fwrite(out, 1, (size_t)r, stdout);
	return 0;
}
