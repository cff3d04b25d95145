/*
 * etcd.c - the etcd v3 client and in-place JSON reader declared in etcd.h.
 *
 * Every call opens a connection, sends one HTTP/1.0 POST and reads the
 * answer to its end under one deadline. A connection per call costs a
 * loopback or LAN round trip more than keeping one open, which is nothing
 * beside how seldom membership and the region directory are touched (a
 * heartbeat a second, a create or open now and then), and it leaves no
 * connection state to repair after an endpoint fails. The watch is the
 * exception: one connection whose answer never ends, read message by
 * message (the gateway writes one JSON object per line).
 */
#include "common/etcd.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "common/util.h"
#include "ethermem.h"

#define JSON_DEPTH 64
#define MAX_ANSWER (64u << 20) /* a range over the whole directory stays far below */
#define MAX_ENDPOINTS 8
#define WATCH_BUF (4u << 20)

/* ---- JSON ---- */

static const char *ws(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	return p;
}

/* Past the closing quote of the string that starts at p, or NULL. */
static const char *skip_str(const char *p, const char *end)
{
	if (p >= end || *p != '"')
		return NULL;
	for (p++; p < end; p++) {
		if (*p == '\\') {
			if (++p >= end)
				return NULL;
		} else if (*p == '"') {
			return p + 1;
		} else if ((unsigned char)*p < 0x20) {
			return NULL;
		}
	}
	return NULL;
}

/* Past the value that starts at p, or NULL. Brackets are counted, not
 * recursed into, so no input can exhaust the stack; their contents are
 * checked when (and if) someone looks inside. */
static const char *skip_value(const char *p, const char *end)
{
	char stack[JSON_DEPTH];
	int depth = 0;

	if (p >= end)
		return NULL;
	if (*p == '"')
		return skip_str(p, end);
	if (*p != '{' && *p != '[') {
		const char *s = p;
		while (p < end && (strchr("+-.eE", *p) || (*p >= '0' && *p <= '9') ||
				   (*p >= 'a' && *p <= 'z')))
			p++;
		return p > s ? p : NULL;
	}
	while (p < end) {
		char c = *p;
		if (c == '"') {
			if (!(p = skip_str(p, end)))
				return NULL;
			continue;
		}
		if (c == '{' || c == '[') {
			if (depth == JSON_DEPTH)
				return NULL;
			stack[depth++] = c == '{' ? '}' : ']';
		} else if (c == '}' || c == ']') {
			if (!depth || stack[depth - 1] != c)
				return NULL;
			if (--depth == 0)
				return p + 1;
		}
		p++;
	}
	return NULL;
}

int em_json_root(const char *text, size_t len, struct em_json *out)
{
	const char *end = text + len, *p = ws(text, end), *q;

	if (!(q = skip_value(p, end)) || ws(q, end) != end)
		return -EPROTO;
	out->p = p;
	out->n = (size_t)(q - p);
	return 0;
}

int em_json_get(struct em_json obj, const char *key, struct em_json *out)
{
	const char *p = obj.p, *end = obj.p + obj.n;
	size_t klen = strlen(key);

	if (!obj.n || *p != '{')
		return -EPROTO;
	p = ws(p + 1, end);
	if (p < end && *p == '}')
		return -ENOENT;
	while (p < end) {
		const char *k = p, *ke = skip_str(p, end), *v, *ve;
		if (!ke)
			return -EPROTO;
		p = ws(ke, end);
		if (p >= end || *p != ':')
			return -EPROTO;
		v = ws(p + 1, end);
		if (!(ve = skip_value(v, end)))
			return -EPROTO;
		if ((size_t)(ke - k) == klen + 2 && !memcmp(k + 1, key, klen)) {
			out->p = v;
			out->n = (size_t)(ve - v);
			return 0;
		}
		p = ws(ve, end);
		if (p < end && *p == ',') {
			p = ws(p + 1, end);
			continue;
		}
		if (p < end && *p == '}')
			return -ENOENT;
		return -EPROTO;
	}
	return -EPROTO;
}

int em_json_next(struct em_json arr, size_t *pos, struct em_json *elem)
{
	const char *end = arr.p + arr.n, *p, *q;

	if (!arr.n || *arr.p != '[' || *pos > arr.n)
		return -EPROTO;
	p = ws(arr.p + (*pos ? *pos : 1), end);
	if (p >= end)
		return -EPROTO;
	if (*p == ']')
		return 0;
	if (*pos) { /* after an element: a comma */
		if (*p != ',')
			return -EPROTO;
		p = ws(p + 1, end);
	}
	if (!(q = skip_value(p, end)))
		return -EPROTO;
	elem->p = p;
	elem->n = (size_t)(q - p);
	*pos = (size_t)(q - arr.p);
	return 1;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int em_json_str(struct em_json v, char *out, size_t cap)
{
	size_t o = 0;

	if (v.n < 2 || v.p[0] != '"' || v.p[v.n - 1] != '"' || !cap)
		return -EPROTO;
	for (size_t i = 1; i + 1 < v.n; i++) {
		char c = v.p[i];
		if (c == '\\') {
			if (i + 2 >= v.n)
				return -EPROTO;
			c = v.p[++i];
			switch (c) {
			case 'n':
				c = '\n';
				break;
			case 't':
				c = '\t';
				break;
			case 'r':
				c = '\r';
				break;
			case 'b':
				c = '\b';
				break;
			case 'f':
				c = '\f';
				break;
			case '"':
			case '\\':
			case '/':
				break;
			case 'u': {
				int x = 0;
				if (i + 5 >= v.n)
					return -EPROTO;
				for (int k = 1; k <= 4; k++) {
					int h = hexval(v.p[i + k]);
					if (h < 0)
						return -EPROTO;
					x = x * 16 + h;
				}
				if (x == 0 || x > 0x7f)
					return -EPROTO;
				c = (char)x;
				i += 4;
				break;
			}
			default:
				return -EPROTO;
			}
		}
		if (o + 1 >= cap)
			return -ENOSPC;
		out[o++] = c;
	}
	out[o] = 0;
	return (int)EM_MIN(o, (size_t)0x7fffffff);
}

int em_json_u64(struct em_json v, uint64_t *out)
{
	const char *p = v.p, *end = v.p + v.n;
	uint64_t x = 0;

	if (v.n >= 2 && *p == '"' && end[-1] == '"') {
		p++;
		end--;
	}
	if (p >= end)
		return -EPROTO;
	for (; p < end; p++) {
		if (*p < '0' || *p > '9')
			return -EPROTO;
		if (x > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -ERANGE;
		x = x * 10 + (uint64_t)(*p - '0');
	}
	*out = x;
	return 0;
}

int em_json_i64(struct em_json v, int64_t *out)
{
	struct em_json u = v;
	bool neg = false, quoted = v.n >= 2 && v.p[0] == '"';
	uint64_t x;
	int rc;

	if (quoted) {
		if (v.p[v.n - 1] != '"')
			return -EPROTO;
		u.p++;
		u.n -= 2;
	}
	if (u.n && u.p[0] == '-') {
		neg = true;
		u.p++;
		u.n--;
	}
	if ((rc = em_json_u64(u, &x)))
		return rc;
	if (x > (uint64_t)INT64_MAX + neg)
		return -ERANGE;
	*out = neg ? (int64_t)(0 - x) : (int64_t)x;
	return 0;
}

bool em_json_true(struct em_json v)
{
	return v.n == 4 && !memcmp(v.p, "true", 4);
}

uint64_t em_json_get_u64(struct em_json obj, const char *key, uint64_t def)
{
	struct em_json v;
	uint64_t x;

	if (em_json_get(obj, key, &v) || em_json_u64(v, &x))
		return def;
	return x;
}

int em_json_get_str(struct em_json obj, const char *key, char *out, size_t cap)
{
	struct em_json v;
	int rc = em_json_get(obj, key, &v);

	return rc ? rc : em_json_str(v, out, cap);
}

/* ---- HTTP ---- */

static bool hdr_is(const char *line, size_t n, const char *name)
{
	size_t k = strlen(name);
	return n > k && line[k] == ':' && !strncasecmp(line, name, k);
}

int em_http_split(const char *buf, size_t len, bool complete, int *status, size_t *body_off,
		  size_t *body_len)
{
	const char *end = NULL, *p, *eol;
	size_t clen = SIZE_MAX;
	int st = 0;

	for (size_t i = 0; i + 3 < len; i++)
		if (!memcmp(buf + i, "\r\n\r\n", 4)) {
			end = buf + i;
			break;
		}
	if (!end)
		return complete ? -EPROTO : -EAGAIN;
	if (end - buf < 12 || memcmp(buf, "HTTP/1.", 7) || buf[8] != ' ')
		return -EPROTO;
	for (int i = 9; i < 12; i++) {
		if (buf[i] < '0' || buf[i] > '9')
			return -EPROTO;
		st = st * 10 + buf[i] - '0';
	}
	for (p = buf; p < end; p = eol + 2) {
		eol = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
		if (!eol)
			eol = end;
		if (hdr_is(p, (size_t)(eol - p), "Content-Length")) {
			struct em_json v = { p + 15, (size_t)(eol - p - 15) };
			uint64_t x;
			while (v.n && *v.p == ' ') {
				v.p++;
				v.n--;
			}
			if (em_json_u64(v, &x) || x > MAX_ANSWER)
				return -EPROTO;
			clen = (size_t)x;
		} else if (hdr_is(p, (size_t)(eol - p), "Transfer-Encoding")) {
			return -EPROTO; /* never sent to an HTTP/1.0 request */
		}
	}
	*status = st;
	*body_off = (size_t)(end + 4 - buf);
	if (clen == SIZE_MAX) {
		*body_len = len - *body_off;
	} else {
		if (clen > len - *body_off) {
			if (complete)
				return -EMSGSIZE;
			return -EAGAIN;
		}
		*body_len = clen;
	}
	return 0;
}

/* ---- connections ---- */

struct ep {
	char host[256];
	char port[8];
};

struct em_etcd {
	struct ep ep[MAX_ENDPOINTS];
	unsigned n, cur;
	int timeout_ms;
	char cur_name[280];
};

static int parse_endpoint(const char *s, size_t len, struct ep *ep)
{
	char buf[300], host[256];
	uint16_t port;
	int rc;

	if (len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = 0;
	s = buf;
	if (!strncmp(s, "http://", 7))
		s += 7;
	else if (strstr(s, "://"))
		return -EPROTONOSUPPORT; /* https needs TLS, which this client lacks */
	if (strchr(s, '/'))
		*strchr((char *)s, '/') = 0;
	if ((rc = em_parse_addr(s, host, sizeof(host), &port)))
		return rc;
	snprintf(ep->host, sizeof(ep->host), "%s", host);
	snprintf(ep->port, sizeof(ep->port), "%u", port);
	return 0;
}

int em_etcd_open(struct em_etcd **out, const char *endpoints, int timeout_ms)
{
	struct em_etcd *e;
	const char *p = endpoints;

	if (!out || !endpoints || !*endpoints)
		return -EINVAL;
	if (!(e = calloc(1, sizeof(*e))))
		return -ENOMEM;
	e->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
	while (*p) {
		const char *c = strchr(p, ',');
		size_t len = c ? (size_t)(c - p) : strlen(p);
		int rc;
		while (len && *p == ' ') {
			p++;
			len--;
		}
		if (len) {
			if (e->n == MAX_ENDPOINTS) {
				free(e);
				return -E2BIG;
			}
			if ((rc = parse_endpoint(p, len, &e->ep[e->n]))) {
				free(e);
				return rc;
			}
			e->n++;
		}
		p += len + (c ? 1 : 0);
		if (!c)
			break;
	}
	if (!e->n) {
		free(e);
		return -EINVAL;
	}
	snprintf(e->cur_name, sizeof(e->cur_name), "%s:%s", e->ep[0].host, e->ep[0].port);
	*out = e;
	return 0;
}

void em_etcd_close(struct em_etcd *e)
{
	free(e);
}

const char *em_etcd_endpoint(const struct em_etcd *e)
{
	return e ? e->cur_name : "";
}

static int ms_left(uint64_t deadline)
{
	uint64_t now = em_now_ns();
	return now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000);
}

static int wait_fd(int fd, short ev, uint64_t deadline)
{
	for (;;) {
		struct pollfd p = { fd, ev, 0 };
		int left = ms_left(deadline), r;
		if (!left)
			return -ETIMEDOUT;
		r = poll(&p, 1, left);
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int connect_ep(const struct ep *ep, uint64_t deadline)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai, *a;
	int fd = -1, rc;

	if (getaddrinfo(ep->host, ep->port, &hints, &ai))
		return -EHOSTUNREACH;
	rc = -ECONNREFUSED;
	for (a = ai; a; a = a->ai_next) {
		int err = 0;
		socklen_t el = sizeof(err);
		fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			rc = -errno;
			continue;
		}
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS && !(rc = wait_fd(fd, POLLOUT, deadline)) &&
		    !getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) && !err)
			break;
		if (err)
			rc = -err;
		else if (!rc)
			rc = -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd >= 0 ? fd : rc;
}

static int send_req(int fd, const struct ep *ep, const char *path, const char *body,
		    uint64_t deadline)
{
	char head[600];
	size_t blen = strlen(body);
	int hn = snprintf(head, sizeof(head),
			  "POST %s HTTP/1.0\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
			  "Content-Length: %zu\r\n\r\n",
			  path, ep->host, ep->port, blen);
	const char *parts[2] = { head, body };
	size_t lens[2] = { (size_t)hn, blen };

	for (int k = 0; k < 2; k++) {
		size_t off = 0;
		while (off < lens[k]) {
			ssize_t w = send(fd, parts[k] + off, lens[k] - off, MSG_NOSIGNAL);
			if (w > 0) {
				off += (size_t)w;
			} else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
				int rc = wait_fd(fd, POLLOUT, deadline);
				if (rc)
					return rc;
			} else {
				return w < 0 ? -errno : -ECONNRESET;
			}
		}
	}
	return 0;
}

/* One call on one endpoint: the whole answer into *buf (malloc'd, grown up
 * to MAX_ANSWER). Returns the body's offset and length through the
 * pointers, and the HTTP status. */
static int call_one(struct em_etcd *e, unsigned i, const char *path, const char *body, char **buf,
		    size_t *body_off, size_t *body_len, int *status)
{
	uint64_t deadline = em_now_ns() + (uint64_t)e->timeout_ms * 1000000ull;
	size_t len = 0, cap = 16384;
	char *b = malloc(cap);
	int fd, rc;

	if (!b)
		return -ENOMEM;
	fd = connect_ep(&e->ep[i], deadline);
	if (fd < 0) {
		free(b);
		return fd;
	}
	rc = send_req(fd, &e->ep[i], path, body, deadline);
	while (!rc) {
		ssize_t r;
		if (len + 1 >= cap) {
			char *nb;
			if (cap >= MAX_ANSWER) {
				rc = -EMSGSIZE;
				break;
			}
			if (!(nb = realloc(b, cap * 2))) {
				rc = -ENOMEM;
				break;
			}
			b = nb;
			cap *= 2;
		}
		r = recv(fd, b + len, cap - 1 - len, 0);
		if (r > 0) {
			len += (size_t)r;
			/* a Content-Length answer is complete before the close */
			if (em_http_split(b, len, false, status, body_off, body_len) == 0 &&
			    *body_off + *body_len <= len && memmem(b, *body_off, "ength:", 6))
				break;
		} else if (r == 0) {
			rc = em_http_split(b, len, true, status, body_off, body_len);
			break;
		} else if (errno == EAGAIN || errno == EINTR) {
			rc = wait_fd(fd, POLLIN, deadline);
		} else {
			rc = -errno;
		}
	}
	close(fd);
	if (rc) {
		free(b);
		return rc;
	}
	b[*body_off + *body_len] = 0;
	*buf = b;
	return 0;
}

/* A call with failover: the endpoint that answered last first, then the
 * others. An answer with a status is final unless it says the member
 * cannot serve (5xx: no leader, stopping), which another member may. */
static int call(struct em_etcd *e, const char *path, const char *body, char **buf,
		struct em_json *root)
{
	int rc = -EHOSTUNREACH;

	for (unsigned k = 0; k < e->n; k++) {
		unsigned i = (e->cur + k) % e->n;
		size_t off, blen;
		int status;

		rc = call_one(e, i, path, body, buf, &off, &blen, &status);
		if (rc) {
			em_log(EM_LOG_DEBUG, "etcd %s:%s: %s", e->ep[i].host, e->ep[i].port,
			       em_strerror(rc));
			continue;
		}
		if (status >= 500) {
			em_log(EM_LOG_DEBUG, "etcd %s:%s: HTTP %d", e->ep[i].host, e->ep[i].port,
			       status);
			free(*buf);
			rc = -EAGAIN;
			continue;
		}
		if (e->cur != i) {
			e->cur = i;
			snprintf(e->cur_name, sizeof(e->cur_name), "%s:%s", e->ep[i].host,
				 e->ep[i].port);
		}
		if (status != 200) {
			char msg[256] = "";
			if (!em_json_root(*buf + off, blen, root) &&
			    em_json_get_str(*root, "message", msg, sizeof(msg)) < 0)
				em_json_get_str(*root, "error", msg, sizeof(msg));
			em_log(EM_LOG_DEBUG, "etcd %s: HTTP %d: %s", path, status, msg);
			free(*buf);
			return strstr(msg, "not found") ? -ENOENT
			       : status == 404          ? -EOPNOTSUPP
							: -EINVAL;
		}
		if (em_json_root(*buf + off, blen, root)) {
			free(*buf);
			return -EPROTO;
		}
		return 0;
	}
	return rc;
}

/* ---- requests ---- */

/* base64 of len bytes into out (room for sodium_base64_ENCODED_LEN). */
static char *b64(const void *in, size_t len, char *out, size_t cap)
{
	return sodium_bin2base64(out, cap, in, len, sodium_base64_VARIANT_ORIGINAL);
}

static int b64_dec(struct em_json v, uint8_t *out, size_t cap, size_t *olen)
{
	if (v.n < 2 || v.p[0] != '"' || v.p[v.n - 1] != '"')
		return -EPROTO;
	if (sodium_base642bin(out, cap, v.p + 1, v.n - 2, NULL, olen, NULL,
			      sodium_base64_VARIANT_ORIGINAL))
		return -EPROTO;
	return 0;
}

#define B64LEN(n) (((n) + 2) / 3 * 4 + 1)

static void range_end(const char *prefix, char *out, size_t cap)
{
	size_t n = strlen(prefix);

	snprintf(out, cap, "%s", prefix);
	/* the smallest key past every key with this prefix */
	while (n && (unsigned char)out[n - 1] == 0xff)
		out[--n] = 0;
	if (n)
		out[n - 1]++;
}

static int64_t header_rev(struct em_json obj)
{
	struct em_json h;
	return em_json_get(obj, "header", &h) ? 0 : (int64_t)em_json_get_u64(h, "revision", 0);
}

/* Decodes one kv object into scratch (which must hold at least kvj.n
 * bytes: base64 always shrinks) and calls cb. */
static int kv_emit(struct em_json kvj, bool deleted, uint8_t *scratch, em_etcd_cb cb, void *arg)
{
	struct em_etcd_kv kv = { .deleted = deleted };
	struct em_json k, v;
	size_t kl, vl = 0;
	int64_t x;

	if (em_json_get(kvj, "key", &k) || b64_dec(k, scratch, kvj.n, &kl))
		return -EPROTO;
	scratch[kl] = 0;
	if (!em_json_get(kvj, "value", &v)) {
		if (b64_dec(v, scratch + kl + 1, kvj.n - kl - 1, &vl))
			return -EPROTO;
	}
	scratch[kl + 1 + vl] = 0;
	kv.key = (const char *)scratch;
	kv.klen = kl;
	kv.val = scratch + kl + 1;
	kv.vlen = vl;
	if (!em_json_get(kvj, "mod_revision", &v) && !em_json_i64(v, &x))
		kv.mod_rev = x;
	if (!em_json_get(kvj, "create_revision", &v) && !em_json_i64(v, &x))
		kv.create_rev = x;
	if (!em_json_get(kvj, "lease", &v) && !em_json_i64(v, &x))
		kv.lease = x;
	return cb ? cb(arg, &kv) : 0;
}

int em_etcd_range_parse(const char *body, size_t len, em_etcd_cb cb, void *arg, int64_t *rev)
{
	struct em_json root, kvs, kv;
	uint8_t *scratch;
	size_t pos = 0;
	int n = 0, rc;

	if (em_json_root(body, len, &root))
		return -EPROTO;
	if (rev)
		*rev = header_rev(root);
	if (em_json_get(root, "kvs", &kvs))
		return 0; /* protobuf's JSON leaves an empty list out */
	if (!(scratch = malloc(len + 2)))
		return -ENOMEM;
	while ((rc = em_json_next(kvs, &pos, &kv)) == 1) {
		if ((rc = kv_emit(kv, false, scratch, cb, arg)))
			break;
		n++;
	}
	free(scratch);
	return rc < 0 ? rc : rc > 0 ? rc : n;
}

int em_etcd_range(struct em_etcd *e, const char *key, bool prefix, em_etcd_cb cb, void *arg,
		  int64_t *rev)
{
	char kb[B64LEN(512)], eb[B64LEN(512)], end[512], body[2048], *buf;
	struct em_json root;
	int rc;

	if (strlen(key) >= sizeof(end))
		return -ENAMETOOLONG;
	b64(key, strlen(key), kb, sizeof(kb));
	if (prefix) {
		range_end(key, end, sizeof(end));
		b64(end, strlen(end), eb, sizeof(eb));
		snprintf(body, sizeof(body), "{\"key\":\"%s\",\"range_end\":\"%s\"}", kb, eb);
	} else {
		snprintf(body, sizeof(body), "{\"key\":\"%s\"}", kb);
	}
	if ((rc = call(e, "/v3/kv/range", body, &buf, &root)))
		return rc;
	rc = em_etcd_range_parse(root.p, root.n, cb, arg, rev);
	free(buf);
	return rc;
}

struct get_arg {
	void *val;
	size_t cap;
	int rc;
};

static int get_cb(void *arg, const struct em_etcd_kv *kv)
{
	struct get_arg *g = arg;

	if (kv->vlen > g->cap) {
		g->rc = -ENOSPC;
		return 0;
	}
	memcpy(g->val, kv->val, kv->vlen);
	if (kv->vlen < g->cap)
		((char *)g->val)[kv->vlen] = 0;
	g->rc = (int)kv->vlen;
	return 0;
}

int em_etcd_get(struct em_etcd *e, const char *key, void *val, size_t cap)
{
	struct get_arg g = { val, cap, -ENOENT };
	int rc = em_etcd_range(e, key, false, get_cb, &g, NULL);

	return rc < 0 ? rc : g.rc;
}

/* The body of a put: {"key":..,"value":..[,"lease":..]} into a fresh
 * buffer (values can be large; the caller frees). */
static char *put_body(const char *key, const void *val, size_t vlen, int64_t lease)
{
	size_t cap = B64LEN(strlen(key)) + B64LEN(vlen) + 80;
	char *b = malloc(cap), *kb, *vb;
	size_t n;

	if (!b)
		return NULL;
	n = (size_t)snprintf(b, cap, "{\"key\":\"");
	kb = b64(key, strlen(key), b + n, cap - n);
	n += strlen(kb);
	n += (size_t)snprintf(b + n, cap - n, "\",\"value\":\"");
	vb = b64(val, vlen, b + n, cap - n);
	n += strlen(vb);
	if (lease)
		snprintf(b + n, cap - n, "\",\"lease\":\"%lld\"}", (long long)lease);
	else
		snprintf(b + n, cap - n, "\"}");
	return b;
}

int em_etcd_put(struct em_etcd *e, const char *key, const void *val, size_t vlen, int64_t lease)
{
	char *body = put_body(key, val, vlen, lease), *buf;
	struct em_json root;
	int rc;

	if (!body)
		return -ENOMEM;
	rc = call(e, "/v3/kv/put", body, &buf, &root);
	free(body);
	if (!rc)
		free(buf);
	return rc;
}

static int txn(struct em_etcd *e, const char *body)
{
	struct em_json root, v;
	char *buf;
	int rc = call(e, "/v3/kv/txn", body, &buf, &root);

	if (rc)
		return rc;
	rc = !em_json_get(root, "succeeded", &v) && em_json_true(v);
	free(buf);
	return rc;
}

/* A put under one compare clause on the key (`compare`: the clause's
 * members other than the key): 1 if it held and the put was made, 0 if
 * not, or -errno. */
static int txn_put(struct em_etcd *e, const char *key, const void *val, size_t vlen, int64_t lease,
		   const char *compare)
{
	char kb[B64LEN(512)], *put, *body;
	size_t cap;
	int rc;

	if (strlen(key) >= 512)
		return -ENAMETOOLONG;
	if (!(put = put_body(key, val, vlen, lease)))
		return -ENOMEM;
	b64(key, strlen(key), kb, sizeof(kb));
	cap = strlen(put) + strlen(kb) + strlen(compare) + 100;
	if (!(body = malloc(cap))) {
		free(put);
		return -ENOMEM;
	}
	snprintf(body, cap,
		 "{\"compare\":[{\"key\":\"%s\",%s}],\"success\":[{\"request_put\":%s}]}", kb,
		 compare, put);
	free(put);
	rc = txn(e, body);
	free(body);
	return rc;
}

int em_etcd_create(struct em_etcd *e, const char *key, const void *val, size_t vlen, int64_t lease)
{
	/* create_revision 0 means "no such key": only one creator succeeds */
	int rc = txn_put(e, key, val, vlen, lease,
			 "\"target\":\"CREATE\",\"create_revision\":\"0\"");

	return rc < 0 ? rc : rc ? 0 : -EEXIST;
}

int em_etcd_delete(struct em_etcd *e, const char *key, bool prefix)
{
	char kb[B64LEN(512)], eb[B64LEN(512)], end[512], body[2048], *buf;
	struct em_json root;
	int rc;

	if (strlen(key) >= sizeof(end))
		return -ENAMETOOLONG;
	b64(key, strlen(key), kb, sizeof(kb));
	if (prefix) {
		range_end(key, end, sizeof(end));
		b64(end, strlen(end), eb, sizeof(eb));
		snprintf(body, sizeof(body), "{\"key\":\"%s\",\"range_end\":\"%s\"}", kb, eb);
	} else {
		snprintf(body, sizeof(body), "{\"key\":\"%s\"}", kb);
	}
	if ((rc = call(e, "/v3/kv/deleterange", body, &buf, &root)))
		return rc;
	rc = (int)EM_MIN(em_json_get_u64(root, "deleted", 0), 0x7fffffffu);
	free(buf);
	return rc;
}

int em_etcd_delete_if(struct em_etcd *e, const char *key, int64_t mod_rev)
{
	char kb[B64LEN(512)], body[2048];

	if (strlen(key) >= 512)
		return -ENAMETOOLONG;
	b64(key, strlen(key), kb, sizeof(kb));
	snprintf(body, sizeof(body),
		 "{\"compare\":[{\"target\":\"MOD\",\"key\":\"%s\",\"mod_revision\":\"%lld\"}],"
		 "\"success\":[{\"request_delete_range\":{\"key\":\"%s\"}}]}",
		 kb, (long long)mod_rev, kb);
	return txn(e, body);
}

int em_etcd_put_if(struct em_etcd *e, const char *key, const void *val, size_t vlen,
		   int64_t mod_rev)
{
	char cmp[96];

	snprintf(cmp, sizeof(cmp), "\"target\":\"MOD\",\"mod_revision\":\"%lld\"",
		 (long long)mod_rev);
	return txn_put(e, key, val, vlen, 0, cmp);
}

int em_etcd_lease_grant(struct em_etcd *e, int ttl_s, int64_t *id)
{
	char body[64], *buf;
	struct em_json root, v;
	int rc;

	snprintf(body, sizeof(body), "{\"TTL\":\"%d\"}", ttl_s);
	if ((rc = call(e, "/v3/lease/grant", body, &buf, &root)))
		return rc;
	if (em_json_get(root, "ID", &v) || em_json_i64(v, id) || !*id)
		rc = -EPROTO;
	free(buf);
	return rc;
}

int em_etcd_lease_keepalive(struct em_etcd *e, int64_t id)
{
	char body[64], *buf;
	struct em_json root, res;
	int rc;

	snprintf(body, sizeof(body), "{\"ID\":\"%lld\"}", (long long)id);
	if ((rc = call(e, "/v3/lease/keepalive", body, &buf, &root)))
		return rc;
	/* a stream of one answer; a lease that is gone answers TTL 0 (left out) */
	if (em_json_get(root, "result", &res))
		rc = -EPROTO;
	else
		rc = (int)EM_MIN(em_json_get_u64(res, "TTL", 0), 0x7fffffffu);
	free(buf);
	return rc ? rc : -ENOENT;
}

int em_etcd_lease_revoke(struct em_etcd *e, int64_t id)
{
	char body[64], *buf;
	struct em_json root;
	int rc;

	snprintf(body, sizeof(body), "{\"ID\":\"%lld\"}", (long long)id);
	if ((rc = call(e, "/v3/lease/revoke", body, &buf, &root)))
		return rc;
	free(buf);
	return 0;
}

/* ---- watch ---- */

struct em_etcd_watch {
	int fd;
	char *buf;
	size_t len;
	bool header_done;
	bool eof;
	int64_t rev;
};

int em_etcd_watch_parse(const char *msg, size_t len, em_etcd_cb cb, void *arg, int64_t *rev)
{
	struct em_json root, res, evs, ev, kv, t;
	uint8_t *scratch;
	size_t pos = 0;
	int n = 0, rc;

	if (em_json_root(msg, len, &root))
		return -EPROTO;
	if (em_json_get(root, "result", &res))
		return em_json_get(root, "error", &res) ? -EPROTO : -ECONNRESET;
	if (em_json_get(res, "canceled", &t) == 0 && em_json_true(t))
		return -ECANCELED; /* e.g. compacted past our start revision */
	if (rev) {
		int64_t r = header_rev(res);
		if (r > *rev)
			*rev = r;
	}
	if (em_json_get(res, "events", &evs))
		return 0;
	if (!(scratch = malloc(len + 2)))
		return -ENOMEM;
	while ((rc = em_json_next(evs, &pos, &ev)) == 1) {
		char type[16] = "PUT";
		em_json_get_str(ev, "type", type, sizeof(type));
		if (em_json_get(ev, "kv", &kv)) {
			rc = -EPROTO;
			break;
		}
		if ((rc = kv_emit(kv, !strcmp(type, "DELETE"), scratch, cb, arg)))
			break;
		n++;
	}
	free(scratch);
	return rc < 0 ? rc : rc > 0 ? rc : n;
}

int em_etcd_watch_open(struct em_etcd *e, const char *prefix, int64_t start_rev,
		       struct em_etcd_watch **out)
{
	char kb[B64LEN(512)], eb[B64LEN(512)], end[512], body[2048];
	struct em_etcd_watch *w;
	int rc = -EHOSTUNREACH;

	if (strlen(prefix) >= sizeof(end))
		return -ENAMETOOLONG;
	b64(prefix, strlen(prefix), kb, sizeof(kb));
	range_end(prefix, end, sizeof(end));
	b64(end, strlen(end), eb, sizeof(eb));
	snprintf(
		body, sizeof(body),
		"{\"create_request\":{\"key\":\"%s\",\"range_end\":\"%s\",\"start_revision\":\"%lld\"}}",
		kb, eb, (long long)start_rev);
	if (!(w = calloc(1, sizeof(*w))) || !(w->buf = malloc(WATCH_BUF))) {
		free(w);
		return -ENOMEM;
	}
	for (unsigned k = 0; k < e->n; k++) {
		unsigned i = (e->cur + k) % e->n;
		uint64_t deadline = em_now_ns() + (uint64_t)e->timeout_ms * 1000000ull;
		int fd = connect_ep(&e->ep[i], deadline);
		if (fd < 0) {
			rc = fd;
			continue;
		}
		if ((rc = send_req(fd, &e->ep[i], "/v3/watch", body, deadline))) {
			close(fd);
			continue;
		}
		e->cur = i;
		w->fd = fd;
		w->rev = start_rev ? start_rev - 1 : 0;
		*out = w;
		return 0;
	}
	free(w->buf);
	free(w);
	return rc;
}

int em_etcd_watch_fd(const struct em_etcd_watch *w)
{
	return w->fd;
}

/* Handles every complete line in the buffer. */
static int watch_drain(struct em_etcd_watch *w, em_etcd_cb cb, void *arg)
{
	size_t start = 0;
	int n = 0;

	if (!w->header_done) {
		int status;
		size_t off, blen;
		int rc = em_http_split(w->buf, w->len, false, &status, &off, &blen);
		if (rc == -EAGAIN)
			return 0;
		if (rc)
			return rc;
		if (status != 200)
			return -EPROTO;
		w->header_done = true;
		start = off;
	}
	for (;;) {
		char *nl = memchr(w->buf + start, '\n', w->len - start);
		size_t l;
		int rc;
		if (!nl)
			break;
		l = (size_t)(nl - (w->buf + start));
		if (l) {
			rc = em_etcd_watch_parse(w->buf + start, l, cb, arg, &w->rev);
			if (rc < 0)
				return rc;
			n += rc;
		}
		start += l + 1;
	}
	memmove(w->buf, w->buf + start, w->len - start);
	w->len -= start;
	return n;
}

int em_etcd_watch_read(struct em_etcd_watch *w, int timeout_ms, em_etcd_cb cb, void *arg,
		       int64_t *rev)
{
	uint64_t deadline = em_now_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
	int n = 0;

	for (;;) {
		struct pollfd p = { w->fd, POLLIN, 0 };
		ssize_t r;
		int rc;

		if (w->len + 1 >= WATCH_BUF)
			return -EMSGSIZE;
		r = recv(w->fd, w->buf + w->len, WATCH_BUF - 1 - w->len, MSG_DONTWAIT);
		if (r > 0) {
			w->len += (size_t)r;
			rc = watch_drain(w, cb, arg);
			if (rc < 0)
				return rc;
			n += rc;
			if (rev)
				*rev = w->rev;
			if (n)
				return n;
			continue;
		}
		if (r == 0)
			return -ECONNRESET;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
		if (n || !ms_left(deadline))
			return n;
		if (poll(&p, 1, ms_left(deadline)) < 0 && errno != EINTR)
			return -errno;
	}
}

void em_etcd_watch_close(struct em_etcd_watch *w)
{
	if (!w)
		return;
	close(w->fd);
	free(w->buf);
	free(w);
}
