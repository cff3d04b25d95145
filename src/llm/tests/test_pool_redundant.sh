#!/bin/sh
# The pool backends on redundant regions, with a node killed during
# generation. For each of replicate:2 and ec:4+2 (the pool's default
# redundancy, ETHERMEM_REDUNDANCY, as the config's `redundancy` key would
# set it) and each of --weights pool (em_map with a cache a quarter of the
# model, so every token fetches) and --weights stream --stream-from pool:
# a checkpoint is imported into a region over seven fresh ethermemd on
# loopback, generation starts, and once --token-log shows the first tokens
# the engine is stopped (SIGSTOP), the node of the region's first copy or
# data cell is SIGKILLed, and the engine goes on. The ids
# must be the ones --weights local prints, tokens must have come after the
# kill, and the library must have logged the node as lost (so the dead
# node's part was needed, and served by the others).
# Exit 0 pass, 1 fail, 77 skip (no pool support built, not root).
B=${1:?usage: test_pool_redundant.sh BUILD_DIR}
LLM=$B/ethermem-llm
GEN=$B/ethermem-llm-gen
. "$(dirname "$0")/../../../tests/lib.sh"
need_llm_pool
need_root # the mapping backend needs userfaultfd
unset ETHERMEM_LLM_REGION ETHERMEM_MAP_CACHE ETHERMEM_LLM_MAP_UNIT ETHERMEM_LLM_QUEUES
run=0

"$GEN" --out "$T/m.bin" --size 16M --seed 5 2>"$T/gen.err" || { cat "$T/gen.err"; fail "generating the model"; }
# the stream is fast: more tokens keep its kill well inside the run
for n in 24 200; do
	eval "ref$n=\$(\"\$LLM\" --model \"\$T/m.bin\" --steps $n --print-ids --quiet --temperature 0 --weights local)" ||
		fail "local run"
done

for red in replicate:2 ec:4+2; do
	for w in "pool --local-mem 4M" "stream --stream-from pool --local-mem 6M"; do
		run=$((run + 1))
		STEPS=24
		case $w in stream*) STEPS=200 ;; esac
		eval "ref=\$ref$STEPS"
		# fresh nodes: the region's parts go to the nodes with the most
		# free memory, the first of equals first, so n${run}_0 holds the
		# first copy or data cell (the lost-node check below confirms it)
		NODES=""
		for i in 0 1 2 3 4 5 6; do
			start_node n${run}_$i 96M
			eval "NODES=\$NODES\${NODES:+,}tcp://127.0.0.1:\$PORT_n${run}_$i"
		done
		ETHERMEM_NODES=$NODES
		export ETHERMEM_NODES
		ETHERMEM_REDUNDANCY=$red "$B/ethermem" import "$T/m.bin" llm-red ||
			fail "importing into $red"
		"$B/ethermem" region ls --json > "$T/ls" 2>&1
		grep '"llm-red"' "$T/ls" | grep -q "\"redundancy\":\"$red\"" ||
			{ cat "$T/ls"; fail "the imported region is not $red"; }
		rm -f "$T/tok"
		# shellcheck disable=SC2086
		ETHERMEM_LLM_REGION=llm-red ETHERMEM_DEBUG=1 timeout 120 "$LLM" --model "$T/m.bin" \
			--steps $STEPS --print-ids --quiet --temperature 0 --weights $w \
			--token-log "$T/tok" > "$T/ids" 2> "$T/err" &
		llm=$!
		wait_for 60 "the first tokens ($red, $w)" \
			sh -c "[ \$(cat '$T/tok' 2>/dev/null | wc -l) -ge 2 ]"
		# held still while the node dies, so the kill lands mid-generation
		# however fast the tokens come
		kill -STOP $llm
		at_kill=$(wc -l < "$T/tok")
		eval "kill -9 \$PID_n${run}_0"
		kill -CONT $llm
		wait $llm || { tail -5 "$T/err"; fail "$red --weights $w: the engine failed after the kill"; }
		got=$(cat "$T/ids")
		[ "$got" = "$ref" ] || { echo "  local: $ref"; echo "  got:   $got"; fail "$red --weights $w: ids differ"; }
		[ "$at_kill" -lt $STEPS ] || fail "$red --weights $w: generation ended before the kill"
		grep -q "lost (" "$T/err" || { tail -5 "$T/err"; fail "$red --weights $w: the dead node was never needed"; }
		echo "ok: $red --weights $w: the local ids, first copy's node killed after token $at_kill of $STEPS"
		for i in 1 2 3 4 5 6; do eval "kill \$PID_n${run}_$i"; done
	done
done
