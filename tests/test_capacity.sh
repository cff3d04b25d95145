#!/bin/sh
# test_capacity.sh - a node refuses a capacity the machine or its cgroup
# cannot back, names the figures, and starts with --overcommit; --mlock
# beyond the room fails cleanly instead of being killed. The cgroup parts
# run the node in a cgroup of its own with a 256 MiB limit.
. "$(dirname "$0")/lib.sh"

avail_g=$(awk '/^MemAvailable:/ { print int($2 / 1048576) }' /proc/meminfo)
big=$((avail_g + 4))G

# starts the node; echoes its exit status if it exited within a few seconds
# (else it is listening, and is killed)
try() {
	rm -f "$T/p"
	"$@" --listen tcp://127.0.0.1:0 --secret-file "$T/secret" --port-file "$T/p" \
		>"$T/out" 2>&1 &
	pid=$!
	for _ in $(seq 300); do
		[ -s "$T/p" ] && { kill $pid; wait $pid 2>/dev/null; echo listening; return; }
		kill -0 $pid 2>/dev/null || break
		sleep 0.01
	done
	wait $pid
	echo "exit $?"
}

r=$(try "$B/ethermemd" --capacity "$big")
[ "$r" = "exit 1" ] || fail "capacity $big beyond MemAvailable: $r"
grep -q "MemAvailable" "$T/out" || fail "no figures: $(cat "$T/out")"
grep -q -- "--overcommit" "$T/out" || fail "no hint: $(cat "$T/out")"
r=$(try "$B/ethermemd" --capacity "$big" --overcommit)
[ "$r" = listening ] || fail "--overcommit: $r $(cat "$T/out")"
r=$(try "$B/ethermemd" --capacity 64M)
[ "$r" = listening ] || fail "64M: $r $(cat "$T/out")"

# the same under a cgroup limit, v1 or v2, where this machine has one
CG=""
if [ -w /sys/fs/cgroup/memory ]; then
	CG=/sys/fs/cgroup/memory/hdcap$$
	mkdir "$CG" && echo $((256 << 20)) > "$CG/memory.limit_in_bytes" || CG=""
elif grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null &&
     grep -qw memory /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null; then
	CG=/sys/fs/cgroup/hdcap$$
	mkdir "$CG" && echo $((256 << 20)) > "$CG/memory.max" || CG=""
fi
if [ -z "$CG" ]; then
	echo "no memory cgroup to try here: the cgroup part skipped"
	exit 0
fi
trap 'cleanup; rmdir "$CG" 2>/dev/null' EXIT
incg() { exec sh -c 'echo $$ > "$0/cgroup.procs" && shift && exec "$@"' "$CG" x "$@"; }
# shellcheck disable=SC2016
r=$(try incg "$B/ethermemd" --capacity 1G)
[ "$r" = "exit 1" ] || fail "1G in a 256M cgroup: $r"
grep -q "cgroup $CG" "$T/out" || fail "cgroup not named: $(cat "$T/out")"
r=$(try incg "$B/ethermemd" --capacity 1G --overcommit --mlock)
[ "$r" = "exit 1" ] || fail "--mlock 1G in a 256M cgroup: $r $(cat "$T/out")"
r=$(try incg "$B/ethermemd" --capacity 128M)
[ "$r" = listening ] || fail "128M in a 256M cgroup: $r $(cat "$T/out")"
echo ok
