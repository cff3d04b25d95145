/*
 * test_submit.c - em_submit that runs out of memory part-way through a batch.
 * The queue's staging array grows when a batch needs more parts than it has
 * room for; the library's staging failpoint makes that growth fail the way a
 * failed realloc would. What was posted must be exactly what em_submit
 * reports, every posted operation must complete, and the failed operation
 * must not hold an in-flight slot afterwards.
 */
#include "harness.h"

/* Staging failpoint of the static library (lib/internal.h; never exported
 * from the shared one): nonzero makes the Nth growth from now fail. */
extern unsigned em_fail_stage_grow;

#define DEPTH 64
#define SMALL 40 /* single-part ops that fit the preallocated staging */

/* Reaps until nothing more arrives within a second; returns how many. */
static int drain(em_queue *q, uint64_t *seen_mask, int want_result)
{
	struct em_completion c[DEPTH];
	int total = 0, m;

	while ((m = em_wait(q, c, 1, DEPTH, 5000)) > 0) {
		for (int i = 0; i < m; i++) {
			CHECK(c[i].user_data < 64);
			CHECK(!(*seen_mask & (1ull << c[i].user_data)));
			*seen_mask |= 1ull << c[i].user_data;
			CHECK_RC(c[i].result, want_result);
		}
		total += m;
	}
	CHECK_RC(m, 0);
	return total;
}

int main(void)
{
	const char *sec = t_secret("secret", T_SECRET);
	static uint8_t small[SMALL][4096], big[128u << 20];
	struct em_op ops[SMALL + 2];
	struct t_node n;
	em_pool *pool;
	em_region *r;
	em_queue *q;
	uint64_t seen = 0;
	int rc;

	atexit(t_cleanup);
	t_node_start(&n, "256M", sec, NULL);
	pool = t_connect_ok(&n, 1, sec);
	CHECK_RC(em_region_create(pool, NULL, sizeof(big), NULL, &r), 0);
	CHECK_RC(em_queue_create(pool, DEPTH, &q), 0);

	for (int i = 0; i < SMALL; i++) {
		memset(small[i], i + 1, sizeof(small[i]));
		ops[i] = (struct em_op){ .opcode = EM_OP_WRITE,
					 .region = r,
					 .offset = (uint64_t)i * 4096,
					 .buf = small[i],
					 .len = 4096,
					 .user_data = (uint64_t)i };
	}
	/* 32 parts at EM_MAX_IO: with the SMALL before it, more than the
	 * staging's room for DEPTH parts, so it must grow */
	ops[SMALL] = (struct em_op){ .opcode = EM_OP_READ,
				     .region = r,
				     .offset = 0,
				     .buf = big,
				     .len = sizeof(big),
				     .user_data = SMALL };
	ops[SMALL + 1] = ops[0];
	ops[SMALL + 1].user_data = SMALL + 1;

	em_fail_stage_grow = 1;
	rc = em_submit(q, ops, SMALL + 2);
	em_fail_stage_grow = 0;
	/* the first SMALL were posted, the big read was not, nor what follows */
	CHECK_RC(rc, SMALL);
	CHECK_RC(drain(q, &seen, 0), SMALL);
	CHECK(seen == (1ull << SMALL) - 1);
	CHECK_RC(em_queue_inflight(q), 0);

	/* nothing posted at all: the error, and still no slot held (a queue
	 * of depth 16 has staging room for 16 parts, the big read needs 32) */
	{
		em_queue *q2;
		uint64_t seen2 = 0;

		CHECK_RC(em_queue_create(pool, 16, &q2), 0);
		em_fail_stage_grow = 1;
		CHECK_RC(em_submit(q2, &ops[SMALL], 1), -ENOMEM);
		em_fail_stage_grow = 0;
		CHECK_RC(em_queue_inflight(q2), 0);
		CHECK_RC(drain(q2, &seen2, 0), 0);
		em_queue_destroy(q2);
	}

	/* every slot is free: a full queue's worth posts and completes */
	for (int i = 0; i < DEPTH; i++) {
		ops[i % SMALL].user_data = (uint64_t)i;
		CHECK_RC(em_submit(q, &ops[i % SMALL], 1), 1);
	}
	CHECK_RC(em_queue_inflight(q), DEPTH);
	seen = 0;
	CHECK_RC(drain(q, &seen, 0), DEPTH);
	CHECK(seen == ~0ull);

	/* and the op that failed goes through once memory is there */
	CHECK_RC(em_submit(q, &ops[SMALL], 1), 1);
	seen = 0;
	CHECK_RC(drain(q, &seen, 0), 1);
	for (int i = 0; i < SMALL; i++)
		CHECK(big[(size_t)i * 4096] == i + 1 && big[(size_t)i * 4096 + 4095] == i + 1);

	em_queue_destroy(q);
	em_region_close(r);
	em_pool_close(pool);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	return 0;
}
