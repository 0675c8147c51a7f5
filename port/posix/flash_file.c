/*
 * flash_file.c -- NOR flash for acme_smime on POSIX (see flash_file.h).
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "flash_file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bytes moved per file access, and the largest stack buffer. */
#define FF_CHUNK 256

static int
ff_range_ok(const struct flash_file *ff, uint32_t addr, size_t len)
{
	return addr <= ff->flash.size && len <= ff->flash.size - addr;
}

static int
ff_load(struct flash_file *ff, uint32_t addr, unsigned char *buf, size_t len)
{
	ssize_t n;

	if (ff->mem != NULL) {
		memcpy(buf, ff->mem + addr, len);
		return 0;
	}
	while (len > 0) {
		n = pread(ff->fd, buf, len, (off_t)addr);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			return -1;
		}
		buf += n;
		addr += (uint32_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int
ff_store(struct flash_file *ff, uint32_t addr, const unsigned char *buf,
	size_t len)
{
	ssize_t n;

	if (ff->mem != NULL) {
		memcpy(ff->mem + addr, buf, len);
		return 0;
	}
	while (len > 0) {
		n = pwrite(ff->fd, buf, len, (off_t)addr);
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			return -1;
		}
		buf += n;
		addr += (uint32_t)n;
		len -= (size_t)n;
	}
	return ff->sync ? fsync(ff->fd) : 0;
}

/* Set len bytes at addr to 0xFF. */
static int
ff_fill_erased(struct flash_file *ff, uint32_t addr, size_t len)
{
	unsigned char ones[FF_CHUNK];
	size_t n;

	memset(ones, 0xFF, sizeof ones);
	while (len > 0) {
		n = len < sizeof ones ? len : sizeof ones;
		if (ff_store(ff, addr, ones, n) < 0) {
			return -1;
		}
		addr += (uint32_t)n;
		len -= n;
	}
	return 0;
}

/* xorshift32: where a cut operation stops. */
static uint32_t
ff_random(struct flash_file *ff)
{
	uint32_t x = ff->cut_seed != 0 ? ff->cut_seed : 0x9E3779B9u;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	ff->cut_seed = x;
	return x;
}

/* Count one erase/program against the injector; 1 when this is the one
 * the power cut interrupts. */
static int
ff_cut_now(struct flash_file *ff)
{
	if (ff->ops_left < 0) {
		return 0;
	}
	if (ff->ops_left > 0) {
		ff->ops_left--;
	}
	if (ff->ops_left == 0) {
		ff->dead = 1;
		return 1;
	}
	return 0;
}

static int
ff_read(void *user, uint32_t addr, unsigned char *buf, size_t len)
{
	struct flash_file *ff = (struct flash_file *)user;

	if (ff->dead || !ff_range_ok(ff, addr, len)) {
		return -1;
	}
	ff->reads++;
	return ff_load(ff, addr, buf, len);
}

static int
ff_erase(void *user, uint32_t addr)
{
	struct flash_file *ff = (struct flash_file *)user;
	uint32_t sector = ff->flash.sector_size;

	if (ff->dead || addr % sector != 0 || !ff_range_ok(ff, addr, sector)) {
		return -1;
	}
	if (ff_cut_now(ff)) {
		ff_fill_erased(ff, addr, ff_random(ff) % sector);
		return -1;
	}
	ff->erases++;
	return ff_fill_erased(ff, addr, sector);
}

/* Does programming buf over the current content only clear bits? */
static int
ff_bits_ok(struct flash_file *ff, uint32_t addr, const unsigned char *buf,
	size_t len)
{
	unsigned char cur[FF_CHUNK];
	size_t n, i;

	while (len > 0) {
		n = len < sizeof cur ? len : sizeof cur;
		if (ff_load(ff, addr, cur, n) < 0) {
			return 0;
		}
		for (i = 0; i < n; i++) {
			if ((buf[i] & ~cur[i]) != 0) {
				return 0;
			}
		}
		addr += (uint32_t)n;
		buf += n;
		len -= n;
	}
	return 1;
}

/* Program the first len bytes; with torn set, the byte after them gets
 * only some of the bits it should lose. */
static int
ff_apply(struct flash_file *ff, uint32_t addr, const unsigned char *buf,
	size_t len, int torn)
{
	unsigned char cur;

	if (ff_store(ff, addr, buf, len) < 0) {
		return -1;
	}
	if (!torn) {
		return 0;
	}
	if (ff_load(ff, addr + (uint32_t)len, &cur, 1) < 0) {
		return -1;
	}
	cur &= (unsigned char)~(~buf[len] & ff_random(ff));
	return ff_store(ff, addr + (uint32_t)len, &cur, 1);
}

static int
ff_program(void *user, uint32_t addr, const unsigned char *buf, size_t len)
{
	struct flash_file *ff = (struct flash_file *)user;
	uint32_t unit = ff->flash.program_unit;

	if (ff->dead || addr % unit != 0 || len % unit != 0 ||
	    !ff_range_ok(ff, addr, len) || !ff_bits_ok(ff, addr, buf, len)) {
		return -1;
	}
	if (len == 0) {
		return 0;
	}
	if (ff_cut_now(ff)) {
		ff_apply(ff, addr, buf, ff_random(ff) % len, 1);
		return -1;
	}
	ff->programs++;
	ff->program_bytes += len;
	return ff_apply(ff, addr, buf, len, 0);
}

static void
ff_setup(struct flash_file *ff, uint32_t size, uint32_t sector_size,
	uint32_t program_unit)
{
	ff->flash.user = ff;
	ff->flash.read = ff_read;
	ff->flash.program = ff_program;
	ff->flash.erase = ff_erase;
	ff->flash.size = size;
	ff->flash.sector_size = sector_size;
	ff->flash.program_unit = program_unit;
	ff->fd = -1;
	ff->mem = NULL;
	ff->sync = 0;
	ff->ops_left = -1;
	ff->dead = 0;
	ff->cut_seed = 1;
	ff->erases = 0;
	ff->programs = 0;
	ff->program_bytes = 0;
	ff->reads = 0;
}

static int
ff_geometry_ok(uint32_t size, uint32_t sector_size, uint32_t program_unit)
{
	if (size == 0 || sector_size == 0 || program_unit == 0 ||
	    size % sector_size != 0 || sector_size % program_unit != 0) {
		errno = EINVAL;
		return 0;
	}
	return 1;
}

int
flash_mem_open(struct flash_file *ff, unsigned char *mem, uint32_t size,
	uint32_t sector_size, uint32_t program_unit)
{
	if (mem == NULL || !ff_geometry_ok(size, sector_size, program_unit)) {
		return -1;
	}
	ff_setup(ff, size, sector_size, program_unit);
	ff->mem = mem;
	return 0;
}

int
flash_file_open(struct flash_file *ff, const char *path, uint32_t size,
	uint32_t sector_size, uint32_t program_unit)
{
	struct stat st;
	int fd, saved;

	if (!ff_geometry_ok(size, sector_size, program_unit)) {
		return -1;
	}
	ff_setup(ff, size, sector_size, program_unit);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	if (fd < 0) {
		return -1;
	}
	ff->fd = fd;
	if (fstat(fd, &st) < 0) {
		goto fail;
	}
	if (st.st_size == 0) {
		/* A new chip is erased. A cut here leaves a short file,
		 * refused next time: delete it to start over. */
		if (ff_fill_erased(ff, 0, size) < 0 || fsync(fd) < 0) {
			goto fail;
		}
	} else if (st.st_size != (off_t)size) {
		errno = EINVAL;
		goto fail;
	}
	return 0;

fail:
	saved = errno;
	close(fd);
	ff->fd = -1;
	errno = saved;
	return -1;
}

int
flash_file_close(struct flash_file *ff)
{
	int r = 0;

	if (ff->fd >= 0) {
		r = close(ff->fd);
		ff->fd = -1;
	}
	return r;
}
