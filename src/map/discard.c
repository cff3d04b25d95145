/*
 * discard.c - unmapping part of a mapping.
 *
 * emm_discard_range is the preload shim's munmap(2) of part of a block (and
 * the shrinking half of its mremap). A unit wholly inside the range is
 * claimed (BUSY: no fault, fetch or eviction is at work on it), leaves the
 * cache without write-back, and its pages are unmapped. A unit only partly
 * inside cannot stay paged: install, write-protect, eviction and write-back
 * all work on whole units and would reach into the unmapped part, which by
 * then may belong to someone else (UFFDIO_COPY or MADV_DONTNEED on their
 * pages, a write-back reading them). It is detached instead: made present
 * and writable, taken out of the cache and unregistered from the
 * userfaultfd, so its surviving pages are ordinary memory from then on, the
 * caller's to unmap. That leaves at most two units per call outside the
 * budget. Both kinds end GONE, which nothing leaves: the engine never
 * touches such a unit again, and a fault there finds another mapping or
 * none. Whole-unit work happens under emm_g.mu, like map and unmap; faults go on
 * meanwhile on the other units (and wait on the claimed ones).
 */
#include "map/engine.h"

#include <string.h>
#include <sys/mman.h>

/* A unit wholly inside the range: afterwards BUSY and out of the cache. */
static void emm_claim(struct emm_mapping *m, size_t idx)
{
	struct emm_unit *u = &m->u[idx];

	for (;;) {
		uint32_t s = emm_settle(u);

		if (s == EMM_SYNCING) {
			/* an em_sync is reading the pages for its write-back */
			sched_yield();
			continue;
		}
		if (!atomic_compare_exchange_strong(&u->st, &s, EMM_BUSY))
			continue;
		if (s == EMM_CLEAN || s == EMM_DIRTY) {
			emm_lock();
			emm_list_del(u);
			emm_g.resident -= emm_ulen(m, idx);
			emm_unlock();
		}
		return;
	}
}

/* A unit only partly inside; keep is an address in it that stays. */
static void emm_detach(struct emm_mapping *m, size_t idx, uintptr_t keep)
{
	struct emm_unit *u = &m->u[idx];
	uint64_t ul = emm_ulen(m, idx);
	struct uffdio_range r = { (uintptr_t)emm_uaddr(m, idx), ul };
	bool lost = false;

	for (;;) {
		uint32_t s = emm_settle(u);

		/* unregistered, it must be all there and not write-protected:
		 * a stale protection would fault with no one to lift it */
		if (s == EMM_DIRTY || (s == EMM_CLEAN && !emm_writable(m))) {
			if (!atomic_compare_exchange_strong(&u->st, &s, EMM_BUSY))
				continue;
			emm_lock();
			emm_list_del(u);
			emm_g.resident -= ul;
			emm_unlock();
			break;
		}
		if (s == EMM_FAILED) {
			lost = true;
			break;
		}
		if (s == EMM_SYNCING) {
			sched_yield();
			continue;
		}
		/* EMPTY, or CLEAN and protected: a write fault makes it DIRTY */
		if (emm_serve(keep, true) < 0) {
			uint32_t z = EMM_EMPTY;

			/* no channel left: nothing may install into it any more */
			atomic_compare_exchange_strong(&u->st, &z, EMM_FAILED);
		}
	}
	if (lost) {
		/* the data cannot be had: what stays is made inaccessible
		 * rather than left to read as zeros */
		mprotect((void *)(uintptr_t)r.start, ul, PROT_NONE);
		emm_log(m->what,
			"discarded part of a unit whose fetch failed; the rest is inaccessible",
			keep, -EIO);
	}
	if (ioctl(emm_g.uffd, UFFDIO_UNREGISTER, &r))
		emm_log(m->what, "cannot detach a partly discarded unit", keep, errno);
	else
		u->detached = 1; /* a late fault there is retried (serve.c) */
	atomic_store(&u->st, EMM_GONE);
	m->ngone++;
}

int emm_discard_range(void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr, e = a + len, b;
	struct emm_mapping *m = NULL;
	size_t first, last;
	int slot = -1, rc = 0;

	if ((a & 4095) || (len & 4095) || !len || e < a)
		return -EINVAL;
	pthread_mutex_lock(&emm_g.mu);
	/* the mapping that still owns a unit in the range; only one can, as
	 * an owned unit's pages are all mapped */
	for (int i = 0; i < EMM_MAX_MAPS && !m; i++) {
		struct emm_mapping *c = atomic_load(&emm_g.maps[i]);

		if (!c || e <= (uintptr_t)c->base || a >= (uintptr_t)c->base + c->maplen)
			continue;
		for (size_t k = a > (uintptr_t)c->base ? (a - (uintptr_t)c->base) >> c->shift : 0;
		     k < c->nunits && (uintptr_t)emm_uaddr(c, k) < e; k++)
			if (atomic_load(&c->u[k].st) != EMM_GONE) {
				m = c;
				slot = i;
				break;
			}
	}
	if (!m) {
		rc = -ENOENT;
		goto out;
	}
	b = (uintptr_t)m->base;
	/* a mapping whose data must reach the pool would lose stores; a huge
	 * page cannot be split (munmap(2) refuses the same way) */
	if (a < b || e > b + m->maplen || (emm_writable(m) && !(m->flags & EM_MAP_SCRATCH)) ||
	    (m->huge && (((a - b) | len) & (EMM_HUGE - 1)))) {
		rc = -EINVAL;
		goto out;
	}
	first = (a - b) >> m->shift;
	last = (e - 1 - b) >> m->shift;
	/* edges first: detaching may fault a unit in, which may prefetch into
	 * the range; claiming then waits for those fetches */
	if (atomic_load(&m->u[first].st) != EMM_GONE && (uintptr_t)emm_uaddr(m, first) < a)
		emm_detach(m, first, (uintptr_t)emm_uaddr(m, first));
	if (atomic_load(&m->u[last].st) != EMM_GONE &&
	    (uintptr_t)emm_uaddr(m, last) + emm_ulen(m, last) > e)
		emm_detach(m, last, e);
	for (size_t k = first; k <= last; k++)
		if (atomic_load(&m->u[k].st) != EMM_GONE)
			emm_claim(m, k);
	/* before GONE, so that a fault spinning on a claimed unit retries
	 * into an unmapped page (SIGSEGV), never into its old contents */
	if (munmap(addr, len)) {
		rc = -errno;
		emm_log(m->what, "munmap of a discarded range failed", a, errno);
	}
	for (size_t k = first; k <= last; k++)
		if (atomic_load(&m->u[k].st) != EMM_GONE) {
			atomic_store(&m->u[k].st, EMM_GONE);
			m->ngone++;
		}
	if (m->ngone == m->nunits) {
		/* nothing left: the end of emm_unmap_range, less its munmap */
		atomic_store(&m->dead, 1);
		emm_forget_locked(m, slot);
		rc = 1; /* even after a failed munmap (logged): the caller must forget it */
	}
out:
	pthread_mutex_unlock(&emm_g.mu);
	return rc;
}

/* DONTNEED is "these pages read as zero from now on", which a fresh
 * mapping can give without touching the pool: a whole unit is dropped
 * without write-back and marked never written, so its next fault installs
 * zeros; the pages of a unit only partly inside are zeroed in place (a
 * write, which faults the unit in as usual). */
int emm_zero_range(void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr, e = a + len, b;
	struct emm_mapping *m = NULL;
	size_t first, last;
	int rc = 0;

	if ((a & 4095) || (len & 4095) || !len || e < a)
		return -EINVAL;
	pthread_mutex_lock(&emm_g.mu);
	for (int i = 0; i < EMM_MAX_MAPS && !m; i++) {
		struct emm_mapping *c = atomic_load(&emm_g.maps[i]);

		if (c && !atomic_load(&c->dead) && a >= (uintptr_t)c->base &&
		    e <= (uintptr_t)c->base + c->maplen)
			m = c;
	}
	if (!m) {
		rc = -ENOENT;
		goto out;
	}
	if (!emm_writable(m))
		goto out; /* a private file mapping reads the file again: the same */
	if (!(m->flags & EMM_MAP_FRESH) || m->huge) {
		rc = -EINVAL;
		goto out;
	}
	b = (uintptr_t)m->base;
	first = (a - b) >> m->shift;
	last = (e - 1 - b) >> m->shift;
	for (size_t k = first; k <= last; k++) {
		uintptr_t ua = (uintptr_t)emm_uaddr(m, k), ue = ua + emm_ulen(m, k);
		uintptr_t lo = ua > a ? ua : a, hi = ue < e ? ue : e;
		struct emm_unit *u = &m->u[k];

		if (atomic_load(&u->st) == EMM_GONE) {
			/* detached (ordinary memory) or unmapped: the system's */
			emm_madvise((void *)lo, hi - lo, MADV_DONTNEED);
			continue;
		}
		if (lo > ua || hi < ue) {
			memset((void *)lo, 0, hi - lo);
			continue;
		}
		emm_claim(m, k);
		emm_madvise((void *)ua, ue - ua, MADV_DONTNEED); /* re-arms the missing fault */
		u->written = 0;
		atomic_store(&u->st, EMM_EMPTY);
	}
out:
	pthread_mutex_unlock(&emm_g.mu);
	return rc;
}
