#!/bin/sh
# Bad arguments and bad checkpoints must give a clear message and a non-zero
# exit, never a crash or a silent run: a truncated or padded file, header
# fields that are negative, inconsistent or large enough to overflow, the
# unsupported int8 format, a corrupt MoE header.  Each is tried through every
# file-reading backend.  Exit 0 pass, 1 fail, 77 skip.
B=${1:?usage: test_errors.sh BUILD_DIR [stories260K.bin]}
LLM=$B/ethermem-llm
GEN=$B/ethermem-llm-gen
[ -x "$LLM" ] && [ -x "$GEN" ] || { echo "SKIP: binaries not built"; exit 77; }
. "$(dirname "$0")/../../../tests/lib.sh"
fail=0

# expect STATUS PATTERN cmd...: exit status and a stderr line matching PATTERN
expect() {
	want=$1; pat=$2; shift 2
	"$@" >"$T/out" 2>"$T/err"
	st=$?
	if [ "$st" != "$want" ] || ! grep -q -- "$pat" "$T/err"; then
		echo "FAIL: '$*' exited $st (want $want), stderr:"
		sed 's/^/  /' "$T/err"
		fail=1
	fi
}

# le32 N: four little-endian bytes
le32() {
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) $((($1 >> 8) & 255)) \
		$((($1 >> 16) & 255)) $((($1 >> 24) & 255)))"
}

# v0 FILE dim hidden layers heads kv vocab seq PAYLOAD_BYTES
v0() {
	f=$1; shift
	{ for v in $1 $2 $3 $4 $5 $6 $7; do le32 "$v"; done
	  head -c "$8" /dev/zero; } >"$T/$f"
}

bad() { # file pattern
	for w in local mmap stream; do
		expect 1 "$2" "$LLM" --model "$T/$1" --steps 4 --temperature 0 --print-ids --weights $w
	done
}

"$LLM" --help >/dev/null || { echo "FAIL: --help"; fail=1; }
"$GEN" --help >/dev/null || { echo "FAIL: gen --help"; fail=1; }
expect 2 "required" "$LLM"
expect 2 "unknown option" "$LLM" --model x --frobnicate 1
expect 2 "integer" "$LLM" --model x --steps abc
expect 2 "integer" "$LLM" --model x --steps 0
expect 2 "needs a value" "$LLM" --model
expect 2 "weights wants" "$LLM" --model x --weights disk
expect 2 "router wants" "$LLM" --model x --router random
expect 2 "Zipf" "$LLM" --model x --router zipf:abc
expect 2 "size" "$LLM" --model x --weights stream --local-mem 12Q
expect 2 "stream only" "$LLM" --model x --local-mem 1M
expect 2 "stream only" "$LLM" --model x --stream-chunk 1M
expect 2 "stream-chunk" "$LLM" --model x --weights stream --stream-chunk 1
expect 1 "cannot open" "$LLM" --model "$T/does-not-exist" --steps 2
expect 2 "required" "$GEN" --dim 64
expect 2 "integer" "$GEN" --out "$T/g.bin" --dim -3
expect 2 "exceeds" "$GEN" --out "$T/g.bin" --experts 2 --topk 3
expect 2 "heads" "$GEN" --out "$T/g.bin" --dim 64 --heads 5

"$GEN" --out "$T/good.bin" --dim 64 --hidden 128 --layers 2 --heads 4 --vocab 256 --seq 32 2>/dev/null || {
	echo "FAIL: generating a model"; exit 1; }
"$GEN" --out "$T/moe.bin" --dim 64 --hidden 128 --layers 2 --heads 4 --vocab 256 --seq 32 \
	--experts 4 --topk 2 2>/dev/null || { echo "FAIL: generating an MoE model"; exit 1; }
size=$(wc -c <"$T/good.bin")
msize=$(wc -c <"$T/moe.bin")
"$LLM" --model "$T/good.bin" --steps 4 --temperature 0 --print-ids --quiet >/dev/null || {
	echo "FAIL: the untouched model does not run"; fail=1; }
if "$LLM" --help | grep -q "Pool backend: not built"; then
	expect 2 "pool backend not built" "$LLM" --model "$T/good.bin" --weights pool
	expect 2 "pool backend not built" "$LLM" --model "$T/good.bin" --weights stream --stream-from pool
fi
expect 2 "too small" "$LLM" --model "$T/good.bin" --weights stream --local-mem 1K

head -c $((size - 4)) "$T/good.bin" >"$T/trunc.bin"
bad trunc.bin "describes"
head -c 20 "$T/good.bin" >"$T/short.bin"
bad short.bin "too short\|not a checkpoint"
: >"$T/empty.bin"
bad empty.bin "not a checkpoint\|too short"
{ cat "$T/good.bin"; printf 'x'; } >"$T/long.bin"
bad long.bin "describes"
head -c $((msize - 4096)) "$T/moe.bin" >"$T/mtrunc.bin"
bad mtrunc.bin "describes"

v0 neg.bin -64 128 2 4 4 256 32 4096
bad neg.bin "bad header: dim"
v0 zero.bin 64 128 0 4 4 256 32 4096
bad zero.bin "bad header: n_layers"
v0 heads.bin 64 128 2 5 5 256 32 4096
bad heads.bin "not a multiple of n_heads"
v0 kv.bin 64 128 2 4 3 256 32 4096
bad kv.bin "n_kv_heads"
v0 vmin.bin 64 128 2 4 4 -2147483648 32 4096
bad vmin.bin "bad header: vocab"
# Every field at its cap: the products would wrap 64 bits if multiplied
# blindly; the header must be refused by size, not trusted.
v0 huge.bin 16777216 16777216 16777216 16777216 16777216 16777216 16777216 4096
bad huge.bin "bad header\|describes"
# Header claims a little less than the file: sizes must match exactly.
v0 lie.bin 64 128 2 4 4 256 32 100000
bad lie.bin "describes"
# int8 (version 2) headers: 256 bytes, shared flag at 36, group size at 37.
q8hdr() { # version gs
	le32 1634415666; le32 "$1"
	for v in 64 128 2 4 4 256 32; do le32 $v; done
	printf '\001'; le32 "$2"; head -c 215 /dev/zero
}
{ q8hdr 1 64; head -c 4096 /dev/zero; } >"$T/q8v1.bin"
bad q8v1.bin "version 1 is not supported"
{ q8hdr 2 6; head -c 4096 /dev/zero; } >"$T/q8gs.bin"
bad q8gs.bin "group_size"
{ q8hdr 2 64; head -c 4096 /dev/zero; } >"$T/q8len.bin"
bad q8len.bin "describes"

# MoE header corruptions: a copy of the good header with one field changed.
moe_patch() { # out offset value
	{ head -c "$2" "$T/moe.bin"; le32 "$3"; tail -c +$(($2 + 5)) "$T/moe.bin"; } >"$T/$1"
}
moe_patch mver.bin 4 7
bad mver.bin "version"
moe_patch mtopk.bin 40 5
bad mtopk.bin "top_k"
moe_patch mexp.bin 36 0
bad mexp.bin "n_experts"
moe_patch mres.bin 100 1
bad mres.bin "reserved"

[ $fail = 0 ] && echo PASS
exit $fail
