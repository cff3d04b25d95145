/*
 * queue.c - asynchronous, batched operations (em_submit / em_poll / em_wait)
 * and the synchronous calls built on them.
 *
 * An operation is split into parts at chunk boundaries (a striped region) and
 * at EM_MAX_IO; parts for the same node are posted together, so one system
 * call per node carries a whole batch. An operation completes when its last
 * part does, with the first error any part saw. A queue never holds more than
 * `depth` operations between submission and reaping, so the completion ring
 * cannot overflow.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/util.h"
#include "lib/internal.h"

unsigned em_fail_stage_grow;

static int stage_push(struct stage *s, const struct em_part *p)
{
	if (s->n == s->cap) {
		unsigned nc = s->cap ? s->cap * 2 : 16;
		struct em_part *np;

		if (em_fail_stage_grow && --em_fail_stage_grow == 0)
			return -ENOMEM;
		np = realloc(s->p, nc * sizeof(*np));
		if (!np)
			return -ENOMEM;
		s->p = np;
		s->cap = nc;
	}
	s->p[s->n++] = *p;
	return 0;
}

int em_queue_create_on(em_pool *pool, unsigned depth, struct em_chan **chans, bool owns,
		       em_queue **out)
{
	em_queue *q;

	if (depth == 0 || depth > (1u << 20))
		return -EINVAL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->pool = pool;
	q->depth = depth;
	/* chans has room for EM_MAX_SEG; the nodes are those filled in */
	while (q->n < EM_MAX_SEG && chans[q->n])
		q->n++;
	q->ch = chans;
	q->owns_chans = owns;
	q->epfd = q->evfd = -1;
	/* Tags identify writes and atomics to the node's at-most-once memory,
	 * which is per session: every queue of the pool gets 2^40 of its own. */
	q->next_tag = (uint64_t)__atomic_add_fetch(&pool->nqueues, 1, __ATOMIC_RELAXED) << 40;
	q->slots = calloc(depth, sizeof(*q->slots));
	q->cq = calloc(depth, sizeof(*q->cq));
	q->stage = calloc(EM_MAX_SEG, sizeof(*q->stage));
	if (!q->slots || !q->cq || !q->stage) {
		free(q->slots);
		free(q->cq);
		free(q->stage);
		free(q);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < depth; i++) {
		q->slots[i].next_free = q->free_slots;
		q->free_slots = &q->slots[i];
	}
	/* Room for a full queue of single-part operations up front, so that
	 * submitting allocates nothing until a batch outgrows it (the cap keeps
	 * deep queues from paying for what they may never use). */
	unsigned pre = depth < 256 ? depth : 256;
	for (unsigned i = 0; i < q->n; i++) {
		struct stage *st = &q->stage[i];

		st->p = malloc(pre * sizeof(*st->p));
		st->cap = st->p ? pre : 0;
		if (chans[i]->ops->reserve)
			chans[i]->ops->reserve(chans[i], pre);
		chans[i]->q = q;
	}
	*out = q;
	return 0;
}

int em_queue_create(em_pool *pool, unsigned depth, em_queue **out)
{
	struct em_chan **ch;
	unsigned i, n;
	int rc = 0;

	if (!pool || !out || depth == 0 || depth > (1u << 20))
		return -EINVAL;
	/* room for nodes that join later */
	ch = calloc(EM_MAX_SEG, sizeof(*ch));
	if (!ch)
		return -ENOMEM;
	n = em_pool_n(pool);
	for (i = 0; i < n && !rc; i++) {
		/* a node known down is not dialled: one that is frozen would
		 * hold this call for the connect timeout (a repair's fill
		 * queue, made so, outlived its etcd lock) */
		if (pool->dq && em_node_down(pool, i)) {
			rc = em_tcp_dead(pool, &ch[i]);
			continue;
		}
		rc = em_tcp_connect(pool, &pool->nodes[i], false, &ch[i]);
		/* a node that was down when the pool connected, or has died
		 * since: the queue goes on without it (redundant regions fail
		 * over; plain ones get errors for its parts) */
		if (rc && rc != -EM_EAUTH && pool->dq &&
		    (em_node_down(pool, i) || em_red_unreachable(rc))) {
			/* em_submit dials it again once it is back */
			rc = em_tcp_dead(pool, &ch[i]);
			continue;
		}
		if (!rc && pool->tp->wrap) {
			/* the transport's channel, built on our own TCP connection */
			struct em_chan *w;
			rc = pool->tp->wrap(pool->tpriv, pool, i, ch[i], &w);
			if (rc)
				ch[i]->ops->close(ch[i]);
			ch[i] = rc ? NULL : w;
		}
	}
	if (!rc)
		rc = em_queue_create_on(pool, depth, ch, true, out);
	if (!rc) { /* the transport's own channels are made only here */
		(*out)->redial = !pool->tp->wrap;
		(*out)->follow = (*out)->follow_here = true;
		/* the sessions they joined (the reconnect thread sets them) */
		pthread_mutex_lock(&pool->lock);
		for (i = 0; i < n; i++)
			if (!ch[i]->broken)
				(*out)->sess[i] = pool->nodes[i].session;
		pthread_mutex_unlock(&pool->lock);
	}
	if (rc) {
		for (unsigned j = 0; j < n; j++)
			if (ch[j])
				ch[j]->ops->close(ch[j]);
		free(ch);
	}
	return rc;
}

void em_queue_destroy(em_queue *q)
{
	if (!q)
		return;
	em_health_unadopt(q); /* before its channels go */
	if (q->owns_chans) {
		for (unsigned i = 0; i < q->n; i++)
			q->ch[i]->ops->close(q->ch[i]);
		free(q->ch);
	}
	for (unsigned i = 0; i < q->n; i++)
		free(q->stage[i].p);
	free(q->stage);
	free(q->slots);
	free(q->cq);
	if (q->epfd >= 0) {
		close(q->epfd);
		close(q->evfd);
	}
	free(q);
}

int em_queue_inflight(const em_queue *q)
{
	return q ? (int)q->inflight : -EINVAL;
}

/* em_queue_fd is an epoll set over the queue's sockets (readable when a
 * reply is there to be read) and an eventfd the library keeps readable
 * while completions sit in the ring, or operations are in flight on a
 * channel without a descriptor. fd_sync brings the eventfd up to date on
 * the way out of every call that can change either. */
static void fd_sync(em_queue *q)
{
	/* operations waiting for a drain's new layout are driven by em_poll */
	bool want = q->cq_count > 0 || q->stale;
	uint64_t v = 1;

	for (unsigned i = 0; i < q->n && !want; i++)
		want = q->ch[i]->outstanding && q->ch[i]->ops->fd(q->ch[i]) < 0;
	if (want == q->ev_ready)
		return;
	if ((want ? write(q->evfd, &v, sizeof(v)) : read(q->evfd, &v, sizeof(v))) == sizeof(v))
		q->ev_ready = want;
}

int em_queue_fd(em_queue *q)
{
	struct epoll_event e = { .events = EPOLLIN };
	int ep, ev, rc = 0;

	if (!q)
		return -EINVAL;
	if (q->epfd >= 0)
		return q->epfd;
	ep = epoll_create1(EPOLL_CLOEXEC);
	ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ep < 0 || ev < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e))
		rc = -errno;
	for (unsigned i = 0; i < q->n && !rc; i++) {
		int fd = q->ch[i]->ops->fd(q->ch[i]);
		if (fd >= 0 && epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e))
			rc = -errno;
	}
	if (rc) {
		if (ep >= 0)
			close(ep);
		if (ev >= 0)
			close(ev);
		return rc;
	}
	q->epfd = ep;
	q->evfd = ev;
	q->ev_ready = false;
	fd_sync(q);
	return ep;
}

static void cq_push(em_queue *q, struct em_slot *s)
{
	struct em_completion *c = &q->cq[(q->cq_head + q->cq_count) % q->depth];

	c->user_data = s->user_data;
	c->result = s->result;
	c->flags = 0;
	c->value = s->value;
	q->cq_count++;
	q->inflight--;
	s->next_free = q->free_slots;
	q->free_slots = s;
}

/* A part that failed because its connection did: the node may only have
 * been out of reach for a moment. */
static bool conn_err(int status)
{
	return status == -EM_ENONODE || status == -ETIMEDOUT || status == -EHOSTDOWN ||
	       status == -ENOTCONN;
}

void em_part_done(struct em_chan *ch, struct em_part *p)
{
	struct em_slot *s = p->slot;

	ch->outstanding--;
	if (p->origin) {
		struct em_part *o = p->origin;
		o->status = p->status;
		o->resp_len = p->resp_len;
		o->r_region = p->r_region;
		o->r_aux = p->r_aux;
		o->r_off = p->r_off;
		if (p->resp == p->inl)
			memcpy(o->inl, p->inl, sizeof(o->inl));
		return;
	}
	if (!s)
		return;
	if (!p->status && p->wop == EM_W_READ && p->resp_len != p->aux)
		p->status = -EPROTO; /* a short read is never silently accepted */
	if (p->status && !s->result)
		s->result = p->status;
	if (ch->broken && conn_err(p->status))
		s->conn = true;
	if (!p->status && p->wop == EM_W_ATOMIC)
		s->value = em_get64(p->inl);
	if (--s->pending == 0) {
		em_queue *q = ch->q;
		if (s->result == -EM_ESTALE && q->follow && s->op.region->named) {
			/* a drain moved a part: done again at the next epoch (follow) */
			s->conn = false;
			s->next_free = q->stale;
			q->stale = s;
		} else if (s->conn && q->follow && (q->redial || q->pager) && conn_err(s->result)) {
			/* a connection broke: sent again once it is made again
			 * (follow), or failed at the request timeout */
			s->next_free = q->stale;
			q->stale = s;
		} else {
			cq_push(q, s);
		}
	}
}

/* Where byte `off` of the region lives: segment, offset on that node, and
 * how many bytes from there stay in the same chunk. */
static void locate(const em_region *r, uint64_t off, unsigned *seg, uint64_t *noff, uint64_t *run)
{
	uint64_t i = off / r->chunk, within = off % r->chunk;
	unsigned j = (unsigned)(i % r->plen);

	*seg = r->pattern[j];
	*noff = ((i / r->plen) * r->cnt[*seg] + r->rank[j]) * r->chunk + within;
	*run = r->chunk - within;
}

static int check_op(const em_queue *q, const struct em_op *op)
{
	const em_region *r = op->region;

	if (!r || r->pool != q->pool || op->flags || op->reserved)
		return -EINVAL;
	if (__atomic_load_n(&r->gone, __ATOMIC_ACQUIRE))
		return -EM_ENONODE; /* never zeros from a node that restarted empty */
	/* atomic: a repair moves a lost part to another node under our feet
	 * (the pager submits from its fault handler without the pool lock) */
	for (unsigned g = 0; g < r->nseg; g++)
		if (__atomic_load_n(&r->node[g], __ATOMIC_ACQUIRE) >= q->n)
			return -EHOSTDOWN; /* a node that joined after this queue could add it */
	switch (op->opcode) {
	case EM_OP_READ:
	case EM_OP_WRITE:
		if (op->len && !op->buf)
			return -EFAULT;
		if (op->offset > r->size || op->len > r->size - op->offset)
			return -ERANGE;
		return 0;
	case EM_OP_ATOMIC:
		if (op->atomic_op >= EM_ATOMIC__COUNT || (op->offset & 7))
			return -EINVAL;
		if (op->offset > r->size || 8 > r->size - op->offset)
			return -ERANGE;
		return 0;
	default:
		return -EINVAL;
	}
}

#define REDIAL_MIN_MS 50
#define REDIAL_MAX_MS 2000

/* Channel ch, dialled into session sess, takes node i's place in queue q
 * (the caller disposes of the one it replaces). */
static void install(em_queue *q, unsigned i, struct em_chan *ch, uint64_t sess)
{
	if (q->sess[i] && q->sess[i] != sess)
		q->sess_gen++;
	q->sess[i] = sess;
	if (q->epfd >= 0) {
		struct epoll_event e = { .events = EPOLLIN };
		int fd = ch->ops->fd(ch);
		if (fd >= 0)
			epoll_ctl(q->epfd, EPOLL_CTL_ADD, fd, &e);
	}
	q->ch[i] = ch;
}

/* Dials node i again for queue q, on the pool's session with the node. A
 * session that is gone (the node restarted) is the pool's to make again:
 * its default channel is failed and the reconnect thread started, and a
 * later submission joins the new one. */
static void redial(em_queue *q, unsigned i)
{
	em_pool *pool = q->pool;
	struct em_node tmp = { .fd = -1 };
	struct em_chan *ch = NULL, *old = q->ch[i];
	int rc;

	pthread_mutex_lock(&pool->lock);
	memcpy(tmp.addr, pool->nodes[i].addr, sizeof(tmp.addr));
	memcpy(tmp.host, pool->nodes[i].host, sizeof(tmp.host));
	tmp.port = pool->nodes[i].port;
	tmp.session = pool->nodes[i].session;
	memcpy(tmp.token, pool->nodes[i].token, EM_TOKEN_LEN);
	pthread_mutex_unlock(&pool->lock);
	rc = tmp.session ? em_tcp_connect(pool, &tmp, false, &ch) : -ENOENT;
	if (rc) {
		if (rc == -ENOENT || rc == -EM_EAUTH) {
			pthread_mutex_lock(&pool->lock);
			struct em_chan *d = pool->dq->ch[i];
			if (!d->broken && tmp.session == pool->nodes[i].session)
				d->ops->fail(d, -ENOTCONN);
			em_health_kick(pool);
			pthread_mutex_unlock(&pool->lock);
		}
		q->backoff_ms[i] = q->backoff_ms[i] ? EM_MIN(q->backoff_ms[i] * 2, REDIAL_MAX_MS)
						    : REDIAL_MIN_MS;
		q->retry_at_ns[i] = em_now_ns() + (uint64_t)q->backoff_ms[i] * 1000000ull;
		return;
	}
	q->backoff_ms[i] = 0;
	q->retry_at_ns[i] = 0;
	ch->q = q;
	if (ch->ops->reserve)
		ch->ops->reserve(ch, q->depth < 256 ? q->depth : 256);
	install(q, i, ch, tmp.session);
	old->ops->close(old);
}

/* The pager's queue: it may not dial (its fault handler), so the pool's
 * reconnect thread dials its broken channels when asked and hands them
 * over (health.c); the one replaced goes back to that thread to close,
 * since a close frees. Allocates nothing and takes no lock. */
static void adopt(em_queue *q)
{
	bool ask = false;

	for (unsigned i = 0; i < q->n; i++) {
		struct em_chan *ch = q->ch[i], *f;

		if (!ch->broken || ch->outstanding)
			continue;
		if (__atomic_load_n(&q->spent[i], __ATOMIC_ACQUIRE) ||
		    !(f = __atomic_exchange_n(&q->fresh[i], NULL, __ATOMIC_ACQ_REL))) {
			if (!__atomic_exchange_n(&q->want[i], 1, __ATOMIC_ACQ_REL))
				ask = true;
			continue;
		}
		install(q, i, f, q->fresh_sess[i]);
		__atomic_store_n(&q->spent[i], ch, __ATOMIC_RELEASE);
	}
	if (ask)
		em_health_poke(q->pool);
}

/* Before a submission: channels for nodes that joined the pool since the
 * last one, and broken channels dialled again (with backoff). */
static void refresh(em_queue *q)
{
	unsigned pn = em_pool_n(q->pool);
	uint64_t now = 0;

	while (q->n < pn) {
		if (em_tcp_dead(q->pool, &q->ch[q->n]))
			break;
		q->ch[q->n]->q = q;
		q->retry_at_ns[q->n] = 0;
		q->n++;
	}
	for (unsigned i = 0; i < q->n; i++) {
		if (!q->ch[i]->broken || q->ch[i]->outstanding)
			continue;
		if (q->retry_at_ns[i] && (now ? now : (now = em_now_ns())) < q->retry_at_ns[i])
			continue;
		/* etcd says it left (frozen, say): dialling it would only wait
		 * out the timeout; it is dialled once it registers again */
		if (__atomic_load_n(&q->pool->nodes[i].dir_down, __ATOMIC_ACQUIRE))
			continue;
		redial(q, i);
	}
}

/* Broken channels of q dialled again (a mapping's queue asks the
 * reconnect thread, whose channel it takes on a later call): for requests
 * to nodes its own operations may never reach (redundancy.c's witnesses). */
void em_queue_mend(em_queue *q)
{
	if (q->redial)
		refresh(q);
	else if (q->pager)
		adopt(q);
}

/* Where the region's parts are, as one consistent copy (see lseq); the
 * record's epoch it belongs to. The writer is a few stores under the pool
 * lock, so the wait for it is short (also in the pager's fault handler). */
static uint64_t snapshot(const em_region *r, unsigned *nd, uint32_t *hd)
{
	for (;;) {
		uint32_t seq = __atomic_load_n(&r->lseq, __ATOMIC_ACQUIRE);
		uint64_t epoch;

		if (seq & 1)
			continue;
		epoch = __atomic_load_n(&r->dir_epoch, __ATOMIC_ACQUIRE);
		for (unsigned g = 0; g < r->nseg; g++) {
			nd[g] = __atomic_load_n(&r->node[g], __ATOMIC_ACQUIRE);
			hd[g] = __atomic_load_n(&r->handle[g], __ATOMIC_ACQUIRE);
		}
		if (__atomic_load_n(&r->lseq, __ATOMIC_ACQUIRE) == seq)
			return epoch;
	}
}

/* Stages the parts of op for slot s (s->pending counts them): 0, or
 * -ENOMEM with none of them staged, or -EHOSTDOWN. */
static int stage_op(em_queue *q, struct em_slot *s, const struct em_op *op, unsigned nodes)
{
	const em_region *r = op->region;
	struct stage *st = q->stage;
	unsigned nd[EM_MAX_SEG], mark[EM_MAX_SEG];
	uint32_t hd[EM_MAX_SEG];
	uint64_t off = op->offset, left = op->opcode == EM_OP_ATOMIC ? 8 : op->len;

	s->epoch = snapshot(r, nd, hd);
	if (!q->replay_tag) /* the tags a resend after a lost connection reuses */
		s->tag0 = q->next_tag + 1;
	/* where this op's parts start, to take them back if staging fails */
	for (unsigned g = 0; g < r->nseg; g++) {
		if (nd[g] >= nodes)
			return -EHOSTDOWN; /* a node that joined after this queue could add it */
		mark[g] = st[nd[g]].n;
	}
	while (left) {
		struct em_part p = { .slot = s };
		uint64_t noff, run, k;
		unsigned seg;

		locate(r, off, &seg, &noff, &run);
		k = EM_MIN(EM_MIN(left, run), EM_MAX_IO);
		p.tag = q->replay_tag ? q->replay_tag++ : ++q->next_tag;
		p.handle = hd[seg];
		p.off = noff;
		if (op->opcode == EM_OP_READ) {
			p.wop = EM_W_READ;
			p.aux = (uint32_t)k;
			p.resp = (uint8_t *)op->buf + (off - op->offset);
			p.resp_cap = (uint32_t)k;
		} else if (op->opcode == EM_OP_WRITE) {
			p.wop = EM_W_WRITE;
			p.req = (uint8_t *)op->buf + (off - op->offset);
			p.req_len = (uint32_t)k;
		} else {
			p.wop = EM_W_ATOMIC;
			p.aux = op->atomic_op;
			em_put64(p.inl, op->operand);
			em_put64(p.inl + 8, op->compare);
			p.req = p.inl;
			p.req_len = 16;
			p.resp = p.inl;
			p.resp_cap = 8;
		}
		if (stage_push(&st[nd[seg]], &p)) {
			for (unsigned g = 0; g < r->nseg; g++)
				st[nd[g]].n = mark[g];
			return -ENOMEM;
		}
		s->pending++;
		off += k;
		left -= k;
	}
	return 0;
}

/* Posts what is staged for nodes [0, nodes) and empties the stages. */
static void post_staged(em_queue *q, unsigned nodes)
{
	struct stage *st = q->stage;

	for (unsigned i = 0; i < nodes; i++) {
		/* Atomics carry operands and result inline. Point them at the
		 * staged copy only now: the stage array may have moved while
		 * it grew. */
		for (unsigned k = 0; k < st[i].n; k++)
			if (st[i].p[k].wop == EM_W_ATOMIC)
				st[i].p[k].req = st[i].p[k].resp = st[i].p[k].inl;
		if (st[i].n)
			q->ch[i]->ops->post(q->ch[i], st[i].p, st[i].n);
		st[i].n = 0;
	}
}

/* Most operations on redundant regions one em_submit runs together. */
#define RED_GROUP 32u

/* Runs the redundant regions' operations held in slots red[0..n), in
 * order, and completes them. */
static void red_flush(em_queue *q, struct em_slot **red, unsigned n)
{
	const struct em_op *ops[RED_GROUP] = { 0 };
	uint64_t value[RED_GROUP];
	int rc[RED_GROUP];

	for (unsigned i = 0; i < n; i++)
		ops[i] = &red[i]->op;
	em_red_exec_many(q, ops, n, rc, value);
	for (unsigned i = 0; i < n; i++) {
		red[i]->result = rc[i];
		red[i]->value = value[i];
		red[i]->pending = 0;
		cq_push(q, red[i]);
	}
}

int em_submit(em_queue *q, const struct em_op *ops, unsigned n)
{
	struct em_slot *red[RED_GROUP];
	struct stage *st;
	unsigned posted = 0, nodes, nred = 0;
	int rc = 0;

	if (!q || (n && !ops))
		return -EINVAL;
	if (q->redial)
		refresh(q);
	else if (q->pager)
		adopt(q);
	nodes = q->n;
	/* The staging arrays live with the queue and only grow, so a steady
	 * stream of submissions allocates nothing (the paging layer submits
	 * from a SIGBUS handler). */
	st = q->stage;
	for (unsigned i = 0; i < nodes; i++)
		st[i].n = 0;
	for (; posted < n; posted++) {
		const struct em_op *op = &ops[posted];
		struct em_slot *s;
		int err;

		if (!q->free_slots || q->inflight + q->cq_count >= q->depth)
			break;
		s = q->free_slots;
		q->free_slots = s->next_free;
		q->inflight++;
		s->user_data = op->user_data;
		s->result = 0;
		s->value = 0;
		s->opcode = op->opcode;
		s->op = *op;
		s->until = 0;
		s->conn = false;
		s->sess_gen = q->sess_gen;
		s->pending = 1; /* held until every part is staged */
		err = check_op(q, op);
		if (!err && em_red_on(op->region)) {
			/* copies and erasure coding run to their end in
			 * redundancy.c, failing over as nodes go; this
			 * submission's together, so that they are in flight
			 * together */
			if (nred == RED_GROUP)
				red_flush(q, red, nred), nred = 0;
			red[nred++] = s;
			continue;
		}
		if (!err && (err = stage_op(q, s, op, nodes)) == -ENOMEM) {
			/* This op is not posted at all: its slot is freed; the
			 * ones before it still go out. */
			rc = err;
			s->next_free = q->free_slots;
			q->free_slots = s;
			q->inflight--;
			break;
		}
		if (err) {
			s->result = err;
			s->pending = 0;
			cq_push(q, s);
			continue;
		}
		if (--s->pending == 0)
			cq_push(q, s); /* a zero-length read or write */
	}
	post_staged(q, nodes);
	if (nred)
		red_flush(q, red, nred);
	if (q->evfd >= 0)
		fd_sync(q);
	if (posted)
		return (int)posted;
	return rc ? rc : n ? -EAGAIN : 0;
}

/* Whether an operation whose connection broke may be posted again now: 0,
 * -EAGAIN while a node it needs is still being dialled, or the error it
 * completes with. A write or atomic is resent with the same tags, which the
 * node applies at most once - in the same session only: a node that gave
 * this queue a new one has forgotten what it applied, so what the operation
 * did there is unknown (EM_ENONODE, as for synchronous calls). */
static int conn_ready(em_queue *q, const struct em_slot *s)
{
	const em_region *r = s->op.region;
	unsigned nd[EM_MAX_SEG];
	uint32_t hd[EM_MAX_SEG];
	uint64_t epoch;

	if (__atomic_load_n(&r->gone, __ATOMIC_ACQUIRE))
		return -EM_ENONODE; /* the node restarted empty */
	epoch = snapshot(r, nd, hd);
	for (unsigned g = 0; g < r->nseg; g++)
		if (nd[g] >= q->n || q->ch[nd[g]]->broken)
			return -EAGAIN;
	if (s->op.opcode != EM_OP_READ && s->sess_gen != q->sess_gen)
		return -EM_ENONODE;
	/* an atomic applied before a drain froze its part was copied with
	 * it: at the new part its tag is new, and it would apply twice */
	if (s->op.opcode == EM_OP_ATOMIC && epoch != s->epoch)
		return -EM_ENONODE;
	return 0;
}

/* Operations waiting on the stale list, for one of two things. Those that
 * met EM_ESTALE (a drain moved one of their parts, or is copying it) are
 * posted again, whole, once their region's layout has moved to a newer
 * epoch (a write that met EM_ESTALE was not applied, and its other parts
 * write the same bytes again), or a millisecond later at the same one (a
 * drain that gave up on a part thaws it). This queue reads the record
 * itself where it may; the pager's waits for the etcd watch (health.c) to
 * follow it. Those whose connection broke (conn) are posted again once
 * this queue has dialled the node again (conn_ready). Either completes with
 * its error (EM_ESTALE, or the connection's) at the request timeout. */
static void follow(em_queue *q)
{
	struct em_slot *s = q->stale, *wait = NULL;
	unsigned nodes;
	bool staged = false;

	for (struct em_slot *c = s; c && (q->redial || q->pager); c = c->next_free)
		if (c->conn) { /* broken channels dialled again (with backoff) */
			if (q->redial)
				refresh(q);
			else
				adopt(q);
			break;
		}
	nodes = q->n;
	q->stale = NULL;
	for (unsigned i = 0; i < nodes; i++)
		q->stage[i].n = 0;
	while (s) {
		struct em_slot *next = s->next_free;
		em_region *r = s->op.region;
		uint64_t now = em_now_ns();
		bool go;
		int rc = 0;

		if (!s->until) {
			s->until = now + (uint64_t)r->pool->timeout_ms * 1000000ull;
			s->again = now + 1000000;
		}
		if (s->conn) {
			rc = conn_ready(q, s);
			go = !rc;
			if (rc == -EAGAIN)
				rc = 0;
		} else {
			if (q->follow_here &&
			    __atomic_load_n(&r->dir_epoch, __ATOMIC_ACQUIRE) == s->epoch) {
				pthread_mutex_lock(&r->pool->lock);
				rc = em_drain_refresh(r);
				pthread_mutex_unlock(&r->pool->lock);
				if (rc == -EAGAIN) /* the copy is under way */
					rc = 0;
			}
			go = !rc && (__atomic_load_n(&r->dir_epoch, __ATOMIC_ACQUIRE) != s->epoch ||
				     now >= s->again);
		}
		if (go) {
			int first = s->result;

			s->again = now + 1000000;
			s->result = 0;
			s->value = 0;
			s->pending = 1;
			if (s->conn) /* the same tags: applied at most once */
				q->replay_tag = s->tag0;
			s->conn = false;
			rc = stage_op(q, s, &s->op, nodes);
			q->replay_tag = 0;
			if (!rc) {
				staged = true;
				if (--s->pending == 0)
					cq_push(q, s);
				s = next;
				continue;
			}
			s->result = first;
		}
		if (rc || now >= s->until) {
			s->result = rc ? rc : s->conn ? s->result : -EM_ESTALE;
			s->pending = 0;
			cq_push(q, s);
		} else {
			s->next_free = wait;
			wait = s;
		}
		s = next;
	}
	if (staged)
		post_staged(q, nodes);
	while (wait) { /* after any that a failed post put there meanwhile */
		struct em_slot *next = wait->next_free;
		wait->next_free = q->stale;
		q->stale = wait;
		wait = next;
	}
}

static unsigned reap(em_queue *q, struct em_completion *out, unsigned max)
{
	unsigned got = 0;

	while (got < max && q->cq_count) {
		out[got++] = q->cq[q->cq_head];
		q->cq_head = (q->cq_head + 1) % q->depth;
		q->cq_count--;
	}
	return got;
}

int em_poll(em_queue *q, struct em_completion *out, unsigned max)
{
	unsigned got;

	if (!q || (max && !out))
		return -EINVAL;
	for (unsigned i = 0; i < q->n; i++)
		if (q->ch[i]->outstanding)
			q->ch[i]->ops->progress(q->ch[i], 0);
	if (q->stale)
		follow(q);
	got = reap(q, out, max);
	if (q->evfd >= 0)
		fd_sync(q);
	return (int)got;
}

int em_wait(em_queue *q, struct em_completion *out, unsigned min, unsigned max, int timeout_ms)
{
	unsigned got, n = q ? q->n : 0;
	uint64_t start = em_now_ns();

	if (!q || (max && !out))
		return -EINVAL;
	if (min > max)
		min = max;
	got = reap(q, out, max);
	while (got < min && (q->inflight || q->cq_count)) {
		struct em_chan *one = NULL;
		unsigned active = 0;
		int left = timeout_ms;

		if (timeout_ms >= 0) {
			uint64_t el = (em_now_ns() - start) / 1000000;
			if (el >= (uint64_t)timeout_ms)
				break;
			left = timeout_ms - (int)el;
		}
		if (q->stale) {
			follow(q);
			got += reap(q, out + got, max - got);
			if (got >= min)
				break;
		}
		for (unsigned i = 0; i < n; i++)
			if (q->ch[i]->outstanding) {
				one = q->ch[i];
				active++;
			}
		if (active == 0 && q->stale) {
			/* only operations waiting for a layout to move */
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
			continue;
		}
		if (active == 0)
			break;
		if (active == 1) {
			/* the common case: block in recv on the one socket (a
			 * short wait while others wait to be posted again) */
			one->ops->progress(one, q->stale ? 1 : left);
		} else if (active > 1) {
			struct pollfd pfd[EM_MAX_SEG];
			struct em_chan *pch[EM_MAX_SEG];
			unsigned np = 0;
			int pt = q->stale ? 1 : left < 0 ? q->ch[0]->timeout_ms : left, r;

			for (unsigned i = 0; i < n; i++)
				if (q->ch[i]->outstanding && q->ch[i]->ops->fd(q->ch[i]) < 0) {
					/* no descriptor (a polled transport): it is polled, and
					 * the sockets below are looked at without waiting */
					q->ch[i]->ops->progress(q->ch[i], 0);
					pt = 0;
				}
			for (unsigned i = 0; i < n && np < EM_MAX_SEG; i++)
				if (q->ch[i]->outstanding && q->ch[i]->ops->fd(q->ch[i]) >= 0) {
					pch[np] = q->ch[i];
					pfd[np].fd = q->ch[i]->ops->fd(q->ch[i]);
					pfd[np].events = POLLIN;
					pfd[np++].revents = 0;
				}
			r = poll(pfd, np, pt);
			if (r == 0 && left < 0 && pt && !q->stale) {
				/* nothing from any node for a whole request timeout */
				for (unsigned i = 0; i < np; i++)
					pch[i]->ops->fail(pch[i], -ETIMEDOUT);
			}
			for (unsigned i = 0; i < np; i++)
				if (pfd[i].revents)
					pch[i]->ops->progress(pch[i], 0);
		}
		got += reap(q, out + got, max - got);
	}
	if (q->evfd >= 0)
		fd_sync(q);
	return (int)got;
}

/* ---- synchronous calls: one operation on the pool's default queue ---- */

/* How long a synchronous call goes on resending after a timeout or a lost
 * connection, in request timeouts. */
#define RESEND_TIMEOUTS 4

/* One sending on the default queue, pool lock held. */
static int sync_submit(em_queue *q, struct em_op *op)
{
	struct em_completion c;
	int rc = em_submit(q, op, 1);

	if (rc == 1) {
		rc = em_wait(q, &c, 1, 1, -1);
		rc = rc == 1 ? c.result : -ETIMEDOUT;
		if (!rc && op->opcode == EM_OP_ATOMIC)
			op->operand = c.value;
	}
	return rc;
}

/* One attempt at the region's current layout, pool lock held. A call whose
 * node timed out or whose connection was lost waits for the connection to
 * come back (health.c dials it again, asking for the same session) and
 * resends the operation with the same tags, for up to RESEND_TIMEOUTS
 * request timeouts: the node applies a write or atomic at most once per
 * tag (EM_WF_ONCE), so the caller gets the one application's result. Only
 * into the same session: a node that comes back with a new one has
 * forgotten what it applied, and the call ends with -EM_ENONODE, as it does
 * when the node stays unreachable; what the operation did there is then
 * unknown. */
static int sync_once(em_region *r, struct em_op *op)
{
	em_pool *pool = r->pool;
	em_queue *q = pool->dq;
	uint64_t first, until, sess[EM_MAX_SEG];
	bool resend;
	int rc;

	/* a node being reconnected: wait for it up to the request timeout
	 * (a redundant region does not wait: it is served by the others) */
	for (unsigned s = 0; !em_red_on(r) && s < r->nseg; s++)
		if ((rc = em_health_wait(pool, r->node[s])))
			return __atomic_load_n(&r->gone, __ATOMIC_ACQUIRE) ? -EM_ENONODE : rc;
	for (unsigned s = 0; s < r->nseg; s++)
		sess[s] = pool->nodes[r->node[s]].session;
	first = q->next_tag + 1;
	rc = sync_submit(q, op);
	until = em_now_ns() + (uint64_t)RESEND_TIMEOUTS * (uint64_t)pool->timeout_ms * 1000000;
	/* Only what changes memory is resent: a read that timed out fails at
	 * the timeout, as every call did before (nothing to apply twice).
	 * Redundant regions fail over instead (redundancy.c); a transport that
	 * wraps the TCP channel keeps link state of its own beside it. */
	resend = op->opcode != EM_OP_READ && !em_red_on(r) && !pool->tp->wrap;
	while (resend && (rc == -ETIMEDOUT || rc == -EM_ENONODE) && em_now_ns() < until) {
		bool back = true;

		for (unsigned s = 0; s < r->nseg && back; s++)
			back = em_health_wait(pool, r->node[s]) == 0;
		if (!back) {
			/* not yet: frozen, restarting, or gone */
			struct timespec ts = { 0, 20 * 1000000 };
			nanosleep(&ts, NULL);
			continue;
		}
		for (unsigned s = 0; s < r->nseg && resend; s++)
			resend = pool->nodes[r->node[s]].session == sess[s];
		if (!resend) {
			em_log(EM_LOG_DEBUG, "resend abandoned: the node has a new session for us");
			rc = -EM_ENONODE;
			break;
		}
		q->replay_tag = first;
		rc = sync_submit(q, op);
		q->replay_tag = 0;
	}
	if (resend && rc == -ETIMEDOUT)
		rc = -EM_ENONODE;
	em_health_kick(pool); /* a connection this call found broken */
	return rc;
}

static int sync_op(em_region *r, struct em_op *op)
{
	em_pool *pool;
	uint64_t deadline;
	int rc;

	if (!r)
		return -EINVAL;
	pool = r->pool;
	op->region = r;
	deadline = em_now_ns() + (uint64_t)pool->timeout_ms * 1000000ull;
	pthread_mutex_lock(&pool->lock);
	if (r->follow_again) {
		/* the etcd watch could not follow its record (a node the new
		 * layout needs was being dialled again): before waiting for a
		 * node the record may no longer name */
		int fr = em_drain_refresh(r);
		r->follow_again = fr && fr != -EAGAIN && fr != -EPROTO;
	}
	rc = sync_once(r, op);
	/* a part moved by a drain: follow the layout's new epoch and do the
	 * whole operation again (a write that met EM_ESTALE was not applied,
	 * and the parts that took it take the same bytes again) */
	while (rc == -EM_ESTALE && r->named && pool->dir && em_now_ns() < deadline) {
		int fr = em_drain_refresh(r);

		if (fr == -EAGAIN) { /* frozen, the copy under way: wait for it */
			pthread_mutex_unlock(&pool->lock);
			usleep(1000);
			pthread_mutex_lock(&pool->lock);
		} else if (fr) {
			rc = fr;
			break;
		}
		rc = sync_once(r, op);
	}
	/* a handle idle through a drain may find the old node stopped: when
	 * the record moved on meanwhile, follow it rather than fail */
	if (rc < 0 && rc != -EM_ESTALE && r->named && pool->dir && !em_drain_refresh(r))
		rc = sync_once(r, op);
	pthread_mutex_unlock(&pool->lock);
	return rc;
}

int em_read(em_region *r, uint64_t off, void *buf, size_t len)
{
	struct em_op op = { .opcode = EM_OP_READ, .offset = off, .buf = buf, .len = len };
	return sync_op(r, &op);
}

int em_write(em_region *r, uint64_t off, const void *buf, size_t len)
{
	struct em_op op = { .opcode = EM_OP_WRITE, .offset = off, .buf = (void *)buf, .len = len };
	return sync_op(r, &op);
}

int em_atomic(em_region *r, uint64_t off, enum em_atomic_op aop, uint64_t operand, uint64_t compare,
	      uint64_t *old)
{
	struct em_op op = { .opcode = EM_OP_ATOMIC,
			    .atomic_op = (uint8_t)aop,
			    .offset = off,
			    .operand = operand,
			    .compare = compare };
	int rc = sync_op(r, &op);

	if (!rc && old)
		*old = op.operand;
	return rc;
}

int em_ctl_call(em_pool *pool, unsigned node, struct em_part *p)
{
	struct em_chan *ch = pool->dq->ch[node];

	/* control calls do not wait for a connection being remade: they fail now */
	if (ch->broken)
		return -EHOSTDOWN;
	return em_chan_call(pool->dq, ch, p);
}

int em_chan_call(em_queue *q, struct em_chan *ch, struct em_part *p)
{
	p->origin = p;
	p->slot = NULL;
	p->tag = ++q->next_tag;
	p->status = -EINPROGRESS;
	ch->ops->post(ch, p, 1);
	while (p->status == -EINPROGRESS && ch->outstanding)
		if (ch->ops->progress(ch, -1) < 0)
			break;
	return p->status == -EINPROGRESS ? -EIO : p->status;
}
