/*
 * server.h - the memory node's network side: accepts connections,
 * authenticates them, and serves the ethermem protocol against a store.
 */
#ifndef EM_SERVER_H
#define EM_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "common/wire.h"

struct em_server;
struct em_oxs_opts;

struct em_server_opts {
	uint64_t capacity;
	bool mlock;
	bool overcommit;    /* start even when capacity exceeds the memory there is */
	bool encrypt;       /* refuse clients that do not encrypt (common/seal.h) */
	const char *listen; /* tcp://ADDR:PORT */
	const char *secret_file;
	const char *port_file;      /* written with the bound port once listening */
	int max_clients;            /* authenticated connections served at once */
	int max_pending;            /* connections not yet authenticated, at once */
	int max_pending_per_source; /* of those, from one address */
	int io_timeout_ms;     /* a half-received message older than this drops the connection */
	int keepalive_s;       /* probe a silent client after this long (<= 0: never) */
	int idle_timeout_s;    /* drop a client silent this long (0: never) */
	int session_linger_ms; /* keep a session whose connections broke (0: no) */
	int poll_us;           /* spin this long for the next request before sleeping */
	uint32_t bulk_slice;   /* large read replies go out this many bytes per
				  * send; 0: whole (the old behaviour) */
	int workers;           /* event-loop threads; 0: one per core, -1: a
					 thread per connection */
	int io;                /* how the workers wait for their sockets: EM_IO_* */
	const struct em_oxs_opts *ox; /* --ox: serve OmniXtend too (ox_serve.h), else NULL */
	/* Called once the socket listens (host as given, the bound port), so
	 * that registration can publish the real address. May be NULL. */
	void (*listening)(void *arg, const char *host, unsigned port);
	void *listening_arg;
};

/* The workers' event interface (--io), in the settings table's order. */
enum { EM_IO_EPOLL, EM_IO_URING };

int em_server_create(struct em_server **out, const struct em_server_opts *o);
/* Serves until SIGTERM or SIGINT (which the caller must have blocked in every
 * thread), then stops accepting, lets in-flight requests finish, returns 0. */
int em_server_run(struct em_server *s);
void em_server_destroy(struct em_server *s);

/* A consistent copy of the node's counters for the metrics endpoint:
 * v in the status message's layout (wire.h's EM_ST_*), and the service-time
 * histograms of reads, writes and atomics with their sums. */
struct em_server_snapshot {
	uint64_t v[EM_ST__COUNT];
	struct em_hist lat[3];
	uint64_t lat_sum_ns[3];
	uint64_t conn_moves;   /* connections moved between workers by balancing */
	uint64_t spin_shut_ns; /* time the spin gate kept the node from spinning */
};
void em_server_snapshot(struct em_server *s, struct em_server_snapshot *snap);
/* Sets the listening callback after creation (registration needs the
 * server to exist first). */
void em_server_set_listening(struct em_server *s, void (*fn)(void *, const char *, unsigned),
			     void *arg);
/* What membership publishes: bytes exported and in use, and the node's
 * identity (new at every start, so clients tell a restarted node apart). */
void em_server_usage(struct em_server *s, uint64_t *capacity, uint64_t *used);
void em_server_node_id(const struct em_server *s, uint8_t id[16]);
/* Named regions held here by the redundancy their stored layout names
 * (indexed by enum em_redundancy; a layout without a trailer is NONE,
 * one that does not decode is counted in [0]). */
void em_server_redundancy(struct em_server *s, uint64_t count[4]);
/* True once a client asked the node to drain (EM_W_DRAIN). */
bool em_server_draining(struct em_server *s);

/* For the fuzz target: runs one authenticated connection's request stream
 * from memory, replies discarded. */
struct em_server *em_server_create_for_fuzz(uint64_t capacity);
void em_server_fuzz_input(struct em_server *s, const uint8_t *data, size_t len);

#endif
