/*
 * util.h - small helpers shared by the library, the memory node and the tools:
 * logging, time, size and address parsing, full-length socket I/O, and a
 * latency histogram. Internal; never installed.
 */
#ifndef EM_UTIL_H
#define EM_UTIL_H

#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Memory whose ordering this program does not own: region bytes on a node
 * (clients order their own accesses to them, as with RDMA) and mapped pages
 * the paging engine writes back (ordered by a write-protect ioctl).
 * ThreadSanitizer is told not to track the accesses between the two; in
 * other builds they are nothing. Never around locks or the engine's own
 * bookkeeping. */
#if defined(__SANITIZE_THREAD__)
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
#define EM_UNOWNED_BEGIN() __tsan_ignore_thread_begin()
#define EM_UNOWNED_END() __tsan_ignore_thread_end()
#else
#define EM_UNOWNED_BEGIN() ((void)0)
#define EM_UNOWNED_END() ((void)0)
#endif

#define EM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define EM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define EM_MAX(a, b) ((a) > (b) ? (a) : (b))

/* Logging: one line per event, to stderr, with a timestamp. The library is
 * silent unless ETHERMEM_DEBUG is set; the daemon logs at INFO. */
enum em_log_level { EM_LOG_ERR, EM_LOG_WARN, EM_LOG_INFO, EM_LOG_DEBUG };
extern int em_log_threshold;
void em_log(enum em_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline uint64_t em_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* "tcp://host:port" or "host:port" -> host (bracketless) and port. */
int em_parse_addr(const char *s, char *host, size_t hostlen, uint16_t *port);

/* Reads a whole small file (a secret, a config) into buf; returns bytes. */
int em_read_small_file(const char *path, void *buf, size_t cap);

/* Blocking send/recv of exactly len bytes; 0 or -errno (-ECONNRESET on EOF). */
int em_send_all(int fd, const void *buf, size_t len);
int em_recv_all(int fd, void *buf, size_t len);
/* Spin-then-sleep: the one waiting rule of every data path loop (node,
 * client, benchmark baseline, OmniXtend channel, LLM weight fetch). A reply
 * to a small request arrives within microseconds, sooner than a sleeping
 * thread wakes on these machines, so a waiter first polls for up to
 * budget_ns and only then sleeps. The first tenth of the budget is a pure
 * spin; after it each failed try yields, because on a 2-core machine the
 * peer we wait for may need this very CPU (an idle machine returns from the
 * yield at once).
 *
 * On two shared cores every cycle spun is taken from someone, so the spin
 * backs off to plain sleeping quickly when it does not pay: a yield that
 * came back late (another thread wanted the core and ran) leaves one more
 * try and then sleeps, and each spin in a row that found nothing makes the
 * next waits sleep at once, 1, 3, 7 ... up to EM_SPIN_SKIP_MAX of them, until
 * a spin finds its work again. Header-only so that the OmniXtend library,
 * which links nothing of ours, uses the same code. Budgets come from the
 * settings table. Use: em_spin_begin when a wait starts (or traffic was
 * seen), then after each try that found nothing em_spin_again, which says
 * whether to try again or to sleep; em_spin_end when the wait is over. */
struct em_spin {
	uint64_t budget_ns; /* 0: never spin */
	uint64_t since_ns;  /* when the current wait began */
	uint64_t last_ns;   /* how long the previous wait took */
	unsigned misses;    /* spins in a row that ran out */
	unsigned skip;      /* waits left that sleep without spinning */
	bool spun;          /* the current wait spins and has not run out */
};

/* A yield slower than this ran another thread: a no-op one takes about
 * 1.5 us on these machines, one that switched 15 us and more. */
#define EM_SPIN_BUSY_NS 8000ull
#define EM_SPIN_SKIP_MAX 63u

/* Starts a wait at now. Returns whether spinning is worth it: a budget is
 * set, the last spins did not run out in a row (see above), and the
 * previous wait was under twice the budget. Loops that only spin while
 * traffic flows (and sleep whenever idle) may ignore the answer;
 * request/reply loops use it so that an idle peer, or a machine too busy
 * for the spinner to help, costs one failed spin and then plain sleeps. */
static inline bool em_spin_begin(struct em_spin *s, uint64_t now)
{
	if (s->spun) /* the previous spin found its work */
		s->misses = 0;
	s->since_ns = now;
	s->spun = false;
	if (!s->budget_ns)
		return false;
	if (s->skip) {
		s->skip--;
		return false;
	}
	s->spun = s->last_ns < 2 * s->budget_ns;
	return s->spun;
}

/* After a try that found nothing: true to try again (yielding once past
 * the first tenth of the budget), false when the budget is spent. */
static inline bool em_spin_again(struct em_spin *s, uint64_t now)
{
	uint64_t d = now - s->since_ns;

	if (d >= s->budget_ns) {
		if (s->spun) {
			unsigned m = s->misses < 6 ? s->misses : 6;
			s->skip = EM_SPIN_SKIP_MAX < (2u << m) - 1 ? EM_SPIN_SKIP_MAX
								   : (2u << m) - 1;
			s->misses++;
			s->spun = false;
		}
		return false;
	}
	if (d > s->budget_ns / 10) {
		sched_yield();
		if (em_now_ns() - now > EM_SPIN_BUSY_NS) /* one more try, then sleep */
			s->since_ns = now - s->budget_ns;
	}
	return true;
}

/* The wait that began at em_spin_begin ended at now. */
static inline void em_spin_end(struct em_spin *s, uint64_t now)
{
	s->last_ns = now - s->since_ns;
}

/* Whether spinning may be tried at all. A spin is free only on a core
 * nobody else wants: where the node shares its machine with the programs
 * (the servers next door, or one machine in a test), the spins that find
 * their request still take the cycles those programs were waiting for
 * (GNU sort under `ethermem run` with a node on the same two cores: 21-23
 * s with the node spinning, 17.7-18.8 s without; BENCHMARKS.md). Linux
 * says whether tasks wait for a CPU: /proc/pressure/cpu's "some" total, the
 * microseconds during which at least one runnable task had none. Fed a
 * sample of that total about every EM_SPIN_GATE_NS, the gate shuts when
 * the stall exceeds EM_SPIN_GATE_PERMILLE of the time since the last
 * sample. A stall seen with the gate open may be our own spin's doing: the
 * gate shuts for a hold that starts at one sample period and doubles each
 * time (up to EM_SPIN_HOLD_MAX_NS), and each quiet sample with the gate
 * open halves it again. A stall seen with it shut is others': it keeps the
 * gate shut one more period, no longer. Without the file (no PSI) the
 * gate stays open. */
struct em_spin_gate {
	uint64_t last_ns, last_stall_us; /* the previous sample */
	uint64_t shut_until_ns;          /* no spinning before this */
	uint64_t hold_ns;                /* how long the next shut lasts */
	uint64_t shut_ns;                /* time shut, in all (statistics) */
	bool started, shut;              /* shut: the last answer was no */
};

#define EM_SPIN_GATE_NS 100000000ull      /* 100 ms between samples */
#define EM_SPIN_GATE_PERMILLE 250ull      /* a stall over a quarter shuts it */
#define EM_SPIN_HOLD_MAX_NS 6400000000ull /* 64 samples */

/* One sample at now of the cumulative stall; returns whether spinning may
 * be tried until the next sample. */
static inline bool em_spin_gate_update(struct em_spin_gate *g, uint64_t now, uint64_t stall_us)
{
	if (g->started && g->shut && now > g->last_ns)
		g->shut_ns += now - g->last_ns;
	/* a sample long after the last (a thread that sampled nothing for a
	 * while) speaks of the past: it only starts a new interval */
	if (g->started && now > g->last_ns && now - g->last_ns <= 4 * EM_SPIN_GATE_NS) {
		uint64_t dt_us = (now - g->last_ns) / 1000;
		uint64_t st = stall_us >= g->last_stall_us ? stall_us - g->last_stall_us : 0;

		if (st * 1000 > dt_us * EM_SPIN_GATE_PERMILLE) {
			/* with the gate open the stall may be ours: shut it for
			 * the hold, and double the hold for the next time; with
			 * it shut the stall is others', and keeps it shut */
			uint64_t h = g->hold_ns > EM_SPIN_GATE_NS ? g->hold_ns : EM_SPIN_GATE_NS;

			if (!g->shut) {
				g->shut_until_ns = now + h;
				g->hold_ns = 2 * h < EM_SPIN_HOLD_MAX_NS ? 2 * h
									 : EM_SPIN_HOLD_MAX_NS;
			} else if (g->shut_until_ns < now + EM_SPIN_GATE_NS) {
				g->shut_until_ns = now + EM_SPIN_GATE_NS;
			}
		} else if (!g->shut) {
			g->hold_ns /= 2; /* a quiet sample with the gate open */
		}
	}
	g->started = true;
	g->last_ns = now;
	g->last_stall_us = stall_us;
	g->shut = now < g->shut_until_ns;
	return !g->shut;
}

/* The "some" total of a pressure file (/proc/pressure/cpu) open on fd,
 * read from its start: 0 and *stall_us, or -errno (-EINVAL: no such line). */
int em_pressure_total(int fd, uint64_t *stall_us);

/* em_recv_all, spinning up to poll_us for the first bytes before it
 * sleeps, as the data path does: the benchmark's baseline must wait the
 * same way to be a fair yardstick. */
int em_recv_all_poll(int fd, void *buf, size_t len, int poll_us);
/* One receive under the spin s (begun by the caller): tries recv without
 * blocking until em_spin_again says stop. Returns recv's result (bytes; 0
 * at EOF), -errno on an error, or -EAGAIN when nothing came within the
 * spin. */
ssize_t em_recv_spin(int fd, void *buf, size_t len, struct em_spin *s);

/* Latency histogram: log-linear buckets (16 per power of two), lock-free
 * updates so many threads can record into one. Accurate to ~6%. */
#define EM_HIST_SUB 16
#define EM_HIST_BUCKETS (64 * EM_HIST_SUB)
struct em_hist {
	uint64_t count[EM_HIST_BUCKETS];
};
void em_hist_add(struct em_hist *h, uint64_t v);
uint64_t em_hist_total(const struct em_hist *h);
/* Value at quantile q in [0,1]; 0 when empty. */
uint64_t em_hist_quantile(const struct em_hist *h, double q);
/* The largest value that lands in bucket b (for cumulative exports). */
uint64_t em_hist_bucket_max(unsigned b);

/* Config files: "key = value" lines, '#' comments. Calls cb per pair;
 * stops and returns cb's non-zero result. */
int em_config_parse(const char *path,
		    int (*cb)(void *arg, const char *key, const char *val, int line), void *arg);

#endif
