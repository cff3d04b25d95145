#!/bin/bash
# test_run.sh - `ethermem run` on unmodified programs: Debian's sort on a
# generated file and small C programs (bigalloc.c; remap.c, which cuts and
# moves its big mappings with munmap and mremap), each allocating several
# times its --local-mem, must print exactly what a plain run prints, and the
# pool must really have been used (the shim's ETHERMEM_PRELOAD_STATS line).
# Exit 0 pass, 1 fail, 77 skip (not root: no userfaultfd).
set -u
. "$(dirname "$0")/../../../tests/lib.sh"
need_root
need_cmd sort
D=$T

start_node a 1G
export ETHERMEM_NODES=tcp://127.0.0.1:$PORT_a

# 400k lines (about 12 MB); sort keeps a 64 MiB buffer, local budget 16 MiB
awk 'BEGIN { srand(7); for (i = 0; i < 400000; i++) printf "%08x %s\n", int(rand() * 4294967296), substr("abcdefghijklmnopqrstuvwxyz0123456789", 1, int(rand() * 36)) }' > "$D/in.txt"
sort -S 64M "$D/in.txt" > "$D/plain.txt" || fail "plain sort"
# sort closes stderr before exit (coreutils' closeout): the stats line
# must still come out, from the shim's copy of stderr
ETHERMEM_PRELOAD_STATS=1 timeout 120 "$B/ethermem" run --local-mem 16M --threshold 1M -- \
	sort -S 64M "$D/in.txt" > "$D/pool.txt" 2> "$D/stats0.txt" || fail "sort under ethermem run"
cmp -s "$D/plain.txt" "$D/pool.txt" || fail "sort output differs"
grep -q "blocks [1-9].* evictions [1-9]" "$D/stats0.txt" ||
	{ cat "$D/stats0.txt"; fail "sort: no stats line after it closed stderr, or no eviction"; }

"$B/test_map_bigalloc" 32 "$D/in.txt" > "$D/plain2.txt" || fail "plain bigalloc"
ETHERMEM_PRELOAD_STATS=1 timeout 120 "$B/ethermem" run --local-mem 8M -- \
	"$B/test_map_bigalloc" 32 "$D/in.txt" > "$D/pool2.txt" 2> "$D/stats.txt" || fail "bigalloc under ethermem run"
cmp -s "$D/plain2.txt" "$D/pool2.txt" || fail "bigalloc output differs"
grep -q "blocks [1-9]" "$D/stats.txt" || { cat "$D/stats.txt"; fail "the pool was not used"; }
grep -q "evictions [1-9]" "$D/stats.txt" || { cat "$D/stats.txt"; fail "no eviction under a budget 12x smaller"; }
# the bytes fetched ahead of a fault are reported, and are part of what was
# fetched (what a prefetch throttle could save at most)
awk '/^ethermem-preload: blocks/ { for (i = 2; i < NF; i += 2) v[$i] = $(i + 1) }
	END { exit !("prefetched" in v && v["prefetched"] <= v["fetched"]) }' "$D/stats.txt" ||
	{ cat "$D/stats.txt"; fail "no 'prefetched N' within the fetched bytes in the stats line"; }
cat "$D/stats.txt"

# munmap of pieces, MAP_FIXED over, and mremap of pool memory (remap.c):
# the same digests as a plain run under a budget a tenth of the footprint;
# MREMAP_FIXED refused (noted once); everything released (resident 0)
"$B/test_map_remap" 8 "$D/in.txt" > "$D/plain4.txt" || fail "plain remap"
ETHERMEM_PRELOAD_STATS=1 timeout 120 "$B/ethermem" run --local-mem 4M -- \
	"$B/test_map_remap" 8 "$D/in.txt" > "$D/pool4.txt" 2> "$D/stats4.txt" \
	|| { cat "$D/stats4.txt"; fail "remap under ethermem run"; }
cmp -s "$D/plain4.txt" "$D/pool4.txt" || { cat "$D/stats4.txt"; fail "remap output differs"; }
grep -q "blocks [1-9]" "$D/stats4.txt" || { cat "$D/stats4.txt"; fail "remap: the pool was not used"; }
grep -q "evictions [1-9]" "$D/stats4.txt" || { cat "$D/stats4.txt"; fail "remap: no eviction"; }
grep -q "MREMAP_FIXED and MREMAP_DONTUNMAP are not supported" "$D/stats4.txt" \
	|| { cat "$D/stats4.txt"; fail "remap: MREMAP_FIXED on pool memory was not refused"; }
grep -q " resident 0\( \|$\)" "$D/stats4.txt" || { cat "$D/stats4.txt"; fail "remap: cache not empty after every block went"; }
cat "$D/stats4.txt"

# an interpreter: many pool blocks (pymalloc arenas are 1 MiB mmaps), a
# sort that touches them at random, 16 KiB units
if command -v python3 >/dev/null; then
	cat > "$D/t.py" <<'PY'
import hashlib, random
random.seed(3)
a = bytearray(64 * 1024 * 1024)
for i in range(0, len(a), 4096):
    a[i] = i % 251
lst = [random.random() for _ in range(2000000)]
lst.sort()
print(hashlib.sha256(bytes(a)).hexdigest(), sum(lst[:1000]), len(lst))
PY
	python3 "$D/t.py" > "$D/plain3.txt" || fail "plain python"
	timeout 120 "$B/ethermem" run --local-mem 96M --fetch-unit 16K -- python3 "$D/t.py" > "$D/pool3.txt" \
		|| fail "python under ethermem run"
	cmp -s "$D/plain3.txt" "$D/pool3.txt" || fail "python output differs"
fi

# import/export: a file into a named region and back, byte for byte, and
# the region read through a mapping by another process (the C program
# mapping it read-only is the shim's file import path above)
"$B/ethermem" import "$D/in.txt" map-run-test || fail "import"
"$B/ethermem" export map-run-test "$D/back.txt" || fail "export"
cmp -s "$D/in.txt" "$D/back.txt" || fail "export differs from the imported file"
"$B/ethermem" import "$D/in.txt" map-run-test || fail "import again (same size)"
"$B/ethermem" region rm map-run-test >/dev/null 2>&1 || true
echo ok
