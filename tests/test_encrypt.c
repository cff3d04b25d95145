/*
 * test_encrypt.c - --encrypt, end to end with real nodes: a node started
 * with it refuses a client that does not encrypt, and says so on both sides;
 * reads, writes (4 KiB up to more than one message), atomics, a batched queue
 * and the control calls all work encrypted; a known pattern written and read
 * back is seen on loopback without encryption and never with it; a record
 * altered or replayed on the way (by a relay between client and node that
 * understands the record framing, as an attacker on the path would) closes
 * that connection with a logged error and is never served, while the node
 * goes on serving everyone else. Capturing needs root (AF_PACKET); without
 * it that part is skipped and the rest still runs.
 */
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>

#include "harness.h"
#include "common/seal.h"
#include "common/util.h"
#include "common/wire.h"

static struct t_node plain, enc;
static const char *sec;
static const char PATTERN[] = "ETHERMEM-PLAINTEXT-CANARY-0123456789";

static em_pool *connect_to(int port, int encrypt, int *rc)
{
	char url[64];
	struct em_pool_opts o = { .size = sizeof(o), .secret_file = sec, .encrypt = encrypt };
	em_pool *p = NULL;

	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
	o.nodes = url;
	*rc = em_pool_connect(&p, &o);
	return *rc ? NULL : p;
}

static em_pool *connect_ok(int port, int encrypt)
{
	int rc;
	em_pool *p = connect_to(port, encrypt, &rc);

	CHECK_RC(rc, 0);
	return p;
}

static void fill_pattern(uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)PATTERN[i % (sizeof(PATTERN) - 1)];
}

/* How often the node's log says `needle`. */
static int log_count(const struct t_node *n, const char *needle)
{
	static char buf[1 << 20];
	int fd = open(n->log, O_RDONLY), len, k = 0;

	if (fd < 0)
		return 0;
	len = (int)read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return 0;
	buf[len] = 0;
	for (char *p = buf; (p = strstr(p, needle)); p++)
		k++;
	return k;
}

/* ---- everything a client does, over an encrypted connection ---- */

static void ops(int port, int encrypt)
{
	em_pool *p = connect_ok(port, encrypt);
	size_t big = (5u << 20) + 123; /* more than one message's worth */
	uint8_t *w = malloc(big), *r = malloc(big);
	struct em_region_info info[4] = { { .size = sizeof(info[0]) } };
	struct em_op op[64];
	struct em_completion cq[64];
	uint8_t qbuf[32][512];
	uint64_t old = 99;
	em_region *a, *n;
	em_queue *q;
	int got = 0;

	CHECK(w && r);
	for (size_t i = 0; i < big; i++)
		w[i] = (uint8_t)(i * 131 + 7);
	CHECK_RC(em_region_create(p, NULL, 8u << 20, NULL, &a), 0);
	CHECK_RC(em_write(a, 0, w, 4096), 0);
	CHECK_RC(em_read(a, 0, r, 4096), 0);
	CHECK(!memcmp(w, r, 4096));
	CHECK_RC(em_write(a, 4096, w, big), 0);
	memset(r, 0, big);
	CHECK_RC(em_read(a, 4096, r, big), 0);
	CHECK(!memcmp(w, r, big));
	CHECK_RC(em_read(a, 8u << 20, r, 1), -ERANGE); /* errors come back too */

	/* atomics */
	CHECK_RC(em_atomic(a, 0, EM_ATOMIC_SWAP, 40, 0, NULL), 0);
	CHECK_RC(em_atomic(a, 0, EM_ATOMIC_FADD, 2, 0, &old), 0);
	CHECK(old == 40);
	CHECK_RC(em_atomic(a, 0, EM_ATOMIC_CAS, 7, 42, &old), 0);
	CHECK(old == 42);
	CHECK_RC(em_read(a, 0, &old, 8), 0);
	CHECK(old == 7);

	/* a batched queue: its own (attached, encrypted) connection */
	CHECK_RC(em_queue_create(p, 64, &q), 0);
	for (int i = 0; i < 32; i++) {
		memset(qbuf[i], 'a' + i % 26, sizeof(qbuf[i]));
		op[i] = (struct em_op){ .opcode = EM_OP_WRITE,
					.region = a,
					.offset = 65536 + (uint64_t)i * 512,
					.buf = qbuf[i],
					.len = 512,
					.user_data = (uint64_t)i };
	}
	op[32] = (struct em_op){ .opcode = EM_OP_ATOMIC,
				 .atomic_op = EM_ATOMIC_FADD,
				 .region = a,
				 .offset = 0,
				 .operand = 1,
				 .user_data = 32 };
	CHECK_RC(em_submit(q, op, 33), 33);
	while (got < 33) {
		int k = em_wait(q, cq, 1, 64, -1);
		CHECK(k > 0);
		if (k <= 0)
			break;
		for (int i = 0; i < k; i++) {
			CHECK_RC(cq[i].result, 0);
			if (cq[i].user_data == 32)
				CHECK(cq[i].value == 7);
		}
		got += k;
	}
	em_queue_destroy(q);
	CHECK_RC(em_read(a, 65536, r, 32 * 512), 0);
	for (int i = 0; i < 32; i++)
		CHECK(!memcmp(r + i * 512, qbuf[i], 512));

	/* the control path: named regions, listing, status */
	CHECK_RC(em_region_create(p, "enc-named", 4096, NULL, &n), 0);
	CHECK(em_region_list(p, info, 4) >= 1);
	CHECK_RC(em_region_close(n), 0);
	CHECK_RC(em_region_delete(p, "enc-named"), 0);
	em_region_close(a);
	em_pool_close(p);
	free(w);
	free(r);
}

/* ---- what an eavesdropper on loopback sees ---- */

static int cap_open(int port)
{
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	/* this node's TCP port only: other programs share loopback */
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 8),
		BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 23),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 6),
		BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 14),
		BPF_STMT(BPF_LD | BPF_H | BPF_IND, 14),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)port, 2, 0),
		BPF_STMT(BPF_LD | BPF_H | BPF_IND, 16),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)port, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, 262144),
		BPF_STMT(BPF_RET | BPF_K, 0),
	};
	struct sock_fprog prog = { .len = EM_ARRAY_SIZE(f), .filter = f };
	int cap = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
	int rcvbuf = 64 << 20;
	uint8_t junk[2048];

	if (cap < 0)
		return -1;
	ll.sll_ifindex = (int)if_nametoindex("lo");
	CHECK(bind(cap, (struct sockaddr *)&ll, sizeof(ll)) == 0);
	setsockopt(cap, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
	CHECK(setsockopt(cap, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) == 0);
	/* what arrived before the filter was attached is not ours */
	while (recv(cap, junk, sizeof(junk), 0) >= 0)
		;
	return cap;
}

/* Drains the capture: TCP payload bytes seen, and in *hits how many frames
 * held the pattern. */
static size_t cap_scan(int cap, int *hits)
{
	static uint8_t frame[1 << 18];
	size_t bytes = 0;

	*hits = 0;
	for (;;) {
		ssize_t n = recv(cap, frame, sizeof(frame), 0);
		struct iphdr ip;
		struct tcphdr tcp;
		size_t off;

		if (n < 0)
			break;
		if ((size_t)n < 14 + sizeof(ip))
			continue;
		memcpy(&ip, frame + 14, sizeof(ip));
		if ((size_t)n < 14 + (size_t)ip.ihl * 4 + sizeof(tcp))
			continue;
		memcpy(&tcp, frame + 14 + (size_t)ip.ihl * 4, sizeof(tcp));
		off = 14 + (size_t)ip.ihl * 4 + (size_t)tcp.doff * 4;
		if ((size_t)n <= off)
			continue;
		bytes += (size_t)n - off;
		if (memmem(frame + off, (size_t)n - off, PATTERN, sizeof(PATTERN) - 1))
			(*hits)++;
	}
	return bytes;
}

/* Writes a pattern and reads it back while capturing; returns the frames
 * that showed it, or -1 without AF_PACKET. */
static int eavesdrop(int port, int encrypt, size_t *bytes)
{
	size_t len = 1u << 20;
	uint8_t *b = malloc(len);
	int cap = cap_open(port), hits;
	em_pool *p;
	em_region *r;

	if (cap < 0) {
		free(b);
		return -1;
	}
	p = connect_ok(port, encrypt);
	fill_pattern(b, len);
	CHECK_RC(em_region_create(p, NULL, len, NULL, &r), 0);
	CHECK_RC(em_write(r, 0, b, 4096), 0);
	CHECK_RC(em_write(r, 0, b, len), 0);
	memset(b, 0, len);
	CHECK_RC(em_read(r, 0, b, len), 0);
	CHECK(!memcmp(b, PATTERN, sizeof(PATTERN) - 1));
	em_region_close(r);
	em_pool_close(p);
	*bytes = cap_scan(cap, &hits);
	close(cap);
	free(b);
	return hits;
}

/* ---- an attacker on the path ---- */

enum { PX_FLIP, PX_REPLAY };

/* Relays one connection to the node. Client-to-node bytes after the
 * handshake are read record by record; once armed, the next record has its
 * last ciphertext byte flipped (PX_FLIP) or is sent twice (PX_REPLAY). */
struct proxy {
	int lfd, port, target, mode, armed, c, s;
	pthread_t up, down;
};

static void *proxy_down(void *arg)
{
	struct proxy *px = arg;
	static uint8_t buf[1 << 16];

	for (;;) {
		ssize_t n = recv(px->s, buf, sizeof(buf), 0);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0 || em_send_all(px->c, buf, (size_t)n))
			break;
	}
	shutdown(px->c, SHUT_RDWR);
	return NULL;
}

static void *proxy_up(void *arg)
{
	struct proxy *px = arg;
	static uint8_t buf[EM_SEAL_REC_MAX];
	/* HELLO and AUTH go through whole, each before its reply is due */
	static const size_t clear[] = { EM_HDR_LEN + EM_NONCE_LEN, EM_HDR_LEN + EM_AUTH_REQ_LEN };

	for (int i = 0; i < 2; i++)
		if (em_recv_all(px->c, buf, clear[i]) || em_send_all(px->s, buf, clear[i]))
			goto out;
	for (;;) {
		uint32_t len;
		size_t n;

		if (em_recv_all(px->c, buf, EM_SEAL_HDR))
			break;
		len = em_get32(buf);
		if (len == 0 || len > EM_SEAL_MAX)
			break;
		n = EM_SEAL_HDR + len + EM_SEAL_TAG;
		if (em_recv_all(px->c, buf + EM_SEAL_HDR, n - EM_SEAL_HDR))
			break;
		if (__atomic_exchange_n(&px->armed, 0, __ATOMIC_SEQ_CST)) {
			if (px->mode == PX_FLIP)
				buf[EM_SEAL_HDR + len - 1] ^= 0x20;
			else if (em_send_all(px->s, buf, n))
				break;
		}
		if (em_send_all(px->s, buf, n))
			break;
	}
out:
	shutdown(px->s, SHUT_RDWR);
	return NULL;
}

static void *proxy_accept(void *arg)
{
	struct proxy *px = arg;

	px->c = accept(px->lfd, NULL, NULL);
	px->s = t_dial(px->target);
	CHECK(px->c >= 0);
	pthread_create(&px->down, NULL, proxy_down, px);
	proxy_up(px);
	pthread_join(px->down, NULL);
	close(px->c);
	close(px->s);
	return NULL;
}

static void proxy_start(struct proxy *px, int target, int mode)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);

	memset(px, 0, sizeof(*px));
	px->target = target;
	px->mode = mode;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	px->lfd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(px->lfd >= 0 && bind(px->lfd, (struct sockaddr *)&a, sizeof(a)) == 0);
	CHECK(listen(px->lfd, 1) == 0);
	CHECK(getsockname(px->lfd, (struct sockaddr *)&a, &al) == 0);
	px->port = ntohs(a.sin_port);
	pthread_create(&px->up, NULL, proxy_accept, px);
}

static void proxy_stop(struct proxy *px)
{
	pthread_join(px->up, NULL);
	close(px->lfd);
}

/* A named region's first 4 KiB, read by a client that connects directly. */
static void check_named(const char *name, const uint8_t *want, size_t len)
{
	em_pool *p = connect_ok(enc.port, 1);
	uint8_t got[4096];
	em_region *r;

	CHECK_RC(em_region_open(p, name, &r), 0);
	CHECK_RC(em_read(r, 0, got, len), 0);
	CHECK(!memcmp(got, want, len));
	em_region_close(r);
	em_pool_close(p);
}

static void tamper(void)
{
	uint8_t a[4096], b[4096];
	uint64_t one = 0;
	struct proxy px;
	em_pool *p;
	em_region *r;
	int rc;

	memset(a, 'A', sizeof(a));
	memset(b, 'B', sizeof(b));

	/* a flipped byte in a write's record */
	proxy_start(&px, enc.port, PX_FLIP);
	p = connect_ok(px.port, 1);
	CHECK_RC(em_region_create(p, "enc-flip", 4096, NULL, &r), 0);
	CHECK_RC(em_write(r, 0, a, sizeof(a)), 0);
	__atomic_store_n(&px.armed, 1, __ATOMIC_SEQ_CST);
	rc = em_write(r, 0, b, sizeof(b));
	fprintf(stderr, "write with a flipped byte: %s\n", em_strerror(rc));
	CHECK(rc < 0);
	em_region_close(r);
	em_pool_close(p);
	proxy_stop(&px);
	CHECK(T_WAIT_FOR(2000, log_count(&enc, "failed authentication") == 1));
	check_named("enc-flip", a, sizeof(a)); /* the altered write was not served */

	/* a replayed record: an atomic applied once, however often it is sent */
	proxy_start(&px, enc.port, PX_REPLAY);
	p = connect_ok(px.port, 1);
	CHECK_RC(em_region_create(p, "enc-replay", 4096, NULL, &r), 0);
	CHECK_RC(em_write(r, 0, &one, 8), 0);
	__atomic_store_n(&px.armed, 1, __ATOMIC_SEQ_CST);
	rc = em_atomic(r, 0, EM_ATOMIC_FADD, 1, 0, NULL);
	fprintf(stderr, "atomic whose record was replayed: %s\n", em_strerror(rc));
	em_region_close(r);
	em_pool_close(p);
	proxy_stop(&px);
	CHECK(T_WAIT_FOR(2000, log_count(&enc, "failed authentication") == 2));
	one = 1;
	check_named("enc-replay", (const uint8_t *)&one, 8);
}

int main(void)
{
	size_t bytes = 0;
	int hits, rc;
	em_pool *p;

	atexit(t_cleanup);
	sec = t_secret("s", T_SECRET);
	t_node_start(&plain, "64M", sec, NULL);
	t_node_start(&enc, "64M", sec, "--encrypt --verbose");

	/* a node with --encrypt refuses a client that does not encrypt, and
	 * both sides say why */
	p = connect_to(enc.port, -1, &rc);
	CHECK_RC(rc, -EM_ECRYPT);
	CHECK(strstr(em_strerror(rc), "encrypt") != NULL);
	CHECK(t_log_has(&enc, "does not encrypt"));
	(void)p;

	/* everything works encrypted: against the node that requires it, and
	 * against one that only offers it */
	ops(enc.port, 1);
	ops(plain.port, 1);
	ops(plain.port, -1);
	CHECK(t_log_has(&enc, "encrypted with "));

	/* on the wire: the pattern in clear without --encrypt, never with it */
	hits = eavesdrop(plain.port, -1, &bytes);
	if (hits < 0) {
		fprintf(stderr, "no AF_PACKET socket (needs root): capture not checked\n");
	} else {
		fprintf(stderr, "plain: %zu bytes captured, %d frames show the pattern\n", bytes,
			hits);
		CHECK(hits > 0);
		hits = eavesdrop(enc.port, 1, &bytes);
		fprintf(stderr, "encrypted: %zu bytes captured, %d frames show the pattern\n",
			bytes, hits);
		CHECK(bytes >= 2u << 20); /* the capture saw the transfers */
		CHECK(hits == 0);
	}

	tamper();
	/* and the node serves on */
	ops(enc.port, 1);
	CHECK_RC(t_node_stop(&enc, SIGTERM), 0);
	CHECK_RC(t_node_stop(&plain, SIGTERM), 0);
	return 0;
}
