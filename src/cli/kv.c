/*
 * `ethermem kv stats [NAME]`: the block stores in the pool (libemkv,
 * src/llm/kvstore.h) and their counters -- entries, values held, bytes,
 * hits, misses, hit rate, evictions, corrupt reads.  Without NAME every
 * named region whose header is a store is listed, so an operator sees what
 * the prefix caches of the inference servers hold without knowing their
 * names.  Read-only: it never changes a store.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "llm/kvstore.h"

static void kv_print(const char *name, const struct em_kv_stats *st)
{
	uint64_t gets = st->hits + st->misses;

	printf("%-40s entries %" PRIu64 " (values up to %" PRIu64 " B), used %" PRIu64
	       ", bytes %" PRIu64 "\n",
	       name, st->entries, st->value_max, st->used, st->bytes);
	printf("%-40s gets %" PRIu64 ": hits %" PRIu64 ", misses %" PRIu64 ", hit rate %.3f; "
	       "puts %" PRIu64 ", present %" PRIu64 ", evictions %" PRIu64 ", corrupt %" PRIu64
	       "\n",
	       "", gets, st->hits, st->misses, gets ? (double)st->hits / (double)gets : 0.0,
	       st->puts, st->present, st->evictions, st->corrupt);
}

int em_cli_kv(int argc, char **argv, struct em_cli_pool *cp)
{
	struct em_region_info *info = NULL;
	struct em_kv_stats st = { .size = sizeof(st) };
	em_pool *pool;
	em_kv *kv;
	int n = 0, rc, shown = 0;

	if (argc < 2 || strcmp(argv[1], "stats") || argc > 3) {
		fprintf(argc > 1 && !strcmp(argv[1], "--help") ? stdout : stderr,
			"usage: ethermem kv stats [NAME]\n"
			"Block stores in the pool (prefix caches): entries, bytes, hit rate.\n");
		return argc > 1 && !strcmp(argv[1], "--help") ? 0 : 2;
	}
	if (em_cli_connect(cp, &pool, "ethermem kv"))
		return 1;
	if (argc == 3) {
		rc = em_kv_open(pool, argv[2], NULL, &kv);
		if (!rc)
			rc = em_kv_stats(kv, &st);
		if (rc) {
			fprintf(stderr, "ethermem kv stats: %s: %s\n", argv[2],
				rc == -EPROTO ? "not a block store" : em_strerror(rc));
			em_pool_close(pool);
			return 1;
		}
		kv_print(argv[2], &st);
		em_kv_close(kv);
		em_pool_close(pool);
		return 0;
	}
	n = em_region_list(pool, NULL, 0);
	if (n > 0) {
		int max = n;

		info = calloc((size_t)max, sizeof(*info));
		if (info)
			info[0].size = sizeof(*info);
		n = info ? em_region_list(pool, info, (unsigned)max) : -ENOMEM;
		if (n > max)
			n = max; /* created meanwhile: listed next time */
	}
	if (n < 0) {
		fprintf(stderr, "ethermem kv stats: listing regions: %s\n", em_strerror(n));
		free(info);
		em_pool_close(pool);
		return 1;
	}
	for (int i = 0; i < n; i++) {
		/* Regions that are not stores, or vanish meanwhile, are skipped. */
		if (em_kv_open(pool, info[i].name, NULL, &kv))
			continue;
		if (!em_kv_stats(kv, &st)) {
			kv_print(info[i].name, &st);
			shown++;
		}
		em_kv_close(kv);
	}
	if (!shown)
		printf("no block stores in the pool\n");
	free(info);
	em_pool_close(pool);
	return 0;
}
