#!/bin/bash
# test_many_clients.sh - one node serves hundreds of client connections at
# once with a bounded number of threads: `ethermem bench loaded --many`
# opens them all, every connection writes and reads back its own 4 KiB slot
# over and over (each byte compared), and the node must end with every
# connection served at least once, no wrong byte, and its thread count
# bounded by its workers, not by its clients. Then the same with encrypted
# connections, and with --workers 1 (one thread serves them all). It checks
# correctness only; figures are the benchmark's business.
set -u
. "$(dirname "$0")/lib.sh"
ulimit -n 4096 2>/dev/null || true
N=300
check_row() { # FILE WORKERS
	grep -q '"op":"many"' "$1" || fail "no row: $(cat "$1")"
	grep -q "\"connections\":$N," "$1" || fail "not $N connections: $(cat "$1")"
	grep -q '"verified":true' "$1" || fail "not verified: $(cat "$1")"
	grep -q '"min_conn_ops_s":0.0,' "$1" && fail "a connection was never served: $(cat "$1")"
	th=$(sed 's/.*"node_threads":\([-0-9]*\).*/\1/' "$1")
	# the acceptor, the workers, and a few short handshake threads at most
	[ "$th" -ge 1 ] && [ "$th" -le $(($2 + 6)) ] ||
		fail "node threads $th with $2 workers and $N clients: $(cat "$1")"
}
start_node a 64M --workers 2
ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a" "$B/ethermem" bench loaded --many $N --time 1 \
	--node-pid "$PID_a" --json > "$T/out" || fail "bench --many failed: $(cat "$T/out")"
check_row "$T/out" 2
start_node e 64M --workers 1 --encrypt
ETHERMEM_NODES="tcp://127.0.0.1:$PORT_e" ETHERMEM_ENCRYPT=1 "$B/ethermem" bench loaded \
	--many $N --time 1 --node-pid "$PID_e" --json > "$T/enc" ||
	fail "bench --many, encrypted, failed: $(cat "$T/enc")"
check_row "$T/enc" 1
stop_node a
stop_node e
"$B/ethermem" bench loaded --many 0 > "$T/bad" 2>&1 && fail "--many 0 accepted"
grep -q "ethermem bench loaded:" "$T/bad" || fail "--many 0: no clear error: $(cat "$T/bad")"
echo "many clients: $N connections served and verified, threads bounded"
