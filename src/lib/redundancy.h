/*
 * redundancy.h - the hooks pool.c and queue.c call for regions whose layout
 * asks for copies (replicate:N) or erasure coding (ec:K+M). Everything about
 * how such a region is placed, read, written and repaired is in
 * redundancy.c (and the coding in ec.c); the rest of the library only asks
 * "is it redundant?" and hands the work over. Included at the end of
 * internal.h, never on its own.
 */
#ifndef EM_LIB_REDUNDANCY_H
#define EM_LIB_REDUNDANCY_H

#include <stdbool.h>
#include <stdint.h>

struct em_region;
struct em_queue;
struct em_op;

/* Parses the config file's `redundancy` value into the pool's default. */
int em_red_conf(const char *s, uint8_t *red, uint8_t *k, uint8_t *m);
/* Chooses k (+ m) distinct nodes for a new redundant region, the ones with
 * the most free memory, and fills its segments; freeb[] is per pool node. */
int em_red_place(struct em_region *r, uint64_t cell, const uint64_t *freeb);
/* Bytes segment `seg` of a redundant region holds on its node. */
uint64_t em_red_seg_bytes(const struct em_region *r, unsigned seg);
/* Runs one operation on a redundant region to its end, on queue q's
 * channels, failing over and reconstructing as needed. Returns 0 or
 * -errno; *value gets an atomic's old value. */
int em_red_exec(struct em_queue *q, const struct em_op *op, uint64_t *value);
/* Runs ops[0..n) of one submission, in order, as em_red_exec does each;
 * consecutive reads (or writes) of one replicated region are posted
 * together before any is waited for. rc[i] and value[i] get each one's
 * result and atomic value. */
void em_red_exec_many(struct em_queue *q, const struct em_op *const *ops, unsigned n, int *rc,
		      uint64_t *value);
/* Makes, before a redundant region is mapped, what the pager's operations
 * of up to max_op bytes need so that they take nothing from malloc in the
 * fault handler (EC: the coder, buffers, requests). 0 or -ENOMEM. */
int em_red_map_prepare(struct em_region *r, uint64_t max_op);
/* A handle's redundancy state (the coder, the repair thread): made when
 * the handle is created or opened, freed (its repair stopped) on close. */
int em_red_attach(struct em_region *r);
void em_red_detach(struct em_region *r);
/* The region's state as this handle sees it (enum em_region_state). */
unsigned em_red_state(const struct em_region *r);
/* Bytes rebuilt so far, and in all, of the repair this handle runs (0 and
 * 0 when it runs none). */
void em_red_progress(const struct em_region *r, uint64_t *done, uint64_t *total);

/* An error that says a node is not there (down, unreachable, its
 * connection broken), as opposed to one it answered. */
bool em_red_unreachable(int err);
/* A drain: cuts r's part on `node` (pool index) off (EM_MV_GONE: every
 * client takes it for lost) and rebuilds it elsewhere by a repair. Returns
 * the parts moved (0: none there), or -errno. The old part stays on the
 * node for the caller to delete. */
int em_red_evict(struct em_region *r, unsigned node);

/* Witnesses (static node list, replicate:N): the name under which a node
 * keeps a region's loss records beside (or instead of) a copy, and whether
 * a name is one, which no region may take. */
void em_witness_name(const char *name, char *out); /* out: EM_NAME_MAX + 1 bytes */
bool em_is_witness_name(const char *name);
/* At open, before attach: reads the witnesses of r (a named region on a
 * static list) and takes the losses they recorded after r's layout; -EM_ELOST
 * when too few answer to tell, or no copy is left current. */
int em_red_witness_open(struct em_region *r);

/* Erasure coding (ec.c, over ISA-L). */
struct em_ec;
int em_ec_create(unsigned k, unsigned m, struct em_ec **out);
void em_ec_destroy(struct em_ec *ec);
/* parity[0..m) of len bytes from data[0..k). */
void em_ec_encode(struct em_ec *ec, size_t len, uint8_t **data, uint8_t **parity);
/* Rebuilds the chunks not in `have` (a bitmask over k + m chunks, at least
 * k set) from k of those that are: chunk[i] points at len bytes for every i,
 * the missing ones are written. 0 or -EINVAL (fewer than k present). */
int em_ec_rebuild(struct em_ec *ec, size_t len, uint8_t **chunk, uint64_t have);

/* Included by internal.h after struct em_region. */
static inline bool em_red_on(const struct em_region *r)
{
	return r->red == EM_RED_REPLICATE || r->red == EM_RED_EC;
}

#endif
