/*
 * maildir.c -- acme_smime mailbox hooks over a Maildir and a sendmail
 * command (see maildir.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Words of the sendmail command, and what the hook adds to them. */
#define MAX_WORDS 16

static const char *const subdirs[2] = { "new", "cur" };

/* A file name's id: up to the ":2,..." info, cut at the library's limit. */
static size_t
name_id_len(const char *name)
{
	size_t n = strcspn(name, ":");

	return n > ACME_SMIME_MAX_MAIL_ID ? ACME_SMIME_MAX_MAIL_ID : n;
}

static int
visible(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* A Maildir name's delivery time: the seconds before the first dot and
 * the digits after an "M" in the unique part (0 when there are none). */
static void
delivery_time(const char *name, unsigned long long *sec, unsigned long *usec)
{
	const char *p = name, *end = name + strcspn(name, ".:");

	*sec = 0;
	*usec = 0;
	for (; p < end && *p >= '0' && *p <= '9'; p++) {
		*sec = *sec * 10 + (unsigned)(*p - '0');
	}
	if (*end != '.') {
		return;
	}
	for (p = end + 1; *p != '\0' && *p != '.' && *p != ':'; p++) {
		if (*p == 'M' && p[1] >= '0' && p[1] <= '9') {
			for (p++; *p >= '0' && *p <= '9' && *usec < 100000000ul; p++) {
				*usec = *usec * 10 + (unsigned long)(*p - '0');
			}
			return;
		}
	}
}

static int
delivery_order(const char *a, const char *b)
{
	unsigned long long sa, sb;
	unsigned long ua, ub;

	delivery_time(a, &sa, &ua);
	delivery_time(b, &sb, &ub);
	if (sa != sb) {
		return sa < sb ? -1 : 1;
	}
	if (ua != ub) {
		return ua < ub ? -1 : 1;
	}
	return strcmp(a, b);
}

static int
delivery_sort(const struct dirent **a, const struct dirent **b)
{
	return delivery_order((*a)->d_name, (*b)->d_name);
}

static int
path_of(const struct acme_smime_maildir *md, int sub, const char *name, char *out,
	size_t size)
{
	int n = snprintf(out, size, "%s/%s/%s", md->dir, subdirs[sub], name);

	return n < 0 || (size_t)n >= size ? -1 : 0;
}

int
acme_smime_maildir_init(struct acme_smime_maildir *md, const char *dir,
	const char *sendmail)
{
	char path[sizeof md->dir + 8];
	struct stat st;
	int k;

	if (dir == NULL || sendmail == NULL || strlen(dir) >= sizeof md->dir ||
	    strlen(sendmail) >= sizeof md->sendmail) {
		return -1;
	}
	strcpy(md->dir, dir);
	strcpy(md->sendmail, sendmail);
	for (k = 0; k < 2; k++) {
		if (path_of(md, k, "", path, sizeof path) != 0 || stat(path, &st) != 0 ||
		    !S_ISDIR(st.st_mode)) {
			return -1;
		}
	}
	return 0;
}

/* new/ and cur/, each in delivery order, merged. */
int
acme_smime_maildir_list(struct acme_smime_maildir *md,
	acme_smime_mail_entry_fn entry, void *arg)
{
	struct dirent **list[2] = { NULL, NULL };
	int n[2] = { 0, 0 }, i[2] = { 0, 0 }, k, r = 0;
	char path[sizeof md->dir + 300];

	for (k = 0; k < 2 && r == 0; k++) {
		if (path_of(md, k, "", path, sizeof path) != 0 ||
		    (n[k] = scandir(path, &list[k], visible, delivery_sort)) < 0) {
			n[k] = 0;
			r = -1;
		}
	}
	while (r == 0 && (i[0] < n[0] || i[1] < n[1])) {
		int s = i[1] >= n[1] || (i[0] < n[0] &&
		    delivery_order(list[0][i[0]]->d_name, list[1][i[1]]->d_name) < 0) ? 0 : 1;
		const char *name = list[s][i[s]++]->d_name;
		struct stat st;

		if (path_of(md, s, name, path, sizeof path) == 0 && stat(path, &st) == 0 &&
		    S_ISREG(st.st_mode)) {
			entry(arg, name, name_id_len(name), (size_t)st.st_size);
		}
	}
	for (k = 0; k < 2; k++) {
		for (i[k] = 0; i[k] < n[k]; i[k]++) {
			free(list[k][i[k]]);
		}
		free(list[k]);
	}
	return r;
}

/* The path of the message id, in new/ or cur/. Returns 0, or -1. */
static int
find(const struct acme_smime_maildir *md, const char *id, char *path, size_t size)
{
	size_t n = strlen(id);
	int k, r = -1;

	for (k = 0; k < 2 && r != 0; k++) {
		struct dirent *e;
		DIR *d;

		if (path_of(md, k, "", path, size) != 0 || (d = opendir(path)) == NULL) {
			continue;
		}
		while ((e = readdir(d)) != NULL) {
			if (visible(e) && name_id_len(e->d_name) == n &&
			    memcmp(e->d_name, id, n) == 0) {
				r = path_of(md, k, e->d_name, path, size);
				break;
			}
		}
		closedir(d);
	}
	return r;
}

int
acme_smime_maildir_read(struct acme_smime_maildir *md, const char *id, char *buf,
	size_t size, size_t *len)
{
	char path[sizeof md->dir + 300];
	size_t got = 0;
	int fd, r = 0;

	if (find(md, id, path, sizeof path) != 0 ||
	    (fd = open(path, O_RDONLY)) < 0) {
		return ACME_SMIME_ERR_INVALID;
	}
	for (;;) {
		char extra;
		ssize_t k = got < size ? read(fd, buf + got, size - got) : read(fd, &extra, 1);

		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k < 0) {
			r = -1;
			break;
		}
		if (k == 0) {
			break;
		}
		if (got == size) {
			r = ACME_SMIME_ERR_LIMIT;
			break;
		}
		got += (size_t)k;
	}
	close(fd);
	*len = got;
	return r;
}

int
acme_smime_maildir_remove(struct acme_smime_maildir *md, const char *id)
{
	char path[sizeof md->dir + 300];

	if (find(md, id, path, sizeof path) != 0) {
		return 0;   /* gone already */
	}
	return unlink(path) == 0 ? 0 : -1;
}

/* Write all of buf to fd; -1 on failure. */
static int
write_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t k = write(fd, buf, n);

		if (k < 0 && errno == EINTR) {
			continue;
		}
		if (k <= 0) {
			return -1;
		}
		buf += k;
		n -= (size_t)k;
	}
	return 0;
}

int
acme_smime_maildir_send(struct acme_smime_maildir *md, const char *from,
	const char *const *to, size_t to_count, const char *mail, size_t len)
{
	/* The command's words, then FROM and each recipient, NUL-separated. */
	char words[sizeof md->sendmail + (ACME_SMIME_MAX_REPLY_TO + 2) *
	    (ACME_SMIME_MAX_ADDR + 1)];
	char *argv[MAX_WORDS + 4 + ACME_SMIME_MAX_REPLY_TO + 2], *w, *save = NULL;
	struct sigaction ign, old;
	size_t argc = 0, used, i, st;
	int p[2], status, r = 0;
	pid_t pid;

	if (to_count == 0 || to_count > ACME_SMIME_MAX_REPLY_TO + 1) {
		return -1;
	}
	strcpy(words, md->sendmail);
	used = strlen(words) + 1;
	for (w = strtok_r(words, " ", &save); w != NULL && argc < MAX_WORDS;
	    w = strtok_r(NULL, " ", &save)) {
		argv[argc++] = w;
	}
	if (argc == 0 || w != NULL) {
		return -1;
	}
	argv[argc++] = (char *)"-i";
	argv[argc++] = (char *)"-f";
	for (i = 0; i <= to_count; i++) {
		const char *a = i == 0 ? from : to[i - 1];
		size_t n = strlen(a) + 1;

		if (n > ACME_SMIME_MAX_ADDR + 1) {
			return -1;
		}
		if (i == 1) {
			argv[argc++] = (char *)"--";
		}
		memcpy(words + used, a, n);
		argv[argc++] = words + used;
		used += n;
	}
	argv[argc] = NULL;
	if (pipe(p) != 0) {
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		dup2(p[0], 0);
		close(p[0]);
		close(p[1]);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(p[0]);
	/* A command that dies early must not take us with SIGPIPE. */
	memset(&ign, 0, sizeof ign);
	ign.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &ign, &old);
	/* CRLF -> LF: the line end of local submission. */
	for (i = st = 0; i < len && r == 0; i++) {
		if (mail[i] == '\r' && i + 1 < len && mail[i + 1] == '\n') {
			r = write_all(p[1], mail + st, i - st);
			st = i + 1;
		}
	}
	if (r == 0) {
		r = write_all(p[1], mail + st, len - st);
	}
	close(p[1]);
	sigaction(SIGPIPE, &old, NULL);
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			return -1;
		}
	}
	return r == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}
