"""numpy_pipe.py MIB: a NumPy pipeline over three float64 arrays of MIB MiB
each: sums, a dot product, a seeded random gather, a sort, a cumulative sum
and a matrix product over a slice. It makes temporaries as NumPy does, so
the working set moves between arrays and back. Prints the results exactly
(float.hex), which must be the same under every memory tier."""
import sys

import numpy as np

mib = int(sys.argv[1])
n = mib * (1 << 20) // 8
rng = np.random.default_rng(7)
a = rng.standard_normal(n)
b = rng.standard_normal(n)
c = np.empty(n)
np.multiply(a, 0.5, out=c)
c += b
out = [a.sum(), b.sum(), c.sum(), np.dot(a, b)]
idx = rng.integers(0, n, size=n // 16)
out.append(c[idx].sum())
s = np.sort(b)
out += [s[0], s[n // 2], s[-1]]
np.cumsum(a, out=c)
out.append(c[-1])
k = int((n // 4) ** 0.5)
m = a[: k * k].reshape(k, k)
out.append((m @ b[:k]).sum())
print(" ".join(float(v).hex() for v in out))
