/*
 * maildir_list.c -- print the ids that port/posix/maildir.c lists for a
 * Maildir, one a line, in its order (tests/e2e/mailbox_test.sh compares
 * it with the delivery order).
 *
 *   maildir_list MAILDIR
 */
#include <stdio.h>

#include "maildir.h"

static void
print_entry(void *arg, const char *id, size_t id_len, size_t size)
{
	(void)arg;
	printf("%.*s %lu\n", (int)id_len, id, (unsigned long)size);
}

int
main(int argc, char **argv)
{
	static struct acme_smime_maildir md;

	if (argc != 2 || acme_smime_maildir_init(&md, argv[1], "/bin/false") != 0) {
		fprintf(stderr, "usage: maildir_list MAILDIR\n");
		return 2;
	}
	return acme_smime_maildir_list(&md, print_entry, NULL) == 0 ? 0 : 1;
}
