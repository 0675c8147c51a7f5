/*
 * maildir.h -- the mailbox hooks of acme_smime (acme_smime_mailbox) for a
 * POSIX host whose mail is delivered to a local Maildir and sent with a
 * sendmail-compatible command: a Linux gateway running Postfix, Exim or
 * an msmtp/ssmtp relay, with no POP3 server of its own.
 *
 * Usage (the hooks take the ports' user pointer; see the CLI's wrappers
 * in examples/posix/acme-smime-enroll.c):
 *
 *   static struct acme_smime_maildir md;
 *
 *   if (acme_smime_maildir_init(&md, "/var/mail/device/Maildir",
 *       "/usr/sbin/sendmail") != 0) ...
 *
 * Messages are the files of new/ and cur/, in delivery order: by the
 * seconds that start a Maildir name, then the microseconds of its "M"
 * field (Postfix "V..I..M<usec>", Dovecot "M<usec>P<pid>"), then the
 * name; the order the engine relies on in a large mailbox, and that a
 * plain sort of the names does not give within one second (Postfix puts
 * the inode first). A message's id is its
 * file name without the ":2,flags" info (which changes when a mail
 * reader marks it), cut to ACME_SMIME_MAX_MAIL_ID characters. Maildir
 * files have LF line ends; the library accepts them.
 *
 * Sending runs "COMMAND -i -f FROM -- RCPT..." (COMMAND split at spaces,
 * no shell) and writes the mail to its standard input with LF line ends,
 * as local submission expects; exit status 0 means the mail was taken.
 * Blocking, like the rest of the POSIX port.
 */
#ifndef ACME_SMIME_MAILDIR_H
#define ACME_SMIME_MAILDIR_H

#include <stddef.h>

#include "acme_smime.h"

#ifdef __cplusplus
extern "C" {
#endif

struct acme_smime_maildir {
	char dir[512];            /* the Maildir, holding cur/ new/ tmp/ */
	char sendmail[512];       /* the command, words separated by spaces */
};

/* Returns 0, or -1 when dir has no new/ and cur/ or a text is too long. */
int acme_smime_maildir_init(struct acme_smime_maildir *md, const char *dir,
	const char *sendmail);

/* The hooks of acme_smime_mailbox, with md in place of the user pointer. */
int acme_smime_maildir_list(struct acme_smime_maildir *md,
	acme_smime_mail_entry_fn entry, void *arg);
int acme_smime_maildir_read(struct acme_smime_maildir *md, const char *id,
	char *buf, size_t size, size_t *len);
int acme_smime_maildir_remove(struct acme_smime_maildir *md, const char *id);
int acme_smime_maildir_send(struct acme_smime_maildir *md, const char *from,
	const char *const *to, size_t to_count, const char *mail, size_t len);

#ifdef __cplusplus
}
#endif

#endif
