/*
 * uffd_wp_costs.c - what each way of tracking a unit's stores costs per
 * 16 KiB unit on this kernel, to decide whether the engine should move from
 * synchronous write-protect faults to UFFD_FEATURE_WP_ASYNC (Linux 6.7),
 * where the kernel resolves a store to a protected page itself and
 * PAGEMAP_SCAN tells which pages were written. Async tracking leaves no
 * fault in which a store racing with eviction could wait, so an eviction
 * would have to take the pages out atomically (UFFDIO_MOVE) before it
 * decides whether they changed; that is measured too, beside today's
 * process_madvise drop. A second thread spins in the process throughout,
 * so that every TLB flush has another CPU to reach, as in a program under
 * `ethermem run`. One line per round; compare within a round.
 *
 *   gcc -O2 -pthread -o /tmp/uffd_wp_costs bench/uffd_wp_costs.c
 *   /tmp/uffd_wp_costs [ROUNDS]
 *
 * The installed headers may predate 6.7/6.8: the constants are defined
 * here when missing. BENCHMARKS.md, "Asynchronous write-protect", has the
 * figures and the conclusion.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1ull << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1ull << 16)
#endif
#ifndef UFFDIO_MOVE
struct uffdio_move {
	uint64_t dst, src, len, mode;
	int64_t move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct uffdio_move)
#endif
#ifndef PAGEMAP_SCAN
#define PAGE_IS_WRITTEN (1 << 1)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
struct page_region {
	uint64_t start, end, categories;
};
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

#define UNIT (16u << 10)
#define NU 2048
static int uffd, pagemap;
static char *base, buf[UNIT];
static atomic_int stop;

static double now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static void *spin(void *a)
{
	(void)a;
	while (!atomic_load_explicit(&stop, memory_order_relaxed))
		;
	return NULL;
}

/* The synchronous path as the engine's fault server takes it: read the
 * message, lift the unit's protection (which wakes the thread). */
static void *server(void *a)
{
	struct pollfd p = { .fd = uffd, .events = POLLIN };

	(void)a;
	while (!atomic_load(&stop)) {
		struct uffd_msg m;

		if (poll(&p, 1, 50) <= 0 || read(uffd, &m, sizeof(m)) != sizeof(m))
			continue;
		uint64_t at = m.arg.pagefault.address & ~(uint64_t)(UNIT - 1);

		if (!(m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
			/* a missing page: the unit goes in, protected */
			struct uffdio_copy c = { at, (uintptr_t)buf, UNIT, UFFDIO_COPY_MODE_WP, 0 };

			ioctl(uffd, UFFDIO_COPY, &c);
			continue;
		}
		struct uffdio_writeprotect wp = { .range = { at, UNIT } };

		ioctl(uffd, UFFDIO_WRITEPROTECT, &wp);
	}
	return NULL;
}

static int open_uffd(uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 || ioctl(fd, UFFDIO_API, &api)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static char *region(unsigned mode)
{
	char *p = mmap(NULL, (size_t)NU * UNIT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	struct uffdio_register r = { .range = { (uintptr_t)p, (uint64_t)NU * UNIT }, .mode = mode };

	if (p == MAP_FAILED || ioctl(uffd, UFFDIO_REGISTER, &r)) {
		perror("uffd_wp_costs: register");
		exit(1);
	}
	return p;
}

static void fill(void)
{
	for (unsigned i = 0; i < NU; i++) {
		struct uffdio_copy c = { (uintptr_t)base + (uint64_t)i * UNIT, (uintptr_t)buf, UNIT,
					 UFFDIO_COPY_MODE_WP, 0 };

		if (ioctl(uffd, UFFDIO_COPY, &c))
			perror("uffd_wp_costs: copy");
	}
}

static double store_each(void)
{
	double t = now_us();

	for (unsigned i = 0; i < NU; i++)
		base[(size_t)i * UNIT + 8]++;
	return (now_us() - t) / NU;
}

static double per_unit(int (*op)(unsigned))
{
	double t = now_us();

	for (unsigned i = 0; i < NU; i++)
		if (op(i) < 0)
			perror("uffd_wp_costs");
	return (now_us() - t) / NU;
}

static int op_protect(unsigned i)
{
	struct uffdio_writeprotect wp = { .range = { (uintptr_t)base + (uint64_t)i * UNIT, UNIT },
					  .mode = UFFDIO_WRITEPROTECT_MODE_WP };

	return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp);
}

static long scanned; /* regions the scans reported */

static int op_scan(unsigned i)
{
	struct page_region v[8];
	struct pm_scan_arg s = { .size = sizeof(s),
				 .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
				 .start = (uintptr_t)base + (uint64_t)i * UNIT,
				 .end = (uintptr_t)base + (uint64_t)(i + 1) * UNIT,
				 .vec = (uintptr_t)v,
				 .vec_len = 8,
				 .category_mask = PAGE_IS_WRITTEN,
				 .return_mask = PAGE_IS_WRITTEN };

	long r = ioctl(pagemap, PAGEMAP_SCAN, &s);

	scanned += r > 0 ? r : 0;
	return r < 0 ? -1 : 0;
}

static char *stage;

static int op_move(unsigned i)
{
	struct uffdio_move mv = { (uintptr_t)stage + (uint64_t)i * UNIT,
				  (uintptr_t)base + (uint64_t)i * UNIT, UNIT, 0, 0 };

	return ioctl(uffd, UFFDIO_MOVE, &mv);
}

static double drop_batched(void)
{
	int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	double t = now_us();

	for (unsigned i = 0; i < NU; i += 8) {
		struct iovec iv[8];

		for (unsigned j = 0; j < 8; j++)
			iv[j] = (struct iovec){ base + (size_t)(i + j) * UNIT, UNIT };
		syscall(SYS_process_madvise, pidfd, iv, 8, MADV_DONTNEED, 0);
	}
	t = (now_us() - t) / NU;
	close(pidfd);
	return t;
}

/* One mode in a child of its own (the features are fixed per descriptor). */
static void round_of(int async)
{
	pthread_t sp, sv;

	uffd = open_uffd(UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_THREAD_ID |
			 (async ? UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_MOVE : 0));
	if (uffd < 0) {
		printf(" %s: refused by this kernel\n", async ? "async" : "sync");
		return;
	}
	base = region(UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP);
	/* opened here: a pagemap descriptor names the process that opened it */
	pagemap = open("/proc/self/pagemap", O_RDONLY);
	pthread_create(&sp, NULL, spin, NULL);
	pthread_create(&sv, NULL, server, NULL);
	fill();
	if (!async) {
		double st = store_each(), pr = per_unit(op_protect), dr = drop_batched();

		printf(" sync: store %.2f protect %.2f drop %.2f |", st, pr, dr);
	} else {
		double st = store_each(), sw = per_unit(op_scan), sc, mv;
		long found = scanned;

		sc = per_unit(op_scan);
		/* the MISSING registration still works beside WP_ASYNC: a unit
		 * dropped and protected again faults as missing and is served */
		syscall(SYS_madvise, base, UNIT, MADV_DONTNEED);
		op_protect(0);
		if (((volatile char *)base)[5] != 1)
			printf(" [a dropped unit was not served as missing]");
		stage = region(UFFDIO_REGISTER_MODE_MISSING);
		store_each();
		mv = per_unit(op_move);
		/* the second scan must find nothing: the first protected it all */
		printf(" async: store %.2f scan-written %.2f (%ld of %u found) scan-clean %.2f (%ld) "
		       "move %.2f",
		       st, sw, found, NU, sc, scanned - found, mv);
	}
	atomic_store(&stop, 1);
	pthread_join(sp, NULL);
	pthread_join(sv, NULL);
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 5;
	uint64_t sig;
	int fd;

	if (argc > 2 || rounds < 1) {
		fprintf(stderr, "usage: uffd_wp_costs [ROUNDS >= 1]\n");
		return 2;
	}
	sig = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_ASYNC;
	fd = open_uffd(sig);

	/* the engine's SIGBUS mode would ask for this combination */
	printf("WP_ASYNC with SIGBUS: %s\n", fd >= 0 ? "accepted" : "refused");
	if (fd >= 0)
		close(fd);
	memset(buf, 1, sizeof(buf));
	printf("us per 16 KiB unit:\n");
	for (int r = 0; r < rounds; r++) {
		for (int async = 0; async < 2; async++) {
			pid_t p;

			fflush(stdout);
			p = fork();

			if (!p) {
				round_of(async);
				fflush(stdout);
				_exit(0);
			}
			waitpid(p, NULL, 0);
		}
		printf("\n");
	}
	return 0;
}
