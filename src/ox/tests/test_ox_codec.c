/*
 * test_ox_codec.c - the OmniXtend codec against the specification's worked
 * example (appendix A.1.1) byte for byte, round trips of every message
 * shape, frame packing limits, PutPartialData masks, byte order, and the
 * decoder's refusals.  Exits 0 on pass, 1 on the first failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ox/ox.h"

#include "harness.h"

static void be(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void test_worked_example(void)
{
	static const uint64_t want[] = {
		0x0002E50D15B52E48ull, 0x18050000010F3355ull, 0x7BA80000130EC440ull, 0, 0,
		0x0000000000000001ull
	};
	uint8_t exp[48], buf[1500];
	for (int i = 0; i < 6; i++)
		be(exp + 8 * i, want[i]);

	struct ox_enc e;
	ox_enc_begin(&e, buf, sizeof(buf), false);
	struct ox_msg m = { .chan = OX_CH_A,
			    .opcode = OX_A_GET,
			    .size = 5,
			    .source = 0x10F3355,
			    .addr = 0x7BA80000130EC440ull };
	CHECK(ox_enc_add(&e, &m) == 0);
	struct ox_tloe h = {
		.seq = 0x2E50D, .seq_ack = 0x56D4B, .ack = 1, .credit_ch = OX_CH_B, .credit = 8
	};
	size_t n = ox_enc_finish(&e, &h);
	CHECK(n == 48);
	CHECK(memcmp(buf, exp, 48) == 0);

	struct ox_frame f;
	CHECK(ox_frame_decode(exp, 48, &f) == 0);
	CHECK(f.h.seq == 0x2E50D && f.h.seq_ack == 0x56D4B && f.h.ack == 1);
	CHECK(f.h.credit_ch == OX_CH_B && f.h.credit == 8 && f.h.vc == 0 && f.h.type == 0);
	CHECK(f.nmsg == 1 && f.mask == 1);
	CHECK(f.msg[0].chan == OX_CH_A && f.msg[0].opcode == OX_A_GET && f.msg[0].size == 5);
	CHECK(f.msg[0].source == 0x10F3355 && f.msg[0].addr == 0x7BA80000130EC440ull);
	CHECK(f.msg[0].flits == 2 && f.msg[0].param == 0);
}

static void test_header_fields(void)
{
	struct ox_tloe h = { .vc = 5,
			     .type = OX_T_CLOSE,
			     .seq = OX_SEQ_MASK,
			     .seq_ack = 0x155555,
			     .ack = 0,
			     .credit_ch = OX_CH_E,
			     .credit = 31 },
		       g;
	ox_tloe_unpack(ox_tloe_pack(&h), &g);
	CHECK(g.vc == h.vc && g.type == h.type && g.seq == h.seq && g.seq_ack == h.seq_ack &&
	      g.ack == h.ack && g.credit_ch == h.credit_ch && g.credit == h.credit);
	/* fields do not bleed into each other */
	struct ox_tloe z = { .seq = OX_SEQ_MASK };
	CHECK(ox_tloe_pack(&z) == (uint64_t)OX_SEQ_MASK << 32);
	struct ox_tloe t = { .type = OX_T_ACKONLY };
	CHECK(ox_tloe_pack(&t) == 1ull << 57);
}

static void test_lengths(void)
{
	CHECK(ox_msg_flits(OX_CH_A, OX_A_GET, 12) == 2);
	CHECK(ox_msg_flits(OX_CH_A, OX_A_PUTFULL, 0) == 3);
	CHECK(ox_msg_flits(OX_CH_A, OX_A_PUTFULL, 6) == 10);
	CHECK(ox_msg_flits(OX_CH_A, OX_A_PUTPARTIAL, 3) == 4);
	CHECK(ox_msg_flits(OX_CH_A, OX_A_PUTPARTIAL, 6) == 11);
	CHECK(ox_msg_flits(OX_CH_A, OX_A_PUTPARTIAL, 7) == 20);
	CHECK(ox_msg_flits(OX_CH_D, OX_D_ACCESSACK, 6) == 1);
	CHECK(ox_msg_flits(OX_CH_D, OX_D_ACCESSACKDATA, 6) == 9);
	CHECK(ox_msg_flits(OX_CH_D, OX_D_GRANT, 6) == 2);
	CHECK(ox_msg_flits(OX_CH_D, OX_D_GRANTDATA, 6) == 10);
	CHECK(ox_msg_flits(OX_CH_D, 3, 0) == -EPROTO);
	CHECK(ox_msg_flits(OX_CH_C, 3, 0) == -EPROTO);
	CHECK(ox_msg_flits(OX_CH_C, OX_C_RELEASEDATA, 6) == 10);
	CHECK(ox_msg_flits(OX_CH_E, 0, 0) == 1);
	CHECK(ox_msg_flits(OX_CH_A, OX_A_GET, 13) == 2);
	CHECK(ox_msg_flits(OX_CH_A, OX_A_GET, 15) == 2);
	CHECK(ox_msg_flits(OX_CH_D, OX_D_ACCESSACKDATA, 15) == 4097);
	CHECK(ox_msg_flits(OX_CH_A, OX_A_GET, 16) == -EPROTO);
	CHECK(ox_msg_flits(0, 0, 0) == -EPROTO);
}

/* Every message shape survives encode then decode, data included. */
static void test_roundtrip(bool verbatim)
{
	static const struct {
		uint8_t ch, op;
	} shapes[] = {
		{ 1, 0 }, { 1, 1 }, { 1, 2 }, { 1, 3 }, { 1, 4 }, { 1, 5 }, { 1, 6 },
		{ 1, 7 }, { 2, 0 }, { 2, 4 }, { 2, 6 }, { 3, 0 }, { 3, 1 }, { 3, 2 },
		{ 3, 4 }, { 3, 5 }, { 3, 6 }, { 3, 7 }, { 4, 0 }, { 4, 1 }, { 4, 2 },
		{ 4, 4 }, { 4, 5 }, { 4, 6 }, { 5, 0 },
	};
	static uint8_t data[1u << OX_MAX_SIZE_LOG2], pm[(1u << OX_MAX_SIZE_LOG2) / 8],
		buf[(1u << OX_MAX_SIZE_LOG2) * 9 / 8 + 64], out[1u << OX_MAX_SIZE_LOG2];
	for (unsigned i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 3);
	for (unsigned i = 0; i < sizeof(pm); i++)
		pm[i] = (uint8_t)(0xA5 ^ i);
	for (unsigned s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		for (unsigned size = 0; size <= OX_MAX_SIZE_LOG2; size++) {
			struct ox_msg m = { .chan = shapes[s].ch,
					    .opcode = shapes[s].op,
					    .size = (uint8_t)size,
					    .param = 3,
					    .domain = 9,
					    .denied = 1,
					    .corrupt = 0,
					    .source = 0x2ABCDEF & 0x3ffffff,
					    .sink = 0x1234567,
					    .data = data,
					    .pmask = pm,
					    .addr = 0x123456789ABCD000ull |
						    (size < 3 ? 4u & ~((1u << size) - 1) : 0) };
			struct ox_enc e;
			ox_enc_begin(&e, buf, sizeof(buf), verbatim);
			CHECK(ox_enc_add(&e, &m) == 0);
			struct ox_tloe h = { .seq = 77 };
			size_t n = ox_enc_finish(&e, &h);
			struct ox_frame f;
			CHECK(ox_frame_decode(buf, n, &f) == 0);
			CHECK(f.nmsg == 1);
			struct ox_msg *d = &f.msg[0];
			CHECK(d->chan == m.chan && d->opcode == m.opcode && d->size == m.size);
			CHECK(d->flits == ox_msg_flits(m.chan, m.opcode, size));
			if (m.chan == OX_CH_E) {
				CHECK(d->sink == m.sink);
				continue;
			}
			CHECK(d->param == 3 && d->domain == 9 && d->denied == 1 && d->corrupt == 0);
			CHECK(d->source == m.source);
			if (m.chan != OX_CH_D)
				CHECK(d->addr == m.addr);
			if (m.chan == OX_CH_D &&
			    (m.opcode == OX_D_GRANT || m.opcode == OX_D_GRANTDATA))
				CHECK(d->sink == m.sink);
			if (!ox_msg_has_data(m.chan, m.opcode))
				continue;
			d->addr = m.addr;
			unsigned nb = 1u << size;
			if (m.chan <= OX_CH_B && m.opcode == OX_A_PUTPARTIAL) {
				for (unsigned i = 0; i < nb; i++) {
					bool en = pm[i >> 3] >> (i & 7) & 1;
					CHECK(ox_msg_mask_bit(d, i) == en);
					CHECK(ox_msg_byte(d, i, verbatim) == (en ? data[i] : 0));
				}
			} else {
				memset(out, 0, sizeof(out));
				ox_msg_read(d, out, verbatim);
				CHECK(memcmp(out, data, nb) == 0);
			}
		}
	}
}

/* Data flits are the byte-reversed memory word (or the word itself, verbatim). */
static void test_byte_order(void)
{
	uint8_t mem[8] = { 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88 }, buf[64];
	struct ox_msg m = { .chan = OX_CH_A, .opcode = OX_A_PUTFULL, .size = 3, .data = mem };
	struct ox_enc e;
	ox_enc_begin(&e, buf, sizeof(buf), false);
	ox_enc_add(&e, &m);
	static const uint8_t sw[8] = { 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11 };
	CHECK(memcmp(buf + 24, sw, 8) == 0);
	ox_enc_begin(&e, buf, sizeof(buf), true);
	ox_enc_add(&e, &m);
	CHECK(memcmp(buf + 24, mem, 8) == 0);
	/* a 2-byte write at offset 6 of its word lands in bits 63:48 of the flit */
	m.size = 1;
	m.addr = 0x1006;
	ox_enc_begin(&e, buf, sizeof(buf), false);
	ox_enc_add(&e, &m);
	static const uint8_t nar[8] = { 0x22, 0x11, 0, 0, 0, 0, 0, 0 };
	CHECK(memcmp(buf + 24, nar, 8) == 0);
}

/* PutPartialData: one mask flit ahead of each group of up to 8 data flits. */
static void test_partial_layout(void)
{
	uint8_t data[128], pm[16], buf[512];
	memset(data, 0xEE, sizeof(data));
	memset(pm, 0, sizeof(pm));
	pm[0] = 0x01; /* byte 0 */
	pm[8] = 0x80; /* byte 71 */
	struct ox_msg m = {
		.chan = OX_CH_A, .opcode = OX_A_PUTPARTIAL, .size = 7, .data = data, .pmask = pm
	};
	struct ox_enc e;
	ox_enc_begin(&e, buf, sizeof(buf), false);
	CHECK(ox_enc_add(&e, &m) == 0);
	uint8_t exp0[8] = { 0, 0, 0, 0, 0, 0, 0, 1 };
	CHECK(memcmp(buf + 24, exp0, 8) == 0);          /* mask flit of group 0 */
	CHECK(buf[32 + 7] == 0xEE && buf[32 + 6] == 0); /* byte 0 = flit bits 7:0 */
	uint8_t exp1[8] = { 0, 0, 0, 0, 0, 0, 0, 0x80 };
	CHECK(memcmp(buf + 24 + 72, exp1, 8) == 0); /* mask flit of group 1 */
	/* byte 71 is byte 7 of flit 8 = first flit of group 1, bits 63:56 */
	CHECK(buf[24 + 72 + 8] == 0xEE && buf[24 + 72 + 8 + 7] == 0);
	struct ox_tloe h = { 0 };
	size_t n = ox_enc_finish(&e, &h);
	struct ox_frame f;
	CHECK(ox_frame_decode(buf, n, &f) == 0);
	for (unsigned i = 0; i < 128; i++)
		CHECK(ox_msg_mask_bit(&f.msg[0], i) == (i == 0 || i == 71));
	CHECK(ox_msg_byte(&f.msg[0], 71, false) == 0xEE);
}

/* Packing: many messages per frame, 64 at most, nothing after flit 64. */
static void test_packing(void)
{
	uint8_t buf[9000];
	struct ox_enc e;
	struct ox_msg get = { .chan = OX_CH_A, .opcode = OX_A_GET, .size = 6 };
	ox_enc_begin(&e, buf, sizeof(buf), false);
	int n = 0;
	while (ox_enc_add(&e, &get) == 0) {
		get.source++;
		n++;
	}
	CHECK(n == 32); /* 32 Gets fill flits 1..64 */
	struct ox_tloe h = { 0 };
	size_t len = ox_enc_finish(&e, &h);
	struct ox_frame f;
	CHECK(ox_frame_decode(buf, len, &f) == 0 && f.nmsg == 32);
	for (unsigned i = 0; i < f.nmsg; i++)
		CHECK(f.msg[i].source == i);

	struct ox_msg ack = { .chan = OX_CH_D, .opcode = OX_D_ACCESSACK };
	ox_enc_begin(&e, buf, sizeof(buf), false);
	n = 0;
	while (ox_enc_add(&e, &ack) == 0)
		n++;
	CHECK(n == 64);
	len = ox_enc_finish(&e, &h);
	CHECK(ox_frame_decode(buf, len, &f) == 0 && f.nmsg == 64 && f.mask == ~0ull);

	/* a big message may start at flit 64 and run past it, but must be last */
	static uint8_t data[8192];
	struct ox_msg put = { .chan = OX_CH_A, .opcode = OX_A_PUTFULL, .size = 9, .data = data };
	ox_enc_begin(&e, buf, sizeof(buf), false);
	for (int i = 0; i < 63; i++)
		CHECK(ox_enc_add(&e, &ack) == 0);
	CHECK(ox_enc_add(&e, &put) == 0);
	CHECK(ox_enc_add(&e, &ack) == -ENOSPC);
	len = ox_enc_finish(&e, &h);
	CHECK(ox_frame_decode(buf, len, &f) == 0 && f.nmsg == 64);

	/* the MTU bounds the frame: 1500 bytes hold one 1 KiB put, not two */
	put.size = 10;
	ox_enc_begin(&e, buf, 1500, false);
	CHECK(ox_enc_add(&e, &put) == 0);
	CHECK(ox_enc_add(&e, &put) == -ENOSPC);
	len = ox_enc_finish(&e, &h);
	CHECK(len <= 1500);
	put.size = 11;
	ox_enc_begin(&e, buf, 1500, false);
	CHECK(ox_enc_add(&e, &put) == -ENOSPC);
	ox_enc_begin(&e, buf, 9000, false);
	put.size = 13; /* 8 KiB: the largest burst a jumbo frame holds */
	CHECK(ox_enc_add(&e, &put) == 0);
	len = ox_enc_finish(&e, &h);
	CHECK(len <= 9000 && ox_frame_decode(buf, len, &f) == 0);
}

static void test_rejects(void)
{
	uint8_t good[48], b[128];
	struct ox_frame f;
	static const uint64_t w[] = {
		0x0002E50D15B52E48ull, 0x18050000010F3355ull, 0x7BA80000130EC440ull, 0, 0, 1
	};
	for (int i = 0; i < 6; i++)
		be(good + 8 * i, w[i]);
	CHECK(ox_frame_decode(good, 40, &f) == -EPROTO && f.reject == OX_REJ_SHORT);
	CHECK(ox_frame_decode(good, 0, &f) == -EPROTO && f.reject == OX_REJ_SHORT);
	memcpy(b, good, 48);
	b[48] = 0;
	CHECK(ox_frame_decode(b, 49, &f) == -EPROTO && f.reject == OX_REJ_ALIGN);
	memcpy(b, good, 48);
	be(b + 40, 0x10); /* mask points at flit 5 = the mask itself */
	CHECK(ox_frame_decode(b, 48, &f) == -EPROTO && f.reject == OX_REJ_MASK);
	be(b + 40, 0x3); /* second bit inside the first message */
	CHECK(ox_frame_decode(b, 48, &f) == -EPROTO && f.reject == OX_REJ_MASK);
	be(b + 40, 0x0); /* message header without a mask bit */
	CHECK(ox_frame_decode(b, 48, &f) == -EPROTO && f.reject == OX_REJ_PADDING);
	memcpy(b, good, 48);
	be(b + 8, 0x78050000010F3355ull); /* channel 7 */
	CHECK(ox_frame_decode(b, 48, &f) == -EPROTO && f.reject == OX_REJ_CHANNEL);
	be(b + 8, 0x46050000010F3355ull); /* D opcode 3 */
	CHECK(ox_frame_decode(b, 48, &f) == -EPROTO && f.reject == OX_REJ_OPCODE);
	/* the largest burst the size field names, 32 KiB, is legal: a Get of
	 * it is two flits; 2^16 cannot be written at all */
	be(b + 8, 0x180F0000010F3355ull);
	CHECK(ox_frame_decode(b, 48, &f) == 0 && f.nmsg == 1 && f.msg[0].size == 15);
	be(b + 8, 0x100A000000000000ull); /* PutFull 1 KiB in a 48-byte frame */
	CHECK(ox_frame_decode(b, 48, &f) == -EPROTO && f.reject == OX_REJ_TRUNC);
	memcpy(b, good, 48);
	be(b + 24, 5); /* garbage in padding */
	CHECK(ox_frame_decode(b, 48, &f) == -EPROTO && f.reject == OX_REJ_PADDING);
	memcpy(b, good, 48);
	be(b, 0x0002E50D15B52E48ull | 9ull << 57); /* message_type 9 */
	CHECK(ox_frame_decode(b, 48, &f) == -EPROTO && f.reject == OX_REJ_TYPE);
	be(b, 0x0002E50D15B52E48ull | 1ull << 57); /* ACK-only with a message */
	CHECK(ox_frame_decode(b, 48, &f) == -EPROTO && f.reject == OX_REJ_TYPE);
	/* every truncation of a valid frame is refused cleanly */
	for (size_t n = 0; n < 48; n++)
		CHECK(ox_frame_decode(good, n, &f) == -EPROTO);
	CHECK(strcmp(ox_reject_name(OX_REJ_MASK), "mask") == 0);
}

int main(void)
{
	t_keep_going = 1;
	test_worked_example();
	test_header_fields();
	test_lengths();
	test_roundtrip(false);
	test_roundtrip(true);
	test_byte_order();
	test_partial_layout();
	test_packing();
	test_rejects();
	if (t_fails) {
		fprintf(stderr, "test_ox_codec: %d failures\n", t_fails);
		return 1;
	}
	printf("test_ox_codec: ok\n");
	return 0;
}
