/*
 * engine.c - the paging engine: userfaultfd mappings, a byte-budgeted cache,
 * write-protect dirty tracking, scan-resistant eviction and stream prefetch.
 *
 * A mapping is an anonymous range registered with one process-wide
 * userfaultfd (MISSING, plus WP when writable). It is cut into fetch units;
 * a unit is wholly present or wholly absent, and its state word is the only
 * synchronisation between faulting threads: EMPTY -> FETCHING(slot) ->
 * CLEAN/DIRTY -> BUSY (evicting) -> EMPTY. Whoever wins the CAS out of EMPTY
 * fetches; everyone else waits on the slot that owns the fetch, so a fault
 * is served once. Pages go in with one UFFDIO_COPY per unit, write-protected,
 * so the first store takes a WP fault that marks the unit dirty and lifts the
 * protection; eviction re-protects before it snapshots, which is what makes
 * a write racing with write-back land either in the snapshot or in a fault
 * that waits for the eviction to finish (no lost writes). A unit whose range
 * is unmapped (emm_discard_range, the shim's munmap of part of a block)
 * ends GONE and is never touched again.
 *
 * Units of 2 MiB go on explicit huge pages when the system has enough free
 * (emm_huge_fits): one page-table entry per fault and one page freed per
 * eviction, where 512 small pages per UFFDIO_COPY held a scan near 3 GB/s.
 *
 * Faults are served in the faulting thread from a SIGBUS handler
 * (UFFD_FEATURE_SIGBUS): measured on this machine at 15 us against 26-60 us
 * for handing the fault to another thread (src/cli/map_floor.c). The cost is that the
 * kernel's own accesses (read(2) into a mapped buffer) get EFAULT instead of
 * a fault; programs we do not control (the preload shim) therefore use the
 * thread mode, where one engine thread reads the userfaultfd and the kernel
 * simply waits. Everything the handler touches is prepared outside it: the
 * channels (slots) are opened at the first map, the unit arrays at map time;
 * the handler only does CAS on state words, a short spinlock for the
 * policy lists, ioctls and the backend's submit/wait.
 *
 * Eviction. userfaultfd shows misses, never hits, so recency of use is not
 * observable; what is observable is each unit's fetch history. The cache is
 * split into a protected set P (the stable resident part) and a small
 * transient FIFO T (about 1/32 of the budget, at least the prefetch window).
 * A fetched unit joins P only while P has room, or when it comes back so
 * soon after its eviction (eviction distance under |T|/2) that a slightly
 * larger T would have kept it; otherwise it streams through T. Under a
 * cyclic sweep over W > C this keeps P fixed and fetches W - |P| per pass,
 * about W - C, where LRU would refetch all of W. P must not go stale when
 * the working set moves, so it ages: for every 64 bytes streamed through T
 * one byte of P's oldest units is dropped, and the room goes to whatever is
 * fetched next. Clean units are dropped with MADV_DONTNEED (which re-arms
 * the MISSING fault); dirty ones are written back first.
 *
 * Prefetch. A small table of streams (sequential or strided, in fetch units,
 * per mapping) is fed by every fault, including faults on units still in
 * flight, so a stream that is being consumed keeps its window topped up.
 * Prefetches go out in the same batch as the demand fetch on the faulting
 * thread's slot and are installed when any thread next reaps that slot.
 */
#include "map/emm.h"
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define EMM_SLOTS 4             /* channels per source: concurrent fetching threads */
#define EMM_DEPTH EMM_CHAN_DEPTH /* in-flight operations per channel */
#define EMM_CELL (2ul << 20)    /* staging bytes per in-flight operation */
#define EMM_MAX_MAPS 1024
#define EMM_STREAMS 16
#define EMM_AHEAD_BYTES (4ul << 20)
#define EMM_HUGE (2ul << 20)    /* the explicit huge page size used */

enum {
	EMM_EMPTY = 0,
	EMM_CLEAN = 1,
	EMM_DIRTY = 2,
	EMM_BUSY = 3,    /* someone is changing protection or evicting */
	EMM_SYNCING = 4, /* write-protected, write-back in flight */
	EMM_FAILED = 5,  /* its fetch timed out: accesses are fatal */
	EMM_GONE = 6,    /* discarded (emm_discard_range): never touched again */
	EMM_FETCHING = 0x100, /* | slot index */
};

enum { EMM_LIST_NONE = 0, EMM_LIST_P = 1, EMM_LIST_T = 2 };

struct emm_mapping;

struct emm_unit {
	_Atomic uint32_t st;
	uint8_t list;
	uint8_t written;          /* ever written back (EMM_MAP_FRESH) */
	struct emm_unit *prev, *next;
	uint64_t evicted_at;      /* eviction clock at its last eviction; 0 never */
	struct emm_mapping *m;
};

struct emm_mapping {
	char *base;
	size_t maplen;            /* page-rounded; huge: 2 MiB-rounded */
	uint8_t huge;             /* backed by explicit 2 MiB pages (hugetlb) */
	uint64_t len;             /* backing bytes */
	uint64_t roff;
	void *rctx;
	unsigned shift;
	size_t nunits;
	unsigned flags;
	int timeout_ms;
	struct emm_source *src;
	struct emm_unit *u;
	char what[64];
	_Atomic int dead;
	struct emm_mapping *retired_next; /* unmapped, waiting to be freed */
	size_t ngone;             /* units discarded (G.mu) */
	_Atomic uint64_t faults, fetched, written, prefetched, evictions;
};

struct emm_infl {
	struct emm_unit *u;       /* NULL for a free entry */
	uint8_t write;
	uint8_t prefetch;
	uint8_t done;             /* writes: completion seen */
	uint8_t dirty;            /* reads: install writable and dirty */
	uint8_t ready;            /* prefetch landed in staging, not installed */
	int result;
};

struct emm_slot {
	_Atomic int busy;
	int idx;
	int poisoned;
	void *chan;
	char *staging;
	unsigned ninfl;           /* submitted, not completed */
	unsigned nready;          /* completed prefetches waiting in staging */
	struct emm_infl infl[EMM_DEPTH];
};

struct emm_source {
	const struct emm_backend_ops *ops;
	void *bctx;
	struct emm_source *next;
	struct emm_slot slot[EMM_SLOTS];
};

struct emm_list {
	struct emm_unit *head, *tail;
	uint64_t bytes;
};

struct emm_stream {
	struct emm_mapping *m;
	int64_t last, stride, front;
	unsigned hits;
	uint64_t used;
};

static struct {
	pthread_mutex_t mu;        /* map/unmap/source creation; never in the handler */
	_Atomic int lock;          /* policy lists, streams, counters */
	int uffd;
	int mode;
 	uint64_t budget;
	uint64_t max_unit;         /* largest fetch unit of the live mappings */
	uint64_t resident;         /* installed + reserved for fetches in flight */
	uint64_t staged;           /* prefetched, waiting in staging for a touch */
	uint64_t evict_clock;      /* bytes evicted, ever */
	uint64_t age_credit;
	struct emm_list P, T;
	struct emm_stream streams[EMM_STREAMS];
	uint64_t stream_tick;
	struct emm_mapping *_Atomic maps[EMM_MAX_MAPS];
	_Atomic unsigned nmaps;    /* slots in use are below this (high mark) */
	struct emm_source *sources;
	struct sigaction old_bus;
	int bus_installed;
	pthread_t server;
	char *zero;                /* EMM_CELL bytes of zeros for fresh units */
	int huge_wp;               /* the kernel write-protects hugetlb ranges */
	_Atomic unsigned serving;  /* faults being served now (emm_serve) */
	struct emm_mapping *retired; /* unmapped, freed once serving is 0 */
	struct em_map_stats gone;  /* totals of unmapped mappings */
} G = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.uffd = -1,
	.budget = 1ull << 30,
};

/* ---- small async-signal-safe helpers ---- */

static void emm_lock(void)
{
	while (atomic_exchange_explicit(&G.lock, 1, memory_order_acquire))
		while (atomic_load_explicit(&G.lock, memory_order_relaxed))
			sched_yield();
}

static void emm_unlock(void)
{
	atomic_store_explicit(&G.lock, 0, memory_order_release);
}

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
static void emm_log(const char *what, const char *msg, uintptr_t addr, int err)
{
	char buf[256];
	size_t n = 0;
	const char *parts[] = { "ethermem: mapping ", what, ": ", msg, " at 0x" };

	for (unsigned i = 0; i < 5; i++)
		for (const char *s = parts[i]; *s && n < 150; s++)
			buf[n++] = *s;
	n += emm_fmt_u64(buf + n, addr, 1);
	if (err) {
		const char *e = " (errno ";

		while (*e)
			buf[n++] = *e++;
		n += emm_fmt_u64(buf + n, (uint64_t)(err < 0 ? -err : err), 0);
		buf[n++] = ')';
	}
	buf[n++] = '\n';
	if (write(2, buf, n) < 0)
		return;
}

static inline uint64_t emm_ulen(const struct emm_mapping *m, size_t idx)
{
	uint64_t off = (uint64_t)idx << m->shift, ul = 1ull << m->shift;

	return off + ul > m->maplen ? m->maplen - off : ul;
}

static inline char *emm_uaddr(const struct emm_mapping *m, size_t idx)
{
	return m->base + ((size_t)idx << m->shift);
}

static int emm_wp(struct emm_mapping *m, size_t idx, int protect)
{
	struct uffdio_writeprotect wp = {
		.range = { (uintptr_t)emm_uaddr(m, idx), emm_ulen(m, idx) },
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	return ioctl(G.uffd, UFFDIO_WRITEPROTECT, &wp) ? -errno : 0;
}

static bool emm_writable(const struct emm_mapping *m)
{
	return !(m->flags & EM_MAP_READONLY);
}

/* ---- policy lists (under G.lock) ---- */

static void emm_list_del(struct emm_unit *u)
{
	struct emm_list *l = u->list == EMM_LIST_P ? &G.P : &G.T;

	if (u->list == EMM_LIST_NONE)
		return;
	if (u->prev)
		u->prev->next = u->next;
	else
		l->head = u->next;
	if (u->next)
		u->next->prev = u->prev;
	else
		l->tail = u->prev;
	l->bytes -= emm_ulen(u->m, (size_t)(u - u->m->u));
	u->prev = u->next = NULL;
	u->list = EMM_LIST_NONE;
}

static void emm_list_add(struct emm_unit *u, int which)
{
	struct emm_list *l = which == EMM_LIST_P ? &G.P : &G.T;

	u->prev = l->tail;
	u->next = NULL;
	if (l->tail)
		l->tail->next = u;
	else
		l->head = u;
	l->tail = u;
	l->bytes += emm_ulen(u->m, (size_t)(u - u->m->u));
	u->list = (uint8_t)which;
}

/* The transient FIFO's floor: a fraction of the budget, and never less than
 * what prefetch keeps in flight, or prefetched units would be evicted before
 * they are used. */
static unsigned emm_active_streams(void);

/* Per stream; all windows together stay within 1/64 of the budget. */
static uint64_t emm_ahead_bytes(void)
{
	uint64_t a = G.budget / 64 / emm_active_streams();

	return a < EMM_AHEAD_BYTES ? a : EMM_AHEAD_BYTES;
}

/* Streams confirmed and fed recently: each keeps a window in flight. */
static unsigned emm_active_streams(void)
{
	unsigned n = 0;

	for (unsigned i = 0; i < EMM_STREAMS; i++)
		if (G.streams[i].m && G.streams[i].hits >= 2 && G.stream_tick - G.streams[i].used < 16)
			n++;
	return n ? n : 1;
}

static uint64_t emm_tmin(void)
{
	unsigned act = emm_active_streams();
	uint64_t t = G.budget / 32, win = G.budget / 64, w;

	/* the windows share 1/64 of the budget, but each runs at least two
	 * units ahead; the unit being read fits beside each, and the FIFO gets
	 * twice that as slack. Extra streams add only units, so a stream that
	 * ends and another that starts barely move the split between P and T. */
	if (win < act * 2 * G.max_unit)
		win = act * 2 * G.max_unit;
	w = 2 * (win + act * G.max_unit);
	/* and a floor of units: with faults served on a thread, a unit is
	 * installed a while before its thread runs again and touches it */
	if (w < 12 * G.max_unit)
		w = 12 * G.max_unit;

	if (t < w)
		t = w;
	return t > G.budget / 2 ? G.budget / 2 : t;
}

/* Where an installed unit goes: see the file comment. */
static void emm_policy_insert(struct emm_unit *u)
{
	uint64_t len = emm_ulen(u->m, (size_t)(u - u->m->u));
	bool room = G.P.bytes + len + emm_tmin() <= G.budget;
	bool soon = u->evicted_at && G.evict_clock - u->evicted_at < G.T.bytes / 2;

	emm_list_add(u, room || soon ? EMM_LIST_P : EMM_LIST_T);
}

/* ---- slots ---- */

static struct emm_slot *emm_slot_any(struct emm_source *s)
{
	int cpu = sched_getcpu(); /* vDSO: no system call in the fault path */
	unsigned start = (unsigned)(cpu < 0 ? 0 : cpu) % EMM_SLOTS;

	for (;;) {
		bool alive = false;

		for (unsigned i = 0; i < EMM_SLOTS; i++) {
			struct emm_slot *sl = &s->slot[(start + i) % EMM_SLOTS];
			int z = 0;

			if (sl->poisoned)
				continue;
			alive = true;
			if (atomic_compare_exchange_strong(&sl->busy, &z, 1)) {
				if (!sl->poisoned)
					return sl;
				atomic_store(&sl->busy, 0);
			}
		}
		if (!alive)
			return NULL;
		sched_yield();
	}
}

static void emm_slot_get(struct emm_slot *sl)
{
	int z;

	for (;;) {
		z = 0;
		if (atomic_compare_exchange_weak(&sl->busy, &z, 1))
			return;
		sched_yield();
	}
}

static void emm_slot_put(struct emm_slot *sl)
{
	atomic_store(&sl->busy, 0);
}

static int emm_install(struct emm_unit *u, const void *buf, bool dirty);

/* Installs a landed prefetch and frees its entry. */
static void emm_infl_install(struct emm_slot *sl, int i)
{
	struct emm_infl *e = &sl->infl[i];
	struct emm_unit *u = e->u;

	e->u = NULL;
	if (e->ready) {
		e->ready = 0;
		sl->nready--;
		emm_lock();
		G.staged -= emm_ulen(u->m, (size_t)(u - u->m->u));
		emm_unlock();
	}
	if (emm_install(u, sl->staging + (size_t)i * EMM_CELL, e->dirty) == 0) {
		size_t ul = emm_ulen(u->m, (size_t)(u - u->m->u));

		atomic_fetch_add(&u->m->fetched, ul);
		if (e->prefetch)
			atomic_fetch_add(&u->m->prefetched, ul);
	}
}

/* Installs landed prefetches until `keep` entries are free. */
static void emm_flush_ready(struct emm_slot *sl, unsigned keep)
{
	for (int i = 0; i < EMM_DEPTH && sl->nready && EMM_DEPTH - sl->ninfl - sl->nready < keep; i++)
		if (sl->infl[i].u && sl->infl[i].ready)
			emm_infl_install(sl, i);
}

/* The held slot's entry for unit u, if any. */
static int emm_infl_find(struct emm_slot *sl, struct emm_unit *u)
{
	for (int i = 0; i < EMM_DEPTH; i++)
		if (sl->infl[i].u == u)
			return i;
	return -1;
}

static int emm_infl_alloc(struct emm_slot *sl)
{
	if (EMM_DEPTH - sl->ninfl - sl->nready < 2)
		emm_flush_ready(sl, 2);
	for (int i = 0; i < EMM_DEPTH; i++)
		if (!sl->infl[i].u)
			return i;
	return -1;
}

/* ---- install, evict ---- */

static int emm_install(struct emm_unit *u, const void *buf, bool dirty)
{
	struct emm_mapping *m = u->m;
	size_t idx = (size_t)(u - m->u);
	struct uffdio_copy cp = {
		.dst = (uintptr_t)emm_uaddr(m, idx),
		.src = (uintptr_t)buf,
		.len = emm_ulen(m, idx),
		.mode = (emm_writable(m) && !dirty ? UFFDIO_COPY_MODE_WP : 0) |
			(G.mode == EMM_FAULTS_SIGBUS ? UFFDIO_COPY_MODE_DONTWAKE : 0),
	};
	int err = 0;

	while (ioctl(G.uffd, UFFDIO_COPY, &cp)) {
		if (errno == EAGAIN && cp.copy > 0) {
			cp.dst += (uint64_t)cp.copy;
			cp.src += (uint64_t)cp.copy;
			cp.len -= (uint64_t)cp.copy;
			cp.copy = 0;
			continue;
		}
		if (errno != EAGAIN) {
			err = -errno;
			break;
		}
		cp.copy = 0;
	}
	emm_lock();
	if (err) {
		G.resident -= emm_ulen(m, idx);
	} else {
		emm_policy_insert(u);
	}
	emm_unlock();
	if (err == -ENOMEM && m->huge) {
		/* the huge pages were taken by someone else since map time;
		 * retrying would fault forever, so the access fails, loudly */
		emm_log(m->what, "no free huge page (raise vm.nr_hugepages or set ETHERMEM_MAP_HUGE=0)",
			(uintptr_t)emm_uaddr(m, idx), err);
		atomic_store(&u->st, EMM_FAILED);
		return err;
	}
	atomic_store(&u->st, err ? EMM_EMPTY : dirty ? EMM_DIRTY : EMM_CLEAN);
	return err;
}

/* Fails every fetch in flight on a slot whose channel stopped answering:
 * the buffers stay owned by the dead channel, so the slot is never reused. */
static void emm_slot_poison(struct emm_slot *sl)
{
	sl->poisoned = 1;
	for (int i = 0; i < EMM_DEPTH; i++) {
		struct emm_infl *e = &sl->infl[i];

		if (e->u && e->ready)
			emm_infl_install(sl, i); /* landed before the channel died */
		if (!e->u)
			continue;
		if (!e->write) {
			emm_lock();
			G.resident -= emm_ulen(e->u->m, (size_t)(e->u - e->u->m->u));
			emm_unlock();
			atomic_store(&e->u->st, EMM_FAILED);
		} else {
			e->done = 1;
			e->result = -ETIMEDOUT;
		}
	}
}

/* Reaps completions of a held slot, installing fetched units. Returns how
 * many were reaped, or -ETIMEDOUT when min > 0 and nothing came in time. */
static int emm_reap(struct emm_slot *sl, unsigned min, int timeout_ms)
{
	struct emm_source *src = NULL;
	struct emm_done d[EMM_DEPTH];
	int n;

	if (sl->poisoned)
		return -ETIMEDOUT;
	if (!sl->ninfl)
		return 0;
	src = (struct emm_source *)((char *)(sl - sl->idx) - offsetof(struct emm_source, slot));
	n = src->ops->wait(sl->chan, d, min, EMM_DEPTH, min ? timeout_ms : 0);
	if (n < 0)
		return n;
	if (n == 0 && min) {
		emm_slot_poison(sl);
		return -ETIMEDOUT;
	}
	for (int i = 0; i < n; i++) {
		struct emm_infl *e = &sl->infl[d[i].tag];
		struct emm_unit *u = e->u;

		sl->ninfl--;
		if (e->write) {
			e->done = 1;
			e->result = d[i].result;
			continue; /* the writer frees its entry */
		}
		if (!d[i].result) {
			/* a prefetch waits in staging until its unit is touched, so
			 * that the touch is a fault that feeds the stream and keeps
			 * its window full; a demand fetch goes in at once */
			uint64_t ul = emm_ulen(u->m, (size_t)(u - u->m->u));
			bool stage;

			/* staged data is out of the policy lists: it may hold at most
			 * half of T's share, or T is left with only units that were
			 * installed a moment ago and evicts them before their use */
			emm_lock();
			stage = e->prefetch && G.staged + ul <= emm_tmin() / 2;
			if (stage)
				G.staged += ul;
			emm_unlock();
			if (stage) {
				e->ready = 1;
				sl->nready++;
			} else {
				emm_infl_install(sl, (int)d[i].tag);
			}
			continue;
		}
		e->u = NULL;
		{
			emm_lock();
			G.resident -= emm_ulen(u->m, (size_t)(u - u->m->u));
			emm_unlock();
			/* a failed prefetch is retried by the demand fault; a failed
			 * demand fetch fails the access */
			if (!e->prefetch)
				emm_log(u->m->what, d[i].result == -ETIMEDOUT ?
					"node did not answer within the timeout" : "fetch failed",
					(uintptr_t)emm_uaddr(u->m, (size_t)(u - u->m->u)), d[i].result);
			atomic_store(&u->st, e->prefetch ? EMM_EMPTY : EMM_FAILED);
		}
	}
	emm_flush_ready(sl, 16);
	return n;
}

/* Writes units back through a held slot and waits; the units are BUSY or
 * SYNCING and write-protected, so the snapshot cannot miss a store. */
static int emm_write_units(struct emm_slot *sl, struct emm_unit **us, unsigned n, int *res)
{
	struct emm_source *src = (struct emm_source *)((char *)(sl - sl->idx) - offsetof(struct emm_source, slot));
	int ent[EMM_DEPTH];
	unsigned done = 0;
	int err = 0;

	while (done < n) {
		struct emm_io io[EMM_DEPTH];
		unsigned k = 0, i;

		while (done + k < n) {
			struct emm_unit *u = us[done + k];
			struct emm_mapping *m = u->m;
			size_t idx = (size_t)(u - m->u);
			uint64_t off = (uint64_t)idx << m->shift;
			int e = emm_infl_alloc(sl);

			if (e < 0)
				break;
			sl->infl[e] = (struct emm_infl){ .u = u, .write = 1 };
			ent[k] = e;
			u->written = 1;
			io[k] = (struct emm_io){
				.write = 1, .rctx = m->rctx, .off = m->roff + off,
				.buf = emm_uaddr(m, idx),
				.len = off + (1ull << m->shift) > m->len ? m->len - off : 1ull << m->shift,
				.tag = (uint64_t)e,
			};
			k++;
		}
		if (!k) {
			/* every entry holds a prefetch: let some land, or install
			 * landed ones; entries taken by a batch being built (not
			 * posted yet) cannot be waited for, so give up then */
			int r = sl->ninfl ? emm_reap(sl, 1, us[done]->m->timeout_ms) : 0;

			if (r < 0)
				return r;
			if (!r && sl->nready) {
				emm_flush_ready(sl, EMM_DEPTH);
				continue;
			}
			if (!r) {
				for (unsigned x = done; x < n; x++)
					res[x] = -EAGAIN;
				return -EAGAIN;
			}
			continue;
		}
		/* the backend reads the pages now: stores to them are ordered
		 * before it by the write-protect ioctl, which TSan cannot see */
		EM_UNOWNED_BEGIN();
		int posted = src->ops->submit(sl->chan, io, k);
		EM_UNOWNED_END();

		if (posted < 0)
			posted = 0;
		for (i = (unsigned)posted; i < k; i++) {
			sl->infl[ent[i]].u = NULL;
			res[done + i] = -EAGAIN;
		}
		sl->ninfl += (unsigned)posted;
		for (i = 0; i < (unsigned)posted; i++) {
			struct emm_infl *e = &sl->infl[ent[i]];

			while (!e->done) {
				int r = emm_reap(sl, 1, us[done + i]->m->timeout_ms);

				if (r < 0 && !e->done) {
					e->done = 1;
					e->result = r;
				}
			}
			res[done + i] = e->result;
			if (e->result)
				err = e->result;
			else
				atomic_fetch_add(&us[done + i]->m->written, io[i].len);
			e->u = NULL;
		}
		done += k;
	}
	return err;
}

/* Makes room for `need` more bytes: picks victims under the lock, then
 * writes back the dirty ones and drops them all outside it. */
static int emm_reserve(struct emm_slot *sl, uint64_t need)
{
	for (int round = 0; round < 64; round++) {
		struct emm_unit *v[32];
		bool dirty[32];
		unsigned nv = 0, tries = 0;

		emm_lock();
		if (round == 0)
			G.resident += need;
		while (G.resident > G.budget && nv < 32 && tries++ < 256) {
			struct emm_list *l;
			struct emm_unit *u;
			uint32_t s;

			/* P is held to budget - tmin (promotions may push it over);
			 * everything else streams through T */
			/* hysteresis: P joins below budget - tmin but is cut only
			 * above budget - tmin/2, so the split does not follow every
			 * stream that starts or ends (tmin has that slack built in) */
			if (G.P.head && G.P.bytes + emm_tmin() / 2 > G.budget)
				l = &G.P;
			else if (G.T.head)
				l = &G.T;
			else
				break; /* T's share is all in flight: run over briefly
					* rather than break up the protected set */
			u = l->head;
			s = atomic_load(&u->st);
			if ((s != EMM_CLEAN && s != EMM_DIRTY) ||
			    !atomic_compare_exchange_strong(&u->st, &s, EMM_BUSY)) {
				/* busy with a protection change: look at it later */
				emm_list_del(u);
				emm_list_add(u, l == &G.P ? EMM_LIST_P : EMM_LIST_T);
				continue;
			}
			uint64_t ul = emm_ulen(u->m, (size_t)(u - u->m->u));

			if (l == &G.T) {
				/* P ages by 1/64 of what streams through T */
				G.age_credit += ul / 64;
				if (G.P.head && G.age_credit >= emm_ulen(G.P.head->m, (size_t)(G.P.head - G.P.head->m->u)) &&
				    nv + 1 < 32) {
					struct emm_unit *p = G.P.head;
					uint32_t ps = atomic_load(&p->st);

					if ((ps == EMM_CLEAN || ps == EMM_DIRTY) &&
					    atomic_compare_exchange_strong(&p->st, &ps, EMM_BUSY)) {
						uint64_t pl = emm_ulen(p->m, (size_t)(p - p->m->u));

						G.age_credit -= pl;
						emm_list_del(p);
						G.resident -= pl;
						G.evict_clock += pl;
						p->evicted_at = G.evict_clock;
						dirty[nv] = ps == EMM_DIRTY;
						v[nv++] = p;
					}
				}
			}
			emm_list_del(u);
			G.resident -= ul;
			G.evict_clock += ul;
			u->evicted_at = G.evict_clock;
			dirty[nv] = s == EMM_DIRTY;
			v[nv++] = u;
		}
		bool more = G.resident > G.budget && (G.P.head || G.T.head);
		emm_unlock();
		if (!nv)
			return 0;

		struct emm_unit *wb[32];
		int res[32];
		unsigned nwb = 0;

		for (unsigned i = 0; i < nv; i++)
			if (dirty[i]) {
				emm_wp(v[i]->m, (size_t)(v[i] - v[i]->m->u), 1);
				wb[nwb++] = v[i];
			}
		if (nwb)
			emm_write_units(sl, wb, nwb, res);
		for (unsigned i = 0, j = 0; i < nv; i++) {
			struct emm_unit *u = v[i];
			struct emm_mapping *m = u->m;
			size_t idx = (size_t)(u - m->u);

			if (dirty[i] && res[j++]) {
				/* never drop data the pool does not have: keep it dirty */
				if (res[j - 1] != -EAGAIN) /* -EAGAIN: no channel entry free now */
					emm_log(m->what, "write-back failed, unit kept", (uintptr_t)emm_uaddr(m, idx),
						res[j - 1]);
				emm_wp(m, idx, 0);
				emm_lock();
				G.resident += emm_ulen(m, idx);
				emm_list_add(u, EMM_LIST_P);
				emm_unlock();
				atomic_store(&u->st, EMM_DIRTY);
				continue;
			}
			madvise(emm_uaddr(m, idx), emm_ulen(m, idx), MADV_DONTNEED);
			atomic_fetch_add(&m->evictions, 1);
			atomic_store(&u->st, EMM_EMPTY);
		}
		if (!more)
			return 0;
	}
	return 0;
}

/* ---- prefetch ---- */

/* Feeds one fault into the stream table; returns unit indices to fetch
 * ahead (under G.lock). */
static unsigned emm_stream_feed(struct emm_mapping *m, int64_t idx, int64_t *out, unsigned max)
{
	struct emm_stream *lru = &G.streams[0];
	int64_t ahead = (int64_t)(emm_ahead_bytes() >> m->shift);
	unsigned n = 0;

	if (ahead < 2)
		ahead = 2;
	if (ahead > 32)
		ahead = 32;
	G.stream_tick++;
	for (unsigned i = 0; i < EMM_STREAMS; i++) {
		struct emm_stream *s = &G.streams[i];
		int64_t d = idx - s->last;

		if (s->used < lru->used)
			lru = s;
		if (s->m != m || d == 0)
			continue;
		if (s->stride) {
			/* anywhere up to a window past what was fetched ahead counts:
			 * a stream that outran its prefetch must not become a second
			 * stream over the same data */
			int64_t span = s->front - s->last + s->stride * (ahead + 1);

			/* until confirmed, only the exact stride counts: random
			 * faults that happen to land near each other must not
			 * start prefetching */
			if (s->hits < 2 ? d != s->stride
					: (d > 0) != (s->stride > 0) || (d > 0 ? d > span : d < span))
				continue;
			if (d % s->stride) {
				/* gaps (units already resident) made the stride look
				 * larger than it is: keep the common divisor */
				int64_t a = d < 0 ? -d : d, b = s->stride < 0 ? -s->stride : s->stride;

				while (b) {
					int64_t r = a % b;

					a = b;
					b = r;
				}
				s->stride = s->stride < 0 ? -a : a;
			}
			/* another entry trailing over the same data (created when
			 * this one lost track for a while) is merged away */
			for (unsigned k = 0; k < EMM_STREAMS; k++) {
				struct emm_stream *o = &G.streams[k];

				if (o != s && o->m == m && (s->stride > 0 ? o->last >= s->last && o->last <= idx
									  : o->last <= s->last && o->last >= idx))
					*o = (struct emm_stream){ 0 };
			}
			s->last = idx;
			s->used = G.stream_tick;
			if (s->hits < 16)
				s->hits++;
			int64_t depth = (int64_t)1 << (s->hits < 6 ? s->hits : 6);

			if (depth > ahead)
				depth = ahead;
			int64_t from = (s->stride > 0 ? (s->front > idx ? s->front : idx) : (s->front < idx ? s->front : idx)) + s->stride;
			int64_t to = idx + s->stride * depth;

			for (int64_t j = from; s->stride > 0 ? j <= to : j >= to; j += s->stride) {
				if (j < 0 || (uint64_t)j >= m->nunits || n >= max)
					break;
				out[n++] = j;
				s->front = j;
			}
			return n;
		}
		if (d >= -16 && d <= 16) {
			s->stride = d;
			s->last = s->front = idx;
			s->hits = 1;
			s->used = G.stream_tick;
			return 0;
		}
	}
	*lru = (struct emm_stream){ .m = m, .last = idx, .front = idx, .used = G.stream_tick };
	return 0;
}

/* Tops up prefetch for a fault at idx on a held slot; units are claimed
 * (EMPTY -> FETCHING) here and posted with `pre` (the demand fetch, if any). */
static int emm_fetch_batch(struct emm_slot *sl, struct emm_mapping *m, size_t idx,
			   struct emm_io *pre, int pre_ent)
{
	struct emm_source *src = m->src;
	struct emm_io io[EMM_DEPTH];
	int64_t want[32];
	unsigned nw = 0, n = 0;
	int posted;

	if (pre)
		io[n++] = *pre;
	if (!(m->flags & EM_MAP_NOPREFETCH)) {
		unsigned room = 0;

		for (int i = 0; i < EMM_DEPTH; i++)
			room += !sl->infl[i].u;
		/* leave entries for the write-back that reserving may need */
		room = room > 8 + n ? room - 8 - n : 0;
		emm_lock();
		nw = emm_stream_feed(m, (int64_t)idx, want, room < 32 ? room : 32);
		emm_unlock();
	}
	for (unsigned i = 0; i < nw; i++) {
		struct emm_unit *u = &m->u[want[i]];
		uint32_t z = EMM_EMPTY;
		int e;

		if (atomic_load(&u->st) != EMM_EMPTY)
			continue;
		if ((m->flags & EMM_MAP_FRESH) && !u->written)
			continue; /* zero-filled on demand, nothing to fetch */
		e = emm_infl_alloc(sl);
		if (e < 0)
			break;
		if (!atomic_compare_exchange_strong(&u->st, &z, EMM_FETCHING | (uint32_t)sl->idx))
			continue;
		uint64_t off = (uint64_t)want[i] << m->shift;
		uint64_t ul = emm_ulen(m, (size_t)want[i]);

		/* the entry is taken before reserving: write-back may need entries */
		sl->infl[e] = (struct emm_infl){ .u = u, .prefetch = 1 };
		emm_reserve(sl, ul);
		io[n++] = (struct emm_io){
			.rctx = m->rctx, .off = m->roff + off, .buf = sl->staging + (size_t)e * EMM_CELL,
			.len = off + (1ull << m->shift) > m->len ? m->len - off : 1ull << m->shift,
			.tag = (uint64_t)e,
		};
		if (io[n - 1].len < ul)
			memset((char *)io[n - 1].buf + io[n - 1].len, 0, ul - io[n - 1].len);
	}
	if (!n)
		return 0;
	posted = src->ops->submit(sl->chan, io, n);
	if (posted < 0)
		posted = 0;
	sl->ninfl += (unsigned)posted;
	for (unsigned i = (unsigned)posted; i < n; i++) {
		struct emm_infl *e = &sl->infl[io[i].tag];
		struct emm_unit *u = e->u;

		e->u = NULL;
		emm_lock();
		G.resident -= emm_ulen(m, (size_t)(u - m->u));
		emm_unlock();
		atomic_store(&u->st, EMM_EMPTY);
	}
	if (pre && posted == 0)
		return -EAGAIN;
	(void)pre_ent;
	return 0;
}

/* ---- serving a fault ---- */

/* On a held slot, until unit u leaves state s (FETCHING on this slot):
 * installs its data if it has landed, else reaps. */
static int emm_wait_unit(struct emm_slot *sl, struct emm_unit *u, uint32_t s, bool dirty)
{
	int r = 0;

	while (atomic_load(&u->st) == s && r >= 0) {
		int i = emm_infl_find(sl, u);

		if (i >= 0 && sl->infl[i].ready) {
			sl->infl[i].dirty = dirty;
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
	unsigned n = atomic_load_explicit(&G.nmaps, memory_order_acquire);

	/* slots are taken lowest first, so the scan stops at the high mark */
	for (unsigned i = 0; i < n; i++) {
		struct emm_mapping *m = atomic_load_explicit(&G.maps[i], memory_order_acquire);

		/* a discarded unit's range may have been reused by a newer mapping */
		if (m && a >= (uintptr_t)m->base && a < (uintptr_t)m->base + m->maplen &&
		    !atomic_load(&m->dead) &&
		    atomic_load(&m->u[(a - (uintptr_t)m->base) >> m->shift].st) != EMM_GONE)
			return m;
	}
	return NULL;
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
		r = emm_install(u, G.zero, dirty);
		if (!r && !(m->flags & EM_MAP_NOPREFETCH))
			emm_fetch_batch(sl, m, idx, NULL, -1);
		return r;
	}
	while ((e = emm_infl_alloc(sl)) < 0) {
		r = emm_reap(sl, 1, m->timeout_ms);
		if (r < 0)
			goto fail;
	}
	sl->infl[e] = (struct emm_infl){ .u = u, .dirty = dirty };
	struct emm_io io = {
		.rctx = m->rctx, .off = m->roff + off, .buf = sl->staging + (size_t)e * EMM_CELL,
		.len = off + (1ull << m->shift) > m->len ? m->len - off : 1ull << m->shift,
		.tag = (uint64_t)e,
	};
	if (io.len < ul)
		memset((char *)io.buf + io.len, 0, ul - io.len);
	r = emm_fetch_batch(sl, m, idx, &io, e);
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
		G.resident -= ul;
		emm_unlock();
		atomic_store(&u->st, EMM_FAILED);
	}
	emm_log(m->what, r == -ETIMEDOUT ? "node did not answer within the timeout" : "fetch failed",
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
		return 1;
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
			if (!atomic_compare_exchange_strong(&u->st, &s, EMM_FETCHING | (uint32_t)sl->idx)) {
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
 * G.maps is freed only once no fault can still be looking at it
 * (emm_forget_locked, emm_reclaim_locked). Sequentially consistent with the store that removes the
 * mapping: either that store is seen by emm_find, or the count is seen by
 * the remover. */
static int emm_serve(uintptr_t a, bool is_write)
{
	int r;

	atomic_fetch_add(&G.serving, 1);
	r = emm_serve_in(a, is_write);
	atomic_fetch_sub(&G.serving, 1);
	return r;
}

/* Frees retired mappings if no fault is being served (under G.mu). Under
 * continuous faults they wait for the next quiet moment, at the next
 * map or unmap. */
static void emm_reclaim_locked(void)
{
	if (atomic_load(&G.serving))
		return;
	while (G.retired) {
		struct emm_mapping *m = G.retired;

		G.retired = m->retired_next;
		free(m->u);
		free(m);
	}
}

/* ---- fault delivery ---- */

static void emm_sigbus(int sig, siginfo_t *si, void *ucv);

static void emm_chain(int sig, siginfo_t *si, void *uc)
{
	struct sigaction *o = &G.old_bus;

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

static void emm_sigbus(int sig, siginfo_t *si, void *ucv)
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

static void *emm_server(void *arg)
{
	struct pollfd pfd = { .fd = G.uffd, .events = POLLIN };
	sigset_t all;

	(void)arg;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		struct uffd_msg msg[16];
		ssize_t n;

		if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
			break;
		n = read(G.uffd, msg, sizeof(msg));
		if (n < 0)
			continue;
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msg[0]); i++) {
			uint64_t a;
			int r;

			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			a = msg[i].arg.pagefault.address;
			r = emm_serve((uintptr_t)a, (msg[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0);
			/* r == 1, in no mapping: the range was unmapped or discarded
			 * after the fault was queued; woken, the thread retries and
			 * meets whatever is there now, SIGSEGV for nothing */
			if (r < 0) {
				/* the thread is parked in the kernel: a signal ends the wait,
				 * and the fatal SIGBUS is its own to handle or die of */
				syscall(SYS_tgkill, getpid(), (pid_t)msg[i].arg.pagefault.feat.ptid, SIGBUS);
				continue;
			}
			struct uffdio_range wr = { a & ~4095ull, 4096 };

			ioctl(G.uffd, UFFDIO_WAKE, &wr);
		}
	}
	return NULL;
}

/* ---- setup (never in the handler) ---- */

int emm_set_fault_mode(enum emm_fault_mode mode)
{
	int err = 0;

	pthread_mutex_lock(&G.mu);
	if (G.uffd >= 0)
		err = mode && (int)mode != G.mode ? -EBUSY : 0;
	else
		G.mode = mode;
	pthread_mutex_unlock(&G.mu);
	return err;
}

int emm_fault_mode(void)
{
	return G.mode;
}

/* A forked child shares none of this: its copies of the mappings are gone
 * (MADV_DONTFORK) and the userfaultfd and channels belong to the parent. It
 * starts over if it maps anything itself. The old sources leak: closing the
 * parent's connections from the child would disturb the parent. */
static void emm_atfork_child(void)
{
	pthread_mutex_init(&G.mu, NULL);
	atomic_store(&G.lock, 0);
	if (G.uffd >= 0)
		close(G.uffd);
	G.uffd = -1;
	G.mode = 0;
	G.resident = 0;
	G.P = G.T = (struct emm_list){ 0 };
	memset(G.streams, 0, sizeof(G.streams));
	for (int i = 0; i < EMM_MAX_MAPS; i++)
		atomic_store(&G.maps[i], NULL);
	atomic_store(&G.nmaps, 0);
	G.sources = NULL;
	if (G.bus_installed)
		sigaction(SIGBUS, &G.old_bus, NULL);
	G.bus_installed = 0;
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

static int emm_init_locked(void)
{
	static int atfork_done;
	uint64_t want;
	int fd;

	if (G.uffd >= 0)
		return 0;
	if (!atfork_done++)
		pthread_atfork(NULL, NULL, emm_atfork_child);
	if (!G.mode) {
		const char *e = getenv("ETHERMEM_MAP_FAULTS");

		G.mode = e && !strcmp(e, "thread") ? EMM_FAULTS_THREAD : EMM_FAULTS_SIGBUS;
	}
	want = UFFD_FEATURE_PAGEFAULT_FLAG_WP |
	       (G.mode == EMM_FAULTS_SIGBUS ? UFFD_FEATURE_SIGBUS : UFFD_FEATURE_THREAD_ID);
#ifdef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
	/* write-protect on hugetlb ranges (5.19+) is asked for first; an older
	 * kernel refuses it, and then mappings simply stay on 4 KiB pages */
	fd = emm_uffd_open(want | UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
	G.huge_wp = fd >= 0;
	if (fd < 0)
#endif
		fd = emm_uffd_open(want);
	if (fd < 0)
		return fd;
	G.zero = mmap(NULL, EMM_CELL, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (G.zero == MAP_FAILED) {
		close(fd);
		return -ENOMEM;
	}
	G.uffd = fd;
	if (G.mode == EMM_FAULTS_SIGBUS) {
		struct sigaction sa = { .sa_sigaction = emm_sigbus, .sa_flags = SA_SIGINFO | SA_RESTART };

		/* other signals wait while a fault is served: their handlers
		 * could touch mapped memory with SIGBUS blocked */
		sigfillset(&sa.sa_mask);
		sigaction(SIGBUS, &sa, &G.old_bus);
		G.bus_installed = 1;
	} else {
		pthread_attr_t at;
		int err;

		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		err = pthread_create(&G.server, &at, emm_server, NULL);
		pthread_attr_destroy(&at);
		if (err) {
			close(fd);
			G.uffd = -1;
			return -err;
		}
	}
	return 0;
}

int emm_source_get(const struct emm_backend_ops *ops, void *bctx, struct emm_source **out)
{
	struct emm_source *s;
	int err = 0;

	pthread_mutex_lock(&G.mu);
	for (s = G.sources; s; s = s->next)
		if (s->ops == ops && s->bctx == bctx)
			break;
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s) {
			err = -ENOMEM;
			goto out;
		}
		s->ops = ops;
		s->bctx = bctx;
		for (int i = 0; i < EMM_SLOTS && !err; i++) {
			struct emm_slot *sl = &s->slot[i];

			sl->idx = i;
			sl->staging = mmap(NULL, EMM_DEPTH * EMM_CELL, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (sl->staging == MAP_FAILED) {
				sl->staging = NULL;
				err = -ENOMEM;
				break;
			}
			err = ops->chan_open(bctx, &sl->chan);
		}
		if (err) {
			for (int i = 0; i < EMM_SLOTS; i++) {
				if (s->slot[i].chan)
					ops->chan_close(s->slot[i].chan);
				if (s->slot[i].staging)
					munmap(s->slot[i].staging, EMM_DEPTH * EMM_CELL);
			}
			free(s);
			goto out;
		}
		s->next = G.sources;
		G.sources = s;
	}
	*out = s;
out:
	pthread_mutex_unlock(&G.mu);
	return err;
}

int emm_set_cache(uint64_t bytes)
{
	if (bytes < 4096)
		return -EINVAL;
	emm_lock();
	G.budget = bytes;
	emm_unlock();
	return 0;
}

uint64_t emm_cache(void)
{
	return G.budget;
}

/* The largest unit among live mappings sizes the transient FIFO (G.mu). */
static void emm_max_unit_locked(void)
{
	uint64_t mu = 0;

	for (int i = 0; i < EMM_MAX_MAPS; i++) {
		struct emm_mapping *m = atomic_load(&G.maps[i]);

		if (m && (1ull << m->shift) > mu)
			mu = 1ull << m->shift;
	}
	emm_lock();
	G.max_unit = mu;
	emm_unlock();
}

static int emm_register(char *base, size_t len, unsigned flags)
{
	struct uffdio_register reg = {
		.range = { (uintptr_t)base, len },
		.mode = UFFDIO_REGISTER_MODE_MISSING | (flags & EM_MAP_READONLY ? 0 : UFFDIO_REGISTER_MODE_WP),
	};

	/* a child would see zeros where pages were not fetched: wrong data, so
	 * it gets no copy of the range at all */
	madvise(base, len, MADV_DONTFORK);
	return ioctl(G.uffd, UFFDIO_REGISTER, &reg) ? -errno : 0;
}

uint64_t emm_huge_free(void)
{
	char b[32] = { 0 };
	int fd = open("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, b, sizeof(b) - 1) : -1;

	if (fd >= 0)
		close(fd);
	return n > 0 ? strtoull(b, NULL, 10) * EMM_HUGE : 0;
}

/* Whether a mapping with 2 MiB units goes on explicit huge pages: one page
 * per unit, so a fault maps 2 MiB with one page-table entry and eviction
 * frees one page. Only when the system has reserved enough of them that
 * every huge mapping can fill its share of the budget: a hugetlb fault that
 * finds none left can only fail. ETHERMEM_MAP_HUGE=0 turns it off. Under
 * G.mu; on yes, *maplen is rounded up to whole huge pages. */
static bool emm_huge_fits(const struct emm_map_params *p, size_t *maplen)
{
	const char *e = getenv("ETHERMEM_MAP_HUGE");
	size_t len = (*maplen + EMM_HUGE - 1) & ~(EMM_HUGE - 1);
	uint64_t held = 0, need = len;

	if (p->unit != EMM_HUGE || (e && !strcmp(e, "0")) ||
	    (!(p->flags & EM_MAP_READONLY) && !G.huge_wp))
		return false;
	/* pages held by our other huge mappings count as available, and all
	 * of them together never hold more than the budget */
	for (int i = 0; i < EMM_MAX_MAPS; i++) {
		struct emm_mapping *o = atomic_load(&G.maps[i]);

		if (!o || !o->huge)
			continue;
		need += o->maplen;
		for (size_t k = 0; k < o->nunits; k++) {
			uint32_t s = atomic_load(&o->u[k].st);

			held += s != EMM_EMPTY && s != EMM_FAILED && s != EMM_GONE ? EMM_HUGE : 0;
		}
	}
	/* resident may overrun the budget by the fetches in flight when
	 * eviction found nothing to drop: a unit per slot covers it */
	if (need > G.budget + EMM_SLOTS * EMM_HUGE)
		need = G.budget + EMM_SLOTS * EMM_HUGE;
	if (emm_huge_free() + held < need)
		return false;
	*maplen = len;
	return true;
}

int emm_map_range(const struct emm_map_params *p, void **addr)
{
	struct emm_mapping *m;
	size_t maplen, align = p->unit < (64u << 10) ? 64u << 10 : p->unit;
	char *raw, *base;
	bool huge;
	int err, slot = -1;

	if (!p->src || !addr || !p->len || p->unit < 4096 || p->unit > (2u << 20) ||
	    (p->unit & (p->unit - 1)) || (p->roff & 4095))
		return -EINVAL;
	if (G.budget < p->unit) {
		fprintf(stderr, "ethermem: cache of %llu bytes is smaller than the fetch unit of %llu bytes\n",
			(unsigned long long)G.budget, (unsigned long long)p->unit);
		return -EINVAL;
	}
	maplen = (p->len + 4095) & ~(size_t)4095;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	/* the same count when a huge mapping rounds maplen up to 2 MiB units */
	m->nunits = (maplen + p->unit - 1) / p->unit;
	m->u = calloc(m->nunits, sizeof(*m->u));
	if (!m->u) {
		free(m);
		return -ENOMEM;
	}
	pthread_mutex_lock(&G.mu);
	err = emm_init_locked();
	if (err)
		goto fail;
	for (int i = 0; i < EMM_MAX_MAPS; i++)
		if (!atomic_load(&G.maps[i])) {
			slot = i;
			break;
		}
	if (slot < 0) {
		err = -EMFILE;
		goto fail;
	}
	huge = emm_huge_fits(p, &maplen);
	if (huge) {
		/* hugetlb mappings come 2 MiB-aligned from the kernel */
		base = mmap(NULL, maplen, (p->flags & EM_MAP_READONLY) ? PROT_READ : PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_HUGETLB, -1, 0);
		if (base == MAP_FAILED || (err = emm_register(base, maplen, p->flags))) {
			if (base != MAP_FAILED)
				munmap(base, maplen);
			huge = false;
			maplen = (p->len + 4095) & ~(size_t)4095;
		}
	}
	if (!huge) {
		/* aligned to the unit (at least 64 KiB: the preload shim recognises
		 * its blocks by that) so that units never straddle a huge-page
		 * boundary */
		raw = mmap(NULL, maplen + align, (p->flags & EM_MAP_READONLY) ? PROT_READ : PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (raw == MAP_FAILED) {
			err = -errno;
			goto fail;
		}
		base = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
		if (base > raw)
			munmap(raw, (size_t)(base - raw));
		if (raw + align > base)
			munmap(base + maplen, (size_t)(raw + align - base));
		err = emm_register(base, maplen, p->flags);
		if (err) {
			munmap(base, maplen);
			goto fail;
		}
	}
	m->huge = huge;
	m->base = base;
	m->maplen = maplen;
	m->len = p->len;
	m->roff = p->roff;
	m->rctx = p->rctx;
	m->shift = (unsigned)__builtin_ctzll(p->unit);
	m->flags = p->flags;
	m->timeout_ms = p->timeout_ms > 0 ? p->timeout_ms : 10000;
	m->src = p->src;
	snprintf(m->what, sizeof(m->what), "%s", p->what ? p->what : "?");
	for (size_t i = 0; i < m->nunits; i++)
		m->u[i].m = m;
	atomic_store_explicit(&G.maps[slot], m, memory_order_release);
	if ((unsigned)slot >= atomic_load(&G.nmaps))
		atomic_store_explicit(&G.nmaps, (unsigned)slot + 1, memory_order_release);
	emm_max_unit_locked();
	emm_reclaim_locked();
	pthread_mutex_unlock(&G.mu);
	*addr = base;
	return 0;
fail:
	pthread_mutex_unlock(&G.mu);
	free(m->u);
	free(m);
	return err;
}

static struct emm_mapping *emm_lookup_exact(void *addr, int *slot)
{
	for (int i = 0; i < EMM_MAX_MAPS; i++) {
		struct emm_mapping *m = atomic_load(&G.maps[i]);

		if (m && (char *)addr >= m->base && (char *)addr < m->base + m->maplen &&
		    atomic_load(&m->u[(size_t)((char *)addr - m->base) >> m->shift].st) != EMM_GONE) {
			if (slot)
				*slot = i;
			return m;
		}
	}
	return NULL;
}

/* Waits until no fetch or protection change is in progress on u and
 * returns its settled state. */
static uint32_t emm_settle(struct emm_unit *u)
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
		if (s == EMM_BUSY) {
			sched_yield();
			continue;
		}
		return s;
	}
}

static int emm_sync_mapping(struct emm_mapping *m, size_t first, size_t last)
{
	struct emm_unit *batch[32];
	int res[32], err = 0;
	unsigned n = 0;

	for (size_t i = first; i <= last && i < m->nunits; i++) {
		struct emm_unit *u = &m->u[i];
		uint32_t s = emm_settle(u);

		if (s == EMM_DIRTY && atomic_compare_exchange_strong(&u->st, &s, EMM_BUSY)) {
			emm_wp(m, i, 1);
			atomic_store(&u->st, EMM_SYNCING);
			batch[n++] = u;
		}
		if (n == 32 || (n && (i == last || i + 1 == m->nunits))) {
			struct emm_slot *sl = emm_slot_any(m->src);

			if (!sl)
				return -EIO;
			int r = emm_write_units(sl, batch, n, res);

			emm_slot_put(sl);
			for (unsigned j = 0; j < n; j++) {
				uint32_t sy = EMM_SYNCING;

				/* a store during the write moved it to DIRTY: leave it so */
				atomic_compare_exchange_strong(&batch[j]->st, &sy,
							       res[j] ? EMM_DIRTY : EMM_CLEAN);
				if (res[j] && sy == EMM_SYNCING)
					emm_wp(m, (size_t)(batch[j] - m->u), 0);
			}
			if (r && !err)
				err = r;
			n = 0;
		}
	}
	return err;
}

int emm_sync_range(void *addr, size_t len)
{
	struct emm_mapping *m = emm_lookup_exact(addr, NULL);
	size_t first, last;

	if (!m)
		return -EINVAL;
	if (m->flags & EM_MAP_READONLY)
		return 0;
	first = (size_t)((char *)addr - m->base) >> m->shift;
	if (!len || (char *)addr + len > m->base + m->maplen)
		len = (size_t)(m->base + m->maplen - (char *)addr);
	last = (size_t)((char *)addr + len - 1 - m->base) >> m->shift;
	return emm_sync_mapping(m, first, last);
}

static void emm_add_stats(struct em_map_stats *t, struct emm_mapping *m)
{
	t->faults += atomic_load(&m->faults);
	t->bytes_fetched += atomic_load(&m->fetched);
	t->bytes_written += atomic_load(&m->written);
	t->prefetched += atomic_load(&m->prefetched);
	t->evictions += atomic_load(&m->evictions);
}

/* The end of a dead mapping whose units hold nothing (under G.mu): its
 * streams and counters go, it leaves G.maps, and it is freed once no fault
 * can still hold it. */
static void emm_forget_locked(struct emm_mapping *m, int slot)
{
	emm_lock();
	for (unsigned i = 0; i < EMM_STREAMS; i++)
		if (G.streams[i].m == m)
			G.streams[i] = (struct emm_stream){ 0 };
	emm_add_stats(&G.gone, m);
	emm_unlock();
	atomic_store(&G.maps[slot], NULL);
	emm_max_unit_locked();
	m->retired_next = G.retired;
	G.retired = m;
	emm_reclaim_locked();
}

/* ---- discarding part of a mapping ---- */

/*
 * emm_discard_range is the preload shim's munmap(2) of part of a block (and
 * the shrinking half of its mremap). A unit wholly inside the range is
 * claimed (BUSY: no fault, fetch or eviction is at work on it), leaves the
 * cache without write-back, and its pages are unmapped. A unit only partly
 * inside cannot stay paged: install, write-protect, eviction and write-back
 * all work on whole units and would reach into the unmapped part, which by
 * then may belong to someone else (UFFDIO_COPY or MADV_DONTNEED on their
 * pages, a write-back reading them). It is detached instead: made present
 * and writable, taken out of the cache and unregistered from the
 * userfaultfd, so its surviving pages are ordinary memory from then on, the
 * caller's to unmap. That leaves at most two units per call outside the
 * budget. Both kinds end GONE, which nothing leaves: the engine never
 * touches such a unit again, and a fault there finds another mapping or
 * none. Whole-unit work happens under G.mu, like map and unmap; faults go on
 * meanwhile on the other units (and wait on the claimed ones).
 */

/* A unit wholly inside the range: afterwards BUSY and out of the cache. */
static void emm_claim(struct emm_mapping *m, size_t idx)
{
	struct emm_unit *u = &m->u[idx];

	for (;;) {
		uint32_t s = emm_settle(u);

		if (s == EMM_SYNCING) {
			/* an em_sync is reading the pages for its write-back */
			sched_yield();
			continue;
		}
		if (!atomic_compare_exchange_strong(&u->st, &s, EMM_BUSY))
			continue;
		if (s == EMM_CLEAN || s == EMM_DIRTY) {
			emm_lock();
			emm_list_del(u);
			G.resident -= emm_ulen(m, idx);
			emm_unlock();
		}
		return;
	}
}

/* A unit only partly inside; keep is an address in it that stays. */
static void emm_detach(struct emm_mapping *m, size_t idx, uintptr_t keep)
{
	struct emm_unit *u = &m->u[idx];
	uint64_t ul = emm_ulen(m, idx);
	struct uffdio_range r = { (uintptr_t)emm_uaddr(m, idx), ul };
	bool lost = false;

	for (;;) {
		uint32_t s = emm_settle(u);

		/* unregistered, it must be all there and not write-protected:
		 * a stale protection would fault with no one to lift it */
		if (s == EMM_DIRTY || (s == EMM_CLEAN && !emm_writable(m))) {
			if (!atomic_compare_exchange_strong(&u->st, &s, EMM_BUSY))
				continue;
			emm_lock();
			emm_list_del(u);
			G.resident -= ul;
			emm_unlock();
			break;
		}
		if (s == EMM_FAILED) {
			lost = true;
			break;
		}
		if (s == EMM_SYNCING) {
			sched_yield();
			continue;
		}
		/* EMPTY, or CLEAN and protected: a write fault makes it DIRTY */
		if (emm_serve(keep, true) < 0) {
			uint32_t z = EMM_EMPTY;

			/* no channel left: nothing may install into it any more */
			atomic_compare_exchange_strong(&u->st, &z, EMM_FAILED);
		}
	}
	if (lost) {
		/* the data cannot be had: what stays is made inaccessible
		 * rather than left to read as zeros */
		mprotect((void *)(uintptr_t)r.start, ul, PROT_NONE);
		emm_log(m->what, "discarded part of a unit whose fetch failed; the rest is inaccessible", keep, -EIO);
	}
	if (ioctl(G.uffd, UFFDIO_UNREGISTER, &r))
		emm_log(m->what, "cannot detach a partly discarded unit", keep, errno);
	atomic_store(&u->st, EMM_GONE);
	m->ngone++;
}

/* Unmaps what a mapping still owns: a GONE unit's range is not its own. */
static void emm_munmap_kept(struct emm_mapping *m)
{
	for (size_t i = 0, j; i < m->nunits; i = j) {
		for (j = i; j < m->nunits && atomic_load(&m->u[j].st) != EMM_GONE; j++)
			;
		if (j > i)
			munmap(emm_uaddr(m, i), (size_t)(emm_uaddr(m, j - 1) - emm_uaddr(m, i)) + emm_ulen(m, j - 1));
		else
			j++;
	}
}

int emm_discard_range(void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr, e = a + len, b;
	struct emm_mapping *m = NULL;
	size_t first, last;
	int slot = -1, rc = 0;

	if ((a & 4095) || (len & 4095) || !len || e < a)
		return -EINVAL;
	pthread_mutex_lock(&G.mu);
	/* the mapping that still owns a unit in the range; only one can, as
	 * an owned unit's pages are all mapped */
	for (int i = 0; i < EMM_MAX_MAPS && !m; i++) {
		struct emm_mapping *c = atomic_load(&G.maps[i]);

		if (!c || e <= (uintptr_t)c->base || a >= (uintptr_t)c->base + c->maplen)
			continue;
		for (size_t k = a > (uintptr_t)c->base ? (a - (uintptr_t)c->base) >> c->shift : 0;
		     k < c->nunits && (uintptr_t)emm_uaddr(c, k) < e; k++)
			if (atomic_load(&c->u[k].st) != EMM_GONE) {
				m = c;
				slot = i;
				break;
			}
	}
	if (!m) {
		rc = -ENOENT;
		goto out;
	}
	b = (uintptr_t)m->base;
	/* a mapping whose data must reach the pool would lose stores; a huge
	 * page cannot be split (munmap(2) refuses the same way) */
	if (a < b || e > b + m->maplen || (emm_writable(m) && !(m->flags & EM_MAP_SCRATCH)) ||
	    (m->huge && (((a - b) | len) & (EMM_HUGE - 1)))) {
		rc = -EINVAL;
		goto out;
	}
	first = (a - b) >> m->shift;
	last = (e - 1 - b) >> m->shift;
	/* edges first: detaching may fault a unit in, which may prefetch into
	 * the range; claiming then waits for those fetches */
	if (atomic_load(&m->u[first].st) != EMM_GONE && (uintptr_t)emm_uaddr(m, first) < a)
		emm_detach(m, first, (uintptr_t)emm_uaddr(m, first));
	if (atomic_load(&m->u[last].st) != EMM_GONE && (uintptr_t)emm_uaddr(m, last) + emm_ulen(m, last) > e)
		emm_detach(m, last, e);
	for (size_t k = first; k <= last; k++)
		if (atomic_load(&m->u[k].st) != EMM_GONE)
			emm_claim(m, k);
	/* before GONE, so that a fault spinning on a claimed unit retries
	 * into an unmapped page (SIGSEGV), never into its old contents */
	if (munmap(addr, len)) {
		rc = -errno;
		emm_log(m->what, "munmap of a discarded range failed", a, errno);
	}
	for (size_t k = first; k <= last; k++)
		if (atomic_load(&m->u[k].st) != EMM_GONE) {
			atomic_store(&m->u[k].st, EMM_GONE);
			m->ngone++;
		}
	if (m->ngone == m->nunits) {
		/* nothing left: the end of emm_unmap_range, less its munmap */
		atomic_store(&m->dead, 1);
		emm_forget_locked(m, slot);
		rc = 1; /* even after a failed munmap (logged): the caller must forget it */
	}
out:
	pthread_mutex_unlock(&G.mu);
	return rc;
}

int emm_unmap_range(void *addr)
{
	struct emm_mapping *m;
	int slot, err;

	pthread_mutex_lock(&G.mu);
	m = emm_lookup_exact(addr, &slot);
	if (!m || (char *)addr != m->base) {
		pthread_mutex_unlock(&G.mu);
		return -EINVAL;
	}
	err = (m->flags & (EM_MAP_READONLY | EM_MAP_SCRATCH)) ? 0 : emm_sync_mapping(m, 0, m->nunits - 1);
	atomic_store(&m->dead, 1);
	for (size_t i = 0; i < m->nunits; i++)
		emm_settle(&m->u[i]);
	emm_lock();
	for (size_t i = 0; i < m->nunits; i++) {
		struct emm_unit *u = &m->u[i];
		uint32_t s = atomic_load(&u->st);

		if (s == EMM_CLEAN || s == EMM_DIRTY || s == EMM_SYNCING) {
			emm_list_del(u);
			G.resident -= emm_ulen(m, i);
		}
	}
	emm_unlock();
	emm_munmap_kept(m);
	emm_forget_locked(m, slot);
	pthread_mutex_unlock(&G.mu);
	return err;
}

int emm_stats(void *addr, struct em_map_stats *st)
{
	struct emm_mapping *m;

	if (!st)
		return -EINVAL;
	memset(st, 0, sizeof(*st));
	if (!addr) {
		emm_totals(st);
		return 0;
	}
	pthread_mutex_lock(&G.mu);
	m = emm_lookup_exact(addr, NULL);
	if (m)
		emm_add_stats(st, m);
	pthread_mutex_unlock(&G.mu);
	emm_lock();
	st->resident = G.resident;
	emm_unlock();
	return m ? 0 : -EINVAL;
}

void emm_totals(struct em_map_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&G.mu);
	for (int i = 0; i < EMM_MAX_MAPS; i++) {
		struct emm_mapping *m = atomic_load(&G.maps[i]);

		if (m)
			emm_add_stats(st, m);
	}
	emm_lock();
	st->faults += G.gone.faults;
	st->bytes_fetched += G.gone.bytes_fetched;
	st->bytes_written += G.gone.bytes_written;
	st->prefetched += G.gone.prefetched;
	st->evictions += G.gone.evictions;
	st->resident = G.resident;
	emm_unlock();
	pthread_mutex_unlock(&G.mu);
}

void emm_policy_info(uint64_t *p_bytes, uint64_t *t_bytes, uint64_t *resident)
{
	emm_lock();
	*p_bytes = G.P.bytes;
	*t_bytes = G.T.bytes;
	*resident = G.resident;
	emm_unlock();
}
