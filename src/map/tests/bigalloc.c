/*
 * bigalloc.c - an ordinary program for the `ethermem run` test: it allocates
 * (malloc, calloc, realloc to twice the size, posix_memalign, an anonymous
 * mmap) several times more than the local budget it is given, reads a file
 * into a big buffer with read(2) (a kernel write into pool memory), maps
 * the same file read-only (imported into the pool by the shim), and
 * prints a checksum that must equal the one of a plain run.
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv)
{
	size_t n = (size_t)atol(argv[1]) << 20;
	unsigned char *a = malloc(n), *b = calloc(1, n);
	unsigned long sum = 0;
	for (size_t i = 0; i < n; i++)
		a[i] = (unsigned char)(i * 7 + (i >> 12));
	for (size_t i = 0; i < n; i += 4096)
		b[i] = a[n - 1 - i];
	a = realloc(a, n * 2);
	memset(a + n, 3, n);
	for (size_t i = 0; i < 2 * n; i++)
		sum += a[i] * (i & 15);
	for (size_t i = 0; i < n; i += 4096)
		sum += b[i];
	void *pm = NULL;
	if (posix_memalign(&pm, 4096, n))
		return 1;
	memset(pm, 5, n);
	for (size_t i = 0; i < n; i += 999)
		sum += ((unsigned char *)pm)[i];
	free(pm);
	unsigned char *mm =
		mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mm == MAP_FAILED)
		return 1;
	for (size_t i = 0; i < n; i += 512)
		mm[i] = (unsigned char)i;
	for (size_t i = 0; i < n; i += 511)
		sum += mm[i];
	munmap(mm, n);
	if (argc > 2) {
		int fd = open(argv[2], O_RDONLY);
		ssize_t got, tot = 0;
		unsigned char *rb = malloc(n);
		while (fd >= 0 && (got = read(fd, rb + tot, n - (size_t)tot)) > 0)
			tot += got;
		if (fd < 0 || got < 0) {
			perror("read");
			return 1;
		}
		for (ssize_t i = 0; i < tot; i++)
			sum += rb[i] * (unsigned)(i % 7);
		close(fd);
		free(rb);
		/* a read-only private file mapping: the shim imports it */
		fd = open(argv[2], O_RDONLY);
		const unsigned char *fm = mmap(NULL, (size_t)tot, PROT_READ, MAP_PRIVATE, fd, 0);
		if (fm == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		for (ssize_t i = 0; i < tot; i++)
			sum += fm[i] * (unsigned)(i % 5);
		munmap((void *)fm, (size_t)tot);
		close(fd);
	}
	printf("%lu\n", sum);
	free(a);
	free(b);
	return 0;
}
