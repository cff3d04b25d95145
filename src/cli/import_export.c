/*
 * import_export.c - `ethermem import FILE REGION` and `ethermem export
 * REGION FILE`: move a file (model weights, a dataset) into a named region
 * once, so that any number of processes can then em_map it, and back.
 *
 * Data moves in 4 MiB operations, eight in flight on one queue: one queue
 * keeps the pipe to every node full without threads. Import creates the
 * region with the file's size (opening it if it already exists with that
 * size); a different size is an error rather than a silent truncation.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "ethermem.h"

#define EMM_IO_CHUNK (4u << 20)
#define EMM_IO_DEPTH 8

/* Streams between fd and the region: to_region 1 imports. */
static int emm_copy(em_region *r, int fd, uint64_t size, int to_region)
{
	struct em_completion c[EMM_IO_DEPTH];
	char *buf = malloc((size_t)EMM_IO_DEPTH * EMM_IO_CHUNK);
	uint64_t next = 0, done = 0;
	unsigned busy = 0, freeb = (1u << EMM_IO_DEPTH) - 1;
	uint64_t off_of[EMM_IO_DEPTH];
	size_t len_of[EMM_IO_DEPTH];
	em_queue *q;
	int rc;

	if (!buf)
		return -ENOMEM;
	rc = em_queue_create(em_region_pool(r), EMM_IO_DEPTH, &q);
	if (rc) {
		free(buf);
		return rc;
	}
	while (done < size && !rc) {
		while (next < size && freeb) {
			unsigned b = (unsigned)__builtin_ctz(freeb);
			size_t len = size - next < EMM_IO_CHUNK ? (size_t)(size - next)
								: EMM_IO_CHUNK;
			char *p = buf + (size_t)b * EMM_IO_CHUNK;
			struct em_op op = {
				.opcode = to_region ? EM_OP_WRITE : EM_OP_READ,
				.region = r,
				.offset = next,
				.buf = p,
				.len = len,
				.user_data = b,
			};

			if (to_region && pread(fd, p, len, (off_t)next) != (ssize_t)len) {
				rc = -EIO;
				break;
			}
			if (em_submit(q, &op, 1) != 1)
				break;
			off_of[b] = next;
			len_of[b] = len;
			freeb &= ~(1u << b);
			busy++;
			next += len;
		}
		if (rc || !busy)
			break;
		int n = em_wait(q, c, 1, EMM_IO_DEPTH, -1);

		if (n <= 0) {
			rc = n ? n : -ETIMEDOUT;
			break;
		}
		for (int i = 0; i < n; i++) {
			unsigned b = (unsigned)c[i].user_data;

			if (c[i].result && !rc)
				rc = c[i].result;
			if (!to_region && !c[i].result &&
			    pwrite(fd, buf + (size_t)b * EMM_IO_CHUNK, len_of[b],
				   (off_t)off_of[b]) != (ssize_t)len_of[b])
				rc = -EIO;
			freeb |= 1u << b;
			busy--;
			done += len_of[b];
		}
	}
	while (busy && em_wait(q, c, busy, EMM_IO_DEPTH, -1) > 0)
		busy = em_queue_inflight(q);
	em_queue_destroy(q);
	free(buf);
	return rc;
}

static int emm_xport(int argc, char **argv, struct em_cli_pool *cp, int imp)
{
	const char *prog = imp ? "ethermem import" : "ethermem export";
	const char *file = argv[imp ? 1 : 2], *name = argv[imp ? 2 : 1];
	em_pool *pool;
	em_region *r;
	struct stat st;
	int fd, rc;

	if (argc != 3 || !strcmp(argv[1], "--help")) {
		fprintf(argc == 2 && !strcmp(argv[1], "--help") ? stdout : stderr,
			imp ? "usage: ethermem import FILE REGION\n"
			    : "usage: ethermem export REGION FILE\n");
		return argc == 2 ? 0 : 2;
	}
	fd = imp ? open(file, O_RDONLY | O_CLOEXEC)
		 : open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || (imp && fstat(fd, &st))) {
		fprintf(stderr, "%s: %s: %s\n", prog, file, strerror(errno));
		return 1;
	}
	if (imp && st.st_size == 0) {
		fprintf(stderr, "%s: %s is empty; a region has at least one byte\n", prog, file);
		close(fd);
		return 1;
	}
	if (em_cli_connect(cp, &pool, prog)) {
		close(fd);
		if (!imp)
			unlink(file); /* it was created above, and would be left empty */
		return 1;
	}
	rc = imp ? em_region_create(pool, name, (uint64_t)st.st_size, NULL, &r)
		 : em_region_open(pool, name, &r);
	if (rc) {
		fprintf(stderr, "%s: region %s: %s\n", prog, name, em_strerror(rc));
	} else {
		uint64_t size = imp ? (uint64_t)st.st_size : em_region_size(r);

		rc = emm_copy(r, fd, size, imp);
		if (!rc && !imp && ftruncate(fd, (off_t)size))
			rc = -errno;
		if (rc)
			fprintf(stderr, "%s: %s\n", prog, em_strerror(rc));
		em_region_close(r);
	}
	em_pool_close(pool);
	if (close(fd) && !rc) {
		fprintf(stderr, "%s: %s: %s\n", prog, file, strerror(errno));
		rc = -EIO;
	}
	return rc ? 1 : 0;
}

int em_cli_import(int argc, char **argv, struct em_cli_pool *cp)
{
	return emm_xport(argc, argv, cp, 1);
}

int em_cli_export(int argc, char **argv, struct em_cli_pool *cp)
{
	return emm_xport(argc, argv, cp, 0);
}
