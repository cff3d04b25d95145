/*
 * test_garbage.c - bad input gets a clear error or a closed connection with
 * a log line, never a crash, a hang, a leak or damage to anyone else's data.
 * Speaks the wire protocol by hand: garbage bytes, truncated messages,
 * oversize lengths, unknown opcodes, wrong versions, bad handles, ranges past
 * the end, misaligned atomics, a create larger than the node, and clients
 * that vanish mid-request.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include "harness.h"
#include "common/auth.h"
#include "common/util.h"
#include "common/wire.h"

static struct t_node node;

static void send_hdr(int fd, uint8_t op, uint32_t len, uint32_t region, uint32_t aux, uint64_t off,
		     uint8_t version)
{
	uint8_t b[EM_HDR_LEN];
	struct em_hdr h = { .magic = EM_WIRE_MAGIC,
			    .version = version,
			    .op = op,
			    .len = len,
			    .tag = 77,
			    .region = region,
			    .aux = aux,
			    .offset = off };
	em_hdr_encode(b, &h);
	CHECK(em_send_all(fd, b, sizeof(b)) == 0);
}

/* Reads one reply; returns its status, fills *h. -1000 if the node closed. */
static int reply(int fd, struct em_hdr *h, uint8_t *payload, size_t cap)
{
	uint8_t b[EM_HDR_LEN];

	if (em_recv_all(fd, b, sizeof(b)))
		return -1000;
	h->magic = 0;
	em_hdr_decode(b, h, NULL);
	CHECK(h->len <= cap);
	if (h->len)
		CHECK(em_recv_all(fd, payload, h->len) == 0);
	return h->status;
}

/* True when the node closes the connection (after any replies). */
static int closed(int fd)
{
	uint8_t b[4096];
	ssize_t n;

	while ((n = recv(fd, b, sizeof(b), 0)) > 0)
		;
	return n == 0 || errno == ECONNRESET;
}

/* A connection past authentication, as a real client would have it. */
static int authed(const char *secret)
{
	uint8_t key[EM_KEY_LEN], cn[EM_NONCE_LEN], buf[256], ab[EM_AUTH_REQ_LEN];
	struct em_auth_req ar = { 0 };
	struct em_hdr h;
	int fd = t_dial(node.port);

	CHECK(em_key_load(secret, key) == 0);
	em_auth_nonce(cn);
	send_hdr(fd, EM_W_HELLO, EM_NONCE_LEN, 0, 0, 0, EM_WIRE_VERSION);
	CHECK(em_send_all(fd, cn, sizeof(cn)) == 0);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), 0);
	CHECK(h.len == EM_NONCE_LEN);
	em_auth_proof(key, 0, buf, cn, ar.proof);
	em_auth_req_encode(ab, &ar);
	send_hdr(fd, EM_W_AUTH, EM_AUTH_REQ_LEN, 0, 0, 0, EM_WIRE_VERSION);
	CHECK(em_send_all(fd, ab, sizeof(ab)) == 0);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), 0);
	return fd;
}

static uint32_t create_anon(int fd, uint64_t size, int *status)
{
	uint8_t p[8], buf[4096];
	struct em_hdr h;
	int n = em_namelayout_encode(p, sizeof(p), NULL, NULL, 0);

	send_hdr(fd, EM_W_CREATE, (uint32_t)n, 0, 0, size, EM_WIRE_VERSION);
	CHECK(em_send_all(fd, p, (size_t)n) == 0);
	*status = reply(fd, &h, buf, sizeof(buf));
	return h.region;
}

int main(void)
{
	const char *sec = t_secret("secret", T_SECRET);
	uint8_t junk[8192], buf[65536];
	uint64_t s = 12345, v;
	struct em_hdr h;
	em_pool *pool;
	em_region *r;
	uint32_t hd;
	int fd, st;

	atexit(t_cleanup);
	/* sessions whose connections break are kept a little for their
	 * clients to come back; here they are not coming back */
	t_node_start(&node, "8M", sec, "--io-timeout 300 --session-linger 100");
	pool = t_connect_ok(&node, 1, sec);
	CHECK_RC(em_region_create(pool, "victim", 65536, NULL, &r), 0);
	for (int i = 0; i < 65536; i++)
		buf[i] = (uint8_t)(i * 7);
	CHECK_RC(em_write(r, 0, buf, 65536), 0);

	/* 1. garbage before authentication, many times */
	for (int round = 0; round < 50; round++) {
		size_t len = 1 + t_rand(&s) % sizeof(junk);
		for (size_t i = 0; i < len; i++)
			junk[i] = (uint8_t)t_rand(&s);
		fd = t_dial(node.port);
		send(fd, junk, len, MSG_NOSIGNAL);
		close(fd);
	}
	/* 2. wrong version in HELLO: an answer saying so, then closed. The
	 * node may not have seen round 1's connections close yet, and while
	 * they count against this address's unauthenticated budget it turns
	 * a new one away unanswered (CI saw -1000 here once): dial again */
	for (int tries = 0;; tries++) {
		fd = t_dial(node.port);
		send_hdr(fd, EM_W_HELLO, EM_NONCE_LEN, 0, 0, 0, 9);
		st = reply(fd, &h, buf, sizeof(buf));
		close(fd);
		if (st != -1000 || tries == 50)
			break;
		usleep(20000);
	}
	CHECK_RC(st, -EM_EVERSION);
	/* 3. a request before authenticating */
	fd = t_dial(node.port);
	send_hdr(fd, EM_W_READ, 0, 1, 8, 0, EM_WIRE_VERSION);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -EPROTO);
	CHECK(closed(fd));
	close(fd);
	/* a slow client stalls nobody else: while one connection sits in the
	 * middle of a message, another is served as usual */
	fd = authed(sec);
	send(fd, "EMEM\1", 5, MSG_NOSIGNAL);
	CHECK_RC(em_read(r, 0, buf, 4096), 0);
	CHECK(buf[1] == 7);
	close(fd);
	/* 4. a truncated header, then silence: dropped after the io timeout */
	fd = t_dial(node.port);
	send(fd, "EMEM\1", 5, MSG_NOSIGNAL);
	CHECK(closed(fd));
	close(fd);

	fd = authed(sec);
	/* 5. bad handle, range past the end, misaligned and unknown atomics,
	 * oversize read: each an error reply, the connection stays */
	send_hdr(fd, EM_W_READ, 0, 999, 8, 0, EM_WIRE_VERSION);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -EBADF);
	hd = create_anon(fd, 4096, &st);
	CHECK_RC(st, 0);
	send_hdr(fd, EM_W_READ, 0, hd, 8, 4090, EM_WIRE_VERSION);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -ERANGE);
	send_hdr(fd, EM_W_READ, 0, hd, 8, UINT64_MAX - 2, EM_WIRE_VERSION);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -ERANGE);
	send_hdr(fd, EM_W_READ, 0, hd, EM_MAX_IO + 1, 0, EM_WIRE_VERSION);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -EINVAL);
	send_hdr(fd, EM_W_ATOMIC, 16, hd, EM_ATOMIC_FADD, 4, EM_WIRE_VERSION);
	CHECK(em_send_all(fd, junk, 16) == 0);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -EINVAL);
	send_hdr(fd, EM_W_ATOMIC, 16, hd, 200, 0, EM_WIRE_VERSION);
	CHECK(em_send_all(fd, junk, 16) == 0);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -EINVAL);
	send_hdr(fd, EM_W_ATOMIC, 8, hd, EM_ATOMIC_FADD, 0, EM_WIRE_VERSION);
	CHECK(em_send_all(fd, junk, 8) == 0);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -EPROTO);
	send_hdr(fd, EM_W_WRITE, 100, hd, 0, 4000, EM_WIRE_VERSION);
	CHECK(em_send_all(fd, junk, 100) == 0);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -ERANGE);
	/* a large write past the end is consumed, refused, and the stream
	 * stays in step */
	send_hdr(fd, EM_W_WRITE, 1u << 20, hd, 0, 0, EM_WIRE_VERSION);
	for (int i = 0; i < 128; i++)
		CHECK(em_send_all(fd, junk, 8192) == 0);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -ERANGE);
	/* the node never hands out more than it has */
	create_anon(fd, 9u << 20, &st);
	CHECK_RC(st, -ENOSPC);
	create_anon(fd, 0, &st);
	CHECK_RC(st, -EINVAL);
	/* a response flag on a request, HELLO again: refused, still connected */
	send_hdr(fd, EM_W_STATUS, 0, 0, 0, 0, EM_WIRE_VERSION);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), 0);
	send_hdr(fd, EM_W_HELLO, EM_NONCE_LEN, 0, 0, 0, EM_WIRE_VERSION);
	CHECK(em_send_all(fd, junk, EM_NONCE_LEN) == 0);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -EPROTO);
	/* 6. unknown opcode: framing is lost, so an answer and a close */
	send_hdr(fd, 200, 0, 0, 0, 0, EM_WIRE_VERSION);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -EPROTO);
	CHECK(closed(fd));
	close(fd);
	/* 7. oversize length */
	fd = authed(sec);
	send_hdr(fd, EM_W_WRITE, 0xfffffff0u, 1, 0, 0, EM_WIRE_VERSION);
	CHECK_RC(reply(fd, &h, buf, sizeof(buf)), -EPROTO);
	CHECK(closed(fd));
	close(fd);
	/* 8. garbage after authentication */
	fd = authed(sec);
	send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
	CHECK(closed(fd));
	close(fd);
	/* 9. vanishing mid-request, small and large */
	fd = authed(sec);
	hd = create_anon(fd, 1u << 20, &st);
	send_hdr(fd, EM_W_WRITE, 1u << 20, hd, 0, 0, EM_WIRE_VERSION);
	send(fd, junk, 5000, MSG_NOSIGNAL);
	close(fd);
	fd = authed(sec);
	send_hdr(fd, EM_W_WRITE, 100, 1, 0, 0, EM_WIRE_VERSION);
	close(fd);

	/* the node still serves, the victim's data is intact, nothing leaked:
	 * every anonymous region of the dead connections is gone */
	for (int i = 0; i < 100; i++) {
		struct em_node_status ns = { .size = sizeof(ns) };
		CHECK_RC(em_pool_status(pool, &ns, 1), 1);
		if (ns.used == 65536 && ns.clients == 1)
			break;
		t_sleep_ms(20);
	}
	{
		struct em_node_status ns = { .size = sizeof(ns) };
		CHECK_RC(em_pool_status(pool, &ns, 1), 1);
		CHECK(ns.used == 65536);
		CHECK(ns.clients == 1);
	}
	CHECK_RC(em_read(r, 0, buf, 65536), 0);
	for (int i = 0; i < 65536; i++)
		CHECK(buf[i] == (uint8_t)(i * 7));
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_FADD, 0, 0, &v), 0);
	em_region_close(r);
	em_pool_close(pool);
	CHECK(t_log_has(&node, "bad request header"));
	CHECK(t_log_has(&node, "unsupported protocol version"));
	CHECK(t_log_has(&node, "mid-request") || t_log_has(&node, "incomplete"));
	CHECK_RC(t_node_stop(&node, SIGTERM), 0);
	return 0;
}
