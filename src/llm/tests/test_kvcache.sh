#!/bin/sh
# The KV cache in the pool and prompt prefixes reused through it, against
# real ethermemd nodes on loopback.  For stories260K and two generated models
# (dense with grouped-query attention, MoE): the ids with the KV cache in the
# pool (minimum local budget, and a budget a few times smaller than the
# context's KV) equal the ids with it all local.  Then prefixes: a first
# process publishes, a second one fetches (same ids, the expected number of
# positions fetched), a prompt sharing only its beginning fetches only that,
# two processes publishing the same prefix at once store it once, a
# corrupted block is rejected and recomputed, a store too small for the
# prompt evicts and still gives the same ids, and a store whose node is
# stopped or killed costs the reuse, never the generation.
# Exit 0 pass, 1 fail, 77 skip.
B=${1:?usage: test_kvcache.sh BUILD_DIR STORIES_MODEL}
STORIES=${2:?usage: test_kvcache.sh BUILD_DIR STORIES_MODEL}
LLM=$B/ethermem-llm
GEN=$B/ethermem-llm-gen
TOOL=$B/test_llm_kvstore
for x in "$LLM" "$GEN" "$TOOL" "$B/ethermemd" "$B/ethermem"; do
	[ -x "$x" ] || { echo "SKIP: $x not built"; exit 77; }
done
# Without stories260K the generated models carry every part of the test.
[ -r "$STORIES" ] || { echo "note: $STORIES missing, generated models only"; STORIES=; }
. "$(dirname "$0")/../../../tests/lib.sh"
fail=0
start_node A 256M
A_URL=tcp://127.0.0.1:$PORT_A
A_PID=$PID_A
export ETHERMEM_NODES=$A_URL
unset ETHERMEM_LLM_KV_STORE ETHERMEM_TIMEOUT_MS

# json FIELD: from the JSON line of $T/err
json() { sed -n 's/.*"'"$1"'":\([-0-9.]*\).*/\1/p' "$T/err" | tail -1; }

# run NAME ARGS...: ids into $T/NAME, stats in $T/err; 1 on failure
run() {
	name=$1; shift
	timeout 120 "$LLM" --temperature 0 --print-ids --stats-json --quiet "$@" >"$T/$name" 2>"$T/err" || {
		cat "$T/err"; echo "FAIL: $name: ethermem-llm $* exited non-zero"; fail=1; return 1; }
}

# same NAME REF: the ids of run NAME equal those of REF
same() {
	cmp -s "$T/$1" "$T/$2" || {
		echo "FAIL: $1: ids differ from $2"; echo "  $2: $(cat "$T/$2")"; echo "  $1: $(cat "$T/$1")"
		fail=1; }
}

"$GEN" --out "$T/gqa.bin" --dim 128 --hidden 344 --layers 4 --heads 8 --kv-heads 2 --vocab 1000 \
	--seq 320 --seed 5 2>/dev/null &&
"$GEN" --out "$T/moe.bin" --dim 128 --hidden 256 --layers 3 --heads 8 --kv-heads 4 --vocab 700 \
	--seq 320 --experts 8 --topk 2 --seed 6 2>/dev/null || { echo "FAIL: generating models"; exit 1; }

# KV in the pool: same ids as all local, the pool actually used.
# shellcheck disable=SC2086
for m in $STORIES "$T/gqa.bin" "$T/moe.bin"; do
	P="--model $m --prompt-len 150 --steps 120"
	# shellcheck disable=SC2086
	run ref $P --kv local || continue
	all=$(json kv_local_bytes)
	# shellcheck disable=SC2086
	# Half the KV local also makes each stream request carry several blocks.
	for v in "--kv pool --kv-local $((all / 2))" "--kv pool --kv-local $((all / 4))" \
		 "--kv pool --threads 2" "--kv pool"; do
		run got $P $v || continue
		same got ref
		r=$(json kv_pool_read_per_token | cut -d. -f1)
		l=$(json kv_local_bytes)
		[ "${r:-0}" -gt 0 ] && [ $((l * 2)) -le "$all" ] || {
			echo "FAIL: $m $v: local $l of $all bytes, $r bytes per token from the pool"; fail=1; }
	done
	[ $((l * 4)) -lt "$all" ] || { echo "FAIL: $m: the minimum budget $l is not a small part of $all"; fail=1; }
	echo "ok: $(basename "$m"): KV in the pool (down to $l of $all bytes local) gives the local ids"
done
# Pool KV under streamed weights from the same pool.
ETHERMEM_NODES=$A_URL "$B/ethermem" import "$T/gqa.bin" llm-gqa.bin >/dev/null || { echo "FAIL: import"; exit 1; }
P="--model $T/gqa.bin --prompt-len 150 --steps 120"
# shellcheck disable=SC2086
run ref $P && run got $P --kv pool --weights stream --stream-from pool && same got ref
# A budget below the minimum is a usage error.
"$LLM" --model "$T/gqa.bin" --kv pool --kv-local 4K --steps 4 --quiet >/dev/null 2>&1
[ $? = 2 ] || { echo "FAIL: --kv-local below the minimum was not refused with 2"; fail=1; }

# Prefixes: publish, then fetch in another process.
export ETHERMEM_LLM_KV_STORE=kvt-one
PM=${STORIES:-$T/gqa.bin}
OTHER=$T/gqa.bin
[ -n "$STORIES" ] || OTHER=$T/moe.bin
P="--model $PM --prompt-len 200 --steps 40"
# shellcheck disable=SC2086
run ref $P
# shellcheck disable=SC2086
run first $P --kv-prefix pool && same first ref
[ "$(json prefix_hit_tokens)" = 0 ] && [ "$(json prefix_published)" = 12 ] || {
	cat "$T/err"; echo "FAIL: first run: want 0 fetched, 12 published"; fail=1; }
for v in "" "--kv pool" "--kv pool --weights local --threads 2"; do
	# shellcheck disable=SC2086
	run second $P --kv-prefix pool $v && same second ref
	[ "$(json prefix_hit_tokens)" = 192 ] && [ "$(json prefix_rejected)" = 0 ] || {
		cat "$T/err"; echo "FAIL: second run $v: want 192 positions fetched"; fail=1; }
done
# Same system prompt, another user suffix: only the shared blocks.
# shellcheck disable=SC2086
run ref2 $P --suffix-len 60 --suffix-seed 9 && run third $P --suffix-len 60 --suffix-seed 9 --kv-prefix pool &&
	same third ref2
[ "$(json prefix_hit_tokens)" = 128 ] || { cat "$T/err"; echo "FAIL: shared 140 tokens: want 128 fetched"; fail=1; }
# Another model never reuses these blocks (its own store by default; here
# the same store named, so the block headers must refuse).
P2="--model $OTHER --prompt-len 200 --steps 20"
# shellcheck disable=SC2086
run ref3 $P2 && run got $P2 --kv-prefix pool && same got ref3
[ "$(json prefix_hit_tokens)" = 0 ] || { cat "$T/err"; echo "FAIL: another model fetched blocks"; fail=1; }
echo "ok: prefix published, fetched by other processes (192 of 200, 128 of a shared 140)"

# Two requests in one process: the second fetches what the first published,
# with the KV cache local and in the pool; every request's ids are the same.
for v in "" "--kv pool"; do
	ETHERMEM_LLM_KV_STORE="kvt-inproc$(echo "$v" | tr -dc a-z)"
	export ETHERMEM_LLM_KV_STORE
	# shellcheck disable=SC2086
	run inproc $P --kv-prefix pool --kv-store-size 4M --requests 2 $v || continue
	[ "$(wc -l <"$T/inproc")" = 2 ] && [ "$(sed -n 1p "$T/inproc")" = "$(cat "$T/ref")" ] &&
		[ "$(sed -n 2p "$T/inproc")" = "$(cat "$T/ref")" ] || {
		echo "FAIL: two requests in one process $v: ids differ"; cat "$T/inproc"; fail=1; }
	[ "$(json prefix_hit_tokens)" = 192 ] && [ "$(json prefix_present)" = 0 ] || {
		cat "$T/err"; echo "FAIL: second request in one process $v: want 192 fetched"; fail=1; }
done
echo "ok: a second request in the same process fetches the first one's prefix"

# Two publishers of the same prefix at once: the first writer wins.
export ETHERMEM_LLM_KV_STORE=kvt-race
# shellcheck disable=SC2086
"$LLM" $P --temperature 0 --print-ids --stats-json --quiet --kv-prefix pool >"$T/r1" 2>"$T/e1" &
p1=$!
# shellcheck disable=SC2086
"$LLM" $P --temperature 0 --print-ids --stats-json --quiet --kv-prefix pool >"$T/r2" 2>"$T/e2"
wait $p1 || { cat "$T/e1"; echo "FAIL: racing publisher 1"; fail=1; }
same r1 ref
same r2 ref
"$B/ethermem" kv stats kvt-race >"$T/stats" || { echo "FAIL: ethermem kv stats"; fail=1; }
grep -q "used 12, " "$T/stats" || { cat "$T/stats"; echo "FAIL: a racing prefix stored other than once"; fail=1; }
# shellcheck disable=SC2086
run after $P --kv-prefix pool && same after ref
[ "$(json prefix_hit_tokens)" = 192 ] || { cat "$T/err"; echo "FAIL: after the race: want 192 fetched"; fail=1; }
echo "ok: two publishers at once"

# Corrupted blocks: rejected, recomputed, same ids.
n=$("$TOOL" corrupt kvt-race)
[ "${n:-0}" -ge 12 ] || { echo "FAIL: corrupted $n blocks, want 12"; fail=1; }
# shellcheck disable=SC2086
run bad $P --kv-prefix pool && same bad ref
[ "$(json prefix_hit_tokens)" = 0 ] && [ "$(json prefix_rejected)" = 1 ] || {
	cat "$T/err"; echo "FAIL: corrupted store: want 0 fetched, 1 rejected"; fail=1; }
echo "ok: corrupted blocks rejected and recomputed"

# A store too small for the prompt: eviction, same ids, no errors.
export ETHERMEM_LLM_KV_STORE=kvt-small
# shellcheck disable=SC2086
run s1 $P --kv-prefix pool --kv-store-size 150K && same s1 ref
# shellcheck disable=SC2086
run s2 $P --kv-prefix pool && same s2 ref
[ "$(json prefix_errors)" = 0 ] && [ "$(json prefix_hit_tokens)" -lt 192 ] || {
	cat "$T/err"; echo "FAIL: small store: want a partial hit, no errors"; fail=1; }
"$B/ethermem" kv stats >"$T/stats"
grep "^kvt-small " -A1 "$T/stats" | grep -q "evictions [1-9]" || { cat "$T/stats"; echo "FAIL: small store never evicted"; fail=1; }
grep -q "^kvt-one " "$T/stats" && grep -q "^kvt-race " "$T/stats" && ! grep -q "^llm-gqa.bin " "$T/stats" || {
	cat "$T/stats"; echo "FAIL: ethermem kv stats lists other than the stores"; fail=1; }
echo "ok: a full store evicts; ethermem kv stats lists the stores"

# The store on a second node, which stops answering, then dies. A static
# pool places a named region on its name's home node when it fits there, so
# node A is filled first: the store then fits only on C.
for mb in $(seq 256 -4 4); do
	"$B/ethermem" region create kvt-fill ${mb}M >/dev/null 2>&1 && break
done
"$B/ethermem" region ls | grep -q "^kvt-fill " || { echo "FAIL: could not fill node A"; fail=1; }
start_node C 256M
C_URL=tcp://127.0.0.1:$PORT_C
C_PID=$PID_C
export ETHERMEM_NODES=$A_URL,$C_URL ETHERMEM_LLM_KV_STORE=kvt-two ETHERMEM_TIMEOUT_MS=400
# shellcheck disable=SC2086
run t1 $P --kv-prefix pool --kv-store-size 8M && same t1 ref
# shellcheck disable=SC2086
run t2 $P --kv-prefix pool && same t2 ref
[ "$(json prefix_hit_tokens)" = 192 ] || { cat "$T/err"; echo "FAIL: two nodes: want 192 fetched"; fail=1; }
kill -STOP "$C_PID"
# shellcheck disable=SC2086
run t3 $P --kv-prefix pool && same t3 ref
[ "$(json prefix_errors)" -ge 1 ] || { cat "$T/err"; echo "FAIL: stopped node: no store error seen"; fail=1; }
kill -KILL "$C_PID"
# shellcheck disable=SC2086
run t4 $P --kv-prefix pool && same t4 ref
[ "$(json prefix_errors)" -ge 1 ] || { cat "$T/err"; echo "FAIL: dead node: no store error seen"; fail=1; }
echo "ok: a stopped and a killed store node cost the reuse, not the ids"

kill -0 "$A_PID" 2>/dev/null || { cat "$T/A.log"; echo "FAIL: ethermemd died"; fail=1; }
[ $fail = 0 ] && echo PASS
exit $fail
