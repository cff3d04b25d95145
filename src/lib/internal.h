/*
 * internal.h - libethermem's private structures, shared by its files and by
 * in-tree tools (the benchmark, the paging layer). Never installed.
 *
 * A queue posts "parts" - one wire request each - to per-node channels. A
 * channel is a transport behind a table of operations (TCP today; OmniXtend
 * raw Ethernet plugs in beside it). Channels complete parts in the order they
 * were posted, which is what lets the TCP transport receive read data
 * straight into the caller's buffer.
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
};

struct em_chan {
	const struct em_chan_ops *ops;
	struct em_queue *q;      /* whose slots the parts complete */
	unsigned outstanding;    /* parts posted and not completed */
	int timeout_ms;
	bool broken;
};

struct em_node {
	char addr[80];
	char host[64];
	uint16_t port;
	uint8_t id[EM_NODE_ID_LEN];
	uint64_t session;
	uint8_t token[EM_TOKEN_LEN];
};

struct em_pool {
	unsigned n;
	struct em_node *nodes;
	uint8_t key[EM_KEY_LEN];
	int timeout_ms;
	enum em_transport transport;
	pthread_mutex_t lock;    /* the default queue, control calls */
	struct em_queue *dq;     /* over the session's first connections */
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
};

struct em_slot {
	uint64_t user_data;
	int result;
	uint64_t value;
	unsigned pending;
	uint8_t opcode;
	struct em_slot *next_free;
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
};

/* Called by a transport when a part completes (in post order). */
void em_part_done(struct em_chan *ch, struct em_part *p);

/* TCP transport: connects to a node and runs the challenge-response;
 * attach_session 0 creates a session, filling node->session/token/id. */
int em_tcp_connect(em_pool *pool, struct em_node *node, bool new_session,
		   struct em_chan **out);
/* Opens an authenticated TCP connection in raw baseline mode (benchmark). */
int em_tcp_baseline_fd(em_pool *pool, unsigned node);

int em_queue_create_on(em_pool *pool, unsigned depth, struct em_chan **chans,
		       bool owns, em_queue **out);
/* Runs one control request on the pool's default queue (pool lock held). */
int em_ctl_call(em_pool *pool, unsigned node, struct em_part *p);

#endif
