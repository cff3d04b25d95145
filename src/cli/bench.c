/*
 * bench.c - `ethermem bench`: latency and bandwidth of the pool, and with
 * --baseline the same measured on a plain TCP ping-pong and stream over the
 * same path (an authenticated connection to the same node switched to raw
 * mode), so every figure can be read as a ratio to what the network gives in
 * the same run. Percentiles are exact (sorted samples), not histogram
 * estimates.
 *
 * Every row is bounded twice: by its amount of work (samples for a latency
 * row, bytes for a bandwidth row) and by --time seconds, whichever ends
 * first, the way fio's runtime bounds a job; so the whole run stays short
 * whatever the speed of the path (64-byte bandwidth rows would otherwise
 * move a gigabyte 64 bytes at a time). The queue rows run twice at depth
 * 32: submitting one operation per call, and in batches of 32 per em_submit
 * call, so the pair shows what the batch API saves per operation.
 *
 * Over OmniXtend (--transport ox) every row of the pool says "transport":
 * "ox", and --baseline adds, in the same run: a raw Ethernet ping-pong on
 * the same interface (op "eth-pingpong", against the node's echo
 * responder, sizes that fit one frame), the TCP ping-pong and stream, and
 * the TCP data path's read latency and large-read bandwidth through a
 * second pool connection (rows with "transport":"tcp"), so each goal of the
 * OmniXtend path reads as a ratio measured minutes apart at most.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/util.h"
#include "common/wire.h"
#include "lib/internal.h"
#include "lib/ox_chan.h"

/* --time's default: the whole default run stays around a minute on loopback */
#define EM_BENCH_TIME_S 1

struct row {
	const char *op, *transport, *red;
	double space;
	uint64_t size;
	unsigned qd, batch;
	double p50, p99, p999, gbps, ops;
};

struct bench {
	bool json, baseline, quick;
	uint64_t time_ns; /* --time: the bound on every row */
	em_pool *pool;
	em_region *r, *tr; /* tr: the same over TCP (--baseline over ox) */
	em_queue *tq;
	uint64_t rsize;
	uint8_t *buf;
	uint64_t *lat;
	struct row rows[128];
	unsigned nrows;
	uint64_t seed;
	int basefd;
	const char *transport;   /* of the rows being measured now */
	const char *red;         /* --redundancy: of the rows being measured now */
	double space;            /* its pool bytes per byte stored */
	struct em_ox_echo *echo; /* --baseline over OmniXtend */
};

static uint64_t rnd(struct bench *b)
{
	b->seed ^= b->seed << 13;
	b->seed ^= b->seed >> 7;
	b->seed ^= b->seed << 17;
	return b->seed;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static struct row *emit_b(struct bench *b, const char *op, uint64_t size, unsigned qd,
			  unsigned batch, uint64_t *lat, unsigned n, double secs, uint64_t bytes,
			  uint64_t ops)
{
	struct row *r = &b->rows[b->nrows < 127 ? b->nrows++ : 127];

	memset(r, 0, sizeof(*r));
	r->op = op;
	r->transport = b->transport;
	r->red = b->red;
	r->space = b->space;
	r->size = size;
	r->qd = qd;
	r->batch = batch;
	if (lat && n) {
		qsort(lat, n, sizeof(*lat), cmp_u64);
		r->p50 = (double)lat[n / 2] / 1e3;
		r->p99 = (double)lat[(size_t)((double)n * 0.99)] / 1e3;
		r->p999 = (double)lat[(size_t)((double)n * 0.999)] / 1e3;
	}
	r->gbps = secs > 0 ? (double)bytes / secs / 1e9 : 0;
	r->ops = secs > 0 ? (double)ops / secs : 0;
	if (b->json && b->red)
		printf("{\"op\":\"%s\",\"size\":%" PRIu64 ",\"qd\":%u,\"transport\":\"%s\","
		       "\"redundancy\":\"%s\",\"bytes_per_byte\":%.3f,"
		       "\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"gbps\":%.3f,"
		       "\"ops_per_s\":%.0f,\"batch\":%u}\n",
		       op, size, qd, r->transport, r->red, r->space, r->p50, r->p99, r->p999,
		       r->gbps, r->ops, batch);
	else if (b->json)
		printf("{\"op\":\"%s\",\"size\":%" PRIu64 ",\"qd\":%u,\"transport\":\"%s\","
		       "\"p50_us\":%.2f,\"p99_us\":%.2f,\"p999_us\":%.2f,\"gbps\":%.3f,"
		       "\"ops_per_s\":%.0f,\"batch\":%u}\n",
		       op, size, qd, r->transport, r->p50, r->p99, r->p999, r->gbps, r->ops, batch);
	else if (b->red)
		printf("%-13s %-12s %5.2f %9" PRIu64 " %4u %5u %10.2f %10.2f %10.2f %9.3f %12.0f\n",
		       op, r->red, r->space, size, qd, batch, r->p50, r->p99, r->p999, r->gbps,
		       r->ops);
	else
		printf("%-12s %-4s %9" PRIu64 " %4u %5u %10.2f %10.2f %10.2f %9.3f %12.0f\n", op,
		       r->transport, size, qd, batch, r->p50, r->p99, r->p999, r->gbps, r->ops);
	fflush(stdout);
	return r;
}

static struct row *emit(struct bench *b, const char *op, uint64_t size, unsigned qd, uint64_t *lat,
			unsigned n, double secs, uint64_t bytes, uint64_t ops)
{
	return emit_b(b, op, size, qd, 1, lat, n, secs, bytes, ops);
}

/* True once a row that started at t0 has used up its --time. */
static bool expired(const struct bench *b, uint64_t t0)
{
	return em_now_ns() - t0 >= b->time_ns;
}

static unsigned iters_for(struct bench *b, uint64_t size)
{
	unsigned n = size <= 4096 ? 20000 : size <= 65536 ? 5000 : 400;
	return b->quick ? n / 20 + 10 : n;
}

static uint64_t rand_off(struct bench *b, uint64_t size)
{
	uint64_t slots = b->rsize / size;
	return (rnd(b) % slots) * size;
}

static int lat_rw_as(struct bench *b, bool write, uint64_t size, const char *name)
{
	unsigned n = iters_for(b, size), i;
	uint64_t t0 = em_now_ns();

	for (i = 0; i < n && !expired(b, t0); i++) {
		uint64_t off = rand_off(b, size), s = em_now_ns();
		int rc = write ? em_write(b->r, off, b->buf, size)
			       : em_read(b->r, off, b->buf, size);
		if (rc)
			return rc;
		b->lat[i] = em_now_ns() - s;
	}
	n = i;
	emit(b,
	     name    ? name
	     : write ? "write"
		     : "read",
	     size, 1, b->lat, n, (double)(em_now_ns() - t0) / 1e9, size * n, n);
	return 0;
}

static int lat_rw(struct bench *b, bool write, uint64_t size)
{
	return lat_rw_as(b, write, size, NULL);
}

static int lat_atomic(struct bench *b, enum em_atomic_op aop, const char *name)
{
	unsigned n = iters_for(b, 8), i;
	uint64_t t0 = em_now_ns(), old;

	for (i = 0; i < n && !expired(b, t0); i++) {
		uint64_t s = em_now_ns();
		int rc = em_atomic(b->r, (rnd(b) % 512) * 8, aop, 1, 0, &old);
		if (rc)
			return rc;
		b->lat[i] = em_now_ns() - s;
	}
	n = i;
	emit(b, name, 8, 1, b->lat, n, (double)(em_now_ns() - t0) / 1e9, 8ull * n, n);
	return 0;
}

/*
 * Keeps qd operations in flight until `total` bytes have moved or the row's
 * time is up, then lets the last ones land. With batch > 1 it refills only
 * once `batch` slots are free, and posts those ops with one em_submit call.
 */
static int bandwidth(struct bench *b, em_queue *q, bool write, uint64_t size, unsigned qd,
		     unsigned batch)
{
	uint64_t total = b->quick ? 16ull << 20 : 1ull << 30, moved = 0, issued = 0, ops = 0;
	uint64_t t0;
	struct em_completion c[64];
	struct em_op op[64];
	unsigned slots = EM_MIN(EM_MIN(qd, 64u), (unsigned)(b->rsize / size));
	unsigned nfree = slots, inflight = 0, *free_slot;
	uint8_t *bufs;
	int rc = 0;

	batch = EM_MAX(1u, EM_MIN(batch, slots));
	if (total < size * qd * (b->quick ? 2 : 4))
		total = size * qd * (b->quick ? 2 : 4);
	/* one buffer per slot, handed back by its completion: a read must not
	 * land in a buffer still in use */
	bufs = malloc(size * slots);
	free_slot = malloc(slots * sizeof(*free_slot));
	if (!bufs || !free_slot) {
		free(bufs);
		free(free_slot);
		return -ENOMEM;
	}
	memset(bufs, 0x5a, size * slots);
	for (unsigned i = 0; i < slots; i++)
		free_slot[i] = i;
	t0 = em_now_ns();
	while (!rc) {
		bool more = issued < total && !expired(b, t0);

		if (!more && !inflight)
			break;
		while (more && nfree >= batch) {
			unsigned k = 0;

			while (k < batch && issued + size * k < total) {
				unsigned slot = free_slot[--nfree];
				op[k++] = (struct em_op){
					.opcode = write ? EM_OP_WRITE : EM_OP_READ,
					.region = b->r,
					.offset = rand_off(b, size),
					.buf = bufs + (size_t)slot * size,
					.len = size,
					.user_data = slot,
				};
			}
			int n = em_submit(q, op, k);
			if (n != (int)k) {
				inflight += n > 0 ? (unsigned)n : 0;
				rc = n < 0 ? n : -EAGAIN;
				break;
			}
			issued += size * k;
			inflight += k;
			more = issued < total;
		}
		if (rc || !inflight)
			continue;
		int n = em_wait(q, c, EM_MIN(batch, inflight), 64, -1);
		if (n <= 0) {
			rc = n < 0 ? n : -ETIMEDOUT;
			break;
		}
		for (int i = 0; i < n; i++) {
			if (c[i].result && !rc)
				rc = c[i].result;
			free_slot[nfree++] = (unsigned)c[i].user_data;
		}
		inflight -= (unsigned)n;
		moved += size * (unsigned)n;
		ops += (unsigned)n;
	}
	if (!rc)
		emit_b(b, write ? "write" : "read", size, qd, batch, NULL, 0,
		       (double)(em_now_ns() - t0) / 1e9, moved, ops);
	/* after an error, ops still in flight may yet write into the buffers */
	while (inflight) {
		int n = em_wait(q, c, 1, 64, 5000);
		if (n <= 0)
			return rc; /* the buffers stay allocated: a late read may land */
		inflight -= (unsigned)n;
	}
	free(bufs);
	free(free_slot);
	return rc;
}

static int base_req(int fd, uint32_t kind, uint64_t bytes)
{
	uint8_t req[16] = { 0 };

	em_put32(req, kind);
	em_put64(req + 8, bytes);
	return em_send_all(fd, req, sizeof(req));
}

static int pingpong(struct bench *b, uint64_t size)
{
	unsigned n = iters_for(b, size), i;
	uint64_t t0 = em_now_ns();
	int rc = 0;

	for (i = 0; i < n && !rc && !expired(b, t0); i++) {
		uint64_t st = em_now_ns();
		rc = base_req(b->basefd, EM_BASE_PING, size);
		if (!rc)
			rc = em_recv_all_poll(b->basefd, b->buf, size, b->pool->poll_us);
		b->lat[i] = em_now_ns() - st;
	}
	n = i;
	if (!rc) {
		const char *t = b->transport;
		b->transport = "tcp";
		emit(b, "pingpong", size, 1, b->lat, n, (double)(em_now_ns() - t0) / 1e9, size * n,
		     n);
		b->transport = t;
	}
	return rc;
}

/* Raw Ethernet ping-pong on the OmniXtend interface: 64-byte request,
 * `size`-byte reply, no protocol. */
static int eth_pingpong(struct bench *b, uint64_t size)
{
	unsigned n = iters_for(b, size), i;
	uint64_t t0;
	int rc = 0;

	if (size > (uint64_t)em_ox_echo_max(b->echo))
		return 0;                /* one frame each way, or it is not the baseline */
	for (i = 0; i < 100 && !rc; i++) /* warm the rings and caches */
		rc = em_ox_echo_ping(b->echo, size, 1000);
	t0 = em_now_ns();
	for (i = 0; i < n && !rc && !expired(b, t0); i++) {
		uint64_t st = em_now_ns();
		rc = em_ox_echo_ping(b->echo, size, 1000);
		b->lat[i] = em_now_ns() - st;
	}
	n = i;
	if (!rc)
		emit(b, "eth-pingpong", size, 1, b->lat, n, (double)(em_now_ns() - t0) / 1e9,
		     size * n, n);
	return rc;
}

/* The stream is asked for in chunks so that --time can end it between two;
 * one request per 256 MiB costs one round trip in some tens of milliseconds. */
static int stream(struct bench *b)
{
	uint64_t total = b->quick ? 64ull << 20 : 4ull << 30, got = 0, t0 = em_now_ns();
	uint64_t chunk = EM_MIN(total, 256ull << 20);
	int rc = 0;

	while (!rc && got < total && !expired(b, t0)) {
		uint64_t want = EM_MIN(chunk, total - got), part = 0;

		rc = base_req(b->basefd, EM_BASE_STREAM, want);
		while (!rc && part < want) {
			ssize_t r = recv(b->basefd, b->buf, EM_MIN(want - part, 2u << 20), 0);
			if (r <= 0)
				rc = r == 0 ? -ECONNRESET : -errno;
			else
				part += (uint64_t)r;
		}
		got += part;
	}
	if (!rc) {
		const char *t = b->transport;
		b->transport = "tcp";
		emit(b, "stream", 2u << 20, 1, NULL, 0, (double)(em_now_ns() - t0) / 1e9, got,
		     got / (2u << 20));
		b->transport = t;
	}
	return rc;
}

static const struct row *find_tb(const struct bench *b, const char *op, const char *t,
				 uint64_t size, unsigned qd, unsigned batch)
{
	for (unsigned i = 0; i < b->nrows; i++)
		if (!strcmp(b->rows[i].op, op) && b->rows[i].size == size && b->rows[i].qd == qd &&
		    b->rows[i].batch == batch && (!t || !strcmp(b->rows[i].transport, t)))
			return &b->rows[i];
	return NULL;
}

static const struct row *find_t(const struct bench *b, const char *op, const char *t, uint64_t size,
				unsigned qd)
{
	return find_tb(b, op, t, size, qd, 1);
}

static const struct row *find(const struct bench *b, const char *op, uint64_t size, unsigned qd)
{
	return find_t(b, op, b->transport, size, qd);
}

static void summary(const struct bench *b)
{
	const struct row *r4 = find(b, "read", 4096, 1), *p4 = find(b, "pingpong", 4096, 1);
	const struct row *p64 = find(b, "pingpong", 64, 1), *a = find(b, "atomic-fadd", 8, 1);
	const struct row *bw = find(b, "read", 2u << 20, 8);
	const struct row *st = find_t(b, "stream", "tcp", 2u << 20, 1);

	p4 = find_t(b, "pingpong", "tcp", 4096, 1);
	p64 = find_t(b, "pingpong", "tcp", 64, 1);
	printf("\nratios to the network in this run:\n");
	if (!strcmp(b->transport, "ox")) {
		const struct row *e4 = find_t(b, "eth-pingpong", "ox", 4096, 1);
		const struct row *t4 = find_t(b, "read", "tcp", 4096, 1);
		const struct row *tbw = find_t(b, "read", "tcp", 2u << 20, 8);
		if (r4 && e4)
			printf("  ox 4 KiB read p50 / raw Ethernet 4 KiB ping-pong p50  %.2f  (goal <= 1.2)\n",
			       r4->p50 / e4->p50);
		if (r4 && t4)
			printf("  ox 4 KiB read p50 / tcp 4 KiB read p50                %.2f  (goal <= 0.70)\n",
			       r4->p50 / t4->p50);
		if (bw && tbw)
			printf("  ox 2 MiB read qd8 GB/s / tcp 2 MiB read qd8 GB/s      %.2f  (goal >= 1)\n",
			       bw->gbps / tbw->gbps);
	}
	if (r4 && p4)
		printf("  4 KiB read p50 / 4 KiB ping-pong p50   %.2f  (goal <= 1.25)\n",
		       r4->p50 / p4->p50);
	if (bw && st)
		printf("  2 MiB read qd8 GB/s / stream GB/s      %.2f  (goal >= 0.85)\n",
		       bw->gbps / st->gbps);
	if (a && p64)
		printf("  8 B fetch-add p50 / 64 B ping-pong p50 %.2f  (goal <= 1.25)\n",
		       a->p50 / p64->p50);
	printf("batches of 32 against one op per em_submit, qd 32, ops/s:\n");
	for (unsigned k = 0; k < 2; k++) {
		uint64_t size = k ? 4096 : 64;
		const struct row *one = find(b, "read", size, 32);
		const struct row *many = find_tb(b, "read", b->transport, size, 32, 32);
		if (one && many && one->ops > 0)
			printf("  %4" PRIu64 " B reads                         %.2f\n", size,
			       many->ops / one->ops);
	}
}

static uint64_t pool_used(em_pool *pool)
{
	struct em_node_status st[EM_MAX_SEG];
	uint64_t used = 0;
	int n;

	st[0].size = sizeof(st[0]);
	n = em_pool_status(pool, st, EM_MAX_SEG);
	for (int i = 0; i < n && i < EM_MAX_SEG; i++)
		used += st[i].used;
	return used;
}

/* --redundancy none:N: N regions without redundancy, each on its own node
 * (a region that fits on one node goes to the one with the most room, so
 * each next one lands elsewhere), as the like-for-like baseline of the
 * redundant small operations: a 4 KiB read goes to one of them at random,
 * as an ec:K+M read goes to one of K data nodes, and a 4 KiB write puts the
 * same bytes in all N at once (one em_submit), as replicate:N does. Against
 * plain `none`, whose one node is asked every time, these say what spreading
 * the requests over nodes costs the machine, apart from any redundancy. */
static int spread_rows(struct bench *b, em_queue *q, unsigned n)
{
	uint64_t part = b->rsize / n / 4096 * 4096;
	em_region *r[16] = { 0 };
	int rc = 0;

	for (unsigned i = 0; i < n && !rc; i++) {
		rc = em_region_create(b->pool, NULL, part, NULL, &r[i]);
		for (unsigned j = 0; j < i && !rc; j++)
			if (r[j]->node[0] == r[i]->node[0]) {
				fprintf(stderr,
					"ethermem bench: none:%u needs %u nodes with room for %" PRIu64
					" bytes each\n",
					n, n, part);
				rc = -ENOSPC;
			}
		for (uint64_t off = 0; off < part && !rc; off += 2u << 20)
			rc = em_write(r[i], off, b->buf, EM_MIN(2u << 20, part - off));
	}
	for (unsigned w = 0; w < 2 && !rc; w++) {
		unsigned it = iters_for(b, 4096), i;
		uint64_t t0 = em_now_ns();

		for (i = 0; i < it && !rc && !expired(b, t0); i++) {
			uint64_t off = (rnd(b) % (part / 4096)) * 4096, s = em_now_ns();
			struct em_completion c[16];
			struct em_op op[16];

			if (!w) {
				rc = em_read(r[rnd(b) % n], off, b->buf, 4096);
			} else {
				for (unsigned k = 0; k < n; k++)
					op[k] = (struct em_op){ .opcode = EM_OP_WRITE,
								.region = r[k],
								.offset = off,
								.buf = b->buf,
								.len = 4096 };
				rc = em_submit(q, op, n);
				rc = rc == (int)n ? 0 : rc < 0 ? rc : -EAGAIN;
				for (unsigned got = 0; !rc && got < n;) {
					int m = em_wait(q, c, n - got, n, -1);
					if (m <= 0)
						rc = m < 0 ? m : -ETIMEDOUT;
					for (int k = 0; k < m && !rc; k++)
						rc = c[k].result;
					got += m > 0 ? (unsigned)m : 0;
				}
			}
			b->lat[i] = em_now_ns() - s;
		}
		if (!rc)
			emit(b, w ? "write" : "read", 4096, 1, b->lat, i,
			     (double)(em_now_ns() - t0) / 1e9, 4096ull * i, i);
	}
	for (unsigned i = 0; i < n; i++)
		if (r[i])
			em_region_close(r[i]);
	return rc;
}

/* --redundancy LIST: the same rows for each redundancy, in one run, on a
 * region of b->rsize bytes: 4 KiB and 2 MiB read and write latency at
 * queue depth 1, 2 MiB bandwidth at depth 8 (one op per em_submit), 4 KiB
 * and 2 MiB at depth 8 in batches of 8 per em_submit, reads with one node taken as
 * lost (the first copy or data chunk: what a dead node leaves), and the
 * pool memory the region takes per byte (from the nodes' own counters). */
static int red_rows(struct bench *b, em_queue *q, char *list)
{
	char *save = NULL;
	int rc = 0;

	/* the degraded rows mark a live node lost: no repair may start then */
	setenv("ETHERMEM_AUTO_REPAIR", "0", 1);
	for (char *tok = strtok_r(list, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
		struct em_region_opts o = { .size = sizeof(o) };
		uint64_t before;
		em_region *r = NULL;
		unsigned spread;
		char end;

		if (sscanf(tok, "none:%u%c", &spread, &end) == 1) {
			if (spread < 2 || spread > 16) {
				fprintf(stderr, "ethermem bench: none:N takes N from 2 to 16\n");
				return -EINVAL;
			}
			b->red = tok;
			b->space = 1;
			rc = spread_rows(b, q, spread);
			continue;
		}
		if (em_parse_redundancy(tok, &o)) {
			fprintf(stderr, "ethermem bench: bad redundancy '%s'\n", tok);
			return -EINVAL;
		}
		before = pool_used(b->pool);
		rc = em_region_create(b->pool, NULL, b->rsize, &o, &r);
		if (rc)
			break;
		b->space = (double)(pool_used(b->pool) - before) / (double)b->rsize;
		b->red = tok;
		b->r = r;
		for (uint64_t off = 0; off < b->rsize && !rc; off += 2u << 20)
			rc = em_write(r, off, b->buf, 2u << 20);
		if (!rc)
			rc = lat_rw(b, false, 4096);
		if (!rc)
			rc = lat_rw(b, true, 4096);
		if (!rc)
			rc = lat_rw(b, false, 2u << 20);
		if (!rc)
			rc = lat_rw(b, true, 2u << 20);
		if (!rc)
			rc = bandwidth(b, q, false, 2u << 20, 8, 1);
		if (!rc)
			rc = bandwidth(b, q, true, 2u << 20, 8, 1);
		/* depth as a batched API is used: eight ops per em_submit,
		 * which go out together (one op per call waits for each) */
		for (unsigned i = 0; i < 4 && !rc; i++)
			rc = bandwidth(b, q, i & 1, i < 2 ? 4096 : 2u << 20, 8, 8);
		if (!rc && em_red_on(r)) {
			r->lost = 1; /* as after the first copy's node died */
			rc = lat_rw_as(b, false, 4096, "read-degraded");
			if (!rc)
				rc = lat_rw_as(b, false, 2u << 20, "read-degraded");
		}
		b->r = NULL;
		em_region_close(r);
	}
	b->red = NULL;
	return rc;
}

int em_cli_bench(int argc, char **argv, struct em_cli_pool *cp)
{
	char *redlist = NULL;
	static const uint64_t sizes[] = { 64, 4096, 65536, 2u << 20 };
	/* queue depth and ops per em_submit call of the bandwidth rows */
	static const unsigned qds[][2] = { { 8, 1 }, { 32, 1 }, { 32, 32 } };
	struct bench b = { .seed = 0x9e3779b97f4a7c15ull,
			   .basefd = -1,
			   .time_ns = EM_BENCH_TIME_S * 1000000000ull };
	em_queue *q = NULL;
	em_pool *tpool = NULL; /* --baseline over OmniXtend: the TCP data path */
	int rc;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			b.json = true;
		else if (!strcmp(argv[i], "--baseline"))
			b.baseline = true;
		else if (!strcmp(argv[i], "--quick"))
			b.quick = true;
		else if (!strcmp(argv[i], "--time") && i + 1 < argc) {
			char *end;
			double t = strtod(argv[++i], &end);
			if (end == argv[i] || *end || !(t > 0 && t <= 3600)) {
				fprintf(stderr,
					"ethermem bench: --time wants seconds in (0, 3600], "
					"not '%s'\n",
					argv[i]);
				return 2;
			}
			b.time_ns = (uint64_t)(t * 1e9);
		} else if (!strcmp(argv[i], "--redundancy") && i + 1 < argc) {
			redlist = argv[++i];
		} else if (!strcmp(argv[i], "--help")) {
			printf("usage: ethermem bench [--baseline] [--json] [--quick] [--time SECONDS]\n"
			       "                      [--redundancy LIST]\n"
			       "Measures read and write latency (p50/p99/p999) at queue depth 1 and\n"
			       "bandwidth at queue depths 8 and 32 for 64 B, 4 KiB, 64 KiB and 2 MiB,\n"
			       "and atomics latency, on an anonymous region of the pool. Bandwidth\n"
			       "rows submit one operation per call (batch 1); at depth 32 a second\n"
			       "row submits 32 per call (batch 32).\n"
			       "--time SECONDS bounds every row (default %d): a row ends when its\n"
			       "samples (20,000 at most) or bytes (1 GiB) are done or its time is up.\n"
			       "--baseline also measures a plain TCP ping-pong of the same sizes and\n"
			       "a plain TCP stream to the first node over the same path; over\n"
			       "OmniXtend (--transport ox) also a raw Ethernet ping-pong on the same\n"
			       "interface and the TCP data path's reads, for comparison.\n"
			       "--json prints one JSON object per measurement.\n"
			       "--redundancy none,replicate:2,ec:4+2 measures instead, for each, 4 KiB\n"
			       "and 2 MiB read and write latency, 2 MiB bandwidth at depth 8 (batch\n"
			       "1), 4 KiB and 2 MiB bandwidth at depth 8 in batches of 8 per em_submit,\n"
			       "reads with the first copy's node taken as lost, and the pool bytes\n"
			       "used per byte stored, on a 32 MiB region. none:N (2..16) is the\n"
			       "like-for-like baseline of the redundant small operations: N regions\n"
			       "without redundancy on N nodes, 4 KiB reads of one at random (as EC\n"
			       "reads one data node) and 4 KiB writes to all N at once (as\n"
			       "replicate:N).\n",
			       EM_BENCH_TIME_S);
			return 0;
		} else {
			fprintf(stderr, "ethermem bench: unknown argument '%s'\n", argv[i]);
			return 2;
		}
	}
	if (em_cli_connect(cp, &b.pool, "ethermem bench"))
		return 1;
	b.transport = b.pool->tp->name;
	b.rsize = redlist ? 32ull << 20 : 64ull << 20;
	b.buf = malloc(2u << 20);
	b.lat = malloc(20000 * sizeof(*b.lat));
	rc = b.buf && b.lat ? 0 : -ENOMEM;
	if (!rc && redlist) {
		memset(b.buf, 0xa5, 2u << 20);
		rc = em_queue_create(b.pool, 64, &q);
		if (!b.json && !rc)
			printf("%-13s %-12s %5s %9s %4s %5s %10s %10s %10s %9s %12s\n", "op",
			       "redundancy", "B/B", "size", "qd", "batch", "p50 us", "p99 us",
			       "p999 us", "GB/s", "ops/s");
		if (!rc)
			rc = red_rows(&b, q, redlist);
		if (rc)
			fprintf(stderr, "ethermem bench: %s\n", em_strerror(rc));
		goto out;
	}
	if (!rc)
		rc = em_region_create(b.pool, NULL, b.rsize, NULL, &b.r);
	if (!rc) {
		/* touch every page once so the node's first-touch cost is not measured */
		memset(b.buf, 0xa5, 2u << 20);
		for (uint64_t off = 0; off < b.rsize && !rc; off += 2u << 20)
			rc = em_write(b.r, off, b.buf, 2u << 20);
	}
	if (!rc)
		rc = em_queue_create(b.pool, 64, &q);
	if (rc) {
		fprintf(stderr, "ethermem bench: setup failed: %s\n", em_strerror(rc));
		goto out;
	}
	if (!b.json)
		printf("%-12s %-4s %9s %4s %5s %10s %10s %10s %9s %12s\n", "op", "via", "size",
		       "qd", "batch", "p50 us", "p99 us", "p999 us", "GB/s", "ops/s");
	/* Per size, the ping-pong and the reads and writes run back to back so
	 * that drift in the machine's load hits both sides of each ratio. */
	if (b.baseline && (b.basefd = em_tcp_baseline_fd(b.pool, 0)) < 0)
		rc = b.basefd;
	if (!rc && b.baseline && !strcmp(b.pool->tp->name, "ox")) {
		struct em_cli_pool tcp = *cp;
		rc = em_ox_echo_open(b.pool, 0, &b.echo);
		tcp.opts.transport = EM_TRANSPORT_TCP;
		if (!rc)
			rc = em_pool_connect(&tpool, &tcp.opts);
		if (!rc)
			rc = em_region_create(tpool, NULL, b.rsize, NULL, &b.tr);
		for (uint64_t off = 0; off < b.rsize && !rc; off += 2u << 20)
			rc = em_write(b.tr, off, b.buf, 2u << 20);
		if (!rc)
			rc = em_queue_create(tpool, 64, &b.tq);
		if (rc)
			fprintf(stderr, "ethermem bench: baseline setup: %s\n", em_strerror(rc));
	}
	for (unsigned s = 0; s < 4 && !rc; s++) {
		if (b.baseline)
			rc = pingpong(&b, sizes[s]);
		if (!rc && b.echo)
			rc = eth_pingpong(&b, sizes[s]);
		if (!rc && b.tr) {
			/* the TCP data path's read, next to ours */
			em_region *r = b.r;
			b.r = b.tr;
			b.transport = "tcp";
			rc = lat_rw(&b, false, sizes[s]);
			b.r = r;
			b.transport = "ox";
		}
		if (!rc)
			rc = lat_rw(&b, false, sizes[s]);
		if (!rc)
			rc = lat_rw(&b, true, sizes[s]);
	}
	if (b.baseline && !rc)
		rc = stream(&b);
	for (unsigned s = 0; s < 4 && !rc; s++)
		for (unsigned k = 0; k < 3 && !rc; k++) {
			if (b.tr && sizes[s] >= 65536) {
				em_region *r = b.r;
				b.r = b.tr;
				b.transport = "tcp";
				rc = bandwidth(&b, b.tq, false, sizes[s], qds[k][0], qds[k][1]);
				b.r = r;
				b.transport = "ox";
			}
			if (!rc)
				rc = bandwidth(&b, q, false, sizes[s], qds[k][0], qds[k][1]);
			if (!rc)
				rc = bandwidth(&b, q, true, sizes[s], qds[k][0], qds[k][1]);
		}
	if (!rc)
		rc = lat_atomic(&b, EM_ATOMIC_FADD, "atomic-fadd");
	if (!rc)
		rc = lat_atomic(&b, EM_ATOMIC_CAS, "atomic-cas");
	if (rc)
		fprintf(stderr, "ethermem bench: %s\n", em_strerror(rc));
	else if (!b.json && b.baseline)
		summary(&b);
out:
	if (b.basefd >= 0) {
		base_req(b.basefd, EM_BASE_QUIT, 0);
		close(b.basefd);
	}
	em_queue_destroy(q);
	if (b.r)
		em_region_close(b.r);
	em_ox_echo_close(b.echo);
	em_queue_destroy(b.tq);
	if (b.tr)
		em_region_close(b.tr);
	em_pool_close(tpool);
	em_pool_close(b.pool);
	free(b.buf);
	free(b.lat);
	return rc ? 1 : 0;
}
