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
 * allocations and mmaps go straight to the system. Any failure to reach the
 * pool falls back to local memory, once reported.
 *
 * munmap, mremap and MAP_FIXED behave as Linux does on blocks too, because
 * programs and allocators trim, shrink and move their big mappings. Each
 * block keeps the list of its page ranges not yet unmapped (all blocks are
 * on one list, under the mutex). munmap of any range unmaps the block pages
 * in it through the engine (emm_discard_range: dropped, never written back,
 * out of the cache budget) and the rest with the system call; when the last
 * unit of a block goes, its region is closed. The engine turns a unit only
 * partly unmapped into ordinary memory, which is how the pages around a cut
 * keep their data; that is at most two units per call outside the budget.
 * mremap of a block shrinks in place, grows only by moving (a new block, or
 * local memory below the threshold, then a copy; an imported file is read
 * again from the file), and without MREMAP_MAYMOVE fails with ENOMEM, which
 * Linux also answers when the pages after a mapping are taken.
 * MREMAP_FIXED and MREMAP_DONTUNMAP on a block fail with EINVAL (noted once
 * on stderr): a block cannot be placed at an address of the program's
 * choosing. A MAP_FIXED mmap or MREMAP_FIXED target over a block first
 * takes the block's pages out of the engine.
 *
 * madvise DONTNEED and FREE on block pages go through the engine (they
 * read as zeros afterwards); a program with its own allocator keeps it,
 * and that allocator's mmaps become blocks; a forked child keeps its blocks
 * as plain memory and allocates locally. Each is explained where it is
 * done.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/config.h"
#include "ethermem.h"
#include "map/emm.h"

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

#define EMM_PL_UNIT (64u << 10)
#define EMM_PL_SLOTS 8192 /* power of two */

#define EMM_PL_PAGE(n) (((n) + 4095) & ~(uintptr_t)4095)

struct emm_pl_ext {
	uintptr_t lo, hi;
};

struct emm_pl_block {
	void *base;
	size_t size;  /* bytes mapped (unit-rounded) */
	size_t asked; /* bytes the program asked for */
	em_region *region;
	struct emm_pl_block *next; /* all blocks (emm_pl_mu) */
	/* the page ranges not unmapped yet, ascending; &one until a cut */
	struct emm_pl_ext *ext, one;
	unsigned n_ext, cap_ext;
	/* an imported file, to read more of it when mremap grows the block */
	int file;
	char *path;
	dev_t dev;
	ino_t ino;
	off_t off;
};

static struct emm_pl_block *_Atomic emm_pl_tab[EMM_PL_SLOTS];
static struct emm_pl_block *emm_pl_all;
static _Atomic unsigned emm_pl_live; /* blocks on the list: munmap's fast path */
static pthread_mutex_t emm_pl_mu = PTHREAD_MUTEX_INITIALIZER;
static __thread int emm_pl_inside;
static em_pool *emm_pl_pool;
static int emm_pl_state; /* 0 not tried, 1 ready, -1 unavailable */
static size_t emm_pl_threshold = 1u << 20;
static size_t emm_pl_unit = EMM_PL_UNIT; /* ETHERMEM_FETCH_UNIT: 4K .. 64K */

/* the small-object arena (below) */
#define EMM_PL_CHUNK (64ul << 20)
#define EMM_PL_MAXCHUNKS 1024
#define EMM_PL_CLASSES 144

struct emm_pl_chunk {
	uintptr_t lo, hi;
	uint8_t *cls; /* per 64 KiB page: class + 1, 0 not a run */
};

struct emm_pl_class {
	pthread_mutex_t mu;
	void *free;
	uintptr_t cur, end; /* the run being cut */
};

static int emm_pl_small;
static struct emm_pl_chunk emm_pl_chunks[EMM_PL_MAXCHUNKS];
static _Atomic unsigned emm_pl_nchunks;
static _Atomic uintptr_t emm_pl_alo = UINTPTR_MAX, emm_pl_ahi;
static uintptr_t emm_pl_bump, emm_pl_bend; /* the chunk runs are cut from */
static pthread_mutex_t emm_pl_amu = PTHREAD_MUTEX_INITIALIZER;
static struct emm_pl_class emm_pl_cls[EMM_PL_CLASSES];
static _Atomic uint64_t emm_pl_abytes; /* bytes of chunks */

static size_t emm_pl_hash(const void *p)
{
	return ((uintptr_t)p >> 16) * 0x9e3779b97f4a7c15ull >> 51 & (EMM_PL_SLOTS - 1);
}

static struct emm_pl_block *emm_pl_find(const void *p)
{
	if (!p || ((uintptr_t)p & (EMM_PL_UNIT - 1)))
		return NULL;
	for (size_t i = emm_pl_hash(p), n = 0; n < EMM_PL_SLOTS;
	     n++, i = (i + 1) & (EMM_PL_SLOTS - 1)) {
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
	for (size_t i = emm_pl_hash(b->base), n = 0; n < EMM_PL_SLOTS;
	     n++, i = (i + 1) & (EMM_PL_SLOTS - 1)) {
		struct emm_pl_block *e = atomic_load(&emm_pl_tab[i]);

		if (!e || e == (void *)1) {
			atomic_store_explicit(&emm_pl_tab[i], b, memory_order_release);
			return 0;
		}
	}
	return -ENOSPC;
}

/* Under emm_pl_mu; a block already removed (its first page unmapped
 * before) is not found again before the end of its probe chain. */
static void emm_pl_remove(struct emm_pl_block *b)
{
	for (size_t i = emm_pl_hash(b->base), n = 0; n < EMM_PL_SLOTS;
	     n++, i = (i + 1) & (EMM_PL_SLOTS - 1)) {
		struct emm_pl_block *e = atomic_load(&emm_pl_tab[i]);

		if (!e)
			return;
		if (e == b) {
			atomic_store(&emm_pl_tab[i], (struct emm_pl_block *)1);
			return;
		}
	}
}

static void emm_pl_warn(const char *what, int rc)
{
	char line[256];
	int n = snprintf(line, sizeof(line), "ethermem-preload: %s: %s; using local memory\n", what,
			 em_strerror(rc));

	if (write(2, line, (size_t)n) < 0)
		return;
}

/* A forked child: the engine hands it every block as ordinary private
 * memory (filled before the fork), and the pool connection is the
 * parent's, so the child keeps its blocks as plain mappings and allocates
 * locally from then on. Its blocks leave the lists munmap and mremap
 * consult (they are the system's now); free() still knows them by
 * address, and returns them with munmap (emm_pl_child). */
static int emm_pl_child;

static void emm_pl_atfork_prepare(void)
{
	/* no object, run or block is half made at the fork; in the order
	 * they nest */
	for (unsigned c = 0; c < EMM_PL_CLASSES; c++)
		pthread_mutex_lock(&emm_pl_cls[c].mu);
	pthread_mutex_lock(&emm_pl_amu);
	pthread_mutex_lock(&emm_pl_mu);
}

static void emm_pl_atfork_parent(void)
{
	pthread_mutex_unlock(&emm_pl_mu);
	pthread_mutex_unlock(&emm_pl_amu);
	for (unsigned c = 0; c < EMM_PL_CLASSES; c++)
		pthread_mutex_unlock(&emm_pl_cls[c].mu);
}

/* The child keeps the arena's chunks as plain memory too, and goes on
 * allocating from what they have left; a new chunk would need the pool
 * (emm_pl_state), so past that it allocates from glibc. */
static void emm_pl_atfork_child(void)
{
	for (unsigned c = 0; c < EMM_PL_CLASSES; c++)
		pthread_mutex_init(&emm_pl_cls[c].mu, NULL);
	pthread_mutex_init(&emm_pl_amu, NULL);
	pthread_mutex_init(&emm_pl_mu, NULL);
	emm_pl_child = 1;
	emm_pl_state = -1;
	emm_pl_all = NULL;
	atomic_store(&emm_pl_live, 0);
}

/* The threshold is known before the first allocation; below 256 KiB the
 * library's own buffers would start going to the pool. */
__attribute__((constructor)) static void emm_pl_init(void)
{
	struct em_cfg_val thr, unit, small;

	/* random access favours small units; blocks stay 64 KiB aligned for
	 * the free() lookup whatever the unit (the table's range) */
	_Static_assert(EMM_PL_UNIT == 64u << 10, "ETHERMEM_FETCH_UNIT's range in the table");
	pthread_atfork(emm_pl_atfork_prepare, emm_pl_atfork_parent, emm_pl_atfork_child);
	if (em_cfg_env(EM_CFG_THRESHOLD, &thr) || em_cfg_env(EM_CFG_FETCH_UNIT, &unit)) {
		/* the log line named the value; the program runs on its own memory */
		emm_pl_state = -1;
		return;
	}
	emm_pl_threshold = (size_t)thr.num;
	emm_pl_unit = (size_t)unit.num;
	if (em_cfg_env(EM_CFG_SMALL_OBJECTS, &small) || !small.num)
		return;
	for (unsigned c = 0; c < EMM_PL_CLASSES; c++)
		pthread_mutex_init(&emm_pl_cls[c].mu, NULL);
	emm_pl_small = 1;
}

/* ETHERMEM_PRELOAD_STATS=1: one line on stderr at exit, for tests and for
 * seeing that a program really used the pool. Written to a copy of stderr
 * taken at start: coreutils (sort, cp) close stderr on their way out, before
 * destructors run. */
static unsigned long emm_pl_blocks;
static int emm_pl_statfd = 2;

__attribute__((constructor)) static void emm_pl_stat_init(void)
{
	struct em_cfg_val on;
	int fd;

	if (em_cfg_env(EM_CFG_PRELOAD_STATS, &on) || !on.num)
		return;
	fd = fcntl(2, F_DUPFD_CLOEXEC, 64);
	if (fd >= 0)
		emm_pl_statfd = fd;
}

/* the allocator the program has (below) */
static _Atomic int emm_pl_foreign = -1; /* -1 not known, 0 glibc, 1 another */

__attribute__((destructor)) static void emm_pl_fini(void)
{
	struct em_map_stats st = { .size = sizeof(st) };
	struct em_cfg_val on;
	char line[512];
	int n;

	if (em_cfg_env(EM_CFG_PRELOAD_STATS, &on) || !on.num)
		return;
	if (atomic_load(&emm_pl_foreign) == 1) {
		static const char msg[] =
			"ethermem-preload: the program has its own allocator; "
			"its mappings of at least the threshold are pool blocks\n";

		if (write(emm_pl_statfd, msg, sizeof(msg) - 1) < 0)
			return;
	}
	/* the line is printed even when the pool was never used (a program
	 * with its own allocator, or no big request): tools read it */
	if (emm_pl_state > 0)
		em_map_stats(NULL, &st);
	n = snprintf(
		line, sizeof(line),
		"ethermem-preload: blocks %lu faults %llu fetched %llu written %llu evictions %llu resident %llu",
		emm_pl_blocks, (unsigned long long)st.faults, (unsigned long long)st.bytes_fetched,
		(unsigned long long)st.bytes_written, (unsigned long long)st.evictions,
		(unsigned long long)st.resident);
	/* written back ahead of eviction, and evictions that waited for a
	 * write-back: what the cleaner saved and what it did not */
	n += snprintf(line + n, sizeof(line) - (size_t)n, " cleaned %llu evict-waits %llu",
		      (unsigned long long)st.bytes_cleaned, (unsigned long long)st.evict_waits);
	/* dirty bytes not written because they held what the pool has */
	n += snprintf(line + n, sizeof(line) - (size_t)n, " unchanged %llu",
		      (unsigned long long)st.bytes_unchanged);
	/* of the fetched bytes, those fetched ahead of a fault (streams and
	 * dense groups): what a prefetch throttle could save at most */
	n += snprintf(line + n, sizeof(line) - (size_t)n, " prefetched %llu",
		      (unsigned long long)st.prefetched);
	/* where the fault path's time goes: the servers' messages (WP faults
	 * too) and their time in them, the stores that found their unit
	 * protected, and the write-protect ioctls, each a TLB
	 * shootdown of every CPU running the process */
	{
		uint64_t served = 0, ns = 0, wp = 0, wpf = 0, wakes = 0;

		if (emm_pl_state > 0)
			emm_serve_time(&served, &ns, &wp, &wpf, &wakes);
		n += snprintf(line + n, sizeof(line) - (size_t)n,
			      " served %llu serve-ms %llu wp-ioctls %llu wp-faults %llu wakes %llu",
			      (unsigned long long)served, (unsigned long long)(ns / 1000000),
			      (unsigned long long)wp, (unsigned long long)wpf,
			      (unsigned long long)wakes);
	}
	/* the arena's pool bytes, only when asked for: tools read the rest */
	if (emm_pl_small)
		n += snprintf(line + n, sizeof(line) - (size_t)n, " small-arena %llu",
			      (unsigned long long)atomic_load(&emm_pl_abytes));
	line[n++] = '\n';
	if (write(emm_pl_statfd, line, (size_t)n) < 0)
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

/* Where an imported file can be opened again: mremap may grow the block,
 * and the program's descriptor may be closed by then. Without it (a
 * deleted file, no /proc) growing fails. */
static void emm_pl_note_file(struct emm_pl_block *b, int fd, off_t off)
{
	char link[64], path[PATH_MAX];
	struct stat st;
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0 || path[0] != '/' || fstat(fd, &st))
		return;
	b->path = __libc_malloc((size_t)n + 1);
	if (!b->path)
		return;
	memcpy(b->path, path, (size_t)n);
	b->path[n] = 0;
	b->dev = st.st_dev;
	b->ino = st.st_ino;
	b->off = off;
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
	b->one = (struct emm_pl_ext){ (uintptr_t)addr, (uintptr_t)addr + msize };
	b->ext = &b->one;
	b->n_ext = b->cap_ext = 1;
	if (emm_pl_insert(b)) {
		em_unmap(addr);
		addr = NULL;
		goto fail_region;
	}
	b->file = fd >= 0;
	if (fd >= 0)
		emm_pl_note_file(b, fd, off);
	b->next = emm_pl_all;
	emm_pl_all = b;
	atomic_fetch_add(&emm_pl_live, 1);
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

static int emm_pl_sys_munmap(uintptr_t a, size_t len)
{
	return syscall(SYS_munmap, a, len) ? -errno : 0;
}

/* Forgets a block whose engine mapping is gone: closes its region and
 * frees it. Pages it still lists are ordinary memory now (the engine
 * detached them): those the program knows of stay, the unit padding past
 * its length is unmapped. Under emm_pl_mu and inside. */
static void emm_pl_forget(struct emm_pl_block *b)
{
	uintptr_t vis = (uintptr_t)b->base + EMM_PL_PAGE(b->asked);

	for (unsigned i = 0; i < b->n_ext; i++)
		if (b->ext[i].hi > vis)
			emm_pl_sys_munmap(b->ext[i].lo > vis ? b->ext[i].lo : vis,
					  b->ext[i].hi - (b->ext[i].lo > vis ? b->ext[i].lo : vis));
	for (struct emm_pl_block **pp = &emm_pl_all; *pp; pp = &(*pp)->next)
		if (*pp == b) {
			*pp = b->next;
			break;
		}
	atomic_fetch_sub(&emm_pl_live, 1);
	emm_pl_remove(b);
	em_region_close(b->region);
	if (b->ext != &b->one)
		__libc_free(b->ext);
	__libc_free(b->path);
	__libc_free(b);
}

/* Unmaps block pages [lo, hi) through the engine, or with the system call
 * where they are only pages of units the engine detached before;
 * emm_discard_range's result (1: the engine mapping is gone). */
static int emm_pl_drop(uintptr_t lo, uintptr_t hi)
{
	int r = emm_discard_range((void *)lo, hi - lo);

	return r == -ENOENT ? emm_pl_sys_munmap(lo, hi - lo) : r;
}

/* Removes [lo, hi), inside b->ext[i], from block b: the engine drops it and
 * unmaps it. When that was the last of what the program knows of the block,
 * the rest (unit padding) goes too and the block is forgotten. Under
 * emm_pl_mu and inside; 0 or -errno. */
static int emm_pl_cut(struct emm_pl_block *b, unsigned i, uintptr_t lo, uintptr_t hi)
{
	uintptr_t vis = (uintptr_t)b->base + EMM_PL_PAGE(b->asked);
	struct emm_pl_ext *x = &b->ext[i];
	int r;

	if (x->lo < lo && hi < x->hi && b->n_ext == b->cap_ext) {
		/* a hole in the middle: one range more, made room for before
		 * anything is unmapped (munmap(2) fails the same way, ENOMEM) */
		unsigned cap = b->cap_ext * 2 + 2;
		struct emm_pl_ext *n = __libc_malloc(cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		memcpy(n, b->ext, b->n_ext * sizeof(*n));
		if (b->ext != &b->one)
			__libc_free(b->ext);
		b->ext = n;
		b->cap_ext = cap;
		x = &b->ext[i];
	}
	r = emm_pl_drop(lo, hi);
	if (r < 0)
		return r;
	if (lo == (uintptr_t)b->base)
		emm_pl_remove(b); /* the address is no longer the block's for free() */
	if (x->lo == lo && x->hi == hi) {
		memmove(x, x + 1, (b->n_ext - i - 1) * sizeof(*x));
		b->n_ext--;
	} else if (x->lo == lo) {
		x->lo = hi;
	} else if (x->hi == hi) {
		x->hi = lo;
	} else {
		memmove(x + 2, x + 1, (b->n_ext - i - 1) * sizeof(*x));
		x[1] = (struct emm_pl_ext){ hi, x->hi };
		x->hi = lo;
		b->n_ext++;
	}
	if (r == 1) {
		emm_pl_forget(b);
		return 0;
	}
	if (b->n_ext && b->ext[0].lo < vis)
		return 0;
	/* only padding is left: the engine still has a unit, or r was 1 */
	while (b->n_ext) {
		x = &b->ext[b->n_ext - 1];
		r = emm_pl_drop(x->lo, x->hi);
		b->n_ext--;
		if (r == 1)
			break;
	}
	emm_pl_forget(b);
	return 0;
}

/* Unmaps [a, e) as one munmap(2) would: block pages through the engine,
 * the rest (when `others`) with the system call. A range reaching past what
 * the program knows of a block takes the block's unit padding with it.
 * Under emm_pl_mu and inside; 0 or the first -errno. */
static int emm_pl_unmap_locked(uintptr_t a, uintptr_t e, int others)
{
	int err = 0;

	while (a < e) {
		struct emm_pl_block *nb = NULL;
		uintptr_t lo = e, hi;
		unsigned ni = 0;
		int r;

		/* the lowest block piece from a on; pieces of different blocks
		 * never overlap, and everything between them is not ours */
		for (struct emm_pl_block *b = emm_pl_all; b; b = b->next)
			for (unsigned i = 0; i < b->n_ext; i++) {
				uintptr_t l = b->ext[i].lo > a ? b->ext[i].lo : a;

				if (b->ext[i].hi > a && b->ext[i].lo < e && l < lo) {
					lo = l;
					nb = b;
					ni = i;
				}
			}
		if (others && lo > a && (r = emm_pl_sys_munmap(a, lo - a)) && !err)
			err = r;
		if (!nb)
			break;
		hi = nb->ext[ni].hi < e ? nb->ext[ni].hi : e;
		if (e >= (uintptr_t)nb->base + EMM_PL_PAGE(nb->asked))
			hi = nb->ext[ni].hi;
		r = emm_pl_cut(nb, ni, lo, hi);
		if (r && !err)
			err = r;
		a = hi;
	}
	return err;
}

static void emm_pl_release(struct emm_pl_block *b)
{
	if (emm_pl_child) {
		/* a block inherited at fork: plain memory now */
		emm_pl_remove(b);
		for (unsigned i = 0; i < b->n_ext; i++)
			emm_pl_sys_munmap(b->ext[i].lo, b->ext[i].hi - b->ext[i].lo);
		if (b->ext != &b->one)
			__libc_free(b->ext);
		__libc_free(b->path);
		__libc_free(b); /* its region handle is the parent's connection's */
		return;
	}
	int was = emm_pl_inside; /* a library thread stays inside */

	emm_pl_inside = 1;
	pthread_mutex_lock(&emm_pl_mu);
	if (b->n_ext == 1 && b->ext[0].lo == (uintptr_t)b->base &&
	    b->ext[0].hi == (uintptr_t)b->base + b->size) {
		em_unmap(b->base);
		b->n_ext = 0;
		emm_pl_forget(b);
	} else {
		/* munmap took pieces of it before (not something a program
		 * should do to malloc's memory): what is left goes */
		emm_pl_unmap_locked((uintptr_t)b->base, (uintptr_t)b->base + b->size, 0);
	}
	pthread_mutex_unlock(&emm_pl_mu);
	emm_pl_inside = was;
}

/* ---- small objects ---- */

/* With ETHERMEM_SMALL_OBJECTS=1 (`ethermem run --small-objects`),
 * allocations below the threshold come from arenas of the shim's own,
 * carved out of pool blocks, so that a heap made of many small objects
 * (a key-value store's values, a database's page cache) is bounded by the
 * cache budget too; without it they are glibc's and stay local.
 *
 * The arena is a list of chunks, each one block of EMM_PL_CHUNK bytes. A
 * chunk is cut into runs of 64 KiB (or of one object rounded up to 64 KiB);
 * a run serves one size class, and the class of every 64 KiB page of a
 * chunk is kept in local memory, which is how free(), realloc() and
 * malloc_usable_size() know an object's size. Classes step by 16 bytes up
 * to 256, then four to a doubling; powers of two are classes, so an object
 * of a power-of-two class is aligned to its size (up to 64 KiB), which is
 * how memalign is served. A freed object goes on its class's free list
 * (linked through the object) and is reused by the next allocation of that
 * class; the memory never returns to another class, it only costs pool
 * space. One mutex per class; the chunk list grows under another. The
 * first page of a chunk is never handed out, so free() cannot take an
 * object for the block itself. */

static size_t emm_pl_csize(unsigned c)
{
	unsigned j;

	if (c < 16)
		return (c + 1) * 16;
	j = c - 16;
	return ((size_t)1 << (8 + j / 4)) + (j % 4 + 1) * ((size_t)1 << (8 + j / 4)) / 4;
}

static unsigned emm_pl_class_of(size_t n)
{
	unsigned k;

	if (n <= 256)
		return n ? (unsigned)((n + 15) / 16 - 1) : 0;
	k = 63u - (unsigned)__builtin_clzll((unsigned long long)(n - 1)); /* 2^k < n <= 2^(k+1) */
	return 16 + (k - 8) * 4 +
	       (unsigned)((n - ((size_t)1 << k) + ((size_t)1 << k) / 4 - 1) /
			  (((size_t)1 << k) / 4)) -
	       1;
}

static size_t emm_pl_run_size(size_t csize)
{
	return csize <= EMM_PL_UNIT ? EMM_PL_UNIT
				    : (csize + EMM_PL_UNIT - 1) & ~(size_t)(EMM_PL_UNIT - 1);
}

/* The chunk holding p, or NULL. Chunks are published with a release
 * store of the count and never go away. */
static struct emm_pl_chunk *emm_pl_chunk_of(const void *p)
{
	uintptr_t a = (uintptr_t)p;
	unsigned n;

	if (a < atomic_load_explicit(&emm_pl_alo, memory_order_relaxed) ||
	    a >= atomic_load_explicit(&emm_pl_ahi, memory_order_relaxed))
		return NULL;
	n = atomic_load_explicit(&emm_pl_nchunks, memory_order_acquire);
	for (unsigned i = 0; i < n; i++)
		if (a >= emm_pl_chunks[i].lo && a < emm_pl_chunks[i].hi)
			return &emm_pl_chunks[i];
	return NULL;
}

/* A run of `len` bytes for class c, from the current chunk or a new one.
 * Under the class's mutex; 0 when the pool cannot give a chunk. */
static uintptr_t emm_pl_new_run(unsigned c, size_t len)
{
	uintptr_t r = 0;

	pthread_mutex_lock(&emm_pl_amu);
	if (emm_pl_bend - emm_pl_bump < len) {
		size_t sz = len + EMM_PL_UNIT > EMM_PL_CHUNK ? len + EMM_PL_UNIT : EMM_PL_CHUNK;
		unsigned n = atomic_load(&emm_pl_nchunks);
		uint8_t *cls;
		void *p;

		if (n == EMM_PL_MAXCHUNKS || sz < emm_pl_threshold)
			goto out;
		p = emm_pl_new(sz, -1, 0);
		if (!p)
			goto out;
		cls = __libc_calloc(sz / EMM_PL_UNIT, 1);
		if (!cls)
			goto out; /* the block stays, unused: a chunk is never given back */
		sz = (sz + EMM_PL_UNIT - 1) & ~(size_t)(EMM_PL_UNIT - 1);
		emm_pl_chunks[n] = (struct emm_pl_chunk){ (uintptr_t)p, (uintptr_t)p + sz, cls };
		if ((uintptr_t)p < atomic_load(&emm_pl_alo))
			atomic_store(&emm_pl_alo, (uintptr_t)p);
		if ((uintptr_t)p + sz > atomic_load(&emm_pl_ahi))
			atomic_store(&emm_pl_ahi, (uintptr_t)p + sz);
		atomic_store_explicit(&emm_pl_nchunks, n + 1, memory_order_release);
		atomic_fetch_add(&emm_pl_abytes, sz);
		emm_pl_bump = (uintptr_t)p + EMM_PL_UNIT; /* the first page stays unused */
		emm_pl_bend = (uintptr_t)p + sz;
	}
	r = emm_pl_bump;
	emm_pl_bump += len;
	{
		struct emm_pl_chunk *k = emm_pl_chunk_of((void *)r);

		for (size_t o = 0; o < len; o += EMM_PL_UNIT)
			k->cls[(r + o - k->lo) / EMM_PL_UNIT] = (uint8_t)(c + 1);
	}
out:
	pthread_mutex_unlock(&emm_pl_amu);
	return r;
}

/* Where an object of class size cs goes at or after address a of its run.
 * A fault brings one fetch unit (ETHERMEM_FETCH_UNIT), so an object that
 * straddles two units costs two faults each time it is touched cold. SQLite
 * keeps each cached page in one allocation of about 4.4 KiB (the page, then
 * its headers), class 5120: packed end to end, three in twelve of them
 * cross a 16 KiB unit edge, and a lookup that touches one page fetched 1.25
 * units on average. Where keeping every object inside one unit costs no
 * objects per run (three of 5120 bytes fit in 16 KiB, twelve in the run
 * either way), the next object starts at the next unit instead of
 * crossing; otherwise they stay packed. */
static uintptr_t emm_pl_place(size_t cs, uintptr_t a)
{
	size_t u = emm_pl_unit;

	if (cs >= u || (u / cs) * (EMM_PL_UNIT / u) < EMM_PL_UNIT / cs)
		return a;
	return (a & (u - 1)) + cs > u ? (a | (u - 1)) + 1 : a;
}

/* An object of at least n bytes from the arena, or NULL (not enabled,
 * too large, inside the library, or no pool). */
static void *emm_pl_small_alloc(size_t n)
{
	struct emm_pl_class *k;
	unsigned c;
	void *p;

	if (!emm_pl_small || n >= emm_pl_threshold || emm_pl_inside)
		return NULL;
	c = emm_pl_class_of(n);
	if (c >= EMM_PL_CLASSES)
		return NULL;
	k = &emm_pl_cls[c];
	pthread_mutex_lock(&k->mu);
	p = k->free;
	if (p) {
		k->free = *(void **)p;
	} else {
		size_t cs = emm_pl_csize(c);
		uintptr_t at = emm_pl_place(cs, k->cur);

		if (!k->cur || k->end < at + cs) {
			size_t len = emm_pl_run_size(cs);
			uintptr_t r = emm_pl_new_run(c, len);

			if (r) {
				k->cur = r;
				k->end = r + len;
				at = emm_pl_place(cs, r);
			}
		}
		if (k->cur && k->end >= at + cs) {
			p = (void *)at;
			k->cur = at + cs;
		}
	}
	pthread_mutex_unlock(&k->mu);
	return p;
}

static size_t emm_pl_small_size(const struct emm_pl_chunk *k, const void *p)
{
	return emm_pl_csize(k->cls[((uintptr_t)p - k->lo) / EMM_PL_UNIT] - 1u);
}

static void emm_pl_small_free(const struct emm_pl_chunk *k, void *p)
{
	struct emm_pl_class *c = &emm_pl_cls[k->cls[((uintptr_t)p - k->lo) / EMM_PL_UNIT] - 1u];

	pthread_mutex_lock(&c->mu);
	*(void **)p = c->free;
	c->free = p;
	pthread_mutex_unlock(&c->mu);
}

/* ---- the allocator ---- */

/* A program linked with another allocator (jemalloc, tcmalloc, mimalloc)
 * has it ahead of glibc: its small blocks must come from that allocator,
 * since the program may hand them to its non-standard entry points
 * (mallocx, malloc_usable_size of its own). Mixing glibc chunks into it
 * crashes, so the shim then forwards the program's allocator calls to the
 * next definition. That allocator gets its memory from anonymous mmaps,
 * which the shim turns into blocks like any other (see mmap), so its heap
 * is in the pool all the same. Calls made inside (the library's, and the
 * threads it starts) stay glibc's: the allocator may be holding its own
 * locks around the mmap that brought the shim into the library, and the
 * threads serving faults must never wait on them. Decided at the first
 * call, before the shim hands out anything. */
static __thread int emm_pl_detecting;
static struct {
	void *(*malloc)(size_t);
	void *(*calloc)(size_t, size_t);
	void *(*realloc)(void *, size_t);
	void (*free)(void *);
	int (*posix_memalign)(void **, size_t, size_t);
	void *(*aligned_alloc)(size_t, size_t);
	void *(*memalign)(size_t, size_t);
	size_t (*usable)(void *);
} emm_pl_next;

static int emm_pl_other_malloc(void)
{
	int f = atomic_load_explicit(&emm_pl_foreign, memory_order_acquire);

	if (f >= 0)
		return f;
	if (emm_pl_detecting)
		return 0; /* an allocation inside dlsym: glibc's, as before */
	emm_pl_detecting = 1;
	/* glibc's malloc is an alias of __libc_malloc: another address is
	 * another allocator */
	void *m = dlsym(RTLD_NEXT, "malloc");

	f = m && m != (void *)__libc_malloc;
	if (f) {
		emm_pl_next.malloc = (void *(*)(size_t))m;
		emm_pl_next.calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
		emm_pl_next.realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
		emm_pl_next.free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
		emm_pl_next.posix_memalign =
			(int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
		emm_pl_next.aligned_alloc =
			(void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
		emm_pl_next.memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
		emm_pl_next.usable = (size_t(*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
		/* an allocator without one of them gets glibc's for it: what
		 * the program would have called without the shim */
		if (!emm_pl_next.calloc || !emm_pl_next.realloc || !emm_pl_next.free)
			f = 0;
	}
	atomic_store_explicit(&emm_pl_foreign, f, memory_order_release);
	emm_pl_detecting = 0;
	return f;
}

/* Whether this call goes to the other allocator (above). */
static int emm_pl_to_next(void)
{
	return !emm_pl_inside && emm_pl_other_malloc();
}

void *malloc(size_t n)
{
	if (emm_pl_to_next())
		return emm_pl_next.malloc(n);
	void *p = n >= emm_pl_threshold ? emm_pl_new(n, -1, 0) : emm_pl_small_alloc(n);

	return p ? p : __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
	size_t t;
	void *p;

	if (emm_pl_to_next())
		return emm_pl_next.calloc(n, m);
	if (__builtin_mul_overflow(n, m, &t)) {
		errno = ENOMEM;
		return NULL;
	}
	if (t >= emm_pl_threshold) {
		p = emm_pl_new(t, -1, 0);
	} else {
		/* a reused object holds what it held */
		p = emm_pl_small_alloc(t);
		if (p)
			memset(p, 0, t);
	}
	return p ? p : __libc_calloc(n, m);
}

void free(void *p)
{
	struct emm_pl_block *b;

	if (emm_pl_to_next()) {
		emm_pl_next.free(p);
		return;
	}
	struct emm_pl_chunk *k = emm_pl_chunk_of(p);

	if (k) {
		emm_pl_small_free(k, p);
		return;
	}
	b = emm_pl_find(p);
	if (b)
		emm_pl_release(b);
	else
		__libc_free(p);
}

void *realloc(void *p, size_t n)
{
	struct emm_pl_block *b;
	size_t old;
	void *q;

	if (emm_pl_to_next())
		return emm_pl_next.realloc(p, n);
	if (!p)
		return malloc(n);
	struct emm_pl_chunk *k = emm_pl_chunk_of(p);

	b = k ? NULL : emm_pl_find(p);
	if (k) {
		old = emm_pl_small_size(k, p);
		if (n <= old && n >= old / 2 && n)
			return p; /* its class still fits */
	} else if (!b) {
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

	if (emm_pl_to_next() && emm_pl_next.posix_memalign)
		return emm_pl_next.posix_memalign(out, align, n);
	if (!align || (align & (align - 1)) || align % sizeof(void *))
		return EINVAL;
	if (n >= emm_pl_threshold && align <= EMM_PL_UNIT) {
		p = emm_pl_new(n, -1, 0);
	} else if (align <= EMM_PL_UNIT) {
		/* power-of-two classes are aligned to their size */
		size_t want = n > align ? n : align;

		if (want > 16 && align > 16)
			want = (size_t)1 << (64 - __builtin_clzll((unsigned long long)want - 1));
		p = emm_pl_small_alloc(want);
	}
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

	if (emm_pl_to_next() && emm_pl_next.aligned_alloc)
		return emm_pl_next.aligned_alloc(align, n);
	return posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, n) ? NULL : p;
}

void *memalign(size_t align, size_t n)
{
	if (emm_pl_to_next() && emm_pl_next.memalign)
		return emm_pl_next.memalign(align, n);
	return aligned_alloc(align, n);
}

size_t malloc_usable_size(void *p)
{
	static size_t (*real)(void *);
	struct emm_pl_block *b;

	if (emm_pl_to_next())
		return emm_pl_next.usable ? emm_pl_next.usable(p) : 0;
	struct emm_pl_chunk *k = emm_pl_chunk_of(p);

	if (k)
		return emm_pl_small_size(k, p);
	b = emm_pl_find(p);
	if (b)
		return b->size;
	/* glibc's own, looked up in libc itself: with another allocator
	 * loaded, RTLD_NEXT would find that one's, and a chunk here is
	 * glibc's (made inside). dlsym may allocate: harmless, small requests
	 * go straight to glibc. */
	if (!real) {
		void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);

		if (libc)
			real = (size_t(*)(void *))dlsym(libc, "malloc_usable_size");
	}
	return real ? real(p) : 0;
}

/* ---- threads the library starts ---- */

/* The library starts threads of its own from inside the shim (the engine's
 * fault servers, the pool's health and reconnect threads). Their
 * allocations must stay local like the library's other allocations: a
 * thread that serves faults, or that the pool needs to answer them, must
 * never fault on pool memory itself. So a thread started while `inside`
 * is inside for good. */
struct emm_pl_start {
	void *(*fn)(void *);
	void *arg;
};

static void *emm_pl_lib_thread(void *p)
{
	struct emm_pl_start st = *(struct emm_pl_start *)p;

	__libc_free(p);
	emm_pl_inside = 1;
	return st.fn(st.arg);
}

int pthread_create(pthread_t *t, const pthread_attr_t *at, void *(*fn)(void *), void *arg)
{
	typedef int (*create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
	static _Atomic create_fn next;
	create_fn real = atomic_load(&next);
	struct emm_pl_start *st;
	int r;

	if (!real) {
		int was = emm_pl_inside;

		emm_pl_inside = 1; /* dlsym may allocate */
		real = (create_fn)dlsym(RTLD_NEXT, "pthread_create");
		emm_pl_inside = was;
		if (!real)
			return EAGAIN;
		atomic_store(&next, real);
	}
	if (!emm_pl_inside)
		return real(t, at, fn, arg);
	st = __libc_malloc(sizeof(*st));
	if (!st)
		return EAGAIN;
	*st = (struct emm_pl_start){ fn, arg };
	r = real(t, at, emm_pl_lib_thread, st);
	if (r)
		__libc_free(st);
	return r;
}

/* ---- mmap ---- */

/* glibc's syscall() already turns a failure into -1 and errno. */
static void *emm_pl_sys_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
	return (void *)syscall(SYS_mmap, a, len, prot, flags, fd, off);
}

/* One line on stderr the first time `*once` is seen clear. */
static void emm_pl_note(_Atomic int *once, const char *msg)
{
	if (!atomic_exchange(once, 1) && write(2, msg, strlen(msg)) < 0)
		return;
}

void *mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = NULL;

	if (!emm_pl_inside && !a && len >= emm_pl_threshold &&
	    !(flags & (MAP_FIXED | MAP_SHARED))) {
		/* the program's own, or the arenas and extents of another
		 * allocator (glibc's malloc calls mmap inside libc, unseen) */
		if ((flags & MAP_ANONYMOUS) && prot == (PROT_READ | PROT_WRITE))
			p = emm_pl_new(len, -1, 0);
		else if (!(flags & MAP_ANONYMOUS) && prot == PROT_READ && fd >= 0)
			p = emm_pl_new(len, fd, off);
	}
	if (!p && !emm_pl_inside && (flags & MAP_FIXED) && !(flags & MAP_FIXED_NOREPLACE) &&
	    atomic_load(&emm_pl_live) && !((uintptr_t)a & 4095) && len &&
	    (uintptr_t)a + len > (uintptr_t)a &&
	    ((flags & MAP_ANONYMOUS) || fcntl(fd, F_GETFD) >= 0)) {
		/* replacing block pages: the engine lets go of them first (not
		 * for a call the kernel refuses before it unmaps anything, such
		 * as one with a bad descriptor), and no block can be created in
		 * the gap while the mutex is held */
		emm_pl_inside = 1;
		pthread_mutex_lock(&emm_pl_mu);
		emm_pl_unmap_locked((uintptr_t)a, EMM_PL_PAGE((uintptr_t)a + len), 0);
		p = emm_pl_sys_mmap(a, len, prot, flags, fd, off);
		pthread_mutex_unlock(&emm_pl_mu);
		emm_pl_inside = 0;
		return p;
	}
	return p ? p : emm_pl_sys_mmap(a, len, prot, flags, fd, off);
}

void *mmap64(void *a, size_t len, int prot, int flags, int fd, off_t off)
	__attribute__((alias("mmap")));

int munmap(void *a, size_t len)
{
	uintptr_t s = (uintptr_t)a, e = EMM_PL_PAGE(s + len);
	int r;

	/* bad arguments are the kernel's to refuse */
	if (emm_pl_inside || !atomic_load(&emm_pl_live) || (s & 4095) || !len || e <= s)
		return syscall(SYS_munmap, a, len) ? -1 : 0;
	emm_pl_inside = 1;
	pthread_mutex_lock(&emm_pl_mu);
	r = emm_pl_unmap_locked(s, e, 1);
	pthread_mutex_unlock(&emm_pl_mu);
	emm_pl_inside = 0;
	if (r) {
		errno = -r;
		return -1;
	}
	return 0;
}

/* ---- madvise ---- */

/* The engine keeps each block unit's pages present or absent as a whole and
 * knows which, so advice that drops pages behind its back (after which it
 * took them for present, and an access never completed) goes through it:
 * DONTNEED and FREE on block pages make them read as zeros (FREE may keep
 * the data or not; zeros is one of its answers). Huge-page hints on block
 * pages are answered and not applied: the engine installs small pages and
 * keeps THP off its blocks (emm_register), since the kernel's huge-page
 * fault path zeroes 2 MiB for every missing fault it sees there and then
 * throws it away; NumPy gives the hint on every array. Every other advice,
 * and other memory, is the system's: hints and mprotect only cut VMAs,
 * which the engine copes with. */
int madvise(void *a, size_t len, int advice)
{
	uintptr_t s = (uintptr_t)a, e = EMM_PL_PAGE(s + len);
	bool hint = advice == MADV_HUGEPAGE || advice == MADV_NOHUGEPAGE;
	int err = 0;

	if (emm_pl_inside || !atomic_load(&emm_pl_live) ||
	    (advice != MADV_DONTNEED && advice != MADV_FREE && !hint) || (s & 4095) || e < s)
		return syscall(SYS_madvise, a, len, advice) ? -1 : 0;
	emm_pl_inside = 1;
	pthread_mutex_lock(&emm_pl_mu);
	while (s < e && !err) {
		struct emm_pl_block *nb = NULL;
		uintptr_t lo = e, hi;
		unsigned ni = 0;

		/* the lowest block piece from s on, as emm_pl_unmap_locked */
		for (struct emm_pl_block *b = emm_pl_all; b; b = b->next)
			for (unsigned i = 0; i < b->n_ext; i++) {
				uintptr_t l = b->ext[i].lo > s ? b->ext[i].lo : s;

				if (b->ext[i].hi > s && b->ext[i].lo < e && l < lo) {
					lo = l;
					nb = b;
					ni = i;
				}
			}
		if (lo > s && syscall(SYS_madvise, s, lo - s, advice))
			err = errno;
		if (!nb || err)
			break;
		hi = nb->ext[ni].hi < e ? nb->ext[ni].hi : e;
		if (hint) {
			s = hi;
			continue;
		}
		int r = emm_zero_range((void *)lo, hi - lo);

		/* not the engine's (a detached piece): the system's */
		if (r == -ENOENT && syscall(SYS_madvise, lo, hi - lo, advice))
			err = errno;
		else if (r && r != -ENOENT)
			err = -r;
		s = hi;
	}
	pthread_mutex_unlock(&emm_pl_mu);
	emm_pl_inside = 0;
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

/* ---- mremap ---- */

static void *emm_pl_sys_mremap(void *old, size_t os, size_t ns, int flags, void *na)
{
	return (void *)syscall(SYS_mremap, old, os, ns, flags, na);
}

/* The block whose pages hold all of [a, e), with ext[*ix] the range that
 * does; NULL, and *part set when the range holds block pages only in part
 * (more than one mapping to Linux: EFAULT). Under emm_pl_mu. */
static struct emm_pl_block *emm_pl_holding(uintptr_t a, uintptr_t e, unsigned *ix, int *part)
{
	*part = 0;
	for (struct emm_pl_block *b = emm_pl_all; b; b = b->next)
		for (unsigned i = 0; i < b->n_ext; i++) {
			if (b->ext[i].hi <= a || b->ext[i].lo >= e)
				continue;
			if (b->ext[i].lo <= a && e <= b->ext[i].hi) {
				*ix = i;
				return b;
			}
			*part = 1;
		}
	return NULL;
}

/* A new mapping of ns bytes with the contents of the block pages [old,
 * old+os), for mremap with MREMAP_MAYMOVE; the source stays. path: NULL for
 * anonymous memory, else the imported file's ("" if unknown). Called
 * outside the mutex with what was read of the block under it: the copy
 * faults in pool memory, and the block may be gone by the time it ends. */
static void *emm_pl_grow(void *old, size_t os, size_t ns, const char *path, dev_t dev, ino_t ino,
			 off_t foff)
{
	static _Atomic int once;
	struct stat st;
	void *p = NULL;
	int fd;

	if (!path) {
		/* anonymous: zeros past the copy, as Linux gives */
		if (ns >= emm_pl_threshold)
			p = emm_pl_new(ns, -1, 0);
		if (!p)
			p = emm_pl_sys_mmap(NULL, ns, PROT_READ | PROT_WRITE,
					    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p != MAP_FAILED)
			memcpy(p, old, os);
		return p;
	}
	/* an imported file: Linux would map more of the file, so it is read
	 * again, from where this piece of the block starts */
	fd = path[0] ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	if (fd < 0 || fstat(fd, &st) || st.st_dev != dev || st.st_ino != ino) {
		emm_pl_note(&once,
			    "ethermem-preload: mremap cannot grow a mapping of a file that is gone "
			    "(ENOMEM)\n");
		if (fd >= 0)
			close(fd);
		errno = ENOMEM;
		return MAP_FAILED;
	}
	if (ns >= emm_pl_threshold)
		p = emm_pl_new(ns, fd, foff);
	if (!p)
		p = emm_pl_sys_mmap(NULL, ns, PROT_READ, MAP_PRIVATE, fd, foff);
	close(fd);
	return p;
}

void *mremap(void *old, size_t old_size, size_t new_size, int flags, ...)
{
	static _Atomic int once;
	uintptr_t o = (uintptr_t)old, ol = EMM_PL_PAGE(old_size), nl = EMM_PL_PAGE(new_size);
	struct emm_pl_block *b;
	char path[PATH_MAX] = "";
	dev_t dev = 0;
	ino_t ino = 0;
	off_t foff = 0;
	void *na = NULL, *p;
	unsigned ix;
	int part, file, err = 0;

	if (flags & MREMAP_FIXED) {
		va_list ap;

		va_start(ap, flags);
		na = va_arg(ap, void *);
		va_end(ap);
	}
	/* what the kernel refuses before it looks at the mappings, it refuses
	 * here too, blocks or not */
	if (emm_pl_inside || !atomic_load(&emm_pl_live) || (o & 4095) || !nl || ol < old_size ||
	    nl < new_size || (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP)) ||
	    ((flags & (MREMAP_FIXED | MREMAP_DONTUNMAP)) && !(flags & MREMAP_MAYMOVE)))
		return emm_pl_sys_mremap(old, old_size, new_size, flags, na);
	emm_pl_inside = 1;
	pthread_mutex_lock(&emm_pl_mu);
	b = emm_pl_holding(o, o + (ol ? ol : 1), &ix, &part);
	if (!b && !part) {
		/* not a block: the system's, but a fixed target over block
		 * pages is taken from the engine first, as for MAP_FIXED */
		if ((flags & MREMAP_FIXED) && !((uintptr_t)na & 4095) &&
		    (uintptr_t)na + nl > (uintptr_t)na &&
		    ((uintptr_t)na + nl <= o || o + ol <= (uintptr_t)na))
			emm_pl_unmap_locked((uintptr_t)na, (uintptr_t)na + nl, 0);
		p = emm_pl_sys_mremap(old, old_size, new_size, flags, na);
		err = errno;
		pthread_mutex_unlock(&emm_pl_mu);
		emm_pl_inside = 0;
		errno = err;
		return p;
	}
	p = MAP_FAILED;
	if (part) {
		err = EFAULT;
	} else if (!ol) {
		err = EINVAL; /* old_size 0 duplicates only shared mappings */
	} else if (flags & (MREMAP_FIXED | MREMAP_DONTUNMAP)) {
		emm_pl_note(&once,
			    "ethermem-preload: MREMAP_FIXED and MREMAP_DONTUNMAP are not supported "
			    "on pool memory (EINVAL)\n");
		err = EINVAL;
	} else if (nl <= ol) {
		/* shrinking, or nothing to do: in place */
		if (nl < ol)
			err = -emm_pl_unmap_locked(o + nl, o + ol, 0);
		p = err ? MAP_FAILED : old;
	} else if (!(flags & MREMAP_MAYMOVE)) {
		/* growing in place would need the block's unit array to grow
		 * and its address range to stay free: never promised, and Linux
		 * too answers ENOMEM when what follows is taken */
		err = ENOMEM;
	} else {
		file = b->file;
		if (b->path && strlen(b->path) < sizeof(path))
			strcpy(path, b->path);
		dev = b->dev;
		ino = b->ino;
		foff = b->off + (off_t)(o - (uintptr_t)b->base);
		pthread_mutex_unlock(&emm_pl_mu);
		emm_pl_inside = 0;
		p = emm_pl_grow(old, ol, nl, file ? path : NULL, dev, ino, foff);
		if (p == MAP_FAILED)
			return p;
		emm_pl_inside = 1;
		pthread_mutex_lock(&emm_pl_mu);
		/* the source goes as munmap would take it, unless another
		 * thread's munmap was quicker (then the move is undone) */
		if (emm_pl_holding(o, o + ol, &ix, &part)) {
			emm_pl_unmap_locked(o, o + ol, 0);
		} else {
			pthread_mutex_unlock(&emm_pl_mu);
			emm_pl_inside = 0;
			munmap(p, nl);
			errno = EFAULT;
			return MAP_FAILED;
		}
	}
	pthread_mutex_unlock(&emm_pl_mu);
	emm_pl_inside = 0;
	if (err)
		errno = err;
	return p;
}
