/*
 * endpoint.c - the memory side of OmniXtend: serves TL-UL and TL-UH
 * requests from known peers against windows of local memory.
 *
 * A window maps an OmniXtend address range onto caller memory for exactly
 * one peer MAC; the control path (TCP session or --ox-export) adds and
 * removes them.  Frames from a MAC with no window are dropped and counted
 * without creating any state, so strangers cannot fill our tables.  A known
 * peer always gets an answer: a request outside its windows, misaligned, or
 * of a size we do not serve is answered with the denied bit.
 *
 * Writes and atomics are applied when their frame is accepted (go-back-N
 * guarantees each is seen once); the response waits in a per-peer queue
 * until D-channel credit and the retransmit ring let it go.  A Get is read
 * from memory only when its response is written into the frame, straight
 * from the window into the frame buffer.  The request's A credit is returned
 * when its response leaves, so the queue can never hold more than the credit
 * we granted.  Atomics are __atomic builtins on the window memory, so they
 * are exact against local threads and every peer at once.
 *
 * A MAC the control path binds (ox_endpoint_bind: an ethermem session
 * vouches for it) is held to its sequence state, and, when the session
 * negotiated it, to a tag on every frame (tag.c): a frame failing either
 * is counted and dropped before it can change anything.  Windows of other
 * peers (--ox-export, for requesters that know nothing of ethermem) are
 * served as the specification has it, on the source MAC alone.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"
#include "ox/conn.h"

#define OX_EP_MAX_PEERS 64
#define OX_EP_RXBUF_A 16384 /* 16 writes of 8 KiB in flight per peer */
/* C and E carry little for a node that caches nothing, and B and D nothing
 * at all (a requester does not send on them), but every channel gets a grant
 * at open: ETRI's C endpoint waits for one on each of A..E before its first
 * request (A, C and E in its build for Western Digital's endpoint).  Messages
 * on B and D are counted and dropped, their credit returned.  2^8 of it:
 * some peers take a grant as their new total rather than an increase, and
 * still end above the 128 that 1.1 starts them with (the first grant is the
 * largest power of two of what is owed, 384 - 128 = 256). */
#define OX_EP_RXBUF_SMALL 384

struct ox_pend {
	uint8_t opcode, size, denied, in_chan, has_old;
	uint16_t in_flits;
	uint32_t source;
	uint64_t addr;
	uint64_t old; /* atomics: the value before, memory byte order */
};

struct ox_peer {
	struct ox_conn c;
	struct ox_pend *q;
	unsigned qcap, qhead, qcount;
	bool parked; /* bound, given up: not retried until it is heard from */
};

struct ox_win {
	struct ox_window w;
	bool used;
};

/* A MAC the control path vouches for, and how its frames are checked. */
struct ox_bound {
	uint8_t mac[6];
	bool used, tag;
	uint8_t tx[OX_TAG_KEYLEN], rx[OX_TAG_KEYLEN];
};

struct ox_endpoint {
	/* windows change from the control path's thread while run() serves
	 * frames in another: held per poll, so uncontended in steady state */
	pthread_mutex_t lock;
	struct ox_opts o;
	struct ox_link *link;
	struct ox_win *win;
	unsigned nwin;
	struct ox_bound *bnd;
	unsigned nbnd;
	struct ox_peer *peer[OX_EP_MAX_PEERS];
	struct ox_stats st;
	uint32_t rxbuf[6];
	uint64_t next_due;
	struct ox_frame fr;
	uint8_t buf[OX_ETH_HLEN + 65536 + 64]; /* the largest frame a link has */
};

int ox_endpoint_create(const struct ox_opts *o, struct ox_link *link, struct ox_endpoint **out)
{
	struct ox_endpoint *ep = calloc(1, sizeof(*ep));
	if (!ep)
		return -ENOMEM;
	if (o)
		ep->o = *o;
	ox_opts_resolve(&ep->o, link);
	if (!ep->o.giveup_rto)
		ep->o.giveup_rto = 32;
	ep->link = link;
	pthread_mutex_init(&ep->lock, NULL);
	uint32_t a = ep->o.rx_credit ? ep->o.rx_credit : OX_EP_RXBUF_A;
	ep->rxbuf[OX_CH_A] = a;
	for (int ch = OX_CH_B; ch <= OX_CH_E; ch++)
		ep->rxbuf[ch] = OX_EP_RXBUF_SMALL;
	*out = ep;
	return 0;
}

static void peer_free(struct ox_endpoint *ep, int i)
{
	struct ox_peer *p = ep->peer[i];
	if (!p)
		return;
	ox_conn_free(&p->c);
	free(p->q);
	free(p);
	ep->peer[i] = NULL;
}

void ox_endpoint_destroy(struct ox_endpoint *ep)
{
	if (!ep)
		return;
	for (int i = 0; i < OX_EP_MAX_PEERS; i++)
		peer_free(ep, i);
	pthread_mutex_destroy(&ep->lock);
	if (ep->bnd)
		ox_tag_wipe(ep->bnd, ep->nbnd * sizeof(*ep->bnd));
	free(ep->bnd);
	free(ep->win);
	free(ep);
}

static int add_window(struct ox_endpoint *ep, const struct ox_window *w)
{
	if (!w->len || !w->mem || w->base + w->len < w->base)
		return -EINVAL;
	/* a peer's windows never overlap: an address means one thing */
	for (unsigned k = 0; k < ep->nwin; k++) {
		const struct ox_window *o = &ep->win[k].w;
		if (ep->win[k].used && !memcmp(o->mac, w->mac, 6) && w->base < o->base + o->len &&
		    o->base < w->base + w->len)
			return -EEXIST;
	}
	unsigned i;
	for (i = 0; i < ep->nwin && ep->win[i].used; i++)
		;
	if (i == ep->nwin) {
		struct ox_win *n = realloc(ep->win, (ep->nwin + 1) * sizeof(*n));
		if (!n)
			return -ENOMEM;
		ep->win = n;
		ep->nwin++;
	}
	ep->win[i].w = *w;
	if (!ep->win[i].w.flags)
		ep->win[i].w.flags = OX_WIN_READ | OX_WIN_WRITE;
	ep->win[i].used = true;
	return (int)i;
}

static bool mac_known(const struct ox_endpoint *ep, const uint8_t mac[6])
{
	for (unsigned i = 0; i < ep->nwin; i++)
		if (ep->win[i].used && !memcmp(ep->win[i].w.mac, mac, 6))
			return true;
	return false;
}

static int remove_window(struct ox_endpoint *ep, int id)
{
	if (id < 0 || (unsigned)id >= ep->nwin || !ep->win[id].used)
		return -ENOENT;
	ep->win[id].used = false;
	uint8_t mac[6];
	memcpy(mac, ep->win[id].w.mac, 6);
	/* a peer left with no window is forgotten: its next session starts fresh */
	if (!mac_known(ep, mac))
		for (int i = 0; i < OX_EP_MAX_PEERS; i++)
			if (ep->peer[i] && !memcmp(ep->peer[i]->c.peer, mac, 6))
				peer_free(ep, i);
	return 0;
}

int ox_endpoint_add_window(struct ox_endpoint *ep, const struct ox_window *w)
{
	pthread_mutex_lock(&ep->lock);
	int r = add_window(ep, w);
	pthread_mutex_unlock(&ep->lock);
	return r;
}

int ox_endpoint_remove_window(struct ox_endpoint *ep, int id)
{
	pthread_mutex_lock(&ep->lock);
	int r = remove_window(ep, id);
	pthread_mutex_unlock(&ep->lock);
	return r;
}

int ox_endpoint_window(struct ox_endpoint *ep, int id, struct ox_window *out)
{
	int r = -ENOENT;
	pthread_mutex_lock(&ep->lock);
	if (id >= 0 && (unsigned)id < ep->nwin && ep->win[id].used) {
		*out = ep->win[id].w;
		r = 0;
	}
	pthread_mutex_unlock(&ep->lock);
	return r;
}

static struct ox_bound *bound_find(const struct ox_endpoint *ep, const uint8_t mac[6])
{
	for (unsigned i = 0; i < ep->nbnd; i++)
		if (ep->bnd[i].used && !memcmp(ep->bnd[i].mac, mac, 6))
			return &ep->bnd[i];
	return NULL;
}

static void forget_peer(struct ox_endpoint *ep, const uint8_t mac[6])
{
	for (int i = 0; i < OX_EP_MAX_PEERS; i++)
		if (ep->peer[i] && !memcmp(ep->peer[i]->c.peer, mac, 6))
			peer_free(ep, i);
}

int ox_endpoint_bind(struct ox_endpoint *ep, const uint8_t mac[6],
		     const uint8_t tag_tx[OX_TAG_KEYLEN], const uint8_t tag_rx[OX_TAG_KEYLEN])
{
	int r = 0;
	pthread_mutex_lock(&ep->lock);
	struct ox_bound *b = bound_find(ep, mac);
	for (unsigned i = 0; !b && i < ep->nbnd; i++)
		if (!ep->bnd[i].used)
			b = &ep->bnd[i];
	if (!b) {
		struct ox_bound *n = realloc(ep->bnd, (ep->nbnd + 1) * sizeof(*n));
		if (n) {
			ep->bnd = n;
			b = &ep->bnd[ep->nbnd++];
		} else {
			r = -ENOMEM;
		}
	}
	if (b) {
		memset(b, 0, sizeof(*b));
		memcpy(b->mac, mac, 6);
		b->used = true;
		b->tag = tag_tx && tag_rx;
		if (b->tag) {
			memcpy(b->tx, tag_tx, OX_TAG_KEYLEN);
			memcpy(b->rx, tag_rx, OX_TAG_KEYLEN);
		}
	}
	/* the session starts a new connection, whatever the last one left */
	forget_peer(ep, mac);
	pthread_mutex_unlock(&ep->lock);
	return r;
}

void ox_endpoint_unbind(struct ox_endpoint *ep, const uint8_t mac[6])
{
	pthread_mutex_lock(&ep->lock);
	struct ox_bound *b = bound_find(ep, mac);
	if (b)
		ox_tag_wipe(b, sizeof(*b));
	forget_peer(ep, mac);
	pthread_mutex_unlock(&ep->lock);
}

int ox_endpoint_reset_peer(struct ox_endpoint *ep, const uint8_t mac[6])
{
	int r = -ENOENT;
	pthread_mutex_lock(&ep->lock);
	for (int i = 0; i < OX_EP_MAX_PEERS; i++)
		if (ep->peer[i] && !memcmp(ep->peer[i]->c.peer, mac, 6)) {
			peer_free(ep, i);
			r = 0;
		}
	pthread_mutex_unlock(&ep->lock);
	return r;
}

/* Host address of [addr, addr + n) if one window of this peer holds it all. */
static uint8_t *lookup(const struct ox_endpoint *ep, const uint8_t mac[6], uint64_t addr,
		       uint64_t n, unsigned need)
{
	for (unsigned i = 0; i < ep->nwin; i++) {
		const struct ox_window *w = &ep->win[i].w;
		if (!ep->win[i].used || memcmp(w->mac, mac, 6))
			continue;
		if (addr < w->base || addr - w->base > w->len || w->len - (addr - w->base) < n)
			continue;
		if ((w->flags & need) != need)
			return NULL;
		return (uint8_t *)w->mem + (addr - w->base);
	}
	return NULL;
}

static struct ox_peer *peer_get(struct ox_endpoint *ep, const uint8_t mac[6])
{
	int fr = -1;
	for (int i = 0; i < OX_EP_MAX_PEERS; i++) {
		if (ep->peer[i] && !memcmp(ep->peer[i]->c.peer, mac, 6))
			return ep->peer[i];
		if (!ep->peer[i] && fr < 0)
			fr = i;
	}
	if (!mac_known(ep, mac)) {
		ep->st.rej[OX_REJ_UNKNOWN_MAC]++;
		return NULL;
	}
	if (fr < 0) {
		ep->st.rej[OX_REJ_NOPEER]++;
		return NULL;
	}
	struct ox_peer *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	/* every request costs at least two flits of A or C credit */
	p->qcap = (ep->rxbuf[OX_CH_A] + ep->rxbuf[OX_CH_C]) / 2 + 1;
	p->q = calloc(p->qcap, sizeof(*p->q));
	struct ox_opts o = ep->o;
	const struct ox_bound *b = bound_find(ep, mac);
	if (b) {
		o.bound = true;
		o.tag = b->tag;
		memcpy(o.tag_tx, b->tx, OX_TAG_KEYLEN);
		memcpy(o.tag_rx, b->rx, OX_TAG_KEYLEN);
	}
	int e = p->q ? ox_conn_init(&p->c, ep->link, &o, mac, ep->rxbuf, &ep->st) : -ENOMEM;
	ox_tag_wipe(&o, sizeof(o));
	if (e) {
		free(p->q);
		free(p);
		return NULL;
	}
	ep->peer[fr] = p;
	return p;
}

/* ------------------------------------------------------------ atomics */

#define AMO_MINMAX(T, q, v, better)                                                               \
	do {                                                                                      \
		T o_ = __atomic_load_n(q, __ATOMIC_RELAXED);                                      \
		while ((better) && !__atomic_compare_exchange_n(                                  \
					   q, &o_, v, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) \
			;                                                                         \
		old = (uint64_t)o_;                                                               \
	} while (0)

#define AMO(UT, ST)                                                                \
	do {                                                                       \
		UT *q = (UT *)p, v = (UT)operand;                                  \
		if (logic) {                                                       \
			switch (param) {                                           \
			case OX_XOR:                                               \
				old = __atomic_fetch_xor(q, v, __ATOMIC_SEQ_CST);  \
				break;                                             \
			case OX_OR:                                                \
				old = __atomic_fetch_or(q, v, __ATOMIC_SEQ_CST);   \
				break;                                             \
			case OX_AND:                                               \
				old = __atomic_fetch_and(q, v, __ATOMIC_SEQ_CST);  \
				break;                                             \
			case OX_SWAP:                                              \
				old = __atomic_exchange_n(q, v, __ATOMIC_SEQ_CST); \
				break;                                             \
			default:                                                   \
				return -EINVAL;                                    \
			}                                                          \
		} else {                                                           \
			switch (param) {                                           \
			case OX_ADD:                                               \
				old = __atomic_fetch_add(q, v, __ATOMIC_SEQ_CST);  \
				break;                                             \
			case OX_MIN:                                               \
				AMO_MINMAX(UT, q, v, (ST)v < (ST)o_);              \
				break;                                             \
			case OX_MAX:                                               \
				AMO_MINMAX(UT, q, v, (ST)v > (ST)o_);              \
				break;                                             \
			case OX_MINU:                                              \
				AMO_MINMAX(UT, q, v, v < o_);                      \
				break;                                             \
			case OX_MAXU:                                              \
				AMO_MINMAX(UT, q, v, v > o_);                      \
				break;                                             \
			default:                                                   \
				return -EINVAL;                                    \
			}                                                          \
		}                                                                  \
	} while (0)

static int do_atomic(void *p, unsigned size, bool logic, unsigned param, uint64_t operand,
		     uint64_t *out)
{
	uint64_t old = 0;
	switch (size) {
	case 0:
		AMO(uint8_t, int8_t);
		break;
	case 1:
		AMO(uint16_t, int16_t);
		break;
	case 2:
		AMO(uint32_t, int32_t);
		break;
	case 3:
		AMO(uint64_t, int64_t);
		break;
	default:
		return -EINVAL;
	}
	*out = old;
	return 0;
}

/* ------------------------------------------------------------ requests */

static void serve(struct ox_endpoint *ep, struct ox_peer *p, const struct ox_msg *m)
{
	const uint8_t *mac = p->c.peer;
	bool vb = ep->o.verbatim;
	if (m->chan == OX_CH_E)
		return ox_credit_free(&p->c.c, OX_CH_E, m->flits);
	if (m->chan != OX_CH_A && m->chan != OX_CH_C) {
		ep->st.unsupported++;
		return ox_credit_free(&p->c.c, m->chan, m->flits);
	}
	if (p->qcount == p->qcap) {
		/* only a peer ignoring our credit gets here */
		ep->st.overrun++;
		return;
	}
	struct ox_pend *r = &p->q[(p->qhead + p->qcount) % p->qcap];
	memset(r, 0, sizeof(*r));
	r->in_chan = m->chan;
	r->in_flits = m->flits;
	r->source = m->source;
	r->size = m->size;
	r->addr = m->addr;
	if (m->chan == OX_CH_C) {
		if (m->opcode != OX_C_RELEASE && m->opcode != OX_C_RELEASEDATA) {
			ep->st.unsupported++;
			ox_credit_free(&p->c.c, OX_CH_C, m->flits);
			return;
		}
		r->opcode = OX_D_RELEASEACK;
		p->qcount++;
		return;
	}
	uint64_t n = 1ull << m->size;
	bool aligned = !(m->addr & (n - 1));
	uint8_t *host;
	switch (m->opcode) {
	case OX_A_GET:
		r->opcode = OX_D_ACCESSACKDATA;
		r->denied = !aligned || !lookup(ep, mac, m->addr, n, OX_WIN_READ);
		break;
	case OX_A_PUTFULL:
	case OX_A_PUTPARTIAL:
		r->opcode = OX_D_ACCESSACK;
		host = aligned ? lookup(ep, mac, m->addr, n, OX_WIN_WRITE) : NULL;
		if (!host) {
			r->denied = 1;
		} else if (m->opcode == OX_A_PUTFULL) {
			ox_msg_read(m, host, vb);
		} else {
			for (unsigned i = 0; i < n; i++)
				if (ox_msg_mask_bit(m, i))
					host[i] = ox_msg_byte(m, i, vb);
		}
		break;
	case OX_A_ARITH:
	case OX_A_LOGIC: {
		r->opcode = OX_D_ACCESSACKDATA;
		host = aligned && m->size <= 3
			       ? lookup(ep, mac, m->addr, n, OX_WIN_READ | OX_WIN_WRITE)
			       : NULL;
		uint64_t operand = 0;
		if (host && !((uintptr_t)host & (n - 1))) {
			ox_msg_read(m, &operand, vb);
			if (do_atomic(host, m->size, m->opcode == OX_A_LOGIC, m->param, operand,
				      &r->old) == 0) {
				ep->st.atomics++;
				r->has_old = 1;
				break;
			}
		}
		r->denied = 1;
		break;
	}
	case OX_A_INTENT:
		r->opcode = OX_D_HINTACK;
		r->denied = !lookup(ep, mac, m->addr, n, 0);
		break;
	default:
		/* TL-C Acquire: we are not a coherence point; refuse the grant */
		ep->st.unsupported++;
		r->opcode = OX_D_GRANT;
		r->denied = 1;
		break;
	}
	if (r->denied)
		ep->st.denied++;
	p->qcount++;
}

static void respond(struct ox_endpoint *ep, struct ox_peer *p, uint64_t now)
{
	while (p->qcount) {
		struct ox_pend *r = &p->q[p->qhead];
		struct ox_msg m = {
			.chan = OX_CH_D,
			.opcode = r->opcode,
			.size = r->size,
			.source = r->source,
			.addr = r->addr,
			.denied = r->denied,
		};
		if (r->opcode == OX_D_ACCESSACKDATA && r->denied) {
			m.corrupt = 1;
		} else if (r->has_old) {
			m.data = &r->old;
		} else if (r->opcode == OX_D_ACCESSACKDATA) {
			/* the window may have gone since the Get came in */
			m.data = lookup(ep, p->c.peer, r->addr, 1ull << r->size, OX_WIN_READ);
			if (!m.data)
				m.denied = m.corrupt = 1;
		}
		int e = ox_conn_add(&p->c, &m, now);
		if (e == -EAGAIN)
			break;
		if (e < 0)
			ep->st.unsupported++; /* a response our MTU cannot carry */
		p->qhead = (p->qhead + 1) % p->qcap;
		p->qcount--;
		ox_credit_free(&p->c.c, r->in_chan, r->in_flits);
	}
	ox_conn_flush(&p->c, now);
}

static int input(struct ox_endpoint *ep, const uint8_t *f, size_t len, uint64_t now)
{
	ep->st.rx_frames++;
	if (len < OX_ETH_HLEN) {
		ep->st.rej[OX_REJ_SHORT]++;
		return -EPROTO;
	}
	uint16_t et = (uint16_t)(f[12] << 8 | f[13]);
	if (et != ep->o.ethertype || (memcmp(f, ep->link->mac, 6) && !(f[0] & 1))) {
		ep->st.rej[OX_REJ_NOT_FOR_US]++;
		return -EPROTO;
	}
	struct ox_peer *p = peer_get(ep, f + 6);
	if (!p)
		return -EPERM;
	if (ox_conn_untag(&p->c, f, &len))
		return -EPROTO;
	if (ox_frame_decode(f + OX_ETH_HLEN, len - OX_ETH_HLEN, &ep->fr)) {
		ep->st.rej[ep->fr.reject]++;
		return -EPROTO;
	}
	unsigned session = p->c.resets;
	int r = ox_conn_input(&p->c, &ep->fr, now);
	if (p->c.resets != session)
		p->qcount = 0; /* answers to the old session must not reach the new */
	if (r >= 0 && p->parked) {
		/* a frame that passed its checks: the bound peer is back */
		p->parked = false;
		ox_gbn_resume(&p->c.g, now);
	}
	if (r <= 0)
		return r;
	for (unsigned i = 0; i < ep->fr.nmsg; i++)
		serve(ep, p, &ep->fr.msg[i]);
	if (ep->o.reply_per_frame && ep->fr.nmsg)
		respond(ep, p, now);
	return 0;
}

int ox_endpoint_input(struct ox_endpoint *ep, const uint8_t *f, size_t len, uint64_t now)
{
	pthread_mutex_lock(&ep->lock);
	int r = input(ep, f, len, now);
	pthread_mutex_unlock(&ep->lock);
	return r;
}

/* A peer that has acknowledged nothing for giveup_rto timeouts in a row is
 * gone, or not listening: retrying it for ever costs frames.  An unbound
 * peer is forgotten, which also frees its table slot; its windows stay,
 * and if it comes back it opens a fresh connection, as after a restart.
 * A bound peer cannot do that (only its control session starts its
 * connection, so that no frame from the wire can restart it), and its
 * session still vouches for it: an idle client that polls nothing, or one
 * whose frames a switch sends elsewhere for a while, comes back with the
 * sequence numbers it left with.  So its connection is kept and only the
 * retrying stops, until a frame of its passes the checks (input); the
 * session's end forgets it. */
static bool give_up(struct ox_endpoint *ep, int i)
{
	struct ox_peer *p = ep->peer[i];
	if (p->parked)
		return true;
	if (p->c.g.silent < ep->o.giveup_rto)
		return false;
	ep->st.gaveup++;
	if (ep->o.log) {
		const uint8_t *m = p->c.peer;
		char line[192];
		snprintf(line, sizeof(line),
			 "ox: peer %02x:%02x:%02x:%02x:%02x:%02x acknowledged "
			 "nothing for %u retransmissions; %s",
			 m[0], m[1], m[2], m[3], m[4], m[5], p->c.g.silent,
			 p->c.o.bound ? "not retried until it is heard from"
				      : "connection dropped");
		ep->o.log(line);
	}
	if (p->c.o.bound)
		p->parked = true;
	else
		peer_free(ep, i);
	return true;
}

static void service_all(struct ox_endpoint *ep, uint64_t now)
{
	uint64_t due = UINT64_MAX;
	for (int i = 0; i < OX_EP_MAX_PEERS; i++) {
		struct ox_peer *p = ep->peer[i];
		if (!p || give_up(ep, i))
			continue;
		respond(ep, p, now);
		/* a closed connection keeps its state, so that a lost ACK of
		 * the close is answered again, until the peer opens anew */
		if (p->c.peer_closed && p->c.g.ack_due)
			p->c.g.ack_deadline = now;
		uint64_t d = ox_conn_service(&p->c, now);
		/* kick, then copy for retransmission: a lone response is on its
		 * way before we spend time on the copy, and no other peer can
		 * reuse the TX slot first */
		ox_link_flush(ep->link);
		ox_conn_sync(&p->c);
		if (d < due)
			due = d;
	}
	ep->next_due = due;
	ox_link_flush(ep->link);
}

int ox_endpoint_poll(struct ox_endpoint *ep, uint64_t now, unsigned budget)
{
	int n = 0;
	size_t bytes = 0;
	pthread_mutex_lock(&ep->lock);
	while ((unsigned)n < budget && bytes < OX_POLL_BYTES) {
		const uint8_t *f;
		int len = ox_link_next(ep->link, ep->buf, sizeof(ep->buf), &f);
		if (len <= 0)
			break;
		input(ep, f, (size_t)len, now);
		ox_link_done(ep->link);
		n++;
		bytes += (size_t)len;
	}
	/* an idle spin costs one look at the ring: responses waiting for
	 * credit or ring room can only move after a frame came in */
	if (n || now >= ep->next_due)
		service_all(ep, now);
	pthread_mutex_unlock(&ep->lock);
	return n;
}

int ox_endpoint_run(struct ox_endpoint *ep, volatile int *stop)
{
	/* spin while traffic flows, counted from the last frame; sleep when
	 * idle (the spin's own idle rule is not asked: a frame after a sleep
	 * starts the spin again) */
	struct em_spin spin = { .budget_ns = ep->o.spin_ns };

	em_spin_begin(&spin, ox_now_ns());
	while (!__atomic_load_n(stop, __ATOMIC_RELAXED)) {
		uint64_t now = ox_now_ns();
		if (ox_endpoint_poll(ep, now, 64) > 0) {
			em_spin_begin(&spin, now);
			continue;
		}
		if (em_spin_again(&spin, now))
			continue;
		/* idle: sleep in the kernel until a frame or the next timer */
		uint64_t t = 100000000;
		if (ep->next_due != UINT64_MAX)
			t = ep->next_due > now ? ep->next_due - now : 0;
		if (t > 100000000)
			t = 100000000;
		if (t)
			ox_link_wait(ep->link, t);
	}
	return 0;
}

void ox_endpoint_stats(struct ox_endpoint *ep, struct ox_stats *s)
{
	pthread_mutex_lock(&ep->lock);
	*s = ep->st;
	for (int i = 0; i < OX_EP_MAX_PEERS; i++)
		if (ep->peer[i])
			ox_conn_stats(&ep->peer[i]->c, s);
	pthread_mutex_unlock(&ep->lock);
}

void ox_endpoint_dump(const struct ox_endpoint *ep)
{
	for (int i = 0; i < OX_EP_MAX_PEERS; i++)
		if (ep->peer[i]) {
			ox_conn_dump(&ep->peer[i]->c, "ep");
			fprintf(stderr, "   qcount %u\n", ep->peer[i]->qcount);
		}
}
