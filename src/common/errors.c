/*
 * errors.c - em_strerror(): one place that turns every code the library, the
 * node and the tools return into text.
 */
#include <limits.h>
#include <string.h>

#include "ethermem.h"

const char *em_strerror(int err)
{
	if (err == INT_MIN) /* has no positive twin */
		return "unknown error";
	if (err < 0)
		err = -err;
	switch (err) {
	case 0:
		return "success";
	case EM_EAUTH:
		return "authentication failed: the cluster secret does not match";
	case EM_EVERSION:
		return "the peer speaks another protocol version";
	case EM_ENONODE:
		return "a node holding part of the region is unreachable or not in the pool";
	case EM_ELOST:
		return "data lost: more nodes of the region failed than its redundancy survives";
	case EM_EFULL:
		return "node full: it serves as many clients as it may (max-clients)";
	case EM_ECRYPT:
		return "encryption mismatch: the node requires encrypted connections "
		       "(ETHERMEM_ENCRYPT=1), or does not offer them";
	case EM_ESTALE:
		return "stale layout: this part of the region moved to another node";
	case EM_EDRAINING:
		return "the node is draining: it takes no new regions";
	default:
		if (err < 4096)
			return strerror(err); /* glibc's table is static and thread-safe */
		return "unknown error";
	}
}
