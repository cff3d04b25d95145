/*
 * memroom.h - how much memory this node can really back: the machine's
 * MemAvailable, explicit huge pages that are free, and the room left under
 * the memory limit of the node's cgroup (v1 or v2, every level up to the
 * root). The node refuses a capacity it cannot hold rather than be killed
 * for it mid-write.
 */
#ifndef EM_MEMROOM_H
#define EM_MEMROOM_H

#include <stdbool.h>
#include <stdint.h>

struct em_memroom {
	uint64_t avail;     /* MemAvailable */
	uint64_t total;     /* MemTotal */
	uint64_t huge_free; /* free explicit huge pages, bytes */
	bool cg_limited;    /* some cgroup level has a memory limit */
	uint64_t cg_limit;  /* the tightest level's limit ... */
	uint64_t cg_usage;  /* ... and what is charged to it */
	char cg_path[512];  /* that level's directory */
};

/* Fills r; 0, or -errno when /proc/meminfo cannot be read. */
int em_memroom_read(struct em_memroom *r);
/* Bytes the node can still back with ordinary pages. */
uint64_t em_memroom_room(const struct em_memroom *r);

#endif
