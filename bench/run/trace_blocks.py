#!/usr/bin/python3
"""trace_blocks.py TRACE [--min-mb N]: where a run's fetches went, per
mapping, from a fetch trace (ETHERMEM_MAP_TRACE; pool-only.sh keeps it with
POOL_ONLY_KEEP=DIR).

Each mapping (one pool block of the shim: an array, a weight matrix, an
arena of the interpreter) gets a line: its span, distinct units, zero fills,
units fetched and fetches per unit. Mappings of at least --min-mb (default
4) also get their sessions: the stretches of the trace in which that
mapping's installs follow each other with no more than a tenth of the
cache's worth of other installs between them, each with the units fetched
in it and that count over the mapping's size. A weight matrix read once per
pass shows one session per pass near 1.0; a number well above 1.0 is a
matrix read several times inside one stretch, which no cache smaller than
the matrix can hold.

--loop LO-HI --passes N --sweeps K --out FILE writes a reference trace for
MIN (ethermem-ideal) for a program that loops over mappings LO..HI (their
serials, in order) N times: the trace with every pass's stretch of each of
those mappings replaced by K full sweeps of it, in order, everything else
kept where it was. A run's own trace holds only its misses: the units that
stayed resident are missing from it, and so are the sweeps that hit, so
MIN over it assumes each matrix is read once per pass. Repeating a sweep
inside its stretch tells MIN that the whole matrix is used there, which is
what a GEMM that sweeps its matrix many times per call does.
"""
import argparse
import struct
from collections import defaultdict


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--min-mb", type=float, default=4)
    ap.add_argument("--loop", help="LO-HI: serials of the mappings looped over")
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--sweeps", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    raw = open(a.trace, "rb").read()
    recs = []
    for off in range(0, len(raw) - 7, 8):
        x, y = struct.unpack_from("<II", raw, off)
        recs.append((x & ((1 << 27) - 1), 1 << ((x >> 27) + 11), y & 0x7FFFFFFF, y >> 31))
    per = defaultdict(lambda: {"unit": 0, "n": 0, "zero": 0, "units": set(), "hi": 0, "at": []})
    for i, (s, unit, idx, zero) in enumerate(recs):
        m = per[s]
        m["unit"], m["hi"] = unit, max(m["hi"], idx)
        m["n"] += 1
        m["zero"] += zero
        m["units"].add(idx)
        if not zero:
            m["at"].append(i)
    total = sum(m["n"] - m["zero"] for m in per.values())
    print(f"{len(recs)} installs, {total} fetched units over {len(per)} mappings")
    for s, m in sorted(per.items()):
        size = (m["hi"] + 1) * m["unit"]
        fetched = m["n"] - m["zero"]
        print(f"mapping {s}: {size / 2**20:.1f} MiB, unit {m['unit'] >> 10} KiB, "
              f"{len(m['units'])} units, {m['zero']} zero-filled, {fetched} fetched "
              f"({fetched * m['unit'] / 1e6:.1f} MB, {fetched / (m['hi'] + 1):.2f} per unit)")
        if size < a.min_mb * 2**20 or not m["at"]:
            continue
        gap = max(1, len(m["units"]) // 10)
        sess, start, prev = [], m["at"][0], m["at"][0]
        count = 1
        for i in m["at"][1:]:
            if i - prev > gap:
                sess.append((start, count))
                start, count = i, 0
            prev = i
            count += 1
        sess.append((start, count))
        print("  sessions (first install, units fetched, per unit): " +
              " ".join(f"{st}:{c}:{c / (m['hi'] + 1):.2f}" for st, c in sess))
    if a.loop and a.out:
        lo, hi = (int(v) for v in a.loop.split("-"))
        expand(recs, per, lo, hi, a.passes, a.sweeps, a.out)


def expand(recs, per, lo, hi, passes, sweeps, path):
    """See --loop: a fetched record of mapping s stands for its stretch in
    the current pass; stretches of the loop with no fetch at all (resident
    throughout) are emitted before the next one that has some. A late record
    of a mapping whose stretch this pass has written is dropped. The first
    pass begins after the last zero fill of the loop's mappings."""
    order = [k for _ in range(passes) for k in range(lo, hi + 1)]
    out, at, last, n = open(path, "wb"), 0, None, 0

    def put(serial, unit, idx, zero):
        nonlocal n
        shift = unit.bit_length() - 1 - 11
        out.write(struct.pack("<II", serial | shift << 27, idx | zero << 31))
        n += 1

    # the loop begins once its mappings have all been filled: a fetch
    # before that (one evicted while still being written) stays as it is
    begin = max((i for i, r in enumerate(recs) if lo <= r[0] <= hi and r[3]), default=0)
    for j, (s, unit, idx, zero) in enumerate(recs):
        if not (lo <= s <= hi) or zero or j < begin:
            put(s, unit, idx, zero)
            continue
        if s == last or (at < len(order) and lo < order[at] and s < order[at]):
            continue  # inside a stretch of this pass already written
        while at < len(order):
            k = order[at]
            at += 1
            last = k
            for _ in range(sweeps):
                for i in range(per[k]["hi"] + 1):
                    put(k, per[k]["unit"], i, 0)
            if k == s:
                break
    for k in order[at:]:
        for _ in range(sweeps):
            for i in range(per[k]["hi"] + 1):
                put(k, per[k]["unit"], i, 0)
    print(f"wrote {n} records to {path}")


if __name__ == "__main__":
    main()
