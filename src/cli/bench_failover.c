/*
 * bench_failover.c - `ethermem bench failover`: what a node's death costs
 * a redundant region's users while it happens, and what its repair costs
 * them afterwards, measured on real nodes with a real SIGKILL.
 *
 * For each redundancy of the list, a fresh anonymous region is filled and
 * one thread runs 4 KiB reads and writes at random offsets, one at a time,
 * timing each. The run has three phases of --time seconds each:
 *   before   - every node alive: the workload's p50/p99 and ops/s;
 *   kill     - the node holding the region's first copy or data cell is
 *              SIGKILLed at the phase's start (its pid from --kill-pids,
 *              given in the pool's node order): the longest operation that
 *              was in flight at the kill or started in the second after
 *              it is the stall the application saw;
 *   repair   - em_region_repair_start() rebuilds the lost part on a spare
 *              node in the background (at ETHERMEM_REPAIR_RATE) while the
 *              workload goes on: the bytes rebuilt over the repair's time,
 *              and the workload's ops/s during it against `before`, and
 *              its writes' p50 before and during it.
 * For `none` (no kill: its bytes would be gone) only the `before` phase
 * runs, so the list gives the plain region's figures in the same run.
 * Every node is killed once at most: the list needs a spare node per
 * redundant entry beyond the nodes each region spans.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "common/util.h"
#include "lib/internal.h"

#define FO_IO 4096u
#define FO_MAXOPS (4u << 20)

struct fo {
	em_region *r;
	uint64_t size;
	uint8_t *buf;
	/* per op: start and duration (ns), and whether it wrote, filled by
	 * the workload thread */
	uint64_t *start, *dur;
	uint8_t *wrote;
	_Atomic uint64_t n;
	_Atomic bool stop;
	int rc;
	uint64_t seed;
};

static void *fo_worker(void *arg)
{
	struct fo *f = arg;

	while (!f->stop && f->n < FO_MAXOPS) {
		uint64_t off, s, i = f->n;
		int rc;

		f->seed ^= f->seed << 13;
		f->seed ^= f->seed >> 7;
		f->seed ^= f->seed << 17;
		off = (f->seed % (f->size / FO_IO)) * FO_IO;
		s = em_now_ns();
		rc = (f->seed >> 40) & 1 ? em_write(f->r, off, f->buf, FO_IO)
					 : em_read(f->r, off, f->buf, FO_IO);
		f->start[i] = s;
		f->dur[i] = em_now_ns() - s;
		f->wrote[i] = (f->seed >> 40) & 1;
		if (rc) {
			f->rc = rc;
			break;
		}
		f->n = i + 1;
	}
	return NULL;
}

static int cmp64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Ops that started in [t0, t1): p50 and p99 (us) of their durations, ops
 * per second over [t0, t1), and the writes' p50 (us): unlike ops/s, which
 * a descheduled thread pulls down, a median shows what each write costs
 * when a copy is being filled even on a loaded machine. */
struct fo_phase {
	double p50, p99, max, ops_s, w50;
	uint64_t n;
};

static struct fo_phase fo_stats(const struct fo *f, uint64_t t0, uint64_t t1)
{
	struct fo_phase p = { 0 };
	uint64_t n = f->n, k = 0, kw = 0, *d = malloc((size_t)(n ? n : 1) * sizeof(*d));

	if (!d)
		return p;
	for (uint64_t i = 0; i < n; i++)
		if (f->start[i] >= t0 && f->start[i] < t1 && f->wrote[i])
			d[kw++] = f->dur[i];
	if (kw) {
		qsort(d, kw, sizeof(*d), cmp64);
		p.w50 = (double)d[kw / 2] / 1e3;
	}
	for (uint64_t i = 0; i < n; i++)
		if (f->start[i] >= t0 && f->start[i] < t1)
			d[k++] = f->dur[i];
	if (k) {
		qsort(d, k, sizeof(*d), cmp64);
		p.p50 = (double)d[k / 2] / 1e3;
		p.p99 = (double)d[(size_t)((double)k * 0.99)] / 1e3;
		p.max = (double)d[k - 1] / 1e3;
	}
	p.n = k;
	p.ops_s = t1 > t0 ? (double)k * 1e9 / (double)(t1 - t0) : 0;
	free(d);
	return p;
}

static void fo_sleep_until(uint64_t t)
{
	for (uint64_t now = em_now_ns(); now < t; now = em_now_ns()) {
		struct timespec ts = { 0, (long)EM_MIN(t - now, 10000000ull) };
		nanosleep(&ts, NULL);
	}
}

/* One redundancy: fill, run the phases, print its rows. */
static int fo_one(em_pool *pool, const char *red, const struct em_region_opts *o, uint64_t size,
		  uint64_t phase_ns, const int *pids, unsigned npids, bool json)
{
	struct fo f = { .size = size, .seed = 0x9e3779b97f4a7c15ull };
	bool redundant = o->redundancy != EM_RED_NONE;
	uint64_t t0, tk = 0, tr = 0, tdone = 0, rebuilt = 0;
	struct fo_phase before, kph = { 0 }, deg = { 0 }, rep = { 0 };
	double stall = 0, repair_gbs = 0;
	pthread_t th;
	int rc;

	f.buf = malloc(2u << 20);
	f.start = malloc(FO_MAXOPS * sizeof(uint64_t));
	f.dur = malloc(FO_MAXOPS * sizeof(uint64_t));
	f.wrote = malloc(FO_MAXOPS);
	if (!f.buf || !f.start || !f.dur || !f.wrote) {
		rc = -ENOMEM;
		goto out;
	}
	memset(f.buf, 0x3c, 2u << 20);
	if ((rc = em_region_create(pool, NULL, size, o, &f.r)))
		goto out;
	for (uint64_t off = 0; off < size && !rc; off += 2u << 20)
		rc = em_write(f.r, off, f.buf, EM_MIN(2u << 20, size - off));
	if (rc)
		goto out;
	t0 = em_now_ns();
	if ((rc = pthread_create(&th, NULL, fo_worker, &f))) {
		rc = -rc;
		goto out;
	}
	fo_sleep_until(t0 + phase_ns);
	if (redundant) {
		unsigned node = __atomic_load_n(&f.r->node[0], __ATOMIC_ACQUIRE);

		if (node >= npids || pids[node] <= 0) {
			fprintf(stderr,
				"ethermem bench failover: no pid for node %u (--kill-pids)\n",
				node);
			rc = -EINVAL;
		} else {
			tk = em_now_ns();
			kill(pids[node], SIGKILL);
			fo_sleep_until(tk + phase_ns);
			/* the repair's own phase, bounded by four phases */
			tr = em_now_ns();
			rc = em_region_repair_start(f.r);
			struct em_region_info ri = { .size = sizeof(ri) };
			while (!rc && em_now_ns() - tr < 4 * phase_ns && !f.rc) {
				if ((rc = em_region_stat(f.r, &ri)))
					break;
				if (ri.state == EM_STATE_HEALTHY && ri.epoch > 0) {
					tdone = em_now_ns();
					break;
				}
				if (ri.to_rebuild)
					rebuilt = ri.to_rebuild;
				struct timespec ts = { 0, 1000000 };
				nanosleep(&ts, NULL);
			}
		}
	}
	f.stop = true;
	pthread_join(th, NULL);
	if (!rc && f.rc)
		rc = f.rc;
	if (rc)
		goto out;
	before = fo_stats(&f, t0, t0 + phase_ns);
	if (redundant) {
		/* every op in flight at the kill or started in the second after */
		for (uint64_t i = 0; i < f.n; i++)
			if (f.start[i] + f.dur[i] >= tk && f.start[i] < tk + 1000000000ull)
				stall = EM_MAX(stall, (double)f.dur[i] / 1e3);
		kph = fo_stats(&f, tk, tk + 1000000000ull);
		deg = fo_stats(&f, tk + 1000000000ull, tr);
		rep = fo_stats(&f, tr, tdone ? tdone : em_now_ns());
		if (tdone && !rebuilt) /* done before the first look: one part's bytes */
			rebuilt = o->redundancy == EM_RED_EC ? f.r->rows * f.r->chunk : size;
		if (tdone && rebuilt)
			repair_gbs = (double)rebuilt / (double)(tdone - tr);
	}
	if (json) {
		printf("{\"op\":\"failover\",\"redundancy\":\"%s\",\"size\":%u,"
		       "\"before_p50_us\":%.2f,\"before_p99_us\":%.2f,\"before_max_us\":%.2f,"
		       "\"before_ops_s\":%.0f,\"stall_max_us\":%.2f,\"after_kill_p99_us\":%.2f,"
		       "\"degraded_p50_us\":%.2f,\"degraded_ops_s\":%.0f}\n",
		       red, FO_IO, before.p50, before.p99, before.max, before.ops_s, stall, kph.p99,
		       deg.p50, deg.ops_s);
		if (redundant)
			printf("{\"op\":\"repair\",\"redundancy\":\"%s\",\"rebuilt_bytes\":%" PRIu64
			       ",\"repair_s\":%.3f,\"repair_gbps\":%.3f,\"during_ops_s\":%.0f,"
			       "\"during_p99_us\":%.2f,\"during_over_before\":%.2f,"
			       "\"before_write_p50_us\":%.2f,\"during_write_p50_us\":%.2f,\"done\":%s}\n",
			       red, rebuilt, tdone ? (double)(tdone - tr) / 1e9 : 0, repair_gbs,
			       rep.ops_s, rep.p99, before.ops_s > 0 ? rep.ops_s / before.ops_s : 0,
			       before.w50, rep.w50, tdone ? "true" : "false");
	} else {
		printf("%-12s %8.1f %9.1f %9.1f %9.0f %10.1f %9.1f %9.0f", red, before.p50,
		       before.p99, before.max, before.ops_s, stall, kph.p99, deg.ops_s);
		if (redundant)
			printf(" %9.3f %8.3f %9.0f %6.2f %8.1f %8.1f%s", (double)rebuilt / 1e9,
			       repair_gbs, rep.ops_s,
			       before.ops_s > 0 ? rep.ops_s / before.ops_s : 0, before.w50, rep.w50,
			       tdone ? "" : " (repair not done)");
		printf("\n");
	}
	fflush(stdout);
out:
	if (f.r)
		em_region_close(f.r);
	free(f.buf);
	free(f.start);
	free(f.dur);
	free(f.wrote);
	return rc;
}

int em_cli_bench_failover(int argc, char **argv, struct em_cli_pool *cp)
{
	const char *list = "none,replicate:2,ec:4+2";
	double secs = 2;
	uint64_t size = 64ull << 20;
	int pids[EM_MAX_SEG] = { 0 };
	unsigned npids = 0;
	bool json = false;
	em_pool *pool;
	int rc = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--redundancy") && i + 1 < argc) {
			list = argv[++i];
		} else if (!strcmp(argv[i], "--time") && i + 1 < argc) {
			char *end;
			secs = strtod(argv[++i], &end);
			if (end == argv[i] || *end || !(secs >= 0.2 && secs <= 600)) {
				fprintf(stderr, "ethermem bench failover: --time wants seconds in "
						"[0.2, 600]\n");
				return 2;
			}
		} else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
			if (em_parse_size(argv[++i], &size) || size < (4u << 20)) {
				fprintf(stderr,
					"ethermem bench failover: bad --size '%s' (at "
					"least 4M)\n",
					argv[i]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--kill-pids") && i + 1 < argc) {
			char *s = argv[++i], *end;
			for (npids = 0; *s && npids < EM_MAX_SEG; npids++) {
				long v = strtol(s, &end, 10);
				if (end == s || v <= 0 || (*end && *end != ',')) {
					fprintf(stderr,
						"ethermem bench failover: --kill-pids wants "
						"pids separated by commas\n");
					return 2;
				}
				pids[npids] = (int)v;
				s = *end ? end + 1 : end;
			}
		} else if (!strcmp(argv[i], "--help")) {
			printf("usage: ethermem bench failover --kill-pids PID,PID,... [--redundancy LIST]\n"
			       "                               [--time SECONDS] [--size SIZE] [--json]\n"
			       "For each redundancy of LIST (default none,replicate:2,ec:4+2) one thread\n"
			       "runs 4 KiB reads and writes at random on a fresh region of SIZE (64M)\n"
			       "for SECONDS (2), then the node of the region's first part is SIGKILLed\n"
			       "(the pids of the pool's nodes, in ETHERMEM_NODES order, on this machine)\n"
			       "and the workload runs SECONDS more, then the region is repaired in the\n"
			       "background while it goes on. Prints per redundancy: p50/p99/max before\n"
			       "the kill and ops/s; the longest operation across the kill (stall); p99 in\n"
			       "the second after it; ops/s degraded; GB rebuilt, repair GB/s, ops/s\n"
			       "during the repair and their ratio to before; the writes' p50 before and\n"
			       "during the repair. `none` runs the first\n"
			       "phase only. Each redundant entry kills one node for good.\n");
			return 0;
		} else {
			fprintf(stderr, "ethermem bench failover: unknown argument '%s'\n",
				argv[i]);
			return 2;
		}
	}
	if (em_cli_connect(cp, &pool, "ethermem bench failover"))
		return 1;
	if (npids != em_pool_n(pool) && strcmp(list, "none")) {
		fprintf(stderr,
			"ethermem bench failover: --kill-pids names %u pids, the pool has %u "
			"nodes\n",
			npids, em_pool_n(pool));
		em_pool_close(pool);
		return 2;
	}
	/* the repair phase starts the repair: none may start before it */
	setenv("ETHERMEM_AUTO_REPAIR", "0", 1);
	if (!json)
		printf("%-12s %8s %9s %9s %9s %10s %9s %9s %9s %8s %9s %6s %8s %8s\n", "redundancy",
		       "p50 us", "p99 us", "max us", "ops/s", "stall us", "p99 kill", "ops/s dg",
		       "GB rebuilt", "GB/s", "ops/s rep", "ratio", "w50 us", "w50 rep");
	char *dup = strdup(list), *save = NULL;
	for (char *tok = dup ? strtok_r(dup, ",", &save) : NULL; tok && !rc;
	     tok = strtok_r(NULL, ",", &save)) {
		struct em_region_opts o = { .size = sizeof(o) };
		if (em_parse_redundancy(tok, &o)) {
			fprintf(stderr, "ethermem bench failover: bad redundancy '%s'\n", tok);
			rc = -EINVAL;
			break;
		}
		rc = fo_one(pool, tok, &o, size, (uint64_t)(secs * 1e9), pids, npids, json);
		if (rc)
			fprintf(stderr, "ethermem bench failover: %s: %s\n", tok, em_strerror(rc));
	}
	free(dup);
	em_pool_close(pool);
	return rc ? 1 : 0;
}
