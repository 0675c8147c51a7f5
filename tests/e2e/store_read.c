/*
 * store_read -- read the certificate kept in an acme-smime-enroll store
 * file the way an application on the device does after a reboot: with the
 * library's accessors (acme_smime_stored_cert, acme_smime_stored_chain)
 * over the file-backed flash, and no network at all. For the e2e tests.
 *
 *   store_read STORE [CHAIN_OUT [KEY_OUT]]
 *
 * Prints "cert not_before=N not_after=N renew_at=N chain_len=N" and writes
 * the PEM chain and the PKCS#8 PEM key when asked; exit 0. Prints "none"
 * and exits 1 when no certificate is stored; exits 2 with the library's
 * error on a storage error, 3 on a usage or file error.
 *
 * The geometry must be the CLI's (examples/common/cli.c).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acme_smime.h"
#include "flash_file.h"

#define STORE_SIZE         ACME_SMIME_STORE_SIZE(4096u, 16u)
#define STORE_SECTOR       4096u
#define STORE_PROGRAM_UNIT 16u

static char chain[ACME_SMIME_STORE_MAX_CERT + 1];
static char pem[1024];

static int
write_out(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	if (f == NULL || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static struct flash_file ff;
	acme_smime_cert_info info;
	acme_smime_key key;
	int r, n;

	if (argc < 2 || argc > 4) {
		fprintf(stderr, "usage: store_read STORE [CHAIN_OUT [KEY_OUT]]\n");
		return 3;
	}
	if (flash_file_open(&ff, argv[1], STORE_SIZE, STORE_SECTOR,
			STORE_PROGRAM_UNIT) != 0) {
		perror(argv[1]);
		return 3;
	}
	memset(&key, 0, sizeof key);
	r = acme_smime_stored_cert(&ff.flash, NULL, &info, &key);
	if (r == 0) {
		puts("none");
		flash_file_close(&ff);
		return 1;
	}
	if (r != 1) {
		printf("error %d: %s\n", r, acme_smime_strerror(r));
		flash_file_close(&ff);
		return 2;
	}
	printf("cert not_before=%llu not_after=%llu renew_at=%llu chain_len=%lu\n",
		(unsigned long long)info.not_before,
		(unsigned long long)info.not_after,
		(unsigned long long)info.renew_at, (unsigned long)info.chain_len);
	if (info.chain_len > sizeof chain - 1) {
		printf("error: chain_len %lu too large\n", (unsigned long)info.chain_len);
		return 2;
	}
	n = acme_smime_stored_chain(&ff.flash, 0, chain, info.chain_len);
	if (n != (int)info.chain_len) {
		printf("error %d reading the chain\n", n);
		return 2;
	}
	if (argc > 2 && write_out(argv[2], chain, (size_t)n) != 0)
		return 3;
	if (argc > 3) {
		n = acme_smime_key_to_pem(&key, pem, sizeof pem);
		if (n < 0) {
			printf("error %d: the stored key: %s\n", n, acme_smime_strerror(n));
			return 2;
		}
		if (write_out(argv[3], pem, (size_t)n) != 0)
			return 3;
	}
	memset(&key, 0, sizeof key);
	memset(pem, 0, sizeof pem);
	flash_file_close(&ff);
	return 0;
}
