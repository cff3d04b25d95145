#!/bin/bash
# redundancy.sh - redundancy's costs on memory nodes on loopback, in one run
# beside `none`:
#   bench/redundancy.sh BUILD_DIR [bench flags, e.g. --time 2]
#     `ethermem bench --redundancy none,none:2,none:4,replicate:2,replicate:3,ec:4+2` on
#     seven nodes: latency, bandwidth, degraded reads, bytes per byte;
#   bench/redundancy.sh BUILD_DIR failover [flags, e.g. --time 2]
#     `ethermem bench failover --redundancy none,replicate:2,ec:4+2` on eight
#     nodes: the stall across a SIGKILL of a node and the repair's GB/s and
#     foreground cost (each redundant entry kills one node; eight leave
#     ec:4+2 a spare to rebuild onto after replicate:2 took one);
#   bench/redundancy.sh BUILD_DIR interleave [OPS]
#     bench/red_interleave.c (built here against BUILD_DIR's libethermem.a)
#     on seven nodes: ec:4+2 against none at 2 MiB, operations in turn and
#     medians, so a busy machine cancels out, with none at 3 MiB as the
#     floor of what EC's extra bytes cost;
#   bench/redundancy.sh BUILD_DIR small [BLOCKS OPS [ethermemd flags]]
#     bench/red_small.c on seven nodes: 4 KiB reads (none, none:4, ec:4+2,
#     replicate:2), then writes (none, none:2, replicate:2), the kinds in
#     turn in blocks, with the context switches of client and nodes per op
#     (the nodes' flags, e.g. --poll-us 0, go to every node).
# EM_PIN_NODES=1 pins node i to CPU i mod ncpu (taskset), so that nodes that
# hold copies of one write do not queue on the core that woke them, as they
# would not on separate machines; the client is left unpinned.
set -u
B=${1:?usage: bench/redundancy.sh BUILD_DIR [failover] [ethermem bench flags]}
shift
MODE=plain
[ "${1:-}" = failover ] && { MODE=failover; shift; }
[ "${1:-}" = interleave ] && { MODE=interleave; shift; }
[ "${1:-}" = small ] && { MODE=small; shift; }
SMALL_BLOCKS=${1:-5} SMALL_OPS=${2:-1000}
NODE_FLAGS=""
if [ $MODE = small ]; then
	shift $(($# < 2 ? $# : 2))
	NODE_FLAGS="$*"
fi
. "$(dirname "$0")/lib.sh"
bench_scratch redbench
NODES="" NPIDS=""
N=7
[ $MODE = failover ] && N=8
for i in $(seq 0 $((N - 1))); do
	PIN=""
	[ "${EM_PIN_NODES:-0}" = 1 ] && PIN="taskset -c $((i % $(nproc)))"
	$PIN "$B/ethermemd" --listen tcp://127.0.0.1:0 --capacity 512M --port-file "$T/$i.port" \
		$NODE_FLAGS 2>"$T/$i.log" &
	PIDS="$PIDS $!"
	NPIDS="$NPIDS${NPIDS:+,}$!"
	for _ in $(seq 500); do [ -s "$T/$i.port" ] && break; sleep 0.01; done
	NODES="$NODES${NODES:+,}tcp://127.0.0.1:$(cat "$T/$i.port")"
done
export ETHERMEM_NODES="$NODES"
if [ $MODE = small ]; then
	cc -O2 -I"$(dirname "$0")/../include" -o "$T/red_small" "$(dirname "$0")/red_small.c" \
		"$B/libethermem.a" -lsodium -lisal -lpthread || exit 1
	export NODE_PIDS="$NPIDS"
	"$T/red_small" read "$SMALL_BLOCKS" "$SMALL_OPS" && "$T/red_small" write "$SMALL_BLOCKS" "$SMALL_OPS"
elif [ $MODE = interleave ]; then
	cc -O2 -I"$(dirname "$0")/../include" -o "$T/red_interleave" "$(dirname "$0")/red_interleave.c" \
		"$B/libethermem.a" -lsodium -lisal -lpthread || exit 1
	"$T/red_interleave" "$@"
elif [ $MODE = failover ]; then
	"$B/ethermem" bench failover --redundancy none,replicate:2,ec:4+2 --kill-pids "$NPIDS" "$@"
else
	"$B/ethermem" bench --redundancy none,none:2,none:4,replicate:2,replicate:3,ec:4+2 "$@"
fi
