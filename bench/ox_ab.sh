#!/bin/bash
# ox_ab.sh OLD_BUILD NEW_BUILD [ROUNDS] - two builds of ethermem compared on
# the OmniXtend data path and on TCP, alternated in one run, so that the
# machine's load (which moves single figures by 2x here) hits both alike.
#
# Two network namespaces joined by one veth pair (MTU 9000, or $MTU: veth
# takes up to 65535, where OmniXtend sends bursts of 32 KiB instead of 8),
# node pinned to CPU 0 and client to CPU 1, as bench/ox_bench.sh sets them
# up.  Each round,
# for OLD then NEW: one node (ethermemd --ox), then in the client namespace
#   ethermem bench --transport ox --ox-iface IF --quick --json   (OmniXtend)
#   ethermem bench --quick --json                                (TCP, same node)
# TCP busy-polls as OmniXtend does (node --poll-us 50, ETHERMEM_POLL_US=50).
# Prints per run the 2 MiB read bandwidth at depth 8 and the 4 KiB read p50
# over both transports and their ratios OX/TCP, and the load average; the
# JSON rows land in $OUT (default bench/results/ox-ab-<date>).  Needs root;
# names carry our PID and a trap removes them on every exit.
OLD=${1:?usage: ox_ab.sh OLD_BUILD NEW_BUILD [ROUNDS]}
NEW=${2:?usage: ox_ab.sh OLD_BUILD NEW_BUILD [ROUNDS]}
ROUNDS=${3:-2}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)"; exit 1; }
for b in "$OLD" "$NEW"; do
	[ -x "$b/ethermemd" ] && [ -x "$b/ethermem" ] || { echo "no $b/ethermemd or $b/ethermem"; exit 1; }
done
OUT=${OUT:-bench/results/ox-ab-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export ETHERMEM_POLL_US=50 ETHERMEM_TIMEOUT_MS=60000

P=$$
S=oxabs$P; C=oxabc$P
NODE=""
cleanup() {
	[ -n "$NODE" ] && kill "$NODE" 2>/dev/null && wait "$NODE" 2>/dev/null
	ip netns del $S 2>/dev/null
	ip netns del $C 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
. "$(dirname "$0")/lib.sh"
netns_pair $S $C $S $C 10.213.0 || exit 1
MTU=${MTU:-9000}
ip -n $S link set $S mtu "$MTU" && ip -n $C link set $C mtu "$MTU" || exit 1
echo "veth MTU $MTU" > "$OUT/mtu"
printf 'ox a/b secret, not for production use\n' > "$OUT/secret"
chmod 600 "$OUT/secret"
export ETHERMEM_SECRET_FILE="$OUT/secret"

run() {   # BUILD TAG
	local b=$1 tag=$2
	rm -f "$OUT/port"
	ip netns exec $S taskset -c 0 "$b/ethermemd" --listen tcp://10.213.0.1:0 \
		--port-file "$OUT/port" --capacity 1G --poll-us 50 --ox $S 2>>"$OUT/node-$tag.log" &
	NODE=$!
	for _ in $(seq 300); do [ -s "$OUT/port" ] && break; sleep 0.01; done
	[ -s "$OUT/port" ] || { echo "node did not start"; cat "$OUT/node-$tag.log"; exit 1; }
	export ETHERMEM_NODES="tcp://10.213.0.1:$(cat "$OUT/port")"
	uptime > "$OUT/$tag.load"
	ip netns exec $C taskset -c 1 "$b/ethermem" bench --transport ox --ox-iface $C --quick \
		--json > "$OUT/$tag-ox.json" 2>>"$OUT/client-$tag.log"
	ip netns exec $C taskset -c 1 "$b/ethermem" bench --quick --json > "$OUT/$tag-tcp.json" \
		2>>"$OUT/client-$tag.log"
	uptime >> "$OUT/$tag.load"
	kill "$NODE"; wait "$NODE" 2>/dev/null; NODE=""
}

TAGS=""
for r in $(seq "$ROUNDS"); do
	echo "== round $r: old, then new"
	run "$OLD" old$r; TAGS="$TAGS old$r"
	run "$NEW" new$r; TAGS="$TAGS new$r"
done

/usr/bin/python3 - "$OUT" $TAGS <<'PY'
import json, sys
out, tags = sys.argv[1], sys.argv[2:]
def rows(f):
    try:
        return [json.loads(l) for l in open(f"{out}/{f}") if l.startswith("{")]
    except OSError:
        return []
def get(rs, op, size, qd, key):
    for r in rs:
        if r.get("op") == op and r.get("size") == size and r.get("qd") == qd and r.get("batch", 1) == 1:
            return r.get(key)
    return None
def fmt(v, p=3):
    return "-" if v is None else f"{v:.{p}f}"
print("| run | 2 MiB read qd8 GB/s ox / tcp = ratio | 4 KiB read p50 us ox / tcp = ratio | load avg (1 min) before, after |")
print("|-----|------|------|------|")
for t in tags:
    ox, tcp = rows(f"{t}-ox.json"), rows(f"{t}-tcp.json")
    bo, bt = get(ox, "read", 2097152, 8, "gbps"), get(tcp, "read", 2097152, 8, "gbps")
    lo, lt = get(ox, "read", 4096, 1, "p50_us"), get(tcp, "read", 4096, 1, "p50_us")
    br = bo / bt if bo and bt else None
    lr = lo / lt if lo and lt else None
    load = [l.split("load average:")[1].split(",")[0].strip() for l in open(f"{out}/{t}.load")]
    print(f"| {t} | {fmt(bo)} / {fmt(bt)} = {fmt(br, 2)} | {fmt(lo, 2)} / {fmt(lt, 2)} = {fmt(lr, 2)} | {', '.join(load)} |")
PY
echo "rows in $OUT"
