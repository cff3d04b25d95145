/*
 * fuzz_ox.c - libFuzzer target for everything that reads frames off the
 * wire: the frame decoder with every data accessor, the memory endpoint
 * (1.0.3 and 1.1, normal and verbatim byte order) serving a small window,
 * and the requester receiving responses.  The first input byte picks the
 * path; the rest is the payload after the EtherType.  Built only with
 * clang (see CMakeLists.txt); run e.g. build/fuzz_ox -max_total_time=60.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ox/ox.h"

static struct ox_hub *hub;
static struct ox_link *ep_port[4], *rq_port[4];
static struct ox_endpoint *ep[4];
static struct ox_requester *rq[4];
static uint8_t *mem;
static uint8_t frame[70000];
static uint8_t scratch[1u << OX_MAX_SIZE_LOG2];

static void setup(void)
{
	mem = aligned_alloc(4096, 65536);
	memset(mem, 0, 65536);
	ox_hub_create(&hub);
	for (int i = 0; i < 4; i++) {
		struct ox_opts o = { .mode = i & 1 ? OX_MODE_11 : OX_MODE_103, .verbatim = i >= 2 };
		ox_hub_port(hub, (uint8_t)(0x10 + i), 9000, &ep_port[i]);
		ox_hub_port(hub, (uint8_t)(0x20 + i), 9000, &rq_port[i]);
		ox_endpoint_create(&o, ep_port[i], &ep[i]);
		struct ox_window w = { .base = 0x10000, .len = 65536, .mem = mem };
		memcpy(w.mac, rq_port[i]->mac, 6);
		ox_endpoint_add_window(ep[i], &w);
		ox_requester_create(&o, rq_port[i], ep_port[i]->mac, &rq[i]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!hub)
		setup();
	if (size < 1 || size > sizeof(frame) - OX_ETH_HLEN)
		return 0;
	unsigned sel = data[0] & 3;
	bool to_rq = data[0] & 4;
	data++;
	size--;

	struct ox_frame f;
	if (ox_frame_decode(data, size, &f) == 0) {
		for (unsigned i = 0; i < f.nmsg; i++) {
			struct ox_msg *m = &f.msg[i];
			if (!ox_msg_has_data(m->chan, m->opcode))
				continue;
			ox_msg_read(m, scratch, sel >= 2);
			if ((m->chan == OX_CH_A || m->chan == OX_CH_B) &&
			    m->opcode == OX_A_PUTPARTIAL)
				for (unsigned b = 0; b < (1u << m->size); b++)
					scratch[b] ^= (uint8_t)ox_msg_mask_bit(m, b);
		}
	}

	uint64_t now = ox_now_ns();
	if (to_rq) {
		/* as if the endpoint had sent it to the requester */
		ox_eth_write(frame, rq_port[sel]->mac, ep_port[sel]->mac, OX_ETHERTYPE_DEFAULT);
		memcpy(frame + OX_ETH_HLEN, data, size);
		ox_link_send(ep_port[sel], frame, size + OX_ETH_HLEN);
		ox_requester_poll(rq[sel], now);
	} else {
		ox_eth_write(frame, ep_port[sel]->mac, rq_port[sel]->mac, OX_ETHERTYPE_DEFAULT);
		memcpy(frame + OX_ETH_HLEN, data, size);
		ox_endpoint_input(ep[sel], frame, size + OX_ETH_HLEN, now);
		ox_endpoint_poll(ep[sel], now, 4);
	}
	/* keep the hub queues from filling: drain what the other side got */
	uint8_t sink[9216];
	while (ox_link_recv(rq_port[sel], sink, sizeof(sink)) > 0)
		;
	while (ox_link_recv(ep_port[sel], sink, sizeof(sink)) > 0)
		;
	return 0;
}
