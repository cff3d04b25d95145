#!/bin/bash
# bench/llm/kv.sh - the KV cache in the pool, measured: time to first token
# with and without a prompt prefix fetched from the pool's block store, and
# decode speed with most of the KV cache in the pool against all of it local.
#
# Rows (every figure from one run of this script, ratios against a baseline
# measured in the same run):
#   ttft      for each prompt length: recompute (no store), publish (the
#             first process computes and publishes), a second request in
#             the process that published (--requests 2), then a second process
#             fetching the prefix from a node on loopback and from a node in
#             another network namespace over a veth pair; ids must match
#   decode    tok/s at a context whose KV is 4x the local budget, --kv pool
#             and a cgroup-limited --kv local run with swap against
#             --kv local (the prompt itself fetched from the store)
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
DECODE_REPS=3
SWAP_STEPS=16
TRACE_N=12
NETNS=1
THREADS=1
while [ $# -gt 0 ]; do
	case $1 in
	--lens) LENS=$2; shift ;;
	--decode-ctx) DECODE_CTX=$2; shift ;;
	--decode-steps) DECODE_STEPS=$2; shift ;;
	--decode-reps) DECODE_REPS=$2; shift ;;
	--swap-steps) SWAP_STEPS=$2; shift ;;
	--trace) TRACE_N=$2; shift ;;
	--no-netns) NETNS=0 ;;
	--out) OUT=$2; shift ;;
	-h|--help)
		echo "usage: bench/llm/kv.sh [--lens \"256 1024 4096\"] [--decode-ctx N] [--decode-steps N]"
		echo "                       [--decode-reps N] [--swap-steps N]"
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
CG=
SWAPON=
cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	if [ -n "$CG" ] && [ -d "$CG" ]; then
		# swapoff charges what it brings back to the group: lift its
		# limit first, and end whatever still runs in it
		echo -1 >"$CG/memory.limit_in_bytes" 2>/dev/null
		while read -r p; do kill -KILL "$p" 2>/dev/null; done <"$CG/cgroup.procs"
	fi
	wait 2>/dev/null
	if [ -n "$SWAPON" ]; then
		swapoff "$SWAPON" || say "warning: swapoff $SWAPON failed: run it by hand"
	fi
	if [ -n "$CG" ]; then
		for _ in 1 2 3 4 5; do rmdir "$CG" 2>/dev/null && break; sleep 0.2; done
	fi
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
	echo "| prompt | recompute ms | publish ms | same process, 2nd request ms | ratio | 2nd process, loopback ms | ratio | 2nd process, veth ms | ratio | positions fetched | ids |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|"
} >"$WORK/ttft.md"
for n in $LENS; do
	say "ttft, prompt $n"
	llm "$LO" none "r$n" --prompt-len "$n" --steps 8
	llm "$LO" "kvb-$ID-$n" "p$n" --prompt-len "$n" --steps 8 --kv-prefix pool --kv-store-size 128M
	llm "$LO" "kvb-$ID-$n" "f$n" --prompt-len "$n" --steps 8 --kv-prefix pool
	# the same process: its second request fetches what its first published
	llm "$LO" "kvb-$ID-$n-s" "s$n" --prompt-len "$n" --steps 8 --kv-prefix pool --kv-store-size 128M \
		--requests 2
	rt=$(j "r$n" ttft_ms) pt=$(j "p$n" ttft_ms) ft=$(j "f$n" ttft_ms) st=$(j "s$n" ttft_ms)
	m=$(match "f$n" "r$n")
	[ "$(match "p$n" "r$n")" = yes ] && [ "$m" = yes ] || bad=1
	[ "$(sort -u "$WORK/s$n.ids")" = "$(cat "$WORK/r$n.ids")" ] || { m=NO; bad=1; }
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
	echo "ttft,$n,fetched-same-process,$st,,$(j "s$n" prefix_hit_tokens),$(j "s$n" prefix_fetched_bytes),$(r2 "$rt" "$st"),$m" >>"$CSV"
	echo "ttft,$n,fetched-loopback,$ft,,$(j "f$n" prefix_hit_tokens),$(j "f$n" prefix_fetched_bytes),$(r2 "$rt" "$ft"),$m" >>"$CSV"
	echo "| $n | $rt | $pt | $st | $(r2 "$rt" "$st")x | $ft | $(r2 "$rt" "$ft")x | $vt | ${vr}x | $(j "f$n" prefix_hit_tokens) | $m |" >>"$WORK/ttft.md"
done

# Decode: a prompt of DECODE_CTX - DECODE_STEPS (fetched from the store, so
# that the runs spend their time decoding), then DECODE_STEPS tokens.  The
# machines this runs on are shared, so the load moves within seconds: the
# three cases run in turn, DECODE_REPS rounds, and each reports its median.
#   local  --kv local
#   pool   --kv pool, a quarter of the KV local
#   swap   --kv local in a cgroup v1 memory group whose limit is the same
#          run's peak without a limit less three quarters of its KV cache, a
#          swap file on (the same memory, the rest of the KV swapped by the
#          kernel); every token then swaps most of the cache in and out, so
#          this run decodes only the last SWAP_STEPS tokens of the context
#          (its prompt is longer, the context the same); needs root and the
#          cgroup v1 memory controller, else "-"
say "decode, context $DECODE_CTX"
np=$((DECODE_CTX - DECODE_STEPS + 1))
ns=$((DECODE_CTX - SWAP_STEPS + 1))
# publishes the longest prompt: the shorter ones share its prefix
llm "$LO" "kvb-$ID-dec" dp --prompt-len "$ns" --steps 2 --kv-prefix pool --kv-store-size 128M
CG=
if [ "$(id -u)" = 0 ] && [ -w /sys/fs/cgroup/memory/cgroup.procs ] && command -v mkswap >/dev/null &&
	command -v swapon >/dev/null; then
	CG=/sys/fs/cgroup/memory/kvbench-$ID
	mkdir "$CG" || CG=
fi
# in_cg OUT ARGS...: llm on loopback in the cgroup, at most 300 s; sets
# PEAK; 1 when it failed, was killed, or stalled: with the OOM killer off
# the kernel may stop the group for good (under_oom), which ends the run
in_cg() {
	out=$1; shift
	echo 0 >"$CG/memory.max_usage_in_bytes" 2>/dev/null
	: >"$WORK/$out.json"
	ETHERMEM_NODES=$LO ETHERMEM_LLM_KV_STORE=kvb-$ID-dec sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' \
		sh "$CG" timeout -s KILL 300 "$LLM" --model "$MODEL" --temperature 0 --print-ids --stats-json --quiet \
		--threads "$THREADS" "$@" >"$WORK/$out.ids" 2>"$WORK/$out.err" &
	cgpid=$!
	while kill -0 "$cgpid" 2>/dev/null; do
		if grep -q "under_oom 1" "$CG/memory.oom_control" 2>/dev/null; then
			say "ethermem-llm (cgroup) stalled under the limit (under_oom): ended"
			while read -r p; do kill -KILL "$p" 2>/dev/null; done <"$CG/cgroup.procs"
		fi
		sleep 0.5
	done
	wait "$cgpid" || { say "ethermem-llm (cgroup) $* failed: $(tail -2 "$WORK/$out.err")"; return 1; }
	grep '^{' "$WORK/$out.err" | tail -1 >"$WORK/$out.json"
	PEAK=$(cat "$CG/memory.max_usage_in_bytes")
}
dargs="--prompt-len $np --steps $DECODE_STEPS --kv-prefix pool"
# shellcheck disable=SC2086
llm "$LO" "kvb-$ID-dec" dl $dargs --kv local
all=$(j dl kv_local_bytes)
limit=
sargs="--prompt-len $ns --steps $SWAP_STEPS --kv-prefix pool --kv local"
if [ -n "$CG" ]; then
	# shellcheck disable=SC2086
	in_cg dw $sargs || die "the swap row's unlimited run failed"
	limit=$((PEAK - $(j dw kv_local_bytes) * 3 / 4))
	# Below about 12 MiB the kernel's reclaim stalled for good in such a
	# group here (under_oom with the OOM killer off, killed with it on):
	# the swap run then gets that much, more than the pool run has.
	[ "$limit" -ge $((12 << 20)) ] || limit=$((12 << 20))
	SWAP=$WORK/swapfile
	fallocate -l 256M "$SWAP" && chmod 600 "$SWAP" && mkswap "$SWAP" >/dev/null &&
		swapon "$SWAP" || die "a swap file for the swap row"
	SWAPON=$SWAP
	echo "$limit" >"$CG/memory.limit_in_bytes" || die "setting the limit of $CG"
	echo 1 >"$CG/memory.oom_control" # reclaim swaps rather than kill
fi
LT="" QT="" ST="" qread=""
for rep in $(seq "$DECODE_REPS"); do
	# shellcheck disable=SC2086
	llm "$LO" "kvb-$ID-dec" "dl$rep" $dargs --kv local
	# shellcheck disable=SC2086
	llm "$LO" "kvb-$ID-dec" "dq$rep" $dargs --kv pool --kv-local $((all / 4))
	LT="$LT $(j "dl$rep" tok_s)" QT="$QT $(j "dq$rep" tok_s)"
	qread=$(j "dq$rep" kv_pool_read_per_token)
	[ "$(match "dq$rep" dl)" = yes ] && [ "$(match "dl$rep" dl)" = yes ] || dm=NO
	if [ -n "$CG" ]; then
		# shellcheck disable=SC2086
		if in_cg "ds$rep" $sargs; then
			ST="$ST $(j "ds$rep" tok_s)"
			[ "$(match "ds$rep" dw)" = yes ] || dm=NO
		fi
	fi
done
dm=${dm:-yes}
[ "$dm" = yes ] || bad=1
med() { echo "$@" | tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print NR ? v[int((NR + 1) / 2)] : "-" }'; }
lt=$(med $LT) qt=$(med $QT) st=$(med $ST)
sr=-
[ -n "$CG" ] && [ "$st" != - ] && sr=$(r2 "$st" "$lt")
echo "decode,$np,kv-local,,$lt,,,1,yes" >>"$CSV"
echo "decode,$np,kv-pool-quarter-local,,$qt,,$qread,$(r2 "$qt" "$lt"),$dm" >>"$CSV"
echo "decode,$np,kv-local-swap-quarter,,$st,,,$sr,$dm" >>"$CSV"

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
hr=$(awk -v a=$hit -v b=$tot 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }')
echo "trace,576,$TRACE_N-requests,$(r2 "$ttf" "$TRACE_N"),,$hit,$((fb / (TRACE_N > 0 ? TRACE_N : 1))),$(r2 "$ttr" "$ttf"),$tm" >>"$CSV"

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
	echo "## Decode at context $DECODE_CTX, KV budget a quarter of the context's KV (median of $DECODE_REPS rounds: local $LT, pool $QT, swap ${ST:- -})"
	echo
	echo "| KV | tok/s | bytes from the pool per token | ratio | ids |"
	echo "|---|---|---|---|---|"
	echo "| all local ($all bytes) | $lt | 0 | 1 | yes |"
	echo "| pool, $((all / 4)) bytes local | $qt | $qread | $(r2 "$qt" "$lt")x | $dm |"
	echo "| local under a memory limit ($limit bytes) with swap, last $SWAP_STEPS tokens | $st | - | ${sr}x | $dm |"
	echo
	echo "## Trace: $TRACE_N requests, 3 system prompts of 512 tokens, 64-token user suffixes"
	echo
	echo "| hit rate (positions fetched / prompt positions) | bytes fetched per request | mean TTFT recompute ms | mean TTFT with store ms | ratio | ids |"
	echo "|---|---|---|---|---|---|"
	echo "| $hr | $((fb / (TRACE_N > 0 ? TRACE_N : 1))) | $(r2 "$ttr" "$TRACE_N") | $(r2 "$ttf" "$TRACE_N") | $(r2 "$ttr" "$ttf")x | $tm |"
} >"$MD"
cat "$MD"
[ $bad = 0 ] || { say "ids differ somewhere: see $CSV"; exit 1; }
exit 0
