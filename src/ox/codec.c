/*
 * codec.c - OmniXtend frame and TileLink message encoding and decoding.
 *
 * Everything after the EtherType is a run of 64-bit flits sent big-endian:
 * the TLoE header, the messages (a header of one or two flits, then data),
 * zero padding up to the 48-byte minimum, and the frame mask whose bit k says
 * a message starts at flit k + 1.  These functions are pure: they work in
 * the caller's buffers, allocate nothing, and the decoder checks every
 * length against the frame before touching a byte, because frames come
 * from anyone on the wire.
 *
 * Data byte order follows the specification: the byte at the lowest address
 * is bits 7:0 of its flit, so on the wire a data flit is the byte-reversed
 * memory word.  Some software endpoints copy the bytes unchanged instead;
 * the `verbatim` switch talks to them.
 */
#include <errno.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "ox/ox.h"

/* The flit swaps below are written for the machines we run on. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian host assumed");

static inline uint64_t ld_be64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return __builtin_bswap64(v);
}

static inline void st_be64(uint8_t *p, uint64_t v)
{
	v = __builtin_bswap64(v);
	memcpy(p, &v, 8);
}

/* Copies n flits, reversing the bytes of each: memory words to wire flits
 * and back.  It is the one per-byte cost of the data path (a 4 KiB read
 * passes it twice), so x86 machines with AVX2 do 32 bytes per step. */
#if defined(__x86_64__)
__attribute__((target("avx2"))) static void swap_copy_avx2(uint8_t *d, const uint8_t *s, size_t n)
{
	const __m256i rev = _mm256_setr_epi8(7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8,
					     7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8);
	size_t i = 0;
	for (; i + 4 <= n; i += 4) {
		__m256i v = _mm256_loadu_si256((const __m256i *)(s + 8 * i));
		_mm256_storeu_si256((__m256i *)(d + 8 * i), _mm256_shuffle_epi8(v, rev));
	}
	for (; i < n; i++) {
		uint64_t v;
		memcpy(&v, s + 8 * i, 8);
		v = __builtin_bswap64(v);
		memcpy(d + 8 * i, &v, 8);
	}
}
#endif

static void swap_copy(uint8_t *d, const uint8_t *s, size_t n)
{
#if defined(__x86_64__)
	static int avx2 = -1;
	if (avx2 < 0)
		avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
	if (avx2) {
		swap_copy_avx2(d, s, n);
		return;
	}
#endif
	for (size_t i = 0; i < n; i++) {
		uint64_t v;
		memcpy(&v, s + 8 * i, 8);
		v = __builtin_bswap64(v);
		memcpy(d + 8 * i, &v, 8);
	}
}

static const char *const rej_names[OX_REJ_COUNT] = {
	"short",   "align",  "toobig", "mask",        "channel",    "opcode", "size", "trunc",
	"padding", "credit", "type",   "unknown_mac", "not_for_us", "nopeer", "seq",  "tag",
};

const char *ox_reject_name(int reason)
{
	if (reason < 0 || reason >= OX_REJ_COUNT)
		return "?";
	return rej_names[reason];
}

uint64_t ox_tloe_pack(const struct ox_tloe *h)
{
	return (uint64_t)(h->vc & 7) << 61 | (uint64_t)(h->type & 15) << 57 |
	       (uint64_t)(h->seq & OX_SEQ_MASK) << 32 | (uint64_t)(h->seq_ack & OX_SEQ_MASK) << 10 |
	       (uint64_t)(h->ack & 1) << 9 | (uint64_t)(h->credit_ch & 7) << 5 |
	       (uint64_t)(h->credit & 31);
}

void ox_tloe_unpack(uint64_t w, struct ox_tloe *h)
{
	h->vc = w >> 61 & 7;
	h->type = w >> 57 & 15;
	h->seq = w >> 32 & OX_SEQ_MASK;
	h->seq_ack = w >> 10 & OX_SEQ_MASK;
	h->ack = w >> 9 & 1;
	h->credit_ch = w >> 5 & 7;
	h->credit = w & 31;
}

void ox_eth_write(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], uint16_t type)
{
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = type >> 8;
	f[13] = type & 0xff;
}

static unsigned data_flits(unsigned size)
{
	return size < 3 ? 1 : 1u << (size - 3);
}

bool ox_msg_has_data(unsigned chan, unsigned op)
{
	switch (chan) {
	case OX_CH_A:
	case OX_CH_B:
		return op <= OX_A_LOGIC;
	case OX_CH_C:
		return op == OX_C_ACCESSACKDATA || op == OX_C_PROBEACKDATA ||
		       op == OX_C_RELEASEDATA;
	case OX_CH_D:
		return op == OX_D_ACCESSACKDATA || op == OX_D_GRANTDATA;
	}
	return false;
}

/* Header flits of a message: A-C carry an address flit, D Grant* a sink flit. */
static int header_flits(unsigned chan, unsigned op)
{
	switch (chan) {
	case OX_CH_A:
	case OX_CH_B:
		return 2;
	case OX_CH_C:
		return op == 3 ? -EPROTO : 2;
	case OX_CH_D:
		if (op == 3 || op == 7)
			return -EPROTO;
		return (op == OX_D_GRANT || op == OX_D_GRANTDATA) ? 2 : 1;
	case OX_CH_E:
		return 1;
	}
	return -EPROTO;
}

int ox_msg_flits(unsigned chan, unsigned op, unsigned size)
{
	int h = header_flits(chan, op);
	if (h < 0 || size > OX_MAX_SIZE_LOG2)
		return -EPROTO;
	if (!ox_msg_has_data(chan, op))
		return h;
	unsigned d = data_flits(size);
	if ((chan == OX_CH_A || chan == OX_CH_B) && op == OX_A_PUTPARTIAL)
		d += (d + 7) / 8;
	return h + (int)d;
}

/* ---------------------------------------------------------------- encoder */

void ox_enc_begin(struct ox_enc *e, uint8_t *buf, size_t cap, bool verbatim)
{
	e->buf = buf;
	e->cap_flits = cap / 8;
	e->nflits = 1;
	e->mask = 0;
	e->nmsg = 0;
	e->closed = false;
	e->verbatim = verbatim;
}

int ox_enc_room(const struct ox_enc *e, unsigned msg_flits)
{
	if (e->closed || e->nmsg >= OX_MAX_MSGS || e->nflits > 64)
		return -ENOSPC;
	if (e->nflits + msg_flits + 1 > e->cap_flits)
		return -ENOSPC;
	return 0;
}

static uint64_t tl_header(const struct ox_msg *m)
{
	uint64_t w = (uint64_t)(m->chan & 7) << 60 | (uint64_t)(m->opcode & 7) << 57 |
		     (uint64_t)(m->param & 15) << 52 | (uint64_t)(m->size & 15) << 48 |
		     (uint64_t)m->domain << 40 | (uint64_t)(m->denied & 1) << 39 |
		     (uint64_t)(m->corrupt & 1) << 38;
	if (m->chan == OX_CH_E)
		return w | (m->sink & 0x3ffffff);
	return w | (m->source & 0x3ffffff);
}

/* Byte lane where narrow data starts; wider data always starts at lane 0. */
static unsigned first_lane(const struct ox_msg *m)
{
	return m->size < 3 ? (unsigned)(m->addr & 7) & ~((1u << m->size) - 1) : 0;
}

static void put_data(uint8_t *w, const struct ox_msg *m, bool verbatim)
{
	unsigned nd = data_flits(m->size), n = 1u << m->size;
	if (!m->data || m->size < 3)
		memset(w, 0, (size_t)nd * 8);
	if (!m->data)
		return;
	const uint8_t *src = m->data;
	if (m->size >= 3 && !verbatim) {
		swap_copy(w, src, nd);
		return;
	}
	if (m->size >= 3) {
		memcpy(w, src, n);
		return;
	}
	unsigned lane = first_lane(m);
	for (unsigned i = 0; i < n; i++)
		w[verbatim ? lane + i : 7 - (lane + i)] = src[i];
}

static void put_partial(uint8_t *w, const struct ox_msg *m, bool verbatim)
{
	unsigned nd = data_flits(m->size), n = 1u << m->size, lane = first_lane(m);
	unsigned groups = (nd + 7) / 8;
	memset(w, 0, (size_t)(nd + groups) * 8);
	const uint8_t *src = m->data;
	for (unsigned i = 0; i < n; i++) {
		if (m->pmask && !(m->pmask[i >> 3] >> (i & 7) & 1))
			continue;
		unsigned L = lane + i, f = L >> 3, g = f >> 3;
		uint8_t *mf = w + (size_t)g * 72;
		uint64_t mv = ld_be64(mf) | 1ull << (L & 63);
		st_be64(mf, mv);
		uint8_t *df = mf + 8 + (f & 7) * 8;
		df[verbatim ? (L & 7) : 7 - (L & 7)] = src ? src[i] : 0;
	}
}

int ox_enc_add(struct ox_enc *e, const struct ox_msg *m)
{
	int flits = ox_msg_flits(m->chan, m->opcode, m->size);
	if (flits < 0)
		return flits;
	if (ox_enc_room(e, (unsigned)flits) < 0)
		return -ENOSPC;
	uint8_t *p = e->buf + e->nflits * 8;
	st_be64(p, tl_header(m));
	int h = header_flits(m->chan, m->opcode);
	if (h == 2)
		st_be64(p + 8, m->chan == OX_CH_D ? (m->sink & 0x3ffffff) : m->addr);
	if (ox_msg_has_data(m->chan, m->opcode)) {
		if ((m->chan == OX_CH_A || m->chan == OX_CH_B) && m->opcode == OX_A_PUTPARTIAL)
			put_partial(p + 8 * h, m, e->verbatim);
		else
			put_data(p + 8 * h, m, e->verbatim);
	}
	e->mask |= 1ull << (e->nflits - 1);
	e->nmsg++;
	e->nflits += (unsigned)flits;
	if (e->nflits > 64)
		e->closed = true;
	return 0;
}

size_t ox_enc_finish(struct ox_enc *e, const struct ox_tloe *h)
{
	while ((e->nflits + 1) * 8 < OX_MIN_PAYLOAD)
		memset(e->buf + 8 * e->nflits++, 0, 8);
	st_be64(e->buf, ox_tloe_pack(h));
	st_be64(e->buf + 8 * e->nflits, e->mask);
	return (e->nflits + 1) * 8;
}

/* ---------------------------------------------------------------- decoder */

static int reject(struct ox_frame *f, int why)
{
	f->reject = why;
	return -EPROTO;
}

int ox_frame_decode(const uint8_t *p, size_t len, struct ox_frame *f)
{
	f->nmsg = 0;
	f->reject = -1;
	if (len < OX_MIN_PAYLOAD)
		return reject(f, OX_REJ_SHORT);
	if (len % 8)
		return reject(f, OX_REJ_ALIGN);
	if (len > 65536)
		return reject(f, OX_REJ_TOOBIG);
	unsigned n = (unsigned)(len / 8), last = n - 2; /* messages live in flits 1..last */
	ox_tloe_unpack(ld_be64(p), &f->h);
	f->mask = ld_be64(p + len - 8);
	f->nflits = n;
	if (f->h.type > OX_T_CLOSE)
		return reject(f, OX_REJ_TYPE);
	if (f->h.type == OX_T_ACKONLY && f->mask)
		return reject(f, OX_REJ_TYPE);
	/* every mask bit must name a flit before the mask */
	if (last < 64 && (f->mask >> last))
		return reject(f, OX_REJ_MASK);

	unsigned pos = 1;
	while (pos <= last) {
		const uint8_t *q = p + 8 * pos;
		if (pos > 64 || !(f->mask >> (pos - 1) & 1)) {
			if (ld_be64(q))
				return reject(f, OX_REJ_PADDING);
			pos++;
			continue;
		}
		uint64_t w = ld_be64(q);
		struct ox_msg *m = &f->msg[f->nmsg];
		memset(m, 0, sizeof(*m));
		m->chan = w >> 60 & 7;
		m->opcode = w >> 57 & 7;
		m->param = w >> 52 & 15;
		m->size = w >> 48 & 15;
		m->domain = w >> 40 & 0xff;
		m->denied = w >> 39 & 1;
		m->corrupt = w >> 38 & 1;
		m->source = w & 0x3ffffff;
		if (m->chan < OX_CH_A || m->chan > OX_CH_E)
			return reject(f, OX_REJ_CHANNEL);
		if (m->size > OX_MAX_SIZE_LOG2)
			return reject(f, OX_REJ_SIZE);
		int fl = ox_msg_flits(m->chan, m->opcode, m->size);
		if (fl < 0)
			return reject(f, OX_REJ_OPCODE);
		if (pos + (unsigned)fl - 1 > last)
			return reject(f, OX_REJ_TRUNC);
		/* no other message may start inside this one */
		for (unsigned k = pos + 1; k < pos + (unsigned)fl && k <= 64; k++)
			if (f->mask >> (k - 1) & 1)
				return reject(f, OX_REJ_MASK);
		int h = header_flits(m->chan, m->opcode);
		if (m->chan == OX_CH_E) {
			m->sink = m->source;
			m->source = 0;
		} else if (h == 2) {
			uint64_t w2 = ld_be64(q + 8);
			if (m->chan == OX_CH_D)
				m->sink = w2 & 0x3ffffff;
			else
				m->addr = w2;
		}
		m->wire = q + 8 * h;
		m->flits = (uint16_t)fl;
		f->nmsg++;
		pos += (unsigned)fl;
	}
	return 0;
}

/* -------------------------------------------------------------- data access */

static bool is_partial(const struct ox_msg *m)
{
	return (m->chan == OX_CH_A || m->chan == OX_CH_B) && m->opcode == OX_A_PUTPARTIAL;
}

static size_t byte_off(const struct ox_msg *m, unsigned i, bool verbatim)
{
	unsigned L = first_lane(m) + i, f = L >> 3, b = L & 7;
	size_t base = is_partial(m) ? (size_t)(f >> 3) * 72 + 8 + (f & 7) * 8 : (size_t)f * 8;
	return base + (verbatim ? b : 7 - b);
}

uint8_t ox_msg_byte(const struct ox_msg *m, unsigned i, bool verbatim)
{
	return m->wire[byte_off(m, i, verbatim)];
}

bool ox_msg_mask_bit(const struct ox_msg *m, unsigned i)
{
	unsigned L = first_lane(m) + i;
	return ld_be64(m->wire + (size_t)(L >> 6) * 72) >> (L & 63) & 1;
}

void ox_msg_read(const struct ox_msg *m, void *dst, bool verbatim)
{
	uint8_t *d = dst;
	unsigned n = 1u << m->size;
	if (m->size >= 3 && !is_partial(m)) {
		if (verbatim) {
			memcpy(d, m->wire, n);
			return;
		}
		swap_copy(d, m->wire, n / 8);
		return;
	}
	for (unsigned i = 0; i < n; i++)
		d[i] = ox_msg_byte(m, i, verbatim);
}
