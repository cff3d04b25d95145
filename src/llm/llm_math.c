/*
 * The arithmetic the forward pass spends its time in: matrix-vector products
 * over fp32 or int8-quantized weights (optionally split by rows over a few
 * pthreads), RMSNorm and softmax.
 *
 * Every backend must produce bit-identical logits, so the summation order of
 * a dot product is fixed by this source alone: sixteen independent partial
 * sums combined in a fixed tree, whatever the thread count, the row split or
 * the instruction set.  The compiler vectorises the sixteen lanes (AVX2 where
 * the CPU has it, SSE2 otherwise); no fused multiply-add is enabled, so both
 * versions round identically.  Rows are split
 * between threads, never within a row, for the same reason.
 */
#include "llm/llm.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdint.h>

#define LLM_LANES 16
#define LLM_MAX_THREADS 64
/* Below this many multiply-adds a matmul is cheaper than waking a thread
 * (tens of microseconds on these machines). */
#define LLM_PAR_MIN (1 << 18)

static inline __attribute__((always_inline)) void
llm_rows_body(float *out, const float *x, const float *w, int n, int r0, int r1)
{
	for (int i = r0; i < r1; i++) {
		const float *row = w + (size_t)i * (size_t)n;
		float acc[LLM_LANES] = { 0 }, s;
		int j = 0;

		for (; j + LLM_LANES <= n; j += LLM_LANES)
			for (int l = 0; l < LLM_LANES; l++)
				acc[l] += row[j + l] * x[j + l];
		for (int l = 0; l < LLM_LANES / 2; l++)
			acc[l] += acc[l + LLM_LANES / 2];
		for (int l = 0; l < LLM_LANES / 4; l++)
			acc[l] += acc[l + LLM_LANES / 4];
		s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
		for (; j < n; j++)
			s += row[j] * x[j];
		out[i] = s;
	}
}

typedef void llm_rows_t(float *out, const float *x, const float *w, int n, int r0, int r1);

static void llm_rows_base(float *out, const float *x, const float *w, int n, int r0, int r1)
{
	llm_rows_body(out, x, w, n, r0, r1);
}

/* Dispatched by hand rather than with target_clones: an ifunc resolver runs
 * before the sanitizer runtimes initialise and crashes TSan builds. */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) static void llm_rows_avx2(float *out, const float *x,
							  const float *w, int n, int r0, int r1)
{
	llm_rows_body(out, x, w, n, r0, r1);
}
#endif

static llm_rows_t *llm_rows;

/* int8 rows: runq's arithmetic (integer dot per group, scaled by both
 * scales), with the same fixed order for every thread split. */
static void llm_rows_q8(float *out, const int8_t *xq, const float *xs, const int8_t *wq,
			const float *ws, int n, int gs, int r0, int r1)
{
	for (int i = r0; i < r1; i++) {
		const int8_t *row = wq + (size_t)i * (size_t)n;
		const float *rs = ws + (size_t)i * (size_t)(n / gs);
		float val = 0.0f;

		for (int j = 0, g = 0; j < n; j += gs, g++) {
			int32_t iv = 0;

			for (int k = 0; k < gs; k++)
				iv += (int32_t)xq[j + k] * (int32_t)row[j + k];
			val += (float)iv * rs[g] * xs[g];
		}
		out[i] = val;
	}
}

static void llm_rows_pick(void)
{
	if (llm_rows)
		return;
	llm_rows = llm_rows_base;
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		llm_rows = llm_rows_avx2;
#endif
}

static struct {
	int n; /* threads including the caller */
	pthread_t th[LLM_MAX_THREADS];
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	uint64_t gen;
	int pending, stop;
	float *out;
	const float *x, *w;
	int cols, rows;
	const int8_t *xq, *wq; /* set for an int8 job */
	const float *xs, *ws;
	int gs;
} llm_tp = { .n = 1,
	     .mu = PTHREAD_MUTEX_INITIALIZER,
	     .go = PTHREAD_COND_INITIALIZER,
	     .done = PTHREAD_COND_INITIALIZER };

/* Rows [r0, r1) of the job in llm_tp, float or int8. */
static void llm_tp_rows(int r0, int r1)
{
	if (llm_tp.wq)
		llm_rows_q8(llm_tp.out, llm_tp.xq, llm_tp.xs, llm_tp.wq, llm_tp.ws, llm_tp.cols,
			    llm_tp.gs, r0, r1);
	else
		llm_rows(llm_tp.out, llm_tp.x, llm_tp.w, llm_tp.cols, r0, r1);
}

static void *llm_tp_worker(void *arg)
{
	int me = (int)(intptr_t)arg;
	uint64_t seen = 0;

	pthread_mutex_lock(&llm_tp.mu);
	for (;;) {
		int r0, r1;

		while (llm_tp.gen == seen && !llm_tp.stop)
			pthread_cond_wait(&llm_tp.go, &llm_tp.mu);
		if (llm_tp.stop)
			break;
		seen = llm_tp.gen;
		r0 = (int)((int64_t)llm_tp.rows * me / llm_tp.n);
		r1 = (int)((int64_t)llm_tp.rows * (me + 1) / llm_tp.n);
		pthread_mutex_unlock(&llm_tp.mu);
		llm_tp_rows(r0, r1);
		pthread_mutex_lock(&llm_tp.mu);
		if (--llm_tp.pending == 0)
			pthread_cond_signal(&llm_tp.done);
	}
	pthread_mutex_unlock(&llm_tp.mu);
	return NULL;
}

int llm_threads_init(int n)
{
	if (n < 1 || n > LLM_MAX_THREADS)
		return -EINVAL;
	llm_rows_pick();
	if (llm_tp.n > 1)
		return -EBUSY;
	llm_tp.stop = 0;
	for (int i = 1; i < n; i++) {
		int rc = pthread_create(&llm_tp.th[i], NULL, llm_tp_worker, (void *)(intptr_t)i);

		if (rc) {
			llm_threads_fini();
			return -rc;
		}
		llm_tp.n = i + 1;
	}
	return 0;
}

void llm_threads_fini(void)
{
	pthread_mutex_lock(&llm_tp.mu);
	llm_tp.stop = 1;
	pthread_cond_broadcast(&llm_tp.go);
	pthread_mutex_unlock(&llm_tp.mu);
	for (int i = 1; i < llm_tp.n; i++)
		pthread_join(llm_tp.th[i], NULL);
	llm_tp.n = 1;
}

static void llm_tp_join(void)
{
	pthread_mutex_lock(&llm_tp.mu);
	while (llm_tp.pending)
		pthread_cond_wait(&llm_tp.done, &llm_tp.mu);
	pthread_mutex_unlock(&llm_tp.mu);
}

/* Runs the job the caller has put in llm_tp, holding mu (released here):
 * the workers take their shares of the rows, this thread the first. */
static void llm_tp_run(int rows)
{
	llm_tp.rows = rows;
	llm_tp.pending = llm_tp.n - 1;
	llm_tp.gen++;
	pthread_cond_broadcast(&llm_tp.go);
	pthread_mutex_unlock(&llm_tp.mu);
	llm_tp_rows(0, (int)((int64_t)rows / llm_tp.n));
	llm_tp_join();
}

/* out[d] = W[d x n] x[n] */
void llm_matmul(float *out, const float *x, const float *w, int n, int d)
{
	llm_rows_pick();
	if (llm_tp.n == 1 || (int64_t)n * d < LLM_PAR_MIN) {
		llm_rows(out, x, w, n, 0, d);
		return;
	}
	pthread_mutex_lock(&llm_tp.mu);
	llm_tp.out = out;
	llm_tp.x = x;
	llm_tp.w = w;
	llm_tp.wq = NULL;
	llm_tp.cols = n;
	llm_tp_run(d);
}

void llm_matmul_q8(float *out, const int8_t *xq, const float *xs, const void *w, int n, int d,
		   int gs)
{
	const int8_t *wq = w;
	const float *ws = (const float *)(const void *)(wq + (size_t)n * (size_t)d);

	if (llm_tp.n == 1 || (int64_t)n * d < LLM_PAR_MIN) {
		llm_rows_q8(out, xq, xs, wq, ws, n, gs, 0, d);
		return;
	}
	pthread_mutex_lock(&llm_tp.mu);
	llm_tp.out = out;
	llm_tp.xq = xq;
	llm_tp.xs = xs;
	llm_tp.wq = wq;
	llm_tp.ws = ws;
	llm_tp.gs = gs;
	llm_tp.cols = n;
	llm_tp_run(d);
}

void llm_quantize(int8_t *q, float *s, const float *x, int n, int gs)
{
	for (int g = 0; g < n / gs; g++) {
		const float *v = x + (size_t)g * gs;
		float wmax = 0.0f, scale;

		for (int i = 0; i < gs; i++)
			if (fabsf(v[i]) > wmax)
				wmax = fabsf(v[i]);
		scale = wmax / 127.0f;
		s[g] = scale;
		for (int i = 0; i < gs; i++)
			/* An all-zero group has scale 0: store zeros, not NaN. */
			q[(size_t)g * gs + i] = scale > 0.0f ? (int8_t)roundf(v[i] / scale) : 0;
	}
}

void llm_dequant(float *out, const int8_t *q, const float *s, int n, int gs)
{
	for (int i = 0; i < n; i++)
		out[i] = (float)q[i] * s[i / gs];
}

void llm_rmsnorm(float *o, const float *x, const float *w, int n)
{
	float ss = 0.0f;

	for (int j = 0; j < n; j++)
		ss += x[j] * x[j];
	ss /= (float)n;
	ss += 1e-5f;
	ss = 1.0f / sqrtf(ss);
	for (int j = 0; j < n; j++)
		o[j] = w[j] * (ss * x[j]);
}

void llm_softmax(float *x, int n)
{
	float max = x[0], sum = 0.0f;

	for (int i = 1; i < n; i++)
		if (x[i] > max)
			max = x[i];
	for (int i = 0; i < n; i++) {
		x[i] = expf(x[i] - max);
		sum += x[i];
	}
	for (int i = 0; i < n; i++)
		x[i] /= sum;
}
