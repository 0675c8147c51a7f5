/*
 * LD_PRELOAD heap counter with zones: every malloc/calloc/realloc/free
 * (and posix_memalign/aligned_alloc/memalign) is counted in the zone the
 * program is in when it happens. The program under test sets the zone
 * through malloc_zone_set(), found with dlsym(RTLD_DEFAULT, ...) so that
 * it still runs without the preload:
 *
 *   0  outside the library (start-up, the driver loop, file reading)
 *   1  inside acme_smime_step(), in the library itself
 *   2  inside acme_smime_step(), in a port hook it called (getaddrinfo...)
 *
 * and reads the counts back with malloc_zone_get(). Build:
 *   cc -O2 -shared -fPIC malloc_zone.c -o malloc_zone.so -ldl
 * Single-threaded programs only (the zone is a plain global).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

#define ZONES 3

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

static int zone;
static unsigned long n_alloc[ZONES], n_free[ZONES];
static unsigned long long n_bytes[ZONES];

/* dlsym() may call calloc before the real one is known. */
static char boot[4096];
static size_t boot_used;

static void
init(void)
{
	if (real_malloc != NULL)
		return;
	real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
	real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
	real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
	real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
	real_posix_memalign = (int (*)(void **, size_t, size_t))
		dlsym(RTLD_NEXT, "posix_memalign");
	real_aligned_alloc = (void *(*)(size_t, size_t))
		dlsym(RTLD_NEXT, "aligned_alloc");
	real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
}

static void
count(size_t n)
{
	n_alloc[zone]++;
	n_bytes[zone] += n;
}

int
malloc_zone_set(int z)
{
	int old = zone;

	if (z >= 0 && z < ZONES)
		zone = z;
	return old;
}

void
malloc_zone_get(int z, unsigned long *allocs, unsigned long long *bytes,
	unsigned long *frees)
{
	if (z < 0 || z >= ZONES)
		return;
	*allocs = n_alloc[z];
	*bytes = n_bytes[z];
	*frees = n_free[z];
}

void *
malloc(size_t n)
{
	init();
	count(n);
	return real_malloc(n);
}

void *
calloc(size_t a, size_t b)
{
	void *p;

	if (real_calloc == NULL) {
		if (real_malloc == NULL && boot_used + a * b <= sizeof boot) {
			p = boot + boot_used;
			boot_used += (a * b + 15) & ~(size_t)15;
			return p;
		}
		init();
	}
	count(a * b);
	return real_calloc(a, b);
}

static int
is_boot(const void *p)
{
	return (const char *)p >= boot && (const char *)p < boot + sizeof boot;
}

void *
realloc(void *old, size_t n)
{
	void *p;

	init();
	if (is_boot(old)) {
		p = malloc(n);
		if (p != NULL)
			memcpy(p, old, n);
		return p;
	}
	count(n);
	return real_realloc(old, n);
}

void
free(void *p)
{
	if (p == NULL || is_boot(p))
		return;
	init();
	n_free[zone]++;
	real_free(p);
}

int
posix_memalign(void **out, size_t align, size_t n)
{
	init();
	count(n);
	return real_posix_memalign(out, align, n);
}

void *
aligned_alloc(size_t align, size_t n)
{
	init();
	count(n);
	return real_aligned_alloc(align, n);
}

void *
memalign(size_t align, size_t n)
{
	init();
	count(n);
	return real_memalign(align, n);
}
