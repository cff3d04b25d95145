/*
 * The two places where libemkv decides what to believe of bytes read from
 * the pool, as functions of those bytes alone, so that a fuzzer can drive
 * them without a node: the store's header (its geometry, which every later
 * offset is computed from) and a set of directory entries (which entry holds
 * a key, and whether its length can be read into the caller's buffer).
 * Internal to libemkv and its fuzz target.
 */
#ifndef EM_KVSTORE_DEC_H
#define EM_KVSTORE_DEC_H

#include <stddef.h>
#include <stdint.h>

#include "llm/kvstore.h"

struct kv_geom {
	uint64_t sets, ways, vmax, slot, dir, data;
};

/* h: the region's first 8 words; size: the region's size.  0 and g filled
 * when the header describes a store that fits in the region (every entry
 * and every slot inside it), -EAGAIN when its creator has not finished,
 * -EPROTO otherwise. */
int kv_decode_header(const uint64_t h[8], uint64_t size, struct kv_geom *g);

/* set: the g->ways entries (8 words each) of k's set.  The length of k's
 * value and its way in *way, -ENOENT when no valid entry holds k, -EBADMSG
 * when the entry's length exceeds the store's value_max, -EMSGSIZE when it
 * exceeds cap. */
int kv_decode_find(const struct kv_geom *g, const uint64_t *set, const struct em_kv_key *k,
		   size_t cap, uint64_t *way);

#endif
