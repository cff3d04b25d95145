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
 * And the gate that stops spinning while tasks wait for a CPU
 * (em_spin_gate), on made-up samples of the stall total:
 *   - open at first, and while the stall stays at or under a quarter;
 *   - a stall over a quarter shuts it for 100 ms; a stall that comes back
 *     after it reopened shuts it for 200, 400 ... 6400 ms at most;
 *   - a stall while shut keeps it shut; quiet samples with it open halve
 *     the next hold; its shut time is counted; a sample more than four
 *     periods after the last judges nothing;
 *   - em_pressure_total reads the "some" total of a pressure file, the
 *     machine's own where Linux has one, and refuses anything else.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

#define MS 1000000ull

/* One gate sample ms after the last (*t), with stall_ms of stall in it. */
static bool gate(struct em_spin_gate *g, uint64_t *t, uint64_t *stall, uint64_t ms,
		 uint64_t stall_ms)
{
	*t += ms * MS;
	*stall += stall_ms * 1000;
	return em_spin_gate_update(g, *t, *stall);
}

/* Samples of 100 ms with the stall over a quarter, from open to open:
 * how long (ms) the gate stayed shut. */
static uint64_t shut_for(struct em_spin_gate *g, uint64_t *t, uint64_t *stall)
{
	uint64_t ms = 0;

	CHECK(!gate(g, t, stall, 100, 50)); /* the stall shuts it */
	while (!gate(g, t, stall, 100, 0) && ms < 100000)
		ms += 100;
	return ms + 100;
}

static void gate_checks(void)
{
	struct em_spin_gate g = { 0 };
	uint64_t t = 5000 * MS, stall = 123456789, ms;

	CHECK(em_spin_gate_update(&g, t, stall)); /* the first sample: open */
	CHECK(gate(&g, &t, &stall, 100, 25));     /* exactly a quarter: open */
	CHECK(gate(&g, &t, &stall, 100, 0));
	CHECK(shut_for(&g, &t, &stall) == 100);
	CHECK(shut_for(&g, &t, &stall) == 200); /* it came back: doubled */
	CHECK(shut_for(&g, &t, &stall) == 400);
	for (int i = 0; i < 6; i++)
		shut_for(&g, &t, &stall);
	CHECK(shut_for(&g, &t, &stall) == EM_SPIN_HOLD_MAX_NS / MS); /* the cap */

	/* a stall that lasts keeps it shut past its hold */
	g = (struct em_spin_gate){ 0 };
	em_spin_gate_update(&g, t, stall);
	CHECK(!gate(&g, &t, &stall, 100, 60));
	for (int i = 0; i < 20; i++)
		CHECK(!gate(&g, &t, &stall, 100, 60));
	CHECK(gate(&g, &t, &stall, 100, 0)); /* open once the stall ends */
	CHECK(g.shut_ns == 21 * 100 * MS);

	/* the stall while shut was not ours: the hold doubled once only */
	ms = shut_for(&g, &t, &stall);
	CHECK(ms == 200);
	/* a sample long after the last only starts a new interval: a node
	 * that sampled nothing for a while does not judge by that time */
	CHECK(gate(&g, &t, &stall, 100, 0));   /* quiet and open: hold 400 -> 200 */
	CHECK(gate(&g, &t, &stall, 500, 400)); /* 80% of a long gap: ignored */
	CHECK(!gate(&g, &t, &stall, 100, 30)); /* 30% of a sample: shut for 200 ms */
	CHECK(!gate(&g, &t, &stall, 100, 0));
	CHECK(gate(&g, &t, &stall, 100, 0));
	/* quiet samples with the gate open bring the hold back down */
	for (int i = 0; i < 40; i++)
		CHECK(gate(&g, &t, &stall, 100, 0));
	CHECK(shut_for(&g, &t, &stall) == 100);
}

static void pressure_checks(void)
{
	char path[] = "/tmp/em-test-pressure-XXXXXX";
	const char *good = "some avg10=1.50 avg60=0.20 avg300=0.05 total=987654321\n"
			   "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
	const char *bad[] = { "full avg10=0.00 total=5\n", "some avg10=0.00\nfull total=7\n",
			      "some avg10=0.00 total=x\n", "" };
	uint64_t v = 0;
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	unlink(path);
	CHECK(write(fd, good, strlen(good)) == (ssize_t)strlen(good));
	CHECK(em_pressure_total(fd, &v) == 0 && v == 987654321ull);
	CHECK(em_pressure_total(fd, &v) == 0 && v == 987654321ull); /* again, from the start */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(ftruncate(fd, 0) == 0);
		CHECK(pwrite(fd, bad[i], strlen(bad[i]), 0) == (ssize_t)strlen(bad[i]));
		CHECK(em_pressure_total(fd, &v) == -EINVAL);
	}
	close(fd);
	fd = open("/proc/pressure/cpu", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) { /* the machine's own, where Linux keeps it */
		uint64_t a = 0, b = 0;

		CHECK(em_pressure_total(fd, &a) == 0);
		CHECK(em_pressure_total(fd, &b) == 0 && b >= a);
		close(fd);
	}
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

	gate_checks();
	pressure_checks();
	if (fails)
		return 1;
	printf("spin: back-off 1, 3, 7 ... %u, reset on success, budget bounds; "
	       "gate shut by CPU stall, 100 ms doubling to %llu ms\n",
	       EM_SPIN_SKIP_MAX, EM_SPIN_HOLD_MAX_NS / MS);
	return 0;
}
