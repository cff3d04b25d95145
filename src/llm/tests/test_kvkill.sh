#!/bin/sh
# Runs test_llm_kvkill: a store node killed while the engine fetches a
# prompt prefix from it, on stories260K (or, without it, a generated model
# with grouped-query attention), against a real ethermemd on loopback.
# Exit 0 pass, 1 fail, 77 skip.
B=${1:?usage: test_kvkill.sh BUILD_DIR STORIES_MODEL}
M=${2:?usage: test_kvkill.sh BUILD_DIR STORIES_MODEL}
for x in "$B/test_llm_kvkill" "$B/ethermem-llm-gen" "$B/ethermemd"; do
	[ -x "$x" ] || { echo "SKIP: $x not built"; exit 77; }
done
. "$(dirname "$0")/../../../tests/lib.sh"
if [ ! -r "$M" ]; then
	M=$T/gqa.bin
	"$B/ethermem-llm-gen" --out "$M" --dim 128 --hidden 344 --layers 4 --heads 8 --kv-heads 2 \
		--vocab 1000 --seq 320 --seed 5 2>/dev/null || { echo "FAIL: generating a model"; exit 1; }
fi
start_node K 64M
# A dead peer answers at once (the connection is reset); the timeout only
# bounds a run that would otherwise wait on a node that is gone.
ETHERMEM_NODES=tcp://127.0.0.1:$PORT_K ETHERMEM_TIMEOUT_MS=2000 timeout 120 \
	"$B/test_llm_kvkill" "$M" "$PID_K"
