/*
 * fuzz_client.c - libFuzzer target for the client's side of the protocol:
 * what a node (or anything posing as one) sends back. The input is used
 * twice: as a stream of replies to a fixed batch of requests on a real TCP
 * channel of the library (em_tcp_chan_fd on a socketpair, so no
 * authentication is needed; the library is compiled into this target so the
 * fuzzer sees its coverage), and as the payloads the client decodes
 * after a reply - region layouts, listings, name+layout replies, status
 * arrays. Nothing may crash or touch memory outside the reply buffers (ASan
 * and UBSan check), a decoded payload must encode back to the same bytes,
 * and every posted request must complete, with data or an error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../src/lib/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_client: %s\n", what);
		abort();
	}
}

/* The payload decoders alone, each with a round trip when it accepts. */
static void payloads(const uint8_t *d, size_t n)
{
	static uint8_t out[EM_MAX_CTRL];
	struct em_layout l;
	uint64_t v[EM_ST__COUNT], sz;
	char name[EM_NAME_MAX + 1];
	const uint8_t *lay;
	uint16_t ll;
	size_t pos = 0;

	if (!em_layout_decode(d, n, &l))
		check(em_layout_encode(out, sizeof(out), &l) == (int)n && !memcmp(out, d, n),
		      "layout round trip");
	if (!em_status_decode(d, n, v))
		check(em_status_encode(out, sizeof(out), v) == (int)n && !memcmp(out, d, n),
		      "status round trip");
	if (!em_namelayout_decode(d, n, name, &lay, &ll)) {
		check(lay >= d && lay + ll <= d + n, "layout inside the payload");
		em_layout_decode(lay, ll, &l);
	}
	/* a listing: entries until one is refused, as em_region_list walks it */
	while (pos < n) {
		size_t before = pos;
		if (em_list_entry_decode(d, n, &pos, &sz, name, &lay, &ll)) {
			check(pos == before, "a refused entry moves nothing");
			break;
		}
		check(pos > before && pos <= n && lay + ll <= d + pos, "entry inside the payload");
		em_layout_decode(lay, ll, &l);
	}
}

/* Replies to a batch of requests on a real channel. */
static void replies(const uint8_t *d, size_t n)
{
	static uint8_t rd1[100], rd2[20000], st[EM_STATUS_LEN], big[EM_MAX_CTRL];
	static uint8_t nl[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	struct em_part res[6], parts[6] = {
		{ .wop = EM_W_READ, .aux = sizeof(rd1), .resp = rd1, .resp_cap = sizeof(rd1) },
		{ .wop = EM_W_STATUS, .resp = st, .resp_cap = sizeof(st) },
		{ .wop = EM_W_LIST, .resp = big, .resp_cap = sizeof(big) },
		{ .wop = EM_W_ATOMIC, .aux = EM_ATOMIC_FADD, .req_len = 16, .resp_cap = 8 },
		{ .wop = EM_W_READ, .aux = sizeof(rd2), .resp = rd2, .resp_cap = sizeof(rd2) },
		{ .wop = EM_W_OPEN, .resp = nl, .resp_cap = sizeof(nl) },
	};
	struct em_chan *ch;
	int sv[2], sb = 1 << 20;
	size_t off = 0;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return;
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sb, sizeof(sb));
	setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &sb, sizeof(sb));
	if (em_tcp_chan_fd(sv[0], 1000, 0, &ch)) {
		close(sv[0]);
		close(sv[1]);
		return;
	}
	for (unsigned i = 0; i < 6; i++) {
		parts[i].tag = i + 1;
		parts[i].origin = &res[i];
		res[i].status = 1; /* no result yet */
		if (parts[i].wop == EM_W_ATOMIC) {
			parts[i].req = parts[i].inl;
			parts[i].resp = parts[i].inl;
		}
	}
	ch->ops->post(ch, parts, 6);
	/* what the "node" says, then the end of the connection */
	while (off < n) {
		ssize_t w = send(sv[1], d + off, n - off, MSG_DONTWAIT);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	shutdown(sv[1], SHUT_WR);
	while (ch->outstanding)
		if (ch->ops->progress(ch, 0) < 0)
			break;
	check(!ch->outstanding, "every request completes");
	for (unsigned i = 0; i < 6; i++) {
		check(res[i].status <= 0 && res[i].status > -EM_WIRE_MAX_ERRNO,
		      "a result of 0 or -errno for each request");
		check(res[i].resp_len <= parts[i].resp_cap, "reply within its buffer");
		if (!res[i].status)
			payloads(parts[i].resp, res[i].resp_len);
	}
	ch->ops->close(ch);
	close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	payloads(data, size);
	replies(data, size);
	return 0;
}
