"""forkpool.py MIB: a multiprocessing pool of two forked workers, each
summing slices of a MIB MiB array the parent filled before the fork (the
children read the parent's pool-backed pages). Prints the sums exactly."""
import multiprocessing as mp
import sys

import numpy as np

mib = int(sys.argv[1])
arr = np.random.default_rng(5).standard_normal(mib * (1 << 20) // 8)


def part(i):
    n = len(arr) // 8
    return float(arr[i * n : (i + 1) * n].sum()).hex()


if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        print(" ".join(pool.map(part, range(8))))
