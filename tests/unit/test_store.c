/*
 * Section 9 (store): power-safe A/B records on NOR flash, over the POSIX
 * port's flash (port/posix/flash_file.c) in its memory-backed mode, which
 * has the file's semantics: erase to 0xFF, program clears bits only, and a
 * power cut after any number of operations.
 */
#define _POSIX_C_SOURCE 200809L

#include "acme_smime.c"
#include "../../port/posix/flash_file.c"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <cmocka.h>

#define FLASH_SIZE 65536u

static unsigned char mem[FLASH_SIZE];
static struct flash_file ff;
static const acme_smime_flash *const fl = &ff.flash;
static unsigned char data[16384];
static unsigned char back[16384];

/* ------------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------------- */

static void
blank_flash(uint32_t sector_size, uint32_t program_unit)
{
	memset(mem, 0xFF, sizeof mem);
	assert_int_equal(flash_mem_open(&ff, mem, FLASH_SIZE, sector_size,
	    program_unit), 0);
}

/* A value recognisable by its tag and length. */
static void
pattern(unsigned char *buf, size_t len, unsigned tag)
{
	size_t i;

	for (i = 0; i < len; i++) {
		buf[i] = (unsigned char)(tag * 131u + i * 7u + (i >> 8) * 3u);
	}
}

static void
reset_counters(void)
{
	ff.erases = 0;
	ff.programs = 0;
	ff.program_bytes = 0;
	ff.reads = 0;
}

static uint32_t
xorshift(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

static void
random_flash(uint32_t seed)
{
	size_t i;

	for (i = 0; i < sizeof mem; i++) {
		mem[i] = (unsigned char)xorshift(&seed);
	}
}

/* Does rec read exactly as pattern(tag, len)? */
static int
reads_as(unsigned rec, unsigned tag, size_t len)
{
	size_t got = 12345;

	pattern(data, len, tag);
	return store_read(fl, rec, back, sizeof back, &got) == ACME_SMIME_OK &&
	    got == len && memcmp(back, data, len) == 0;
}

static int
reads_none(unsigned rec)
{
	size_t got = 12345;

	return store_read(fl, rec, back, sizeof back, &got) == STORE_NONE &&
	    got == 0;
}

static int
write_pattern(unsigned rec, unsigned tag, size_t len)
{
	pattern(data, len, tag);
	return store_write(fl, rec, data, len);
}

/* Stream pattern(tag, len) in pieces of awkward sizes. */
static const size_t pieces[] = { 1, 7, 13, 250, 3, 1000, 31, 256, 2 };

static int
stream_pattern(unsigned rec, unsigned tag, size_t len)
{
	acme_smime_store_writer w;
	size_t off = 0, n, k = 0;
	int r;

	pattern(data, len, tag);
	r = store_begin(&w, fl, rec);
	while (r == ACME_SMIME_OK && off < len) {
		n = pieces[k++ % ARRAY_LEN(pieces)];
		if (n > len - off) {
			n = len - off;
		}
		r = store_append(&w, data + off, n);
		off += n;
	}
	if (r != ACME_SMIME_OK) {
		store_abort(&w);
		return r;
	}
	return store_commit(&w);
}

static uint32_t
seq_of(unsigned rec)
{
	uint32_t seq = 0;

	assert_int_equal(store_record_info(fl, rec, NULL, &seq), ACME_SMIME_OK);
	return seq;
}

static int
current_slot(unsigned rec)
{
	store_scan_result sc;

	assert_int_equal(store_scan(fl, rec, &sc), ACME_SMIME_OK);
	return sc.cur;
}

static uint32_t
slot_addr(unsigned rec, int which)
{
	store_layout l;

	assert_int_equal(store_layout_get(fl, &l), ACME_SMIME_OK);
	return l.slot[rec] + (uint32_t)which * l.slot_size[rec];
}

/* ------------------------------------------------------------------------
 * CRC and layout
 * ---------------------------------------------------------------------- */

static void
test_crc32_matches_ieee_check_value(void **state)
{
	(void)state;
	assert_int_equal(store_crc32(0, "123456789", 9), 0xCBF43926u);
	assert_int_equal(store_crc32(store_crc32(0, "1234", 4), "56789", 5),
	    0xCBF43926u);
	assert_int_equal(store_crc32(0, "", 0), 0);
}

static void
test_default_layout_fits_48k_with_4k_sectors(void **state)
{
	store_layout l;
	uint32_t pu;

	(void)state;
	for (pu = 1; pu <= 256; pu *= 2) {
		blank_flash(4096, pu);
		assert_int_equal(store_layout_get(fl, &l), ACME_SMIME_OK);
		assert_int_equal(l.end, 12 * 4096);
		assert_int_equal(l.end, ACME_SMIME_STORE_SIZE(4096, pu));
		assert_int_equal(l.slot_size[STORE_REC_CERT], 3 * 4096);
		blank_flash(256, pu);
		assert_int_equal(store_layout_get(fl, &l), ACME_SMIME_OK);
		assert_int_equal(l.end, ACME_SMIME_STORE_SIZE(256, pu));
	}
}

static void
test_bad_geometry_is_refused_without_flash_access(void **state)
{
	static const struct {
		uint32_t size, sector, unit;
	} bad[] = {
		{ 65536, 128, 1 },      /* sector under 256 */
		{ 65536, 384, 1 },      /* sector not a power of two */
		{ 65536, 4096, 3 },     /* unit not a power of two */
		{ 65536, 4096, 512 },   /* unit over 256 */
		{ 65536, 4096, 0 },
		{ 65000, 4096, 1 },     /* size not whole sectors */
		{ 45056, 4096, 1 },     /* 11 sectors: one short */
		{ 0, 4096, 1 },
	};
	acme_smime_flash f;
	size_t i, len;

	(void)state;
	blank_flash(4096, 1);
	for (i = 0; i < ARRAY_LEN(bad); i++) {
		f = ff.flash;
		f.size = bad[i].size;
		f.sector_size = bad[i].sector;
		f.program_unit = bad[i].unit;
		reset_counters();
		assert_int_equal(store_layout_ok(&f), ACME_SMIME_ERR_STORE);
		assert_int_equal(store_write(&f, 0, "x", 1), ACME_SMIME_ERR_STORE);
		assert_int_equal(store_read(&f, 0, back, sizeof back, &len),
		    ACME_SMIME_ERR_STORE);
		assert_int_equal(store_check(&f), ACME_SMIME_ERR_STORE);
		assert_int_equal(store_erase_all(&f), ACME_SMIME_ERR_STORE);
		assert_true(ff.erases == 0 && ff.programs == 0 && ff.reads == 0);
	}
	f = ff.flash;
	f.erase = NULL;
	assert_int_equal(store_layout_ok(&f), ACME_SMIME_ERR_STORE);
	assert_int_equal(store_layout_ok(NULL), ACME_SMIME_ERR_STORE);
	f = ff.flash;
	f.size = ACME_SMIME_STORE_SIZE(4096, 1);    /* exactly enough */
	assert_int_equal(store_layout_ok(&f), ACME_SMIME_OK);
}

/* ------------------------------------------------------------------------
 * Reading and writing
 * ---------------------------------------------------------------------- */

static void
test_blank_flash_reads_no_record(void **state)
{
	unsigned rec;
	size_t len = 1;

	(void)state;
	blank_flash(256, 4);
	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		assert_true(reads_none(rec));
		assert_int_equal(store_record_info(fl, rec, &len, NULL), STORE_NONE);
		assert_int_equal(store_read_chunk(fl, rec, 0, back, 1), STORE_NONE);
	}
	assert_int_equal(store_check(fl), 0);
	assert_int_equal(store_read(fl, STORE_REC_COUNT, back, 1, &len),
	    ACME_SMIME_ERR_INVALID);
}

static void
test_each_record_reads_back_what_was_written(void **state)
{
	unsigned rec;

	(void)state;
	blank_flash(256, 8);
	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		assert_int_equal(write_pattern(rec, rec + 1, store_max[rec]),
		    ACME_SMIME_OK);
	}
	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		assert_true(reads_as(rec, rec + 1, store_max[rec]));
		assert_int_equal(seq_of(rec), 1);
	}
	assert_int_equal(store_check(fl), 0);
}

static void
test_empty_record_is_a_value_not_absence(void **state)
{
	size_t len = 99;

	(void)state;
	blank_flash(256, 1);
	assert_int_equal(write_pattern(STORE_REC_ENROLLMENT, 1, 100), ACME_SMIME_OK);
	assert_int_equal(store_write(fl, STORE_REC_ENROLLMENT, NULL, 0),
	    ACME_SMIME_OK);
	assert_int_equal(store_read(fl, STORE_REC_ENROLLMENT, NULL, 0, &len),
	    ACME_SMIME_OK);
	assert_int_equal(len, 0);
}

static void
test_unchanged_rewrite_neither_erases_nor_programs(void **state)
{
	(void)state;
	blank_flash(256, 16);
	assert_int_equal(write_pattern(STORE_REC_ACCOUNT, 7, 600), ACME_SMIME_OK);
	reset_counters();
	assert_int_equal(write_pattern(STORE_REC_ACCOUNT, 7, 600), ACME_SMIME_OK);
	assert_true(ff.erases == 0 && ff.programs == 0);
	assert_int_equal(seq_of(STORE_REC_ACCOUNT), 1);

	/* Same length, one byte different: rewritten. */
	pattern(data, 600, 7);
	data[599] ^= 1;
	assert_int_equal(store_write(fl, STORE_REC_ACCOUNT, data, 600),
	    ACME_SMIME_OK);
	assert_true(ff.erases > 0 && ff.programs > 0);
	assert_int_equal(seq_of(STORE_REC_ACCOUNT), 2);
}

static void
test_writes_alternate_slots_with_rising_sequence(void **state)
{
	uint32_t i;

	(void)state;
	blank_flash(256, 4);
	for (i = 1; i <= 5; i++) {
		assert_int_equal(write_pattern(STORE_REC_TIME, i, 8), ACME_SMIME_OK);
		assert_int_equal(seq_of(STORE_REC_TIME), i);
		assert_int_equal(current_slot(STORE_REC_TIME), (i - 1) % 2);
		assert_true(reads_as(STORE_REC_TIME, i, 8));
	}
}

static void
test_sequence_number_wraps_around(void **state)
{
	acme_smime_store_writer w;

	(void)state;
	blank_flash(256, 1);
	pattern(data, 10, 1);
	assert_int_equal(store_begin(&w, fl, STORE_REC_TIME), ACME_SMIME_OK);
	assert_int_equal(store_append(&w, data, 10), ACME_SMIME_OK);
	w.seq = 0xFFFFFFFFu;
	assert_int_equal(store_commit(&w), ACME_SMIME_OK);
	assert_int_equal(write_pattern(STORE_REC_TIME, 2, 10), ACME_SMIME_OK);
	assert_int_equal(seq_of(STORE_REC_TIME), 0);
	assert_true(reads_as(STORE_REC_TIME, 2, 10));
	assert_int_equal(write_pattern(STORE_REC_TIME, 3, 10), ACME_SMIME_OK);
	assert_int_equal(seq_of(STORE_REC_TIME), 1);
	assert_true(reads_as(STORE_REC_TIME, 3, 10));
}

static void
test_small_buffer_gets_the_needed_length(void **state)
{
	size_t len = 0;

	(void)state;
	blank_flash(256, 1);
	assert_int_equal(write_pattern(STORE_REC_ACCOUNT, 1, 300), ACME_SMIME_OK);
	assert_int_equal(store_read(fl, STORE_REC_ACCOUNT, back, 299, &len),
	    ACME_SMIME_ERR_BUFFER);
	assert_int_equal(len, 300);
}

static void
test_read_chunk_reads_inside_the_record_only(void **state)
{
	size_t off;

	(void)state;
	blank_flash(256, 16);
	assert_int_equal(write_pattern(STORE_REC_CERT, 3, 5000), ACME_SMIME_OK);
	pattern(data, 5000, 3);
	for (off = 0; off < 5000; off += 999) {
		size_t n = 5000 - off < 999 ? 5000 - off : 999;

		assert_int_equal(store_read_chunk(fl, STORE_REC_CERT, off, back, n),
		    ACME_SMIME_OK);
		assert_memory_equal(back, data + off, n);
	}
	assert_int_equal(store_read_chunk(fl, STORE_REC_CERT, 5000, back, 0),
	    ACME_SMIME_OK);
	assert_int_equal(store_read_chunk(fl, STORE_REC_CERT, 4999, back, 2),
	    ACME_SMIME_ERR_INVALID);
	assert_int_equal(store_read_chunk(fl, STORE_REC_CERT, 5001, back, 0),
	    ACME_SMIME_ERR_INVALID);
	assert_int_equal(store_read_chunk(fl, STORE_REC_CERT, (size_t)-1, back, 2),
	    ACME_SMIME_ERR_INVALID);
}

static void
test_oversized_record_is_refused_and_old_value_kept(void **state)
{
	acme_smime_store_writer w;
	size_t max = store_max[STORE_REC_ACCOUNT];

	(void)state;
	blank_flash(256, 4);
	assert_int_equal(write_pattern(STORE_REC_ACCOUNT, 1, 100), ACME_SMIME_OK);
	reset_counters();
	assert_int_equal(write_pattern(STORE_REC_ACCOUNT, 2, max + 1),
	    ACME_SMIME_ERR_LIMIT);
	assert_true(ff.erases == 0 && ff.programs == 0);

	pattern(data, max + 1, 2);
	assert_int_equal(store_begin(&w, fl, STORE_REC_ACCOUNT), ACME_SMIME_OK);
	assert_int_equal(store_append(&w, data, max), ACME_SMIME_OK);
	assert_int_equal(store_append(&w, data, 1), ACME_SMIME_ERR_LIMIT);
	assert_int_equal(store_append(&w, data, 0), ACME_SMIME_ERR_LIMIT);
	assert_int_equal(store_commit(&w), ACME_SMIME_ERR_LIMIT);
	assert_true(reads_as(STORE_REC_ACCOUNT, 1, 100));
	assert_int_equal(store_check(fl), 0);
}

/* ------------------------------------------------------------------------
 * Streaming
 * ---------------------------------------------------------------------- */

static void
test_streamed_record_is_invisible_until_commit(void **state)
{
	acme_smime_store_writer w;

	(void)state;
	blank_flash(256, 16);
	assert_int_equal(write_pattern(STORE_REC_CERT, 1, 3000), ACME_SMIME_OK);
	pattern(data, 4000, 2);
	assert_int_equal(store_begin(&w, fl, STORE_REC_CERT), ACME_SMIME_OK);
	assert_int_equal(store_append(&w, data, 4000), ACME_SMIME_OK);
	assert_true(reads_as(STORE_REC_CERT, 1, 3000));
	assert_int_equal(store_commit(&w), ACME_SMIME_OK);
	assert_true(reads_as(STORE_REC_CERT, 2, 4000));
	assert_int_equal(store_commit(&w), ACME_SMIME_ERR_INVALID);
	assert_int_equal(store_append(&w, data, 1), ACME_SMIME_ERR_INVALID);
}

static void
test_aborted_stream_keeps_the_previous_value(void **state)
{
	acme_smime_store_writer w;

	(void)state;
	blank_flash(256, 1);
	assert_int_equal(write_pattern(STORE_REC_CERT, 1, 3000), ACME_SMIME_OK);
	pattern(data, 4000, 2);
	assert_int_equal(store_begin(&w, fl, STORE_REC_CERT), ACME_SMIME_OK);
	assert_int_equal(store_append(&w, data, 4000), ACME_SMIME_OK);
	store_abort(&w);
	assert_int_equal(store_commit(&w), ACME_SMIME_ERR_INVALID);
	assert_true(reads_as(STORE_REC_CERT, 1, 3000));
	assert_int_equal(store_check(fl), 0);
	/* The half-written slot is reused by the next write. */
	assert_int_equal(stream_pattern(STORE_REC_CERT, 3, 3500), ACME_SMIME_OK);
	assert_true(reads_as(STORE_REC_CERT, 3, 3500));
	assert_int_equal(seq_of(STORE_REC_CERT), 2);
}

static void
test_stream_in_odd_pieces_on_every_geometry(void **state)
{
	static const uint32_t sectors[] = { 256, 4096 };
	static const uint32_t units[] = { 1, 4, 16, 256 };
	static const size_t lens[] = { 9001, 12032, 1, 0, 255, 257 };
	size_t s, u, i, off, len;

	(void)state;
	for (s = 0; s < ARRAY_LEN(sectors); s++) {
		for (u = 0; u < ARRAY_LEN(units); u++) {
			uint32_t pu = units[u];
			uint32_t area = store_header_area(pu);

			blank_flash(sectors[s], pu);
			for (i = 0; i < ARRAY_LEN(lens); i++) {
				len = lens[i];
				reset_counters();
				assert_int_equal(stream_pattern(STORE_REC_CERT,
				    (unsigned)i, len), ACME_SMIME_OK);
				assert_true(reads_as(STORE_REC_CERT, (unsigned)i, len));
				/* Every byte programmed once, tail padded to a
				 * whole unit, header apart. */
				assert_int_equal(ff.program_bytes,
				    area + (len + pu - 1) / pu * pu);
				assert_int_equal(ff.erases,
				    (area + store_max[STORE_REC_CERT] +
				    sectors[s] - 1) / sectors[s]);
				for (off = 0; off < len; off += 4000) {
					size_t n = len - off < 4000 ? len - off : 4000;

					assert_int_equal(store_read_chunk(fl,
					    STORE_REC_CERT, off, back, n), ACME_SMIME_OK);
					assert_memory_equal(back, data + off, n);
				}
			}
		}
	}
}

static void
test_one_byte_appends_program_whole_units(void **state)
{
	acme_smime_store_writer w;
	size_t i;

	(void)state;
	blank_flash(256, 256);
	pattern(data, 1000, 9);
	assert_int_equal(store_begin(&w, fl, STORE_REC_ENROLLMENT), ACME_SMIME_OK);
	reset_counters();
	for (i = 0; i < 1000; i++) {
		assert_int_equal(store_append(&w, data + i, 1), ACME_SMIME_OK);
	}
	assert_int_equal(ff.programs, 1000 / 256);
	assert_int_equal(store_commit(&w), ACME_SMIME_OK);
	assert_int_equal(ff.programs, 1000 / 256 + 2);   /* tail, header */
	assert_true(reads_as(STORE_REC_ENROLLMENT, 9, 1000));
}

/* SPI NOR page program wraps at 256 bytes: check every call. */
static int
program_within_page(void *user, uint32_t addr, const unsigned char *buf,
	size_t len)
{
	assert_true(len > 0 && addr % 256 + len <= 256);
	return ff_program(user, addr, buf, len);
}

static void
test_no_program_call_crosses_a_page(void **state)
{
	static const uint32_t units[] = { 1, 16, 256 };
	acme_smime_flash f;
	size_t u;

	(void)state;
	for (u = 0; u < ARRAY_LEN(units); u++) {
		blank_flash(4096, units[u]);
		f = ff.flash;
		f.program = program_within_page;
		reset_counters();
		pattern(data, 12032, 1);
		assert_int_equal(store_write(&f, STORE_REC_CERT, data, 12032),
		    ACME_SMIME_OK);
		assert_true(reads_as(STORE_REC_CERT, 1, 12032));
		/* One call per page the payload touches, then the header. */
		assert_int_equal(ff.programs,
		    (store_header_area(units[u]) % 256 + 12032 + 255) / 256 + 1);
	}
}

/* ------------------------------------------------------------------------
 * Power cuts
 * ---------------------------------------------------------------------- */

struct step {
	unsigned rec;
	unsigned tag;
	size_t len;
	int streamed;
};

/* An enrollment in miniature. Tag 0 with length 0 clears the record. */
static const struct step script[] = {
	{ STORE_REC_ACCOUNT,    1,  600, 0 },
	{ STORE_REC_ENROLLMENT, 2, 1500, 0 },
	{ STORE_REC_ENROLLMENT, 3, 2100, 0 },
	{ STORE_REC_ENROLLMENT, 4,  700, 0 },
	{ STORE_REC_CERT,       5, 9001, 1 },
	{ STORE_REC_TIME,       6,    8, 0 },
	{ STORE_REC_ENROLLMENT, 0,    0, 0 },
};

static int
run_step(size_t i)
{
	const struct step *s = &script[i];

	return s->streamed ? stream_pattern(s->rec, s->tag, s->len) :
	    write_pattern(s->rec, s->tag, s->len);
}

/* Index of the last step before `before` that wrote rec, or -1. */
static int
last_write(unsigned rec, size_t before)
{
	int j = -1;
	size_t i;

	for (i = 0; i < before; i++) {
		if (script[i].rec == rec) {
			j = (int)i;
		}
	}
	return j;
}

static int
reads_as_step(unsigned rec, int j)
{
	return j < 0 ? reads_none(rec) :
	    reads_as(rec, script[j].tag, script[j].len);
}

/* Run the whole script, then check every record. */
static void
finish_script(size_t from)
{
	unsigned rec;
	size_t i;

	for (i = from; i < ARRAY_LEN(script); i++) {
		assert_int_equal(run_step(i), ACME_SMIME_OK);
	}
	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		assert_true(reads_as_step(rec, last_write(rec, ARRAY_LEN(script))));
	}
	assert_int_equal(store_check(fl), 0);
}

static void
power_cut_everywhere(uint32_t sector_size, uint32_t program_unit,
	uint32_t seed)
{
	unsigned long total, n;
	unsigned rec;
	size_t i;

	blank_flash(sector_size, program_unit);
	finish_script(0);
	total = ff.erases + ff.programs;
	if (getenv("STORE_TEST_VERBOSE") != NULL) {
		printf("power cut: %lu operations (sector %u, unit %u)\n", total,
		    (unsigned)sector_size, (unsigned)program_unit);
	}

	for (n = 1; n <= total; n++) {
		blank_flash(sector_size, program_unit);
		ff.cut_seed = seed + (uint32_t)n;
		ff.ops_left = (long)n;
		for (i = 0; i < ARRAY_LEN(script); i++) {
			if (run_step(i) != ACME_SMIME_OK) {
				break;
			}
		}
		assert_true(i < ARRAY_LEN(script) && ff.dead);

		/* Reboot: the content stays, the power is back. */
		ff.dead = 0;
		ff.ops_left = -1;
		for (rec = 0; rec < STORE_REC_COUNT; rec++) {
			int before = last_write(rec, i);

			if (rec == script[i].rec) {
				assert_true(reads_as_step(rec, before) ||
				    reads_as_step(rec, (int)i));
			} else {
				assert_true(reads_as_step(rec, before));
			}
		}
		assert_int_equal(store_check(fl), 0);
		finish_script(i);
	}
}

/* Each seed cuts the operations at other points. */
#define CUT_SEEDS 4

static void
test_power_cut_at_every_operation_small_sectors(void **state)
{
	uint32_t k;

	(void)state;
	for (k = 0; k < CUT_SEEDS; k++) {
		power_cut_everywhere(256, 16, 1 + k * 7919);
	}
}

static void
test_power_cut_at_every_operation_byte_programming(void **state)
{
	uint32_t k;

	(void)state;
	for (k = 0; k < CUT_SEEDS; k++) {
		power_cut_everywhere(4096, 1, 1000 + k * 7919);
	}
}

static void
test_power_cut_at_every_operation_page_units(void **state)
{
	uint32_t k;

	(void)state;
	for (k = 0; k < CUT_SEEDS; k++) {
		power_cut_everywhere(256, 256, 77777 + k * 7919);
	}
}

/* ------------------------------------------------------------------------
 * Damage
 * ---------------------------------------------------------------------- */

static void
test_random_flash_reads_no_record_and_accepts_writes(void **state)
{
	uint32_t seed;
	unsigned rec;
	int mask;

	(void)state;
	for (seed = 1; seed <= 200; seed++) {
		blank_flash(seed % 2 ? 256 : 4096, 1u << (seed % 9));
		random_flash(seed);
		mask = store_check(fl);
		assert_true(mask >= 0 && mask < (1 << STORE_REC_COUNT));
		for (rec = 0; rec < STORE_REC_COUNT; rec++) {
			assert_true(reads_none(rec));
		}
		if (seed % 20 == 0) {
			for (rec = 0; rec < STORE_REC_COUNT; rec++) {
				assert_int_equal(write_pattern(rec, seed, rec * 3 + 5),
				    ACME_SMIME_OK);
			}
			for (rec = 0; rec < STORE_REC_COUNT; rec++) {
				assert_true(reads_as(rec, seed, rec * 3 + 5));
			}
			assert_int_equal(store_check(fl), 0);
		}
	}
}

/* A header that passes every header check over a payload that does not
 * match its CRC (what bit rot or foreign data looks like). */
static void
plant_header(uint32_t addr, unsigned rec, uint32_t seq, uint32_t len)
{
	unsigned char *h = mem + addr;

	memcpy(h, store_magic, 4);
	h[4] = (unsigned char)rec;
	h[5] = STORE_VERSION;
	h[6] = 0;
	h[7] = 0;
	store_put32(h + 8, seq);
	store_put32(h + 12, len);
	store_put32(h + 16, 0x12345678u);
	store_put32(h + 20, store_crc32(0, h, 20));
}

static void
test_forged_headers_over_random_data_are_reported(void **state)
{
	uint32_t seed;
	unsigned rec;

	(void)state;
	for (seed = 1; seed <= 50; seed++) {
		blank_flash(256, 4);
		random_flash(seed);
		for (rec = 0; rec < STORE_REC_COUNT; rec++) {
			plant_header(slot_addr(rec, (int)(seed % 2)), rec, seed,
			    rec == STORE_REC_TIME ? 0xFFFFFFF0u :
			    seed * 37u % (store_max[rec] + 1));
		}
		/* Time's length is out of bounds: not a complete header. */
		assert_int_equal(store_check(fl),
		    (1 << STORE_REC_COUNT) - 1 - (1 << STORE_REC_TIME));
		for (rec = 0; rec < STORE_REC_COUNT; rec++) {
			assert_true(reads_none(rec));
		}
		assert_int_equal(write_pattern(STORE_REC_ACCOUNT, 1, 50),
		    ACME_SMIME_OK);
		assert_true(reads_as(STORE_REC_ACCOUNT, 1, 50));
		/* Written into slot A, after a forged header in B. */
		assert_int_equal(seq_of(STORE_REC_ACCOUNT), seed % 2 ? seed + 1 : 1);
		assert_int_equal(store_check(fl) & 1, 0);
	}
}

static void
test_flipped_payload_bit_falls_back_to_the_other_slot(void **state)
{
	uint32_t addr;

	(void)state;
	blank_flash(256, 4);
	assert_int_equal(write_pattern(STORE_REC_ENROLLMENT, 1, 900), ACME_SMIME_OK);
	assert_int_equal(write_pattern(STORE_REC_ENROLLMENT, 2, 1000), ACME_SMIME_OK);
	addr = slot_addr(STORE_REC_ENROLLMENT, 1);
	mem[addr + store_header_area(4) + 500] ^= 0x10;

	assert_true(reads_as(STORE_REC_ENROLLMENT, 1, 900));
	assert_int_equal(store_check(fl), 1 << STORE_REC_ENROLLMENT);

	/* The next write replaces the damaged slot. */
	assert_int_equal(write_pattern(STORE_REC_ENROLLMENT, 3, 800), ACME_SMIME_OK);
	assert_true(reads_as(STORE_REC_ENROLLMENT, 3, 800));
	assert_int_equal(current_slot(STORE_REC_ENROLLMENT), 1);
	assert_int_equal(seq_of(STORE_REC_ENROLLMENT), 2);
	assert_int_equal(store_check(fl), 0);
}

static void
test_rewriting_the_fallen_back_value_clears_the_damage(void **state)
{
	(void)state;
	blank_flash(256, 4);
	assert_int_equal(write_pattern(STORE_REC_ACCOUNT, 1, 90), ACME_SMIME_OK);
	assert_int_equal(write_pattern(STORE_REC_ACCOUNT, 2, 90), ACME_SMIME_OK);
	mem[slot_addr(STORE_REC_ACCOUNT, 1) + store_header_area(4) + 3] ^= 0x80;
	assert_int_equal(store_check(fl), 1 << STORE_REC_ACCOUNT);
	/* Equal to what reads back, but not left alone. */
	assert_int_equal(write_pattern(STORE_REC_ACCOUNT, 1, 90), ACME_SMIME_OK);
	assert_true(reads_as(STORE_REC_ACCOUNT, 1, 90));
	assert_int_equal(store_check(fl), 0);
}

static void
test_damaged_only_copy_reads_no_record_and_is_reported(void **state)
{
	(void)state;
	blank_flash(256, 1);
	assert_int_equal(write_pattern(STORE_REC_ACCOUNT, 1, 200), ACME_SMIME_OK);
	mem[slot_addr(STORE_REC_ACCOUNT, 0) + store_header_area(1)] ^= 1;
	assert_true(reads_none(STORE_REC_ACCOUNT));
	assert_int_equal(store_check(fl), 1 << STORE_REC_ACCOUNT);
}

static void
test_flipped_header_bit_reads_as_torn_write(void **state)
{
	(void)state;
	blank_flash(256, 1);
	assert_int_equal(write_pattern(STORE_REC_TIME, 1, 8), ACME_SMIME_OK);
	assert_int_equal(write_pattern(STORE_REC_TIME, 2, 8), ACME_SMIME_OK);
	mem[slot_addr(STORE_REC_TIME, 1) + 9] ^= 4;   /* in seq */
	assert_true(reads_as(STORE_REC_TIME, 1, 8));
	assert_int_equal(store_check(fl), 0);
}

static void
test_erase_all_forgets_every_record(void **state)
{
	unsigned rec;

	(void)state;
	blank_flash(4096, 4);
	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		assert_int_equal(write_pattern(rec, rec, 10), ACME_SMIME_OK);
		assert_int_equal(write_pattern(rec, rec + 1, 10), ACME_SMIME_OK);
	}
	assert_int_equal(store_erase_all(fl), ACME_SMIME_OK);
	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		assert_true(reads_none(rec));
	}
	assert_int_equal(store_check(fl), 0);
}

static void
test_flash_failure_is_a_store_error(void **state)
{
	size_t len;

	(void)state;
	blank_flash(256, 1);
	assert_int_equal(write_pattern(STORE_REC_TIME, 1, 8), ACME_SMIME_OK);
	ff.dead = 1;
	assert_int_equal(write_pattern(STORE_REC_TIME, 2, 8), ACME_SMIME_ERR_STORE);
	assert_int_equal(store_read(fl, STORE_REC_TIME, back, sizeof back, &len),
	    ACME_SMIME_ERR_STORE);
	assert_int_equal(store_check(fl), ACME_SMIME_ERR_STORE);
	ff.dead = 0;
	ff.ops_left = 3;   /* erase ok, program ok, header cut */
	assert_int_equal(write_pattern(STORE_REC_TIME, 2, 8), ACME_SMIME_ERR_STORE);
	ff.dead = 0;
	ff.ops_left = -1;
	assert_true(reads_as(STORE_REC_TIME, 1, 8) || reads_as(STORE_REC_TIME, 2, 8));
}

/* ------------------------------------------------------------------------
 * The POSIX flash itself
 * ---------------------------------------------------------------------- */

static void
test_flash_program_never_sets_bits(void **state)
{
	unsigned char b[4] = { 0x0F, 0xFF, 0x00, 0xF0 };
	unsigned char one = 0x1F;

	(void)state;
	blank_flash(256, 1);
	assert_int_equal(fl->program(fl->user, 0, b, 4), 0);
	assert_int_equal(fl->program(fl->user, 0, &one, 1), -1);
	assert_int_equal(mem[0], 0x0F);
	one = 0x07;
	assert_int_equal(fl->program(fl->user, 0, &one, 1), 0);
	assert_int_equal(mem[0], 0x07);
	assert_int_equal(fl->erase(fl->user, 0), 0);
	assert_int_equal(mem[0], 0xFF);
	assert_int_equal(mem[3], 0xFF);
}

static void
test_flash_refuses_misaligned_and_out_of_range(void **state)
{
	unsigned char b[8];

	(void)state;
	memset(b, 0, sizeof b);
	blank_flash(256, 4);
	assert_int_equal(fl->program(fl->user, 2, b, 4), -1);
	assert_int_equal(fl->program(fl->user, 0, b, 6), -1);
	assert_int_equal(fl->program(fl->user, FLASH_SIZE - 4, b, 8), -1);
	assert_int_equal(fl->erase(fl->user, 100), -1);
	assert_int_equal(fl->erase(fl->user, FLASH_SIZE), -1);
	assert_int_equal(fl->read(fl->user, FLASH_SIZE - 1, b, 2), -1);
	assert_int_equal(ff.erases + ff.programs, 0);
	assert_int_equal(mem[0], 0xFF);
}

static void
test_flash_cut_leaves_a_partial_operation_and_dies(void **state)
{
	unsigned char zeros[256], b;
	size_t i, cleared = 0;

	(void)state;
	memset(zeros, 0, sizeof zeros);
	blank_flash(256, 1);
	ff.ops_left = 2;
	assert_int_equal(fl->program(fl->user, 0, zeros, 256), 0);
	assert_int_equal(fl->program(fl->user, 256, zeros, 256), -1);
	assert_true(ff.dead);
	for (i = 256; i < 512; i++) {
		cleared += mem[i] == 0;
	}
	assert_true(cleared < 256);
	for (i = 256; i < 256 + cleared; i++) {
		assert_int_equal(mem[i], 0);
	}
	assert_int_equal(fl->read(fl->user, 0, &b, 1), -1);
	assert_int_equal(fl->erase(fl->user, 0), -1);

	ff.dead = 0;
	ff.ops_left = 1;
	assert_int_equal(fl->erase(fl->user, 0), -1);
	/* An erased prefix, then the old zeros. */
	i = 0;
	while (i < 256 && mem[i] == 0xFF) {
		i++;
	}
	assert_true(i < 256);
	while (i < 256) {
		assert_int_equal(mem[i++], 0);
	}
}

static void
test_flash_file_starts_blank_and_persists(void **state)
{
	char path[] = "/tmp/test_store_XXXXXX";
	struct flash_file f2;
	unsigned char b[4] = { 1, 2, 3, 4 }, r[4];
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	assert_int_equal(flash_file_open(&f2, path, 8192, 4096, 4), 0);
	assert_int_equal(f2.flash.read(f2.flash.user, 8188, r, 4), 0);
	assert_true(r[0] == 0xFF && r[3] == 0xFF);
	assert_int_equal(f2.flash.program(f2.flash.user, 4096, b, 4), 0);
	assert_int_equal(flash_file_close(&f2), 0);
	assert_int_equal(flash_file_open(&f2, path, 8192, 4096, 4), 0);
	assert_int_equal(f2.flash.read(f2.flash.user, 4096, r, 4), 0);
	assert_memory_equal(r, b, 4);
	assert_int_equal(flash_file_close(&f2), 0);
	assert_int_equal(flash_file_open(&f2, path, 4096, 4096, 4), -1);
	unlink(path);
}

static void
test_store_on_a_flash_file_survives_reopen(void **state)
{
	char path[] = "/tmp/test_store_XXXXXX";
	struct flash_file f2;
	size_t len;
	int fd;

	(void)state;
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	unlink(path);
	assert_int_equal(flash_file_open(&f2, path, FLASH_SIZE, 4096, 16), 0);
	pattern(data, 3000, 5);
	assert_int_equal(store_write(&f2.flash, STORE_REC_CERT, data, 3000),
	    ACME_SMIME_OK);
	assert_int_equal(flash_file_close(&f2), 0);
	assert_int_equal(flash_file_open(&f2, path, FLASH_SIZE, 4096, 16), 0);
	assert_int_equal(store_read(&f2.flash, STORE_REC_CERT, back, sizeof back,
	    &len), ACME_SMIME_OK);
	assert_int_equal(len, 3000);
	assert_memory_equal(back, data, 3000);
	assert_int_equal(flash_file_close(&f2), 0);
	unlink(path);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32_matches_ieee_check_value),
		cmocka_unit_test(test_default_layout_fits_48k_with_4k_sectors),
		cmocka_unit_test(test_bad_geometry_is_refused_without_flash_access),
		cmocka_unit_test(test_blank_flash_reads_no_record),
		cmocka_unit_test(test_each_record_reads_back_what_was_written),
		cmocka_unit_test(test_empty_record_is_a_value_not_absence),
		cmocka_unit_test(test_unchanged_rewrite_neither_erases_nor_programs),
		cmocka_unit_test(test_writes_alternate_slots_with_rising_sequence),
		cmocka_unit_test(test_sequence_number_wraps_around),
		cmocka_unit_test(test_small_buffer_gets_the_needed_length),
		cmocka_unit_test(test_read_chunk_reads_inside_the_record_only),
		cmocka_unit_test(test_oversized_record_is_refused_and_old_value_kept),
		cmocka_unit_test(test_streamed_record_is_invisible_until_commit),
		cmocka_unit_test(test_aborted_stream_keeps_the_previous_value),
		cmocka_unit_test(test_stream_in_odd_pieces_on_every_geometry),
		cmocka_unit_test(test_one_byte_appends_program_whole_units),
		cmocka_unit_test(test_no_program_call_crosses_a_page),
		cmocka_unit_test(test_power_cut_at_every_operation_small_sectors),
		cmocka_unit_test(test_power_cut_at_every_operation_byte_programming),
		cmocka_unit_test(test_power_cut_at_every_operation_page_units),
		cmocka_unit_test(test_random_flash_reads_no_record_and_accepts_writes),
		cmocka_unit_test(test_forged_headers_over_random_data_are_reported),
		cmocka_unit_test(test_flipped_payload_bit_falls_back_to_the_other_slot),
		cmocka_unit_test(test_rewriting_the_fallen_back_value_clears_the_damage),
		cmocka_unit_test(test_damaged_only_copy_reads_no_record_and_is_reported),
		cmocka_unit_test(test_flipped_header_bit_reads_as_torn_write),
		cmocka_unit_test(test_erase_all_forgets_every_record),
		cmocka_unit_test(test_flash_failure_is_a_store_error),
		cmocka_unit_test(test_flash_program_never_sets_bits),
		cmocka_unit_test(test_flash_refuses_misaligned_and_out_of_range),
		cmocka_unit_test(test_flash_cut_leaves_a_partial_operation_and_dies),
		cmocka_unit_test(test_flash_file_starts_blank_and_persists),
		cmocka_unit_test(test_store_on_a_flash_file_survives_reopen),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
