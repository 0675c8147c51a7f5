/*
 * flash_file.h -- NOR flash for acme_smime on POSIX: a file (or a memory
 * buffer) that behaves like the chip.
 *
 * Erase sets a sector to 0xFF. Program can only clear bits: a byte whose
 * new value has a 1 where the current value has a 0 is refused (the call
 * returns -1 and nothing changes), as are misaligned or out-of-range
 * calls. A fault injector cuts the power after a chosen number of
 * program/erase operations, leaving the interrupted one partly done, so
 * tests can replay a power cut at every operation.
 */
#ifndef FLASH_FILE_H
#define FLASH_FILE_H

#include <stdint.h>

#include "acme_smime.h"

struct flash_file {
	/* Hand &ff->flash to acme_smime (ports.flash). */
	acme_smime_flash flash;

	int fd;                   /* the backing file, or -1 */
	unsigned char *mem;       /* the backing buffer (flash_mem_open) */
	int sync;                 /* fsync after each erase/program */

	/*
	 * Fault injection. ops_left = -1: off. Otherwise each erase or
	 * program decrements it, and the one that brings it to 0 is done
	 * only partly (a program: a prefix of the bytes, the last of them
	 * with only some of its bits cleared; an erase: a prefix of the
	 * sector set to 0xFF); it and every later erase, program and read
	 * fail, as if the power was gone, until the test clears dead
	 * ("reboot"). cut_seed drives the choice of the partial prefix.
	 */
	long ops_left;
	int dead;
	uint32_t cut_seed;

	/* Counters since open (tests zero them as they like). */
	unsigned long erases;
	unsigned long programs;
	unsigned long program_bytes;
	unsigned long reads;
};

/* Open the flash file at path, creating it filled with 0xFF when absent
 * (mode 0600: it holds private keys). An existing file must have exactly
 * size bytes. size must be a non-zero multiple of sector_size. Returns 0,
 * or -1 with errno set. */
int flash_file_open(struct flash_file *ff, const char *path, uint32_t size,
	uint32_t sector_size, uint32_t program_unit);

/* The same flash over a caller buffer of size bytes, used as it is (fill
 * it with 0xFF for a blank chip). Returns 0 or -1. */
int flash_mem_open(struct flash_file *ff, unsigned char *mem, uint32_t size,
	uint32_t sector_size, uint32_t program_unit);

/* Close the file (nothing to do for memory). Returns 0 or -1. */
int flash_file_close(struct flash_file *ff);

#endif
