/*
 * store.c - the node's arena and region table (see store.h).
 *
 * Control operations (create, open, delete, close) take one mutex; they are
 * rare next to reads and writes, which never touch the store: a connection
 * reaches region memory through handles its session holds a reference on.
 * The free list is a sorted array of extents, first fit with coalescing on
 * free - O(extents) per allocation, which is fine for a table of regions that
 * changes at human or job-start rates.
 */
#include "daemon/store.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/util.h"
#include "common/wire.h"

#define PAGE 4096ull
#define HUGE (2ull << 20)

struct extent {
	uint64_t off, len;
};

struct em_store {
	pthread_mutex_t lock;
	uint8_t *base;
	uint64_t capacity, mapped, used;
	bool huge, locked;
	struct extent *free;
	size_t nfree, capfree;
	struct em_sregion *named;
	uint32_t regions, nnamed;
};

int em_store_create(struct em_store **out, uint64_t capacity, bool lock_memory)
{
	struct em_store *st;
	uint64_t mapped = (capacity + HUGE - 1) & ~(HUGE - 1);
	void *p;

	if (capacity < PAGE)
		return -EINVAL;
	st = calloc(1, sizeof(*st));
	if (!st)
		return -ENOMEM;
	pthread_mutex_init(&st->lock, NULL);
	/* Explicit huge pages only succeed when the administrator reserved
	 * enough of them (vm.nr_hugepages); otherwise fall back quietly. */
	p = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
		 -1, 0);
	if (p != MAP_FAILED) {
		st->huge = true;
	} else {
		p = mmap(NULL, mapped, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED) {
			free(st);
			return -errno;
		}
		madvise(p, mapped, MADV_HUGEPAGE);
	}
	if (lock_memory) {
		if (mlock(p, mapped) < 0) {
			int e = -errno;
			munmap(p, mapped);
			free(st);
			return e;
		}
		st->locked = true;
	}
	st->base = p;
	st->capacity = capacity & ~(PAGE - 1);
	st->mapped = mapped;
	st->capfree = 16;
	st->free = malloc(st->capfree * sizeof(*st->free));
	if (!st->free) {
		munmap(p, mapped);
		free(st);
		return -ENOMEM;
	}
	st->free[0] = (struct extent){ 0, st->capacity };
	st->nfree = 1;
	*out = st;
	return 0;
}

void em_store_destroy(struct em_store *st)
{
	struct em_sregion *r, *n;

	if (!st)
		return;
	for (r = st->named; r; r = n) {
		n = r->next;
		free(r);
	}
	munmap(st->base, st->mapped);
	free(st->free);
	pthread_mutex_destroy(&st->lock);
	free(st);
}

static int arena_alloc(struct em_store *st, uint64_t len, uint64_t *off)
{
	uint64_t align = len >= HUGE ? HUGE : PAGE;

	for (size_t i = 0; i < st->nfree; i++) {
		struct extent *e = &st->free[i];
		uint64_t start = (e->off + align - 1) & ~(align - 1);
		uint64_t end = e->off + e->len;

		if (start + len < start || start + len > end)
			continue;
		*off = start;
		if (start == e->off && start + len == end) {
			memmove(e, e + 1, (st->nfree - i - 1) * sizeof(*e));
			st->nfree--;
		} else if (start == e->off) {
			e->off += len;
			e->len -= len;
		} else if (start + len == end) {
			e->len = start - e->off;
		} else {
			/* split: the aligned block comes out of the middle */
			if (st->nfree == st->capfree) {
				struct extent *nf =
					realloc(st->free, 2 * st->capfree * sizeof(*nf));
				if (!nf)
					return -ENOMEM;
				st->free = nf;
				st->capfree *= 2;
				e = &st->free[i];
			}
			memmove(e + 2, e + 1, (st->nfree - i - 1) * sizeof(*e));
			st->nfree++;
			e[1] = (struct extent){ start + len, end - start - len };
			e->len = start - e->off;
		}
		return 0;
	}
	return -ENOSPC;
}

static int arena_free(struct em_store *st, uint64_t off, uint64_t len)
{
	size_t i = 0;

	while (i < st->nfree && st->free[i].off < off)
		i++;
	/* merge with the previous and/or next extent where they touch */
	if (i > 0 && st->free[i - 1].off + st->free[i - 1].len == off) {
		st->free[i - 1].len += len;
		if (i < st->nfree && off + len == st->free[i].off) {
			st->free[i - 1].len += st->free[i].len;
			memmove(&st->free[i], &st->free[i + 1],
				(st->nfree - i - 1) * sizeof(struct extent));
			st->nfree--;
		}
		return 0;
	}
	if (i < st->nfree && off + len == st->free[i].off) {
		st->free[i].off = off;
		st->free[i].len += len;
		return 0;
	}
	if (st->nfree == st->capfree) {
		struct extent *nf = realloc(st->free, 2 * st->capfree * sizeof(*nf));
		if (!nf)
			return -ENOMEM;
		st->free = nf;
		st->capfree *= 2;
	}
	memmove(&st->free[i + 1], &st->free[i], (st->nfree - i) * sizeof(struct extent));
	st->free[i] = (struct extent){ off, len };
	st->nfree++;
	return 0;
}

static struct em_sregion *find_named(struct em_store *st, const char *name)
{
	for (struct em_sregion *r = st->named; r; r = r->next)
		if (!strcmp(r->name, name))
			return r;
	return NULL;
}

/* A layout of a part being filled (a repair's progress) replaces only the
 * same repair's: a part being filled at the same epoch. A repairer that was
 * taken for dead and goes on must not put its older layout over the part
 * that the repair which took over made there under the same name. */
static bool relayout_ok(const struct em_sregion *r, const void *layout, uint16_t len)
{
	struct em_layout now, next;

	if (em_layout_decode(layout, len, &next) || !(next.flags & EM_LAYOUT_FILLING))
		return true;
	return !em_layout_decode(r->layout, r->layout_len, &now) &&
	       (now.flags & EM_LAYOUT_FILLING) && now.epoch == next.epoch;
}

/* A part's stored layout only moves forward, so that a client which
 * recorded a lost segment (its node id zeroed, at a newer epoch) is never
 * undone by one still sending an older layout: -ESTALE for an older epoch.
 * Two clients that lose segments at once may each store the same epoch;
 * a segment either of them found lost stays lost (the zeroed ids merge),
 * so the outcome does not depend on their order. */
static int relayout(struct em_sregion *r, const void *layout, uint16_t len)
{
	static const uint8_t none[EM_NODE_ID_LEN];
	uint8_t buf[EM_MAX_LAYOUT];
	struct em_layout have, want;
	bool merged = false;
	int n;

	if (em_layout_decode(layout, len, &want))
		return -EINVAL;
	if (!r->layout_len || em_layout_decode(r->layout, r->layout_len, &have)) {
		memcpy(r->layout, layout, len);
		r->layout_len = len;
		return 0;
	}
	if (want.epoch < have.epoch)
		return -ESTALE;
	if (want.epoch == have.epoch && !((have.flags | want.flags) & EM_LAYOUT_FILLING) &&
	    want.nseg == have.nseg)
		for (unsigned s = 0; s < want.nseg; s++)
			if (!memcmp(have.ids[s], none, EM_NODE_ID_LEN) &&
			    memcmp(want.ids[s], none, EM_NODE_ID_LEN)) {
				memset(want.ids[s], 0, EM_NODE_ID_LEN);
				merged = true;
			}
	if (!merged) {
		memcpy(r->layout, layout, len);
		r->layout_len = len;
		return 0;
	}
	n = em_layout_encode(buf, sizeof(buf), &want);
	if (n < 0)
		return n;
	memcpy(r->layout, buf, (size_t)n);
	r->layout_len = (uint16_t)n;
	return 0;
}

int em_store_create_region(struct em_store *st, const char *name, uint64_t size, unsigned flags,
			   const void *layout, uint16_t layout_len, struct em_sregion **out)
{
	struct em_sregion *r;
	uint64_t len = (size + PAGE - 1) & ~(PAGE - 1), off;
	int rc;

	if (size == 0 || len < size || layout_len > EM_MAX_LAYOUT)
		return -EINVAL;
	if (name && (!*name || strlen(name) > EM_NAME_MAX))
		return -EINVAL;
	pthread_mutex_lock(&st->lock);
	r = name ? find_named(st, name) : NULL;
	if (!r && (flags & EM_WC_RELAYOUT)) {
		pthread_mutex_unlock(&st->lock);
		return -ENOENT; /* a new layout for a region that is not here */
	}
	if (r) {
		if ((flags & EM_WC_EXCL) || r->size != size) {
			pthread_mutex_unlock(&st->lock);
			return -EEXIST;
		}
		if ((flags & EM_WC_RELAYOUT) && layout_len && !relayout_ok(r, layout, layout_len)) {
			pthread_mutex_unlock(&st->lock);
			return -ESTALE;
		}
		if ((flags & EM_WC_RELAYOUT) && layout_len &&
		    (rc = relayout(r, layout, layout_len))) {
			pthread_mutex_unlock(&st->lock);
			return rc;
		}
		r->refs++;
		pthread_mutex_unlock(&st->lock);
		*out = r;
		return 0;
	}
	if (len > st->capacity - st->used) {
		pthread_mutex_unlock(&st->lock);
		return -ENOSPC;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		pthread_mutex_unlock(&st->lock);
		return -ENOMEM;
	}
	rc = arena_alloc(st, len, &off);
	if (rc) {
		pthread_mutex_unlock(&st->lock);
		free(r);
		return rc; /* -ENOSPC here means fragmentation */
	}
	r->size = size;
	r->arena_off = off;
	r->alloc_len = len;
	r->mem = st->base + off;
	r->refs = 1;
	if (layout_len)
		memcpy(r->layout, layout, layout_len);
	r->layout_len = layout_len;
	st->used += len;
	st->regions++;
	if (name) {
		snprintf(r->name, sizeof(r->name), "%s", name);
		r->linked = true;
		r->refs++;
		r->next = st->named;
		st->named = r;
		st->nnamed++;
	}
	pthread_mutex_unlock(&st->lock);
	*out = r;
	return 0;
}

int em_store_open(struct em_store *st, const char *name, struct em_sregion **out)
{
	struct em_sregion *r;

	pthread_mutex_lock(&st->lock);
	r = find_named(st, name);
	if (r)
		r->refs++;
	pthread_mutex_unlock(&st->lock);
	if (!r)
		return -ENOENT;
	*out = r;
	return 0;
}

/* Called with the lock held when the last reference goes. */
static void region_free(struct em_store *st, struct em_sregion *r)
{
	/* Zero before reuse. Dropping the pages is cheapest; locked or hugetlb
	 * memory cannot always be dropped, so those are cleared by hand. */
	if (st->locked || st->huge || madvise(r->mem, r->alloc_len, MADV_DONTNEED) != 0)
		memset(r->mem, 0, r->alloc_len);
	if (arena_free(st, r->arena_off, r->alloc_len) == 0)
		st->used -= r->alloc_len;
	else
		em_log(EM_LOG_ERR, "free list full: %llu bytes leaked",
		       (unsigned long long)r->alloc_len);
	st->regions--;
	free(r);
}

int em_store_unlink(struct em_store *st, const char *name)
{
	struct em_sregion **pp, *r;

	pthread_mutex_lock(&st->lock);
	for (pp = &st->named; (r = *pp); pp = &r->next)
		if (!strcmp(r->name, name))
			break;
	if (!r) {
		pthread_mutex_unlock(&st->lock);
		return -ENOENT;
	}
	*pp = r->next;
	r->linked = false;
	st->nnamed--;
	if (--r->refs == 0)
		region_free(st, r);
	pthread_mutex_unlock(&st->lock);
	return 0;
}

void em_store_hold(struct em_store *st, struct em_sregion *r)
{
	pthread_mutex_lock(&st->lock);
	r->refs++;
	pthread_mutex_unlock(&st->lock);
}

void em_store_put(struct em_store *st, struct em_sregion *r)
{
	pthread_mutex_lock(&st->lock);
	if (--r->refs == 0)
		region_free(st, r);
	pthread_mutex_unlock(&st->lock);
}

void em_store_stats(struct em_store *st, struct em_store_stats *s)
{
	pthread_mutex_lock(&st->lock);
	s->capacity = st->capacity;
	s->used = st->used;
	s->regions = st->regions;
	s->named = st->nnamed;
	s->huge = st->huge;
	pthread_mutex_unlock(&st->lock);
}

int em_store_list(struct em_store *st, uint64_t first,
		  int (*cb)(void *arg, const struct em_sregion *r), void *arg)
{
	uint64_t i = 0;
	int total;

	pthread_mutex_lock(&st->lock);
	for (struct em_sregion *r = st->named; r; r = r->next, i++)
		if (i >= first && cb(arg, r))
			break;
	total = (int)st->nnamed;
	pthread_mutex_unlock(&st->lock);
	return total;
}
