/*
 * link_xdp.c - OmniXtend frames over AF_XDP (libxdp's xsk API), the
 * alternative fast path to AF_PACKET, kept so the two can be measured
 * against each other on the same interface (tests/netns_lat.sh --xdp).
 *
 * One UMEM of 4 KiB chunks, half handed to the kernel for receive through
 * the fill ring, half kept on a free stack for transmit.  Receive is a peek
 * at the RX ring and the frame is decoded in the UMEM; release gives the
 * chunk straight back to the fill ring.  Transmit copies into a free chunk
 * and kicks the kernel at flush, like the AF_PACKET link.
 *
 * Limits worth knowing: a chunk holds one frame, so the usable MTU is
 * 4096 - 256 bytes of XDP headroom whatever the interface allows (4 KiB
 * reads travel as two 2 KiB bursts); veth supports only the generic (skb,
 * copy) mode; and libxdp's default program sends *every* frame arriving on
 * queue 0 to the socket, so the interface is ours alone while it is open.
 */
#include <errno.h>
#include <string.h>

#include "ox/ox.h"

#ifdef OX_HAVE_XDP
#include <net/if.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>

#define NFRAMES 4096
#define FSIZE XSK_UMEM__DEFAULT_FRAME_SIZE
#define RING 2048
#define HEADROOM 256 /* XDP_PACKET_HEADROOM, before data in copy mode */

struct xl {
	struct ox_link link;
	struct xsk_umem *umem;
	struct xsk_socket *xsk;
	struct xsk_ring_prod fq, tx;
	struct xsk_ring_cons cq, rx;
	uint8_t *area;
	uint64_t freel[NFRAMES / 2];
	unsigned nfree, queued;
	uint64_t cur; /* address of the frame handed out by peek */
};

static void reclaim(struct xl *x)
{
	uint32_t idx;
	unsigned n = xsk_ring_cons__peek(&x->cq, RING, &idx);
	for (unsigned i = 0; i < n; i++)
		x->freel[x->nfree++] = *xsk_ring_cons__comp_addr(&x->cq, idx + i);
	if (n)
		xsk_ring_cons__release(&x->cq, n);
}

/* In copy mode each sendto moves at most a small batch (32 in the kernel's
 * generic path), so kick until the kernel has taken every descriptor. */
static int xl_flush(struct ox_link *l)
{
	struct xl *x = l->priv;
	x->queued = 0;
	for (int i = 0; i < RING / 16 && xsk_prod_nb_free(&x->tx, RING) < RING; i++)
		if (sendto(xsk_socket__fd(x->xsk), NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 &&
		    errno != EAGAIN && errno != EBUSY && errno != ENOBUFS)
			return -errno;
	return 0;
}

static int xl_send(struct ox_link *l, const uint8_t *f, size_t len)
{
	struct xl *x = l->priv;
	if (len > OX_ETH_HLEN + l->mtu)
		return -EMSGSIZE;
	reclaim(x);
	if (!x->nfree) {
		xl_flush(l);
		reclaim(x);
		if (!x->nfree)
			return -EAGAIN;
	}
	uint32_t idx;
	if (xsk_ring_prod__reserve(&x->tx, 1, &idx) != 1)
		return -EAGAIN;
	uint64_t a = x->freel[--x->nfree];
	memcpy(xsk_umem__get_data(x->area, a), f, len);
	struct xdp_desc *d = xsk_ring_prod__tx_desc(&x->tx, idx);
	d->addr = a;
	d->len = (uint32_t)len;
	xsk_ring_prod__submit(&x->tx, 1);
	if (++x->queued >= 32)
		return xl_flush(l);
	return 0;
}

static int xl_peek(struct ox_link *l, const uint8_t **f)
{
	struct xl *x = l->priv;
	uint32_t idx;
	if (xsk_ring_cons__peek(&x->rx, 1, &idx) != 1)
		return 0;
	const struct xdp_desc *d = xsk_ring_cons__rx_desc(&x->rx, idx);
	x->cur = d->addr;
	*f = xsk_umem__get_data(x->area, d->addr);
	return (int)d->len;
}

static void xl_release(struct ox_link *l)
{
	struct xl *x = l->priv;
	uint32_t idx;
	xsk_ring_cons__release(&x->rx, 1);
	/* the chunk goes straight back to the kernel for the next frame */
	if (xsk_ring_prod__reserve(&x->fq, 1, &idx) == 1) {
		*xsk_ring_prod__fill_addr(&x->fq, idx) = x->cur - x->cur % FSIZE;
		xsk_ring_prod__submit(&x->fq, 1);
	}
}

static int xl_recv(struct ox_link *l, uint8_t *buf, size_t cap)
{
	const uint8_t *f;
	int n = xl_peek(l, &f);
	if (n <= 0)
		return n;
	if ((size_t)n > cap)
		n = (int)cap;
	memcpy(buf, f, (size_t)n);
	xl_release(l);
	return n;
}

static int xl_wait(struct ox_link *l, uint64_t timeout_ns)
{
	struct xl *x = l->priv;
	xl_flush(l);
	uint32_t idx;
	if (xsk_ring_cons__peek(&x->rx, 1, &idx))
		return 0;
	struct pollfd pfd = { .fd = xsk_socket__fd(x->xsk), .events = POLLIN };
	struct timespec ts = { (time_t)(timeout_ns / 1000000000ull),
			       (long)(timeout_ns % 1000000000ull) };
	return ppoll(&pfd, 1, &ts, NULL) < 0 ? -errno : 0;
}

static void xl_free(struct xl *x)
{
	if (x->xsk)
		xsk_socket__delete(x->xsk);
	if (x->umem)
		xsk_umem__delete(x->umem);
	if (x->area)
		munmap(x->area, (size_t)NFRAMES * FSIZE);
	free(x);
}

static void xl_close(struct ox_link *l)
{
	xl_free(l->priv);
}

static const struct ox_link_ops xl_ops = {
	.send = xl_send,
	.recv = xl_recv,
	.peek = xl_peek,
	.release = xl_release,
	.wait = xl_wait,
	.flush = xl_flush,
	.close = xl_close,
};

int ox_link_xdp_open(const char *ifname, uint16_t ethertype, struct ox_link **out)
{
	/* the libraries narrate every load on stderr; we report errors ourselves */
	libbpf_set_print(NULL);
	libxdp_set_print(NULL);
	struct xl *x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	int e = 0, s = socket(AF_INET, SOCK_DGRAM, 0);
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	if (s < 0 || ioctl(s, SIOCGIFMTU, &ifr) < 0) {
		e = -errno;
		goto fail;
	}
	x->link.mtu = (unsigned)ifr.ifr_mtu;
	if (x->link.mtu > FSIZE - HEADROOM - OX_ETH_HLEN)
		x->link.mtu = (FSIZE - HEADROOM - OX_ETH_HLEN) & ~7u;
	if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0) {
		e = -errno;
		goto fail;
	}
	memcpy(x->link.mac, ifr.ifr_hwaddr.sa_data, 6);
	close(s);
	s = -1;

	x->area = mmap(NULL, (size_t)NFRAMES * FSIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (x->area == MAP_FAILED) {
		x->area = NULL;
		e = -ENOMEM;
		goto fail;
	}
	struct xsk_umem_config uc = {
		.fill_size = RING, .comp_size = RING, .frame_size = FSIZE, .frame_headroom = 0
	};
	e = xsk_umem__create(&x->umem, x->area, (uint64_t)NFRAMES * FSIZE, &x->fq, &x->cq, &uc);
	if (e)
		goto fail;
	struct xsk_socket_config sc = { .rx_size = RING,
					.tx_size = RING,
					.xdp_flags = XDP_FLAGS_SKB_MODE,
					.bind_flags = XDP_COPY };
	/* a socket closed just before on this queue is torn down lazily by
	 * the kernel: EBUSY for a moment */
	for (int tries = 0; tries < 100; tries++) {
		e = xsk_socket__create(&x->xsk, ifname, 0, x->umem, &x->rx, &x->tx, &sc);
		if (e != -EBUSY)
			break;
		x->xsk = NULL;
		usleep(10000);
	}
	if (e)
		goto fail;
	uint32_t idx;
	if (xsk_ring_prod__reserve(&x->fq, RING, &idx) != RING) {
		e = -EIO;
		goto fail;
	}
	for (unsigned i = 0; i < RING; i++)
		*xsk_ring_prod__fill_addr(&x->fq, idx + i) = (uint64_t)i * FSIZE;
	xsk_ring_prod__submit(&x->fq, RING);
	for (unsigned i = RING; i < NFRAMES; i++)
		x->freel[x->nfree++] = (uint64_t)i * FSIZE;
	x->link.ops = &xl_ops;
	x->link.ethertype = ethertype ? ethertype : OX_ETHERTYPE_DEFAULT;
	x->link.priv = x;
	*out = &x->link;
	return 0;
fail:
	if (s >= 0)
		close(s);
	xl_free(x);
	return e < 0 ? e : -EIO;
}

#else

int ox_link_xdp_open(const char *ifname, uint16_t ethertype, struct ox_link **out)
{
	(void)ifname;
	(void)ethertype;
	(void)out;
	return -ENOSYS;
}

#endif
