/*
 * pool.c - connecting to a pool, and regions: creation with placement by free
 * capacity, striping across nodes, named regions, listing and status.
 *
 * Layout: a region that fits on one node lives on the node with the most
 * free memory. A larger one is cut into chunks (4 MiB by default) assigned by
 * a repeating pattern of up to 64 entries whose shares follow each node's
 * free capacity. A node stores its chunks of the region contiguously, in
 * order, so where a byte lives is pure arithmetic - no per-chunk table. The
 * layout (size, chunk, node ids, pattern) is stored with a named region on
 * every node that holds part of it, so any client can open it.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/abi.h"
#include "common/config.h"
#include "common/auth.h"
#include "common/cluster.h"
#include "common/util.h"
#include "lib/internal.h"
#include "lib/pager_io.h"

_Static_assert(EM_MAX_SEG == EM_LAYOUT_MAX_SEG && EM_MAX_PATTERN == EM_LAYOUT_MAX_PATTERN,
	       "a region holds what a layout can say");

#define DEFAULT_CHUNK (4ull << 20)

struct conf {
	char nodes[4096], secret[4096], transport[16], ox_iface[64], redundancy[32];
	char etcd[1024], cluster[80];
	int timeout_ms;
	bool allow_down; /* checked, no effect */
	bool encrypt;
};

static int conf_cb(void *arg, const char *k, const char *v, int line)
{
	struct conf *c = arg;
	struct em_cfg_val cv;
	char who[64];

	if (!strcmp(k, "nodes"))
		snprintf(c->nodes, sizeof(c->nodes), "%s", v);
	else if (!strcmp(k, "secret-file") || !strcmp(k, "secret_file"))
		snprintf(c->secret, sizeof(c->secret), "%s", v);
	else if (!strcmp(k, "timeout-ms")) {
		snprintf(who, sizeof(who), "timeout-ms (config line %d)", line);
		if (em_cfg_parse(EM_CFG_TIMEOUT_MS, who, v, &cv))
			return -EINVAL;
		c->timeout_ms = (int)cv.num;
	} else if (!strcmp(k, "transport"))
		snprintf(c->transport, sizeof(c->transport), "%s", v);
	else if (!strcmp(k, "ox-iface"))
		snprintf(c->ox_iface, sizeof(c->ox_iface), "%s", v);
	else if (!strcmp(k, "redundancy"))
		snprintf(c->redundancy, sizeof(c->redundancy), "%s", v);
	else if (!strcmp(k, "allow-down")) {
		snprintf(who, sizeof(who), "allow-down (config line %d)", line);
		if (em_cfg_parse(EM_CFG_ALLOW_DOWN, who, v, &cv))
			return -EINVAL;
		c->allow_down = cv.num; /* checked, then ignored: see resolve() */
	} else if (!strcmp(k, "encrypt")) {
		snprintf(who, sizeof(who), "encrypt (config line %d)", line);
		if (em_cfg_parse(EM_CFG_ENCRYPT, who, v, &cv))
			return -EINVAL;
		c->encrypt = cv.num;
	} else if (!strcmp(k, "etcd"))
		snprintf(c->etcd, sizeof(c->etcd), "%s", v);
	else if (!strcmp(k, "cluster"))
		snprintf(c->cluster, sizeof(c->cluster), "%s", v);
	/* unknown keys belong to other tools sharing the file */
	return 0;
}

/* Fills what the caller left unset: options, then environment, then file. */
static int resolve(const struct em_pool_opts *o, struct conf *c)
{
	const char *e, *file = o ? o->config_file : NULL;
	struct conf f = { 0 };

	memset(c, 0, sizeof(*c));
	if (!file && em_cfg_env_isset(EM_CFG_CONFIG))
		file = getenv(em_settings[EM_CFG_CONFIG].env);
	if (file) {
		int rc = em_config_parse(file, conf_cb, &f);
		if (rc)
			return rc;
	} else {
		int rc = em_config_parse(em_settings[EM_CFG_CONFIG].def, conf_cb, &f);
		/* the default file may be absent, but not wrong */
		if (rc == -EINVAL)
			return rc;
	}
	if (o && o->nodes)
		snprintf(c->nodes, sizeof(c->nodes), "%s", o->nodes);
	else if (em_cfg_env_isset(EM_CFG_NODES) && !em_cfg_env_str(EM_CFG_NODES, &e))
		snprintf(c->nodes, sizeof(c->nodes), "%s", e);
	else
		memcpy(c->nodes, f.nodes, sizeof(c->nodes));
	if (o && o->secret_file)
		snprintf(c->secret, sizeof(c->secret), "%s", o->secret_file);
	else if (em_cfg_env_isset(EM_CFG_SECRET_FILE) && !em_cfg_env_str(EM_CFG_SECRET_FILE, &e))
		snprintf(c->secret, sizeof(c->secret), "%s", e);
	else
		memcpy(c->secret, f.secret, sizeof(c->secret));
	c->timeout_ms = o && o->timeout_ms ? o->timeout_ms : 0;
	if (!c->timeout_ms && em_cfg_env_isset(EM_CFG_TIMEOUT_MS)) {
		int64_t v;
		int rc = em_cfg_env_num(EM_CFG_TIMEOUT_MS, &v);
		if (rc)
			return rc;
		c->timeout_ms = (int)v;
	}
	if (!c->timeout_ms && !f.timeout_ms) {
		int64_t v;
		em_cfg_env_num(EM_CFG_TIMEOUT_MS, &v); /* unset: the table's default */
		f.timeout_ms = (int)v;
	}
	if (!c->timeout_ms)
		c->timeout_ms = f.timeout_ms;
	if (em_cfg_env_isset(EM_CFG_TRANSPORT) && !em_cfg_env_str(EM_CFG_TRANSPORT, &e))
		snprintf(c->transport, sizeof(c->transport), "%s", e);
	else
		memcpy(c->transport, f.transport, sizeof(c->transport));
	memcpy(c->ox_iface, f.ox_iface, sizeof(c->ox_iface));
	/* allow-down is always on now (a pool connects while one node
	 * answers); the setting is still checked so a bad value is an error */
	c->allow_down = f.allow_down;
	if (em_cfg_env_isset(EM_CFG_ALLOW_DOWN)) {
		int64_t v;
		int rc = em_cfg_env_num(EM_CFG_ALLOW_DOWN, &v);
		if (rc)
			return rc;
		c->allow_down = v;
	}
	c->encrypt = f.encrypt;
	if (o && o->encrypt) {
		c->encrypt = o->encrypt > 0;
	} else if (em_cfg_env_isset(EM_CFG_ENCRYPT)) {
		int64_t v;
		int rc = em_cfg_env_num(EM_CFG_ENCRYPT, &v);
		if (rc)
			return rc;
		c->encrypt = v;
	}
	if (em_cfg_env_isset(EM_CFG_REDUNDANCY) && !em_cfg_env_str(EM_CFG_REDUNDANCY, &e))
		snprintf(c->redundancy, sizeof(c->redundancy), "%s", e);
	else
		memcpy(c->redundancy, f.redundancy, sizeof(c->redundancy));
	/* etcd replaces the node list when given at any level */
	if (o && o->size >= offsetof(struct em_pool_opts, etcd) + sizeof(char *) && o->etcd)
		snprintf(c->etcd, sizeof(c->etcd), "%s", o->etcd);
	else if (!em_cfg_env_str(EM_CFG_ETCD, &e) && e && *e)
		snprintf(c->etcd, sizeof(c->etcd), "%s", e);
	else
		memcpy(c->etcd, f.etcd, sizeof(c->etcd));
	if (o && o->size >= sizeof(*o) && o->cluster)
		snprintf(c->cluster, sizeof(c->cluster), "%s", o->cluster);
	else if (!em_cfg_env_str(EM_CFG_CLUSTER, &e) && e && *e)
		snprintf(c->cluster, sizeof(c->cluster), "%s", e);
	else
		memcpy(c->cluster, f.cluster, sizeof(c->cluster));
	return 0;
}

struct dialer {
	em_pool *pool;
	unsigned i;
	struct em_chan *ch;
	int rc;
};

static void *dial_one(void *arg)
{
	struct dialer *d = arg;

	d->rc = em_tcp_connect(d->pool, &d->pool->nodes[d->i], true, &d->ch);
	return NULL;
}

/* Connects to every node at once, so that a node that does not answer
 * costs one handshake timeout, not one each. A pool is usable while one
 * node answers; the others get a broken channel that the reconnect
 * thread replaces when they come (back). */
static int connect_all(em_pool *pool, struct em_chan **ch)
{
	struct dialer *d = calloc(em_pool_n(pool), sizeof(*d));
	pthread_t *th = calloc(em_pool_n(pool), sizeof(*th));
	unsigned up = 0;
	int rc = 0, last = -ECONNREFUSED;

	if (!d || !th) {
		free(d);
		free(th);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		d[i] = (struct dialer){ .pool = pool, .i = i, .rc = -EAGAIN };
		if (pthread_create(&th[i], NULL, dial_one, &d[i]))
			dial_one(&d[i]), th[i] = 0;
	}
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		if (th[i])
			pthread_join(th[i], NULL);
		if (!d[i].rc) {
			ch[i] = d[i].ch;
			up++;
			continue;
		}
		em_log(EM_LOG_DEBUG, "node %s: %s", pool->nodes[i].addr, em_strerror(d[i].rc));
		/* a wrong secret is not a node that is down */
		if (d[i].rc == -EM_EAUTH || d[i].rc == -EM_EVERSION)
			rc = d[i].rc;
		last = d[i].rc;
		if (!rc)
			rc = em_tcp_dead(pool, &ch[i]);
	}
	if (!rc && !up)
		rc = last;
	if (rc)
		for (unsigned i = 0; i < em_pool_n(pool); i++)
			if (ch[i]) {
				ch[i]->ops->close(ch[i]);
				ch[i] = NULL;
			}
	free(d);
	free(th);
	return rc;
}

/* The transport's per-node setup, then the default queue's channels
 * wrapped into the transport's own. */
static int transport_start(em_pool *pool)
{
	const struct em_transport_ops *tp = pool->tp;
	int rc;

	if (tp->start && (rc = tp->start(pool->tpriv, pool)))
		return rc;
	for (unsigned i = 0; tp->wrap && i < em_pool_n(pool); i++) {
		struct em_chan *w;

		if (pool->dq->ch[i]->broken)
			continue; /* a node not there: nothing to wrap */
		if ((rc = tp->wrap(pool->tpriv, pool, i, pool->dq->ch[i], &w))) {
			em_log(EM_LOG_DEBUG, "node %s: %s: %s", pool->nodes[i].addr, tp->name,
			       em_strerror(rc));
			return rc;
		}
		pool->dq->ch[i] = w;
	}
	return 0;
}

int em_pool_connect(em_pool **out, const struct em_pool_opts *uo)
{
	struct em_pool_opts oo, *o = uo ? &oo : NULL;
	struct conf c;
	em_pool *pool;
	struct em_chan **ch;
	char *list, *save = NULL, *tok;
	const char *e;
	int64_t debug, poll_us, bulk_window;
	int rc;

	if (!out || em_opts_in(&oo, sizeof(oo), uo, EM_POOL_OPTS_SIZE_0_1))
		return -EINVAL;
	if (o && (o->encrypt < -1 || o->encrypt > 1))
		return -EINVAL;
	if ((rc = em_cfg_env_num(EM_CFG_DEBUG, &debug)))
		return rc;
	/* atomic: another pool's thread may be logging now */
	__atomic_store_n(&em_log_threshold, debug ? EM_LOG_DEBUG : EM_LOG_ERR, __ATOMIC_RELAXED);
	if ((rc = em_cfg_env_num(EM_CFG_POLL_US, &poll_us)) ||
	    (rc = em_cfg_env_num(EM_CFG_BULK_WINDOW, &bulk_window)))
		return rc;
	rc = resolve(o, &c);
	if (rc)
		return rc;
	if ((!c.nodes[0] && !c.etcd[0]) || !c.secret[0])
		return -EDESTADDRREQ;
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	/* the default redundancy of new regions; a value we cannot parse is
	 * refused rather than quietly giving regions less than was asked */
	pool->red = EM_RED_NONE;
	pool->encrypt = c.encrypt;
	if (c.redundancy[0] && em_red_conf(c.redundancy, &pool->red, &pool->red_k, &pool->red_m)) {
		em_log(EM_LOG_ERR, "redundancy '%s': want none, replicate:N or ec:K+M",
		       c.redundancy);
		free(pool);
		return -EINVAL;
	}
	/* the data path: an explicit option wins, then ETHERMEM_TRANSPORT,
	 * then the file; the interface likewise. A name or value the
	 * registry does not know is refused. */
	if (o && o->transport != EM_TRANSPORT_DEFAULT)
		pool->tp = em_transport_by_id((int)o->transport);
	else
		pool->tp = em_transport_find(c.transport[0] ? c.transport : "tcp");
	if (o && o->ox_iface)
		snprintf(pool->iface, sizeof(pool->iface), "%s", o->ox_iface);
	else if (em_cfg_env_isset(EM_CFG_OX_IFACE) && !em_cfg_env_str(EM_CFG_OX_IFACE, &e))
		snprintf(pool->iface, sizeof(pool->iface), "%s", e);
	else
		memcpy(pool->iface, c.ox_iface, sizeof(pool->iface));
	if (!pool->tp) {
		free(pool);
		return -EINVAL;
	}
	pthread_mutex_init(&pool->lock, NULL);
	pthread_mutex_init(&pool->id_lock, NULL);
	pool->timeout_ms = c.timeout_ms;
	/* how long a waiting call spins before it sleeps: the caller's
	 * choice, else the setting */
	if (o && (o->poll_us < -1 || o->poll_us > 1000000)) {
		free(pool);
		return -EINVAL;
	}
	pool->bulk_window = (uint32_t)bulk_window;
	pool->poll_us = o && o->poll_us ? (o->poll_us < 0 ? 0 : o->poll_us) : (int)poll_us;
	rc = em_key_load(c.secret, pool->key);
	if (rc)
		goto fail;
	if (c.etcd[0]) {
		/* the nodes are those registered now; the list given, if any,
		 * is not used */
		if ((rc = em_dir_open(pool, c.etcd, c.cluster, pool->timeout_ms)))
			goto fail;
		rc = em_dir_nodes(pool, c.nodes, sizeof(c.nodes));
		if (rc == 0)
			rc = -ENXIO; /* no node registered under the cluster */
		if (rc < 0) {
			em_log(EM_LOG_DEBUG, "etcd %s: %s", c.etcd, em_strerror(rc));
			goto fail;
		}
	}
	list = c.nodes;
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct em_node *nn, *n;
		while (*tok == ' ')
			tok++;
		if (pool->n == EM_MAX_SEG) {
			rc = -E2BIG;
			goto fail;
		}
		if (!pool->nodes && !(pool->nodes = calloc(EM_MAX_SEG, sizeof(*nn)))) {
			/* all the room up front: a node that joins later is
			 * added while other threads read the array */
			rc = -ENOMEM;
			goto fail;
		}
		nn = pool->nodes;
		n = &nn[pool->n];
		memset(n, 0, sizeof(*n));
		snprintf(n->addr, sizeof(n->addr), "%s", tok);
		rc = em_parse_addr(tok, n->host, sizeof(n->host), &n->port);
		if (rc)
			goto fail;
		pool->n++;
	}
	if (!em_pool_n(pool)) {
		rc = -EDESTADDRREQ;
		goto fail;
	}
	if (pool->tp->init && (rc = pool->tp->init(pool, &pool->tpriv)))
		goto fail;
	ch = calloc(EM_MAX_SEG, sizeof(*ch)); /* room for nodes that join */
	if (!ch) {
		rc = -ENOMEM;
		goto fail;
	}
	if ((rc = connect_all(pool, ch))) {
		free(ch);
		goto fail_tp;
	}
	rc = em_queue_create_on(pool, 64, ch, true, &pool->dq);
	if (rc) {
		for (unsigned j = 0; j < em_pool_n(pool); j++)
			ch[j]->ops->close(ch[j]);
		free(ch);
		goto fail_tp;
	}
	if ((rc = transport_start(pool))) {
		em_queue_destroy(pool->dq);
		goto fail_tp;
	}
	em_health_start(pool, c.etcd, c.cluster);
	*out = pool;
	return 0;
fail_tp:
	if (pool->tp->fini)
		pool->tp->fini(pool->tpriv, pool);
fail:
	em_dir_close(pool);
	free(pool->nodes);
	pthread_mutex_destroy(&pool->lock);
	pthread_mutex_destroy(&pool->id_lock);
	free(pool);
	return rc;
}

static void track(em_region *r)
{
	pthread_mutex_lock(&r->pool->lock);
	r->prev = NULL;
	r->next = r->pool->regions;
	if (r->next)
		r->next->prev = r;
	r->pool->regions = r;
	pthread_mutex_unlock(&r->pool->lock);
}

static void untrack(em_region *r)
{
	pthread_mutex_lock(&r->pool->lock);
	if (r->prev)
		r->prev->next = r->next;
	else
		r->pool->regions = r->next;
	if (r->next)
		r->next->prev = r->prev;
	pthread_mutex_unlock(&r->pool->lock);
}

void em_pool_close(em_pool *pool)
{
	void (*hook)(em_pool *);

	if (!pool)
		return;
	if ((hook = __atomic_load_n(&em_pool_close_hook, __ATOMIC_ACQUIRE)))
		hook(pool);
	em_health_stop(pool);
	pthread_mutex_lock(&pool->lock);
	em_drain_sweep(pool, true);
	pthread_mutex_unlock(&pool->lock);
	/* handles the caller left open: the nodes drop them with the session */
	while (pool->regions) {
		em_region *r = pool->regions;
		pool->regions = r->next;
		em_red_detach(r);
		free(r);
	}
	/* Goodbye to every node still there: a session whose connections
	 * merely break is kept a while for the client to come back to. */
	for (unsigned i = 0; i < em_pool_n(pool); i++)
		if (!pool->dq->ch[i]->broken)
			em_ctl(pool, i, EM_W_BYE, 0, 0, 0, NULL, 0, NULL, 0, NULL);
	/* the transport first: what it says to a node may need the session
	 * (an OmniXtend close must come while our windows make us a peer) */
	if (pool->tp->stop)
		pool->tp->stop(pool->tpriv, pool);
	/* closing the session's first connections ends the sessions: the nodes
	 * free this client's anonymous regions */
	em_queue_destroy(pool->dq);
	if (pool->tp->fini)
		pool->tp->fini(pool->tpriv, pool);
	em_dir_close(pool);
	pthread_mutex_destroy(&pool->lock);
	pthread_mutex_destroy(&pool->id_lock);
	free(pool->nodes);
	free(pool);
}

int em_pool_nodes(const em_pool *pool)
{
	return pool ? (int)em_pool_n(pool) : -EINVAL;
}

/* ---- layout ---- */

static int layout_encode(const em_region *r, uint8_t *out, size_t cap)
{
	struct em_layout l = { .size = r->size,
			       .chunk = r->chunk,
			       .nseg = r->nseg,
			       .plen = r->plen,
			       .red = r->red,
			       .k = r->red_k,
			       .m = r->red_m,
			       .epoch = r->epoch };

	for (unsigned i = 0; i < r->nseg; i++)
		em_node_id(r->pool, r->node[i], l.ids[i]);
	memcpy(l.pattern, r->pattern, r->plen);
	return em_layout_encode(out, cap, &l);
}

int em_region_layout(const em_region *r, uint8_t *out, size_t cap)
{
	return layout_encode(r, out, cap);
}

/* Ranks and counts follow from the pattern. */
void em_layout_derive(em_region *r)
{
	memset(r->cnt, 0, sizeof(r->cnt));
	for (unsigned j = 0; j < r->plen; j++)
		r->rank[j] = r->cnt[r->pattern[j]]++;
}

static int layout_decode(em_region *r, const uint8_t *in, uint16_t len,
			 uint8_t ids[EM_MAX_SEG][EM_NODE_ID_LEN])
{
	struct em_layout l;
	int rc = em_layout_decode(in, len, &l);

	if (rc)
		return rc;
	r->size = l.size;
	r->chunk = l.chunk;
	r->nseg = l.nseg;
	r->plen = l.plen;
	memcpy(ids, l.ids, (size_t)l.nseg * EM_NODE_ID_LEN);
	memcpy(r->pattern, l.pattern, l.plen);
	r->red = l.red;
	r->red_k = l.k;
	r->red_m = l.m;
	r->epoch = l.epoch;
	if (r->red == EM_RED_EC) {
		uint64_t row = r->chunk * r->red_k;
		r->rows = (r->size + row - 1) / row;
	}
	em_layout_derive(r);
	return 0;
}

/* Bytes segment `seg` holds: its chunks, the region's last one maybe short. */
uint64_t em_seg_bytes(const em_region *r, unsigned seg)
{
	uint64_t nchunks = (r->size + r->chunk - 1) / r->chunk;
	uint64_t full = nchunks / r->plen, rem = nchunks % r->plen, mine;
	uint64_t last = nchunks - 1;

	if (em_red_on(r))
		return em_red_seg_bytes(r, seg);
	mine = full * r->cnt[seg];
	for (unsigned j = 0; j < rem; j++)
		mine += r->pattern[j] == seg;
	if (mine && r->pattern[last % r->plen] == seg)
		return (mine - 1) * r->chunk + (r->size - last * r->chunk);
	return mine * r->chunk;
}

static int node_free(em_pool *pool, uint64_t *freeb, bool live)
{
	struct em_node_status *st;
	unsigned n;
	int rc;

	if (pool->dir && !live) /* what the nodes publish, without asking each */
		return em_dir_free(pool, freeb);
	n = em_pool_n(pool); /* a node may join meanwhile */
	st = calloc(n, sizeof(*st));
	if (!st)
		return -ENOMEM;
	st[0].size = sizeof(*st);
	rc = em_pool_status(pool, st, n);
	if (rc >= 0) {
		for (unsigned i = 0; i < n; i++)
			freeb[i] = st[i].capacity - st[i].used;
		rc = 0;
	}
	free(st);
	return rc;
}

/* Chooses nodes and a pattern for a new region (pool lock not held);
 * `cell` is what the caller asked for (0: default), for a redundant one. */
static int place_from(em_region *r, uint64_t chunk, uint64_t cell, bool live);

/* Published free bytes lag a second behind; when they say no, the nodes'
 * own answer decides. */
static int place(em_region *r, uint64_t chunk, uint64_t cell)
{
	int rc = place_from(r, chunk, cell, false);

	return rc == -ENOSPC && r->pool->dir ? place_from(r, chunk, cell, true) : rc;
}

static int place_from(em_region *r, uint64_t chunk, uint64_t cell, bool live)
{
	em_pool *pool = r->pool;
	uint64_t freeb[EM_MAX_SEG] = { 0 }, total = 0, page = 4096;
	unsigned best = 0, w[EM_MAX_SEG], sum = 0;
	int rc = node_free(pool, freeb, live);

	if (rc)
		return rc;
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		/* a node's own rounding: allocations are whole pages */
		freeb[i] &= ~(page - 1);
		total += freeb[i];
		if (freeb[i] > freeb[best])
			best = i;
	}
	if (em_red_on(r))
		return em_red_place(r, cell, freeb);
	if (((r->size + page - 1) & ~(page - 1)) <= freeb[best]) {
		/* Of the nodes with the most free memory, one picked at
		 * random: clients that create regions at the same moment see
		 * the same free bytes (published ones lag a second), and
		 * taking the first of equals put all of them on one node (16
		 * clients' regions on n1 in cluster_scale). */
		uint64_t pick;
		unsigned ties = 0;

		for (unsigned i = 0; i < em_pool_n(pool); i++)
			ties += freeb[i] == freeb[best];
		em_random(&pick, sizeof(pick));
		pick %= ties;
		for (unsigned i = 0; i < em_pool_n(pool); i++)
			if (freeb[i] == freeb[best] && !pick--) {
				best = i;
				break;
			}
		r->nseg = 1;
		r->node[0] = best;
		r->chunk = r->size;
		r->plen = 1;
		r->pattern[0] = 0;
		em_layout_derive(r);
		return 0;
	}
	if (r->size > total)
		return -ENOSPC;
	/* Shares of a 64-entry period in proportion to free memory; nodes with
	 * less than a chunk free take no share. */
	r->chunk = chunk;
	r->nseg = 0;
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		unsigned share =
			(unsigned)((double)EM_MAX_PATTERN * (double)freeb[i] / (double)total);
		if (freeb[i] < chunk)
			continue;
		r->node[r->nseg] = i;
		w[r->nseg] = share ? share : 1;
		sum += w[r->nseg];
		r->nseg++;
	}
	if (!r->nseg)
		return -ENOSPC;
	while (sum > EM_MAX_PATTERN) { /* rounding up may overshoot */
		unsigned m = 0;
		for (unsigned s = 1; s < r->nseg; s++)
			if (w[s] > w[m])
				m = s;
		w[m]--;
		sum--;
	}
	/* Smooth weighted round robin interleaves the shares, so consecutive
	 * chunks land on different nodes and large transfers fan out. */
	{
		int cur[EM_MAX_SEG] = { 0 };
		r->plen = sum;
		for (unsigned j = 0; j < sum; j++) {
			unsigned m = 0;
			for (unsigned s = 0; s < r->nseg; s++) {
				cur[s] += (int)w[s];
				if (cur[s] > cur[m])
					m = s;
			}
			cur[m] -= (int)sum;
			r->pattern[j] = (uint8_t)m;
		}
	}
	em_layout_derive(r);
	for (unsigned s = 0; s < r->nseg; s++)
		if (em_seg_bytes(r, s) > freeb[r->node[s]])
			return -ENOSPC;
	return 0;
}

/* ---- control calls ---- */

int em_ctl(em_pool *pool, unsigned node, uint8_t wop, uint32_t handle, uint32_t aux, uint64_t off,
	   const void *req, uint32_t req_len, void *resp, uint32_t cap, struct em_part *res)
{
	struct em_part p = { .wop = wop,
			     .handle = handle,
			     .aux = aux,
			     .off = off,
			     .req = req,
			     .req_len = req_len,
			     .resp = resp,
			     .resp_cap = cap };
	int rc;

	pthread_mutex_lock(&pool->lock);
	rc = em_ctl_call(pool, node, &p);
	em_health_kick(pool);
	pthread_mutex_unlock(&pool->lock);
	if (res)
		*res = p;
	return rc;
}

static void close_handles(em_region *r, unsigned upto)
{
	for (unsigned s = 0; s < upto; s++)
		if (r->handle[s])
			em_ctl(r->pool, r->node[s], EM_W_CLOSE, r->handle[s], 0, 0, NULL, 0, NULL,
			       0, NULL);
}

/* The transport's view of a new handle; on failure the handles close. */
static int attach(em_region *r)
{
	int rc = em_red_attach(r);

	if (!rc && (!r->pool->tp->attach || !(rc = r->pool->tp->attach(r->pool->tpriv, r))))
		return 0;
	em_red_detach(r);
	close_handles(r, r->nseg);
	return rc;
}

static int name_ok(const char *name)
{
	size_t n = strlen(name);

	if (!n || n > EM_NAME_MAX)
		return -ENAMETOOLONG;
	for (size_t i = 0; i < n; i++)
		if (name[i] < 0x21 || name[i] > 0x7e || name[i] == '/')
			return -EINVAL;
	return em_is_witness_name(name) ? -EINVAL : 0; /* a region's witness keeps it */
}

/* Opens a named region by the layouts its nodes hold, the newest of them;
 * in etcd mode a redundant region's parts are found so too, under their
 * own name `piece` (NULL: the region's name), since a repair moves them. */
static int region_open_named(em_pool *pool, const char *name, const char *piece, uint64_t dir_epoch,
			     em_region **out)
{
	uint8_t req[3 + EM_NAME_MAX], resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	uint8_t ids[EM_MAX_SEG][EM_NODE_ID_LEN];
	uint32_t handles[EM_MAX_SEG] = { 0 };
	bool down[EM_MAX_SEG] = { 0 };
	em_region *r = calloc(1, sizeof(*r));
	bool have_layout = false;
	int n = em_namelayout_encode(req, sizeof(req), piece ? piece : name, NULL, 0), rc = -ENOENT;

	if (!r)
		return -ENOMEM;
	r->pool = pool;
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		struct em_part res;
		char nm[EM_NAME_MAX + 1];
		const uint8_t *lay;
		uint16_t ll;
		int e = em_ctl(pool, i, EM_W_OPEN, 0, 0, 0, req, (uint32_t)n, resp, sizeof(resp),
			       &res);

		if (e == -ENOENT)
			continue;
		if (em_red_unreachable(e)) {
			/* a node that is down holds nothing we can use; the name
			 * may have lived there only: not "no such region" (create
			 * takes it as absent, so a pool with a node down still
			 * creates regions) */
			down[i] = true;
			rc = -EHOSTDOWN;
			continue;
		}
		if (e) {
			rc = e;
			goto fail;
		}
		handles[i] = res.r_region;
		/* the newest layout wins: a repair stores the next epoch with
		 * the parts it rebuilds, the survivors keep the one before; a
		 * part still being filled holds nothing yet and does not count */
		{
			struct em_layout peek;

			rc = em_namelayout_decode(resp, res.resp_len, nm, &lay, &ll);
			if (!rc)
				rc = em_layout_decode(lay, ll, &peek);
			if (!rc && !(peek.flags & EM_LAYOUT_FILLING) &&
			    (!have_layout || peek.epoch > r->epoch)) {
				rc = layout_decode(r, lay, ll, ids);
				have_layout = !rc;
			}
			if (rc)
				goto fail;
		}
	}
	if (!have_layout)
		goto fail;
	/* every node named in the layout must be one of ours */
	for (unsigned s = 0; s < r->nseg; s++) {
		static const uint8_t none[EM_NODE_ID_LEN];
		unsigned i;
		for (i = 0; i < em_pool_n(pool); i++) {
			uint8_t id[EM_NODE_ID_LEN];
			em_node_id(pool, i, id);
			if (!memcmp(id, ids[s], EM_NODE_ID_LEN))
				break;
		}
		if ((i == em_pool_n(pool) || !handles[i]) && em_red_on(r)) {
			/* a copy or chunk on a node that is gone or down: served
			 * by the others; the node index only has to be a valid one */
			r->lost |= 1ull << s;
			if (!memcmp(ids[s], none, EM_NODE_ID_LEN))
				r->lost_rec |= 1ull << s; /* recorded lost (redundancy.c) */
			else if (i == em_pool_n(pool))
				r->unplaced |= 1ull << s; /* its witnesses depend on it */
			r->node[s] = i < em_pool_n(pool) ? i : 0;
			continue;
		}
		if (i < em_pool_n(pool) && !handles[i] && !down[i]) {
			/* the node is here and answered that it has no such piece:
			 * what is left of a delete that could not reach every
			 * node, not a region */
			rc = -ENOENT;
			goto fail;
		}
		if (i == em_pool_n(pool) || !handles[i]) {
			em_log(EM_LOG_DEBUG, "region %s: a part's node is %s", name,
			       i == em_pool_n(pool) ? "not in the pool (restarted?)" : "down");
			rc = i == em_pool_n(pool) ? -EM_ENONODE : -EHOSTDOWN;
			goto fail;
		}
		r->node[s] = i;
		r->handle[s] = handles[i];
		handles[i] = 0;
	}
	for (unsigned i = 0; i < em_pool_n(pool); i++) /* stray same-named regions */
		if (handles[i])
			em_ctl(pool, i, EM_W_CLOSE, handles[i], 0, 0, NULL, 0, NULL, 0, NULL);
	snprintf(r->name, sizeof(r->name), "%s", name);
	if (piece)
		snprintf(r->piece, sizeof(r->piece), "%s", piece);
	r->dir_epoch = dir_epoch;
	r->named = true;
	/* a static list's replicated region: a loss its witnesses recorded
	 * while the copy that took it is away (redundancy.c) */
	if ((rc = em_red_witness_open(r))) {
		close_handles(r, r->nseg);
		free(r);
		return rc;
	}
	if ((rc = attach(r))) {
		free(r);
		return rc;
	}
	track(r);
	*out = r;
	return 0;
fail:
	for (unsigned i = 0; i < em_pool_n(pool); i++)
		if (handles[i])
			em_ctl(pool, i, EM_W_CLOSE, handles[i], 0, 0, NULL, 0, NULL, 0, NULL);
	close_handles(r, r->nseg); /* the parts already matched to a segment */
	free(r);
	return rc;
}

/* ---- named regions in etcd (directory.c holds the records) ---- */

/* The pool node a layout segment names: the same identity, so that a node
 * restarted on the same address (empty now) is not taken for the old one. */
int em_dir_seg_node(em_pool *pool, const struct em_region_rec *rec, unsigned s)
{
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		uint8_t id[EM_NODE_ID_LEN];
		em_node_id(pool, i, id);
		if (!memcmp(id, rec->seg_id[s], EM_NODE_ID_LEN))
			return (int)i;
	}
	return -1;
}

static int piece_req(uint8_t *req, size_t cap, const char *piece)
{
	return em_namelayout_encode(req, cap, piece, NULL, 0);
}

static int region_open_dir(em_pool *pool, const char *name, em_region **out)
{
	struct em_region_rec rec;
	uint8_t req[3 + EM_NAME_MAX], resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	em_region *r;
	int rc = em_dir_get(pool, name, &rec, NULL), n;

	if (rc)
		return rc;
	if (rec.nseg > EM_MAX_SEG || rec.plen > EM_MAX_PATTERN || name_ok(rec.piece))
		return -EPROTO;
	if (rec.red > EM_RED_NONE) {
		/* the parts' own layouts say where each is now: a repair stores
		 * them before it writes the record, and one that died between
		 * the two leaves the record behind them */
		if ((rc = region_open_named(pool, name, rec.piece, rec.epoch, out)))
			return rc == -EHOSTDOWN ? -EM_ELOST : rc;
		if ((*out)->red != rec.red || (*out)->red_k != rec.red_k ||
		    (*out)->red_m != rec.red_m || (*out)->size != rec.size) {
			em_region_close(*out);
			return -EPROTO;
		}
		return 0;
	}
	if (!(r = calloc(1, sizeof(*r))))
		return -ENOMEM;
	r->pool = pool;
	r->size = rec.size;
	r->chunk = rec.chunk;
	r->nseg = rec.nseg;
	r->plen = rec.plen;
	memcpy(r->pattern, rec.pattern, rec.plen);
	em_layout_derive(r);
	for (unsigned s = 0; s < r->nseg; s++) {
		struct em_part res;
		int i = em_dir_seg_node(pool, &rec, s);

		n = piece_req(req, sizeof(req), em_region_rec_piece(&rec, s));
		rc = i < 0 ? -EM_ENONODE
			   : em_ctl(pool, (unsigned)i, EM_W_OPEN, 0, 0, 0, req, (uint32_t)n, resp,
				    sizeof(resp), &res);
		/* a node that lost the piece restarted since: its bytes are gone */
		if (rc == -ENOENT)
			rc = -EM_ENONODE;
		if (rc) {
			em_log(EM_LOG_DEBUG, "region %s: part on %s: %s", name, rec.seg_addr[s],
			       em_strerror(rc));
			close_handles(r, s);
			free(r);
			return rc;
		}
		r->node[s] = (unsigned)i;
		r->handle[s] = res.r_region;
	}
	snprintf(r->name, sizeof(r->name), "%s", name);
	snprintf(r->piece, sizeof(r->piece), "%s", rec.piece);
	r->named = true;
	r->dir_epoch = rec.epoch;
	if ((rc = attach(r))) {
		free(r);
		return rc;
	}
	track(r);
	*out = r;
	return 0;
}

/* Removes the pieces of a layout from the nodes that hold them (those in
 * the pool; an absent node's piece went with it or is left to it). */
static void delete_pieces(em_pool *pool, const struct em_region_rec *rec)
{
	uint8_t req[3 + EM_NAME_MAX];

	for (unsigned s = 0; s < rec->nseg; s++) {
		int i = em_dir_seg_node(pool, rec, s);
		int n = piece_req(req, sizeof(req), em_region_rec_piece(rec, s));
		if (i >= 0)
			em_ctl(pool, (unsigned)i, EM_W_DELETE, 0, 0, 0, req, (uint32_t)n, NULL, 0,
			       NULL);
	}
}

/* What a create does when the name exists: the header's rule, the same
 * size opens it, and EM_REGION_EXCL refuses it. */
static int create_existing(em_pool *pool, const char *name, uint64_t bytes,
			   const struct em_region_opts *o, bool asked, em_region **out)
{
	struct em_region_rec rec;
	int rc = em_dir_get(pool, name, &rec, NULL);
	unsigned red;

	if (rc == -ENOENT)
		return -EAGAIN; /* gone again: the caller tries anew */
	if (rc)
		return rc;
	red = rec.red > EM_RED_NONE ? rec.red : EM_RED_NONE;
	if ((o->flags & EM_REGION_EXCL) || rec.size != bytes ||
	    (asked && (red != o->redundancy || rec.red_k != o->red_k || rec.red_m != o->red_m)))
		return -EEXIST;
	return region_open_dir(pool, name, out);
}

/* One attempt: pieces under a fresh name, then the record. -EAGAIN when
 * the nodes had no room for our pieces (maybe a racer's pieces held it). */
static int create_dir_once(em_pool *pool, const char *name, uint64_t bytes, uint64_t chunk,
			   const struct em_region_opts *o, em_region **out)
{
	uint8_t layout[EM_MAX_LAYOUT], req[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	uint8_t resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT], rnd[12];
	struct em_region_rec rec = { 0 };
	bool live_tried = false;
	em_region *r;
	int rc, ll, n;

	if (!(r = calloc(1, sizeof(*r))))
		return -ENOMEM;
	r->pool = pool;
	r->size = bytes;
	if (o->redundancy != EM_RED_NONE) {
		r->red = (uint8_t)o->redundancy;
		r->red_k = (uint8_t)o->red_k;
		r->red_m = (uint8_t)o->red_m;
	}
	if ((rc = place(r, chunk, o->chunk_size)))
		goto fail;
again:
	/* the pieces' own name, unique to this attempt */
	em_random(rnd, sizeof(rnd));
	memset(&rec, 0, sizeof(rec));
	n = snprintf(rec.piece, sizeof(rec.piece), ".p");
	for (unsigned i = 0; i < sizeof(rnd); i++)
		n += snprintf(rec.piece + n, sizeof(rec.piece) - (size_t)n, "%02x", rnd[i]);
	if ((ll = layout_encode(r, layout, sizeof(layout))) < 0) {
		rc = ll;
		goto fail;
	}
	n = em_namelayout_encode(req, sizeof(req), rec.piece, layout, (uint16_t)ll);
	for (unsigned s = 0; s < r->nseg; s++) {
		struct em_part res;
		rc = em_ctl(pool, r->node[s], EM_W_CREATE, 0, EM_WC_NAMED | EM_WC_EXCL,
			    em_seg_bytes(r, s), req, (uint32_t)n, resp, sizeof(resp), &res);
		if (rc) {
			close_handles(r, s);
			rec.nseg = s;
			delete_pieces(pool, &rec);
			/* a node fuller than it published: place again by what the
			 * nodes say now */
			if ((rc == -ENOSPC || rc == -EM_EDRAINING) && !live_tried) {
				live_tried = true;
				memset(r->handle, 0, sizeof(r->handle));
				if (!(rc = place_from(r, chunk, o->chunk_size, true)))
					goto again;
			}
			goto fail;
		}
		r->handle[s] = res.r_region;
		em_node_id(pool, r->node[s], rec.seg_id[s]);
		snprintf(rec.seg_addr[s], sizeof(rec.seg_addr[s]), "%s",
			 pool->nodes[r->node[s]].addr);
	}
	rec.size = r->size;
	rec.chunk = r->chunk;
	rec.epoch = 1;
	r->dir_epoch = 1;
	rec.nseg = r->nseg;
	rec.plen = r->plen;
	memcpy(rec.pattern, r->pattern, r->plen);
	if (em_red_on(r)) {
		rec.red = r->red;
		rec.red_k = r->red_k;
		rec.red_m = r->red_m;
		rec.lepoch = r->epoch;
	}
	rc = em_dir_create(pool, name, &rec);
	if (rc) {
		/* -EEXIST: another client won the name; ours goes */
		close_handles(r, r->nseg);
		delete_pieces(pool, &rec);
		goto fail;
	}
	snprintf(r->name, sizeof(r->name), "%s", name);
	snprintf(r->piece, sizeof(r->piece), "%s", rec.piece);
	r->named = true;
	if ((rc = attach(r))) {
		free(r);
		return rc;
	}
	track(r);
	*out = r;
	return 0;
fail:
	free(r);
	/* a node that began draining since it was published: place anew */
	return rc == -ENOSPC || rc == -EM_EDRAINING ? -EAGAIN : rc;
}

/* A racer's pieces may hold the room ours need, and ours theirs, so both
 * fail for space: whoever finds the name taken then takes the winner's
 * region, and when no one won, the attempts are spread out and repeated. */
static int region_create_dir(em_pool *pool, const char *name, uint64_t bytes, uint64_t chunk,
			     const struct em_region_opts *o, bool asked, em_region **out)
{
	int rc = -EAGAIN;

	for (int attempt = 0; attempt < 6 && rc == -EAGAIN; attempt++) {
		if (attempt) {
			uint32_t jitter;
			em_random(&jitter, sizeof(jitter));
			usleep(1000u * (1u << attempt) + jitter % (4000u << attempt));
		}
		rc = create_existing(pool, name, bytes, o, asked, out);
		if (rc != -EAGAIN)
			return rc;
		rc = create_dir_once(pool, name, bytes, chunk, o, out);
		if (rc == -EEXIST)
			rc = create_existing(pool, name, bytes, o, asked, out);
	}
	return rc == -EAGAIN ? -ENOSPC : rc;
}

/* The name goes first, so it is free again at once even when a node
 * holding a piece is down; the pieces follow where their nodes answer. */
static int region_delete_dir(em_pool *pool, const char *name)
{
	struct em_region_rec rec;
	int64_t rev;
	int rc = em_dir_get(pool, name, &rec, &rev);

	if (rc)
		return rc;
	if ((rc = em_dir_delete(pool, name, rev)))
		return rc;
	if (rec.red > EM_RED_NONE) {
		/* repairs put parts on other nodes, some maybe half made by
		 * one that died: the name is ours alone, so clear it everywhere */
		uint8_t req[3 + EM_NAME_MAX];
		int n = piece_req(req, sizeof(req), rec.piece);

		for (unsigned i = 0; i < em_pool_n(pool); i++)
			em_ctl(pool, i, EM_W_DELETE, 0, 0, 0, req, (uint32_t)n, NULL, 0, NULL);
		return 0;
	}
	delete_pieces(pool, &rec);
	return 0;
}

int em_region_open(em_pool *pool, const char *name, em_region **out)
{
	int rc;

	if (!pool || !name || !out)
		return -EINVAL;
	if ((rc = name_ok(name)))
		return rc;
	if (pool->dir)
		return region_open_dir(pool, name, out);
	return region_open_named(pool, name, NULL, 0, out);
}

/* ---- named regions on a static node list ----
 *
 * Without a directory nothing but the nodes themselves can arbitrate a
 * name. Every client computes the same home node for a name (rendezvous
 * hashing over the node identities, so the order of the node list does not
 * matter) and places a part of the region there; that part is created
 * first, with EXCL, and is the claim: the client that creates it owns the
 * name, every other one waits for the owner's region to open. Pieces of
 * the name on other nodes can then only be what a delete with a node down
 * left behind, so the owner clears them before creating its own. */

#define CLAIM_WAIT_MS 2000 /* the longest an owner takes to finish a create */

static unsigned name_home(em_pool *pool, const char *name)
{
	uint64_t best = 0;
	unsigned home = 0;
	bool any = false;

	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		uint8_t id[EM_NODE_ID_LEN];
		uint64_t h = 1469598103934665603ull; /* FNV-1a */

		if (em_node_down(pool, i))
			continue;
		em_node_id(pool, i, id);
		for (const char *c = name; *c; c++)
			h = (h ^ (uint8_t)*c) * 1099511628211ull;
		for (unsigned k = 0; k < EM_NODE_ID_LEN; k++)
			h = (h ^ id[k]) * 1099511628211ull;
		h ^= h >> 29; /* FNV's last bytes mix poorly into the top */
		if (!any || h > best) {
			best = h;
			home = i;
			any = true;
		}
	}
	return home;
}

/* The loss records a static list's witnesses keep for the name
 * (redundancy.c), deleted on every live node; etcd keeps the record, so
 * there are none in etcd mode. */
static void clear_witnesses(em_pool *pool, const char *name)
{
	uint8_t wreq[3 + EM_NAME_MAX];
	char wn[EM_NAME_MAX + 1];
	int wl;

	if (pool->dir)
		return;
	em_witness_name(name, wn);
	wl = em_namelayout_encode(wreq, sizeof(wreq), wn, NULL, 0);
	for (unsigned i = 0; i < em_pool_n(pool) && wl > 0; i++)
		if (!em_node_down(pool, i))
			em_ctl(pool, i, EM_W_DELETE, 0, 0, 0, wreq, (uint32_t)wl, NULL, 0, NULL);
}

/* Pieces a delete left behind on nodes that were down then, and the loss
 * records of an older region of the name. With the claim held (on node
 * `keep`) nobody else is creating the name, so they are remnants, never
 * another client's new region. */
static void clear_strays(em_pool *pool, const char *name, const uint8_t *dreq, int dn, int keep)
{
	for (unsigned i = 0; i < em_pool_n(pool); i++)
		if ((int)i != keep && !em_node_down(pool, i))
			em_ctl(pool, i, EM_W_DELETE, 0, 0, 0, dreq, (uint32_t)dn, NULL, 0, NULL);
	clear_witnesses(pool, name);
}

/* Places and creates the parts, the one on node `home` (-1: none) first
 * and exclusive: -EEXIST from it means another client owns the name. */
static int region_create_parts(em_pool *pool, const char *name, uint64_t bytes, uint64_t chunk,
			       const struct em_region_opts *o, int home, em_region **out)
{
	uint8_t layout[EM_MAX_LAYOUT], req[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	uint8_t resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT], dreq[3 + EM_NAME_MAX];
	unsigned ord[EM_MAX_SEG], no = 0;
	em_region *r = calloc(1, sizeof(*r));
	int rc, ll, n, dn = 0, hs = -1;

	if (!r)
		return -ENOMEM;
	r->pool = pool;
	r->size = bytes;
	r->red = (uint8_t)o->redundancy;
	r->red_k = (uint8_t)o->red_k;
	r->red_m = (uint8_t)o->red_m;
	rc = place(r, chunk, o->chunk_size);
	if (rc)
		goto fail;
	if (name) {
		snprintf(r->name, sizeof(r->name), "%s", name);
		r->named = true;
		dn = em_namelayout_encode(dreq, sizeof(dreq), name, NULL, 0);
	}
	if (home >= 0 && r->nseg == 1 && !em_red_on(r) && r->node[0] != (unsigned)home) {
		/* a region that fits on one node goes to the name's home when
		 * it fits there, so that the home can arbitrate */
		uint64_t freeb[EM_MAX_SEG] = { 0 };

		if (!node_free(pool, freeb, false) &&
		    ((bytes + 4095) & ~4095ull) <= (freeb[home] & ~4095ull))
			r->node[0] = (unsigned)home;
	}
	for (unsigned s = 0; s < r->nseg; s++)
		if (home >= 0 && r->node[s] == (unsigned)home && hs < 0)
			hs = (int)s;
	if (hs >= 0)
		ord[no++] = (unsigned)hs;
	for (unsigned s = 0; s < r->nseg; s++)
		if ((int)s != hs)
			ord[no++] = s;
	ll = layout_encode(r, layout, sizeof(layout));
	if (ll < 0) {
		rc = ll;
		goto fail;
	}
	n = em_namelayout_encode(req, sizeof(req), name, layout, (uint16_t)ll);
	for (unsigned j = 0; j < no; j++) {
		unsigned s = ord[j];
		struct em_part res;

		if (name && j == 0 && hs < 0)
			clear_strays(pool, name, dreq, dn, -1);
		rc = em_ctl(pool, r->node[s], EM_W_CREATE, 0, name ? EM_WC_NAMED | EM_WC_EXCL : 0,
			    em_seg_bytes(r, s), req, (uint32_t)n, resp, sizeof(resp), &res);
		if (rc) {
			/* undo the nodes already done, so nothing half-made
			 * stays; the claim goes last, when the rest is gone */
			close_handles(r, r->nseg);
			if (name)
				for (unsigned k = j; k-- > 0;)
					em_ctl(pool, r->node[ord[k]], EM_W_DELETE, 0, 0, 0, dreq,
					       (uint32_t)dn, NULL, 0, NULL);
			if (rc == -EEXIST && j == 0 && hs >= 0)
				rc = -EBUSY; /* the claim is another client's */
			goto fail;
		}
		r->handle[s] = res.r_region;
		if (name && j == 0 && hs >= 0)
			clear_strays(pool, name, dreq, dn, (int)r->node[hs]);
	}
	if ((rc = attach(r)))
		goto fail;
	track(r);
	*out = r;
	return 0;
fail:
	free(r);
	return rc;
}

/* Opens an existing region of the name when it is what was asked for. */
static int region_open_same(em_pool *pool, const char *name, uint64_t bytes,
			    const struct em_region_opts *o, bool asked, unsigned flags,
			    em_region **out)
{
	int rc = region_open_named(pool, name, NULL, 0, out);

	if (!rc && ((flags & EM_REGION_EXCL) || (*out)->size != bytes ||
		    (asked && ((*out)->red != o->redundancy || (*out)->red_k != o->red_k ||
			       (*out)->red_m != o->red_m)))) {
		em_region_close(*out);
		return -EEXIST;
	}
	return rc;
}

/* Whether the name's home node holds a piece of it: a claim. */
static bool claimed(em_pool *pool, const char *name)
{
	uint8_t req[3 + EM_NAME_MAX], resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	int n = em_namelayout_encode(req, sizeof(req), name, NULL, 0);
	unsigned home = name_home(pool, name);
	struct em_part res;

	if (em_ctl(pool, home, EM_W_OPEN, 0, 0, 0, req, (uint32_t)n, resp, sizeof(resp), &res))
		return false;
	em_ctl(pool, home, EM_W_CLOSE, res.r_region, 0, 0, NULL, 0, NULL, 0, NULL);
	return true;
}

static int region_create_named(em_pool *pool, const char *name, uint64_t bytes, uint64_t chunk,
			       const struct em_region_opts *o, bool asked, unsigned flags,
			       em_region **out)
{
	int rc;

	if ((rc = name_ok(name)))
		return rc;
	for (int attempt = 0; attempt < 2; attempt++) {
		/* a name must be unique across the pool, not just on the
		 * nodes placement picks, so look for it everywhere first */
		rc = region_open_same(pool, name, bytes, o, asked, flags, out);
		if (rc != -ENOENT && rc != -EHOSTDOWN)
			return rc;
		rc = region_create_parts(pool, name, bytes, chunk, o, (int)name_home(pool, name),
					 out);
		/* no room may be only because the owner's region took it */
		if (rc != -EBUSY && !(rc == -ENOSPC && claimed(pool, name)))
			return rc;
		/* another client holds the claim: its region appears as soon
		 * as its last part is made */
		for (int ms = 0; ms < CLAIM_WAIT_MS; ms += 2) {
			rc = region_open_same(pool, name, bytes, o, asked, flags, out);
			if (rc != -ENOENT)
				return rc;
			usleep(2000);
		}
		/* nothing came of it: the claim is what a delete with the home
		 * node down left behind (or its creator died); clear it */
		{
			uint8_t dreq[3 + EM_NAME_MAX];
			int dn = em_namelayout_encode(dreq, sizeof(dreq), name, NULL, 0);

			em_ctl(pool, name_home(pool, name), EM_W_DELETE, 0, 0, 0, dreq,
			       (uint32_t)dn, NULL, 0, NULL);
		}
	}
	return -EEXIST;
}

int em_region_create(em_pool *pool, const char *name, uint64_t bytes,
		     const struct em_region_opts *opts, em_region **out)
{
	struct em_region_opts o;
	uint64_t chunk = DEFAULT_CHUNK;
	unsigned flags;
	bool asked;
	int rc;

	if (!pool || !out || bytes == 0 || em_opts_in(&o, sizeof(o), opts, EM_REGION_OPTS_SIZE_0_1))
		return -EINVAL;
	asked = o.redundancy != EM_RED_DEFAULT;
	if (!asked) {
		o.redundancy = pool->red;
		o.red_k = pool->red_k;
		o.red_m = pool->red_m;
	}
	if (o.redundancy == EM_RED_NONE ? o.red_k || o.red_m
					: !em_red_valid(o.redundancy, o.red_k, o.red_m))
		return -EINVAL;
	/* an EC cell travels in one request */
	if (o.redundancy == EM_RED_EC && o.chunk_size > EM_MAX_IO)
		return -EINVAL;
	if (o.chunk_size)
		chunk = o.chunk_size;
	flags = o.flags;
	if ((flags & ~EM_REGION_EXCL) || chunk < 4096 || (chunk & 4095))
		return -EINVAL;
	if (name && pool->dir) {
		if ((rc = name_ok(name)))
			return rc;
		return region_create_dir(pool, name, bytes, chunk, &o, asked, out);
	}
	if (name)
		return region_create_named(pool, name, bytes, chunk, &o, asked, flags, out);
	return region_create_parts(pool, NULL, bytes, chunk, &o, -1, out);
}

int em_region_close(em_region *r)
{
	if (!r)
		return -EINVAL;
	untrack(r);
	em_red_detach(r); /* stops its repair first: that uses the handles */
	if (r->pool->tp->detach)
		r->pool->tp->detach(r->pool->tpriv, r);
	close_handles(r, r->nseg);
	free(r);
	return 0;
}

int em_region_delete(em_pool *pool, const char *name)
{
	uint8_t req[3 + EM_NAME_MAX];
	int rc, n, found = 0, err = 0, down = 0;

	if (!pool || !name)
		return -EINVAL;
	if ((rc = name_ok(name)))
		return rc;
	if (pool->dir)
		return region_delete_dir(pool, name);
	n = em_namelayout_encode(req, sizeof(req), name, NULL, 0);
	for (unsigned i = 0; i < em_pool_n(pool); i++) {
		rc = em_ctl(pool, i, EM_W_DELETE, 0, 0, 0, req, (uint32_t)n, NULL, 0, NULL);
		if (!rc)
			found++;
		else if (em_red_unreachable(rc))
			down++;
		else if (rc != -ENOENT)
			err = rc;
	}
	clear_witnesses(pool, name); /* its loss records (redundancy.c) */
	/* A piece left on a node that is down makes no region: open treats
	 * such remnants as absent, and the next create of the name clears
	 * them. */
	if (down)
		em_log(EM_LOG_DEBUG, "delete %s: %d node(s) down keep a remnant", name, down);
	return err ? err : found ? 0 : down ? -EHOSTDOWN : -ENOENT;
}

uint64_t em_region_size(const em_region *r)
{
	return r ? r->size : 0;
}

em_pool *em_region_pool(const em_region *r)
{
	return r ? r->pool : NULL;
}

/* The caller's element i of an array with stride `stride`. */
#define AT(base, stride, i) ((void *)((char *)(base) + (size_t)(i) * (stride)))

/* A part being filled whose layout carries its repair's progress gives it
 * to the listing (the furthest, when several parts are filled). */
static void progress(struct em_region_info *ri, size_t stride, const struct em_layout *l)
{
	if (!(l->flags & EM_LAYOUT_PROGRESS) ||
	    stride < offsetof(struct em_region_info, to_rebuild) + sizeof(ri->to_rebuild))
		return;
	if (!ri->to_rebuild || l->done * (double)ri->to_rebuild > ri->rebuilt * (double)l->total) {
		ri->rebuilt = l->done;
		ri->to_rebuild = l->total;
	}
}

/* Whether a layout names no node for a segment: a loss recorded there
 * (redundancy.c), so the region is degraded though every node answers. */
static bool lost_in(const struct em_layout *l)
{
	static const uint8_t none[EM_NODE_ID_LEN];

	for (unsigned s = 0; s < l->nseg; s++)
		if (!memcmp(l->ids[s], none, EM_NODE_ID_LEN))
			return true;
	return false;
}

int em_region_list(em_pool *pool, struct em_region_info *info, unsigned max)
{
	size_t stride = max && info ? em_out_size(info, EM_REGION_INFO_SIZE_0_1) : 0;
	char(*names)[EM_NAME_MAX + 1];
	uint8_t *buf, *listed;
	uint32_t *newest; /* per listed entry: the newest finished layout's epoch */
	unsigned count = 0, cap = 64;
	int rc = 0;

	if (!pool || (max && !stride))
		return -EINVAL;
	if (pool->dir)
		return em_dir_list(pool, info, max, stride);
	buf = malloc(EM_MAX_CTRL);
	/* per listed entry: segments its layout names, then nodes that listed
	 * it; fewer nodes than segments means a part is gone (degraded) */
	listed = calloc(4 * (size_t)max + 1, 1); /* then: a part is being filled, a loss recorded */
	/* every name counted so far, to count a striped region once even
	 * past max: info[] is the caller's and may be shorter */
	names = malloc(cap * sizeof(*names));
	newest = calloc((size_t)max + 1, sizeof(*newest));
	if (!buf || !names || !listed || !newest) {
		free(buf);
		free(names);
		free(listed);
		free(newest);
		return -ENOMEM;
	}

	for (unsigned i = 0; i < em_pool_n(pool) && !rc; i++) {
		uint64_t first = 0, total = 1;
		while (first < total) {
			struct em_part res;
			size_t pos = 0;

			rc = em_ctl(pool, i, EM_W_LIST, 0, 0, first, NULL, 0, buf, EM_MAX_CTRL,
				    &res);
			if (em_red_unreachable(rc)) {
				/* what a node that is down holds is not listed (a
				 * redundant region's entry shows it as degraded) */
				rc = 0;
				break;
			}
			if (rc)
				break;
			total = res.r_off;
			if (res.r_aux == 0)
				break;
			for (uint32_t e = 0; e < res.r_aux; e++) {
				struct em_layout l;
				char nm[EM_NAME_MAX + 1];
				const uint8_t *lay;
				uint64_t sz;
				uint16_t ll;
				unsigned k;

				if (em_list_entry_decode(buf, res.resp_len, &pos, &sz, nm, &lay,
							 &ll))
					break; /* the rest of this reply cannot be trusted */
				if (em_layout_decode(lay, ll, &l) || em_is_witness_name(nm))
					continue; /* a witness's loss record is no region */
				/* a striped region is listed by each of its nodes */
				for (k = 0; k < count; k++)
					if (!strcmp(names[k], nm))
						break;
				if (k < count) {
					if (k < max) {
						struct em_region_info *ri = AT(info, stride, k);
						listed[k + max] = (uint8_t)(listed[k + max] + 1);
						if (l.flags & EM_LAYOUT_FILLING) {
							listed[k + 2 * max] = 1;
							progress(ri, stride, &l);
							continue;
						}
						if (l.epoch > newest[k]) {
							listed[k + 3 * max] = 0;
							newest[k] = l.epoch;
						}
						if (l.epoch == newest[k])
							listed[k + 3 * max] |= lost_in(&l);
						if (stride >=
							    offsetof(struct em_region_info, epoch) +
								    sizeof(ri->epoch) &&
						    l.epoch > ri->epoch)
							ri->epoch = l.epoch;
					}
					continue;
				}
				if (count == cap) {
					void *nn = realloc(names, 2 * cap * sizeof(*names));
					if (!nn) {
						rc = -ENOMEM;
						break;
					}
					names = nn;
					cap *= 2;
				}
				memcpy(names[count], nm, sizeof(nm));
				if (count < max) {
					struct em_region_info ri = { .size = sizeof(ri) };

					snprintf(ri.name, sizeof(ri.name), "%s", nm);
					ri.bytes = l.size;
					ri.chunk_size = l.chunk;
					ri.nodes = l.nseg;
					ri.redundancy = l.red ? l.red : EM_RED_NONE;
					ri.red_k = l.k;
					ri.red_m = l.m;
					/* a part being filled has the epoch to come */
					ri.epoch = l.flags & EM_LAYOUT_FILLING ? 0 : l.epoch;
					em_out_put(AT(info, stride, count), stride, &ri,
						   sizeof(ri));
					progress(AT(info, stride, count), stride, &l);
				}
				if (count < max) {
					listed[count] = (uint8_t)l.nseg;
					listed[count + 2 * max] = l.flags & EM_LAYOUT_FILLING;
					listed[count + 3 * max] = !(l.flags & EM_LAYOUT_FILLING) &&
								  lost_in(&l);
					newest[count] = l.flags & EM_LAYOUT_FILLING ? 0 : l.epoch;
				}
				count++;
			}
			if (rc)
				break;
			first += res.r_aux;
		}
	}
	for (unsigned k = 0; !rc && k < count && k < max; k++) {
		struct em_region_info *ri = AT(info, stride, k);
		if (stride >= offsetof(struct em_region_info, state) + sizeof(ri->state) &&
		    (listed[k + max] + 1u < listed[k] || listed[k + 3 * max]))
			ri->state = EM_STATE_DEGRADED;
		if (stride >= offsetof(struct em_region_info, state) + sizeof(ri->state) &&
		    listed[k + 2 * max])
			ri->state = EM_STATE_REPAIRING;
	}
	/* what this process's own handles know is newer than the listing: a
	 * part found dead before its node is gone from the listing, a repair */
	pthread_mutex_lock(&pool->lock);
	for (em_region *h = pool->regions; !rc && h; h = h->next) {
		if (!h->named || !em_red_on(h) ||
		    stride < offsetof(struct em_region_info, state) + sizeof(info->state))
			continue;
		for (unsigned k = 0; k < count && k < max; k++) {
			struct em_region_info *ri = AT(info, stride, k);
			unsigned st = em_red_state(h);
			uint64_t done, total;
			if (strcmp(ri->name, h->name))
				continue;
			if (st > ri->state)
				ri->state = st;
			em_red_progress(h, &done, &total);
			if (total && stride >= offsetof(struct em_region_info, to_rebuild) +
						       sizeof(ri->to_rebuild)) {
				ri->rebuilt = done;
				ri->to_rebuild = total;
			}
		}
	}
	pthread_mutex_unlock(&pool->lock);
	free(buf);
	free(names);
	free(listed);
	free(newest);
	return rc ? rc : (int)count;
}

int em_status_raw(em_pool *pool, unsigned node, uint64_t v[EM_ST__COUNT])
{
	uint8_t buf[EM_STATUS_LEN];
	struct em_part res;
	int rc;

	if (!pool || node >= em_pool_n(pool))
		return -EINVAL;
	rc = em_ctl(pool, node, EM_W_STATUS, 0, 0, 0, NULL, 0, buf, sizeof(buf), &res);
	return rc ? rc : em_status_decode(buf, res.resp_len, v);
}

int em_pool_status(em_pool *pool, struct em_node_status *st, unsigned max)
{
	size_t stride = max && st ? em_out_size(st, EM_NODE_STATUS_SIZE_0_1) : 0;
	uint8_t buf[EM_STATUS_LEN];

	if (!pool || (max && !stride))
		return -EINVAL;
	for (unsigned i = 0; i < em_pool_n(pool) && i < max; i++) {
		struct em_part res;
		struct em_node_status one, *s = &one;
		uint64_t v[EM_ST__COUNT];
		int rc = em_ctl(pool, i, EM_W_STATUS, 0, 0, 0, NULL, 0, buf, sizeof(buf), &res);

		if (em_red_unreachable(rc)) {
			/* not answering: listed, with capacity 0 */
			memset(s, 0, sizeof(*s));
			s->size = sizeof(*s);
			snprintf(s->addr, sizeof(s->addr), "%s", pool->nodes[i].addr);
			em_out_put(AT(st, stride, i), stride, s, sizeof(*s));
			continue;
		}
		if (rc || (rc = em_status_decode(buf, res.resp_len, v)))
			return rc;
		memset(s, 0, sizeof(*s));
		s->size = sizeof(*s);
		snprintf(s->addr, sizeof(s->addr), "%s", pool->nodes[i].addr);
		s->capacity = v[EM_ST_CAPACITY];
		s->used = v[EM_ST_USED];
		s->regions = (uint32_t)v[EM_ST_REGIONS];
		s->named_regions = (uint32_t)v[EM_ST_NAMED];
		s->clients = (uint32_t)v[EM_ST_CLIENTS];
		s->huge_pages = (uint32_t)v[EM_ST_HUGE];
		s->uptime_s = v[EM_ST_UPTIME];
		s->bytes_in = v[EM_ST_BYTES_IN];
		s->bytes_out = v[EM_ST_BYTES_OUT];
		s->auth_failures = v[EM_ST_AUTHFAIL];
		s->ox_rx_frames = v[EM_ST_OX_RX];
		s->ox_tx_frames = v[EM_ST_OX_TX];
		s->ox_retransmits = v[EM_ST_OX_RTX];
		s->ox_denied = v[EM_ST_OX_DENIED];
		s->ox_unknown = v[EM_ST_OX_UNKNOWN] + v[EM_ST_OX_SPOOFED];
		s->ox_malformed = v[EM_ST_OX_MALFORMED];
		s->ox_attached = (uint32_t)v[EM_ST_OX_ATTACHED];
		for (int k = 0; k < EM_STAT_OPS; k++) {
			s->ops[k] = v[EM_ST_OPS0 + k];
			s->errors[k] = v[EM_ST_ERR0 + k];
		}
		for (int k = 0; k < 3; k++) {
			s->lat_p50_ns[k] = v[EM_ST_LAT0 + 3 * k];
			s->lat_p99_ns[k] = v[EM_ST_LAT0 + 3 * k + 1];
			s->lat_p999_ns[k] = v[EM_ST_LAT0 + 3 * k + 2];
		}
		em_out_put(AT(st, stride, i), stride, s, sizeof(*s));
	}
	return (int)em_pool_n(pool);
}
