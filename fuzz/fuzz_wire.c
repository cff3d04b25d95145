/*
 * fuzz_wire.c - libFuzzer target for the memory node's request path: the
 * header decoder, every handler (create/open/read/write/atomic/list/status/
 * delete/close...) and the payload decoders, fed an arbitrary byte stream as
 * one authenticated connection would send it. The node must never crash,
 * read or write outside a region, or leak (ASan checks all three).
 *
 * The same bytes also go through the record layer of encrypted connections
 * (common/seal.h): as a stream of records from the wire (the seed corpus
 * has one sealed under the key used here, so opening is reached too), and
 * sealed by a sender holding the key, then received in pieces of
 * fuzzer-chosen sizes, which must give back exactly what was sent, and
 * fail once a chosen byte is altered.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/seal.h"
#include "common/wire.h"
#include "daemon/server.h"
#include "ethermem.h"

/* Moves n bytes into the receiving seal in pieces and reads plaintext out
 * into out (cap bytes); returns the plaintext bytes, or the first error. */
static ssize_t feed(struct em_seal *rx, const uint8_t *in, size_t n, uint8_t *out, size_t cap,
		    uint8_t step)
{
	size_t pos = 0, got = 0;

	while (pos < n || em_seal_ready(rx)) {
		uint8_t *room;
		size_t k = em_seal_room(rx, &room);
		ssize_t r;

		k = k < n - pos ? k : n - pos;
		k = k < (size_t)step * 97 + 1 ? k : (size_t)step * 97 + 1;
		memcpy(room, in + pos, k);
		em_seal_fill(rx, k);
		pos += k;
		while ((r = em_seal_read(rx, out + got, cap - got, step & 1)) > 0)
			got += (size_t)r;
		if (r < 0)
			return r;
	}
	return (ssize_t)got;
}

static void fuzz_seal(const uint8_t *data, size_t size)
{
	static const uint8_t key[EM_SEAL_KEY_LEN] = { 7 };
	int cipher = size && (data[0] & 1) && em_seal_aes_available() ? EM_CIPHER_AES256GCM
								      : EM_CIPHER_XCHACHA20POLY1305;
	uint8_t step = size ? data[size - 1] : 0;
	struct em_seal *tx = em_seal_create(cipher, key), *rx = em_seal_create(cipher, key);
	struct em_seal *other = em_seal_create(cipher, key);
	size_t cap = size + (size / EM_SEAL_MAX + 1) * (EM_SEAL_HDR + EM_SEAL_TAG), wlen = 0;
	uint8_t *wire = malloc(cap), *back = malloc(size + 1);
	struct iovec iov[2] = { { (void *)data, size / 2 },
				{ (void *)(data + size / 2), size - size / 2 } };
	struct iovec *v = iov;
	int n = 2;

	if (!tx || !rx || !other || !wire || !back)
		goto out;
	/* bytes from the wire: lengths checked, nothing overruns (records
	 * sealed under this key, as in the seed corpus, open) */
	feed(other, data, size, back, size + 1, step);
	em_seal_destroy(other);
	other = NULL;
	for (;;) {
		const uint8_t *rec;
		ssize_t len = em_seal_wrap(tx, &v, &n, &rec);

		if (len <= 0)
			break;
		memcpy(wire + wlen, rec, (size_t)len);
		wlen += (size_t)len;
	}
	if (feed(rx, wire, wlen, back, size + 1, step) != (ssize_t)size ||
	    (size && memcmp(back, data, size)))
		abort();
	if (wlen && (other = em_seal_create(cipher, key))) {
		wire[(size_t)step * 131 % wlen] ^= 1;
		if (feed(other, wire, wlen, back, size + 1, step) == (ssize_t)size)
			abort(); /* an altered byte went unnoticed */
	}
out:
	em_seal_destroy(tx);
	em_seal_destroy(rx);
	em_seal_destroy(other);
	free(wire);
	free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct em_server *s;
	char name[EM_NAME_MAX + 1];
	const uint8_t *lay;
	uint16_t ll;

	if (!s)
		s = em_server_create_for_fuzz(16u << 20);
	if (!s)
		return 0;
	em_server_fuzz_input(s, data, size);
	/* the payload decoder alone, on the same bytes */
	em_namelayout_decode(data, size, name, &lay, &ll);
	fuzz_seal(data, size);
	return 0;
}
