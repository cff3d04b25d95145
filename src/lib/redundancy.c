/*
 * redundancy.c - regions that survive the loss of nodes: replicate:N keeps N
 * whole copies on N nodes, ec:K+M cuts the region into stripes of K data
 * cells and adds M Reed-Solomon parity cells (ec.c), one per node.
 *
 * An operation on such a region is run here to its end, synchronously, on
 * the channels of the queue it was submitted to; the queue only sees its
 * completion. That keeps the failure handling in one place and in plain
 * sequential code: a segment that fails a request (error, broken
 * connection, timeout) is marked lost for this handle and never asked
 * again; the operation is then finished from the others.
 *
 * replicate:N - a read goes to the first live copy and fails over to the
 *   next; a write goes to every live copy at once and completes when all
 *   answered; an atomic executes on the first live copy, which orders it,
 *   and is then applied to every other live copy as a compare-and-swap from
 *   the old value to the new one, retried until the copy holds the old
 *   value. So every copy applies the primary's changes in the primary's
 *   order, and a completed atomic is on every live copy: when the primary
 *   dies, the next copy holds every completed atomic exactly once (one
 *   that no surviving copy took is run afresh on the copy that now leads).
 *
 * Repair (em_region_repair) rebuilds each lost segment on a node that holds
 *   no other part of the region, from the survivors, and stores the layout
 *   of the next epoch with it; the survivors keep the old one, and opening
 *   a name takes the newest its nodes hold.
 *
 * ec:K+M - data cell d of stripe s is at s*cell on segment d, parity cell j
 *   at s*cell on segment K+j. A read goes straight to the data cells; one
 *   that fails is rebuilt from any K survivors of its stripe. A write runs
 *   per stripe under the stripe's lock: it reads the other data cells'
 *   bytes in the same column range (rebuilding lost ones), encodes parity
 *   for that range and writes the changed data and all parity. The lock is
 *   a word per stripe kept after the cells on the first M+1 live segments
 *   and taken on all of them (compare-and-swap from 0 to a token): any two
 *   clients, whatever M nodes each believes dead, share a lock segment, so
 *   writers of different bytes of one stripe never mix their parity.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "lib/internal.h"

#define EC_DEFAULT_CELL (64u << 10)
#define LOCK_WORD 8u

/* ---- configuration and placement ---- */

int em_red_conf(const char *s, uint8_t *red, uint8_t *k, uint8_t *m)
{
	struct em_region_opts o = { .size = sizeof(o) };
	int rc = em_parse_redundancy(s, &o);

	if (rc)
		return rc;
	*red = (uint8_t)o.redundancy;
	*k = (uint8_t)o.red_k;
	*m = (uint8_t)o.red_m;
	return 0;
}

int em_parse_redundancy(const char *s, struct em_region_opts *o)
{
	unsigned k = 0, m = 0, red;
	char tail;
	size_t sz;

	if (!s || !o)
		return -EINVAL;
	memcpy(&sz, o, sizeof(sz));
	if (sz < sizeof(struct em_region_opts))
		return -EINVAL;
	if (!strcmp(s, "none"))
		red = EM_RED_NONE;
	else if (sscanf(s, "replicate:%u%c", &k, &tail) == 1)
		red = EM_RED_REPLICATE;
	else if (sscanf(s, "ec:%u+%u%c", &k, &m, &tail) == 2)
		red = EM_RED_EC;
	else
		return -EINVAL;
	if (!em_red_valid(red, k, m))
		return -EINVAL;
	o->redundancy = red;
	o->red_k = (uint16_t)k;
	o->red_m = (uint16_t)m;
	return 0;
}

uint64_t em_red_seg_bytes(const em_region *r, unsigned seg)
{
	(void)seg;
	if (r->red == EM_RED_REPLICATE)
		return r->size;
	/* the stripes' cells, then a lock word per stripe */
	return r->rows * (r->chunk + LOCK_WORD);
}

static void ec_geometry(em_region *r)
{
	uint64_t row = r->chunk * r->red_k;

	r->rows = r->red == EM_RED_EC ? (r->size + row - 1) / row : 0;
}

int em_red_place(em_region *r, uint64_t cell, const uint64_t *freeb)
{
	em_pool *pool = r->pool;
	unsigned n = r->red_k + r->red_m;
	bool used[EM_MAX_SEG] = { false };

	if (n > pool->n)
		return -ENOSPC; /* each copy or chunk needs a node of its own */
	r->chunk = r->red == EM_RED_EC ? (cell ? cell : EC_DEFAULT_CELL) : r->size;
	ec_geometry(r);
	r->nseg = n;
	r->plen = n;
	for (unsigned s = 0; s < n; s++) {
		unsigned best = pool->n;

		for (unsigned i = 0; i < pool->n; i++)
			if (!used[i] && (best == pool->n || freeb[i] > freeb[best]))
				best = i;
		used[best] = true;
		r->node[s] = best;
		r->pattern[s] = (uint8_t)s;
		r->rank[s] = 0;
		r->cnt[s] = 1;
		if (((em_red_seg_bytes(r, s) + 4095) & ~4095ull) > freeb[best])
			return -ENOSPC;
	}
	return 0;
}

/* ---- nodes that are not there ---- */

/* A node down when the pool connected, or since, has a broken channel
 * (tcp.c) that the reconnect thread replaces (health.c); every request to
 * it fails at once, which a redundant region takes as a lost segment. */
bool em_red_unreachable(int err)
{
	switch (-err) {
	case ECONNREFUSED:
	case ETIMEDOUT:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case ECONNRESET:
	case ECONNABORTED:
	case EPIPE:
	case EHOSTDOWN:
	case ENOTCONN:
		return true;
	default:
		return false;
	}
}

unsigned em_red_state(const em_region *r)
{
	return __atomic_load_n(&r->lost, __ATOMIC_RELAXED) ? EM_STATE_DEGRADED : EM_STATE_HEALTHY;
}

/* ---- requests to segments ---- */

struct req {
	unsigned seg;
	struct em_part p;
};

static bool seg_lost(em_region *r, unsigned seg)
{
	return __atomic_load_n(&r->lost, __ATOMIC_RELAXED) >> seg & 1;
}

static void mark_lost(em_region *r, unsigned seg, int why)
{
	uint64_t bit = 1ull << seg;

	if (!(__atomic_fetch_or(&r->lost, bit, __ATOMIC_RELAXED) & bit))
		em_log(EM_LOG_WARN, "region %s: node %s lost (%s); serving from the others",
		       r->named ? r->name : "(anonymous)", r->pool->nodes[r->node[seg]].addr,
		       em_strerror(why));
}

static unsigned live_count(em_region *r)
{
	unsigned n = 0;

	for (unsigned s = 0; s < r->nseg; s++)
		n += !seg_lost(r, s);
	return n;
}

static int lost_error(em_region *r)
{
	em_log(EM_LOG_ERR, "region %s: %u of %u nodes lost, more than %s survives",
	       r->named ? r->name : "(anonymous)", r->nseg - live_count(r), r->nseg,
	       r->red == EM_RED_EC ? "its erasure code" : "its copies");
	return -EM_ELOST;
}

static void req_init(struct req *q, em_region *r, unsigned seg, uint8_t wop, uint64_t off)
{
	memset(q, 0, sizeof(*q));
	q->seg = seg;
	q->p.wop = wop;
	q->p.handle = r->handle[seg];
	q->p.off = off;
}

static void req_read(struct req *q, em_region *r, unsigned seg, uint64_t off, void *buf,
		     uint32_t len)
{
	req_init(q, r, seg, EM_W_READ, off);
	q->p.aux = len;
	q->p.resp = buf;
	q->p.resp_cap = len;
}

static void req_write(struct req *q, em_region *r, unsigned seg, uint64_t off, const void *buf,
		      uint32_t len)
{
	req_init(q, r, seg, EM_W_WRITE, off);
	q->p.req = buf;
	q->p.req_len = len;
}

static void req_atomic(struct req *q, em_region *r, unsigned seg, uint64_t off, unsigned aop,
		       uint64_t operand, uint64_t compare)
{
	req_init(q, r, seg, EM_W_ATOMIC, off);
	q->p.aux = aop;
	em_put64(q->p.inl, operand);
	em_put64(q->p.inl + 8, compare);
	q->p.req = q->p.inl;
	q->p.req_len = 16;
	q->p.resp = q->p.inl;
	q->p.resp_cap = 8;
}

/* Posts reqs[0..n) (each to its segment's node) and waits for all of them;
 * a request whose segment fails marks it lost. Requests to segments already
 * lost are not sent and fail with -EHOSTDOWN. Returns how many failed. */
static unsigned run(em_queue *q, em_region *r, struct req *reqs, unsigned n)
{
	unsigned failed = 0;

	for (unsigned i = 0; i < n; i++) {
		struct em_part *p = &reqs[i].p;
		struct em_chan *ch = q->ch[r->node[reqs[i].seg]];

		p->origin = p;
		p->slot = NULL;
		p->tag = ++q->next_tag;
		if (seg_lost(r, reqs[i].seg)) {
			p->status = -EHOSTDOWN;
			continue;
		}
		p->status = -EINPROGRESS;
		ch->ops->post(ch, p, 1);
	}
	for (unsigned i = 0; i < n; i++) {
		struct em_part *p = &reqs[i].p;
		struct em_chan *ch = q->ch[r->node[reqs[i].seg]];

		while (p->status == -EINPROGRESS && ch->outstanding)
			if (ch->ops->progress(ch, -1) < 0)
				break;
		if (p->status == -EINPROGRESS)
			p->status = -EIO;
		if (!p->status && p->wop == EM_W_READ && p->resp_len != p->aux)
			p->status = -EPROTO;
		if (p->status) {
			failed++;
			if (p->status != -EHOSTDOWN)
				mark_lost(r, reqs[i].seg, p->status);
		}
	}
	return failed;
}

/* ---- replicate:N ---- */

/* What the node does to the word: the same function, to follow the
 * primary's transition on the other copies. */
static uint64_t atomic_apply(unsigned aop, uint64_t old, uint64_t x, uint64_t cmp)
{
	switch (aop) {
	case EM_ATOMIC_CAS:
		return old == cmp ? x : old;
	case EM_ATOMIC_FADD:
		return old + x;
	case EM_ATOMIC_SWAP:
		return x;
	case EM_ATOMIC_SMIN:
		return (int64_t)x < (int64_t)old ? x : old;
	case EM_ATOMIC_SMAX:
		return (int64_t)x > (int64_t)old ? x : old;
	case EM_ATOMIC_UMIN:
		return x < old ? x : old;
	case EM_ATOMIC_UMAX:
		return x > old ? x : old;
	case EM_ATOMIC_AND:
		return old & x;
	case EM_ATOMIC_OR:
		return old | x;
	case EM_ATOMIC_XOR:
		return old ^ x;
	default:
		return old;
	}
}

/* Cuts [off, off+len) of the buffer into requests of at most EM_MAX_IO. */
static unsigned pieces(uint64_t len)
{
	return (unsigned)((len + EM_MAX_IO - 1) / EM_MAX_IO);
}

static int rep_read(em_queue *q, em_region *r, uint64_t off, uint8_t *buf, uint64_t len)
{
	unsigned n = pieces(len);
	struct req *reqs = calloc(n ? n : 1, sizeof(*reqs));

	if (!reqs)
		return -ENOMEM;
	for (unsigned s = 0; s < r->nseg; s++) {
		if (seg_lost(r, s))
			continue;
		for (unsigned i = 0; i < n; i++) {
			uint64_t o = (uint64_t)i * EM_MAX_IO;
			req_read(&reqs[i], r, s, off + o, buf + o,
				 (uint32_t)EM_MIN(len - o, EM_MAX_IO));
		}
		if (!run(q, r, reqs, n)) {
			free(reqs);
			return 0;
		}
	}
	free(reqs);
	return lost_error(r);
}

static int rep_write(em_queue *q, em_region *r, uint64_t off, const uint8_t *buf, uint64_t len)
{
	unsigned n = pieces(len), live = 0, k = 0;
	struct req *reqs = calloc((size_t)(n ? n : 1) * r->nseg, sizeof(*reqs));
	bool ok[EM_MAX_SEG];

	if (!reqs)
		return -ENOMEM;
	for (unsigned s = 0; s < r->nseg; s++)
		for (unsigned i = 0; i < n; i++) {
			uint64_t o = (uint64_t)i * EM_MAX_IO;
			req_write(&reqs[k++], r, s, off + o, buf + o,
				  (uint32_t)EM_MIN(len - o, EM_MAX_IO));
		}
	run(q, r, reqs, k);
	for (unsigned s = 0; s < r->nseg; s++) {
		ok[s] = true;
		for (unsigned i = 0; i < n; i++)
			ok[s] &= !reqs[s * n + i].p.status;
		live += ok[s];
	}
	free(reqs);
	/* a copy that took part of the write and then failed is lost already */
	return live ? 0 : lost_error(r);
}

static unsigned first_live(em_region *r)
{
	unsigned s = 0;

	while (s < r->nseg && seg_lost(r, s))
		s++;
	return s;
}

static int rep_atomic(em_queue *q, em_region *r, const struct em_op *op, uint64_t *value)
{
	struct req one, f;
	uint64_t old, nv;
	unsigned prim;

again:
	for (prim = 0; prim < r->nseg; prim++) {
		if (seg_lost(r, prim))
			continue;
		req_atomic(&one, r, prim, op->offset, op->atomic_op, op->operand, op->compare);
		if (!run(q, r, &one, 1))
			break;
	}
	if (prim == r->nseg)
		return lost_error(r);
	old = em_get64(one.p.inl);
	*value = old;
	nv = atomic_apply(op->atomic_op, old, op->operand, op->compare);
	if (nv == old)
		return 0;
	/* Follow on the other copies, one after another in their order, so a
	 * later copy never holds the change before an earlier one: each must
	 * go from old to nv. A copy that holds something else has not yet
	 * taken an earlier change of the primary, whose client is applying it
	 * now: ask again. If the primary dies meanwhile and no live copy took
	 * this change, it took effect nowhere that survives: run it afresh on
	 * the copy that now leads (its result is the one returned). A client
	 * that died between primary and follow would leave a copy behind for
	 * good, so after twice the request timeout the copy is set anyway. */
	for (unsigned s = prim + 1; s < r->nseg; s++) {
		uint64_t start = em_now_ns();

		while (!seg_lost(r, s)) {
			bool force = (em_now_ns() - start) / 1000000 >
				     2ull * (uint64_t)r->pool->timeout_ms;

			req_atomic(&f, r, s, op->offset, force ? EM_ATOMIC_SWAP : EM_ATOMIC_CAS, nv,
				   old);
			if (run(q, r, &f, 1) || force || em_get64(f.p.inl) == old)
				break;
			/* behind: is the copy that ordered us still there? */
			if (!seg_lost(r, prim)) {
				uint8_t w[8];
				struct req probe_rq;
				req_read(&probe_rq, r, prim, op->offset, w, 8);
				run(q, r, &probe_rq, 1);
			}
			if (seg_lost(r, prim) && first_live(r) == s)
				goto again;
			struct timespec ts = { 0, 20000 };
			nanosleep(&ts, NULL);
		}
	}
	return 0;
}

/* ---- ec:K+M ---- */

static uint64_t lock_token(void)
{
	static __thread uint64_t tok;

	if (!tok) {
		uint64_t t = em_now_ns() ^ ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)&tok;
		tok = t ? t : 1;
	}
	return tok;
}

/* The segments that hold stripe locks for this handle: the first M+1 live. */
static unsigned lock_segs(em_region *r, unsigned *segs)
{
	unsigned n = 0;

	for (unsigned s = 0; s < r->nseg && n < r->red_m + 1u; s++)
		if (!seg_lost(r, s))
			segs[n++] = s;
	return n;
}

static uint64_t lock_off(em_region *r, uint64_t row)
{
	return r->rows * r->chunk + row * LOCK_WORD;
}

static void stripe_unlock(em_queue *q, em_region *r, uint64_t row, const unsigned *segs, unsigned n)
{
	struct req rq[EM_MAX_SEG];

	for (unsigned i = 0; i < n; i++)
		req_atomic(&rq[i], r, segs[i], lock_off(r, row), EM_ATOMIC_CAS, 0, lock_token());
	run(q, r, rq, n);
}

/* Takes the stripe's lock on every lock segment at once; on a partial win
 * gives back what it got and tries again, so two clients never wait on
 * each other in a cycle. A holder that stays longer than twice the request
 * timeout is taken to have died, and its lock is taken over. */
static int stripe_lock(em_queue *q, em_region *r, uint64_t row, unsigned *segs, unsigned *nsegs)
{
	uint64_t tok = lock_token(), start = em_now_ns(), seen[EM_MAX_SEG] = { 0 };
	struct req rq[EM_MAX_SEG];
	unsigned spins = 0;

	for (;;) {
		unsigned n = lock_segs(r, segs), got = 0, held[EM_MAX_SEG], nh = 0;

		bool steal = (em_now_ns() - start) / 1000000 > 2ull * (uint64_t)r->pool->timeout_ms;

		if (!n)
			return lost_error(r);
		for (unsigned i = 0; i < n; i++)
			req_atomic(&rq[i], r, segs[i], lock_off(r, row), EM_ATOMIC_CAS, tok,
				   steal ? seen[i] : 0);
		bool failed = run(q, r, rq, n) != 0;
		for (unsigned i = 0; i < n; i++) {
			uint64_t v = em_get64(rq[i].p.inl);
			if (rq[i].p.status)
				continue;
			if (v == (steal ? seen[i] : 0) || v == tok) {
				got++;
				held[nh++] = segs[i];
			} else {
				seen[i] = v;
			}
		}
		if (live_count(r) < r->red_k) {
			if (nh)
				stripe_unlock(q, r, row, held, nh);
			return lost_error(r);
		}
		if (!failed && got == n) {
			*nsegs = nh;
			memcpy(segs, held, nh * sizeof(*held));
			return 0;
		}
		if (nh)
			stripe_unlock(q, r, row, held, nh);
		/* back off a little, longer the more often we lost */
		struct timespec ts = { 0, (long)(1000 + (lock_token() % 7) * 1000) *
						  (long)(spins < 20 ? spins + 1 : 20) };
		nanosleep(&ts, NULL);
		spins++;
	}
}

struct ec_ctx {
	em_queue *q;
	em_region *r;
	struct em_ec *ec;
	uint8_t *band[EM_MAX_SEG]; /* a column range of every cell of one stripe */
};

/* Reads [lo, hi) of every cell of stripe `row` that is live, then rebuilds
 * the rest; with `need` a mask of the cells wanted (others may be skipped
 * when everything wanted is live). */
static int band_read(struct ec_ctx *c, uint64_t row, uint64_t lo, uint64_t hi, uint64_t need)
{
	em_region *r = c->r;
	unsigned n = r->nseg, nr;
	struct req rq[EM_MAX_SEG];
	uint64_t have;

	for (;;) {
		uint64_t missing = 0;

		nr = 0;
		for (unsigned s = 0; s < n; s++)
			if ((need >> s & 1) && seg_lost(r, s))
				missing |= 1ull << s;
		/* what is wanted and live; when something wanted is lost, K
		 * other live cells to rebuild it from */
		unsigned extra = 0;
		for (unsigned s = 0; s < n; s++) {
			bool want = (need >> s & 1) && !seg_lost(r, s);
			if (!want && missing && !seg_lost(r, s) && extra < r->red_k)
				want = true;
			if (want) {
				req_read(&rq[nr++], r, s, row * r->chunk + lo, c->band[s],
					 (uint32_t)(hi - lo));
				if (!(need >> s & 1))
					extra++;
			}
		}
		if (live_count(r) < r->red_k)
			return lost_error(r);
		if (run(c->q, r, rq, nr))
			continue; /* a node failed under us: plan again */
		have = 0;
		for (unsigned i = 0; i < nr; i++)
			have |= 1ull << rq[i].seg;
		if (!(need & ~have))
			return 0;
		if (__builtin_popcountll(have) < r->red_k)
			return lost_error(r);
		return em_ec_rebuild(c->ec, hi - lo, c->band, have) ? lost_error(r) : 0;
	}
}

static int ec_read(struct ec_ctx *c, uint64_t off, uint8_t *buf, uint64_t len)
{
	em_region *r = c->r;
	uint64_t cell = r->chunk, rowb = cell * r->red_k;

	/* the healthy path: every piece from its data cell, all at once */
	{
		unsigned cap = (unsigned)(len / cell + 2), n = 0;
		struct req *rq = calloc(cap, sizeof(*rq));
		uint64_t o = off;

		if (!rq)
			return -ENOMEM;
		while (o < off + len) {
			uint64_t row = o / rowb, d = (o % rowb) / cell, w = o % cell;
			uint64_t k = EM_MIN(cell - w, off + len - o);
			req_read(&rq[n++], r, (unsigned)d, row * cell + w, buf + (o - off),
				 (uint32_t)k);
			o += k;
		}
		unsigned bad = run(c->q, r, rq, n);
		free(rq);
		if (!bad)
			return 0;
	}
	/* degraded: stripe by stripe, under its lock so no write is half seen */
	for (uint64_t o = off; o < off + len;) {
		uint64_t row = o / rowb, end = EM_MIN((row + 1) * rowb, off + len);
		uint64_t lo = cell, hi = 0, need = 0;
		unsigned segs[EM_MAX_SEG], ns;
		int rc;

		for (uint64_t p = o; p < end;) {
			uint64_t d = (p % rowb) / cell, w = p % cell, k = EM_MIN(cell - w, end - p);
			lo = EM_MIN(lo, w);
			hi = EM_MAX(hi, w + k);
			need |= 1ull << d;
			p += k;
		}
		if ((rc = stripe_lock(c->q, r, row, segs, &ns)))
			return rc;
		rc = band_read(c, row, lo, hi, need);
		stripe_unlock(c->q, r, row, segs, ns);
		if (rc)
			return rc;
		for (uint64_t p = o; p < end;) {
			uint64_t d = (p % rowb) / cell, w = p % cell, k = EM_MIN(cell - w, end - p);
			memcpy(buf + (p - off), c->band[d] + (w - lo), k);
			p += k;
		}
		o = end;
	}
	return 0;
}

static int ec_write(struct ec_ctx *c, uint64_t off, const uint8_t *buf, uint64_t len)
{
	em_region *r = c->r;
	unsigned K = r->red_k, M = r->red_m;
	uint64_t cell = r->chunk, rowb = cell * K;

	for (uint64_t o = off; o < off + len;) {
		uint64_t row = o / rowb, end = EM_MIN((row + 1) * rowb, off + len);
		uint64_t lo = cell, hi = 0, touched = 0;
		unsigned segs[EM_MAX_SEG], ns, nw = 0;
		struct req rq[EM_MAX_SEG];
		int rc;

		for (uint64_t p = o; p < end;) {
			uint64_t d = (p % rowb) / cell, w = p % cell, k = EM_MIN(cell - w, end - p);
			lo = EM_MIN(lo, w);
			hi = EM_MAX(hi, w + k);
			touched |= 1ull << d;
			p += k;
		}
		/* the band's bytes of each data cell that this write leaves as
		 * they are must be read (or rebuilt) to encode the parity */
		uint64_t need = 0;
		for (unsigned d = 0; d < K; d++) {
			uint64_t a = row * rowb + d * cell + lo, b = row * rowb + d * cell + hi;
			if (a < off || b > off + len)
				need |= 1ull << d;
		}
		if ((rc = stripe_lock(c->q, r, row, segs, &ns)))
			return rc;
		if (need && (rc = band_read(c, row, lo, hi, need))) {
			stripe_unlock(c->q, r, row, segs, ns);
			return rc;
		}
		for (unsigned d = 0; d < K; d++) {
			uint64_t a = row * rowb + d * cell + lo, b = row * rowb + d * cell + hi;
			uint64_t from = EM_MAX(a, off), to = EM_MIN(b, off + len);
			if (from < to)
				memcpy(c->band[d] + (from - a), buf + (from - off), to - from);
		}
		em_ec_encode(c->ec, hi - lo, c->band, c->band + K);
		for (unsigned d = 0; d < K; d++) {
			uint64_t a = row * rowb + d * cell, from, to;
			if (!(touched >> d & 1))
				continue;
			from = EM_MAX(a + lo, o);
			to = EM_MIN(a + hi, end);
			if (from < to)
				req_write(&rq[nw++], r, d, row * cell + (from - a),
					  c->band[d] + (from - a - lo), (uint32_t)(to - from));
		}
		for (unsigned j = 0; j < M; j++)
			req_write(&rq[nw++], r, K + j, row * cell + lo, c->band[K + j],
				  (uint32_t)(hi - lo));
		run(c->q, r, rq, nw);
		stripe_unlock(c->q, r, row, segs, ns);
		if (live_count(r) < K)
			return lost_error(r);
		o = end;
	}
	return 0;
}

static int ec_exec(em_queue *q, const struct em_op *op)
{
	em_region *r = op->region;
	struct ec_ctx c = { .q = q, .r = r };
	uint64_t cell = r->chunk;
	int rc;

	if (op->opcode == EM_OP_ATOMIC)
		return -EOPNOTSUPP;
	if (!op->len)
		return 0;
	if ((rc = em_ec_create(r->red_k, r->red_m, &c.ec)))
		return rc;
	/* one stripe's worth of bands: a band is at most a cell, and no wider
	 * than the op when it stays inside one cell (small ops then stay off
	 * the allocator's mmap path, whose fresh pages cost more than the op) */
	uint64_t band = op->offset / cell == (op->offset + op->len - 1) / cell ? op->len : cell;
	uint8_t *mem = malloc((size_t)band * r->nseg);
	if (!mem) {
		em_ec_destroy(c.ec);
		return -ENOMEM;
	}
	for (unsigned s = 0; s < r->nseg; s++)
		c.band[s] = mem + (size_t)s * band;
	if (op->opcode == EM_OP_READ)
		rc = ec_read(&c, op->offset, op->buf, op->len);
	else
		rc = ec_write(&c, op->offset, op->buf, op->len);
	free(mem);
	em_ec_destroy(c.ec);
	return rc;
}

int em_red_exec(em_queue *q, const struct em_op *op, uint64_t *value)
{
	em_region *r = op->region;

	*value = 0;
	if (r->red == EM_RED_EC)
		return ec_exec(q, op);
	switch (op->opcode) {
	case EM_OP_READ:
		return op->len ? rep_read(q, r, op->offset, op->buf, op->len) : 0;
	case EM_OP_WRITE:
		return op->len ? rep_write(q, r, op->offset, op->buf, op->len) : 0;
	default:
		return rep_atomic(q, r, op, value);
	}
}

/* ---- repair ---- */

/* One batch of requests on the pool's default queue, as the synchronous
 * calls run theirs. */
static unsigned run_dq(em_region *r, struct req *reqs, unsigned n)
{
	unsigned bad;

	pthread_mutex_lock(&r->pool->lock);
	bad = run(r->pool->dq, r, reqs, n);
	em_health_kick(r->pool);
	pthread_mutex_unlock(&r->pool->lock);
	return bad;
}

/* Finds the segments that do not answer now (a one-byte read each). */
static void probe(em_region *r)
{
	struct req rq[EM_MAX_SEG];
	uint8_t b[EM_MAX_SEG];
	unsigned n = 0;

	for (unsigned s = 0; s < r->nseg; s++)
		if (!seg_lost(r, s))
			req_read(&rq[n++], r, s, 0, &b[s], 1);
	run_dq(r, rq, n);
}

/* Copies or rebuilds segment s (already created on its new node) from the
 * survivors, a piece at a time. */
static int rebuild(em_region *r, unsigned s)
{
	uint64_t seg = em_red_seg_bytes(r, s);
	int rc = 0;

	if (r->red == EM_RED_REPLICATE) {
		const uint64_t piece = 1u << 20;
		uint8_t *buf = malloc(piece);

		if (!buf)
			return -ENOMEM;
		for (uint64_t off = 0; off < r->size && !rc; off += piece) {
			uint32_t k = (uint32_t)EM_MIN(piece, r->size - off);
			struct req w;
			unsigned src;

			for (src = 0; src < r->nseg; src++) {
				struct req rd;
				if (src == s || seg_lost(r, src))
					continue;
				req_read(&rd, r, src, off, buf, k);
				if (!run_dq(r, &rd, 1))
					break;
			}
			if (src == r->nseg) {
				rc = lost_error(r);
				break;
			}
			/* the new copy is still marked lost for everything else:
			 * write to it directly */
			req_write(&w, r, s, off, buf, k);
			w.p.origin = &w.p;
			pthread_mutex_lock(&r->pool->lock);
			{
				struct em_chan *ch = r->pool->dq->ch[r->node[s]];
				w.p.tag = ++r->pool->dq->next_tag;
				w.p.status = -EINPROGRESS;
				ch->ops->post(ch, &w.p, 1);
				while (w.p.status == -EINPROGRESS && ch->outstanding)
					if (ch->ops->progress(ch, -1) < 0)
						break;
			}
			pthread_mutex_unlock(&r->pool->lock);
			if (w.p.status)
				rc = w.p.status == -EINPROGRESS ? -EIO : w.p.status;
		}
		free(buf);
		return rc;
	}
	/* EC: stripe by stripe, each whole cell rebuilt under the stripe's lock */
	struct ec_ctx c = { .r = r };
	uint8_t *mem;

	(void)seg;
	if ((rc = em_ec_create(r->red_k, r->red_m, &c.ec)))
		return rc;
	mem = malloc((size_t)r->chunk * r->nseg);
	if (!mem) {
		em_ec_destroy(c.ec);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < r->nseg; i++)
		c.band[i] = mem + (size_t)i * r->chunk;
	pthread_mutex_lock(&r->pool->lock);
	c.q = r->pool->dq;
	for (uint64_t row = 0; row < r->rows && !rc; row++) {
		unsigned segs[EM_MAX_SEG], ns;
		struct em_part *p;
		struct em_chan *ch = c.q->ch[r->node[s]];

		if ((rc = stripe_lock(c.q, r, row, segs, &ns)))
			break;
		rc = band_read(&c, row, 0, r->chunk, 1ull << s);
		if (!rc) {
			struct req w;
			req_write(&w, r, s, row * r->chunk, c.band[s], (uint32_t)r->chunk);
			p = &w.p;
			p->origin = p;
			p->tag = ++c.q->next_tag;
			p->status = -EINPROGRESS;
			ch->ops->post(ch, p, 1);
			while (p->status == -EINPROGRESS && ch->outstanding)
				if (ch->ops->progress(ch, -1) < 0)
					break;
			rc = p->status == -EINPROGRESS ? -EIO : p->status;
		}
		stripe_unlock(c.q, r, row, segs, ns);
	}
	pthread_mutex_unlock(&r->pool->lock);
	free(mem);
	em_ec_destroy(c.ec);
	return rc;
}

int em_region_repair(em_region *r)
{
	em_pool *pool;
	uint64_t freeb[EM_MAX_SEG] = { 0 }, lost;
	bool taken[EM_MAX_SEG] = { false };
	unsigned target[EM_MAX_SEG], done = 0, need;
	uint32_t newh[EM_MAX_SEG] = { 0 };
	em_region next;
	uint8_t layout[EM_MAX_LAYOUT], req[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	uint8_t resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	int rc, ll, n;

	if (!r || !em_red_on(r))
		return -EINVAL;
	pool = r->pool;
	probe(r);
	lost = __atomic_load_n(&r->lost, __ATOMIC_RELAXED);
	if (!lost)
		return 0;
	need = r->red == EM_RED_EC ? r->red_k : 1;
	if (live_count(r) < need)
		return lost_error(r);
	/* free memory per node; nodes that do not answer cannot take a part */
	for (unsigned i = 0; i < pool->n; i++) {
		uint64_t v[EM_ST__COUNT];
		if (!em_status_raw(pool, i, v) && v[EM_ST_CAPACITY] > v[EM_ST_USED])
			freeb[i] = (v[EM_ST_CAPACITY] - v[EM_ST_USED]) & ~4095ull;
	}
	for (unsigned s = 0; s < r->nseg; s++)
		if (!(lost >> s & 1))
			taken[r->node[s]] = true;
	/* the next layout: each lost segment on the free-est node not in use */
	next = *r;
	for (unsigned s = 0; s < r->nseg; s++) {
		unsigned best = pool->n;
		uint64_t want = (em_red_seg_bytes(r, s) + 4095) & ~4095ull;

		if (!(lost >> s & 1))
			continue;
		for (unsigned i = 0; i < pool->n; i++)
			if (!taken[i] && freeb[i] >= want &&
			    (best == pool->n || freeb[i] > freeb[best]))
				best = i;
		if (best == pool->n)
			return -ENOSPC;
		taken[best] = true;
		target[s] = best;
		next.node[s] = best;
	}
	next.epoch = r->epoch + 1;
	ll = em_region_layout(&next, layout, sizeof(layout));
	if (ll < 0)
		return ll;
	n = em_namelayout_encode(req, sizeof(req), r->named ? r->name : NULL, layout, (uint16_t)ll);
	if (n < 0)
		return n;
	for (unsigned s = 0; s < r->nseg; s++) {
		struct em_part res;

		if (!(lost >> s & 1))
			continue;
		rc = em_ctl(pool, target[s], EM_W_CREATE, 0,
			    r->named ? EM_WC_NAMED | EM_WC_EXCL : 0, em_red_seg_bytes(r, s), req,
			    (uint32_t)n, resp, sizeof(resp), &res);
		if (rc)
			goto undo;
		newh[s] = res.r_region;
	}
	/* the new parts join this handle, still marked lost (nothing reads
	 * them) while they are filled */
	for (unsigned s = 0; s < r->nseg; s++)
		if (lost >> s & 1) {
			r->node[s] = target[s];
			r->handle[s] = newh[s];
		}
	for (unsigned s = 0; s < r->nseg; s++) {
		if (!(lost >> s & 1))
			continue;
		if ((rc = rebuild(r, s)))
			return rc; /* the region stays degraded; a new repair starts over */
		__atomic_fetch_and(&r->lost, ~(1ull << s), __ATOMIC_RELAXED);
		done++;
	}
	r->epoch = next.epoch;
	em_log(EM_LOG_INFO, "region %s: %u part(s) rebuilt, layout epoch %u",
	       r->named ? r->name : "(anonymous)", done, r->epoch);
	return (int)done;
undo:
	for (unsigned s = 0; s < r->nseg; s++)
		if (newh[s]) {
			em_ctl(pool, target[s], EM_W_CLOSE, newh[s], 0, 0, NULL, 0, NULL, 0, NULL);
			if (r->named) {
				int k = em_namelayout_encode(req, sizeof(req), r->name, NULL, 0);
				em_ctl(pool, target[s], EM_W_DELETE, 0, 0, 0, req, (uint32_t)k,
				       NULL, 0, NULL);
			}
		}
	return rc;
}
