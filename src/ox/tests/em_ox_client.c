/*
 * em_ox_client.c - a libethermem client for the OmniXtend data-path test
 * (em_ox_test.sh): the same checks as the core tests, run with
 * ETHERMEM_TRANSPORT=ox against a real ethermemd --ox in another network
 * namespace.  One program, several roles (argv[1]):
 *
 *   integrity SEED        random reads and writes, synchronous and batched
 *                         (overlapping ops in a batch included), against a
 *                         local reference; every atomic against a local model
 *   adds NAME N           N fetch-adds of 1 on word 0 of region NAME (made if
 *                         missing), from the default queue and a queue of
 *                         its own; every old value must be below the total
 *   read NAME OFF EXPECT  the u64 at OFF of region NAME must equal EXPECT
 *   create NAME SIZE      creates region NAME (kept after exit)
 *   garbage IFACE         sends malformed frames to the node as this MAC and
 *                         as a stranger, then checks the node still serves
 *                         and counted them
 *   victim DIR            a region filled with 0xC3 bytes; writes its window
 *                         base to DIR/base, waits for DIR/go, then checks the
 *                         data are unchanged and the link still serves, and
 *                         writes the node's counters moved meanwhile
 *   spoof IFACE NODE VICTIM BASE blind|sweep
 *                         an attacker with no session: frames with the
 *                         victim's source MAC, Gets and Puts at BASE, at the
 *                         old predictable base and at a guessed one; blind
 *                         uses sequence numbers it cannot know, sweep every
 *                         one from 0 to 4095 (so one is right); fails if any
 *                         frame it receives meanwhile carries the data
 *   status                prints the node's OmniXtend counters
 *   bw SIZE QD MIB        read bandwidth: SIZE-byte reads, QD in flight
 *   threads N             N threads, a queue each, on one pool (one shared
 *                         requester): own-slice data checks and adds to one
 *                         counter, which must come out exact
 *
 * Exit 0 pass, 1 fail, 2 usage or setup.
 */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/wire.h"
#include "ethermem.h"
#include "harness.h"
#include "lib/internal.h"
#include "lib/ox_chan.h"
#include "ox/ox.h"

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static em_pool *connect_ox(void)
{
	em_pool *p;
	int rc = em_pool_connect(&p, NULL);

	if (rc) {
		fprintf(stderr, "connect: %s\n", em_strerror(rc));
		exit(2);
	}
	return p;
}

static void integrity(uint64_t seed)
{
	em_pool *pool = connect_ox();
	uint64_t size = 8u << 20, s = seed * 2654435761u + 1;
	uint8_t *ref = calloc(1, size), *buf = malloc(1u << 20);
	em_region *r;
	em_queue *q;

	CHECK(ref && buf);
	CHECK(!strcmp(pool->tp->name, "ox"));
	CHECK_RC(em_region_create(pool, NULL, size, NULL, &r), 0);
	CHECK(em_ox_window(r, 0) != 0);
	CHECK_RC(em_read(r, 0, buf, 1u << 20), 0);
	for (int i = 0; i < (1 << 20); i++)
		CHECK(buf[i] == 0);
	for (int i = 0; i < 1500; i++) {
		uint64_t len = 1 + rnd(&s) % ((rnd(&s) & 3) ? 4096 : (1u << 20));
		uint64_t off = rnd(&s) % (size - len + 1);
		if (rnd(&s) & 1) {
			for (uint64_t k = 0; k < len; k++)
				ref[off + k] = buf[k] = (uint8_t)rnd(&s);
			CHECK_RC(em_write(r, off, buf, len), 0);
		} else {
			CHECK_RC(em_read(r, off, buf, len), 0);
			CHECK(!memcmp(buf, ref + off, len));
		}
	}
	CHECK_RC(em_queue_create(pool, 32, &q), 0);
	for (int round = 0; round < 150; round++) {
		struct em_op ops[32];
		uint8_t *bufs[32];
		struct em_completion c[32];
		int got = 0, nops = 1 + (int)(rnd(&s) % 32);
		/* ops in one batch overlap often: a small hot range */
		uint64_t span = rnd(&s) & 1 ? 256u << 10 : size;

		for (int i = 0; i < nops; i++) {
			uint64_t len = 1 + rnd(&s) % 70000, off = rnd(&s) % (span - len + 1);
			bufs[i] = malloc(len);
			memset(&ops[i], 0, sizeof(ops[i]));
			ops[i].region = r;
			ops[i].offset = off;
			ops[i].len = len;
			ops[i].buf = bufs[i];
			ops[i].user_data = (uint64_t)i;
			if (rnd(&s) % 3 == 0) {
				ops[i].opcode = EM_OP_WRITE;
				for (uint64_t k = 0; k < len; k++)
					bufs[i][k] = (uint8_t)rnd(&s);
			} else {
				ops[i].opcode = EM_OP_READ;
			}
		}
		CHECK_RC(em_submit(q, ops, (unsigned)nops), nops);
		while (got < nops) {
			int n = em_wait(q, c + got, 1, (unsigned)(nops - got), -1);
			CHECK(n > 0);
			got += n;
		}
		for (int i = 0; i < nops; i++)
			CHECK(c[i].result == 0 ||
			      (fprintf(stderr, "op: %s\n", em_strerror(c[i].result)), 0));
		/* the queue keeps submission order where ops overlap, as TCP does */
		for (int i = 0; i < nops; i++) {
			if (ops[i].opcode == EM_OP_WRITE)
				memcpy(ref + ops[i].offset, bufs[i], ops[i].len);
			else if (memcmp(bufs[i], ref + ops[i].offset, ops[i].len)) {
				uint64_t k = 0;
				while (bufs[i][k] == ref[ops[i].offset + k])
					k++;
				fprintf(stderr,
					"round %d op %d/%d read off %" PRIu64 " len %zu: first "
					"difference at byte %" PRIu64 "\n",
					round, i, nops, ops[i].offset, ops[i].len, k);
				for (int j = 0; j < nops; j++)
					fprintf(stderr, "  op %d %s off %" PRIu64 " len %zu\n", j,
						ops[j].opcode == EM_OP_WRITE ? "write" : "read",
						ops[j].offset, ops[j].len);
				exit(1);
			}
			free(bufs[i]);
		}
	}
	/* every atomic, against a local model, batched with reads of the word */
	for (int i = 0; i < 2000; i++) {
		uint64_t off = (rnd(&s) % 64) * 8, cur, opnd = rnd(&s), cmp, old, want;
		enum em_atomic_op aop = (enum em_atomic_op)(rnd(&s) % EM_ATOMIC__COUNT);
		if (rnd(&s) & 1)
			opnd &= 0xff;
		memcpy(&cur, ref + off, 8);
		cmp = rnd(&s) & 1 ? cur : opnd ^ 1;
		switch (aop) {
		case EM_ATOMIC_CAS:
			want = cur == cmp ? opnd : cur;
			break;
		case EM_ATOMIC_FADD:
			want = cur + opnd;
			break;
		case EM_ATOMIC_SWAP:
			want = opnd;
			break;
		case EM_ATOMIC_SMIN:
			want = (int64_t)opnd < (int64_t)cur ? opnd : cur;
			break;
		case EM_ATOMIC_SMAX:
			want = (int64_t)opnd > (int64_t)cur ? opnd : cur;
			break;
		case EM_ATOMIC_UMIN:
			want = opnd < cur ? opnd : cur;
			break;
		case EM_ATOMIC_UMAX:
			want = opnd > cur ? opnd : cur;
			break;
		case EM_ATOMIC_AND:
			want = cur & opnd;
			break;
		case EM_ATOMIC_OR:
			want = cur | opnd;
			break;
		default:
			want = cur ^ opnd;
			break;
		}
		if (i & 1) {
			CHECK_RC(em_atomic(r, off, aop, opnd, cmp, &old), 0);
		} else {
			/* through a queue, then a read of the same word in the
			 * same batch: it must see the atomic's result */
			struct em_op ops[2] = {
				{ .opcode = EM_OP_ATOMIC,
				  .atomic_op = (uint8_t)aop,
				  .region = r,
				  .offset = off,
				  .operand = opnd,
				  .compare = cmp,
				  .user_data = 0 },
				{ .opcode = EM_OP_READ,
				  .region = r,
				  .offset = off,
				  .buf = buf,
				  .len = 8,
				  .user_data = 1 },
			};
			struct em_completion c[2];
			int got = 0;
			uint64_t after;
			CHECK_RC(em_submit(q, ops, 2), 2);
			while (got < 2) {
				int n = em_wait(q, c + got, 1, (unsigned)(2 - got), -1);
				CHECK(n > 0);
				got += n;
			}
			for (int k = 0; k < 2; k++) {
				CHECK(c[k].result == 0);
				if (c[k].user_data == 0)
					old = c[k].value;
			}
			memcpy(&after, buf, 8);
			CHECK(after == want ||
			      (fprintf(stderr, "atomic %d: word %" PRIx64 " want %" PRIx64 "\n",
				       aop, after, want),
			       0));
		}
		CHECK(old == cur ||
		      (fprintf(stderr, "atomic %d: old %" PRIx64 " want %" PRIx64 "\n", aop, old,
			       cur),
		       0));
		memcpy(ref + off, &want, 8);
	}
	em_queue_destroy(q);
	for (uint64_t off = 0; off < size; off += 1u << 20) {
		CHECK_RC(em_read(r, off, buf, 1u << 20), 0);
		CHECK(!memcmp(buf, ref + off, 1u << 20));
	}
	/* bounds and misalignment are refused before anything is sent */
	CHECK_RC(em_read(r, size - 4, buf, 8), -ERANGE);
	CHECK_RC(em_atomic(r, 4, EM_ATOMIC_FADD, 1, 0, NULL), -EINVAL);
	CHECK_RC(em_region_close(r), 0);
	em_pool_close(pool);
	free(ref);
	free(buf);
	printf("integrity: ok\n");
}

static em_region *open_or_create(em_pool *pool, const char *name, uint64_t size)
{
	em_region *r;
	int rc = em_region_create(pool, name, size, NULL, &r);

	if (rc == -EEXIST)
		rc = em_region_open(pool, name, &r);
	CHECK_RC(rc, 0);
	return r;
}

static void adds(const char *name, long n)
{
	em_pool *pool = connect_ox();
	em_region *r = open_or_create(pool, name, 1u << 20);
	em_queue *q;
	long done = 0;

	CHECK_RC(em_queue_create(pool, 64, &q), 0);
	while (done < n) {
		/* a third synchronous, the rest in batches of up to 16 */
		if (done % 3 == 0) {
			uint64_t old;
			CHECK_RC(em_atomic(r, 0, EM_ATOMIC_FADD, 1, 0, &old), 0);
			done++;
			continue;
		}
		struct em_op ops[16];
		struct em_completion c[16];
		int k = (int)(n - done < 16 ? n - done : 16), got = 0;
		for (int i = 0; i < k; i++)
			ops[i] = (struct em_op){ .opcode = EM_OP_ATOMIC,
						 .atomic_op = EM_ATOMIC_FADD,
						 .region = r,
						 .offset = 0,
						 .operand = 1,
						 .user_data = (uint64_t)i };
		CHECK_RC(em_submit(q, ops, (unsigned)k), k);
		while (got < k) {
			int m = em_wait(q, c + got, 1, (unsigned)(k - got), -1);
			CHECK(m > 0);
			got += m;
		}
		for (int i = 0; i < k; i++)
			CHECK(c[i].result == 0);
		done += k;
	}
	em_queue_destroy(q);
	em_region_close(r);
	em_pool_close(pool);
	printf("adds: %ld ok\n", n);
}

static int read_check(const char *name, uint64_t off, uint64_t expect)
{
	em_pool *pool = connect_ox();
	em_region *r;
	uint64_t v = 0;

	CHECK_RC(em_region_open(pool, name, &r), 0);
	CHECK_RC(em_read(r, off, &v, 8), 0);
	printf("%s@%" PRIu64 " = %" PRIu64 " (expect %" PRIu64 ")\n", name, off, v, expect);
	em_region_close(r);
	em_pool_close(pool);
	return v == expect ? 0 : 1;
}

static void status(uint64_t *v)
{
	em_pool *pool = connect_ox();

	CHECK_RC(em_status_raw(pool, 0, v), 0);
	em_pool_close(pool);
}

static void print_status(void)
{
	uint64_t v[EM_ST__COUNT];

	status(v);
	printf("ox rx %" PRIu64 " tx %" PRIu64 " denied %" PRIu64 " unknown %" PRIu64
	       " malformed %" PRIu64 " rtx %" PRIu64 " echo %" PRIu64 " attached %" PRIu64
	       " spoofed %" PRIu64 "\n",
	       v[EM_ST_OX_RX], v[EM_ST_OX_TX], v[EM_ST_OX_DENIED], v[EM_ST_OX_UNKNOWN],
	       v[EM_ST_OX_MALFORMED], v[EM_ST_OX_RTX], v[EM_ST_OX_ECHO], v[EM_ST_OX_ATTACHED],
	       v[EM_ST_OX_SPOOFED]);
}

/* One Get frame to dst from src, seq as given; then the caller spoils it. */
static size_t get_frame(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], uint32_t seq,
			uint64_t addr, uint8_t credit_ch, uint8_t credit)
{
	struct ox_enc e;
	struct ox_msg m = {
		.chan = OX_CH_A, .opcode = OX_A_GET, .size = 6, .addr = addr, .source = 1
	};
	struct ox_tloe h = { .seq = seq,
			     .seq_ack = OX_SEQ_MASK,
			     .ack = 1,
			     .credit_ch = credit_ch,
			     .credit = credit };

	ox_eth_write(f, dst, src, OX_ETHERTYPE_DEFAULT);
	ox_enc_begin(&e, f + OX_ETH_HLEN, 1500, false);
	CHECK(ox_enc_add(&e, &m) == 0);
	return OX_ETH_HLEN + ox_enc_finish(&e, &h);
}

static void garbage(const char *ifname)
{
	uint64_t v0[EM_ST__COUNT], v1[EM_ST__COUNT];
	em_pool *pool = connect_ox();
	struct ox_link *l;
	uint8_t f[2048], node[6], me[6], stranger[6] = { 0x02, 0x99, 0, 0, 0, 1 };
	const char *nm = getenv("EM_OX_NODE_MAC");
	unsigned m[6];
	em_region *r;
	size_t n;
	int sent_bad = 0, sent_unknown = 0;

	/* the node's MAC, which the script reads off its interface */
	CHECK(nm && sscanf(nm, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) == 6);
	for (int i = 0; i < 6; i++)
		node[i] = (uint8_t)m[i];
	CHECK_RC(em_region_create(pool, NULL, 1u << 20, NULL, &r), 0);
	CHECK_RC(em_status_raw(pool, 0, v0), 0);
	CHECK_RC(ox_link_packet_open(ifname, 0, &l), 0);
	memcpy(me, l->mac, 6);
	/* malformed, from our own (attached) MAC: counted and dropped at decode,
	 * before they reach the connection */
	n = get_frame(f, node, me, 1000, em_ox_window(r, 0), 0, 0);
	CHECK(ox_link_send(l, f, OX_ETH_HLEN + 20) == 0); /* short */
	sent_bad++;
	n = get_frame(f, node, me, 1000, em_ox_window(r, 0), 0, 0);
	f[n - 1] = 0x02; /* frame mask: a message at a data flit */
	CHECK(ox_link_send(l, f, n) == 0);
	sent_bad++;
	n = get_frame(f, node, me, 1000, em_ox_window(r, 0), 0, 0);
	/* a PutFullData of 2^15 bytes in a frame of a few flits */
	f[OX_ETH_HLEN + 8] = 0x10;
	f[OX_ETH_HLEN + 8 + 1] = (uint8_t)((f[OX_ETH_HLEN + 8 + 1] & 0xf0) | 15);
	CHECK(ox_link_send(l, f, n) == 0);
	sent_bad++;
	n = get_frame(f, node, me, 1000, em_ox_window(r, 0), 0, 0);
	CHECK(ox_link_send(l, f, n - 3) == 0); /* not whole flits */
	sent_bad++;
	n = get_frame(f, node, me, 1000, em_ox_window(r, 0), 0, 0);
	f[OX_ETH_HLEN + 8] = 0x70; /* channel 7 */
	CHECK(ox_link_send(l, f, n) == 0);
	sent_bad++;
	/* a sequence number far outside the window: dropped (NAKed) */
	n = get_frame(f, node, me, OX_SEQ_HALF + 77, em_ox_window(r, 0), 0, 0);
	CHECK(ox_link_send(l, f, n) == 0);
	/* a stranger's well-formed Get: dropped, counted, no state kept */
	for (int i = 0; i < 5; i++) {
		n = get_frame(f, node, stranger, (uint32_t)i, 0, 0, 0);
		CHECK(ox_link_send(l, f, n) == 0);
		sent_unknown++;
	}
	ox_link_flush(l);
	ox_link_close(l);
	usleep(100000);
	/* the node keeps serving: a new session from this MAC works */
	em_region_close(r);
	em_pool_close(pool);
	pool = connect_ox();
	CHECK_RC(em_region_create(pool, NULL, 1u << 20, NULL, &r), 0);
	for (int i = 0; i < 200; i++) {
		uint8_t w[512], g[512];
		for (int k = 0; k < 512; k++)
			w[k] = (uint8_t)(i * 7 + k);
		CHECK_RC(em_write(r, (uint64_t)i * 512, w, sizeof(w)), 0);
		CHECK_RC(em_read(r, (uint64_t)i * 512, g, sizeof(g)), 0);
		CHECK(!memcmp(w, g, sizeof(w)));
	}
	CHECK_RC(em_status_raw(pool, 0, v1), 0);
	printf("garbage: malformed %" PRIu64 " -> %" PRIu64 " (sent %d), unknown %" PRIu64
	       " -> %" PRIu64 " (sent %d)\n",
	       v0[EM_ST_OX_MALFORMED], v1[EM_ST_OX_MALFORMED], sent_bad, v0[EM_ST_OX_UNKNOWN],
	       v1[EM_ST_OX_UNKNOWN], sent_unknown);
	CHECK(v1[EM_ST_OX_MALFORMED] - v0[EM_ST_OX_MALFORMED] >= (uint64_t)sent_bad);
	CHECK(v1[EM_ST_OX_UNKNOWN] - v0[EM_ST_OX_UNKNOWN] >= (uint64_t)sent_unknown);
	em_region_close(r);
	em_pool_close(pool);
	printf("garbage: ok\n");
}

static bool mac_parse(const char *s, uint8_t mac[6])
{
	unsigned m[6];

	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6)
		return false;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)m[i];
	return true;
}

#define VICTIM_BYTE 0xC3
#define VICTIM_SIZE (1u << 20)

static int victim(const char *dir)
{
	uint64_t v0[EM_ST__COUNT], vg[EM_ST__COUNT], v1[EM_ST__COUNT];
	static uint8_t buf[VICTIM_SIZE];
	em_pool *pool = connect_ox();
	char path[512];
	em_region *r;
	FILE *f;
	int ok = 1;

	CHECK_RC(em_region_create(pool, NULL, VICTIM_SIZE, NULL, &r), 0);
	memset(buf, VICTIM_BYTE, sizeof(buf));
	CHECK_RC(em_write(r, 0, buf, sizeof(buf)), 0);
	CHECK(em_ox_window(r, 0) != 0);
	/* the acknowledgement of our last response is on its way to the node,
	 * which counts it in its own thread: the attack starts (base written)
	 * only once the node's count stood still for 100 ms, so that every
	 * frame it takes in from here on is the attacker's */
	CHECK_RC(em_status_raw(pool, 0, v0), 0);
	for (int i = 0; i < 100; i++) {
		usleep(100000);
		CHECK_RC(em_status_raw(pool, 0, vg), 0);
		if (vg[EM_ST_OX_RX] == v0[EM_ST_OX_RX])
			break;
		memcpy(v0, vg, sizeof(v0));
	}
	snprintf(path, sizeof(path), "%s/base", dir);
	CHECK((f = fopen(path, "w")) != NULL);
	fprintf(f, "0x%" PRIx64 "\n", em_ox_window(r, 0));
	fclose(f);
	printf("victim: window at 0x%" PRIx64 "\n", em_ox_window(r, 0));
	fflush(stdout);
	snprintf(path, sizeof(path), "%s/go", dir);
	for (int i = 0; i < 6000 && access(path, F_OK); i++)
		usleep(10000);
	CHECK(access(path, F_OK) == 0);
	/* we sent nothing meanwhile: every OmniXtend frame the node took in
	 * was the attacker's */
	CHECK_RC(em_status_raw(pool, 0, vg), 0);
	printf("victim: during the attack the node received %" PRIu64 " frames, %" PRIu64
	       " counted as spoofed\n",
	       vg[EM_ST_OX_RX] - v0[EM_ST_OX_RX], vg[EM_ST_OX_SPOOFED] - v0[EM_ST_OX_SPOOFED]);
	/* the attack is over: the data are ours, and the link still serves */
	memset(buf, 0, sizeof(buf));
	CHECK_RC(em_read(r, 0, buf, sizeof(buf)), 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		if (buf[i] != VICTIM_BYTE) {
			printf("victim: byte %zu is 0x%02x\n", i, buf[i]);
			ok = 0;
			break;
		}
	for (int i = 0; i < 100; i++) {
		uint8_t w[4096], g[4096];
		for (int k = 0; k < 4096; k++)
			w[k] = (uint8_t)(i * 13 + k);
		CHECK_RC(em_write(r, (uint64_t)i * 4096, w, sizeof(w)), 0);
		CHECK_RC(em_read(r, (uint64_t)i * 4096, g, sizeof(g)), 0);
		CHECK(!memcmp(w, g, sizeof(w)));
	}
	CHECK_RC(em_status_raw(pool, 0, v1), 0);
	printf("victim: data %s; spoofed %" PRIu64 " unknown %" PRIu64 " denied %" PRIu64 "\n",
	       ok ? "unchanged" : "CHANGED", v1[EM_ST_OX_SPOOFED] - v0[EM_ST_OX_SPOOFED],
	       v1[EM_ST_OX_UNKNOWN] - v0[EM_ST_OX_UNKNOWN],
	       v1[EM_ST_OX_DENIED] - v0[EM_ST_OX_DENIED]);
	em_region_close(r);
	em_pool_close(pool);
	return ok ? 0 : 1;
}

/* One frame from src: a Get of 1 KiB and a Put of 1 KiB of 0xEE at addr. */
static size_t spoof_frame(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], uint32_t seq,
			  uint8_t type, uint64_t addr)
{
	static uint8_t junk[1024];
	struct ox_enc e;
	struct ox_msg get = { .chan = OX_CH_A, .opcode = OX_A_GET, .size = 10, .addr = addr };
	struct ox_msg put = {
		.chan = OX_CH_A, .opcode = OX_A_PUTFULL, .size = 10, .addr = addr, .source = 1
	};
	struct ox_tloe h = { .type = type, .seq = seq, .seq_ack = OX_SEQ_MASK, .ack = 1 };

	memset(junk, 0xEE, sizeof(junk));
	put.data = junk;
	ox_eth_write(f, dst, src, OX_ETHERTYPE_DEFAULT);
	ox_enc_begin(&e, f + OX_ETH_HLEN, 1500, false);
	CHECK(ox_enc_add(&e, &get) == 0);
	CHECK(ox_enc_add(&e, &put) == 0);
	return OX_ETH_HLEN + ox_enc_finish(&e, &h);
}

/* Frames the attacker's interface sees: does any hold 16 bytes of the
 * victim's data in a row? */
static unsigned leaks(struct ox_link *l, uint64_t *frames)
{
	uint8_t f[10000];
	unsigned n = 0;
	int len;

	while ((len = ox_link_recv(l, f, sizeof(f))) > 0) {
		int run = 0;
		(*frames)++;
		for (int i = 0; i < len; i++) {
			run = f[i] == VICTIM_BYTE ? run + 1 : 0;
			if (run == 16) {
				n++;
				break;
			}
		}
	}
	return n;
}

static int spoof(const char *ifname, const char *node_s, const char *victim_s, const char *base_s,
		 const char *mode)
{
	uint8_t node[6], vic[6], f[2048];
	uint64_t base = strtoull(base_s, NULL, 0), guess, seen = 0, sent = 0;
	uint64_t addrs[3];
	bool sweep = !strcmp(mode, "sweep");
	struct ox_link *l;
	unsigned leaked = 0;
	size_t n;

	CHECK(mac_parse(node_s, node) && mac_parse(victim_s, vic));
	CHECK(sweep || !strcmp(mode, "blind"));
	CHECK_RC(ox_link_packet_open(ifname, 0, &l), 0);
	em_random(&guess, sizeof(guess));
	addrs[0] = base;
	addrs[1] = 1ull << 42;                  /* handle 1's window, once */
	addrs[2] = guess & ~((1ull << 16) - 1); /* a guess at a random base */
	for (int a = 0; a < 3; a++) {
		/* an open, as a peer that restarted would send it */
		n = spoof_frame(f, node, vic, 0, OX_T_OPEN, addrs[a]);
		while (ox_link_send(l, f, n) == -EAGAIN)
			ox_link_flush(l);
		sent++;
		for (uint32_t k = 0; k < (sweep ? 4096u : 64u); k++) {
			/* blind: as far from any sequence state as it gets */
			uint32_t seq = sweep ? k : OX_SEQ_HALF + k * 977;
			n = spoof_frame(f, node, vic, seq, OX_T_NORMAL, addrs[a] + 1024 * (k % 8));
			while (ox_link_send(l, f, n) == -EAGAIN) {
				ox_link_flush(l);
				leaked += leaks(l, &seen);
			}
			sent++;
			/* paced, so that the node's receive ring does not overflow
			 * even in a sanitizer build on a loaded machine: the test
			 * wants the frames judged, not lost */
			if (k % 16 == 15) {
				ox_link_flush(l);
				usleep(2000);
			}
		}
		ox_link_flush(l);
		leaked += leaks(l, &seen);
	}
	/* answers, if any came, come within a few retransmission timeouts */
	for (int i = 0; i < 50; i++) {
		usleep(10000);
		leaked += leaks(l, &seen);
	}
	ox_link_close(l);
	printf("spoof: sent %" PRIu64 " frames as the victim, saw %" PRIu64 ", %u with its data\n",
	       sent, seen, leaked);
	return leaked ? 1 : 0;
}

static void bw(uint64_t size, unsigned qd, uint64_t mib)
{
	em_pool *pool = connect_ox();
	uint64_t rsize = 64u << 20, total = mib << 20, moved = 0, issued = 0, t0, s = 1;
	uint8_t *bufs = malloc(size * qd);
	em_region *r;
	em_queue *q;

	CHECK(bufs);
	CHECK_RC(em_region_create(pool, NULL, rsize, NULL, &r), 0);
	CHECK_RC(em_queue_create(pool, qd, &q), 0);
	t0 = ox_now_ns();
	while (moved < total) {
		struct em_completion c[64];
		int n;
		while (issued - moved < size * qd && issued < total) {
			struct em_op op = { .opcode = EM_OP_READ,
					    .region = r,
					    .offset = (rnd(&s) % (rsize / size)) * size,
					    .buf = bufs + ((issued / size) % qd) * size,
					    .len = size };
			CHECK_RC(em_submit(q, &op, 1), 1);
			issued += size;
		}
		n = em_wait(q, c, 1, 64, -1);
		CHECK(n > 0);
		for (int i = 0; i < n; i++)
			CHECK(c[i].result == 0);
		moved += size * (unsigned)n;
	}
	printf("bw %" PRIu64 " qd %u: %.3f GB/s\n", size, qd,
	       (double)moved / (double)(ox_now_ns() - t0));
	em_queue_destroy(q);
	em_region_close(r);
	em_pool_close(pool);
	free(bufs);
}

struct thr {
	em_region *r;
	int id;
	int bad;
};

static void *thr_main(void *arg)
{
	struct thr *t = arg;
	uint64_t s = (uint64_t)t->id * 7919 + 3;
	em_queue *q;
	uint8_t w[8192], g[8192];

	if (em_queue_create(em_region_pool(t->r), 16, &q)) {
		t->bad++;
		return NULL;
	}
	for (int i = 0; i < 300; i++) {
		uint64_t len = 1 + rnd(&s) % sizeof(w),
			 off = (uint64_t)t->id * (1u << 20) + rnd(&s) % ((1u << 20) - len);
		struct em_op ops[3] = {
			{ .opcode = EM_OP_WRITE,
			  .region = t->r,
			  .offset = off,
			  .buf = w,
			  .len = len },
			{ .opcode = EM_OP_READ,
			  .region = t->r,
			  .offset = off,
			  .buf = g,
			  .len = len },
			{ .opcode = EM_OP_ATOMIC,
			  .atomic_op = EM_ATOMIC_FADD,
			  .region = t->r,
			  .offset = 8u << 20,
			  .operand = 1 },
		};
		struct em_completion c[3];
		int got = 0;
		for (uint64_t k = 0; k < len; k++)
			w[k] = (uint8_t)rnd(&s);
		if (em_submit(q, ops, 3) != 3) {
			t->bad++;
			break;
		}
		while (got < 3) {
			int n = em_wait(q, c + got, 1, (unsigned)(3 - got), -1);
			if (n <= 0) {
				t->bad++;
				break;
			}
			got += n;
		}
		for (int k = 0; k < got; k++)
			t->bad += c[k].result != 0;
		t->bad += memcmp(w, g, len) != 0;
		/* and the pool's default queue from this thread too */
		if (i % 10 == 0)
			t->bad += em_atomic(t->r, 8u << 20, EM_ATOMIC_FADD, 1, 0, NULL) != 0;
	}
	em_queue_destroy(q);
	return NULL;
}

static int threads(int n)
{
	em_pool *pool = connect_ox();
	struct thr t[16];
	pthread_t th[16];
	uint64_t v = 0;
	em_region *r;
	int bad = 0;

	CHECK(n >= 1 && n <= 16);
	CHECK_RC(em_region_create(pool, NULL, 9u << 20, NULL, &r), 0);
	for (int i = 0; i < n; i++) {
		t[i] = (struct thr){ .r = r, .id = i };
		CHECK(pthread_create(&th[i], NULL, thr_main, &t[i]) == 0);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		bad += t[i].bad;
	}
	CHECK_RC(em_read(r, 8u << 20, &v, 8), 0);
	printf("threads: %d bad, counter %" PRIu64 " (expect %d)\n", bad, v, n * 330);
	em_region_close(r);
	em_pool_close(pool);
	return bad || v != (uint64_t)n * 330 ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *role = argc > 1 ? argv[1] : "";

	if (!strcmp(role, "integrity") && argc == 3)
		integrity(strtoull(argv[2], NULL, 0));
	else if (!strcmp(role, "adds") && argc == 4)
		adds(argv[2], atol(argv[3]));
	else if (!strcmp(role, "read") && argc == 5)
		return read_check(argv[2], strtoull(argv[3], NULL, 0), strtoull(argv[4], NULL, 0));
	else if (!strcmp(role, "create") && argc == 4) {
		em_pool *pool = connect_ox();
		uint64_t size;
		em_region *r;
		CHECK_RC(em_parse_size(argv[3], &size), 0);
		CHECK_RC(em_region_create(pool, argv[2], size, NULL, &r), 0);
		em_region_close(r);
		em_pool_close(pool);
	} else if (!strcmp(role, "garbage") && argc == 3)
		garbage(argv[2]);
	else if (!strcmp(role, "bw") && argc == 5)
		bw(strtoull(argv[2], NULL, 0), (unsigned)atoi(argv[3]), strtoull(argv[4], NULL, 0));
	else if (!strcmp(role, "threads") && argc == 3)
		return threads(atoi(argv[2]));
	else if (!strcmp(role, "victim") && argc == 3)
		return victim(argv[2]);
	else if (!strcmp(role, "spoof") && argc == 7)
		return spoof(argv[2], argv[3], argv[4], argv[5], argv[6]);
	else if (!strcmp(role, "status") && argc == 2)
		print_status();
	else {
		fprintf(stderr, "usage: see the comment at the top of em_ox_client.c\n");
		return 2;
	}
	return 0;
}
