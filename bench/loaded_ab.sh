#!/bin/bash
# loaded_ab.sh - `ethermem bench loaded` against several node configurations
# in one run, taken in turns (A, B, C, A, B, C, ...) so that the drift of a
# shared machine hits each alike: the loaded-latency rows (--quick) and the
# thousand-client row (--many) per configuration, then the medians over the
# rounds side by side with their ratios to the first configuration.
#
# On loopback by default; with --veth the nodes run in a network namespace
# of their own, reached over a veth pair from this one (names start with
# PREFIX, so parallel runs on one machine do not collide).
#
# A configuration NAME@DIR='flags' runs the node and the benchmark of the
# build in DIR instead of BUILD_DIR: two builds of the tree, old and new,
# measured in turns. The rows carry each level's CPU (the benchmark process
# and the node, in cores, and per operation).
#
# Usage: bench/loaded_ab.sh BUILD_DIR [--veth] [--rounds N] [--prefix P]
#            [--many N] [--out DIR] NAME[@DIR]='node flags' [...]
# e.g.   bench/loaded_ab.sh build old='--workers -1' epoll='--io epoll' uring='--io uring'
#        bench/loaded_ab.sh build before@/tmp/old/build='' after=''
set -u
B=${1:?usage: bench/loaded_ab.sh BUILD_DIR [--veth] [--rounds N] NAME='flags'...}
shift
VETH=0 ROUNDS=3 PFX=emab MANY=1000 OUT=""
CONFS=()
while [ $# -gt 0 ]; do
	case $1 in
	--veth) VETH=1 ;;
	--rounds) ROUNDS=$2 && shift ;;
	--prefix) PFX=$2 && shift ;;
	--many) MANY=$2 && shift ;;
	--out) OUT=$2 && shift ;;
	*=*) CONFS+=("$1") ;;
	*) echo "loaded_ab.sh: unknown argument '$1'" >&2 && exit 2 ;;
	esac
	shift
done
[ ${#CONFS[@]} -gt 0 ] || CONFS=("old=--workers -1" "new=")
T=${OUT:-$(mktemp -d /tmp/loaded_ab.XXXXXX)}
mkdir -p "$T"
PIDS=""
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	if [ $VETH = 1 ]; then
		ip link del "${PFX}a" 2>/dev/null
		ip netns del "${PFX}n" 2>/dev/null
	fi
	[ -n "$OUT" ] || rm -rf "$T"
}
trap cleanup EXIT
printf 'a cluster secret for the benchmark, 40 bytes\n' > "$T/secret"
chmod 600 "$T/secret"
export ETHERMEM_SECRET_FILE="$T/secret"
HOST=127.0.0.1 WRAP="" TRANSPORT=loopback
if [ $VETH = 1 ]; then
	[ "$(id -u)" = 0 ] || { echo "loaded_ab.sh: --veth needs root" >&2 && exit 77; }
	ip netns add "${PFX}n" || exit 1
	ip link add "${PFX}a" type veth peer name "${PFX}b" || exit 1
	ip link set "${PFX}b" netns "${PFX}n"
	ip addr add 10.213.77.1/24 dev "${PFX}a"
	ip link set "${PFX}a" up
	ip -n "${PFX}n" addr add 10.213.77.2/24 dev "${PFX}b"
	ip -n "${PFX}n" link set "${PFX}b" up
	ip -n "${PFX}n" link set lo up
	HOST=10.213.77.2 WRAP="ip netns exec ${PFX}n" TRANSPORT=veth
fi
# One node at a time: two idle nodes would still share the cores' caches
# and the scheduler with the one measured.
run_one() { # name[@dir] flags round
	local port b=$B
	case $1 in *@*) b=${1#*@} && set -- "${1%%@*}" "$2" "$3" ;; esac
	rm -f "$T/$1.port"
	# shellcheck disable=SC2086
	$WRAP "$b/ethermemd" --listen "tcp://$HOST:0" --capacity 2G --port-file "$T/$1.port" \
		--secret-file "$T/secret" $2 2>"$T/$1.$3.log" &
	local pid=$!
	PIDS="$PIDS $pid"
	for _ in $(seq 500); do [ -s "$T/$1.port" ] && break; sleep 0.01; done
	port=$(cat "$T/$1.port")
	uptime > "$T/$1.$3.uptime"
	ETHERMEM_NODES="tcp://$HOST:$port" "$b/ethermem" bench loaded --json --quick \
		--node-pid "$pid" > "$T/$1.$3.json" || echo "loaded_ab.sh: $1 round $3: bench loaded failed" >&2
	ETHERMEM_NODES="tcp://$HOST:$port" "$b/ethermem" bench loaded --json --many "$MANY" \
		--time 3 --node-pid "$pid" >> "$T/$1.$3.json" ||
		echo "loaded_ab.sh: $1 round $3: --many failed" >&2
	kill "$pid"
	wait "$pid" 2>/dev/null
}
for r in $(seq "$ROUNDS"); do
	for c in "${CONFS[@]}"; do
		run_one "${c%%=*}" "${c#*=}" "$r"
	done
done
/usr/bin/python3 - "$T" "$ROUNDS" "$TRANSPORT" "${CONFS[@]}" <<'PY'
import json, statistics, sys
d, rounds, transport = sys.argv[1], int(sys.argv[2]), sys.argv[3]
confs = [(c.split("=", 1)[0].split("@")[0], c.split("=", 1)[1]) for c in sys.argv[4:]]
names = [n for n, _ in confs]
def rows(n, r):
    try:
        return [json.loads(l) for l in open(f"{d}/{n}.{r}.json") if l.startswith("{")]
    except OSError:
        return []
def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else float("nan")
data = {n: [rows(n, r) for r in range(1, rounds + 1)] for n in names}
loads = {n: [open(f"{d}/{n}.{r}.uptime").read().split("load average:")[1].strip()
             for r in range(1, rounds + 1)] for n in names}
print(f"transport {transport}, {rounds} rounds, configurations: "
      + "; ".join(f"{n} = '{f}'" for n, f in confs))
for n in names:
    print(f"  load average at the start of each round, {n}: " + " | ".join(loads[n]))
keys = [("probe_p50_us", "p50 us"), ("probe_p99_us", "p99 us"), ("probe_p999_us", "p999 us"),
        ("bulk_gbps", "bulk GB/s"), ("cpu_us_per_op", "CPU us/op"),
        ("client_cpu", "client cores"), ("node_cpu", "node cores")]
fmt = lambda k, v: f"{v:.3f}" if k in ("bulk_gbps", "client_cpu", "node_cpu") else (
    f"{v:.1f}" if k == "cpu_us_per_op" else f"{v:.0f}")
hdr = " / ".join(names)
print(f"\n| bulk | load | " + " | ".join(f"{k[1]} {hdr}" for k in keys)
      + " | bulk alone GB/s " + hdr + " |")
print("|---" * (3 + len(keys)) + "|")
goal = {n: {} for n in names}
for op in ("read", "write"):
    for ld in (0.0, 0.25, 0.5, 0.8, 1.0):
        cells = []
        for k, _ in keys:
            vals = []
            for n in names:
                vals.append(med(next((x.get(k) for x in rr if x.get("op") == "loaded" and
                                      x["bulk_op"] == op and abs(x["load"] - ld) < 1e-6), None)
                                for rr in data[n]))
            cells.append(" / ".join(fmt(k, v) for v in vals))
        alone = " / ".join(f"{med(next((x['bulk_alone_gbps'] for x in rr if x.get('op') == 'loaded' and x['bulk_op'] == op), None) for rr in data[n]):.3f}" for n in names)
        print(f"| {op} | {ld:.2f} | " + " | ".join(cells) + f" | {alone} |")
# the goals, per round, then their medians
print("\nGoals per configuration (median over rounds; per-round values in brackets):")
for op in ("read", "write"):
    for n in names:
        p99r, p999r, worst = [], [], []
        for rr in data[n]:
            lv = {round(x["load"], 2): x for x in rr if x.get("op") == "loaded" and x["bulk_op"] == op}
            if 0.0 not in lv or 0.8 not in lv:
                continue
            p99r.append(lv[0.8]["probe_p99_us"] / max(lv[0.0]["probe_p99_us"], 1e-9))
            p999r.append(lv[0.8]["probe_p999_us"] / max(lv[0.0]["probe_p999_us"], 1e-9))
            worst.append(min(lv[l]["bulk_ratio"] for l in (0.25, 0.5, 0.8) if l in lv))
        f = lambda v: f"{med(v):.2f} [{', '.join(f'{x:.2f}' for x in v)}]"
        print(f"  {op:5} {n:8} p99@80%/unloaded {f(p99r)} (<= 2)   p999 {f(p999r)} (<= 3)"
              f"   worst bulk delivered/offered 25-80% {f(worst)} (>= 0.95)")
print(f"\n| node | connections | node threads | RSS per connection KiB | ops | p50 ms | p99 ms | p999 ms | slowest / fastest connection ops/s | CPU us/op |")
print("|---" * 10 + "|")
for n in names:
    m = [x for rr in data[n] for x in rr if x.get("op") == "many"]
    if not m:
        continue
    g = lambda k: med([x[k] for x in m])
    print(f"| {n} | {m[0]['connections']} | {g('node_threads'):.0f} | {g('rss_per_conn_kib'):.1f} "
          f"| {g('ops'):.0f} | {g('p50_us') / 1e3:.1f} | {g('p99_us') / 1e3:.1f} | {g('p999_us') / 1e3:.1f} "
          f"| {g('min_conn_ops_s'):.1f} / {g('max_conn_ops_s'):.1f} | {med([x.get('cpu_us_per_op') for x in m]):.1f} |")
base = names[0]
print(f"\nRatios to '{base}' (median cells):")
for op in ("read",):
    for ld in (0.0, 0.8):
        for n in names[1:]:
            r = []
            for k, lab in keys:
                a = med(next((x[k] for x in rr if x.get("op") == "loaded" and x["bulk_op"] == op and abs(x["load"] - ld) < 1e-6), None) for rr in data[base])
                b = med(next((x[k] for x in rr if x.get("op") == "loaded" and x["bulk_op"] == op and abs(x["load"] - ld) < 1e-6), None) for rr in data[n])
                r.append(f"{lab} {b / a:.2f}x" if a else f"{lab} -")
            print(f"  {op} {ld:.2f} {n}/{base}: " + ", ".join(r))
# Per round, each configuration against the first of the same round (they
# ran back to back, so under about the same machine load).
def cell(rr, op, ld, k):
    return next((x.get(k) for x in rr if x.get("op") == "loaded" and x["bulk_op"] == op
                 and abs(x["load"] - ld) < 1e-6), None)
def many(rr, k):
    return next((x.get(k) for x in rr if x.get("op") == "many"), None)
def q(b, a):
    return f"{b / a:.2f}" if a and b is not None else "-"
print(f"\nPer round, ratio to '{base}' of the same round (load average at the start):")
for n in names[1:]:
    for r in range(rounds):
        a, b = data[base][r], data[n][r]
        parts = []
        for op in ("read", "write"):
            for ld in (0.0, 0.8):
                parts.append(f"{op} {ld:.1f}: p99 {q(cell(b, op, ld, 'probe_p99_us'), cell(a, op, ld, 'probe_p99_us'))}"
                             f" CPU/op {q(cell(b, op, ld, 'cpu_us_per_op'), cell(a, op, ld, 'cpu_us_per_op'))}")
        parts.append(f"many: ops {q(many(b, 'ops'), many(a, 'ops'))} CPU/op {q(many(b, 'cpu_us_per_op'), many(a, 'cpu_us_per_op'))}")
        print(f"  round {r + 1} {n}/{base} [{loads[base][r]} | {loads[n][r]}]: " + "; ".join(parts))
PY
