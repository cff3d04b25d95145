/*
 * mapping.c - em_map's engine side: mapping a range, writing it back
 * (sync), unmapping it, and its statistics; and the engine's state.
 *
 * Map, sync and unmap take emm_g.mu and never run in the fault handler.
 * A mapping leaves the table (emm_g.maps) before it is freed, and is freed
 * only when no fault is being served (emm_g.serving), since a fault thread
 * or another application thread in its SIGBUS handler may still hold it.
 */
#include "map/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/mman.h>

struct emm_state emm_g = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.uffd = -1,
	.budget = 1ull << 30,
};

/* The largest unit among live mappings sizes the transient FIFO (emm_g.mu). */
static void emm_max_unit_locked(void)
{
	uint64_t mu = 0;

	for (int i = 0; i < EMM_MAX_MAPS; i++) {
		struct emm_mapping *m = atomic_load(&emm_g.maps[i]);

		if (m && (1ull << m->shift) > mu)
			mu = 1ull << m->shift;
	}
	emm_lock();
	emm_g.max_unit = mu;
	emm_unlock();
}

/* Whether a slot of m's source still has an entry for one of m's units: a
 * prefetch claimed by a fault that raced with the unmap, landing or waiting
 * in staging. Whoever next holds that slot installs it, which emm_install
 * turns away for a dead mapping; until then m must stay allocated (TSan saw
 * the install write into a freed unit array). */
static bool emm_staged_for(struct emm_mapping *m)
{
	bool found = false;

	for (unsigned i = 0; i < EMM_SLOTS && !found; i++) {
		struct emm_slot *sl = &m->src->slot[i];

		emm_slot_get(sl);
		for (int e = 0; e < EMM_DEPTH; e++)
			if (sl->infl[e].u >= m->u && sl->infl[e].u < m->u + m->nunits)
				found = true;
		emm_slot_put(sl);
	}
	return found;
}

/* Frees retired mappings if no fault is being served (under emm_g.mu). Under
 * continuous faults they wait for the next quiet moment, at the next
 * map or unmap. */
static void emm_reclaim_locked(void)
{
	struct emm_mapping **pp = &emm_g.retired;

	if (atomic_load(&emm_g.serving))
		return;
	while (*pp) {
		struct emm_mapping *m = *pp;

		if (emm_staged_for(m)) {
			pp = &m->retired_next;
			continue;
		}
		*pp = m->retired_next;
		free(m->u);
		free(m);
	}
}

/* The pool behind bctx is closing: its source (channels and staging) goes
 * with it, unless a mapping still uses it. */
void emm_source_drop(const struct emm_backend_ops *ops, void *bctx)
{
	struct emm_source **pp, *s;

	pthread_mutex_lock(&emm_g.mu);
	emm_reclaim_locked();
	for (pp = &emm_g.sources; (s = *pp); pp = &s->next)
		if (s->ops == ops && s->bctx == bctx)
			break;
	/* a mapping left over a closing pool breaks the ownership rule; its
	 * channels stay rather than be freed under it */
	for (int i = 0; s && i < EMM_MAX_MAPS; i++) {
		struct emm_mapping *m = atomic_load(&emm_g.maps[i]);
		if (m && m->src == s)
			s = NULL;
	}
	for (struct emm_mapping *m = emm_g.retired; s && m; m = m->retired_next)
		if (m->src == s)
			s = NULL;
	if (s) {
		*pp = s->next;
		for (int i = 0; i < EMM_SLOTS; i++) {
			s->ops->chan_close(s->slot[i].chan);
			munmap(s->slot[i].staging, EMM_DEPTH * EMM_CELL);
		}
		free(s);
	}
	pthread_mutex_unlock(&emm_g.mu);
}

int emm_map_range(const struct emm_map_params *p, void **addr)
{
	struct emm_mapping *m;
	size_t maplen, align = p->unit < (64u << 10) ? 64u << 10 : p->unit;
	char *raw, *base;
	bool huge;
	int err, slot = -1;

	if (!p->src || !addr || !p->len || p->unit < 4096 || p->unit > (2u << 20) ||
	    (p->unit & (p->unit - 1)) || (p->roff & 4095))
		return -EINVAL;
	if (emm_g.budget < p->unit) {
		fprintf(stderr,
			"ethermem: cache of %llu bytes is smaller than the fetch unit of %llu bytes\n",
			(unsigned long long)emm_g.budget, (unsigned long long)p->unit);
		return -EINVAL;
	}
	maplen = (p->len + 4095) & ~(size_t)4095;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	/* the same count when a huge mapping rounds maplen up to 2 MiB units */
	m->nunits = (maplen + p->unit - 1) / p->unit;
	m->u = calloc(m->nunits, sizeof(*m->u));
	if (!m->u) {
		free(m);
		return -ENOMEM;
	}
	pthread_mutex_lock(&emm_g.mu);
	err = emm_init_locked();
	if (err)
		goto fail;
	for (int i = 0; i < EMM_MAX_MAPS; i++)
		if (!atomic_load(&emm_g.maps[i])) {
			slot = i;
			break;
		}
	if (slot < 0) {
		err = -EMFILE;
		goto fail;
	}
	m->serial = emm_g.serials++;
	huge = emm_huge_fits(p, &maplen);
	if (huge) {
		/* hugetlb mappings come 2 MiB-aligned from the kernel */
		base = mmap(NULL, maplen,
			    (p->flags & EM_MAP_READONLY) ? PROT_READ : PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_HUGETLB, -1, 0);
		if (base == MAP_FAILED || (err = emm_register(base, maplen, p->flags, true))) {
			if (base != MAP_FAILED)
				munmap(base, maplen);
			huge = false;
			maplen = (p->len + 4095) & ~(size_t)4095;
		}
	}
	if (!huge) {
		/* aligned to the unit (at least 64 KiB: the preload shim recognises
		 * its blocks by that) so that units never straddle a huge-page
		 * boundary */
		raw = mmap(NULL, maplen + align,
			   (p->flags & EM_MAP_READONLY) ? PROT_READ : PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (raw == MAP_FAILED) {
			err = -errno;
			goto fail;
		}
		base = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
		if (base > raw)
			munmap(raw, (size_t)(base - raw));
		if (raw + align > base)
			munmap(base + maplen, (size_t)(raw + align - base));
		err = emm_register(base, maplen, p->flags, false);
		if (err) {
			munmap(base, maplen);
			goto fail;
		}
	}
	m->huge = huge;
	m->base = base;
	m->maplen = maplen;
	m->len = p->len;
	m->roff = p->roff;
	m->rctx = p->rctx;
	m->shift = (unsigned)__builtin_ctzll(p->unit);
	m->flags = p->flags;
	m->timeout_ms = p->timeout_ms > 0 ? p->timeout_ms : 10000;
	m->src = p->src;
	snprintf(m->what, sizeof(m->what), "%s", p->what ? p->what : "?");
	for (size_t i = 0; i < m->nunits; i++)
		m->u[i].m = m;
	atomic_store_explicit(&emm_g.maps[slot], m, memory_order_release);
	if ((unsigned)slot >= atomic_load(&emm_g.nmaps))
		atomic_store_explicit(&emm_g.nmaps, (unsigned)slot + 1, memory_order_release);
	emm_max_unit_locked();
	emm_reclaim_locked();
	pthread_mutex_unlock(&emm_g.mu);
	*addr = base;
	return 0;
fail:
	pthread_mutex_unlock(&emm_g.mu);
	free(m->u);
	free(m);
	return err;
}

static struct emm_mapping *emm_lookup_exact(void *addr, int *slot)
{
	for (int i = 0; i < EMM_MAX_MAPS; i++) {
		struct emm_mapping *m = atomic_load(&emm_g.maps[i]);

		if (m && (char *)addr >= m->base && (char *)addr < m->base + m->maplen &&
		    atomic_load(&m->u[(size_t)((char *)addr - m->base) >> m->shift].st) !=
			    EMM_GONE) {
			if (slot)
				*slot = i;
			return m;
		}
	}
	return NULL;
}

/* Dirty units go in batches of 32 (emm_writeback: one write-protect per
 * run of adjacent units, one submission); settling a unit waits for the
 * cleaner's write of it, so what sync returns has reached the pool. */
static int emm_sync_mapping(struct emm_mapping *m, size_t first, size_t last)
{
	struct emm_unit *batch[32];
	int err = 0;
	unsigned n = 0;

	for (size_t i = first; i <= last && i < m->nunits; i++) {
		struct emm_unit *u = &m->u[i];

		if (emm_settle(u) == EMM_DIRTY)
			batch[n++] = u;
		if (n == 32 || (n && (i == last || i + 1 == m->nunits))) {
			int r = emm_writeback(m->src, batch, n, false);

			if (r == -EIO)
				return r;
			if (r && !err)
				err = r;
			n = 0;
		}
	}
	return err;
}

int emm_sync_range(void *addr, size_t len)
{
	struct emm_mapping *m = emm_lookup_exact(addr, NULL);
	size_t first, last;

	if (!m)
		return -EINVAL;
	if (m->flags & EM_MAP_READONLY)
		return 0;
	first = (size_t)((char *)addr - m->base) >> m->shift;
	if (!len || (char *)addr + len > m->base + m->maplen)
		len = (size_t)(m->base + m->maplen - (char *)addr);
	last = (size_t)((char *)addr + len - 1 - m->base) >> m->shift;
	return emm_sync_mapping(m, first, last);
}

static void emm_add_stats(struct em_map_stats *t, struct emm_mapping *m)
{
	t->faults += atomic_load(&m->faults);
	t->bytes_fetched += atomic_load(&m->fetched);
	t->bytes_written += atomic_load(&m->written);
	t->prefetched += atomic_load(&m->prefetched);
	t->evictions += atomic_load(&m->evictions);
	t->bytes_cleaned += atomic_load(&m->cleaned);
	t->bytes_unchanged += atomic_load(&m->unchanged);
}

/* The end of a dead mapping whose units hold nothing (under emm_g.mu): its
 * streams and counters go, it leaves emm_g.maps, and it is freed once no fault
 * can still hold it. */
void emm_forget_locked(struct emm_mapping *m, int slot)
{
	emm_lock();
	for (unsigned i = 0; i < EMM_STREAMS; i++)
		if (emm_g.streams[i].m == m)
			emm_g.streams[i] = (struct emm_stream){ 0 };
	emm_add_stats(&emm_g.gone, m);
	emm_unlock();
	atomic_store(&emm_g.maps[slot], NULL);
	emm_max_unit_locked();
	m->retired_next = emm_g.retired;
	emm_g.retired = m;
	emm_reclaim_locked();
}

/* Unmaps what a mapping still owns: a GONE unit's range is not its own. */
static void emm_munmap_kept(struct emm_mapping *m)
{
	for (size_t i = 0, j; i < m->nunits; i = j) {
		for (j = i; j < m->nunits && atomic_load(&m->u[j].st) != EMM_GONE; j++)
			;
		if (j > i)
			munmap(emm_uaddr(m, i), (size_t)(emm_uaddr(m, j - 1) - emm_uaddr(m, i)) +
							emm_ulen(m, j - 1));
		else
			j++;
	}
}

int emm_unmap_range(void *addr)
{
	struct emm_mapping *m;
	int slot, err;

	pthread_mutex_lock(&emm_g.mu);
	m = emm_lookup_exact(addr, &slot);
	if (!m || (char *)addr != m->base) {
		pthread_mutex_unlock(&emm_g.mu);
		return -EINVAL;
	}
	err = (m->flags & (EM_MAP_READONLY | EM_MAP_SCRATCH))
		      ? 0
		      : emm_sync_mapping(m, 0, m->nunits - 1);
	atomic_store(&m->dead, 1);
	for (size_t i = 0; i < m->nunits; i++)
		emm_settle(&m->u[i]);
	emm_lock();
	for (size_t i = 0; i < m->nunits; i++) {
		struct emm_unit *u = &m->u[i];
		uint32_t s = atomic_load(&u->st);

		if (s == EMM_CLEAN || s == EMM_DIRTY || s == EMM_SYNCING) {
			emm_list_del(u);
			emm_g.resident -= emm_ulen(m, i);
		}
	}
	emm_unlock();
	emm_munmap_kept(m);
	emm_forget_locked(m, slot);
	pthread_mutex_unlock(&emm_g.mu);
	return err;
}

int emm_stats(void *addr, struct em_map_stats *st)
{
	struct emm_mapping *m;

	if (!st)
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	if (!addr) {
		emm_totals(st);
		return 0;
	}
	pthread_mutex_lock(&emm_g.mu);
	m = emm_lookup_exact(addr, NULL);
	if (m)
		emm_add_stats(st, m);
	pthread_mutex_unlock(&emm_g.mu);
	emm_lock();
	st->resident = emm_g.resident;
	emm_unlock();
	st->evict_waits = atomic_load(&emm_g.evict_waits);
	return m ? 0 : -EINVAL;
}

void emm_totals(struct em_map_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&emm_g.mu);
	for (int i = 0; i < EMM_MAX_MAPS; i++) {
		struct emm_mapping *m = atomic_load(&emm_g.maps[i]);

		if (m)
			emm_add_stats(st, m);
	}
	emm_lock();
	st->faults += emm_g.gone.faults;
	st->bytes_fetched += emm_g.gone.bytes_fetched;
	st->bytes_written += emm_g.gone.bytes_written;
	st->prefetched += emm_g.gone.prefetched;
	st->evictions += emm_g.gone.evictions;
	st->bytes_cleaned += emm_g.gone.bytes_cleaned;
	st->bytes_unchanged += emm_g.gone.bytes_unchanged;
	st->resident = emm_g.resident;
	st->evict_waits = atomic_load(&emm_g.evict_waits);
	emm_unlock();
	pthread_mutex_unlock(&emm_g.mu);
}

int emm_set_trace(const char *path)
{
	char name[4096];
	int fd, n;

	pthread_mutex_lock(&emm_g.mu);
	if (emm_g.trace) {
		pthread_mutex_unlock(&emm_g.mu);
		return 0;
	}
	/* one file per process: a forked child that maps writes its own */
	n = snprintf(name, sizeof(name), "%s.%ld", path, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(name)) {
		pthread_mutex_unlock(&emm_g.mu);
		return -ENAMETOOLONG;
	}
	fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
	if (fd >= 0)
		emm_g.trace = fd + 1;
	else
		fd = -errno;
	pthread_mutex_unlock(&emm_g.mu);
	if (fd < 0) {
		fprintf(stderr, "ethermem: ETHERMEM_MAP_TRACE: %s: %s\n", name, strerror(-fd));
		return fd;
	}
	return 0;
}
