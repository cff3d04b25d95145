/*
 * test_small_first.c - small operations overtake bulk ones on one queue.
 *
 * The TCP channel holds bulk reads and writes behind a window and cuts bulk
 * reads into slices, so that a 4 KiB read posted after 16 MiB of reads is
 * answered before them. That may change only the order of completions, not
 * what anyone reads or writes: overlapping operations where one writes keep
 * their order, reads cut into slices come back whole, and atomics are
 * applied once. Checked here against a real node:
 *   - small reads and an atomic submitted after eight 2 MiB reads complete
 *     before every one of them (the node answers in order, so without the
 *     hold-back they would come last);
 *   - a small write into the bytes of a waiting bulk read does not show in
 *     that read, and a small read of bytes a waiting bulk write changes sees
 *     the new bytes;
 *   - every byte of the bulk reads is right, in both window settings
 *     (ETHERMEM_BULK_WINDOW=0 sends everything in order, as before).
 */
#include <stdbool.h>
#include <stdlib.h>

#include "harness.h"

#define BULK (2u << 20)
#define NBULK 8
#define DEPTH 32
#define REGION (NBULK * BULK * 2)

static uint8_t pattern(uint64_t off)
{
	return (uint8_t)(off * 131 + (off >> 12) * 7 + 1);
}

/* Waits for `want` completions; order[] gets their user_data in order. */
static int reap(em_queue *q, unsigned want, uint64_t *order)
{
	struct em_completion c[DEPTH];
	unsigned got = 0;

	while (got < want) {
		int m = em_wait(q, c, 1, DEPTH, 10000);
		if (m <= 0)
			return m ? m : -1;
		for (int i = 0; i < m; i++) {
			CHECK_RC(c[i].result, 0);
			order[got++] = c[i].user_data;
		}
	}
	return 0;
}

static void run(em_pool *pool, em_region *r, bool windowed)
{
	static uint8_t bulk[NBULK][BULK], small[3][4096], wbuf[BULK];
	struct em_op ops[NBULK + 4];
	uint64_t order[NBULK + 4], v = 0;
	bool first;
	em_queue *q;
	unsigned n = 0;

	CHECK_RC(em_queue_create(pool, DEPTH, &q), 0);
	for (unsigned i = 0; i < NBULK; i++)
		ops[n++] = (struct em_op){ .opcode = EM_OP_READ,
					   .region = r,
					   .offset = (uint64_t)i * BULK,
					   .buf = bulk[i],
					   .len = BULK,
					   .user_data = i };
	/* a small read far from the bulk ones, an atomic, and a small write
	 * into the last bulk read's bytes (it must not show there) */
	ops[n++] = (struct em_op){ .opcode = EM_OP_READ,
				   .region = r,
				   .offset = REGION - 8192,
				   .buf = small[0],
				   .len = 4096,
				   .user_data = 100 };
	ops[n++] = (struct em_op){ .opcode = EM_OP_ATOMIC,
				   .region = r,
				   .offset = REGION - 64,
				   .atomic_op = EM_ATOMIC_FADD,
				   .operand = 1,
				   .user_data = 101 };
	memset(small[1], 0xEE, 4096);
	ops[n++] = (struct em_op){ .opcode = EM_OP_WRITE,
				   .region = r,
				   .offset = (uint64_t)(NBULK - 1) * BULK + 8192,
				   .buf = small[1],
				   .len = 4096,
				   .user_data = 102 };
	CHECK_RC(em_submit(q, ops, n), (int)n);
	CHECK_RC(reap(q, n, order), 0);
	/* with the window the small read and the atomic came before every
	 * bulk read; without it, after them all */
	first = order[0] >= 100 && order[1] >= 100;
	CHECK(first == windowed);
	for (unsigned i = 0; i < NBULK; i++) {
		uint64_t base = (uint64_t)i * BULK;
		unsigned bad = 0;
		for (uint64_t k = 0; k < BULK; k++)
			bad += bulk[i][k] != pattern(base + k);
		CHECK(bad == 0);
	}
	for (uint64_t k = 0; k < 4096; k++)
		v += small[0][k] != pattern(REGION - 8192 + k);
	CHECK(v == 0);
	/* the write landed after the bulk read; put the pattern back */
	CHECK_RC(em_read(r, (uint64_t)(NBULK - 1) * BULK + 8192, small[2], 4096), 0);
	CHECK(!memcmp(small[2], small[1], 4096));
	for (uint64_t k = 0; k < 4096; k++)
		small[2][k] = pattern((uint64_t)(NBULK - 1) * BULK + 8192 + k);
	CHECK_RC(em_write(r, (uint64_t)(NBULK - 1) * BULK + 8192, small[2], 4096), 0);

	/* a bulk write, then a small read of its bytes: the read sees them */
	memset(wbuf, 0x77, sizeof(wbuf));
	n = 0;
	ops[n++] = (struct em_op){ .opcode = EM_OP_WRITE,
				   .region = r,
				   .offset = (uint64_t)NBULK * BULK,
				   .buf = wbuf,
				   .len = BULK,
				   .user_data = 0 };
	ops[n++] = (struct em_op){ .opcode = EM_OP_READ,
				   .region = r,
				   .offset = (uint64_t)NBULK * BULK + BULK - 4096,
				   .buf = small[0],
				   .len = 4096,
				   .user_data = 100 };
	CHECK_RC(em_submit(q, ops, n), (int)n);
	CHECK_RC(reap(q, n, order), 0);
	CHECK(small[0][0] == 0x77 && !memcmp(small[0], small[0] + 1, 4095));
	CHECK_RC(em_atomic(r, REGION - 64, EM_ATOMIC_FADD, 0, 0, &v), 0);
	fprintf(stderr, "window %s: small ops first: %s, counter %llu\n", windowed ? "on" : "off",
		first ? "yes" : "no", (unsigned long long)v);
	em_queue_destroy(q);
}

int main(void)
{
	const char *sec = t_secret("secret", T_SECRET);
	static uint8_t buf[BULK];
	struct t_node n;
	em_pool *pool;
	em_region *r;
	uint64_t v = 0;

	atexit(t_cleanup);
	t_node_start(&n, "256M", sec, NULL);
	for (int w = 0; w < 2; w++) {
		setenv("ETHERMEM_BULK_WINDOW", w ? "1M" : "0", 1);
		pool = t_connect_ok(&n, 1, sec);
		CHECK_RC(em_region_create(pool, NULL, REGION, NULL, &r), 0);
		for (uint64_t off = 0; off < REGION; off += BULK) {
			for (uint64_t k = 0; k < BULK; k++)
				buf[k] = pattern(off + k);
			CHECK_RC(em_write(r, off, buf, BULK), 0);
		}
		v = 0;
		CHECK_RC(em_write(r, REGION - 64, &v, 8), 0);
		run(pool, r, w == 1);
		/* one fetch-and-add, applied once */
		CHECK_RC(em_atomic(r, REGION - 64, EM_ATOMIC_FADD, 0, 0, &v), 0);
		CHECK(v == 1);
		em_region_close(r);
		em_pool_close(pool);
	}
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	return t_fails ? 1 : 0;
}
