#!/bin/sh
# Runs test_llm_faults on stories260K and on a small generated MoE model
# (in a temporary directory).  Exit 0 pass, 1 fail, 77 skip.
B=${1:?usage: test_faults.sh BUILD_DIR STORIES260K}
M=${2:?usage: test_faults.sh BUILD_DIR STORIES260K}
[ -r "$M" ] || { echo "SKIP: $M not found"; exit 77; }
[ -x "$B/test_llm_faults" ] && [ -x "$B/ethermem-llm-gen" ] || { echo "SKIP: not built"; exit 77; }
. "$(dirname "$0")/../../../tests/lib.sh"
"$B/ethermem-llm-gen" --out "$T/moe.bin" --dim 64 --hidden 128 --layers 3 --heads 4 --vocab 300 \
	--seq 16 --experts 6 --topk 2 --seed 8 2>/dev/null || { echo "FAIL: generating"; exit 1; }
"$B/test_llm_faults" "$M" "$T/moe.bin"
