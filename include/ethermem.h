/*
 * ethermem.h - the one public header of libethermem.
 *
 * libethermem lets a program use DRAM exported by memory nodes (ethermemd) on
 * other servers as one pool. The object model follows libibverbs: a pool
 * (the connection to a set of nodes) owns regions (remote byte ranges, possibly
 * striped over several nodes) and queues (in-flight work with a completion
 * ring). Synchronous calls are thin wrappers over a queue.
 *
 * Conventions, everywhere:
 *  - every name carries the em_ / EM_ prefix;
 *  - int-returning calls give 0 (or a count) on success and -errno on failure;
 *    em_strerror() turns any such code into text;
 *  - whatever the library allocates has its destroy/close call;
 *  - a NULL handle, an unknown flag or a nonzero reserved field
 *    is refused with -EINVAL (a NULL data buffer with a nonzero length
 *    with -EFAULT); em_pool_close(NULL) and em_queue_destroy(NULL) do
 *    nothing;
 *  - structs that may grow (options, and what the library fills in:
 *    em_region_info, em_node_status, em_map_stats) start with `size_t size`,
 *    which the caller sets to sizeof the struct as its header knows it.
 *    The library reads or writes only that many bytes: what a newer
 *    library knows beyond them is left out, and fields of a newer header
 *    that this library does not know read back as zero (options: must be
 *    zero, else -EINVAL). For an array, the size set in its first element
 *    is the stride of the whole array, and the library writes it into
 *    every element it fills. A size smaller than the struct's first
 *    release is refused with -EINVAL. Fields are only ever added at the
 *    end. em_op and em_completion are fixed (they are the hot path);
 *    their flags fields are how they may grow.
 *
 * The ABI: the shared library's soname changes only when the ABI breaks;
 * each release's new calls carry a symbol version (ETHERMEM_0.1, ...).
 *
 * Ownership: close regions and destroy queues before closing their pool;
 * em_pool_close() frees region handles left open (the nodes drop them).
 *
 * Thread safety: em_pool_* calls, em_region_* calls and the synchronous
 * em_read/em_write/em_atomic are safe to call from several threads at once on
 * the same pool (they serialise on the pool's default queue; for parallel I/O
 * give each thread its own em_queue). An em_queue is used by one thread at a
 * time. em_strerror() is thread-safe.
 */
#ifndef ETHERMEM_H
#define ETHERMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this header; em_version() tells the library's. */
#define EM_VERSION_MAJOR 0
#define EM_VERSION_MINOR 1
#define EM_VERSION_PATCH 0
#define EM_VERSION_STRING "0.1.0"

/* The library's version: fills whichever of major, minor and patch are not
 * NULL and returns the version string ("0.1.0"). A program built against a
 * newer header can check here that the calls it needs exist. */
const char *em_version(unsigned *major, unsigned *minor, unsigned *patch);

/* Errors specific to ethermem, beyond the errno values also used
 * (ENOSPC node full, ENOENT no such region, EACCES not yours, ERANGE past the
 * end, EINVAL bad argument, EPROTO bad message, ETIMEDOUT, ECONNRESET ...). */
#define EM_EAUTH 4096    /* the cluster secret was refused (or refused us) */
#define EM_EVERSION 4097 /* the peer speaks another protocol version */
#define EM_ENONODE \
	4098              /* a node holding part of the region is not in the pool,
			  * or cannot be reached (its connection was lost and
			  * no connection to the same session came back) */
#define EM_ELOST 4099     /* more nodes of a redundant region failed than it survives */
#define EM_EFULL 4100     /* the node serves as many clients as it may (max-clients) */
#define EM_ECRYPT 4101    /* the node requires encryption, or does not offer it */
#define EM_ESTALE 4102    /* the region's part moved (drain): read the layout again */
#define EM_EDRAINING 4103 /* the node is draining and takes no new regions */

typedef struct em_pool em_pool;
typedef struct em_region em_region;
typedef struct em_queue em_queue;

/* Transport of the data path. The control path is always TCP. */
enum em_transport {
	EM_TRANSPORT_DEFAULT = 0, /* ETHERMEM_TRANSPORT, else TCP */
	EM_TRANSPORT_TCP = 1,
	EM_TRANSPORT_OX = 2, /* OmniXtend over raw Ethernet */
};

struct em_pool_opts {
	size_t size; /* sizeof(struct em_pool_opts) */
	const char *
		nodes; /* "tcp://h1:7420,tcp://h2:7420"; NULL: ETHERMEM_NODES, then the config file */
	const char *secret_file; /* NULL: ETHERMEM_SECRET_FILE, then the config file */
	const char *
		config_file; /* NULL: ETHERMEM_CONFIG, then /etc/ethermem/client.conf if it exists */
	int timeout_ms;      /* per request; 0: ETHERMEM_TIMEOUT_MS, else 10000
				(synchronous calls resend for 4 more: see em_read) */
	enum em_transport transport;
	const char *ox_iface; /* interface for EM_TRANSPORT_OX; NULL: ETHERMEM_OX_IFACE */
	/* since 0.2: how long a waiting call spins before it sleeps, in us;
	 * 0: ETHERMEM_POLL_US (default 50); -1: never spin */
	int poll_us;
	/* since 0.2: 1 encrypts every connection after the handshake (a node
	 * that cannot fails the connect with -EM_ECRYPT); 0: ETHERMEM_ENCRYPT,
	 * then the config file's `encrypt`, else off; -1: off */
	int encrypt;
	/* since 0.2: membership from etcd instead of a node list: "http://h:2379[,...]";
	 * NULL: ETHERMEM_ETCD, then the config file's etcd key. With it the
	 * nodes are those registered in etcd and named regions live in its
	 * directory. */
	const char *etcd;
	const char *cluster; /* NULL: ETHERMEM_CLUSTER, then the file, then "ethermem" */
};

/* Connect to every node of the pool and authenticate. opts may be NULL (all
 * from the environment / config file). Succeeds while one node answers:
 * the others are connected in the background as they come (as are nodes
 * whose connection breaks later), with backoff; calls that need such a node
 * wait up to the request timeout, then fail with -EHOSTDOWN. A region with
 * a part on a node that restarted (its memory is gone) fails every access
 * with -EM_ENONODE. A secret file that group or others may read is
 * refused with -EPERM (chmod 600 it). */
int em_pool_connect(em_pool **out, const struct em_pool_opts *opts);
void em_pool_close(em_pool *pool);
/* Number of nodes in the pool. */
int em_pool_nodes(const em_pool *pool);

/* ---- regions ---- */

#define EM_NAME_MAX 63 /* bytes in a region name, without the NUL */

/* Redundancy of a region (see README "Redundancy"): what it survives.
 *  NONE          one copy; a node's loss loses the bytes it held.
 *  REPLICATE:N   N full copies on N different nodes; survives N-1 losses;
 *                costs N bytes of pool memory per byte stored.
 *  EC:K+M        Reed-Solomon, K data and M parity chunks on K+M nodes;
 *                survives M losses; costs (K+M)/K bytes per byte stored. */
enum em_redundancy {
	EM_RED_DEFAULT = 0, /* the pool's (config `redundancy`), else NONE */
	EM_RED_NONE = 1,
	EM_RED_REPLICATE = 2, /* red_k copies (2..16) */
	EM_RED_EC = 3,        /* red_k data (1..32) + red_m parity (1..8) */
};

struct em_region_opts {
	size_t size;         /* sizeof(struct em_region_opts) */
	uint64_t chunk_size; /* striping unit when the region spans nodes; 0: 4 MiB
				 (EC: the cell, each node's share of a stripe; 0: by size,
				 64 KiB doubled up to 512 KiB while the region holds 16
				 stripes) */
	unsigned flags;      /* EM_REGION_*; others: -EINVAL */
	/* since 0.2 */
	uint32_t redundancy; /* enum em_redundancy */
	uint16_t red_k, red_m;
};
#define EM_REGION_EXCL 1u /* named create fails with -EEXIST if the name exists */

/* Rebuilds every lost copy or chunk of a redundant region (one this handle
 * found dead, or that does not answer now) on a node of the pool that holds
 * no other part of it, from the surviving ones, and moves the region's
 * layout to the next epoch (stored with the new parts; opening a name takes
 * the newest layout its nodes hold). Returns how many parts were rebuilt
 * (0: nothing was lost), -EM_ELOST if too few survive, -ENOSPC if no node
 * can take a part, -EALREADY when another client is repairing the region,
 * -EINVAL for a region without redundancy. Other clients that have a named
 * region open follow: the parts they write are fenced, and a write or
 * atomic of theirs that meets the fence is refused, after which they read
 * the layouts again, write the parts being rebuilt too and redo it (their
 * callers see nothing of this). */
int em_region_repair(em_region *region);
/* Starts the same repair in a background thread of this handle and returns
 * at once (0, or -EINVAL for a region without redundancy). The repair copies
 * at most ETHERMEM_REPAIR_RATE bytes per second; reads and writes through
 * this handle keep working meanwhile, and writes reach the parts being
 * rebuilt. With ETHERMEM_AUTO_REPAIR (the default) the thread starts when
 * the handle opens and repairs as soon as a request finds a node dead.
 * em_region_stat() says REPAIRING while it runs. */
int em_region_repair_start(em_region *region);

/* Parses "none", "replicate:N" or "ec:K+M" into opts->redundancy, red_k and
 * red_m (opts->size must be set, at least the 0.2 size). 0 or -EINVAL. */
int em_parse_redundancy(const char *s, struct em_region_opts *opts);

/* Create a region of `bytes` bytes. name NULL: anonymous, freed when the pool
 * connection closes. A name: persists on the nodes until em_region_delete(),
 * and any authenticated client may em_region_open() it. Without
 * EM_REGION_EXCL, creating an existing name of the same size opens it. */
int em_region_create(em_pool *pool, const char *name, uint64_t bytes,
		     const struct em_region_opts *opts, em_region **out);
int em_region_open(em_pool *pool, const char *name, em_region **out);
/* Drops this handle; frees an anonymous region. NULL: -EINVAL. */
int em_region_close(em_region *region);
/* Deletes a named region on all nodes, as unlink(2) removes a file: the
 * name is gone at once (opening it gives -ENOENT, and it may be created
 * anew as a different region), while handles already open, here or in
 * other clients, keep reading and writing the old region until they are
 * closed; its memory is freed with the last of them. */
int em_region_delete(em_pool *pool, const char *name);
/* Bytes of the region (0 for NULL), and its pool (NULL for NULL). */
uint64_t em_region_size(const em_region *region);
em_pool *em_region_pool(const em_region *region);

struct em_region_info {
	size_t size; /* set by the caller in info[0]: see the conventions */
	char name[EM_NAME_MAX + 1];
	uint64_t bytes; /* of the whole region */
	uint64_t chunk_size;
	unsigned nodes; /* nodes it is striped over */
	/* since 0.2 */
	uint32_t redundancy; /* enum em_redundancy (never DEFAULT) */
	uint16_t red_k, red_m;
	uint32_t state; /* enum em_region_state, as this client sees it */
	uint32_t epoch; /* layout generation: moves when repair replaces a node */
	/* since 0.3: progress of a repair of the region (state REPAIRING):
	 * bytes rebuilt so far of to_rebuild (the lost parts' bytes). From
	 * em_region_stat(), of a repair this handle runs; from
	 * em_region_list(), of a repair any process runs, as its repairer last
	 * published it (every 0.5 s). Both 0 when none is known. */
	uint64_t rebuilt, to_rebuild;
};
enum em_region_state {
	EM_STATE_HEALTHY = 0,   /* every copy or chunk is where the layout says */
	EM_STATE_DEGRADED = 1,  /* some are lost; reads are served by the others */
	EM_STATE_REPAIRING = 2, /* lost ones are being rebuilt */
};
/* Lists named regions of the pool into info[0..max); returns how many exist
 * (may exceed max). With max > 0, info[0].size must be set. */
int em_region_list(em_pool *pool, struct em_region_info *info, unsigned max);
/* This handle's view of its region into *info (info->size set by the
 * caller): the state is this handle's (healthy, degraded, repairing).
 * 0 or -EINVAL. */
int em_region_stat(const em_region *region, struct em_region_info *info);

/* ---- synchronous one-sided operations ----
 *
 * At most once. Every write and atomic carries an identity unique in the
 * client's session with its node, and the node remembers the results of
 * the session's last 256 writes and atomics. When a synchronous call's
 * node times out or its connection is lost, the call attaches to the same
 * session again and resends the operation with the same identity, for up
 * to four more request timeouts: if the first sending was applied (the
 * node was only frozen or slow, or the reply was lost), the node answers
 * with that result - the same old value of an atomic - and does not apply
 * it again. So a call that returns 0 was applied exactly once. A read is
 * not resent: it fails at the request timeout, as before.
 *  - A call that fails with -EM_ENONODE (the node did not come back within
 *    the window, refused the connection, or had ended the session: it was
 *    restarted, or the client was away longer than its session-linger,
 *    10 s by default) may or may not have been applied; calling again
 *    sends a new operation, which may then be applied twice.
 *  - The node's memory holds 256 operations per session: an operation
 *    resent after 256 newer writes and atomics of the same session (from
 *    other threads or queues) reached the node is applied again.
 *  - em_submit/em_wait do not resend: a completion with -ETIMEDOUT or
 *    -EM_ENONODE says the operation's outcome is unknown. Redundant
 *    regions fail over to their other copies instead (README, Redundancy),
 *    and the OmniXtend transport does not resend.
 *  - Reads are resent the same way; they change nothing. */

int em_read(em_region *region, uint64_t offset, void *buf, size_t len);
int em_write(em_region *region, uint64_t offset, const void *buf, size_t len);

/* Remote atomics on an aligned 64-bit word: the OmniXtend TL-UH arithmetic and
 * logical set plus compare-and-swap. Each returns the old value in *old
 * (may be NULL). Atomic against every other client of the region. */
enum em_atomic_op {
	EM_ATOMIC_CAS = 0, /* if (*p == compare) *p = operand */
	EM_ATOMIC_FADD = 1,
	EM_ATOMIC_SWAP = 2,
	EM_ATOMIC_SMIN = 3, /* signed */
	EM_ATOMIC_SMAX = 4,
	EM_ATOMIC_UMIN = 5, /* unsigned */
	EM_ATOMIC_UMAX = 6,
	EM_ATOMIC_AND = 7,
	EM_ATOMIC_OR = 8,
	EM_ATOMIC_XOR = 9,
	EM_ATOMIC__COUNT
};
int em_atomic(em_region *region, uint64_t offset, enum em_atomic_op op, uint64_t operand,
	      uint64_t compare, uint64_t *old);
/* On a redundant region an atomic executes on the first live copy, which
 * orders it; it is then applied to every other live copy in that order
 * before it completes, so a copy that takes over after a failure holds
 * every completed atomic exactly once. EC regions refuse atomics
 * (-EOPNOTSUPP): a word's parity cannot move atomically with it. */

/* ---- asynchronous, batched operations ---- */

enum em_opcode { EM_OP_READ = 1, EM_OP_WRITE = 2, EM_OP_ATOMIC = 3 };

/* One work request. buf must stay valid until its completion is reaped. */
struct em_op {
	uint8_t opcode;    /* enum em_opcode */
	uint8_t atomic_op; /* enum em_atomic_op, for EM_OP_ATOMIC */
	uint16_t flags;    /* none defined yet: 0 */
	uint32_t reserved; /* 0 */
	em_region *region;
	uint64_t offset;
	void *buf;          /* read destination / write source */
	size_t len;         /* bytes; ignored for atomics */
	uint64_t operand;   /* atomics */
	uint64_t compare;   /* EM_ATOMIC_CAS */
	uint64_t user_data; /* returned in the completion */
};

struct em_completion {
	uint64_t user_data;
	int result;     /* 0 or -errno */
	uint32_t flags; /* none defined yet: 0 */
	uint64_t value; /* atomics: the old value */
};

/* A queue holds up to `depth` (1 .. 2^20) operations in flight, over its
 * own connections to the nodes. */
int em_queue_create(em_pool *pool, unsigned depth, em_queue **out);
void em_queue_destroy(em_queue *q);
/* Posts ops[0..n) in order; one system call per node carries the whole
 * batch. Returns how many were posted, k: ops[0..k) were posted and each
 * will give exactly one completion (an op the library refuses, such as one
 * past the region's end, completes at once with its error); ops[k..n) were
 * not, and hold nothing. k < n when the queue is full or an op could not be
 * staged. Only when nothing was posted is the return an error: -EAGAIN for
 * a full queue, or what stopped the first op (-ENOMEM). */
int em_submit(em_queue *q, const struct em_op *ops, unsigned n);
/* Reaps up to max completions without blocking; returns how many. */
int em_poll(em_queue *q, struct em_completion *out, unsigned max);
/* Reaps at least min (bounded by what is in flight) and at most max
 * completions, waiting up to timeout_ms (-1: the pool's request timeout). */
int em_wait(em_queue *q, struct em_completion *out, unsigned min, unsigned max, int timeout_ms);
/* A descriptor for an event loop (poll, epoll, select): it is readable
 * while completions of this queue may be waiting, so a loop can sleep on it
 * beside its other descriptors and call em_poll() when it wakes. It is
 * level-triggered and may wake spuriously (em_poll then reaps nothing); its
 * state is brought up to date when em_submit, em_poll and em_wait return,
 * so reap after every wakeup. Over a transport without a descriptor of its
 * own (OmniXtend), it stays readable while operations are in flight. Owned
 * by the queue, closed by em_queue_destroy(): never read or close it.
 * Returns the descriptor or -errno. */
int em_queue_fd(em_queue *q);
/* Operations submitted whose completion has not arrived yet (arrived but
 * not yet reaped ones are not counted), or -EINVAL. */
int em_queue_inflight(const em_queue *q);

/* ---- state of the pool ---- */

#define EM_STAT_OPS 8 /* read, write, atomic, create, open, delete, list, status */
struct em_node_status {
	size_t size;       /* set by the caller in st[0]: see the conventions */
	char addr[80];     /* as given in the node list */
	uint64_t capacity; /* bytes exported */
	uint64_t used;     /* bytes allocated to regions */
	uint32_t regions;  /* named + anonymous regions */
	uint32_t named_regions;
	uint32_t clients;    /* connections now */
	uint32_t huge_pages; /* 1 when backed by explicit huge pages */
	uint64_t uptime_s;
	uint64_t ops[EM_STAT_OPS];
	uint64_t errors[EM_STAT_OPS];
	uint64_t bytes_in, bytes_out;
	uint64_t auth_failures;
	/* service-time percentiles in ns, per op class (read, write, atomic) */
	uint64_t lat_p50_ns[3], lat_p99_ns[3], lat_p999_ns[3];
	/* OmniXtend (all zero when the node serves none, or none yet) */
	uint64_t ox_rx_frames, ox_tx_frames, ox_retransmits;
	uint64_t ox_denied;    /* requests answered with the denied bit */
	uint64_t ox_unknown;   /* frames dropped as not from a known peer: a MAC with
				* no window, or a session's MAC out of its
				* sequence or with a bad tag */
	uint64_t ox_malformed; /* frames that failed to decode, dropped */
	uint32_t ox_attached;  /* sessions holding an address window now */
};
/* Fills st[0..max) with one entry per node; returns the number of nodes.
 * With max > 0, st[0].size must be set. A node that does not answer
 * (down, frozen, being reconnected) has only its addr (and size) filled in,
 * and capacity 0. */
int em_pool_status(em_pool *pool, struct em_node_status *st, unsigned max);

/* ---- transparent mapping (userfaultfd) ---- */

/* A region, or part of it, appears in the address space; pages not present
 * locally are fetched from the pool on first touch into a per-process cache.
 * The cache budget is shared by all mappings of the process. */
struct em_map_opts {
	size_t size;         /* sizeof(struct em_map_opts) */
	uint64_t offset;     /* start within the region (multiple of 4 KiB) */
	uint64_t length;     /* bytes; 0: to the region's end */
	uint64_t fetch_unit; /* 4 KiB .. 2 MiB, power of two; 0: 64 KiB */
	unsigned flags;      /* EM_MAP_*; others: -EINVAL */
	int timeout_ms;      /* a fetch slower than this is fatal for the access
				(SIGBUS, reason on stderr); 0: the pool's timeout */
};
#define EM_MAP_READONLY 1u   /* stores fault with SIGSEGV; no write-back */
#define EM_MAP_NOPREFETCH 2u /* fetch only what faults */
#define EM_MAP_FRESH \
	4u /* the region was just created (all zero): units
				never written back are zero-filled, not fetched */
#define EM_MAP_SCRATCH \
	8u /* contents are not needed after em_unmap: it
				discards instead of writing back (heap use) */
#define EM_MAP_NOHUGE \
	16u /* stay on 4 KiB pages even with 2 MiB units
				(as ETHERMEM_MAP_HUGE=0 does for every map) */
#define EM_MAP_THREAD_FAULTS \
	32u /* serve this process's faults on a library
				thread (as ETHERMEM_MAP_FAULTS=thread); -EBUSY
				once the first map chose the other way */

/* Faults are served in the faulting thread (a SIGBUS handler, the fastest
 * path). The kernel's own accesses to a page not yet fetched, such as
 * read(2) into a mapped buffer, then fail with EFAULT: touch such buffers
 * first, or pass EM_MAP_THREAD_FAULTS (or set ETHERMEM_MAP_FAULTS=thread)
 * to the first em_map to have faults served by a library thread (slower;
 * what `ethermem run` uses). A bad ETHERMEM_MAP_* value fails em_map with
 * -EINVAL.
 * The cache budget defaults to ETHERMEM_MAP_CACHE, else 1 GiB; a fetch unit
 * larger than the budget is refused (-EINVAL). A mapping with 2 MiB units
 * is put on explicit huge pages when the system has enough of them free
 * for the budget (vm.nr_hugepages; EM_MAP_NOHUGE or ETHERMEM_MAP_HUGE=0
 * turn it off); its
 * length is then rounded up to 2 MiB, the tail reading as zeros. Mapping past the region's
 * end fails with -ERANGE. A forked child does not inherit mappings. */

/* Sets the process-wide cache budget in bytes (before or between maps). */
int em_map_cache_size(uint64_t bytes);
int em_map(em_region *region, const struct em_map_opts *opts, void **addr);
/* Writes back dirty pages of [addr, addr+len) (len 0: the whole mapping). */
int em_sync(void *addr, size_t len);
/* Writes back what is dirty and releases the range. */
int em_unmap(void *addr);

struct em_map_stats {
	size_t size;            /* set by the caller: see the conventions */
	uint64_t faults;        /* faults served by fetching */
	uint64_t bytes_fetched; /* from the pool */
	uint64_t bytes_written; /* written back */
	uint64_t prefetched;    /* bytes fetched ahead of a fault */
	uint64_t evictions;     /* units dropped or written back */
	uint64_t resident;      /* bytes now in the cache */
	/* of bytes_written: what the background cleaner wrote ahead of
	 * eviction, so that eviction could just drop it */
	uint64_t bytes_cleaned;
	/* evictions that had to write dirty units back first, the fault
	 * waiting for it; process-wide like resident */
	uint64_t evict_waits;
	/* dirty bytes not written back because they held what the pool has
	 * (stored to, but put back as they were fetched); not in bytes_written */
	uint64_t bytes_unchanged;
};
/* Counters of the mapping at addr; addr NULL: totals of the process.
 * resident is always the process-wide cache occupancy. */
int em_map_stats(void *addr, struct em_map_stats *st);

/* Text for a code from any call (negative or positive errno, or EM_E*). */
const char *em_strerror(int err);

/* Parses "512M", "64G", "4096", "1.5G" (binary units). 0 or -EINVAL. */
int em_parse_size(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif /* ETHERMEM_H */
