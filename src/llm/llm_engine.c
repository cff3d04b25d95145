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

struct llm_engine {
	struct llm_src *src;
	struct llm_config c;
	int cache_len;
	float *x, *xb, *xb2, *hb, *hb2, *q, *att, *logits;
	float *key_cache, *value_cache;
	float *rl, *eacc;          /* MoE: router logits, expert sum */
	int8_t *xq;                /* int8 models: the quantized activation */
	float *xs;
	struct llm_router router;
	uint64_t rrng;
	int *prev_ids;             /* n_layers x top_k, from the previous token */
	int have_prev;
	double *zipf_w;            /* n_layers x n_experts weights by expert id */
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
	case 'k': case 'K': mul = 1ULL << 10; p++; break;
	case 'm': case 'M': mul = 1ULL << 20; p++; break;
	case 'g': case 'G': mul = 1ULL << 30; p++; break;
	case 't': case 'T': mul = 1ULL << 40; p++; break;
	default: break;
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
	free(e->key_cache);
	free(e->value_cache);
	free(e->rl);
	free(e->eacc);
	free(e->prev_ids);
	free(e->zipf_w);
	free(e->ew);
	free(e->xq);
	free(e->xs);
	free(e);
}

static float *llm_falloc(size_t n)
{
	return calloc(n ? n : 1, sizeof(float));
}

int llm_engine_create(struct llm_src *src, int max_steps,
		      const struct llm_router *router, struct llm_engine **out)
{
	struct llm_engine *e = calloc(1, sizeof(*e));
	const struct llm_config *c = &src->cfg;
	size_t kv;

	if (!e)
		return -ENOMEM;
	e->src = src;
	e->c = *c;
	/* The KV cache covers the steps actually run, not the model's full
	 * context: a 2048-position cache of a big model is hundreds of MB. */
	e->cache_len = max_steps < c->seq_len ? max_steps : c->seq_len;
	if (e->cache_len < 1)
		e->cache_len = 1;
	if (__builtin_mul_overflow((size_t)c->n_layers, (size_t)e->cache_len, &kv) ||
	    __builtin_mul_overflow(kv, (size_t)c->kv_dim, &kv) || kv > SIZE_MAX / sizeof(float)) {
		free(e);
		return -ENOMEM;
	}
	e->x = llm_falloc((size_t)c->dim);
	e->xb = llm_falloc((size_t)c->dim);
	e->xb2 = llm_falloc((size_t)c->dim);
	e->hb = llm_falloc((size_t)c->hidden);
	e->hb2 = llm_falloc((size_t)c->hidden);
	e->q = llm_falloc((size_t)c->dim);
	e->att = llm_falloc((size_t)c->n_heads * (size_t)e->cache_len);
	e->logits = llm_falloc((size_t)c->vocab);
	e->key_cache = llm_falloc(kv);
	e->value_cache = llm_falloc(kv);
	if (!e->x || !e->xb || !e->xb2 || !e->hb || !e->hb2 || !e->q || !e->att ||
	    !e->logits || !e->key_cache || !e->value_cache)
		goto nomem;
	/* Fault the KV cache in now, so that faults per token measure the
	 * weights' backing store and not the cache growing. */
	for (size_t i = 0; i < kv; i += 1024) {
		((volatile float *)e->key_cache)[i] = 0.0f;
		((volatile float *)e->value_cache)[i] = 0.0f;
	}
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
				w[perm[r]] = e->router.mode == LLM_ROUTER_UNIFORM ? 1.0 :
					     1.0 / pow((double)(r + 1), e->router.zipf_s);
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

		if (e->router.mode == LLM_ROUTER_ZIPF && e->have_prev &&
		    coin < LLM_ZIPF_REUSE)
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
static void llm_mm(struct llm_engine *e, float *out, const float *x, const float *w,
		   int n, int d)
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

static void llm_attention(struct llm_engine *e, int l, int pos)
{
	const struct llm_config *c = &e->c;
	int hs = c->head_size, kv_mul = c->n_heads / c->n_kv_heads;
	size_t loff = (size_t)l * (size_t)e->cache_len * (size_t)c->kv_dim;
	float scale = 1.0f / sqrtf((float)hs);

	for (int h = 0; h < c->n_heads; h++) {
		const float *q = e->q + (size_t)h * hs;
		float *att = e->att + (size_t)h * (size_t)e->cache_len;
		float *xb = e->xb + (size_t)h * hs;
		size_t hoff = loff + (size_t)(h / kv_mul) * hs;

		for (int t = 0; t <= pos; t++) {
			const float *k = e->key_cache + hoff + (size_t)t * c->kv_dim;
			float score = 0.0f;

			for (int i = 0; i < hs; i++)
				score += q[i] * k[i];
			att[t] = score * scale;
		}
		llm_softmax(att, pos + 1);
		memset(xb, 0, (size_t)hs * sizeof(float));
		for (int t = 0; t <= pos; t++) {
			const float *v = e->value_cache + hoff + (size_t)t * c->kv_dim;
			float a = att[t];

			for (int i = 0; i < hs; i++)
				xb[i] += a * v[i];
		}
	}
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
static int llm_gmm(struct llm_engine *e, int l, int g, float *nout, const float *nin,
		   float *out, const float *x, int n, int d)
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
	rc = s->ops->embed(s, token, e->x);
	if (rc)
		return rc;
	for (int l = 0; l < c->n_layers; l++) {
		size_t off = ((size_t)l * (size_t)e->cache_len + (size_t)pos) * (size_t)c->kv_dim;
		float *k = e->key_cache + off, *v = e->value_cache + off;

		if ((rc = llm_gmm(e, l, 0, e->xb, e->x, e->q, e->xb, D, D)) ||
		    (rc = llm_gmm(e, l, 1, NULL, NULL, k, e->xb, D, c->kv_dim)) ||
		    (rc = llm_gmm(e, l, 2, NULL, NULL, v, e->xb, D, c->kv_dim)))
			return rc;
		llm_rope(c, e->q, k, pos);
		llm_attention(e, l, pos);
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
	if ((rc = llm_gmm(e, c->n_layers, 0, e->x, e->x, e->logits, e->x, D, c->vocab)))
		return rc;
	*logits = e->logits;
	return 0;
}

int llm_sample(const float *logits, int n, float temperature, uint64_t *rng,
	       float *scratch)
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
