/*
 * floor.c - what a userfaultfd fault costs on this machine, with no network.
 *
 * The paging engine chooses how faults are served by measurement, and the
 * benchmark reports the result as its `uffd-floor` row, so the figure has to
 * come from the same binary in the same run. Three numbers: a 4 KiB fault
 * served by a separate thread that sleeps in poll(2) and answers with
 * UFFDIO_COPY; the same fault served in the faulting thread itself
 * (UFFD_FEATURE_SIGBUS, UFFDIO_COPY from the SIGBUS handler); and the
 * bandwidth of 2 MiB per fault in-thread. Each source page is pre-touched
 * so that only the fault path is timed, not the page allocation of the source.
 */
#include "map/emm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint64_t emm_floor_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int emm_floor_u64cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int emm_floor_uffd(uint64_t features, char *base, size_t len)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	struct uffdio_register reg = {
		.range = { (uintptr_t)base, len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api) || ioctl(fd, UFFDIO_REGISTER, &reg)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* State of the in-thread measurement; the handler may only touch these. */
static int emm_floor_fd = -1;
static char *emm_floor_src;
static size_t emm_floor_unit;

static void emm_floor_sigbus(int sig, siginfo_t *si, void *uc)
{
	uintptr_t a = (uintptr_t)si->si_addr & ~(uintptr_t)(emm_floor_unit - 1);
	struct uffdio_copy cp = {
		.dst = a, .src = (uintptr_t)emm_floor_src, .len = emm_floor_unit,
	};
	int saved = errno;

	if (ioctl(emm_floor_fd, UFFDIO_COPY, &cp) && errno != EEXIST)
		abort(); /* cannot serve; a silent retry would loop forever */
	errno = saved;
}

struct emm_floor_srv {
	int fd;
	char *src;
	_Atomic int stop;
};

static void *emm_floor_server(void *arg)
{
	struct emm_floor_srv *s = arg;
	struct uffd_msg msg;
	struct pollfd pfd = { .fd = s->fd, .events = POLLIN };

	while (!atomic_load(&s->stop)) {
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		if (read(s->fd, &msg, sizeof(msg)) != sizeof(msg))
			continue;
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		struct uffdio_copy cp = {
			.dst = msg.arg.pagefault.address & ~4095ull,
			.src = (uintptr_t)s->src, .len = 4096,
		};
		ioctl(s->fd, UFFDIO_COPY, &cp);
	}
	return NULL;
}

/* Times `n` first touches, one per `unit`, and returns the p50 in ns. */
static uint64_t emm_floor_touch(char *base, size_t unit, unsigned n, uint64_t *total_ns)
{
	uint64_t *lat = malloc(n * sizeof(*lat)), t0 = emm_floor_now_ns(), p50;

	if (!lat)
		return 0;
	for (unsigned i = 0; i < n; i++) {
		uint64_t t = emm_floor_now_ns();

		((volatile char *)base)[(size_t)i * unit] += 1;
		lat[i] = emm_floor_now_ns() - t;
	}
	*total_ns = emm_floor_now_ns() - t0;
	qsort(lat, n, sizeof(*lat), emm_floor_u64cmp);
	p50 = lat[n / 2];
	free(lat);
	return p50;
}

int emm_floor_measure(struct emm_floor *out, unsigned nfaults)
{
	size_t small = (size_t)nfaults * 4096, big = 64ul << 20;
	struct sigaction sa = { 0 }, old;
	struct emm_floor_srv srv = { 0 };
	pthread_t th;
	uint64_t total;
	char *src, *a;
	int fd, err = 0;

	memset(out, 0, sizeof(*out));
	src = mmap(NULL, 2ul << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED)
		return -errno;
	memset(src, 0x5a, 2ul << 20);

	/* separate thread, sleeping in poll(2) */
	a = mmap(NULL, small, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED) {
		err = -errno;
		goto out_src;
	}
	fd = emm_floor_uffd(0, a, small);
	if (fd < 0) {
		err = fd;
		munmap(a, small);
		goto out_src;
	}
	srv.fd = fd;
	srv.src = src;
	if (pthread_create(&th, NULL, emm_floor_server, &srv) == 0) {
		out->thread_4k_p50_ns = emm_floor_touch(a, 4096, nfaults, &total);
		atomic_store(&srv.stop, 1);
		pthread_join(th, NULL);
	}
	close(fd);
	munmap(a, small);

	/* in the faulting thread */
	sa.sa_sigaction = emm_floor_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);
	emm_floor_src = src;
	for (int pass = 0; pass < 2 && !err; pass++) {
		size_t len = pass ? big : small, unit = pass ? 2ul << 20 : 4096;

		a = mmap(NULL, len + unit, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (a == MAP_FAILED) {
			err = -errno;
			break;
		}
		char *al = (char *)(((uintptr_t)a + unit - 1) & ~(uintptr_t)(unit - 1));

		fd = emm_floor_uffd(UFFD_FEATURE_SIGBUS, al, len);
		if (fd < 0) {
			err = fd;
		} else {
			emm_floor_fd = fd;
			emm_floor_unit = unit;
			if (!pass) {
				out->sigbus_4k_p50_ns = emm_floor_touch(al, unit, nfaults, &total);
			} else {
				emm_floor_touch(al, unit, (unsigned)(len / unit), &total);
				out->sigbus_2m_gbps = total ? (double)len / (double)total : 0;
			}
			close(fd);
		}
		munmap(a, len + unit);
	}
	sigaction(SIGBUS, &old, NULL);
out_src:
	munmap(src, 2ul << 20);
	return err;
}
