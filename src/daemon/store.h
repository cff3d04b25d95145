/*
 * store.h - the memory a node exports, and the regions carved from it.
 *
 * The store reserves its whole capacity once at start (explicit huge pages
 * when the machine has them reserved, else 4 KiB pages with THP advice) and
 * hands out page-aligned extents first-fit. Regions are reference counted:
 * every open handle and the name table each hold a reference, so deleting a
 * named region behaves like unlink(2) - clients that still have it open keep
 * working, and the memory returns to the pool when the last handle closes.
 * Freed memory is zeroed before reuse so one client never sees another's data.
 */
#ifndef EM_STORE_H
#define EM_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "ethermem.h"
#include "common/wire.h"

struct em_store;

struct em_sregion {
	char name[EM_NAME_MAX + 1]; /* "" for anonymous */
	uint64_t size;              /* bytes the client asked for */
	uint8_t *mem;
	uint64_t arena_off, alloc_len;
	uint16_t layout_len;
	uint8_t layout[EM_MAX_LAYOUT];
	int refs;    /* under the store lock */
	bool linked; /* in the name table */
	/* a drain moving it (enum em_move_state), and writes under way, so
	 * that a freeze waits for them: both atomic */
	int mstate, writers;
	uint32_t fence; /* lowest layout version a write may carry (atomic) */
	/* who raised it (a repairer's token) and when it last said it is
	 * still at work (monotonic ns): another repairer takes over a fence
	 * whose holder stopped touching it (both atomic) */
	uint64_t fence_owner, fence_at;
	/* how far a repair's copy has read or written it (EM_WF_COPY, atomic) */
	uint64_t copy_cur;
	struct em_sregion *next; /* name table chain */
};

struct em_store_stats {
	uint64_t capacity, used;
	uint32_t regions, named;
	bool huge;
};

int em_store_create(struct em_store **out, uint64_t capacity, bool lock_memory);
void em_store_destroy(struct em_store *st);
/* Creates (name NULL: anonymous) or, without EM_WC_EXCL and with an equal
 * size, opens a named region. Returns with one reference for the caller. */
int em_store_create_region(struct em_store *st, const char *name, uint64_t size, unsigned flags,
			   const void *layout, uint16_t layout_len, struct em_sregion **out);
int em_store_open(struct em_store *st, const char *name, struct em_sregion **out);
int em_store_unlink(struct em_store *st, const char *name);
/* Another reference to a region the caller holds one to (a reply still
 * being sent from its memory). */
void em_store_hold(struct em_store *st, struct em_sregion *r);
void em_store_put(struct em_store *st, struct em_sregion *r);
void em_store_stats(struct em_store *st, struct em_store_stats *s);
/* Calls cb for named regions from index `first`; cb returns non-zero to stop.
 * Returns the number of named regions. */
int em_store_list(struct em_store *st, uint64_t first,
		  int (*cb)(void *arg, const struct em_sregion *r), void *arg);

#endif
