/*
 * The block store (kvstore.h) against a real ethermemd on loopback: values
 * round-trip; a second put of a key is "present"; a full store evicts the
 * least recently used entry of a set and keeps what is being read; a value
 * corrupted in the pool is reported (-EBADMSG), not returned; four
 * processes publishing the same keys at once store each key at most once
 * and every stored value is whole; a region that is not a store is refused;
 * a store whose node died fails with an error, not a crash.
 *
 * With arguments it is the engine test's tool on the pool of the
 * environment: `corrupt NAME` flips a byte in every value of store NAME
 * and prints how many (`ethermem kv stats` shows the counters).
 */
#include "harness.h"

#include <sys/mman.h>

#include "llm/kvstore.h"

#define VMAX 4096

static void fill(unsigned char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)(seed * 131u + i * 7u);
}

static struct em_kv_key key_of(unsigned i)
{
	struct em_kv_key k;

	em_kv_hash(&i, sizeof(i), 77, &k);
	return k;
}

/* The slot offset of a key's value, found the way the store finds it. */
static uint64_t slot_of(em_region *r, const struct em_kv_key *k)
{
	uint64_t h[8], e[8];

	CHECK_RC(em_read(r, 0, h, sizeof(h)), 0);
	for (uint64_t i = 0; i < h[2] * h[3]; i++) {
		CHECK_RC(em_read(r, h[5] + i * 64, e, sizeof(e)), 0);
		if ((e[0] & 3) == 2 && e[1] == k->k[0] && e[2] == k->k[1])
			return h[6] + i * ((h[4] + 4095) & ~4095ull);
	}
	return 0;
}

static int tool(int argc, char **argv)
{
	em_pool *pool;
	em_region *r;
	uint64_t h[8], e[8];
	int n = 0;

	if (argc != 3 || em_pool_connect(&pool, NULL))
		return 2;
	if (!strcmp(argv[1], "corrupt")) {
		if (em_region_open(pool, argv[2], &r) || em_read(r, 0, h, sizeof(h)))
			return 1;
		for (uint64_t i = 0; i < h[2] * h[3]; i++) {
			unsigned char x;
			uint64_t off;

			if (em_read(r, h[5] + i * 64, e, sizeof(e)))
				return 1;
			if ((e[0] & 3) != 2 || e[3] < 200)
				continue;
			/* Past the block's header: the KV numbers themselves. */
			off = h[6] + i * ((h[4] + 4095) & ~4095ull) + e[3] - 100;
			if (em_read(r, off, &x, 1))
				return 1;
			x ^= 0x10;
			if (em_write(r, off, &x, 1))
				return 1;
			n++;
		}
		printf("%d\n", n);
		em_region_close(r);
	} else {
		return 2;
	}
	em_pool_close(pool);
	return 0;
}

static int selftest(void)
{
	const char *secret = t_secret("secret", "kv store test secret, long enough to pass\n");
	struct t_node node;
	struct em_kv_opts o = {
		.size = sizeof(o), .capacity = 16 * VMAX, .value_max = VMAX, .create = 1
	};
	struct em_kv_stats st = { .size = sizeof(st) };
	unsigned char a[VMAX], b[VMAX];
	struct em_kv_key k = key_of(1);
	em_pool *pool;
	em_region *r;
	em_kv *kv, *kv2;
	unsigned *stored;

	t_node_start(&node, "64M", secret, NULL);
	pool = t_connect_ok(&node, 1, secret);

	/* Absent and not asked to create. */
	CHECK_RC(em_kv_open(pool, "kvt", &(struct em_kv_opts){ .size = sizeof(o) }, &kv), -ENOENT);
	CHECK_RC(em_kv_open(pool, "kvt", &o, &kv), 0);
	CHECK(em_kv_value_max(kv) == VMAX);

	/* Round trip, present, absent, size limits. */
	fill(a, sizeof(a), 1);
	CHECK_RC(em_kv_exists(kv, &k), 0);
	CHECK_RC(em_kv_get(kv, &k, b, sizeof(b)), -ENOENT);
	CHECK_RC(em_kv_put(kv, &k, a, 3000), 0);
	CHECK_RC(em_kv_exists(kv, &k), 1);
	memset(b, 0, sizeof(b));
	CHECK_RC(em_kv_get(kv, &k, b, sizeof(b)), 3000);
	CHECK(!memcmp(a, b, 3000));
	fill(a, sizeof(a), 2);
	CHECK_RC(em_kv_put(kv, &k, a, 3000), 1); /* first writer wins */
	CHECK_RC(em_kv_get(kv, &k, b, sizeof(b)), 3000);
	fill(a, sizeof(a), 1);
	CHECK(!memcmp(a, b, 3000));
	CHECK_RC(em_kv_get(kv, &k, b, 100), -EMSGSIZE);
	{
		struct em_kv_key big = key_of(999);
		static unsigned char huge[VMAX + 1];

		CHECK_RC(em_kv_put(kv, &big, huge, sizeof(huge)), -EMSGSIZE);
	}

	/* A second handle sees the same store (its geometry from the region). */
	CHECK_RC(em_kv_open(pool, "kvt", NULL, &kv2), 0);
	CHECK_RC(em_kv_get(kv2, &k, b, sizeof(b)), 3000);
	em_kv_close(kv2);

	/* Full: 200 puts into 16 entries; key 1 is read after every put, so
	 * it is always its set's most recent and is never the victim. */
	for (unsigned i = 100; i < 300; i++) {
		struct em_kv_key ki = key_of(i);

		fill(a, sizeof(a), i);
		CHECK_RC(em_kv_put(kv, &ki, a, VMAX), 0);
		CHECK_RC(em_kv_get(kv, &k, b, sizeof(b)), 3000);
	}
	CHECK_RC(em_kv_stats(kv, &st), 0);
	CHECK(st.entries == 16 && st.used == 16);
	{
		struct em_kv_stats small = { .size = 8 };

		CHECK_RC(em_kv_stats(kv, &small), -EINVAL);
		CHECK_RC(em_kv_open(pool, "kvt", &(struct em_kv_opts){ .size = 0 }, &kv2), -EINVAL);
	}
	CHECK(st.evictions >= 200 - 15);
	CHECK(st.puts == 201 && st.present == 1);
	/* The newest keys are there and whole; the oldest are gone. */
	{
		struct em_kv_key ks[4] = { key_of(299), key_of(100), key_of(298), k };
		static unsigned char bufs[4][VMAX];
		void *const bp[4] = { bufs[0], bufs[1], bufs[2], bufs[3] };
		int res[4];

		CHECK_RC(em_kv_get_batch(kv, 4, ks, bp, VMAX, res), 0);
		CHECK(res[0] == VMAX && res[1] == -ENOENT && res[3] == 3000);
		fill(a, sizeof(a), 299);
		CHECK(!memcmp(a, bufs[0], VMAX));
		CHECK(res[2] == -ENOENT ||
		      (res[2] == VMAX && (fill(a, VMAX, 298), !memcmp(a, bufs[2], VMAX))));
	}

	/* Corruption: one byte of key 1's value flipped in the pool. */
	CHECK_RC(em_region_open(pool, "kvt", &r), 0);
	{
		uint64_t off = slot_of(r, &k);
		unsigned char x;

		CHECK(off != 0);
		CHECK_RC(em_read(r, off + 17, &x, 1), 0);
		x ^= 0x40;
		CHECK_RC(em_write(r, off + 17, &x, 1), 0);
		CHECK_RC(em_kv_get(kv, &k, b, sizeof(b)), -EBADMSG);
		CHECK_RC(em_kv_stats(kv, &st), 0);
		CHECK(st.corrupt == 1);
	}

	/* Four processes publish the same 24 keys at once, into a store big
	 * enough that nothing is evicted (an evicted key may be stored again,
	 * rightly). */
	{
		struct em_kv_opts big = o;

		big.capacity = 512 * VMAX;
		CHECK_RC(em_kv_open(pool, "kvt-race", &big, &kv2), 0);
	}
	stored = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(stored != MAP_FAILED);
	memset(stored, 0, 4096);
	{
		pid_t kids[4];

		for (int c = 0; c < 4; c++) {
			kids[c] = fork();
			CHECK(kids[c] >= 0);
			if (kids[c] == 0) {
				em_pool *p = t_connect_ok(&node, 1, secret);
				em_kv *mine;
				unsigned char v[VMAX];

				CHECK_RC(em_kv_open(p, "kvt-race", NULL, &mine), 0);
				for (unsigned i = 0; i < 24; i++) {
					struct em_kv_key ki = key_of(1000 + i);
					int rc;

					memset(v, 'A' + c, sizeof(v));
					rc = em_kv_put(mine, &ki, v, 1000 + i);
					if (rc == 0)
						__atomic_fetch_add(&stored[i], 1, __ATOMIC_SEQ_CST);
					else if (rc != 1 && rc != -EBUSY)
						_exit(1);
				}
				em_kv_close(mine);
				em_pool_close(p);
				_exit(0);
			}
		}
		for (int c = 0; c < 4; c++) {
			int status;

			CHECK(waitpid(kids[c], &status, 0) == kids[c]);
			CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		}
	}
	for (unsigned i = 0; i < 24; i++) {
		struct em_kv_key ki = key_of(1000 + i);
		int n = em_kv_get(kv2, &ki, b, sizeof(b));

		CHECK(stored[i] <= 1);
		/* Stored once, or not at all when two writers both stepped back. */
		CHECK(stored[i] ? n == (int)(1000 + i) : n == -ENOENT);
		if (n < 0)
			continue;
		for (int j = 1; j < n; j++)
			CHECK(b[j] == b[0]);
		CHECK(b[0] >= 'A' && b[0] <= 'D');
	}

	CHECK_RC(em_kv_stats(kv2, &st), 0);
	CHECK(st.evictions == 0 && st.puts == st.used);
	em_kv_close(kv2);

	/* A region that is not a store. */
	{
		em_region *plain;

		CHECK_RC(em_region_create(pool, "kvt-plain", 65536, NULL, &plain), 0);
		CHECK_RC(em_write(plain, 0, "not a store", 11), 0);
		CHECK_RC(em_kv_open(pool, "kvt-plain", NULL, &kv2), -EPROTO);
		em_region_close(plain);
	}

	/* The node dies: calls fail with an error. */
	t_node_stop(&node, SIGKILL);
	CHECK(em_kv_get(kv, &k, b, sizeof(b)) < 0);
	CHECK(em_kv_put(kv, &k, a, 10) < 0);
	em_region_close(r);
	em_kv_close(kv);
	em_pool_close(pool);
	t_cleanup();
	printf("PASS\n");
	return 0;
}

int main(int argc, char **argv)
{
	return argc > 1 ? tool(argc, argv) : selftest();
}
