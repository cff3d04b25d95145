/*
 * main.c - the `ethermem` command: pool status, named regions, benchmarks,
 * and (from the paging layer) run/import/export. Every subcommand answers
 * --help, exits 0 on success and non-zero with a message on stderr otherwise.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/config.h"
#include "ethermem.h"

static const char *pool_help =
	"Pool options (any command that talks to the pool):\n"
	"  --nodes LIST         tcp://HOST:PORT,...            (or ETHERMEM_NODES)\n"
	"  --etcd URL[,URL...]  find the nodes and named regions in etcd instead\n"
	"                       of a node list                 (or ETHERMEM_ETCD)\n"
	"  --cluster NAME       the pool's name in etcd        (or ETHERMEM_CLUSTER)\n"
	"  --secret-file FILE   cluster secret                 (or ETHERMEM_SECRET_FILE)\n"
	"  --timeout-ms MS      per-request timeout            (or ETHERMEM_TIMEOUT_MS)\n"
	"  --transport tcp|ox   data path                      (or ETHERMEM_TRANSPORT)\n"
	"  --ox-iface IFACE     interface for --transport ox   (or ETHERMEM_OX_IFACE)\n"
	"  --encrypt            encrypt every TCP connection   (or ETHERMEM_ENCRYPT=1)\n"
	"  --config FILE        client config file             (or ETHERMEM_CONFIG)\n";

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ethermem [--version] [--help] COMMAND [ARGS]\n\n"
		"Commands:\n"
		"  config [--markdown]       every setting: variable, key, type, default, help\n"
		"  status                    nodes, capacity, used, regions, clients, counters\n"
		"  region create NAME SIZE   create a named region (SIZE like 512M, 2G)\n"
		"      [--redundancy none|replicate:N|ec:K+M]\n"
		"  region ls                 list named regions\n"
		"  region rm NAME            delete a named region\n"
		"  write NAME OFFSET FILE    put a file's bytes into a region at OFFSET\n"
		"  read NAME OFFSET LEN FILE get LEN bytes of a region at OFFSET into FILE\n"
		"  repair NAME [--background] rebuild a redundant region's lost copies or chunks\n"
		"  node ls [--json]          memory nodes registered in etcd\n"
		"  node drain ADDR           move a node's named regions to the others\n"
		"  bench [--baseline]        latency and bandwidth of the pool\n"
		"  kv stats [NAME]           block stores (prefix caches): entries, bytes, hit rate\n"
		"  bench map                 transparent mapping against mmap and swap\n"
		"  bench loaded              small-read latency while bulk clients load the node\n"
		"  bench failover            a node killed under a redundant region, then repaired\n"
		"  run -- PROGRAM ARGS       run an unmodified program with its large\n"
		"                            allocations in the pool\n"
		"  import FILE REGION        load a file into a named region\n"
		"  export REGION FILE        write a named region to a file\n"
		"\n%s",
		pool_help);
}

/* The value of pool flag `name` at argv[*i], given as "--name=VALUE" or
 * "--name VALUE"; NULL when argv[*i] is not that flag. A flag matches only
 * by its whole name: "--nodesX" is not "--nodes". *bad is set when the flag
 * is there but its value is missing. */
static const char *flag_value(int argc, char **argv, int *i, const char *name, int *bad)
{
	size_t n = strlen(name);
	const char *a = argv[*i];

	if (strncmp(a, name, n) || (a[n] && a[n] != '='))
		return NULL;
	if (a[n] == '=')
		return a + n + 1;
	if (*i + 1 < argc)
		return argv[++*i];
	*bad = 1;
	return NULL;
}

int em_cli_pool_args(int *argc, char **argv, struct em_cli_pool *cp)
{
	static const char *const names[] = { "--nodes",    "--secret-file", "--config",
					     "--ox-iface", "--timeout-ms",  "--transport",
					     "--etcd",     "--cluster" };
	int out = 1;

	memset(cp, 0, sizeof(*cp));
	cp->opts.size = sizeof(cp->opts);
	for (int i = 1; i < *argc; i++) {
		const char *val = NULL;
		unsigned k;
		int bad = 0;

		if (!strcmp(argv[i], "--")) {
			/* everything after belongs to another program */
			while (i < *argc)
				argv[out++] = argv[i++];
			break;
		}
		if (!strcmp(argv[i], "--encrypt")) {
			cp->opts.encrypt = 1;
			continue;
		}
		for (k = 0; k < sizeof(names) / sizeof(names[0]); k++)
			if ((val = flag_value(*argc, argv, &i, names[k], &bad)) || bad)
				break;
		if (bad) {
			fprintf(stderr, "ethermem: %s needs a value\n", names[k]);
			return -EINVAL;
		}
		if (!val) {
			argv[out++] = argv[i];
			continue;
		}
		switch (k) {
		case 0:
			cp->opts.nodes = val;
			break;
		case 1:
			cp->opts.secret_file = val;
			break;
		case 2:
			cp->opts.config_file = val;
			break;
		case 3:
			cp->opts.ox_iface = val;
			break;
		case 4: {
			struct em_cfg_val cv;

			if (em_cfg_parse(EM_CFG_TIMEOUT_MS, "--timeout-ms", val, &cv))
				return -EINVAL;
			cp->opts.timeout_ms = (int)cv.num;
			break;
		}
		case 6:
			cp->opts.etcd = val;
			break;
		case 7:
			cp->opts.cluster = val;
			break;
		default:
			if (!strcmp(val, "tcp")) {
				cp->opts.transport = EM_TRANSPORT_TCP;
			} else if (!strcmp(val, "ox")) {
				cp->opts.transport = EM_TRANSPORT_OX;
			} else {
				fprintf(stderr, "ethermem: --transport %s: tcp or ox\n", val);
				return -EINVAL;
			}
		}
	}
	argv[out] = NULL;
	*argc = out;
	return 0;
}

/* For the commands that connect from the environment, or whose children do
 * (run): the pool flags given on the command line, passed on that way. */
static void pool_env(const struct em_cli_pool *cp)
{
	if (cp->opts.nodes)
		setenv("ETHERMEM_NODES", cp->opts.nodes, 1);
	if (cp->opts.secret_file)
		setenv("ETHERMEM_SECRET_FILE", cp->opts.secret_file, 1);
	if (cp->opts.config_file)
		setenv("ETHERMEM_CONFIG", cp->opts.config_file, 1);
	if (cp->opts.etcd)
		setenv("ETHERMEM_ETCD", cp->opts.etcd, 1);
	if (cp->opts.cluster)
		setenv("ETHERMEM_CLUSTER", cp->opts.cluster, 1);
	if (cp->opts.timeout_ms) {
		char t[16];

		snprintf(t, sizeof(t), "%d", cp->opts.timeout_ms);
		setenv("ETHERMEM_TIMEOUT_MS", t, 1);
	}
	if (cp->opts.transport != EM_TRANSPORT_DEFAULT)
		setenv("ETHERMEM_TRANSPORT", cp->opts.transport == EM_TRANSPORT_OX ? "ox" : "tcp",
		       1);
	if (cp->opts.ox_iface)
		setenv("ETHERMEM_OX_IFACE", cp->opts.ox_iface, 1);
	if (cp->opts.encrypt)
		setenv("ETHERMEM_ENCRYPT", "1", 1);
}

int em_cli_connect(struct em_cli_pool *cp, em_pool **pool, const char *prog)
{
	int rc = em_pool_connect(pool, &cp->opts);

	if (rc == -EDESTADDRREQ && cp->opts.transport == EM_TRANSPORT_OX && !cp->opts.ox_iface)
		fprintf(stderr,
			"%s: --transport ox needs an interface: --ox-iface or "
			"ETHERMEM_OX_IFACE\n",
			prog);
	else if (rc == -EDESTADDRREQ)
		fprintf(stderr,
			"%s: no pool given: use --nodes (or --etcd) and --secret-file, or set "
			"ETHERMEM_NODES (or ETHERMEM_ETCD) and ETHERMEM_SECRET_FILE\n",
			prog);
	else if (rc == -ENXIO)
		fprintf(stderr, "%s: no memory node is registered in etcd for this cluster\n",
			prog);
	else if (rc == -EPERM)
		fprintf(stderr,
			"%s: the secret file may be read by group or others; "
			"chmod 600 it\n",
			prog);
	else if (rc)
		fprintf(stderr, "%s: cannot connect to the pool: %s\n", prog, em_strerror(rc));
	return rc;
}

static void human(uint64_t b, char *out, size_t n)
{
	const char *u[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)b;
	int i = 0;

	while (v >= 1024 && i < 5) {
		v /= 1024;
		i++;
	}
	snprintf(out, n, i ? "%.1f %s" : "%.0f %s", v, u[i]);
}

/* One refresh of `ethermem status`: every node, and with prev (the last
 * refresh, interval seconds ago) the rates since then. */
static void status_print(const struct em_node_status *st, int n, bool json,
			 const struct em_node_status *prev, double interval)
{
	static const char *opn[EM_STAT_OPS] = { "read", "write",  "atomic", "create",
						"open", "delete", "list",   "status" };

	for (int i = 0; i < n; i++) {
		const struct em_node_status *s = &st[i];
		char cap[32], used[32];

		if (json) {
			printf("{\"node\":\"%s\",\"capacity\":%" PRIu64 ",\"used\":%" PRIu64
			       ",\"regions\":%u,\"named_regions\":%u,\"clients\":%u,\"huge_pages\":%u"
			       ",\"uptime_s\":%" PRIu64 ",\"bytes_in\":%" PRIu64
			       ",\"bytes_out\":%" PRIu64 ",\"auth_failures\":%" PRIu64,
			       s->addr, s->capacity, s->used, s->regions, s->named_regions,
			       s->clients, s->huge_pages, s->uptime_s, s->bytes_in, s->bytes_out,
			       s->auth_failures);
			for (int k = 0; k < EM_STAT_OPS; k++)
				printf(",\"%s_ops\":%" PRIu64 ",\"%s_errors\":%" PRIu64, opn[k],
				       s->ops[k], opn[k], s->errors[k]);
			for (int k = 0; k < 3; k++)
				printf(",\"%s_p50_us\":%.2f,\"%s_p99_us\":%.2f,\"%s_p999_us\":%.2f",
				       opn[k], s->lat_p50_ns[k] / 1e3, opn[k],
				       s->lat_p99_ns[k] / 1e3, opn[k], s->lat_p999_ns[k] / 1e3);
			printf(",\"ox_rx_frames\":%" PRIu64 ",\"ox_tx_frames\":%" PRIu64
			       ",\"ox_retransmits\":%" PRIu64 ",\"ox_denied\":%" PRIu64
			       ",\"ox_unknown\":%" PRIu64 ",\"ox_malformed\":%" PRIu64
			       ",\"ox_attached\":%u}\n",
			       s->ox_rx_frames, s->ox_tx_frames, s->ox_retransmits, s->ox_denied,
			       s->ox_unknown, s->ox_malformed, s->ox_attached);
			continue;
		}
		if (!s->capacity) { /* the library's mark of a node that did not answer */
			printf("node %s\n  not answering (down, frozen or unreachable)\n", s->addr);
			continue;
		}
		human(s->capacity, cap, sizeof(cap));
		human(s->used, used, sizeof(used));
		printf("node %s\n  capacity %s, used %s (%.1f%%), %s pages\n"
		       "  regions %u (%u named), clients %u, up %" PRIu64 " s, "
		       "auth failures %" PRIu64 "\n",
		       s->addr, cap, used,
		       s->capacity ? 100.0 * (double)s->used / (double)s->capacity : 0,
		       s->huge_pages ? "2 MiB huge" : "4 KiB", s->regions, s->named_regions,
		       s->clients, s->uptime_s, s->auth_failures);
		printf("  %-7s %12s %8s %10s %10s %10s\n", "op", "count", "errors", "p50 us",
		       "p99 us", "p999 us");
		for (int k = 0; k < EM_STAT_OPS; k++) {
			if (k < 3)
				printf("  %-7s %12" PRIu64 " %8" PRIu64 " %10.2f %10.2f %10.2f\n",
				       opn[k], s->ops[k], s->errors[k], s->lat_p50_ns[k] / 1e3,
				       s->lat_p99_ns[k] / 1e3, s->lat_p999_ns[k] / 1e3);
			else
				printf("  %-7s %12" PRIu64 " %8" PRIu64 "\n", opn[k], s->ops[k],
				       s->errors[k]);
		}
		/* the node reports zeros when it serves no OmniXtend, so a node
		 * that serves it but has seen nothing yet prints nothing either */
		if (s->ox_rx_frames || s->ox_tx_frames || s->ox_unknown || s->ox_malformed ||
		    s->ox_attached)
			printf("  omnixtend: frames rx %" PRIu64 " tx %" PRIu64
			       " retransmitted %" PRIu64 ", denied %" PRIu64 ", dropped %" PRIu64
			       " (unknown or spoofed MAC) %" PRIu64
			       " (malformed), sessions attached %u\n",
			       s->ox_rx_frames, s->ox_tx_frames, s->ox_retransmits, s->ox_denied,
			       s->ox_unknown, s->ox_malformed, s->ox_attached);
		if (prev && !strcmp(prev[i].addr, s->addr)) {
			double d = interval;
			printf("  per second: read %.0f, write %.0f, atomic %.0f, in %.1f MB, out %.1f MB\n",
			       (double)(s->ops[0] - prev[i].ops[0]) / d,
			       (double)(s->ops[1] - prev[i].ops[1]) / d,
			       (double)(s->ops[2] - prev[i].ops[2]) / d,
			       (double)(s->bytes_in - prev[i].bytes_in) / d / 1e6,
			       (double)(s->bytes_out - prev[i].bytes_out) / d / 1e6);
		}
	}
}

/* Every region of the pool into *out (malloc'd; the caller frees it):
 * the count, or -errno. The list may grow between calls, so it asks
 * again until it all fits. */
static int regions_get(em_pool *pool, struct em_region_info **out)
{
	struct em_region_info *info = NULL;
	unsigned cap = 1024;
	int rc;

	for (;;) {
		struct em_region_info *ni = realloc(info, cap * sizeof(*info));
		if (!ni) {
			free(info);
			return -ENOMEM;
		}
		info = ni;
		info[0].size = sizeof(info[0]);
		rc = em_region_list(pool, info, cap);
		if (rc <= (int)cap)
			break;
		cap = (unsigned)rc + 64;
	}
	if (rc < 0) {
		free(info);
		return rc;
	}
	*out = info;
	return rc;
}

static const char *region_state(const struct em_region_info *ri)
{
	static const char *states[] = { "healthy", "degraded", "repairing" };
	return ri->state < 3 ? states[ri->state] : "unknown";
}

static void region_redundancy(const struct em_region_info *ri, char *out, size_t n)
{
	if (ri->redundancy == EM_RED_REPLICATE)
		snprintf(out, n, "replicate:%u", ri->red_k);
	else if (ri->redundancy == EM_RED_EC)
		snprintf(out, n, "ec:%u+%u", ri->red_k, ri->red_m);
	else
		snprintf(out, n, "none");
}

/* The redundant regions' health under `ethermem status`: what an operator
 * looks at after a node died (plain regions have no state to show; `region
 * ls` lists them all). */
static void status_regions(em_pool *pool)
{
	struct em_region_info *info;
	int n = regions_get(pool, &info);
	bool head = false;

	if (n < 0) {
		printf("regions: %s\n", em_strerror(n));
		return;
	}
	for (int i = 0; i < n; i++) {
		char red[32];
		if (info[i].redundancy != EM_RED_REPLICATE && info[i].redundancy != EM_RED_EC)
			continue;
		if (!head)
			printf("redundant regions\n");
		head = true;
		region_redundancy(&info[i], red, sizeof(red));
		printf("  %-32s %-14s %s", info[i].name, red, region_state(&info[i]));
		if (info[i].to_rebuild)
			printf(" %.0f%% (%" PRIu64 " of %" PRIu64 " bytes rebuilt)",
			       100.0 * (double)info[i].rebuilt / (double)info[i].to_rebuild,
			       info[i].rebuilt, info[i].to_rebuild);
		printf("\n");
	}
	free(info);
}

static int cmd_status(int argc, char **argv, struct em_cli_pool *cp)
{
	static struct em_node_status st[64], prev[64];
	bool json = false;
	double watch = 0, interval = 0;
	long count = 0;
	em_pool *pool;
	int n;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--watch")) {
			char *end = NULL;
			watch = 2;
			if (i + 1 < argc && argv[i + 1][0] != '-') {
				watch = strtod(argv[++i], &end);
				if (*end || !(watch >= 0.1 && watch <= 3600)) {
					fprintf(stderr,
						"ethermem status: --watch SECONDS, 0.1 to 3600\n");
					return 2;
				}
			}
		} else if (!strcmp(argv[i], "--count") && i + 1 < argc) {
			char *end;
			count = strtol(argv[++i], &end, 10);
			if (*end || count < 0) {
				fprintf(stderr, "ethermem status: --count N, N >= 0\n");
				return 2;
			}
		} else if (!strcmp(argv[i], "--help")) {
			printf("usage: ethermem status [--json] [--watch [SECONDS]] [--count N]\n"
			       "Prints every node's capacity, use, regions, clients, per-operation\n"
			       "counters and service-time percentiles. --watch redraws the screen every\n"
			       "SECONDS (default 2) with rates since the last refresh, like top;\n"
			       "--count stops after N refreshes (0: until interrupted).\n\n%s",
			       pool_help);
			return 0;
		} else {
			fprintf(stderr, "ethermem status: unknown argument '%s'\n", argv[i]);
			return 2;
		}
	}
	if (em_cli_connect(cp, &pool, "ethermem status"))
		return 1;
	st[0].size = sizeof(st[0]); /* the stride of the array, see ethermem.h */
	for (long round = 1;; round++) {
		n = em_pool_status(pool, st, 64);
		if (n < 0) {
			fprintf(stderr, "ethermem status: %s\n", em_strerror(n));
			em_pool_close(pool);
			return 1;
		}
		if (watch && !json) {
			time_t now = time(NULL);
			char ts[32];
			strftime(ts, sizeof(ts), "%H:%M:%S", localtime(&now));
			/* home and clear, then the frame: a terminal shows one screen */
			printf("\033[H\033[J%s  ethermem status, every %.1f s (Ctrl-C quits)\n", ts,
			       watch);
		}
		status_print(st, n < 64 ? n : 64, json, watch && interval > 0 ? prev : NULL,
			     interval);
		if (!json) {
			status_regions(pool);
			em_cli_drain_status(cp);
		}
		if (!watch || (count && round >= count))
			break;
		fflush(stdout);
		memcpy(prev, st, sizeof(prev));
		interval = watch;
		usleep((useconds_t)(watch * 1e6));
	}
	em_pool_close(pool);
	return 0;
}

static int cmd_region(int argc, char **argv, struct em_cli_pool *cp)
{
	const char *sub = argc > 1 ? argv[1] : NULL;
	em_pool *pool;
	int rc = 0;

	if (!sub || !strcmp(sub, "--help") || !strcmp(sub, "-h")) {
		printf("usage: ethermem region create NAME SIZE [--chunk SIZE] [--excl]\n"
		       "                                  [--redundancy none|replicate:N|ec:K+M]\n"
		       "       ethermem region ls [--json]\n"
		       "       ethermem region rm NAME\n"
		       "Named regions persist on the nodes until removed; any client of the "
		       "pool can open them.\n\n%s",
		       pool_help);
		return sub ? 0 : 2;
	}
	for (int i = 2; i < argc; i++)
		if (!strcmp(argv[i], "--help")) {
			char *a[] = { argv[0], "--help", NULL };
			return cmd_region(2, a, cp);
		}
	if (!strcmp(sub, "create")) {
		struct em_region_opts ro = { .size = sizeof(ro) };
		const char *name = NULL, *size = NULL;
		uint64_t bytes;
		em_region *r;

		for (int i = 2; i < argc; i++) {
			if (!strcmp(argv[i], "--excl"))
				ro.flags |= EM_REGION_EXCL;
			else if (!strcmp(argv[i], "--redundancy") && i + 1 < argc) {
				if (em_parse_redundancy(argv[++i], &ro)) {
					fprintf(stderr,
						"ethermem region create: bad redundancy '%s' "
						"(none, replicate:N with N 2..16, ec:K+M with K 1..32, M 1..8)\n",
						argv[i]);
					return 2;
				}
			} else if (!strcmp(argv[i], "--chunk") && i + 1 < argc) {
				if (em_parse_size(argv[++i], &ro.chunk_size)) {
					fprintf(stderr,
						"ethermem region create: bad chunk size '%s'\n",
						argv[i]);
					return 2;
				}
			} else if (!name)
				name = argv[i];
			else if (!size)
				size = argv[i];
			else {
				fprintf(stderr, "ethermem region create: unexpected '%s'\n",
					argv[i]);
				return 2;
			}
		}
		if (!name || !size) {
			fprintf(stderr, "ethermem region create: NAME and SIZE are required\n");
			return 2;
		}
		if (em_parse_size(size, &bytes) || !bytes) {
			fprintf(stderr, "ethermem region create: bad size '%s'\n", size);
			return 2;
		}
		if (em_cli_connect(cp, &pool, "ethermem region create"))
			return 1;
		rc = em_region_create(pool, name, bytes, &ro, &r);
		if (rc) {
			fprintf(stderr, "ethermem region create: %s: %s\n", name, em_strerror(rc));
		} else {
			printf("%s %" PRIu64 "\n", name, em_region_size(r));
			em_region_close(r);
		}
	} else if (!strcmp(sub, "ls")) {
		struct em_region_info *info = NULL;
		bool json = argc > 2 && !strcmp(argv[2], "--json");

		if (argc > 2 && !json) {
			fprintf(stderr, "ethermem region ls: unexpected '%s'\n", argv[2]);
			return 2;
		}
		if (em_cli_connect(cp, &pool, "ethermem region ls"))
			return 1;
		rc = regions_get(pool, &info);
		if (rc < 0) {
			fprintf(stderr, "ethermem region ls: %s\n", em_strerror(rc));
		} else {
			if (!json)
				printf("%-40s %16s %10s %6s %-14s %s\n", "NAME", "SIZE", "CHUNK",
				       "NODES", "REDUNDANCY", "STATE");
			for (int i = 0; i < rc; i++) {
				char red[32];
				const char *st = region_state(&info[i]);

				region_redundancy(&info[i], red, sizeof(red));
				if (json) {
					printf("{\"name\":\"%s\",\"size\":%" PRIu64
					       ",\"chunk\":%" PRIu64
					       ",\"nodes\":%u,\"redundancy\":\"%s\",\"state\":\"%s\""
					       ",\"epoch\":%u,\"rebuilt\":%" PRIu64
					       ",\"to_rebuild\":%" PRIu64,
					       info[i].name, info[i].bytes, info[i].chunk_size,
					       info[i].nodes, red, st, info[i].epoch,
					       info[i].rebuilt, info[i].to_rebuild);
					/* a repair that has said how far it is: 0..1 */
					if (info[i].state == EM_STATE_REPAIRING &&
					    info[i].to_rebuild)
						printf(",\"progress\":%.4f",
						       (double)info[i].rebuilt /
							       (double)info[i].to_rebuild);
					printf("}\n");
				} else if (info[i].to_rebuild)
					printf("%-40s %16" PRIu64 " %10" PRIu64
					       " %6u %-14s %s %.0f%%\n",
					       info[i].name, info[i].bytes, info[i].chunk_size,
					       info[i].nodes, red, st,
					       100.0 * (double)info[i].rebuilt /
						       (double)info[i].to_rebuild);
				else
					printf("%-40s %16" PRIu64 " %10" PRIu64 " %6u %-14s %s\n",
					       info[i].name, info[i].bytes, info[i].chunk_size,
					       info[i].nodes, red, st);
			}
			rc = 0;
			free(info);
		}
	} else if (!strcmp(sub, "rm")) {
		if (argc != 3) {
			fprintf(stderr, "ethermem region rm: exactly one NAME\n");
			return 2;
		}
		if (em_cli_connect(cp, &pool, "ethermem region rm"))
			return 1;
		rc = em_region_delete(pool, argv[2]);
		if (rc)
			fprintf(stderr, "ethermem region rm: %s: %s\n", argv[2], em_strerror(rc));
	} else {
		fprintf(stderr, "ethermem region: unknown subcommand '%s'\n", sub);
		return 2;
	}
	em_pool_close(pool);
	return rc ? 1 : 0;
}

/* `ethermem write NAME OFFSET FILE` and `ethermem read NAME OFFSET LEN FILE`:
 * bytes in and out of a named region, for scripts that put and check data. */
static int cmd_rw(int argc, char **argv, struct em_cli_pool *cp, bool wr)
{
	const char *prog = wr ? "ethermem write" : "ethermem read";
	uint64_t off, len = 0;
	em_pool *pool;
	em_region *r;
	uint8_t *buf = NULL;
	FILE *f;
	int rc;

	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf(wr ? "usage: ethermem write NAME OFFSET FILE\n"
			  : "usage: ethermem read NAME OFFSET LEN FILE\n");
		printf("OFFSET and LEN take sizes like 4096, 64K, 1M.\n\n%s", pool_help);
		return 0;
	}
	if (argc != (wr ? 4 : 5) || em_parse_size(argv[2], &off) ||
	    (!wr && em_parse_size(argv[3], &len))) {
		fprintf(stderr, "%s: usage: %s\n", prog,
			wr ? "ethermem write NAME OFFSET FILE"
			   : "ethermem read NAME OFFSET LEN FILE");
		return 2;
	}
	if (wr) {
		long n;
		if (!(f = fopen(argv[3], "rb")) || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 ||
		    fseek(f, 0, SEEK_SET)) {
			fprintf(stderr, "%s: %s: %s\n", prog, argv[3], strerror(errno));
			if (f)
				fclose(f);
			return 1;
		}
		len = (uint64_t)n;
		buf = malloc(len ? len : 1);
		if (!buf || fread(buf, 1, len, f) != len) {
			fprintf(stderr, "%s: %s: cannot read\n", prog, argv[3]);
			fclose(f);
			free(buf);
			return 1;
		}
		fclose(f);
	} else if (!(buf = malloc(len ? len : 1))) {
		fprintf(stderr, "%s: %s\n", prog, strerror(ENOMEM));
		return 1;
	}
	if (em_cli_connect(cp, &pool, prog)) {
		free(buf);
		return 1;
	}
	rc = em_region_open(pool, argv[1], &r);
	if (rc) {
		fprintf(stderr, "%s: %s: %s\n", prog, argv[1], em_strerror(rc));
	} else {
		rc = wr ? em_write(r, off, buf, len) : em_read(r, off, buf, len);
		if (rc)
			fprintf(stderr, "%s: %s at %" PRIu64 ": %s\n", prog, argv[1], off,
				em_strerror(rc));
		em_region_close(r);
	}
	em_pool_close(pool);
	if (!rc && !wr) {
		f = !strcmp(argv[4], "-") ? stdout : fopen(argv[4], "wb");
		if (!f || fwrite(buf, 1, len, f) != len || (f != stdout && fclose(f))) {
			fprintf(stderr, "%s: %s: %s\n", prog, argv[4], strerror(errno));
			rc = -EIO;
		}
	}
	free(buf);
	return rc ? 1 : 0;
}

/* `ethermem repair NAME`: what em_region_repair does, for a named region;
 * with --background, the throttled repair of the library's repair thread,
 * its state shown as it goes. */
static int cmd_repair(int argc, char **argv, struct em_cli_pool *cp)
{
	bool bg = argc == 3 && !strcmp(argv[2], "--background");
	em_pool *pool;
	em_region *r;
	int rc;

	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: ethermem repair NAME [--background]\n"
		       "Rebuilds every copy or chunk of a redundant region whose node is gone\n"
		       "on another node of the pool, from the survivors, and moves the region\n"
		       "to the next layout epoch. Nodes that do not answer are expected here.\n"
		       "Clients that have the region open follow it and go on writing.\n"
		       "--background runs it the way a program's own background repair does,\n"
		       "at most ETHERMEM_REPAIR_RATE bytes per second, and prints the region's\n"
		       "state and the bytes rebuilt each second until it is healthy again.\n\n%s",
		       pool_help);
		return 0;
	}
	if (argc != 2 && !bg) {
		fprintf(stderr, "ethermem repair: usage: ethermem repair NAME [--background]\n");
		return 2;
	}
	/* this command's handle repairs only when told to */
	setenv("ETHERMEM_AUTO_REPAIR", "0", 1);
	if (em_cli_connect(cp, &pool, "ethermem repair"))
		return 1;
	rc = em_region_open(pool, argv[1], &r);
	if (rc) {
		fprintf(stderr, "ethermem repair: %s: %s\n", argv[1], em_strerror(rc));
	} else if (bg) {
		static const char *states[] = { "healthy", "degraded", "repairing" };
		struct em_region_info ri = { .size = sizeof(ri) };
		unsigned ticks = 0, stuck = 0;

		rc = em_region_repair_start(r);
		while (!rc) {
			struct timespec ts = { 0, 100000000 };
			nanosleep(&ts, NULL);
			if ((rc = em_region_stat(r, &ri)))
				break;
			if (ri.state == EM_STATE_HEALTHY && ++ticks >= 2)
				break;
			if (++ticks % 10 == 0 && ri.to_rebuild)
				printf("%s: %s, %" PRIu64 " of %" PRIu64 " bytes rebuilt\n",
				       argv[1], ri.state < 3 ? states[ri.state] : "?", ri.rebuilt,
				       ri.to_rebuild);
			else if (ticks % 10 == 0)
				printf("%s: %s\n", argv[1], ri.state < 3 ? states[ri.state] : "?");
			/* degraded and not repairing for five seconds: the thread
			 * failed and waits to try again (it logged why) */
			stuck = ri.state == EM_STATE_DEGRADED ? stuck + 1 : 0;
			if (stuck >= 50)
				rc = -EM_ELOST;
		}
		if (rc < 0)
			fprintf(stderr, "ethermem repair: %s: %s\n", argv[1], em_strerror(rc));
		else
			printf("%s: healthy, layout epoch %u\n", argv[1], ri.epoch);
		em_region_close(r);
	} else {
		rc = em_region_repair(r);
		if (rc < 0)
			fprintf(stderr, "ethermem repair: %s: %s\n", argv[1], em_strerror(rc));
		else
			printf("%s: %d part(s) rebuilt\n", argv[1], rc);
		em_region_close(r);
	}
	em_pool_close(pool);
	return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct em_cli_pool cp;
	const char *cmd;

	if (em_cfg_check_env() || em_cli_pool_args(&argc, argv, &cp))
		return 2;
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "--version")) {
		printf("ethermem %s\n", EM_VERSION_STRING);
		return 0;
	}
	if (!strcmp(cmd, "config")) {
		/* every setting, from the table the programs read them through */
		bool md = argc > 2 && !strcmp(argv[2], "--markdown");
		if (argc > 2 + md) {
			fprintf(stderr, "usage: ethermem config [--markdown]\n");
			return 2;
		}
		em_cfg_list(stdout, EM_CFG_ENV | EM_CFG_CLIENT | EM_CFG_NODE, md);
		return 0;
	}
	if (!strcmp(cmd, "status"))
		return cmd_status(argc - 1, argv + 1, &cp);
	if (!strcmp(cmd, "repair"))
		return cmd_repair(argc - 1, argv + 1, &cp);
	if (!strcmp(cmd, "write") || !strcmp(cmd, "read"))
		return cmd_rw(argc - 1, argv + 1, &cp, cmd[0] == 'w');
	if (!strcmp(cmd, "region"))
		return cmd_region(argc - 1, argv + 1, &cp);
	if (!strcmp(cmd, "kv"))
		return em_cli_kv(argc - 1, argv + 1, &cp);
	if (!strcmp(cmd, "node"))
		return em_cli_node(argc - 1, argv + 1, &cp);
	/* `run` hands the pool to its program through the environment; the
	 * others connect with the flags themselves */
	if (!strcmp(cmd, "bench") && argc > 2 && !strcmp(argv[2], "map"))
		return em_cli_bench_map(argc - 2, argv + 2, &cp);
	if (!strcmp(cmd, "bench") && argc > 2 && !strcmp(argv[2], "failover"))
		return em_cli_bench_failover(argc - 2, argv + 2, &cp);
	if (!strcmp(cmd, "bench") && argc > 2 && !strcmp(argv[2], "loaded"))
		return em_cli_bench_loaded(argc - 2, argv + 2, &cp);
	if (!strcmp(cmd, "run")) {
		pool_env(&cp);
		return em_cli_run(argc - 1, argv + 1);
	}
	if (!strcmp(cmd, "import"))
		return em_cli_import(argc - 1, argv + 1, &cp);
	if (!strcmp(cmd, "export"))
		return em_cli_export(argc - 1, argv + 1, &cp);
	if (!strcmp(cmd, "bench"))
		return em_cli_bench(argc - 1, argv + 1, &cp);
	fprintf(stderr, "ethermem: unknown command '%s' (see ethermem --help)\n", cmd);
	return 2;
}
