#!/bin/bash
# test_redundancy_netcut.sh - redundant regions whose nodes are cut off or
# frozen rather than killed. Eight nodes, each in its own network namespace
# on a bridge; the client in the root namespace. A node's link is set down
# (its process lives on, unreachable), then another node is frozen
# (SIGSTOP), then a third node's veth is deleted: every read and write in
# between succeeds with the right bytes, repair rebuilds what the cut node
# held, and the rebuilt parts serve once the other holders are gone too.
set -u
. "$(dirname "$0")/lib.sh"
E="$B/ethermem"
need_root
need_cmd ip

# names and subnet differ from run to run (a deleted namespace's veths can
# outlive the run that made them)
S=$(($$ % 200 + 20))
PFX=red$S NET=10.233.$S
netns_bridge "$PFX" "$NET"
# n6 and n7 have the least memory, so placement leaves them free: rep lands
# on n0 n1; ec on n2..n5 (data) and n0 n1 (parity)
netns_nodes "$PFX" "$NET" 0 5 64M
netns_nodes "$PFX" "$NET" 6 7 32M
NODES=""
for k in 0 1 2 3 4 5 6 7; do
	NODES="$NODES${NODES:+,}tcp://$NET.$k:7000"
done
export ETHERMEM_NODES="$NODES"
export ETHERMEM_AUTO_REPAIR=0
# a request to a node that does not answer fails over after this long
export ETHERMEM_TIMEOUT_MS=500
at_exit "kill -CONT $PID_n1 2>/dev/null"

"$E" region create rep 1M --redundancy replicate:2 >/dev/null || fail "create rep"
"$E" region create ec 1M --chunk 4K --redundancy ec:4+2 >/dev/null || fail "create ec"
head -c 1048576 /dev/urandom > "$T/ref"
for r in rep ec; do
	cp "$T/ref" "$T/ref.$r"
	"$E" write $r 0 "$T/ref" || fail "write $r"
done

# put LEN random bytes at OFF into region R and its reference copy
put() {
	head -c "$3" /dev/urandom > "$T/piece"
	"$E" write "$1" "$2" "$T/piece" || fail "write $1 at $2 ($4)"
	dd if="$T/piece" of="$T/ref.$1" bs=64K seek="$2" oflag=seek_bytes conv=notrunc \
		status=none
}
# every byte of region R as its reference says
check() {
	"$E" read "$1" 0 1M "$T/out" || fail "read $1 ($2)"
	cmp -s "$T/ref.$1" "$T/out" || fail "$1: wrong bytes ($2)"
}

# 1. n0's link goes down: it holds a copy of rep and a parity cell of ec
ip link set "${PFX}v0" down
for r in rep ec; do
	put $r 70000 200000 "n0 cut off"
	check $r "n0 cut off, after a write"
done
"$E" repair rep > "$T/said" || fail "repair rep: $(cat "$T/said")"
grep -q "rep: 1 part(s) rebuilt" "$T/said" || fail "repair rep said: $(cat "$T/said")"
"$E" repair ec > "$T/said" || fail "repair ec: $(cat "$T/said")"
grep -q "ec: 1 part(s) rebuilt" "$T/said" || fail "repair ec said: $(cat "$T/said")"

# 2. n1 freezes: it holds rep's other original copy, so rep is served by
# the rebuilt copy alone; ec loses its other parity cell
kill -STOP "$PID_n1"
for r in rep ec; do
	put $r 500000 300000 "n1 frozen"
	check $r "n1 frozen, after a write"
done

# 3. n2's veth is deleted: ec's data cells of n2 are rebuilt from n3..n5
# and the parity cell that the repair rebuilt (n1's is frozen)
ip link del "${PFX}v2"
put ec 4000 9000 "n2 gone"
check ec "n2 gone, after a write"
"$E" region ls --json > "$T/ls" || fail "ls"
grep -q '"name":"ec".*"state":"degraded","epoch":[1-9]' "$T/ls" || fail "ls: $(cat "$T/ls")"
exit 0
