/*
 * test_eavesdrop.c - a pool member who watches another client's traffic
 * cannot join its session. The test captures loopback while a client
 * connects and opens a second connection (a queue) that attaches to its
 * session, then, holding the cluster secret as any member does, tries to
 * attach with every token-like field it saw: the AUTH reply's token and a
 * replay of the attach request. Both are refused. Needs root (AF_PACKET).
 */
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "harness.h"
#include "common/auth.h"
#include "common/util.h"
#include "common/wire.h"

static struct t_node node;

static int call(int fd, uint8_t op, const void *p, uint32_t len, uint8_t *out, size_t cap)
{
	uint8_t b[EM_HDR_LEN];
	struct em_hdr h = {
		.magic = EM_WIRE_MAGIC, .version = EM_WIRE_VERSION, .op = op, .len = len, .tag = 5
	};

	em_hdr_encode(b, &h);
	CHECK(em_send_all(fd, b, sizeof(b)) == 0);
	CHECK(em_send_all(fd, p, len) == 0);
	CHECK(em_recv_all(fd, b, sizeof(b)) == 0);
	CHECK(em_hdr_decode(b, &h, NULL) == 0);
	CHECK(h.len <= cap);
	if (h.len)
		CHECK(em_recv_all(fd, out, h.len) == 0);
	return h.status;
}

/* The eavesdropper, who knows the cluster secret, asks to attach. */
static int try_attach(const uint8_t key[EM_KEY_LEN], uint64_t session,
		      const uint8_t token[EM_TOKEN_LEN])
{
	uint8_t cn[EM_NONCE_LEN], sn[256], ab[EM_AUTH_REQ_LEN];
	struct em_auth_req ar = { .attach_session = session };
	int fd = t_dial(node.port), rc;

	em_auth_nonce(cn);
	CHECK_RC(call(fd, EM_W_HELLO, cn, sizeof(cn), sn, sizeof(sn)), 0);
	em_auth_proof(key, 0, sn, cn, ar.proof);
	memcpy(ar.attach_token, token, EM_TOKEN_LEN);
	em_auth_req_encode(ab, &ar);
	rc = call(fd, EM_W_AUTH, ab, sizeof(ab), sn, sizeof(sn));
	close(fd);
	return rc;
}

int main(void)
{
	const char *sec = t_secret("s", T_SECRET);
	struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL) };
	uint8_t key[EM_KEY_LEN], frame[65536];
	uint8_t seen_token[EM_TOKEN_LEN] = { 0 }, seen_proof[EM_TOKEN_LEN] = { 0 };
	uint64_t session = 0, attach_session = 0;
	int cap, rcvbuf = 8 << 20, replies = 0;
	em_pool *p;
	em_queue *q;
	em_region *r;

	atexit(t_cleanup);
	cap = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
	if (cap < 0) {
		fprintf(stderr, "skip: no AF_PACKET socket (needs root)\n");
		return 77;
	}
	ll.sll_ifindex = (int)if_nametoindex("lo");
	CHECK(bind(cap, (struct sockaddr *)&ll, sizeof(ll)) == 0);
	setsockopt(cap, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
	CHECK(em_key_load(sec, key) == 0);

	t_node_start(&node, "8M", sec, NULL);
	{
		/* only this node's TCP port: other programs share loopback */
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 0, 8),
			BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 23),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 6),
			BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 14),
			BPF_STMT(BPF_LD | BPF_H | BPF_IND, 14),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)node.port, 2, 0),
			BPF_STMT(BPF_LD | BPF_H | BPF_IND, 16),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)node.port, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, 65535),
			BPF_STMT(BPF_RET | BPF_K, 0),
		};
		struct sock_fprog prog = { .len = EM_ARRAY_SIZE(f), .filter = f };
		uint8_t junk[2048];
		CHECK(setsockopt(cap, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) == 0);
		/* what arrived before the filter was attached is not ours */
		while (recv(cap, junk, sizeof(junk), 0) >= 0)
			;
	}
	p = t_connect_ok(&node, 1, sec);
	CHECK_RC(em_queue_create(p, 8, &q), 0);
	CHECK_RC(em_region_create(p, NULL, 4096, NULL, &r), 0);
	CHECK_RC(em_write(r, 0, "private", 8), 0);

	/* what went over the wire of this node's port */
	for (;;) {
		ssize_t n = recv(cap, frame, sizeof(frame), 0);
		/* copied out: a frame's IP header sits at offset 14, unaligned */
		struct iphdr ip;
		struct tcphdr tcp;
		const uint8_t *pl;
		size_t off, len;
		struct em_hdr h;

		if (n < 0)
			break;
		if ((size_t)n < 14 + sizeof(ip))
			continue;
		memcpy(&ip, frame + 14, sizeof(ip));
		if (ip.protocol != IPPROTO_TCP || (size_t)n < 14 + (size_t)ip.ihl * 4 + sizeof(tcp))
			continue;
		memcpy(&tcp, frame + 14 + (size_t)ip.ihl * 4, sizeof(tcp));
		off = 14 + (size_t)ip.ihl * 4 + (size_t)tcp.doff * 4;
		if ((size_t)n <= off)
			continue;
		pl = frame + off;
		len = (size_t)n - off;
		if (getenv("EM_TEST_DEBUG"))
			fprintf(stderr, "frame %zd sport %u dport %u payload %zu\n", n,
				ntohs(tcp.source), ntohs(tcp.dest), len);
		if (ntohs(tcp.source) == node.port && len >= EM_HDR_LEN + EM_AUTH_RESP_LEN &&
		    em_hdr_decode(pl, &h, NULL) == 0 && h.op == EM_W_AUTH &&
		    h.len == EM_AUTH_RESP_LEN) {
			struct em_auth_resp resp;
			em_auth_resp_decode(pl + EM_HDR_LEN, &resp);
			session = resp.session;
			memcpy(seen_token, resp.token, EM_TOKEN_LEN);
			replies++;
		}
		if (ntohs(tcp.dest) == node.port &&
		    (len == EM_AUTH_REQ_LEN || len == EM_HDR_LEN + EM_AUTH_REQ_LEN)) {
			struct em_auth_req ar;
			em_auth_req_decode(pl + len - EM_AUTH_REQ_LEN, &ar);
			if (ar.attach_session) {
				attach_session = ar.attach_session;
				memcpy(seen_proof, ar.attach_token, EM_TOKEN_LEN);
			}
		}
	}
	fprintf(stderr, "captured %d AUTH replies, session %llu, an attach to %llu\n", replies,
		(unsigned long long)session, (unsigned long long)attach_session);
	CHECK(replies >= 2 && session != 0);
	CHECK(attach_session == session); /* the queue's connection attached */

	/* neither what the reply carried nor a replayed attach gets in */
	CHECK_RC(try_attach(key, session, seen_token), -ENOENT);
	CHECK_RC(try_attach(key, session, seen_proof), -ENOENT);
	CHECK(t_log_has(&node, "unknown session"));

	/* the owner is unaffected */
	{
		char buf[8];
		CHECK_RC(em_read(r, 0, buf, 8), 0);
		CHECK(!memcmp(buf, "private", 8));
	}
	em_region_close(r);
	em_queue_destroy(q);
	em_pool_close(p);
	CHECK_RC(t_node_stop(&node, SIGTERM), 0);
	return 0;
}
