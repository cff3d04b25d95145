/*
 * internal.h - libethermem's private structures, shared by its files and by
 * in-tree tools (the benchmark, the paging layer). Never installed.
 *
 * A queue posts "parts" - one wire request each - to per-node channels
 * (struct em_chan_ops). Every channel starts as an authenticated TCP
 * connection (tcp.c: sessions and control always travel over TCP); the
 * pool's transport (struct em_transport_ops) may wrap it into a channel of its
 * own kind. Transports are found by name in a registry (transport.c) built
 * from src/lib/CMakeLists.txt, so nothing here or in pool.c and queue.c
 * names one; README.md in this directory tells how to add one.
 */
#ifndef EM_LIB_INTERNAL_H
#define EM_LIB_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/auth.h"
#include "common/wire.h"
#include "ethermem.h"

struct em_slot;
struct em_chan;

/* One wire request and, once completed, its response. */
struct em_part {
	struct em_slot *slot;   /* NULL for control calls */
	struct em_part *origin; /* control calls: where the result goes */
	uint64_t tag;
	uint8_t wop;     /* enum em_wire_op */
	uint16_t wflags; /* request flags beyond the channel's own (EM_WF_COPY) */
	uint32_t handle, aux;
	uint64_t off;
	const void *req; /* request payload */
	uint32_t req_len;
	void *resp; /* response payload destination */
	uint32_t resp_cap;
	uint8_t inl[16]; /* atomics: operands out, old value back */
	/* filled on completion */
	int status;
	uint32_t resp_len, r_region, r_aux;
	uint64_t r_off;
};

struct em_chan_ops {
	const char *name;
	/* Sends parts[0..n) (copied into the channel's in-flight FIFO). Takes
	 * ownership: on failure every part still completes, with the error. */
	int (*post)(struct em_chan *ch, const struct em_part *parts, unsigned n);
	/* Receives responses and completes parts via em_part_done(). With
	 * timeout_ms != 0 it waits until at least one part completes (-1: the
	 * pool's timeout). Returns parts completed or -errno; on a timeout or
	 * a broken connection every outstanding part fails. */
	int (*progress)(struct em_chan *ch, int timeout_ms);
	int (*fd)(struct em_chan *ch);
	/* Fails every outstanding part with err and closes the connection. */
	void (*fail)(struct em_chan *ch, int err);
	void (*close)(struct em_chan *ch);
	/* Optional: makes room for `parts` parts in flight and in one post, so
	 * that traffic up to a queue's depth allocates nothing (the paging
	 * engine posts from a SIGBUS handler, where malloc is not safe). */
	int (*reserve)(struct em_chan *ch, unsigned parts);
};

struct em_chan {
	const struct em_chan_ops *ops;
	struct em_queue *q;   /* whose slots the parts complete */
	unsigned outstanding; /* parts posted and not completed */
	int timeout_ms;
	int poll_us; /* spin this long for a reply before sleeping */
	/* waits sleep at once, without the spin: set while the caller waits
	 * on several nodes, which need the cores more than it does */
	bool sleep;
	/* set under the channel's lock, read without it where it is a hint
	 * (the health thread, a witness scan choosing nodes): atomic, so that
	 * such a read is not a data race */
	_Atomic bool broken;
};

struct em_node {
	char addr[80];
	char host[64];
	uint16_t port;
	uint8_t id[EM_NODE_ID_LEN];
	uint64_t session;
	uint8_t token[EM_TOKEN_LEN];
	/* health.c */
	int fd;              /* a dup of the default channel's socket, to cut it; -1 */
	bool dir_down;       /* etcd: its record is gone (lease expired) */
	unsigned backoff_ms; /* reconnect backoff, under the pool lock */
	uint64_t retry_at_ns;
	unsigned gen; /* bumped when its default channel is made again */
};

/* A transport: how a queue's channel to a node is made and what the pool
 * and its regions need for it. Every hook is optional; `priv` is what
 * init stored, so a transport that wraps another (fault.c) can hold the
 * other's beside its own. A transport file defines
 * `const struct em_transport_ops em_transport_<name>` and is listed once in
 * CMakeLists.txt. */
struct em_transport_ops {
	const char *name; /* ETHERMEM_TRANSPORT / config `transport` */
	int id;           /* enum em_transport value, 0: reachable by name only */
	/* Checks the pool's settings, makes the transport's state (after the
	 * node list is parsed, before any connection). */
	int (*init)(em_pool *pool, void **priv);
	/* Per-node setup once the sessions and the default queue exist; the
	 * default queue's channels are wrapped right after it. */
	int (*start)(void *priv, em_pool *pool);
	/* Node i's channel of a queue from its fresh TCP channel. On success
	 * it owns `tcp`; on failure it leaves it to the caller. */
	int (*wrap)(void *priv, em_pool *pool, unsigned i, struct em_chan *tcp,
		    struct em_chan **out);
	/* A region was created or opened (its handles valid) / is closing. */
	int (*attach)(void *priv, em_region *r);
	void (*detach)(void *priv, em_region *r);
	/* Pool close: stop runs while the sessions are still up, fini after. */
	void (*stop)(void *priv, em_pool *pool);
	void (*fini)(void *priv, em_pool *pool);
};

/* The registry (transport.c): by name, or by enum em_transport value. */
const struct em_transport_ops *em_transport_find(const char *name);
const struct em_transport_ops *em_transport_by_id(int id);

struct em_pool {
	/* Nodes in the pool: only grows, when one joins (health.c). The array
	 * has room for EM_MAX_SEG from the start, so it never moves; a new
	 * entry is filled in before n is published (read it with em_pool_n). */
	unsigned n;
	struct em_node *nodes;
	uint8_t key[EM_KEY_LEN];
	int timeout_ms;
	int poll_us;
	uint32_t bulk_window;              /* TCP: bulk bytes in flight ahead of small requests */
	bool encrypt;                      /* seal every connection (common/seal.h) */
	const struct em_transport_ops *tp; /* the data path, resolved */
	void *tpriv;                       /* its state */
	char iface[64];                    /* network interface, for transports over raw Ethernet */
	pthread_mutex_t lock;              /* the default queue, control calls */
	pthread_mutex_t id_lock;           /* nodes[].id, which a reconnect changes (a leaf lock) */
	struct em_queue *dq;               /* over the session's first connections */
	struct em_region *regions;         /* open handles, freed by em_pool_close */
	uint8_t red, red_k, red_m;         /* default redundancy of new regions */
	struct em_dir *dir;         /* membership and named regions in etcd, NULL: static list */
	struct em_health *health;   /* reconnects and the membership watch (health.c) */
	uint32_t nqueues;           /* queues made so far: each its own tag range */
	struct em_retired *retired; /* handles a drain left behind (drain.c), pool lock */
	struct em_queue *pager_qs;  /* the pager's queues (health.c), pool lock */
};

/* A handle on a part that a drain moved away: closed only a request
 * timeout after the layout changed, so that no part another queue had in
 * flight on it meets a closed (or reused) handle instead of EM_ESTALE. */
struct em_retired {
	struct em_retired *next;
	unsigned node;
	uint32_t handle;
	uint64_t at_ns;
};

#define EM_MAX_PATTERN 64
#define EM_MAX_SEG 64 /* nodes one region may span, and nodes in a pool */

static inline unsigned em_pool_n(const em_pool *pool)
{
	return __atomic_load_n(&pool->n, __ATOMIC_ACQUIRE);
}

struct em_region {
	em_pool *pool;
	uint64_t size, chunk;
	unsigned nseg;               /* nodes holding a part */
	unsigned node[EM_MAX_SEG];   /* pool node index, per segment */
	uint32_t handle[EM_MAX_SEG]; /* node-local handle, per segment */
	unsigned plen;
	uint8_t pattern[EM_MAX_PATTERN]; /* chunk i lives on segment pattern[i % plen] */
	uint32_t rank[EM_MAX_PATTERN];   /* chunks before it in the period on its segment */
	uint32_t cnt[EM_MAX_PATTERN];    /* chunks per period, per segment */
	char name[EM_NAME_MAX + 1];
	bool named;
	bool gone;                     /* a part's node restarted empty: every access fails */
	char piece[EM_NAME_MAX + 1];   /* etcd mode: the pieces' name on the nodes */
	struct em_region *next, *prev; /* the pool's list of open handles */
	/* redundancy (redundancy.c); red NONE: everything above as always */
	uint8_t red, red_k, red_m; /* enum em_redundancy, never DEFAULT */
	uint32_t epoch;            /* of the layout */
	uint64_t dir_epoch;        /* etcd mode: of the record it was opened from (atomic) */
	bool follow_again;         /* the watch could not follow its record (pool lock) */
	/* Odd while node[], handle[] and dir_epoch change after the region is
	 * in use (a drain followed, a part opened again): queues read them
	 * without the pool lock, the pager from its fault handler, and take a
	 * snapshot that this count brackets (em_layout_begin/end). */
	uint32_t lseq;
	uint64_t lost;         /* segments this handle found dead (atomic) */
	uint64_t lost_rec;     /* of those, the ones its layout says are lost (open) */
	uint64_t unplaced;     /* of those, the ones on a node whose id this pool had
				* not learned at open (down since it started): node[s]
				* is no more than a valid index while it has no handle */
	uint64_t rows;         /* EC: stripes */
	struct em_red_aux *rx; /* coder, repair state; redundant regions only */
};

struct em_slot {
	uint64_t user_data;
	int result;
	uint64_t value;
	unsigned pending;
	uint8_t opcode;
	struct em_slot *next_free; /* also links the queue's stale list */
	/* to do the operation again after a drain moved a part (queue.c) */
	struct em_op op;
	uint64_t epoch; /* the region's dir_epoch its parts were addressed by */
	uint64_t until; /* 0, or when waiting for the layout to move gives up */
	uint64_t again; /* when to post it again even at the same epoch */
	/* to post it again after a connection broke under it: its parts' first
	 * tag (a resend reuses them, so the node applies it once), the queue's
	 * session generation when it was sent, and whether a part failed on a
	 * broken channel (it then waits on the stale list for the connection) */
	uint64_t tag0;
	unsigned sess_gen;
	bool conn;
};

/* Parts gathered for one node during a submission. */
struct stage {
	struct em_part *p;
	unsigned n, cap;
};

struct em_queue {
	em_pool *pool;
	unsigned depth, inflight;
	unsigned n;          /* nodes it has channels for (<= the pool's) */
	struct em_chan **ch; /* per pool node, room for EM_MAX_SEG */
	bool owns_chans;
	/* Whether em_submit may dial: it makes channels to nodes that joined
	 * and again those that broke (not for the paging engine, which submits
	 * where dialling is not safe). */
	bool redial;
	/* Whether an operation that met EM_ESTALE (a drain moved its part) is
	 * done again at the layout's next epoch instead of completing with it
	 * (not on the default queue, whose synchronous callers follow the
	 * record themselves), and whether this queue may read the record
	 * itself: the pager's may not (its fault handler); it waits for the
	 * pool's etcd watch to follow the record. */
	bool follow, follow_here;
	struct em_slot *stale; /* operations waiting for a layout to move */
	unsigned backoff_ms[EM_MAX_SEG];
	uint64_t retry_at_ns[EM_MAX_SEG];
	/* the session each channel joined, and a count of the times one was
	 * dialled into a different session (what the node applied at most once
	 * in the old one is forgotten there) */
	uint64_t sess[EM_MAX_SEG];
	unsigned sess_gen;
	struct em_slot *slots, *free_slots;
	struct em_completion *cq;
	unsigned cq_head, cq_count;
	uint64_t next_tag;   /* a part's tag, unique in the session (EM_WF_ONCE) */
	uint64_t replay_tag; /* nonzero: a resend, whose parts take tags from here */
	struct stage *stage; /* per pool node, kept between submissions */
	int epfd, evfd;      /* em_queue_fd's epoll set and eventfd, -1: none */
	bool ev_ready;       /* evfd is readable */
	/* redundancy.c: where replies nobody waits for go (stripe unlocks
	 * are posted and reaped with the next request), this queue's
	 * stripe-lock token (a new one for every lock taken) and when the
	 * request that took its last lock was sent (ns) */
	struct em_part sink;
	uint64_t lock_tok, lock_at;
	/* redundancy.c: a write or atomic was refused as stale (the node's
	 * fence, else 1); the operation reads the layouts again and redoes it */
	uint32_t fenced;
	/* The pager's queues (em_queue_no_redial) may not dial: the pool's
	 * reconnect thread dials their broken channels and hands each over
	 * here (health.c). want: the queue asks for channel i; fresh: one
	 * dialled into session fresh_sess, for the queue to take; spent: the
	 * broken one it replaced, for the thread to close (all three atomic).
	 * pager_next links the pool's list of them and dialing counts the
	 * thread's dials in progress for this queue (both under the pool
	 * lock). */
	bool pager;
	struct em_queue *pager_next;
	unsigned dialing;
	int want[EM_MAX_SEG];
	struct em_chan *fresh[EM_MAX_SEG], *spent[EM_MAX_SEG];
	uint64_t fresh_sess[EM_MAX_SEG];
};

/* Failpoint for tests (the static library's, never exported): nonzero makes
 * the Nth growth from now of a queue's staging array fail as a failed
 * realloc would, the one allocation em_submit can meet part-way. */
extern unsigned em_fail_stage_grow;

/* Posts one request on ch (tagged from q) and waits for its reply. */
int em_chan_call(em_queue *q, struct em_chan *ch, struct em_part *p);
void em_queue_mend(em_queue *q);

/* Called by a transport when a part completes (in post order). */
void em_part_done(struct em_chan *ch, struct em_part *p);

/* TCP transport: connects to a node and runs the challenge-response;
 * attach_session 0 creates a session, filling node->session/token/id. */
int em_tcp_connect(em_pool *pool, struct em_node *node, bool new_session, struct em_chan **out);
/* A channel on a socket that is already connected and authenticated (the
 * connect above, and the client fuzzer's socketpair); it owns fd after 0. */
int em_tcp_chan_fd(int fd, int timeout_ms, int poll_us, struct em_chan **out);
/* Opens an authenticated TCP connection in raw baseline mode (benchmark). */
int em_tcp_baseline_fd(em_pool *pool, unsigned node);

/* A node's status array as on the wire (EM_ST_*, the transport counters
 * included, which struct em_node_status has no room for). */
int em_status_raw(em_pool *pool, unsigned node, uint64_t v[EM_ST__COUNT]);
/* The region's layout as stored with a named region (wire.h). */
int em_region_layout(const em_region *r, uint8_t *out, size_t cap);
/* Ranks and counts from size, chunk, nseg, plen and pattern. */
void em_layout_derive(em_region *r);
/* Bytes segment `seg` of a region holds on its node. */
uint64_t em_seg_bytes(const em_region *r, unsigned seg);

int em_queue_create_on(em_pool *pool, unsigned depth, struct em_chan **chans, bool owns,
		       em_queue **out);
/* Runs one control request on the pool's default queue (pool lock held). */
int em_ctl_call(em_pool *pool, unsigned node, struct em_part *p);
/* The same, taking the pool lock; *res (may be NULL) gets the completed
 * part (resp_len, r_region, r_aux, r_off). */
int em_ctl(em_pool *pool, unsigned node, uint8_t wop, uint32_t handle, uint32_t aux, uint64_t off,
	   const void *req, uint32_t req_len, void *resp, uint32_t cap, struct em_part *res);

#include "lib/redundancy.h"

/* A channel that is already broken, standing for a node that did not
 * answer (the reconnect thread replaces it). */
int em_tcp_dead(em_pool *pool, struct em_chan **out);

/* Reconnects and membership (health.c). */
int em_health_start(em_pool *pool, const char *etcd, const char *cluster);
void em_health_stop(em_pool *pool);
/* With the pool lock held: 0 once node i's default channel is up, or
 * -EHOSTDOWN after the request timeout. */
int em_health_wait(em_pool *pool, unsigned i);
/* With the pool lock held: starts reconnecting if a default channel is
 * down (after a call that may have broken one). */
void em_health_kick(em_pool *pool);
/* The pager's queue q gets its broken channels from the reconnect thread,
 * which runs while the pool has such a queue (adopt: in the queue's
 * creating thread; unadopt: before it is freed, waits out a dial for it). */
void em_health_adopt(em_queue *q);
void em_health_unadopt(em_queue *q);
/* From the pager's fault handler: it set a want flag (takes no lock). */
void em_health_poke(em_pool *pool);
/* Node i's identity now (a reconnect to a node that restarted changes it). */
void em_node_id(em_pool *pool, unsigned i, uint8_t id[EM_NODE_ID_LEN]);
/* True when node i's default channel is down now (pool lock held). */
bool em_node_down(const em_pool *pool, unsigned i);

/* etcd mode (directory.c). */
struct em_dir;
struct em_region_rec;
struct em_node_rec;
int em_dir_open(em_pool *pool, const char *endpoints, const char *cluster, int timeout_ms);
void em_dir_close(em_pool *pool);
/* Calls fn for each registered node's record. */
int em_dir_walk_nodes(em_pool *pool, int (*fn)(void *arg, const struct em_node_rec *rec),
		      void *arg);
/* The registered nodes' addresses as a node list; returns how many. */
int em_dir_nodes(em_pool *pool, char *list, size_t cap);
/* Free bytes each pool node publishes (0: unregistered or draining). */
int em_dir_free(em_pool *pool, uint64_t *freeb);
/* A named region's record: 0, -ENOENT; *mod_rev (may be NULL) for delete. */
int em_dir_get(em_pool *pool, const char *name, struct em_region_rec *rec, int64_t *mod_rev);
/* Creates the record if the name is free: 0 or -EEXIST. */
int em_dir_create(em_pool *pool, const char *name, const struct em_region_rec *rec);
/* Deletes the record read at mod_rev: 0, or -ENOENT if it changed. */
int em_dir_delete(em_pool *pool, const char *name, int64_t mod_rev);
/* The pool node a record's segment s names (by identity), or -1. */
int em_dir_seg_node(em_pool *pool, const struct em_region_rec *rec, unsigned s);
/* Failpoint for tests (the static library's): nonzero makes the Nth
 * successful em_dir_update from now report -ETIMEDOUT, as when etcd
 * applied it and the answer was lost. */
extern unsigned em_fail_dir_update;
/* Updates a record still as read at mod_rev: 0, -ESTALE if it changed. */
int em_dir_update(em_pool *pool, const char *name, const struct em_region_rec *rec,
		  int64_t mod_rev);
/* The drain progress of node addr (a JSON object; NULL removes it). */
int em_dir_drain_note(em_pool *pool, const char *addr, const char *json);
/* A part a drain made and could not remove (its node out of reach): noted
 * in etcd (region: the region it was made for; NULL removes the note), and
 * the notes read back, up to max, for a later drain to remove the parts. */
struct em_orphan {
	char addr[80], piece[64], region[EM_NAME_MAX + 1];
};
int em_dir_orphan_note(em_pool *pool, const char *addr, const char *piece, const char *region);
int em_dir_orphans(em_pool *pool, struct em_orphan *o, unsigned max);
/* Named regions from the directory into the caller's array of stride
 * `stride` (see em_region_list). */
int em_dir_list(em_pool *pool, struct em_region_info *info, unsigned max, size_t stride);
/* The repair lock of a redundant region: repair/NAME created under a
 * lease of ttl_s seconds; -EALREADY while another client holds it. */
struct em_dir_lock;
int em_dir_lock(em_pool *pool, const char *name, int ttl_s, struct em_dir_lock **out);
/* 0 while the lock's lease lives (a thread renews it every third of its
 * TTL from the moment the lock is taken), -ETIMEDOUT once a renewal failed
 * (the lock may be another's now: stop). */
int em_dir_lock_keep(struct em_dir_lock *l);
/* Stores the repair's progress in the lock's value (under its lease), for
 * other processes' listings. */
int em_dir_lock_note(struct em_dir_lock *l, uint64_t done, uint64_t total);
int64_t em_dir_lock_id(const struct em_dir_lock *l);
void em_dir_unlock(struct em_dir_lock *l);
/* Writes `next` as the region's record if the record's layout epoch is
 * older than next's (compare-and-put on the record as read): 0, -ESTALE
 * otherwise. */
int em_dir_relayout(struct em_dir_lock *l, em_pool *pool, const char *name,
		    const struct em_region_rec *next);
/* A loss a client recorded in the parts' layouts (redundancy.c): next's
 * segments (a lost one's id all zeros) and layout epoch go into the record
 * unless its layout epoch is as new already; the rest of the record stays.
 * On an etcd client of its own, so any thread may call it. 0 or -errno. */
int em_dir_record_loss(em_pool *pool, const char *name, const struct em_region_rec *next);

/* Changing a region in use (pool lock held, stores atomic): readers that
 * see lseq odd, or changed across their reads, read again. */
static inline void em_layout_begin(struct em_region *r)
{
	__atomic_add_fetch(&r->lseq, 1, __ATOMIC_ACQ_REL);
}

static inline void em_layout_end(struct em_region *r)
{
	__atomic_add_fetch(&r->lseq, 1, __ATOMIC_RELEASE);
}

/* Drains (drain.c). With the pool lock held, after a part answered
 * EM_ESTALE: opens the parts that moved by the record's newer epoch; 0,
 * -EAGAIN while the record still has the old one, or -errno. */
int em_drain_refresh(em_region *r);
/* With the pool lock held: closes the retired handles whose grace is over
 * (all of them with `all`). */
void em_drain_sweep(em_pool *pool, bool all);
/* With the pool lock held, after a new session on node: the retired
 * handles there were the old session's (and may name new ones now). */
void em_drain_forget(em_pool *pool, unsigned node);
/* Follows the record of named region `name` in every open handle of the
 * pool (the etcd watch, when the record changes). */
void em_drain_follow(em_pool *pool, const char *name);
/* With the pool lock held, by the reconnect thread: the handles the watch
 * could not bring up to date (a node it needed was being dialled again)
 * try again, for the pager, which cannot follow a record itself. */
void em_drain_refollow(em_pool *pool);
/* Moves every named region's parts off node `addr` to other nodes, the
 * node refusing new regions from the start; progress (may be NULL) gets
 * bytes moved and the total after each part. Returns parts moved. */
int em_drain_node(em_pool *pool, const char *addr,
		  void (*progress)(void *arg, uint64_t done, uint64_t total, const char *region),
		  void *arg);

#endif
