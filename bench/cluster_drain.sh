#!/bin/bash
# cluster_drain.sh - how long `ethermem node drain` takes, and what the
# clients' throughput is while it runs against just before it, in one run.
#
# Runs the drain test's program in its bench mode: a one-member etcd and
# three nodes on loopback, a named region of MIB MiB striped over them, two
# client threads (each its own pool) doing random 1 B - 64 KiB reads and
# writes on it with every byte checked, two seconds of that alone, then the
# node holding the region's first part drained by the tool. Prints the
# program's lines and its JSON result (drain seconds, MiB moved and MiB/s,
# client MiB/s before and during, their ratio).
#   usage: bench/cluster_drain.sh [MIB]   (default 512; needs ~2.5x MIB of RAM)
set -eu
cd "$(dirname "$0")/.."
export EM_BUILD_DIR=${EM_BUILD_DIR:-$PWD/build}
MIB=${1:-512}
exec "$EM_BUILD_DIR/test_cluster_drain" --bench "$MIB"
