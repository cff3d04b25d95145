/*
 * node.c - `ethermem node ls`: the memory nodes registered in etcd, read
 * straight from it (no connection to any node, so a node that hangs
 * cannot hang the listing). A record exists only while its node renews its
 * lease, so what is listed is what is alive, give or take one TTL.
 * `ethermem node drain ADDR` moves a node's named regions to the others
 * (lib/drain.c) and leaves its progress where `node ls` shows it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/cluster.h"
#include "common/config.h"
#include "common/etcd.h"
#include "common/util.h"
#include "lib/internal.h"

struct etcd_conf {
	char etcd[1024], cluster[80];
};

static int conf_cb(void *arg, const char *k, const char *v, int line)
{
	struct etcd_conf *c = arg;

	if (!strcmp(k, "etcd"))
		snprintf(c->etcd, sizeof(c->etcd), "%s", v);
	else if (!strcmp(k, "cluster"))
		snprintf(c->cluster, sizeof(c->cluster), "%s", v);
	return 0;
}

/* The same order as the library: flag, environment, config file. */
static void etcd_resolve(const struct em_cli_pool *cp, struct etcd_conf *c)
{
	const char *file = cp->opts.config_file, *e;

	if (!file && em_cfg_env_str(EM_CFG_CONFIG, &file))
		file = NULL;

	memset(c, 0, sizeof(*c));
	em_config_parse(file ? file : "/etc/ethermem/client.conf", conf_cb, c);
	if (cp->opts.etcd)
		snprintf(c->etcd, sizeof(c->etcd), "%s", cp->opts.etcd);
	else if (!em_cfg_env_str(EM_CFG_ETCD, &e) && e && *e)
		snprintf(c->etcd, sizeof(c->etcd), "%s", e);
	if (cp->opts.cluster)
		snprintf(c->cluster, sizeof(c->cluster), "%s", cp->opts.cluster);
	else if (!em_cfg_env_str(EM_CFG_CLUSTER, &e) && e && *e)
		snprintf(c->cluster, sizeof(c->cluster), "%s", e);
	if (!c->cluster[0])
		snprintf(c->cluster, sizeof(c->cluster), "%s", EM_CLUSTER_DEFAULT);
}

#define MAX_NOTES 64

/* The progress notes of drains, keyed HOST:PORT as the node records. */
struct notes {
	size_t plen;
	unsigned n;
	char addr[MAX_NOTES][80], json[MAX_NOTES][256];
};

static int note_cb(void *arg, const struct em_etcd_kv *kv)
{
	struct notes *t = arg;
	struct em_json root;

	if (t->n == MAX_NOTES || kv->klen <= t->plen || kv->klen - t->plen >= sizeof(t->addr[0]) ||
	    kv->vlen >= sizeof(t->json[0]) ||
	    em_json_root((const char *)kv->val, kv->vlen, &root) || root.p[0] != '{')
		return 0;
	memcpy(t->addr[t->n], kv->key + t->plen, kv->klen - t->plen);
	t->addr[t->n][kv->klen - t->plen] = 0;
	memcpy(t->json[t->n], kv->val, kv->vlen);
	t->json[t->n][kv->vlen] = 0;
	t->n++;
	return 0;
}

struct ls {
	int json;
	int n;
	uint64_t now;
	struct notes *notes;
};

static const char *note_of(const struct ls *l, const char *addr)
{
	if (!strncmp(addr, "tcp://", 6))
		addr += 6;
	for (unsigned i = 0; i < l->notes->n; i++)
		if (!strcmp(l->notes->addr[i], addr))
			return l->notes->json[i];
	return NULL;
}

static int ls_cb(void *arg, const struct em_etcd_kv *kv)
{
	struct ls *l = arg;
	struct em_node_rec r;
	const char *note;
	double age;

	if (em_node_rec_decode(kv->val, kv->vlen, &r))
		return 0;
	age = r.heartbeat_ms && r.heartbeat_ms <= l->now ? (double)(l->now - r.heartbeat_ms) / 1e3
							 : 0;
	note = note_of(l, r.addr);
	if (l->json) {
		printf("{\"addr\":\"%s\",\"state\":\"%s\",\"capacity\":%" PRIu64
		       ",\"free\":%" PRIu64 ",\"heartbeat_ms\":%" PRIu64
		       ",\"heartbeat_age_s\":%.3f,\"started_ms\":%" PRIu64
		       ",\"id\":\"%s\",\"transports\":\"%s\",\"ox_mac\":\"%s\",\"version\":\"%s\"",
		       r.addr, r.state, r.capacity, r.free, r.heartbeat_ms, age, r.started_ms, r.id,
		       r.transports, r.ox_mac, r.version);
		if (note)
			printf(",\"drain\":%s", note);
		printf("}\n");
	} else {
		printf("%-28s %-9s %14" PRIu64 " %14" PRIu64 " %8.1fs ago  %s\n", r.addr, r.state,
		       r.capacity, r.free, age, r.transports);
		if (note) {
			struct em_json root;
			char st[32] = "?";
			em_json_root(note, strlen(note), &root);
			em_json_get_str(root, "state", st, sizeof(st));
			printf("  drain: %s, %.1f of %.1f MiB moved\n", st,
			       (double)em_json_get_u64(root, "moved_bytes", 0) / 1048576.0,
			       (double)em_json_get_u64(root, "total_bytes", 0) / 1048576.0);
		}
	}
	l->n++;
	return 0;
}

struct watch {
	int json;
	size_t plen;
	int downs, max_downs;
	bool listing; /* what is there already counts as up */
};

static int watch_cb(void *arg, const struct em_etcd_kv *kv)
{
	struct watch *w = arg;
	const char *addr = kv->klen > w->plen ? kv->key + w->plen : kv->key;
	const char *ev = kv->deleted                                   ? "down"
			 : w->listing || kv->create_rev == kv->mod_rev ? "up"
								       : "update";
	struct em_node_rec r = { 0 };
	uint64_t now = em_wall_ms();

	if (!kv->deleted && em_node_rec_decode(kv->val, kv->vlen, &r))
		return 0;
	if (w->json)
		printf("{\"t_ms\":%" PRIu64 ",\"event\":\"%s\",\"node\":\"%s\",\"state\":\"%s\""
		       ",\"free\":%" PRIu64 "}\n",
		       now, ev, addr, kv->deleted ? "down" : r.state, r.free);
	else
		printf("%" PRIu64 " %-6s %s %s\n", now, ev, addr, kv->deleted ? "" : r.state);
	fflush(stdout);
	w->downs += kv->deleted;
	return w->max_downs && w->downs >= w->max_downs ? 1 : 0;
}

/* Lists what is there, then follows changes until --downs N are seen or
 * the stream cannot be resumed. */
static int node_watch(struct em_etcd *e, const char *prefix, struct watch *w)
{
	struct em_etcd_watch *wt = NULL;
	int64_t rev = 0;
	int rc;

	w->listing = true;
	rc = em_etcd_range(e, prefix, true, watch_cb, w, &rev);
	w->listing = false;

	while (rc >= 0 && !(w->max_downs && w->downs >= w->max_downs)) {
		if (!wt && (rc = em_etcd_watch_open(e, prefix, rev + 1, &wt)))
			break;
		rc = em_etcd_watch_read(wt, 1000, watch_cb, w, &rev);
		if (rc == 1 && w->max_downs && w->downs >= w->max_downs)
			break;
		if (rc < 0) { /* the stream broke: resume after what we saw */
			em_etcd_watch_close(wt);
			wt = NULL;
			rc = 0;
		}
	}
	em_etcd_watch_close(wt);
	return rc < 0 ? rc : 0;
}

void em_cli_drain_status(struct em_cli_pool *cp)
{
	struct etcd_conf c;
	struct em_etcd *e;
	struct notes *t;
	char prefix[128];

	etcd_resolve(cp, &c);
	if (!c.etcd[0] || em_cluster_prefix(prefix, sizeof(prefix), c.cluster, "drain") ||
	    !(t = calloc(1, sizeof(*t))))
		return;
	t->plen = strlen(prefix);
	if (!em_etcd_open(&e, c.etcd, 2000)) {
		em_etcd_range(e, prefix, true, note_cb, t, NULL);
		em_etcd_close(e);
	}
	for (unsigned i = 0; i < t->n; i++) {
		struct em_json root;
		char st[32] = "?";
		if (em_json_root(t->json[i], strlen(t->json[i]), &root))
			continue;
		em_json_get_str(root, "state", st, sizeof(st));
		printf("drain of %s: %s, %.1f of %.1f MiB moved\n", t->addr[i], st,
		       (double)em_json_get_u64(root, "moved_bytes", 0) / 1048576.0,
		       (double)em_json_get_u64(root, "total_bytes", 0) / 1048576.0);
	}
	free(t);
}

static void drain_progress(void *arg, uint64_t done, uint64_t total, const char *region)
{
	(void)arg;
	printf("moved %s: %.1f of %.1f MiB\n", region, (double)done / 1048576.0,
	       (double)total / 1048576.0);
	fflush(stdout);
}

static int node_drain(int argc, char **argv, struct em_cli_pool *cp)
{
	em_pool *pool;
	uint64_t t0;
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: ethermem node drain ADDR\n");
		return 2;
	}
	if (em_cli_connect(cp, &pool, "ethermem node drain"))
		return 1;
	t0 = em_now_ns();
	rc = em_drain_node(pool, argv[2], drain_progress, NULL);
	if (rc == -ENOTSUP)
		fprintf(stderr, "ethermem node drain: needs a pool in etcd (--etcd URL or "
				"ETHERMEM_ETCD): the layouts it moves live there\n");
	else if (rc == -ENOENT)
		fprintf(stderr, "ethermem node drain: %s is not a node of this pool\n", argv[2]);
	else if (rc < 0)
		fprintf(stderr, "ethermem node drain %s: %s\n", argv[2], em_strerror(rc));
	else
		printf("drained %s: %d part(s) moved in %.2f s; it holds no named region now and "
		       "may be stopped\n",
		       argv[2], rc, (double)(em_now_ns() - t0) / 1e9);
	em_pool_close(pool);
	return rc < 0 ? 1 : 0;
}

int em_cli_node(int argc, char **argv, struct em_cli_pool *cp)
{
	const char *sub = argc > 1 ? argv[1] : NULL;
	struct etcd_conf c;
	struct em_etcd *e;
	struct ls l = { 0 };
	char prefix[128], dprefix[128];
	int rc, downs = 0;

	if (!sub || !strcmp(sub, "--help") || !strcmp(sub, "-h") ||
	    (argc > 2 && !strcmp(argv[2], "--help"))) {
		printf("usage: ethermem node ls [--json]\n"
		       "       ethermem node watch [--json] [--downs N]\n"
		       "       ethermem node drain ADDR\n"
		       "ls lists the memory nodes registered in etcd: address, state, capacity,\n"
		       "free bytes and the age of the last heartbeat. watch prints them, then\n"
		       "one line per change (up, update, down), stamped with the wall clock in\n"
		       "ms; --downs N exits after N nodes went down. drain makes node ADDR\n"
		       "take no new regions and moves its named regions' parts to the other\n"
		       "nodes while clients go on using them; once it says \"drained\" the\n"
		       "node holds no named region (anonymous ones stay until their clients\n"
		       "free them) and may be stopped. ls shows a drain's progress.\n\n"
		       "  --etcd URL[,URL...]  etcd endpoints         (or ETHERMEM_ETCD)\n"
		       "  --cluster NAME       the pool's name        (or ETHERMEM_CLUSTER) [ethermem]\n");
		return sub ? 0 : 2;
	}
	if (!strcmp(sub, "drain"))
		return node_drain(argc, argv, cp);
	if (strcmp(sub, "ls") && strcmp(sub, "watch")) {
		fprintf(stderr, "ethermem node: unknown subcommand '%s'\n", sub);
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			l.json = 1;
		} else if (!strcmp(sub, "watch") && !strcmp(argv[i], "--downs") && i + 1 < argc) {
			downs = atoi(argv[++i]);
		} else {
			fprintf(stderr, "ethermem node ls: unexpected '%s'\n", argv[i]);
			return 2;
		}
	}
	etcd_resolve(cp, &c);
	if (!c.etcd[0]) {
		fprintf(stderr,
			"ethermem node ls: no etcd given: use --etcd URL or set ETHERMEM_ETCD\n");
		return 2;
	}
	if (em_cluster_prefix(prefix, sizeof(prefix), c.cluster, "nodes")) {
		fprintf(stderr, "ethermem node ls: bad cluster name '%s'\n", c.cluster);
		return 2;
	}
	if ((rc = em_etcd_open(&e, c.etcd, cp->opts.timeout_ms ? cp->opts.timeout_ms : 5000))) {
		fprintf(stderr, "ethermem node ls: bad --etcd '%s': %s\n", c.etcd, em_strerror(rc));
		return 2;
	}
	if (!strcmp(sub, "watch")) {
		struct watch w = { .json = l.json, .plen = strlen(prefix), .max_downs = downs };
		rc = node_watch(e, prefix, &w);
		if (rc < 0)
			fprintf(stderr, "ethermem node watch: etcd %s: %s\n", c.etcd,
				em_strerror(rc));
		em_etcd_close(e);
		return rc < 0 ? 1 : 0;
	}
	if (!l.json)
		printf("%-28s %-9s %14s %14s %13s  %s\n", "ADDRESS", "STATE", "CAPACITY", "FREE",
		       "HEARTBEAT", "TRANSPORTS");
	l.now = em_wall_ms();
	if (!(l.notes = calloc(1, sizeof(*l.notes)))) {
		em_etcd_close(e);
		return 1;
	}
	if (!em_cluster_prefix(dprefix, sizeof(dprefix), c.cluster, "drain")) {
		l.notes->plen = strlen(dprefix);
		em_etcd_range(e, dprefix, true, note_cb, l.notes, NULL);
	}
	rc = em_etcd_range(e, prefix, true, ls_cb, &l, NULL);
	free(l.notes);
	if (rc < 0)
		fprintf(stderr, "ethermem node ls: etcd %s: %s\n", c.etcd, em_strerror(rc));
	em_etcd_close(e);
	return rc < 0 ? 1 : 0;
}
