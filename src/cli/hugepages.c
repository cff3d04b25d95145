/*
 * hugepages.c - lends explicit 2 MiB pages for `ethermem bench map` (and the
 * map tests) by raising vm.nr_hugepages and lowering it again afterwards.
 *
 * vm.nr_hugepages is a system setting shared with every other program, so
 * the change is relative (add what we need, give back what we got) and made
 * under an flock of the sysctl file, so that concurrent users never undo
 * each other's pages. The library itself never writes it: a mapping uses
 * huge pages only when the system already has enough free.
 */
#include "cli/map_floor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

int em_cli_huge_adjust(long delta, long *done)
{
	int fd = open("/proc/sys/vm/nr_hugepages", O_RDWR | O_CLOEXEC), len, rc = -EIO;
	long cur;
	char b[32];
	ssize_t n;

	*done = 0;
	if (fd < 0)
		return -errno;
	/* the lock is on the sysctl file itself: every user of this function
	 * serialises its read-modify-write there */
	flock(fd, LOCK_EX);
	n = pread(fd, b, sizeof(b) - 1, 0);
	if (n > 0) {
		b[n] = 0;
		cur = strtol(b, NULL, 10);
		len = snprintf(b, sizeof(b), "%ld\n", cur + delta < 0 ? 0 : cur + delta);
		/* the kernel may grant fewer than asked (fragmentation): read back */
		if (pwrite(fd, b, (size_t)len, 0) == len &&
		    (n = pread(fd, b, sizeof(b) - 1, 0)) > 0) {
			b[n] = 0;
			*done = strtol(b, NULL, 10) - cur;
			rc = 0;
		}
	}
	flock(fd, LOCK_UN);
	close(fd);
	return rc;
}
