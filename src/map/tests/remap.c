/*
 * remap.c - an ordinary program for the `ethermem run` test of munmap and
 * mremap on big mappings: it cuts pieces out of large anonymous mappings
 * (head, inside one page group, across groups, tail, a range that runs on
 * into other memory), checks that what stays keeps its contents and that a
 * removed piece faults SIGSEGV and can be mapped again, replaces part of a
 * mapping with MAP_FIXED, shrinks with mremap, grows with and without
 * MREMAP_MAYMOVE (also from the middle of a mapping and on a read-only file
 * mapping), and cuts pieces while two threads work on the rest. It prints
 * one digest per step, which must equal the one of a plain run.
 *
 * Usage: test_map_remap MB [FILE]: areas of MB MiB (at least 4); FILE, of
 * at least 6 MiB, for the file mapping. Exits 0, or 1 with a reason.
 * SIGSEGV is caught in-process (sigsetjmp): a forked child would not do, as
 * pool memory is not inherited and the child would fault anywhere.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define K 1024ul
#define M (1024ul * 1024ul)
#define RW (PROT_READ | PROT_WRITE)
#define ANON (MAP_PRIVATE | MAP_ANONYMOUS)

static size_t N;
static sigjmp_buf jb;

#define CHECK(c, ...)                                                \
	do {                                                         \
		if (!(c)) {                                          \
			fprintf(stderr, "FAIL line %d: ", __LINE__); \
			fprintf(stderr, __VA_ARGS__);                \
			fprintf(stderr, "\n");                       \
			exit(1);                                     \
		}                                                    \
	} while (0)

static unsigned char pat(size_t i, unsigned seed)
{
	return (unsigned char)(i * 131 + seed + (i >> 13) * 7);
}

static void fill(unsigned char *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = pat(i, seed);
}

/* Bytes [from, to) of an area filled with `seed` still hold the pattern. */
static void expect(const unsigned char *p, size_t from, size_t to, unsigned seed, const char *what)
{
	for (size_t i = from; i < to; i++)
		CHECK(p[i] == pat(i, seed), "%s: byte %zu is %u, want %u", what, i, p[i],
		      pat(i, seed));
}

static void expect_zero(const unsigned char *p, size_t len, const char *what)
{
	for (size_t i = 0; i < len; i++)
		CHECK(!p[i], "%s: byte %zu is %u, want 0", what, i, p[i]);
}

static uint64_t fnv(uint64_t h, const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

static void on_segv(int sig)
{
	siglongjmp(jb, sig);
}

/* Whether reading p faults with SIGSEGV, as an unmapped page must. */
static int segv(const volatile unsigned char *p)
{
	struct sigaction sa = { .sa_handler = on_segv }, old;
	int hit = 0;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old);
	if (sigsetjmp(jb, 1) == 0)
		(void)*p;
	else
		hit = 1;
	sigaction(SIGSEGV, &old, NULL);
	return hit;
}

static void gone(const unsigned char *p, size_t len, const char *what)
{
	CHECK(segv(p) && segv(p + len / 2) && segv(p + len - 1), "%s: still mapped", what);
}

static unsigned char *area(size_t len, unsigned seed)
{
	unsigned char *p = mmap(NULL, len, RW, ANON, -1, 0);

	CHECK(p != MAP_FAILED, "mmap %zu: %s", len, strerror(errno));
	fill(p, len, seed);
	return p;
}

/* Pieces out of A; what stays, what went, and the freed range reused. */
static unsigned char *reuse_at, *reuse2_at;

static void cut(void)
{
	unsigned char *a = area(N, 1);
	static const size_t pc[][2] = {
		{ 0, 20 * K },
		{ 3 * M + 4 * K, 8 * K },
		{ 2 * M - 60 * K, 128 * K },
		{ 0, 100 * K } /* tail */,
	};
	size_t tail = N - 100 * K;
	uint64_t h = 0xcbf29ce484222325ull;

	for (unsigned i = 0; i < 4; i++) {
		size_t off = i == 3 ? tail : pc[i][0];

		CHECK(munmap(a + off, pc[i][1]) == 0, "munmap piece %u: %s", i, strerror(errno));
		gone(a + off, pc[i][1], "cut piece");
	}
	/* what stays, between the pieces */
	expect(a, 20 * K, 2 * M - 60 * K, 1, "cut: head..");
	expect(a, 2 * M + 68 * K, 3 * M + 4 * K, 1, "cut: ..middle..");
	expect(a, 3 * M + 12 * K, tail, 1, "cut: ..tail");
	h = fnv(h, a + 20 * K, 2 * M - 80 * K);
	h = fnv(h, a + 3 * M + 12 * K, tail - 3 * M - 12 * K);
	/* the freed middle range is free for anyone */
	reuse_at = mmap(a + 2 * M - 60 * K, 128 * K, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(reuse_at == a + 2 * M - 60 * K, "the freed range cannot be mapped again: %s",
	      strerror(errno));
	memset(reuse_at, 0x77, 128 * K);
	/* the tail, then a range over the last 100K of A's pages and that
	 * new small mapping beyond them: both must go */
	reuse2_at = mmap(a + tail, 100 * K, RW, ANON | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(reuse2_at == a + tail, "the freed tail cannot be mapped again: %s", strerror(errno));
	memset(reuse2_at, 0x66, 100 * K);
	CHECK(munmap(a + tail - 100 * K, 200 * K) == 0, "munmap over the end: %s", strerror(errno));
	gone(a + tail - 100 * K, 100 * K, "block part of a range over the end");
	gone(a + tail, 100 * K, "other part of a range over the end");
	expect(a, 3 * M + 12 * K, tail - 100 * K, 1, "cut: after the range over the end");
	/* MAP_FIXED over the block: zeros there, the rest untouched */
	CHECK(mmap(a + 1 * M, 256 * K, RW, ANON | MAP_FIXED, -1, 0) == a + 1 * M, "MAP_FIXED: %s",
	      strerror(errno));
	expect_zero(a + 1 * M, 256 * K, "MAP_FIXED range");
	memset(a + 1 * M, 0x55, 256 * K);
	expect(a, 20 * K, 1 * M, 1, "cut: before MAP_FIXED");
	expect(a, 1 * M + 256 * K, 2 * M - 60 * K, 1, "cut: after MAP_FIXED");
	printf("cut %016llx\n", (unsigned long long)h);
	/* the rest: one munmap over the whole old range, holes and all */
	CHECK(munmap(a, N) == 0, "munmap all: %s", strerror(errno));
	gone(a + 20 * K, 4 * K, "cut: all");
	gone(a + 1 * M, 4 * K, "cut: the MAP_FIXED part");
	gone(a + 3 * M + 12 * K, 4 * K, "cut: all");
	/* which took the reused ranges with it, as Linux does */
	gone(reuse_at, 128 * K, "cut: the reused range");
}

/* mremap: shrink, grow in place (refused), grow by moving. */
static void shrink_grow(void)
{
	unsigned char *c = area(N, 2), *c2, *g;
	size_t half = N / 2 + 12 * K;
	uint64_t h = 0xcbf29ce484222325ull;

	CHECK(mremap(c, N, half, 0) == c, "shrink: %s", strerror(errno));
	expect(c, 0, half, 2, "shrink");
	gone(c + half, N - half, "shrunk tail");
	/* the page after it taken: growing in place must fail, as Linux does */
	g = mmap(c + half, 4 * K, PROT_NONE, ANON | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(g == c + half, "guard page: %s", strerror(errno));
	errno = 0;
	CHECK(mremap(c, half, half + 64 * K, 0) == MAP_FAILED && errno == ENOMEM,
	      "grow in place: %s", strerror(errno));
	expect(c, 0, half, 2, "after a refused grow");
	c2 = mremap(c, half, 2 * N, MREMAP_MAYMOVE);
	CHECK(c2 != MAP_FAILED && c2 != c, "grow by moving: %s", strerror(errno));
	expect(c2, 0, half, 2, "moved");
	expect_zero(c2 + half, 2 * N - half, "grown part");
	gone(c, half, "old place of a moved mapping");
	munmap(g, 4 * K);
	memset(c2 + half, 9, 2 * N - half);
	h = fnv(h, c2, 2 * N);
	/* shrink below the threshold by MAYMOVE: stays in place */
	CHECK(mremap(c2, 2 * N, 200 * K, MREMAP_MAYMOVE) == c2, "shrink with MAYMOVE: %s",
	      strerror(errno));
	expect(c2, 0, 200 * K, 2, "shrunk moved");
	/* grow that small piece, to below the threshold */
	c = mremap(c2, 200 * K, 512 * K, MREMAP_MAYMOVE);
	CHECK(c != MAP_FAILED, "grow small: %s", strerror(errno));
	expect(c, 0, 200 * K, 2, "grown small");
	expect_zero(c + 200 * K, 312 * K, "grown small, new part");
	h = fnv(h, c, 512 * K);
	munmap(c, 512 * K);
	printf("shrink_grow %016llx\n", (unsigned long long)h);
}

/* Growing a piece from the middle of a mapping moves only that piece. */
static void middle(void)
{
	unsigned char *d = area(N, 3), *d2, *t, *f;
	uint64_t h = 0xcbf29ce484222325ull;

	d2 = mremap(d + 1 * M, 1 * M, 3 * M, MREMAP_MAYMOVE);
	CHECK(d2 != MAP_FAILED, "grow a middle piece: %s", strerror(errno));
	for (size_t i = 0; i < 1 * M; i++)
		CHECK(d2[i] == pat(i + 1 * M, 3), "middle piece: byte %zu", i);
	expect_zero(d2 + 1 * M, 2 * M, "middle piece, new part");
	expect(d, 0, 1 * M, 3, "before the middle piece");
	expect(d, 2 * M, N, 3, "after the middle piece");
	/* the piece right after the first MiB cannot grow in place */
	CHECK(d2 != d + 1 * M, "the middle piece did not move");
	gone(d + 1 * M, 1 * M, "old place of the middle piece");
	h = fnv(h, d2, 3 * M);
	h = fnv(h, d, 1 * M);
	h = fnv(h, d + 2 * M, N - 2 * M);
	/* a range running from a mapping into the hole is refused (EFAULT) */
	errno = 0;
	CHECK(mremap(d + 1 * M - 4 * K, 8 * K, 16 * K, MREMAP_MAYMOVE) == MAP_FAILED &&
		      errno == EFAULT,
	      "a range over a hole: %s", strerror(errno));
	/* small mappings are the system's, mremap included */
	t = mmap(NULL, 256 * K, RW, ANON, -1, 0);
	CHECK(t != MAP_FAILED, "small mmap: %s", strerror(errno));
	fill(t, 256 * K, 4);
	t = mremap(t, 256 * K, 768 * K, MREMAP_MAYMOVE);
	CHECK(t != MAP_FAILED, "grow a small mapping: %s", strerror(errno));
	expect(t, 0, 256 * K, 4, "small grown");
	munmap(t, 768 * K);
	/* moving a mapping to an address of one's choosing: supported by
	 * Linux, refused on pool memory (EINVAL); either way nothing is lost */
	f = mmap(NULL, 2 * M, PROT_NONE, ANON, -1, 0);
	t = mremap(d, 1 * M, 1 * M, MREMAP_MAYMOVE | MREMAP_FIXED, f);
	if (t == MAP_FAILED) {
		CHECK(errno == EINVAL, "MREMAP_FIXED: %s", strerror(errno));
		expect(d, 0, 1 * M, 3, "after a refused MREMAP_FIXED");
	} else {
		CHECK(t == f, "MREMAP_FIXED went elsewhere");
		expect(t, 0, 1 * M, 3, "after MREMAP_FIXED");
	}
	munmap(f, 2 * M);
	munmap(d2, 3 * M);
	munmap(d, N); /* whatever of it is left */
	printf("middle %016llx\n", (unsigned long long)h);
}

/* A read-only file mapping (imported into the pool): grown, the new part
 * is more of the file; shrunk and cut, the rest is unchanged. */
static void file(const char *path)
{
	int fd = open(path, O_RDONLY);
	unsigned char *f, *f2, *want = malloc(6 * M);
	uint64_t h = 0xcbf29ce484222325ull;

	CHECK(fd >= 0 && want && pread(fd, want, 6 * M, 0) == (ssize_t)(6 * M), "%s: need 6 MiB",
	      path);
	f = mmap(NULL, 2 * M, PROT_READ, MAP_PRIVATE, fd, 0);
	CHECK(f != MAP_FAILED, "mmap file: %s", strerror(errno));
	close(fd); /* growing must not need the program's descriptor */
	CHECK(!memcmp(f, want, 2 * M), "file mapping differs");
	f2 = mremap(f, 2 * M, 6 * M, MREMAP_MAYMOVE);
	CHECK(f2 != MAP_FAILED, "grow a file mapping: %s", strerror(errno));
	CHECK(!memcmp(f2, want, 6 * M), "grown file mapping differs");
	if (f2 != f)
		gone(f, 2 * M, "old place of the file mapping");
	CHECK(mremap(f2, 6 * M, 5 * M + 4 * K, 0) == f2, "shrink a file mapping: %s",
	      strerror(errno));
	CHECK(munmap(f2 + 1 * M + 4 * K, 64 * K) == 0, "cut a file mapping: %s", strerror(errno));
	gone(f2 + 1 * M + 4 * K, 64 * K, "cut of a file mapping");
	gone(f2 + 5 * M + 4 * K, 4 * K, "shrunk file mapping");
	CHECK(!memcmp(f2, want, 1 * M + 4 * K) &&
		      !memcmp(f2 + 1 * M + 68 * K, want + 1 * M + 68 * K, 4 * M - 64 * K),
	      "file mapping differs after the cut");
	h = fnv(h, f2, 1 * M + 4 * K);
	munmap(f2, 6 * M);
	free(want);
	printf("file %016llx\n", (unsigned long long)h);
}

/* Two threads write and read their halves of a mapping at random while
 * the main thread cuts pieces out of it outside theirs. */
static unsigned char *tm;
static size_t tlo[2], thi[2];

static void *worker(void *arg)
{
	unsigned t = (unsigned)(uintptr_t)arg, seed = 99 + t;
	uint64_t *w = (uint64_t *)tm;

	for (unsigned i = 0; i < 100000; i++) {
		size_t k = tlo[t] / 8 + (size_t)rand_r(&seed) % ((thi[t] - tlo[t]) / 8);

		if (i & 1)
			w[k] = ((uint64_t)t << 60) ^ ((uint64_t)i * 0x9e3779b97f4a7c15ull) ^ k;
		else if (w[k] == 0xdeadbeef)
			abort(); /* keeps the read */
	}
	return NULL;
}

static void threads(void)
{
	pthread_t th[2];
	uint64_t h = 0xcbf29ce484222325ull;
	/* between the halves, and at both ends */
	const size_t pc[][2] = { { N / 2 - 132 * K, 264 * K },
				 { 0, 36 * K },
				 { N - 300 * K, 300 * K } };

	tm = area(N, 5);
	tlo[0] = 36 * K;
	thi[0] = N / 2 - 132 * K;
	tlo[1] = N / 2 + 132 * K;
	thi[1] = N - 300 * K;
	for (uintptr_t t = 0; t < 2; t++)
		pthread_create(&th[t], NULL, worker, (void *)t);
	for (unsigned i = 0; i < 3; i++) {
		CHECK(munmap(tm + pc[i][0], pc[i][1]) == 0, "munmap beside threads: %s",
		      strerror(errno));
		gone(tm + pc[i][0], pc[i][1], "piece cut beside threads");
	}
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	for (int t = 0; t < 2; t++)
		h = fnv(h, tm + tlo[t], thi[t] - tlo[t]);
	munmap(tm, N);
	printf("threads %016llx\n", (unsigned long long)h);
}

int main(int argc, char **argv)
{
	N = argc > 1 ? (size_t)atol(argv[1]) * M : 0;
	CHECK(N >= 4 * M, "usage: test_map_remap MB [FILE], MB >= 4");
	cut();
	shrink_grow();
	middle();
	if (argc > 2)
		file(argv[2]);
	threads();
	return 0;
}
