#!/bin/bash
# encrypt.sh - what --encrypt costs: `ethermem bench` against a plain memory
# node and against one started with --encrypt (the client with --encrypt),
# both on loopback in the same run, taken in turns (plain, encrypted, plain,
# encrypted, ...) so drift on a shared machine hits both alike. Prints each
# run's 4 KiB read p50 and 2 MiB read/write bandwidth at queue depth 8, then
# the medians and their ratios (encrypted / plain).
# Usage: bench/encrypt.sh BUILD_DIR [ROUNDS [ethermem bench flags]]
set -u
B=${1:?usage: bench/encrypt.sh BUILD_DIR [ROUNDS [ethermem bench flags]]}
ROUNDS=${2:-3}
shift $(($# < 2 ? $# : 2))
[ $# -gt 0 ] || set -- --time 0.5
. "$(dirname "$0")/lib.sh"
bench_scratch encbench
start() { # name, extra flags
	"$B/ethermemd" --listen tcp://127.0.0.1:0 --capacity 1G --port-file "$T/$1.port" $2 \
		2>"$T/$1.log" &
	PIDS="$PIDS $!"
	for _ in $(seq 500); do [ -s "$T/$1.port" ] && break; sleep 0.01; done
}
start plain ""
start enc --encrypt
for i in $(seq "$ROUNDS"); do
	for m in plain enc; do
		flag=""
		[ $m = enc ] && flag=--encrypt
		ETHERMEM_NODES="tcp://127.0.0.1:$(cat "$T/$m.port")" \
			"$B/ethermem" bench --json $flag "$@" > "$T/$m.$i.json" || exit 1
	done
done
/usr/bin/python3 - "$T" "$ROUNDS" <<'PY'
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
def pick(path):
    rows = [json.loads(l) for l in open(path) if l.startswith("{")]
    def one(op, size, qd, key):
        return next(r[key] for r in rows
                    if r["op"] == op and r["size"] == size and r["qd"] == qd
                    and r.get("batch", 1) == 1)
    return {"read 4K p50 us": one("read", 4096, 1, "p50_us"),
            "read 2M qd8 GB/s": one("read", 2 << 20, 8, "gbps"),
            "write 2M qd8 GB/s": one("write", 2 << 20, 8, "gbps")}
runs = {m: [pick(f"{d}/{m}.{i}.json") for i in range(1, rounds + 1)] for m in ("plain", "enc")}
for i in range(rounds):
    print(f"round {i + 1}: plain {runs['plain'][i]}  encrypted {runs['enc'][i]}")
print(f"{'':20} {'plain':>9} {'encrypted':>9} {'ratio':>6}")
for k in runs["plain"][0]:
    p = statistics.median(r[k] for r in runs["plain"])
    e = statistics.median(r[k] for r in runs["enc"])
    print(f"{k:20} {p:9.2f} {e:9.2f} {e / p:6.2f}")
PY
