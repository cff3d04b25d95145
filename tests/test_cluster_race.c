/*
 * test_cluster_race.c - two processes race to create one name, 100 times,
 * in a pool kept in etcd (no argument, or "etcd") or given as a static
 * node list ("static"). Without EM_REGION_EXCL both must end up with the
 * same region (what one writes the other reads); with it exactly one wins
 * and the other gets -EEXIST. Small regions fit on one node, large ones
 * are striped over both, so both placements race.
 */
#include "harness.h"

#define ROUNDS 100

struct cmd {
	int round;
	unsigned flags;
	uint64_t size;
};

struct ans {
	int rc;
};

/* A racer: connected once, creates on command, writes its mark into its
 * own slot at the region's start and at its end, answers, then closes. */
static void racer(int id, int in, int out, const char *etcd, const char *nodes, const char *secret)
{
	struct em_pool_opts o = { .size = sizeof(o),
				  .etcd = etcd,
				  .nodes = nodes,
				  .secret_file = secret,
				  .cluster = "race" };
	em_pool *p;
	struct cmd c;

	CHECK_RC(em_pool_connect(&p, &o), 0);
	while (read(in, &c, sizeof(c)) == sizeof(c)) {
		struct em_region_opts ro = { .size = sizeof(ro),
					     .chunk_size = 1 << 20,
					     .flags = c.flags };
		char name[32];
		em_region *r;
		struct ans a;
		uint64_t mark = ((uint64_t)c.round << 8) | (uint64_t)(id + 1);

		snprintf(name, sizeof(name), "race-%d", c.round);
		a.rc = em_region_create(p, name, c.size, &ro, &r);
		if (!a.rc) {
			CHECK_RC(em_write(r, 8 * (uint64_t)id, &mark, 8), 0);
			CHECK_RC(em_write(r, c.size - 16 + 8 * (uint64_t)id, &mark, 8), 0);
			em_region_close(r);
		}
		CHECK(write(out, &a, sizeof(a)) == sizeof(a));
	}
	em_pool_close(p);
	exit(0);
}

int main(int argc, char **argv)
{
	int stat = argc > 1 && !strcmp(argv[1], "static");
	char list[256];
	const char *secret = t_secret("secret", T_SECRET);
	struct t_etcd ec;
	struct t_node n[2];
	int to[2][2], from[2][2];
	pid_t pid[2];
	char extra[256];
	struct em_pool_opts o = { .size = sizeof(o), .secret_file = secret, .cluster = "race" };
	em_pool *p;
	int wins = 0, shared = 0;

	extra[0] = 0;
	if (!stat) {
		t_etcd_start(&ec);
		snprintf(extra, sizeof(extra), "--etcd %s --cluster race", ec.url);
	}
	t_node_start(&n[0], "40M", secret, extra);
	t_node_start(&n[1], "40M", secret, extra);
	snprintf(list, sizeof(list), "%s,%s", n[0].url, n[1].url);
	if (stat)
		o.nodes = list;
	else
		o.etcd = ec.url;
	/* both registered before anyone connects */
	for (int i = 0; i < 200; i++) {
		if (em_pool_connect(&p, &o) == 0) {
			if (em_pool_nodes(p) == 2)
				break;
			em_pool_close(p);
		}
		p = NULL;
		t_sleep_ms(25);
	}
	CHECK(p && em_pool_nodes(p) == 2);
	/* the racers are forked with no pool here: a child must not inherit
	 * one whose threads it does not have */
	em_pool_close(p);
	for (int i = 0; i < 2; i++) {
		CHECK(pipe(to[i]) == 0 && pipe(from[i]) == 0);
		pid[i] = fork();
		CHECK(pid[i] >= 0);
		if (pid[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			close(to[i][1]);
			close(from[i][0]);
			for (int j = 0; j < i; j++) { /* the earlier racer's pipes */
				close(to[j][1]);
				close(from[j][0]);
			}
			racer(i, to[i][0], from[i][1], o.etcd, o.nodes, secret);
		}
		close(to[i][0]);
		close(from[i][1]);
	}
	CHECK_RC(em_pool_connect(&p, &o), 0);
	for (int round = 0; round < ROUNDS; round++) {
		struct cmd c = { .round = round,
				 .flags = round % 2 ? EM_REGION_EXCL : 0,
				 .size = round % 4 < 2 ? (1 << 20) : (48u << 20) };
		struct ans a[2];
		char name[32];
		em_region *r;

		for (int i = 0; i < 2; i++)
			CHECK(write(to[i][1], &c, sizeof(c)) == sizeof(c));
		for (int i = 0; i < 2; i++)
			CHECK(read(from[i][0], &a[i], sizeof(a[i])) == sizeof(a[i]));
		snprintf(name, sizeof(name), "race-%d", round);
		if (c.flags & EM_REGION_EXCL) {
			/* one winner, one -EEXIST */
			if (!((a[0].rc == 0 && a[1].rc == -EEXIST) ||
			      (a[1].rc == 0 && a[0].rc == -EEXIST))) {
				fprintf(stderr, "round %d (excl, %llu B): %d and %d\n", round,
					(unsigned long long)c.size, a[0].rc, a[1].rc);
				exit(1);
			}
			wins++;
		} else {
			if (a[0].rc || a[1].rc) {
				fprintf(stderr, "round %d (%llu B): %d (%s) and %d\n", round,
					(unsigned long long)c.size, a[0].rc, em_strerror(a[0].rc),
					a[1].rc);
				exit(1);
			}
		}
		/* one region: every winner's marks are in it, at both ends */
		CHECK_RC(em_region_open(p, name, &r), 0);
		CHECK(em_region_size(r) == c.size);
		for (int i = 0; i < 2; i++) {
			uint64_t head, tail, want = ((uint64_t)round << 8) | (uint64_t)(i + 1);
			CHECK_RC(em_read(r, 8 * (uint64_t)i, &head, 8), 0);
			CHECK_RC(em_read(r, c.size - 16 + 8 * (uint64_t)i, &tail, 8), 0);
			if (a[i].rc == 0 && (head != want || tail != want)) {
				fprintf(stderr, "round %d: racer %d's write is not in the region\n",
					round, i);
				exit(1);
			}
			if (a[i].rc != 0)
				CHECK(head == 0 && tail == 0);
		}
		shared += !(c.flags & EM_REGION_EXCL);
		CHECK_RC(em_region_close(r), 0);
		CHECK_RC(em_region_delete(p, name), 0);
	}
	for (int i = 0; i < 2; i++) {
		int st;
		close(to[i][1]);
		CHECK(waitpid(pid[i], &st, 0) == pid[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	/* nothing left behind by the losers: both nodes are empty again */
	{
		struct em_node_status st[2] = { { .size = sizeof(st[0]) } };
		CHECK_RC(em_pool_status(p, st, 2), 2);
		for (int i = 0; i < 2; i++)
			if (st[i].used) {
				fprintf(stderr, "node %s still holds %llu bytes\n", st[i].addr,
					(unsigned long long)st[i].used);
				exit(1);
			}
	}
	printf("%d exclusive races with one winner each, %d shared creates\n", wins, shared);
	em_pool_close(p);
	t_node_stop(&n[0], SIGTERM);
	t_node_stop(&n[1], SIGTERM);
	if (!stat)
		t_etcd_stop(&ec);
	t_cleanup();
	return 0;
}
