"""Python against C in one run, on the same pool and region:

- readinto of 4 KiB and 2 MiB from Python (Region.readinto into a bytearray)
  against em_read in a C loop (Region._c_read_loop: the same library call,
  no Python between calls), interleaved rounds, median of each;
- a sequential scan of a mapped region with NumPy (sum of every 64-bit word)
  against the scan of `ethermem bench map` (C, the same size, cache and
  2 MiB fetch unit), whose JSON the caller passes in with --c-scan.

Prints one JSON object per row; ratio is Python's time over C's (1.0 = as
fast as C; higher is slower)."""
import argparse
import json
import statistics
import time

import numpy as np

import ethermem


def readinto_rows(region, rounds):
    out = []
    for size, iters in ((4096, 5000), (2 << 20, 200)):
        buf = bytearray(size)
        region.readinto(0, buf)
        py, c = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(iters):
                region.readinto(0, buf)
            py.append((time.perf_counter() - t) / iters)
            c.append(region._c_read_loop(0, size, iters) / iters)
        p, q = statistics.median(py), statistics.median(c)
        out.append({"bench": "readinto", "bytes": size, "python_us": round(p * 1e6, 2),
                    "c_us": round(q * 1e6, 2), "ratio": round(p / q, 3)})
    return out


def scan_row(pool, size, cache, c_scan):
    with pool.create(size) as r:
        chunk = np.arange(4 << 20 >> 3, dtype=np.uint64)
        for off in range(0, size, chunk.nbytes):
            r.write(off, chunk)
        with r.map(cache=cache, fetch_unit="2M", readonly=True) as m:
            a = np.frombuffer(m, np.uint64)
            t = time.perf_counter()
            s = int(a.sum())
            dt = time.perf_counter() - t
            del a
        expect = int(chunk.sum()) * (size // chunk.nbytes)
        assert s == expect % (1 << 64), "scan read wrong data"
    gbps = size / dt / 1e9
    row = {"bench": "map scan", "bytes": size, "cache": cache, "numpy_gbps": round(gbps, 3)}
    if c_scan:
        row["c_gbps"] = c_scan
        row["ratio"] = round(c_scan / gbps, 3)  # time ratio, Python over C
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--size", default="512M")
    ap.add_argument("--cache", default="128M")
    ap.add_argument("--c-scan", type=float, help="GB/s of bench map's pool scan, same run")
    a = ap.parse_args()
    with ethermem.Pool() as pool:
        with pool.create(4 << 20) as r:
            r.write(0, bytes(4 << 20))
            for row in readinto_rows(r, a.rounds):
                print(json.dumps(row))
        print(json.dumps(scan_row(pool, ethermem.parse_size(a.size),
                                  ethermem.parse_size(a.cache), a.c_scan)))


if __name__ == "__main__":
    main()
