/*
 * map_floor.c - what a userfaultfd fault costs on this machine, by each path the
 * engine could serve it with, with no network beyond loopback.
 *
 * The paging engine chooses how faults are served by measurement, and the
 * benchmark reports the figures as its uffd-* rows, so they have to come
 * from the same binary in the same run. emm_floor_measure (the uffd-floor
 * row): a 4 KiB fault served by a separate thread that sleeps in poll(2) and
 * answers with UFFDIO_COPY; the same fault served in the faulting thread
 * itself (UFFD_FEATURE_SIGBUS, UFFDIO_COPY from the SIGBUS handler); and the
 * bandwidth of 2 MiB per fault in-thread. Each source page is pre-touched
 * so that only the fault path is timed, not the page allocation of the source.
 *
 * emm_floor_paths (the other rows) measures the alternatives, all served
 * in-thread from SIGBUS: minor faults over a shared-memory cache (a memfd
 * mapped twice, data written through an alias, the view mapped with
 * UFFDIO_CONTINUE), over shmem and over hugetlb; one UFFDIO_COPY per 2 MiB
 * against 512 of 4 KiB; COPY per fault into private hugetlb against 4 KiB
 * anonymous pages; and 2 MiB replies from a loopback TCP peer received into
 * a staging buffer and copied (the engine today), received into the memfd
 * alias and CONTINUE'd, or received into staging whose pages UFFDIO_MOVE
 * moves in. "Steady" figures cycle over 16 units keeping 4, so each fault
 * also pays for the eviction the path implies: MADV_DONTNEED; a hole punched
 * in the memfd (zapping the view alone would leave the page cache full); or
 * the evicted pages moved back into the staging buffer, so that MOVE never
 * allocates. Rounds interleave the paths and each figure is the median
 * round, because neighbours share the two cores. A figure that cannot be
 * measured (too few free huge pages, a feature the kernel lacks) carries its
 * reason instead of a number; reserving huge pages is the caller's business,
 * as vm.nr_hugepages is a system setting.
 */
#include "cli/map_floor.h"
#include "map/emm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
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
	struct uffdio_register reg = {
		.range = { (uintptr_t)base, len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	int fd = emm_uffd_open(features);

	if (fd >= 0 && ioctl(fd, UFFDIO_REGISTER, &reg)) {
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
		.dst = a,
		.src = (uintptr_t)emm_floor_src,
		.len = emm_floor_unit,
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
			.src = (uintptr_t)s->src,
			.len = 4096,
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

		a = mmap(NULL, len + unit, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
			 0);
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

/* ---- the paths the engine could take instead ---- */

/* UFFDIO_MOVE (Linux 6.8) is newer than the installed 6.1 headers. */
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1ull << 16)
#endif
#ifndef UFFDIO_MOVE
struct uffdio_move {
	uint64_t dst;
	uint64_t src;
	uint64_t len;
	uint64_t mode;
	int64_t move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct uffdio_move)
#endif

#define EMM_FP_UNIT (2ul << 20)
#define EMM_FP_UNITS 16                  /* the range a steady run cycles over */
#define EMM_FP_KEEP 4                    /* units it keeps resident */
#define EMM_FP_FAULTS (2 * EMM_FP_UNITS) /* faults per round: two passes */
#define EMM_FP_MAXR 15
/* a steady hugetlb run holds the kept units and the one being faulted */
_Static_assert(EMM_FLOOR_HUGE_PAGES >= EMM_FP_KEEP + 1, "EMM_FLOOR_HUGE_PAGES too small");

enum {
	EMM_FP_COPY,
	EMM_FP_CONT,
	EMM_FP_FILL,
	EMM_FP_RECV_COPY,
	EMM_FP_RECV_CONT,
	EMM_FP_RECV_MOVE
};
enum { EMM_FP_ZAP, EMM_FP_PUNCH, EMM_FP_MOVEBACK };

/* What the SIGBUS handler serves; set before each run, read only by it. */
static struct {
	int how, fd, sock;
	char *view, *alias, *src, *stage;
	size_t len, unit;
	int stage_full;
	uint64_t seq, expect;
	int err;
	const char *what;
	sigjmp_buf jb;
} emm_fp;

static int emm_fp_fetch(char *dst)
{
	uint64_t req = ++emm_fp.seq;
	size_t got = 0;

	if (send(emm_fp.sock, &req, sizeof(req), MSG_NOSIGNAL) != sizeof(req))
		return -1;
	while (got < emm_fp.unit) {
		ssize_t n = recv(emm_fp.sock, dst + got, emm_fp.unit - got, MSG_WAITALL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (!n)
				errno = ECONNRESET;
			return -1;
		}
		got += (size_t)n;
	}
	emm_fp.expect = req; /* the sender stamps each reply with its request */
	return 0;
}

static int emm_fp_move(uintptr_t dst, uintptr_t src, size_t len)
{
	while (len) {
		struct uffdio_move mv = { .dst = dst, .src = src, .len = len };

		if (ioctl(emm_fp.fd, UFFDIO_MOVE, &mv) == 0)
			return 0;
		/* a partial move reports EAGAIN with what it did move */
		if (errno != EAGAIN || mv.move <= 0)
			return -1;
		dst += (uint64_t)mv.move;
		src += (uint64_t)mv.move;
		len -= (size_t)mv.move;
	}
	return 0;
}

static int emm_fp_copy(uintptr_t dst, const char *src, size_t len)
{
	struct uffdio_copy cp = { .dst = dst, .src = (uintptr_t)src, .len = len };

	return ioctl(emm_fp.fd, UFFDIO_COPY, &cp);
}

/* Serves one fault as emm_fp.how says. Whatever fails ends the run through
 * siglongjmp: returning would refault forever, and abort() would leave the
 * huge pages the bench reserved behind. */
static void emm_fp_sigbus(int sig, siginfo_t *si, void *uc)
{
	uintptr_t v = (uintptr_t)emm_fp.view, addr = (uintptr_t)si->si_addr;
	uintptr_t a = v + ((addr - v) & ~(uintptr_t)(emm_fp.unit - 1));
	char *alias = emm_fp.alias + (a - v);
	int how = emm_fp.how, saved = errno, rc = 0;

	if (addr < v || addr >= v + emm_fp.len) {
		emm_fp.what = "a fault outside the measured range";
		emm_fp.err = -EFAULT;
		siglongjmp(emm_fp.jb, 1);
	}
	if (how == EMM_FP_RECV_MOVE && !emm_fp.stage_full) {
		/* filling up: nothing evicted yet to recycle */
		emm_fp.what = "UFFDIO_COPY into the staging buffer";
		rc = emm_fp_copy((uintptr_t)emm_fp.stage, emm_fp.src, emm_fp.unit);
		emm_fp.stage_full = !rc;
	}
	if (!rc && (how == EMM_FP_FILL || how == EMM_FP_RECV_CONT)) {
		/* allocate the page cache in one call, not 512 faults, and fail
		 * here with ENOMEM rather than by SIGBUS inside the copy */
		emm_fp.what = "MADV_POPULATE_WRITE of the alias";
		rc = madvise(alias, emm_fp.unit, MADV_POPULATE_WRITE);
		if (!rc && how == EMM_FP_FILL)
			memcpy(alias, emm_fp.src, emm_fp.unit);
	}
	if (!rc &&
	    (how == EMM_FP_RECV_COPY || how == EMM_FP_RECV_CONT || how == EMM_FP_RECV_MOVE)) {
		emm_fp.what = "recv";
		rc = emm_fp_fetch(how == EMM_FP_RECV_CONT ? alias : emm_fp.stage);
	}
	if (!rc && (how == EMM_FP_COPY || how == EMM_FP_RECV_COPY)) {
		emm_fp.what = "UFFDIO_COPY";
		rc = emm_fp_copy(a, how == EMM_FP_COPY ? emm_fp.src : emm_fp.stage, emm_fp.unit);
	} else if (!rc && how == EMM_FP_RECV_MOVE) {
		emm_fp.what = "UFFDIO_MOVE";
		rc = emm_fp_move(a, (uintptr_t)emm_fp.stage, emm_fp.unit);
		emm_fp.stage_full = 0;
	} else if (!rc) {
		struct uffdio_continue c = { .range = { a, emm_fp.unit } };

		emm_fp.what = "UFFDIO_CONTINUE";
		rc = ioctl(emm_fp.fd, UFFDIO_CONTINUE, &c);
	}
	/* EEXIST too: with one thread it means a unit half installed, and
	 * returning would refault on the other half forever */
	if (rc) {
		emm_fp.err = -errno;
		siglongjmp(emm_fp.jb, 1);
	}
	errno = saved;
}

struct emm_fp_run {
	int how, ev, memfd;
	char *view, *alias, *stage;
	size_t unit;
	unsigned units, keep, faults;
	int cached; /* the eviction only re-arms the fault: time faults alone */
};

static int emm_fp_evict(const struct emm_fp_run *r, unsigned u)
{
	char *p = r->view + (size_t)u * r->unit;

	if (r->ev == EMM_FP_PUNCH)
		return fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				 (off_t)((size_t)u * r->unit), (off_t)r->unit)
			       ? -errno
			       : 0;
	if (r->ev == EMM_FP_MOVEBACK) {
		/* the staging buffer is empty after every fetch: recycle the
		 * evicted pages into it instead of freeing them */
		if (emm_fp_move((uintptr_t)r->stage, (uintptr_t)p, r->unit))
			return -errno;
		emm_fp.stage_full = 1;
		return 0;
	}
	return madvise(p, r->unit, MADV_DONTNEED) ? -errno : 0;
}

/* Leaves nothing of the run resident (untimed). */
static void emm_fp_drop(const struct emm_fp_run *r)
{
	size_t len = (size_t)r->units * r->unit;

	madvise(r->view, len, MADV_DONTNEED);
	if (r->memfd >= 0)
		fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)len);
	if (r->ev == EMM_FP_MOVEBACK)
		madvise(r->stage, r->unit, MADV_DONTNEED);
	emm_fp.stage_full = 0;
}

static int emm_fp_loop(const struct emm_fp_run *r, uint64_t *lat, uint64_t *fault_ns,
		       uint64_t *total_ns)
{
	uint64_t t0 = emm_floor_now_ns();

	*fault_ns = 0;
	for (unsigned i = 0; i < r->faults; i++) {
		const char *p = r->view + (size_t)(i % r->units) * r->unit;
		uint64_t t = emm_floor_now_ns(), w;
		int rc;

		w = *(const volatile uint64_t *)p;
		lat[i] = emm_floor_now_ns() - t;
		*fault_ns += lat[i];
		if (w != emm_fp.expect) {
			emm_fp.what = "data check after the install";
			return -EIO;
		}
		if (i >= r->keep && (rc = emm_fp_evict(r, (i - r->keep) % r->units))) {
			emm_fp.what = "eviction";
			return rc;
		}
	}
	*total_ns = emm_floor_now_ns() - t0;
	return 0;
}

/* The handler's siglongjmp lands here, so nothing of the caller's frame
 * lives across it. */
static int emm_fp_guarded(const struct emm_fp_run *r, uint64_t *lat, uint64_t *fault_ns,
			  uint64_t *total_ns)
{
	if (sigsetjmp(emm_fp.jb, 1))
		return emm_fp.err;
	return emm_fp_loop(r, lat, fault_ns, total_ns);
}

/* Touches r->faults units cyclically over r->units, evicting the oldest
 * once more than r->keep are resident; *gbps and *p50 for this round. */
static int emm_fp_cycle(const struct emm_fp_run *r, double *gbps, uint64_t *p50)
{
	uint64_t *lat = calloc(r->faults, sizeof(*lat)), fault_ns = 0, total_ns = 0;
	int rc;

	if (!lat) {
		emm_fp.what = "calloc";
		return -ENOMEM;
	}
	emm_fp.how = r->how;
	emm_fp.view = r->view;
	emm_fp.alias = r->alias;
	emm_fp.stage = r->stage;
	emm_fp.unit = r->unit;
	emm_fp.len = (size_t)r->units * r->unit;
	emm_fp.err = 0;
	rc = emm_fp_guarded(r, lat, &fault_ns, &total_ns);
	emm_fp_drop(r);
	if (!rc) {
		uint64_t ns = r->cached ? fault_ns : total_ns;

		*gbps = ns ? (double)r->faults * (double)r->unit / (double)ns : 0;
		qsort(lat, r->faults, sizeof(*lat), emm_floor_u64cmp);
		*p50 = lat[r->faults / 2];
	}
	free(lat);
	return rc;
}

/* ---- per-figure bookkeeping over rounds ---- */

struct emm_fp_acc {
	double gbps[EMM_FP_MAXR];
	uint64_t p50[EMM_FP_MAXR];
	unsigned n;
};

static int emm_fp_dblcmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void emm_fp_fail(struct emm_floor_fig *f, const char *what, int err)
{
	if (!f->err[0])
		snprintf(f->err, sizeof(f->err), "%s: %s", what, strerror(-err));
}

/* Records one round's result, or the first failure (which ends the figure). */
static void emm_fp_note(struct emm_floor_fig *f, struct emm_fp_acc *a, int rc, double gbps,
			uint64_t p50)
{
	if (rc) {
		emm_fp_fail(f, emm_fp.what ? emm_fp.what : "setup", rc);
		return;
	}
	a->gbps[a->n] = gbps;
	a->p50[a->n++] = p50;
}

/* ---- fixtures: the mappings every round reuses ---- */

struct emm_fp_fix {
	int memfd;
	char *view, *alias, *raw;
	size_t len, rawlen;
};

/* Points a run at a memfd fixture's two views. */
static void emm_fp_on(struct emm_fp_run *r, const struct emm_fp_fix *x)
{
	r->view = x->view;
	r->alias = x->alias;
	r->memfd = x->memfd;
}

static uint64_t emm_fp_features(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	uint64_t f = 0;

	if (fd >= 0 && ioctl(fd, UFFDIO_API, &api) == 0)
		f = api.features;
	if (fd >= 0)
		close(fd);
	return f;
}

static int emm_fp_register(int fd, char *p, size_t len, uint64_t mode)
{
	struct uffdio_register reg = { .range = { (uintptr_t)p, len }, .mode = mode };

	return ioctl(fd, UFFDIO_REGISTER, &reg) ? -errno : 0;
}

/* A memfd seen twice: an alias the data is written through, and a view
 * that the application would touch. The view is registered for missing
 * faults too: a minor fault comes only for a page already in the page
 * cache, and a read of a hole (a punched-out unit) would otherwise get
 * zeros from the kernel without asking us. */
static int emm_fp_memfd(struct emm_fp_fix *x, int fd, size_t len, int huge)
{
	int mfl = MAP_SHARED | (huge ? MAP_NORESERVE : 0);

	x->len = len;
	x->memfd = memfd_create(huge ? "ethermem-floor-huge" : "ethermem-floor",
				MFD_CLOEXEC | (huge ? MFD_HUGETLB : 0));
	if (x->memfd < 0)
		return -errno;
	if (ftruncate(x->memfd, (off_t)len))
		return -errno;
	x->alias = mmap(NULL, len, PROT_READ | PROT_WRITE, mfl, x->memfd, 0);
	if (x->alias == MAP_FAILED) {
		x->alias = NULL;
		return -errno;
	}
	x->view = mmap(NULL, len, PROT_READ | PROT_WRITE, mfl, x->memfd, 0);
	if (x->view == MAP_FAILED) {
		x->view = NULL;
		return -errno;
	}
	return emm_fp_register(fd, x->view, len,
			       UFFDIO_REGISTER_MODE_MINOR | UFFDIO_REGISTER_MODE_MISSING);
}

/* Private memory registered for missing faults, aligned to EMM_FP_UNIT so
 * the handler can find a unit by masking. */
static int emm_fp_anon(struct emm_fp_fix *x, int fd, size_t len, int huge)
{
	int fl = MAP_PRIVATE | MAP_ANONYMOUS | (huge ? MAP_HUGETLB | MAP_NORESERVE : 0);

	x->memfd = -1;
	x->len = len;
	x->rawlen = huge ? len : len + EMM_FP_UNIT;
	x->raw = mmap(NULL, x->rawlen, PROT_READ | PROT_WRITE, fl, -1, 0);
	if (x->raw == MAP_FAILED) {
		x->raw = NULL;
		return -errno;
	}
	x->view = (char *)(((uintptr_t)x->raw + EMM_FP_UNIT - 1) & ~(uintptr_t)(EMM_FP_UNIT - 1));
	return emm_fp_register(fd, x->view, len, UFFDIO_REGISTER_MODE_MISSING);
}

static void emm_fp_unfix(struct emm_fp_fix *x)
{
	if (x->raw)
		munmap(x->raw, x->rawlen);
	if (x->view && !x->raw)
		munmap(x->view, x->len);
	if (x->alias)
		munmap(x->alias, x->len);
	if (x->memfd >= 0)
		close(x->memfd);
	memset(x, 0, sizeof(*x));
	x->memfd = -1;
}

/* Puts the pattern into the page cache through the alias, untimed. */
static int emm_fp_prefill(struct emm_fp_fix *x, size_t len)
{
	if (madvise(x->alias, len, MADV_POPULATE_WRITE)) {
		emm_fp.what = "MADV_POPULATE_WRITE of the alias";
		return -errno;
	}
	for (size_t o = 0; o < len; o += EMM_FP_UNIT)
		memcpy(x->alias + o, emm_fp.src, len - o < EMM_FP_UNIT ? len - o : EMM_FP_UNIT);
	return 0;
}

/* ---- the TCP peer: answers each 8-byte request with a 2 MiB reply ---- */

struct emm_fp_peer {
	int sock;
	char *buf;
};

static void *emm_fp_sender(void *arg)
{
	struct emm_fp_peer *p = arg;
	uint64_t req;

	while (recv(p->sock, &req, sizeof(req), MSG_WAITALL) == sizeof(req)) {
		size_t off = 0;

		memcpy(p->buf, &req, sizeof(req));
		while (off < EMM_FP_UNIT) {
			ssize_t n = send(p->sock, p->buf + off, EMM_FP_UNIT - off, MSG_NOSIGNAL);

			if (n <= 0)
				return NULL;
			off += (size_t)n;
		}
	}
	return NULL;
}

/* A loopback TCP connection: *cli for the faulting side, peer->sock served
 * by the sender thread. */
static int emm_fp_connect(int *cli, struct emm_fp_peer *peer)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1, rc = 0;

	*cli = peer->sock = -1;
	if (ls < 0)
		return -errno;
	if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 1) ||
	    getsockname(ls, (struct sockaddr *)&sa, &sl))
		rc = -errno;
	if (!rc && (*cli = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		rc = -errno;
	if (!rc && connect(*cli, (struct sockaddr *)&sa, sizeof(sa)))
		rc = -errno;
	if (!rc && (peer->sock = accept4(ls, NULL, NULL, SOCK_CLOEXEC)) < 0)
		rc = -errno;
	close(ls);
	if (!rc) {
		setsockopt(*cli, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(peer->sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return rc;
}

/* ---- emm_floor_paths ---- */

int emm_floor_paths(struct emm_floor_fig *fig, unsigned rounds)
{
	size_t range = (size_t)EMM_FP_UNITS * EMM_FP_UNIT, small = 2000ul * 4096;
	struct emm_fp_fix shs = { .memfd = -1 }, shm = { .memfd = -1 }, hug = { .memfd = -1 };
	struct emm_fp_fix anon = { .memfd = -1 }, hpriv = { .memfd = -1 }, stg = { .memfd = -1 };
	struct emm_fp_acc *acc = calloc(EMM_PATH_N, sizeof(*acc));
	struct emm_fp_peer peer = { .sock = -1 };
	struct sigaction sa = { 0 }, old;
	uint64_t feat = emm_fp_features(), want, pattern = 0x5a5a5a5a5a5a5a5aull;
	uint64_t need = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_MINOR_SHMEM;
	unsigned free_huge = (unsigned)(emm_huge_free() / EMM_FP_UNIT);
	pthread_t th;
	int fd = -1, sock = -1, have_th = 0, rc = 0;
	const char *what = "buffers";
	char *tcpbuf = NULL;

	for (int i = 0; i < EMM_PATH_N; i++)
		memset(&fig[i], 0, sizeof(fig[i]));
	if (rounds < 1)
		rounds = 1;
	if (rounds > EMM_FP_MAXR)
		rounds = EMM_FP_MAXR;
	emm_fp.src =
		mmap(NULL, EMM_FP_UNIT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	tcpbuf =
		mmap(NULL, EMM_FP_UNIT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	peer.buf =
		mmap(NULL, EMM_FP_UNIT, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!acc || emm_fp.src == MAP_FAILED || tcpbuf == MAP_FAILED || peer.buf == MAP_FAILED) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t o = 0; o < EMM_FP_UNIT; o += 8)
		memcpy(emm_fp.src + o, &pattern, 8);
	memset(tcpbuf, 1, EMM_FP_UNIT);
	memset(peer.buf, 0x77, EMM_FP_UNIT);

	/* one userfaultfd for every range: what the engine would have */
	what = "userfaultfd with SIGBUS and MINOR_SHMEM";
	if ((feat & need) != need) {
		rc = -EOPNOTSUPP;
		goto out;
	}
	want = feat & (need | UFFD_FEATURE_MINOR_HUGETLBFS | UFFD_FEATURE_MISSING_HUGETLBFS |
		       UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MOVE);
	fd = emm_uffd_open(want);
	if (fd < 0) {
		rc = fd;
		goto out;
	}
	emm_fp.fd = fd;

	emm_fp.what = "shmem memfd";
	if ((rc = emm_fp_memfd(&shs, fd, small, 0)) || (rc = emm_fp_memfd(&shm, fd, range, 0)) ||
	    (rc = emm_fp_prefill(&shs, small))) {
		for (int i = EMM_PATH_CONT_4K; i <= EMM_PATH_CONT_FILL; i++)
			emm_fp_fail(&fig[i], emm_fp.what, rc);
		emm_fp_fail(&fig[EMM_PATH_RECV_CONT], emm_fp.what, rc);
	}
	emm_fp.what = "anonymous range";
	if ((rc = emm_fp_anon(&anon, fd, range, 0)) ||
	    (rc = emm_fp_anon(&stg, fd, EMM_FP_UNIT, 0))) {
		static const int uses[] = { EMM_PATH_COPY_ONE, EMM_PATH_COPY_PER_PAGE,
					    EMM_PATH_ANON_EVICT, EMM_PATH_RECV_COPY,
					    EMM_PATH_RECV_MOVE };

		for (size_t i = 0; i < sizeof(uses) / sizeof(uses[0]); i++)
			emm_fp_fail(&fig[uses[i]], emm_fp.what, rc);
	}
	if (free_huge < EMM_FLOOR_HUGE_PAGES) {
		char why[96];

		snprintf(why, sizeof(why), "needs %d free huge pages, %u free (vm.nr_hugepages)",
			 EMM_FLOOR_HUGE_PAGES, free_huge);
		snprintf(fig[EMM_PATH_CONTH_2M].err, sizeof(fig[0].err), "%s", why);
		snprintf(fig[EMM_PATH_CONTH_FILL].err, sizeof(fig[0].err), "%s", why);
		snprintf(fig[EMM_PATH_HUGE_EVICT].err, sizeof(fig[0].err), "%s", why);
		snprintf(fig[EMM_PATH_RECV_CONTH].err, sizeof(fig[0].err), "%s", why);
	} else {
		if (!(feat & UFFD_FEATURE_MINOR_HUGETLBFS)) {
			snprintf(fig[EMM_PATH_CONTH_2M].err, sizeof(fig[0].err),
				 "UFFD_FEATURE_MINOR_HUGETLBFS not offered");
		} else if ((rc = emm_fp_memfd(&hug, fd, range, 1))) {
			emm_fp_fail(&fig[EMM_PATH_CONTH_2M], "hugetlb memfd", rc);
		}
		if (fig[EMM_PATH_CONTH_2M].err[0]) {
			memcpy(fig[EMM_PATH_CONTH_FILL].err, fig[EMM_PATH_CONTH_2M].err,
			       sizeof(fig[0].err));
			memcpy(fig[EMM_PATH_RECV_CONTH].err, fig[EMM_PATH_CONTH_2M].err,
			       sizeof(fig[0].err));
		}
		if ((rc = emm_fp_anon(&hpriv, fd, range, 1)))
			emm_fp_fail(&fig[EMM_PATH_HUGE_EVICT], "private hugetlb range", rc);
	}
	if (!(feat & UFFD_FEATURE_MOVE))
		snprintf(fig[EMM_PATH_RECV_MOVE].err, sizeof(fig[0].err),
			 "UFFD_FEATURE_MOVE not offered");
	if ((rc = emm_fp_connect(&sock, &peer)) ||
	    (rc = -pthread_create(&th, NULL, emm_fp_sender, &peer))) {
		for (int i = EMM_PATH_RECV_TCP; i <= EMM_PATH_RECV_MOVE; i++)
			emm_fp_fail(&fig[i], "loopback TCP connection", rc);
	} else {
		have_th = 1;
	}
	emm_fp.sock = sock;
	rc = 0;

	sa.sa_sigaction = emm_fp_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &old);

	/* rounds interleave the paths, so a neighbour's load on the two
	 * cores hits all of them alike; medians drop the outliers */
	for (unsigned round = 0; round < rounds; round++) {
		struct emm_fp_run r = { .memfd = -1,
					.unit = EMM_FP_UNIT,
					.units = EMM_FP_UNITS,
					.keep = EMM_FP_KEEP,
					.faults = EMM_FP_FAULTS };
		struct emm_fp_run cached = r, steady = r;
		double g = 0;
		uint64_t p = 0;
		int e;

		cached.how = EMM_FP_CONT;
		cached.ev = EMM_FP_ZAP;
		cached.cached = 1;
		steady.ev = EMM_FP_PUNCH;

		emm_fp.expect = pattern;
		if (!fig[EMM_PATH_CONT_4K].err[0]) {
			r = cached;
			r.view = shs.view;
			r.alias = shs.alias;
			r.unit = 4096;
			r.units = r.keep = r.faults = (unsigned)(small / 4096);
			e = emm_fp_cycle(&r, &g, &p);
			emm_fp_note(&fig[EMM_PATH_CONT_4K], &acc[EMM_PATH_CONT_4K], e, g, p);
		}
		for (int h = 0; h < 2; h++) {
			struct emm_fp_fix *x = h ? &hug : &shm;
			int i2m = h ? EMM_PATH_CONTH_2M : EMM_PATH_CONT_2M;
			int ifill = h ? EMM_PATH_CONTH_FILL : EMM_PATH_CONT_FILL;

			emm_fp.expect = pattern;
			if (!fig[i2m].err[0]) {
				r = cached;
				emm_fp_on(&r, x);
				r.units = EMM_FP_KEEP;
				r.keep = 0;
				e = emm_fp_prefill(x, (size_t)r.units * r.unit);
				if (!e)
					e = emm_fp_cycle(&r, &g, &p);
				emm_fp_note(&fig[i2m], &acc[i2m], e, g, p);
			}
			if (!fig[ifill].err[0]) {
				r = steady;
				r.how = EMM_FP_FILL;
				emm_fp_on(&r, x);
				e = emm_fp_cycle(&r, &g, &p);
				emm_fp_note(&fig[ifill], &acc[ifill], e, g, p);
			}
		}
		for (int per_page = 0; per_page < 2 && anon.view; per_page++) {
			int i = per_page ? EMM_PATH_COPY_PER_PAGE : EMM_PATH_COPY_ONE;
			uint64_t lat[EMM_FP_UNITS], sum = 0;

			if (fig[i].err[0])
				continue;
			e = 0;
			for (unsigned u = 0; u < EMM_FP_UNITS && !e; u++) {
				uintptr_t dst = (uintptr_t)anon.view + (size_t)u * EMM_FP_UNIT;
				uint64_t t = emm_floor_now_ns();

				if (!per_page)
					e = emm_fp_copy(dst, emm_fp.src, EMM_FP_UNIT) ? -errno : 0;
				for (size_t o = 0; per_page && o < EMM_FP_UNIT && !e; o += 4096)
					e = emm_fp_copy(dst + o, emm_fp.src + o, 4096) ? -errno : 0;
				lat[u] = emm_floor_now_ns() - t;
				sum += lat[u];
			}
			madvise(anon.view, range, MADV_DONTNEED);
			emm_fp.what = "UFFDIO_COPY";
			qsort(lat, EMM_FP_UNITS, sizeof(lat[0]), emm_floor_u64cmp);
			emm_fp_note(&fig[i], &acc[i], e, sum ? (double)range / (double)sum : 0,
				    lat[EMM_FP_UNITS / 2]);
		}
		for (int h = 0; h < 2; h++) {
			int i = h ? EMM_PATH_HUGE_EVICT : EMM_PATH_ANON_EVICT;

			if (fig[i].err[0])
				continue;
			r = steady;
			r.how = EMM_FP_COPY;
			r.ev = EMM_FP_ZAP;
			r.memfd = -1;
			r.view = h ? hpriv.view : anon.view;
			emm_fp.expect = pattern;
			e = emm_fp_cycle(&r, &g, &p);
			emm_fp_note(&fig[i], &acc[i], e, g, p);
		}
		if (!fig[EMM_PATH_RECV_TCP].err[0]) {
			uint64_t lat[EMM_FP_FAULTS], t0 = emm_floor_now_ns();

			emm_fp.unit = EMM_FP_UNIT;
			emm_fp.what = "recv";
			e = 0;
			for (unsigned i = 0; i < EMM_FP_FAULTS && !e; i++) {
				uint64_t t = emm_floor_now_ns();

				e = emm_fp_fetch(tcpbuf) ? -errno : 0;
				lat[i] = emm_floor_now_ns() - t;
			}
			g = (double)EMM_FP_FAULTS * EMM_FP_UNIT / (double)(emm_floor_now_ns() - t0);
			qsort(lat, EMM_FP_FAULTS, sizeof(lat[0]), emm_floor_u64cmp);
			emm_fp_note(&fig[EMM_PATH_RECV_TCP], &acc[EMM_PATH_RECV_TCP], e, g,
				    lat[EMM_FP_FAULTS / 2]);
		}
		for (int i = EMM_PATH_RECV_COPY; i <= EMM_PATH_RECV_MOVE; i++) {
			if (fig[i].err[0] || fig[EMM_PATH_RECV_TCP].err[0])
				continue;
			r = steady;
			if (i == EMM_PATH_RECV_COPY || i == EMM_PATH_RECV_MOVE) {
				r.how = i == EMM_PATH_RECV_COPY ? EMM_FP_RECV_COPY
								: EMM_FP_RECV_MOVE;
				r.ev = i == EMM_PATH_RECV_COPY ? EMM_FP_ZAP : EMM_FP_MOVEBACK;
				r.view = anon.view;
				r.stage = i == EMM_PATH_RECV_COPY ? tcpbuf : stg.view;
			} else {
				struct emm_fp_fix *x = i == EMM_PATH_RECV_CONT ? &shm : &hug;

				r.how = EMM_FP_RECV_CONT;
				emm_fp_on(&r, x);
			}
			e = emm_fp_cycle(&r, &g, &p);
			emm_fp_note(&fig[i], &acc[i], e, g, p);
			/* a recv that failed half-way leaves the stream misaligned */
			if (e && emm_fp.what && !strcmp(emm_fp.what, "recv"))
				for (int k = EMM_PATH_RECV_TCP; k <= EMM_PATH_RECV_MOVE; k++)
					emm_fp_fail(&fig[k], "recv", e);
		}
	}
	sigaction(SIGBUS, &old, NULL);

	for (int i = 0; i < EMM_PATH_N; i++) {
		struct emm_fp_acc *a = &acc[i];

		if (fig[i].err[0] || !a->n)
			continue;
		qsort(a->gbps, a->n, sizeof(a->gbps[0]), emm_fp_dblcmp);
		qsort(a->p50, a->n, sizeof(a->p50[0]), emm_floor_u64cmp);
		fig[i].gbps = a->gbps[a->n / 2];
		fig[i].p50_ns = a->p50[a->n / 2];
	}
out:
	if (sock >= 0) {
		shutdown(sock, SHUT_RDWR);
		close(sock);
	}
	if (have_th)
		pthread_join(th, NULL);
	if (peer.sock >= 0)
		close(peer.sock);
	emm_fp_unfix(&shs);
	emm_fp_unfix(&shm);
	emm_fp_unfix(&hug);
	emm_fp_unfix(&anon);
	emm_fp_unfix(&hpriv);
	emm_fp_unfix(&stg);
	if (fd >= 0)
		close(fd);
	if (emm_fp.src && emm_fp.src != MAP_FAILED)
		munmap(emm_fp.src, EMM_FP_UNIT);
	if (tcpbuf && tcpbuf != MAP_FAILED)
		munmap(tcpbuf, EMM_FP_UNIT);
	if (peer.buf && peer.buf != MAP_FAILED)
		munmap(peer.buf, EMM_FP_UNIT);
	emm_fp.src = NULL;
	free(acc);
	if (rc)
		for (int i = 0; i < EMM_PATH_N; i++)
			if (!fig[i].err[0])
				emm_fp_fail(&fig[i], what, rc);
	return rc;
}
