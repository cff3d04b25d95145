/*
 * Internal interface of the ethermem inference engine (libemllm).
 *
 * The engine runs Llama-2-architecture models, dense (llama2.c version 0
 * fp32 and version 2 int8 checkpoints) and mixture-of-experts (our own
 * format, described at the top of llm_model.c), with one forward pass for
 * every place the weights can live.  The forward pass never touches a file
 * or a pool: it asks a weight source (struct llm_src) for "rows r0..r1 of
 * matrix g of layer l" or "experts {a,b} of layer l" and gets pointers back.
 * Sources that hold the whole checkpoint at one address (read into RAM,
 * mmap, a transparently mapped pool region) hand out pointers into it; the
 * streaming source fetches byte ranges through a small asynchronous fetcher
 * interface (struct llm_fetcher) into a bounded local budget, fetching the
 * next piece while the current one computes.  Because every source
 * feeds the same arithmetic in the same order, every backend produces
 * bit-identical logits and therefore identical token ids.
 *
 * Not installed and not part of the public API: the benchmark harness and the
 * CLIs in this directory are its only users.  Functions return 0 or -errno.
 */
#ifndef ETHERMEM_LLM_H
#define ETHERMEM_LLM_H

#include <stddef.h>
#include <stdint.h>

/* ---- checkpoint description (llm_model.c) ------------------------------ */

enum llm_format {
	LLM_FMT_V0 = 0,  /* llama2.c version 0, fp32, tensors grouped by type */
	LLM_FMT_MOE = 1, /* ours: fp32, per-layer contiguous, experts contiguous */
	LLM_FMT_Q8 = 2,  /* llama2.c version 2: int8 groups + fp32 scales, dense */
};

/* Per-layer tensors, in the order the MoE format stores them. */
enum llm_tensor {
	LLM_T_RMS_ATT,
	LLM_T_WQ,
	LLM_T_WK,
	LLM_T_WV,
	LLM_T_WO,
	LLM_T_RMS_FFN,
	LLM_T_ROUTER, /* MoE only */
	LLM_T_W1,     /* dense only: MoE keeps w1/w2/w3 inside each expert */
	LLM_T_W2,
	LLM_T_W3,
	LLM_T_COUNT,
};

struct llm_config {
	int dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len;
	int n_experts, top_k; /* 0 and 0 for dense */
	int shared_cls;       /* classifier is the token embedding */
	int group_size;       /* LLM_FMT_Q8: values per scale; 0 for fp32 */
	int kv_dim, head_size;
};

/* Where every tensor is, as byte offsets into the checkpoint. */
struct llm_layout {
	enum llm_format fmt;
	uint64_t file_size;
	/* For LLM_FMT_Q8 a matrix is its int8 values followed directly by its
	 * fp32 group scales, and t_size counts both; tok_emb and wcls point at
	 * the int8 values. */
	uint64_t tok_emb, rms_final, wcls;
	uint64_t t_size[LLM_T_COUNT]; /* bytes of one layer's tensor, 0 if absent */
	/* v0: tensor t of layer l is at t_base[t] + l * t_size[t].
	 * MoE: at layer_base + l * layer_stride + t_base[t]. */
	uint64_t t_base[LLM_T_COUNT];
	uint64_t layer_base, layer_stride;
	uint64_t attn_bytes;    /* MoE: the non-expert prefix of a layer */
	uint64_t expert_base;   /* MoE: first expert, relative to its layer */
	uint64_t expert_stride; /* MoE: page-aligned expert footprint */
	uint64_t expert_bytes;  /* MoE: w1+w2+w3 of one expert, unpadded */
	uint64_t w_hot_bytes;   /* bytes one token reads (all experts for dense;
				 * top-k experts for MoE), for reports */
};

#define LLM_MOE_MAGIC 0x454f4d45u /* "EMOE" little-endian */
#define LLM_MOE_VERSION 1
#define LLM_MOE_HEADER 256
#define LLM_MOE_ALIGN 4096
#define LLM_V0_HEADER 28
#define LLM_Q8_MAGIC 0x616b3432u /* "ak42" */
#define LLM_Q8_HEADER 256
#define LLM_MAX_EXPERTS 256

/* Parse and validate a header against the checkpoint's real length; never
 * trusts a field, overflow-checks every product.  `hdr` holds the first
 * min(len, LLM_MOE_HEADER) bytes.  On failure writes a reason to err. */
int llm_parse_header(const void *hdr, size_t hdr_len, uint64_t file_size, struct llm_config *cfg,
		     struct llm_layout *lay, char *err, size_t errlen);

/* ---- asynchronous fetch interface (llm_fetch.c implements a file one) --- */

/*
 * The streaming source's only way to the bytes.  submit() starts copying
 * [off, off+len) of the checkpoint into dst and returns at once; wait()
 * blocks until the request with that tag has landed.  Tags are unique per
 * in-flight request; every submitted tag is waited exactly once.  Both return
 * 0 or -errno.  A pool fetcher does the same with em_submit/em_wait on a
 * region holding the checkpoint bytes at the same offsets.
 */
struct llm_fetcher_ops {
	int (*submit)(void *ctx, uint64_t off, void *dst, size_t len, uint64_t tag);
	int (*wait)(void *ctx, uint64_t tag);
	void (*close)(void *ctx);
};

struct llm_fetcher {
	const struct llm_fetcher_ops *ops;
	void *ctx;
	uint64_t size; /* bytes of checkpoint behind it */
};

/* pread() from `path` on `nthreads` worker threads. */
int llm_fetcher_file_open(const char *path, int nthreads, struct llm_fetcher *out);

/* ---- pool seam --------------------------------------------------------- */

/*
 * How the CLI reaches pool memory without this directory depending on
 * libethermem.  llm_pool_none.c sets llm_pool_backend to NULL; a build with
 * pool support swaps in a file that points it at a real table.
 *  map():          make the checkpoint named `model` visible at *base
 *                  (em_map of a region holding the file's bytes) with a
 *                  local cache of local_mem bytes (0: ETHERMEM_MAP_CACHE, else
 *                  the whole model); *cookie is handed back to unmap().
 *  open_fetcher(): a fetcher whose submit/wait read that region
 *                  (em_submit/em_wait), for --weights stream --stream-from pool.
 *  stats():        optional; bytes fetched and faults taken so far by the
 *                  mapping behind cookie (em_map_stats), for per-token reports.
 * All return 0 or -errno.
 */
struct llm_kvio;
struct llm_pool_ops {
	const char *name;
	int (*map)(const char *model, uint64_t local_mem, void **base, size_t *len, void **cookie);
	void (*unmap)(void *cookie);
	int (*open_fetcher)(const char *model, struct llm_fetcher *out);
	int (*stats)(void *cookie, uint64_t *bytes, uint64_t *faults);
	/* The KV cache's pool part: a private region of `bytes` (llm_kvio). */
	int (*open_kv)(uint64_t bytes, struct llm_kvio *out);
	/* The prefix store (a kvstore.h store): connect once, early; open by
	 * name, creating it with this geometry if absent (-EMSGSIZE if it
	 * exists with smaller values); get/put as em_kv_get_batch/em_kv_put
	 * with 128-bit keys; close both. */
	int (*store_connect)(void **conn);
	int (*store_open)(void *conn, const char *name, uint64_t capacity, uint32_t value_max,
			  void **store);
	int (*store_get)(void *store, unsigned n, const uint64_t (*keys)[2], void *const *bufs,
			 size_t cap, int *res);
	int (*store_put)(void *store, const uint64_t *key, const void *buf, size_t len);
	void (*store_close)(void *store, void *conn);
};
extern const struct llm_pool_ops *const llm_pool_backend;

/* ---- weight sources (llm_source.c) ------------------------------------- */

/* One part of a group: rows [r0, r1) of the group's matrix (fp32 rows, or
 * int8 rows directly followed by their scales), and on part 0 the group's
 * norm vector, if it has one. */
struct llm_part {
	const float *vec;
	const void *mat;
	int r0, r1;
};

struct llm_expert_w {
	const float *w1, *w2, *w3;
};

struct llm_src_stats {
	uint64_t bytes_fetched; /* from the backing source, after open */
	uint64_t fetches;
	uint64_t expert_hits, expert_misses;
	double stall_ms; /* time spent waiting for fetches */
	double *cold_ms; /* one per expert miss (stream) */
	size_t n_cold, cap_cold;
	uint64_t pinned_bytes, staging_bytes, cache_bytes;
	int cache_slots;
};

/*
 * The forward pass walks each layer as a fixed sequence of groups, each a
 * matrix with an optional norm vector used just before it
 * (llm_group_tensors()), then the classifier as group 0 of "layer
 * n_layers", then the next token's layer 0 again.  A group comes in one or
 * more parts, slices of whole rows, so that a source can move a matrix in
 * pieces of bounded size; a matmul done part by part computes every row
 * exactly as a whole one does.  A source may recycle memory between calls:
 * a part's pointers stay valid only until the next part() call.  That
 * contract is what lets the streaming source double-buffer a few MiB at a
 * time instead of holding whole layers.
 */
#define LLM_GROUPS_DENSE 7 /* {rms_att,wq} {wk} {wv} {wo} {rms_ffn,w1} {w3} {w2} */
#define LLM_GROUPS_MOE 5   /* {rms_att,wq} {wk} {wv} {wo} {rms_ffn,router} */

struct llm_src;
struct llm_src_ops {
	int (*embed)(struct llm_src *s, int token, float *out);
	/* Part p of group g of layer l (l == n_layers: the classifier, g 0). */
	int (*part)(struct llm_src *s, int l, int g, int p, struct llm_part *out);
	/* Blocks until the k experts `ids` of layer l are addressable; those
	 * pointers stay valid until the next experts() call. */
	int (*experts)(struct llm_src *s, int l, const int *ids, int k, struct llm_expert_w *w);
	void (*close)(struct llm_src *s);
};

struct llm_src {
	const struct llm_src_ops *ops;
	struct llm_config cfg;
	struct llm_layout lay;
	struct llm_src_stats st;
	int n_groups;
};

/* Norm vector (-1 if none) and matrix tensor of group g of a layer (the
 * classifier group is rms_final and wcls, located by llm_layout). */
void llm_group_tensors(enum llm_format fmt, int g, int *vec, int *mat);
/* Rows and columns of a matrix tensor. */
void llm_tensor_shape(const struct llm_config *c, int t, int *rows, int *cols);

/* The whole checkpoint at base (RAM, mmap, mapped pool region).  release()
 * is called on close, with cookie, to give the memory back; may be NULL. */
int llm_weights_from_pointer(const void *base, size_t len, void (*release)(void *cookie),
			     void *cookie, struct llm_src **out, char *err, size_t errlen);
int llm_weights_local(const char *path, struct llm_src **out, char *err, size_t errlen);
int llm_weights_mmap(const char *path, struct llm_src **out, char *err, size_t errlen);
/* Streams through f (taken over: closed with the source) within budget bytes
 * of local memory for staging buffers, pinned weights and the expert cache,
 * moving matrices in parts of at most chunk bytes (0: LLM_STREAM_CHUNK, or
 * the largest layer matrix if smaller);
 * -ENOBUFS when the budget is below what streaming this model needs. */
#define LLM_STREAM_CHUNK (8u << 20)
int llm_weights_stream(struct llm_fetcher *f, uint64_t budget, uint64_t chunk, struct llm_src **out,
		       char *err, size_t errlen);
void llm_src_close(struct llm_src *s);

/* ---- math (llm_math.c) ------------------------------------------------- */

int llm_threads_init(int n);
void llm_threads_fini(void);
void llm_matmul(float *out, const float *x, const float *w, int n, int d);
/* Quantized weights: w is d*n int8 values then d*n/gs fp32 scales; x comes
 * pre-quantized (llm_quantize) in groups of gs. */
void llm_matmul_q8(float *out, const int8_t *xq, const float *xs, const void *w, int n, int d,
		   int gs);
void llm_quantize(int8_t *q, float *s, const float *x, int n, int gs);
/* n values from int8 q and their n/gs scales s (q starts a group). */
void llm_dequant(float *out, const int8_t *q, const float *s, int n, int gs);
void llm_rmsnorm(float *o, const float *x, const float *w, int n);
void llm_softmax(float *x, int n);

/* ---- engine (llm_engine.c) --------------------------------------------- */

enum llm_router_mode { LLM_ROUTER_MODEL, LLM_ROUTER_UNIFORM, LLM_ROUTER_ZIPF };

struct llm_router {
	enum llm_router_mode mode;
	double zipf_s;
	uint64_t seed;
};

/*
 * Where the KV cache lives.  By default every block is local.  A pool
 * backing is a byte range reached through llm_kvio: submit() starts a read
 * (write 0) or a write (write 1) of [off, off+len) and returns at once;
 * wait() blocks until the request with that tag is done; both 0 or -errno;
 * every submitted tag is waited once; close() drains or abandons what is in
 * flight before the engine frees the buffers.
 */
#define LLM_KV_BLOCK 16 /* positions per block */
#define LLM_KV_RING 8   /* stream items in flight ahead of attention */
#define LLM_KV_CHUNK 16 /* most half blocks in one stream item */

struct llm_kvio_ops {
	int (*submit)(void *ctx, int write, uint64_t off, void *buf, size_t len, uint64_t tag);
	int (*wait)(void *ctx, uint64_t tag);
	void (*close)(void *ctx);
};

struct llm_kvio {
	const struct llm_kvio_ops *ops;
	void *ctx;
};

struct llm_kv_stats {
	uint64_t local_bytes, pool_bytes;   /* budget used locally, region size */
	uint64_t bytes_read, bytes_written; /* to and from the pool */
	double stall_ms;                    /* waiting for the pool */
	int blocks, local_blocks;           /* per layer */
};

struct llm_engine;
int llm_engine_create(struct llm_src *src, int max_steps, const struct llm_router *router,
		      struct llm_engine **out);
void llm_engine_destroy(struct llm_engine *e);
/* One forward pass of `token` at `pos`; returns the logits (vocab floats,
 * owned by the engine) through *logits. */
int llm_forward(struct llm_engine *e, int token, int pos, float **logits);

/* Before the first forward pass: keep at most local_bytes of KV cache
 * locally and the rest in the pool, through the llm_kvio that open() makes
 * for a range of the bytes asked (taken over: closed with the engine; not
 * called when everything fits locally).  -ENOBUFS below llm_engine_kv_min(). */
int llm_engine_kv_pool(struct llm_engine *e, uint64_t local_bytes,
		       int (*open)(uint64_t bytes, struct llm_kvio *io));
uint64_t llm_engine_kv_min(struct llm_engine *e);
/* Positions per block and bytes of one block over all layers (layer by
 * layer, keys then values): the unit that export/import move. */
int llm_engine_kv_block(struct llm_engine *e, int *positions, size_t *bytes);
/* Block j of every layer, out of or into the cache (for prefix reuse: a
 * block imported is as if its positions had been computed). */
int llm_engine_kv_export(struct llm_engine *e, int j, void *buf);
int llm_engine_kv_import(struct llm_engine *e, int j, const void *buf);
void llm_engine_kv_stats(const struct llm_engine *e, struct llm_kv_stats *st);

/* ---- prompt prefix reuse through a block store (llm_prefix.c) ---------- */

struct llm_prefix_stats {
	int hit_tokens;         /* positions fetched instead of computed */
	int published, present; /* blocks stored / already there */
	int rejected;           /* fetched blocks failing verification */
	int errors;             /* store errors (each one meant recomputing) */
	uint64_t bytes;         /* fetched and used */
	double fetch_ms, publish_ms;
};

struct llm_prefix;
/* Through ops (the pool seam): connect early, then open once the first
 * position's logits exist (they identify the model).  Failing either, the
 * engine simply runs without reuse (the caller closes conn with
 * ops->store_close(NULL, conn)). */
int llm_prefix_connect(const struct llm_pool_ops *ops, void **conn);
int llm_prefix_open(const struct llm_pool_ops *ops, void *conn, struct llm_engine *e,
		    const struct llm_config *c, const float *logits0, const char *name,
		    uint64_t capacity, struct llm_prefix **out);
/* Installs the longest verified prefix of tokens[0..n_prompt-1) found in
 * the store; returns the positions it covers (0 on any trouble). */
int llm_prefix_fetch(struct llm_prefix *p, const int *tokens, int n_prompt);
/* Publishes block j (just computed, all of it prompt). */
void llm_prefix_publish(struct llm_prefix *p, const int *tokens, int j);
void llm_prefix_stats(const struct llm_prefix *p, struct llm_prefix_stats *st);
void llm_prefix_close(struct llm_prefix *p);

uint64_t llm_rng_next(uint64_t *state);
int llm_sample(const float *logits, int n, float temperature, uint64_t *rng, float *scratch);

int llm_parse_size(const char *s, uint64_t *out);
double llm_now_ms(void);

#endif
