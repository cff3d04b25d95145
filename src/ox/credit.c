/*
 * credit.c - OmniXtend flow control (specification section 5), per channel
 * and counted in flits.
 *
 * The sender spends a message's flit count before it puts the message in a
 * frame.  The receiver adds up the space it frees and hands it back in the
 * TLoE header of a sequenced frame, one channel per frame and only as a
 * power of two, so an odd remainder waits for the next frame.  Grants are
 * applied only from accepted frames: a retransmitted frame repeats its
 * grant, and counting it twice would let the peer overrun our buffers.
 */
#include <errno.h>
#include <string.h>

#include "ox/ox.h"

void ox_credit_init(struct ox_credit *c, uint32_t start, const uint32_t rxbuf[6])
{
	memset(c, 0, sizeof(*c));
	for (int ch = OX_CH_A; ch <= OX_CH_E; ch++) {
		c->tx[ch] = start;
		/* the peer already assumes `start`; the rest of our buffer is owed */
		if (rxbuf[ch] > start)
			c->owed[ch] = rxbuf[ch] - start;
	}
}

int ox_credit_spend(struct ox_credit *c, unsigned ch, unsigned flits)
{
	if (ch < OX_CH_A || ch > OX_CH_E)
		return -EINVAL;
	if (c->tx[ch] < flits)
		return -EAGAIN;
	c->tx[ch] -= flits;
	return 0;
}

int ox_credit_check(unsigned ch, unsigned exp)
{
	if (ch > OX_CH_E || exp > 31)
		return -EINVAL;
	return 0;
}

void ox_credit_grant(struct ox_credit *c, unsigned ch, unsigned exp)
{
	if (ch < OX_CH_A || ox_credit_check(ch, exp))
		return;
	uint64_t t = (uint64_t)c->tx[ch] + (1ull << exp);
	if (t > OX_CREDIT_MAX) {
		t = OX_CREDIT_MAX;
		c->n_saturated++;
	}
	c->tx[ch] = (uint32_t)t;
}

void ox_credit_free(struct ox_credit *c, unsigned ch, unsigned flits)
{
	if (ch >= OX_CH_A && ch <= OX_CH_E)
		c->owed[ch] += flits;
}

bool ox_credit_first_due(const struct ox_credit *c)
{
	for (unsigned i = OX_CH_A; i <= OX_CH_E; i++)
		if (c->owed[i] && !(c->granted & 1u << i))
			return true;
	return false;
}

bool ox_credit_pick(struct ox_credit *c, uint8_t *ch, uint8_t *exp)
{
	unsigned best = 0;
	for (unsigned i = OX_CH_A; i <= OX_CH_E && !best; i++)
		if (c->owed[i] && !(c->granted & 1u << i))
			best = i;
	if (!best)
		for (unsigned i = OX_CH_A; i <= OX_CH_E; i++)
			if (c->owed[i] > c->owed[best])
				best = i;
	if (!best)
		return false;
	c->granted |= (uint8_t)(1u << best);
	unsigned e = 31 - (unsigned)__builtin_clz(c->owed[best]);
	c->owed[best] -= 1u << e;
	*ch = (uint8_t)best;
	*exp = (uint8_t)e;
	return true;
}
