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

#include "common/util.h"
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
"  --max-clients N      connections served at once              [1024]\n"
"  --io-timeout MS      drop a client that stalls mid-message  [30000]\n"
"  --port-file FILE     write the bound port there once listening\n"
"  --config FILE        read 'key = value' settings (same names as the flags)\n"
"  --verbose            log debug events too\n"
"  --version, --help\n");
}

struct cfg {
	struct em_server_opts o;
	char listen[256], secret[4096], portfile[4096];
	bool have_capacity;
};

static int set_opt(struct cfg *c, const char *k, const char *v)
{
	if (!strcmp(k, "capacity")) {
		if (em_parse_size(v, &c->o.capacity) || c->o.capacity == 0) {
			fprintf(stderr, "ethermemd: bad capacity '%s'\n", v);
			return -EINVAL;
		}
		c->have_capacity = true;
	} else if (!strcmp(k, "listen")) {
		snprintf(c->listen, sizeof(c->listen), "%s", v);
	} else if (!strcmp(k, "secret-file") || !strcmp(k, "secret_file")) {
		snprintf(c->secret, sizeof(c->secret), "%s", v);
	} else if (!strcmp(k, "port-file")) {
		snprintf(c->portfile, sizeof(c->portfile), "%s", v);
	} else if (!strcmp(k, "mlock")) {
		c->o.mlock = !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "true");
	} else if (!strcmp(k, "max-clients")) {
		c->o.max_clients = atoi(v);
	} else if (!strcmp(k, "io-timeout")) {
		c->o.io_timeout_ms = atoi(v);
	} else if (!strcmp(k, "verbose")) {
		em_log_threshold = EM_LOG_DEBUG;
	} else {
		fprintf(stderr, "ethermemd: unknown setting '%s'\n", k);
		return -EINVAL;
	}
	return 0;
}

static int config_cb(void *arg, const char *k, const char *v, int line)
{
	return set_opt(arg, k, v);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "capacity", 1, 0, 'c' }, { "listen", 1, 0, 'l' },
		{ "secret-file", 1, 0, 's' }, { "mlock", 0, 0, 'm' },
		{ "max-clients", 1, 0, 'M' }, { "io-timeout", 1, 0, 'T' },
		{ "port-file", 1, 0, 'p' }, { "config", 1, 0, 'C' },
		{ "verbose", 0, 0, 'v' }, { "version", 0, 0, 'V' },
		{ "help", 0, 0, 'h' }, { 0, 0, 0, 0 },
	};
	struct cfg c = { 0 };
	struct em_server *srv;
	sigset_t set;
	int opt, rc;
	const char *env;

	snprintf(c.listen, sizeof(c.listen), "tcp://127.0.0.1:7420");
	if ((env = getenv("ETHERMEM_SECRET_FILE")))
		snprintf(c.secret, sizeof(c.secret), "%s", env);
	/* The config file is read first so flags override it. */
	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], "--config")) {
			rc = em_config_parse(argv[i + 1], config_cb, &c);
			if (rc) {
				if (rc != -EINVAL)
					fprintf(stderr, "ethermemd: cannot read %s: %s\n", argv[i + 1], strerror(-rc));
				return 2;
			}
		}
	while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (opt) {
		case 'c': rc = set_opt(&c, "capacity", optarg); break;
		case 'l': rc = set_opt(&c, "listen", optarg); break;
		case 's': rc = set_opt(&c, "secret-file", optarg); break;
		case 'm': rc = set_opt(&c, "mlock", "1"); break;
		case 'M': rc = set_opt(&c, "max-clients", optarg); break;
		case 'T': rc = set_opt(&c, "io-timeout", optarg); break;
		case 'p': rc = set_opt(&c, "port-file", optarg); break;
		case 'v': rc = set_opt(&c, "verbose", "1"); break;
		case 'C': rc = 0; break;
		case 'V': printf("ethermemd %s\n", EM_VERSION_STRING); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
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
		fprintf(stderr, "ethermemd: a cluster secret is required (--secret-file or ETHERMEM_SECRET_FILE)\n");
		return 2;
	}
	c.o.listen = c.listen;
	c.o.secret_file = c.secret;
	c.o.port_file = c.portfile[0] ? c.portfile : NULL;

	/* Every thread inherits this mask; the server takes SIGTERM/SIGINT
	 * through a signalfd, and a vanished peer must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	rc = em_server_create(&srv, &c.o);
	if (rc)
		return 1;
	rc = em_server_run(srv);
	em_server_destroy(srv);
	return rc ? 1 : 0;
}
