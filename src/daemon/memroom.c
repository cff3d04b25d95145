/*
 * memroom.c - the figures of memroom.h, from /proc and the cgroup files.
 * A cgroup's room is its limit less what is charged to it; the tightest
 * level between the node's own cgroup and the root decides.
 */
#include "daemon/memroom.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* A limit at or above this means "no limit" (v1 writes 2^63 rounded to a page). */
#define NO_LIMIT (1ull << 60)

static int read_u64(const char *dir, const char *file, uint64_t *v)
{
	char path[512], buf[64];
	int n;

	/* a path that does not fit names no file we could read */
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, file) >= sizeof(path))
		return -ENAMETOOLONG;
	n = em_read_small_file(path, buf, sizeof(buf) - 1);
	if (n <= 0)
		return -ENOENT;
	buf[n] = 0;
	if (!strncmp(buf, "max", 3)) {
		*v = UINT64_MAX;
		return 0;
	}
	*v = strtoull(buf, NULL, 10);
	return 0;
}

/* Walks from the cgroup directory dir up to root, keeping the tightest room. */
static void walk(struct em_memroom *r, const char *root, const char *rel, const char *limit_file,
		 const char *usage_file)
{
	char dir[512];

	snprintf(dir, sizeof(dir), "%s%s", root, rel);
	for (;;) {
		uint64_t lim, use = 0;
		char *slash;

		if (read_u64(dir, limit_file, &lim) == 0 && lim < NO_LIMIT) {
			read_u64(dir, usage_file, &use);
			if (!r->cg_limited ||
			    (lim > use ? lim - use : 0) <
				    (r->cg_limit > r->cg_usage ? r->cg_limit - r->cg_usage : 0)) {
				r->cg_limited = true;
				r->cg_limit = lim;
				r->cg_usage = use;
				snprintf(r->cg_path, sizeof(r->cg_path), "%s", dir);
			}
		}
		if (strlen(dir) <= strlen(root))
			break;
		slash = strrchr(dir, '/');
		if (!slash || slash < dir + strlen(root))
			break;
		*slash = 0;
	}
}

static void cgroups(struct em_memroom *r)
{
	char line[1024];
	FILE *f = fopen("/proc/self/cgroup", "r");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *ctl = strchr(line, ':'), *path;

		if (!ctl || !(path = strchr(ctl + 1, ':')))
			continue;
		*path++ = 0;
		path[strcspn(path, "\n")] = 0;
		ctl++;
		if (!*ctl) /* v2: "0::/path" */
			walk(r, "/sys/fs/cgroup", path, "memory.max", "memory.current");
		else if (strstr(ctl, "memory")) {
			/* v1: "N:memory:/path", possibly with other controllers */
			char *tok, *save;
			for (tok = strtok_r(ctl, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
				if (!strcmp(tok, "memory"))
					walk(r, "/sys/fs/cgroup/memory", path,
					     "memory.limit_in_bytes", "memory.usage_in_bytes");
		}
	}
	fclose(f);
}

int em_memroom_read(struct em_memroom *r)
{
	char line[256];
	uint64_t huge_pages = 0, huge_size = 0;
	bool have = false;
	FILE *f = fopen("/proc/meminfo", "r");

	memset(r, 0, sizeof(*r));
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long v;
		if (sscanf(line, "MemAvailable: %llu kB", &v) == 1)
			r->avail = v << 10, have = true;
		else if (sscanf(line, "MemTotal: %llu kB", &v) == 1)
			r->total = v << 10;
		else if (sscanf(line, "HugePages_Free: %llu", &v) == 1)
			huge_pages = v;
		else if (sscanf(line, "Hugepagesize: %llu kB", &v) == 1)
			huge_size = v << 10;
	}
	fclose(f);
	if (!have)
		return -ENOENT;
	r->huge_free = huge_pages * huge_size;
	cgroups(r);
	return 0;
}

uint64_t em_memroom_room(const struct em_memroom *r)
{
	uint64_t room = r->avail;

	if (r->cg_limited)
		room = EM_MIN(room, r->cg_limit > r->cg_usage ? r->cg_limit - r->cg_usage : 0);
	return room;
}
