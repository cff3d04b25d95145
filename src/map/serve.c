/*
 * serve.c - serving one fault, and how faults reach the engine.
 *
 * Faults are served in the faulting thread from a SIGBUS handler
 * (UFFD_FEATURE_SIGBUS), because handing a fault to another thread and
 * waking it costs more than the fault itself on small machines (the
 * uffd-floor row of `ethermem bench map` measures both; src/map/README.md
 * has the figures). The cost is that the kernel's own accesses (read(2) into
 * a mapped buffer) get EFAULT instead of a fault; programs we do not control
 * (the preload shim) therefore use the thread mode, where engine threads
 * read the userfaultfd and the kernel simply waits. Both call emm_serve.
 * Everything the handler touches is prepared outside it: the slots at the
 * first map, the unit arrays at map time; the handler only does CAS on
 * state words, a short spinlock for the policy lists, ioctls and the
 * backend's submit/wait, and logs with write(2).
 */
#include "map/engine.h"

#include <poll.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>

static size_t emm_fmt_u64(char *p, uint64_t v, int hex)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		unsigned d = (unsigned)(v % (hex ? 16 : 10));

		tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= hex ? 16 : 10;
	} while (v);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

/* One log line without stdio: it is written from the SIGBUS handler. */
void emm_log(const char *what, const char *msg, uintptr_t addr, int err)
{
	char buf[256];
	size_t n = 0;
	const char *parts[] = { "ethermem: mapping ", what, ": ", msg, " at 0x" };

	for (unsigned i = 0; i < 5; i++)
		for (const char *s = parts[i]; *s && n < 150; s++)
			buf[n++] = *s;
	n += emm_fmt_u64(buf + n, addr, 1);
	if (err) {
		/* The error's text, not its number: strerrordesc_np is a
		 * constant table (no locale, no allocation), fit for the signal
		 * handler. ethermem's own codes keep their number. */
		int e = err < 0 ? -err : err;
		const char *t = e < 4096 ? strerrordesc_np(e) : NULL;

		buf[n++] = ':';
		buf[n++] = ' ';
		if (t)
			for (; *t && n < 240; t++)
				buf[n++] = *t;
		else {
			const char *pre = "ethermem error ";
			while (*pre)
				buf[n++] = *pre++;
			n += emm_fmt_u64(buf + n, (uint64_t)e, 0);
		}
	}
	buf[n++] = '\n';
	if (write(2, buf, n) < 0)
		return;
}

/* On a held slot, until unit u leaves state s (FETCHING on this slot):
 * installs its data if it has landed, else reaps. */
int emm_wait_unit(struct emm_slot *sl, struct emm_unit *u, uint32_t s, bool dirty)
{
	int r = 0;

	while (atomic_load(&u->st) == s && r >= 0) {
		int i = emm_infl_find(sl, u);

		if (i >= 0 && sl->infl[i].ready) {
			atomic_fetch_add_explicit(&emm_g.stage_hits, 1, memory_order_relaxed);
			sl->infl[i].dirty = dirty && sl->infl[i].u == u;
			emm_infl_install(sl, i);
			break;
		}
		if (i < 0 && !sl->ninfl)
			break; /* nothing will come: the state moves elsewhere */
		r = emm_reap(sl, 1, u->m->timeout_ms);
	}
	return r < 0 ? r : 0;
}

static struct emm_mapping *emm_find(uintptr_t a)
{
	unsigned n = atomic_load_explicit(&emm_g.nmaps, memory_order_acquire);

	/* slots are taken lowest first, so the scan stops at the high mark */
	for (unsigned i = 0; i < n; i++) {
		struct emm_mapping *m = atomic_load_explicit(&emm_g.maps[i], memory_order_acquire);

		/* a discarded unit's range may have been reused by a newer mapping */
		if (m && a >= (uintptr_t)m->base && a < (uintptr_t)m->base + m->maplen &&
		    !atomic_load(&m->dead) &&
		    atomic_load(&m->u[(a - (uintptr_t)m->base) >> m->shift].st) != EMM_GONE)
			return m;
	}
	return NULL;
}

/* Whether a is in a unit that emm_detach gave back to its caller. A fault
 * taken there just before the detach is served after it: the pages are
 * ordinary memory now, and the access only has to be retried. Taken for
 * someone else's SIGBUS instead, it was chained to the default action,
 * which takes the handler down for the whole process while the retried
 * access succeeds, so the next fault anywhere was fatal. */
static bool emm_detached_at(uintptr_t a)
{
	unsigned n = atomic_load_explicit(&emm_g.nmaps, memory_order_acquire);

	for (unsigned i = 0; i < n; i++) {
		struct emm_mapping *m = atomic_load_explicit(&emm_g.maps[i], memory_order_acquire);

		if (m && a >= (uintptr_t)m->base && a < (uintptr_t)m->base + m->maplen) {
			struct emm_unit *u = &m->u[(a - (uintptr_t)m->base) >> m->shift];

			if (atomic_load(&u->st) == EMM_GONE && u->detached)
				return true;
		}
	}
	return false;
}

/* A dense region (prefetch.c) fills a group at a time: the other units of
 * idx's group that hold nothing yet go in as zeros with it, so a buffer
 * being filled takes one fault per group, not one per unit (emm_zero_span
 * says how many). */
static void emm_zero_group(struct emm_slot *sl, struct emm_mapping *m, size_t idx)
{
	size_t g = emm_zero_span(m);

	for (size_t j = idx & ~(g - 1); g > 1 && j < (idx | (g - 1)) + 1 && j < m->nunits; j++) {
		struct emm_unit *v = &m->u[j];
		uint32_t z = EMM_EMPTY;

		if (j == idx || v->written ||
		    !atomic_compare_exchange_strong(&v->st, &z, EMM_FETCHING | (uint32_t)sl->idx))
			continue;
		if (v->written) {
			/* written back since the look above (its claim decides):
			 * zeros would overwrite what the pool holds for it */
			atomic_store(&v->st, EMM_EMPTY);
			continue;
		}
		emm_reserve(sl, emm_ulen(m, j));
		emm_install(v, emm_g.zero, false);
	}
}

/* The demand fetch of unit idx, which the caller moved to FETCHING(sl). */
static int emm_fetch(struct emm_slot *sl, struct emm_mapping *m, size_t idx, bool is_write)
{
	struct emm_unit *u = &m->u[idx];
	uint64_t ul = emm_ulen(m, idx), off = (uint64_t)idx << m->shift;
	uint32_t mine = EMM_FETCHING | (uint32_t)sl->idx;
	bool dirty = is_write && emm_writable(m);
	int e, r;

	atomic_fetch_add(&m->faults, 1);
	emm_reap(sl, 0, 0);
	emm_reserve(sl, ul);
	if ((m->flags & EMM_MAP_FRESH) && !u->written) {
		/* a fresh region is zeros on the nodes: nothing to fetch */
		r = emm_install(u, emm_g.zero, dirty);
		if (!r && !(m->flags & EM_MAP_NOPREFETCH))
			emm_fetch_batch(sl, m, idx, NULL, -1);
		/* only ever more than one unit on the shim's blocks */
		if (!r)
			emm_zero_group(sl, m, idx);
		return r;
	}
	while ((e = emm_infl_alloc(sl)) < 0) {
		r = emm_reap(sl, 1, m->timeout_ms);
		if (r < 0)
			goto fail;
	}
	sl->infl[e] = (struct emm_infl){ .u = u, .dirty = dirty };
	struct emm_io io = {
		.rctx = m->rctx,
		.off = m->roff + off,
		.buf = sl->staging + (size_t)e * EMM_CELL,
		.len = emm_backed(m, idx),
		.tag = (uint64_t)e,
	};
	if (io.len < ul)
		memset((char *)io.buf + io.len, 0, ul - io.len);
	r = emm_fetch_batch(sl, m, idx, &io, e);
	if (r == -ENOENT)
		return 1; /* unmapped meanwhile: the unit went back to EMPTY */
	if (r) {
		sl->infl[e].u = NULL;
		goto fail;
	}
	r = emm_wait_unit(sl, u, mine, dirty);
	if (r < 0)
		goto fail;
	if (atomic_load(&u->st) == EMM_FAILED)
		return -EIO; /* logged where the completion was reaped */
	return 0;
fail:
	if (atomic_load(&u->st) == mine) {
		emm_lock();
		emm_g.resident -= ul;
		emm_unlock();
		atomic_store(&u->st, EMM_FAILED);
	}
	emm_log(m->what,
		r == -ETIMEDOUT ? "node did not answer within the timeout" : "fetch failed",
		(uintptr_t)emm_uaddr(m, idx), r);
	return r;
}

/* Serves a fault at a. Returns 0 when the access can be retried, 1 when the
 * address is not in a mapping, -errno when the access must fail. */
static int emm_serve_in(uintptr_t a, bool is_write)
{
	struct emm_mapping *m = emm_find(a);
	struct emm_unit *u;
	size_t idx;

	if (!m)
		return emm_detached_at(a) ? 0 : 1;
	idx = (a - (uintptr_t)m->base) >> m->shift;
	u = &m->u[idx];
	for (;;) {
		uint32_t s = atomic_load(&u->st);

		if (s == EMM_EMPTY) {
			struct emm_slot *sl = emm_slot_any(m->src);
			int r;

			if (!sl) {
				emm_log(m->what, "no channel to the pool is left", a, -EIO);
				return -EIO;
			}
			if (!atomic_compare_exchange_strong(&u->st, &s,
							    EMM_FETCHING | (uint32_t)sl->idx)) {
				emm_slot_put(sl);
				continue;
			}
			r = emm_fetch(sl, m, idx, is_write);
			emm_slot_put(sl);
			if (r)
				return r;
			continue;
		}
		if (s & EMM_FETCHING) {
			struct emm_slot *sl = &m->src->slot[s & 0xff];
			int r = 0;

			emm_slot_get(sl);
			if (atomic_load(&u->st) == s)
				emm_fetch_batch(sl, m, idx, NULL, -1);
			r = emm_wait_unit(sl, u, s, is_write && emm_writable(m));
			emm_slot_put(sl);
			if (r == -ETIMEDOUT && atomic_load(&u->st) == s)
				return r;
			continue;
		}
		switch (s) {
		case EMM_CLEAN:
		case EMM_SYNCING:
			if (!is_write || !emm_writable(m))
				return 0;
			if (!atomic_compare_exchange_strong(&u->st, &s, EMM_BUSY))
				continue;
			emm_probe_stored(u);
			/* still protected: what the pool holds is what is there,
			 * known already after a write-back it skipped or made.
			 * Caught in a write-back (SYNCING), whether the pool will
			 * hold it is not known yet */
			if (s == EMM_SYNCING)
				atomic_store_explicit(&u->dvalid, EMM_DIG_NONE,
						      memory_order_relaxed);
			else if (atomic_load_explicit(&u->dvalid, memory_order_relaxed) ==
				 EMM_DIG_NONE)
				emm_digest_note(u, emm_uaddr(m, idx));
			atomic_fetch_or_explicit(&u->wpred, EMM_WSEEN, memory_order_relaxed);
			atomic_fetch_add_explicit(&emm_g.wp_faults, 1, memory_order_relaxed);
			emm_wp(m, idx, 0);
			atomic_store(&u->st, EMM_DIRTY);
			return 0;
		case EMM_DIRTY:
			return 0;
		case EMM_FAILED:
			emm_log(m->what, "access to a unit whose fetch failed", a, -EIO);
			return -EIO;
		case EMM_GONE:
			/* discarded while we waited: the retry meets an unmapped
			 * page (SIGSEGV, as after munmap) or, in a detached unit,
			 * an ordinary one */
			return 0;
		default:
			sched_yield();
			continue;
		}
	}
}

/* Every fault is served inside this count, so that a mapping taken out of
 * emm_g.maps is freed only once no fault can still be looking at it
 * (emm_forget_locked, emm_reclaim_locked). Sequentially consistent with the store that removes the
 * mapping: either that store is seen by emm_find, or the count is seen by
 * the remover. */
int emm_serve(uintptr_t a, bool is_write)
{
	int r;

	atomic_fetch_add(&emm_g.serving, 1);
	r = emm_serve_in(a, is_write);
	atomic_fetch_sub(&emm_g.serving, 1);
	return r;
}

/* Waits until no fetch, protection change or write-back (the cleaner's, or
 * another em_sync's) is in progress on u and returns its settled state. */
uint32_t emm_settle(struct emm_unit *u)
{
	for (;;) {
		uint32_t s = atomic_load(&u->st);

		if (s & EMM_FETCHING) {
			struct emm_slot *sl = &u->m->src->slot[s & 0xff];

			emm_slot_get(sl);
			emm_wait_unit(sl, u, s, false);
			emm_slot_put(sl);
			if (atomic_load(&u->st) == s)
				sched_yield();
			continue;
		}
		if (s == EMM_BUSY || s == EMM_SYNCING || atomic_load(&u->wb)) {
			sched_yield();
			continue;
		}
		return s;
	}
}

static void emm_chain(int sig, siginfo_t *si, void *uc)
{
	struct sigaction *o = &emm_g.old_bus;

	if ((o->sa_flags & SA_SIGINFO) && o->sa_sigaction && o->sa_sigaction != emm_sigbus) {
		o->sa_sigaction(sig, si, uc);
	} else if (o->sa_handler != SIG_DFL && o->sa_handler != SIG_IGN) {
		o->sa_handler(sig);
	} else {
		/* the access re-faults on return and the default action kills */
		struct sigaction dfl = { .sa_handler = SIG_DFL };

		sigaction(SIGBUS, &dfl, NULL);
	}
}

void emm_sigbus(int sig, siginfo_t *si, void *ucv)
{
	int saved = errno;
	bool is_write = true;
	int r;

#if defined(__x86_64__)
	/* the page-fault error code: bit 1 is set for a write */
	is_write = (((ucontext_t *)ucv)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#endif
	r = emm_serve((uintptr_t)si->si_addr, is_write);
	if (r)
		emm_chain(sig, si, ucv);
	errno = saved;
}

/* One of EMM_SERVERS threads reading the userfaultfd. Each takes one
 * message at a time: a thread that read a batch would serve it in turn, and
 * a fault waiting for the network would hold up the ones behind it, which
 * another server could be fetching meanwhile. The descriptor does not block,
 * so the servers that poll woke for a message another one took go back to
 * poll. */
void emm_serve_time(uint64_t *served, uint64_t *ns, uint64_t *wp, uint64_t *wpf, uint64_t *wakes)
{
	*wp = emm_wp_calls();
	if (wpf)
		*wpf = emm_wp_faults();
	if (wakes)
		*wakes = atomic_load_explicit(&emm_g.wakes, memory_order_relaxed);
	*served = atomic_load_explicit(&emm_g.served, memory_order_relaxed);
	*ns = atomic_load_explicit(&emm_g.serve_ns, memory_order_relaxed);
}

/* Whether the thread whose fault at a was just served is awake already.
 * In the thread mode no UFFDIO_COPY or unprotect is DONTWAKE, and each
 * wakes the threads waiting in its range: a unit that is resident now
 * (CLEAN, DIRTY or SYNCING) had its pages installed, and for a store its
 * protection lifted, after the faulting thread checked them in the kernel
 * (or it never slept), so that ioctl woke it; or it is DIRTY and still
 * protected, waiting for the write-back's undo, whose unprotect will. The
 * explicit UFFDIO_WAKE the servers sent after every message walked the
 * userfaultfd's wait queues with interrupts off a second time: 100
 * thousand of them in the eight-thread corpus case. Anything else (a
 * discarded or evicted unit, a protection change in progress, no mapping)
 * still gets one. */
static bool emm_woken(uintptr_t a)
{
	struct emm_mapping *m;
	bool woken = false;

	atomic_fetch_add(&emm_g.serving, 1);
	m = emm_find(a);
	if (m) {
		uint32_t s = atomic_load(&m->u[(a - (uintptr_t)m->base) >> m->shift].st);

		woken = s == EMM_CLEAN || s == EMM_DIRTY || s == EMM_SYNCING;
	}
	atomic_fetch_sub(&emm_g.serving, 1);
	return woken;
}

void *emm_server(void *arg)
{
	struct pollfd pfd = { .fd = emm_g.uffd, .events = POLLIN };
	sigset_t all;

	(void)arg;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		struct uffd_msg msg;
		uint64_t a;
		int r;

		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			break;
		if (read(pfd.fd, &msg, sizeof(msg)) != (ssize_t)sizeof(msg) ||
		    msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		a = msg.arg.pagefault.address;
		struct timespec t0, t1;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		r = emm_serve((uintptr_t)a,
			      (msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		atomic_fetch_add_explicit(&emm_g.serve_ns,
					  (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll +
						     (t1.tv_nsec - t0.tv_nsec)),
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&emm_g.served, 1, memory_order_relaxed);
		/* r == 1, in no mapping: the range was unmapped or discarded
		 * after the fault was queued; woken, the thread retries and
		 * meets whatever is there now, SIGSEGV for nothing */
		if (r < 0) {
			/* the thread is parked in the kernel: a signal ends the wait,
			 * and the fatal SIGBUS is its own to handle or die of */
			syscall(SYS_tgkill, getpid(), (pid_t)msg.arg.pagefault.feat.ptid, SIGBUS);
			continue;
		}
		if (!r && emm_woken(a))
			continue;
		struct uffdio_range wr = { a & ~4095ull, 4096 };

		atomic_fetch_add_explicit(&emm_g.wakes, 1, memory_order_relaxed);
		ioctl(pfd.fd, UFFDIO_WAKE, &wr);
	}
	return NULL;
}
