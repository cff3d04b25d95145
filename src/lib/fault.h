/*
 * fault.h - control of the fault-injecting transport (fault.c), for tests.
 * Internal: not in the public header and not exported by the shared
 * library; tests link the static one.
 *
 * A pool runs on it with ETHERMEM_TRANSPORT=fault. It wraps another
 * transport (`over`, TCP by default) and, on one node's channels (every
 * queue of the pool, the default one included, so control calls too),
 * makes chosen parts fail at once, wait before they are sent, or never be
 * answered. ETHERMEM_FAULT sets the fault the pool starts with, written as
 * em_fault_parse() reads it; em_fault_set() changes it while the pool runs.
 */
#ifndef EM_LIB_FAULT_H
#define EM_LIB_FAULT_H

#include <stdint.h>

#include "ethermem.h"

enum em_fault_mode {
	EM_FAULT_NONE = 0,
	EM_FAULT_FAIL,  /* the part completes at once with `err` */
	EM_FAULT_DELAY, /* the part is sent `delay_ms` late (or times out first) */
	EM_FAULT_DROP,  /* the part is never sent, so never answered: it times out */
	EM_FAULT_HANG,  /* from the first part hit on, every part of the node
			 * is held unanswered until it times out (sticky until
			 * the fault is set again) */
};

struct em_fault {
	enum em_fault_mode mode;
	int node;          /* pool node index; -1: the node named by addr */
	char addr[80];     /* as in the node list ("tcp://h:p") or "h:p" */
	int err;           /* FAIL: the (negative) errno parts get; 0: -EIO */
	unsigned delay_ms; /* DELAY */
	uint64_t after;    /* parts of the node that pass before any is hit */
	unsigned percent;  /* of the parts after those, how many are hit: a
			    * seeded choice per part number (0 or 100: all) */
	uint64_t seed;
	char over[16]; /* the wrapped transport (init only); "": tcp */
};

/* Reads "key=value" words separated by commas or spaces: mode=none|fail|
 * delay|drop|hang, node=N, addr=A, err=ERRNO (a positive number), delay-ms=N,
 * after=N, percent=0..100, seed=N, over=NAME. Unset keys are 0 / node 0.
 * Returns 0 or -EINVAL on any word it does not understand. */
int em_fault_parse(const char *spec, struct em_fault *f);

/* Replaces the pool's fault and restarts its schedule (part numbers from 0,
 * hangs cleared). Parts already held keep their fate. -EOPNOTSUPP if the
 * pool is not on the fault transport, -EINVAL / -ENOENT for a bad node. */
int em_fault_set(em_pool *pool, const struct em_fault *f);

#endif
