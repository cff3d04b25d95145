/*
 * requester.c - the client side of OmniXtend: turns reads, writes and
 * atomics on address ranges into TileLink requests to one memory endpoint.
 *
 * An op is cut into naturally aligned power-of-two bursts no larger than a
 * frame (and the A credit the peer ever granted) can carry; each burst takes
 * a source id, which is simply the index of its slot, so a response finds its
 * request in O(1) and a response naming a free slot, or disagreeing with the
 * request's size, is counted and ignored rather than trusted.  Go-back-N
 * below delivers every frame once and in order, so each burst completes once
 * and each op's callback runs exactly once, when its last burst completes.
 *
 * Ops in flight at the same time are not ordered against each other (as in
 * TileLink): a caller that needs a write visible to a later read waits for
 * the write's completion first.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "ox/conn.h"

#define OX_RQ_SLOTS 1024
/* D buffer in flits: responses are copied out at once, so it costs nothing
 * to offer a lot, and reads stream only while credit is plentiful: 64
 * frames of 8 KiB bursts, the retransmit ring's worth, and as many frames
 * of larger bursts (scaled up with them) */
#define OX_RQ_RXBUF_D 65536u
/* Every other channel: B (Probe) we count and drop, as nothing is cached
 * here, and A, C, E a memory endpoint never sends; each is granted at open
 * all the same, since ETRI's C memory endpoint serves nothing until it has
 * seen a grant on every channel (A, C, E in its build for Western Digital's
 * endpoint), and 2^8 of it, above the 128 that 1.1 starts with, for peers
 * that take a grant as their new total. */
#define OX_RQ_RXBUF_SMALL 384

struct ox_slot {
	struct ox_op *op;
	uint64_t addr;
	size_t off;
	uint8_t size;
};

struct ox_requester {
	struct ox_opts o;
	struct ox_link *link;
	struct ox_conn c;
	struct ox_stats st;
	struct ox_slot slot[OX_RQ_SLOTS];
	uint32_t freel[OX_RQ_SLOTS];
	unsigned nfree;
	struct ox_op *qhead, *qtail; /* ops with bursts still to issue */
	unsigned busy;
	unsigned frame_log2; /* largest burst one frame carries */
	bool closing;
	bool dirty; /* submitted since the last poll */
	uint64_t next_due;
	struct ox_frame fr;
	uint8_t buf[OX_ETH_HLEN + 65536 + 64]; /* the largest frame a link has */
};

int ox_requester_create(const struct ox_opts *o, struct ox_link *link, const uint8_t peer_mac[6],
			struct ox_requester **out)
{
	struct ox_requester *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	if (o)
		r->o = *o;
	ox_opts_resolve(&r->o, link);
	r->link = link;
	/* a PutFullData of 2^k bytes is 2 + 2^(k-3) flits, plus TLoE header
	 * and mask: the largest burst one frame of ours (and, the caller
	 * vouches, of the peer's) carries, at most the peer's largest */
	unsigned cap = (r->o.mtu - (r->o.tag ? OX_TAG_LEN : 0)) / 8;
	r->frame_log2 = 3;
	while (r->frame_log2 < r->o.max_burst_log2 && (1u << (r->frame_log2 + 1 - 3)) + 4 <= cap)
		r->frame_log2++;
	uint32_t rxbuf[6] = { 0 };
	for (int ch = OX_CH_A; ch <= OX_CH_E; ch++)
		rxbuf[ch] = OX_RQ_RXBUF_SMALL;
	rxbuf[OX_CH_D] = r->o.rx_credit
				 ? r->o.rx_credit
				 : OX_RQ_RXBUF_D << (r->frame_log2 > OX_STD_SIZE_LOG2
							     ? r->frame_log2 - OX_STD_SIZE_LOG2
							     : 0);
	while (r->frame_log2 > 3 && (1u << (r->frame_log2 - 3)) + 1 > rxbuf[OX_CH_D])
		r->frame_log2--;
	int e = ox_conn_init(&r->c, link, &r->o, peer_mac, rxbuf, &r->st);
	if (e) {
		free(r);
		return e;
	}
	for (unsigned i = 0; i < OX_RQ_SLOTS; i++)
		r->freel[i] = OX_RQ_SLOTS - 1 - i;
	r->nfree = OX_RQ_SLOTS;
	*out = r;
	return 0;
}

void ox_requester_destroy(struct ox_requester *r)
{
	if (!r)
		return;
	ox_requester_abort(r, -ECONNRESET);
	ox_conn_free(&r->c);
	ox_tag_wipe(&r->o, sizeof(r->o));
	free(r);
}

static bool pow2(size_t n)
{
	return n && !(n & (n - 1));
}

int ox_requester_submit(struct ox_requester *r, struct ox_op *op)
{
	if (r->closing)
		return -ESHUTDOWN;
	if (!op->len || (op->kind <= OX_OP_PUT && !op->buf))
		return -EINVAL;
	if (op->kind == OX_OP_ARITH || op->kind == OX_OP_LOGIC || op->kind == OX_OP_INTENT) {
		size_t max = op->kind == OX_OP_INTENT ? (1u << r->o.max_burst_log2) : 8;
		if (!pow2(op->len) || op->len > max || (op->addr & (op->len - 1)))
			return -EINVAL;
	}
	op->issued = 0;
	op->pending = 0;
	op->done = false;
	op->status = 0;
	op->result = 0;
	op->next = NULL;
	if (r->qtail)
		r->qtail->next = op;
	else
		r->qhead = op;
	r->qtail = op;
	r->busy++;
	r->dirty = true;
	return 0;
}

unsigned ox_requester_busy(const struct ox_requester *r)
{
	return r->busy;
}

static void complete(struct ox_requester *r, struct ox_op *op, int *ncomp)
{
	op->done = true;
	r->busy--;
	(*ncomp)++;
	if (op->cb)
		op->cb(op);
}

/* Largest aligned burst at a; puts are also held to the A credit we saw. */
static unsigned burst_log2(const struct ox_requester *r, const struct ox_op *op)
{
	uint64_t a = op->addr + op->issued;
	size_t left = op->len - op->issued;
	unsigned k = r->frame_log2;
	if (op->kind == OX_OP_PUT)
		while (k > 3 && (1u << (k - 3)) + 2 > r->c.tx_max[OX_CH_A])
			k--;
	while (k && ((1ull << k) > left || (a & ((1ull << k) - 1))))
		k--;
	return k;
}

/* With many bursts out, slots come back one response at a time; refilling
 * them one by one costs a frame (a system call here, a receive there) per
 * burst for what fits 64 to a frame.  So a deep pipeline refills in
 * batches: nothing new goes out until REFILL slots are free, which the
 * bursts still out guarantee will happen. */
#define OX_RQ_DEEP 64
#define OX_RQ_REFILL 32

static void issue(struct ox_requester *r, uint64_t now)
{
	if (OX_RQ_SLOTS - r->nfree >= OX_RQ_DEEP && r->nfree < OX_RQ_REFILL)
		return;
	while (r->qhead) {
		struct ox_op *op = r->qhead;
		while (op->issued < op->len) {
			if (!r->nfree)
				return;
			unsigned k = burst_log2(r, op);
			struct ox_msg m = { .chan = OX_CH_A,
					    .size = (uint8_t)k,
					    .addr = op->addr + op->issued,
					    .param = op->param };
			switch (op->kind) {
			case OX_OP_GET:
				m.opcode = OX_A_GET;
				break;
			case OX_OP_PUT:
				m.opcode = OX_A_PUTFULL;
				m.data = (const uint8_t *)op->buf + op->issued;
				break;
			case OX_OP_ARITH:
				m.opcode = OX_A_ARITH;
				m.data = &op->operand;
				break;
			case OX_OP_LOGIC:
				m.opcode = OX_A_LOGIC;
				m.data = &op->operand;
				break;
			case OX_OP_INTENT:
				m.opcode = OX_A_INTENT;
				break;
			}
			uint32_t s = r->freel[r->nfree - 1];
			m.source = s;
			int e = ox_conn_add(&r->c, &m, now);
			if (e == -EAGAIN)
				return;
			if (e) {
				/* cannot ever be sent (frame too small): fail the rest */
				op->status = e;
				op->issued = op->len;
				break;
			}
			r->nfree--;
			r->slot[s] = (struct ox_slot){ op, m.addr, op->issued, (uint8_t)k };
			op->issued += 1ull << k;
			op->pending++;
		}
		r->qhead = op->next;
		if (!r->qhead)
			r->qtail = NULL;
		if (!op->pending) {
			int n = 0;
			complete(r, op, &n);
		}
	}
}

static void response(struct ox_requester *r, struct ox_msg *m, int *ncomp)
{
	if (m->chan != OX_CH_D) {
		r->st.unsupported++;
		ox_credit_free(&r->c.c, m->chan, m->flits);
		return;
	}
	ox_credit_free(&r->c.c, OX_CH_D, m->flits);
	struct ox_slot *s = m->source < OX_RQ_SLOTS ? &r->slot[m->source] : NULL;
	if (!s || !s->op) {
		r->st.stale++;
		return;
	}
	struct ox_op *op = s->op;
	bool want_data = op->kind != OX_OP_PUT && op->kind != OX_OP_INTENT;
	unsigned want_op = want_data               ? OX_D_ACCESSACKDATA
			   : op->kind == OX_OP_PUT ? OX_D_ACCESSACK
						   : OX_D_HINTACK;
	m->addr = s->addr;
	if (m->opcode != want_op || m->size != s->size) {
		/* not an answer to what we asked: never copy it, fail the burst */
		r->st.stale++;
		if (!op->status)
			op->status = -EIO;
	} else if (m->denied) {
		r->st.denied++;
		if (!op->status)
			op->status = -EACCES;
	} else if (m->corrupt) {
		if (!op->status)
			op->status = -EIO;
	} else if (op->kind == OX_OP_GET) {
		ox_msg_read(m, (uint8_t *)op->buf + s->off, r->o.verbatim);
	} else if (want_data) {
		uint64_t v = 0;
		ox_msg_read(m, &v, r->o.verbatim);
		op->result = v;
	}
	s->op = NULL;
	r->freel[r->nfree++] = m->source;
	if (--op->pending == 0 && op->issued >= op->len)
		complete(r, op, ncomp);
}

static int input(struct ox_requester *r, const uint8_t *f, size_t len, uint64_t now, int *ncomp)
{
	r->st.rx_frames++;
	if (len < OX_ETH_HLEN) {
		r->st.rej[OX_REJ_SHORT]++;
		return -EPROTO;
	}
	uint16_t et = (uint16_t)(f[12] << 8 | f[13]);
	if (et != r->o.ethertype || memcmp(f, r->link->mac, 6) || memcmp(f + 6, r->c.peer, 6)) {
		r->st.rej[OX_REJ_NOT_FOR_US]++;
		return -EPROTO;
	}
	if (ox_conn_untag(&r->c, f, &len))
		return -EPROTO;
	if (ox_frame_decode(f + OX_ETH_HLEN, len - OX_ETH_HLEN, &r->fr)) {
		r->st.rej[r->fr.reject]++;
		return -EPROTO;
	}
	int e = ox_conn_input(&r->c, &r->fr, now);
	if (e <= 0)
		return e;
	for (unsigned i = 0; i < r->fr.nmsg; i++)
		response(r, &r->fr.msg[i], ncomp);
	return 0;
}

int ox_requester_poll(struct ox_requester *r, uint64_t now)
{
	int ncomp = 0, n = 0;
	size_t bytes = 0;
	for (int i = 0; i < 64 && bytes < OX_POLL_BYTES; i++, n++) {
		const uint8_t *f;
		int len = ox_link_next(r->link, r->buf, sizeof(r->buf), &f);
		if (len <= 0)
			break;
		input(r, f, (size_t)len, now, &ncomp);
		ox_link_done(r->link);
		bytes += (size_t)len;
	}
	/* nothing came, nothing was asked, no timer: an idle spin stops here */
	if (!n && !r->dirty && !r->c.close_pending && now < r->next_due)
		return 0;
	r->dirty = false;
	issue(r, now);
	ox_conn_flush(&r->c, now);
	/* With nothing in flight no one may poll us again for a long time,
	 * so the acknowledgement we owe goes now, not after its short delay:
	 * else the node retries its last frame to a requester that is not
	 * reading, and in the end gives up on it.  A caller that goes on
	 * submitting pays one small frame per time it runs dry. */
	if (!r->busy && r->c.g.ack_due)
		r->c.g.ack_deadline = now;
	r->next_due = ox_conn_service(&r->c, now);
	ox_link_flush(r->link);
	ox_conn_sync(&r->c);
	return ncomp;
}

static int wait_until(struct ox_requester *r, bool (*done)(struct ox_requester *, void *),
		      void *arg, uint64_t timeout_ns)
{
	uint64_t start = ox_now_ns();
	struct em_spin spin = { .budget_ns = r->o.spin_ns }; /* as ox_endpoint_run */

	em_spin_begin(&spin, start);
	while (!done(r, arg)) {
		uint64_t now = ox_now_ns();
		if (now - start >= timeout_ns)
			return -ETIMEDOUT;
		/* any frame in counts as traffic, not just completed ops: a
		 * large read completes once, after hundreds of frames */
		uint64_t rx = r->st.rx_frames;
		if (ox_requester_poll(r, now) > 0 || r->st.rx_frames != rx) {
			em_spin_begin(&spin, now);
			continue;
		}
		if (em_spin_again(&spin, now))
			continue;
		uint64_t due = ox_gbn_tick(&r->c.g, now);
		uint64_t t = due > now ? due - now : 0;
		if (t > 10000000)
			t = 10000000;
		if (t)
			ox_link_wait(r->link, t);
	}
	return 0;
}

static bool op_done(struct ox_requester *r, void *arg)
{
	return ((struct ox_op *)arg)->done;
}

int ox_requester_wait(struct ox_requester *r, struct ox_op *op, uint64_t timeout_ns)
{
	int e = wait_until(r, op_done, op, timeout_ns);
	return e ? e : op->status;
}

int ox_requester_abort(struct ox_requester *r, int err)
{
	int n = 0;
	/* nothing more is issued for queued ops; those with no burst out finish now */
	for (struct ox_op *op = r->qhead, *next; op; op = next) {
		next = op->next;
		op->issued = op->len;
		if (!op->status)
			op->status = err;
		if (!op->pending)
			complete(r, op, &n);
	}
	r->qhead = r->qtail = NULL;
	/* the rest finish as their last outstanding burst is given up; a late
	 * response then names a free slot and is counted as stale */
	for (uint32_t s = 0; s < OX_RQ_SLOTS; s++) {
		struct ox_op *op = r->slot[s].op;
		if (!op)
			continue;
		r->slot[s].op = NULL;
		r->freel[r->nfree++] = s;
		if (!op->status)
			op->status = err;
		if (--op->pending == 0)
			complete(r, op, &n);
	}
	return n;
}

static bool all_done(struct ox_requester *r, void *arg)
{
	return r->busy == 0;
}

int ox_requester_wait_all(struct ox_requester *r, uint64_t timeout_ns)
{
	return wait_until(r, all_done, NULL, timeout_ns);
}

static bool closed(struct ox_requester *r, void *arg)
{
	return !r->c.close_pending && !r->c.building && r->c.g.count == 0;
}

int ox_requester_close(struct ox_requester *r, uint64_t timeout_ns)
{
	if (r->o.mode != OX_MODE_11)
		return 0;
	if (r->busy)
		return -EBUSY;
	if (!r->closing) {
		r->closing = true;
		r->c.close_pending = true;
	}
	return wait_until(r, closed, NULL, timeout_ns);
}

void ox_requester_stats(const struct ox_requester *r, struct ox_stats *s)
{
	*s = r->st;
	ox_conn_stats(&r->c, s);
}

void ox_requester_dump(const struct ox_requester *r)
{
	ox_conn_dump(&r->c, "rq");
	fprintf(stderr, "   busy %u nfree %u qhead %p frame_log2 %u\n", r->busy, r->nfree,
		(void *)r->qhead, r->frame_log2);
	for (unsigned s = 0, n = 0; s < OX_RQ_SLOTS && n < 8; s++)
		if (r->slot[s].op) {
			fprintf(stderr, "   slot %u: kind %d addr %llx size %u off %zu\n", s,
				r->slot[s].op->kind, (unsigned long long)r->slot[s].addr,
				r->slot[s].size, r->slot[s].off);
			n++;
		}
}

uint64_t ox_requester_rx_frames(const struct ox_requester *r)
{
	return r->st.rx_frames;
}

uint64_t ox_requester_next_due(const struct ox_requester *r)
{
	return r->next_due;
}
