/*
 * server.c - connections, sessions and request handling of the memory node.
 *
 * Threading: the main thread accepts; each connection gets a short-lived
 * thread for its handshake (bounded by the admission limits, with its
 * deadline), after which a fixed set of event-loop workers (--workers,
 * one per core by default) serve all authenticated connections through
 * epoll, so a thousand clients cost a thousand sockets and buffers, not a
 * thousand threads. The workers also decide who goes first (see "event-loop
 * workers" below). --workers -1 keeps the older model, a blocking thread per
 * connection, as a baseline to measure against; a connection that asks for
 * the raw baseline stream gets such a thread too.
 *
 * Sessions: a client authenticates once per connection; the first connection
 * creates a session, further connections of the same client (its queues)
 * attach to it with a token the node issued. A session holds the client's
 * region handles; anonymous regions die with the session. A session whose
 * connections were all cut, rather than closed after the client said
 * goodbye (EM_W_BYE), is kept --session-linger ms for the client to attach
 * again; the acceptor ends it after that.
 *
 * At most once: writes and atomics that carry EM_WF_ONCE are remembered per
 * session (their tag, status and an atomic's old value) in a ring of the
 * last EM_ONCE_SLOTS, so a client that resends one after a timeout or a
 * lost connection gets the first result instead of a second application.
 * The ring costs 6 KiB per session that uses it and one short mutex per
 * such request; a ring rather than a table keyed by time keeps the memory
 * fixed whatever the client does.
 *
 * Hot path: a read or write takes the session's read lock (uncontended unless
 * the client is opening or closing regions at the same moment), checks the
 * handle and bounds, and copies. Replies to small requests are gathered and
 * sent with one system call per batch of requests received.
 *
 * Small before bulk: in the thread-per-connection model what keeps one
 * client's 4 KiB read waiting behind another's 2 MiB transfer is the CPU:
 * large read replies go out in slices (--bulk-slice, 256 KiB) so that the
 * kernel's scheduler can run a woken thread between two. The workers do
 * that themselves: a slice per turn, small replies first.
 */
#include "daemon/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#ifdef EM_HAVE_URING
#include <liburing.h>
#endif

#include "common/auth.h"
#include "common/seal.h"
#include "common/util.h"
#include "common/wire.h"
#include "daemon/memroom.h"
#include "daemon/ox_serve.h"
#include "daemon/store.h"
#include "ethermem.h"

#define RX_CAP (256u << 10)
#define TX_CAP (256u << 10)
#define SMALL_READ (16u << 10)   /* copied into the reply buffer */
#define STREAM_WRITE (64u << 10) /* received straight into region memory */
/* A burst of a thousand clients connecting at once must not overflow the
 * accept queue (the kernel caps this at net.core.somaxconn). */
#define LISTEN_BACKLOG 4096
/* Event-loop workers: what one connection may have queued before the node
 * stops reading its requests (TCP's window then holds the client back). */
#define OUT_SEGS 32           /* reply segments */
#define OUT_SMALL (64u << 10) /* small replies' bytes not yet sent */
#define OUT_BULK (1u << 20)   /* large read replies' bytes not yet sent */
#define TICK_MS 250           /* deadlines are checked this often */
/* Balancing: every BALANCE_MS a worker sorts its connections by what they
 * moved since the last look; one that averaged more than BULK_AVG bytes a
 * request streams bulk. Small-request connections that share a worker
 * with bulk streams move to a worker with none, each at most once in
 * MOVE_GAP_NS so that nobody is bounced to and fro. */
#define BALANCE_MS 50
#define BULK_AVG (64u << 10)
#define MOVE_GAP_NS 1000000000ull
#define MOVE_MAX 64 /* connections moved in one look */

/* A stretch of a connection's output: the next len bytes of its reply
 * buffer (mem NULL), or of a region's memory held by r. */
struct oseg {
	const uint8_t *mem;
	size_t len;
	struct em_sregion *r;
};

struct conn;

/* One event-loop thread and the connections it serves. */
struct worker {
	struct em_server *srv;
	pthread_t t;
	int ep, efd; /* epoll; eventfd: a connection was handed over */
#ifdef EM_HAVE_URING
	/* --io uring: one-shot poll requests on a ring instead of epoll (see
	 * "the workers' event source") */
	bool uring, efd_armed;
	struct io_uring ring;
	struct conn **fdmap; /* by descriptor: whose poll a completion is */
	int nfdmap;
	uint32_t seq;
#endif
	pthread_mutex_t lock; /* guards inbox and quit */
	struct conn *inbox;
	bool quit;
	int n; /* connections, atomic: the handover picks the least busy */
	/* the last balancing interval, atomic: read by the handover and the
	 * other workers */
	int nbulk;             /* connections that streamed bulk */
	uint64_t recent_bytes; /* bytes all its connections moved */
	struct conn **cv;      /* its connections (worker-private) */
	int nc, capc, rr;      /* rr: where the next bulk turn starts */
	int bulkers;           /* connections with large replies queued */
	int readers;           /* connections with input left after their turn */
	bool bulk_idle;        /* none of them could send at the last look */
};

/* The result of one at-most-once request; id 0 is a free slot. */
struct once_ent {
	uint64_t id;
	uint64_t value; /* an atomic's old value */
	int32_t status;
	bool done; /* else being applied by some connection of the session */
};

struct session {
	uint64_t id;
	uint8_t token[EM_TOKEN_LEN];
	int conns;             /* under srv->lock */
	bool bye;              /* the client ended it: no linger (srv->lock) */
	uint64_t linger_until; /* ns, while conns == 0 (srv->lock) */
	/* at-most-once results, allocated with the first such request */
	pthread_mutex_t once_lock;
	pthread_cond_t once_cv;
	struct once_ent *once;
	uint32_t once_next, once_n;
	pthread_rwlock_t lock;
	struct em_sregion **h;
	uint32_t nh, caph;
	/* OmniXtend: window id per handle (-1 none), under the write lock */
	int *oxwin;
	uint32_t noxwin;
	bool oxattached;
	struct session *next;
};

struct conn {
	struct em_server *srv;
	int fd;
	struct session *sess;
	char peer[64];
	char src[48];          /* the peer's address without its port */
	bool authed;           /* counts against max_clients, else max_pending */
	bool evicted;          /* shut down to make room; its thread is leaving */
	uint64_t msg_deadline; /* a partly received message must be whole by then */
	uint8_t *rx, *tx, *basebuf;
	size_t rpos, wpos, txlen, basecap;
	uint64_t bytes_in, bytes_out;      /* atomic: the metrics endpoint reads them */
	struct em_spin spin;               /* how the next request is waited for */
	struct em_seal *seal_tx, *seal_rx; /* an encrypted connection's, else NULL */
	struct conn *next, *prev;
	/* served by an event-loop worker (else by its own thread) */
	struct worker *w;
	int widx;      /* in w->cv */
	uint32_t ev;   /* epoll interest now; io_uring: the poll armed, or 0 */
	uint32_t useq; /* io_uring: tells this connection's polls from stale ones */
	size_t rxcap, txcap, txoff, need;
	struct oseg q[OUT_SEGS]; /* output in order: replies go out as queued */
	unsigned qhead, nq;
	size_t bulk_queued;
	const uint8_t *rec; /* a sealed record partly sent */
	size_t reclen, recoff;
	bool blocked; /* the socket took no more: wait for EPOLLOUT */
	bool stalled; /* requests wait in rx for the output to drain */
	bool eof;     /* the client sent its last byte */
	bool handoff; /* a baseline request: to a thread of its own */
	bool more_in; /* input left after a turn's worth: a bulk turn goes on */
	struct em_hdr handoff_h;
	uint64_t last_rx;     /* ns, for the idle timeout */
	struct conn *next_in; /* in a worker's inbox */
	/* balancing (worker-private): requests served; bytes and requests at
	 * the last look; when it last moved to another worker */
	uint32_t ops, bal_ops;
	uint64_t bal_bytes, moved_ns;
};

enum { CL_READ, CL_WRITE, CL_ATOMIC, CL_CREATE, CL_OPEN, CL_DELETE, CL_LIST, CL_STATUS };

struct em_server {
	struct em_server_opts o;
	struct em_store *st;
	uint8_t key[EM_KEY_LEN];
	uint8_t node_id[EM_NODE_ID_LEN];
	int lfd;
	pthread_mutex_t lock;
	pthread_cond_t idle;
	struct conn *conns;
	int nconns, nauthed;
	struct session *sessions;
	uint64_t next_session;
	int nlinger; /* sessions kept with no connection */
	int wakefd;  /* eventfd: wakes the acceptor to time a lingering session */
	uint64_t start_ns;
	uint64_t ops[8], errs[8], bytes_in, bytes_out, auth_fail;
	struct em_hist lat[3];
	uint64_t lat_sum_ns[3]; /* for the metrics' histogram sums */
	struct em_oxs *ox;      /* --ox: the OmniXtend data path, else NULL */
	struct worker *workers;
	int nworkers;
	uint64_t moves; /* connections moved between workers (atomic) */
	/* the spin gate (em_spin_gate): whoever holds gate_lock samples the
	 * CPU pressure when gate_next_ns is due; workers read spin_ok */
	pthread_mutex_t gate_lock;
	struct em_spin_gate gate;
	int psi_fd;            /* /proc/pressure/cpu, or -1: the gate stays open */
	uint64_t gate_next_ns; /* atomic */
	bool spin_ok;          /* atomic */
	bool stopping;
	bool draining; /* takes no new regions (atomic) */
	/* lines about unauthenticated peers, limited (see peer_log) */
	pthread_mutex_t rl_lock;
	uint64_t rl_sec, rl_suppressed; /* rl_sec: last refill, ns */
	unsigned rl_lines;              /* lines that may be written now */
};

/* Lines a flood of strangers can cause are limited: each connection could
 * otherwise write one, and 3,000 bad connections would write 3,000 lines. A
 * bucket of PEER_LOG_BURST lines refills at PEER_LOG_PER_SEC, so an operator
 * still sees every line of an ordinary bad day, and what was left out is
 * counted on the next line that gets through. */
#define PEER_LOG_BURST 100
#define PEER_LOG_PER_SEC 10

static bool peer_log_allowed(struct em_server *s)
{
	uint64_t now = em_now_ns(), dropped = 0, refill;
	bool ok;

	pthread_mutex_lock(&s->rl_lock);
	refill = (now - s->rl_sec) / (1000000000ull / PEER_LOG_PER_SEC);
	if (refill) {
		s->rl_lines = (unsigned)EM_MIN((uint64_t)s->rl_lines + refill, PEER_LOG_BURST);
		s->rl_sec = now;
	}
	ok = s->rl_lines > 0;
	if (ok) {
		s->rl_lines--;
		dropped = s->rl_suppressed;
		s->rl_suppressed = 0;
	} else {
		s->rl_suppressed++;
	}
	pthread_mutex_unlock(&s->rl_lock);
	if (dropped)
		em_log(EM_LOG_WARN, "%llu lines about refused or failed connections not logged",
		       (unsigned long long)dropped);
	return ok;
}

#define peer_log(s, lvl, ...)                     \
	do {                                      \
		if (peer_log_allowed(s))          \
			em_log(lvl, __VA_ARGS__); \
	} while (0)

/* The handshake's deadline: a member answers in microseconds, so a peer
 * still not authenticated after this long is a stranger or broken. */
static int handshake_ms(const struct em_server *s)
{
	return EM_MIN(s->o.io_timeout_ms, 5000);
}

/* Milliseconds from now to the deadline, rounded up, for poll(); 0 once past. */
static int ms_until(uint64_t deadline)
{
	uint64_t now = em_now_ns();

	return deadline > now ? (int)((deadline - now + 999999) / 1000000) : 0;
}

/* Receives exactly len bytes or fails with -ETIMEDOUT at the deadline, however
 * the peer spaces its bytes out. */
static int recv_until(int fd, void *buf, size_t len, uint64_t deadline)
{
	char *p = buf;

	while (len) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		ssize_t n;
		int ms = ms_until(deadline);

		if (ms == 0 || poll(&pfd, 1, ms) == 0)
			return -ETIMEDOUT;
		n = recv(fd, p, len, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void count(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

/* ---- replies ---- */

/* Sends all of local[0..n) (at most 4 entries, modified). */
static int send_iov(int fd, struct iovec *local, int n)
{
	while (n > 0) {
		struct msghdr mh = { .msg_iov = local, .msg_iovlen = (size_t)n };
		ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (n > 0 && (size_t)w >= local[0].iov_len) {
			w -= (ssize_t)local[0].iov_len;
			memmove(local, local + 1, (size_t)(n - 1) * sizeof(*local));
			n--;
		}
		if (n > 0) {
			local[0].iov_base = (char *)local[0].iov_base + w;
			local[0].iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int conn_write(struct conn *c, const struct iovec *iov, int n)
{
	struct iovec local[4], *v = local;
	size_t total = 0;

	if (c->fd < 0)
		return 0; /* fuzzing: replies go nowhere */
	memcpy(local, iov, (size_t)n * sizeof(*iov));
	for (int i = 0; i < n; i++)
		total += local[i].iov_len;
	count(&c->bytes_out, total);
	if (!c->seal_tx)
		return send_iov(c->fd, local, n);
	for (;;) {
		const uint8_t *rec;
		ssize_t len = em_seal_wrap(c->seal_tx, &v, &n, &rec);
		struct iovec one = { (void *)rec, (size_t)len };
		int rc;

		if (len <= 0)
			return (int)len;
		if ((rc = send_iov(c->fd, &one, 1)))
			return rc;
	}
}

static int conn_flush(struct conn *c)
{
	struct iovec iov = { c->tx, c->txlen };
	int rc = 0;

	if (c->w)
		return 0; /* the worker sends what is queued */
	if (c->txlen)
		rc = conn_write(c, &iov, 1);
	c->txlen = 0;
	return rc;
}

static void resp_hdr(uint8_t *out, const struct em_hdr *req, int status, uint32_t len,
		     uint32_t region, uint32_t aux, uint64_t offset)
{
	struct em_hdr h = {
		.magic = EM_WIRE_MAGIC,
		.version = EM_WIRE_VERSION,
		.op = req->op,
		.flags = EM_WF_RESPONSE,
		.status = status,
		.len = len,
		.tag = req->tag,
		.region = region,
		.aux = aux,
		.offset = offset,
	};
	em_hdr_encode(out, &h);
}

/* Room for len more bytes of replies in a worker's connection: the sent
 * part goes first, then the buffer grows (bounded: the worker stops taking
 * requests once OUT_SMALL bytes wait). */
static int tx_reserve(struct conn *c, size_t len)
{
	uint8_t *t;

	if (c->txlen + len <= c->txcap)
		return 0;
	if (c->txoff) {
		memmove(c->tx, c->tx + c->txoff, c->txlen - c->txoff);
		c->txlen -= c->txoff;
		c->txoff = 0;
	}
	if (c->txlen + len <= c->txcap)
		return 0;
	if (!(t = realloc(c->tx, c->txlen + len)))
		return -ENOMEM;
	c->tx = t;
	c->txcap = c->txlen + len;
	return 0;
}

/* Queues output: len bytes just put in the reply buffer (mem NULL), or a
 * region's memory, for which the caller gives the segment a reference. */
static void out_add(struct conn *c, const uint8_t *mem, size_t len, struct em_sregion *r)
{
	struct oseg *g = c->nq ? &c->q[(c->qhead + c->nq - 1) % OUT_SEGS] : NULL;

	count(&c->bytes_out, len);
	if (!mem && g && !g->mem) {
		g->len += len;
		return;
	}
	g = &c->q[(c->qhead + c->nq++) % OUT_SEGS];
	*g = (struct oseg){ mem, len, r };
	if (mem) {
		if (!c->bulk_queued)
			c->w->bulkers++;
		c->w->bulk_idle = false;
		c->bulk_queued += len;
	}
}

/* Whether a worker's connection has as much output queued as it may: its
 * further requests wait (in rx, then in the socket). */
static bool out_full(const struct conn *c)
{
	return c->nq >= OUT_SEGS - 2 || c->bulk_queued >= OUT_BULK ||
	       c->txlen - c->txoff >= OUT_SMALL;
}

/* Appends a complete reply to the batch; flushes first when it is full. */
static int reply(struct conn *c, const struct em_hdr *req, int status, const void *payload,
		 uint32_t len, uint32_t region, uint32_t aux, uint64_t offset)
{
	int rc;

	if (c->w) {
		if ((rc = tx_reserve(c, EM_HDR_LEN + (size_t)len)))
			return rc;
		resp_hdr(c->tx + c->txlen, req, status, len, region, aux, offset);
		if (len)
			memcpy(c->tx + c->txlen + EM_HDR_LEN, payload, len);
		c->txlen += EM_HDR_LEN + len;
		out_add(c, NULL, EM_HDR_LEN + (size_t)len, NULL);
		return 0;
	}
	if (c->txlen + EM_HDR_LEN + len > c->txcap && (rc = conn_flush(c)))
		return rc;
	resp_hdr(c->tx + c->txlen, req, status, len, region, aux, offset);
	if (len)
		memcpy(c->tx + c->txlen + EM_HDR_LEN, payload, len);
	c->txlen += EM_HDR_LEN + len;
	return 0;
}

static int reply_err(struct conn *c, const struct em_hdr *req, int status)
{
	return reply(c, req, status, NULL, 0, 0, 0, 0);
}

/* ---- sessions ---- */

static struct session *session_new(struct em_server *s, const uint8_t token[EM_TOKEN_LEN])
{
	struct session *ss = calloc(1, sizeof(*ss));

	if (!ss)
		return NULL;
	pthread_rwlock_init(&ss->lock, NULL);
	pthread_mutex_init(&ss->once_lock, NULL);
	pthread_cond_init(&ss->once_cv, NULL);
	if (token)
		memcpy(ss->token, token, EM_TOKEN_LEN);
	else
		em_random(ss->token, sizeof(ss->token));
	pthread_mutex_lock(&s->lock);
	ss->id = ++s->next_session;
	ss->conns = 1;
	ss->next = s->sessions;
	s->sessions = ss;
	pthread_mutex_unlock(&s->lock);
	return ss;
}

/* proof: em_auth_attach_proof of the session's token and this connection's
 * nonces, so a token seen on the wire (it never is) or a replayed proof is
 * worth nothing. */
static struct session *session_attach(struct em_server *s, uint64_t id,
				      const uint8_t proof[EM_TOKEN_LEN],
				      const uint8_t cn[EM_NONCE_LEN],
				      const uint8_t sn[EM_NONCE_LEN])
{
	struct session *ss;
	uint8_t want[EM_TOKEN_LEN];

	pthread_mutex_lock(&s->lock);
	for (ss = s->sessions; ss; ss = ss->next)
		if (ss->id == id)
			break;
	if (ss)
		em_auth_attach_proof(ss->token, cn, sn, want);
	/* a lingering session (no connection) comes back to life */
	if (ss && em_ct_equal(want, proof, EM_TOKEN_LEN)) {
		if (ss->conns++ == 0)
			s->nlinger--;
	} else {
		ss = NULL;
	}
	pthread_mutex_unlock(&s->lock);
	return ss;
}

static void session_free(struct em_server *s, struct session *ss)
{
	/* no frame may reach a region after its last reference is gone */
	if (s->ox) {
		for (uint32_t i = 0; i < ss->noxwin; i++)
			em_oxs_unmap(s->ox, ss->oxwin[i]);
		if (ss->oxattached)
			em_oxs_detach(s->ox, ss);
	}
	for (uint32_t i = 0; i < ss->nh; i++)
		if (ss->h[i])
			em_store_put(s->st, ss->h[i]);
	pthread_rwlock_destroy(&ss->lock);
	pthread_mutex_destroy(&ss->once_lock);
	pthread_cond_destroy(&ss->once_cv);
	free(ss->once);
	free(ss->oxwin);
	free(ss->h);
	free(ss);
}

/* A connection leaves its session. cut: it ended without the client saying
 * goodbye, the way a connection the client gave up on after a timeout ends;
 * the last such one leaves the session lingering instead of ending it. */
static void session_detach(struct em_server *s, struct session *ss, bool cut)
{
	struct session **pp;
	bool last;

	pthread_mutex_lock(&s->lock);
	last = --ss->conns == 0;
	if (last && cut && !ss->bye && !s->stopping && s->o.session_linger_ms > 0) {
		ss->linger_until = em_now_ns() + (uint64_t)s->o.session_linger_ms * 1000000;
		s->nlinger++;
		pthread_mutex_unlock(&s->lock);
		if (s->wakefd >= 0) {
			uint64_t one = 1;
			if (write(s->wakefd, &one, sizeof(one)) < 0)
				em_log(EM_LOG_DEBUG, "waking the acceptor: %s", strerror(errno));
		}
		em_log(EM_LOG_DEBUG, "session %llu: connections cut; kept %d ms",
		       (unsigned long long)ss->id, s->o.session_linger_ms);
		return;
	}
	if (last)
		for (pp = &s->sessions; *pp; pp = &(*pp)->next)
			if (*pp == ss) {
				*pp = ss->next;
				break;
			}
	pthread_mutex_unlock(&s->lock);
	if (last)
		session_free(s, ss);
}

/* Ends the lingering sessions whose time is up (all of them: every one). */
static void linger_sweep(struct em_server *s, bool all)
{
	struct session *dead = NULL, **pp;
	uint64_t now = em_now_ns();

	pthread_mutex_lock(&s->lock);
	for (pp = &s->sessions; *pp;) {
		struct session *ss = *pp;
		if (ss->conns == 0 && (all || now >= ss->linger_until)) {
			*pp = ss->next;
			ss->next = dead;
			dead = ss;
			s->nlinger--;
		} else {
			pp = &ss->next;
		}
	}
	pthread_mutex_unlock(&s->lock);
	while (dead) {
		struct session *next = dead->next;
		em_log(EM_LOG_DEBUG, "session %llu: not attached again; ended",
		       (unsigned long long)dead->id);
		session_free(s, dead);
		dead = next;
	}
}

/* ---- at most once ---- */

/* Under once_lock: the slot of request `id`, newest first, or NULL. */
static struct once_ent *once_find(struct session *ss, uint64_t id)
{
	for (uint32_t k = 1; k <= ss->once_n; k++) {
		struct once_ent *e = &ss->once[(ss->once_next + EM_ONCE_SLOTS - k) % EM_ONCE_SLOTS];
		if (e->id == id)
			return e;
	}
	return NULL;
}

/* Before applying request `id`: 1 with *out its remembered result (after
 * waiting, if another connection of the session is applying it now), 0 when
 * the caller is to apply it (a slot is claimed: the oldest result goes), or
 * -errno, and then nothing may be applied. */
static int once_begin(struct session *ss, uint64_t id, struct once_ent *out)
{
	struct once_ent *e;
	bool waited = false;

	pthread_mutex_lock(&ss->once_lock);
	if (!ss->once && !(ss->once = calloc(EM_ONCE_SLOTS, sizeof(*ss->once)))) {
		pthread_mutex_unlock(&ss->once_lock);
		return -ENOMEM;
	}
	while ((e = once_find(ss, id)) && !e->done) {
		pthread_cond_wait(&ss->once_cv, &ss->once_lock);
		waited = true;
	}
	if (e || waited) {
		/* gone while we waited: EM_ONCE_SLOTS newer requests pushed it
		 * out, and whether it was applied can no longer be told */
		*out = e ? *e : (struct once_ent){ .status = -EAGAIN };
		pthread_mutex_unlock(&ss->once_lock);
		return 1;
	}
	e = &ss->once[ss->once_next];
	ss->once_next = (ss->once_next + 1) % EM_ONCE_SLOTS;
	if (ss->once_n < EM_ONCE_SLOTS)
		ss->once_n++;
	*e = (struct once_ent){ .id = id };
	pthread_mutex_unlock(&ss->once_lock);
	return 0;
}

/* After applying: the result is remembered. forget: the request was not
 * applied whole (its connection broke mid-payload), so a resend applies it. */
static void once_end(struct session *ss, uint64_t id, int status, uint64_t value, bool forget)
{
	struct once_ent *e;

	pthread_mutex_lock(&ss->once_lock);
	e = once_find(ss, id);
	if (e && !e->done) {
		e->done = true;
		e->status = status;
		e->value = value;
		if (forget)
			e->id = 0;
	}
	pthread_cond_broadcast(&ss->once_cv);
	pthread_mutex_unlock(&ss->once_lock);
}

/* Returns the new handle (>= 1) or -errno. */
static int session_add(struct session *ss, struct em_sregion *r)
{
	uint32_t i;
	int rc;

	pthread_rwlock_wrlock(&ss->lock);
	for (i = 0; i < ss->nh && ss->h[i]; i++)
		;
	if (i == ss->nh) {
		if (ss->nh == ss->caph) {
			uint32_t nc = ss->caph ? ss->caph * 2 : 8;
			struct em_sregion **nh;
			if (nc > (1u << 20) || !(nh = realloc(ss->h, nc * sizeof(*nh)))) {
				pthread_rwlock_unlock(&ss->lock);
				return -EMFILE;
			}
			ss->h = nh;
			ss->caph = nc;
		}
		ss->nh++;
	}
	ss->h[i] = r;
	rc = (int)i + 1;
	pthread_rwlock_unlock(&ss->lock);
	return rc;
}

/* Under the session lock (read or write). */
static struct em_sregion *handle_get(struct session *ss, uint32_t h)
{
	return h >= 1 && h <= ss->nh ? ss->h[h - 1] : NULL;
}

/* ---- request handlers ---- */

static bool layout_ok(const uint8_t *layout, uint16_t len)
{
	struct em_layout l;

	return em_layout_decode(layout, len, &l) == 0;
}

static int do_create_open(struct conn *c, const struct em_hdr *h, const uint8_t *p)
{
	struct em_server *s = c->srv;
	char name[EM_NAME_MAX + 1];
	const uint8_t *layout;
	uint16_t ll;
	struct em_sregion *r;
	uint8_t out[EM_HDR_LEN + 3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	int rc, hd, n;

	rc = em_namelayout_decode(p, h->len, name, &layout, &ll);
	if (rc)
		return reply_err(c, h, rc);
	if (h->op == EM_W_CREATE) {
		bool named = h->aux & EM_WC_NAMED;
		if (h->aux & ~(EM_WC_NAMED | EM_WC_EXCL | EM_WC_RELAYOUT))
			return reply_err(c, h, -EINVAL);
		if (named != (name[0] != 0))
			return reply_err(c, h, -EINVAL);
		if (__atomic_load_n(&s->draining, __ATOMIC_ACQUIRE))
			return reply_err(c, h, -EM_EDRAINING);
		/* The node keeps the layout opaque, but one no client can decode
		 * would make a name that is listed as nothing and opens as
		 * nothing: refuse it here, where the creator still hears why. */
		if ((named || ll) && !layout_ok(layout, ll)) {
			em_log(EM_LOG_WARN, "%s: create of '%s' refused: invalid layout (%u bytes)",
			       c->peer, name, (unsigned)ll);
			return reply_err(c, h, -EINVAL);
		}
		rc = em_store_create_region(s->st, named ? name : NULL, h->offset, h->aux, layout,
					    ll, &r);
		if (rc == -ENOSPC)
			em_log(EM_LOG_WARN, "%s: create of %llu bytes refused: node full", c->peer,
			       (unsigned long long)h->offset);
	} else {
		rc = name[0] ? em_store_open(s->st, name, &r) : -EINVAL;
		/* a part cut off by a drain is not there for its clients */
		if (!rc && __atomic_load_n(&r->mstate, __ATOMIC_SEQ_CST) == EM_MV_GONE) {
			em_store_put(s->st, r);
			rc = -EM_ENONODE;
		}
	}
	if (rc)
		return reply_err(c, h, rc);
	hd = session_add(c->sess, r);
	if (hd < 0) {
		em_store_put(s->st, r);
		return reply_err(c, h, hd);
	}
	if (h->op == EM_W_CREATE && name[0])
		em_log(EM_LOG_INFO, "%s: region '%s' (%llu bytes) ready", c->peer, name,
		       (unsigned long long)r->size);
	n = em_namelayout_encode(out, sizeof(out), r->name, r->layout, r->layout_len);
	return reply(c, h, 0, out, (uint32_t)n, (uint32_t)hd, 0, r->size);
}

static int do_close(struct conn *c, const struct em_hdr *h)
{
	struct session *ss = c->sess;
	struct em_sregion *r;

	int win = -1;

	pthread_rwlock_wrlock(&ss->lock);
	r = handle_get(ss, h->region);
	if (r)
		ss->h[h->region - 1] = NULL;
	if (r && h->region <= ss->noxwin) {
		win = ss->oxwin[h->region - 1];
		ss->oxwin[h->region - 1] = -1;
	}
	pthread_rwlock_unlock(&ss->lock);
	if (!r)
		return reply_err(c, h, -EBADF);
	if (win >= 0)
		em_oxs_unmap(c->srv->ox, win);
	em_store_put(c->srv->st, r);
	return reply_err(c, h, 0);
}

static int do_delete(struct conn *c, const struct em_hdr *h, const uint8_t *p)
{
	char name[EM_NAME_MAX + 1];
	const uint8_t *layout;
	uint16_t ll;
	int rc = em_namelayout_decode(p, h->len, name, &layout, &ll);

	if (!rc)
		rc = name[0] ? em_store_unlink(c->srv->st, name) : -EINVAL;
	if (!rc)
		em_log(EM_LOG_INFO, "%s: region '%s' deleted", c->peer, name);
	return reply_err(c, h, rc);
}

struct list_ctx {
	uint8_t buf[EM_MAX_CTRL];
	size_t len;
	uint32_t n;
};

static int list_cb(void *arg, const struct em_sregion *r)
{
	struct list_ctx *l = arg;
	int n = em_list_entry_encode(l->buf + l->len, sizeof(l->buf) - l->len, r->size, r->name,
				     r->layout, r->layout_len);

	if (n < 0)
		return 1; /* full: the client asks again from here */
	l->len += (size_t)n;
	l->n++;
	return 0;
}

static int do_list(struct conn *c, const struct em_hdr *h)
{
	struct list_ctx *l = malloc(sizeof(*l));
	int total, rc;

	if (!l)
		return reply_err(c, h, -ENOMEM);
	l->len = 0;
	l->n = 0;
	total = em_store_list(c->srv->st, h->offset, list_cb, l);
	/* aux: entries in this reply; offset: named regions in all */
	rc = reply(c, h, 0, l->buf, (uint32_t)l->len, 0, l->n, (uint64_t)total);
	free(l);
	return rc;
}

/* The node's counters in the status message's layout (wire.h's EM_ST_*),
 * shared by the status request and the metrics endpoint. Bytes of the
 * connections still open are added to those of the closed ones. */
static void status_values(struct em_server *s, uint64_t v[EM_ST__COUNT])
{
	struct em_store_stats ss;
	uint64_t in, out;

	memset(v, 0, EM_ST__COUNT * sizeof(v[0]));
	em_store_stats(s->st, &ss);
	v[EM_ST_CAPACITY] = ss.capacity;
	v[EM_ST_USED] = ss.used;
	v[EM_ST_REGIONS] = ss.regions;
	v[EM_ST_NAMED] = ss.named;
	pthread_mutex_lock(&s->lock);
	v[EM_ST_CLIENTS] = (uint64_t)s->nauthed;
	in = __atomic_load_n(&s->bytes_in, __ATOMIC_RELAXED);
	out = __atomic_load_n(&s->bytes_out, __ATOMIC_RELAXED);
	for (struct conn *c = s->conns; c; c = c->next) {
		in += __atomic_load_n(&c->bytes_in, __ATOMIC_RELAXED);
		out += __atomic_load_n(&c->bytes_out, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&s->lock);
	v[EM_ST_HUGE] = ss.huge;
	v[EM_ST_UPTIME] = (em_now_ns() - s->start_ns) / 1000000000ull;
	v[EM_ST_BYTES_IN] = in;
	v[EM_ST_BYTES_OUT] = out;
	v[EM_ST_AUTHFAIL] = __atomic_load_n(&s->auth_fail, __ATOMIC_RELAXED);
	for (int i = 0; i < 8; i++) {
		v[EM_ST_OPS0 + i] = __atomic_load_n(&s->ops[i], __ATOMIC_RELAXED);
		v[EM_ST_ERR0 + i] = __atomic_load_n(&s->errs[i], __ATOMIC_RELAXED);
	}
	for (int i = 0; i < 3; i++) {
		v[EM_ST_LAT0 + 3 * i] = em_hist_quantile(&s->lat[i], 0.5);
		v[EM_ST_LAT0 + 3 * i + 1] = em_hist_quantile(&s->lat[i], 0.99);
		v[EM_ST_LAT0 + 3 * i + 2] = em_hist_quantile(&s->lat[i], 0.999);
	}
	if (s->ox)
		em_oxs_status(s->ox, v);
}

void em_server_snapshot(struct em_server *s, struct em_server_snapshot *snap)
{
	status_values(s, snap->v);
	for (int i = 0; i < 3; i++) {
		for (unsigned b = 0; b < EM_HIST_BUCKETS; b++)
			snap->lat[i].count[b] =
				__atomic_load_n(&s->lat[i].count[b], __ATOMIC_RELAXED);
		snap->lat_sum_ns[i] = __atomic_load_n(&s->lat_sum_ns[i], __ATOMIC_RELAXED);
	}
	snap->conn_moves = __atomic_load_n(&s->moves, __ATOMIC_RELAXED);
	pthread_mutex_lock(&s->gate_lock);
	snap->spin_shut_ns = s->gate.shut_ns;
	pthread_mutex_unlock(&s->gate_lock);
}

static int do_status(struct conn *c, const struct em_hdr *h)
{
	uint8_t out[EM_STATUS_LEN];
	uint64_t v[EM_ST__COUNT];

	status_values(c->srv, v);
	return reply(c, h, 0, out, (uint32_t)em_status_encode(out, sizeof(out), v), 0, 0, 0);
}

/* OmniXtend control: the session names its MAC; the node answers with its
 * link's parameters (ox_serve.c explains the rules). */
static int do_ox_attach(struct conn *c, const struct em_hdr *h, const uint8_t *p)
{
	struct session *ss = c->sess;
	struct em_ox_info info;
	uint8_t out[EM_OX_ATTACH_RESP_LEN];
	int rc;

	if (!c->srv->ox)
		return reply_err(c, h, -EPROTONOSUPPORT);
	if (h->len != EM_OX_ATTACH_REQ_LEN)
		return reply_err(c, h, -EPROTO);
	if (p[7])
		return reply_err(c, h, -EINVAL);
	/* the session's token is the secret only its client shares with us */
	rc = em_oxs_attach(c->srv->ox, ss, p, p[6], ss->token, sizeof(ss->token), &info);
	if (rc)
		return reply_err(c, h, rc);
	pthread_rwlock_wrlock(&ss->lock);
	ss->oxattached = true;
	pthread_rwlock_unlock(&ss->lock);
	em_log(EM_LOG_DEBUG,
	       "%s: session %llu attached OmniXtend from %02x:%02x:%02x:%02x:%02x:%02x", c->peer,
	       (unsigned long long)ss->id, p[0], p[1], p[2], p[3], p[4], p[5]);
	em_ox_info_encode(out, &info);
	return reply(c, h, 0, out, sizeof(out), 0, 0, 0);
}

/* A window onto one region handle, reachable from the session's MAC only. */
static int do_ox_map(struct conn *c, const struct em_hdr *h)
{
	struct session *ss = c->sess;
	struct em_sregion *r;
	uint64_t base = 0;
	uint8_t out[8];
	int id;

	if (!c->srv->ox)
		return reply_err(c, h, -EPROTONOSUPPORT);
	pthread_rwlock_wrlock(&ss->lock);
	r = handle_get(ss, h->region);
	if (!r || !ss->oxattached) {
		pthread_rwlock_unlock(&ss->lock);
		return reply_err(c, h, r ? -ENOTCONN : -EBADF);
	}
	if (h->region > ss->noxwin) {
		uint32_t n = ss->caph;
		int *nw = realloc(ss->oxwin, n * sizeof(*nw));
		if (!nw) {
			pthread_rwlock_unlock(&ss->lock);
			return reply_err(c, h, -ENOMEM);
		}
		for (uint32_t i = ss->noxwin; i < n; i++)
			nw[i] = -1;
		ss->oxwin = nw;
		ss->noxwin = n;
	}
	id = ss->oxwin[h->region - 1];
	if (id < 0) {
		id = em_oxs_map(c->srv->ox, ss, r->mem, r->size, &base);
		if (id >= 0)
			ss->oxwin[h->region - 1] = id;
	} else if (em_oxs_base(c->srv->ox, id, &base)) { /* already granted: the same window */
		id = -EIO;
	}
	pthread_rwlock_unlock(&ss->lock);
	if (id < 0)
		return reply_err(c, h, id);
	em_put64(out, r->size);
	return reply(c, h, 0, out, sizeof(out), h->region, 0, base);
}

/* A write or atomic enters only while its region is not being moved and
 * its sender has seen the region's layout version `ver` at or above the
 * fence (a redundant region's repair raises it, common/wire.h); a freeze or
 * a fence is set first and then waits for the writes that entered before
 * it, so none lands after the copy that follows has begun. */
static bool write_enter(struct em_sregion *r, uint32_t ver)
{
	__atomic_add_fetch(&r->writers, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&r->mstate, __ATOMIC_SEQ_CST) == EM_MV_NONE &&
	    ver >= __atomic_load_n(&r->fence, __ATOMIC_SEQ_CST))
		return true;
	__atomic_sub_fetch(&r->writers, 1, __ATOMIC_SEQ_CST);
	return false;
}

/* What a request that a move state refused is told. */
static int moved_away(const struct em_sregion *r)
{
	return __atomic_load_n(&r->mstate, __ATOMIC_SEQ_CST) == EM_MV_GONE ? -EM_ENONODE
									   : -EM_ESTALE;
}

static void write_leave(struct em_sregion *r)
{
	__atomic_sub_fetch(&r->writers, 1, __ATOMIC_SEQ_CST);
}

/* EM_W_DRAIN: from now the node refuses new regions (its record in etcd
 * says "draining" at the next refresh); what it holds is served on. */
static int do_drain(struct conn *c, const struct em_hdr *h)
{
	if (h->aux > 1)
		return reply_err(c, h, -EINVAL);
	__atomic_store_n(&c->srv->draining, h->aux == 1, __ATOMIC_RELEASE);
	em_log(EM_LOG_INFO, "%s: %s", c->peer,
	       h->aux ? "draining: no new regions from now" : "draining stopped");
	return reply_err(c, h, 0);
}

/* EM_W_FREEZE: a named region's move state. Freezing returns once no write
 * is under way any more, so what the caller reads next is final. */
static int do_freeze(struct conn *c, const struct em_hdr *h, const uint8_t *p)
{
	char name[EM_NAME_MAX + 1];
	const uint8_t *layout;
	uint16_t ll;
	struct em_sregion *r;
	int rc = em_namelayout_decode(p, h->len, name, &layout, &ll);

	if (!rc && (!name[0] || (EM_MV_OF(h->aux) > EM_MV_GONE) ||
		    (EM_MV_OF(h->aux) != EM_MV_FENCE && h->aux > EM_MV_GONE) ||
		    (EM_MV_OF(h->aux) == EM_MV_FENCE && !EM_VER_OF(h->aux))))
		rc = -EINVAL;
	if (!rc)
		rc = em_store_open(c->srv->st, name, &r);
	if (rc)
		return reply_err(c, h, rc);
	if (EM_MV_OF(h->aux) == EM_MV_FENCE) {
		/* only upwards: a repairer that finds the fence at or past
		 * its own version has met another repairer (or one that died
		 * there), and is told which version it met and how long ago
		 * its holder last touched it; the holder touches it by raising
		 * the same version with the same token (offset) */
		uint32_t cur = __atomic_load_n(&r->fence, __ATOMIC_SEQ_CST);
		uint64_t now = em_now_ns();
		do {
			if (cur == EM_VER_OF(h->aux) && h->offset &&
			    h->offset == __atomic_load_n(&r->fence_owner, __ATOMIC_SEQ_CST)) {
				__atomic_store_n(&r->fence_at, now, __ATOMIC_SEQ_CST);
				break;
			}
			if (cur >= EM_VER_OF(h->aux)) {
				uint64_t at = __atomic_load_n(&r->fence_at, __ATOMIC_SEQ_CST);
				em_store_put(c->srv->st, r);
				return reply(c, h, -EALREADY, NULL, 0, 0, cur,
					     at && now > at ? (now - at) / 1000000 : 0);
			}
		} while (!__atomic_compare_exchange_n(&r->fence, &cur, EM_VER_OF(h->aux), false,
						      __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
		if (cur != EM_VER_OF(h->aux)) { /* raised, not touched */
			__atomic_store_n(&r->fence_owner, h->offset, __ATOMIC_SEQ_CST);
			__atomic_store_n(&r->fence_at, now, __ATOMIC_SEQ_CST);
		}
	} else {
		__atomic_store_n(&r->mstate, (int)h->aux, __ATOMIC_SEQ_CST);
	}
	while (__atomic_load_n(&r->writers, __ATOMIC_SEQ_CST))
		usleep(100);
	em_store_put(c->srv->st, r);
	em_log(EM_LOG_DEBUG, "%s: region '%s' move state %u", c->peer, name, h->aux);
	return reply_err(c, h, 0);
}

bool em_server_draining(struct em_server *s)
{
	return __atomic_load_n(&s->draining, __ATOMIC_ACQUIRE);
}

static bool in_bounds(const struct em_sregion *r, uint64_t off, uint64_t len)
{
	return off <= r->size && len <= r->size - off;
}

/* Raises a part's copy cursor to `end` (or leaves it higher) and returns
 * what it was. Always a read-modify-write, so that it is ordered both
 * ways with the region's bytes: a writer that takes the cursor this way
 * after its bytes went in, and a copy that raises it before it reads
 * them, meet on it, one after the other (see do_write). */
static uint64_t copy_raise(struct em_sregion *r, uint64_t end)
{
	uint64_t cur = __atomic_load_n(&r->copy_cur, __ATOMIC_RELAXED);

	while (cur < end)
		if (__atomic_compare_exchange_n(&r->copy_cur, &cur, end, false, __ATOMIC_SEQ_CST,
						__ATOMIC_RELAXED))
			return cur;
	return __atomic_fetch_or(&r->copy_cur, 0, __ATOMIC_SEQ_CST);
}

/* A repair's copy read of [off, off+len): the cursor goes up before the
 * bytes are taken, so a write that finds it below its bytes afterwards
 * is in what the copy reads. 0 bytes at 0: a repair begins, from the
 * start. */
static void copy_read(struct em_sregion *r, uint64_t off, uint64_t len)
{
	if (!off && !len)
		__atomic_exchange_n(&r->copy_cur, 0, __ATOMIC_SEQ_CST);
	else
		copy_raise(r, off + len);
}

/* How many bytes of [off, off+len), from its start, lie below cursor cur. */
static uint32_t copy_below(uint64_t cur, uint64_t off, uint64_t len)
{
	return cur <= off ? 0 : (uint32_t)EM_MIN(cur - off, len);
}

/* A READ with EM_WF_VER: the sender's layout version (aux) against the
 * part's fence, no bytes (common/wire.h). A part a drain moved or gave up
 * answers as its reads would. */
static int check_ver(struct conn *c, const struct em_hdr *h)
{
	struct session *ss = c->sess;
	struct em_sregion *r;
	uint32_t fence = 0;
	int st = 0;

	pthread_rwlock_rdlock(&ss->lock);
	r = handle_get(ss, h->region);
	if (!r) {
		st = -EBADF;
	} else if (__atomic_load_n(&r->mstate, __ATOMIC_SEQ_CST) == EM_MV_MOVED ||
		   __atomic_load_n(&r->mstate, __ATOMIC_SEQ_CST) == EM_MV_GONE) {
		st = moved_away(r);
	} else if (h->aux < (fence = __atomic_load_n(&r->fence, __ATOMIC_SEQ_CST))) {
		st = -EM_ESTALE;
	}
	pthread_rwlock_unlock(&ss->lock);
	return reply(c, h, st, NULL, 0, h->region, st == -EM_ESTALE ? fence : 0, h->offset);
}

static int do_read(struct conn *c, const struct em_hdr *h)
{
	struct session *ss = c->sess;
	struct em_sregion *r;
	uint8_t hdr[EM_HDR_LEN];
	int rc;

	if (h->flags & EM_WF_VER)
		return check_ver(c, h);
	if (h->aux > EM_MAX_IO)
		return reply_err(c, h, -EINVAL);
	pthread_rwlock_rdlock(&ss->lock);
	r = handle_get(ss, h->region);
	if (!r || !in_bounds(r, h->offset, h->aux)) {
		pthread_rwlock_unlock(&ss->lock);
		return reply_err(c, h, r ? -ERANGE : -EBADF);
	}
	if (__atomic_load_n(&r->mstate, __ATOMIC_SEQ_CST) == EM_MV_MOVED ||
	    __atomic_load_n(&r->mstate, __ATOMIC_SEQ_CST) == EM_MV_GONE) {
		int st = moved_away(r);
		pthread_rwlock_unlock(&ss->lock);
		return reply_err(c, h, st);
	}
	if (h->flags & EM_WF_COPY)
		copy_read(r, h->offset, h->aux);
	EM_UNOWNED_BEGIN();
	if (h->aux <= SMALL_READ) {
		rc = reply(c, h, 0, r->mem + h->offset, h->aux, h->region, 0, h->offset);
	} else if (c->w) {
		/* the header now, the payload in turns with other clients' */
		rc = tx_reserve(c, EM_HDR_LEN);
		if (!rc) {
			resp_hdr(c->tx + c->txlen, h, 0, h->aux, h->region, 0, h->offset);
			c->txlen += EM_HDR_LEN;
			out_add(c, NULL, EM_HDR_LEN, NULL);
			em_store_hold(c->srv->st, r);
			out_add(c, r->mem + h->offset, h->aux, r);
		}
	} else {
		uint32_t slice = c->srv->o.bulk_slice ? c->srv->o.bulk_slice : h->aux, done = 0;
		struct iovec iov[2] = { { hdr, EM_HDR_LEN }, { r->mem + h->offset, 0 } };
		resp_hdr(hdr, h, 0, h->aux, h->region, 0, h->offset);
		rc = conn_flush(c);
		for (int n = 2; !rc && done < h->aux; n = 1, done += (uint32_t)iov[1].iov_len) {
			iov[1].iov_base = r->mem + h->offset + done;
			iov[1].iov_len = EM_MIN(slice, h->aux - done);
			rc = conn_write(c, iov + 2 - n, n);
		}
	}
	EM_UNOWNED_END();
	pthread_rwlock_unlock(&ss->lock);
	return rc;
}

/* Takes opened plaintext from the connection's seal. Like recv: bytes, or
 * -1 with errno EINPROGRESS while no whole record is buffered, EPROTO once
 * a record failed (logged: the connection must close). */
static ssize_t seal_take(struct conn *c, void *dst, size_t len)
{
	ssize_t n = em_seal_read(c->seal_rx, dst, len, false);

	if (n > 0)
		return n;
	if (n == 0) {
		errno = EINPROGRESS;
		return -1;
	}
	/* Only a client holding the session's keys can produce a record that
	 * opens: anything else is an attack or a broken peer, never served. */
	em_log(EM_LOG_WARN, "%s: encrypted record %s; closing", c->peer,
	       n == -EBADMSG ? "failed authentication (altered, replayed or reordered)"
			     : "with an impossible length");
	errno = EPROTO;
	return -1;
}

/* A receive through the seal: ciphertext from the socket (unless whole
 * records are already buffered), plaintext out. flags as recv's. */
static ssize_t seal_recv(struct conn *c, void *dst, size_t len, int flags)
{
	if (!em_seal_ready(c->seal_rx)) {
		uint8_t *room;
		size_t cap = em_seal_room(c->seal_rx, &room);
		ssize_t n = recv(c->fd, room, cap, flags);

		if (n <= 0)
			return n;
		em_seal_fill(c->seal_rx, (size_t)n);
	}
	return seal_take(c, dst, len);
}

/* Receives n bytes into dst, using what is buffered first. */
static int conn_take(struct conn *c, uint8_t *dst, size_t n)
{
	size_t have = EM_MIN(n, c->wpos - c->rpos);

	if (dst)
		memcpy(dst, c->rx + c->rpos, have);
	c->rpos += have;
	n -= have;
	if (dst)
		dst += have;
	/* the message's deadline runs from when its first bytes were seen */
	if (n && !c->msg_deadline)
		c->msg_deadline = em_now_ns() + (uint64_t)c->srv->o.io_timeout_ms * 1000000;
	while (n) {
		uint8_t sink[4096];
		struct pollfd pfd = { c->fd, POLLIN, 0 };
		ssize_t got;
		int ms = ms_until(c->msg_deadline);
		bool ready = c->seal_rx && em_seal_ready(c->seal_rx);

		if (c->fd < 0)
			return -EPROTO;
		if (!ready && (ms == 0 || poll(&pfd, 1, ms) == 0)) {
			em_log(EM_LOG_WARN, "%s: message incomplete after %d ms; closing", c->peer,
			       c->srv->o.io_timeout_ms);
			return -ETIMEDOUT;
		}
		if (c->seal_rx)
			got = seal_recv(c, dst ? dst : sink, dst ? n : EM_MIN(n, sizeof(sink)),
					MSG_DONTWAIT);
		else
			got = recv(c->fd, dst ? dst : sink, dst ? n : EM_MIN(n, sizeof(sink)),
				   MSG_DONTWAIT);
		if (got < 0 && errno == EPROTO)
			return -EPROTO;
		if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK ||
				errno == EINPROGRESS))
			continue;
		if (got <= 0)
			return got == 0 ? -ECONNRESET : -errno;
		count(&c->bytes_in, (uint64_t)got);
		n -= (size_t)got;
		if (dst)
			dst += got;
	}
	return 0;
}

/* Writes arrive either whole in the receive buffer, or - when large -
 * partly buffered with the rest received straight into region memory so a
 * 2 MiB write costs no extra copy. On a bad handle or range the payload is
 * still consumed so the stream stays in step. */
static int do_write(struct conn *c, const struct em_hdr *h, bool buffered)
{
	struct session *ss = c->sess;
	struct em_sregion *r;
	struct once_ent done;
	bool once = h->flags & EM_WF_ONCE;
	uint32_t fence = 0, copied = 0;
	uint64_t was_read = 0;
	int rc, status = 0;

	if (once && (rc = once_begin(ss, h->tag, &done)) != 0) {
		/* applied before (or nowhere to remember it): the payload is
		 * consumed to keep the stream in step, and nothing written */
		status = rc > 0 ? done.status : rc;
		em_log(EM_LOG_DEBUG, "%s: answered from memory: write %llu", c->peer,
		       (unsigned long long)h->tag);
		if (buffered) {
			c->rpos += h->len;
			rc = 0;
		} else {
			rc = conn_take(c, NULL, h->len);
		}
		/* what a repair's copy did meanwhile is unknown: the worst */
		return rc ? rc : reply(c, h, status, NULL, 0, h->region, 0, h->len);
	}
	pthread_rwlock_rdlock(&ss->lock);
	r = handle_get(ss, h->region);
	if (!r || !in_bounds(r, h->offset, h->len))
		status = r ? -ERANGE : -EBADF;
	else if (!write_enter(r, h->aux)) {
		status = moved_away(r);
		fence = __atomic_load_n(&r->fence, __ATOMIC_SEQ_CST);
	}
	/* what a repair's copy had written here before these bytes go in:
	 * those of them it covers are newer than the copy's */
	if (!status)
		copied = copy_below(__atomic_load_n(&r->copy_cur, __ATOMIC_ACQUIRE), h->offset,
				    h->len);
	EM_UNOWNED_BEGIN();
	if (buffered) {
		if (!status)
			memcpy(r->mem + h->offset, c->rx + c->rpos, h->len);
		c->rpos += h->len;
		rc = 0;
	} else {
		rc = conn_take(c, status ? NULL : r->mem + h->offset, h->len);
	}
	EM_UNOWNED_END();
	if (!status) {
		/* and what it may have read before they were in (copy_read);
		 * a repair's own write moves the cursor past its bytes */
		was_read = copy_below(copy_raise(r, h->flags & EM_WF_COPY ? h->offset + h->len : 0),
				      h->offset, h->len);
		write_leave(r);
	}
	pthread_rwlock_unlock(&ss->lock);
	if (once)
		once_end(ss, h->tag, status, 0, rc != 0);
	if (rc)
		return rc;
	/* a refused write says which version it needs; a done one what a
	 * repair's copy had done about its bytes (common/wire.h) */
	return status ? reply(c, h, status, NULL, 0, h->region, fence, h->offset)
		      : reply(c, h, 0, NULL, 0, h->region, copied, was_read);
}

static int do_atomic(struct conn *c, const struct em_hdr *h, const uint8_t *p)
{
	struct session *ss = c->sess;
	struct em_sregion *r;
	uint64_t *w, opnd, cmp, old = 0, cur;
	uint8_t out[8];
	struct once_ent done;
	bool once = h->flags & EM_WF_ONCE;
	int status = 0, rc;

	if (h->len != 16)
		return reply_err(c, h, -EPROTO);
	if (EM_AOP_OF(h->aux) >= EM_ATOMIC__COUNT)
		return reply_err(c, h, -EINVAL);
	if (h->offset & 7)
		return reply_err(c, h, -EINVAL);
	opnd = em_get64(p);
	cmp = em_get64(p + 8);
	if (once && (rc = once_begin(ss, h->tag, &done)) != 0) {
		em_log(EM_LOG_DEBUG, "%s: answered from memory: atomic %llu", c->peer,
		       (unsigned long long)h->tag);
		if (rc < 0 || done.status)
			return reply_err(c, h, rc < 0 ? rc : done.status);
		em_put64(out, done.value);
		return reply(c, h, 0, out, 8, h->region, h->aux, h->offset);
	}
	pthread_rwlock_rdlock(&ss->lock);
	r = handle_get(ss, h->region);
	if (!r || !in_bounds(r, h->offset, 8)) {
		pthread_rwlock_unlock(&ss->lock);
		status = r ? -ERANGE : -EBADF;
		if (once)
			once_end(ss, h->tag, status, 0, false);
		return reply_err(c, h, status);
	}
	if (!write_enter(r, EM_VER_OF(h->aux))) {
		uint32_t fence = __atomic_load_n(&r->fence, __ATOMIC_SEQ_CST);
		int st = moved_away(r);
		pthread_rwlock_unlock(&ss->lock);
		return reply(c, h, st, NULL, 0, 0, fence, 0);
	}
	w = (uint64_t *)(void *)(r->mem + h->offset);
	switch (EM_AOP_OF(h->aux)) {
	case EM_ATOMIC_CAS:
		old = cmp;
		__atomic_compare_exchange_n(w, &old, opnd, false, __ATOMIC_SEQ_CST,
					    __ATOMIC_SEQ_CST);
		break;
	case EM_ATOMIC_FADD:
		old = __atomic_fetch_add(w, opnd, __ATOMIC_SEQ_CST);
		break;
	case EM_ATOMIC_SWAP:
		old = __atomic_exchange_n(w, opnd, __ATOMIC_SEQ_CST);
		break;
	case EM_ATOMIC_AND:
		old = __atomic_fetch_and(w, opnd, __ATOMIC_SEQ_CST);
		break;
	case EM_ATOMIC_OR:
		old = __atomic_fetch_or(w, opnd, __ATOMIC_SEQ_CST);
		break;
	case EM_ATOMIC_XOR:
		old = __atomic_fetch_xor(w, opnd, __ATOMIC_SEQ_CST);
		break;
	default: /* min/max: compare-and-swap loop */
		cur = __atomic_load_n(w, __ATOMIC_SEQ_CST);
		for (;;) {
			uint64_t nv = cur;
			switch (EM_AOP_OF(h->aux)) {
			case EM_ATOMIC_SMIN:
				nv = (int64_t)opnd < (int64_t)cur ? opnd : cur;
				break;
			case EM_ATOMIC_SMAX:
				nv = (int64_t)opnd > (int64_t)cur ? opnd : cur;
				break;
			case EM_ATOMIC_UMIN:
				nv = opnd < cur ? opnd : cur;
				break;
			case EM_ATOMIC_UMAX:
				nv = opnd > cur ? opnd : cur;
				break;
			}
			if (nv == cur ||
			    __atomic_compare_exchange_n(w, &cur, nv, false, __ATOMIC_SEQ_CST,
							__ATOMIC_SEQ_CST))
				break;
		}
		old = cur;
		break;
	}
	write_leave(r);
	pthread_rwlock_unlock(&ss->lock);
	if (once)
		once_end(ss, h->tag, status, old, false);
	em_put64(out, old);
	return reply(c, h, status, out, 8, h->region, h->aux, h->offset);
}

/* Raw mode for `ethermem bench --baseline`: a plain ping-pong and stream on
 * the same connection path, so ethermem's figures can be read as ratios. */
static int do_baseline(struct conn *c, const struct em_hdr *h)
{
	uint8_t req[16];
	int rc;

	if (c->fd < 0)
		return -EPROTO; /* fuzzing: no socket to stream to */
	if (c->seal_rx)         /* the raw mode is the unencrypted floor */
		return reply_err(c, h, -EOPNOTSUPP);
	rc = reply_err(c, h, 0);

	if (rc || (rc = conn_flush(c)))
		return rc;
	for (;;) {
		uint32_t kind;
		uint64_t bytes;

		/* Between requests the connection may idle, exactly as in the
		 * main loop: a plain blocking receive, no poll first. */
		c->msg_deadline = 0;
		if (c->wpos > c->rpos)
			rc = conn_take(c, req, sizeof(req));
		else
			rc = em_recv_all_poll(c->fd, req, sizeof(req), c->srv->o.poll_us);
		if (rc)
			return rc;
		kind = em_get32(req);
		bytes = em_get64(req + 8);
		if (kind == EM_BASE_QUIT)
			return 0;
		if (kind != EM_BASE_PING && kind != EM_BASE_STREAM)
			return -EPROTO;
		if (kind == EM_BASE_PING && bytes > EM_BASE_MAX_PING)
			return -EPROTO;
		if (!c->basebuf) {
			c->basecap = EM_BASE_MAX_PING;
			c->basebuf = calloc(1, c->basecap);
			if (!c->basebuf)
				return -ENOMEM;
		}
		while (bytes) {
			struct iovec iov = { c->basebuf, EM_MIN(bytes, c->basecap) };
			if ((rc = conn_write(c, &iov, 1)))
				return rc;
			bytes -= iov.iov_len;
		}
	}
}

static int class_of(unsigned op)
{
	switch (op) {
	case EM_W_READ:
		return CL_READ;
	case EM_W_WRITE:
		return CL_WRITE;
	case EM_W_ATOMIC:
		return CL_ATOMIC;
	case EM_W_CREATE:
		return CL_CREATE;
	case EM_W_OPEN:
		return CL_OPEN;
	case EM_W_DELETE:
		return CL_DELETE;
	case EM_W_LIST:
		return CL_LIST;
	case EM_W_STATUS:
		return CL_STATUS;
	default:
		return -1;
	}
}

/* Serves one request whose header is decoded and whose payload is either in
 * the receive buffer (buffered) or still on the socket (large writes). The
 * receive position is past the header on entry. */
static int serve(struct conn *c, const struct em_hdr *h, bool buffered)
{
	const uint8_t *p = c->rx + c->rpos;
	uint64_t t0 = em_now_ns();
	size_t txbefore = c->txlen;
	int cl = class_of(h->op), rc;

	if (h->flags & EM_WF_RESPONSE) {
		rc = reply_err(c, h, -EPROTO);
		c->rpos += h->len;
		return rc;
	}
	if (h->op == EM_W_WRITE) {
		rc = do_write(c, h, buffered); /* consumes its own payload */
	} else {
		switch (h->op) {
		case EM_W_READ:
			rc = do_read(c, h);
			break;
		case EM_W_ATOMIC:
			rc = do_atomic(c, h, p);
			break;
		case EM_W_CREATE:
		case EM_W_OPEN:
			rc = do_create_open(c, h, p);
			break;
		case EM_W_CLOSE:
			rc = do_close(c, h);
			break;
		case EM_W_DELETE:
			rc = do_delete(c, h, p);
			break;
		case EM_W_LIST:
			rc = do_list(c, h);
			break;
		case EM_W_STATUS:
			rc = do_status(c, h);
			break;
		case EM_W_BASELINE:
			if (c->w) { /* streams blocking: its own thread (worker_handoff) */
				c->handoff = true;
				c->handoff_h = *h;
				rc = 0;
			} else {
				rc = do_baseline(c, h);
			}
			break;
		case EM_W_OX_ATTACH:
			rc = do_ox_attach(c, h, p);
			break;
		case EM_W_OX_MAP:
			rc = do_ox_map(c, h);
			break;
		case EM_W_BYE:
			pthread_mutex_lock(&c->srv->lock);
			c->sess->bye = true;
			pthread_mutex_unlock(&c->srv->lock);
			rc = reply_err(c, h, 0);
			break;
		case EM_W_DRAIN:
			rc = do_drain(c, h);
			break;
		case EM_W_FREEZE:
			rc = do_freeze(c, h, p);
			break;
		default: /* HELLO and AUTH once authenticated */
			rc = reply_err(c, h, -EPROTO);
			break;
		}
		c->rpos += h->len;
	}
	if (cl >= 0) {
		count(&c->srv->ops[cl], 1);
		if (cl <= CL_ATOMIC) {
			uint64_t dt = em_now_ns() - t0;
			em_hist_add(&c->srv->lat[cl], dt);
			count(&c->srv->lat_sum_ns[cl], dt);
		}
		/* a reply whose status word is non-zero counts as an error */
		if (c->txlen > txbefore && em_hdr_status(c->tx + txbefore) != 0)
			count(&c->srv->errs[cl], 1);
	}
	return rc;
}

/* Serves every complete request in the receive buffer. Returns 0 to go on
 * reading, or -errno to drop the connection. */
static int serve_buffered(struct conn *c)
{
	c->stalled = false;
	c->need = 0;
	while (c->wpos - c->rpos >= EM_HDR_LEN) {
		struct em_hdr h;
		const char *why;
		int rc;

		if (c->w && (c->handoff || out_full(c))) {
			c->stalled = !c->handoff;
			break;
		}
		rc = em_hdr_decode(c->rx + c->rpos, &h, &why);
		/* A large read reply still queued is sent from region memory:
		 * a write or atomic that the client asked for after it must not
		 * change what it returns, so it waits for the reply to go. */
		if (!rc && c->w && c->bulk_queued && (h.op == EM_W_WRITE || h.op == EM_W_ATOMIC)) {
			c->stalled = true;
			break;
		}

		if (rc) {
			/* The framing can no longer be trusted: answer once, then
			 * drop the connection. */
			em_log(EM_LOG_WARN, "%s: bad request header (%s); closing", c->peer, why);
			h.op = c->rx[c->rpos + 5];
			reply_err(c, &h, rc);
			conn_flush(c);
			return rc;
		}
		/* a worker receives a large write whole first (never waiting on
		 * one socket): it grows rx to c->need */
		if (h.op == EM_W_WRITE && h.len > STREAM_WRITE && !c->w) {
			c->rpos += EM_HDR_LEN;
			if ((rc = serve(c, &h, false)))
				return rc;
			continue;
		}
		if (c->wpos - c->rpos < EM_HDR_LEN + (size_t)h.len) {
			c->need = EM_HDR_LEN + (size_t)h.len;
			break;
		}
		c->rpos += EM_HDR_LEN;
		c->ops++;
		if ((rc = serve(c, &h, true)))
			return rc;
	}
	return 0;
}

/* Whether the node's waits may spin now: the spin gate, sampled by
 * whichever thread comes first once EM_SPIN_GATE_NS has passed. */
static bool spin_allowed(struct em_server *s, uint64_t now)
{
	if (s->psi_fd >= 0 && now >= __atomic_load_n(&s->gate_next_ns, __ATOMIC_RELAXED) &&
	    pthread_mutex_trylock(&s->gate_lock) == 0) {
		uint64_t stall;

		if (now >= s->gate_next_ns && em_pressure_total(s->psi_fd, &stall) == 0) {
			__atomic_store_n(&s->spin_ok, em_spin_gate_update(&s->gate, now, stall),
					 __ATOMIC_RELAXED);
		}
		__atomic_store_n(&s->gate_next_ns, now + EM_SPIN_GATE_NS, __ATOMIC_RELAXED);
		pthread_mutex_unlock(&s->gate_lock);
	}
	return __atomic_load_n(&s->spin_ok, __ATOMIC_RELAXED);
}

/* Receives what the socket has. While requests keep coming, the next one
 * usually arrives within microseconds of the last reply: spinning briefly
 * for it costs less than the tens of microseconds a sleeping thread takes to
 * wake on these machines. The spin is adaptive (em_spin_begin): it is tried
 * only while the previous wait was short. */
static ssize_t sock_recv(struct conn *c, void *buf, size_t len)
{
	uint64_t now = em_now_ns();
	ssize_t n;

	if (spin_allowed(c->srv, now) && em_spin_begin(&c->spin, now)) {
		n = em_recv_spin(c->fd, buf, len, &c->spin);
		if (n != -EAGAIN) {
			em_spin_end(&c->spin, em_now_ns());
			if (n < 0) {
				errno = (int)-n;
				return -1;
			}
			return n;
		}
	}
	n = recv(c->fd, buf, len, 0);
	em_spin_end(&c->spin, em_now_ns());
	return n;
}

/* Plaintext into the receive buffer: straight from the socket, or through
 * the seal (-1 with EINPROGRESS: part of a record came, more is due). */
static ssize_t conn_recv(struct conn *c)
{
	uint8_t *room;
	size_t cap;
	ssize_t n;

	if (!c->seal_rx)
		return sock_recv(c, c->rx + c->wpos, c->rxcap - c->wpos);
	if (!em_seal_ready(c->seal_rx)) {
		cap = em_seal_room(c->seal_rx, &room);
		n = sock_recv(c, room, cap);
		if (n <= 0)
			return n;
		em_seal_fill(c->seal_rx, (size_t)n);
	}
	return seal_take(c, c->rx + c->wpos, c->rxcap - c->wpos);
}

/* Moves what is left of the input buffer to its start, so it can fill on. */
static void rx_compact(struct conn *c)
{
	if (c->rpos == c->wpos) {
		c->rpos = c->wpos = 0;
	} else if (c->rpos) {
		memmove(c->rx, c->rx + c->rpos, c->wpos - c->rpos);
		c->wpos -= c->rpos;
		c->rpos = 0;
	}
}

static int conn_loop(struct conn *c)
{
	for (;;) {
		ssize_t n;
		size_t rpos0 = c->rpos;
		int rc = serve_buffered(c);

		if (rc)
			return rc;
		/* A message was consumed: what is left starts the next one, whose
		 * deadline starts now. */
		if (c->rpos != rpos0)
			c->msg_deadline = 0;
		if ((rc = conn_flush(c)))
			return rc;
		rx_compact(c);
		if ((c->wpos || (c->seal_rx && em_seal_partial(c->seal_rx))) &&
		    !(c->seal_rx && em_seal_ready(c->seal_rx))) {
			/* Part of a message (or of a record) is buffered: the whole
			 * of it must arrive within the I/O timeout of its first
			 * bytes, however the peer spaces the rest out. */
			struct pollfd pfd = { c->fd, POLLIN, 0 };
			int ms;
			if (!c->msg_deadline)
				c->msg_deadline =
					em_now_ns() + (uint64_t)c->srv->o.io_timeout_ms * 1000000;
			ms = ms_until(c->msg_deadline);
			if (ms == 0 || poll(&pfd, 1, ms) == 0) {
				em_log(EM_LOG_WARN, "%s: request incomplete after %d ms; closing",
				       c->peer, c->srv->o.io_timeout_ms);
				return -ETIMEDOUT;
			}
		}
		n = conn_recv(c);
		if (n < 0 && (errno == EINTR || errno == EINPROGRESS))
			continue;
		if (n == 0) {
			if (c->wpos || (c->seal_rx && em_seal_partial(c->seal_rx)))
				em_log(EM_LOG_WARN, "%s: disconnected mid-request", c->peer);
			return 0;
		}
		if (n < 0 && errno == EPROTO)
			return -EPROTO; /* a bad record, logged */
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			em_log(EM_LOG_WARN, "%s: idle for %d s; closing", c->peer,
			       c->srv->o.idle_timeout_s);
			return -ETIMEDOUT;
		}
		if (n < 0)
			return -errno;
		count(&c->bytes_in, (uint64_t)n);
		c->wpos += (size_t)n;
	}
}

/* ---- authentication ---- */

static int recv_msg(struct conn *c, struct em_hdr *h, uint8_t *payload, uint32_t want_op,
		    uint32_t want_len)
{
	uint8_t hb[EM_HDR_LEN];
	const char *why = "";
	int rc = recv_until(c->fd, hb, sizeof(hb), c->msg_deadline);

	if (rc) {
		if (rc == -ETIMEDOUT)
			peer_log(c->srv, EM_LOG_WARN, "%s: not authenticated within %d ms; closing",
				 c->peer, handshake_ms(c->srv));
		return rc;
	}
	rc = em_hdr_decode(hb, h, &why);
	if (!rc && (h->op != want_op || h->len != want_len || (h->flags & EM_WF_RESPONSE))) {
		rc = -EPROTO;
		why = "unexpected message during authentication";
	}
	if (rc) {
		peer_log(c->srv, EM_LOG_WARN, "%s: refused: %s", c->peer, why);
		reply_err(c, h, rc == -EM_EVERSION ? -EM_EVERSION : -EPROTO);
		conn_flush(c);
		return rc;
	}
	rc = recv_until(c->fd, payload, want_len, c->msg_deadline);
	if (rc == -ETIMEDOUT)
		peer_log(c->srv, EM_LOG_WARN, "%s: not authenticated within %d ms; closing",
			 c->peer, handshake_ms(c->srv));
	return rc;
}

/* A client host that vanishes (power, network, a namespace deleted) never
 * closes its connections, and its session's anonymous regions would be held
 * for ever. Keepalive probes find a silent peer after keepalive_s plus a few
 * probes; TCP_USER_TIMEOUT bounds how long sent data may go unacknowledged
 * (else the kernel retransmits for some fifteen minutes). --idle-timeout, off
 * by default, also drops a live client that sends nothing for so long. */
static void liveness(struct conn *c)
{
	const struct em_server_opts *o = &c->srv->o;
	int one = 1, idle = o->keepalive_s, intvl = EM_MAX(1, o->keepalive_s / 3), cnt = 3;
	unsigned ut = (unsigned)(o->keepalive_s + intvl * cnt) * 1000u;

	if (c->fd < 0)
		return;
	/* the idle limit stands on its own: it holds with keepalive off too */
	if (o->idle_timeout_s > 0) {
		struct timeval tv = { .tv_sec = o->idle_timeout_s };
		setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	if (o->keepalive_s <= 0)
		return;
	setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
}

static int authenticate(struct conn *c)
{
	struct em_server *s = c->srv;
	uint8_t cn[EM_NONCE_LEN], sn[EM_NONCE_LEN], sk[EM_NONCE_LEN], token[EM_TOKEN_LEN];
	uint8_t want[EM_PROOF_LEN], ab[EM_AUTH_REQ_LEN], rb[EM_AUTH_RESP_LEN];
	uint8_t traffic[2][EM_KEY_LEN];
	struct em_auth_req ar;
	struct em_auth_resp resp;
	struct em_seal *srx = NULL, *stx = NULL;
	struct em_hdr h;
	bool full, encrypt;
	int rc, cipher = 0;

	/* The whole handshake has one deadline, so a peer dribbling bytes
	 * cannot hold its connection open. */
	c->msg_deadline = em_now_ns() + (uint64_t)handshake_ms(s) * 1000000;
	if ((rc = recv_msg(c, &h, cn, EM_W_HELLO, EM_NONCE_LEN)))
		return rc;
	encrypt = h.aux & EM_WH_ENCRYPT;
	if (!encrypt && s->o.encrypt) {
		peer_log(s, EM_LOG_WARN,
			 "%s: refused: the client does not encrypt (this node requires --encrypt)",
			 c->peer);
		reply_err(c, &h, -EM_ECRYPT);
		conn_flush(c);
		return -EM_ECRYPT;
	}
	/* AES-GCM only when both CPUs have AES instructions: without them
	 * it is slow and not constant-time, and the other side may lack them */
	if (encrypt)
		cipher = (h.aux & EM_WH_AES) && em_seal_aes_available()
				 ? EM_CIPHER_AES256GCM
				 : EM_CIPHER_XCHACHA20POLY1305;
	em_auth_keypair(sn, sk);
	rc = em_auth_session_token(s->key, sk, cn, cn, sn, token, (unsigned)cipher,
				   encrypt ? traffic : NULL);
	em_secure_zero(sk, sizeof(sk));
	if (rc) {
		peer_log(s, EM_LOG_WARN, "%s: refused: unusable key in hello", c->peer);
		reply_err(c, &h, -EPROTO);
		conn_flush(c);
		return rc;
	}
	rc = reply(c, &h, 0, sn, sizeof(sn), 0, encrypt ? EM_WH_ENCRYPT | (unsigned)cipher << 8 : 0,
		   0);
	if (rc || (rc = conn_flush(c)))
		goto out;
	if ((rc = recv_msg(c, &h, ab, EM_W_AUTH, EM_AUTH_REQ_LEN)))
		goto out;
	em_auth_req_decode(ab, &ar);
	em_auth_proof(s->key, 0, sn, cn, want);
	if (em_auth_check(want, ar.proof) != 0) {
		count(&s->auth_fail, 1);
		peer_log(s, EM_LOG_WARN, "%s: refused: wrong cluster secret", c->peer);
		reply_err(c, &h, -EM_EAUTH);
		conn_flush(c);
		rc = -EM_EAUTH;
		goto out;
	}
	/* Only authenticated connections hold one of the max_clients slots; a
	 * member turned away is told why rather than cut off. */
	pthread_mutex_lock(&s->lock);
	full = s->nauthed >= s->o.max_clients;
	if (!full) {
		s->nauthed++;
		c->authed = true;
	}
	pthread_mutex_unlock(&s->lock);
	if (full) {
		em_log(EM_LOG_WARN, "%s: refused: node full (%d clients)", c->peer,
		       s->o.max_clients);
		reply_err(c, &h, -EM_EFULL);
		conn_flush(c);
		rc = -EM_EFULL;
		goto out;
	}
	if (encrypt && (!(srx = em_seal_create(cipher, traffic[0])) ||
			!(stx = em_seal_create(cipher, traffic[1])))) {
		reply_err(c, &h, -ENOMEM);
		conn_flush(c);
		rc = -ENOMEM;
		goto out;
	}
	if (ar.attach_session) {
		c->sess = session_attach(s, ar.attach_session, ar.attach_token, cn, sn);
		if (!c->sess) {
			peer_log(s, EM_LOG_WARN, "%s: refused: unknown session", c->peer);
			reply_err(c, &h, -ENOENT);
			conn_flush(c);
			rc = -ENOENT;
			goto out;
		}
	} else if (!(c->sess = session_new(s, token))) {
		reply_err(c, &h, -ENOMEM);
		conn_flush(c);
		rc = -ENOMEM;
		goto out;
	}
	resp.session = c->sess->id;
	memset(resp.token, 0, EM_TOKEN_LEN); /* both sides derived it */
	memcpy(resp.node_id, s->node_id, EM_NODE_ID_LEN);
	em_auth_proof(s->key, 1, cn, sn, resp.proof);
	em_auth_resp_encode(rb, &resp);
	/* the last message in clear; everything after it is sealed */
	if ((rc = reply(c, &h, 0, rb, sizeof(rb), 0, 0, 0)) || (rc = conn_flush(c)))
		goto out;
	c->seal_rx = srx;
	c->seal_tx = stx;
	srx = stx = NULL;
	c->msg_deadline = 0;
	liveness(c);
	em_log(EM_LOG_DEBUG, "%s: authenticated, session %llu%s%s", c->peer,
	       (unsigned long long)c->sess->id, encrypt ? ", encrypted with " : "",
	       encrypt ? em_cipher_name(cipher) : "");
out:
	em_secure_zero(traffic, sizeof(traffic));
	em_seal_destroy(srx);
	em_seal_destroy(stx);
	return rc;
}

/* ---- connection lifecycle ---- */

static void conn_free(struct conn *c)
{
	/* replies still queued when the connection ended hold their regions */
	for (; c->nq; c->nq--, c->qhead = (c->qhead + 1) % OUT_SEGS)
		if (c->q[c->qhead].r)
			em_store_put(c->srv->st, c->q[c->qhead].r);
	em_seal_destroy(c->seal_rx);
	em_seal_destroy(c->seal_tx);
	free(c->rx);
	free(c->tx);
	free(c->basebuf);
	free(c);
}

/* The end of an authenticated connection's service (rc: why it ended), or
 * of one that never authenticated (served false). */
static void conn_finish(struct conn *c, int rc, bool served)
{
	struct em_server *s = c->srv;

	if (served) {
		if (rc && rc != -ECONNRESET && rc != -ETIMEDOUT && rc != -EPROTO &&
		    rc != -EM_EVERSION)
			em_log(EM_LOG_WARN, "%s: connection dropped: %s", c->peer, em_strerror(rc));
		/* a peer that went away (not one the node dropped for silence
		 * or bad messages) may be back for its session */
		session_detach(s, c->sess, rc == 0 || rc == -ECONNRESET || rc == -EPIPE);
	}
	/* Unlinked before the descriptor is closed: the acceptor may shut down
	 * a listed connection's socket, and must never reach a reused number. */
	pthread_mutex_lock(&s->lock);
	/* folded in under the lock that guards the list, so a snapshot never
	 * counts a connection twice or not at all (counters stay monotonic) */
	count(&s->bytes_in, c->bytes_in);
	count(&s->bytes_out, c->bytes_out);
	if (c->authed)
		s->nauthed--;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (--s->nconns == 0)
		pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&s->lock);
	close(c->fd);
	conn_free(c);
}

/* ---- event-loop workers ----
 *
 * After its handshake a connection belongs to one worker, which serves it
 * with its other connections from one epoll set: nonblocking receives into
 * rx, requests served as soon as they are whole, replies queued in order
 * (a connection's replies must reach its client in the order it asked).
 * Between connections the worker decides who goes first: small replies
 * are sent as soon as they are made, and large read replies go out one
 * slice (--bulk-slice) per turn, the turns going round the connections
 * that have one, with a look for new events between two slices. So a 4 KiB
 * read waits for at most one slice of somebody's 2 MiB reply, not for the
 * whole of it, and bulk clients share the worker in turn. A connection
 * with OUT_BULK bytes of large replies (or OUT_SMALL of small ones) queued
 * is not read further: its requests wait in the socket, and TCP's window
 * holds the client back - the node grants credit by reading.
 *
 * A large write is received whole into the connection's buffer (grown to
 * it) and then copied into the region, one copy more than the blocking
 * model's receive into place: applying it only once whole keeps the
 * at-most-once record and a freeze's wait for writers within one step of
 * the loop, where a half-received write could make the worker wait for
 * itself. */

/* ---- the workers' event source ----
 *
 * epoll by default; --io uring waits through io_uring instead. There a
 * connection's interest is a one-shot poll request on the worker's ring,
 * armed again once it fired; a poll armed on a socket that is ready
 * completes at once, so this behaves as the level-triggered epoll set does
 * and the scheduler above cannot tell the two apart. Re-arming rides on the
 * system call that waits, and the worker's spin reads the completion ring
 * in memory instead of calling epoll_wait. A completion names its
 * connection by descriptor and a sequence number, not by pointer: a poll
 * cancelled as its connection went can complete after the connection was
 * freed and its descriptor given to another. */

struct wev {
	struct conn *c; /* NULL: the worker's eventfd */
	uint32_t events;
};

#ifdef EM_HAVE_URING
#define UD_EFD UINT64_MAX        /* the eventfd's poll */
#define UD_NONE (UINT64_MAX - 1) /* a cancellation's own completion */
#define RING_ENTRIES 256
/* Completions are posted when the worker next enters the kernel (which it
 * does for every send and receive) rather than by interrupting it; the
 * ring's flag tells a spinning worker to enter. */
#define RING_FLAGS (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG)

static struct io_uring_sqe *ring_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	if (!sqe) {
		io_uring_submit(&w->ring); /* full: make room */
		sqe = io_uring_get_sqe(&w->ring);
	}
	return sqe;
}

static uint64_t conn_ud(const struct conn *c)
{
	return (uint64_t)(uint32_t)c->fd << 32 | c->useq;
}

static int ring_arm(struct worker *w, int fd, uint32_t ev, uint64_t ud)
{
	struct io_uring_sqe *sqe = ring_sqe(w);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_poll_add(sqe, fd, ev);
	io_uring_sqe_set_data64(sqe, ud);
	return 0;
}

static void ring_cancel(struct worker *w, uint64_t ud)
{
	struct io_uring_sqe *sqe = ring_sqe(w);

	if (sqe) {
		io_uring_prep_poll_remove(sqe, ud);
		io_uring_sqe_set_data64(sqe, UD_NONE);
	}
}
#endif

/* Watches c's socket for ev (0: for nothing). */
static int wev_set(struct conn *c, uint32_t ev)
{
	struct worker *w = c->w;
	struct epoll_event e = { .events = ev, .data.ptr = c };
	int rc = 0;

	if (ev == c->ev)
		return 0;
#ifdef EM_HAVE_URING
	if (w->uring) {
		if (c->ev) {
			ring_cancel(w, conn_ud(c));
			c->useq = ++w->seq;
		}
		c->ev = 0;
		if (ev && !(rc = ring_arm(w, c->fd, ev, conn_ud(c))))
			c->ev = ev;
		return rc;
	}
#endif
	if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &e))
		return -errno;
	c->ev = ev;
	return rc;
}

/* A connection new to the worker, watched for input. */
static int wev_add(struct conn *c)
{
	struct worker *w = c->w;
	struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };

#ifdef EM_HAVE_URING
	if (w->uring) {
		int rc;

		if (c->fd >= w->nfdmap) {
			int n = EM_MAX(c->fd + 1, 2 * w->nfdmap);
			struct conn **m = realloc(w->fdmap, (size_t)n * sizeof(*m));

			if (!m)
				return -ENOMEM;
			memset(m + w->nfdmap, 0, (size_t)(n - w->nfdmap) * sizeof(*m));
			w->fdmap = m;
			w->nfdmap = n;
		}
		c->useq = ++w->seq;
		c->ev = 0;
		if ((rc = wev_set(c, EPOLLIN)))
			return rc;
		w->fdmap[c->fd] = c;
		return 0;
	}
#endif
	if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &e))
		return -errno;
	c->ev = EPOLLIN;
	return 0;
}

static void wev_del(struct conn *c)
{
	struct worker *w = c->w;

#ifdef EM_HAVE_URING
	if (w->uring) {
		if (c->ev)
			ring_cancel(w, conn_ud(c));
		w->fdmap[c->fd] = NULL;
		c->ev = 0;
		/* now: a pending poll holds the socket open */
		io_uring_submit(&w->ring);
		return;
	}
#endif
	epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
}

/* Up to max events, waiting at most ms for the first. */
static int wev_wait(struct worker *w, struct wev *out, int max, int ms)
{
	struct epoll_event ev[64];
	int n;

#ifdef EM_HAVE_URING
	if (w->uring) {
		struct __kernel_timespec ts = { ms / 1000, (ms % 1000) * 1000000LL };
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;

		if (!w->efd_armed && !ring_arm(w, w->efd, POLLIN, UD_EFD))
			w->efd_armed = true;
		if (ms)
			io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
		else if (io_uring_sq_ready(&w->ring))
			io_uring_submit(&w->ring);
		else if (IO_URING_READ_ONCE(*w->ring.sq.kflags) & IORING_SQ_TASKRUN)
			io_uring_get_events(&w->ring);
		n = 0;
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			uint64_t ud = io_uring_cqe_get_data64(cqe);
			uint32_t fd = (uint32_t)(ud >> 32);
			struct conn *c;

			if (n == max)
				break;
			seen++;
			if (ud == UD_EFD) {
				w->efd_armed = false;
				out[n++] = (struct wev){ NULL, 0 };
			} else if (ud != UD_NONE && fd < (uint32_t)w->nfdmap &&
				   (c = w->fdmap[fd]) && c->useq == (uint32_t)ud) {
				c->ev = 0;
				out[n++] = (struct wev){ c, cqe->res < 0 ? EPOLLERR
									 : (uint32_t)cqe->res };
			}
		}
		io_uring_cq_advance(&w->ring, seen);
		return n;
	}
#endif
	n = epoll_wait(w->ep, ev, EM_MIN(max, (int)EM_ARRAY_SIZE(ev)), ms);
	for (int i = 0; i < n; i++)
		out[i] = (struct wev){ ev[i].data.ptr, ev[i].events };
	return n;
}

static void worker_forget(struct conn *c)
{
	struct worker *w = c->w;

	wev_del(c);
	w->cv[c->widx] = w->cv[--w->nc];
	w->cv[c->widx]->widx = c->widx;
	if (c->bulk_queued)
		w->bulkers--;
	if (c->more_in)
		w->readers--;
	c->more_in = false;
	__atomic_fetch_sub(&w->n, 1, __ATOMIC_RELAXED);
}

/* Bytes taken from the front of the output (sent, or sealed into a record
 * that is being sent). */
static void out_took(struct conn *c, size_t n, size_t *budget)
{
	struct oseg *g = &c->q[c->qhead];

	g->len -= n;
	if (!g->mem) {
		c->txoff += n;
		if (c->txoff == c->txlen)
			c->txoff = c->txlen = 0;
	} else {
		g->mem += n;
		*budget -= n;
		c->bulk_queued -= n;
		if (!c->bulk_queued && c->w)
			c->w->bulkers--;
	}
	if (!g->len) {
		if (g->r)
			em_store_put(c->srv->st, g->r);
		c->qhead = (c->qhead + 1) % OUT_SEGS;
		c->nq--;
	}
}

/* Sends queued output until it is all gone, the socket takes no more, or a
 * large reply is next and budget bytes of large replies went out. */
static int out_push(struct conn *c, size_t budget)
{
	int flags = MSG_NOSIGNAL | (c->w ? MSG_DONTWAIT : 0);

	while (c->recoff < c->reclen || c->nq) {
		struct oseg *g = &c->q[c->qhead];
		const uint8_t *p;
		size_t len;
		ssize_t n;

		if (c->recoff < c->reclen) {
			n = send(c->fd, c->rec + c->recoff, c->reclen - c->recoff, flags);
			if (n >= 0)
				c->recoff += (size_t)n;
		} else if (g->mem && !budget) {
			break;
		} else {
			p = g->mem ? g->mem : c->tx + c->txoff;
			len = g->mem ? EM_MIN(g->len, budget) : g->len;
			if (c->seal_tx) {
				struct iovec iov = { (void *)p, len }, *v = &iov;
				int k = 1;

				EM_UNOWNED_BEGIN();
				n = em_seal_wrap(c->seal_tx, &v, &k, &c->rec);
				EM_UNOWNED_END();
				if (n <= 0)
					return n ? (int)n : -EPROTO;
				c->reclen = (size_t)n;
				c->recoff = 0;
				out_took(c, k ? len - iov.iov_len : len, &budget);
				continue;
			}
			EM_UNOWNED_BEGIN();
			n = send(c->fd, p, len, flags);
			EM_UNOWNED_END();
			if (n >= 0)
				out_took(c, (size_t)n, &budget);
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			c->blocked = true;
			return 0;
		}
		if (n < 0)
			return -errno;
	}
	return 0;
}

/* Nonblocking receive of plaintext: bytes, 0 at the end of the stream,
 * -EAGAIN when nothing more is there now, -EINPROGRESS when part of a
 * sealed record came, or -errno. */
static ssize_t nb_recv(struct conn *c, uint8_t *dst, size_t len)
{
	ssize_t n = c->seal_rx ? seal_recv(c, dst, len, MSG_DONTWAIT)
			       : recv(c->fd, dst, len, MSG_DONTWAIT);

	if (n >= 0)
		return n;
	return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

static void set_more_in(struct conn *c, bool more)
{
	if (more != c->more_in)
		c->w->readers += more ? 1 : -1;
	c->more_in = more;
	if (more)
		c->w->bulk_idle = false;
}

/* Serves what rx holds, then receives and serves until the socket is
 * empty, the connection's output is full, or it had a turn's worth (one
 * bulk slice of bytes: a client streaming large writes must not hold the
 * worker's other clients up for longer than a large reply may). Returns 0
 * or -errno (drop). */
static int conn_input(struct conn *c)
{
	size_t turn = c->srv->o.bulk_slice ? c->srv->o.bulk_slice : EM_MAX_IO, got = 0;

	set_more_in(c, false);
	for (;;) {
		size_t rpos0 = c->rpos;
		ssize_t n;
		int rc = serve_buffered(c);

		if (rc)
			return rc;
		/* A message was consumed: what is left starts the next one,
		 * whose deadline starts now. */
		if (c->rpos != rpos0)
			c->msg_deadline = 0;
		if (c->stalled || c->handoff || c->eof)
			break;
		if (got >= turn) {
			set_more_in(c, true);
			break;
		}
		rx_compact(c);
		if (c->need > c->rxcap) {
			uint8_t *r = realloc(c->rx, c->need);
			if (!r)
				return -ENOMEM;
			c->rx = r;
			c->rxcap = c->need;
		}
		n = nb_recv(c, c->rx + c->wpos, c->rxcap - c->wpos);
		if (n == -EINTR || n == -EINPROGRESS)
			continue;
		if (n == -EAGAIN)
			break;
		if (n == 0) {
			c->eof = true;
			if (c->wpos || (c->seal_rx && em_seal_partial(c->seal_rx)))
				em_log(EM_LOG_WARN, "%s: disconnected mid-request", c->peer);
			break;
		}
		if (n < 0)
			return (int)n;
		count(&c->bytes_in, (uint64_t)n);
		c->wpos += (size_t)n;
		got += (size_t)n;
		c->last_rx = em_now_ns();
	}
	/* Part of a message (or of a record) is buffered: the whole of it
	 * must arrive within the I/O timeout of its first bytes. */
	if (!c->msg_deadline && (c->wpos > c->rpos || (c->seal_rx && em_seal_partial(c->seal_rx))))
		c->msg_deadline = em_now_ns() + (uint64_t)c->srv->o.io_timeout_ms * 1000000;
	return 0;
}

/* Input and small output until neither can go on without an event or a
 * bulk turn. */
static int conn_kick(struct conn *c)
{
	for (;;) {
		int rc = conn_input(c);
		unsigned nq0 = c->nq;

		if (rc || c->handoff)
			return rc;
		if ((rc = out_push(c, 0)))
			return rc;
		/* requests waited for output of which some has gone now: serve
		 * them (what waits for a large reply waits for a bulk turn) */
		if (!c->stalled || c->blocked || c->nq == nq0)
			return 0;
	}
}

static void *baseline_main(void *arg);

/* After the connection was served a little: drops it, hands it to a thread
 * of its own, or sets what its socket is watched for. */
static void worker_after(struct conn *c, int rc)
{
	pthread_attr_t attr;
	pthread_t t;
	uint32_t ev;

	if (!rc && c->eof && !c->nq && c->recoff == c->reclen)
		rc = -ECONNRESET; /* a plain close: all answered */
	if (rc) {
		if (rc != -ECONNRESET && rc != -EPIPE)
			out_push(c, 0); /* a last error reply, if the socket takes it */
		worker_forget(c);
		conn_finish(c, rc == -ECONNRESET && c->eof ? 0 : rc, true);
		return;
	}
	if (c->handoff) {
		worker_forget(c);
		c->w = NULL;
		fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		pthread_attr_setstacksize(&attr, 256 << 10);
		if (pthread_create(&t, &attr, baseline_main, c) != 0)
			conn_finish(c, -EAGAIN, true);
		pthread_attr_destroy(&attr);
		return;
	}
	ev = (c->eof || c->stalled ? 0 : EPOLLIN) | (c->blocked ? EPOLLOUT : 0);
	if ((rc = wev_set(c, ev))) {
		worker_forget(c);
		conn_finish(c, rc, true);
	}
}

static void worker_adopt(struct worker *w)
{
	struct conn *in;

	pthread_mutex_lock(&w->lock);
	in = w->inbox;
	w->inbox = NULL;
	pthread_mutex_unlock(&w->lock);
	while (in) {
		struct conn *c = in;
		int rc;

		in = c->next_in;
		if (w->nc == w->capc) {
			int cap = w->capc ? 2 * w->capc : 64;
			struct conn **v = realloc(w->cv, (size_t)cap * sizeof(*v));
			if (!v) {
				conn_finish(c, -ENOMEM, true);
				continue;
			}
			w->cv = v;
			w->capc = cap;
		}
		if ((rc = wev_add(c))) {
			conn_finish(c, rc, true);
			continue;
		}
		c->widx = w->nc;
		w->cv[w->nc++] = c;
		c->last_rx = em_now_ns();
		worker_after(c, conn_kick(c));
	}
}

/* Deadlines: a message begun must be whole within the I/O timeout, and a
 * client silent for --idle-timeout is dropped. */
static void worker_tick(struct worker *w, uint64_t now)
{
	const struct em_server_opts *o = &w->srv->o;

	/* downwards: a connection dropped at i takes the last one's place,
	 * which was looked at already */
	for (int i = w->nc - 1; i >= 0; i--) {
		struct conn *c = w->cv[i];

		/* (not while the node itself holds the rest back: stalled) */
		if (c->msg_deadline && !c->stalled && now >= c->msg_deadline) {
			em_log(EM_LOG_WARN, "%s: request incomplete after %d ms; closing", c->peer,
			       o->io_timeout_ms);
			worker_after(c, -ETIMEDOUT);
		} else if (o->idle_timeout_s > 0 && !c->nq && now > c->last_rx &&
			   now - c->last_rx >= (uint64_t)o->idle_timeout_s * 1000000000ull) {
			em_log(EM_LOG_WARN, "%s: idle for %d s; closing", c->peer,
			       o->idle_timeout_s);
			worker_after(c, -ETIMEDOUT);
		}
	}
}

/* One bulk turn: the next connection (round robin) with a large reply that
 * its socket can take gets one slice sent. */
static void worker_bulk(struct worker *w)
{
	size_t slice = w->srv->o.bulk_slice ? w->srv->o.bulk_slice : EM_MAX_IO;

	for (int k = 0; k < w->nc; k++) {
		int i = (w->rr + k) % w->nc;
		struct conn *c = w->cv[i];
		int rc;

		if (!c->more_in && (!c->bulk_queued || c->blocked))
			continue;
		w->rr = i + 1;
		rc = out_push(c, slice);
		worker_after(c, rc ? rc : conn_kick(c));
		return;
	}
	w->bulk_idle = true;
}

/* Hands c to worker w through its inbox. */
static void worker_push(struct worker *w, struct conn *c)
{
	uint64_t one = 1;

	c->w = w;
	__atomic_fetch_add(&w->n, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&w->lock);
	c->next_in = w->inbox;
	w->inbox = c;
	pthread_mutex_unlock(&w->lock);
	if (write(w->efd, &one, sizeof(one)) < 0)
		em_log(EM_LOG_ERR, "cannot wake a worker: %s", strerror(errno));
}

/* The worker a new connection should go to: the fewest bulk streams, then
 * the least traffic (in MiB over the last look, so that small requests'
 * noise does not count), then the fewest connections. A new connection's
 * own traffic is not known yet; whichever it turns out to be, a worker
 * without bulk streams serves it best, and balancing corrects the rest. */
static struct worker *worker_pick(struct em_server *s, const struct worker *skip)
{
	struct worker *best = NULL;
	uint64_t bk = 0;

	for (int i = 0; i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];
		uint64_t nb = (uint64_t)__atomic_load_n(&w->nbulk, __ATOMIC_RELAXED);
		uint64_t mib = __atomic_load_n(&w->recent_bytes, __ATOMIC_RELAXED) >> 20;
		uint64_t n = (uint64_t)__atomic_load_n(&w->n, __ATOMIC_RELAXED);
		/* nb and mib are far below 2^24 and n below 2^16 */
		uint64_t key = EM_MIN(nb, 0xffu) << 56 | EM_MIN(mib, 0xffffffu) << 32 | n;

		if (w != skip && (!best || key < bk)) {
			best = w;
			bk = key;
		}
	}
	return best;
}

/* Whether c can move to another worker now: nothing of it is half done
 * (buffered input, queued output, a partial record), so that the other
 * worker starts it afresh, and it did not move lately. */
static bool conn_movable(const struct conn *c, uint64_t now)
{
	return now - c->moved_ns >= MOVE_GAP_NS && !c->nq && !c->bulk_queued && !c->more_in &&
	       !c->blocked && !c->stalled && !c->eof && !c->handoff && c->rpos == c->wpos &&
	       !c->msg_deadline && c->recoff == c->reclen &&
	       !(c->seal_rx && (em_seal_partial(c->seal_rx) || em_seal_ready(c->seal_rx)));
}

/* Sorts w's connections by their traffic since the last look, publishes
 * w's load, and moves its small-request connections to a worker without
 * bulk streams when w has some: a 4 KiB read that waits for another
 * client's 256 KiB slice on its own worker need not wait at all on a free
 * one. */
static void worker_balance(struct worker *w, uint64_t now)
{
	struct em_server *s = w->srv;
	struct conn *small[MOVE_MAX];
	struct worker *to;
	int nsmall = 0, nbulk = 0;
	uint64_t bytes = 0;

	for (int i = 0; i < w->nc; i++) {
		struct conn *c = w->cv[i];
		uint64_t b = __atomic_load_n(&c->bytes_in, __ATOMIC_RELAXED) +
			     __atomic_load_n(&c->bytes_out, __ATOMIC_RELAXED);
		uint64_t db = b - c->bal_bytes;
		uint32_t dops = c->ops - c->bal_ops;

		c->bal_bytes = b;
		c->bal_ops = c->ops;
		bytes += db;
		if (db > (uint64_t)BULK_AVG * (dops ? dops : 1))
			nbulk++;
		else if (dops && nsmall < MOVE_MAX && conn_movable(c, now))
			small[nsmall++] = c;
	}
	__atomic_store_n(&w->recent_bytes, bytes, __ATOMIC_RELAXED);
	__atomic_store_n(&w->nbulk, nbulk, __ATOMIC_RELAXED);
	if (!nbulk || !nsmall || !(to = worker_pick(s, w)) ||
	    __atomic_load_n(&to->nbulk, __ATOMIC_RELAXED))
		return;
	for (int i = 0; i < nsmall; i++) {
		worker_forget(small[i]);
		small[i]->moved_ns = now;
		worker_push(to, small[i]);
	}
	__atomic_fetch_add(&s->moves, (uint64_t)nsmall, __ATOMIC_RELAXED);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct em_spin spin = { .budget_ns = (uint64_t)w->srv->o.poll_us * 1000 };
	uint64_t next_tick = 0, next_balance = 0;
	struct wev ev[64];

	for (;;) {
		uint64_t now = em_now_ns();
		int n = 0;

		if ((w->bulkers || w->readers) && !w->bulk_idle) {
			n = wev_wait(w, ev, EM_ARRAY_SIZE(ev), 0); /* a bulk turn is due */
		} else {
			/* Adaptive, bounded spinning (em_spin: it yields the CPU
			 * past a tenth of its budget, and is not tried after a
			 * long wait): a worker that spun for poll_us flat out
			 * took the core its clients needed and doubled their
			 * latency on two cores. Nor is it tried while tasks
			 * wait for a CPU (spin_allowed). */
			if (spin_allowed(w->srv, now) && em_spin_begin(&spin, now))
				while ((n = wev_wait(w, ev, EM_ARRAY_SIZE(ev), 0)) == 0 &&
				       em_spin_again(&spin, em_now_ns()))
					;
			/* a worker with bulk streams looks again soon, so the
			 * others do not keep avoiding it once they ended */
			if (n <= 0)
				n = wev_wait(w, ev, EM_ARRAY_SIZE(ev),
					     __atomic_load_n(&w->nbulk, __ATOMIC_RELAXED)
						     ? BALANCE_MS
						     : TICK_MS);
			em_spin_end(&spin, em_now_ns());
		}
		now = em_now_ns();
		for (int i = 0; i < n; i++) {
			struct conn *c = ev[i].c;
			uint64_t v;

			if (!c) {
				bool quit;
				if (read(w->efd, &v, sizeof(v)) < 0)
					v = 0;
				pthread_mutex_lock(&w->lock);
				quit = w->quit;
				pthread_mutex_unlock(&w->lock);
				if (quit)
					return NULL;
				worker_adopt(w);
				continue;
			}
			if (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
				c->blocked = false;
				w->bulk_idle = false;
			}
			worker_after(c, conn_kick(c));
		}
		if ((w->bulkers || w->readers) && !w->bulk_idle)
			worker_bulk(w);
		if (now >= next_tick) {
			worker_tick(w, now);
			next_tick = now + TICK_MS * 1000000ull;
		}
		if (now >= next_balance) {
			worker_balance(w, now);
			next_balance = now + BALANCE_MS * 1000000ull;
		}
	}
}

/* An authenticated connection to the least busy worker. */
static int worker_give(struct em_server *s, struct conn *c)
{
	struct worker *w = worker_pick(s, NULL);

	/* the server starts at least one worker; say so rather than let a
	 * NULL through (an optimised build proves the empty case reachable) */
	if (!w)
		return -EAGAIN;
	if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK))
		return -errno;
	worker_push(w, c);
	return 0;
}

/* --io uring: the worker's ring (-ENOTSUP where liburing was missing at
 * build time). */
static int worker_ring(struct worker *w)
{
#ifdef EM_HAVE_URING
	int rc = io_uring_queue_init(RING_ENTRIES, &w->ring, RING_FLAGS);

	if (rc == -EINVAL) /* a kernel before 5.19: completions interrupt, then */
		rc = io_uring_queue_init(RING_ENTRIES, &w->ring, 0);
	w->uring = !rc;
	return rc;
#else
	(void)w;
	return -ENOTSUP;
#endif
}

static void worker_close(struct worker *w)
{
	if (w->ep >= 0)
		close(w->ep);
	if (w->efd >= 0)
		close(w->efd);
#ifdef EM_HAVE_URING
	if (w->uring)
		io_uring_queue_exit(&w->ring); /* cancels the polls still armed */
	free(w->fdmap);
#endif
}

static void workers_stop(struct em_server *s)
{
	uint64_t one = 1;

	for (int i = 0; i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];

		pthread_mutex_lock(&w->lock);
		w->quit = true;
		pthread_mutex_unlock(&w->lock);
		if (write(w->efd, &one, sizeof(one)) < 0)
			em_log(EM_LOG_ERR, "cannot wake a worker: %s", strerror(errno));
		pthread_join(w->t, NULL);
		worker_close(w);
		free(w->cv);
		pthread_mutex_destroy(&w->lock);
	}
	free(s->workers);
	s->workers = NULL;
	s->nworkers = 0;
}

static int workers_start(struct em_server *s)
{
	int n = s->o.workers ? s->o.workers : (int)sysconf(_SC_NPROCESSORS_ONLN);

	if (n <= 0)
		return 0; /* -1: a thread per connection */
	if (!(s->workers = calloc((size_t)n, sizeof(*s->workers))))
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		struct worker *w = &s->workers[i];
		struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL };
		int rc = 0;

		w->srv = s;
		w->ep = -1;
		pthread_mutex_init(&w->lock, NULL);
		if ((w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
			rc = -errno;
		else if (s->o.io == EM_IO_URING)
			rc = worker_ring(w);
		else if ((w->ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
			 epoll_ctl(w->ep, EPOLL_CTL_ADD, w->efd, &e))
			rc = -errno;
		if (!rc)
			rc = -pthread_create(&w->t, NULL, worker_main, w);
		if (rc) {
			em_log(EM_LOG_ERR, "cannot start a worker (%s): %s",
			       s->o.io == EM_IO_URING ? "io_uring" : "epoll", strerror(-rc));
			worker_close(w);
			pthread_mutex_destroy(&w->lock);
			s->nworkers = i;
			workers_stop(s);
			return rc;
		}
		s->nworkers = i + 1;
	}
	em_log(EM_LOG_DEBUG, "%d workers (%s) serve the clients", n,
	       s->o.io == EM_IO_URING ? "io_uring" : "epoll");
	return 0;
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	int arc = authenticate(c), rc = arc;

	if (!arc && c->srv->nworkers && (rc = worker_give(c->srv, c)) == 0)
		return NULL;
	if (!rc)
		rc = conn_loop(c);
	conn_finish(c, rc, !arc);
	return NULL;
}

/* A worker's connection that asked for the raw baseline stream: it blocks
 * on its socket, so it gets a thread for the rest of its life. */
static void *baseline_main(void *arg)
{
	struct conn *c = arg;
	int rc = out_push(c, SIZE_MAX); /* the replies queued before it */

	c->handoff = false;
	if (!rc)
		rc = do_baseline(c, &c->handoff_h);
	if (!rc)
		rc = conn_loop(c);
	conn_finish(c, rc, true);
	return NULL;
}

static struct conn *conn_new(struct em_server *s, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->srv = s;
	c->spin.budget_ns = (uint64_t)s->o.poll_us * 1000;
	c->fd = fd;
	c->rx = malloc(RX_CAP);
	c->tx = malloc(TX_CAP);
	c->rxcap = RX_CAP;
	c->txcap = TX_CAP;
	if (!c->rx || !c->tx) {
		conn_free(c);
		return NULL;
	}
	return c;
}

/* Admission, under s->lock. Connections that have not authenticated yet get
 * a budget of their own (max_pending), at most max_pending_per_source of it
 * per address, so strangers can neither take the members' slots nor crowd
 * out each other's sources. When the budget is full the oldest stranger is
 * shut down to make room: a member's handshake takes microseconds, so the
 * newest connection is the likeliest to be one. Returns NULL to admit, or
 * why the connection is refused. */
static const char *admit_locked(struct em_server *s, const char *src)
{
	struct conn *oldest = NULL;
	int pending = 0, from_src = 0;

	for (struct conn *c = s->conns; c; c = c->next) {
		if (c->authed || c->evicted)
			continue;
		pending++;
		from_src += !strcmp(c->src, src);
		oldest = c; /* the list is newest first */
	}
	if (from_src >= s->o.max_pending_per_source)
		return "too many unauthenticated connections from this address";
	/* evicted connections are still listed until their threads leave */
	if (s->nconns >= s->o.max_clients + 2 * s->o.max_pending)
		return "too many connections";
	if (pending >= s->o.max_pending && oldest) {
		oldest->evicted = true;
		shutdown(oldest->fd, SHUT_RDWR);
	}
	return NULL;
}

static void accept_one(struct em_server *s)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[48], serv[8];
	pthread_attr_t attr;
	pthread_t t;
	struct conn *c;
	const char *why;
	int one = 1, fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), serv, sizeof(serv),
			NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		snprintf(host, sizeof(host), "?"), snprintf(serv, sizeof(serv), "?");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = conn_new(s, fd);
	if (!c) {
		close(fd);
		return;
	}
	snprintf(c->src, sizeof(c->src), "%s", host);
	snprintf(c->peer, sizeof(c->peer), "%s:%s", host, serv);
	pthread_mutex_lock(&s->lock);
	why = admit_locked(s, c->src);
	if (!why) {
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		s->nconns++;
	}
	pthread_mutex_unlock(&s->lock);
	if (why) {
		peer_log(s, EM_LOG_WARN, "%s: connection refused: %s", c->peer, why);
		close(fd);
		conn_free(c);
		return;
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 << 10);
	if (pthread_create(&t, &attr, conn_main, c) != 0) {
		em_log(EM_LOG_ERR, "cannot start a connection thread");
		pthread_mutex_lock(&s->lock);
		if (c->prev)
			c->prev->next = c->next;
		else
			s->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		s->nconns--;
		pthread_mutex_unlock(&s->lock);
		close(fd);
		conn_free(c);
	}
	pthread_attr_destroy(&attr);
}

static int listen_on(struct em_server *s)
{
	char host[256], port[8];
	uint16_t p;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai;
	struct sockaddr_storage bound;
	socklen_t bl = sizeof(bound);
	int rc, one = 1, fd;

	rc = em_parse_addr(s->o.listen, host, sizeof(host), &p);
	if (rc) {
		em_log(EM_LOG_ERR, "bad --listen address '%s'", s->o.listen);
		return rc;
	}
	snprintf(port, sizeof(port), "%u", p);
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc) {
		em_log(EM_LOG_ERR, "cannot resolve '%s': %s", host, gai_strerror(rc));
		return -EINVAL;
	}
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, LISTEN_BACKLOG)) {
		rc = -errno;
		em_log(EM_LOG_ERR, "cannot listen on %s: %s", s->o.listen, strerror(-rc));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return rc;
	}
	freeaddrinfo(ai);
	getsockname(fd, (struct sockaddr *)&bound, &bl);
	p = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
					      : ((struct sockaddr_in *)&bound)->sin_port);
	s->lfd = fd;
	em_log(EM_LOG_INFO, "listening on tcp://%s:%u", host, p);
	if (s->o.listening)
		s->o.listening(s->o.listening_arg, host, p);
	if (s->o.port_file) {
		char tmp[4096], num[16];
		int pf, n = snprintf(num, sizeof(num), "%u\n", p);
		/* written to a temporary name and renamed, so a reader never sees
		 * half a number */
		snprintf(tmp, sizeof(tmp), "%s.tmp", s->o.port_file);
		pf = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (pf < 0 || write(pf, num, (size_t)n) != n || close(pf) ||
		    rename(tmp, s->o.port_file)) {
			em_log(EM_LOG_ERR, "cannot write port file %s", s->o.port_file);
			return -EIO;
		}
	}
	return 0;
}

static double gib(uint64_t v)
{
	return (double)v / (double)(1ull << 30);
}

/* A capacity the machine or the node's cgroup cannot back would start fine
 * and be killed mid-write once clients fill it, losing every region; refuse
 * it unless the operator says --overcommit. Locked memory is touched at
 * start, so a --mlock capacity beyond the room is refused even then. Free
 * explicit huge pages back a capacity on their own (the store takes them
 * first, and they are reserved when mapped). */
static int check_capacity(const struct em_server_opts *o)
{
	struct em_memroom m;
	uint64_t room, mapped = (o->capacity + (2ull << 20) - 1) & ~((2ull << 20) - 1);

	if ((o->overcommit && !o->mlock) || em_memroom_read(&m))
		return 0;
	room = em_memroom_room(&m);
	if (m.huge_free >= mapped || o->capacity <= room)
		return 0;
	if (m.cg_limited)
		em_log(EM_LOG_ERR,
		       "capacity %.2f GiB is more than this node can hold: "
		       "MemAvailable %.2f GiB of %.2f GiB; cgroup %s allows %.2f GiB of which "
		       "%.2f GiB is in use%s",
		       gib(o->capacity), gib(m.avail), gib(m.total), m.cg_path, gib(m.cg_limit),
		       gib(m.cg_usage),
		       o->mlock ? " (--mlock locks it all at start)"
				: "; --overcommit starts anyway");
	else
		em_log(EM_LOG_ERR,
		       "capacity %.2f GiB is more than this machine can hold: "
		       "MemAvailable %.2f GiB of %.2f GiB%s",
		       gib(o->capacity), gib(m.avail), gib(m.total),
		       o->mlock ? " (--mlock locks it all at start)"
				: "; --overcommit starts anyway");
	return -ENOMEM;
}

int em_server_create(struct em_server **out, const struct em_server_opts *o)
{
	struct em_server *s = calloc(1, sizeof(*s));
	int rc;

	if (!s)
		return -ENOMEM;
	s->o = *o;
	s->lfd = -1;
	s->wakefd = -1;
	if (s->o.max_clients <= 0)
		s->o.max_clients = 1024;
	if (s->o.io_timeout_ms <= 0)
		s->o.io_timeout_ms = 30000;
	if (s->o.max_pending <= 0)
		s->o.max_pending = 256;
	if (s->o.max_pending_per_source <= 0)
		s->o.max_pending_per_source = 32;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->rl_lock, NULL);
	pthread_mutex_init(&s->gate_lock, NULL);
	pthread_cond_init(&s->idle, NULL);
	s->spin_ok = true;
	s->psi_fd = open("/proc/pressure/cpu", O_RDONLY | O_CLOEXEC);
	if (s->psi_fd < 0)
		em_log(EM_LOG_INFO,
		       "no CPU pressure (/proc/pressure/cpu: %s): spinning is not paused "
		       "when tasks wait for a CPU",
		       strerror(errno));
	s->start_ns = em_now_ns();
	em_random(s->node_id, sizeof(s->node_id));
	if (o->secret_file) {
		rc = em_key_load(o->secret_file, s->key);
		if (rc) {
			em_log(EM_LOG_ERR, "cannot use secret file '%s': %s%s", o->secret_file,
			       em_strerror(rc),
			       rc == -EINVAL  ? " (needs at least 16 bytes)"
			       : rc == -EPERM ? " (group or others may read it: chmod 600 it)"
					      : "");
			free(s);
			return rc;
		}
	}
	if ((rc = check_capacity(o))) {
		free(s);
		return rc;
	}
	rc = em_store_create(&s->st, o->capacity, o->mlock);
	if (rc) {
		em_log(EM_LOG_ERR, "cannot reserve %llu bytes%s: %s",
		       (unsigned long long)o->capacity, o->mlock ? " locked" : "", em_strerror(rc));
		free(s);
		return rc;
	}
	if (o->ox && (rc = em_oxs_create(o->ox, s->st, &s->ox))) {
		em_store_destroy(s->st);
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

int em_server_run(struct em_server *s)
{
	struct em_store_stats st;
	struct rlimit rl;
	sigset_t set;
	int sfd, rc;

	/* a descriptor per client: the usual soft limit of 1024 would refuse
	 * the thousandth, while max_clients allows more */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	rc = listen_on(s);
	if (rc)
		return rc;

	em_store_stats(s->st, &st);
	em_log(EM_LOG_INFO, "exporting %llu bytes (%s pages%s)", (unsigned long long)st.capacity,
	       st.huge ? "2 MiB huge" : "4 KiB + THP", s->o.mlock ? ", locked" : "");
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0)
		return -errno;
	/* a session that starts to linger must be timed even if nobody
	 * connects again: its thread wakes the acceptor through this */
	s->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->wakefd < 0 || (rc = workers_start(s))) {
		rc = s->wakefd < 0 ? -errno : rc;
		em_log(EM_LOG_ERR, "cannot start serving: %s", em_strerror(rc));
		if (s->wakefd >= 0)
			close(s->wakefd);
		close(sfd);
		return rc;
	}
	for (;;) {
		struct pollfd p[3] = { { s->lfd, POLLIN, 0 },
				       { sfd, POLLIN, 0 },
				       { s->wakefd, POLLIN, 0 } };
		uint64_t v;
		int lingering;

		pthread_mutex_lock(&s->lock);
		lingering = s->nlinger;
		pthread_mutex_unlock(&s->lock);
		/* lingering sessions are ended within a second of their time */
		if (poll(p, 3, lingering ? 1000 : -1) < 0 && errno != EINTR)
			break;
		if ((p[2].revents & POLLIN) && read(s->wakefd, &v, sizeof(v)) < 0)
			v = 0; /* drained already: the next poll times the sweep */
		if (lingering)
			linger_sweep(s, false);
		if (p[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof(si)) > 0)
				em_log(EM_LOG_INFO, "signal %u: stopping", si.ssi_signo);
			break;
		}
		if (p[0].revents & POLLIN)
			accept_one(s);
	}
	close(sfd);
	close(s->lfd);
	s->lfd = -1;
	/* Shutting down the read side makes each connection thread see end of
	 * stream after it has served what it already received, so in-flight
	 * requests finish and their replies still go out. */
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	for (struct conn *c = s->conns; c; c = c->next)
		shutdown(c->fd, SHUT_RD);
	while (s->nconns > 0)
		pthread_cond_wait(&s->idle, &s->lock);
	pthread_mutex_unlock(&s->lock);
	workers_stop(s);
	linger_sweep(s, true);
	close(s->wakefd);
	s->wakefd = -1;
	em_log(EM_LOG_INFO, "stopped");
	return 0;
}

void em_server_destroy(struct em_server *s)
{
	if (!s)
		return;
	em_oxs_destroy(s->ox);
	em_store_destroy(s->st);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->rl_lock);
	pthread_mutex_destroy(&s->gate_lock);
	pthread_cond_destroy(&s->idle);
	if (s->psi_fd >= 0)
		close(s->psi_fd);
	free(s);
}

void em_server_set_listening(struct em_server *s, void (*fn)(void *, const char *, unsigned),
			     void *arg)
{
	s->o.listening = fn;
	s->o.listening_arg = arg;
}

void em_server_usage(struct em_server *s, uint64_t *capacity, uint64_t *used)
{
	struct em_store_stats st;

	em_store_stats(s->st, &st);
	*capacity = st.capacity;
	*used = st.used;
}

static int count_redundancy(void *arg, const struct em_sregion *r)
{
	uint64_t *count = arg;
	struct em_layout l;

	if (em_layout_decode(r->layout, r->layout_len, &l) || l.red > EM_RED_EC)
		count[0]++;
	else
		count[l.red ? l.red : EM_RED_NONE]++;
	return 0;
}

void em_server_redundancy(struct em_server *s, uint64_t count[4])
{
	memset(count, 0, 4 * sizeof(count[0]));
	em_store_list(s->st, 0, count_redundancy, count);
}

void em_server_node_id(const struct em_server *s, uint8_t id[16])
{
	memcpy(id, s->node_id, 16);
}

struct em_server *em_server_create_for_fuzz(uint64_t capacity)
{
	struct em_server_opts o = { .capacity = capacity, .io_timeout_ms = 1 };
	struct em_server *s;

	em_log_threshold = EM_LOG_ERR;
	return em_server_create(&s, &o) ? NULL : s;
}

void em_server_fuzz_input(struct em_server *s, const uint8_t *data, size_t len)
{
	struct conn *c = conn_new(s, -1);

	if (!c)
		return;
	c->sess = session_new(s, NULL);
	if (c->sess) {
		len = EM_MIN(len, RX_CAP);
		memcpy(c->rx, data, len);
		c->wpos = len;
		serve_buffered(c);
		session_detach(s, c->sess, false);
	}
	conn_free(c);
}
