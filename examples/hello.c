/*
 * hello.c - a tour of libethermem, used by scripts/demo.sh and meant to be
 * read: connect to the pool, make a region larger than any one node (it is
 * striped), write and read it, batch many operations through a queue, and
 * count with remote atomics from several threads at once.
 *
 *   ETHERMEM_NODES=tcp://h1:7420,tcp://h2:7420 ETHERMEM_SECRET_FILE=... \
 *       build/ethermem-example [MiB]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ethermem.h"

#define THREADS 4
#define ADDS 5000

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int die(const char *what, int rc)
{
	fprintf(stderr, "ethermem-example: %s: %s\n", what, em_strerror(rc));
	exit(1);
}

static void *adder(void *arg)
{
	em_region *r = arg;
	em_queue *q;
	struct em_op ops[32];
	struct em_completion c[32];
	int rc;

	/* one queue per thread: queues are the unit of parallelism */
	if ((rc = em_queue_create(em_region_pool(r), 32, &q)))
		die("queue", rc);
	for (int done = 0; done < ADDS; done += 32) {
		int n = ADDS - done < 32 ? ADDS - done : 32, got = 0;
		for (int i = 0; i < n; i++)
			ops[i] = (struct em_op){ .opcode = EM_OP_ATOMIC,
						 .atomic_op = EM_ATOMIC_FADD,
						 .region = r,
						 .offset = 0,
						 .operand = 1 };
		if ((rc = em_submit(q, ops, (unsigned)n)) != n)
			die("submit", rc);
		while (got < n) {
			int m = em_wait(q, c, 1, 32, -1);
			if (m <= 0)
				die("wait", m);
			for (int i = 0; i < m; i++)
				if (c[i].result)
					die("atomic", c[i].result);
			got += m;
		}
	}
	em_queue_destroy(q);
	return NULL;
}

int main(int argc, char **argv)
{
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 256, size = mib << 20, sum = 0;
	/* result structs carry their size, so that a newer library can grow them */
	struct em_node_status st[16] = { { .size = sizeof(st[0]) } };
	struct em_region_info info = { .size = sizeof(info) };
	pthread_t th[THREADS];
	em_pool *pool;
	em_region *r, *counter;
	uint8_t *buf;
	double t;
	int rc, n;

	if ((rc = em_pool_connect(&pool, NULL)))
		die("connect (set ETHERMEM_NODES and ETHERMEM_SECRET_FILE)", rc);
	n = em_pool_status(pool, st, 16);
	printf("pool: %d nodes\n", n);
	for (int i = 0; i < n; i++)
		printf("  %s: %llu MiB exported, %llu MiB used\n", st[i].addr,
		       (unsigned long long)(st[i].capacity >> 20),
		       (unsigned long long)(st[i].used >> 20));

	if ((rc = em_region_create(pool, "demo-data", size, NULL, &r)))
		die("create region", rc);
	em_region_list(pool, &info, 1);
	printf("region 'demo-data': %llu MiB over %u node(s), %llu KiB chunks\n",
	       (unsigned long long)mib, info.nodes, (unsigned long long)(info.chunk_size >> 10));

	buf = malloc(4u << 20);
	t = now();
	for (uint64_t off = 0; off < size; off += 4u << 20) {
		for (size_t i = 0; i < (4u << 20) / 8; i++)
			((uint64_t *)buf)[i] = off + i;
		if ((rc = em_write(r, off, buf, 4u << 20)))
			die("write", rc);
	}
	printf("wrote %llu MiB in %.2f s (%.2f GB/s)\n", (unsigned long long)mib, now() - t,
	       (double)size / (now() - t) / 1e9);
	t = now();
	for (uint64_t off = 0; off < size; off += 4u << 20) {
		if ((rc = em_read(r, off, buf, 4u << 20)))
			die("read", rc);
		for (size_t i = 0; i < (4u << 20) / 8; i++)
			if (((uint64_t *)buf)[i] != off + i) {
				fprintf(stderr, "ethermem-example: data mismatch at %llu\n",
					(unsigned long long)(off + i * 8));
				return 1;
			}
		sum += (4u << 20);
	}
	printf("read back and verified %llu MiB in %.2f s\n", (unsigned long long)(sum >> 20),
	       now() - t);

	if ((rc = em_region_create(pool, NULL, 4096, NULL, &counter)))
		die("create counter", rc);
	t = now();
	for (int i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, adder, counter);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	if ((rc = em_atomic(counter, 0, EM_ATOMIC_FADD, 0, 0, &sum)))
		die("read counter", rc);
	printf("%d threads x %d remote fetch-and-adds = %llu (expected %d) in %.2f s\n", THREADS,
	       ADDS, (unsigned long long)sum, THREADS * ADDS, now() - t);

	em_region_close(counter);
	em_region_close(r);
	if ((rc = em_region_delete(pool, "demo-data")))
		die("delete", rc);
	em_pool_close(pool);
	free(buf);
	return sum == THREADS * ADDS ? 0 : 1;
}
