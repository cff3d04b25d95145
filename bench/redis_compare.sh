#!/bin/bash
# redis_compare.sh - ethermem's 4 KiB read against what people use as a
# "remote memory" in software today: Redis GET/SET of 4 KiB values, on the
# same loopback, in the same run. Prints both p50s and the ratio.
#
#   bench/redis_compare.sh            (after `make`; needs redis-server and
#                                      redis-tools, which scripts/deps.sh installs)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${EM_BUILD_DIR:-build}
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || {
	echo "redis_compare: redis-server and redis-benchmark are needed (scripts/deps.sh)" >&2
	exit 1
}
T=$(mktemp -d /tmp/em-redis.XXXXXX)
PIDS=""
trap 'for p in $PIDS; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf "$T"' EXIT INT TERM
N=${N:-20000}

head -c 32 /dev/urandom | base64 > "$T/secret"
chmod 600 "$T/secret"
"$B/ethermemd" --listen tcp://127.0.0.1:0 --port-file "$T/port" --capacity 256M \
	--secret-file "$T/secret" 2>"$T/node.log" &
PIDS="$PIDS $!"
for _ in $(seq 300); do [ -s "$T/port" ] && break; sleep 0.01; done

# a free port for Redis: let the kernel pick one, then hand it over
RPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no \
	--daemonize no --logfile "$T/redis.log" &
PIDS="$PIDS $!"
for _ in $(seq 300); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.01; done

# The two run alternately, three rounds each, so drift in the machine's load
# hits both; each figure is the median of its three rounds.
for round in 1 2 3; do
	ETHERMEM_NODES="tcp://127.0.0.1:$(cat "$T/port")" ETHERMEM_SECRET_FILE="$T/secret" \
		"$B/ethermem" bench --json --quick |
		grep '"op":"read","size":4096,"qd":1,' |
		sed 's/.*"p50_us":\([0-9.]*\).*/\1/' >> "$T/em"
	redis-benchmark -p "$RPORT" -t get,set -d 4096 -n "$N" -c 1 -P 1 --csv > "$T/redis.csv"
	grep '^"GET"' "$T/redis.csv" | awk -F'","' '{print $5 * 1000}' >> "$T/get"
	grep '^"SET"' "$T/redis.csv" | awk -F'","' '{print $5 * 1000}' >> "$T/set"
done
med() { sort -g "$1" | sed -n 2p; }
EM=$(med "$T/em"); GET=$(med "$T/get"); SET=$(med "$T/set")
echo "{\"op\":\"redis-get\",\"size\":4096,\"qd\":1,\"p50_us\":$GET}"
echo "{\"op\":\"redis-set\",\"size\":4096,\"qd\":1,\"p50_us\":$SET}"
echo "{\"op\":\"read\",\"size\":4096,\"qd\":1,\"transport\":\"tcp\",\"p50_us\":$EM}"
awk -v g="$GET" -v e="$EM" 'BEGIN { printf "Redis GET 4 KiB p50 %.1f us, ethermem read 4 KiB p50 %.1f us: ethermem %.2fx lower (goal >= 2x)\n", g, e, g / e }'
