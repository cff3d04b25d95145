/*
 * wire.c - encoding and validation of the ethermem TCP protocol (wire.h).
 * Explicit byte-by-byte little-endian encoding keeps the format independent
 * of the host and of struct padding.
 */
#include "common/wire.h"

#include <errno.h>
#include <string.h>

#include "ethermem.h"

void em_hdr_encode(uint8_t out[EM_HDR_LEN], const struct em_hdr *h)
{
	em_put32(out, h->magic);
	out[4] = h->version;
	out[5] = h->op;
	out[6] = (uint8_t)h->flags;
	out[7] = (uint8_t)(h->flags >> 8);
	em_put32(out + 8, (uint32_t)h->status);
	em_put32(out + 12, h->len);
	em_put64(out + 16, h->tag);
	em_put32(out + 24, h->region);
	em_put32(out + 28, h->aux);
	em_put64(out + 32, h->offset);
}

uint32_t em_wire_max_len(unsigned op, bool resp)
{
	switch (op) {
	case EM_W_HELLO:
		return EM_NONCE_LEN;
	case EM_W_AUTH:
		return resp ? EM_AUTH_RESP_LEN : EM_AUTH_REQ_LEN;
	case EM_W_CREATE:
	case EM_W_OPEN:
	case EM_W_DELETE:
		return 1 + 63 + 2 + EM_MAX_LAYOUT;
	case EM_W_CLOSE:
	case EM_W_BASELINE:
	case EM_W_BYE:
		return 0;
	case EM_W_LIST:
		return resp ? EM_MAX_CTRL : 0;
	case EM_W_STATUS:
		return resp ? EM_STATUS_LEN : 0;
	case EM_W_READ:
		return resp ? EM_MAX_IO : 0;
	case EM_W_WRITE:
		return resp ? 0 : EM_MAX_IO;
	case EM_W_ATOMIC:
		return resp ? 8 : 16;
	case EM_W_OX_ATTACH:
		return resp ? EM_OX_ATTACH_RESP_LEN : EM_OX_ATTACH_REQ_LEN;
	case EM_W_OX_MAP:
		return resp ? 8 : 0;
	case EM_W_FREEZE:
		return resp ? 0 : 3 + EM_NAME_MAX;
	default:
		return 0;
	}
}

int em_hdr_decode(const uint8_t in[EM_HDR_LEN], struct em_hdr *h, const char **why)
{
	const char *dummy;

	if (!why)
		why = &dummy;
	h->magic = em_get32(in);
	h->version = in[4];
	h->op = in[5];
	h->flags = (uint16_t)(in[6] | in[7] << 8);
	h->status = (int32_t)em_get32(in + 8);
	h->len = em_get32(in + 12);
	h->tag = em_get64(in + 16);
	h->region = em_get32(in + 24);
	h->aux = em_get32(in + 28);
	h->offset = em_get64(in + 32);

	if (h->magic != EM_WIRE_MAGIC) {
		*why = "bad magic";
		return -EPROTO;
	}
	if (h->version != EM_WIRE_VERSION) {
		*why = "unsupported protocol version";
		return -EM_EVERSION;
	}
	if (h->op == 0 || h->op >= EM_W__MAX) {
		*why = "unknown opcode";
		return -EPROTO;
	}
	if (h->flags & ~(EM_WF_RESPONSE | EM_WF_ONCE | EM_WF_COPY | EM_WF_VER)) {
		*why = "unknown flags";
		return -EPROTO;
	}
	if ((h->flags & EM_WF_COPY) &&
	    ((h->flags & EM_WF_RESPONSE) || (h->op != EM_W_READ && h->op != EM_W_WRITE))) {
		*why = "repair-copy flag on a message that cannot carry it";
		return -EPROTO;
	}
	if ((h->flags & EM_WF_ONCE) &&
	    ((h->flags & EM_WF_RESPONSE) || (h->op != EM_W_WRITE && h->op != EM_W_ATOMIC))) {
		*why = "at-most-once flag on a message that cannot carry it";
		return -EPROTO;
	}
	if ((h->flags & EM_WF_VER) &&
	    ((h->flags & (EM_WF_RESPONSE | EM_WF_COPY)) || h->op != EM_W_READ)) {
		*why = "version-check flag on a message that cannot carry it";
		return -EPROTO;
	}
	if ((h->flags & EM_WF_ONCE) && h->tag == 0) {
		*why = "at-most-once request without an identity";
		return -EPROTO;
	}
	if ((h->flags & EM_WF_RESPONSE) && (h->status > 0 || h->status <= -EM_WIRE_MAX_ERRNO)) {
		/* a caller would get it back as a count, or as nonsense */
		*why = "status neither 0 nor -errno";
		return -EPROTO;
	}
	if (h->len > em_wire_max_len(h->op, h->flags & EM_WF_RESPONSE)) {
		*why = "payload length over the opcode's limit";
		return -EPROTO;
	}
	return 0;
}

const char *em_wire_op_name(unsigned op)
{
	static const char *names[EM_W__MAX] = {
		"?",        "hello",     "auth",   "create", "open",  "close",
		"delete",   "list",      "status", "read",   "write", "atomic",
		"baseline", "ox-attach", "ox-map", "bye",    "drain", "freeze",
	};
	return op < EM_W__MAX ? names[op] : "?";
}

void em_auth_req_encode(uint8_t *out, const struct em_auth_req *r)
{
	memcpy(out, r->proof, EM_PROOF_LEN);
	em_put64(out + EM_PROOF_LEN, r->attach_session);
	memcpy(out + EM_PROOF_LEN + 8, r->attach_token, EM_TOKEN_LEN);
}

void em_auth_req_decode(const uint8_t *in, struct em_auth_req *r)
{
	memcpy(r->proof, in, EM_PROOF_LEN);
	r->attach_session = em_get64(in + EM_PROOF_LEN);
	memcpy(r->attach_token, in + EM_PROOF_LEN + 8, EM_TOKEN_LEN);
}

void em_auth_resp_encode(uint8_t *out, const struct em_auth_resp *r)
{
	em_put64(out, r->session);
	memcpy(out + 8, r->token, EM_TOKEN_LEN);
	memcpy(out + 8 + EM_TOKEN_LEN, r->node_id, EM_NODE_ID_LEN);
	memcpy(out + 8 + EM_TOKEN_LEN + EM_NODE_ID_LEN, r->proof, EM_PROOF_LEN);
}

void em_auth_resp_decode(const uint8_t *in, struct em_auth_resp *r)
{
	r->session = em_get64(in);
	memcpy(r->token, in + 8, EM_TOKEN_LEN);
	memcpy(r->node_id, in + 8 + EM_TOKEN_LEN, EM_NODE_ID_LEN);
	memcpy(r->proof, in + 8 + EM_TOKEN_LEN + EM_NODE_ID_LEN, EM_PROOF_LEN);
}

int em_namelayout_encode(uint8_t *out, size_t cap, const char *name, const void *layout,
			 uint16_t layout_len)
{
	size_t nl = name ? strlen(name) : 0;

	if (nl > EM_NAME_MAX || layout_len > EM_MAX_LAYOUT)
		return -EINVAL;
	if (1 + nl + 2 + layout_len > cap)
		return -ENOSPC;
	out[0] = (uint8_t)nl;
	if (nl)
		memcpy(out + 1, name, nl);
	out[1 + nl] = (uint8_t)layout_len;
	out[2 + nl] = (uint8_t)(layout_len >> 8);
	if (layout_len)
		memcpy(out + 3 + nl, layout, layout_len);
	return (int)(3 + nl + layout_len);
}

int em_namelayout_decode(const uint8_t *in, size_t len, char *name, const uint8_t **layout,
			 uint16_t *layout_len)
{
	size_t nl;
	uint16_t ll;

	if (len < 3)
		return -EPROTO;
	nl = in[0];
	if (nl > EM_NAME_MAX || 1 + nl + 2 > len)
		return -EPROTO;
	ll = (uint16_t)(in[1 + nl] | in[2 + nl] << 8);
	if (ll > EM_MAX_LAYOUT || 3 + nl + ll != len)
		return -EPROTO;
	for (size_t i = 0; i < nl; i++)
		if (in[1 + i] < 0x21 || in[1 + i] > 0x7e || in[1 + i] == '/')
			return -EINVAL; /* printable, no spaces or slashes */
	memcpy(name, in + 1, nl);
	name[nl] = 0;
	*layout = in + 3 + nl;
	*layout_len = ll;
	return 0;
}

void em_ox_info_encode(uint8_t *out, const struct em_ox_info *i)
{
	memcpy(out, i->mac, 6);
	out[6] = (uint8_t)i->ethertype;
	out[7] = (uint8_t)(i->ethertype >> 8);
	em_put32(out + 8, i->mtu);
	out[12] = i->mode;
	out[13] = (uint8_t)((i->verbatim ? 1 : 0) | (i->tagged ? 2 : 0) | (i->big_bursts ? 4 : 0));
	out[14] = (uint8_t)i->echo_type;
	out[15] = (uint8_t)(i->echo_type >> 8);
}

void em_ox_info_decode(const uint8_t *in, struct em_ox_info *i)
{
	memcpy(i->mac, in, 6);
	i->ethertype = (uint16_t)(in[6] | in[7] << 8);
	i->mtu = em_get32(in + 8);
	i->mode = in[12];
	i->verbatim = in[13] & 1;
	i->tagged = in[13] >> 1 & 1;
	i->big_bursts = in[13] >> 2 & 1;
	i->echo_type = (uint16_t)(in[14] | in[15] << 8);
}

int em_status_encode(uint8_t *out, size_t cap, const uint64_t v[EM_ST__COUNT])
{
	if (cap < EM_STATUS_LEN)
		return -ENOSPC;
	for (int i = 0; i < EM_ST__COUNT; i++)
		em_put64(out + 8 * i, v[i]);
	return EM_STATUS_LEN;
}

int em_status_decode(const uint8_t *in, size_t len, uint64_t v[EM_ST__COUNT])
{
	if (len != EM_STATUS_LEN)
		return -EPROTO;
	for (int i = 0; i < EM_ST__COUNT; i++)
		v[i] = em_get64(in + 8 * i);
	return 0;
}

int32_t em_hdr_status(const uint8_t hdr[EM_HDR_LEN])
{
	return (int32_t)em_get32(hdr + 8);
}

#define LAYOUT_FIXED 22 /* magic, size, chunk, nseg, plen */

bool em_red_valid(unsigned red, unsigned k, unsigned m)
{
	switch (red) {
	case 0:
	case EM_RED_NONE:
		return !k && !m;
	case EM_RED_REPLICATE:
		return k >= 2 && k <= EM_RED_MAX_COPIES && !m;
	case EM_RED_EC:
		return k >= 1 && k <= EM_RED_MAX_K && m >= 1 && m <= EM_RED_MAX_M;
	default:
		return false;
	}
}

static bool layout_ok(uint64_t size, uint64_t chunk, unsigned nseg, unsigned plen,
		      const uint8_t *pattern, unsigned red, unsigned k, unsigned m)
{
	if (!size || !chunk || !nseg || nseg > EM_LAYOUT_MAX_SEG || !plen ||
	    plen > EM_LAYOUT_MAX_PATTERN || !em_red_valid(red, k, m))
		return false;
	for (unsigned j = 0; j < plen; j++)
		if (pattern[j] >= nseg)
			return false;
	/* a redundant region: one segment per copy or chunk, in order */
	if (red == EM_RED_REPLICATE || red == EM_RED_EC) {
		if (nseg != k + m || plen != nseg)
			return false;
		for (unsigned j = 0; j < plen; j++)
			if (pattern[j] != j)
				return false;
	}
	return true;
}

static bool has_trailer(const struct em_layout *l)
{
	return (l->red && l->red != EM_RED_NONE) || l->epoch || l->flags;
}

int em_layout_encode(uint8_t *out, size_t cap, const struct em_layout *l)
{
	size_t n, base;

	if (!layout_ok(l->size, l->chunk, l->nseg, l->plen, l->pattern, l->red, l->k, l->m))
		return -EINVAL;
	base = LAYOUT_FIXED + (size_t)l->nseg * EM_NODE_ID_LEN + l->plen;
	n = base + (has_trailer(l) ? EM_LAYOUT_TRAILER : 0);
	if (l->flags & EM_LAYOUT_PROGRESS) {
		if ((l->flags & ~(EM_LAYOUT_FILLING | EM_LAYOUT_PROGRESS)) ||
		    !(l->flags & EM_LAYOUT_FILLING) || !l->total || l->done > l->total)
			return -EINVAL;
		n += EM_LAYOUT_PROGRESS_LEN;
	}
	if (n > cap)
		return -ENOSPC;
	em_put32(out, EM_LAYOUT_MAGIC);
	em_put64(out + 4, l->size);
	em_put64(out + 12, l->chunk);
	out[20] = (uint8_t)l->nseg;
	out[21] = (uint8_t)l->plen;
	memcpy(out + LAYOUT_FIXED, l->ids, (size_t)l->nseg * EM_NODE_ID_LEN);
	memcpy(out + LAYOUT_FIXED + (size_t)l->nseg * EM_NODE_ID_LEN, l->pattern, l->plen);
	if (n > base) {
		out[base] = l->red ? l->red : EM_RED_NONE;
		out[base + 1] = l->k;
		out[base + 2] = l->m;
		out[base + 3] = l->flags;
		em_put32(out + base + 4, l->epoch);
	}
	if (l->flags & EM_LAYOUT_PROGRESS) {
		em_put64(out + base + EM_LAYOUT_TRAILER, l->done);
		em_put64(out + base + EM_LAYOUT_TRAILER + 8, l->total);
	}
	return (int)n;
}

int em_layout_decode(const uint8_t *in, size_t len, struct em_layout *l)
{
	unsigned nseg, plen, red = EM_RED_NONE, k = 0, m = 0, flags = 0;
	uint32_t epoch = 0;
	uint64_t done = 0, total = 0;
	const uint8_t *pat;
	size_t base;

	if (len < LAYOUT_FIXED || em_get32(in) != EM_LAYOUT_MAGIC)
		return -EPROTO;
	nseg = in[20];
	plen = in[21];
	/* the counts decide where the pattern is: check them before using it */
	if (!nseg || nseg > EM_LAYOUT_MAX_SEG || !plen || plen > EM_LAYOUT_MAX_PATTERN)
		return -EPROTO;
	base = LAYOUT_FIXED + (size_t)nseg * EM_NODE_ID_LEN + plen;
	if (len == base + EM_LAYOUT_TRAILER ||
	    len == base + EM_LAYOUT_TRAILER + EM_LAYOUT_PROGRESS_LEN) {
		red = in[base];
		k = in[base + 1];
		m = in[base + 2];
		epoch = em_get32(in + base + 4);
		flags = in[base + 3];
		if ((flags & ~(EM_LAYOUT_FILLING | EM_LAYOUT_PROGRESS)) || !red)
			return -EPROTO;
		/* progress comes with its 16 bytes, and only on a part being
		 * filled */
		if (!(flags & EM_LAYOUT_PROGRESS) != (len == base + EM_LAYOUT_TRAILER) ||
		    ((flags & EM_LAYOUT_PROGRESS) && !(flags & EM_LAYOUT_FILLING)))
			return -EPROTO;
		if (flags & EM_LAYOUT_PROGRESS) {
			done = em_get64(in + base + EM_LAYOUT_TRAILER);
			total = em_get64(in + base + EM_LAYOUT_TRAILER + 8);
			if (!total || done > total)
				return -EPROTO;
		}
		/* one encoding per layout: the encoder leaves out a trailer
		 * that says nothing, so one that does is not a layout we sent */
		if (red == EM_RED_NONE && !epoch && !flags)
			return -EPROTO;
	} else if (len != base) {
		return -EPROTO;
	}
	pat = in + LAYOUT_FIXED + (size_t)nseg * EM_NODE_ID_LEN;
	if (!layout_ok(em_get64(in + 4), em_get64(in + 12), nseg, plen, pat, red, k, m))
		return -EPROTO;
	l->size = em_get64(in + 4);
	l->chunk = em_get64(in + 12);
	l->nseg = nseg;
	l->plen = plen;
	memcpy(l->ids, in + LAYOUT_FIXED, (size_t)nseg * EM_NODE_ID_LEN);
	memcpy(l->pattern, pat, plen);
	l->red = (uint8_t)red;
	l->k = (uint8_t)k;
	l->m = (uint8_t)m;
	l->epoch = epoch;
	l->flags = (uint8_t)flags;
	l->done = done;
	l->total = total;
	return 0;
}

int em_list_entry_encode(uint8_t *out, size_t cap, uint64_t size, const char *name,
			 const void *layout, uint16_t layout_len)
{
	int n;

	if (cap < 8)
		return -ENOSPC;
	n = em_namelayout_encode(out + 8, cap - 8, name, layout, layout_len);
	if (n < 0)
		return n;
	em_put64(out, size);
	return 8 + n;
}

int em_list_entry_decode(const uint8_t *in, size_t len, size_t *pos, uint64_t *size, char *name,
			 const uint8_t **layout, uint16_t *layout_len)
{
	size_t p = *pos, n;

	/* u64 size, u8 name length, name, u16 layout length, layout */
	if (p > len || len - p < 8 + 3)
		return -EPROTO;
	n = 3 + (size_t)in[p + 8];
	if (len - p - 8 < n)
		return -EPROTO;
	n += (size_t)(in[p + 8 + n - 2] | in[p + 8 + n - 1] << 8);
	if (len - p - 8 < n || em_namelayout_decode(in + p + 8, n, name, layout, layout_len))
		return -EPROTO;
	*size = em_get64(in + p);
	*pos = p + 8 + n;
	return 0;
}
