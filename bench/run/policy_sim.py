#!/usr/bin/python3
"""policy_sim.py --cache BYTES TRACE [VARIANT ...]: replays a fetch trace
(ETHERMEM_MAP_TRACE) through models of replacement policies and prints what
each would fetch with that cache, next to Belady's MIN.

Meant for the reference traces of `pool-only.sh CASE --ref` (a run with a
1 MiB cache, whose trace is nearly every touch of another unit): over such
a trace a model sees the program's references, and a policy that only
learns of misses (all that userfaultfd shows) is modelled by updating its
state on misses alone. Over the trace of an ordinary run (its misses only)
each model sees a stream shaped by the policy that made it, and the
figures mislead: on the quick NumPy case's own trace, a policy sized by
ghost distance fetched 30% less than the engine's; run for real it fetched
10-15% more.

Models (counted in units; the trace's smallest unit):
  MIN   evict the unit used farthest ahead (the floor)
  FIFO  evict in install order
  LRU   evict the least recently used: needs hits, which the engine cannot
        see; the bound for any recency policy
  PT    the engine's policy (src/map/policy.c): protected set P, transient
        FIFO T with a target share adapted by ghost returns, P ageing by
        1/64 of T's throughput, cut tmin/2 above its share
  ARC   ARC updated on misses only (a return from a ghost list is its only
        'hit')
  ARCH  ARC that sees every reference: what an adaptive policy could do
        if sampling showed it all hits, for free
  PTS   PT with sampled references: the oldest quarter of each list is
        stashed (its pages moved out of the program's range, e.g. by
        UFFDIO_MOVE), so a touch of a stashed unit is a soft fault that the
        engine sees; such a unit goes back to P's young end, and an
        untouched one is evicted when its turn comes (a CLOCK hand over the
        eviction end, second chance for what was used)
PTS also prints its soft faults (returns from the stash, each a fault the
program waits for though nothing is fetched) and move-outs (units
stashed; each a TLB shootdown unless batched with adjacent ones).
VARIANT is a Python expression over PT's or PTS's knobs, evaluated per
trace, e.g. 'pt(tr, c, tmin, age=16)', 'pt(tr, c, tmin, jump=1/8)' (a T
ghost that returns within budget/8 sets T's target to |T| + distance at
once), 'pt(tr, c, tmin, decay=8)' (T's target shrinks by one unit per 8
units evicted from T, so a target grown by one burst of returns does not
stay) or 'pts(tr, c, tmin, tfrac=0.5, pfrac=0)' (only T's oldest half
sampled).
--unit BYTES models the trace at a larger unit than it was recorded with
(GNU sort: bytes grow with the unit, the ratios to MIN do not).
Prints one line: MB and ratio to MIN per model. Validated on the quick
NumPy case: PT 333 MB over the reference trace, 338 MB in real runs.
"""
import argparse
import heapq
import struct
from collections import OrderedDict


def load(path):
    """(key, zero) per record: key is (mapping serial, unit index at the
    smallest unit of the trace), zero marks a zero-filled unit."""
    raw = open(path, "rb").read()
    recs = []
    for off in range(0, len(raw) - 7, 8):
        a, b = struct.unpack_from("<II", raw, off)
        recs.append(((a & ((1 << 27) - 1), b & 0x7FFFFFFF), bool(b >> 31), (a >> 27) + 11))
    low = min((r[2] for r in recs), default=14)
    return [((k[0], k[1] << (s - low)), z) for k, z, s in recs], 1 << low


def queue(tr, c, touch):
    """FIFO (touch False) or LRU (a hit moves the unit to the young end)."""
    q, n = OrderedDict(), 0
    for k, z in tr:
        if k in q:
            if touch:
                q.move_to_end(k)
            continue
        n += not z
        q[k] = 1
        if len(q) > c:
            q.popitem(last=False)
    return n


def fifo(tr, c):
    return queue(tr, c, False)


def lru(tr, c):
    return queue(tr, c, True)


def opt(tr, c):
    far = 1 << 62
    nxt, last = [0] * len(tr), {}
    for i in range(len(tr) - 1, -1, -1):
        nxt[i] = last.get(tr[i][0], far)
        last[tr[i][0]] = i
    res, heap, n = {}, [], 0
    for i, (k, z) in enumerate(tr):
        if k not in res:
            n += not z
            while len(res) >= c:
                d, v = heapq.heappop(heap)
                if res.get(v) == -d:
                    del res[v]
        res[k] = nxt[i]
        heapq.heappush(heap, (-nxt[i], k))
    return n


def pt(tr, c, tmin, age=64, jump=0.0, decay=0):
    P, T, gone, n = OrderedDict(), OrderedDict(), {}, 0
    clock, target, credit = 0, 0, 0.0
    for k, z in tr:
        if k in P or k in T:
            continue
        n += not z
        share = min(max(tmin, target), c - 1)
        keep = len(P) + 1 + share <= c
        if k in gone:
            when, lst = gone.pop(k)
            d = clock - when
            if lst == "T" and d + len(T) < c:
                target = max(share + 1, len(T) + d if d < c * jump else 0)
                keep = True
            elif lst == "P" and d + len(P) < c:
                target = max(min(share - 1, c - len(P) - d if jump else c), 0)
                keep = True
        (P if keep else T)[k] = 1
        while len(P) + len(T) > c:
            share = min(max(tmin, target), c - 1)
            lst = "P" if P and (len(P) + share > c + tmin / 2 or not T) else "T"
            u, _ = (P if lst == "P" else T).popitem(last=False)
            if lst == "T":
                if decay:
                    target = max(target - 1 / decay, 0)
                credit += 1 / age
                if P and credit >= 1:
                    credit -= 1
                    v, _ = P.popitem(last=False)
                    clock += 1
                    gone[v] = (clock, "P")
            clock += 1
            gone[u] = (clock, lst)
    return n


def arc(tr, c, hits=False):
    """ARC over a trace. Fed misses only (what the engine sees), a unit
    already in T1 or T2 is left where it is; with hits=True, every reference
    counts: a hit in T1 moves the unit to T2, a hit in T2 to its young end."""
    t1, t2, b1, b2 = OrderedDict(), OrderedDict(), OrderedDict(), OrderedDict()
    p, n = 0.0, 0

    def replace(in_b2):
        if t1 and (len(t1) > p or (in_b2 and len(t1) == p) or not t2):
            b1[t1.popitem(last=False)[0]] = 1
        else:
            b2[t2.popitem(last=False)[0]] = 1

    for k, z in tr:
        if hits and k in t1:
            del t1[k]
            t2[k] = 1
            continue
        if hits and k in t2:
            t2.move_to_end(k)
            continue
        if k in t1 or k in t2:
            continue
        n += not z
        if k in b1 or k in b2:
            if k in b1:
                p = min(c, p + max(1, len(b2) / max(1, len(b1))))
                del b1[k]
            else:
                p = max(0, p - max(1, len(b1) / max(1, len(b2))))
                del b2[k]
            if len(t1) + len(t2) >= c:
                replace(k in b2)
            t2[k] = 1
            continue
        if len(t1) + len(b1) >= c:
            if len(t1) < c:
                b1.popitem(last=False)
                replace(False)
            else:
                t1.popitem(last=False)
        elif len(t1) + len(b1) + len(t2) + len(b2) >= c:
            if len(t1) + len(b1) + len(t2) + len(b2) >= 2 * c:
                b2.popitem(last=False)
            if len(t1) + len(t2) >= c:
                replace(False)
        t1[k] = 1
    return n


def pts(tr, c, tmin, tfrac=0.25, pfrac=0.25, age=64):
    """PT with the oldest tfrac of T and pfrac of P stashed. Each list is
    two FIFOs, W (stashed, oldest) then R (mapped): a touch in R is a hit
    nobody sees, a touch in W a soft fault. (fetched, soft faults,
    move-outs)"""
    PW, PR, TW, TR = OrderedDict(), OrderedDict(), OrderedDict(), OrderedDict()
    gone, n, soft, outs = {}, 0, 0, 0
    clock, target, credit = 0, 0, 0.0

    def pop(w, r):
        return (w if w else r).popitem(last=False)[0]

    for k, z in tr:
        if k in PR or k in TR:
            continue
        if k in PW or k in TW:
            # a reference seen: second chance, on P's young end
            del (PW if k in PW else TW)[k]
            PR[k] = 1
            soft += 1
        else:
            n += not z
            np_, nt = len(PW) + len(PR), len(TW) + len(TR)
            share = min(max(tmin, target), c - 1)
            keep = np_ + 1 + share <= c
            if k in gone:
                when, lst = gone.pop(k)
                d = clock - when
                if lst == "T" and d + nt < c:
                    target, keep = share + 1, True
                elif lst == "P" and d + np_ < c:
                    target, keep = max(share - 1, 0), True
            (PR if keep else TR)[k] = 1
        while len(PW) + len(PR) + len(TW) + len(TR) > c:
            np_, nt = len(PW) + len(PR), len(TW) + len(TR)
            share = min(max(tmin, target), c - 1)
            lst = "P" if np_ and (np_ + share > c + tmin / 2 or not nt) else "T"
            u = pop(PW, PR) if lst == "P" else pop(TW, TR)
            if lst == "T":
                credit += 1 / age
                if (PW or PR) and credit >= 1:
                    credit -= 1
                    clock += 1
                    gone[pop(PW, PR)] = (clock, "P")
            clock += 1
            gone[u] = (clock, lst)
        for w, r, f in ((TW, TR, tfrac), (PW, PR, pfrac)):
            want = int((len(w) + len(r)) * f)
            while len(w) < want and r:
                w[r.popitem(last=False)[0]] = 1
                outs += 1
    return n, soft, outs


def arch(tr, c):
    """ARC fed every reference."""
    return arc(tr, c, hits=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", required=True, help="bytes, K/M/G suffix")
    ap.add_argument("trace")
    ap.add_argument("--unit", help="model a larger unit (bytes, K suffix): each record's unit "
                    "index coarsened to it; a random reader fetches about unit/trace-unit times "
                    "the bytes")
    ap.add_argument("variant", nargs="*")
    a = ap.parse_args()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    cache = a.cache.upper()
    cache = int(cache[:-1]) * mult[cache[-1]] if cache[-1] in mult else int(cache)
    tr, unit = load(a.trace)
    if a.unit:
        u = a.unit.upper()
        u = int(u[:-1]) * mult[u[-1]] if u[-1] in mult else int(u)
        if u < unit or u & (u - 1):
            raise SystemExit(f"policy_sim: --unit must be a power of two of at least {unit}")
        sh = (u // unit).bit_length() - 1
        tr, unit = [((k[0], k[1] >> sh), z) for k, z in tr], u
    c = cache // unit
    if c < 2:
        raise SystemExit("policy_sim: cache below two units")
    # the engine's tmin: 1/32 of the budget, at least 12 units, at most half
    tmin = min(max(c // 32, 12), c // 2)
    res = {"MIN": opt(tr, c), "FIFO": fifo(tr, c), "LRU": lru(tr, c), "PT": pt(tr, c, tmin),
           "ARC": arc(tr, c), "ARCH": arch(tr, c), "PTS": pts(tr, c, tmin)}
    for v in a.variant:
        res[v] = eval(v, {"pt": pt, "pts": pts, "tr": tr, "c": c, "tmin": tmin})
    floor = res["MIN"] or 1

    def show(k, v):
        n, more = (v[0], f" soft {v[1]} outs {v[2]}") if isinstance(v, tuple) else (v, "")
        return f"{k} {n * unit / 1e6:.1f} MB {n / floor:.2f}{more}"

    print(" ".join(show(k, v) for k, v in res.items()))


if __name__ == "__main__":
    main()
