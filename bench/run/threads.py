"""threads.py THREADS MIB SHARED_MIB: THREADS Python threads, each sorting
its own MIB MiB of float64 and reading a shared array of SHARED_MIB MiB in
between (NumPy releases the GIL, so the faults of all threads interleave).
Prints one checksum per thread."""
import sys
import threading

import numpy as np

nth, mib, shared_mib = (int(a) for a in sys.argv[1:4])
shared = np.random.default_rng(3).standard_normal(shared_mib * (1 << 20) // 8)
res = [None] * nth


def work(i):
    r = np.random.default_rng(100 + i)
    v = r.standard_normal(mib * (1 << 20) // 8)
    v.sort()
    step = 1 + i
    res[i] = (v[:: 1024].sum() + shared[i::step].sum()).hex()


ts = [threading.Thread(target=work, args=(i,)) for i in range(nth)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(" ".join(res))
