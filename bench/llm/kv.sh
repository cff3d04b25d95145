#!/bin/bash
# bench/llm/kv.sh - the KV cache in the pool, measured: time to first token
# with and without a prompt prefix fetched from the pool's block store, and
# decode speed with most of the KV cache in the pool against all of it local.
#
# Rows (every figure from one run of this script, ratios against a baseline
# measured in the same run):
#   ttft      for each prompt length: recompute (no store), publish (the
#             first process computes and publishes), then a second process
#             fetching the prefix from a node on loopback and from a node in
#             another network namespace over a veth pair; ids must match
#   decode    tok/s at a context whose KV is 4x the local budget, --kv pool
#             against --kv local (the prompt itself fetched from the store)
#   trace     a seeded trace of requests drawing one of a few system prompts
#             and a user suffix of their own: hit rate, bytes fetched per
#             request, mean TTFT against the same trace recomputed
# One process per request, as a separate server would be; connections to the
# pool are made before the clock starts (ethermem-llm does that).
#
# Writes bench/results/kv.md and kv.csv.  The model is generated once into
# $ETHERMEM_MODELS_DIR (default /var/tmp/ethermem-models).  Needs root and
# iproute2 for the namespace (--no-netns skips those rows).
# Exit 0 ok, 1 failure or id mismatch, 77 skip.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${EM_BUILD_DIR:-$ROOT/build}
case $B in /*) ;; *) B=$ROOT/$B ;; esac
MODELS=${ETHERMEM_MODELS_DIR:-/var/tmp/ethermem-models}
OUT=$ROOT/bench/results
LENS="256 1024 4096"
DECODE_CTX=1536
DECODE_STEPS=256
TRACE_N=12
NETNS=1
THREADS=1
while [ $# -gt 0 ]; do
	case $1 in
	--lens) LENS=$2; shift ;;
	--decode-ctx) DECODE_CTX=$2; shift ;;
	--decode-steps) DECODE_STEPS=$2; shift ;;
	--trace) TRACE_N=$2; shift ;;
	--no-netns) NETNS=0 ;;
	--out) OUT=$2; shift ;;
	-h|--help)
		echo "usage: bench/llm/kv.sh [--lens \"256 1024 4096\"] [--decode-ctx N] [--decode-steps N]"
		echo "                       [--trace N] [--no-netns] [--out DIR]"
		exit 0 ;;
	*) echo "kv.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
LLM=$B/ethermem-llm
for x in "$LLM" "$B/ethermem-llm-gen" "$B/ethermemd"; do
	[ -x "$x" ] || { echo "SKIP: $x not built"; exit 77; }
done
"$LLM" --help | grep -q "Pool backend: not built" && { echo "SKIP: no pool backend"; exit 77; }
say() { echo "kv.sh: $*" >&2; }
die() { say "$*"; exit 1; }

ID=$$
NS=kvcache$ID
VETH=kvc$((ID % 100000))
WORK=$(mktemp -d) || exit 1
PIDS=
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	ip link del "${VETH}a" 2>/dev/null
	ip netns del "$NS" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM HUP
mkdir -p "$MODELS" "$OUT" || die "cannot create $MODELS or $OUT"

# A dense model small enough that a 4096-token prefill takes seconds, not
# hours, on two cores; attention over 4096 positions is then a real share
# of the work, as in large models at long contexts.
MODEL=$MODELS/kvbench-d256.bin
[ -s "$MODEL" ] || "$B/ethermem-llm-gen" --out "$MODEL" --dim 256 --hidden 688 --layers 6 \
	--heads 4 --kv-heads 4 --vocab 4096 --seq 4200 --seed 21 >&2 || die "generating $MODEL"

echo "kv bench secret $ID $(date +%s%N)" > "$WORK/secret"
chmod 600 "$WORK/secret"
export ETHERMEM_SECRET_FILE=$WORK/secret
# start NAME [netns]: a node; sets NAME (its URL)
start() {
	if [ "${2:-}" = netns ]; then
		SUB=10.$((150 + ID % 50)).$(((ID / 50) % 250))
		ip netns add "$NS" || die "ip netns add"
		ip link add "${VETH}a" type veth peer name "${VETH}b" || die "ip link add"
		ip link set "${VETH}b" netns "$NS" || die "veth into $NS"
		ip addr add "$SUB.1/24" dev "${VETH}a"
		ip link set "${VETH}a" mtu 9000 up
		ip netns exec "$NS" ip addr add "$SUB.2/24" dev "${VETH}b"
		ip netns exec "$NS" ip link set "${VETH}b" mtu 9000 up
		ip netns exec "$NS" ip link set lo up
		ip netns exec "$NS" "$B/ethermemd" --listen "tcp://$SUB.2:0" --capacity 1G \
			--secret-file "$WORK/secret" --port-file "$WORK/$1.port" 2>"$WORK/$1.log" &
		host=$SUB.2
	else
		"$B/ethermemd" --listen tcp://127.0.0.1:0 --capacity 1G \
			--secret-file "$WORK/secret" --port-file "$WORK/$1.port" 2>"$WORK/$1.log" &
		host=127.0.0.1
	fi
	PIDS="$PIDS $!"
	for _ in $(seq 200); do [ -s "$WORK/$1.port" ] && break; sleep 0.05; done
	[ -s "$WORK/$1.port" ] || die "ethermemd did not start: $(cat "$WORK/$1.log")"
	eval "$1=tcp://$host:$(cat "$WORK/$1.port")"
}
start LO
VE=
[ $NETNS = 1 ] && { start VE netns; }

# llm NODE STORE OUT ARGS...: one process; ids into $WORK/OUT.ids, JSON line
# into $WORK/OUT.json
llm() {
	node=$1 store=$2 out=$3; shift 3
	ETHERMEM_NODES=$node ETHERMEM_LLM_KV_STORE=$store "$LLM" --model "$MODEL" --temperature 0 \
		--print-ids --stats-json --quiet --threads "$THREADS" "$@" \
		>"$WORK/$out.ids" 2>"$WORK/$out.err" || die "ethermem-llm $*: $(cat "$WORK/$out.err")"
	grep '^{' "$WORK/$out.err" | tail -1 >"$WORK/$out.json"
}
j() { sed -n 's/.*"'"$2"'":"\{0,1\}\([^,"}]*\).*/\1/p' "$WORK/$1.json"; }
r2() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
match() { cmp -s "$WORK/$1.ids" "$WORK/$2.ids" && echo yes || echo NO; }
bad=0

CSV=$OUT/kv.csv
MD=$OUT/kv.md
echo "row,prompt,case,ttft_ms,tok_s,prefix_hit_tokens,fetched_bytes,ratio,ids_match" >"$CSV"
{
	echo "| prompt | recompute ms | publish ms | fetched, loopback ms | ratio | fetched, veth ms | ratio | positions fetched | ids |"
	echo "|---|---|---|---|---|---|---|---|---|"
} >"$WORK/ttft.md"
for n in $LENS; do
	say "ttft, prompt $n"
	llm "$LO" none "r$n" --prompt-len "$n" --steps 8
	llm "$LO" "kvb-$ID-$n" "p$n" --prompt-len "$n" --steps 8 --kv-prefix pool --kv-store-size 128M
	llm "$LO" "kvb-$ID-$n" "f$n" --prompt-len "$n" --steps 8 --kv-prefix pool
	rt=$(j "r$n" ttft_ms) pt=$(j "p$n" ttft_ms) ft=$(j "f$n" ttft_ms)
	m=$(match "f$n" "r$n")
	[ "$(match "p$n" "r$n")" = yes ] && [ "$m" = yes ] || bad=1
	vt=- vr=- 
	if [ -n "$VE" ]; then
		llm "$VE" "kvb-$ID-$n" "vp$n" --prompt-len "$n" --steps 8 --kv-prefix pool --kv-store-size 128M
		llm "$VE" "kvb-$ID-$n" "vf$n" --prompt-len "$n" --steps 8 --kv-prefix pool
		vt=$(j "vf$n" ttft_ms)
		vr=$(r2 "$rt" "$vt")
		[ "$(match "vf$n" "r$n")" = yes ] || { m=NO; bad=1; }
		echo "ttft,$n,fetched-veth,$vt,,$(j "vf$n" prefix_hit_tokens),$(j "vf$n" prefix_fetched_bytes),$vr,$m" >>"$CSV"
	fi
	echo "ttft,$n,recompute,$rt,,0,0,1,yes" >>"$CSV"
	echo "ttft,$n,publish,$pt,,0,0,$(r2 "$rt" "$pt"),$m" >>"$CSV"
	echo "ttft,$n,fetched-loopback,$ft,,$(j "f$n" prefix_hit_tokens),$(j "f$n" prefix_fetched_bytes),$(r2 "$rt" "$ft"),$m" >>"$CSV"
	echo "| $n | $rt | $pt | $ft | $(r2 "$rt" "$ft")x | $vt | ${vr}x | $(j "f$n" prefix_hit_tokens) | $m |" >>"$WORK/ttft.md"
done

# Decode: a prompt of DECODE_CTX - DECODE_STEPS (fetched from the store, so
# that the runs spend their time decoding), then DECODE_STEPS tokens.
say "decode, context $DECODE_CTX"
np=$((DECODE_CTX - DECODE_STEPS + 1))
llm "$LO" "kvb-$ID-dec" dp --prompt-len "$np" --steps 2 --kv-prefix pool --kv-store-size 128M
llm "$LO" "kvb-$ID-dec" dl --prompt-len "$np" --steps "$DECODE_STEPS" --kv-prefix pool --kv local
all=$(j dl kv_local_bytes)
llm "$LO" "kvb-$ID-dec" dq --prompt-len "$np" --steps "$DECODE_STEPS" --kv-prefix pool --kv pool \
	--kv-local $((all / 4))
lt=$(j dl tok_s) qt=$(j dq tok_s)
dm=$(match dq dl)
[ "$dm" = yes ] || bad=1
echo "decode,$np,kv-local,,$lt,,,1,yes" >>"$CSV"
echo "decode,$np,kv-pool-quarter-local,,$qt,,$(j dq kv_pool_read_per_token),$(r2 "$qt" "$lt"),$dm" >>"$CSV"

# Trace: 3 system prompts of 512 tokens, each request a seeded pick of one
# and a 64-token suffix of its own, every request in its own process.
say "trace, $TRACE_N requests"
seed=$ID
hit=0 tot=0 fb=0 ttr=0 ttf=0 tm=yes
for i in $(seq "$TRACE_N"); do
	seed=$(( (seed * 1103515245 + 12345) % 2147483648 ))
	sys=$(( (seed >> 8) % 3 + 1 ))
	a="--prompt-len 576 --prompt-seed $sys --suffix-len 64 --suffix-seed $((1000 + i)) --steps 4"
	# shellcheck disable=SC2086
	llm "$LO" none "tr$i" $a
	# shellcheck disable=SC2086
	llm "$LO" "kvb-$ID-trace" "tf$i" $a --kv-prefix pool --kv-store-size 128M
	[ "$(match "tf$i" "tr$i")" = yes ] || { tm=NO; bad=1; }
	hit=$((hit + $(j "tf$i" prefix_hit_tokens)))
	tot=$((tot + 576))
	fb=$((fb + $(j "tf$i" prefix_fetched_bytes)))
	ttr=$(awk -v a="$ttr" -v b="$(j "tr$i" ttft_ms)" 'BEGIN { print a + b }')
	ttf=$(awk -v a="$ttf" -v b="$(j "tf$i" ttft_ms)" 'BEGIN { print a + b }')
done
hr=$(awk -v a=$hit -v b=$tot 'BEGIN { printf "%.3f", a / b }')
echo "trace,576,$TRACE_N-requests,$(r2 "$ttf" "$TRACE_N"),,$hit,$((fb / TRACE_N)),$(r2 "$ttr" "$ttf"),$tm" >>"$CSV"

{
	echo "# KV cache in the pool ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null))"
	echo
	echo "Model: $(basename "$MODEL") (dim 256, 6 layers, 4 heads, KV $(( 6 * 256 * 2 * 4 )) bytes per position), $THREADS matmul thread(s)."
	echo "Nodes: loopback$( [ -n "$VE" ] && echo ", and a node in namespace $NS over a veth pair (MTU 9000)")."
	echo
	echo "## Time to first token (8 tokens generated)"
	echo
	cat "$WORK/ttft.md"
	echo
	echo "## Decode at context $DECODE_CTX, KV budget a quarter of the context's KV"
	echo
	echo "| KV | tok/s | bytes from the pool per token | ratio | ids |"
	echo "|---|---|---|---|---|"
	echo "| all local ($all bytes) | $lt | 0 | 1 | yes |"
	echo "| pool, $((all / 4)) bytes local | $qt | $(j dq kv_pool_read_per_token) | $(r2 "$qt" "$lt")x | $dm |"
	echo
	echo "## Trace: $TRACE_N requests, 3 system prompts of 512 tokens, 64-token user suffixes"
	echo
	echo "| hit rate (positions fetched / prompt positions) | bytes fetched per request | mean TTFT recompute ms | mean TTFT with store ms | ratio | ids |"
	echo "|---|---|---|---|---|---|"
	echo "| $hr | $((fb / TRACE_N)) | $(r2 "$ttr" "$TRACE_N") | $(r2 "$ttf" "$TRACE_N") | $(r2 "$ttr" "$ttf")x | $tm |"
} >"$MD"
cat "$MD"
[ $bad = 0 ] || { say "ids differ somewhere: see $CSV"; exit 1; }
exit 0
