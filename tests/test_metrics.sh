#!/bin/bash
# test_metrics.sh - a node's /metrics as operators meet it: the exposition
# passes promtool's checks, the counters move with real traffic, and Debian's
# Prometheus scrapes the node and answers a query for the series through its
# HTTP API; `ethermem status --watch` redraws the counters with rates.
# With etcd installed the node registers in it, and its membership shows in
# the metrics and in Prometheus. Skips (77) only when Prometheus is not
# installed.
. "$(dirname "$0")/lib.sh"
need_cmd prometheus # scripts/deps.sh installs it
need_cmd promtool
need_cmd curl
E="$B/ethermem"

"$B/ethermemd" --capacity 16M --secret-file "$T/secret" --metrics-listen nohost:x 2>"$T/err" &&
	fail "a bad --metrics-listen must fail"
grep -q metrics-listen "$T/err" || fail "bad --metrics-listen message: $(cat "$T/err")"

CLUSTER_FLAGS=""
if [ -x "${EM_TEST_ETCD:-/usr/bin/etcd}" ]; then
	start_etcd
	unset ETHERMEM_ETCD # the tools below use the node list
	CLUSTER_FLAGS="--etcd $ETCD_URL --cluster metrics$$ --lease-ttl 3"
fi
# shellcheck disable=SC2086 # the flags are words
start_node a 64M --metrics-listen 127.0.0.1:0 $CLUSTER_FLAGS
MPORT=$(sed -n 's|.*metrics on http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$T/a.log")
[ -n "$MPORT" ] || fail "no metrics address in the log: $(cat "$T/a.log")"
M="http://127.0.0.1:$MPORT/metrics"
export ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a"

curl -sf "$M" > "$T/m0" || fail "GET /metrics"
v0() { sed -n "s/^$1 //p" "$T/m0"; }
promtool check metrics < "$T/m0" || fail "promtool check metrics"
for s in ethermem_capacity_bytes ethermem_used_bytes ethermem_clients 'ethermem_ops_total{op="read"}'; do
	grep -q "^$s " "$T/m0" || fail "$s missing"
done
grep -q '^ethermem_capacity_bytes 67108864$' "$T/m0" || fail "capacity"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/other")" = 404 ] || fail "404"
[ "$(v0 'ethermem_region_parts{redundancy="none"}')" = 0 ] || fail "no region yet"
if [ -n "$CLUSTER_FLAGS" ]; then
	registered() { curl -sf "$M" | grep -q '^ethermem_cluster_registered 1$'; }
	wait_for 10 "the node to show itself registered" registered
	curl -sf "$M" > "$T/mc" || fail "GET /metrics, registered"
	promtool check metrics < "$T/mc" || fail "promtool check metrics, registered"
	grep -q '^ethermem_cluster_lease_ttl_seconds 3$' "$T/mc" || fail "lease TTL"
	grep -q '^ethermem_node_state{state="up"} 1$' "$T/mc" || fail "node state up"
	grep -q '^ethermem_node_state{state="draining"} 0$' "$T/mc" || fail "node state draining"
	age=$(sed -n 's/^ethermem_cluster_lease_renewed_age_seconds \([0-9]*\)\..*/\1/p' "$T/mc")
	[ -n "$age" ] && [ "$age" -lt 3 ] || fail "lease renewed within its TTL: $(grep renewed "$T/mc")"
	# etcd gone: the lease cannot be renewed and the gauge says so
	kill "$ETCD_PID"
	wait "$ETCD_PID" 2>/dev/null
	unregistered() { curl -sf "$M" | grep -q '^ethermem_cluster_registered 0$'; }
	wait_for 15 "the node to show the lease lost" unregistered
else
	grep -q '^ethermem_cluster_registered' "$T/m0" && fail "cluster metrics without etcd"
fi

# traffic: 1 MiB in and out of a region
head -c 1M /dev/urandom > "$T/in"
"$E" import "$T/in" data >/dev/null || fail import
"$E" export data "$T/out" >/dev/null || fail export
cmp -s "$T/in" "$T/out" || fail "round trip"
curl -sf "$M" > "$T/m1" || fail "GET /metrics after traffic"
v() { sed -n "s/^$1 //p" "$2"; }
[ "$(v 'ethermem_ops_total{op="read"}' "$T/m1")" -gt 0 ] || fail "reads not counted"
[ "$(v 'ethermem_ops_total{op="write"}' "$T/m1")" -gt 0 ] || fail "writes not counted"
[ "$(v ethermem_used_bytes "$T/m1")" -ge 1048576 ] || fail "used bytes"
[ "$(v ethermem_named_regions "$T/m1")" = 1 ] || fail "named regions"
[ "$(v 'ethermem_region_parts{redundancy="none"}' "$T/m1")" = 1 ] || fail "region parts by redundancy"
[ "$(v ethermem_received_bytes_total "$T/m1")" -ge 1048576 ] || fail "bytes in"
[ "$(v ethermem_sent_bytes_total "$T/m1")" -ge 1048576 ] || fail "bytes out"
# a histogram's +Inf bucket and count agree with the read counter
[ "$(v 'ethermem_op_duration_seconds_count{op="read"}' "$T/m1")" = \
  "$(v 'ethermem_ops_total{op="read"}' "$T/m1")" ] || fail "read histogram count"
[ "$(v 'ethermem_op_duration_seconds_bucket{op="read",le="+Inf"}' "$T/m1")" = \
  "$(v 'ethermem_op_duration_seconds_count{op="read"}' "$T/m1")" ] || fail "+Inf bucket"

# tasks waiting for a CPU pause the node's spinning (the spin gate): with
# two busy loops per CPU the stall is near all the time, and the counter of
# paused time grows. Where Linux keeps no CPU pressure the gate stays open.
if [ -r /proc/pressure/cpu ]; then
	p0=$(v ethermem_spin_paused_seconds_total "$T/m1")
	[ -n "$p0" ] || fail "ethermem_spin_paused_seconds_total missing"
	busy=""
	for _ in $(seq $((2 * $(nproc)))); do
		timeout 3 sh -c 'while :; do :; done' &
		busy="$busy $!"
	done
	paused() {
		curl -sf "$M" > "$T/mp" &&
			awk -v p0="$p0" '$1 == "ethermem_spin_paused_seconds_total" && $2 > p0 { up = 1 }
				END { exit !up }' "$T/mp"
	}
	wait_for 10 "the node to pause its spinning under CPU pressure" paused
	# shellcheck disable=SC2086 # the pids are words
	kill $busy 2>/dev/null
	wait $busy 2>/dev/null
fi

# the same counters at a terminal: two frames, the second with rates
"$E" status --watch 0.2 --count 2 > "$T/watch" || fail "status --watch"
[ "$(grep -c 'ethermem status, every 0.2 s' "$T/watch")" = 2 ] || fail "two frames: $(cat "$T/watch")"
[ "$(grep -c 'per second: read' "$T/watch")" = 1 ] || fail "rates in the second frame"
"$E" status --watch 0 2>/dev/null && fail "--watch 0 must be refused"

# a real Prometheus on a free loopback port
PPORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$T/prom.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: ethermem
    static_configs:
      - targets: ['127.0.0.1:$MPORT']
YML
FAIL_SHOW="$FAIL_SHOW $T/prom.log"
spawn prometheus --config.file="$T/prom.yml" --storage.tsdb.path="$T/tsdb" \
	--web.listen-address="127.0.0.1:$PPORT" 2>"$T/prom.log"
Q="http://127.0.0.1:$PPORT/api/v1/query"
scraped() {
	curl -sf -G "$Q" --data-urlencode 'query=ethermem_ops_total{op="read"}' > "$T/q" 2>/dev/null &&
		grep -q '"value":\[' "$T/q"
}
wait_for 30 "Prometheus to scrape the node" scraped
grep -q '"status":"success"' "$T/q" || fail "prometheus query: $(cat "$T/q")"
grep -q '"job":"ethermem"' "$T/q" || fail "no scraped series: $(cat "$T/q")"
reads=$(sed -n 's/.*"value":\[[0-9.]*,"\([0-9]*\)"\].*/\1/p' "$T/q")
[ -n "$reads" ] && [ "$reads" -gt 0 ] || fail "scraped read counter: $(cat "$T/q")"
curl -sf -G "$Q" --data-urlencode 'query=ethermem_capacity_bytes' | grep -q '"67108864"' ||
	fail "scraped capacity"
curl -sf -G "$Q" --data-urlencode 'query=up{job="ethermem"}' | grep -q '"1"\]' || fail "target up"
curl -sf -G "$Q" --data-urlencode 'query=ethermem_region_parts{redundancy="none"}' | grep -q '"1"\]' ||
	fail "scraped region parts by redundancy"
if [ -n "$CLUSTER_FLAGS" ]; then
	curl -sf -G "$Q" --data-urlencode 'query=ethermem_cluster_lease_ttl_seconds' | grep -q '"3"\]' ||
		fail "scraped lease TTL"
fi
# a replicated region's copy on this node is counted under its redundancy
start_node b 64M
ETHERMEM_NODES="$ETHERMEM_NODES,tcp://127.0.0.1:$PORT_b" "$E" region create copies 1M \
	--redundancy replicate:2 >/dev/null || fail "create a replicated region"
[ "$(curl -sf "$M" | sed -n 's/^ethermem_region_parts{redundancy="replicate"} //p')" = 1 ] ||
	fail "the replicated region's copy: $(curl -sf "$M" | grep region_parts)"
echo "ok: scraped $reads reads through Prometheus on port $PPORT"
