/*
 * fault.c - a transport that wraps another and breaks one node's channels
 * on purpose, so tests can see what the public API makes of a node that
 * fails, is slow, loses requests or stops answering (fault.h is its
 * control surface; README.md in this directory describes it).
 *
 * Every hook of the pool and its regions goes to the wrapped transport
 * unchanged; only channels are wrapped. A wrapping channel decides, per
 * part and under the pool's fault lock, whether the part passes, fails
 * at once, or is held. Held parts live in the wrapper, each with the time
 * it goes out (a delay) and the time it times out (the pool's request
 * timeout after it was posted); progress sends or fails them when their
 * time comes. A held part is never on the wire, so dropping or hanging
 * leaves the connection's order intact and the node usable once the fault
 * is lifted.
 *
 * Which parts are hit is a pure function of the seed and the part's number
 * on that node (parts of every queue of the pool counted together), so a
 * schedule repeats exactly for the same seed and the same sequence of
 * calls, whatever the timing.
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "common/util.h"
#include "lib/fault.h"
#include "lib/internal.h"

extern const struct em_transport_ops em_transport_fault;

struct fnode {
	uint64_t seen; /* parts of this node so far, under the schedule */
	bool hung;
};

struct fpool {
	pthread_mutex_t lock;
	const struct em_transport_ops *in;
	void *inpriv;
	struct em_fault f;
	int victim; /* node index the fault is on, -1: none */
	unsigned n;
	struct fnode node[];
};

struct held {
	struct em_part p;
	uint64_t send_ns; /* 0: never sent */
	uint64_t dead_ns; /* fails with -ETIMEDOUT from then on */
};

struct fchan {
	struct em_chan ch;
	struct em_chan *in;
	struct fpool *fp;
	unsigned node;
	struct held *h; /* in post order */
	unsigned nh, caph;
};

/* ---- the schedule ---- */

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* What happens to the next part of node i (fault lock held). */
static enum em_fault_mode decide(struct fpool *fp, unsigned i)
{
	struct fnode *fn = &fp->node[i];
	uint64_t k;

	if (fp->f.mode == EM_FAULT_NONE || (int)i != fp->victim)
		return EM_FAULT_NONE;
	if (fn->hung)
		return EM_FAULT_HANG;
	k = fn->seen++;
	if (k < fp->f.after)
		return EM_FAULT_NONE;
	if (fp->f.percent && fp->f.percent < 100 && mix(fp->f.seed ^ mix(k)) % 100 >= fp->f.percent)
		return EM_FAULT_NONE;
	if (fp->f.mode == EM_FAULT_HANG)
		fn->hung = true;
	return fp->f.mode;
}

/* ---- the channel ---- */

static void sync_outstanding(struct fchan *c)
{
	c->in->q = c->ch.q;
	c->ch.outstanding = c->in->outstanding + c->nh;
}

static void copy_part(struct em_part *dst, const struct em_part *src)
{
	*dst = *src;
	if (src->req == src->inl)
		dst->req = dst->inl;
	if (src->resp == src->inl)
		dst->resp = dst->inl;
}

static void complete(struct fchan *c, const struct em_part *p, int err)
{
	struct em_part f;

	copy_part(&f, p);
	f.status = err;
	f.resp_len = 0;
	c->ch.outstanding++; /* em_part_done takes one off; sync_outstanding recounts */
	em_part_done(&c->ch, &f);
}

/* After the held array moved from `old`: an atomic's operands and result
 * pointed into its own old slot. */
static void held_moved(struct fchan *c, uintptr_t old)
{
	for (unsigned i = 0; i < c->nh; i++) {
		uintptr_t was = old + i * sizeof(struct held) + offsetof(struct held, p) +
				offsetof(struct em_part, inl);
		if ((uintptr_t)c->h[i].p.req == was)
			c->h[i].p.req = c->h[i].p.inl;
		if ((uintptr_t)c->h[i].p.resp == was)
			c->h[i].p.resp = c->h[i].p.inl;
	}
}

static int hold(struct fchan *c, const struct em_part *p, uint64_t send_ns)
{
	if (c->nh == c->caph) {
		unsigned nc = c->caph ? 2 * c->caph : 16;
		uintptr_t old = (uintptr_t)c->h;
		struct held *nh = realloc(c->h, nc * sizeof(*nh));
		if (!nh)
			return -ENOMEM;
		c->h = nh;
		held_moved(c, old);
		c->caph = nc;
	}
	copy_part(&c->h[c->nh].p, p);
	c->h[c->nh].send_ns = send_ns;
	c->h[c->nh].dead_ns = em_now_ns() + (uint64_t)c->ch.timeout_ms * 1000000ull;
	c->nh++;
	return 0;
}

#define BATCH 32

static int f_post(struct em_chan *ch, const struct em_part *parts, unsigned n)
{
	struct fchan *c = (struct fchan *)ch;
	struct em_part pass[BATCH];
	unsigned np = 0;

	sync_outstanding(c);
	for (unsigned i = 0; i < n; i++) {
		enum em_fault_mode m;
		unsigned delay;
		int err, rc = 0;

		pthread_mutex_lock(&c->fp->lock);
		m = decide(c->fp, c->node);
		err = c->fp->f.err ? c->fp->f.err : -EIO;
		delay = c->fp->f.delay_ms;
		pthread_mutex_unlock(&c->fp->lock);
		if (m == EM_FAULT_NONE) {
			copy_part(&pass[np++], &parts[i]);
			if (np == BATCH) {
				c->in->ops->post(c->in, pass, np);
				np = 0;
			}
			continue;
		}
		/* what passed before a held part goes first, in order */
		if (np) {
			c->in->ops->post(c->in, pass, np);
			np = 0;
		}
		if (m == EM_FAULT_FAIL)
			complete(c, &parts[i], err);
		else
			rc = hold(c, &parts[i],
				  m == EM_FAULT_DELAY ? em_now_ns() + delay * 1000000ull : 0);
		if (rc)
			complete(c, &parts[i], rc);
		sync_outstanding(c);
	}
	if (np)
		c->in->ops->post(c->in, pass, np);
	sync_outstanding(c);
	return 0;
}

/* Sends the held parts whose delay is over and fails those whose time ran
 * out; a delayed part waits for every part held before it, so the node
 * still sees the channel's order. Returns parts completed. */
static int release(struct fchan *c, uint64_t now, uint64_t *next)
{
	unsigned k = 0, keep = 0;
	int done = 0;

	*next = UINT64_MAX;
	for (; k < c->nh; k++) {
		struct held *h = &c->h[k];

		if (now >= h->dead_ns) {
			complete(c, &h->p, -ETIMEDOUT);
			done++;
		} else if (h->send_ns && now >= h->send_ns && keep == 0) {
			c->in->ops->post(c->in, &h->p, 1);
		} else {
			if (keep != k) {
				c->h[keep] = *h;
				copy_part(&c->h[keep].p, &h->p);
			}
			keep++;
			*next = EM_MIN(*next, h->dead_ns);
			if (h->send_ns)
				*next = EM_MIN(*next, h->send_ns);
		}
	}
	c->nh = keep;
	sync_outstanding(c);
	return done;
}

static int f_progress(struct em_chan *ch, int timeout_ms)
{
	struct fchan *c = (struct fchan *)ch;
	uint64_t start = em_now_ns();

	if (timeout_ms < 0)
		timeout_ms = ch->timeout_ms;
	for (;;) {
		uint64_t now = em_now_ns(), next = UINT64_MAX, end;
		int done = c->nh ? release(c, now, &next) : 0;

		if (c->in->outstanding) {
			int r = c->in->ops->progress(c->in, 0);
			if (r > 0)
				done += r;
			sync_outstanding(c);
		}
		if (done || timeout_ms == 0 || !ch->outstanding)
			return done;
		now = em_now_ns();
		end = start + (uint64_t)timeout_ms * 1000000ull;
		if (now >= end)
			return 0; /* held parts time out by their own clock */
		if (next > end)
			next = end;
		if (!c->nh) {
			/* only the wrapped channel has parts: its own wait,
			 * timeout and all */
			int left = timeout_ms >= ch->timeout_ms
					   ? -1
					   : (int)((end - now + 999999) / 1000000);
			int r = c->in->ops->progress(c->in, left);
			sync_outstanding(c);
			if (r != 0)
				return r;
			continue;
		}
		if (c->in->outstanding) {
			int w = (int)EM_MIN((next - now + 999999) / 1000000, 10u);
			int r = c->in->ops->progress(c->in, w ? w : 1);
			sync_outstanding(c);
			if (r > 0)
				return r;
		} else {
			uint64_t w = next - now;
			struct timespec ts = { (time_t)(w / 1000000000ull),
					       (long)(w % 1000000000ull) };
			nanosleep(&ts, NULL);
		}
	}
}

static int f_fd(struct em_chan *ch)
{
	struct fchan *c = (struct fchan *)ch;

	/* held parts move with the clock, not a descriptor: be polled */
	return c->nh ? -1 : c->in->ops->fd(c->in);
}

static void f_fail(struct em_chan *ch, int err)
{
	struct fchan *c = (struct fchan *)ch;

	for (unsigned k = 0; k < c->nh; k++)
		complete(c, &c->h[k].p, err);
	c->nh = 0;
	c->in->ops->fail(c->in, err);
	sync_outstanding(c);
}

static void f_close(struct em_chan *ch)
{
	struct fchan *c = (struct fchan *)ch;

	c->in->ops->close(c->in);
	free(c->h);
	free(c);
}

/* Room for `parts` held parts too, so a queue's depth allocates nothing. */
static int f_reserve(struct em_chan *ch, unsigned parts)
{
	struct fchan *c = (struct fchan *)ch;

	if (parts > c->caph) {
		uintptr_t old = (uintptr_t)c->h;
		struct held *nh = realloc(c->h, parts * sizeof(*nh));
		if (!nh)
			return -ENOMEM;
		c->h = nh;
		held_moved(c, old);
		c->caph = parts;
	}
	return c->in->ops->reserve ? c->in->ops->reserve(c->in, parts) : 0;
}

static const struct em_chan_ops fault_chan_ops = {
	.name = "fault",
	.post = f_post,
	.progress = f_progress,
	.fd = f_fd,
	.fail = f_fail,
	.close = f_close,
	.reserve = f_reserve,
};

/* ---- the transport: everything but the channels goes to the wrapped one ---- */

static int victim_of(const em_pool *pool, const struct em_fault *f)
{
	if (f->mode == EM_FAULT_NONE)
		return -1;
	if (f->node >= 0)
		return (unsigned)f->node < em_pool_n(pool) ? f->node : -EINVAL;
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		char hp[80];

		snprintf(hp, sizeof(hp), "%s:%u", pool->nodes[i].host, pool->nodes[i].port);
		if (!strcmp(f->addr, pool->nodes[i].addr) || !strcmp(f->addr, hp))
			return (int)i;
	}
	return -ENOENT;
}

static int fault_init(em_pool *pool, void **priv)
{
	const char *spec = NULL;
	struct fpool *fp;
	int rc;

	em_cfg_env_str(EM_CFG_FAULT, &spec);
	fp = calloc(1, sizeof(*fp) + em_pool_n(pool) * sizeof(fp->node[0]));
	if (!fp)
		return -ENOMEM;
	pthread_mutex_init(&fp->lock, NULL);
	fp->n = em_pool_n(pool);
	fp->victim = -1;
	if ((rc = em_fault_parse(spec ? spec : "", &fp->f)))
		goto fail;
	fp->in = em_transport_find(fp->f.over[0] ? fp->f.over : "tcp");
	rc = !fp->in || fp->in == &em_transport_fault ? -EINVAL : victim_of(pool, &fp->f);
	if (rc < -1)
		goto fail;
	fp->victim = rc;
	if (fp->in->init && (rc = fp->in->init(pool, &fp->inpriv)))
		goto fail;
	*priv = fp;
	return 0;
fail:
	if (spec)
		em_log(EM_LOG_ERR, "ETHERMEM_FAULT=\"%s\": %s", spec, em_strerror(rc));
	pthread_mutex_destroy(&fp->lock);
	free(fp);
	return rc;
}

static int fault_start(void *priv, em_pool *pool)
{
	struct fpool *fp = priv;

	return fp->in->start ? fp->in->start(fp->inpriv, pool) : 0;
}

static int fault_wrap(void *priv, em_pool *pool, unsigned i, struct em_chan *tcp,
		      struct em_chan **out)
{
	struct fpool *fp = priv;
	struct fchan *c = calloc(1, sizeof(*c));
	struct em_chan *in = tcp;
	int rc;

	if (!c)
		return -ENOMEM;
	if (fp->in->wrap && (rc = fp->in->wrap(fp->inpriv, pool, i, tcp, &in))) {
		free(c);
		return rc;
	}
	c->ch.ops = &fault_chan_ops;
	c->ch.q = in->q;
	c->ch.timeout_ms = in->timeout_ms;
	c->ch.poll_us = in->poll_us;
	c->in = in;
	c->fp = fp;
	c->node = i;
	sync_outstanding(c);
	*out = &c->ch;
	return 0;
}

static int fault_attach(void *priv, em_region *r)
{
	struct fpool *fp = priv;

	return fp->in->attach ? fp->in->attach(fp->inpriv, r) : 0;
}

static void fault_detach(void *priv, em_region *r)
{
	struct fpool *fp = priv;

	if (fp->in->detach)
		fp->in->detach(fp->inpriv, r);
}

static void fault_stop(void *priv, em_pool *pool)
{
	struct fpool *fp = priv;

	if (fp->in->stop)
		fp->in->stop(fp->inpriv, pool);
}

static void fault_fini(void *priv, em_pool *pool)
{
	struct fpool *fp = priv;

	if (fp->in->fini)
		fp->in->fini(fp->inpriv, pool);
	pthread_mutex_destroy(&fp->lock);
	free(fp);
}

const struct em_transport_ops em_transport_fault = {
	.name = "fault",
	.init = fault_init,
	.start = fault_start,
	.wrap = fault_wrap,
	.attach = fault_attach,
	.detach = fault_detach,
	.stop = fault_stop,
	.fini = fault_fini,
};

/* ---- control ---- */

static int num(const char *v, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long x;

	if (*v < '0' || *v > '9')
		return -EINVAL;
	errno = 0;
	x = strtoull(v, &end, 0);
	if (errno || *end || x > max)
		return -EINVAL;
	*out = x;
	return 0;
}

int em_fault_parse(const char *spec, struct em_fault *f)
{
	static const char *const modes[] = { "none", "fail", "delay", "drop", "hang" };
	char buf[512], *save = NULL, *w;

	if (!spec || !f || strlen(spec) >= sizeof(buf))
		return -EINVAL;
	memset(f, 0, sizeof(*f));
	snprintf(buf, sizeof(buf), "%s", spec);
	for (w = strtok_r(buf, ", \t", &save); w; w = strtok_r(NULL, ", \t", &save)) {
		char *v = strchr(w, '=');
		uint64_t x = 0;
		int rc = 0;

		if (!v)
			return -EINVAL;
		*v++ = 0;
		if (!strcmp(w, "mode")) {
			unsigned m;
			for (m = 0; m < 5 && strcmp(v, modes[m]); m++)
				;
			if (m == 5)
				return -EINVAL;
			f->mode = (enum em_fault_mode)m;
		} else if (!strcmp(w, "node")) {
			rc = num(v, EM_MAX_SEG - 1, &x);
			f->node = (int)x;
			f->addr[0] = 0;
		} else if (!strcmp(w, "addr")) {
			if (!*v || strlen(v) >= sizeof(f->addr))
				return -EINVAL;
			snprintf(f->addr, sizeof(f->addr), "%s", v);
			f->node = -1;
		} else if (!strcmp(w, "err")) {
			rc = num(v, 4095, &x);
			f->err = -(int)x;
			rc = rc ? rc : x ? 0 : -EINVAL;
		} else if (!strcmp(w, "delay-ms")) {
			rc = num(v, 3600000, &x);
			f->delay_ms = (unsigned)x;
		} else if (!strcmp(w, "after")) {
			rc = num(v, UINT64_MAX, &f->after);
		} else if (!strcmp(w, "percent")) {
			rc = num(v, 100, &x);
			f->percent = (unsigned)x;
		} else if (!strcmp(w, "seed")) {
			rc = num(v, UINT64_MAX, &f->seed);
		} else if (!strcmp(w, "over")) {
			if (!*v || strlen(v) >= sizeof(f->over))
				return -EINVAL;
			snprintf(f->over, sizeof(f->over), "%s", v);
		} else {
			return -EINVAL;
		}
		if (rc)
			return rc;
	}
	return 0;
}

int em_fault_set(em_pool *pool, const struct em_fault *f)
{
	struct fpool *fp;
	int v;

	if (!pool || !f || (unsigned)f->mode > EM_FAULT_HANG)
		return -EINVAL;
	if (pool->tp != &em_transport_fault)
		return -EOPNOTSUPP;
	fp = pool->tpriv;
	if ((v = victim_of(pool, f)) < -1)
		return v;
	pthread_mutex_lock(&fp->lock);
	fp->f.mode = f->mode;
	fp->f.node = f->node;
	memcpy(fp->f.addr, f->addr, sizeof(fp->f.addr));
	fp->f.err = f->err;
	fp->f.delay_ms = f->delay_ms;
	fp->f.after = f->after;
	fp->f.percent = f->percent;
	fp->f.seed = f->seed;
	fp->victim = v;
	for (unsigned i = 0; i < fp->n; i++)
		fp->node[i] = (struct fnode){ 0 };
	pthread_mutex_unlock(&fp->lock);
	return 0;
}
