/*
 * test_slowloris.c - --io-timeout is a deadline for a whole message, not for
 * each receive: a peer that sends one byte every quarter second, during the
 * handshake or inside a 4 KiB WRITE, is dropped soon after the deadline,
 * while an idle authenticated client is left alone and a member is served
 * throughout.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "harness.h"
#include "common/auth.h"
#include "common/util.h"
#include "common/wire.h"

static struct t_node node;

static void hdr(uint8_t *b, uint8_t op, uint32_t len, uint32_t region, uint64_t off)
{
	struct em_hdr h = { .magic = EM_WIRE_MAGIC,
			    .version = EM_WIRE_VERSION,
			    .op = op,
			    .len = len,
			    .tag = 9,
			    .region = region,
			    .offset = off };
	em_hdr_encode(b, &h);
}

static int call(int fd, uint8_t op, const void *p, uint32_t len, uint32_t region, uint64_t off,
		struct em_hdr *rh, uint8_t *out, size_t cap)
{
	uint8_t b[EM_HDR_LEN];

	hdr(b, op, len, region, off);
	CHECK(em_send_all(fd, b, sizeof(b)) == 0);
	if (len)
		CHECK(em_send_all(fd, p, len) == 0);
	CHECK(em_recv_all(fd, b, sizeof(b)) == 0);
	CHECK(em_hdr_decode(b, rh, NULL) == 0);
	CHECK(rh->len <= cap);
	if (rh->len)
		CHECK(em_recv_all(fd, out, rh->len) == 0);
	return rh->status;
}

static int authed(const char *secret)
{
	uint8_t key[EM_KEY_LEN], cn[EM_NONCE_LEN], buf[256], ab[EM_AUTH_REQ_LEN];
	struct em_auth_req ar = { 0 };
	struct em_hdr h;
	int fd = t_dial(node.port);

	CHECK(em_key_load(secret, key) == 0);
	em_auth_nonce(cn);
	CHECK_RC(call(fd, EM_W_HELLO, cn, sizeof(cn), 0, 0, &h, buf, sizeof(buf)), 0);
	em_auth_proof(key, 0, buf, cn, ar.proof);
	em_auth_req_encode(ab, &ar);
	CHECK_RC(call(fd, EM_W_AUTH, ab, sizeof(ab), 0, 0, &h, buf, sizeof(buf)), 0);
	return fd;
}

/* Sends bytes one every 250 ms for up to 8 s. Returns how many went out
 * before the node closed the connection, or -1 if it never did. */
static int dribble(int fd, const uint8_t *b, int n)
{
	for (int i = 0; i < n && i < 32; i++) {
		uint8_t x;
		ssize_t r = recv(fd, &x, 1, MSG_DONTWAIT);

		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			return i;
		if (send(fd, b + i, 1, MSG_NOSIGNAL) != 1)
			return i;
		t_sleep_ms(250);
	}
	return -1;
}

int main(void)
{
	const char *sec = t_secret("s", T_SECRET);
	uint8_t msg[EM_HDR_LEN + 4096], buf[4096];
	struct em_hdr h;
	em_pool *p;
	em_region *r;
	uint64_t v = 0;
	int fd, sent;
	uint8_t nl[8];
	int n;

	atexit(t_cleanup);
	t_node_start(&node, "8M", sec, "--io-timeout 1000");
	p = t_connect_ok(&node, 1, sec);
	CHECK_RC(em_region_create(p, NULL, 4096, NULL, &r), 0);

	/* 1. the handshake, a byte at a time: dropped, not served for ever */
	fd = t_dial(node.port);
	hdr(msg, EM_W_HELLO, EM_NONCE_LEN, 0, 0);
	sent = dribble(fd, msg, EM_HDR_LEN);
	fprintf(stderr, "handshake dribbler dropped after %d bytes\n", sent);
	CHECK(sent >= 0 && sent < EM_HDR_LEN);
	close(fd);

	/* 2. an idle member is not a slow one: it may wait past the timeout */
	fd = authed(sec);
	t_sleep_ms(1500);
	n = em_namelayout_encode(nl, sizeof(nl), NULL, NULL, 0);
	CHECK_RC(call(fd, EM_W_CREATE, nl, (uint32_t)n, 0, 4096, &h, buf, sizeof(buf)), 0);

	/* 3. a 4 KiB WRITE whose payload comes a byte at a time: dropped */
	hdr(msg, EM_W_WRITE, 4096, h.region, 0);
	memset(msg + EM_HDR_LEN, 0xab, 4096);
	CHECK(em_send_all(fd, msg, EM_HDR_LEN + 100) == 0);
	sent = dribble(fd, msg + EM_HDR_LEN + 100, 4096 - 100);
	fprintf(stderr, "write dribbler dropped after %d more bytes\n", sent);
	CHECK(sent >= 0);
	close(fd);

	/* 4. the member was served throughout */
	CHECK_RC(em_write(r, 0, &(uint64_t){ 42 }, 8), 0);
	CHECK_RC(em_read(r, 0, &v, 8), 0);
	CHECK(v == 42);
	CHECK(t_log_has(&node, "not authenticated within"));
	CHECK(t_log_has(&node, "incomplete after"));
	em_region_close(r);
	em_pool_close(p);
	CHECK_RC(t_node_stop(&node, SIGTERM), 0);
	return 0;
}
