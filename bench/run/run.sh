#!/bin/bash
# bench/run/run.sh - ordinary programs under `ethermem run` against the same
# programs with all memory local and under swap, in one run.
#
# The corpus (the programs are in this directory, inputs generated with
# fixed seeds): PyTorch Linear layers run forward three times; a NumPy
# pipeline; eight Python threads sorting beside a shared array; a
# multiprocessing fork pool; GNU sort -S; gcc -O2 -c of a generated C file;
# torch.load of a state dict and a forward pass; Debian's redis-server
# (jemalloc) with 4 KiB values four times the budget, then redis-benchmark
# GET and SET (redis.sh); the sqlite3 CLI scanning a database through a
# page cache larger than the budget, under --small-objects (sqlite.sh).
# Each case has a local-memory
# budget (a third to a half of what it touches) and runs three ways:
#   plain  no limit (the reference output and time)
#   pool   build/ethermem run --local-mem BUDGET, a memory node on loopback,
#          ETHERMEM_PRELOAD_STATS and a fetch trace on
#   swap   a cgroup v1 memory limit of what the pool run held (its peak,
#          sampled, less the page cache of files it read or wrote and does
#          not map), a swap file on. That cache is charged to the cgroup,
#          and a limit that counted it would give the swap run its size
#          again as room for anonymous memory (GNU sort's 192 MB input: a
#          swap run with 2.2 times the pool run's budget), while in the pool
#          run it sits outside the budget.
# Outputs (a digest each program prints) must be identical to plain's; a run
# over the time limit is cut off and reported, never waited on. A line
# "metric NAME VALUE" a case prints on stderr (Redis's requests per second)
# goes into a second table, by mode.
# From the pool run's fetch trace, build/ethermem-ideal computes the fetches
# an optimal offline policy (Belady's MIN) with the same cache would need,
# so the table gives bytes fetched against that floor.
#
# Writes bench/results/run.csv and run.md. Needs root (cgroups, swap, page
# cache drop), the cgroup v1 memory controller, util-linux, /usr/bin/python3
# with numpy and torch, gcc; redis-server and redis-tools, sqlite3 for their
# cases. Exit 0 ok, 1 a failure or a differing output,
# 77 skip. Every exit path kills what it started, swaps off and removes the
# swap file and the cgroups.
set -u

usage() {
	cat <<EOF
usage: bench/run/run.sh [--quick] [--cases "NAME ..."] [--timeout S] [--out DIR]
  --quick        CI size: small inputs, all cases in under 3 minutes on 2 cores
  --cases LIST   a subset of: linear numpy threads forkpool sort gcc torchload
                 redis sqlite
  --timeout S    seconds before a run is cut off (default 60 quick, 300 full)
  --out DIR      results directory (default bench/results)
Environment: EM_BUILD_DIR (default build)
EOF
}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/run
B=${EM_BUILD_DIR:-$ROOT/build}
case $B in /*) ;; *) B=$ROOT/$B ;; esac
QUICK=0 TO='' OUT=$ROOT/bench/results
CASES="linear numpy threads forkpool sort gcc torchload redis sqlite"
PY=/usr/bin/python3
while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--cases) CASES=$2; shift ;;
	--timeout) TO=$2; shift ;;
	--out) OUT=$2; shift ;;
	-h|--help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
if [ -z "$TO" ]; then
	TO=300
	[ $QUICK = 1 ] && TO=60
fi

BENCH=run
. "$ROOT/bench/lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root (cgroups, swap, drop_caches)"
[ -w /sys/fs/cgroup/memory/cgroup.procs ] || skip "no cgroup v1 memory controller at /sys/fs/cgroup/memory"
$PY -c 'import numpy, torch' 2>/dev/null || skip "$PY has no numpy or torch (Debian: python3-numpy python3-torch)"
for t in ethermemd ethermem ethermem-ideal libethermem-preload.so; do
	[ -e "$B/$t" ] || die "$B/$t not built (make, or set EM_BUILD_DIR)"
done
for t in timeout mkswap swapon swapoff fallocate gcc sort sha256sum awk cmp; do
	command -v $t >/dev/null || die "needs $t"
done

# ---- everything we create, and its removal on every exit path -------------
bench_setup
mkdir -p "$OUT" || die "cannot create $OUT"

# ---- the cases: NAME -> budget, setup and command ------------------------
# case_def NAME sets BUDGET (local memory), SETUP (run once, plainly, to make
# inputs in $WORK), CMD (the measured command; what it prints is compared)
# and FLAGS (more options for `ethermem run`).
case_def() {
	local q=$QUICK n
	SETUP='' FLAGS=''
	case $1 in
	linear) # Linear layers of 4 B x DIM^2 each; 6 x 4096 is 384 MiB
		if [ $q = 1 ]; then BUDGET=32M CMD="$PY $HERE/linear.py 6 2048 3"
		else BUDGET=128M CMD="$PY $HERE/linear.py 6 4096 3"; fi ;;
	numpy) # three arrays of the given MiB
		if [ $q = 1 ]; then BUDGET=48M CMD="$PY $HERE/numpy_pipe.py 32"
		else BUDGET=192M CMD="$PY $HERE/numpy_pipe.py 192"; fi ;;
	threads) # 8 threads x MiB sorted each, and the shared MiB
		if [ $q = 1 ]; then BUDGET=16M CMD="$PY $HERE/threads.py 8 4 32"
		else BUDGET=64M CMD="$PY $HERE/threads.py 8 32 128"; fi ;;
	forkpool)
		if [ $q = 1 ]; then BUDGET=16M CMD="$PY $HERE/forkpool.py 32"
		else BUDGET=64M CMD="$PY $HERE/forkpool.py 128"; fi ;;
	sort) # MB of text; sort's buffer (-S) holds it all. Its line pointers
		# are sorted by comparing lines all over the buffer: 64 KiB units
		# for what are random accesses, so quick mode's budget holds most
		n=16; [ $q = 1 ] || n=192
		SETUP="$PY $HERE/gen.py lines $WORK/lines-$n.txt $n"
		BUDGET=$((n * 5 / 6))M
		[ $q = 1 ] && BUDGET=32M
		CMD="sh -c 'LC_ALL=C sort -S 1G --parallel=2 \"\$0\" | sha256sum' $WORK/lines-$n.txt" ;;
	gcc) # KB of generated C
		n=60; [ $q = 1 ] || n=400
		SETUP="$PY $HERE/gen.py csource $WORK/gen-$n.c $n"
		BUDGET=16M; [ $q = 1 ] || BUDGET=64M
		CMD="sh -c 'gcc -O2 -w -c \"\$0\" -o \"\$0.o\" && sha256sum < \"\$0.o\"' $WORK/gen-$n.c" ;;
	torchload)
		n=2048; [ $q = 1 ] || n=4096
		SETUP="$PY $HERE/torchload.py save $WORK/sd-$n.pt 6 $n"
		BUDGET=32M; [ $q = 1 ] || BUDGET=128M
		CMD="$PY $HERE/torchload.py load $WORK/sd-$n.pt" ;;
	redis) # keys of 4 KiB values (4x the budget), requests per benchmark
		command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null ||
			die "redis: needs redis-server and redis-tools (scripts/deps.sh)"
		if [ $q = 1 ]; then BUDGET=4M CMD="$HERE/redis.sh 4096 500"
		else BUDGET=128M CMD="$HERE/redis.sh 131072 10000"; fi ;;
	sqlite) # a database of MiB, scanned through a page cache of twice that
		command -v sqlite3 >/dev/null || die "sqlite: needs sqlite3 (scripts/deps.sh)"
		# full: 512 MiB and a quarter of it, not the 2 GiB the case began
		# with: its lookups are one random page each, a fault apiece under
		# the pool and a swap-in under swap, so at 2 GiB (512000 lookups,
		# a page cache of 2.6 GB in the arena) neither the pool run nor the
		# swap run ends within 300 s on two loaded cores (BENCHMARKS.md;
		# quiet, with the swap limit at the pool run's memory, 120 s and 229 s).
		# Still a database four times the budget and a page cache larger
		# than both.
		# SQLITE_MB (full mode) another size, the budget a quarter of it
		n=16; [ $q = 1 ] || n=${SQLITE_MB:-512}
		SETUP="$HERE/sqlite.sh make $WORK/db-$n.sqlite $n"
		BUDGET=4M; [ $q = 1 ] || BUDGET=$((n / 4))M
		FLAGS=--small-objects
		CMD="$HERE/sqlite.sh query $WORK/db-$n.sqlite $n" ;;
	*) die "unknown case '$1'" ;;
	esac
}

# ---- the memory node, on loopback, outside the cgroups --------------------
node_start 8G 127.0.0.1
unset ETHERMEM_MAP_CACHE ETHERMEM_MAP_TRACE ETHERMEM_PRELOAD_STATS NUMPY_MADVISE_HUGEPAGE
export OMP_NUM_THREADS=1 # one BLAS thread in every mode: the same sums, the same order

# own_peak CGROUP PID: while PID lives, samples every 50 ms the cgroup's
# usage besides the page cache of files nobody maps (read(2) and write(2)
# data); prints the most of that, and the most such cache seen. Builtins
# only but sleep, so it costs little.
own_peak() {
	local cg=$1 pid=$2 max=0 cmax=0 u f m k v
	while kill -0 "$pid" 2>/dev/null; do
		read -r u < "$cg/memory.usage_in_bytes" || break
		f=0 m=0
		while read -r k v; do
			case $k in
			total_active_file|total_inactive_file) f=$((f + v)) ;;
			total_mapped_file) m=$v ;;
			esac
		done < "$cg/memory.stat"
		f=$((f > m ? f - m : 0))
		u=$((u - f))
		[ $u -gt $max ] && max=$u
		[ $f -gt $cmax ] && cmax=$f
		sleep 0.05
	done
	echo $max $cmax
}

# run_in MODE LIMIT [VAR=VALUE... [PREFIX...]]: runs $CMD, after PREFIX, in
# a fresh cgroup (limited to LIMIT bytes, or not for 0) under the time
# limit, page cache dropped; sets RC, WALL, PEAK and OWN; output in
# $WORK/out.MODE, stderr in $WORK/err.MODE. OWN, the peak without unmapped
# page cache, is the larger of two lower bounds: the most sampled, which
# can miss a short peak, and PEAK less the most such cache sampled.
NRUN=0
run_in() {
	local mode=$1 limit=$2 cg t0
	shift 2
	NRUN=$((NRUN + 1))
	cg=$CGROOT/r$NRUN
	mkdir "$cg" || die "mkdir $cg"
	if [ "$limit" != 0 ]; then
		echo "$limit" > "$cg/memory.limit_in_bytes" || die "setting the limit of $cg"
		# reclaim must swap rather than kill at a limit this tight
		echo 1 > "$cg/memory.oom_control"
	fi
	sync
	echo 3 > /proc/sys/vm/drop_caches
	t0=$(date +%s.%N)
	env "$@" timeout -s KILL "$TO" sh -c 'echo $$ > "$1/cgroup.procs" && eval "exec $2"' \
		sh "$cg" "$CMD" >"$WORK/out.$mode" 2>"$WORK/err.$mode" &
	RUN_PID=$!
	own_peak "$cg" $RUN_PID > "$WORK/own.$mode" &
	local sampler=$!
	wait $RUN_PID 2>/dev/null
	RC=$?
	RUN_PID=''
	WALL=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
	wait $sampler 2>/dev/null
	PEAK=$(cat "$cg/memory.max_usage_in_bytes" 2>/dev/null || echo 0)
	local own=0 cmax=0
	read -r own cmax < "$WORK/own.$mode"
	OWN=$((PEAK - ${cmax:-0}))
	[ "${own:-0}" -gt "$OWN" ] && OWN=$own
	[ "$OWN" -gt "$PEAK" ] && OWN=$PEAK
	for _ in $(seq 20); do rmdir "$cg" 2>/dev/null && break; sleep 0.2; done
}

# status MODE: ok, differs (output not plain's), cut (time limit) or error
status() {
	if [ "$RC" = 137 ] && awk -v w="$WALL" -v t="$TO" 'BEGIN { exit !(w >= t - 1) }'; then
		echo cut
	elif [ "$RC" != 0 ] || [ ! -s "$WORK/out.$1" ]; then
		echo error
	elif [ "$1" != plain ] && [ "${PLAIN_CUT:-0}" = 1 ]; then
		echo unchecked
	elif ! cmp -s "$WORK/out.$1" "$WORK/out.plain"; then
		echo differs
	else
		echo ok
	fi
}

CSV=$WORK/run.csv
echo "case,budget_bytes,plain_s,pool_s,swap_s,pool_status,swap_status,pool_x_plain,swap_over_pool,fetched_bytes,ideal_bytes,fetched_over_ideal,faults,written_bytes,pool_peak_bytes,swap_limit_bytes,plain_peak_bytes,pool_footprint_bytes,plain_cut,unchanged_bytes,plain_own_peak_bytes,pool_own_peak_bytes" > "$CSV"
FAILED=0
START=$(date +%s)
for c in $CASES; do
	case_def "$c"
	budget=$(bytes "$BUDGET")
	if [ -n "$SETUP" ]; then
		eval "$SETUP" || die "$c: setup failed"
	fi
	run_in plain 0
	plain_peak=$PEAK plain_own=$OWN
	# a plain run over the time limit (the full corpus on a loaded
	# machine) leaves nothing to compare with, but the pool and swap runs
	# still say what they fetched and how long they took: their outputs
	# are then reported unchecked, and the next case goes on
	PLAIN_CUT=0
	if [ "$(status plain)" = cut ]; then
		PLAIN_CUT=1
		say "$c: the plain run was cut off at $TO s: outputs not compared"
	elif [ "$RC" != 0 ] || [ ! -s "$WORK/out.plain" ]; then
		tail -5 "$WORK/err.plain" >&2
		die "$c: the plain run failed (exit $RC)"
	fi
	plain_s=$WALL
	rm -f "$WORK"/trace.*
	# the pool run: `ethermem run` is the front of the command
	# shellcheck disable=SC2086
	run_in pool 0 ETHERMEM_PRELOAD_STATS=1 ETHERMEM_MAP_TRACE="$WORK/trace" \
		"$B/ethermem" run --local-mem "$BUDGET" $FLAGS --
	pool_rc=$RC pool_s=$WALL pool_peak=$PEAK pool_own=$OWN pst=$(status pool)
	# every process of the run prints its line: the run's figures are their sums
	read -r faults fetched written unchanged < <(awk '/^ethermem-preload: blocks/ {
		for (i = 2; i < NF; i += 2) v[$i] += $(i + 1) }
		END { printf "%.0f %.0f %.0f %.0f\n", v["faults"], v["fetched"], v["written"], v["unchanged"] }' "$WORK/err.pool")
	ideal=0 foot=0
	for t in "$WORK"/trace.*; do
		[ -s "$t" ] || continue
		{ read -r i; read -r d; } < <("$B/ethermem-ideal" --cache "$budget" --distinct "$t") ||
			die "ethermem-ideal $t failed"
		ideal=$((ideal + i)) foot=$((foot + d))
	done
	# the same local memory as the pool run held: its cache, the
	# program's memory outside the pool and the engine's own, page cache
	# aside (own_peak). What plain used outside the pool plus the budget
	# leaves the engine out, and the 32 MiB floor that formula needed gave
	# GNU sort room for all its text where the pool run had 160 MiB of it
	limit=$pool_own
	[ "$limit" -lt "$budget" ] && limit=$budget
	swap_on 4G
	run_in swap "$limit"
	swap_s=$WALL sst=$(status swap)
	swap_off
	for m in plain pool swap; do
		awk -v c="$c" -v m="$m" '/^metric [a-z_]+ [0-9.]+$/ { print c "," m "," $2 "," $3 }' \
			"$WORK/err.$m" >> "$WORK/metrics.csv"
	done
	for s in "$pst" "$sst"; do case $s in differs|error) FAILED=1 ;; esac; done
	if [ "$pst" != ok ]; then say "$c pool: $pst (exit $pool_rc)"; tail -5 "$WORK/err.pool" >&2; fi
	case $sst in ok|cut) ;; *) say "$c swap: $sst (exit $RC)"; tail -5 "$WORK/err.swap" >&2 ;; esac
	row=$(awk -v c="$c" -v b="$budget" -v p="$plain_s" -v q="$pool_s" -v s="$swap_s" \
		-v pst="$pst" -v sst="$sst" -v f="$fetched" -v i="$ideal" -v fa="$faults" -v w="$written" \
		-v pk="$pool_peak" -v pc="$PLAIN_CUT" -v l="$limit" -v pp="$plain_peak" -v ft="$foot" -v un="$unchanged" -v po="$plain_own" -v qo="$pool_own" 'BEGIN {
		r = sprintf("%.2f", s / q)
		so = ""
		if (sst == "ok") so = r
		if (sst == "cut") so = ">" r
		fi = ""
		if (i > 0) fi = sprintf("%.2f", f / i)
		printf "%s,%s,%s,%s,%s,%s,%s,%.2f,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n", c, b, p, q, s, pst, sst,
			q / p, so, f, i, fi, fa, w, pk, l, pp, ft, pc, un, po, qo }')
	echo "$row" >> "$CSV"
	say "$row"
done
ELAPSED=$(($(date +%s) - START))

cp "$CSV" "$OUT/run.csv"
{
	echo "# Ordinary programs over the pool: $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "Command: \`bench/run/run.sh$([ $QUICK = 1 ] && echo " --quick") --timeout $TO\` ($(getconf _NPROCESSORS_ONLN) cores, node on loopback, $ELAPSED s)."
	echo "pool: \`ethermem run --local-mem BUDGET\`; swap: a cgroup v1 limit of the pool run's peak without unmapped page cache, a swap file;"
	echo "ideal: Belady's MIN over the pool run's fetch trace with the same cache (hits are invisible to the trace,"
	echo "so it is a lower bound of the true ideal, and fetched / ideal an upper bound)."
	echo
	echo "| program | budget | swap limit | plain s | pool s | pool / plain | swap s | swap / pool | fetched MB | ideal MB | fetched / ideal | faults | written MB | unchanged MB | output |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
	# a pool run that was cut printed no statistics (they are written at
	# exit) and its time is a lower bound: its ratios are bounds, its
	# counts unknown; its ideal is MIN over the part of the trace written
	awk -F, 'NR > 1 {
		cut = $6 != "ok"
		so = $9
		if ($6 == "cut") so = ($7 == "ok" ? "<" $9 : "-")
		printf "| %s | %d MiB | %d MiB | %s | %s | %s | %s | %s | %s | %.1f | %s | %s | %s | %s | %s |\n",
			$1, $2 / 1048576, $16 / 1048576, ($19 == 1 ? ">" $3 : $3), ($6 == "cut" ? ">" $4 : $4),
			($6 == "cut" ? ">" $8 : $8), ($7 == "cut" ? ">" $5 : $5), so,
			(cut ? "n/a" : sprintf("%.1f", $10 / 1e6)), $11 / 1e6, (cut ? "n/a" : $12),
			(cut ? "n/a" : $13), (cut ? "n/a" : sprintf("%.1f", $14 / 1e6)),
			(cut ? "n/a" : sprintf("%.1f", $20 / 1e6)),
			($6 == "ok" ? "same" : "pool " $6) ($7 == "ok" || $7 == "cut" ? "" : ", swap " $7) }' "$CSV"
	if [ -s "$WORK/metrics.csv" ]; then
		echo
		echo "What the cases measure themselves (metric lines), by mode:"
		echo
		echo "| program | metric | plain | pool | swap |"
		echo "|---|---|---|---|---|"
		awk -F, '{ k = $1 "|" $3; if (!(k in seen)) { seen[k] = 1; o[++n] = k } v[k "|" $2] = $4 }
			END { for (i = 1; i <= n; i++) { split(o[i], a, "|")
				printf "| %s | %s | %s | %s | %s |\n", a[1], a[2], v[o[i] "|plain"], v[o[i] "|pool"], v[o[i] "|swap"] } }' \
			"$WORK/metrics.csv"
	fi
} > "$OUT/run.md"
cat "$OUT/run.md"
[ $FAILED = 0 ] || { say "a run failed or its output differed"; exit 1; }
