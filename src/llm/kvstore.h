/*
 * kvstore.h - a store of immutable blocks in the pool, by 128-bit key, shared
 * by every process that names it (libemkv).
 *
 * What it is for: a value computed once (an LLM's KV cache for a prompt
 * prefix is the case it was built for) is put by whoever computed it and got
 * by any other process on any server of the cluster, instead of being
 * recomputed.  Values are immutable: a key, once present, keeps its value
 * until evicted; a second put of a present key is refused as "present"
 * (first writer wins).  Everything lives in one named region of the pool,
 * striped over its nodes like any region: a header, a directory of fixed
 * 64-byte entries, and one fixed-size slot per entry.  There is no server
 * and no lock: writers claim entries with the pool's compare-and-swap, and
 * readers verify what they read (a checksum of the value is kept in its
 * entry), so a reader racing an eviction, a half-written value or a
 * corrupted slot reads as a miss, never as wrong bytes.
 *
 * Capacity and eviction: the directory is set-associative (EM_KV_WAYS
 * entries per set, the set chosen by the key); a put into a full set evicts
 * the entry of that set used least recently (a get stamps its entry with a
 * pool-wide clock).  So eviction is LRU within each set, as in a CPU cache,
 * which needs no shared list to maintain.
 *
 * Where its directory lives, and why there: in the store's own region, next
 * to the values, claimed and stamped with the pool's atomics.  A directory
 * in etcd would need etcd, which a pool need not have (a static node list
 * is enough to run one); one in the region needs nothing the pool does not
 * already offer, costs one round trip per lookup to the node that holds it,
 * and shares the region's fate: what survives the loss of a node survives
 * it for the directory and the values alike.
 *
 * Several nodes and redundancy: the region is created like any other, so it
 * is striped over the pool's nodes (redundancy none), or kept as N whole
 * copies on N nodes (replicate:N: every value, entry and counter survives
 * N-1 dead nodes; a put, get and exists keep working with a copy gone, the
 * claims staying first-writer-wins because the library orders a replicated
 * atomic on one copy and follows it on the others).  The redundancy is the
 * pool's default (config `redundancy`, ETHERMEM_REDUNDANCY) unless
 * em_kv_opts.region names one.  EC regions refuse atomics, so a store can
 * not live in one: creating it there, or opening such a region, gives
 * -EOPNOTSUPP.  Repairing a store's region while other processes write it
 * is the library's general caveat (they keep the old layout until they
 * reopen): turn ETHERMEM_AUTO_REPAIR off for processes sharing a store, or
 * repair when they are idle.
 *
 * Conventions are libethermem's: 0, a count, or -errno; the structs start
 * with their size, set by the caller.  Not thread-safe per
 * handle (each thread opens its own, or serialises); any number of handles
 * in any number of processes may use one store at once.
 */
#ifndef ETHERMEM_KVSTORE_H
#define ETHERMEM_KVSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "ethermem.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct em_kv em_kv;

struct em_kv_key {
	uint64_t k[2];
};

#define EM_KV_WAYS 8

struct em_kv_opts {
	size_t size;        /* sizeof(struct em_kv_opts) */
	uint64_t capacity;  /* bytes of values when creating; 0: 64 MiB */
	uint32_t value_max; /* largest value, bytes, when creating; 0: 64 KiB */
	int create;         /* create the store if it does not exist */
	/* When creating: the region's redundancy and chunk size (flags are
	 * ignored); NULL: the pool's default.  EC: -EOPNOTSUPP. */
	const struct em_region_opts *region;
};

/* Opens the store in region `name` of the pool (creating it if asked and
 * absent; an existing store keeps its own geometry, the options are then
 * ignored).  -ENOENT: absent and not asked to create; -EPROTO: the region
 * is not a store; -EOPNOTSUPP: the region is (or would be) EC. */
int em_kv_open(em_pool *pool, const char *name, const struct em_kv_opts *opts, em_kv **out);
void em_kv_close(em_kv *kv);
/* Largest value the store holds. */
uint32_t em_kv_value_max(const em_kv *kv);

/* 0 stored; 1 already present (or being written by another process: the
 * first writer wins); -EMSGSIZE longer than the value maximum; -EBUSY every
 * entry of the key's set is being written just now. */
int em_kv_put(em_kv *kv, const struct em_kv_key *key, const void *buf, size_t len);

/* Gets n values at once (a few round trips for the whole batch): res[i] is
 * the value's length, -ENOENT when absent (or evicted while being read),
 * -EBADMSG when the bytes read do not match their checksum, -EMSGSIZE when
 * larger than cap.  Returns 0, or -errno when the pool failed (then no
 * res[i] can be trusted). */
int em_kv_get_batch(em_kv *kv, unsigned n, const struct em_kv_key *keys, void *const *bufs,
		    size_t cap, int *res);
/* One value: its length or the -errno res[] would hold. */
int em_kv_get(em_kv *kv, const struct em_kv_key *key, void *buf, size_t cap);
/* 1 present, 0 absent. */
int em_kv_exists(em_kv *kv, const struct em_kv_key *key);

struct em_kv_stats {
	size_t size;                 /* sizeof(struct em_kv_stats), set by the caller */
	uint64_t entries, value_max; /* geometry */
	uint64_t used;               /* entries holding a value now */
	uint64_t bytes;              /* bytes of those values */
	uint64_t hits, misses;       /* gets, pool-wide, since creation */
	uint64_t puts, present;      /* puts stored / refused as present */
	uint64_t evictions, corrupt; /* values evicted / gets failing their checksum */
};
/* Counters of the store (reads the whole directory: not for hot paths). */
int em_kv_stats(em_kv *kv, struct em_kv_stats *st);

/* The store's 128-bit hash (not cryptographic), offered for making keys:
 * hash what identifies a value, with a seed to chain or separate uses. */
void em_kv_hash(const void *data, size_t len, uint64_t seed, struct em_kv_key *out);

#ifdef __cplusplus
}
#endif
#endif
