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
 * Exit status, as acme-smime-enroll: 0 certificate obtained and written,
 * 2 usage, 3 TLS, 4 network, 5 ACME problem, 6 mail, 7 storage, 8 other
 * (also: lwIP or the tap device could not be brought up).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
#include "flash_file.h"
#include "host_task.h"
#include "tapdev.h"

#define EXIT_USAGE   2
#define EXIT_TLS     3
#define EXIT_NET     4
#define EXIT_ACME    5
#define EXIT_MAIL    6
#define EXIT_STORAGE 7
#define EXIT_OTHER   8

#define MAX_CA_PEM      (256u * 1024u)
#define MAX_ANCHORS     32
#define ANCHOR_STORAGE  (16u * 1024u)
#define MAX_HOSTS       8
#define MAX_PASSWORD    256

/* The store file: simulated NOR flash, as large as the store needs. */
#define STORE_SIZE         ACME_SMIME_STORE_SIZE(4096u, 16u)
#define STORE_SECTOR       4096u
#define STORE_PROGRAM_UNIT 16u

/* Longest wait on the socket before the engine is asked again. */
#define IO_SLICE_MS 1000u

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
"  --token-concat string|bytes, --reply-grace SECONDS,\n"
"  --mail-poll SECONDS    how often the mailbox is checked for the challenge\n"
"                         mail (default 10)\n"
"  --mail-wait SECONDS    how long to wait for it before giving up (default 600)\n"
"  --mail-policy strict|unsigned-ok  strict (default) needs a DKIM or S/MIME\n"
"                         signature on the challenge mail; unsigned-ok does not\n"
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
	const char *directory, *ca_file, *contact;
	int agree_tos;
	const char *dns[ACME_SMIME_MAX_IDENTIFIERS];
	size_t dns_count;
	unsigned http01_port;
	struct acme_smime_lwip_host hosts[MAX_HOSTS];
	size_t host_count;
	const char *tap, *ip, *gw;
	const char *store, *out_cert, *out_key;
	int renew_if_due;
	size_t task_stack;
	int verbose, quiet;
	/* RFC 8823: the host names of --pop3 / --smtp go through the same
	 * host table as the ACME server's. */
	const char *email[ACME_SMIME_MAX_IDENTIFIERS];
	size_t email_count;
	const char *pop3, *pop3_tls, *pop3_user, *pop3_pass_file;
	const char *smtp, *smtp_tls, *smtp_user, *smtp_pass_file;
	const char *mail_ca_file, *token_concat, *mail_policy;
	long reply_grace, mail_poll, mail_wait;
	int mail_used;   /* a mail option was given */
};

/* Everything large is static, as on a board. */
static struct options opt;
static char ca_pem[MAX_CA_PEM];
static unsigned char anchor_storage[ANCHOR_STORAGE];
static br_x509_trust_anchor anchors[MAX_ANCHORS];
static unsigned char mail_anchor_storage[ANCHOR_STORAGE];
static br_x509_trust_anchor mail_anchors[MAX_ANCHORS];
static char pop3_host[256], smtp_host[256];
static char pop3_pass[MAX_PASSWORD], smtp_pass[MAX_PASSWORD];
static unsigned char work[ACME_SMIME_WORKBUF_SIZE];
static acme_smime_ctx ctx;
static acme_smime_identifier ids[ACME_SMIME_MAX_IDENTIFIERS];
static acme_smime_config cfg;
static acme_smime_ports ports;
static struct acme_smime_lwip lw;
static struct flash_file store;
static struct netif nif;                /* never on a stack */
static struct host_task app_task;
static int task_result;
static const char *last_state = "init";

/* ------------------------------------------------------------------------
 * Messages
 * ---------------------------------------------------------------------- */

static void progress(const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
	__attribute__((format(printf, 1, 2)))
#endif
	;

static void
progress(const char *fmt, ...)
{
	va_list ap;

	if (opt.quiet)
		return;
	fputs("acme-smime-lwip: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
die_usage(const char *what, const char *arg)
{
	if (arg != NULL)
		fprintf(stderr, "acme-smime-lwip: %s: %s\n", what, arg);
	else
		fprintf(stderr, "acme-smime-lwip: %s\n", what);
	fputs(usage_text, stderr);
	fputs("(--help for details)\n", stderr);
	exit(EXIT_USAGE);
}

/* ------------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------- */

/* "--name VALUE" or "--name=VALUE": returns VALUE and advances *i, or NULL
 * when argv[*i] is not this option. */
static const char *
opt_value(int argc, char **argv, int *i, const char *name)
{
	size_t n = strlen(name);
	const char *a = argv[*i];

	if (strncmp(a, name, n) != 0)
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (a[n] != '\0')
		return NULL;
	if (*i + 1 >= argc)
		die_usage("missing value for", name);
	(*i)++;
	return argv[*i];
}

static unsigned long
parse_number(const char *what, const char *s, unsigned long min,
	unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		die_usage(what, s);
	return v;
}

static void
add_host(struct options *o, const char *v)
{
	const char *eq = strchr(v, '=');
	ip_addr_t check;
	char *name;

	if (eq == NULL || eq == v || eq[1] == '\0')
		die_usage("--host-map wants NAME=IP", v);
	if (!ipaddr_aton(eq + 1, &check))
		die_usage("--host-map wants an IP address after '='", v);
	if (o->host_count == MAX_HOSTS)
		die_usage("too many --host-map entries", v);
	name = malloc((size_t)(eq - v) + 1);
	if (name == NULL)
		die_usage("out of memory", NULL);
	memcpy(name, v, (size_t)(eq - v));
	name[eq - v] = '\0';
	o->hosts[o->host_count].name = name;
	o->hosts[o->host_count].addr = eq + 1;
	o->host_count++;
}

static void
add_identifier(const char **list, size_t *count, size_t other,
	const char *v)
{
	if (*count + other >= ACME_SMIME_MAX_IDENTIFIERS)
		die_usage("too many identifiers (limit ACME_SMIME_MAX_IDENTIFIERS)",
			v);
	if (v[0] == '\0')
		die_usage("empty identifier", NULL);
	list[(*count)++] = v;
}

static int
one_of(const char *v, const char *a, const char *b, const char *c)
{
	return strcmp(v, a) == 0 || strcmp(v, b) == 0 ||
		(c != NULL && strcmp(v, c) == 0);
}

static int
host_port_ok(const char *s)
{
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (colon == NULL || colon == s)
		return 0;
	port = strtol(colon + 1, &end, 10);
	return *end == '\0' && end != colon + 1 && port > 0 && port <= 65535;
}

static void
parse_args(int argc, char **argv, struct options *o)
{
	const char *v;
	int i;

	memset(o, 0, sizeof *o);
	o->store = "acme-smime-lwip.flash";
	o->tap = "tap0";
	o->ip = "10.99.0.2/24";
	o->gw = "10.99.0.1";
	o->task_stack = 65536;
	o->reply_grace = -1;
	o->mail_poll = -1;
	o->mail_wait = -1;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(usage_text, stdout);
			fputs(help_text, stdout);
			exit(0);
		} else if (strcmp(a, "-v") == 0) {
			o->verbose++;
		} else if (strcmp(a, "-q") == 0) {
			o->quiet = 1;
		} else if (strcmp(a, "--agree-tos") == 0) {
			o->agree_tos = 1;
		} else if (strcmp(a, "--renew-if-due") == 0) {
			o->renew_if_due = 1;
		} else if ((v = opt_value(argc, argv, &i, "--directory")) != NULL) {
			o->directory = v;
		} else if ((v = opt_value(argc, argv, &i, "--ca-file")) != NULL) {
			o->ca_file = v;
		} else if ((v = opt_value(argc, argv, &i, "--contact")) != NULL) {
			if (strncmp(v, "mailto:", 7) != 0)
				die_usage("--contact wants mailto:ADDR", v);
			o->contact = v;
		} else if ((v = opt_value(argc, argv, &i, "--dns")) != NULL) {
			add_identifier(o->dns, &o->dns_count, o->email_count, v);
		} else if ((v = opt_value(argc, argv, &i, "--email")) != NULL) {
			add_identifier(o->email, &o->email_count, o->dns_count, v);
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--pop3")) != NULL) {
			if (!host_port_ok(v))
				die_usage("--pop3 wants HOST:PORT", v);
			o->pop3 = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--pop3-tls")) != NULL) {
			if (!one_of(v, "none", "starttls", "implicit"))
				die_usage("--pop3-tls wants none|starttls|implicit", v);
			o->pop3_tls = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--pop3-user")) != NULL) {
			o->pop3_user = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i,
				"--pop3-pass-file")) != NULL) {
			o->pop3_pass_file = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--smtp")) != NULL) {
			if (!host_port_ok(v))
				die_usage("--smtp wants HOST:PORT", v);
			o->smtp = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--smtp-tls")) != NULL) {
			if (!one_of(v, "none", "starttls", "implicit"))
				die_usage("--smtp-tls wants none|starttls|implicit", v);
			o->smtp_tls = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--smtp-user")) != NULL) {
			o->smtp_user = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i,
				"--smtp-pass-file")) != NULL) {
			o->smtp_pass_file = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i,
				"--mail-ca-file")) != NULL) {
			o->mail_ca_file = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i,
				"--token-concat")) != NULL) {
			if (!one_of(v, "string", "bytes", NULL))
				die_usage("--token-concat wants string|bytes", v);
			o->token_concat = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--reply-grace")) != NULL) {
			o->reply_grace = (long)parse_number("--reply-grace wants "
				"seconds (0..2592000)", v, 0, 86400uL * 30);
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--mail-poll")) != NULL) {
			o->mail_poll = (long)parse_number("--mail-poll wants "
				"seconds (1..2592000)", v, 1, 86400uL * 30);
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--mail-wait")) != NULL) {
			o->mail_wait = (long)parse_number("--mail-wait wants "
				"seconds (1..2592000)", v, 1, 86400uL * 30);
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--mail-policy")) != NULL) {
			if (!one_of(v, "strict", "unsigned-ok", NULL))
				die_usage("--mail-policy wants strict|unsigned-ok", v);
			o->mail_policy = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i,
				"--http01-listen-port")) != NULL) {
			o->http01_port = (unsigned)parse_number(
				"--http01-listen-port wants 1..65535", v, 1, 65535);
		} else if ((v = opt_value(argc, argv, &i, "--host-map")) != NULL) {
			add_host(o, v);
		} else if ((v = opt_value(argc, argv, &i, "--tap")) != NULL) {
			o->tap = v;
		} else if ((v = opt_value(argc, argv, &i, "--ip")) != NULL) {
			o->ip = v;
		} else if ((v = opt_value(argc, argv, &i, "--gw")) != NULL) {
			o->gw = v;
		} else if ((v = opt_value(argc, argv, &i, "--store")) != NULL) {
			o->store = v;
		} else if ((v = opt_value(argc, argv, &i, "--out-cert")) != NULL) {
			o->out_cert = v;
		} else if ((v = opt_value(argc, argv, &i, "--out-key")) != NULL) {
			o->out_key = v;
		} else if ((v = opt_value(argc, argv, &i, "--task-stack")) != NULL) {
			o->task_stack = parse_number("--task-stack wants 16384.."
				"67108864 bytes", v, 16384, 67108864);
		} else if (strncmp(a, "--pop3-pass", 11) == 0 ||
				strncmp(a, "--smtp-pass", 11) == 0 ||
				strncmp(a, "--password", 10) == 0) {
			die_usage("passwords are never taken from the command line; "
				"use ACME_SMIME_POP3_PASS / ACME_SMIME_SMTP_PASS or "
				"--pop3-pass-file / --smtp-pass-file", NULL);
		} else {
			die_usage("unknown option", a);
		}
	}
	if (o->directory == NULL)
		die_usage("--directory is required", NULL);
	if (strncmp(o->directory, "https://", 8) != 0)
		die_usage("--directory wants an https:// URL", o->directory);
	if (o->ca_file == NULL)
		die_usage("--ca-file is required (the device has no system "
			"trust store)", NULL);
	if (o->dns_count + o->email_count == 0)
		die_usage("give at least one --dns or --email identifier", NULL);
	if (o->email_count == 0 && o->mail_used)
		die_usage("mail options need --email", NULL);
	if (o->email_count > 0 && (o->pop3 == NULL || o->smtp == NULL ||
			o->pop3_user == NULL))
		die_usage("--email needs --pop3, --pop3-user and --smtp", NULL);
	if (o->store[0] == '\0')
		die_usage("--store wants a file name", NULL);
}

/* ------------------------------------------------------------------------
 * The board's log (user is the struct acme_smime_lwip; this board keeps
 * no context of its own). Its clocks and entropy are the POSIX port's.
 * ---------------------------------------------------------------------- */

static void
board_log(void *user, int level, const char *msg)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };
	int max = opt.quiet ? ACME_SMIME_LOG_ERROR :
		opt.verbose ? ACME_SMIME_LOG_DEBUG : ACME_SMIME_LOG_INFO;
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
 * Files (the host's; a board has none)
 * ---------------------------------------------------------------------- */

static size_t
read_file(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL) {
		fprintf(stderr, "acme-smime-lwip: %s: %s\n", path, strerror(errno));
		exit(EXIT_USAGE);
	}
	n = fread(buf, 1, size, f);
	if (ferror(f) || n == size) {
		fprintf(stderr, "acme-smime-lwip: %s: %s\n", path,
			ferror(f) ? strerror(errno) : "file too large");
		exit(EXIT_USAGE);
	}
	fclose(f);
	buf[n] = '\0';
	return n;
}

static size_t
load_anchors_into(const char *path, unsigned char *storage,
	size_t storage_size, br_x509_trust_anchor *tas, size_t max)
{
	size_t len = read_file(path, ca_pem, sizeof ca_pem);
	int n = acme_smime_trust_anchors_from_pem(ca_pem, len, storage,
		storage_size, tas, max);

	if (n <= 0) {
		fprintf(stderr, "acme-smime-lwip: %s: %s\n", path, n < 0 ?
			acme_smime_strerror(n) : "no usable certificate");
		exit(EXIT_USAGE);
	}
	return (size_t)n;
}

static size_t
load_trust_anchors(const char *path)
{
	return load_anchors_into(path, anchor_storage, sizeof anchor_storage,
		anchors, MAX_ANCHORS);
}

/* ------------------------------------------------------------------------
 * RFC 8823: the mail servers (a board has these in its configuration)
 * ---------------------------------------------------------------------- */

/* A password from a file (first line) or the environment, never argv. */
static const char *
load_password(const char *env, const char *file, char *buf, size_t size)
{
	const char *v = getenv(env);
	size_t n;

	if (file != NULL) {
		n = read_file(file, buf, size);
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			buf[--n] = '\0';
		return buf;
	}
	if (v != NULL) {
		n = strlen(v);
		if (n >= size)
			die_usage("password too long in", env);
		memcpy(buf, v, n + 1);
		return buf;
	}
	return NULL;
}

static int
tls_mode(const char *v)
{
	if (v == NULL || strcmp(v, "starttls") == 0)
		return ACME_SMIME_TLS_STARTTLS;
	return strcmp(v, "implicit") == 0 ? ACME_SMIME_TLS_IMPLICIT :
		ACME_SMIME_TLS_NONE;
}

/* HOST:PORT into a static host copy and a port (checked by the parser). */
static void
split_host_port(const char *v, char *host, size_t size, unsigned *port)
{
	const char *colon = strrchr(v, ':');
	size_t n = colon != NULL ? (size_t)(colon - v) : 0;

	if (colon == NULL || n == 0 || n >= size)
		die_usage("wants HOST:PORT", v);
	memcpy(host, v, n);
	host[n] = '\0';
	*port = (unsigned)strtoul(colon + 1, NULL, 10);
}

/* The RFC 8823 part of the configuration. The host names stay names: the
 * port maps them with the host table at connect time, and each is the
 * TLS server name of its connection. */
static void
setup_mail(acme_smime_config *c)
{
	if (opt.email_count == 0)
		return;
	split_host_port(opt.pop3, pop3_host, sizeof pop3_host, &c->pop3.port);
	c->pop3.host = pop3_host;
	c->pop3.tls = tls_mode(opt.pop3_tls);
	c->pop3.user = opt.pop3_user;
	c->pop3.password = load_password("ACME_SMIME_POP3_PASS",
		opt.pop3_pass_file, pop3_pass, sizeof pop3_pass);
	if (c->pop3.password == NULL)
		die_usage("no POP3 password: set ACME_SMIME_POP3_PASS or "
			"--pop3-pass-file", NULL);
	split_host_port(opt.smtp, smtp_host, sizeof smtp_host, &c->smtp.port);
	c->smtp.host = smtp_host;
	c->smtp.tls = tls_mode(opt.smtp_tls);
	c->smtp.user = opt.smtp_user;
	if (opt.smtp_user != NULL) {
		c->smtp.password = load_password("ACME_SMIME_SMTP_PASS",
			opt.smtp_pass_file, smtp_pass, sizeof smtp_pass);
		if (c->smtp.password == NULL)
			die_usage("no SMTP password: set ACME_SMIME_SMTP_PASS or "
				"--smtp-pass-file", NULL);
	}
	if (opt.mail_ca_file != NULL) {
		c->mail_trust_anchors = mail_anchors;
		c->mail_trust_anchor_count = load_anchors_into(opt.mail_ca_file,
			mail_anchor_storage, sizeof mail_anchor_storage,
			mail_anchors, MAX_ANCHORS);
	} else if (c->pop3.tls != ACME_SMIME_TLS_NONE ||
			c->smtp.tls != ACME_SMIME_TLS_NONE) {
		die_usage("--mail-ca-file is required for TLS to the mail "
			"servers (the device has no system trust store)", NULL);
	}
	c->token_concat = opt.token_concat != NULL &&
		strcmp(opt.token_concat, "bytes") == 0 ?
		ACME_SMIME_CONCAT_BYTES : ACME_SMIME_CONCAT_STRING;
	if (opt.reply_grace >= 0)
		c->reply_grace_s = opt.reply_grace > 0 ?
			(uint32_t)opt.reply_grace : 1;
	if (opt.mail_poll > 0)
		c->mail_poll_s = (uint32_t)opt.mail_poll;
	if (opt.mail_wait > 0)
		c->mail_wait_s = (uint32_t)opt.mail_wait;
	if (opt.mail_policy != NULL &&
			strcmp(opt.mail_policy, "unsigned-ok") == 0) {
		c->mail_policy = ACME_SMIME_MAIL_ALLOW_UNSIGNED;
		progress("warning: --mail-policy unsigned-ok: challenge mails "
			"are not checked for a DKIM or S/MIME signature");
	}
}

static void
wipe(void *p, size_t len)
{
	volatile unsigned char *v = p;

	while (len-- > 0)
		*v++ = 0;
}

/* Write through a temporary file and rename(): never half a file. */
static int
write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[4096];
	const unsigned char *p = data;
	int fd, n, err;

	n = snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_EXCL, mode);
	if (fd < 0)
		return -1;
	if (fchmod(fd, mode) != 0)
		goto fail;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		p += w;
		len -= (size_t)w;
	}
	if (fsync(fd) != 0)
		goto fail;
	if (close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	if (rename(tmp, path) != 0) {
		err = errno;
		unlink(tmp);
		errno = err;
		return -1;
	}
	return 0;
fail:
	err = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	errno = err;
	return -1;
}

static int
write_outputs(void)
{
	static char stored[ACME_SMIME_STORE_MAX_CERT];
	char pem[512];
	const char *chain;
	size_t len = 0;
	int n;

	chain = acme_smime_cert_chain(&ctx, &len);
	if (chain == NULL && opt.out_cert != NULL) {
		/* Not downloaded in this run (not due) or larger than the
		 * work buffer: the store has it. */
		acme_smime_cert_info info;
		if (acme_smime_stored_cert(&store.flash, NULL, &info, NULL) == 1 &&
				info.chain_len <= sizeof stored &&
				acme_smime_stored_chain(&store.flash, 0, stored,
				info.chain_len) == (int)info.chain_len) {
			chain = stored;
			len = info.chain_len;
		}
	}
	if (opt.out_cert != NULL) {
		if (chain == NULL || len == 0) {
			fprintf(stderr, "acme-smime-lwip: no certificate chain to "
				"write\n");
			return EXIT_OTHER;
		}
		if (write_file_atomic(opt.out_cert, chain, len, 0644) != 0) {
			fprintf(stderr, "acme-smime-lwip: %s: %s\n", opt.out_cert,
				strerror(errno));
			return EXIT_STORAGE;
		}
		progress("wrote %s (%lu bytes)", opt.out_cert, (unsigned long)len);
	}
	if (opt.out_key != NULL) {
		const acme_smime_key *key = acme_smime_cert_key(&ctx);
		n = key != NULL && key->type != 0 ?
			acme_smime_key_to_pem(key, pem, sizeof pem) : -1;
		if (n <= 0) {
			fprintf(stderr, "acme-smime-lwip: no certificate key to "
				"write\n");
			return EXIT_OTHER;
		}
		if (write_file_atomic(opt.out_key, pem, (size_t)n, 0600) != 0) {
			fprintf(stderr, "acme-smime-lwip: %s: %s\n", opt.out_key,
				strerror(errno));
			wipe(pem, sizeof pem);
			return EXIT_STORAGE;
		}
		wipe(pem, sizeof pem);
		progress("wrote %s", opt.out_key);
	}
	return 0;
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
			die_usage("--ip wants ADDR/PREFIX", opt.ip);
		memcpy(addr, opt.ip, (size_t)(slash - opt.ip));
		addr[slash - opt.ip] = '\0';
		prefix = parse_number("--ip wants ADDR/PREFIX (prefix 1..32)",
			slash + 1, 1, 32);
	} else {
		snprintf(addr, sizeof addr, "%s", opt.ip);
	}
	if (!ip4addr_aton(addr, &ip))
		die_usage("--ip wants an IPv4 address", opt.ip);
	if (!ip4addr_aton(opt.gw, &gw))
		die_usage("--gw wants an IPv4 address", opt.gw);
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
		fprintf(stderr, "acme-smime-lwip: cannot bring up lwIP on %s\n",
			opt.tap);
		return -1;
	}
	netif_set_default(&nif);
	netif_set_link_up(&nif);
	netif_set_up(&nif);
	UNLOCK_TCPIP_CORE();
	progress("lwIP %s up on %s: %s/%lu via %s", LWIP_VERSION_STRING,
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

static int
exit_code_of(int code)
{
	switch (code) {
	case ACME_SMIME_ERR_TLS:
		return EXIT_TLS;
	case ACME_SMIME_ERR_NET:
	case ACME_SMIME_ERR_HTTP:
		return EXIT_NET;
	case ACME_SMIME_ERR_ACME:
	case ACME_SMIME_ERR_STATE:
		return EXIT_ACME;
	case ACME_SMIME_ERR_MAIL:
		return EXIT_MAIL;
	case ACME_SMIME_ERR_STORE:
		return EXIT_STORAGE;
	case ACME_SMIME_ERR_INVALID:
		return EXIT_USAGE;
	default:
		return EXIT_OTHER;
	}
}

static int
report_failure(int r)
{
	const acme_smime_error *e = acme_smime_last_error(&ctx);
	int code = e != NULL && e->code != 0 ? e->code : r;

	fprintf(stderr, "acme-smime-lwip: failed in state %s: %s\n",
		last_state, acme_smime_strerror(code));
	if (e != NULL) {
		if (e->text[0] != '\0')
			fprintf(stderr, "acme-smime-lwip:   %s\n", e->text);
		if (e->http_status != 0)
			fprintf(stderr, "acme-smime-lwip:   HTTP status %d\n",
				e->http_status);
		if (e->problem_type[0] != '\0')
			fprintf(stderr, "acme-smime-lwip:   ACME problem %s: %s\n",
				e->problem_type, e->problem_detail);
	}
	return exit_code_of(code);
}

/* acme_smime_run() with a progress line on every state change and wait:
 * what a board's task loop looks like (it could also wait on other
 * events between steps). */
static int
drive(void)
{
	const char *state = "", *now_state;
	int r, handle, events, account_shown = 0;

	for (;;) {
		r = acme_smime_step(&ctx);
		now_state = acme_smime_state_name(&ctx);
		if (now_state != NULL && strcmp(now_state, state) != 0) {
			state = now_state;
			if (r >= 0)
				last_state = state;
			progress("state %s", state);
		}
		if (!account_shown) {
			const char *url = acme_smime_account_url(&ctx);
			if (url != NULL && url[0] != '\0') {
				progress("account %s", url);
				account_shown = 1;
			}
		}
		switch (r) {
		case ACME_SMIME_AGAIN:
			break;
		case ACME_SMIME_WANT_IO:
			handle = acme_smime_io(&ctx, &events);
			if (ports.net_wait(ports.user, handle, events,
					IO_SLICE_MS) < 0)
				progress("wait on the socket failed");
			break;
		case ACME_SMIME_WANT_TIME: {
			uint64_t wake = acme_smime_wake_ms(&ctx);
			uint64_t now = ports.monotonic_ms(ports.user);
			if (wake > now) {
				uint64_t ms = wake - now;
				progress("wait %lu.%03lu s before %s",
					(unsigned long)(ms / 1000u),
					(unsigned long)(ms % 1000u), state);
				ports.sleep_ms(ports.user,
					ms > 0xffffffffu ? 0xffffffffu : (uint32_t)ms);
			}
			break;
		}
		case ACME_SMIME_DONE:
			return r;
		default:
			return r < 0 ? r : ACME_SMIME_ERR_STATE;
		}
	}
}

static void *
app_main(void *arg)
{
	int r;

	(void)arg;
	r = acme_smime_init(&ctx, &cfg, &ports, work, sizeof work, NULL);
	if (r == ACME_SMIME_OK)
		r = drive();
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
	size_t n_anchors, i, tcpip_used, tcpip_size, base_task, base_thread;
	uint64_t t0;
	int rc;

	parse_args(argc, argv, &opt);
	n_anchors = load_trust_anchors(opt.ca_file);

	for (i = 0; i < opt.dns_count; i++) {
		ids[i].type = ACME_SMIME_ID_DNS;
		ids[i].value = opt.dns[i];
	}
	for (i = 0; i < opt.email_count; i++) {
		ids[opt.dns_count + i].type = ACME_SMIME_ID_EMAIL;
		ids[opt.dns_count + i].value = opt.email[i];
	}
	cfg.directory_url = opt.directory;
	cfg.identifiers = ids;
	cfg.identifier_count = opt.dns_count + opt.email_count;
	cfg.contact = opt.contact;
	cfg.agree_tos = opt.agree_tos;
	cfg.key_usage = ACME_SMIME_KU_DUAL;
	cfg.trust_anchors = anchors;
	cfg.trust_anchor_count = n_anchors;
	cfg.force_renew = !opt.renew_if_due;
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
		progress("http-01 responder on lwIP port %u", opt.http01_port);
	} else if (opt.dns_count > 0) {
		progress("no --http01-listen-port: a pending http-01 challenge "
			"cannot be answered");
	}
	if (flash_file_open(&store, opt.store, STORE_SIZE, STORE_SECTOR,
			STORE_PROGRAM_UNIT) != 0) {
		fprintf(stderr, "acme-smime-lwip: --store %s: %s\n", opt.store,
			strerror(errno));
		return EXIT_STORAGE;
	}
	ports.flash = &store.flash;

	t0 = acme_smime_posix_monotonic_ms(NULL);
	if (host_task_start(&app_task, opt.task_stack, app_main, NULL) != 0 ||
			host_task_join(&app_task) != 0) {
		fprintf(stderr, "acme-smime-lwip: cannot run the application "
			"task\n");
		return EXIT_OTHER;
	}
	if (task_result == ACME_SMIME_DONE) {
		progress("certificate obtained in %lu ms",
			(unsigned long)(acme_smime_posix_monotonic_ms(NULL) - t0));
		rc = write_outputs();
	} else {
		rc = report_failure(task_result);
	}

	st = acme_smime_get_stats(&ctx);
	tapdev_get_stats(&ts);
	report_tcpip_stack(&tcpip_used, &tcpip_size);
	if (st != NULL)
		progress("stats: %u TLS handshakes, %u HTTP requests, %u badNonce "
			"retries, %u TCP connections, %u http-01 answers; tap "
			"%lu frames in (%lu bytes), %lu out (%lu bytes)",
			st->tls_handshakes, st->http_requests,
			st->bad_nonce_retries, lw.connections, lw.http01_served,
			ts.rx_frames, ts.rx_bytes, ts.tx_frames, ts.tx_bytes);
	/* Peak stack use of each thread, less what glibc puts on any thread's
	 * stack (descriptor, TLS: base_task / base_thread bytes). */
	base_task = host_task_baseline();
	base_thread = host_thread_baseline();
	progress("stack: application task %lu bytes, lwIP tcpip thread ~%lu, "
		"tap reader %lu (peaks less glibc's %lu/%lu per thread; task "
		"stack %lu)",
		(unsigned long)net_of(host_task_peak(&app_task), base_task),
		(unsigned long)net_of(tcpip_used, base_thread),
		(unsigned long)net_of(ts.rx_stack_peak, base_task),
		(unsigned long)base_task, (unsigned long)base_thread,
		(unsigned long)app_task.size);
	progress("ram: acme_smime_ctx %lu, work buffer %lu, struct "
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
	wipe(&ctx, sizeof ctx);
	wipe(work, sizeof work);
	wipe(pop3_pass, sizeof pop3_pass);
	wipe(smtp_pass, sizeof smtp_pass);
	/* Give lwIP a moment to send the FINs, then stop the driver. No
	 * tcpip shutdown exists in lwIP: the process simply ends. */
	sys_msleep(50);
	tapdev_stop();
	return rc;
}
