/*
 * test_cluster_faults.c - a pool whose nodes freeze, die and restart,
 * with a static node list (argument "static") or with etcd ("etcd"):
 *  - a frozen node (SIGSTOP) makes calls to it fail within the timeout,
 *    not hang; the other node keeps serving; a new client still connects
 *    and its status lists the healthy node; after SIGCONT the client
 *    reconnects by itself and reads back what it wrote;
 *  - a write and an atomic queued on an em_queue while the node is frozen
 *    outlive their connection's timeout: they are sent again once the
 *    queue has dialled the node again, and the atomic is applied once;
 *  - a node killed and restarted on the same address comes back empty:
 *    the region that lived on it fails with EM_ENONODE, never reads zeros,
 *    and the region on the other node is untouched;
 *  - deleting a region while a node holding part of it is down leaves the
 *    name usable again.
 * Every byte read is checked against what was written.
 */
#include "common/cluster.h"
#include "common/etcd.h"

#include "harness.h"

#include <pthread.h>

static int etcd_mode;
static struct t_etcd ec;
static char extra[2][256];
static const char *secret;

static em_pool *connect_pool(struct t_node *n, int timeout_ms, int want)
{
	struct em_pool_opts o = { .size = sizeof(o),
				  .secret_file = secret,
				  .timeout_ms = timeout_ms };
	char list[256];

	if (etcd_mode) {
		o.etcd = ec.url;
		o.cluster = "faults";
	} else {
		snprintf(list, sizeof(list), "%s,%s", n[0].url, n[1].url);
		o.nodes = list;
	}
	return t_connect_want(&o, want);
}

static void fill(uint8_t *b, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed + i * 7 + (i >> 9));
}

/* Reads back the pattern; 0 when it is all there, else the error (a
 * successful read of wrong bytes fails the test on the spot). */
static int check(em_region *r, uint8_t seed)
{
	static uint8_t want[65536], got[65536];
	int rc;

	fill(want, sizeof(want), seed);
	memset(got, 0xee, sizeof(got));
	rc = em_read(r, 4096, got, sizeof(got));
	if (!rc && memcmp(want, got, sizeof(got))) {
		fprintf(stderr, "a read succeeded with wrong bytes (seed %u, first %02x)\n", seed,
			got[0]);
		exit(1);
	}
	return rc;
}

/* The status entry of node n (etcd orders nodes by address, not by start). */
static struct em_node_status *st_of(struct em_node_status *st, int count, const struct t_node *n)
{
	for (int i = 0; i < count; i++)
		if (!strcmp(st[i].addr, n->url))
			return &st[i];
	fprintf(stderr, "node %s not in status\n", n->url);
	exit(1);
}

/* etcd: until node n publishes at most `most` bytes free (placement by
 * published numbers must see the region just made). */
static void wait_published(const struct t_node *n, uint64_t most)
{
	if (etcd_mode)
		t_wait_published(ec.url, "faults", n, most);
}

static uint64_t ms_since(uint64_t t0)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000) - t0;
}

static uint64_t now_ms(void)
{
	return ms_since(0);
}

/* lets the frozen node go a little after the request timeout */
static void *thaw_later(void *arg)
{
	t_sleep_ms(1800);
	kill(*(pid_t *)arg, SIGCONT);
	return NULL;
}

/* A queued write and fetch-add to node a's region, posted while a is
 * frozen: the connection times out under them (1.5 s) and breaks; a
 * comes back 0.3 s later. Both complete without error, the write's bytes
 * are there, and the counter went up by exactly one (the node applied
 * the resent atomic once, though it also found the first copy in the old
 * connection). */
static void queue_across_freeze(em_pool *p, em_region *r, pid_t pid)
{
	static uint8_t wbuf[8192], rbuf[8192];
	struct em_completion c[2];
	struct em_op ops[2];
	uint64_t before, after;
	pthread_t th;
	em_queue *q;
	int got = 0;

	CHECK_RC(em_queue_create(p, 4, &q), 0);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_FADD, 0, 0, &before), 0);
	fill(wbuf, sizeof(wbuf), 7);
	ops[0] = (struct em_op){ .opcode = EM_OP_WRITE,
				 .region = r,
				 .offset = 1u << 20,
				 .buf = wbuf,
				 .len = sizeof(wbuf),
				 .user_data = 0 };
	ops[1] = (struct em_op){ .opcode = EM_OP_ATOMIC,
				 .region = r,
				 .offset = 0,
				 .atomic_op = EM_ATOMIC_FADD,
				 .operand = 1,
				 .user_data = 1 };
	t_freeze(pid);
	CHECK(pthread_create(&th, NULL, thaw_later, &pid) == 0);
	CHECK_RC(em_submit(q, ops, 2), 2);
	while (got < 2) {
		int n = em_wait(q, c + got, 1, (unsigned)(2 - got), -1);
		CHECK(n > 0);
		got += n;
	}
	pthread_join(th, NULL);
	for (int i = 0; i < 2; i++) {
		if (c[i].result)
			fprintf(stderr, "queued %s: %s\n", c[i].user_data ? "atomic" : "write",
				em_strerror(c[i].result));
		CHECK_RC(c[i].result, 0);
		if (c[i].user_data == 1)
			CHECK(c[i].value == before);
	}
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_FADD, 0, 0, &after), 0);
	CHECK(after == before + 1);
	CHECK_RC(em_read(r, 1u << 20, rbuf, sizeof(rbuf)), 0);
	CHECK(!memcmp(rbuf, wbuf, sizeof(wbuf)));
	em_queue_destroy(q);
	printf("queued write and atomic outlived the frozen node's timeout; applied once\n");
}

int main(int argc, char **argv)
{
	struct t_node n[2];
	struct em_node_status st[2] = { { .size = sizeof(st[0]) } };
	struct em_region_opts ro = { .size = sizeof(ro), .chunk_size = 1 << 20 };
	uint8_t buf[65536];
	em_region *r1, *r2, *r3;
	em_pool *p, *q;
	uint64_t t0;
	int rc;

	etcd_mode = argc > 1 && !strcmp(argv[1], "etcd");
	secret = t_secret("secret", T_SECRET);
	if (etcd_mode) {
		t_etcd_start(&ec);
		snprintf(extra[0], sizeof(extra[0]), "--etcd %s --cluster faults --lease-ttl 1",
			 ec.url);
	}
	t_node_start(&n[0], "64M", secret, extra[0]);
	t_node_start(&n[1], "32M", secret, extra[0]);
	p = connect_pool(n, 1500, 2);

	/* r1 on the larger node a, r2 on b: sizes that fit only there, since
	 * a static pool places a named region on its name's home node when it
	 * fits */
	CHECK_RC(em_region_create(p, "r1", 40u << 20, &ro, &r1), 0);
	wait_published(&n[0], 24u << 20);
	CHECK_RC(em_region_create(p, "r2", 28u << 20, &ro, &r2), 0);
	CHECK_RC(em_pool_status(p, st, 2), 2);
	CHECK(st_of(st, 2, &n[0])->used >= (40u << 20));
	CHECK(st_of(st, 2, &n[1])->used >= (28u << 20) && st_of(st, 2, &n[1])->used < (40u << 20));
	fill(buf, sizeof(buf), 1);
	CHECK_RC(em_write(r1, 4096, buf, sizeof(buf)), 0);
	fill(buf, sizeof(buf), 2);
	CHECK_RC(em_write(r2, 4096, buf, sizeof(buf)), 0);

	/* ---- freeze a ---- */
	t_freeze(n[0].pid);
	t0 = now_ms();
	rc = check(r1, 1);
	CHECK(rc < 0);
	printf("read from the frozen node failed after %llu ms: %s\n",
	       (unsigned long long)ms_since(t0), em_strerror(rc));
	CHECK_RC(check(r2, 2), 0); /* b serves on */
	/* a new client connects with a frozen node in the pool */
	/* (with etcd, the frozen node is listed until its lease runs out) */
	q = connect_pool(n, 1500, etcd_mode ? 1 : 2);
	rc = em_pool_status(q, st, 2);
	CHECK(rc == em_pool_nodes(q));
	CHECK(st_of(st, rc, &n[1])->capacity == (32u << 20));
	if (rc == 2)
		CHECK(st_of(st, 2, &n[0])->capacity == 0);
	em_pool_close(q);
	kill(n[0].pid, SIGCONT);
	/* back by itself: the same bytes */
	t0 = now_ms();
	while ((rc = check(r1, 1)) && ms_since(t0) < 15000)
		t_sleep_ms(50);
	CHECK_RC(rc, 0);
	printf("after SIGCONT the client read again after %llu ms\n",
	       (unsigned long long)ms_since(t0));
	queue_across_freeze(p, r1, n[0].pid);
	CHECK_RC(check(r1, 1), 0);

	/* ---- kill b, restart it on the same address ---- */
	{
		char again[400];
		int port = n[1].port;
		t_node_stop(&n[1], SIGKILL);
		t0 = now_ms();
		rc = check(r2, 2);
		CHECK(rc < 0);
		printf("read from the killed node failed after %llu ms: %s\n",
		       (unsigned long long)ms_since(t0), em_strerror(rc));
		snprintf(again, sizeof(again), "%s --listen tcp://127.0.0.1:%d", extra[0], port);
		t_node_start(&n[1], "32M", secret, again);
		CHECK(n[1].port == port);
	}
	/* its memory is gone: lost, never zeros */
	t0 = now_ms();
	while ((rc = check(r2, 2)) != -EM_ENONODE && ms_since(t0) < 15000) {
		CHECK(rc < 0);
		t_sleep_ms(50);
	}
	CHECK_RC(rc, -EM_ENONODE);
	CHECK_RC(em_write(r2, 0, buf, 16), -EM_ENONODE);
	CHECK_RC(check(r1, 1), 0);
	rc = em_region_open(p, "r2", &r3);
	/* etcd keeps the record, so the name says what happened; a static
	 * pool has nothing left that remembers the region */
	CHECK(rc == -EM_ENONODE || (!etcd_mode && rc == -ENOENT));
	em_region_close(r2);

	/* ---- delete while a node holding part of it is down ---- */
	/* (with etcd, placement needs b's new record, with its free bytes,
	 * to reach this client's watch first) */
	t0 = now_ms();
	while ((rc = em_region_create(p, "r3", 40u << 20, &ro, &r3)) && ms_since(t0) < 15000)
		t_sleep_ms(50);
	CHECK_RC(rc, 0);
	CHECK_RC(em_pool_status(p, st, 2), 2);
	CHECK(st_of(st, 2, &n[1])->used > 0); /* striped: b has part of it */
	em_region_close(r3);
	t_freeze(n[1].pid);
	rc = em_region_delete(p, "r3");
	CHECK(rc == 0 || rc == -EHOSTDOWN || rc == -ETIMEDOUT);
	kill(n[1].pid, SIGCONT);
	/* the name can be used again once b answers */
	t0 = now_ms();
	while ((rc = em_region_create(p, "r3", 40u << 20, &ro, &r3)) && ms_since(t0) < 15000)
		t_sleep_ms(100);
	CHECK_RC(rc, 0);
	fill(buf, sizeof(buf), 3);
	CHECK_RC(em_write(r3, 4096, buf, sizeof(buf)), 0);
	CHECK_RC(check(r3, 3), 0);
	CHECK_RC(check(r1, 1), 0);
	em_region_close(r3);
	em_region_close(r1);
	em_pool_close(p);
	t_node_stop(&n[0], SIGTERM);
	t_node_stop(&n[1], SIGTERM);
	if (etcd_mode)
		t_etcd_stop(&ec);
	t_cleanup();
	return 0;
}
