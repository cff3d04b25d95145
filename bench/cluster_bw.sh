#!/bin/bash
# cluster_bw.sh - aggregate bandwidth of a pool of 1, 2, 4 and 8 memory
# nodes, each node in its own network namespace behind a veth on one
# bridge, all in one run. For each pool size CLIENTS client processes
# (tests/bw_client.c) each stripe an anonymous region over every node in
# 1 MiB chunks and keep DEPTH 1 MiB writes, then reads, in flight for SECS
# seconds; the figure is the sum of their rates, and the ratio is to the
# one-node pool measured in the same run.
#   usage: bench/cluster_bw.sh [BUILD_DIR]   (SECS=3 CLIENTS=4 DEPTH=8)
# Needs root (namespaces). Prints one line per pool size.
set -u
cd "$(dirname "$0")/.."
B=${1:-${EM_BUILD_DIR:-$PWD/build}}
. tests/lib.sh
need_root
[ -x "$B/bw_client" ] || fail "no bw_client in '$B' (build the tests)"
SECS=${SECS:-3} CLIENTS=${CLIENTS:-4} DEPTH=${DEPTH:-8}
NET=10.232.77
netns_bridge emjb $NET
netns_nodes emjb $NET 1 8 256M
base=""
printf '%-6s %12s %8s\n' nodes "MB/s" ratio
for n in 1 2 4 8; do
	ETHERMEM_NODES=$(for k in $(seq "$n"); do printf 'tcp://%s.%s:7000,' "$NET" "$k"; done)
	export ETHERMEM_NODES=${ETHERMEM_NODES%,}
	pids=""
	for c in $(seq "$CLIENTS"); do
		"$B/bw_client" "$SECS" "$DEPTH" >"$T/bw$n.$c" 2>&1 &
		pids="$pids $!"
	done
	for p in $pids; do wait "$p" || fail "a client failed: $(cat "$T"/bw$n.*)"; done
	sum=$(cat "$T"/bw$n.* | awk '{s += $1} END {printf "%.1f", s}')
	[ -n "$base" ] || base=$sum
	printf '%-6s %12s %8s\n' "$n" "$sum" "$(awk -v a="$sum" -v b="$base" 'BEGIN {printf "%.2f", a / b}')"
done
