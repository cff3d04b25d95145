/*
 * ox_selftest.c - OmniXtend over a real interface (AF_PACKET), for the netns
 * test and for measurements.  One program, several roles:
 *
 *   --serve IF --allow MAC...    memory endpoint with one window per MAC
 *   --client IF --peer MAC --slot K [--ops N] [--adds N]
 *                                writes and reads back random ranges in its
 *                                own slice, then N atomic ADDs on a shared
 *                                counter; exit 0 only if all data matched and
 *                                every op completed exactly once; with
 *                                --expect N it then waits for the shared
 *                                counter to reach exactly N (all clients)
 *   --check IF --peer MAC --expect N   the shared counter must equal N
 *   --lat IF --peer MAC [--size B] [--count N]   Get latency percentiles
 *   --echo IF / --ping IF --peer MAC [--size B]  raw frame ping-pong, the
 *                                baseline: same rings, no protocol
 * Common: --mode 103|11, --loss PCT (fault injector on our sends), --block
 * (never busy-poll), --time S (serve/echo lifetime), --verbatim, --credit
 * FLITS (receive buffer per channel), --slots N (retransmit ring frames),
 * --xdp (AF_XDP instead of AF_PACKET).
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ox/ox.h"

#define BASE 0x8000000000ull
#define MEMSZ (4u << 20)
#define SLICE (1u << 20)
#define COUNTER (MEMSZ - 8)
#define PING_TYPE 0xAAABu

static volatile int stop;
static void on_sig(int s)
{
	(void)s;
	stop = 1;
}

static struct {
	const char *role, *ifname;
	uint8_t peer[6];
	uint8_t allow[8][6];
	int nallow;
	int slot, ops, adds, count, size, block, verbatim, credit, slots, xdp;
	enum ox_mode mode;
	double loss;
	double time_s;
	uint64_t expect;
} a = { .ops = 300, .adds = 500, .count = 2000, .size = 4096, .mode = OX_MODE_11, .time_s = 60 };

static int parse_mac(const char *s, uint8_t m[6])
{
	unsigned v[6];
	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		m[i] = (uint8_t)v[i];
	return 0;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int link_open(uint16_t type, struct ox_link **l)
{
	return a.xdp ? ox_link_xdp_open(a.ifname, type, l) : ox_link_packet_open(a.ifname, type, l);
}

static struct ox_link *open_link(struct ox_link **raw, uint16_t type)
{
	int e = link_open(type, raw);
	if (e) {
		fprintf(stderr, "open %s: %s\n", a.ifname, strerror(-e));
		exit(2);
	}
	if (!a.loss)
		return *raw;
	struct ox_fault_cfg fc = { .seed = (uint64_t)getpid(), .drop_pct = a.loss };
	struct ox_link *l;
	ox_link_faulty(*raw, &fc, &l);
	return l;
}

static void print_stats(const char *who, const struct ox_stats *s)
{
	fprintf(stderr,
		"%s: rx %llu tx %llu msgs %llu/%llu rtx %llu timeouts %llu naks %llu/%llu dup %llu ooo %llu denied %llu atomics %llu",
		who, (unsigned long long)s->rx_frames, (unsigned long long)s->tx_frames,
		(unsigned long long)s->rx_msgs, (unsigned long long)s->tx_msgs,
		(unsigned long long)s->rtx_frames, (unsigned long long)s->timeouts,
		(unsigned long long)s->naks_rx, (unsigned long long)s->naks_tx,
		(unsigned long long)s->dup, (unsigned long long)s->ooo,
		(unsigned long long)s->denied, (unsigned long long)s->atomics);
	for (int i = 0; i < OX_REJ_COUNT; i++)
		if (s->rej[i])
			fprintf(stderr, " rej_%s %llu", ox_reject_name(i),
				(unsigned long long)s->rej[i]);
	fprintf(stderr, "\n");
}

static struct ox_opts opts(void)
{
	struct ox_opts o = { .mode = a.mode,
			     .verbatim = a.verbatim,
			     .rx_credit = (uint32_t)a.credit,
			     .rtx_slots = (unsigned)a.slots };
	if (a.block)
		o.spin_ns = 1;
	return o;
}

static int serve(void)
{
	struct ox_link *raw, *l = open_link(&raw, 0);
	struct ox_opts o = opts();
	struct ox_endpoint *ep;
	uint8_t *mem = aligned_alloc(4096, MEMSZ);
	memset(mem, 0, MEMSZ);
	if (ox_endpoint_create(&o, l, &ep))
		return 2;
	for (int i = 0; i < a.nallow; i++) {
		struct ox_window w = { .base = BASE, .len = MEMSZ, .mem = mem };
		memcpy(w.mac, a.allow[i], 6);
		if (ox_endpoint_add_window(ep, &w) < 0)
			return 2;
	}
	fprintf(stderr, "serve: %s mtu %u mac %02x:%02x:%02x:%02x:%02x:%02x\n", a.ifname, raw->mtu,
		raw->mac[0], raw->mac[1], raw->mac[2], raw->mac[3], raw->mac[4], raw->mac[5]);
	alarm((unsigned)a.time_s);
	ox_endpoint_run(ep, &stop);
	struct ox_stats s;
	ox_endpoint_stats(ep, &s);
	print_stats("serve", &s);
	ox_endpoint_destroy(ep);
	if (l != raw)
		ox_link_close(l);
	ox_link_close(raw);
	return 0;
}

static struct ox_requester *connect_rq(struct ox_link **raw, struct ox_link **l)
{
	*l = open_link(raw, 0);
	struct ox_opts o = opts();
	struct ox_requester *r;
	if (ox_requester_create(&o, *l, a.peer, &r)) {
		fprintf(stderr, "requester_create failed\n");
		exit(2);
	}
	return r;
}

struct cjob {
	struct ox_op op;
	int calls;
};

static void count_cb(struct ox_op *op)
{
	((struct cjob *)op->user)->calls++;
}

static int client(void)
{
	struct ox_link *raw, *l;
	struct ox_requester *r = connect_rq(&raw, &l);
	int bad = 0;
	enum { INF = 8, CH = SLICE / INF };
	static uint8_t src[INF][16384], dst[INF][16384];
	struct cjob put[INF], get[INF];
	size_t off[INF], len[INF];
	int left = a.ops;
	rng ^= (uint64_t)a.slot * 7919 + (uint64_t)getpid();
	uint64_t t0 = ox_now_ns();
	/* rounds of INF concurrent write+read-back pairs on disjoint chunks */
	while (left > 0) {
		int n = left < INF ? left : INF;
		for (int j = 0; j < n; j++) {
			len[j] = 1 + rnd() % (rnd() % 4 ? 1000 : 16384);
			off[j] = (size_t)a.slot * SLICE + (size_t)j * CH + rnd() % (CH - len[j]);
			for (size_t i = 0; i < len[j]; i++)
				src[j][i] = (uint8_t)rnd();
			put[j] = (struct cjob){ .op = { .kind = OX_OP_PUT,
							.addr = BASE + off[j],
							.buf = src[j],
							.len = len[j],
							.cb = count_cb,
							.user = &put[j] } };
			ox_requester_submit(r, &put[j].op);
		}
		for (int j = 0; j < n; j++)
			if (ox_requester_wait(r, &put[j].op, 5000000000ull)) {
				fprintf(stderr, "put %d: %d\n", j, put[j].op.status);
				bad++;
			}
		for (int j = 0; j < n; j++) {
			get[j] = (struct cjob){ .op = { .kind = OX_OP_GET,
							.addr = BASE + off[j],
							.buf = dst[j],
							.len = len[j],
							.cb = count_cb,
							.user = &get[j] } };
			ox_requester_submit(r, &get[j].op);
		}
		for (int j = 0; j < n; j++) {
			if (ox_requester_wait(r, &get[j].op, 5000000000ull) ||
			    memcmp(src[j], dst[j], len[j])) {
				fprintf(stderr, "get %d mismatch/status %d\n", j, get[j].op.status);
				bad++;
			}
			if (put[j].calls != 1 || get[j].calls != 1)
				bad++;
		}
		left -= n;
	}
	/* atomics, INF at a time; every old value must be below the final count */
	struct cjob add[INF];
	int done = 0, issued = 0;
	while (done < a.adds) {
		int n = a.adds - issued < INF ? a.adds - issued : INF;
		for (int j = 0; j < n; j++) {
			add[j] = (struct cjob){ .op = { .kind = OX_OP_ARITH,
							.param = OX_ADD,
							.addr = BASE + COUNTER,
							.len = 8,
							.operand = 1,
							.cb = count_cb,
							.user = &add[j] } };
			ox_requester_submit(r, &add[j].op);
		}
		issued += n;
		for (int j = 0; j < n; j++) {
			if (ox_requester_wait(r, &add[j].op, 5000000000ull) || add[j].calls != 1) {
				fprintf(stderr, "add: status %d calls %d\n", add[j].op.status,
					add[j].calls);
				bad++;
			}
			done++;
		}
	}
	double ms = (double)(ox_now_ns() - t0) / 1e6;
	/* a read outside the window is refused, not ignored */
	uint8_t b[64];
	struct ox_op d = { .kind = OX_OP_GET, .addr = BASE + MEMSZ, .buf = b, .len = 64 };
	ox_requester_submit(r, &d);
	if (ox_requester_wait(r, &d, 3000000000ull) != -EACCES) {
		fprintf(stderr, "outside window: status %d\n", d.status);
		bad++;
	}
	/* the other clients finish in their own time: wait for the exact total */
	uint64_t v = 0, w0 = ox_now_ns();
	while (a.expect) {
		struct ox_op g = { .kind = OX_OP_GET, .addr = BASE + COUNTER, .buf = &v, .len = 8 };
		ox_requester_submit(r, &g);
		if (ox_requester_wait(r, &g, 3000000000ull) || v > a.expect ||
		    ox_now_ns() - w0 > 20000000000ull) {
			fprintf(stderr, "counter %llu expect %llu\n", (unsigned long long)v,
				(unsigned long long)a.expect);
			bad++;
			break;
		}
		if (v == a.expect)
			break;
		usleep(10000);
	}
	if (ox_requester_close(r, 1000000000ull)) {
		fprintf(stderr, "close not acknowledged\n");
		bad++;
	}
	struct ox_stats s;
	ox_requester_stats(r, &s);
	fprintf(stderr, "client %d: %d ops + %d adds in %.1f ms, %d bad\n", a.slot, a.ops * 2,
		a.adds, ms, bad);
	print_stats("client", &s);
	ox_requester_destroy(r);
	if (l != raw)
		ox_link_close(l);
	ox_link_close(raw);
	return bad ? 1 : 0;
}

static int check(void)
{
	struct ox_link *raw, *l;
	struct ox_requester *r = connect_rq(&raw, &l);
	uint64_t v = 0;
	struct ox_op op = { .kind = OX_OP_GET, .addr = BASE + COUNTER, .buf = &v, .len = 8 };
	ox_requester_submit(r, &op);
	int e = ox_requester_wait(r, &op, 3000000000ull);
	printf("counter %llu expect %llu status %d\n", (unsigned long long)v,
	       (unsigned long long)a.expect, e);
	/* and a read outside the window is refused, not ignored */
	uint8_t b[64];
	struct ox_op d = { .kind = OX_OP_GET, .addr = BASE + MEMSZ, .buf = b, .len = 64 };
	ox_requester_submit(r, &d);
	int de = ox_requester_wait(r, &d, 3000000000ull);
	printf("outside window: status %d\n", de);
	if (ox_requester_close(r, 1000000000ull))
		e = -ETIMEDOUT;
	ox_requester_destroy(r);
	if (l != raw)
		ox_link_close(l);
	ox_link_close(raw);
	return (e == 0 && v == a.expect && de == -EACCES) ? 0 : 1;
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t p = *(const uint64_t *)x, q = *(const uint64_t *)y;
	return p < q ? -1 : p > q;
}

static void report(const char *what, uint64_t *t, int n)
{
	qsort(t, (size_t)n, sizeof(*t), cmp_u64);
	printf("%s size %d %s: p50 %.2f us p90 %.2f us p99 %.2f us (n=%d)\n", what, a.size,
	       a.block ? "blocking" : "polling", t[n / 2] / 1e3, t[n * 9 / 10] / 1e3,
	       t[n * 99 / 100] / 1e3, n);
}

static int lat(void)
{
	struct ox_link *raw, *l;
	struct ox_requester *r = connect_rq(&raw, &l);
	uint8_t *buf = malloc((size_t)a.size);
	uint64_t *t = calloc((size_t)a.count, sizeof(*t));
	for (int i = -100; i < a.count; i++) {
		struct ox_op op = { .kind = OX_OP_GET,
				    .addr = BASE +
					    (uint64_t)(rnd() % (MEMSZ / a.size / 2)) * a.size,
				    .buf = buf,
				    .len = (size_t)a.size };
		uint64_t t0 = ox_now_ns();
		ox_requester_submit(r, &op);
		if (ox_requester_wait(r, &op, 2000000000ull))
			return 1;
		if (i >= 0)
			t[i] = ox_now_ns() - t0;
	}
	report("ox get", t, a.count);
	/* bandwidth: 64 reads of 1 MiB-split bursts in flight */
	size_t big = 1 << 20;
	uint8_t *bb = malloc(big);
	uint64_t t0 = ox_now_ns();
	int n = 64;
	for (int i = 0; i < n; i++) {
		struct ox_op op = { .kind = OX_OP_GET, .addr = BASE, .buf = bb, .len = big };
		ox_requester_submit(r, &op);
		if (ox_requester_wait(r, &op, 5000000000ull))
			return 1;
	}
	double s = (double)(ox_now_ns() - t0) / 1e9;
	printf("ox get 1 MiB: %.2f GB/s\n", (double)big * n / s / 1e9);
	t0 = ox_now_ns();
	for (int i = 0; i < n; i++) {
		struct ox_op op = { .kind = OX_OP_PUT, .addr = BASE + big, .buf = bb, .len = big };
		ox_requester_submit(r, &op);
		if (ox_requester_wait(r, &op, 5000000000ull))
			return 1;
	}
	s = (double)(ox_now_ns() - t0) / 1e9;
	printf("ox put 1 MiB: %.2f GB/s\n", (double)big * n / s / 1e9);
	struct ox_stats st;
	ox_requester_stats(r, &st);
	print_stats("lat client", &st);
	if (a.mode == OX_MODE_11)
		ox_requester_close(r, 1000000000ull);
	ox_requester_destroy(r);
	return 0;
}

/* Raw baseline: the same rings and polling policy, a 64-byte request and a
 * reply of --size bytes, nothing else. */
static int echo(void)
{
	struct ox_link *l;
	if (link_open(PING_TYPE, &l))
		return 2;
	uint8_t buf[16384];
	alarm((unsigned)a.time_s);
	uint64_t last = ox_now_ns();
	while (!stop) {
		int n = ox_link_recv(l, buf, sizeof(buf));
		if (n <= 0) {
			/* the same polling policy as the endpoint's */
			uint64_t idle = ox_now_ns() - last;
			if (a.block || idle > 200000)
				ox_link_wait(l, 100000000);
			else if (idle > 20000)
				sched_yield();
			continue;
		}
		last = ox_now_ns();
		uint8_t src[6];
		memcpy(src, buf + 6, 6);
		size_t len = (size_t)buf[14] << 8 | buf[15];
		if (len < 60)
			len = 60;
		if (len > OX_ETH_HLEN + l->mtu)
			len = OX_ETH_HLEN + l->mtu;
		ox_eth_write(buf, src, l->mac, PING_TYPE);
		ox_link_send(l, buf, len);
		ox_link_flush(l);
	}
	ox_link_close(l);
	return 0;
}

static int ping(void)
{
	struct ox_link *l;
	if (link_open(PING_TYPE, &l))
		return 2;
	uint8_t req[64] = { 0 }, buf[16384];
	size_t want = (size_t)a.size + OX_ETH_HLEN;
	ox_eth_write(req, a.peer, l->mac, PING_TYPE);
	req[14] = (uint8_t)(want >> 8);
	req[15] = (uint8_t)want;
	uint64_t *t = calloc((size_t)a.count, sizeof(*t));
	for (int i = -100; i < a.count; i++) {
		uint64_t t0 = ox_now_ns();
		ox_link_send(l, req, sizeof(req));
		ox_link_flush(l);
		int n;
		while ((n = ox_link_recv(l, buf, sizeof(buf))) <= 0) {
			if (a.block)
				ox_link_wait(l, 100000000);
			else if (ox_now_ns() - t0 > 20000)
				sched_yield();
			if (ox_now_ns() - t0 > 1000000000ull)
				return 1;
		}
		if (i >= 0)
			t[i] = ox_now_ns() - t0;
	}
	report("raw ping", t, a.count);
	ox_link_close(l);
	return 0;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(s, "--serve") || !strcmp(s, "--client") || !strcmp(s, "--check") ||
		    !strcmp(s, "--lat") || !strcmp(s, "--echo") || !strcmp(s, "--ping")) {
			a.role = s + 2;
			a.ifname = v;
			i++;
		} else if (!strcmp(s, "--peer") && v) {
			if (parse_mac(v, a.peer))
				return 2;
			i++;
		} else if (!strcmp(s, "--allow") && v && a.nallow < 8) {
			if (parse_mac(v, a.allow[a.nallow++]))
				return 2;
			i++;
		} else if (!strcmp(s, "--slot") && v) {
			a.slot = atoi(v);
			i++;
		} else if (!strcmp(s, "--ops") && v) {
			a.ops = atoi(v);
			i++;
		} else if (!strcmp(s, "--credit") && v) {
			a.credit = atoi(v);
			i++;
		} else if (!strcmp(s, "--slots") && v) {
			a.slots = atoi(v);
			i++;
		} else if (!strcmp(s, "--adds") && v) {
			a.adds = atoi(v);
			i++;
		} else if (!strcmp(s, "--count") && v) {
			a.count = atoi(v);
			i++;
		} else if (!strcmp(s, "--size") && v) {
			a.size = atoi(v);
			i++;
		} else if (!strcmp(s, "--expect") && v) {
			a.expect = strtoull(v, NULL, 0);
			i++;
		} else if (!strcmp(s, "--loss") && v) {
			a.loss = atof(v);
			i++;
		} else if (!strcmp(s, "--time") && v) {
			a.time_s = atof(v);
			i++;
		} else if (!strcmp(s, "--mode") && v) {
			a.mode = !strcmp(v, "103") ? OX_MODE_103 : OX_MODE_11;
			i++;
		} else if (!strcmp(s, "--block")) {
			a.block = 1;
		} else if (!strcmp(s, "--xdp")) {
			a.xdp = 1;
		} else if (!strcmp(s, "--verbatim")) {
			a.verbatim = 1;
		} else {
			fprintf(stderr, "unknown argument %s\n", s);
			return 2;
		}
	}
	if (!a.role || !a.ifname || a.slot < 0 || a.slot > 2 || a.size < 8 || a.size > 8192 ||
	    a.count < 1 || a.count > 10000000) {
		fprintf(stderr, "usage: see the comment at the top of ox_selftest.c\n");
		return 2;
	}
	signal(SIGTERM, on_sig);
	signal(SIGINT, on_sig);
	signal(SIGALRM, on_sig);
	if (!strcmp(a.role, "serve"))
		return serve();
	if (!strcmp(a.role, "client"))
		return client();
	if (!strcmp(a.role, "check"))
		return check();
	if (!strcmp(a.role, "lat"))
		return lat();
	if (!strcmp(a.role, "echo"))
		return echo();
	return ping();
}
