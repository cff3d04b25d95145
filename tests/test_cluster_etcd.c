/*
 * test_etcd.c - the etcd client against a real etcd: put, get, prefix
 * range, the create-if-absent transaction, conditional delete, leases that
 * are kept alive and leases that expire, a watch that sees puts and
 * deletes, failover past a dead endpoint, and the JSON reader on bad input.
 */
#include "harness.h"

#include "common/etcd.h"

static int count_cb(void *arg, const struct em_etcd_kv *kv)
{
	int *n = arg;
	(*n)++;
	CHECK(kv->klen > 0 && kv->key[kv->klen] == 0);
	return 0;
}

struct seen {
	int puts, dels;
	char last[64];
};

static int watch_cb(void *arg, const struct em_etcd_kv *kv)
{
	struct seen *s = arg;
	if (kv->deleted)
		s->dels++;
	else
		s->puts++;
	snprintf(s->last, sizeof(s->last), "%.*s", (int)kv->klen, kv->key);
	return 0;
}

static void json_checks(void)
{
	static const char *bad[] = {
		"",
		"{",
		"{\"a\"",
		"{\"a\":}",
		"[1,,2]",
		"\"\\u0000\"",
		"{\"a\":1,}",
		"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
		"{\"a\" 1}",
		"\"abc"
	};
	const char *good =
		" {\"x\":{\"y\":[1, \"2\", {\"z\":\"a\\\"b\"}]}, \"n\":\"18446744073709551615\", \"t\":true} ";
	struct em_json root, x, y, el, z;
	char buf[16];
	size_t pos = 0;
	uint64_t u;
	int64_t i;

	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		int rc = em_json_root(bad[k], strlen(bad[k]), &root);
		if (rc == 0 && bad[k][0] == '"')
			rc = em_json_str(root, buf, sizeof(buf)) < 0 ? -EPROTO : 0;
		if (rc == 0 && bad[k][0] == '[') {
			pos = 0;
			while ((rc = em_json_next(root, &pos, &el)) == 1)
				;
			rc = rc < 0 ? rc : 0;
		}
		if (rc == 0 && bad[k][0] == '{')
			rc = em_json_get(root, "zz", &x) == -EPROTO ? -EPROTO : 0;
		if (rc == 0) {
			fprintf(stderr, "accepted bad JSON %s\n", bad[k]);
			exit(1);
		}
	}
	CHECK_RC(em_json_root(good, strlen(good), &root), 0);
	CHECK_RC(em_json_get(root, "x", &x), 0);
	CHECK_RC(em_json_get(x, "y", &y), 0);
	pos = 0;
	CHECK_RC(em_json_next(y, &pos, &el), 1);
	CHECK_RC(em_json_u64(el, &u), 0);
	CHECK(u == 1);
	CHECK_RC(em_json_next(y, &pos, &el), 1);
	CHECK_RC(em_json_i64(el, &i), 0);
	CHECK(i == 2);
	CHECK_RC(em_json_next(y, &pos, &el), 1);
	CHECK_RC(em_json_get(el, "z", &z), 0);
	CHECK_RC(em_json_str(z, buf, sizeof(buf)), 3);
	CHECK(!strcmp(buf, "a\"b"));
	CHECK_RC(em_json_str(z, buf, 3), -ENOSPC);
	CHECK_RC(em_json_next(y, &pos, &el), 0);
	CHECK(em_json_get_u64(root, "n", 0) == UINT64_MAX);
	CHECK_RC(em_json_get(root, "t", &x), 0);
	CHECK(em_json_true(x));
	CHECK_RC(em_json_get(root, "missing", &x), -ENOENT);
	/* a Content-Length beyond what came is never believed */
	{
		const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}";
		int st;
		size_t off, len;
		CHECK_RC(em_http_split(r, sizeof(r) - 1, true, &st, &off, &len), -EMSGSIZE);
		CHECK_RC(em_http_split(r, sizeof(r) - 1, false, &st, &off, &len), -EAGAIN);
	}
}

int main(void)
{
	struct t_etcd ec;
	struct em_etcd *e, *dead;
	struct em_etcd_watch *w;
	struct seen s = { 0 };
	char val[64], list[256];
	int64_t lease, rev = 0;
	int n = 0, rc;

	json_checks();
	t_etcd_start(&ec);
	CHECK_RC(em_etcd_open(&e, ec.url, 3000), 0);

	CHECK_RC(em_etcd_get(e, "/t/a", val, sizeof(val)), -ENOENT);
	CHECK_RC(em_etcd_put(e, "/t/a", "one", 3, 0), 0);
	CHECK_RC(em_etcd_get(e, "/t/a", val, sizeof(val)), 3);
	CHECK(!strcmp(val, "one"));
	CHECK_RC(em_etcd_get(e, "/t/a", val, 2), -ENOSPC);
	CHECK_RC(em_etcd_put(e, "/t/b", "two", 3, 0), 0);
	CHECK_RC(em_etcd_put(e, "/u/c", "three", 5, 0), 0);
	CHECK_RC(em_etcd_range(e, "/t/", true, count_cb, &n, &rev), 2);
	CHECK(n == 2 && rev > 0);

	/* create is exclusive */
	CHECK_RC(em_etcd_create(e, "/t/x", "first", 5, 0), 0);
	CHECK_RC(em_etcd_create(e, "/t/x", "second", 6, 0), -EEXIST);
	CHECK_RC(em_etcd_get(e, "/t/x", val, sizeof(val)), 5);
	CHECK(!strcmp(val, "first"));

	/* conditional delete: only at the revision we read */
	CHECK_RC(em_etcd_delete_if(e, "/t/x", 1), 0);
	CHECK_RC(em_etcd_get(e, "/t/x", val, sizeof(val)), 5);
	CHECK_RC(em_etcd_delete(e, "/t/x", false), 1);
	CHECK_RC(em_etcd_delete(e, "/t/x", false), 0);

	/* a watch sees what follows it */
	CHECK_RC(em_etcd_watch_open(e, "/t/", 0, &w), 0);
	em_etcd_watch_read(w, 300, watch_cb, &s, &rev); /* the "created" answer */
	CHECK_RC(em_etcd_put(e, "/t/w", "v", 1, 0), 0);
	CHECK_RC(em_etcd_delete(e, "/t/w", false), 1);
	CHECK_RC(em_etcd_put(e, "/u/other", "v", 1, 0), 0); /* outside the prefix */
	for (int i = 0; i < 50 && s.puts + s.dels < 2; i++) {
		rc = em_etcd_watch_read(w, 100, watch_cb, &s, &rev);
		CHECK(rc >= 0);
	}
	CHECK(s.puts == 1 && s.dels == 1 && !strcmp(s.last, "/t/w"));

	/* a lease kept alive keeps its key; one let go takes its key along */
	CHECK_RC(em_etcd_lease_grant(e, 1, &lease), 0);
	CHECK_RC(em_etcd_put(e, "/t/leased", "x", 1, lease), 0);
	for (int i = 0; i < 6; i++) {
		t_sleep_ms(300);
		CHECK(em_etcd_lease_keepalive(e, lease) > 0);
	}
	CHECK_RC(em_etcd_get(e, "/t/leased", val, sizeof(val)), 1);
	for (int i = 0; i < 60 && em_etcd_get(e, "/t/leased", val, sizeof(val)) == 1; i++)
		t_sleep_ms(100);
	CHECK_RC(em_etcd_get(e, "/t/leased", val, sizeof(val)), -ENOENT);
	CHECK_RC(em_etcd_lease_keepalive(e, lease), -ENOENT);
	for (int i = 0; i < 50 && s.dels < 2; i++)
		em_etcd_watch_read(w, 100, watch_cb, &s, &rev);
	CHECK(s.dels == 2 && !strcmp(s.last, "/t/leased"));
	em_etcd_watch_close(w);

	/* a dead endpoint first in the list is passed over */
	snprintf(list, sizeof(list), "http://127.0.0.1:%d,%s", t_free_port(), ec.url);
	CHECK_RC(em_etcd_open(&dead, list, 1000), 0);
	CHECK_RC(em_etcd_get(dead, "/t/a", val, sizeof(val)), 3);
	CHECK(strstr(ec.url, em_etcd_endpoint(dead)) != NULL);
	em_etcd_close(dead);
	CHECK_RC(em_etcd_open(&dead, "https://127.0.0.1:1", 1000), -EPROTONOSUPPORT);
	CHECK_RC(em_etcd_open(&dead, "", 1000), -EINVAL);

	/* etcd gone: calls fail within their timeout, not forever */
	t_etcd_stop(&ec);
	rc = em_etcd_get(e, "/t/a", val, sizeof(val));
	CHECK(rc < 0 && rc != -ENOENT);
	em_etcd_close(e);
	t_cleanup();
	return 0;
}
