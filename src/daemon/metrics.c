/*
 * metrics.c - the node's Prometheus endpoint (`ethermemd --metrics-listen`).
 *
 * Operators already scrape everything else they run with Prometheus, so a
 * node offers the counters of `ethermem status` at GET /metrics in the text
 * exposition format. HTTP is libmicrohttpd's business (one internal polling
 * thread; a scrape every few seconds needs no more): this file only turns a
 * snapshot of the server's counters into text. Names follow Prometheus's
 * conventions: an ethermem_ prefix, base units (bytes, seconds) in the name,
 * _total on counters. Service times are exported as real histograms, folded
 * from the node's fine log-linear buckets into a fixed ladder of bounds; a
 * fine bucket is counted under the first bound that holds all of it, so a
 * bucket can read up to one fine bucket (about 6%) low, never high.
 * A node in an etcd cluster adds its membership (whether its lease is
 * held, its TTL, how long since it was renewed, up or draining), and every
 * node counts the named regions it holds by the redundancy in their stored
 * layouts, so a dashboard shows where redundant data lives.
 */
#include "daemon/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/wire.h"
#include "daemon/register.h"
#include "daemon/server.h"

struct em_metrics {
	struct MHD_Daemon *d;
	struct em_server *srv;
	struct em_reg *reg; /* NULL without etcd */
};

static const char *const op_names[8] = {
	"read", "write", "atomic", "create", "open", "delete", "list", "status",
};

/* Histogram bounds in seconds, 1-2.5-5 steps from 1 us to 1 s. */
static const double bounds_s[] = {
	1e-6,   2.5e-6, 5e-6, 1e-5,   2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3,
	2.5e-3, 5e-3,   1e-2, 2.5e-2, 5e-2,   0.1,  0.25, 0.5,    1.0,
};

static void gauge(FILE *f, const char *name, const char *help, uint64_t v)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s gauge\n%s %" PRIu64 "\n", name, help, name, name, v);
}

static void counter(FILE *f, const char *name, const char *help, uint64_t v)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

/* A time in seconds, to the millisecond: a gauge or a counter. */
static void seconds(FILE *f, const char *type, const char *name, const char *help, double s)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %.3f\n", name, help, name, type, name, s);
}

static void histogram(FILE *f, const char *op, const struct em_hist *h, uint64_t sum_ns)
{
	unsigned b = 0;
	uint64_t cum = 0, total = em_hist_total(h);

	for (size_t i = 0; i < sizeof(bounds_s) / sizeof(bounds_s[0]); i++) {
		uint64_t le_ns = (uint64_t)(bounds_s[i] * 1e9 + 0.5);
		while (b < EM_HIST_BUCKETS && em_hist_bucket_max(b) <= le_ns)
			cum += h->count[b++];
		/* the copy is not one atomic read: never let a bound pass the count */
		fprintf(f, "ethermem_op_duration_seconds_bucket{op=\"%s\",le=\"%g\"} %" PRIu64 "\n",
			op, bounds_s[i], EM_MIN(cum, total));
	}
	fprintf(f, "ethermem_op_duration_seconds_bucket{op=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", op,
		total);
	fprintf(f, "ethermem_op_duration_seconds_sum{op=\"%s\"} %.9f\n", op, (double)sum_ns / 1e9);
	fprintf(f, "ethermem_op_duration_seconds_count{op=\"%s\"} %" PRIu64 "\n", op, total);
}

static void cluster(FILE *f, struct em_reg *reg)
{
	static const char *const states[] = { "up", "draining" };
	struct em_reg_info ri;

	em_reg_info(reg, &ri);
	gauge(f, "ethermem_cluster_registered",
	      "1 while the node's record is in etcd under a live lease.", (uint64_t)ri.registered);
	gauge(f, "ethermem_cluster_lease_ttl_seconds", "Time to live of the node's etcd lease.",
	      (uint64_t)ri.ttl_s);
	seconds(f, "gauge", "ethermem_cluster_lease_renewed_age_seconds",
		"Seconds since the lease was granted or kept alive (-1: never).", ri.renewed_ago_s);
	fprintf(f,
		"# HELP ethermem_node_state The state the node publishes in etcd (1 on its row).\n"
		"# TYPE ethermem_node_state gauge\n");
	for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		fprintf(f, "ethermem_node_state{state=\"%s\"} %d\n", states[i],
			!strcmp(ri.state, states[i]));
}

static void redundancy(FILE *f, struct em_server *srv)
{
	static const char *const names[4] = { "unknown", "none", "replicate", "ec" };
	uint64_t count[4];

	em_server_redundancy(srv, count);
	fprintf(f,
		"# HELP ethermem_region_parts Named regions (a region's copy or chunk held here), "
		"by the region's redundancy.\n"
		"# TYPE ethermem_region_parts gauge\n");
	for (int i = 0; i < 4; i++)
		fprintf(f, "ethermem_region_parts{redundancy=\"%s\"} %" PRIu64 "\n", names[i],
			count[i]);
}

static char *render(struct em_server *srv, struct em_reg *reg, size_t *len)
{
	struct em_server_snapshot *sn = calloc(1, sizeof(*sn));
	char *text = NULL;
	FILE *f;

	if (!sn)
		return NULL;
	f = open_memstream(&text, len);
	if (!f) {
		free(sn);
		return NULL;
	}
	em_server_snapshot(srv, sn);
	const uint64_t *v = sn->v;
	gauge(f, "ethermem_capacity_bytes", "Bytes this node exports.", v[EM_ST_CAPACITY]);
	gauge(f, "ethermem_used_bytes", "Bytes allocated to regions.", v[EM_ST_USED]);
	gauge(f, "ethermem_regions", "Regions held, named and anonymous.", v[EM_ST_REGIONS]);
	gauge(f, "ethermem_named_regions", "Named regions held.", v[EM_ST_NAMED]);
	gauge(f, "ethermem_clients", "Authenticated client connections now.", v[EM_ST_CLIENTS]);
	gauge(f, "ethermem_huge_pages", "1 when the export is backed by explicit huge pages.",
	      v[EM_ST_HUGE]);
	gauge(f, "ethermem_uptime_seconds", "Seconds since the node started.", v[EM_ST_UPTIME]);
	counter(f, "ethermem_received_bytes_total", "Bytes received from clients.",
		v[EM_ST_BYTES_IN]);
	counter(f, "ethermem_sent_bytes_total", "Bytes sent to clients.", v[EM_ST_BYTES_OUT]);
	counter(f, "ethermem_auth_failures_total", "Connections refused at authentication.",
		v[EM_ST_AUTHFAIL]);
	counter(f, "ethermem_connections_moved_total",
		"Client connections moved to another worker, away from bulk streams.",
		sn->conn_moves);
	seconds(f, "counter", "ethermem_spin_paused_seconds_total",
		"Time the node did not spin for requests because tasks waited for a CPU.",
		(double)sn->spin_shut_ns / 1e9);

	fprintf(f, "# HELP ethermem_ops_total Requests served, by operation.\n"
		   "# TYPE ethermem_ops_total counter\n");
	for (int i = 0; i < 8; i++)
		fprintf(f, "ethermem_ops_total{op=\"%s\"} %" PRIu64 "\n", op_names[i],
			v[EM_ST_OPS0 + i]);
	fprintf(f,
		"# HELP ethermem_op_errors_total Requests answered with an error, by operation.\n"
		"# TYPE ethermem_op_errors_total counter\n");
	for (int i = 0; i < 8; i++)
		fprintf(f, "ethermem_op_errors_total{op=\"%s\"} %" PRIu64 "\n", op_names[i],
			v[EM_ST_ERR0 + i]);
	fprintf(f, "# HELP ethermem_op_duration_seconds Service time on the node, by operation.\n"
		   "# TYPE ethermem_op_duration_seconds histogram\n");
	for (int i = 0; i < 3; i++)
		histogram(f, op_names[i], &sn->lat[i], sn->lat_sum_ns[i]);

	counter(f, "ethermem_ox_frames_received_total", "OmniXtend frames received.",
		v[EM_ST_OX_RX]);
	counter(f, "ethermem_ox_frames_sent_total", "OmniXtend frames sent.", v[EM_ST_OX_TX]);
	counter(f, "ethermem_ox_retransmits_total", "OmniXtend frames retransmitted.",
		v[EM_ST_OX_RTX]);
	counter(f, "ethermem_ox_denied_total", "OmniXtend requests answered with the denied bit.",
		v[EM_ST_OX_DENIED]);
	counter(f, "ethermem_ox_unknown_frames_total",
		"OmniXtend frames from a MAC with no window, dropped.", v[EM_ST_OX_UNKNOWN]);
	counter(f, "ethermem_ox_spoofed_frames_total",
		"OmniXtend frames from a session's MAC out of its sequence or with a bad tag, dropped.",
		v[EM_ST_OX_SPOOFED]);
	counter(f, "ethermem_ox_malformed_frames_total",
		"OmniXtend frames that failed to decode, dropped.", v[EM_ST_OX_MALFORMED]);
	gauge(f, "ethermem_ox_sessions", "Sessions holding an OmniXtend address window now.",
	      v[EM_ST_OX_ATTACHED]);
	redundancy(f, srv);
	if (reg)
		cluster(f, reg);
	free(sn);
	if (fclose(f)) {
		free(text);
		return NULL;
	}
	return text;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_len, void **state)
{
	static const char not_found[] = "ethermemd serves /metrics only\n";
	static const char bad_method[] = "GET only\n";
	struct em_metrics *m = cls;
	struct MHD_Response *r;
	enum MHD_Result ret;
	unsigned status = MHD_HTTP_OK;
	char *text = NULL;
	size_t len = 0;

	if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)) {
		status = MHD_HTTP_METHOD_NOT_ALLOWED;
		r = MHD_create_response_from_buffer(sizeof(bad_method) - 1, (void *)bad_method,
						    MHD_RESPMEM_PERSISTENT);
	} else if (strcmp(url, "/metrics")) {
		status = MHD_HTTP_NOT_FOUND;
		r = MHD_create_response_from_buffer(sizeof(not_found) - 1, (void *)not_found,
						    MHD_RESPMEM_PERSISTENT);
	} else if (!(text = render(m->srv, m->reg, &len))) {
		return MHD_NO; /* out of memory: drop the connection */
	} else {
		r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
		if (r)
			MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
						"text/plain; version=0.0.4; charset=utf-8");
	}
	if (!r) {
		free(text);
		return MHD_NO;
	}
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT"; no host means loopback. */
static int resolve(const char *spec, struct sockaddr_storage *sa, int *v6, char host[256])
{
	const char *port = spec, *colon;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV | AI_PASSIVE },
			*ai;

	snprintf(host, 256, "127.0.0.1");
	if (spec[0] == '[') {
		const char *end = strchr(spec, ']');
		if (!end || end[1] != ':' || (size_t)(end - spec - 1) >= 256)
			return -EINVAL;
		memcpy(host, spec + 1, (size_t)(end - spec - 1));
		host[end - spec - 1] = 0;
		port = end + 2;
	} else if ((colon = strrchr(spec, ':'))) {
		if ((size_t)(colon - spec) >= 256)
			return -EINVAL;
		if (colon > spec) {
			memcpy(host, spec, (size_t)(colon - spec));
			host[colon - spec] = 0;
		}
		port = colon + 1;
	}
	if (!*port || strspn(port, "0123456789") != strlen(port) || atol(port) > 65535)
		return -EINVAL;
	if (getaddrinfo(host, port, &hints, &ai))
		return -EINVAL;
	memcpy(sa, ai->ai_addr, ai->ai_addrlen);
	*v6 = ai->ai_family == AF_INET6;
	freeaddrinfo(ai);
	return 0;
}

int em_metrics_start(struct em_metrics **out, const char *listen, struct em_server *srv,
		     struct em_reg *reg)
{
	struct sockaddr_storage sa = { 0 };
	struct em_metrics *m;
	const union MHD_DaemonInfo *info;
	char host[256];
	int v6 = 0;

	if (resolve(listen, &sa, &v6, host)) {
		em_log(EM_LOG_ERR, "bad --metrics-listen '%s' (HOST:PORT)", listen);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->srv = srv;
	m->reg = reg;
	m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
					(v6 ? MHD_USE_IPv6 : 0),
				0, NULL, NULL, answer, m, MHD_OPTION_SOCK_ADDR,
				(struct sockaddr *)&sa, MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
	if (!m->d) {
		em_log(EM_LOG_ERR, "cannot serve metrics on %s", listen);
		free(m);
		return -EADDRNOTAVAIL;
	}
	info = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
	/* with port 0 the kernel picks; the log says which (tests read it) */
	em_log(EM_LOG_INFO, "metrics on http://%s%s%s:%u/metrics", v6 ? "[" : "", host,
	       v6 ? "]" : "", info ? info->port : 0);
	*out = m;
	return 0;
}

void em_metrics_stop(struct em_metrics *m)
{
	if (!m)
		return;
	MHD_stop_daemon(m->d);
	free(m);
}
