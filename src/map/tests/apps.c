/*
 * apps.c - what ordinary programs do to their big allocations, as small
 * cases for `ethermem run` (test_run_apps.sh runs each plainly and under the
 * shim and compares what they print).
 *
 *   split   madvise(MADV_HUGEPAGE) and mprotect from inside a fetch unit
 *           (NumPy asks for huge pages from the second page of an array
 *           on): mprotect cuts one unit across several VMAs; the hint,
 *           under the shim, must leave the block one VMA without THP
 *   advise  MADV_DONTNEED / MADV_FREE / MADV_REMOVE, mprotect and
 *           hugepage hints on pool memory, with their content rules
 *           (DONTNEED on private anonymous memory reads back zeros)
 *   write   write(2) from a pool buffer never touched before, and read(2)
 *           into one: the kernel must not answer EFAULT
 *   fork    a child of the program reads and writes the parent's big
 *           allocations (copies: the parent's stay as they were), then
 *           fork + exec and posix_spawn
 *
 * Every case prints a digest of what it read, so the output of a plain run
 * is the reference. Exit 0 done, 1 a check failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MIB (1u << 20)

static int bad;

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "apps: %s\n", what);
		bad = 1;
	}
}

static uint64_t digest(const unsigned char *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i += 512)
		p[i] = (unsigned char)(i / 512 * 31 + seed);
}

/* Whether this process runs under `ethermem run`: its preload shim is in
 * LD_PRELOAD (a test program reads no ETHERMEM_ setting itself; only
 * config.c does, which core_settings checks). */
static int under_pool(void)
{
	const char *pl = getenv("LD_PRELOAD");

	return pl && strstr(pl, "ethermem-preload") != NULL;
}

/* Under the shim: whether [p, p + n) lies in one VMA that the kernel will not
 * back with transparent huge pages (smaps' THPeligible 0; a kernel without
 * THP prints no such line). */
static int one_small_vma(const void *p, size_t n)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	unsigned long lo = 0, hi = 0;
	int in = 0, thp = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		int t;

		if (sscanf(line, "%lx-%lx ", &a, &b) == 2) {
			in = a <= (uintptr_t)p && (uintptr_t)p < b;
			if (in)
				lo = a, hi = b;
		} else if (in && sscanf(line, "THPeligible: %d", &t) == 1) {
			thp = t;
		}
	}
	fclose(f);
	return lo <= (uintptr_t)p && hi >= (uintptr_t)p + n && !thp;
}

static int split(void)
{
	size_t n = 8 * MIB;
	unsigned char *p = malloc(n), *q = malloc(n);

	if (!p || !q)
		return 1;
	/* the hint from the second page on cuts the first unit in two */
	madvise((void *)(((uintptr_t)p + 4096 + 4095) & ~4095ul), n - 8192, MADV_HUGEPAGE);
	/* the shim answers the hint without applying it to its blocks, and the
	 * engine keeps THP off them: the block stays one VMA (a plain run's
	 * array is cut, which is what this case reproduced) */
	if (under_pool())
		check(one_small_vma(p, n), "a huge-page hint cut a block or turned THP on");
	p[0] = 1;
	fill(p, n, 1);
	/* a read-only piece in the middle of another unit, then writable again */
	uintptr_t a = ((uintptr_t)q + 3 * MIB + 4096) & ~4095ul;

	check(mprotect((void *)a, 8192, PROT_READ) == 0, "mprotect PROT_READ");
	check(q[a - (uintptr_t)q] == 0, "a fresh read-only page is not zero");
	check(mprotect((void *)a, 8192, PROT_READ | PROT_WRITE) == 0, "mprotect back");
	fill(q, n, 2);
	printf("split %016llx %016llx\n", (unsigned long long)digest(p, n),
	       (unsigned long long)digest(q, n));
	free(p);
	free(q);
	return 0;
}

static int advise(void)
{
	size_t n = 16 * MIB;
	unsigned char *p =
		mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	size_t zeros = 0;

	if (p == MAP_FAILED)
		return 1;
	memset(p, 0x5a, n);
	/* DONTNEED on private anonymous memory: zeros on the next read,
	 * cut at page (not unit) edges */
	check(madvise(p + 4096, 3 * MIB - 8192, MADV_DONTNEED) == 0, "MADV_DONTNEED");
	check(p[0] == 0x5a && p[4095] == 0x5a, "DONTNEED took the page before the range");
	check(p[4096] == 0 && p[3 * MIB - 4097] == 0, "DONTNEED range does not read zero");
	check(p[3 * MIB - 4096] == 0x5a, "DONTNEED took the page after the range");
	for (size_t i = 0; i < n; i++)
		zeros += !p[i];
	check(zeros == 3 * MIB - 8192, "DONTNEED zeroed the wrong number of bytes");
	/* FREE: contents are either kept or zero, the program may write again */
	check(madvise(p + 4 * MIB, MIB, MADV_FREE) == 0, "MADV_FREE");
	check(p[4 * MIB] == 0x5a || p[4 * MIB] == 0, "MADV_FREE gave neither data nor zero");
	memset(p + 4 * MIB, 0x11, MIB);
	/* REMOVE is refused on private memory (EINVAL), data kept */
	check(madvise(p + 6 * MIB, MIB, MADV_REMOVE) == -1 && errno == EINVAL,
	      "MADV_REMOVE on private memory");
	check(p[6 * MIB] == 0x5a, "MADV_REMOVE lost data");
	/* hints */
	check(madvise(p + 8 * MIB + 4096, 2 * MIB, MADV_HUGEPAGE) == 0, "MADV_HUGEPAGE");
	check(madvise(p + 8 * MIB, 4 * MIB, MADV_NOHUGEPAGE) == 0, "MADV_NOHUGEPAGE");
	check(madvise(p + 12 * MIB, MIB, MADV_WILLNEED) == 0, "MADV_WILLNEED");
	/* mprotect round trip keeps data */
	check(mprotect(p + 10 * MIB, MIB, PROT_READ) == 0, "mprotect read-only");
	check(p[10 * MIB + 100] == 0x5a, "data lost under PROT_READ");
	check(mprotect(p + 10 * MIB, MIB, PROT_READ | PROT_WRITE) == 0, "mprotect writable");
	p[10 * MIB + 100] = 7;
	/* a second round of DONTNEED over everything, then use it again */
	check(madvise(p, n, MADV_DONTNEED) == 0, "MADV_DONTNEED all");
	zeros = 0;
	for (size_t i = 0; i < n; i += 4096)
		zeros += !p[i];
	check(zeros == n / 4096, "DONTNEED of everything left data");
	fill(p, n, 3);
	printf("advise %016llx\n", (unsigned long long)digest(p, n));
	munmap(p, n);
	return 0;
}

static int writes(const char *dir)
{
	size_t n = 8 * MIB;
	unsigned char *p = malloc(n), *q = malloc(n);
	char path[4096];
	int fd;

	if (!p || !q)
		return 1;
	snprintf(path, sizeof(path), "%s/apps-write.bin", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return 1;
	/* never touched: the kernel reads zeros out of pool memory */
	check(write(fd, p, n) == (ssize_t)n, "write(2) from untouched pool memory");
	fill(p, n, 4);
	check(pwrite(fd, p, n, (off_t)n) == (ssize_t)n, "write(2) from written pool memory");
	check(pread(fd, q, 2 * MIB, (off_t)n) == 2 * MIB, "read(2) into pool memory");
	check(pread(fd, q + 2 * MIB, n - 2 * MIB, (off_t)n + 2 * MIB) == (ssize_t)(n - 2 * MIB),
	      "read(2) into pool memory, rest");
	check(memcmp(p, q, n) == 0, "read back differs");
	close(fd);
	unlink(path);
	printf("write %016llx\n", (unsigned long long)digest(q, n));
	return 0;
}

static int forks(const char *self)
{
	size_t n = 16 * MIB;
	unsigned char *p = malloc(n);
	int st;
	pid_t pid;

	if (!p)
		return 1;
	fill(p, n, 5);
	uint64_t before = digest(p, n);

	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		/* the child reads what the parent wrote and changes its copy */
		uint64_t d = digest(p, n);

		fill(p, n, 6);
		printf("child %016llx %016llx\n", (unsigned long long)d,
		       (unsigned long long)digest(p, n));
		fflush(stdout);
		free(p);
		unsigned char *c = malloc(n); /* the child may allocate big too */

		if (!c)
			_exit(1);
		fill(c, n, 7);
		printf("child new %016llx\n", (unsigned long long)digest(c, n));
		fflush(stdout);
		_exit(d == before ? 0 : 1);
	}
	check(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && !WEXITSTATUS(st),
	      "fork child");
	check(digest(p, n) == before, "the child's writes reached the parent");
	fill(p, n, 8);
	printf("parent %016llx\n", (unsigned long long)digest(p, n));
	fflush(stdout);
	/* fork + exec, and posix_spawn, of this program's `split` */
	pid = fork();
	if (pid == 0) {
		execl(self, self, "split", (char *)NULL);
		_exit(127);
	}
	check(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && !WEXITSTATUS(st),
	      "fork + exec");
	char *argv[] = { (char *)self, "split", NULL };

	check(posix_spawn(&pid, self, NULL, NULL, argv, environ) == 0, "posix_spawn");
	check(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && !WEXITSTATUS(st),
	      "posix_spawn child");
	free(p);
	return 0;
}

int main(int argc, char **argv)
{
	int r = 1;

	if (argc < 2) {
		fprintf(stderr, "usage: %s split|advise|write DIR|fork\n", argv[0]);
		return 2;
	}
	if (!strcmp(argv[1], "split"))
		r = split();
	else if (!strcmp(argv[1], "advise"))
		r = advise();
	else if (!strcmp(argv[1], "write") && argc > 2)
		r = writes(argv[2]);
	else if (!strcmp(argv[1], "fork"))
		r = forks(argv[0]);
	return r || bad;
}
