/*
 * internal.h - libethermem's private structures, shared by its files and by
 * in-tree tools (the benchmark, the paging layer). Never installed.
 *
 * A queue posts "parts" - one wire request each - to per-node channels. A
 * channel is a transport behind a table of operations: TCP (tcp.c), or
 * OmniXtend over raw Ethernet (ox_chan.c), which wraps a TCP channel and
 * sends reads, writes and TL-UH atomics as TileLink frames while control
 * requests and compare-and-swap stay on TCP. The TCP channel completes
 * parts in the order they were posted, which is what lets it receive read
 * data straight into the caller's buffer; the OmniXtend channel completes
 * them as their responses arrive.
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
	struct em_slot *slot;  /* NULL for control calls */
	struct em_part *origin; /* control calls: where the result goes */
	uint64_t tag;
	uint8_t wop;           /* enum em_wire_op */
	uint32_t handle, aux;
	uint64_t off;
	const void *req;       /* request payload */
	uint32_t req_len;
	void *resp;            /* response payload destination */
	uint32_t resp_cap;
	uint8_t inl[16];       /* atomics: operands out, old value back */
	uint64_t oxaddr;       /* OmniXtend address of `off`, 0: not over OmniXtend */
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
	struct em_queue *q;      /* whose slots the parts complete */
	unsigned outstanding;    /* parts posted and not completed */
	int timeout_ms;
	int poll_us;             /* spin this long for a reply before sleeping */
	bool broken;
};

struct em_node {
	char addr[80];
	char host[64];
	uint16_t port;
	uint8_t id[EM_NODE_ID_LEN];
	uint64_t session;
	uint8_t token[EM_TOKEN_LEN];
	struct em_oxnode *ox;    /* EM_TRANSPORT_OX: the node's OmniXtend connection */
};

struct em_pool {
	unsigned n;
	struct em_node *nodes;
	uint8_t key[EM_KEY_LEN];
	int timeout_ms;
	int poll_us;
	enum em_transport transport; /* TCP or OX, resolved */
	char ox_iface[64];
	pthread_mutex_t lock;    /* the default queue, control calls */
	struct em_queue *dq;     /* over the session's first connections */
	struct em_region *regions; /* open handles, freed by em_pool_close */
};

#define EM_MAX_PATTERN 64
#define EM_MAX_SEG 64 /* nodes one region may span */

struct em_region {
	em_pool *pool;
	uint64_t size, chunk;
	unsigned nseg;            /* nodes holding a part */
	unsigned node[EM_MAX_SEG];    /* pool node index, per segment */
	uint32_t handle[EM_MAX_SEG];  /* node-local handle, per segment */
	unsigned plen;
	uint8_t pattern[EM_MAX_PATTERN]; /* chunk i lives on segment pattern[i % plen] */
	uint32_t rank[EM_MAX_PATTERN];   /* chunks before it in the period on its segment */
	uint32_t cnt[EM_MAX_PATTERN];    /* chunks per period, per segment */
	char name[EM_NAME_MAX + 1];
	bool named;
	uint64_t oxbase[EM_MAX_SEG]; /* OmniXtend window of each segment, 0: none */
	struct em_region *next, *prev; /* the pool's list of open handles */
};

struct em_slot {
	uint64_t user_data;
	int result;
	uint64_t value;
	unsigned pending;
	uint8_t opcode;
	struct em_slot *next_free;
};

/* Parts gathered for one node during a submission. */
struct stage {
	struct em_part *p;
	unsigned n, cap;
};

struct em_queue {
	em_pool *pool;
	unsigned depth, inflight;
	struct em_chan **ch;       /* per pool node */
	bool owns_chans;
	struct em_slot *slots, *free_slots;
	struct em_completion *cq;
	unsigned cq_head, cq_count;
	uint64_t next_tag;
	struct stage *stage;       /* per pool node, kept between submissions */
	int epfd, evfd;            /* em_queue_fd's epoll set and eventfd, -1: none */
	bool ev_ready;             /* evfd is readable */
};

/* Failpoint for tests (the static library's, never exported): nonzero makes
 * the Nth growth from now of a queue's staging array fail as a failed
 * realloc would, the one allocation em_submit can meet part-way. */
extern unsigned em_fail_stage_grow;

/* Called by a transport when a part completes (in post order). */
void em_part_done(struct em_chan *ch, struct em_part *p);

/* TCP transport: connects to a node and runs the challenge-response;
 * attach_session 0 creates a session, filling node->session/token/id. */
int em_tcp_connect(em_pool *pool, struct em_node *node, bool new_session,
		   struct em_chan **out);
/* Opens an authenticated TCP connection in raw baseline mode (benchmark). */
int em_tcp_baseline_fd(em_pool *pool, unsigned node);

/* OmniXtend (ox_chan.c). One connection per pool node, shared by every
 * queue of the pool: the node keys OmniXtend state on the MAC pair, so two
 * requesters behind one MAC would break each other's go-back-N. */
/* Opens the interface for node i; *mac is ours, for EM_W_OX_ATTACH. */
int em_ox_node_open(em_pool *pool, unsigned i, uint8_t mac[6]);
/* Starts the requester with what the node answered. */
int em_ox_node_start(em_pool *pool, unsigned i, const struct em_ox_info *info);
/* Ends the node's OmniXtend connection (1.1 close) if nothing is in flight. */
void em_ox_node_quiesce(struct em_node *n);
void em_ox_node_close(struct em_node *n);
/* A node's status array as on the wire (EM_ST_*, the OmniXtend counters
 * included, which struct em_node_status has no room for). */
int em_status_raw(em_pool *pool, unsigned node, uint64_t v[EM_ST__COUNT]);
/* Wraps a TCP channel to node i into an OmniXtend one (owning it). */
int em_ox_chan_wrap(em_pool *pool, unsigned i, struct em_chan *tcp, struct em_chan **out);
/* Raw Ethernet ping-pong with node i's echo responder on the same
 * interface (the benchmark's baseline; the node answers attached MACs only). */
struct em_ox_echo;
int em_ox_echo_open(em_pool *pool, unsigned i, struct em_ox_echo **out);
/* Largest reply payload one frame carries. */
int em_ox_echo_max(const struct em_ox_echo *e);
int em_ox_echo_ping(struct em_ox_echo *e, size_t size, int timeout_ms);
void em_ox_echo_close(struct em_ox_echo *e);

int em_queue_create_on(em_pool *pool, unsigned depth, struct em_chan **chans,
		       bool owns, em_queue **out);
/* Runs one control request on the pool's default queue (pool lock held). */
int em_ctl_call(em_pool *pool, unsigned node, struct em_part *p);

#endif
