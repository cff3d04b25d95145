/*
 * test_abi.c - the rules that let the public structs grow (ethermem.h's
 * conventions): a caller built against a newer header, whose structs are
 * longer, gets every field this library knows and zeros past them, with
 * array elements placed at its own stride; its options are taken if the
 * fields this library does not know are zero, refused if not; a size below
 * the first release's is refused. And em_version agrees with the header.
 */
#include <stddef.h>

#include "harness.h"

/* What a newer header's structs look like to this library: longer. */
struct newer_status {
	struct em_node_status s;
	uint8_t more[40];
};
struct newer_info {
	struct em_region_info i;
	uint8_t more[24];
};
struct newer_stats {
	struct em_map_stats s;
	uint8_t more[16];
};
struct newer_pool_opts {
	struct em_pool_opts o;
	uint64_t more;
};
struct newer_region_opts {
	struct em_region_opts o;
	uint64_t more;
};

static int all(const uint8_t *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return 0;
	return 1;
}

int main(void)
{
	const char *sec = t_secret("secret", T_SECRET);
	struct newer_status ns[3];
	struct newer_info ni[3];
	struct newer_stats ms;
	struct newer_pool_opts po;
	struct newer_region_opts ro;
	struct t_node n[2];
	char list[200], ver[32];
	unsigned ma = 99, mi = 99, pa = 99;
	em_pool *pool, *p2;
	em_region *a, *b;

	atexit(t_cleanup);
	snprintf(ver, sizeof(ver), "%u.%u.%u", EM_VERSION_MAJOR, EM_VERSION_MINOR,
		 EM_VERSION_PATCH);
	CHECK(!strcmp(em_version(&ma, &mi, &pa), EM_VERSION_STRING));
	CHECK(!strcmp(EM_VERSION_STRING, ver));
	CHECK(ma == EM_VERSION_MAJOR && mi == EM_VERSION_MINOR && pa == EM_VERSION_PATCH);

	t_node_start(&n[0], "16M", sec, NULL);
	t_node_start(&n[1], "32M", sec, NULL);
	snprintf(list, sizeof(list), "%s,%s", n[0].url, n[1].url);

	/* options: a newer caller's unknown field must be zero */
	memset(&po, 0, sizeof(po));
	po.o.size = sizeof(po);
	po.o.nodes = list;
	po.o.secret_file = sec;
	po.more = 1;
	CHECK_RC(em_pool_connect(&pool, &po.o), -EINVAL);
	po.more = 0;
	CHECK_RC(em_pool_connect(&pool, &po.o), 0);
	po.o.poll_us = -2; /* a spin budget that means nothing */
	CHECK_RC(em_pool_connect(&p2, &po.o), -EINVAL);
	po.o.poll_us = -1; /* never spin: accepted */
	CHECK_RC(em_pool_connect(&p2, &po.o), 0);
	em_pool_close(p2);
	po.o.poll_us = 0;
	po.o.encrypt = 2; /* only -1, 0 and 1 mean something */
	CHECK_RC(em_pool_connect(&p2, &po.o), -EINVAL);
	po.o.encrypt = 0;
	po.o.size = offsetof(struct em_pool_opts, poll_us) - 1; /* shorter than 0.1 */
	CHECK_RC(em_pool_connect(&p2, &po.o), -EINVAL);

	memset(&ro, 0, sizeof(ro));
	ro.o.size = sizeof(ro);
	ro.o.chunk_size = 1 << 20;
	ro.more = 7;
	CHECK_RC(em_region_create(pool, "abi-a", 4096, &ro.o, &a), -EINVAL);
	ro.more = 0;
	CHECK_RC(em_region_create(pool, "abi-a", 4096, &ro.o, &a), 0);
	CHECK_RC(em_region_create(pool, "abi-b", 40u << 20, &ro.o, &b), 0); /* striped */

	/* status at a newer caller's stride: both nodes, tails zeroed, the
	 * element past the nodes untouched */
	memset(ns, 0xab, sizeof(ns));
	ns[0].s.size = sizeof(ns[0]);
	CHECK_RC(em_pool_status(pool, &ns[0].s, 3), 2);
	for (int i = 0; i < 2; i++) {
		CHECK(ns[i].s.size == sizeof(ns[0]));
		CHECK(all(ns[i].more, sizeof(ns[i].more), 0));
		CHECK(!strcmp(ns[i].s.addr, n[i].url));
		CHECK(ns[i].s.capacity == (i ? 32u : 16u) << 20);
		CHECK(ns[i].s.clients >= 1);
	}
	CHECK(all((uint8_t *)&ns[2], sizeof(ns[2]), 0xab));
	/* a size no release ever had */
	ns[0].s.size = sizeof(struct em_node_status) - 8;
	CHECK_RC(em_pool_status(pool, &ns[0].s, 1), -EINVAL);

	/* this header's own size: the plain array works as before */
	{
		struct em_node_status st[2] = { { .size = sizeof(st[0]) } };
		CHECK_RC(em_pool_status(pool, st, 2), 2);
		CHECK(st[1].size == sizeof(st[0]) && st[1].capacity == 32u << 20);
	}

	/* region listing at a newer stride */
	memset(ni, 0xcd, sizeof(ni));
	ni[0].i.size = sizeof(ni[0]);
	CHECK_RC(em_region_list(pool, &ni[0].i, 3), 2);
	for (int i = 0; i < 2; i++) {
		int isb = !strcmp(ni[i].i.name, "abi-b");
		CHECK(isb || !strcmp(ni[i].i.name, "abi-a"));
		CHECK(ni[i].i.size == sizeof(ni[0]));
		CHECK(ni[i].i.bytes == (isb ? 40u << 20 : 4096u));
		CHECK(ni[i].i.nodes == (isb ? 2u : 1u));
		CHECK(all(ni[i].more, sizeof(ni[i].more), 0));
	}
	CHECK(strcmp(ni[0].i.name, ni[1].i.name) != 0);
	CHECK(all((uint8_t *)&ni[2], sizeof(ni[2]), 0xcd));
	/* max 1 with three regions, one striped over both nodes: one filled,
	 * the count says three */
	{
		em_region *c3;
		CHECK_RC(em_region_create(pool, "abi-c", 4096, NULL, &c3), 0);
		memset(ni, 0xcd, sizeof(ni));
		ni[0].i.size = sizeof(ni[0]);
		CHECK_RC(em_region_list(pool, &ni[0].i, 1), 3);
		CHECK(all((uint8_t *)&ni[1], sizeof(ni[1]), 0xcd));
		CHECK_RC(em_region_list(pool, NULL, 0), 3);
		CHECK_RC(em_region_close(c3), 0);
		CHECK_RC(em_region_delete(pool, "abi-c"), 0);
	}

	/* mapping counters, process totals */
	memset(&ms, 0xee, sizeof(ms));
	ms.s.size = sizeof(ms);
	CHECK_RC(em_map_stats(NULL, &ms.s), 0);
	CHECK(ms.s.size == sizeof(ms) && ms.s.faults == 0);
	CHECK(all(ms.more, sizeof(ms.more), 0));

	/* the fixed structs: a completion's flags are zero */
	{
		em_queue *q;
		uint64_t w = 0x1234, got = 0;
		struct em_op op = {
			.opcode = EM_OP_READ, .region = a, .buf = &got, .len = 8, .user_data = 42
		};
		struct em_completion c;

		memset(&c, 0xff, sizeof(c));
		CHECK_RC(em_write(a, 0, &w, 8), 0);
		CHECK_RC(em_queue_create(pool, 4, &q), 0);
		CHECK_RC(em_submit(q, &op, 1), 1);
		CHECK_RC(em_wait(q, &c, 1, 1, 5000), 1);
		CHECK(c.user_data == 42 && c.result == 0 && c.flags == 0 && got == w);
		em_queue_destroy(q);
	}

	CHECK_RC(em_region_close(a), 0);
	CHECK_RC(em_region_close(b), 0);
	CHECK_RC(em_region_delete(pool, "abi-a"), 0);
	CHECK_RC(em_region_delete(pool, "abi-b"), 0);
	em_pool_close(pool);
	CHECK_RC(t_node_stop(&n[0], SIGTERM), 0);
	CHECK_RC(t_node_stop(&n[1], SIGTERM), 0);
	return 0;
}
