/*
 * test_queue_fd.c - waiting for completions from an event loop: the queue's
 * descriptor under poll(2), beside a pipe the loop also watches. It must
 * wake for replies from every node of a striped region, for completions
 * the library made without the network (a refused op), stay quiet when
 * nothing is pending, and never leave the loop asleep with work undone
 * (every poll below has a timeout that fails the test).
 */
#include <poll.h>

#include "harness.h"

#define DEPTH 32
#define OPS 600
#define UNIT 4096

static int readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int r = poll(&p, 1, ms);

	CHECK(r >= 0);
	return r == 1 && (p.revents & POLLIN);
}

int main(void)
{
	const char *sec = t_secret("secret", T_SECRET);
	static uint8_t data[OPS][UNIT], back[OPS][UNIT];
	struct em_region_opts ro = { .size = sizeof(ro), .chunk_size = 64 << 10 };
	struct em_completion c[DEPTH];
	struct t_node n[2];
	em_pool *pool;
	em_region *r;
	em_queue *q;
	int fd, pipefd[2];
	unsigned next = 0, done = 0, wakeups = 0;

	atexit(t_cleanup);
	t_node_start(&n[0], "8M", sec, NULL);
	t_node_start(&n[1], "8M", sec, NULL);
	pool = t_connect_ok(n, 2, sec);
	/* larger than either node: striped, so replies come on two sockets */
	CHECK_RC(em_region_create(pool, NULL, 10u << 20, &ro, &r), 0);
	CHECK_RC(em_queue_create(pool, DEPTH, &q), 0);
	fd = em_queue_fd(q);
	CHECK(fd >= 0);
	CHECK_RC(em_queue_fd(q), fd);
	CHECK(!readable(fd, 0));

	/* a refused op completes inside the library: no socket will tell */
	{
		struct em_op bad = { .opcode = EM_OP_READ,
				     .region = r,
				     .offset = 11u << 20,
				     .buf = back[0],
				     .len = 8,
				     .user_data = 7 };
		CHECK_RC(em_submit(q, &bad, 1), 1);
		CHECK(readable(fd, 5000));
		CHECK_RC(em_poll(q, c, DEPTH), 1);
		CHECK(c[0].user_data == 7 && c[0].result == -ERANGE);
		CHECK(!readable(fd, 0));
	}

	/* an event loop: writes then reads, keeping the queue full, sleeping
	 * in poll on the queue and a pipe nobody writes to */
	CHECK(pipe(pipefd) == 0);
	for (unsigned i = 0; i < OPS; i++)
		for (unsigned k = 0; k < UNIT; k++)
			data[i][k] = (uint8_t)(i * 31 + k);
	while (done < 2 * OPS) {
		struct pollfd pf[2] = { { .fd = pipefd[0], .events = POLLIN },
					{ .fd = fd, .events = POLLIN } };
		struct em_op ops[DEPTH];
		unsigned k = 0;
		int m;

		while (next < 2 * OPS && k < DEPTH - (unsigned)em_queue_inflight(q)) {
			unsigned i = next % OPS;
			/* reads start only when every write has completed */
			if (next == OPS && done < OPS)
				break;
			ops[k++] = (struct em_op){ .opcode = next < OPS ? EM_OP_WRITE : EM_OP_READ,
						   .region = r,
						   .offset = (uint64_t)i * (10u << 20) / OPS /
							     UNIT * UNIT,
						   .buf = next < OPS ? data[i] : back[i],
						   .len = UNIT,
						   .user_data = next };
			next++;
		}
		if (k) {
			m = em_submit(q, ops, k);
			CHECK_RC(m, (int)k);
		}
		CHECK(poll(pf, 2, 10000) > 0); /* a timeout here: the fd never woke */
		CHECK(!pf[0].revents);
		if (!pf[1].revents)
			continue;
		wakeups++;
		m = em_poll(q, c, DEPTH);
		CHECK(m >= 0);
		for (int j = 0; j < m; j++)
			CHECK_RC(c[j].result, 0);
		done += (unsigned)m;
	}
	CHECK_RC(em_queue_inflight(q), 0);
	CHECK(!readable(fd, 0));
	for (unsigned i = 0; i < OPS; i++)
		CHECK(!memcmp(data[i], back[i], UNIT));
	fprintf(stderr, "%u ops in %u wakeups\n", 2 * OPS, wakeups);

	close(pipefd[0]);
	close(pipefd[1]);
	em_queue_destroy(q);
	em_region_close(r);
	em_pool_close(pool);
	CHECK_RC(t_node_stop(&n[0], SIGTERM), 0);
	CHECK_RC(t_node_stop(&n[1], SIGTERM), 0);
	return 0;
}
