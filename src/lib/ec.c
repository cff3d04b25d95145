/*
 * ec.c - Reed-Solomon coding for ec:K+M regions, over ISA-L. A Cauchy
 * generator matrix is used because every K x K submatrix of it is
 * invertible, so any K surviving chunks rebuild the rest; ISA-L does all
 * the Galois-field arithmetic (tables, encode, matrix inversion).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/erasure_code.h>

#include "lib/internal.h"

struct em_ec {
	unsigned k, m;
	uint8_t *gen;  /* (k + m) x k: identity on top, then the parity rows */
	uint8_t *tbls; /* ec_init_tables of the parity rows */
};

int em_ec_create(unsigned k, unsigned m, struct em_ec **out)
{
	struct em_ec *ec;

	if (!k || !m || k > EM_RED_MAX_K || m > EM_RED_MAX_M)
		return -EINVAL;
	ec = calloc(1, sizeof(*ec));
	if (!ec)
		return -ENOMEM;
	ec->k = k;
	ec->m = m;
	ec->gen = malloc((size_t)(k + m) * k);
	ec->tbls = malloc((size_t)k * m * 32);
	if (!ec->gen || !ec->tbls) {
		em_ec_destroy(ec);
		return -ENOMEM;
	}
	gf_gen_cauchy1_matrix(ec->gen, (int)(k + m), (int)k);
	ec_init_tables((int)k, (int)m, ec->gen + (size_t)k * k, ec->tbls);
	*out = ec;
	return 0;
}

void em_ec_destroy(struct em_ec *ec)
{
	if (!ec)
		return;
	free(ec->gen);
	free(ec->tbls);
	free(ec);
}

void em_ec_encode(struct em_ec *ec, size_t len, uint8_t **data, uint8_t **parity)
{
	ec_encode_data((int)len, (int)ec->k, (int)ec->m, ec->tbls, data, parity);
}

int em_ec_rebuild(struct em_ec *ec, size_t len, uint8_t **chunk, uint64_t have)
{
	unsigned k = ec->k, n = ec->k + ec->m, src[EM_RED_MAX_K], nsrc = 0, nout = 0;
	uint8_t sub[EM_RED_MAX_K * EM_RED_MAX_K], inv[EM_RED_MAX_K * EM_RED_MAX_K];
	uint8_t rows[(EM_RED_MAX_K + EM_RED_MAX_M) * EM_RED_MAX_K];
	uint8_t tbls[EM_RED_MAX_K * (EM_RED_MAX_K + EM_RED_MAX_M) * 32];
	uint8_t *in[EM_RED_MAX_K], *out[EM_RED_MAX_K + EM_RED_MAX_M];

	for (unsigned i = 0; i < n && nsrc < k; i++)
		if (have >> i & 1)
			src[nsrc++] = i;
	if (nsrc < k)
		return -EINVAL;
	/* the generator rows of the k survivors, inverted, map them back to
	 * the data; a missing chunk's own generator row then makes it */
	for (unsigned r = 0; r < k; r++) {
		memcpy(sub + r * k, ec->gen + (size_t)src[r] * k, k);
		in[r] = chunk[src[r]];
	}
	if (gf_invert_matrix(sub, inv, (int)k))
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		if (have >> i & 1)
			continue;
		/* row i of gen times inv: chunk i from the survivors */
		for (unsigned c = 0; c < k; c++) {
			uint8_t acc = 0;
			for (unsigned j = 0; j < k; j++)
				acc ^= gf_mul(ec->gen[(size_t)i * k + j], inv[j * k + c]);
			rows[nout * k + c] = acc;
		}
		out[nout++] = chunk[i];
	}
	if (!nout)
		return 0;
	ec_init_tables((int)k, (int)nout, rows, tbls);
	ec_encode_data((int)len, (int)k, (int)nout, tbls, in, out);
	return 0;
}
