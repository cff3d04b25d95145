/*
 * test_nullargs.c - every public call with NULL handles and invalid
 * arguments: -EINVAL (or the documented value), never a crash. Calls that
 * need a pool get a real node; the rest run before connecting. core_exports
 * checks that every exported name appears here.
 */
#include "harness.h"

int main(void)
{
	const char *sec = t_secret("secret", T_SECRET);
	struct em_pool_opts po = { .size = sizeof(po) };
	struct em_region_opts ro = { .size = sizeof(ro) };
	struct em_map_opts mo = { .size = sizeof(mo) };
	struct em_node_status st = { .size = sizeof(st) };
	struct em_region_info ri = { .size = sizeof(ri) };
	struct em_map_stats ms = { .size = sizeof(ms) };
	struct em_completion c;
	struct em_op op = { .opcode = EM_OP_READ };
	struct t_node n;
	em_pool *pool;
	em_region *r;
	em_queue *q;
	uint64_t v, buf[2];
	void *addr = NULL;

	atexit(t_cleanup);
	/* no pool needed */
	CHECK(em_version(NULL, NULL, NULL) != NULL);
	CHECK(em_strerror(0) != NULL && em_strerror(-99999) != NULL &&
	      em_strerror(INT32_MIN) != NULL);
	CHECK_RC(em_parse_size(NULL, &v), -EINVAL);
	{
		struct em_region_opts rd = { .size = sizeof(rd) };
		CHECK_RC(em_parse_redundancy(NULL, &rd), -EINVAL);
		CHECK_RC(em_region_repair(NULL), -EINVAL);
		CHECK_RC(em_region_repair_start(NULL), -EINVAL);
		CHECK_RC(em_region_stat(NULL, NULL), -EINVAL);
		CHECK_RC(em_parse_redundancy("replicate:2", NULL), -EINVAL);
		rd.size = 24; /* a 0.1 caller has no room for the answer */
		CHECK_RC(em_parse_redundancy("replicate:2", &rd), -EINVAL);
	}
	CHECK_RC(em_parse_size("4K", NULL), -EINVAL);
	CHECK_RC(em_parse_size("", &v), -EINVAL);
	CHECK_RC(em_pool_connect(NULL, &po), -EINVAL);
	po.size = 4; /* below any release's size */
	CHECK_RC(em_pool_connect(&pool, &po), -EINVAL);
	em_pool_close(NULL);
	CHECK_RC(em_pool_nodes(NULL), -EINVAL);
	CHECK_RC(em_pool_status(NULL, &st, 1), -EINVAL);
	CHECK_RC(em_region_create(NULL, NULL, 4096, NULL, &r), -EINVAL);
	CHECK_RC(em_region_open(NULL, "x", &r), -EINVAL);
	CHECK_RC(em_region_close(NULL), -EINVAL);
	CHECK_RC(em_region_delete(NULL, "x"), -EINVAL);
	CHECK(em_region_size(NULL) == 0);
	CHECK(em_region_pool(NULL) == NULL);
	CHECK_RC(em_region_list(NULL, &ri, 1), -EINVAL);
	CHECK_RC(em_read(NULL, 0, buf, 8), -EINVAL);
	CHECK_RC(em_write(NULL, 0, buf, 8), -EINVAL);
	CHECK_RC(em_atomic(NULL, 0, EM_ATOMIC_FADD, 1, 0, &v), -EINVAL);
	CHECK_RC(em_queue_create(NULL, 8, &q), -EINVAL);
	em_queue_destroy(NULL);
	CHECK_RC(em_queue_fd(NULL), -EINVAL);
	CHECK_RC(em_queue_inflight(NULL), -EINVAL);
	CHECK_RC(em_submit(NULL, &op, 1), -EINVAL);
	CHECK_RC(em_poll(NULL, &c, 1), -EINVAL);
	CHECK_RC(em_wait(NULL, &c, 1, 1, 0), -EINVAL);
	CHECK_RC(em_map_cache_size(0), -EINVAL);
	CHECK_RC(em_map(NULL, NULL, &addr), -EINVAL);
	CHECK_RC(em_sync(NULL, 0), -EINVAL);
	CHECK_RC(em_unmap(NULL), -EINVAL);
	CHECK_RC(em_unmap(buf), -EINVAL); /* not a mapping */
	CHECK_RC(em_map_stats(NULL, NULL), -EINVAL);
	CHECK_RC(em_map_stats(buf, &ms), -EINVAL);

	/* with a pool: NULL outputs, bad sizes, unknown flags */
	t_node_start(&n, "16M", sec, NULL);
	pool = t_connect_ok(&n, 1, sec);
	CHECK_RC(em_region_create(pool, NULL, 4096, NULL, NULL), -EINVAL);
	CHECK_RC(em_region_create(pool, NULL, 0, NULL, &r), -EINVAL);
	ro.flags = 0x80;
	CHECK_RC(em_region_create(pool, "flags", 4096, &ro, &r), -EINVAL);
	ro.flags = 0;
	ro.size = 8;
	CHECK_RC(em_region_create(pool, NULL, 4096, &ro, &r), -EINVAL);
	CHECK_RC(em_region_open(pool, NULL, &r), -EINVAL);
	CHECK_RC(em_region_open(pool, "x", NULL), -EINVAL);
	CHECK_RC(em_region_delete(pool, NULL), -EINVAL);
	CHECK_RC(em_pool_status(pool, NULL, 1), -EINVAL);
	CHECK_RC(em_pool_status(pool, NULL, 0), 1); /* just the count */
	st.size = 0;
	CHECK_RC(em_pool_status(pool, &st, 1), -EINVAL);
	CHECK_RC(em_region_list(pool, NULL, 1), -EINVAL);
	CHECK_RC(em_region_list(pool, NULL, 0), 0);
	ri.size = 16;
	CHECK_RC(em_region_list(pool, &ri, 1), -EINVAL);
	CHECK_RC(em_queue_create(pool, 0, &q), -EINVAL);
	CHECK_RC(em_queue_create(pool, 8, NULL), -EINVAL);

	CHECK_RC(em_region_create(pool, NULL, 4096, NULL, &r), 0);
	CHECK_RC(em_read(r, 0, NULL, 8), -EFAULT);
	CHECK_RC(em_write(r, 0, NULL, 8), -EFAULT);
	CHECK_RC(em_atomic(r, 0, (enum em_atomic_op)99, 1, 0, NULL), -EINVAL);
	CHECK_RC(em_map(r, NULL, NULL), -EINVAL);
	mo.flags = 0x100;
	CHECK_RC(em_map(r, &mo, &addr), -EINVAL);
	mo.flags = 0;
	mo.size = 2;
	CHECK_RC(em_map(r, &mo, &addr), -EINVAL);
	ms.size = 8;
	CHECK_RC(em_map_stats(NULL, &ms), -EINVAL);

	CHECK_RC(em_queue_create(pool, 8, &q), 0);
	CHECK_RC(em_submit(q, NULL, 1), -EINVAL);
	CHECK_RC(em_submit(q, NULL, 0), 0);
	CHECK_RC(em_poll(q, NULL, 1), -EINVAL);
	CHECK_RC(em_wait(q, NULL, 1, 1, 0), -EINVAL);
	{
		/* an op with no region, an unknown flag, a nonzero reserved
		 * field or an unknown opcode: posted, completes with -EINVAL */
		struct em_op bad[4] = {
			{ .opcode = EM_OP_READ, .buf = buf, .len = 8, .user_data = 0 },
			{ .opcode = EM_OP_READ,
			  .region = r,
			  .buf = buf,
			  .len = 8,
			  .flags = 1,
			  .user_data = 1 },
			{ .opcode = EM_OP_READ,
			  .region = r,
			  .buf = buf,
			  .len = 8,
			  .reserved = 1,
			  .user_data = 2 },
			{ .opcode = 77, .region = r, .buf = buf, .len = 8, .user_data = 3 },
		};
		struct em_completion cs[4];

		CHECK_RC(em_submit(q, bad, 4), 4);
		CHECK_RC(em_wait(q, cs, 4, 4, 1000), 4);
		for (int i = 0; i < 4; i++) {
			CHECK(cs[i].user_data == (uint64_t)i);
			CHECK_RC(cs[i].result, -EINVAL);
		}
	}
	CHECK_RC(em_queue_inflight(q), 0);
	em_queue_destroy(q);
	CHECK_RC(em_region_close(r), 0);
	em_pool_close(pool);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	return 0;
}
