/*
 * ethermem-llm: generate tokens from a checkpoint with the weights in local
 * memory, an mmap of the file, a mapped pool region, or streamed through an
 * asynchronous fetcher within a local-memory budget, and report how fast.
 *
 * It is the unit the benchmark harness times: one process per backend and
 * memory ratio, the same greedy ids expected from every one.  The generated
 * ids go to stdout (--print-ids) so they can be compared byte for byte; every
 * measurement goes to stderr, as text and, with --stats-json, as one JSON line
 * a script can parse.  Generation starts from BOS (token 1) at position 0 and
 * runs exactly --steps forward passes; unlike llama2.c's demo it does not stop
 * at a sampled BOS, so every backend runs the same number of steps.
 *
 * --prompt-len N puts a synthetic prompt of N tokens first (BOS, then ids
 * drawn from --prompt-seed; the last --suffix-len of them from --suffix-seed
 * instead, so that many requests can share a "system prompt" and differ in
 * the rest).  The prompt is prefilled position by position, the last prompt
 * position gives the first generated id, and --steps ids are printed.
 * Time to first token counts from the first prompt position; tok/s counts
 * the --steps passes from the last prompt position on, which is exactly
 * what it counted before prompts existed (a prompt of BOS alone).
 *
 * --kv pool keeps at most --kv-local bytes of KV cache locally and the rest
 * in the pool; --kv-prefix pool fetches the prompt's longest prefix of full
 * blocks from the pool's prefix store and publishes the blocks it computes.
 */
#include "common/config.h"
#include "llm/llm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

enum { LLM_W_LOCAL, LLM_W_MMAP, LLM_W_POOL, LLM_W_STREAM };
static const char *const llm_wnames[] = { "local", "mmap", "pool", "stream" };

struct llm_opts {
	const char *model, *token_log;
	int steps, threads, fetch_threads, print_ids, stats_json, quiet;
	float temperature;
	uint64_t seed, local_mem, chunk;
	int weights, from_pool, have_local_mem;
	struct llm_router router;
	int prompt_len, suffix_len, kv_pool, kv_prefix, have_kv_local, requests;
	uint64_t prompt_seed, suffix_seed, kv_local, kv_store_size;
};

static void llm_usage(FILE *f)
{
	fprintf(f,
		"usage: ethermem-llm --model FILE [options]\n"
		"  --model FILE          llama2.c v0 (fp32) or v2 (int8) checkpoint, or ethermem MoE\n"
		"  --steps N             forward passes / tokens to generate (default 256, at most seq_len)\n"
		"  --temperature T       0 = greedy argmax (default 1.0)\n"
		"  --seed N              sampling seed (default 42)\n"
		"  --print-ids           print the generated token ids on one line of stdout\n"
		"  --weights KIND        local | mmap | pool | stream (default mmap)\n"
		"  --local-mem SIZE      pool: the mapping's cache; stream: local budget for staging,\n"
		"                        pinned weights and the expert cache, e.g. 512M\n"
		"                        (default: ETHERMEM_MAP_CACHE for pool, else the whole model)\n"
		"  --stream-from SRC     stream: file | pool (default file)\n"
		"  --stream-chunk SIZE   stream: largest piece a matrix is moved in (default 8M)\n"
		"  --fetch-threads N     stream from file: reader threads (default 2)\n"
		"  --threads N           matmul threads (default 1)\n"
		"  --router MODE         MoE: model | uniform | zipf[:S] (default model; S default 1.1)\n"
		"  --router-seed N       seed of the uniform/zipf expert sequence (default 1)\n"
		"  --prompt-len N        a synthetic prompt of N tokens before generating (default 1: BOS)\n"
		"  --prompt-seed N       seed of the prompt's ids (default 1)\n"
		"  --suffix-len N        the last N prompt ids from --suffix-seed instead (default 0)\n"
		"  --suffix-seed N       (default 2)\n"
		"  --kv KIND             where the KV cache lives: local | pool (default local)\n"
		"  --kv-local SIZE       --kv pool: KV kept locally, the rest in the pool\n"
		"                        (default: the minimum, one block per layer and the stream ring)\n"
		"  --kv-prefix KIND      none | pool: reuse prompt prefixes through the pool's block\n"
		"                        store (ETHERMEM_LLM_KV_STORE names it; default one per model)\n"
		"  --kv-store-size SIZE  bytes of blocks when the store is created (default 64M)\n"
		"  --requests N          run the prompt N times in this process, one after another,\n"
		"                        ids on a line each; statistics of the last (default 1)\n"
		"  --stats-json          also print the statistics as one JSON line on stderr\n"
		"  --token-log FILE      append a line per generated token as it comes: its index\n"
		"                        and ms since the request started (to follow a run live)\n"
		"  --quiet               no human-readable statistics\n"
		"  --help                this text\n"
		"Exit status: 0 ok, 1 runtime or checkpoint error, 2 usage error or backend unavailable.\n"
		"Pool backend: %s\n",
		llm_pool_backend ? llm_pool_backend->name : "not built");
}

static int llm_arg_int(const char *name, const char *v, long lo, long hi, long *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < lo || n > hi) {
		fprintf(stderr, "ethermem-llm: %s wants an integer in [%ld, %ld], got '%s'\n", name,
			lo, hi, v);
		return -EINVAL;
	}
	*out = n;
	return 0;
}

static int llm_arg_u64(const char *name, const char *v, uint64_t *out)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(v, &end, 0);
	if (errno || end == v || *end || v[0] == '-') {
		fprintf(stderr, "ethermem-llm: %s wants a non-negative integer, got '%s'\n", name,
			v);
		return -EINVAL;
	}
	*out = n;
	return 0;
}

static int llm_parse_router(const char *v, struct llm_router *r)
{
	if (!strcmp(v, "model")) {
		r->mode = LLM_ROUTER_MODEL;
	} else if (!strcmp(v, "uniform")) {
		r->mode = LLM_ROUTER_UNIFORM;
	} else if (!strncmp(v, "zipf", 4) && (v[4] == 0 || v[4] == ':')) {
		char *end;

		r->mode = LLM_ROUTER_ZIPF;
		r->zipf_s = 1.1;
		if (v[4] == ':') {
			errno = 0;
			r->zipf_s = strtod(v + 5, &end);
			if (errno || end == v + 5 || *end ||
			    !(r->zipf_s > 0.0 && r->zipf_s < 100.0)) {
				fprintf(stderr, "ethermem-llm: bad Zipf skew in '%s'\n", v);
				return -EINVAL;
			}
		}
	} else {
		fprintf(stderr,
			"ethermem-llm: --router wants model, uniform or zipf[:S], got '%s'\n", v);
		return -EINVAL;
	}
	return 0;
}

static int llm_parse_args(int argc, char **argv, struct llm_opts *o)
{
	*o = (struct llm_opts){ .steps = 256,
				.threads = 1,
				.fetch_threads = 2,
				.temperature = 1.0f,
				.seed = 42,
				.weights = LLM_W_MMAP,
				.prompt_len = 1,
				.requests = 1,
				.prompt_seed = 1,
				.suffix_seed = 2,
				.kv_store_size = 64ull << 20,
				.router = { .mode = LLM_ROUTER_MODEL, .zipf_s = 1.1, .seed = 1 } };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = NULL, *eq;
		char name[64];
		long n;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			llm_usage(stdout);
			exit(0);
		}
		if (!strcmp(a, "--print-ids")) {
			o->print_ids = 1;
			continue;
		}
		if (!strcmp(a, "--stats-json")) {
			o->stats_json = 1;
			continue;
		}
		if (!strcmp(a, "--quiet")) {
			o->quiet = 1;
			continue;
		}
		if (strncmp(a, "--", 2)) {
			fprintf(stderr, "ethermem-llm: unexpected argument '%s' (see --help)\n", a);
			return -EINVAL;
		}
		eq = strchr(a, '=');
		if (eq) {
			snprintf(name, sizeof(name), "%.*s", (int)(eq - a), a);
			v = eq + 1;
		} else {
			snprintf(name, sizeof(name), "%s", a);
			if (i + 1 >= argc) {
				fprintf(stderr, "ethermem-llm: %s needs a value (see --help)\n", a);
				return -EINVAL;
			}
			v = argv[++i];
		}
		if (!strcmp(name, "--model")) {
			o->model = v;
		} else if (!strcmp(name, "--token-log")) {
			o->token_log = v;
		} else if (!strcmp(name, "--steps")) {
			if (llm_arg_int(name, v, 1, 1 << 24, &n))
				return -EINVAL;
			o->steps = (int)n;
		} else if (!strcmp(name, "--prompt-len")) {
			if (llm_arg_int(name, v, 1, 1 << 24, &n))
				return -EINVAL;
			o->prompt_len = (int)n;
		} else if (!strcmp(name, "--requests")) {
			if (llm_arg_int(name, v, 1, 1 << 16, &n))
				return -EINVAL;
			o->requests = (int)n;
		} else if (!strcmp(name, "--suffix-len")) {
			if (llm_arg_int(name, v, 0, 1 << 24, &n))
				return -EINVAL;
			o->suffix_len = (int)n;
		} else if (!strcmp(name, "--prompt-seed")) {
			if (llm_arg_u64(name, v, &o->prompt_seed))
				return -EINVAL;
		} else if (!strcmp(name, "--suffix-seed")) {
			if (llm_arg_u64(name, v, &o->suffix_seed))
				return -EINVAL;
		} else if (!strcmp(name, "--kv") || !strcmp(name, "--kv-prefix")) {
			int prefix = !strcmp(name, "--kv-prefix"), pool = !strcmp(v, "pool");

			if (!pool && strcmp(v, prefix ? "none" : "local")) {
				fprintf(stderr, "ethermem-llm: %s wants %s or pool, got '%s'\n",
					name, prefix ? "none" : "local", v);
				return -EINVAL;
			}
			if (prefix)
				o->kv_prefix = pool;
			else
				o->kv_pool = pool;
		} else if (!strcmp(name, "--kv-local") || !strcmp(name, "--kv-store-size")) {
			uint64_t *dst = !strcmp(name, "--kv-local") ? &o->kv_local
								    : &o->kv_store_size;

			if (llm_parse_size(v, dst) || !*dst) {
				fprintf(stderr,
					"ethermem-llm: %s wants a size like 64M, got '%s'\n", name,
					v);
				return -EINVAL;
			}
			if (dst == &o->kv_local)
				o->have_kv_local = 1;
		} else if (!strcmp(name, "--threads")) {
			if (llm_arg_int(name, v, 1, 64, &n))
				return -EINVAL;
			o->threads = (int)n;
		} else if (!strcmp(name, "--fetch-threads")) {
			if (llm_arg_int(name, v, 1, 8, &n))
				return -EINVAL;
			o->fetch_threads = (int)n;
		} else if (!strcmp(name, "--temperature")) {
			char *end;

			errno = 0;
			o->temperature = strtof(v, &end);
			if (errno || end == v || *end ||
			    !(o->temperature >= 0.0f && o->temperature < 1e6f)) {
				fprintf(stderr,
					"ethermem-llm: --temperature wants a number >= 0, got '%s'\n",
					v);
				return -EINVAL;
			}
		} else if (!strcmp(name, "--seed")) {
			if (llm_arg_u64(name, v, &o->seed))
				return -EINVAL;
		} else if (!strcmp(name, "--router-seed")) {
			if (llm_arg_u64(name, v, &o->router.seed))
				return -EINVAL;
		} else if (!strcmp(name, "--router")) {
			if (llm_parse_router(v, &o->router))
				return -EINVAL;
		} else if (!strcmp(name, "--local-mem")) {
			if (llm_parse_size(v, &o->local_mem)) {
				fprintf(stderr,
					"ethermem-llm: --local-mem wants a size like 512M, got '%s'\n",
					v);
				return -EINVAL;
			}
			o->have_local_mem = 1;
		} else if (!strcmp(name, "--stream-chunk")) {
			if (llm_parse_size(v, &o->chunk) || o->chunk < 64) {
				fprintf(stderr,
					"ethermem-llm: --stream-chunk wants a size of at least 64 bytes, got '%s'\n",
					v);
				return -EINVAL;
			}
		} else if (!strcmp(name, "--stream-from")) {
			if (strcmp(v, "file") && strcmp(v, "pool")) {
				fprintf(stderr,
					"ethermem-llm: --stream-from wants file or pool, got '%s'\n",
					v);
				return -EINVAL;
			}
			o->from_pool = !strcmp(v, "pool");
		} else if (!strcmp(name, "--weights")) {
			int k;

			for (k = 0; k < 4 && strcmp(v, llm_wnames[k]); k++)
				;
			if (k == 4) {
				fprintf(stderr,
					"ethermem-llm: --weights wants local, mmap, pool or stream, got '%s'\n",
					v);
				return -EINVAL;
			}
			o->weights = k;
		} else {
			fprintf(stderr, "ethermem-llm: unknown option '%s' (see --help)\n", name);
			return -EINVAL;
		}
	}
	if (!o->model) {
		fprintf(stderr, "ethermem-llm: --model FILE is required (see --help)\n");
		return -EINVAL;
	}
	if (o->weights != LLM_W_STREAM && (o->from_pool || o->chunk)) {
		fprintf(stderr,
			"ethermem-llm: --stream-chunk and --stream-from apply to --weights stream only\n");
		return -EINVAL;
	}
	if (o->have_local_mem && o->weights != LLM_W_STREAM && o->weights != LLM_W_POOL) {
		fprintf(stderr,
			"ethermem-llm: --local-mem applies to --weights pool and stream only\n");
		return -EINVAL;
	}
	if (o->have_kv_local && !o->kv_pool) {
		fprintf(stderr, "ethermem-llm: --kv-local applies to --kv pool only\n");
		return -EINVAL;
	}
	if (o->suffix_len >= o->prompt_len) {
		fprintf(stderr,
			"ethermem-llm: --suffix-len must be below --prompt-len (BOS comes first)\n");
		return -EINVAL;
	}
	if (o->have_local_mem && !o->local_mem) {
		fprintf(stderr, "ethermem-llm: --local-mem must be above 0\n");
		return -EINVAL;
	}
	return 0;
}

static int llm_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of v[0..n) (sorted in place). */
static double llm_pct(double *v, size_t n, double p)
{
	size_t r;

	if (!n)
		return 0.0;
	qsort(v, n, sizeof(*v), llm_cmp_double);
	r = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (r < 1)
		r = 1;
	return v[(r > n ? n : r) - 1];
}

/* read_bytes of /proc/self/io: what this process made the disk read, which
 * for mmap is the page-cache misses its faults caused. */
static uint64_t llm_read_bytes(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	char line[128];
	unsigned long long v = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "read_bytes: %llu", &v) == 1)
			break;
	fclose(f);
	return v;
}

static uint64_t llm_faults(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)ru.ru_minflt + (uint64_t)ru.ru_majflt;
}

static void llm_json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void llm_pool_release(void *cookie)
{
	llm_pool_backend->unmap(cookie);
}

static int llm_open_source(const struct llm_opts *o, struct llm_src **src, void **pool_cookie,
			   char *err, size_t errlen)
{
	struct llm_fetcher f;
	void *base;
	size_t len;
	int rc;

	switch (o->weights) {
	case LLM_W_LOCAL:
		return llm_weights_local(o->model, src, err, errlen);
	case LLM_W_MMAP:
		return llm_weights_mmap(o->model, src, err, errlen);
	case LLM_W_POOL:
		if (!llm_pool_backend) {
			snprintf(
				err, errlen,
				"pool backend not built yet (this build has no libethermem pool support)");
			return -ENOSYS;
		}
		rc = llm_pool_backend->map(o->model, o->have_local_mem ? o->local_mem : 0, &base,
					   &len, pool_cookie);
		if (rc) {
			snprintf(err, errlen, "mapping %s from the pool: %s", o->model,
				 strerror(-rc));
			return rc;
		}
		rc = llm_weights_from_pointer(base, len, llm_pool_release, *pool_cookie, src, err,
					      errlen);
		if (rc)
			llm_pool_backend->unmap(*pool_cookie);
		return rc;
	default:
		if (o->from_pool) {
			if (!llm_pool_backend || !llm_pool_backend->open_fetcher) {
				snprintf(
					err, errlen,
					"pool backend not built yet (this build has no libethermem pool support)");
				return -ENOSYS;
			}
			rc = llm_pool_backend->open_fetcher(o->model, &f);
		} else {
			rc = llm_fetcher_file_open(o->model, o->fetch_threads, &f);
		}
		if (rc) {
			snprintf(err, errlen, "cannot open %s for streaming: %s", o->model,
				 strerror(-rc));
			return rc;
		}
		return llm_weights_stream(&f, o->have_local_mem ? o->local_mem : f.size, o->chunk,
					  src, err, errlen);
	}
}

/* BOS, then ids in [3, vocab) that depend only on their seed and position,
 * so prompts of different lengths from one seed share their prefix. */
static void llm_make_prompt(const struct llm_opts *o, int vocab, int *p)
{
	p[0] = 1;
	for (int i = 1; i < o->prompt_len; i++) {
		uint64_t seed = i >= o->prompt_len - o->suffix_len ? o->suffix_seed
								   : o->prompt_seed;
		uint64_t x = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)i;

		x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
		x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
		x ^= x >> 31;
		p[i] = vocab > 3 ? 3 + (int)(x % (uint64_t)(vocab - 3)) : 1;
	}
}

int main(int argc, char **argv)
{
	struct llm_opts o;
	struct llm_src *src = NULL;
	struct llm_engine *eng = NULL;
	char err[512] = "";
	void *pool_cookie = NULL;
	double *tok_ms = NULL, t_all = 0, t_start, ttft = 0, p50, p95, c50 = 0, c95 = 0;
	int *ids = NULL, *prompt = NULL, rc, status = 1, ctx, pfx_errors = 0;
	uint64_t rng, io0 = 0, f0 = 0, pb0 = 0, pf0 = 0, moved, faults;
	struct llm_prefix *pfx = NULL;
	struct llm_prefix_stats ps = { 0 }, ps0 = { 0 };
	struct llm_kv_stats kv0, kv1;
	void *pfx_conn = NULL;
	float *scratch = NULL;
	const char *kind, *format;
	FILE *tlog = NULL;

	if (llm_parse_args(argc, argv, &o))
		return 2;
	if (o.token_log && !(tlog = fopen(o.token_log, "a"))) {
		fprintf(stderr, "ethermem-llm: --token-log %s: %s\n", o.token_log, strerror(errno));
		return 2;
	}
	rc = llm_open_source(&o, &src, &pool_cookie, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "ethermem-llm: %s\n", err[0] ? err : strerror(-rc));
		if (tlog)
			fclose(tlog);
		/* Unavailable backend or a budget below the minimum: the
		 * invocation, not the checkpoint, is wrong. */
		return rc == -ENOSYS || rc == -ENOBUFS ? 2 : 1;
	}
	kind = src->cfg.n_experts ? "moe" : "dense";
	format = src->lay.fmt == LLM_FMT_MOE  ? "ethermem-moe-v1"
		 : src->lay.fmt == LLM_FMT_Q8 ? "llama2c-v2-int8"
					      : "llama2c-v0";
	if (o.prompt_len > src->cfg.seq_len) {
		fprintf(stderr, "ethermem-llm: --prompt-len %d is beyond the model's seq_len %d\n",
			o.prompt_len, src->cfg.seq_len);
		status = 2;
		goto out;
	}
	if (o.steps > src->cfg.seq_len - o.prompt_len + 1) {
		if (!o.quiet)
			fprintf(stderr,
				"ethermem-llm: note: --steps %d capped at the model's seq_len %d\n",
				o.steps, src->cfg.seq_len);
		o.steps = src->cfg.seq_len - o.prompt_len + 1;
	}
	if (src->cfg.n_experts == 0 && o.router.mode != LLM_ROUTER_MODEL && !o.quiet)
		fprintf(stderr, "ethermem-llm: note: --router has no effect on a dense model\n");
	if ((o.kv_pool || o.kv_prefix) && (!llm_pool_backend || !llm_pool_backend->open_kv)) {
		fprintf(stderr,
			"ethermem-llm: --kv pool and --kv-prefix pool need the pool backend, "
			"not built here\n");
		status = 2;
		goto out;
	}
	if (o.kv_prefix && src->cfg.n_experts && o.router.mode != LLM_ROUTER_MODEL) {
		/* The seeded router draws per forward pass: skipping the passes
		 * of a fetched prefix would shift every later draw. */
		if (!o.quiet)
			fprintf(stderr, "ethermem-llm: note: --kv-prefix is off with --router %s\n",
				o.router.mode == LLM_ROUTER_ZIPF ? "zipf" : "uniform");
		o.kv_prefix = 0;
	}
	rc = llm_threads_init(o.threads);
	if (rc) {
		fprintf(stderr, "ethermem-llm: starting %d threads: %s\n", o.threads,
			strerror(-rc));
		goto out;
	}
	ctx = o.prompt_len + o.steps - 1;
	rc = llm_engine_create(src, ctx, &o.router, &eng);
	tok_ms = calloc((size_t)o.steps, sizeof(double));
	ids = calloc((size_t)o.steps, sizeof(int));
	prompt = calloc((size_t)o.prompt_len, sizeof(int));
	scratch = calloc((size_t)src->cfg.vocab, sizeof(float));
	if (rc || !tok_ms || !ids || !scratch || !prompt) {
		fprintf(stderr, "ethermem-llm: out of memory for the engine\n");
		goto out;
	}
	llm_make_prompt(&o, src->cfg.vocab, prompt);
	if (o.kv_pool) {
		uint64_t min = llm_engine_kv_min(eng);

		rc = llm_engine_kv_pool(eng, o.have_kv_local ? o.kv_local : min,
					llm_pool_backend->open_kv);
		if (rc == -ENOBUFS) {
			fprintf(stderr,
				"ethermem-llm: --kv-local must be at least %llu bytes for this "
				"model (a block per layer and the stream ring)\n",
				(unsigned long long)min);
			status = 2;
			goto out;
		}
		if (rc) {
			fprintf(stderr, "ethermem-llm: KV cache in the pool: %s\n", strerror(-rc));
			goto out;
		}
	}
	/* Connected before the clock starts, as a server would be. */
	if (o.kv_prefix && (rc = llm_prefix_connect(llm_pool_backend, &pfx_conn))) {
		fprintf(stderr,
			"ethermem-llm: prefix store: cannot connect to the pool: %s "
			"(recomputing every prefix)\n",
			strerror(-rc));
		pfx_conn = NULL;
		pfx_errors++;
	}
	for (int req = 0; req < o.requests; req++) {
		/* Every request starts from position 0 on the same engine and store:
	 * its KV cache is overwritten as it goes, and its prefix is fetched
	 * from the store like any other process's would be. */
		rng = o.seed ^ 0x9E3779B97F4A7C15ULL;
		if (!rng)
			rng = 1;
		if (pfx)
			llm_prefix_stats(pfx, &ps0);
		t_start = llm_now_ms();
		for (int pos = 0; pos < ctx; pos++) {
			int gen = pos - (o.prompt_len - 1); /* index of the id this pass gives */
			int tok = pos < o.prompt_len ? prompt[pos] : ids[gen - 1];
			double t0;
			float *logits;

			if (gen == 0) {
				/* Everything from here on is "per token": the prompt and the
			 * source's own opening are excluded. */
				src->st.bytes_fetched = 0;
				src->st.fetches = 0;
				src->st.stall_ms = 0;
				io0 = llm_read_bytes();
				f0 = llm_faults();
				llm_engine_kv_stats(eng, &kv0);
				if (o.weights == LLM_W_POOL && llm_pool_backend->stats)
					llm_pool_backend->stats(pool_cookie, &pb0, &pf0);
				t_all = llm_now_ms();
			}
			t0 = llm_now_ms();
			rc = llm_forward(eng, tok, pos, &logits);
			if (rc) {
				fprintf(stderr,
					"ethermem-llm: forward pass at position %d failed: %s\n",
					pos, strerror(-rc));
				goto out;
			}
			if (pos == 0 && pfx_conn) {
				const char *store = NULL;

				em_cfg_env_str(EM_CFG_LLM_KV_STORE,
					       &store); /* a name: never refused */
				rc = llm_prefix_open(llm_pool_backend, pfx_conn, eng, &src->cfg,
						     logits, store, o.kv_store_size, &pfx);
				if (rc) {
					fprintf(stderr,
						"ethermem-llm: prefix store: %s (recomputing every prefix)\n",
						strerror(-rc));
					llm_pool_backend->store_close(NULL, pfx_conn);
					pfx_errors++;
				}
				pfx_conn = NULL;
			}
			if (pos == 0 && pfx) {
				int hit = llm_prefix_fetch(pfx, prompt, o.prompt_len);

				if (hit > 0) {
					pos = hit -
					      1; /* continue at the first position not fetched */
					continue;
				}
			}
			if (gen >= 0) {
				ids[gen] = llm_sample(logits, src->cfg.vocab, o.temperature, &rng,
						      scratch);
				tok_ms[gen] = llm_now_ms() - t0;
				if (tlog) {
					fprintf(tlog, "%d %.3f\n", gen, llm_now_ms() - t_start);
					fflush(tlog);
				}
				if (gen == 0)
					ttft = llm_now_ms() - t_start;
			}
			if (pfx && pos < o.prompt_len && (pos + 1) % LLM_KV_BLOCK == 0)
				llm_prefix_publish(pfx, prompt, pos / LLM_KV_BLOCK);
		}
		t_all = llm_now_ms() - t_all;
		if (o.print_ids) {
			for (int i = 0; i < o.steps; i++)
				printf("%s%d", i ? " " : "", ids[i]);
			printf("\n");
			fflush(stdout);
		}
	}
	faults = llm_faults() - f0;
	if (o.weights == LLM_W_STREAM) {
		moved = src->st.bytes_fetched;
	} else if (o.weights == LLM_W_POOL && llm_pool_backend->stats) {
		uint64_t b = 0, fl = 0;

		llm_pool_backend->stats(pool_cookie, &b, &fl);
		moved = b - pb0;
		faults = fl - pf0;
	} else {
		moved = llm_read_bytes() - io0;
	}
	llm_engine_kv_stats(eng, &kv1);
	if (pfx) {
		/* the last request's share; hit_tokens is per fetch already */
		llm_prefix_stats(pfx, &ps);
		ps.fetch_ms -= ps0.fetch_ms;
		ps.bytes -= ps0.bytes;
		ps.published -= ps0.published;
		ps.present -= ps0.present;
		ps.rejected -= ps0.rejected;
		ps.errors -= ps0.errors;
		ps.publish_ms -= ps0.publish_ms;
	}
	ps.errors += pfx_errors;
	p50 = llm_pct(tok_ms, (size_t)o.steps, 50);
	p95 = llm_pct(tok_ms, (size_t)o.steps, 95);
	if (src->st.n_cold) {
		c50 = llm_pct(src->st.cold_ms, src->st.n_cold, 50);
		c95 = llm_pct(src->st.cold_ms, src->st.n_cold, 95);
	}
	if (!o.quiet) {
		fprintf(stderr,
			"ethermem-llm: %s model (%s), %d layers, dim %d, %llu bytes; weights %s%s\n"
			"  %d tokens in %.1f ms: %.2f tok/s, ms/token p50 %.2f p95 %.2f\n"
			"  bytes from backing source per token %.0f (a token reads %llu), faults per token %.1f\n",
			kind, format, src->cfg.n_layers, src->cfg.dim,
			(unsigned long long)src->lay.file_size, llm_wnames[o.weights],
			o.weights == LLM_W_STREAM ? (o.from_pool ? " from pool" : " from file")
						  : "",
			o.steps, t_all, o.steps / (t_all / 1e3), p50, p95, (double)moved / o.steps,
			(unsigned long long)src->lay.w_hot_bytes, (double)faults / o.steps);
		if (o.weights == LLM_W_STREAM)
			fprintf(stderr,
				"  stream budget: pinned %llu, staging %llu, expert cache %llu (%d slots); stall %.1f ms\n",
				(unsigned long long)src->st.pinned_bytes,
				(unsigned long long)src->st.staging_bytes,
				(unsigned long long)src->st.cache_bytes, src->st.cache_slots,
				src->st.stall_ms);
		fprintf(stderr,
			"  prompt %d tokens, time to first token %.1f ms; KV %s (local %llu bytes, pool %llu), "
			"from the pool per token %.0f bytes, stall %.1f ms\n",
			o.prompt_len, ttft, o.kv_pool ? "pool" : "local",
			(unsigned long long)kv1.local_bytes, (unsigned long long)kv1.pool_bytes,
			(double)(kv1.bytes_read - kv0.bytes_read) / o.steps, kv1.stall_ms);
		if (o.kv_prefix)
			fprintf(stderr,
				"  prefix: %d tokens fetched (%.1f ms, %llu bytes), %d blocks published "
				"(%d already there, %.1f ms), %d rejected, %d store errors\n",
				ps.hit_tokens, ps.fetch_ms, (unsigned long long)ps.bytes,
				ps.published, ps.present, ps.publish_ms, ps.rejected, ps.errors);
		if (src->cfg.n_experts && o.weights != LLM_W_LOCAL)
			fprintf(stderr,
				"  experts: %llu hits, %llu cold loads, cold-load ms p50 %.3f p95 %.3f\n",
				(unsigned long long)src->st.expert_hits,
				(unsigned long long)src->st.expert_misses, c50, c95);
	}
	if (o.stats_json) {
		fprintf(stderr, "{\"model\":");
		llm_json_str(stderr, o.model);
		fprintf(stderr,
			",\"kind\":\"%s\",\"format\":\"%s\",\"backend\":\"%s\",\"stream_from\":\"%s\",\"steps\":%d,"
			"\"threads\":%d,\"model_bytes\":%llu,\"hot_bytes_per_token\":%llu,"
			"\"tok_s\":%.4f,\"ms_p50\":%.4f,\"ms_p95\":%.4f,\"bytes_per_token\":%.1f,"
			"\"faults_per_token\":%.3f,\"local_mem\":%llu,\"pinned_bytes\":%llu,"
			"\"staging_bytes\":%llu,\"expert_cache_bytes\":%llu,\"expert_hits\":%llu,"
			"\"expert_misses\":%llu,\"expert_cold_ms_p50\":%.4f,\"expert_cold_ms_p95\":%.4f,"
			"\"stall_ms\":%.3f,",
			kind, format, llm_wnames[o.weights],
			o.weights == LLM_W_STREAM ? (o.from_pool ? "pool" : "file") : "", o.steps,
			o.threads, (unsigned long long)src->lay.file_size,
			(unsigned long long)src->lay.w_hot_bytes, o.steps / (t_all / 1e3), p50, p95,
			(double)moved / o.steps, (double)faults / o.steps,
			(unsigned long long)(o.have_local_mem ? o.local_mem : 0),
			(unsigned long long)src->st.pinned_bytes,
			(unsigned long long)src->st.staging_bytes,
			(unsigned long long)src->st.cache_bytes,
			(unsigned long long)src->st.expert_hits,
			(unsigned long long)src->st.expert_misses, c50, c95, src->st.stall_ms);
		fprintf(stderr,
			"\"prompt_len\":%d,\"ttft_ms\":%.3f,\"kv\":\"%s\",\"kv_local_bytes\":%llu,"
			"\"kv_pool_bytes\":%llu,\"kv_pool_read_per_token\":%.1f,\"kv_stall_ms\":%.3f,"
			"\"kv_prefix\":\"%s\",\"prefix_hit_tokens\":%d,\"prefix_fetch_ms\":%.3f,"
			"\"prefix_fetched_bytes\":%llu,\"prefix_published\":%d,\"prefix_present\":%d,"
			"\"prefix_rejected\":%d,\"prefix_errors\":%d,\"publish_ms\":%.3f}\n",
			o.prompt_len, ttft, o.kv_pool ? "pool" : "local",
			(unsigned long long)kv1.local_bytes, (unsigned long long)kv1.pool_bytes,
			(double)(kv1.bytes_read - kv0.bytes_read) / o.steps, kv1.stall_ms,
			o.kv_prefix ? "pool" : "none", ps.hit_tokens, ps.fetch_ms,
			(unsigned long long)ps.bytes, ps.published, ps.present, ps.rejected,
			ps.errors, ps.publish_ms);
	}
	status = 0;
out:
	llm_prefix_close(pfx);
	llm_engine_destroy(eng);
	llm_src_close(src);
	llm_threads_fini();
	free(tok_ms);
	free(ids);
	free(prompt);
	free(scratch);
	if (tlog)
		fclose(tlog);
	return status;
}
