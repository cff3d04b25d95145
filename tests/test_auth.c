/*
 * test_auth.c - only members of the pool get in: a wrong secret is refused
 * before any memory is reachable, the refusal is logged and counted, and the
 * node goes on serving members. Also the client side of mutual
 * authentication: a node with another secret is not trusted.
 */
#include "harness.h"

int main(void)
{
	const char *good = t_secret("good", T_SECRET);
	const char *bad = t_secret("bad", "another secret entirely, 40 bytes long\n");
	const char *shorty = t_secret("short", "tooshort\n");
	struct t_node n;
	struct em_node_status st = { .size = sizeof(st) };
	em_pool *p;
	em_region *r;
	int rc;
	uint64_t v = 0;

	atexit(t_cleanup);
	t_node_start(&n, "8M", good, NULL);
	p = t_connect_ok(&n, 1, good);
	CHECK_RC(em_region_create(p, "secret-data", 4096, NULL, &r), 0);
	CHECK_RC(em_write(r, 0, &(uint64_t){ 0x5ec2e7 }, 8), 0);

	CHECK(t_connect(&n, 1, bad, &rc) == NULL);
	CHECK_RC(rc, -EM_EAUTH);
	CHECK(t_connect(&n, 1, shorty, &rc) == NULL);
	CHECK_RC(rc, -EINVAL);
	CHECK(T_WAIT_FOR(1000, t_log_has(&n, "wrong cluster secret")));
	CHECK_RC(em_pool_status(p, &st, 1), 1);
	CHECK(st.auth_failures >= 1);
	CHECK(st.clients == 1);

	/* members still served, data untouched */
	CHECK_RC(em_read(r, 0, &v, 8), 0);
	CHECK(v == 0x5ec2e7);
	em_region_close(r);
	em_pool_close(p);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);

	/* a node that does not know our secret cannot pass as a pool member:
	 * its proof fails on the client side */
	t_node_start(&n, "8M", bad, NULL);
	CHECK(t_connect(&n, 1, good, &rc) == NULL);
	CHECK_RC(rc, -EM_EAUTH);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	/* a node refuses to start on a missing or short secret */
	{
		char cmd[1024];
		snprintf(cmd, sizeof(cmd), "%s --capacity 8M --secret-file %s 2>/dev/null",
			 t_bin("ethermemd"), shorty);
		CHECK(system(cmd) != 0);
		snprintf(cmd, sizeof(cmd),
			 "%s --capacity 8M --secret-file /nonexistent 2>/dev/null",
			 t_bin("ethermemd"));
		CHECK(system(cmd) != 0);
	}
	/* a secret others may read is no secret: the node will not start on
	 * it, saying why, and a client will not connect with it */
	{
		const char *open_secret = t_secret("readable", T_SECRET);
		char cmd[1024], log[200];
		CHECK(chmod(open_secret, 0644) == 0);
		snprintf(log, sizeof(log), "%s/readable.log", t_tmpdir());
		snprintf(cmd, sizeof(cmd), "%s --capacity 8M --secret-file %s 2>%s",
			 t_bin("ethermemd"), open_secret, log);
		CHECK(system(cmd) != 0);
		{
			struct t_node fake = { 0 };
			snprintf(fake.log, sizeof(fake.log), "%s", log);
			CHECK(t_log_has(&fake, "chmod 600"));
		}
		t_node_start(&n, "8M", good, NULL);
		CHECK(t_connect(&n, 1, open_secret, &rc) == NULL);
		CHECK_RC(rc, -EPERM);
		CHECK(chmod(open_secret, 0640) == 0);
		CHECK(t_connect(&n, 1, open_secret, &rc) == NULL);
		CHECK_RC(rc, -EPERM);
		CHECK(chmod(open_secret, 0600) == 0);
		p = t_connect_ok(&n, 1, open_secret);
		em_pool_close(p);
		CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	}
	return 0;
}
