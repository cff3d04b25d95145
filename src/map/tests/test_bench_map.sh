#!/bin/bash
# test_bench_map.sh - smoke run of `ethermem bench map --json` on a small
# region against a real node: every row of the interface is printed, with
# gbps and p50_us, and fetched_over_optimal on the cyclic rows; the
# fault-path rows (uffd-continue ...) carry gbps or an err field.
# Exit 0 pass, 1 fail, 77 skip (not root, or no cgroup v1 memory controller).
set -u
B=${EM_BUILD_DIR:-.}
[ "$(id -u)" = 0 ] || exit 77
[ -d /sys/fs/cgroup/memory ] || exit 77
D=$(mktemp -d /tmp/embm.XXXXXX)
NODE=
cleanup() { [ -n "$NODE" ] && kill "$NODE" 2>/dev/null; wait 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; cat "$D/out.json" >&2; exit 1; }

echo "correct horse battery staple 42" > "$D/secret"
"$B/ethermemd" --listen tcp://127.0.0.1:0 --capacity 512M --secret-file "$D/secret" \
	--port-file "$D/port" 2>"$D/node.log" &
NODE=$!
for _ in $(seq 100); do [ -s "$D/port" ] && break; sleep 0.05; done
[ -s "$D/port" ] || fail "ethermemd did not start"
export ETHERMEM_NODES=tcp://127.0.0.1:$(cat "$D/port") ETHERMEM_SECRET_FILE=$D/secret
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
