#!/bin/bash
# redis.sh KEYS REQUESTS - the Redis case of the corpus: a redis-server
# (Debian's, jemalloc) loaded with KEYS values of 4 KiB (keys
# key:000000000000 on, contents fixed), then redis-benchmark GET and SET of
# 4 KiB values on random keys of that set, REQUESTS each.
#
# Only the server runs the way run.sh runs this script (plain, under
# `ethermem run`, in the cgroup): the clients are started without the
# shim's LD_PRELOAD, since what is measured is the server's memory. Prints
# DBSIZE and DEBUG DIGEST after the load on stdout (what run.sh compares);
# "metric get_rps N" and "metric set_rps N" on stderr. Exit 0, or 1 with a
# reason.
set -u
N=${1:?keys} REQ=${2:?requests}
PRE=${LD_PRELOAD-}
unset LD_PRELOAD
D=$(mktemp -d /tmp/ethermem-redis.XXXXXX) || exit 1
P=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fail() {
	echo "redis.sh: $*" >&2
	tail -5 "$D/log" >&2
	exit 1
}
# the server's stderr is ours: the shim prints its statistics there
LD_PRELOAD=$PRE redis-server --port "$P" --bind 127.0.0.1 --save "" --appendonly no --dir "$D" \
	--enable-debug-command yes --logfile "$D/log" &
R=$!
trap 'kill $R 2>/dev/null; wait; rm -rf "$D"' EXIT
for _ in $(seq 300); do redis-cli -p "$P" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis-cli -p "$P" ping 2>/dev/null | grep -q PONG || fail "redis-server did not answer"

# SET commands in the protocol, for --pipe: each value its key's number
# and a fixed filler, 4096 bytes
awk -v n="$N" 'BEGIN {
	f = ""
	for (i = 0; i < 4084; i++) f = f sprintf("%c", 97 + (i * 7) % 26)
	for (i = 0; i < n; i++) {
		k = sprintf("key:%012d", i)
		printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$4096\r\n%012d%s\r\n", length(k), k, i, f
	}
}' | redis-cli -p "$P" --pipe > "$D/pipe" 2>&1 || fail "loading: $(tail -2 "$D/pipe")"
redis-cli -p "$P" DBSIZE
redis-cli -p "$P" DEBUG DIGEST
for t in get set; do
	rps=$(redis-benchmark -p "$P" -t "$t" -n "$REQ" -r "$N" -d 4096 --csv 2>/dev/null |
		awk -F'"' -v t="$t" 'toupper(t) == $2 { print $4 }')
	[ -n "$rps" ] || fail "redis-benchmark $t gave no figure"
	echo "metric ${t}_rps $rps" >&2
done
redis-cli -p "$P" SHUTDOWN NOSAVE > /dev/null 2>&1
wait $R || fail "redis-server exited badly"
