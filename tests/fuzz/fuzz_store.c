/*
 * fuzz_store.c -- libFuzzer target for the flash store (section 9): the
 * input is a flash image.
 *
 * data[0] picks the program unit (1 << (data[0] % 9)) and where the power
 * cut of the last phase falls; data[1] holds repair flags that let the
 * fuzzer past the checks it cannot guess (FIX_*); the rest is the image,
 * truncated or padded with 0xFF to FLASH_SIZE (256-byte sectors). The
 * records are made small so that the image is small.
 *
 *   1. store_check() and every reader on every record: they agree with
 *      each other and with an independent reading of the image, and
 *      never return a payload that fails its CRC;
 *   2. every record is written over whatever was there and reads back;
 *      the store then checks clean;
 *   3. one more write is cut by a power cut; after "reboot" the record
 *      reads as its old or its new value.
 */
#define _POSIX_C_SOURCE 200809L

#define ACME_SMIME_STORE_MAX_ACCOUNT    100
#define ACME_SMIME_STORE_MAX_ENROLLMENT 300
#define ACME_SMIME_STORE_MAX_CERT       700
#define ACME_SMIME_STORE_MAX_TIME       16

#include "acme_smime.c"
#include "../../port/posix/flash_file.c"
#include "fuzz_util.h"

/* 22 sectors hold the layout with 256-byte program units. */
#define FLASH_SIZE  (24 * 256)
#define SECTOR_SIZE 256

#define FIX_STAMP      0x01  /* magic, record id, version at each slot */
#define FIX_LENGTH     0x02  /* length reduced modulo (maximum + 1) */
#define FIX_PAYLOAD    0x04  /* payload CRC made to match */
#define FIX_HEADER     0x08  /* header CRC made to match */

static unsigned char image[FLASH_SIZE];
static unsigned char buf[ACME_SMIME_STORE_MAX_CERT + 1];
static unsigned char want[ACME_SMIME_STORE_MAX_CERT + 1];
static struct flash_file ff;

static void
repair(const store_layout *l, unsigned flags)
{
	unsigned rec, i;
	uint32_t len;
	unsigned char *h;

	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		for (i = 0; i < 2; i++) {
			h = image + l->slot[rec] + i * l->slot_size[rec];
			if (flags & FIX_STAMP) {
				memcpy(h, store_magic, 4);
				h[4] = (unsigned char)rec;
				h[5] = STORE_VERSION;
				h[6] = 0;
				h[7] = 0;
			}
			len = store_get32(h + 12);
			if (flags & FIX_LENGTH) {
				len %= store_max[rec] + 1;
				store_put32(h + 12, len);
			}
			if ((flags & FIX_PAYLOAD) && len <= store_max[rec]) {
				store_put32(h + 16, store_crc32(0,
				    h + l->header_area, len));
			}
			if (flags & FIX_HEADER) {
				store_put32(h + 20, store_crc32(0, h, 20));
			}
		}
	}
}

/* The image's own verdict on a slot, written apart from store_scan(). */
static int
slot_valid(const store_layout *l, unsigned rec, unsigned i, uint32_t *seq,
	uint32_t *len)
{
	const unsigned char *h = image + l->slot[rec] + i * l->slot_size[rec];

	*seq = store_get32(h + 8);
	*len = store_get32(h + 12);
	return memcmp(h, "ACMS", 4) == 0 && h[4] == rec && h[5] == 1 &&
	    h[6] == 0 && h[7] == 0 &&
	    store_get32(h + 20) == store_crc32(0, h, 20) &&
	    *len <= store_max[rec] &&
	    store_get32(h + 16) == store_crc32(0, h + l->header_area, *len);
}

static void
check_record(const acme_smime_flash *f, const store_layout *l, unsigned rec)
{
	uint32_t seq[2], len[2], info_seq;
	int valid[2], r, pick;
	size_t n = 99, info_len, half, small;
	const unsigned char *payload;

	valid[0] = slot_valid(l, rec, 0, &seq[0], &len[0]);
	valid[1] = slot_valid(l, rec, 1, &seq[1], &len[1]);
	r = store_read(f, rec, buf, sizeof buf, &n);
	FUZZ_CHECK(r == ACME_SMIME_OK || r == STORE_NONE);
	if (r == STORE_NONE) {
		FUZZ_CHECK(n == 0 && !valid[0] && !valid[1]);
		FUZZ_CHECK(store_record_info(f, rec, &info_len, &info_seq) ==
		    STORE_NONE);
		FUZZ_CHECK(store_read_chunk(f, rec, 0, buf, 0) == STORE_NONE);
		return;
	}

	/* The newer valid slot (serial order; a tie goes to A). */
	FUZZ_CHECK(valid[0] || valid[1]);
	pick = valid[0] && valid[1] ? store_seq_newer(seq[1], seq[0]) :
	    valid[1];
	payload = image + l->slot[rec] + (uint32_t)pick * l->slot_size[rec] +
	    l->header_area;
	FUZZ_CHECK(n == len[pick] && n <= store_max[rec]);
	FUZZ_CHECK(memcmp(buf, payload, n) == 0);

	FUZZ_CHECK(store_record_info(f, rec, &info_len, &info_seq) ==
	    ACME_SMIME_OK);
	FUZZ_CHECK(info_len == n && info_seq == seq[pick]);
	half = n / 2;
	FUZZ_CHECK(store_read_chunk(f, rec, 0, want, half) == ACME_SMIME_OK);
	FUZZ_CHECK(store_read_chunk(f, rec, half, want + half, n - half) ==
	    ACME_SMIME_OK);
	FUZZ_CHECK(memcmp(want, buf, n) == 0);
	FUZZ_CHECK(store_read_chunk(f, rec, n, want, 1) == ACME_SMIME_ERR_INVALID);
	if (n > 0) {
		small = 0;
		FUZZ_CHECK(store_read(f, rec, buf, n - 1, &small) ==
		    ACME_SMIME_ERR_BUFFER && small == n);
	}
}

static void
pattern(unsigned char *p, size_t len, unsigned tag)
{
	size_t i;

	for (i = 0; i < len; i++) {
		p[i] = (unsigned char)(tag * 97u + i * 13u + (i >> 8));
	}
}

static int
reads_as(const acme_smime_flash *f, unsigned rec, unsigned tag, size_t len)
{
	size_t n = 0;

	pattern(want, len, tag);
	return store_read(f, rec, buf, sizeof buf, &n) == ACME_SMIME_OK &&
	    n == len && memcmp(buf, want, len) == 0;
}

static int
stream(const acme_smime_flash *f, unsigned rec, unsigned tag, size_t len)
{
	acme_smime_store_writer w;
	size_t off = 0, k;
	int r;

	pattern(want, len, tag);
	r = store_begin(&w, f, rec);
	while (r == ACME_SMIME_OK && off < len) {
		k = off % 7 + 1;
		k = k < len - off ? k : len - off;
		r = store_append(&w, want + off, k);
		off += k;
	}
	if (r != ACME_SMIME_OK) {
		store_abort(&w);
		return r;
	}
	return store_commit(&w);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const acme_smime_flash *f = &ff.flash;
	store_layout l;
	size_t len[STORE_REC_COUNT], n2;
	unsigned rec, victim;
	int mask;

	if (size < 2) {
		return 0;
	}
	memset(image, 0xFF, sizeof image);
	memcpy(image, data + 2, size - 2 < sizeof image ? size - 2 : sizeof image);
	FUZZ_CHECK(flash_mem_open(&ff, image, FLASH_SIZE, SECTOR_SIZE,
	    1u << (data[0] % 9)) == 0);
	FUZZ_CHECK(store_layout_get(f, &l) == ACME_SMIME_OK);
	FUZZ_CHECK(l.end <= FLASH_SIZE);
	repair(&l, data[1]);

	/* 1. Whatever the image holds. */
	mask = store_check(f);
	FUZZ_CHECK(mask >= 0 && mask < (1 << STORE_REC_COUNT));
	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		check_record(f, &l, rec);
	}

	/* 2. Writes over it. */
	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		len[rec] = (data[0] * 31u + rec * 17u + size) %
		    (store_max[rec] + 1);
		pattern(want, len[rec], rec + 1);
		FUZZ_CHECK(store_write(f, rec, want, len[rec]) == ACME_SMIME_OK);
	}
	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		FUZZ_CHECK(reads_as(f, rec, rec + 1, len[rec]));
		check_record(f, &l, rec);
	}
	FUZZ_CHECK(store_check(f) == 0);

	/* 3. A write cut short; then the same write completes. */
	victim = data[1] % STORE_REC_COUNT;
	n2 = (size * 7u) % (store_max[victim] + 1);
	ff.ops_left = 1 + data[0] / 9 % 24;
	ff.cut_seed = (uint32_t)size * 2654435761u;
	(void)stream(f, victim, 9, n2);
	ff.dead = 0;
	ff.ops_left = -1;
	FUZZ_CHECK(reads_as(f, victim, victim + 1, len[victim]) ||
	    reads_as(f, victim, 9, n2));
	FUZZ_CHECK(store_check(f) == 0);
	FUZZ_CHECK(stream(f, victim, 10, n2) == ACME_SMIME_OK);
	FUZZ_CHECK(reads_as(f, victim, 10, n2));
	for (rec = 0; rec < STORE_REC_COUNT; rec++) {
		check_record(f, &l, rec);
	}
	return 0;
}
