/*
 * link_packet.c - OmniXtend frames over a real interface with AF_PACKET and
 * TPACKET_V2 memory-mapped rings.
 *
 * Raw Ethernet is fast here only when polled (machine.md: 5.7 us busy-polled
 * against 55 us with blocking recvfrom for a 4 KiB reply), so receive is a
 * check of the next ring slot's status word, no system call, and the frame
 * is decoded where the kernel put it (peek/release); only wait()
 * enters the kernel, and the owners call it after a spell of idleness.
 * Sending writes the frame into the next TX slot (or the owner builds it
 * there: tx_slot/tx_commit); one sendto kicks the
 * kernel for all queued slots at flush (the owners flush at the end of each
 * poll) or when 32 are waiting, so a burst of responses costs one system
 * call, not one each.  The qdisc is bypassed: nothing here wants queueing.
 * Frames we sent ourselves are skipped on receive.
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

/* Ring slots: as many as fit these bytes (a jumbo MTU makes each slot up
 * to 128 KiB), but no fewer than the minimum: the RX ring must hold a peer's
 * whole retransmit ring (64 frames by default) with room to spare. */
#define RX_FRAMES 256
#define TX_FRAMES 128
#define RX_RING_BYTES (16u << 20)
#define TX_RING_BYTES (8u << 20)
#define RING_MIN_FRAMES 64

struct pkt {
	struct ox_link link;
	int fd;
	uint8_t *map;
	size_t maplen;
	unsigned fsize, rx_idx, tx_idx, queued, rx_frames, tx_frames;
	uint8_t *rx, *tx;
};

static struct tpacket2_hdr *slot(uint8_t *ring, unsigned fsize, unsigned i)
{
	return (struct tpacket2_hdr *)(ring + (size_t)i * fsize);
}

/* Next frame for us in the RX ring, skipping our own and truncated ones. */
static int pkt_peek(struct ox_link *l, const uint8_t **f)
{
	struct pkt *p = l->priv;
	for (;;) {
		struct tpacket2_hdr *h = slot(p->rx, p->fsize, p->rx_idx);
		if (!(__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER))
			return 0;
		const struct sockaddr_ll *sll =
			(const void *)((uint8_t *)h + TPACKET_ALIGN(sizeof(struct tpacket2_hdr)));
		if (sll->sll_pkttype != PACKET_OUTGOING && h->tp_snaplen == h->tp_len &&
		    h->tp_snaplen) {
			*f = (uint8_t *)h + h->tp_mac;
			return (int)h->tp_snaplen;
		}
		__atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
		p->rx_idx = (p->rx_idx + 1) % p->rx_frames;
	}
}

static void pkt_release(struct ox_link *l)
{
	struct pkt *p = l->priv;
	struct tpacket2_hdr *h = slot(p->rx, p->fsize, p->rx_idx);
	__atomic_store_n(&h->tp_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
	p->rx_idx = (p->rx_idx + 1) % p->rx_frames;
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

static int kick(struct pkt *p, int flags)
{
	p->queued = 0;
	if (sendto(p->fd, NULL, 0, flags, NULL, 0) < 0 && errno != EAGAIN && errno != ENOBUFS)
		return -errno;
	return 0;
}

static int pkt_flush(struct ox_link *l)
{
	struct pkt *p = l->priv;
	return p->queued ? kick(p, MSG_DONTWAIT) : 0;
}

/* The data area of the next TX slot, once the kernel is done with it. */
static uint8_t *pkt_tx_slot(struct ox_link *l)
{
	struct pkt *p = l->priv;
	struct tpacket2_hdr *h = slot(p->tx, p->fsize, p->tx_idx);
	uint32_t st = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
	if (st != TP_STATUS_AVAILABLE && !(st & TP_STATUS_WRONG_FORMAT)) {
		/* ring full: let the kernel drain it, waiting this once */
		kick(p, 0);
		st = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
		if (st != TP_STATUS_AVAILABLE && !(st & TP_STATUS_WRONG_FORMAT))
			return NULL;
	}
	return (uint8_t *)h + TPACKET2_HDRLEN - sizeof(struct sockaddr_ll);
}

static int pkt_tx_commit(struct ox_link *l, size_t len)
{
	struct pkt *p = l->priv;
	struct tpacket2_hdr *h = slot(p->tx, p->fsize, p->tx_idx);
	h->tp_len = (uint32_t)len;
	__atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
	p->tx_idx = (p->tx_idx + 1) % p->tx_frames;
	if (++p->queued >= 32)
		return kick(p, MSG_DONTWAIT);
	return 0;
}

static int pkt_send(struct ox_link *l, const uint8_t *f, size_t len)
{
	struct pkt *p = l->priv;
	if (len > p->fsize - TPACKET2_HDRLEN)
		return -EMSGSIZE;
	uint8_t *d = pkt_tx_slot(l);
	if (!d)
		return -EAGAIN;
	memcpy(d, f, len);
	return pkt_tx_commit(l, len);
}

static int pkt_wait(struct ox_link *l, uint64_t timeout_ns)
{
	struct pkt *p = l->priv;
	pkt_flush(l);
	struct tpacket2_hdr *h = slot(p->rx, p->fsize, p->rx_idx);
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
	if (p->map)
		munmap(p->map, p->maplen);
	close(p->fd);
	free(p);
}

static const struct ox_link_ops pkt_ops = {
	.send = pkt_send,
	.recv = pkt_recv,
	.peek = pkt_peek,
	.release = pkt_release,
	.wait = pkt_wait,
	.flush = pkt_flush,
	.tx_slot = pkt_tx_slot,
	.tx_commit = pkt_tx_commit,
	.close = pkt_close,
};

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
	/* protocol 0 until the rings exist, so nothing arrives outside them */
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

	int v = TPACKET_V2, one = 1;
	if (setsockopt(p->fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) < 0)
		goto fail;
	setsockopt(p->fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	p->fsize = 2048;
	while (p->fsize < p->link.mtu + OX_ETH_HLEN + TPACKET2_HDRLEN + 64)
		p->fsize *= 2;
	unsigned bsize = p->fsize > 65536 ? p->fsize : 65536;
	p->rx_frames = RX_FRAMES;
	while (p->rx_frames > RING_MIN_FRAMES && p->rx_frames * p->fsize > RX_RING_BYTES)
		p->rx_frames /= 2;
	p->tx_frames = TX_FRAMES;
	while (p->tx_frames > RING_MIN_FRAMES && p->tx_frames * p->fsize > TX_RING_BYTES)
		p->tx_frames /= 2;
	struct tpacket_req rq = { .tp_block_size = bsize,
				  .tp_frame_size = p->fsize,
				  .tp_block_nr = p->rx_frames * p->fsize / bsize,
				  .tp_frame_nr = p->rx_frames };
	struct tpacket_req tq = { .tp_block_size = bsize,
				  .tp_frame_size = p->fsize,
				  .tp_block_nr = p->tx_frames * p->fsize / bsize,
				  .tp_frame_nr = p->tx_frames };
	if (setsockopt(p->fd, SOL_PACKET, PACKET_RX_RING, &rq, sizeof(rq)) < 0 ||
	    setsockopt(p->fd, SOL_PACKET, PACKET_TX_RING, &tq, sizeof(tq)) < 0)
		goto fail;
	size_t rxlen = (size_t)rq.tp_block_size * rq.tp_block_nr;
	p->maplen = rxlen + (size_t)tq.tp_block_size * tq.tp_block_nr;
	p->map = mmap(NULL, p->maplen, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd, 0);
	if (p->map == MAP_FAILED) {
		p->map = NULL;
		goto fail;
	}
	p->rx = p->map;
	p->tx = p->map + rxlen;
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
	free(p);
	return e;
}
