#!/bin/bash
# redundancy.sh - `ethermem bench --redundancy` on seven memory nodes on
# loopback: the same rows for none, replicate:2, replicate:3 and ec:4+2 in
# one run. Usage: bench/redundancy.sh BUILD_DIR [bench flags, e.g. --time 2]
set -u
B=${1:?usage: bench/redundancy.sh BUILD_DIR [ethermem bench flags]}
shift
T=$(mktemp -d /tmp/redbench.XXXXXX)
PIDS=""
trap 'kill $PIDS 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT
printf 'a cluster secret for the benchmark, 40 bytes\n' > "$T/secret"
chmod 600 "$T/secret"
export ETHERMEM_SECRET_FILE="$T/secret"
NODES=""
for i in 0 1 2 3 4 5 6; do
	"$B/ethermemd" --listen tcp://127.0.0.1:0 --capacity 512M --port-file "$T/$i.port" \
		2>"$T/$i.log" &
	PIDS="$PIDS $!"
	for _ in $(seq 500); do [ -s "$T/$i.port" ] && break; sleep 0.01; done
	NODES="$NODES${NODES:+,}tcp://127.0.0.1:$(cat "$T/$i.port")"
done
export ETHERMEM_NODES="$NODES"
"$B/ethermem" bench --redundancy none,replicate:2,replicate:3,ec:4+2 "$@"
