/*
 * test_map_pool.c - em_map over real memory nodes on loopback.
 *
 *   integrity: threads read and write at random over a mapping four times
 *              its cache, against a reference; after em_sync the region (read
 *              with em_read) must equal the reference; eviction and
 *              write-back must have happened; a fresh mapping sees the data.
 *   shared:    a named region written through a mapping by one process is
 *              read through a mapping by another.
 *   timeout:   the node is stopped (SIGSTOP); an access to an unfetched page
 *              must end in SIGBUS with a logged reason, within the timeout.
 *   bounds:    mapping past the region's end and a cache below the fetch
 *              unit are refused.
 *   huge:      2 MiB units on explicit huge pages (the test reserves them):
 *              the integrity workload on a mapping that is not a whole
 *              number of huge pages, checked to be hugetlb-backed through
 *              /proc/self/smaps; read-only sharing on huge pages; and the
 *              4 KiB fallback when ETHERMEM_MAP_HUGE=0.
 *   reconnect: pools connected, mapped, unmapped and closed one after
 *              another: each mapping reads its own data, and a closed pool
 *              leaves nothing on the node (the engine's connections on it
 *              close with it, so its session and anonymous regions go; left
 *              open, a later pool at the same address would reuse them).
 *   redundant: a replicate:2, a replicate:3 and an ec:4+2 region over seven nodes,
 *              mapped; half of it read through the mapping, the node of the
 *              first copy SIGKILLed, then every byte read through the
 *              mapping, more written through it and synced: fetches fail
 *              over to a live copy and nothing is wrong, while the handle's
 *              background repair runs beside.
 *   unchanged: units stored to with the bytes they already hold (a word
 *              written with itself; a byte changed and put back) are not
 *              written back, by eviction, the cleaner or em_sync: the
 *              write-back counter shows only the units changed for real,
 *              which do reach the node (read with em_read); the same on a
 *              fresh region, whose units are zeros never fetched.
 * Run as root (userfaultfd); exit 0 pass, 1 fail, 77 skip.
 */
/* harness.h formats paths into fixed buffers that it sized for them */
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "harness.h"
#include "cli/map_floor.h"
#include "lib/internal.h"
#include "map/emm.h"

#include <pthread.h>
#include <sys/mman.h>

#define NTHREADS 4
#define OPS 20000

static int ops = OPS;
static uint64_t *map, *ref;
static size_t nwords;
static _Atomic int failed;

static void *worker(void *arg)
{
	unsigned t = (unsigned)(uintptr_t)arg;
	uint64_t seed = 0x1234567 + t;

	for (int i = 0; i < ops && !failed; i++) {
		size_t w = t_rand(&seed) % nwords;
		size_t mine = w - w % NTHREADS + t;

		if (mine >= nwords)
			mine = t;
		if (t_rand(&seed) & 1) {
			uint64_t v = ((uint64_t)t << 56) | (uint64_t)i;

			map[mine] = v;
			ref[mine] = v;
		} else if (map[mine] != ref[mine]) {
			fprintf(stderr, "thread %u word %zu: %llx want %llx\n", t, mine,
				(unsigned long long)map[mine], (unsigned long long)ref[mine]);
			failed = 1;
		}
	}
	return NULL;
}

/* A region of `bytes` filled with the reference pattern (ref, nwords). */
static em_region *reference_region(em_pool *pool, size_t bytes)
{
	em_region *r;

	nwords = bytes / 8;
	ref = malloc(bytes);
	CHECK(ref);
	for (size_t i = 0; i < nwords; i++)
		ref[i] = i * 0x9e3779b97f4a7c15ull;
	CHECK_RC(em_region_create(pool, NULL, bytes, NULL, &r), 0);
	CHECK_RC(em_write(r, 0, ref, bytes), 0);
	return r;
}

/* The workers over `map`, then a sequential sweep on top, so that prefetch
 * and streaming eviction run against the same reference; its stats. */
static void run_workers(const char *what, struct em_map_stats *st)
{
	pthread_t th[NTHREADS];

	for (uintptr_t t = 0; t < NTHREADS; t++)
		pthread_create(&th[t], NULL, worker, (void *)t);
	for (int t = 0; t < NTHREADS; t++)
		pthread_join(th[t], NULL);
	CHECK(!failed);
	for (size_t i = 0; i < nwords; i += 512)
		CHECK(map[i] == ref[i]);
	CHECK_RC(em_map_stats(map, st), 0);
	printf("%s: faults %llu fetched %llu KiB prefetched %llu KiB written %llu KiB evictions %llu resident %llu KiB\n",
	       what, (unsigned long long)st->faults, (unsigned long long)st->bytes_fetched >> 10,
	       (unsigned long long)st->prefetched >> 10,
	       (unsigned long long)st->bytes_written >> 10, (unsigned long long)st->evictions,
	       (unsigned long long)st->resident >> 10);
}

/* em_sync, then stores and em_unmap, each followed by a read of the whole
 * region that must equal the reference: nothing written was lost. */
static void check_written_back(em_region *r, size_t bytes)
{
	uint64_t *back = malloc(bytes);

	CHECK(back);
	CHECK_RC(em_sync(map, 0), 0);
	CHECK_RC(em_read(r, 0, back, bytes), 0);
	CHECK(memcmp(back, ref, bytes) == 0);
	for (size_t i = 0; i < nwords; i += 61)
		map[i] = ref[i] = ~ref[i];
	CHECK_RC(em_unmap(map), 0);
	CHECK_RC(em_read(r, 0, back, bytes), 0);
	CHECK(memcmp(back, ref, bytes) == 0);
	free(back);
}

static int integrity(em_pool *pool)
{
	size_t bytes = 16 << 20;
	/* generous: under ThreadSanitizer the node itself runs ten times slower */
	struct em_map_opts mo = { .size = sizeof(mo), .fetch_unit = 16 << 10, .timeout_ms = 60000 };
	struct em_map_stats st = { .size = sizeof(st) };
	em_region *r = reference_region(pool, bytes);

	CHECK_RC(em_map_cache_size(4 << 20), 0);
	CHECK_RC(em_map(r, &mo, (void **)&map), 0);
	run_workers("integrity", &st);
	CHECK(st.evictions > 0 && st.bytes_written > 0 && st.prefetched > 0);
	CHECK(st.resident <= (4 << 20) + (1 << 20));
	check_written_back(r, bytes);
	mo.fetch_unit = 2 << 20;
	CHECK_RC(em_map(r, &mo, (void **)&map), 0);
	CHECK(memcmp(map, ref, bytes) == 0);
	CHECK_RC(em_unmap(map), 0);
	em_region_close(r);
	free(ref);
	return 0;
}

/* KernelPageSize (KiB) of the mapping that holds a, from /proc/self/smaps. */
static unsigned long page_kib(const void *a)
{
	char line[256];
	unsigned long lo, hi, kib = 0;
	int in = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' '))
			in = (uintptr_t)a >= lo && (uintptr_t)a < hi;
		else if (in && sscanf(line, "KernelPageSize: %lu kB", &kib) == 1)
			break;
	}
	if (f)
		fclose(f);
	return kib;
}

static long huge_got;

static void huge_release(void)
{
	long done;

	if (huge_got > 0)
		em_cli_huge_adjust(-huge_got, &done);
	huge_got = 0;
}

static int huge(em_pool *pool)
{
	size_t bytes = (24 << 20) + 12288; /* the last unit is mostly past the end */
	struct em_map_opts mo = { .size = sizeof(mo), .fetch_unit = 2 << 20, .timeout_ms = 60000 };
	struct em_map_stats st = { .size = sizeof(st) };
	em_region *r;

	/* a cache of 8 MiB is four huge pages, with room for a second mapping */
	em_cli_huge_adjust(10, &huge_got);
	atexit(huge_release);
	if (huge_got < 10) {
		fprintf(stderr, "huge: the kernel granted %ld of 10 huge pages; skipping\n",
			huge_got);
		return 77;
	}
	/* every miss moves 2 MiB: fewer operations than the 16 KiB case */
	ops = OPS / 10;
	r = reference_region(pool, bytes);
	CHECK_RC(em_map_cache_size(8 << 20), 0);
	CHECK_RC(em_map(r, &mo, (void **)&map), 0);
	CHECK(((uintptr_t)map & ((2 << 20) - 1)) == 0);
	CHECK(map[nwords - 1] == ref[nwords - 1]);
	CHECK(page_kib(map) == 2048);
	run_workers("huge", &st);
	CHECK(st.evictions > 0 && st.bytes_written > 0);
	/* fetches in flight when eviction found nothing to drop may overrun */
	CHECK(st.resident <= (8 << 20) + NTHREADS * (2 << 20));
	check_written_back(r, bytes);

	mo.flags = EM_MAP_READONLY;
	CHECK_RC(em_map(r, &mo, (void **)&map), 0);
	CHECK(page_kib(map) == 2048);
	CHECK(memcmp(map, ref, bytes) == 0);
	CHECK_RC(em_unmap(map), 0);

	setenv("ETHERMEM_MAP_HUGE", "0", 1);
	CHECK_RC(em_map(r, &mo, (void **)&map), 0);
	CHECK(page_kib(map) == 4);
	CHECK(memcmp(map, ref, bytes) == 0);
	CHECK_RC(em_unmap(map), 0);
	unsetenv("ETHERMEM_MAP_HUGE");
	em_region_close(r);
	huge_release();
	free(ref);
	return 0;
}

static int bounds(em_pool *pool)
{
	struct em_map_opts mo = { .size = sizeof(mo), .length = 2 << 20 };
	em_region *r;
	void *a;

	CHECK_RC(em_region_create(pool, NULL, 1 << 20, NULL, &r), 0);
	CHECK_RC(em_map(r, &mo, &a), -ERANGE);
	mo.length = 0;
	mo.offset = 1 << 20;
	CHECK_RC(em_map(r, &mo, &a), -ERANGE);
	mo.offset = 0;
	mo.fetch_unit = 2 << 20;
	CHECK_RC(em_map_cache_size(1 << 20), 0);
	CHECK_RC(em_map(r, &mo, &a), -EINVAL);
	em_region_close(r);
	return 0;
}

static int shared(struct t_node *node, const char *secret)
{
	size_t bytes = 8 << 20;
	struct em_map_opts mo = { .size = sizeof(mo) };
	pid_t pid;
	int status;

	pid = fork();
	if (pid == 0) {
		em_pool *p = t_connect_ok(node, 1, secret);
		em_region *r;
		uint32_t *m;

		CHECK_RC(em_region_create(p, "map-shared", bytes, NULL, &r), 0);
		CHECK_RC(em_map_cache_size(1 << 20), 0);
		CHECK_RC(em_map(r, &mo, (void **)&m), 0);
		for (size_t i = 0; i < bytes / 4; i++)
			m[i] = (uint32_t)(i * 2654435761u);
		CHECK_RC(em_unmap(m), 0);
		em_region_close(r);
		em_pool_close(p);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	pid = fork();
	if (pid == 0) {
		em_pool *p = t_connect_ok(node, 1, secret);
		em_region *r;
		uint32_t *m;

		CHECK_RC(em_region_open(p, "map-shared", &r), 0);
		mo.flags = EM_MAP_READONLY;
		CHECK_RC(em_map_cache_size(1 << 20), 0);
		CHECK_RC(em_map(r, &mo, (void **)&m), 0);
		for (size_t i = 0; i < bytes / 4; i++)
			if (m[i] != (uint32_t)(i * 2654435761u)) {
				fprintf(stderr, "word %zu differs in the reader\n", i);
				_exit(1);
			}
		CHECK_RC(em_unmap(m), 0);
		CHECK_RC(em_region_delete(p, "map-shared"), 0);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return 0;
}

static int timeout_case(struct t_node *node, const char *secret)
{
	char logf[300];
	pid_t pid;
	int status;

	snprintf(logf, sizeof(logf), "%s/timeout.log", t_tmpdir());
	pid = fork();
	if (pid == 0) {
		struct em_map_opts mo = { .size = sizeof(mo),
					  .fetch_unit = 4096,
					  .timeout_ms = 500,
					  .flags = EM_MAP_NOPREFETCH };
		em_pool *p = t_connect_ok(node, 1, secret);
		int fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		volatile char *m;
		em_region *r;

		dup2(fd, 2);
		CHECK_RC(em_region_create(p, NULL, 1 << 20, NULL, &r), 0);
		CHECK_RC(em_map(r, &mo, (void **)&m), 0);
		(void)m[0];
		kill(node->pid, SIGSTOP);
		/* a group stop completes asynchronously (each thread stops when
		 * next scheduled): wait until the node is really stopped */
		for (int i = 0; i < 200; i++) {
			char path[64], st[512];
			int sfd, n;

			snprintf(path, sizeof(path), "/proc/%d/stat", (int)node->pid);
			sfd = open(path, O_RDONLY);
			n = sfd < 0 ? 0 : (int)read(sfd, st, sizeof(st) - 1);
			if (sfd >= 0)
				close(sfd);
			st[n > 0 ? n : 0] = 0;
			if (strstr(st, ") T "))
				break;
			t_sleep_ms(5);
		}
		t_sleep_ms(50);
		(void)m[500000];
		struct em_map_stats st = { .size = sizeof(st) };
		em_map_stats((void *)m, &st);
		fprintf(stderr, "access succeeded: faults %llu fetched %llu\n",
			(unsigned long long)st.faults, (unsigned long long)st.bytes_fetched);
		_exit(0);
	}
	waitpid(pid, &status, 0);
	kill(node->pid, SIGCONT);
#ifdef __SANITIZE_THREAD__
	/* ThreadSanitizer catches the fatal SIGBUS, reports it and exits 66 */
	if (WIFEXITED(status) && WEXITSTATUS(status) == 66)
		status = SIGBUS;
#endif
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGBUS) {
		fprintf(stderr, "timeout child: status %x, want SIGBUS\n", status);
		return 1;
	}
	FILE *f = fopen(logf, "r");
	char line[512] = "";
	int seen = 0;

	while (f && fgets(line, sizeof(line), f))
		/* the error in words, not a number */
		if (strstr(line, "did not answer") && strstr(line, "timed out") &&
		    !strstr(line, "errno"))
			seen = 1;
	if (f)
		fclose(f);
	CHECK(seen);
	return 0;
}

/* Each round: a fresh pool, an anonymous region written with a pattern of
 * its own, mapped, read through the mapping, unmapped, closed. */
static int reconnect(struct t_node *node, const char *secret)
{
	em_pool *obs = t_connect_ok(node, 1, secret);
	struct em_node_status before = { .size = sizeof(before) },
			      after = { .size = sizeof(after) };

	CHECK(em_pool_status(obs, &before, 1) == 1);
	for (uint64_t round = 0; round < 8; round++) {
		em_pool *p = t_connect_ok(node, 1, secret);
		size_t n = 1u << 17; /* words: 1 MiB */
		uint64_t *buf = malloc(n * 8), *m;
		struct em_map_opts mo = { .size = sizeof(mo) };
		em_region *r;

		CHECK(buf);
		for (size_t i = 0; i < n; i++)
			buf[i] = (round << 56) | i;
		CHECK(em_region_create(p, NULL, n * 8, NULL, &r) == 0);
		CHECK(em_write(r, 0, buf, n * 8) == 0);
		CHECK(em_map(r, &mo, (void **)&m) == 0);
		for (size_t i = 0; i < n; i += 509)
			if (m[i] != buf[i]) {
				fprintf(stderr, "round %llu word %zu: %llx\n",
					(unsigned long long)round, i, (unsigned long long)m[i]);
				return 1;
			}
		CHECK(em_unmap(m) == 0);
		CHECK(em_region_close(r) == 0);
		em_pool_close(p);
		free(buf);
	}
	/* the node notices closed connections at once, but give it a moment */
	for (int i = 0; i < 200; i++) {
		CHECK(em_pool_status(obs, &after, 1) == 1);
		if (after.clients == before.clients && after.used == before.used)
			break;
		t_sleep_ms(10);
	}
	if (after.clients != before.clients || after.used != before.used) {
		fprintf(stderr, "closed pools left %u connections and %llu bytes on the node\n",
			after.clients - before.clients,
			(unsigned long long)(after.used - before.used));
		return 1;
	}
	em_pool_close(obs);
	return 0;
}

static int redundant_one(const char *red, const char *secret)
{
	enum { NN = 7 };
	struct t_node n[NN];
	struct em_region_opts o = { .size = sizeof(o), .chunk_size = 4096 };
	struct em_map_opts mo = { .size = sizeof(mo), .fetch_unit = 4096 };
	size_t words = (4u << 20) / 8;
	uint64_t *buf = malloc(words * 8), *m;
	em_region *r;
	em_pool *p;

	CHECK(buf);
	for (int i = 0; i < NN; i++)
		t_node_start(&n[i], "32M", secret, NULL);
	p = t_connect_ok(n, NN, secret);
	CHECK_RC(em_parse_redundancy(red, &o), 0);
	CHECK_RC(em_region_create(p, NULL, words * 8, &o, &r), 0);
	for (size_t i = 0; i < words; i++)
		buf[i] = i * 0x9e3779b97f4a7c15ull;
	CHECK_RC(em_write(r, 0, buf, words * 8), 0);
	CHECK_RC(em_map(r, &mo, (void **)&m), 0);
	for (size_t i = 0; i < words / 2; i += 512)
		CHECK(m[i] == buf[i]);
	/* the node every fetch goes to first */
	t_node_stop(&n[__atomic_load_n(&r->node[0], __ATOMIC_ACQUIRE)], SIGKILL);
	for (size_t i = 0; i < words; i++)
		if (m[i] != buf[i]) {
			fprintf(stderr, "%s: word %zu through the mapping: %llx, want %llx\n", red,
				i, (unsigned long long)m[i], (unsigned long long)buf[i]);
			return 1;
		}
	/* the reads found the node dead (and a repair may have followed) */
	struct em_region_info ri = { .size = sizeof(ri) };
	CHECK_RC(em_region_stat(r, &ri), 0);
	CHECK(ri.state != EM_STATE_HEALTHY || ri.epoch == 1);
	for (size_t i = 0; i < words; i += 61) {
		m[i] = ~buf[i];
		buf[i] = ~buf[i];
	}
	CHECK_RC(em_sync(m, words * 8), 0);
	CHECK_RC(em_unmap(m), 0);
	uint64_t *back = malloc(words * 8);
	CHECK(back);
	CHECK_RC(em_read(r, 0, back, words * 8), 0);
	CHECK(!memcmp(back, buf, words * 8));
	free(back);
	CHECK_RC(em_region_close(r), 0);
	em_pool_close(p);
	for (int i = 0; i < NN; i++)
		if (n[i].pid > 0)
			t_node_stop(&n[i], SIGKILL);
	free(buf);
	printf("%s: mapped reads failed over\n", red);
	return 0;
}

static int redundant(const char *secret)
{
	return redundant_one("replicate:2", secret) || redundant_one("replicate:3", secret) ||
	       redundant_one("ec:4+2", secret);
}

/* ---- repair: a node killed and rebuilt while threads write through the
 * mapping ---- */

static _Atomic int live_stop;
static _Atomic uint64_t live_ops;

/* Random word reads and writes over the mapping, each thread on its own
 * words (w % NTHREADS), until live_stop; a read that differs from the
 * reference fails the test. */
static void *live_worker(void *arg)
{
	unsigned t = (unsigned)(uintptr_t)arg;
	uint64_t seed = 0xfeed + t, i = 0;

	while (!live_stop && !failed) {
		size_t w = t_rand(&seed) % nwords;
		size_t mine = w - w % NTHREADS + t;

		if (mine >= nwords)
			mine = t;
		if (t_rand(&seed) & 1) {
			uint64_t v = ((uint64_t)t << 56) | ++i;
			map[mine] = v;
			ref[mine] = v;
		} else if (map[mine] != ref[mine]) {
			fprintf(stderr, "thread %u word %zu: %llx want %llx\n", t, mine,
				(unsigned long long)map[mine], (unsigned long long)ref[mine]);
			failed = 1;
		}
		live_ops++;
	}
	return NULL;
}

static void live_wait_ops(uint64_t more)
{
	uint64_t until = live_ops + more;

	while (live_ops < until && !failed)
		t_sleep_ms(5);
}

/* The original node of segment `seg`, among n[0..nn) (by port). */
static int node_index(struct t_node *n, int nn, em_region *r, unsigned seg)
{
	unsigned node = __atomic_load_n(&r->node[seg], __ATOMIC_ACQUIRE);

	for (int i = 0; i < nn; i++)
		if (n[i].pid > 0 && !strcmp(n[i].url, r->pool->nodes[node].addr))
			return i;
	return -1;
}

/* A named region over eight nodes, mapped with a cache a quarter of its
 * size (so write-backs run in the fault handler all along) while four
 * threads read and write it at random. Then: the node of the first part is
 * SIGKILLed and another client (a second pool) repairs the region, which
 * fences the mapping's handle: its write-backs are refused and it reads the
 * layouts again from inside the fault handler. Then a second original
 * node is killed and the mapping's own handle repairs in the background
 * while the threads go on. Every byte is checked against the reference
 * through the mapping, after em_sync with em_read, and by the other client. */
static int repair_live_one(const char *red, const char *secret)
{
	enum { NN = 8 };
	struct t_node n[NN];
	struct em_region_opts o = { .size = sizeof(o), .chunk_size = 16 << 10 };
	struct em_map_opts mo = { .size = sizeof(mo), .fetch_unit = 16 << 10, .timeout_ms = 60000 };
	size_t bytes = 4 << 20;
	char name[64];
	pthread_t th[NTHREADS];
	em_region *r, *r2;
	em_pool *p, *p2;
	int k;

	snprintf(name, sizeof(name), "live-%s", red);
	for (char *c = name; *c; c++)
		if (*c == ':' || *c == '+')
			*c = '-';
	for (int i = 0; i < NN; i++)
		t_node_start(&n[i], "32M", secret, NULL);
	p = t_connect_ok(n, NN, secret);
	p2 = t_connect_ok(n, NN, secret);
	CHECK_RC(em_parse_redundancy(red, &o), 0);
	CHECK_RC(em_region_create(p, name, bytes, &o, &r), 0);
	nwords = bytes / 8;
	ref = malloc(bytes);
	CHECK(ref);
	for (size_t i = 0; i < nwords; i++)
		ref[i] = i * 0x9e3779b97f4a7c15ull;
	CHECK_RC(em_write(r, 0, ref, bytes), 0);
	CHECK_RC(em_region_open(p2, name, &r2), 0);
	CHECK_RC(em_map_cache_size(1 << 20), 0);
	CHECK_RC(em_map(r, &mo, (void **)&map), 0);
	live_stop = 0;
	failed = 0;
	for (uintptr_t t = 0; t < NTHREADS; t++)
		pthread_create(&th[t], NULL, live_worker, (void *)t);
	live_wait_ops(3000);

	/* kill 1: repaired by the other client, which fences this one */
	CHECK((k = node_index(n, NN, r, 0)) >= 0);
	t_node_stop(&n[k], SIGKILL);
	live_wait_ops(500);
	int rc = em_region_repair(r2);
	CHECK(rc >= 0);
	live_wait_ops(3000);

	/* kill 2: another original part, repaired by the mapping's own handle
	 * in the background while the threads write */
	CHECK((k = node_index(n, NN, r, 1)) >= 0);
	t_node_stop(&n[k], SIGKILL);
	live_wait_ops(500);
	CHECK_RC(em_region_repair_start(r), 0);
	struct em_region_info ri = { .size = sizeof(ri) };
	for (int i = 0; i < 3000 && !failed; i++) {
		CHECK_RC(em_region_stat(r, &ri), 0);
		if (ri.state == EM_STATE_HEALTHY)
			break;
		t_sleep_ms(10);
	}
	live_wait_ops(3000);
	live_stop = 1;
	for (int t = 0; t < NTHREADS; t++)
		pthread_join(th[t], NULL);
	CHECK(!failed);
	CHECK(ri.state == EM_STATE_HEALTHY);
	CHECK(ri.epoch >= 2);
	for (size_t i = 0; i < nwords; i++)
		if (map[i] != ref[i]) {
			fprintf(stderr, "%s: word %zu through the mapping: %llx, want %llx\n", red,
				i, (unsigned long long)map[i], (unsigned long long)ref[i]);
			return 1;
		}
	CHECK_RC(em_sync(map, 0), 0);
	uint64_t *back = malloc(bytes);
	CHECK(back);
	CHECK_RC(em_read(r, 0, back, bytes), 0);
	CHECK(!memcmp(back, ref, bytes));
	/* the other client reads the same bytes, from the rebuilt parts too */
	memset(back, 0, bytes);
	CHECK_RC(em_read(r2, 0, back, bytes), 0);
	CHECK(!memcmp(back, ref, bytes));
	CHECK_RC(em_unmap(map), 0);
	printf("%s: %llu mapped ops across two kills and two repairs, every byte right\n", red,
	       (unsigned long long)live_ops);
	free(back);
	free(ref);
	CHECK_RC(em_region_close(r2), 0);
	CHECK_RC(em_region_close(r), 0);
	em_pool_close(p2);
	em_pool_close(p);
	for (int i = 0; i < NN; i++)
		if (n[i].pid > 0)
			t_node_stop(&n[i], SIGKILL);
	return 0;
}

static int repair_live(const char *secret)
{
	/* the handles repair only when told: the test says who repairs when */
	setenv("ETHERMEM_AUTO_REPAIR", "0", 1);
	return repair_live_one("replicate:2", secret) || repair_live_one("ec:4+2", secret);
}

/* One pass over the units of `bytes` at `m`: every unit is stored to, a
 * unit with (i % 4 == 1) changed for real in one word (recorded in ref),
 * the others with the bytes they hold. Returns how many were changed. */
static size_t unchanged_pass(volatile uint64_t *m, size_t bytes, size_t unit, unsigned pass)
{
	size_t nu = bytes / unit, wpu = unit / 8, changed = 0;

	for (size_t i = 0; i < nu; i++) {
		size_t w = i * wpu + (i * 13 + pass) % wpu;

		if (i % 4 == 1) {
			ref[w] = ~ref[w] + pass;
			m[w] = ref[w];
			changed++;
		} else if (i % 4 == 2) {
			/* a byte changed, another word stored, the byte put back:
			 * sort's newline over a NUL and the NUL again */
			volatile uint8_t *b = (volatile uint8_t *)&m[w];

			b[3] ^= 0x5a;
			m[(w + 1) % wpu + i * wpu] = m[(w + 1) % wpu + i * wpu];
			b[3] ^= 0x5a;
		} else {
			m[w] = m[w];
		}
	}
	return changed;
}

static int unchanged(em_pool *pool)
{
	size_t bytes = 4 << 20, unit = 16 << 10, nu = bytes / unit, changed = 0;
	struct em_map_opts mo = { .size = sizeof(mo), .fetch_unit = unit, .timeout_ms = 60000 };
	struct em_map_stats st = { .size = sizeof(st) }, t0 = { .size = sizeof(st) },
			    t1 = { .size = sizeof(st) };
	em_region *r = reference_region(pool, bytes), *z;
	uint64_t *back = malloc(bytes);

	CHECK(back);
	/* a quarter of the mapping: the passes evict, and the cleaner runs */
	CHECK_RC(em_map_cache_size(1 << 20), 0);
	CHECK_RC(em_map(r, &mo, (void **)&map), 0);
	/* one pass, each unit dirty once: written exactly the changed ones */
	changed = unchanged_pass(map, bytes, unit, 0);
	CHECK_RC(em_sync(map, 0), 0);
	CHECK_RC(em_map_stats(map, &st), 0);
	printf("unchanged: written %llu KiB (%zu units changed), unchanged %llu KiB, evictions %llu\n",
	       (unsigned long long)st.bytes_written >> 10, changed,
	       (unsigned long long)st.bytes_unchanged >> 10, (unsigned long long)st.evictions);
	CHECK(st.evictions > 0);
	CHECK(st.bytes_written == changed * unit);
	CHECK(st.bytes_unchanged == (nu - changed) * unit);
	CHECK_RC(em_read(r, 0, back, bytes), 0);
	CHECK(memcmp(back, ref, bytes) == 0);
	/* two more: a unit the cache kept between them is dirty once for both,
	 * so written is between one and two writes per changed unit */
	t0 = st;
	changed = unchanged_pass(map, bytes, unit, 1);
	changed += unchanged_pass(map, bytes, unit, 2);
	CHECK_RC(em_sync(map, 0), 0);
	CHECK_RC(em_map_stats(map, &st), 0);
	printf("unchanged: two more passes: written %llu KiB (%zu unit changes), unchanged %llu KiB\n",
	       (unsigned long long)(st.bytes_written - t0.bytes_written) >> 10, changed,
	       (unsigned long long)(st.bytes_unchanged - t0.bytes_unchanged) >> 10);
	CHECK(st.bytes_written - t0.bytes_written <= changed * unit);
	CHECK(st.bytes_written - t0.bytes_written >= changed / 2 * unit);
	CHECK(st.bytes_unchanged - t0.bytes_unchanged >= (nu - nu / 4) * unit);
	CHECK_RC(em_read(r, 0, back, bytes), 0);
	CHECK(memcmp(back, ref, bytes) == 0);
	/* unmap syncs: a last pass that changes nothing writes nothing */
	for (size_t i = 0; i < nwords; i += 509)
		map[i] = map[i];
	CHECK_RC(em_map_stats(NULL, &t0), 0);
	CHECK_RC(em_unmap(map), 0);
	CHECK_RC(em_map_stats(NULL, &t1), 0);
	CHECK(t1.bytes_written == t0.bytes_written);
	CHECK_RC(em_read(r, 0, back, bytes), 0);
	CHECK(memcmp(back, ref, bytes) == 0);

	/* a fresh region: its units go in as zeros, never fetched; zeros
	 * stored over zeros are not written, anything else is */
	CHECK_RC(em_region_create(pool, NULL, bytes, NULL, &z), 0);
	mo.flags = EM_MAP_FRESH;
	memset(ref, 0, bytes);
	CHECK_RC(em_map(z, &mo, (void **)&map), 0);
	CHECK_RC(em_map_stats(NULL, &t0), 0);
	changed = 0;
	for (size_t i = 0; i < nu; i++) {
		volatile uint64_t *w = &map[i * (unit / 8) + i % (unit / 8)];

		if (i % 3 == 0) {
			*w = ref[w - map] = i + 1;
			changed++;
		} else {
			*w = 0;
		}
	}
	CHECK_RC(em_sync(map, 0), 0);
	CHECK_RC(em_map_stats(map, &st), 0);
	printf("unchanged fresh: fetched %llu KiB, written %llu KiB (%zu units changed), unchanged %llu KiB\n",
	       (unsigned long long)st.bytes_fetched >> 10,
	       (unsigned long long)st.bytes_written >> 10, changed,
	       (unsigned long long)st.bytes_unchanged >> 10);
	CHECK(st.bytes_written == changed * unit);
	CHECK(st.bytes_unchanged == (nu - changed) * unit);
	CHECK_RC(em_unmap(map), 0);
	CHECK_RC(em_read(z, 0, back, bytes), 0);
	CHECK(memcmp(back, ref, bytes) == 0);
	em_region_close(z);
	em_region_close(r);
	free(back);
	free(ref);
	return 0;
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "integrity";
	struct t_node node;
	const char *secret;
	em_pool *pool;
	int rc = 0;

	if (geteuid() != 0)
		return 77;
	secret = t_secret("secret", T_SECRET);
	t_node_start(&node, "256M", secret, NULL);
	pool = t_connect_ok(&node, 1, secret);
	if (!strcmp(what, "integrity"))
		rc = integrity(pool);
	else if (!strcmp(what, "bounds"))
		rc = bounds(pool);
	else if (!strcmp(what, "huge"))
		rc = huge(pool);
	else if (!strcmp(what, "shared"))
		rc = shared(&node, secret);
	else if (!strcmp(what, "timeout"))
		rc = timeout_case(&node, secret);
	else if (!strcmp(what, "reconnect"))
		rc = reconnect(&node, secret);
	else if (!strcmp(what, "redundant"))
		rc = redundant(secret);
	else if (!strcmp(what, "redundant_repair"))
		rc = repair_live(secret);
	else if (!strcmp(what, "unchanged"))
		rc = unchanged(pool);
	em_pool_close(pool);
	t_node_stop(&node, SIGTERM);
	t_cleanup();
	if (!rc)
		printf("%s: ok\n", what);
	return rc;
}
