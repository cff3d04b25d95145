#!/bin/bash
# test_run_redundant.sh - `ethermem run` of an unmodified program over a
# pool whose default redundancy (ETHERMEM_REDUNDANCY, as the config file's
# `redundancy` key sets it) is replicate:2, then ec:4+2: the program fills
# 24 MiB of heap under a 4 MiB local budget, so most of it lives on the
# nodes, then blocks on a pipe; the node of the first part is SIGKILLed
# while it waits; then it reads everything back, rewrites it, and prints
# digests that must equal a plain run's. The shim's stats line must show
# pool memory was written and fetched after the kill, and the library must
# have logged the lost node (ETHERMEM_DEBUG: it logs warnings only then).
# Exit 0 pass, 1 fail, 77 skip (not root: no userfaultfd; no python3).
set -u
. "$(dirname "$0")/../../../tests/lib.sh"
need_root
PY=/usr/bin/python3
[ -x $PY ] || skip "no /usr/bin/python3"

NODES=""
for i in 0 1 2 3 4 5 6; do
	start_node n$i 128M
	eval "NODES=\$NODES\${NODES:+,}tcp://127.0.0.1:\$PORT_n$i"
done
export ETHERMEM_NODES=$NODES

cat > "$T/prog.py" <<'PY'
import hashlib, sys
n = 24 << 20
a = bytearray(n)
for i in range(0, n, 4096):
    a[i:i + 8] = (i * 2654435761 % (1 << 64)).to_bytes(8, "little")
print("filled", hashlib.sha256(a).hexdigest(), flush=True)
sys.stdin.readline()  # the test kills a node here
h1 = hashlib.sha256(a).hexdigest()
for i in range(0, n, 8192):
    a[i + 100] = (a[i] + 1) % 256
print("after", h1, hashlib.sha256(a).hexdigest(), flush=True)
PY
echo | $PY "$T/prog.py" > "$T/plain.txt" || fail "plain run"

for red in replicate:2 ec:4+2; do
	mkfifo "$T/in.$red"
	ETHERMEM_REDUNDANCY=$red ETHERMEM_PRELOAD_STATS=1 ETHERMEM_DEBUG=1 timeout 120 \
		"$B/ethermem" run --local-mem 4M --threshold 1M -- $PY "$T/prog.py" \
		< "$T/in.$red" > "$T/pool.$red" 2> "$T/err.$red" &
	prog=$!
	exec 3> "$T/in.$red"
	wait_for 60 "the program to fill its heap ($red)" grep -q filled "$T/pool.$red"
	# the node with the most bytes written to it holds parts of the heap
	victim="" best=0
	for i in 0 1 2 3 4 5 6; do
		eval "pid=\$PID_n$i port=\$PORT_n$i"
		[ -n "$pid" ] || continue
		w=$(ETHERMEM_NODES=tcp://127.0.0.1:$port "$B/ethermem" status --json 2>/dev/null |
			grep -o '"bytes_in":[0-9]*' | grep -o '[0-9]*$')
		[ -n "$w" ] && [ "$w" -gt "$best" ] && { victim=$i; best=$w; }
	done
	[ -n "$victim" ] && [ "$best" -gt $((4 << 20)) ] || fail "$red: no node received the heap"
	eval "kill -9 \$PID_n$victim"
	eval "PID_n$victim="
	echo go >&3
	exec 3>&-
	wait $prog || { cat "$T/err.$red"; fail "$red: the program failed under ethermem run after a node was killed"; }
	cmp -s "$T/plain.txt" "$T/pool.$red" || { cat "$T/err.$red"; diff "$T/plain.txt" "$T/pool.$red"; fail "$red: output differs from a plain run"; }
	grep -q "lost (" "$T/err.$red" || { cat "$T/err.$red"; fail "$red: no lost node was noticed"; }
	grep -q "fetched [1-9]" "$T/err.$red" || { cat "$T/err.$red"; fail "$red: the pool was not used"; }
	echo "ok: $red: same output with node $victim killed mid-run"
	grep preload "$T/err.$red"
done
