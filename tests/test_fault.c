/*
 * test_fault.c - the fault-injecting transport on three real nodes: each
 * fault mode reaches the public API as the right error within the request
 * timeout, the other nodes keep serving meanwhile (also inside one batch),
 * the node works again once the fault is lifted, a seeded schedule repeats,
 * and the environment knob and the control call refuse what they cannot do.
 */
#include <stdint.h>

#include "harness.h"
#include "lib/fault.h"

#define TMO 1000   /* the pool's request timeout, ms */
#define SLACK 2000 /* how late past it an error may come on a loaded machine */
#define RSIZE (1u << 20)
#define IO 4096

static struct t_node *nodes; /* main's */
static const char *secret;
static em_region *reg[3]; /* reg[i] lives on node i */

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static em_pool *connect_fault(const char *spec, int *rc)
{
	char list[256];
	struct em_pool_opts o = { .size = sizeof(o), .secret_file = secret, .timeout_ms = TMO };
	em_pool *p = NULL;

	snprintf(list, sizeof(list), "%s,%s,%s", nodes[0].url, nodes[1].url, nodes[2].url);
	o.nodes = list;
	setenv("ETHERMEM_TRANSPORT", "fault", 1);
	if (spec)
		setenv("ETHERMEM_FAULT", spec, 1);
	else
		unsetenv("ETHERMEM_FAULT");
	*rc = em_pool_connect(&p, &o);
	return p;
}

static void fill(uint8_t *b, unsigned node, unsigned gen)
{
	for (unsigned k = 0; k < IO; k++)
		b[k] = (uint8_t)(k * 7 + node * 31 + gen);
}

/* Node i reads back what it holds and takes a new write. */
static void node_works(unsigned i, unsigned gen)
{
	uint8_t want[IO], got[IO];

	fill(want, i, gen);
	CHECK_RC(em_read(reg[i], 0, got, IO), 0);
	CHECK(!memcmp(got, want, IO));
	fill(want, i, gen + 1);
	CHECK_RC(em_write(reg[i], 0, want, IO), 0);
}

static void set(em_pool *p, enum em_fault_mode m, int node, int err, unsigned delay)
{
	struct em_fault f = { .mode = m, .node = node, .err = err, .delay_ms = delay };
	CHECK_RC(em_fault_set(p, &f), 0);
}

/* One read on the victim: its result, and how long it took in *ms. */
static int victim_read(unsigned v, uint64_t *ms)
{
	uint8_t buf[IO];
	uint64_t t0 = now_ms();
	int rc = em_read(reg[v], 0, buf, IO);

	*ms = now_ms() - t0;
	return rc;
}

int main(void)
{
	struct em_node_status st[3] = { { .size = sizeof(st[0]) } };
	unsigned gen[3] = { 0 };
	const unsigned v = 1; /* the node the faults are on */
	uint8_t buf[IO];
	uint64_t ms;
	struct t_node nd[3];
	em_pool *p;
	int rc;

	nodes = nd;
	secret = t_secret("secret", T_SECRET);
	t_node_start(&nodes[0], "64M", secret, NULL);
	t_node_start(&nodes[1], "64M", secret, NULL);
	t_node_start(&nodes[2], "64M", secret, NULL);
	p = connect_fault(NULL, &rc);
	CHECK_RC(rc, 0);

	/* one region per node: placement takes the node with the most free
	 * memory, so find where each went from the nodes' region counts */
	for (int k = 0; k < 3; k++) {
		em_region *r;
		CHECK_RC(em_region_create(p, NULL, RSIZE, NULL, &r), 0);
		CHECK_RC(em_pool_status(p, st, 3), 3);
		for (int i = 0; i < 3; i++)
			if (st[i].regions == 1 && !reg[i]) {
				reg[i] = r;
				break;
			}
	}
	for (int i = 0; i < 3; i++) {
		CHECK(reg[i]);
		fill(buf, (unsigned)i, 0);
		CHECK_RC(em_write(reg[i], 0, buf, IO), 0);
	}
#define OTHERS_WORK()                    \
	do {                             \
		node_works(0, gen[0]++); \
		node_works(2, gen[2]++); \
	} while (0)

	/* fail: at once, with the error asked for */
	set(p, EM_FAULT_FAIL, (int)v, 0, 0);
	CHECK_RC(victim_read(v, &ms), -EIO);
	OTHERS_WORK();
	set(p, EM_FAULT_FAIL, (int)v, -ECONNRESET, 0);
	CHECK_RC(victim_read(v, &ms), -ECONNRESET);
	/* control calls too: status lists the node as not answering */
	CHECK_RC(em_pool_status(p, st, 3), 3);
	CHECK(st[v].capacity == 0 && st[(v + 1) % 3].capacity > 0);

	/* delay shorter than the timeout: right data, late */
	set(p, EM_FAULT_DELAY, (int)v, 0, 150);
	CHECK_RC(victim_read(v, &ms), 0);
	CHECK(ms >= 150);
	OTHERS_WORK();
	/* longer than the timeout: the request times out, never sent */
	set(p, EM_FAULT_DELAY, (int)v, 0, 3 * TMO);
	CHECK_RC(victim_read(v, &ms), -ETIMEDOUT);
	CHECK(ms >= TMO && ms < TMO + SLACK);

	/* drop: never answered, times out; the next part is hit too (all) */
	set(p, EM_FAULT_DROP, (int)v, 0, 0);
	CHECK_RC(victim_read(v, &ms), -ETIMEDOUT);
	CHECK(ms >= TMO && ms < TMO + SLACK);
	OTHERS_WORK();

	/* hang: sticky, every later part of the node times out as well */
	{
		struct em_fault f = { .mode = EM_FAULT_HANG, .node = (int)v, .after = 1 };
		CHECK_RC(em_fault_set(p, &f), 0);
	}
	CHECK_RC(victim_read(v, &ms), 0); /* the one part let through */
	CHECK_RC(victim_read(v, &ms), -ETIMEDOUT);
	CHECK(ms >= TMO && ms < TMO + SLACK);
	CHECK_RC(victim_read(v, &ms), -ETIMEDOUT);
	OTHERS_WORK();

	/* one batch across all three nodes while the victim hangs: the
	 * others complete with their data, the victim with the timeout */
	{
		uint8_t b[3][IO], want[IO];
		struct em_op ops[3];
		struct em_completion c[3];
		em_queue *q;
		int got = 0;

		CHECK_RC(em_queue_create(p, 8, &q), 0);
		for (unsigned i = 0; i < 3; i++)
			ops[i] = (struct em_op){ .opcode = EM_OP_READ,
						 .region = reg[i],
						 .buf = b[i],
						 .len = IO,
						 .user_data = i };
		CHECK_RC(em_submit(q, ops, 3), 3);
		while (got < 3) {
			rc = em_wait(q, c + got, 1, (unsigned)(3 - got), -1);
			CHECK(rc > 0);
			got += rc;
		}
		for (int k = 0; k < 3; k++) {
			unsigned i = (unsigned)c[k].user_data;
			if (i == v) {
				CHECK_RC(c[k].result, -ETIMEDOUT);
				continue;
			}
			CHECK_RC(c[k].result, 0);
			fill(want, i, gen[i]);
			CHECK(!memcmp(b[i], want, IO));
		}
		em_queue_destroy(q);
	}

	/* lifted: the node serves again, its data intact */
	set(p, EM_FAULT_NONE, 0, 0, 0);
	node_works(v, gen[v]++);
	CHECK_RC(em_pool_status(p, st, 3), 3);

	/* a seeded schedule: the same seed hits the same parts, another seed
	 * others; `after` parts pass first */
	{
		char pat[3][41];
		const uint64_t seeds[3] = { 7, 7, 8 };

		for (int s = 0; s < 3; s++) {
			struct em_fault f = { .mode = EM_FAULT_FAIL,
					      .node = (int)v,
					      .after = 5,
					      .percent = 50,
					      .seed = seeds[s] };
			CHECK_RC(em_fault_set(p, &f), 0);
			for (int k = 0; k < 40; k++) {
				rc = victim_read(v, &ms);
				CHECK(rc == 0 || rc == -EIO);
				pat[s][k] = rc ? 'x' : '.';
			}
			pat[s][40] = 0;
			CHECK(!strncmp(pat[s], ".....", 5));
			CHECK(strchr(pat[s] + 5, 'x') && strchr(pat[s] + 5, '.'));
		}
		CHECK(!strcmp(pat[0], pat[1]));
		CHECK(strcmp(pat[0], pat[2]));
		printf("schedule seed 7: %s\n", pat[0]);
	}

	/* by address, in both spellings; unknown nodes are refused */
	{
		struct em_fault f = { .mode = EM_FAULT_FAIL, .node = -1 };
		snprintf(f.addr, sizeof(f.addr), "%s", nodes[2].url);
		CHECK_RC(em_fault_set(p, &f), 0);
		CHECK_RC(em_read(reg[2], 0, buf, IO), -EIO);
		node_works(v, gen[v]++);
		snprintf(f.addr, sizeof(f.addr), "127.0.0.1:%d", nodes[0].port);
		CHECK_RC(em_fault_set(p, &f), 0);
		CHECK_RC(em_read(reg[0], 0, buf, IO), -EIO);
		node_works(2, gen[2]++);
		snprintf(f.addr, sizeof(f.addr), "127.0.0.1:1");
		CHECK_RC(em_fault_set(p, &f), -ENOENT);
		f.node = 3;
		CHECK_RC(em_fault_set(p, &f), -EINVAL);
	}
	em_pool_close(p);

	/* the environment knob: a fault from the start, by address */
	{
		char spec[200];
		snprintf(spec, sizeof(spec), "mode=fail,addr=%s,err=%d over=tcp", nodes[2].url,
			 ECONNRESET);
		p = connect_fault(spec, &rc);
		CHECK_RC(rc, 0);
		CHECK_RC(em_pool_status(p, st, 2), 3); /* asks nodes 0 and 1 only */
		CHECK_RC(em_pool_status(p, st, 3), 3);
		CHECK(st[2].capacity == 0 && st[0].capacity > 0);
		em_pool_close(p);
		const char *bad[] = { "mode=bogus",  "mode=fail,node=x",
				      "percent=101", "over=fault",
				      "over=nosuch", "mode=fail,node=3",
				      "speed=1",     "err=0",
				      "node" };
		for (unsigned k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
			p = connect_fault(bad[k], &rc);
			if (rc != -EINVAL)
				fprintf(stderr, "ETHERMEM_FAULT=%s: %d\n", bad[k], rc);
			CHECK_RC(rc, -EINVAL);
		}
	}

	/* the control call on a pool of another transport */
	{
		struct em_fault f = { .mode = EM_FAULT_FAIL };
		setenv("ETHERMEM_TRANSPORT", "tcp", 1);
		p = t_connect_ok(nodes, 3, secret);
		CHECK_RC(em_fault_set(p, &f), -EOPNOTSUPP);
		em_pool_close(p);
	}
	for (int i = 0; i < 3; i++)
		t_node_stop(&nodes[i], SIGTERM);
	t_cleanup();
	printf("fault: ok\n");
	return 0;
}
