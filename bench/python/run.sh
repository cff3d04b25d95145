#!/bin/bash
# run.sh [SIZE CACHE] - the Python package against the C API in one run, on
# one memory node on loopback: readinto of 4 KiB and 2 MiB against em_read
# in a C loop, and a NumPy scan of a mapped region against the scan of
# `ethermem bench map` (same size, cache and fetch unit; both on 4 KiB pages,
# ETHERMEM_MAP_HUGE=0, so neither depends on free huge pages). Then the
# PyTorch demo (examples/torch_offload.py) at a 25% local budget, its modes
# interleaved over ROUNDS rounds (default 3). Needs the
# build in build/ (its python/ package) and root for the demo's cgroups.
set -u
cd "$(dirname "$0")/../.."
export EM_BUILD_DIR=${EM_BUILD_DIR:-$PWD/build}
. tests/lib.sh
SIZE=${1:-512M} CACHE=${2:-128M}
start_node a 2G
export ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a" ETHERMEM_MAP_HUGE=0 PYTHONPATH="$B/python"
echo "# commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $B/ethermem bench map --json --size $SIZE --cache $CACHE --skip-baselines"
"$B/ethermem" bench map --json --size "$SIZE" --cache "$CACHE" --skip-baselines > "$T/map.json" ||
	fail "bench map"
grep '"map-seq"' "$T/map.json"
C=$(sed -n 's/.*"op":"map-seq".*"gbps":\([0-9.]*\).*/\1/p' "$T/map.json")
echo "# /usr/bin/python3 bench/python/bench_api.py --size $SIZE --cache $CACHE --c-scan $C"
/usr/bin/python3 bench/python/bench_api.py --size "$SIZE" --cache "$CACHE" --c-scan "$C" || fail "bench_api"
if [ "${SKIP_TORCH:-0}" = 0 ]; then
	echo "# /usr/bin/python3 examples/torch_offload.py --ratio 0.25 --rounds ${ROUNDS:-3}"
	/usr/bin/python3 examples/torch_offload.py --ratio 0.25 --rounds "${ROUNDS:-3}" || fail "torch demo"
fi
