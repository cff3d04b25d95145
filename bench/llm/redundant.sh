#!/bin/sh
# redundant.sh - the LLM engine's pool backends on redundant regions, with
# one node SIGKILLed half way through generation, beside `none` (no kill):
# the ids against --weights local, and tokens/s before and after the kill.
#
#   bench/llm/redundant.sh BUILD_DIR [SIZE [STEPS]]     (default 64M 48)
#
# A seeded synthetic checkpoint of SIZE (ethermem-llm-gen --size, outside
# the repository) is imported into a region of each redundancy over seven
# fresh ethermemd on loopback; each backend (pool-map: --weights pool with
# a cache a quarter of the model; pool-stream: --weights stream
# --stream-from pool with a budget a quarter of the model) generates STEPS
# tokens greedily with --token-log; when half the tokens are out the node
# of the region's first copy or data cell is SIGKILLed (the parts go to
# the nodes with the most free memory, the first of equals first: the
# first node). tok/s before = tokens before the kill over their time;
# after = tokens after it (the first one's stall included) over theirs.
# Output: one line per run, then a Markdown table.
set -u
B=${1:?usage: bench/llm/redundant.sh BUILD_DIR [SIZE [STEPS]]}
SIZE=${2:-64M}
STEPS=${3:-48}
. "$(dirname "$0")/../lib.sh"
bench_scratch llmred
unset ETHERMEM_LLM_REGION ETHERMEM_MAP_CACHE ETHERMEM_LLM_MAP_UNIT ETHERMEM_LLM_QUEUES

"$B/ethermem-llm-gen" --out "$T/m.bin" --size "$SIZE" --seed 5 2>/dev/null || { echo "gen failed"; exit 1; }
MB=$(( $(stat -c %s "$T/m.bin") / 1048576 ))
Q=$(( MB / 4 + 1 ))M
ref=$("$B/ethermem-llm" --model "$T/m.bin" --steps "$STEPS" --print-ids --quiet --temperature 0 --weights local)
echo "model $(stat -c %s "$T/m.bin") bytes, $STEPS steps, local budget $Q, $(date -u '+%F %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| redundancy | backend | tok/s before | tok/s after | after / before | longest token after the kill (ms) | ids |" > "$T/table"
echo "|---|---|--:|--:|--:|--:|---|" >> "$T/table"
run=0
for red in none replicate:2 ec:4+2; do
	for be in pool-map pool-stream; do
		run=$((run + 1))
		NODES="" NP=""
		for i in 0 1 2 3 4 5 6; do
			"$B/ethermemd" --listen tcp://127.0.0.1:0 --capacity $((MB * 2 + 64))M \
				--port-file "$T/$run.$i.port" 2>/dev/null &
			PIDS="$PIDS $!"
			NP="$NP $!"
			for _ in $(seq 500); do [ -s "$T/$run.$i.port" ] && break; sleep 0.01; done
			NODES="$NODES${NODES:+,}tcp://127.0.0.1:$(cat "$T/$run.$i.port")"
		done
		export ETHERMEM_NODES="$NODES"
		victim=$(echo $NP | cut -d' ' -f1)
		ETHERMEM_REDUNDANCY=$red "$B/ethermem" import "$T/m.bin" llm-red >/dev/null || { echo "import failed"; exit 1; }
		case $be in
		pool-map) args="--weights pool --local-mem $Q" ;;
		pool-stream) args="--weights stream --stream-from pool --local-mem $Q" ;;
		esac
		rm -f "$T/tok"
		# shellcheck disable=SC2086
		ETHERMEM_LLM_REGION=llm-red "$B/ethermem-llm" --model "$T/m.bin" --steps "$STEPS" \
			--print-ids --quiet --temperature 0 $args --token-log "$T/tok" > "$T/ids" 2> "$T/err" &
		llm=$!
		half=$((STEPS / 2))
		if [ $red != none ]; then
			until [ "$(cat "$T/tok" 2>/dev/null | wc -l)" -ge $half ] || ! kill -0 $llm 2>/dev/null; do sleep 0.005; done
			kill -9 "$victim"
			at=$(wc -l < "$T/tok")
		else
			at=$half
		fi
		wait $llm
		rc=$?
		ids=differ
		[ $rc = 0 ] && [ "$(cat "$T/ids")" = "$ref" ] && ids=same
		# tokens [0, at) before, [at, STEPS) after; each line: index, ms since start
		line=$(awk -v at="$at" -v n="$STEPS" '
			{ t[$1] = $2 }
			END {
				b = (at - 1) / (t[at - 1] - t[0]) * 1000
				a = (n - at) / (t[n - 1] - t[at - 1]) * 1000
				m = 0
				for (i = at; i < n; i++) if (t[i] - t[i - 1] > m) m = t[i] - t[i - 1]
				printf "%.2f %.2f %.2f %.1f", b, a, a / b, m
			}' "$T/tok")
		set -- $line
		echo "$red $be: exit $rc, ids $ids, killed after token $at, tok/s before $1 after $2 (x$3), longest token after $4 ms"
		echo "| $red | $be | $1 | $2 | $3 | $4 | $ids |" >> "$T/table"
		kill $NP 2>/dev/null
		wait $NP 2>/dev/null
	done
done
cat "$T/table"
