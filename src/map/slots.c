/*
 * slots.c - the channels a fault uses and their staging buffers.
 *
 * A source (one backend, one pool) has EMM_SLOTS slots; a slot is one
 * channel of the backend, held by one thread at a time, with EMM_DEPTH
 * in-flight entries and a staging cell of EMM_CELL bytes per entry. All of
 * it is allocated at the first map (emm_source_get), so that the SIGBUS
 * handler only takes a slot with a CAS, posts, reaps and installs. Fetched
 * data lands in staging and goes in with one UFFDIO_COPY per unit; a
 * prefetch may wait there until its unit is touched (see prefetch.c). Any
 * thread holding a slot reaps its completions, so a fault waiting for a unit
 * another thread fetched makes progress itself.
 */
#include "map/engine.h"
#include "common/util.h"

#include <limits.h>
#include <stdlib.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>

/* A slot's busy word is a lock in Drepper's three states (0 free, 1 held,
 * 2 held with someone asleep on it), so a thread waiting for a slot sleeps
 * in the kernel instead of calling sched_yield in a loop. A channel is held
 * across network round trips and write-back batches, and with eight
 * program threads faulting at once the servers spun: 5-8% of the samples of
 * the Python threads case were sched_yield, on two cores that the node and
 * the program need. The futex is a system call, so fit for the handler. */
static void emm_slot_sleep(struct emm_slot *sl, long ns)
{
	struct timespec ts = { 0, ns };

	syscall(SYS_futex, &sl->busy, FUTEX_WAIT_PRIVATE, 2, ns ? &ts : NULL, NULL, 0);
}

struct emm_slot *emm_slot_any(struct emm_source *s)
{
	int cpu = sched_getcpu(); /* vDSO: no system call in the fault path */
	unsigned start = (unsigned)(cpu < 0 ? 0 : cpu) % EMM_SLOTS;

	for (;;) {
		bool alive = false;

		for (unsigned i = 0; i < EMM_SLOTS; i++) {
			struct emm_slot *sl = &s->slot[(start + i) % EMM_SLOTS];
			int z = 0;

			if (sl->poisoned)
				continue;
			alive = true;
			if (atomic_compare_exchange_strong(&sl->busy, &z, 1)) {
				if (!sl->poisoned)
					return sl;
				emm_slot_put(sl);
			}
		}
		if (!alive)
			return NULL;
		/* all held: sleep on one of them, briefly, since another may
		 * be the first to come free */
		struct emm_slot *w = &s->slot[start];
		int one = 1;

		if (!w->poisoned && (atomic_compare_exchange_strong(&w->busy, &one, 2) || one == 2))
			emm_slot_sleep(w, 200000);
	}
}

void emm_slot_get(struct emm_slot *sl)
{
	int z = 0;

	if (atomic_compare_exchange_strong(&sl->busy, &z, 1))
		return;
	while (atomic_exchange(&sl->busy, 2) != 0)
		emm_slot_sleep(sl, 0);
}

/* Wakes every sleeper, not one: emm_slot_any takes a free slot with 0 -> 1,
 * so a thread it woke could take this slot without marking it contended
 * again, and an emm_slot_get sleeper left behind would then sleep through
 * every later put (seen: a fault parked in emm_slot_get for good while no
 * thread held the slot). The sleepers are a few server threads at most. */
void emm_slot_put(struct emm_slot *sl)
{
	if (atomic_exchange(&sl->busy, 0) == 2)
		syscall(SYS_futex, &sl->busy, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* One UFFDIO_COPY, resumed after the partial copies EAGAIN reports.
 * 0 or -errno; cp is left at what was not copied. */
static int emm_copy(struct uffdio_copy *cp)
{
	while (ioctl(emm_g.uffd, UFFDIO_COPY, cp)) {
		if (errno != EAGAIN)
			return -errno;
		if (cp->copy > 0) {
			cp->dst += (uint64_t)cp->copy;
			cp->src += (uint64_t)cp->copy;
			cp->len -= (uint64_t)cp->copy;
		}
		cp->copy = 0;
	}
	return 0;
}

/* A copy may not span two VMAs, and a program's madvise or mprotect can cut
 * the range of one unit into several (NumPy asks for huge pages from the
 * second page of an array on). The unit then goes in page by page: each
 * page lies in one VMA. A page already present (a first copy that got part
 * way) or no longer in a registered VMA (unmapped by the program) is left
 * as it is. Rare, so no attempt is made to find the VMA edges. */
static int emm_copy_pieces(const struct uffdio_copy *whole)
{
	for (uint64_t o = 0; o < whole->len; o += 4096) {
		struct uffdio_copy cp = {
			.dst = whole->dst + o,
			.src = whole->src + o,
			.len = 4096,
			.mode = whole->mode,
		};
		int err = emm_copy(&cp);

		if (err && err != -EEXIST && err != -ENOENT)
			return err;
	}
	return 0;
}

/* The fetch trace (emm_set_trace): one 8-byte record per installed unit,
 * the mapping's serial (its top 5 bits: log2 of the unit - 11, so that
 * ethermem-ideal knows the unit) and the unit's index, the top bit of the index set
 * when the unit was zero-filled rather than fetched. A write(2) each, so
 * that records from the handler and the pager thread never need a lock or
 * a flush at exit; it is a measuring mode, and a syscall is small beside a
 * fault. Installs are what the cache holds, and in the order it got them;
 * hits are invisible to userfaultfd, so the trace is the reference stream
 * with the hits left out. */
static void emm_trace(const struct emm_mapping *m, size_t idx, bool zero)
{
	uint32_t rec[2] = { (m->serial & ((1u << 27) - 1)) | (m->shift - 11) << 27,
			    (uint32_t)idx | (zero ? 1u << 31 : 0) };

	if (write(emm_g.trace - 1, rec, sizeof(rec)) < 0)
		return; /* a full disk loses records, never the program */
}

/* Whether the program writes what it reads, per mapping. A unit goes in
 * write-protected so that its first store marks it dirty; but each such
 * store is a fault handed to a server, an unprotect ioctl and a TLB
 * shootdown of every CPU the process runs on. Eight Python threads sorting
 * took a WP fault for nearly every unit they fetched (11600 of 17300
 * messages the servers took), torch.load for the buffers it fills. So the
 * shim's blocks keep a score: a probe (a unit installed protected) that is
 * stored to raises it, one evicted untouched lowers it twice as fast; while
 * it is positive, units go in writable and dirty, except one in eight, which
 * stay protected as probes so that the score keeps seeing what the program
 * does. A unit installed dirty that was only read costs a write-back of
 * bytes the pool already has: that is the price of being wrong, and the
 * probes bound how long it is paid. */
static bool emm_install_dirty(struct emm_mapping *m, unsigned tick)
{
	if (!(m->flags & EM_MAP_SCRATCH) || !emm_writable(m) ||
	    atomic_load_explicit(&m->wscore, memory_order_relaxed) <= 0)
		return false;
	return (tick & 7) != 0;
}

static void emm_wscore_add(struct emm_mapping *m, int d)
{
	int s = atomic_load_explicit(&m->wscore, memory_order_relaxed), t;

	do {
		t = s + d;
		t = t > 8 ? 8 : t < -8 ? -8 : t;
	} while (t != s && !atomic_compare_exchange_weak_explicit(
				   &m->wscore, &s, t, memory_order_relaxed, memory_order_relaxed));
}

void emm_probe_stored(struct emm_unit *u)
{
	if (atomic_exchange_explicit(&u->probe, 0, memory_order_relaxed))
		emm_wscore_add(u->m, 1);
}

void emm_probe_evicted(struct emm_unit *u)
{
	if (atomic_exchange_explicit(&u->probe, 0, memory_order_relaxed))
		emm_wscore_add(u->m, -2);
}

/* An eviction comes a whole budget of installs after the install, too late
 * to stop a pass that only reads (a forward pass over weights the program
 * wrote before) from being installed dirty and written back again. So one
 * probe per mapping at a time is watched: untouched after EMM_PROBE_WAIT
 * more installs of its mapping, it counts as read only. A program that
 * reads a unit and then writes it (a sort's partition) stores to it within
 * a few installs. */
#define EMM_PROBE_WAIT 16u

static void emm_probe_watch(struct emm_mapping *m, size_t idx, bool probe, unsigned tick)
{
	size_t w = atomic_load_explicit(&m->watched, memory_order_acquire);

	if (w && w <= m->nunits &&
	    tick - atomic_load_explicit(&m->watched_at, memory_order_relaxed) >= EMM_PROBE_WAIT &&
	    atomic_compare_exchange_strong(&m->watched, &w, 0)) {
		emm_probe_evicted(&m->u[w - 1]);
		w = 0;
	}
	if (!w && probe) {
		atomic_store_explicit(&m->watched_at, tick, memory_order_relaxed);
		atomic_store(&m->watched, idx + 1);
	}
}

/* The mapping's score speaks for the program as a whole; a heap serves both
 * kinds of unit at once. SQLite's page cache, in the shim's small-object
 * arena, writes the header of every page it looks up (its LRU links and
 * reference counts sit in the same allocation), so every residency of such
 * a unit takes a WP fault; while the same region's neighbours, fetched with
 * a group and never touched, drive the score below zero and keep every unit
 * protected (81000 WP faults beside 135000 fetches in a 256 MiB database's
 * lookups). So each unit also keeps its own evidence: a store seen while it
 * was protected sends its next installs in dirty, after which it goes in
 * protected once more to look again: a probe. The run doubles with each
 * probe in a row that sees a store, from EMM_WPRED_RUN installs up to
 * EMM_WPRED_RUN << EMM_WPRED_GROW, and a probe that sees none ends it. A
 * unit stored to in every residency (GNU sort's output pass writes a
 * newline over each line's NUL) then meets the protection once in 33
 * installs instead of once in 3. A unit read, written a while and then
 * only read costs at most one run of installs that must be protected and
 * digested at eviction, where the digest finds them unchanged, against a
 * fault round trip saved per residency while the stores go on; one filled
 * by the install's own store (a fresh buffer, weights being loaded) starts
 * no prediction. */
#define EMM_WPRED_RUN 2u
#define EMM_WPRED_GROW 4u

static bool emm_unit_predict(struct emm_unit *u, bool dirty)
{
	uint8_t w = atomic_load_explicit(&u->wpred, memory_order_relaxed), n = 0;
	uint8_t r = atomic_load_explicit(&u->wrun, memory_order_relaxed);

	/* a store that installs it (a buffer being filled) says nothing of
	 * what the next residency does: weights written once are then read */
	if (dirty) {
		n = 0;
	} else if (w & EMM_WSEEN) {
		n = (uint8_t)((EMM_WPRED_RUN << r) - 1);
		if (r < EMM_WPRED_GROW)
			atomic_store_explicit(&u->wrun, (uint8_t)(r + 1), memory_order_relaxed);
	} else if (w & EMM_WLEFT) {
		n = (uint8_t)((w & EMM_WLEFT) - 1);
	} else {
		/* a run is over: this install probes, protected; or the last
		 * probe saw no store, and the unit has no history again */
		if (w & EMM_WPROBE) {
			atomic_store_explicit(&u->wrun, 0, memory_order_relaxed);
			atomic_store_explicit(&u->wpred, 0, memory_order_relaxed);
		} else if (r) {
			atomic_store_explicit(&u->wpred, EMM_WPROBE, memory_order_relaxed);
		}
		return false;
	}
	atomic_store_explicit(&u->wpred, n, memory_order_relaxed);
	return !dirty;
}

int emm_install(struct emm_unit *u, const void *buf, bool dirty)
{
	struct emm_mapping *m = u->m;
	size_t idx = (size_t)(u - m->u);

	if (atomic_load(&m->dead)) {
		/* a prefetch that landed after its mapping was unmapped: the
		 * range is gone, and so is the unit (mapping.c keeps m until
		 * no slot holds an entry for it) */
		emm_lock();
		emm_g.resident -= emm_ulen(m, idx);
		emm_unlock();
		atomic_store(&u->st, EMM_GONE);
		return -ENOENT;
	}
	unsigned tick = atomic_fetch_add_explicit(&m->wtick, 1, memory_order_relaxed);

	/* a fork's fill (uffd.c) is for the child's copy: it goes in clean
	 * unless a store brings it, so the parent drops it unwritten, and it
	 * neither takes a turn of a prediction nor probes the write score */
	bool fill = atomic_load_explicit(&u->forkfill, memory_order_relaxed);

	if (!fill && (m->flags & EM_MAP_SCRATCH) && emm_writable(m) && emm_unit_predict(u, dirty))
		dirty = true;
	if (!fill && !dirty && emm_install_dirty(m, tick))
		dirty = true;
	atomic_store_explicit(&u->probe, !fill && !dirty && emm_writable(m), memory_order_relaxed);
	/* what the pool holds: zeros are marked for free; fetched bytes get
	 * their digest now only if they go in writable, since after the copy
	 * a store may come at any time; otherwise at the write-protect fault */
	if (buf == emm_g.zero || (dirty && emm_writable(m)))
		emm_digest_note(u, buf);
	else
		atomic_store_explicit(&u->dvalid, EMM_DIG_NONE, memory_order_relaxed);
	if ((m->flags & EM_MAP_SCRATCH) && !fill)
		emm_probe_watch(m, idx, !dirty && emm_writable(m), tick);

	struct uffdio_copy cp = {
		.dst = (uintptr_t)emm_uaddr(m, idx),
		.src = (uintptr_t)buf,
		.len = emm_ulen(m, idx),
		.mode = (emm_writable(m) && !dirty ? UFFDIO_COPY_MODE_WP : 0) |
			(emm_g.mode == EMM_FAULTS_SIGBUS ? UFFDIO_COPY_MODE_DONTWAKE : 0),
	};
	int err = 0;

	err = emm_copy(&cp);
	if ((err == -ENOENT || err == -EEXIST) && !m->huge)
		err = emm_copy_pieces(&cp);
	emm_lock();
	if (err) {
		emm_g.resident -= emm_ulen(m, idx);
	} else {
		emm_policy_insert(u);
	}
	emm_unlock();
	if (!err && !u->seen) {
		u->seen = 1;
		atomic_fetch_add_explicit(&m->footprint, emm_ulen(m, idx), memory_order_relaxed);
	}
	if (!err && emm_g.trace)
		emm_trace(m, idx, buf == emm_g.zero);
	if (err && m->huge && err != -ENOMEM) {
		/* a huge unit is one page, never split: another thread may
		 * have installed it first; the next fault sees what is there */
		atomic_store(&u->st, EMM_EMPTY);
		return err;
	}
	if (err) {
		/* retrying would fault forever, so the access fails, loudly */
		emm_log(m->what,
			err == -ENOMEM && m->huge
				? "no free huge page (raise vm.nr_hugepages or set ETHERMEM_MAP_HUGE=0)"
				: "installing the fetched pages failed",
			(uintptr_t)emm_uaddr(m, idx), err);
		atomic_store(&u->st, EMM_FAILED);
		return err;
	}
	atomic_store(&u->st, dirty ? EMM_DIRTY : EMM_CLEAN);
	return 0;
}

/* Installs a landed read (each unit of a span in turn) and frees its entry. */
void emm_infl_install(struct emm_slot *sl, int i)
{
	struct emm_infl *e = &sl->infl[i];
	struct emm_unit *u = e->u;
	struct emm_mapping *m = u->m;
	size_t at = (size_t)(u - m->u);
	unsigned nu = emm_infl_nu(e);

	e->u = NULL;
	if (e->ready) {
		e->ready = 0;
		sl->nready--;
		emm_lock();
		emm_g.staged -= emm_span_ulen(m, at, nu);
		emm_unlock();
	}
	for (unsigned k = 0; k < nu; k++) {
		/* a store that waited for it dirties the unit it touched, the
		 * first (trips and demand fetches are single units) */
		if (emm_install(u + k, sl->staging + (size_t)i * EMM_CELL + ((size_t)k << m->shift),
				k == 0 && e->dirty) == 0) {
			size_t ul = emm_ulen(m, at + k);

			atomic_fetch_add(&m->fetched, ul);
			if (e->prefetch)
				atomic_fetch_add(&m->prefetched, ul);
		}
	}
}

/* Installs landed prefetches until `keep` entries are free. */
static void emm_flush_ready(struct emm_slot *sl, unsigned keep)
{
	for (int i = 0; i < EMM_DEPTH && sl->nready && EMM_DEPTH - sl->ninfl - sl->nready < keep;
	     i++)
		if (sl->infl[i].u && sl->infl[i].ready)
			emm_infl_install(sl, i);
}

/* The held slot's entry for unit u, if any. */
int emm_infl_find(struct emm_slot *sl, struct emm_unit *u)
{
	for (int i = 0; i < EMM_DEPTH; i++) {
		struct emm_unit *f = sl->infl[i].u;

		if (f == u || (f && f->m == u->m && u > f && u < f + emm_infl_nu(&sl->infl[i])))
			return i;
	}
	return -1;
}

int emm_infl_alloc(struct emm_slot *sl)
{
	if (EMM_DEPTH - sl->ninfl - sl->nready < 2)
		emm_flush_ready(sl, 2);
	for (int i = 0; i < EMM_DEPTH; i++)
		if (!sl->infl[i].u)
			return i;
	return -1;
}

/* Fails every fetch in flight on a slot whose channel stopped answering:
 * the buffers stay owned by the dead channel, so the slot is never reused. */
static void emm_slot_poison(struct emm_slot *sl)
{
	bool said = false;

	sl->poisoned = 1;
	for (int i = 0; i < EMM_DEPTH; i++) {
		struct emm_infl *e = &sl->infl[i];

		if (e->u && e->ready)
			emm_infl_install(sl, i); /* landed before the channel died */
		if (!e->u)
			continue;
		if (!e->write) {
			struct emm_mapping *m = e->u->m;
			size_t at = (size_t)(e->u - m->u);

			/* once, naming the first: a later access to any of
			 * them says only that its fetch failed, not why */
			if (!said)
				emm_log(m->what,
					"no reply from the pool in time: fetches in flight failed",
					(uintptr_t)emm_uaddr(m, at), -ETIMEDOUT);
			said = true;
			emm_lock();
			emm_g.resident -= emm_span_ulen(m, at, emm_infl_nu(e));
			emm_unlock();
			for (unsigned k = 0; k < emm_infl_nu(e); k++)
				atomic_store(&m->u[at + k].st, EMM_FAILED);
		} else {
			e->done = 1;
			e->result = -ETIMEDOUT;
		}
	}
}

/* Reaps completions of a held slot, installing fetched units. Returns how
 * many were reaped, or -ETIMEDOUT when min > 0 and nothing came in time. */
int emm_reap(struct emm_slot *sl, unsigned min, int timeout_ms)
{
	struct emm_source *src = NULL;
	struct emm_done d[EMM_DEPTH];
	int n;

	if (sl->poisoned)
		return -ETIMEDOUT;
	if (!sl->ninfl)
		return 0;
	src = (struct emm_source *)((char *)(sl - sl->idx) - offsetof(struct emm_source, slot));
	n = src->ops->wait(sl->chan, d, min, EMM_DEPTH, min ? timeout_ms : 0);
	if (n < 0)
		return n;
	if (n == 0 && min) {
		emm_slot_poison(sl);
		return -ETIMEDOUT;
	}
	for (int i = 0; i < n; i++) {
		struct emm_infl *e = &sl->infl[d[i].tag];
		struct emm_unit *u = e->u;

		sl->ninfl--;
		if (e->write) {
			e->done = 1;
			e->result = d[i].result;
			continue; /* the writer frees its entry */
		}
		if (!d[i].result) {
			/* the first unit of each stream top-up (its trip) waits in
			 * staging until touched, so that the touch is a fault that
			 * feeds the stream and tops its window up; the rest of a
			 * top-up, a dense group's units and a demand fetch go in at
			 * once. Staging every stream unit made each one a fault of
			 * its own: eight threads sorting took 92-100k messages for
			 * 12k fetches, 47-49k with trips; staging a group cost a
			 * fault per unit, which is what the group was to save (the
			 * density score counts faults two groups apart as near, so
			 * the next group's fault keeps it up instead) */
			uint64_t ul = emm_span_ulen(u->m, (size_t)(u - u->m->u), emm_infl_nu(e));
			bool stage;

			/* staged data is out of the policy lists: it may hold at most
			 * half of T's share, or T is left with only units that were
			 * installed a moment ago and evicts them before their use */
			emm_lock();
			stage = e->trip && emm_g.staged + ul <= emm_tmin() / 2;
			if (stage)
				emm_g.staged += ul;
			emm_unlock();
			if (stage) {
				e->ready = 1;
				sl->nready++;
			} else {
				emm_infl_install(sl, (int)d[i].tag);
			}
			continue;
		}
		e->u = NULL;
		{
			size_t at = (size_t)(u - u->m->u);
			unsigned nu = emm_infl_nu(e);

			emm_lock();
			emm_g.resident -= emm_span_ulen(u->m, at, nu);
			emm_unlock();
			/* a failed prefetch is retried by the demand fault; a failed
			 * demand fetch fails the access */
			if (!e->prefetch)
				emm_log(u->m->what,
					d[i].result == -ETIMEDOUT
						? "node did not answer within the timeout"
						: "fetch failed",
					(uintptr_t)emm_uaddr(u->m, at), d[i].result);
			for (unsigned k = 0; k < nu; k++)
				atomic_store(&u[k].st, e->prefetch ? EMM_EMPTY : EMM_FAILED);
		}
	}
	emm_flush_ready(sl, 16);
	return n;
}

/* Writes units back through a held slot and waits; the units are BUSY or
 * SYNCING and write-protected, so the snapshot cannot miss a store. On the
 * shim's blocks, units that follow each other in us and in their mapping
 * go out as one write (up to EMM_SPAN_BYTES), so that small units cost
 * write-back no more operations than the large ones they replace. */
int emm_write_units(struct emm_slot *sl, struct emm_unit **us, unsigned n, int *res)
{
	struct emm_source *src =
		(struct emm_source *)((char *)(sl - sl->idx) - offsetof(struct emm_source, slot));
	int ent[EMM_DEPTH];
	unsigned first[EMM_DEPTH], cnt[EMM_DEPTH];
	unsigned done = 0;
	int err = 0;

	while (done < n) {
		struct emm_io io[EMM_DEPTH];
		unsigned k = 0, at = done, i;

		while (at < n) {
			struct emm_unit *u = us[at];
			struct emm_mapping *m = u->m;
			size_t idx = (size_t)(u - m->u);
			uint64_t off = (uint64_t)idx << m->shift;
			unsigned maxspan = (m->flags & EM_MAP_SCRATCH)
						   ? (unsigned)(EMM_SPAN_BYTES >> m->shift)
						   : 1;

			if (k && us[at - 1]->m == m && us[at - 1] + 1 == u &&
			    cnt[k - 1] < maxspan) {
				/* the next unit of the previous write: one write */
				sl->infl[ent[k - 1]].nu = (uint8_t)(cnt[k - 1] + 1);
				io[k - 1].len += emm_backed(m, idx);
				cnt[k - 1]++;
				u->written = 1;
				at++;
				continue;
			}
			int e = emm_infl_alloc(sl);

			if (e < 0)
				break;
			sl->infl[e] = (struct emm_infl){ .u = u, .write = 1 };
			ent[k] = e;
			first[k] = at;
			cnt[k] = 1;
			u->written = 1;
			io[k] = (struct emm_io){
				.write = 1,
				.rctx = m->rctx,
				.off = m->roff + off,
				.buf = emm_uaddr(m, idx),
				.len = emm_backed(m, idx),
				.tag = (uint64_t)e,
			};
			k++;
			at++;
		}
		if (!k) {
			/* every entry holds a prefetch: let some land, or install
			 * landed ones; entries taken by a batch being built (not
			 * posted yet) cannot be waited for, so give up then */
			int r = sl->ninfl ? emm_reap(sl, 1, us[done]->m->timeout_ms) : 0;

			if (r < 0)
				return r;
			if (!r && sl->nready) {
				emm_flush_ready(sl, EMM_DEPTH);
				continue;
			}
			if (!r) {
				for (unsigned x = done; x < n; x++)
					res[x] = -EAGAIN;
				return -EAGAIN;
			}
			continue;
		}
		/* the backend reads the pages now: stores to them are ordered
		 * before it by the write-protect ioctl, which TSan cannot see */
		EM_UNOWNED_BEGIN();
		int posted = src->ops->submit(sl->chan, io, k);
		EM_UNOWNED_END();

		if (posted < 0)
			posted = 0;
		for (i = (unsigned)posted; i < k; i++) {
			sl->infl[ent[i]].u = NULL;
			for (unsigned x = 0; x < cnt[i]; x++)
				res[first[i] + x] = -EAGAIN;
		}
		sl->ninfl += (unsigned)posted;
		for (i = 0; i < (unsigned)posted; i++) {
			struct emm_infl *e = &sl->infl[ent[i]];

			while (!e->done) {
				int r = emm_reap(sl, 1, us[first[i]]->m->timeout_ms);

				if (r < 0 && !e->done) {
					e->done = 1;
					e->result = r;
				}
			}
			for (unsigned x = 0; x < cnt[i]; x++)
				res[first[i] + x] = e->result;
			if (e->result)
				err = e->result;
			else
				atomic_fetch_add(&us[first[i]]->m->written, io[i].len);
			e->u = NULL;
		}
		done = at;
	}
	return err;
}

int emm_source_get(const struct emm_backend_ops *ops, void *bctx, struct emm_source **out)
{
	struct emm_source *s;
	int err = 0;

	pthread_mutex_lock(&emm_g.mu);
	for (s = emm_g.sources; s; s = s->next)
		if (s->ops == ops && s->bctx == bctx)
			break;
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s) {
			err = -ENOMEM;
			goto out;
		}
		s->ops = ops;
		s->bctx = bctx;
		for (int i = 0; i < EMM_SLOTS && !err; i++) {
			struct emm_slot *sl = &s->slot[i];

			sl->idx = i;
			sl->staging = mmap(NULL, EMM_DEPTH * EMM_CELL, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (sl->staging == MAP_FAILED) {
				sl->staging = NULL;
				err = -ENOMEM;
				break;
			}
			err = ops->chan_open(bctx, &sl->chan);
		}
		if (err) {
			for (int i = 0; i < EMM_SLOTS; i++) {
				if (s->slot[i].chan)
					ops->chan_close(s->slot[i].chan);
				if (s->slot[i].staging)
					munmap(s->slot[i].staging, EMM_DEPTH * EMM_CELL);
			}
			free(s);
			goto out;
		}
		s->next = emm_g.sources;
		emm_g.sources = s;
	}
	*out = s;
out:
	pthread_mutex_unlock(&emm_g.mu);
	return err;
}
