/*
 * directory.c - a pool whose membership and named regions live in etcd.
 *
 * With etcd endpoints (em_pool_opts.etcd, ETHERMEM_ETCD, the config file's
 * etcd key) a client needs no node list: the nodes are those whose records
 * are under /ethermem/CLUSTER/nodes/ (register.c on the node side keeps
 * them there under a lease), and placement uses the free bytes they
 * publish. A named region is a record under /ethermem/CLUSTER/regions/NAME
 * holding its layout; the record is created by an etcd transaction, so two
 * clients racing for one name get one region and one -EEXIST, and it is
 * what open and list read. The region's bytes are pieces on the nodes
 * under an internal name of their own, which never collides: a client that
 * loses the race deletes its pieces, no one else's. (Schema: common/cluster.h.)
 *
 * A redundant region's record also names its redundancy and layout epoch,
 * and the one client repairing it holds repair/NAME under a lease of its
 * own (em_dir_lock): etcd elects the repairer, and a repairer that dies
 * frees the lock when its lease runs out. The repairer writes the layout
 * it made into the record by a compare on the epoch it started from.
 */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/abi.h"
#include "common/cluster.h"
#include "common/etcd.h"
#include "common/util.h"
#include "lib/internal.h"

struct em_dir {
	struct em_etcd *etcd;
	char nodes[128], regions[128], drain[128], orphans[128], repair[128]; /* key prefixes */
	char endpoints[1024]; /* for a repairer's own client */
	int timeout_ms;
};

int em_dir_open(em_pool *pool, const char *endpoints, const char *cluster, int timeout_ms)
{
	struct em_dir *d = calloc(1, sizeof(*d));
	int rc;

	if (!d)
		return -ENOMEM;
	if (!cluster || !*cluster)
		cluster = EM_CLUSTER_DEFAULT;
	if ((rc = em_cluster_prefix(d->nodes, sizeof(d->nodes), cluster, "nodes")) ||
	    (rc = em_cluster_prefix(d->regions, sizeof(d->regions), cluster, "regions")) ||
	    (rc = em_cluster_prefix(d->drain, sizeof(d->drain), cluster, "drain")) ||
	    (rc = em_cluster_prefix(d->orphans, sizeof(d->orphans), cluster, "orphans")) ||
	    (rc = em_cluster_prefix(d->repair, sizeof(d->repair), cluster, "repair")) ||
	    (rc = em_etcd_open(&d->etcd, endpoints, timeout_ms))) {
		free(d);
		return rc;
	}
	snprintf(d->endpoints, sizeof(d->endpoints), "%s", endpoints);
	d->timeout_ms = timeout_ms;
	pool->dir = d;
	return 0;
}

void em_dir_close(em_pool *pool)
{
	if (!pool->dir)
		return;
	em_etcd_close(pool->dir->etcd);
	free(pool->dir);
	pool->dir = NULL;
}

typedef int (*node_fn)(void *arg, const struct em_node_rec *rec);

struct node_walk {
	node_fn fn;
	void *arg;
};

static int node_cb(void *arg, const struct em_etcd_kv *kv)
{
	struct node_walk *w = arg;
	struct em_node_rec rec;

	if (em_node_rec_decode(kv->val, kv->vlen, &rec)) {
		em_log(EM_LOG_DEBUG, "etcd: unreadable node record %s", kv->key);
		return 0;
	}
	return w->fn(w->arg, &rec);
}

int em_dir_walk_nodes(em_pool *pool, node_fn fn, void *arg)
{
	struct node_walk w = { fn, arg };
	int rc = em_etcd_range(pool->dir->etcd, pool->dir->nodes, true, node_cb, &w, NULL);

	return rc < 0 ? rc : 0;
}

struct list_arg {
	char *out;
	size_t cap, len;
	unsigned n;
};

static int list_cb(void *arg, const struct em_node_rec *rec)
{
	struct list_arg *l = arg;
	int k;

	if (l->n == EM_MAX_SEG)
		return 0;
	k = snprintf(l->out + l->len, l->cap - l->len, "%s%s", l->n ? "," : "", rec->addr);
	if (k < 0 || (size_t)k >= l->cap - l->len)
		return -ENOSPC;
	l->len += (size_t)k;
	l->n++;
	return 0;
}

int em_dir_nodes(em_pool *pool, char *list, size_t cap)
{
	struct list_arg l = { list, cap, 0, 0 };
	int rc;

	list[0] = 0;
	if ((rc = em_dir_walk_nodes(pool, list_cb, &l)))
		return rc;
	return (int)l.n;
}

struct free_arg {
	em_pool *pool;
	uint64_t *freeb;
};

static int free_cb(void *arg, const struct em_node_rec *rec)
{
	struct free_arg *f = arg;

	for (unsigned i = 0; i < em_pool_n(f->pool); i++)
		if (!strcmp(f->pool->nodes[i].addr, rec->addr))
			/* a draining node takes no new chunks */
			f->freeb[i] = strcmp(rec->state, "up") ? 0 : rec->free;
	return 0;
}

int em_dir_free(em_pool *pool, uint64_t *freeb)
{
	struct free_arg f = { pool, freeb };

	memset(freeb, 0, em_pool_n(pool) * sizeof(*freeb));
	return em_dir_walk_nodes(pool, free_cb, &f);
}

static int key_of(em_pool *pool, const char *name, char *key, size_t cap)
{
	return (size_t)snprintf(key, cap, "%s%s", pool->dir->regions, name) >= cap ? -ENAMETOOLONG
										   : 0;
}

struct rec_arg {
	struct em_region_rec *rec;
	int64_t mod_rev;
	int rc;
};

static int rec_cb(void *arg, const struct em_etcd_kv *kv)
{
	struct rec_arg *a = arg;

	a->rc = em_region_rec_decode(kv->val, kv->vlen, a->rec);
	a->mod_rev = kv->mod_rev;
	return 0;
}

int em_dir_get(em_pool *pool, const char *name, struct em_region_rec *rec, int64_t *mod_rev)
{
	struct rec_arg a = { rec, 0, -ENOENT };
	char key[256];
	int rc;

	if ((rc = key_of(pool, name, key, sizeof(key))))
		return rc;
	rc = em_etcd_range(pool->dir->etcd, key, false, rec_cb, &a, NULL);
	if (rc < 0)
		return rc;
	if (mod_rev)
		*mod_rev = a.mod_rev;
	return a.rc;
}

int em_dir_create(em_pool *pool, const char *name, const struct em_region_rec *rec)
{
	char key[256], val[16384];
	int rc, n;

	if ((rc = key_of(pool, name, key, sizeof(key))))
		return rc;
	if ((n = em_region_rec_encode(rec, val, sizeof(val))) < 0)
		return n;
	return em_etcd_create(pool->dir->etcd, key, val, (size_t)n, 0);
}

unsigned em_fail_dir_update;

int em_dir_update(em_pool *pool, const char *name, const struct em_region_rec *rec, int64_t mod_rev)
{
	char key[256], val[16384];
	int rc, n;

	if ((rc = key_of(pool, name, key, sizeof(key))))
		return rc;
	if ((n = em_region_rec_encode(rec, val, sizeof(val))) < 0)
		return n;
	rc = em_etcd_put_if(pool->dir->etcd, key, val, (size_t)n, mod_rev);
	if (rc > 0 && em_fail_dir_update && --em_fail_dir_update == 0)
		return -ETIMEDOUT; /* applied, its answer lost (a test's failpoint) */
	return rc < 0 ? rc : rc ? 0 : -ESTALE;
}

int em_dir_drain_note(em_pool *pool, const char *addr, const char *json)
{
	char key[256];

	if (!strncmp(addr, "tcp://", 6)) /* keyed as the node records are */
		addr += 6;
	if ((size_t)snprintf(key, sizeof(key), "%s%s", pool->dir->drain, addr) >= sizeof(key))
		return -ENAMETOOLONG;
	if (!json) {
		int rc = em_etcd_delete(pool->dir->etcd, key, false);
		return rc < 0 ? rc : 0;
	}
	return em_etcd_put(pool->dir->etcd, key, json, strlen(json), 0);
}

int em_dir_orphan_note(em_pool *pool, const char *addr, const char *piece, const char *region)
{
	char key[256];

	if (!strncmp(addr, "tcp://", 6))
		addr += 6;
	if ((size_t)snprintf(key, sizeof(key), "%s%s/%s", pool->dir->orphans, addr, piece) >=
	    sizeof(key))
		return -ENAMETOOLONG;
	if (!region) {
		int rc = em_etcd_delete(pool->dir->etcd, key, false);
		return rc < 0 ? rc : 0;
	}
	return em_etcd_put(pool->dir->etcd, key, region, strlen(region), 0);
}

struct orphan_arg {
	struct em_orphan *o;
	unsigned max, count;
	size_t plen;
};

/* Keys are HOST:PORT/PIECE under the prefix, values a region's name; any
 * other shape (not written by us) is passed over. */
static int orphan_cb(void *arg, const struct em_etcd_kv *kv)
{
	struct orphan_arg *a = arg;
	const char *k, *slash;
	struct em_orphan *o;
	size_t klen;

	if (kv->klen <= a->plen || a->count >= a->max || kv->vlen == 0 || kv->vlen > EM_NAME_MAX)
		return 0;
	k = kv->key + a->plen;
	klen = kv->klen - a->plen;
	slash = memchr(k, '/', klen);
	if (!slash || slash == k || (size_t)(slash - k) + 6 >= sizeof(o->addr) ||
	    klen - (size_t)(slash - k) - 1 >= sizeof(o->piece) || slash + 1 == k + klen)
		return 0;
	o = &a->o[a->count++];
	snprintf(o->addr, sizeof(o->addr), "tcp://%.*s", (int)(slash - k), k);
	snprintf(o->piece, sizeof(o->piece), "%.*s", (int)(klen - (size_t)(slash - k) - 1),
		 slash + 1);
	snprintf(o->region, sizeof(o->region), "%.*s", (int)kv->vlen, (const char *)kv->val);
	return 0;
}

int em_dir_orphans(em_pool *pool, struct em_orphan *o, unsigned max)
{
	struct orphan_arg a = { o, max, 0, strlen(pool->dir->orphans) };
	int rc = em_etcd_range(pool->dir->etcd, pool->dir->orphans, true, orphan_cb, &a, NULL);

	return rc < 0 ? rc : (int)a.count;
}

int em_dir_delete(em_pool *pool, const char *name, int64_t mod_rev)
{
	char key[256];
	int rc;

	if ((rc = key_of(pool, name, key, sizeof(key))))
		return rc;
	/* only the record we read: a region created again meanwhile stays */
	rc = em_etcd_delete_if(pool->dir->etcd, key, mod_rev);
	return rc < 0 ? rc : rc ? 0 : -ENOENT;
}

/* A region whose repair lock is held, with its repairer's progress (bytes
 * rebuilt of those to rebuild; 0 of 0 before it said any). */
struct repairing {
	char name[EM_NAME_MAX + 1];
	uint64_t done, total;
};

struct info_arg {
	struct em_region_info *info;
	unsigned max, count;
	size_t plen, stride;
	/* the registered nodes' identities, and the regions being repaired */
	uint8_t (*ids)[16];
	unsigned nids;
	struct repairing *rep;
	unsigned nrep;
	size_t rplen;
};

static int ids_cb(void *arg, const struct em_node_rec *rec)
{
	struct info_arg *a = arg;

	if (a->nids < EM_MAX_SEG * 4 && strlen(rec->id) == 32) {
		for (int i = 0; i < 16; i++) {
			unsigned v;
			if (sscanf(rec->id + 2 * i, "%2x", &v) != 1)
				return 0;
			a->ids[a->nids][i] = (uint8_t)v;
		}
		a->nids++;
	}
	return 0;
}

static int lock_cb(void *arg, const struct em_etcd_kv *kv)
{
	struct info_arg *a = arg;
	size_t n = kv->klen - a->rplen;
	struct repairing *more, *p;
	struct em_json v;

	if (kv->klen <= a->rplen || n > EM_NAME_MAX ||
	    !(more = realloc(a->rep, (a->nrep + 1) * sizeof(*more))))
		return 0;
	a->rep = more;
	p = &a->rep[a->nrep++];
	memcpy(p->name, kv->key + a->rplen, n);
	p->name[n] = 0;
	p->done = p->total = 0;
	/* what its holder wrote there last (em_dir_lock_note); a value that
	 * says nothing sensible is no progress */
	if (!em_json_root((const char *)kv->val, kv->vlen, &v)) {
		p->total = em_json_get_u64(v, "total", 0);
		p->done = em_json_get_u64(v, "done", 0);
		if (p->done > p->total)
			p->done = p->total = 0;
	}
	return 0;
}

static const struct repairing *repairing(const struct info_arg *a, const char *name)
{
	for (unsigned i = 0; i < a->nrep; i++)
		if (!strcmp(a->rep[i].name, name))
			return &a->rep[i];
	return NULL;
}

/* What etcd alone says of a redundant region: repairing while a client
 * holds its repair lock, degraded while a part's node is not registered. */
static uint32_t rec_state(const struct info_arg *a, const char *name,
			  const struct em_region_rec *rec)
{
	if (repairing(a, name))
		return EM_STATE_REPAIRING;
	for (unsigned s = 0; s < rec->nseg; s++) {
		unsigned i;
		for (i = 0; i < a->nids; i++)
			if (!memcmp(a->ids[i], rec->seg_id[s], 16))
				break;
		if (i == a->nids)
			return EM_STATE_DEGRADED;
	}
	return EM_STATE_HEALTHY;
}

static int info_cb(void *arg, const struct em_etcd_kv *kv)
{
	struct info_arg *a = arg;
	struct em_region_rec rec;

	if (kv->klen <= a->plen || kv->klen - a->plen > EM_NAME_MAX ||
	    em_region_rec_decode(kv->val, kv->vlen, &rec))
		return 0;
	if (a->count < a->max) {
		struct em_region_info ri = { .size = sizeof(ri) };
		memcpy(ri.name, kv->key + a->plen, kv->klen - a->plen);
		ri.bytes = rec.size;
		ri.chunk_size = rec.chunk;
		ri.nodes = rec.nseg;
		ri.redundancy = rec.red > EM_RED_NONE ? rec.red : EM_RED_NONE;
		ri.red_k = rec.red_k;
		ri.red_m = rec.red_m;
		ri.epoch = rec.red > EM_RED_NONE ? rec.lepoch : (uint32_t)rec.epoch;
		if (rec.red > EM_RED_NONE) {
			const struct repairing *p = repairing(a, ri.name);
			ri.state = rec_state(a, ri.name, &rec);
			if (p) {
				ri.rebuilt = p->done;
				ri.to_rebuild = p->total;
			}
		}
		em_out_put((char *)a->info + (size_t)a->count * a->stride, a->stride, &ri,
			   sizeof(ri));
	}
	a->count++;
	return 0;
}

int em_dir_list(em_pool *pool, struct em_region_info *info, unsigned max, size_t stride)
{
	struct info_arg a = {
		info, max, 0, strlen(pool->dir->regions), stride, NULL, 0, NULL, 0, 0
	};
	int rc;

	a.rplen = strlen(pool->dir->repair);
	a.ids = calloc(EM_MAX_SEG * 4, sizeof(*a.ids));
	if (!a.ids) {
		rc = -ENOMEM;
		goto out;
	}
	if ((rc = em_dir_walk_nodes(pool, ids_cb, &a)) < 0 ||
	    (rc = em_etcd_range(pool->dir->etcd, pool->dir->repair, true, lock_cb, &a, NULL)) < 0)
		goto out;
	rc = em_etcd_range(pool->dir->etcd, pool->dir->regions, true, info_cb, &a, NULL);
out:
	free(a.ids);
	free(a.rep);
	return rc < 0 ? rc : (int)a.count;
}

/* ---- the elected repairer ---- */

/* The lease is renewed by a thread of its own from the moment the lock is
 * taken, on a client of its own: a repair's steps (probing frozen nodes,
 * reading layouts, asking every node its free bytes) may each wait the
 * request timeout, longer than the lease, and the lock must outlive them
 * while the repairer lives. */
struct em_dir_lock {
	struct em_etcd *etcd; /* its own: the repair runs on its own thread */
	struct em_etcd *ka;   /* the keeper thread's */
	int64_t lease;
	uint64_t every_ns;
	char key[256];
	pthread_t keeper;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop, lapsed; /* under mu */
};

static void *lock_keeper(void *arg)
{
	struct em_dir_lock *l = arg;

	pthread_mutex_lock(&l->mu);
	while (!l->stop && !l->lapsed) {
		struct timespec ts;
		uint64_t at;
		int rc;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		at = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec + l->every_ns;
		ts.tv_sec = (time_t)(at / 1000000000ull);
		ts.tv_nsec = (long)(at % 1000000000ull);
		while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu, &ts) != ETIMEDOUT)
			;
		if (l->stop)
			break;
		pthread_mutex_unlock(&l->mu);
		rc = em_etcd_lease_keepalive(l->ka, l->lease);
		pthread_mutex_lock(&l->mu);
		if (rc <= 0)
			l->lapsed = true; /* ran out: another may hold the lock now */
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

int em_dir_lock(em_pool *pool, const char *name, int ttl_s, struct em_dir_lock **out)
{
	struct em_dir_lock *l = calloc(1, sizeof(*l));
	char val[64];
	int rc;

	if (!l)
		return -ENOMEM;
	if ((size_t)snprintf(l->key, sizeof(l->key), "%s%s", pool->dir->repair, name) >=
	    sizeof(l->key)) {
		free(l);
		return -ENAMETOOLONG;
	}
	if ((rc = em_etcd_open(&l->etcd, pool->dir->endpoints, pool->dir->timeout_ms))) {
		free(l);
		return rc;
	}
	if ((rc = em_etcd_open(&l->ka, pool->dir->endpoints, pool->dir->timeout_ms)))
		goto fail;
	if ((rc = em_etcd_lease_grant(l->etcd, ttl_s, &l->lease)))
		goto fail;
	snprintf(val, sizeof(val), "{\"pid\":%d,\"at_ms\":%" PRIu64 "}", (int)getpid(),
		 em_wall_ms());
	/* one holder: the key exists while its holder's lease lives */
	rc = em_etcd_create(l->etcd, l->key, val, strlen(val), l->lease);
	if (rc) {
		em_etcd_lease_revoke(l->etcd, l->lease);
		rc = rc == -EEXIST ? -EALREADY : rc;
		goto fail;
	}
	l->every_ns = (uint64_t)ttl_s * 1000000000ull / 3;
	{
		pthread_condattr_t ca;
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&l->cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	pthread_mutex_init(&l->mu, NULL);
	if ((rc = -pthread_create(&l->keeper, NULL, lock_keeper, l))) {
		pthread_cond_destroy(&l->cv);
		pthread_mutex_destroy(&l->mu);
		em_etcd_lease_revoke(l->etcd, l->lease);
		goto fail;
	}
	*out = l;
	return 0;
fail:
	if (l->ka)
		em_etcd_close(l->ka);
	em_etcd_close(l->etcd);
	free(l);
	return rc;
}

int em_dir_lock_keep(struct em_dir_lock *l)
{
	bool lapsed;

	pthread_mutex_lock(&l->mu);
	lapsed = l->lapsed;
	pthread_mutex_unlock(&l->mu);
	return lapsed ? -ETIMEDOUT : 0;
}

int em_dir_lock_note(struct em_dir_lock *l, uint64_t done, uint64_t total)
{
	char val[128];

	snprintf(val, sizeof(val),
		 "{\"pid\":%d,\"at_ms\":%" PRIu64 ",\"done\":%" PRIu64 ",\"total\":%" PRIu64 "}",
		 (int)getpid(), em_wall_ms(), done, total);
	/* under the lock's lease: once that ran out the put fails, so this
	 * never writes over another holder's key */
	return em_etcd_put(l->etcd, l->key, val, strlen(val), l->lease);
}

int64_t em_dir_lock_id(const struct em_dir_lock *l)
{
	return l->lease;
}

void em_dir_unlock(struct em_dir_lock *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	l->stop = true;
	pthread_cond_signal(&l->cv);
	pthread_mutex_unlock(&l->mu);
	pthread_join(l->keeper, NULL);
	pthread_cond_destroy(&l->cv);
	pthread_mutex_destroy(&l->mu);
	em_etcd_close(l->ka);
	em_etcd_lease_revoke(l->etcd, l->lease); /* the key goes with it */
	em_etcd_close(l->etcd);
	free(l);
}

int em_dir_record_loss(em_pool *pool, const char *name, const struct em_region_rec *next)
{
	char key[256], val[16384];
	struct em_etcd *e;
	int rc;

	if ((rc = key_of(pool, name, key, sizeof(key))))
		return rc;
	if ((rc = em_etcd_open(&e, pool->dir->endpoints, pool->dir->timeout_ms)))
		return rc;
	for (unsigned tries = 0; tries < 8; tries++) {
		struct em_region_rec rec;
		struct rec_arg a = { &rec, 0, -ENOENT };
		int n;

		if ((rc = em_etcd_range(e, key, false, rec_cb, &a, NULL)) < 0)
			break;
		if ((rc = a.rc))
			break;
		/* a newer layout is there already (a repair's, or another
		 * client's record of the same loss) */
		if (rec.lepoch >= next->lepoch)
			break;
		if (rec.nseg != next->nseg || strcmp(rec.piece, next->piece)) {
			rc = -ESTALE; /* another region of that name now */
			break;
		}
		for (unsigned s = 0; s < rec.nseg; s++) {
			memcpy(rec.seg_addr[s], next->seg_addr[s], sizeof(rec.seg_addr[s]));
			memcpy(rec.seg_id[s], next->seg_id[s], sizeof(rec.seg_id[s]));
			rec.seg_piece[s][0] = 0;
		}
		rec.epoch++;
		rec.lepoch = next->lepoch;
		if ((n = em_region_rec_encode(&rec, val, sizeof(val))) < 0) {
			rc = n;
			break;
		}
		rc = em_etcd_put_if(e, key, val, (size_t)n, a.mod_rev);
		if (rc != 0) { /* 1: written; < 0: failed. 0: changed since read */
			rc = rc < 0 ? rc : 0;
			break;
		}
		rc = -ESTALE;
	}
	em_etcd_close(e);
	return rc;
}

int em_dir_relayout(struct em_dir_lock *l, em_pool *pool, const char *name,
		    const struct em_region_rec *next)
{
	char key[256], val[16384];
	struct em_region_rec rec;
	struct rec_arg a = { &rec, 0, -ENOENT };
	int rc, n;

	if ((rc = key_of(pool, name, key, sizeof(key))))
		return rc;
	if ((rc = em_etcd_range(l->etcd, key, false, rec_cb, &a, NULL)) < 0)
		return rc;
	if (a.rc)
		return a.rc;
	/* the same region, at an older layout (a repair that died after
	 * storing its layout on the parts may have left it behind by more
	 * than one), and unchanged between this read and the put */
	if (rec.lepoch >= next->lepoch || strcmp(rec.piece, next->piece))
		return -ESTALE;
	if ((n = em_region_rec_encode(next, val, sizeof(val))) < 0)
		return n;
	rc = em_etcd_put_if(l->etcd, key, val, (size_t)n, a.mod_rev);
	return rc < 0 ? rc : rc ? 0 : -ESTALE;
}
