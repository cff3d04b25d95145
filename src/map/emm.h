/*
 * emm.h - internal interface of the paging layer (src/map), never installed.
 *
 * The paging engine (engine.c) knows nothing of the wire: it moves byte
 * ranges through a table of operations (struct emm_backend_ops), in the
 * style of rdma-core's providers, so that the fault machinery can be tested
 * against local memory and run against the pool (map_api.c) unchanged. A
 * backend hands out channels; a channel is one in-flight queue used by one
 * thread at a time (for the pool, one em_queue). The engine only calls
 * submit and wait on channels from the fault path, so those two must be
 * async-signal-safe: no locks shared with the application, no allocation.
 */
#ifndef EMM_H
#define EMM_H

#include <stddef.h>
#include <stdint.h>

#include "ethermem.h"

/* ---- userfaultfd and huge pages, shared by the engine and the floors ---- */
/* A non-blocking userfaultfd with the given features, or -errno. */
int emm_uffd_open(uint64_t features);
/* Free explicit 2 MiB pages of the system, in bytes (0 if none or unknown). */
uint64_t emm_huge_free(void);

/* ---- floors (floor.c) ---- */
struct emm_floor {
	uint64_t thread_4k_p50_ns; /* served by a separate thread sleeping in poll */
	uint64_t sigbus_4k_p50_ns; /* served in the faulting thread (SIGBUS) */
	double sigbus_2m_gbps;     /* 2 MiB per fault, in the faulting thread */
};
int emm_floor_measure(struct emm_floor *out, unsigned nfaults);

/* The fault paths the engine could take instead (emm_floor_paths). Units
 * are 2 MiB unless the name says 4K; "steady" figures cycle over 16 units
 * keeping 4 resident, so every fault also pays for an eviction. */
enum emm_floor_path {
	EMM_PATH_CONT_4K,       /* shmem memfd, page cached: minor fault + UFFDIO_CONTINUE */
	EMM_PATH_CONT_2M,       /* the same, 2 MiB per fault */
	EMM_PATH_CONT_FILL,     /* steady: memcpy into the alias + CONTINUE, hole punched */
	EMM_PATH_CONTH_2M,      /* hugetlb memfd, page cached: CONTINUE of one huge page */
	EMM_PATH_CONTH_FILL,    /* steady, hugetlb memfd, as CONT_FILL */
	EMM_PATH_COPY_ONE,      /* 2 MiB installed by one UFFDIO_COPY (no fault) */
	EMM_PATH_COPY_PER_PAGE, /* 2 MiB installed by 512 4 KiB UFFDIO_COPYs */
	EMM_PATH_HUGE_EVICT,    /* steady: COPY per fault into private hugetlb, MADV_DONTNEED */
	EMM_PATH_ANON_EVICT,    /* steady: the same into anonymous 4 KiB pages */
	EMM_PATH_RECV_TCP,      /* 2 MiB TCP replies into a warm buffer, nothing installed */
	EMM_PATH_RECV_COPY,     /* steady: recv into staging + UFFDIO_COPY (the engine today) */
	EMM_PATH_RECV_CONT,     /* steady: recv into the shmem alias + CONTINUE */
	EMM_PATH_RECV_CONTH,    /* steady: recv into a hugetlb alias + CONTINUE */
	EMM_PATH_RECV_MOVE,     /* steady: recv into staging + UFFDIO_MOVE, pages recycled */
	EMM_PATH_N
};
struct emm_floor_fig {
	double gbps;      /* median over rounds */
	uint64_t p50_ns;  /* median over rounds of the per-fault (per-install) p50 */
	char err[96];     /* why it was not measured; empty when it was */
};
/* Free huge pages emm_floor_paths needs for the hugetlb figures; it does
 * not reserve them (the caller owns vm.nr_hugepages). */
#define EMM_FLOOR_HUGE_PAGES 5
/* Fills fig[0..EMM_PATH_N); 0, or -errno if nothing could be measured.
 * Installs its own SIGBUS handler for the duration. */
int emm_floor_paths(struct emm_floor_fig *fig, unsigned rounds);

/* ---- backends ---- */
#define EMM_CHAN_DEPTH 64 /* operations a channel must hold in flight */
struct emm_io {
	uint8_t write;   /* 0 read into buf, 1 write from buf */
	void *rctx;      /* the backend's handle of the mapped object */
	uint64_t off;    /* byte offset in it */
	void *buf;
	size_t len;
	uint64_t tag;
};
struct emm_done {
	uint64_t tag;
	int result;      /* 0 or -errno */
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

/* ---- the engine (engine.c) ---- */
enum emm_fault_mode {
	EMM_FAULTS_DEFAULT = 0, /* ETHERMEM_MAP_FAULTS=sigbus|thread, else sigbus */
	EMM_FAULTS_SIGBUS = 1,  /* served in the faulting thread */
	EMM_FAULTS_THREAD = 2,  /* served by one engine thread; kernel accesses work */
};
/* Chooses the fault path; only before the first mapping of the process. */
int emm_set_fault_mode(enum emm_fault_mode mode);
int emm_fault_mode(void);

struct emm_source; /* one backend instance (one pool), with its channels */
/* Finds the source for (ops, bctx) or creates it with its channels. */
int emm_source_get(const struct emm_backend_ops *ops, void *bctx, struct emm_source **out);

#define EMM_MAP_FRESH 0x100u /* internal: backing is known zero until written back */

struct emm_map_params {
	struct emm_source *src;
	void *rctx;          /* passed back in emm_io.rctx */
	uint64_t roff;       /* offset of the mapping in the backing object */
	uint64_t len;        /* bytes of backing data mapped */
	uint64_t unit;       /* fetch unit, power of two, 4 KiB .. 2 MiB */
	unsigned flags;      /* EM_MAP_* | EMM_MAP_FRESH */
	int timeout_ms;      /* a fetch that takes longer is fatal for the access */
	const char *what;    /* name for log lines */
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
int emm_stats(void *addr, struct em_map_stats *st);
int emm_set_cache(uint64_t bytes);
uint64_t emm_cache(void);
/* Process-wide totals over all mappings, live and gone. */
void emm_totals(struct em_map_stats *st);
/* Adds delta explicit 2 MiB pages to the system's pool (negative gives them
 * back), relative and under an flock of the sysctl file so concurrent users
 * do not undo each other; *done is the change the kernel made (it may grant
 * fewer). 0 or -errno. A mapping with 2 MiB units uses huge pages when
 * enough are free (ETHERMEM_MAP_HUGE=0 turns that off). */
int emm_huge_adjust(long delta, long *done);
/* Bytes in the protected set, the transient FIFO, and resident (tests). */
void emm_policy_info(uint64_t *p_bytes, uint64_t *t_bytes, uint64_t *resident);

#endif /* EMM_H */
