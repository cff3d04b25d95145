#!/bin/bash
# ideal.sh - ethermem-ideal computes Belady's MIN: a cyclic trace worked out
# by hand, zero-filled records that cost nothing, bad arguments refused, and
# random traces against a plain quadratic simulation of MIN written here
# (farthest next use found by scanning forward), at several cache sizes.
# Exit 0 pass, 1 fail, 77 skip (no /usr/bin/python3).
set -u
B=${EM_BUILD_DIR:?EM_BUILD_DIR must name the build directory}
T=$B/ethermem-ideal
PY=/usr/bin/python3
[ -x "$PY" ] || exit 77
fail() { echo "FAIL: $*" >&2; exit 1; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# trace FILE "SERIAL:IDX[z] ...": writes the records
trace() {
	$PY - "$@" <<'PYEOF'
import struct, sys
with open(sys.argv[1], "wb") as f:
    for r in sys.argv[2].split():
        z = r.endswith("z")
        m, i = r.rstrip("z").split(":")
        f.write(struct.pack("<II", int(m), int(i) | (1 << 31 if z else 0)))
PYEOF
}

# 0 1 2 3 three times, 3 units of cache: 4 cold misses, then one miss per
# two references (worked out by hand): 6 fetches of 64 KiB
trace "$W/cyc" "$(for _ in 1 2 3; do printf '1:0 1:1 1:2 1:3 '; done)"
got=$("$T" --cache 192K "$W/cyc") || fail "ethermem-ideal on the cyclic trace"
[ "$got" = $((6 * 65536)) ] || fail "cyclic trace: $got bytes, want $((6 * 65536))"
# the same unit index in two mappings is two units
trace "$W/two" "1:0 2:0 1:0 2:0"
got=$("$T" --cache 64K --unit 64K "$W/two")
[ "$got" = $((4 * 65536)) ] || fail "two mappings: $got"
got=$("$T" --cache 128K --unit 64K "$W/two")
[ "$got" = $((2 * 65536)) ] || fail "two mappings, room for both: $got"
[ "$("$T" --cache 64K --distinct "$W/two" | tail -1)" = $((2 * 65536)) ] || fail "--distinct"
# zero-filled units cost nothing to bring in
trace "$W/zero" "1:0z 1:1z 1:0 1:1"
got=$("$T" --cache 4K --unit 4K "$W/zero")
[ "$got" = $((2 * 4096)) ] || fail "zero-filled records: $got, want 8192"
# a trace that records its unit (top 5 bits of the serial: log2 - 11) is
# read with that unit: 16 KiB here, so 48K holds the cyclic trace's 3 units
rec() { echo "$(($2 << 27 | $1))"; }
trace "$W/u16" "$(for _ in 1 2 3; do printf '%s:0 %s:1 %s:2 %s:3 ' $(rec 1 3) $(rec 1 3) $(rec 1 3) $(rec 1 3); done)"
got=$("$T" --cache 48K "$W/u16") || fail "ethermem-ideal on a trace with its unit"
[ "$got" = $((6 * 16384)) ] || fail "recorded unit: $got bytes, want $((6 * 16384))"
"$T" --cache 1M --unit 64K "$W/u16" >/dev/null 2>&1 && fail "--unit against the recorded unit accepted"
# units of 16 and 64 KiB in one trace: computed at 16 KiB, the 64 KiB
# unit as four; 64K of cache holds four, and MIN evicts a piece of the
# 64 KiB unit (never used again) to keep 1:0: five misses
trace "$W/mixed" "$(rec 1 3):0 $(rec 2 5):0 $(rec 1 3):0"
got=$("$T" --cache 64K "$W/mixed") || fail "ethermem-ideal on mixed units"
[ "$got" = $((5 * 16384)) ] || fail "mixed units: $got bytes, want $((5 * 16384))"
# refused: no cache, a cache smaller than a unit, a missing file
"$T" "$W/cyc" >/dev/null 2>&1 && fail "no --cache accepted"
"$T" --cache 1K "$W/cyc" >/dev/null 2>&1 && fail "a cache under one unit accepted"
"$T" --cache 1M "$W/none" >/dev/null 2>&1 && fail "a missing trace accepted"
# an empty trace needs nothing
: > "$W/empty"
[ "$("$T" --cache 1M "$W/empty")" = 0 ] || fail "empty trace"

# random traces against the slow simulation
$PY - "$W" <<'PYEOF' || exit 1
import random, struct, subprocess, sys, os
w = sys.argv[1]
T = os.environ["EM_BUILD_DIR"] + "/ethermem-ideal"
r = random.Random(5)
for t in range(20):
    n = r.randint(1, 200)
    units = r.randint(1, 40)
    refs = []
    for _ in range(n):
        # some locality, some scans, two mappings
        u = r.randint(0, units - 1) if r.random() < 0.6 else (refs[-1][1] + 1) % units if refs else 0
        refs.append((r.randint(1, 2), u, r.random() < 0.1))
    with open(w + "/r", "wb") as f:
        for m, u, z in refs:
            f.write(struct.pack("<II", m, u | (1 << 31 if z else 0)))
    for cap in (1, 2, 5, 17):
        cache, cost = [], 0
        for i, (m, u, z) in enumerate(refs):
            if (m, u) in cache:
                continue
            cost += not z
            if len(cache) == cap:
                def nxt(k):
                    for j in range(i + 1, n):
                        if refs[j][:2] == k:
                            return j
                    return n + 1
                cache.remove(max(cache, key=nxt))
            cache.append((m, u))
        got = subprocess.run([T, "--cache", str(cap * 4096), "--unit", "4K", w + "/r"],
                             capture_output=True, text=True, check=True).stdout.strip()
        if int(got) != cost * 4096:
            sys.exit("FAIL: trace %d cache %d: %s bytes, want %d" % (t, cap, got, cost * 4096))
PYEOF
echo "map_ideal: ok"
