/*
 * ox_serve.c - ethermemd's OmniXtend data path: one endpoint thread serves
 * TileLink-over-Ethernet on the --ox interface while the TCP listener stays
 * the control path.
 *
 * Who may touch what is decided only on the control path: a session that
 * authenticated over TCP names its MAC (EM_W_OX_ATTACH) and asks for a
 * window per region handle (EM_W_OX_MAP); the endpoint serves a frame only
 * if its source MAC owns a window holding the address, and drops frames
 * from strangers without keeping any state for them (src/ox/endpoint.c).
 * Windows are removed before the region reference that backs them is
 * dropped, so memory a frame could still reach is never freed or reused.
 *
 * OmniXtend believes a frame because of its source MAC, which anyone on
 * the segment can forge.  So a session's window sits at a base drawn at
 * random over the whole 64-bit address space (64 KiB aligned, 48 bits of
 * chance) for each grant: a spoofer who does not see the traffic cannot
 * find it, where a base computed from the handle gave every window away.
 * The MAC is bound to the session (ox_endpoint_bind): its connection
 * starts only when the session attaches, frames far outside its sequence
 * are dropped and counted, and with EM_OX_ATTACH_TAG each frame carries a
 * tag keyed from the session's token, which no one without the session can
 * make.  Everything of a session goes when it ends.
 *
 * --ox-export regions sit at the address the operator chose, one window
 * per allowed MAC, with no session at all: that is how OmniXtend
 * requesters that know nothing of ethermem (FPGA endpoints, other
 * software) get at pool memory.  A region named by
 * --ox-export that does not exist yet is looked for again every 200 ms, so
 * a client may create it later; --ox-export-create SIZE makes it at start.
 *
 * A second thread answers raw ping-pong frames on EtherType + 1 with the
 * same rings and the same spin-then-block policy as the endpoint, for
 * MACs that attached over TCP only: `ethermem bench --baseline` measures
 * what the wire gives without OmniXtend in the same run.  Both threads
 * spin only while traffic flows and block when idle, so an idle node costs
 * no CPU.
 */
#include "daemon/ox_serve.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/config.h"
#include "common/util.h"
#include "ox/ox.h"

#define MAX_ATTACHED 256
/* Window bases are multiples of this, so a burst (at most 8 KiB) is aligned
 * in the window as in the address space. */
#define WIN_ALIGN (1ull << 16)

struct attached {
	const void *owner;
	uint8_t mac[6];
	int marker; /* the session's read-only 8 zero bytes at address 0 */
};

/* An attached MAC owns this window for as long as its session lives, so
 * the endpoint keeps its connection state between region windows: the
 * acknowledgements and the close that follow the last region's close are
 * then served, not dropped as a stranger's. */
static const uint64_t marker_mem;

struct em_oxs {
	struct em_oxs_opts o;
	struct em_store *st;
	struct ox_link *raw, *link;   /* link may be the fault injector around raw */
	struct ox_link *eraw, *elink; /* echo */
	struct ox_endpoint *ep;
	pthread_t ep_thr, echo_thr, exp_thr;
	bool have_ep_thr, have_echo_thr, have_exp_thr;
	volatile int stop;
	pthread_mutex_t lock; /* attached table, exports */
	struct attached att[MAX_ATTACHED];
	unsigned natt;
	struct em_sregion *exp_r[EM_OXS_MAX_EXPORTS];
	int exp_win[EM_OXS_MAX_EXPORTS][EM_OXS_MAX_ALLOW];
	uint64_t echoes;
};

static void *ep_main(void *arg)
{
	struct em_oxs *x = arg;

	ox_endpoint_run(x->ep, &x->stop);
	return NULL;
}

static bool mac_attached(struct em_oxs *x, const uint8_t mac[6])
{
	bool ok = false;

	pthread_mutex_lock(&x->lock);
	for (unsigned i = 0; i < x->natt && !ok; i++)
		ok = x->att[i].owner && !memcmp(x->att[i].mac, mac, 6);
	pthread_mutex_unlock(&x->lock);
	return ok;
}

/* Request: 14-byte Ethernet header, then a big-endian u16 with the length
 * of the whole reply frame wanted (as ox-selftest --ping sends it). */
static void *echo_main(void *arg)
{
	struct em_oxs *x = arg;
	struct ox_link *l = x->elink;
	uint8_t *buf = malloc(OX_ETH_HLEN + l->mtu + 64);
	uint64_t last = ox_now_ns();

	if (!buf)
		return NULL;
	while (!__atomic_load_n(&x->stop, __ATOMIC_RELAXED)) {
		int n = ox_link_recv(l, buf, OX_ETH_HLEN + l->mtu + 64);
		if (n <= 0) {
			uint64_t idle = ox_now_ns() - last;
			if (idle > 200000)
				ox_link_wait(l, 100000000);
			else if (idle > 20000)
				sched_yield();
			continue;
		}
		last = ox_now_ns();
		if (n < OX_ETH_HLEN + 2 || !mac_attached(x, buf + 6))
			continue;
		uint8_t src[6];
		size_t len = (size_t)buf[14] << 8 | buf[15];
		memcpy(src, buf + 6, 6);
		if (len < 60)
			len = 60;
		if (len > OX_ETH_HLEN + l->mtu)
			len = OX_ETH_HLEN + l->mtu;
		/* the reply carries whatever the buffer holds past the request:
		 * stale bytes of earlier frames, never anything of the store */
		ox_eth_write(buf, src, l->mac, l->ethertype);
		ox_link_send(l, buf, len);
		ox_link_flush(l);
		__atomic_fetch_add(&x->echoes, 1, __ATOMIC_RELAXED);
	}
	free(buf);
	return NULL;
}

/* Under x->lock.  0 when export i is in place (or now placed). */
static int export_try(struct em_oxs *x, unsigned i)
{
	struct em_oxs_export *e = &x->o.exp[i];
	struct em_sregion *r;
	int rc;

	if (x->exp_r[i])
		return 0;
	rc = em_store_open(x->st, e->region, &r);
	if (rc == -ENOENT && e->create_size)
		rc = em_store_create_region(x->st, e->region, e->create_size, EM_WC_NAMED, NULL, 0,
					    &r);
	if (rc)
		return rc;
	for (unsigned k = 0; k < e->nallow; k++) {
		struct ox_window w = { .base = e->addr, .len = r->size, .mem = r->mem };
		memcpy(w.mac, e->allow[k], 6);
		x->exp_win[i][k] = ox_endpoint_add_window(x->ep, &w);
		if (x->exp_win[i][k] < 0) {
			rc = x->exp_win[i][k];
			while (k--)
				ox_endpoint_remove_window(x->ep, x->exp_win[i][k]);
			em_store_put(x->st, r);
			return rc;
		}
	}
	x->exp_r[i] = r;
	em_log(EM_LOG_INFO, "ox: region '%s' (%llu bytes) exported at 0x%llx to %u MAC(s)",
	       e->region, (unsigned long long)r->size, (unsigned long long)e->addr, e->nallow);
	return 0;
}

static void *export_main(void *arg)
{
	struct em_oxs *x = arg;
	bool left = true;

	while (left && !__atomic_load_n(&x->stop, __ATOMIC_RELAXED)) {
		usleep(200000);
		left = false;
		pthread_mutex_lock(&x->lock);
		for (unsigned i = 0; i < x->o.nexp; i++)
			if (export_try(x, i))
				left = true;
		pthread_mutex_unlock(&x->lock);
	}
	return NULL;
}

static void ep_log(const char *line)
{
	em_log(EM_LOG_WARN, "%s", line);
}

int em_oxs_create(const struct em_oxs_opts *o, struct em_store *st, struct em_oxs **out)
{
	struct em_oxs *x = calloc(1, sizeof(*x));
	struct ox_opts oo = { .mode = o->mode ? OX_MODE_103 : OX_MODE_11,
			      .verbatim = o->verbatim,
			      .ethertype = o->ethertype,
			      .reply_per_frame = o->reply_per_frame,
			      .log = ep_log };
	uint16_t et = o->ethertype ? o->ethertype : OX_ETHERTYPE_DEFAULT;
	bool pending = false;
	const char *faults;
	int rc;

	if (!x)
		return -ENOMEM;
	x->o = *o;
	x->st = st;
	pthread_mutex_init(&x->lock, NULL);
	rc = ox_link_packet_open(o->iface, et, &x->raw);
	if (rc) {
		em_log(EM_LOG_ERR, "ox: cannot open %s: %s", o->iface, em_strerror(rc));
		goto fail;
	}
	if ((rc = em_cfg_ox_opts(&oo, &faults)) ||
	    (rc = ox_link_faulty_spec(x->raw, faults, (uint64_t)getpid(), &x->link)))
		goto fail;
	if (x->link != x->raw)
		em_log(EM_LOG_WARN, "ox: test fault injection on (ETHERMEM_OX_FAULTS)");
	if ((rc = ox_endpoint_create(&oo, x->link, &x->ep)))
		goto fail;
	/* the echo is a baseline: no fault injection, like the TCP baseline */
	if ((rc = ox_link_packet_open(o->iface, (uint16_t)(et + 1), &x->eraw)))
		goto fail;
	x->elink = x->eraw;
	for (unsigned i = 0; i < o->nexp; i++) {
		rc = export_try(x, i);
		if (rc == -ENOENT) {
			em_log(EM_LOG_INFO,
			       "ox: region '%s' not there yet; exported once it exists",
			       o->exp[i].region);
			pending = true;
		} else if (rc) {
			em_log(EM_LOG_ERR, "ox: cannot export '%s': %s", o->exp[i].region,
			       em_strerror(rc));
			goto fail;
		}
	}
	if (pthread_create(&x->ep_thr, NULL, ep_main, x) == 0)
		x->have_ep_thr = true;
	if (pthread_create(&x->echo_thr, NULL, echo_main, x) == 0)
		x->have_echo_thr = true;
	if (pending && pthread_create(&x->exp_thr, NULL, export_main, x) == 0)
		x->have_exp_thr = true;
	if (!x->have_ep_thr || !x->have_echo_thr) {
		rc = -EAGAIN;
		goto fail;
	}
	/* the largest burst whose PutFullData (two header flits, the TLoE
	 * header and the mask) fits a frame: 8 KiB at 9000, 32 KiB at 32800 */
	unsigned burst = 3;
	while (burst < OX_MAX_SIZE_LOG2 && (1u << (burst + 1 - 3)) + 4 <= x->raw->mtu / 8)
		burst++;
	em_log(EM_LOG_INFO,
	       "ox: serving OmniXtend %s on %s (EtherType 0x%04x, MTU %u, bursts up to %u, "
	       "%02x:%02x:%02x:%02x:%02x:%02x)%s%s",
	       o->mode ? "1.0.3" : "1.1", o->iface, et, x->raw->mtu, 1u << burst, x->raw->mac[0],
	       x->raw->mac[1], x->raw->mac[2], x->raw->mac[3], x->raw->mac[4], x->raw->mac[5],
	       o->verbatim ? ", verbatim data" : "",
	       o->reply_per_frame ? ", a reply frame per request frame" : "");
	*out = x;
	return 0;
fail:
	em_oxs_destroy(x);
	return rc;
}

void em_oxs_destroy(struct em_oxs *x)
{
	if (!x)
		return;
	__atomic_store_n(&x->stop, 1, __ATOMIC_RELAXED);
	if (x->have_ep_thr)
		pthread_join(x->ep_thr, NULL);
	if (x->have_echo_thr)
		pthread_join(x->echo_thr, NULL);
	if (x->have_exp_thr)
		pthread_join(x->exp_thr, NULL);
	if (x->ep) {
		uint64_t v[EM_ST__COUNT] = { 0 };
		struct ox_stats s;
		em_oxs_status(x, v);
		ox_endpoint_stats(x->ep, &s);
		em_log(EM_LOG_INFO,
		       "ox: %llu frames in, %llu out, %llu retransmitted (%llu timeouts, "
		       "%llu NAKs in, %llu out of order in); dropped "
		       "%llu malformed, %llu from unknown MACs and %llu spoofed; "
		       "%llu requests denied; "
		       "gave up on %llu silent peers",
		       (unsigned long long)v[EM_ST_OX_RX], (unsigned long long)v[EM_ST_OX_TX],
		       (unsigned long long)v[EM_ST_OX_RTX], (unsigned long long)s.timeouts,
		       (unsigned long long)s.naks_rx, (unsigned long long)s.ooo,
		       (unsigned long long)v[EM_ST_OX_MALFORMED],
		       (unsigned long long)v[EM_ST_OX_UNKNOWN],
		       (unsigned long long)v[EM_ST_OX_SPOOFED],
		       (unsigned long long)v[EM_ST_OX_DENIED], (unsigned long long)s.gaveup);
	}
	for (unsigned i = 0; i < x->o.nexp; i++)
		if (x->exp_r[i]) {
			for (unsigned k = 0; k < x->o.exp[i].nallow; k++)
				ox_endpoint_remove_window(x->ep, x->exp_win[i][k]);
			em_store_put(x->st, x->exp_r[i]);
		}
	ox_endpoint_destroy(x->ep);
	if (x->link && x->link != x->raw)
		ox_link_close(x->link);
	if (x->raw)
		ox_link_close(x->raw);
	if (x->eraw)
		ox_link_close(x->eraw);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

int em_oxs_attach(struct em_oxs *x, const void *owner, const uint8_t mac[6], unsigned flags,
		  const uint8_t *secret, size_t secret_len, struct em_ox_info *info)
{
	uint8_t tx[OX_TAG_KEYLEN], rx[OX_TAG_KEYLEN];
	bool tagged = flags & EM_OX_ATTACH_TAG;
	unsigned i, fr = MAX_ATTACHED;
	int rc;

	if (!(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) || (mac[0] & 1))
		return -EINVAL; /* no zero, group or broadcast address */
	if (flags & ~(unsigned)EM_OX_ATTACH_TAG)
		return -EINVAL;
	if (x->o.tag_required && !tagged)
		return -EPERM; /* --ox-auth: untagged sessions are refused */
	pthread_mutex_lock(&x->lock);
	for (i = 0; i < x->natt; i++) {
		if (!x->att[i].owner) {
			if (fr == MAX_ATTACHED)
				fr = i;
			continue;
		}
		if (!memcmp(x->att[i].mac, mac, 6) && x->att[i].owner != owner) {
			pthread_mutex_unlock(&x->lock);
			return -EADDRINUSE;
		}
		if (x->att[i].owner == owner)
			break;
	}
	if (i == x->natt) {
		struct ox_window w = { .base = 0,
				       .len = sizeof(marker_mem),
				       .mem = (void *)&marker_mem,
				       .flags = OX_WIN_READ };
		if (fr == MAX_ATTACHED && x->natt == MAX_ATTACHED) {
			pthread_mutex_unlock(&x->lock);
			return -EUSERS;
		}
		memcpy(w.mac, mac, 6);
		rc = ox_endpoint_add_window(x->ep, &w);
		if (rc < 0) {
			pthread_mutex_unlock(&x->lock);
			return rc;
		}
		if (fr == MAX_ATTACHED)
			fr = x->natt++;
		i = fr;
		x->att[i].marker = rc;
		x->att[i].owner = owner;
		memcpy(x->att[i].mac, mac, 6);
	}
	/* a new session starts a new OmniXtend connection, whatever the
	 * last one from this MAC left behind; under the lock, so a detach of
	 * an earlier owner cannot unbind what we bind */
	if (tagged)
		ox_tag_keys(secret, secret_len, true, tx, rx);
	rc = ox_endpoint_bind(x->ep, mac, tagged ? tx : NULL, tagged ? rx : NULL);
	em_secure_zero(tx, sizeof(tx));
	em_secure_zero(rx, sizeof(rx));
	pthread_mutex_unlock(&x->lock);
	if (rc)
		return rc;
	memcpy(info->mac, x->raw->mac, 6);
	info->ethertype = x->raw->ethertype;
	info->mtu = x->raw->mtu;
	info->mode = (uint8_t)(x->o.mode ? OX_MODE_103 : OX_MODE_11);
	info->verbatim = x->o.verbatim;
	info->tagged = tagged;
	info->big_bursts = 1;
	info->echo_type = x->eraw->ethertype;
	return 0;
}

void em_oxs_detach(struct em_oxs *x, const void *owner)
{
	pthread_mutex_lock(&x->lock);
	for (unsigned i = 0; i < x->natt; i++)
		if (x->att[i].owner == owner) {
			ox_endpoint_remove_window(x->ep, x->att[i].marker);
			ox_endpoint_unbind(x->ep, x->att[i].mac);
			x->att[i].owner = NULL;
		}
	pthread_mutex_unlock(&x->lock);
}

int em_oxs_map(struct em_oxs *x, const void *owner, void *mem, uint64_t len, uint64_t *base)
{
	struct ox_window w = { .len = len, .mem = mem };
	unsigned i;
	int id = -EEXIST;

	if (!len || len > UINT64_MAX / 2)
		return -ERANGE;
	pthread_mutex_lock(&x->lock);
	for (i = 0; i < x->natt; i++)
		if (x->att[i].owner == owner)
			break;
	if (i == x->natt) {
		pthread_mutex_unlock(&x->lock);
		return -ENOTCONN; /* EM_W_OX_ATTACH first */
	}
	memcpy(w.mac, x->att[i].mac, 6);
	pthread_mutex_unlock(&x->lock);
	/* a fresh draw for every grant; one that lands on this MAC's marker or
	 * another of its windows is drawn again (the chance is tiny) */
	for (int tries = 0; tries < 64 && id == -EEXIST; tries++) {
		em_random(&w.base, sizeof(w.base));
		w.base &= ~(WIN_ALIGN - 1);
		if (w.base < WIN_ALIGN || w.base > UINT64_MAX - len)
			continue;
		id = ox_endpoint_add_window(x->ep, &w);
	}
	if (id >= 0)
		*base = w.base;
	return id;
}

int em_oxs_base(struct em_oxs *x, int id, uint64_t *base)
{
	struct ox_window w;
	int rc = ox_endpoint_window(x->ep, id, &w);

	if (!rc)
		*base = w.base;
	return rc;
}

void em_oxs_unmap(struct em_oxs *x, int id)
{
	if (id >= 0)
		ox_endpoint_remove_window(x->ep, id);
}

void em_oxs_status(struct em_oxs *x, uint64_t *v)
{
	struct ox_stats s;
	uint64_t bad = 0, n = 0;

	ox_endpoint_stats(x->ep, &s);
	for (int i = 0; i < OX_REJ_COUNT; i++)
		if (i != OX_REJ_UNKNOWN_MAC && i != OX_REJ_NOT_FOR_US && i != OX_REJ_NOPEER &&
		    i != OX_REJ_SEQ && i != OX_REJ_TAG)
			bad += s.rej[i];
	v[EM_ST_OX_RX] = s.rx_frames;
	v[EM_ST_OX_TX] = s.tx_frames;
	v[EM_ST_OX_DENIED] = s.denied;
	v[EM_ST_OX_UNKNOWN] = s.rej[OX_REJ_UNKNOWN_MAC] + s.rej[OX_REJ_NOPEER];
	v[EM_ST_OX_SPOOFED] = s.rej[OX_REJ_SEQ] + s.rej[OX_REJ_TAG];
	v[EM_ST_OX_MALFORMED] = bad + s.overrun;
	v[EM_ST_OX_RTX] = s.rtx_frames;
	v[EM_ST_OX_ECHO] = __atomic_load_n(&x->echoes, __ATOMIC_RELAXED);
	pthread_mutex_lock(&x->lock);
	for (unsigned i = 0; i < x->natt; i++)
		n += x->att[i].owner != NULL;
	pthread_mutex_unlock(&x->lock);
	v[EM_ST_OX_ATTACHED] = n;
}
