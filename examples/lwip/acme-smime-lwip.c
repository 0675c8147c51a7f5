/*
 * acme-smime-lwip -- an enrollment through lwIP: the "device" runs lwIP
 * on a tap interface (examples/lwip/tapdev.c) and talks to the ACME server
 * only through lwIP's sockets (port/lwip/acme_smime_lwip.h), never through
 * the host's. The host stands in for the board: it supplies the clocks and
 * the entropy (the POSIX port's hooks, port/posix/acme_smime_posix.h; none
 * of its socket hooks), the log and the flash (port/posix/flash_file.c),
 * and a thread with a fixed, painted stack stands in for the application
 * task.
 *
 *   ip netns exec NS acme-smime-lwip --tap tap0 --ip 10.99.0.2/24 \
 *       --gw 10.99.0.1 --host-map localhost=10.99.0.1 \
 *       --directory https://localhost:14000/dir --ca-file pebble-ca.pem \
 *       --agree-tos --dns a.example.test --http01-listen-port 5002 \
 *       --store dev.flash --out-cert cert.pem
 *
 *   ip netns exec NS acme-smime-lwip ... --host-map mail.test=10.99.0.1 \
 *       --directory https://10.99.0.1:14000/directory --ca-file ca.pem \
 *       --agree-tos --email device@mail.test \
 *       --pop3 mail.test:11110 --pop3-tls starttls --pop3-user U \
 *       --pop3-pass-file F --smtp mail.test:10587 --smtp-tls starttls \
 *       --smtp-user U --smtp-pass-file F --mail-ca-file mail-ca.pem ...
 *
 * This lwIP build has no DNS: every host name of a URL (the directory and
 * whatever the server's URLs name) and of --pop3 / --smtp needs a
 * --host-map NAME=IP entry, or must be an IP literal. The name itself
 * stays the TLS server name (SNI) and the name the server certificate is
 * checked against.
 *
 * dns identifiers are validated with http-01 (the port's responder
 * answers on --http01-listen-port, on every lwIP address); email
 * identifiers (RFC 8823) by the library's own POP3 and SMTP clients, which
 * reach the mail servers through the same net hooks and host table. The
 * mail options are those of acme-smime-enroll; passwords come from
 * --pop3-pass-file / --smtp-pass-file or ACME_SMIME_POP3_PASS /
 * ACME_SMIME_SMTP_PASS, never from the command line.
 *
 * What it shares with acme-smime-enroll (options, messages, files, the
 * drive loop, the failure report) is examples/common/cli.c.
 *
 * Exit status, as acme-smime-enroll: 0 certificate obtained and written,
 * 2 usage, 3 TLS, 4 network, 5 ACME problem, 6 mail, 7 storage, 8 other
 * (also: lwIP or the tap device could not be brought up).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lwip/opt.h"
#include "lwip/def.h"
#include "lwip/init.h"
#include "lwip/ip4_addr.h"
#include "lwip/netif.h"
#include "lwip/sys.h"
#include "lwip/tcpip.h"

#include "acme_smime.h"
#include "acme_smime_lwip.h"
#include "acme_smime_posix.h"
#include "cli.h"
#include "flash_file.h"
#include "host_task.h"
#include "tapdev.h"

#define MAX_CA_PEM      (256u * 1024u)
#define MAX_ANCHORS     32
#define ANCHOR_STORAGE  (16u * 1024u)
#define MAX_HOSTS       8

static const char usage_text[] =
"usage: acme-smime-lwip --directory URL --ca-file PEM [--agree-tos] [--contact mailto:ADDR]\n"
"    [--dns NAME]... [--http01-listen-port PORT] [--host-map NAME=IP]...\n"
"    [--email ADDR]... [--pop3 HOST:PORT --pop3-tls none|starttls|implicit --pop3-user U]\n"
"    [--smtp HOST:PORT --smtp-tls none|starttls|implicit --smtp-user U] [--mail-ca-file PEM]\n"
"    [--token-concat string|bytes] [--reply-grace SECONDS] [--mail-policy strict|unsigned-ok]\n"
"    [--mail-poll SECONDS] [--mail-wait SECONDS]\n"
"    [--tap IFNAME] [--ip ADDR/PREFIX] [--gw ADDR]\n"
"    [--store FILE] [--out-cert FILE] [--out-key FILE] [--renew-if-due]\n"
"    [--task-stack BYTES] [-v] [-q]\n";

static const char help_text[] =
"\n"
"Get a certificate from an ACME (RFC 8555) server through lwIP on a tap\n"
"device (run it inside the network namespace that holds the tap device):\n"
"an S/MIME certificate for --email identifiers (RFC 8823), a TLS one for\n"
"--dns names.\n"
"\n"
"  --directory URL        the ACME directory (https://...)\n"
"  --ca-file PEM          trust anchors for the ACME server's TLS certificate\n"
"                         (up to 32 CA certificates: the device has no system store)\n"
"  --agree-tos            agree to the server's terms of service\n"
"  --contact mailto:ADDR  account contact\n"
"  --dns NAME             a dns identifier (repeatable), validated with http-01\n"
"  --http01-listen-port P serve http-01 key authorizations on lwIP port P\n"
"  --host-map NAME=IP     connect to IP for host NAME (repeatable); NAME stays\n"
"                         the TLS server name. lwIP here has no DNS: the\n"
"                         ACME, POP3 and SMTP hosts all need an entry unless\n"
"                         they are IP literals\n"
"  --email ADDR           an email identifier (RFC 8823; repeatable), validated by\n"
"                         answering the CA's challenge mail (POP3 in, SMTP out)\n"
"  --pop3 HOST:PORT, --pop3-tls MODE, --pop3-user U, --pop3-pass-file F\n"
"  --smtp HOST:PORT, --smtp-tls MODE, --smtp-user U, --smtp-pass-file F\n"
"                         MODE none|starttls|implicit (default starttls)\n"
"  --mail-ca-file PEM     trust anchors for the mail servers (needed unless\n"
"                         both modes are none: the device has no system store)\n"
CLI_HELP_MAIL_SETTINGS
"                         mail passwords come from ACME_SMIME_POP3_PASS and\n"
"                         ACME_SMIME_SMTP_PASS or the --*-pass-file options,\n"
"                         never from the command line\n"
"  --tap IFNAME           the tap device (default tap0)\n"
"  --ip ADDR/PREFIX       lwIP's address (default 10.99.0.2/24)\n"
"  --gw ADDR              lwIP's gateway (default 10.99.0.1)\n"
"  --store FILE           account and enrollment state (default acme-smime-lwip.flash)\n"
"  --out-cert FILE        write the certificate chain (PEM, leaf first)\n"
"  --out-key FILE         write the certificate's private key (PKCS#8 PEM, mode 0600)\n"
"  --renew-if-due         enroll only when no certificate is stored or it is due\n"
"  --task-stack BYTES     stack of the application task (default 65536); the\n"
"                         peak use is printed at the end\n"
"  -v                     verbose (library debug log); -q: errors only\n"
"\n"
"Exit status: 0 success, 2 usage, 3 TLS, 4 network, 5 ACME problem from the\n"
"server, 6 mail, 7 storage, 8 timeout or other.\n";

struct options {
	/* Those of acme-smime-enroll; the host names of --pop3 / --smtp go
	 * through the same host table as the ACME server's. */
	struct cli_options cli;
	unsigned http01_port;
	struct acme_smime_lwip_host hosts[MAX_HOSTS];
	size_t host_count;
	const char *tap, *ip, *gw;
	size_t task_stack;
};

/* Everything large is static, as on a board. */
static struct options opt;
static char ca_pem[MAX_CA_PEM];
static unsigned char anchor_storage[ANCHOR_STORAGE];
static br_x509_trust_anchor anchors[MAX_ANCHORS];
static unsigned char mail_anchor_storage[ANCHOR_STORAGE];
static br_x509_trust_anchor mail_anchors[MAX_ANCHORS];
static unsigned char work[ACME_SMIME_WORKBUF_SIZE];
static acme_smime_ctx ctx;
static acme_smime_config cfg;
static acme_smime_ports ports;
static struct acme_smime_lwip lw;
static struct flash_file store;
static struct netif nif;                /* never on a stack */
static struct host_task app_task;
static int task_result;

static const struct cli_program program = {
	"acme-smime-lwip", usage_text, help_text, ca_pem, sizeof ca_pem, 1
};

/* ------------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------- */

static void
add_host(struct options *o, const char *v)
{
	const char *eq = strchr(v, '=');
	ip_addr_t check;
	char *name;

	if (eq == NULL || eq == v || eq[1] == '\0')
		cli_die_usage("--host-map wants NAME=IP", v);
	if (!ipaddr_aton(eq + 1, &check))
		cli_die_usage("--host-map wants an IP address after '='", v);
	if (o->host_count == MAX_HOSTS)
		cli_die_usage("too many --host-map entries", v);
	name = malloc((size_t)(eq - v) + 1);
	if (name == NULL)
		cli_die_usage("out of memory", NULL);
	memcpy(name, v, (size_t)(eq - v));
	name[eq - v] = '\0';
	o->hosts[o->host_count].name = name;
	o->hosts[o->host_count].addr = eq + 1;
	o->host_count++;
}

/* The options acme-smime-enroll does not take. */
static int
own_option(struct options *o, int argc, char **argv, int *i)
{
	const char *v;

	if ((v = cli_value(argc, argv, i, "--http01-listen-port")) != NULL) {
		o->http01_port = (unsigned)cli_number(
			"--http01-listen-port wants 1..65535", v, 1, 65535);
	} else if ((v = cli_value(argc, argv, i, "--host-map")) != NULL) {
		add_host(o, v);
	} else if ((v = cli_value(argc, argv, i, "--tap")) != NULL) {
		o->tap = v;
	} else if ((v = cli_value(argc, argv, i, "--ip")) != NULL) {
		o->ip = v;
	} else if ((v = cli_value(argc, argv, i, "--gw")) != NULL) {
		o->gw = v;
	} else if ((v = cli_value(argc, argv, i, "--task-stack")) != NULL) {
		o->task_stack = cli_number("--task-stack wants 16384.."
			"67108864 bytes", v, 16384, 67108864);
	} else {
		return 0;
	}
	return 1;
}

static void
parse_args(int argc, char **argv, struct options *o)
{
	int i;

	memset(o, 0, sizeof *o);
	o->tap = "tap0";
	o->ip = "10.99.0.2/24";
	o->gw = "10.99.0.1";
	o->task_stack = 65536;
	cli_options_init(&o->cli, "acme-smime-lwip.flash");
	for (i = 1; i < argc; i++)
		if (!own_option(o, argc, argv, &i) &&
				!cli_option(&o->cli, argc, argv, &i))
			cli_die_usage("unknown option", argv[i]);
	cli_check_options(&o->cli);
	if (o->cli.email_count == 0 && o->cli.mail_used)
		cli_die_usage("mail options need --email", NULL);
	if (o->cli.email_count > 0 && (o->cli.pop3 == NULL ||
			o->cli.smtp == NULL || o->cli.pop3_user == NULL))
		cli_die_usage("--email needs --pop3, --pop3-user and --smtp", NULL);
	if (o->cli.store[0] == '\0')
		cli_die_usage("--store wants a file name", NULL);
}

/* ------------------------------------------------------------------------
 * The board's log (user is the struct acme_smime_lwip; this board keeps
 * no context of its own). Its clocks and entropy are the POSIX port's.
 * ---------------------------------------------------------------------- */

static void
board_log(void *user, int level, const char *msg)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	int max = opt.cli.quiet ? ACME_SMIME_LOG_ERROR :
		opt.cli.verbose ? ACME_SMIME_LOG_DEBUG : ACME_SMIME_LOG_INFO;
	struct timespec ts;
	struct tm tm;
	char stamp[32] = "";

	(void)user;
	if (level > max)
		return;
	if (clock_gettime(CLOCK_REALTIME, &ts) == 0 &&
			gmtime_r(&ts.tv_sec, &tm) != NULL) {
		size_t k = strftime(stamp, sizeof stamp, "%H:%M:%S", &tm);
		snprintf(stamp + k, sizeof stamp - k, ".%03ld",
			ts.tv_nsec / 1000000L);
	}
	fprintf(stderr, "%s acme-smime-lwip %s: %s\n", stamp,
		level >= 0 && level <= 3 ? names[level] : "log", msg);
}

/* ------------------------------------------------------------------------
 * RFC 8823: the mail servers (a board has these in its configuration)
 * ---------------------------------------------------------------------- */

/* The host names stay names: the port maps them with the host table at
 * connect time. The device has no system trust store. */
static void
setup_mail(acme_smime_config *c)
{
	if (opt.cli.email_count == 0)
		return;
	cli_mail_servers(&opt.cli, c);
	if (opt.cli.mail_ca_file != NULL) {
		c->mail_trust_anchors = mail_anchors;
		c->mail_trust_anchor_count = cli_load_anchors(opt.cli.mail_ca_file,
			mail_anchor_storage, sizeof mail_anchor_storage,
			mail_anchors, MAX_ANCHORS);
	} else if (c->pop3.tls != ACME_SMIME_TLS_NONE ||
			c->smtp.tls != ACME_SMIME_TLS_NONE) {
		cli_die_usage("--mail-ca-file is required for TLS to the mail "
			"servers (the device has no system trust store)", NULL);
	}
	cli_mail_settings(&opt.cli, c);
}

/* ------------------------------------------------------------------------
 * lwIP bring-up: the tcpip thread, one netif on the tap device
 * ---------------------------------------------------------------------- */

static void
tcpip_ready(void *arg)
{
	sys_sem_signal((sys_sem_t *)arg);
}

static int
lwip_up(void)
{
	ip4_addr_t ip, mask, gw;
	char addr[20];
	const char *slash = strchr(opt.ip, '/');
	unsigned long prefix = 24;
	unsigned char seed[sizeof(unsigned)];
	unsigned s = 0;
	size_t i;
	sys_sem_t sem;

	if (slash != NULL) {
		if ((size_t)(slash - opt.ip) >= sizeof addr)
			cli_die_usage("--ip wants ADDR/PREFIX", opt.ip);
		memcpy(addr, opt.ip, (size_t)(slash - opt.ip));
		addr[slash - opt.ip] = '\0';
		prefix = cli_number("--ip wants ADDR/PREFIX (prefix 1..32)",
			slash + 1, 1, 32);
	} else {
		snprintf(addr, sizeof addr, "%s", opt.ip);
	}
	if (!ip4addr_aton(addr, &ip))
		cli_die_usage("--ip wants an IPv4 address", opt.ip);
	if (!ip4addr_aton(opt.gw, &gw))
		cli_die_usage("--gw wants an IPv4 address", opt.gw);
	ip4_addr_set_u32(&mask, lwip_htonl(prefix == 32 ? 0xffffffffu :
		~(0xffffffffu >> prefix)));

	/* lwIP's LWIP_RAND() is rand() in this build: it picks the local
	 * ports and the initial sequence numbers, so it must not repeat
	 * from one run to the next. */
	if (acme_smime_posix_entropy(NULL, seed, sizeof seed) == 0)
		for (i = 0; i < sizeof seed; i++)
			s = s << 8 | seed[i];
	srand(s ^ (unsigned)getpid());

	if (sys_sem_new(&sem, 0) != ERR_OK)
		return -1;
	tcpip_init(tcpip_ready, &sem);
	sys_arch_sem_wait(&sem, 0);
	sys_sem_free(&sem);

	tapdev_configure(opt.tap, NULL);
	LOCK_TCPIP_CORE();
	if (netif_add(&nif, &ip, &mask, &gw, NULL, tapdev_init,
			tcpip_input) == NULL) {
		UNLOCK_TCPIP_CORE();
		cli_error("cannot bring up lwIP on %s", opt.tap);
		return -1;
	}
	netif_set_default(&nif);
	netif_set_link_up(&nif);
	netif_set_up(&nif);
	UNLOCK_TCPIP_CORE();
	cli_progress("lwIP %s up on %s: %s/%lu via %s", LWIP_VERSION_STRING,
		opt.tap, addr, prefix, opt.gw);
	return 0;
}

/* Peak stack of lwIP's tcpip thread, measured on that thread. */
struct stack_probe {
	sys_sem_t done;
	size_t used, size;
};

static void
tcpip_stack_probe(void *arg)
{
	struct stack_probe *sp = arg;

	sp->used = host_thread_stack_used(&sp->size);
	sys_sem_signal(&sp->done);
}

static void
report_tcpip_stack(size_t *used, size_t *size)
{
	struct stack_probe sp;

	*used = *size = 0;
	if (sys_sem_new(&sp.done, 0) != ERR_OK)
		return;
	sp.used = sp.size = 0;
	if (tcpip_callback(tcpip_stack_probe, &sp) == ERR_OK)
		sys_arch_sem_wait(&sp.done, 0);
	sys_sem_free(&sp.done);
	*used = sp.used;
	*size = sp.size;
}

/* ------------------------------------------------------------------------
 * The application task: the enrollment, through the lwIP port
 * ---------------------------------------------------------------------- */

static void *
app_main(void *arg)
{
	int r;

	(void)arg;
	r = acme_smime_init(&ctx, &cfg, &ports, work, sizeof work, NULL);
	if (r == ACME_SMIME_OK)
		r = cli_drive(&ctx, &ports);
	task_result = r;
	return NULL;
}

/* ------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------- */

static size_t
net_of(size_t peak, size_t base)
{
	return peak > base ? peak - base : 0;
}

int
main(int argc, char **argv)
{
	struct tapdev_stats ts;
	const acme_smime_stats *st;
	size_t n_anchors, tcpip_used, tcpip_size, base_task, base_thread;
	uint64_t t0;
	int rc;

	cli_init(&program);
	parse_args(argc, argv, &opt);
	n_anchors = cli_load_anchors(opt.cli.ca_file, anchor_storage,
		sizeof anchor_storage, anchors, MAX_ANCHORS);
	cli_config(&opt.cli, &cfg, anchors, n_anchors);
	setup_mail(&cfg);

	if (lwip_up() != 0)
		return EXIT_OTHER;

	/* The port: network hooks on lwIP sockets; the board adds its own. */
	acme_smime_lwip_init(&lw, &ports);
	lw.hosts = opt.hosts;
	lw.host_count = opt.host_count;
	ports.unix_time = acme_smime_posix_unix_time;
	ports.monotonic_ms = acme_smime_posix_monotonic_ms;
	ports.entropy = acme_smime_posix_entropy;
	ports.log = board_log;
	if (opt.http01_port != 0) {
		if (acme_smime_lwip_http01_listen(&lw, opt.http01_port) != 0)
			return EXIT_NET;
		cli_progress("http-01 responder on lwIP port %u", opt.http01_port);
	} else if (opt.cli.dns_count > 0) {
		cli_progress("no --http01-listen-port: a pending http-01 challenge "
			"cannot be answered");
	}
	if ((rc = cli_open_store(&store, opt.cli.store)) != 0)
		return rc;
	ports.flash = &store.flash;

	t0 = acme_smime_posix_monotonic_ms(NULL);
	if (host_task_start(&app_task, opt.task_stack, app_main, NULL) != 0 ||
			host_task_join(&app_task) != 0) {
		cli_error("cannot run the application task");
		return EXIT_OTHER;
	}
	if (task_result == ACME_SMIME_DONE) {
		cli_progress("certificate obtained in %lu ms",
			(unsigned long)(acme_smime_posix_monotonic_ms(NULL) - t0));
		rc = cli_write_outputs(&ctx, &store.flash, &opt.cli);
	} else {
		rc = cli_report_failure(&ctx, task_result);
	}

	st = acme_smime_get_stats(&ctx);
	tapdev_get_stats(&ts);
	report_tcpip_stack(&tcpip_used, &tcpip_size);
	if (st != NULL)
		cli_progress("stats: %u TLS handshakes, %u HTTP requests, %u badNonce "
			"retries, %u TCP connections, %u http-01 answers; tap "
			"%lu frames in (%lu bytes), %lu out (%lu bytes)",
			st->tls_handshakes, st->http_requests,
			st->bad_nonce_retries, lw.connections, lw.http01_served,
			ts.rx_frames, ts.rx_bytes, ts.tx_frames, ts.tx_bytes);
	/* Peak stack use of each thread, less what glibc puts on any thread's
	 * stack (descriptor, TLS: base_task / base_thread bytes). */
	base_task = host_task_baseline();
	base_thread = host_thread_baseline();
	cli_progress("stack: application task %lu bytes, lwIP tcpip thread ~%lu, "
		"tap reader %lu (peaks less glibc's %lu/%lu per thread; task "
		"stack %lu)",
		(unsigned long)net_of(host_task_peak(&app_task), base_task),
		(unsigned long)net_of(tcpip_used, base_thread),
		(unsigned long)net_of(ts.rx_stack_peak, base_task),
		(unsigned long)base_task, (unsigned long)base_thread,
		(unsigned long)app_task.size);
	cli_progress("ram: acme_smime_ctx %lu, work buffer %lu, struct "
		"acme_smime_lwip %lu, acme_smime_ports %lu, %lu trust anchors "
		"%lu (+ their names and keys), %lu mail trust anchors %lu",
		(unsigned long)sizeof ctx, (unsigned long)sizeof work,
		(unsigned long)sizeof lw, (unsigned long)sizeof ports,
		(unsigned long)n_anchors,
		(unsigned long)(n_anchors * sizeof anchors[0]),
		(unsigned long)cfg.mail_trust_anchor_count,
		(unsigned long)(cfg.mail_trust_anchor_count *
		sizeof mail_anchors[0]));

	acme_smime_lwip_close(&lw);
	flash_file_close(&store);
	cli_wipe(&ctx, sizeof ctx);
	cli_wipe(work, sizeof work);
	cli_wipe_secrets();
	/* Give lwIP a moment to send the FINs, then stop the driver. No
	 * tcpip shutdown exists in lwIP: the process simply ends. */
	sys_msleep(50);
	tapdev_stop();
	return rc;
}
