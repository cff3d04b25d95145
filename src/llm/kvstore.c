/*
 * The block store of kvstore.h, built only on libethermem's public calls: a
 * named region, one-sided reads and writes, remote atomics, and a queue to
 * batch them.  Its directory lives in the region itself rather than in etcd
 * or a server: every operation is a few one-sided round trips to the nodes
 * that already hold the values, nothing else has to be running, and the
 * pool's compare-and-swap is all the coordination a claim needs.
 *
 * Region layout (all integers little-endian 64-bit, every word 8-aligned):
 *
 *   0       header: magic, version, sets, ways, value_max, dir_off, data_off
 *   64      counters, changed only by fetch-and-add: clock, hits, misses,
 *           puts, present, evictions, corrupt
 *   dir_off entries, 64 bytes each, sets * ways of them, set s at s * ways:
 *           state, key[2], len, csum, stamp
 *   data_off slot i (value_max bytes, 4 KiB-rounded) belongs to entry i
 *
 * An entry's state word is fp << 32 | gen << 2 | st: st is EMPTY, WRITING
 * or VALID, gen counts claims of the entry (so a reader can tell its entry
 * was reused while it read), fp is 32 bits of the key so that two writers of
 * one key can see each other before the key itself is written.
 *
 * put: read the set; present (VALID with the key, or WRITING with its fp)
 * ends it.  Else claim a victim (EMPTY, else the VALID of oldest stamp, else
 * a WRITING abandoned long ago) by CAS to WRITING, then read the set again:
 * if another entry now holds the same fp, both writers raced and the one
 * that sees the other steps back (at least the later claimer does, so at
 * most one value is written; if both step back the key is simply not
 * stored, which a cache may do).  Write key, length, checksum, stamp and
 * the value, then CAS WRITING -> VALID; failing that CAS means the claim
 * was taken from us as abandoned, and we report -EAGAIN.
 *
 * get: read the set, read the value, then read the state word again and
 * check the checksum: changed state (evicted and reused meanwhile) is a
 * miss, a wrong checksum is -EBADMSG.  Hits stamp their entry with the
 * clock (atomic unsigned max, so stamps only grow).
 */
#include "llm/kvstore.h"
#include "llm/kvstore_dec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KV_MAGIC 0x314b564b4d45ull /* "EMKVK1" */
#define KV_VERSION 1
#define KV_HDR 4096
#define KV_ENT 64
#define KV_DEPTH 64
/* Clock ticks after which a WRITING entry counts as abandoned by a writer
 * that died; a tick is one put or one get batch anywhere in the pool. */
#define KV_STALE (1ull << 20)

enum { KV_EMPTY = 0, KV_WRITING = 1, KV_VALID = 2 };
enum { H_MAGIC, H_VERSION, H_SETS, H_WAYS, H_VMAX, H_DIR, H_DATA };
enum { C_CLOCK = 8, C_HITS, C_MISSES, C_PUTS, C_PRESENT, C_EVICT, C_CORRUPT };
enum { E_STATE, E_K0, E_K1, E_LEN, E_CSUM, E_STAMP };

struct em_kv {
	em_pool *pool;
	em_region *r;
	em_queue *q;
	struct kv_geom g;
};

static inline uint64_t kv_rotl(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static inline uint64_t kv_fmix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	return x ^ (x >> 33);
}

void em_kv_hash(const void *data, size_t len, uint64_t seed, struct em_kv_key *out)
{
	const unsigned char *p = data;
	uint64_t a = seed ^ 0x9e3779b97f4a7c15ull, b = kv_rotl(seed, 29) ^ 0x6a09e667f3bcc909ull;
	size_t i = 0;

	/* Two lanes over 8-byte words, each word entering both lanes through
	 * different multipliers and rotations; then a full avalanche. */
	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		a = kv_rotl(a ^ (w * 0x87c37b91114253d5ull), 31) * 0x4cf5ad432745937full + b;
		b = kv_rotl(b ^ (w * 0x52dce729da3ed84bull), 27) * 0x9e3779b97f4a7c15ull + a;
	}
	if (i < len) {
		uint64_t w = 0;

		memcpy(&w, p + i, len - i);
		a ^= w * 0x87c37b91114253d5ull;
		b ^= kv_rotl(w, 17) * 0x52dce729da3ed84bull;
	}
	a ^= (uint64_t)len;
	b ^= (uint64_t)len * 0xff51afd7ed558ccdull;
	a += b;
	b += a;
	a = kv_fmix(a);
	b = kv_fmix(b);
	a += b;
	b += a;
	out->k[0] = a;
	out->k[1] = b;
}

static uint64_t kv_csum(const void *buf, size_t len)
{
	struct em_kv_key h;

	em_kv_hash(buf, len, 0x4b56, &h);
	return h.k[0];
}

static inline uint64_t kv_fp(const struct em_kv_key *k)
{
	return (k->k[1] >> 32) | 1; /* never 0, so an EMPTY word is never a claim */
}

static inline int kv_key_eq(const uint64_t *e, const struct em_kv_key *k)
{
	return e[E_K0] == k->k[0] && e[E_K1] == k->k[1];
}

static inline uint64_t kv_set(const em_kv *kv, const struct em_kv_key *k)
{
	return k->k[0] % kv->g.sets;
}

static inline uint64_t kv_ent_off(const em_kv *kv, uint64_t idx)
{
	return kv->g.dir + idx * KV_ENT;
}

/* Runs ops[0..n) through the queue, up to its depth at a time; res[i] gets
 * each op's result and, when val is given, val[i] its atomic old value.
 * Returns 0, or -errno when the queue itself failed. */
static int kv_run(em_kv *kv, struct em_op *ops, unsigned n, int *res, uint64_t *val)
{
	struct em_completion c[KV_DEPTH];
	unsigned sent = 0, done = 0;

	for (unsigned i = 0; i < n; i++)
		ops[i].user_data = i;
	while (done < n) {
		while (sent < n) {
			int rc = em_submit(kv->q, ops + sent, n - sent);

			if (rc == -EAGAIN)
				break;
			if (rc < 0)
				goto fail;
			sent += (unsigned)rc;
		}
		int got = em_wait(kv->q, c, 1, KV_DEPTH, -1);

		if (got < 0 || (got == 0 && em_queue_inflight(kv->q)))
			goto fail;
		for (int i = 0; i < got; i++) {
			uint64_t u = c[i].user_data;

			if (u < n) {
				res[u] = c[i].result;
				if (val)
					val[u] = c[i].value;
			}
		}
		done += (unsigned)got;
	}
	return 0;
fail:
	/* Whatever is still in flight targets caller buffers: wait it out, or
	 * tear the queue down (destroying it abandons what it carried). */
	while (em_queue_inflight(kv->q) && em_wait(kv->q, c, 1, KV_DEPTH, -1) > 0)
		;
	if (em_queue_inflight(kv->q)) {
		em_queue_destroy(kv->q);
		kv->q = NULL;
		if (em_queue_create(kv->pool, KV_DEPTH, &kv->q))
			kv->q = NULL;
	}
	return -EIO;
}

static int kv_atomic(em_kv *kv, uint64_t off, enum em_atomic_op op, uint64_t operand,
		     uint64_t compare, uint64_t *old)
{
	return em_atomic(kv->r, off, op, operand, compare, old);
}

int kv_decode_header(const uint64_t h[8], uint64_t size, struct kv_geom *g)
{
	uint64_t ents;

	if (h[H_MAGIC] == 0)
		return -EAGAIN; /* the creator has not finished */
	if (h[H_MAGIC] != KV_MAGIC || h[H_VERSION] != KV_VERSION)
		return -EPROTO;
	g->sets = h[H_SETS];
	g->ways = h[H_WAYS];
	g->vmax = h[H_VMAX];
	g->dir = h[H_DIR];
	g->data = h[H_DATA];
	/* Never trust the region's numbers: they must describe this region. */
	if (!g->sets || !g->ways || g->ways > EM_KV_WAYS || !g->vmax || g->vmax > (1u << 30) ||
	    __builtin_mul_overflow(g->sets, g->ways, &ents) || g->dir < KV_HDR || g->dir > size ||
	    ents > (size - g->dir) / KV_ENT || g->data < g->dir + ents * KV_ENT || g->data > size)
		return -EPROTO;
	g->slot = (g->vmax + 4095) & ~4095ull;
	if (ents > (size - g->data) / g->slot)
		return -EPROTO;
	return 0;
}

int kv_decode_find(const struct kv_geom *g, const uint64_t *set, const struct em_kv_key *k,
		   size_t cap, uint64_t *way)
{
	for (uint64_t w = 0; w < g->ways; w++) {
		const uint64_t *e = set + w * 8;

		if ((e[E_STATE] & 3) != KV_VALID || (e[E_STATE] >> 32) != kv_fp(k) ||
		    !kv_key_eq(e, k))
			continue;
		*way = w;
		if (e[E_LEN] > g->vmax)
			return -EBADMSG; /* a length no writer could have put there */
		if (e[E_LEN] > cap)
			return -EMSGSIZE;
		return (int)e[E_LEN];
	}
	return -ENOENT;
}

static int kv_read_header(em_kv *kv)
{
	uint64_t h[8];
	int rc = em_read(kv->r, 0, h, sizeof(h));

	if (rc)
		return rc;
	return kv_decode_header(h, em_region_size(kv->r), &kv->g);
}

/* -EOPNOTSUPP for a region whose redundancy cannot run the store's atomics
 * (EC); 0 for none and replicate:N. */
static int kv_check_region(em_region *r)
{
	struct em_region_info ri = { .size = sizeof(ri) };
	int rc = em_region_stat(r, &ri);

	if (rc)
		return rc;
	return ri.redundancy == EM_RED_EC ? -EOPNOTSUPP : 0;
}

static int kv_create(em_kv *kv, const char *name, const struct em_kv_opts *o)
{
	struct em_region_opts ro = { .size = sizeof(ro) };
	uint64_t cap = o && o->capacity ? o->capacity : 64ull << 20;
	uint64_t vmax = o && o->value_max ? o->value_max : 64u << 10;
	uint64_t slot = (vmax + 4095) & ~4095ull, ents, ways, sets, dir, data, h[8];
	int rc;

	if (vmax > (1u << 30))
		return -EINVAL;
	if (o && o->region) {
		if (o->region->size < sizeof(ro))
			return -EINVAL;
		ro = *o->region;
	}
	/* Creating exclusively is what lets two creators agree on one store. */
	ro.flags |= EM_REGION_EXCL;
	/* Claims and counters are atomics, which EC regions refuse: say so
	 * now rather than at the first put. */
	if (ro.redundancy == EM_RED_EC)
		return -EOPNOTSUPP;
	ents = cap / slot;
	if (ents < 1)
		ents = 1;
	ways = ents < EM_KV_WAYS ? ents : EM_KV_WAYS;
	sets = ents / ways;
	ents = sets * ways;
	dir = KV_HDR;
	data = (dir + ents * KV_ENT + 4095) & ~4095ull;
	rc = em_region_create(kv->pool, name, data + ents * slot, &ro, &kv->r);
	if (rc)
		return rc;
	/* The pool's default redundancy (config, ETHERMEM_REDUNDANCY) may have
	 * made it EC: undo, before anyone can take it for a store. */
	if ((rc = kv_check_region(kv->r))) {
		em_region_close(kv->r);
		kv->r = NULL;
		em_region_delete(kv->pool, name);
		return rc;
	}
	/* A new region reads as zeros: every entry EMPTY, every counter 0.
	 * The magic goes last, so an opener never sees a half-made header. */
	h[H_MAGIC] = 0;
	h[H_VERSION] = KV_VERSION;
	h[H_SETS] = sets;
	h[H_WAYS] = ways;
	h[H_VMAX] = vmax;
	h[H_DIR] = dir;
	h[H_DATA] = data;
	h[7] = 0;
	rc = em_write(kv->r, 0, h, sizeof(h));
	if (!rc) {
		h[H_MAGIC] = KV_MAGIC;
		rc = em_write(kv->r, 0, h, 8);
	}
	return rc;
}

int em_kv_open(em_pool *pool, const char *name, const struct em_kv_opts *opts, em_kv **out)
{
	em_kv *kv;
	int rc;

	if (!pool || !name || !out || (opts && opts->size < sizeof(*opts)))
		return -EINVAL;
	kv = calloc(1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	kv->pool = pool;
	rc = em_region_open(pool, name, &kv->r);
	if (rc == -ENOENT && opts && opts->create) {
		rc = kv_create(kv, name, opts);
		if (rc == -EEXIST) /* another process created it first */
			rc = em_region_open(pool, name, &kv->r);
	}
	if (!rc)
		rc = kv_check_region(kv->r);
	if (rc)
		goto fail;
	for (int i = 0; i < 200; i++) {
		struct timespec ts = { 0, 10 * 1000000L };

		rc = kv_read_header(kv);
		if (rc != -EAGAIN)
			break;
		nanosleep(&ts, NULL);
	}
	if (!rc)
		rc = em_queue_create(pool, KV_DEPTH, &kv->q);
	if (rc)
		goto fail;
	*out = kv;
	return 0;
fail:
	if (kv->r)
		em_region_close(kv->r);
	free(kv);
	return rc;
}

void em_kv_close(em_kv *kv)
{
	if (!kv)
		return;
	if (kv->q)
		em_queue_destroy(kv->q);
	em_region_close(kv->r);
	free(kv);
}

uint32_t em_kv_value_max(const em_kv *kv)
{
	return (uint32_t)kv->g.vmax;
}

static int kv_read_set(em_kv *kv, uint64_t set, uint64_t *ents)
{
	return em_read(kv->r, kv_ent_off(kv, set * kv->g.ways), ents, kv->g.ways * KV_ENT);
}

/* 1 when the set (ways entries of 8 words) holds the key, or a claim of its
 * fingerprint, in any entry other than `skip`. */
static int kv_set_has(const em_kv *kv, const uint64_t *ents, const struct em_kv_key *k,
		      uint64_t skip)
{
	for (uint64_t w = 0; w < kv->g.ways; w++) {
		const uint64_t *e = ents + w * 8;
		uint64_t st = e[E_STATE] & 3;

		if (w == skip || (e[E_STATE] >> 32) != kv_fp(k))
			continue;
		if ((st == KV_VALID && kv_key_eq(e, k)) || st == KV_WRITING)
			return 1;
	}
	return 0;
}

int em_kv_put(em_kv *kv, const struct em_kv_key *key, const void *buf, size_t len)
{
	uint64_t ents[EM_KV_WAYS * 8], set, clock, fields[5];
	int rc;

	if (!kv || !key || (!buf && len))
		return -EINVAL;
	if (len > kv->g.vmax)
		return -EMSGSIZE;
	set = kv_set(kv, key);
	for (int attempt = 0; attempt < 4; attempt++) {
		uint64_t victim = UINT64_MAX, vstamp = UINT64_MAX, old, claim, base;
		int evict = 0;

		if ((rc = kv_read_set(kv, set, ents)))
			return rc;
		if (kv_set_has(kv, ents, key, UINT64_MAX)) {
			kv_atomic(kv, C_PRESENT * 8, EM_ATOMIC_FADD, 1, 0, NULL);
			return 1;
		}
		if ((rc = kv_atomic(kv, C_CLOCK * 8, EM_ATOMIC_FADD, 1, 0, &clock)))
			return rc;
		for (uint64_t w = 0; w < kv->g.ways; w++) {
			const uint64_t *e = ents + w * 8;
			uint64_t st = e[E_STATE] & 3, age = e[E_STAMP];

			if (st == KV_EMPTY) {
				victim = w;
				evict = 0;
				break;
			}
			if (st == KV_WRITING && clock - age < KV_STALE)
				continue;
			if (age < vstamp) {
				vstamp = age;
				victim = w;
				evict = st == KV_VALID;
			}
		}
		if (victim == UINT64_MAX)
			return -EBUSY;
		old = ents[victim * 8 + E_STATE];
		claim = kv_fp(key) << 32 | ((((old >> 2) + 1) & 0x3fffffff) << 2) | KV_WRITING;
		base = kv_ent_off(kv, set * kv->g.ways + victim);
		if ((rc = kv_atomic(kv, base, EM_ATOMIC_CAS, claim, old, &old)))
			return rc;
		if (old != ents[victim * 8 + E_STATE])
			continue; /* someone else changed the entry: look again */
		if (evict)
			kv_atomic(kv, C_EVICT * 8, EM_ATOMIC_FADD, 1, 0, NULL);
		if ((rc = kv_read_set(kv, set, ents)))
			return rc;
		if (kv_set_has(kv, ents, key, victim)) {
			/* Another writer of this key: step back, it wins. */
			kv_atomic(kv, base, EM_ATOMIC_CAS, claim & ~3ull, claim, NULL);
			kv_atomic(kv, C_PRESENT * 8, EM_ATOMIC_FADD, 1, 0, NULL);
			return 1;
		}
		fields[0] = key->k[0];
		fields[1] = key->k[1];
		fields[2] = len;
		fields[3] = kv_csum(buf, len);
		fields[4] = clock;
		if ((rc = em_write(kv->r, base + 8, fields, sizeof(fields))) ||
		    (len &&
		     (rc = em_write(kv->r, kv->g.data + (set * kv->g.ways + victim) * kv->g.slot,
				    buf, len))))
			return rc;
		if ((rc = kv_atomic(kv, base, EM_ATOMIC_CAS, (claim & ~3ull) | KV_VALID, claim,
				    &old)))
			return rc;
		if (old != claim)
			return -EAGAIN; /* our claim was taken as abandoned */
		kv_atomic(kv, C_PUTS * 8, EM_ATOMIC_FADD, 1, 0, NULL);
		return 0;
	}
	return -EBUSY;
}

int em_kv_get_batch(em_kv *kv, unsigned n, const struct em_kv_key *keys, void *const *bufs,
		    size_t cap, int *res)
{
	uint64_t *sets = NULL, *idx = NULL, *state = NULL, *now = NULL, clock = 0;
	struct em_op *ops = NULL;
	int *r = NULL, rc = 0;
	unsigned nops, hits = 0, misses = 0, bad = 0;

	if (!kv || (n && (!keys || !bufs || !res)))
		return -EINVAL;
	if (!n)
		return 0;
	if (!kv->q)
		return -EIO;
	sets = malloc((size_t)n * kv->g.ways * KV_ENT);
	idx = malloc(n * sizeof(*idx));
	state = malloc(n * sizeof(*state));
	now = malloc((n + 1) * sizeof(*now));
	ops = calloc((size_t)n * 2 + 4, sizeof(*ops));
	r = calloc((size_t)n * 2 + 4, sizeof(*r));
	if (!sets || !idx || !state || !now || !ops || !r) {
		rc = -ENOMEM;
		goto out;
	}
	/* Round trip 1: every key's set. */
	for (unsigned i = 0; i < n; i++)
		ops[i] =
			(struct em_op){ .opcode = EM_OP_READ,
					.region = kv->r,
					.offset = kv_ent_off(kv, kv_set(kv, &keys[i]) * kv->g.ways),
					.buf = sets + (size_t)i * kv->g.ways * 8,
					.len = kv->g.ways * KV_ENT };
	if ((rc = kv_run(kv, ops, n, r, NULL)))
		goto out;
	/* Round trip 2: the values found, and a clock tick for their stamps. */
	nops = 0;
	for (unsigned i = 0; i < n; i++) {
		const uint64_t *e;
		uint64_t w = 0;

		res[i] = -ENOENT;
		idx[i] = UINT64_MAX;
		if (r[i]) {
			rc = r[i];
			goto out;
		}
		res[i] = kv_decode_find(&kv->g, sets + (size_t)i * kv->g.ways * 8, &keys[i], cap,
					&w);
		if (res[i] < 0)
			continue;
		e = sets + ((size_t)i * kv->g.ways + w) * 8;
		idx[i] = kv_set(kv, &keys[i]) * kv->g.ways + w;
		state[i] = e[E_STATE];
		res[i] = (int)e[E_LEN];
		if (e[E_LEN])
			ops[nops++] = (struct em_op){ .opcode = EM_OP_READ,
						      .region = kv->r,
						      .offset = kv->g.data + idx[i] * kv->g.slot,
						      .buf = bufs[i],
						      .len = e[E_LEN] };
	}
	ops[nops++] = (struct em_op){ .opcode = EM_OP_ATOMIC,
				      .atomic_op = EM_ATOMIC_FADD,
				      .region = kv->r,
				      .offset = C_CLOCK * 8,
				      .operand = 1 };
	if ((rc = kv_run(kv, ops, nops, r, now)))
		goto out;
	for (unsigned i = 0; i < nops; i++)
		if (r[i]) {
			rc = r[i];
			goto out;
		}
	clock = now[nops - 1];
	/* Checksums here; round trip 3: states again, stamps, counters. */
	nops = 0;
	for (unsigned i = 0; i < n; i++) {
		const uint64_t *e;

		if (idx[i] == UINT64_MAX)
			continue;
		e = sets + ((size_t)i * kv->g.ways + idx[i] % kv->g.ways) * 8;
		if (kv_csum(bufs[i], (size_t)e[E_LEN]) != e[E_CSUM]) {
			res[i] = -EBADMSG;
			continue;
		}
		ops[nops++] = (struct em_op){ .opcode = EM_OP_READ,
					      .region = kv->r,
					      .offset = kv_ent_off(kv, idx[i]),
					      .buf = &now[i],
					      .len = 8,
					      .user_data = i };
		ops[nops++] = (struct em_op){ .opcode = EM_OP_ATOMIC,
					      .atomic_op = EM_ATOMIC_UMAX,
					      .region = kv->r,
					      .offset = kv_ent_off(kv, idx[i]) + E_STAMP * 8,
					      .operand = clock };
	}
	if (nops && (rc = kv_run(kv, ops, nops, r, NULL)))
		goto out;
	for (unsigned i = 0; i < nops; i++)
		if (r[i]) {
			rc = r[i];
			goto out;
		}
	for (unsigned i = 0; i < n; i++) {
		if (idx[i] != UINT64_MAX && res[i] >= 0 && now[i] != state[i])
			res[i] = -ENOENT; /* reused while we read it */
		if (res[i] >= 0)
			hits++;
		else if (res[i] == -EBADMSG)
			bad++;
		else
			misses++;
	}
	if (hits)
		kv_atomic(kv, C_HITS * 8, EM_ATOMIC_FADD, hits, 0, NULL);
	if (misses + bad)
		kv_atomic(kv, C_MISSES * 8, EM_ATOMIC_FADD, misses + bad, 0, NULL);
	if (bad)
		kv_atomic(kv, C_CORRUPT * 8, EM_ATOMIC_FADD, bad, 0, NULL);
out:
	free(sets);
	free(idx);
	free(state);
	free(now);
	free(ops);
	free(r);
	return rc;
}

int em_kv_get(em_kv *kv, const struct em_kv_key *key, void *buf, size_t cap)
{
	void *const bufs[1] = { buf };
	int res = -ENOENT, rc = em_kv_get_batch(kv, 1, key, bufs, cap, &res);

	return rc ? rc : res;
}

int em_kv_exists(em_kv *kv, const struct em_kv_key *key)
{
	uint64_t ents[EM_KV_WAYS * 8];
	int rc;

	if (!kv || !key)
		return -EINVAL;
	if ((rc = kv_read_set(kv, kv_set(kv, key), ents)))
		return rc;
	for (uint64_t w = 0; w < kv->g.ways; w++) {
		const uint64_t *e = ents + w * 8;

		if ((e[E_STATE] & 3) == KV_VALID && kv_key_eq(e, key))
			return 1;
	}
	return 0;
}

int em_kv_stats(em_kv *kv, struct em_kv_stats *out)
{
	struct em_kv_stats full, *st = &full;
	uint64_t c[7], ents, *dir;
	size_t want;
	int rc;

	if (!kv || !out || out->size < sizeof(*out))
		return -EINVAL;
	want = out->size;
	ents = kv->g.sets * kv->g.ways;
	dir = malloc(ents * KV_ENT);
	if (!dir)
		return -ENOMEM;
	rc = em_read(kv->r, C_CLOCK * 8, c, sizeof(c));
	if (!rc)
		rc = em_read(kv->r, kv->g.dir, dir, ents * KV_ENT);
	if (!rc) {
		*st = (struct em_kv_stats){ .size = want,
					    .entries = ents,
					    .value_max = kv->g.vmax,
					    .hits = c[1],
					    .misses = c[2],
					    .puts = c[3],
					    .present = c[4],
					    .evictions = c[5],
					    .corrupt = c[6] };
		for (uint64_t i = 0; i < ents; i++)
			if ((dir[i * 8 + E_STATE] & 3) == KV_VALID) {
				st->used++;
				st->bytes += dir[i * 8 + E_LEN];
			}
		/* Only what the caller's struct has room for. */
		memcpy(out, st, want < sizeof(*st) ? want : sizeof(*st));
	}
	free(dir);
	return rc;
}
