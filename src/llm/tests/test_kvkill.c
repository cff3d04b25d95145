/*
 * The store's node killed while a prompt prefix is being fetched from it:
 * generation must go on, recomputing what it could not fetch, and give the
 * same ids as a run that never used the store.
 *
 * usage: test_llm_kvkill MODEL NODE_PID   (ETHERMEM_NODES: that one node)
 *
 * A first engine computes a prompt of LLM_KK_PROMPT positions and publishes
 * its full blocks; a second one fetches them through the real pool backend,
 * whose store_get is wrapped only to kill the node with SIGKILL (and wait
 * until it is gone) after the first window of blocks has arrived: the rest
 * of the fetch then meets a dead connection.  The second engine must have
 * installed exactly the blocks of that first window, counted a store error,
 * computed the remaining positions itself, and sampled the reference ids.
 * Exit 0 pass, 1 fail, 77 skip.
 */
#include "llm/llm.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define LLM_KK_PROMPT 200 /* 12 full blocks of 16, fetched in windows of 8 */
#define LLM_KK_STEPS 24

static pid_t node;
static int gets;
static const struct llm_pool_ops *real;

/* Is the process gone (or a zombie, its sockets closed)? */
static int dead(pid_t pid)
{
	char path[64], st[256];
	FILE *f;
	char *p;
	int gone;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 1;
	gone = !fgets(st, sizeof(st), f);
	fclose(f);
	p = strrchr(st, ')');
	return gone || !p || p[2] == 'Z' || p[2] == 'X';
}

static int killing_get(void *store, unsigned n, const uint64_t (*keys)[2], void *const *bufs,
		       size_t cap, int *res)
{
	if (++gets == 2) {
		kill(node, SIGKILL);
		for (int i = 0; i < 500 && !dead(node); i++)
			usleep(10000);
	}
	return real->store_get(store, n, keys, bufs, cap, res);
}

/* One request: prompt then steps greedy ids; with ops, the prefix store
 * (fetch first, publish what is computed).  Returns 0 or -errno. */
static int request(struct llm_src *src, const struct llm_pool_ops *ops, const int *prompt, int *ids,
		   struct llm_prefix_stats *ps)
{
	struct llm_engine *e = NULL;
	struct llm_prefix *pfx = NULL;
	void *conn = NULL;
	int ctx = LLM_KK_PROMPT + LLM_KK_STEPS - 1, rc;
	uint64_t rng = 1;
	float *scratch = calloc((size_t)src->cfg.vocab, sizeof(float));

	memset(ps, 0, sizeof(*ps));
	if (!scratch)
		return -ENOMEM;
	rc = llm_engine_create(src, ctx, NULL, &e);
	if (!rc && ops && (rc = llm_prefix_connect(ops, &conn)))
		fprintf(stderr, "test_llm_kvkill: connect: %s\n", strerror(-rc));
	for (int pos = 0; !rc && pos < ctx; pos++) {
		int gen = pos - (LLM_KK_PROMPT - 1);
		float *logits;

		rc = llm_forward(e, pos < LLM_KK_PROMPT ? prompt[pos] : ids[gen - 1], pos, &logits);
		if (rc)
			break;
		if (pos == 0 && conn) {
			rc = llm_prefix_open(ops, conn, e, &src->cfg, logits, "kvkill", 4u << 20,
					     &pfx);
			if (rc) {
				fprintf(stderr, "test_llm_kvkill: store: %s\n", strerror(-rc));
				break;
			}
			conn = NULL; /* the prefix owns it now */
			int hit = llm_prefix_fetch(pfx, prompt, LLM_KK_PROMPT);

			if (hit > 0) {
				pos = hit - 1;
				continue;
			}
		}
		if (gen >= 0)
			ids[gen] = llm_sample(logits, src->cfg.vocab, 0.0f, &rng, scratch);
		if (pfx && pos < LLM_KK_PROMPT && (pos + 1) % LLM_KV_BLOCK == 0)
			llm_prefix_publish(pfx, prompt, pos / LLM_KV_BLOCK);
	}
	if (conn)
		ops->store_close(NULL, conn);
	if (pfx)
		llm_prefix_stats(pfx, ps);
	llm_prefix_close(pfx);
	llm_engine_destroy(e);
	free(scratch);
	return rc;
}

int main(int argc, char **argv)
{
	struct llm_src *src = NULL;
	struct llm_pool_ops wrapped;
	struct llm_prefix_stats ps;
	int prompt[LLM_KK_PROMPT], ref[LLM_KK_STEPS], got[LLM_KK_STEPS], fail = 0, rc;
	char err[256] = "";
	uint64_t s = 7;

	if (argc != 3) {
		fprintf(stderr, "usage: test_llm_kvkill MODEL NODE_PID\n");
		return 1;
	}
	real = llm_pool_backend;
	if (!real || !real->store_get) {
		printf("SKIP: no pool backend\n");
		return 77;
	}
	node = (pid_t)atoi(argv[2]);
	if ((rc = llm_weights_mmap(argv[1], &src, err, sizeof(err)))) {
		fprintf(stderr, "FAIL: %s: %s\n", argv[1], err);
		return 1;
	}
	if (llm_threads_init(1))
		return 1;
	prompt[0] = 1;
	for (int i = 1; i < LLM_KK_PROMPT; i++)
		prompt[i] = 2 + (int)(llm_rng_next(&s) % (uint64_t)(src->cfg.vocab - 2));

	if ((rc = request(src, NULL, prompt, ref, &ps))) {
		fprintf(stderr, "FAIL: reference run: %s\n", strerror(-rc));
		fail = 1;
	}
	if (!fail && (rc = request(src, real, prompt, got, &ps))) {
		fprintf(stderr, "FAIL: publishing run: %s\n", strerror(-rc));
		fail = 1;
	}
	if (!fail && (memcmp(got, ref, sizeof(ref)) || ps.published != 12)) {
		fprintf(stderr, "FAIL: publishing run: ids %s, %d blocks published (want 12)\n",
			memcmp(got, ref, sizeof(ref)) ? "differ" : "agree", ps.published);
		fail = 1;
	}
	wrapped = *real;
	wrapped.store_get = killing_get;
	if (!fail && (rc = request(src, &wrapped, prompt, got, &ps))) {
		fprintf(stderr, "FAIL: generation failed with the node killed mid-fetch: %s\n",
			strerror(-rc));
		fail = 1;
	}
	if (!fail && !dead(node)) {
		fprintf(stderr, "FAIL: the node was not killed (%d store reads)\n", gets);
		fail = 1;
	}
	if (!fail && memcmp(got, ref, sizeof(ref))) {
		fprintf(stderr, "FAIL: ids differ from the reference after the node died\n");
		fail = 1;
	}
	/* The first window (8 blocks) came before the kill, nothing after. */
	if (!fail && (ps.hit_tokens != 8 * LLM_KV_BLOCK || ps.errors < 1)) {
		fprintf(stderr,
			"FAIL: %d positions fetched (want %d), %d store errors (want >= 1)\n",
			ps.hit_tokens, 8 * LLM_KV_BLOCK, ps.errors);
		fail = 1;
	}
	if (!fail)
		printf("ok: node killed after %d of 12 blocks: %d positions fetched, %d store "
		       "errors, the rest recomputed, same ids\n",
		       8, ps.hit_tokens, ps.errors);
	llm_threads_fini();
	llm_src_close(src);
	if (!fail)
		printf("PASS\n");
	return fail;
}
