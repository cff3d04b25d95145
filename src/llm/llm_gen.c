/*
 * ethermem-llm-gen: write a checkpoint of any size with seeded random
 * weights, in llama2.c version 0 layout (dense) or the ethermem MoE layout
 * (llm_model.c), for benchmarks that need GiB-scale models no one can
 * download here; or rewrite a version 0 checkpoint as llama2.c's int8
 * version 2, which is how the int8 path is checked against a real model.
 *
 * Weights are uniform in +-1/sqrt(fan_in) (norm weights near 1, embeddings
 * small) so activations stay finite through any depth and greedy decoding
 * produces a varied, reproducible token sequence.  Writing a GiB must take
 * seconds, so values come from xorshift64* into 4 MiB blocks; the file is
 * written under a temporary name and renamed into place only when complete
 * and checked by the same header validation the engine uses.
 */
#include "llm/llm.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define LLM_GEN_BLOCK (4u << 20)
/* Small embeddings: with a shared classifier, a residual stream dominated by
 * the input token's own embedding makes every greedy step repeat that token.
 * Layer outputs (about 0.3 per element) must dominate instead. */
#define LLM_GEN_EMB 0.05f

struct llm_gen_out {
	int fd;
	unsigned char *buf;
	size_t used;
	uint64_t rng, written;
	int err;
};

static void llm_gen_flush(struct llm_gen_out *g)
{
	size_t off = 0;

	while (off < g->used && !g->err) {
		ssize_t n = write(g->fd, g->buf + off, g->used - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			g->err = n < 0 ? errno : EIO;
		else
			off += (size_t)n;
	}
	g->written += g->used;
	g->used = 0;
}

static void llm_gen_bytes(struct llm_gen_out *g, const void *p, size_t n)
{
	while (n) {
		size_t c = LLM_GEN_BLOCK - g->used < n ? LLM_GEN_BLOCK - g->used : n;

		memcpy(g->buf + g->used, p, c);
		g->used += c;
		p = (const unsigned char *)p + c;
		n -= c;
		if (g->used == LLM_GEN_BLOCK)
			llm_gen_flush(g);
	}
}

static void llm_gen_zero(struct llm_gen_out *g, uint64_t n)
{
	while (n) {
		size_t c = LLM_GEN_BLOCK - g->used < n ? LLM_GEN_BLOCK - g->used : (size_t)n;

		memset(g->buf + g->used, 0, c);
		g->used += c;
		n -= c;
		if (g->used == LLM_GEN_BLOCK)
			llm_gen_flush(g);
	}
}

/* n floats: center + uniform(-scale, scale). */
static void llm_gen_rand(struct llm_gen_out *g, uint64_t n, float center, float scale)
{
	while (n) {
		size_t room = (LLM_GEN_BLOCK - g->used) / sizeof(float);
		size_t c = room < n ? room : (size_t)n;
		float *f = (float *)(void *)(g->buf + g->used);

		for (size_t i = 0; i < c; i++) {
			uint64_t r = llm_rng_next(&g->rng);

			f[i] = center + scale * ((float)(r >> 40) * (2.0f / 16777216.0f) - 1.0f);
		}
		g->used += c * sizeof(float);
		n -= c;
		if (g->used == LLM_GEN_BLOCK)
			llm_gen_flush(g);
	}
}

static void llm_gen_align(struct llm_gen_out *g, uint64_t a)
{
	uint64_t at = g->written + g->used;

	llm_gen_zero(g, (at + a - 1) / a * a - at);
}

struct llm_gen_cfg {
	long dim, hidden, layers, heads, kv_heads, vocab, seq, experts, topk;
	int unshared;
};

static void llm_gen_put32(unsigned char *p, int32_t v)
{
	uint32_t u = (uint32_t)v;

	p[0] = (unsigned char)u;
	p[1] = (unsigned char)(u >> 8);
	p[2] = (unsigned char)(u >> 16);
	p[3] = (unsigned char)(u >> 24);
}

static void llm_gen_write(struct llm_gen_out *g, const struct llm_gen_cfg *c)
{
	uint64_t D = (uint64_t)c->dim, H = (uint64_t)c->hidden, L = (uint64_t)c->layers;
	uint64_t KV = D / (uint64_t)c->heads * (uint64_t)c->kv_heads, V = (uint64_t)c->vocab;
	uint64_t E = (uint64_t)c->experts, hs = D / (uint64_t)c->heads;
	float sd = 1.0f / sqrtf((float)D), sh = 1.0f / sqrtf((float)H);
	int32_t f[7] = { (int32_t)D,           (int32_t)H,
			 (int32_t)L,           (int32_t)c->heads,
			 (int32_t)c->kv_heads, (int32_t)(c->unshared ? -(long)V : (long)V),
			 (int32_t)c->seq };
	unsigned char hdr[LLM_MOE_HEADER] = { 0 };

	if (!E) {
		for (int i = 0; i < 7; i++)
			llm_gen_put32(hdr + 4 * i, f[i]);
		llm_gen_bytes(g, hdr, LLM_V0_HEADER);
		llm_gen_rand(g, V * D, 0.0f, LLM_GEN_EMB);
		llm_gen_rand(g, L * D, 1.0f, 0.1f);    /* rms_att */
		llm_gen_rand(g, L * D * D, 0.0f, sd);  /* wq */
		llm_gen_rand(g, L * KV * D, 0.0f, sd); /* wk */
		llm_gen_rand(g, L * KV * D, 0.0f, sd); /* wv */
		llm_gen_rand(g, L * D * D, 0.0f, sd);  /* wo */
		llm_gen_rand(g, L * D, 1.0f, 0.1f);    /* rms_ffn */
		llm_gen_rand(g, L * H * D, 0.0f, sd);  /* w1 */
		llm_gen_rand(g, L * D * H, 0.0f, sh);  /* w2 */
		llm_gen_rand(g, L * H * D, 0.0f, sd);  /* w3 */
		llm_gen_rand(g, D, 1.0f, 0.1f);        /* rms_final */
		/* The RoPE table llama2.c exports and never reads: real, imag. */
		for (int part = 0; part < 2; part++)
			for (uint64_t p = 0; p < (uint64_t)c->seq; p++)
				for (uint64_t i = 0; i < hs / 2; i++) {
					float fr =
						1.0f / powf(10000.0f, (float)(2 * i) / (float)hs);
					float v = part ? sinf((float)p * fr) : cosf((float)p * fr);

					llm_gen_bytes(g, &v, sizeof(v));
				}
		if (c->unshared)
			llm_gen_rand(g, V * D, 0.0f, sd);
		return;
	}
	llm_gen_put32(hdr, (int32_t)LLM_MOE_MAGIC);
	llm_gen_put32(hdr + 4, LLM_MOE_VERSION);
	for (int i = 0; i < 7; i++)
		llm_gen_put32(hdr + 8 + 4 * i, f[i]);
	llm_gen_put32(hdr + 36, (int32_t)E);
	llm_gen_put32(hdr + 40, (int32_t)c->topk);
	llm_gen_bytes(g, hdr, LLM_MOE_HEADER);
	llm_gen_rand(g, V * D, 0.0f, LLM_GEN_EMB);
	llm_gen_rand(g, D, 1.0f, 0.1f);
	if (c->unshared)
		llm_gen_rand(g, V * D, 0.0f, sd);
	llm_gen_align(g, LLM_MOE_ALIGN);
	for (uint64_t l = 0; l < L; l++) {
		llm_gen_rand(g, D, 1.0f, 0.1f);
		llm_gen_rand(g, D * D, 0.0f, sd);
		llm_gen_rand(g, KV * D, 0.0f, sd);
		llm_gen_rand(g, KV * D, 0.0f, sd);
		llm_gen_rand(g, D * D, 0.0f, sd);
		llm_gen_rand(g, D, 1.0f, 0.1f);
		llm_gen_rand(g, E * D, 0.0f, sd); /* router */
		llm_gen_align(g, LLM_MOE_ALIGN);
		for (uint64_t e = 0; e < E; e++) {
			llm_gen_rand(g, H * D, 0.0f, sd);
			llm_gen_rand(g, D * H, 0.0f, sh);
			llm_gen_rand(g, H * D, 0.0f, sd);
			llm_gen_align(g, LLM_MOE_ALIGN);
		}
	}
}

/* A quantized matrix of n floats: int8 values, then one scale per group. */
static int llm_gen_q8(struct llm_gen_out *g, const float *w, uint64_t n, int gs)
{
	float *sc = malloc(n / (uint64_t)gs * sizeof(float));
	int8_t q[4096];

	if (!sc)
		return -ENOMEM;
	/* Bounce-buffer chunks of whole groups. */
	for (uint64_t at = 0; at < n;) {
		uint64_t c = (sizeof(q) / (uint64_t)gs) * (uint64_t)gs;

		if (c == 0)
			c = (uint64_t)gs;
		if (c > n - at)
			c = n - at;
		if (c > sizeof(q)) {
			/* One group larger than the bounce buffer: do it alone. */
			int8_t *big = malloc(c);

			if (!big) {
				free(sc);
				return -ENOMEM;
			}
			llm_quantize(big, sc + at / (uint64_t)gs, w + at, (int)c, gs);
			llm_gen_bytes(g, big, c);
			free(big);
		} else {
			llm_quantize(q, sc + at / (uint64_t)gs, w + at, (int)c, gs);
			llm_gen_bytes(g, q, c);
		}
		at += c;
	}
	llm_gen_bytes(g, sc, n / (uint64_t)gs * sizeof(float));
	free(sc);
	return 0;
}

/* Rewrite a version 0 checkpoint as llama2.c version 2 (int8, group size gs),
 * the layout llama2.c's export.py writes. */
static int llm_gen_quantize(struct llm_gen_out *g, const char *path, int gs, char *err,
			    size_t errlen)
{
	static const enum llm_tensor order[] = { LLM_T_WQ, LLM_T_WK, LLM_T_WV, LLM_T_WO,
						 LLM_T_W1, LLM_T_W2, LLM_T_W3 };
	unsigned char hdr[LLM_Q8_HEADER] = { 0 };
	const unsigned char *b;
	struct llm_config cfg, *c = &cfg;
	struct llm_layout layout, *lay = &layout;
	struct stat sb;
	uint64_t L, D;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -EIO;
	}
	b = sb.st_size > 0 ? mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0)
			   : MAP_FAILED;
	close(fd);
	if (b == MAP_FAILED) {
		snprintf(err, errlen, "cannot map %s", path);
		return -EIO;
	}
	rc = llm_parse_header(
		b, (size_t)sb.st_size < LLM_MOE_HEADER ? (size_t)sb.st_size : LLM_MOE_HEADER,
		(uint64_t)sb.st_size, c, lay, err, errlen);
	if (!rc && lay->fmt != LLM_FMT_V0) {
		snprintf(err, errlen, "%s is not a version 0 (fp32 dense) checkpoint", path);
		rc = -EINVAL;
	}
	if (!rc && (gs < 4 || gs % 4 || c->dim % gs || c->hidden % gs)) {
		snprintf(err, errlen,
			 "--group-size %d must be a multiple of 4 dividing dim %d and hidden %d",
			 gs, c->dim, c->hidden);
		rc = -EINVAL;
	}
	if (rc) {
		munmap((void *)b, (size_t)sb.st_size);
		return rc;
	}
	L = (uint64_t)c->n_layers;
	D = (uint64_t)c->dim;
	llm_gen_put32(hdr, (int32_t)LLM_Q8_MAGIC);
	llm_gen_put32(hdr + 4, 2);
	llm_gen_put32(hdr + 8, c->dim);
	llm_gen_put32(hdr + 12, c->hidden);
	llm_gen_put32(hdr + 16, c->n_layers);
	llm_gen_put32(hdr + 20, c->n_heads);
	llm_gen_put32(hdr + 24, c->n_kv_heads);
	llm_gen_put32(hdr + 28, c->vocab);
	llm_gen_put32(hdr + 32, c->seq_len);
	hdr[36] = (unsigned char)c->shared_cls;
	llm_gen_put32(hdr + 37, gs);
	llm_gen_bytes(g, hdr, sizeof(hdr));
	llm_gen_bytes(g, b + lay->t_base[LLM_T_RMS_ATT], L * D * 4);
	llm_gen_bytes(g, b + lay->t_base[LLM_T_RMS_FFN], L * D * 4);
	llm_gen_bytes(g, b + lay->rms_final, D * 4);
	rc = llm_gen_q8(g, (const float *)(const void *)(b + lay->tok_emb), (uint64_t)c->vocab * D,
			gs);
	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]) && !rc; i++)
		for (uint64_t l = 0; l < L && !rc; l++)
			rc = llm_gen_q8(g,
					(const float *)(const void *)(b + lay->t_base[order[i]] +
								      l * lay->t_size[order[i]]),
					lay->t_size[order[i]] / 4, gs);
	if (!rc && !c->shared_cls)
		rc = llm_gen_q8(g, (const float *)(const void *)(b + lay->wcls),
				(uint64_t)c->vocab * D, gs);
	if (rc)
		snprintf(err, errlen, "out of memory quantizing");
	munmap((void *)b, (size_t)sb.st_size);
	return rc;
}

/* Rough bytes of a model with these dims, for --size. */
static double llm_gen_estimate(const struct llm_gen_cfg *c)
{
	double D = (double)c->dim, H = (double)c->hidden, V = (double)c->vocab;
	double attn = 4.0 * D * D * 4 + 2.0 * D * 4, layer;

	if (c->experts)
		layer = attn + c->experts * D * 4 + c->experts * (3.0 * D * H * 4 + 4096);
	else
		layer = attn + 3.0 * D * H * 4;
	return V * D * 4 * (c->unshared ? 2 : 1) + (double)c->layers * layer;
}

/* Llama-shaped dimensions for a target size: the widest model that still has
 * at least four layers (streaming needs a sequence of layers to pipeline). */
static void llm_gen_fit(struct llm_gen_cfg *c, uint64_t size)
{
	static const long dims[] = { 4096, 2048, 1024, 768, 512, 256, 128, 64 };

	for (size_t i = 0; i < sizeof(dims) / sizeof(dims[0]); i++) {
		double fixed, per;

		c->dim = dims[i];
		c->hidden = (2 * 4 * c->dim / 3 + 255) / 256 * 256;
		c->heads = c->dim >= 1024 ? c->dim / 128 : c->dim >= 256 ? c->dim / 64 : 4;
		c->kv_heads = c->heads;
		c->vocab = c->dim >= 512 ? 32000 : 512;
		c->seq = 2048;
		c->layers = 0;
		fixed = llm_gen_estimate(c);
		c->layers = 1;
		per = llm_gen_estimate(c) - fixed;
		c->layers = (long)(((double)size - fixed) / per + 0.5);
		if (c->layers >= 4)
			return;
	}
	if (c->layers < 1)
		c->layers = 1;
}

static void llm_gen_usage(FILE *f)
{
	fprintf(f,
		"usage: ethermem-llm-gen --out PATH [--size SIZE | --dim D --hidden H --layers L\n"
		"                        --heads N --kv-heads K --vocab V --seq S]\n"
		"                        [--experts E --topk K] [--unshared-cls] [--seed N]\n"
		"       ethermem-llm-gen --out PATH --quantize-from V0_FILE [--group-size N]\n"
		"  Writes a seeded-random checkpoint: llama2.c version 0 (dense), or the ethermem\n"
		"  MoE format with --experts.  --size picks Llama-like dimensions near SIZE (e.g. 1G);\n"
		"  explicit dimensions default to dim 64, hidden 172, 2 layers, 8 heads, vocab 512,\n"
		"  seq 256.  MoE defaults: --topk 2.  --quantize-from rewrites a version 0\n"
		"  checkpoint as llama2.c's int8 version 2 (group size default 64).\n"
		"  Write PATH outside the repository.\n");
}

int main(int argc, char **argv)
{
	struct llm_gen_cfg c = { .dim = 64,
				 .hidden = 172,
				 .layers = 2,
				 .heads = 8,
				 .kv_heads = -1,
				 .vocab = 512,
				 .seq = 256,
				 .topk = 2 };
	const char *out = NULL, *qfrom = NULL;
	long gs = 64;
	uint64_t seed = 1, size = 0;
	struct llm_gen_out g = { .fd = -1 };
	struct llm_config cfg;
	struct llm_layout lay;
	char tmp[4096], err[512];
	unsigned char hdr[LLM_MOE_HEADER];
	int have_dims = 0;
	struct stat sb;

	for (int i = 1; i < argc; i++) {
		static const struct {
			const char *name;
			long *v;
			long lo, hi;
		} ints[] = {
			{ "--dim", NULL, 2, 1 << 16 },
			{ "--hidden", NULL, 1, 1 << 18 },
			{ "--layers", NULL, 1, 4096 },
			{ "--heads", NULL, 1, 4096 },
			{ "--kv-heads", NULL, 1, 4096 },
			{ "--vocab", NULL, 2, 1 << 20 },
			{ "--seq", NULL, 1, 1 << 20 },
			{ "--experts", NULL, 1, LLM_MAX_EXPERTS },
			{ "--topk", NULL, 1, LLM_MAX_EXPERTS },
		};
		long *slots[] = { &c.dim,   &c.hidden, &c.layers,  &c.heads, &c.kv_heads,
				  &c.vocab, &c.seq,    &c.experts, &c.topk };
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		size_t k;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			llm_gen_usage(stdout);
			return 0;
		}
		if (!strcmp(a, "--unshared-cls")) {
			c.unshared = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "ethermem-llm-gen: %s needs a value (see --help)\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--out")) {
			out = v;
			continue;
		}
		if (!strcmp(a, "--quantize-from")) {
			qfrom = v;
			continue;
		}
		if (!strcmp(a, "--group-size")) {
			char *end;

			errno = 0;
			gs = strtol(v, &end, 10);
			if (errno || end == v || *end || gs < 4 || gs > (1 << 20) || gs % 4) {
				fprintf(stderr,
					"ethermem-llm-gen: --group-size wants a multiple of 4, got '%s'\n",
					v);
				return 2;
			}
			continue;
		}
		if (!strcmp(a, "--size")) {
			if (llm_parse_size(v, &size) || size == 0) {
				fprintf(stderr,
					"ethermem-llm-gen: --size wants a size like 1G, got '%s'\n",
					v);
				return 2;
			}
			continue;
		}
		if (!strcmp(a, "--seed")) {
			char *end;

			errno = 0;
			seed = strtoull(v, &end, 0);
			if (errno || end == v || *end || v[0] == '-') {
				fprintf(stderr,
					"ethermem-llm-gen: --seed wants a non-negative integer, got '%s'\n",
					v);
				return 2;
			}
			continue;
		}
		for (k = 0; k < sizeof(ints) / sizeof(ints[0]); k++)
			if (!strcmp(a, ints[k].name))
				break;
		if (k == sizeof(ints) / sizeof(ints[0])) {
			fprintf(stderr, "ethermem-llm-gen: unknown option '%s' (see --help)\n", a);
			return 2;
		} else {
			char *end;
			long n;

			errno = 0;
			n = strtol(v, &end, 10);
			if (errno || end == v || *end || n < ints[k].lo || n > ints[k].hi) {
				fprintf(stderr,
					"ethermem-llm-gen: %s wants an integer in [%ld, %ld], got '%s'\n",
					a, ints[k].lo, ints[k].hi, v);
				return 2;
			}
			*slots[k] = n;
			if (k < 7)
				have_dims = 1;
		}
	}
	if (!out) {
		fprintf(stderr, "ethermem-llm-gen: --out PATH is required (see --help)\n");
		return 2;
	}
	if (qfrom && (size || have_dims || c.experts)) {
		fprintf(stderr,
			"ethermem-llm-gen: --quantize-from takes its dimensions from the source\n");
		return 2;
	}
	if (size && have_dims) {
		fprintf(stderr, "ethermem-llm-gen: give --size or explicit dimensions, not both\n");
		return 2;
	}
	if (size)
		llm_gen_fit(&c, size);
	if (c.kv_heads < 0)
		c.kv_heads = c.heads;
	if (c.experts && c.topk > c.experts) {
		fprintf(stderr, "ethermem-llm-gen: --topk %ld exceeds --experts %ld\n", c.topk,
			c.experts);
		return 2;
	}
	if (c.dim % c.heads || (c.dim / c.heads) % 2 || c.heads % c.kv_heads) {
		fprintf(stderr,
			"ethermem-llm-gen: dim %ld, heads %ld, kv-heads %ld: dim must split into "
			"even-sized heads and heads into kv groups\n",
			c.dim, c.heads, c.kv_heads);
		return 2;
	}
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", out, (int)getpid()) >= (int)sizeof(tmp)) {
		fprintf(stderr, "ethermem-llm-gen: path too long\n");
		return 2;
	}
	g.buf = malloc(LLM_GEN_BLOCK);
	g.rng = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
	if (!g.rng)
		g.rng = 1;
	g.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (!g.buf || g.fd < 0) {
		fprintf(stderr, "ethermem-llm-gen: cannot create %s: %s\n", tmp, strerror(errno));
		free(g.buf);
		return 1;
	}
	err[0] = 0;
	if (qfrom) {
		if (llm_gen_quantize(&g, qfrom, (int)gs, err, sizeof(err))) {
			fprintf(stderr, "ethermem-llm-gen: %s\n", err);
			close(g.fd);
			free(g.buf);
			unlink(tmp);
			return 1;
		}
	} else {
		llm_gen_write(&g, &c);
	}
	llm_gen_flush(&g);
	if (!g.err && fsync(g.fd) < 0)
		g.err = errno;
	if (!g.err && fstat(g.fd, &sb) < 0)
		g.err = errno;
	close(g.fd);
	free(g.buf);
	if (g.err) {
		fprintf(stderr, "ethermem-llm-gen: writing %s: %s\n", tmp, strerror(g.err));
		unlink(tmp);
		return 1;
	}
	/* Check the result with the engine's own validation before it gets the
	 * real name. */
	g.fd = open(tmp, O_RDONLY | O_CLOEXEC);
	if (g.fd < 0 || pread(g.fd, hdr, sizeof(hdr), 0) < LLM_V0_HEADER ||
	    llm_parse_header(hdr,
			     (size_t)(sb.st_size < LLM_MOE_HEADER ? sb.st_size : LLM_MOE_HEADER),
			     (uint64_t)sb.st_size, &cfg, &lay, err, sizeof(err))) {
		fprintf(stderr, "ethermem-llm-gen: the written file does not validate: %s\n", err);
		if (g.fd >= 0)
			close(g.fd);
		unlink(tmp);
		return 1;
	}
	close(g.fd);
	if (rename(tmp, out) < 0) {
		fprintf(stderr, "ethermem-llm-gen: rename to %s: %s\n", out, strerror(errno));
		unlink(tmp);
		return 1;
	}
	fprintf(stderr,
		"ethermem-llm-gen: wrote %s: %llu bytes, %s, dim %d hidden %d layers %d heads %d/%d "
		"vocab %d seq %d",
		out, (unsigned long long)sb.st_size,
		cfg.n_experts    ? "MoE"
		: cfg.group_size ? "dense int8 v2"
				 : "dense v0",
		cfg.dim, cfg.hidden, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab,
		cfg.seq_len);
	if (cfg.n_experts)
		fprintf(stderr, " experts %d top-k %d", cfg.n_experts, cfg.top_k);
	fprintf(stderr, "\n");
	return 0;
}
