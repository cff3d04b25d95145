/*
 * The header parser against hostile input: it must never accept a header
 * that does not describe exactly the file's bytes, and every tensor it
 * locates must lie inside the file.  Random headers are built from field
 * values chosen to hit the edges (0, negatives, INT32_MIN/MAX, powers of two
 * near overflow, consistent small shapes) for all three formats, each tried
 * against its own computed length and lengths a little off.  Meant to run
 * under ASan/UBSan as well.  Exit 0 pass, 1 fail.
 */
#include "llm/llm.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

static uint64_t rng = 0x1234567887654321ULL;

static int32_t pick(void)
{
	static const int32_t edge[] = { 0,
					1,
					2,
					3,
					4,
					6,
					8,
					16,
					64,
					172,
					256,
					512,
					4096,
					65536,
					1 << 20,
					1 << 24,
					(1 << 24) + 1,
					INT32_MAX,
					-1,
					-2,
					-64,
					-512,
					INT32_MIN,
					1 << 30 };
	uint64_t r = llm_rng_next(&rng);

	if (r % 4 == 0)
		return (int32_t)(r >> 32);
	return edge[(r >> 8) % (sizeof(edge) / sizeof(edge[0]))];
}

static void put32(unsigned char *p, int32_t v)
{
	memcpy(p, &v, 4); /* the engine reads little-endian; so is x86 */
}

static int check(const unsigned char *h, uint64_t size)
{
	struct llm_config c;
	struct llm_layout l;
	char err[256];
	uint64_t end;

	if (llm_parse_header(h, LLM_MOE_HEADER, size, &c, &l, err, sizeof(err)))
		return 0;
	if (l.file_size != size) {
		printf("FAIL: accepted a header describing %llu bytes for %llu\n",
		       (unsigned long long)l.file_size, (unsigned long long)size);
		return 1;
	}
	end = l.fmt == LLM_FMT_MOE ? l.layer_base + (uint64_t)c.n_layers * l.layer_stride
				   : l.t_base[LLM_T_W3] + (uint64_t)c.n_layers * l.t_size[LLM_T_W3];
	if (end > size || l.rms_final + (uint64_t)c.dim * 4 > size ||
	    l.wcls + (uint64_t)c.vocab * (uint64_t)c.dim > size) {
		printf("FAIL: tensors outside the file\n");
		return 1;
	}
	return 0;
}

int main(void)
{
	unsigned char h[LLM_MOE_HEADER];
	int fail = 0, accepted = 0;

	for (int it = 0; it < 300000 && !fail; it++) {
		int fmt = it % 3;
		unsigned char *p = h;
		struct llm_config c;
		struct llm_layout l;
		char err[64];

		memset(h, 0, sizeof(h));
		if (fmt == 1) {
			put32(h, (int32_t)LLM_MOE_MAGIC);
			put32(h + 4, it % 7 ? LLM_MOE_VERSION : pick());
			p = h + 8;
		} else if (fmt == 2) {
			put32(h, (int32_t)LLM_Q8_MAGIC);
			put32(h + 4, it % 7 ? 2 : pick());
			p = h + 8;
		}
		for (int i = 0; i < 7; i++)
			put32(p + 4 * i,
			      it % 5 ? pick() : (int32_t[]){ 64, 172, 2, 8, 4, 512, 32 }[i]);
		if (fmt == 1) {
			put32(h + 36, pick());
			put32(h + 40, pick());
		} else if (fmt == 2) {
			h[36] = (unsigned char)(llm_rng_next(&rng) % 3);
			put32(h + 37, pick());
		}
		/* Learn the length the header claims (the parse fails with it in
		 * the message when the size is wrong), then try it and neighbours. */
		if (llm_parse_header(h, sizeof(h), UINT64_MAX, &c, &l, err, sizeof(err)) == 0) {
			printf("FAIL: accepted a header for a 2^64-1 byte file\n");
			return 1;
		}
		if (l.file_size) {
			fail |= check(h, l.file_size);
			fail |= check(h, l.file_size - 1);
			fail |= check(h, l.file_size + 4);
			accepted += llm_parse_header(h, sizeof(h), l.file_size, &c, &l, err,
						     sizeof(err)) == 0;
		}
		fail |= check(h, llm_rng_next(&rng) >> (llm_rng_next(&rng) % 64));
	}
	printf("%s: 300000 headers, %d consistent ones accepted\n", fail ? "FAIL" : "PASS",
	       accepted);
	return fail;
}
