/*
 * Prompt prefix reuse across processes: the KV cache of a prompt's full
 * blocks is published to a block store in the pool when the prefill
 * computes it, and a later request whose prompt starts the same way, in any
 * process on any server, fetches those blocks instead of recomputing them.
 *
 * A block's key chains the model, the block's tokens and the previous
 * block's key (as vLLM's prefix caching does), so one lookup per block
 * finds the longest shared prefix and a block never matches out of its
 * context.  The model's identity is a hash of its configuration and of the
 * logits of the first position (BOS at position 0, which every prompt
 * starts with and which is computed anyway): those logits depend on every
 * weight, so two checkpoints that differ anywhere, or a fp32 and an int8
 * version of one, never share blocks.
 *
 * Every fetched block is verified before it is used: the store checks the
 * bytes against the checksum kept with them, and the block's own header
 * must name this model, this position, the expected previous key and these
 * exact tokens.  A block that fails, a miss, or any error of the store ends
 * the reuse at that block; the rest is computed.  Nothing here can fail
 * generation: store errors are counted and reported, never returned.
 *
 * Block payload: a 64-byte-aligned header (magic, model, previous key,
 * positions, layers, kv_dim, index, then the token ids) and the block as
 * llm_engine_kv_export() lays it out.
 */
#include "llm/llm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LLM_PFX_MAGIC 0x314b4c4250584650ull /* "PFXPBLK1" */
#define LLM_PFX_WINDOW 8                    /* blocks fetched per round */

struct llm_pfx_hdr {
	uint64_t magic, model, prev[2];
	uint32_t positions, layers, kv_dim, index;
};

struct llm_prefix {
	const struct llm_pool_ops *ops;
	struct llm_engine *e;
	void *conn, *store;
	uint64_t model;
	int B, layers, kv_dim;
	size_t blk, hdr, len;
	unsigned char *buf;  /* LLM_PFX_WINDOW payloads */
	uint64_t (*keys)[2]; /* key of block j, for every block computed */
	int nkeys;
	struct llm_prefix_stats st;
	int warned;
};

static uint64_t llm_pfx_mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* 128 bits over 32-bit words: two lanes seeded apart, each word mixed in. */
static void llm_pfx_hash(const uint32_t *w, size_t n, uint64_t seed, uint64_t out[2])
{
	uint64_t a = llm_pfx_mix(seed), b = llm_pfx_mix(seed ^ 0x5851f42d4c957f2dull);

	for (size_t i = 0; i < n; i++) {
		a = llm_pfx_mix(a ^ w[i]);
		b = llm_pfx_mix(b + w[i] * 0xd6e8feb86659fd93ull);
	}
	out[0] = llm_pfx_mix(a ^ n);
	out[1] = llm_pfx_mix(b ^ a);
}

static void llm_pfx_note(struct llm_prefix *p, const char *what, int rc)
{
	if (!p->warned++)
		fprintf(stderr, "ethermem-llm: prefix store: %s: %s (recomputing instead)\n", what,
			strerror(rc < 0 ? -rc : rc));
	p->st.errors++;
}

int llm_prefix_connect(const struct llm_pool_ops *ops, void **conn)
{
	if (!ops || !ops->store_connect)
		return -ENOSYS;
	return ops->store_connect(conn);
}

int llm_prefix_open(const struct llm_pool_ops *ops, void *conn, struct llm_engine *e,
		    const struct llm_config *c, const float *logits0, const char *name,
		    uint64_t capacity, struct llm_prefix **out)
{
	struct llm_prefix *p = calloc(1, sizeof(*p));
	uint32_t cw[8] = { (uint32_t)c->dim,       (uint32_t)c->hidden,     (uint32_t)c->n_layers,
			   (uint32_t)c->n_heads,   (uint32_t)c->n_kv_heads, (uint32_t)c->vocab,
			   (uint32_t)c->n_experts, (uint32_t)c->group_size };
	uint64_t h[2], h2[2];
	char def[64];
	int rc;

	if (!p)
		return -ENOMEM;
	p->ops = ops;
	p->e = e;
	p->conn = conn;
	p->layers = c->n_layers;
	p->kv_dim = c->kv_dim;
	if ((rc = llm_engine_kv_block(e, &p->B, &p->blk)))
		goto fail;
	llm_pfx_hash(cw, 8, 0x6d6f64656c, h);
	llm_pfx_hash((const uint32_t *)(const void *)logits0, (size_t)c->vocab, h[0], h2);
	p->model = h2[0] ^ h[1];
	p->hdr = (sizeof(struct llm_pfx_hdr) + (size_t)p->B * 4 + 63) & ~(size_t)63;
	p->len = p->hdr + p->blk;
	if (p->len > UINT32_MAX) {
		rc = -EMSGSIZE;
		goto fail;
	}
	p->buf = malloc(p->len * LLM_PFX_WINDOW);
	if (!p->buf) {
		rc = -ENOMEM;
		goto fail;
	}
	if (!name || !*name) {
		/* One store per model by default, so that its slot size is
		 * this model's block and other models never evict ours. */
		snprintf(def, sizeof(def), "llmkv-%016llx", (unsigned long long)p->model);
		name = def;
	}
	rc = ops->store_open(conn, name, capacity, (uint32_t)p->len, &p->store);
	if (rc)
		goto fail;
	*out = p;
	return 0;
fail:
	free(p->buf);
	free(p);
	return rc;
}

/* Keys of blocks [0, upto) of tokens, kept for publishing later. */
static int llm_pfx_keys(struct llm_prefix *p, const int *tokens, int upto)
{
	if (upto > p->nkeys) {
		uint64_t(*k)[2] = realloc(p->keys, (size_t)upto * sizeof(*k));

		if (!k)
			return -ENOMEM;
		p->keys = k;
		for (int j = p->nkeys; j < upto; j++) {
			uint32_t w[4 + LLM_KV_BLOCK];
			uint64_t prev0 = j ? p->keys[j - 1][0] : p->model;
			uint64_t prev1 = j ? p->keys[j - 1][1] : 0;

			w[0] = (uint32_t)prev0;
			w[1] = (uint32_t)(prev0 >> 32);
			w[2] = (uint32_t)prev1;
			w[3] = (uint32_t)(prev1 >> 32);
			for (int i = 0; i < p->B; i++)
				w[4 + i] = (uint32_t)tokens[j * p->B + i];
			llm_pfx_hash(w, 4 + (size_t)p->B, p->model, p->keys[j]);
		}
		p->nkeys = upto;
	}
	return 0;
}

static void llm_pfx_header(const struct llm_prefix *p, int j, const int *tokens, void *buf)
{
	struct llm_pfx_hdr h = { .magic = LLM_PFX_MAGIC,
				 .model = p->model,
				 .positions = (uint32_t)p->B,
				 .layers = (uint32_t)p->layers,
				 .kv_dim = (uint32_t)p->kv_dim,
				 .index = (uint32_t)j };

	if (j) {
		h.prev[0] = p->keys[j - 1][0];
		h.prev[1] = p->keys[j - 1][1];
	} else {
		h.prev[0] = p->model;
	}
	memset(buf, 0, p->hdr);
	memcpy(buf, &h, sizeof(h));
	for (int i = 0; i < p->B; i++) {
		int32_t t = tokens[j * p->B + i];

		memcpy((char *)buf + sizeof(h) + (size_t)i * 4, &t, 4);
	}
}

int llm_prefix_fetch(struct llm_prefix *p, const int *tokens, int n_prompt)
{
	/* The last prompt position is always computed: its logits give the
	 * first token. */
	int want = (n_prompt - 1) / p->B, have = 0;
	unsigned char *expect = NULL;
	double t0 = llm_now_ms();

	/* Keys are kept from the last prompt: another request in this
	 * process may bring other tokens. */
	p->nkeys = 0;
	p->st.hit_tokens = 0;
	if (want <= 0)
		return 0;
	if (llm_pfx_keys(p, tokens, want)) {
		llm_pfx_note(p, "keys", -ENOMEM);
		return 0;
	}
	expect = malloc(p->hdr);
	if (!expect)
		return 0;
	while (have < want) {
		int n = want - have < LLM_PFX_WINDOW ? want - have : LLM_PFX_WINDOW;
		int res[LLM_PFX_WINDOW], rc, ok = 0;
		void *bufs[LLM_PFX_WINDOW];

		for (int i = 0; i < n; i++)
			bufs[i] = p->buf + (size_t)i * p->len;
		rc = p->ops->store_get(p->store, (unsigned)n, (const uint64_t(*)[2])p->keys + have,
				       bufs, p->len, res);
		if (rc) {
			llm_pfx_note(p, "fetching blocks", rc);
			break;
		}
		for (int i = 0; i < n; i++, ok++) {
			int j = have + i;

			if (res[i] == -ENOENT)
				break;
			if (res[i] < 0 || (size_t)res[i] != p->len) {
				p->st.rejected++; /* corrupt, or not a block of ours */
				break;
			}
			llm_pfx_header(p, j, tokens, expect);
			if (memcmp(expect, bufs[i], p->hdr)) {
				p->st.rejected++;
				break;
			}
			rc = llm_engine_kv_import(p->e, j, (char *)bufs[i] + p->hdr);
			if (rc) {
				llm_pfx_note(p, "installing a block", rc);
				break;
			}
			p->st.bytes += p->len;
		}
		have += ok;
		if (ok < n)
			break;
	}
	free(expect);
	p->st.hit_tokens = have * p->B;
	p->st.fetch_ms += llm_now_ms() - t0;
	return have * p->B;
}

void llm_prefix_publish(struct llm_prefix *p, const int *tokens, int j)
{
	double t0 = llm_now_ms();
	int rc;

	if (llm_pfx_keys(p, tokens, j + 1)) {
		llm_pfx_note(p, "keys", -ENOMEM);
		return;
	}
	llm_pfx_header(p, j, tokens, p->buf);
	rc = llm_engine_kv_export(p->e, j, p->buf + p->hdr);
	if (!rc)
		rc = p->ops->store_put(p->store, p->keys[j], p->buf, p->len);
	if (rc == 0)
		p->st.published++;
	else if (rc == 1)
		p->st.present++;
	else
		llm_pfx_note(p, "publishing a block", rc);
	p->st.publish_ms += llm_now_ms() - t0;
}

void llm_prefix_stats(const struct llm_prefix *p, struct llm_prefix_stats *st)
{
	*st = p->st;
}

void llm_prefix_close(struct llm_prefix *p)
{
	if (!p)
		return;
	p->ops->store_close(p->store, p->conn);
	free(p->keys);
	free(p->buf);
	free(p);
}
