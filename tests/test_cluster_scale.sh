#!/bin/bash
# test_cluster_scale.sh - the scale check: 8 memory nodes, each in its own
# network namespace on one bridge, 16 client processes in this namespace,
# etcd on the bridge address. Every client creates a region of its own and
# writes and reads back blocks, checking every byte (tests/scale_client.c).
# A few seconds in, the node holding client 1's region is killed (SIGKILL):
# the clients whose regions lived there must see only lost-node errors
# (EM_ENONODE, EHOSTDOWN, ...) and never wrong bytes; every other client
# must go on without a single error after the kill. Leases are 5 s: a
# loaded machine can hold a node off etcd for a second, and a node taken
# for gone would fail clients that did nothing wrong.
#
# HOOK_MID: a command run right after the kill with the surviving nodes'
# names in $SURVIVORS (a drain of one of them goes here).
set -u
B=${1:-${EM_BUILD_DIR:-}}
. "$(dirname "$0")/lib.sh"
need_root
need_cmd ip
[ -x "$B/scale_client" ] || fail "no scale_client in '$B'"
NODES=8 CLIENTS=16 SECS=${SCALE_SECS:-10}
NET=10.231.77
ETCD_HOST=$NET.254
# etcd listens on the bridge's address, so the bridge comes first
netns_bridge emjs $NET
start_etcd
CL=scale$$
export ETHERMEM_CLUSTER=$CL
netns_nodes emjs $NET 1 $NODES 64M --etcd "$ETCD_URL" --cluster "$CL" --lease-ttl 5
FAIL_SHOW="$FAIL_SHOW $T/ls.out"
wait_for 30 "all nodes registered" \
	sh -c "[ \$(\"$B/ethermem\" node ls --json 2>&1 | tee $T/ls.out | grep -c '\"state\":\"up\"') = $NODES ]"
cpids=""
for c in $(seq $CLIENTS); do
	"$B/scale_client" "scale-c$c" "$SECS" >"$T/c$c.out" 2>&1 &
	cpids="$cpids $!"
done
EM_PIDS="$EM_PIDS $cpids"
wait_for 30 "every client placed its region" \
	sh -c "for c in \$(seq $CLIENTS); do grep -q '^node ' $T/c\$c.out || exit 1; done"
sleep 2
victim=$(sed -n 's|^node tcp://||p' "$T/c1.out")
k=${victim#"$NET".}
k=${k%:7000}
eval "vpid=\$PID_n$k"
kill_ms=$(date +%s%3N)
kill -KILL "$vpid"
SURVIVORS=$(for j in $(seq $NODES); do [ "$j" = "$k" ] || printf 'n%s ' "$j"; done)
export SURVIVORS
[ -n "${HOOK_MID:-}" ] && eval "$HOOK_MID"
bad=0 hit=0 total=0
for c in $(seq $CLIENTS); do
	p=$(echo $cpids | cut -d' ' -f"$c")
	wait "$p"
	rc=$?
	out=$(cat "$T/c$c.out")
	[ "$rc" = 0 ] || { echo "client $c exited $rc: $out" >&2; bad=1; continue; }
	node=$(sed -n 's|^node tcp://||p' "$T/c$c.out")
	set -- $(grep '^ok ' "$T/c$c.out")
	ok=$2 err=$4 last_ok=$6
	total=$((total + ok))
	if [ "$node" = "$victim" ]; then
		hit=$((hit + 1))
		[ "$err" -gt 0 ] || { echo "client $c on the killed node saw no error" >&2; bad=1; }
	else
		[ "$err" = 0 ] || { echo "client $c ($node) saw errors: $out" >&2; bad=1; }
		[ "$last_ok" -gt "$kill_ms" ] || { echo "client $c stopped before the kill" >&2; bad=1; }
	fi
done
echo "$CLIENTS clients on $NODES nodes: $total verified write+read pairs;" \
	"$hit client(s) on the killed node $victim saw it lost, the others went on"
[ "$bad" = 0 ] || fail "scale check failed"
[ "$hit" -ge 1 ] || fail "no client was on the killed node"
