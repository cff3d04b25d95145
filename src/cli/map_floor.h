/*
 * map_floor.h - the fault-path floors (map_floor.c) and the huge-page
 * lender (hugepages.c) of `ethermem bench map`. Tools of the command, not of
 * the library: they install signal handlers, open sockets and write
 * vm.nr_hugepages, none of which a library may do behind its caller's back.
 */
#ifndef EM_CLI_MAP_FLOOR_H
#define EM_CLI_MAP_FLOOR_H

#include <stdint.h>

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
	double gbps;     /* median over rounds */
	uint64_t p50_ns; /* median over rounds of the per-fault (per-install) p50 */
	char err[96];    /* why it was not measured; empty when it was */
};
/* Free huge pages emm_floor_paths needs for the hugetlb figures; it does
 * not reserve them (the caller owns vm.nr_hugepages). */
#define EMM_FLOOR_HUGE_PAGES 5
/* Fills fig[0..EMM_PATH_N); 0, or -errno if nothing could be measured.
 * Installs its own SIGBUS handler for the duration. */
int emm_floor_paths(struct emm_floor_fig *fig, unsigned rounds);

/* Adds delta explicit 2 MiB pages to the system's pool (negative gives them
 * back), relative and under an flock of the sysctl file so concurrent users
 * do not undo each other; *done is the change the kernel made (it may grant
 * fewer). 0 or -errno. */
int em_cli_huge_adjust(long delta, long *done);

#endif
