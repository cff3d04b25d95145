/*
 * bench_loaded.c - `ethermem bench loaded`: the latency of small reads while
 * bulk transfers load the same node.
 *
 * One probe client reads 4 KiB at queue depth 1 while N bulk clients, each
 * with its own pool connection and thread, move 2 MiB at queue depth 8. The
 * bulk clients first run alone and unpaced: that throughput is the 100%
 * mark. Then the probe runs with the bulk clients paced to 0, 25, 50, 80 and
 * 100% of it, so each row's probe percentiles read as a ratio to the
 * unloaded row of the same run, and each row's bulk throughput as a ratio to
 * what was offered (at 100%: to the bulk clients alone). Reads first, then
 * the same with bulk writes.
 *
 * Pacing is a token bucket per bulk client that may run ahead by at most one
 * queue's worth, so an offered load is a rate, not a burst followed by a
 * pause; a client that cannot keep up simply runs unpaced. The bulk figure
 * counts only what completed while the probe was measuring.
 *
 * --same-queue puts the probe on the bulk client's own queue (one bulk
 * client, one thread, one connection): what a small read waits for behind
 * bulk reads on the same connection, which only the client can order.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "common/util.h"
#include "lib/internal.h"

#define PROBE_SIZE 4096u
#define BULK_SIZE (2u << 20)
#define BULK_QD 8u
#define BULK_REGION (BULK_SIZE * BULK_QD * 2)
#define PROBE_REGION (16u << 20)
#define MAX_CLIENTS 16
#define MAX_SAMPLES (4u << 20)
#define PROBE_DATA BULK_QD /* user_data of the probe's op on a shared queue */

struct bulk {
	pthread_t th;
	em_pool *pool;
	em_region *r;
	em_queue *q;
	uint8_t *bufs;
	bool write;
	double rate;    /* bytes per second; 0: unpaced */
	uint64_t moved; /* completed while *measuring */
	int rc;
	uint64_t seed;
	const int *run, *measuring;
	/* --same-queue: this thread also probes, on its own queue */
	bool nobulk;
	uint64_t *lat;
	unsigned nlat;
	uint8_t probe_buf[PROBE_SIZE];
};

struct loaded {
	bool json, quick, same_queue;
	uint64_t time_ns;
	unsigned clients;
	const char *transport;
	struct bulk bk[MAX_CLIENTS];
	em_pool *pool; /* the probe's */
	em_region *r;
	uint64_t *lat;
	uint8_t buf[PROBE_SIZE];
	uint64_t seed;
	int run, measuring;
	int node_pid; /* --node-pid: the node's CPU is counted too */
	/* the last level's CPU: cores busy (-1: unknown), and per operation
	 * (probe reads and bulk transfers) of this process and the node */
	double client_cpu, node_cpu, cpu_us_per_op;
};

static uint64_t xs(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };
	nanosleep(&ts, NULL);
}

static void *bulk_main(void *arg)
{
	struct bulk *k = arg;
	struct em_completion c[BULK_QD + 1];
	unsigned free_slot[BULK_QD], nfree = BULK_QD, inflight = 0;
	uint64_t t0 = em_now_ns(), issued = 0, probe_t0 = 0;
	const double burst = (double)BULK_SIZE * BULK_QD;
	bool probing = false;

	for (unsigned i = 0; i < BULK_QD; i++)
		free_slot[i] = i;
	while (!k->rc && (__atomic_load_n(k->run, __ATOMIC_ACQUIRE) || inflight || probing)) {
		bool go = __atomic_load_n(k->run, __ATOMIC_ACQUIRE) && !k->nobulk;
		uint64_t wait_ns = 0;

		if (k->lat && !probing && __atomic_load_n(k->measuring, __ATOMIC_ACQUIRE)) {
			struct em_op op = {
				.opcode = EM_OP_READ,
				.region = k->r,
				.offset = (xs(&k->seed) % (BULK_REGION / PROBE_SIZE)) * PROBE_SIZE,
				.buf = k->probe_buf,
				.len = PROBE_SIZE,
				.user_data = PROBE_DATA,
			};
			probe_t0 = em_now_ns();
			int n = em_submit(k->q, &op, 1);
			if (n != 1) {
				k->rc = n < 0 ? n : -EAGAIN;
				break;
			}
			probing = true;
		}

		while (go && nfree) {
			if (k->rate > 0) {
				double allowed = k->rate * (double)(em_now_ns() - t0) / 1e9;
				/* a client that fell behind does not catch up in a burst */
				if (allowed - (double)issued > burst)
					issued = (uint64_t)(allowed - burst);
				if ((double)issued + BULK_SIZE > allowed) {
					wait_ns =
						(uint64_t)(((double)issued + BULK_SIZE - allowed) /
							   k->rate * 1e9) +
						1;
					break;
				}
			}
			unsigned slot = free_slot[--nfree];
			struct em_op op = {
				.opcode = k->write ? EM_OP_WRITE : EM_OP_READ,
				.region = k->r,
				.offset = (xs(&k->seed) % (BULK_REGION / BULK_SIZE)) * BULK_SIZE,
				.buf = k->bufs + (size_t)slot * BULK_SIZE,
				.len = BULK_SIZE,
				.user_data = slot,
			};
			int n = em_submit(k->q, &op, 1);
			if (n != 1) {
				k->rc = n < 0 ? n : -EAGAIN;
				free_slot[nfree++] = slot;
				break;
			}
			issued += BULK_SIZE;
			inflight++;
		}
		if (k->rc)
			break;
		if (!inflight && !probing) {
			if (__atomic_load_n(k->run, __ATOMIC_ACQUIRE))
				sleep_ns(EM_MIN(wait_ns ? wait_ns : 100000, 1000000ull));
			continue;
		}
		/* a paced client waits for a completion or its next token, whichever
		 * comes first (em_wait counts in milliseconds) */
		unsigned nbulk = 0;
		int n = em_wait(k->q, c, 1, BULK_QD + 1,
				wait_ns ? (int)(wait_ns / 1000000 + 1) : -1);
		if (n < 0) {
			k->rc = n;
			break;
		}
		for (int i = 0; i < n; i++) {
			if (c[i].result && !k->rc)
				k->rc = c[i].result;
			if (c[i].user_data == PROBE_DATA) {
				if (k->nlat < MAX_SAMPLES)
					k->lat[k->nlat++] = em_now_ns() - probe_t0;
				probing = false;
				continue;
			}
			nbulk++;
			free_slot[nfree++] = (unsigned)c[i].user_data;
			if (__atomic_load_n(k->measuring, __ATOMIC_ACQUIRE))
				k->moved += BULK_SIZE;
		}
		inflight -= nbulk;
	}
	return NULL;
}

/*
 * One load level: starts the bulk clients at `rate` bytes per second in all
 * (0: unpaced, <0: not at all), lets them settle, then measures the probe
 * (if `probe`) and the bulk bytes for --time. Returns the bulk GB/s.
 */
static int level(struct loaded *L, bool write, double rate, bool probe, double *gbps,
		 unsigned *nlat)
{
	uint64_t t0, secs_ns, moved = 0;
	int64_t ccpu, ncpu;
	unsigned n = 0, started = 0;
	int rc = 0;

	L->run = 1;
	L->measuring = 0;
	/* on a shared queue the bulk client's thread probes, with no bulk at
	 * load 0 */
	for (unsigned i = 0; (rate >= 0 || L->same_queue) && i < L->clients; i++) {
		struct bulk *k = &L->bk[i];
		k->write = write;
		k->nobulk = rate < 0;
		k->rate = rate > 0 ? rate / L->clients : 0;
		k->lat = L->same_queue && probe ? L->lat : NULL;
		k->nlat = 0;
		k->moved = 0;
		k->rc = 0;
		k->run = &L->run;
		k->measuring = &L->measuring;
		if ((rc = -pthread_create(&k->th, NULL, bulk_main, k)))
			break;
		started++;
	}
	if (!rc && started)
		sleep_ns(L->quick ? 50000000ull : 200000000ull); /* queues fill, pacing settles */
	ccpu = em_cli_cpu_ns(0);
	ncpu = L->node_pid ? em_cli_cpu_ns(L->node_pid) : -1;
	__atomic_store_n(&L->measuring, 1, __ATOMIC_RELEASE);
	t0 = em_now_ns();
	while (!rc && em_now_ns() - t0 < L->time_ns) {
		if (!probe || L->same_queue) {
			sleep_ns(EM_MIN(L->time_ns, 10000000ull));
			continue;
		}
		uint64_t off = (xs(&L->seed) % (PROBE_REGION / PROBE_SIZE)) * PROBE_SIZE;
		uint64_t s = em_now_ns();
		rc = em_read(L->r, off, L->buf, PROBE_SIZE);
		if (n < MAX_SAMPLES)
			L->lat[n++] = em_now_ns() - s;
	}
	__atomic_store_n(&L->measuring, 0, __ATOMIC_RELEASE);
	secs_ns = em_now_ns() - t0;
	ccpu = ccpu < 0 ? -1 : em_cli_cpu_ns(0) - ccpu;
	ncpu = ncpu < 0 ? -1 : em_cli_cpu_ns(L->node_pid) - ncpu;
	__atomic_store_n(&L->run, 0, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < started; i++) {
		pthread_join(L->bk[i].th, NULL);
		moved += L->bk[i].moved;
		if (L->same_queue && probe)
			n = L->bk[i].nlat;
		if (!rc && L->bk[i].rc)
			rc = L->bk[i].rc;
	}
	*gbps = (double)moved / ((double)secs_ns / 1e9) / 1e9;
	*nlat = n;
	L->client_cpu = ccpu < 0 ? -1 : (double)ccpu / (double)secs_ns;
	L->node_cpu = ncpu < 0 ? -1 : (double)ncpu / (double)secs_ns;
	moved = moved / BULK_SIZE + n;
	L->cpu_us_per_op = moved && ccpu >= 0
				   ? (double)(ccpu + (ncpu < 0 ? 0 : ncpu)) / 1e3 / (double)moved
				   : 0;
	return rc;
}

static double pct(const uint64_t *lat, unsigned n, double p)
{
	return n ? (double)lat[(size_t)((double)n * p)] / 1e3 : 0;
}

static void usage(void)
{
	printf("usage: ethermem bench loaded [--clients N] [--json] [--quick] [--reads-only]\n"
	       "                             [--time SECONDS] [--same-queue] [--many N [--node-pid PID]]\n"
	       "Measures a probe client's 4 KiB reads at queue depth 1 while N bulk clients\n"
	       "(default 2, each its own connection) move 2 MiB at queue depth 8, paced to\n"
	       "0, 25, 50, 80 and 100%% of the bulk throughput measured alone first in the\n"
	       "same run; bulk reads, then bulk writes (--reads-only: reads only).\n"
	       "--time SECONDS: how long each load level measures (default 2, --quick 1).\n"
	       "--same-queue: one bulk client, and the probe's reads go through its queue\n"
	       "(same connection, same thread) instead of a connection of their own.\n"
	       "--json prints one JSON object per load level.\n"
	       "--many N: instead, N connections at once doing verified 4 KiB writes and\n"
	       "reads for --time; one row with latency, per-connection throughput and\n"
	       "(--node-pid PID, a node on this machine) the node's threads and RSS.\n"
	       "--node-pid PID also counts the node's CPU in each row's CPU per op.\n");
}

int em_cli_bench_loaded(int argc, char **argv, struct em_cli_pool *cp)
{
	static const double loads[] = { 0, 0.25, 0.50, 0.80, 1.0 };
	struct loaded *L = calloc(1, sizeof(*L));
	bool reads_only = false, time_set = false;
	unsigned long many = 0, node_pid = 0;
	int rc = 0;

	if (!L)
		return 1;
	L->clients = 2;
	L->seed = 0x9e3779b97f4a7c15ull;
	L->time_ns = 2000000000ull;
	for (int i = 1; i < argc; i++) {
		char *end;

		if (!strcmp(argv[i], "--json")) {
			L->json = true;
		} else if (!strcmp(argv[i], "--quick")) {
			L->quick = true;
		} else if (!strcmp(argv[i], "--same-queue")) {
			L->same_queue = true;
		} else if (!strcmp(argv[i], "--reads-only")) {
			reads_only = true;
		} else if (!strcmp(argv[i], "--time") && i + 1 < argc) {
			double t = strtod(argv[++i], &end);
			if (end == argv[i] || *end || !(t > 0 && t <= 3600)) {
				fprintf(stderr,
					"ethermem bench loaded: --time wants seconds in "
					"(0, 3600], not '%s'\n",
					argv[i]);
				rc = 2;
				goto out;
			}
			L->time_ns = (uint64_t)(t * 1e9);
			time_set = true;
		} else if (!strcmp(argv[i], "--clients") && i + 1 < argc) {
			unsigned long v = strtoul(argv[++i], &end, 10);
			if (end == argv[i] || *end || v < 1 || v > MAX_CLIENTS) {
				fprintf(stderr,
					"ethermem bench loaded: --clients wants 1..%d, not "
					"'%s'\n",
					MAX_CLIENTS, argv[i]);
				rc = 2;
				goto out;
			}
			L->clients = (unsigned)v;
		} else if ((!strcmp(argv[i], "--many") || !strcmp(argv[i], "--node-pid")) &&
			   i + 1 < argc) {
			bool m = !strcmp(argv[i], "--many");
			unsigned long v = strtoul(argv[++i], &end, 10);
			if (end == argv[i] || *end || v < 1 || v > (m ? 100000 : 1u << 30)) {
				fprintf(stderr, "ethermem bench loaded: %s wants %s, not '%s'\n",
					argv[i - 1], m ? "1..100000 connections" : "a process id",
					argv[i]);
				rc = 2;
				goto out;
			}
			*(m ? &many : &node_pid) = v;
		} else if (!strcmp(argv[i], "--help")) {
			usage();
			goto out;
		} else {
			fprintf(stderr, "ethermem bench loaded: unknown argument '%s'\n", argv[i]);
			rc = 2;
			goto out;
		}
	}
	if (L->same_queue)
		L->clients = 1;
	L->node_pid = (int)node_pid;
	if (L->quick && !time_set)
		L->time_ns = 1000000000ull;
	L->lat = malloc(MAX_SAMPLES * sizeof(*L->lat));
	if (!L->lat) {
		rc = 1;
		goto out;
	}
	if (em_cli_connect(cp, &L->pool, "ethermem bench loaded")) {
		rc = 1;
		goto out;
	}
	L->transport = L->pool->tp->name;
	if (many) {
		rc = em_cli_bench_many(L->pool, (unsigned)many, L->time_ns, (int)node_pid, L->json);
		goto out;
	}
	rc = em_region_create(L->pool, NULL, PROBE_REGION, NULL, &L->r);
	for (unsigned i = 0; !rc && i < L->clients; i++) {
		struct bulk *k = &L->bk[i];
		k->seed = 0x2545f4914f6cdd1dull * (i + 1);
		k->bufs = malloc((size_t)BULK_SIZE * BULK_QD);
		if (!k->bufs) {
			rc = -ENOMEM;
			break;
		}
		memset(k->bufs, 0x5a, (size_t)BULK_SIZE * BULK_QD);
		/* the node's first touch of every page, outside the measurement */
		for (uint64_t off = 0; !i && !rc && off < PROBE_REGION; off += BULK_SIZE)
			rc = em_write(L->r, off, k->bufs, BULK_SIZE);
		rc = em_pool_connect(&k->pool, &cp->opts);
		if (!rc)
			rc = em_region_create(k->pool, NULL, BULK_REGION, NULL, &k->r);
		for (uint64_t off = 0; !rc && off < BULK_REGION; off += BULK_SIZE)
			rc = em_write(k->r, off, k->bufs, BULK_SIZE);
		if (!rc)
			rc = em_queue_create(k->pool, BULK_QD + L->same_queue, &k->q);
	}
	if (rc) {
		fprintf(stderr, "ethermem bench loaded: setup failed: %s\n", em_strerror(rc));
		rc = 1;
		goto out;
	}
	if (!L->json)
		printf("%-6s %5s %10s %10s %10s %9s %9s %7s %8s\n", "bulk", "load", "p50 us",
		       "p99 us", "p999 us", "GB/s", "alone", "ratio", "samples");
	for (int w = 0; w < (reads_only ? 1 : 2) && !rc; w++) {
		double alone, g, p99_0 = 0, p999_0 = 0, worst = 1e9;
		unsigned n;

		rc = level(L, w, 0, false, &alone, &n);
		for (unsigned li = 0; li < 5 && !rc; li++) {
			double ld = loads[li], p50, p99, p999, ratio;

			rc = level(L, w,
				   ld == 1.0 ? 0
				   : ld == 0 ? -1
					     : ld * alone * 1e9,
				   true, &g, &n);
			if (rc)
				break;
			qsort(L->lat, n, sizeof(*L->lat), cmp_u64);
			p50 = pct(L->lat, n, 0.5);
			p99 = pct(L->lat, n, 0.99);
			p999 = pct(L->lat, n, 0.999);
			ratio = ld > 0 && alone > 0 ? g / (ld * alone) : 0;
			if (ld == 0) {
				p99_0 = p99;
				p999_0 = p999;
			} else if (ratio < worst) {
				worst = ratio;
			}
			if (L->json)
				printf("{\"op\":\"loaded\",\"bulk_op\":\"%s\",\"load\":%.2f,"
				       "\"transport\":\"%s\",\"clients\":%u,\"same_queue\":%s,"
				       "\"probe_size\":%u,"
				       "\"bulk_size\":%u,\"bulk_qd\":%u,\"probe_p50_us\":%.2f,"
				       "\"probe_p99_us\":%.2f,\"probe_p999_us\":%.2f,"
				       "\"probe_samples\":%u,\"bulk_gbps\":%.3f,"
				       "\"bulk_alone_gbps\":%.3f,\"bulk_ratio\":%.3f,"
				       "\"client_cpu\":%.3f,\"node_cpu\":%.3f,"
				       "\"cpu_us_per_op\":%.2f}\n",
				       w ? "write" : "read", ld, L->transport, L->clients,
				       L->same_queue ? "true" : "false", PROBE_SIZE, BULK_SIZE,
				       BULK_QD, p50, p99, p999, n, g, alone, ratio, L->client_cpu,
				       L->node_cpu, L->cpu_us_per_op);
			else
				printf("%-6s %5.2f %10.2f %10.2f %10.2f %9.3f %9.3f %7.3f %8u\n",
				       w ? "write" : "read", ld, p50, p99, p999, g, alone, ratio,
				       n);
			if (li == 3 && !L->json && p99_0 > 0)
				printf("  at 80%%: p99 %.2fx unloaded (goal <= 2), p999 %.2fx "
				       "(goal <= 3)\n",
				       p99 / p99_0, p999 / p999_0);
			fflush(stdout);
		}
		if (!rc && !L->json)
			printf("  bulk delivered / offered, worst level: %.3f (goal >= 0.95)\n",
			       worst);
	}
	if (rc) {
		fprintf(stderr, "ethermem bench loaded: %s\n", em_strerror(rc));
		rc = 1;
	}
out:
	for (unsigned i = 0; i < MAX_CLIENTS; i++) {
		struct bulk *k = &L->bk[i];
		em_queue_destroy(k->q);
		if (k->r)
			em_region_close(k->r);
		em_pool_close(k->pool);
		free(k->bufs);
	}
	if (L->r)
		em_region_close(L->r);
	em_pool_close(L->pool);
	free(L->lat);
	free(L);
	return rc;
}
