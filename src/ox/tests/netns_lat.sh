#!/bin/bash
# netns_lat.sh - latency figures for the OmniXtend data path between two
# namespaces over one veth pair (MTU 9000): the raw AF_PACKET ping-pong
# baseline (64-byte request, SIZE-byte reply) and an OmniXtend Get of SIZE
# bytes, each busy-polling and blocking, plus 1 MiB read bandwidth.
# Usage: netns_lat.sh [build/ox-selftest] [SIZE] [COUNT] [MTU] [--xdp].
# Not a ctest: it measures, it does not judge.  Server on CPU 0, client on
# CPU 1, so runs compare; other load on the machine still shows.  Names
# carry our PID; a trap cleans up.  AF_XDP frames fit 4 KiB chunks: compare
# both at MTU 3800.
BIN=${1:-./ox-selftest}; SIZE=${2:-4096}; COUNT=${3:-3000}; MTU=${4:-9000}; XDP=$5
[ "$(id -u)" = 0 ] || { echo "skip: not root"; exit 77; }
P=$$; A=oxla$P; B=oxlb$P
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
	ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
ip netns add $A || exit 77
ip netns add $B || exit 1
ip -n $A link add oxva$P type veth peer name oxvb$P
ip -n $A link set oxvb$P netns $B
ip -n $A link set oxva$P address 02:0b:00:00:00:01 mtu $MTU up
ip -n $B link set oxvb$P address 02:0b:00:00:00:02 mtu $MTU up
for blk in "" --block; do
	blk="$blk $XDP"
	ip netns exec $A taskset -c 0 "$BIN" --echo oxva$P --time 30 $blk & e=$!; PIDS="$PIDS $e"
	sleep 0.2
	ip netns exec $B taskset -c 1 "$BIN" --ping oxvb$P --peer 02:0b:00:00:00:01 --size $SIZE --count $COUNT $blk
	kill $e; wait $e 2>/dev/null
	ip netns exec $A taskset -c 0 "$BIN" --serve oxva$P --allow 02:0b:00:00:00:02 --time 30 $blk & s=$!
	PIDS="$PIDS $s"
	sleep 0.2
	ip netns exec $B taskset -c 1 "$BIN" --lat oxvb$P --peer 02:0b:00:00:00:01 --size $SIZE --count $COUNT $blk
	kill $s; wait $s 2>/dev/null
done
