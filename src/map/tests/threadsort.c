/*
 * threadsort.c - many threads faulting at once, for `ethermem run`: each of
 * T threads fills a private array from its share of one shared array
 * (every T-th element from its own offset on, wrapping around, mixed with
 * its number), sorts it and prints a digest of the result. All arrays are large
 * allocations, so under the shim every one is pool memory and the threads
 * fault concurrently (on their own arrays and on the shared one).
 *
 *   threadsort [THREADS [MIB_EACH [MIB_SHARED]]]   (default 8 32 128)
 *
 * The digests go to stdout (the same plain and under the shim: the data is
 * seeded), the wall time to stderr. Exit 0 done, 1 an allocation failed or
 * a sort came out unsorted.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t *shared;
static size_t nshared, neach, nthreads;

struct job {
	unsigned id;
	uint64_t digest;
	int bad;
};

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void *work(void *arg)
{
	struct job *j = arg;
	uint64_t *a = malloc(neach * sizeof(*a)), h = 1469598103934665603ull;

	if (!a) {
		j->bad = 1;
		return NULL;
	}
	for (size_t i = 0; i < neach; i++)
		a[i] = mix(shared[(i * nthreads + j->id) % nshared] ^ j->id);
	qsort(a, neach, sizeof(*a), cmp);
	for (size_t i = 0; i < neach; i++) {
		if (i && a[i - 1] > a[i])
			j->bad = 1;
		h = (h ^ a[i]) * 1099511628211ull;
	}
	j->digest = h;
	free(a);
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned nt = argc > 1 ? (unsigned)atoi(argv[1]) : 8;
	size_t each = argc > 2 ? (size_t)atol(argv[2]) : 32,
	       sh = argc > 3 ? (size_t)atol(argv[3]) : 128;
	struct timespec t0, t1;
	pthread_t th[64];
	struct job jobs[64];
	int bad = 0;

	if (!nt || nt > 64 || !each || !sh) {
		fprintf(stderr, "usage: threadsort [THREADS (1..64) [MIB_EACH [MIB_SHARED]]]\n");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	nthreads = nt;
	nshared = (sh << 20) / sizeof(uint64_t);
	neach = (each << 20) / sizeof(uint64_t);
	shared = malloc(nshared * sizeof(*shared));
	if (!shared) {
		fprintf(stderr, "threadsort: no memory\n");
		return 1;
	}
	for (size_t i = 0; i < nshared; i++)
		shared[i] = mix(i + 12345);
	for (unsigned i = 0; i < nt; i++) {
		jobs[i] = (struct job){ .id = i };
		if (pthread_create(&th[i], NULL, work, &jobs[i])) {
			fprintf(stderr, "threadsort: pthread_create failed\n");
			return 1;
		}
	}
	for (unsigned i = 0; i < nt; i++) {
		pthread_join(th[i], NULL);
		printf("thread %u: %016llx\n", i, (unsigned long long)jobs[i].digest);
		if (jobs[i].bad) {
			fprintf(stderr, "threadsort: thread %u failed\n", i);
			bad = 1;
		}
	}
	free(shared);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	fprintf(stderr, "threadsort: %u threads x %zu MiB, %zu MiB shared: %.3f s\n", nt, each, sh,
		(double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	return bad;
}
