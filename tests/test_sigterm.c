/*
 * test_sigterm.c - SIGTERM stops accepting, lets in-flight requests finish,
 * and exits 0. A client busy with batched writes sees each operation either
 * succeed or fail with a connection error - never a wrong answer - and the
 * node's exit is prompt.
 */
#include "harness.h"

int main(void)
{
	const char *sec = t_secret("secret", T_SECRET);
	struct t_node n;
	em_pool *p;
	em_region *r;
	em_queue *q;
	static uint8_t buf[8][1u << 20];
	struct em_completion c[8];
	int ok = 0, failed = 0, rc;

	atexit(t_cleanup);
	t_node_start(&n, "64M", sec, NULL);
	p = t_connect_ok(&n, 1, sec);
	CHECK_RC(em_region_create(p, NULL, 16u << 20, NULL, &r), 0);
	CHECK_RC(em_queue_create(p, 8, &q), 0);
	for (int round = 0; round < 200; round++) {
		struct em_op ops[8];
		for (int i = 0; i < 8; i++)
			ops[i] = (struct em_op){ .opcode = EM_OP_WRITE,
						 .region = r,
						 .offset = (uint64_t)i << 20,
						 .buf = buf[i],
						 .len = 1u << 20 };
		if (round == 20)
			kill(n.pid, SIGTERM);
		rc = em_submit(q, ops, 8);
		if (rc != 8)
			break;
		for (int got = 0; got < 8;) {
			int m = em_wait(q, c, 1, 8, -1);
			CHECK(m > 0);
			for (int i = 0; i < m; i++) {
				if (c[i].result == 0)
					ok++;
				else {
					/* the node is gone, and the caller is told so */
					CHECK_RC(c[i].result, -EM_ENONODE);
					failed++;
				}
			}
			got += m;
		}
		if (failed)
			break;
	}
	CHECK(ok >= 160);
	CHECK(failed > 0);
	CHECK_RC(t_node_stop(&n, 0), 0); /* already stopping: just reap it */
	CHECK(t_log_has(&n, "stopping") && t_log_has(&n, "stopped"));
	em_queue_destroy(q);
	em_region_close(r);
	em_pool_close(p);
	/* a node with no clients stops at once too */
	t_node_start(&n, "8M", sec, NULL);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	return 0;
}
