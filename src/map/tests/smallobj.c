/*
 * smallobj.c - a heap made only of small objects, for `ethermem run
 * --small-objects`: MIB mebibytes in objects of 8 bytes to 8 KiB, each
 * filled with a pattern of its own, then every byte checked; realloc
 * (growing, shrinking, in place or moved), calloc, the aligned calls and
 * malloc_usable_size checked on the way; half the objects freed and
 * allocated again; and a forked child that checks the parent's objects
 * and writes its own.
 *
 *   smallobj MIB
 *   smallobj units UNIT   (below)
 *
 * Prints a digest of the heap (the same plain and under the shim) and, on
 * stderr, the peak resident size (VmHWM) in KiB before the fork as
 * "peak-rss-kib N", which test_run_apps.sh compares with the budget (a fork
 * brings every pool page in first, so the peak after it is the heap's). Exit 0 done, 1 a check
 * failed.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int bad;

static void check(int ok, const char *what, size_t i)
{
	if (!ok && bad++ < 10)
		fprintf(stderr, "smallobj: %s (object %zu)\n", what, i);
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

static size_t size_of(size_t i)
{
	uint64_t r = mix(i + 99);

	/* mostly small, some up to 8 KiB: a key-value store's mix */
	return r % 4 ? 8 + r / 4 % 120 : 8 + r / 4 % 8185;
}

static void fill(unsigned char *p, size_t n, size_t i, unsigned gen)
{
	for (size_t j = 0; j < n; j++)
		p[j] = (unsigned char)(i * 7 + j * 13 + gen);
}

static int same(const unsigned char *p, size_t n, size_t i, unsigned gen)
{
	for (size_t j = 0; j < n; j++)
		if (p[j] != (unsigned char)(i * 7 + j * 13 + gen))
			return 0;
	return 1;
}

static long peak_kib(void)
{
	char line[256];
	long v = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "VmHWM:", 6))
			v = atol(line + 6);
	fclose(f);
	return v;
}

/* smallobj units UNIT: objects the size of a SQLite page-cache entry (a
 * 4 KiB page and its headers) must each lie inside one fetch unit of UNIT
 * bytes under the shim, where their class allows it at no cost (see
 * emm_pl_place in preload.c): one fault per cold touch, not two. Their
 * bytes are checked too. Exit 1 if any crosses a unit edge. Only under
 * `ethermem run --small-objects`: glibc places them as it likes. */
static int units(size_t unit)
{
	enum { N = 2000 };
	static unsigned char *o[N];
	size_t sz[] = { 4400, 4136, 5120 }, cross = 0;

	for (size_t i = 0; i < N; i++) {
		size_t l = sz[i % 3];

		o[i] = malloc(l);
		if (!o[i])
			return 1;
		memset(o[i], (int)(i * 7 + 1), l);
		cross += (uintptr_t)o[i] / unit != ((uintptr_t)o[i] + l - 1) / unit;
	}
	for (size_t i = 0; i < N; i++) {
		for (size_t j = 0; j < sz[i % 3]; j++)
			check(o[i][j] == (unsigned char)(i * 7 + 1), "a byte changed", i);
		free(o[i]);
	}
	printf("units: %zu of %d objects cross a %zu-byte unit edge\n", cross, N, unit);
	return cross || bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 64, total = 0, n = 0, cap = 1 << 16;
	unsigned char **obj = malloc(cap * sizeof(*obj));
	size_t *len = malloc(cap * sizeof(*len));
	uint64_t h = 1469598103934665603ull;
	pid_t pid;
	int st;

	if (argc > 2 && !strcmp(argv[1], "units"))
		return units((size_t)atol(argv[2]));
	if (!obj || !len)
		return 1;
	/* the table itself is one big allocation: a pool block either way */
	obj = realloc(obj, (mib << 20) / 8 * sizeof(*obj));
	len = realloc(len, (mib << 20) / 8 * sizeof(*len));
	if (!obj || !len)
		return 1;
	while (total < mib << 20) {
		len[n] = size_of(n);
		obj[n] = n % 5 == 4 ? calloc(1, len[n]) : malloc(len[n]);
		check(obj[n] != NULL, "allocation failed", n);
		if (!obj[n])
			return 1;
		check(malloc_usable_size(obj[n]) >= len[n], "usable size below the request", n);
		if (n % 5 == 4)
			for (size_t j = 0; j < len[n]; j++)
				if (obj[n][j]) {
					check(0, "calloc memory not zero", n);
					break;
				}
		fill(obj[n], len[n], n, 0);
		total += len[n];
		n++;
	}
	for (size_t i = 0; i < n; i++)
		check(same(obj[i], len[i], i, 0), "object changed", i);
	/* realloc: every third grows, every seventh shrinks; the prefix stays */
	for (size_t i = 0; i < n; i++) {
		size_t nl = i % 3 == 0 ? len[i] * 3 + 5 : i % 7 == 0 ? len[i] / 2 + 1 : len[i];
		unsigned char *q;

		if (nl == len[i])
			continue;
		q = realloc(obj[i], nl);
		check(q != NULL, "realloc failed", i);
		if (!q)
			return 1;
		check(same(q, nl < len[i] ? nl : len[i], i, 0), "realloc lost data", i);
		check(malloc_usable_size(q) >= nl, "usable size below the realloc", i);
		obj[i] = q;
		len[i] = nl;
		fill(q, nl, i, 1);
	}
	/* half freed, then allocated again (reuse of freed objects) */
	for (size_t i = 0; i < n; i += 2)
		free(obj[i]);
	for (size_t i = 0; i < n; i += 2) {
		len[i] = size_of(i + n);
		obj[i] = malloc(len[i]);
		if (!obj[i])
			return 1;
	}
	for (size_t i = 0; i < n; i++)
		fill(obj[i], len[i], i, 2);
	/* aligned allocations */
	for (size_t a = 16, i = 0; a <= 65536; a *= 2, i++) {
		void *p = NULL;

		check(posix_memalign(&p, a, 100 + i) == 0 && p && !((uintptr_t)p % a),
		      "posix_memalign misaligned", i);
		if (p)
			memset(p, 1, 100 + i);
		free(p);
		p = aligned_alloc(a, a * 2);
		check(p && !((uintptr_t)p % a), "aligned_alloc misaligned", i);
		if (p)
			memset(p, 2, a * 2);
		free(p);
		p = memalign(a, 3);
		check(p && !((uintptr_t)p % a) && malloc_usable_size(p) >= 3, "memalign", i);
		free(p);
	}
	fprintf(stderr, "peak-rss-kib %ld\n", peak_kib());
	/* a child sees the parent's objects and allocates its own */
	pid = fork();
	if (pid == 0) {
		int cbad = 0;

		for (size_t i = 0; i < n; i++)
			cbad |= !same(obj[i], len[i], i, 2);
		for (size_t i = 0; i < n; i += 3) {
			free(obj[i]);
			obj[i] = malloc(len[i]);
			if (!obj[i])
				_exit(1);
			fill(obj[i], len[i], i, 3);
		}
		for (size_t i = 0; i < n; i++)
			cbad |= !same(obj[i], len[i], i, i % 3 ? 2 : 3);
		_exit(cbad);
	}
	check(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && !WEXITSTATUS(st),
	      "the child saw other data", 0);
	for (size_t i = 0; i < n; i++) {
		check(same(obj[i], len[i], i, 2), "object changed (after the fork)", i);
		h = (h ^ len[i]) * 1099511628211ull;
		h = (h ^ obj[i][len[i] - 1]) * 1099511628211ull;
	}
	printf("objects %zu digest %016llx\n", n, (unsigned long long)h);
	for (size_t i = 0; i < n; i++)
		free(obj[i]);
	free(obj);
	free(len);
	return bad != 0;
}
