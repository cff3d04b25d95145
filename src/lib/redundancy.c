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
 * Every step posts all its requests (to every copy, or every cell of every
 *   stripe it touches) before it waits for any, so a step costs one round
 *   trip however many nodes it reaches.
 *
 * Repair (em_region_repair, or the handle's background thread) rebuilds
 *   each lost segment on a node that holds no other part of the region,
 *   from the survivors, and stores the layout of the next epoch with it;
 *   the survivors keep the old one, and opening a name takes the newest its
 *   nodes hold. While a new part fills, every write reaches it too (it is
 *   "filling": written, never read), so it misses nothing: this handle's at
 *   once, other clients' once a fence on the surviving parts has sent them
 *   to read the layouts again (repair_run). An EC stripe is rebuilt under
 *   the lock its writers take anyway; a copy is copied piece by piece under
 *   the piece's lock, and a write learns from the nodes' replies whether
 *   the copy carries its bytes or came before them (fill_sure), so only
 *   the rare one that cannot tell locks. The background thread copies at most
 *   ETHERMEM_REPAIR_RATE bytes/s and, while the application uses the
 *   region, copies at most ETHERMEM_REPAIR_SHARE percent of the time, so
 *   the foreground keeps most of the bandwidth. A repair that fails or is stopped deletes its half-made
 *   parts; a node that already holds the name (a repair that died) is
 *   passed over, never cleared.
 *
 * Losses on a static list: a replicated region's loss records are kept by
 *   witness nodes as well as by the surviving copies, so that a copy that
 *   comes back after the one that took the writes died is refused, not
 *   served (see "witnesses" below; etcd mode keeps them in the record).
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
#include <limits.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/abi.h"
#include "common/cluster.h"
#include "common/config.h"
#include "common/util.h"
#include "lib/internal.h"

/* The cell when the caller names none: the smallest for small regions,
 * doubled up to EC_MAX_CELL while the region still holds EC_MIN_ROWS
 * stripes. Fewer, larger cells make a bulk operation fewer requests, stripe
 * locks and node wakeups (a 2 MiB op of ec:4+2 is one stripe, not eight),
 * and the padding of the last stripe stays under 1/EC_MIN_ROWS of the
 * region. Small operations cost the same: they move only their columns. */
#define EC_MIN_CELL (64u << 10)
#define EC_MAX_CELL (512u << 10)
#define EC_MIN_ROWS 16u
#define LOCK_WORD 8u
/* replicate:N - a repair copies, and writers lock while it does, pieces of
 * this many bytes; each has a lock word after the region's bytes */
#define REP_PIECE (256u << 10)
/* etcd mode: the lease (s) of a repair lock; a repairer that dies frees
 * it this long after its last renewal */
#define REPAIR_LEASE_S 2
/* A repairer touches its first fence every FENCE_TOUCH_MS; a first fence
 * left untouched for FENCE_STALE_MS is a dead (or cut off) repairer's, and
 * on a static list the next repairer raises one above it. With etcd the
 * repair lock decides instead: its holder takes over any fence. */
#define FENCE_TOUCH_MS 500u
#define FENCE_STALE_MS 3000u
/* A part whose node froze or was cut off misses the writes made meanwhile
 * and, once back, would serve its old bytes to a handle that never saw it
 * fail; its own fence was never raised. So a reader of a named region
 * trusts the layout it knows for READ_LEASE_MS after it began a check of
 * its version with every part (check_layout), and a write that left a part
 * behind completes only LOSS_WAIT_MS after the parts it reached were fenced
 * past that layout (settle): a read that begins after the write completed
 * checked after the fence, was refused, and read the layouts again. The
 * margin covers two hosts' clocks running at slightly different rates. */
#define READ_LEASE_MS 100u
#define LOSS_WAIT_MS (READ_LEASE_MS + READ_LEASE_MS / 8)

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

static uint64_t rep_pieces(const em_region *r)
{
	return (r->size + REP_PIECE - 1) / REP_PIECE;
}

/* Where a copy's lock words start: after its bytes, on a word boundary,
 * since a node runs atomics on aligned words only (a region of 18099228
 * bytes, as `ethermem import` of a file makes, had every lock refused,
 * and the refusal taken for a lost copy). */
static uint64_t rep_lock_base(const em_region *r)
{
	return (r->size + LOCK_WORD - 1) & ~(uint64_t)(LOCK_WORD - 1);
}

uint64_t em_red_seg_bytes(const em_region *r, unsigned seg)
{
	(void)seg;
	if (r->red == EM_RED_REPLICATE) /* the copy, then a lock word per piece */
		return rep_lock_base(r) + rep_pieces(r) * LOCK_WORD;
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

	if (n > em_pool_n(pool))
		return -ENOSPC; /* each copy or chunk needs a node of its own */
	if (r->red == EM_RED_EC && !cell)
		for (cell = EC_MIN_CELL;
		     cell < EC_MAX_CELL && r->size >= (uint64_t)EC_MIN_ROWS * r->red_k * cell * 2;)
			cell *= 2;
	r->chunk = r->red == EM_RED_EC ? cell : r->size;
	ec_geometry(r);
	r->nseg = n;
	r->plen = n;
	for (unsigned s = 0; s < n; s++) {
		unsigned best = em_pool_n(pool);

		for (unsigned i = 0; i < em_pool_n(pool); i++)
			if (!used[i] && (best == em_pool_n(pool) || freeb[i] > freeb[best]))
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
	case EM_ENONODE:
		return true;
	default:
		return false;
	}
}

/* ---- per-handle state ---- */

struct em_red_aux {
	struct em_ec *ec; /* EC: the coder, made once per handle */
	/* Where each segment is: node << 32 | node-local handle, one word so
	 * that a request never pairs one part's node with another's handle
	 * while a repair or a refresh moves the segment (atomic). */
	uint64_t loc[EM_MAX_SEG];
	/* The layout version this handle knows (LAYOUT_VER), carried by its
	 * writes and atomics so that a repair's fence refuses stale ones
	 * (atomic); layout changes (repair's, refresh's) one at a time. */
	uint32_t ver;
	uint64_t lock_until;   /* atomics lock their piece until then (ns, atomic) */
	pthread_rwlock_t fill; /* ops shared, changes of the fill set and the layout exclusive */
	uint64_t filling;      /* segments being rebuilt: written to, never read (atomic) */
	/* The lost segments the parts' layouts of epoch rec_epoch say are
	 * lost (their node id zeroed): a write that finds one lost beyond
	 * these records it (record_loss) before it completes (under fill) */
	uint64_t recorded;
	uint32_t rec_epoch;
	/* stale reads (check_layout, settle): when this handle last began a
	 * layout check that every part passed (ns, atomic); and the lost
	 * segments, with the epoch recording them, whose loss its writes have
	 * waited out (under lmu) */
	uint64_t checked_ns;
	/* static list: the lost segments whose loss this handle has checked
	 * with a majority of the witnesses (wit_follow; atomic) */
	uint64_t wsynced;
	pthread_mutex_t lmu;
	uint64_t settled;
	uint32_t settled_epoch;
	/* the repairer (its thread, or a caller of em_region_repair) */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t thread;
	bool thread_on, stop, want, busy, autorep;
	int last_rc;
	uint64_t rate;        /* bytes per second, 0: no limit */
	uint64_t done, total; /* bytes of the repair under way (atomic) */
	uint64_t fg_ns;       /* the application's last operation (atomic) */
	uint64_t piece_ns;    /* when the repair's current piece began */
	unsigned share;       /* percent of its time a repair may copy while in use */
	/* the repair under way (its thread only): the etcd lock it holds, the
	 * token and version of its first fence, when it last touched them,
	 * and whether another repairer took over from it */
	struct em_dir_lock *lk;
	uint64_t token, touched_ns;
	uint32_t first_ver;
	unsigned first_seg;
	bool first_up, superseded;
	/* the new parts (fmask) and their layout while they fill, which
	 * carries the progress to other processes on a static list */
	uint64_t fmask;
	unsigned fnode;
	struct em_layout flay;
	/* a drain's node (pool index + 1, 0: none): its parts, cut off, are
	 * rebuilt elsewhere, never on it */
	unsigned evict; /* atomic */
	/* EC, once mapped: the buffers and requests of one operation, made
	 * when the region is mapped, so that the pager's operations (from its
	 * fault handler) take none from malloc; one operation at a time */
	pthread_mutex_t smu;
	uint8_t *scratch;
	size_t scratch_len;
	struct req *sreq;
	size_t sreq_n;
};

static uint64_t filling(const em_region *r)
{
	return __atomic_load_n(&r->rx->filling, __ATOMIC_ACQUIRE);
}

unsigned em_red_state(const em_region *r)
{
	if (r->rx && (filling(r) || __atomic_load_n(&r->rx->busy, __ATOMIC_RELAXED)))
		return EM_STATE_REPAIRING;
	return __atomic_load_n(&r->lost, __ATOMIC_RELAXED) ? EM_STATE_DEGRADED : EM_STATE_HEALTHY;
}

/* Segment s's node and handle: a repair moves them while others read. */
static uint64_t seg_loc(const em_region *r, unsigned s)
{
	return __atomic_load_n(&r->rx->loc[s], __ATOMIC_ACQUIRE);
}

static unsigned seg_node(const em_region *r, unsigned s)
{
	return (unsigned)(seg_loc(r, s) >> 32);
}

static void set_loc(em_region *r, unsigned s, unsigned node, uint32_t handle)
{
	__atomic_store_n(&r->rx->loc[s], (uint64_t)node << 32 | handle, __ATOMIC_RELEASE);
	__atomic_store_n(&r->node[s], node, __ATOMIC_RELEASE);
	__atomic_store_n(&r->handle[s], handle, __ATOMIC_RELEASE);
}

/* The version a handle knows of a layout: it grows with every layout a
 * repair stores, the one with parts being filled before the finished one
 * of the same epoch. 1 at epoch 0, so a redundant region's writes always
 * carry one (and never go where no fence is checked, ox_chan.c). */
static uint32_t layout_ver(uint32_t epoch, bool filling)
{
	return 2 * epoch + (filling ? 0u : 1u);
}

static uint32_t handle_ver(const em_region *r)
{
	return __atomic_load_n(&r->rx->ver, __ATOMIC_ACQUIRE);
}

/* A new layout version for this handle. For a while after, its atomics
 * take their piece's lock (rep_atomic): a client still finishing one
 * under the layout before may be setting a copy that this one already
 * takes for the primary. */
static void set_ver(em_region *r, uint32_t v)
{
	if (__atomic_exchange_n(&r->rx->ver, v, __ATOMIC_ACQ_REL) != v)
		__atomic_store_n(&r->rx->lock_until,
				 em_now_ns() + 4ull * (uint64_t)r->pool->timeout_ms * 1000000ull,
				 __ATOMIC_RELEASE);
}

/* The name a named region's parts carry on the nodes: its own on a
 * static list, one of their own in etcd mode (the record names it). */
static const char *pname(const em_region *r)
{
	return r->piece[0] ? r->piece : r->name;
}

/* ---- requests to segments ---- */

struct req {
	unsigned seg, node; /* the node it goes to, read with its handle */
	bool sent;          /* post_all: handed to its channel */
	struct em_part p;
};

static bool seg_lost(em_region *r, unsigned seg)
{
	return __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE) >> seg & 1;
}

static void mark_lost(em_region *r, unsigned seg, int why)
{
	uint64_t bit = 1ull << seg;

	if (!(__atomic_fetch_or(&r->lost, bit, __ATOMIC_ACQ_REL) & bit))
		em_log(EM_LOG_WARN, "region %s: node %s lost (%s); serving from the others",
		       r->named ? r->name : "(anonymous)", r->pool->nodes[seg_node(r, seg)].addr,
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
	uint64_t loc = seg_loc(r, seg);

	memset(q, 0, sizeof(*q));
	q->seg = seg;
	q->node = (unsigned)(loc >> 32);
	q->p.wop = wop;
	q->p.handle = (uint32_t)loc;
	q->p.off = off;
}

/* A request again, to where its segment is now and with the version the
 * handle knows now (after a refresh). */
static void req_renew(struct req *q, em_region *r)
{
	uint64_t loc = seg_loc(r, q->seg);

	q->node = (unsigned)(loc >> 32);
	q->p.handle = (uint32_t)loc;
	if (q->p.wop == EM_W_WRITE)
		q->p.aux = handle_ver(r);
	else if (q->p.wop == EM_W_ATOMIC && EM_VER_OF(q->p.aux) != EM_VER_ANY)
		q->p.aux = EM_AOP_OF(q->p.aux) | handle_ver(r) << 8;
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
	q->p.aux = handle_ver(r);
	q->p.req = buf;
	q->p.req_len = len;
}

static void req_atomic(struct req *q, em_region *r, unsigned seg, uint64_t off, unsigned aop,
		       uint64_t operand, uint64_t compare)
{
	req_init(q, r, seg, EM_W_ATOMIC, off);
	q->p.aux = aop | handle_ver(r) << 8;
	em_put64(q->p.inl, operand);
	em_put64(q->p.inl + 8, compare);
	q->p.req = q->p.inl;
	q->p.req_len = 16;
	q->p.resp = q->p.inl;
	q->p.resp_cap = 8;
}

/* Whether a request goes out: to a live segment, or a write (or an atomic
 * following the primary) to one a repair is filling. */
static bool seg_takes(em_region *r, const struct req *rq)
{
	if (!seg_lost(r, rq->seg))
		return true;
	return rq->p.wop != EM_W_READ && (filling(r) >> rq->seg & 1);
}

/* Most parts handed to one channel in one post: a batch on the stack (the
 * pager runs operations from a SIGBUS handler, where malloc is not safe). */
#define POST_BATCH 32

/* Sends those of reqs[0..n) whose status is -EINPROGRESS, each node's in one
 * post (so in one sendmsg, waking the node once) and in their order: a
 * request apiece made every cell of a stripe batch a system call of the
 * client and a wakeup of its node, which on loopback cost more than moving
 * the bytes. The channel keeps copies; each completes into its origin. */
static void post_all(em_queue *q, struct req *reqs, unsigned n)
{
	struct em_part batch[POST_BATCH];

	for (unsigned i = 0; i < n; i++) {
		reqs[i].p.slot = NULL;
		reqs[i].p.tag = ++q->next_tag;
		reqs[i].sent = reqs[i].p.status != -EINPROGRESS;
	}
	for (unsigned i = 0; i < n; i++) {
		struct em_chan *ch = q->ch[reqs[i].node];
		unsigned nb = 0;

		if (reqs[i].sent)
			continue;
		for (unsigned j = i; j < n; j++) {
			if (reqs[j].sent || reqs[j].node != reqs[i].node)
				continue;
			reqs[j].sent = true;
			/* an atomic's operands and old value in the copy's own
			 * inl, as a channel's copy keeps them: an unlock's
			 * requests are gone before their replies come */
			batch[nb] = reqs[j].p;
			if (reqs[j].p.req == reqs[j].p.inl)
				batch[nb].req = batch[nb].inl;
			if (reqs[j].p.resp == reqs[j].p.inl)
				batch[nb].resp = batch[nb].inl;
			nb++;
			if (nb == POST_BATCH) {
				ch->ops->post(ch, batch, nb);
				nb = 0;
			}
		}
		if (nb)
			ch->ops->post(ch, batch, nb);
	}
}

/* Posts reqs[0..n), every one to its segment's node before waiting for any,
 * so the copies or cells of one operation cost one round trip, not n; then
 * waits for all. A request whose segment fails marks it lost (a segment
 * being filled stops being filled: its repair has failed). Requests to
 * segments already lost are not sent and fail with -EHOSTDOWN. Returns how
 * many failed. */
static unsigned run(em_queue *q, em_region *r, struct req *reqs, unsigned n)
{
	unsigned failed = 0, first = UINT_MAX;
	bool many = false;

	for (unsigned i = 0; i < n; i++) {
		struct em_part *p = &reqs[i].p;

		p->origin = p;
		p->status = seg_takes(r, &reqs[i]) ? -EINPROGRESS : -EHOSTDOWN;
		if (p->status != -EINPROGRESS)
			continue;
		if (first == UINT_MAX)
			first = reqs[i].node;
		many |= reqs[i].node != first;
	}
	post_all(q, reqs, n);
	/* Replies from several nodes are slept for, not spun for: on two
	 * cores a spinning client lost its core to the nodes it had just
	 * woken in the middle of its posts (4 KiB replicate:2 writes: the
	 * posts took 50-110 us p50 spinning, 8 us sleeping), and a sleeping
	 * one leaves a core to the second node while the first works. */
	for (unsigned i = 0; i < n; i++) {
		struct em_part *p = &reqs[i].p;

		if (p->status == -EINPROGRESS) {
			struct em_chan *ch = q->ch[reqs[i].node];
			ch->sleep = many;
			while (p->status == -EINPROGRESS && ch->outstanding)
				if (ch->ops->progress(ch, -1) < 0)
					break;
			ch->sleep = false;
		}
		if (p->status == -EINPROGRESS)
			p->status = -EIO;
		if (!p->status && p->wop == EM_W_READ && !(p->wflags & EM_WF_VER) &&
		    p->resp_len != p->aux)
			p->status = -EPROTO;
		if (p->status) {
			failed++;
			if (p->status == -EHOSTDOWN)
				continue;
			if (p->status == -EM_ESTALE) {
				/* fenced by a repair: not lost, behind */
				q->fenced = EM_MAX(q->fenced, p->r_aux ? p->r_aux : 1u);
				continue;
			}
			if (seg_lost(r, reqs[i].seg))
				__atomic_fetch_and(&r->rx->filling, ~(1ull << reqs[i].seg),
						   __ATOMIC_ACQ_REL);
			else
				mark_lost(r, reqs[i].seg, p->status);
		}
	}
	return failed;
}

/* Posts reqs[0..n) and does not wait: their replies are taken off the
 * channels by the next request on them (a channel answers in order) or by
 * em_poll. Only for requests whose outcome nobody needs, like a stripe
 * unlock: a node that fails one is found by the next request that waits. */
static void post_only(em_queue *q, em_region *r, struct req *reqs, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		reqs[i].p.origin = &q->sink;
		reqs[i].p.status = seg_takes(r, &reqs[i]) ? -EINPROGRESS : -EHOSTDOWN;
	}
	post_all(q, reqs, n);
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

/* Requests of one operation: on the stack when few (the paging layer reads
 * from a SIGBUS handler, where malloc is not safe), else on the heap. */
#define STACK_REQS 24

static struct req *reqs_get(struct req *stack, size_t n)
{
	return n <= STACK_REQS ? stack : calloc(n, sizeof(struct req));
}

static void reqs_put(struct req *stack, struct req *reqs)
{
	if (reqs != stack)
		free(reqs);
}

static int rep_read(em_queue *q, em_region *r, uint64_t off, uint8_t *buf, uint64_t len)
{
	unsigned n = pieces(len);
	struct req stack[STACK_REQS], *reqs = reqs_get(stack, n);

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
			reqs_put(stack, reqs);
			return 0;
		}
	}
	reqs_put(stack, reqs);
	return lost_error(r);
}

static int stripes_lock(em_queue *q, em_region *r, uint64_t row0, unsigned nrows, unsigned *segs,
			unsigned *nsegs);
static void stripes_unlock(em_queue *q, em_region *r, uint64_t row0, unsigned nrows,
			   const unsigned *segs, unsigned n, bool wait);

/* Most stripes or pieces one batch locks at once. */
#define BATCH_ROWS 16u

/* Whether a write that went to every copy at once (reqs, n requests per
 * segment) is sure to be on the copies being filled once their repair is
 * done: for each of its requests, the bytes the repair's copy may have
 * read before they were on a copy it reads from (the most any of them
 * says; all, for one that did not take them) must be among those it had
 * written to the filled part before they got there (common/wire.h,
 * EM_WF_COPY). The rest the copy carries, or the write put there after
 * the copy did. */
static bool fill_sure(em_region *r, const struct req *reqs, unsigned n, uint64_t fill)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t read = 0;

		for (unsigned s = 0; s < r->nseg; s++) {
			const struct req *q = &reqs[s * n + i];
			if (fill >> s & 1)
				continue;
			read = EM_MAX(read, q->p.status ? q->p.req_len
							: EM_MIN(q->p.r_off, q->p.req_len));
		}
		for (unsigned s = 0; s < r->nseg; s++) {
			const struct req *q = &reqs[s * n + i];
			if ((fill >> s & 1) && !q->p.status && q->p.r_aux < read)
				return false;
		}
	}
	return true;
}

/* Every copy at once (one round trip), the copies a repair is filling too.
 * With `lock` (a copy is filled, and the write could not tell that its
 * bytes reach it: fill_sure) the writer holds the locks of the pieces it
 * writes, as the repair does of the piece it copies: then no write lands
 * between the repair's read of a piece and its write of it, undone. Else
 * *sure says whether the write can do without (no copy filled: true). */
static int rep_write_span(em_queue *q, em_region *r, uint64_t off, const uint8_t *buf, uint64_t len,
			  bool lock, bool *sure)
{
	unsigned n = pieces(len), live = 0, k = 0, segs[EM_MAX_SEG], ns = 0;
	uint64_t p0 = off / REP_PIECE, p1 = (off + len - 1) / REP_PIECE;
	struct req stack[STACK_REQS], *reqs = reqs_get(stack, (size_t)n * r->nseg);
	int rc;

	if (!reqs)
		return -ENOMEM;
	for (unsigned s = 0; s < r->nseg; s++)
		for (unsigned i = 0; i < n; i++) {
			uint64_t o = (uint64_t)i * EM_MAX_IO;
			req_write(&reqs[k++], r, s, off + o, buf + o,
				  (uint32_t)EM_MIN(len - o, EM_MAX_IO));
		}
	if (lock && (rc = stripes_lock(q, r, p0, (unsigned)(p1 - p0 + 1), segs, &ns))) {
		reqs_put(stack, reqs);
		return rc;
	}
	run(q, r, reqs, k);
	if (lock)
		stripes_unlock(q, r, p0, (unsigned)(p1 - p0 + 1), segs, ns, false);
	else if (sure)
		*sure = !filling(r) || fill_sure(r, reqs, n, filling(r));
	for (unsigned s = 0; s < r->nseg; s++) {
		bool ok = !seg_lost(r, s);
		for (unsigned i = 0; i < n; i++)
			ok &= !reqs[s * n + i].p.status;
		live += ok;
	}
	reqs_put(stack, reqs);
	if (q->fenced)
		return -EM_ESTALE; /* redone whole once the layouts are read again */
	/* a copy that took part of the write and then failed is lost already */
	return live ? 0 : lost_error(r);
}

static int rep_write(em_queue *q, em_region *r, uint64_t off, const uint8_t *buf, uint64_t len)
{
	const uint64_t span = (uint64_t)BATCH_ROWS * REP_PIECE;
	int rc = 0;

	bool sure = true;

	pthread_rwlock_rdlock(&r->rx->fill);
	/* the fill set moves only under the exclusive lock; while a copy is
	 * filled, nearly every write finds its bytes there either way, and
	 * the few on the piece being copied are written again, locked */
	rc = rep_write_span(q, r, off, buf, len, false, &sure);
	for (uint64_t o = off; o < off + len && !rc && !sure;) {
		uint64_t k = EM_MIN(off + len, (o / span + 1) * span) - o;
		rc = rep_write_span(q, r, o, buf + (o - off), k, true, NULL);
		o += k;
	}
	pthread_rwlock_unlock(&r->rx->fill);
	return rc;
}

static unsigned first_live(em_region *r)
{
	unsigned s = 0;

	while (s < r->nseg && seg_lost(r, s))
		s++;
	return s;
}

/* An atomic on replicate:N, resumable: a fence can refuse it after the
 * primary took it, and then only what is left is done, after the layouts
 * are read again. */
struct ratom {
	bool applied;
	uint64_t old, nv, fill;
	unsigned prim, next;
};

static int rep_atomic_run(em_queue *q, em_region *r, const struct em_op *op, uint64_t *value,
			  struct ratom *st)
{
	struct req one, f;

	if (st->applied)
		goto follow;
again:
	for (st->prim = 0; st->prim < r->nseg; st->prim++) {
		if (seg_lost(r, st->prim))
			continue;
		req_atomic(&one, r, st->prim, op->offset, op->atomic_op, op->operand, op->compare);
		if (!run(q, r, &one, 1))
			break;
		if (q->fenced)
			return -EM_ESTALE; /* refused before it was applied */
	}
	if (st->prim == r->nseg)
		return lost_error(r);
	st->applied = true;
	st->old = em_get64(one.p.inl);
	*value = st->old;
	st->nv = atomic_apply(op->atomic_op, st->old, op->operand, op->compare);
	st->next = st->prim + 1;
follow:
	if (st->nv == st->old)
		return 0;
	/* Follow on the other copies, one after another in their order, so a
	 * later copy never holds the change before an earlier one: each must
	 * go from old to nv. A copy that holds something else has not yet
	 * taken an earlier change of the primary, whose client is applying it
	 * now: ask again. If the primary dies meanwhile and no live copy took
	 * this change, it took effect nowhere that survives: run it afresh on
	 * the copy that now leads (its result is the one returned). A client
	 * that died between primary and follow would leave a copy behind for
	 * good, so after twice the request timeout the copy is set anyway.
	 * Copies being filled are the caller's (fill_follow). */
	for (; st->next < r->nseg; st->next++) {
		unsigned s = st->next;
		uint64_t start = em_now_ns();

		while (!seg_lost(r, s)) {
			bool force = (em_now_ns() - start) / 1000000 >
				     2ull * (uint64_t)r->pool->timeout_ms;

			req_atomic(&f, r, s, op->offset, force ? EM_ATOMIC_SWAP : EM_ATOMIC_CAS,
				   st->nv, st->old);
			if (run(q, r, &f, 1) && q->fenced)
				return -EM_ESTALE; /* resumed here */
			if (f.p.status || force || em_get64(f.p.inl) == st->old)
				break;
			/* behind: is the copy that ordered us still there? */
			if (!seg_lost(r, st->prim)) {
				uint8_t w[8];
				struct req probe_rq;
				req_read(&probe_rq, r, st->prim, op->offset, w, 8);
				run(q, r, &probe_rq, 1);
			}
			if (seg_lost(r, st->prim) && first_live(r) == s) {
				st->applied = false;
				goto again;
			}
			struct timespec ts = { 0, 20000 };
			nanosleep(&ts, NULL);
		}
	}
	return 0;
}

/* The copies being filled (`st->fill`) take the word as the copy that
 * ordered the atomic holds it now. The caller holds the word's piece lock,
 * as every client's atomics on it do: so the word is set in the primary's
 * order, and a repair copies the piece before or after, never across. A
 * copy fenced meanwhile (the repair finished) is set again once the
 * layouts are read again, under the same lock. */
static int fill_follow(em_queue *q, em_region *r, uint64_t off, struct ratom *st)
{
	struct req rq[EM_MAX_SEG];
	uint8_t w[8];
	unsigned n = 0, src = st->prim;

	for (;;) {
		struct req rd;
		if (seg_lost(r, src) && (src = first_live(r)) == r->nseg)
			return lost_error(r);
		req_read(&rd, r, src, off, w, 8);
		if (!run(q, r, &rd, 1))
			break;
	}
	for (unsigned s = 0; s < r->nseg; s++)
		if ((st->fill >> s & 1) && s != src)
			req_atomic(&rq[n++], r, s, off, EM_ATOMIC_SWAP, em_get64(w), 0);
	run(q, r, rq, n);
	if (q->fenced)
		return -EM_ESTALE;
	st->fill = 0;
	return 0;
}

static int red_refresh(em_queue *q, em_region *r);

/* An atomic holds its word's piece lock while a copy is filled, so that
 * the repair's copy of the piece never crosses it; and for a while after
 * a layout changed (set_ver), so that a client that has not yet seen the
 * repair end, and still sets the new copy from the old, is never
 * overtaken by one that already takes that copy for the primary. */
static int rep_atomic(em_queue *q, em_region *r, const struct em_op *op, uint64_t *value)
{
	uint64_t piece = op->offset / REP_PIECE;
	unsigned segs[EM_MAX_SEG], ns = 0;
	struct ratom st = { 0 };
	int rc;

	for (;;) {
		q->fenced = 0;
		pthread_rwlock_rdlock(&r->rx->fill);
		if (!ns &&
		    (filling(r) ||
		     em_now_ns() < __atomic_load_n(&r->rx->lock_until, __ATOMIC_ACQUIRE)) &&
		    (rc = stripes_lock(q, r, piece, 1, segs, &ns)))
			ns = 0;
		else
			rc = rep_atomic_run(q, r, op, value, &st);
		/* the fill set moves only under the exclusive lock */
		st.fill |= filling(r);
		if (!rc && st.fill)
			rc = fill_follow(q, r, op->offset, &st);
		pthread_rwlock_unlock(&r->rx->fill);
		if (rc == -EM_ESTALE && !(rc = red_refresh(q, r))) {
			if (st.applied)
				*value = st.old;
			continue; /* the piece lock kept */
		}
		break;
	}
	if (ns)
		stripes_unlock(q, r, piece, 1, segs, ns, false);
	return rc;
}

/* ---- ec:K+M ---- */

/* The stripe-lock token of a queue's current lock: unique to the queue,
 * since its unlocks are posted without waiting and a lock taken next
 * through another queue of the same thread must not mistake the old one
 * for its own; and new for every lock it takes (lock_next), so that a
 * waiter that sees one token for long knows that one holder has held the
 * lock that long, not that the queue took it again and again. */
static uint64_t lock_token(em_queue *q)
{
	if (!q->lock_tok) {
		uint64_t t = em_now_ns() ^ ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)q;
		q->lock_tok = t ? t : 1;
	}
	return q->lock_tok;
}

static void lock_next(em_queue *q)
{
	/* an odd step: every value once before any comes again */
	q->lock_tok = lock_token(q) + 0x9e3779b97f4a7c15ull;
	if (!q->lock_tok)
		q->lock_tok = 1;
}

/* The segments that hold stripe (EC) or piece (replicate) locks for this
 * handle: the first M+1 live of ec:K+M, every live copy of replicate:N, so
 * that any two clients, whichever nodes each believes dead, share one. */
static unsigned lock_segs(em_region *r, unsigned *segs)
{
	unsigned n = 0, want = r->red == EM_RED_EC ? r->red_m + 1u : r->nseg;

	for (unsigned s = 0; s < r->nseg && n < want; s++)
		if (!seg_lost(r, s))
			segs[n++] = s;
	return n;
}

/* Live segments the region needs to be served at all. */
static unsigned need_live(const em_region *r)
{
	return r->red == EM_RED_EC ? r->red_k : 1u;
}

static uint64_t lock_off(em_region *r, uint64_t row)
{
	if (r->red == EM_RED_REPLICATE)
		return rep_lock_base(r) + row * LOCK_WORD;
	return r->rows * r->chunk + row * LOCK_WORD;
}

/* Gives back the locks of rows [row0, row0+nrows) on segs; with `wait`
 * false the unlocks are only posted (the next request on each channel
 * takes their replies), which saves the write a round trip. */
static void stripes_unlock(em_queue *q, em_region *r, uint64_t row0, unsigned nrows,
			   const unsigned *segs, unsigned n, bool wait)
{
	struct req rq[BATCH_ROWS * (EM_RED_MAX_M + 1)];
	unsigned k = 0;

	for (unsigned i = 0; i < nrows; i++)
		for (unsigned j = 0; j < n; j++) {
			req_atomic(&rq[k], r, segs[j], lock_off(r, row0 + i), EM_ATOMIC_CAS, 0,
				   lock_token(q));
			/* a lock taken before a fence is given back after it */
			rq[k++].p.aux = EM_ATOMIC_CAS | EM_VER_ANY << 8;
		}
	if (wait)
		run(q, r, rq, k);
	else
		post_only(q, r, rq, k);
}

/* Takes the locks of rows [row0, row0+nrows) on every lock segment at once;
 * on a partial win gives back what it got and tries again, so two clients
 * never wait on each other in a cycle. A holder seen holding one lock for
 * longer than twice the request timeout is taken to have died, and its
 * lock is taken over; one that was only slow finds that out when it gives
 * the lock back (stripes_release). */
static int stripes_lock(em_queue *q, em_region *r, uint64_t row0, unsigned nrows, unsigned *segs,
			unsigned *nsegs)
{
	uint64_t tok, now, limit = 2000000ull * (uint64_t)r->pool->timeout_ms;
	uint64_t seen[BATCH_ROWS * (EM_RED_MAX_M + 1)] = { 0 };
	uint64_t since[BATCH_ROWS * (EM_RED_MAX_M + 1)] = { 0 };
	struct req rq[BATCH_ROWS * (EM_RED_MAX_M + 1)];
	unsigned spins = 0;

	lock_next(q);
	tok = lock_token(q);
	for (;;) {
		unsigned n = lock_segs(r, segs), k = 0, got = 0;
		uint64_t want[BATCH_ROWS * (EM_RED_MAX_M + 1)];

		if (!n || live_count(r) < need_live(r))
			return lost_error(r);
		now = em_now_ns();
		for (unsigned i = 0; i < nrows; i++)
			for (unsigned j = 0; j < n; j++, k++) {
				/* the same holder's token seen for over the limit */
				want[k] = seen[k] && now - since[k] > limit ? seen[k] : 0;
				req_atomic(&rq[k], r, segs[j], lock_off(r, row0 + i), EM_ATOMIC_CAS,
					   tok, want[k]);
			}
		q->lock_at = now;
		bool failed = run(q, r, rq, k) != 0;
		now = em_now_ns();
		for (unsigned i = 0; i < k; i++) {
			uint64_t v = em_get64(rq[i].p.inl);
			if (rq[i].p.status)
				continue;
			if (v == want[i] || v == tok) {
				got++;
			} else if (v != seen[i]) {
				seen[i] = v;
				since[i] = now;
			}
		}
		if (!failed && got == k) {
			*nsegs = n;
			return 0;
		}
		/* give back every lock we hold (a CAS from our token is a
		 * no-op where we did not win) and try again */
		stripes_unlock(q, r, row0, nrows, segs, n, true);
		if (q->fenced)
			return -EM_ESTALE; /* fenced: read the layouts again first */
		if (live_count(r) < need_live(r))
			return lost_error(r);
		/* back off a little, longer the more often we lost */
		struct timespec ts = { 0, (long)(1000 + (tok % 7) * 1000) *
						  (long)(spins < 20 ? spins + 1 : 20) };
		nanosleep(&ts, NULL);
		spins++;
	}
}

/* Gives back the locks stripes_lock took, and says whether they were this
 * holder's to the end. One held for less than the request timeout was:
 * another takes over only a lock it saw one holder hold for twice that;
 * its unlocks are only posted (waited for with `wait`). One held longer
 * may have been taken over from this holder while it was frozen or
 * starved, and its writes may then have landed over the new holder's: the
 * unlocks are waited for, and false when any found another's token (or
 * none), so that the caller does its stripe again under a new lock. */
static bool stripes_release(em_queue *q, em_region *r, uint64_t row0, unsigned nrows,
			    const unsigned *segs, unsigned n, bool wait)
{
	struct req rq[BATCH_ROWS * (EM_RED_MAX_M + 1)];
	uint64_t tok = lock_token(q);
	unsigned k = 0;
	bool kept = true;

	if (em_now_ns() - q->lock_at < 1000000ull * (uint64_t)r->pool->timeout_ms) {
		stripes_unlock(q, r, row0, nrows, segs, n, wait);
		return true;
	}
	for (unsigned i = 0; i < nrows; i++)
		for (unsigned j = 0; j < n; j++) {
			req_atomic(&rq[k], r, segs[j], lock_off(r, row0 + i), EM_ATOMIC_CAS, 0,
				   tok);
			rq[k++].p.aux = EM_ATOMIC_CAS | EM_VER_ANY << 8;
		}
	run(q, r, rq, k);
	for (unsigned i = 0; i < k; i++)
		if (!rq[i].p.status && em_get64(rq[i].p.inl) != tok)
			kept = false;
	if (!kept)
		em_log(EM_LOG_WARN,
		       "region %s: a stripe lock held %llu ms was taken over; "
		       "its stripe is done again",
		       r->named ? r->name : "(anonymous)",
		       (unsigned long long)((em_now_ns() - q->lock_at) / 1000000));
	return kept;
}

struct ec_ctx {
	em_queue *q;
	em_region *r;
	struct em_ec *ec;
	uint8_t *band[EM_MAX_SEG]; /* a column range of every cell of one stripe */
	uint64_t bandw;            /* bytes of each band */
	struct req *pre;           /* requests made beforehand (npre of them), or NULL */
	size_t npre;
};

/* The handle's coder, made on first use (two threads may race: one wins). */
static struct em_ec *coder(em_region *r)
{
	struct em_ec *ec = __atomic_load_n(&r->rx->ec, __ATOMIC_ACQUIRE), *none = NULL;

	if (ec)
		return ec;
	if (em_ec_create(r->red_k, r->red_m, &ec))
		return NULL;
	if (!__atomic_compare_exchange_n(&r->rx->ec, &none, ec, false, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		em_ec_destroy(ec);
		ec = none;
	}
	return ec;
}

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

/* The healthy path of a read: every piece from its data cell, all at once,
 * with nothing allocated when the pieces are few. 0, or -EAGAIN when some
 * cell did not answer (the caller goes the degraded way). */
static int ec_read_direct(em_queue *q, em_region *r, uint64_t off, uint8_t *buf, uint64_t len,
			  struct req *pre, size_t npre)
{
	uint64_t cell = r->chunk, rowb = cell * r->red_k, o = off;
	unsigned n = 0, bad;
	struct req stack[STACK_REQS];
	struct req *rq = len / cell + 2 <= npre ? pre : reqs_get(stack, len / cell + 2);

	if (!rq)
		return -ENOMEM;
	while (o < off + len) {
		uint64_t row = o / rowb, d = (o % rowb) / cell, w = o % cell;
		uint64_t k = EM_MIN(cell - w, off + len - o);
		req_read(&rq[n++], r, (unsigned)d, row * cell + w, buf + (o - off), (uint32_t)k);
		o += k;
	}
	bad = run(q, r, rq, n);
	if (rq != pre)
		reqs_put(stack, rq);
	return bad ? -EAGAIN : 0;
}

/* The degraded path: stripe by stripe, under its lock so no write is half
 * seen, rebuilding what is lost. */
static int ec_read(struct ec_ctx *c, uint64_t off, uint8_t *buf, uint64_t len)
{
	em_region *r = c->r;
	uint64_t cell = r->chunk, rowb = cell * r->red_k;

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
		if ((rc = stripes_lock(c->q, r, row, 1, segs, &ns)))
			return rc;
		rc = band_read(c, row, lo, hi, need);
		if (!stripes_release(c->q, r, row, 1, segs, ns, false) && !rc)
			continue; /* a writer may have been half way: read it again */
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

/* Runs a stripe batch's writes; one that a repair's fence refuses is sent
 * again, to the parts being filled too, once the layouts are read again.
 * The caller keeps its stripe locks meanwhile, so nobody (the repair
 * included) sees the stripe half written. */
static int run_fenced(em_queue *q, em_region *r, struct req *rq, unsigned n)
{
	int rc;

	q->fenced = 0;
	run(q, r, rq, n);
	while (q->fenced) {
		if ((rc = red_refresh(q, r)))
			return rc;
		q->fenced = 0;
		for (unsigned i = 0; i < n; i++)
			req_renew(&rq[i], r);
		run(q, r, rq, n);
	}
	return 0;
}

/* Writes up to BATCH_ROWS stripes at once: locks them all in one round
 * trip; reads (or rebuilds) the bytes a stripe's parity needs that the
 * write does not bring, which only a partly written first or last stripe
 * has; encodes; writes the changed data and all parity of every stripe in
 * one round trip; posts the unlocks without waiting. A stripe the write
 * covers whole is encoded straight from the caller's buffer; `par` has
 * room for M parity cells of each. 1: the locks were taken over from it
 * meanwhile (stripes_release), and the batch must be done again. */
static int ec_write_batch(struct ec_ctx *c, uint64_t off, const uint8_t *buf, uint64_t len,
			  uint64_t row0, unsigned nrows, uint8_t *par)
{
	em_region *r = c->r;
	unsigned K = r->red_k, M = r->red_m, segs[EM_MAX_SEG], ns, nw = 0;
	uint64_t cell = r->chunk, rowb = cell * K;
	struct req stack[STACK_REQS];
	size_t nq = (size_t)nrows * (K + M);
	struct req *rq = nq <= c->npre ? c->pre : reqs_get(stack, nq);
	int rc;

	if (!rq)
		return -ENOMEM;
	if ((rc = stripes_lock(c->q, r, row0, nrows, segs, &ns))) {
		if (rq != c->pre)
			reqs_put(stack, rq);
		return rc;
	}
	for (unsigned i = 0; i < nrows && !rc; i++) {
		uint64_t row = row0 + i, rs = row * rowb;
		uint64_t o = EM_MAX(off, rs), end = EM_MIN(rs + rowb, off + len);
		uint64_t lo = cell, hi = 0, touched = 0, need = 0;
		uint8_t *data[EM_RED_MAX_K], *parity[EM_RED_MAX_M];

		for (uint64_t p = o; p < end;) {
			uint64_t d = (p - rs) / cell, w = p % cell, k = EM_MIN(cell - w, end - p);
			lo = EM_MIN(lo, w);
			hi = EM_MAX(hi, w + k);
			touched |= 1ull << d;
			p += k;
		}
		/* the band's bytes of each data cell that this write leaves as
		 * they are must be read (or rebuilt) to encode the parity */
		for (unsigned d = 0; d < K; d++) {
			uint64_t a = rs + d * cell + lo, b = rs + d * cell + hi;
			if (a < off || b > off + len)
				need |= 1ull << d;
		}
		if (need) {
			/* the bands hold one stripe: this one's parity is
			 * written from them before the next uses them, so
			 * partial stripes go out one at a time */
			if ((rc = band_read(c, row, lo, hi, need)))
				break;
			for (unsigned d = 0; d < K; d++) {
				uint64_t a = rs + d * cell + lo, b = rs + d * cell + hi;
				uint64_t from = EM_MAX(a, off), to = EM_MIN(b, off + len);
				if (from < to)
					memcpy(c->band[d] + (from - a), buf + (from - off),
					       to - from);
				data[d] = c->band[d];
			}
			for (unsigned j = 0; j < M; j++)
				parity[j] = c->band[K + j];
		} else {
			for (unsigned d = 0; d < K; d++)
				data[d] = (uint8_t *)buf + (rs + d * cell + lo - off);
			for (unsigned j = 0; j < M; j++)
				parity[j] = par + ((size_t)i * M + j) * c->bandw;
		}
		em_ec_encode(c->ec, hi - lo, data, parity);
		for (unsigned d = 0; d < K; d++) {
			uint64_t a = rs + d * cell, from, to;
			if (!(touched >> d & 1))
				continue;
			from = EM_MAX(a + lo, o);
			to = EM_MIN(a + hi, end);
			if (from < to)
				req_write(&rq[nw++], r, d, row * cell + (from - a),
					  buf + (from - off), (uint32_t)(to - from));
		}
		for (unsigned j = 0; j < M; j++)
			req_write(&rq[nw++], r, K + j, row * cell + lo, parity[j],
				  (uint32_t)(hi - lo));
		if (need) {
			rc = run_fenced(c->q, r, rq, nw);
			nw = 0;
		}
	}
	if (!rc)
		rc = run_fenced(c->q, r, rq, nw);
	if (!stripes_release(c->q, r, row0, nrows, segs, ns, false) && !rc)
		rc = 1; /* parity encoded before another's write may have landed after it */
	if (rq != c->pre)
		reqs_put(stack, rq);
	if (!rc && live_count(r) < K)
		rc = lost_error(r);
	return rc;
}

static int ec_exec(em_queue *q, const struct em_op *op)
{
	em_region *r = op->region;
	struct em_red_aux *x = r->rx;
	struct ec_ctx c = { .q = q, .r = r };
	uint64_t cell = r->chunk, rowb = cell * r->red_k;
	uint64_t row0 = op->offset / rowb, row1 = (op->offset + op->len - 1) / rowb;
	uint8_t *mem;
	size_t par = 0, need;
	bool pre;
	int rc;

	if (op->opcode == EM_OP_ATOMIC)
		return -EOPNOTSUPP;
	if (!op->len)
		return 0;
	/* the pager's queues redial nothing; on them, a mapped region's
	 * buffers made beforehand (em_red_map_prepare), never malloc */
	pre = !q->redial && __atomic_load_n(&x->scratch, __ATOMIC_ACQUIRE);
	if (pre) {
		pthread_mutex_lock(&x->smu);
		c.pre = x->sreq;
		c.npre = x->sreq_n;
	}
	if (op->opcode == EM_OP_READ &&
	    (rc = ec_read_direct(q, r, op->offset, op->buf, op->len, c.pre, c.npre)) != -EAGAIN)
		goto out;
	rc = -ENOMEM;
	if (!(c.ec = coder(r)))
		goto out;
	/* one stripe's worth of bands: a band is at most a cell, and no wider
	 * than the op when it stays inside one cell (small ops then stay off
	 * the allocator's mmap path, whose fresh pages cost more than the op);
	 * and parity cells for a batch of whole stripes */
	uint64_t band = op->offset / cell == (op->offset + op->len - 1) / cell ? op->len : cell;
	if (op->opcode == EM_OP_WRITE)
		par = (size_t)EM_MIN(row1 - row0 + 1, BATCH_ROWS) * r->red_m * band;
	c.bandw = band;
	need = (size_t)band * r->nseg + par;
	mem = pre && need <= x->scratch_len ? x->scratch : malloc(need);
	if (!mem)
		goto out;
	for (unsigned s = 0; s < r->nseg; s++)
		c.band[s] = mem + (size_t)s * band;
	if (op->opcode == EM_OP_READ) {
		rc = ec_read(&c, op->offset, op->buf, op->len);
	} else {
		rc = 0;
		for (uint64_t row = row0; row <= row1 && !rc; row += BATCH_ROWS) {
			unsigned n = (unsigned)EM_MIN(row1 - row + 1, BATCH_ROWS);
			/* 1: the batch's locks were taken over before it was
			 * done; done again, the same bytes, fresh parity */
			do
				rc = ec_write_batch(&c, op->offset, op->buf, op->len, row, n,
						    mem + (size_t)band * r->nseg);
			while (rc == 1);
		}
	}
	if (mem != x->scratch)
		free(mem);
out:
	if (pre)
		pthread_mutex_unlock(&x->smu);
	return rc;
}

int em_red_map_prepare(em_region *r, uint64_t max_op)
{
	struct em_red_aux *x = r->rx;
	uint64_t cell = r->chunk;
	size_t bytes, nreq;
	int rc = 0;

	if (r->red != EM_RED_EC || !x)
		return 0;
	if (!coder(r))
		return -ENOMEM;
	/* ec_exec's bands and parity for the stripes an op of max_op touches
	 * (at most a batch); requests for the cells a direct read of max_op
	 * touches, or a batch of stripes */
	uint64_t rows = EM_MIN((uint64_t)BATCH_ROWS, max_op / (cell * r->red_k) + 2);
	bytes = (size_t)(cell * r->nseg + rows * r->red_m * cell);
	nreq = EM_MAX((size_t)BATCH_ROWS * r->nseg, (size_t)(max_op / cell + 2));
	pthread_mutex_lock(&x->smu);
	if (x->sreq_n < nreq) {
		struct req *q = calloc(nreq, sizeof(*q));
		if (q) {
			free(x->sreq);
			x->sreq = q;
			x->sreq_n = nreq;
		} else {
			rc = -ENOMEM;
		}
	}
	if (!rc && x->scratch_len < bytes) {
		uint8_t *b = malloc(bytes);
		if (b) {
			free(x->scratch);
			x->scratch_len = bytes;
			__atomic_store_n(&x->scratch, b, __ATOMIC_RELEASE);
		} else {
			rc = -ENOMEM;
		}
	}
	pthread_mutex_unlock(&x->smu);
	return rc;
}

static int record_loss(em_queue *q, em_region *r);

/* The lost segments the parts' layouts do not say are lost yet. */
static uint64_t unrecorded(em_region *r)
{
	struct em_red_aux *x = r->rx;
	uint64_t m;

	pthread_rwlock_rdlock(&x->fill);
	m = __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE);
	if (x->rec_epoch == __atomic_load_n(&r->epoch, __ATOMIC_ACQUIRE))
		m &= ~x->recorded;
	pthread_rwlock_unlock(&x->fill);
	return m;
}

static int red_exec(em_queue *q, const struct em_op *op, uint64_t *value);
static int settle(em_queue *q, em_region *r);
static int check_layout(em_queue *q, em_region *r, uint64_t start);

/* A write or atomic that left a lost segment behind (it reached the
 * others only) completes once the loss is recorded with the surviving
 * parts and every reader has learnt it (settle): a node that was only late
 * (frozen, cut off a while) holds the old bytes, and neither a client
 * opening the region later nor one that has it open must read them. */
static int red_end(em_queue *q, em_region *r, unsigned opcode)
{
	if (opcode != EM_OP_READ && r->named && __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE))
		return settle(q, r);
	return 0;
}

int em_red_exec(em_queue *q, const struct em_op *op, uint64_t *value)
{
	int rc = red_exec(q, op, value), rec;

	if (rc >= 0 && (rec = red_end(q, op->region, op->opcode)))
		return rec;
	return rc;
}

/* What every operation (or group of them) does first: tells a repair's
 * pace() that the application is using the region, and a read of a named
 * region whose last layout check is older than its lease checks again
 * (check_layout), so that it never reads a part that returned stale. */
static int red_begin(em_queue *q, em_region *r, unsigned opcode)
{
	uint64_t now = em_now_ns();

	if (r->rx)
		__atomic_store_n(&r->rx->fg_ns, now, __ATOMIC_RELAXED);
	if (opcode == EM_OP_READ && r->named && r->rx &&
	    now > __atomic_load_n(&r->rx->checked_ns, __ATOMIC_ACQUIRE) +
			    READ_LEASE_MS * 1000000ull)
		return check_layout(q, r, now);
	return 0;
}

static int red_exec(em_queue *q, const struct em_op *op, uint64_t *value)
{
	em_region *r = op->region;
	int rc;

	*value = 0;
	if ((rc = red_begin(q, r, op->opcode)))
		return rc;
	if (r->red == EM_RED_REPLICATE && op->opcode == EM_OP_ATOMIC)
		return rep_atomic(q, r, op, value);
	/* a write a repair's fence refused was applied nowhere, or wholly
	 * where it was: done again, the same bytes, once the layouts are
	 * read again */
	for (;;) {
		q->fenced = 0;
		if (r->red == EM_RED_EC)
			rc = ec_exec(q, op);
		else if (!op->len)
			rc = 0;
		else if (op->opcode == EM_OP_READ)
			rc = rep_read(q, r, op->offset, op->buf, op->len);
		else
			rc = rep_write(q, r, op->offset, op->buf, op->len);
		if (rc != -EM_ESTALE)
			return rc;
		if ((rc = red_refresh(q, r)))
			return rc;
	}
}

/* ---- a submission's operations together ---- */

/* Most requests one group of replicated operations posts together: on the
 * stack (the paging layer submits from a SIGBUS handler). */
#define GROUP_REQS 64u

/* The requests a replicated read or write that may join a group posts (0:
 * it runs on its own: an atomic, an empty one, EC). */
static unsigned group_reqs(const struct em_op *op)
{
	const em_region *r = op->region;

	if (r->red != EM_RED_REPLICATE || !op->len ||
	    (op->opcode != EM_OP_READ && op->opcode != EM_OP_WRITE))
		return 0;
	return pieces(op->len) * (op->opcode == EM_OP_READ ? 1u : r->nseg);
}

/* Reads ops[0..n) of one replicated region from its first live copy, all
 * posted before any is waited for. A read that failed there is run again
 * on its own (rep_read goes on to the next copy): a group holds reads
 * only, so no write of the group can come between. */
static void rep_read_group(em_queue *q, em_region *r, const struct em_op *const *ops, unsigned n,
			   int *rc)
{
	struct req reqs[GROUP_REQS];
	unsigned k = 0, s = first_live(r);

	if (s == r->nseg) {
		for (unsigned j = 0; j < n; j++)
			rc[j] = lost_error(r);
		return;
	}
	for (unsigned j = 0; j < n; j++)
		for (uint64_t o = 0; o < ops[j]->len; o += EM_MAX_IO)
			req_read(&reqs[k++], r, s, ops[j]->offset + o, (uint8_t *)ops[j]->buf + o,
				 (uint32_t)EM_MIN(ops[j]->len - o, EM_MAX_IO));
	q->fenced = 0;
	run(q, r, reqs, k);
	k = 0;
	for (unsigned j = 0; j < n; j++) {
		bool ok = true;
		uint64_t v;

		for (unsigned i = pieces(ops[j]->len); i; i--)
			ok &= !reqs[k++].p.status;
		rc[j] = ok ? 0 : red_exec(q, ops[j], &v);
	}
}

/* Writes ops[0..n) of one replicated region to every copy, all posted
 * before any is waited for: one round trip for the group, as rep_write
 * takes for one. While a copy is filled a write may need the pieces'
 * locks (fill_sure), so then each runs on its own, as before. A write a
 * repair's fence refused is done again on its own once the layouts are
 * read again (the others of the group were applied: nothing refused them). */
static void rep_write_group(em_queue *q, em_region *r, const struct em_op *const *ops, unsigned n,
			    int *rc)
{
	struct req reqs[GROUP_REQS];
	unsigned k = 0, first[GROUP_REQS];
	bool fenced;

	pthread_rwlock_rdlock(&r->rx->fill);
	if (filling(r)) {
		pthread_rwlock_unlock(&r->rx->fill);
		for (unsigned j = 0; j < n; j++) {
			uint64_t v;
			rc[j] = red_exec(q, ops[j], &v);
		}
		return;
	}
	/* each op's requests as rep_write_span lays them out: by copy, then
	 * by piece */
	for (unsigned j = 0; j < n; j++) {
		unsigned np = pieces(ops[j]->len);

		first[j] = k;
		for (unsigned s = 0; s < r->nseg; s++)
			for (unsigned i = 0; i < np; i++) {
				uint64_t o = (uint64_t)i * EM_MAX_IO;
				req_write(&reqs[k++], r, s, ops[j]->offset + o,
					  (const uint8_t *)ops[j]->buf + o,
					  (uint32_t)EM_MIN(ops[j]->len - o, EM_MAX_IO));
			}
	}
	q->fenced = 0;
	run(q, r, reqs, k);
	fenced = q->fenced;
	for (unsigned j = 0; j < n; j++) {
		unsigned np = pieces(ops[j]->len), live = 0;
		bool refused = false;

		for (unsigned s = 0; s < r->nseg; s++) {
			bool ok = true;
			for (unsigned i = 0; i < np; i++) {
				const struct req *rq = &reqs[first[j] + s * np + i];
				ok &= !rq->p.status;
				refused |= rq->p.status == -EM_ESTALE;
			}
			live += ok;
		}
		rc[j] = refused ? -EM_ESTALE : live ? 0 : lost_error(r);
	}
	pthread_rwlock_unlock(&r->rx->fill);
	if (fenced) {
		int rr = red_refresh(q, r);

		for (unsigned j = 0; j < n; j++) {
			uint64_t v;
			if (rc[j] == -EM_ESTALE)
				rc[j] = rr ? rr : red_exec(q, ops[j], &v);
		}
	}
}

void em_red_exec_many(em_queue *q, const struct em_op *const *ops, unsigned n, int *rc,
		      uint64_t *value)
{
	for (unsigned i = 0, j; i < n; i = j) {
		const struct em_op *op = ops[i];
		em_region *r = op->region;
		unsigned reqs = group_reqs(op);

		/* consecutive reads, or writes, of one replicated region */
		for (j = i + 1; reqs && j < n; j++) {
			unsigned more = group_reqs(ops[j]);
			if (!more || ops[j]->region != r || ops[j]->opcode != op->opcode ||
			    reqs + more > GROUP_REQS)
				break;
			reqs += more;
		}
		if (j - i < 2) {
			rc[i] = em_red_exec(q, op, &value[i]);
			continue;
		}
		int pre = red_begin(q, r, op->opcode), rec;

		for (unsigned t = i; t < j; t++) {
			value[t] = 0;
			rc[t] = pre;
		}
		if (pre)
			continue;
		if (op->opcode == EM_OP_READ) {
			rep_read_group(q, r, ops + i, j - i, rc + i);
			continue;
		}
		rep_write_group(q, r, ops + i, j - i, rc + i);
		/* as em_red_exec: a loss is settled before the writes complete */
		rec = red_end(q, r, op->opcode);
		for (unsigned t = i; rec && t < j; t++)
			if (rc[t] >= 0)
				rc[t] = rec;
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

/* Waits, when the repair is throttled, until its `done` bytes since
 * `start` fit the rate and, while the application is using the region (an
 * operation in the last 10 ms), until the repair has spent at most
 * ETHERMEM_REPAIR_SHARE percent of the time copying. The copy's requests share the nodes, the
 * links and the client's cores with the application's; a rate alone cannot
 * know how much of them the application needs, and a region nobody uses is
 * rebuilt at the full rate. false: the handle is closing, stop. */
static bool pace(em_region *r, bool throttled, uint64_t start, uint64_t done)
{
	struct em_red_aux *x = r->rx;
	uint64_t now = em_now_ns(), due = 0;
	bool go;

	if (throttled && x->rate)
		due = start + (uint64_t)((double)done * 1e9 / (double)x->rate);
	if (throttled && x->share < 100 &&
	    now - __atomic_load_n(&x->fg_ns, __ATOMIC_RELAXED) < 10000000ull) {
		uint64_t began = x->piece_ns > start ? x->piece_ns : start;
		uint64_t rest = (now - began) * (100 - x->share) / x->share;
		if (now + rest > due)
			due = now + rest;
	}
	pthread_mutex_lock(&x->mu);
	while (!x->stop && em_now_ns() < due) {
		struct timespec ts = { (time_t)(due / 1000000000ull), (long)(due % 1000000000ull) };
		pthread_cond_timedwait(&x->cv, &x->mu, &ts);
	}
	go = !x->stop;
	pthread_mutex_unlock(&x->mu);
	x->piece_ns = em_now_ns();
	return go;
}

/* The queue a fill copies on: its own connections, so that the copy
 * never holds the pool lock that the application's synchronous calls
 * take (with the pool's default queue, every piece's three round trips
 * held it, and the foreground got a tenth of its operations done while a
 * repair ran). The piece and stripe locks on the nodes keep the copy and
 * the writers apart, whatever queue each uses. */
static int fill_queue(em_region *r, em_queue **q)
{
	return em_queue_create(r->pool, 2 * EM_MAX_SEG, q);
}

/* Whether every segment of `mask` is still being filled (a request to one
 * that failed stopped it). */
static int still_filling(em_region *r, uint64_t mask)
{
	return (filling(r) & mask) == mask ? 0 : -EIO;
}

static int keep(em_region *r, bool now);

/* Copies each whole copy of `mask` from a survivor, a piece at a time, in
 * order, with reads and writes that move the parts' copy cursors
 * (EM_WF_COPY): from those, each write of any client learns whether its
 * bytes reach the new part (fill_sure), and only one that cannot tell
 * takes the locks of its pieces. The copy takes the lock of the piece it
 * copies, as atomics and those writes do: none of them lands between the
 * piece's read and its write and is undone. */
static int fill_rep(em_region *r, uint64_t mask, bool throttled)
{
	uint64_t start = em_now_ns();
	uint8_t *buf = malloc(REP_PIECE);
	em_queue *q = NULL;
	int rc = buf ? fill_queue(r, &q) : -ENOMEM;

	if (!rc) {
		/* the survivors' cursors start over (an earlier repair left
		 * them at the end, which only makes writers lock) */
		struct req z[EM_MAX_SEG];
		unsigned nz = 0;
		for (unsigned s = 0; s < r->nseg; s++)
			if (!seg_lost(r, s)) {
				req_read(&z[nz], r, s, 0, NULL, 0);
				z[nz++].p.wflags = EM_WF_COPY;
			}
		run(q, r, z, nz);
	}
	for (uint64_t off = 0; off < r->size && !rc;) {
		uint32_t k = (uint32_t)EM_MIN(REP_PIECE, r->size - off);
		unsigned segs[EM_MAX_SEG], ns, src = r->nseg, nw = 0;
		struct req w[EM_MAX_SEG];
		bool again = false;

		q->fenced = 0;
		if (!(rc = stripes_lock(q, r, off / REP_PIECE, 1, segs, &ns))) {
			for (src = 0; src < r->nseg; src++) {
				struct req rd;
				if (seg_lost(r, src))
					continue;
				req_read(&rd, r, src, off, buf, k);
				rd.p.wflags = EM_WF_COPY;
				if (!run(q, r, &rd, 1))
					break;
			}
			if (src < r->nseg) {
				for (unsigned s = 0; s < r->nseg; s++)
					if (mask >> s & 1) {
						req_write(&w[nw], r, s, off, buf, k);
						w[nw++].p.wflags = EM_WF_COPY;
					}
				run(q, r, w, nw);
			}
			/* taken over meanwhile: a writer's bytes may have
			 * landed between the copy's read and its write */
			again = !stripes_release(q, r, off / REP_PIECE, 1, segs, ns, false);
			if (src == r->nseg)
				rc = lost_error(r);
		}
		if (again && !rc)
			continue;
		if (!rc && !(rc = still_filling(r, mask)))
			__atomic_fetch_add(&r->rx->done, k, __ATOMIC_RELAXED);
		if (!rc)
			rc = keep(r, false);
		if (!rc && !pace(r, throttled, start, off + k))
			rc = -ECANCELED;
		off += REP_PIECE;
	}
	em_queue_destroy(q);
	free(buf);
	return rc;
}

/* Rebuilds the cells of `mask` stripe by stripe, each under the stripe's
 * lock, which every writer of the stripe takes too. */
static int fill_ec(em_region *r, uint64_t mask, bool throttled)
{
	struct ec_ctx c = { .r = r, .ec = coder(r), .bandw = r->chunk };
	uint64_t start = em_now_ns(), cell = r->chunk;
	uint8_t *mem;
	int rc;

	if (!c.ec)
		return -ENOMEM;
	mem = malloc((size_t)cell * r->nseg);
	if (!mem)
		return -ENOMEM;
	if ((rc = fill_queue(r, &c.q))) {
		free(mem);
		return rc;
	}
	for (unsigned i = 0; i < r->nseg; i++)
		c.band[i] = mem + (size_t)i * cell;
	for (uint64_t row = 0; row < r->rows && !rc;) {
		unsigned segs[EM_MAX_SEG], ns, nw = 0;
		struct req w[EM_MAX_SEG];
		bool again = false;

		c.q->fenced = 0;
		if (!(rc = stripes_lock(c.q, r, row, 1, segs, &ns))) {
			rc = band_read(&c, row, 0, cell, mask);
			if (!rc) {
				for (unsigned s = 0; s < r->nseg; s++)
					if (mask >> s & 1)
						req_write(&w[nw++], r, s, row * cell, c.band[s],
							  (uint32_t)cell);
				run(c.q, r, w, nw);
			}
			/* taken over meanwhile: a writer's bytes may have
			 * landed before the rebuilt cells, which undid them */
			again = !stripes_release(c.q, r, row, 1, segs, ns, true);
		}
		if (again && !rc)
			continue;
		if (!rc && !(rc = still_filling(r, mask)))
			__atomic_fetch_add(&r->rx->done,
					   cell * (uint64_t)__builtin_popcountll(mask),
					   __ATOMIC_RELAXED);
		if (!rc)
			rc = keep(r, false);
		if (!rc && !pace(r, throttled, start, (row + 1) * cell))
			rc = -ECANCELED;
		row++;
	}
	em_queue_destroy(c.q);
	free(mem);
	return rc;
}

/* The region's layout with `flags` (EM_LAYOUT_*) into out, the segments
 * of `gone` named by no node (a zero id: an opener finds them lost, and
 * never takes a stale part on a node that comes back). */
static int layout_with(const em_region *r, unsigned flags, uint64_t gone, uint8_t *out, size_t cap)
{
	struct em_layout l;
	int ll = em_region_layout(r, out, cap);

	if (ll < 0 || (!flags && !gone))
		return ll;
	if (em_layout_decode(out, (size_t)ll, &l))
		return -EINVAL;
	l.flags = (uint8_t)flags;
	for (unsigned s = 0; s < l.nseg; s++)
		if (gone >> s & 1)
			memset(l.ids[s], 0, EM_NODE_ID_LEN);
	return em_layout_encode(out, cap, &l);
}

/* Stores the finished layout with every part of `mask`, the rebuilt ones
 * (no longer marked as being filled) and the survivors (the new epoch). A
 * node that does not take it keeps the older one, which an opener passes
 * over. */
static void relayout(em_region *r, const em_region *next, uint64_t mask)
{
	uint8_t layout[EM_MAX_LAYOUT], req[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	uint8_t resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	uint64_t gone = __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE);
	int ll = layout_with(next, 0, gone, layout, sizeof(layout)), n;

	if (ll < 0)
		return;
	/* this layout records what is lost now: no write records it again */
	pthread_rwlock_wrlock(&r->rx->fill);
	r->rx->recorded = gone;
	r->rx->rec_epoch = next->epoch;
	pthread_rwlock_unlock(&r->rx->fill);
	n = em_namelayout_encode(req, sizeof(req), pname(r), layout, (uint16_t)ll);
	if (n < 0)
		return;
	for (unsigned s = 0; s < r->nseg; s++) {
		struct em_part res;
		unsigned node = next->node[s];
		int rc;

		if (!(mask >> s & 1))
			continue;
		rc = em_ctl(r->pool, node, EM_W_CREATE, 0, EM_WC_NAMED | EM_WC_RELAYOUT,
			    em_red_seg_bytes(r, s), req, (uint32_t)n, resp, sizeof(resp), &res);
		if (rc)
			em_log(EM_LOG_WARN, "region %s: node %s kept the old layout (%s)", r->name,
			       r->pool->nodes[node].addr, em_strerror(rc));
		else
			em_ctl(r->pool, node, EM_W_CLOSE, res.r_region, 0, 0, NULL, 0, NULL, 0,
			       NULL);
	}
}

/* ---- following other clients' repairs ---- */

/* A control request on q's own channel to `node`: the caller may hold the
 * pool lock (a synchronous call) or be the paging layer. */
static int qctl(em_queue *q, unsigned node, struct em_part *p)
{
	struct em_chan *ch = node < q->n ? q->ch[node] : NULL;

	if (!ch || ch->broken)
		return -EHOSTDOWN;
	return em_chan_call(q, ch, p);
}

static int node_of(em_pool *pool, const uint8_t *id)
{
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		uint8_t have[EM_NODE_ID_LEN];
		em_node_id(pool, i, have);
		if (!memcmp(have, id, EM_NODE_ID_LEN))
			return (int)i;
	}
	return -1;
}

/* Reads the layouts the nodes hold for the region's name and follows them:
 * the newest finished one says where each segment is (a part another
 * client rebuilt is taken as it is: it is whole); a newer one stored with
 * parts being filled names those parts, which join this handle as being
 * filled, so its writes reach them. A segment found nowhere is lost; one
 * this handle found lost stays lost unless the layout moved it (its node
 * may have come back having missed writes). */
static int refresh_once(em_queue *q, em_region *r)
{
	struct em_red_aux *x = r->rx;
	em_pool *pool = r->pool;
	uint8_t req[3 + EM_NAME_MAX], resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	uint32_t h[EM_MAX_SEG] = { 0 }, ep[EM_MAX_SEG] = { 0 };
	bool fl[EM_MAX_SEG] = { false }, used[EM_MAX_SEG] = { false }, hb = false, hf = false;
	bool fill_whole = true;
	struct em_layout base, fill, l;
	unsigned nn = EM_MIN(q->n, em_pool_n(pool));
	uint64_t lost, fillm, newloc[EM_MAX_SEG], oldloc[EM_MAX_SEG], moved = 0, drop = 0, gone = 0;
	int n = em_namelayout_encode(req, sizeof(req), pname(r), NULL, 0);

	if (n < 0)
		return n;
	for (unsigned i = 0; i < nn && i < EM_MAX_SEG; i++) {
		struct em_part p = { .wop = EM_W_OPEN,
				     .req = req,
				     .req_len = (uint32_t)n,
				     .resp = resp,
				     .resp_cap = sizeof(resp) };
		char nm[EM_NAME_MAX + 1];
		const uint8_t *lay;
		uint16_t ll;

		if (qctl(q, i, &p))
			continue;
		if (em_namelayout_decode(resp, p.resp_len, nm, &lay, &ll) ||
		    em_layout_decode(lay, ll, &l) || l.size != r->size || l.chunk != r->chunk ||
		    l.nseg != r->nseg || l.red != r->red || l.k != r->red_k || l.m != r->red_m) {
			struct em_part c = { .wop = EM_W_CLOSE, .handle = p.r_region };
			qctl(q, i, &c);
			continue;
		}
		h[i] = p.r_region;
		ep[i] = l.epoch;
		fl[i] = l.flags & EM_LAYOUT_FILLING;
		if (!fl[i] && (!hb || l.epoch > base.epoch)) {
			base = l;
			hb = true;
		}
		if (fl[i] && (!hf || l.epoch > fill.epoch)) {
			fill = l;
			hf = true;
		}
	}
	if (hf && hb && fill.epoch <= base.epoch)
		hf = false; /* a repair that died before this layout: not ours to follow */
	pthread_rwlock_wrlock(&x->fill);
	lost = __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE);
	fillm = filling(r);
	for (unsigned s = 0; s < r->nseg && hb; s++) {
		static const uint8_t none[EM_NODE_ID_LEN];
		uint64_t bit = 1ull << s, cur = seg_loc(r, s);
		int i = node_of(pool, base.ids[s]);

		oldloc[s] = newloc[s] = cur;
		if (!memcmp(base.ids[s], none, EM_NODE_ID_LEN))
			gone |= bit; /* a loss the layout records */
		if (i >= 0 && i < EM_MAX_SEG && h[i] && !fl[i]) {
			if ((unsigned)(cur >> 32) != (unsigned)i) {
				/* rebuilt elsewhere by another client's repair */
				newloc[s] = (uint64_t)i << 32 | h[i];
				used[i] = true;
				moved |= bit;
				lost &= ~bit;
			} else if (fillm & bit) {
				lost &= ~bit; /* the part being filled is finished */
			}
			fillm &= ~bit;
			continue;
		}
		lost |= bit;
		if (hf && memcmp(fill.ids[s], base.ids[s], EM_NODE_ID_LEN)) {
			int j = node_of(pool, fill.ids[s]);
			if (j >= 0 && j < EM_MAX_SEG && h[j] && fl[j] && ep[j] == fill.epoch) {
				if (!((fillm & bit) && (unsigned)(cur >> 32) == (unsigned)j)) {
					newloc[s] = (uint64_t)j << 32 | h[j];
					used[j] = true;
					moved |= bit;
				}
				fillm |= bit;
				continue;
			}
			fill_whole = false;
		}
		if (fillm & bit)
			drop |= bit; /* a part being filled whose repair was undone */
		fillm &= ~bit;
	}
	if (hb) {
		for (unsigned s = 0; s < r->nseg; s++)
			if (moved >> s & 1)
				set_loc(r, s, (unsigned)(newloc[s] >> 32), (uint32_t)newloc[s]);
		__atomic_store_n(&r->lost, lost, __ATOMIC_RELEASE);
		__atomic_store_n(&x->filling, fillm, __ATOMIC_RELEASE);
		if (base.epoch > r->epoch)
			__atomic_store_n(&r->epoch, base.epoch, __ATOMIC_RELEASE);
		if (base.epoch >= x->rec_epoch) {
			x->recorded = gone;
			x->rec_epoch = base.epoch;
		}
		set_ver(r, hf && fill_whole ? layout_ver(fill.epoch, true)
					    : layout_ver(base.epoch, false));
	}
	pthread_rwlock_unlock(&x->fill);
	/* the scan's handles nobody took, and parts left for another */
	for (unsigned i = 0; i < nn && i < EM_MAX_SEG; i++)
		if (h[i] && !used[i]) {
			struct em_part c = { .wop = EM_W_CLOSE, .handle = h[i] };
			qctl(q, i, &c);
		}
	for (unsigned s = 0; s < r->nseg && hb; s++)
		if ((drop >> s & 1) ||
		    ((moved >> s & 1) && (oldloc[s] & 0xffffffffu) && (lost >> s & 1))) {
			struct em_part c = { .wop = EM_W_CLOSE, .handle = (uint32_t)oldloc[s] };
			qctl(q, (unsigned)(oldloc[s] >> 32), &c);
		}
	return hb ? 0 : lost_error(r);
}

/* Follows the layouts after a write or atomic was fenced: until this
 * handle knows a layout at least as new as the fence (a repair stores its
 * new parts before it fences the rest; between its first fence and that,
 * wait), up to the request timeout. */
static int red_refresh(em_queue *q, em_region *r)
{
	/* A fence may be a repairer's that died before it stored its layout:
	 * the next repairer takes it over (the etcd lock runs out, or on a
	 * static list the fence goes stale), so wait for that too. */
	uint64_t wait_ms = (uint64_t)r->pool->timeout_ms +
			   (r->pool->dir ? 3000ull * REPAIR_LEASE_S : 2ull * FENCE_STALE_MS);
	uint64_t deadline = em_now_ns() + wait_ms * 1000000ull;
	uint32_t want = q->fenced;
	int rc;

	if (!r->named)
		return -EPROTO; /* nobody fences an anonymous region */
	for (;;) {
		if ((rc = refresh_once(q, r)) || handle_ver(r) >= want)
			return rc;
		if (em_now_ns() > deadline)
			return -ETIMEDOUT;
		struct timespec ts = { 0, 1000000 };
		/* a synchronous call holds the pool lock, which the repairer
		 * (this process's own, maybe) needs to finish */
		if (q == r->pool->dq)
			pthread_mutex_unlock(&r->pool->lock);
		nanosleep(&ts, NULL);
		if (q == r->pool->dq)
			pthread_mutex_lock(&r->pool->lock);
	}
}

/* Raises the fence of every part not in `lost` to `ver` (one a client or
 * a repair raised higher stays); a part that does not answer is lost. */
static void fence_live(em_queue *q, em_region *r, uint64_t lost, uint32_t ver)
{
	uint8_t nreq[3 + EM_NAME_MAX];
	int nn = em_namelayout_encode(nreq, sizeof(nreq), pname(r), NULL, 0), rc;

	if (nn < 0)
		return;
	for (unsigned s = 0; s < r->nseg; s++) {
		struct em_part p = { .wop = EM_W_FREEZE,
				     .aux = EM_MV_FENCE | ver << 8,
				     .req = nreq,
				     .req_len = (uint32_t)nn };
		if (!(lost >> s & 1) && (rc = qctl(q, seg_node(r, s), &p)) &&
		    em_red_unreachable(rc))
			mark_lost(r, s, rc);
	}
}

/* ---- witnesses: a static list's loss records (replicate:N) ----
 *
 * With etcd the record keeps a loss; on a static list only the nodes do.
 * A record on the surviving copies alone is not enough: when the one copy
 * that took it dies and the copy whose loss it recorded comes back (it
 * was frozen or cut off), that copy looks like a live one whose peer just
 * died, and its old bytes would be served. So on a static list a layout's
 * live copies get witnesses: the nodes of the list that hold none of them
 * and rank first for the region's name (rendezvous hashing over the nodes'
 * addresses, the same for every client), as many as make 2N+1 with the
 * live copies (the whole list when it is shorter). A record replacing
 * layout L is stored with L's live copies and with L's witnesses (under a
 * name of their own, em_witness_name, a part of WIT_BYTES), and counts once
 * a majority of L's copies and witnesses took it. A handle serves a copy
 * at open, or after it found a copy lost, only when a majority of the
 * copies and witnesses of the newest layout it knows answered and none held
 * a newer record: two majorities of one set share a node, so a record is
 * seen. Of 2N+1, N failures leave a majority: the N-1 that replicate:N
 * survives, and one more, since a node that stays dead in a static list
 * may rank as a witness of a layout that a repair made whole again (the
 * repair's layout names new nodes, and brings new witnesses with them).
 * A list of 2N-1 or 2N nodes survives N-1; one of fewer has no witnesses
 * (the old, weaker rule).
 *
 * The cost is off the data path: witnesses are asked at open, when a loss
 * is recorded, and at the first layout check after a handle found a copy
 * lost; never on a healthy region. */
#define WIT_BYTES 8u

#define WIT_CANDS 128u /* placements tried; more: too many to tell */

/* A layout as a handle sees it: the nodes of its copies that it does not
 * name lost, and their witnesses. A copy on a node whose id this process
 * never learned (down since it started) may be on any such node, and
 * which one moves the witnesses: each placement is a candidate (cand: its
 * witnesses as a mask of nodes), wit[] all of theirs, and what is counted
 * is the least that any candidate gets, so a majority of the set that the
 * recorder used is counted whichever it was. */
struct wview {
	unsigned part[EM_MAX_SEG], np;
	unsigned wit[EM_MAX_SEG], nw;
	unsigned size; /* copies and witnesses, the same in each candidate */
	uint64_t cand[WIT_CANDS];
	unsigned nc; /* 0: too many placements to tell, nothing counts */
};

static uint64_t name_hash(const char *s, uint64_t h)
{
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull; /* FNV-1a */
	return h ^ h >> 29;
}

void em_witness_name(const char *name, char *out)
{
	snprintf(out, EM_NAME_MAX + 1, ".w%016llx",
		 (unsigned long long)name_hash(name, 1469598103934665603ull));
}

bool em_is_witness_name(const char *name)
{
	if (strlen(name) != 18 || name[0] != '.' || name[1] != 'w')
		return false;
	for (unsigned i = 2; i < 18; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
			return false;
	return true;
}

static bool wit_on(const em_region *r)
{
	return r->named && !r->pool->dir && r->red == EM_RED_REPLICATE &&
	       em_pool_n(r->pool) >= 2u * r->nseg - 1;
}

static bool in(const unsigned *set, unsigned n, unsigned x)
{
	for (unsigned k = 0; k < n; k++)
		if (set[k] == x)
			return true;
	return false;
}

/* The view of the copies on node[s] for s not in `zeroed`: the best
 * ranked nodes outside them are the witnesses, as many as make 2N+1 in
 * all (or the list). A copy whose loss is recorded leaves a witness's
 * place (its node may take it), so that the view follows from the layout
 * alone: an opener that never reached that node counts the same nodes as
 * the client that recorded the loss. The copies of `unplaced` are on
 * nodes not known here: each placement of them is a candidate. */
static void wit_view(const em_region *r, const unsigned *node, uint64_t zeroed, uint64_t unplaced,
		     struct wview *v)
{
	static const uint8_t none[EM_NODE_ID_LEN];
	uint64_t seed = name_hash(r->name, 1469598103934665603ull), h[EM_MAX_SEG];
	unsigned n = em_pool_n(r->pool), nu = 0, d[EM_MAX_SEG], nd = 0, pick[EM_MAX_SEG];

	v->np = v->nw = v->nc = 0;
	for (unsigned s = 0; s < r->nseg; s++) {
		if (zeroed >> s & 1)
			continue;
		if (unplaced >> s & 1)
			nu++;
		else if (!in(v->part, v->np, node[s]))
			v->part[v->np++] = node[s];
	}
	v->size = EM_MIN(2u * r->nseg + 1, n);
	for (unsigned i = 0; i < n; i++) {
		uint8_t id[EM_NODE_ID_LEN];

		h[i] = name_hash(r->pool->nodes[i].addr, seed);
		em_node_id(r->pool, i, id);
		if (nu && !in(v->part, v->np, i) && !memcmp(id, none, EM_NODE_ID_LEN))
			d[nd++] = i; /* never reached: an unplaced copy may be here */
	}
	if (nd < nu) /* a node that came back under a new id: any */
		for (unsigned i = nd = 0; i < n; i++)
			if (!in(v->part, v->np, i))
				d[nd++] = i;
	if (nd < nu)
		return;
	for (unsigned k = 0; k < nu; k++)
		pick[k] = k;
	for (;;) {
		uint64_t ex = 0, m = 0;
		unsigned k;

		for (k = 0; k < v->np; k++)
			ex |= 1ull << v->part[k];
		for (k = 0; k < nu; k++)
			ex |= 1ull << d[pick[k]];
		for (unsigned w = v->np + nu; w < v->size; w++) {
			unsigned best = n;

			for (unsigned i = 0; i < n; i++)
				if (!(ex >> i & 1) && (best == n || h[i] > h[best]))
					best = i;
			if (best == n)
				break;
			ex |= 1ull << best;
			m |= 1ull << best;
		}
		if (v->nc == WIT_CANDS) {
			v->nc = v->nw = 0;
			return;
		}
		v->cand[v->nc++] = m;
		for (unsigned i = 0; i < n; i++)
			if ((m >> i & 1) && !in(v->wit, v->nw, i))
				v->wit[v->nw++] = i;
		/* the next placement: nu of the nd nodes, in order */
		for (k = nu; k > 0 && pick[k - 1] == nd - nu + k - 1; k--)
			;
		if (k == 0)
			break;
		pick[k - 1]++;
		for (; k < nu; k++)
			pick[k] = pick[k - 1] + 1;
	}
}

/* How many of the view's witnesses in `took` count: the fewest of any
 * candidate's. */
static unsigned wit_count(const struct wview *v, uint64_t took)
{
	unsigned least = v->nc ? UINT_MAX : 0;

	for (unsigned c = 0; c < v->nc; c++)
		least = EM_MIN(least, (unsigned)__builtin_popcountll(v->cand[c] & took));
	return least;
}

/* What a handle knows: its copies' nodes, the ones its layout records lost
 * named by none. */
static void wit_view_handle(em_region *r, struct wview *v)
{
	struct em_red_aux *x = r->rx;
	unsigned node[EM_MAX_SEG];
	uint64_t zeroed, unplaced = 0;

	pthread_rwlock_rdlock(&x->fill);
	zeroed = x->rec_epoch == __atomic_load_n(&r->epoch, __ATOMIC_ACQUIRE) ? x->recorded : 0;
	pthread_rwlock_unlock(&x->fill);
	for (unsigned s = 0; s < r->nseg; s++) {
		node[s] = seg_node(r, s);
		/* still where open left it (no handle): a repair placed it */
		if ((r->unplaced >> s & 1) && !(uint32_t)seg_loc(r, s))
			unplaced |= 1ull << s;
	}
	wit_view(r, node, zeroed, unplaced & ~zeroed, v);
}

/* How many of the view's copies are on nodes of segments not in `lost`. */
static unsigned wit_up(em_region *r, const struct wview *v, uint64_t lost)
{
	unsigned n = 0;

	for (unsigned k = 0; k < v->np; k++) {
		bool up = false;
		for (unsigned s = 0; s < r->nseg; s++)
			up |= seg_node(r, s) == v->part[k] && !(lost >> s & 1);
		n += up;
	}
	return n;
}

/* a majority of the view's copies and witnesses */
static unsigned wit_need(const struct wview *v)
{
	return v->size / 2 + 1;
}

/* A control request to a node: on q's channel, or (q NULL, at open) as a
 * synchronous call. */
static int wctl(em_queue *q, em_pool *pool, unsigned node, struct em_part *p)
{
	uint64_t until;
	int rc;

	if (!q)
		return em_ctl(pool, node, p->wop, p->handle, p->aux, p->off, p->req, p->req_len,
			      p->resp, p->resp_cap, p);
	/* a witness may be a node that q's own operations never reach, and a
	 * mapping's queue does not dial a channel that broke: it is asked
	 * for again, up to the request timeout, while the node is up (the
	 * pool's default queue is mended by the reconnect thread) */
	until = em_now_ns() + (uint64_t)pool->timeout_ms * 1000000ull;
	while ((rc = qctl(q, node, p)) == -EHOSTDOWN && q != pool->dq &&
	       !em_node_down(pool, node) && em_now_ns() < until) {
		struct timespec ts = { 0, 1000000 };

		em_queue_mend(q);
		if (node < q->n && q->ch[node] && !q->ch[node]->broken)
			continue;
		nanosleep(&ts, NULL);
	}
	return rc;
}

/* Reads the view's witnesses' records: the newest that fits r into *best
 * (*have). Returns the witnesses that answered (with a record, or none),
 * as a mask of nodes. */
static uint64_t wit_scan(em_queue *q, em_region *r, const struct wview *v, struct em_layout *best,
			 bool *have)
{
	uint8_t req[3 + EM_NAME_MAX], resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	char wn[EM_NAME_MAX + 1];
	uint64_t answered = 0;
	int n;

	*have = false;
	em_witness_name(r->name, wn);
	if ((n = em_namelayout_encode(req, sizeof(req), wn, NULL, 0)) < 0)
		return 0;
	for (unsigned j = 0; j < v->nw; j++) {
		struct em_part p = { .wop = EM_W_OPEN,
				     .req = req,
				     .req_len = (uint32_t)n,
				     .resp = resp,
				     .resp_cap = sizeof(resp) };
		char nm[EM_NAME_MAX + 1];
		const uint8_t *lay;
		struct em_layout l;
		uint16_t ll;
		int rc = wctl(q, r->pool, v->wit[j], &p);

		if (rc == -ENOENT)
			answered |= 1ull << v->wit[j]; /* no loss recorded there */
		if (rc)
			continue;
		answered |= 1ull << v->wit[j];
		if (!em_namelayout_decode(resp, p.resp_len, nm, &lay, &ll) &&
		    !em_layout_decode(lay, ll, &l) && l.size == r->size && l.nseg == r->nseg &&
		    l.red == r->red && (!*have || l.epoch > best->epoch)) {
			*best = l;
			*have = true;
		}
		struct em_part c = { .wop = EM_W_CLOSE, .handle = p.r_region };
		wctl(q, r->pool, v->wit[j], &c);
	}
	return answered;
}

static int wit_short(const em_region *r, unsigned answered, const struct wview *v)
{
	em_log(EM_LOG_ERR,
	       "region %s: %u of its %u copies and witnesses answer, fewer than the %u needed "
	       "to tell whether its live copies are current; more nodes failed than it survives",
	       r->name, answered, v->size, wit_need(v));
	return -EM_ELOST;
}

/* The segments of node[] that a newer record l does not place there (a
 * recorded loss names no node), and of those the recorded ones. */
static uint64_t wit_stale(em_region *r, const unsigned *node, const struct em_layout *l,
			  uint64_t *gone)
{
	static const uint8_t none[EM_NODE_ID_LEN];
	uint64_t m = 0;

	*gone = 0;
	for (unsigned s = 0; s < r->nseg; s++) {
		uint8_t id[EM_NODE_ID_LEN];

		em_node_id(r->pool, node[s], id);
		if (memcmp(id, l->ids[s], EM_NODE_ID_LEN))
			m |= 1ull << s;
		if (!memcmp(l->ids[s], none, EM_NODE_ID_LEN))
			*gone |= 1ull << s;
	}
	return m;
}

int em_red_witness_open(em_region *r)
{
	uint64_t live = (1ull << r->nseg) - 1;

	if (!em_red_on(r) || !wit_on(r))
		return 0;
	/* a newer record names other witnesses: asked in turn */
	for (unsigned round = 0; round <= r->nseg; round++) {
		struct em_layout l;
		struct wview v;
		uint64_t stale, gone, wans;
		unsigned answered = 0;
		bool have;

		if ((r->lost & live) == live)
			break;
		wit_view(r, r->node, r->lost_rec, r->unplaced & ~r->lost_rec, &v);
		for (unsigned s = 0; s < r->nseg; s++)
			answered += !(r->lost_rec >> s & 1) && !(r->lost >> s & 1);
		wans = wit_scan(NULL, r, &v, &l, &have);
		if (answered + wit_count(&v, wans) < wit_need(&v)) {
			/* a witness only slow to answer (its channel, timed
			 * out, is dialled again): asked once more */
			struct em_layout l2;
			bool have2;

			usleep(1000u * r->pool->timeout_ms);
			wans |= wit_scan(NULL, r, &v, &l2, &have2);
			if (have2 && (!have || l2.epoch > l.epoch)) {
				l = l2;
				have = true;
			}
		}
		answered += wit_count(&v, wans);
		if (answered < wit_need(&v))
			return wit_short(r, answered, &v);
		if (!have || l.epoch < r->epoch)
			break;
		stale = wit_stale(r, r->node, &l, &gone);
		if (l.epoch == r->epoch && !(gone & ~r->lost_rec))
			break;
		r->lost |= l.epoch == r->epoch ? gone : stale;
		r->lost_rec |= gone;
		r->epoch = l.epoch;
	}
	if ((r->lost & live) == live) {
		em_log(EM_LOG_ERR,
		       "region %s: every copy is lost or was recorded lost while it was away; "
		       "more nodes failed than it survives",
		       r->name);
		return -EM_ELOST;
	}
	return 0;
}

/* A handle that found a copy lost asks the witnesses before it serves
 * from the others: a majority of the copies and witnesses of its layout
 * must answer, and a loss recorded after that layout (the copy it would
 * read from was away, and the one that took the writes is gone now) is
 * taken. */
static int wit_follow(em_queue *q, em_region *r)
{
	struct em_red_aux *x = r->rx;
	uint64_t lost = 0;

	for (unsigned round = 0; round <= r->nseg; round++) {
		unsigned node[EM_MAX_SEG], answered;
		uint64_t stale, gone;
		struct em_layout l;
		struct wview v;
		bool have;

		lost = __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE);
		wit_view_handle(r, &v);
		answered = wit_count(&v, wit_scan(q, r, &v, &l, &have)) + wit_up(r, &v, lost);
		if (answered < wit_need(&v))
			return wit_short(r, answered, &v);
		if (!have || l.epoch < __atomic_load_n(&r->epoch, __ATOMIC_ACQUIRE))
			break;
		pthread_rwlock_wrlock(&x->fill);
		for (unsigned s = 0; s < r->nseg; s++)
			node[s] = seg_node(r, s);
		stale = wit_stale(r, node, &l, &gone);
		if (l.epoch == __atomic_load_n(&r->epoch, __ATOMIC_ACQUIRE)) {
			/* of the same epoch: a record merged with another
			 * client's (store.c), whose losses are taken */
			uint64_t had = x->rec_epoch == l.epoch ? x->recorded : 0;
			if (!(gone & ~had)) {
				pthread_rwlock_unlock(&x->fill);
				break;
			}
			stale = gone;
		}
		__atomic_fetch_or(&r->lost, stale, __ATOMIC_ACQ_REL);
		__atomic_store_n(&r->epoch, l.epoch, __ATOMIC_RELEASE);
		x->recorded = gone | (x->rec_epoch == l.epoch ? x->recorded : 0);
		x->rec_epoch = l.epoch;
		if (layout_ver(l.epoch, false) > handle_ver(r))
			set_ver(r, layout_ver(l.epoch, false));
		pthread_rwlock_unlock(&x->fill);
		em_log(EM_LOG_WARN, "region %s: its witnesses recorded a loss at epoch %u", r->name,
		       l.epoch);
	}
	__atomic_store_n(&x->wsynced, __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE),
			 __ATOMIC_RELEASE);
	return live_count(r) < need_live(r) ? lost_error(r) : 0;
}

/* The copies this handle holds live that the layout a witness answered
 * with names no node for. */
static uint64_t wit_merged(em_region *r, const uint8_t *resp, uint32_t len)
{
	static const uint8_t none[EM_NODE_ID_LEN];
	char nm[EM_NAME_MAX + 1];
	const uint8_t *lay;
	struct em_layout l;
	uint64_t m = 0;
	uint16_t ll;

	if (em_namelayout_decode(resp, len, nm, &lay, &ll) || em_layout_decode(lay, ll, &l) ||
	    l.nseg != r->nseg)
		return 0;
	for (unsigned s = 0; s < r->nseg; s++)
		if (!seg_lost(r, s) && !memcmp(l.ids[s], none, EM_NODE_ID_LEN))
			m |= 1ull << s;
	return m;
}

/* Stores the layout that records a loss (ll bytes) with the witnesses of
 * view v (the layout it replaces), whose live copies took it already
 * (`took` of them). 0 once a majority of v took it; -ESTALE when a witness
 * holds a newer record (follow it, then record above it); -EM_ELOST when
 * too few took it. A witness merges two records of one epoch (store.c):
 * one that comes back naming no node for a copy this handle holds live
 * means that another client recorded that copy's loss meanwhile (each
 * wrote to the copy the other lost): the copies of *more are lost, and
 * -EAGAIN says to record again. Of two such clients, the later at their
 * common witness sees the other's record. */
static int wit_record(em_queue *q, em_region *r, const struct wview *v, unsigned took,
		      const uint8_t *layout, int ll, uint64_t *more)
{
	uint8_t req[3 + EM_NAME_MAX + EM_MAX_LAYOUT], resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	char wn[EM_NAME_MAX + 1];
	uint64_t wtook = 0;
	bool stale = false;
	int n;

	em_witness_name(r->name, wn);
	if ((n = em_namelayout_encode(req, sizeof(req), wn, layout, (uint16_t)ll)) < 0)
		return n;
	for (unsigned j = 0; j < v->nw; j++) {
		static const uint32_t how[3] = { EM_WC_NAMED | EM_WC_RELAYOUT,
						 EM_WC_NAMED | EM_WC_EXCL,
						 EM_WC_NAMED | EM_WC_RELAYOUT };
		int rc = -ENOENT;

		/* stored over an older record; made where there is none (one
		 * that another client made meanwhile is stored over) */
		for (unsigned t = 0; t < 3; t++) {
			struct em_part p = { .wop = EM_W_CREATE,
					     .aux = how[t],
					     .off = WIT_BYTES,
					     .req = req,
					     .req_len = (uint32_t)n,
					     .resp = resp,
					     .resp_cap = sizeof(resp) };
			rc = wctl(q, r->pool, v->wit[j], &p);
			if (!rc) {
				struct em_part c = { .wop = EM_W_CLOSE, .handle = p.r_region };
				wctl(q, r->pool, v->wit[j], &c);
				wtook |= 1ull << v->wit[j];
				*more |= wit_merged(r, resp, p.resp_len);
			}
			if (!(t == 0 && rc == -ENOENT) && !(t == 1 && rc == -EEXIST))
				break;
		}
		stale |= rc == -ESTALE;
	}
	if (stale)
		return -ESTALE;
	if (*more)
		return -EAGAIN;
	took += wit_count(v, wtook);
	if (took < wit_need(v)) {
		em_log(EM_LOG_ERR,
		       "region %s: %u of its %u copies and witnesses took the record of a lost "
		       "copy, fewer than the %u needed; more nodes failed than it survives",
		       r->name, took, v->size, wit_need(v));
		return -EM_ELOST;
	}
	return 0;
}

/* etcd mode: the record gets the loss too (the lost segments named by no
 * node, the epoch), so that listings say what the parts' layouts say. */
static int record_loss_dir(em_region *r, uint64_t lost, uint32_t epoch)
{
	struct em_region_rec *rec = calloc(1, sizeof(*rec));
	int rc;

	if (!rec)
		return -ENOMEM;
	snprintf(rec->piece, sizeof(rec->piece), "%s", pname(r));
	rec->nseg = EM_MIN(r->nseg, (unsigned)EM_CLUSTER_MAX_SEG);
	rec->lepoch = epoch;
	for (unsigned s = 0; s < rec->nseg; s++) {
		snprintf(rec->seg_addr[s], sizeof(rec->seg_addr[s]), "%s",
			 r->pool->nodes[seg_node(r, s)].addr);
		if (!(lost >> s & 1))
			em_node_id(r->pool, seg_node(r, s), rec->seg_id[s]);
	}
	rc = em_dir_record_loss(r->pool, r->name, rec);
	free(rec);
	return rc;
}

/* Stores, with every live part, a layout of an epoch newer than any this
 * handle knows in which each lost segment is named by no node, then
 * raises the live parts' fence to it: an opener takes that layout (the
 * newest) and finds the segments lost, and another client's next write
 * is refused until it has read it. A node that fails meanwhile is lost
 * too, and the layout is made again; one that holds a newer layout
 * already (-ESTALE: another client recorded a loss, or a repair ended)
 * is followed, and what it left unrecorded is recorded above it. The
 * nodes merge two layouts of one epoch (daemon/store.c), so two clients
 * that record at once agree. */
static int record_loss(em_queue *q, em_region *r)
{
	struct em_red_aux *x = r->rx;
	uint8_t layout[EM_MAX_LAYOUT], req[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	uint8_t resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];

	for (unsigned tries = 0;; tries++) {
		uint64_t lost = __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE);
		uint32_t epoch =
			EM_MAX(__atomic_load_n(&r->epoch, __ATOMIC_ACQUIRE), handle_ver(r) / 2) + 1;
		uint64_t more = 0;
		bool again = false;
		struct wview wv;
		int ll, n, rc = 0;

		if (live_count(r) < need_live(r))
			return lost_error(r);
		if (wit_on(r))
			wit_view_handle(r, &wv); /* the layout this record replaces */
		if (tries > 2 * EM_MAX_SEG)
			return -EAGAIN;
		pthread_rwlock_rdlock(&x->fill);
		ll = layout_with(r, 0, lost, layout, sizeof(layout));
		pthread_rwlock_unlock(&x->fill);
		if (ll >= 0) {
			struct em_layout l;
			if (em_layout_decode(layout, (size_t)ll, &l))
				return -EINVAL;
			l.epoch = epoch;
			ll = em_layout_encode(layout, sizeof(layout), &l);
		}
		if (ll < 0)
			return ll;
		n = em_namelayout_encode(req, sizeof(req), pname(r), layout, (uint16_t)ll);
		if (n < 0)
			return n;
		for (unsigned s = 0; s < r->nseg && !again; s++) {
			struct em_part p = { .wop = EM_W_CREATE,
					     .aux = EM_WC_NAMED | EM_WC_RELAYOUT,
					     .off = em_red_seg_bytes(r, s),
					     .req = req,
					     .req_len = (uint32_t)n,
					     .resp = resp,
					     .resp_cap = sizeof(resp) };
			if (lost >> s & 1)
				continue;
			rc = qctl(q, seg_node(r, s), &p);
			if (!rc) {
				struct em_part c = { .wop = EM_W_CLOSE, .handle = p.r_region };
				qctl(q, seg_node(r, s), &c);
			} else if (em_red_unreachable(rc)) {
				mark_lost(r, s, rc);
				again = true;
			} else if (rc == -ESTALE) {
				if ((rc = refresh_once(q, r)))
					return rc;
				again = true;
			} else {
				return rc;
			}
		}
		if (again) {
			if (!unrecorded(r))
				return 0;
			continue;
		}
		if (wit_on(r) &&
		    (rc = wit_record(q, r, &wv, wit_up(r, &wv, lost), layout, ll, &more))) {
			if (rc == -EAGAIN) {
				__atomic_fetch_or(&r->lost, more, __ATOMIC_ACQ_REL);
				em_log(EM_LOG_WARN,
				       "region %s: another client recorded a copy of it lost that "
				       "this one wrote to; it is lost here too",
				       r->name);
				continue;
			}
			if (rc != -ESTALE || (rc = wit_follow(q, r)))
				return rc;
			continue;
		}
		pthread_rwlock_wrlock(&x->fill);
		if (epoch > __atomic_load_n(&r->epoch, __ATOMIC_ACQUIRE))
			__atomic_store_n(&r->epoch, epoch, __ATOMIC_RELEASE);
		if (layout_ver(epoch, false) > handle_ver(r))
			set_ver(r, layout_ver(epoch, false));
		x->recorded = lost;
		x->rec_epoch = epoch;
		pthread_rwlock_unlock(&x->fill);
		em_log(EM_LOG_INFO, "region %s: lost part(s) recorded in layout epoch %u", r->name,
		       epoch);
		/* not from the pager, whose fault handler may not allocate or
		 * dial (the record then waits for the repair's) */
		if (r->pool->dir && !q->pager && (rc = record_loss_dir(r, lost, epoch)))
			em_log(EM_LOG_WARN, "region %s: the record in etcd kept its layout (%s)",
			       r->name, em_strerror(rc));
		fence_live(q, r, lost, layout_ver(epoch, false));
		return 0;
	}
}

/* Sleeps until `until` (ns), without the pool lock that a synchronous
 * call on the default queue holds. */
static void hold_off(em_queue *q, em_region *r, uint64_t until)
{
	uint64_t now;

	while ((now = em_now_ns()) < until) {
		struct timespec ts = { (time_t)((until - now) / 1000000000ull),
				       (long)((until - now) % 1000000000ull) };
		if (q == r->pool->dq)
			pthread_mutex_unlock(&r->pool->lock);
		nanosleep(&ts, NULL);
		if (q == r->pool->dq)
			pthread_mutex_lock(&r->pool->lock);
	}
}

/* Makes sure that no reader takes a lost segment's bytes any more before a
 * write that left it behind completes (READ_LEASE_MS): the loss is
 * recorded, the live parts are fenced at the version that records it (a
 * loss another client recorded too: its fence may still be on its way, or
 * never come if that client died), and LOSS_WAIT_MS pass, by which time
 * every reader's check that began before the fence has run out. Once per
 * lost set and recording epoch; every later write goes straight through. */
static int settle(em_queue *q, em_region *r)
{
	struct em_red_aux *x = r->rx;

	for (unsigned tries = 0; tries <= 2 * EM_MAX_SEG; tries++) {
		uint64_t lost = __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE);
		uint32_t ep;
		bool done;
		int rc;

		if (!lost)
			return 0;
		if (unrecorded(r)) {
			if ((rc = record_loss(q, r)))
				return rc;
			continue;
		}
		pthread_rwlock_rdlock(&x->fill);
		ep = x->rec_epoch;
		pthread_rwlock_unlock(&x->fill);
		pthread_mutex_lock(&x->lmu);
		done = x->settled_epoch == ep && !(lost & ~x->settled);
		pthread_mutex_unlock(&x->lmu);
		if (done)
			return 0;
		fence_live(q, r, lost, layout_ver(ep, false));
		if (__atomic_load_n(&r->lost, __ATOMIC_ACQUIRE) != lost)
			continue; /* a part the fence found gone: record it first */
		hold_off(q, r, em_now_ns() + LOSS_WAIT_MS * 1000000ull);
		pthread_mutex_lock(&x->lmu);
		x->settled = lost;
		x->settled_epoch = ep;
		pthread_mutex_unlock(&x->lmu);
		return 0;
	}
	return -EAGAIN;
}

/* Checks the layout version this handle knows with every live part at
 * once (a read of no bytes, EM_WF_VER). A part fenced past it has taken
 * writes that another part may have missed: the handle reads the layouts
 * again, which name that part lost, and checks again. Reads then trust
 * the layout for READ_LEASE_MS from `start`, when the check began. */
static int check_layout(em_queue *q, em_region *r, uint64_t start)
{
	struct req rq[EM_MAX_SEG];
	uint64_t was;
	int rc;

	for (unsigned tries = 0;; tries++) {
		unsigned n = 0;

		if (tries > 2 * EM_MAX_SEG)
			return -EAGAIN;
		for (unsigned s = 0; s < r->nseg; s++)
			if (!seg_lost(r, s)) {
				req_init(&rq[n], r, s, EM_W_READ, 0);
				rq[n].p.aux = handle_ver(r);
				rq[n++].p.wflags = EM_WF_VER;
			}
		q->fenced = 0;
		run(q, r, rq, n);
		if (!q->fenced)
			break;
		if ((rc = red_refresh(q, r)))
			return rc;
		start = em_now_ns();
	}
	q->fenced = 0;
	/* a copy lost since the witnesses were last asked: the one that took
	 * the writes may be gone, and a record of this copy's loss with it */
	if (wit_on(r) &&
	    (__atomic_load_n(&r->lost, __ATOMIC_ACQUIRE) &
	     ~__atomic_load_n(&r->rx->wsynced, __ATOMIC_ACQUIRE)) &&
	    (rc = wit_follow(q, r)))
		return rc;
	was = __atomic_load_n(&r->rx->checked_ns, __ATOMIC_ACQUIRE);
	while (was < start && !__atomic_compare_exchange_n(&r->rx->checked_ns, &was, start, false,
							   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		;
	return 0;
}

/* Raises the fence of the parts of `mask` to `ver`, in segment order (the
 * first is where two repairers of one region meet: the second is told
 * -EALREADY, with the version it met in *met and the milliseconds since
 * its holder last touched it in *age). A node that does not answer holds
 * a lost part. The repair's token goes with it: raising the same version
 * again touches the fence. */
static int fence(em_region *r, uint64_t mask, uint32_t ver, uint32_t *met, uint64_t *age)
{
	uint8_t req[3 + EM_NAME_MAX];
	int n = em_namelayout_encode(req, sizeof(req), pname(r), NULL, 0);

	if (n < 0)
		return n;
	for (unsigned s = 0; s < r->nseg; s++) {
		struct em_part res = { 0 };
		int rc;
		if (!(mask >> s & 1))
			continue;
		rc = em_ctl(r->pool, seg_node(r, s), EM_W_FREEZE, 0, EM_MV_FENCE | ver << 8,
			    r->rx->token, req, (uint32_t)n, NULL, 0, &res);
		if (rc == -EALREADY) {
			if (met)
				*met = res.r_aux;
			if (age)
				*age = res.r_off;
			return rc;
		}
		if (rc && em_red_unreachable(rc))
			mark_lost(r, s, rc);
		else if (rc)
			return rc;
	}
	return 0;
}

/* Tells other processes how far the repair has come, for their listings:
 * with etcd in the value of the repair lock, on a static list in the
 * layout of the first new part (the node takes it only while that part is
 * still this repair's, store.c). */
static void publish(em_region *r)
{
	struct em_red_aux *x = r->rx;
	uint8_t layout[EM_MAX_LAYOUT], req[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	uint8_t resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	struct em_layout l = x->flay;
	struct em_part res;
	int ll, n;

	l.total = __atomic_load_n(&x->total, __ATOMIC_RELAXED);
	l.done = EM_MIN(__atomic_load_n(&x->done, __ATOMIC_RELAXED), l.total);
	if (!x->fmask || !l.total)
		return;
	if (x->lk) {
		em_dir_lock_note(x->lk, l.done, l.total);
		return;
	}
	l.flags = EM_LAYOUT_FILLING | EM_LAYOUT_PROGRESS;
	if ((ll = em_layout_encode(layout, sizeof(layout), &l)) < 0 ||
	    (n = em_namelayout_encode(req, sizeof(req), pname(r), layout, (uint16_t)ll)) < 0)
		return;
	if (!em_ctl(r->pool, x->fnode, EM_W_CREATE, 0, EM_WC_NAMED | EM_WC_RELAYOUT,
		    em_red_seg_bytes(r, (unsigned)__builtin_ctzll(x->fmask)), req, (uint32_t)n,
		    resp, sizeof(resp), &res))
		em_ctl(r->pool, x->fnode, EM_W_CLOSE, res.r_region, 0, 0, NULL, 0, NULL, 0, NULL);
}

/* The repair still holds the region: renews its etcd lock and touches its
 * first fence (each at most every FENCE_TOUCH_MS unless `now`), and
 * publishes its progress. -ECANCELED when another repairer took over (the
 * lock ran out, or the fence was raised past ours): this repair must stop
 * and touch nothing more. */
static int keep(em_region *r, bool now)
{
	struct em_red_aux *x = r->rx;
	int rc;

	if (!r->named)
		return 0;
	/* the lock's lease is renewed by its own thread from when it was
	 * taken: this only asks whether it ran out (free) */
	if (x->lk && !x->superseded && em_dir_lock_keep(x->lk)) {
		x->superseded = true;
		em_log(EM_LOG_WARN, "region %s: the repair lock ran out; this repair stops",
		       r->name);
		return -ECANCELED;
	}
	if (!x->first_up || x->superseded)
		return x->superseded ? -ECANCELED : 0;
	if (!now && em_now_ns() - x->touched_ns < FENCE_TOUCH_MS * 1000000ull)
		return 0;
	if ((rc = fence(r, 1ull << x->first_seg, x->first_ver, NULL, NULL)) == -EALREADY)
		x->superseded = true;
	x->touched_ns = em_now_ns();
	if (x->superseded)
		em_log(EM_LOG_WARN, "region %s: another repairer took over; this one stops",
		       r->name);
	else if (!now)
		publish(r);
	return x->superseded ? -ECANCELED : 0;
}

/* A part of the name on `node` that a repair which died left half made
 * (its layout says filling): deleted, so the node can take a part again.
 * Only for the repair that holds the region (the etcd lock, or a fence it
 * took over). 0 when one was deleted. */
static int clear_debris(em_region *r, unsigned node)
{
	uint8_t req[3 + EM_NAME_MAX], resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	int n = em_namelayout_encode(req, sizeof(req), pname(r), NULL, 0);
	char nm[EM_NAME_MAX + 1];
	const uint8_t *lay;
	struct em_layout l;
	struct em_part res;
	uint16_t ll;
	int rc;

	if (n < 0)
		return n;
	if ((rc = em_ctl(r->pool, node, EM_W_OPEN, 0, 0, 0, req, (uint32_t)n, resp, sizeof(resp),
			 &res)))
		return rc;
	em_ctl(r->pool, node, EM_W_CLOSE, res.r_region, 0, 0, NULL, 0, NULL, 0, NULL);
	/* a part no live layout names any more is debris too: a copy left
	 * on a node that came back after its loss was recorded, or one whose
	 * repair lost to a newer layout (never a live part: a repair places
	 * only on nodes that hold none) */
	if (em_namelayout_decode(resp, res.resp_len, nm, &lay, &ll) ||
	    em_layout_decode(lay, ll, &l) ||
	    (!(l.flags & EM_LAYOUT_FILLING) &&
	     l.epoch >= __atomic_load_n(&r->epoch, __ATOMIC_ACQUIRE)))
		return -EEXIST;
	em_log(EM_LOG_INFO, "region %s: clearing a part a dead repairer left on %s", r->name,
	       r->pool->nodes[node].addr);
	return em_ctl(r->pool, node, EM_W_DELETE, 0, 0, 0, req, (uint32_t)n, NULL, 0, NULL);
}

/* etcd mode: the record gets the layout the repair made (where each part
 * is, the epoch), by a compare on the record it read; a record that moved
 * past this epoch already (a later repair) is left alone. */
static int record_layout(em_region *r, const em_region *next)
{
	struct em_region_rec rec;
	int rc = em_dir_get(r->pool, r->name, &rec, NULL);

	if (rc)
		return rc;
	for (unsigned s = 0; s < next->nseg && s < EM_CLUSTER_MAX_SEG; s++) {
		snprintf(rec.seg_addr[s], sizeof(rec.seg_addr[s]), "%s",
			 r->pool->nodes[next->node[s]].addr);
		em_node_id(r->pool, next->node[s], rec.seg_id[s]);
		rec.seg_piece[s][0] = 0;
	}
	rec.epoch++;
	rec.lepoch = next->epoch;
	return em_dir_relayout(r->rx->lk, r->pool, r->name, &rec);
}

/* Places every lost segment on a node that holds no part of the region,
 * creates it there (its layout the next epoch's), joins it to the handle
 * as being filled, fills it, and makes it live. The caller holds `busy`.
 *
 * Other clients of a named region follow through the parts' fences: the
 * first live part is fenced at the new layout's version first (that is
 * also where a second repairer learns it is second), the new parts are
 * created with the layout that names them, then every other live part is
 * fenced; a write of another client that comes after is refused, and its
 * client reads the layouts, joins the new parts as being filled and sends
 * it again, there too. The finished layout gets a fence of its own, which
 * brings the others to it. A repair that fails after its first fence
 * still moves the epoch (the layout without the new parts), so that the
 * clients it fenced find a layout as new as the fence. */
static int repair_locked(em_region *r, bool throttled)
{
	em_pool *pool = r->pool;
	struct em_red_aux *x = r->rx;
	uint64_t freeb[EM_MAX_SEG] = { 0 }, lost, live;
	bool taken[EM_MAX_SEG] = { false }, fenced = false, over = false;
	unsigned target[EM_MAX_SEG], need, first;
	uint32_t newh[EM_MAX_SEG] = { 0 }, oldver = handle_ver(r);
	unsigned evict = __atomic_load_n(&x->evict, __ATOMIC_ACQUIRE);
	uint64_t oldloc[EM_MAX_SEG];
	em_region next;
	uint8_t layout[EM_MAX_LAYOUT], req[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	uint8_t resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	int rc, ll, n;

	probe(r);
	if (r->named) {
		/* another client's repair may be under way, or done */
		pthread_mutex_lock(&pool->lock);
		rc = refresh_once(pool->dq, r);
		pthread_mutex_unlock(&pool->lock);
		if (rc)
			return rc;
		/* parts being filled: a repair under way, or one that died
		 * with its parts half made; its fence, met below, tells which */
	}
	lost = __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE);
	if (!lost)
		return 0;
	need = need_live(r);
	if (live_count(r) < need)
		return lost_error(r);
	if (r->named) {
		/* the loss first, so that no opener takes a part the lost
		 * node may still hold while this repair rebuilds it, and no
		 * reader either once the new layout leaves that node out */
		pthread_mutex_lock(&pool->lock);
		rc = settle(pool->dq, r);
		pthread_mutex_unlock(&pool->lock);
		if (rc)
			return rc;
		lost = __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE);
	}
	/* free memory per node; nodes that do not answer cannot take a part */
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		uint64_t v[EM_ST__COUNT];
		if (!em_status_raw(pool, i, v) && v[EM_ST_CAPACITY] > v[EM_ST_USED])
			freeb[i] = (v[EM_ST_CAPACITY] - v[EM_ST_USED]) & ~4095ull;
	}
	for (unsigned s = 0; s < r->nseg; s++) {
		oldloc[s] = seg_loc(r, s);
		if (!(lost >> s & 1))
			taken[seg_node(r, s)] = true;
	}
	if (evict && evict <= em_pool_n(pool))
		taken[evict - 1] = true; /* a drain's node takes nothing */
	/* the next layout: each lost segment on the free-est node not in use
	 * (copied under the pool lock: closing a neighbour on the pool's list
	 * of regions writes this one's list links) */
	pthread_mutex_lock(&pool->lock);
	next = *r;
	pthread_mutex_unlock(&pool->lock);
	for (unsigned s = 0; s < r->nseg; s++) {
		unsigned best = em_pool_n(pool);
		uint64_t want = (em_red_seg_bytes(r, s) + 4095) & ~4095ull;

		if (!(lost >> s & 1))
			continue;
		for (unsigned i = 0; i < em_pool_n(pool); i++)
			if (!taken[i] && freeb[i] >= want &&
			    (best == em_pool_n(pool) || freeb[i] > freeb[best]))
				best = i;
		if (best == em_pool_n(pool))
			return -ENOSPC;
		taken[best] = true;
		target[s] = best;
		next.node[s] = best;
	}
	next.epoch = r->epoch + 1;
	live = ((r->nseg < 64 ? 1ull << r->nseg : 0) - 1) & ~lost;
	first = (unsigned)__builtin_ctzll(live);
	/* with etcd, only the lock's holder fences (and takes over fences) */
	if ((rc = keep(r, false)))
		return rc;
	if (r->named) {
		uint32_t met = 0;
		uint64_t age = 0;

		/* from here this handle's writes carry the new version */
		for (;;) {
			set_ver(r, layout_ver(next.epoch, true));
			rc = fence(r, 1ull << first, layout_ver(next.epoch, true), &met, &age);
			if (rc != -EALREADY || over)
				break;
			/* another repairer's fence: live (it touches it), or
			 * left by one that died; with etcd, holding the lock
			 * says it is a dead one's */
			if (!x->lk && age < FENCE_STALE_MS)
				break;
			em_log(EM_LOG_WARN,
			       "region %s: taking over a repair that stopped (fence %u, %llu ms old)",
			       r->name, met, (unsigned long long)age);
			over = true;
			next.epoch = EM_MAX(next.epoch, met / 2 + 1);
		}
		if (rc) {
			set_ver(r, oldver);
			return rc;
		}
		fenced = true;
		x->first_seg = first;
		x->first_ver = layout_ver(next.epoch, true);
		x->first_up = true;
		x->touched_ns = em_now_ns();
		if (filling(r)) {
			/* the parts a dead repairer was filling: not ours */
			pthread_mutex_lock(&pool->lock);
			pthread_rwlock_wrlock(&x->fill);
			__atomic_store_n(&x->filling, 0, __ATOMIC_RELEASE);
			pthread_rwlock_unlock(&x->fill);
			pthread_mutex_unlock(&pool->lock);
		}
	}
	/* the new parts are stored marked as being filled: an opener ignores
	 * them until the end, a fenced client joins them, and the listing
	 * shows the region repairing */
	ll = layout_with(&next, EM_LAYOUT_FILLING, 0, layout, sizeof(layout));
	if (ll < 0) {
		rc = ll;
		goto undo;
	}
	n = em_namelayout_encode(req, sizeof(req), r->named ? pname(r) : NULL, layout,
				 (uint16_t)ll);
	if (n < 0) {
		rc = n;
		goto undo;
	}
	for (unsigned s = 0; s < r->nseg; s++) {
		struct em_part res;
		unsigned fl = r->named ? EM_WC_NAMED | EM_WC_EXCL : 0;

		if (!(lost >> s & 1))
			continue;
		for (;;) {
			uint64_t want = (em_red_seg_bytes(r, s) + 4095) & ~4095ull;
			unsigned nn = em_pool_n(pool), best = nn;

			rc = em_ctl(pool, target[s], EM_W_CREATE, 0, fl, em_red_seg_bytes(r, s),
				    req, (uint32_t)n, resp, sizeof(resp), &res);
			if (rc != -EEXIST && rc != -EM_EDRAINING)
				break;
			/* the name is there already: left by a repair that died.
			 * The repair that holds the region clears it; any other
			 * takes the next node, as it does past a draining node. */
			if (rc == -EEXIST && fenced && clear_debris(r, target[s]) == 0)
				continue;
			for (unsigned i = 0; i < nn; i++)
				if (!taken[i] && freeb[i] >= want &&
				    (best == nn || freeb[i] > freeb[best]))
					best = i;
			if (best == nn)
				break;
			taken[best] = true;
			target[s] = next.node[s] = best;
			if ((ll = layout_with(&next, EM_LAYOUT_FILLING, 0, layout,
					      sizeof(layout))) < 0 ||
			    (n = em_namelayout_encode(req, sizeof(req), pname(r), layout,
						      (uint16_t)ll)) < 0) {
				rc = -EINVAL;
				break;
			}
		}
		if (rc)
			goto undo;
		newh[s] = res.r_region;
	}
	if (r->named && !em_layout_decode(layout, (size_t)ll, &x->flay)) {
		x->fmask = lost;
		x->fnode = target[__builtin_ctzll(lost)];
	}
	/* The new parts join this handle, still lost (nothing reads them) but
	 * being filled (every write reaches them), so no write that comes
	 * while they fill is missing from them afterwards. */
	__atomic_store_n(&x->total,
			 (r->red == EM_RED_EC ? r->rows * r->chunk : r->size) *
				 (uint64_t)__builtin_popcountll(lost),
			 __ATOMIC_RELAXED);
	__atomic_store_n(&x->done, 0, __ATOMIC_RELAXED);
	pthread_mutex_lock(&pool->lock);
	pthread_rwlock_wrlock(&x->fill);
	for (unsigned s = 0; s < r->nseg; s++)
		if (lost >> s & 1)
			set_loc(r, s, target[s], newh[s]);
	__atomic_fetch_or(&x->filling, lost, __ATOMIC_ACQ_REL);
	pthread_rwlock_unlock(&x->fill);
	pthread_mutex_unlock(&pool->lock);
	/* now the other clients: every live part but the first, fenced */
	rc = r->named ? fence(r, live & ~(1ull << first), layout_ver(next.epoch, true), NULL, NULL)
		      : 0;
	if (!rc)
		rc = r->red == EM_RED_REPLICATE ? fill_rep(r, lost, throttled)
						: fill_ec(r, lost, throttled);
	if (!rc)
		rc = keep(r, true); /* still ours, right before it is made live */
	pthread_mutex_lock(&pool->lock);
	pthread_rwlock_wrlock(&x->fill);
	if (!rc)
		__atomic_fetch_and(&r->lost, ~lost, __ATOMIC_ACQ_REL);
	__atomic_fetch_and(&x->filling, ~lost, __ATOMIC_ACQ_REL);
	if (!rc) {
		__atomic_store_n(&r->epoch, next.epoch, __ATOMIC_RELEASE);
		if (r->named)
			set_ver(r, layout_ver(next.epoch, false));
	}
	pthread_rwlock_unlock(&x->fill);
	pthread_mutex_unlock(&pool->lock);
	if (rc)
		goto undo; /* the region stays degraded; a new repair starts over */
	if (r->named) {
		uint64_t all = (r->nseg < 64 ? 1ull << r->nseg : 0) - 1;
		relayout(r, &next, all);
		if (x->lk && (rc = record_layout(r, &next)))
			em_log(EM_LOG_WARN, "region %s: the record in etcd kept epoch %u (%s)",
			       r->name, r->epoch - 1, em_strerror(rc));
		/* the other clients learn that the new parts are whole */
		x->first_up = false;
		x->fmask = 0;
		fence(r, all & ~__atomic_load_n(&r->lost, __ATOMIC_ACQUIRE),
		      layout_ver(next.epoch, false), NULL, NULL);
	}
	em_log(EM_LOG_INFO, "region %s: %d part(s) rebuilt, layout epoch %u",
	       r->named ? r->name : "(anonymous)", __builtin_popcountll(lost), r->epoch);
	return __builtin_popcountll(lost);
undo:
	/* the half-made parts go: their layout is newer than the survivors',
	 * and a client opening the name would take it */
	pthread_mutex_lock(&pool->lock);
	pthread_rwlock_wrlock(&x->fill);
	__atomic_fetch_and(&x->filling, ~lost, __ATOMIC_ACQ_REL);
	for (unsigned s = 0; s < r->nseg; s++)
		if (lost >> s & 1)
			set_loc(r, s, (unsigned)(oldloc[s] >> 32), (uint32_t)oldloc[s]);
	pthread_rwlock_unlock(&x->fill);
	pthread_mutex_unlock(&pool->lock);
	x->first_up = false;
	x->fmask = 0;
	for (unsigned s = 0; s < r->nseg; s++)
		if (newh[s]) {
			em_ctl(pool, target[s], EM_W_CLOSE, newh[s], 0, 0, NULL, 0, NULL, 0, NULL);
			/* a repair another took over leaves its parts to it: the
			 * same node may hold the new repairer's by now */
			if (r->named && !x->superseded) {
				int k = em_namelayout_encode(req, sizeof(req), pname(r), NULL, 0);
				em_ctl(pool, target[s], EM_W_DELETE, 0, 0, 0, req, (uint32_t)k,
				       NULL, 0, NULL);
			}
		}
	if (fenced && !x->superseded) {
		/* the clients fenced find the old parts at the new epoch */
		uint64_t live_now = live & ~__atomic_load_n(&r->lost, __ATOMIC_ACQUIRE);
		pthread_mutex_lock(&pool->lock);
		next = *r;
		pthread_mutex_unlock(&pool->lock);
		next.epoch = r->epoch + 1;
		__atomic_store_n(&r->epoch, next.epoch, __ATOMIC_RELEASE);
		set_ver(r, layout_ver(next.epoch, false));
		relayout(r, &next, live_now);
		fence(r, live_now, layout_ver(next.epoch, false), NULL, NULL);
	}
	return rc;
}

/* With etcd, the repairer of a region is elected: the client that holds
 * its repair lock (-EALREADY while another does). */
static int repair_run(em_region *r, bool throttled)
{
	struct em_red_aux *x = r->rx;
	int rc;

	em_random(&x->token, sizeof(x->token));
	x->token |= 1; /* 0 is "no token" */
	x->superseded = x->first_up = false;
	if (r->named && r->pool->dir &&
	    (rc = em_dir_lock(r->pool, r->name, REPAIR_LEASE_S, &x->lk)))
		return rc;
	rc = repair_locked(r, throttled);
	em_dir_unlock(x->lk);
	x->lk = NULL;
	return rc;
}

/* One repair at a time per handle: the thread's or a caller's. */
static int repair_once(em_region *r, bool throttled)
{
	struct em_red_aux *x = r->rx;
	int rc;

	pthread_mutex_lock(&x->mu);
	while (x->busy && !x->stop)
		pthread_cond_wait(&x->cv, &x->mu);
	if (x->stop) {
		pthread_mutex_unlock(&x->mu);
		return -ECANCELED;
	}
	__atomic_store_n(&x->busy, true, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&x->mu);
	rc = repair_run(r, throttled);
	pthread_mutex_lock(&x->mu);
	__atomic_store_n(&x->busy, false, __ATOMIC_RELAXED);
	x->last_rc = rc;
	pthread_cond_broadcast(&x->cv);
	pthread_mutex_unlock(&x->mu);
	return rc;
}

int em_red_evict(em_region *r, unsigned node)
{
	struct em_red_aux *x = r ? r->rx : NULL;
	uint64_t segs = 0, old[EM_MAX_SEG];
	uint8_t req[3 + EM_NAME_MAX];
	int rc, n;

	if (!x || !r->named)
		return -EINVAL;
	for (unsigned s = 0; s < r->nseg; s++)
		if ((old[s] = seg_loc(r, s)) >> 32 == node)
			segs |= 1ull << s;
	if (!segs)
		return 0;
	/* The old part is cut off first: from here it answers nothing, not
	 * even an open, so every client takes it for lost as if its node had
	 * died, and the repair runs as it does then. It cannot run with the
	 * old part still in use: a client's segment is in one place, and one
	 * that reads and writes the old part never joins the new one while it
	 * is filled, whose copy would then miss that client's writes. */
	n = em_namelayout_encode(req, sizeof(req), pname(r), NULL, 0);
	if (n < 0)
		return n;
	rc = em_ctl(r->pool, node, EM_W_FREEZE, 0, EM_MV_GONE, 0, req, (uint32_t)n, NULL, 0, NULL);
	if (rc && rc != -ENOENT && !em_red_unreachable(rc))
		return rc; /* a part not there, or not answering, is lost already */
	__atomic_store_n(&x->evict, node + 1, __ATOMIC_RELEASE);
	__atomic_fetch_or(&r->lost, segs, __ATOMIC_ACQ_REL);
	rc = repair_once(r, false);
	__atomic_store_n(&x->evict, 0, __ATOMIC_RELEASE);
	for (unsigned s = 0; s < r->nseg && rc >= 0; s++)
		if (seg_node(r, s) == node)
			rc = -EAGAIN; /* another repair came first, or it failed */
	if (rc < 0)
		return rc;
	for (unsigned s = 0; s < r->nseg; s++)
		if (segs >> s & 1) /* this handle's of the old part */
			em_ctl(r->pool, node, EM_W_CLOSE, (uint32_t)old[s], 0, 0, NULL, 0, NULL, 0,
			       NULL);
	return __builtin_popcountll(segs);
}

int em_region_repair(em_region *r)
{
	if (!r || !em_red_on(r) || !r->rx)
		return -EINVAL;
	return repair_once(r, false);
}

/* The background repairer of a handle: wakes when asked, and (with
 * ETHERMEM_AUTO_REPAIR) every fifth of a second to see whether a request
 * found a node dead; repairs at ETHERMEM_REPAIR_RATE. A repair that fails
 * (no node free, too many lost) is tried again later, less often each
 * time. */
static void *repairer(void *arg)
{
	em_region *r = arg;
	struct em_red_aux *x = r->rx;
	uint64_t delay_ms = 0, not_before = 0;
	bool again = false;
	int said = 0;

	pthread_mutex_lock(&x->mu);
	while (!x->stop) {
		bool due = x->want || again ||
			   (x->autorep && __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE));

		if (due && em_now_ns() >= not_before) {
			int rc;

			/* a repair asked for is tried until it is done, as an
			 * automatic one is */
			again = x->want || again;
			x->want = false;
			pthread_mutex_unlock(&x->mu);
			rc = repair_once(r, true);
			pthread_mutex_lock(&x->mu);
			if (rc < 0 && rc != -ECANCELED) {
				if (rc != said)
					em_log(EM_LOG_WARN,
					       "region %s: background repair failed (%s); will retry",
					       r->named ? r->name : "(anonymous)", em_strerror(rc));
				said = rc;
				/* another repairer at work: look again soon, since
				 * taking over from one that died is up to us */
				delay_ms = rc == -EALREADY
						   ? 250
						   : EM_MIN(delay_ms ? delay_ms * 2 : 500, 10000);
				not_before = em_now_ns() + delay_ms * 1000000ull;
			} else {
				said = 0;
				delay_ms = 0;
				not_before = 0;
				again = false;
			}
			continue;
		}
		uint64_t until = em_now_ns() + 200000000ull;
		struct timespec ts = { (time_t)(until / 1000000000ull),
				       (long)(until % 1000000000ull) };
		pthread_cond_timedwait(&x->cv, &x->mu, &ts);
		if (x->want)
			not_before = 0; /* asked outright: no waiting out a failure */
	}
	pthread_mutex_unlock(&x->mu);
	return NULL;
}

static int start_repairer(em_region *r)
{
	struct em_red_aux *x = r->rx;
	int rc = 0;

	pthread_mutex_lock(&x->mu);
	if (!x->thread_on && !x->stop) {
		rc = -pthread_create(&x->thread, NULL, repairer, r);
		x->thread_on = !rc;
	}
	pthread_mutex_unlock(&x->mu);
	return rc;
}

int em_region_repair_start(em_region *r)
{
	int rc;

	if (!r || !em_red_on(r) || !r->rx)
		return -EINVAL;
	if ((rc = start_repairer(r)))
		return rc;
	pthread_mutex_lock(&r->rx->mu);
	r->rx->want = true;
	pthread_cond_broadcast(&r->rx->cv);
	pthread_mutex_unlock(&r->rx->mu);
	return 0;
}

int em_region_stat(const em_region *r, struct em_region_info *info)
{
	size_t stride = info ? em_out_size(info, EM_REGION_INFO_SIZE_0_1) : 0;
	struct em_region_info ri = { .size = sizeof(ri) };

	if (!r || !stride)
		return -EINVAL;
	snprintf(ri.name, sizeof(ri.name), "%s", r->named ? r->name : "");
	ri.bytes = r->size;
	ri.chunk_size = r->chunk;
	ri.nodes = r->nseg;
	ri.redundancy = em_red_on(r) ? r->red : EM_RED_NONE;
	ri.red_k = r->red_k;
	ri.red_m = r->red_m;
	ri.state = em_red_on(r) ? em_red_state(r) : EM_STATE_HEALTHY;
	ri.epoch = __atomic_load_n(&r->epoch, __ATOMIC_ACQUIRE);
	em_red_progress(r, &ri.rebuilt, &ri.to_rebuild);
	em_out_put(info, stride, &ri, sizeof(ri));
	return 0;
}

void em_red_progress(const em_region *r, uint64_t *done, uint64_t *total)
{
	*done = *total = 0;
	if (!em_red_on(r) || !r->rx || !__atomic_load_n(&r->rx->busy, __ATOMIC_ACQUIRE) ||
	    !filling(r))
		return;
	*total = __atomic_load_n(&r->rx->total, __ATOMIC_RELAXED);
	*done = EM_MIN(__atomic_load_n(&r->rx->done, __ATOMIC_RELAXED), *total);
}

int em_red_attach(em_region *r)
{
	struct em_red_aux *x;
	pthread_condattr_t ca;
	int64_t v;

	if (!em_red_on(r))
		return 0;
	x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	pthread_rwlock_init(&x->fill, NULL);
	for (unsigned s = 0; s < r->nseg; s++)
		x->loc[s] = (uint64_t)r->node[s] << 32 | r->handle[s];
	x->ver = layout_ver(r->epoch, false);
	x->recorded = r->lost_rec;
	x->rec_epoch = r->epoch;
	x->wsynced = r->lost; /* an open asked the witnesses (em_red_witness_open) */
	pthread_mutex_init(&x->lmu, NULL);
	pthread_mutex_init(&x->mu, NULL);
	pthread_mutex_init(&x->smu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&x->cv, &ca);
	pthread_condattr_destroy(&ca);
	x->autorep = em_cfg_env_num(EM_CFG_AUTO_REPAIR, &v) ? true : v != 0;
	x->rate = em_cfg_env_num(EM_CFG_REPAIR_RATE, &v) ? 256u << 20 : (uint64_t)v;
	x->share = em_cfg_env_num(EM_CFG_REPAIR_SHARE, &v) ? 25 : (unsigned)v;
	r->rx = x;
	if (x->autorep && start_repairer(r))
		em_log(EM_LOG_WARN, "region %s: no background repair thread",
		       r->named ? r->name : "(anonymous)");
	return 0;
}

void em_red_detach(em_region *r)
{
	struct em_red_aux *x = r->rx;

	if (!x)
		return;
	pthread_mutex_lock(&x->mu);
	x->stop = true;
	pthread_cond_broadcast(&x->cv);
	pthread_mutex_unlock(&x->mu);
	if (x->thread_on)
		pthread_join(x->thread, NULL);
	/* a caller's em_region_repair on another thread has returned: the
	 * handle is being closed, which it may not be while in use */
	em_ec_destroy(x->ec);
	free(x->scratch);
	free(x->sreq);
	pthread_mutex_destroy(&x->smu);
	pthread_mutex_destroy(&x->lmu);
	pthread_rwlock_destroy(&x->fill);
	pthread_mutex_destroy(&x->mu);
	pthread_cond_destroy(&x->cv);
	free(x);
	r->rx = NULL;
}
