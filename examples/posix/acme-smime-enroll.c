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
 * What it shares with the lwIP example (options, messages, files, the
 * drive loop, the failure report) is examples/common/cli.c.
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

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "acme_smime.h"
#include "acme_smime_posix.h"
#include "cli.h"
#include "flash_file.h"
#include "dns_txt.h"
#include "maildir.h"

#define SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

/* Debian's bundle is 220 KB of PEM, 144 anchors needing 62 KB of names and
 * keys (measured 2026, bookworm): room for twice that. */
#define MAX_CA_PEM      (1024u * 1024u)
#define MAX_ANCHORS     320
#define ANCHOR_STORAGE  (160u * 1024u)

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
CLI_HELP_MAIL_SETTINGS
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
	struct cli_options cli;   /* those acme-smime-lwip takes too */
	const char *http01_listen;
	const char *smime_ca_file, *dns_resolver, *authserv_id;
	const char *maildir, *sendmail;
	int mail_delete;
	const char *eab_kid, *eab_hmac_key;
};

/* Everything large is static: the CLI is a single enrollment. */
static char ca_pem[MAX_CA_PEM];
static unsigned char anchor_storage[ANCHOR_STORAGE];
static br_x509_trust_anchor anchors[MAX_ANCHORS];
static unsigned char work[ACME_SMIME_WORKBUF_SIZE];
static acme_smime_ctx ctx;
static struct acme_smime_posix posix;
static struct flash_file store;

static const struct cli_program program = {
	"acme-smime-enroll", usage_text, help_text, ca_pem, sizeof ca_pem, 0
};

/* This program's own mail options: the Maildir, S/MIME and DKIM ones. */
static int
mail_option(struct options *o, int argc, char **argv, int *i)
{
	const char *v;

	if ((v = cli_value(argc, argv, i, "--smime-ca-file")) != NULL)
		o->smime_ca_file = v;
	else if ((v = cli_value(argc, argv, i, "--dns-resolver")) != NULL)
		o->dns_resolver = v;
	else if ((v = cli_value(argc, argv, i, "--trusted-authserv-id")) != NULL)
		o->authserv_id = v;
	else if (strcmp(argv[*i], "--mail-delete") == 0)
		o->mail_delete = 1;
	else if ((v = cli_value(argc, argv, i, "--maildir")) != NULL)
		o->maildir = v;
	else if ((v = cli_value(argc, argv, i, "--sendmail")) != NULL)
		o->sendmail = v;
	else
		return 0;
	o->cli.mail_used = 1;
	return 1;
}

/* The options acme-smime-lwip does not take. */
static int
own_option(struct options *o, int argc, char **argv, int *i)
{
	const char *v;

	if ((v = cli_value(argc, argv, i, "--http01-listen")) != NULL) {
		if (!cli_host_port_ok(v))
			cli_die_usage("--http01-listen wants ADDR:PORT", v);
		o->http01_listen = v;
	} else if ((v = cli_value(argc, argv, i, "--eab-kid")) != NULL) {
		o->eab_kid = v;
	} else if ((v = cli_value(argc, argv, i, "--eab-hmac-key")) != NULL) {
		o->eab_hmac_key = v;
	} else {
		return mail_option(o, argc, argv, i);
	}
	return 1;
}

static void
parse_args(int argc, char **argv, struct options *o)
{
	int i;

	memset(o, 0, sizeof *o);
	cli_options_init(&o->cli, "acme-smime.flash");
	for (i = 1; i < argc; i++)
		if (!own_option(o, argc, argv, &i) &&
				!cli_option(&o->cli, argc, argv, &i))
			cli_die_usage("unknown option", argv[i]);
	cli_check_options(&o->cli);
	if ((o->eab_kid == NULL) != (o->eab_hmac_key == NULL))
		cli_die_usage("--eab-kid and --eab-hmac-key go together", NULL);
	if (o->http01_listen != NULL && o->cli.dns_count == 0)
		cli_die_usage("--http01-listen is only for --dns identifiers", NULL);
	if (o->cli.store[0] == '\0')
		cli_die_usage("--store wants a file name", NULL);
}

/* Features whose issues have not landed: refuse plainly. */
static void
refuse_unimplemented(const struct options *o)
{
	(void)o;
}

/* DKIM keys: the library asks through the ports' dns_txt hook, whose
 * user pointer is the POSIX port's; the resolver is kept here. */
static struct acme_smime_dns_resolver resolver;
static int have_resolver;

static int
dkim_dns_txt(void *user, const char *name, char *out, size_t out_size)
{
	(void)user;
	return have_resolver ? acme_smime_posix_dns_txt(&resolver, name, out,
		out_size) : -1;
}

/* --maildir: the library's mailbox hooks over the POSIX port's Maildir
 * and sendmail code (the ports' user pointer is the POSIX port's). */
static struct acme_smime_maildir maildir;

static int
mailbox_list(void *user, acme_smime_mail_entry_fn entry, void *arg)
{
	(void)user;
	return acme_smime_maildir_list(&maildir, entry, arg);
}

static int
mailbox_read(void *user, const char *id, char *buf, size_t size, size_t *len)
{
	(void)user;
	return acme_smime_maildir_read(&maildir, id, buf, size, len);
}

static int
mailbox_send(void *user, const char *from, const char *const *to, size_t to_count,
	const char *mail, size_t len)
{
	(void)user;
	return acme_smime_maildir_send(&maildir, from, to, to_count, mail, len);
}

static int
mailbox_remove(void *user, const char *id)
{
	(void)user;
	return acme_smime_maildir_remove(&maildir, id);
}

static const acme_smime_mailbox maildir_mailbox = {
	mailbox_list, mailbox_read, mailbox_send, mailbox_remove
};

/* The built-in POP3 and SMTP clients' servers. */
static void
setup_mail_servers(const struct options *o, acme_smime_config *cfg)
{
	static unsigned char mail_storage[ANCHOR_STORAGE];
	static br_x509_trust_anchor mail_anchors[MAX_ANCHORS];

	if (o->cli.pop3 == NULL || o->cli.smtp == NULL || o->cli.pop3_user == NULL)
		cli_die_usage("--email needs --pop3, --pop3-user and --smtp (or "
			"--maildir)", NULL);
	cli_mail_servers(&o->cli, cfg);
	cfg->mail_trust_anchors = mail_anchors;
	cfg->mail_trust_anchor_count = cli_load_anchors(
		o->cli.mail_ca_file != NULL ? o->cli.mail_ca_file : SYSTEM_CA_FILE,
		mail_storage, sizeof mail_storage, mail_anchors, MAX_ANCHORS);
}

/* The RFC 8823 part of the configuration and ports. */
static void
setup_mail(const struct options *o, acme_smime_config *cfg, acme_smime_ports *ports)
{
	if (o->cli.email_count == 0) {
		if (o->cli.mail_used)
			cli_die_usage("mail options need --email", NULL);
		return;
	}
	if (o->maildir != NULL) {
		if (o->cli.pop3 != NULL || o->cli.smtp != NULL)
			cli_die_usage("--maildir replaces --pop3 and --smtp", NULL);
		if (acme_smime_maildir_init(&maildir, o->maildir, o->sendmail != NULL ?
				o->sendmail : "/usr/sbin/sendmail") != 0)
			cli_die_usage("--maildir wants a Maildir (with new/ and cur/)",
				o->maildir);
		ports->mailbox = &maildir_mailbox;
	} else if (o->sendmail != NULL) {
		cli_die_usage("--sendmail goes with --maildir", NULL);
	} else {
		setup_mail_servers(o, cfg);
	}
	cfg->mail_delete = o->mail_delete;
	if (o->smime_ca_file != NULL) {
		static unsigned char smime_storage[ANCHOR_STORAGE / 4];
		static br_x509_trust_anchor smime_anchors[MAX_ANCHORS / 4];

		cfg->smime_trust_anchors = smime_anchors;
		cfg->smime_trust_anchor_count = cli_load_anchors(o->smime_ca_file,
			smime_storage, sizeof smime_storage, smime_anchors,
			MAX_ANCHORS / 4);
	}
	if (o->dns_resolver != NULL) {
		if (acme_smime_dns_resolver_init(&resolver, o->dns_resolver) != 0)
			cli_die_usage("--dns-resolver wants HOST:PORT", o->dns_resolver);
		have_resolver = 1;
	}
	cfg->trusted_authserv_id = o->authserv_id;
	cli_mail_settings(&o->cli, cfg);
}

/* The shared report, and whether a later attempt may succeed. */
static int
report_failure(int r)
{
	const acme_smime_error *e = acme_smime_last_error(&ctx);
	int rc = cli_report_failure(&ctx, r);

	if (e != NULL && e->retryable)
		cli_error("  (a later attempt may succeed)");
	return rc;
}

static void
print_stats(void)
{
	const acme_smime_stats *s = acme_smime_get_stats(&ctx);

	if (s == NULL)
		return;
	cli_progress("stats: %u TLS handshakes, %u HTTP requests, %u badNonce "
		"retries, %u TCP connections, %u http-01 answers, %lu flash "
		"operations", s->tls_handshakes, s->http_requests,
		s->bad_nonce_retries, posix.connections, posix.http01_served,
		store.erases + store.programs);
}

int
main(int argc, char **argv)
{
	static struct options o;
	static acme_smime_config cfg;
	acme_smime_ports ports;
	const char *ca_file;
	size_t n_anchors;
	int r, rc;

	signal(SIGPIPE, SIG_IGN);
	cli_init(&program);
	parse_args(argc, argv, &o);
	refuse_unimplemented(&o);

	ca_file = o.cli.ca_file != NULL ? o.cli.ca_file : SYSTEM_CA_FILE;
	n_anchors = cli_load_anchors(ca_file, anchor_storage,
		sizeof anchor_storage, anchors, MAX_ANCHORS);
	if (o.cli.verbose)
		cli_progress("%lu trust anchors from %s", (unsigned long)n_anchors,
			ca_file);

	cli_config(&o.cli, &cfg, anchors, n_anchors);
	cfg.eab_kid = o.eab_kid;
	cfg.eab_hmac_key = o.eab_hmac_key;
	acme_smime_posix_init(&posix, &ports);
	setup_mail(&o, &cfg, &ports);
	posix.log_name = "acme-smime-enroll";
	posix.verbosity = o.cli.quiet ? ACME_SMIME_LOG_ERROR :
		o.cli.verbose ? ACME_SMIME_LOG_DEBUG : ACME_SMIME_LOG_INFO;
	if (o.http01_listen != NULL) {
		if (acme_smime_posix_http01_listen(&posix, o.http01_listen) != 0)
			return EXIT_NET;
		cli_progress("http-01 responder on %s", o.http01_listen);
	} else if (o.cli.dns_count > 0) {
		cli_progress("no --http01-listen: a pending http-01 challenge "
			"cannot be answered");
	}

	if ((rc = cli_open_store(&store, o.cli.store)) != 0) {
		acme_smime_posix_close(&posix);
		return rc;
	}
	ports.flash = &store.flash;
	ports.dns_txt = dkim_dns_txt;
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
		r = cli_drive(&ctx, &ports);
	if (r == ACME_SMIME_DONE) {
		cli_progress("certificate obtained");
		rc = cli_write_outputs(&ctx, &store.flash, &o.cli);
	} else {
		rc = report_failure(r);
	}
	print_stats();

	flash_file_close(&store);
	acme_smime_posix_close(&posix);
	cli_wipe(&ctx, sizeof ctx);
	cli_wipe(work, sizeof work);
	cli_wipe_secrets();
	return rc;
}
