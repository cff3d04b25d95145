/*
 * tcp.c - the TCP transport of libethermem.
 *
 * A channel is one authenticated TCP connection to one node. Posting encodes
 * every part's header into one buffer and sends headers and payloads with one
 * sendmsg() per batch. The node answers in order, so the receiver always knows
 * which part the next response belongs to: small responses are read through a
 * 64 KiB buffer (one recv for many replies), large read data is received
 * straight into the caller's buffer.
 *
 * A send that would block never waits blind: it polls for input too and
 * drains replies, because a node blocked on sending us replies stops reading
 * our requests - two full socket buffers would otherwise deadlock.
 *
 * Small before bulk: the node answers in order, so a 4 KiB read posted after
 * 16 MiB of bulk reads would wait for all of them. Bulk parts (reads and
 * writes over SMALL_MAX) are held in a wait ring and go out only while less
 * than BULK_WINDOW of bulk is on the wire, reads cut into SLICE-long
 * requests; small parts and atomics go out at once, ahead of whatever bulk
 * still waits, unless they overlap a waiting part where one of the two
 * writes (then they keep their order). So a small reply waits behind at most
 * a window of bulk, not behind everything queued. Slices of one read share
 * its tag (reads are not deduplicated by tag, and the FIFO still matches
 * replies in order) and each completes as a part of the operation. Writes are
 * not cut: a resent write must carry the tags it was first sent with.
 *
 * An encrypted channel (ETHERMEM_ENCRYPT) does the same through a seal in
 * each direction (common/seal.h): the gathered batch goes out as records,
 * and what tcp_recv returns is plaintext of records that opened.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/seal.h"
#include "common/util.h"
#include "lib/internal.h"

#define RXBUF (64u << 10)
#define DIRECT_MIN (16u << 10) /* payload left to receive: straight to the caller */
#define IOV_BATCH 512
#define SMALL_MAX 4096u    /* up to this, and atomics, go ahead of bulk */
#define SLICE (128u << 10) /* a bulk read goes out in requests this long */
#define BULK_WINDOW 0u     /* off unless set: see ETHERMEM_BULK_WINDOW in README */
#define PUMP_BATCH 16

/* A ring of parts; a copy's operands (atomics) live in the copy. */
struct ring {
	struct em_part *a;
	size_t cap, head, count;
};

struct tcp_chan {
	struct em_chan ch;
	int fd;
	struct ring fifo; /* sent, in the order the replies will come */
	struct ring wait; /* posted, held behind the bulk window */
	uint32_t cut;     /* bytes of wait's first part already sent as slices */
	size_t bulk;      /* bulk bytes on the wire */
	uint32_t window;  /* at most this much of it; 0: no hold-back at all */
	unsigned slices;  /* FIFO room kept for the slices of one window */
	bool pumping;
	uint8_t *rx;
	size_t rpos, wpos;
	uint8_t *hdrs; /* encoded request headers of a batch */
	unsigned hdrcap;
	bool have_hdr;
	struct em_spin spin; /* how a reply is waited for */
	struct em_hdr cur;
	uint32_t got;
	struct em_seal *stx, *srx; /* an encrypted channel's, else NULL */
};

static struct em_part *ring_at(struct ring *r, size_t i)
{
	return &r->a[(r->head + i) % r->cap];
}

/* *d = *p, with an atomic's operands and result pointed at d's own copy */
static void part_copy(struct em_part *d, const struct em_part *p)
{
	*d = *p;
	if (p->req == p->inl)
		d->req = d->inl;
	if (p->resp == p->inl)
		d->resp = d->inl;
}

static int ring_reserve(struct ring *r, size_t more)
{
	size_t nc;
	struct em_part *nf;

	if (r->count + more <= r->cap)
		return 0;
	nc = r->cap ? r->cap : 64;
	while (nc < r->count + more)
		nc *= 2;
	nf = malloc(nc * sizeof(*nf));
	if (!nf)
		return -ENOMEM;
	/* a part still in flight (an unlock nobody waits for) moves */
	for (size_t i = 0; i < r->count; i++)
		part_copy(&nf[i], ring_at(r, i));
	free(r->a);
	r->a = nf;
	r->cap = nc;
	r->head = 0;
	return 0;
}

/* Appends a copy of p; the caller made room. */
static void ring_push(struct ring *r, const struct em_part *p)
{
	part_copy(&r->a[(r->head + r->count) % r->cap], p);
	r->count++;
}

static void ring_pop(struct ring *r)
{
	r->head = (r->head + 1) % r->cap;
	r->count--;
}

/* Bytes a part moves if it is bulk, else 0. Control calls (no slot) are
 * never bulk. */
static uint32_t bulk_len(const struct em_part *p)
{
	if (!p->slot)
		return 0;
	if (p->wop == EM_W_READ && p->resp_cap > SMALL_MAX)
		return p->resp_cap;
	if (p->wop == EM_W_WRITE && p->req_len > SMALL_MAX)
		return p->req_len;
	return 0;
}

static bool is_small(const struct em_part *p)
{
	return p->slot && !bulk_len(p) &&
	       (p->wop == EM_W_READ || p->wop == EM_W_WRITE || p->wop == EM_W_ATOMIC);
}

/* Whether b must stay behind a: same bytes, and one of them changes them. */
static bool clash(const struct em_part *a, const struct em_part *b)
{
	uint64_t alen = a->wop == EM_W_READ ? a->aux : a->wop == EM_W_WRITE ? a->req_len : 8;
	uint64_t blen = b->wop == EM_W_READ ? b->aux : b->wop == EM_W_WRITE ? b->req_len : 8;

	if (!is_small(a) && !bulk_len(a))
		return true; /* a control call: nothing passes it */
	if (a->wop == EM_W_READ && b->wop == EM_W_READ)
		return false;
	return a->handle == b->handle && a->off < b->off + blen && b->off < a->off + alen;
}

/* Fails every outstanding part: the stream is out of step or gone. A
 * connection the node closed or reset is the node's loss to the caller
 * (EM_ENONODE); a timeout stays one, as the node may only be slow. */
static void tcp_break(struct tcp_chan *t, int err)
{
	if (err == -ECONNRESET || err == -EPIPE || err == -ENOTCONN || err == -ECONNABORTED)
		err = -EM_ENONODE;
	if (!t->ch.broken)
		em_log(EM_LOG_DEBUG, "tcp channel broken: %s", em_strerror(err));
	t->ch.broken = true;
	if (t->fd >= 0) {
		close(t->fd);
		t->fd = -1;
	}
	while (t->fifo.count) {
		struct em_part *p = ring_at(&t->fifo, 0);
		ring_pop(&t->fifo);
		p->status = err;
		em_part_done(&t->ch, p);
	}
	t->bulk = 0;
	t->cut = 0;
	while (t->wait.count) {
		struct em_part *p = ring_at(&t->wait, 0);
		ring_pop(&t->wait);
		p->status = err;
		em_part_done(&t->ch, p);
	}
}

/* Receives into dst; timeout_ms 0 means do not block. Returns bytes, 0 if
 * nothing was there, or -errno (-ETIMEDOUT, -ECONNRESET on EOF). */
static ssize_t tcp_recv_raw(struct tcp_chan *t, void *dst, size_t len, int timeout_ms)
{
	ssize_t n;

	if (timeout_ms != 0 && timeout_ms != t->ch.timeout_ms) {
		struct pollfd pfd = { t->fd, POLLIN, 0 };
		int r = poll(&pfd, 1, timeout_ms);
		if (r == 0) /* the caller's short wait ran out, not the request */
			return timeout_ms >= t->ch.timeout_ms ? -ETIMEDOUT : 0;
	}
	if (timeout_ms != 0) {
		if (t->ch.sleep) {
			do
				n = recv(t->fd, dst, len, 0);
			while (n < 0 && errno == EINTR);
			goto got;
		}
		/* The reply to a small request is usually microseconds away:
		 * spin for it before paying for a sleep and a wakeup - but only
		 * while replies have been coming that fast. */
		if (em_spin_begin(&t->spin, em_now_ns())) {
			n = em_recv_spin(t->fd, dst, len, &t->spin);
			if (n != -EAGAIN) {
				em_spin_end(&t->spin, em_now_ns());
				if (n < 0) {
					errno = (int)-n;
					n = -1;
				}
				goto got;
			}
		}
		do
			n = recv(t->fd, dst, len, 0);
		while (n < 0 && errno == EINTR);
		em_spin_end(&t->spin, em_now_ns());
		goto got;
	}
	do
		n = recv(t->fd, dst, len, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
got:
	if (n > 0)
		return n;
	if (n == 0)
		return -ECONNRESET;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return timeout_ms == 0 ? 0 : -ETIMEDOUT;
	return -errno;
}

/* tcp_recv_raw's contract, in plaintext: -EBADMSG for a record that fails
 * its tag (altered, replayed, or not from the node we authenticated),
 * -EPROTO for one with an impossible length. */
static ssize_t tcp_recv(struct tcp_chan *t, void *dst, size_t len, int timeout_ms)
{
	if (!t->srx)
		return tcp_recv_raw(t, dst, len, timeout_ms);
	for (;;) {
		ssize_t n = em_seal_read(t->srx, dst, len, true);
		uint8_t *room;
		size_t cap;

		if (n != 0) {
			if (n < 0)
				em_log(EM_LOG_DEBUG, "encrypted reply refused: %s",
				       em_strerror((int)n));
			return n;
		}
		cap = em_seal_room(t->srx, &room);
		n = tcp_recv_raw(t, room, cap, timeout_ms);
		if (n <= 0)
			return n;
		em_seal_fill(t->srx, (size_t)n);
	}
}

/* Completes as many parts as the bytes at hand allow; with a timeout, waits
 * for the first. */
static int pump(struct tcp_chan *t);

static int tcp_progress(struct em_chan *ch, int timeout_ms)
{
	struct tcp_chan *t = (struct tcp_chan *)ch;
	int done = 0, pr;

	if (ch->broken)
		return -ENOTCONN;
	if (timeout_ms < 0)
		timeout_ms = ch->timeout_ms;
	while (t->fifo.count) {
		struct em_part *p = ring_at(&t->fifo, 0);
		int wait = done ? 0 : timeout_ms;
		ssize_t n;

		if (!t->have_hdr) {
			const char *why = "";
			int rc;

			if (t->wpos - t->rpos < EM_HDR_LEN) {
				if (t->rpos && t->rpos == t->wpos)
					t->rpos = t->wpos = 0;
				if (t->rpos > RXBUF / 2 || RXBUF - t->wpos < EM_HDR_LEN) {
					memmove(t->rx, t->rx + t->rpos, t->wpos - t->rpos);
					t->wpos -= t->rpos;
					t->rpos = 0;
				}
				n = tcp_recv(t, t->rx + t->wpos, RXBUF - t->wpos, wait);
				if (n == 0)
					break;
				if (n < 0) {
					tcp_break(t, (int)n);
					return done ? done : (int)n;
				}
				t->wpos += (size_t)n;
				continue;
			}
			rc = em_hdr_decode(t->rx + t->rpos, &t->cur, &why);
			if (!rc && (!(t->cur.flags & EM_WF_RESPONSE) || t->cur.tag != p->tag ||
				    t->cur.op != p->wop)) {
				rc = -EPROTO;
				why = "response out of step";
			}
			if (!rc && t->cur.len > p->resp_cap) {
				rc = -EPROTO;
				why = "response longer than asked for";
			}
			if (rc) {
				em_log(EM_LOG_DEBUG, "bad response: %s", why);
				tcp_break(t, rc);
				return done ? done : rc;
			}
			t->rpos += EM_HDR_LEN;
			t->have_hdr = true;
			t->got = 0;
		}
		if (t->got < t->cur.len) {
			size_t want = t->cur.len - t->got;
			size_t have = EM_MIN(want, t->wpos - t->rpos);

			memcpy((uint8_t *)p->resp + t->got, t->rx + t->rpos, have);
			t->rpos += have;
			t->got += (uint32_t)have;
			want -= have;
			if (want >= DIRECT_MIN) {
				n = tcp_recv(t, (uint8_t *)p->resp + t->got, want, wait);
			} else if (want) {
				if (t->rpos == t->wpos)
					t->rpos = t->wpos = 0;
				n = tcp_recv(t, t->rx + t->wpos, RXBUF - t->wpos, wait);
				if (n > 0) {
					t->wpos += (size_t)n;
					continue;
				}
			} else {
				n = 1;
			}
			if (n == 0)
				break;
			if (n < 0) {
				tcp_break(t, (int)n);
				return done ? done : (int)n;
			}
			if (want >= DIRECT_MIN)
				t->got += (uint32_t)n;
			if (t->got < t->cur.len)
				continue;
		}
		p->status = t->cur.status;
		p->resp_len = t->cur.len;
		p->r_region = t->cur.region;
		p->r_aux = t->cur.aux;
		p->r_off = t->cur.offset;
		t->have_hdr = false;
		ring_pop(&t->fifo);
		t->bulk -= bulk_len(p);
		em_part_done(ch, p);
		done++;
		if (t->wait.count && (pr = pump(t)) < 0)
			return done;
	}
	return done;
}

/* Room for n encoded headers; the buffer stays with the channel and only
 * grows, so steady traffic allocates nothing. */
static uint8_t *hdr_room(struct tcp_chan *t, unsigned n)
{
	if (n > t->hdrcap) {
		uint8_t *nb = realloc(t->hdrs, (size_t)n * EM_HDR_LEN);
		if (!nb)
			return NULL;
		t->hdrs = nb;
		t->hdrcap = n;
	}
	return t->hdrs;
}

/* Sends all of iov[0..niov) (modified). A send that would block drains
 * replies while it waits (see the top of the file). 0 or -errno. */
static int send_iov(struct tcp_chan *t, struct iovec *iov, unsigned niov)
{
	unsigned ii = 0;
	int rc;

	while (ii < niov) {
		struct msghdr mh = { .msg_iov = iov + ii, .msg_iovlen = niov - ii };
		ssize_t w = sendmsg(t->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pfd = { t->fd, POLLIN | POLLOUT, 0 };
			if (poll(&pfd, 1, t->ch.timeout_ms) == 0)
				return -ETIMEDOUT;
			if (pfd.revents & POLLIN) {
				rc = tcp_progress(&t->ch, 0);
				if (rc < 0)
					return rc;
			}
			continue;
		}
		if (w < 0)
			return -errno;
		while (ii < niov && (size_t)w >= iov[ii].iov_len)
			w -= (ssize_t)iov[ii++].iov_len;
		if (ii < niov) {
			iov[ii].iov_base = (char *)iov[ii].iov_base + w;
			iov[ii].iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* The same bytes as send_iov, sealed into records one at a time. */
static int send_sealed(struct tcp_chan *t, struct iovec *iov, unsigned niov)
{
	int left = (int)niov;

	for (;;) {
		const uint8_t *rec;
		ssize_t len = em_seal_wrap(t->stx, &iov, &left, &rec);
		struct iovec one = { (void *)rec, (size_t)len };
		int rc;

		if (len <= 0)
			return (int)len;
		if ((rc = send_iov(t, &one, 1)))
			return rc;
	}
}

/* Encodes parts[0..n), appends them to the FIFO (which has room) and sends
 * them. The caller holds t->pumping, so no drain while sending reuses the
 * header buffer. On failure the channel is broken and every part failed. */
static int send_parts(struct tcp_chan *t, const struct em_part *parts, unsigned n)
{
	uint8_t *hdrs = hdr_room(t, n);
	struct iovec iov[IOV_BATCH];
	unsigned i = 0, niov = 0;
	int rc = 0;

	if (!hdrs) {
		tcp_break(t, -ENOMEM);
		for (i = 0; i < n; i++) { /* not in the FIFO yet: fail them here */
			struct em_part p = parts[i];
			p.status = -ENOMEM;
			em_part_done(&t->ch, &p);
		}
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		const struct em_part *p = &parts[i];
		struct em_hdr h = {
			.magic = EM_WIRE_MAGIC,
			.version = EM_WIRE_VERSION,
			.op = p->wop,
			/* the node applies a write or atomic at most once per tag,
			 * so one resent after a lost reply is not applied twice */
			.flags = (uint16_t)((p->wop == EM_W_WRITE || p->wop == EM_W_ATOMIC
						     ? EM_WF_ONCE
						     : 0) |
					    p->wflags),
			.len = p->req_len,
			.tag = p->tag,
			.region = p->handle,
			.aux = p->aux,
			.offset = p->off,
		};

		em_hdr_encode(hdrs + (size_t)i * EM_HDR_LEN, &h);
		ring_push(&t->fifo, p);
		t->bulk += bulk_len(p);
	}
	/* Gather headers and payloads and send them in as few calls as the
	 * iovec limit allows. */
	i = 0;
	while (i < n || niov) {
		while (i < n && niov + 2 <= IOV_BATCH) {
			/* the caller's parts, not the FIFO: replies drained
			 * while we send may pop the FIFO under us */
			const struct em_part *f = &parts[i];
			iov[niov].iov_base = hdrs + (size_t)i * EM_HDR_LEN;
			iov[niov++].iov_len = EM_HDR_LEN;
			if (f->req_len) {
				iov[niov].iov_base = (void *)f->req;
				iov[niov++].iov_len = f->req_len;
			}
			i++;
		}
		rc = t->stx ? send_sealed(t, iov, niov) : send_iov(t, iov, niov);
		if (rc) {
			if (!t->ch.broken) /* a drain that failed broke it already */
				tcp_break(t, rc);
			return rc;
		}
		niov = 0;
	}
	return 0;
}

/* Sends what waits, in order, while the bulk window has room: parts that
 * are not bulk at once, bulk reads a slice at a time. */
static int pump(struct tcp_chan *t)
{
	struct em_part batch[PUMP_BATCH];
	int rc = 0;

	if (t->pumping || t->ch.broken)
		return 0;
	t->pumping = true;
	while (!rc && t->wait.count) {
		unsigned n = 0;

		while (n < PUMP_BATCH && t->wait.count) {
			struct em_part *w = ring_at(&t->wait, 0), *b = &batch[n];
			uint32_t len = bulk_len(w), slice;

			if (!len) {
				part_copy(b, w);
				ring_pop(&t->wait);
				n++;
				continue;
			}
			slice = w->wop == EM_W_READ ? EM_MIN(SLICE, len - t->cut) : len;
			if (t->bulk + slice > t->window && (t->bulk || n))
				break;
			part_copy(b, w);
			if (w->wop == EM_W_READ) {
				b->off += t->cut;
				b->aux = b->resp_cap = slice;
				b->resp = (uint8_t *)w->resp + t->cut;
			}
			if (t->cut + slice < len) {
				/* one more part for the operation to wait for */
				w->slot->pending++;
				t->ch.outstanding++;
				t->cut += slice;
			} else {
				t->cut = 0;
				ring_pop(&t->wait);
			}
			/* counted now so the window holds across this batch;
			 * send_parts counts it again, so take it back */
			t->bulk += bulk_len(b);
			n++;
		}
		if (!n)
			break;
		for (unsigned i = 0; i < n; i++)
			t->bulk -= bulk_len(&batch[i]);
		if ((rc = ring_reserve(&t->fifo, n))) {
			tcp_break(t, rc);
			for (unsigned i = 0; i < n; i++) {
				batch[i].status = rc;
				em_part_done(&t->ch, &batch[i]);
			}
			break;
		}
		rc = send_parts(t, batch, n);
	}
	t->pumping = false;
	return rc;
}

static int tcp_post(struct em_chan *ch, const struct em_part *parts, unsigned n)
{
	struct tcp_chan *t = (struct tcp_chan *)ch;
	unsigned i, nnow;
	int rc = 0;

	/* room for all of them in either ring, plus the slices of one window */
	if (ch->broken || (rc = ring_reserve(&t->fifo, t->wait.count + n + t->slices)) ||
	    (rc = ring_reserve(&t->wait, n)) || !hdr_room(t, n)) {
		/* the parts are ours now: they complete, with the error */
		rc = ch->broken ? -EM_ENONODE : rc ? rc : -ENOMEM;
		for (i = 0; i < n; i++) {
			struct em_part p = parts[i];
			p.status = rc;
			ch->outstanding++;
			em_part_done(ch, &p);
		}
		return rc;
	}
	/* Small parts that nothing waiting holds back go out now, a run of
	 * them per call (all of them in one when nothing is bulk, the usual
	 * case); the rest join the wait ring, for pump. */
	t->pumping = true;
	for (i = 0; i < n; i++) {
		const struct em_part *p = &parts[i];
		bool go = is_small(p) || !t->window;

		ch->outstanding++;
		if (ch->broken) {
			struct em_part f = *p;
			f.status = -EM_ENONODE;
			em_part_done(ch, &f);
			continue;
		}
		for (size_t k = 0; go && k < t->wait.count; k++)
			go = !clash(ring_at(&t->wait, k), p);
		if (!go) {
			ring_push(&t->wait, p);
			continue;
		}
		nnow = 1;
		while (i + nnow < n && (is_small(&parts[i + nnow]) || !t->window) && !t->wait.count)
			ch->outstanding++, nnow++;
		rc = send_parts(t, p, nnow); /* a failure broke the channel */
		i += nnow - 1;
	}
	t->pumping = false;
	if (!rc && t->wait.count)
		rc = pump(t);
	return rc;
}

static void tcp_fail(struct em_chan *ch, int err)
{
	tcp_break((struct tcp_chan *)ch, err);
}

static int tcp_fd(struct em_chan *ch)
{
	return ((struct tcp_chan *)ch)->fd;
}

static void tcp_close(struct em_chan *ch)
{
	struct tcp_chan *t = (struct tcp_chan *)ch;

	if (t->fd >= 0)
		close(t->fd);
	em_seal_destroy(t->stx);
	em_seal_destroy(t->srx);
	free(t->fifo.a);
	free(t->wait.a);
	free(t->rx);
	free(t->hdrs);
	free(t);
}

static int tcp_reserve(struct em_chan *ch, unsigned parts)
{
	struct tcp_chan *t = (struct tcp_chan *)ch;
	int rc;

	/* pump sends up to PUMP_BATCH parts at a time */
	if (!hdr_room(t, parts > PUMP_BATCH ? parts : PUMP_BATCH))
		return -ENOMEM;
	rc = ring_reserve(&t->fifo, parts + t->slices);
	return rc ? rc : ring_reserve(&t->wait, parts);
}

static const struct em_chan_ops tcp_ops = {
	.name = "tcp",
	.post = tcp_post,
	.progress = tcp_progress,
	.fd = tcp_fd,
	.fail = tcp_fail,
	.close = tcp_close,
	.reserve = tcp_reserve,
};

static int dial(const struct em_node *node, int timeout_ms)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *ai, *a;
	char port[8];
	int fd = -1, rc, one = 1;
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };

	snprintf(port, sizeof(port), "%u", node->port);
	rc = getaddrinfo(node->host, port, &hints, &ai);
	if (rc)
		return -EHOSTUNREACH;
	rc = -ECONNREFUSED;
	for (a = ai; a; a = a->ai_next) {
		fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		/* SO_SNDTIMEO bounds connect() too */
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
			break;
		rc = errno == EINPROGRESS ? -ETIMEDOUT : -errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0)
		return rc;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* A blocking receive gives up after the request timeout. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* One request and its reply in clear (the handshake); aux goes in the
 * request's header, and *raux, if not NULL, gets the reply's. */
static int call_raw(int fd, uint8_t op, const void *req, uint32_t req_len, void *resp,
		    uint32_t resp_len, uint32_t aux, uint32_t *raux)
{
	uint8_t hb[EM_HDR_LEN];
	struct em_hdr h = { .magic = EM_WIRE_MAGIC,
			    .version = EM_WIRE_VERSION,
			    .op = op,
			    .len = req_len,
			    .tag = op,
			    .aux = aux };
	int rc;

	em_hdr_encode(hb, &h);
	if ((rc = em_send_all(fd, hb, sizeof(hb))) ||
	    (req_len && (rc = em_send_all(fd, req, req_len))))
		return rc;
	if ((rc = em_recv_all(fd, hb, sizeof(hb))))
		return rc == -EAGAIN ? -ETIMEDOUT : rc;
	if ((rc = em_hdr_decode(hb, &h, NULL)))
		return rc;
	if (h.status)
		return h.status;
	if (h.op != op || h.len != resp_len)
		return -EPROTO;
	if (raux)
		*raux = h.aux;
	rc = em_recv_all(fd, resp, resp_len);
	return rc == -EAGAIN ? -ETIMEDOUT : rc;
}

/* Connects and authenticates; returns the socket or -errno. On an
 * encrypted pool, *stx and *srx are the new connection's seals. */
static int tcp_open(em_pool *pool, struct em_node *node, bool new_session, struct em_seal **stx,
		    struct em_seal **srx)
{
	uint8_t cn[EM_NONCE_LEN], sn[EM_NONCE_LEN], want[EM_PROOF_LEN], sk[EM_NONCE_LEN];
	uint8_t token[EM_TOKEN_LEN], traffic[2][EM_KEY_LEN];
	uint8_t ab[EM_AUTH_REQ_LEN], rb[EM_AUTH_RESP_LEN];
	struct em_auth_req ar = { .attach_session = 0 };
	struct em_auth_resp resp;
	uint32_t aux = 0, raux = 0;
	unsigned cipher = 0;
	/* a frozen node accepts (the kernel does) but never answers: the
	 * handshake gets a shorter leash than requests, so that connecting
	 * to a pool with one such node does not take a request timeout */
	int hs_ms = EM_MIN(pool->timeout_ms, 2000), fd = dial(node, hs_ms), rc;
	struct timeval tv = { .tv_sec = pool->timeout_ms / 1000,
			      .tv_usec = (pool->timeout_ms % 1000) * 1000 };

	*stx = *srx = NULL;
	if (fd < 0)
		return fd;
	if (pool->encrypt)
		aux = EM_WH_ENCRYPT | (em_seal_aes_available() ? EM_WH_AES : 0);
	em_auth_keypair(cn, sk);
	rc = call_raw(fd, EM_W_HELLO, cn, sizeof(cn), sn, sizeof(sn), aux, &raux);
	/* Asked for encryption and not given it: never fall back to clear.
	 * Given it unasked: not a node that speaks our protocol. */
	if (!rc && pool->encrypt != !!(raux & EM_WH_ENCRYPT))
		rc = pool->encrypt ? -EM_ECRYPT : -EPROTO;
	if (!rc && pool->encrypt) {
		cipher = EM_WH_CIPHER(raux);
		if (cipher != EM_CIPHER_XCHACHA20POLY1305 &&
		    (cipher != EM_CIPHER_AES256GCM || !(aux & EM_WH_AES)))
			rc = -EPROTO;
	}
	if (!rc)
		rc = em_auth_session_token(pool->key, sk, sn, cn, sn, token, cipher,
					   pool->encrypt ? traffic : NULL);
	em_secure_zero(sk, sizeof(sk));
	if (rc)
		goto fail;
	em_auth_proof(pool->key, 0, sn, cn, ar.proof);
	if (!new_session) {
		/* proves we hold the session's token without showing it */
		ar.attach_session = node->session;
		em_auth_attach_proof(node->token, cn, sn, ar.attach_token);
	}
	em_auth_req_encode(ab, &ar);
	rc = call_raw(fd, EM_W_AUTH, ab, sizeof(ab), rb, sizeof(rb), 0, NULL);
	if (rc)
		goto fail;
	em_auth_resp_decode(rb, &resp);
	/* a node that cannot prove it knows the secret is not one of ours */
	em_auth_proof(pool->key, 1, cn, sn, want);
	if (em_auth_check(want, resp.proof) != 0) {
		rc = -EM_EAUTH;
		goto fail;
	}
	if (pool->encrypt && (!(*stx = em_seal_create((int)cipher, traffic[0])) ||
			      !(*srx = em_seal_create((int)cipher, traffic[1])))) {
		rc = -ENOMEM;
		goto fail;
	}
	if (new_session) {
		node->session = resp.session;
		memcpy(node->token, token, EM_TOKEN_LEN);
		memcpy(node->id, resp.node_id, EM_NODE_ID_LEN);
	}
	em_secure_zero(traffic, sizeof(traffic));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
fail:
	em_secure_zero(traffic, sizeof(traffic));
	em_seal_destroy(*stx);
	em_seal_destroy(*srx);
	*stx = *srx = NULL;
	close(fd);
	return rc;
}

static void tcp_set_window(struct tcp_chan *t, uint32_t window)
{
	t->window = window;
	t->slices = window / SLICE + 1;
}

int em_tcp_chan_fd(int fd, int timeout_ms, int poll_us, struct em_chan **out)
{
	struct tcp_chan *t = calloc(1, sizeof(*t));

	if (!t)
		return -ENOMEM;
	t->rx = malloc(RXBUF);
	if (!t->rx) {
		free(t);
		return -ENOMEM;
	}
	t->fd = fd;
	t->ch.ops = &tcp_ops;
	t->ch.timeout_ms = timeout_ms;
	t->ch.poll_us = poll_us;
	t->spin.budget_ns = (uint64_t)(poll_us > 0 ? poll_us : 0) * 1000;
	tcp_set_window(t, BULK_WINDOW);
	*out = &t->ch;
	return 0;
}

int em_tcp_connect(em_pool *pool, struct em_node *node, bool new_session, struct em_chan **out)
{
	struct em_seal *stx, *srx;
	int fd = tcp_open(pool, node, new_session, &stx, &srx), rc;

	if (fd < 0)
		return fd;
	rc = em_tcp_chan_fd(fd, pool->timeout_ms, pool->poll_us, out);
	if (rc) {
		em_seal_destroy(stx);
		em_seal_destroy(srx);
		close(fd);
		return rc;
	}
	tcp_set_window((struct tcp_chan *)*out, pool->bulk_window);
	((struct tcp_chan *)*out)->stx = stx;
	((struct tcp_chan *)*out)->srx = srx;
	return 0;
}

int em_tcp_dead(em_pool *pool, struct em_chan **out)
{
	struct tcp_chan *t = calloc(1, sizeof(*t));

	if (!t || !(t->rx = malloc(RXBUF))) {
		free(t);
		return -ENOMEM;
	}
	t->fd = -1;
	t->ch.ops = &tcp_ops;
	t->ch.timeout_ms = pool->timeout_ms;
	t->ch.poll_us = pool->poll_us;
	t->ch.broken = true;
	*out = &t->ch;
	return 0;
}

int em_tcp_baseline_fd(em_pool *pool, unsigned node)
{
	struct em_seal *stx, *srx;
	int fd, rc;

	if (node >= em_pool_n(pool))
		return -EINVAL;
	/* the raw mode measures the unencrypted floor; it has no records */
	if (pool->encrypt)
		return -EOPNOTSUPP;
	fd = tcp_open(pool, &pool->nodes[node], false, &stx, &srx);
	if (fd < 0)
		return fd;
	rc = call_raw(fd, EM_W_BASELINE, NULL, 0, NULL, 0, 0, NULL);
	if (rc) {
		close(fd);
		return rc;
	}
	return fd;
}

/* The plain data path: a queue's channels are the TCP connections. */
const struct em_transport_ops em_transport_tcp = {
	.name = "tcp",
	.id = EM_TRANSPORT_TCP,
};
