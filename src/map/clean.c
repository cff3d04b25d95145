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
 * (emm_policy_upcoming), write-protects them with one ioctl per run of
 * adjacent units and writes them back in one batch on a channel, so that
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
 */
#include "map/engine.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>

int emm_writeback(struct emm_source *src, struct emm_unit **cand, unsigned n, bool ahead)
{
	struct emm_unit *us[EMM_DEPTH], *undo[EMM_DEPTH];
	int res[EMM_DEPTH], err;
	unsigned k = 0, nu = 0;
	struct emm_slot *sl;

	for (unsigned i = 0; i < n && k < EMM_DEPTH; i++) {
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
	for (unsigned i = 0; i < k; i++)
		atomic_store(&us[i]->st, EMM_SYNCING);
	sl = emm_slot_any(src);
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
		struct emm_unit *v[32], *g[32];
		struct emm_source *src;
		unsigned n = 0, k = 0;

		emm_lock();
		uint64_t w = emm_clean_window();

		emm_g.clean_clock = emm_g.evict_clock;
		if (emm_g.resident + w > emm_g.budget)
			n = emm_policy_upcoming(v, 32, w);
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
		if (n < 32)
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
