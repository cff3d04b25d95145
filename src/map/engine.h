/*
 * engine.h - the paging engine's private header, shared by its files and
 * included by nothing outside src/map's engine (map_api.c and the shim use
 * emm.h).
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
 * is unmapped (emm_discard_range) ends GONE and is never touched again.
 *
 * The files, one job each:
 *   policy.c    the cache budget and the eviction policy (lists P and T)
 *   slots.c     channels with their staging buffers; install, reap, write-back
 *   prefetch.c  the stream table and the batch a fault posts
 *   serve.c     serving one fault, and its delivery (SIGBUS handler, thread)
 *   uffd.c      the userfaultfd, the fault mode, fork
 *   huge.c      whether a mapping goes on explicit huge pages
 *   mapping.c   map, sync, unmap, statistics; the engine's state
 *   discard.c   unmapping part of a mapping (the shim's munmap)
 *   clean.c     batched write-back, and the cleaner that does it ahead of eviction
 * src/map/README.md explains the choices and has the measurements.
 *
 * Everything the fault path touches must be async-signal-safe: it runs in
 * the faulting thread's SIGBUS handler. Functions below that may run there
 * say nothing; those that must not say "never in the handler".
 */
#ifndef EMM_ENGINE_H
#define EMM_ENGINE_H

#include "map/emm.h"

#include <errno.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* What the engine's files share stays inside the library: hidden, so calls
 * between them and loads of emm_g are direct even in position-independent
 * code, as they were when all of it was static in one file. */
#pragma GCC visibility push(hidden)

#define EMM_SLOTS 4              /* channels per source: concurrent fetching threads */
#define EMM_SERVERS EMM_SLOTS    /* fault-serving threads in the thread mode */
#define EMM_DEPTH EMM_CHAN_DEPTH /* in-flight operations per channel */
#define EMM_WB_MAX 256           /* units one write-back claims and protects together */
#define EMM_CELL (2ul << 20)     /* staging bytes per in-flight operation */
#define EMM_MAX_MAPS 1024
#define EMM_STREAMS 16
#define EMM_AHEAD_BYTES (4ul << 20)
#define EMM_GROUP_BYTES (64ul << 10) /* what a dense region's fault fetches */
/* a scratch mapping's streams move in steps of at least this (prefetch.c) */
#define EMM_STREAM_BYTES (16ul << 10)
/* units of a scratch mapping one read may bring in one go (a span) */
#define EMM_SPAN_BYTES EMM_GROUP_BYTES
#define EMM_HUGE (2ul << 20) /* the explicit huge page size used */

enum {
	EMM_EMPTY = 0,
	EMM_CLEAN = 1,
	EMM_DIRTY = 2,
	EMM_BUSY = 3,         /* someone is changing protection or evicting */
	EMM_SYNCING = 4,      /* write-protected, write-back in flight */
	EMM_FAILED = 5,       /* its fetch timed out: accesses are fatal */
	EMM_GONE = 6,         /* discarded (emm_discard_range): never touched again */
	EMM_FETCHING = 0x100, /* | slot index */
};

/* What a unit's digest says (clean.c): nothing known, the pool holds the
 * bytes whose digest is dig, or the pool holds zeros (a fresh unit: no
 * digest is computed, a scan for a non-zero byte replaces it). */
enum { EMM_DIG_NONE = 0, EMM_DIG_SUM = 1, EMM_DIG_ZERO = 2 };

enum { EMM_LIST_NONE = 0, EMM_LIST_P = 1, EMM_LIST_T = 2 };

/* emm_unit.wpred: stored to in this residency; installed protected to see
 * whether stores go on; the installs still to go in dirty */
#define EMM_WSEEN 0x80
#define EMM_WPROBE 0x40
#define EMM_WLEFT 0x3f

struct emm_mapping;

struct emm_unit {
	_Atomic uint32_t st;
	uint8_t list;
	/* ever written back (EMM_MAP_FRESH); atomic because a prefetch reads it
	 * before its claim, to skip units a fault would zero-fill: only the
	 * reading after the claim decides, since emm_zero_range may clear it
	 * between the two */
	_Atomic uint8_t written;
	uint8_t evlist; /* the list it was last evicted from (its ghost history) */
	/* GONE by emm_detach: its pages stay, the caller's ordinary memory
	 * (written before the store of GONE, read after a load of it) */
	uint8_t detached;
	/* the cleaner's write of its pages is in flight: a store may make it
	 * DIRTY meanwhile, but its pages must stay until the write is done */
	_Atomic uint8_t wb;
	/* installed write-protected and not stored to since: its first store,
	 * or its eviction untouched, tells the mapping's write score (slots.c);
	 * ordered by st like the pages */
	_Atomic uint8_t probe;
	/* what dig says of the pool's copy (EMM_DIG_*), and the digest of the
	 * bytes the pool holds for it while it is DIRTY or CLEAN (clean.c):
	 * written by whoever holds the unit exclusively (FETCHING or BUSY),
	 * dvalid also cleared by a store that catches it SYNCING */
	_Atomic uint8_t dvalid;
	/* its own write history (slots.c, emm_unit_predict): EMM_WSEEN once a
	 * store is seen in this residency, EMM_WPROBE while a protected install
	 * looks whether the stores go on, below them the installs still to go
	 * in dirty on that evidence */
	_Atomic uint8_t wpred;
	/* how many of its probes in a row saw a store: each doubles the next
	 * run of installs that go in dirty (slots.c, emm_unit_predict) */
	_Atomic uint8_t wrun;
	/* brought in by a fork only for the child's copy (uffd.c): installed
	 * clean at the eviction end, teaching the policy nothing */
	_Atomic uint8_t forkfill;
	uint8_t seen; /* ever installed: counted in its mapping's footprint */
	struct emm_unit *prev, *next;
	uint64_t dig[2];
	uint64_t evicted_at; /* eviction clock at its last eviction; 0 never */
	struct emm_mapping *m;
};

struct emm_mapping {
	char *base;
	size_t maplen; /* page-rounded; huge: 2 MiB-rounded */
	uint8_t huge;  /* backed by explicit 2 MiB pages (hugetlb) */
	uint64_t len;  /* backing bytes */
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
	size_t ngone;                     /* units discarded (emm_g.mu) */
	uint32_t serial;                  /* the trace's name for it: never reused in a process */
	int64_t last_fault;               /* unit of its last fault (emm_g.lock) */
	_Atomic int dense;                /* near-fault score, -8..8 (written under emm_g.lock) */
	_Atomic int wscore;               /* stores after read installs, -8..8 (slots.c) */
	_Atomic unsigned wtick;           /* installs, for choosing the probes */
	_Atomic size_t watched;           /* 1 + index of a probe whose stores are timed; 0 none */
	_Atomic unsigned watched_at;      /* wtick at its install */
	_Atomic uint64_t faults, fetched, written, prefetched, evictions;
	_Atomic uint64_t footprint; /* bytes of its units ever installed */
	_Atomic uint64_t cleaned;   /* of written: by the cleaner, ahead of eviction */
	/* dirty, but found to hold what the pool has: not written */
	_Atomic uint64_t unchanged;
};

struct emm_infl {
	struct emm_unit *u; /* NULL for a free entry */
	uint8_t write;
	uint8_t prefetch; /* 1 a stream's; 2 a dense region's group (goes in as it lands) */
	uint8_t done;     /* writes: completion seen */
	uint8_t dirty;    /* reads: install writable and dirty */
	uint8_t ready;    /* prefetch landed in staging, not installed */
	uint8_t trip;     /* a stream top-up's first step: staged, its touch feeds the stream */
	uint8_t nu;       /* a read of units u .. u + nu - 1 in one go (a span); 0 is 1 */
	int result;
};

/* The units an entry's read brings. */
static inline unsigned emm_infl_nu(const struct emm_infl *e)
{
	return e->nu ? e->nu : 1;
}

struct emm_slot {
	_Atomic int busy;
	int idx;
	int poisoned;
	void *chan;
	char *staging;
	unsigned ninfl;  /* submitted, not completed */
	unsigned nready; /* completed prefetches waiting in staging */
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

/* The engine is process-wide (one userfaultfd, one cache budget): its
 * state is this one object, defined in mapping.c. */
struct emm_state {
	pthread_mutex_t mu; /* map/unmap/source creation; never in the handler */
	_Atomic int lock;   /* policy lists, streams, counters */
	int uffd;
	int mode;
	uint64_t budget;
	uint64_t max_unit;    /* largest fetch unit of the live mappings */
	uint64_t resident;    /* installed + reserved for fetches in flight */
	uint64_t staged;      /* prefetched, waiting in staging for a touch */
	uint64_t evict_clock; /* bytes evicted, ever */
	uint64_t age_credit;
	uint64_t t_target; /* T's adaptive share of the budget (tmin at least) */
	struct emm_list P, T;
	struct emm_stream streams[EMM_STREAMS];
	uint64_t stream_tick;
	struct emm_mapping *_Atomic maps[EMM_MAX_MAPS];
	_Atomic unsigned nmaps; /* slots in use are below this (high mark) */
	struct emm_source *sources;
	struct sigaction old_bus;
	int bus_installed;
	char *zero;                  /* EMM_CELL bytes of zeros for fresh units */
	int huge_wp;                 /* the kernel write-protects hugetlb ranges */
	_Atomic unsigned serving;    /* faults being served now (emm_serve) */
	struct emm_mapping *retired; /* unmapped, freed once serving is 0 */
	struct em_map_stats gone;    /* totals of unmapped mappings */
	int trace;                   /* ETHERMEM_MAP_TRACE's descriptor + 1; 0 off */
	uint32_t serials;            /* mappings ever made (emm_g.mu) */
	int pidfd;                   /* this process's pidfd + 1, for process_madvise; 0 none */
	/* the cleaner (clean.c) */
	_Atomic uint32_t clean_seq;   /* bumped to wake it (a futex word) */
	_Atomic int clean_idle;       /* it sleeps, or is about to */
	_Atomic int clean_started;    /* its thread runs */
	uint64_t clean_clock;         /* evict_clock at its last look (lock) */
	int clean_found;              /* that look found dirty units (lock) */
	_Atomic uint64_t evict_waits; /* evictions that waited for a write-back */
	_Atomic uint64_t wp_ioctls;   /* UFFDIO_WRITEPROTECT calls made */
	_Atomic uint64_t wp_faults;   /* stores to protected units (each an unprotect) */
	_Atomic uint64_t serve_ns;    /* fault servers' time inside emm_serve (thread mode) */
	_Atomic uint64_t served;      /* messages they served */
	_Atomic uint64_t wakes;       /* UFFDIO_WAKE calls they made after serving */
	_Atomic uint64_t stage_hits;  /* prefetches installed at their touch (each a fault) */
};
extern struct emm_state emm_g;

/* ---- small helpers, inline because the fault path calls them per unit ---- */

static inline void emm_lock(void)
{
	while (atomic_exchange_explicit(&emm_g.lock, 1, memory_order_acquire))
		while (atomic_load_explicit(&emm_g.lock, memory_order_relaxed))
			sched_yield();
}

static inline void emm_unlock(void)
{
	atomic_store_explicit(&emm_g.lock, 0, memory_order_release);
}

/* madvise as the system call: the preload shim interposes madvise(3) for
 * the program, and the engine's own calls must not go through it. */
static inline int emm_madvise(void *a, size_t len, int advice)
{
	return syscall(SYS_madvise, a, len, advice) ? -errno : 0;
}

static inline uint64_t emm_ulen(const struct emm_mapping *m, size_t idx)
{
	uint64_t off = (uint64_t)idx << m->shift, ul = 1ull << m->shift;

	return off + ul > m->maplen ? m->maplen - off : ul;
}

/* Bytes of unit idx that the source backs: what is fetched and written
 * back (the mapped length, emm_ulen, may round past it). */
static inline uint64_t emm_backed(const struct emm_mapping *m, size_t idx)
{
	uint64_t off = (uint64_t)idx << m->shift, ul = 1ull << m->shift;

	return off + ul > m->len ? m->len - off : ul;
}

/* Mapped bytes of units idx .. idx + nu - 1 (a span): only the last unit
 * of a mapping can be short. */
static inline uint64_t emm_span_ulen(const struct emm_mapping *m, size_t idx, unsigned nu)
{
	uint64_t off = (uint64_t)idx << m->shift, end = (uint64_t)(idx + nu) << m->shift;

	return (end > m->maplen ? m->maplen : end) - off;
}

/* Backed bytes of the same span: what its read brings. */
static inline uint64_t emm_span_backed(const struct emm_mapping *m, size_t idx, unsigned nu)
{
	uint64_t off = (uint64_t)idx << m->shift, end = (uint64_t)(idx + nu) << m->shift;

	return (end > m->len ? m->len : end) - off;
}

static inline char *emm_uaddr(const struct emm_mapping *m, size_t idx)
{
	return m->base + ((size_t)idx << m->shift);
}

static inline bool emm_writable(const struct emm_mapping *m)
{
	return !(m->flags & EM_MAP_READONLY);
}

/* ---- policy.c (under emm_g.lock unless said) ---- */
void emm_list_del(struct emm_unit *u);
void emm_list_add(struct emm_unit *u, int which);
/* Puts u first in line for eviction. */
void emm_list_add_head(struct emm_unit *u, int which);
/* Bytes each confirmed prefetch stream may run ahead. */
uint64_t emm_ahead_bytes(void);
/* The transient FIFO's floor in bytes. */
uint64_t emm_tmin(void);
/* Puts a just-installed unit on P or T (a fork's fill: T's head). */
void emm_policy_insert(struct emm_unit *u);
/* Makes room for `need` more resident bytes, writing back through the held
 * slot sl (not under the lock). */
int emm_reserve(struct emm_slot *sl, uint64_t need);
/* The dirty units among those the policy would evict next, in that order,
 * looking `window` bytes into the eviction end: at most max into v. For the
 * cleaner, which writes them back before eviction reaches them. */
unsigned emm_policy_upcoming(struct emm_unit **v, unsigned max, uint64_t window);

/* ---- slots.c ---- */
/* Takes a free, working slot of s (NULL when every channel is dead). */
struct emm_slot *emm_slot_any(struct emm_source *s);
/* Takes slot sl, waiting for it. */
void emm_slot_get(struct emm_slot *sl);
void emm_slot_put(struct emm_slot *sl);
int emm_install(struct emm_unit *u, const void *buf, bool dirty);
/* The write score's two observations: a probe's first store, a probe
 * evicted untouched. */
void emm_probe_stored(struct emm_unit *u);
void emm_probe_evicted(struct emm_unit *u);
void emm_infl_install(struct emm_slot *sl, int i);
int emm_infl_find(struct emm_slot *sl, struct emm_unit *u);
int emm_infl_alloc(struct emm_slot *sl);
int emm_reap(struct emm_slot *sl, unsigned min, int timeout_ms);
int emm_write_units(struct emm_slot *sl, struct emm_unit **us, unsigned n, int *res);

/* ---- clean.c ---- */
/* Records what the pool holds for unit u, whose pages are (or will be, at
 * install) a copy of buf: a digest of buf, or the zero mark when buf is
 * emm_g.zero. The caller holds u exclusively and its pages cannot change. */
void emm_digest_note(struct emm_unit *u, const void *buf);
/* Whether dirty unit u, held BUSY and write-protected, holds what the pool
 * has, so that its write-back can be skipped (counted in unchanged). When
 * not, a digest computed for the comparison becomes the unit's: what the
 * pool holds once its write is done; a caller whose write fails sets
 * dvalid to EMM_DIG_NONE. */
bool emm_unchanged(struct emm_unit *u);
/* Write-protects and writes back the units of cand[0..n) (one source, at
 * most EMM_WB_MAX taken) that are DIRTY when claimed: all protected at
 * once, written a channel's depth at a time; each ends CLEAN, or DIRTY when
 * the write failed or a store came during it. 0, or the first error. Never
 * in the handler. */
int emm_writeback(struct emm_source *src, struct emm_unit **cand, unsigned n, bool ahead);
/* How far the cleaner looks into the eviction end (under the lock). */
uint64_t emm_clean_window(void);
/* Whether the cleaner should look again (under the lock, by eviction). */
bool emm_clean_due(bool waited);
/* Wakes the cleaner if it sleeps (not under the lock; async-signal-safe). */
void emm_clean_kick(void);
/* Starts the cleaner thread (emm_g.mu, never in the handler). */
int emm_clean_start(void);

/* ---- prefetch.c ---- */
int emm_fetch_batch(struct emm_slot *sl, struct emm_mapping *m, size_t idx, struct emm_io *pre,
		    int pre_ent);
/* How many units around a fresh unit's fault go in as zeros with it (an
 * aligned run; 1: the unit alone). */
size_t emm_zero_span(const struct emm_mapping *m);

/* ---- serve.c ---- */
/* One line on stderr without stdio (async-signal-safe). */
void emm_log(const char *what, const char *msg, uintptr_t addr, int err);
int emm_wait_unit(struct emm_slot *sl, struct emm_unit *u, uint32_t s, bool dirty);
/* 0: retry the access; 1: not in a mapping; -errno: the access fails. */
int emm_serve(uintptr_t a, bool is_write);
uint32_t emm_settle(struct emm_unit *u);
void emm_sigbus(int sig, siginfo_t *si, void *ucv);
void *emm_server(void *arg);

/* ---- uffd.c (never in the handler, but emm_wp) ---- */
int emm_wp(struct emm_mapping *m, size_t idx, int protect);
/* (Un)protects a batch of units with one ioctl per run of adjacent ones. */
void emm_wp_units(struct emm_unit **us, unsigned n, int protect);
/* Opens the userfaultfd and starts fault delivery at the first map (emm_g.mu). */
int emm_init_locked(void);
int emm_register(char *base, size_t len, unsigned flags, bool huge);

/* ---- huge.c (never in the handler) ---- */
bool emm_huge_fits(const struct emm_map_params *p, size_t *maplen);

/* ---- mapping.c (never in the handler) ---- */
void emm_forget_locked(struct emm_mapping *m, int slot);

#pragma GCC visibility pop

#endif /* EMM_ENGINE_H */
