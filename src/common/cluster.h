/*
 * cluster.h - what ethermem keeps in etcd, and how it is written.
 *
 * Everything of one pool lives under /ethermem/CLUSTER/:
 *   nodes/HOST:PORT   a memory node's record, under the node's lease (the
 *                     key vanishes when the node stops renewing it);
 *   regions/NAME      a named region's layout, created by one transaction
 *                     so that one name has one region;
 *   drain/HOST:PORT   a drain's progress on that node;
 *   orphans/HOST:PORT/PIECE  a part a failed move made there and could not
 *                     remove (value: its region's name), until a later
 *                     drain removes it;
 *   repair/NAME       held by the one client repairing a redundant region,
 *                     under that client's lease (gone when it dies).
 * Values are small JSON objects (read back with the in-place reader of
 * etcd.h), so `etcdctl get --prefix /ethermem/` is readable by people.
 * Internal; never installed.
 */
#ifndef EM_CLUSTER_H
#define EM_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#define EM_CLUSTER_DEFAULT "ethermem"
#define EM_CLUSTER_MAX_SEG 64
#define EM_CLUSTER_MAX_PATTERN 64

/* "/ethermem/CLUSTER/KIND/" into out; -EINVAL for a cluster name that is
 * not 1-64 of [A-Za-z0-9._-]. */
int em_cluster_prefix(char *out, size_t cap, const char *cluster, const char *kind);

struct em_node_rec {
	char addr[80]; /* tcp://HOST:PORT, as clients connect */
	char id[33];   /* the node's identity, hex; new at every start */
	uint64_t capacity, free;
	char transports[32]; /* "tcp" or "tcp,ox" */
	char ox_mac[18];     /* OmniXtend interface MAC, "" without */
	char version[16];
	char state[16];        /* "up" or "draining" */
	uint64_t heartbeat_ms; /* wall clock of the last update, ms since 1970 */
	uint64_t started_ms;
};
int em_node_rec_encode(const struct em_node_rec *r, char *out, size_t cap);
int em_node_rec_decode(const void *json, size_t len, struct em_node_rec *r);

struct em_region_rec {
	uint64_t size, chunk, epoch;
	char piece[64]; /* the name its pieces carry on the nodes */
	unsigned nseg, plen;
	char seg_addr[EM_CLUSTER_MAX_SEG][80];
	uint8_t seg_id[EM_CLUSTER_MAX_SEG][16];
	/* a part a drain moved has a name of its own there; "": piece */
	char seg_piece[EM_CLUSTER_MAX_SEG][64];
	uint8_t pattern[EM_CLUSTER_MAX_PATTERN]; /* chunk i on segment pattern[i % plen] */
	/* A redundant region (enum em_redundancy; 0 or EM_RED_NONE: plain):
	 * segment s is copy s, or cell s of every stripe (data, then parity),
	 * every part under `piece`; lepoch is the layout epoch its repairs
	 * move (the parts' own layouts carry it too). */
	uint8_t red, red_k, red_m;
	uint32_t lepoch;
};
/* Returns the length written, -ENOSPC if cap is too small. */
int em_region_rec_encode(const struct em_region_rec *r, char *out, size_t cap);
/* Checks what a layout needs to be usable (-EPROTO otherwise). */
int em_region_rec_decode(const void *json, size_t len, struct em_region_rec *r);

/* The name segment s's part carries on its node. */
const char *em_region_rec_piece(const struct em_region_rec *r, unsigned s);

uint64_t em_wall_ms(void);

#endif
