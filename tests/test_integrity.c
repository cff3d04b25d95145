/*
 * test_integrity.c - thousands of random reads and writes, synchronous and
 * batched, against a local reference copy; a single node and a region
 * striped over three. Ops in one batch may overlap: a node serves a
 * connection in order and a byte always lives on one node, so the reference
 * applies them in submission order.
 */
#include "harness.h"

static void run(em_pool *pool, uint64_t size, uint64_t seed)
{
	uint8_t *ref = calloc(1, size), *buf = malloc(1u << 20);
	struct em_region_opts ro = { .size = sizeof(ro), .chunk_size = 64 << 10 };
	em_region *r;
	em_queue *q;
	uint64_t s = seed;

	CHECK(ref && buf);
	CHECK_RC(em_region_create(pool, NULL, size, &ro, &r), 0);
	/* a new region reads as zeros */
	CHECK_RC(em_read(r, 0, buf, 1u << 20), 0);
	for (int i = 0; i < (1 << 20); i++)
		CHECK(buf[i] == 0);
	for (int i = 0; i < 3000; i++) {
		uint64_t len = 1 + t_rand(&s) % ((t_rand(&s) & 3) ? 4096 : (1u << 20));
		uint64_t off = t_rand(&s) % (size - len + 1);
		if (t_rand(&s) & 1) {
			for (uint64_t k = 0; k < len; k++)
				ref[off + k] = buf[k] = (uint8_t)t_rand(&s);
			CHECK_RC(em_write(r, off, buf, len), 0);
		} else {
			CHECK_RC(em_read(r, off, buf, len), 0);
			CHECK(!memcmp(buf, ref + off, len));
		}
	}
	CHECK_RC(em_queue_create(pool, 32, &q), 0);
	for (int round = 0; round < 200; round++) {
		struct em_op ops[32];
		uint8_t *bufs[32];
		uint64_t want_off[32], want_len[32];
		struct em_completion c[32];
		int got = 0, nops = 1 + (int)(t_rand(&s) % 32);

		for (int i = 0; i < nops; i++) {
			uint64_t len = 1 + t_rand(&s) % 70000, off = t_rand(&s) % (size - len + 1);
			bufs[i] = malloc(len);
			memset(&ops[i], 0, sizeof(ops[i]));
			ops[i].region = r;
			ops[i].offset = off;
			ops[i].len = len;
			ops[i].buf = bufs[i];
			ops[i].user_data = (uint64_t)i;
			want_off[i] = off;
			want_len[i] = len;
			if (t_rand(&s) % 3 == 0) {
				ops[i].opcode = EM_OP_WRITE;
				for (uint64_t k = 0; k < len; k++)
					bufs[i][k] = (uint8_t)t_rand(&s);
			} else {
				ops[i].opcode = EM_OP_READ;
			}
		}
		CHECK_RC(em_submit(q, ops, (unsigned)nops), nops);
		while (got < nops) {
			int n = em_wait(q, c + got, 1, (unsigned)(nops - got), -1);
			CHECK(n > 0);
			got += n;
		}
		/* replay in submission order on the reference */
		for (int i = 0; i < nops; i++) {
			CHECK(c[i].result == 0 ||
			      (fprintf(stderr, "op %d: %s\n", i, em_strerror(c[i].result)), 0));
			if (ops[i].opcode == EM_OP_WRITE)
				memcpy(ref + want_off[i], bufs[i], want_len[i]);
			else
				CHECK(!memcmp(bufs[i], ref + want_off[i], want_len[i]));
		}
		for (int i = 0; i < nops; i++)
			free(bufs[i]);
	}
	em_queue_destroy(q);
	/* whole-region comparison at the end */
	for (uint64_t off = 0; off < size; off += 1u << 20) {
		uint64_t len = size - off < (1u << 20) ? size - off : (1u << 20);
		CHECK_RC(em_read(r, off, buf, len), 0);
		CHECK(!memcmp(buf, ref + off, len));
	}
	CHECK_RC(em_region_close(r), 0);
	free(ref);
	free(buf);
}

int main(void)
{
	const char *sec = t_secret("secret", T_SECRET);
	struct t_node n[3];
	em_pool *pool;
	struct em_region_info info[4] = { { .size = sizeof(info[0]) } };

	atexit(t_cleanup);
	t_node_start(&n[0], "64M", sec, NULL);
	pool = t_connect_ok(n, 1, sec);
	run(pool, 24u << 20, 1);
	em_pool_close(pool);

	/* three nodes of 16 MiB: a 40 MiB region must stripe over all */
	t_node_start(&n[1], "16M", sec, NULL);
	t_node_start(&n[2], "16M", sec, NULL);
	t_node_stop(&n[0], SIGTERM);
	t_node_start(&n[0], "16M", sec, NULL);
	pool = t_connect_ok(n, 3, sec);
	{
		em_region *r;
		struct em_region_opts ro = { .size = sizeof(ro), .chunk_size = 1 << 20 };
		CHECK_RC(em_region_create(pool, "striped", 40u << 20, &ro, &r), 0);
		CHECK_RC(em_region_list(pool, info, 4), 1);
		CHECK(info[0].nodes == 3 && info[0].bytes == 40u << 20);
		em_region_close(r);
		CHECK_RC(em_region_delete(pool, "striped"), 0);
	}
	run(pool, 40u << 20, 2);
	em_pool_close(pool);
	for (int i = 0; i < 3; i++)
		CHECK_RC(t_node_stop(&n[i], SIGTERM), 0);
	return 0;
}
