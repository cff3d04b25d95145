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
# Once the killed node's lease is gone (so that no part is moved onto it),
# another node holding some clients' regions is drained (`ethermem node
# drain`) while every client goes on: it must end holding no named region,
# its clients' regions must end on other nodes, and they too must see not
# a single error. The clients stop a moment after the drain, so each one's
# last verified pair comes after it.
#
# HOOK_MID: a command run right after the kill with the surviving nodes'
# names in $SURVIVORS.
set -u
B=${1:-${EM_BUILD_DIR:-}}
. "$(dirname "$0")/lib.sh"
need_root
need_cmd ip
[ -x "$B/scale_client" ] || fail "no scale_client in '$B'"
NODES=8 CLIENTS=16 SECS=${SCALE_SECS:-50}
# names and subnet differ from run to run: the kernel tears a deleted
# namespace down in the background, and its veths can outlive the run
# that made them by many seconds (ctest --repeat starts the next at once)
S=$(($$ % 200 + 20))
PFX=emjs$S NET=10.231.$S
ETCD_HOST=$NET.254
# etcd listens on the bridge's address, so the bridge comes first
netns_bridge "$PFX" "$NET"
# etcd's log in memory: on a busy disk one fdatasync can take seconds, every
# node's lease lapses at once, and a node that registers again just as the
# drain picks it as a target fails the move
ETCD_DATA=$(mktemp -d /dev/shm/emjs.XXXXXX) || fail "no /dev/shm"
at_exit "rm -rf $ETCD_DATA"
start_etcd
CL=scale$$
export ETHERMEM_CLUSTER=$CL
netns_nodes "$PFX" "$NET" 1 $NODES 64M --etcd "$ETCD_URL" --cluster "$CL" --lease-ttl 5
FAIL_SHOW="$FAIL_SHOW $T/ls.out"
wait_for 30 "all nodes registered" \
	sh -c "[ \$(\"$B/ethermem\" node ls --json 2>&1 | tee $T/ls.out | grep -c '\"state\":\"up\"') = $NODES ]"
cpids=""
for c in $(seq $CLIENTS); do
	"$B/scale_client" "scale-c$c" "$SECS" "$T/stop" >"$T/c$c.out" 2>&1 &
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
kill -KILL "$vpid"
SURVIVORS=$(for j in $(seq $NODES); do [ "$j" = "$k" ] || printf 'n%s ' "$j"; done)
export SURVIVORS
[ -n "${HOOK_MID:-}" ] && eval "$HOOK_MID"
wait_for 30 "the killed node's lease to expire" \
	sh -c "[ \$(\"$B/ethermem\" node ls --json 2>&1 | tee $T/ls.out | grep -c '\"state\":\"up\"') = $((NODES - 1)) ] || { sleep 0.2; exit 1; }"
# the drained node: the first one other than the killed node that holds a
# client's region
drained=""
for c in $(seq $CLIENTS); do
	node=$(sed -n 's|^node tcp://||p' "$T/c$c.out")
	[ "$node" = "$victim" ] || { drained=$node; break; }
done
[ -n "$drained" ] || fail "every client's region is on the killed node"
"$B/ethermem" node drain "$drained" >"$T/drain.out" 2>&1 || fail "drain of $drained: $(tail -1 "$T/drain.out")"
drain_ms=$(date +%s%3N)
FAIL_SHOW="$FAIL_SHOW $T/drain.out $T/st.out"
# its parts are unlinked by the drain; a handle a client still has open on
# one goes once the client re-reads the record (its next call)
wait_for 20 "the drained node to hold no region and no byte" \
	sh -c "\"$B/ethermem\" status --json >$T/st.out 2>&1; grep '\"node\":\"[a-z:/]*$drained\"' $T/st.out >$T/dst.out &&
		grep -q '\"used\":0,\"regions\":0,\"named_regions\":0,' $T/dst.out || { sleep 0.2; exit 1; }"
sleep 2
touch "$T/stop"
bad=0 hit=0 total=0 moved=0
for c in $(seq $CLIENTS); do
	p=$(echo $cpids | cut -d' ' -f"$c")
	wait "$p"
	rc=$?
	out=$(cat "$T/c$c.out")
	[ "$rc" = 0 ] || { echo "client $c exited $rc: $out" >&2; bad=1; continue; }
	node=$(sed -n 's|^node tcp://||p' "$T/c$c.out")
	now=$(sed -n 's|^now tcp://||p' "$T/c$c.out")
	set -- $(grep '^ok ' "$T/c$c.out")
	ok=$2 err=$4 last_ok=$6
	total=$((total + ok))
	if [ "$node" = "$victim" ]; then
		hit=$((hit + 1))
		[ "$err" -gt 0 ] || { echo "client $c on the killed node saw no error" >&2; bad=1; }
	else
		[ "$err" = 0 ] || { echo "client $c ($node) saw errors: $out" >&2; bad=1; }
		[ "$last_ok" -gt "$drain_ms" ] || { echo "client $c stopped before the drain ended" >&2; bad=1; }
		[ "$now" != "$drained" ] || { echo "client $c's region is still on the drained node" >&2; bad=1; }
		[ "$node" != "$drained" ] || moved=$((moved + 1))
	fi
done
echo "$CLIENTS clients on $NODES nodes: $total verified write+read pairs;" \
	"$hit client(s) on the killed node $victim saw it lost, the others went on;" \
	"$moved client(s) went on through the drain of $drained: $(tail -1 "$T/drain.out")"
[ "$bad" = 0 ] || fail "scale check failed"
[ "$moved" -ge 1 ] || fail "no client was on the drained node"
[ "$hit" -ge 1 ] || fail "no client was on the killed node"
