/*
 * gen_corpus.c - writes a few well-formed request streams (create, write,
 * read, atomics, list, status, named create/open/delete) as seeds, so the
 * fuzzer starts from deep in the protocol rather than at the magic number.
 */
#include <stdio.h>
#include <string.h>

#include "common/wire.h"

static size_t put(uint8_t *out, uint8_t op, uint32_t len, uint32_t region, uint32_t aux,
		  uint64_t off, const void *payload)
{
	struct em_hdr h = { .magic = EM_WIRE_MAGIC, .version = EM_WIRE_VERSION, .op = op,
			    .len = len, .tag = 1, .region = region, .aux = aux, .offset = off };
	em_hdr_encode(out, &h);
	if (len)
		memcpy(out + EM_HDR_LEN, payload, len);
	return EM_HDR_LEN + len;
}

int main(int argc, char **argv)
{
	static uint8_t buf[1 << 16], pl[512];
	const char *dir = argc > 1 ? argv[1] : ".";
	char path[512];
	size_t n = 0;
	int k;
	FILE *f;

	k = em_namelayout_encode(pl, sizeof(pl), NULL, NULL, 0);
	n += put(buf + n, EM_W_CREATE, (uint32_t)k, 0, 0, 65536, pl);
	memset(pl, 7, 64);
	n += put(buf + n, EM_W_WRITE, 64, 1, 0, 100, pl);
	n += put(buf + n, EM_W_READ, 0, 1, 64, 100, NULL);
	memset(pl, 0, 16);
	pl[0] = 1;
	n += put(buf + n, EM_W_ATOMIC, 16, 1, 1, 8, pl);
	n += put(buf + n, EM_W_ATOMIC, 16, 1, 3, 16, pl);
	n += put(buf + n, EM_W_LIST, 0, 0, 0, 0, NULL);
	n += put(buf + n, EM_W_STATUS, 0, 0, 0, 0, NULL);
	k = em_namelayout_encode(pl, sizeof(pl), "model", "LAYOUT", 6);
	n += put(buf + n, EM_W_CREATE, (uint32_t)k, 0, EM_WC_NAMED, 4096, pl);
	n += put(buf + n, EM_W_OPEN, (uint32_t)k, 0, 0, 0, pl);
	n += put(buf + n, EM_W_CLOSE, 0, 2, 0, 0, NULL);
	k = em_namelayout_encode(pl, sizeof(pl), "model", NULL, 0);
	n += put(buf + n, EM_W_DELETE, (uint32_t)k, 0, 0, 0, pl);
	snprintf(path, sizeof(path), "%s/seed-all", dir);
	f = fopen(path, "wb");
	if (!f)
		return 1;
	fwrite(buf, 1, n, f);
	fclose(f);
	return 0;
}
