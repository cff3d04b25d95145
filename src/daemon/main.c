/*
 * main.c - ethermemd, the memory node: parses flags and an optional
 * configuration file, then runs the server in the foreground (systemd runs it
 * the same way, see dist/ethermemd.service).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/config.h"
#include "common/util.h"
#include "daemon/metrics.h"
#include "daemon/ox_serve.h"
#include "daemon/register.h"
#include "daemon/server.h"
#include "ethermem.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ethermemd [options]\n"
		"Exports local DRAM into an ethermem pool.\n\n"
		"  --capacity SIZE      bytes to export (512M, 64G, ...)          [required]\n"
		"  --listen URL         tcp://ADDR:PORT to listen on   [tcp://127.0.0.1:7420]\n"
		"                       (0.0.0.0 must be given explicitly)\n"
		"  --secret-file FILE   cluster secret, at least 16 bytes           [required]\n"
		"                       (or ETHERMEM_SECRET_FILE)\n"
		"  --mlock              lock the exported memory in RAM\n"
		"  --overcommit         start even if the capacity exceeds the memory the\n"
		"                       machine or the node's cgroup has available\n"
		"  --encrypt            serve only clients that encrypt their connection\n"
		"                       (others may still ask for it without this flag)\n"
		"  --max-clients N      authenticated connections served at once [1024]\n"
		"  --max-pending N      connections still authenticating, at once [256]\n"
		"                       (when full, the oldest of them is dropped)\n"
		"  --max-pending-per-source N   of those, from one address         [32]\n"
		"  --io-timeout MS      deadline for a whole message once begun [30000]\n"
		"                       (and for the handshake, at most 5000)\n"
		"  --keepalive S        probe a silent client after S seconds, so the\n"
		"                       sessions of a vanished host end (0: off)    [60]\n"
		"  --idle-timeout S     drop a client that sends nothing for S seconds,\n"
		"                       ending its session (0: never)               [0]\n"
		"  --session-linger MS  keep the session of a client whose connections\n"
		"                       broke, for it to attach again and resend  [10000]\n"
		"  --poll-us US         spin for the next request this long before\n"
		"                       sleeping, unless tasks wait for a CPU\n"
		"                       (0: never spin)                           [50]\n"
		"  --port-file FILE     write the bound port there once listening\n"
		"  --config FILE        read 'key = value' settings (same names as the flags)\n"
		"  --metrics-listen HOST:PORT  serve Prometheus metrics at /metrics there\n"
		"                       (off by default; no HOST means 127.0.0.1)\n"
		"OmniXtend data path (raw Ethernet; TCP stays the control path):\n"
		"  --ox IFACE           serve OmniXtend on this interface too\n"
		"  --ox-ethertype 0xN   EtherType of OmniXtend frames                [0xAAAA]\n"
		"                       (EtherType + 1 answers the benchmark's raw ping-pong)\n"
		"  --ox-mode 1.1|1.0.3  protocol behaviour                               [1.1]\n"
		"  --ox-verbatim        data bytes in memory order (some software endpoints)\n"
		"  --ox-auth            sessions must tag their frames (ETHERMEM_OX_AUTH=1)\n"
		"  --ox-reply-per-frame answer each request frame in a frame of its own (for\n"
		"                       requesters that match answers by sequence number)\n"
		"  --ox-export REGION@ADDRESS   serve a named region at a fixed address window\n"
		"                       to the MACs of the --ox-allow flags that follow it,\n"
		"                       with no TCP session (FPGA / third-party requesters)\n"
		"  --ox-allow MAC       allow a MAC on the last --ox-export (repeatable)\n"
		"  --ox-export-create SIZE  create the last --ox-export's region at start if\n"
		"                       missing (else it is served once a client creates it)\n"
		"  --bulk-slice SIZE    send large read replies this much per system call,\n"
		"                       so small requests need not wait for a whole one\n"
		"                       (0: each reply in one call)                  [256K]\n"
		"  --workers N          event-loop threads serving all clients (0: one per\n"
		"                       core, -1: a thread per connection)              [0]\n"
		"  --io epoll|uring     how the workers wait for their sockets: epoll, or\n"
		"                       io_uring's poll requests (where built)      [epoll]\n"
		"Membership (etcd):\n"
		"  --etcd URL[,URL...]  register in etcd (http://HOST:2379) under a lease\n"
		"                       kept alive, so clients find this node by themselves\n"
		"  --cluster NAME       the pool's name in etcd                  [ethermem]\n"
		"  --advertise URL      tcp://HOST:PORT clients dial     [the --listen address]\n"
		"  --lease-ttl S        seconds without renewal after which etcd drops\n"
		"                       this node and clients see it down              [2]\n"
		"  --verbose            log debug events too\n"
		"  --version, --help, --help-settings (every setting: type, range, default)\n");
}

struct cfg {
	struct em_server_opts o;
	struct em_oxs_opts ox;
	char ox_iface[64];
	char listen[256], secret[4096], portfile[4096], metrics[256];
	char etcd[1024], cluster[80], advertise[80];
	int lease_ttl;
	bool have_capacity;
};

static int set_opt(struct cfg *c, const char *k, const char *v)
{
	/* every value is checked by the settings table's rule first */
	int id = em_cfg_by_key(k, EM_CFG_NODE);
	struct em_cfg_val cv;

	if (id >= 0 && em_cfg_parse((enum em_cfg_id)id, k, v, &cv))
		return -EINVAL;
	if (!strcmp(k, "capacity")) {
		c->o.capacity = (uint64_t)cv.num;
		c->have_capacity = true;
	} else if (!strcmp(k, "listen")) {
		snprintf(c->listen, sizeof(c->listen), "%s", v);
	} else if (!strcmp(k, "secret-file") || !strcmp(k, "secret_file")) {
		snprintf(c->secret, sizeof(c->secret), "%s", v);
	} else if (!strcmp(k, "metrics-listen")) {
		snprintf(c->metrics, sizeof(c->metrics), "%s", v);
	} else if (!strcmp(k, "port-file")) {
		snprintf(c->portfile, sizeof(c->portfile), "%s", v);
	} else if (!strcmp(k, "mlock")) {
		c->o.mlock = cv.num;
	} else if (!strcmp(k, "overcommit")) {
		c->o.overcommit = cv.num;
	} else if (!strcmp(k, "encrypt")) {
		c->o.encrypt = cv.num;
	} else if (!strcmp(k, "max-clients")) {
		c->o.max_clients = (int)cv.num;
	} else if (!strcmp(k, "keepalive")) {
		c->o.keepalive_s = (int)cv.num;
	} else if (!strcmp(k, "idle-timeout")) {
		c->o.idle_timeout_s = (int)cv.num;
	} else if (!strcmp(k, "session-linger")) {
		c->o.session_linger_ms = (int)cv.num;
	} else if (!strcmp(k, "max-pending")) {
		c->o.max_pending = (int)cv.num;
	} else if (!strcmp(k, "max-pending-per-source")) {
		c->o.max_pending_per_source = (int)cv.num;
	} else if (!strcmp(k, "io-timeout")) {
		c->o.io_timeout_ms = (int)cv.num;
	} else if (!strcmp(k, "poll-us")) {
		c->o.poll_us = (int)cv.num;
	} else if (!strcmp(k, "bulk-slice")) {
		c->o.bulk_slice = (uint32_t)cv.num;
	} else if (!strcmp(k, "workers")) {
		c->o.workers = (int)cv.num;
	} else if (!strcmp(k, "io")) {
		c->o.io = (int)cv.num; /* the table's order: EM_IO_* */
	} else if (!strcmp(k, "ox")) {
		snprintf(c->ox_iface, sizeof(c->ox_iface), "%s", v);
	} else if (!strcmp(k, "ox-ethertype")) {
		c->ox.ethertype = (uint16_t)cv.num;
	} else if (!strcmp(k, "ox-mode")) {
		c->ox.mode = (int)cv.num; /* the table's order: 1.1, 1.0.3 */
	} else if (!strcmp(k, "ox-verbatim")) {
		c->ox.verbatim = cv.num;
	} else if (!strcmp(k, "ox-auth")) {
		c->ox.tag_required = cv.num;
	} else if (!strcmp(k, "ox-reply-per-frame")) {
		c->ox.reply_per_frame = cv.num;
	} else if (!strcmp(k, "ox-export")) {
		struct em_oxs_export *e;
		const char *at = strrchr(v, '@');
		char *end;
		if (c->ox.nexp == EM_OXS_MAX_EXPORTS || !at || at == v ||
		    (size_t)(at - v) > EM_NAME_MAX) {
			fprintf(stderr, "ethermemd: --ox-export REGION@ADDRESS (at most %d)\n",
				EM_OXS_MAX_EXPORTS);
			return -EINVAL;
		}
		e = &c->ox.exp[c->ox.nexp];
		memcpy(e->region, v, (size_t)(at - v));
		e->region[at - v] = 0;
		e->addr = strtoull(at + 1, &end, 0);
		if (*end || !at[1]) {
			fprintf(stderr, "ethermemd: bad address in --ox-export '%s'\n", v);
			return -EINVAL;
		}
		c->ox.nexp++;
	} else if (!strcmp(k, "ox-allow") || !strcmp(k, "ox-export-create")) {
		struct em_oxs_export *e = c->ox.nexp ? &c->ox.exp[c->ox.nexp - 1] : NULL;
		unsigned m[6];
		char tail;
		if (!e) {
			fprintf(stderr, "ethermemd: --%s follows an --ox-export\n", k);
			return -EINVAL;
		}
		if (!strcmp(k, "ox-export-create")) {
			e->create_size = (uint64_t)cv.num;
		} else if (e->nallow == EM_OXS_MAX_ALLOW ||
			   sscanf(v, "%x:%x:%x:%x:%x:%x%c", &m[0], &m[1], &m[2], &m[3], &m[4],
				  &m[5], &tail) != 6) {
			fprintf(stderr,
				"ethermemd: bad --ox-allow MAC '%s' (at most %d per export)\n", v,
				EM_OXS_MAX_ALLOW);
			return -EINVAL;
		} else {
			for (int i = 0; i < 6; i++) {
				if (m[i] > 255)
					return -EINVAL;
				e->allow[e->nallow][i] = (uint8_t)m[i];
			}
			e->nallow++;
		}
	} else if (!strcmp(k, "etcd")) {
		snprintf(c->etcd, sizeof(c->etcd), "%s", v);
	} else if (!strcmp(k, "cluster")) {
		snprintf(c->cluster, sizeof(c->cluster), "%s", v);
	} else if (!strcmp(k, "advertise")) {
		snprintf(c->advertise, sizeof(c->advertise), "%s", v);
	} else if (!strcmp(k, "lease-ttl")) {
		c->lease_ttl = atoi(v);
		if (c->lease_ttl < 1 || c->lease_ttl > 3600) {
			fprintf(stderr, "ethermemd: --lease-ttl is 1..3600 seconds\n");
			return -EINVAL;
		}
	} else if (!strcmp(k, "verbose")) {
		if (cv.num)
			em_log_threshold = EM_LOG_DEBUG;
	} else {
		fprintf(stderr, "ethermemd: unknown setting '%s'\n", k);
		return -EINVAL;
	}
	return 0;
}

static void on_listening(void *arg, const char *host, unsigned port)
{
	if (em_reg_start(arg, host, port))
		em_log(EM_LOG_ERR, "cannot start etcd registration");
}

static int config_cb(void *arg, const char *k, const char *v, int line)
{
	return set_opt(arg, k, v);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "capacity", 1, 0, 'c' },
		{ "listen", 1, 0, 'l' },
		{ "secret-file", 1, 0, 's' },
		{ "mlock", 0, 0, 'm' },
		{ "max-clients", 1, 0, 'M' },
		{ "io-timeout", 1, 0, 'T' },
		{ "port-file", 1, 0, 'p' },
		{ "config", 1, 0, 'C' },
		{ "poll-us", 1, 0, 'P' },
		{ "metrics-listen", 1, 0, 'H' },
		{ "overcommit", 0, 0, 1003 },
		{ "encrypt", 0, 0, 1006 },
		{ "keepalive", 1, 0, 1004 },
		{ "idle-timeout", 1, 0, 1005 },
		{ "session-linger", 1, 0, 1090 },
		{ "max-pending", 1, 0, 1001 },
		{ "max-pending-per-source", 1, 0, 1002 },
		{ "verbose", 0, 0, 'v' },
		{ "version", 0, 0, 'V' },
		{ "ox", 1, 0, 'x' },
		{ "ox-ethertype", 1, 0, 'e' },
		{ "ox-mode", 1, 0, 'o' },
		{ "ox-verbatim", 0, 0, 'b' },
		{ "ox-export", 1, 0, 'X' },
		{ "ox-allow", 1, 0, 'a' },
		{ "ox-export-create", 1, 0, 'E' },
		{ "ox-reply-per-frame", 0, 0, 'r' },
		{ "ox-auth", 0, 0, 1200 },
		{ "bulk-slice", 1, 0, 1100 },
		{ "workers", 1, 0, 1101 },
		{ "io", 1, 0, 1102 },
		{ "etcd", 1, 0, 'D' },
		{ "cluster", 1, 0, 'N' },
		{ "advertise", 1, 0, 'A' },
		{ "lease-ttl", 1, 0, 'L' },
		{ "help", 0, 0, 'h' },
		{ "help-settings", 0, 0, 1000 },
		{ 0, 0, 0, 0 },
	};
	struct cfg c = { 0 };
	struct em_server *srv;
	struct em_metrics *metrics = NULL;
	struct em_reg *reg = NULL;
	sigset_t set;
	int opt, rc;
	const char *env;

	/* the defaults are the settings table's */
	if (set_opt(&c, "listen", em_settings[EM_CFG_LISTEN].def) ||
	    set_opt(&c, "poll-us", em_settings[EM_CFG_NODE_POLL_US].def) ||
	    set_opt(&c, "session-linger", em_settings[EM_CFG_SESSION_LINGER].def) ||
	    set_opt(&c, "bulk-slice", em_settings[EM_CFG_BULK_SLICE].def) ||
	    set_opt(&c, "workers", em_settings[EM_CFG_WORKERS].def) ||
	    set_opt(&c, "io", em_settings[EM_CFG_WORKER_IO].def))
		return 2;
	if (!em_cfg_env_str(EM_CFG_ETCD, &env) && env)
		snprintf(c.etcd, sizeof(c.etcd), "%s", env);
	if (!em_cfg_env_str(EM_CFG_CLUSTER, &env) && env)
		snprintf(c.cluster, sizeof(c.cluster), "%s", env);
	if (!em_cfg_env_str(EM_CFG_SECRET_FILE, &env) && env)
		snprintf(c.secret, sizeof(c.secret), "%s", env);
	if (em_cfg_env_isset(EM_CFG_ENCRYPT)) {
		int64_t v;
		if (em_cfg_env_num(EM_CFG_ENCRYPT, &v))
			return 2;
		c.o.encrypt = v;
	}
	/* The config file is read first so flags override it. */
	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], "--config")) {
			rc = em_config_parse(argv[i + 1], config_cb, &c);
			if (rc) {
				if (rc != -EINVAL)
					fprintf(stderr, "ethermemd: cannot read %s: %s\n",
						argv[i + 1], strerror(-rc));
				return 2;
			}
		}
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (opt) {
		case 'c':
			rc = set_opt(&c, "capacity", optarg);
			break;
		case 'l':
			rc = set_opt(&c, "listen", optarg);
			break;
		case 's':
			rc = set_opt(&c, "secret-file", optarg);
			break;
		case 'm':
			rc = set_opt(&c, "mlock", "1");
			break;
		case 'M':
			rc = set_opt(&c, "max-clients", optarg);
			break;
		case 'T':
			rc = set_opt(&c, "io-timeout", optarg);
			break;
		case 1004:
			rc = set_opt(&c, "keepalive", optarg);
			break;
		case 1005:
			rc = set_opt(&c, "idle-timeout", optarg);
			break;
		case 1090:
			rc = set_opt(&c, "session-linger", optarg);
			break;
		case 1003:
			rc = set_opt(&c, "overcommit", "1");
			break;
		case 1006:
			rc = set_opt(&c, "encrypt", "1");
			break;
		case 1001:
			rc = set_opt(&c, "max-pending", optarg);
			break;
		case 1002:
			rc = set_opt(&c, "max-pending-per-source", optarg);
			break;
		case 'p':
			rc = set_opt(&c, "port-file", optarg);
			break;
		case 'P':
			rc = set_opt(&c, "poll-us", optarg);
			break;
		case 'H':
			rc = set_opt(&c, "metrics-listen", optarg);
			break;
		case 'v':
			rc = set_opt(&c, "verbose", "1");
			break;
		case 1100:
			rc = set_opt(&c, "bulk-slice", optarg);
			break;
		case 1101:
			rc = set_opt(&c, "workers", optarg);
			break;
		case 1102:
			rc = set_opt(&c, "io", optarg);
			break;
		case 'x':
			rc = set_opt(&c, "ox", optarg);
			break;
		case 'e':
			rc = set_opt(&c, "ox-ethertype", optarg);
			break;
		case 'o':
			rc = set_opt(&c, "ox-mode", optarg);
			break;
		case 'b':
			rc = set_opt(&c, "ox-verbatim", "1");
			break;
		case 'r':
			rc = set_opt(&c, "ox-reply-per-frame", "1");
			break;
		case 1200:
			rc = set_opt(&c, "ox-auth", "1");
			break;
		case 'X':
			rc = set_opt(&c, "ox-export", optarg);
			break;
		case 'a':
			rc = set_opt(&c, "ox-allow", optarg);
			break;
		case 'E':
			rc = set_opt(&c, "ox-export-create", optarg);
			break;
		case 'D':
			rc = set_opt(&c, "etcd", optarg);
			break;
		case 'N':
			rc = set_opt(&c, "cluster", optarg);
			break;
		case 'A':
			rc = set_opt(&c, "advertise", optarg);
			break;
		case 'L':
			rc = set_opt(&c, "lease-ttl", optarg);
			break;
		case 'C':
			rc = 0;
			break;
		case 'V':
			printf("ethermemd %s\n", EM_VERSION_STRING);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case 1000:
			em_cfg_list(stdout, EM_CFG_NODE, false);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
		if (rc)
			return 2;
	}
	if (optind < argc) {
		fprintf(stderr, "ethermemd: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!c.have_capacity) {
		fprintf(stderr, "ethermemd: --capacity is required\n");
		return 2;
	}
	if (!c.secret[0]) {
		fprintf(stderr,
			"ethermemd: a cluster secret is required (--secret-file or ETHERMEM_SECRET_FILE)\n");
		return 2;
	}
	c.o.listen = c.listen;
	c.o.secret_file = c.secret;
	c.o.port_file = c.portfile[0] ? c.portfile : NULL;
	if (c.ox.nexp && !c.ox_iface[0]) {
		fprintf(stderr, "ethermemd: --ox-export needs --ox IFACE\n");
		return 2;
	}
	for (unsigned i = 0; i < c.ox.nexp; i++)
		if (!c.ox.exp[i].nallow) {
			fprintf(stderr, "ethermemd: --ox-export %s has no --ox-allow MAC\n",
				c.ox.exp[i].region);
			return 2;
		}
	if (c.ox_iface[0]) {
		c.ox.iface = c.ox_iface;
		c.o.ox = &c.ox;
	}

	/* Every thread inherits this mask; the server takes SIGTERM/SIGINT
	 * through a signalfd, and a vanished peer must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	/* every client and every connection still authenticating holds a
	 * descriptor: take all the process may have */
	{
		struct rlimit rl;
		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	rc = em_server_create(&srv, &c.o);
	if (rc)
		return 1;
	if (c.etcd[0]) {
		struct em_reg_opts ro = {
			.etcd = c.etcd,
			.cluster = c.cluster[0] ? c.cluster : NULL,
			.advertise = c.advertise[0] ? c.advertise : NULL,
			.ox_iface = c.ox_iface[0] ? c.ox_iface : NULL,
			.ttl_s = c.lease_ttl,
		};
		if (em_reg_create(&reg, srv, &ro)) {
			em_server_destroy(srv);
			return 2;
		}
		/* registration starts once the socket listens (its real port) */
		em_server_set_listening(srv, on_listening, reg);
	}
	if (c.metrics[0] && em_metrics_start(&metrics, c.metrics, srv, reg)) {
		em_reg_destroy(reg);
		em_server_destroy(srv);
		return 1;
	}
	rc = em_server_run(srv);
	/* the metrics read the registration; then leave the cluster before
	 * the memory goes */
	em_metrics_stop(metrics);
	em_reg_destroy(reg);
	em_server_destroy(srv);
	return rc ? 1 : 0;
}
