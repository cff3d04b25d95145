/*
 * The block store (kvstore.h) on a replicate:2 region of a pool of three
 * real ethermemd: two processes put and get the same keys at once (each
 * key stored at most once, every value whole and from its one writer);
 * then the node holding the primary copy is SIGKILLed, and every stored
 * value still comes back with its bytes, exists() still answers right,
 * and two new processes keep putting and getting, first writer winning.
 * Losing the second copy too gives an error, never wrong bytes.  A store
 * in an EC region is refused (EC regions have no atomics), whether EC was
 * asked for or came from ETHERMEM_REDUNDANCY, and leaves no region behind.
 *
 * Repair is off (ETHERMEM_AUTO_REPAIR=no): processes sharing a store must
 * not move its layout under each other (see kvstore.h).
 */
#include "harness.h"

#include <sys/mman.h>

#include "lib/internal.h"
#include "llm/kvstore.h"

#define VMAX 4096
#define KEYS 64

static const char *sec;
static struct t_node nodes[3];

static void start_nodes(struct t_node *n, int count)
{
	for (int i = 0; i < count; i++)
		t_node_start(&n[i], "16M", sec, NULL);
}

static struct em_kv_key key_of(unsigned i)
{
	struct em_kv_key k;

	em_kv_hash(&i, sizeof(i), 91, &k);
	return k;
}

/* Writer w's value for key i: its first byte names the writer. */
static size_t value_of(unsigned i, unsigned w, unsigned char *b)
{
	size_t n = 500 + (i * 37u) % (VMAX - 500);

	for (size_t j = 0; j < n; j++)
		b[j] = (unsigned char)(i * 131u + j * 7u + w * 17u);
	b[0] = (unsigned char)w;
	return n;
}

/* 1 when key i reads back as writer `w`'s whole value (w 0: as any
 * writer's), 0 when absent; exits on wrong bytes. */
static int check_key(em_kv *kv, unsigned i, unsigned w)
{
	unsigned char got[VMAX], want[VMAX];
	struct em_kv_key k = key_of(i);
	int n = em_kv_get(kv, &k, got, sizeof(got));

	if (n == -ENOENT)
		return 0;
	CHECK(n > 0);
	if (n <= 0)
		return 0;
	CHECK(got[0] == 1 || got[0] == 2);
	CHECK(!w || got[0] == w);
	CHECK((size_t)n == value_of(i, got[0], want) && !memcmp(got, want, (size_t)n));
	return 1;
}

/* Two processes put keys [k0, k0+KEYS) at once, each its own value, then
 * read every key below k0+KEYS; who[i] gets the writer whose put stored. */
static void two_writers(unsigned k0, unsigned *who)
{
	pid_t kids[2];

	for (unsigned w = 1; w <= 2; w++) {
		kids[w - 1] = fork();
		CHECK(kids[w - 1] >= 0);
		if (kids[w - 1])
			continue;
		em_pool *p = t_connect_ok(nodes, 3, sec);
		unsigned char v[VMAX];
		em_kv *kv;

		CHECK_RC(em_kv_open(p, "kvr", NULL, &kv), 0);
		for (unsigned i = k0; i < k0 + KEYS; i++) {
			struct em_kv_key k = key_of(i);
			size_t n = value_of(i, w, v);
			int rc = em_kv_put(kv, &k, v, n);

			if (rc == 0 && __atomic_exchange_n(&who[i], w, __ATOMIC_SEQ_CST))
				_exit(3); /* both writers stored one key */
			if (rc != 0 && rc != 1 && rc != -EBUSY)
				_exit(2);
		}
		for (unsigned i = 0; i < k0 + KEYS; i++)
			check_key(kv, i, 0);
		em_kv_close(kv);
		em_pool_close(p);
		_exit(t_fails ? 1 : 0);
	}
	for (int c = 0; c < 2; c++) {
		int status;

		CHECK(waitpid(kids[c], &status, 0) == kids[c]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
}

/* Every key below `n`: present exactly when a writer stored it, with
 * that writer's bytes. */
static void check_all(em_kv *kv, const unsigned *who, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct em_kv_key k = key_of(i);

		CHECK(check_key(kv, i, who[i]) == (who[i] != 0));
		CHECK_RC(em_kv_exists(kv, &k), who[i] != 0);
	}
}

static void refuse_ec(em_pool *pool)
{
	struct em_region_opts ec = { .size = sizeof(ec) };
	struct em_kv_opts o = { .size = sizeof(o),
				.capacity = 16 * VMAX,
				.value_max = VMAX,
				.create = 1,
				.region = &ec };
	em_region *r;
	em_pool *p2;
	em_kv *kv;

	CHECK_RC(em_parse_redundancy("ec:2+1", &ec), 0);
	CHECK_RC(em_kv_open(pool, "kvr-ec", &o, &kv), -EOPNOTSUPP);
	CHECK_RC(em_region_open(pool, "kvr-ec", &r), -ENOENT);
	/* An EC region made by someone else is not taken for a store. */
	CHECK_RC(em_region_create(pool, "kvr-ec", 1 << 20, &ec, &r), 0);
	CHECK_RC(em_kv_open(pool, "kvr-ec", NULL, &kv), -EOPNOTSUPP);
	em_region_close(r);
	CHECK_RC(em_region_delete(pool, "kvr-ec"), 0);
	/* EC as the pool's default: refused, and the region made for it gone. */
	setenv("ETHERMEM_REDUNDANCY", "ec:2+1", 1);
	p2 = t_connect_ok(nodes, 3, sec);
	unsetenv("ETHERMEM_REDUNDANCY");
	o.region = NULL;
	CHECK_RC(em_kv_open(p2, "kvr-ec", &o, &kv), -EOPNOTSUPP);
	CHECK_RC(em_region_open(p2, "kvr-ec", &r), -ENOENT);
	/* A short em_region_opts is refused, not read past. */
	ec.size = 8;
	o.region = &ec;
	CHECK_RC(em_kv_open(p2, "kvr-ec", &o, &kv), -EINVAL);
	em_pool_close(p2);
}

int main(void)
{
	struct em_region_opts rep = { .size = sizeof(rep) };
	struct em_kv_opts o = { .size = sizeof(o),
				.capacity = 512 * VMAX,
				.value_max = VMAX,
				.create = 1,
				.region = &rep };
	struct em_region_info ri = { .size = sizeof(ri) };
	unsigned char v[VMAX];
	em_pool *pool;
	em_region *r;
	em_kv *kv;
	unsigned *who;

	sec = t_secret("secret", "kv store redundancy test secret, long enough\n");
	setenv("ETHERMEM_AUTO_REPAIR", "no", 1);
	setenv("ETHERMEM_TIMEOUT_MS", "1000", 1);
	start_nodes(nodes, 3);
	pool = t_connect_ok(nodes, 3, sec);
	refuse_ec(pool);

	CHECK_RC(em_parse_redundancy("replicate:2", &rep), 0);
	CHECK_RC(em_kv_open(pool, "kvr", &o, &kv), 0);
	CHECK_RC(em_region_open(pool, "kvr", &r), 0);
	CHECK_RC(em_region_stat(r, &ri), 0);
	CHECK(ri.redundancy == EM_RED_REPLICATE && ri.red_k == 2 && r->nseg == 2);

	who = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(who != MAP_FAILED);
	memset(who, 0, 4096);
	two_writers(0, who);
	check_all(kv, who, KEYS);

	/* The primary copy's node dies. */
	t_node_stop(&nodes[r->node[0]], SIGKILL);
	check_all(kv, who, KEYS);
	{
		struct em_kv_key k = key_of(9999);

		CHECK_RC(em_kv_exists(kv, &k), 0);
		/* First writer still wins on the surviving copy. */
		for (unsigned i = 0; i < KEYS; i++) {
			k = key_of(i);
			if (who[i]) {
				CHECK_RC(em_kv_put(kv, &k, v, value_of(i, 3 - who[i], v)), 1);
				break;
			}
		}
	}
	{
		struct em_kv_stats st = { .size = sizeof(st) };
		uint64_t n = 0;

		for (unsigned i = 0; i < KEYS; i++)
			n += who[i] != 0;
		CHECK_RC(em_kv_stats(kv, &st), 0);
		CHECK(st.used == n && st.evictions == 0);
	}
	two_writers(KEYS, who);
	check_all(kv, who, 2 * KEYS);
	{
		unsigned n = 0;

		for (unsigned i = 0; i < 2 * KEYS; i++)
			n += who[i] != 0;
		CHECK(n >= KEYS); /* most puts stored (a key may rarely see -EBUSY) */
	}

	/* The second copy dies too: errors, never wrong bytes. */
	t_node_stop(&nodes[r->node[1]], SIGKILL);
	{
		struct em_kv_key k = key_of(0);

		CHECK(em_kv_get(kv, &k, v, sizeof(v)) < 0);
		CHECK(em_kv_put(kv, &k, v, 10) < 0);
	}
	em_region_close(r);
	em_kv_close(kv);
	em_pool_close(pool);
	for (int i = 0; i < 3; i++)
		t_node_stop(&nodes[i], SIGKILL);
	t_cleanup();
	if (t_fails)
		return 1;
	printf("PASS\n");
	return 0;
}
