#!/bin/bash
# netns_test.sh - OmniXtend between network namespaces over AF_PACKET.
#
# Three namespaces: a memory node whose bridge joins two veth pairs, and two
# clients, one on each pair (a bridge, because a veth pair joins only two).
# Both clients write and read back random ranges and add to one shared
# counter at the same time, with frames dropped by the fault injector on
# every sender (this kernel has no netem); the data must match and the
# counter must be exact.  Run in 1.1 mode without loss (frames built in the
# TX ring) and with 1% loss, and in 1.0.3 mode with 5% loss.
# Exit 0 pass, 1 fail, 77 skip (not root, no netns).
# Names carry our PID; a trap removes everything on every exit path.
BIN=${1:-./ox-selftest}
. "$(dirname "$0")/../../../tests/lib.sh"
need_root
need_cmd ip
[ -x "$BIN" ] || fail "no $BIN"

P=$$
S=oxs$P; C1=oxc1$P; C2=oxc2$P; BR=oxbr$P
add_netns $S 2>/dev/null || skip "no netns support"
add_netns $C1 && add_netns $C2 || exit 1
MAC_S=02:0a:00:00:00:01
MAC_1=02:0a:00:00:01:01
MAC_2=02:0a:00:00:02:01
ip -n $S link add $BR type bridge 2>/dev/null || { echo "skip: no bridge support"; exit 77; }
set -e
ip -n $S link set $BR address $MAC_S mtu 9000
for i in 1 2; do
	C=$([ $i = 1 ] && echo $C1 || echo $C2)
	M=$([ $i = 1 ] && echo $MAC_1 || echo $MAC_2)
	ip -n $S link add oxp$i$P type veth peer name oxq$i$P
	ip -n $S link set oxq$i$P netns $C
	ip -n $S link set oxp$i$P mtu 9000 master $BR up
	ip -n $C link set oxq$i$P address $M mtu 9000 up
done
ip -n $S link set $BR mtu 9000 up
set +e

run_phase() {   # mode loss ops adds
	local mode=$1 loss=$2 ops=$3 adds=$4
	echo "== mode $mode, loss $loss% on every sender"
	spawn ip netns exec $S "$BIN" --serve $BR --allow $MAC_1 --allow $MAC_2 --mode $mode \
		--loss "$loss" --time 60 2>"$T/serve.log"
	local srv=$!
	wait_for 5 "the server to be ready" grep -q '^serve:' "$T/serve.log"
	local exp=$((2 * adds))
	ip netns exec $C1 timeout 60 "$BIN" --client oxq1$P --peer $MAC_S --slot 0 --mode $mode \
		--loss "$loss" --ops $ops --adds $adds --expect $exp &
	local c1=$!
	ip netns exec $C2 timeout 60 "$BIN" --client oxq2$P --peer $MAC_S --slot 1 --mode $mode \
		--loss "$loss" --ops $ops --adds $adds --expect $exp &
	local c2=$!
	wait $c1; local r1=$?
	wait $c2; local r2=$?
	local r3=0
	if [ "$mode" = 11 ]; then
		# a new session from a known MAC after a clean close
		ip netns exec $C1 timeout 20 "$BIN" --check oxq1$P --peer $MAC_S --mode $mode --expect $exp
		r3=$?
	fi
	kill $srv; wait $srv 2>/dev/null
	cat "$T/serve.log" >&2
	echo "client1 $r1 client2 $r2 check $r3"
	[ $r1 = 0 ] && [ $r2 = 0 ] && [ $r3 = 0 ]
}

run_phase 11 0 60 200 || exit 1
run_phase 11 1 120 400 || exit 1
run_phase 103 5 120 400 || exit 1
echo "netns_test: ok"
exit 0
