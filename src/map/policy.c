/*
 * policy.c - the cache budget and what to evict: a protected set P and a
 * transient FIFO T whose share of the budget adapts to what comes back.
 *
 * userfaultfd shows misses, never hits, so recency of use is not observable;
 * what is observable is each unit's fetch history: every unit remembers when
 * it was evicted (the eviction clock, bytes evicted ever) and from which
 * list, which is a ghost history as long as the mappings themselves. A
 * fetched unit streams through T; it joins P while P has room, or when it
 * is fetched again soon enough after its eviction that a larger list would
 * have kept it.
 *
 * How large T is decides between the two patterns that real programs mix.
 * A cyclic sweep over W > C wants T small and P fixed: P stays, each pass
 * fetches W - |P|, about W - C, where LRU would refetch all of W. A program
 * that reuses a set smaller than C but larger than T (a GEMM walking a
 * matrix in blocks, NumPy temporaries, threads taking turns) wants T large
 * enough to hold it, or every block is fetched again on each visit. So T's
 * target adapts the way ARC's does: a unit evicted from T and fetched again
 * within budget - |T| evicted bytes (a T that large would have kept it)
 * grows T's target by the unit; one evicted from P and fetched again within
 * budget - |P| shrinks it. A sweep over W = 2C comes back after about C
 * evicted bytes, beyond T's ghost window, so it never grows T and the
 * sweep's scan resistance stays; a reused block comes back well inside it.
 * T's target never drops below tmin (what prefetch keeps in flight).
 *
 * P must not go stale when the working set moves, so it also ages: for
 * every 64 bytes streamed through T one byte of P's oldest units is
 * dropped, and the room goes to whatever is fetched next.
 * Clean units are dropped with MADV_DONTNEED (which re-arms the MISSING
 * fault); dirty ones are written back first.
 */
#include "map/engine.h"

#include <sys/mman.h>
#include <sys/uio.h>

void emm_list_del(struct emm_unit *u)
{
	struct emm_list *l = u->list == EMM_LIST_P ? &emm_g.P : &emm_g.T;

	if (u->list == EMM_LIST_NONE)
		return;
	if (u->prev)
		u->prev->next = u->next;
	else
		l->head = u->next;
	if (u->next)
		u->next->prev = u->prev;
	else
		l->tail = u->prev;
	l->bytes -= emm_ulen(u->m, (size_t)(u - u->m->u));
	u->prev = u->next = NULL;
	u->list = EMM_LIST_NONE;
}

void emm_list_add(struct emm_unit *u, int which)
{
	struct emm_list *l = which == EMM_LIST_P ? &emm_g.P : &emm_g.T;

	u->prev = l->tail;
	u->next = NULL;
	if (l->tail)
		l->tail->next = u;
	else
		l->head = u;
	l->tail = u;
	l->bytes += emm_ulen(u->m, (size_t)(u - u->m->u));
	u->list = (uint8_t)which;
}

void emm_list_add_head(struct emm_unit *u, int which)
{
	struct emm_list *l = which == EMM_LIST_P ? &emm_g.P : &emm_g.T;

	u->prev = NULL;
	u->next = l->head;
	if (l->head)
		l->head->prev = u;
	else
		l->tail = u;
	l->head = u;
	l->bytes += emm_ulen(u->m, (size_t)(u - u->m->u));
	u->list = (uint8_t)which;
}

/* Streams confirmed and fed recently: each keeps a window in flight. */
static unsigned emm_active_streams(void)
{
	unsigned n = 0;

	for (unsigned i = 0; i < EMM_STREAMS; i++)
		if (emm_g.streams[i].m && emm_g.streams[i].hits >= 2 &&
		    emm_g.stream_tick - emm_g.streams[i].used < 16)
			n++;
	return n ? n : 1;
}

/* Per stream; all windows together stay within 1/64 of the budget. */
uint64_t emm_ahead_bytes(void)
{
	uint64_t a = emm_g.budget / 64 / emm_active_streams();

	return a < EMM_AHEAD_BYTES ? a : EMM_AHEAD_BYTES;
}

/* The transient FIFO's floor: a fraction of the budget, and never less than
 * what prefetch keeps in flight, or prefetched units would be evicted before
 * they are used. */
uint64_t emm_tmin(void)
{
	unsigned act = emm_active_streams();
	uint64_t t = emm_g.budget / 32, win = emm_g.budget / 64, w;

	/* the windows share 1/64 of the budget, but each runs at least two
	 * units ahead; the unit being read fits beside each, and the FIFO gets
	 * twice that as slack. Extra streams add only units, so a stream that
	 * ends and another that starts barely move the split between P and T. */
	if (win < act * 2 * emm_g.max_unit)
		win = act * 2 * emm_g.max_unit;
	w = 2 * (win + act * emm_g.max_unit);
	/* and a floor of units: with faults served on a thread, a unit is
	 * installed a while before its thread runs again and touches it */
	if (w < 12 * emm_g.max_unit)
		w = 12 * emm_g.max_unit;

	if (t < w)
		t = w;
	return t > emm_g.budget / 2 ? emm_g.budget / 2 : t;
}

/* T's share of the budget now: the adaptive target, never under tmin
 * and always leaving P a unit. */
static uint64_t emm_tshare(void)
{
	uint64_t t = emm_tmin(),
		 top = emm_g.budget > emm_g.max_unit ? emm_g.budget - emm_g.max_unit : 0;

	if (emm_g.t_target > t)
		t = emm_g.t_target;
	return t < top ? t : top > emm_tmin() ? top : emm_tmin();
}

/* Where an installed unit goes, and what its return says about T's share:
 * see the file comment. */
void emm_policy_insert(struct emm_unit *u)
{
	uint64_t len = emm_ulen(u->m, (size_t)(u - u->m->u));
	uint64_t d = emm_g.evict_clock - u->evicted_at, share = emm_tshare();
	bool room = emm_g.P.bytes + len + share <= emm_g.budget, back = false;

	/* in only for a fork's child (the budget is lifted): the parent's
	 * next evictions drop it first, clean, and its coming back says
	 * nothing of what a larger list would have kept */
	if (atomic_load_explicit(&u->forkfill, memory_order_relaxed)) {
		emm_list_add_head(u, EMM_LIST_T);
		return;
	}
	if (u->evicted_at && u->evlist == EMM_LIST_T && d + emm_g.T.bytes < emm_g.budget) {
		/* a larger T would have kept it */
		emm_g.t_target = share + len;
		back = true;
	} else if (u->evicted_at && u->evlist == EMM_LIST_P && d + emm_g.P.bytes < emm_g.budget) {
		/* a larger P would have kept it */
		emm_g.t_target = share > len ? share - len : 0;
		back = true;
	}
	emm_list_add(u, room || back ? EMM_LIST_P : EMM_LIST_T);
}

/* Drops the pages of n evicted units (MADV_DONTNEED re-arms their MISSING
 * faults). One process_madvise on our own pidfd drops them all, and the
 * kernel flushes the TLBs of the process's other CPUs once for the batch
 * instead of once per unit: with eight threads faulting, those flushes
 * took half the samples of a profile. A kernel that refuses it (before
 * 5.10, or without MADV_DONTNEED for process_madvise) gets one madvise
 * per unit. A forked child has no pidfd until its engine starts again. */
static void emm_drop(const struct iovec *iov, unsigned n)
{
	size_t total = 0;

	for (unsigned i = 0; i < n; i++)
		total += iov[i].iov_len;
	if (n > 1 && emm_g.pidfd &&
	    syscall(SYS_process_madvise, emm_g.pidfd - 1, iov, (size_t)n, MADV_DONTNEED, 0) ==
		    (long)total)
		return;
	/* a short or failed batch: dropping a page twice is harmless */
	for (unsigned i = 0; i < n; i++)
		emm_madvise(iov[i].iov_base, iov[i].iov_len, MADV_DONTNEED);
}

/* A unit just claimed (BUSY) whose pages a write-back still reads goes back
 * to its state s: true then. Re-dirtied by a store while the cleaner wrote
 * it, it must keep its pages until that write is done. */
static bool emm_wb_release(struct emm_unit *u, uint32_t s)
{
	if (!atomic_load(&u->wb))
		return false;
	atomic_store(&u->st, s);
	return true;
}

/* Makes room for `need` more bytes: picks victims under the lock, then
 * writes back the dirty ones and drops them all outside it. */
int emm_reserve(struct emm_slot *sl, uint64_t need)
{
	for (int round = 0; round < 64; round++) {
		struct emm_unit *v[32];
		bool dirty[32];
		unsigned nv = 0, tries = 0;

		emm_lock();
		if (round == 0)
			emm_g.resident += need;
		/* once over budget, evict down a little below it (at most 8
		 * units of at least EMM_STREAM_BYTES, 1/64 of the budget): the
		 * victims then go in one write-back batch and one drop, and the
		 * next few faults find room without evicting. Counted in bytes
		 * when units are small, or 4 KiB units would evict (and wait for
		 * write-back) four times as often for the same bytes */
		uint64_t big = emm_g.max_unit > EMM_STREAM_BYTES ? emm_g.max_unit
								 : EMM_STREAM_BYTES,
			 slack = emm_g.budget / 64 < 8 * big ? emm_g.budget / 64 : 8 * big,
			 low = emm_g.resident > emm_g.budget ? emm_g.budget - slack : emm_g.budget;

		while (emm_g.resident > low && nv < 32 && tries++ < 256) {
			struct emm_list *l;
			struct emm_unit *u;
			uint32_t s;

			/* P is held to budget - T's share (promotions may push it
			 * over); everything else streams through T */
			/* hysteresis: P joins below budget - share but is cut only
			 * tmin/2 above that, so the split does not follow every
			 * stream that starts or ends (tmin has that slack built in) */
			if (emm_g.P.head &&
			    emm_g.P.bytes + emm_tshare() > emm_g.budget + emm_tmin() / 2)
				l = &emm_g.P;
			else if (emm_g.T.head)
				l = &emm_g.T;
			else
				break; /* T's share is all in flight: run over briefly
					* rather than break up the protected set */
			/* a unit the cleaner (or em_sync) is writing back keeps its
			 * place: it is clean, or dirty again, when that is done */
			for (u = l->head;
			     u && (atomic_load(&u->st) == EMM_SYNCING || atomic_load(&u->wb));
			     u = u->next)
				;
			if (!u)
				u = l->head;
			s = atomic_load(&u->st);
			if ((s != EMM_CLEAN && s != EMM_DIRTY) ||
			    !atomic_compare_exchange_strong(&u->st, &s, EMM_BUSY) ||
			    emm_wb_release(u, s)) {
				/* busy with a protection change: look at it later */
				emm_list_del(u);
				emm_list_add(u, l == &emm_g.P ? EMM_LIST_P : EMM_LIST_T);
				continue;
			}
			uint64_t ul = emm_ulen(u->m, (size_t)(u - u->m->u));

			if (l == &emm_g.T) {
				/* P ages by 1/64 of what streams through T */
				emm_g.age_credit += ul / 64;
				if (emm_g.P.head &&
				    emm_g.age_credit >=
					    emm_ulen(emm_g.P.head->m,
						     (size_t)(emm_g.P.head - emm_g.P.head->m->u)) &&
				    nv + 1 < 32) {
					struct emm_unit *p = emm_g.P.head;
					uint32_t ps = atomic_load(&p->st);

					if ((ps == EMM_CLEAN || ps == EMM_DIRTY) &&
					    atomic_compare_exchange_strong(&p->st, &ps, EMM_BUSY) &&
					    !emm_wb_release(p, ps)) {
						uint64_t pl = emm_ulen(p->m, (size_t)(p - p->m->u));

						emm_g.age_credit -= pl;
						emm_list_del(p);
						emm_g.resident -= pl;
						emm_g.evict_clock += pl;
						p->evicted_at = emm_g.evict_clock;
						p->evlist = EMM_LIST_P;
						dirty[nv] = ps == EMM_DIRTY;
						v[nv++] = p;
					}
				}
			}
			u->evlist = l == &emm_g.P ? EMM_LIST_P : EMM_LIST_T;
			emm_list_del(u);
			emm_g.resident -= ul;
			emm_g.evict_clock += ul;
			u->evicted_at = emm_g.evict_clock;
			dirty[nv] = s == EMM_DIRTY;
			v[nv++] = u;
		}
		bool more = emm_g.resident > emm_g.budget && (emm_g.P.head || emm_g.T.head);
		unsigned nwb = 0;

		for (unsigned i = 0; i < nv; i++)
			nwb += dirty[i];
		bool kick = emm_g.clean_started && emm_clean_due(nwb > 0);
		emm_unlock();
		if (kick)
			emm_clean_kick();
		if (!nv)
			return 0;

		struct emm_unit *wb[32];
		int res[32], vres[32] = { 0 };
		unsigned at[32];

		nwb = 0;
		for (unsigned i = 0; i < nv; i++)
			if (dirty[i])
				wb[nwb++] = v[i];
		if (nwb) {
			unsigned nw = 0;

			emm_wp_units(wb, nwb, 1);
			/* protected now: one that holds what the pool has is
			 * dropped as a clean one */
			for (unsigned i = 0; i < nv; i++)
				if (dirty[i] && !emm_unchanged(v[i])) {
					at[nw] = i;
					wb[nw++] = v[i];
				}
			nwb = nw;
		}
		if (nwb) {
			/* this fault waits for the write: what the cleaner is for */
			atomic_fetch_add_explicit(&emm_g.evict_waits, 1, memory_order_relaxed);
			emm_write_units(sl, wb, nwb, res);
			for (unsigned i = 0; i < nwb; i++)
				vres[at[i]] = res[i];
		}
		struct iovec drop[32];
		unsigned nd = 0;

		for (unsigned i = 0; i < nv; i++) {
			struct emm_unit *u = v[i];
			struct emm_mapping *m = u->m;
			size_t idx = (size_t)(u - m->u);

			if (vres[i]) {
				/* never drop data the pool does not have: keep it dirty */
				if (vres[i] != -EAGAIN) /* -EAGAIN: no channel entry free now */
					emm_log(m->what, "write-back failed, unit kept",
						(uintptr_t)emm_uaddr(m, idx), vres[i]);
				/* a failed write may have left part of it */
				atomic_store_explicit(&u->dvalid, EMM_DIG_NONE,
						      memory_order_relaxed);
				emm_wp(m, idx, 0);
				emm_lock();
				emm_g.resident += emm_ulen(m, idx);
				emm_list_add(u, EMM_LIST_P);
				emm_unlock();
				atomic_store(&u->st, EMM_DIRTY);
				continue;
			}
			drop[nd++] = (struct iovec){ emm_uaddr(m, idx), emm_ulen(m, idx) };
			v[nd - 1] = u; /* i >= nd - 1: v[i] is read before */
		}
		emm_drop(drop, nd);
		for (unsigned i = 0; i < nd; i++) {
			emm_probe_evicted(v[i]);
			atomic_fetch_add(&v[i]->m->evictions, 1);
			atomic_store(&v[i]->st, EMM_EMPTY);
		}
		if (!more)
			return 0;
	}
	return 0;
}

/* The cleaner's view of the eviction end (see engine.h). It follows the
 * order emm_reserve takes victims in: T from its head, and P from its head
 * as far as P is over its share, or as far as aging will take it. */
unsigned emm_policy_upcoming(struct emm_unit **v, unsigned max, uint64_t window)
{
	bool p_over = emm_g.P.bytes + emm_tshare() > emm_g.budget + emm_tmin() / 2;
	struct emm_list *lists[2] = { &emm_g.T, &emm_g.P };
	uint64_t reach[2] = { window, p_over ? window : window / 64 };
	unsigned n = 0;

	for (int li = 0; li < 2; li++) {
		uint64_t seen = 0;

		for (struct emm_unit *u = lists[li]->head; u && seen < reach[li] && n < max;
		     u = u->next) {
			seen += emm_ulen(u->m, (size_t)(u - u->m->u));
			if (atomic_load(&u->st) == EMM_DIRTY)
				v[n++] = u;
		}
	}
	return n;
}

int emm_set_cache(uint64_t bytes)
{
	if (bytes < 4096)
		return -EINVAL;
	emm_lock();
	emm_g.budget = bytes;
	emm_unlock();
	return 0;
}

uint64_t emm_cache(void)
{
	return emm_g.budget;
}

void emm_policy_info(uint64_t *p_bytes, uint64_t *t_bytes, uint64_t *resident)
{
	emm_lock();
	*p_bytes = emm_g.P.bytes;
	*t_bytes = emm_g.T.bytes;
	*resident = emm_g.resident;
	emm_unlock();
}
