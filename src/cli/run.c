/*
 * run.c - `ethermem run [--local-mem SIZE] [--threshold SIZE] -- PROGRAM
 * ARGS`: runs an unmodified program with libethermem-preload.so, so that its
 * large allocations and large read-only file mappings live in the pool and
 * only --local-mem of them stays in local RAM.
 *
 * Everything is passed through the environment, which is also how the pool
 * options reach the shim (the CLI exports --nodes/--secret-file before it
 * calls us). The shim is found next to the ethermem executable, where the
 * build puts both. Faults are served on a thread (ETHERMEM_MAP_FAULTS=thread)
 * because the program's own system calls write into pool memory.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "ethermem.h"

static void emm_run_usage(FILE *f)
{
	fprintf(f, "usage: ethermem run [--local-mem SIZE] [--threshold SIZE] [--fetch-unit SIZE]\n"
		   "                    [--small-objects] -- PROGRAM [ARGS]\n"
		   "  --local-mem SIZE   local RAM for pool-backed memory (default 256M): it\n"
		   "                     bounds the pool blocks only, that is allocations of\n"
		   "                     at least --threshold and big read-only file mappings\n"
		   "                     (and small ones with --small-objects); the rest of\n"
		   "                     the program (code, stacks, small allocations)\n"
		   "                     stays local as usual\n"
		   "  --threshold SIZE   allocations and read-only file mappings at least\n"
		   "                     this large go to the pool (default 1M, minimum 256K)\n"
		   "  --fetch-unit SIZE  bytes per fault, 4K..64K (default 16K); where\n"
		   "                     faults land near each other a fault fetches\n"
		   "                     64K around it anyway\n"
		   "  --small-objects    allocations below the threshold come from pool arenas\n"
		   "                     too, so a heap of many small objects is bounded\n"
		   "                     (ETHERMEM_SMALL_OBJECTS=1); a program linked with\n"
		   "                     its own allocator (jemalloc, tcmalloc) needs no\n"
		   "                     flag: that allocator's mmaps are pool blocks\n");
}

int em_cli_run(int argc, char **argv)
{
	const char *local = "256M", *thr = "1M", *unit = "16K";
	int small = 0;
	char self[PATH_MAX], shim[PATH_MAX + 64], *slash, *pre;
	uint64_t v;
	ssize_t n;
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		}
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			emm_run_usage(stdout);
			return 0;
		}
		if (i + 1 < argc && !strcmp(argv[i], "--local-mem")) {
			local = argv[++i];
		} else if (i + 1 < argc && !strcmp(argv[i], "--threshold")) {
			thr = argv[++i];
		} else if (i + 1 < argc && !strcmp(argv[i], "--fetch-unit")) {
			unit = argv[++i];
		} else if (!strcmp(argv[i], "--small-objects")) {
			small = 1;
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "ethermem run: unknown option %s\n", argv[i]);
			emm_run_usage(stderr);
			return 2;
		} else {
			break; /* the program, without a "--" */
		}
	}
	if (i >= argc) {
		emm_run_usage(stderr);
		return 2;
	}
	if (em_parse_size(local, &v) || !v || em_parse_size(thr, &v) || !v) {
		fprintf(stderr, "ethermem run: bad size (--local-mem %s, --threshold %s)\n", local,
			thr);
		return 2;
	}
	uint64_t u;

	if (em_parse_size(unit, &u) || u < 4096 || u > (64u << 10) || (u & (u - 1))) {
		fprintf(stderr, "ethermem run: --fetch-unit %s: a power of two from 4K to 64K\n",
			unit);
		return 2;
	}
	if (em_parse_size(local, &v) == 0 && v < u) {
		fprintf(stderr,
			"ethermem run: --local-mem %s is smaller than the fetch unit (%s)\n", local,
			unit);
		return 2;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0) {
		perror("ethermem run: /proc/self/exe");
		return 1;
	}
	self[n] = 0;
	slash = strrchr(self, '/');
	*slash = 0;
	snprintf(shim, sizeof(shim), "%s/libethermem-preload.so", self);
	if (access(shim, R_OK)) /* installed: PREFIX/bin and PREFIX/LIBDIR */
		snprintf(shim, sizeof(shim), "%s/../%s/libethermem-preload.so", self,
			 EM_INSTALL_LIBDIR);
	if (access(shim, R_OK)) {
		fprintf(stderr, "ethermem run: %s: %s\n", shim, strerror(errno));
		return 1;
	}
	pre = getenv("LD_PRELOAD");
	if (pre && *pre) {
		char *both = malloc(strlen(shim) + strlen(pre) + 2);

		if (!both)
			return 1;
		sprintf(both, "%s:%s", shim, pre);
		setenv("LD_PRELOAD", both, 1);
	} else {
		setenv("LD_PRELOAD", shim, 1);
	}
	setenv("ETHERMEM_MAP_CACHE", local, 1);
	setenv("ETHERMEM_THRESHOLD", thr, 1);
	setenv("ETHERMEM_FETCH_UNIT", unit, 1);
	setenv("ETHERMEM_MAP_FAULTS", "thread", 1);
	if (small)
		setenv("ETHERMEM_SMALL_OBJECTS", "1", 1);
	execvp(argv[i], argv + i);
	fprintf(stderr, "ethermem run: %s: %s\n", argv[i], strerror(errno));
	return 127;
}
