/*
 * emm.h - internal interface of the paging layer (src/map), never installed.
 *
 * The paging engine (engine.h and its files) knows nothing of the wire: it
 * moves byte ranges through a table of operations (struct emm_backend_ops),
 * in the style of rdma-core's providers, so that the fault machinery can be
 * tested against local memory and run against the pool (map_api.c)
 * unchanged. A backend hands out channels; a channel is one in-flight queue
 * used by one thread at a time (for the pool, one em_queue). The engine only
 * calls submit and wait on channels from the fault path, so those two must
 * be async-signal-safe: no locks shared with the application, no allocation.
 */
#ifndef EMM_H
#define EMM_H

#include <stddef.h>
#include <stdint.h>

#include "ethermem.h"

/* ---- userfaultfd and huge pages, shared with the CLI's fault-path floors ---- */
/* A non-blocking userfaultfd with the given features, or -errno. */
int emm_uffd_open(uint64_t features);
/* Free explicit 2 MiB pages of the system, in bytes (0 if none or unknown). */
uint64_t emm_huge_free(void);

/* ---- backends ---- */
#define EMM_CHAN_DEPTH 64 /* operations a channel must hold in flight */
struct emm_io {
	uint8_t write; /* 0 read into buf, 1 write from buf */
	void *rctx;    /* the backend's handle of the mapped object */
	uint64_t off;  /* byte offset in it */
	void *buf;
	size_t len;
	uint64_t tag;
};
struct emm_done {
	uint64_t tag;
	int result; /* 0 or -errno */
};
struct emm_backend_ops {
	int (*chan_open)(void *bctx, void **chan);
	void (*chan_close)(void *chan);
	/* Posts io[0..n) as one batch; returns how many were posted or -errno. */
	int (*submit)(void *chan, const struct emm_io *io, unsigned n);
	/* Reaps between min and max completions, waiting up to timeout_ms;
	 * returns how many (0 on timeout) or -errno. */
	int (*wait)(void *chan, struct emm_done *d, unsigned min, unsigned max, int timeout_ms);
};

/* ---- the engine ---- */
enum emm_fault_mode {
	EMM_FAULTS_DEFAULT = 0, /* ETHERMEM_MAP_FAULTS=sigbus|thread, else sigbus */
	EMM_FAULTS_SIGBUS = 1,  /* served in the faulting thread */
	EMM_FAULTS_THREAD = 2,  /* served by engine threads; kernel accesses work */
};
/* Chooses the fault path; only before the first mapping of the process. */
int emm_set_fault_mode(enum emm_fault_mode mode);
int emm_fault_mode(void);

struct emm_source; /* one backend instance (one pool), with its channels */
/* Finds the source for (ops, bctx) or creates it with its channels. */
int emm_source_get(const struct emm_backend_ops *ops, void *bctx, struct emm_source **out);
/* The backend instance bctx is going away (its pool closes): closes the
 * source's channels and frees it, unless a mapping still uses it. */
void emm_source_drop(const struct emm_backend_ops *ops, void *bctx);

#define EMM_MAP_FRESH 0x100u /* internal: backing is known zero until written back */

struct emm_map_params {
	struct emm_source *src;
	void *rctx;       /* passed back in emm_io.rctx */
	uint64_t roff;    /* offset of the mapping in the backing object */
	uint64_t len;     /* bytes of backing data mapped */
	uint64_t unit;    /* fetch unit, power of two, 4 KiB .. 2 MiB */
	unsigned flags;   /* EM_MAP_* | EMM_MAP_FRESH */
	int timeout_ms;   /* a fetch that takes longer is fatal for the access */
	const char *what; /* name for log lines */
};
int emm_map_range(const struct emm_map_params *p, void **addr);
int emm_sync_range(void *addr, size_t len);
int emm_unmap_range(void *addr);
/* Unmaps [addr, addr+len) (4 KiB-aligned) of a mapping, as munmap(2) of part
 * of it: the data there is dropped, never written back, and the rest keeps
 * working. The caller owns the range (pages of one mapping it has not
 * discarded before). A unit only partly inside is detached: its other pages
 * stay mapped as ordinary memory, no longer the engine's, and the caller
 * unmaps them itself later. Only for mappings whose data need not reach the
 * backing (EM_MAP_SCRATCH or EM_MAP_READONLY); a huge-page mapping only in
 * whole units. Returns 0; 1 when no unit of the mapping is left, which has
 * then been released (no emm_unmap_range); -ENOENT when no unit the engine
 * still owns is in the range (the caller unmaps it); or -EINVAL. Exported to
 * the preload shim alone (libethermem.map). */
int emm_discard_range(void *addr, size_t len);
/* MADV_DONTNEED on a mapping's pages: they read as zeros afterwards (a
 * fresh mapping; a read-only one keeps its data, as a private file mapping
 * does). 0, -ENOENT (no mapping there), -EINVAL (a mapping whose backing is
 * not zeros). Never in the handler. */
int emm_zero_range(void *addr, size_t len);
int emm_stats(void *addr, struct em_map_stats *st);
int emm_set_cache(uint64_t bytes);
/* Records every unit installed from now on into path.PID (see slots.c for
 * the record); 0 or -errno. Never in the handler. */
int emm_set_trace(const char *path);
uint64_t emm_cache(void);
/* Process-wide totals over all mappings, live and gone. */
void emm_totals(struct em_map_stats *st);
/* A mapping with 2 MiB units uses explicit huge pages when enough are free
 * (ETHERMEM_MAP_HUGE=0 turns that off); reserving them (vm.nr_hugepages) is
 * the administrator's or a tool's business, never the library's. */
/* Bytes in the protected set, the transient FIFO, and resident (tests). */
void emm_policy_info(uint64_t *p_bytes, uint64_t *t_bytes, uint64_t *resident);
/* UFFDIO_WRITEPROTECT calls the engine has made, and stores that found
 * their unit write-protected (tests and benchmarks). */
uint64_t emm_wp_calls(void);
uint64_t emm_wp_faults(void);
/* Prefetched units installed from staging when a fault touched them. */
uint64_t emm_staged_touches(void);
/* For ETHERMEM_PRELOAD_STATS: in the thread mode, the faults the servers
 * took from the userfaultfd (WP faults included) and the nanoseconds they
 * spent serving them, summed over servers (with several program threads
 * faulting at once, the waiting those did, less the wake-ups: what to set
 * against program work); emm_wp_calls() and, where wpf is not NULL,
 * emm_wp_faults(); where wakes is not NULL, the UFFDIO_WAKE calls the
 * servers made (only for faults that no install or unprotect woke). */
void emm_serve_time(uint64_t *served, uint64_t *ns, uint64_t *wp, uint64_t *wpf, uint64_t *wakes);

#endif /* EMM_H */
