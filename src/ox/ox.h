/*
 * ox.h - ethermem's OmniXtend (TileLink over Ethernet) protocol layer.
 *
 * Internal API shared by the memory node (ethermemd --ox) and the client
 * library (--transport ox).  It is built in layers so that each can be tested
 * without the one below it:
 *
 *   codec      pure encode/decode of TLoE frames and TileLink messages; never
 *              allocates, never trusts a length (ox_frame_decode).
 *   gbn        go-back-N reliability as a state machine; time is an argument.
 *   credit     per-channel flow control in flits, returned in powers of two.
 *   conn       one peer's connection = gbn + credits + frame building.
 *   endpoint   the memory side: serves Get/Put/atomics against windows of
 *              local memory, each window tied to one peer MAC address.
 *   requester  the client side: splits reads/writes into bursts, matches
 *              responses by source id, completes every op exactly once.
 *   link       a table of operations moving whole Ethernet frames: AF_PACKET
 *              with mmap rings, an in-memory hub for tests, and a test-only
 *              fault injector that wraps either.
 *
 * Conventions: every int-returning call gives 0 (or a count) on success and
 * -errno on failure.  One thread owns a requester, or an endpoint's poll /
 * run loop, and the link it was handed; the endpoint's window and stats
 * calls alone may come from other threads (the control path) while run()
 * serves.  The caller owns the memory behind windows and op buffers, and
 * must keep a window's memory mapped until remove_window has returned.
 */
#ifndef EM_OX_H
#define EM_OX_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/* ------------------------------------------------------------------ */
/* Wire constants                                                      */

#define OX_ETHERTYPE_DEFAULT 0xAAAA
#define OX_ETH_HLEN 14
#define OX_MIN_PAYLOAD 48 /* bytes after the EtherType */
#define OX_MAX_MSGS 64    /* one bit of the frame mask each */
/* Bursts: 8 KiB fits a 9000-byte frame, the largest standard Ethernet
 * carries, and is what a requester sends unless told more
 * (ox_opts.max_burst_log2).  32 KiB needs a payload of 32800 bytes, which
 * only jumbo links have (veth and loopback allow 64 KiB); the codec
 * accepts it, and an endpoint serves any burst whose answer fits its MTU. */
#define OX_STD_SIZE_LOG2 13
#define OX_MAX_SIZE_LOG2 15
#define OX_SEQ_BITS 22
#define OX_SEQ_MOD (1u << OX_SEQ_BITS)
#define OX_SEQ_MASK (OX_SEQ_MOD - 1)
#define OX_SEQ_HALF (1u << (OX_SEQ_BITS - 1))
/* The furthest a bound peer's sequence number may stray from ours: no
 * honest sender has more frames unacknowledged than its retransmit ring
 * holds (at most 4096 here). */
#define OX_SEQ_PLAUSIBLE 4096u
/* Authenticated mode (ethermem to ethermem only): SipHash-2-4 of the whole
 * frame, Ethernet header included, appended after the frame mask. */
#define OX_TAG_LEN 8
#define OX_TAG_KEYLEN 16

/* 1.1 is the zero value: it is what current endpoints speak. */
enum ox_mode { OX_MODE_11 = 0, OX_MODE_103 = 1 };

enum ox_msg_type { OX_T_NORMAL = 0, OX_T_ACKONLY = 1, OX_T_OPEN = 2, OX_T_CLOSE = 3 };

enum ox_chan { OX_CH_NONE = 0, OX_CH_A = 1, OX_CH_B = 2, OX_CH_C = 3, OX_CH_D = 4, OX_CH_E = 5 };

enum ox_a_op {
	OX_A_PUTFULL = 0,
	OX_A_PUTPARTIAL = 1,
	OX_A_ARITH = 2,
	OX_A_LOGIC = 3,
	OX_A_GET = 4,
	OX_A_INTENT = 5,
	OX_A_ACQBLOCK = 6,
	OX_A_ACQPERM = 7,
};
enum ox_d_op {
	OX_D_ACCESSACK = 0,
	OX_D_ACCESSACKDATA = 1,
	OX_D_HINTACK = 2,
	OX_D_GRANT = 4,
	OX_D_GRANTDATA = 5,
	OX_D_RELEASEACK = 6,
};
enum ox_c_op {
	OX_C_ACCESSACK = 0,
	OX_C_ACCESSACKDATA = 1,
	OX_C_HINTACK = 2,
	OX_C_PROBEACK = 4,
	OX_C_PROBEACKDATA = 5,
	OX_C_RELEASE = 6,
	OX_C_RELEASEDATA = 7,
};
enum ox_arith { OX_MIN = 0, OX_MAX = 1, OX_MINU = 2, OX_MAXU = 3, OX_ADD = 4 };
enum ox_logic { OX_XOR = 0, OX_OR = 1, OX_AND = 2, OX_SWAP = 3 };

/* Why a frame was thrown away; indexes ox_stats.rej. */
enum ox_reject {
	OX_REJ_SHORT = 0,   /* shorter than the minimum payload */
	OX_REJ_ALIGN,       /* payload not a whole number of flits */
	OX_REJ_TOOBIG,      /* more flits than a frame can have */
	OX_REJ_MASK,        /* mask bit not at a message start, or past the end */
	OX_REJ_CHANNEL,     /* channel 0 or 6/7 where a header should be */
	OX_REJ_OPCODE,      /* opcode not defined on that channel */
	OX_REJ_SIZE,        /* size larger than we accept */
	OX_REJ_TRUNC,       /* message runs into the mask */
	OX_REJ_PADDING,     /* non-zero flit outside any message */
	OX_REJ_CREDIT,      /* credit granted on channel 6 or 7 */
	OX_REJ_TYPE,        /* message_type unknown or not allowed in mode */
	OX_REJ_UNKNOWN_MAC, /* source MAC has no window here */
	OX_REJ_NOT_FOR_US,  /* destination MAC is not ours */
	OX_REJ_NOPEER,      /* peer table full */
	OX_REJ_SEQ,         /* a bound peer's frame far outside its sequence state */
	OX_REJ_TAG,         /* authenticated mode: tag missing or wrong */
	OX_REJ_COUNT
};
const char *ox_reject_name(int reason);

/* ------------------------------------------------------------------ */
/* Codec                                                               */

/* The TLoE header flit, one field per member. */
struct ox_tloe {
	uint8_t vc;
	uint8_t type; /* enum ox_msg_type; always 0 in 1.0.3 */
	uint32_t seq;
	uint32_t seq_ack;
	uint8_t ack;       /* 1 ACK, 0 NAK */
	uint8_t credit_ch; /* enum ox_chan, 0 = none */
	uint8_t credit;    /* grants 2^credit flits */
};
uint64_t ox_tloe_pack(const struct ox_tloe *h);
void ox_tloe_unpack(uint64_t w, struct ox_tloe *h);

/*
 * A TileLink message.  On encode, data points at 2^size bytes in memory
 * order (the bytes of [addr, addr + 2^size)) and pmask, for PutPartialData,
 * at 2^size bits of byte enables (bit i = byte i).  On decode, wire points
 * at the message's first data (or mask) flit inside the received frame;
 * use ox_msg_read / ox_msg_byte to get at it.  For channel D, addr is not on
 * the wire but still decides the byte lanes of narrow data: the requester
 * and endpoint set it from the request they match.
 */
struct ox_msg {
	uint8_t chan, opcode, param, size;
	uint8_t domain;
	uint8_t denied, corrupt;
	uint32_t source; /* 26 bits */
	uint32_t sink;   /* D Grant/GrantData, E GrantAck */
	uint64_t addr;
	const void *data;
	const uint8_t *pmask;
	const uint8_t *wire; /* decode only */
	uint16_t flits;      /* whole message length, decode only */
};

/* Length of a message in flits (= credit it costs), or -EPROTO. */
int ox_msg_flits(unsigned chan, unsigned opcode, unsigned size);
/* Does this message carry data flits? */
bool ox_msg_has_data(unsigned chan, unsigned opcode);

/*
 * Frame encoder.  buf receives the payload after the EtherType; cap is the
 * payload room (the interface MTU).  ox_enc_add returns -ENOSPC when the
 * message does not fit (room, 64 messages, or an earlier message already
 * reaches flit 64); the frame is left as it was so the message can start
 * the next one.
 */
struct ox_enc {
	uint8_t *buf;
	size_t cap_flits;
	size_t nflits; /* header included */
	uint64_t mask;
	unsigned nmsg;
	bool closed; /* a message reached flit 64: nothing may follow */
	bool verbatim;
};
void ox_enc_begin(struct ox_enc *e, uint8_t *buf, size_t cap, bool verbatim);
int ox_enc_room(const struct ox_enc *e, unsigned msg_flits);
int ox_enc_add(struct ox_enc *e, const struct ox_msg *m);
/* Writes header, padding and mask; returns the payload length in bytes. */
size_t ox_enc_finish(struct ox_enc *e, const struct ox_tloe *h);

/* A decoded frame: the messages point into the caller's buffer. */
struct ox_frame {
	struct ox_tloe h;
	uint64_t mask;
	unsigned nmsg;
	unsigned nflits; /* payload flits, header and mask included */
	int reject;      /* enum ox_reject when decode failed */
	struct ox_msg msg[OX_MAX_MSGS];
};
/* Decodes payload (after the EtherType).  0 or -EPROTO with f->reject. */
int ox_frame_decode(const uint8_t *p, size_t len, struct ox_frame *f);

/* Data access in memory byte order; `verbatim` skips the per-flit swap. */
void ox_msg_read(const struct ox_msg *m, void *dst, bool verbatim);
uint8_t ox_msg_byte(const struct ox_msg *m, unsigned i, bool verbatim);
bool ox_msg_mask_bit(const struct ox_msg *m, unsigned i);

/* Ethernet header helpers. */
void ox_eth_write(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], uint16_t type);

/* ------------------------------------------------------------------ */
/* Go-back-N                                                           */

static inline uint32_t ox_seq_add(uint32_t a, uint32_t b)
{
	return (a + b) & OX_SEQ_MASK;
}
static inline uint32_t ox_seq_sub(uint32_t a, uint32_t b)
{
	return (a - b) & OX_SEQ_MASK;
}

enum ox_rx_verdict { OX_RX_ACCEPT, OX_RX_DUP, OX_RX_OOO, OX_RX_ACKONLY };

struct ox_gbn {
	uint32_t next_tx, ackd, next_rx;
	/* retransmit buffer: a ring of whole frames (Ethernet header included) */
	uint8_t *ring;
	uint32_t *len;
	unsigned slots, slot_size, head, count;
	uint64_t rto_ns, ack_delay_ns;
	uint64_t last_progress; /* last send into an empty ring or ack progress */
	unsigned backoff;       /* consecutive timeouts: rto is shifted by this */
	unsigned silent;        /* consecutive timeouts, not capped like backoff */
	bool rtx_due;           /* NAK or timeout: resend everything */
	bool ack_due;           /* we owe the peer an acknowledgement */
	uint64_t ack_deadline;
	unsigned unacked_rx;    /* frames accepted since we last sent an ack */
	bool nak_due, nak_sent; /* one NAK per out-of-order episode */
	uint64_t n_rtx_frames, n_timeouts, n_naks_rx, n_naks_tx, n_dup, n_ooo;
};
int ox_gbn_init(struct ox_gbn *g, unsigned slots, unsigned slot_size, uint64_t rto_ns,
		uint64_t ack_delay_ns);
void ox_gbn_free(struct ox_gbn *g);
void ox_gbn_reset(struct ox_gbn *g);
bool ox_gbn_can_send(const struct ox_gbn *g);
/* Buffer for the next sequenced frame; commit assigns and returns its seq. */
uint8_t *ox_gbn_tx_slot(struct ox_gbn *g);
uint32_t ox_gbn_tx_commit(struct ox_gbn *g, size_t len, uint64_t now);
/* i-th unacknowledged frame, oldest first. */
uint8_t *ox_gbn_unacked(struct ox_gbn *g, unsigned i, size_t *len);
/* Handles the ack fields of any frame from the peer. */
void ox_gbn_on_ack(struct ox_gbn *g, uint32_t seq_ack, bool ack, uint64_t now);
/* Classifies a frame's sequence number; updates next_rx and ack duties. */
/* ack_dup: acknowledge again if it is a duplicate (false for 1.0.3 ACK-only). */
enum ox_rx_verdict ox_gbn_rx(struct ox_gbn *g, uint32_t seq, bool ackonly, bool ack_dup,
			     uint64_t now);
/* Acknowledgement fields for a frame we send now. */
void ox_gbn_ack_fields(struct ox_gbn *g, struct ox_tloe *h);
/* Timer check: sets rtx_due on timeout.  Returns the next deadline (ns). */
uint64_t ox_gbn_tick(struct ox_gbn *g, uint64_t now);
/* The peer was heard from after a long silence: the timer and its backoff
 * start over, and whatever it has not acknowledged goes again at once. */
void ox_gbn_resume(struct ox_gbn *g, uint64_t now);

/* ------------------------------------------------------------------ */
/* Credits                                                             */

/* A grant never wraps the counter: it stops here ("unlimited"). */
#define OX_CREDIT_MAX UINT32_MAX

struct ox_credit {
	uint32_t tx[6];       /* flits we may still send, per channel */
	uint32_t owed[6];     /* freed flits not yet returned to the peer */
	uint8_t granted;      /* bit per channel granted since init */
	uint64_t n_saturated; /* grants that hit OX_CREDIT_MAX */
};
/* start: 0 (1.0.3) or 128 (1.1); rxbuf[ch]: flits we can buffer per channel
 * (0 for channels we do not receive). */
void ox_credit_init(struct ox_credit *c, uint32_t start, const uint32_t rxbuf[6]);
int ox_credit_spend(struct ox_credit *c, unsigned ch, unsigned flits);
/* Is (ch, exp) a legal credit field?  0, or -EINVAL for channel 6 or 7.
 * Every exponent 0..31 is legal. */
int ox_credit_check(unsigned ch, unsigned exp);
/* Adds 2^exp flits, saturating at OX_CREDIT_MAX. */
void ox_credit_grant(struct ox_credit *c, unsigned ch, unsigned exp);
void ox_credit_free(struct ox_credit *c, unsigned ch, unsigned flits);
/* Picks the channel to return credit on: one never granted yet if any is
 * owed, else the channel owed most.  False when nothing is owed. */
bool ox_credit_pick(struct ox_credit *c, uint8_t *ch, uint8_t *exp);
/* Is some channel owed credit that has not had its first grant yet? */
bool ox_credit_first_due(const struct ox_credit *c);

/* ------------------------------------------------------------------ */
/* Links: whole Ethernet frames                                        */

struct ox_link;
struct ox_link_ops {
	/* 0 or -errno; -EAGAIN when the ring is full */
	int (*send)(struct ox_link *l, const uint8_t *frame, size_t len);
	/* frame length, 0 when nothing is waiting, -errno */
	int (*recv)(struct ox_link *l, uint8_t *buf, size_t cap);
	/* optional zero-copy receive: the next frame in place (length, 0 when
	 * none); it stays valid until release(), which must follow a frame */
	int (*peek)(struct ox_link *l, const uint8_t **frame);
	void (*release)(struct ox_link *l);
	/* blocks until a frame may be there or timeout_ns passes */
	int (*wait)(struct ox_link *l, uint64_t timeout_ns);
	/* pushes out frames that send() only queued (may be NULL) */
	int (*flush)(struct ox_link *l);
	/* optional zero-copy send: a buffer for the next frame (Ethernet header
	 * included, room for the MTU) or NULL when none is free; tx_commit
	 * queues what was written there like send().  The frame stays readable
	 * at that address until the next tx_slot or send call. */
	uint8_t *(*tx_slot)(struct ox_link *l);
	int (*tx_commit)(struct ox_link *l, size_t len);
	void (*close)(struct ox_link *l);
};
struct ox_link {
	const struct ox_link_ops *ops;
	uint8_t mac[6];
	uint16_t ethertype;
	unsigned mtu; /* payload bytes after the EtherType */
	void *priv;
};
static inline int ox_link_send(struct ox_link *l, const uint8_t *f, size_t n)
{
	return l->ops->send(l, f, n);
}
static inline int ox_link_recv(struct ox_link *l, uint8_t *b, size_t n)
{
	return l->ops->recv(l, b, n);
}
static inline int ox_link_wait(struct ox_link *l, uint64_t t)
{
	return l->ops->wait ? l->ops->wait(l, t) : 0;
}
static inline int ox_link_flush(struct ox_link *l)
{
	return l->ops->flush ? l->ops->flush(l) : 0;
}
/* Next frame, in place when the link can, else copied into buf; a positive
 * return must be followed by ox_link_done once the frame is consumed. */
static inline int ox_link_next(struct ox_link *l, uint8_t *buf, size_t cap, const uint8_t **f)
{
	if (l->ops->peek)
		return l->ops->peek(l, f);
	*f = buf;
	return l->ops->recv(l, buf, cap);
}
static inline void ox_link_done(struct ox_link *l)
{
	if (l->ops->peek)
		l->ops->release(l);
}
void ox_link_close(struct ox_link *l);

/* AF_PACKET with TPACKET_V2 mmap rings on ifname; ethertype 0 = 0xAAAA. */
int ox_link_packet_open(const char *ifname, uint16_t ethertype, struct ox_link **out);

/* AF_XDP (generic/copy mode) on queue 0 of ifname, for comparison with
 * AF_PACKET; -ENOSYS when built without libxdp.  MTU at most 3824 (one
 * 4 KiB UMEM chunk per frame), and the interface is ours alone. */
int ox_link_xdp_open(const char *ifname, uint16_t ethertype, struct ox_link **out);

/* In-memory hub for tests: frames go to the port whose MAC matches. */
struct ox_hub;
int ox_hub_create(struct ox_hub **out);
void ox_hub_destroy(struct ox_hub *h);
/* A port with MAC 02:00:00:00:00:<id> and the given MTU. */
int ox_hub_port(struct ox_hub *h, uint8_t id, unsigned mtu, struct ox_link **out);

/* Test-only fault injector wrapping another link's send path. */
struct ox_fault_cfg {
	uint64_t seed;
	double drop_pct, dup_pct, reorder_pct, delay_pct;
	uint64_t delay_ns;
};
struct ox_fault_stats {
	uint64_t sent, dropped, duped, reordered, delayed;
};
int ox_link_faulty(struct ox_link *inner, const struct ox_fault_cfg *cfg, struct ox_link **out);
void ox_link_faulty_stats(struct ox_link *l, struct ox_fault_stats *s);
/* Parses "drop=1,dup=0.5,reorder=1,delay=1,delay_us=200,seed=7" (per cent
 * of frames sent; unnamed keys stay 0).  0 or -EINVAL. */
int ox_fault_parse(const char *spec, struct ox_fault_cfg *cfg);
/* Test builds only (OX_FAULT_ENV, the CMake option EM_OX_FAULT_ENV): when
 * spec (the caller's ETHERMEM_OX_FAULTS) is not NULL or empty, wraps raw in
 * the injector (seed mixed with salt, so two processes given the same spec
 * do not drop in lockstep); otherwise *out = raw.  0 or -errno. The layer
 * reads no environment itself: its users take their settings from
 * ethermem's configuration table (src/common/config.h). */
int ox_link_faulty_spec(struct ox_link *raw, const char *spec, uint64_t salt, struct ox_link **out);

uint64_t ox_now_ns(void);

/* Frame tags of authenticated mode.  Keys for both directions come from a
 * secret both ends hold (an ethermem session's token): node_side picks which
 * key is tx and which rx, so a frame cannot be reflected back as the other
 * side's. */
void ox_tag_keys(const uint8_t *secret, size_t len, bool node_side, uint8_t tx[OX_TAG_KEYLEN],
		 uint8_t rx[OX_TAG_KEYLEN]);
/* Writes the tag of frame[0, len) at frame + len. */
void ox_tag_put(const uint8_t key[OX_TAG_KEYLEN], uint8_t *frame, size_t len);
/* Checks the tag in the last OX_TAG_LEN bytes of frame[0, len) in constant
 * time: true when it is right. */
bool ox_tag_ok(const uint8_t key[OX_TAG_KEYLEN], const uint8_t *frame, size_t len);
/* Zeroes key material so that the compiler cannot skip it. */
void ox_tag_wipe(void *p, size_t len);

/* ------------------------------------------------------------------ */
/* Connection options and counters shared by both sides               */

struct ox_opts {
	enum ox_mode mode;
	bool verbatim;      /* data bytes copied without the per-flit swap */
	uint16_t ethertype; /* 0 = 0xAAAA */
	unsigned mtu;       /* 0 = the link's; a requester must use the smaller
				 * of both ends' MTUs (the control path knows the
				 * node's), since bursts are sized to fill it */
	unsigned rtx_slots; /* retransmit buffer frames, 0 = 64 */
	/* Requester only: largest burst, log2 bytes (0 = OX_STD_SIZE_LOG2, at
	 * most OX_MAX_SIZE_LOG2); bursts are smaller still where the MTU is.
	 * Above the standard only for a peer known to serve it (ethermem's
	 * node says so at attach): an older one drops the frame as malformed. */
	unsigned max_burst_log2;
	uint32_t rx_credit;    /* flits we buffer per channel we receive, 0 = default */
	uint64_t rto_ns;       /* 0 = 1 ms */
	uint64_t ack_delay_ns; /* 0 = 20 us */
	uint64_t spin_ns;      /* busy-poll this long after the last traffic, 0 = 200 us */
	/* Endpoint only.  reply_per_frame: the responses to each request
	 * frame leave in frames of their own, acknowledging exactly it (for
	 * requesters that match a response by the sequence number it
	 * acknowledges, such as ETRI's oxmem-fuse); costs the coalescing of
	 * responses across request frames. */
	bool reply_per_frame;
	/* giveup_rto: a peer that acknowledges nothing for this many
	 * retransmission timeouts in a row is given up (0 = 32, 3.6 s at the
	 * default timeout, as the wait between retries grows to 128 timeouts):
	 * forgotten, or, if bound, left alone until it is heard from again;
	 * log, when set, hears of it. */
	unsigned giveup_rto;
	void (*log)(const char *line);
	/* bound: the connection is started only by the control path (an
	 * ethermem session), never in band: an open from the peer does not
	 * restart it, and a frame whose sequence number no honest peer could
	 * send is dropped as spoofed (OX_REJ_SEQ) without touching the state.
	 * tag: every frame carries an OX_TAG_LEN-byte tag after its mask,
	 * keyed by tag_tx (frames we send) and tag_rx (frames we accept).
	 * The endpoint sets both per peer (ox_endpoint_bind); a requester takes
	 * them from here. */
	bool bound;
	bool tag;
	uint8_t tag_tx[OX_TAG_KEYLEN], tag_rx[OX_TAG_KEYLEN];
};

struct ox_stats {
	uint64_t rx_frames, tx_frames, rx_msgs, tx_msgs;
	uint64_t rej[OX_REJ_COUNT];
	uint64_t dup, ooo, naks_rx, naks_tx, rtx_frames, timeouts;
	uint64_t denied;      /* requests answered with the denied bit */
	uint64_t unsupported; /* messages we count and ignore */
	uint64_t atomics;
	uint64_t stale;   /* responses matching no outstanding request */
	uint64_t overrun; /* requests beyond the credit we granted */
	uint64_t gaveup;  /* peers given up on for never acknowledging */
};

/* ------------------------------------------------------------------ */
/* Memory endpoint                                                     */

struct ox_endpoint;

#define OX_WIN_READ 1u
#define OX_WIN_WRITE 2u
struct ox_window {
	uint64_t base; /* OmniXtend address of mem[0] */
	uint64_t len;
	void *mem;
	uint8_t mac[6]; /* the only peer this window serves */
	unsigned flags; /* OX_WIN_READ | OX_WIN_WRITE; 0 = both */
};

/* o may be NULL (or zeroed) for the defaults: 1.1, the specification's byte
 * order, the link's EtherType and MTU. */
int ox_endpoint_create(const struct ox_opts *o, struct ox_link *link, struct ox_endpoint **out);
/* Frees the endpoint (not the link, not window memory). */
void ox_endpoint_destroy(struct ox_endpoint *ep);
/* Returns a window id >= 0.  A MAC with no window is an unknown peer.
 * -EEXIST when the range overlaps another window of the same MAC. */
int ox_endpoint_add_window(struct ox_endpoint *ep, const struct ox_window *w);
/* The window with this id: 0 or -ENOENT. */
int ox_endpoint_window(struct ox_endpoint *ep, int id, struct ox_window *out);
/* Binds mac to a control session: its connection starts afresh now and
 * only here (ox_opts.bound), with frame tags when tag_tx and tag_rx are not
 * NULL.  Unbind when the session ends; windows are separate. */
int ox_endpoint_bind(struct ox_endpoint *ep, const uint8_t mac[6],
		     const uint8_t tag_tx[OX_TAG_KEYLEN], const uint8_t tag_rx[OX_TAG_KEYLEN]);
void ox_endpoint_unbind(struct ox_endpoint *ep, const uint8_t mac[6]);
/* Later frames for the window are denied; the peer's connection is dropped
 * when it has no window left. */
int ox_endpoint_remove_window(struct ox_endpoint *ep, int id);
/* Receives up to budget frames, serves them, sends responses and timers.
 * Returns frames handled (0: idle). */
int ox_endpoint_poll(struct ox_endpoint *ep, uint64_t now, unsigned budget);
/* Serves until *stop (set it from a signal handler or with
 * __atomic_store_n): busy-polls while traffic flows, blocks when idle (up to
 * 100 ms, which bounds how long a stop takes). */
int ox_endpoint_run(struct ox_endpoint *ep, volatile int *stop);
/* Forgets the connection state of a peer (its windows stay): call it when a
 * new session for that MAC is authenticated, since a 1.0.3 requester that
 * restarted cannot say so on the wire.  -ENOENT if there was none. */
int ox_endpoint_reset_peer(struct ox_endpoint *ep, const uint8_t mac[6]);
void ox_endpoint_stats(struct ox_endpoint *ep, struct ox_stats *s);
/* Handles one whole Ethernet frame as if received (fuzzer, tests); the
 * responses go out on the link at the next poll. */
int ox_endpoint_input(struct ox_endpoint *ep, const uint8_t *frame, size_t len, uint64_t now);

/* ------------------------------------------------------------------ */
/* Requester                                                           */

enum ox_op_kind { OX_OP_GET, OX_OP_PUT, OX_OP_ARITH, OX_OP_LOGIC, OX_OP_INTENT };

/*
 * One request.  The caller owns it until cb runs (exactly once).
 * GET fills buf; PUT sends buf; ARITH/LOGIC take the operand in `operand`
 * (len 1, 2, 4 or 8, aligned) and return the old value in `result`.
 * status: 0, -EACCES (denied by the node), -EIO (corrupt), or what
 * ox_requester_abort was given (-ECONNRESET from destroy).  A wait that
 * times out leaves the op in flight: abort before reusing its memory.
 */
struct ox_op {
	enum ox_op_kind kind;
	uint8_t param; /* enum ox_arith / ox_logic / intent kind */
	uint64_t addr;
	void *buf;
	size_t len;
	uint64_t operand, result;
	int status;
	void (*cb)(struct ox_op *op);
	void *user;
	/* private to the requester */
	struct ox_op *next;
	size_t issued;
	unsigned pending;
	bool done;
};

struct ox_requester;
int ox_requester_create(const struct ox_opts *o, struct ox_link *link, const uint8_t peer_mac[6],
			struct ox_requester **out);
void ox_requester_destroy(struct ox_requester *r);
/* Queues an op; 0, -EINVAL (bad size/alignment) or -ESHUTDOWN (closing). */
int ox_requester_submit(struct ox_requester *r, struct ox_op *op);
/* Receives, completes, issues, retransmits.  Returns ops completed. */
int ox_requester_poll(struct ox_requester *r, uint64_t now);
/* Polls until op completes (busy, then blocking), or timeout_ns: -ETIMEDOUT. */
int ox_requester_wait(struct ox_requester *r, struct ox_op *op, uint64_t timeout_ns);
/* Polls until every submitted op has completed: 0 or -ETIMEDOUT. */
int ox_requester_wait_all(struct ox_requester *r, uint64_t timeout_ns);
/* Completes every op still in flight with status err (say -ECONNRESET when
 * the node is gone), each exactly once; returns how many.  Destroy does
 * this with -ECONNRESET. */
int ox_requester_abort(struct ox_requester *r, int err);
/* Ops submitted and not yet completed. */
unsigned ox_requester_busy(const struct ox_requester *r);
/* 1.1: sends close-connection and waits for it to be acknowledged; the
 * requester is then only fit for destroy.  -EBUSY while ops are in flight.
 * 1.0.3 has no close: returns 0 at once. */
int ox_requester_close(struct ox_requester *r, uint64_t timeout_ns);
void ox_requester_stats(const struct ox_requester *r, struct ox_stats *s);
/* Frames received so far: a caller running its own poll loop counts any
 * frame as traffic (a large read completes once, after hundreds). */
uint64_t ox_requester_rx_frames(const struct ox_requester *r);
/* Retransmission timer: when ox_requester_poll next has work without input. */
uint64_t ox_requester_next_due(const struct ox_requester *r);

/* Connection state on stderr, for debugging a stall. */
void ox_endpoint_dump(const struct ox_endpoint *ep);
void ox_requester_dump(const struct ox_requester *r);

#endif
