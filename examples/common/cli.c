/*
 * cli.c -- what the two enrollment programs share (see the header).
 *
 * Sections:
 *   1. messages
 *   2. options
 *   3. configuration and files
 *   4. the enrollment: drive, outputs, failure report
 */
#define _POSIX_C_SOURCE 200809L

#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The store file: simulated NOR flash, as large as the store needs. */
#define STORE_SIZE         ACME_SMIME_STORE_SIZE(4096u, 16u)
#define STORE_SECTOR       4096u
#define STORE_PROGRAM_UNIT 16u

/* Longest wait on the socket before the engine is asked again (it tracks
 * its own timeouts). */
#define IO_SLICE_MS 1000u

#define MAX_PASSWORD 256

static const struct cli_program *program;
static int quiet;
static const char *last_state = "init";   /* before "failed" */

/* ------------------------------------------------------------------------
 * 1. Messages
 * ---------------------------------------------------------------------- */

void
cli_init(const struct cli_program *prog)
{
	program = prog;
}

static void say(const char *fmt, va_list ap) CLI_PRINTF(1, 0);

static void
say(const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", program->name);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void
cli_progress(const char *fmt, ...)
{
	va_list ap;

	if (quiet)
		return;
	va_start(ap, fmt);
	say(fmt, ap);
	va_end(ap);
}

void
cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say(fmt, ap);
	va_end(ap);
}

void
cli_die_usage(const char *what, const char *arg)
{
	if (arg != NULL)
		cli_error("%s: %s", what, arg);
	else
		cli_error("%s", what);
	fputs(program->usage, stderr);
	fputs("(--help for details)\n", stderr);
	exit(EXIT_USAGE);
}

/* ------------------------------------------------------------------------
 * 2. Options
 * ---------------------------------------------------------------------- */

void
cli_options_init(struct cli_options *o, const char *store)
{
	memset(o, 0, sizeof *o);
	o->store = store;
	o->reply_grace = -1;
	o->mail_poll = -1;
	o->mail_wait = -1;
}

const char *
cli_value(int argc, char **argv, int *i, const char *name)
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
		cli_die_usage("missing value for", name);
	(*i)++;
	return argv[*i];
}

unsigned long
cli_number(const char *what, const char *s, unsigned long min,
	unsigned long max)
{
	char *end;
	long v;

	/* strtol, not strtoul: a minus sign must not wrap a number around
	 * into the range ("-18446744073709551615" is 1 to strtoul). */
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0 ||
			(unsigned long)v < min || (unsigned long)v > max)
		cli_die_usage(what, s);
	return (unsigned long)v;
}

int
cli_host_port_ok(const char *s)
{
	const char *colon = strrchr(s, ':');
	char *end;
	long port;

	if (colon == NULL || colon == s)
		return 0;
	port = strtol(colon + 1, &end, 10);
	return *end == '\0' && end != colon + 1 && port > 0 && port <= 65535;
}

static int
one_of(const char *v, const char *a, const char *b, const char *c)
{
	return strcmp(v, a) == 0 || strcmp(v, b) == 0 ||
		(c != NULL && strcmp(v, c) == 0);
}

static void
add_identifier(const char **list, size_t *count, size_t other,
	const char *v)
{
	if (*count + other >= ACME_SMIME_MAX_IDENTIFIERS)
		cli_die_usage("too many identifiers (limit "
			"ACME_SMIME_MAX_IDENTIFIERS)", v);
	if (v[0] == '\0')
		cli_die_usage("empty identifier", NULL);
	list[(*count)++] = v;
}

/* The options without a value. */
static int
flag_option(struct cli_options *o, const char *a)
{
	if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
		fputs(program->usage, stdout);
		fputs(program->help, stdout);
		exit(0);
	} else if (strcmp(a, "-v") == 0) {
		o->verbose++;
	} else if (strcmp(a, "-q") == 0) {
		o->quiet = 1;
		quiet = 1;
	} else if (strcmp(a, "--agree-tos") == 0) {
		o->agree_tos = 1;
	} else if (strcmp(a, "--renew-if-due") == 0) {
		o->renew_if_due = 1;
	} else {
		return 0;
	}
	return 1;
}

/* --pop3 and --smtp: HOST:PORT, TLS mode, user, password file. */
static int
mail_server_option(struct cli_options *o, int argc, char **argv, int *i)
{
	const char *v;

	if ((v = cli_value(argc, argv, i, "--pop3")) != NULL) {
		if (!cli_host_port_ok(v))
			cli_die_usage("--pop3 wants HOST:PORT", v);
		o->pop3 = v;
	} else if ((v = cli_value(argc, argv, i, "--pop3-tls")) != NULL) {
		if (!one_of(v, "none", "starttls", "implicit"))
			cli_die_usage("--pop3-tls wants none|starttls|implicit", v);
		o->pop3_tls = v;
	} else if ((v = cli_value(argc, argv, i, "--pop3-user")) != NULL) {
		o->pop3_user = v;
	} else if ((v = cli_value(argc, argv, i, "--pop3-pass-file")) != NULL) {
		o->pop3_pass_file = v;
	} else if ((v = cli_value(argc, argv, i, "--smtp")) != NULL) {
		if (!cli_host_port_ok(v))
			cli_die_usage("--smtp wants HOST:PORT", v);
		o->smtp = v;
	} else if ((v = cli_value(argc, argv, i, "--smtp-tls")) != NULL) {
		if (!one_of(v, "none", "starttls", "implicit"))
			cli_die_usage("--smtp-tls wants none|starttls|implicit", v);
		o->smtp_tls = v;
	} else if ((v = cli_value(argc, argv, i, "--smtp-user")) != NULL) {
		o->smtp_user = v;
	} else if ((v = cli_value(argc, argv, i, "--smtp-pass-file")) != NULL) {
		o->smtp_pass_file = v;
	} else if ((v = cli_value(argc, argv, i, "--mail-ca-file")) != NULL) {
		o->mail_ca_file = v;
	} else {
		return 0;
	}
	return 1;
}

/* How the challenge mail is answered and waited for. */
static int
mail_setting_option(struct cli_options *o, int argc, char **argv, int *i)
{
	const char *v;

	if ((v = cli_value(argc, argv, i, "--token-concat")) != NULL) {
		if (!one_of(v, "string", "bytes", NULL))
			cli_die_usage("--token-concat wants string|bytes", v);
		o->token_concat = v;
	} else if ((v = cli_value(argc, argv, i, "--reply-grace")) != NULL) {
		o->reply_grace = (long)cli_number("--reply-grace wants "
			"seconds (0..2592000)", v, 0, 86400uL * 30);
	} else if ((v = cli_value(argc, argv, i, "--mail-poll")) != NULL) {
		o->mail_poll = (long)cli_number("--mail-poll wants "
			"seconds (1..2592000)", v, 1, 86400uL * 30);
	} else if ((v = cli_value(argc, argv, i, "--mail-wait")) != NULL) {
		o->mail_wait = (long)cli_number("--mail-wait wants "
			"seconds (1..2592000)", v, 1, 86400uL * 30);
	} else if ((v = cli_value(argc, argv, i, "--mail-policy")) != NULL) {
		if (!one_of(v, "strict", "unsigned-ok", NULL))
			cli_die_usage("--mail-policy wants strict|unsigned-ok", v);
		o->mail_policy = v;
	} else {
		return 0;
	}
	return 1;
}

int
cli_option(struct cli_options *o, int argc, char **argv, int *i)
{
	const char *a = argv[*i], *v;

	if (flag_option(o, a))
		return 1;
	if (mail_server_option(o, argc, argv, i) ||
			mail_setting_option(o, argc, argv, i)) {
		o->mail_used = 1;
		return 1;
	}
	if ((v = cli_value(argc, argv, i, "--directory")) != NULL) {
		o->directory = v;
	} else if ((v = cli_value(argc, argv, i, "--ca-file")) != NULL) {
		o->ca_file = v;
	} else if ((v = cli_value(argc, argv, i, "--contact")) != NULL) {
		if (strncmp(v, "mailto:", 7) != 0)
			cli_die_usage("--contact wants mailto:ADDR", v);
		o->contact = v;
	} else if ((v = cli_value(argc, argv, i, "--dns")) != NULL) {
		add_identifier(o->dns, &o->dns_count, o->email_count, v);
	} else if ((v = cli_value(argc, argv, i, "--email")) != NULL) {
		add_identifier(o->email, &o->email_count, o->dns_count, v);
		o->mail_used = 1;
	} else if ((v = cli_value(argc, argv, i, "--store")) != NULL) {
		o->store = v;
	} else if ((v = cli_value(argc, argv, i, "--out-cert")) != NULL) {
		o->out_cert = v;
	} else if ((v = cli_value(argc, argv, i, "--out-key")) != NULL) {
		o->out_key = v;
	} else if (strncmp(a, "--pop3-pass", 11) == 0 ||
			strncmp(a, "--smtp-pass", 11) == 0 ||
			strncmp(a, "--password", 10) == 0) {
		cli_die_usage("passwords are never taken from the command line; "
			"use ACME_SMIME_POP3_PASS / ACME_SMIME_SMTP_PASS or "
			"--pop3-pass-file / --smtp-pass-file", NULL);
	} else {
		return 0;
	}
	return 1;
}

void
cli_check_options(const struct cli_options *o)
{
	if (o->directory == NULL)
		cli_die_usage("--directory is required", NULL);
	if (strncmp(o->directory, "https://", 8) != 0)
		cli_die_usage("--directory wants an https:// URL", o->directory);
	if (o->ca_file == NULL && program->needs_ca_file)
		cli_die_usage("--ca-file is required (the device has no system "
			"trust store)", NULL);
	if (o->dns_count + o->email_count == 0)
		cli_die_usage("give at least one --dns or --email identifier",
			NULL);
}

/* ------------------------------------------------------------------------
 * 3. Configuration and files
 * ---------------------------------------------------------------------- */

size_t
cli_read_file(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL) {
		cli_error("%s: %s", path, strerror(errno));
		exit(EXIT_USAGE);
	}
	n = fread(buf, 1, size, f);
	if (ferror(f) || n == size) {
		cli_error("%s: %s", path, ferror(f) ? strerror(errno) :
			"file too large");
		exit(EXIT_USAGE);
	}
	fclose(f);
	buf[n] = '\0';
	return n;
}

size_t
cli_load_anchors(const char *path, unsigned char *storage,
	size_t storage_size, br_x509_trust_anchor *tas, size_t max)
{
	size_t len = cli_read_file(path, program->pem, program->pem_size);
	int n = acme_smime_trust_anchors_from_pem(program->pem, len, storage,
		storage_size, tas, max);

	if (n <= 0) {
		cli_error("%s: %s", path, n < 0 ? acme_smime_strerror(n) :
			"no usable certificate");
		exit(EXIT_USAGE);
	}
	return (size_t)n;
}

void
cli_config(const struct cli_options *o, acme_smime_config *cfg,
	const br_x509_trust_anchor *tas, size_t n_tas)
{
	static acme_smime_identifier ids[ACME_SMIME_MAX_IDENTIFIERS];
	size_t n = 0, i;

	for (i = 0; i < o->dns_count; i++) {
		ids[n].type = ACME_SMIME_ID_DNS;
		ids[n++].value = o->dns[i];
	}
	for (i = 0; i < o->email_count; i++) {
		ids[n].type = ACME_SMIME_ID_EMAIL;
		ids[n++].value = o->email[i];
	}
	cfg->directory_url = o->directory;
	cfg->identifiers = ids;
	cfg->identifier_count = n;
	cfg->contact = o->contact;
	cfg->agree_tos = o->agree_tos;
	cfg->key_usage = ACME_SMIME_KU_DUAL;
	cfg->trust_anchors = tas;
	cfg->trust_anchor_count = n_tas;
	/* Without --renew-if-due a run enrolls even when a stored
	 * certificate is still good. */
	cfg->force_renew = !o->renew_if_due;
}

static char pop3_pass[MAX_PASSWORD], smtp_pass[MAX_PASSWORD];

/* A password from a file (first line) or the environment, never argv. */
static const char *
load_password(const char *env, const char *file, char *buf, size_t size)
{
	const char *v = getenv(env);
	size_t n;

	if (file != NULL) {
		n = cli_read_file(file, buf, size);
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			buf[--n] = '\0';
		return buf;
	}
	if (v != NULL) {
		n = strlen(v);
		if (n >= size)
			cli_die_usage("password too long in", env);
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

/* HOST:PORT into a static host copy and a port (checked by the parser).
 * The host stays a name: it is the TLS server name of its connection. */
static void
split_host_port(const char *v, char *host, size_t size, unsigned *port)
{
	const char *colon = strrchr(v, ':');
	size_t n = colon != NULL ? (size_t)(colon - v) : 0;

	if (colon == NULL || n == 0 || n >= size)
		cli_die_usage("wants HOST:PORT", v);
	memcpy(host, v, n);
	host[n] = '\0';
	*port = (unsigned)strtoul(colon + 1, NULL, 10);
}

void
cli_mail_servers(const struct cli_options *o, acme_smime_config *cfg)
{
	static char pop3_host[256], smtp_host[256];

	split_host_port(o->pop3, pop3_host, sizeof pop3_host, &cfg->pop3.port);
	cfg->pop3.host = pop3_host;
	cfg->pop3.tls = tls_mode(o->pop3_tls);
	cfg->pop3.user = o->pop3_user;
	cfg->pop3.password = load_password("ACME_SMIME_POP3_PASS",
		o->pop3_pass_file, pop3_pass, sizeof pop3_pass);
	if (cfg->pop3.password == NULL)
		cli_die_usage("no POP3 password: set ACME_SMIME_POP3_PASS or "
			"--pop3-pass-file", NULL);
	split_host_port(o->smtp, smtp_host, sizeof smtp_host, &cfg->smtp.port);
	cfg->smtp.host = smtp_host;
	cfg->smtp.tls = tls_mode(o->smtp_tls);
	cfg->smtp.user = o->smtp_user;
	if (o->smtp_user != NULL) {
		cfg->smtp.password = load_password("ACME_SMIME_SMTP_PASS",
			o->smtp_pass_file, smtp_pass, sizeof smtp_pass);
		if (cfg->smtp.password == NULL)
			cli_die_usage("no SMTP password: set ACME_SMIME_SMTP_PASS "
				"or --smtp-pass-file", NULL);
	}
}

void
cli_mail_settings(const struct cli_options *o, acme_smime_config *cfg)
{
	cfg->token_concat = o->token_concat != NULL &&
		strcmp(o->token_concat, "bytes") == 0 ?
		ACME_SMIME_CONCAT_BYTES : ACME_SMIME_CONCAT_STRING;
	if (o->reply_grace >= 0)
		cfg->reply_grace_s = o->reply_grace > 0 ?
			(uint32_t)o->reply_grace : 1;
	if (o->mail_poll > 0)
		cfg->mail_poll_s = (uint32_t)o->mail_poll;
	if (o->mail_wait > 0)
		cfg->mail_wait_s = (uint32_t)o->mail_wait;
	if (o->mail_policy != NULL &&
			strcmp(o->mail_policy, "unsigned-ok") == 0) {
		cfg->mail_policy = ACME_SMIME_MAIL_ALLOW_UNSIGNED;
		cli_progress("warning: --mail-policy unsigned-ok: challenge mails "
			"are not checked for a DKIM or S/MIME signature");
	}
}

int
cli_open_store(struct flash_file *store, const char *path)
{
	if (flash_file_open(store, path, STORE_SIZE, STORE_SECTOR,
			STORE_PROGRAM_UNIT) != 0) {
		cli_error("--store %s: %s", path, strerror(errno));
		return EXIT_STORAGE;
	}
	return 0;
}

void
cli_wipe(void *p, size_t len)
{
	volatile unsigned char *v = p;

	while (len-- > 0)
		*v++ = 0;
}

void
cli_wipe_secrets(void)
{
	cli_wipe(pop3_pass, sizeof pop3_pass);
	cli_wipe(smtp_pass, sizeof smtp_pass);
}

/* Write data to path through a temporary file and rename(), so a reader
 * never sees half a file; mode applies even when path existed. */
static int
write_file_atomic(const char *path, const void *data, size_t len,
	mode_t mode)
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

/* ------------------------------------------------------------------------
 * 4. The enrollment
 * ---------------------------------------------------------------------- */

int
cli_drive(acme_smime_ctx *ctx, const acme_smime_ports *ports)
{
	const char *state = "", *now_state;
	int r, handle, events, account_shown = 0;

	for (;;) {
		r = acme_smime_step(ctx);
		now_state = acme_smime_state_name(ctx);
		if (now_state != NULL && strcmp(now_state, state) != 0) {
			state = now_state;
			if (r >= 0)
				last_state = state;
			cli_progress("state %s", state);
		}
		if (!account_shown) {
			const char *url = acme_smime_account_url(ctx);
			if (url != NULL && url[0] != '\0') {
				cli_progress("account %s", url);
				account_shown = 1;
			}
		}
		switch (r) {
		case ACME_SMIME_AGAIN:
			break;
		case ACME_SMIME_WANT_IO:
			handle = acme_smime_io(ctx, &events);
			if (ports->net_wait(ports->user, handle, events,
					IO_SLICE_MS) < 0)
				cli_progress("wait on the socket failed");
			break;
		case ACME_SMIME_WANT_TIME: {
			uint64_t wake = acme_smime_wake_ms(ctx);
			uint64_t now = ports->monotonic_ms(ports->user);
			if (wake > now) {
				uint64_t ms = wake - now;
				/* The engine names the state it resumes in. */
				cli_progress("wait %lu.%03lu s before %s",
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

/* The chain this run downloaded, or the one in the store (not due, or
 * larger than the work buffer). */
static const char *
chain_to_write(const acme_smime_ctx *ctx, const acme_smime_flash *store,
	size_t *len)
{
	static char stored[ACME_SMIME_STORE_MAX_CERT];
	acme_smime_cert_info info;
	const char *chain = acme_smime_cert_chain(ctx, len);

	if (chain != NULL)
		return chain;
	if (acme_smime_stored_cert(store, NULL, &info, NULL) == 1 &&
			info.chain_len <= sizeof stored &&
			acme_smime_stored_chain(store, 0, stored,
			info.chain_len) == (int)info.chain_len) {
		*len = info.chain_len;
		return stored;
	}
	return NULL;
}

int
cli_write_outputs(const acme_smime_ctx *ctx, const acme_smime_flash *store,
	const struct cli_options *o)
{
	char pem[512];
	const char *chain;
	size_t len = 0;
	int n;

	if (o->out_cert != NULL) {
		chain = chain_to_write(ctx, store, &len);
		if (chain == NULL || len == 0) {
			cli_error("no certificate chain to write");
			return EXIT_OTHER;
		}
		if (write_file_atomic(o->out_cert, chain, len, 0644) != 0) {
			cli_error("%s: %s", o->out_cert, strerror(errno));
			return EXIT_STORAGE;
		}
		cli_progress("wrote %s (%lu bytes)", o->out_cert,
			(unsigned long)len);
	}
	if (o->out_key != NULL) {
		const acme_smime_key *key = acme_smime_cert_key(ctx);
		n = key != NULL && key->type != 0 ?
			acme_smime_key_to_pem(key, pem, sizeof pem) : -1;
		if (n <= 0) {
			cli_error("no certificate key to write");
			return EXIT_OTHER;
		}
		if (write_file_atomic(o->out_key, pem, (size_t)n, 0600) != 0) {
			cli_error("%s: %s", o->out_key, strerror(errno));
			cli_wipe(pem, sizeof pem);
			return EXIT_STORAGE;
		}
		cli_wipe(pem, sizeof pem);
		cli_progress("wrote %s", o->out_key);
	}
	return 0;
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

int
cli_report_failure(const acme_smime_ctx *ctx, int r)
{
	const acme_smime_error *e = acme_smime_last_error(ctx);
	int code = e != NULL && e->code != 0 ? e->code : r;

	cli_error("failed in state %s: %s", last_state,
		acme_smime_strerror(code));
	if (e != NULL) {
		if (e->text[0] != '\0')
			cli_error("  %s", e->text);
		if (e->http_status != 0)
			cli_error("  HTTP status %d", e->http_status);
		if (e->problem_type[0] != '\0')
			cli_error("  ACME problem %s: %s", e->problem_type,
				e->problem_detail);
	}
	return exit_code_of(code);
}
