/*
 * sizeof the caller-owned structures of acme_smime, for `make ram`.
 *
 * Host: build and run it; it prints "NAME SIZE" lines.
 * Cross (arm-none-eabi-gcc -c -DSIZES_AS_SYMBOLS): nothing runs; each
 * size becomes the size of a .bss array named sizeof_NAME, read back with
 * `arm-none-eabi-nm -S -t d`.
 */
#include <stdio.h>

#include "acme_smime.h"

#define SIZES(X) \
	X(acme_smime_ctx) \
	X(br_ssl_client_context) \
	X(br_x509_minimal_context) \
	X(acme_smime_store_writer) \
	X(acme_smime_error) \
	X(acme_smime_challenge) \
	X(acme_smime_mail_verdict) \
	X(acme_smime_key)

typedef unsigned char workbuf[ACME_SMIME_WORKBUF_SIZE];
#ifdef ACME_SMIME_TLS_AREA
typedef unsigned char ssl_record_buffer[ACME_SMIME_TLS_AREA];
#else
typedef unsigned char ssl_record_buffer[BR_SSL_BUFSIZE_MONO];
#endif
typedef unsigned char http_area[ACME_SMIME_HTTP_AREA];

#define ALL(X) SIZES(X) X(workbuf) X(ssl_record_buffer) X(http_area)

#ifdef SIZES_AS_SYMBOLS
#define AS_SYMBOL(t) unsigned char sizeof_##t[sizeof(t)];
ALL(AS_SYMBOL)
#else
#define PRINT(t) printf("%s %lu\n", #t, (unsigned long)sizeof(t));
int
main(void)
{
	ALL(PRINT)
	return 0;
}
#endif
