/*
 * bench_many.c - `ethermem bench loaded --many N`: one node serving N
 * client connections at once, each doing verified 4 KiB writes and reads.
 *
 * Each connection is a queue of one pool (a queue is a connection of its
 * own) with a 4 KiB slot of its own in one shared region. A few driver
 * threads each own a share of the queues and go round them: every queue
 * gets one request in flight (a write of a pattern that names the queue and
 * the round, or a read of the last one, compared byte for byte), then each
 * is waited for. So all N connections have a request at the node at once,
 * which is the load a node with a thread per connection handles worst. An
 * operation's latency runs from its submission to the return of its wait:
 * it includes waiting behind the driver's other queues, as any client with
 * many queues would. Reported: connections, the node's threads and resident
 * memory (when --node-pid names the node's process, which must run on this
 * machine), latency percentiles, and the slowest and fastest connection's
 * operations per second - the spread says whether anyone was starved.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/util.h"
#include "lib/internal.h"

#define SLOT 4096u
#define DRIVERS 2u

struct many {
	em_region *r;
	em_queue **q;
	uint64_t *ops; /* per connection */
	unsigned n;
	uint64_t time_ns;
	uint64_t *lat;
	size_t nlat, caplat;
	pthread_mutex_t lock;
	int rc;
};

struct driver {
	struct many *M;
	unsigned first, count;
	pthread_t th;
};

static void pattern(uint8_t *p, unsigned conn, uint64_t round)
{
	uint64_t s = ((uint64_t)conn << 32 | (round & 0xffffffffu)) * 0x9e3779b97f4a7c15ull + 1;

	for (unsigned i = 0; i < SLOT; i += 8) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		memcpy(p + i, &s, 8);
	}
}

static void *drive(void *arg)
{
	struct driver *d = arg;
	struct many *M = d->M;
	uint8_t *buf = malloc((size_t)d->count * SLOT), *want = malloc(SLOT);
	uint64_t *t = malloc(d->count * sizeof(*t)), *lat = NULL, t0 = em_now_ns();
	size_t nlat = 0, caplat = 0;
	int rc = buf && want && t ? 0 : -ENOMEM;

	for (uint64_t round = 0; !rc && em_now_ns() - t0 < M->time_ns; round++) {
		for (unsigned i = 0; !rc && i < d->count; i++) {
			unsigned k = d->first + i;
			struct em_op op = {
				.opcode = round % 2 ? EM_OP_READ : EM_OP_WRITE,
				.region = M->r,
				.offset = (uint64_t)k * SLOT,
				.buf = buf + (size_t)i * SLOT,
				.len = SLOT,
			};
			if (!(round % 2))
				pattern(op.buf, k, round);
			t[i] = em_now_ns();
			int n = em_submit(M->q[k], &op, 1);
			if (n != 1)
				rc = n < 0 ? n : -EAGAIN;
		}
		for (unsigned i = 0; !rc && i < d->count; i++) {
			unsigned k = d->first + i;
			struct em_completion c;
			int n = em_wait(M->q[k], &c, 1, 1, 10000);

			if (n != 1 || c.result) {
				rc = n != 1 ? (n < 0 ? n : -ETIMEDOUT) : c.result;
				break;
			}
			if (nlat == caplat) {
				uint64_t *v = realloc(lat, (caplat = caplat ? 2 * caplat : 4096) *
								   sizeof(*lat));
				if (!v) {
					rc = -ENOMEM;
					break;
				}
				lat = v;
			}
			lat[nlat++] = em_now_ns() - t[i];
			if (round % 2) {
				pattern(want, k, round - 1);
				if (memcmp(want, buf + (size_t)i * SLOT, SLOT)) {
					fprintf(stderr,
						"ethermem bench loaded: connection %u read back "
						"wrong bytes\n",
						k);
					rc = -EIO;
					break;
				}
			}
			M->ops[k]++;
		}
	}
	pthread_mutex_lock(&M->lock);
	if (!M->rc)
		M->rc = rc;
	if (M->nlat + nlat > M->caplat) {
		uint64_t *v = realloc(M->lat, (M->nlat + nlat) * sizeof(*v));
		if (v) {
			M->lat = v;
			M->caplat = M->nlat + nlat;
		}
	}
	if (M->nlat + nlat <= M->caplat) {
		memcpy(M->lat + M->nlat, lat, nlat * sizeof(*lat));
		M->nlat += nlat;
	}
	pthread_mutex_unlock(&M->lock);
	free(lat);
	free(buf);
	free(want);
	free(t);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Threads and resident KiB of a process on this machine, from /proc. */
static void proc_usage(int pid, long *threads, long *rss_kib)
{
	char path[64], line[256];
	FILE *f;

	*threads = *rss_kib = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if (pid <= 0 || !(f = fopen(path, "r")))
		return;
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "Threads: %ld", threads);
		sscanf(line, "VmRSS: %ld", rss_kib);
	}
	fclose(f);
}

int64_t em_cli_cpu_ns(int pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut, st;
	struct timespec ts;
	long hz = sysconf(_SC_CLK_TCK);
	FILE *f;
	size_t n;

	if (pid == 0)
		return clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
			       ? -1
			       : (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (pid < 0 || hz <= 0 || !(f = fopen(path, "r")))
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* the command name may hold spaces and parentheses: fields count from
	 * the last ')'; utime and stime are the 14th and 15th */
	if (!(p = strrchr(buf, ')')) ||
	    sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return -1;
	return (int64_t)((ut + st) * (1000000000ull / (unsigned long long)hz));
}

int em_cli_bench_many(em_pool *pool, unsigned n, uint64_t time_ns, int node_pid, bool json)
{
	struct many M = { .n = n, .time_ns = time_ns };
	struct driver d[DRIVERS];
	struct rlimit rl;
	long th0, rss0, th, rss;
	uint64_t lo = UINT64_MAX, hi = 0, t0;
	int64_t ccpu, ncpu;
	unsigned nd = EM_MIN(DRIVERS, n), started = 0;
	double secs;
	int rc;

	/* a descriptor per connection, and then some */
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	pthread_mutex_init(&M.lock, NULL);
	proc_usage(node_pid, &th0, &rss0);
	M.q = calloc(n, sizeof(*M.q));
	M.ops = calloc(n, sizeof(*M.ops));
	rc = M.q && M.ops ? 0 : -ENOMEM;
	if (!rc)
		rc = em_region_create(pool, NULL, (uint64_t)n * SLOT, NULL, &M.r);
	for (unsigned i = 0; !rc && i < n; i++)
		rc = em_queue_create(pool, 1, &M.q[i]);
	if (rc) {
		fprintf(stderr, "ethermem bench loaded: %u connections: %s\n", n, em_strerror(rc));
		goto out;
	}
	t0 = em_now_ns();
	ccpu = em_cli_cpu_ns(0);
	ncpu = em_cli_cpu_ns(node_pid);
	for (unsigned i = 0; i < nd; i++) {
		d[i] = (struct driver){ &M, n * i / nd, n * (i + 1) / nd - n * i / nd, 0 };
		if (pthread_create(&d[i].th, NULL, drive, &d[i]))
			break;
		started++;
	}
	/* the node's figures while every connection is open and busy */
	if (started) {
		struct timespec ts = { (time_t)(time_ns / 2 / 1000000000ull),
				       (long)(time_ns / 2 % 1000000000ull) };
		nanosleep(&ts, NULL);
	}
	proc_usage(node_pid, &th, &rss);
	for (unsigned i = 0; i < started; i++)
		pthread_join(d[i].th, NULL);
	secs = (double)(em_now_ns() - t0) / 1e9;
	ccpu = ccpu < 0 ? -1 : em_cli_cpu_ns(0) - ccpu;
	ncpu = ncpu < 0 || node_pid <= 0 ? -1 : em_cli_cpu_ns(node_pid) - ncpu;
	rc = started == nd ? M.rc : -EAGAIN;
	if (rc) {
		fprintf(stderr, "ethermem bench loaded: %u connections: %s\n", n, em_strerror(rc));
		goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		lo = EM_MIN(lo, M.ops[i]);
		hi = EM_MAX(hi, M.ops[i]);
	}
	qsort(M.lat, M.nlat, sizeof(*M.lat), cmp_u64);
#define PCT(p) (M.nlat ? (double)M.lat[(size_t)((double)M.nlat * (p))] / 1e3 : 0)
	if (json)
		printf("{\"op\":\"many\",\"connections\":%u,\"size\":%u,\"node_threads\":%ld,"
		       "\"node_rss_kib\":%ld,\"node_rss_kib_before\":%ld,"
		       "\"rss_per_conn_kib\":%.1f,\"ops\":%zu,\"p50_us\":%.1f,\"p99_us\":%.1f,"
		       "\"p999_us\":%.1f,\"min_conn_ops_s\":%.1f,\"max_conn_ops_s\":%.1f,"
		       "\"client_cpu\":%.3f,\"node_cpu\":%.3f,\"cpu_us_per_op\":%.2f,"
		       "\"verified\":true}\n",
		       n, SLOT, th, rss, rss0,
		       rss >= 0 && rss0 >= 0 ? (double)(rss - rss0) / n : -1.0, M.nlat, PCT(0.5),
		       PCT(0.99), PCT(0.999), (double)lo / secs, (double)hi / secs,
		       (double)ccpu / 1e9 / secs, ncpu < 0 ? -1.0 : (double)ncpu / 1e9 / secs,
		       M.nlat ? (double)(ccpu + (ncpu < 0 ? 0 : ncpu)) / 1e3 / (double)M.nlat
			      : 0.0);
	else
		printf("%u connections, 4 KiB verified writes and reads: %zu ops, p50 %.1f us, "
		       "p99 %.1f us, p999 %.1f us; per connection %.1f..%.1f ops/s; node "
		       "threads %ld, RSS %ld KiB (%ld before, %.1f KiB per connection)\n",
		       n, M.nlat, PCT(0.5), PCT(0.99), PCT(0.999), (double)lo / secs,
		       (double)hi / secs, th, rss, rss0,
		       rss >= 0 && rss0 >= 0 ? (double)(rss - rss0) / n : -1.0);
#undef PCT
out:
	for (unsigned i = 0; M.q && i < n; i++)
		em_queue_destroy(M.q[i]);
	if (M.r)
		em_region_close(M.r);
	free(M.q);
	free(M.ops);
	free(M.lat);
	pthread_mutex_destroy(&M.lock);
	return rc ? 1 : 0;
}
