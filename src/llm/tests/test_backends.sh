#!/bin/sh
# Every weight source must produce the same token ids: the benchmark compares
# backends on speed only because they compute the same thing.  Generates a
# small dense (v0, unshared classifier too) and a small MoE model into a
# temporary directory, runs local as the reference and mmap and stream
# (whole-model and tight budgets, one and two reader threads) against it,
# greedy and sampled, MoE with every router.  Exit 0 pass, 1 fail, 77 skip.
B=${1:?usage: test_backends.sh BUILD_DIR}
LLM=$B/ethermem-llm
GEN=$B/ethermem-llm-gen
[ -x "$LLM" ] && [ -x "$GEN" ] || { echo "SKIP: $LLM or $GEN not built"; exit 77; }
. "$(dirname "$0")/../../../tests/lib.sh"
fail=0

gen() {
	out=$1; shift
	"$GEN" --out "$T/$out" "$@" 2>"$T/gen.err" || { cat "$T/gen.err"; echo "FAIL: generating $out"; exit 1; }
}

# same MODEL TIGHT_BUDGET [engine flags...]
same() {
	m=$1; tight=$2; shift 2
	ref=$("$LLM" --model "$T/$m" --steps 48 --print-ids --quiet --weights local "$@") || {
		echo "FAIL: $m local $*"; fail=1; return; }
	[ -n "$ref" ] || { echo "FAIL: $m local printed no ids"; fail=1; return; }
	for v in "mmap" "stream" "stream --local-mem $tight" \
		 "stream --local-mem $tight --fetch-threads 1" \
		 "stream --local-mem $tight --stream-chunk 7K" "local --threads 2"; do
		# shellcheck disable=SC2086
		got=$("$LLM" --model "$T/$m" --steps 48 --print-ids --quiet --weights $v "$@") || {
			echo "FAIL: $m --weights $v $* exited non-zero"; fail=1; continue; }
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
gen dense-cls.bin --dim 96 --hidden 256 --layers 3 --heads 4 --kv-heads 2 --vocab 600 --seq 64 --unshared-cls --seed 5
gen moe.bin --dim 128 --hidden 256 --layers 3 --heads 8 --kv-heads 2 --vocab 700 --seq 64 --experts 8 --topk 2 --seed 4
gen moe-cls.bin --dim 64 --hidden 128 --layers 4 --heads 4 --kv-heads 4 --vocab 300 --seq 64 --experts 6 --topk 3 --unshared-cls --seed 6

# Tight budgets: a fraction of each model, so most units stream and the
# expert cache evicts.
same dense.bin 600K --temperature 0
same dense.bin 600K --temperature 0.9 --seed 11
same dense-cls.bin 400K --temperature 0
for r in model uniform zipf zipf:2.0; do
	same moe.bin 1300K --temperature 0 --router $r --router-seed 9
	same moe-cls.bin 500K --temperature 0 --router $r --router-seed 9
done
same moe.bin 1300K --temperature 1.0 --seed 3 --router zipf

# Every pinned/streamed split, from nearly all streamed to all pinned, and
# expert caches from k slots to every expert.
ref=$("$LLM" --model "$T/dense.bin" --steps 24 --print-ids --quiet --temperature 0)
for lm in 400K 700K 1M 1500K 2M 3M 4M; do
	for ch in 3K 64K; do
		got=$("$LLM" --model "$T/dense.bin" --steps 24 --print-ids --quiet --temperature 0 \
			--weights stream --local-mem $lm --stream-chunk $ch) && [ "$got" = "$ref" ] || {
			echo "FAIL: dense.bin stream --local-mem $lm --stream-chunk $ch"; fail=1; }
	done
done
ref=$("$LLM" --model "$T/moe.bin" --steps 24 --print-ids --quiet --temperature 0 --router zipf)
for lm in 1000K 1300K 2M 3M 5M 8M 12M; do
	got=$("$LLM" --model "$T/moe.bin" --steps 24 --print-ids --quiet --temperature 0 \
		--router zipf --weights stream --local-mem $lm) && [ "$got" = "$ref" ] || {
		echo "FAIL: moe.bin stream --local-mem $lm"; fail=1; }
done

# The override is a function of the seed alone.
a=$("$LLM" --model "$T/moe.bin" --steps 48 --print-ids --quiet --temperature 0 --router uniform --router-seed 1)
b=$("$LLM" --model "$T/moe.bin" --steps 48 --print-ids --quiet --temperature 0 --router uniform --router-seed 2)
[ "$a" != "$b" ] || { echo "FAIL: router seed has no effect"; fail=1; }

[ $fail = 0 ] && echo PASS
exit $fail
