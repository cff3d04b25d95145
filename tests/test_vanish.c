/*
 * test_vanish.c - the memory of a client host that disappears without
 * closing its connections comes back. A client in a network namespace
 * creates an anonymous region; then its link is deleted under it and the
 * client killed, so no FIN or RST ever reaches the node. The node's
 * keepalive probes (--keepalive 2) must end the session and free the region.
 * Also --idle-timeout: a live client that sends nothing is dropped.
 * Needs root and network namespaces (skips otherwise).
 */
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>

#include "harness.h"

static char ns[32], veth[32];

static void undo(void)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "ip link del %sa 2>/dev/null; ip netns del %s 2>/dev/null; true",
		 veth, ns);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", ns);
	t_cleanup();
}

static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static uint32_t regions_now(em_pool *p)
{
	struct em_node_status st = { .size = sizeof(st) };

	CHECK_RC(em_pool_status(p, &st, 1), 1);
	return st.regions;
}

int main(void)
{
	const char *sec = t_secret("s", T_SECRET);
	int sub = getpid() % 250, ready[2];
	char path[64];
	struct t_node n;
	em_pool *p;
	pid_t child;
	uint32_t before;
	int i;

	if (geteuid() != 0 || sh("ip netns list >/dev/null 2>&1") != 0) {
		fprintf(stderr, "skip: needs root and ip netns\n");
		return 77;
	}
	snprintf(ns, sizeof(ns), "hdv%d", (int)getpid());
	snprintf(veth, sizeof(veth), "hdv%d", (int)getpid());
	atexit(undo);
	if (sh("ip netns add %s && ip link add %sa type veth peer name %sb && "
	       "ip link set %sb netns %s && ip addr add 10.97.%d.1/24 dev %sa && "
	       "ip link set %sa up && ip -n %s addr add 10.97.%d.2/24 dev %sb && "
	       "ip -n %s link set %sb up && ip -n %s link set lo up",
	       ns, veth, veth, veth, ns, sub, veth, veth, ns, sub, veth, ns, veth, ns) != 0) {
		fprintf(stderr, "skip: cannot make a namespace and a veth pair\n");
		return 77;
	}
	/* the node listens on every address (the later --listen wins over the
	 * harness's loopback one): the host's end of the link goes away with
	 * the link, and the observer below stays on loopback */
	t_node_start(&n, "64M", sec, "--keepalive 2 --listen tcp://0.0.0.0:0");
	p = t_connect_ok(&n, 1, sec);
	before = regions_now(p);

	CHECK(pipe(ready) == 0);
	child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		em_region *r;
		em_pool *cp;
		int fd;

		snprintf(path, sizeof(path), "/var/run/netns/%s", ns);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) != 0)
			_exit(2);
		snprintf(n.url, sizeof(n.url), "tcp://10.97.%d.1:%d", sub, n.port);
		cp = t_connect_ok(&n, 1, sec);
		if (em_region_create(cp, NULL, 8 << 20, NULL, &r) != 0 ||
		    em_write(r, 0, "x", 1) != 0)
			_exit(3);
		if (write(ready[1], "r", 1) != 1)
			_exit(4);
		pause();
		_exit(0);
	}
	{
		char c = 0;
		CHECK(read(ready[0], &c, 1) == 1 && c == 'r');
	}
	CHECK(regions_now(p) == before + 1);
	/* the host vanishes: its link first, so its kernel's FIN goes nowhere */
	CHECK(sh("ip link del %sa", veth) == 0);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	CHECK(sh("ip netns del %s", ns) == 0);
	/* keepalive after 2 s, probes every second or so: well inside 30 s */
	for (i = 0; i < 300 && regions_now(p) != before; i++)
		t_sleep_ms(100);
	fprintf(stderr, "region freed after %.1f s\n", i / 10.0);
	CHECK(regions_now(p) == before);
	em_pool_close(p);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);

	/* --idle-timeout: a member that sends nothing is dropped and its
	 * anonymous region freed; an active one is not (and with keepalive
	 * off: the idle limit does not depend on it) */
	t_node_start(&n, "64M", sec, "--idle-timeout 1 --keepalive 0");
	p = t_connect_ok(&n, 1, sec);
	{
		em_pool *q = t_connect_ok(&n, 1, sec);
		em_region *r;
		CHECK_RC(em_region_create(q, NULL, 1 << 20, NULL, &r), 0);
		CHECK(regions_now(p) == 1);
		for (i = 0; i < 50 && regions_now(p) != 0; i++)
			t_sleep_ms(100); /* p polls every 100 ms: it stays */
		CHECK(regions_now(p) == 0);
		CHECK(t_log_has(&n, "idle for 1 s"));
		em_region_close(r);
		em_pool_close(q);
	}
	em_pool_close(p);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	return 0;
}
