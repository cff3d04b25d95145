/*
 * link_mem.c - links that are not a network: an in-memory hub that moves
 * frames between ports in one process, and the test-only fault injector.
 *
 * The hub lets the protocol tests run an endpoint and several requesters in
 * one thread, each polled in turn, with no sockets and no root (or in
 * several threads: one lock guards all queues).  A port's queue is bounded
 * and drops when full, like a NIC ring.
 *
 * The fault injector wraps the send path of any link (the hub or AF_PACKET)
 * because this kernel has no netem: with a seeded generator it drops,
 * duplicates, reorders (holds a frame until the next one has gone) and
 * delays frames.  Held frames are released from send, recv and wait, so the
 * owner's ordinary polling drives it.  Not for production use.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ox/ox.h"

uint64_t ox_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void ox_link_close(struct ox_link *l)
{
	if (l && l->ops->close)
		l->ops->close(l);
}

/* ------------------------------------------------------------------ hub */

#define HUB_PORTS 16
#define HUB_QLEN 512
#define HUB_FRAME 9216     /* a port's slot unless its MTU wants more */
#define HUB_MAX_MTU 65535u /* what veth allows */

struct hub_port {
	struct ox_link link;
	struct ox_hub *hub;
	uint8_t *ring;
	size_t fsize; /* slot bytes: the largest frame this port takes */
	uint32_t len[HUB_QLEN];
	unsigned head, count;
	bool used;
};

struct ox_hub {
	pthread_mutex_t lock;
	struct hub_port port[HUB_PORTS];
	uint64_t drops;
};

static int hub_send(struct ox_link *l, const uint8_t *f, size_t len)
{
	struct hub_port *me = l->priv;
	if (len > me->fsize || len < OX_ETH_HLEN)
		return -EMSGSIZE;
	pthread_mutex_lock(&me->hub->lock);
	for (int i = 0; i < HUB_PORTS; i++) {
		struct hub_port *p = &me->hub->port[i];
		if (!p->used || p == me || memcmp(p->link.mac, f, 6))
			continue;
		if (p->count == HUB_QLEN || len > p->fsize) {
			me->hub->drops++;
			continue;
		}
		unsigned s = (p->head + p->count) % HUB_QLEN;
		memcpy(p->ring + (size_t)s * p->fsize, f, len);
		p->len[s] = (uint32_t)len;
		p->count++;
	}
	pthread_mutex_unlock(&me->hub->lock);
	return 0;
}

static int hub_recv(struct ox_link *l, uint8_t *buf, size_t cap)
{
	struct hub_port *p = l->priv;
	pthread_mutex_lock(&p->hub->lock);
	size_t n = 0;
	if (p->count) {
		unsigned s = p->head;
		n = p->len[s] < cap ? p->len[s] : cap;
		memcpy(buf, p->ring + (size_t)s * p->fsize, n);
		p->head = (p->head + 1) % HUB_QLEN;
		p->count--;
	}
	pthread_mutex_unlock(&p->hub->lock);
	return (int)n;
}

/* The head slot is the reader's alone until release: senders only ever
 * write past head + count. */
static int hub_peek(struct ox_link *l, const uint8_t **f)
{
	struct hub_port *p = l->priv;
	int n = 0;
	pthread_mutex_lock(&p->hub->lock);
	if (p->count) {
		*f = p->ring + (size_t)p->head * p->fsize;
		n = p->len[p->head];
	}
	pthread_mutex_unlock(&p->hub->lock);
	return n;
}

static void hub_release(struct ox_link *l)
{
	struct hub_port *p = l->priv;
	pthread_mutex_lock(&p->hub->lock);
	p->head = (p->head + 1) % HUB_QLEN;
	p->count--;
	pthread_mutex_unlock(&p->hub->lock);
}

static const struct ox_link_ops hub_ops = {
	.send = hub_send,
	.recv = hub_recv,
	.peek = hub_peek,
	.release = hub_release,
};

int ox_hub_create(struct ox_hub **out)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	pthread_mutex_init(&(*out)->lock, NULL);
	return 0;
}

void ox_hub_destroy(struct ox_hub *h)
{
	if (!h)
		return;
	for (int i = 0; i < HUB_PORTS; i++)
		free(h->port[i].ring);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

int ox_hub_port(struct ox_hub *h, uint8_t id, unsigned mtu, struct ox_link **out)
{
	for (int i = 0; i < HUB_PORTS; i++) {
		struct hub_port *p = &h->port[i];
		if (p->used)
			continue;
		if (mtu > HUB_MAX_MTU)
			mtu = HUB_MAX_MTU;
		p->fsize = OX_ETH_HLEN + mtu > HUB_FRAME ? OX_ETH_HLEN + mtu : HUB_FRAME;
		p->ring = malloc((size_t)HUB_QLEN * p->fsize);
		if (!p->ring)
			return -ENOMEM;
		p->used = true;
		p->hub = h;
		p->link = (struct ox_link){ .ops = &hub_ops,
					    .mac = { 2, 0, 0, 0, 0, id },
					    .ethertype = OX_ETHERTYPE_DEFAULT,
					    .mtu = mtu,
					    .priv = p };
		*out = &p->link;
		return 0;
	}
	return -ENOSPC;
}

/* --------------------------------------------------------- fault injector */

#define HELD_MAX 64

struct held {
	uint8_t *buf;
	size_t len;
	uint64_t release;
};

struct faulty {
	struct ox_link link;
	struct ox_link *inner;
	struct ox_fault_cfg cfg;
	struct ox_fault_stats st;
	uint64_t rng;
	struct held held[HELD_MAX];
	unsigned nheld;
	int reorder;    /* index in held of the frame waiting for a successor */
	uint8_t *stage; /* tx_slot buffer: the faults apply at commit */
};

static double uniform(struct faulty *f)
{
	/* xorshift64*: reproducible from the seed, good enough for coin flips */
	f->rng ^= f->rng >> 12;
	f->rng ^= f->rng << 25;
	f->rng ^= f->rng >> 27;
	return (double)((f->rng * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 100.0;
}

static void held_send(struct faulty *f, unsigned i)
{
	ox_link_send(f->inner, f->held[i].buf, f->held[i].len);
	free(f->held[i].buf);
	f->held[i] = f->held[--f->nheld];
	if (f->reorder == (int)i)
		f->reorder = -1;
	else if (f->reorder == (int)f->nheld)
		f->reorder = (int)i;
}

static void release_due(struct faulty *f, uint64_t now)
{
	for (unsigned i = 0; i < f->nheld;) {
		if (f->held[i].release <= now)
			held_send(f, i);
		else
			i++;
	}
}

static int hold(struct faulty *f, const uint8_t *fr, size_t len, uint64_t release)
{
	if (f->nheld == HELD_MAX)
		return ox_link_send(f->inner, fr, len);
	uint8_t *b = malloc(len);
	if (!b)
		return -ENOMEM;
	memcpy(b, fr, len);
	f->held[f->nheld] = (struct held){ b, len, release };
	return (int)f->nheld++;
}

static int faulty_send(struct ox_link *l, const uint8_t *fr, size_t len)
{
	struct faulty *f = l->priv;
	uint64_t now = ox_now_ns();
	release_due(f, now);
	f->st.sent++;
	if (uniform(f) < f->cfg.drop_pct) {
		f->st.dropped++;
		return 0;
	}
	if (uniform(f) < f->cfg.delay_pct) {
		f->st.delayed++;
		int i = hold(f, fr, len, now + f->cfg.delay_ns);
		return i < 0 ? i : 0;
	}
	if (f->reorder < 0 && uniform(f) < f->cfg.reorder_pct) {
		/* released after the next frame, or after 1 ms if none comes */
		f->st.reordered++;
		int i = hold(f, fr, len, now + 1000000);
		if (i >= 0)
			f->reorder = i;
		return i < 0 ? i : 0;
	}
	int e = ox_link_send(f->inner, fr, len);
	if (uniform(f) < f->cfg.dup_pct) {
		f->st.duped++;
		ox_link_send(f->inner, fr, len);
	}
	if (f->reorder >= 0)
		held_send(f, (unsigned)f->reorder);
	return e;
}

static int faulty_recv(struct ox_link *l, uint8_t *buf, size_t cap)
{
	struct faulty *f = l->priv;
	if (f->nheld)
		release_due(f, ox_now_ns());
	return ox_link_recv(f->inner, buf, cap);
}

static int faulty_wait(struct ox_link *l, uint64_t timeout_ns)
{
	struct faulty *f = l->priv;
	uint64_t now = ox_now_ns();
	release_due(f, now);
	for (unsigned i = 0; i < f->nheld; i++)
		if (f->held[i].release - now < timeout_ns)
			timeout_ns = f->held[i].release - now;
	return ox_link_wait(f->inner, timeout_ns);
}

static int faulty_peek(struct ox_link *l, const uint8_t **fr)
{
	struct faulty *f = l->priv;
	if (f->nheld)
		release_due(f, ox_now_ns());
	return f->inner->ops->peek(f->inner, fr);
}

static void faulty_release(struct ox_link *l)
{
	struct faulty *f = l->priv;
	f->inner->ops->release(f->inner);
}

static uint8_t *faulty_tx_slot(struct ox_link *l)
{
	struct faulty *f = l->priv;
	return f->stage;
}

static int faulty_tx_commit(struct ox_link *l, size_t len)
{
	struct faulty *f = l->priv;
	return faulty_send(l, f->stage, len);
}

static int faulty_flush(struct ox_link *l)
{
	struct faulty *f = l->priv;
	return ox_link_flush(f->inner);
}

static void faulty_close(struct ox_link *l)
{
	struct faulty *f = l->priv;
	while (f->nheld)
		held_send(f, 0);
	free(f->stage);
	free(f);
}

static const struct ox_link_ops faulty_ops = {
	.send = faulty_send,
	.recv = faulty_recv,
	.wait = faulty_wait,
	.flush = faulty_flush,
	.tx_slot = faulty_tx_slot,
	.tx_commit = faulty_tx_commit,
	.close = faulty_close,
};
static const struct ox_link_ops faulty_ops_zc = {
	.send = faulty_send,
	.recv = faulty_recv,
	.peek = faulty_peek,
	.release = faulty_release,
	.wait = faulty_wait,
	.flush = faulty_flush,
	.tx_slot = faulty_tx_slot,
	.tx_commit = faulty_tx_commit,
	.close = faulty_close,
};

int ox_link_faulty(struct ox_link *inner, const struct ox_fault_cfg *cfg, struct ox_link **out)
{
	struct faulty *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->stage = malloc(OX_ETH_HLEN + inner->mtu);
	if (!f->stage) {
		free(f);
		return -ENOMEM;
	}
	f->inner = inner;
	f->cfg = *cfg;
	f->rng = cfg->seed * 0x9E3779B97F4A7C15ull + 1;
	f->reorder = -1;
	f->link = *inner;
	f->link.ops = inner->ops->peek ? &faulty_ops_zc : &faulty_ops;
	f->link.priv = f;
	*out = &f->link;
	return 0;
}

void ox_link_faulty_stats(struct ox_link *l, struct ox_fault_stats *s)
{
	*s = ((struct faulty *)l->priv)->st;
}

int ox_fault_parse(const char *spec, struct ox_fault_cfg *cfg)
{
	char buf[256], *save = NULL;
	memset(cfg, 0, sizeof(*cfg));
	if (!spec || strlen(spec) >= sizeof(buf))
		return -EINVAL;
	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(t, '='), *end;
		if (!eq)
			return -EINVAL;
		*eq = 0;
		double v = strtod(eq + 1, &end);
		if (*end || v < 0)
			return -EINVAL;
		if (!strcmp(t, "drop"))
			cfg->drop_pct = v;
		else if (!strcmp(t, "dup"))
			cfg->dup_pct = v;
		else if (!strcmp(t, "reorder"))
			cfg->reorder_pct = v;
		else if (!strcmp(t, "delay"))
			cfg->delay_pct = v;
		else if (!strcmp(t, "delay_us"))
			cfg->delay_ns = (uint64_t)(v * 1000);
		else if (!strcmp(t, "seed"))
			cfg->seed = (uint64_t)v;
		else
			return -EINVAL;
	}
	if (cfg->drop_pct > 100 || cfg->dup_pct > 100 || cfg->reorder_pct > 100 ||
	    cfg->delay_pct > 100)
		return -EINVAL;
	if (cfg->delay_pct && !cfg->delay_ns)
		cfg->delay_ns = 100000;
	return 0;
}

int ox_link_faulty_spec(struct ox_link *raw, const char *spec, uint64_t salt, struct ox_link **out)
{
	*out = raw;
#ifdef OX_FAULT_ENV
	struct ox_fault_cfg cfg;
	if (!spec || !*spec)
		return 0;
	if (ox_fault_parse(spec, &cfg)) {
		fprintf(stderr, "ETHERMEM_OX_FAULTS: cannot parse '%s'\n", spec);
		return -EINVAL;
	}
	cfg.seed = cfg.seed * 1000003u + salt;
	return ox_link_faulty(raw, &cfg, out);
#else
	(void)spec;
	(void)salt;
	return 0;
#endif
}
