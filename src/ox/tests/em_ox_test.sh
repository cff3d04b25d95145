#!/bin/bash
# em_ox_test.sh BUILD_DIR - the OmniXtend data path end to end.
#
# A memory node (ethermemd --ox) in one network namespace, whose bridge
# joins two veth pairs to two client namespaces (a bridge, because a veth
# pair joins only two ends and OmniXtend ties a connection to a MAC: one
# client host = one MAC).  TCP runs over the same links as the control path.
#   1. loss-free: two clients at once check data against a local reference
#      (every atomic too), then add to one counter from both: exact total;
#      then four threads of one client, a queue each
#   2. the same under 1% injected loss on every sender (ETHERMEM_OX_FAULTS,
#      the test-only fault injector, in the node and in the clients)
#   3. 1.0.3 mode under 5% loss plus 1% duplication and 1% reordering
#   3b. every link at MTU 65535: bursts of 32 KiB (negotiated at attach),
#      one client's integrity run under 1% loss
#   4. malformed frames and a stranger's frames: counted, dropped, and the
#      node keeps serving
#   5. --ox-export: a region a client creates over TCP is served at a fixed
#      address to ox-selftest, a requester that knows nothing of ethermem;
#      what it added is read back through libethermem
# Exit 0 pass, 1 fail, 77 skip (not root, no netns).  Names carry our PID;
# a trap removes everything on every exit path.
B=${1:?usage: em_ox_test.sh BUILD_DIR}
. "$(dirname "$0")/../../../tests/lib.sh"
need_root
need_cmd ip
for f in ethermemd test_ox_client ox-selftest; do
	[ -x "$B/$f" ] || { echo "no $B/$f"; exit 1; }
done

P=$$
S=emxs$P; C1=emxa$P; C2=emxb$P; BR=emxbr$P
add_netns $S 2>/dev/null || skip "no netns support"
add_netns $C1 && add_netns $C2 || exit 1
MAC_S=02:0b:00:00:00:01
MAC_1=02:0b:00:00:01:01
MAC_2=02:0b:00:00:02:01
ip -n $S link add $BR type bridge 2>/dev/null || { echo "skip: no bridge support"; exit 77; }
set -e
ip -n $S link set $BR address $MAC_S mtu 9000
ip -n $S addr add 10.211.0.1/24 dev $BR
for i in 1 2; do
	C=$([ $i = 1 ] && echo $C1 || echo $C2)
	M=$([ $i = 1 ] && echo $MAC_1 || echo $MAC_2)
	ip -n $S link add emxp$i$P type veth peer name emxq$i$P
	ip -n $S link set emxq$i$P netns $C
	ip -n $S link set emxp$i$P mtu 9000 master $BR up
	ip -n $C link set emxq$i$P address $M mtu 9000 up
	ip -n $C addr add 10.211.0.$((i + 1))/24 dev emxq$i$P
	ip -n $C link set lo up
done
ip -n $S link set $BR mtu 9000 up
ip -n $S link set lo up
set +e

printf 'a cluster secret for the OmniXtend tests\n' > "$T/secret"
chmod 600 "$T/secret"
export ETHERMEM_SECRET_FILE="$T/secret" ETHERMEM_TRANSPORT=ox ETHERMEM_TIMEOUT_MS=20000

NODE_WRAP="ip netns exec $S nice"
NODE_LISTEN=tcp://10.211.0.1:0
ox_node() {   # extra ethermemd flags...
	start_node node 256M --ox $BR "$@"
	export ETHERMEM_NODES="tcp://10.211.0.1:$PORT_node"
}
client() {   # NS ARGS...: a client in namespace NS on its own interface
	local ns=$1 i
	shift
	i=$([ "$ns" = $C1 ] && echo 1 || echo 2)
	ETHERMEM_OX_IFACE=emxq$i$P ip netns exec "$ns" timeout 120 nice "$B/test_ox_client" "$@"
}

phase() {   # NAME FAULTS NODEFLAGS...
	local name=$1 faults=$2
	shift 2
	echo "== $name${faults:+ (ETHERMEM_OX_FAULTS=$faults)}"
	export ETHERMEM_OX_FAULTS=$faults
	ox_node "$@"
	client $C1 integrity 1 & local a=$!
	client $C2 integrity 2 & local b=$!
	wait $a || fail "$name: client 1 integrity"
	wait $b || fail "$name: client 2 integrity"
	client $C1 adds ctr 1500 & a=$!
	client $C2 adds ctr 1500 & b=$!
	wait $a || fail "$name: client 1 adds"
	wait $b || fail "$name: client 2 adds"
	client $C1 read ctr 0 3000 || fail "$name: counter not exact"
	# threads of one process, a queue each, share the node's one requester
	client $C2 threads 4 || fail "$name: threads"
	client $C2 status
	# the operator's view: `ethermem status` (over TCP) shows the counters
	ETHERMEM_TRANSPORT=tcp ip netns exec $C2 timeout 30 "$B/ethermem" status >"$T/status.txt" ||
		fail "$name: ethermem status"
	grep -q "omnixtend: frames rx [1-9][0-9]* tx [1-9]" "$T/status.txt" ||
		{ cat "$T/status.txt"; fail "$name: no OmniXtend counters in ethermem status"; }
	stop_node node
}

phase "loss-free, 1.1" ""
phase "1% loss, 1.1" "drop=1,seed=11"
phase "5% loss + dup + reorder, 1.0.3" "drop=5,dup=1,reorder=1,seed=12" --ox-mode 1.0.3
# jumbo links: the node says it serves large bursts, both MTUs carry 32 KiB
for i in 1 2; do
	C=$([ $i = 1 ] && echo $C1 || echo $C2)
	ip -n $S link set emxp$i$P mtu 65535
	ip -n $C link set emxq$i$P mtu 65535
done
ip -n $S link set $BR mtu 65535
echo "== MTU 65535, 1% loss, 1.1 (ETHERMEM_OX_FAULTS=drop=1,seed=13)"
export ETHERMEM_OX_FAULTS=drop=1,seed=13
ox_node
grep -q "bursts up to 32768" "$T/node.log" || fail "no 32 KiB bursts offered at MTU 65535"
client $C1 integrity 3 || fail "MTU 65535: integrity"
stop_node node
export ETHERMEM_OX_FAULTS=

echo "== malformed frames"
ox_node
EM_OX_NODE_MAC=$MAC_S client $C1 garbage emxq1$P || fail "malformed frames"
stop_node node

echo "== --ox-export to a requester that knows nothing of ethermem"
ox_node --ox-export exp@0x8000000000 --ox-allow $MAC_2
client $C1 create exp 4M || fail "create exp"
wait_for 3 "region exp to be exported" grep -q "region 'exp'.*exported" "$T/node.log"
ip netns exec $C2 timeout 60 "$B/ox-selftest" --client emxq2$P --peer $MAC_S --slot 0 \
	--ops 60 --adds 300 --expect 300 || fail "ox-selftest against --ox-export"
# the counter ox-selftest keeps at the window's last word, read through ethermem
client $C1 read exp $((4 * 1024 * 1024 - 8)) 300 || fail "export counter"
# a MAC not on the allow-list gets nothing
ip netns exec $C1 timeout 10 "$B/ox-selftest" --check emxq1$P --peer $MAC_S --expect 300 \
	>/dev/null 2>&1 && fail "a MAC off the allow-list was served"
client $C2 status
stop_node node
echo "em_ox_test: ok"
exit 0
