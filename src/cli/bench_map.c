/*
 * bench_map.c - `ethermem bench map [--json] [--size S] [--cache C]
 * [--dir DIR] [--skip-baselines]`: the transparent mapping against the two
 * ways Linux would otherwise stretch memory, in one run.
 *
 * Three workloads run over each of three backings: a sequential read scan
 * of the whole size S, random 4 KiB reads, and cyclic scans over W = 2C. The
 * backings: an em_map of a pool region with a cache of C; the same bytes as
 * a file on disk, mmap'ed, in a child limited to C by a cgroup v1 memory
 * controller, page cache dropped first; and anonymous memory in such a
 * child with a swap file. The uffd-floor row is the in-thread userfaultfd
 * fault measured by this same binary, so the random-read p50 can be judged
 * against floor + the explicit API's 4 KiB read p50 of the same run; the
 * uffd-continue, uffd-copy-batch, uffd-huge and uffd-recv rows are the fault
 * paths the engine could take instead (map_floor.c; fields in README.md), so
 * that its choice rests on figures of this run too. For their hugetlb
 * figures the bench raises vm.nr_hugepages by the few pages they need and
 * lowers it by as many right after, and on every exit path. On
 * cyclic rows fetched_over_optimal is bytes fetched per pass (after the
 * first) over W - C: what a policy that keeps a stable resident part would
 * fetch. Fetched bytes come from em_map_stats, /proc/self/io read_bytes
 * (file) and pswpin (swap). Every exit path removes the swap file, the data
 * file and the cgroups and gives back the huge pages, also on SIGINT/SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "ethermem.h"
#include "cli/map_floor.h"
#include "map/emm.h"

#define EMM_B_RAND 20000
#define EMM_B_PASSES 4
#define EMM_B_PATH_ROUNDS 5 /* of emm_floor_paths: about a second in all */

struct emm_b_res {
	double gbps, p50_us, p99_us, ratio; /* ratio < 0: not a cyclic row */
	int err;
};

struct emm_b_all {
	struct emm_b_res seq, rnd, cyc;
};

static char emm_b_file[512], emm_b_swap[512], emm_b_cg[256];
static int emm_b_swapon;
static long emm_b_huge_added; /* huge pages this run added to vm.nr_hugepages */

static uint64_t emm_b_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int emm_b_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void emm_b_pct(uint64_t *lat, size_t n, struct emm_b_res *r)
{
	if (!n)
		return;
	qsort(lat, n, sizeof(*lat), emm_b_cmp);
	r->p50_us = (double)lat[n / 2] / 1e3;
	r->p99_us = (double)lat[(size_t)((double)n * 0.99)] / 1e3;
}

/* ---- huge pages for the floors and the pool's cache, lent by vm.nr_hugepages ---- */

/* Always our own pages on top of the pool: free pages there may be another
 * program's, reserved for its own use a moment from now. */
static long emm_b_huge_reserve(unsigned need)
{
	sigset_t sigs, old;
	long done;

	/* a SIGINT between the write and the bookkeeping would leak them */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigprocmask(SIG_BLOCK, &sigs, &old);
	if (em_cli_huge_adjust((long)need, &done) == 0 && done > 0)
		emm_b_huge_added += done;
	sigprocmask(SIG_SETMASK, &old, NULL);
	return done;
}

static void emm_b_huge_restore(void)
{
	long done;

	if (emm_b_huge_added > 0 && em_cli_huge_adjust(-emm_b_huge_added, &done))
		fprintf(stderr,
			"ethermem bench map: could not give back %ld huge pages (vm.nr_hugepages)\n",
			emm_b_huge_added);
	emm_b_huge_added = 0;
}

static void emm_b_cleanup(void)
{
	emm_b_huge_restore();
	if (emm_b_swapon) {
		char cmd[1200];

		/* swapoff can fail while another swapon/swapoff runs on the
		 * machine: retry rather than leave a deleted swap file active */
		snprintf(cmd, sizeof(cmd),
			 "swapoff '%s' 2>/dev/null || "
			 "! grep -q '%s' /proc/swaps",
			 emm_b_swap, emm_b_swap);
		for (int i = 0; i < 20 && emm_b_swapon; i++) {
			if (system(cmd) == 0)
				emm_b_swapon = 0;
			else
				usleep(250000);
		}
		if (emm_b_swapon)
			fprintf(stderr, "ethermem bench map: could not swapoff %s\n", emm_b_swap);
	}
	if (emm_b_swap[0])
		unlink(emm_b_swap);
	if (emm_b_file[0])
		unlink(emm_b_file);
	if (emm_b_cg[0])
		rmdir(emm_b_cg);
	emm_b_swap[0] = emm_b_file[0] = emm_b_cg[0] = 0;
}

static void emm_b_signal(int sig)
{
	emm_b_cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void emm_b_drop_caches(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

	sync();
	if (fd >= 0) {
		if (write(fd, "3", 1) < 0)
			fprintf(stderr, "ethermem bench map: cannot drop caches\n");
		close(fd);
	}
}

/* ---- the workloads, over any memory ---- */

static volatile uint64_t emm_b_sink;

/* Reads every word; the per-page latency gives the p50. */
static void emm_b_seq(const char *p, size_t len, struct emm_b_res *r)
{
	size_t pages = len / 4096;
	uint64_t *lat = malloc(pages * sizeof(*lat)), t0 = emm_b_ns(), s = 0;

	for (size_t i = 0; i < pages; i++) {
		const uint64_t *w = (const uint64_t *)(p + i * 4096);
		uint64_t t = emm_b_ns();

		for (int k = 0; k < 512; k++)
			s += w[k];
		lat[i] = emm_b_ns() - t;
	}
	emm_b_sink += s;
	r->gbps = (double)len / (double)(emm_b_ns() - t0);
	emm_b_pct(lat, pages, r);
	free(lat);
}

static void emm_b_rand(const char *p, size_t len, struct emm_b_res *r)
{
	uint64_t *lat = malloc(EMM_B_RAND * sizeof(*lat)), t0 = emm_b_ns(),
		 x = 88172645463325252ull;
	size_t pages = len / 4096;

	size_t i;

	/* a slow baseline (a disk seek per read) stops after 10 s */
	for (i = 0; i < EMM_B_RAND && (i & 255 || emm_b_ns() - t0 < 10000000000ull); i++) {
		uint64_t t;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		t = emm_b_ns();
		emm_b_sink += *(const volatile uint64_t *)(p + (x % pages) * 4096);
		lat[i] = emm_b_ns() - t;
	}
	r->gbps = (double)i * 4096 / (double)(emm_b_ns() - t0);
	emm_b_pct(lat, i, r);
	free(lat);
}

/* Bytes the backing has fetched so far, by kind: 0 pool, 1 file, 2 swap. */
static uint64_t emm_b_fetched(int kind, void *map)
{
	char line[256];
	uint64_t v = 0, x;
	FILE *f;

	if (kind == 0) {
		struct em_map_stats st = { .size = sizeof(st) };

		return em_map_stats(map, &st) ? 0 : st.bytes_fetched;
	}
	f = fopen(kind == 1 ? "/proc/self/io" : "/proc/vmstat", "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (kind == 1 && sscanf(line, "read_bytes: %" SCNu64, &x) == 1)
			v = x;
		if (kind == 2 && sscanf(line, "pswpin %" SCNu64, &x) == 1)
			v = x * 4096;
	}
	if (f)
		fclose(f);
	return v;
}

static void emm_b_cyclic(const char *p, uint64_t w, uint64_t c, int kind, struct emm_b_res *r)
{
	uint64_t t0 = 0, fetched = 0, lat[EMM_B_PASSES];

	for (int pass = 0; pass < EMM_B_PASSES; pass++) {
		uint64_t before = emm_b_fetched(kind, (void *)p), t = emm_b_ns(), s = 0;

		if (pass == 1)
			t0 = t;
		for (uint64_t o = 0; o < w; o += 8)
			s += *(const uint64_t *)(p + o);
		emm_b_sink += s;
		lat[pass] = emm_b_ns() - t;
		if (pass)
			fetched += emm_b_fetched(kind, (void *)p) - before;
	}
	r->gbps = (double)w * (EMM_B_PASSES - 1) / (double)(emm_b_ns() - t0);
	r->ratio = (double)fetched / (EMM_B_PASSES - 1) / (double)(w - c);
	/* p50 of a whole pass would say little; report the per-4KiB mean */
	r->p50_us = (double)lat[EMM_B_PASSES / 2] / 1e3 / (double)(w / 4096);
	r->p99_us = r->p50_us;
}

/* ---- the pool ---- */

static int emm_b_pool(struct em_cli_pool *cp, uint64_t size, uint64_t cache, struct emm_b_all *a,
		      struct emm_floor *fl, double *api_p50)
{
	struct em_map_opts mo = { .size = sizeof(mo), .flags = EM_MAP_READONLY };
	uint64_t *lat = malloc(2000 * sizeof(*lat)), x = 7;
	em_pool *pool;
	em_region *r;
	char *buf, *m;
	int rc;

	if (!lat)
		return -ENOMEM;
	rc = em_cli_connect(cp, &pool, "ethermem bench map");
	if (rc) {
		free(lat);
		return rc;
	}
	rc = em_region_create(pool, NULL, size, NULL, &r);
	if (rc) {
		fprintf(stderr, "ethermem bench map: region of %" PRIu64 " bytes: %s\n", size,
			em_strerror(rc));
		em_pool_close(pool);
		free(lat);
		return rc;
	}
	buf = malloc(4u << 20);
	for (uint64_t o = 0; o < size && !rc; o += 4u << 20) {
		size_t n = size - o < (4u << 20) ? (size_t)(size - o) : 4u << 20;

		for (size_t i = 0; i < n; i += 8)
			*(uint64_t *)(buf + i) = (o + i) * 0x9e3779b97f4a7c15ull;
		rc = em_write(r, o, buf, n);
	}
	for (int i = 0; i < 2000 && !rc; i++) {
		uint64_t t;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		t = emm_b_ns();
		rc = em_read(r, (x % (size / 4096)) * 4096, buf, 4096);
		lat[i] = emm_b_ns() - t;
	}
	free(buf);
	if (!rc) {
		qsort(lat, 2000, sizeof(*lat), emm_b_cmp);
		*api_p50 = (double)lat[1000] / 1e3;
		rc = emm_floor_measure(fl, 2000);
	}
	free(lat);
	if (!rc)
		rc = em_map_cache_size(cache);
	/* the cache on explicit huge pages, for the 2 MiB units below: as much
	 * local memory as the baselines get (their cgroup limit), in pages of
	 * 2 MiB; without them the engine falls back to 4 KiB pages */
	if (!rc && cache >= (64u << 20)) {
		long want = (long)(cache >> 21) + 8, got = emm_b_huge_reserve((unsigned)want);

		if (got < want)
			fprintf(stderr,
				"ethermem bench map: %ld of %ld huge pages granted; the cache uses 4 KiB pages\n",
				got, want);
		/* touched once before timing: on a virtual machine the first touch
		 * of guest memory is a host fault (a first scan after raising
		 * nr_hugepages ran several times slower than later ones), and the
		 * baselines run later on page cache the host already backs */
		size_t wl = (size_t)(got > 0 ? got : 0) << 21;
		void *w = wl ? mmap(NULL, wl, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE, -1, 0)
			     : MAP_FAILED;

		if (w != MAP_FAILED)
			munmap(w, wl);
	}

	mo.fetch_unit = 2u << 20;
	if (!rc && !(rc = em_map(r, &mo, (void **)&m))) {
		emm_b_seq(m, size, &a->seq);
		em_unmap(m);
	}
	mo.fetch_unit = 4096;
	mo.flags = EM_MAP_READONLY | EM_MAP_NOPREFETCH;
	if (!rc && !(rc = em_map(r, &mo, (void **)&m))) {
		emm_b_rand(m, size, &a->rnd);
		em_unmap(m);
	}
	/* units of C/256 (16 KiB .. 2 MiB): the transient part of the cache
	 * must hold a few units beside the stable part */
	mo.fetch_unit = 2u << 20;
	while (mo.fetch_unit > (16u << 10) && mo.fetch_unit > cache / 256)
		mo.fetch_unit /= 2;
	mo.flags = EM_MAP_READONLY;
	mo.length = 2 * cache;
	if (!rc && !(rc = em_map(r, &mo, (void **)&m))) {
		emm_b_cyclic(m, 2 * cache, cache, 0, &a->cyc);
		em_unmap(m);
	}
	if (rc)
		fprintf(stderr, "ethermem bench map: %s\n", em_strerror(rc));
	emm_b_huge_restore();
	em_region_close(r);
	em_pool_close(pool);
	return rc;
}

/* ---- the baselines, in a memory-limited child ---- */

static int emm_b_cgroup(uint64_t cache)
{
	char p[320];
	FILE *f;

	snprintf(emm_b_cg, sizeof(emm_b_cg), "/sys/fs/cgroup/memory/ethermem-bench-%d",
		 (int)getpid());
	if (mkdir(emm_b_cg, 0755) && errno != EEXIST) {
		emm_b_cg[0] = 0;
		return -errno;
	}
	snprintf(p, sizeof(p), "%s/memory.limit_in_bytes", emm_b_cg);
	f = fopen(p, "w");
	if (!f)
		return -errno;
	fprintf(f, "%" PRIu64 "\n", cache);
	return fclose(f) ? -errno : 0;
}

static int emm_b_join(void)
{
	char p[320];
	FILE *f;

	snprintf(p, sizeof(p), "%s/cgroup.procs", emm_b_cg);
	f = fopen(p, "w");
	if (!f)
		return -errno;
	fprintf(f, "%d\n", (int)getpid());
	return fclose(f) ? -errno : 0;
}

/* kind 1: mmap of the data file; kind 2: anonymous memory over swap. */
static int emm_b_child(int kind, uint64_t size, uint64_t cache, struct emm_b_all *a)
{
	int pfd[2], status;
	pid_t pid;

	if (pipe(pfd))
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		struct emm_b_all res = { 0 };
		char *m;

		close(pfd[0]);
		if (emm_b_join()) {
			res.seq.err = -EPERM;
			goto report;
		}
		if (kind == 1) {
			int fd = open(emm_b_file, O_RDONLY);

			m = fd < 0 ? MAP_FAILED : mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
			if (m == MAP_FAILED) {
				res.seq.err = -errno;
				goto report;
			}
			emm_b_drop_caches();
			emm_b_seq(m, size, &res.seq);
			emm_b_drop_caches();
			emm_b_rand(m, size, &res.rnd);
			emm_b_drop_caches();
			emm_b_cyclic(m, 2 * cache, cache, 1, &res.cyc);
		} else {
			m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
				 -1, 0);
			if (m == MAP_FAILED) {
				res.seq.err = -errno;
				goto report;
			}
			/* filling faster than the swap file takes pages makes the
			 * memory cgroup give up and OOM-kill: push out what lies half
			 * a cache behind the fill as it goes */
			for (uint64_t o = 0; o < size; o += 8) {
				*(uint64_t *)(m + o) = o * 0x9e3779b97f4a7c15ull;
				if ((o & ((4u << 20) - 1)) == 0 && o >= cache / 2 + (4u << 20))
					madvise(m + o - cache / 2 - (4u << 20), 4u << 20,
						MADV_PAGEOUT);
			}
			emm_b_seq(m, size, &res.seq);
			emm_b_rand(m, size, &res.rnd);
			emm_b_cyclic(m, 2 * cache, cache, 2, &res.cyc);
		}
report:
		if (write(pfd[1], &res, sizeof(res)) != sizeof(res))
			_exit(1);
		_exit(0);
	}
	close(pfd[1]);
	memset(a, 0, sizeof(*a));
	if (read(pfd[0], a, sizeof(*a)) != sizeof(*a))
		a->seq.err = -EIO;
	close(pfd[0]);
	waitpid(pid, &status, 0);
	return a->seq.err;
}

static int emm_b_mkfile(uint64_t size)
{
	char *buf = malloc(4u << 20);
	int fd = open(emm_b_file, O_WRONLY | O_CREAT | O_TRUNC, 0600), rc = 0;

	if (fd < 0 || !buf) {
		free(buf);
		return -errno;
	}
	for (uint64_t o = 0; o < size && !rc; o += 4u << 20) {
		size_t n = size - o < (4u << 20) ? (size_t)(size - o) : 4u << 20;

		for (size_t i = 0; i < n; i += 8)
			*(uint64_t *)(buf + i) = (o + i) * 0x9e3779b97f4a7c15ull;
		if (write(fd, buf, n) != (ssize_t)n)
			rc = -EIO;
	}
	if (fsync(fd))
		rc = -errno;
	close(fd);
	free(buf);
	return rc;
}

static int emm_b_mkswap(uint64_t size)
{
	char cmd[2400];

	snprintf(cmd, sizeof(cmd),
		 "fallocate -l %" PRIu64
		 " '%s' && chmod 600 '%s' && mkswap '%s' >/dev/null && swapon '%s'",
		 size + (256u << 20), emm_b_swap, emm_b_swap, emm_b_swap, emm_b_swap);
	emm_b_swapon = 1;                      /* cleanup tries swapoff whatever happened */
	return system(cmd) == 0 ? 0 : -ENODEV; /* not -EIO: that means the child died */
}

/* ---- output ---- */

static void emm_b_row(int json, const char *op, const struct emm_b_res *r, uint64_t size,
		      uint64_t cache, const char *extra)
{
	if (r->err) {
		fprintf(stderr, "ethermem bench map: %s: %s\n", op, em_strerror(r->err));
		return;
	}
	if (json) {
		printf("{\"op\":\"%s\",\"size\":%" PRIu64 ",\"cache\":%" PRIu64 ",\"gbps\":%.3f,"
		       "\"p50_us\":%.2f,\"p99_us\":%.2f",
		       op, size, cache, r->gbps, r->p50_us, r->p99_us);
		if (r->ratio >= 0)
			printf(",\"fetched_over_optimal\":%.3f", r->ratio);
		printf("%s}\n", extra ? extra : "");
	} else {
		printf("%-18s %9.3f %10.2f %10.2f", op, r->gbps, r->p50_us, r->p99_us);
		if (r->ratio >= 0)
			printf(" %10.3f", r->ratio);
		printf("\n");
	}
	fflush(stdout);
}

static void emm_b_rows(int json, const char *pre, struct emm_b_all *a, uint64_t size,
		       uint64_t cache, const char *rand_extra)
{
	char op[64];

	a->seq.ratio = a->rnd.ratio = -1;
	snprintf(op, sizeof(op), "%s-seq", pre);
	emm_b_row(json, op, &a->seq, size, cache, NULL);
	if (a->seq.err)
		return;
	snprintf(op, sizeof(op), "%s-rand4k", pre);
	emm_b_row(json, op, &a->rnd, size, cache, rand_extra);
	snprintf(op, sizeof(op), "%s-cyclic", pre);
	emm_b_row(json, op, &a->cyc, 2 * cache, cache, NULL);
}

/* One row of the fault-path floors, built field by field. */
struct emm_b_line {
	int json;
	size_t n;
	char s[1024];
};

static void emm_b_add(struct emm_b_line *l, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (l->n >= sizeof(l->s))
		return;
	va_start(ap, fmt);
	k = vsnprintf(l->s + l->n, sizeof(l->s) - l->n, fmt, ap);
	va_end(ap);
	if (k > 0)
		l->n += (size_t)k;
}

/* `"<pre>gbps":G,"<pre>p50_us":P`, or `"<pre>err":"why"` when the figure
 * could not be measured: an absent or zero field would read as a result. */
static void emm_b_fig(struct emm_b_line *l, const char *pre, const struct emm_floor_fig *f)
{
	if (f->err[0]) {
		char why[sizeof(f->err)];

		for (size_t i = 0; i < sizeof(why); i++)
			why[i] = f->err[i] == '"' || f->err[i] == '\\' ? '\'' : f->err[i];
		emm_b_add(l, l->json ? ",\"%serr\":\"%s\"" : "  %serr: %s", pre, why);
		return;
	}
	emm_b_add(l, l->json ? ",\"%sgbps\":%.3f" : "  %sgbps %.3f", pre, f->gbps);
	emm_b_add(l, l->json ? ",\"%sp50_us\":%.2f" : "  %sp50_us %.2f", pre,
		  (double)f->p50_ns / 1e3);
}

static void emm_b_line_start(struct emm_b_line *l, int json, const char *op, uint64_t size)
{
	l->json = json;
	l->n = 0;
	if (json)
		emm_b_add(l, "{\"op\":\"%s\",\"size\":%" PRIu64 ",\"cache\":0", op, size);
	else
		emm_b_add(l, "%-18s", op);
}

static void emm_b_line_end(struct emm_b_line *l)
{
	printf("%s%s\n", l->s, l->json ? "}" : "");
	fflush(stdout);
}

/* The rows of emm_floor_paths: what each fault path the engine could take
 * costs on this machine, measured in this run. */
static void emm_b_paths(int json, const struct emm_floor_fig *f)
{
	struct emm_floor_fig main4k = f[EMM_PATH_CONT_4K];
	struct emm_b_line l;

	/* uffd-continue reads like uffd-floor: 4 KiB p50, 2 MiB-per-fault GB/s */
	emm_b_line_start(&l, json, "uffd-continue", 4096);
	main4k.gbps = f[EMM_PATH_CONT_2M].gbps;
	if (!main4k.err[0])
		memcpy(main4k.err, f[EMM_PATH_CONT_2M].err, sizeof(main4k.err));
	emm_b_fig(&l, "", &main4k);
	if (!main4k.err[0])
		emm_b_add(&l, json ? ",\"p50_2m_us\":%.2f" : "  p50_2m_us %.2f",
			  (double)f[EMM_PATH_CONT_2M].p50_ns / 1e3);
	emm_b_fig(&l, "fill_", &f[EMM_PATH_CONT_FILL]);
	emm_b_fig(&l, "hugetlb_", &f[EMM_PATH_CONTH_2M]);
	emm_b_fig(&l, "hugetlb_fill_", &f[EMM_PATH_CONTH_FILL]);
	emm_b_line_end(&l);

	emm_b_line_start(&l, json, "uffd-copy-batch", 2u << 20);
	emm_b_fig(&l, "", &f[EMM_PATH_COPY_ONE]);
	emm_b_fig(&l, "per_page_", &f[EMM_PATH_COPY_PER_PAGE]);
	emm_b_line_end(&l);

	emm_b_line_start(&l, json, "uffd-huge", 2u << 20);
	emm_b_fig(&l, "", &f[EMM_PATH_HUGE_EVICT]);
	emm_b_fig(&l, "anon_", &f[EMM_PATH_ANON_EVICT]);
	emm_b_line_end(&l);

	emm_b_line_start(&l, json, "uffd-recv", 2u << 20);
	emm_b_fig(&l, "", &f[EMM_PATH_RECV_COPY]);
	emm_b_fig(&l, "tcp_", &f[EMM_PATH_RECV_TCP]);
	emm_b_fig(&l, "continue_", &f[EMM_PATH_RECV_CONT]);
	emm_b_fig(&l, "hugetlb_continue_", &f[EMM_PATH_RECV_CONTH]);
	emm_b_fig(&l, "move_", &f[EMM_PATH_RECV_MOVE]);
	emm_b_line_end(&l);
}

int em_cli_bench_map(int argc, char **argv, struct em_cli_pool *cp)
{
	uint64_t size = 4ull << 30, cache = 0;
	const char *dir = "/var/tmp";
	int json = 0, skip = 0, help = 0, rc;
	struct emm_b_all pool = { 0 }, file = { 0 }, swp = { 0 };
	struct emm_floor fl;
	struct emm_floor_fig paths[EMM_PATH_N];
	struct emm_b_res frow = { .ratio = -1 };
	double api_p50 = 0;
	char extra[256];

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = 1;
		} else if (!strcmp(argv[i], "--skip-baselines")) {
			skip = 1;
		} else if (i + 1 < argc && !strcmp(argv[i], "--size")) {
			if (em_parse_size(argv[++i], &size))
				goto usage;
		} else if (i + 1 < argc && !strcmp(argv[i], "--cache")) {
			if (em_parse_size(argv[++i], &cache))
				goto usage;
		} else if (i + 1 < argc && !strcmp(argv[i], "--dir")) {
			dir = argv[++i];
		} else {
			help = !strcmp(argv[i], "--help");
usage:
			fprintf(help ? stdout : stderr,
				"usage: ethermem bench map [--json] [--size S] [--cache C] [--dir DIR] [--skip-baselines]\n"
				"  --size S   region (and file, swap) size, default 4G\n"
				"  --cache C  local cache and cgroup limit, default S/4; cyclic scans cover 2C\n"
				"  --dir DIR  where the data file and swap file go (default /var/tmp)\n");
			return help ? 0 : 2;
		}
	}
	size &= ~4095ull;
	if (!cache)
		cache = size / 4;
	cache &= ~4095ull;
	if (size < (16u << 20) || cache < (1u << 20) || 2 * cache > size) {
		fprintf(stderr, "ethermem bench map: need size >= 16M and 1M <= cache <= size/2\n");
		return 2;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "ethermem bench map: needs root (userfaultfd, cgroups, swap)\n");
		return 1;
	}
	signal(SIGINT, emm_b_signal);
	signal(SIGTERM, emm_b_signal);
	atexit(emm_b_cleanup);
	if (!json)
		printf("%-18s %9s %10s %10s %10s\n", "op", "GB/s", "p50 us", "p99 us", "fetch/opt");

	rc = emm_b_pool(cp, size, cache, &pool, &fl, &api_p50);
	if (rc)
		return 1;
	frow.p50_us = (double)fl.sigbus_4k_p50_ns / 1e3;
	frow.p99_us = frow.p50_us;
	frow.gbps = fl.sigbus_2m_gbps;
	snprintf(extra, sizeof(extra), ",\"thread_p50_us\":%.2f",
		 (double)fl.thread_4k_p50_ns / 1e3);
	emm_b_row(json, "uffd-floor", &frow, 4096, 0, extra);
	emm_b_huge_reserve(EMM_FLOOR_HUGE_PAGES);
	emm_floor_paths(paths, EMM_B_PATH_ROUNDS);
	emm_b_huge_restore();
	emm_b_paths(json, paths);
	snprintf(extra, sizeof(extra),
		 ",\"floor_p50_us\":%.2f,\"api_read_p50_us\":%.2f,\"target_p50_us\":%.2f",
		 frow.p50_us, api_p50, 1.2 * (frow.p50_us + api_p50));
	emm_b_rows(json, "map", &pool, size, cache, extra);
	if (!json)
		printf("  random 4 KiB target: 1.2 x (floor %.2f + API read %.2f) = %.2f us\n",
		       frow.p50_us, api_p50, 1.2 * (frow.p50_us + api_p50));
	if (skip)
		return 0;

	rc = emm_b_cgroup(cache);
	if (rc) {
		fprintf(stderr, "ethermem bench map: cgroup v1 memory controller: %s\n",
			strerror(-rc));
		emm_b_cleanup();
		return 1;
	}
	snprintf(emm_b_file, sizeof(emm_b_file), "%s/ethermem-bench-%d.dat", dir, (int)getpid());
	rc = emm_b_mkfile(size);
	if (!rc)
		rc = emm_b_child(1, size, cache, &file);
	if (!rc)
		emm_b_rows(json, "mmap-file", &file, size, cache, NULL);
	else
		fprintf(stderr, "ethermem bench map: mmap-file baseline: %s\n", strerror(-rc));
	unlink(emm_b_file);
	emm_b_file[0] = 0;

	snprintf(emm_b_swap, sizeof(emm_b_swap), "%s/ethermem-bench-%d.swap", dir, (int)getpid());
	rc = emm_b_mkswap(size);
	/* a memory cgroup this tight now and then OOM-kills while swap-out
	 * lags behind (seen at 16 MiB limits): try again before giving up */
	for (int tries = 0; tries < 3; tries++) {
		if (!rc || tries)
			rc = emm_b_child(2, size, cache, &swp);
		if (rc != -EIO)
			break;
	}
	if (!rc)
		emm_b_rows(json, "swap", &swp, size, cache, NULL);
	else
		fprintf(stderr, "ethermem bench map: swap baseline: %s\n", strerror(-rc));
	emm_b_cleanup();
	return 0;
}
