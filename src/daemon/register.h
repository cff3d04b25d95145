/*
 * register.h - a memory node's membership in etcd: its record under the
 * cluster prefix, bound to a lease that a thread keeps alive, refreshed
 * with the free bytes and a heartbeat. A node that dies or freezes stops
 * renewing, and etcd drops the record when the lease runs out.
 */
#ifndef EM_REGISTER_H
#define EM_REGISTER_H

struct em_server;
struct em_reg;

struct em_reg_opts {
	const char *etcd;      /* endpoints, "http://h:2379[,...]" */
	const char *cluster;   /* NULL: EM_CLUSTER_DEFAULT */
	const char *advertise; /* tcp://HOST:PORT clients use; NULL: the listen address */
	const char *ox_iface;  /* the OmniXtend interface (its MAC is published), or NULL */
	int ttl_s;             /* lease time to live; 0: 2 s */
};

/* Checks the options and connects to nothing yet (the node may start
 * before etcd). */
int em_reg_create(struct em_reg **out, struct em_server *srv, const struct em_reg_opts *o);
/* Starts publishing, once the node listens on host:port. */
int em_reg_start(struct em_reg *r, const char *host, unsigned port);
/* What the metrics show of membership, read under the lock. */
struct em_reg_info {
	int registered;       /* 1 while the record is in etcd under a live lease */
	int ttl_s;            /* the lease's time to live */
	double renewed_ago_s; /* since the lease was granted or kept alive; -1: never */
	char state[16];       /* "up", "draining" */
};
void em_reg_info(struct em_reg *r, struct em_reg_info *out);
/* Stops the thread and revokes the lease, so the record goes at once. */
void em_reg_destroy(struct em_reg *r);

#endif
