/*
 * policy.c - the cache budget and what to evict: a protected set P and a
 * transient FIFO T.
 *
 * userfaultfd shows misses, never hits, so recency of use is not observable;
 * what is observable is each unit's fetch history. The cache is split into
 * a protected set P (the stable resident part) and a small transient FIFO T
 * (about 1/32 of the budget, at least the prefetch window). A fetched unit
 * joins P only while P has room, or when it comes back so soon after its
 * eviction (eviction distance under |T|/2) that a slightly larger T would
 * have kept it; otherwise it streams through T. Under a cyclic sweep over
 * W > C this keeps P fixed and fetches W - |P| per pass, about W - C, where
 * LRU would refetch all of W. P must not go stale when the working set
 * moves, so it ages: for every 64 bytes streamed through T one byte of P's
 * oldest units is dropped, and the room goes to whatever is fetched next.
 * Clean units are dropped with MADV_DONTNEED (which re-arms the MISSING
 * fault); dirty ones are written back first.
 */
#include "map/engine.h"

#include <sys/mman.h>

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

/* Where an installed unit goes: see the file comment. */
void emm_policy_insert(struct emm_unit *u)
{
	uint64_t len = emm_ulen(u->m, (size_t)(u - u->m->u));
	bool room = emm_g.P.bytes + len + emm_tmin() <= emm_g.budget;
	bool soon = u->evicted_at && emm_g.evict_clock - u->evicted_at < emm_g.T.bytes / 2;

	emm_list_add(u, room || soon ? EMM_LIST_P : EMM_LIST_T);
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
		while (emm_g.resident > emm_g.budget && nv < 32 && tries++ < 256) {
			struct emm_list *l;
			struct emm_unit *u;
			uint32_t s;

			/* P is held to budget - tmin (promotions may push it over);
			 * everything else streams through T */
			/* hysteresis: P joins below budget - tmin but is cut only
			 * above budget - tmin/2, so the split does not follow every
			 * stream that starts or ends (tmin has that slack built in) */
			if (emm_g.P.head && emm_g.P.bytes + emm_tmin() / 2 > emm_g.budget)
				l = &emm_g.P;
			else if (emm_g.T.head)
				l = &emm_g.T;
			else
				break; /* T's share is all in flight: run over briefly
					* rather than break up the protected set */
			u = l->head;
			s = atomic_load(&u->st);
			if ((s != EMM_CLEAN && s != EMM_DIRTY) ||
			    !atomic_compare_exchange_strong(&u->st, &s, EMM_BUSY)) {
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
					    atomic_compare_exchange_strong(&p->st, &ps, EMM_BUSY)) {
						uint64_t pl = emm_ulen(p->m, (size_t)(p - p->m->u));

						emm_g.age_credit -= pl;
						emm_list_del(p);
						emm_g.resident -= pl;
						emm_g.evict_clock += pl;
						p->evicted_at = emm_g.evict_clock;
						dirty[nv] = ps == EMM_DIRTY;
						v[nv++] = p;
					}
				}
			}
			emm_list_del(u);
			emm_g.resident -= ul;
			emm_g.evict_clock += ul;
			u->evicted_at = emm_g.evict_clock;
			dirty[nv] = s == EMM_DIRTY;
			v[nv++] = u;
		}
		bool more = emm_g.resident > emm_g.budget && (emm_g.P.head || emm_g.T.head);
		emm_unlock();
		if (!nv)
			return 0;

		struct emm_unit *wb[32];
		int res[32];
		unsigned nwb = 0;

		for (unsigned i = 0; i < nv; i++)
			if (dirty[i]) {
				emm_wp(v[i]->m, (size_t)(v[i] - v[i]->m->u), 1);
				wb[nwb++] = v[i];
			}
		if (nwb)
			emm_write_units(sl, wb, nwb, res);
		for (unsigned i = 0, j = 0; i < nv; i++) {
			struct emm_unit *u = v[i];
			struct emm_mapping *m = u->m;
			size_t idx = (size_t)(u - m->u);

			if (dirty[i] && res[j++]) {
				/* never drop data the pool does not have: keep it dirty */
				if (res[j - 1] != -EAGAIN) /* -EAGAIN: no channel entry free now */
					emm_log(m->what, "write-back failed, unit kept",
						(uintptr_t)emm_uaddr(m, idx), res[j - 1]);
				emm_wp(m, idx, 0);
				emm_lock();
				emm_g.resident += emm_ulen(m, idx);
				emm_list_add(u, EMM_LIST_P);
				emm_unlock();
				atomic_store(&u->st, EMM_DIRTY);
				continue;
			}
			emm_madvise(emm_uaddr(m, idx), emm_ulen(m, idx), MADV_DONTNEED);
			atomic_fetch_add(&m->evictions, 1);
			atomic_store(&u->st, EMM_EMPTY);
		}
		if (!more)
			return 0;
	}
	return 0;
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
