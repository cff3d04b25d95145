/*
 * test_cluster_drain.c - `ethermem node drain` under a running workload.
 *
 * Three nodes in etcd; a named region striped over them; three client
 * threads, each with its own pool, write random bytes to their own third
 * of the region and read them back, every byte checked against a
 * reference copy, without pause: one with synchronous calls, one with
 * batches on an em_queue, one through a mapping (em_map) whose cache is
 * far smaller than its third, so that it fetches and writes back all the
 * time. Meanwhile the tool drains the node that holds the region's first
 * part. Checked: no client call or queued operation fails, the mapping's
 * pager raises no fault, and no read differs from the reference, during
 * the drain and after the drained node is stopped (also through a handle
 * left idle during the drain, which finds its old node gone and follows
 * the record); the region's record moved to
 * a newer epoch and names the drained node no more; the node published "draining" and refuses new
 * regions, and a region created afterwards lands elsewhere; `node ls
 * --json` shows the drain as done. A part that an earlier, failed move left
 * on a node (no record lists it; etcd notes it) is removed by the drain.
 *
 * With `--bench MIB` (bench/cluster_drain.sh) the region is MIB MiB and
 * the run also prints, as JSON, the drain's time and the workers' verified
 * throughput for two seconds before the drain and while it ran.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "common/cluster.h"
#include "common/etcd.h"
#include "common/wire.h"
#include "lib/internal.h"

/* the harness's node paths are bounded by its temporary directory's */
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "harness.h"

#define NODES 3

#define WORKERS 3 /* synchronous calls, a queue, a mapping */
#define QDEPTH 8

static uint64_t REGION = 48u << 20, PART = 16u << 20;

static struct t_etcd ec;
static const char *secret;
static atomic_int stop_flag, failed;
static atomic_long ops_done, bytes_done;

static em_pool *connect_pool_want(int want)
{
	struct em_pool_opts o = { .size = sizeof(o),
				  .secret_file = secret,
				  .timeout_ms = 10000,
				  .etcd = ec.url,
				  .cluster = "drain" };

	return t_connect_want(&o, want);
}

static em_pool *connect_pool(void)
{
	return connect_pool_want(NODES);
}

/* `lapse`: the drain's target is frozen (SIGSTOP) once the drain has made
 * its new part there, until its 1 s etcd lease has run out, then let go:
 * it registers again while the drain waits for it, and the drain must end
 * with the part moved there, the synchronous, queued and mapping workers
 * seeing no error. */
static struct t_node *lapse_node;
static atomic_int lapsed;

static void *lapse_main(void *arg)
{
	struct em_node_status st[NODES] = { { .size = sizeof(st[0]) } };
	em_pool *lp = arg;
	struct em_etcd *e;
	char key[256], val[1024];
	bool frozen = false;

	for (int k = 0; k < 20000 && !frozen; k++) {
		/* at most NODES entries come back; the bound spelled out also
		 * tells an optimizing compiler that st[i] stays inside st */
		int n = em_pool_status(lp, st, NODES);
		for (int i = 0; i < n && i < NODES; i++)
			if (!strcmp(st[i].addr, lapse_node->url) && st[i].used > 0) {
				kill(lapse_node->pid, SIGSTOP);
				frozen = true;
			}
		if (!frozen)
			t_sleep_ms(1);
	}
	if (!frozen || em_etcd_open(&e, ec.url, 2000))
		return NULL;
	snprintf(key, sizeof(key), "/ethermem/drain/nodes/127.0.0.1:%d", lapse_node->port);
	for (int i = 0; i < 1000 && em_etcd_get(e, key, val, sizeof(val)) > 0; i++)
		t_sleep_ms(10);
	if (em_etcd_get(e, key, val, sizeof(val)) == -ENOENT)
		atomic_store(&lapsed, 1);
	t_sleep_ms(300);
	kill(lapse_node->pid, SIGCONT);
	em_etcd_close(e);
	return NULL;
}

struct worker {
	pthread_t th;
	int id;
	uint8_t *ref; /* what this worker's half must hold */
	em_region *r;
	em_pool *p;
};

static void bad(struct worker *w, const char *what, uint64_t off, uint64_t len, int rc)
{
	fprintf(stderr, "worker %d: %s at %llu+%llu: %s\n", w->id, what,
		(unsigned long long)((uint64_t)w->id * PART + off), (unsigned long long)len,
		rc ? em_strerror(rc) : "wrong bytes");
	atomic_store(&failed, 1);
}

/* Synchronous calls, one at a time. */
static void *work_sync(struct worker *w)
{
	uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(w->id + 1);
	uint64_t base = (uint64_t)w->id * PART;
	uint8_t *buf = malloc(65536);

	while (!atomic_load(&stop_flag) && !atomic_load(&failed)) {
		uint64_t len = 1 + t_rand(&seed) % 65536, off = t_rand(&seed) % (PART - len);
		int rc;

		if (t_rand(&seed) % 2) {
			for (uint64_t i = 0; i < len; i++)
				buf[i] = (uint8_t)t_rand(&seed);
			rc = em_write(w->r, base + off, buf, len);
			if (!rc)
				memcpy(w->ref + off, buf, len);
		} else {
			rc = em_read(w->r, base + off, buf, len);
			if (!rc && memcmp(buf, w->ref + off, len))
				bad(w, "read", off, len, 0);
		}
		if (rc)
			bad(w, "call", off, len, rc);
		atomic_fetch_add(&ops_done, 1);
		atomic_fetch_add(&bytes_done, (long)len);
	}
	free(buf);
	return NULL;
}

/* Batches of up to QDEPTH operations on an em_queue, each in its own slice
 * of the third so that their order does not matter, reaped together. */
static void *work_queue(struct worker *w)
{
	uint64_t seed = 0x51ed270b27a6f1c3ull * (uint64_t)(w->id + 1);
	uint64_t base = (uint64_t)w->id * PART, slice = PART / QDEPTH;
	uint8_t *buf = malloc(QDEPTH * 65536);
	struct em_op ops[QDEPTH];
	struct em_completion c[QDEPTH];
	em_queue *q;
	int rc = em_queue_create(w->p, QDEPTH, &q);

	if (rc) {
		bad(w, "queue", 0, 0, rc);
		return NULL;
	}
	while (!atomic_load(&stop_flag) && !atomic_load(&failed)) {
		unsigned n = 1 + (unsigned)(t_rand(&seed) % QDEPTH), got = 0;
		long bytes = 0;

		for (unsigned k = 0; k < n; k++) {
			uint64_t len = 1 + t_rand(&seed) % 65536;
			uint64_t off = k * slice + t_rand(&seed) % (slice - len);
			uint8_t *b = buf + (size_t)k * 65536;
			bool wr = t_rand(&seed) % 2;

			if (wr)
				for (uint64_t i = 0; i < len; i++)
					b[i] = (uint8_t)t_rand(&seed);
			ops[k] = (struct em_op){ .opcode = wr ? EM_OP_WRITE : EM_OP_READ,
						 .region = w->r,
						 .offset = base + off,
						 .buf = b,
						 .len = len,
						 .user_data = k };
			bytes += (long)len;
		}
		if ((rc = em_submit(q, ops, n)) != (int)n) {
			bad(w, "submit", 0, 0, rc < 0 ? rc : -EAGAIN);
			break;
		}
		while (got < n) {
			rc = em_wait(q, c + got, 1, n - got, 30000);
			if (rc <= 0) {
				bad(w, "wait", 0, 0, rc < 0 ? rc : -ETIMEDOUT);
				goto out;
			}
			got += (unsigned)rc;
		}
		for (unsigned i = 0; i < n; i++) {
			const struct em_op *op = &ops[c[i].user_data];
			uint64_t off = op->offset - base;

			if (c[i].result)
				bad(w, op->opcode == EM_OP_WRITE ? "queued write" : "queued read",
				    off, op->len, c[i].result);
			else if (op->opcode == EM_OP_WRITE)
				memcpy(w->ref + off, op->buf, op->len);
			else if (memcmp(op->buf, w->ref + off, op->len))
				bad(w, "queued read", off, op->len, 0);
		}
		atomic_fetch_add(&ops_done, n);
		atomic_fetch_add(&bytes_done, bytes);
	}
out:
	em_queue_destroy(q);
	free(buf);
	return NULL;
}

/* Loads and stores through a mapping of the third; the pager fetches and
 * writes back under them (a failed fetch would kill the process). */
static void *work_map(struct worker *w)
{
	uint64_t seed = 0x2545f4914f6cdd1dull * (uint64_t)(w->id + 1);
	struct em_map_opts mo = { .size = sizeof(mo),
				  .offset = (uint64_t)w->id * PART,
				  .length = PART };
	uint8_t *buf = malloc(65536), *m;
	void *addr;
	int rc = em_map(w->r, &mo, &addr);

	if (rc) {
		bad(w, "map", 0, 0, rc);
		return NULL;
	}
	m = addr;
	while (!atomic_load(&stop_flag) && !atomic_load(&failed)) {
		uint64_t len = 1 + t_rand(&seed) % 65536, off = t_rand(&seed) % (PART - len);

		if (t_rand(&seed) % 2) {
			for (uint64_t i = 0; i < len; i++)
				buf[i] = (uint8_t)t_rand(&seed);
			memcpy(m + off, buf, len);
			memcpy(w->ref + off, buf, len);
		} else if (memcmp(m + off, w->ref + off, len)) {
			bad(w, "mapped read", off, len, 0);
		}
		atomic_fetch_add(&ops_done, 1);
		atomic_fetch_add(&bytes_done, (long)len);
	}
	/* what the cache still holds goes to the region before it is checked */
	if ((rc = em_sync(addr, PART)) || (rc = em_unmap(addr)))
		bad(w, "sync", 0, PART, rc);
	free(buf);
	return NULL;
}

static void *work(void *arg)
{
	struct worker *w = arg;

	return w->id == 0 ? work_sync(w) : w->id == 1 ? work_queue(w) : work_map(w);
}

static int node_of(struct t_node *n, const char *addr)
{
	for (int i = 0; i < NODES; i++)
		if (!strcmp(n[i].url, addr))
			return i;
	return -1;
}

static void wait_ops(long more)
{
	long until = atomic_load(&ops_done) + more;
	for (int i = 0; i < 3000 && atomic_load(&ops_done) < until && !atomic_load(&failed); i++)
		t_sleep_ms(10);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct t_node n[NODES];
	struct em_region_opts ro = { .size = sizeof(ro), .chunk_size = 1 << 20 };
	struct worker w[WORKERS];
	struct em_region_rec rec;
	struct em_etcd *e;
	char extra[256], cmd[2048], key[256], val[4096], out[8192];
	em_region *r, *idle;
	em_pool *p, *q;
	int d = -1, len, bench_mib = 0;
	double t0, t1, t2, before_mib_s = 0, during_mib_s;
	long b0, b1, b2;
	char cap[32] = "40M";
	bool lapse = argc == 2 && !strcmp(argv[1], "lapse");
	/* lapse: the mapping too, whose pager's connection to the target
	 * breaks while its lease lapses: the pool's reconnect thread dials
	 * it again and the fetch or write-back is sent again */
	int nworkers = WORKERS;
	pthread_t lth;
	em_pool *lp = NULL;
	FILE *f;

	if (argc == 3 && !strcmp(argv[1], "--bench") && atoi(argv[2]) >= 16) {
		bench_mib = atoi(argv[2]);
		REGION = (uint64_t)bench_mib << 20;
		PART = (REGION / WORKERS) & ~((1ull << 20) - 1);
		/* each node holds 5/6 of the region: it stripes, and the two
		 * others have room for the drained node's part */
		snprintf(cap, sizeof(cap), "%dM", bench_mib * 5 / 6);
	}
	if (lapse) {
		/* over two nodes that have no room for each other's part: the
		 * third, started afterwards, is the drain's only target */
		REGION = 96u << 20;
		PART = 32u << 20;
		snprintf(cap, sizeof(cap), "56M");
	}

	secret = t_secret("secret", T_SECRET);
	t_etcd_start(&ec);
	snprintf(extra, sizeof(extra), "--etcd %s --cluster drain --lease-ttl 3", ec.url);
	for (int i = 0; i < (lapse ? NODES - 1 : NODES); i++)
		t_node_start(&n[i], cap, secret, extra);
	p = connect_pool_want(lapse ? NODES - 1 : NODES);
	CHECK_RC(em_etcd_open(&e, ec.url, 2000), 0);

	/* striped: no node has room for all of it */
	CHECK_RC(em_region_create(p, "big", REGION, &ro, &r), 0);
	CHECK_RC(em_region_close(r), 0);
	if (lapse) {
		char ex[300];
		snprintf(ex, sizeof(ex), "--etcd %s --cluster drain --lease-ttl 1", ec.url);
		t_node_start(&n[NODES - 1], "128M", secret, ex);
		lapse_node = &n[NODES - 1];
		CHECK(T_WAIT_FOR(5000, em_pool_nodes(p) == NODES));
		lp = connect_pool();
	}
	len = em_etcd_get(e, "/ethermem/drain/regions/big", val, sizeof(val));
	CHECK(len > 0);
	CHECK_RC(em_region_rec_decode(val, (size_t)len, &rec), 0);
	CHECK(rec.nseg >= 2);
	CHECK(rec.epoch == 1);
	d = node_of(n, rec.seg_addr[0]);
	CHECK(d >= 0);
	printf("region over %u nodes; draining %s\n", rec.nseg, n[d].url);

	/* the mapping fetches and writes back all the time */
	CHECK_RC(em_map_cache_size(2u << 20), 0);
	for (int i = 0; i < nworkers; i++) {
		w[i].id = i;
		w[i].ref = calloc(1, PART); /* a new region reads as zeros */
		w[i].p = connect_pool();
		CHECK_RC(em_region_open(w[i].p, "big", &w[i].r), 0);
		CHECK(pthread_create(&w[i].th, NULL, work, &w[i]) == 0);
	}
	q = connect_pool(); /* opened before the drain, used only after it */
	CHECK_RC(em_region_open(q, "big", &idle), 0);
	wait_ops(200);
	if (bench_mib) { /* the workers' pace without a drain */
		b0 = atomic_load(&bytes_done);
		t0 = now_s();
		t_sleep_ms(2000);
		before_mib_s = (double)(atomic_load(&bytes_done) - b0) / 1048576.0 / (now_s() - t0);
	}

	/* a part no record lists, noted as a failed move leaves one on a
	 * target it could not reach: the drain removes it and the note */
	char orphan_key[256] = "", orphan_piece[64] = "";
	int orphan_node = -1;
	if (!lapse && !bench_mib) {
		struct em_region_rec orec;
		em_region *x;

		CHECK_RC(em_region_create(p, "orphan", 1u << 20, &ro, &x), 0);
		CHECK_RC(em_region_close(x), 0);
		len = em_etcd_get(e, "/ethermem/drain/regions/orphan", val, sizeof(val));
		CHECK(len > 0);
		CHECK_RC(em_region_rec_decode(val, (size_t)len, &orec), 0);
		CHECK(orec.nseg == 1);
		orphan_node = em_dir_seg_node(p, &orec, 0);
		CHECK(orphan_node >= 0);
		snprintf(orphan_piece, sizeof(orphan_piece), "%s", em_region_rec_piece(&orec, 0));
		CHECK(em_etcd_delete(e, "/ethermem/drain/regions/orphan", false) >= 0);
		snprintf(orphan_key, sizeof(orphan_key), "/ethermem/drain/orphans/%s/%s",
			 orec.seg_addr[0] + strlen("tcp://"), orphan_piece);
		CHECK_RC(em_etcd_put(e, orphan_key, "orphan", 6, 0), 0);
		CHECK_RC(t_piece_there(p, (unsigned)orphan_node, orphan_piece), 0);
	}

	/* the drain, by the tool, while the workers run */
	snprintf(cmd, sizeof(cmd),
		 "ETHERMEM_ETCD=%s ETHERMEM_CLUSTER=drain ETHERMEM_SECRET_FILE=%s %s node drain "
		 "%s 2>&1",
		 ec.url, secret, t_bin("ethermem"), n[d].url);
	b1 = atomic_load(&bytes_done);
	t1 = now_s();
	if (lapse)
		CHECK(pthread_create(&lth, NULL, lapse_main, lp) == 0);
	f = popen(cmd, "r");
	CHECK(f != NULL);
	len = (int)fread(out, 1, sizeof(out) - 1, f);
	out[len > 0 ? len : 0] = 0;
	{
		int st = pclose(f);
		if (st != 0)
			fprintf(stderr, "ethermem node drain said:\n%s\n", out);
		CHECK_RC(st, 0);
	}
	t2 = now_s();
	b2 = atomic_load(&bytes_done);
	during_mib_s = (double)(b2 - b1) / 1048576.0 / (t2 - t1);
	printf("%s", out);
	if (bench_mib) {
		double moved = 0, total = 0;
		const char *m = strstr(out, "moved big: ");
		if (m)
			sscanf(m, "moved big: %*f of %lf MiB", &total);
		for (m = out; (m = strstr(m, "moved big: ")); m++)
			sscanf(m, "moved big: %lf", &moved);
		printf("{\"bench\":\"cluster_drain\",\"region_mib\":%d,\"moved_mib\":%.1f,"
		       "\"drain_s\":%.3f,\"drain_mib_s\":%.1f,\"client_mib_s_before\":%.1f,"
		       "\"client_mib_s_during\":%.1f,\"during_over_before\":%.2f}\n",
		       bench_mib, moved, t2 - t1, moved / (t2 - t1), before_mib_s, during_mib_s,
		       before_mib_s > 0 ? during_mib_s / before_mib_s : 0);
		(void)total;
	}
	CHECK(strstr(out, "drained") != NULL);
	if (orphan_node >= 0) {
		CHECK_RC(t_piece_there(p, (unsigned)orphan_node, orphan_piece), -ENOENT);
		CHECK_RC(em_etcd_get(e, orphan_key, val, sizeof(val)), -ENOENT);
	}
	if (lapse) {
		/* the target's lease ran out during the drain, which waited
		 * for it to register again and moved the part there */
		pthread_join(lth, NULL);
		CHECK(atomic_load(&lapsed));
		em_pool_close(lp);
	}
	wait_ops(200);
	CHECK(!atomic_load(&failed));

	/* the record: a newer epoch, the drained node in no segment */
	len = em_etcd_get(e, "/ethermem/drain/regions/big", val, sizeof(val));
	CHECK(len > 0);
	CHECK_RC(em_region_rec_decode(val, (size_t)len, &rec), 0);
	CHECK(rec.epoch > 1);
	for (unsigned s = 0; s < rec.nseg; s++)
		CHECK(strcmp(rec.seg_addr[s], n[d].url) != 0);

	/* the node says draining, refuses new regions, and `node ls` shows it */
	snprintf(key, sizeof(key), "/ethermem/drain/nodes/127.0.0.1:%d", n[d].port);
	CHECK(T_WAIT_FOR(3000, (len = em_etcd_get(e, key, val, sizeof(val))) > 0 &&
				       strstr(val, "\"draining\"")));
	{
		em_region *x;
		struct em_node_status st[NODES] = { { .size = sizeof(st[0]) } };
		uint64_t before = 0, after = 0;
		/* lapse: this pool's own connection to the target is made again
		 * in the background (status shows it with capacity 0 until then) */
		CHECK(T_WAIT_FOR(15000, em_pool_status(p, st, NODES) == NODES && st[0].capacity &&
						st[1].capacity && st[2].capacity));
		for (int i = 0; i < NODES; i++)
			if (!strcmp(st[i].addr, n[d].url))
				before = st[i].used;
		CHECK_RC(em_region_create(p, "after", 4u << 20, &ro, &x), 0);
		CHECK_RC(em_pool_status(p, st, NODES), NODES);
		for (int i = 0; i < NODES; i++)
			if (!strcmp(st[i].addr, n[d].url))
				after = st[i].used;
		CHECK(after <= before);
		CHECK_RC(em_region_close(x), 0);
	}
	snprintf(cmd, sizeof(cmd), "ETHERMEM_ETCD=%s ETHERMEM_CLUSTER=drain %s node ls --json",
		 ec.url, t_bin("ethermem"));
	f = popen(cmd, "r");
	CHECK(f != NULL);
	len = (int)fread(out, 1, sizeof(out) - 1, f);
	out[len > 0 ? len : 0] = 0;
	CHECK_RC(pclose(f), 0);
	CHECK(strstr(out, "\"state\":\"draining\",\"capacity\"") != NULL);
	CHECK(strstr(out, "\"drain\":{\"state\":\"drained\"") != NULL);
	snprintf(cmd, sizeof(cmd),
		 "ETHERMEM_ETCD=%s ETHERMEM_CLUSTER=drain ETHERMEM_SECRET_FILE=%s %s status",
		 ec.url, secret, t_bin("ethermem"));
	f = popen(cmd, "r");
	CHECK(f != NULL);
	len = (int)fread(out, 1, sizeof(out) - 1, f);
	out[len > 0 ? len : 0] = 0;
	CHECK_RC(pclose(f), 0);
	CHECK(strstr(out, "drain of 127.0.0.1:") && strstr(out, ": drained, "));

	/* the drained node stops; the workers notice nothing */
	CHECK(t_node_stop(&n[d], SIGKILL) != 0);
	wait_ops(300);
	atomic_store(&stop_flag, 1);
	for (int i = 0; i < nworkers; i++)
		pthread_join(w[i].th, NULL);
	CHECK(!atomic_load(&failed));
	printf("%ld verified operations\n", atomic_load(&ops_done));

	/* a client that opens the region now, and the one whose handle idled
	 * through the drain, read every byte as written */
	CHECK_RC(em_region_open(p, "big", &r), 0);
	{
		uint8_t *all = malloc(PART);
		for (int i = 0; i < nworkers; i++) {
			CHECK_RC(em_read(r, (uint64_t)i * PART, all, PART), 0);
			CHECK(!memcmp(all, w[i].ref, PART));
			memset(all, 0, PART);
			CHECK_RC(em_read(idle, (uint64_t)i * PART, all, PART), 0);
			CHECK(!memcmp(all, w[i].ref, PART));
			em_region_close(w[i].r);
			em_pool_close(w[i].p);
			free(w[i].ref);
		}
		free(all);
	}
	CHECK_RC(em_region_close(r), 0);
	CHECK_RC(em_region_close(idle), 0);
	em_pool_close(q);
	em_etcd_close(e);
	em_pool_close(p);
	for (int i = 0; i < NODES; i++)
		t_node_stop(&n[i], SIGTERM);
	t_etcd_stop(&ec);
	return 0;
}
