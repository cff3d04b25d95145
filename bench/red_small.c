/*
 * red_small.c - where the time of a redundant region's 4 KiB operation goes
 * against none's, measured so that a busy machine cancels out: the kinds
 * are taken in turn in blocks of OPS operations (none, none:4, ec:4+2,
 * replicate:2 for reads; none, none:2, replicate:2 for writes), BLOCKS
 * times, and each kind's figure is the median of its blocks' p50s. Beside
 * the latency, per operation: the voluntary context switches of the
 * client and of every node thread (a thread that slept and was woken; a
 * worker that caught the request while it spun adds none) and the
 * client's CPU time. none:N is N regions without redundancy, each on its
 * own node: reads go to one of them at random (as an ec:4+2 read goes to
 * one of four data nodes) and writes to N of them at once with one
 * em_submit (as replicate:N writes both copies).
 *
 *   red_small read|write BLOCKS OPS   (ETHERMEM_NODES: seven nodes;
 *                                      NODE_PIDS: their pids, comma-separated)
 *
 * Built and run by bench/redundancy.sh BUILD small [BLOCKS OPS [NODE FLAGS]].
 */
#include <dirent.h>
#include <ethermem.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define SPREAD 4
#define MAXB 64

struct kind {
	const char *name;
	em_region *r; /* one region, or NULL: the SPREAD single-node ones */
	unsigned fan; /* none:N: how many of them (reads pick one, writes all) */
	double p50[MAXB], vcsw, nvcsw, cpu;
};

static uint64_t seed = 88172645463325252ull;

static uint64_t rnd(void)
{
	seed ^= seed << 13;
	seed ^= seed >> 7;
	seed ^= seed << 17;
	return seed;
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Voluntary context switches of every thread of the pids in NODE_PIDS. */
static double node_vcsw(void)
{
	const char *e = getenv("NODE_PIDS");
	char list[1024], *save = NULL;
	double sum = 0;

	if (!e)
		return 0;
	snprintf(list, sizeof(list), "%s", e);
	for (char *pid = strtok_r(list, ",", &save); pid; pid = strtok_r(NULL, ",", &save)) {
		char dir[64], path[384], line[256];
		struct dirent *de;
		DIR *d;

		snprintf(dir, sizeof(dir), "/proc/%s/task", pid);
		if (!(d = opendir(dir)))
			continue;
		while ((de = readdir(d))) {
			FILE *f;

			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%.64s/status", dir, de->d_name);
			if (!(f = fopen(path, "r")))
				continue;
			while (fgets(line, sizeof(line), f))
				if (!strncmp(line, "voluntary_ctxt_switches:", 24))
					sum += atof(line + 24);
			fclose(f);
		}
		closedir(d);
	}
	return sum;
}

static void self_use(double *vcsw, double *cpu_us)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	*vcsw = (double)u.ru_nvcsw;
	*cpu_us = (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 +
		  (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static int one(em_queue *q, em_region **sp, uint64_t part, struct kind *k, bool write, uint8_t *buf)
{
	struct em_completion c[SPREAD];
	struct em_op op[SPREAD];
	uint64_t off;
	int rc;

	if (k->r) {
		off = (rnd() % (SPREAD * part / 4096)) * 4096;
		return write ? em_write(k->r, off, buf, 4096) : em_read(k->r, off, buf, 4096);
	}
	off = (rnd() % (part / 4096)) * 4096;
	if (!write)
		return em_read(sp[rnd() % k->fan], off, buf, 4096);
	for (unsigned i = 0; i < k->fan; i++)
		op[i] = (struct em_op){ .opcode = EM_OP_WRITE,
					.region = sp[i],
					.offset = off,
					.buf = buf,
					.len = 4096 };
	rc = em_submit(q, op, k->fan);
	if (rc != (int)k->fan)
		return rc < 0 ? rc : -1;
	for (unsigned got = 0; got < k->fan;) {
		int m = em_wait(q, c, k->fan - got, k->fan, -1);
		if (m <= 0)
			return m < 0 ? m : -1;
		for (int i = 0; i < m; i++)
			if (c[i].result)
				return c[i].result;
		got += (unsigned)m;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const uint64_t rsize = 32u << 20, part = rsize / SPREAD;
	bool write = argc > 1 && !strcmp(argv[1], "write");
	int blocks = argc > 2 ? atoi(argv[2]) : 5, ops = argc > 3 ? atoi(argv[3]) : 1000;
	struct kind kinds[4];
	em_region *sp[SPREAD];
	unsigned nk = 0;
	uint64_t *lat;
	uint8_t *buf;
	em_queue *q;
	em_pool *pool;
	int rc;

	if (argc < 2 || (!write && strcmp(argv[1], "read")) || blocks < 1 || blocks > MAXB ||
	    ops < 10 || ops > 1000000) {
		fprintf(stderr, "usage: red_small read|write [BLOCKS 1..%d] [OPS 10..1000000]\n",
			MAXB);
		return 2;
	}
	if ((rc = em_pool_connect(&pool, NULL)) || (rc = em_queue_create(pool, 64, &q))) {
		fprintf(stderr, "red_small: connect: %s\n", em_strerror(rc));
		return 1;
	}
	buf = malloc(2u << 20);
	lat = malloc(sizeof(*lat) * (size_t)ops);
	if (!buf || !lat)
		return 1;
	memset(buf, 0x5a, 2u << 20);
	memset(kinds, 0, sizeof(kinds));
	kinds[nk++] = (struct kind){ .name = "none" };
	kinds[nk++] = (struct kind){ .name = write ? "none:2" : "none:4", .fan = write ? 2 : 4 };
	if (!write)
		kinds[nk++] = (struct kind){ .name = "ec:4+2" };
	kinds[nk++] = (struct kind){ .name = "replicate:2" };
	/* none:N's regions first, while the nodes are empty: each goes to the
	 * node with the most room, the one before it left that node with less,
	 * so they land on four different nodes */
	rc = 0;
	for (unsigned i = 0; i < SPREAD && !rc; i++) {
		rc = em_region_create(pool, NULL, part, NULL, &sp[i]);
		for (uint64_t off = 0; off < part && !rc; off += 2u << 20)
			rc = em_write(sp[i], off, buf, 2u << 20);
	}
	for (unsigned k = 0; k < nk && !rc; k++) {
		struct em_region_opts o = { .size = sizeof(o) };

		if (kinds[k].fan)
			continue;
		em_parse_redundancy(kinds[k].name, &o);
		if ((rc = em_region_create(pool, NULL, rsize, &o, &kinds[k].r)))
			break;
		for (uint64_t off = 0; off < rsize && !rc; off += 2u << 20)
			rc = em_write(kinds[k].r, off, buf, 2u << 20);
	}
	if (rc) {
		fprintf(stderr, "red_small: regions: %s\n", em_strerror(rc));
		return 1;
	}
	for (int b = 0; b < blocks; b++)
		for (unsigned k = 0; k < nk; k++) {
			double v0, c0, n0 = node_vcsw(), v1, c1;

			self_use(&v0, &c0);
			for (int i = 0; i < ops; i++) {
				uint64_t t0 = now_ns();
				if ((rc = one(q, sp, part, &kinds[k], write, buf))) {
					fprintf(stderr, "red_small: %s: %s\n", kinds[k].name,
						em_strerror(rc));
					return 1;
				}
				lat[i] = now_ns() - t0;
			}
			self_use(&v1, &c1);
			kinds[k].nvcsw += node_vcsw() - n0;
			kinds[k].vcsw += v1 - v0;
			kinds[k].cpu += c1 - c0;
			qsort(lat, (size_t)ops, sizeof(*lat), cmp_u64);
			kinds[k].p50[b] = (double)lat[ops / 2] / 1e3;
		}
	printf("4 KiB %s, median of %d blocks' p50s; per op: voluntary context switches "
	       "of the client and of all node threads, client CPU\n",
	       argv[1], blocks);
	printf("%-12s %9s %9s %12s %12s %12s\n", "kind", "p50 us", "/none", "client vcsw",
	       "node vcsw", "client us");
	double base = 0;
	for (unsigned k = 0; k < nk; k++) {
		double n = (double)blocks * ops, m;

		qsort(kinds[k].p50, (size_t)blocks, sizeof(double), cmp_dbl);
		m = kinds[k].p50[blocks / 2];
		if (!k)
			base = m;
		printf("%-12s %9.1f %9.2f %12.2f %12.2f %12.1f\n", kinds[k].name, m, m / base,
		       kinds[k].vcsw / n, kinds[k].nvcsw / n, kinds[k].cpu / n);
	}
	return 0;
}
