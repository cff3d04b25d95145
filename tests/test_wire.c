/*
 * test_wire.c - the protocol codec and the small parsers, without sockets:
 * round trips, and every way a header or payload can be malformed.
 */
#include "harness.h"
#include "common/util.h"
#include "common/wire.h"

static void test_header(void)
{
	struct em_hdr h = { .magic = EM_WIRE_MAGIC,
			    .version = EM_WIRE_VERSION,
			    .op = EM_W_READ,
			    .flags = EM_WF_RESPONSE,
			    .status = -ERANGE,
			    .len = 4096,
			    .tag = 0x1122334455667788ull,
			    .region = 7,
			    .aux = 9,
			    .offset = 0xfedcba9876543210ull },
		      d;
	uint8_t b[EM_HDR_LEN];
	const char *why;

	em_hdr_encode(b, &h);
	CHECK(b[0] == 'E' && b[1] == 'M' && b[2] == 'E' && b[3] == 'M');
	CHECK_RC(em_hdr_decode(b, &d, &why), 0);
	CHECK(d.op == h.op && d.flags == h.flags && d.status == -ERANGE && d.len == 4096);
	CHECK(d.tag == h.tag && d.region == 7 && d.aux == 9 && d.offset == h.offset);

	b[0] ^= 1;
	CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	b[0] ^= 1;
	b[4] = 99;
	CHECK_RC(em_hdr_decode(b, &d, &why), -EM_EVERSION);
	b[4] = EM_WIRE_VERSION;
	b[5] = 0;
	CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	b[5] = EM_W__MAX;
	CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	b[5] = EM_W_READ;
	b[7] = 0x80; /* unknown flag */
	CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	b[7] = 0;
	/* a response's status is 0 or -errno: never a count, never garbage */
	h.status = 5;
	em_hdr_encode(b, &h);
	CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	h.status = INT32_MIN;
	em_hdr_encode(b, &h);
	CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	h.status = -EM_EAUTH;
	em_hdr_encode(b, &h);
	CHECK_RC(em_hdr_decode(b, &d, &why), 0);
	h.status = -ERANGE;
	/* a read response may carry EM_MAX_IO, a read request nothing */
	h.len = EM_MAX_IO + 1;
	em_hdr_encode(b, &h);
	CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	h.flags = 0;
	h.len = 1;
	em_hdr_encode(b, &h);
	CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	h.op = EM_W_WRITE;
	h.len = EM_MAX_IO;
	em_hdr_encode(b, &h);
	CHECK_RC(em_hdr_decode(b, &d, &why), 0);
	h.len = 0xffffffffu;
	em_hdr_encode(b, &h);
	CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	/* at most once: writes and atomics with an identity, nothing else */
	{
		struct em_hdr o = { .magic = EM_WIRE_MAGIC,
				    .version = EM_WIRE_VERSION,
				    .op = EM_W_WRITE,
				    .flags = EM_WF_ONCE,
				    .len = 8,
				    .tag = 1ull << 40 | 1 };
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), 0);
		CHECK(d.flags == EM_WF_ONCE && d.tag == o.tag);
		o.op = EM_W_ATOMIC;
		o.len = 16;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), 0);
		o.tag = 0;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
		o.tag = 5;
		o.op = EM_W_READ;
		o.len = 0;
		o.aux = 8;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
		o.op = EM_W_WRITE;
		o.flags = EM_WF_ONCE | EM_WF_RESPONSE;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
		o.op = EM_W_BYE;
		o.flags = 0;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), 0);
		o.len = 1;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	}
	/* a repair's copy: reads and writes (requests) only */
	{
		struct em_hdr o = { .magic = EM_WIRE_MAGIC,
				    .version = EM_WIRE_VERSION,
				    .op = EM_W_READ,
				    .flags = EM_WF_COPY,
				    .tag = 3,
				    .aux = 4096 };
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), 0);
		CHECK(d.flags == EM_WF_COPY);
		o.op = EM_W_WRITE;
		o.flags = EM_WF_COPY | EM_WF_ONCE;
		o.len = 4096;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), 0);
		o.op = EM_W_ATOMIC;
		o.len = 16;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
		o.op = EM_W_READ;
		o.len = 0;
		o.flags = EM_WF_COPY | EM_WF_RESPONSE;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
		o.flags = 16; /* not a flag */
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	}
	/* a layout-version check: a read request only, never with a copy */
	{
		struct em_hdr o = { .magic = EM_WIRE_MAGIC,
				    .version = EM_WIRE_VERSION,
				    .op = EM_W_READ,
				    .flags = EM_WF_VER,
				    .tag = 4,
				    .aux = 7 };
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), 0);
		CHECK(d.flags == EM_WF_VER && d.aux == 7);
		o.flags = EM_WF_VER | EM_WF_COPY;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
		o.flags = EM_WF_VER | EM_WF_RESPONSE;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
		o.flags = EM_WF_VER;
		o.op = EM_W_WRITE;
		em_hdr_encode(b, &o);
		CHECK_RC(em_hdr_decode(b, &d, &why), -EPROTO);
	}
}

static void test_namelayout(void)
{
	uint8_t b[200], lay[5] = { 1, 2, 3, 4, 5 };
	char name[EM_NAME_MAX + 1];
	const uint8_t *l;
	uint16_t ll;
	int n = em_namelayout_encode(b, sizeof(b), "weights", lay, 5);

	CHECK(n == 3 + 7 + 5);
	CHECK_RC(em_namelayout_decode(b, (size_t)n, name, &l, &ll), 0);
	CHECK(!strcmp(name, "weights") && ll == 5 && !memcmp(l, lay, 5));
	/* every truncation and every extension is refused */
	for (int k = 0; k < n; k++)
		CHECK(em_namelayout_decode(b, (size_t)k, name, &l, &ll) != 0);
	CHECK(em_namelayout_decode(b, (size_t)n + 1, name, &l, &ll) != 0);
	b[0] = 200; /* name length past the payload */
	CHECK(em_namelayout_decode(b, (size_t)n, name, &l, &ll) != 0);
	n = em_namelayout_encode(b, sizeof(b), "bad name", NULL, 0);
	CHECK_RC(em_namelayout_decode(b, (size_t)n, name, &l, &ll), -EINVAL);
	CHECK(em_namelayout_encode(b, 5, "toolongforcap", NULL, 0) == -ENOSPC);
}

/* A two-segment layout; the decoded copy matches field by field. */
static int make_layout(uint8_t *b, size_t cap, struct em_layout *l)
{
	memset(l, 0, sizeof(*l));
	l->size = 10ull << 30;
	l->chunk = 4u << 20;
	l->nseg = 2;
	l->plen = 3;
	memset(l->ids[0], 0xaa, EM_NODE_ID_LEN);
	memset(l->ids[1], 0xbb, EM_NODE_ID_LEN);
	l->pattern[0] = 0;
	l->pattern[1] = 1;
	l->pattern[2] = 0;
	return em_layout_encode(b, cap, l);
}

static void test_layout(void)
{
	uint8_t b[EM_MAX_LAYOUT], c[EM_MAX_LAYOUT];
	struct em_layout l, d;
	int n = make_layout(b, sizeof(b), &l);

	CHECK(n == 22 + 2 * EM_NODE_ID_LEN + 3);
	CHECK_RC(em_layout_decode(b, (size_t)n, &d), 0);
	CHECK(d.size == l.size && d.chunk == l.chunk && d.nseg == 2 && d.plen == 3);
	CHECK(!memcmp(d.ids, l.ids, 2 * EM_NODE_ID_LEN) && !memcmp(d.pattern, l.pattern, 3));
	CHECK(em_layout_encode(c, sizeof(c), &d) == n && !memcmp(b, c, (size_t)n));
	/* every truncation and every extension */
	for (int k = 0; k < n; k++)
		CHECK_RC(em_layout_decode(b, (size_t)k, &d), -EPROTO);
	CHECK_RC(em_layout_decode(b, (size_t)n + 1, &d), -EPROTO);
	/* each field out of range, one at a time */
	{
		struct {
			unsigned at;
			uint8_t v;
		} bad[] = {
			{ 0, 0 },   /* magic */
			{ 20, 0 },  /* no segment */
			{ 20, 65 }, /* more segments than a region may span */
			{ 21, 0 },  /* no pattern */
			{ 21, 65 }, /* too long a pattern */
			{ 21, 2 },  /* counts that disagree with the length */
			{ 22 + 2 * EM_NODE_ID_LEN + 1, 2 }, /* names a segment not there */
		};
		for (unsigned k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
			memcpy(c, b, (size_t)n);
			c[bad[k].at] = bad[k].v;
			CHECK_RC(em_layout_decode(c, (size_t)n, &d), -EPROTO);
		}
		memcpy(c, b, (size_t)n);
		memset(c + 4, 0, 8); /* size 0 */
		CHECK_RC(em_layout_decode(c, (size_t)n, &d), -EPROTO);
		memcpy(c, b, (size_t)n);
		memset(c + 12, 0, 8); /* chunk 0 */
		CHECK_RC(em_layout_decode(c, (size_t)n, &d), -EPROTO);
	}
	CHECK_RC(em_layout_encode(c, (size_t)n - 1, &l), -ENOSPC);
	l.pattern[1] = 2;
	CHECK_RC(em_layout_encode(c, sizeof(c), &l), -EINVAL);
}

/* The redundancy trailer: written only when there is something to say,
 * read back exactly, refused when inconsistent; a plain layout still
 * decodes as NONE at epoch 0 (what clients before redundancy wrote). */
static void test_layout_redundancy(void)
{
	uint8_t b[EM_MAX_LAYOUT], c[EM_MAX_LAYOUT];
	struct em_layout l, d;
	int n = make_layout(b, sizeof(b), &l), m;

	CHECK_RC(em_layout_decode(b, (size_t)n, &d), 0);
	CHECK(d.red == EM_RED_NONE && d.k == 0 && d.m == 0 && d.epoch == 0);
	/* ec:4+2 over six segments */
	memset(&l, 0, sizeof(l));
	l.size = 1 << 20;
	l.chunk = 4096;
	l.nseg = l.plen = 6;
	for (unsigned i = 0; i < 6; i++) {
		memset(l.ids[i], (int)i + 1, EM_NODE_ID_LEN);
		l.pattern[i] = (uint8_t)i;
	}
	l.red = EM_RED_EC;
	l.k = 4;
	l.m = 2;
	l.epoch = 7;
	m = em_layout_encode(b, sizeof(b), &l);
	CHECK(m == 22 + 6 * EM_NODE_ID_LEN + 6 + 8);
	CHECK_RC(em_layout_decode(b, (size_t)m, &d), 0);
	CHECK(d.red == EM_RED_EC && d.k == 4 && d.m == 2 && d.epoch == 7 && d.nseg == 6);
	CHECK(d.flags == 0);
	/* a part being filled says so, and only that flag exists */
	l.flags = EM_LAYOUT_FILLING;
	CHECK(em_layout_encode(b, sizeof(b), &l) == m);
	CHECK_RC(em_layout_decode(b, (size_t)m, &d), 0);
	CHECK(d.flags == EM_LAYOUT_FILLING && d.epoch == 7);
	/* a part being filled may carry its repair's progress, 16 bytes more */
	l.flags = EM_LAYOUT_FILLING | EM_LAYOUT_PROGRESS;
	l.done = 3;
	l.total = 9;
	CHECK(em_layout_encode(b, sizeof(b), &l) == m + EM_LAYOUT_PROGRESS_LEN);
	CHECK_RC(em_layout_decode(b, (size_t)m + EM_LAYOUT_PROGRESS_LEN, &d), 0);
	CHECK(d.flags == l.flags && d.done == 3 && d.total == 9 && d.epoch == 7);
	CHECK_RC(em_layout_decode(b, (size_t)m, &d), -EPROTO); /* flag without bytes */
	memset(b + m, 0xff, 8);                                /* done > total */
	CHECK_RC(em_layout_decode(b, (size_t)m + EM_LAYOUT_PROGRESS_LEN, &d), -EPROTO);
	l.done = 10; /* nor can it be encoded */
	CHECK_RC(em_layout_encode(b, sizeof(b), &l), -EINVAL);
	l.done = 0;
	l.total = 0;
	CHECK_RC(em_layout_encode(b, sizeof(b), &l), -EINVAL);
	l.flags = EM_LAYOUT_PROGRESS; /* only while filling */
	l.total = 9;
	CHECK_RC(em_layout_encode(b, sizeof(b), &l), -EINVAL);
	l.flags = EM_LAYOUT_FILLING;
	CHECK(em_layout_encode(b, sizeof(b), &l) == m);
	b[m - 5] |= EM_LAYOUT_PROGRESS; /* the flag set, the bytes missing */
	CHECK_RC(em_layout_decode(b, (size_t)m, &d), -EPROTO);
	l.done = l.total = 0;
	l.flags = 0;
	m = em_layout_encode(b, sizeof(b), &l);
	for (int k = 0; k < m; k++)
		CHECK(em_layout_decode(b, (size_t)k, &d) != 0 || k == m - 8);
	CHECK_RC(em_layout_decode(b, (size_t)m + 1, &d), -EPROTO);
	{
		unsigned t = (unsigned)m - 8;
		struct {
			unsigned at;
			uint8_t v;
		} bad[] = {
			{ t, 0 },     /* redundancy 0 in a trailer */
			{ t, 9 },     /* unknown redundancy */
			{ t + 1, 5 }, /* k + m != segments */
			{ t + 2, 0 }, /* ec without parity */
			{ t + 3, 2 }, /* a flag no one defined */
			{ t - 1, 4 }, /* pattern not 0..n-1 */
		};
		for (unsigned k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
			memcpy(c, b, (size_t)m);
			c[bad[k].at] = bad[k].v;
			CHECK_RC(em_layout_decode(c, (size_t)m, &d), -EPROTO);
		}
	}
	/* replicate:3 */
	l.nseg = l.plen = 3;
	l.red = EM_RED_REPLICATE;
	l.k = 3;
	l.m = 0;
	m = em_layout_encode(b, sizeof(b), &l);
	CHECK_RC(em_layout_decode(b, (size_t)m, &d), 0);
	CHECK(d.red == EM_RED_REPLICATE && d.k == 3 && d.m == 0);
	l.k = 1; /* one copy is not replication */
	CHECK_RC(em_layout_encode(b, sizeof(b), &l), -EINVAL);
}

static void test_list(void)
{
	uint8_t b[1024], lay[EM_MAX_LAYOUT];
	const char *names[3] = { "a", "model.weights", "z9" };
	struct em_layout l;
	size_t len = 0, pos = 0;
	int ll = make_layout(lay, sizeof(lay), &l);

	for (int i = 0; i < 3; i++) {
		int n = em_list_entry_encode(b + len, sizeof(b) - len, 1000u + (unsigned)i,
					     names[i], lay, (uint16_t)ll);
		CHECK(n == 8 + 3 + (int)strlen(names[i]) + ll);
		len += (size_t)n;
	}
	for (int i = 0; i < 3; i++) {
		char nm[EM_NAME_MAX + 1];
		const uint8_t *pl;
		uint16_t pll;
		uint64_t sz;

		CHECK_RC(em_list_entry_decode(b, len, &pos, &sz, nm, &pl, &pll), 0);
		CHECK(sz == 1000u + (unsigned)i && !strcmp(nm, names[i]));
		CHECK(pll == ll && !memcmp(pl, lay, (size_t)ll));
	}
	CHECK(pos == len);
	/* past the end, and every truncation of the last entry */
	{
		char nm[EM_NAME_MAX + 1];
		const uint8_t *pl;
		uint16_t pll;
		uint64_t sz;
		size_t last = len - (8 + 3 + 2 + (size_t)ll);

		CHECK_RC(em_list_entry_decode(b, len, &pos, &sz, nm, &pl, &pll), -EPROTO);
		pos = len + 5;
		CHECK_RC(em_list_entry_decode(b, len, &pos, &sz, nm, &pl, &pll), -EPROTO);
		CHECK(pos == len + 5); /* a refused entry moves nothing */
		for (size_t k = last; k < len; k++) {
			pos = last;
			CHECK_RC(em_list_entry_decode(b, k, &pos, &sz, nm, &pl, &pll), -EPROTO);
		}
		/* a layout length that runs past the payload */
		b[last + 8 + 1 + 2] = 0xff; /* after "z9" */
		b[last + 8 + 1 + 3] = 0x7f;
		pos = last;
		CHECK_RC(em_list_entry_decode(b, len, &pos, &sz, nm, &pl, &pll), -EPROTO);
	}
	CHECK_RC(em_list_entry_encode(b, 7, 1, "a", NULL, 0), -ENOSPC);
	CHECK_RC(em_list_entry_encode(b, 11, 1, "ab", NULL, 0), -ENOSPC);
}

static void test_status(void)
{
	uint64_t v[EM_ST__COUNT], d[EM_ST__COUNT];
	uint8_t b[EM_STATUS_LEN + 8], h[EM_HDR_LEN];
	struct em_hdr hd = { .magic = EM_WIRE_MAGIC,
			     .version = EM_WIRE_VERSION,
			     .op = EM_W_STATUS,
			     .flags = EM_WF_RESPONSE,
			     .status = -ENOENT };

	for (int i = 0; i < EM_ST__COUNT; i++)
		v[i] = 0x0102030405060708ull * (uint64_t)(i + 1);
	CHECK_RC(em_status_encode(b, sizeof(b), v), EM_STATUS_LEN);
	CHECK_RC(em_status_decode(b, EM_STATUS_LEN, d), 0);
	CHECK(!memcmp(v, d, sizeof(v)));
	CHECK_RC(em_status_decode(b, EM_STATUS_LEN - 1, d), -EPROTO);
	CHECK_RC(em_status_decode(b, EM_STATUS_LEN + 8, d), -EPROTO);
	CHECK_RC(em_status_decode(b, 0, d), -EPROTO);
	CHECK_RC(em_status_encode(b, EM_STATUS_LEN - 1, v), -ENOSPC);
	em_hdr_encode(h, &hd);
	CHECK(em_hdr_status(h) == -ENOENT);
	hd.status = 0;
	em_hdr_encode(h, &hd);
	CHECK(em_hdr_status(h) == 0);
}

/* The OmniXtend attach reply: byte order and tagging share one flag byte,
 * each read back on its own. */
static void test_ox_info(void)
{
	struct em_ox_info a = { .mac = { 2, 1, 2, 3, 4, 5 },
				.ethertype = 0xAAAA,
				.mtu = 9000,
				.mode = 1,
				.echo_type = 0xAAAB },
			  d;
	uint8_t b[EM_OX_ATTACH_RESP_LEN];

	for (int k = 0; k < 4; k++) {
		a.verbatim = k & 1;
		a.tagged = k >> 1;
		em_ox_info_encode(b, &a);
		memset(&d, 0xff, sizeof(d));
		em_ox_info_decode(b, &d);
		CHECK(!memcmp(d.mac, a.mac, 6) && d.ethertype == a.ethertype && d.mtu == a.mtu);
		CHECK(d.mode == 1 && d.echo_type == a.echo_type);
		CHECK(d.verbatim == a.verbatim && d.tagged == a.tagged);
	}
	/* a node from before tagging sends the byte order alone */
	b[13] = 1;
	em_ox_info_decode(b, &d);
	CHECK(d.verbatim == 1 && d.tagged == 0);
}

static void test_parsers(void)
{
	uint64_t v;
	char host[64];
	uint16_t port;

	CHECK_RC(em_parse_size("512M", &v), 0);
	CHECK(v == 512ull << 20);
	CHECK_RC(em_parse_size("64G", &v), 0);
	CHECK(v == 64ull << 30);
	CHECK_RC(em_parse_size("1.5k", &v), 0);
	CHECK(v == 1536);
	CHECK_RC(em_parse_size("4096", &v), 0);
	CHECK(v == 4096);
	CHECK_RC(em_parse_size("2GiB", &v), 0);
	CHECK(v == 2ull << 30);
	CHECK_RC(em_parse_size("", &v), -EINVAL);
	CHECK_RC(em_parse_size("-1G", &v), -EINVAL);
	CHECK_RC(em_parse_size("12X", &v), -EINVAL);
	CHECK_RC(em_parse_size("100000P", &v), -EINVAL);
	CHECK_RC(em_parse_addr("tcp://10.0.0.1:7420", host, sizeof(host), &port), 0);
	CHECK(!strcmp(host, "10.0.0.1") && port == 7420);
	CHECK_RC(em_parse_addr("[::1]:99", host, sizeof(host), &port), 0);
	CHECK(!strcmp(host, "::1") && port == 99);
	CHECK(em_parse_addr("udp://h:1", host, sizeof(host), &port) != 0);
	CHECK(em_parse_addr("tcp://h:70000", host, sizeof(host), &port) != 0);
	CHECK(em_parse_addr("tcp://h", host, sizeof(host), &port) != 0);
	CHECK(em_parse_addr("tcp://:5", host, sizeof(host), &port) != 0);
	CHECK(strstr(em_strerror(-EM_EAUTH), "secret"));
	CHECK(strstr(em_strerror(-ENOSPC), "space"));
}

static void test_hist(void)
{
	static struct em_hist h;
	uint64_t p50, p99;

	for (uint64_t v = 1; v <= 100000; v++)
		em_hist_add(&h, v);
	p50 = em_hist_quantile(&h, 0.5);
	p99 = em_hist_quantile(&h, 0.99);
	CHECK(p50 > 50000 * 0.93 && p50 < 50000 * 1.07);
	CHECK(p99 > 99000 * 0.93 && p99 < 99000 * 1.07);
	CHECK(em_hist_total(&h) == 100000);
}

int main(void)
{
	test_header();
	test_namelayout();
	test_layout();
	test_layout_redundancy();
	test_list();
	test_status();
	test_ox_info();
	test_parsers();
	test_hist();
	return 0;
}
