#!/bin/bash
# test_redundancy_stale.sh - a node that holds a copy (replicate:2) or a
# data cell (ec:4+2) is frozen while a write goes on; the write completes
# from the others, then the node is thawed. Its part still holds the old
# bytes: a client that opens the region afterwards must read the new ones,
# never the thawed node's. Then `ethermem repair` rebuilds the lost parts,
# the other holder is killed, and the bytes are read again.
set -u
. "$(dirname "$0")/lib.sh"
E="$B/ethermem"

red_nodes
# a short request timeout: the frozen nodes are found late quickly
export ETHERMEM_NODES="$NODES" ETHERMEM_AUTO_REPAIR=0 ETHERMEM_TIMEOUT_MS=300

"$E" region create rep 1M --redundancy replicate:2 >/dev/null || fail "create rep"
"$E" region create ec 1M --chunk 4K --redundancy ec:4+2 >/dev/null || fail "create ec"
head -c 1048576 /dev/urandom > "$T/a"
head -c 1048576 /dev/urandom > "$T/b"
for r in rep ec; do "$E" write $r 0 "$T/a" || fail "first write $r"; done

# n0: rep's first copy and an ec parity cell; n2: an ec data cell
kill -STOP "$PID_n0" "$PID_n2"
for r in rep ec; do "$E" write $r 0 "$T/b" || fail "write $r with n0 n2 frozen"; done
kill -CONT "$PID_n0" "$PID_n2"

# a new process: it must not take the thawed nodes' old bytes
for r in rep ec; do
	"$E" read $r 0 1M "$T/o" || fail "read $r after the thaw"
	cmp -s "$T/o" "$T/b" || fail "$r: old bytes read from the thawed node"
done

# the listing says what the layouts record, though every node answers
"$E" region ls --json > "$T/ls" || fail "ls after the thaw"
for r in rep ec; do
	grep -q "\"name\":\"$r\".*\"state\":\"degraded\"" "$T/ls" || fail "$r not degraded: $(cat "$T/ls")"
done

# rebuilt elsewhere, then the other holder goes: n1 holds rep's second
# copy and ec's other parity cell, n3 an ec data cell
for r in rep ec; do
	"$E" repair $r > "$T/rep" || fail "repair $r: $(cat "$T/rep")"
	grep -q "$r: [1-9] part(s) rebuilt" "$T/rep" || fail "repair $r said: $(cat "$T/rep")"
done
kill -9 "$PID_n1" "$PID_n3"
for r in rep ec; do
	"$E" read $r 0 1M "$T/o" || fail "read $r after the repair and the kills"
	cmp -s "$T/o" "$T/b" || fail "$r: wrong bytes after the repair and the kills"
done
exit 0
