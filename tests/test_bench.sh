#!/bin/bash
# test_bench.sh - `ethermem bench --baseline --json` runs end to end and
# prints every row with the documented fields, the queue rows both one op
# per submit and in batches of 32, and refuses a bad --time; and that
# --redundancy none:N puts its N regions on N different nodes (refusing
# when the pool has fewer) and prints its 4 KiB read and write rows. It
# checks shape, not speed: speed is for the benchmark itself.
set -u
. "$(dirname "$0")/lib.sh"
start_node a 256M
export ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a"
"$B/ethermem" bench --baseline --json --quick --time 0.5 > "$T/out" || fail "bench failed"
for op in read write pingpong stream atomic-fadd atomic-cas; do
	grep -q "\"op\":\"$op\"" "$T/out" || fail "no $op row"
done
for s in 64 4096 65536 2097152; do
	grep -q "\"op\":\"read\",\"size\":$s,\"qd\":1," "$T/out" || fail "no read $s qd1"
	grep -q "\"op\":\"read\",\"size\":$s,\"qd\":8,.*\"batch\":1}" "$T/out" || fail "no read $s qd8"
	grep -q "\"op\":\"read\",\"size\":$s,\"qd\":32,.*\"batch\":32}" "$T/out" ||
		fail "no read $s qd32 in batches of 32"
	grep -q "\"op\":\"pingpong\",\"size\":$s," "$T/out" || fail "no pingpong $s"
done
while read -r line; do
	for f in op size qd transport p50_us p99_us p999_us gbps ops_per_s batch; do
		case "$line" in *"\"$f\":"*) ;; *) fail "row without $f: $line" ;; esac
	done
done < "$T/out"
for bad in 0 -1 abc 1x; do
	"$B/ethermem" bench --time "$bad" > "$T/bad" 2>&1 && fail "--time $bad accepted"
	grep -q -- "--time" "$T/bad" || fail "--time $bad: no clear error: $(cat "$T/bad")"
done
start_node b 256M
start_node c 256M
export ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a,tcp://127.0.0.1:$PORT_b,tcp://127.0.0.1:$PORT_c"
"$B/ethermem" bench --redundancy none:3 --json --quick --time 0.2 > "$T/spread" 2>&1 ||
	fail "bench --redundancy none:3 failed: $(cat "$T/spread")"
for op in read write; do
	grep -q "\"op\":\"$op\",\"size\":4096,\"qd\":1,.*\"redundancy\":\"none:3\"" "$T/spread" ||
		fail "no none:3 4 KiB $op row: $(cat "$T/spread")"
done
for bad in none:4 none:1 none:17; do
	"$B/ethermem" bench --redundancy "$bad" --quick --time 0.2 > "$T/bad" 2>&1 &&
		fail "--redundancy $bad accepted on three nodes"
	grep -q "none:" "$T/bad" || fail "--redundancy $bad: no clear error: $(cat "$T/bad")"
done
echo "bench: $(wc -l < "$T/out") rows ok, none:N ok"
