/*
 * test_ls_many.c - `ethermem region ls` lists every named region, not the
 * first 1,024: the test creates 1,100 small ones and counts the lines.
 */
#include "harness.h"

int main(void)
{
	const char *sec = t_secret("s", T_SECRET);
	struct t_node n;
	em_pool *p;
	em_region *r;
	char cmd[1024], line[256];
	int lines = 0, last = 0;
	FILE *f;

	atexit(t_cleanup);
	t_node_start(&n, "64M", sec, NULL);
	p = t_connect_ok(&n, 1, sec);
	for (int i = 0; i < 1100; i++) {
		char name[32];
		snprintf(name, sizeof(name), "many-%04d", i);
		CHECK_RC(em_region_create(p, name, 4096, NULL, &r), 0);
		em_region_close(r);
	}
	snprintf(cmd, sizeof(cmd), "%s --nodes %s --secret-file %s region ls", t_bin("ethermem"),
		 n.url, sec);
	f = popen(cmd, "r");
	CHECK(f);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "many-", 5)) {
			lines++;
			last |= !strncmp(line, "many-1099 ", 10);
		}
	CHECK(pclose(f) == 0);
	fprintf(stderr, "listed %d of 1100\n", lines);
	CHECK(lines == 1100 && last);
	em_pool_close(p);
	CHECK_RC(t_node_stop(&n, SIGTERM), 0);
	return 0;
}
