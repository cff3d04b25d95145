#!/bin/bash
# demo.sh - builds ethermem, starts a small pool of two memory nodes on
# loopback, runs a workload through the library and the CLI, and says what
# happened. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
echo "== building"
make -s >/dev/null
T=$(mktemp -d /tmp/ethermem-demo.XXXXXX)
PIDS=""
trap 'for p in $PIDS; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf "$T"' EXIT INT TERM
head -c 32 /dev/urandom | base64 > "$T/secret"
chmod 600 "$T/secret"
for n in 1 2; do
	build/ethermemd --listen tcp://127.0.0.1:0 --port-file "$T/port$n" --capacity 192M \
		--secret-file "$T/secret" 2>"$T/node$n.log" &
	PIDS="$PIDS $!"
done
for n in 1 2; do
	for _ in $(seq 300); do [ -s "$T/port$n" ] && break; sleep 0.01; done
done
export ETHERMEM_NODES="tcp://127.0.0.1:$(cat "$T/port1"),tcp://127.0.0.1:$(cat "$T/port2")"
export ETHERMEM_SECRET_FILE="$T/secret"
echo "== two memory nodes of 192 MiB each: $ETHERMEM_NODES"
echo
echo "== a 256 MiB region (bigger than either node), written, read back, and counted on"
build/ethermem-example 256
echo
echo "== the pool as 'ethermem status' sees it"
build/ethermem status
echo
echo "== latency and bandwidth against the plain TCP path (quick run)"
build/ethermem bench --quick --baseline | tail -4
if [ -x bench/llm/demo.sh ]; then
	echo
	echo "== LLM inference with weights larger than local memory: disk vs pool"
	bench/llm/demo.sh
fi
echo
echo "== what the nodes logged"
cat "$T"/node*.log
