/*
 * prefetch.c - stream detection and the batch a fault posts.
 *
 * A small table of streams (sequential or strided, in fetch units, per
 * mapping) is fed by every fault, including faults on units still in
 * flight, so a stream that is being consumed keeps its window topped up.
 * Prefetches go out in the same batch as the demand fetch on the faulting
 * thread's slot and are installed when any thread next reaps that slot.
 */
#include "map/engine.h"

/* Feeds one fault into the stream table; returns unit indices to fetch
 * ahead (under emm_g.lock). idx and what comes back are in steps of
 * 2^gs units (see emm_step_shift). */
static unsigned emm_stream_feed(struct emm_mapping *m, int64_t idx, int64_t *out, unsigned max,
				int64_t conf, unsigned gs)
{
	struct emm_stream *lru = &emm_g.streams[0];
	int64_t ahead = (int64_t)(emm_ahead_bytes() >> (m->shift + gs));
	uint64_t nsteps = (m->nunits + (1ull << gs) - 1) >> gs;
	unsigned n = 0;

	if (ahead < 2)
		ahead = 2;
	if (ahead > 32)
		ahead = 32;
	emm_g.stream_tick++;
	for (unsigned i = 0; i < EMM_STREAMS; i++) {
		struct emm_stream *s = &emm_g.streams[i];
		int64_t d = idx - s->last;

		if (s->used < lru->used)
			lru = s;
		if (s->m == m && d == 0 && gs)
			return 0; /* the same step again (a small unit's neighbour) */
		if (s->m != m)
			continue;
		if (s->stride) {
			/* anywhere up to a window past what was fetched ahead counts:
			 * a stream that outran its prefetch must not become a second
			 * stream over the same data */
			int64_t span = s->front - s->last + s->stride * (ahead + 1);

			/* until confirmed, only the exact stride counts: random
			 * faults that happen to land near each other must not
			 * start prefetching */
			if (s->hits < 2
				    ? d != s->stride
				    : (d > 0) != (s->stride > 0) || (d > 0 ? d > span : d < span))
				continue;
			if (d % s->stride) {
				/* gaps (units already resident) made the stride look
				 * larger than it is: keep the common divisor */
				int64_t a = d < 0 ? -d : d,
					b = s->stride < 0 ? -s->stride : s->stride;

				while (b) {
					int64_t r = a % b;

					a = b;
					b = r;
				}
				s->stride = s->stride < 0 ? -a : a;
			}
			/* another entry trailing over the same data (created when
			 * this one lost track for a while) is merged away */
			for (unsigned k = 0; k < EMM_STREAMS; k++) {
				struct emm_stream *o = &emm_g.streams[k];

				if (o != s && o->m == m &&
				    (s->stride > 0 ? o->last >= s->last && o->last <= idx
						   : o->last <= s->last && o->last >= idx))
					*o = (struct emm_stream){ 0 };
			}
			s->last = idx;
			s->used = emm_g.stream_tick;
			if (s->hits < 16)
				s->hits++;
			/* in a dense region the touches of a group's units look
			 * like a stream: only one that runs past a group is */
			if (s->hits < conf)
				return 0;
			int64_t depth = (int64_t)1 << (s->hits < 6 ? s->hits : 6);

			if (depth > ahead)
				depth = ahead;
			int64_t from = (s->stride > 0 ? (s->front > idx ? s->front : idx)
						      : (s->front < idx ? s->front : idx)) +
				       s->stride;
			int64_t to = idx + s->stride * depth;

			for (int64_t j = from; s->stride > 0 ? j <= to : j >= to; j += s->stride) {
				if (j < 0 || (uint64_t)j >= nsteps || n >= max)
					break;
				out[n++] = j;
				s->front = j;
			}
			return n;
		}
		if (d >= -16 && d <= 16) {
			s->stride = d;
			s->last = s->front = idx;
			s->hits = 1;
			s->used = emm_g.stream_tick;
			return 0;
		}
	}
	*lru = (struct emm_stream){ .m = m, .last = idx, .front = idx, .used = emm_g.stream_tick };
	return 0;
}

/* Whether faults in m land near each other, fed with every fault (under
 * emm_g.lock). Small units keep scattered reuse cheap: a 4 KiB touch in a
 * heap that a collector frees and reuses page by page fetches 16 KiB, not
 * 64 KiB. But where a fault's neighbours are used soon after (a GEMM walking
 * blocks of a matrix, a buffer filled piecewise), one fault per small unit
 * costs more faults than the bytes justify, and the stream table sees no
 * stride in blocked access. So each mapping keeps a score: a fault within a
 * group (EMM_GROUP_BYTES) of the previous one raises it, a farther one lowers
 * it; while it is positive a fault also fetches the rest of its aligned
 * group. The group goes in with its fault (a staged group cost a fault per
 * unit, what it was to save), so the faults that feed the score are those
 * of the next groups: a fault within two groups of the previous one counts
 * as near, so that a region walked group by group, in any order within a
 * few groups, stays dense; a region whose faults land farther apart falls
 * back to single units. Returns the group's size in units (1: the fault's
 * unit alone). */
static int64_t emm_density_feed(struct emm_mapping *m, int64_t idx)
{
	int64_t g = (int64_t)(EMM_GROUP_BYTES >> m->shift), d = idx - m->last_fault;

	/* only the shim's blocks (scratch memory of programs we do not know);
	 * an em_map user chose its unit */
	if (g <= 1 || !(m->flags & EM_MAP_SCRATCH))
		return 1;
	int s = atomic_load_explicit(&m->dense, memory_order_relaxed);

	if (d) {
		bool near = d > -2 * g && d < 2 * g;

		if (near && s < 8)
			s++;
		else if (!near && s > -8)
			s--;
		/* read without the lock by a zero fill (serve.c) */
		atomic_store_explicit(&m->dense, s, memory_order_relaxed);
		m->last_fault = idx;
	}
	return s > 0 ? g : 1;
}

/* The shim's blocks are mapped with small units so that a scattered fault
 * brings little (a sort's comparisons read a line here and there), but a
 * stream must not become a fault per small unit: its table entries, depth
 * and trips count in steps of EMM_STREAM_BYTES, as they did when that was
 * the unit. Returns log2 of the units per step (0: a step is a unit). */
static unsigned emm_step_shift(const struct emm_mapping *m)
{
	unsigned gs = 0;

	if (m->flags & EM_MAP_SCRATCH)
		while ((1ull << (m->shift + gs)) < EMM_STREAM_BYTES)
			gs++;
	return gs;
}

/* Whether a scattered fault in m brings the rest of its step. Where the
 * units m ever held fit in the cache, the neighbours it brings stay until
 * the program comes to them, so the bytes are the same and the faults
 * fewer (a random gather over an array that fits); where they do not (a
 * sort's text larger than the budget), they are evicted before most are
 * used, and the step only multiplies the bytes. */
static bool emm_step_fits(const struct emm_mapping *m) /* under emm_g.lock */
{
	return atomic_load_explicit(&m->footprint, memory_order_relaxed) <= emm_g.budget;
}

size_t emm_zero_span(const struct emm_mapping *m)
{
	unsigned gs = emm_step_shift(m);

	if (!(m->flags & EM_MAP_SCRATCH))
		return 1;
	if (atomic_load_explicit(&m->dense, memory_order_relaxed) > 0)
		return EMM_GROUP_BYTES >> m->shift > 1 ? EMM_GROUP_BYTES >> m->shift : 1;
	if (!gs)
		return 1;
	emm_lock();
	bool fits = emm_step_fits(m);
	emm_unlock();
	return fits ? (size_t)1 << gs : 1;
}

/* Tops up prefetch for a fault at idx on a held slot; units are claimed
 * (EMPTY -> FETCHING) here and posted with `pre` (the demand fetch, if any).
 * With `pre`: -EAGAIN when nothing could be posted, -ENOENT when the mapping
 * was unmapped meanwhile; either way every unit claimed is EMPTY again.
 *
 * On the shim's blocks adjacent units go out as one read (a span, up to
 * EMM_SPAN_BYTES) in one in-flight entry, installed unit by unit when it
 * lands: small units then cost a stream or a dense group no more reads,
 * entries or completions than the large units they replace. */
int emm_fetch_batch(struct emm_slot *sl, struct emm_mapping *m, size_t idx, struct emm_io *pre,
		    int pre_ent)
{
	struct emm_source *src = m->src;
	struct emm_io io[EMM_DEPTH];
	int64_t want[128];
	unsigned nw = 0, n = 0, glog = 0, gs = emm_step_shift(m), room = 0;
	unsigned maxspan = (m->flags & EM_MAP_SCRATCH) ? (unsigned)(EMM_SPAN_BYTES >> m->shift) : 1;
	const unsigned maxw = (unsigned)(sizeof(want) / sizeof(want[0]));
	int64_t g = 1;
	int posted;

	if (pre)
		io[n++] = *pre;
	if (maxspan < 1)
		maxspan = 1;
	if (!(m->flags & EM_MAP_NOPREFETCH)) {
		int64_t step[32], per = (int64_t)1 << gs;
		unsigned ns;

		for (int i = 0; i < EMM_DEPTH; i++)
			room += !sl->infl[i].u;
		/* leave entries for the write-back that reserving may need */
		room = room > 8 + n ? room - 8 - n : 0;
		emm_lock();
		g = emm_density_feed(m, (int64_t)idx);
		/* in a dense region the touches of a group look like a stream:
		 * only one that runs past its group is confirmed. Counted in
		 * steps, random faults over a block land on a stream's next
		 * step by chance as often as they did on 16 KiB units, but
		 * now that costs four times their bytes: such a stream needs
		 * its stride seen twice */
		int64_t conf = g >> gs > 1 ? g >> gs : 1;

		if (gs && conf < 2)
			conf = 2;
		ns = emm_stream_feed(m, (int64_t)idx >> gs, step, room < 32 ? room : 32, conf + 1,
				     gs);
		bool fits = gs && emm_step_fits(m);
		emm_unlock();
		while (((int64_t)1 << glog) < g)
			glog++;
		/* a fault on a confirmed stream, or in a block that fits the
		 * cache, brings the rest of its own step first, as a unit of
		 * that size did */
		if (gs && (ns || fits))
			for (int64_t j = ((int64_t)idx >> gs) * per;
			     j < (((int64_t)idx >> gs) + 1) * per; j++)
				if (j != (int64_t)idx && (uint64_t)j < m->nunits && nw < maxw)
					want[nw++] = j;
		for (unsigned k = 0; k < ns; k++)
			for (int64_t j = step[k] * per; j < (step[k] + 1) * per; j++)
				if (j != (int64_t)idx && (uint64_t)j < m->nunits && nw < maxw)
					want[nw++] = j;
		/* a dense region's fault brings its group, unless a stream
		 * already asked for more */
		for (int64_t j = (int64_t)idx & ~(g - 1); g > 1 && j < ((int64_t)idx | (g - 1)) + 1;
		     j++) {
			bool have = j == (int64_t)idx || (uint64_t)j >= m->nunits;

			for (unsigned k = 0; k < nw && !have; k++)
				have = want[k] == j;
			if (!have && nw < maxw)
				want[nw++] = j;
		}
	}
	/* of a stream's top-up only the first unit waits for its touch (a
	 * trip, as the kernel's readahead marks a page): the program reaches
	 * it first, and its fault tops the window up again */
	bool trip = true;
	unsigned used = 0;

	/* free entries bound what goes out as they did when each unit took
	 * one: a span may not carry more units than the entries it saves, or
	 * threads that share few free entries would prefetch further ahead
	 * than before (in steps, where units are smaller than a step) */
	unsigned claimed = 0, ubudget = room << gs;

	for (unsigned i = 0; i < nw && used < room && claimed < ubudget;) {
		int64_t j0 = want[i];
		struct emm_unit *u = &m->u[j0];
		bool grp = j0 >> glog == (int64_t)idx >> glog;
		/* the rest of the fault's own step is not a top-up: it goes in */
		bool t = !grp && trip && j0 >> gs != (int64_t)idx >> gs;
		uint32_t z = EMM_EMPTY;
		unsigned k = 1;
		int e;

		if (atomic_load(&u->st) != EMM_EMPTY ||
		    ((m->flags & EMM_MAP_FRESH) && !u->written)) {
			i++; /* resident or in flight; or zero-filled on demand */
			continue;
		}
		e = emm_infl_alloc(sl);
		if (e < 0)
			break;
		if (!atomic_compare_exchange_strong(&u->st, &z, EMM_FETCHING | (uint32_t)sl->idx)) {
			i++;
			continue;
		}
		if ((m->flags & EMM_MAP_FRESH) && !u->written) {
			/* zeroed (emm_zero_range) since the look above: the pool's
			 * bytes are no longer its contents */
			atomic_store(&u->st, EMM_EMPTY);
			i++;
			continue;
		}
		/* the units that follow it in the list and in the mapping join
		 * its read; a trip is one step, which waits for its touch as a
		 * unit of that size did */
		while (k < maxspan && claimed + k < ubudget && i + k < nw &&
		       want[i + k] == j0 + k && ((j0 + k) >> glog == (int64_t)idx >> glog) == grp &&
		       (!t || (j0 + k) >> gs == j0 >> gs)) {
			struct emm_unit *v = &m->u[j0 + k];

			z = EMM_EMPTY;
			if (((m->flags & EMM_MAP_FRESH) && !v->written) ||
			    !atomic_compare_exchange_strong(&v->st, &z,
							    EMM_FETCHING | (uint32_t)sl->idx))
				break;
			if ((m->flags & EMM_MAP_FRESH) && !v->written) {
				atomic_store(&v->st, EMM_EMPTY); /* zeroed meanwhile */
				break;
			}
			k++;
		}
		uint64_t ul = emm_span_ulen(m, (size_t)j0, k);

		/* the entry is taken before reserving: write-back may need entries */
		sl->infl[e] = (struct emm_infl){
			.u = u, .prefetch = grp ? 2 : 1, .trip = t, .nu = (uint8_t)k
		};
		if (t)
			trip = false;
		used++;
		claimed += k;
		emm_reserve(sl, ul);
		io[n++] = (struct emm_io){
			.rctx = m->rctx,
			.off = m->roff + ((uint64_t)j0 << m->shift),
			.buf = sl->staging + (size_t)e * EMM_CELL,
			.len = emm_span_backed(m, (size_t)j0, k),
			.tag = (uint64_t)e,
		};
		if (io[n - 1].len < ul)
			memset((char *)io[n - 1].buf + io[n - 1].len, 0, ul - io[n - 1].len);
		i += k;
	}
	if (!n)
		return 0;
	/* An unmap that raced this fault: its store of dead comes before it
	 * settles each unit, and each claim above came before this load, so
	 * either unmap waits for these fetches or none is posted. Posted
	 * after unmap returned, one would read a source (region, or buffer)
	 * its owner may have freed. */
	posted = atomic_load(&m->dead) ? 0 : src->ops->submit(sl->chan, io, n);
	if (posted < 0)
		posted = 0;
	sl->ninfl += (unsigned)posted;
	for (unsigned i = (unsigned)posted; i < n; i++) {
		struct emm_infl *e = &sl->infl[io[i].tag];
		struct emm_unit *u = e->u;
		unsigned nu = emm_infl_nu(e);
		size_t at = (size_t)(u - m->u);

		e->u = NULL;
		emm_lock();
		emm_g.resident -= emm_span_ulen(m, at, nu);
		emm_unlock();
		for (unsigned k = 0; k < nu; k++)
			atomic_store(&m->u[at + k].st, EMM_EMPTY);
	}
	if (pre && posted == 0)
		return atomic_load(&m->dead) ? -ENOENT : -EAGAIN;
	(void)pre_ent;
	return 0;
}
