/*
 * conn.c - one OmniXtend connection: the glue between go-back-N, credits,
 * the frame encoder and a link, used the same way by both sides.
 *
 * Frames are built in place in the retransmit ring's next slot, so a frame
 * is written once and sent (and resent) from where it lies.  Acknowledgement
 * fields are filled in at every (re)transmission, never stored, so a resent
 * frame always carries our newest ACK.  Credit is returned on sequenced
 * frames only; when nothing else goes out and a channel owes at least a
 * quarter of its buffer we send an empty sequenced frame just for it, which
 * keeps the peer from stalling while never generating traffic in response to
 * traffic that carries no messages (so two idle peers fall silent).
 *
 * ACK-only frames: in 1.1 they have their own message type and carry the
 * current sequence number without consuming it.  1.0.3 has no such type, so
 * ours repeat the newest sequence number the peer has acknowledged; the peer
 * sees a duplicate, reads the ACK and drops it.  (Repeating our last used
 * number would be wrong: if that frame was lost, the empty ACK would be
 * accepted in its place and the real frame later dropped as a duplicate.)  Since such a frame is indistinguishable from
 * a retransmitted empty frame, in 1.0.3 we answer an empty duplicate only if
 * we sent no ACK-only frame for a whole retransmission timeout, which ends
 * any ACK ping-pong after one round.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ox/conn.h"

/* A peer silent this long that opens again has restarted (see input). */
#define OX_RESTART_IDLE_NS 100000000ull

void ox_opts_resolve(struct ox_opts *o, const struct ox_link *l)
{
	if (!o->ethertype)
		o->ethertype = l->ethertype ? l->ethertype : OX_ETHERTYPE_DEFAULT;
	if (!o->mtu || o->mtu > l->mtu)
		o->mtu = l->mtu;
	if (!o->rtx_slots)
		o->rtx_slots = 64;
	if (!o->rto_ns)
		o->rto_ns = 1000000;
	if (!o->ack_delay_ns)
		o->ack_delay_ns = 20000;
	if (!o->spin_ns)
		o->spin_ns = 200000;
	if (!o->max_burst_log2)
		o->max_burst_log2 = OX_STD_SIZE_LOG2;
	if (o->max_burst_log2 > OX_MAX_SIZE_LOG2)
		o->max_burst_log2 = OX_MAX_SIZE_LOG2;
}

int ox_conn_init(struct ox_conn *c, struct ox_link *l, const struct ox_opts *o,
		 const uint8_t peer[6], const uint32_t rxbuf[6], struct ox_stats *st)
{
	memset(c, 0, sizeof(*c));
	c->o = *o;
	ox_opts_resolve(&c->o, l);
	c->cap = c->o.mtu - (c->o.tag ? OX_TAG_LEN : 0);
	if (c->o.mtu < OX_MIN_PAYLOAD + (c->o.tag ? OX_TAG_LEN : 0))
		return -EINVAL;
	memcpy(c->peer, peer, 6);
	c->link = l;
	c->st = st;
	memcpy(c->rxbuf, rxbuf, sizeof(c->rxbuf));
	int r = ox_gbn_init(&c->g, c->o.rtx_slots, OX_ETH_HLEN + c->o.mtu, c->o.rto_ns,
			    c->o.ack_delay_ns);
	if (r)
		return r;
	ox_conn_reset(c);
	return 0;
}

static void fold_stats(struct ox_conn *c)
{
	struct ox_gbn *g = &c->g;
	c->st->dup += g->n_dup;
	c->st->ooo += g->n_ooo;
	c->st->naks_rx += g->n_naks_rx;
	c->st->naks_tx += g->n_naks_tx;
	c->st->rtx_frames += g->n_rtx_frames;
	c->st->timeouts += g->n_timeouts;
	g->n_dup = g->n_ooo = g->n_naks_rx = g->n_naks_tx = g->n_rtx_frames = g->n_timeouts = 0;
}

void ox_conn_stats(const struct ox_conn *c, struct ox_stats *s)
{
	const struct ox_gbn *g = &c->g;
	s->dup += g->n_dup;
	s->ooo += g->n_ooo;
	s->naks_rx += g->n_naks_rx;
	s->naks_tx += g->n_naks_tx;
	s->rtx_frames += g->n_rtx_frames;
	s->timeouts += g->n_timeouts;
}

void ox_conn_free(struct ox_conn *c)
{
	c->copy_src = NULL;
	if (c->st)
		fold_stats(c);
	ox_gbn_free(&c->g);
	ox_tag_wipe(c->o.tag_tx, sizeof(c->o.tag_tx));
	ox_tag_wipe(c->o.tag_rx, sizeof(c->o.tag_rx));
}

void ox_conn_reset(struct ox_conn *c)
{
	fold_stats(c);
	ox_gbn_reset(&c->g);
	uint32_t start = c->o.mode == OX_MODE_11 ? 128 : 0;
	ox_credit_init(&c->c, start, c->rxbuf);
	for (int i = 0; i < 6; i++)
		c->tx_max[i] = start;
	c->building = false;
	c->copy_src = NULL;
	c->open_pending = c->o.mode == OX_MODE_11;
	c->close_pending = c->peer_closed = false;
	c->last_ackonly = 0;
	c->resets++;
}

/* Appends the tag in authenticated mode; returns the length to send. */
static size_t seal(const struct ox_conn *c, uint8_t *f, size_t len)
{
	if (!c->o.tag)
		return len;
	ox_tag_put(c->o.tag_tx, f, len);
	return len + OX_TAG_LEN;
}

int ox_conn_untag(struct ox_conn *c, const uint8_t *f, size_t *len)
{
	if (!c->o.tag)
		return 0;
	if (!ox_tag_ok(c->o.tag_rx, f, *len)) {
		c->st->rej[OX_REJ_TAG]++;
		return -EPROTO;
	}
	*len -= OX_TAG_LEN;
	return 0;
}

static void send_raw(struct ox_conn *c, const uint8_t *f, size_t len)
{
	ox_conn_sync(c); /* a send may reuse the TX slot of the pending copy */
	if (ox_link_send(c->link, f, len) == 0)
		c->st->tx_frames++;
}

static void send_ackonly(struct ox_conn *c, uint64_t now)
{
	uint8_t f[OX_ETH_HLEN + OX_MIN_PAYLOAD + OX_TAG_LEN];
	struct ox_tloe h = { 0 };
	struct ox_enc e;
	if (c->o.mode == OX_MODE_11) {
		h.type = OX_T_ACKONLY;
		h.seq = c->g.next_tx;
	} else {
		/* the newest frame the peer acknowledged: a duplicate there for
		 * sure, never mistaken for a frame of ours it has not yet seen */
		h.seq = c->g.ackd;
	}
	ox_gbn_ack_fields(&c->g, &h);
	ox_eth_write(f, c->peer, c->link->mac, c->o.ethertype);
	ox_enc_begin(&e, f + OX_ETH_HLEN, OX_MIN_PAYLOAD, false);
	size_t n = ox_enc_finish(&e, &h);
	send_raw(c, f, seal(c, f, OX_ETH_HLEN + n));
	c->last_ackonly = now;
}

void ox_conn_sync(struct ox_conn *c)
{
	if (!c->copy_src)
		return;
	memcpy(c->copy_dst, c->copy_src, c->copy_len);
	c->copy_src = NULL;
}

/* Frames are built where they will be sent from: the link's TX slot when it
 * offers one (the retransmit copy follows later), else the ring slot. */
static void begin(struct ox_conn *c)
{
	ox_conn_sync(c);
	uint8_t *b = c->link->ops->tx_slot ? c->link->ops->tx_slot(c->link) : NULL;
	c->zc = b != NULL;
	c->build = b ? b : ox_gbn_tx_slot(&c->g);
	ox_eth_write(c->build, c->peer, c->link->mac, c->o.ethertype);
	ox_enc_begin(&c->enc, c->build + OX_ETH_HLEN, c->cap, c->o.verbatim);
	c->building = true;
}

void ox_conn_flush(struct ox_conn *c, uint64_t now)
{
	if (!c->building)
		return;
	c->building = false;
	struct ox_tloe h = { 0 };
	bool credit = ox_credit_pick(&c->c, &h.credit_ch, &h.credit);
	if (c->open_pending) {
		h.type = OX_T_OPEN;
		c->open_pending = false;
	} else if (c->close_pending) {
		h.type = OX_T_CLOSE;
		c->close_pending = false;
	} else if (!c->enc.nmsg && !credit) {
		return;
	}
	if (c->o.mode == OX_MODE_103)
		h.type = 0;
	h.seq = c->g.next_tx;
	ox_gbn_ack_fields(&c->g, &h);
	size_t n = seal(c, c->build, OX_ETH_HLEN + ox_enc_finish(&c->enc, &h));
	c->st->tx_msgs += c->enc.nmsg;
	uint8_t *slot = ox_gbn_tx_slot(&c->g);
	ox_gbn_tx_commit(&c->g, n, now);
	if (!c->zc) {
		send_raw(c, slot, n);
		return;
	}
	if (c->link->ops->tx_commit(c->link, n) == 0)
		c->st->tx_frames++;
	c->copy_src = c->build;
	c->copy_dst = slot;
	c->copy_len = n;
}

bool ox_conn_can_add(const struct ox_conn *c, unsigned ch, unsigned flits)
{
	if (c->c.tx[ch] < flits)
		return false;
	if (c->building && ox_enc_room(&c->enc, flits) == 0)
		return true;
	/* a new frame is needed: the current one (if any) takes a slot first */
	if (c->g.count + (c->building ? 1 : 0) >= c->g.slots)
		return false;
	return ox_seq_sub(ox_seq_add(c->g.next_tx, c->building ? 1 : 0), c->g.ackd) < OX_SEQ_HALF;
}

int ox_conn_add(struct ox_conn *c, const struct ox_msg *m, uint64_t now)
{
	/* the open goes out alone: a late duplicate of it must carry no
	 * request that could be executed a second time */
	if (c->open_pending && !c->building && ox_gbn_can_send(&c->g)) {
		begin(c);
		ox_conn_flush(c, now);
	}
	int flits = ox_msg_flits(m->chan, m->opcode, m->size);
	if (flits < 0)
		return flits;
	if ((unsigned)flits + 2 > c->cap / 8)
		return -EMSGSIZE;
	if (!ox_conn_can_add(c, m->chan, (unsigned)flits))
		return -EAGAIN;
	if (c->building && ox_enc_room(&c->enc, (unsigned)flits))
		ox_conn_flush(c, now);
	if (!c->building)
		begin(c);
	ox_credit_spend(&c->c, m->chan, (unsigned)flits);
	return ox_enc_add(&c->enc, m);
}

int ox_conn_input(struct ox_conn *c, const struct ox_frame *f, uint64_t now)
{
	const struct ox_tloe *h = &f->h;
	bool m11 = c->o.mode == OX_MODE_11;
	if (!m11 && h->type != OX_T_NORMAL) {
		c->st->rej[OX_REJ_TYPE]++;
		return -EPROTO;
	}
	bool ackonly = m11 && h->type == OX_T_ACKONLY;
	/* A bound peer's sequence number is never far from ours (its ring is
	 * at most OX_SEQ_PLAUSIBLE frames): one that is was not sent by it.
	 * Dropped before its acknowledgement or open is looked at, so a blind
	 * spoofer can neither serve itself nor disturb the real peer's link. */
	if (c->o.bound && ox_seq_sub(h->seq, c->g.next_rx) > OX_SEQ_PLAUSIBLE &&
	    ox_seq_sub(c->g.next_rx, h->seq) > OX_SEQ_PLAUSIBLE) {
		c->st->rej[OX_REJ_SEQ]++;
		return -EPROTO;
	}
	/* a new session from a peer we knew: it closed the last one, or it
	 * acknowledges nothing of ours although it acknowledged something
	 * before and has been silent a while (it restarted without closing).
	 * The silence is what tells a restart from a late duplicate of the
	 * old session's open, which would otherwise wipe a live connection;
	 * and an open we still wait for (next_rx 0) is no restart at all,
	 * even if frames that followed it overtook it.  A bound peer restarts
	 * only through its control session, which resets us there. */
	if (m11 && !c->o.bound && h->type == OX_T_OPEN && h->seq == 0 &&
	    (c->peer_closed ||
	     (c->g.next_rx != 0 && h->seq_ack == OX_SEQ_MASK && c->g.ackd != OX_SEQ_MASK &&
	      now - c->last_accept >= OX_RESTART_IDLE_NS)))
		ox_conn_reset(c);
	if (!ackonly && h->credit_ch && h->seq == c->g.next_rx &&
	    ox_credit_check(h->credit_ch, h->credit)) {
		c->st->rej[OX_REJ_CREDIT]++;
		return -EPROTO;
	}
	ox_gbn_on_ack(&c->g, h->seq_ack, h->ack, now);
	bool ack_dup = m11 || f->nmsg || now - c->last_ackonly >= c->o.rto_ns;
	enum ox_rx_verdict v = ox_gbn_rx(&c->g, h->seq, ackonly, ack_dup, now);
	if (v != OX_RX_ACCEPT)
		return 0;
	c->last_accept = now;
	if (!ackonly && h->credit_ch) {
		ox_credit_grant(&c->c, h->credit_ch, h->credit);
		if (c->c.tx[h->credit_ch] > c->tx_max[h->credit_ch])
			c->tx_max[h->credit_ch] = c->c.tx[h->credit_ch];
	}
	if (m11 && h->type == OX_T_CLOSE)
		c->peer_closed = true;
	c->st->rx_msgs += f->nmsg;
	return 1;
}

uint64_t ox_conn_service(struct ox_conn *c, uint64_t now)
{
	struct ox_gbn *g = &c->g;
	ox_conn_flush(c, now);
	ox_gbn_tick(g, now);
	if (g->rtx_due) {
		ox_conn_sync(c);
		g->rtx_due = false;
		g->last_progress = now;
		for (unsigned i = 0; i < g->count; i++) {
			size_t len;
			uint8_t *f = ox_gbn_unacked(g, i, &len);
			uint64_t w;
			struct ox_tloe h;
			memcpy(&w, f + OX_ETH_HLEN, 8);
			ox_tloe_unpack(__builtin_bswap64(w), &h);
			ox_gbn_ack_fields(g, &h);
			w = __builtin_bswap64(ox_tloe_pack(&h));
			memcpy(f + OX_ETH_HLEN, &w, 8);
			if (c->o.tag) /* the acknowledgement changed: so does the tag */
				seal(c, f, len - OX_TAG_LEN);
			send_raw(c, f, len);
			g->n_rtx_frames++;
		}
	}
	/* credit-only frames, and the 1.1 open/close when nothing carries them */
	for (;;) {
		bool want = c->open_pending || c->close_pending;
		/* the first grant on each channel goes out at once: some
		 * peers send nothing until they have seen one on each */
		want = want || ox_credit_first_due(&c->c);
		for (int ch = OX_CH_A; ch <= OX_CH_E && !want; ch++)
			want = c->c.owed[ch] &&
			       c->c.owed[ch] >= (c->rxbuf[ch] / 4 ? c->rxbuf[ch] / 4 : 1);
		if (!want || !ox_gbn_can_send(g))
			break;
		begin(c);
		ox_conn_flush(c, now);
	}
	if (g->nak_due || (g->ack_due && now >= g->ack_deadline))
		send_ackonly(c, now);
	return ox_gbn_tick(g, now);
}

void ox_conn_dump(const struct ox_conn *c, const char *who)
{
	fprintf(stderr,
		"%s peer %02x: next_tx %u ackd %u count %u next_rx %u ack_due %d nak_due %d nak_sent %d building %d tx A%u C%u D%u E%u owed A%u D%u\n",
		who, c->peer[5], c->g.next_tx, c->g.ackd, c->g.count, c->g.next_rx, c->g.ack_due,
		c->g.nak_due, c->g.nak_sent, c->building, c->c.tx[1], c->c.tx[3], c->c.tx[4],
		c->c.tx[5], c->c.owed[1], c->c.owed[4]);
}
