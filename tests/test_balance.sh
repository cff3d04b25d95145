#!/bin/bash
# test_balance.sh - the node's workers move small-request connections away
# from bulk streams without losing or mixing up a byte. A node with two
# workers serves 200 connections doing verified 4 KiB writes and reads
# (`ethermem bench loaded --many`, every byte compared), spread over both
# workers as they connect; then a bulk client streams 2 MiB transfers
# (`ethermem bench loaded --reads-only`), which must land on one of the
# workers, so the small connections there have to move to the other. The
# test checks that connections moved (the node's
# ethermem_connections_moved_total), that every connection was served and
# every byte verified across the moves, and that the bulk client finished.
# Correctness only: how fast anyone went is the benchmark's business.
set -u
. "$(dirname "$0")/lib.sh"
need_cmd curl
ulimit -n 4096 2>/dev/null || true
N=200
start_node a 256M --workers 2 --metrics-listen 127.0.0.1:0
MPORT=$(sed -n 's|.*metrics on http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$T/a.log")
[ -n "$MPORT" ] || fail "no metrics address in the log: $(cat "$T/a.log")"
M="http://127.0.0.1:$MPORT/metrics"
metric() { curl -sf "$M" | sed -n "s/^$1 //p"; }
export ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a"
"$B/ethermem" bench loaded --many $N --time 6 --json > "$T/many" 2>&1 &
MANY=$!
wait_for 20 "$N clients connected" sh -c "[ \"\$(curl -sf '$M' | sed -n 's/^ethermem_clients //p')\" -ge $N ]"
[ "$(metric ethermem_connections_moved_total)" = 0 ] || fail "moves before any bulk traffic"
"$B/ethermem" bench loaded --reads-only --clients 1 --quick --time 0.3 --json > "$T/bulk" 2>&1 ||
	fail "bulk client failed: $(cat "$T/bulk")"
wait "$MANY" || fail "--many failed: $(cat "$T/many")"
grep -q '"op":"many"' "$T/many" || fail "no row: $(cat "$T/many")"
grep -q "\"connections\":$N," "$T/many" || fail "not $N connections: $(cat "$T/many")"
grep -q '"verified":true' "$T/many" || fail "not verified: $(cat "$T/many")"
grep -q '"min_conn_ops_s":0.0,' "$T/many" && fail "a connection was never served: $(cat "$T/many")"
grep -c '"op":"loaded"' "$T/bulk" | grep -qx 5 || fail "bulk rows missing: $(cat "$T/bulk")"
moved=$(metric ethermem_connections_moved_total)
[ -n "$moved" ] && [ "$moved" -gt 0 ] || fail "no connection moved away from the bulk stream"
stop_node a
echo "balance: $moved connection moves under bulk load, $N connections served and verified"
