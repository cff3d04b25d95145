/*
 * drain.c - emptying a memory node of named regions while clients use them.
 *
 * `ethermem node drain ADDR` runs em_drain_node() in the tool's own pool
 * (etcd mode). The node is told first to take no new regions (EM_W_DRAIN;
 * its etcd record says "draining", so placement skips it). Then each part
 * of a named region that the node holds moves on its own:
 *
 *   1. a new part is created on the node with the most published free
 *      bytes, under a fresh name (a node may already hold a part of the
 *      same region under the region's common part name);
 *   2. the old part is frozen: from then on the node answers writes to it
 *      with EM_ESTALE, and the freeze returns only once no write that came
 *      before it is still being applied;
 *   3. its bytes are copied (reads are still served from it meanwhile);
 *   4. the old part is marked moved: reads now get EM_ESTALE too, so that
 *      no client reads the old part once another may write the new one;
 *   5. the region's record in etcd gets the new part and epoch + 1, by a
 *      transaction that holds only if the record is still the one read in
 *      step 1 (else the part is thawed and the move tried again); an
 *      error there is checked against the record read again, since etcd
 *      may have applied an update whose answer was lost: the new part is
 *      removed only when the record does not list it;
 *   6. the old part is unlinked; handles still open on it keep answering
 *      EM_ESTALE until their clients close them.
 * A client that meets EM_ESTALE re-reads the record (em_drain_refresh);
 * while it still shows the old epoch the move is under way, so it waits a
 * millisecond and asks again, up to its request timeout. A write is thus
 * either applied before the freeze (and copied) or refused and redone on
 * the new part: none is lost. Writes to a part stall for the time its copy
 * takes. Queues do the same without the caller seeing it (queue.c keeps
 * an operation that met EM_ESTALE and posts it again at the new epoch);
 * a client's etcd watch follows every record that changes in its open
 * handles at once, which is what the pager, unable to read etcd from its
 * fault handler, waits for. The old part's handle is closed only a request
 * timeout later (em_drain_sweep), so that a part another queue still has
 * in flight on it meets EM_ESTALE, never a closed or reused handle.
 *
 * A redundant region's part is not moved so: its clients follow repairs,
 * so a repair rebuilds it elsewhere and the old part is cut off right
 * before the new one goes live (move_redundant, em_red_evict).
 *
 * Anonymous regions are private to the client that made them and are in
 * no record, so they are not moved: they stay on the draining node until
 * their clients free them, and the node should be stopped only after that
 * (`ethermem status` shows what a node still holds).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cluster.h"
#include "common/util.h"
#include "lib/internal.h"

void em_drain_sweep(em_pool *pool, bool all)
{
	uint64_t now = em_now_ns(), grace = (uint64_t)pool->timeout_ms * 1000000ull;

	for (struct em_retired **p = &pool->retired; *p;) {
		struct em_retired *t = *p;

		/* A node taken for down (a lease that lapsed under load, a
		 * connection being remade) keeps the entry: dropping it would
		 * leave the part open on the node for as long as this client
		 * stays connected. A fresh session forgets it (em_drain_forget),
		 * a resumed one closes it here once the node is up again. */
		if (!all && (now - t->at_ns < grace || em_node_down(pool, t->node))) {
			p = &t->next;
			continue;
		}
		*p = t->next;
		if (!em_node_down(pool, t->node)) {
			struct em_part c = { .wop = EM_W_CLOSE, .handle = t->handle };
			em_ctl_call(pool, t->node, &c);
		}
		free(t);
	}
}

void em_drain_forget(em_pool *pool, unsigned node)
{
	for (struct em_retired **p = &pool->retired; *p;) {
		struct em_retired *t = *p;
		if (t->node == node) {
			*p = t->next;
			free(t);
		} else {
			p = &t->next;
		}
	}
}

static void retire(em_pool *pool, unsigned node, uint32_t handle)
{
	struct em_retired *t = handle ? malloc(sizeof(*t)) : NULL;

	if (t) {
		*t = (struct em_retired){ pool->retired, node, handle, em_now_ns() };
		pool->retired = t;
	} else if (handle && !em_node_down(pool, node)) {
		/* closed now: at worst a late part meets a closed handle */
		struct em_part c = { .wop = EM_W_CLOSE, .handle = handle };
		em_ctl_call(pool, node, &c);
	}
}

/* wait: a moved part's node whose connection is down (its lease lapsed
 * and it registered again, say) is waited for, up to the request timeout,
 * rather than failing the caller. */
static int refresh(em_region *r, bool wait)
{
	em_pool *pool = r->pool;
	struct em_region_rec rec;
	uint8_t req[3 + EM_NAME_MAX], resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	unsigned node[EM_MAX_SEG];
	uint32_t handle[EM_MAX_SEG];
	uint64_t moved = 0;
	int rc;

	em_drain_sweep(pool, false);
	if ((rc = em_dir_get(pool, r->name, &rec, NULL)))
		return rc;
	if (rec.epoch <= r->dir_epoch)
		return -EAGAIN;
	/* a drain moves parts, never reshapes the region */
	if (rec.size != r->size || rec.chunk != r->chunk || rec.nseg != r->nseg ||
	    rec.plen != r->plen || memcmp(rec.pattern, r->pattern, r->plen))
		return -EPROTO;
	/* the moved parts are opened first, then swapped in at once: queues
	 * read the layout without the pool lock */
	for (unsigned s = 0; s < r->nseg && !rc; s++) {
		int i = em_dir_seg_node(pool, &rec, s), n;
		struct em_part p = { .wop = EM_W_OPEN, .req = req, .resp = resp };

		if (i < 0) {
			rc = -EM_ENONODE;
			break;
		}
		if ((unsigned)i == r->node[s])
			continue;
		n = em_namelayout_encode(req, sizeof(req), em_region_rec_piece(&rec, s), NULL, 0);
		if (n < 0) {
			rc = n;
			break;
		}
		p.req_len = (uint32_t)n;
		p.resp_cap = sizeof(resp);
		for (uint64_t until = em_now_ns() + (uint64_t)pool->timeout_ms * 1000000ull;;) {
			if (wait && (rc = em_health_wait(pool, (unsigned)i)))
				break;
			rc = em_ctl_call(pool, (unsigned)i, &p);
			/* the connection broke under the call (a node back from
			 * a freeze may reset it): asked again once it is made
			 * again, up to the request timeout */
			if (!rc || !wait || !pool->dq->ch[i]->broken || em_now_ns() >= until)
				break;
		}
		if (rc) {
			rc = rc == -ENOENT ? -EM_ENONODE : rc;
			break;
		}
		node[s] = (unsigned)i;
		handle[s] = p.r_region;
		moved |= 1ull << s;
	}
	if (rc) {
		for (unsigned s = 0; s < r->nseg; s++)
			if (moved >> s & 1) {
				struct em_part c = { .wop = EM_W_CLOSE, .handle = handle[s] };
				em_ctl_call(pool, node[s], &c);
			}
		return rc;
	}
	em_layout_begin(r);
	for (unsigned s = 0; s < r->nseg; s++)
		if (moved >> s & 1) {
			unsigned old = r->node[s];
			uint32_t oh = r->handle[s];

			__atomic_store_n(&r->node[s], node[s], __ATOMIC_RELEASE);
			__atomic_store_n(&r->handle[s], handle[s], __ATOMIC_RELEASE);
			node[s] = old;
			handle[s] = oh;
		}
	__atomic_store_n(&r->dir_epoch, rec.epoch, __ATOMIC_RELEASE);
	em_layout_end(r);
	for (unsigned s = 0; s < r->nseg; s++)
		if (moved >> s & 1)
			retire(pool, node[s], handle[s]);
	em_log(EM_LOG_DEBUG, "region %s: layout epoch -> %" PRIu64, r->name, rec.epoch);
	return 0;
}

int em_drain_refresh(em_region *r)
{
	return refresh(r, true);
}

/* The watch thread does not wait for a node: it is the one that hears the
 * node registered again. A handle it could not bring up to date follows
 * when its next operation meets EM_ESTALE. */
void em_drain_follow(em_pool *pool, const char *name)
{
	pthread_mutex_lock(&pool->lock);
	for (em_region *r = pool->regions; r; r = r->next)
		if (r->named && !em_red_on(r) && !strcmp(r->name, name)) {
			int rc = refresh(r, false);
			/* a node the new layout needs is being dialled again */
			r->follow_again = rc && rc != -EAGAIN && rc != -EPROTO;
		}
	pthread_mutex_unlock(&pool->lock);
}

void em_drain_refollow(em_pool *pool)
{
	for (em_region *r = pool->regions; r; r = r->next)
		if (r->follow_again) {
			int rc = refresh(r, false);
			r->follow_again = rc && rc != -EAGAIN && rc != -EPROTO;
		}
}

static int name_req(uint8_t *req, size_t cap, const char *name)
{
	return em_namelayout_encode(req, cap, name, NULL, 0);
}

static int set_move(em_pool *pool, unsigned node, const char *piece, unsigned state)
{
	uint8_t req[3 + EM_NAME_MAX];
	int n = name_req(req, sizeof(req), piece);

	return n < 0 ? n
		     : em_ctl(pool, node, EM_W_FREEZE, 0, state, 0, req, (uint32_t)n, NULL, 0,
			      NULL);
}

static int drop_piece(em_pool *pool, unsigned node, const char *piece)
{
	uint8_t req[3 + EM_NAME_MAX];
	int n = name_req(req, sizeof(req), piece);

	return n < 0 ? n
		     : em_ctl(pool, node, EM_W_DELETE, 0, 0, 0, req, (uint32_t)n, NULL, 0, NULL);
}

static void close_handle(em_pool *pool, unsigned node, uint32_t h)
{
	if (h)
		em_ctl(pool, node, EM_W_CLOSE, h, 0, 0, NULL, 0, NULL, 0, NULL);
}

/* Bytes of segment s, from the record alone. */
static uint64_t seg_bytes(em_pool *pool, const struct em_region_rec *rec, unsigned s)
{
	em_region t = { .pool = pool,
			.size = rec->size,
			.chunk = rec->chunk,
			.nseg = rec->nseg,
			.plen = rec->plen };

	memcpy(t.pattern, rec->pattern, rec->plen);
	em_layout_derive(&t);
	return em_seg_bytes(&t, s);
}

static int pick_target(em_pool *pool, unsigned from, uint64_t bytes)
{
	uint64_t freeb[EM_MAX_SEG];
	int best = -1;

	if (em_dir_free(pool, freeb))
		return -1;
	pthread_mutex_lock(&pool->lock); /* the reconnect thread swaps channels */
	for (unsigned i = 0; i < em_pool_n(pool); i++)
		if (i != from && !em_node_down(pool, i) &&
		    (freeb[i] & ~4095ull) >= ((bytes + 4095) & ~4095ull) &&
		    (best < 0 || freeb[i] > freeb[best]))
			best = (int)i;
	pthread_mutex_unlock(&pool->lock);
	return best;
}

/* After a failed update of region `name`'s record: 1 if it lists part
 * `piece` on node j in segment s all the same (the update went through),
 * 0 if it does not, -errno if etcd cannot be read (three tries). */
static int landed(em_pool *pool, const char *name, unsigned s, unsigned j, const char *piece)
{
	struct em_region_rec cur;
	int rc = 0;

	for (int t = 0; t < 3; t++) {
		if (t) {
			struct timespec ts = { 0, 100000000 };
			nanosleep(&ts, NULL);
		}
		rc = em_dir_get(pool, name, &cur, NULL);
		if (rc == -ENOENT)
			return 0; /* deleted: the new part is no one's */
		if (!rc)
			return s < cur.nseg && !strcmp(em_region_rec_piece(&cur, s), piece) &&
			       em_dir_seg_node(pool, &cur, s) == (int)j;
	}
	return rc;
}

/* A redundant region's part on node d: its clients follow repairs, not
 * moves, so a repair rebuilds it elsewhere (the elected repairer: the etcd
 * lock keeps other clients' repairs out meanwhile) and cuts the old part
 * off before the new one goes live (em_red_evict); then the old part is
 * deleted. The region keeps every copy or chunk all the while: the node
 * may be stopped after with the region fully redundant. */
static int move_redundant(em_pool *pool, const char *name, const struct em_region_rec *rec,
			  unsigned s, unsigned d, uint64_t *moved)
{
	char piece[EM_NAME_MAX + 1];
	em_region *r;
	uint64_t bytes;
	int rc;

	snprintf(piece, sizeof(piece), "%s", em_region_rec_piece(rec, s));
	if ((rc = em_region_open(pool, name, &r)))
		return rc == -ENOENT ? 0 : rc;
	bytes = em_red_seg_bytes(r, s);
	rc = em_red_evict(r, d);
	em_region_close(r);
	if (rc == 0)
		return -EAGAIN; /* the record lists a part on d that the layouts do not */
	if (rc < 0) {
		em_log(EM_LOG_WARN, "drain: %s: rebuilding part %u elsewhere: %s", name, s,
		       em_strerror(rc));
		/* another repair at work, or one that needs a node back */
		return rc == -EALREADY || rc == -EAGAIN ? -EAGAIN : rc;
	}
	rc = drop_piece(pool, d, piece);
	if (rc && rc != -ENOENT)
		em_log(EM_LOG_WARN, "drain: %s: old part on %s not deleted: %s", name,
		       pool->nodes[d].addr, em_strerror(rc));
	*moved += bytes;
	em_log(EM_LOG_INFO, "drain: %s part %u (%" PRIu64 " bytes) rebuilt off %s", name, s, bytes,
	       pool->nodes[d].addr);
	return 1;
}

/* Moves one part of region `name` off node d: 1 moved, 0 none left there,
 * -EAGAIN the record changed meanwhile, or -errno. */
static int move_one(em_pool *pool, const char *name, unsigned d, uint8_t *buf, uint64_t *moved)
{
	struct em_region_rec rec, nrec;
	uint8_t req[3 + EM_NAME_MAX], resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT], rnd[12];
	uint8_t creq[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	char piece[64];
	struct em_part res;
	uint32_t hd = 0, hj = 0;
	uint64_t bytes;
	int64_t rev;
	unsigned s;
	int rc, j, n;

	if ((rc = em_dir_get(pool, name, &rec, &rev)))
		return rc == -ENOENT ? 0 : rc; /* deleted meanwhile: nothing to move */
	for (s = 0; s < rec.nseg; s++)
		if (em_dir_seg_node(pool, &rec, s) == (int)d)
			break;
	if (s == rec.nseg)
		return 0;
	if (rec.red > EM_RED_NONE)
		return move_redundant(pool, name, &rec, s, d, moved);
	bytes = seg_bytes(pool, &rec, s);
	if ((j = pick_target(pool, d, bytes)) < 0) {
		bool down = false;

		pthread_mutex_lock(&pool->lock);
		for (unsigned i = 0; i < em_pool_n(pool); i++)
			down |= i != d && em_node_down(pool, i);
		pthread_mutex_unlock(&pool->lock);
		if (down)
			return -EAGAIN; /* one that is back soon may have room */
		em_log(EM_LOG_ERR, "drain: no node has room for %" PRIu64 " bytes of %s", bytes,
		       name);
		return -ENOSPC;
	}
	em_random(rnd, sizeof(rnd));
	n = snprintf(piece, sizeof(piece), ".p");
	for (unsigned i = 0; i < sizeof(rnd); i++)
		n += snprintf(piece + n, sizeof(piece) - (size_t)n, "%02x", rnd[i]);

	/* the old part first: its stored layout goes with the new one (a node
	 * refuses a named part whose layout does not decode) */
	n = name_req(req, sizeof(req), em_region_rec_piece(&rec, s));
	if ((rc = em_ctl(pool, d, EM_W_OPEN, 0, 0, 0, req, (uint32_t)n, resp, sizeof(resp), &res)))
		return rc;
	hd = res.r_region;
	{
		char oname[EM_NAME_MAX + 1];
		const uint8_t *layout;
		uint16_t ll;

		if ((rc = em_namelayout_decode(resp, res.resp_len, oname, &layout, &ll)) ||
		    (n = em_namelayout_encode(creq, sizeof(creq), piece, layout, ll)) < 0) {
			rc = rc ? rc : n;
			goto undo;
		}
	}
	if ((rc = em_ctl(pool, (unsigned)j, EM_W_CREATE, 0, EM_WC_NAMED | EM_WC_EXCL, bytes, creq,
			 (uint32_t)n, resp, sizeof(resp), &res))) {
		if (rc == -EM_EDRAINING)
			rc = -ESTALE; /* the target began draining: try again (-EAGAIN below) */
		piece[0] = 0;         /* nothing of ours to drop */
		goto undo;
	}
	hj = res.r_region;
	if ((rc = set_move(pool, d, em_region_rec_piece(&rec, s), EM_MV_FROZEN)))
		goto undo;
	for (uint64_t off = 0; off < bytes; off += EM_MAX_IO) {
		uint32_t len = (uint32_t)EM_MIN((uint64_t)EM_MAX_IO, bytes - off);
		if ((rc = em_ctl(pool, d, EM_W_READ, hd, len, off, NULL, 0, buf, len, NULL)) ||
		    (rc = em_ctl(pool, (unsigned)j, EM_W_WRITE, hj, 0, off, buf, len, NULL, 0,
				 NULL)))
			goto thaw;
	}
	/* no reader may see the old part once the new one can be written */
	if ((rc = set_move(pool, d, em_region_rec_piece(&rec, s), EM_MV_MOVED)))
		goto thaw;
	nrec = rec;
	snprintf(nrec.seg_addr[s], sizeof(nrec.seg_addr[s]), "%s", pool->nodes[j].addr);
	em_node_id(pool, (unsigned)j, nrec.seg_id[s]);
	snprintf(nrec.seg_piece[s], sizeof(nrec.seg_piece[s]), "%s", piece);
	nrec.epoch = rec.epoch + 1;
	if ((rc = em_dir_update(pool, name, &nrec, rev))) {
		/* an error may hide an update that etcd applied (a timeout,
		 * a connection lost before the answer): the new part may be
		 * the region's now, and dropping it would lose the region's
		 * bytes there. The record says which. */
		int l = landed(pool, name, s, (unsigned)j, piece);

		if (l == 1)
			rc = 0;
		else if (l < 0)
			goto unknown;
		else
			goto thaw;
	}
	close_handle(pool, d, hd);
	close_handle(pool, (unsigned)j, hj);
	drop_piece(pool, d, em_region_rec_piece(&rec, s));
	*moved += bytes;
	em_log(EM_LOG_INFO, "drain: %s part %u (%" PRIu64 " bytes) %s -> %s, epoch %" PRIu64, name,
	       s, bytes, rec.seg_addr[s], pool->nodes[j].addr, nrec.epoch);
	return 1;
unknown:
	/* etcd cannot say: the old part stays moved (a client that reads it
	 * is told to follow the record, and one the record still sends
	 * there meets a stale answer until a retry of this move freezes and
	 * copies it again), and the new part is noted as an orphan, which a
	 * later drain removes only if the record does not list it */
	em_log(EM_LOG_WARN, "drain: %s: whether the record moved to part %s is unknown: %s", name,
	       piece, em_strerror(rc));
	close_handle(pool, d, hd);
	close_handle(pool, (unsigned)j, hj);
	em_dir_orphan_note(pool, pool->nodes[j].addr, piece, name);
	return -EAGAIN;
thaw:
	set_move(pool, d, em_region_rec_piece(&rec, s), EM_MV_NONE);
undo:
	close_handle(pool, d, hd);
	close_handle(pool, (unsigned)j, hj);
	/* a part the target could not be told to drop stays noted in etcd
	 * until a later drain removes it (sweep_orphans) */
	if (piece[0] && (n = drop_piece(pool, (unsigned)j, piece)) && n != -ENOENT &&
	    em_dir_orphan_note(pool, pool->nodes[j].addr, piece, name))
		em_log(EM_LOG_WARN, "drain: part %s of %s on %s not removed: %s", piece, name,
		       pool->nodes[j].addr, em_strerror(n));
	/* a node that could not be reached (a lease that lapsed cuts a live
	 * node off until it registers again) is tried again: another target,
	 * or the same once it is back */
	return rc == -ESTALE || em_red_unreachable(rc) ? -EAGAIN : rc;
}

static int find_node(em_pool *pool, const char *addr)
{
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		const char *a = pool->nodes[i].addr;
		if (!strcmp(a, addr) || (!strncmp(a, "tcp://", 6) && !strcmp(a + 6, addr)))
			return (int)i;
	}
	return -1;
}

/* Removes the parts that earlier drains made and could not remove (their
 * node was out of reach then): each that its region's record does not list
 * on that node is deleted there, and its note goes once the node says it
 * is gone. A note whose node is down now stays for the next drain. */
static void sweep_orphans(em_pool *pool)
{
	enum { MAXO = 64 };
	struct em_orphan o[MAXO];
	int n = em_dir_orphans(pool, o, MAXO);

	for (int k = 0; k < n; k++) {
		struct em_region_rec rec;
		int i = find_node(pool, o[k].addr), rc;
		bool listed = false, down;

		if (i < 0)
			continue;
		pthread_mutex_lock(&pool->lock);
		down = em_node_down(pool, (unsigned)i);
		pthread_mutex_unlock(&pool->lock);
		if (down)
			continue;
		rc = em_dir_get(pool, o[k].region, &rec, NULL);
		if (rc && rc != -ENOENT)
			continue; /* etcd out of reach: not now */
		for (unsigned s = 0; !rc && s < rec.nseg; s++)
			listed |= !strcmp(em_region_rec_piece(&rec, s), o[k].piece) &&
				  em_dir_seg_node(pool, &rec, s) == i;
		rc = listed ? 0 : drop_piece(pool, (unsigned)i, o[k].piece);
		if (!rc || rc == -ENOENT) {
			em_log(EM_LOG_INFO, "drain: %s part %s on %s %s", o[k].region, o[k].piece,
			       o[k].addr,
			       listed ? "is in use: kept" : "left by a failed move: removed");
			em_dir_orphan_note(pool, o[k].addr, o[k].piece, NULL);
		}
	}
}

static void note(em_pool *pool, const char *addr, const char *state, uint64_t done, uint64_t total,
		 unsigned left)
{
	char json[256];

	snprintf(json, sizeof(json),
		 "{\"state\":\"%s\",\"moved_bytes\":%" PRIu64 ",\"total_bytes\":%" PRIu64
		 ",\"regions_left\":%u,\"at_ms\":%" PRIu64 "}",
		 state, done, total, left, em_wall_ms());
	em_dir_drain_note(pool, addr, json);
}

int em_drain_node(em_pool *pool, const char *addr,
		  void (*progress)(void *arg, uint64_t done, uint64_t total, const char *region),
		  void *arg)
{
	enum { MAXR = 4096 };
	struct em_region_info *info = NULL;
	uint64_t total = 0, done = 0;
	uint8_t *buf = NULL;
	int d, n, rc, parts = 0;

	if (!pool || !addr)
		return -EINVAL;
	if (!pool->dir)
		return -ENOTSUP; /* the layouts a drain rewrites live in etcd */
	if ((d = find_node(pool, addr)) < 0)
		return -ENOENT;
	if ((rc = em_ctl(pool, (unsigned)d, EM_W_DRAIN, 0, 1, 0, NULL, 0, NULL, 0, NULL)))
		return rc;
	sweep_orphans(pool); /* what earlier drains left behind */
	info = calloc(MAXR, sizeof(*info));
	buf = malloc(EM_MAX_IO);
	if (!info || !buf) {
		rc = -ENOMEM;
		goto out;
	}
	info[0].size = sizeof(*info);
	if ((n = em_dir_list(pool, info, MAXR, sizeof(*info))) < 0) {
		rc = n;
		goto out;
	}
	n = EM_MIN(n, MAXR);
	for (int k = 0; k < n; k++) {
		struct em_region_rec rec;
		if (em_dir_get(pool, info[k].name, &rec, NULL))
			continue;
		for (unsigned s = 0; s < rec.nseg; s++)
			if (em_dir_seg_node(pool, &rec, s) == d)
				total += seg_bytes(pool, &rec, s);
	}
	note(pool, pool->nodes[d].addr, "draining", 0, total, (unsigned)n);
	for (int k = 0; k < n; k++) {
		uint64_t until = 0;
		for (;;) {
			rc = move_one(pool, info[k].name, (unsigned)d, buf, &done);
			if (rc == -EAGAIN) {
				/* up to four request timeouts for a part, with a
				 * pause so that a node cut off comes back meanwhile */
				uint64_t now = em_now_ns();
				if (!until)
					until = now +
						4ull * (uint64_t)pool->timeout_ms * 1000000ull;
				if (now < until) {
					struct timespec ts = { 0, 50 * 1000000L };
					nanosleep(&ts, NULL);
					pthread_mutex_lock(&pool->lock);
					em_health_wait(pool, (unsigned)d);
					pthread_mutex_unlock(&pool->lock);
					continue;
				}
			}
			if (rc < 0) {
				em_log(EM_LOG_ERR, "drain: region %s: %s", info[k].name,
				       em_strerror(rc));
				note(pool, pool->nodes[d].addr, "failed", done, total,
				     (unsigned)(n - k));
				goto out;
			}
			if (!rc)
				break;
			parts++;
			until = 0;
			if (progress)
				progress(arg, done, EM_MAX(done, total), info[k].name);
			note(pool, pool->nodes[d].addr, "draining", done, EM_MAX(done, total),
			     (unsigned)(n - k));
		}
	}
	sweep_orphans(pool); /* a move this drain retried may have left one */
	note(pool, pool->nodes[d].addr, "drained", done, EM_MAX(done, total), 0);
	rc = parts;
out:
	free(info);
	free(buf);
	return rc;
}
