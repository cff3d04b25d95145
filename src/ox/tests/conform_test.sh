#!/bin/bash
# conform_test.sh BUILD_DIR - ethermemd --ox-export against ox-conform, a
# requester written from the specification that behaves like the published
# OmniXtend software (see src/ox/README.md, "Interoperability"):
#   - ETRI's C endpoint: grants on A..E with exponent 10, waits for a grant
#     of more than 128 flits on every channel before its first request
#   - ETRI's oxmem-fuse: opens with exponent 28 on A, then 28 on D, data
#     bytes verbatim; the node answers each request frame on its own
#   - a 1.0.3 peer: no open, its first frame grants 2^31 on D
#   - a 1.0.3 peer in verbatim byte order that waits for A, C and E
# each running every check (whole words, narrow at every offset, sparse
# PutPartialData, atomics at 1/2/4/8 bytes, full frames, denied), and a peer
# that opens and vanishes: the node gives up on it, logs it, and serves the
# same MAC again when it comes back.
# Exit 0 pass, 1 fail, 77 skip (not root, no netns); tests/lib.sh is the
# harness (namespaces, node, cleanup on every exit path).
B=${1:?usage: conform_test.sh BUILD_DIR}
. "$(dirname "$0")/../../../tests/lib.sh"
need_root
need_cmd ip
for f in ethermemd ox-conform; do
	[ -x "$B/$f" ] || fail "no $B/$f"
done

P=$$
N=oxcfn$P; C=oxcfc$P
add_netns $N 2>/dev/null || skip "no netns support"
add_netns $C || exit 1
MAC_N=02:0c:00:00:00:01
MAC_C=02:0c:00:00:00:02
set -e
ip -n $N link add oxcfa$P type veth peer name oxcfb$P
ip -n $N link set oxcfb$P netns $C
ip -n $N link set oxcfa$P address $MAC_N mtu 1500 up
ip -n $C link set oxcfb$P address $MAC_C mtu 1500 up
ip -n $N link set lo up
ip -n $C link set lo up
set +e
WIN=$((64 << 20))
BASE=0x200000000
NODE_WRAP="ip netns exec $N nice"
FAIL_SHOW="$T/conform.out"

ox_node() {   # extra ethermemd flags...
	start_node node 128M --ox oxcfa$P "$@" \
		--ox-export conf@$BASE --ox-export-create 64M --ox-allow $MAC_C
	wait_for 10 "the region to be exported" grep -q "exported at" "$T/node.log"
}
conform() {   # ox-conform flags...
	ip netns exec $C timeout 60 "$B/ox-conform" --iface oxcfb$P --peer $MAC_N \
		--base $BASE --len $WIN "$@" >"$T/conform.out" 2>&1
	local rc=$?
	cat "$T/conform.out"
	return $rc
}

peer() {   # NAME "NODE FLAGS" CONFORM FLAGS...
	local name=$1 nflags=$2
	shift 2
	echo "== $name (ethermemd $nflags)"
	# shellcheck disable=SC2086
	ox_node $nflags
	conform "$@" || fail "$name"
	stop_node node
}

peer "ETRI C endpoint, 1.1, waits for grants on A..E" "" \
	--grant ABCDE:10 --wait ABCDE
peer "ETRI C endpoint for WD, 1.1, waits for grants on A, C, E" "" \
	--grant ABCDE:10 --wait ACE
peer "oxmem-fuse, 1.1, exponent 28, verbatim data" "--ox-verbatim --ox-reply-per-frame" \
	--grant A:28 --grant D:28 --verbatim --match-ack
peer "1.0.3, no open, exponent 31" "--ox-mode 1.0.3" \
	--mode 103 --grant D:31
peer "1.0.3, verbatim data, waits for A, C, E" "--ox-mode 1.0.3 --ox-verbatim" \
	--mode 103 --grant BD:12 --wait ACE --verbatim

echo "== a peer that opens and vanishes"
export ETHERMEM_OX_RTO_US=200   # gives up within a second, not 3.6 s
ox_node
unset ETHERMEM_OX_RTO_US
conform --open-only || fail "open-only"
wait_for 10 "the node to give up on a silent peer" \
	grep -q "$MAC_C acknowledged nothing" "$T/node.log"
# the same MAC, back again: a fresh connection, served as before
conform --grant D:16 --wait ACE --checks words,atomic || fail "served again after giving up"
stop_node node
grep -q "gave up on 1 silent peers" "$T/node.log" || fail "give-up not counted"
echo "conform_test: ok"
exit 0
