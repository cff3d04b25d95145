/*
 * test_cluster_join.c - a running client and a pool that changes under it,
 * with etcd (argument "etcd") or a static node list ("static"):
 *  - etcd: a node that registers after the client connected is added to
 *    the client's pool by its watch, and a region created afterwards is
 *    placed on it (it has the most free bytes); the data round-trips both
 *    through the pool's calls and through a queue made before the join;
 *  - both modes: a queue made with em_queue_create before a node restart
 *    works again after it: the old region on the node is lost
 *    (EM_ENONODE, never zeros), and a fresh region on the restarted node
 *    reads back through that same queue what was written.
 * Every byte read is checked against what was written.
 */
#include "common/cluster.h"
#include "common/etcd.h"

#include "harness.h"

static int etcd_mode;
static struct t_etcd ec;
static char extra[256];
static const char *secret;

static void fill(uint8_t *b, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed * 31 + i * 13 + (i >> 11));
}

static uint64_t t_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One operation through queue q, waited for. */
static int qio(em_queue *q, em_region *r, uint8_t opcode, uint64_t off, void *buf, size_t len)
{
	struct em_op op = {
		.opcode = opcode, .region = r, .offset = off, .buf = buf, .len = len, .user_data = 7
	};
	struct em_completion c;
	int rc = em_submit(q, &op, 1);

	if (rc != 1)
		return rc < 0 ? rc : -EIO;
	rc = em_wait(q, &c, 1, 1, 10000);
	if (rc != 1)
		return rc < 0 ? rc : -ETIMEDOUT;
	CHECK(c.user_data == 7);
	return c.result;
}

/* Writes a pattern through q and reads it back through q and through the
 * pool's own calls; a successful read of wrong bytes fails on the spot. */
static int roundtrip(em_queue *q, em_region *r, uint8_t seed)
{
	static uint8_t want[1 << 18], got[1 << 18];
	int rc;

	fill(want, sizeof(want), seed);
	if ((rc = qio(q, r, EM_OP_WRITE, 8192, want, sizeof(want))))
		return rc;
	memset(got, 0xee, sizeof(got));
	if ((rc = qio(q, r, EM_OP_READ, 8192, got, sizeof(got))))
		return rc;
	if (memcmp(want, got, sizeof(got))) {
		fprintf(stderr, "queue read wrong bytes (seed %u)\n", seed);
		exit(1);
	}
	memset(got, 0xee, sizeof(got));
	if ((rc = em_read(r, 8192, got, sizeof(got))))
		return rc;
	if (memcmp(want, got, sizeof(got))) {
		fprintf(stderr, "read wrong bytes (seed %u)\n", seed);
		exit(1);
	}
	return 0;
}

/* Node n's status entry (capacity 0: not answering). */
static struct em_node_status status_of(em_pool *p, const struct t_node *n)
{
	struct em_node_status st[8] = { { .size = sizeof(st[0]) } }, none = { 0 };
	int c = em_pool_status(p, st, 8);

	for (int i = 0; i < c && i < 8; i++)
		if (!strcmp(st[i].addr, n->url))
			return st[i];
	return none;
}

static uint64_t used_on(em_pool *p, const struct t_node *n)
{
	return status_of(p, n).used;
}

/* etcd: until node n publishes at most `most` bytes free. */
static void wait_published(const struct t_node *n, uint64_t most)
{
	if (etcd_mode)
		t_wait_published(ec.url, "join", n, most);
}

int main(int argc, char **argv)
{
	struct em_region_opts ro = { .size = sizeof(ro), .chunk_size = 1 << 20 };
	struct em_pool_opts o = { .size = sizeof(o), .timeout_ms = 1500 };
	struct t_node n[2];
	em_region *big, *r, *r2;
	em_queue *q;
	em_pool *p;
	char list[256], again[400];
	int rc, ok, port;

	etcd_mode = argc > 1 && !strcmp(argv[1], "etcd");
	secret = t_secret("secret", T_SECRET);
	o.secret_file = secret;
	if (etcd_mode) {
		t_etcd_start(&ec);
		snprintf(extra, sizeof(extra), "--etcd %s --cluster join --lease-ttl 1", ec.url);
	}
	t_node_start(&n[0], "64M", secret, extra);
	if (etcd_mode) {
		o.etcd = ec.url;
		o.cluster = "join";
		ok = T_WAIT_FOR(5000, !em_pool_connect(&p, &o));
		CHECK(ok);
		CHECK_RC(em_pool_nodes(p), 1);
	} else {
		/* smaller than node 0, so that "big" fits only there: a static
		 * pool places a named region on its name's home node when it
		 * fits, and the sizes below leave each region one node to go */
		t_node_start(&n[1], "32M", secret, extra);
		snprintf(list, sizeof(list), "%s,%s", n[0].url, n[1].url);
		o.nodes = list;
		CHECK_RC(em_pool_connect(&p, &o), 0);
	}
	/* a queue made now, before the pool changes */
	CHECK_RC(em_queue_create(p, 16, &q), 0);
	/* most of node 0 taken, so that the next region goes elsewhere */
	CHECK_RC(em_region_create(p, "big", 40u << 20, &ro, &big), 0);
	CHECK(used_on(p, &n[0]) >= (40u << 20));
	wait_published(&n[0], 24u << 20);
	if (etcd_mode) {
		/* ---- a node joins a running client ---- */
		t_node_start(&n[1], "64M", secret, extra);
		ok = T_WAIT_FOR(5000, em_pool_nodes(p) == 2);
		CHECK(ok);
		wait_published(&n[1], 64u << 20); /* registered with its free bytes */
	}
	CHECK_RC(em_region_create(p, "r", 28u << 20, &ro, &r), 0);
	CHECK(used_on(p, &n[1]) >= (28u << 20)); /* on the node that joined */
	CHECK(used_on(p, &n[0]) < (56u << 20));
	CHECK_RC(roundtrip(q, r, 1), 0);
	CHECK_RC(roundtrip(q, big, 2), 0);

	/* ---- restart node 1 on its address: it comes back empty ---- */
	port = n[1].port;
	t_node_stop(&n[1], SIGKILL);
	snprintf(again, sizeof(again), "%s --listen tcp://127.0.0.1:%d", extra, port);
	t_node_start(&n[1], "64M", secret, again);
	CHECK(n[1].port == port);
	/* the old region is lost; the queue says so, never zeros */
	{
		static uint8_t b[4096];
		uint64_t t0 = t_now_ms();
		while ((rc = qio(q, r, EM_OP_READ, 0, b, sizeof(b))) != -EM_ENONODE &&
		       t_now_ms() - t0 < 15000) {
			CHECK(rc < 0);
			t_sleep_ms(50);
		}
		CHECK_RC(rc, -EM_ENONODE);
	}
	em_region_close(r);
	wait_published(&n[1], 64u << 20);
	/* placement takes only nodes that answer: the pool's own connection
	 * to the restarted node is made again in the background */
	ok = T_WAIT_FOR(15000, status_of(p, &n[1]).capacity > 0);
	CHECK(ok);
	/* a fresh region on the restarted node, through the same queue */
	CHECK_RC(em_region_create(p, "r2", 28u << 20, &ro, &r2), 0);
	CHECK(used_on(p, &n[1]) >= (28u << 20));
	{
		uint64_t t0 = t_now_ms();
		while ((rc = roundtrip(q, r2, 3)) && t_now_ms() - t0 < 15000)
			t_sleep_ms(50);
		CHECK_RC(rc, 0);
	}
	CHECK_RC(roundtrip(q, big, 4), 0);
	em_queue_destroy(q);
	em_region_close(r2);
	em_region_close(big);
	em_pool_close(p);
	t_node_stop(&n[0], SIGTERM);
	t_node_stop(&n[1], SIGTERM);
	if (etcd_mode)
		t_etcd_stop(&ec);
	t_cleanup();
	return t_fails ? 1 : 0;
}
