/*
 * red_interleave.c - the 2 MiB bandwidth of an ec:4+2 region against none's,
 * measured so that a busy machine cancels out: one process, one region of
 * each kind, and the operations of the three kinds taken in turn (none
 * 2 MiB, ec:4+2 2 MiB, none 3 MiB), so that every kind meets the same
 * moments of load; each kind's GB/s comes from the median of its
 * operations' times, which a stall of other people's programs does not
 * move. The 3 MiB none operation is the floor of EC's cost on one machine:
 * the bytes an ec:4+2 write sends (data and parity, 1.5x), moved with no
 * coding, lock or second node; its ratio t(none 2 MiB) / t(none 3 MiB) is
 * what the extra bytes alone leave of none's bandwidth.
 *
 *   red_interleave OPS      (ETHERMEM_NODES: seven nodes or more)
 *
 * Built and run by bench/redundancy.sh BUILD interleave [OPS].
 */
#include <ethermem.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KINDS 3

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	static const char *red[KINDS] = { "none", "ec:4+2", "none" };
	static const size_t sz[KINDS] = { 2u << 20, 2u << 20, 3u << 20 };
	const uint64_t rsize = 48u << 20; /* a whole number of 2 and 3 MiB ops */
	int ops = argc > 1 ? atoi(argv[1]) : 100, rc;
	em_region *r[KINDS];
	double *t[KINDS];
	uint8_t *buf;
	em_pool *pool;

	if (ops < 1 || ops > 100000) {
		fprintf(stderr, "usage: red_interleave [OPS 1..100000]\n");
		return 2;
	}
	if ((rc = em_pool_connect(&pool, NULL))) {
		fprintf(stderr, "red_interleave: connect: %s\n", em_strerror(rc));
		return 1;
	}
	buf = malloc(3u << 20);
	for (int k = 0; k < KINDS; k++)
		t[k] = calloc((size_t)ops, sizeof(double));
	if (!buf || !t[0] || !t[1] || !t[2])
		return 1;
	memset(buf, 0x5a, 3u << 20);
	for (int k = 0; k < KINDS; k++) {
		struct em_region_opts o = { .size = sizeof(o) };

		em_parse_redundancy(red[k], &o);
		if ((rc = em_region_create(pool, NULL, rsize, &o, &r[k])) ||
		    (rc = em_write(r[k], 0, buf, sz[k]))) {
			fprintf(stderr, "red_interleave: %s region: %s\n", red[k], em_strerror(rc));
			return 1;
		}
	}
	printf("%-5s %12s %12s %14s %9s %13s\n", "op", "none GB/s", "ec:4+2 GB/s", "none 3MiB GB/s",
	       "ec/none", "floor 2M/3M");
	for (int w = 0; w < 2; w++) {
		double g[KINDS];

		for (int i = 0; i < ops; i++)
			for (int j = 0; j < KINDS; j++) {
				int k = (i + j) % KINDS; /* each kind first in turn */
				uint64_t off = (uint64_t)i * sz[k] % rsize;
				double t0 = now();

				rc = w ? em_write(r[k], off, buf, sz[k])
				       : em_read(r[k], off, buf, sz[k]);
				t[k][i] = now() - t0;
				if (rc) {
					fprintf(stderr, "red_interleave: %s: %s\n", red[k],
						em_strerror(rc));
					return 1;
				}
			}
		for (int k = 0; k < KINDS; k++) {
			qsort(t[k], (size_t)ops, sizeof(double), cmp);
			g[k] = (double)sz[k] / t[k][ops / 2] / 1e9;
		}
		printf("%-5s %12.3f %12.3f %14.3f %9.2f %13.2f\n", w ? "write" : "read", g[0], g[1],
		       g[2], g[1] / g[0], t[0][ops / 2] / t[2][ops / 2]);
	}
	for (int k = 0; k < KINDS; k++) {
		em_region_close(r[k]);
		free(t[k]);
	}
	free(buf);
	em_pool_close(pool);
	return 0;
}
