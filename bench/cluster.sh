#!/bin/bash
# cluster.sh - the pool-in-etcd benchmark in one run: how long after a node
# is killed (SIGKILL) or frozen (SIGSTOP) every client sees it down, how
# long `ethermem node drain` takes to move a node's part of a region, and
# the clients' verified throughput while the drain runs against just before.
#
# It runs the two measuring scripts one after the other and gathers their
# JSON into one table: bench/cluster_detect.sh (ROUNDS rounds x CLIENTS
# watching clients per signal, lease TTL LEASE_TTL) and
# bench/cluster_drain.sh (a region of DRAIN_MIB MiB striped over three
# nodes, a third of it on the drained node). The header says when, at
# which commit and under what machine load it ran; the ratio is the only
# throughput figure that compares across runs.
#   usage: bench/cluster.sh [--json]
#          (ROUNDS=5 CLIENTS=4 LEASE_TTL=1 DRAIN_MIB=512; needs ~2.5x DRAIN_MIB of RAM)
set -eu
cd "$(dirname "$0")/.."
export EM_BUILD_DIR=${EM_BUILD_DIR:-$PWD/build}
export ROUNDS=${ROUNDS:-5} CLIENTS=${CLIENTS:-4} LEASE_TTL=${LEASE_TTL:-1}
DRAIN_MIB=${DRAIN_MIB:-512}
JSON=${1:-}

# jget KEY LINE: a number or string field of a flat JSON object
jget() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p" <<< "$2"; }

when=$(date -u +%Y-%m-%dT%H:%MZ)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
load_before=$(cut -d' ' -f1 /proc/loadavg)

detect=$(bench/cluster_detect.sh --json)
kill_line=$(grep '"signal":"kill"' <<< "$detect")
stop_line=$(grep '"signal":"freeze"' <<< "$detect")
drain_out=$(bench/cluster_drain.sh "$DRAIN_MIB")
drain_line=$(grep '^{"bench":"cluster_drain"' <<< "$drain_out")
[ -n "$kill_line" ] && [ -n "$stop_line" ] && [ -n "$drain_line" ] || {
	echo "cluster.sh: a measurement printed no result" >&2
	exit 1
}
load_after=$(cut -d' ' -f1 /proc/loadavg)

if [ "$JSON" = --json ]; then
	echo "{\"bench\":\"cluster\",\"date\":\"$when\",\"commit\":\"$commit\"," \
		"\"cpus\":$(nproc),\"load_before\":$load_before,\"load_after\":$load_after," \
		"\"kill\":$kill_line,\"freeze\":$stop_line,\"drain\":$drain_line}" | tr -d ' '
	exit 0
fi
cat << EOF
cluster benchmark: $when, commit $commit, $(nproc) CPUs, load average $load_before before, $load_after after

| signal | samples | rounds discarded | lease TTL | min | median | max |
|---|---|---|---|---|---|---|
| SIGKILL -> down on every client | $(jget samples "$kill_line") | $(jget discarded_rounds "$kill_line") | $LEASE_TTL s | $(jget min_ms "$kill_line") ms | $(jget median_ms "$kill_line") ms | $(jget max_ms "$kill_line") ms |
| SIGSTOP -> down on every client | $(jget samples "$stop_line") | $(jget discarded_rounds "$stop_line") | $LEASE_TTL s | $(jget min_ms "$stop_line") ms | $(jget median_ms "$stop_line") ms | $(jget max_ms "$stop_line") ms |

| region | moved | drain time | drain MiB/s | client MiB/s before | during | during/before |
|---|---|---|---|---|---|---|
| $DRAIN_MIB MiB | $(jget moved_mib "$drain_line") MiB | $(jget drain_s "$drain_line") s | $(jget drain_mib_s "$drain_line") | $(jget client_mib_s_before "$drain_line") | $(jget client_mib_s_during "$drain_line") | $(jget during_over_before "$drain_line") |
EOF
