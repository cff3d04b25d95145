/*
 * gbn.c - go-back-N reliability for one OmniXtend connection, as a state
 * machine with the time passed in, so that tests can drive it frame by frame
 * without sockets or clocks.
 *
 * Transmit side (specification section 4): NEXT_TX_SEQ starts at 0 and
 * ACKD_SEQ at 2^22 - 1; a frame may go while the distance between them is
 * below 2^21 and the retransmit ring has a free slot.  Every sent frame stays
 * in the ring, whole, until an acknowledgement covers it; a NAK or a timeout
 * resends all of them in order.
 *
 * Receive side: a frame whose seq is NEXT_RX_SEQ is accepted; one at most
 * 2^21 behind is a duplicate (dropped, acknowledged again); anything else is
 * out of order (dropped, NAKed).  We NAK once per out-of-order episode:
 * after a loss, every frame already in flight arrives out of order, and a NAK
 * for each would make the sender resend its whole window once per frame.
 * Acknowledgements ride on outgoing frames; when none go out, the owner sends
 * an ACK-only frame after ack_delay or once 16 frames wait to be acked.
 * Consecutive timeouts double the timeout (up to 128 times) so that a peer
 * that went away costs little; any acknowledgement resets it, and so does
 * the owner when a peer it stopped retrying speaks again (ox_gbn_resume).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ox/ox.h"

#define OX_ACK_BATCH 16

int ox_gbn_init(struct ox_gbn *g, unsigned slots, unsigned slot_size, uint64_t rto_ns,
		uint64_t ack_delay_ns)
{
	memset(g, 0, sizeof(*g));
	if (!slots || slots > 4096 || slot_size < OX_ETH_HLEN + OX_MIN_PAYLOAD)
		return -EINVAL;
	g->ring = malloc((size_t)slots * slot_size);
	g->len = calloc(slots, sizeof(*g->len));
	if (!g->ring || !g->len) {
		ox_gbn_free(g);
		return -ENOMEM;
	}
	g->slots = slots;
	g->slot_size = slot_size;
	g->rto_ns = rto_ns;
	g->ack_delay_ns = ack_delay_ns;
	ox_gbn_reset(g);
	return 0;
}

void ox_gbn_free(struct ox_gbn *g)
{
	free(g->ring);
	free(g->len);
	g->ring = NULL;
	g->len = NULL;
}

void ox_gbn_reset(struct ox_gbn *g)
{
	g->next_tx = 0;
	g->ackd = OX_SEQ_MASK;
	g->next_rx = 0;
	g->head = g->count = 0;
	g->rtx_due = g->ack_due = g->nak_due = g->nak_sent = false;
	g->unacked_rx = 0;
	g->last_progress = 0;
	g->backoff = 0;
	g->silent = 0;
}

bool ox_gbn_can_send(const struct ox_gbn *g)
{
	return g->count < g->slots && ox_seq_sub(g->next_tx, g->ackd) < OX_SEQ_HALF;
}

uint8_t *ox_gbn_tx_slot(struct ox_gbn *g)
{
	return g->ring + (size_t)((g->head + g->count) % g->slots) * g->slot_size;
}

uint32_t ox_gbn_tx_commit(struct ox_gbn *g, size_t len, uint64_t now)
{
	uint32_t seq = g->next_tx;
	g->len[(g->head + g->count) % g->slots] = (uint32_t)len;
	if (!g->count)
		g->last_progress = now;
	g->count++;
	g->next_tx = ox_seq_add(g->next_tx, 1);
	return seq;
}

uint8_t *ox_gbn_unacked(struct ox_gbn *g, unsigned i, size_t *len)
{
	unsigned s = (g->head + i) % g->slots;
	*len = g->len[s];
	return g->ring + (size_t)s * g->slot_size;
}

void ox_gbn_on_ack(struct ox_gbn *g, uint32_t seq_ack, bool ack, uint64_t now)
{
	uint32_t n = ox_seq_sub(seq_ack, g->ackd);
	/* n == 0: nothing new; n > count: stale or forged, ignore it all */
	if (n > g->count)
		return;
	if (n) {
		g->head = (g->head + n) % g->slots;
		g->count -= n;
		g->ackd = seq_ack;
		g->last_progress = now;
		g->backoff = 0;
		g->silent = 0;
	}
	if (!ack) {
		g->n_naks_rx++;
		if (g->count)
			g->rtx_due = true;
	}
}

enum ox_rx_verdict ox_gbn_rx(struct ox_gbn *g, uint32_t seq, bool ackonly, bool ack_dup,
			     uint64_t now)
{
	if (ackonly)
		return OX_RX_ACKONLY;
	if (seq == g->next_rx) {
		g->next_rx = ox_seq_add(g->next_rx, 1);
		g->nak_sent = false;
		g->nak_due = false;
		if (!g->ack_due) {
			g->ack_due = true;
			g->ack_deadline = now + g->ack_delay_ns;
		}
		if (++g->unacked_rx >= OX_ACK_BATCH)
			g->ack_deadline = now;
		return OX_RX_ACCEPT;
	}
	if (ox_seq_sub(g->next_rx, seq) <= OX_SEQ_HALF) {
		g->n_dup++;
		if (ack_dup && !g->ack_due) {
			g->ack_due = true;
			g->ack_deadline = now + g->ack_delay_ns;
		}
		return OX_RX_DUP;
	}
	g->n_ooo++;
	if (!g->nak_sent)
		g->nak_due = true;
	return OX_RX_OOO;
}

void ox_gbn_ack_fields(struct ox_gbn *g, struct ox_tloe *h)
{
	h->seq_ack = ox_seq_sub(g->next_rx, 1);
	h->ack = 1;
	if (g->nak_due) {
		h->ack = 0;
		g->nak_due = false;
		g->nak_sent = true;
		g->n_naks_tx++;
	}
	g->ack_due = false;
	g->unacked_rx = 0;
}

uint64_t ox_gbn_tick(struct ox_gbn *g, uint64_t now)
{
	uint64_t next = UINT64_MAX;
	if (g->count) {
		uint64_t rto = g->rto_ns << g->backoff;
		if (now - g->last_progress >= rto) {
			g->rtx_due = true;
			g->n_timeouts++;
			g->silent++;
			g->last_progress = now;
			/* a silent peer is retried ever more slowly, up to 128 x rto */
			if (g->backoff < 7)
				g->backoff++;
			rto = g->rto_ns << g->backoff;
		}
		next = g->last_progress + rto;
	}
	if (g->nak_due)
		next = now;
	if (g->ack_due && g->ack_deadline < next)
		next = g->ack_deadline;
	return next;
}

void ox_gbn_resume(struct ox_gbn *g, uint64_t now)
{
	g->backoff = 0;
	g->silent = 0;
	g->last_progress = now;
	if (g->count)
		g->rtx_due = true;
}
