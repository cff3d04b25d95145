#!/bin/bash
# bench/run/pool-only.sh CASE [ethermem run options...] - the pool run of one
# quick-corpus case alone, with its fetch trace: bytes fetched against
# Belady's MIN at the run's own unit, faults, written back. For policy work,
# where run.sh's plain and swap runs would triple the time and say nothing
# about the bytes. CASE: linear numpy threads forkpool gcc torchload sort
# sqlite redis threads-full. threads-full is run.sh's full threads case (8 x 32
# MiB beside 128 MiB, a 64 MiB budget). sort is the full corpus's case at a
# smaller size: SORT_MB (default 48) MB of lines through `sort -S 1G
# --parallel=2`, a budget of 5/6 of the text. sqlite is the corpus's case (sqlite.sh) at SQLITE_MB (default 256)
# MiB of database, a budget of a quarter of it, --small-objects. redis is the
# corpus's case (redis.sh) at REDIS_KEYS (default 32768) values of 4 KiB, a
# budget of a quarter of them, a GET and a SET pass of KEYS/8 requests each.
# Example: bench/run/pool-only.sh gcc --fetch-unit 64K
#
# --ref (right after CASE) runs the case a second time with a 1 MiB budget
# and computes MIN at the case's budget over that run's trace too
# ("ideal-ref"). The measured run's trace holds its misses only, so MIN over
# it is a loose lower bound; with a 1 MiB cache nearly every touch of
# another unit is a miss, so the reference run's trace is nearly the whole
# reference stream, and MIN over it is close to the true ideal. It costs a
# run ten or more times slower than the measured one.
# POOL_ONLY_NODE_OPTS adds options to the node (e.g. --poll-us 0).
# Needs build/ (EM_BUILD_DIR), /usr/bin/python3 with numpy and torch, gcc.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
H=$ROOT/bench/run PY=/usr/bin/python3 B=${EM_BUILD_DIR:-$ROOT/build}
[ $# -ge 1 ] || { echo "usage: $0 CASE [--ref] [ethermem run options]" >&2; exit 2; }
c=$1; shift
REF=0
[ "${1:-}" = --ref ] && { REF=1; shift; }
W=$(mktemp -d /var/tmp/ethermem-pool-only.XXXXXX) || exit 1
NP='' OPTS=''
trap '[ -n "$NP" ] && kill $NP 2>/dev/null; wait; rm -rf "$W"' EXIT
case $c in
linear) BUDGET=32M CMD="$PY $H/linear.py 6 2048 3" ;;
numpy) BUDGET=48M CMD="$PY $H/numpy_pipe.py 32" ;;
threads) BUDGET=16M CMD="$PY $H/threads.py 8 4 32" ;;
threads-full) BUDGET=64M CMD="$PY $H/threads.py 8 32 128" ;;
forkpool) n=${FORK_MB:-32}
	BUDGET=$((n / 2))M CMD="$PY $H/forkpool.py $n" ;;
gcc) $PY "$H/gen.py" csource "$W/gen.c" 60 || exit 1
	BUDGET=16M CMD="gcc -O2 -w -c $W/gen.c -o $W/gen.o" ;;
torchload) $PY "$H/torchload.py" save "$W/sd.pt" 6 2048 || exit 1
	BUDGET=32M CMD="$PY $H/torchload.py load $W/sd.pt" ;;
sort) n=${SORT_MB:-48}
	$PY "$H/gen.py" lines "$W/lines.txt" "$n" || exit 1
	BUDGET=$((n * 5 / 6))M CMD="env LC_ALL=C sort -S 1G --parallel=2 -o $W/sorted $W/lines.txt" ;;
sqlite) n=${SQLITE_MB:-256}
	"$H/sqlite.sh" make "$W/db.sqlite" "$n" || exit 1
	BUDGET=$((n / 4))M OPTS=--small-objects CMD="$H/sqlite.sh query $W/db.sqlite $n" ;;
redis) n=${REDIS_KEYS:-32768}
	command -v redis-server >/dev/null || { echo "$0: redis needs redis-server (scripts/deps.sh)" >&2; exit 2; }
	BUDGET=$((n / 1024))M CMD="$H/redis.sh $n $((n / 8))" ;;
*) echo "$0: unknown case '$c'" >&2; exit 2 ;;
esac
echo "pool-only secret $$ $(date +%s%N)" > "$W/secret"
chmod 600 "$W/secret"
# shellcheck disable=SC2086 # POOL_ONLY_NODE_OPTS: more options of the node, split
"$B/ethermemd" --listen tcp://127.0.0.1:0 --capacity 4G --secret-file "$W/secret" ${POOL_ONLY_NODE_OPTS:-} \
	--port-file "$W/port" 2>"$W/node.log" &
NP=$!
for _ in $(seq 200); do [ -s "$W/port" ] && break; sleep 0.05; done
[ -s "$W/port" ] || { cat "$W/node.log" >&2; exit 1; }
export ETHERMEM_NODES=tcp://127.0.0.1:$(cat "$W/port") ETHERMEM_SECRET_FILE=$W/secret OMP_NUM_THREADS=1
t0=$(date +%s.%N)
ETHERMEM_PRELOAD_STATS=1 ETHERMEM_MAP_TRACE=$W/trace \
	/usr/bin/time -o "$W/cpu" -f "%U %S" "$B/ethermem" run --local-mem $BUDGET $OPTS "$@" -- $CMD >"$W/out" 2>"$W/err"
rc=$?
t1=$(date +%s.%N)
# CPU seconds, steadier than wall time on a loaded machine: the program's
# user and system time (the engine's threads included) and the node's
read -r cu cs < "$W/cpu"
ncpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' /proc/$NP/stat)
[ $rc = 0 ] || tail -5 "$W/err" >&2
read -r faults fetched written cleaned waits unchanged prefetched < <(awk '/^ethermem-preload: blocks/ {
	for (i = 2; i < NF; i += 2) v[$i] += $(i + 1) }
	END { printf "%.0f %.0f %.0f %.0f %.0f %.0f %.0f\n", v["faults"], v["fetched"], v["written"], v["cleaned"],
		v["evict-waits"], v["unchanged"], v["prefetched"] }' "$W/err")
# ideal_of PREFIX: MIN's bytes at the budget, summed over the traces
# PREFIX.* (one per process)
ideal_of() {
	local sum=0 t i
	for t in "$1".*; do
		[ -s "$t" ] || continue
		i=$("$B/ethermem-ideal" --cache "$BUDGET" "$t") || return 1
		sum=$((sum + i))
	done
	echo $sum
}
ideal=$(ideal_of "$W/trace") || exit 1
# POOL_ONLY_KEEP=DIR keeps the run's traces and stderr there (with --ref, the
# reference run's too: ref.PID and err.ref, the input of policy_sim.py)
[ -n "${POOL_ONLY_KEEP:-}" ] && { mkdir -p "$POOL_ONLY_KEEP" && cp "$W"/trace.* "$W/err" "$POOL_ONLY_KEEP"/; }
ref=''
if [ $REF = 1 ]; then
	ETHERMEM_MAP_TRACE=$W/ref "$B/ethermem" run --local-mem 1M $OPTS "$@" -- $CMD >"$W/out.ref" 2>"$W/err.ref" ||
		{ tail -5 "$W/err.ref" >&2; exit 1; }
	ref=$(ideal_of "$W/ref") || exit 1
	[ -n "${POOL_ONLY_KEEP:-}" ] && cp "$W"/ref.* "$W/err.ref" "$POOL_ONLY_KEEP"/
fi
echo "$c cpu program user ${cu:-?} s sys ${cs:-?} s node $ncpu s"
awk -v c="$c" -v rc=$rc -v r="$ref" -v a="$t0" -v b="$t1" -v f="$fetched" -v i="$ideal" -v fa="$faults" -v w="$written" -v cl="$cleaned" -v ew="$waits" -v un="$unchanged" -v pf="$prefetched" 'BEGIN {
	printf "%s exit %d %.1f s fetched %.1f MB ideal %.1f MB fetched/ideal %s faults %d written %.1f MB cleaned %.1f MB evict-waits %d unchanged %.1f MB prefetched %.1f MB\n",
		c, rc, b - a, f / 1e6, i / 1e6, (i ? sprintf("%.2f", f / i) : "-"), fa, w / 1e6, cl / 1e6, ew, un / 1e6, pf / 1e6
	if (r != "")
		printf "%s ideal-ref %.1f MB fetched/ideal-ref %s\n", c, r / 1e6, (r ? sprintf("%.2f", f / r) : "-") }'
exit $rc
