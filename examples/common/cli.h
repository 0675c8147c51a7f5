/*
 * cli.h -- what the two enrollment programs share: acme-smime-enroll
 * (examples/posix, the POSIX port) and acme-smime-lwip (examples/lwip, the
 * lwIP port on a tap device). Their exit codes, their messages, the
 * options both take, the files both read and write, the loop that drives
 * the engine with a progress line per state and the failure report.
 *
 * Usage:
 *
 *   static const struct cli_program program = {
 *       "acme-smime-enroll", usage_text, help_text, pem, sizeof pem, 0
 *   };
 *   cli_init(&program);
 *   cli_options_init(&o.cli, "acme-smime.flash");
 *   for (i = 1; i < argc; i++)
 *       if (...the program's own options...)
 *       else if (!cli_option(&o.cli, argc, argv, &i))
 *           cli_die_usage("unknown option", argv[i]);
 *   cli_check_options(&o.cli);
 *   ... cli_load_anchors(), cli_config(), cli_mail_servers(),
 *   cli_mail_settings(), cli_open_store() ...
 *   r = cli_drive(&ctx, &ports);
 *   rc = r == ACME_SMIME_DONE ? cli_write_outputs(&ctx, &store.flash, &o.cli)
 *       : cli_report_failure(&ctx, r);
 *
 * One program per process: cli_init() names it for every message. Files
 * are the host's (a board would have its configuration instead).
 */
#ifndef CLI_H
#define CLI_H

#include <stddef.h>

#include "acme_smime.h"
#include "flash_file.h"

/* Exit status (both programs' --help says it). */
#define EXIT_USAGE   2    /* bad or missing option, unreadable input file */
#define EXIT_TLS     3    /* TLS handshake or certificate verification */
#define EXIT_NET     4    /* resolve, connect, send/receive, malformed HTTP */
#define EXIT_ACME    5    /* a problem document, an invalid order */
#define EXIT_MAIL    6    /* POP3/SMTP or a challenge mail */
#define EXIT_STORAGE 7    /* the --store file, writing --out-cert/--out-key */
#define EXIT_OTHER   8    /* timeout or any other failure */

struct cli_program {
	const char *name;         /* prefix of every message */
	const char *usage;        /* after a usage error, and first in --help */
	const char *help;         /* the rest of --help */
	char *pem;                /* room for the largest PEM file read ... */
	size_t pem_size;          /* ... and its size (a larger file is refused) */
	int needs_ca_file;        /* no system trust store: --ca-file required */
};

/* The options both programs take. */
struct cli_options {
	const char *directory, *ca_file, *contact;
	int agree_tos;
	const char *dns[ACME_SMIME_MAX_IDENTIFIERS];
	size_t dns_count;
	const char *email[ACME_SMIME_MAX_IDENTIFIERS];
	size_t email_count;
	const char *pop3, *pop3_tls, *pop3_user, *pop3_pass_file;
	const char *smtp, *smtp_tls, *smtp_user, *smtp_pass_file;
	const char *mail_ca_file, *token_concat, *mail_policy;
	long reply_grace, mail_poll, mail_wait;    /* -1: not given */
	const char *store, *out_cert, *out_key;
	int renew_if_due;
	int verbose, quiet;
	int mail_used;            /* a mail option was given */
};

/* The --help lines of the mail settings both programs take. */
#define CLI_HELP_MAIL_SETTINGS \
"  --token-concat string|bytes, --reply-grace SECONDS,\n" \
"  --mail-poll SECONDS    how often the mailbox is checked for the challenge\n" \
"                         mail (default 10)\n" \
"  --mail-wait SECONDS    how long to wait for it before giving up (default 600)\n" \
"  --mail-policy strict|unsigned-ok  strict (default) needs a DKIM or S/MIME\n" \
"                         signature on the challenge mail; unsigned-ok does not\n"

/* Name the program; prog must outlive every other call. */
void cli_init(const struct cli_program *prog);

#if defined(__GNUC__) || defined(__clang__)
#define CLI_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CLI_PRINTF(f, a)
#endif

/* "NAME: message" on stderr: cli_progress() not after -q, cli_error()
 * always. cli_die_usage() says "NAME: what[: arg]", the usage text, and
 * exits with EXIT_USAGE. */
void cli_progress(const char *fmt, ...) CLI_PRINTF(1, 2);
void cli_error(const char *fmt, ...) CLI_PRINTF(1, 2);
void cli_die_usage(const char *what, const char *arg);

/* ------------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------- */

/* Zero o; store is the default --store, the mail times are unset. */
void cli_options_init(struct cli_options *o, const char *store);

/* If argv[*i] is one of the shared options, take it (and its value,
 * advancing *i) and return 1; else 0. Dies with the usage text on a bad
 * value, and on any attempt to give a password on the command line.
 * --help prints the program's usage and help and exits 0; -q also
 * silences cli_progress(). */
int cli_option(struct cli_options *o, int argc, char **argv, int *i);

/* "--name VALUE" or "--name=VALUE": returns VALUE and advances *i, or NULL
 * when argv[*i] is not this option. */
const char *cli_value(int argc, char **argv, int *i, const char *name);

/* A decimal number in min..max, or the usage error "what: s". */
unsigned long cli_number(const char *what, const char *s, unsigned long min,
	unsigned long max);

/* Whether s is HOST:PORT with a port in 1..65535. */
int cli_host_port_ok(const char *s);

/* The first checks once every option is read: a --directory, https, a
 * --ca-file when the program needs one, at least one identifier. */
void cli_check_options(const struct cli_options *o);

/* ------------------------------------------------------------------------
 * Configuration and files
 * ---------------------------------------------------------------------- */

/* Read path into buf (NUL-terminated); returns its length. Exits with
 * EXIT_USAGE when it cannot be read or does not fit. */
size_t cli_read_file(const char *path, char *buf, size_t size);

/* The trust anchors of a PEM file into the caller's room (tas[0..max) and
 * storage for their names and keys); returns how many. Exits with
 * EXIT_USAGE when the file cannot be read or holds none. */
size_t cli_load_anchors(const char *path, unsigned char *storage,
	size_t storage_size, br_x509_trust_anchor *tas, size_t max);

/* The configuration from the shared options: directory, identifiers (dns
 * first), contact, terms of service, dual key usage, the ACME server's
 * trust anchors, and a fresh enrollment unless --renew-if-due. */
void cli_config(const struct cli_options *o, acme_smime_config *cfg,
	const br_x509_trust_anchor *tas, size_t n_tas);

/* The POP3 and SMTP servers (--pop3/--smtp must be there): host, port,
 * TLS mode (default starttls), user and password, from a --*-pass-file
 * or ACME_SMIME_POP3_PASS / ACME_SMIME_SMTP_PASS. Dies with the usage
 * text when a password is missing. */
void cli_mail_servers(const struct cli_options *o, acme_smime_config *cfg);

/* Token joining, reply grace period, mail polling and waiting, and the
 * challenge-mail policy (warning when it is unsigned-ok). */
void cli_mail_settings(const struct cli_options *o, acme_smime_config *cfg);

/* Open (or create) the --store file as the simulated NOR flash. Returns 0,
 * or EXIT_STORAGE with the reason said. */
int cli_open_store(struct flash_file *store, const char *path);

/* Overwrite len bytes at p with zeros. cli_wipe_secrets() wipes the mail
 * passwords cli_mail_servers() read. */
void cli_wipe(void *p, size_t len);
void cli_wipe_secrets(void);

/* ------------------------------------------------------------------------
 * The enrollment
 * ---------------------------------------------------------------------- */

/* acme_smime_run() with a progress line on every state change and wait,
 * and one for the account URL: what a board's task loop looks like.
 * Returns ACME_SMIME_DONE or the error. */
int cli_drive(acme_smime_ctx *ctx, const acme_smime_ports *ports);

/* After ACME_SMIME_DONE: write the chain to --out-cert (from the store
 * when this run did not download it) and the key to --out-key (PKCS#8
 * PEM, mode 0600). Returns 0 or the exit code (said). */
int cli_write_outputs(const acme_smime_ctx *ctx, const acme_smime_flash *store,
	const struct cli_options *o);

/* After a failure r of cli_drive(): the state it failed in, the error's
 * text, HTTP status and ACME problem. Returns the exit code. */
int cli_report_failure(const acme_smime_ctx *ctx, int r);

#endif /* CLI_H */
