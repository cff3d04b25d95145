/*
 * test_config.c - the settings table and its one parser: every row is well
 * formed and its default passes its own check; each type refuses what it
 * must (letters for numbers, signs, out of range, not a power of two, an
 * unknown choice); and a bad value reaches a caller as -EINVAL from the call
 * that reads it (environment and client.conf), never as a quiet default.
 * No node is needed: a bad setting fails before any connection is made.
 */
#include "common/config.h"
#include "harness.h"

static int parses(enum em_cfg_id id, const char *text, int64_t *num)
{
	struct em_cfg_val v;
	int rc = em_cfg_parse(id, "test", text, &v);

	if (!rc && num)
		*num = v.num;
	return rc;
}

int main(void)
{
	struct em_pool_opts o = { .size = sizeof(o) };
	char path[512];
	em_pool *pool = NULL;
	int64_t n;
	FILE *f;

	/* rows: something to set them by, help, a parsable default */
	for (int i = 0; i < EM_CFG_COUNT; i++) {
		const struct em_setting *s = &em_settings[i];

		CHECK(s->env || s->key);
		CHECK(s->help && s->help[0]);
		CHECK(!s->env || !strncmp(s->env, "ETHERMEM_", 9));
		CHECK(s->type != EM_CFG_ENUM || s->choices);
		CHECK(s->type != EM_CFG_DURATION || (s->choices && s->choices[1] == 's'));
		if (s->def && s->type != EM_CFG_STR && parses((enum em_cfg_id)i, s->def, NULL)) {
			fprintf(stderr, "row %d: default '%s' fails its own check\n", i, s->def);
			return 1;
		}
		for (int j = 0; j < i; j++) {
			CHECK(!s->env || !em_settings[j].env || strcmp(s->env, em_settings[j].env));
			/* one key names one row on each side */
			CHECK(!s->key || !em_settings[j].key ||
			      strcmp(s->key, em_settings[j].key) ||
			      !(s->where & em_settings[j].where & (EM_CFG_CLIENT | EM_CFG_NODE)));
		}
	}

	/* numbers */
	CHECK(parses(EM_CFG_TIMEOUT_MS, "2500", &n) == 0 && n == 2500);
	CHECK(parses(EM_CFG_TIMEOUT_MS, "abc", NULL) == -EINVAL);
	CHECK(parses(EM_CFG_TIMEOUT_MS, "12abc", NULL) == -EINVAL);
	CHECK(parses(EM_CFG_TIMEOUT_MS, "", NULL) == -EINVAL);
	CHECK(parses(EM_CFG_TIMEOUT_MS, "0", NULL) == -EINVAL);
	CHECK(parses(EM_CFG_POLL_US, "0", &n) == 0 && n == 0);
	CHECK(parses(EM_CFG_POLL_US, "-1", NULL) == -EINVAL);
	CHECK(parses(EM_CFG_POLL_US, "1000001", NULL) == -EINVAL);
	CHECK(parses(EM_CFG_POLL_US, "99999999999999999999999", NULL) == -EINVAL);
	CHECK(parses(EM_CFG_OX_ETHERTYPE, "0xAAAA", &n) == 0 && n == 0xaaaa);
	CHECK(parses(EM_CFG_OX_ETHERTYPE, "0x5ff", NULL) == -EINVAL);
	/* sizes */
	CHECK(parses(EM_CFG_MAP_CACHE, "8G", &n) == 0 && n == 8ll << 30);
	CHECK(parses(EM_CFG_MAP_CACHE, "-1G", NULL) == -EINVAL);
	CHECK(parses(EM_CFG_MAP_CACHE, "lots", NULL) == -EINVAL);
	CHECK(parses(EM_CFG_LLM_MAP_UNIT, "64K", &n) == 0 && n == 65536);
	CHECK(parses(EM_CFG_LLM_MAP_UNIT, "96K", NULL) == -EINVAL); /* not a power of two */
	CHECK(parses(EM_CFG_LLM_MAP_UNIT, "4M", NULL) == -EINVAL);
	/* bools and choices */
	CHECK(parses(EM_CFG_MAP_HUGE, "0", &n) == 0 && n == 0);
	CHECK(parses(EM_CFG_MAP_HUGE, "Yes", &n) == 0 && n == 1);
	CHECK(parses(EM_CFG_MAP_HUGE, "2", NULL) == -EINVAL);
	CHECK(parses(EM_CFG_MAP_FAULTS, "thread", &n) == 0 && n == 1);
	CHECK(parses(EM_CFG_MAP_FAULTS, "threads", NULL) == -EINVAL);
	CHECK(parses(EM_CFG_OX_MODE, "1.0.3", &n) == 0 && n == 1);
	/* keys */
	CHECK(em_cfg_by_key("timeout-ms", EM_CFG_CLIENT) == EM_CFG_TIMEOUT_MS);
	CHECK(em_cfg_by_key("poll-us", EM_CFG_NODE) == EM_CFG_NODE_POLL_US);
	CHECK(em_cfg_by_key("capacity", EM_CFG_CLIENT) == -1);

	/* the environment: unset gives the default, bad fails */
	unsetenv("ETHERMEM_POLL_US");
	CHECK(em_cfg_env_num(EM_CFG_POLL_US, &n) == 0 && n == 50);
	setenv("ETHERMEM_POLL_US", "", 1); /* empty is unset */
	CHECK(em_cfg_env_num(EM_CFG_POLL_US, &n) == 0 && n == 50);
	setenv("ETHERMEM_POLL_US", "7", 1);
	CHECK(em_cfg_env_num(EM_CFG_POLL_US, &n) == 0 && n == 7);
	CHECK(em_cfg_check_env() == 0);
	setenv("ETHERMEM_POLL_US", "-5", 1);
	CHECK(em_cfg_env_num(EM_CFG_POLL_US, &n) == -EINVAL);
	CHECK(em_cfg_check_env() == -EINVAL);

	/* ... and through the library's call, before any connection */
	o.nodes = "tcp://127.0.0.1:1";
	o.secret_file = "/dev/null";
	CHECK_RC(em_pool_connect(&pool, &o), -EINVAL);
	unsetenv("ETHERMEM_POLL_US");
	setenv("ETHERMEM_TIMEOUT_MS", "abc", 1);
	CHECK_RC(em_pool_connect(&pool, &o), -EINVAL);
	setenv("ETHERMEM_DEBUG", "maybe", 1);
	unsetenv("ETHERMEM_TIMEOUT_MS");
	CHECK_RC(em_pool_connect(&pool, &o), -EINVAL);
	unsetenv("ETHERMEM_DEBUG");

	/* a bad key value in the client file fails the same way */
	snprintf(path, sizeof(path), "%s/client.conf", t_tmpdir());
	f = fopen(path, "w");
	CHECK(f);
	fprintf(f, "nodes = tcp://127.0.0.1:1\ntimeout-ms = soon\n");
	fclose(f);
	o.config_file = path;
	CHECK_RC(em_pool_connect(&pool, &o), -EINVAL);
	CHECK(pool == NULL);
	t_cleanup();
	printf("ok\n");
	return 0;
}
