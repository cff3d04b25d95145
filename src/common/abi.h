/*
 * abi.h - how the library reads and writes the public structs that can grow
 * (see the conventions in ethermem.h): each starts with `size_t size`, set
 * by the caller to what its header knew. Options are copied in up to that
 * size (a newer caller's extra bytes must be zero); results are copied out
 * up to it (an older caller gets what it knows, a newer one zeros past what
 * we know). Shared by the library and the paging layer, never installed.
 *
 * The *_SIZE_0_1 constants are each struct's size in release 0.1, the
 * smallest a caller may pass. The asserts are a tripwire: adding a field
 * (at the end, never elsewhere) trips them; then add the release's constant
 * beside the old one, keep the old one as the minimum, and give the new
 * calls their version node in libethermem.map.
 */
#ifndef EM_COMMON_ABI_H
#define EM_COMMON_ABI_H

#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "ethermem.h"

#if __SIZEOF_POINTER__ == 8 && __SIZEOF_LONG__ == 8
#define EM_POOL_OPTS_SIZE_0_1 48
#define EM_POOL_OPTS_SIZE_0_2 72 /* + poll_us, encrypt, etcd, cluster */
#define EM_REGION_OPTS_SIZE_0_1 24
#define EM_REGION_OPTS_SIZE_0_2 32
#define EM_REGION_INFO_SIZE_0_1 96
#define EM_REGION_INFO_SIZE_0_2 112
#define EM_REGION_INFO_SIZE_0_3 128 /* + rebuilt, to_rebuild */
#define EM_NODE_STATUS_SIZE_0_1 408
#define EM_MAP_OPTS_SIZE_0_1 40
#define EM_MAP_STATS_SIZE_0_1 56
#define EM_MAP_STATS_SIZE_0_2 72 /* + bytes_cleaned, evict_waits */
#define EM_MAP_STATS_SIZE_0_3 80 /* + bytes_unchanged */
_Static_assert(sizeof(struct em_pool_opts) == EM_POOL_OPTS_SIZE_0_2, "em_pool_opts grew");
_Static_assert(sizeof(struct em_region_opts) == EM_REGION_OPTS_SIZE_0_2, "em_region_opts grew");
_Static_assert(sizeof(struct em_region_info) == EM_REGION_INFO_SIZE_0_3, "em_region_info grew");
_Static_assert(sizeof(struct em_node_status) == EM_NODE_STATUS_SIZE_0_1, "em_node_status grew");
_Static_assert(sizeof(struct em_map_opts) == EM_MAP_OPTS_SIZE_0_1, "em_map_opts grew");
_Static_assert(sizeof(struct em_map_stats) == EM_MAP_STATS_SIZE_0_3, "em_map_stats grew");
/* fixed for good: the hot path's structs never change size */
_Static_assert(sizeof(struct em_op) == 64, "em_op is fixed");
_Static_assert(sizeof(struct em_completion) == 24, "em_completion is fixed");
#else
#error "record the 0.1 sizes of the public structs for this data model (LP64 only so far)"
#endif

/* Copies caller options `src` (NULL: all defaults) into the library's
 * zeroed `dst` of dst_size bytes. 0, or -EINVAL for a size below min or
 * nonzero bytes beyond what the library knows. */
static inline int em_opts_in(void *dst, size_t dst_size, const void *src, size_t min)
{
	size_t n;

	memset(dst, 0, dst_size);
	if (!src)
		return 0;
	memcpy(&n, src, sizeof(n));
	if (n < min)
		return -EINVAL;
	for (size_t i = dst_size; i < n; i++)
		if (((const unsigned char *)src)[i])
			return -EINVAL;
	memcpy(dst, src, n < dst_size ? n : dst_size);
	*(size_t *)dst = dst_size;
	return 0;
}

/* The size a caller set in the struct at `p` (the stride, for an array):
 * the size, or 0 when it is below min. */
static inline size_t em_out_size(const void *p, size_t min)
{
	size_t n;

	memcpy(&n, p, sizeof(n));
	return n < min ? 0 : n;
}

/* Writes the library's result `src` (src_size bytes, size field included)
 * into the caller's `dst` of dst_size bytes as em_out_size() gave it. */
static inline void em_out_put(void *dst, size_t dst_size, const void *src, size_t src_size)
{
	memcpy(dst, src, dst_size < src_size ? dst_size : src_size);
	if (dst_size > src_size)
		memset((unsigned char *)dst + src_size, 0, dst_size - src_size);
	memcpy(dst, &dst_size, sizeof(dst_size));
}

#endif
