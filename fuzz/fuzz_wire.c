/*
 * fuzz_wire.c - libFuzzer target for the memory node's request path: the
 * header decoder, every handler (create/open/read/write/atomic/list/status/
 * delete/close...) and the payload decoders, fed an arbitrary byte stream as
 * one authenticated connection would send it. The node must never crash,
 * read or write outside a region, or leak (ASan checks all three).
 */
#include <stddef.h>
#include <stdint.h>

#include "common/wire.h"
#include "daemon/server.h"
#include "ethermem.h"

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
	return 0;
}
