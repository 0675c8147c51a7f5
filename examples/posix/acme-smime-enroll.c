/*
 * acme-smime-enroll -- get a certificate from an ACME server (RFC 8555),
 * for S/MIME (RFC 8823 email identifiers) or for dns names (http-01).
 *
 * The library's engine is driven here step by step rather than through
 * acme_smime_run(), so that every state change and every wait can be shown
 * on stderr. The POSIX port (port/posix/acme_smime_posix.h) provides the
 * hooks and the http-01 responder; port/posix/flash_file.h keeps the
 * store (account key and URL, enrollment in progress) in a file that
 * behaves like NOR flash.
 *
 * Exit status (also in --help):
 *   0  certificate obtained and written
 *   2  usage: bad or missing option, unreadable input file, or a feature
 *      that is not implemented yet
 *   3  TLS: handshake or certificate verification failed
 *   4  network: resolve, connect, send/receive, malformed HTTP
 *   5  ACME: the server sent a problem document, or an order or
 *      authorization became invalid (type and detail are printed)
 *   6  mail: POP3/SMTP or a challenge mail failed
 *   7  storage: the --store file, or writing --out-cert/--out-key
 *   8  timeout or any other failure
 *
 * Secrets never come from argv except the EAB MAC key, which the contract
 * of issue 4 puts there: mail passwords come from ACME_SMIME_POP3_PASS /
 * ACME_SMIME_SMTP_PASS or from --pop3-pass-file / --smtp-pass-file.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "acme_smime.h"
#include "acme_smime_posix.h"
#include "flash_file.h"
#include "dns_txt.h"
#include "maildir.h"

#define EXIT_USAGE   2
#define EXIT_TLS     3
#define EXIT_NET     4
#define EXIT_ACME    5
#define EXIT_MAIL    6
#define EXIT_STORAGE 7
#define EXIT_OTHER   8

#define SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

/* Debian's bundle is 220 KB of PEM, 144 anchors needing 62 KB of names and
 * keys (measured 2026, bookworm): room for twice that. */
#define MAX_CA_PEM      (1024u * 1024u)
#define MAX_ANCHORS     320
#define ANCHOR_STORAGE  (160u * 1024u)

/* The store file: simulated NOR flash, as large as the store needs. */
#define STORE_SIZE         ACME_SMIME_STORE_SIZE(4096u, 16u)
#define STORE_SECTOR       4096u
#define STORE_PROGRAM_UNIT 16u

/* Longest wait on the socket before the engine is asked again (it tracks
 * its own timeouts). */
#define IO_SLICE_MS 1000u

static const char usage_text[] =
"usage: acme-smime-enroll --directory URL --ca-file PEM [--agree-tos] [--contact mailto:ADDR]\n"
"    [--dns NAME]... [--http01-listen ADDR:PORT]\n"
"    [--email ADDR]... [--pop3 HOST:PORT --pop3-tls none|starttls|implicit --pop3-user U]\n"
"    [--smtp HOST:PORT --smtp-tls none|starttls|implicit --smtp-user U] [--mail-ca-file PEM]\n"
"    [--token-concat string|bytes] [--reply-grace SECONDS] [--mail-policy strict|unsigned-ok]\n"
"    [--mail-poll SECONDS] [--mail-wait SECONDS] [--smime-ca-file PEM]\n"
"    [--dns-resolver HOST:PORT] [--trusted-authserv-id ID] [--mail-delete]\n"
"    [--maildir DIR [--sendmail COMMAND]]\n"
"    [--eab-kid ID --eab-hmac-key B64URL]\n"
"    [--store FILE] [--out-cert FILE] [--out-key FILE] [--renew-if-due] [-v] [-q]\n";

static const char help_text[] =
"\n"
"Get a certificate from an ACME (RFC 8555) server for the given identifiers.\n"
"\n"
"  --directory URL        the ACME directory (https://...)\n"
"  --ca-file PEM          trust anchors for the ACME server's TLS certificate\n"
"                         (default " SYSTEM_CA_FILE ")\n"
"  --agree-tos            agree to the server's terms of service\n"
"  --contact mailto:ADDR  account contact\n"
"  --dns NAME             a dns identifier (repeatable), validated with http-01\n"
"  --http01-listen A:P    serve http-01 key authorizations on address A, port P\n"
"  --email ADDR           an email identifier (RFC 8823; repeatable), validated by\n"
"                         answering the CA's challenge mail (POP3 in, SMTP out)\n"
"  --pop3 HOST:PORT, --pop3-tls MODE, --pop3-user U, --pop3-pass-file F\n"
"  --smtp HOST:PORT, --smtp-tls MODE, --smtp-user U, --smtp-pass-file F\n"
"  --mail-ca-file PEM     trust anchors for the mail servers\n"
"  --token-concat string|bytes, --reply-grace SECONDS,\n"
"  --mail-poll SECONDS    how often the mailbox is checked for the challenge\n"
"                         mail (default 10)\n"
"  --mail-wait SECONDS    how long to wait for it before giving up (default 600)\n"
"  --mail-policy strict|unsigned-ok  strict (default) needs a DKIM or S/MIME\n"
"                         signature on the challenge mail; unsigned-ok does not\n"
"  --smime-ca-file PEM    anchors for S/MIME-signed challenge mails\n"
"  --dns-resolver H:P     DNS server for DKIM keys (UDP)\n"
"  --trusted-authserv-id ID  trust Authentication-Results from this server\n"
"  --mail-delete          delete the answered challenge mail from the mailbox\n"
"  --maildir DIR          read the mailbox from a local Maildir instead of POP3,\n"
"                         and send the reply with a sendmail command instead of\n"
"                         SMTP (the library's mailbox hooks)\n"
"  --sendmail COMMAND     with --maildir: the command, words split at spaces\n"
"                         (default /usr/sbin/sendmail; run with -i -f FROM -- TO...)\n"
"                         mail passwords come from ACME_SMIME_POP3_PASS and\n"
"                         ACME_SMIME_SMTP_PASS or the *-pass-file options, never argv\n"
"  --eab-kid ID --eab-hmac-key B64URL   external account binding\n"
"  --store FILE           account and enrollment state (default acme-smime.flash)\n"
"  --out-cert FILE        write the certificate chain (PEM, leaf first)\n"
"  --out-key FILE         write the certificate's private key (PKCS#8 PEM, mode 0600)\n"
"  --renew-if-due         enroll only when no certificate for these identifiers is\n"
"                         stored or two thirds of its lifetime have passed; else\n"
"                         exit 0 at once, without network traffic (for cron)\n"
"  -v                     verbose (library debug log); -q: errors only\n"
"  --help                 this text\n"
"\n"
"Exit status: 0 success, 2 usage, 3 TLS, 4 network, 5 ACME problem from the\n"
"server, 6 mail, 7 storage, 8 timeout or other.\n";

struct options {
	const char *directory, *ca_file, *contact;
	int agree_tos;
	const char *dns[ACME_SMIME_MAX_IDENTIFIERS];
	size_t dns_count;
	const char *email[ACME_SMIME_MAX_IDENTIFIERS];
	size_t email_count;
	const char *http01_listen;
	const char *pop3, *pop3_tls, *pop3_user, *pop3_pass_file;
	const char *smtp, *smtp_tls, *smtp_user, *smtp_pass_file;
	const char *mail_ca_file, *token_concat, *mail_policy;
	const char *smime_ca_file, *dns_resolver, *authserv_id;
	const char *maildir, *sendmail;
	int mail_delete;
	long reply_grace, mail_poll, mail_wait;
	const char *eab_kid, *eab_hmac_key;
	const char *store, *out_cert, *out_key;
	int renew_if_due;
	int verbose, quiet;
	int mail_used;   /* a mail option was given */
};

/* Everything large is static: the CLI is a single enrollment. */
static char ca_pem[MAX_CA_PEM];
static unsigned char anchor_storage[ANCHOR_STORAGE];
static br_x509_trust_anchor anchors[MAX_ANCHORS];
static unsigned char work[ACME_SMIME_WORKBUF_SIZE];
static acme_smime_ctx ctx;
static struct acme_smime_posix posix;
static struct flash_file store;

static int quiet;
static const char *last_state = "init";   /* before "failed" */

static void
progress(const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
	__attribute__((format(printf, 1, 2)))
#endif
	;

static void
progress(const char *fmt, ...)
{
	va_list ap;

	if (quiet)
		return;
	fputs("acme-smime-enroll: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void
die_usage(const char *what, const char *arg)
{
	if (arg != NULL)
		fprintf(stderr, "acme-smime-enroll: %s: %s\n", what, arg);
	else
		fprintf(stderr, "acme-smime-enroll: %s\n", what);
	fputs(usage_text, stderr);
	fputs("(--help for details)\n", stderr);
	exit(EXIT_USAGE);
}

static int
one_of(const char *v, const char *a, const char *b, const char *c)
{
	return strcmp(v, a) == 0 || strcmp(v, b) == 0 ||
		(c != NULL && strcmp(v, c) == 0);
}

static long
parse_seconds(const char *opt, const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0 || v > 86400L * 30)
		die_usage(opt, s);
	return v;
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

static void
parse_args(int argc, char **argv, struct options *o)
{
	const char *v;
	int i;

	memset(o, 0, sizeof *o);
	o->store = "acme-smime.flash";
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
		} else if ((v = opt_value(argc, argv, &i, "--http01-listen")) != NULL) {
			if (!host_port_ok(v))
				die_usage("--http01-listen wants ADDR:PORT", v);
			o->http01_listen = v;
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
		} else if ((v = opt_value(argc, argv, &i, "--pop3-pass-file")) != NULL) {
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
		} else if ((v = opt_value(argc, argv, &i, "--smtp-pass-file")) != NULL) {
			o->smtp_pass_file = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--mail-ca-file")) != NULL) {
			o->mail_ca_file = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--token-concat")) != NULL) {
			if (!one_of(v, "string", "bytes", NULL))
				die_usage("--token-concat wants string|bytes", v);
			o->token_concat = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--reply-grace")) != NULL) {
			o->reply_grace = parse_seconds("--reply-grace wants "
				"seconds (0..2592000)", v);
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--mail-poll")) != NULL) {
			o->mail_poll = parse_seconds("--mail-poll wants seconds "
				"(1..2592000)", v);
			if (o->mail_poll == 0)
				die_usage("--mail-poll wants seconds (1..2592000)", v);
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--mail-wait")) != NULL) {
			o->mail_wait = parse_seconds("--mail-wait wants seconds "
				"(1..2592000)", v);
			if (o->mail_wait == 0)
				die_usage("--mail-wait wants seconds (1..2592000)", v);
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--smime-ca-file")) != NULL) {
			o->smime_ca_file = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--dns-resolver")) != NULL) {
			o->dns_resolver = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--trusted-authserv-id")) != NULL) {
			o->authserv_id = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--mail-policy")) != NULL) {
			if (!one_of(v, "strict", "unsigned-ok", NULL))
				die_usage("--mail-policy wants strict|unsigned-ok", v);
			o->mail_policy = v;
			o->mail_used = 1;
		} else if (strcmp(a, "--mail-delete") == 0) {
			o->mail_delete = 1;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--maildir")) != NULL) {
			o->maildir = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--sendmail")) != NULL) {
			o->sendmail = v;
			o->mail_used = 1;
		} else if ((v = opt_value(argc, argv, &i, "--eab-kid")) != NULL) {
			o->eab_kid = v;
		} else if ((v = opt_value(argc, argv, &i, "--eab-hmac-key")) != NULL) {
			o->eab_hmac_key = v;
		} else if ((v = opt_value(argc, argv, &i, "--store")) != NULL) {
			o->store = v;
		} else if ((v = opt_value(argc, argv, &i, "--out-cert")) != NULL) {
			o->out_cert = v;
		} else if ((v = opt_value(argc, argv, &i, "--out-key")) != NULL) {
			o->out_key = v;
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
	if (o->dns_count + o->email_count == 0)
		die_usage("give at least one --dns or --email identifier", NULL);
	if ((o->eab_kid == NULL) != (o->eab_hmac_key == NULL))
		die_usage("--eab-kid and --eab-hmac-key go together", NULL);
	if (o->http01_listen != NULL && o->dns_count == 0)
		die_usage("--http01-listen is only for --dns identifiers", NULL);
	if (o->store[0] == '\0')
		die_usage("--store wants a file name", NULL);
}

/* Features whose issues have not landed: refuse plainly. */
static void
refuse_unimplemented(const struct options *o)
{
	(void)o;
}

static size_t
read_file(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL) {
		fprintf(stderr, "acme-smime-enroll: %s: %s\n", path,
			strerror(errno));
		exit(EXIT_USAGE);
	}
	n = fread(buf, 1, size, f);
	if (ferror(f) || n == size) {
		fprintf(stderr, "acme-smime-enroll: %s: %s\n", path,
			ferror(f) ? strerror(errno) : "file too large");
		exit(EXIT_USAGE);
	}
	fclose(f);
	buf[n] = '\0';
	return n;
}

static size_t
load_anchors_into(const char *path, unsigned char *storage, size_t storage_size,
	br_x509_trust_anchor *tas, size_t max)
{
	size_t len = read_file(path, ca_pem, sizeof ca_pem);
	int n = acme_smime_trust_anchors_from_pem(ca_pem, len, storage,
		storage_size, tas, max);

	if (n < 0) {
		fprintf(stderr, "acme-smime-enroll: %s: %s\n", path,
			acme_smime_strerror(n));
		exit(EXIT_USAGE);
	}
	if (n == 0) {
		fprintf(stderr, "acme-smime-enroll: %s: no usable certificate\n",
			path);
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

/* A password from the environment or a file (first line), never argv. */
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

/* HOST:PORT into a static host copy and a port. */
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

/* DKIM keys: the library asks through the ports' dns_txt hook, whose
 * user pointer is the POSIX port's; the resolver is kept here. */
static struct acme_smime_dns_resolver resolver;
static int have_resolver;

static int
cli_dns_txt(void *user, const char *name, char *out, size_t out_size)
{
	(void)user;
	return have_resolver ? acme_smime_posix_dns_txt(&resolver, name, out,
		out_size) : -1;
}

/* --maildir: the library's mailbox hooks over the POSIX port's Maildir
 * and sendmail code (the ports' user pointer is the POSIX port's). */
static struct acme_smime_maildir maildir;

static int
cli_mb_list(void *user, acme_smime_mail_entry_fn entry, void *arg)
{
	(void)user;
	return acme_smime_maildir_list(&maildir, entry, arg);
}

static int
cli_mb_read(void *user, const char *id, char *buf, size_t size, size_t *len)
{
	(void)user;
	return acme_smime_maildir_read(&maildir, id, buf, size, len);
}

static int
cli_mb_send(void *user, const char *from, const char *const *to, size_t to_count,
	const char *mail, size_t len)
{
	(void)user;
	return acme_smime_maildir_send(&maildir, from, to, to_count, mail, len);
}

static int
cli_mb_remove(void *user, const char *id)
{
	(void)user;
	return acme_smime_maildir_remove(&maildir, id);
}

static const acme_smime_mailbox cli_mailbox = {
	cli_mb_list, cli_mb_read, cli_mb_send, cli_mb_remove
};

/* The built-in POP3 and SMTP clients' servers. */
static void
setup_mail_servers(const struct options *o, acme_smime_config *cfg)
{
	static char pop3_host[256], smtp_host[256];
	static char pop3_pass[256], smtp_pass[256];
	static unsigned char mail_storage[ANCHOR_STORAGE];
	static br_x509_trust_anchor mail_anchors[MAX_ANCHORS];

	if (o->pop3 == NULL || o->smtp == NULL || o->pop3_user == NULL)
		die_usage("--email needs --pop3, --pop3-user and --smtp (or --maildir)",
			NULL);
	split_host_port(o->pop3, pop3_host, sizeof pop3_host, &cfg->pop3.port);
	cfg->pop3.host = pop3_host;
	cfg->pop3.tls = tls_mode(o->pop3_tls);
	cfg->pop3.user = o->pop3_user;
	cfg->pop3.password = load_password("ACME_SMIME_POP3_PASS", o->pop3_pass_file,
		pop3_pass, sizeof pop3_pass);
	if (cfg->pop3.password == NULL)
		die_usage("no POP3 password: set ACME_SMIME_POP3_PASS or --pop3-pass-file",
			NULL);
	split_host_port(o->smtp, smtp_host, sizeof smtp_host, &cfg->smtp.port);
	cfg->smtp.host = smtp_host;
	cfg->smtp.tls = tls_mode(o->smtp_tls);
	cfg->smtp.user = o->smtp_user;
	if (o->smtp_user != NULL) {
		cfg->smtp.password = load_password("ACME_SMIME_SMTP_PASS",
			o->smtp_pass_file, smtp_pass, sizeof smtp_pass);
		if (cfg->smtp.password == NULL)
			die_usage("no SMTP password: set ACME_SMIME_SMTP_PASS or "
				"--smtp-pass-file", NULL);
	}
	cfg->mail_trust_anchors = mail_anchors;
	cfg->mail_trust_anchor_count = load_anchors_into(o->mail_ca_file != NULL ?
		o->mail_ca_file : SYSTEM_CA_FILE, mail_storage, sizeof mail_storage,
		mail_anchors, MAX_ANCHORS);
}

/* The RFC 8823 part of the configuration and ports. */
static void
setup_mail(const struct options *o, acme_smime_config *cfg, acme_smime_ports *ports)
{
	if (o->email_count == 0) {
		if (o->mail_used)
			die_usage("mail options need --email", NULL);
		return;
	}
	if (o->maildir != NULL) {
		if (o->pop3 != NULL || o->smtp != NULL)
			die_usage("--maildir replaces --pop3 and --smtp", NULL);
		if (acme_smime_maildir_init(&maildir, o->maildir, o->sendmail != NULL ?
				o->sendmail : "/usr/sbin/sendmail") != 0)
			die_usage("--maildir wants a Maildir (with new/ and cur/)",
				o->maildir);
		ports->mailbox = &cli_mailbox;
	} else if (o->sendmail != NULL) {
		die_usage("--sendmail goes with --maildir", NULL);
	} else {
		setup_mail_servers(o, cfg);
	}
	cfg->mail_delete = o->mail_delete;
	if (o->smime_ca_file != NULL) {
		static unsigned char smime_storage[ANCHOR_STORAGE / 4];
		static br_x509_trust_anchor smime_anchors[MAX_ANCHORS / 4];

		cfg->smime_trust_anchors = smime_anchors;
		cfg->smime_trust_anchor_count = load_anchors_into(o->smime_ca_file,
			smime_storage, sizeof smime_storage, smime_anchors,
			MAX_ANCHORS / 4);
	}
	if (o->dns_resolver != NULL) {
		if (acme_smime_dns_resolver_init(&resolver, o->dns_resolver) != 0)
			die_usage("--dns-resolver wants HOST:PORT", o->dns_resolver);
		have_resolver = 1;
	}
	cfg->trusted_authserv_id = o->authserv_id;
	cfg->token_concat = o->token_concat != NULL &&
		strcmp(o->token_concat, "bytes") == 0 ?
		ACME_SMIME_CONCAT_BYTES : ACME_SMIME_CONCAT_STRING;
	if (o->reply_grace >= 0)
		cfg->reply_grace_s = o->reply_grace > 0 ? (uint32_t)o->reply_grace : 1;
	if (o->mail_poll > 0)
		cfg->mail_poll_s = (uint32_t)o->mail_poll;
	if (o->mail_wait > 0)
		cfg->mail_wait_s = (uint32_t)o->mail_wait;
	if (o->mail_policy != NULL && strcmp(o->mail_policy, "unsigned-ok") == 0) {
		cfg->mail_policy = ACME_SMIME_MAIL_ALLOW_UNSIGNED;
		progress("warning: --mail-policy unsigned-ok: challenge mails are not "
			"checked for a DKIM or S/MIME signature");
	}
}

static void
wipe(void *p, size_t len)
{
	volatile unsigned char *v = p;

	while (len-- > 0)
		*v++ = 0;
}

/* Write data to path through a temporary file and rename(), so a reader
 * never sees half a file; mode applies even when path existed. */
static int
write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[4096];
	const unsigned char *p = data;
	int fd, n;

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
	if (fsync(fd) != 0 || close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	if (rename(tmp, path) != 0) {
		unlink(tmp);
		return -1;
	}
	return 0;
fail:
	{
		int err = errno;
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		errno = err;
	}
	return -1;
}

/* The certificate key as PKCS#8 PEM ("BEGIN PRIVATE KEY"). */
static int
write_key_pem(const char *path, const acme_smime_key *key)
{
	unsigned char priv[48], pub[97], der[256];
	char pem[512];
	br_ec_private_key sk;
	br_ec_public_key pk;
	size_t der_len, pem_len;
	int curve, r = -1;

	if (key->type == ACME_SMIME_KEY_P256)
		curve = BR_EC_secp256r1;
	else if (key->type == ACME_SMIME_KEY_P384)
		curve = BR_EC_secp384r1;
	else
		return -1;
	memcpy(priv, key->priv, key->priv_len);
	memcpy(pub, key->pub, key->pub_len);
	sk.curve = curve;
	sk.x = priv;
	sk.xlen = key->priv_len;
	pk.curve = curve;
	pk.q = pub;
	pk.qlen = key->pub_len;
	der_len = br_encode_ec_pkcs8_der(NULL, &sk, &pk);
	if (der_len == 0 || der_len > sizeof der)
		goto out;
	br_encode_ec_pkcs8_der(der, &sk, &pk);
	pem_len = br_pem_encode(NULL, der, der_len, "PRIVATE KEY", BR_PEM_LINE64);
	if (pem_len + 2 > sizeof pem)
		goto out;
	br_pem_encode(pem, der, der_len, "PRIVATE KEY", BR_PEM_LINE64);
	if (pem[pem_len - 1] != '\n')
		pem[pem_len++] = '\n';
	r = write_file_atomic(path, pem, pem_len, 0600);
out:
	wipe(priv, sizeof priv);
	wipe(der, sizeof der);
	wipe(pem, sizeof pem);
	wipe(&sk, sizeof sk);
	return r;
}

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
		/* A configuration the server cannot take (e.g. it requires
		 * external account binding and none was given). */
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

	fprintf(stderr, "acme-smime-enroll: failed in state %s: %s\n",
		last_state, acme_smime_strerror(code));
	if (e != NULL) {
		if (e->text[0] != '\0')
			fprintf(stderr, "acme-smime-enroll:   %s\n", e->text);
		if (e->http_status != 0)
			fprintf(stderr, "acme-smime-enroll:   HTTP status %d\n",
				e->http_status);
		if (e->problem_type[0] != '\0')
			fprintf(stderr, "acme-smime-enroll:   ACME problem %s: %s\n",
				e->problem_type, e->problem_detail);
		if (e->retryable)
			fprintf(stderr, "acme-smime-enroll:   (a later attempt may "
				"succeed)\n");
	}
	return exit_code_of(code);
}

static void
print_stats(void)
{
	const acme_smime_stats *s = acme_smime_get_stats(&ctx);

	if (s == NULL)
		return;
	progress("stats: %u TLS handshakes, %u HTTP requests, %u badNonce "
		"retries, %u TCP connections, %u http-01 answers, %lu flash "
		"operations", s->tls_handshakes, s->http_requests,
		s->bad_nonce_retries, posix.connections, posix.http01_served,
		store.erases + store.programs);
}

/* acme_smime_run() with a progress line on every state change and wait. */
static int
drive(const acme_smime_ports *ports)
{
	const char *state = "", *now_state;
	const char *account_shown = "";
	char account[ACME_SMIME_MAX_URL + 1] = "";
	int r, handle, events;

	for (;;) {
		r = acme_smime_step(&ctx);
		now_state = acme_smime_state_name(&ctx);
		if (now_state != NULL && strcmp(now_state, state) != 0) {
			state = now_state;
			if (r >= 0)
				last_state = state;
			progress("state %s", state);
		}
		if (account_shown == account || account[0] == '\0') {
			const char *url = acme_smime_account_url(&ctx);
			if (url != NULL && url[0] != '\0' && account[0] == '\0') {
				snprintf(account, sizeof account, "%s", url);
				progress("account %s", account);
				account_shown = account;
			}
		}
		switch (r) {
		case ACME_SMIME_AGAIN:
			break;
		case ACME_SMIME_WANT_IO:
			handle = acme_smime_io(&ctx, &events);
			if (ports->net_wait(ports->user, handle, events,
					IO_SLICE_MS) < 0)
				progress("wait on the socket failed");
			break;
		case ACME_SMIME_WANT_TIME: {
			uint64_t wake = acme_smime_wake_ms(&ctx);
			uint64_t now = ports->monotonic_ms(ports->user);
			if (wake > now) {
				uint64_t ms = wake - now;
				/* The engine names the state it resumes in. */
				progress("wait %lu.%03lu s before %s",
					(unsigned long)(ms / 1000u),
					(unsigned long)(ms % 1000u), state);
				ports->sleep_ms(ports->user,
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

static int
write_outputs(const struct options *o)
{
	const char *chain;
	size_t len = 0;
	const acme_smime_key *key;

	chain = acme_smime_cert_chain(&ctx, &len);
	if (chain == NULL && o->out_cert != NULL) {
		/* Not downloaded in this run (not due) or larger than the
		 * work buffer: the store has it. */
		static char stored[ACME_SMIME_STORE_MAX_CERT];
		acme_smime_cert_info info;

		if (acme_smime_stored_cert(&store.flash, NULL, &info, NULL) == 1 &&
		    info.chain_len <= sizeof stored &&
		    acme_smime_stored_chain(&store.flash, 0, stored,
		    info.chain_len) == (int)info.chain_len) {
			chain = stored;
			len = info.chain_len;
		}
	}
	if (o->out_cert != NULL) {
		if (chain == NULL || len == 0) {
			fprintf(stderr, "acme-smime-enroll: no certificate chain to "
				"write\n");
			return EXIT_OTHER;
		}
		if (write_file_atomic(o->out_cert, chain, len, 0644) != 0) {
			fprintf(stderr, "acme-smime-enroll: %s: %s\n", o->out_cert,
				strerror(errno));
			return EXIT_STORAGE;
		}
		progress("wrote %s (%lu bytes)", o->out_cert, (unsigned long)len);
	}
	if (o->out_key != NULL) {
		key = acme_smime_cert_key(&ctx);
		if (key == NULL || key->type == 0) {
			fprintf(stderr, "acme-smime-enroll: no certificate key to "
				"write\n");
			return EXIT_OTHER;
		}
		if (write_key_pem(o->out_key, key) != 0) {
			fprintf(stderr, "acme-smime-enroll: %s: %s\n", o->out_key,
				strerror(errno));
			return EXIT_STORAGE;
		}
		progress("wrote %s", o->out_key);
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static struct options o;
	static acme_smime_identifier ids[ACME_SMIME_MAX_IDENTIFIERS];
	static acme_smime_config cfg;
	acme_smime_ports ports;
	const char *ca_file;
	size_t n_ids = 0, n_anchors, i;
	int r, rc;

	signal(SIGPIPE, SIG_IGN);
	parse_args(argc, argv, &o);
	quiet = o.quiet;
	refuse_unimplemented(&o);

	ca_file = o.ca_file != NULL ? o.ca_file : SYSTEM_CA_FILE;
	n_anchors = load_trust_anchors(ca_file);
	if (o.verbose)
		progress("%lu trust anchors from %s", (unsigned long)n_anchors,
			ca_file);

	for (i = 0; i < o.dns_count; i++) {
		ids[n_ids].type = ACME_SMIME_ID_DNS;
		ids[n_ids++].value = o.dns[i];
	}
	for (i = 0; i < o.email_count; i++) {
		ids[n_ids].type = ACME_SMIME_ID_EMAIL;
		ids[n_ids++].value = o.email[i];
	}
	cfg.directory_url = o.directory;
	cfg.identifiers = ids;
	cfg.identifier_count = n_ids;
	cfg.contact = o.contact;
	cfg.agree_tos = o.agree_tos;
	cfg.eab_kid = o.eab_kid;
	cfg.eab_hmac_key = o.eab_hmac_key;
	cfg.key_usage = ACME_SMIME_KU_DUAL;
	cfg.trust_anchors = anchors;
	cfg.trust_anchor_count = n_anchors;
	/* Without --renew-if-due a run enrolls even when a stored
	 * certificate is still good. */
	cfg.force_renew = !o.renew_if_due;
	acme_smime_posix_init(&posix, &ports);
	setup_mail(&o, &cfg, &ports);
	posix.log_name = "acme-smime-enroll";
	posix.verbosity = o.quiet ? ACME_SMIME_LOG_ERROR :
		o.verbose ? ACME_SMIME_LOG_DEBUG : ACME_SMIME_LOG_INFO;
	if (o.http01_listen != NULL) {
		if (acme_smime_posix_http01_listen(&posix, o.http01_listen) != 0)
			return EXIT_NET;
		progress("http-01 responder on %s", o.http01_listen);
	} else if (o.dns_count > 0) {
		progress("no --http01-listen: a pending http-01 challenge cannot "
			"be answered");
	}

	if (flash_file_open(&store, o.store, STORE_SIZE, STORE_SECTOR,
			STORE_PROGRAM_UNIT) != 0) {
		fprintf(stderr, "acme-smime-enroll: --store %s: %s\n", o.store,
			strerror(errno));
		acme_smime_posix_close(&posix);
		return EXIT_STORAGE;
	}
	ports.flash = &store.flash;
	ports.dns_txt = cli_dns_txt;
	{
		/* Test hook: power cut after N flash operations (erase or
		 * program). The interrupted operation is left half done and
		 * the flash refuses everything after it, as after a power
		 * loss; the run then fails with the storage exit code. */
		const char *cut = getenv("ACME_SMIME_FLASH_CUT_AFTER");

		if (cut != NULL && *cut != '\0') {
			store.ops_left = strtol(cut, NULL, 10);
			store.cut_seed = (uint32_t)store.ops_left * 2654435761u;
		}
	}

	r = acme_smime_init(&ctx, &cfg, &ports, work, sizeof work, NULL);
	if (r == ACME_SMIME_OK)
		r = drive(&ports);
	if (r == ACME_SMIME_DONE) {
		progress("certificate obtained");
		rc = write_outputs(&o);
	} else {
		rc = report_failure(r);
	}
	print_stats();

	flash_file_close(&store);
	acme_smime_posix_close(&posix);
	wipe(&ctx, sizeof ctx);
	wipe(work, sizeof work);
	return rc;
}
