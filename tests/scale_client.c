/*
 * scale_client.c - one client of the scale check (test_cluster_scale.sh):
 * connects through etcd (ETHERMEM_ETCD, ETHERMEM_CLUSTER), creates a named
 * region of its own, prints the node that holds it, then writes and reads
 * back 64 KiB blocks until its time is up or STOPFILE exists, checking every
 * byte. A drain may move the region meanwhile (the library follows it).
 *
 *   usage: scale_client NAME SECONDS [STOPFILE]
 *
 * A read that returns wrong bytes ends it at once with exit 2. An error is
 * allowed only if it is one a lost node gives (EM_ENONODE, EHOSTDOWN, a
 * timeout, a broken connection); any other ends it with exit 3. At the
 * end it prints one line: ok (operations that succeeded), err, the wall
 * clock in ms of the last success and of the first error, and that error;
 * then "now NODE", the node that holds the region at the end.
 */
#include "harness.h"
#include "lib/internal.h"

#include <sys/time.h>
#include <unistd.h>

#define BLOCK 65536
#define BLOCKS 16

static uint64_t wall_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static int lost_node_error(int rc)
{
	return rc == -EM_ENONODE || rc == -EHOSTDOWN || rc == -ETIMEDOUT || rc == -ENOTCONN ||
	       rc == -ECONNRESET || rc == -EPIPE || rc == -ECONNREFUSED || rc == -EIO;
}

int main(int argc, char **argv)
{
	struct em_region_opts ro = { .size = sizeof(ro), .chunk_size = BLOCK * BLOCKS };
	static uint8_t want[BLOCK], got[BLOCK];
	uint64_t ok = 0, err = 0, last_ok = 0, first_err = 0, end, iter = 0;
	int first_rc = 0, rc = -1;
	em_region *r;
	em_pool *p = NULL;

	if (argc != 3 && argc != 4)
		return 64;
	end = wall_ms() + (uint64_t)atoi(argv[2]) * 1000;
	for (int i = 0; i < 100 && (rc = em_pool_connect(&p, NULL)); i++)
		t_sleep_ms(50);
	CHECK_RC(rc, 0);
	CHECK_RC(em_region_create(p, argv[1], BLOCK * BLOCKS, &ro, &r), 0);
	CHECK(r->nseg == 1);
	printf("node %s\n", p->nodes[r->node[0]].addr);
	fflush(stdout);
	while (wall_ms() < end && (argc < 4 || access(argv[3], F_OK))) {
		unsigned k = (unsigned)(iter % BLOCKS);

		for (size_t i = 0; i < BLOCK; i++)
			want[i] = (uint8_t)(iter * 131 + i * 7 + (i >> 8));
		rc = em_write(r, (uint64_t)k * BLOCK, want, BLOCK);
		if (!rc) {
			memset(got, 0xee, sizeof(got));
			rc = em_read(r, (uint64_t)k * BLOCK, got, BLOCK);
			if (!rc && memcmp(want, got, BLOCK)) {
				printf("WRONG bytes in block %u at iteration %llu\n", k,
				       (unsigned long long)iter);
				return 2;
			}
		}
		if (!rc) {
			ok++;
			last_ok = wall_ms();
		} else {
			if (!lost_node_error(rc)) {
				printf("unexpected error %d (%s)\n", rc, em_strerror(rc));
				return 3;
			}
			if (!err++) {
				first_err = wall_ms();
				first_rc = rc;
			}
			t_sleep_ms(50);
		}
		iter++;
	}
	printf("ok %llu err %llu last_ok %llu first_err %llu rc %d %s\n", (unsigned long long)ok,
	       (unsigned long long)err, (unsigned long long)last_ok, (unsigned long long)first_err,
	       first_rc, first_rc ? em_strerror(first_rc) : "-");
	printf("now %s\n", p->nodes[r->node[0]].addr);
	em_region_close(r);
	em_pool_close(p);
	return 0;
}
