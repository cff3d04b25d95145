#!/bin/bash
# ox_bench.sh [BUILD_DIR] [--full|--auth] - the OmniXtend data path measured
# between two network namespaces over a veth pair (MTU 9000), the figures
# BENCHMARKS.md "OmniXtend over veth" records.
#
# One memory node (ethermemd --ox) in one namespace, the benchmark in the
# other, node pinned to CPU 0 and client to CPU 1 (as src/ox/tests/netns_lat.sh
# does), so the two busy-pollers do not fight over one core:
#   1. ethermem bench --transport ox --baseline --json: every row over
#      OmniXtend, plus in the same run a raw Ethernet ping-pong on the same
#      interface (eth-pingpong), the TCP ping-pong and stream, and the TCP data
#      path's reads (rows with "transport":"tcp")
#   2. ethermem bench --quick --json over OmniXtend loss-free and then with 1%
#      of frames dropped by the test-only fault injector on both ends
#      (ETHERMEM_OX_FAULTS), for the large-read bandwidth under loss
# OmniXtend busy-polls while traffic flows; so that the TCP rows compare
# like for like, the TCP data path polls too (node --poll-us, client
# ETHERMEM_POLL_US: 50 us before sleeping).  TCP_POLL_US=0 measures TCP's
# default, blocking, instead.
# --auth measures instead what authenticated mode costs: ethermem bench
# --quick against a node with --ox-auth and ETHERMEM_OX_AUTH=1 (every frame
# tagged), and plain, alternated twice, in one run.
# JSON rows land in $OUT (default bench/results/ox-<date>), a summary on stdout.
# Needs root; names carry our PID and a trap removes them on every exit.
B=${1:-build}
# --quick by default: the full bench moves 1 GiB per bandwidth row, which at
# 64-byte ops over one requester is minutes per row on this machine
QUICK=--quick
[ "${2:-}" = --full ] && QUICK=
AUTH=
[ "${2:-}" = --auth ] && AUTH=1
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)"; exit 1; }
[ -x "$B/ethermemd" ] && [ -x "$B/ethermem" ] || { echo "build first: no $B/ethermemd"; exit 1; }
TCP_POLL_US=${TCP_POLL_US:-50}
export ETHERMEM_POLL_US=$TCP_POLL_US
OUT=${OUT:-bench/results/ox-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

P=$$
S=oxbs$P; C=oxbc$P; IS=oxbs$P; IC=oxbc$P
NODE=""
cleanup() {
	[ -n "$NODE" ] && kill "$NODE" 2>/dev/null && wait "$NODE" 2>/dev/null
	ip netns del $S 2>/dev/null
	ip netns del $C 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
. "$(dirname "$0")/lib.sh"
netns_pair $S $C $IS $IC 10.212.0 || exit 1
printf 'ox bench secret, not for production use\n' > "$OUT/secret"
chmod 600 "$OUT/secret"
export ETHERMEM_SECRET_FILE="$OUT/secret"

start_node() {   # extra ethermemd flags...
	rm -f "$OUT/port"
	ip netns exec $S taskset -c 0 "$B/ethermemd" --listen tcp://10.212.0.1:0 \
		--port-file "$OUT/port" --capacity 1G --poll-us "$TCP_POLL_US" --ox $IS "$@" \
		2>>"$OUT/node.log" &
	NODE=$!
	for _ in $(seq 300); do [ -s "$OUT/port" ] && break; sleep 0.01; done
	[ -s "$OUT/port" ] || { echo "node did not start"; cat "$OUT/node.log"; exit 1; }
	export ETHERMEM_NODES="tcp://10.212.0.1:$(cat "$OUT/port")"
}
stop_node() { kill "$NODE"; wait "$NODE" 2>/dev/null; NODE=""; }
bench() {   # OUTFILE ARGS...
	local f=$1
	shift
	ip netns exec $C taskset -c 1 "$B/ethermem" bench --transport ox --ox-iface $IC --json "$@" \
		> "$OUT/$f" || { echo "bench $* failed"; exit 1; }
}

if [ -n "$AUTH" ]; then
	export ETHERMEM_OX_FAULTS=
	for i in 1 2; do
		echo "== plain, then authenticated (--ox-auth, ETHERMEM_OX_AUTH=1), --quick, round $i"
		start_node
		bench plain$i.json --quick
		stop_node
		start_node --ox-auth
		ETHERMEM_OX_AUTH=1 bench auth$i.json --quick
		stop_node
	done
	python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
def rows(f):
    return [json.loads(l) for l in open(f"{out}/{f}") if l.startswith("{")]
def get(rs, op, size, qd, key):
    for r in rs:
        if r["op"] == op and r["transport"] == "ox" and r["size"] == size and r["qd"] == qd:
            return r[key]
    return None
print("| round | what | plain | authenticated | ratio |")
print("|-------|------|-------|---------------|-------|")
for i in (1, 2):
    p, a = rows(f"plain{i}.json"), rows(f"auth{i}.json")
    for what, op, size, qd, key in (("4 KiB read p50 us", "read", 4096, 1, "p50_us"),
                                    ("4 KiB write p50 us", "write", 4096, 1, "p50_us"),
                                    ("2 MiB read qd8 GB/s", "read", 2097152, 8, "gbps"),
                                    ("2 MiB write qd8 GB/s", "write", 2097152, 8, "gbps")):
        x, y = get(p, op, size, qd, key), get(a, op, size, qd, key)
        if x and y:
            print(f"| {i} | {what} | {x:.2f} | {y:.2f} | {y/x:.2f}x |")
EOF
	echo "rows in $OUT"
	exit 0
fi

echo "== ethermem bench --transport ox --ox-iface $IC --baseline --json $QUICK (TCP polls $TCP_POLL_US us)"
export ETHERMEM_OX_FAULTS=
start_node
bench main.json --baseline $QUICK
stop_node
echo "== loss-free and 1% loss, --quick"
start_node
bench loss0.json --quick
stop_node
export ETHERMEM_OX_FAULTS=drop=1,seed=7
start_node
bench loss1.json --quick
stop_node
export ETHERMEM_OX_FAULTS=

python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
def rows(f):
    return [json.loads(l) for l in open(f"{out}/{f}") if l.startswith("{")]
def get(rs, op, t, size, qd, key):
    for r in rs:
        if r["op"] == op and r["transport"] == t and r["size"] == size and r["qd"] == qd:
            return r[key]
    return None
m = rows("main.json")
print("| op | via | size | qd | p50 us | p99 us | GB/s |")
print("|----|-----|------|----|--------|--------|------|")
for r in m:
    print(f"| {r['op']} | {r['transport']} | {r['size']} | {r['qd']} | {r['p50_us']:.2f} | {r['p99_us']:.2f} | {r['gbps']:.3f} |")
ox4 = get(m, "read", "ox", 4096, 1, "p50_us")
eth4 = get(m, "eth-pingpong", "ox", 4096, 1, "p50_us")
tcp4 = get(m, "read", "tcp", 4096, 1, "p50_us")
oxbw = get(m, "read", "ox", 2097152, 8, "gbps")
tcpbw = get(m, "read", "tcp", 2097152, 8, "gbps")
l0, l1 = rows("loss0.json"), rows("loss1.json")
b0 = get(l0, "read", "ox", 2097152, 8, "gbps")
b1 = get(l1, "read", "ox", 2097152, 8, "gbps")
print()
print("| goal | measured | met |")
print("|------|----------|-----|")
def line(goal, v, ok):
    print(f"| {goal} | {v} | {'yes' if ok else 'no'} |")
if ox4 and eth4:
    line("4 KiB read p50 <= 1.2x raw Ethernet ping-pong p50", f"{ox4:.2f} / {eth4:.2f} us = {ox4/eth4:.2f}x", ox4 / eth4 <= 1.2)
if ox4 and tcp4:
    line("4 KiB read p50 >= 30% below TCP's", f"{ox4:.2f} vs {tcp4:.2f} us = {100*(1-ox4/tcp4):.0f}% below", ox4 <= 0.7 * tcp4)
if oxbw and tcpbw:
    line("2 MiB read qd8 bandwidth >= TCP's", f"{oxbw:.2f} vs {tcpbw:.2f} GB/s = {oxbw/tcpbw:.2f}x", oxbw >= tcpbw)
if b0 and b1:
    line("at 1% loss, 2 MiB read qd8 bandwidth >= 70% of loss-free", f"{b1:.2f} vs {b0:.2f} GB/s = {100*b1/b0:.0f}%", b1 >= 0.7 * b0)
EOF
echo "rows in $OUT"
