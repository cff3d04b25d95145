/*
 * clean.c - batched write-back, and the cleaner that does it ahead of
 * eviction.
 *
 * A dirty unit must reach the pool before its pages can be dropped. Done at
 * eviction, that write is a network round trip inside the fault that needed
 * the room, and each unit cost a UFFDIO_WRITEPROTECT of its own, whose TLB
 * flush is a round of cross-CPU calls in a virtual machine. The cleaner is
 * one engine thread that, while the cache is within a window of its budget,
 * asks the policy which dirty units it will evict next
 * (emm_policy_upcoming), write-protects up to EMM_WB_MAX of them at once
 * with one ioctl per run of adjacent units and writes them back a
 * channel's depth at a time, so that
 * eviction mostly finds clean units it can just drop. It does not choose
 * victims and does not move units on the lists: a unit it writes is SYNCING
 * meanwhile, which eviction passes over in place.
 *
 * A store to a unit being cleaned takes the write-protect fault, which
 * makes it DIRTY again (serve.c); the cleaner's move to CLEAN then fails and
 * the unit stays dirty, so the newer bytes are written by a later clean or
 * by its eviction. Its pages stay until the write that reads them is done
 * (the unit's wb flag, which eviction and emm_settle respect). Eviction wakes the cleaner (a futex, which the SIGBUS
 * handler may call) when the end of the lists has moved a quarter window
 * since a look that found dirty units, or when an eviction had to write
 * back itself.
 *
 * A dirty unit is not always changed: GNU sort's output pass stores a
 * newline over each line's NUL and puts the NUL back, so every unit of its
 * text takes the write-protect fault and would be written back as it was
 * fetched (more bytes written than fetched). So when a unit can become dirty
 * (its write-protect fault, or an install that leaves it writable) the
 * engine records a digest of the bytes the pool holds for it, and before
 * writing it back computes the digest of its bytes again: equal, it is
 * clean and is not written. A fresh unit installed as zeros gets a mark
 * instead of a digest, and the check is a scan for a non-zero byte, which
 * stops at once on a unit that was filled. The digest is read from the
 * pages while the unit is claimed and write-protected, the same stability
 * the write itself relies on.
 */
#include "map/engine.h"
#include "common/util.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>

static inline uint64_t emm_rotl(uint64_t x, unsigned r)
{
	return (x << r) | (x >> (64 - r));
}

/* The digest: two 64-bit halves, each a multiply-rotate chain over every
 * 8-byte word with its own constants, split into two interleaved chains
 * (even and odd words) so that the multiplies of four chains overlap. A
 * step is a bijection of the chain's state, so a change confined to one
 * word always changes both halves; anything else goes unnoticed only by
 * chance. 128 bits because a collision is not a slow path but data lost
 * without a trace: a long run compares units billions of times, and at 64
 * bits the odds of ever missing one would be some in a billion per run;
 * at 128 they are nil. Not cryptographic: the program is not our adversary,
 * and its own stores could corrupt its data anyway. 4 GB/s measured here
 * (a 16 KiB unit in 4 us on a loaded machine), small beside a fault or the
 * write it may save. The unit grows by 16 bytes (the flag fits padding):
 * 0.1% of a 16 KiB unit. */
static void emm_digest(const unsigned char *p, uint64_t len, uint64_t out[2])
{
	const uint64_t k1 = 0x9e3779b97f4a7c15ull, k2 = 0xc2b2ae3d27d4eb4full;
	uint64_t a0 = len ^ 0x243f6a8885a308d3ull, a1 = 0x13198a2e03707344ull,
		 b0 = 0xa4093822299f31d0ull, b1 = len ^ 0x082efa98ec4e6c89ull;
	uint64_t i = 0;

	for (; i + 16 <= len; i += 16) {
		uint64_t w0, w1;

		memcpy(&w0, p + i, 8);
		memcpy(&w1, p + i + 8, 8);
		a0 = emm_rotl((a0 ^ w0) * k1, 31);
		a1 = emm_rotl((a1 ^ w1) * k1, 31);
		b0 = emm_rotl((b0 ^ w0) * k2, 27);
		b1 = emm_rotl((b1 ^ w1) * k2, 27);
	}
	if (i < len) {
		/* a tail shorter than 16 bytes (a backing length that is not a
		 * multiple of it): zero-padded, the length told it apart */
		uint64_t w[2] = { 0, 0 };

		memcpy(w, p + i, len - i);
		a0 = emm_rotl((a0 ^ w[0]) * k1, 31);
		a1 = emm_rotl((a1 ^ w[1]) * k1, 31);
		b0 = emm_rotl((b0 ^ w[0]) * k2, 27);
		b1 = emm_rotl((b1 ^ w[1]) * k2, 27);
	}
	/* each fold is a bijection in either chain with the other fixed */
	out[0] = a0 * k2 ^ emm_rotl(a1, 17);
	out[1] = b0 * k1 ^ emm_rotl(b1, 41);
}

static bool emm_all_zero(const unsigned char *p, uint64_t len)
{
	uint64_t i = 0;

	for (; i + 64 <= len; i += 64) {
		uint64_t w[8], o = 0;

		memcpy(w, p + i, 64);
		for (int j = 0; j < 8; j++)
			o |= w[j];
		if (o)
			return false;
	}
	for (; i < len; i++)
		if (p[i])
			return false;
	return true;
}

void emm_digest_note(struct emm_unit *u, const void *buf)
{
	struct emm_mapping *m = u->m;
	uint64_t d[2];

	if (buf == emm_g.zero) {
		atomic_store_explicit(&u->dvalid, EMM_DIG_ZERO, memory_order_relaxed);
		return;
	}
	/* mapped pages: the program's stores to them are ordered before us
	 * by the write-protect ioctl, which TSan cannot see */
	EM_UNOWNED_BEGIN();
	emm_digest(buf, emm_backed(m, (size_t)(u - m->u)), d);
	EM_UNOWNED_END();
	u->dig[0] = d[0];
	u->dig[1] = d[1];
	atomic_store_explicit(&u->dvalid, EMM_DIG_SUM, memory_order_relaxed);
}

bool emm_unchanged(struct emm_unit *u)
{
	struct emm_mapping *m = u->m;
	size_t idx = (size_t)(u - m->u);
	uint64_t len = emm_backed(m, idx), d[2] = { 0, 0 };
	uint8_t how = atomic_load_explicit(&u->dvalid, memory_order_relaxed);
	bool same = false;

	if (how == EMM_DIG_NONE)
		return false;
	EM_UNOWNED_BEGIN();
	if (how == EMM_DIG_ZERO)
		same = emm_all_zero((const unsigned char *)emm_uaddr(m, idx), len);
	else
		emm_digest((const unsigned char *)emm_uaddr(m, idx), len, d);
	EM_UNOWNED_END();
	if (how == EMM_DIG_SUM) {
		same = d[0] == u->dig[0] && d[1] == u->dig[1];
		u->dig[0] = d[0];
		u->dig[1] = d[1];
	} else if (!same) {
		atomic_store_explicit(&u->dvalid, EMM_DIG_NONE, memory_order_relaxed);
	}
	if (same)
		atomic_fetch_add_explicit(&m->unchanged, len, memory_order_relaxed);
	return same;
}

/* Writes back us[0..k), claimed, protected and SYNCING, through one
 * channel, and settles each. */
static int emm_write_claimed(struct emm_source *src, struct emm_unit **us, unsigned k, bool ahead)
{
	struct emm_unit *undo[EMM_DEPTH];
	int res[EMM_DEPTH], err;
	unsigned nu = 0;
	struct emm_slot *sl = emm_slot_any(src);

	if (!sl) {
		err = -EIO;
		for (unsigned i = 0; i < k; i++)
			res[i] = err;
	} else {
		err = emm_write_units(sl, us, k, res);
		emm_slot_put(sl);
	}
	for (unsigned i = 0; i < k; i++) {
		struct emm_unit *u = us[i];
		uint32_t sy = EMM_SYNCING;

		/* a failed write may have left part of it: the pool's copy is
		 * unknown now */
		if (res[i])
			atomic_store_explicit(&u->dvalid, EMM_DIG_NONE, memory_order_relaxed);
		/* a store during the write made it DIRTY: it stays so */
		if (!atomic_compare_exchange_strong(&u->st, &sy, res[i] ? EMM_DIRTY : EMM_CLEAN))
			continue;
		if (res[i]) {
			undo[nu++] = u;
		} else if (ahead) {
			struct emm_mapping *m = u->m;
			uint64_t off = (uint64_t)(u - m->u) << m->shift;

			atomic_fetch_add(&m->cleaned, off + (1ull << m->shift) > m->len
							      ? m->len - off
							      : 1ull << m->shift);
		}
	}
	/* DIRTY and still protected: a store in between faults, finds it
	 * dirty and retries until the protection is gone */
	if (nu)
		emm_wp_units(undo, nu, 0);
	for (unsigned i = 0; i < k; i++)
		atomic_store(&us[i]->wb, 0);
	return err;
}

/* Every unit claimed is protected before any is written, so that the
 * protect ioctls see the longest runs the batch has: the cleaner's
 * candidates come in eviction order, where the faults of several threads
 * or streams interleave, and 32 of them sorted by address made runs of
 * about 2.5 units on eight threads sorting (one TLB shootdown per run).
 * The writes then go a channel's depth at a time, so no channel is held
 * for more than one such batch; a unit already protected but not yet
 * written is SYNCING, so a store to it is served as during its write. */
int emm_writeback(struct emm_source *src, struct emm_unit **cand, unsigned n, bool ahead)
{
	struct emm_unit *us[EMM_WB_MAX];
	int err = 0;
	unsigned k = 0;

	for (unsigned i = 0; i < n && k < EMM_WB_MAX; i++) {
		struct emm_unit *u = cand[i];
		uint32_t s = EMM_DIRTY;

		if (!atomic_compare_exchange_strong(&u->st, &s, EMM_BUSY))
			continue;
		/* an em_unmap past its last settle of u may unmap the pages:
		 * leave a dying mapping alone (its unmap wrote it back) */
		if (atomic_load(&u->m->dead)) {
			atomic_store(&u->st, EMM_DIRTY);
			continue;
		}
		atomic_store(&u->wb, 1);
		us[k++] = u;
	}
	if (!k)
		return 0;
	emm_wp_units(us, k, 1);
	/* protected and claimed: a unit that holds what the pool has is clean
	 * as it stands */
	for (unsigned i = 0, j = 0, kk = k; i < kk; i++) {
		struct emm_unit *u = us[i];

		if (emm_unchanged(u)) {
			atomic_store(&u->wb, 0);
			atomic_store(&u->st, EMM_CLEAN);
			k--;
		} else {
			us[j++] = u;
		}
	}
	for (unsigned i = 0; i < k; i++)
		atomic_store(&us[i]->st, EMM_SYNCING);
	for (unsigned i = 0; i < k; i += EMM_DEPTH) {
		int r = emm_write_claimed(src, us + i, k - i < EMM_DEPTH ? k - i : EMM_DEPTH,
					  ahead);

		if (r && !err)
			err = r;
	}
	return err;
}

uint64_t emm_clean_window(void)
{
	uint64_t w = emm_g.budget / 16, floor = 8 * emm_g.max_unit;

	if (w < floor)
		w = floor;
	return w > emm_g.budget / 2 ? emm_g.budget / 2 : w;
}

bool emm_clean_due(bool waited)
{
	uint64_t w = emm_clean_window();

	/* after a look that found nothing dirty, only an eviction that had
	 * to write back wakes it: a program that only reads never does, and
	 * a woken thread on another CPU makes every drop's TLB flush reach
	 * that CPU too */
	return emm_g.resident + w > emm_g.budget &&
	       (waited || (emm_g.clean_found && emm_g.evict_clock - emm_g.clean_clock >= w / 4));
}

void emm_clean_kick(void)
{
	if (!atomic_exchange(&emm_g.clean_idle, 0))
		return;
	atomic_fetch_add(&emm_g.clean_seq, 1);
	syscall(SYS_futex, &emm_g.clean_seq, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* One look at the eviction end: writes back what is dirty there, a batch
 * of a channel's depth at a time, until that end is clean or the cache has
 * room. */
static void emm_clean_round(void)
{
	for (int pass = 0; pass < 64; pass++) {
		struct emm_unit *v[EMM_WB_MAX], *g[EMM_WB_MAX];
		struct emm_source *src;
		unsigned n = 0, k = 0;

		emm_lock();
		uint64_t w = emm_clean_window();

		emm_g.clean_clock = emm_g.evict_clock;
		if (emm_g.resident + w > emm_g.budget)
			n = emm_policy_upcoming(v, EMM_WB_MAX, w);
		if (!pass || n)
			emm_g.clean_found = n > 0;
		emm_unlock();
		if (!n)
			return;
		/* one channel per batch: units of other sources wait for the
		 * next pass */
		src = v[0]->m->src;
		for (unsigned i = 0; i < n; i++)
			if (v[i]->m->src == src)
				g[k++] = v[i];
		emm_writeback(src, g, k, true);
		if (n < EMM_WB_MAX)
			return;
	}
}

static void *emm_cleaner(void *arg)
{
	sigset_t all;

	(void)arg;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	for (;;) {
		uint32_t seq = atomic_load(&emm_g.clean_seq);
		bool due;

		atomic_store(&emm_g.clean_idle, 1);
		emm_lock();
		due = emm_clean_due(false);
		emm_unlock();
		if (!due) {
			/* the timeout only bounds a lost wake-up */
			struct timespec ts = { 1, 0 };

			syscall(SYS_futex, &emm_g.clean_seq, FUTEX_WAIT_PRIVATE, seq, &ts, NULL, 0);
			atomic_store(&emm_g.clean_idle, 0);
			/* a kick is reason enough (an eviction waited); a timeout
			 * looks again */
			if (atomic_load(&emm_g.clean_seq) == seq)
				continue;
		}
		atomic_store(&emm_g.clean_idle, 0);
		/* counted as a fault being served: no mapping it looks at is
		 * freed meanwhile */
		atomic_fetch_add(&emm_g.serving, 1);
		emm_clean_round();
		atomic_fetch_sub(&emm_g.serving, 1);
	}
	return NULL;
}

int emm_clean_start(void)
{
	pthread_attr_t at;
	pthread_t t;
	int e;

	if (emm_g.clean_started)
		return 0;
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	e = pthread_create(&t, &at, emm_cleaner, NULL);
	pthread_attr_destroy(&at);
	/* without it, eviction writes back as it always could */
	atomic_store(&emm_g.clean_started, !e);
	return -e;
}
