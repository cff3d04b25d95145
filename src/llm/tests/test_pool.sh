#!/bin/sh
# The pool backend computes what local memory computes: a small dense and a
# small MoE checkpoint are imported into named regions of a real ethermemd on
# loopback, then --weights stream --stream-from pool (whole-model and tight
# budgets) and --weights pool (em_map; whole-model and tight caches, two fetch
# units) must print the ids --weights local prints; streaming also over one
# to four connections at once.  Also: a missing region and a region holding
# other bytes than the file are refused, not used.
# Exit 0 pass, 1 fail, 77 skip (no pool support built).
B=${1:?usage: test_pool.sh BUILD_DIR}
LLM=$B/ethermem-llm
GEN=$B/ethermem-llm-gen
. "$(dirname "$0")/../../../tests/lib.sh"
need_llm_pool
fail=0

start_node node 256M
NODE=$PID_node
ETHERMEM_NODES=tcp://127.0.0.1:$PORT_node
export ETHERMEM_NODES
unset ETHERMEM_LLM_REGION ETHERMEM_MAP_CACHE ETHERMEM_LLM_MAP_UNIT

gen() {
	out=$1; shift
	"$GEN" --out "$T/$out" "$@" 2>"$T/gen.err" || { cat "$T/gen.err"; echo "FAIL: generating $out"; exit 1; }
	# The default region name: llm-<file name>.
	"$B/ethermem" import "$T/$out" "llm-$out" || { echo "FAIL: importing $out"; exit 1; }
}

# same MODEL TIGHT_STREAM TIGHT_CACHE [engine flags...]
same() {
	m=$1; tight=$2; cache=$3; shift 3
	ref=$("$LLM" --model "$T/$m" --steps 40 --print-ids --quiet --weights local "$@") || {
		echo "FAIL: $m local $*"; fail=1; return; }
	for v in "stream --stream-from pool" "stream --stream-from pool --local-mem $tight" \
		 "stream --stream-from pool --local-mem $tight --stream-chunk 7K" \
		 "stream --stream-from pool --local-mem $tight #3" \
		 "pool" "pool @$cache@64K" "pool @$cache@1M" "pool --local-mem $cache" \
		 "pool --threads 2 @$cache@64K"; do
		# "#N": N queues (connections) for streaming; "@CACHE@UNIT" for
		# the mapping.
		args=${v%%@*}
		args=${args%%#*}
		c=; u=; nq=
		case $v in *@*) c=${v#*@}; u=${c#*@}; c=${c%@*};; esac
		case $v in *#*) nq=${v#*#};; esac
		# shellcheck disable=SC2086
		got=$(ETHERMEM_MAP_CACHE=$c ETHERMEM_LLM_MAP_UNIT=$u ETHERMEM_LLM_QUEUES=$nq timeout 120 \
			"$LLM" --model "$T/$m" --steps 40 --print-ids --quiet --weights $args "$@" \
			2>"$T/err") || {
			cat "$T/err"; echo "FAIL: $m --weights $v $* exited non-zero"; fail=1; continue; }
		if [ "$got" != "$ref" ]; then
			echo "FAIL: $m --weights $v $*: ids differ from local"
			echo "  local: $ref"
			echo "  got:   $got"
			fail=1
		fi
	done
	echo "ok: $m $* -> $(echo "$ref" | cut -d' ' -f1-8) ..."
}

gen dense.bin --dim 128 --hidden 344 --layers 4 --heads 8 --kv-heads 4 --vocab 1000 --seq 64 --seed 3
gen moe.bin --dim 128 --hidden 256 --layers 3 --heads 8 --kv-heads 2 --vocab 700 --seq 64 --experts 8 --topk 2 --seed 4

same dense.bin 600K 2M --temperature 0
same dense.bin 600K 2M --temperature 0.9 --seed 11
same moe.bin 1300K 4M --temperature 0 --router zipf --router-seed 9
same moe.bin 1300K 4M --temperature 0 --router uniform --router-seed 9

# Units of several MiB, so that reads are cut into one piece per connection.
gen big.bin --size 48M --seed 8
ref=$("$LLM" --model "$T/big.bin" --steps 6 --print-ids --quiet --temperature 0)
for nq in 1 2 3 4; do
	got=$(ETHERMEM_LLM_QUEUES=$nq "$LLM" --model "$T/big.bin" --steps 6 --print-ids --quiet \
		--temperature 0 --weights stream --stream-from pool --local-mem 20M) && [ "$got" = "$ref" ] || {
		echo "FAIL: big.bin streamed over $nq connections"; fail=1; }
done
echo "ok: big.bin over 1-4 connections"

# ETHERMEM_LLM_REGION names the region explicitly.
ref=$("$LLM" --model "$T/dense.bin" --steps 16 --print-ids --quiet --temperature 0)
cp "$T/dense.bin" "$T/copy.bin"
got=$(ETHERMEM_LLM_REGION=llm-dense.bin "$LLM" --model "$T/copy.bin" --steps 16 --print-ids \
	--quiet --temperature 0 --weights stream --stream-from pool) && [ "$got" = "$ref" ] || {
	echo "FAIL: ETHERMEM_LLM_REGION"; fail=1; }

# No such region: exit non-zero and say how to load one.
if "$LLM" --model "$T/copy.bin" --steps 4 --print-ids --quiet --weights pool 2>"$T/err" >/dev/null; then
	echo "FAIL: a missing region was accepted"; fail=1
fi
grep -q "ethermem import" "$T/err" || { cat "$T/err"; echo "FAIL: no hint for a missing region"; fail=1; }

# A region of the right size holding another checkpoint: refused.
"$GEN" --out "$T/other.bin" --dim 128 --hidden 344 --layers 4 --heads 8 --kv-heads 4 --vocab 1000 \
	--seq 64 --seed 99 2>/dev/null || { echo "FAIL: generating other.bin"; exit 1; }
for w in pool "stream --stream-from pool"; do
	# shellcheck disable=SC2086
	if ETHERMEM_LLM_REGION=llm-dense.bin "$LLM" --model "$T/other.bin" --steps 4 --quiet \
		--weights $w 2>"$T/err" >/dev/null; then
		echo "FAIL: --weights $w used a region holding another checkpoint"; fail=1
	fi
	grep -q "differs" "$T/err" || { cat "$T/err"; echo "FAIL: no reason for a stale region"; fail=1; }
done

kill -0 "$NODE" 2>/dev/null || { cat "$T/node.log"; echo "FAIL: ethermemd died"; fail=1; }
[ $fail = 0 ] && echo PASS
exit $fail
