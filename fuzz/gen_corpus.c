/*
 * gen_corpus.c - writes a few well-formed request streams (create, write,
 * read, a repair's copy reads and writes, atomics, list, status, named
 * create/open/delete) as seeds, so the fuzzer starts from deep in the
 * protocol rather than at the magic number.
 * With `client` after the directory it writes the node's side instead: the
 * replies fuzz_client's batch of requests expects, in order.
 */
#include <stdio.h>
#include <string.h>

#include "common/seal.h"
#include "common/wire.h"

static uint16_t flags;   /* EM_WF_RESPONSE for the node's side */
static uint64_t tag = 1; /* replies: 1, 2, ... in request order */

static size_t put(uint8_t *out, uint8_t op, uint32_t len, uint32_t region, uint32_t aux,
		  uint64_t off, const void *payload)
{
	struct em_hdr h = { .magic = EM_WIRE_MAGIC,
			    .version = EM_WIRE_VERSION,
			    .op = op,
			    .flags = flags,
			    .len = len,
			    .tag = flags ? tag++ : 1,
			    .region = region,
			    .aux = aux,
			    .offset = off };
	em_hdr_encode(out, &h);
	if (len)
		memcpy(out + EM_HDR_LEN, payload, len);
	return EM_HDR_LEN + len;
}

static int write_file(const char *dir, const char *name, const void *b, size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		return 1;
	fwrite(b, 1, n, f);
	fclose(f);
	return 0;
}

/* Replies to fuzz_client's batch: read 100, status, list, atomic, read
 * 20000, open - and a layout on its own for the payload decoders. */
static int client_seeds(const char *dir)
{
	static uint8_t buf[1 << 16], pl[EM_MAX_CTRL], lay[EM_MAX_LAYOUT];
	uint64_t v[EM_ST__COUNT] = { 1u << 30, 4096, 1, 1 };
	struct em_layout l = {
		.size = 8u << 20, .chunk = 4u << 20, .nseg = 2, .plen = 2, .pattern = { 0, 1 }
	};
	size_t n = 0, ln = 0;
	int ll, k;

	flags = EM_WF_RESPONSE;
	memset(l.ids[1], 1, EM_NODE_ID_LEN);
	ll = em_layout_encode(lay, sizeof(lay), &l);
	memset(pl, 0x5a, 20000);
	n += put(buf + n, EM_W_READ, 100, 1, 0, 0, pl);
	em_status_encode(pl, sizeof(pl), v);
	n += put(buf + n, EM_W_STATUS, EM_STATUS_LEN, 0, 0, 0, pl);
	ln += (size_t)em_list_entry_encode(pl + ln, sizeof(pl) - ln, 8u << 20, "model", lay,
					   (uint16_t)ll);
	ln += (size_t)em_list_entry_encode(pl + ln, sizeof(pl) - ln, 4096, "x", lay, (uint16_t)ll);
	n += put(buf + n, EM_W_LIST, (uint32_t)ln, 0, 2, 2, pl);
	memset(pl, 0, 8);
	n += put(buf + n, EM_W_ATOMIC, 8, 1, 0, 8, pl);
	memset(pl, 0x5a, 20000);
	n += put(buf + n, EM_W_READ, 20000, 1, 0, 0, pl);
	k = em_namelayout_encode(pl, sizeof(pl), "model", lay, (uint16_t)ll);
	n += put(buf + n, EM_W_OPEN, (uint32_t)k, 3, 0, 0, pl);
	return write_file(dir, "seed-replies", buf, n) ||
	       write_file(dir, "seed-layout", lay, (size_t)ll);
}

/* The request stream as an encrypted connection carries it: records sealed
 * under fuzz_wire's fixed key, so its record-layer part starts from records
 * that open (an even first byte there selects XChaCha20-Poly1305). */
static int sealed_seed(const char *dir, const uint8_t *req, size_t n)
{
	static const uint8_t key[EM_SEAL_KEY_LEN] = { 7 };
	struct em_seal *tx = em_seal_create(EM_CIPHER_XCHACHA20POLY1305, key);
	static uint8_t out[EM_SEAL_REC_MAX];
	struct iovec iov = { (void *)req, n & ~(size_t)1 }, *v = &iov;
	const uint8_t *rec;
	ssize_t len;
	int one = 1, rc;

	if (!tx)
		return 1;
	len = em_seal_wrap(tx, &v, &one, &rec);
	if (len > 0)
		memcpy(out, rec, (size_t)len);
	em_seal_destroy(tx);
	rc = len > 0 ? write_file(dir, "seed-sealed", out, (size_t)len) : 1;
	return rc;
}

int main(int argc, char **argv)
{
	static uint8_t buf[1 << 16], pl[512];
	const char *dir = argc > 1 ? argv[1] : ".";
	char path[512];
	size_t n = 0;
	int k;
	FILE *f;

	if (argc > 2 && !strcmp(argv[2], "client"))
		return client_seeds(dir);
	k = em_namelayout_encode(pl, sizeof(pl), NULL, NULL, 0);
	n += put(buf + n, EM_W_CREATE, (uint32_t)k, 0, 0, 65536, pl);
	memset(pl, 7, 64);
	n += put(buf + n, EM_W_WRITE, 64, 1, 0, 100, pl);
	n += put(buf + n, EM_W_READ, 0, 1, 64, 100, NULL);
	/* a repair's copy: its cursor set back, read past, written past */
	flags = EM_WF_COPY;
	n += put(buf + n, EM_W_READ, 0, 1, 0, 0, NULL);
	n += put(buf + n, EM_W_READ, 0, 1, 64, 100, NULL);
	n += put(buf + n, EM_W_WRITE, 64, 1, 1, 100, pl);
	/* a layout-version check, below and above no fence */
	flags = EM_WF_VER;
	n += put(buf + n, EM_W_READ, 0, 1, 3, 0, NULL);
	flags = 0;
	memset(pl, 0, 16);
	pl[0] = 1;
	n += put(buf + n, EM_W_ATOMIC, 16, 1, 1, 8, pl);
	n += put(buf + n, EM_W_ATOMIC, 16, 1, 3, 16, pl);
	n += put(buf + n, EM_W_LIST, 0, 0, 0, 0, NULL);
	n += put(buf + n, EM_W_STATUS, 0, 0, 0, 0, NULL);
	{
		/* the node refuses a named region whose layout does not decode */
		struct em_layout l = { .size = 4096, .chunk = 4096, .nseg = 1, .plen = 1 };
		uint8_t lay[256];
		int ll = em_layout_encode(lay, sizeof(lay), &l);

		k = em_namelayout_encode(pl, sizeof(pl), "model", lay, (uint16_t)ll);
	}
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
	return sealed_seed(dir, buf, n);
}
