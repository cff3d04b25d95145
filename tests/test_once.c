/*
 * test_once.c - writes and atomics are applied at most once, however often
 * they are sent: a fetch-and-add and a write that time out while the node
 * is frozen (SIGSTOP) are resent by the library once it resumes and are
 * applied exactly once; a write and an atomic sent again with the same tag,
 * on another connection of the session, are answered from the node's memory
 * and not applied again - until EM_ONCE_SLOTS newer ones have pushed them
 * out; a node that is gone is EM_ENONODE to the caller; and the session of
 * a client that went away without closing its pool, kept for it a while,
 * ends on time even when nobody connects again.
 *
 * Parts: freeze, replay, gone, linger (one ctest name each).
 */
#include <dirent.h>
#include <pthread.h>

#include "harness.h"
#include "lib/internal.h"

#define TIMEOUT_MS 400

static em_pool *connect_short(struct t_node *n, const char *sec)
{
	char url[128];
	struct em_pool_opts o = { .size = sizeof(o), .secret_file = sec, .timeout_ms = TIMEOUT_MS };
	em_pool *p = NULL;

	snprintf(url, sizeof(url), "%s", n->url);
	o.nodes = url;
	CHECK_RC(em_pool_connect(&p, &o), 0);
	return p;
}

struct call {
	em_region *r;
	int rc;
	uint64_t old;
};

static void *fadd(void *arg)
{
	struct call *c = arg;

	c->rc = em_atomic(c->r, 0, EM_ATOMIC_FADD, 1, 0, &c->old);
	return NULL;
}

static void *write7(void *arg)
{
	struct call *c = arg;
	uint64_t v = 7;

	c->rc = em_write(c->r, 8, &v, sizeof(v));
	return NULL;
}

/* True once every thread of the process is stopped: kill() returns before
 * a SIGSTOP has reached them all, and a request sent in between would be
 * served at once. */
static int all_stopped(pid_t pid)
{
	char path[64], buf[512];
	struct dirent *d;
	DIR *dir;
	int stopped = 1;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	if (!(dir = opendir(path)))
		return 0;
	while (stopped && (d = readdir(dir))) {
		char *p;
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(buf, sizeof(buf), "%s/%s/stat", path, d->d_name);
		if (!(f = fopen(buf, "r")))
			continue;
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = 0;
		fclose(f);
		p = strrchr(buf, ')');
		stopped = p && p[1] == ' ' && p[2] == 'T';
	}
	closedir(dir);
	return stopped;
}

/* Runs fn on another thread while the node is frozen for three request
 * timeouts: the request is sent, times out, and is resent after SIGCONT. */
static void frozen_call(struct t_node *n, void *(*fn)(void *), struct call *c)
{
	pthread_t t;

	CHECK(kill(n->pid, SIGSTOP) == 0);
	CHECK(T_WAIT_FOR(5000, all_stopped(n->pid)));
	CHECK(pthread_create(&t, NULL, fn, c) == 0);
	t_sleep_ms(3 * TIMEOUT_MS);
	CHECK(kill(n->pid, SIGCONT) == 0);
	pthread_join(t, NULL);
}

static int part_freeze(const char *sec)
{
	struct t_node n;
	em_pool *p;
	em_region *r;
	struct call c = { 0 };
	uint64_t v[2] = { 0, 0 };

	t_node_start(&n, "16M", sec, "--verbose");
	p = connect_short(&n, sec);
	CHECK_RC(em_region_create(p, NULL, 4096, NULL, &r), 0);
	CHECK_RC(em_write(r, 0, v, sizeof(v)), 0);

	c.r = r;
	frozen_call(&n, fadd, &c);
	CHECK_RC(c.rc, 0);
	CHECK(c.old == 0);
	CHECK_RC(em_read(r, 0, v, 8), 0);
	fprintf(stderr, "counter after one fetch-and-add across the freeze: %llu\n",
		(unsigned long long)v[0]);
	CHECK(v[0] == 1);
	/* the original and the resend both reached the node: one of them was
	 * answered from its memory */
	CHECK(t_log_has(&n, "answered from memory: atomic"));

	/* a write resent the same way, then an atomic on the same word: a
	 * second application of the write arriving late would undo the add */
	frozen_call(&n, write7, &c);
	CHECK_RC(c.rc, 0);
	CHECK_RC(em_atomic(r, 8, EM_ATOMIC_FADD, 5, 0, &v[0]), 0);
	CHECK(v[0] == 7);
	t_sleep_ms(100);
	CHECK_RC(em_read(r, 8, v, 8), 0);
	CHECK(v[0] == 12);
	CHECK(t_log_has(&n, "answered from memory: write"));

	em_region_close(r);
	em_pool_close(p);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	return 0;
}

/* Sends through q with the tag `tag` (as a resend of that request would). */
static int with_tag(em_queue *q, uint64_t tag, struct em_op *op, uint64_t *value)
{
	struct em_completion c;
	uint64_t keep = q->next_tag;
	int rc;

	q->next_tag = tag - 1;
	rc = em_submit(q, op, 1);
	q->next_tag = keep;
	if (rc != 1)
		return rc < 0 ? rc : -EIO;
	CHECK_RC(em_wait(q, &c, 1, 1, -1), 1);
	*value = c.value;
	return c.result;
}

static int part_replay(const char *sec)
{
	struct t_node n;
	em_pool *p;
	em_region *r;
	em_queue *q;
	uint64_t v = 100, old, wtag, atag, got;

	t_node_start(&n, "16M", sec, NULL);
	p = t_connect_ok(&n, 1, sec);
	CHECK_RC(em_region_create(p, NULL, 4096, NULL, &r), 0);
	/* another connection of the same session, with tags of its own */
	CHECK_RC(em_queue_create(p, 4, &q), 0);
	CHECK(q->next_tag >> 40 != p->dq->next_tag >> 40);

	wtag = p->dq->next_tag + 1;
	CHECK_RC(em_write(r, 0, &v, 8), 0);
	atag = p->dq->next_tag + 1;
	CHECK_RC(em_atomic(r, 0, EM_ATOMIC_FADD, 1, 0, &old), 0);
	CHECK(old == 100);

	/* the write again, same tag, other connection: not applied */
	{
		uint64_t w = 100;
		struct em_op op = { .opcode = EM_OP_WRITE, .region = r, .buf = &w, .len = 8 };
		CHECK_RC(with_tag(q, wtag, &op, &got), 0);
	}
	CHECK_RC(em_read(r, 0, &v, 8), 0);
	CHECK(v == 101);
	/* the atomic again: its first result, and no second add */
	{
		struct em_op op = { .opcode = EM_OP_ATOMIC,
				    .atomic_op = EM_ATOMIC_FADD,
				    .region = r,
				    .operand = 1 };
		CHECK_RC(with_tag(q, atag, &op, &got), 0);
		CHECK(got == 100);
	}
	CHECK_RC(em_read(r, 0, &v, 8), 0);
	CHECK(v == 101);

	/* beyond the node's memory: EM_ONCE_SLOTS newer writes and atomics
	 * push the first write out, and sent again it is applied again */
	for (int i = 0; i < EM_ONCE_SLOTS; i++)
		CHECK_RC(em_atomic(r, 8, EM_ATOMIC_FADD, 1, 0, &old), 0);
	{
		uint64_t w = 100;
		struct em_op op = { .opcode = EM_OP_WRITE, .region = r, .buf = &w, .len = 8 };
		CHECK_RC(with_tag(q, wtag, &op, &got), 0);
	}
	CHECK_RC(em_read(r, 0, &v, 8), 0);
	CHECK(v == 100);

	em_queue_destroy(q);
	em_region_close(r);
	em_pool_close(p);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	return 0;
}

static int part_gone(const char *sec)
{
	struct t_node n;
	struct em_node_status st = { .size = sizeof(st) };
	em_pool *p;
	em_region *r;
	uint64_t v = 1;

	t_node_start(&n, "16M", sec, NULL);
	p = connect_short(&n, sec);
	CHECK_RC(em_region_create(p, NULL, 4096, NULL, &r), 0);
	CHECK_RC(em_write(r, 0, &v, 8), 0);
	CHECK(t_node_stop(&n, SIGKILL) == -SIGKILL);
	/* not ECONNRESET or ENOTCONN: the node holding the region is gone */
	CHECK_RC(em_write(r, 0, &v, 8), -EM_ENONODE);
	/* later calls find its connection down and waiting to be dialled
	 * again: they say so (EHOSTDOWN), or that the node is gone */
	{
		int rc = em_read(r, 0, &v, 8);
		CHECK(rc == -EHOSTDOWN || rc == -EM_ENONODE);
		rc = em_atomic(r, 0, EM_ATOMIC_FADD, 1, 0, &v);
		CHECK(rc == -EHOSTDOWN || rc == -EM_ENONODE);
		/* the status lists it as not answering */
		CHECK_RC(em_pool_status(p, &st, 1), 1);
		CHECK(st.capacity == 0);
	}
	em_region_close(r);
	em_pool_close(p);
	return 0;
}

static int regions_now(em_pool *p)
{
	struct em_node_status st = { .size = sizeof(st) };

	CHECK_RC(em_pool_status(p, &st, 1), 1);
	return (int)st.regions;
}

static int part_linger(const char *sec)
{
	struct t_node n;
	em_pool *watch;
	int ready[2], status;
	pid_t child;
	char c;

	t_node_start(&n, "16M", sec, "--session-linger 300");
	watch = t_connect_ok(&n, 1, sec);
	CHECK(pipe(ready) == 0);
	child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		/* a client that exits without em_pool_close: its connections
		 * end with no goodbye, as a crashed one's do */
		em_pool *p = t_connect_ok(&n, 1, sec);
		em_region *r;
		CHECK_RC(em_region_create(p, NULL, 1 << 20, NULL, &r), 0);
		CHECK(write(ready[1], "r", 1) == 1);
		_exit(0);
	}
	CHECK(read(ready[0], &c, 1) == 1);
	CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* nobody connects from here on: the node must time the session itself */
	CHECK(T_WAIT_FOR(10000, regions_now(watch) == 0));
	em_pool_close(watch);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	return 0;
}

int main(int argc, char **argv)
{
	const char *sec = t_secret("secret", T_SECRET);

	atexit(t_cleanup);
	if (argc > 1 && !strcmp(argv[1], "freeze"))
		return part_freeze(sec);
	if (argc > 1 && !strcmp(argv[1], "replay"))
		return part_replay(sec);
	if (argc > 1 && !strcmp(argv[1], "gone"))
		return part_gone(sec);
	if (argc > 1 && !strcmp(argv[1], "linger"))
		return part_linger(sec);
	fprintf(stderr, "usage: %s freeze|replay|gone|linger\n", argv[0]);
	return 1;
}
