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
# Exit 0 pass, 1 fail, 77 skip (not root, no netns).
B=${1:?usage: conform_test.sh BUILD_DIR}
[ "$(id -u)" = 0 ] || { echo "skip: not root"; exit 77; }
command -v ip >/dev/null || { echo "skip: no ip"; exit 77; }
for f in ethermemd ox-conform; do
	[ -x "$B/$f" ] || { echo "no $B/$f"; exit 1; }
done

P=$$
N=oxcfn$P; C=oxcfc$P
T=$(mktemp -d /tmp/oxconform.XXXXXX)
NODE=""
cleanup() {
	[ -n "$NODE" ] && kill "$NODE" 2>/dev/null && wait "$NODE" 2>/dev/null
	ip netns del $N 2>/dev/null
	ip netns del $C 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
fail() { echo "FAIL: $*"; [ -f "$T/node.log" ] && tail -20 "$T/node.log"; exit 1; }

ip netns add $N 2>/dev/null || { echo "skip: no netns support"; exit 77; }
ip netns add $C || exit 1
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
printf 'a secret for the conformance test\n' > "$T/secret"
WIN=$((64 << 20))
BASE=0x200000000

start_node() {   # extra ethermemd flags...
	rm -f "$T/port"
	ip netns exec $N nice "$B/ethermemd" --listen tcp://127.0.0.1:0 --port-file "$T/port" \
		--secret-file "$T/secret" --capacity 128M --ox oxcfa$P "$@" \
		--ox-export conf@$BASE --ox-export-create 64M --ox-allow $MAC_C 2>"$T/node.log" &
	NODE=$!
	for _ in $(seq 300); do
		grep -q "exported at" "$T/node.log" 2>/dev/null && return
		sleep 0.01
	done
	fail "node did not start: $(cat "$T/node.log")"
}
stop_node() {
	kill "$NODE"
	wait "$NODE"
	local rc=$?
	NODE=""
	[ $rc = 0 ] || fail "node exited with $rc"
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
	start_node $nflags
	conform "$@" || fail "$name"
	stop_node
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
ETHERMEM_OX_RTO_US=200 start_node
conform --open-only || fail "open-only"
for _ in $(seq 100); do
	grep -q "acknowledged nothing" "$T/node.log" && break
	sleep 0.05
done
grep -q "$MAC_C acknowledged nothing" "$T/node.log" || fail "node never gave up on a silent peer"
# the same MAC, back again: a fresh connection, served as before
conform --grant D:16 --wait ACE --checks words,atomic || fail "served again after giving up"
stop_node
grep -q "gave up on 1 silent peers" "$T/node.log" || fail "give-up not counted"
echo "conform_test: ok"
exit 0
