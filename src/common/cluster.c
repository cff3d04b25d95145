/*
 * cluster.c - the etcd records of cluster.h: node records and region
 * layouts as JSON, written with snprintf and read back with the in-place
 * reader, which checks every field a caller will index with.
 */
#include "common/cluster.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/etcd.h"

int em_cluster_prefix(char *out, size_t cap, const char *cluster, const char *kind)
{
	size_t n = cluster ? strlen(cluster) : 0;

	if (!n || n > 64)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = cluster[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return -EINVAL;
	}
	if ((size_t)snprintf(out, cap, "/ethermem/%s/%s/", cluster, kind) >= cap)
		return -ENOSPC;
	return 0;
}

const char *em_region_rec_piece(const struct em_region_rec *r, unsigned s)
{
	return r->seg_piece[s][0] ? r->seg_piece[s] : r->piece;
}

uint64_t em_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Strings we write are ours (addresses, hex, fixed words): refusing
 * quotes and control bytes keeps the JSON well formed without escaping. */
static int plain(const char *s)
{
	for (; *s; s++)
		if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
			return 0;
	return 1;
}

int em_node_rec_encode(const struct em_node_rec *r, char *out, size_t cap)
{
	int n;

	if (!plain(r->addr) || !plain(r->id) || !plain(r->transports) || !plain(r->ox_mac) ||
	    !plain(r->version) || !plain(r->state))
		return -EINVAL;
	n = snprintf(out, cap,
		     "{\"addr\":\"%s\",\"id\":\"%s\",\"capacity\":%llu,\"free\":%llu,"
		     "\"transports\":\"%s\",\"ox_mac\":\"%s\",\"version\":\"%s\",\"state\":\"%s\","
		     "\"heartbeat_ms\":%llu,\"started_ms\":%llu}",
		     r->addr, r->id, (unsigned long long)r->capacity, (unsigned long long)r->free,
		     r->transports, r->ox_mac, r->version, r->state,
		     (unsigned long long)r->heartbeat_ms, (unsigned long long)r->started_ms);
	return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

int em_node_rec_decode(const void *json, size_t len, struct em_node_rec *r)
{
	struct em_json root;

	memset(r, 0, sizeof(*r));
	if (em_json_root(json, len, &root) || root.p[0] != '{' ||
	    em_json_get_str(root, "addr", r->addr, sizeof(r->addr)) <= 0)
		return -EPROTO;
	em_json_get_str(root, "id", r->id, sizeof(r->id));
	em_json_get_str(root, "transports", r->transports, sizeof(r->transports));
	em_json_get_str(root, "ox_mac", r->ox_mac, sizeof(r->ox_mac));
	em_json_get_str(root, "version", r->version, sizeof(r->version));
	if (em_json_get_str(root, "state", r->state, sizeof(r->state)) <= 0)
		snprintf(r->state, sizeof(r->state), "up");
	r->capacity = em_json_get_u64(root, "capacity", 0);
	r->free = em_json_get_u64(root, "free", 0);
	r->heartbeat_ms = em_json_get_u64(root, "heartbeat_ms", 0);
	r->started_ms = em_json_get_u64(root, "started_ms", 0);
	return 0;
}

int em_region_rec_encode(const struct em_region_rec *r, char *out, size_t cap)
{
	size_t n;
	int k;

#define PUT(...)                                             \
	do {                                                 \
		k = snprintf(out + n, cap - n, __VA_ARGS__); \
		if (k < 0 || (size_t)k >= cap - n)           \
			return -ENOSPC;                      \
		n += (size_t)k;                              \
	} while (0)
	if (!plain(r->piece) || !r->nseg || r->nseg > EM_CLUSTER_MAX_SEG || !r->plen ||
	    r->plen > EM_CLUSTER_MAX_PATTERN)
		return -EINVAL;
	n = 0;
	PUT("{\"size\":%llu,\"chunk\":%llu,\"epoch\":%llu,\"piece\":\"%s\",\"segs\":[",
	    (unsigned long long)r->size, (unsigned long long)r->chunk, (unsigned long long)r->epoch,
	    r->piece);
	for (unsigned s = 0; s < r->nseg; s++) {
		if (!plain(r->seg_addr[s]))
			return -EINVAL;
		PUT("%s{\"addr\":\"%s\",\"id\":\"", s ? "," : "", r->seg_addr[s]);
		for (int i = 0; i < 16; i++)
			PUT("%02x", r->seg_id[s][i]);
		PUT("\"");
		if (r->seg_piece[s][0]) {
			if (!plain(r->seg_piece[s]))
				return -EINVAL;
			PUT(",\"piece\":\"%s\"", r->seg_piece[s]);
		}
		PUT("}");
	}
	PUT("],\"pattern\":\"");
	for (unsigned j = 0; j < r->plen; j++)
		PUT("%02x", r->pattern[j]);
	PUT("\"");
	if (r->red) /* plain regions keep the record they always had */
		PUT(",\"red\":%u,\"red_k\":%u,\"red_m\":%u,\"lepoch\":%u", r->red, r->red_k,
		    r->red_m, r->lepoch);
	PUT("}");
#undef PUT
	return (int)n;
}

static int unhex(const char *s, uint8_t *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -EPROTO;
		out[i] = (uint8_t)v;
	}
	return 0;
}

int em_region_rec_decode(const void *json, size_t len, struct em_region_rec *r)
{
	struct em_json root, segs, seg;
	char hex[2 * EM_CLUSTER_MAX_PATTERN + 1];
	size_t pos = 0;
	int rc, hl;

	memset(r, 0, sizeof(*r));
	if (em_json_root(json, len, &root) || root.p[0] != '{')
		return -EPROTO;
	r->size = em_json_get_u64(root, "size", 0);
	r->chunk = em_json_get_u64(root, "chunk", 0);
	r->epoch = em_json_get_u64(root, "epoch", 0);
	if (!r->size || !r->chunk ||
	    em_json_get_str(root, "piece", r->piece, sizeof(r->piece)) <= 0 ||
	    em_json_get(root, "segs", &segs))
		return -EPROTO;
	while ((rc = em_json_next(segs, &pos, &seg)) == 1) {
		char id[33];
		int pl;
		if (r->nseg == EM_CLUSTER_MAX_SEG ||
		    em_json_get_str(seg, "addr", r->seg_addr[r->nseg], sizeof(r->seg_addr[0])) <=
			    0 ||
		    em_json_get_str(seg, "id", id, sizeof(id)) != 32 ||
		    unhex(id, r->seg_id[r->nseg], 16))
			return -EPROTO;
		pl = em_json_get_str(seg, "piece", r->seg_piece[r->nseg], sizeof(r->seg_piece[0]));
		if (pl < 0 && pl != -ENOENT)
			return -EPROTO;
		r->nseg++;
	}
	if (rc < 0 || !r->nseg)
		return -EPROTO;
	hl = em_json_get_str(root, "pattern", hex, sizeof(hex));
	if (hl <= 0 || hl % 2 || unhex(hex, r->pattern, (size_t)hl / 2))
		return -EPROTO;
	r->plen = (unsigned)hl / 2;
	for (unsigned j = 0; j < r->plen; j++)
		if (r->pattern[j] >= r->nseg)
			return -EPROTO;
	{
		uint64_t red = em_json_get_u64(root, "red", 0),
			 k = em_json_get_u64(root, "red_k", 0);
		uint64_t m = em_json_get_u64(root, "red_m", 0);
		uint64_t le = em_json_get_u64(root, "lepoch", 0);

		/* the shape a redundant layout has: one part per copy or cell;
		 * a plain region's record has none of these fields (the encoder
		 * writes them only with "red") */
		if (red > 3 || k > 32 || m > 8 || le > 0x7fffffu || (!red && (k || m || le)) ||
		    (red > 1 && (!k || k + m != r->nseg || r->plen != r->nseg || (red == 2 && m) ||
				 (red == 3 && !m))))
			return -EPROTO;
		r->red = (uint8_t)red;
		r->red_k = (uint8_t)k;
		r->red_m = (uint8_t)m;
		r->lepoch = (uint32_t)le;
	}
	return 0;
}
