/*
 * link_packet.c - OmniXtend frames over a real interface with AF_PACKET:
 * a TPACKET_V2 memory-mapped ring to receive, sendmmsg to send.
 *
 * Raw Ethernet is fast here only when polled (machine.md: 5.7 us busy-polled
 * against 55 us with blocking recvfrom for a 4 KiB reply), so receive is a
 * check of the next ring slot's status word, no system call, and a frame
 * that fits a slot is decoded where the kernel put it (peek/release); only
 * wait() enters the kernel, and the owners call it after a spell of
 * idleness.
 *
 * Where the bytes are copied decides bulk bandwidth.  On veth the receiver's
 * ring is filled inside the sender's system call, on the sender's core, and
 * frames sent from a TX ring are zero-copy buffers that the kernel copies
 * once more on local delivery; with the sender's own copy into the ring and
 * the retransmit copy, that made four copies of every byte on the node's
 * core and one on the client's.  So the ring's slots are sized for small
 * frames (4 KiB bursts and everything smaller, the latency path) and the
 * socket asks for PACKET_COPY_THRESH: a larger frame leaves only its first
 * bytes in the slot, flagged TP_STATUS_COPY, and the whole frame waits on
 * the socket's queue, where this side copies it out with recvmmsg, on its
 * own core.  Sending takes frames where the owner built them (send_ref:
 * the retransmit ring) and hands up to 32 to the kernel in one sendmmsg at
 * flush, which copies each once; send() copies into a slot of our own
 * first, for frames that live on the caller's stack.  The qdisc is
 * bypassed: nothing here wants queueing.  Frames we sent ourselves are
 * skipped on receive.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ox/ox.h"

/* Receive ring slots: room for a frame of up to RX_INLINE bytes, so a 4 KiB
 * burst with its headers (and a tag) is read in place. */
#define RX_INLINE 4224
#define RX_MIN_FRAMES 256
#define RX_BLOCK 65536
/* Frames queued for one sendmmsg. */
#define TX_BATCH 32
/* Frames taken off the socket's queue per recvmmsg. */
#define RX_BATCH 16
/* Socket buffers: a window of 8 KiB frames (64 by default, each charged
 * with its overhead) must fit, or the kernel drops what go-back-N resends. */
#define SOCK_BUF (8 << 20)

struct pkt {
	struct ox_link link;
	int fd;
	uint8_t *map;
	size_t maplen;
	unsigned fsize, per_block, nframes, rx_idx;
	uint8_t *rx;
	size_t flen; /* room for one whole frame */
	/* frames taken off the socket's queue, in ring order */
	uint8_t *big;
	struct mmsghdr rmsg[RX_BATCH];
	struct iovec riov[RX_BATCH];
	unsigned rnext, rcount;
	const uint8_t *held; /* the current slot's frame, taken off the queue */
	int held_len;
	/* frames queued for the next sendmmsg */
	struct mmsghdr msg[TX_BATCH];
	struct iovec iov[TX_BATCH];
	uint8_t *copies; /* send(): a frame-sized slot per queue entry */
	unsigned queued;
};

/* Slots never straddle a block: a block's tail past its last slot is unused. */
static struct tpacket2_hdr *slot(struct pkt *p, unsigned i)
{
	return (struct tpacket2_hdr *)(p->rx + (size_t)(i / p->per_block) * RX_BLOCK +
				       (size_t)(i % p->per_block) * p->fsize);
}

static void advance(struct pkt *p)
{
	struct tpacket2_hdr *h = slot(p, p->rx_idx);
	__atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
	p->rx_idx = (p->rx_idx + 1) % p->nframes;
	p->held = NULL;
}

/* The whole of the frame in the current slot, which says TP_STATUS_COPY:
 * the next one off the socket's queue (the kernel queues them in the order
 * it fills the slots).  Takes as many as the slots ahead announce, up to
 * RX_BATCH, in one system call.  Length, or 0 when none is there. */
static int take_copy(struct pkt *p, const uint8_t **f)
{
	if (p->rnext == p->rcount) {
		unsigned want = 1;
		while (want < RX_BATCH) {
			struct tpacket2_hdr *h = slot(p, (p->rx_idx + want) % p->nframes);
			uint32_t st = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
			if (!(st & TP_STATUS_USER) || !(st & TP_STATUS_COPY))
				break;
			want++;
		}
		for (unsigned i = 0; i < want; i++) {
			p->riov[i] = (struct iovec){ p->big + i * p->flen, p->flen };
			p->rmsg[i].msg_hdr =
				(struct msghdr){ .msg_iov = &p->riov[i], .msg_iovlen = 1 };
		}
		int n = recvmmsg(p->fd, p->rmsg, want, MSG_DONTWAIT | MSG_TRUNC, NULL);
		p->rnext = 0;
		p->rcount = n > 0 ? (unsigned)n : 0;
		if (!p->rcount)
			return 0;
	}
	unsigned i = p->rnext++;
	if (p->rmsg[i].msg_len > p->flen)
		return 0; /* larger than any frame of ours: dropped */
	*f = p->big + i * p->flen;
	return (int)p->rmsg[i].msg_len;
}

/* Next frame for us, skipping our own and truncated ones. */
static int pkt_peek(struct ox_link *l, const uint8_t **f)
{
	struct pkt *p = l->priv;
	if (p->held) { /* peeked again before release: the same frame */
		*f = p->held;
		return p->held_len;
	}
	for (;;) {
		struct tpacket2_hdr *h = slot(p, p->rx_idx);
		uint32_t st = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
		if (!(st & TP_STATUS_USER))
			return 0;
		const struct sockaddr_ll *sll =
			(const void *)((uint8_t *)h + TPACKET_ALIGN(sizeof(struct tpacket2_hdr)));
		bool ours = sll->sll_pkttype != PACKET_OUTGOING && h->tp_len;
		if (st & TP_STATUS_COPY) {
			int n = take_copy(p, f);
			if (ours && n > 0 && (unsigned)n == h->tp_len) {
				p->held = *f;
				p->held_len = n;
				return n;
			}
		} else if (ours && h->tp_snaplen == h->tp_len) {
			*f = (uint8_t *)h + h->tp_mac;
			return (int)h->tp_snaplen;
		}
		/* a slot cut short with no copy queued (the socket's buffer
		 * was full) is a lost frame: go-back-N sends it again */
		advance(p);
	}
}

static void pkt_release(struct ox_link *l)
{
	advance(l->priv);
}

static int pkt_recv(struct ox_link *l, uint8_t *buf, size_t cap)
{
	const uint8_t *f;
	int n = pkt_peek(l, &f);
	if (n <= 0)
		return n;
	if ((size_t)n > cap)
		n = (int)cap;
	memcpy(buf, f, (size_t)n);
	pkt_release(l);
	return n;
}

static int pkt_flush(struct ox_link *l)
{
	struct pkt *p = l->priv;
	unsigned done = 0;
	int err = 0;
	while (done < p->queued) {
		int n = sendmmsg(p->fd, p->msg + done, p->queued - done, MSG_DONTWAIT);
		if (n > 0) {
			done += (unsigned)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		/* no room for now: what is left is lost, as on a full wire,
		 * and go-back-N resends it; any other error is this frame's
		 * alone (sendmmsg stops at the first that fails) */
		if (errno == EAGAIN || errno == ENOBUFS)
			break;
		err = -errno;
		done++;
	}
	p->queued = 0;
	return err;
}

static int queue(struct pkt *p, const uint8_t *f, size_t len)
{
	if (len > p->flen)
		return -EMSGSIZE;
	p->iov[p->queued] = (struct iovec){ (void *)f, len };
	p->msg[p->queued].msg_hdr =
		(struct msghdr){ .msg_iov = &p->iov[p->queued], .msg_iovlen = 1 };
	if (++p->queued == TX_BATCH)
		return pkt_flush(&p->link);
	return 0;
}

static int pkt_send_ref(struct ox_link *l, const uint8_t *f, size_t len)
{
	return queue(l->priv, f, len);
}

static int pkt_send(struct ox_link *l, const uint8_t *f, size_t len)
{
	struct pkt *p = l->priv;
	if (len > p->flen)
		return -EMSGSIZE;
	uint8_t *d = p->copies + (size_t)p->queued * p->flen;
	memcpy(d, f, len);
	return queue(p, d, len);
}

static int pkt_wait(struct ox_link *l, uint64_t timeout_ns)
{
	struct pkt *p = l->priv;
	pkt_flush(l);
	struct tpacket2_hdr *h = slot(p, p->rx_idx);
	if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)
		return 0;
	struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
	struct timespec ts = { (time_t)(timeout_ns / 1000000000ull),
			       (long)(timeout_ns % 1000000000ull) };
	return ppoll(&pfd, 1, &ts, NULL) < 0 ? -errno : 0;
}

static void pkt_close(struct ox_link *l)
{
	struct pkt *p = l->priv;
	pkt_flush(l);
	if (p->map)
		munmap(p->map, p->maplen);
	close(p->fd);
	free(p->big);
	free(p->copies);
	free(p);
}

static const struct ox_link_ops pkt_ops = {
	.send = pkt_send,
	.send_ref = pkt_send_ref,
	.recv = pkt_recv,
	.peek = pkt_peek,
	.release = pkt_release,
	.wait = pkt_wait,
	.flush = pkt_flush,
	.close = pkt_close,
};

/* Large socket buffers: as root past the system's limits, else up to them. */
static void sock_buf(int fd, int force, int plain)
{
	int v = SOCK_BUF;
	if (setsockopt(fd, SOL_SOCKET, force, &v, sizeof(v)) < 0)
		setsockopt(fd, SOL_SOCKET, plain, &v, sizeof(v));
}

int ox_link_packet_open(const char *ifname, uint16_t ethertype, struct ox_link **out)
{
	if (!ethertype)
		ethertype = OX_ETHERTYPE_DEFAULT;
	unsigned ifindex = if_nametoindex(ifname);
	if (!ifindex)
		return -ENODEV;
	struct pkt *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	int e;
	/* protocol 0 until the ring exists, so nothing arrives outside it */
	p->fd = socket(AF_PACKET, SOCK_RAW, 0);
	if (p->fd < 0) {
		e = -errno;
		free(p);
		return e;
	}
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (ioctl(p->fd, SIOCGIFMTU, &ifr) < 0)
		goto fail;
	p->link.mtu = (unsigned)ifr.ifr_mtu;
	if (ioctl(p->fd, SIOCGIFHWADDR, &ifr) < 0)
		goto fail;
	memcpy(p->link.mac, ifr.ifr_hwaddr.sa_data, 6);
	p->flen = OX_ETH_HLEN + p->link.mtu;
	p->big = malloc(RX_BATCH * p->flen);
	p->copies = malloc(TX_BATCH * p->flen);
	if (!p->big || !p->copies) {
		errno = ENOMEM;
		goto fail;
	}

	int v = TPACKET_V2, one = 1;
	if (setsockopt(p->fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) < 0 ||
	    setsockopt(p->fd, SOL_PACKET, PACKET_COPY_THRESH, &one, sizeof(one)) < 0)
		goto fail;
	setsockopt(p->fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	sock_buf(p->fd, SO_RCVBUFFORCE, SO_RCVBUF);
	sock_buf(p->fd, SO_SNDBUFFORCE, SO_SNDBUF);
	/* the kernel puts a frame at 16 bytes past the slot header (less the
	 * Ethernet header, so that the network header is aligned) */
	size_t inline_len = p->flen < RX_INLINE ? p->flen : RX_INLINE;
	p->fsize = TPACKET_ALIGN(TPACKET2_HDRLEN + 16 + inline_len);
	p->per_block = RX_BLOCK / p->fsize;
	unsigned blocks = (RX_MIN_FRAMES + p->per_block - 1) / p->per_block;
	p->nframes = blocks * p->per_block;
	struct tpacket_req rq = { .tp_block_size = RX_BLOCK,
				  .tp_frame_size = p->fsize,
				  .tp_block_nr = blocks,
				  .tp_frame_nr = p->nframes };
	if (setsockopt(p->fd, SOL_PACKET, PACKET_RX_RING, &rq, sizeof(rq)) < 0)
		goto fail;
	p->maplen = (size_t)rq.tp_block_size * rq.tp_block_nr;
	p->map = mmap(NULL, p->maplen, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
	if (p->map == MAP_FAILED) {
		p->map = NULL;
		goto fail;
	}
	p->rx = p->map;
	struct sockaddr_ll sll = { .sll_family = AF_PACKET,
				   .sll_protocol = htons(ethertype),
				   .sll_ifindex = (int)ifindex };
	if (bind(p->fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
		goto fail;
	p->link.ops = &pkt_ops;
	p->link.ethertype = ethertype;
	p->link.priv = p;
	*out = &p->link;
	return 0;
fail:
	e = -errno;
	if (p->map)
		munmap(p->map, p->maplen);
	close(p->fd);
	free(p->big);
	free(p->copies);
	free(p);
	return e;
}
