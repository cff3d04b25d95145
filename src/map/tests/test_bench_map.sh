#!/bin/bash
# test_bench_map.sh - smoke run of `ethermem bench map --json` on a small
# region against a real node: every row of the interface is printed, with
# gbps and p50_us, and fetched_over_optimal on the cyclic rows; the
# fault-path rows (uffd-continue ...) carry gbps or an err field.
# Exit 0 pass, 1 fail, 77 skip (not root, or no cgroup v1 memory controller).
set -u
. "$(dirname "$0")/../../../tests/lib.sh"
need_root
[ -d /sys/fs/cgroup/memory ] || skip "no cgroup v1 memory controller"
D=$T
FAIL_SHOW="$FAIL_SHOW $D/out.json"

start_node a 512M
export ETHERMEM_NODES=tcp://127.0.0.1:$PORT_a
timeout 250 "$B/ethermem" bench map --json --size 64M --cache 16M --dir "$D" > "$D/out.json" \
	|| fail "bench map exited non-zero"
for op in uffd-floor map-seq map-rand4k map-cyclic mmap-file-seq mmap-file-rand4k \
	mmap-file-cyclic swap-seq swap-rand4k swap-cyclic; do
	grep "\"op\":\"$op\"" "$D/out.json" | grep -q '"gbps":.*"p50_us":' || fail "row $op"
done
# the fault-path rows: a figure, or the reason there is none
for op in uffd-continue uffd-copy-batch uffd-huge uffd-recv; do
	grep "\"op\":\"$op\"" "$D/out.json" | grep -qE '"(gbps|err)":' || fail "row $op"
done
for op in map-cyclic mmap-file-cyclic swap-cyclic; do
	grep "\"op\":\"$op\"" "$D/out.json" | grep -q '"fetched_over_optimal":' || fail "ratio on $op"
done
swapon --show | grep -q "$D" && fail "swap file left on"
# other runs may be going on at the same time: only a cgroup whose bench
# process is gone is a leftover
for cg in /sys/fs/cgroup/memory/ethermem-bench-*; do
	[ -d "$cg" ] || continue
	kill -0 "${cg##*-}" 2>/dev/null || fail "cgroup $cg left behind"
done
cat "$D/out.json"
echo ok
