#!/bin/bash
# cluster_detect.sh - how long after a memory node is killed (SIGKILL) or
# frozen (SIGSTOP) every client sees it down, in a pool kept in etcd.
#
# Starts a one-member etcd and three nodes on loopback (lease TTL given by
# LEASE_TTL, default 1 s), then per round starts CLIENTS watchers
# (`ethermem node watch`, the membership view every client library keeps),
# kills or freezes one node, and takes each watcher's "down" time minus the
# moment of the signal. Prints min / median / max over rounds x clients, and
# one JSON line per kind with --json. A round in which a watcher did not see
# the victim go down after the signal (under heavy load a short lease can
# lapse by itself, and a watcher ends at the first "down" of any node) is
# run again and counted as discarded.
#   usage: bench/cluster_detect.sh [--json]   (ROUNDS=5 CLIENTS=4 LEASE_TTL=1)
set -u
cd "$(dirname "$0")/.."
export EM_BUILD_DIR=${EM_BUILD_DIR:-$PWD/build}
. tests/lib.sh
JSON=${1:-}
ROUNDS=${ROUNDS:-5}
CLIENTS=${CLIENTS:-4}
LEASE_TTL=${LEASE_TTL:-1}
E="$B/ethermem"
CL=detect$$
start_etcd

cnode() { # cnode NAME: a registered node; sets PID_<NAME>, PORT_<NAME>
	start_node "$1" 16M --etcd "$ETCD_URL" --cluster "$CL" --lease-ttl "$LEASE_TTL"
}
up_count() { "$E" node ls --json --cluster "$CL" | grep -c '"state":"up"'; }
wait_up() {
	for _ in $(seq 200); do [ "$(up_count)" = "$1" ] && return 0; sleep 0.05; done
	fail "never saw $1 nodes up"
}

cnode a; cnode b; cnode c
wait_up 3
: > "$T/kill.ms"; : > "$T/freeze.ms"
discarded_kill=0; discarded_freeze=0
for kind in kill freeze; do
	r=0; tries=0
	while [ "$r" -lt "$ROUNDS" ]; do
		tries=$((tries + 1))
		[ "$tries" -le $((ROUNDS * 3)) ] || fail "$kind: too many rounds discarded"
		cnode v
		wait_up 4
		port=$PORT_v
		wpids=""
		for i in $(seq "$CLIENTS"); do
			: > "$T/w$i.out"
			"$E" node watch --json --downs 1 --cluster "$CL" > "$T/w$i.out" &
			wpids="$wpids $!"
		done
		# every watcher has listed the four nodes before the signal
		for i in $(seq "$CLIENTS"); do
			for _ in $(seq 200); do
				[ "$(grep -c '"event":"up"' "$T/w$i.out")" -ge 4 ] && break
				sleep 0.02
			done
		done
		t0=$(date +%s%3N)
		if [ "$kind" = kill ]; then kill -KILL "$PID_v"; else kill -STOP "$PID_v"; fi
		for p in $wpids; do wait "$p"; done
		: > "$T/round.ms"
		for i in $(seq "$CLIENTS"); do
			t=$(grep '"event":"down"' "$T/w$i.out" | grep "127.0.0.1:$port" |
				sed 's/.*"t_ms":\([0-9]*\).*/\1/' | head -1)
			if [ -z "$t" ] || [ "$t" -lt "$t0" ]; then
				echo "$kind: round discarded: watcher $i saw no down of the victim after the signal" >&2
				: > "$T/round.ms"
				eval "discarded_$kind=\$((discarded_$kind + 1))"
				break
			fi
			echo $((t - t0)) >> "$T/round.ms"
		done
		if [ -s "$T/round.ms" ]; then
			cat "$T/round.ms" >> "$T/$kind.ms"
			r=$((r + 1))
		fi
		if [ "$kind" = freeze ]; then kill -CONT "$PID_v"; kill -TERM "$PID_v"; fi
		wait "$PID_v" 2>/dev/null
		wait_up 3
	done
done
for kind in kill freeze; do
	sort -n "$T/$kind.ms" > "$T/$kind.sorted"
	n=$(wc -l < "$T/$kind.sorted")
	min=$(head -1 "$T/$kind.sorted"); max=$(tail -1 "$T/$kind.sorted")
	med=$(sed -n "$(( (n + 1) / 2 ))p" "$T/$kind.sorted")
	eval "disc=\$discarded_$kind"
	if [ "$JSON" = --json ]; then
		echo "{\"bench\":\"cluster_detect\",\"signal\":\"$kind\",\"lease_ttl_s\":$LEASE_TTL,\"samples\":$n,\"min_ms\":$min,\"median_ms\":$med,\"max_ms\":$max,\"discarded_rounds\":$disc}"
	else
		echo "$kind: node seen down by every client after min $min ms, median $med ms, max $max ms ($n samples: $ROUNDS rounds x $CLIENTS clients, lease TTL $LEASE_TTL s; $disc round(s) discarded)"
	fi
done
