/*
 * pager_io.h - the library's private interface to the pager (src/map), and
 * the only header of src/lib that src/map includes. Never installed.
 *
 * The pager drives the pool through the public API: each engine channel is
 * an em_queue and a fetch or write-back is an em_op, posted and reaped with
 * em_submit/em_poll/em_wait, also from its SIGBUS handler. That is sound
 * because a queue created with room for its full depth allocates nothing on
 * those calls and the handler runs only at an application load or store,
 * never inside the library. A redundant region's operation runs to its end
 * inside em_submit (redundancy.c); its replicated reads and writes and its
 * healthy erasure-coded reads (of up to 24 cells) keep their requests on
 * the stack, so they too allocate nothing, and a read fails over to the
 * next live copy there. Erasure-coded writes, and reads that must rebuild
 * from parity, use buffers the handle made when the region was mapped
 * (em_region_map_prepare), one operation at a time per handle.
 * What the public API does not give is the two
 * facts below, which em_map needs to fill in its defaults, and a hook that
 * tells the pager a pool is closing; they are kept here rather than in
 * ethermem.h because no program has asked for them and every public call is
 * a promise the ABI must keep.
 */
#ifndef EM_PAGER_IO_H
#define EM_PAGER_IO_H

#include "ethermem.h"

/* The region's name for log lines, or "(anonymous region)". */
const char *em_region_label(const em_region *region);
/* The pool's per-request timeout in milliseconds (em_pool_opts.timeout_ms,
 * ETHERMEM_TIMEOUT_MS or the config file, else the default): a mapping's
 * fetches wait that long unless em_map_opts.timeout_ms says otherwise. */
int em_pool_timeout_ms(const em_pool *pool);

/* Called by em_map before it maps `region`, whose fetches and write-backs
 * are at most max_op bytes: a redundant region makes its buffers now, so
 * the fault handler takes none from malloc. 0 or -errno. */
int em_region_map_prepare(em_region *region, uint64_t max_op);

/* Keeps em_submit on this queue from dialling (a node that joined, a
 * broken channel): the pager submits from its SIGBUS handler, where a
 * connect and its allocations are not safe. Its parts for a node that
 * joined fail. A broken channel is dialled again by the pool's reconnect
 * thread, which runs while the pool has such a queue, and taken over by
 * the queue; an operation whose connection broke waits for that up to the
 * request timeout and is sent again, as on other queues. Nor does the
 * queue read etcd when a
 * drain moved a part: its operations wait for the pool's etcd watch to
 * follow the record, then go out again. */
void em_queue_no_redial(em_queue *q);

/* Set by the pager when it first maps a region of some pool, and called
 * first thing by em_pool_close: the channels (em_queues) the pager opened
 * on the pool must close before the pool is freed, or a later pool at the
 * same address would find them, over a session that is gone. Set and read
 * atomically. */
extern void (*em_pool_close_hook)(em_pool *pool);

#endif
