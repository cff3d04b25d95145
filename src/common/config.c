/*
 * config.c - the table of every ethermem setting and the one parser that
 * checks a value against it (see config.h for why). Rows are grouped by the
 * part that reads them; the order is the order of the listings and README.
 * Adding a setting is adding a row (and its id in config.h); the README test
 * then says which line README is missing.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"
#include "common/util.h"
#include "ethermem.h"
#include "ox/ox.h"

#define E EM_CFG_ENV
#define C EM_CFG_CLIENT
#define N EM_CFG_NODE
#define US_MAX 1000000          /* a spin or delay budget over a second is a typo */
#define MS_MAX (24 * 3600000LL) /* a day */

const struct em_setting em_settings[EM_CFG_COUNT] = {
	[EM_CFG_CONFIG] = { "ETHERMEM_CONFIG", "config", E | C, EM_CFG_STR,
			    "/etc/ethermem/client.conf", 0, 0, NULL,
			    "client configuration file; one named explicitly must exist" },
	[EM_CFG_NODES] = { "ETHERMEM_NODES", "nodes", E | C, EM_CFG_STR, NULL, 0, 0, NULL,
			   "the pool's nodes, tcp://host:port,tcp://host:port,..." },
	[EM_CFG_SECRET_FILE] = { "ETHERMEM_SECRET_FILE", "secret-file", E | C | N, EM_CFG_STR, NULL,
				 0, 0, NULL,
				 "file holding the cluster secret (at least 16 bytes)" },
	[EM_CFG_TIMEOUT_MS] = { "ETHERMEM_TIMEOUT_MS", "timeout-ms", E | C, EM_CFG_DURATION,
				"10000", 1, 3600000, "ms",
				"how long a call waits for a node before it fails" },
	[EM_CFG_TRANSPORT] = { "ETHERMEM_TRANSPORT", "transport", E | C, EM_CFG_STR, "tcp", 0, 0,
			       NULL, "data path by transport name: tcp, ox, fault" },
	[EM_CFG_OX_IFACE] = { "ETHERMEM_OX_IFACE", "ox-iface", E | C, EM_CFG_STR, NULL, 0, 0, NULL,
			      "network interface of the OmniXtend data path" },
	[EM_CFG_POLL_US] = { "ETHERMEM_POLL_US", NULL, E, EM_CFG_DURATION, "50", 0, US_MAX, "us",
			     "how long a waiting client call spins before it sleeps" },
	[EM_CFG_DEBUG] = { "ETHERMEM_DEBUG", NULL, E, EM_CFG_BOOL, "no", 0, 0, NULL,
			   "log the library's debug events to stderr" },
	[EM_CFG_FAULT] = { "ETHERMEM_FAULT", NULL, E, EM_CFG_STR, NULL, 0, 0, NULL,
			   "the fault transport's plan, e.g. node=0,mode=fail (tests)" },
	[EM_CFG_REDUNDANCY] = { "ETHERMEM_REDUNDANCY", "redundancy", E | C, EM_CFG_STR, "none", 0,
				0, NULL,
				"redundancy of regions created without one: none, replicate:N, ec:K+M" },
	[EM_CFG_ALLOW_DOWN] = { "ETHERMEM_ALLOW_DOWN", "allow-down", E | C, EM_CFG_BOOL, "no", 0, 0,
				NULL,
				"no effect (kept for old configs): a pool always connects while one node answers" },
	[EM_CFG_ETCD] = { "ETHERMEM_ETCD", "etcd", E | C | N, EM_CFG_STR, NULL, 0, 0, NULL,
			  "etcd endpoints (http://host:2379,...) holding membership and named regions" },
	[EM_CFG_CLUSTER] = { "ETHERMEM_CLUSTER", "cluster", E | C | N, EM_CFG_STR, "ethermem", 0, 0,
			     NULL, "the pool's name in etcd" },
	[EM_CFG_ENCRYPT] = { "ETHERMEM_ENCRYPT", "encrypt", E | C | N, EM_CFG_BOOL, "no", 0, 0,
			     NULL, "encrypt TCP connections (node: refuse clients that do not)" },
	[EM_CFG_AUTO_REPAIR] = { "ETHERMEM_AUTO_REPAIR", NULL, E, EM_CFG_BOOL, "yes", 0, 0, NULL,
				 "rebuild a redundant region's lost parts in the background as "
				 "soon as a node is found dead" },
	[EM_CFG_REPAIR_RATE] = { "ETHERMEM_REPAIR_RATE", NULL, E, EM_CFG_SIZE, "256M", 0, 1LL << 40,
				 NULL,
				 "bytes per second a background repair may copy or rebuild (0: "
				 "no limit)" },
	[EM_CFG_REPAIR_SHARE] = { "ETHERMEM_REPAIR_SHARE", NULL, E, EM_CFG_INT, "25", 1, 100, NULL,
				  "percent of the time a background repair may spend copying "
				  "while the application uses the region (100: no limit)" },
	[EM_CFG_BULK_WINDOW] = { "ETHERMEM_BULK_WINDOW", NULL, E, EM_CFG_SIZE, "0", 0, 64 << 20,
				 NULL,
				 "bulk bytes a TCP connection has in flight while small requests "
				 "go ahead of the rest (0: send everything in order)" },

	[EM_CFG_OX_WINDOW] = { "ETHERMEM_OX_WINDOW", NULL, E, EM_CFG_INT, "64", 2, 4096, NULL,
			       "OmniXtend frames in flight per channel" },
	[EM_CFG_OX_RTO_US] = { "ETHERMEM_OX_RTO_US", NULL, E, EM_CFG_DURATION, "1000", 10, 10000000,
			       "us", "OmniXtend retransmission timeout" },
	[EM_CFG_OX_ACK_US] = { "ETHERMEM_OX_ACK_US", NULL, E, EM_CFG_DURATION, "20", 1, US_MAX,
			       "us", "how long OmniXtend may hold back an acknowledgement" },
	[EM_CFG_OX_SPIN_US] = { "ETHERMEM_OX_SPIN_US", NULL, E, EM_CFG_DURATION, "200", 1, US_MAX,
				"us", "how long an OmniXtend channel spins before it sleeps" },
	[EM_CFG_OX_FAULTS] = { "ETHERMEM_OX_FAULTS", NULL, E, EM_CFG_STR, NULL, 0, 0, NULL,
			       "OmniXtend link faults, drop=N,dup=N,reorder=N,seed=N (test builds)" },
	[EM_CFG_OX_AUTH] = { "ETHERMEM_OX_AUTH", NULL, E, EM_CFG_BOOL, "no", 0, 0, NULL,
			     "tag every OmniXtend frame with a key of the session (ethermem nodes)" },

	[EM_CFG_MAP_CACHE] = { "ETHERMEM_MAP_CACHE", NULL, E, EM_CFG_SIZE, NULL, 4096, INT64_MAX,
			       NULL,
			       "local memory the mapping layer may fill (default: no limit)" },
	[EM_CFG_MAP_FAULTS] = { "ETHERMEM_MAP_FAULTS", NULL, E, EM_CFG_ENUM, "sigbus", 0, 0,
				"sigbus|thread",
				"serve faults in the faulting thread or in a pager thread" },
	[EM_CFG_MAP_HUGE] = { "ETHERMEM_MAP_HUGE", NULL, E, EM_CFG_BOOL, "yes", 0, 0, NULL,
			      "back 2 MiB mappings with huge pages when the system has them" },
	[EM_CFG_THRESHOLD] = { "ETHERMEM_THRESHOLD", NULL, E, EM_CFG_SIZE, "1M", 256 << 10,
			       INT64_MAX, NULL,
			       "preload: allocations from this size go to the pool" },
	[EM_CFG_FETCH_UNIT] = { "ETHERMEM_FETCH_UNIT", NULL, E | EM_CFG_POW2, EM_CFG_SIZE, "16K",
				4096, 64 << 10, NULL, "preload: bytes fetched per fault" },
	[EM_CFG_PRELOAD_STATS] = { "ETHERMEM_PRELOAD_STATS", NULL, E, EM_CFG_BOOL, "no", 0, 0, NULL,
				   "preload: print one line of statistics at exit" },
	[EM_CFG_MAP_TRACE] = { "ETHERMEM_MAP_TRACE", NULL, E, EM_CFG_STR, NULL, 0, 0, NULL,
			       "write each unit the mapping layer installs to FILE.PID "
			       "(ethermem-ideal reads it)" },
	[EM_CFG_SMALL_OBJECTS] = { "ETHERMEM_SMALL_OBJECTS", NULL, E, EM_CFG_BOOL, "no", 0, 0, NULL,
				   "preload: allocations below the threshold go to pool arenas too" },

	[EM_CFG_LLM_REGION] = { "ETHERMEM_LLM_REGION", NULL, E, EM_CFG_STR, NULL, 0, 0, NULL,
				"LLM runner: region holding the model (default: llm-<file name>)" },
	[EM_CFG_LLM_SPIN] = { "ETHERMEM_LLM_SPIN", NULL, E, EM_CFG_BOOL, "yes", 0, 0, NULL,
			      "LLM runner: spin briefly for weights before sleeping" },
	[EM_CFG_LLM_SPIN_US] = { "ETHERMEM_LLM_SPIN_US", NULL, E, EM_CFG_DURATION, "30", 1, US_MAX,
				 "us",
				 "LLM runner: how long it spins for weights before it sleeps" },
	[EM_CFG_LLM_QUEUES] = { "ETHERMEM_LLM_QUEUES", NULL, E, EM_CFG_INT, "1", 1, 4, NULL,
				"LLM runner: queues that fetch weights in parallel" },
	[EM_CFG_LLM_MAP_UNIT] = { "ETHERMEM_LLM_MAP_UNIT", NULL, E | EM_CFG_POW2, EM_CFG_SIZE, "1M",
				  4096, 2 << 20, NULL,
				  "LLM runner: fetch unit of the mapped model" },
	[EM_CFG_LLM_KV_STORE] = { "ETHERMEM_LLM_KV_STORE", NULL, E, EM_CFG_STR, NULL, 0, 0, NULL,
				  "LLM runner: region of the prefix store (default: one per model)" },

	[EM_CFG_CAPACITY] = { NULL, "capacity", N, EM_CFG_SIZE, NULL, 1, INT64_MAX, NULL,
			      "bytes this node exports (required)" },
	[EM_CFG_LISTEN] = { NULL, "listen", N, EM_CFG_STR, "tcp://127.0.0.1:7420", 0, 0, NULL,
			    "address to listen on; 0.0.0.0 must be given explicitly" },
	[EM_CFG_MLOCK] = { NULL, "mlock", N, EM_CFG_BOOL, "no", 0, 0, NULL,
			   "lock the exported memory in RAM" },
	[EM_CFG_OVERCOMMIT] = { NULL, "overcommit", N, EM_CFG_BOOL, "no", 0, 0, NULL,
				"start even if the capacity exceeds the memory available" },
	[EM_CFG_MAX_PENDING] = { NULL, "max-pending", N, EM_CFG_INT, "256", 1, 1 << 20, NULL,
				 "connections still authenticating, at once" },
	[EM_CFG_MAX_PENDING_PER_SOURCE] = { NULL, "max-pending-per-source", N, EM_CFG_INT, "32", 1,
					    1 << 20, NULL, "of those, from one address" },
	[EM_CFG_KEEPALIVE] = { NULL, "keepalive", N, EM_CFG_INT, "60", -1, 86400, NULL,
			       "seconds before a silent client is probed (0: off)" },
	[EM_CFG_IDLE_TIMEOUT] = { NULL, "idle-timeout", N, EM_CFG_INT, "0", 0, 86400 * 365, NULL,
				  "seconds of silence that end a client's session (0: never)" },
	[EM_CFG_SESSION_LINGER] = { NULL, "session-linger", N, EM_CFG_DURATION, "10000", 0, MS_MAX,
				    "ms",
				    "how long a client whose connections broke may attach again" },
	[EM_CFG_MAX_CLIENTS] = { NULL, "max-clients", N, EM_CFG_INT, "1024", 1, 1 << 20, NULL,
				 "connections served at once" },
	[EM_CFG_IO_TIMEOUT] = { NULL, "io-timeout", N, EM_CFG_DURATION, "30000", 1, MS_MAX, "ms",
				"drop a client that stalls mid-message this long" },
	[EM_CFG_NODE_POLL_US] = { NULL, "poll-us", N, EM_CFG_DURATION, "50", 0, US_MAX, "us",
				  "how long the node spins for the next request before it sleeps (not while tasks wait for a CPU)" },
	[EM_CFG_BULK_SLICE] = { NULL, "bulk-slice", N, EM_CFG_SIZE, "256K", 0, 64 << 20, NULL,
				"send large read replies this much per system call (0: whole)" },
	[EM_CFG_WORKERS] = { NULL, "workers", N, EM_CFG_INT, "0", -1, 1024, NULL,
			     "event-loop threads serving clients (0: one per core, -1: a thread "
			     "per connection)" },
	[EM_CFG_WORKER_IO] = { NULL, "io", N, EM_CFG_ENUM, "epoll", 0, 0, "epoll|uring",
			       "how the workers wait for their sockets (uring: io_uring, where "
			       "built)" },
	[EM_CFG_PORT_FILE] = { NULL, "port-file", N, EM_CFG_STR, NULL, 0, 0, NULL,
			       "write the bound port to this file once listening" },
	[EM_CFG_METRICS_LISTEN] = { NULL, "metrics-listen", N, EM_CFG_STR, NULL, 0, 0, NULL,
				    "HOST:PORT to serve Prometheus metrics at /metrics" },
	[EM_CFG_NODE_CONFIG] = { NULL, "config", N, EM_CFG_STR, NULL, 0, 0, NULL,
				 "read key = value settings (these keys) from this file" },
	[EM_CFG_OX] = { NULL, "ox", N, EM_CFG_STR, NULL, 0, 0, NULL,
			"serve OmniXtend on this interface too" },
	[EM_CFG_OX_ETHERTYPE] = { NULL, "ox-ethertype", N, EM_CFG_INT, "0xAAAA", 0x600, 0xfffe,
				  NULL, "EtherType of OmniXtend frames" },
	[EM_CFG_OX_MODE] = { NULL, "ox-mode", N, EM_CFG_ENUM, "1.1", 0, 0, "1.1|1.0.3",
			     "OmniXtend protocol behaviour" },
	[EM_CFG_OX_VERBATIM] = { NULL, "ox-verbatim", N, EM_CFG_BOOL, "no", 0, 0, NULL,
				 "OmniXtend data bytes in memory order" },
	[EM_CFG_OX_REPLY_PER_FRAME] = { NULL, "ox-reply-per-frame", N, EM_CFG_BOOL, "no", 0, 0,
					NULL, "OmniXtend: one reply frame per request frame" },
	[EM_CFG_OX_EXPORT] = { NULL, "ox-export", N, EM_CFG_STR, NULL, 0, 0, NULL,
			       "REGION@ADDRESS: serve a region at a fixed window without TCP (repeatable)" },
	[EM_CFG_OX_ALLOW] = { NULL, "ox-allow", N, EM_CFG_STR, NULL, 0, 0, NULL,
			      "a MAC the last ox-export serves (repeatable)" },
	[EM_CFG_OX_EXPORT_CREATE] = { NULL, "ox-export-create", N, EM_CFG_SIZE, NULL, 1, INT64_MAX,
				      NULL, "create the last ox-export's region with this size" },
	[EM_CFG_OX_AUTH_NODE] = { NULL, "ox-auth", N, EM_CFG_BOOL, "no", 0, 0, NULL,
				  "refuse OmniXtend sessions whose frames are not tagged" },
	[EM_CFG_VERBOSE] = { NULL, "verbose", N, EM_CFG_BOOL, "no", 0, 0, NULL,
			     "log debug events too" },
};

static const char *type_name(const struct em_setting *s)
{
	switch (s->type) {
	case EM_CFG_INT:
		return "int";
	case EM_CFG_SIZE:
		return "size";
	case EM_CFG_DURATION:
		return s->choices; /* the unit */
	case EM_CFG_BOOL:
		return "bool";
	case EM_CFG_ENUM:
		return s->choices;
	default:
		return "string";
	}
}

/* strtoll with nothing left over; 0 or -EINVAL */
static int whole_int(const char *t, int base, int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(t, &end, base);
	if (errno || end == t || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_bool(const char *t, int64_t *out)
{
	static const char *const yes[] = { "1", "yes", "true", "on" };
	static const char *const no[] = { "0", "no", "false", "off" };

	for (size_t i = 0; i < EM_ARRAY_SIZE(yes); i++) {
		if (!strcasecmp(t, yes[i]))
			return *out = 1, 0;
		if (!strcasecmp(t, no[i]))
			return *out = 0, 0;
	}
	return -EINVAL;
}

static int parse_enum(const char *choices, const char *t, int64_t *out)
{
	size_t n = strlen(t);
	int64_t i = 0;

	for (const char *c = choices; c; i++) {
		const char *bar = strchr(c, '|');
		size_t len = bar ? (size_t)(bar - c) : strlen(c);

		if (n == len && !strncmp(c, t, n))
			return *out = i, 0;
		c = bar ? bar + 1 : NULL;
	}
	return -EINVAL;
}

int em_cfg_parse(enum em_cfg_id id, const char *who, const char *text, struct em_cfg_val *out)
{
	const struct em_setting *s;
	int64_t v = 0;
	uint64_t sz;
	int rc = 0;

	if ((unsigned)id >= EM_CFG_COUNT || !text || !out)
		return -EINVAL;
	s = &em_settings[id];
	out->num = 0;
	out->str = text;
	switch (s->type) {
	case EM_CFG_STR:
		return 0;
	case EM_CFG_BOOL:
		rc = parse_bool(text, &v);
		break;
	case EM_CFG_ENUM:
		rc = parse_enum(s->choices, text, &v);
		break;
	case EM_CFG_SIZE:
		/* em_parse_size takes no sign; a '-' would wrap around */
		rc = strchr(text, '-') || em_parse_size(text, &sz) || sz > INT64_MAX ? -EINVAL : 0;
		v = rc ? 0 : (int64_t)sz;
		break;
	case EM_CFG_INT:
	case EM_CFG_DURATION:
		rc = whole_int(text, s->type == EM_CFG_INT ? 0 : 10, &v);
		break;
	}
	if (!rc &&
	    (s->type == EM_CFG_INT || s->type == EM_CFG_SIZE || s->type == EM_CFG_DURATION) &&
	    (v < s->min || v > s->max || ((s->where & EM_CFG_POW2) && (v & (v - 1)))))
		rc = -EINVAL;
	if (rc) {
		if (s->type == EM_CFG_BOOL)
			em_log(EM_LOG_ERR, "%s: '%s' is not yes/no (1/0, true/false, on/off)", who,
			       text);
		else if (s->type == EM_CFG_ENUM)
			em_log(EM_LOG_ERR, "%s: '%s' is not one of %s", who, text, s->choices);
		else if (s->max == INT64_MAX)
			em_log(EM_LOG_ERR, "%s: '%s' is not %s of at least %lld", who, text,
			       s->type == EM_CFG_SIZE ? "a size" : "an integer", (long long)s->min);
		else
			em_log(EM_LOG_ERR, "%s: '%s' is not %s%s from %lld to %lld%s%s", who, text,
			       s->where & EM_CFG_POW2 ? "a power of two " : "",
			       s->type == EM_CFG_SIZE ? "a size" : "an integer", (long long)s->min,
			       (long long)s->max, s->type == EM_CFG_DURATION ? " " : "",
			       s->type == EM_CFG_DURATION ? s->choices : "");
		return -EINVAL;
	}
	out->num = v;
	return 0;
}

int em_cfg_env(enum em_cfg_id id, struct em_cfg_val *out)
{
	const struct em_setting *s;
	const char *e;

	if ((unsigned)id >= EM_CFG_COUNT || !out || !em_settings[id].env)
		return -EINVAL;
	s = &em_settings[id];
	e = getenv(s->env);
	if (e && *e)
		return em_cfg_parse(id, s->env, e, out);
	out->num = 0;
	out->str = s->def;
	/* the table's own defaults parse; the config test checks every one */
	if (s->def && s->type != EM_CFG_STR)
		return em_cfg_parse(id, s->env, s->def, out);
	return 0;
}

int em_cfg_env_num(enum em_cfg_id id, int64_t *out)
{
	struct em_cfg_val v;
	int rc = em_cfg_env(id, &v);

	if (!rc)
		*out = v.num;
	return rc;
}

int em_cfg_env_str(enum em_cfg_id id, const char **out)
{
	struct em_cfg_val v;
	int rc = em_cfg_env(id, &v);

	if (!rc)
		*out = v.str;
	return rc;
}

bool em_cfg_env_isset(enum em_cfg_id id)
{
	const char *e;

	if ((unsigned)id >= EM_CFG_COUNT || !em_settings[id].env)
		return false;
	e = getenv(em_settings[id].env);
	return e && *e;
}

int em_cfg_check_env(void)
{
	struct em_cfg_val v;
	int rc = 0;

	for (int i = 0; i < EM_CFG_COUNT; i++)
		if (em_settings[i].env && em_cfg_env((enum em_cfg_id)i, &v))
			rc = -EINVAL;
	return rc;
}

int em_cfg_by_key(const char *key, unsigned where)
{
	for (int i = 0; key && i < EM_CFG_COUNT; i++)
		if (em_settings[i].key && (em_settings[i].where & where) &&
		    !strcmp(em_settings[i].key, key))
			return i;
	return -1;
}

void em_cfg_list(FILE *f, unsigned where, bool markdown)
{
	if (markdown)
		fprintf(f, "| variable | key / flag | where | type | default | help |\n"
			   "|---|---|---|---|---|---|\n");
	for (int i = 0; i < EM_CFG_COUNT; i++) {
		const struct em_setting *s = &em_settings[i];
		char range[96] = "";

		if (!(s->where & where))
			continue;
		if (s->type == EM_CFG_INT || s->type == EM_CFG_SIZE || s->type == EM_CFG_DURATION)
			snprintf(range, sizeof(range), " %lld..%lld%s", (long long)s->min,
				 (long long)s->max, s->where & EM_CFG_POW2 ? " pow2" : "");
		if (s->max == INT64_MAX)
			snprintf(range, sizeof(range), " >=%lld", (long long)s->min);
		if (markdown)
			fprintf(f, "| %s%s%s | %s%s%s | %s%s | %s%s | %s | %s |\n",
				s->env ? "`" : "", s->env ? s->env : "-", s->env ? "`" : "",
				s->key ? "`" : "", s->key ? s->key : "-", s->key ? "`" : "",
				s->where & C ? "client" : "",
				s->where & N ? (s->where & C ? ", node" : "node")
					     : (s->where & C ? "" : "-"),
				type_name(s), range, s->def ? s->def : "-", s->help);
		else
			fprintf(f, "%-24s %-18s %s%s [%s]\n    %s\n", s->env ? s->env : "-",
				s->key ? s->key : "-", type_name(s), range, s->def ? s->def : "-",
				s->help);
	}
}

int em_cfg_ox_opts(struct ox_opts *o, const char **faults)
{
	int64_t win, rto, ack, spin;
	int rc;

	if ((rc = em_cfg_env_num(EM_CFG_OX_WINDOW, &win)) ||
	    (rc = em_cfg_env_num(EM_CFG_OX_RTO_US, &rto)) ||
	    (rc = em_cfg_env_num(EM_CFG_OX_ACK_US, &ack)) ||
	    (rc = em_cfg_env_num(EM_CFG_OX_SPIN_US, &spin)) ||
	    (rc = em_cfg_env_str(EM_CFG_OX_FAULTS, faults)))
		return rc;
	if (!o->rtx_slots)
		o->rtx_slots = (unsigned)win;
	if (!o->rto_ns)
		o->rto_ns = (uint64_t)rto * 1000;
	if (!o->ack_delay_ns)
		o->ack_delay_ns = (uint64_t)ack * 1000;
	if (!o->spin_ns)
		o->spin_ns = (uint64_t)spin * 1000;
	return 0;
}
