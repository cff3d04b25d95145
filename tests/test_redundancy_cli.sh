#!/bin/bash
# test_redundancy_cli.sh - redundant regions from the shell: create with
# --redundancy, the listing's redundancy and state, bytes put with
# `ethermem write` and checked with `ethermem read` while nodes are killed,
# the pool default from the config file, `ethermem repair` onto a spare
# node, and the clear error when more nodes are gone than the redundancy
# survives.
set -u
. "$(dirname "$0")/lib.sh"
E="$B/ethermem"

red_nodes
export ETHERMEM_NODES="$NODES"
# each command would otherwise start rebuilding what it finds lost; this
# test watches the states and runs `ethermem repair` itself
export ETHERMEM_AUTO_REPAIR=0

"$E" region create bad 1M --redundancy replicate:1 2>"$T/err" && fail "replicate:1 accepted"
grep -q "bad redundancy" "$T/err" || fail "bad redundancy message: $(cat "$T/err")"
"$E" region create rep 1M --redundancy replicate:2 >/dev/null || fail "create replicate:2"
"$E" region create ec 1M --chunk 4K --redundancy ec:4+2 >/dev/null || fail "create ec:4+2"
printf 'redundancy = replicate:3\n' > "$T/client.conf"
ETHERMEM_CONFIG="$T/client.conf" "$E" region create dflt 64K >/dev/null || fail "create with default"
"$E" region ls --json > "$T/ls" || fail "ls --json"
grep -q '"name":"rep".*"redundancy":"replicate:2","state":"healthy"' "$T/ls" || fail "ls rep: $(cat "$T/ls")"
grep -q '"name":"ec".*"redundancy":"ec:4+2","state":"healthy"' "$T/ls" || fail "ls ec: $(cat "$T/ls")"
grep -q '"name":"dflt".*"redundancy":"replicate:3"' "$T/ls" || fail "config default: $(cat "$T/ls")"

head -c 300000 /dev/urandom > "$T/data"
for r in rep ec; do
	"$E" write $r 12345 "$T/data" || fail "write $r"
	"$E" read $r 12345 300000 "$T/out" || fail "read $r"
	cmp -s "$T/data" "$T/out" || fail "$r: bytes differ"
done

# a third region for the background repair below, made through a pool of
# n0 n1 n2 so that its copies are there: the two kills take two of them
ETHERMEM_NODES="tcp://127.0.0.1:$PORT_n0,tcp://127.0.0.1:$PORT_n1,tcp://127.0.0.1:$PORT_n2" \
	"$E" region create bg 1M --redundancy replicate:3 || fail "create bg"
"$E" write bg 4096 "$T/data" || fail "write bg"

# kill two nodes; a fresh client (which connects with nodes down) still reads
# every byte of ec:4+2, and of replicate:2 when one of its copies is left
kill -9 "$PID_n0" "$PID_n1"
wait "$PID_n0" "$PID_n1" 2>/dev/null
"$E" read ec 12345 300000 "$T/out" || fail "read ec after two kills"
cmp -s "$T/data" "$T/out" || fail "ec after two kills: bytes differ"
"$E" region ls --json > "$T/ls" || fail "ls after kills"
if "$E" read rep 12345 300000 "$T/out" 2>"$T/err"; then
	cmp -s "$T/data" "$T/out" || fail "rep: wrong bytes after kills"
else
	grep -Eq "rep.*(data lost|Host is down)" "$T/err" || fail "rep error names the region: $(cat "$T/err")"
fi
grep -q '"state":"degraded"' "$T/ls" || fail "degraded not shown: $(cat "$T/ls")"
"$E" status > "$T/status" || fail "status with nodes down"
grep -Eq '^  ec +ec:4\+2 +degraded$' "$T/status" || fail "status: ec not degraded: $(cat "$T/status")"
# repair rebuilds the lost parity on n6 and n7, under a new epoch
"$E" repair ec > "$T/rep" || fail "repair ec"
grep -q "ec: 2 part(s) rebuilt" "$T/rep" || fail "repair said: $(cat "$T/rep")"
"$E" region ls --json > "$T/ls" || fail "ls after repair"
grep -q '"name":"ec".*"state":"healthy","epoch":2' "$T/ls" || fail "after repair: $(cat "$T/ls")"
"$E" repair ec > "$T/rep" || fail "second repair"
grep -q "ec: 0 part(s) rebuilt" "$T/rep" || fail "nothing left to repair: $(cat "$T/rep")"
# the throttled background repair, as a program's own handle runs it: two
# copies of 1 MiB at 512 KiB/s take seconds, and another process's listing
# shows the region repairing meanwhile (the new parts are stored marked),
# with the progress the repairer publishes every half second
ETHERMEM_REPAIR_RATE=512K "$E" repair bg --background > "$T/bgrep" 2>"$T/bgerr" &
bgpid=$!
seen=""
prog=""
for _ in $(seq 200); do
	"$E" region ls --json > "$T/ls" || fail "ls during repair"
	line=$(grep '"name":"bg"' "$T/ls")
	case "$line" in
	*'"state":"repairing"'*) seen=1 ;;
	*) [ -n "$seen" ] && break ;; # over before a progress was seen
	esac
	p=$(printf '%s\n' "$line" | sed -n 's/.*"progress":\([0-9.]*\).*/\1/p')
	if [ -n "$p" ] && awk -v p="$p" 'BEGIN { exit !(p > 0 && p < 1) }'; then
		prog=$p
		"$E" status > "$T/status" || fail "status during repair"
		grep -Eq '^  bg +replicate:3 +(repairing [0-9]+% \([0-9]+ of 2097152 bytes rebuilt\)|healthy)$' \
			"$T/status" || fail "status: bg's progress not shown: $(cat "$T/status")"
		break
	fi
	sleep 0.05
done
[ -n "$seen" ] || fail "repairing not shown: $(cat "$T/ls")"
[ -n "$prog" ] || fail "no progress between 0 and 1 shown: $line"
wait $bgpid || fail "repair bg --background: $(cat "$T/bgrep" "$T/bgerr")"
grep -q "bg: healthy, layout epoch 2" "$T/bgrep" || fail "background repair said: $(cat "$T/bgrep")"
"$E" read bg 4096 300000 "$T/out" || fail "read bg after its repair"
cmp -s "$T/data" "$T/out" || fail "bg after repair: bytes differ"
"$E" region ls --json > "$T/ls" || fail "ls after bg repair"
grep -q '"name":"bg".*"state":"healthy","epoch":2' "$T/ls" || fail "bg after repair: $(cat "$T/ls")"
# two data nodes die: reading them needs both rebuilt parity cells
kill -9 "$PID_n2" "$PID_n3"
wait "$PID_n2" "$PID_n3" 2>/dev/null
"$E" read ec 12345 300000 "$T/out" || fail "read ec after repair and two more kills"
cmp -s "$T/data" "$T/out" || fail "ec after repair: bytes differ"
# a third of the current layout: more than ec:4+2 survives
kill -9 "$PID_n4"
wait "$PID_n4" 2>/dev/null
if "$E" read ec 0 1M "$T/out" 2>"$T/err"; then
	fail "ec read with three of its six nodes gone must fail"
fi
grep -q "ec.*data lost" "$T/err" || fail "lost message: $(cat "$T/err")"
exit 0
