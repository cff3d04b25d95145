/*
 * map_api.c - em_map and friends: the paging engine over the pool.
 *
 * The engine's backend table is implemented with the asynchronous batch API:
 * each engine channel is one em_queue (its own connections, so faulting
 * threads never serialise on the pool's default queue), a fetch or
 * write-back of a unit is one em_op on the region, and a fault's demand
 * fetch and its prefetches go out in one em_submit. em_queue calls are made
 * from the SIGBUS handler; that is sound because the handler runs only at a
 * faulting load or store in application code, never inside the library.
 * This file sees the library only through ethermem.h and the two private
 * facts of lib/pager_io.h, so the pager does not depend on its internals.
 */
#include "map/emm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/abi.h"
#include "common/config.h"
#include "lib/pager_io.h"

static int emm_pool_chan_open(void *bctx, void **chan)
{
	em_queue *q;
	int rc = em_queue_create(bctx, EMM_CHAN_DEPTH + 8, &q);

	if (!rc)
		em_queue_no_redial(q);
	*chan = rc ? NULL : q;
	return rc;
}

static void emm_pool_chan_close(void *chan)
{
	em_queue_destroy(chan);
}

static int emm_pool_submit(void *chan, const struct emm_io *io, unsigned n)
{
	struct em_op ops[EMM_CHAN_DEPTH];

	if (n > EMM_CHAN_DEPTH)
		n = EMM_CHAN_DEPTH;
	for (unsigned i = 0; i < n; i++)
		ops[i] = (struct em_op){
			.opcode = io[i].write ? EM_OP_WRITE : EM_OP_READ,
			.region = io[i].rctx,
			.offset = io[i].off,
			.buf = io[i].buf,
			.len = io[i].len,
			.user_data = io[i].tag,
		};
	return em_submit(chan, ops, n);
}

static int emm_pool_wait(void *chan, struct emm_done *d, unsigned min, unsigned max, int timeout_ms)
{
	struct em_completion c[EMM_CHAN_DEPTH];
	int n;

	if (max > EMM_CHAN_DEPTH)
		max = EMM_CHAN_DEPTH;
	n = em_poll(chan, c, max);
	if (n == 0 && min) {
		/* a loopback or LAN reply comes in tens of microseconds, about what
		 * sleeping in recv and being woken costs here: poll briefly first */
		struct timespec t0, t;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			n = em_poll(chan, c, max);
			clock_gettime(CLOCK_MONOTONIC, &t);
		} while (n == 0 &&
			 (t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 50000);
	}
	if (n == 0 && min)
		n = em_wait(chan, c, min, max, timeout_ms);
	for (int i = 0; i < n; i++)
		d[i] = (struct emm_done){ .tag = c[i].user_data, .result = c[i].result };
	return n;
}

static const struct emm_backend_ops emm_pool_ops = {
	.chan_open = emm_pool_chan_open,
	.chan_close = emm_pool_chan_close,
	.submit = emm_pool_submit,
	.wait = emm_pool_wait,
};

/* em_pool_close's hook: the engine's channels on the pool go first. */
static void emm_pool_closing(em_pool *pool)
{
	emm_source_drop(&emm_pool_ops, pool);
}

/* ETHERMEM_MAP_CACHE and ETHERMEM_MAP_TRACE, once read well; a bad value fails every
 * call that needs it rather than leaving the budget at a default. */
static int emm_default_cache(void)
{
	static int done;
	int64_t v;
	int rc;

	if (done)
		return 0;
	if (em_cfg_env_isset(EM_CFG_MAP_TRACE)) {
		const char *path;

		if ((rc = em_cfg_env_str(EM_CFG_MAP_TRACE, &path)) || (rc = emm_set_trace(path)))
			return rc;
	}
	if (!em_cfg_env_isset(EM_CFG_MAP_CACHE)) {
		done = 1;
		return 0;
	}
	if ((rc = em_cfg_env_num(EM_CFG_MAP_CACHE, &v)))
		return rc;
	done = 1;
	return emm_set_cache((uint64_t)v);
}

/* The settings that choose how the engine maps: the fault mode (fixed by
 * the first map of the process) and huge pages. */
static int emm_map_settings(unsigned *flags)
{
	int64_t huge, thread;
	int rc;

	if ((rc = em_cfg_env_num(EM_CFG_MAP_HUGE, &huge)) ||
	    (rc = em_cfg_env_num(EM_CFG_MAP_FAULTS, &thread)))
		return rc;
	if (!huge)
		*flags |= EM_MAP_NOHUGE;
	if (*flags & EM_MAP_THREAD_FAULTS)
		return emm_set_fault_mode(EMM_FAULTS_THREAD);
	/* the table's order: sigbus, thread */
	if (!emm_fault_mode())
		return emm_set_fault_mode(thread ? EMM_FAULTS_THREAD : EMM_FAULTS_SIGBUS);
	return 0;
}

int em_map_cache_size(uint64_t bytes)
{
	int rc = emm_default_cache();

	return rc ? rc : emm_set_cache(bytes);
}

int em_map(em_region *region, const struct em_map_opts *opts, void **addr)
{
	const unsigned known = EM_MAP_READONLY | EM_MAP_NOPREFETCH | EM_MAP_FRESH | EM_MAP_SCRATCH |
			       EM_MAP_NOHUGE | EM_MAP_THREAD_FAULTS;
	struct em_map_opts o;
	struct emm_map_params p = { 0 };
	uint64_t size;
	int rc;

	if (!region || !addr || em_opts_in(&o, sizeof(o), opts, EM_MAP_OPTS_SIZE_0_1) ||
	    (o.flags & ~known))
		return -EINVAL;
	if ((rc = emm_default_cache()) || (rc = emm_map_settings(&o.flags)))
		return rc;
	size = em_region_size(region);
	if (!o.fetch_unit)
		o.fetch_unit = 64 << 10;
	if (o.offset & 4095)
		return -EINVAL;
	if (o.offset > size || o.length > size - o.offset)
		return -ERANGE;
	if (!o.length)
		o.length = size - o.offset;
	if (!o.length)
		return -ERANGE;
	if ((rc = em_region_map_prepare(region, o.fetch_unit)))
		return rc;
	__atomic_store_n(&em_pool_close_hook, emm_pool_closing, __ATOMIC_RELEASE);
	rc = emm_source_get(&emm_pool_ops, em_region_pool(region), &p.src);
	if (rc)
		return rc;
	p.rctx = region;
	p.roff = o.offset;
	p.len = o.length;
	p.unit = o.fetch_unit;
	p.flags = o.flags & (EM_MAP_READONLY | EM_MAP_NOPREFETCH | EM_MAP_SCRATCH | EM_MAP_NOHUGE);
	if (o.flags & EM_MAP_FRESH)
		p.flags |= EMM_MAP_FRESH;
	p.timeout_ms = o.timeout_ms > 0 ? o.timeout_ms : em_pool_timeout_ms(em_region_pool(region));
	p.what = em_region_label(region);
	return emm_map_range(&p, addr);
}

int em_sync(void *addr, size_t len)
{
	return addr ? emm_sync_range(addr, len) : -EINVAL;
}

int em_unmap(void *addr)
{
	return addr ? emm_unmap_range(addr) : -EINVAL;
}

int em_map_stats(void *addr, struct em_map_stats *st)
{
	size_t n = st ? em_out_size(st, EM_MAP_STATS_SIZE_0_1) : 0;
	struct em_map_stats mine;
	int rc;

	if (!n)
		return -EINVAL;
	rc = emm_stats(addr, &mine);
	mine.size = sizeof(mine);
	if (!rc)
		em_out_put(st, n, &mine, sizeof(mine));
	return rc;
}
