/*
 * Checkpoint formats: parse a header, refuse anything that does not describe
 * exactly the bytes in the file, and compute where every tensor lives.
 *
 * Two formats are read, both little-endian fp32:
 *
 * 1. llama2.c "version 0" (dense).  Seven int32: dim, hidden_dim, n_layers,
 *    n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means an
 *    unshared classifier is stored at the end.  Then, grouped by tensor type
 *    across all layers: token_embedding (vocab x dim), rms_att (L x dim),
 *    wq (L x dim x dim), wk, wv (L x kv_dim x dim), wo (L x dim x dim),
 *    rms_ffn (L x dim), w1 (L x hidden x dim), w2 (L x dim x hidden),
 *    w3 (L x hidden x dim), rms_final (dim), an unused RoPE table
 *    (2 x seq_len x head_size/2), [wcls (vocab x dim)].  A layer is therefore
 *    nine separate ranges of the file.
 *
 * 2. ethermem MoE, version 1 (Mixtral-style), laid out for fetching:
 *      [0, 256)  header, int32 fields at these byte offsets, rest zero:
 *                0 magic 0x454f4d45 ("EMOE"), 4 version (1), 8 dim,
 *                12 hidden_dim (per expert), 16 n_layers, 20 n_heads,
 *                24 n_kv_heads, 28 vocab_size (negative: unshared classifier),
 *                32 seq_len, 36 n_experts (1..256), 40 top_k (1..n_experts)
 *      256       token_embedding (vocab x dim), rms_final (dim),
 *                [wcls (vocab x dim)], zero padding to a 4096 boundary
 *      then n_layers layer blocks, each 4096-aligned and the same size:
 *                rms_att (dim), wq (dim x dim), wk (kv_dim x dim),
 *                wv (kv_dim x dim), wo (dim x dim), rms_ffn (dim),
 *                router (n_experts x dim), zero padding to 4096;
 *                then n_experts expert blocks, each 4096-aligned:
 *                w1 (hidden x dim), w2 (dim x hidden), w3 (hidden x dim),
 *                zero padding to 4096.
 *    So "the rest of layer i" is one range, each expert is one page-aligned
 *    range, and a page-granular mapping of one expert drags in nothing else.
 *    No RoPE table: it is computed.  The file ends exactly after the last
 *    expert of the last layer.
 *
 * 3. llama2.c "version 2" (dense, int8).  A 256-byte header: uint32 magic
 *    0x616b3432 ("ak42"), int32 version 2, the seven int32 above (vocab
 *    positive), uint8 shared_classifier at byte 36, int32 group_size at byte
 *    37, zeros.  Then fp32 rms_att (L x dim), rms_ffn (L x dim), rms_final
 *    (dim); then quantized matrices, each stored as its int8 values followed
 *    by one fp32 scale per group_size values: token_embedding, then per layer
 *    wq, then per layer wk, wv, wo, w1, w2, w3, [wcls].  Since a layer's
 *    values and scales are adjacent, one range still holds one tensor.
 *
 * Matrices are row-major, out x in, as llama2.c stores them.  Version 1 of
 * the llama2.c format (fp32 with the same 256-byte header) is refused.
 */
#include "llm/llm.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Generous but finite: no field may exceed this, so products of three fit
 * comfortably before the explicit overflow checks even matter. */
#define LLM_FIELD_MAX (1 << 24)

static int llm_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int32_t llm_rd32(const unsigned char *p)
{
	uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
		     (uint32_t)p[3] << 24;
	return (int32_t)v;
}

/* *acc += a*b*c*4 bytes (fp32), failing on overflow. */
static int llm_add_f32(uint64_t *acc, uint64_t a, uint64_t b, uint64_t c, uint64_t *one)
{
	uint64_t n;

	if (__builtin_mul_overflow(a, b, &n) || __builtin_mul_overflow(n, c, &n) ||
	    __builtin_mul_overflow(n, 4, &n) || __builtin_add_overflow(*acc, n, acc))
		return -EOVERFLOW;
	if (one)
		*one = n;
	return 0;
}

static uint64_t llm_align(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static int llm_check_dims(const int32_t *f, struct llm_config *c, char *err, size_t errlen)
{
	static const char *const names[] = { "dim",        "hidden_dim", "n_layers", "n_heads",
					     "n_kv_heads", "vocab_size", "seq_len" };

	for (int i = 0; i < 7; i++) {
		int32_t v = i == 5 ? (f[i] < 0 && f[i] != INT32_MIN ? -f[i] : f[i]) : f[i];

		if (v <= 0 || v > LLM_FIELD_MAX)
			return llm_fail(err, errlen, "bad header: %s = %d", names[i], f[i]);
	}
	c->dim = f[0];
	c->hidden = f[1];
	c->n_layers = f[2];
	c->n_heads = f[3];
	c->n_kv_heads = f[4];
	c->shared_cls = f[5] > 0;
	c->vocab = f[5] > 0 ? f[5] : -f[5];
	c->seq_len = f[6];
	if (c->dim % c->n_heads)
		return llm_fail(err, errlen, "bad header: dim %d not a multiple of n_heads %d",
				c->dim, c->n_heads);
	if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
		return llm_fail(err, errlen,
				"bad header: n_heads %d not a multiple of n_kv_heads %d",
				c->n_heads, c->n_kv_heads);
	c->head_size = c->dim / c->n_heads;
	if (c->head_size % 2)
		return llm_fail(err, errlen, "bad header: head size %d is odd (RoPE rotates pairs)",
				c->head_size);
	c->kv_dim = c->dim / c->n_heads * c->n_kv_heads;
	return 0;
}

static int llm_layout_v0(struct llm_config *c, struct llm_layout *lay)
{
	uint64_t off = LLM_V0_HEADER, L = (uint64_t)c->n_layers, D = (uint64_t)c->dim;
	uint64_t H = (uint64_t)c->hidden, KV = (uint64_t)c->kv_dim, one;
	static const enum llm_tensor order[] = { LLM_T_RMS_ATT, LLM_T_WQ, LLM_T_WK,
						 LLM_T_WV,      LLM_T_WO, LLM_T_RMS_FFN,
						 LLM_T_W1,      LLM_T_W2, LLM_T_W3 };
	uint64_t rows[LLM_T_COUNT] = {
		[LLM_T_RMS_ATT] = 1, [LLM_T_WQ] = D, [LLM_T_WK] = KV,
		[LLM_T_WV] = KV,     [LLM_T_WO] = D, [LLM_T_RMS_FFN] = 1,
		[LLM_T_W1] = H,      [LLM_T_W2] = D, [LLM_T_W3] = H,
	};
	uint64_t cols[LLM_T_COUNT] = {
		[LLM_T_RMS_ATT] = D, [LLM_T_WQ] = D, [LLM_T_WK] = D, [LLM_T_WV] = D, [LLM_T_WO] = D,
		[LLM_T_RMS_FFN] = D, [LLM_T_W1] = D, [LLM_T_W2] = H, [LLM_T_W3] = D,
	};

	lay->fmt = LLM_FMT_V0;
	lay->tok_emb = off;
	if (llm_add_f32(&off, (uint64_t)c->vocab, D, 1, NULL))
		return -EOVERFLOW;
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		enum llm_tensor t = order[i];

		lay->t_base[t] = off;
		if (llm_add_f32(&off, L, rows[t], cols[t], &one))
			return -EOVERFLOW;
		lay->t_size[t] = one / L;
	}
	lay->rms_final = off;
	if (llm_add_f32(&off, D, 1, 1, NULL) ||
	    llm_add_f32(&off, (uint64_t)c->seq_len, (uint64_t)c->head_size, 1, NULL))
		return -EOVERFLOW;
	lay->wcls = c->shared_cls ? lay->tok_emb : off;
	if (!c->shared_cls && llm_add_f32(&off, (uint64_t)c->vocab, D, 1, NULL))
		return -EOVERFLOW;
	lay->file_size = off;
	lay->w_hot_bytes = 0;
	for (int t = 0; t < LLM_T_COUNT; t++)
		lay->w_hot_bytes += lay->t_size[t] * L;
	lay->w_hot_bytes += D * 4 + (uint64_t)c->vocab * D * 4;
	return 0;
}

/* *acc += a*b int8 values and a*b/gs fp32 scales. */
static int llm_add_q8(uint64_t *acc, uint64_t a, uint64_t b, uint64_t gs, uint64_t *one)
{
	uint64_t n, t;

	if (__builtin_mul_overflow(a, b, &n) || n % gs)
		return -EOVERFLOW;
	t = n + n / gs * 4;
	if (t < n || __builtin_add_overflow(*acc, t, acc))
		return -EOVERFLOW;
	if (one)
		*one = t;
	return 0;
}

static int llm_layout_q8(struct llm_config *c, struct llm_layout *lay)
{
	uint64_t off = LLM_Q8_HEADER, L = (uint64_t)c->n_layers, D = (uint64_t)c->dim;
	uint64_t H = (uint64_t)c->hidden, KV = (uint64_t)c->kv_dim, one;
	uint64_t gs = (uint64_t)c->group_size;
	static const enum llm_tensor order[] = { LLM_T_WQ, LLM_T_WK, LLM_T_WV, LLM_T_WO,
						 LLM_T_W1, LLM_T_W2, LLM_T_W3 };
	uint64_t rows[LLM_T_COUNT] = {
		[LLM_T_WQ] = D, [LLM_T_WK] = KV, [LLM_T_WV] = KV, [LLM_T_WO] = D,
		[LLM_T_W1] = H, [LLM_T_W2] = D,  [LLM_T_W3] = H,
	};
	uint64_t cols[LLM_T_COUNT] = {
		[LLM_T_WQ] = D, [LLM_T_WK] = D, [LLM_T_WV] = D, [LLM_T_WO] = D,
		[LLM_T_W1] = D, [LLM_T_W2] = H, [LLM_T_W3] = D,
	};

	lay->fmt = LLM_FMT_Q8;
	lay->t_base[LLM_T_RMS_ATT] = off;
	lay->t_size[LLM_T_RMS_ATT] = D * 4;
	if (llm_add_f32(&off, L, D, 1, NULL))
		return -EOVERFLOW;
	lay->t_base[LLM_T_RMS_FFN] = off;
	lay->t_size[LLM_T_RMS_FFN] = D * 4;
	if (llm_add_f32(&off, L, D, 1, NULL))
		return -EOVERFLOW;
	lay->rms_final = off;
	if (llm_add_f32(&off, D, 1, 1, NULL))
		return -EOVERFLOW;
	lay->tok_emb = off;
	if (llm_add_q8(&off, (uint64_t)c->vocab, D, gs, NULL))
		return -EOVERFLOW;
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
		enum llm_tensor t = order[i];

		lay->t_base[t] = off;
		if (llm_add_q8(&lay->t_size[t], rows[t], cols[t], gs, NULL))
			return -EOVERFLOW;
		if (__builtin_mul_overflow(lay->t_size[t], L, &one) ||
		    __builtin_add_overflow(off, one, &off))
			return -EOVERFLOW;
	}
	lay->wcls = c->shared_cls ? lay->tok_emb : off;
	if (!c->shared_cls && llm_add_q8(&off, (uint64_t)c->vocab, D, gs, &one))
		return -EOVERFLOW;
	lay->file_size = off;
	lay->w_hot_bytes = 0;
	for (int t = 0; t < LLM_T_COUNT; t++)
		lay->w_hot_bytes += lay->t_size[t] * L;
	one = 0;
	llm_add_q8(&one, (uint64_t)c->vocab, D, gs, NULL);
	lay->w_hot_bytes += D * 4 + one;
	return 0;
}

static int llm_layout_moe(struct llm_config *c, struct llm_layout *lay)
{
	uint64_t off = LLM_MOE_HEADER, D = (uint64_t)c->dim, H = (uint64_t)c->hidden;
	uint64_t KV = (uint64_t)c->kv_dim, E = (uint64_t)c->n_experts, one, ex = 0;
	uint64_t rows[LLM_T_COUNT] = {
		[LLM_T_RMS_ATT] = 1, [LLM_T_WQ] = D,      [LLM_T_WK] = KV,    [LLM_T_WV] = KV,
		[LLM_T_WO] = D,      [LLM_T_RMS_FFN] = 1, [LLM_T_ROUTER] = E,
	};

	lay->fmt = LLM_FMT_MOE;
	lay->tok_emb = off;
	if (llm_add_f32(&off, (uint64_t)c->vocab, D, 1, NULL))
		return -EOVERFLOW;
	lay->rms_final = off;
	if (llm_add_f32(&off, D, 1, 1, NULL))
		return -EOVERFLOW;
	lay->wcls = c->shared_cls ? lay->tok_emb : off;
	if (!c->shared_cls && llm_add_f32(&off, (uint64_t)c->vocab, D, 1, NULL))
		return -EOVERFLOW;
	lay->layer_base = llm_align(off, LLM_MOE_ALIGN);

	off = 0;
	for (int t = LLM_T_RMS_ATT; t <= LLM_T_ROUTER; t++) {
		lay->t_base[t] = off;
		if (llm_add_f32(&off, rows[t], D, 1, &one))
			return -EOVERFLOW;
		lay->t_size[t] = one;
	}
	lay->attn_bytes = off;
	lay->expert_base = llm_align(off, LLM_MOE_ALIGN);
	if (llm_add_f32(&ex, 3, H, D, NULL))
		return -EOVERFLOW;
	lay->expert_bytes = ex;
	lay->expert_stride = llm_align(ex, LLM_MOE_ALIGN);
	if (__builtin_mul_overflow(E, lay->expert_stride, &one) ||
	    __builtin_add_overflow(lay->expert_base, one, &lay->layer_stride) ||
	    __builtin_mul_overflow(lay->layer_stride, (uint64_t)c->n_layers, &one) ||
	    __builtin_add_overflow(lay->layer_base, one, &lay->file_size))
		return -EOVERFLOW;
	lay->w_hot_bytes = (uint64_t)c->n_layers * (lay->attn_bytes + (uint64_t)c->top_k * ex) +
			   D * 4 + (uint64_t)c->vocab * D * 4;
	return 0;
}

int llm_parse_header(const void *hdr, size_t hdr_len, uint64_t file_size, struct llm_config *cfg,
		     struct llm_layout *lay, char *err, size_t errlen)
{
	const unsigned char *p = hdr;
	int32_t f[7];
	int moe, q8, rc;

	memset(cfg, 0, sizeof(*cfg));
	memset(lay, 0, sizeof(*lay));
	if (hdr_len < LLM_V0_HEADER || file_size < LLM_V0_HEADER)
		return llm_fail(err, errlen, "file too short for a checkpoint header (%llu bytes)",
				(unsigned long long)file_size);
	q8 = (uint32_t)llm_rd32(p) == LLM_Q8_MAGIC;
	moe = (uint32_t)llm_rd32(p) == LLM_MOE_MAGIC;
	if (q8) {
		if (hdr_len < LLM_Q8_HEADER || file_size < LLM_Q8_HEADER)
			return llm_fail(err, errlen,
					"int8 checkpoint shorter than its %d-byte header",
					LLM_Q8_HEADER);
		if (llm_rd32(p + 4) != 2)
			return llm_fail(
				err, errlen,
				"llama2.c checkpoint version %d is not supported (versions 0 and 2 are)",
				llm_rd32(p + 4));
		p += 8;
	} else if (moe) {
		if (hdr_len < LLM_MOE_HEADER || file_size < LLM_MOE_HEADER)
			return llm_fail(err, errlen,
					"MoE checkpoint shorter than its %d-byte header",
					LLM_MOE_HEADER);
		if (llm_rd32(p + 4) != LLM_MOE_VERSION)
			return llm_fail(err, errlen, "MoE checkpoint version %d, expected %d",
					llm_rd32(p + 4), LLM_MOE_VERSION);
		p += 8;
	}
	for (int i = 0; i < 7; i++)
		f[i] = llm_rd32(p + 4 * i);
	rc = llm_check_dims(f, cfg, err, errlen);
	if (rc)
		return rc;
	if (q8) {
		const unsigned char *h = hdr;

		if (f[5] < 0)
			return llm_fail(err, errlen,
					"bad header: negative vocab_size in an int8 checkpoint");
		if (h[36] > 1)
			return llm_fail(err, errlen, "bad header: shared_classifier = %d", h[36]);
		cfg->shared_cls = h[36];
		cfg->group_size = llm_rd32(h + 37);
		/* Scales must stay 4-byte aligned, and rows must be whole groups. */
		if (cfg->group_size < 4 || cfg->group_size % 4 || cfg->dim % cfg->group_size ||
		    cfg->hidden % cfg->group_size)
			return llm_fail(
				err, errlen,
				"bad header: group_size %d must be a multiple of 4 dividing dim %d and hidden_dim %d",
				cfg->group_size, cfg->dim, cfg->hidden);
		for (int i = 41; i < LLM_Q8_HEADER; i++)
			if (h[i])
				return llm_fail(err, errlen,
						"bad header: reserved byte %d is not zero", i);
		rc = llm_layout_q8(cfg, lay);
	} else if (moe) {
		cfg->n_experts = llm_rd32(p + 28);
		cfg->top_k = llm_rd32(p + 32);
		if (cfg->n_experts < 1 || cfg->n_experts > LLM_MAX_EXPERTS)
			return llm_fail(err, errlen, "bad header: n_experts = %d (1..%d)",
					cfg->n_experts, LLM_MAX_EXPERTS);
		if (cfg->top_k < 1 || cfg->top_k > cfg->n_experts)
			return llm_fail(err, errlen, "bad header: top_k = %d with %d experts",
					cfg->top_k, cfg->n_experts);
		for (int i = 44; i < LLM_MOE_HEADER; i++)
			if (((const unsigned char *)hdr)[i])
				return llm_fail(err, errlen,
						"bad header: reserved byte %d is not zero", i);
		rc = llm_layout_moe(cfg, lay);
	} else {
		rc = llm_layout_v0(cfg, lay);
	}
	if (rc)
		return llm_fail(err, errlen, "bad header: tensor sizes overflow");
	if (lay->file_size != file_size)
		return llm_fail(
			err, errlen,
			"checkpoint is %llu bytes but its header (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d, seq %d%s) describes %llu",
			(unsigned long long)file_size, cfg->dim, cfg->hidden, cfg->n_layers,
			cfg->n_heads, cfg->n_kv_heads, cfg->vocab, cfg->seq_len,
			moe  ? ", MoE"
			: q8 ? ", int8"
			     : "",
			(unsigned long long)lay->file_size);
	return 0;
}
