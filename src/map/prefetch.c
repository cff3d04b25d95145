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
 * ahead (under emm_g.lock). */
static unsigned emm_stream_feed(struct emm_mapping *m, int64_t idx, int64_t *out, unsigned max,
				int64_t conf)
{
	struct emm_stream *lru = &emm_g.streams[0];
	int64_t ahead = (int64_t)(emm_ahead_bytes() >> m->shift);
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
		if (s->m != m || d == 0)
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
				if (j < 0 || (uint64_t)j >= m->nunits || n >= max)
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

/* Tops up prefetch for a fault at idx on a held slot; units are claimed
 * (EMPTY -> FETCHING) here and posted with `pre` (the demand fetch, if any).
 * With `pre`: -EAGAIN when nothing could be posted, -ENOENT when the mapping
 * was unmapped meanwhile; either way every unit claimed is EMPTY again. */
int emm_fetch_batch(struct emm_slot *sl, struct emm_mapping *m, size_t idx, struct emm_io *pre,
		    int pre_ent)
{
	struct emm_source *src = m->src;
	struct emm_io io[EMM_DEPTH];
	int64_t want[32];
	unsigned nw = 0, n = 0, glog = 0;
	int64_t g = 1;
	int posted;

	if (pre)
		io[n++] = *pre;
	if (!(m->flags & EM_MAP_NOPREFETCH)) {
		unsigned room = 0;

		for (int i = 0; i < EMM_DEPTH; i++)
			room += !sl->infl[i].u;
		/* leave entries for the write-back that reserving may need */
		room = room > 8 + n ? room - 8 - n : 0;
		emm_lock();
		g = emm_density_feed(m, (int64_t)idx);
		nw = emm_stream_feed(m, (int64_t)idx, want, room < 32 ? room : 32, g + 1);
		emm_unlock();
		while (((int64_t)1 << glog) < g)
			glog++;
		/* a dense region's fault brings its group, unless a stream
		 * already asked for more */
		for (int64_t j = (int64_t)idx & ~(g - 1); g > 1 && j < ((int64_t)idx | (g - 1)) + 1;
		     j++) {
			bool have = j == (int64_t)idx || (uint64_t)j >= m->nunits;

			for (unsigned k = 0; k < nw && !have; k++)
				have = want[k] == j;
			if (!have && nw < room && nw < 32)
				want[nw++] = j;
		}
	}
	/* of a stream's top-up only the first unit waits for its touch (a
	 * trip, as the kernel's readahead marks a page): the program reaches
	 * it first, and its fault tops the window up again */
	bool trip = true;

	for (unsigned i = 0; i < nw; i++) {
		struct emm_unit *u = &m->u[want[i]];
		bool grp = want[i] >> glog == (int64_t)idx >> glog;
		uint32_t z = EMM_EMPTY;
		int e;

		if (atomic_load(&u->st) != EMM_EMPTY)
			continue;
		if ((m->flags & EMM_MAP_FRESH) && !u->written)
			continue; /* zero-filled on demand, nothing to fetch */
		e = emm_infl_alloc(sl);
		if (e < 0)
			break;
		if (!atomic_compare_exchange_strong(&u->st, &z, EMM_FETCHING | (uint32_t)sl->idx))
			continue;
		uint64_t off = (uint64_t)want[i] << m->shift;
		uint64_t ul = emm_ulen(m, (size_t)want[i]);

		/* the entry is taken before reserving: write-back may need entries */
		sl->infl[e] =
			(struct emm_infl){ .u = u, .prefetch = grp ? 2 : 1, .trip = !grp && trip };
		if (!grp)
			trip = false;
		emm_reserve(sl, ul);
		io[n++] = (struct emm_io){
			.rctx = m->rctx,
			.off = m->roff + off,
			.buf = sl->staging + (size_t)e * EMM_CELL,
			.len = emm_backed(m, (size_t)want[i]),
			.tag = (uint64_t)e,
		};
		if (io[n - 1].len < ul)
			memset((char *)io[n - 1].buf + io[n - 1].len, 0, ul - io[n - 1].len);
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

		e->u = NULL;
		emm_lock();
		emm_g.resident -= emm_ulen(m, (size_t)(u - m->u));
		emm_unlock();
		atomic_store(&u->st, EMM_EMPTY);
	}
	if (pre && posted == 0)
		return atomic_load(&m->dead) ? -ENOENT : -EAGAIN;
	(void)pre_ent;
	return 0;
}
