/*
 * fuzz_etcd.c - libFuzzer target for what the etcd client reads from the
 * network: the HTTP answer splitter, the range and watch answer parsers
 * (which walk the JSON and decode base64 keys and values), and the JSON
 * reader's lookups on whatever parses, and the records ethermem keeps in
 * etcd (a region record that decodes must encode and decode back to the
 * same). None may crash, read outside the input, or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/cluster.h"
#include "common/etcd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int cb(void *arg, const struct em_etcd_kv *kv)
{
	size_t *sum = arg;
	/* touch every byte handed out, so ASan sees any overrun */
	for (size_t i = 0; i < kv->klen; i++)
		*sum += (uint8_t)kv->key[i];
	for (size_t i = 0; i < kv->vlen; i++)
		*sum += kv->val[i];
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	struct em_json root, v, el;
	size_t off, len, sum = 0, pos = 0;
	int64_t rev = 0;
	int status;
	char buf[64];

	if (em_http_split(s, size, true, &status, &off, &len) == 0)
		em_etcd_range_parse(s + off, len, cb, &sum, &rev);
	em_etcd_range_parse(s, size, cb, &sum, &rev);
	em_etcd_watch_parse(s, size, cb, &sum, &rev);
	if (em_json_root(s, size, &root) == 0) {
		em_json_str(root, buf, sizeof(buf));
		em_json_i64(root, &rev);
		if (em_json_get(root, "a", &v) == 0)
			em_json_get_u64(v, "b", 0);
		while (em_json_next(root, &pos, &el) == 1)
			em_json_str(el, buf, sizeof(buf));
	}
	{
		static struct em_region_rec a, b;
		static struct em_node_rec nr;
		static char out[16384];
		int n;

		em_node_rec_decode(s, size, &nr);
		if (em_region_rec_decode(s, size, &a) == 0 &&
		    (n = em_region_rec_encode(&a, out, sizeof(out))) > 0 &&
		    (em_region_rec_decode(out, (size_t)n, &b) || memcmp(&a, &b, sizeof(a))))
			__builtin_trap();
	}
	return sum == 1; /* keeps the sum alive */
}
