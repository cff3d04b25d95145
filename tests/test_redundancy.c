/*
 * test_redundancy.c - regions that survive node deaths, on real nodes with
 * real kills. For replicate:2, replicate:3 and ec:4+2 over seven nodes: a
 * workload of random writes and verified reads against a reference copy,
 * one node holding part of the region SIGKILLed mid-run, then a second where
 * the redundancy allows it, every byte checked, zero errors. Then:
 *  - a node frozen (SIGSTOP) instead of killed: served after the timeout;
 *  - atomics from several client processes with the primary copy killed
 *    mid-run: the count is exact;
 *  - several processes writing different bytes of the same EC stripes at
 *    once, then a data node killed: what is rebuilt from parity is what each
 *    wrote, so no writer's parity update was lost to another's;
 *  - more failures than the redundancy allows: -EM_ELOST, never zeros;
 *  - the redundancy is in the layout: a second client opening the name
 *    sees it, and the listing shows it;
 *  - repair rebuilds a dead node's part elsewhere, and that part then serves
 *    when the other original holders die; also of a replicated region whose
 *    size is not a multiple of 8 (its lock words stay aligned);
 *  - background repair: a holder SIGKILLed under a workload (writes, reads,
 *    atomics) is noticed, the handle shows the region repairing while the
 *    workload goes on, and is healthy again with every byte right; then the
 *    other original holders die and the rebuilt part serves.
 *  - repair beside another client: one process repairs (slowly), another
 *    writes (and counts, on replicate:N) all the while; the writer is fenced,
 *    follows the new part and writes it too; afterwards every original
 *    holder that the redundancy allows is killed and every byte of both is
 *    right, served by the rebuilt part.
 *  - writes racing the copy: several processes (and a thread of the
 *    repairing one) write all over a replicated region while its lost copy
 *    is rebuilt at full speed; the rebuilt copy alone holds every byte.
 */
#include <inttypes.h>
#include <pthread.h>
#include <sys/mman.h>

/* harness.h formats paths into fixed buffers that it sized for them */
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "harness.h"
#include "common/util.h"
#include "lib/internal.h"

#define NODES 7
#define SIZE (1u << 20)

static const char *sec;

static void start_nodes(struct t_node *n, int count)
{
	for (int i = 0; i < count; i++)
		t_node_start(&n[i], "16M", sec, NULL);
}

static void stop_nodes(struct t_node *n, int count)
{
	for (int i = 0; i < count; i++)
		if (n[i].pid > 0)
			t_node_stop(&n[i], SIGKILL);
}

/* The test node that holds segment `seg` of the region. */
static struct t_node *holder(struct t_node *n, em_region *r, unsigned seg)
{
	return &n[r->node[seg]];
}

static void rand_ops(em_region *r, uint8_t *ref, int ops, uint64_t *seed)
{
	static uint8_t buf[3 * 65536];

	for (int i = 0; i < ops; i++) {
		uint64_t len = 1 + t_rand(seed) % (t_rand(seed) % 4 ? 9000 : sizeof(buf));
		uint64_t off = t_rand(seed) % (SIZE - len + 1);

		if (t_rand(seed) % 2) {
			for (uint64_t k = 0; k < len; k++)
				buf[k] = (uint8_t)t_rand(seed);
			CHECK_RC(em_write(r, off, buf, len), 0);
			memcpy(ref + off, buf, len);
		} else {
			CHECK_RC(em_read(r, off, buf, len), 0);
			if (memcmp(buf, ref + off, len)) {
				fprintf(stderr, "wrong bytes at %" PRIu64 "+%" PRIu64 "\n", off,
					len);
				exit(1);
			}
		}
	}
}

static void check_all(em_region *r, const uint8_t *ref)
{
	uint8_t *all = malloc(SIZE);

	CHECK(all);
	CHECK_RC(em_read(r, 0, all, SIZE), 0);
	CHECK(!memcmp(all, ref, SIZE));
	free(all);
}

/* Random workload, kill one holder, go on, kill another (if allowed), go
 * on, then one more than allowed: the error, not zeros. */
static void workload(const char *red, unsigned survive, unsigned chunk)
{
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o), .chunk_size = chunk };
	uint8_t *ref = calloc(1, SIZE), *buf = malloc(SIZE);
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	em_pool *pool;
	em_region *r, *r2;
	int rc;

	CHECK(ref && buf);
	start_nodes(n, NODES);
	pool = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_parse_redundancy(red, &o), 0);
	CHECK_RC(em_region_create(pool, "red", SIZE, &o, &r), 0);
	CHECK(r->nseg == (unsigned)o.red_k + o.red_m);
	for (unsigned a = 0; a < r->nseg; a++)
		for (unsigned b = a + 1; b < r->nseg; b++)
			CHECK(r->node[a] != r->node[b]);
	/* a second client sees the redundancy in the layout */
	{
		em_pool *p2 = t_connect_ok(n, NODES, sec);
		struct em_region_info info[4];
		info[0].size = sizeof(info[0]);
		CHECK_RC(em_region_open(p2, "red", &r2), 0);
		CHECK(r2->red == o.redundancy && r2->red_k == o.red_k && r2->red_m == o.red_m);
		CHECK_RC(em_region_list(p2, info, 4), 1);
		CHECK(info[0].redundancy == o.redundancy && info[0].red_k == o.red_k &&
		      info[0].red_m == o.red_m && info[0].state == EM_STATE_HEALTHY);
		em_region_close(r2);
		em_pool_close(p2);
	}
	rand_ops(r, ref, 300, &seed);
	check_all(r, ref);
	/* the first failure: a node holding the first copy / data chunk */
	CHECK(t_node_stop(holder(n, r, 0), SIGKILL) < 0 || 1);
	rand_ops(r, ref, 300, &seed);
	check_all(r, ref);
	CHECK(em_red_state(r) == EM_STATE_DEGRADED);
	if (survive >= 2) {
		t_node_stop(holder(n, r, 1), SIGKILL);
		rand_ops(r, ref, 300, &seed);
		check_all(r, ref);
	}
	/* one failure too many: every remaining data holder that matters */
	for (unsigned s = survive; s < r->nseg; s++) {
		t_node_stop(holder(n, r, s), SIGKILL);
		rc = em_read(r, 0, buf, SIZE);
		if (rc)
			break;
		CHECK(!memcmp(buf, ref, SIZE)); /* still served: must still be right */
	}
	memset(buf, 0, SIZE);
	CHECK_RC(em_read(r, 0, buf, SIZE), -EM_ELOST);
	CHECK_RC(em_write(r, 0, buf, 4096), -EM_ELOST);
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, NODES);
	free(ref);
	free(buf);
	fprintf(stderr, "%s: survived %u kills, refused the next\n", red, survive);
}

/* One em_submit of up to 16 operations on a redundant region (the
 * submission's reads and writes of a replicated region go out together):
 * writes at random places, reads of bytes no write of the same batch
 * touches (checked against the reference), and on replicate:N fetch-adds
 * to a counter word no write reaches. Returns the adds done. */
#define BATCH_CTR (SIZE - 8)

static unsigned batch_round(em_queue *q, em_region *r, uint8_t *ref, uint64_t *seed, bool adds)
{
	static uint8_t bufs[16][9000];
	struct em_op ops[16];
	struct em_completion c[16];
	uint64_t lo[16], hi[16];
	unsigned n = 1 + (unsigned)(t_rand(seed) % 16), nw = 0, added = 0;

	memset(ops, 0, sizeof(ops));
	for (unsigned i = 0; i < n; i++) {
		uint64_t len = 1 + t_rand(seed) % sizeof(bufs[i]);
		uint64_t off = t_rand(seed) % (BATCH_CTR - len + 1);
		unsigned kind = (unsigned)(t_rand(seed) % 8);

		ops[i].region = r;
		ops[i].user_data = i;
		if (adds && kind == 0) {
			ops[i].opcode = EM_OP_ATOMIC;
			ops[i].atomic_op = EM_ATOMIC_FADD;
			ops[i].offset = BATCH_CTR;
			ops[i].operand = 1;
			continue;
		}
		ops[i].offset = off;
		ops[i].buf = bufs[i];
		ops[i].len = len;
		if (kind < 4) {
			ops[i].opcode = EM_OP_WRITE;
			for (uint64_t k = 0; k < len; k++)
				bufs[i][k] = (uint8_t)t_rand(seed);
			lo[nw] = off;
			hi[nw++] = off + len;
		} else {
			ops[i].opcode = EM_OP_READ;
		}
	}
	/* a read that meets a write of its batch reads nothing: the batch's
	 * operations are in flight together, in no order */
	for (unsigned i = 0; i < n; i++)
		for (unsigned w = 0; ops[i].opcode == EM_OP_READ && w < nw; w++)
			if (ops[i].offset < hi[w] && lo[w] < ops[i].offset + ops[i].len)
				ops[i].len = 0;
	CHECK_RC(em_submit(q, ops, n), (int)n);
	CHECK_RC(em_wait(q, c, n, n, -1), (int)n);
	for (unsigned i = 0; i < n; i++) {
		const struct em_op *op = &ops[c[i].user_data];
		if (c[i].result) {
			fprintf(stderr, "batch op %u (opcode %u) failed: %d\n",
				(unsigned)c[i].user_data, op->opcode, c[i].result);
			exit(1);
		}
		if (op->opcode == EM_OP_READ && memcmp(op->buf, ref + op->offset, op->len)) {
			fprintf(stderr, "batch read: wrong bytes at %" PRIu64 "+%zu\n", op->offset,
				op->len);
			exit(1);
		}
		added += op->opcode == EM_OP_ATOMIC && op->operand;
	}
	for (unsigned i = 0; i < n; i++)
		if (ops[i].opcode == EM_OP_WRITE)
			memcpy(ref + ops[i].offset, ops[i].buf, ops[i].len);
	return added;
}

/* Batches through a queue, the first copy's (data cell's) holder killed
 * between two of them: the next batch finds it dead on its way, and no
 * operation fails, every byte is right, the counter exact. */
static void batch(const char *red, unsigned chunk)
{
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o), .chunk_size = chunk };
	uint8_t *ref = calloc(1, SIZE);
	uint64_t seed = 0x2545f4914f6cdd1dull, adds = 0, v = 0;
	bool rep = !strncmp(red, "replicate", 9);
	em_pool *pool;
	em_region *r;
	em_queue *q;

	CHECK(ref);
	start_nodes(n, NODES);
	pool = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_parse_redundancy(red, &o), 0);
	CHECK_RC(em_region_create(pool, "batch", SIZE, &o, &r), 0);
	CHECK_RC(em_queue_create(pool, 64, &q), 0);
	for (int i = 0; i < 150; i++)
		adds += batch_round(q, r, ref, &seed, rep);
	t_node_stop(holder(n, r, 0), SIGKILL);
	for (int i = 0; i < 150; i++)
		adds += batch_round(q, r, ref, &seed, rep);
	CHECK(em_red_state(r) == EM_STATE_DEGRADED);
	if (rep) {
		CHECK_RC(em_read(r, BATCH_CTR, &v, 8), 0);
		CHECK(v == adds);
		memcpy(ref + BATCH_CTR, &v, 8);
	}
	check_all(r, ref);
	em_queue_destroy(q);
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, NODES);
	free(ref);
	fprintf(stderr, "%s: batches of up to 16 ops right across a kill (%" PRIu64 " adds)\n", red,
		adds);
}

/* A frozen node (SIGSTOP): the requests to it time out, then the others
 * serve; nothing wrong is returned. */
static void freeze(const char *red)
{
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o), .chunk_size = 4096 };
	uint8_t *ref = calloc(1, SIZE);
	uint64_t seed = 7;
	em_pool *pool;
	em_region *r;

	setenv("ETHERMEM_TIMEOUT_MS", "1000", 1);
	start_nodes(n, NODES);
	pool = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_parse_redundancy(red, &o), 0);
	CHECK_RC(em_region_create(pool, NULL, SIZE, &o, &r), 0);
	rand_ops(r, ref, 100, &seed);
	kill(holder(n, r, 0)->pid, SIGSTOP);
	rand_ops(r, ref, 100, &seed);
	check_all(r, ref);
	kill(holder(n, r, 0)->pid, SIGCONT);
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, NODES);
	unsetenv("ETHERMEM_TIMEOUT_MS");
	free(ref);
}

/* Reads or writes [off, off+len) of r: with no queue in one call, else
 * as `len / piece` operations of one em_submit (a replicated region's run
 * as one group, em_red_exec_many). Returns the first error, or 0. */
static int xfer(em_region *r, em_queue *q, unsigned opcode, uint64_t off, uint8_t *buf,
		uint64_t len, uint64_t piece)
{
	struct em_op ops[16];
	struct em_completion c[16];
	unsigned n = (unsigned)(len / piece);
	int rc = 0;

	if (!q)
		return opcode == EM_OP_READ ? em_read(r, off, buf, len)
					    : em_write(r, off, buf, len);
	CHECK(len % piece == 0 && n >= 2 && n <= 16);
	memset(ops, 0, sizeof(ops));
	for (unsigned i = 0; i < n; i++) {
		ops[i].region = r;
		ops[i].opcode = (uint8_t)opcode;
		ops[i].offset = off + i * piece;
		ops[i].buf = buf + i * piece;
		ops[i].len = piece;
		ops[i].user_data = i;
	}
	CHECK_RC(em_submit(q, ops, n), (int)n);
	CHECK_RC(em_wait(q, c, n, n, -1), (int)n);
	for (unsigned i = 0; i < n; i++)
		if (c[i].result && !rc)
			rc = c[i].result;
	return rc;
}

/* A handle opened before a node froze never sees that node fail: another
 * client's write finds it gone, completes from the other parts, and the
 * node is thawed still holding the old bytes. The first handle reads next
 * (replicate:2 from its first copy, ec:4+2 its data cells, the thawed
 * node's among them) and must get the other client's bytes, never the
 * thawed node's; so must a write of its own that follows, read back.
 * `batched`: every read and write after the freeze goes as several
 * operations of one submission (a replicated region's as one group). */
static void thaw(bool batched)
{
	static const char *red[2] = { "replicate:2", "ec:4+2" };
	struct t_node n[NODES];
	em_region *ra[2], *rb[2];
	uint8_t *a = malloc(SIZE), *b = malloc(SIZE), *got = malloc(SIZE);
	uint64_t seed = 31;
	pid_t frozen[2];
	em_pool *pa, *pb;
	em_queue *qa = NULL, *qb = NULL;

	CHECK(a && b && got);
	for (unsigned k = 0; k < SIZE; k++) {
		a[k] = (uint8_t)t_rand(&seed);
		b[k] = (uint8_t)t_rand(&seed);
	}
	setenv("ETHERMEM_TIMEOUT_MS", "1000", 1);
	start_nodes(n, NODES);
	pa = t_connect_ok(n, NODES, sec);
	pb = t_connect_ok(n, NODES, sec);
	if (batched) {
		CHECK_RC(em_queue_create(pa, 64, &qa), 0);
		CHECK_RC(em_queue_create(pb, 64, &qb), 0);
	}
	for (int i = 0; i < 2; i++) {
		struct em_region_opts o = { .size = sizeof(o), .chunk_size = 4096 };
		char name[16];
		snprintf(name, sizeof(name), "thaw%d", i);
		CHECK_RC(em_parse_redundancy(red[i], &o), 0);
		CHECK_RC(em_region_create(pa, name, SIZE, &o, &ra[i]), 0);
		CHECK_RC(em_write(ra[i], 0, a, SIZE), 0);
		CHECK_RC(em_region_open(pb, name, &rb[i]), 0);
		CHECK_RC(em_read(rb[i], 0, got, SIZE), 0);
		CHECK(!memcmp(got, a, SIZE));
		/* what B reads first: the first copy, the first data cell */
		frozen[i] = holder(n, rb[i], 0)->pid;
	}
	t_freeze(frozen[0]);
	t_freeze(frozen[1]);
	for (int i = 0; i < 2; i++)
		CHECK_RC(xfer(ra[i], qa, EM_OP_WRITE, 0, b, SIZE, SIZE / 16), 0);
	kill(frozen[0], SIGCONT);
	kill(frozen[1], SIGCONT);
	for (int i = 0; i < 2; i++) {
		memset(got, 0, SIZE);
		CHECK_RC(xfer(rb[i], qb, EM_OP_READ, 0, got, SIZE, SIZE / 16), 0);
		if (memcmp(got, b, SIZE)) {
			fprintf(stderr, "%s: an open handle read the thawed node's old bytes\n",
				red[i]);
			exit(1);
		}
		/* and its own write lands where a reader finds it */
		CHECK_RC(xfer(rb[i], qb, EM_OP_WRITE, 4096, a, 8192, 2048), 0);
		CHECK_RC(xfer(ra[i], qa, EM_OP_READ, 0, got, SIZE, SIZE / 16), 0);
		CHECK(!memcmp(got, b, 4096) && !memcmp(got + 4096, a, 8192) &&
		      !memcmp(got + 12288, b + 12288, SIZE - 12288));
		CHECK_RC(xfer(rb[i], qb, EM_OP_READ, 4096, got, 8192, 2048), 0);
		CHECK(!memcmp(got, a, 8192));
		em_region_close(rb[i]);
		em_region_close(ra[i]);
	}
	if (batched) {
		em_queue_destroy(qb);
		em_queue_destroy(qa);
	}
	em_pool_close(pb);
	em_pool_close(pa);
	stop_nodes(n, NODES);
	unsetenv("ETHERMEM_TIMEOUT_MS");
	free(a);
	free(b);
	free(got);
	printf("an open handle read the new bytes after the thaw%s\n",
	       batched ? ", in batches" : "");
}

#define AK 3    /* client processes */
#define AN 1500 /* increments each */

static void atomics(const char *red)
{
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o) };
	em_pool *pool;
	em_region *r;
	pid_t kids[AK];
	uint64_t v = 0;
	int status;

	start_nodes(n, NODES);
	pool = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_parse_redundancy(red, &o), 0);
	CHECK_RC(em_region_create(pool, "ctr", 4096, &o, &r), 0);
	for (int k = 0; k < AK; k++) {
		kids[k] = fork();
		CHECK(kids[k] >= 0);
		if (kids[k] == 0) {
			em_pool *p = t_connect_ok(n, NODES, sec);
			em_region *cr;
			uint64_t old;

			CHECK_RC(em_region_open(p, "ctr", &cr), 0);
			CHECK_RC(em_atomic(cr, 16, EM_ATOMIC_FADD, 1, 0, NULL), 0); /* ready */
			for (int i = 0; i < AN; i++) {
				CHECK_RC(em_atomic(cr, 0, EM_ATOMIC_FADD, 1, 0, &old), 0);
				/* a CAS loop on another word: the same count */
				for (;;) {
					CHECK_RC(em_atomic(cr, 8, EM_ATOMIC_CAS, 0, 0, &old), 0);
					uint64_t seen = old;
					CHECK_RC(em_atomic(cr, 8, EM_ATOMIC_CAS, seen + 1, seen,
							   &old),
						 0);
					if (old == seen)
						break;
				}
			}
			em_region_close(cr);
			em_pool_close(p);
			_exit(0);
		}
	}
	/* kill the primary copy while they count (once all of them are) */
	for (;;) {
		uint64_t ready = 0;
		t_sleep_ms(5);
		CHECK_RC(em_read(r, 0, &v, 8), 0);
		CHECK_RC(em_read(r, 16, &ready, 8), 0);
		if (ready == AK && v >= AK * 50)
			break;
	}
	t_node_stop(holder(n, r, 0), SIGKILL);
	for (int k = 0; k < AK; k++) {
		CHECK(waitpid(kids[k], &status, 0) == kids[k]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	CHECK_RC(em_read(r, 0, &v, 8), 0);
	if (v != AK * AN)
		fprintf(stderr, "%s: count %" PRIu64 ", want %d\n", red, v, AK * AN);
	CHECK(v == AK * AN);
	CHECK_RC(em_read(r, 8, &v, 8), 0);
	CHECK(v == AK * AN);
	/* every copy left holds the same count */
	for (unsigned s = 1; s < r->nseg; s++) {
		em_region one = *r;
		one.lost = ~0ull & ~(1ull << s);
		CHECK_RC(em_read(&one, 0, &v, 8), 0);
		CHECK(v == AK * AN);
	}
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, NODES);
}

/* Several writers, each owning every WK-th 512-byte piece of the same
 * stripes, write at once; then a data node dies and the lost cells are
 * rebuilt from parity: each writer's last bytes must come back. */
#define WK 3
#define WROUNDS 60
/* Writers in three processes, each its own pieces of the first `span` bytes
 * of an ec:4+2 region, `rounds` times: pieces at the same column of one
 * stripe share the parity, so without the stripe lock the last round's
 * bytes would not survive losing two data cells. `chunk` 0 takes the cell
 * the library picks for the size, which must be `cell`. */
static void ec_concurrent(uint64_t chunk, uint64_t size, uint64_t span, unsigned piece, int rounds,
			  uint64_t cell)
{
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o), .chunk_size = chunk };
	struct em_region_info info = { .size = sizeof(info) };
	uint8_t *want = malloc(span), *got = malloc(span);
	em_pool *pool;
	em_region *r;
	pid_t kids[WK];
	int status;

	start_nodes(n, NODES);
	pool = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_parse_redundancy("ec:4+2", &o), 0);
	CHECK_RC(em_region_create(pool, "stripes", size, &o, &r), 0);
	CHECK_RC(em_region_stat(r, &info), 0);
	CHECK(info.chunk_size == cell);
	/* when the region has room, the span after the contested one in one
	 * write: whole stripes, encoded from the caller's buffer */
	bool whole = 2 * span <= size;
	uint8_t *pat = malloc(span), *back = malloc(span);
	for (uint64_t i = 0; i < span; i++)
		pat[i] = (uint8_t)(i * 7 + i / 4093);
	if (whole)
		CHECK_RC(em_write(r, span, pat, span), 0);
	for (int k = 0; k < WK; k++) {
		kids[k] = fork();
		CHECK(kids[k] >= 0);
		if (kids[k] == 0) {
			em_pool *p = t_connect_ok(n, NODES, sec);
			uint8_t *mine = malloc(piece);
			em_region *cr;

			CHECK_RC(em_region_open(p, "stripes", &cr), 0);
			for (int round = 1; round <= rounds; round++)
				for (uint64_t off = (uint64_t)k * piece; off < span;
				     off += WK * piece) {
					memset(mine, (k << 6) | (round & 63), piece);
					CHECK_RC(em_write(cr, off, mine, piece), 0);
				}
			em_region_close(cr);
			em_pool_close(p);
			free(mine);
			_exit(0);
		}
	}
	for (int k = 0; k < WK; k++) {
		CHECK(waitpid(kids[k], &status, 0) == kids[k]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	for (uint64_t off = 0; off < span; off += piece) {
		int k = (int)((off / piece) % WK);
		memset(want + off, (k << 6) | (rounds & 63), piece);
	}
	for (int lost = 0; lost < 2; lost++) {
		if (lost) { /* two data cells of every stripe: read from parity */
			t_node_stop(holder(n, r, 1), SIGKILL);
			t_node_stop(holder(n, r, 2), SIGKILL);
		}
		memset(got, 0, span);
		CHECK_RC(em_read(r, 0, got, span), 0);
		CHECK(!memcmp(got, want, span));
		if (whole) {
			memset(back, 0, span);
			CHECK_RC(em_read(r, span, back, span), 0);
			CHECK(!memcmp(back, pat, span));
		}
	}
	free(pat);
	free(back);
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, NODES);
	free(want);
	free(got);
}

/* Repair: kill a holder, rebuild its part elsewhere, then kill other
 * original holders so that the rebuilt part is needed: every byte must
 * still be right. A second client opening afterwards gets the new layout. */
static void repair(const char *red, unsigned chunk)
{
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o), .chunk_size = chunk };
	uint8_t *ref = calloc(1, SIZE);
	uint64_t seed = 99;
	em_pool *pool, *p2;
	em_region *r, *r2;
	unsigned first;

	start_nodes(n, NODES);
	pool = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_parse_redundancy(red, &o), 0);
	CHECK_RC(em_region_create(pool, "fixme", SIZE, &o, &r), 0);
	rand_ops(r, ref, 100, &seed);
	CHECK_RC(em_region_repair(r), 0); /* nothing lost yet */
	first = r->node[0];
	t_node_stop(&n[first], SIGKILL);
	CHECK_RC(em_region_repair(r), 1);
	CHECK(r->node[0] != first && r->lost == 0 && r->epoch == 2);
	for (unsigned a = 0; a < r->nseg; a++)
		for (unsigned b = a + 1; b < r->nseg; b++)
			CHECK(r->node[a] != r->node[b]);
	rand_ops(r, ref, 100, &seed);
	check_all(r, ref);
	/* now the rebuilt part has to serve */
	for (unsigned s = 1; s <= (o.redundancy == EM_RED_REPLICATE ? o.red_k - 1u : o.red_m); s++)
		t_node_stop(holder(n, r, s), SIGKILL);
	rand_ops(r, ref, 100, &seed);
	check_all(r, ref);
	/* a client that connects with nodes down and opens it now finds the
	 * newest layout: the repair's, then the kills' that the writes
	 * recorded */
	p2 = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_region_open(p2, "fixme", &r2), 0);
	CHECK(r2->epoch == r->epoch && r->epoch > 2 && r2->node[0] == r->node[0]);
	check_all(r2, ref);
	em_region_close(r2);
	em_pool_close(p2);
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, NODES);
	free(ref);
}

/* A replicated region whose size is not a multiple of 8 (as `ethermem
 * import` of a file makes): its piece locks must still be words the nodes
 * take atomics on, so a repair (which locks every piece) rebuilds it, and
 * the rebuilt copy then serves alone. */
static void repair_odd(void)
{
	const uint64_t size = SIZE + 4;
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o) };
	uint8_t *ref = malloc(size), *back = malloc(size);
	uint64_t seed = 5;
	em_pool *pool;
	em_region *r;
	unsigned second;

	CHECK(ref && back);
	for (uint64_t i = 0; i < size; i++)
		ref[i] = (uint8_t)t_rand(&seed);
	start_nodes(n, NODES);
	pool = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_parse_redundancy("replicate:2", &o), 0);
	CHECK_RC(em_region_create(pool, "odd", size, &o, &r), 0);
	CHECK_RC(em_write(r, 0, ref, size), 0);
	second = r->node[1];
	t_node_stop(holder(n, r, 0), SIGKILL);
	CHECK_RC(em_region_repair(r), 1);
	CHECK(r->lost == 0 && r->epoch == 2);
	t_node_stop(&n[second], SIGKILL);
	CHECK_RC(em_read(r, 0, back, size), 0);
	CHECK(!memcmp(back, ref, size));
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, NODES);
	free(ref);
	free(back);
}

static uint64_t state_of(em_region *r)
{
	struct em_region_info ri = { .size = sizeof(ri) };

	CHECK_RC(em_region_stat(r, &ri), 0);
	return ri.state;
}

/* Adds to the counter word at the region's end, as the reference does. */
static void count_up(em_region *r, uint8_t *ref, int times)
{
	uint64_t v, old;

	for (int i = 0; i < times; i++) {
		memcpy(&v, ref + SIZE - 8, 8);
		CHECK_RC(em_atomic(r, SIZE - 8, EM_ATOMIC_FADD, 3, 0, &old), 0);
		CHECK(old == v);
		v += 3;
		memcpy(ref + SIZE - 8, &v, 8);
	}
}

static void background(const char *red, unsigned chunk)
{
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o), .chunk_size = chunk };
	uint8_t *ref = calloc(1, SIZE);
	uint64_t seed = 7, t0;
	bool rep = !strncmp(red, "replicate", 9), saw_repairing = false, saw_progress = false;
	uint64_t last_rebuilt = 0, want_ec;
	unsigned first;
	em_pool *pool;
	em_region *r;

	CHECK(ref);
	/* slow enough that the workload runs beside it for a while */
	setenv("ETHERMEM_AUTO_REPAIR", "yes", 1);
	setenv("ETHERMEM_REPAIR_RATE", "512K", 1);
	start_nodes(n, NODES);
	pool = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_parse_redundancy(red, &o), 0);
	CHECK_RC(em_region_create(pool, "bg", SIZE, &o, &r), 0);
	/* one chunk's cells of every stripe */
	want_ec = (SIZE + (uint64_t)o.red_k * chunk - 1) /
		  ((uint64_t)o.red_k * (chunk ? chunk : 1)) * chunk;
	rand_ops(r, ref, 100, &seed);
	if (rep)
		count_up(r, ref, 20);
	CHECK(state_of(r) == EM_STATE_HEALTHY);
	first = __atomic_load_n(&r->node[0], __ATOMIC_ACQUIRE);
	t_node_stop(&n[first], SIGKILL);
	/* the workload finds the node dead; repair starts on its own and the
	 * workload goes on beside it until the region is whole again */
	t0 = (em_now_ns() / 1000000);
	for (;;) {
		struct em_region_info ri = { .size = sizeof(ri) };
		unsigned st;

		rand_ops(r, ref, 5, &seed);
		if (rep)
			count_up(r, ref, 2);
		CHECK_RC(em_region_stat(r, &ri), 0);
		st = ri.state;
		saw_repairing |= st == EM_STATE_REPAIRING;
		/* progress: the lost part's bytes, counted up as rebuilt */
		if (ri.to_rebuild) {
			CHECK(st == EM_STATE_REPAIRING);
			CHECK(ri.to_rebuild == (rep ? SIZE : want_ec));
			CHECK(ri.rebuilt <= ri.to_rebuild && ri.rebuilt >= last_rebuilt);
			last_rebuilt = ri.rebuilt;
			saw_progress |= ri.rebuilt > 0 && ri.rebuilt < ri.to_rebuild;
		} else {
			CHECK(ri.rebuilt == 0);
		}
		if (st == EM_STATE_HEALTHY && __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE) == 0 &&
		    __atomic_load_n(&r->node[0], __ATOMIC_ACQUIRE) != first)
			break;
		if ((em_now_ns() / 1000000) - t0 > 60000) {
			fprintf(stderr, "%s: not repaired after 60 s (state %u)\n", red, st);
			exit(1);
		}
	}
	CHECK(saw_repairing);
	CHECK(saw_progress);
	CHECK(r->epoch == 2);
	check_all(r, ref);
	/* the rebuilt part has to serve once the other original holders die */
	for (unsigned s = 1; s <= (rep ? o.red_k - 1u : o.red_m); s++)
		t_node_stop(holder(n, r, s), SIGKILL);
	rand_ops(r, ref, 100, &seed);
	if (rep)
		count_up(r, ref, 20);
	check_all(r, ref);
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, NODES);
	setenv("ETHERMEM_AUTO_REPAIR", "no", 1);
	unsetenv("ETHERMEM_REPAIR_RATE");
	printf("%s: repaired in the background under a workload\n", red);
	free(ref);
}

/* The shared state of the cross-client test: the reference copy that the
 * writer process keeps up to date, and the flags between the two. */
struct xshare {
	volatile int ready, stop, done_ops, follow_ok;
	uint64_t count;
	uint8_t ref[SIZE];
};

/* The writer: the upper half of the region, random writes and (replicate)
 * a counter, until told to stop and for a while after. */
static void cross_writer(struct t_node *n, const char *name, struct xshare *sh, bool rep)
{
	em_pool *p = t_connect_ok(n, NODES, sec);
	em_region *r;
	uint64_t seed = 4242, after = 0;
	static uint8_t buf[65536];
	struct em_region_info ri = { .size = sizeof(ri) };

	CHECK_RC(em_region_open(p, name, &r), 0);
	sh->ready = 1;
	while (!sh->stop || after++ < 50) {
		uint64_t len = 1 + t_rand(&seed) % sizeof(buf);
		uint64_t off = SIZE / 2 + t_rand(&seed) % (SIZE / 2 - 8 - len);

		for (uint64_t k = 0; k < len; k++)
			buf[k] = (uint8_t)t_rand(&seed);
		CHECK_RC(em_write(r, off, buf, len), 0);
		memcpy(sh->ref + off, buf, len);
		if (rep) {
			uint64_t old;
			CHECK_RC(em_atomic(r, SIZE - 8, EM_ATOMIC_FADD, 1, 0, &old), 0);
			if (old != sh->count)
				fprintf(stderr, "count: old %" PRIu64 " want %" PRIu64 "\n", old,
					sh->count);
			CHECK(old == sh->count);
			sh->count++;
			memcpy(sh->ref + SIZE - 8, &sh->count, 8);
		}
		sh->done_ops++;
	}
	/* it followed the repair: the new layout, and nothing lost */
	CHECK_RC(em_region_stat(r, &ri), 0);
	sh->follow_ok = ri.epoch == 2 && ri.state == EM_STATE_HEALTHY;
	em_region_close(r);
	em_pool_close(p);
	_exit(0);
}

static void cross(const char *red, unsigned chunk)
{
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o), .chunk_size = chunk };
	struct xshare *sh =
		mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	bool rep = !strncmp(red, "replicate", 9), saw_repairing = false;
	uint64_t seed = 11, t0, ops0;
	unsigned first, orig[NODES];
	em_pool *pool, *p2;
	em_region *r, *r2;
	pid_t kid;
	int status;

	CHECK(sh != MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	setenv("ETHERMEM_REPAIR_RATE", "1M", 1);
	start_nodes(n, NODES);
	pool = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_parse_redundancy(red, &o), 0);
	CHECK_RC(em_region_create(pool, "cross", SIZE, &o, &r), 0);
	for (uint64_t k = 0; k < SIZE - 8; k++)
		sh->ref[k] = (uint8_t)t_rand(&seed);
	CHECK_RC(em_write(r, 0, sh->ref, SIZE), 0);
	for (unsigned s = 0; s < r->nseg; s++)
		orig[s] = r->node[s];
	fflush(stdout);
	kid = fork();
	CHECK(kid >= 0);
	if (kid == 0)
		cross_writer(n, "cross", sh, rep);
	while (!sh->ready || sh->done_ops < 20)
		t_sleep_ms(5);
	/* a holder dies; this process repairs, slowly, the writer writes on */
	first = orig[0];
	t_node_stop(&n[first], SIGKILL);
	CHECK_RC(em_region_repair_start(r), 0);
	t0 = em_now_ns() / 1000000;
	ops0 = 0;
	for (;;) {
		unsigned st = (unsigned)state_of(r);
		saw_repairing |= st == EM_STATE_REPAIRING;
		if (st == EM_STATE_REPAIRING && !ops0)
			ops0 = (uint64_t)sh->done_ops;
		if (st == EM_STATE_HEALTHY && __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE) == 0 &&
		    __atomic_load_n(&r->node[0], __ATOMIC_ACQUIRE) != first)
			break;
		if (em_now_ns() / 1000000 - t0 > 60000) {
			fprintf(stderr, "%s: not repaired after 60 s (state %u)\n", red, st);
			exit(1);
		}
		t_sleep_ms(5);
	}
	CHECK(saw_repairing);
	/* the writer went on while the part was being filled */
	fprintf(stderr, "%s: writer ops during repair: %d\n", red, sh->done_ops - (int)ops0);
	CHECK((uint64_t)sh->done_ops > ops0);
	sh->stop = 1;
	CHECK(waitpid(kid, &status, 0) == kid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(sh->follow_ok);
	/* the rebuilt part has to serve: every other original holder the
	 * redundancy allows dies (replicate: all of them) */
	for (unsigned s = 1; s <= (rep ? o.red_k - 1u : o.red_m); s++)
		t_node_stop(&n[orig[s]], SIGKILL);
	check_all(r, sh->ref);
	/* and a client that opens the name now reads the same */
	p2 = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_region_open(p2, "cross", &r2), 0);
	check_all(r2, sh->ref);
	em_region_close(r2);
	em_pool_close(p2);
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, NODES);
	unsetenv("ETHERMEM_REPAIR_RATE");
	munmap(sh, sizeof(*sh));
	printf("%s: another client's writes reached the rebuilt part\n", red);
}

/* Writes racing a repair's copy: several processes and a thread of the
 * repairing one write small random pieces all over a replicated region
 * while its lost copy is rebuilt at full speed, so that many land on the
 * piece being copied, on the copy the repair reads after it took the piece
 * and on the new part before the copy reached it. Each writer owns every
 * RACE_W-th block of RACE_BLOCK bytes, so the reference is exact. Then
 * every original holder dies and the rebuilt copy alone must hold every
 * byte written: a write that the copy undid is lost there. */
#define RACE_SIZE (4u << 20)
#define RACE_BLOCK 4096u
#define RACE_W 3u

struct rshare {
	int stop, ops[RACE_W]; /* atomic: a thread of this process reads them too */
	uint8_t ref[RACE_SIZE];
};

static void race_writes(em_region *r, struct rshare *sh, unsigned me, uint64_t seed)
{
	static __thread uint8_t buf[RACE_BLOCK];
	int after = 0;

	while (!__atomic_load_n(&sh->stop, __ATOMIC_ACQUIRE) || after++ < 20) {
		uint64_t nblk = RACE_SIZE / RACE_BLOCK / RACE_W;
		uint64_t blk = (t_rand(&seed) % nblk) * RACE_W + me;
		uint64_t len = 1 + t_rand(&seed) % (RACE_BLOCK / 2);
		uint64_t off = blk * RACE_BLOCK + t_rand(&seed) % (RACE_BLOCK - len + 1);

		for (uint64_t k = 0; k < len; k++)
			buf[k] = (uint8_t)t_rand(&seed);
		CHECK_RC(em_write(r, off, buf, len), 0);
		memcpy(sh->ref + off, buf, len);
		__atomic_fetch_add(&sh->ops[me], 1, __ATOMIC_RELEASE);
	}
}

struct rthread {
	em_region *r;
	struct rshare *sh;
};

static void *race_thread(void *arg)
{
	struct rthread *t = arg;

	race_writes(t->r, t->sh, 0, 31);
	return NULL;
}

static void race(const char *red)
{
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o) };
	struct rshare *sh =
		mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t seed = 17;
	unsigned orig[NODES];
	int during[RACE_W], status, raced = 0;
	struct rthread th;
	pthread_t tid;
	pid_t kid[RACE_W];
	em_pool *pool, *p2;
	em_region *r, *r2;

	CHECK(sh != MAP_FAILED);
	memset(sh, 0, sizeof(*sh));
	for (uint64_t k = 0; k < RACE_SIZE; k++)
		sh->ref[k] = (uint8_t)t_rand(&seed);
	start_nodes(n, NODES);
	pool = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_parse_redundancy(red, &o), 0);
	CHECK_RC(em_region_create(pool, "race", RACE_SIZE, &o, &r), 0);
	CHECK_RC(em_write(r, 0, sh->ref, RACE_SIZE), 0);
	for (unsigned s = 0; s < r->nseg; s++)
		orig[s] = r->node[s];
	fflush(stdout);
	for (unsigned w = 1; w < RACE_W; w++) {
		kid[w] = fork();
		CHECK(kid[w] >= 0);
		if (kid[w] == 0) {
			em_pool *p = t_connect_ok(n, NODES, sec);
			em_region *rr;
			CHECK_RC(em_region_open(p, "race", &rr), 0);
			race_writes(rr, sh, w, 1000 + w);
			em_region_close(rr);
			em_pool_close(p);
			_exit(t_fails ? 1 : 0);
		}
	}
	th = (struct rthread){ r, sh };
	CHECK(pthread_create(&tid, NULL, race_thread, &th) == 0);
	for (unsigned w = 0; w < RACE_W; w++)
		while (__atomic_load_n(&sh->ops[w], __ATOMIC_ACQUIRE) < 50)
			t_sleep_ms(2);
	t_node_stop(&n[orig[0]], SIGKILL);
	for (unsigned w = 0; w < RACE_W; w++)
		during[w] = __atomic_load_n(&sh->ops[w], __ATOMIC_ACQUIRE);
	/* at full speed: the copy moves from piece to piece under the writes */
	CHECK_RC(em_region_repair(r), 1);
	for (unsigned w = 0; w < RACE_W; w++) {
		int now = __atomic_load_n(&sh->ops[w], __ATOMIC_ACQUIRE);
		fprintf(stderr, "%s: writer %u wrote %d times during the repair\n", red, w,
			now - during[w]);
		raced += now - during[w];
	}
	CHECK(raced > 0); /* else the test proved nothing */
	__atomic_store_n(&sh->stop, 1, __ATOMIC_RELEASE);
	CHECK(pthread_join(tid, NULL) == 0);
	for (unsigned w = 1; w < RACE_W; w++) {
		CHECK(waitpid(kid[w], &status, 0) == kid[w]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	/* the rebuilt copy alone */
	for (unsigned s = 1; s < r->nseg; s++)
		t_node_stop(&n[orig[s]], SIGKILL);
	p2 = t_connect_ok(n, NODES, sec);
	CHECK_RC(em_region_open(p2, "race", &r2), 0);
	{
		uint8_t *all = malloc(RACE_SIZE);
		uint64_t bad = 0, first = 0;
		CHECK(all);
		CHECK_RC(em_read(r2, 0, all, RACE_SIZE), 0);
		for (uint64_t k = 0; k < RACE_SIZE; k++)
			if (all[k] != sh->ref[k] && !bad++)
				first = k;
		if (bad)
			fprintf(stderr,
				"%s: %" PRIu64
				" bytes lost from the rebuilt copy, first at %" PRIu64 "\n",
				red, bad, first);
		CHECK(!bad);
		free(all);
	}
	em_region_close(r2);
	em_pool_close(p2);
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, NODES);
	munmap(sh, sizeof(*sh));
	printf("%s: no write racing the repair's copy was lost\n", red);
}

static void bad_options(void)
{
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o) };
	em_pool *pool;
	em_region *r;

	CHECK_RC(em_parse_redundancy("replicate:1", &o), -EINVAL);
	CHECK_RC(em_parse_redundancy("replicate:2x", &o), -EINVAL);
	CHECK_RC(em_parse_redundancy("ec:4+0", &o), -EINVAL);
	CHECK_RC(em_parse_redundancy("ec:40+2", &o), -EINVAL);
	CHECK_RC(em_parse_redundancy("raid5", &o), -EINVAL);
	start_nodes(n, 3);
	pool = t_connect_ok(n, 3, sec);
	/* more copies than nodes */
	CHECK_RC(em_parse_redundancy("ec:4+2", &o), 0);
	CHECK_RC(em_region_create(pool, NULL, 65536, &o, &r), -ENOSPC);
	/* a redundancy the header does not know */
	o.redundancy = 9;
	CHECK_RC(em_region_create(pool, NULL, 65536, &o, &r), -EINVAL);
	o.redundancy = EM_RED_NONE;
	o.red_k = 2;
	CHECK_RC(em_region_create(pool, NULL, 65536, &o, &r), -EINVAL);
	/* EC regions refuse atomics */
	CHECK_RC(em_parse_redundancy("ec:2+1", &o), 0);
	CHECK_RC(em_region_create(pool, NULL, 65536, &o, &r), 0);
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_FADD, 1, 0, NULL), -EOPNOTSUPP);
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, 3);
}

/* A writer frozen while it holds a stripe's lock: another writer of the
 * same stripe waits out the lock's limit, takes it over and completes;
 * the frozen one then thaws and completes its write, whose parity it
 * encoded from the stripe's bytes before the other's. Then the other's
 * data cell is lost: rebuilt from parity, it must be what the other wrote.
 * (The frozen writer finds, giving its lock back, that it was taken over,
 * and writes its stripe again with parity from the bytes there now.) */
static void steal(void)
{
	struct t_node n[NODES];
	struct em_region_opts o = { .size = sizeof(o), .chunk_size = 4096 };
	volatile uint64_t *sh =
		mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint8_t x[2048], got[2048];
	em_pool *pool;
	em_region *r;
	int bad = 0;

	start_nodes(n, NODES);
	pool = t_connect_ok(n, NODES, sec);
	/* a short request timeout once connected (a loaded machine may take
	 * longer to connect): a lock is taken over after twice it */
	pool->timeout_ms = 300;
	CHECK_RC(em_parse_redundancy("ec:4+2", &o), 0);
	CHECK_RC(em_region_create(pool, "steal", 8 * 16384, &o, &r), 0);
	for (int round = 0; round < 8 && !bad; round++) {
		pid_t a;
		int st;
		uint64_t t0;

		sh[0] = 0;
		sh[1] = 0;
		a = fork();
		CHECK(a >= 0);
		if (a == 0) {
			em_pool *p = t_connect_ok(n, NODES, sec);
			uint8_t mine[2048];
			em_region *cr;

			p->timeout_ms = 300;
			CHECK_RC(em_region_open(p, "steal", &cr), 0);
			for (uint64_t i = 1; !sh[0]; i++) {
				memset(mine, (int)(i & 0xff), sizeof(mine));
				CHECK_RC(em_write(cr, (uint64_t)round * 16384, mine, sizeof(mine)),
					 0);
				sh[1] = i;
			}
			_exit(0);
		}
		while (sh[1] < 20)
			t_sleep_ms(1);
		kill(a, SIGSTOP);
		memset(x, 0x80 | round, sizeof(x));
		t0 = em_now_ns();
		CHECK_RC(em_write(r, (uint64_t)round * 16384 + 4096, x, sizeof(x)), 0);
		t0 = (em_now_ns() - t0) / 1000000;
		kill(a, SIGCONT);
		sh[0] = 1;
		CHECK(waitpid(a, &st, 0) == a && WIFEXITED(st) && WEXITSTATUS(st) == 0);
		/* the cell written (data cell 1 of stripe `round`) read from it,
		 * then from parity (with what this handle found lost, should
		 * a loaded machine have timed a node out) */
		CHECK_RC(em_read(r, (uint64_t)round * 16384 + 4096, got, sizeof(got)), 0);
		CHECK(!memcmp(got, x, sizeof(x)));
		em_region one = *r;
		one.lost = __atomic_load_n(&r->lost, __ATOMIC_ACQUIRE) | 1ull << 1;
		if (__builtin_popcountll(one.lost) > 2)
			continue;
		CHECK_RC(em_read(&one, (uint64_t)round * 16384 + 4096, got, sizeof(got)), 0);
		fprintf(stderr, "round %d: the write took %llu ms; rebuilt cell %s\n", round,
			(unsigned long long)t0, memcmp(got, x, sizeof(x)) ? "WRONG" : "right");
		bad |= memcmp(got, x, sizeof(x)) != 0;
	}
	em_region_close(r);
	em_pool_close(pool);
	stop_nodes(n, NODES);
	CHECK(!bad);
}

/* Witnesses on a static list of three nodes (replicate:2: two copies and
 * the third node as witness). Copy A's node freezes, a write goes to copy B
 * only and records A's loss, B's node is killed and A's thaws: A's bytes
 * are old, and the record that says so lives on B and the witness. A handle
 * opened before and a fresh client must both get an error naming the loss,
 * never A's old bytes, never zeros. Then with no second failure (A frozen
 * and thawed, B alive) both read the new bytes; and the witness's node
 * dying alone changes nothing for a workload. kind: 0 the case above, 3
 * the same with a write from the open handle first, 1 no second failure,
 * 2 the witness alone dies. */
static void witness_case(int kind)
{
	struct t_node n[3];
	struct em_region_opts o = { .size = sizeof(o) };
	uint8_t *a = malloc(SIZE), *b = malloc(SIZE), *got = malloc(SIZE), *ref = malloc(SIZE);
	uint64_t seed = 77;
	em_pool *pa, *pb, *pc;
	em_region *ra, *rb, *rc = NULL;
	struct t_node *na, *nb;
	int e;

	CHECK(a && b && got && ref);
	for (unsigned k = 0; k < SIZE; k++) {
		a[k] = (uint8_t)t_rand(&seed);
		b[k] = (uint8_t)t_rand(&seed);
		ref[k] = (uint8_t)t_rand(&seed);
	}
	setenv("ETHERMEM_TIMEOUT_MS", "1000", 1);
	start_nodes(n, 3);
	pa = t_connect_ok(n, 3, sec);
	pb = t_connect_ok(n, 3, sec);
	CHECK_RC(em_parse_redundancy("replicate:2", &o), 0);
	CHECK_RC(em_region_create(pa, "wit", SIZE, &o, &ra), 0);
	CHECK_RC(em_write(ra, 0, a, SIZE), 0);
	CHECK_RC(em_region_open(pb, "wit", &rb), 0);
	CHECK_RC(em_read(rb, 0, got, SIZE), 0);
	CHECK(!memcmp(got, a, SIZE));
	na = holder(n, rb, 0); /* what the open handle reads first */
	nb = holder(n, rb, 1);
	if (kind == 2) {
		/* the node that holds no copy: the witness alone dies */
		struct t_node *w = &n[3 - (unsigned)(na - n) - (unsigned)(nb - n)];
		memcpy(ref, a, SIZE);
		t_node_stop(w, SIGKILL);
		rand_ops(ra, ref, 200, &seed);
		rand_ops(rb, ref, 200, &seed);
		check_all(rb, ref);
		pc = t_connect_ok(n, 3, sec);
		CHECK_RC(em_region_open(pc, "wit", &rc), 0);
		check_all(rc, ref);
		rand_ops(rc, ref, 100, &seed);
		check_all(ra, ref);
		printf("the witness's node died alone: the workload went on\n");
		goto out;
	}
	/* the first write finds A gone (A may still apply it once thawed: it
	 * was sent before), the second goes to B only */
	t_freeze(na->pid);
	CHECK_RC(em_write(ra, 0, ref, SIZE), 0);
	CHECK_RC(em_write(ra, 0, b, SIZE), 0);
	if (kind != 1)
		t_node_stop(nb, SIGKILL);
	kill(na->pid, SIGCONT);
	if (kind == 3) {
		/* a write first: it would go to A alone and make A's old bytes
		 * current; it must fail, and so must the read after it */
		e = em_write(rb, 4096, a, 4096);
		if (e != -EM_ELOST) {
			fprintf(stderr, "a write to the thawed copy alone returned %d\n", e);
			exit(1);
		}
	}
	memset(got, 0, SIZE);
	e = em_read(rb, 0, got, SIZE);
	if (kind == 1) {
		CHECK_RC(e, 0);
		CHECK(!memcmp(got, b, SIZE));
	} else if (!e) {
		fprintf(stderr, "an open handle read %s after the thaw instead of an error\n",
			!memcmp(got, a, SIZE) || !memcmp(got, ref, SIZE)
				? "the thawed copy's old bytes"
				: "wrong bytes");
		exit(1);
	} else {
		CHECK(e == -EM_ELOST);
	}
	pc = t_connect_ok(n, 3, sec);
	e = em_region_open(pc, "wit", &rc);
	if (kind == 1) {
		CHECK_RC(e, 0);
		CHECK_RC(em_read(rc, 0, got, SIZE), 0);
		CHECK(!memcmp(got, b, SIZE));
		/* the witnesses' records of A's loss are no regions */
		struct em_region_info li[4] = { [0] = { .size = sizeof(li[0]) } };
		CHECK_RC(em_region_list(pc, li, 4), 1);
		CHECK(!strcmp(li[0].name, "wit"));
		printf("one copy frozen and thawed: the new bytes, no error\n");
		goto out;
	}
	if (!e) {
		memset(got, 0, SIZE);
		e = em_read(rc, 0, got, SIZE);
		if (!e) {
			fprintf(stderr,
				"a fresh client read %s after the thaw instead of an error\n",
				!memcmp(got, a, SIZE) || !memcmp(got, ref, SIZE)
					? "the thawed copy's old bytes"
					: "wrong bytes");
			exit(1);
		}
		em_region_close(rc);
	}
	CHECK(e == -EM_ELOST);
	rc = NULL;
	printf("copy frozen, the other killed, the first thawed: -EM_ELOST, never old bytes\n");
out:
	if (rc)
		em_region_close(rc);
	em_region_close(rb);
	em_region_close(ra);
	em_pool_close(pc);
	em_pool_close(pb);
	em_pool_close(pa);
	stop_nodes(n, 3);
	unsetenv("ETHERMEM_TIMEOUT_MS");
	free(a);
	free(b);
	free(got);
	free(ref);
}

int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : ""; /* a part's name runs only it */

	atexit(t_cleanup);
	signal(SIGPIPE, SIG_IGN);
	/* the parts below watch a region stay degraded, or repair it by hand */
	setenv("ETHERMEM_AUTO_REPAIR", "no", 1);
	sec = t_secret("secret", T_SECRET);
	if (!*only || !strcmp(only, "bad"))
		bad_options();
	if (!*only || !strcmp(only, "workload")) {
		workload("replicate:2", 1, 0);
		workload("replicate:3", 2, 0);
		workload("ec:4+2", 2, 4096);
	}
	if (!*only || !strcmp(only, "batch")) {
		batch("replicate:2", 0);
		batch("replicate:3", 0);
		batch("ec:4+2", 4096);
	}
	if (!*only || !strcmp(only, "freeze")) {
		freeze("replicate:2");
		freeze("ec:4+2");
	}
	if (!*only || !strcmp(only, "thaw"))
		thaw(false);
	if (!*only || !strcmp(only, "witness")) {
		witness_case(0);
		witness_case(3);
		witness_case(1);
		witness_case(2);
	}
	if (!*only || !strcmp(only, "steal"))
		steal();
	if (!*only || !strcmp(only, "thaw_batch"))
		thaw(true);
	if (!*only || !strcmp(only, "atomics")) {
		atomics("replicate:2");
		atomics("replicate:3");
	}
	if (!*only || !strcmp(only, "stripes")) /* four stripes of 4 KiB cells */
		ec_concurrent(4096, 4 * 4096 * 4, 4 * 4096 * 4, 512, WROUNDS, 4096);
	if (!*only || !strcmp(only, "bigcell")) {
		/* the cell picked by size: 64 KiB for a small region, 512 KiB
		 * (a 2 MiB stripe) for one of 16 such stripes; two stripes
		 * contested by 64 KiB pieces, two more written whole */
		ec_concurrent(0, 1u << 20, 1u << 20, 4096, 2, 64u << 10);
		ec_concurrent(0, 32u << 20, 4u << 20, 64u << 10, 4, 512u << 10);
	}
	if (!*only || !strcmp(only, "background")) {
		background("replicate:2", 0);
		background("replicate:3", 0);
		background("ec:4+2", 4096);
	}
	if (!*only || !strcmp(only, "cross")) {
		cross("replicate:2", 0);
		cross("replicate:3", 0);
		cross("ec:4+2", 4096);
	}
	if (!*only || !strcmp(only, "repair")) {
		repair("replicate:2", 0);
		repair("replicate:3", 0);
		repair("ec:4+2", 4096);
	}
	if (!*only || !strcmp(only, "odd"))
		repair_odd();
	if (!*only || !strcmp(only, "race")) {
		race("replicate:2");
		race("replicate:3");
	}
	return 0;
}
