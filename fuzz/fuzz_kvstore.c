/*
 * fuzz_kvstore.c - libFuzzer target for what libemkv believes of the bytes
 * it reads from the pool: the store's header (the geometry every offset is
 * computed from) and a set of directory entries (which entry holds a key and
 * how many bytes of value to read).  Anyone who can write the region can
 * put anything there, so whatever the decoders accept must keep every entry,
 * slot and value read inside the region and inside the caller's buffer; the
 * target checks that arithmetic itself and aborts when it does not hold.
 *
 * Input: region size (8 bytes), header (64), key (16), buffer capacity (4),
 * then the set's entries (64 bytes each, zeros past the end).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "llm/kvstore_dec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t take(const uint8_t **p, size_t *left, size_t n)
{
	uint64_t v = 0;
	size_t k = n < *left ? n : *left;

	memcpy(&v, *p, k);
	*p += k;
	*left -= k;
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data;
	size_t left = size;
	uint64_t h[8], region, set[EM_KV_WAYS * 8], way = 0;
	struct em_kv_key k;
	struct kv_geom g;
	unsigned __int128 end;
	size_t cap;
	int r;

	region = take(&p, &left, 8);
	for (int i = 0; i < 8; i++)
		h[i] = take(&p, &left, 8);
	k.k[0] = take(&p, &left, 8);
	k.k[1] = take(&p, &left, 8);
	cap = (size_t)take(&p, &left, 4);
	if (kv_decode_header(h, region, &g))
		return 0;
	/* Accepted: the whole directory and every slot lie in the region. */
	if (!g.sets || !g.ways || g.ways > EM_KV_WAYS || g.dir < 4096 || g.slot < g.vmax ||
	    g.slot % 4096)
		abort();
	end = (unsigned __int128)g.sets * g.ways * 64 + g.dir;
	if (end > g.data)
		abort();
	end = (unsigned __int128)g.sets * g.ways * g.slot + g.data;
	if (end > region)
		abort();
	memset(set, 0, sizeof(set));
	for (uint64_t i = 0; i < g.ways * 8; i++)
		set[i] = take(&p, &left, 8);
	r = kv_decode_find(&g, set, &k, cap, &way);
	if (r >= 0) {
		const uint64_t *e = set + way * 8;
		uint64_t idx = (k.k[0] % g.sets) * g.ways + way;

		/* The value the store would read next: inside its slot, the
		 * region and the caller's buffer, from an entry that holds k. */
		if (way >= g.ways || (uint64_t)r > g.vmax || (size_t)r > cap || e[1] != k.k[0] ||
		    e[2] != k.k[1] || (e[0] & 3) != 2)
			abort();
		end = (unsigned __int128)idx * g.slot + g.data + (unsigned)r;
		if (end > region)
			abort();
	} else if (r != -ENOENT && r != -EBADMSG && r != -EMSGSIZE) {
		abort();
	}
	return 0;
}
