/*
 * The forward pass of a Llama-2-architecture transformer, dense or
 * mixture-of-experts, over any weight source; plus the router override and
 * token sampling.
 *
 * One token at a time (decode): RMSNorm, grouped-query attention with RoPE
 * over a KV cache, then a SwiGLU feed-forward block, dense or as top-k of E
 * experts with the softmax taken over the k selected router logits
 * (Mixtral).  Int8 checkpoints quantize each activation in groups before
 * its matmul, as llama2.c's runq does.  Weights are requested from the
 * source part by part, in the order they are used, which is the order the
 * streaming source prefetches in.
 *
 * The KV cache is paged: blocks of LLM_KV_BLOCK positions per layer, the
 * keys of a block followed by its values.  Blocks below a local budget live
 * in local memory; the rest live in a pool region behind a struct llm_kvio
 * and are streamed through a small ring of half-block buffers in exactly the
 * order attention reads them (every layer: all key halves, then all value
 * halves), reads submitted ahead so they land while earlier blocks compute.
 * The block being filled stays local (one per layer) and is written out when
 * it is full.  Attention runs block by block with the same per-element
 * arithmetic in the same order as over one flat array, so the ids do not
 * depend on where the blocks live.
 *
 * Benchmarks need realistic expert traffic, which random router weights do
 * not give, so the expert ids can be replaced by a seeded sequence (uniform,
 * or Zipf-skewed with temporal reuse).  The sequence depends only on the seed,
 * the token count and the layer, never on the backend, so every backend
 * computes on the same experts and produces the same ids.
 */
#include "llm/llm.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Probability that a layer reuses the previous token's experts under Zipf
 * routing: decoding is strongly temporally local in measured MoE traces. */
#define LLM_ZIPF_REUSE 0.6

struct llm_kv {
	int ready, B, nblk, jl, cur;
	size_t half, blk; /* floats in half a block, in a block */
	float *local;     /* block (l, j < jl) at (l * jl + j) * blk */
	float *tail;      /* the block being filled, one per layer */
	int tail_j;
	float *ring; /* LLM_KV_RING slots of chunk half blocks */
	int chunk;   /* half blocks per stream item */
	uint64_t ring_tag[LLM_KV_RING];
	struct llm_kvio io;
	int have_io;
	uint64_t tag;
	long s_total, s_sub, s_con; /* stream items: total, submitted, consumed */
	uint64_t *wtag;             /* per layer and half: a write, 0 if none */
	struct llm_kv_stats st;
};

struct llm_engine {
	struct llm_src *src;
	struct llm_config c;
	int cache_len;
	float *x, *xb, *xb2, *hb, *hb2, *q, *att, *logits;
	struct llm_kv kv;
	float *rl, *eacc; /* MoE: router logits, expert sum */
	int8_t *xq;       /* int8 models: the quantized activation */
	float *xs;
	struct llm_router router;
	uint64_t rrng;
	int *prev_ids; /* n_layers x top_k, from the previous token */
	int have_prev;
	double *zipf_w; /* n_layers x n_experts weights by expert id */
	struct llm_expert_w *ew;
};

uint64_t llm_rng_next(uint64_t *s)
{
	/* xorshift64*: fast, and state 0 is avoided by the seeding below. */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545F4914F6CDD1DULL;
}

static uint64_t llm_splitmix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return (x ^ (x >> 31)) | 1;
}

static double llm_rng_unit(uint64_t *s)
{
	return (double)(llm_rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

double llm_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int llm_parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0, mul = 1;
	const char *p = s;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++)
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v))
			return -ERANGE;
	switch (*p) {
	case 'k':
	case 'K':
		mul = 1ULL << 10;
		p++;
		break;
	case 'm':
	case 'M':
		mul = 1ULL << 20;
		p++;
		break;
	case 'g':
	case 'G':
		mul = 1ULL << 30;
		p++;
		break;
	case 't':
	case 'T':
		mul = 1ULL << 40;
		p++;
		break;
	default:
		break;
	}
	if (mul > 1 && (p[0] == 'i' || p[0] == 'I') && (p[1] == 'B' || p[1] == 'b'))
		p += 2;
	else if (p[0] == 'B' || p[0] == 'b')
		p++;
	if (*p)
		return -EINVAL;
	if (__builtin_mul_overflow(v, mul, &v))
		return -ERANGE;
	*out = v;
	return 0;
}

static float *llm_falloc(size_t n)
{
	return calloc(n ? n : 1, sizeof(float));
}

/* ---- the paged KV cache ------------------------------------------------ */

static void llm_kv_fini(struct llm_engine *e)
{
	struct llm_kv *kv = &e->kv;

	if (kv->have_io) {
		/* Reads and writes may still target our buffers: close() drains
		 * or tears down before they are freed. */
		kv->io.ops->close(kv->io.ctx);
		kv->have_io = 0;
	}
	free(kv->local);
	free(kv->tail);
	free(kv->ring);
	free(kv->wtag);
	memset(kv, 0, sizeof(*kv));
}

/* Block geometry and the all-local size, before anything is allocated. */
static int llm_kv_geom(struct llm_engine *e, uint64_t *all_local)
{
	struct llm_kv *kv = &e->kv;
	uint64_t b;

	kv->B = LLM_KV_BLOCK;
	kv->nblk = (e->cache_len + kv->B - 1) / kv->B;
	kv->half = (size_t)kv->B * (size_t)e->c.kv_dim;
	kv->blk = 2 * kv->half;
	if (__builtin_mul_overflow((uint64_t)e->c.n_layers * (uint64_t)kv->nblk,
				   (uint64_t)kv->blk * sizeof(float), &b))
		return -ENOMEM;
	*all_local = b;
	return 0;
}

static int llm_kv_alloc(struct llm_engine *e, int jl, int chunk)
{
	struct llm_kv *kv = &e->kv;
	size_t L = (size_t)e->c.n_layers, n = L * (size_t)jl * kv->blk;

	kv->jl = jl;
	kv->tail_j = -1;
	kv->local = llm_falloc(n);
	if (!kv->local)
		return -ENOMEM;
	/* Fault the local part in now, so that faults per token measure the
	 * weights' backing store and not the cache growing. */
	for (size_t i = 0; i < n; i += 1024)
		((volatile float *)kv->local)[i] = 0.0f;
	if (jl < kv->nblk) {
		kv->tail = llm_falloc(L * kv->blk);
		kv->chunk = chunk;
		kv->ring = llm_falloc((size_t)LLM_KV_RING * (size_t)chunk * kv->half);
		kv->wtag = calloc(2 * L, sizeof(uint64_t));
		if (!kv->tail || !kv->ring || !kv->wtag)
			return -ENOMEM;
	}
	kv->ready = 1;
	return 0;
}

uint64_t llm_engine_kv_min(struct llm_engine *e)
{
	uint64_t all;

	if (llm_kv_geom(e, &all))
		return UINT64_MAX;
	return ((uint64_t)e->c.n_layers * e->kv.blk + (uint64_t)LLM_KV_RING * e->kv.half) *
	       sizeof(float);
}

int llm_engine_kv_pool(struct llm_engine *e, uint64_t local_bytes,
		       int (*open)(uint64_t bytes, struct llm_kvio *io))
{
	struct llm_kv *kv = &e->kv;
	uint64_t all, fixed, per, jl, pool, hb, chunk;
	int rc;

	if (kv->ready)
		return -EBUSY;
	if ((rc = llm_kv_geom(e, &all)))
		return rc;
	if (local_bytes >= all)
		return llm_kv_alloc(e, kv->nblk, 0);
	fixed = llm_engine_kv_min(e);
	if (local_bytes < fixed)
		return -ENOBUFS;
	/* A quarter of what the budget leaves goes to larger stream items
	 * (up to LLM_KV_CHUNK half blocks): each request to the pool then
	 * carries several blocks, which is what its bandwidth needs. */
	hb = kv->half * sizeof(float);
	chunk = (local_bytes - fixed) / 4 / (LLM_KV_RING * hb) + 1;
	if (chunk > LLM_KV_CHUNK)
		chunk = LLM_KV_CHUNK;
	fixed += (chunk - 1) * LLM_KV_RING * hb;
	per = (uint64_t)e->c.n_layers * kv->blk * sizeof(float);
	jl = (local_bytes - fixed) / per;
	pool = (uint64_t)(kv->nblk - (int)jl) * per;
	if ((rc = open(pool, &kv->io)))
		return rc;
	kv->have_io = 1;
	kv->st.pool_bytes = pool;
	rc = llm_kv_alloc(e, (int)jl, (int)chunk);
	kv->st.local_bytes = jl * per + fixed;
	return rc;
}

/* In the pool each layer keeps the key halves of its blocks side by side,
 * then the value halves: what attention reads in one sweep is one range. */
static uint64_t llm_kv_off(const struct llm_engine *e, int l, int j, int kind)
{
	const struct llm_kv *kv = &e->kv;
	uint64_t np = (uint64_t)(kv->nblk - kv->jl);

	return ((uint64_t)l * 2 * np + (uint64_t)kind * np + (uint64_t)(j - kv->jl)) * kv->half *
	       sizeof(float);
}

static int llm_kv_wait(struct llm_engine *e, uint64_t tag)
{
	double t0 = llm_now_ms();
	int rc = e->kv.io.ops->wait(e->kv.io.ctx, tag);

	e->kv.st.stall_ms += llm_now_ms() - t0;
	return rc;
}

/* Stream item k: blocks [j0, j0 + n) of layer l, keys or values. */
static void llm_kv_item(const struct llm_engine *e, long k, int *l, int *kind, int *j0, int *n)
{
	const struct llm_kv *kv = &e->kv;
	long m = kv->cur - kv->jl, q = (m + kv->chunk - 1) / kv->chunk, r = k % (2 * q);

	*l = (int)(k / (2 * q));
	*kind = (int)(r / q);
	*j0 = kv->jl + (int)(r % q) * kv->chunk;
	*n = (int)(m - (r % q) * kv->chunk < kv->chunk ? m - (r % q) * kv->chunk : kv->chunk);
}

static int llm_kv_submit_next(struct llm_engine *e)
{
	struct llm_kv *kv = &e->kv;
	int l, kind, j0, n, slot = (int)(kv->s_sub % LLM_KV_RING), rc;
	size_t len;

	llm_kv_item(e, kv->s_sub, &l, &kind, &j0, &n);
	len = (size_t)n * kv->half * sizeof(float);
	kv->ring_tag[slot] = ++kv->tag;
	rc = kv->io.ops->submit(kv->io.ctx, 0, llm_kv_off(e, l, j0, kind),
				kv->ring + (size_t)slot * (size_t)kv->chunk * kv->half, len,
				kv->ring_tag[slot]);
	if (rc)
		return rc;
	kv->s_sub++;
	kv->st.bytes_read += len;
	return 0;
}

static int llm_kv_drain(struct llm_engine *e)
{
	struct llm_kv *kv = &e->kv;
	int rc = 0;

	for (int l = 0; l < 2 * e->c.n_layers; l++)
		if (kv->wtag && kv->wtag[l]) {
			int r = llm_kv_wait(e, kv->wtag[l]);

			kv->wtag[l] = 0;
			if (r && !rc)
				rc = r;
		}
	return rc;
}

/* Before a forward pass at pos: the previous block's writes landed, the
 * stream of this pass's pool blocks primed. */
static int llm_kv_begin(struct llm_engine *e, int pos)
{
	struct llm_kv *kv = &e->kv;
	uint64_t all;
	int rc;

	if (!kv->ready) {
		if ((rc = llm_kv_geom(e, &all)) || (rc = llm_kv_alloc(e, kv->nblk, 0)))
			return rc;
	}
	kv->cur = pos / kv->B;
	if (kv->cur >= kv->jl)
		kv->tail_j = kv->cur;
	if (!kv->have_io)
		return 0;
	if ((rc = llm_kv_drain(e)))
		return rc;
	kv->s_total = kv->cur > kv->jl ? 2L * e->c.n_layers *
						 ((kv->cur - kv->jl + kv->chunk - 1) / kv->chunk)
				       : 0;
	kv->s_sub = kv->s_con = 0;
	while (kv->s_sub < kv->s_total && kv->s_sub < LLM_KV_RING)
		if ((rc = llm_kv_submit_next(e)))
			return rc;
	return 0;
}

/* Keys (kind 0) or values (kind 1) of block j of layer l, for this pass. */
static int llm_kv_get(struct llm_engine *e, int l, int j, int kind, const float **out)
{
	struct llm_kv *kv = &e->kv;
	int il, ik, j0, n, slot, rc;

	if (j < kv->jl) {
		*out = kv->local + ((size_t)l * (size_t)kv->jl + (size_t)j) * kv->blk +
		       (size_t)kind * kv->half;
		return 0;
	}
	if (j == kv->cur) {
		*out = kv->tail + (size_t)l * kv->blk + (size_t)kind * kv->half;
		return 0;
	}
	if (kv->s_con >= kv->s_sub)
		return -EIO;
	llm_kv_item(e, kv->s_con, &il, &ik, &j0, &n);
	if (il != l || ik != kind || j < j0 || j >= j0 + n)
		return -EIO; /* attention read out of the streamed order */
	slot = (int)(kv->s_con % LLM_KV_RING);
	/* The item's tag is waited once, on its first block. */
	if (j == j0 && (rc = llm_kv_wait(e, kv->ring_tag[slot])))
		return rc;
	*out = kv->ring + ((size_t)slot * (size_t)kv->chunk + (size_t)(j - j0)) * kv->half;
	return 0;
}

/* Done with what llm_kv_get handed out: its ring slot takes the next item. */
static int llm_kv_put(struct llm_engine *e, int j)
{
	struct llm_kv *kv = &e->kv;
	int l, kind, j0, n;

	if (j < kv->jl || j == kv->cur)
		return 0;
	llm_kv_item(e, kv->s_con, &l, &kind, &j0, &n);
	if (j != j0 + n - 1)
		return 0; /* more blocks of this item to come */
	kv->s_con++;
	if (kv->s_sub < kv->s_total)
		return llm_kv_submit_next(e);
	return 0;
}

/* Starts moving block j of layer l (keys and values, kv->blk floats at
 * buf) to the pool (write 1) or from it; the tags go to wtag[2l, 2l+1]. */
static int llm_kv_io(struct llm_engine *e, int l, int j, float *buf, int write)
{
	struct llm_kv *kv = &e->kv;
	size_t hb = kv->half * sizeof(float);

	for (int kind = 0; kind < 2; kind++) {
		uint64_t *t = &kv->wtag[2 * l + kind];
		int rc;

		*t = ++kv->tag;
		rc = kv->io.ops->submit(kv->io.ctx, write, llm_kv_off(e, l, j, kind),
					buf + (size_t)kind * kv->half, hb, *t);
		if (rc) {
			*t = 0;
			return rc;
		}
		if (write)
			kv->st.bytes_written += hb;
		else
			kv->st.bytes_read += hb;
	}
	return 0;
}

/* After the pass at pos: a pool block that just filled is written out. */
static int llm_kv_end(struct llm_engine *e, int pos)
{
	struct llm_kv *kv = &e->kv;

	if (!kv->have_io || (pos + 1) % kv->B || kv->cur < kv->jl)
		return 0;
	for (int l = 0; l < e->c.n_layers; l++) {
		int rc = llm_kv_io(e, l, kv->cur, kv->tail + (size_t)l * kv->blk, 1);

		if (rc)
			return rc;
	}
	return 0;
}

/* Where the current position's key and value go. */
static float *llm_kv_slot(struct llm_engine *e, int l, int pos, int kind)
{
	struct llm_kv *kv = &e->kv;
	int j = pos / kv->B;
	float *b = j < kv->jl ? kv->local + ((size_t)l * (size_t)kv->jl + (size_t)j) * kv->blk
			      : kv->tail + (size_t)l * kv->blk;

	return b + (size_t)kind * kv->half + (size_t)(pos % kv->B) * (size_t)e->c.kv_dim;
}

int llm_engine_kv_block(struct llm_engine *e, int *B, size_t *bytes)
{
	uint64_t all;
	int rc;

	if (!e->kv.ready && (rc = llm_kv_geom(e, &all)))
		return rc;
	*B = e->kv.B;
	*bytes = (size_t)e->c.n_layers * e->kv.blk * sizeof(float);
	return 0;
}

/* Copies block j of every layer to or from buf (layer by layer, keys then
 * values); pool blocks through the io, synchronously. */
static int llm_kv_copy(struct llm_engine *e, int j, void *buf, int to_engine)
{
	struct llm_kv *kv = &e->kv;
	size_t bb = kv->blk * sizeof(float);
	int rc = 0;

	if (!kv->ready || j < 0 || j >= kv->nblk)
		return -EINVAL;
	if (kv->have_io && (rc = llm_kv_drain(e)))
		return rc;
	for (int l = 0; l < e->c.n_layers && !rc; l++) {
		char *b = (char *)buf + (size_t)l * bb;
		float *mem =
			j < kv->jl ? kv->local + ((size_t)l * (size_t)kv->jl + (size_t)j) * kv->blk
			: j == kv->tail_j ? kv->tail + (size_t)l * kv->blk
					  : NULL;

		if (mem && to_engine)
			memcpy(mem, b, bb);
		else if (mem)
			memcpy(b, mem, bb);
		/* A pool block's home is the pool even while the tail holds it:
		 * an imported block is written there too. */
		if (j < kv->jl || (mem && !to_engine))
			continue;
		rc = llm_kv_io(e, l, j, (float *)(void *)b, to_engine);
	}
	{
		int r = kv->have_io ? llm_kv_drain(e) : 0;

		return rc ? rc : r;
	}
}

int llm_engine_kv_export(struct llm_engine *e, int j, void *buf)
{
	return llm_kv_copy(e, j, buf, 0);
}

int llm_engine_kv_import(struct llm_engine *e, int j, const void *buf)
{
	return llm_kv_copy(e, j, (void *)buf, 1);
}

void llm_engine_kv_stats(const struct llm_engine *e, struct llm_kv_stats *st)
{
	*st = e->kv.st;
	if (!e->kv.have_io)
		st->local_bytes =
			(uint64_t)e->c.n_layers * (uint64_t)e->kv.jl * e->kv.blk * sizeof(float);
	st->local_blocks = e->kv.jl;
	st->blocks = e->kv.nblk;
}

void llm_engine_destroy(struct llm_engine *e)
{
	if (!e)
		return;
	free(e->x);
	free(e->xb);
	free(e->xb2);
	free(e->hb);
	free(e->hb2);
	free(e->q);
	free(e->att);
	free(e->logits);
	llm_kv_fini(e);
	free(e->rl);
	free(e->eacc);
	free(e->prev_ids);
	free(e->zipf_w);
	free(e->ew);
	free(e->xq);
	free(e->xs);
	free(e);
}

int llm_engine_create(struct llm_src *src, int max_steps, const struct llm_router *router,
		      struct llm_engine **out)
{
	struct llm_engine *e = calloc(1, sizeof(*e));
	const struct llm_config *c = &src->cfg;

	if (!e)
		return -ENOMEM;
	e->src = src;
	e->c = *c;
	/* The KV cache covers the steps actually run, not the model's full
	 * context: a 2048-position cache of a big model is hundreds of MB. */
	e->cache_len = max_steps < c->seq_len ? max_steps : c->seq_len;
	if (e->cache_len < 1)
		e->cache_len = 1;
	e->x = llm_falloc((size_t)c->dim);
	e->xb = llm_falloc((size_t)c->dim);
	e->xb2 = llm_falloc((size_t)c->dim);
	e->hb = llm_falloc((size_t)c->hidden);
	e->hb2 = llm_falloc((size_t)c->hidden);
	e->q = llm_falloc((size_t)c->dim);
	e->att = llm_falloc((size_t)c->n_heads * (size_t)e->cache_len);
	e->logits = llm_falloc((size_t)c->vocab);
	if (!e->x || !e->xb || !e->xb2 || !e->hb || !e->hb2 || !e->q || !e->att || !e->logits)
		goto nomem;
	if (c->group_size) {
		size_t m = (size_t)(c->hidden > c->dim ? c->hidden : c->dim);

		e->xq = malloc(m);
		e->xs = llm_falloc(m / (size_t)c->group_size);
		if (!e->xq || !e->xs)
			goto nomem;
	}
	if (c->n_experts) {
		e->rl = llm_falloc((size_t)c->n_experts);
		e->eacc = llm_falloc((size_t)c->dim);
		e->prev_ids = calloc((size_t)c->n_layers * (size_t)c->top_k, sizeof(int));
		e->ew = calloc((size_t)c->top_k, sizeof(*e->ew));
		if (!e->rl || !e->eacc || !e->prev_ids || !e->ew)
			goto nomem;
	}
	e->router = router ? *router : (struct llm_router){ .mode = LLM_ROUTER_MODEL };
	e->rrng = llm_splitmix(e->router.seed);
	if (c->n_experts && e->router.mode != LLM_ROUTER_MODEL) {
		size_t E = (size_t)c->n_experts;

		e->zipf_w = malloc((size_t)c->n_layers * E * sizeof(double));
		if (!e->zipf_w)
			goto nomem;
		for (int l = 0; l < c->n_layers; l++) {
			double *w = e->zipf_w + (size_t)l * E;
			uint64_t prng = llm_splitmix(e->router.seed ^ ((uint64_t)(l + 1) << 32));
			int *perm = malloc(E * sizeof(int));

			if (!perm)
				goto nomem;
			/* Each layer gets its own popular experts: a seeded
			 * shuffle assigns Zipf ranks to expert ids. */
			for (size_t i = 0; i < E; i++)
				perm[i] = (int)i;
			for (size_t i = E - 1; i > 0; i--) {
				size_t j = llm_rng_next(&prng) % (i + 1);
				int t = perm[i];

				perm[i] = perm[j];
				perm[j] = t;
			}
			for (size_t r = 0; r < E; r++)
				w[perm[r]] = e->router.mode == LLM_ROUTER_UNIFORM
						     ? 1.0
						     : 1.0 / pow((double)(r + 1), e->router.zipf_s);
			free(perm);
		}
	}
	*out = e;
	return 0;
nomem:
	llm_engine_destroy(e);
	return -ENOMEM;
}

/* k distinct experts drawn without replacement with weights w. */
static void llm_route_draw(struct llm_engine *e, const double *w, int *ids)
{
	int E = e->c.n_experts, k = e->c.top_k;
	double total = 0.0;
	unsigned char taken[LLM_MAX_EXPERTS] = { 0 };

	for (int i = 0; i < E; i++)
		total += w[i];
	for (int j = 0; j < k; j++) {
		double u = llm_rng_unit(&e->rrng) * total, run = 0.0;
		int pick = -1;

		for (int i = 0; i < E; i++) {
			if (taken[i])
				continue;
			pick = i;
			run += w[i];
			if (u < run)
				break;
		}
		taken[pick] = 1;
		total -= w[pick];
		ids[j] = pick;
	}
}

static void llm_route(struct llm_engine *e, int l, int *ids, float *wt)
{
	int E = e->c.n_experts, k = e->c.top_k;
	int *prev = e->prev_ids + (size_t)l * (size_t)k;

	if (e->router.mode == LLM_ROUTER_MODEL) {
		/* Top-k by logit, ties to the lower id. */
		unsigned char taken[LLM_MAX_EXPERTS] = { 0 };

		for (int j = 0; j < k; j++) {
			int best = -1;

			for (int i = 0; i < E; i++)
				if (!taken[i] && (best < 0 || e->rl[i] > e->rl[best]))
					best = i;
			taken[best] = 1;
			ids[j] = best;
		}
	} else {
		/* Always draw the reuse coin so the stream of random numbers
		 * does not depend on anything but the seed and the step. */
		double coin = llm_rng_unit(&e->rrng);

		if (e->router.mode == LLM_ROUTER_ZIPF && e->have_prev && coin < LLM_ZIPF_REUSE)
			memcpy(ids, prev, (size_t)k * sizeof(int));
		else
			llm_route_draw(e, e->zipf_w + (size_t)l * (size_t)E, ids);
	}
	memcpy(prev, ids, (size_t)k * sizeof(int));
	for (int j = 0; j < k; j++)
		wt[j] = e->rl[ids[j]];
	llm_softmax(wt, k);
}

/* A weight matmul in the model's weight type. */
static void llm_mm(struct llm_engine *e, float *out, const float *x, const float *w, int n, int d)
{
	if (!e->c.group_size) {
		llm_matmul(out, x, w, n, d);
		return;
	}
	llm_quantize(e->xq, e->xs, x, n, e->c.group_size);
	llm_matmul_q8(out, e->xq, e->xs, w, n, d, e->c.group_size);
}

static void llm_swiglu(float *hb, const float *hb2, int n)
{
	for (int i = 0; i < n; i++) {
		float v = hb[i];

		hb[i] = v * (1.0f / (1.0f + expf(-v))) * hb2[i];
	}
}

static void llm_rope(const struct llm_config *c, float *q, float *k, int pos)
{
	for (int i = 0; i < c->dim; i += 2) {
		int head_dim = i % c->head_size;
		float freq = 1.0f / powf(10000.0f, (float)head_dim / (float)c->head_size);
		float val = (float)pos * freq, fcr = cosf(val), fci = sinf(val);

		for (int v = 0; v < (i < c->kv_dim ? 2 : 1); v++) {
			float *vec = v == 0 ? q : k;
			float v0 = vec[i], v1 = vec[i + 1];

			vec[i] = v0 * fcr - v1 * fci;
			vec[i + 1] = v0 * fci + v1 * fcr;
		}
	}
}

static int llm_attention(struct llm_engine *e, int l, int pos)
{
	const struct llm_config *c = &e->c;
	int hs = c->head_size, kv_mul = c->n_heads / c->n_kv_heads, B = e->kv.B, rc;
	float scale = 1.0f / sqrtf((float)hs);

	/* Block-outer, head-inner: every head still sees t in increasing
	 * order, so each score and each sum is computed exactly as over one
	 * flat cache, while each block is needed once for keys and once for
	 * values, in the order the stream fetched them. */
	for (int j = 0; j <= pos / B; j++) {
		const float *kb;
		int t0 = j * B, t1 = t0 + B - 1 < pos ? t0 + B - 1 : pos;

		if ((rc = llm_kv_get(e, l, j, 0, &kb)))
			return rc;
		for (int h = 0; h < c->n_heads; h++) {
			const float *q = e->q + (size_t)h * hs;
			float *att = e->att + (size_t)h * (size_t)e->cache_len;
			size_t hoff = (size_t)(h / kv_mul) * hs;

			for (int t = t0; t <= t1; t++) {
				const float *k = kb + (size_t)(t - t0) * c->kv_dim + hoff;
				float score = 0.0f;

				for (int i = 0; i < hs; i++)
					score += q[i] * k[i];
				att[t] = score * scale;
			}
		}
		if ((rc = llm_kv_put(e, j)))
			return rc;
	}
	for (int h = 0; h < c->n_heads; h++) {
		llm_softmax(e->att + (size_t)h * (size_t)e->cache_len, pos + 1);
		memset(e->xb + (size_t)h * hs, 0, (size_t)hs * sizeof(float));
	}
	for (int j = 0; j <= pos / B; j++) {
		const float *vb;
		int t0 = j * B, t1 = t0 + B - 1 < pos ? t0 + B - 1 : pos;

		if ((rc = llm_kv_get(e, l, j, 1, &vb)))
			return rc;
		for (int h = 0; h < c->n_heads; h++) {
			const float *att = e->att + (size_t)h * (size_t)e->cache_len;
			float *xb = e->xb + (size_t)h * hs;
			size_t hoff = (size_t)(h / kv_mul) * hs;

			for (int t = t0; t <= t1; t++) {
				const float *v = vb + (size_t)(t - t0) * c->kv_dim + hoff;
				float a = att[t];

				for (int i = 0; i < hs; i++)
					xb[i] += a * v[i];
			}
		}
		if ((rc = llm_kv_put(e, j)))
			return rc;
	}
	return 0;
}

/* The expert block, once e->rl holds the router logits for e->xb. */
static int llm_moe_ffn(struct llm_engine *e, int l)
{
	const struct llm_config *c = &e->c;
	int ids[LLM_MAX_EXPERTS], rc;
	float wt[LLM_MAX_EXPERTS];

	llm_route(e, l, ids, wt);
	rc = e->src->ops->experts(e->src, l, ids, c->top_k, e->ew);
	if (rc)
		return rc;
	memset(e->eacc, 0, (size_t)c->dim * sizeof(float));
	for (int j = 0; j < c->top_k; j++) {
		llm_matmul(e->hb, e->xb, e->ew[j].w1, c->dim, c->hidden);
		llm_matmul(e->hb2, e->xb, e->ew[j].w3, c->dim, c->hidden);
		llm_swiglu(e->hb, e->hb2, c->hidden);
		llm_matmul(e->xb2, e->hb, e->ew[j].w2, c->hidden, c->dim);
		for (int i = 0; i < c->dim; i++)
			e->eacc[i] += wt[j] * e->xb2[i];
	}
	for (int i = 0; i < c->dim; i++)
		e->x[i] += e->eacc[i];
	return 0;
}

/*
 * out[0..d) = M x for the matrix M of group g of layer l, part by part; on
 * part 0, first nout = rmsnorm(nin) with the group's norm vector (x may be
 * nout).  Row results do not depend on how the rows are split.
 */
static int llm_gmm(struct llm_engine *e, int l, int g, float *nout, const float *nin, float *out,
		   const float *x, int n, int d)
{
	struct llm_src *s = e->src;
	struct llm_part pt;
	int next = 0, rc;

	for (int p = 0; next < d; p++) {
		if ((rc = s->ops->part(s, l, g, p, &pt)))
			return rc;
		if (pt.r0 != next || pt.r1 <= pt.r0 || pt.r1 > d || (p == 0 && nout && !pt.vec))
			return -EIO; /* a source handing out a malformed part */
		if (p == 0 && nout)
			llm_rmsnorm(nout, nin, pt.vec, e->c.dim);
		llm_mm(e, out + pt.r0, x, pt.mat, n, pt.r1 - pt.r0);
		next = pt.r1;
	}
	return 0;
}

int llm_forward(struct llm_engine *e, int token, int pos, float **logits)
{
	const struct llm_config *c = &e->c;
	struct llm_src *s = e->src;
	int D = c->dim, H = c->hidden, rc;

	if (token < 0 || token >= c->vocab || pos < 0 || pos >= e->cache_len)
		return -EINVAL;
	if ((rc = llm_kv_begin(e, pos)))
		return rc;
	rc = s->ops->embed(s, token, e->x);
	if (rc)
		return rc;
	for (int l = 0; l < c->n_layers; l++) {
		float *k = llm_kv_slot(e, l, pos, 0), *v = llm_kv_slot(e, l, pos, 1);

		if ((rc = llm_gmm(e, l, 0, e->xb, e->x, e->q, e->xb, D, D)) ||
		    (rc = llm_gmm(e, l, 1, NULL, NULL, k, e->xb, D, c->kv_dim)) ||
		    (rc = llm_gmm(e, l, 2, NULL, NULL, v, e->xb, D, c->kv_dim)))
			return rc;
		llm_rope(c, e->q, k, pos);
		if ((rc = llm_attention(e, l, pos)))
			return rc;
		if ((rc = llm_gmm(e, l, 3, NULL, NULL, e->xb2, e->xb, D, D)))
			return rc;
		for (int i = 0; i < D; i++)
			e->x[i] += e->xb2[i];
		if (c->n_experts) {
			if ((rc = llm_gmm(e, l, 4, e->xb, e->x, e->rl, e->xb, D, c->n_experts)) ||
			    (rc = llm_moe_ffn(e, l)))
				return rc;
			continue;
		}
		if ((rc = llm_gmm(e, l, 4, e->xb, e->x, e->hb, e->xb, D, H)) ||
		    (rc = llm_gmm(e, l, 5, NULL, NULL, e->hb2, e->xb, D, H)))
			return rc;
		llm_swiglu(e->hb, e->hb2, H);
		if ((rc = llm_gmm(e, l, 6, NULL, NULL, e->xb, e->hb, H, D)))
			return rc;
		for (int i = 0; i < D; i++)
			e->x[i] += e->xb[i];
	}
	if (c->n_experts)
		e->have_prev = 1;
	if ((rc = llm_kv_end(e, pos)) ||
	    (rc = llm_gmm(e, c->n_layers, 0, e->x, e->x, e->logits, e->x, D, c->vocab)))
		return rc;
	*logits = e->logits;
	return 0;
}

int llm_sample(const float *logits, int n, float temperature, uint64_t *rng, float *scratch)
{
	int best = 0;
	double u, run = 0.0;

	if (temperature <= 0.0f) {
		for (int i = 1; i < n; i++)
			if (logits[i] > logits[best])
				best = i;
		return best;
	}
	for (int i = 0; i < n; i++)
		scratch[i] = logits[i] / temperature;
	llm_softmax(scratch, n);
	u = llm_rng_unit(rng);
	for (int i = 0; i < n; i++) {
		run += scratch[i];
		if (u < run)
			return i;
	}
	return n - 1; /* rounding left u above the last cumulative sum */
}
