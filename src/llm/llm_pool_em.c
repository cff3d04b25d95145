/*
 * The pool backend of the inference engine: the checkpoint's bytes live in a
 * named pool region, at the same offsets as in the file, and the engine
 * reaches them either through a transparent mapping (em_map, --weights
 * pool) or through explicit asynchronous reads (em_submit/em_wait,
 * --weights stream --stream-from pool).
 *
 * Which region.  llm.h's seam hands us only the model path, and the runner's
 * flags belong to the engine, so the region is named by the environment like
 * every other pool setting: ETHERMEM_LLM_REGION if set, else "llm-" followed
 * by the file's base name (characters the pool refuses in names become '_',
 * truncated to EM_NAME_MAX).  `ethermem import MODEL llm-$(basename MODEL)`
 * puts a checkpoint there.  When the file also exists locally its size and
 * its first and last 4 KiB are compared with the region's, so a stale region
 * left from another checkpoint of the same shape is refused (-ESTALE) rather
 * than silently producing other token ids.  The file need not exist: a
 * compute server without the checkpoint on disk is the point of the pool.
 *
 * Local budget of the mapping: --local-mem, else ETHERMEM_MAP_CACHE (read by
 * the library, as for every em_map user), else the whole region, which is
 * what "all local" means for the other backends.  The fetch unit is ETHERMEM_LLM_MAP_UNIT,
 * else 1 MiB: a forward pass reads every weight front to back, so large
 * units cut the number of faults while the stream prefetcher keeps the wire
 * busy; the engine's scan-resistant eviction then keeps a fixed share of the
 * model resident and fetches only the rest each token.
 *
 * The fetcher uses ETHERMEM_LLM_QUEUES em_queues (default 1; more move large
 * reads over several connections at once), all driven by the streaming source's
 * one thread; the library splits reads at its own limits and stripes.
 * Completions that arrive for other tags than the one being waited for are
 * parked in a small table until their wait.
 *
 * The KV cache's pool blocks use the same queue machinery on an anonymous
 * region, and the prefix store is libemkv (kvstore.h) on the same pool.
 */
#include "llm/llm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/util.h"
#include "ethermem.h"
#include "llm/kvstore.h"

/* Requests in flight at most: two staging buffers of up to LLM_UNIT_RANGES
 * ranges plus one layer's top-k expert misses, with room to spare. */
#define LLM_PQ_DEPTH 64
#define LLM_PQ_TABLE 512
#define LLM_PEEK 4096

static void llm_region_name(const char *model, char *out, size_t outlen)
{
	const char *e = NULL, *b;
	size_t n;

	/* a string: nothing in it can be refused */
	em_cfg_env_str(EM_CFG_LLM_REGION, &e);
	if (e) {
		snprintf(out, outlen, "%s", e);
		return;
	}
	b = strrchr(model, '/');
	b = b ? b + 1 : model;
	n = (size_t)snprintf(out, outlen, "llm-%s", b);
	if (n >= outlen)
		n = outlen - 1;
	for (size_t i = 0; i < n; i++)
		if (out[i] < 0x21 || out[i] > 0x7e || out[i] == '/')
			out[i] = '_';
}

static int llm_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n = pread(fd, buf, len, (off_t)off);

	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

/* The region must be the file's bytes when the file is here to compare. */
static int llm_region_check(em_region *r, const char *model, const char *name)
{
	unsigned char a[LLM_PEEK], b[LLM_PEEK];
	uint64_t size = em_region_size(r), offs[2];
	struct stat sb;
	size_t n;
	int fd, rc = 0;

	fd = open(model, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
		close(fd);
		return 0;
	}
	if ((uint64_t)sb.st_size != size) {
		fprintf(stderr,
			"ethermem-llm: region %s holds %llu bytes but %s has %llu: "
			"re-import it (ethermem import %s %s)\n",
			name, (unsigned long long)size, model, (unsigned long long)sb.st_size,
			model, name);
		close(fd);
		return -ESTALE;
	}
	n = size < LLM_PEEK ? (size_t)size : LLM_PEEK;
	offs[0] = 0;
	offs[1] = size - n;
	for (int i = 0; i < 2 && !rc; i++) {
		rc = llm_pread_full(fd, a, n, offs[i]);
		if (!rc)
			rc = em_read(r, offs[i], b, n);
		if (!rc && memcmp(a, b, n)) {
			fprintf(stderr,
				"ethermem-llm: region %s differs from %s: "
				"re-import it (ethermem import %s %s)\n",
				name, model, model, name);
			rc = -ESTALE;
		}
	}
	close(fd);
	return rc;
}

static int llm_pool_open(const char *model, em_pool **pool, em_region **r)
{
	char name[EM_NAME_MAX + 1];
	int rc;

	llm_region_name(model, name, sizeof(name));
	rc = em_pool_connect(pool, NULL);
	if (rc) {
		fprintf(stderr,
			"ethermem-llm: cannot connect to the pool (ETHERMEM_NODES, "
			"ETHERMEM_SECRET_FILE): %s\n",
			em_strerror(rc));
		return rc;
	}
	rc = em_region_open(*pool, name, r);
	if (rc) {
		fprintf(stderr, "ethermem-llm: region %s: %s%s%s%s\n", name, em_strerror(rc),
			rc == -ENOENT ? " (load the checkpoint with: ethermem import " : "",
			rc == -ENOENT ? model : "",
			rc == -ENOENT ? " <region>, and name it "
					"in ETHERMEM_LLM_REGION or call it llm-<file name>)"
				      : "");
		em_pool_close(*pool);
		return rc;
	}
	rc = llm_region_check(*r, model, name);
	if (rc) {
		em_region_close(*r);
		em_pool_close(*pool);
	}
	return rc;
}

/* ---- explicit streaming: the fetcher ----------------------------------- */

/*
 * Several queues, because a queue is one TCP connection per node and the
 * node serves each connection on its own thread: a request of at least
 * LLM_PQ_SPLIT per queue is cut into one contiguous piece per queue, so the
 * pieces travel in parallel.  One thread can still collect them all: while
 * it sleeps on one connection the kernel keeps filling the others' socket
 * buffers.  Small requests (embedding rows, headers) go whole, round-robin.
 */
#define LLM_PQ_MAXQ 4
#define LLM_PQ_SPLIT (1u << 20)

enum { LLM_PQ_FREE, LLM_PQ_INFLIGHT, LLM_PQ_DONE };

struct llm_pq_ent {
	uint64_t tag;
	int state, rc;
	int pend[LLM_PQ_MAXQ]; /* pieces outstanding, per queue */
};

struct llm_pfetch {
	em_pool *pool;
	em_region *r;
	em_queue *q[LLM_PQ_MAXQ];
	int nq, rr;
	uint64_t size;
	struct em_spin spin;
	struct llm_pq_ent ent[LLM_PQ_TABLE];
};

/* A reply over loopback or a LAN comes in tens of microseconds, about what
 * sleeping in recv() and being woken costs: poll ETHERMEM_LLM_SPIN_US
 * before blocking, unless ETHERMEM_LLM_SPIN is off. */
static int llm_spin_init(struct em_spin *s)
{
	int64_t on, us;
	int rc;

	if ((rc = em_cfg_env_num(EM_CFG_LLM_SPIN, &on)) ||
	    (rc = em_cfg_env_num(EM_CFG_LLM_SPIN_US, &us)))
		return rc;
	s->budget_ns = on ? (uint64_t)us * 1000 : 0;
	return 0;
}

/* Reaps at least one completion of queue qi (polling briefly first) into
 * the table; 0, or -errno when the queue fails or nothing came within the
 * pool's request timeout. */
static int llm_pf_reap(struct llm_pfetch *f, int qi)
{
	struct em_completion c[LLM_PQ_DEPTH];
	em_queue *q = f->q[qi];
	int n = em_poll(q, c, LLM_PQ_DEPTH);

	/* no em_spin_end: every wait may spin, as weights are asked for
	 * just before they are waited for */
	if (n == 0 && em_spin_begin(&f->spin, em_now_ns())) {
		do
			n = em_poll(q, c, LLM_PQ_DEPTH);
		while (n == 0 && em_spin_again(&f->spin, em_now_ns()));
	}
	if (n == 0)
		n = em_wait(q, c, 1, LLM_PQ_DEPTH, -1);
	if (n < 0)
		return n;
	if (n == 0)
		return -ETIMEDOUT;
	for (int i = 0; i < n; i++) {
		struct llm_pq_ent *e = &f->ent[c[i].user_data % LLM_PQ_TABLE];

		if (c[i].result && !e->rc)
			e->rc = c[i].result;
		if (--e->pend[qi] == 0) {
			int left = 0;

			for (int j = 0; j < f->nq; j++)
				left += e->pend[j];
			if (!left)
				e->state = LLM_PQ_DONE;
		}
	}
	return 0;
}

/* Until every piece of e has completed; 0 or the first reaping error. */
static int llm_pf_settle(struct llm_pfetch *f, struct llm_pq_ent *e)
{
	for (int qi = 0; qi < f->nq; qi++)
		while (e->pend[qi] > 0) {
			int rc = llm_pf_reap(f, qi);

			if (rc)
				return rc;
		}
	return 0;
}

static int llm_pf_submit_op(struct llm_pfetch *f, uint8_t opcode, uint64_t off, void *dst,
			    size_t len, uint64_t tag)
{
	struct llm_pq_ent *e = NULL;
	int rc = 0, parts, first;
	size_t at = 0;

	if (off > f->size || len > f->size - off)
		return -ERANGE;
	for (int i = 0; i < LLM_PQ_TABLE; i++) {
		if (f->ent[i].state == LLM_PQ_FREE) {
			if (!e)
				e = &f->ent[i];
		} else if (f->ent[i].tag == tag) {
			return -EEXIST;
		}
	}
	if (!e)
		return -EBUSY;
	*e = (struct llm_pq_ent){ .tag = tag, .state = LLM_PQ_INFLIGHT };
	parts = len >= (size_t)f->nq * LLM_PQ_SPLIT ? f->nq : 1;
	first = parts == 1 ? f->rr++ % f->nq : 0;
	for (int p = 0; p < parts && !rc; p++) {
		/* Page-aligned cuts, so that pieces land on whole pages. */
		size_t piece = p == parts - 1 ? len - at : (len / (size_t)parts) & ~(size_t)4095;
		int qi = (first + p) % f->nq;
		struct em_op op = { .opcode = opcode,
				    .region = f->r,
				    .offset = off + at,
				    .buf = (char *)dst + at,
				    .len = piece,
				    .user_data = (uint64_t)(e - f->ent) };

		/* A full queue is no error: finish something, park it, post again. */
		while ((rc = em_submit(f->q[qi], &op, 1)) == -EAGAIN) {
			rc = llm_pf_reap(f, qi);
			if (rc)
				break;
		}
		if (rc == 1) {
			rc = 0;
			e->pend[qi]++;
			at += piece;
		}
	}
	if (rc) {
		/* The caller may reuse dst once we fail: what did go out lands
		 * first.  If even that fails, the queues are broken and close()
		 * tears them down before any buffer is freed. */
		llm_pf_settle(f, e);
		e->state = LLM_PQ_FREE;
		return rc < 0 ? rc : -EIO;
	}
	return 0;
}

static int llm_pf_submit(void *ctx, uint64_t off, void *dst, size_t len, uint64_t tag)
{
	return llm_pf_submit_op(ctx, EM_OP_READ, off, dst, len, tag);
}

static int llm_pf_wait(void *ctx, uint64_t tag)
{
	struct llm_pfetch *f = ctx;
	struct llm_pq_ent *e = NULL;
	int rc;

	for (int i = 0; i < LLM_PQ_TABLE && !e; i++)
		if (f->ent[i].state != LLM_PQ_FREE && f->ent[i].tag == tag)
			e = &f->ent[i];
	if (!e)
		return -ENOENT;
	rc = llm_pf_settle(f, e);
	if (rc)
		return rc; /* still in flight: close() drains or tears down */
	rc = e->rc;
	e->state = LLM_PQ_FREE;
	return rc;
}

static void llm_pf_close(void *ctx)
{
	struct llm_pfetch *f = ctx;

	/* The caller frees the destination buffers next: nothing may land in
	 * them afterwards.  Drain what is in flight; if the pool stops
	 * answering, destroying the queue closes its connections, which
	 * abandons the rest just as safely. */
	for (int qi = 0; qi < f->nq; qi++) {
		while (em_queue_inflight(f->q[qi]) && llm_pf_reap(f, qi) == 0)
			;
		em_queue_destroy(f->q[qi]);
	}
	em_region_close(f->r);
	em_pool_close(f->pool);
	free(f);
}

static const struct llm_fetcher_ops llm_pf_ops = {
	.submit = llm_pf_submit,
	.wait = llm_pf_wait,
	.close = llm_pf_close,
};

static int llm_em_open_fetcher(const char *model, struct llm_fetcher *out)
{
	struct llm_pfetch *f = calloc(1, sizeof(*f));
	int64_t nq;
	int rc = 0;

	if (!f)
		return -ENOMEM;
	if ((rc = llm_spin_init(&f->spin)) || (rc = em_cfg_env_num(EM_CFG_LLM_QUEUES, &nq))) {
		free(f);
		return rc;
	}
	/* One connection by default: on the 2-core machines this was measured
	 * on, under load, 2 and 4 made no difference within the noise (20:33
	 * UTC, dense 1G at 50%: 2.4-2.8 tok/s either way); more nodes already
	 * read in parallel through one queue. */
	_Static_assert(LLM_PQ_MAXQ == 4, "ETHERMEM_LLM_QUEUES's range in the table");
	f->nq = (int)nq;
	rc = llm_pool_open(model, &f->pool, &f->r);
	if (rc) {
		free(f);
		return rc;
	}
	for (int i = 0; i < f->nq && !rc; i++) {
		rc = em_queue_create(f->pool, LLM_PQ_DEPTH, &f->q[i]);
		if (rc) {
			fprintf(stderr, "ethermem-llm: em_queue_create: %s\n", em_strerror(rc));
			for (int j = 0; j < i; j++)
				em_queue_destroy(f->q[j]);
		}
	}
	if (rc) {
		em_region_close(f->r);
		em_pool_close(f->pool);
		free(f);
		return rc;
	}
	f->size = em_region_size(f->r);
	out->ops = &llm_pf_ops;
	out->ctx = f;
	out->size = f->size;
	return 0;
}

/* ---- the KV cache's pool blocks ----------------------------------------- */

/*
 * An anonymous region of the size the engine asks, freed with the
 * connection when the engine closes it: KV blocks are private to one
 * sequence.  The same queue machinery as the fetcher, reads and writes.
 */
static int llm_kv_submit(void *ctx, int write, uint64_t off, void *buf, size_t len, uint64_t tag)
{
	return llm_pf_submit_op(ctx, write ? EM_OP_WRITE : EM_OP_READ, off, buf, len, tag);
}

static const struct llm_kvio_ops llm_kv_ops = {
	.submit = llm_kv_submit,
	.wait = llm_pf_wait,
	.close = llm_pf_close,
};

static int llm_em_open_kv(uint64_t bytes, struct llm_kvio *out)
{
	struct llm_pfetch *f = calloc(1, sizeof(*f));
	int rc;

	if (!f)
		return -ENOMEM;
	if ((rc = llm_spin_init(&f->spin))) {
		free(f);
		return rc;
	}
	f->nq = 1;
	rc = em_pool_connect(&f->pool, NULL);
	if (rc) {
		fprintf(stderr,
			"ethermem-llm: cannot connect to the pool for the KV cache "
			"(ETHERMEM_NODES, ETHERMEM_SECRET_FILE): %s\n",
			em_strerror(rc));
		free(f);
		return rc;
	}
	rc = em_region_create(f->pool, NULL, bytes, NULL, &f->r);
	if (!rc) {
		rc = em_queue_create(f->pool, LLM_PQ_DEPTH, &f->q[0]);
		if (rc)
			em_region_close(f->r);
	}
	if (rc) {
		fprintf(stderr, "ethermem-llm: a %llu-byte KV region in the pool: %s\n",
			(unsigned long long)bytes, em_strerror(rc));
		em_pool_close(f->pool);
		free(f);
		return rc;
	}
	f->size = bytes;
	out->ops = &llm_kv_ops;
	out->ctx = f;
	return 0;
}

/* ---- the prefix store (kvstore.h) --------------------------------------- */

static int llm_em_store_connect(void **conn)
{
	em_pool *p;
	int rc = em_pool_connect(&p, NULL);

	if (rc)
		return rc;
	*conn = p;
	return 0;
}

static int llm_em_store_open(void *conn, const char *name, uint64_t capacity, uint32_t value_max,
			     void **store)
{
	struct em_kv_opts o = {
		.size = sizeof(o), .capacity = capacity, .value_max = value_max, .create = 1
	};
	em_kv *kv;
	int rc = em_kv_open(conn, name, &o, &kv);

	if (rc)
		return rc;
	if (em_kv_value_max(kv) < value_max) {
		em_kv_close(kv);
		return -EMSGSIZE; /* made by another model's geometry */
	}
	*store = kv;
	return 0;
}

static int llm_em_store_get(void *store, unsigned n, const uint64_t (*keys)[2], void *const *bufs,
			    size_t cap, int *res)
{
	return em_kv_get_batch(store, n, (const struct em_kv_key *)keys, bufs, cap, res);
}

static int llm_em_store_put(void *store, const uint64_t *key, const void *buf, size_t len)
{
	return em_kv_put(store, (const struct em_kv_key *)key, buf, len);
}

static void llm_em_store_close(void *store, void *conn)
{
	em_kv_close(store);
	em_pool_close(conn);
}

/* ---- transparent mapping ----------------------------------------------- */

struct llm_pmap {
	em_pool *pool;
	em_region *r;
	void *addr;
};

static void llm_em_unmap(void *cookie)
{
	struct llm_pmap *m = cookie;
	int rc;

	if (!m)
		return;
	rc = em_unmap(m->addr);
	if (rc)
		fprintf(stderr, "ethermem-llm: em_unmap: %s\n", em_strerror(rc));
	em_region_close(m->r);
	em_pool_close(m->pool);
	free(m);
}

static int llm_em_map(const char *model, uint64_t local_mem, void **base, size_t *len,
		      void **cookie)
{
	struct llm_pmap *m = calloc(1, sizeof(*m));
	struct em_map_opts mo = { .size = sizeof(mo), .flags = EM_MAP_READONLY };
	int64_t unit;
	uint64_t size;
	int rc;

	if (!m)
		return -ENOMEM;
	rc = llm_pool_open(model, &m->pool, &m->r);
	if (rc) {
		free(m);
		return rc;
	}
	size = em_region_size(m->r);
	if ((rc = em_cfg_env_num(EM_CFG_LLM_MAP_UNIT, &unit)))
		goto fail;
	mo.fetch_unit = (uint64_t)unit;
	/* No budget given means no limit, as for the other backends: the whole
	 * model, rounded up to whole fetch units. */
	if (local_mem) {
		rc = em_map_cache_size((local_mem + mo.fetch_unit - 1) / mo.fetch_unit *
				       mo.fetch_unit);
		if (rc)
			goto fail;
	} else if (!em_cfg_env_isset(EM_CFG_MAP_CACHE)) {
		rc = em_map_cache_size((size + mo.fetch_unit - 1) / mo.fetch_unit * mo.fetch_unit);
		if (rc)
			goto fail;
	}
	rc = em_map(m->r, &mo, &m->addr);
	if (rc) {
		fprintf(stderr, "ethermem-llm: em_map of the model's region: %s%s\n",
			em_strerror(rc),
			rc == -EINVAL ? " (cache budget below the fetch unit?)" : "");
		goto fail;
	}
	*base = m->addr;
	*len = (size_t)size;
	*cookie = m;
	return 0;
fail:
	em_region_close(m->r);
	em_pool_close(m->pool);
	free(m);
	return rc;
}

static int llm_em_stats(void *cookie, uint64_t *bytes, uint64_t *faults)
{
	struct llm_pmap *m = cookie;
	struct em_map_stats st = { .size = sizeof(st) };
	int rc = em_map_stats(m ? m->addr : NULL, &st);

	if (rc)
		return rc;
	*bytes = st.bytes_fetched;
	*faults = st.faults;
	return 0;
}

static const struct llm_pool_ops llm_em_ops = {
	.name = "ethermem (em_map and em_submit/em_wait on a named region)",
	.map = llm_em_map,
	.unmap = llm_em_unmap,
	.open_fetcher = llm_em_open_fetcher,
	.stats = llm_em_stats,
	.open_kv = llm_em_open_kv,
	.store_connect = llm_em_store_connect,
	.store_open = llm_em_store_open,
	.store_get = llm_em_store_get,
	.store_put = llm_em_store_put,
	.store_close = llm_em_store_close,
};

const struct llm_pool_ops *const llm_pool_backend = &llm_em_ops;
