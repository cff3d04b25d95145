/*
 * ox_chan.c - the OmniXtend transport of libethermem (--transport ox).
 *
 * The TCP connection stays the control path: authentication, regions, and
 * the grant of an address window per region handle (this transport's
 * start and attach hooks ask for them with EM_W_OX_ATTACH / EM_W_OX_MAP,
 * and keep each node's windows by handle, so the core's parts carry only
 * the handle and offset the node knows).  A channel of this kind wraps a
 * queue's TCP channel to one node: reads, writes and the atomics TL-UH has
 * go out as TileLink requests in Ethernet frames (src/ox); everything else,
 * and compare-and-swap, which TL-UH lacks, goes over the TCP channel
 * beside it.  CAS stays exact against OmniXtend atomics because both ends
 * are hardware atomics on the same word of the node's memory.
 *
 * OmniXtend keys a connection (sequence numbers, credits) on the pair of
 * MAC addresses, so a process has one requester per node, shared by the
 * pool's default queue and every em_queue, behind a mutex.  Each part
 * becomes an ox_op whose callback only marks it done; the channel that
 * posted it completes it, in its own thread, the next time it polls - so
 * a queue's completions never run on another thread's stack.
 *
 * Waiting follows the machine: busy-poll while frames arrive, yield after
 * 20 us, block in the kernel after 200 us of silence (see machine.md).
 *
 * Authenticated mode (ETHERMEM_OX_AUTH=1, required by a node started with
 * --ox-auth): asked for at attach; every frame then carries a tag keyed
 * from the session's token, which both ends derived in the TCP handshake
 * and no one else holds (src/ox/tag.c).  The link is bound either way: a
 * frame claiming the node's MAC far outside its sequence is dropped.
 *
 * Atomics map onto TL-UH: FADD -> Arithmetic ADD; SMIN/SMAX/UMIN/UMAX ->
 * MIN/MAX/MINU/MAXU; AND/OR/XOR/SWAP -> Logical.  A denied request (closed
 * handle, outside the window) completes with -EACCES.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/util.h"
#include "lib/internal.h"
#include "lib/ox_chan.h"
#include "ox/ox.h"

#define SPIN_NS 200000ull
#define PURE_SPIN_NS 20000ull

/* The window the node granted one region handle: OmniXtend address of
 * the handle's byte 0. */
struct oxwin {
	uint32_t handle;
	uint64_t base;
};

struct em_oxnode {
	pthread_mutex_t lock;       /* the requester and its link, the windows */
	struct ox_link *raw, *link; /* link: raw or the test fault injector around it */
	struct ox_requester *rq;
	struct em_ox_info info; /* what the node told us at attach */
	/* Open handles' windows. A linear search: a process holds a handful
	 * of regions, and the last one found is tried first. */
	struct oxwin *win;
	unsigned nwin, capwin, lastwin;
};

/* The transport's pool state: one connection per pool node. */
struct oxpool {
	unsigned n;
	struct em_oxnode *node[];
};

/* A part on its way: held back behind an earlier overlapping one (WAIT),
 * with the requester (OX), or a compare-and-swap handed to the TCP channel
 * (TCP: kept only as a marker for later overlapping parts, until the TCP
 * channel has nothing in flight). */
enum { E_WAIT, E_OX, E_TCP };

struct oxent {
	struct ox_op op;
	struct em_part part;
	struct oxent *next;
	uint64_t addr;   /* OmniXtend address of the part's offset */
	uint64_t lo, hi; /* OmniXtend address range */
	uint8_t state;
	bool ro;   /* a read: reads never conflict with reads */
	bool cas;  /* goes over TCP when its turn comes */
	bool done; /* set by the callback, under the node lock */
};

struct em_oxchan {
	struct em_chan ch;
	struct em_chan *tcp;
	struct em_oxnode *n;
	struct oxent *head, *tail; /* posted, not yet completed */
	struct oxent *free;
	unsigned nox;
};

static int node_open(em_pool *pool, struct oxpool *op, unsigned i, uint8_t mac[6])
{
	struct em_oxnode *n = calloc(1, sizeof(*n));
	int rc;

	if (!n)
		return -ENOMEM;
	pthread_mutex_init(&n->lock, NULL);
	rc = ox_link_packet_open(pool->iface, 0, &n->raw);
	if (rc) {
		em_log(EM_LOG_DEBUG, "ox: cannot open %s: %s", pool->iface, em_strerror(rc));
		pthread_mutex_destroy(&n->lock);
		free(n);
		return rc;
	}
	n->link = n->raw;
	memcpy(mac, n->raw->mac, 6);
	op->node[i] = n;
	return 0;
}

static int node_start(em_pool *pool, struct oxpool *op, unsigned i, const struct em_ox_info *info)
{
	struct em_oxnode *n = op->node[i];
	struct ox_opts o = { .mode = info->mode ? OX_MODE_103 : OX_MODE_11,
			     .verbatim = info->verbatim,
			     .ethertype = info->ethertype };
	const char *faults;
	int rc;

	if (info->mtu < OX_MIN_PAYLOAD || info->mode > 1 || info->ethertype < 0x600)
		return -EPROTO;
	o.mtu = EM_MIN(info->mtu, n->raw->mtu);
	o.max_burst_log2 = info->big_bursts ? OX_MAX_SIZE_LOG2 : OX_STD_SIZE_LOG2;
	if (info->ethertype != n->raw->ethertype) {
		/* the node speaks another EtherType: reopen the socket on it */
		struct ox_link *l;
		if ((rc = ox_link_packet_open(pool->iface, info->ethertype, &l)))
			return rc;
		ox_link_close(n->raw);
		n->raw = n->link = l;
	}
	if ((rc = em_cfg_ox_opts(&o, &faults)) ||
	    (rc = ox_link_faulty_spec(n->raw, faults, (uint64_t)getpid() * 31 + i, &n->link)))
		return rc;
	o.bound = true; /* the session started this connection, nothing in band does */
	o.tag = info->tagged;
	if (o.tag)
		ox_tag_keys(pool->nodes[i].token, EM_TOKEN_LEN, false, o.tag_tx, o.tag_rx);
	rc = ox_requester_create(&o, n->link, info->mac, &n->rq);
	ox_tag_wipe(o.tag_tx, sizeof(o.tag_tx));
	ox_tag_wipe(o.tag_rx, sizeof(o.tag_rx));
	if (rc)
		return rc;
	n->info = *info;
	n->info.mtu = o.mtu;
	em_log(EM_LOG_DEBUG, "ox: node %s at %02x:%02x:%02x:%02x:%02x:%02x, MTU %u, %s%s",
	       pool->nodes[i].addr, info->mac[0], info->mac[1], info->mac[2], info->mac[3],
	       info->mac[4], info->mac[5], n->info.mtu, info->mode ? "1.0.3" : "1.1",
	       info->tagged ? ", tagged frames" : "");
	return 0;
}

static void node_quiesce(struct em_oxnode *n)
{
	if (n && n->rq && !ox_requester_busy(n->rq)) {
		pthread_mutex_lock(&n->lock);
		ox_requester_close(n->rq, 200000000ull);
		pthread_mutex_unlock(&n->lock);
	}
}

static void node_close(struct em_oxnode *n)
{
	if (!n)
		return;
	if (n->rq) {
		struct ox_stats st;
		/* 1.1: tell the node this connection is over; 1.0.3 has no close */
		if (!ox_requester_busy(n->rq))
			ox_requester_close(n->rq, 200000000ull);
		ox_requester_stats(n->rq, &st);
		em_log(EM_LOG_DEBUG,
		       "ox: %llu frames in, %llu out, %llu retransmitted (%llu timeouts, %llu "
		       "NAKs in, %llu out of order in)",
		       (unsigned long long)st.rx_frames, (unsigned long long)st.tx_frames,
		       (unsigned long long)st.rtx_frames, (unsigned long long)st.timeouts,
		       (unsigned long long)st.naks_rx, (unsigned long long)st.ooo);
		if (st.rej[OX_REJ_SEQ] || st.rej[OX_REJ_TAG])
			em_log(EM_LOG_DEBUG,
			       "ox: dropped %llu frames claiming the node's MAC out of sequence "
			       "and %llu with a bad tag",
			       (unsigned long long)st.rej[OX_REJ_SEQ],
			       (unsigned long long)st.rej[OX_REJ_TAG]);
		ox_requester_destroy(n->rq);
	}
	if (n->link && n->link != n->raw)
		ox_link_close(n->link);
	if (n->raw)
		ox_link_close(n->raw);
	pthread_mutex_destroy(&n->lock);
	free(n->win);
	free(n);
}

/* Under the node lock: the OmniXtend address of a handle's byte 0, 0 if the
 * handle has no window (then the part travels over TCP). */
static uint64_t win_find(struct em_oxnode *n, uint32_t handle)
{
	if (n->lastwin < n->nwin && n->win[n->lastwin].handle == handle)
		return n->win[n->lastwin].base;
	for (unsigned k = 0; k < n->nwin; k++)
		if (n->win[k].handle == handle) {
			n->lastwin = k;
			return n->win[k].base;
		}
	return 0;
}

static void ent_cb(struct ox_op *op)
{
	((struct oxent *)op->user)->done = true;
}

/* Over OmniXtend: reads, writes and the atomics TL-UH has, of a handle
 * with a window.  Compare-and-swap of such a handle is ordered like them
 * but travels over TCP; everything else goes to TCP untouched. */
static bool data_part(const struct em_part *p)
{
	if (p->wflags) /* a repair's copy: only the request path keeps its cursor */
		return false;
	switch (p->wop) {
	case EM_W_READ:
		return true;
	case EM_W_WRITE:
		/* a redundant region's write carries its layout version, which
		 * only the node's request path checks against a repair's fence */
		return !p->aux;
	case EM_W_ATOMIC:
		return p->aux < EM_ATOMIC__COUNT;
	default:
		return false;
	}
}

static void op_setup(struct oxent *e)
{
	struct em_part *p = &e->part;
	struct ox_op *op = &e->op;

	memset(op, 0, sizeof(*op));
	op->addr = e->addr;
	op->cb = ent_cb;
	op->user = e;
	e->cas = false;
	e->ro = false;
	e->lo = e->addr;
	if (p->wop == EM_W_READ) {
		op->kind = OX_OP_GET;
		op->buf = p->resp;
		op->len = p->aux;
		e->ro = true;
	} else if (p->wop == EM_W_WRITE) {
		op->kind = OX_OP_PUT;
		op->buf = (void *)p->req;
		op->len = p->req_len;
	} else {
		op->len = 8;
		op->operand = em_get64(p->inl);
		switch (p->aux) {
		case EM_ATOMIC_FADD:
			op->kind = OX_OP_ARITH;
			op->param = OX_ADD;
			break;
		case EM_ATOMIC_SMIN:
			op->kind = OX_OP_ARITH;
			op->param = OX_MIN;
			break;
		case EM_ATOMIC_SMAX:
			op->kind = OX_OP_ARITH;
			op->param = OX_MAX;
			break;
		case EM_ATOMIC_UMIN:
			op->kind = OX_OP_ARITH;
			op->param = OX_MINU;
			break;
		case EM_ATOMIC_UMAX:
			op->kind = OX_OP_ARITH;
			op->param = OX_MAXU;
			break;
		case EM_ATOMIC_AND:
			op->kind = OX_OP_LOGIC;
			op->param = OX_AND;
			break;
		case EM_ATOMIC_OR:
			op->kind = OX_OP_LOGIC;
			op->param = OX_OR;
			break;
		case EM_ATOMIC_XOR:
			op->kind = OX_OP_LOGIC;
			op->param = OX_XOR;
			break;
		case EM_ATOMIC_SWAP:
			op->kind = OX_OP_LOGIC;
			op->param = OX_SWAP;
			break;
		default:
			e->cas = true;
			break; /* not in TL-UH */
		}
	}
	e->hi = e->lo + op->len;
}

/* Copies a part; inline operands keep pointing at the copy's own. */
static void part_copy(struct em_part *dst, const struct em_part *src)
{
	*dst = *src;
	if (src->req == src->inl)
		dst->req = dst->inl;
	if (src->resp == src->inl)
		dst->resp = dst->inl;
}

static void sync_outstanding(struct em_oxchan *c)
{
	c->tcp->q = c->ch.q;
	c->ch.outstanding = c->tcp->outstanding + c->nox;
}

/* Does an entry ahead of e overlap it with a write on either side?  Over
 * TCP a node serves a connection's requests in order; TileLink leaves
 * requests in flight unordered, so the channel keeps the TCP semantics by
 * holding such a part back until the earlier one has completed. */
static bool blocked(const struct em_oxchan *c, const struct oxent *e)
{
	for (const struct oxent *x = c->head; x && x != e; x = x->next)
		if (x->lo < e->hi && e->lo < x->hi && !(x->ro && e->ro))
			return true;
	return false;
}

/* Under the node lock.  Starts an entry whose turn has come: to the
 * requester, or (CAS) onto the list of parts the caller posts to TCP. */
static void start(struct em_oxchan *c, struct oxent *e, struct em_part *tcp, unsigned *nt)
{
	int rc;

	if (e->cas) {
		e->state = E_TCP;
		part_copy(&tcp[(*nt)++], &e->part);
		c->nox--; /* the TCP channel counts it from now on */
		return;
	}
	e->state = E_OX;
	rc = e->op.status ? e->op.status : ox_requester_submit(c->n->rq, &e->op);
	if (rc) {
		e->op.status = rc;
		e->done = true;
	}
}

/* Under the node lock: unlinks finished entries into *done, drops TCP
 * markers once the TCP channel is idle, starts entries whose turn came.
 * Returns how many went to the requester. */
static unsigned collect(struct em_oxchan *c, struct oxent **done, struct em_part *tcp, unsigned *nt,
			unsigned tcp_cap)
{
	struct oxent **pp = &c->head, **dt = done, *last = NULL;
	bool tcp_idle = !c->tcp->outstanding;
	unsigned started = 0;

	*done = NULL;
	while (*pp) {
		struct oxent *e = *pp;
		if ((e->state == E_OX && e->done) || (e->state == E_TCP && tcp_idle)) {
			*pp = e->next;
			e->next = NULL;
			if (e->state == E_OX) {
				*dt = e;
				dt = &e->next;
				c->nox--;
			} else {
				e->next = c->free;
				c->free = e;
			}
		} else {
			last = e;
			pp = &e->next;
		}
	}
	c->tail = last;
	for (struct oxent *e = c->head; e; e = e->next)
		if (e->state == E_WAIT && !blocked(c, e) && (!e->cas || *nt < tcp_cap)) {
			start(c, e, tcp, nt);
			started += !e->cas;
		}
	return started;
}

/* Completes the entries of a done list; call without the node lock. */
static int harvest(struct em_oxchan *c, struct oxent *done)
{
	int k = 0;

	while (done) {
		struct oxent *e = done;
		struct em_part *p = &e->part;

		done = e->next;
		p->status = e->op.status;
		p->r_region = p->handle;
		p->r_off = p->off;
		if (p->wop == EM_W_READ)
			p->resp_len = p->status ? 0 : p->aux;
		else if (p->wop == EM_W_ATOMIC) {
			em_put64(p->inl, e->op.result);
			p->resp_len = 8;
		} else
			p->resp_len = 0;
		c->ch.outstanding++; /* em_part_done takes one off; sync_outstanding recounts */
		em_part_done(&c->ch, p);
		e->next = c->free;
		c->free = e;
		k++;
	}
	sync_outstanding(c);
	return k;
}

#define TCP_BATCH 64

/* One pass: requester poll, finished entries out, waiting ones started,
 * compare-and-swaps whose turn came posted to TCP.  Returns completions. */
static int turn(struct em_oxchan *c, uint64_t *rx)
{
	struct em_part tcp[TCP_BATCH];
	struct oxent *done;
	unsigned nt = 0;

	pthread_mutex_lock(&c->n->lock);
	ox_requester_poll(c->n->rq, ox_now_ns());
	if (rx)
		*rx = ox_requester_rx_frames(c->n->rq);
	if (collect(c, &done, tcp, &nt, TCP_BATCH))
		ox_requester_poll(c->n->rq, ox_now_ns()); /* their frames go out now */
	pthread_mutex_unlock(&c->n->lock);
	if (nt)
		c->tcp->ops->post(c->tcp, tcp, nt);
	return harvest(c, done);
}

static int ox_post(struct em_chan *ch, const struct em_part *parts, unsigned n)
{
	struct em_oxchan *c = (struct em_oxchan *)ch;
	struct em_part stack[16], *tcp = stack;
	unsigned nt = 0, nox = 0;
	bool failed = false;

	for (unsigned i = 0; i < n; i++)
		nox += data_part(&parts[i]);
	if (n > 16 && !(tcp = malloc(n * sizeof(*tcp))))
		tcp = NULL;
	if (nox)
		pthread_mutex_lock(&c->n->lock); /* the windows, the requester */
	for (unsigned i = 0; i < n; i++) {
		const struct em_part *p = &parts[i];
		uint64_t base = data_part(p) ? win_find(c->n, p->handle) : 0;
		bool able = base != 0;
		struct oxent *e = NULL;

		if (able) {
			e = c->free;
			if (e)
				c->free = e->next;
			else
				e = malloc(sizeof(*e));
		}
		if (!e && (!able && tcp)) {
			part_copy(&tcp[nt++], p);
			continue;
		}
		if (!e) {
			/* no memory: the part still completes, with the error */
			struct em_part f = *p;
			f.status = -ENOMEM;
			ch->outstanding++;
			em_part_done(ch, &f);
			continue;
		}
		part_copy(&e->part, p);
		e->addr = base + p->off;
		e->done = false;
		e->next = NULL;
		e->state = E_WAIT;
		op_setup(e);
		if (!e->op.len) {
			e->op.status = -EINVAL;
			failed = true;
		}
		if (c->tail)
			c->tail->next = e;
		else
			c->head = e;
		c->tail = e;
		c->nox++;
		if (!blocked(c, e) && (!e->cas || tcp)) {
			start(c, e, tcp, &nt);
			failed |= e->done;
		}
	}
	if (nox) {
		/* frames go out now, not at the next wait */
		ox_requester_poll(c->n->rq, ox_now_ns());
		pthread_mutex_unlock(&c->n->lock);
	}
	sync_outstanding(c);
	if (nt)
		c->tcp->ops->post(c->tcp, tcp, nt);
	if (tcp && tcp != stack)
		free(tcp);
	sync_outstanding(c);
	if (failed)
		turn(c, NULL); /* submit errors complete at once */
	return 0;
}

/* Every part of every queue on this node fails: the node stopped
 * answering for a whole request timeout. */
static void ox_abort(struct em_oxchan *c, int err)
{
	pthread_mutex_lock(&c->n->lock);
	ox_requester_abort(c->n->rq, err);
	/* entries still waiting their turn fail too, without being sent */
	for (struct oxent *e = c->head; e; e = e->next)
		if (e->state == E_WAIT) {
			e->state = E_OX;
			e->op.status = err;
			e->done = true;
		}
	pthread_mutex_unlock(&c->n->lock);
	turn(c, NULL);
}

static int ox_progress(struct em_chan *ch, int timeout_ms)
{
	struct em_oxchan *c = (struct em_oxchan *)ch;
	uint64_t start = em_now_ns(), last = start, rx = 0;
	int done = 0, full = ch->timeout_ms;

	if (timeout_ms < 0)
		timeout_ms = full;
	for (;;) {
		uint64_t now;

		if (c->tcp->outstanding) {
			int r = c->tcp->ops->progress(c->tcp, 0);
			if (r > 0)
				done += r;
			sync_outstanding(c);
		}
		if (c->nox || c->head) {
			uint64_t nrx = rx;
			done += turn(c, &nrx);
			if (nrx != rx) {
				rx = nrx;
				last = em_now_ns();
			}
		}
		if (done || timeout_ms == 0 || !ch->outstanding)
			return done;
		now = em_now_ns();
		if (now - start >= (uint64_t)timeout_ms * 1000000ull) {
			if (timeout_ms < full)
				return 0; /* the caller's short wait ran out, not the request */
			ox_abort(c, -ETIMEDOUT);
			if (c->tcp->outstanding)
				c->tcp->ops->fail(c->tcp, -ETIMEDOUT);
			sync_outstanding(c);
			return -ETIMEDOUT;
		}
		if (!c->nox) {
			/* only TCP parts left (CAS, control): block on the socket */
			int left = timeout_ms - (int)((now - start) / 1000000ull);
			int r = c->tcp->ops->progress(c->tcp, left > 0 ? left : 1);
			sync_outstanding(c);
			if (r != 0)
				return r;
			continue;
		}
		if (now - last < SPIN_NS) {
			if (now - last > PURE_SPIN_NS)
				sched_yield();
			continue;
		}
		/* silence: sleep in the kernel until a frame comes or the
		 * retransmission timer is due, a millisecond at most so a TCP
		 * reply beside us is not kept waiting long */
		pthread_mutex_lock(&c->n->lock);
		{
			uint64_t due = ox_requester_next_due(c->n->rq), t = 1000000;
			now = ox_now_ns();
			if (due > now && due - now < t)
				t = due - now;
			else if (due <= now)
				t = 0;
			if (t && !c->tcp->outstanding)
				ox_link_wait(c->n->link, t);
		}
		pthread_mutex_unlock(&c->n->lock);
		if (c->tcp->outstanding)
			usleep(50);
	}
}

static int ox_fd(struct em_chan *ch)
{
	(void)ch;
	return -1; /* no single descriptor tells: queue.c polls us instead */
}

static void ox_fail(struct em_chan *ch, int err)
{
	struct em_oxchan *c = (struct em_oxchan *)ch;

	if (c->nox)
		ox_abort(c, err);
	c->tcp->ops->fail(c->tcp, err);
	sync_outstanding(c);
}

static void ox_close(struct em_chan *ch)
{
	struct em_oxchan *c = (struct em_oxchan *)ch;

	/* the requester points at our entries: they must finish first */
	if (c->nox) {
		uint64_t t0 = em_now_ns();
		while (c->nox && em_now_ns() - t0 < 1000000000ull)
			if (ox_progress(ch, 10) < 0)
				break;
		if (c->nox)
			ox_abort(c, -ECANCELED);
	}
	c->tcp->ops->close(c->tcp);
	while (c->head) { /* markers of compare-and-swaps the TCP close ended */
		struct oxent *e = c->head;
		c->head = e->next;
		free(e);
	}
	while (c->free) {
		struct oxent *e = c->free;
		c->free = e->next;
		free(e);
	}
	free(c);
}

static const struct em_chan_ops ox_ops = {
	.name = "ox",
	.post = ox_post,
	.progress = ox_progress,
	.fd = ox_fd,
	.fail = ox_fail,
	.close = ox_close,
};

static int ox_wrap(void *priv, em_pool *pool, unsigned i, struct em_chan *tcp, struct em_chan **out)
{
	struct oxpool *op = priv;
	struct em_oxchan *c;

	(void)pool;
	if (!op->node[i] || !op->node[i]->rq)
		return -ENOTCONN;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->ch.ops = &ox_ops;
	c->ch.q = tcp->q;
	c->ch.timeout_ms = tcp->timeout_ms;
	c->tcp = tcp;
	c->n = op->node[i];
	sync_outstanding(c);
	*out = &c->ch;
	return 0;
}

/* ---- the transport: pool and region hooks ---- */

static int ox_init(em_pool *pool, void **priv)
{
	struct oxpool *op;

	if (!pool->iface[0])
		return -EDESTADDRREQ; /* --ox-iface / ETHERMEM_OX_IFACE */
	op = calloc(1, sizeof(*op) + em_pool_n(pool) * sizeof(op->node[0]));
	if (!op)
		return -ENOMEM;
	op->n = em_pool_n(pool);
	*priv = op;
	return 0;
}

/* Attaches every node (our MAC for its link's parameters) and starts the
 * requesters; the core then wraps the default queue's channels. */
static int ox_start(void *priv, em_pool *pool)
{
	struct oxpool *op = priv;
	int64_t tag = 0;

	if (em_cfg_env_num(EM_CFG_OX_AUTH, &tag))
		return -EINVAL;

	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		uint8_t req[EM_OX_ATTACH_REQ_LEN] = { 0 }, resp[EM_OX_ATTACH_RESP_LEN];
		struct em_ox_info info;
		struct em_part res;
		int rc = node_open(pool, op, i, req);

		req[6] = tag ? EM_OX_ATTACH_TAG : 0;
		/* the node may not yet have seen the end of this MAC's last
		 * session (a process that restarted at once): wait a little */
		for (int tries = 0; !rc; tries++) {
			rc = em_ctl(pool, i, EM_W_OX_ATTACH, 0, 0, 0, req, sizeof(req), resp,
				    sizeof(resp), &res);
			if (rc != -EADDRINUSE || tries == 40)
				break;
			rc = 0;
			usleep(25000);
		}
		if (!rc && res.resp_len != sizeof(resp))
			rc = -EPROTO;
		if (!rc) {
			em_ox_info_decode(resp, &info);
			/* a node too old to tag would leave the link open to spoofing */
			if (tag && !info.tagged)
				rc = -EPROTONOSUPPORT;
		}
		if (!rc) {
			rc = node_start(pool, op, i, &info);
		}
		if (rc) {
			em_log(EM_LOG_DEBUG, "node %s: OmniXtend: %s", pool->nodes[i].addr,
			       em_strerror(rc));
			return rc;
		}
	}
	return 0;
}

static void win_drop(struct em_oxnode *n, uint32_t handle)
{
	pthread_mutex_lock(&n->lock);
	for (unsigned k = 0; k < n->nwin; k++)
		if (n->win[k].handle == handle) {
			n->win[k] = n->win[--n->nwin];
			break;
		}
	pthread_mutex_unlock(&n->lock);
}

/* Asks each node holding a segment for its window and keeps it by handle. */
static int ox_attach(void *priv, em_region *r)
{
	struct oxpool *op = priv;
	unsigned s;
	int rc = 0;

	for (s = 0; s < r->nseg && !rc; s++) {
		struct em_oxnode *n = op->node[r->node[s]];
		uint8_t resp[8];
		struct em_part res;

		rc = em_ctl(r->pool, r->node[s], EM_W_OX_MAP, r->handle[s], 0, 0, NULL, 0, resp,
			    sizeof(resp), &res);
		if (!rc && (res.resp_len != 8 || !res.r_off || em_get64(resp) < em_seg_bytes(r, s)))
			rc = -EPROTO;
		if (rc)
			break;
		pthread_mutex_lock(&n->lock);
		if (n->nwin == n->capwin) {
			unsigned nc = n->capwin ? 2 * n->capwin : 8;
			struct oxwin *nw = realloc(n->win, nc * sizeof(*nw));
			if (nw) {
				n->win = nw;
				n->capwin = nc;
			}
		}
		if (n->nwin < n->capwin)
			n->win[n->nwin++] = (struct oxwin){ r->handle[s], res.r_off };
		else
			rc = -ENOMEM;
		pthread_mutex_unlock(&n->lock);
	}
	if (rc) /* the segments done so far forget their windows */
		while (s--)
			win_drop(op->node[r->node[s]], r->handle[s]);
	return rc;
}

static void ox_detach(void *priv, em_region *r)
{
	struct oxpool *op = priv;

	for (unsigned s = 0; s < r->nseg; s++)
		win_drop(op->node[r->node[s]], r->handle[s]);
}

static void ox_stop(void *priv, em_pool *pool)
{
	struct oxpool *op = priv;

	(void)pool;
	for (unsigned i = 0; i < op->n; i++)
		if (op->node[i])
			node_quiesce(op->node[i]);
}

static void ox_fini(void *priv, em_pool *pool)
{
	struct oxpool *op = priv;

	(void)pool;
	for (unsigned i = 0; i < op->n; i++)
		if (op->node[i])
			node_close(op->node[i]);
	free(op);
}

const struct em_transport_ops em_transport_ox = {
	.name = "ox",
	.id = EM_TRANSPORT_OX,
	.init = ox_init,
	.start = ox_start,
	.wrap = ox_wrap,
	.attach = ox_attach,
	.detach = ox_detach,
	.stop = ox_stop,
	.fini = ox_fini,
};

uint64_t em_ox_window(const em_region *r, unsigned seg)
{
	struct oxpool *op;
	struct em_oxnode *n;
	uint64_t base;

	if (!r || seg >= r->nseg || r->pool->tp != &em_transport_ox)
		return 0;
	op = r->pool->tpriv;
	n = op->node[r->node[seg]];
	pthread_mutex_lock(&n->lock);
	base = win_find(n, r->handle[seg]);
	pthread_mutex_unlock(&n->lock);
	return base;
}

/* ---- raw Ethernet ping-pong: the benchmark's baseline ---- */

struct em_ox_echo {
	struct ox_link *l;
	uint8_t peer[6];
	unsigned mtu;
	uint8_t *buf;
};

int em_ox_echo_open(em_pool *pool, unsigned node, struct em_ox_echo **out)
{
	struct oxpool *op = pool->tp == &em_transport_ox ? pool->tpriv : NULL;
	struct em_oxnode *n = op && node < op->n ? op->node[node] : NULL;
	struct em_ox_echo *e;
	int rc;

	if (!n || !n->rq)
		return -ENOTCONN;
	if (!n->info.echo_type)
		return -EPROTONOSUPPORT;
	if (!(e = calloc(1, sizeof(*e))))
		return -ENOMEM;
	rc = ox_link_packet_open(pool->iface, n->info.echo_type, &e->l);
	if (rc) {
		free(e);
		return rc;
	}
	memcpy(e->peer, n->info.mac, 6);
	e->mtu = EM_MIN(n->info.mtu, e->l->mtu);
	e->buf = malloc(OX_ETH_HLEN + e->l->mtu + 64);
	if (!e->buf) {
		em_ox_echo_close(e);
		return -ENOMEM;
	}
	*out = e;
	return 0;
}

int em_ox_echo_max(const struct em_ox_echo *e)
{
	return (int)e->mtu;
}

/* A 64-byte request, a reply of `size` payload bytes; the same polling
 * policy as the OmniXtend channel, so the two are compared like for like. */
int em_ox_echo_ping(struct em_ox_echo *e, size_t size, int timeout_ms)
{
	uint8_t req[64] = { 0 };
	size_t want = size + OX_ETH_HLEN;
	uint64_t t0 = ox_now_ns(), last = t0;
	int rc;

	if (size > e->mtu)
		return -EMSGSIZE;
	ox_eth_write(req, e->peer, e->l->mac, e->l->ethertype);
	req[14] = (uint8_t)(want >> 8);
	req[15] = (uint8_t)want;
	if ((rc = ox_link_send(e->l, req, sizeof(req))) || (rc = ox_link_flush(e->l)))
		return rc;
	for (;;) {
		int n = ox_link_recv(e->l, e->buf, OX_ETH_HLEN + e->l->mtu + 64);
		uint64_t now = ox_now_ns();

		if (n > 0 && !memcmp(e->buf + 6, e->peer, 6))
			return n >= (int)EM_MAX(want, 60u) ? 0 : -EPROTO;
		if (n < 0)
			return n;
		if (now - t0 > (uint64_t)timeout_ms * 1000000ull)
			return -ETIMEDOUT;
		if (now - last > SPIN_NS)
			ox_link_wait(e->l, 1000000);
		else if (now - last > PURE_SPIN_NS)
			sched_yield();
	}
}

void em_ox_echo_close(struct em_ox_echo *e)
{
	if (!e)
		return;
	if (e->l)
		ox_link_close(e->l);
	free(e->buf);
	free(e);
}
