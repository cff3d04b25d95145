/*
 * test_wire.c - the protocol codec and the small parsers, without sockets:
 * round trips, and every way a header or payload can be malformed.
 */
#include "harness.h"
#include "common/util.h"
#include "common/wire.h"

static void test_header(void)
{
	struct em_hdr h = { .magic = EM_WIRE_MAGIC, .version = EM_WIRE_VERSION, .op = EM_W_READ,
			    .flags = EM_WF_RESPONSE, .status = -ERANGE, .len = 4096,
			    .tag = 0x1122334455667788ull, .region = 7, .aux = 9,
			    .offset = 0xfedcba9876543210ull }, d;
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
	test_parsers();
	test_hist();
	return 0;
}
