/*
 * preload.c - libethermem-preload.so, the shim `ethermem run` puts in
 * LD_PRELOAD so that an unmodified program keeps its large memory in the pool.
 *
 * It interposes the allocator entry points and mmap/munmap. A request of at
 * least ETHERMEM_THRESHOLD bytes becomes a block: an anonymous pool region
 * mapped with em_map (EM_MAP_FRESH: never-written units are zero-filled
 * locally, so calloc costs nothing; EM_MAP_SCRATCH: free discards instead of
 * writing back). A read-only private file mapping of at least the threshold
 * is imported into a region (the file is read once, its page cache dropped)
 * and mapped read-only, so only the cache's worth of it stays local.
 * Everything smaller goes to glibc through its __libc_* entry points, which
 * needs no dlsym (dlsym itself allocates). The engine serves faults on a
 * thread (ETHERMEM_MAP_FAULTS=thread, set by `ethermem run`) because the
 * program's own read(2) into a pool buffer must work.
 *
 * free() must stay cheap: blocks are 64 KiB aligned, so only such pointers
 * are looked up, in an open-addressed table read without a lock. Calls from
 * the shim into the library are marked per thread, so the library's own
 * allocations and mmaps go straight to the system. Partial munmap of a block
 * and mremap of a block are not supported (ignored / refused with ENOMEM).
 * Any failure to reach the pool falls back to local memory, once reported.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ethermem.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

#define EMM_PL_UNIT (64u << 10)
#define EMM_PL_SLOTS 8192 /* power of two */

struct emm_pl_block {
	void *base;
	size_t size;      /* bytes mapped (unit-rounded) */
	size_t asked;     /* bytes the program asked for */
	em_region *region;
};

static struct emm_pl_block *_Atomic emm_pl_tab[EMM_PL_SLOTS];
static pthread_mutex_t emm_pl_mu = PTHREAD_MUTEX_INITIALIZER;
static __thread int emm_pl_inside;
static em_pool *emm_pl_pool;
static int emm_pl_state; /* 0 not tried, 1 ready, -1 unavailable */
static size_t emm_pl_threshold = 1u << 20;
static size_t emm_pl_unit = EMM_PL_UNIT; /* ETHERMEM_FETCH_UNIT: 4K .. 64K */

static size_t emm_pl_hash(const void *p)
{
	return ((uintptr_t)p >> 16) * 0x9e3779b97f4a7c15ull >> 51 & (EMM_PL_SLOTS - 1);
}

static struct emm_pl_block *emm_pl_find(const void *p)
{
	if (!p || ((uintptr_t)p & (EMM_PL_UNIT - 1)))
		return NULL;
	for (size_t i = emm_pl_hash(p), n = 0; n < EMM_PL_SLOTS; n++, i = (i + 1) & (EMM_PL_SLOTS - 1)) {
		struct emm_pl_block *b = atomic_load_explicit(&emm_pl_tab[i], memory_order_acquire);

		if (!b)
			return NULL;
		if (b != (void *)1 && b->base == p)
			return b;
	}
	return NULL;
}

/* Under emm_pl_mu. Deleted entries become 1 so probe chains stay intact. */
static int emm_pl_insert(struct emm_pl_block *b)
{
	for (size_t i = emm_pl_hash(b->base), n = 0; n < EMM_PL_SLOTS; n++, i = (i + 1) & (EMM_PL_SLOTS - 1)) {
		struct emm_pl_block *e = atomic_load(&emm_pl_tab[i]);

		if (!e || e == (void *)1) {
			atomic_store_explicit(&emm_pl_tab[i], b, memory_order_release);
			return 0;
		}
	}
	return -ENOSPC;
}

static void emm_pl_remove(struct emm_pl_block *b)
{
	for (size_t i = emm_pl_hash(b->base), n = 0; n < EMM_PL_SLOTS; n++, i = (i + 1) & (EMM_PL_SLOTS - 1))
		if (atomic_load(&emm_pl_tab[i]) == b) {
			atomic_store(&emm_pl_tab[i], (struct emm_pl_block *)1);
			return;
		}
}

static void emm_pl_warn(const char *what, int rc)
{
	char line[256];
	int n = snprintf(line, sizeof(line), "ethermem-preload: %s: %s; using local memory\n",
			 what, em_strerror(rc));

	if (write(2, line, (size_t)n) < 0)
		return;
}

/* The threshold is known before the first allocation; below 256 KiB the
 * library's own buffers would start going to the pool. */
__attribute__((constructor)) static void emm_pl_init(void)
{
	const char *t = getenv("ETHERMEM_THRESHOLD");
	uint64_t v;

	if (t && em_parse_size(t, &v) == 0 && v)
		emm_pl_threshold = v < (256u << 10) ? 256u << 10 : (size_t)v;
	/* random access favours small units; blocks stay 64 KiB aligned for
	 * the free() lookup whatever the unit */
	t = getenv("ETHERMEM_FETCH_UNIT");
	if (t && em_parse_size(t, &v) == 0 && v >= 4096 && v <= EMM_PL_UNIT && !(v & (v - 1)))
		emm_pl_unit = (size_t)v;
}

/* ETHERMEM_PRELOAD_STATS=1: one line on stderr at exit, for tests and for
 * seeing that a program really used the pool. */
static unsigned long emm_pl_blocks;

__attribute__((destructor)) static void emm_pl_fini(void)
{
	struct em_map_stats st;
	char line[256];
	int n;

	if (!getenv("ETHERMEM_PRELOAD_STATS") || emm_pl_state <= 0)
		return;
	em_map_stats(NULL, &st);
	n = snprintf(line, sizeof(line),
		     "ethermem-preload: blocks %lu faults %llu fetched %llu written %llu evictions %llu resident %llu\n",
		     emm_pl_blocks, (unsigned long long)st.faults, (unsigned long long)st.bytes_fetched,
		     (unsigned long long)st.bytes_written, (unsigned long long)st.evictions,
		     (unsigned long long)st.resident);
	if (write(2, line, (size_t)n) < 0)
		return;
}

/* Under emm_pl_mu and inside. */
static int emm_pl_ready(void)
{
	int rc;

	if (emm_pl_state)
		return emm_pl_state > 0;
	emm_pl_state = -1;
	rc = em_pool_connect(&emm_pl_pool, NULL);
	if (rc) {
		emm_pl_warn("cannot connect to the pool", rc);
		return 0;
	}
	emm_pl_state = 1;
	return 1;
}

/* A new block of at least `size` bytes in the pool, or NULL. fd >= 0: its
 * contents are the file's from `off` and the block is read-only. */
static void *emm_pl_new(size_t size, int fd, off_t off)
{
	struct em_map_opts mo = { .size = sizeof(mo), .fetch_unit = emm_pl_unit };
	struct emm_pl_block *b = NULL;
	size_t msize = (size + EMM_PL_UNIT - 1) & ~(size_t)(EMM_PL_UNIT - 1);
	void *addr = NULL;
	int rc;

	if (!size || size < emm_pl_threshold || emm_pl_inside)
		return NULL;
	emm_pl_inside = 1;
	pthread_mutex_lock(&emm_pl_mu);
	if (!emm_pl_ready())
		goto out;
	b = __libc_calloc(1, sizeof(*b));
	if (!b)
		goto out;
	rc = em_region_create(emm_pl_pool, NULL, msize, NULL, &b->region);
	if (rc) {
		static int once;

		if (!once++)
			emm_pl_warn("cannot create a region", rc);
		goto fail;
	}
	if (fd >= 0) {
		/* import: the file is read once and its page cache dropped, or it
		 * would stay in local memory beside the cache */
		char *buf = __libc_malloc(4u << 20);
		size_t done = 0;

		for (rc = buf ? 0 : -ENOMEM; !rc && done < size;) {
			size_t want = size - done < (4u << 20) ? size - done : 4u << 20;
			ssize_t got = pread(fd, buf, want, off + (off_t)done);

			if (got < 0) {
				rc = -errno;
				break;
			}
			if (got == 0)
				break; /* past the end of the file: the rest stays zero */
			rc = em_write(b->region, done, buf, (size_t)got);
			posix_fadvise(fd, off + (off_t)done, got, POSIX_FADV_DONTNEED);
			done += (size_t)got;
		}
		__libc_free(buf);
		mo.flags = EM_MAP_READONLY;
		if (rc)
			goto fail_region;
	} else {
		mo.flags = EM_MAP_FRESH | EM_MAP_SCRATCH;
	}
	rc = em_map(b->region, &mo, &addr);
	if (rc) {
		static int once;

		if (!once++)
			emm_pl_warn("cannot map a region", rc);
		goto fail_region;
	}
	emm_pl_blocks++;
	b->base = addr;
	b->size = msize;
	b->asked = size;
	if (emm_pl_insert(b)) {
		em_unmap(addr);
		addr = NULL;
		goto fail_region;
	}
	goto out;
fail_region:
	em_region_close(b->region);
fail:
	__libc_free(b);
	addr = NULL;
out:
	pthread_mutex_unlock(&emm_pl_mu);
	emm_pl_inside = 0;
	return addr;
}

static void emm_pl_release(struct emm_pl_block *b)
{
	emm_pl_inside = 1;
	pthread_mutex_lock(&emm_pl_mu);
	emm_pl_remove(b);
	em_unmap(b->base);
	em_region_close(b->region);
	pthread_mutex_unlock(&emm_pl_mu);
	emm_pl_inside = 0;
	__libc_free(b);
}

/* ---- the allocator ---- */

void *malloc(size_t n)
{
	void *p = n >= emm_pl_threshold ? emm_pl_new(n, -1, 0) : NULL;

	return p ? p : __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
	size_t t;
	void *p;

	if (__builtin_mul_overflow(n, m, &t)) {
		errno = ENOMEM;
		return NULL;
	}
	p = t >= emm_pl_threshold ? emm_pl_new(t, -1, 0) : NULL;
	return p ? p : __libc_calloc(n, m);
}

void free(void *p)
{
	struct emm_pl_block *b = emm_pl_find(p);

	if (b)
		emm_pl_release(b);
	else
		__libc_free(p);
}

void *realloc(void *p, size_t n)
{
	struct emm_pl_block *b = emm_pl_find(p);
	size_t old;
	void *q;

	if (!p)
		return malloc(n);
	if (!b) {
		if (n < emm_pl_threshold)
			return __libc_realloc(p, n);
		old = malloc_usable_size(p);
	} else {
		if (n <= b->size && n) {
			/* shrinking or growing within the block: keep it (no copy) */
			b->asked = n;
			return p;
		}
		old = b->asked;
	}
	if (!n) {
		free(p);
		return NULL;
	}
	q = malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, old < n ? old : n);
	free(p);
	return q;
}

int posix_memalign(void **out, size_t align, size_t n)
{
	void *p = NULL;

	if (!align || (align & (align - 1)) || align % sizeof(void *))
		return EINVAL;
	if (n >= emm_pl_threshold && align <= EMM_PL_UNIT)
		p = emm_pl_new(n, -1, 0);
	if (!p)
		p = __libc_memalign(align, n);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

void *aligned_alloc(size_t align, size_t n)
{
	void *p = NULL;

	return posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, n) ? NULL : p;
}

void *memalign(size_t align, size_t n)
{
	return aligned_alloc(align, n);
}

size_t malloc_usable_size(void *p)
{
	static size_t (*real)(void *);
	struct emm_pl_block *b = emm_pl_find(p);

	if (b)
		return b->size;
	/* dlsym may allocate: harmless, small requests go straight to glibc */
	if (!real)
		real = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
	return real ? real(p) : 0;
}

/* ---- mmap ---- */

/* glibc's syscall() already turns a failure into -1 and errno. */
static void *emm_pl_sys_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
	return (void *)syscall(SYS_mmap, a, len, prot, flags, fd, off);
}

void *mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = NULL;

	if (!emm_pl_inside && !a && len >= emm_pl_threshold && !(flags & (MAP_FIXED | MAP_SHARED))) {
		if ((flags & MAP_ANONYMOUS) && prot == (PROT_READ | PROT_WRITE))
			p = emm_pl_new(len, -1, 0);
		else if (!(flags & MAP_ANONYMOUS) && prot == PROT_READ && fd >= 0)
			p = emm_pl_new(len, fd, off);
	}
	return p ? p : emm_pl_sys_mmap(a, len, prot, flags, fd, off);
}

void *mmap64(void *a, size_t len, int prot, int flags, int fd, off_t off)
	__attribute__((alias("mmap")));

int munmap(void *a, size_t len)
{
	struct emm_pl_block *b = emm_pl_find(a);
	long r;

	if (b && !emm_pl_inside) {
		if (len >= b->asked)
			emm_pl_release(b);
		return 0; /* a partial unmap of a block keeps it until the end */
	}
	r = syscall(SYS_munmap, a, len);
	return r ? -1 : 0;
}
