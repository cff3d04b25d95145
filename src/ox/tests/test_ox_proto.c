/*
 * test_ox_proto.c - the endpoint and requesters wired together over the
 * in-memory hub, with and without the fault injector.
 *
 * For both protocol modes and for loss (1%, 5%), reordering, duplication
 * and delay on every link in both directions: each requester writes random
 * ranges and reads them back (data must compare equal), and all of them
 * hammer one counter with atomic ADDs; the counter must end exact and every
 * old value returned must be distinct, which catches any request executed
 * twice or lost.  Every op's callback must run exactly once.  Then the
 * edges: denied accesses, unknown MACs, malformed frames, credit overflow,
 * every atomic kind on every width, PutPartialData, the verbatim byte order,
 * and that idle peers fall silent (an idle requester owes the node nothing;
 * a bound one silent past the give-up threshold is served when it comes
 * back).  Some loads run with every requester bound
 * and tagging its frames (authenticated mode), where a frame with a wrong
 * tag or a sequence number far from the peer's is dropped and counted.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ox/conn.h"

#include "harness.h"

#define BASE 0x4000000000ull
#define MEMSZ (1u << 20)
#define NRQ 3
#define SLICE (MEMSZ / 4)
#define CHUNK 8192
#define INFLIGHT 16
#define COUNTER (MEMSZ - 64)

static uint64_t rng = 88172645463325252ull;
static bool g_tagged;    /* world_init binds each requester with tag keys */
static unsigned g_burst; /* world_init gives requesters this max_burst_log2 */
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* A hand-made frame's Ethernet header and TLoE header, as a peer that does
 * not use our conn would write them; the rest of the frame is the caller's. */
static void frame_head(uint8_t *f, const uint8_t dst[6], const uint8_t src[6],
		       const struct ox_tloe *h)
{
	uint64_t hv = __builtin_bswap64(ox_tloe_pack(h));
	if (dst)
		ox_eth_write(f, dst, src, OX_ETHERTYPE_DEFAULT);
	memcpy(f + OX_ETH_HLEN, &hv, 8);
}

/* The same with messages: the encoder writes the TLoE header and mask.
 * cap is the whole buffer's size. Returns the frame's length, or 0 if the
 * message does not fit. */
static size_t frame_msgs(uint8_t *f, size_t cap, const uint8_t dst[6], const uint8_t src[6],
			 const struct ox_tloe *h, const struct ox_msg *m)
{
	struct ox_enc e;
	ox_eth_write(f, dst, src, OX_ETHERTYPE_DEFAULT);
	ox_enc_begin(&e, f + OX_ETH_HLEN, cap - OX_ETH_HLEN, false);
	if (m && ox_enc_add(&e, m))
		return 0;
	return OX_ETH_HLEN + ox_enc_finish(&e, h);
}

struct world {
	struct ox_hub *hub;
	struct ox_link *ep_raw, *ep_link, *rq_raw[NRQ], *rq_link[NRQ];
	struct ox_endpoint *ep;
	struct ox_requester *rq[NRQ];
	uint8_t *mem;
	int win[NRQ];
	bool verbatim;
};

static void pump(struct world *w, int n, unsigned *busy_until_zero, uint64_t timeout_ns)
{
	uint64_t t0 = ox_now_ns();
	for (;;) {
		uint64_t now = ox_now_ns();
		ox_endpoint_poll(w->ep, now, 64);
		unsigned busy = 0;
		for (int i = 0; i < n; i++) {
			if (!w->rq[i])
				continue;
			ox_requester_poll(w->rq[i], now);
			busy += ox_requester_busy(w->rq[i]);
		}
		if (busy_until_zero && !busy && !*busy_until_zero)
			return;
		if (now - t0 > timeout_ns)
			return;
	}
}

static int world_init(struct world *w, enum ox_mode mode, bool verbatim, unsigned mtu,
		      const struct ox_fault_cfg *fc)
{
	memset(w, 0, sizeof(*w));
	w->verbatim = verbatim;
	w->mem = aligned_alloc(4096, MEMSZ);
	memset(w->mem, 0, MEMSZ);
	if (ox_hub_create(&w->hub))
		return -1;
	struct ox_opts o = { .mode = mode, .verbatim = verbatim, .rto_ns = 300000 };
	ox_hub_port(w->hub, 0x10, mtu, &w->ep_raw);
	w->ep_link = w->ep_raw;
	if (fc) {
		struct ox_fault_cfg c = *fc;
		c.seed = fc->seed * 31 + 1;
		ox_link_faulty(w->ep_raw, &c, &w->ep_link);
	}
	if (ox_endpoint_create(&o, w->ep_link, &w->ep))
		return -1;
	for (int i = 0; i < NRQ; i++) {
		ox_hub_port(w->hub, (uint8_t)(0x20 + i), mtu, &w->rq_raw[i]);
		w->rq_link[i] = w->rq_raw[i];
		if (fc) {
			struct ox_fault_cfg c = *fc;
			c.seed = fc->seed * 7 + (uint64_t)i;
			ox_link_faulty(w->rq_raw[i], &c, &w->rq_link[i]);
		}
		struct ox_window win = { .base = BASE, .len = MEMSZ, .mem = w->mem };
		memcpy(win.mac, w->rq_raw[i]->mac, 6);
		w->win[i] = ox_endpoint_add_window(w->ep, &win);
		struct ox_opts ro = o;
		ro.max_burst_log2 = g_burst;
		if (g_tagged) {
			uint8_t secret[32], tx[OX_TAG_KEYLEN], rx[OX_TAG_KEYLEN];
			memset(secret, 0x40 + i, sizeof(secret));
			ox_tag_keys(secret, sizeof(secret), true, tx, rx);
			CHECK(ox_endpoint_bind(w->ep, w->rq_raw[i]->mac, tx, rx) == 0);
			ro.bound = ro.tag = true;
			ox_tag_keys(secret, sizeof(secret), false, ro.tag_tx, ro.tag_rx);
		}
		if (w->win[i] < 0 ||
		    ox_requester_create(&ro, w->rq_link[i], w->ep_raw->mac, &w->rq[i]))
			return -1;
	}
	return 0;
}

static void world_fini(struct world *w)
{
	for (int i = 0; i < NRQ; i++) {
		ox_requester_destroy(w->rq[i]);
		if (w->rq_link[i] != w->rq_raw[i])
			ox_link_close(w->rq_link[i]);
	}
	ox_endpoint_destroy(w->ep);
	if (w->ep_link != w->ep_raw)
		ox_link_close(w->ep_link);
	ox_hub_destroy(w->hub);
	free(w->mem);
}

/* ------------------------------------------------ the randomized workload */

struct job {
	struct ox_op op;
	int rq, slot, phase, calls;
	size_t off, len;
	uint8_t *src, *dst;
	struct load *ld;
};

struct load {
	struct world *w;
	struct job job[NRQ][INFLIGHT];
	unsigned left[NRQ]; /* read-back pairs still to start */
	unsigned adds_left[NRQ];
	struct ox_op add[NRQ][8];
	int add_calls[NRQ][8];
	uint8_t *seen; /* one byte per old counter value */
	unsigned total_adds, bad, outstanding;
};

static void job_start(struct load *ld, struct job *j);

static void job_cb(struct ox_op *op)
{
	struct job *j = op->user;
	struct load *ld = j->ld;
	j->calls++;
	if (op->status == -ECONNRESET)
		return; /* aborted at teardown after a failure: start nothing */
	if (op->status) {
		fprintf(stderr, "op status %d\n", op->status);
		ld->bad++;
	}
	if (j->phase == 0) {
		/* write done: read the same range back */
		j->phase = 1;
		j->calls = 0;
		memset(j->dst, 0xCC, j->len);
		j->op = (struct ox_op){ .kind = OX_OP_GET,
					.addr = j->op.addr,
					.buf = j->dst,
					.len = j->len,
					.cb = job_cb,
					.user = j };
		if (ox_requester_submit(ld->w->rq[j->rq], &j->op))
			ld->bad++;
		return;
	}
	if (memcmp(j->src, j->dst, j->len) || memcmp(j->src, ld->w->mem + j->off, j->len)) {
		fprintf(stderr, "data mismatch rq %d off %zu len %zu\n", j->rq, j->off, j->len);
		ld->bad++;
	}
	ld->outstanding--;
	job_start(ld, j);
}

static void job_start(struct load *ld, struct job *j)
{
	if (!ld->left[j->rq])
		return;
	ld->left[j->rq]--;
	ld->outstanding++;
	/* each slot owns one chunk of its requester's slice: ranges in flight never overlap */
	size_t chunk = (size_t)j->rq * SLICE + (size_t)j->slot * CHUNK;
	j->len = 1 + rnd() % (rnd() % 4 ? 600 : CHUNK);
	j->off = chunk + rnd() % (CHUNK - j->len + 1);
	for (size_t i = 0; i < j->len; i++)
		j->src[i] = (uint8_t)rnd();
	j->phase = 0;
	j->calls = 0;
	j->op = (struct ox_op){ .kind = OX_OP_PUT,
				.addr = BASE + j->off,
				.buf = j->src,
				.len = j->len,
				.cb = job_cb,
				.user = j };
	if (ox_requester_submit(ld->w->rq[j->rq], &j->op))
		ld->bad++;
}

static struct load *g_ld;
static int rq_of(struct ox_op *op)
{
	for (int r = 0; r < NRQ; r++)
		if (op >= g_ld->add[r] && op < g_ld->add[r] + 8)
			return r;
	return -1;
}

static void add_cb(struct ox_op *op)
{
	struct load *ld = op->user;
	int rq = rq_of(op);
	if (op->status == -ECONNRESET)
		return;
	if (op->status || op->result >= ld->total_adds || ld->seen[op->result]++) {
		fprintf(stderr, "atomic status %d old %llu\n", op->status,
			(unsigned long long)op->result);
		ld->bad++;
	}
	ld->outstanding--;
	if (rq >= 0 && ld->adds_left[rq]) {
		ld->adds_left[rq]--;
		ld->outstanding++;
		*op = (struct ox_op){ .kind = OX_OP_ARITH,
				      .param = OX_ADD,
				      .addr = BASE + COUNTER,
				      .len = 8,
				      .operand = 1,
				      .cb = add_cb,
				      .user = ld };
		if (ox_requester_submit(ld->w->rq[rq], op))
			ld->bad++;
	}
}

static void run_load(const char *name, enum ox_mode mode, bool verbatim, unsigned mtu,
		     const struct ox_fault_cfg *fc, unsigned pairs, unsigned adds)
{
	struct world w;
	if (world_init(&w, mode, verbatim, mtu, fc)) {
		CHECK(!"world_init");
		return;
	}
	struct load *ld = calloc(1, sizeof(*ld));
	g_ld = ld;
	ld->w = &w;
	ld->total_adds = adds * NRQ;
	ld->seen = calloc(ld->total_adds + 1, 1);
	uint64_t t0 = ox_now_ns();
	for (int r = 0; r < NRQ; r++) {
		ld->left[r] = pairs;
		ld->adds_left[r] = adds;
		for (int s = 0; s < INFLIGHT; s++) {
			struct job *j = &ld->job[r][s];
			j->rq = r;
			j->slot = s;
			j->ld = ld;
			j->src = malloc(CHUNK);
			j->dst = malloc(CHUNK);
			job_start(ld, j);
		}
		for (int k = 0; k < 8 && ld->adds_left[r]; k++) {
			ld->adds_left[r]--;
			ld->outstanding++;
			ld->add[r][k] = (struct ox_op){ .kind = OX_OP_ARITH,
							.param = OX_ADD,
							.addr = BASE + COUNTER,
							.len = 8,
							.operand = 1,
							.cb = add_cb,
							.user = ld };
			if (ox_requester_submit(w.rq[r], &ld->add[r][k]))
				ld->bad++;
		}
	}
	unsigned zero = 0;
	pump(&w, NRQ, &zero,
	     60000000000ull); /* returns when all is done; the bound is for a loaded machine */
	uint64_t el = ox_now_ns() - t0;
	uint64_t counter;
	memcpy(&counter, w.mem + COUNTER, 8);
	struct ox_stats es, rs = { 0 };
	ox_endpoint_stats(w.ep, &es);
	for (int r = 0; r < NRQ; r++) {
		struct ox_stats s;
		ox_requester_stats(w.rq[r], &s);
		rs.rtx_frames += s.rtx_frames;
		rs.timeouts += s.timeouts;
		rs.naks_rx += s.naks_rx;
		rs.stale += s.stale;
		rs.dup += s.dup;
		rs.rej[OX_REJ_TAG] += s.rej[OX_REJ_TAG];
		rs.rej[OX_REJ_SEQ] += s.rej[OX_REJ_SEQ];
		CHECK(ox_requester_busy(w.rq[r]) == 0);
	}
	printf("%-22s %6.1f ms  ep rx %llu tx %llu rtx %llu to %llu nak %llu dup %llu ooo %llu | rq rtx %llu to %llu\n",
	       name, el / 1e6, (unsigned long long)es.rx_frames, (unsigned long long)es.tx_frames,
	       (unsigned long long)es.rtx_frames, (unsigned long long)es.timeouts,
	       (unsigned long long)es.naks_tx, (unsigned long long)es.dup,
	       (unsigned long long)es.ooo, (unsigned long long)rs.rtx_frames,
	       (unsigned long long)rs.timeouts);
	if (ld->outstanding) {
		ox_endpoint_dump(w.ep);
		for (int r = 0; r < NRQ; r++)
			ox_requester_dump(w.rq[r]);
		struct ox_stats a, b;
		ox_endpoint_stats(w.ep, &a);
		fprintf(stderr,
			"ep rx_msgs %llu tx_msgs %llu overrun %llu unsupp %llu denied %llu\n",
			(unsigned long long)a.rx_msgs, (unsigned long long)a.tx_msgs,
			(unsigned long long)a.overrun, (unsigned long long)a.unsupported,
			(unsigned long long)a.denied);
		for (int r = 0; r < NRQ; r++) {
			ox_requester_stats(w.rq[r], &b);
			fprintf(stderr, "rq%d rx_msgs %llu tx_msgs %llu stale %llu\n", r,
				(unsigned long long)b.rx_msgs, (unsigned long long)b.tx_msgs,
				(unsigned long long)b.stale);
		}
	}
	CHECK(ld->outstanding == 0);
	CHECK(ld->bad == 0);
	CHECK(counter == ld->total_adds);
	CHECK(es.atomics == ld->total_adds);
	CHECK(rs.stale == 0);
	/* loss, duplication, reordering and delay never make an honest
	 * frame look forged */
	CHECK(es.rej[OX_REJ_TAG] + es.rej[OX_REJ_SEQ] + rs.rej[OX_REJ_TAG] + rs.rej[OX_REJ_SEQ] ==
	      0);
	for (int r = 0; r < NRQ; r++)
		for (int s = 0; s < INFLIGHT; s++) {
			CHECK(ld->job[r][s].calls == 1);
			free(ld->job[r][s].src);
			free(ld->job[r][s].dst);
		}
	if (fc) {
		struct ox_fault_stats f;
		ox_link_faulty_stats(w.ep_link, &f);
		if (fc->drop_pct)
			CHECK(f.dropped > 0);
	}

	/* idle peers fall silent once everything is acknowledged */
	pump(&w, NRQ, NULL, 30000000);
	ox_endpoint_stats(w.ep, &es);
	uint64_t before = es.tx_frames;
	pump(&w, NRQ, NULL, 20000000);
	ox_endpoint_stats(w.ep, &es);
	CHECK(es.tx_frames == before);
	free(ld->seen);
	free(ld);
	world_fini(&w);
}

/* ------------------------------------------------------------ edge cases */

static int wait_op(struct world *w, struct ox_op *op, int rq)
{
	uint64_t t0 = ox_now_ns(), lim = rq < 0 ? 50000000ull : 2000000000ull;
	while (!op->done && ox_now_ns() - t0 < lim) {
		uint64_t now = ox_now_ns();
		ox_endpoint_poll(w->ep, now, 64);
		for (int i = 0; i < NRQ; i++)
			if (w->rq[i])
				ox_requester_poll(w->rq[i], now);
	}
	(void)rq;
	return op->done ? op->status : -ETIMEDOUT;
}

/* ------------------------------------------------------- jumbo bursts */

/* Large bursts where the MTU carries them and the requester was told the
 * node serves them; 8 KiB otherwise.  Counts response frames to see which
 * burst was used, and checks every byte, clean and under loss. */
static void jumbo_case(unsigned mtu, unsigned burst, const struct ox_fault_cfg *fc,
		       unsigned want_frames)
{
	struct world w;
	g_burst = burst;
	int e = world_init(&w, OX_MODE_11, false, mtu, fc);
	g_burst = 0;
	if (e) {
		CHECK(!"world_init");
		return;
	}
	size_t len = 256u << 10;
	uint8_t *src = malloc(len), *dst = malloc(len);
	for (int round = 0; round < 4; round++) {
		for (size_t i = 0; i < len; i++)
			src[i] = (uint8_t)rnd();
		memset(dst, 0xCC, len);
		/* an unaligned start: a small burst first, then large ones */
		size_t off = round ? 4096 * (size_t)round + 8 : 0, n = len - off;
		struct ox_op put = { .kind = OX_OP_PUT, .addr = BASE + off, .buf = src, .len = n };
		CHECK(ox_requester_submit(w.rq[0], &put) == 0);
		CHECK(wait_op(&w, &put, 0) == 0);
		CHECK(memcmp(w.mem + off, src, n) == 0);
		struct ox_stats a, b;
		ox_requester_stats(w.rq[0], &a);
		struct ox_op get = { .kind = OX_OP_GET, .addr = BASE + off, .buf = dst, .len = n };
		CHECK(ox_requester_submit(w.rq[0], &get) == 0);
		CHECK(wait_op(&w, &get, 0) == 0);
		CHECK(memcmp(dst, src, n) == 0);
		ox_requester_stats(w.rq[0], &b);
		/* a whole aligned read without loss: one frame per burst (acks may
		 * ride on them or come alone, so a few more) */
		if (!round && !fc &&
		    (b.rx_frames - a.rx_frames < want_frames ||
		     b.rx_frames - a.rx_frames > want_frames + 8)) {
			fprintf(stderr, "mtu %u burst %u: %llu frames for 256 KiB, want %u\n", mtu,
				burst, (unsigned long long)(b.rx_frames - a.rx_frames),
				want_frames);
			CHECK(!"burst size");
		}
	}
	free(src);
	free(dst);
	world_fini(&w);
}

static void test_jumbo(void)
{
	struct ox_fault_cfg loss = { .seed = 11, .drop_pct = 3, .reorder_pct = 2, .dup_pct = 2 };
	jumbo_case(33000, OX_MAX_SIZE_LOG2, NULL, 8);  /* 32 KiB bursts */
	jumbo_case(20000, OX_MAX_SIZE_LOG2, NULL, 16); /* the MTU allows 16 KiB */
	jumbo_case(33000, 0, NULL, 32);                /* not told: 8 KiB */
	jumbo_case(9000, OX_MAX_SIZE_LOG2, NULL, 32);  /* standard MTU: 8 KiB */
	jumbo_case(33000, OX_MAX_SIZE_LOG2, &loss, 0); /* go-back-N with big frames */
}

static uint64_t amo(struct world *w, enum ox_op_kind k, unsigned param, unsigned len, uint64_t off,
		    uint64_t operand, int *st)
{
	struct ox_op op = { .kind = k,
			    .param = (uint8_t)param,
			    .addr = BASE + off,
			    .len = len,
			    .operand = operand };
	CHECK(ox_requester_submit(w->rq[0], &op) == 0);
	*st = wait_op(w, &op, 0);
	return op.result;
}

static void test_atomics(struct world *w)
{
	static const struct {
		enum ox_op_kind k;
		unsigned p;
	} ops[] = {
		{ OX_OP_ARITH, OX_MIN },  { OX_OP_ARITH, OX_MAX }, { OX_OP_ARITH, OX_MINU },
		{ OX_OP_ARITH, OX_MAXU }, { OX_OP_ARITH, OX_ADD }, { OX_OP_LOGIC, OX_XOR },
		{ OX_OP_LOGIC, OX_OR },   { OX_OP_LOGIC, OX_AND }, { OX_OP_LOGIC, OX_SWAP },
	};
	for (unsigned lg = 0; lg <= 3; lg++) {
		unsigned n = 1u << lg;
		uint64_t m = n == 8 ? ~0ull : (1ull << (8 * n)) - 1;
		for (unsigned i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
			for (int trial = 0; trial < 6; trial++) {
				uint64_t off =
					0x1000 + 8 * (uint64_t)(rnd() % 16) + n * (rnd() % (8 / n));
				uint64_t a = rnd() & m, b = rnd() & m;
				if (trial & 1)
					b = (a ^ (1ull << (8 * n - 1))) & m; /* signs differ */
				memcpy(w->mem + off, &a, n);
				int st;
				uint64_t old = amo(w, ops[i].k, ops[i].p, n, off, b, &st);
				uint64_t now = 0;
				memcpy(&now, w->mem + off, n);
				int64_t sa = (int64_t)(a << (64 - 8 * n)) >> (64 - 8 * n);
				int64_t sb = (int64_t)(b << (64 - 8 * n)) >> (64 - 8 * n);
				uint64_t want = 0;
				switch (ops[i].k == OX_OP_LOGIC ? 10 + ops[i].p : ops[i].p) {
				case OX_MIN:
					want = sb < sa ? b : a;
					break;
				case OX_MAX:
					want = sb > sa ? b : a;
					break;
				case OX_MINU:
					want = b < a ? b : a;
					break;
				case OX_MAXU:
					want = b > a ? b : a;
					break;
				case OX_ADD:
					want = (a + b) & m;
					break;
				case 10 + OX_XOR:
					want = a ^ b;
					break;
				case 10 + OX_OR:
					want = a | b;
					break;
				case 10 + OX_AND:
					want = a & b;
					break;
				case 10 + OX_SWAP:
					want = b;
					break;
				}
				CHECK(st == 0);
				CHECK(old == a);
				if (now != want)
					fprintf(stderr,
						"amo k%d p%u n%u a %llx b %llx got %llx want %llx\n",
						ops[i].k, ops[i].p, n, (unsigned long long)a,
						(unsigned long long)b, (unsigned long long)now,
						(unsigned long long)want);
				CHECK(now == want);
			}
		}
	}
}

static void test_denied(struct world *w)
{
	uint8_t buf[256];
	struct ox_op op = { .kind = OX_OP_GET, .addr = BASE - 64, .buf = buf, .len = 64 };
	CHECK(ox_requester_submit(w->rq[0], &op) == 0);
	CHECK(wait_op(w, &op, 0) == -EACCES);
	op = (struct ox_op){ .kind = OX_OP_PUT, .addr = BASE + MEMSZ - 64, .buf = buf, .len = 128 };
	CHECK(ox_requester_submit(w->rq[0], &op) == 0);
	CHECK(wait_op(w, &op, 0) == -EACCES); /* second half falls outside */
	op = (struct ox_op){
		.kind = OX_OP_ARITH, .param = OX_ADD, .addr = BASE + MEMSZ, .len = 8, .operand = 1
	};
	CHECK(ox_requester_submit(w->rq[0], &op) == 0);
	CHECK(wait_op(w, &op, 0) == -EACCES);
	op = (struct ox_op){ .kind = OX_OP_INTENT, .addr = BASE, .len = 64 };
	CHECK(ox_requester_submit(w->rq[0], &op) == 0);
	CHECK(wait_op(w, &op, 0) == 0);
	op = (struct ox_op){ .kind = OX_OP_ARITH, .addr = BASE + 3, .len = 8 };
	CHECK(ox_requester_submit(w->rq[0], &op) == -EINVAL);
	/* after the window goes, the same peer is denied... or unknown */
	struct ox_stats s0, s1;
	ox_endpoint_stats(w->ep, &s0);
	CHECK(ox_endpoint_remove_window(w->ep, w->win[0]) == 0);
	op = (struct ox_op){ .kind = OX_OP_GET, .addr = BASE, .buf = buf, .len = 64 };
	CHECK(ox_requester_submit(w->rq[0], &op) == 0);
	CHECK(wait_op(w, &op, -1) == -ETIMEDOUT); /* unknown MAC: dropped */
	ox_endpoint_stats(w->ep, &s1);
	CHECK(s1.rej[OX_REJ_UNKNOWN_MAC] > s0.rej[OX_REJ_UNKNOWN_MAC]);
	ox_requester_destroy(w->rq[0]);
	w->rq[0] = NULL;
}

/* Frames a broken or hostile peer might send: all counted, none served. */
static void test_malformed(struct world *w)
{
	struct ox_link *l = w->rq_raw[1];
	uint8_t f[128];
	struct ox_stats s0, s1;
	ox_endpoint_stats(w->ep, &s0);
	memset(f, 0, sizeof(f));
	ox_eth_write(f, w->ep_raw->mac, l->mac, OX_ETHERTYPE_DEFAULT);
	ox_link_send(l, f, 20);     /* short */
	f[OX_ETH_HLEN + 47] = 0x20; /* mask bit past the end */
	ox_link_send(l, f, OX_ETH_HLEN + 48);
	f[OX_ETH_HLEN + 47] = 0;
	f[OX_ETH_HLEN + 1] = 0x20; /* seq far ahead: out of order */
	ox_link_send(l, f, OX_ETH_HLEN + 48);
	uint8_t g[128];
	memcpy(g, f, sizeof(g));
	ox_eth_write(g, w->ep_raw->mac, (const uint8_t[6]){ 2, 0, 0, 0, 0, 0x77 },
		     OX_ETHERTYPE_DEFAULT);
	ox_link_send(l, g, OX_ETH_HLEN + 48); /* unknown MAC (spoofed source) */
	pump(w, NRQ, NULL, 2000000);
	ox_endpoint_stats(w->ep, &s1);
	CHECK(s1.rej[OX_REJ_SHORT] == s0.rej[OX_REJ_SHORT] + 1);
	CHECK(s1.rej[OX_REJ_MASK] == s0.rej[OX_REJ_MASK] + 1);
	CHECK(s1.ooo >= s0.ooo + 1);
	CHECK(s1.rej[OX_REJ_UNKNOWN_MAC] == s0.rej[OX_REJ_UNKNOWN_MAC] + 1);

	/* credit on channel 6 is malformed; a grant of 2^30 is legal (it
	 * saturates the counter) and the frame carrying it is served */
	struct world *ww = w;
	struct ox_window win = { .base = BASE, .len = 4096, .mem = ww->mem };
	memcpy(win.mac, (uint8_t[6]){ 2, 0, 0, 0, 0, 0x30 }, 6);
	CHECK(ox_endpoint_add_window(ww->ep, &win) >= 0);
	uint8_t c[OX_ETH_HLEN + 48] = { 0 };
	struct ox_tloe h = {
		.seq = 0, .seq_ack = OX_SEQ_MASK, .ack = 1, .credit_ch = 6, .credit = 3
	};
	frame_head(c, ww->ep_raw->mac, win.mac, &h);
	CHECK(ox_endpoint_input(ww->ep, c, sizeof(c), ox_now_ns()) == -EPROTO);
	ox_endpoint_stats(w->ep, &s1);
	CHECK(s1.rej[OX_REJ_CREDIT] == s0.rej[OX_REJ_CREDIT] + 1);
	h.credit_ch = OX_CH_D;
	h.credit = 30;
	frame_head(c, NULL, NULL, &h);
	CHECK(ox_endpoint_input(ww->ep, c, sizeof(c), ox_now_ns()) == 0);
	ox_endpoint_stats(w->ep, &s1);
	CHECK(s1.rej[OX_REJ_CREDIT] == s0.rej[OX_REJ_CREDIT] + 1);
}

/* Authenticated mode: the bound requester 0 works; frames claiming its MAC
 * with its exact next sequence number but no valid tag, or far from its
 * sequence, are dropped and counted and change nothing; overlapping
 * windows of one MAC are refused. */
static void test_tagged(void)
{
	struct world w;
	g_tagged = true;
	int rc = world_init(&w, OX_MODE_11, false, 1500, NULL);
	g_tagged = false;
	if (rc) {
		CHECK(!"world_init");
		return;
	}
	uint64_t v = 0x1122334455667788ull, got = 0;
	struct ox_op op = { .kind = OX_OP_PUT, .addr = BASE + 64, .buf = &v, .len = 8 };
	CHECK(ox_requester_submit(w.rq[0], &op) == 0);
	CHECK(wait_op(&w, &op, 0) == 0);
	pump(&w, NRQ, NULL, 2000000); /* let the acknowledgements settle */

	struct ox_stats s0, s1;
	ox_endpoint_stats(w.ep, &s0);
	uint8_t f[OX_ETH_HLEN + 128];
	uint64_t evil = 0xEEEEEEEEEEEEEEEEull;
	struct ox_msg put = {
		.chan = OX_CH_A, .opcode = OX_A_PUTFULL, .size = 3, .addr = BASE + 64, .data = &evil
	};
	/* every sequence number a few hundred frames could have reached, so
	 * one of them is the very one the node expects next */
	for (uint32_t k = 0; k < 2 * OX_SEQ_PLAUSIBLE; k++) {
		struct ox_tloe h = { .seq = k % OX_SEQ_PLAUSIBLE,
				     .seq_ack = OX_SEQ_MASK,
				     .ack = 1 };
		size_t n = frame_msgs(f, sizeof(f) - OX_TAG_LEN, w.ep_raw->mac, w.rq_raw[0]->mac,
				      &h, &put);
		CHECK(n > 0);
		if (k >= OX_SEQ_PLAUSIBLE) { /* a tag, but under the wrong key */
			uint8_t key[OX_TAG_KEYLEN] = { 1 };
			ox_tag_put(key, f, n);
			n += OX_TAG_LEN;
		}
		CHECK(ox_endpoint_input(w.ep, f, n, ox_now_ns()) == -EPROTO);
	}
	ox_endpoint_stats(w.ep, &s1);
	CHECK(s1.rej[OX_REJ_TAG] == s0.rej[OX_REJ_TAG] + 2 * OX_SEQ_PLAUSIBLE);
	CHECK(s1.rx_msgs == s0.rx_msgs);
	CHECK(!memcmp(w.mem + 64, &v, 8));
	op = (struct ox_op){ .kind = OX_OP_GET, .addr = BASE + 64, .buf = &got, .len = 8 };
	CHECK(ox_requester_submit(w.rq[0], &op) == 0);
	CHECK(wait_op(&w, &op, 0) == 0 && got == v);

	/* bound but untagged: a frame far from the sequence is spoofed */
	uint8_t mac[6] = { 2, 0, 0, 0, 0, 0x31 };
	struct ox_window win = { .base = BASE, .len = 4096, .mem = w.mem };
	memcpy(win.mac, mac, 6);
	CHECK(ox_endpoint_add_window(w.ep, &win) >= 0);
	win.base = BASE + 4095;
	CHECK(ox_endpoint_add_window(w.ep, &win) == -EEXIST);
	CHECK(ox_endpoint_bind(w.ep, mac, NULL, NULL) == 0);
	uint8_t g[OX_ETH_HLEN + 48] = { 0 };
	struct ox_tloe h = { .seq = OX_SEQ_HALF, .seq_ack = OX_SEQ_MASK, .ack = 1 };
	frame_head(g, w.ep_raw->mac, mac, &h);
	g[sizeof(g) - 1] = 0; /* no messages */
	CHECK(ox_endpoint_input(w.ep, g, sizeof(g), ox_now_ns()) == -EPROTO);
	ox_endpoint_stats(w.ep, &s1);
	CHECK(s1.rej[OX_REJ_SEQ] == s0.rej[OX_REJ_SEQ] + 1);
	CHECK(s1.naks_tx == s0.naks_tx); /* and no NAK went to the real peer */
	ox_endpoint_unbind(w.ep, mac);
	world_fini(&w);
}

/* PutPartialData, which the requester API does not issue, from a bare conn. */
static void test_partial(struct world *w, enum ox_mode mode, bool verbatim)
{
	struct ox_link *l;
	struct ox_stats st = { 0 };
	CHECK(ox_hub_port(w->hub, 0x40, 1500, &l) == 0);
	struct ox_window win = { .base = BASE, .len = MEMSZ, .mem = w->mem };
	memcpy(win.mac, l->mac, 6);
	CHECK(ox_endpoint_add_window(w->ep, &win) >= 0);
	struct ox_conn c;
	struct ox_opts o = { .mode = mode, .verbatim = verbatim };
	uint32_t rx[6] = { 0, 0, 0, 0, 1024, 0 };
	CHECK(ox_conn_init(&c, l, &o, w->ep_raw->mac, rx, &st) == 0);
	uint8_t buf[9216];
	struct ox_frame fr;
	int acks = 0;
	/* 1.0.3 starts without credit: our D grant opens the connection and
	 * the endpoint answers with A credit */
	uint64_t t0 = ox_now_ns();
	while (c.c.tx[OX_CH_A] < 64 && ox_now_ns() - t0 < 1000000000ull) {
		uint64_t now = ox_now_ns();
		ox_conn_service(&c, now);
		ox_endpoint_poll(w->ep, now, 64);
		int len = ox_link_recv(l, buf, sizeof(buf));
		if (len > 0 && !ox_frame_decode(buf + OX_ETH_HLEN, (size_t)len - OX_ETH_HLEN, &fr))
			ox_conn_input(&c, &fr, now);
	}
	CHECK(c.c.tx[OX_CH_A] >= 64);
	memset(w->mem + 0x3000, 0x11, 256);
	uint8_t data[128], pm[16] = { 0 };
	for (int i = 0; i < 128; i++)
		data[i] = (uint8_t)(0x80 + i);
	pm[0] = 0x81;  /* bytes 0 and 7 */
	pm[15] = 0x80; /* byte 127 */
	struct ox_msg m = { .chan = OX_CH_A,
			    .opcode = OX_A_PUTPARTIAL,
			    .size = 7,
			    .addr = BASE + 0x3000,
			    .data = data,
			    .pmask = pm,
			    .source = 5 };
	CHECK(ox_conn_add(&c, &m, ox_now_ns()) == 0);
	uint8_t d4[4] = { 0xA1, 0xA2, 0xA3, 0xA4 }, pm4[1] = { 0x6 };
	struct ox_msg n = { .chan = OX_CH_A,
			    .opcode = OX_A_PUTPARTIAL,
			    .size = 2,
			    .addr = BASE + 0x3084,
			    .data = d4,
			    .pmask = pm4,
			    .source = 6 };
	CHECK(ox_conn_add(&c, &n, ox_now_ns()) == 0);
	ox_conn_flush(&c, ox_now_ns());
	t0 = ox_now_ns();
	while (acks < 2 && ox_now_ns() - t0 < 1000000000ull) {
		uint64_t now = ox_now_ns();
		ox_endpoint_poll(w->ep, now, 64);
		int len = ox_link_recv(l, buf, sizeof(buf));
		if (len > 0 &&
		    !ox_frame_decode(buf + OX_ETH_HLEN, (size_t)len - OX_ETH_HLEN, &fr) &&
		    ox_conn_input(&c, &fr, now) == 1)
			for (unsigned i = 0; i < fr.nmsg; i++)
				acks += fr.msg[i].chan == OX_CH_D &&
					fr.msg[i].opcode == OX_D_ACCESSACK && !fr.msg[i].denied;
		ox_conn_service(&c, now);
	}
	CHECK(acks == 2);
	for (int i = 0; i < 128; i++) {
		uint8_t want = (i == 0 || i == 7 || i == 127) ? (uint8_t)(0x80 + i) : 0x11;
		CHECK(w->mem[0x3000 + i] == want);
	}
	CHECK(w->mem[0x3084] == 0x11 && w->mem[0x3085] == 0xA2 && w->mem[0x3086] == 0xA3 &&
	      w->mem[0x3087] == 0x11);
	ox_conn_free(&c);
}

/* 1.1: a requester closes and a new one opens on the same MAC; another
 * restarts without closing.  Both new sessions must be served, and no
 * answer from an old session may reach a new one. */
static void test_sessions(struct world *w)
{
	struct ox_opts o = { .mode = OX_MODE_11, .verbatim = w->verbatim, .rto_ns = 300000 };
	uint64_t v = 0;
	struct ox_op op = {
		.kind = OX_OP_ARITH, .param = OX_ADD, .addr = BASE + 0x5000, .len = 8, .operand = 5
	};
	CHECK(ox_requester_submit(w->rq[1], &op) == 0);
	CHECK(wait_op(w, &op, 1) == 0);
	uint64_t t0 = ox_now_ns();
	int e = -1;
	ox_requester_close(w->rq[1], 0); /* starts the close; finished below */
	while (ox_now_ns() - t0 < 1000000000ull) {
		uint64_t now = ox_now_ns();
		ox_endpoint_poll(w->ep, now, 64);
		ox_requester_poll(w->rq[1], now);
		if (ox_requester_close(w->rq[1], 1) == 0) {
			e = 0;
			break;
		}
	}
	CHECK(e == 0);
	ox_requester_destroy(w->rq[1]);
	CHECK(ox_requester_create(&o, w->rq_link[1], w->ep_raw->mac, &w->rq[1]) == 0);
	op = (struct ox_op){ .kind = OX_OP_GET, .addr = BASE + 0x5000, .buf = &v, .len = 8 };
	CHECK(ox_requester_submit(w->rq[1], &op) == 0);
	CHECK(wait_op(w, &op, 1) == 0 && v == 5);
	/* restart without a close, with a request still unanswered */
	op = (struct ox_op){
		.kind = OX_OP_ARITH, .param = OX_ADD, .addr = BASE + 0x5000, .len = 8, .operand = 1
	};
	CHECK(ox_requester_submit(w->rq[2], &op) == 0);
	CHECK(wait_op(w, &op, 2) == 0);
	ox_requester_destroy(w->rq[2]);
	CHECK(ox_requester_create(&o, w->rq_link[2], w->ep_raw->mac, &w->rq[2]) == 0);
	v = 0;
	op = (struct ox_op){ .kind = OX_OP_GET, .addr = BASE + 0x5000, .buf = &v, .len = 8 };
	CHECK(ox_requester_submit(w->rq[2], &op) == 0);
	CHECK(wait_op(w, &op, 2) == 0 && v == 6);
}

/* 1.0.3 has no open: the control path resets the peer for a new session.
 * Also a batch of ops completed with wait_all. */
static void test_restart_103(struct world *w)
{
	struct ox_opts o = { .mode = OX_MODE_103, .verbatim = w->verbatim, .rto_ns = 300000 };
	uint64_t v[4] = { 0 };
	struct ox_op op[4];
	for (int i = 0; i < 4; i++) {
		op[i] = (struct ox_op){ .kind = OX_OP_LOGIC,
					.param = OX_SWAP,
					.addr = BASE + 0x6000 + 8 * i,
					.len = 8,
					.operand = 100 + i };
		CHECK(ox_requester_submit(w->rq[1], &op[i]) == 0);
	}
	uint64_t t0 = ox_now_ns();
	while (ox_requester_busy(w->rq[1]) && ox_now_ns() - t0 < 1000000000ull) {
		ox_endpoint_poll(w->ep, ox_now_ns(), 64);
		ox_requester_wait_all(w->rq[1], 100000);
	}
	CHECK(ox_requester_busy(w->rq[1]) == 0);
	ox_requester_destroy(w->rq[1]);
	CHECK(ox_endpoint_reset_peer(w->ep, w->rq_raw[1]->mac) == 0);
	CHECK(ox_requester_create(&o, w->rq_link[1], w->ep_raw->mac, &w->rq[1]) == 0);
	struct ox_op g = { .kind = OX_OP_GET, .addr = BASE + 0x6000, .buf = v, .len = 32 };
	CHECK(ox_requester_submit(w->rq[1], &g) == 0);
	CHECK(wait_op(w, &g, 1) == 0);
	CHECK(v[0] == 100 && v[3] == 103);
}

static int abort_calls;
static void abort_cb(struct ox_op *op)
{
	(void)op;
	abort_calls++;
}

/* Abort completes everything once, issued or not; late answers are stale. */
static void test_abort(struct world *w)
{
	static uint8_t big[1 << 16];
	struct ox_op op[3] = {
		{ .kind = OX_OP_GET, .addr = BASE, .buf = big, .len = sizeof(big), .cb = abort_cb },
		{ .kind = OX_OP_ARITH,
		  .param = OX_ADD,
		  .addr = BASE + 0x7000,
		  .len = 8,
		  .operand = 1,
		  .cb = abort_cb },
		{ .kind = OX_OP_GET, .addr = BASE, .buf = big, .len = 64, .cb = abort_cb },
	};
	abort_calls = 0;
	for (int i = 0; i < 3; i++)
		CHECK(ox_requester_submit(w->rq[2], &op[i]) == 0);
	ox_requester_poll(w->rq[2], ox_now_ns()); /* some bursts go out */
	CHECK(ox_requester_abort(w->rq[2], -ECONNRESET) == 3);
	CHECK(abort_calls == 3 && ox_requester_busy(w->rq[2]) == 0);
	for (int i = 0; i < 3; i++)
		CHECK(op[i].done && op[i].status == -ECONNRESET);
	pump(w, NRQ, NULL, 5000000);
	struct ox_stats s;
	ox_requester_stats(w->rq[2], &s);
	CHECK(abort_calls == 3 && s.stale > 0);
}

static void run_edges(enum ox_mode mode, bool verbatim)
{
	struct world w;
	if (world_init(&w, mode, verbatim, 1500, NULL)) {
		CHECK(!"world_init");
		return;
	}
	/* narrow and unaligned ranges go through as aligned power-of-two pieces */
	uint8_t src[3000], dst[3000];
	for (int i = 0; i < 3000; i++)
		src[i] = (uint8_t)rnd();
	struct ox_op op = { .kind = OX_OP_PUT, .addr = BASE + 0x20003, .buf = src, .len = 2997 };
	CHECK(ox_requester_submit(w.rq[1], &op) == 0);
	CHECK(wait_op(&w, &op, 1) == 0);
	CHECK(memcmp(w.mem + 0x20003, src, 2997) == 0);
	memset(dst, 0, sizeof(dst));
	op = (struct ox_op){ .kind = OX_OP_GET, .addr = BASE + 0x20003, .buf = dst, .len = 2997 };
	CHECK(ox_requester_submit(w.rq[1], &op) == 0);
	CHECK(wait_op(&w, &op, 1) == 0);
	CHECK(memcmp(dst, src, 2997) == 0);
	test_atomics(&w);
	if (mode == OX_MODE_11)
		test_sessions(&w);
	else
		test_restart_103(&w);
	test_partial(&w, mode, verbatim);
	test_abort(&w);
	test_malformed(&w);
	test_denied(&w);
	/* and the node still serves the others */
	op = (struct ox_op){ .kind = OX_OP_GET, .addr = BASE + 0x20003, .buf = dst, .len = 5 };
	CHECK(ox_requester_submit(w.rq[2], &op) == 0);
	CHECK(wait_op(&w, &op, 2) == 0 && memcmp(dst, src, 5) == 0);
	world_fini(&w);
}

/* ------------------------------------------- open grants, silent peers */

static int n_logged;
static void count_log(const char *line)
{
	(void)line;
	n_logged++;
}

/* Reads every frame waiting on port l; returns how many sequenced frames
 * carried a grant, recording the first grant's exponent per channel. */
static int drain_grants(struct ox_link *l, int first_exp[6], bool *saw_open)
{
	uint8_t b[2048];
	static struct ox_frame fr;
	int n = 0, len;
	while ((len = ox_link_recv(l, b, sizeof(b))) > 0) {
		if (ox_frame_decode(b + OX_ETH_HLEN, (size_t)len - OX_ETH_HLEN, &fr))
			continue;
		if (fr.h.type == OX_T_OPEN)
			*saw_open = true;
		if (fr.h.type == OX_T_ACKONLY || !fr.h.credit_ch || fr.h.credit_ch > OX_CH_E)
			continue;
		if (first_exp[fr.h.credit_ch] < 0)
			first_exp[fr.h.credit_ch] = fr.h.credit;
		n++;
	}
	return n;
}

/* Both ends grant on all five channels at open, at least 2^8 each (peers
 * that take a grant as their new total wait for more than the 1.1 start of
 * 128); a node gives up on a peer that never acknowledges, logs and counts
 * it, and serves the same MAC afresh when it opens again. */
static void test_open_grants(enum ox_mode mode)
{
	struct ox_hub *hub;
	struct ox_link *el, *pl, *rl, *nl;
	struct ox_endpoint *ep;
	struct ox_requester *rq;
	uint8_t *mem = calloc(1, 4096);
	CHECK(ox_hub_create(&hub) == 0);
	ox_hub_port(hub, 0x60, 1500, &el);
	ox_hub_port(hub, 0x61, 1500, &pl);
	ox_hub_port(hub, 0x62, 1500, &rl);
	ox_hub_port(hub, 0x63, 1500, &nl);
	n_logged = 0;
	struct ox_opts o = { .mode = mode, .rto_ns = 100000, .log = count_log };
	CHECK(ox_endpoint_create(&o, el, &ep) == 0);
	struct ox_window win = { .base = BASE, .len = 4096, .mem = mem };
	memcpy(win.mac, pl->mac, 6);
	CHECK(ox_endpoint_add_window(ep, &win) >= 0);

	/* a bare peer's first frame: the open in 1.1, a normal one in 1.0.3 */
	uint8_t f[OX_ETH_HLEN + 48];
	struct ox_tloe h = { .type = mode == OX_MODE_11 ? OX_T_OPEN : 0,
			     .seq = 0,
			     .seq_ack = OX_SEQ_MASK,
			     .ack = 1,
			     .credit_ch = OX_CH_D,
			     .credit = 28 };
	size_t flen = frame_msgs(f, sizeof(f), el->mac, pl->mac, &h, NULL);
	uint64_t now = 1000000000ull;
	CHECK(ox_link_send(pl, f, flen) == 0);
	ox_endpoint_poll(ep, now, 64);
	int first[6] = { -1, -1, -1, -1, -1, -1 };
	bool open = false;
	CHECK(drain_grants(pl, first, &open) >= 5);
	for (int ch = OX_CH_A; ch <= OX_CH_E; ch++)
		CHECK(first[ch] >= 8);
	CHECK(open == (mode == OX_MODE_11));

	/* never acknowledged: retried ever more slowly, then given up */
	struct ox_stats st;
	for (int k = 0; k < 2000; k++) {
		now += 2000000;
		ox_endpoint_poll(ep, now, 64);
		ox_endpoint_stats(ep, &st);
		if (st.gaveup)
			break;
	}
	CHECK(st.gaveup == 1 && n_logged == 1);
	CHECK(st.rtx_frames >= 32);
	uint8_t junk[2048];
	while (ox_link_recv(pl, junk, sizeof(junk)) > 0)
		;
	/* back again: a fresh connection, with its grants */
	CHECK(ox_link_send(pl, f, flen) == 0);
	ox_endpoint_poll(ep, now, 64);
	for (int ch = 0; ch < 6; ch++)
		first[ch] = -1;
	CHECK(drain_grants(pl, first, &open) >= 5 && first[OX_CH_A] >= 8 && first[OX_CH_E] >= 8);

	/* the requester grants on every channel too (D with its real buffer) */
	CHECK(ox_requester_create(&o, rl, nl->mac, &rq) == 0);
	ox_requester_poll(rq, now);
	for (int ch = 0; ch < 6; ch++)
		first[ch] = -1;
	CHECK(drain_grants(nl, first, &open) >= 5);
	for (int ch = OX_CH_A; ch <= OX_CH_E; ch++)
		CHECK(first[ch] >= 8);
	CHECK(first[OX_CH_D] >= 14);
	ox_requester_destroy(rq);
	ox_endpoint_destroy(ep);
	ox_hub_destroy(hub);
	free(mem);
}

/* A bound requester that goes idle after an op owes no retransmission:
 * its acknowledgement leaves in the poll that completes the op, since no
 * one may poll it again.  One that is silent past the give-up threshold
 * all the same (here: its acknowledgement lost) keeps its connection: the
 * node stops retrying it, and serves it when it comes back with the
 * sequence numbers it left with.  Time is driven by hand, so the node's
 * timeouts run out without any requester poll in between. */
static void test_bound_silence(void)
{
	struct world w;
	g_tagged = true;
	int rc = world_init(&w, OX_MODE_11, false, 1500, NULL);
	g_tagged = false;
	if (rc) {
		CHECK(!"world_init");
		return;
	}
	n_logged = 0;
	struct ox_stats s0, s1;
	uint64_t v = 0x0123456789abcdefull, got = 0, now = ox_now_ns();
	struct ox_op op = { .kind = OX_OP_PUT, .addr = BASE + 0x100, .buf = &v, .len = 8 };
	CHECK(ox_requester_submit(w.rq[0], &op) == 0);
	/* one requester poll at a time, the node polled between: the
	 * requester stops at the poll that completes the op */
	for (int k = 0; k < 10000 && !op.done; k++) {
		ox_requester_poll(w.rq[0], now);
		ox_endpoint_poll(w.ep, now, 64);
		now += 1000;
	}
	CHECK(op.done && op.status == 0);
	ox_endpoint_stats(w.ep, &s0);
	for (int k = 0; k < 100; k++) { /* 200 ms: far past the 300 us timeout */
		now += 2000000;
		ox_endpoint_poll(w.ep, now, 64);
	}
	ox_endpoint_stats(w.ep, &s1);
	CHECK(s1.rtx_frames == s0.rtx_frames && s1.timeouts == s0.timeouts);

	/* now the node sends a frame the requester never reads: a grant it
	 * owes after a write's credit comes back, or here, simply the answer
	 * to a request whose acknowledgement is then thrown away */
	op = (struct ox_op){ .kind = OX_OP_GET, .addr = BASE + 0x100, .buf = &got, .len = 8 };
	CHECK(ox_requester_submit(w.rq[0], &op) == 0);
	ox_requester_poll(w.rq[0], now);
	ox_endpoint_poll(w.ep, now, 64); /* the Get is served; the answer waits */
	uint8_t junk[2048];
	int lost = 0;
	while (ox_link_recv(w.rq_raw[0], junk, sizeof(junk)) > 0)
		lost++;
	CHECK(lost > 0);
	/* silent far past the give-up threshold (32 timeouts, the last ones
	 * 128 x 300 us apart); its answer is retried, then no more */
	for (int k = 0; k < 5000; k++) {
		now += 1000000;
		ox_endpoint_poll(w.ep, now, 64);
	}
	ox_endpoint_stats(w.ep, &s0);
	CHECK(s0.gaveup == 1 && n_logged == 0); /* world_init sets no log */
	for (int k = 0; k < 100; k++) {
		now += 10000000;
		ox_endpoint_poll(w.ep, now, 64);
	}
	ox_endpoint_stats(w.ep, &s1);
	CHECK(s1.rtx_frames == s0.rtx_frames && s1.tx_frames == s0.tx_frames);
	while (ox_link_recv(w.rq_raw[0], junk, sizeof(junk)) > 0)
		;
	/* it comes back: its retransmitted Get brings the node's answer again */
	for (int k = 0; k < 20000 && !op.done; k++) {
		ox_requester_poll(w.rq[0], now);
		ox_endpoint_poll(w.ep, now, 64);
		now += 100000;
	}
	CHECK(op.done && op.status == 0 && got == v);
	/* and new requests go on at the sequence numbers it left with */
	v = ~v;
	op = (struct ox_op){ .kind = OX_OP_PUT, .addr = BASE + 0x100, .buf = &v, .len = 8 };
	CHECK(ox_requester_submit(w.rq[0], &op) == 0);
	for (int k = 0; k < 10000 && !op.done; k++) {
		ox_requester_poll(w.rq[0], now);
		ox_endpoint_poll(w.ep, now, 64);
		now += 1000;
	}
	CHECK(op.done && op.status == 0 && !memcmp(w.mem + 0x100, &v, 8));
	ox_endpoint_stats(w.ep, &s1);
	CHECK(s1.rej[OX_REJ_SEQ] == 0 && s1.rej[OX_REJ_TAG] == 0 && s1.gaveup == 1);
	world_fini(&w);
}

int main(int argc, char **argv)
{
	t_keep_going = 1;
	unsigned pairs = argc > 1 ? (unsigned)atoi(argv[1]) : 150;
	/* OX_SEED=n varies the workload and every fault pattern, for soak runs */
	uint64_t seed = getenv("OX_SEED") ? strtoull(getenv("OX_SEED"), NULL, 0) : 0;
	rng += seed * 0x9E3779B97F4A7C15ull;
	if (argc <= 2) {
		test_open_grants(OX_MODE_11);
		test_open_grants(OX_MODE_103);
		run_edges(OX_MODE_11, false);
		run_edges(OX_MODE_103, false);
		run_edges(OX_MODE_11, true);
		test_tagged();
		test_bound_silence();
		test_jumbo();
	}
	struct ox_fault_cfg l1 = { .seed = 1 + 10 * seed, .drop_pct = 1 };
	struct ox_fault_cfg l5 = { .seed = 2 + 10 * seed, .drop_pct = 5 };
	struct ox_fault_cfg mix = { .seed = 3 + 10 * seed,
				    .drop_pct = 1,
				    .dup_pct = 3,
				    .reorder_pct = 3,
				    .delay_pct = 2,
				    .delay_ns = 200000 };
	run_load("1.1 clean 9000", OX_MODE_11, false, 9000, NULL, pairs, 200);
	run_load("1.0.3 clean 1500", OX_MODE_103, false, 1500, NULL, pairs, 200);
	run_load("1.1 loss1% 9000", OX_MODE_11, false, 9000, &l1, pairs, 200);
	run_load("1.0.3 loss1% 1500", OX_MODE_103, false, 1500, &l1, pairs, 200);
	run_load("1.1 loss5% 1500", OX_MODE_11, false, 1500, &l5, pairs, 200);
	run_load("1.0.3 loss5% 9000", OX_MODE_103, false, 9000, &l5, pairs, 200);
	run_load("1.1 dup/reorder/delay", OX_MODE_11, true, 9000, &mix, pairs, 200);
	run_load("1.0.3 dup/reorder/delay", OX_MODE_103, false, 1500, &mix, pairs, 200);
	/* authenticated mode: tags survive retransmission and acknowledgement
	 * rewrites, and the sequence check drops no honest frame */
	g_tagged = true;
	run_load("1.1 tagged clean 9000", OX_MODE_11, false, 9000, NULL, pairs, 200);
	run_load("1.1 tagged loss5% 1500", OX_MODE_11, false, 1500, &l5, pairs, 200);
	run_load("1.0.3 tagged dup/reorder/delay", OX_MODE_103, false, 9000, &mix, pairs, 200);
	g_tagged = false;
	if (seed) {
		struct ox_fault_cfg harsh = { .seed = 4 + 10 * seed,
					      .drop_pct = 15,
					      .dup_pct = 10,
					      .reorder_pct = 10,
					      .delay_pct = 5,
					      .delay_ns = 500000 };
		run_load("1.1 harsh", OX_MODE_11, false, 9000, &harsh, pairs / 3, 50);
		run_load("1.0.3 harsh", OX_MODE_103, false, 1500, &harsh, pairs / 3, 50);
	}
	if (t_fails) {
		fprintf(stderr, "test_ox_proto: %d failures\n", t_fails);
		return 1;
	}
	printf("test_ox_proto: ok\n");
	return 0;
}
