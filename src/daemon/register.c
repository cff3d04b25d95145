/*
 * register.c - the node's side of membership (register.h).
 *
 * One thread: grant a lease, put the record under it, then renew the lease
 * three times per time-to-live, rewrite the record within 50 ms of its free
 * bytes changing (placement by other clients reads them) and at least once
 * a second (the heartbeat tells `ethermem node ls` how fresh it is). When etcd is unreachable the node keeps serving and keeps
 * trying; when the lease has expired meanwhile (etcd was away longer than
 * the TTL, or this process was frozen) it grants a new one and registers
 * again, so a node comes back by itself.
 */
#include "daemon/register.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cluster.h"
#include "common/etcd.h"
#include "common/util.h"
#include "daemon/server.h"
#include "ethermem.h"

struct em_reg {
	struct em_server *srv;
	struct em_etcd *etcd;
	char key[256];
	char advertise[80];
	struct em_node_rec rec;
	int ttl_s;
	int64_t lease;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	bool told_down; /* logged that etcd is unreachable */
	/* for em_reg_info, under lock */
	bool registered;
	uint64_t renewed_ns; /* em_now_ns of the last grant or keepalive; 0: none */
};

static void read_mac(const char *iface, char out[18])
{
	char path[128], buf[32] = "";
	int n;

	snprintf(path, sizeof(path), "/sys/class/net/%s/address", iface);
	n = em_read_small_file(path, buf, sizeof(buf) - 1);
	if (n <= 0)
		return;
	buf[n] = 0;
	buf[strcspn(buf, "\n")] = 0;
	snprintf(out, 18, "%.17s", buf);
}

int em_reg_create(struct em_reg **out, struct em_server *srv, const struct em_reg_opts *o)
{
	struct em_reg *r = calloc(1, sizeof(*r));
	uint8_t id[16];
	int rc;

	if (!r)
		return -ENOMEM;
	rc = em_cluster_prefix(r->key, sizeof(r->key), o->cluster ? o->cluster : EM_CLUSTER_DEFAULT,
			       "nodes");
	if (rc) {
		em_log(EM_LOG_ERR, "bad --cluster name '%s' (1-64 of A-Z a-z 0-9 . _ -)",
		       o->cluster);
		free(r);
		return rc;
	}
	/* renewals must reach etcd well within the TTL */
	r->ttl_s = o->ttl_s > 0 ? o->ttl_s : 2;
	rc = em_etcd_open(&r->etcd, o->etcd, EM_MAX(300, r->ttl_s * 1000 / 3));
	if (rc) {
		em_log(EM_LOG_ERR, "bad --etcd '%s': %s", o->etcd, em_strerror(rc));
		free(r);
		return rc;
	}
	r->srv = srv;
	if (o->advertise)
		snprintf(r->advertise, sizeof(r->advertise), "%s", o->advertise);
	em_server_node_id(srv, id);
	for (int i = 0; i < 16; i++)
		snprintf(r->rec.id + 2 * i, 3, "%02x", id[i]);
	snprintf(r->rec.transports, sizeof(r->rec.transports), o->ox_iface ? "tcp,ox" : "tcp");
	if (o->ox_iface)
		read_mac(o->ox_iface, r->rec.ox_mac);
	snprintf(r->rec.version, sizeof(r->rec.version), "%s", EM_VERSION_STRING);
	snprintf(r->rec.state, sizeof(r->rec.state), "up");
	r->rec.started_ms = em_wall_ms();
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	*out = r;
	return 0;
}

/* Writes the record under the current lease (granting one if needed). */
static int publish(struct em_reg *r)
{
	char val[1024];
	uint64_t cap, used;
	int rc, n;

	if (!r->lease) {
		if ((rc = em_etcd_lease_grant(r->etcd, r->ttl_s, &r->lease)))
			return rc;
	}
	em_server_usage(r->srv, &cap, &used);
	pthread_mutex_lock(&r->lock);
	r->rec.capacity = cap;
	r->rec.free = cap - used;
	r->rec.heartbeat_ms = em_wall_ms();
	snprintf(r->rec.state, sizeof(r->rec.state), "%s",
		 em_server_draining(r->srv) ? "draining" : "up");
	n = em_node_rec_encode(&r->rec, val, sizeof(val));
	pthread_mutex_unlock(&r->lock);
	if (n < 0)
		return n;
	rc = em_etcd_put(r->etcd, r->key, val, (size_t)n, r->lease);
	if (rc == -ENOENT) /* "requested lease not found": it expired */
		r->lease = 0;
	return rc;
}

static void *reg_main(void *arg)
{
	struct em_reg *r = arg;
	uint64_t period_ns = (uint64_t)r->ttl_s * 1000000000ull / 3, last_put = 0, last_renew = 0;
	uint64_t last_used = UINT64_MAX;
	bool last_drain = false;
	bool registered = false;
	int rc = 0;

	pthread_mutex_lock(&r->lock);
	while (!r->stop) {
		uint64_t now, cap, used;
		struct timespec ts;

		pthread_mutex_unlock(&r->lock);
		now = em_now_ns();
		em_server_usage(r->srv, &cap, &used);
		if (registered && now - last_renew >= period_ns) {
			rc = em_etcd_lease_keepalive(r->etcd, r->lease);
			last_renew = now;
			if (rc >= 0) {
				pthread_mutex_lock(&r->lock);
				r->renewed_ns = now;
				pthread_mutex_unlock(&r->lock);
			}
			if (rc == -ENOENT) {
				/* expired while we were away or frozen: start over */
				r->lease = 0;
				registered = false;
				em_log(EM_LOG_WARN,
				       "lease expired (frozen or cut off longer than %d s): "
				       "registering again",
				       r->ttl_s);
			}
			rc = rc > 0 || rc == -ENOENT ? 0 : rc;
		}
		/* free bytes are published as they change, so that placement by
		 * other clients sees them soon; the heartbeat once a second */
		/* a drain is published at once, so that placement stops using
		 * the node before its refusals are met */
		if (!rc && (!registered || used != last_used || now - last_put >= 1000000000ull ||
			    em_server_draining(r->srv) != last_drain)) {
			last_drain = em_server_draining(r->srv);
			rc = publish(r);
			last_put = now;
			if (!registered && !rc) {
				last_renew = now; /* a fresh lease */
				pthread_mutex_lock(&r->lock);
				r->renewed_ns = now;
				pthread_mutex_unlock(&r->lock);
			}
			last_used = used;
		}
		if (rc && !r->told_down) {
			em_log(EM_LOG_WARN, "etcd %s: %s; serving on, retrying",
			       em_etcd_endpoint(r->etcd), em_strerror(rc));
			r->told_down = true;
		} else if (!rc && (!registered || r->told_down)) {
			em_log(EM_LOG_INFO, "registered as %s in etcd (%s, lease %d s)",
			       r->rec.addr, r->key, r->ttl_s);
			r->told_down = false;
		}
		registered = !rc && r->lease;
		if (rc) { /* retry the whole registration, soon */
			registered = false;
			rc = 0;
		}
		pthread_mutex_lock(&r->lock);
		r->registered = registered;
		clock_gettime(CLOCK_REALTIME, &ts);
		/* a short tick: it looks at the free bytes, and renews when due */
		ts.tv_nsec += 50000000L;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		if (!r->stop)
			pthread_cond_timedwait(&r->cond, &r->lock, &ts);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

int em_reg_start(struct em_reg *r, const char *host, unsigned port)
{
	size_t klen = strlen(r->key);

	if (r->advertise[0])
		snprintf(r->rec.addr, sizeof(r->rec.addr), "%s", r->advertise);
	else if (strchr(host, ':'))
		snprintf(r->rec.addr, sizeof(r->rec.addr), "tcp://[%s]:%u", host, port);
	else
		snprintf(r->rec.addr, sizeof(r->rec.addr), "tcp://%s:%u", host, port);
	if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::"))
		em_log(EM_LOG_WARN,
		       "listening on all interfaces: publishing %s; give --advertise "
		       "tcp://ADDRESS:PORT that clients can reach",
		       r->rec.addr);
	/* the key is the address clients dial, without the scheme */
	snprintf(r->key + klen, sizeof(r->key) - klen, "%s",
		 strncmp(r->rec.addr, "tcp://", 6) ? r->rec.addr : r->rec.addr + 6);
	if (pthread_create(&r->thread, NULL, reg_main, r))
		return -EAGAIN;
	r->started = true;
	return 0;
}

void em_reg_info(struct em_reg *r, struct em_reg_info *out)
{
	uint64_t now = em_now_ns();

	pthread_mutex_lock(&r->lock);
	out->registered = r->registered;
	out->ttl_s = r->ttl_s;
	out->renewed_ago_s = r->renewed_ns ? (double)(now - r->renewed_ns) / 1e9 : -1;
	snprintf(out->state, sizeof(out->state), "%s", r->rec.state);
	pthread_mutex_unlock(&r->lock);
}

void em_reg_destroy(struct em_reg *r)
{
	if (!r)
		return;
	if (r->started) {
		pthread_mutex_lock(&r->lock);
		r->stop = true;
		pthread_cond_signal(&r->cond);
		pthread_mutex_unlock(&r->lock);
		pthread_join(r->thread, NULL);
		/* a clean stop leaves at once, without waiting for the TTL */
		if (r->lease && !em_etcd_lease_revoke(r->etcd, r->lease))
			em_log(EM_LOG_INFO, "left the cluster");
	}
	em_etcd_close(r->etcd);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r);
}
