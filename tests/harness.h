/*
 * harness.h - what the tests share: start real memory nodes on loopback
 * ports the kernel picks (--port-file), stop them, make secrets, connect.
 * Every test is its own program: exit 0 pass, 1 fail, 77 skip. Every C
 * test includes this file, so a failed check reads the same everywhere;
 * the parts about nodes need the library, CHECK and friends need nothing.
 */
#ifndef EM_TEST_HARNESS_H
#define EM_TEST_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ethermem.h"

/* Checks failed so far; with t_keep_going set (tests that report every
 * failed check of a table, then exit 1) a failed CHECK counts instead of
 * ending the test. */
static __attribute__((unused)) int t_fails, t_keep_going;

#define CHECK(c)                                                                              \
	do {                                                                                  \
		if (!(c)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
			t_fails++;                                                            \
			if (!t_keep_going)                                                    \
				exit(1);                                                      \
		}                                                                             \
	} while (0)
#define CHECK_RC(expr, want)                                                                  \
	do {                                                                                  \
		int rc_ = (expr);                                                             \
		if (rc_ != (want)) {                                                          \
			fprintf(stderr, "%s:%d: %s = %d (%s), want %d\n", __FILE__, __LINE__, \
				#expr, rc_, em_strerror(rc_), (want));                        \
			exit(1);                                                              \
		}                                                                             \
	} while (0)

struct t_node {
	pid_t pid;
	int port;
	char url[64];
	char log[300]; /* room for t_dir and a file name: no truncation */
};

static char t_dir[256];

static __attribute__((unused)) const char *t_tmpdir(void)
{
	if (!t_dir[0]) {
		snprintf(t_dir, sizeof(t_dir), "/tmp/emtest.XXXXXX");
		if (!mkdtemp(t_dir)) {
			perror("mkdtemp");
			exit(1);
		}
	}
	return t_dir;
}

static __attribute__((unused)) void t_cleanup(void)
{
	char cmd[300];
	if (t_dir[0] && !getenv("EM_TEST_KEEP")) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", t_dir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", t_dir);
	}
}

/* Writes a secret file and returns its path (static storage per call). */
static __attribute__((unused)) const char *t_secret(const char *name, const char *content)
{
	static char paths[4][300];
	static int next;
	char *p = paths[next++ % 4];
	FILE *f;

	snprintf(p, 300, "%s/%s", t_tmpdir(), name);
	f = fopen(p, "w");
	CHECK(f);
	fputs(content, f);
	fclose(f);
	CHECK(chmod(p, 0600) == 0); /* a readable secret is refused */
	return p;
}

static __attribute__((unused)) const char *t_bin(const char *name)
{
	static char path[4][512];
	static int next;
	const char *dir = getenv("EM_BUILD_DIR");
	char *p = path[next++ % 4];

	snprintf(p, 512, "%s/%s", dir ? dir : ".", name);
	return p;
}

static __attribute__((unused)) void t_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* Polls `cond` every 10 ms for up to `ms` milliseconds and gives its last
 * value: the one way a test waits for something to happen (a log line, a
 * count going to zero) without a fixed sleep. */
#define T_WAIT_FOR(ms, cond)                                                 \
	({                                                                   \
		int ok_ = 0;                                                 \
		for (int w_ = 0; w_ <= (ms) / 10 && !(ok_ = !!(cond)); w_++) \
			t_sleep_ms(10);                                      \
		ok_;                                                         \
	})

/* Starts ethermemd and waits until it listens. extra: more flags or NULL.
 * EM_TEST_NODE_FLAGS adds flags to every node (the same tests against
 * another configuration of the node, e.g. --io uring). */
static __attribute__((unused)) void t_node_start(struct t_node *n, const char *capacity,
						 const char *secret, const char *extra)
{
	static int seq;
	char portfile[300], cmd[2048];
	int id = seq++;

	memset(n, 0, sizeof(*n));
	snprintf(portfile, sizeof(portfile), "%s/node%d.port", t_tmpdir(), id);
	snprintf(n->log, sizeof(n->log), "%s/node%d.log", t_tmpdir(), id);
	unlink(portfile);
	n->pid = fork();
	CHECK(n->pid >= 0);
	if (n->pid == 0) {
		int fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		/* a node never outlives its test, however the test ends */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 2);
		dup2(fd, 1);
		snprintf(cmd, sizeof(cmd),
			 "exec %s --listen tcp://127.0.0.1:0 --capacity %s --secret-file %s "
			 "--port-file %s %s %s",
			 t_bin("ethermemd"), capacity, secret, portfile, extra ? extra : "",
			 getenv("EM_TEST_NODE_FLAGS") ? getenv("EM_TEST_NODE_FLAGS") : "");
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		FILE *f = fopen(portfile, "r");
		int status;
		if (f) {
			int ok = fscanf(f, "%d", &n->port) == 1;
			fclose(f);
			if (ok) {
				snprintf(n->url, sizeof(n->url), "tcp://127.0.0.1:%d", n->port);
				return;
			}
		}
		if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
			fprintf(stderr, "ethermemd exited at start; log %s\n", n->log);
			exit(1);
		}
		t_sleep_ms(10);
	}
	fprintf(stderr, "ethermemd did not start\n");
	exit(1);
}

/* Signals the node and returns its exit status (-1 if it had to be killed). */
static __attribute__((unused)) int t_node_stop(struct t_node *n, int sig)
{
	int status = 0;

	if (n->pid <= 0)
		return 0;
	kill(n->pid, sig);
	for (int i = 0; i < 1000; i++) {
		if (waitpid(n->pid, &status, WNOHANG) == n->pid) {
			n->pid = 0;
			return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
		}
		t_sleep_ms(10);
	}
	kill(n->pid, SIGKILL);
	waitpid(n->pid, &status, 0);
	n->pid = 0;
	return -1;
}

/* inline: a test that does not link the library need not define these */
static inline em_pool *t_connect(struct t_node *nodes, int count, const char *secret, int *rc)
{
	char list[1024] = "";
	struct em_pool_opts o = { .size = sizeof(o), .secret_file = secret };
	em_pool *p = NULL;

	for (int i = 0; i < count; i++) {
		strcat(list, i ? "," : "");
		strcat(list, nodes[i].url);
	}
	o.nodes = list;
	*rc = em_pool_connect(&p, &o);
	return *rc ? NULL : p;
}

static inline em_pool *t_connect_ok(struct t_node *nodes, int count, const char *secret)
{
	int rc;
	em_pool *p = t_connect(nodes, count, secret, &rc);
	CHECK_RC(rc, 0);
	return p;
}

/* True when the node's log contains `needle`. */
static __attribute__((unused)) int t_log_has(const struct t_node *n, const char *needle)
{
	char buf[65536];
	int fd = open(n->log, O_RDONLY), len;

	if (fd < 0)
		return 0;
	len = (int)read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return 0;
	buf[len] = 0;
	return strstr(buf, needle) != NULL;
}

static __attribute__((unused)) uint64_t t_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ---- a real etcd for the cluster tests ---- */

#include <netinet/in.h>
#include <sys/socket.h>

struct t_etcd {
	pid_t pid;
	int port;
	char url[64];
	char log[300];
};

/* A port the kernel calls free now (etcd cannot report one it picked). */
static __attribute__((unused)) int t_free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	CHECK(fd >= 0);
	CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&a, &l) == 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

/* True once etcd answers /health with health true. */
static __attribute__((unused)) int t_etcd_healthy(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				 .sin_port = htons((uint16_t)port) };
	static const char req[] = "GET /health HTTP/1.0\r\n\r\n";
	char buf[2048];
	int fd = socket(AF_INET, SOCK_STREAM, 0), len = 0, r;
	struct timeval tv = { 1, 0 };

	if (fd < 0)
		return 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) ||
	    write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
		close(fd);
		return 0;
	}
	while (len < (int)sizeof(buf) - 1 &&
	       (r = (int)read(fd, buf + len, sizeof(buf) - 1 - (size_t)len)) > 0)
		len += r;
	close(fd);
	buf[len > 0 ? len : 0] = 0;
	return strstr(buf, "\"health\":\"true\"") != NULL;
}

/* Starts a one-member etcd on loopback in the test's directory, with
 * short heartbeats so that leases of one second are allowed. Exits 77 when
 * etcd is not installed (scripts/deps.sh installs it). */
static __attribute__((unused)) void t_etcd_start(struct t_etcd *e)
{
	const char *bin = getenv("EM_TEST_ETCD") ? getenv("EM_TEST_ETCD") : "/usr/bin/etcd";
	static int seq;

	if (access(bin, X_OK)) {
		fprintf(stderr, "SKIP: no etcd at %s (scripts/deps.sh installs etcd-server)\n",
			bin);
		exit(77);
	}
	for (int attempt = 0; attempt < 3; attempt++) {
		char cmd[3072];
		int peer, id = seq++;

		memset(e, 0, sizeof(*e));
		e->port = t_free_port();
		do
			peer = t_free_port();
		while (peer == e->port);
		snprintf(e->url, sizeof(e->url), "http://127.0.0.1:%d", e->port);
		snprintf(e->log, sizeof(e->log), "%s/etcd%d.log", t_tmpdir(), id);
		e->pid = fork();
		CHECK(e->pid >= 0);
		if (e->pid == 0) {
			int fd = open(e->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			dup2(fd, 2);
			dup2(fd, 1);
			snprintf(
				cmd, sizeof(cmd),
				"exec %s --name t%d --data-dir %s/etcd%d.data "
				"--listen-client-urls http://127.0.0.1:%d --advertise-client-urls http://127.0.0.1:%d "
				"--listen-peer-urls http://127.0.0.1:%d --initial-advertise-peer-urls http://127.0.0.1:%d "
				"--initial-cluster t%d=http://127.0.0.1:%d "
				"--heartbeat-interval 50 --election-timeout 500 --logger zap --log-level warn",
				bin, id, t_tmpdir(), id, e->port, e->port, peer, peer, id, peer);
			execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
			_exit(127);
		}
		for (int i = 0; i < 1500; i++) {
			int status;
			if (t_etcd_healthy(e->port))
				return;
			if (waitpid(e->pid, &status, WNOHANG) == e->pid) {
				e->pid = 0;
				break; /* a port taken meanwhile: try others */
			}
			t_sleep_ms(20);
		}
		if (e->pid > 0) {
			kill(e->pid, SIGKILL);
			waitpid(e->pid, NULL, 0);
			e->pid = 0;
		}
	}
	fprintf(stderr, "etcd did not start; see %s\n", e->log);
	exit(1);
}

/* SIGSTOP takes effect a moment after kill() returns (a node may still
 * serve a request sent right after): waits until the process is stopped. */
static __attribute__((unused)) void t_freeze(pid_t pid)
{
	kill(pid, SIGSTOP);
	for (int i = 0; i < 2500; i++) {
		char path[64], buf[512];
		int fd, len;
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		fd = open(path, O_RDONLY);
		len = fd >= 0 ? (int)read(fd, buf, sizeof(buf) - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (len > 0) {
			char *rp;
			buf[len] = 0;
			rp = strrchr(buf, ')');
			if (rp && rp[1] == ' ' && rp[2] == 'T')
				return;
		}
		t_sleep_ms(2);
	}
	fprintf(stderr, "process %d did not stop\n", (int)pid);
	exit(1);
}

static __attribute__((unused)) void t_etcd_stop(struct t_etcd *e)
{
	if (e->pid > 0) {
		kill(e->pid, SIGTERM);
		for (int i = 0; i < 500 && waitpid(e->pid, NULL, WNOHANG) != e->pid; i++)
			t_sleep_ms(10);
		kill(e->pid, SIGKILL);
		waitpid(e->pid, NULL, 0);
	}
	e->pid = 0;
}

#define T_SECRET "correct horse battery staple 42\n"

/* A raw TCP connection to a node on loopback, for tests that speak the wire
 * protocol by hand; reads give up after 5 s. */
static inline int t_dial(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { .tv_sec = 5 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Connects with o until the pool has at least `want` nodes (an etcd-run
 * pool sees a node once it has registered), for up to 10 s; exits 1 if it
 * never does. */
static inline em_pool *t_connect_want(const struct em_pool_opts *o, int want)
{
	em_pool *p = NULL;
	int rc = 0;

	for (int i = 0; i < 400; i++) {
		rc = em_pool_connect(&p, o);
		if (!rc && em_pool_nodes(p) >= want)
			return p;
		if (!rc)
			em_pool_close(p);
		t_sleep_ms(25);
	}
	fprintf(stderr, "cannot connect: %s\n", em_strerror(rc));
	exit(1);
}

/* For tests of etcd-run pools, which include common/etcd.h and
 * common/cluster.h before this file. */
#if defined(EM_ETCD_H) && defined(EM_CLUSTER_H)
/* Waits up to 3 s until node n's record in etcd (cluster `cluster`)
 * publishes at most `most` free bytes: placement reads what is published,
 * which lags the node by up to a heartbeat. */
static __attribute__((unused)) void t_wait_published(const char *etcd_url, const char *cluster,
						     const struct t_node *n, uint64_t most)
{
	struct em_etcd *e;
	char key[256], val[1024];
	struct em_node_rec rec;

	CHECK_RC(em_etcd_open(&e, etcd_url, 2000), 0);
	snprintf(key, sizeof(key), "/ethermem/%s/nodes/127.0.0.1:%d", cluster, n->port);
	for (int i = 0; i < 300; i++) {
		int len = em_etcd_get(e, key, val, sizeof(val));
		if (len > 0 && !em_node_rec_decode(val, (size_t)len, &rec) && rec.free <= most)
			break;
		t_sleep_ms(10);
	}
	em_etcd_close(e);
}
#endif

/* For tests that look inside the library, which include common/wire.h and
 * lib/internal.h before this file. */
#if defined(EM_WIRE_H) && defined(EM_LIB_INTERNAL_H)
/* Whether node i of pool p holds a part named piece: 0 yes, -ENOENT no. */
static __attribute__((unused)) int t_piece_there(em_pool *p, unsigned i, const char *piece)
{
	uint8_t req[3 + EM_NAME_MAX], resp[3 + EM_NAME_MAX + EM_MAX_LAYOUT];
	int n = em_namelayout_encode(req, sizeof(req), piece, NULL, 0), rc;
	struct em_part res;

	if (n < 0)
		return n;
	rc = em_ctl(p, i, EM_W_OPEN, 0, 0, 0, req, (uint32_t)n, resp, sizeof(resp), &res);
	if (!rc)
		em_ctl(p, i, EM_W_CLOSE, res.r_region, 0, 0, NULL, 0, NULL, 0, NULL);
	return rc;
}
#endif

#endif
