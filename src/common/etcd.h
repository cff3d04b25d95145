/*
 * etcd.h - a small client for etcd's v3 API, and the JSON reader it rests on.
 *
 * etcd 3.4 serves its v3 API as JSON over HTTP (the gRPC gateway under
 * /v3/...), so a client needs no gRPC and no protobuf: plain sockets, one
 * HTTP/1.0 request per connection (the answer then ends at its
 * Content-Length or at the close, never chunked), keys and values in
 * base64. The endpoints form a list ("http://h1:2379,http://h2:2379"); a
 * call that cannot reach one, or times out, tries the next, and the client
 * sticks to the one that last answered.
 *
 * The JSON reader works in place on the received bytes and allocates
 * nothing: a value is a span of the buffer, looked up by key or walked as an
 * array, and turned into a string or number only when asked. It trusts no
 * length and no nesting it is given (a depth limit stops deep brackets);
 * fuzz/fuzz_etcd.c feeds it arbitrary bytes.
 *
 * Used by the memory node (registration under a lease) and the library
 * (membership, the named-region directory). Internal; never installed.
 */
#ifndef EM_ETCD_H
#define EM_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- JSON, read in place ---- */

/* One JSON value: the bytes from its first character to its last. */
struct em_json {
	const char *p;
	size_t n;
};

/* Parses the whole text as one value (surrounding blanks allowed). */
int em_json_root(const char *text, size_t len, struct em_json *out);
/* The value of `key` in object obj: 0, -ENOENT if absent, -EPROTO if obj is
 * not a well-formed object. Keys are compared as written (no escapes). */
int em_json_get(struct em_json obj, const char *key, struct em_json *out);
/* Walks an array: *pos starts at 0; returns 1 with the next element, 0 at
 * the end, -EPROTO on malformed input. */
int em_json_next(struct em_json arr, size_t *pos, struct em_json *elem);
/* A string value unescaped into out (NUL-terminated); returns its length,
 * -EPROTO if v is not a string, -ENOSPC if it does not fit. \u escapes
 * beyond ASCII are refused (-EPROTO): nothing we store needs them. */
int em_json_str(struct em_json v, char *out, size_t cap);
/* An integer, written as a number or as a string of digits (protobuf's
 * JSON writes 64-bit integers as strings). 0 or -EPROTO / -ERANGE. */
int em_json_i64(struct em_json v, int64_t *out);
int em_json_u64(struct em_json v, uint64_t *out);
/* True only for the literal true. */
bool em_json_true(struct em_json v);
/* Shortcuts: the member's value, or def when absent or malformed. */
uint64_t em_json_get_u64(struct em_json obj, const char *key, uint64_t def);
int em_json_get_str(struct em_json obj, const char *key, char *out, size_t cap);

/* Splits an HTTP/1.x response: status code and where the body starts;
 * *body_len is the body's length by Content-Length, or what follows the
 * header when none is given. -EAGAIN if the header is not complete yet,
 * -EPROTO if malformed or chunked, -EMSGSIZE if Content-Length exceeds
 * what was received (complete=true) . */
int em_http_split(const char *buf, size_t len, bool complete, int *status, size_t *body_off,
		  size_t *body_len);

/* ---- the client ---- */

struct em_etcd;

/* endpoints: "http://host:port[,http://host:port...]" (http:// optional).
 * timeout_ms bounds each call on each endpoint. */
int em_etcd_open(struct em_etcd **out, const char *endpoints, int timeout_ms);
void em_etcd_close(struct em_etcd *e);
/* The endpoint that answered last, for messages. */
const char *em_etcd_endpoint(const struct em_etcd *e);

/* One key-value as a range or a watch returns it; val is decoded bytes
 * (NUL-terminated for convenience, not counted in vlen). */
struct em_etcd_kv {
	const char *key;
	size_t klen;
	const uint8_t *val;
	size_t vlen;
	int64_t mod_rev, create_rev, lease;
	bool deleted; /* watch: a DELETE event (val empty) */
};
typedef int (*em_etcd_cb)(void *arg, const struct em_etcd_kv *kv);

/* Calls cb for the key (prefix false) or every key starting with it, in key
 * order; a non-zero return from cb stops and is returned. *rev (may be
 * NULL) gets the store's revision, to start a watch after. Returns the
 * number of keys seen or -errno. */
int em_etcd_range(struct em_etcd *e, const char *key, bool prefix, em_etcd_cb cb, void *arg,
		  int64_t *rev);
/* Reads one key into val (up to cap bytes, NUL added when room): returns
 * its length, -ENOENT when absent, -ENOSPC when longer than cap. */
int em_etcd_get(struct em_etcd *e, const char *key, void *val, size_t cap);
int em_etcd_put(struct em_etcd *e, const char *key, const void *val, size_t vlen, int64_t lease);
/* Puts only if the key does not exist (one transaction): 0 or -EEXIST. */
int em_etcd_create(struct em_etcd *e, const char *key, const void *val, size_t vlen, int64_t lease);
/* Deletes the key (or every key under the prefix); returns how many went. */
int em_etcd_delete(struct em_etcd *e, const char *key, bool prefix);
/* Deletes the key only while its mod revision is mod_rev: 1 if deleted, 0
 * if it changed or is gone. */
int em_etcd_delete_if(struct em_etcd *e, const char *key, int64_t mod_rev);
/* Puts val if the key is still as read at mod_rev: 1, or 0 if it changed. */
int em_etcd_put_if(struct em_etcd *e, const char *key, const void *val, size_t vlen,
		   int64_t mod_rev);

int em_etcd_lease_grant(struct em_etcd *e, int ttl_s, int64_t *id);
/* Renews the lease; returns the TTL left in seconds, -ENOENT once expired. */
int em_etcd_lease_keepalive(struct em_etcd *e, int64_t id);
int em_etcd_lease_revoke(struct em_etcd *e, int64_t id);

/* A watch over a key prefix: a streaming HTTP answer that stays open. */
struct em_etcd_watch;
/* Starts watching every key under prefix from revision start_rev (0: from
 * now). */
int em_etcd_watch_open(struct em_etcd *e, const char *prefix, int64_t start_rev,
		       struct em_etcd_watch **out);
/* The descriptor to poll for readability. */
int em_etcd_watch_fd(const struct em_etcd_watch *w);
/* Reads what arrived and calls cb per event; waits up to timeout_ms for the
 * first (0: does not wait). Returns events seen, 0 on timeout, -errno when
 * the stream broke (reopen it from the last revision + 1). *rev gets the
 * revision of the last event or progress seen. */
int em_etcd_watch_read(struct em_etcd_watch *w, int timeout_ms, em_etcd_cb cb, void *arg,
		       int64_t *rev);
void em_etcd_watch_close(struct em_etcd_watch *w);

/* Parses one watch message ({"result":{...}}) and calls cb per event; for
 * the fuzz target and the tests. Returns events or -errno. */
int em_etcd_watch_parse(const char *msg, size_t len, em_etcd_cb cb, void *arg, int64_t *rev);
/* Parses a range answer body the same way. */
int em_etcd_range_parse(const char *body, size_t len, em_etcd_cb cb, void *arg, int64_t *rev);

#endif
