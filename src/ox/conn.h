/*
 * conn.h - one OmniXtend connection (go-back-N plus credits plus the frame
 * being filled), shared by the endpoint and the requester.  Private to
 * src/ox: the rest of ethermem sees only ox.h.
 */
#ifndef EM_OX_CONN_H
#define EM_OX_CONN_H

#include "ox/ox.h"

/* Frame bytes one poll takes in before it answers: the acknowledgement
 * (and the responses) go out at the end of a poll, and the peer's
 * retransmission timer runs meanwhile.  64 frames of 8 KiB bursts, or 16 of
 * 32 KiB: a poll of jumbo frames would otherwise copy 2 MiB before its ACK,
 * which a descheduled core turns into a timeout at the peer. */
#define OX_POLL_BYTES (512u << 10)

struct ox_conn {
	uint8_t peer[6];
	struct ox_link *link;
	struct ox_opts o; /* defaults resolved */
	struct ox_gbn g;
	struct ox_credit c;
	uint32_t rxbuf[6];
	uint32_t tx_max[6]; /* most credit the peer ever let us hold */
	struct ox_stats *st;
	struct ox_enc enc;
	unsigned cap; /* payload bytes for messages: the MTU less the tag */
	bool building;
	bool open_pending;  /* 1.1: our next sequenced frame opens */
	bool close_pending; /* our next sequenced frame closes */
	bool peer_closed;   /* the peer's close was accepted */
	unsigned resets;    /* bumped by every reset: a new session */
	uint64_t last_ackonly;
	uint64_t last_accept;    /* when the peer's last sequenced frame was accepted */
	bool zc;                 /* the frame being built lies in the link's TX slot */
	uint8_t *build;          /* where the frame being built lies */
	const uint8_t *copy_src; /* a sent frame not yet in the retransmit ring */
	uint8_t *copy_dst;
	size_t copy_len;
};

/* Fills in defaults in place (mtu from the link, timers, slots). */
void ox_opts_resolve(struct ox_opts *o, const struct ox_link *l);

int ox_conn_init(struct ox_conn *c, struct ox_link *l, const struct ox_opts *o,
		 const uint8_t peer[6], const uint32_t rxbuf[6], struct ox_stats *st);
void ox_conn_free(struct ox_conn *c);
void ox_conn_reset(struct ox_conn *c);
/* Authenticated mode: checks the tag of a received frame (Ethernet header
 * included) and takes it off *len.  0, or -EPROTO counted as OX_REJ_TAG.
 * Without tags, 0 and *len unchanged. */
int ox_conn_untag(struct ox_conn *c, const uint8_t *f, size_t *len);
/* 1: accepted, deliver the messages; 0: nothing to deliver; -EPROTO:
 * rejected and counted. */
int ox_conn_input(struct ox_conn *c, const struct ox_frame *f, uint64_t now);
/* Puts a message in the frame being built (sending full frames on the way).
 * -EAGAIN: no credit or no room in the retransmit ring; try later. */
int ox_conn_add(struct ox_conn *c, const struct ox_msg *m, uint64_t now);
/* Can a message of this many flits go now (credit and ring)? */
bool ox_conn_can_add(const struct ox_conn *c, unsigned ch, unsigned flits);
/* Sends the frame being built, if any. */
void ox_conn_flush(struct ox_conn *c, uint64_t now);
/* Completes the retransmit copy of a frame sent from the link's TX slot.
 * Owners call it after ox_link_flush, so that the copy of a lone response
 * is made after the kernel has it, off the latency path. */
void ox_conn_sync(struct ox_conn *c);
/* Retransmission, ACK/NAK, credit-only and open/close frames.  Returns the
 * next time it wants to run. */
uint64_t ox_conn_service(struct ox_conn *c, uint64_t now);
/* Adds this connection's go-back-N counters into s. */
void ox_conn_stats(const struct ox_conn *c, struct ox_stats *s);
/* One line of state on stderr, for debugging stalls. */
void ox_conn_dump(const struct ox_conn *c, const char *who);

#endif
