/*
 * node.c - `ethermem node ls`: the memory nodes registered in etcd, read
 * straight from it (no connection to any node, so a node that hangs
 * cannot hang the listing). A record exists only while its node renews its
 * lease, so what is listed is what is alive, give or take one TTL.
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

struct ls {
	int json;
	int n;
	uint64_t now;
};

static int ls_cb(void *arg, const struct em_etcd_kv *kv)
{
	struct ls *l = arg;
	struct em_node_rec r;
	double age;

	if (em_node_rec_decode(kv->val, kv->vlen, &r))
		return 0;
	age = r.heartbeat_ms && r.heartbeat_ms <= l->now ? (double)(l->now - r.heartbeat_ms) / 1e3
							 : 0;
	if (l->json)
		printf("{\"addr\":\"%s\",\"state\":\"%s\",\"capacity\":%" PRIu64
		       ",\"free\":%" PRIu64 ",\"heartbeat_ms\":%" PRIu64
		       ",\"heartbeat_age_s\":%.3f,\"started_ms\":%" PRIu64
		       ",\"id\":\"%s\",\"transports\":\"%s\",\"ox_mac\":\"%s\",\"version\":\"%s\"}\n",
		       r.addr, r.state, r.capacity, r.free, r.heartbeat_ms, age, r.started_ms, r.id,
		       r.transports, r.ox_mac, r.version);
	else
		printf("%-28s %-9s %14" PRIu64 " %14" PRIu64 " %8.1fs ago  %s\n", r.addr, r.state,
		       r.capacity, r.free, age, r.transports);
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

int em_cli_node(int argc, char **argv, struct em_cli_pool *cp)
{
	const char *sub = argc > 1 ? argv[1] : NULL;
	struct etcd_conf c;
	struct em_etcd *e;
	struct ls l = { 0 };
	char prefix[128];
	int rc, downs = 0;

	if (!sub || !strcmp(sub, "--help") || !strcmp(sub, "-h") ||
	    (argc > 2 && !strcmp(argv[2], "--help"))) {
		printf("usage: ethermem node ls [--json]\n"
		       "       ethermem node watch [--json] [--downs N]\n"
		       "ls lists the memory nodes registered in etcd: address, state, capacity,\n"
		       "free bytes and the age of the last heartbeat. watch prints them, then\n"
		       "one line per change (up, update, down), stamped with the wall clock in\n"
		       "ms; --downs N exits after N nodes went down.\n\n"
		       "  --etcd URL[,URL...]  etcd endpoints         (or ETHERMEM_ETCD)\n"
		       "  --cluster NAME       the pool's name        (or ETHERMEM_CLUSTER) [ethermem]\n");
		return sub ? 0 : 2;
	}
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
	rc = em_etcd_range(e, prefix, true, ls_cb, &l, NULL);
	if (rc < 0)
		fprintf(stderr, "ethermem node ls: etcd %s: %s\n", c.etcd, em_strerror(rc));
	em_etcd_close(e);
	return rc < 0 ? 1 : 0;
}
