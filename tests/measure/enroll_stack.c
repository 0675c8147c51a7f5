/*
 * enroll_stack -- one complete RFC 8823 enrollment against the project's
 * test environment (tests/testenv), measured from the inside:
 *
 *   - peak stack of the library by stack painting: acme_smime_init() and
 *     every acme_smime_step() call run on a ucontext stack filled with a pattern; after each call
 *     the deepest overwritten byte is found (and the stack re-painted), and
 *     the maximum over all calls is reported with the state it happened
 *     in. BearSSL runs inside the steps and is included. The port's hooks
 *     (sockets, getaddrinfo, clock, entropy, log, flash) run on a second
 *     painted stack, so the library's figure is the library's alone; the
 *     hooks' own peak and the library depth at the deepest hook call are
 *     reported beside it (on a device both share one stack).
 *   - heap: with LD_PRELOAD=malloc_zone.so, allocations are counted while
 *     inside acme_smime_init() and acme_smime_step() (zone 1: the library; must be 0) apart from
 *     those of the hooks it calls (zone 2: the port, e.g. getaddrinfo).
 *   - the engine's counters (TLS handshakes, HTTP requests), TCP
 *     connections per server (ACME, POP3, SMTP), flash operations.
 *
 * Run with LD_BIND_NOW=1 so that lazy symbol binding (the dynamic linker
 * resolving a PLT slot on the painted stack) is not counted. --plain runs
 * the same enrollment without painting or context switches (for
 * valgrind --tool=callgrind).
 *
 * Configuration comes from the environment written by tests/testenv
 * (set -a; . DIR/env): ACME_DIRECTORY, ACME_CA_FILE, EMAIL, POP3_STLS,
 * SMTP_STARTTLS, MAIL_USER, MAIL_PASS_FILE, MAIL_CA_FILE. The output ends
 * with "kv: KEY=VALUE" lines for tests/measure/bench.sh.
 *
 *   enroll_stack [--plain] [-v]
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

#include "acme_smime.h"
#include "acme_smime_posix.h"
#include "flash_file.h"

#define STEP_STACK (256u * 1024u)
#define HOOK_STACK (256u * 1024u)
#define PATTERN 0xA5
#define IO_SLICE_MS 1000u

#define STORE_SECTOR 4096u
#define STORE_UNIT   16u
#define STORE_SIZE   ACME_SMIME_STORE_SIZE(STORE_SECTOR, STORE_UNIT)

#define MAX_PEM (512u * 1024u)
#define MAX_TAS 64
#define TA_STORAGE (64u * 1024u)

/* ---- heap zones (malloc_zone.so) --------------------------------------- */
#define ZONE_OUTSIDE 0
#define ZONE_LIBRARY 1
#define ZONE_PORT    2
static int (*zone_set)(int);
static void (*zone_get)(int, unsigned long *, unsigned long long *,
	unsigned long *);

static int
set_zone(int z)
{
	return zone_set != NULL ? zone_set(z) : 0;
}

/* ---- the measured enrollment ------------------------------------------- */
static int painting = 1;
static acme_smime_ctx ctx;
static unsigned char work[ACME_SMIME_WORKBUF_SIZE] __attribute__((aligned(16)));
static struct acme_smime_posix posix;
static acme_smime_ports real;        /* the POSIX port's hooks */
static acme_smime_ports wrapped;     /* what the library gets */
static struct flash_file store;
static acme_smime_flash real_flash, wrapped_flash;
static unsigned char store_mem[STORE_SIZE];

/* ---- painted stacks ------------------------------------------------------ */
static unsigned char *step_stack, *hook_stack;
static ucontext_t uc_main, uc_step, uc_hook_caller, uc_hook;
static int step_result;
static size_t step_peak, hook_peak, lib_depth_at_hook;
static const char *step_peak_state = "", *lib_depth_hook_name = "";
static const char *current_state = "";
static unsigned long steps;

static void
paint(unsigned char *stk, size_t size)
{
	memset(stk, PATTERN, size);
}

/* Bytes used at the top of a downward-growing stack; the used part is
 * painted again for the next call. */
static size_t
used_and_repaint(unsigned char *stk, size_t size)
{
	size_t i = 0;

	while (i < size && stk[i] == PATTERN)
		i++;
	memset(stk + i, PATTERN, size - i);
	return size - i;
}

/* The library call to make on the painted stack. */
static const acme_smime_config *init_cfg;
static int calling_init;

static void
step_entry(void)
{
	if (calling_init)
		step_result = acme_smime_init(&ctx, init_cfg, &wrapped, work,
			sizeof work, NULL);
	else
		step_result = acme_smime_step(&ctx);
}

/* One library call (acme_smime_init or acme_smime_step), in the library
 * heap zone, on the painted stack unless --plain. */
static int
run_step(void)
{
	int old = set_zone(ZONE_LIBRARY);

	steps++;
	if (!painting) {
		step_entry();
		set_zone(old);
		return step_result;
	}
	getcontext(&uc_step);
	uc_step.uc_stack.ss_sp = step_stack;
	uc_step.uc_stack.ss_size = STEP_STACK;
	uc_step.uc_link = &uc_main;
	makecontext(&uc_step, step_entry, 0);
	swapcontext(&uc_main, &uc_step);
	set_zone(old);
	{
		size_t used = used_and_repaint(step_stack, STEP_STACK);
		if (used > step_peak) {
			step_peak = used;
			step_peak_state = current_state;
		}
	}
	return step_result;
}

/* ---- hooks: each runs on the hook stack, counted in the port zone ---- */
static void (*hook_fn)(void);

static void
hook_entry(void)
{
	hook_fn();
}

static void
run_hook(void (*fn)(void), const char *name)
{
	int old = set_zone(ZONE_PORT);

	if (!painting) {
		fn();
		set_zone(old);
		return;
	}
	{
		/* How deep the library is when it calls this hook. */
		unsigned char probe;
		size_t depth = (size_t)(step_stack + STEP_STACK - &probe);
		if (depth > lib_depth_at_hook && depth <= STEP_STACK) {
			lib_depth_at_hook = depth;
			lib_depth_hook_name = name;
		}
	}
	hook_fn = fn;
	getcontext(&uc_hook);
	uc_hook.uc_stack.ss_sp = hook_stack;
	uc_hook.uc_stack.ss_size = HOOK_STACK;
	uc_hook.uc_link = &uc_hook_caller;
	makecontext(&uc_hook, hook_entry, 0);
	swapcontext(&uc_hook_caller, &uc_hook);
	{
		size_t used = used_and_repaint(hook_stack, HOOK_STACK);
		if (used > hook_peak)
			hook_peak = used;
	}
	set_zone(old);
}

/* Arguments and results pass through statics (one hook at a time). */
static struct {
	void *user;
	const char *host;
	unsigned port;
	int handle;
	const unsigned char *cbuf;
	unsigned char *buf;
	size_t len;
	int level;
	const char *msg;
	int op;
	const char *identifier, *token, *keyauth;
	uint32_t addr;
	int ri;
	uint64_t r64;
} h;

/* TCP connections per server. */
static unsigned acme_port, pop3_port, smtp_port;
static unsigned conn_acme, conn_pop3, conn_smtp, conn_other;

static void t_connect(void) { h.ri = real.net_connect(h.user, h.host, h.port); }
static void t_send(void) { h.ri = real.net_send(h.user, h.handle, h.cbuf, h.len); }
static void t_recv(void) { h.ri = real.net_recv(h.user, h.handle, h.buf, h.len); }
static void t_close(void) { real.net_close(h.user, h.handle); }
static void t_time(void) { h.r64 = real.unix_time(h.user); }
static void t_mono(void) { h.r64 = real.monotonic_ms(h.user); }
static void t_entropy(void) { h.ri = real.entropy(h.user, h.buf, h.len); }
static void t_log(void) { real.log(h.user, h.level, h.msg); }
static void t_challenge(void)
{
	h.ri = real.challenge(h.user, h.op, h.identifier, h.token, h.keyauth);
}
static void t_fread(void) { h.ri = real_flash.read(h.user, h.addr, h.buf, h.len); }
static void t_fprogram(void)
{
	h.ri = real_flash.program(h.user, h.addr, h.cbuf, h.len);
}
static void t_ferase(void) { h.ri = real_flash.erase(h.user, h.addr); }

static int
w_connect(void *user, const char *host, unsigned port)
{
	h.user = user; h.host = host; h.port = port;
	run_hook(t_connect, "net_connect");
	if (h.ri >= 0) {
		if (port == acme_port)
			conn_acme++;
		else if (port == pop3_port)
			conn_pop3++;
		else if (port == smtp_port)
			conn_smtp++;
		else
			conn_other++;
	}
	return h.ri;
}

static int
w_send(void *user, int handle, const unsigned char *buf, size_t len)
{
	h.user = user; h.handle = handle; h.cbuf = buf; h.len = len;
	run_hook(t_send, "net_send");
	return h.ri;
}

static int
w_recv(void *user, int handle, unsigned char *buf, size_t len)
{
	h.user = user; h.handle = handle; h.buf = buf; h.len = len;
	run_hook(t_recv, "net_recv");
	return h.ri;
}

static void
w_close(void *user, int handle)
{
	h.user = user; h.handle = handle;
	run_hook(t_close, "net_close");
}

static uint64_t
w_time(void *user)
{
	h.user = user;
	run_hook(t_time, "unix_time");
	return h.r64;
}

static uint64_t
w_mono(void *user)
{
	h.user = user;
	run_hook(t_mono, "monotonic_ms");
	return h.r64;
}

static int
w_entropy(void *user, unsigned char *buf, size_t len)
{
	h.user = user; h.buf = buf; h.len = len;
	run_hook(t_entropy, "entropy");
	return h.ri;
}

static void
w_log(void *user, int level, const char *msg)
{
	h.user = user; h.level = level; h.msg = msg;
	run_hook(t_log, "log");
}

static int
w_challenge(void *user, int op, const char *identifier, const char *token,
	const char *key_authorization)
{
	h.user = user; h.op = op; h.identifier = identifier; h.token = token;
	h.keyauth = key_authorization;
	run_hook(t_challenge, "challenge");
	return h.ri;
}

static int
w_fread(void *user, uint32_t addr, unsigned char *buf, size_t len)
{
	h.user = user; h.addr = addr; h.buf = buf; h.len = len;
	run_hook(t_fread, "flash read");
	return h.ri;
}

static int
w_fprogram(void *user, uint32_t addr, const unsigned char *buf, size_t len)
{
	h.user = user; h.addr = addr; h.cbuf = buf; h.len = len;
	run_hook(t_fprogram, "flash program");
	return h.ri;
}

static int
w_ferase(void *user, uint32_t addr)
{
	h.user = user; h.addr = addr;
	run_hook(t_ferase, "flash erase");
	return h.ri;
}

/* ---- set-up helpers --------------------------------------------------- */
static const char *
need(const char *name)
{
	const char *v = getenv(name);

	if (v == NULL || *v == '\0') {
		fprintf(stderr, "enroll_stack: %s is not set (set -a; . DIR/env)\n",
			name);
		exit(2);
	}
	return v;
}

static size_t
read_file(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL) {
		fprintf(stderr, "enroll_stack: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	n = fread(buf, 1, size - 1, f);
	fclose(f);
	buf[n] = '\0';
	return n;
}

static size_t
anchors(const char *path, unsigned char *storage, br_x509_trust_anchor *tas)
{
	static char pem[MAX_PEM];
	size_t len = read_file(path, pem, sizeof pem);
	int n = acme_smime_trust_anchors_from_pem(pem, len, storage, TA_STORAGE,
		tas, MAX_TAS);

	if (n <= 0) {
		fprintf(stderr, "enroll_stack: %s: no trust anchor\n", path);
		exit(2);
	}
	return (size_t)n;
}

static unsigned
port_of(const char *hostport)
{
	const char *c = strrchr(hostport, ':');

	return c != NULL ? (unsigned)strtoul(c + 1, NULL, 10) : 0;
}

static void
split(const char *hostport, char *host, size_t size, unsigned *port)
{
	const char *c = strrchr(hostport, ':');
	size_t n = c != NULL ? (size_t)(c - hostport) : 0;

	if (c == NULL || n == 0 || n >= size) {
		fprintf(stderr, "enroll_stack: bad HOST:PORT %s\n", hostport);
		exit(2);
	}
	memcpy(host, hostport, n);
	host[n] = '\0';
	*port = port_of(hostport);
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	static unsigned char acme_ta_store[TA_STORAGE], mail_ta_store[TA_STORAGE];
	static br_x509_trust_anchor acme_tas[MAX_TAS], mail_tas[MAX_TAS];
	static char pop3_host[128], smtp_host[128], password[256];
	static acme_smime_identifier id;
	static acme_smime_config cfg;
	const acme_smime_stats *st;
	const char *dir, *p;
	int i, r, verbose = 0;
	double t0;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--plain") == 0)
			painting = 0;
		else if (strcmp(argv[i], "-v") == 0)
			verbose = 1;
		else {
			fprintf(stderr, "usage: enroll_stack [--plain] [-v]\n");
			return 2;
		}
	}
	zone_set = (int (*)(int))dlsym(RTLD_DEFAULT, "malloc_zone_set");
	zone_get = (void (*)(int, unsigned long *, unsigned long long *,
		unsigned long *))dlsym(RTLD_DEFAULT, "malloc_zone_get");
	if (painting && getenv("LD_BIND_NOW") == NULL)
		fprintf(stderr, "enroll_stack: warning: LD_BIND_NOW is not set: "
			"lazy binding inflates the stack figures\n");

	/* Configuration: the testenv, as the CLI's working RFC 8823 line. */
	dir = need("ACME_DIRECTORY");
	p = strstr(dir, "://");
	p = p != NULL ? strchr(p + 3, ':') : NULL;
	acme_port = p != NULL ? (unsigned)strtoul(p + 1, NULL, 10) : 443;
	id.type = ACME_SMIME_ID_EMAIL;
	id.value = need("EMAIL");
	cfg.directory_url = dir;
	cfg.identifiers = &id;
	cfg.identifier_count = 1;
	cfg.agree_tos = 1;
	cfg.key_usage = ACME_SMIME_KU_DUAL;
	cfg.force_renew = 1;
	cfg.trust_anchors = acme_tas;
	cfg.trust_anchor_count = anchors(need("ACME_CA_FILE"), acme_ta_store,
		acme_tas);
	cfg.mail_trust_anchors = mail_tas;
	cfg.mail_trust_anchor_count = anchors(need("MAIL_CA_FILE"), mail_ta_store,
		mail_tas);
	read_file(need("MAIL_PASS_FILE"), password, sizeof password);
	password[strcspn(password, "\r\n")] = '\0';
	split(need("POP3_STLS"), pop3_host, sizeof pop3_host, &cfg.pop3.port);
	cfg.pop3.host = pop3_host;
	cfg.pop3.tls = ACME_SMIME_TLS_STARTTLS;
	cfg.pop3.user = need("MAIL_USER");
	cfg.pop3.password = password;
	split(need("SMTP_STARTTLS"), smtp_host, sizeof smtp_host, &cfg.smtp.port);
	cfg.smtp.host = smtp_host;
	cfg.smtp.tls = ACME_SMIME_TLS_STARTTLS;
	cfg.smtp.user = cfg.pop3.user;
	cfg.smtp.password = password;
	cfg.mail_policy = ACME_SMIME_MAIL_ALLOW_UNSIGNED;
	cfg.reply_grace_s = 1;
	cfg.mail_poll_s = 1;
	pop3_port = cfg.pop3.port;
	smtp_port = cfg.smtp.port;

	/* The POSIX port, every hook wrapped; the store in memory. */
	acme_smime_posix_init(&posix, &real);
	posix.log_name = "enroll_stack";
	posix.verbosity = verbose ? ACME_SMIME_LOG_DEBUG : ACME_SMIME_LOG_WARN;
	memset(store_mem, 0xFF, sizeof store_mem);
	if (flash_mem_open(&store, store_mem, STORE_SIZE, STORE_SECTOR,
			STORE_UNIT) != 0) {
		fprintf(stderr, "enroll_stack: flash_mem_open failed\n");
		return 2;
	}
	real_flash = store.flash;
	wrapped_flash = store.flash;
	wrapped_flash.read = w_fread;
	wrapped_flash.program = w_fprogram;
	wrapped_flash.erase = w_ferase;
	wrapped = real;
	wrapped.net_connect = w_connect;
	wrapped.net_send = w_send;
	wrapped.net_recv = w_recv;
	wrapped.net_close = w_close;
	wrapped.unix_time = w_time;
	wrapped.monotonic_ms = w_mono;
	wrapped.entropy = w_entropy;
	wrapped.log = w_log;
	wrapped.challenge = w_challenge;
	wrapped.flash = &wrapped_flash;

	if (painting) {
		step_stack = aligned_alloc(64, STEP_STACK);
		hook_stack = aligned_alloc(64, HOOK_STACK);
		if (step_stack == NULL || hook_stack == NULL)
			return 2;
		paint(step_stack, STEP_STACK);
		paint(hook_stack, HOOK_STACK);
	}

	t0 = now_s();
	/* acme_smime_init() (account key generation) on the painted stack
	 * too, then every step. */
	init_cfg = &cfg;
	calling_init = 1;
	current_state = "init";
	r = run_step();
	calling_init = 0;
	steps = 0;
	if (r != ACME_SMIME_OK) {
		fprintf(stderr, "enroll_stack: init: %s\n", acme_smime_strerror(r));
		return 1;
	}
	for (;;) {
		current_state = acme_smime_state_name(&ctx);
		r = run_step();
		if (r == ACME_SMIME_AGAIN)
			continue;
		if (r == ACME_SMIME_WANT_IO) {
			int events, handle = acme_smime_io(&ctx, &events);
			real.net_wait(real.user, handle, events, IO_SLICE_MS);
			continue;
		}
		if (r == ACME_SMIME_WANT_TIME) {
			uint64_t wake = acme_smime_wake_ms(&ctx);
			uint64_t now = real.monotonic_ms(real.user);
			if (wake > now)
				real.sleep_ms(real.user, (uint32_t)(wake - now));
			continue;
		}
		break;
	}
	if (r != ACME_SMIME_DONE) {
		const acme_smime_error *e = acme_smime_last_error(&ctx);
		fprintf(stderr, "enroll_stack: failed in %s: %s%s%s\n",
			acme_smime_state_name(&ctx), acme_smime_strerror(r),
			e != NULL ? ": " : "", e != NULL ? e->text : "");
		return 1;
	}

	st = acme_smime_get_stats(&ctx);
	printf("enrollment done in %.2f s, %lu steps\n", now_s() - t0, steps);
	printf("TLS handshakes %u (ACME connections %u, POP3 %u, SMTP %u), "
		"HTTP requests %u, badNonce retries %u, flash erases %lu, "
		"programs %lu\n", st->tls_handshakes, conn_acme, conn_pop3,
		conn_smtp, st->http_requests, st->bad_nonce_retries, store.erases,
		store.programs);
	printf("kv: handshakes=%u\nkv: conn_acme=%u\nkv: conn_pop3=%u\n"
		"kv: conn_smtp=%u\nkv: http_requests=%u\nkv: bad_nonce=%u\n"
		"kv: flash_ops=%lu\n", st->tls_handshakes, conn_acme, conn_pop3,
		conn_smtp, st->http_requests, st->bad_nonce_retries,
		store.erases + store.programs);
	if (painting) {
		printf("peak stack of the library (acme_smime_init and every "
			"acme_smime_step): %zu bytes (in state %s; hooks on their "
			"own stack)\n", step_peak,
			step_peak_state);
		printf("library depth at its deepest hook call: %zu bytes (%s); "
			"deepest hook (POSIX port): %zu bytes\n", lib_depth_at_hook,
			lib_depth_hook_name, hook_peak);
		printf("kv: stack_peak=%zu\nkv: stack_peak_state=%s\n"
			"kv: stack_at_hook=%zu\nkv: hook_stack_peak=%zu\n", step_peak,
			step_peak_state, lib_depth_at_hook, hook_peak);
	}
	if (zone_get != NULL) {
		static const char *const names[3] = { "outside the library",
			"library (inside acme_smime_init/step)",
			"port hooks called by the library" };
		static const char *const keys[3] = { "outside", "library", "port" };
		for (i = 0; i < 3; i++) {
			unsigned long n = 0, f = 0;
			unsigned long long b = 0;
			zone_get(i, &n, &b, &f);
			printf("heap, %s: %lu allocations, %llu bytes, %lu frees\n",
				names[i], n, b, f);
			printf("kv: heap_%s_allocs=%lu\nkv: heap_%s_bytes=%llu\n",
				keys[i], n, keys[i], b);
		}
	} else {
		printf("heap: not counted (run with LD_PRELOAD=malloc_zone.so)\n");
	}
	acme_smime_posix_close(&posix);
	return 0;
}
