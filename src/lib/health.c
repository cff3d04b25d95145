/*
 * health.c - keeping a pool usable while its nodes die, freeze, restart
 * and come back, with a static node list or with etcd.
 *
 * A node's connection that breaks (the node died, restarted, or stopped
 * answering within the request timeout) is dialled again in the
 * background, with backoff from 50 ms to 2 s, by one thread per pool. It
 * first asks to rejoin the old session, which survives while any other
 * connection of ours to the node does; else it starts a new one, and then
 * what the old session held is gone on the node: anonymous regions, and
 * open handles, which it opens again by name - unless the node's identity
 * changed, which means it restarted empty: such regions are lost, and
 * every access to them fails with EM_ENONODE, never with zeros.
 *
 * Calls that need a node whose connection is down wait for it up to the
 * request timeout, then fail with EHOSTDOWN. With etcd a second thread
 * watches the membership records: a node whose lease expired (killed or
 * frozen) is marked down at once, its connection is cut so that calls
 * waiting on it return now rather than at their timeout, and it is not
 * dialled until it registers again. The same thread watches the named-region
 * records: when a drain moves a part, every open handle on that region
 * follows the new record at once (drain.c), and it closes the handles a
 * drain left behind once their grace is over.
 *
 * The reconnect thread runs only while a connection is down: it starts
 * when a call finds one down (or at connect) and ends when all are up
 * again, or while a mapping's queues (which may not dial from their fault
 * handler) use the pool: it dials their broken channels for them. A
 * healthy pool without a mapping thus has no thread of its own, so a process that
 * forks while holding one forks single-threaded as far as we are
 * concerned. For a fork while a thread is running, handlers registered
 * with pthread_atfork hold every pool's lock across the fork (no thread
 * of ours holds one half-way in the child), and in the child they forget
 * the threads, which did not survive: the next call that finds a
 * connection down starts a reconnect thread of the child's own. The
 * membership watch is not restarted in a child.
 *
 * Locking: the pool lock guards the default queue's channels, the region
 * list and whether the reconnect thread runs; the reconnect thread dials
 * without it and takes it only to swap a channel in. The list of pools
 * (for fork) has its own lock, taken before any pool's.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/cluster.h"
#include "common/etcd.h"
#include "common/util.h"
#include "lib/internal.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000

struct em_health {
	em_pool *pool;
	struct em_health *next; /* all pools' (under all_lock), for fork */
	pthread_t recon, watch;
	bool can_recon;  /* the transport's channels can be made again */
	bool recon_on;   /* the reconnect thread runs (pool lock) */
	bool recon_join; /* `recon` names a thread not yet joined (pool lock) */
	bool have_watch;
	bool stop;           /* under the pool lock */
	pthread_cond_t cv;   /* with the pool lock: a channel came back, or stop */
	pthread_cond_t kick; /* with the pool lock: something to reconnect */
	char nodes_prefix[128];
	char regions_prefix[128];
	char etcd[1024];
	int timeout_ms;
};

static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static struct em_health *all;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static bool chan_down(const em_pool *pool, unsigned i)
{
	struct em_chan *ch = pool->dq->ch[i];
	return !ch || ch->broken;
}

void em_node_id(em_pool *pool, unsigned i, uint8_t id[EM_NODE_ID_LEN])
{
	pthread_mutex_lock(&pool->id_lock);
	memcpy(id, pool->nodes[i].id, EM_NODE_ID_LEN);
	pthread_mutex_unlock(&pool->id_lock);
}

/* etcd says node i left (the watch thread sets it without the pool lock) */
static bool left(const em_pool *pool, unsigned i)
{
	return __atomic_load_n(&pool->nodes[i].dir_down, __ATOMIC_ACQUIRE);
}

/* Whether the reconnect thread has work: a node down that may be dialled
 * (one that left the cluster waits until it registers again). */
static bool need_recon(const em_pool *pool)
{
	if (pool->pager_qs) /* they ask for channels from their fault handler */
		return true;
	for (unsigned i = 0; i < em_pool_n(pool); i++)
		if (chan_down(pool, i) && !left(pool, i))
			return true;
	return false;
}

/* fork: no pool lock may be held half-way by another thread in the child */
static void fork_prepare(void)
{
	pthread_mutex_lock(&all_lock);
	for (struct em_health *h = all; h; h = h->next) {
		pthread_mutex_lock(&h->pool->lock);
		pthread_mutex_lock(&h->pool->id_lock);
	}
}

static void fork_parent(void)
{
	for (struct em_health *h = all; h; h = h->next) {
		pthread_mutex_unlock(&h->pool->id_lock);
		pthread_mutex_unlock(&h->pool->lock);
	}
	pthread_mutex_unlock(&all_lock);
}

/* Only the forking thread lives on in the child: ours are gone. */
static void fork_child(void)
{
	for (struct em_health *h = all; h; h = h->next) {
		h->recon_on = h->recon_join = h->have_watch = false;
		pthread_cond_init(&h->cv, NULL);
		pthread_cond_init(&h->kick, NULL);
		pthread_mutex_unlock(&h->pool->id_lock);
		pthread_mutex_unlock(&h->pool->lock);
	}
	pthread_mutex_unlock(&all_lock);
}

static void atfork_register(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

bool em_node_down(const em_pool *pool, unsigned i)
{
	return chan_down(pool, i) || left(pool, i);
}

/* A second descriptor on the channel's socket: shutting it down reaches
 * the socket, and closing the channel can never leave it naming another. */
static void set_cut_fd(em_pool *pool, unsigned i)
{
	struct em_chan *ch = pool->dq->ch[i];
	int fd = ch && !ch->broken ? ch->ops->fd(ch) : -1;
	int old = __atomic_exchange_n(&pool->nodes[i].fd, fd >= 0 ? dup(fd) : -1, __ATOMIC_ACQ_REL);

	if (old >= 0)
		close(old);
}

static void abstime_in(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* After a new session on node i: what our handles there meant is gone.
 * A named region's part is opened again; it is lost only when the node
 * restarted or says the part is gone. Another failure leaves the
 * connection to be made again. */
static void rebind_regions(em_pool *pool, unsigned i, bool restarted)
{
	for (em_region *r = pool->regions; r; r = r->next) {
		for (unsigned s = 0; s < r->nseg; s++) {
			uint8_t req[3 + EM_NAME_MAX], resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
			const char *nm = r->piece[0] ? r->piece : r->name;
			struct em_part p = {
				.wop = EM_W_OPEN, .req = req, .resp = resp, .resp_cap = sizeof(resp)
			};
			int rc;

			if (r->node[s] != i ||
			    (em_red_on(r) && __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE) >> s & 1))
				continue; /* a redundant region's lost part stays lost */
			if (!r->named || restarted) {
				rc = -EM_ENONODE;
			} else {
				p.req_len = (uint32_t)em_namelayout_encode(req, sizeof(req), nm,
									   NULL, 0);
				rc = em_ctl_call(pool, i, &p);
				if (!rc) {
					em_layout_begin(r);
					__atomic_store_n(&r->handle[s], p.r_region,
							 __ATOMIC_RELEASE);
					em_layout_end(r);
				}
				if (rc && rc != -ENOENT) {
					struct em_chan *ch = pool->dq->ch[i];
					if (!ch->broken)
						ch->ops->fail(ch, rc);
					return;
				}
			}
			if (rc) {
				/* a redundant region loses just that part: the
				 * others serve it until a repair */
				if (em_red_on(r))
					__atomic_fetch_or(&r->lost, 1ull << s, __ATOMIC_ACQ_REL);
				else
					__atomic_store_n(&r->gone, true, __ATOMIC_RELEASE);
				em_log(EM_LOG_WARN, "region %s: its part on %s is lost (%s)",
				       r->named ? r->name : "(anonymous)", pool->nodes[i].addr,
				       restarted ? "the node restarted empty" : em_strerror(rc));
			}
		}
	}
}

/* One attempt on node i (pool lock not held). */
static int reconnect(em_pool *pool, unsigned i)
{
	struct em_node tmp = { .fd = -1 };
	struct em_chan *ch = NULL, *old;
	bool fresh = false, restarted;
	int rc;

	/* what a dial needs: the fields health.c's other threads touch
	 * (fd, dir_down) are not ours to copy */
	pthread_mutex_lock(&pool->lock);
	memcpy(tmp.addr, pool->nodes[i].addr, sizeof(tmp.addr));
	memcpy(tmp.host, pool->nodes[i].host, sizeof(tmp.host));
	tmp.port = pool->nodes[i].port;
	memcpy(tmp.id, pool->nodes[i].id, EM_NODE_ID_LEN);
	tmp.session = pool->nodes[i].session;
	memcpy(tmp.token, pool->nodes[i].token, EM_TOKEN_LEN);
	pthread_mutex_unlock(&pool->lock);
	/* no session yet: a node that joined */
	rc = tmp.session ? em_tcp_connect(pool, &tmp, false, &ch) : -ENOENT;
	if (rc == -ENOENT || rc == -EM_EAUTH) { /* our session is gone */
		fresh = true;
		rc = em_tcp_connect(pool, &tmp, true, &ch);
	}
	if (rc)
		return rc;
	pthread_mutex_lock(&pool->lock);
	restarted = fresh && pool->nodes[i].session &&
		    memcmp(tmp.id, pool->nodes[i].id, EM_NODE_ID_LEN);
	pool->nodes[i].session = tmp.session;
	memcpy(pool->nodes[i].token, tmp.token, EM_TOKEN_LEN);
	pthread_mutex_lock(&pool->id_lock);
	memcpy(pool->nodes[i].id, tmp.id, EM_NODE_ID_LEN);
	pthread_mutex_unlock(&pool->id_lock);
	old = pool->dq->ch[i];
	ch->q = pool->dq;
	if (ch->ops->reserve)
		ch->ops->reserve(ch, 64);
	pool->dq->ch[i] = ch;
	set_cut_fd(pool, i);
	if (old)
		old->ops->close(old);
	if (fresh) {
		em_drain_forget(pool, i); /* the old session's handles */
		rebind_regions(pool, i, restarted);
	}
	pool->nodes[i].backoff_ms = 0;
	pthread_cond_broadcast(&pool->health->cv);
	pthread_mutex_unlock(&pool->lock);
	em_log(EM_LOG_INFO, "node %s: connected again%s", pool->nodes[i].addr,
	       !fresh      ? ""
	       : restarted ? " (restarted: its regions are lost)"
			   : " (new session)");
	return 0;
}

static void ensure_recon(em_pool *pool);

/* With the pool lock held: the pager's queues' broken channels. A queue
 * asks for one (want) from where it may not dial; one is dialled into the
 * pool's session with the node once the pool's own connection is up (the
 * pool makes the session again first, if it is gone) and handed over
 * (fresh); the channel it replaced comes back here to be closed (spent). */
static void serve_pager(em_pool *pool, uint64_t *next)
{
	for (em_queue *q = pool->pager_qs; q; q = q->pager_next)
		for (unsigned i = 0; i < q->n && !pool->health->stop; i++) {
			struct em_chan *ch =
				__atomic_exchange_n(&q->spent[i], NULL, __ATOMIC_ACQ_REL);
			struct em_node tmp = { .fd = -1 };
			int rc;

			if (ch)
				ch->ops->close(ch);
			if (!__atomic_load_n(&q->want[i], __ATOMIC_ACQUIRE) ||
			    __atomic_load_n(&q->fresh[i], __ATOMIC_ACQUIRE))
				continue;
			if (chan_down(pool, i) || left(pool, i) || !pool->nodes[i].session) {
				*next = EM_MIN(*next, em_now_ns() + 20000000ull);
				continue;
			}
			memcpy(tmp.addr, pool->nodes[i].addr, sizeof(tmp.addr));
			memcpy(tmp.host, pool->nodes[i].host, sizeof(tmp.host));
			tmp.port = pool->nodes[i].port;
			tmp.session = pool->nodes[i].session;
			memcpy(tmp.token, pool->nodes[i].token, EM_TOKEN_LEN);
			q->dialing++; /* q stays while the lock is let go */
			pthread_mutex_unlock(&pool->lock);
			rc = em_tcp_connect(pool, &tmp, false, &ch);
			pthread_mutex_lock(&pool->lock);
			q->dialing--;
			pthread_cond_broadcast(&pool->health->cv);
			if (rc) {
				struct em_chan *d = pool->dq->ch[i];
				/* the session is gone (the node restarted): the
				 * pool's connection is made again first */
				if ((rc == -ENOENT || rc == -EM_EAUTH) && !d->broken &&
				    tmp.session == pool->nodes[i].session)
					d->ops->fail(d, -ENOTCONN);
				*next = EM_MIN(*next, em_now_ns() + 100000000ull);
				em_log(EM_LOG_DEBUG, "node %s: a mapping's connection: %s",
				       pool->nodes[i].addr, em_strerror(rc));
				continue;
			}
			em_log(EM_LOG_DEBUG, "node %s: a mapping's connection made again",
			       pool->nodes[i].addr);
			ch->q = q;
			if (ch->ops->reserve)
				ch->ops->reserve(ch, q->depth < 256 ? q->depth : 256);
			q->fresh_sess[i] = tmp.session;
			__atomic_store_n(&q->want[i], 0, __ATOMIC_RELEASE);
			__atomic_store_n(&q->fresh[i], ch, __ATOMIC_RELEASE);
		}
}

void em_health_adopt(em_queue *q)
{
	em_pool *pool = q->pool;

	pthread_mutex_lock(&pool->lock);
	if (pool->health && pool->health->can_recon && !pool->tp->wrap) {
		q->pager = true;
		q->pager_next = pool->pager_qs;
		pool->pager_qs = q;
		ensure_recon(pool);
	}
	pthread_mutex_unlock(&pool->lock);
}

void em_health_unadopt(em_queue *q)
{
	em_pool *pool = q->pool;

	if (!q->pager)
		return;
	pthread_mutex_lock(&pool->lock);
	for (em_queue **p = &pool->pager_qs; *p; p = &(*p)->pager_next)
		if (*p == q) {
			*p = q->pager_next;
			break;
		}
	while (q->dialing)
		pthread_cond_wait(&pool->health->cv, &pool->lock);
	pthread_mutex_unlock(&pool->lock);
	for (unsigned i = 0; i < EM_MAX_SEG; i++) {
		if (q->fresh[i])
			q->fresh[i]->ops->close(q->fresh[i]);
		if (q->spent[i])
			q->spent[i]->ops->close(q->spent[i]);
		q->fresh[i] = q->spent[i] = NULL;
	}
	q->pager = false;
}

void em_health_poke(em_pool *pool)
{
	struct em_health *h = __atomic_load_n(&pool->health, __ATOMIC_ACQUIRE);

	/* no lock in the fault handler: a signal the thread misses is
	 * made up for by its short wait while it serves the pager */
	if (h)
		pthread_cond_signal(&h->kick);
}

static void *recon_main(void *arg)
{
	em_pool *pool = arg;
	struct em_health *h = pool->health;

	pthread_mutex_lock(&pool->lock);
	while (!h->stop) {
		uint64_t now = em_now_ns(), next = now + 1000000000ull;
		struct timespec ts;

		for (unsigned i = 0; i < em_pool_n(pool) && !h->stop; i++) {
			struct em_node *n = &pool->nodes[i];
			int rc;

			if (!chan_down(pool, i) || left(pool, i))
				continue;
			if (n->retry_at_ns > now) {
				next = EM_MIN(next, n->retry_at_ns);
				continue;
			}
			pthread_mutex_unlock(&pool->lock);
			rc = reconnect(pool, i);
			pthread_mutex_lock(&pool->lock);
			if (rc) {
				n->backoff_ms = n->backoff_ms
							? EM_MIN(n->backoff_ms * 2, BACKOFF_MAX_MS)
							: BACKOFF_MIN_MS;
				n->retry_at_ns = em_now_ns() + (uint64_t)n->backoff_ms * 1000000ull;
				next = EM_MIN(next, n->retry_at_ns);
				em_log(EM_LOG_DEBUG, "node %s: reconnect: %s (next in %u ms)",
				       n->addr, em_strerror(rc), n->backoff_ms);
			}
		}
		if (!h->stop) {
			em_drain_refollow(pool);
			serve_pager(pool, &next);
			if (pool->pager_qs)
				next = EM_MIN(next, em_now_ns() + 100000000ull);
		}
		if (!need_recon(pool))
			break; /* all up again: a later break starts another thread */
		now = em_now_ns();
		abstime_in(&ts, next > now ? (int)((next - now) / 1000000) + 1 : 1);
		if (!h->stop)
			pthread_cond_timedwait(&h->kick, &pool->lock, &ts);
	}
	h->recon_on = false;
	pthread_mutex_unlock(&pool->lock);
	return NULL;
}

/* With the pool lock held: a reconnect thread runs if one has work. */
static void ensure_recon(em_pool *pool)
{
	struct em_health *h = pool->health;

	if (!h || !h->can_recon || h->recon_on || h->stop || !need_recon(pool))
		return;
	if (h->recon_join) {
		/* one that has ended (it needs the lock no more) */
		pthread_join(h->recon, NULL);
		h->recon_join = false;
	}
	if (pthread_create(&h->recon, NULL, recon_main, pool)) {
		em_log(EM_LOG_WARN, "no reconnect thread: %s", em_strerror(-errno));
		return;
	}
	h->recon_on = h->recon_join = true;
}

void em_health_kick(em_pool *pool)
{
	ensure_recon(pool);
}

/* Cuts node i's connection without the pool lock: whoever waits on it
 * sees the connection end now, and the channel breaks in its own thread. */
static void cut(em_pool *pool, unsigned i)
{
	int fd = __atomic_load_n(&pool->nodes[i].fd, __ATOMIC_ACQUIRE);

	if (fd >= 0)
		shutdown(fd, SHUT_RDWR);
}

/* A node registered that this pool does not have: it is dialled first, so
 * that placement (whose control calls do not wait for a channel) finds it
 * up, and added; if the dial fails it is added with a channel that is down,
 * and the reconnect thread makes its session. Only
 * the watch thread adds nodes, so nothing else races for the next index;
 * the entry is complete before the count that shows it is published. */
static void join(em_pool *pool, const char *addr)
{
	struct em_health *h = pool->health;
	struct em_node nd = { .fd = -1 };
	struct em_chan *ch;
	unsigned i;

	if (!h->can_recon) {
		em_log(EM_LOG_INFO, "node %s joined: the %s transport takes it at the next connect",
		       addr, pool->tp->name);
		return;
	}
	snprintf(nd.addr, sizeof(nd.addr), "%s", addr);
	if (em_parse_addr(addr, nd.host, sizeof(nd.host), &nd.port))
		return;
	if (em_tcp_connect(pool, &nd, true, &ch)) {
		nd.session = 0;
		if (em_tcp_dead(pool, &ch))
			return;
	} else if (ch->ops->reserve) {
		ch->ops->reserve(ch, 64);
	}
	pthread_mutex_lock(&pool->lock);
	i = pool->n;
	if (i == EM_MAX_SEG || h->stop) {
		pthread_mutex_unlock(&pool->lock);
		ch->ops->close(ch);
		em_log(EM_LOG_WARN, "node %s joined: not added (%s)", addr,
		       h->stop ? "closing" : "the pool is full");
		return;
	}
	pool->nodes[i] = nd;
	ch->q = pool->dq;
	pool->dq->ch[i] = ch;
	pool->dq->n = i + 1;
	__atomic_store_n(&pool->n, i + 1, __ATOMIC_RELEASE);
	set_cut_fd(pool, i);
	ensure_recon(pool);
	pthread_cond_signal(&h->kick);
	pthread_mutex_unlock(&pool->lock);
	em_log(EM_LOG_INFO, "node %s: joined the cluster", addr);
}

static int watch_cb(void *arg, const struct em_etcd_kv *kv)
{
	em_pool *pool = arg;
	struct em_health *h = pool->health;
	size_t plen = strlen(h->nodes_prefix);
	char addr[80];

	if (kv->klen <= plen || kv->klen - plen >= sizeof(addr) - 6)
		return 0;
	snprintf(addr, sizeof(addr), "tcp://%.*s", (int)(kv->klen - plen), kv->key + plen);
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		struct em_node *n = &pool->nodes[i];
		if (strcmp(n->addr, addr))
			continue;
		if (kv->deleted) {
			if (!__atomic_exchange_n(&n->dir_down, true, __ATOMIC_ACQ_REL)) {
				em_log(EM_LOG_INFO,
				       "node %s: left the cluster (lease expired or stopped)",
				       n->addr);
				cut(pool, i);
			}
		} else if (__atomic_exchange_n(&n->dir_down, false, __ATOMIC_ACQ_REL)) {
			em_log(EM_LOG_INFO, "node %s: registered again", n->addr);
			pthread_mutex_lock(&pool->lock);
			n->retry_at_ns = 0;
			n->backoff_ms = 0;
			pthread_cond_signal(&h->kick);
			ensure_recon(pool);
			pthread_mutex_unlock(&pool->lock);
		}
		return 0;
	}
	join(pool, addr);
	return 0;
}

static bool stopping(em_pool *pool)
{
	bool s;

	pthread_mutex_lock(&pool->lock);
	s = pool->health->stop;
	pthread_mutex_unlock(&pool->lock);
	return s;
}

/* A named region's record changed: a drain moved a part. Every open
 * handle on it follows now, so that the pager's queues, which may not read
 * etcd from their fault handler, find the new layout in place. */
static int region_cb(void *arg, const struct em_etcd_kv *kv)
{
	em_pool *pool = arg;
	size_t plen = strlen(pool->health->regions_prefix);
	char name[EM_NAME_MAX + 1];

	if (kv->deleted || kv->klen <= plen || kv->klen - plen > EM_NAME_MAX)
		return 0;
	memcpy(name, kv->key + plen, kv->klen - plen);
	name[kv->klen - plen] = 0;
	em_drain_follow(pool, name);
	return 0;
}

static void *watch_main(void *arg)
{
	em_pool *pool = arg;
	struct em_health *h = pool->health;
	struct em_etcd *e = NULL;
	struct em_etcd_watch *w = NULL, *wr = NULL;
	int64_t rev = 0, rrev = 0;

	if (em_etcd_open(&e, h->etcd, h->timeout_ms))
		return NULL;
	while (!stopping(pool)) {
		struct pollfd p[2];
		int rc;

		if (!w) {
			/* the present first, then changes from just after it */
			rc = em_etcd_range(e, h->nodes_prefix, true, watch_cb, pool, &rev);
			if (rc >= 0)
				rc = em_etcd_watch_open(e, h->nodes_prefix, rev + 1, &w);
			if (rc < 0) {
				struct timespec ts = { 0, 200000000L };
				nanosleep(&ts, NULL);
				continue;
			}
			if (!rrev)
				rrev = rev;
		}
		/* records written before the watch are followed when a call
		 * meets EM_ESTALE, as without a watch */
		if (!wr && em_etcd_watch_open(e, h->regions_prefix, rrev + 1, &wr))
			wr = NULL;
		p[0] = (struct pollfd){ em_etcd_watch_fd(w), POLLIN, 0 };
		p[1] = (struct pollfd){ wr ? em_etcd_watch_fd(wr) : -1, POLLIN, 0 };
		poll(p, 2, 200);
		rc = em_etcd_watch_read(w, 0, watch_cb, pool, &rev);
		if (rc < 0) {
			em_etcd_watch_close(w);
			w = NULL;
		}
		if (wr && em_etcd_watch_read(wr, 0, region_cb, pool, &rrev) < 0) {
			em_etcd_watch_close(wr);
			wr = NULL;
		}
		pthread_mutex_lock(&pool->lock);
		if (pool->retired)
			em_drain_sweep(pool, false);
		pthread_mutex_unlock(&pool->lock);
	}
	em_etcd_watch_close(w);
	em_etcd_watch_close(wr);
	em_etcd_close(e);
	return NULL;
}

int em_health_start(em_pool *pool, const char *etcd, const char *cluster)
{
	struct em_health *h = calloc(1, sizeof(*h));

	if (!h)
		return -ENOMEM;
	pthread_cond_init(&h->cv, NULL);
	pthread_cond_init(&h->kick, NULL);
	h->timeout_ms = pool->timeout_ms;
	pool->health = h;
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		pool->nodes[i].fd = -1;
		set_cut_fd(pool, i);
	}
	/* a transport's own channels (OmniXtend, the fault injector) are not
	 * re-made: reconnects are for the plain TCP data path */
	h->can_recon = !pool->tp->wrap;
	h->pool = pool;
	pthread_once(&atfork_once, atfork_register);
	pthread_mutex_lock(&all_lock);
	h->next = all;
	all = h;
	pthread_mutex_unlock(&all_lock);
	pthread_mutex_lock(&pool->lock);
	ensure_recon(pool); /* nodes that did not answer the connect */
	pthread_mutex_unlock(&pool->lock);
	if (etcd && etcd[0] &&
	    !em_cluster_prefix(h->nodes_prefix, sizeof(h->nodes_prefix),
			       cluster && *cluster ? cluster : EM_CLUSTER_DEFAULT, "nodes") &&
	    !em_cluster_prefix(h->regions_prefix, sizeof(h->regions_prefix),
			       cluster && *cluster ? cluster : EM_CLUSTER_DEFAULT, "regions")) {
		snprintf(h->etcd, sizeof(h->etcd), "%s", etcd);
		if (!pthread_create(&h->watch, NULL, watch_main, pool))
			h->have_watch = true;
	}
	return 0;
}

void em_health_stop(em_pool *pool)
{
	struct em_health *h = pool->health;

	if (!h)
		return;
	pthread_mutex_lock(&all_lock);
	for (struct em_health **p = &all; *p; p = &(*p)->next)
		if (*p == h) {
			*p = h->next;
			break;
		}
	pthread_mutex_unlock(&all_lock);
	pthread_mutex_lock(&pool->lock);
	h->stop = true;
	pthread_cond_broadcast(&h->kick);
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&pool->lock);
	if (h->recon_join) /* no other thread starts one once stop is set */
		pthread_join(h->recon, NULL);
	if (h->have_watch)
		pthread_join(h->watch, NULL);
	for (unsigned i = 0; i < em_pool_n(pool); i++)
		if (pool->nodes[i].fd >= 0) {
			close(pool->nodes[i].fd);
			pool->nodes[i].fd = -1;
		}
	pthread_cond_destroy(&h->cv);
	pthread_cond_destroy(&h->kick);
	free(h);
	pool->health = NULL;
}

int em_health_wait(em_pool *pool, unsigned i)
{
	struct em_health *h = pool->health;
	struct timespec ts;

	if (left(pool, i) && !chan_down(pool, i))
		/* etcd says it is gone: stop using what may be a frozen peer */
		pool->dq->ch[i]->ops->fail(pool->dq->ch[i], -EHOSTDOWN);
	if (!chan_down(pool, i))
		return 0;
	if (!h || !h->can_recon)
		return -EHOSTDOWN;
	/* wake the dialler now rather than at its backoff */
	pool->nodes[i].retry_at_ns = 0;
	ensure_recon(pool);
	pthread_cond_signal(&h->kick);
	abstime_in(&ts, pool->timeout_ms);
	while (chan_down(pool, i) && !h->stop)
		if (pthread_cond_timedwait(&h->cv, &pool->lock, &ts) == ETIMEDOUT)
			break;
	return chan_down(pool, i) ? -EHOSTDOWN : 0;
}
