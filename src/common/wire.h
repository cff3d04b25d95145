/*
 * wire.h - the ethermem TCP protocol: one fixed 40-byte little-endian header
 * per message, then `len` payload bytes. Requests and responses share the
 * header; a response echoes the request's tag and carries a status.
 *
 * Responses on a connection come back in request order (the node serves a
 * connection's requests one after another), so a client can receive a read's
 * data straight into the caller's buffer; the tag is a check, not a lookup.
 *
 * The decoder never allocates and never trusts a length: every length is
 * checked against the per-opcode limit before anything is read into memory.
 */
#ifndef EM_WIRE_H
#define EM_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EM_WIRE_MAGIC 0x4d454d45u /* "EMEM" little-endian */
/* 2: the nonces of the handshake are X25519 keys and session tokens are
 * derived, never sent (common/auth.h)
 * 3: writes and atomics may carry EM_WF_ONCE; EM_W_BYE ends a session;
 *    EM_W_DRAIN and EM_W_FREEZE move a node's parts away
 * 4: a write's aux and an atomic's aux bits 8-31 carry the sender's layout
 *    version, which a repair's fence (EM_W_FREEZE, EM_MV_FENCE) checks
 * 5: EM_WF_COPY on a repair's reads and writes; a write's reply says how
 *    much of it a repair's copy had read or written (see EM_WF_COPY)
 * 6: EM_WF_VER: a READ that only checks its sender's layout version */
#define EM_WIRE_VERSION 6
#define EM_HDR_LEN 40

/* Largest data payload in one message; the library splits larger transfers. */
#define EM_MAX_IO (4u << 20)
/* Largest control payload (names, layouts, listings, status). */
#define EM_MAX_CTRL (64u << 10)
/* Largest layout description a named region stores. */
#define EM_MAX_LAYOUT 2048u

enum em_wire_op {
	EM_W_HELLO = 1,  /* c->s: client nonce; reply: node nonce */
	EM_W_AUTH = 2,   /* c->s: proof, optional session to attach to */
	EM_W_CREATE = 3, /* offset = bytes, aux = flags; payload name+layout */
	EM_W_OPEN = 4,   /* payload name */
	EM_W_CLOSE = 5,  /* region = handle */
	EM_W_DELETE = 6, /* payload name */
	EM_W_LIST = 7,   /* offset = first index */
	EM_W_STATUS = 8,
	EM_W_READ = 9,       /* region, offset, aux = length */
	EM_W_WRITE = 10,     /* region, offset, payload = data */
	EM_W_ATOMIC = 11,    /* region, offset, aux = op, payload operand+compare */
	EM_W_BASELINE = 12,  /* switch this connection to raw ping-pong/stream */
	EM_W_OX_ATTACH = 13, /* c->s: the client's MAC; reply: the node's OmniXtend link */
	EM_W_OX_MAP = 14,    /* region = handle; reply: offset = window base, payload u64 length */
	EM_W_BYE = 15,       /* the client is done: end the session with its connections */
	EM_W_DRAIN = 16,     /* aux = 1: the node takes no new regions (0: it does again) */
	EM_W_FREEZE = 17,    /* payload name; aux = enum em_move_state for that named region */
	EM_W__MAX
};

#define EM_WF_RESPONSE 1u
/* On a WRITE or ATOMIC request: the tag is the request's identity in its
 * session (the library gives every queue of a session its own tag range),
 * and the node applies it at most once. The node remembers the results of
 * the session's last EM_ONCE_SLOTS such requests; a request whose tag is
 * among them is answered from there - the same status, the same old value
 * of an atomic - and not applied again. A session whose connections were
 * all cut (rather than closed after EM_W_BYE) is kept a while (the node's
 * session-linger) so that its client can attach again and resend what it
 * never heard back. */
#define EM_WF_ONCE 2u
#define EM_ONCE_SLOTS 256
/* A repair's copy of a replicated region, told apart from its other
 * traffic so that writers need not lock against it. Each part keeps a
 * copy cursor: bytes below it have been read from it (on a copy the
 * repair reads) or written to it (on the part it fills) by the repair.
 * On a READ request EM_WF_COPY raises the cursor to the read's end before
 * the bytes are taken; a READ of 0 bytes at offset 0 with it sets the
 * cursor back to 0 (a repair begins). On a WRITE request it raises the
 * cursor to the write's end once the bytes are in. Every successful
 * WRITE's reply says, counted from the write's first byte, in aux how many
 * of its bytes the repair had written before they were applied (below the
 * cursor seen before them) and in offset how many it may have read before
 * (below the cursor seen after them): a writer that is filling a part
 * learns from them, in the one round trip, whether its bytes reach the new
 * part either way, through the copy or by its own write (redundancy.c). A
 * write answered from memory (EM_WF_ONCE) says 0 and its length. */
#define EM_WF_COPY 4u
/* On a READ request: no bytes are read; aux carries the sender's layout
 * version (as a write's does) and the node answers 0 if it is at or above
 * the part's fence, else EM_ESTALE with the fence in aux. A reader of a
 * redundant region asks every part this now and then (redundancy.c): a
 * part that missed writes while its node was frozen or cut off has no
 * fence of its own to refuse its stale bytes with, but the parts that took
 * those writes were fenced. */
#define EM_WF_VER 8u

/* A named region's state on a node while a drain moves it: FROZEN answers
 * writes and atomics with EM_ESTALE (reads still served, so the copy and
 * readers go on); MOVED answers everything with EM_ESTALE. GONE, for a part
 * of a redundant region that a drain rebuilds elsewhere, answers everything
 * (an open too) with EM_ENONODE: its clients take it for lost, as if its
 * node had died, and follow the repair that rebuilds it. */
enum em_move_state {
	EM_MV_NONE = 0,
	EM_MV_FROZEN = 1,
	EM_MV_MOVED = 2,
	EM_MV_FENCE = 3,
	EM_MV_GONE = 4
};

/* Fencing a redundant region's stale writers while it is repaired: a WRITE
 * carries in aux, and an ATOMIC in aux bits 8-31 (the operation in bits
 * 0-7), the layout version its sender knows (0 before any repair). EM_W_FREEZE
 * with EM_MV_FENCE in aux bits 0-7 raises the part's fence to the version
 * in bits 8-31 (-EALREADY, with the fence in the reply's aux, unless that is
 * higher than the fence now) and returns once no write that entered before
 * is still being applied. From then a write or atomic below the fence is
 * answered EM_ESTALE with the fence in aux: its sender reads the layouts
 * again and redoes it. Reads are never fenced; EM_VER_ANY passes every
 * fence (a stripe unlock must always get through). The request's offset
 * is the repairer's token: raising the fence again to the same version
 * with the same token touches it (the repairer is still at work), and an
 * -EALREADY reply carries in its offset the milliseconds since the fence
 * was last raised or touched, so that a repairer can tell one that died. */
#define EM_MV_OF(aux) ((aux)&0xffu)
#define EM_VER_OF(aux) ((uint32_t)(aux) >> 8)
#define EM_AOP_OF(aux) ((aux)&0xffu)
#define EM_VER_ANY 0xffffffu

/* aux flags of EM_W_HELLO. The client's request: it wants its connection
 * encrypted (EM_WH_ENCRYPT), and can use AES-256-GCM. The node's reply:
 * EM_WH_ENCRYPT when it agreed, with the cipher (enum em_cipher) in bits
 * 8-15. Encryption starts after the AUTH exchange (common/seal.h). A node
 * that predates these flags answers 0, and a client that asked refuses it. */
#define EM_WH_ENCRYPT 1u
#define EM_WH_AES 2u
#define EM_WH_CIPHER(aux) (((aux) >> 8) & 0xffu)

/* aux flags of EM_W_CREATE */
#define EM_WC_NAMED 1u
#define EM_WC_EXCL 2u
/* the named region exists (same size): store this request's layout with it.
 * The layout must decode; one of an older epoch than the stored one is
 * refused (-ESTALE), and one of the same epoch keeps every segment the
 * stored one names no node for (a loss a client recorded) */
#define EM_WC_RELAYOUT 4u

struct em_hdr {
	uint32_t magic;
	uint8_t version;
	uint8_t op;
	uint16_t flags;
	int32_t status; /* responses: 0 or -errno */
	uint32_t len;   /* payload bytes that follow */
	uint64_t tag;
	uint32_t region; /* node-local handle */
	uint32_t aux;
	uint64_t offset;
};

/* A response's status is 0 or -errno, errno below this (ethermem's own
 * codes, EM_EAUTH..., sit just above the system's). */
#define EM_WIRE_MAX_ERRNO 65536

void em_hdr_encode(uint8_t out[EM_HDR_LEN], const struct em_hdr *h);
/* Decodes and validates a request or response header: magic, version, known
 * opcode, payload length within the opcode's limit, a response's status.
 * 0 or -EPROTO / -EM_EVERSION. On failure *why says what was wrong. */
int em_hdr_decode(const uint8_t in[EM_HDR_LEN], struct em_hdr *h, const char **why);
/* Largest payload a request (resp=false) or response of this op may carry. */
uint32_t em_wire_max_len(unsigned op, bool resp);
const char *em_wire_op_name(unsigned op);

/* Authentication messages (payloads of HELLO, AUTH and their responses). */
#define EM_NONCE_LEN 32
#define EM_PROOF_LEN 32
#define EM_TOKEN_LEN 16
#define EM_NODE_ID_LEN 16

struct em_auth_req { /* EM_W_AUTH request payload */
	uint8_t proof[EM_PROOF_LEN];
	uint64_t attach_session; /* 0: new session */
	uint8_t attach_token[EM_TOKEN_LEN];
};
#define EM_AUTH_REQ_LEN (EM_PROOF_LEN + 8 + EM_TOKEN_LEN)

struct em_auth_resp { /* EM_W_AUTH response payload */
	uint64_t session;
	uint8_t token[EM_TOKEN_LEN];
	uint8_t node_id[EM_NODE_ID_LEN];
	uint8_t proof[EM_PROOF_LEN]; /* the node's: it knows the secret too */
};
#define EM_AUTH_RESP_LEN (8 + EM_TOKEN_LEN + EM_NODE_ID_LEN + EM_PROOF_LEN)

void em_auth_req_encode(uint8_t *out, const struct em_auth_req *r);
void em_auth_req_decode(const uint8_t *in, struct em_auth_req *r);
void em_auth_resp_encode(uint8_t *out, const struct em_auth_resp *r);
void em_auth_resp_decode(const uint8_t *in, struct em_auth_resp *r);

/* Name + layout payload of CREATE/OPEN/DELETE and of their responses:
 *   u8 name_len, name bytes, u16 layout_len, layout bytes.
 * Decoding checks that the lengths fit in the payload exactly. */
int em_namelayout_encode(uint8_t *out, size_t cap, const char *name, const void *layout,
			 uint16_t layout_len);
int em_namelayout_decode(const uint8_t *in, size_t len, char *name /* [64] */,
			 const uint8_t **layout, uint16_t *layout_len);

/* Node status payload: a fixed array of little-endian u64. */
enum {
	EM_ST_CAPACITY,
	EM_ST_USED,
	EM_ST_REGIONS,
	EM_ST_NAMED,
	EM_ST_CLIENTS,
	EM_ST_HUGE,
	EM_ST_UPTIME,
	EM_ST_BYTES_IN,
	EM_ST_BYTES_OUT,
	EM_ST_AUTHFAIL,
	EM_ST_OPS0,                  /* EM_STAT_OPS counters */
	EM_ST_ERR0 = EM_ST_OPS0 + 8, /* EM_STAT_OPS error counters */
	EM_ST_LAT0 = EM_ST_ERR0 + 8, /* 3 classes x (p50, p99, p999) */
	/* OmniXtend data path (all 0 without --ox) */
	EM_ST_OX_RX = EM_ST_LAT0 + 9, /* frames received */
	EM_ST_OX_TX,                  /* frames sent */
	EM_ST_OX_DENIED,              /* requests answered with the denied bit */
	EM_ST_OX_UNKNOWN,             /* frames from a MAC with no window, dropped */
	EM_ST_OX_MALFORMED,           /* frames that failed to decode, dropped */
	EM_ST_OX_RTX,                 /* frames retransmitted */
	EM_ST_OX_ECHO,                /* raw ping-pong frames answered (bench --baseline) */
	EM_ST_OX_ATTACHED,            /* sessions with an OmniXtend window grant now */
	EM_ST_OX_SPOOFED, /* frames from a session's MAC out of its sequence or badly tagged */
	EM_ST__COUNT
};
#define EM_STATUS_LEN (EM_ST__COUNT * 8)

/* Status payload <-> counters. Encode returns EM_STATUS_LEN or -ENOSPC;
 * decode takes exactly EM_STATUS_LEN bytes (else -EPROTO). */
int em_status_encode(uint8_t *out, size_t cap, const uint64_t v[EM_ST__COUNT]);
int em_status_decode(const uint8_t *in, size_t len, uint64_t v[EM_ST__COUNT]);
/* The status word of an encoded header (0 or -errno), without decoding it
 * whole: the node counts replies that carry an error. */
int32_t em_hdr_status(const uint8_t hdr[EM_HDR_LEN]);

/* The layout a client stores with a named region (the node keeps it
 * opaque; any client that opens the name decodes it):
 *   u32 magic "EMLY", u64 size, u64 chunk, u8 nseg, u8 plen,
 *   nseg node ids, plen pattern bytes (chunk i lives on segment
 *   pattern[i % plen]),
 * and, only for a redundant region or one whose epoch moved, a trailer:
 *   u8 redundancy (enum em_redundancy), u8 k, u8 m, u8 0, u32 epoch.
 * Without the trailer a layout is NONE at epoch 0, so layouts written
 * before redundancy existed still decode; a client that predates the
 * trailer refuses a redundant layout rather than write one copy of it.
 * A redundant region's segments are its copies (REPLICATE, nseg = k, each
 * the whole region) or its chunks (EC, nseg = k + m, data then parity,
 * chunk = the cell), each on its own node; the pattern is 0..nseg-1. */
#define EM_LAYOUT_MAGIC 0x594c4d45u
#define EM_LAYOUT_MAX_SEG 64
#define EM_LAYOUT_MAX_PATTERN 64
#define EM_LAYOUT_TRAILER 8
#define EM_RED_MAX_COPIES 16
#define EM_RED_MAX_K 32
#define EM_RED_MAX_M 8
struct em_layout {
	uint64_t size, chunk;
	unsigned nseg, plen;
	uint8_t ids[EM_LAYOUT_MAX_SEG][EM_NODE_ID_LEN];
	uint8_t pattern[EM_LAYOUT_MAX_PATTERN];
	uint8_t red, k, m; /* enum em_redundancy; 0 reads as NONE */
	uint8_t flags;     /* EM_LAYOUT_* */
	uint32_t epoch;
	uint64_t done, total; /* with EM_LAYOUT_PROGRESS */
};
/* Stored with a part a repair is still filling: that part holds nothing yet
 * (an opener ignores this layout) and the region is being repaired (the
 * listing says so). The repair stores the layout again without it at the
 * end (EM_WC_RELAYOUT). */
#define EM_LAYOUT_FILLING 1u
/* With FILLING only: the repair's progress, bytes rebuilt of the bytes it
 * rebuilds in all (done <= total, total > 0), 16 more bytes after the
 * trailer. The repairer stores it again every half second (EM_WC_RELAYOUT,
 * which a node takes for a part being filled only from the same epoch), so
 * that any process's listing can show how far a repair has come. */
#define EM_LAYOUT_PROGRESS 2u
#define EM_LAYOUT_PROGRESS_LEN 16
/* Whether (red, k, m) is a redundancy a layout of nseg segments can say. */
bool em_red_valid(unsigned red, unsigned k, unsigned m);
/* Returns the encoded length, -EINVAL for a layout that decode would
 * refuse, -ENOSPC if cap is too small. */
int em_layout_encode(uint8_t *out, size_t cap, const struct em_layout *l);
/* 0, or -EPROTO unless the bytes are exactly one valid layout: nonzero
 * size and chunk, 1..64 segments, 1..64 pattern entries naming segments. */
int em_layout_decode(const uint8_t *in, size_t len, struct em_layout *l);

/* EM_W_LIST reply payload: header aux entries of {u64 size, name+layout}
 * (header offset: named regions in all). Encode returns the entry's length
 * or -ENOSPC. Decode reads the entry at *pos of in[0..len) and moves *pos
 * past it; -EPROTO if it does not fit or is malformed (nothing after it can
 * be trusted). */
int em_list_entry_encode(uint8_t *out, size_t cap, uint64_t size, const char *name,
			 const void *layout, uint16_t layout_len);
int em_list_entry_decode(const uint8_t *in, size_t len, size_t *pos, uint64_t *size,
			 char *name /* [64] */, const uint8_t **layout, uint16_t *layout_len);

/* Raw baseline mode (after EM_W_BASELINE): the client sends 16-byte
 * requests {u32 kind, u32 0, u64 bytes}; PING gets `bytes` back, STREAM gets
 * `bytes` sent as fast as the socket takes them, QUIT ends the mode. */
enum { EM_BASE_PING = 1, EM_BASE_STREAM = 2, EM_BASE_QUIT = 3 };
#define EM_BASE_MAX_PING (4u << 20)

/* OmniXtend control (EM_W_OX_ATTACH).  The TCP session stays the control
 * path: the client names its MAC address, the node answers with its own and
 * the parameters of its link.  From then on the session's region handles can
 * be given address windows (EM_W_OX_MAP) that only frames from that MAC can
 * reach; they go away with the handle or the session.  One session per MAC
 * at a time (a second gets -EADDRINUSE): OmniXtend keys a connection's
 * sequence numbers and credits on the MAC pair, so two requesters behind
 * one MAC would corrupt each other's go-back-N state. */
#define EM_OX_ATTACH_REQ_LEN 8 /* mac[6], u8 flags, 1 zero byte */
/* Request flag: every frame of this session carries a tag keyed from the
 * session's token (src/ox/tag.c); the reply's flag byte says if granted. */
#define EM_OX_ATTACH_TAG 1
#define EM_OX_ATTACH_RESP_LEN \
	16 /* mac[6], u16 ethertype, u32 mtu, u8 mode,
				  * u8 flags (bit 0 verbatim, bit 1 tagged,
				  * bit 2 bursts up to 32 KiB served),
				  * u16 echo ethertype (0 = none) */
struct em_ox_info {
	uint8_t mac[6];
	uint16_t ethertype;
	uint32_t mtu; /* payload bytes after the EtherType */
	uint8_t mode; /* enum ox_mode: 0 = 1.1, 1 = 1.0.3 */
	uint8_t verbatim;
	uint8_t tagged; /* authenticated frames (EM_OX_ATTACH_TAG) */
	/* the node serves bursts larger than 8 KiB where the MTU carries them;
	 * nodes from before say nothing, and get 8 KiB at most */
	uint8_t big_bursts;
	uint16_t echo_type; /* raw ping-pong responder for the benchmark */
};
void em_ox_info_encode(uint8_t *out, const struct em_ox_info *i);
void em_ox_info_decode(const uint8_t *in, struct em_ox_info *i);

static inline void em_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t em_get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}
static inline void em_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t em_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif
