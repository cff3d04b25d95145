/*
 * local_backend.h - an in-memory backend for the paging engine's tests.
 *
 * The engine is exercised against plain memory so that the fault machinery
 * (concurrency, write-protect, eviction, prefetch) can be checked without a
 * pool; the real-daemon tests then run the same engine over the pool. rctx is
 * the base of a buffer standing in for the region; operations complete at
 * submit time and are reaped by wait. A test can freeze the backend to make
 * it stop answering (the timeout path).
 */
#ifndef EMM_LOCAL_BACKEND_H
#define EMM_LOCAL_BACKEND_H

#include "map/emm.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct emm_local_chan {
	struct emm_done done[256];
	unsigned n;
};

static _Atomic int emm_local_frozen;
static _Atomic uint64_t emm_local_reads, emm_local_read_bytes;

static int emm_local_open(void *bctx, void **chan)
{
	(void)bctx;
	*chan = calloc(1, sizeof(struct emm_local_chan));
	return *chan ? 0 : -ENOMEM;
}

static void emm_local_close(void *chan)
{
	free(chan);
}

static int emm_local_submit(void *chan, const struct emm_io *io, unsigned n)
{
	struct emm_local_chan *c = chan;
	unsigned i;

	for (i = 0; i < n && c->n < 256; i++) {
		char *r = (char *)io[i].rctx + io[i].off;

		if (io[i].write) {
			memcpy(r, io[i].buf, io[i].len);
		} else {
			memcpy(io[i].buf, r, io[i].len);
			atomic_fetch_add(&emm_local_reads, 1);
			atomic_fetch_add(&emm_local_read_bytes, io[i].len);
		}
		c->done[c->n++] = (struct emm_done){ .tag = io[i].tag };
	}
	return (int)i;
}

static int emm_local_wait(void *chan, struct emm_done *d, unsigned min, unsigned max,
			  int timeout_ms)
{
	struct emm_local_chan *c = chan;
	unsigned n;

	if (atomic_load(&emm_local_frozen)) {
		if (min) {
			struct timespec ts = { timeout_ms / 1000, (timeout_ms % 1000) * 1000000L };

			nanosleep(&ts, NULL);
		}
		return 0;
	}
	n = c->n < max ? c->n : max;
	memcpy(d, c->done, n * sizeof(*d));
	memmove(c->done, c->done + n, (c->n - n) * sizeof(*d));
	c->n -= n;
	return (int)n;
}

static const struct emm_backend_ops emm_local_ops = {
	.chan_open = emm_local_open,
	.chan_close = emm_local_close,
	.submit = emm_local_submit,
	.wait = emm_local_wait,
};

#endif
