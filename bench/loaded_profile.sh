#!/bin/bash
# loaded_profile.sh - where a small read's time goes while bulk reads load
# the node: runs `ethermem bench loaded --reads-only` against one node on
# loopback and, during the 80% level, records a CPU profile of the node and
# of the benchmark process (perf record, call graphs), then the kernel
# scheduler's switches for the whole machine (perf sched record). Prints the
# top of each profile and, from the scheduler trace, how long the probe
# thread and the node's threads waited runnable for a core after a wakeup
# ("scheduling delay": the time the kernel's run queue, not our code, adds).
# Usage: bench/loaded_profile.sh BUILD_DIR [node flags...]
set -u
B=${1:?usage: bench/loaded_profile.sh BUILD_DIR [node flags...]}
shift
command -v perf >/dev/null || { echo "loaded_profile.sh: no perf" >&2 && exit 77; }
T=${PROFILE_OUT:-$(mktemp -d /tmp/loaded_prof.XXXXXX)}
mkdir -p "$T"
PIDS=""
trap 'for p in $PIDS; do kill $p 2>/dev/null; done; wait 2>/dev/null' EXIT
printf 'a cluster secret for the benchmark, 40 bytes\n' > "$T/secret"
chmod 600 "$T/secret"
export ETHERMEM_SECRET_FILE="$T/secret"
rm -f "$T/port"
"$B/ethermemd" --listen tcp://127.0.0.1:0 --capacity 1G --port-file "$T/port" "$@" \
	2>"$T/node.log" &
NP=$!
PIDS="$PIDS $NP"
for _ in $(seq 500); do [ -s "$T/port" ] && break; sleep 0.01; done
ETHERMEM_NODES="tcp://127.0.0.1:$(cat "$T/port")" "$B/ethermem" bench loaded --json \
	--reads-only --time 10 > "$T/bench.json" &
BP=$!
PIDS="$PIDS $BP"
# the 80% level starts when the 50% row is printed
for _ in $(seq 1200); do grep -q '"load":0.50' "$T/bench.json" 2>/dev/null && break; sleep 0.1; done
sleep 1
uptime > "$T/uptime"
ls /proc/$NP/task > "$T/node.tids"
perf record -q -e cpu-clock -F 2000 -g -p "$NP" -o "$T/node.data" -- sleep 4 2>/dev/null &
perf record -q -e cpu-clock -F 2000 -g -p "$BP" -o "$T/client.data" -- sleep 4 2>/dev/null &
wait %3 %4 2>/dev/null
perf sched record -q -o "$T/sched.data" -- sleep 2 >/dev/null 2>&1
wait "$BP"
echo "== rows (load average at the 80% level: $(cut -d, -f3- "$T/uptime"))"
cat "$T/bench.json"
for w in node client; do
	echo "== $w: where its CPU time goes (self time, top symbols)"
	perf report -i "$T/$w.data" -g none --no-children --sort sym --stdio 2>/dev/null |
		grep -E '^ +[0-9]' | head -20
	echo "== $w: the kernel's irq-enable samples (time spent with interrupts off, and"
	echo "   the switch back after a yield or a sleep) by caller"
	perf report -i "$T/$w.data" --no-children -S pvm_irq_enable,native_irq_enable \
		-g caller,3,callee,function,percent --stdio 2>/dev/null |
		grep -E -- '--[0-9.]+%--' | head -12
	echo "== $w: by thread"
	perf report -i "$T/$w.data" -g none --no-children --sort pid --stdio 2>/dev/null |
		grep -E '^ +[0-9]' | head -8
done
echo "== scheduling delay after wakeup, per thread (perf sched timehist, ms)"
perf sched timehist -i "$T/sched.data" 2>/dev/null |
	/usr/bin/python3 -c '
import sys, collections
probe, node = sys.argv[1], set(open(sys.argv[2]).read().split())
d = collections.defaultdict(list)
for l in sys.stdin:
    f = l.split()
    # time cpu task[tid/pid] wait sch-delay run
    if len(f) < 6 or "[" not in f[2]:
        continue
    try:
        tid = f[2].rsplit("[", 1)[1].split("/")[0].rstrip("]")
        delay = float(f[4])
    except (ValueError, IndexError):
        continue
    who = "probe thread" if tid == probe else ("node " + tid if tid in node else None)
    d[who or "others"].append(delay)
for k, v in sorted(d.items()):
    v.sort()
    q = lambda p: v[min(len(v) - 1, int(len(v) * p))]
    print(f"{k:16} switches {len(v):7}  sch delay p50 {q(.5):.3f}  p99 {q(.99):.3f}  p999 {q(.999):.3f}  max {v[-1]:.3f}")
' "$BP" "$T/node.tids"
echo "(data kept in $T)"
