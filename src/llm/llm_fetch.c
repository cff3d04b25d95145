/*
 * A file-backed llm_fetcher: worker threads pread() requested ranges of the
 * checkpoint into caller buffers while the engine computes.
 *
 * This is the disk twin of the pool fetcher (em_submit/em_wait on a region
 * holding the same bytes): the streaming source is written against the ops
 * table only, so it is exercised today against files and unchanged against
 * the pool.  Requests live in a fixed table of slots (no allocation per
 * request) and are served first-in first-out; the streaming source never has
 * more than a layer plus top-k experts in flight, far below the slot count.
 */
#include "llm/llm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LLM_FETCH_SLOTS 256
#define LLM_FETCH_MAX_THREADS 8

enum { LLM_REQ_FREE, LLM_REQ_QUEUED, LLM_REQ_RUNNING, LLM_REQ_DONE };

struct llm_req {
	uint64_t tag, off;
	void *dst;
	size_t len;
	int state, rc;
	struct llm_req *next;
};

struct llm_ffetch {
	int fd;
	pthread_mutex_t mu;
	pthread_cond_t cv_work, cv_done;
	struct llm_req *head, *tail;
	struct llm_req reqs[LLM_FETCH_SLOTS];
	int stop, nth;
	pthread_t th[LLM_FETCH_MAX_THREADS];
};

static int llm_pread_all(int fd, void *dst, size_t len, uint64_t off)
{
	char *p = dst;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO; /* the file shrank under us */
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static void *llm_ffetch_worker(void *arg)
{
	struct llm_ffetch *f = arg;

	pthread_mutex_lock(&f->mu);
	for (;;) {
		struct llm_req *r;
		int rc;

		while (!f->head && !f->stop)
			pthread_cond_wait(&f->cv_work, &f->mu);
		if (f->stop)
			break;
		r = f->head;
		f->head = r->next;
		if (!f->head)
			f->tail = NULL;
		r->state = LLM_REQ_RUNNING;
		pthread_mutex_unlock(&f->mu);
		rc = llm_pread_all(f->fd, r->dst, r->len, r->off);
		pthread_mutex_lock(&f->mu);
		r->rc = rc;
		r->state = LLM_REQ_DONE;
		pthread_cond_broadcast(&f->cv_done);
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

static int llm_ffetch_submit(void *ctx, uint64_t off, void *dst, size_t len, uint64_t tag)
{
	struct llm_ffetch *f = ctx;
	struct llm_req *r = NULL;

	pthread_mutex_lock(&f->mu);
	for (int i = 0; i < LLM_FETCH_SLOTS; i++) {
		if (f->reqs[i].state == LLM_REQ_FREE) {
			r = &f->reqs[i];
			break;
		}
	}
	if (!r) {
		pthread_mutex_unlock(&f->mu);
		return -EBUSY;
	}
	*r = (struct llm_req){
		.tag = tag, .off = off, .dst = dst, .len = len, .state = LLM_REQ_QUEUED
	};
	if (f->tail)
		f->tail->next = r;
	else
		f->head = r;
	f->tail = r;
	pthread_cond_signal(&f->cv_work);
	pthread_mutex_unlock(&f->mu);
	return 0;
}

static int llm_ffetch_wait(void *ctx, uint64_t tag)
{
	struct llm_ffetch *f = ctx;
	struct llm_req *r = NULL;
	int rc;

	pthread_mutex_lock(&f->mu);
	for (int i = 0; i < LLM_FETCH_SLOTS; i++) {
		if (f->reqs[i].state != LLM_REQ_FREE && f->reqs[i].tag == tag) {
			r = &f->reqs[i];
			break;
		}
	}
	if (!r) {
		pthread_mutex_unlock(&f->mu);
		return -ENOENT;
	}
	while (r->state != LLM_REQ_DONE)
		pthread_cond_wait(&f->cv_done, &f->mu);
	rc = r->rc;
	r->state = LLM_REQ_FREE;
	pthread_mutex_unlock(&f->mu);
	return rc;
}

static void llm_ffetch_close(void *ctx)
{
	struct llm_ffetch *f = ctx;

	/* Let queued requests drain first: their buffers are about to be freed
	 * by the caller, and a worker must not be writing into them then. */
	pthread_mutex_lock(&f->mu);
	for (;;) {
		int busy = 0;

		for (int i = 0; i < LLM_FETCH_SLOTS; i++)
			busy |= f->reqs[i].state == LLM_REQ_QUEUED ||
				f->reqs[i].state == LLM_REQ_RUNNING;
		if (!busy)
			break;
		pthread_cond_wait(&f->cv_done, &f->mu);
	}
	f->stop = 1;
	pthread_cond_broadcast(&f->cv_work);
	pthread_mutex_unlock(&f->mu);
	for (int i = 0; i < f->nth; i++)
		pthread_join(f->th[i], NULL);
	pthread_mutex_destroy(&f->mu);
	pthread_cond_destroy(&f->cv_work);
	pthread_cond_destroy(&f->cv_done);
	close(f->fd);
	free(f);
}

static const struct llm_fetcher_ops llm_ffetch_ops = {
	.submit = llm_ffetch_submit,
	.wait = llm_ffetch_wait,
	.close = llm_ffetch_close,
};

int llm_fetcher_file_open(const char *path, int nthreads, struct llm_fetcher *out)
{
	struct llm_ffetch *f;
	struct stat sb;
	int rc;

	if (nthreads < 1 || nthreads > LLM_FETCH_MAX_THREADS)
		return -EINVAL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0) {
		rc = -errno;
		free(f);
		return rc;
	}
	rc = fstat(f->fd, &sb) < 0 ? -errno : S_ISREG(sb.st_mode) ? 0 : -EINVAL;
	if (rc) {
		close(f->fd);
		free(f);
		return rc;
	}
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv_work, NULL);
	pthread_cond_init(&f->cv_done, NULL);
	for (int i = 0; i < nthreads; i++) {
		rc = pthread_create(&f->th[i], NULL, llm_ffetch_worker, f);
		if (rc) {
			llm_ffetch_close(f);
			return -rc;
		}
		f->nth++;
	}
	out->ops = &llm_ffetch_ops;
	out->ctx = f;
	out->size = (uint64_t)sb.st_size;
	return 0;
}
