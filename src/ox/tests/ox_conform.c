/*
 * ox_conform.c - an OmniXtend requester written from the specification
 * alone, to check a memory endpoint (ethermemd --ox-export) the way other
 * people's requesters use it.  It shares only the frame codec with ethermem:
 * sequence numbers, acknowledgements, credits and the open are its own, kept
 * as plain as a small software peer keeps them, so that ethermem's own
 * requester and endpoint cannot agree on a mistake behind the test's back.
 *
 *   ox-conform --iface IF --peer MAC --base ADDR --len WINDOW [options]
 *
 * The data checks use the window's first MiB; the denied check goes past
 * its end.
 *
 * Opening, as the published requesters do it (--grant CHANS:EXP, several
 * allowed): 1.1 opens with an open-connection frame carrying the first grant
 * and sends one normal frame per further grant; 1.0.3 has no open, its first
 * normal frame carries the first grant.  --wait CHANS sends no request until
 * the endpoint has granted on each of those channels, and in 1.1 a grant of
 * more than 128 flits, the start every 1.1 peer assumes (ETRI's C endpoint
 * takes a grant as its new total and waits for exactly that).
 *
 * Then the checks (--checks LIST, default all), against a model of the
 * window: whole words (8 B..1 KiB), narrow Put/Get at every offset of a word,
 * PutPartialData with sparse masks, Arithmetic/Logical at 1, 2, 4 and 8 bytes
 * with every parameter, many messages per frame, an out-of-window Get (denied
 * bit).  --max-log2 N caps bursts at 2^N bytes (a peer's A credit may
 * never cover a 1 KiB write); --frame-flits N keeps frames to N flits
 * (ETRI's C endpoint has room for 65 after the TLoE header); --no-credit sends regardless of the peer's A
 * credit, as oxmem-fuse does (for nodes that return less than they are
 * spent, which stalls any requester that honours credit); --match-ack
 * requires every response to come in a frame acknowledging exactly the
 * frame of its request, as oxmem-fuse does.  --open-only sends the open and exits without acknowledging anything
 * (a peer that vanishes).  Prints "ops N bytes-verified M"; exit 0 pass,
 * 1 a check failed, 2 usage or no answer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ox/ox.h"

#define MAXQ 256 /* requests in flight */
#define RING 64  /* our unacknowledged frames */

static struct {
	const char *ifname;
	uint8_t peer[6];
	uint64_t base, len;
	enum ox_mode mode;
	bool verbatim, open_only, no_credit, match_ack;
	unsigned wait_mask;
	unsigned ngrant;
	uint8_t grant_ch[8], grant_exp[8];
	const char *checks;
	uint64_t seed;
	uint64_t span;        /* the part of the window the data checks use */
	unsigned max_log2;    /* largest burst, 10 = 1 KiB */
	unsigned frame_flits; /* most flits per frame we send, 0 = the MTU's */
} a = { .len = 1 << 20,
	.checks = "words,narrow,partial,atomic,multi,denied",
	.seed = 1,
	.max_log2 = 10 };

static struct ox_link *L;
static uint8_t *model; /* what the window should hold */
static unsigned long long n_ops, n_bytes, n_fail;

/* ------------------------------------------------------------ link state */

static uint32_t next_tx, next_rx, ackd = OX_SEQ_MASK;
static int64_t credit[6];    /* flits we may send, per channel */
static unsigned granted_big; /* channels granted > 128 (1.1) or at all */
static uint8_t ring[RING][OX_ETH_HLEN + 9000];
static size_t ring_len[RING];
static unsigned ring_n; /* unacknowledged, oldest at index 0 */
static bool ack_owed;
static uint32_t owed_d; /* D flits consumed, not yet returned */

struct req {
	struct ox_msg m;
	uint8_t data[1024], pmask[128];
	bool busy, done;
	uint32_t frame_seq; /* the frame that carried the request */
	uint8_t d_opcode, denied, corrupt;
	uint8_t got[1024];
};
static struct req q[MAXQ];

static uint64_t rnd(void)
{
	a.seed ^= a.seed << 13;
	a.seed ^= a.seed >> 7;
	a.seed ^= a.seed << 17;
	return a.seed;
}

static void fail(const char *what, unsigned long long x)
{
	if (n_fail++ < 20)
		fprintf(stderr, "FAIL: %s (0x%llx)\n", what, x);
}

static void send_frame(const struct ox_msg *m, unsigned n, uint8_t type, uint8_t cch, uint8_t cexp)
{
	if (ring_n == RING) {
		fprintf(stderr, "ox-conform: %u frames unacknowledged\n", RING);
		exit(2);
	}
	uint8_t *f = ring[ring_n];
	struct ox_enc e;
	/* return consumed D credit on every frame that can carry it */
	if (!cch && owed_d) {
		cch = OX_CH_D;
		cexp = (uint8_t)(31 - __builtin_clz(owed_d));
		owed_d -= 1u << cexp;
	}
	ox_eth_write(f, a.peer, L->mac, OX_ETHERTYPE_DEFAULT);
	ox_enc_begin(&e, f + OX_ETH_HLEN, L->mtu, a.verbatim);
	for (unsigned i = 0; i < n; i++)
		if (ox_enc_add(&e, &m[i])) {
			fprintf(stderr, "ox-conform: message %u does not fit\n", i);
			exit(2);
		}
	struct ox_tloe h = { .type = a.mode == OX_MODE_11 ? type : 0,
			     .seq = next_tx,
			     .seq_ack = ox_seq_sub(next_rx, 1),
			     .ack = 1,
			     .credit_ch = cch,
			     .credit = cexp };
	ring_len[ring_n] = OX_ETH_HLEN + ox_enc_finish(&e, &h);
	next_tx = ox_seq_add(next_tx, 1);
	ox_link_send(L, f, ring_len[ring_n++]);
	ox_link_flush(L);
	ack_owed = false;
}

static void send_ackonly(void)
{
	uint8_t f[OX_ETH_HLEN + OX_MIN_PAYLOAD];
	struct ox_enc e;
	/* 1.0.3 has no ACK-only type: repeat a sequence number the peer has
	 * acknowledged, which it drops as a duplicate after reading the ack */
	struct ox_tloe h = { .type = a.mode == OX_MODE_11 ? OX_T_ACKONLY : 0,
			     .seq = a.mode == OX_MODE_11 ? next_tx : ackd,
			     .seq_ack = ox_seq_sub(next_rx, 1),
			     .ack = 1 };
	ox_eth_write(f, a.peer, L->mac, OX_ETHERTYPE_DEFAULT);
	ox_enc_begin(&e, f + OX_ETH_HLEN, OX_MIN_PAYLOAD, false);
	ox_link_send(L, f, OX_ETH_HLEN + ox_enc_finish(&e, &h));
	ox_link_flush(L);
	ack_owed = false;
}

static void on_ack(uint32_t sa)
{
	uint32_t n = ox_seq_sub(sa, ackd);
	if (!n || n > ring_n)
		return;
	memmove(ring, ring[n], (ring_n - n) * sizeof(ring[0]));
	memmove(ring_len, ring_len + n, (ring_n - n) * sizeof(ring_len[0]));
	ring_n -= n;
	ackd = sa;
}

static void deliver(struct ox_msg *m, uint32_t seq_ack)
{
	if (m->chan != OX_CH_D || m->source >= MAXQ || !q[m->source].busy || q[m->source].done) {
		fail("response matching no request", m->source);
		return;
	}
	struct req *r = &q[m->source];
	owed_d += m->flits;
	r->done = true;
	/* oxmem-fuse finds the request a response answers by the sequence
	 * number the response's frame acknowledges */
	if (a.match_ack && seq_ack != r->frame_seq)
		fail("response frame acknowledges another request frame", seq_ack);
	r->d_opcode = m->opcode;
	r->denied = m->denied;
	r->corrupt = m->corrupt;
	if (m->size != r->m.size)
		fail("response size differs from the request's", m->size);
	else if (m->opcode == OX_D_ACCESSACKDATA && !m->corrupt) {
		m->addr = r->m.addr; /* picks the byte lanes of narrow data */
		ox_msg_read(m, r->got, a.verbatim);
	}
}

/* One frame in, if any within timeout_ns.  Returns 1 if one was handled. */
static int poll_in(uint64_t timeout_ns)
{
	static uint8_t buf[OX_ETH_HLEN + 9000];
	static struct ox_frame fr;
	int n = ox_link_recv(L, buf, sizeof(buf));
	if (n == 0) {
		ox_link_wait(L, timeout_ns);
		n = ox_link_recv(L, buf, sizeof(buf));
	}
	if (n <= 0)
		return 0;
	if (n < OX_ETH_HLEN || memcmp(buf + 6, a.peer, 6) || memcmp(buf, L->mac, 6))
		return 1;
	if (ox_frame_decode(buf + OX_ETH_HLEN, (size_t)n - OX_ETH_HLEN, &fr)) {
		fail("endpoint sent a malformed frame", (unsigned)fr.reject);
		return 1;
	}
	on_ack(fr.h.seq_ack);
	if (a.mode == OX_MODE_11 && fr.h.type == OX_T_ACKONLY)
		return 1;
	if (fr.h.seq != next_rx) {
		ack_owed = true; /* duplicate or gap: say where we are */
		return 1;
	}
	next_rx = ox_seq_add(next_rx, 1);
	ack_owed = true;
	if (fr.h.credit_ch >= OX_CH_A && fr.h.credit_ch <= OX_CH_E) {
		uint64_t g = 1ull << fr.h.credit;
		credit[fr.h.credit_ch] += (int64_t)g;
		if (a.mode == OX_MODE_103 || g > 128)
			granted_big |= 1u << fr.h.credit_ch;
	}
	for (unsigned i = 0; i < fr.nmsg; i++)
		deliver(&fr.msg[i], fr.h.seq_ack);
	return 1;
}

/* Polls until cond() or the deadline; retransmits on silence. */
static bool pump(bool (*cond)(void), double seconds)
{
	uint64_t end = ox_now_ns() + (uint64_t)(seconds * 1e9), quiet = ox_now_ns();
	while (!cond()) {
		uint64_t now = ox_now_ns();
		if (now > end)
			return false;
		if (poll_in(1000000)) {
			quiet = ox_now_ns();
		} else if (ring_n && ox_now_ns() - quiet > 20000000) {
			for (unsigned i = 0; i < ring_n; i++)
				ox_link_send(L, ring[i], ring_len[i]);
			ox_link_flush(L);
			quiet = ox_now_ns();
		}
		if (owed_d >= 64 && ring_n < RING)
			send_frame(NULL, 0, OX_T_NORMAL, 0, 0); /* credit alone */
		if (ack_owed)
			send_ackonly();
	}
	return true;
}

static bool grants_seen(void)
{
	return (granted_big & a.wait_mask) == a.wait_mask;
}

static unsigned nq;
static bool all_done(void)
{
	for (unsigned i = 0; i < nq; i++)
		if (q[i].busy && !q[i].done)
			return false;
	return true;
}

/* ------------------------------------------------------------ requests */

static struct req *new_req(unsigned op, unsigned param, unsigned size, uint64_t off)
{
	if (nq == MAXQ) {
		fprintf(stderr, "ox-conform: too many requests in one batch\n");
		exit(2);
	}
	struct req *r = &q[nq];
	memset(r, 0, sizeof(*r));
	r->busy = true;
	r->m = (struct ox_msg){ .chan = OX_CH_A,
				.opcode = (uint8_t)op,
				.param = (uint8_t)param,
				.size = (uint8_t)size,
				.source = nq,
				.addr = a.base + off,
				.data = r->data,
				.pmask = r->pmask };
	nq++;
	return r;
}

static int64_t want_a;
static bool a_credit_ok(void)
{
	return credit[OX_CH_A] >= want_a;
}

/* Sends the batch, frames filled as far as MTU and credit allow, and waits
 * for every answer. */
static void run_batch(void)
{
	unsigned i = 0;
	while (i < nq) {
		struct ox_msg m[OX_MAX_MSGS];
		/* flit 0 is the TLoE header, the last one the mask; a message
		 * reaching past flit 64 must end the frame (mask bits) */
		unsigned n = 0, pos = 1, cap = L->mtu / 8;
		if (a.frame_flits && a.frame_flits < cap)
			cap = a.frame_flits;
		while (i < nq && n < OX_MAX_MSGS && pos <= 64) {
			int fl = ox_msg_flits(OX_CH_A, q[i].m.opcode, q[i].m.size);
			if (pos + (unsigned)fl + 1 > cap || (credit[OX_CH_A] < fl && !a.no_credit))
				break;
			credit[OX_CH_A] -= fl;
			pos += (unsigned)fl;
			q[i].frame_seq = next_tx;
			m[n++] = q[i++].m;
		}
		if (!n) {
			want_a = ox_msg_flits(OX_CH_A, q[i].m.opcode, q[i].m.size);
			if (!pump(a_credit_ok, 5)) {
				fprintf(stderr, "ox-conform: no A credit returned\n");
				exit(2);
			}
			continue;
		}
		send_frame(m, n, OX_T_NORMAL, 0, 0);
	}
	if (!pump(all_done, 10)) {
		unsigned open_n = 0;
		for (unsigned k = 0; k < nq; k++)
			open_n += q[k].busy && !q[k].done;
		fprintf(stderr,
			"ox-conform: %u of %u requests unanswered (next_rx %u, "
			"%u frames unacknowledged, A credit %lld)\n",
			open_n, nq, next_rx, ring_n, (long long)credit[OX_CH_A]);
		exit(2);
	}
	for (unsigned k = 0; k < nq; k++)
		if (q[k].busy)
			n_ops++;
}

static void check_data(struct req *r, const uint8_t *want, unsigned n, const char *what)
{
	if (r->d_opcode != OX_D_ACCESSACKDATA || r->denied || r->corrupt)
		fail(what, r->m.addr);
	else if (memcmp(r->got, want, n))
		fail(what, r->m.addr);
	else
		n_bytes += n;
}

static void check_ack(struct req *r, const char *what)
{
	if (r->d_opcode != OX_D_ACCESSACK || r->denied)
		fail(what, r->m.addr);
}

static struct req *put(uint64_t off, unsigned size)
{
	struct req *r = new_req(OX_A_PUTFULL, 0, size, off);
	for (unsigned i = 0; i < 1u << size; i++)
		r->data[i] = (uint8_t)rnd();
	memcpy(model + off, r->data, 1u << size);
	return r;
}

/* Whole words, 8 B to 1 KiB (what every published node serves). */
static void c_words(void)
{
	for (unsigned s = 3; s <= a.max_log2; s++) {
		nq = 0;
		uint64_t off[8];
		struct req *p[8];
		for (int k = 0; k < 8; k++) {
			off[k] = (rnd() % (a.span >> s)) << s;
			p[k] = put(off[k], s);
		}
		run_batch();
		for (int k = 0; k < 8; k++)
			check_ack(p[k], "PutFullData");
		nq = 0;
		struct req *g[8];
		for (int k = 0; k < 8; k++)
			g[k] = new_req(OX_A_GET, 0, s, off[k]);
		run_batch();
		for (int k = 0; k < 8; k++)
			check_data(g[k], model + off[k], 1u << s, "Get of a whole word");
	}
}

/* 1, 2 and 4 bytes at every aligned offset of a word, written and read. */
static void c_narrow(void)
{
	uint64_t w = (rnd() % (a.span / 16)) * 16;
	for (unsigned s = 0; s <= 2; s++) {
		nq = 0;
		for (unsigned o = 0; o < 16; o += 1u << s)
			put(w + o, s);
		run_batch();
		nq = 0;
		for (unsigned o = 0; o < 16; o += 1u << s)
			new_req(OX_A_GET, 0, s, w + o);
		run_batch();
		for (unsigned k = 0; k < nq; k++)
			check_data(&q[k], model + q[k].m.addr - a.base, 1u << s, "narrow Get");
		/* the whole word must show each narrow write in its own lane */
		nq = 0;
		struct req *g = new_req(OX_A_GET, 0, 4, w);
		run_batch();
		check_data(g, model + w, 16, "word after narrow Puts");
	}
}

/* PutPartialData with sparse byte masks, from 1 B to 1 KiB. */
static void c_partial(void)
{
	for (unsigned s = 0; s <= a.max_log2; s++) {
		uint64_t off = (rnd() % (a.span >> s)) << s;
		nq = 0;
		struct req *r = new_req(OX_A_PUTPARTIAL, 0, s, off);
		uint64_t pat = rnd();
		for (unsigned i = 0; i < 1u << s; i++) {
			r->data[i] = (uint8_t)rnd();
			bool on = s == 0 || (pat >> (i % 64) & 1 && i % 3 != 1);
			if (on) {
				r->pmask[i / 8] |= (uint8_t)(1u << (i % 8));
				model[off + i] = r->data[i];
			}
		}
		run_batch();
		check_ack(r, "PutPartialData");
		nq = 0;
		struct req *g = new_req(OX_A_GET, 0, s < 3 ? 3 : s, off & ~7ull);
		run_batch();
		check_data(g, model + (off & ~7ull), s < 3 ? 8 : 1u << s,
			   "data after PutPartialData");
	}
}

static uint64_t sx(uint64_t v, unsigned bytes)
{
	unsigned sh = 64 - 8 * bytes;
	return (uint64_t)((int64_t)(v << sh) >> sh);
}

/* What an atomic leaves in memory: old value o, operand v, width bytes. */
static uint64_t amo(unsigned op, unsigned param, uint64_t o, uint64_t v, unsigned bytes)
{
	uint64_t mask = bytes == 8 ? ~0ull : (1ull << (8 * bytes)) - 1;
	o &= mask;
	v &= mask;
	if (op == OX_A_LOGIC)
		switch (param) {
		case OX_XOR:
			return o ^ v;
		case OX_OR:
			return o | v;
		case OX_AND:
			return o & v;
		default:
			return v;
		}
	switch (param) {
	case OX_MIN:
		return (int64_t)sx(v, bytes) < (int64_t)sx(o, bytes) ? v : o;
	case OX_MAX:
		return (int64_t)sx(v, bytes) > (int64_t)sx(o, bytes) ? v : o;
	case OX_MINU:
		return v < o ? v : o;
	case OX_MAXU:
		return v > o ? v : o;
	default:
		return (o + v) & mask;
	}
}

/* ArithmeticData (every param) and LogicalData (every param) at 1, 2, 4, 8
 * bytes: the old value comes back, the new one is in memory. */
static void c_atomic(void)
{
	for (unsigned s = 0; s <= 3; s++) {
		unsigned n = 1u << s;
		for (unsigned op = OX_A_ARITH; op <= OX_A_LOGIC; op++)
			for (unsigned param = 0; param <= (op == OX_A_ARITH ? 4u : 3u); param++) {
				uint64_t off =
					(rnd() % (a.span / 8)) * 8 + ((rnd() % 8) & ~(n - 1ull));
				uint64_t before = 0, v = rnd();
				memcpy(&before, model + off, n);
				nq = 0;
				struct req *r = new_req(op, param, s, off);
				memcpy(r->data, &v, n);
				run_batch();
				uint64_t old = 0, after = amo(op, param, before, v, n);
				memcpy(&old, r->got, n);
				if (r->d_opcode != OX_D_ACCESSACKDATA || r->denied || old != before)
					fail(op == OX_A_ARITH ? "ArithmeticData old value"
							      : "LogicalData old value",
					     r->m.addr);
				else
					n_bytes += n;
				memcpy(model + off, &after, n);
				nq = 0;
				struct req *g = new_req(OX_A_GET, 0, 3, off & ~7ull);
				run_batch();
				check_data(g, model + (off & ~7ull), 8, "memory after an atomic");
			}
	}
}

/* Many messages per frame: 48 Puts and Gets of mixed sizes, then a check. */
static void c_multi(void)
{
	nq = 0;
	uint64_t w = (rnd() % (a.span / 512)) * 512;
	for (unsigned k = 0; k < 24; k++)
		put(w + k * 16, k % 2 ? 3 : 4);
	for (unsigned k = 0; k < 24; k++)
		new_req(OX_A_GET, 0, 3, w + k * 16);
	run_batch();
	for (unsigned k = 0; k < 24; k++)
		check_ack(&q[k], "PutFullData in a full frame");
	for (unsigned k = 24; k < 48; k++)
		check_data(&q[k], model + q[k].m.addr - a.base, 8, "Get in a full frame");
}

/* Outside the window: an answer with the denied bit, never silence. */
static void c_denied(void)
{
	nq = 0;
	struct req *r = new_req(OX_A_GET, 0, 3, a.len);
	struct req *p = new_req(OX_A_PUTFULL, 0, 3, a.len + 64);
	run_batch();
	if (!r->denied || !p->denied)
		fail("access outside the window not denied", a.base + a.len);
}

/* ------------------------------------------------------------ main */

static int parse_mac(const char *s, uint8_t m[6])
{
	unsigned v[6];
	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++)
		m[i] = (uint8_t)v[i];
	return 0;
}

static unsigned chans(const char *s)
{
	unsigned m = 0;
	for (; *s && *s != ':'; s++)
		if (*s >= 'A' && *s <= 'E')
			m |= 1u << (*s - 'A' + 1);
	return m;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: ox-conform --iface IF --peer MAC --base ADDR [--len N] "
		"[--mode 11|103] [--verbatim] [--grant CHANS:EXP]... [--wait CHANS] "
		"[--checks LIST] [--max-log2 N] [--frame-flits N] [--no-credit] [--match-ack] [--open-only] [--seed N]\n");
	return 2;
}

int main(int argc, char **argv)
{
	bool have_peer = false;
	for (int i = 1; i < argc; i++) {
		const char *s = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(s, "--verbatim")) {
			a.verbatim = true;
			continue;
		}
		if (!strcmp(s, "--open-only")) {
			a.open_only = true;
			continue;
		}
		if (!strcmp(s, "--no-credit")) {
			a.no_credit = true;
			continue;
		}
		if (!strcmp(s, "--match-ack")) {
			a.match_ack = true;
			continue;
		}
		if (!v)
			return usage();
		i++;
		if (!strcmp(s, "--iface"))
			a.ifname = v;
		else if (!strcmp(s, "--peer")) {
			if (parse_mac(v, a.peer))
				return usage();
			have_peer = true;
		} else if (!strcmp(s, "--base"))
			a.base = strtoull(v, NULL, 0);
		else if (!strcmp(s, "--len"))
			a.len = strtoull(v, NULL, 0);
		else if (!strcmp(s, "--mode"))
			a.mode = !strcmp(v, "103") ? OX_MODE_103 : OX_MODE_11;
		else if (!strcmp(s, "--wait"))
			a.wait_mask = chans(v);
		else if (!strcmp(s, "--checks"))
			a.checks = v;
		else if (!strcmp(s, "--seed"))
			a.seed = strtoull(v, NULL, 0) | 1;
		else if (!strcmp(s, "--max-log2"))
			a.max_log2 = (unsigned)atoi(v);
		else if (!strcmp(s, "--frame-flits"))
			a.frame_flits = (unsigned)atoi(v);
		else if (!strcmp(s, "--grant")) {
			const char *c = strchr(v, ':');
			unsigned m = chans(v), e = c ? (unsigned)atoi(c + 1) : 99;
			if (!c || e > 31 || !m)
				return usage();
			for (unsigned ch = OX_CH_A; ch <= OX_CH_E && a.ngrant < 8; ch++)
				if (m & 1u << ch) {
					a.grant_ch[a.ngrant] = (uint8_t)ch;
					a.grant_exp[a.ngrant++] = (uint8_t)e;
				}
		} else
			return usage();
	}
	if (!a.ifname || !have_peer || a.len < 4096 || a.len % 4096 || a.max_log2 < 3 ||
	    a.max_log2 > 10)
		return usage();
	if (!a.ngrant) { /* the usual: D, the channel we receive */
		a.grant_ch[0] = OX_CH_D;
		a.grant_exp[0] = 16;
		a.ngrant = 1;
	}
	int e = ox_link_packet_open(a.ifname, 0, &L);
	if (e) {
		fprintf(stderr, "ox-conform: %s: %s\n", a.ifname, strerror(-e));
		return 2;
	}
	a.span = a.len < (1u << 20) ? a.len : 1u << 20;
	model = calloc(1, a.span);
	if (!model)
		return 2;
	uint32_t start = a.mode == OX_MODE_11 ? 128 : 0;
	for (int ch = OX_CH_A; ch <= OX_CH_E; ch++)
		credit[ch] = start;

	for (unsigned k = 0; k < a.ngrant; k++)
		send_frame(NULL, 0, k == 0 ? OX_T_OPEN : OX_T_NORMAL, a.grant_ch[k],
			   a.grant_exp[k]);
	if (a.open_only) {
		printf("open sent, leaving without a word\n");
		ox_link_close(L);
		free(model);
		return 0;
	}
	if (!pump(grants_seen, 5)) {
		fprintf(stderr, "ox-conform: grants seen on %#x, waited for %#x\n", granted_big,
			a.wait_mask);
		return 1;
	}
	printf("open: grants A %lld B %lld C %lld D %lld E %lld\n", (long long)credit[1],
	       (long long)credit[2], (long long)credit[3], (long long)credit[4],
	       (long long)credit[5]);

	/* a known starting content for the model: zero the first part */
	unsigned fb = 1u << a.max_log2;
	for (uint64_t off = 0; off < a.span; off += 8 * fb) {
		nq = 0;
		for (unsigned k = 0; k < 8; k++) {
			struct req *r = new_req(OX_A_PUTFULL, 0, a.max_log2, off + k * fb);
			memset(r->data, 0, fb);
		}
		run_batch();
	}
	static const struct {
		const char *name;
		void (*fn)(void);
	} all[] = {
		{ "words", c_words },   { "narrow", c_narrow }, { "partial", c_partial },
		{ "atomic", c_atomic }, { "multi", c_multi },   { "denied", c_denied },
	};
	for (unsigned i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (strstr(a.checks, all[i].name)) {
			unsigned long long f0 = n_fail;
			all[i].fn();
			printf("%-8s %s\n", all[i].name, n_fail == f0 ? "ok" : "FAILED");
		}
	/* leave nothing unacknowledged, then close (1.1) */
	pump(all_done, 0.01);
	if (a.mode == OX_MODE_11) {
		send_frame(NULL, 0, OX_T_CLOSE, 0, 0);
		nq = 0;
		pump(all_done, 0.05);
	}
	printf("ops %llu bytes-verified %llu failures %llu\n", n_ops, n_bytes, n_fail);
	ox_link_close(L);
	free(model);
	return n_fail ? 1 : 0;
}
