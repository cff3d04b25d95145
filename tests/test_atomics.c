/*
 * test_atomics.c - every remote atomic's semantics on one word, alignment
 * and range errors, and exact counts when several client processes hammer
 * the same words with fetch-and-add and with compare-and-swap loops.
 */
#include "harness.h"

#define K 4    /* client processes */
#define N 2000 /* increments each */

static void semantics(em_region *r)
{
	uint64_t old;

	CHECK_RC(em_write(r, 0, &(uint64_t){ 10 }, 8), 0);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_FADD, 5, 0, &old), 0);
	CHECK(old == 10);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_CAS, 99, 14, &old), 0); /* no match */
	CHECK(old == 15);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_CAS, 99, 15, &old), 0);
	CHECK(old == 15);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_SWAP, 7, 0, &old), 0);
	CHECK(old == 99);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_SMIN, (uint64_t)-3, 0, &old), 0);
	CHECK(old == 7);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_UMIN, 5, 0, &old), 0); /* -3 is huge unsigned */
	CHECK(old == (uint64_t)-3);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_SMAX, (uint64_t)-8, 0, &old), 0);
	CHECK(old == 5);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_UMAX, (uint64_t)-8, 0, &old), 0);
	CHECK(old == 5);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_AND, 0xff, 0, &old), 0);
	CHECK(old == (uint64_t)-8);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_OR, 0x100, 0, &old), 0);
	CHECK(old == 0xf8);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_XOR, 0x1ff, 0, &old), 0);
	CHECK(old == 0x1f8);
	CHECK_RC(em_read(r, 0, &old, 8), 0);
	CHECK(old == 0x007);
	/* errors */
	CHECK_RC(em_atomic(r, 4, EM_ATOMIC_FADD, 1, 0, &old), -EINVAL);
	CHECK_RC(em_atomic(r, 4096, EM_ATOMIC_FADD, 1, 0, &old), -ERANGE);
	CHECK_RC(em_atomic(r, 0, (enum em_atomic_op)77, 1, 0, &old), -EINVAL);
}

int main(void)
{
	const char *sec = t_secret("secret", T_SECRET);
	struct t_node n;
	em_pool *pool;
	em_region *r;
	pid_t kids[K];
	uint64_t v;
	int status;

	atexit(t_cleanup);
	t_node_start(&n, "16M", sec, NULL);
	pool = t_connect_ok(&n, 1, sec);
	CHECK_RC(em_region_create(pool, NULL, 4096, NULL, &r), 0);
	semantics(r);
	em_region_close(r);
	CHECK_RC(em_region_create(pool, "counters", 4096, NULL, &r), 0);

	for (int k = 0; k < K; k++) {
		kids[k] = fork();
		CHECK(kids[k] >= 0);
		if (kids[k] == 0) {
			em_pool *p = t_connect_ok(&n, 1, sec);
			em_region *cr;
			em_queue *q;
			/* batches larger than the library's initial staging
			 * array, so it has to grow mid-batch */
			struct em_op ops[40];
			struct em_completion c[40];

			CHECK_RC(em_region_open(p, "counters", &cr), 0);
			/* half the adds synchronous, half batched */
			for (int i = 0; i < N / 2; i++)
				CHECK_RC(em_atomic(cr, 0, EM_ATOMIC_FADD, 1, 0, NULL), 0);
			CHECK_RC(em_queue_create(p, 64, &q), 0);
			for (int i = 0; i < N / 2; i += 40) {
				for (int j = 0; j < 40; j++)
					ops[j] = (struct em_op){ .opcode = EM_OP_ATOMIC,
								 .atomic_op = EM_ATOMIC_FADD,
								 .region = cr,
								 .offset = 0,
								 .operand = 1 };
				CHECK_RC(em_submit(q, ops, 40), 40);
				for (int got = 0; got < 40;) {
					int m = em_wait(q, c, 1, 40, -1);
					CHECK(m > 0);
					for (int j = 0; j < m; j++)
						CHECK(c[j].result == 0);
					got += m;
				}
			}
			em_queue_destroy(q);
			/* a CAS loop on the next word: lost updates would show */
			for (int i = 0; i < N / 4; i++) {
				uint64_t cur, seen;
				CHECK_RC(em_read(cr, 8, &cur, 8), 0);
				for (;;) {
					CHECK_RC(em_atomic(cr, 8, EM_ATOMIC_CAS, cur + 1, cur,
							   &seen),
						 0);
					if (seen == cur)
						break;
					cur = seen;
				}
			}
			em_region_close(cr);
			em_pool_close(p);
			_exit(0);
		}
	}
	for (int k = 0; k < K; k++) {
		CHECK(waitpid(kids[k], &status, 0) == kids[k]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	CHECK_RC(em_read(r, 0, &v, 8), 0);
	CHECK(v == (uint64_t)N * K);
	CHECK_RC(em_read(r, 8, &v, 8), 0);
	CHECK(v == (uint64_t)N / 4 * K);
	em_region_close(r);
	CHECK_RC(em_region_delete(pool, "counters"), 0);
	em_pool_close(pool);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	return 0;
}
