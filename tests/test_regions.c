/*
 * test_regions.c - region lifetimes and the errors users meet: a full node,
 * anonymous regions freed with their client, named ones outliving it,
 * unlink-like delete, bad names and ranges, listing and status, and a
 * named region whose layout no client could decode refused at create.
 */
#include "harness.h"
#include "lib/internal.h"

static uint64_t used(em_pool *p)
{
	struct em_node_status st[4] = { { .size = sizeof(st[0]) } };
	uint64_t u = 0;
	int n = em_pool_status(p, st, 4);

	CHECK(n > 0);
	for (int i = 0; i < n; i++)
		u += st[i].used;
	return u;
}

int main(void)
{
	const char *sec = t_secret("secret", T_SECRET);
	struct t_node n[2];
	em_pool *a, *b;
	em_region *r, *r2, *big;
	struct em_region_info info[8] = { { .size = sizeof(info[0]) } };
	struct em_region_opts excl = { .size = sizeof(excl), .flags = EM_REGION_EXCL };
	uint8_t buf[8192];
	uint64_t u0;

	atexit(t_cleanup);
	t_node_start(&n[0], "8M", sec, NULL);
	t_node_start(&n[1], "8M", sec, NULL);
	a = t_connect_ok(n, 2, sec);
	b = t_connect_ok(n, 2, sec);
	CHECK(em_pool_nodes(a) == 2);
	u0 = used(b);
	CHECK(u0 == 0);

	/* node full: more than the pool has is refused cleanly */
	CHECK_RC(em_region_create(a, NULL, 17u << 20, NULL, &r), -ENOSPC);
	CHECK(used(b) == 0);
	/* 12 MiB fits only striped over both 8 MiB nodes */
	CHECK_RC(em_region_create(a, NULL, 12u << 20, NULL, &big), 0);
	CHECK(used(b) >= (12u << 20));
	CHECK_RC(em_region_create(a, NULL, 6u << 20, NULL, &r), -ENOSPC);

	/* anonymous regions go away with their client */
	em_pool_close(a);
	CHECK(T_WAIT_FOR(1000, used(b) == 0));

	a = t_connect_ok(n, 2, sec);
	CHECK_RC(em_region_create(a, "model", 100000, NULL, &r), 0);
	memset(buf, 0x42, sizeof(buf));
	CHECK_RC(em_write(r, 100000 - 8192, buf, 8192), 0);
	/* ranges */
	CHECK_RC(em_write(r, 100000 - 8191, buf, 8192), -ERANGE);
	CHECK_RC(em_read(r, 100001, buf, 0), -ERANGE);
	CHECK_RC(em_read(r, 100000, buf, 0), 0);
	CHECK_RC(em_read(r, UINT64_MAX - 10, buf, 20), -ERANGE);
	/* names */
	CHECK_RC(em_region_create(a, "model", 100000, &excl, &r2), -EEXIST);
	CHECK_RC(em_region_create(a, "model", 4096, NULL, &r2), -EEXIST);
	CHECK_RC(em_region_create(a, "bad name", 4096, NULL, &r2), -EINVAL);
	CHECK_RC(em_region_create(a, "", 4096, NULL, &r2), -ENAMETOOLONG);
	CHECK_RC(em_region_open(a, "nope", &r2), -ENOENT);
	CHECK_RC(em_region_delete(a, "nope"), -ENOENT);
	CHECK_RC(em_region_create(a, NULL, 0, NULL, &r2), -EINVAL);
	/* a named region with a layout blob no client decodes would be listed
	 * as nothing and open as nothing: the node refuses it at create */
	{
		uint8_t req[3 + EM_NAME_MAX + EM_MAX_LAYOUT], junk[200];
		uint64_t seed = 12;
		int k;

		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)t_rand(&seed);
		k = em_namelayout_encode(req, sizeof(req), "junk", junk, sizeof(junk));
		CHECK_RC(em_ctl(a, 0, EM_W_CREATE, 0, EM_WC_NAMED | EM_WC_EXCL, 4096, req,
				(uint32_t)k, NULL, 0, NULL),
			 -EINVAL);
		CHECK(t_log_has(&n[0], "invalid layout"));
		CHECK_RC(em_region_open(a, "junk", &r2), -ENOENT);
	}

	/* a named region outlives its creator and is visible to others */
	em_region_close(r);
	em_pool_close(a);
	CHECK_RC(em_region_list(b, info, 8), 1);
	CHECK(!strcmp(info[0].name, "model") && info[0].bytes == 100000);
	CHECK_RC(em_region_open(b, "model", &r), 0);
	CHECK(em_region_size(r) == 100000);
	memset(buf, 0, sizeof(buf));
	CHECK_RC(em_read(r, 100000 - 8192, buf, 8192), 0);
	for (int i = 0; i < 8192; i++)
		CHECK(buf[i] == 0x42);

	/* delete is like unlink: an open handle keeps working until closed */
	a = t_connect_ok(n, 2, sec);
	CHECK_RC(em_region_delete(a, "model"), 0);
	CHECK_RC(em_region_open(a, "model", &r2), -ENOENT);
	CHECK_RC(em_region_list(a, info, 8), 0);
	CHECK_RC(em_read(r, 0, buf, 16), 0);
	CHECK(used(a) > 0);
	em_region_close(r);
	CHECK(used(a) == 0);
	/* an open region of the same name can be made anew */
	CHECK_RC(em_region_create(a, "model", 4096, NULL, &r), 0);
	em_region_close(r);
	CHECK_RC(em_region_delete(a, "model"), 0);

	em_pool_close(a);
	em_pool_close(b);
	/* a node that is not there: the pool works with the other one, and
	 * status lists the missing one as not answering (capacity 0) */
	CHECK_RC(t_node_stop(&n[1], SIGTERM), 0);
	{
		struct em_node_status st[2] = { { .size = sizeof(st[0]) } };
		a = t_connect_ok(n, 2, sec);
		CHECK_RC(em_pool_status(a, st, 2), 2);
		CHECK(st[0].capacity > 0 && st[1].capacity == 0);
		CHECK(!strcmp(st[1].addr, n[1].url));
		CHECK_RC(em_region_create(a, "on-the-live-one", 4096, NULL, &r), 0);
		CHECK_RC(em_write(r, 0, "x", 1), 0);
		em_region_close(r);
		em_pool_close(a);
	}
	/* no node at all: a clear error, not a hang */
	CHECK_RC(t_node_stop(&n[0], SIGTERM), 0);
	{
		int rc;
		CHECK(t_connect(n, 2, sec, &rc) == NULL);
		CHECK(rc == -ECONNREFUSED);
	}
	return 0;
}
