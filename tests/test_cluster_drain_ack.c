/*
 * test_cluster_drain_ack.c - a drain whose record update etcd applied but
 * whose answer was lost.
 *
 * Two nodes in etcd, a one-part region on one of them holding a known
 * pattern. The drain runs in this process with the library's failpoint
 * set, so that its update of the region's record goes through in etcd and
 * is reported as a timeout. The record then lists the new part; the drain
 * must see that and keep it (a cleanup that trusted the error would delete
 * the only copy the record points to). Checked: the drain ends, the record
 * names the other node at a newer epoch, that node holds the part, and a
 * client connecting afterwards reads the pattern back.
 */
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "common/cluster.h"
#include "common/etcd.h"
#include "common/wire.h"
#include "lib/internal.h"

#include "harness.h"

#define SIZE (1u << 20)

static struct t_etcd ec;
static const char *secret;

static em_pool *connect_pool(void)
{
	struct em_pool_opts o = { .size = sizeof(o),
				  .secret_file = secret,
				  .timeout_ms = 5000,
				  .etcd = ec.url,
				  .cluster = "ack" };

	return t_connect_want(&o, 2);
}

int main(void)
{
	struct t_node n[2];
	struct em_region_opts ro = { .size = sizeof(ro), .chunk_size = SIZE };
	struct em_region_rec rec;
	struct em_etcd *e;
	char extra[256], val[4096];
	uint8_t *buf = malloc(SIZE), *back = malloc(SIZE);
	em_region *r;
	em_pool *p, *q;
	int len, d, t;

	secret = t_secret("secret", T_SECRET);
	t_etcd_start(&ec);
	snprintf(extra, sizeof(extra), "--etcd %s --cluster ack", ec.url);
	for (int i = 0; i < 2; i++)
		t_node_start(&n[i], "8M", secret, extra);
	p = connect_pool();
	CHECK_RC(em_etcd_open(&e, ec.url, 2000), 0);

	for (uint32_t i = 0; i < SIZE; i++)
		buf[i] = (uint8_t)(i * 131 + 7);
	CHECK_RC(em_region_create(p, "r", SIZE, &ro, &r), 0);
	CHECK_RC(em_write(r, 0, buf, SIZE), 0);
	CHECK_RC(em_region_close(r), 0);
	len = em_etcd_get(e, "/ethermem/ack/regions/r", val, sizeof(val));
	CHECK(len > 0);
	CHECK_RC(em_region_rec_decode(val, (size_t)len, &rec), 0);
	CHECK(rec.nseg == 1);
	/* d: the holder among the nodes started here; t: the other one's
	 * index in the pool (whose order is etcd's) */
	d = strcmp(rec.seg_addr[0], n[0].url) ? 1 : 0;
	CHECK(!strcmp(rec.seg_addr[0], n[d].url));
	t = 1 - em_dir_seg_node(p, &rec, 0);

	/* the drain's one record update is applied, and reported as lost */
	em_fail_dir_update = 1;
	CHECK_RC(em_drain_node(p, n[d].url, NULL, NULL), 1);
	CHECK(em_fail_dir_update == 0); /* the failpoint was met */

	len = em_etcd_get(e, "/ethermem/ack/regions/r", val, sizeof(val));
	CHECK(len > 0);
	CHECK_RC(em_region_rec_decode(val, (size_t)len, &rec), 0);
	CHECK(rec.epoch > 1);
	CHECK(em_dir_seg_node(p, &rec, 0) == t);
	CHECK_RC(t_piece_there(p, (unsigned)t, em_region_rec_piece(&rec, 0)), 0);

	q = connect_pool();
	CHECK_RC(em_region_open(q, "r", &r), 0);
	CHECK_RC(em_read(r, 0, back, SIZE), 0);
	CHECK(!memcmp(buf, back, SIZE));
	CHECK_RC(em_region_close(r), 0);
	em_pool_close(q);

	em_etcd_close(e);
	em_pool_close(p);
	for (int i = 0; i < 2; i++)
		t_node_stop(&n[i], SIGTERM);
	t_etcd_stop(&ec);
	free(buf);
	free(back);
	return 0;
}
