/*
 * test_cluster_redundancy.c - redundant named regions in a pool run from
 * etcd, with real nodes, real kills and a real etcd:
 *  - a replicate:2 and an ec:4+2 region are created through etcd (the
 *    record carries the redundancy; a second create of the name gets
 *    -EEXIST or opens it, as for plain regions), and listed with their
 *    redundancy and state from etcd;
 *  - two client processes write and read both regions, every byte checked
 *    against their own copy; a node holding parts of both is killed; the
 *    workload sees no error; the clients' repairers (one elected per
 *    region through its etcd lock) rebuild the lost parts elsewhere, and
 *    the record names the new nodes at a new layout epoch; then a second
 *    node is killed and every byte is read back;
 *  - a repairer killed mid-repair (SIGKILL of `ethermem repair`), once this
 *    process's listing showed it repairing with its progress (from the
 *    lock's value): another takes the lock once the dead one's lease ran
 *    out, takes over its fence and finishes, while a writer goes on
 *    without an error.
 * With the argument "static", the last case on a static node list: the
 * next repairer takes over once the dead one's fence went untouched for
 * its staleness limit. With "more" (more_case): replicate:3 losing a second
 * holder mid-repair, a frozen holder, and more losses than replicate:2
 * survives, in etcd mode. With "drain" (drain_case): `ethermem node drain`
 * of a node holding parts of redundant regions under a workload. With
 * "loss" (loss_case): the record in etcd after a loss a writer recorded,
 * and a repair whose first steps outlast its lock's lease.
 */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>

#include "common/cluster.h"
#include "common/etcd.h"

#include "harness.h"

#define NODES 7
#define CLUSTER "red"

static struct t_etcd ec;
static struct t_node n[NODES];
static const char *secret;
static bool static_mode;
static char list[NODES * 40];

static em_pool *connect_pool(int want)
{
	struct em_pool_opts o = { .size = sizeof(o),
				  .secret_file = secret,
				  .timeout_ms = 1500,
				  .etcd = ec.url,
				  .cluster = CLUSTER };

	if (static_mode) {
		o.etcd = NULL;
		o.cluster = NULL;
		o.nodes = list;
		want = 1;
	}
	return t_connect_want(&o, want);
}

/* ---- a workload process: verified writes and reads of its half ---- */

/* Says how a read differs from the reference: bytes that only a write
 * that failed touched may hold its bytes or the old ones (an error, which
 * the caller counts anyway); a byte that differs elsewhere is a wrong byte
 * served as right, which no failure may cause. */
static void wrong(int half, const char *name, uint64_t at, const uint8_t *got, const uint8_t *ref,
		  const uint8_t *unk, uint64_t l)
{
	uint64_t bad = 0, first = 0, fuzzy = 0;

	for (uint64_t k = 0; k < l; k++) {
		if (got[k] == ref[k])
			continue;
		if (unk[k]) {
			fuzzy++;
			continue;
		}
		if (!bad++)
			first = k;
	}
	if (bad)
		fprintf(stderr,
			"worker %d: read %s @%llu+%llu: wrong bytes: %llu, the first @%llu (and "
			"%llu under a failed write)\n",
			half, name, (unsigned long long)at, (unsigned long long)l,
			(unsigned long long)bad, (unsigned long long)(at + first),
			(unsigned long long)fuzzy);
	else
		fprintf(stderr,
			"worker %d: read %s @%llu+%llu: %llu bytes differ, all under a "
			"write that failed\n",
			half, name, (unsigned long long)at, (unsigned long long)l,
			(unsigned long long)fuzzy);
}

static int work_on(em_region **r, const char **names, unsigned nr, int half, int stopfd)
{
	uint64_t seed = 77 + (uint64_t)half, ops = 0, errors = 0;
	uint8_t *ref[4], *unk[4], buf[12288], got[12288];
	uint64_t lo[4], len[4];

	for (unsigned i = 0; i < nr; i++) {
		uint64_t sz = em_region_size(r[i]);
		len[i] = sz / 2;
		lo[i] = half ? sz / 2 : 0;
		ref[i] = malloc(len[i]);
		unk[i] = calloc(1, len[i]);
		for (uint64_t k = 0; k < len[i]; k++)
			ref[i][k] = (uint8_t)t_rand(&seed);
		for (uint64_t o = 0; o < len[i]; o += 1 << 20)
			if (em_write(r[i], lo[i] + o, ref[i] + o,
				     (len[i] - o < (1u << 20) ? len[i] - o : (1u << 20)))) {
				fprintf(stderr, "worker %d: initial write of %s failed\n", half,
					names[i]);
				return 1;
			}
	}
	for (;;) {
		struct pollfd p = { stopfd, POLLIN, 0 };
		unsigned i = (unsigned)(t_rand(&seed) % nr);
		uint64_t l = 1 + t_rand(&seed) % sizeof(buf), o = t_rand(&seed) % (len[i] - l);
		int rc;

		if (poll(&p, 1, 0) > 0)
			break;
		for (uint64_t k = 0; k < l; k++)
			buf[k] = (uint8_t)t_rand(&seed);
		if ((rc = em_write(r[i], lo[i] + o, buf, l))) {
			fprintf(stderr, "worker %d: write %s @%llu+%llu: %s\n", half, names[i],
				(unsigned long long)(lo[i] + o), (unsigned long long)l,
				em_strerror(rc));
			errors++;
			memset(unk[i] + o, 1, l);
		} else {
			memcpy(ref[i] + o, buf, l);
			memset(unk[i] + o, 0, l);
		}
		o = t_rand(&seed) % (len[i] - l);
		if ((rc = em_read(r[i], lo[i] + o, got, l))) {
			fprintf(stderr, "worker %d: read %s @%llu: %s\n", half, names[i],
				(unsigned long long)(lo[i] + o), em_strerror(rc));
			errors++;
		} else if (memcmp(got, ref[i] + o, l)) {
			errors++;
			wrong(half, names[i], lo[i] + o, got, ref[i] + o, unk[i] + o, l);
		}
		ops++;
	}
	/* every byte of its half, at the end */
	for (unsigned i = 0; i < nr; i++) {
		uint8_t *all = malloc(len[i]);
		int rc = em_read(r[i], lo[i], all, len[i]);
		if (rc) {
			fprintf(stderr, "worker %d: final read of %s: %s\n", half, names[i],
				em_strerror(rc));
			errors++;
		} else if (memcmp(all, ref[i], len[i])) {
			errors++;
			wrong(half, names[i], lo[i], all, ref[i], unk[i], len[i]);
		}
		free(all);
		free(ref[i]);
		free(unk[i]);
	}
	printf("worker %d: %llu write+read pairs, %llu errors\n", half, (unsigned long long)ops,
	       (unsigned long long)errors);
	return errors ? 1 : 0;
}

/* A worker is this program run again ("worker"), so that it starts with
 * no thread of its parent's pool. */
static pid_t worker(const char **names, unsigned nr, int half, bool auto_repair, int want,
		    int *stop)
{
	char fd[16], h[16], wn[16];
	int fds[2];
	pid_t pid;

	CHECK(pipe(fds) == 0);
	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(fds[1]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		setenv("ETHERMEM_AUTO_REPAIR", auto_repair ? "1" : "0", 1);
		setenv("T_SECRET_FILE", secret, 1);
		setenv("T_ETCD", static_mode ? "" : ec.url, 1);
		setenv("T_NODES", list, 1);
		snprintf(fd, sizeof(fd), "%d", fds[0]);
		snprintf(h, sizeof(h), "%d", half);
		snprintf(wn, sizeof(wn), "%d", want);
		execl("/proc/self/exe", "test_cluster_redundancy", "worker", fd, h, wn, names[0],
		      nr > 1 ? names[1] : NULL, (char *)NULL);
		_exit(127);
	}
	close(fds[0]);
	*stop = fds[1];
	return pid;
}

static int worker_main(int argc, char **argv)
{
	int stopfd = atoi(argv[2]), half = atoi(argv[3]), want = atoi(argv[4]);
	const char *names[4];
	unsigned nr = 0;
	em_region *r[4];
	em_pool *p;
	int rc;

	secret = getenv("T_SECRET_FILE");
	snprintf(ec.url, sizeof(ec.url), "%s", getenv("T_ETCD"));
	snprintf(list, sizeof(list), "%s", getenv("T_NODES"));
	static_mode = !ec.url[0];
	for (int i = 5; i < argc && nr < 4; i++)
		names[nr++] = argv[i];
	p = connect_pool(want);
	for (unsigned i = 0; i < nr; i++)
		if (em_region_open(p, names[i], &r[i])) {
			fprintf(stderr, "worker %d: cannot open %s\n", half, names[i]);
			return 1;
		}
	rc = work_on(r, names, nr, half, stopfd);
	for (unsigned i = 0; i < nr; i++)
		em_region_close(r[i]);
	em_pool_close(p);
	return rc;
}

static int worker_end(pid_t pid, int stop)
{
	int status;

	CHECK(write(stop, "x", 1) == 1);
	close(stop);
	CHECK(waitpid(pid, &status, 0) == pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- what etcd says ---- */

static int record(const char *name, struct em_region_rec *rec)
{
	struct em_etcd *e;
	char key[256], val[16384];
	int len;

	snprintf(key, sizeof(key), "/ethermem/%s/regions/%s", CLUSTER, name);
	CHECK_RC(em_etcd_open(&e, ec.url, 2000), 0);
	len = em_etcd_get(e, key, val, sizeof(val));
	em_etcd_close(e);
	if (len < 0)
		return len;
	return em_region_rec_decode(val, (size_t)len, rec);
}

static bool lock_held(const char *name)
{
	struct em_etcd *e;
	char key[256], val[256];
	int len;

	snprintf(key, sizeof(key), "/ethermem/%s/repair/%s", CLUSTER, name);
	CHECK_RC(em_etcd_open(&e, ec.url, 2000), 0);
	len = em_etcd_get(e, key, val, sizeof(val));
	em_etcd_close(e);
	return len >= 0;
}

/* The node index of a record's segment s (by port). */
static int seg_index(const struct em_region_rec *rec, unsigned s)
{
	for (int i = 0; i < NODES; i++) {
		const char *c = strrchr(rec->seg_addr[s], ':');
		if (c && atoi(c + 1) == n[i].port)
			return i;
	}
	return -1;
}

static bool holds(const struct em_region_rec *rec, int node)
{
	for (unsigned s = 0; s < rec->nseg; s++)
		if (seg_index(rec, s) == node)
			return true;
	return false;
}

/* A live node holding parts of both regions. */
static int common_node(const char *a, const char *b)
{
	struct em_region_rec ra, rb;

	CHECK_RC(record(a, &ra), 0);
	CHECK_RC(record(b, &rb), 0);
	for (int i = 0; i < NODES; i++)
		if (n[i].pid && holds(&ra, i) && holds(&rb, i))
			return i;
	return -1;
}

/* The listing's entry for name (from etcd). A listing that fails is
 * asked again for a while: on a loaded machine one etcd request may run
 * past its timeout. */
static struct em_region_info entry(em_pool *p, const char *name)
{
	struct em_region_info info[16] = { { .size = sizeof(info[0]) } };
	int k = -1;

	for (int tries = 0; tries < 50; tries++) {
		if ((k = em_region_list(p, info, 16)) >= 0)
			break;
		t_sleep_ms(100);
	}
	for (int i = 0; i < k && i < 16; i++)
		if (!strcmp(info[i].name, name))
			return info[i];
	fprintf(stderr, "%s not listed (%s)\n", name, k < 0 ? em_strerror(k) : "absent");
	exit(1);
}

/* Healthy in etcd: no repair lock, every part on a registered node, and
 * the record moved past `epoch`, with no part on node `dead`. */
static bool restored(em_pool *p, const char *name, uint32_t epoch, int dead)
{
	struct em_region_info ri = entry(p, name);
	struct em_region_rec rec;

	return ri.state == EM_STATE_HEALTHY && ri.epoch > epoch && !record(name, &rec) &&
	       !holds(&rec, dead);
}

/* Another process's repair has said how far it is: repairing, with some
 * but not all of its bytes rebuilt. */
static bool midway(em_pool *p, const char *name)
{
	struct em_region_info ri = entry(p, name);
	bool yes = ri.state == EM_STATE_REPAIRING && ri.rebuilt > 0 && ri.rebuilt < ri.to_rebuild;

	if (yes)
		printf("%s: repairing, %llu of %llu bytes rebuilt\n", name,
		       (unsigned long long)ri.rebuilt, (unsigned long long)ri.to_rebuild);
	return yes;
}

static pid_t cli(const char *a1, const char *a2, const char *a3, const char *rate)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (static_mode) {
			setenv("ETHERMEM_NODES", list, 1);
			unsetenv("ETHERMEM_ETCD");
		} else {
			setenv("ETHERMEM_ETCD", ec.url, 1);
			setenv("ETHERMEM_CLUSTER", CLUSTER, 1);
			unsetenv("ETHERMEM_NODES");
		}
		setenv("ETHERMEM_SECRET_FILE", secret, 1);
		setenv("ETHERMEM_TIMEOUT_MS", "1500", 1);
		if (rate)
			setenv("ETHERMEM_REPAIR_RATE", rate, 1);
		execl(t_bin("ethermem"), "ethermem", a1, a2, a3, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* A static list: a repairer killed mid-repair, and the next one taking
 * over its fence once it is stale. */
/* The end of a case: the pool closed, every node still running stopped
 * cleanly, etcd too where the case started it; the case's verdict. */
static int finish(em_pool *p, bool etcd)
{
	em_pool_close(p);
	for (int i = 0; i < NODES; i++)
		t_node_stop(&n[i], SIGTERM);
	if (etcd)
		t_etcd_stop(&ec);
	return t_fails ? 1 : 0;
}

static int static_case(void)
{
	struct em_region_opts rep = { .size = sizeof(rep) };
	struct em_node_status st[NODES] = { { .size = sizeof(st[0]) } };
	const char *slow[] = { "slow" };
	struct em_region_info ri = { .size = sizeof(ri) };
	int stop, victim = -1, k, status;
	em_region *o;
	pid_t w, a, b;
	em_pool *p;

	static_mode = true;
	secret = t_secret("secret", T_SECRET);
	for (int i = 0; i < NODES; i++) {
		t_node_start(&n[i], "48M", secret, NULL);
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? "," : "",
			 n[i].url);
	}
	setenv("ETHERMEM_AUTO_REPAIR", "0", 1);
	p = connect_pool(NODES);
	CHECK_RC(em_parse_redundancy("replicate:2", &rep), 0);
	CHECK_RC(em_region_create(p, "slow", 12u << 20, &rep, &o), 0);
	em_region_close(o);
	w = worker(slow, 1, 0, false, 1, &stop);
	t_sleep_ms(600);
	k = em_pool_status(p, st, NODES);
	for (int i = 0; i < k && victim < 0; i++)
		for (int j = 0; j < NODES; j++)
			if (st[i].used >= (12u << 20) && !strcmp(st[i].addr, n[j].url))
				victim = j;
	CHECK(victim >= 0);
	printf("killing node %d\n", victim);
	t_node_stop(&n[victim], SIGKILL);
	a = cli("repair", "slow", "--background", "4000000");
	/* the new part, stored as being filled, lists the region repairing */
	CHECK(T_WAIT_FOR(20000, entry(p, "slow").state == EM_STATE_REPAIRING));
	/* and the repairer's progress, from the new part's layout */
	CHECK(T_WAIT_FOR(5000, midway(p, "slow")));
	printf("killing the repairer mid-repair\n");
	kill(a, SIGKILL);
	CHECK(waitpid(a, &status, 0) == a);
	b = cli("repair", "slow", "--background", NULL);
	CHECK(T_WAIT_FOR(30000, waitpid(b, &status, WNOHANG) == b));
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_RC(em_region_open(p, "slow", &o), 0);
	CHECK_RC(em_region_stat(o, &ri), 0);
	CHECK(ri.state == EM_STATE_HEALTHY && ri.epoch >= 2);
	printf("slow: healthy at epoch %u after the takeover\n", ri.epoch);
	em_region_close(o);
	CHECK_RC(worker_end(w, stop), 0);
	return finish(p, false);
}

/* A holder of segment s of name's record that is alive now. */
static int holder_now(const char *name, unsigned s)
{
	struct em_region_rec rec;
	int i;

	CHECK_RC(record(name, &rec), 0);
	i = seg_index(&rec, s);
	CHECK(i >= 0 && n[i].pid);
	return i;
}

/* Healthy again, with no part on any of the nodes in `gone`. */
static bool restored_all(em_pool *p, const char *name, uint32_t epoch, const int *gone, int ng)
{
	struct em_region_rec rec;

	if (!restored(p, name, epoch, gone[0]) || record(name, &rec))
		return false;
	for (int i = 1; i < ng; i++)
		if (holds(&rec, gone[i]))
			return false;
	return true;
}

/* etcd mode, what the static list's tests do beside: replicate:3 loses a
 * holder, and a second one while the elected repairer is rebuilding the
 * first; then a holder frozen (SIGSTOP) rather than killed; a workload
 * goes on all the while and sees no error; then both holders of a
 * replicate:2 region die, and reading it fails with an error that names
 * the region, never zeros. */
static int more_case(void)
{
	struct em_region_opts r3 = { .size = sizeof(r3) }, r2 = { .size = sizeof(r2) };
	const char *names[] = { "three" };
	int stop, gone[3], st, fd;
	char extra[256], out[PATH_MAX], err[PATH_MAX], msg[512] = "";
	uint8_t buf[4096], zero[4096] = { 0 };
	uint32_t ep;
	em_region *o;
	em_pool *p;
	pid_t w, c;

	secret = t_secret("secret", T_SECRET);
	t_etcd_start(&ec);
	snprintf(extra, sizeof(extra), "--etcd %s --cluster " CLUSTER " --lease-ttl 2", ec.url);
	for (int i = 0; i < 6; i++)
		t_node_start(&n[i], "48M", secret, extra);
	setenv("ETHERMEM_AUTO_REPAIR", "0", 1); /* this process only checks */
	p = connect_pool(6);
	CHECK_RC(em_parse_redundancy("replicate:3", &r3), 0);
	CHECK_RC(em_parse_redundancy("replicate:2", &r2), 0);
	CHECK_RC(em_region_create(p, "three", 4u << 20, &r3, &o), 0);
	em_region_close(o);
	/* the worker repairs; slowly, so that the second kill lands mid-repair */
	setenv("ETHERMEM_REPAIR_RATE", "2M", 1);
	w = worker(names, 1, 0, true, 6, &stop);
	unsetenv("ETHERMEM_REPAIR_RATE");
	t_sleep_ms(600);

	gone[0] = holder_now("three", 0);
	gone[1] = holder_now("three", 1);
	printf("killing node %d\n", gone[0]);
	t_node_stop(&n[gone[0]], SIGKILL);
	CHECK(T_WAIT_FOR(10000, midway(p, "three")));
	printf("killing node %d mid-repair\n", gone[1]);
	t_node_stop(&n[gone[1]], SIGKILL);
	CHECK(T_WAIT_FOR(30000, restored_all(p, "three", 1, gone, 2)));
	ep = entry(p, "three").epoch;
	printf("three: healthy at epoch %u without nodes %d and %d\n", ep, gone[0], gone[1]);

	/* a frozen holder: requests to it time out, it is taken for lost,
	 * its lease lapses, and its part is rebuilt on the last spare node */
	gone[2] = holder_now("three", 2);
	printf("freezing node %d\n", gone[2]);
	kill(n[gone[2]].pid, SIGSTOP);
	CHECK(T_WAIT_FOR(30000, restored(p, "three", ep, gone[2])));
	printf("three: healthy at epoch %u without the frozen node\n", entry(p, "three").epoch);
	kill(n[gone[2]].pid, SIGCONT);
	t_sleep_ms(300);
	CHECK_RC(worker_end(w, stop), 0);

	/* more failures than replicate:2 survives (placement may pick the
	 * thawed node before this pool has dialled it again: -EM_ENONODE) */
	CHECK(T_WAIT_FOR(10000, em_region_create(p, "two", 1u << 20, &r2, &o) == 0));
	memset(buf, 0x5a, sizeof(buf));
	CHECK_RC(em_write(o, 0, buf, sizeof(buf)), 0);
	em_region_close(o);
	gone[0] = holder_now("two", 0);
	gone[1] = holder_now("two", 1);
	printf("killing nodes %d and %d, both holders of two\n", gone[0], gone[1]);
	t_node_stop(&n[gone[0]], SIGKILL);
	t_node_stop(&n[gone[1]], SIGKILL);
	snprintf(out, sizeof(out), "%s/two.out", t_tmpdir());
	snprintf(err, sizeof(err), "%s/two.err", t_tmpdir());
	fflush(NULL);
	c = fork();
	CHECK(c >= 0);
	if (c == 0) {
		int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(e, 2);
		setenv("ETHERMEM_ETCD", ec.url, 1);
		setenv("ETHERMEM_CLUSTER", CLUSTER, 1);
		setenv("ETHERMEM_SECRET_FILE", secret, 1);
		setenv("ETHERMEM_TIMEOUT_MS", "1500", 1);
		execl(t_bin("ethermem"), "ethermem", "read", "two", "0", "4096", out, (char *)NULL);
		_exit(127);
	}
	CHECK(waitpid(c, &st, 0) == c);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0);
	fd = open(err, O_RDONLY);
	CHECK(fd >= 0);
	CHECK(read(fd, msg, sizeof(msg) - 1) > 0);
	close(fd);
	printf("ethermem read two: %s", msg);
	CHECK(strstr(msg, "two") && strstr(msg, "data lost"));
	/* and no zeros written out as if they were the region's bytes */
	fd = open(out, O_RDONLY);
	if (fd >= 0) {
		ssize_t k = read(fd, buf, sizeof(buf));
		CHECK(k <= 0 || memcmp(buf, zero, (size_t)k));
		close(fd);
	}

	return finish(p, true);
}

/* etcd and six nodes of 48 MiB with 2 s leases, and this process's pool,
 * which only checks (no background repair of its own) */
static em_pool *six_nodes(void)
{
	char extra[256];

	secret = t_secret("secret", T_SECRET);
	t_etcd_start(&ec);
	snprintf(extra, sizeof(extra), "--etcd %s --cluster " CLUSTER " --lease-ttl 2", ec.url);
	for (int i = 0; i < 6; i++)
		t_node_start(&n[i], "48M", secret, extra);
	setenv("ETHERMEM_AUTO_REPAIR", "0", 1);
	return connect_pool(6);
}

/* `ethermem node drain` of a node holding parts of a replicate:2 and an
 * ec:2+1 region while two workers use both: the drain rebuilds the parts
 * elsewhere and ends; the node then holds nothing, the records name it no
 * more, the listing says healthy, and once it is stopped and another
 * original holder killed too, every byte is still read right: the regions
 * stayed fully redundant through the drain. */
static int drain_case(void)
{
	struct em_region_opts rep = { .size = sizeof(rep) }, ecr = { .size = sizeof(ecr) };
	struct em_node_status ns[6] = { { .size = sizeof(ns[0]) } };
	const char *both[] = { "dr", "dre" };
	struct em_region_rec rec;
	int stop[2], d, other, st, k;
	uint32_t ep[2];
	bool had[2];
	em_region *o;
	pid_t w[2], c;
	em_pool *p;

	p = six_nodes();
	CHECK_RC(em_parse_redundancy("replicate:2", &rep), 0);
	CHECK_RC(em_parse_redundancy("ec:2+1", &ecr), 0);
	ecr.chunk_size = 16384;
	CHECK_RC(em_region_create(p, "dr", 8u << 20, &rep, &o), 0);
	em_region_close(o);
	CHECK_RC(em_region_create(p, "dre", 6u << 20, &ecr, &o), 0);
	em_region_close(o);
	w[0] = worker(both, 2, 0, true, 6, &stop[0]);
	w[1] = worker(both, 2, 1, true, 6, &stop[1]);
	t_sleep_ms(600);
	d = common_node("dr", "dre");
	if (d < 0)
		d = holder_now("dr", 0);
	for (int i = 0; i < 2; i++) {
		CHECK_RC(record(both[i], &rec), 0);
		had[i] = holds(&rec, d);
		ep[i] = entry(p, both[i]).epoch;
	}
	printf("draining node %d\n", d);
	c = cli("node", "drain", n[d].url, NULL);
	CHECK(T_WAIT_FOR(30000, waitpid(c, &st, WNOHANG) == c));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	for (int i = 0; i < 2; i++) {
		CHECK_RC(record(both[i], &rec), 0);
		CHECK(!holds(&rec, d));
		/* a worker that took the cut part for lost may hold the repair
		 * lock a moment more (it finds nothing to do): listed repairing */
		CHECK(T_WAIT_FOR(5000, entry(p, both[i]).state == EM_STATE_HEALTHY));
		CHECK(!had[i] || entry(p, both[i]).epoch > ep[i]);
		printf("%s: healthy at epoch %u, off node %d\n", both[i], entry(p, both[i]).epoch,
		       d);
	}
	/* the node keeps nothing of them */
	k = em_pool_status(p, ns, 6);
	for (int i = 0; i < k && i < 6; i++)
		if (!strcmp(ns[i].addr, n[d].url))
			CHECK(ns[i].named_regions == 0);
	/* stopped: nothing to repair */
	t_node_stop(&n[d], SIGKILL);
	t_sleep_ms(1500);
	for (int i = 0; i < 2; i++) {
		ep[i] = entry(p, both[i]).epoch;
		CHECK(entry(p, both[i]).state == EM_STATE_HEALTHY);
	}
	/* and every copy or chunk it has is needed no more than before: one
	 * more holder of each may die (the same node, if one holds both) */
	other = common_node("dr", "dre");
	if (other < 0)
		other = holder_now("dr", 0);
	printf("killing node %d\n", other);
	t_node_stop(&n[other], SIGKILL);
	t_sleep_ms(800);
	CHECK_RC(worker_end(w[0], stop[0]), 0);
	CHECK_RC(worker_end(w[1], stop[1]), 0);
	return finish(p, true);
}

/* etcd mode, the record after a loss and a repair that starts slowly:
 *  - a holder of a replicate:2 region is frozen while a write goes on; the
 *    writer records the loss, and the record in etcd says so too (the
 *    part's node named by no identity, the new layout epoch), so the
 *    listing says degraded once the node is back and a client opening the
 *    name reads the new bytes;
 *  - a holder of another region dies and two other nodes freeze: the
 *    repair's first steps (reading the layouts, asking every node its
 *    free bytes) wait the request timeout on each frozen node, longer
 *    than the repair lock's lease, and the repair still finishes: the
 *    lease is kept from the start. */
static int loss_case(void)
{
	struct em_region_opts rep = { .size = sizeof(rep) };
	static const uint8_t none[16];
	struct em_region_info ri = { .size = sizeof(ri) };
	struct em_region_rec rec;
	static uint8_t a[1u << 20], b[1u << 20], got[1u << 20];
	uint64_t seed = 5;
	int x, gone, f[2], nf = 0;
	em_region *r, *o;
	em_pool *p, *p2;

	for (size_t k = 0; k < sizeof(a); k++) {
		a[k] = (uint8_t)t_rand(&seed);
		b[k] = (uint8_t)t_rand(&seed);
	}
	p = six_nodes();
	CHECK_RC(em_parse_redundancy("replicate:2", &rep), 0);

	CHECK_RC(em_region_create(p, "lr", sizeof(a), &rep, &r), 0);
	CHECK_RC(em_write(r, 0, a, sizeof(a)), 0);
	x = holder_now("lr", 0);
	printf("freezing node %d during a write\n", x);
	t_freeze(n[x].pid);
	CHECK_RC(em_write(r, 0, b, sizeof(b)), 0);
	kill(n[x].pid, SIGCONT);
	CHECK_RC(em_region_stat(r, &ri), 0);
	CHECK(ri.epoch > 0 && ri.state == EM_STATE_DEGRADED);
	CHECK_RC(record("lr", &rec), 0);
	printf("lr: handle at epoch %u, record at %u\n", ri.epoch, rec.lepoch);
	CHECK(rec.lepoch == ri.epoch && !memcmp(rec.seg_id[0], none, 16) &&
	      memcmp(rec.seg_id[1], none, 16));
	/* the node is registered again, and the listing still says degraded */
	t_sleep_ms(1500);
	CHECK(entry(p, "lr").state == EM_STATE_DEGRADED && entry(p, "lr").epoch == ri.epoch);
	p2 = connect_pool(6);
	CHECK_RC(em_region_open(p2, "lr", &o), 0);
	CHECK_RC(em_read(o, 0, got, sizeof(got)), 0);
	CHECK(!memcmp(got, b, sizeof(b)));
	em_region_close(o);
	em_pool_close(p2);
	em_region_close(r);

	CHECK_RC(em_region_create(p, "ss", sizeof(a), &rep, &r), 0);
	CHECK_RC(em_write(r, 0, a, sizeof(a)), 0);
	CHECK_RC(record("ss", &rec), 0);
	gone = seg_index(&rec, 0);
	for (int i = 0; i < 6 && nf < 2; i++)
		if (!holds(&rec, i))
			f[nf++] = i;
	CHECK(gone >= 0 && nf == 2);
	printf("killing node %d, freezing nodes %d and %d\n", gone, f[0], f[1]);
	t_node_stop(&n[gone], SIGKILL);
	t_freeze(n[f[0]].pid);
	t_freeze(n[f[1]].pid);
	CHECK_RC(em_region_repair(r), 1);
	kill(n[f[0]].pid, SIGCONT);
	kill(n[f[1]].pid, SIGCONT);
	CHECK_RC(em_read(r, 0, got, sizeof(got)), 0);
	CHECK(!memcmp(got, a, sizeof(a)));
	CHECK_RC(em_region_stat(r, &ri), 0);
	CHECK(ri.state == EM_STATE_HEALTHY);
	em_region_close(r);
	return finish(p, true);
}

int main(int argc, char **argv)
{
	const char *both[] = { "rep", "ec" }, *slow[] = { "slow" };
	struct em_region_opts rep = { .size = sizeof(rep) }, ecr = { .size = sizeof(rep) };
	struct em_region_opts excl = { .size = sizeof(rep), .flags = EM_REGION_EXCL };
	struct em_region_info ri;
	struct em_region_rec rec;
	em_region *r[2], *o;
	char extra[256];
	pid_t w[2], a, b;
	int stop[2], v1, v2, v3, st;
	em_pool *p;

	if (argc > 5 && !strcmp(argv[1], "worker"))
		return worker_main(argc, argv);
	if (argc > 1 && !strcmp(argv[1], "static"))
		return static_case();
	if (argc > 1 && !strcmp(argv[1], "more"))
		return more_case();
	if (argc > 1 && !strcmp(argv[1], "drain"))
		return drain_case();
	if (argc > 1 && !strcmp(argv[1], "loss"))
		return loss_case();
	secret = t_secret("secret", T_SECRET);
	t_etcd_start(&ec);
	snprintf(extra, sizeof(extra), "--etcd %s --cluster " CLUSTER " --lease-ttl 2", ec.url);
	for (int i = 0; i < NODES; i++)
		t_node_start(&n[i], "48M", secret, extra);
	setenv("ETHERMEM_AUTO_REPAIR", "0", 1); /* this process only checks */
	p = connect_pool(NODES);

	/* ---- create through etcd, with the redundancy in the record ---- */
	CHECK_RC(em_parse_redundancy("replicate:2", &rep), 0);
	CHECK_RC(em_parse_redundancy("ec:4+2", &ecr), 0);
	ecr.chunk_size = 16384;
	CHECK_RC(em_region_create(p, "rep", 4u << 20, &rep, &r[0]), 0);
	CHECK_RC(em_region_create(p, "ec", 3u << 20, &ecr, &r[1]), 0);
	CHECK_RC(record("ec", &rec), 0);
	CHECK(rec.red == EM_RED_EC && rec.red_k == 4 && rec.red_m == 2 && rec.nseg == 6);
	CHECK_RC(record("rep", &rec), 0);
	CHECK(rec.red == EM_RED_REPLICATE && rec.red_k == 2 && rec.nseg == 2);
	ri = entry(p, "ec");
	CHECK(ri.redundancy == EM_RED_EC && ri.red_k == 4 && ri.red_m == 2 &&
	      ri.state == EM_STATE_HEALTHY);
	/* the name is taken: -EEXIST for EXCL or another redundancy, the same
	 * region for the same size and redundancy */
	excl.redundancy = rep.redundancy;
	excl.red_k = rep.red_k;
	CHECK_RC(em_region_create(p, "rep", 4u << 20, &excl, &o), -EEXIST);
	CHECK_RC(em_region_create(p, "rep", 4u << 20, &ecr, &o), -EEXIST);
	CHECK_RC(em_region_create(p, "rep", 4u << 20, &rep, &o), 0);
	CHECK_RC(em_region_stat(o, &ri), 0);
	CHECK(ri.redundancy == EM_RED_REPLICATE && ri.red_k == 2);
	em_region_close(o);

	/* ---- a workload, a node killed, the elected repairer, another kill ---- */
	w[0] = worker(both, 2, 0, true, NODES, &stop[0]);
	w[1] = worker(both, 2, 1, true, NODES, &stop[1]);
	t_sleep_ms(800);
	v1 = common_node("rep", "ec");
	CHECK(v1 >= 0);
	printf("killing node %d\n", v1);
	t_node_stop(&n[v1], SIGKILL);
	CHECK(T_WAIT_FOR(20000, restored(p, "rep", 0, v1) && restored(p, "ec", 0, v1)));
	printf("rep epoch %u, ec epoch %u: both healthy without node %d\n", entry(p, "rep").epoch,
	       entry(p, "ec").epoch, v1);
	/* a new handle finds every part (none lost) */
	CHECK_RC(em_region_open(p, "ec", &o), 0);
	CHECK_RC(em_region_stat(o, &ri), 0);
	CHECK(ri.state == EM_STATE_HEALTHY && ri.epoch >= 1);
	em_region_close(o);
	t_sleep_ms(300);
	v2 = common_node("rep", "ec");
	CHECK(v2 >= 0 && v2 != v1);
	printf("killing node %d\n", v2);
	t_node_stop(&n[v2], SIGKILL);
	t_sleep_ms(800);
	CHECK_RC(worker_end(w[0], stop[0]), 0);
	CHECK_RC(worker_end(w[1], stop[1]), 0);
	em_region_close(r[0]);
	em_region_close(r[1]);

	/* ---- a repairer killed mid-repair; another takes over ---- */
	CHECK_RC(em_region_create(p, "slow", 12u << 20, &rep, &o), 0);
	em_region_close(o);
	w[0] = worker(slow, 1, 0, false, NODES - 2, &stop[0]);
	t_sleep_ms(600);
	CHECK_RC(record("slow", &rec), 0);
	v3 = seg_index(&rec, 0);
	CHECK(v3 >= 0 && n[v3].pid);
	printf("killing node %d\n", v3);
	t_node_stop(&n[v3], SIGKILL);
	a = cli("repair", "slow", "--background", "4000000"); /* 3 s at this rate */
	CHECK(T_WAIT_FOR(5000, lock_held("slow")));
	/* the listing of this process shows the repairer's progress, which it
	 * keeps in its lock's value */
	CHECK(T_WAIT_FOR(5000, midway(p, "slow")));
	CHECK(lock_held("slow"));
	printf("killing the repairer mid-repair\n");
	kill(a, SIGKILL);
	CHECK(waitpid(a, &st, 0) == a);
	b = cli("repair", "slow", "--background", NULL);
	CHECK(T_WAIT_FOR(30000, waitpid(b, &st, WNOHANG) == b));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(T_WAIT_FOR(5000, restored(p, "slow", 1, v3)));
	printf("slow: healthy at epoch %u after the takeover\n", entry(p, "slow").epoch);
	t_sleep_ms(300);
	CHECK_RC(worker_end(w[0], stop[0]), 0);

	return finish(p, true);
}
