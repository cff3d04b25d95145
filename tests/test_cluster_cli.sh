#!/bin/bash
# test_cluster_cli.sh - a pool that lives in etcd, as a user meets it:
# nodes register themselves (ethermemd --etcd --cluster), `ethermem node ls`
# lists them from etcd, every tool finds the pool with only ETHERMEM_ETCD and
# the secret, named regions are listed from etcd, a node stopped cleanly
# leaves at once and a killed node's record goes when its lease runs out.
# A drain asked of a pool given as a node list is refused, with the reason,
# and leaves the node as it was (the layouts a drain moves live in etcd).
. "$(dirname "$0")/lib.sh"
E="$B/ethermem"
start_etcd
unset ETHERMEM_NODES
CL=clitest$$

# start_cnode NAME CAPACITY: a node registered in etcd; sets PORT_<NAME>, PID_<NAME>
start_cnode() {
	start_node "$1" "$2" --etcd "$ETCD_URL" --cluster "$CL" --lease-ttl 1
}
# wait_nodes N: until node ls shows N nodes (5 s at most)
wait_nodes() {
	for _ in $(seq 100); do
		[ "$("$E" node ls --json --cluster "$CL" | grep -c '"state":"up"')" = "$1" ] && return 0
		sleep 0.05
	done
	fail "node ls never showed $1 nodes: $("$E" node ls --cluster "$CL")"
}

"$E" node --help | grep -q 'node ls' || fail "node --help"
env -u ETHERMEM_ETCD "$E" node ls 2>"$T/err" && fail "node ls without etcd"
grep -q 'no etcd' "$T/err" || fail "no-etcd message"
"$E" node ls --cluster 'bad/name' 2>/dev/null && fail "bad cluster name"
# no node yet: the tools say so
"$E" status --cluster "$CL" 2>"$T/err" && fail "status with no node registered"
grep -q 'no memory node' "$T/err" || fail "no-node message: $(cat "$T/err")"

start_cnode a 64M
start_cnode b 64M
start_cnode c 32M
wait_nodes 3
"$E" node ls --cluster "$CL" > "$T/ls"
grep -q "tcp://127.0.0.1:$PORT_a .*up .*67108864 .*67108864" "$T/ls" || fail "node ls row: $(cat "$T/ls")"
"$E" node ls --json --cluster "$CL" | grep "127.0.0.1:$PORT_c" | grep -q '"capacity":33554432' ||
	fail "node ls --json"
# another cluster's name sees none of them
[ "$("$E" node ls --json --cluster other | wc -l)" = 0 ] || fail "clusters are apart"

# every tool: etcd and the secret only
"$E" status --cluster "$CL" > "$T/st" || fail "status from etcd"
[ "$(grep -c '^node ' "$T/st")" = 3 ] || fail "status lists the three nodes: $(cat "$T/st")"
"$E" region create --cluster "$CL" weights 100M >/dev/null || fail "create striped"
"$E" region create --cluster "$CL" small 4K >/dev/null || fail "create small"
"$E" region create --cluster "$CL" small 4K >/dev/null || fail "same-size create opens"
"$E" region create --cluster "$CL" small 4K --excl 2>"$T/err" && fail "excl create of an existing name"
grep -q 'exists' "$T/err" || fail "exists message"
"$E" region create --cluster "$CL" small 8K 2>/dev/null && fail "other-size create of an existing name"
"$E" region ls --cluster "$CL" > "$T/rls" || fail "region ls"
grep -q '^weights .*104857600 .* 3 none .*healthy$' "$T/rls" || fail "region ls weights: $(cat "$T/rls")"
grep -q '^small ' "$T/rls" || fail "region ls small"
ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" get --prefix "/ethermem/$CL/regions/" --keys-only |
	grep -q "/ethermem/$CL/regions/weights" || fail "the directory is in etcd"
# free bytes published follow the allocation (refreshed about once a second)
for _ in $(seq 60); do
	free_a=$("$E" node ls --json --cluster "$CL" | grep "127.0.0.1:$PORT_a" | sed 's/.*"free":\([0-9]*\).*/\1/')
	[ "$free_a" -lt 67108864 ] && break
	sleep 0.05
done
[ "$free_a" -lt 67108864 ] || fail "node a's free bytes never went down"
"$E" region rm --cluster "$CL" weights || fail "rm"
"$E" region rm --cluster "$CL" weights 2>/dev/null && fail "rm twice"
"$E" region ls --cluster "$CL" | grep -q '^weights' && fail "rm'd region still listed"
"$E" region create --cluster "$CL" weights 100M >/dev/null || fail "name free again after rm"

# a clean stop leaves at once; a killed node when its lease (1 s) runs out
kill -TERM "$PID_c"
wait "$PID_c" 2>/dev/null
[ "$("$E" node ls --json --cluster "$CL" | grep -c '"state":"up"')" = 2 ] || fail "a stopped node left"
kill -KILL "$PID_b"
wait "$PID_b" 2>/dev/null
wait_nodes 1
"$E" node ls --json --cluster "$CL" | grep -q "127.0.0.1:$PORT_a" || fail "the live node stays"

# a node list instead of etcd: the drain says why it cannot, and the node
# takes regions as before
ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a" env -u ETHERMEM_ETCD "$E" node drain \
	"127.0.0.1:$PORT_a" 2>"$T/err" && fail "drain of a static pool"
grep -q 'needs a pool in etcd' "$T/err" || fail "static drain message: $(cat "$T/err")"
"$E" node ls --json --cluster "$CL" | grep "127.0.0.1:$PORT_a" | grep -q '"state":"up"' ||
	fail "a refused drain left the node draining"
ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a" env -u ETHERMEM_ETCD "$E" region create after 4K \
	>/dev/null || fail "the node takes regions after a refused drain"
exit 0
