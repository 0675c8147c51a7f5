/*
 * A minimal bare-metal firmware around acme_smime, for `make size`: main()
 * sets up one RFC 8823 enrollment (email identifier, POP3 + SMTP with
 * STARTTLS, a NOR flash store) and drives acme_smime_init() and
 * acme_smime_step() through stub hooks. Linked for Cortex-M4 with BearSSL
 * (built from Debian's source) and newlib-nano, --gc-sections: the image
 * holds exactly what a device calling the engine needs. The hooks do no
 * real I/O (on a device they wrap lwIP, an RTC, a TRNG and the flash
 * driver); volatile accesses keep the compiler from assuming anything
 * about their results.
 *
 * Only built by tests/measure/size.sh; never run.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "acme_smime.h"

/* Stand-ins for the peripherals. */
static volatile uint32_t hw_tick_ms;
static volatile uint32_t hw_rtc_s;
static volatile uint32_t hw_rng;
static volatile unsigned char hw_net_rx;
static volatile int hw_net_ready;
static volatile unsigned char hw_flash_byte;

static int
net_connect(void *user, const char *host, unsigned port)
{
	(void)user;
	(void)host;
	(void)port;
	return hw_net_ready ? 0 : -1;
}

static int
net_send(void *user, int handle, const unsigned char *buf, size_t len)
{
	(void)user;
	(void)handle;
	if (len > 0)
		hw_net_rx = buf[0];
	return hw_net_ready ? (int)len : 0;
}

static int
net_recv(void *user, int handle, unsigned char *buf, size_t len)
{
	(void)user;
	(void)handle;
	if (!hw_net_ready || len == 0)
		return ACME_SMIME_NET_WOULD_BLOCK;
	buf[0] = hw_net_rx;
	return 1;
}

static void
net_close(void *user, int handle)
{
	(void)user;
	(void)handle;
}

static uint64_t
unix_time(void *user)
{
	(void)user;
	return hw_rtc_s;
}

static uint64_t
monotonic_ms(void *user)
{
	(void)user;
	return hw_tick_ms;
}

static int
entropy(void *user, unsigned char *buf, size_t len)
{
	size_t i;

	(void)user;
	for (i = 0; i < len; i++)
		buf[i] = (unsigned char)hw_rng;
	return 0;
}

static int
flash_read(void *user, uint32_t addr, unsigned char *buf, size_t len)
{
	(void)user;
	(void)addr;
	memset(buf, hw_flash_byte, len);
	return 0;
}

static int
flash_program(void *user, uint32_t addr, const unsigned char *buf, size_t len)
{
	(void)user;
	(void)addr;
	if (len > 0)
		hw_flash_byte = buf[0];
	return 0;
}

static int
flash_erase(void *user, uint32_t addr)
{
	(void)user;
	(void)addr;
	hw_flash_byte = 0xFF;
	return 0;
}

/* One P-256 trust anchor per server role (contents are placeholders). */
static const unsigned char ta_dn[] = { 0x30, 0x00 };
static const unsigned char ta_q[65] = { 0x04 };
static const br_x509_trust_anchor anchors[1] = { {
	{ (unsigned char *)ta_dn, sizeof ta_dn }, BR_X509_TA_CA,
	{ BR_KEYTYPE_EC, { .ec = { BR_EC_secp256r1, (unsigned char *)ta_q,
		sizeof ta_q } } } } };

static const acme_smime_flash flash = {
	NULL, flash_read, flash_program, flash_erase,
	64u * 1024u, 4096u, 16u
};

static const acme_smime_identifier ids[1] = {
	{ ACME_SMIME_ID_EMAIL, "device@example.com" }
};

static acme_smime_config cfg;
static acme_smime_ports ports;
static acme_smime_ctx ctx;
static unsigned char work[ACME_SMIME_WORKBUF_SIZE] __attribute__((aligned(8)));

int
main(void)
{
	int r;

	cfg.directory_url = "https://acme.example.com/directory";
	cfg.identifiers = ids;
	cfg.identifier_count = 1;
	cfg.contact = "mailto:device@example.com";
	cfg.agree_tos = 1;
	cfg.trust_anchors = anchors;
	cfg.trust_anchor_count = 1;
	cfg.pop3.host = "mail.example.com";
	cfg.pop3.port = 110;
	cfg.pop3.tls = ACME_SMIME_TLS_STARTTLS;
	cfg.pop3.user = "device@example.com";
	cfg.pop3.password = "secret";
	cfg.smtp = cfg.pop3;
	cfg.smtp.port = 587;
	cfg.mail_trust_anchors = anchors;
	cfg.mail_trust_anchor_count = 1;

	ports.net_connect = net_connect;
	ports.net_send = net_send;
	ports.net_recv = net_recv;
	ports.net_close = net_close;
	ports.unix_time = unix_time;
	ports.monotonic_ms = monotonic_ms;
	ports.entropy = entropy;
	ports.flash = &flash;

	r = acme_smime_init(&ctx, &cfg, &ports, work, sizeof work, NULL);
	while (r >= 0 && r != ACME_SMIME_DONE) {
		/* A device would sleep on its event loop here (WANT_IO,
		 * WANT_TIME); the stubs make progress impossible anyway. */
		r = acme_smime_step(&ctx);
	}
	return r == ACME_SMIME_DONE ? 0 : 1;
}
