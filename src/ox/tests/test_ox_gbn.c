/*
 * test_ox_gbn.c - the go-back-N state machine and the credit counters,
 * driven directly with explicit times: 22-bit wrap-around, the transmit
 * window, accept / duplicate / out-of-order, one NAK per episode, ACK
 * handling (stale ones ignored), timeouts, delayed ACKs, and credits in
 * powers of two with overflow refused.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ox/ox.h"

#include "harness.h"

static void test_seq(void)
{
	CHECK(ox_seq_add(OX_SEQ_MASK, 1) == 0);
	CHECK(ox_seq_sub(0, OX_SEQ_MASK) == 1);
	CHECK(ox_seq_sub(5, 10) == OX_SEQ_MOD - 5);
}

static void test_tx(void)
{
	struct ox_gbn g;
	CHECK(ox_gbn_init(&g, 4, 128, 1000, 100) == 0);
	CHECK(g.next_tx == 0 && g.ackd == OX_SEQ_MASK);
	for (uint32_t i = 0; i < 4; i++) {
		CHECK(ox_gbn_can_send(&g));
		uint8_t *s = ox_gbn_tx_slot(&g);
		memset(s, (int)i, 64);
		CHECK(ox_gbn_tx_commit(&g, 64, 10) == i);
	}
	CHECK(!ox_gbn_can_send(&g)); /* ring full */
	size_t len;
	CHECK(ox_gbn_unacked(&g, 2, &len)[0] == 2 && len == 64);
	ox_gbn_on_ack(&g, 1, true, 20); /* frames 0 and 1 */
	CHECK(g.count == 2 && g.ackd == 1 && !g.rtx_due);
	CHECK(ox_gbn_unacked(&g, 0, &len)[0] == 2);
	ox_gbn_on_ack(&g, 0, true, 21); /* stale: ignored */
	CHECK(g.count == 2 && g.ackd == 1);
	ox_gbn_on_ack(&g, 1000, true, 21); /* beyond what we sent: ignored */
	CHECK(g.count == 2 && g.ackd == 1);
	ox_gbn_on_ack(&g, 2, false, 22); /* NAK: 2 arrived, resend from 3 */
	CHECK(g.count == 1 && g.rtx_due && g.n_naks_rx == 1);
	g.rtx_due = false;
	/* timeout: nothing acked for rto */
	CHECK(ox_gbn_tick(&g, 500) == 22 + 1000);
	CHECK(!g.rtx_due);
	CHECK(ox_gbn_tick(&g, 1022) == 1022 + 2000); /* backed off */
	CHECK(g.rtx_due && g.n_timeouts == 1);
	g.rtx_due = false;
	CHECK(ox_gbn_tick(&g, 3021) == 3022 && !g.rtx_due);
	CHECK(ox_gbn_tick(&g, 3022) == 3022 + 4000 && g.rtx_due);
	ox_gbn_on_ack(&g, 3, true, 1100);
	CHECK(g.backoff == 0);
	CHECK(g.count == 0 && ox_gbn_tick(&g, 5000) == UINT64_MAX);

	/* the 2^21 window holds even with room in the ring */
	ox_gbn_reset(&g);
	g.next_tx = ox_seq_add(g.ackd, OX_SEQ_HALF);
	CHECK(!ox_gbn_can_send(&g));
	g.next_tx = ox_seq_add(g.ackd, OX_SEQ_HALF - 1);
	CHECK(ox_gbn_can_send(&g));
	ox_gbn_free(&g);
}

static void test_rx(void)
{
	struct ox_gbn g;
	struct ox_tloe h;
	CHECK(ox_gbn_init(&g, 4, 128, 1000, 100) == 0);
	CHECK(ox_gbn_rx(&g, 0, false, true, 0) == OX_RX_ACCEPT);
	CHECK(g.next_rx == 1 && g.ack_due && g.ack_deadline == 100);
	CHECK(ox_gbn_tick(&g, 50) == 100);
	CHECK(ox_gbn_rx(&g, 0, false, true, 1) == OX_RX_DUP);
	CHECK(ox_gbn_rx(&g, 3, false, true, 2) == OX_RX_OOO && g.nak_due);
	ox_gbn_ack_fields(&g, &h);
	CHECK(h.ack == 0 && h.seq_ack == 0 && !g.ack_due && g.nak_sent);
	CHECK(ox_gbn_rx(&g, 4, false, true, 3) == OX_RX_OOO && !g.nak_due); /* one per episode */
	CHECK(ox_gbn_rx(&g, 1, false, true, 4) == OX_RX_ACCEPT && !g.nak_sent);
	ox_gbn_ack_fields(&g, &h);
	CHECK(h.ack == 1 && h.seq_ack == 1);
	/* 1.1 ACK-only consumes nothing */
	CHECK(ox_gbn_rx(&g, 2, true, true, 5) == OX_RX_ACKONLY && g.next_rx == 2 && !g.ack_due);
	/* duplicates the receiver is told not to answer (1.0.3 ACK-only) */
	CHECK(ox_gbn_rx(&g, 1, false, false, 6) == OX_RX_DUP && !g.ack_due);
	/* far outside the window either way */
	CHECK(ox_gbn_rx(&g, ox_seq_add(2, OX_SEQ_HALF - 1), false, true, 7) == OX_RX_OOO);
	CHECK(ox_gbn_rx(&g, ox_seq_sub(2, OX_SEQ_HALF), false, true, 7) == OX_RX_DUP);
	CHECK(ox_gbn_rx(&g, ox_seq_sub(2, OX_SEQ_HALF + 1), false, true, 7) == OX_RX_OOO);
	/* wrap-around */
	ox_gbn_reset(&g);
	g.next_rx = OX_SEQ_MASK;
	CHECK(ox_gbn_rx(&g, OX_SEQ_MASK, false, true, 8) == OX_RX_ACCEPT && g.next_rx == 0);
	CHECK(ox_gbn_rx(&g, OX_SEQ_MASK, false, true, 8) == OX_RX_DUP);
	CHECK(ox_gbn_rx(&g, 0, false, true, 8) == OX_RX_ACCEPT);
	/* 16 unacknowledged frames make the ACK due at once */
	ox_gbn_ack_fields(&g, &h);
	for (uint32_t s = 1; s <= 16; s++)
		ox_gbn_rx(&g, s, false, true, 1000);
	CHECK(g.ack_due && g.ack_deadline == 1000);
	ox_gbn_free(&g);
}

static void test_credit(void)
{
	struct ox_credit c;
	uint32_t rx[6] = { 0, 4096 + 128 + 3, 0, 64, 0, 64 };
	ox_credit_init(&c, 0, rx);
	CHECK(c.tx[OX_CH_A] == 0 && ox_credit_spend(&c, OX_CH_A, 2) == -EAGAIN);
	uint8_t ch, e;
	/* each channel's first grant before any channel's second */
	CHECK(ox_credit_first_due(&c));
	CHECK(ox_credit_pick(&c, &ch, &e) && ch == OX_CH_A && e == 12);
	CHECK(ox_credit_pick(&c, &ch, &e) && ch == OX_CH_C && e == 6);
	CHECK(ox_credit_first_due(&c));
	CHECK(ox_credit_pick(&c, &ch, &e) && ch == OX_CH_E && e == 6);
	CHECK(!ox_credit_first_due(&c));
	CHECK(ox_credit_pick(&c, &ch, &e) && ch == OX_CH_A && e == 7);
	CHECK(ox_credit_pick(&c, &ch, &e) && ch == OX_CH_A && e == 1);
	CHECK(ox_credit_pick(&c, &ch, &e) && ch == OX_CH_A && e == 0);
	CHECK(!ox_credit_pick(&c, &ch, &e));
	ox_credit_free(&c, OX_CH_A, 5);
	CHECK(ox_credit_pick(&c, &ch, &e) && e == 2 && c.owed[OX_CH_A] == 1);

	ox_credit_init(&c, 128, rx); /* 1.1 */
	CHECK(c.tx[OX_CH_D] == 128 && c.owed[OX_CH_A] == 4096 + 3 && c.owed[OX_CH_C] == 0);
	CHECK(ox_credit_spend(&c, OX_CH_D, 100) == 0 && c.tx[OX_CH_D] == 28);
	CHECK(ox_credit_spend(&c, OX_CH_D, 29) == -EAGAIN);
	ox_credit_grant(&c, OX_CH_D, 3);
	CHECK(c.tx[OX_CH_D] == 36);
	/* every exponent is legal; the counter saturates, never wraps */
	for (unsigned x = 0; x <= 31; x++)
		CHECK(ox_credit_check(OX_CH_D, x) == 0);
	CHECK(ox_credit_check(6, 0) == -EINVAL && ox_credit_check(7, 3) == -EINVAL);
	ox_credit_grant(&c, OX_CH_D, 28);
	CHECK(c.tx[OX_CH_D] == 36 + (1u << 28) && c.n_saturated == 0);
	ox_credit_grant(&c, OX_CH_D, 31);
	CHECK(c.tx[OX_CH_D] == 36 + (1u << 28) + (1u << 31));
	ox_credit_grant(&c, OX_CH_D, 31);
	CHECK(c.tx[OX_CH_D] == OX_CREDIT_MAX && c.n_saturated == 1);
	ox_credit_grant(&c, OX_CH_D, 0);
	CHECK(c.tx[OX_CH_D] == OX_CREDIT_MAX && c.n_saturated == 2);
	CHECK(ox_credit_spend(&c, OX_CH_D, 1000) == 0 && c.tx[OX_CH_D] == OX_CREDIT_MAX - 1000);
}

int main(void)
{
	t_keep_going = 1;
	test_seq();
	test_tx();
	test_rx();
	test_credit();
	if (t_fails) {
		fprintf(stderr, "test_ox_gbn: %d failures\n", t_fails);
		return 1;
	}
	printf("test_ox_gbn: ok\n");
	return 0;
}
