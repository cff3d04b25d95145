/*
 * test_spin.c - the spin-then-sleep rule (em_spin, src/common/util.h) backs
 * off as documented, driven with made-up clocks so that no timing of this
 * machine enters:
 *   - no budget: never spins;
 *   - a spin that runs out makes the next wait sleep at once, a second miss
 *     in a row the next 3, then 7, ... never more than EM_SPIN_SKIP_MAX;
 *   - a spin that finds its work (the next wait begins without a miss)
 *     clears the misses, so the next miss skips 1 again;
 *   - a previous wait over twice the budget still means no spin;
 *   - past the first tenth of the budget a try yields, and the budget still
 *     ends the spin.
 */
#include <stdio.h>

#include "common/util.h"

static int fails;

#define CHECK(c)                                                                \
	do {                                                                    \
		if (!(c)) {                                                     \
			fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); \
			fails++;                                                \
		}                                                               \
	} while (0)

#define BUDGET 50000ull

/* One wait from t that spins until the budget runs out: true if it spun. */
static int miss(struct em_spin *s, uint64_t *t)
{
	int spun = em_spin_begin(s, *t);

	if (spun) {
		CHECK(em_spin_again(s, *t + 1000)); /* inside the pure tenth */
		CHECK(!em_spin_again(s, *t + BUDGET));
	}
	*t += BUDGET + 1000;
	em_spin_end(s, *t - 1000 - BUDGET / 2); /* the wait itself was short */
	return spun;
}

/* Waits in a row that sleep at once before the next one spins again. */
static unsigned skipped(struct em_spin *s, uint64_t *t)
{
	unsigned n = 0;

	while (!miss(s, t) && n < 1000)
		n++;
	return n;
}

int main(void)
{
	struct em_spin s = { 0 };
	uint64_t t = 1000000000ull;

	CHECK(!em_spin_begin(&s, t)); /* no budget */

	s = (struct em_spin){ .budget_ns = BUDGET };
	CHECK(miss(&s, &t));         /* the first wait spins, and misses */
	CHECK(skipped(&s, &t) == 1); /* then sleeps once; the spin after it misses */
	CHECK(skipped(&s, &t) == 3); /* then three */
	CHECK(skipped(&s, &t) == 7); /* then seven */
	CHECK(skipped(&s, &t) == 15);
	CHECK(skipped(&s, &t) == 31);
	CHECK(skipped(&s, &t) == 63);
	CHECK(skipped(&s, &t) == EM_SPIN_SKIP_MAX); /* the cap */

	/* the spin that ended the last run of skips missed; sleep it out, then
	 * a spin that finds its work clears the misses */
	skipped(&s, &t); /* consume whatever is left: ends on a spin that missed */
	while (!em_spin_begin(&s, t)) {
		t += 1000;
		em_spin_end(&s, t);
	}
	em_spin_end(&s, t + 2000); /* found it within the budget */
	t += 100000;
	CHECK(miss(&s, &t));         /* spins again (a success leaves no skip) and misses */
	CHECK(skipped(&s, &t) == 1); /* one miss in a row: one skip */

	/* a long previous wait: no spin, and no back-off counted for it */
	s = (struct em_spin){ .budget_ns = BUDGET };
	CHECK(em_spin_begin(&s, t));
	em_spin_end(&s, t + 3 * BUDGET);
	t += 4 * BUDGET;
	CHECK(!em_spin_begin(&s, t));
	em_spin_end(&s, t + 1000); /* short this time */
	t += 2000;
	CHECK(em_spin_begin(&s, t));

	/* past a tenth of the budget it yields and goes on; at the budget it
	 * stops (the yield on this machine may be slow: then the spin ends
	 * after one more try, which the first call still allows) */
	CHECK(em_spin_again(&s, t + BUDGET / 5));
	CHECK(!em_spin_again(&s, t + BUDGET));

	if (fails)
		return 1;
	printf("spin: back-off 1, 3, 7 ... %u, reset on success, budget bounds\n",
	       EM_SPIN_SKIP_MAX);
	return 0;
}
