/*
 * uffd.c - the process's userfaultfd: opening it with the features the
 * fault mode needs, registering ranges, write-protect, and fork.
 *
 * One userfaultfd serves every mapping of the process, opened at the first
 * map. The fault mode (SIGBUS in the faulting thread, or engine threads)
 * is fixed then, because the features are chosen by UFFDIO_API once. A
 * forked child gets the mappings as ordinary private memory, filled before
 * the fork, and starts the engine from nothing (atfork).
 */
#include "map/engine.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>

/* One UFFDIO_WRITEPROTECT over units first..last of one mapping. */
static int wp_span(struct emm_mapping *m, size_t first, size_t last, int protect)
{
	struct uffdio_writeprotect wp = {
		.range = { (uintptr_t)emm_uaddr(m, first),
			   (uint64_t)(emm_uaddr(m, last) - emm_uaddr(m, first)) +
				   emm_ulen(m, last) },
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	atomic_fetch_add_explicit(&emm_g.wp_ioctls, 1, memory_order_relaxed);
	return ioctl(emm_g.uffd, UFFDIO_WRITEPROTECT, &wp) ? -errno : 0;
}

int emm_wp(struct emm_mapping *m, size_t idx, int protect)
{
	return wp_span(m, idx, idx, protect);
}

/* Each UFFDIO_WRITEPROTECT that changes present pages ends in a TLB flush
 * on every CPU the process runs on, which in a virtual machine is a round
 * of cross-CPU calls: a profile of the NumPy corpus run had 14% of its
 * samples there, one ioctl and one flush per unit written back. A batch is
 * therefore sorted by address and each run of adjacent units of one
 * mapping gets one ioctl, so one flush. A range that spans units which are
 * not the caller's would protect pages nobody will unprotect, so runs stop
 * at the first gap. A run the kernel refuses (a part of it no longer
 * registered) is retried unit by unit, as before. */
void emm_wp_units(struct emm_unit **us, unsigned n, int protect)
{
	struct emm_unit *s[EMM_WB_MAX];

	if (n > EMM_WB_MAX) {
		for (unsigned i = 0; i < n; i += EMM_WB_MAX)
			emm_wp_units(us + i, n - i < EMM_WB_MAX ? n - i : EMM_WB_MAX, protect);
		return;
	}
	for (unsigned i = 0; i < n; i++) {
		unsigned j = i;

		for (; j > 0 && (uintptr_t)s[j - 1] > (uintptr_t)us[i]; j--)
			s[j] = s[j - 1];
		s[j] = us[i];
	}
	for (unsigned i = 0, j; i < n; i = j) {
		struct emm_mapping *m = s[i]->m;
		size_t first = (size_t)(s[i] - m->u), last = first;

		for (j = i + 1; j < n && s[j]->m == m && s[j] == s[j - 1] + 1; j++)
			last++;
		if (wp_span(m, first, last, protect) && last > first)
			for (size_t k = first; k <= last; k++)
				emm_wp(m, k, protect);
	}
}

uint64_t emm_wp_calls(void)
{
	return atomic_load(&emm_g.wp_ioctls);
}

uint64_t emm_wp_faults(void)
{
	return atomic_load(&emm_g.wp_faults);
}

uint64_t emm_staged_touches(void)
{
	return atomic_load(&emm_g.stage_hits);
}

int emm_set_fault_mode(enum emm_fault_mode mode)
{
	int err = 0;

	pthread_mutex_lock(&emm_g.mu);
	if (emm_g.uffd >= 0)
		err = mode && (int)mode != emm_g.mode ? -EBUSY : 0;
	else
		emm_g.mode = mode;
	pthread_mutex_unlock(&emm_g.mu);
	return err;
}

int emm_fault_mode(void)
{
	return emm_g.mode;
}

/* Fork: the child gets every mapping as ordinary private memory with the
 * contents it had at the fork. The child's copy of a range is not
 * registered with any userfaultfd (the kernel drops the registration in a
 * child), so a page missing there would read as zero: before the fork
 * every unit that holds data is brought in, with the budget lifted so none
 * is evicted meanwhile, and the fork copies them all. Units of a fresh
 * mapping never written are zeros anyway and stay out. Mappings on
 * explicit huge pages are not copied (MADV_DONTFORK): a private hugetlb
 * copy needs free huge pages at the child's first write.
 *
 * What the fork brings in is the child's, not the parent's working set:
 * each such unit is marked (forkfill) and goes in clean at T's head, the
 * eviction end, without teaching the policy anything, and T's target is
 * put back as it was. So the parent's next faults that need room drop
 * those first, unwritten, and it keeps the cache it had: before, the fill
 * went into P with the budget lifted, every refetch grew T's target to
 * near the lifted budget, and afterwards P was cut to nothing, its dirty
 * units written back first (forkpool: 70 MB written for nothing after
 * the fork). They are dropped at those faults rather than at the fork: a
 * second fork soon after (a process pool starting its workers) finds them
 * in, and while a child lives its pages are shared with it anyway. */
static uint64_t emm_fork_budget, emm_fork_target;

/* Calls f on every unit of the live mappings a fork copies; the caller
 * holds emm_g.serving, so none is freed meanwhile. */
static void emm_fork_units(void (*f)(struct emm_mapping *m, struct emm_unit *u))
{
	for (unsigned i = 0; i < (unsigned)atomic_load(&emm_g.nmaps) && i < EMM_MAX_MAPS; i++) {
		struct emm_mapping *m = atomic_load(&emm_g.maps[i]);

		if (!m || m->huge || atomic_load(&m->dead))
			continue;
		for (size_t idx = 0; idx < m->nunits; idx++)
			f(m, &m->u[idx]);
	}
}

/* A unit that holds data but is not in: all are marked before any is
 * brought in, so the neighbours a fetch takes along count as the fill. */
static bool emm_fork_wanted(struct emm_mapping *m, struct emm_unit *u)
{
	return atomic_load(&u->st) == EMM_EMPTY && !((m->flags & EMM_MAP_FRESH) && !u->written);
}

static void emm_fork_mark(struct emm_mapping *m, struct emm_unit *u)
{
	if (emm_fork_wanted(m, u))
		atomic_store_explicit(&u->forkfill, 1, memory_order_relaxed);
}

/* Every unit is settled, a fetch or write-back of another thread's too:
 * the fork copies none half done. */
static void emm_fork_fill(struct emm_mapping *m, struct emm_unit *u)
{
	if (emm_fork_wanted(m, u)) {
		atomic_store_explicit(&u->forkfill, 1, memory_order_relaxed);
		emm_serve((uintptr_t)emm_uaddr(m, (size_t)(u - m->u)), false);
	}
	emm_settle(u);
}

static void emm_fork_unmark(struct emm_mapping *m, struct emm_unit *u)
{
	(void)m;
	atomic_store_explicit(&u->forkfill, 0, memory_order_relaxed);
}

static void emm_atfork_prepare(void)
{
	if (emm_g.uffd < 0)
		return;
	emm_lock();
	emm_fork_budget = emm_g.budget;
	emm_fork_target = emm_g.t_target;
	emm_g.budget = UINT64_MAX / 4;
	emm_unlock();
	atomic_fetch_add(&emm_g.serving, 1); /* no mapping is freed meanwhile */
	emm_fork_units(emm_fork_mark);
	emm_fork_units(emm_fork_fill);
	atomic_fetch_sub(&emm_g.serving, 1);
}

static void emm_atfork_parent(void)
{
	if (emm_g.uffd < 0)
		return;
	atomic_fetch_add(&emm_g.serving, 1);
	emm_fork_units(emm_fork_unmark);
	atomic_fetch_sub(&emm_g.serving, 1);
	emm_lock();
	emm_g.budget = emm_fork_budget;
	emm_g.t_target = emm_fork_target;
	emm_unlock();
}

/* The child shares none of the engine: its mappings are plain memory now
 * (above) and the userfaultfd and channels belong to the parent. It starts
 * over if it maps anything itself. The old sources leak: closing the
 * parent's connections from the child would disturb the parent. */
static void emm_atfork_child(void)
{
	if (emm_g.uffd >= 0)
		emm_g.budget = emm_fork_budget;
	pthread_mutex_init(&emm_g.mu, NULL);
	atomic_store(&emm_g.lock, 0);
	if (emm_g.uffd >= 0)
		close(emm_g.uffd);
	emm_g.uffd = -1;
	/* the parent's trace is the parent's: a child's records would mix in */
	if (emm_g.trace)
		close(emm_g.trace - 1);
	emm_g.trace = 0;
	/* the parent's pidfd names the parent: process_madvise through it
	 * would drop the parent's pages */
	if (emm_g.pidfd)
		close(emm_g.pidfd - 1);
	emm_g.pidfd = 0;
	emm_g.mode = 0;
	emm_g.resident = 0;
	emm_g.P = emm_g.T = (struct emm_list){ 0 };
	emm_g.t_target = 0;
	memset(emm_g.streams, 0, sizeof(emm_g.streams));
	for (int i = 0; i < EMM_MAX_MAPS; i++)
		atomic_store(&emm_g.maps[i], NULL);
	atomic_store(&emm_g.nmaps, 0);
	emm_g.sources = NULL;
	/* the cleaner thread is the parent's; a child that maps starts one */
	atomic_store(&emm_g.clean_started, 0);
	atomic_store(&emm_g.clean_idle, 0);
	if (emm_g.bus_installed)
		sigaction(SIGBUS, &emm_g.old_bus, NULL);
	emm_g.bus_installed = 0;
}

/* A refused UFFDIO_API leaves the descriptor unusable, so each attempt
 * opens its own. */
int emm_uffd_open(uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

int emm_init_locked(void)
{
	static int atfork_done;
	uint64_t want;
	int fd;

	if (emm_g.uffd >= 0)
		return 0;
	if (!atfork_done++)
		pthread_atfork(emm_atfork_prepare, emm_atfork_parent, emm_atfork_child);
	/* the library chose from its settings; the engine alone defaults to
	 * the faster way */
	if (!emm_g.mode)
		emm_g.mode = EMM_FAULTS_SIGBUS;
	want = UFFD_FEATURE_PAGEFAULT_FLAG_WP |
	       (emm_g.mode == EMM_FAULTS_SIGBUS ? UFFD_FEATURE_SIGBUS : UFFD_FEATURE_THREAD_ID);
#ifdef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
	/* write-protect on hugetlb ranges (5.19+) is asked for first; an older
	 * kernel refuses it, and then mappings simply stay on 4 KiB pages */
	fd = emm_uffd_open(want | UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
	emm_g.huge_wp = fd >= 0;
	if (fd < 0)
#endif
		fd = emm_uffd_open(want);
	if (fd < 0)
		return fd;
	emm_g.zero = mmap(NULL, EMM_CELL, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (emm_g.zero == MAP_FAILED) {
		close(fd);
		return -ENOMEM;
	}
	emm_g.uffd = fd;
	/* eviction drops its victims with one process_madvise (policy.c);
	 * without a pidfd it falls back to one madvise each */
	if (!emm_g.pidfd) {
		int pf = (int)syscall(SYS_pidfd_open, getpid(), 0);

		emm_g.pidfd = pf >= 0 ? pf + 1 : 0;
	}
	emm_clean_start();
	if (emm_g.mode == EMM_FAULTS_SIGBUS) {
		struct sigaction sa = { .sa_sigaction = emm_sigbus,
					.sa_flags = SA_SIGINFO | SA_RESTART };

		/* other signals wait while a fault is served: their handlers
		 * could touch mapped memory with SIGBUS blocked */
		sigfillset(&sa.sa_mask);
		sigaction(SIGBUS, &sa, &emm_g.old_bus);
		emm_g.bus_installed = 1;
	} else {
		pthread_attr_t at;
		pthread_t t;
		int err = 0;

		/* several servers, so that one fault waiting for the network
		 * does not hold up the others (each takes its own channel);
		 * one is enough to run, so only the first must start */
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		for (int i = 0; i < EMM_SERVERS; i++) {
			int e = pthread_create(&t, &at, emm_server, NULL);

			if (e && !i)
				err = e;
			if (e)
				break;
		}
		pthread_attr_destroy(&at);
		if (err) {
			close(fd);
			emm_g.uffd = -1;
			return -err;
		}
	}
	return 0;
}

int emm_register(char *base, size_t len, unsigned flags, bool huge)
{
	struct uffdio_register reg = {
		.range = { (uintptr_t)base, len },
		.mode = UFFDIO_REGISTER_MODE_MISSING |
			(flags & EM_MAP_READONLY ? 0 : UFFDIO_REGISTER_MODE_WP),
	};

	/* a child gets a copy of the range (emm_atfork_prepare), except on
	 * explicit huge pages */
	if (huge)
		emm_madvise(base, len, MADV_DONTFORK);
	/* Units go in with UFFDIO_COPY as small pages, so transparent huge
	 * pages cannot help here, and they cost: a missing fault where no page
	 * table is (a first touch, or after drops emptied one: far more often
	 * than first touches, by the counts) is served by the
	 * kernel's huge-page path, which allocates, charges and zeroes 2 MiB
	 * before it sees the userfaultfd and hands the fault over, throwing
	 * the page away. Eight NumPy threads sorting (NumPy asks for huge
	 * pages on its arrays) spent 2-5% of the program's samples there.
	 * Refused on kernels without THP: nothing to turn off then. */
	else
		emm_madvise(base, len, MADV_NOHUGEPAGE);
	return ioctl(emm_g.uffd, UFFDIO_REGISTER, &reg) ? -errno : 0;
}
