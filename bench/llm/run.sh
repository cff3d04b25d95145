#!/bin/bash
# bench/llm/run.sh - LLM and MoE inference when the model does not fit: the
# weights from disk (mmap under a memory limit), from swap, and from the pool
# (transparent mapping and explicit streaming), against all-local, in one run.
#
# Why a script and not a C command: every baseline needs the machine set up
# around the engine (a cgroup v1 memory limit, dropped page cache, a swap
# file, a memory node in its own network namespace), and the engine itself
# (build/ethermem-llm) already reports everything per run as one JSON line.
# The script only arranges, times out, compares and tabulates.
#
# For each model (dense and MoE of about the same size; MoE routed by the
# seeded Zipf override) and each local-memory ratio R in 100%, 50%, 25%:
#   local        weights read into RAM (the all-local reference; R = 100% only,
#                the better of two runs)
#   mmap         mmap of the checkpoint, cgroup limit S*R + allowance, caches dropped
#   swap         --weights local, same limit, a swap file on
#   pool-map     em_map of the imported region, cache S*R, same cgroup limit
#   pool-stream  streaming from the region, --local-mem S*R, same cgroup limit
# Each run is one process with a time limit; one that overruns is cut off and
# reported as such (tok_s 0, ids_match NA, "cut off" in the table).  Every
# completed run's greedy ids must equal the all-local ids (exit 1 otherwise).
# Memory nodes run outside the compute cgroup: on loopback in --quick mode,
# in their own network namespace over a veth pair otherwise.
#
# Writes bench/results/llm.csv (the fixed interface columns), llm-detail.csv
# (also expert cold-load times, hits, wall time, peak memory), llm.md and,
# when gnuplot is installed, llm.png.  Models are generated once into
# $ETHERMEM_MODELS_DIR (default /var/tmp/ethermem-models), never the repo.
# Every exit path kills what it started, swaps off and removes the swap file,
# removes the cgroups, the namespace and the veth pair.
#
# Needs root, the cgroup v1 memory controller, iproute2, util-linux
# (mkswap, swapon, fallocate), coreutils timeout; gnuplot (Debian
# gnuplot-nox) for the chart.  Exit 0 ok, 1 failure or id mismatch, 77 skip.
set -u

usage() {
	cat <<EOF
usage: bench/llm/run.sh [--quick] [options]
  --quick            CI smoke run: smaller steps and time limits, node on loopback
  --size SIZE        model size for both models (default 512M quick, 2G full)
  --steps N          tokens per run, dense (default 6 quick, 24 full); MoE runs 2N
  --swap-steps N     tokens per swap run, at most the above (default 3 quick, 6 full): swap at
                     50% takes seconds per token, and ids are compared as a prefix
  --timeout S        seconds before a run is cut off (default 45 quick, 180 full)
  --ratios "1 0.5 0.25"  local-memory ratios
  --backends "local mmap swap pool-map pool-stream"
  --kinds "dense moe"
  --loopback | --netns   where the memory node runs (default: loopback quick, netns full)
  --allowance SIZE   memory for the engine itself on top of S*R (default 64M)
  --mtu N            MTU of the veth pair with --netns (default 9000)
  --out DIR          results directory (default bench/results)
Environment: EM_BUILD_DIR (default build), ETHERMEM_MODELS_DIR (default /var/tmp/ethermem-models)
EOF
}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${EM_BUILD_DIR:-$ROOT/build}
case $B in /*) ;; *) B=$ROOT/$B ;; esac
MODELS=${ETHERMEM_MODELS_DIR:-/var/tmp/ethermem-models}
QUICK=0 SIZE='' STEPS='' SWAP_STEPS='' TO='' NET='' OUT=$ROOT/bench/results
RATIOS="1 0.5 0.25"
BACKENDS="local mmap swap pool-map pool-stream"
KINDS="dense moe"
ALLOW=64M
MTU=9000
ROUTER="--router zipf --router-seed 7"
while [ $# -gt 0 ]; do
	case $1 in
	--quick) QUICK=1 ;;
	--size) SIZE=$2; shift ;;
	--steps) STEPS=$2; shift ;;
	--swap-steps) SWAP_STEPS=$2; shift ;;
	--timeout) TO=$2; shift ;;
	--ratios) RATIOS=$2; shift ;;
	--backends) BACKENDS=$2; shift ;;
	--kinds) KINDS=$2; shift ;;
	--loopback) NET=loopback ;;
	--netns) NET=netns ;;
	--allowance) ALLOW=$2; shift ;;
	--mtu) MTU=$2; shift ;;
	--out) OUT=$2; shift ;;
	-h|--help) usage; exit 0 ;;
	*) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
if [ $QUICK = 1 ]; then
	: "${SIZE:=512M}" "${STEPS:=6}" "${SWAP_STEPS:=3}" "${TO:=45}" "${NET:=loopback}"
else
	: "${SIZE:=2G}" "${STEPS:=24}" "${SWAP_STEPS:=6}" "${TO:=180}" "${NET:=netns}"
fi

BENCH=llm
. "$ROOT/bench/lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root (cgroups, swap, drop_caches, namespaces)"
[ -w /sys/fs/cgroup/memory/cgroup.procs ] || skip "no cgroup v1 memory controller at /sys/fs/cgroup/memory"
for t in ethermem-llm ethermem-llm-gen ethermemd ethermem; do
	[ -x "$B/$t" ] || die "$B/$t not built (make, or set EM_BUILD_DIR)"
done
"$B/ethermem-llm" --help | grep -q "Pool backend: not built" && die "$B/ethermem-llm has no pool backend linked"
for t in timeout mkswap swapon swapoff fallocate ip awk; do
	command -v $t >/dev/null || die "needs $t (Debian: coreutils, util-linux, iproute2, gawk/mawk)"
done

ALLOW_B=$(bytes "$ALLOW")

# ---- everything we create, and its removal on every exit path ----------
bench_setup
NS=emllm$ID
VETH=emv$ID
bench_cleanup_more() {
	ip link del "${VETH}a" 2>/dev/null
	ip netns del "$NS" 2>/dev/null
}
mkdir -p "$MODELS" "$OUT" || die "cannot create $MODELS or $OUT"

# ---- models --------------------------------------------------------------
# model_path KIND: generated once per size and kind, reused across runs.
model_path() { echo "$MODELS/$1-$SIZE.bin"; }
for k in $KINDS; do
	m=$(model_path "$k")
	[ -s "$m" ] && continue
	say "generating $m"
	if [ "$k" = moe ]; then
		"$B/ethermem-llm-gen" --out "$m" --size "$SIZE" --experts 8 --topk 2 --seed 2 >&2 || die "generating $m"
	else
		"$B/ethermem-llm-gen" --out "$m" --size "$SIZE" --seed 1 >&2 || die "generating $m"
	fi
done

# ---- the memory node, outside the compute cgroup ---------------------------
echo "bench-llm secret $ID $(date +%s%N)" > "$WORK/secret"
chmod 600 "$WORK/secret"
TOTAL=0
for k in $KINDS; do TOTAL=$((TOTAL + $(stat -c %s "$(model_path "$k")"))); done
CAP=$(( (TOTAL + (1 << 30)) >> 20 ))M
if [ "$NET" = netns ]; then
	# A /24 of 10.x.y.0 from our pid, so that runs beside ours do not collide.
	SUB=10.$((200 + ID % 50)).$(((ID / 50) % 250))
	ip netns add "$NS" || die "ip netns add"
	ip link add "${VETH}a" type veth peer name "${VETH}b" || die "ip link add veth"
	ip link set "${VETH}b" netns "$NS" || die "moving veth into $NS"
	ip addr add "$SUB.1/24" dev "${VETH}a"
	ip link set "${VETH}a" mtu "$MTU" up
	ip netns exec "$NS" ip addr add "$SUB.2/24" dev "${VETH}b"
	ip netns exec "$NS" ip link set "${VETH}b" mtu "$MTU" up
	ip netns exec "$NS" ip link set lo up
	node_start "$CAP" "$SUB.2" ip netns exec "$NS"
else
	node_start "$CAP" 127.0.0.1
fi
unset ETHERMEM_LLM_REGION ETHERMEM_MAP_CACHE
say "memory node $ETHERMEM_NODES ($NET), capacity $CAP"
for k in $KINDS; do
	m=$(model_path "$k")
	t0=$(date +%s.%N)
	"$B/ethermem" import "$m" "llm-$(basename "$m")" || die "importing $m into the pool"
	say "imported $(basename "$m") in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"
done

# ---- one measured run ---------------------------------------------------------
# jget FILE KEY: a number from the engine's JSON line.
jget() { sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" "$1" | tail -1; }

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

CSV=$WORK/llm.csv
DET=$WORK/llm-detail.csv
echo "model,kind,ratio,backend,tok_s,ms_p50,ms_p95,bytes_per_token,faults_per_token,ids_match" > "$CSV"
echo "model,kind,ratio,backend,status,tok_s,ms_p50,ms_p95,bytes_per_token,faults_per_token,ids_match,model_bytes,hot_bytes_per_token,expert_cold_ms_p50,expert_cold_ms_p95,expert_hits,expert_misses,wall_s,limit_bytes,peak_bytes,steps" > "$DET"
NRUN=0
MISMATCH=0
FAILED=0

# engine_once: one run of the engine with $args and $env, in a fresh cgroup
# of $limit bytes (swap on for the swap backend, off otherwise), caches
# dropped; sets RC, WALL (seconds) and PEAK (the cgroup's peak bytes).
engine_once() {
	local cg t0
	NRUN=$((NRUN + 1))
	cg=$CGROOT/r$NRUN
	mkdir "$cg" || die "mkdir $cg"
	echo "$limit" > "$cg/memory.limit_in_bytes" || die "setting the limit of $cg"
	if [ "$be" = swap ]; then
		swap_on "$((size + (512 << 20)))"
		# Reclaim must be allowed to swap rather than kill: the OOM killer
		# fires while swap-out is still in progress at limits this tight.
		echo 1 > "$cg/memory.oom_control"
	else
		swap_off
	fi
	drop_caches
	t0=$(date +%s.%N)
	# shellcheck disable=SC2086
	env $env timeout -s KILL "$TO" sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' \
		sh "$cg" "$B/ethermem-llm" $args >"$WORK/ids" 2>"$WORK/err" &
	RUN_PID=$!
	wait $RUN_PID 2>/dev/null # no "Killed" line from the shell: the status says it
	RC=$?
	RUN_PID=
	WALL=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
	PEAK=$(cat "$cg/memory.max_usage_in_bytes" 2>/dev/null || echo 0)
	for _ in 1 2 3 4 5 6 7 8 9 10; do rmdir "$cg" 2>/dev/null && break; sleep 0.2; done
}

# run_one MODEL KIND RATIO BACKEND
run_one() {
	local m=$1 kind=$2 r=$3 be=$4 n size budget limit args env status rc wall ids match peak w1 p1
	local name; name=$(basename "$m" .bin)
	size=$(stat -c %s "$m")
	budget=$(awk -v s="$size" -v r="$r" 'BEGIN { printf "%.0f\n", s * r }')
	limit=$((budget + ALLOW_B))
	n=$STEPS
	[ "$kind" = moe ] && n=$((2 * STEPS))
	[ "$be" = swap ] && [ "$SWAP_STEPS" -lt "$n" ] && n=$SWAP_STEPS
	args="--model $m --steps $n --temperature 0 --print-ids --quiet --stats-json"
	[ "$kind" = moe ] && args="$args $ROUTER"
	env=
	case $be in
	local|swap) args="$args --weights local" ;;
	mmap) args="$args --weights mmap" ;;
	# The cache rounded up to whole 2 MiB fetch units: at 100% the last,
	# partial unit of the model must fit too.
	pool-map) args="$args --weights pool --local-mem $(( (budget + (2 << 20) - 1) / (2 << 20) * (2 << 20) ))" ;;
	pool-stream) args="$args --weights stream --stream-from pool --local-mem $budget" ;;
	esac
	engine_once
	# The all-local reference is the better of two runs: on a shared
	# machine one unlucky reference would flatter every ratio against it.
	if [ "$be" = local ] && [ "$RC" = 0 ]; then
		mv "$WORK/ids" "$WORK/ids.1"; mv "$WORK/err" "$WORK/err.1"
		w1=$WALL p1=$PEAK
		engine_once
		if [ "$RC" != 0 ] || [ "$(awk -v a="$(jget "$WORK/err.1" tok_s)" -v b="$(jget "$WORK/err" tok_s)" \
				'BEGIN { print (a + 0 >= b + 0) }')" = 1 ]; then
			mv "$WORK/ids.1" "$WORK/ids"; mv "$WORK/err.1" "$WORK/err"
			RC=0 WALL=$w1 PEAK=$p1
		fi
	fi
	rc=$RC wall=$WALL peak=$PEAK
	ids=$(cat "$WORK/ids")
	if grep -q '"tok_s"' "$WORK/err" && [ $rc = 0 ]; then
		status=ok
	elif [ $rc = 137 ] && [ "$(awk -v w="$wall" -v t="$TO" 'BEGIN { print (w >= t - 1) }')" = 1 ]; then
		status=cutoff # the time limit: reported, not waited on
	elif [ $rc = 137 ]; then
		status=killed # SIGKILL before the limit: the cgroup's OOM killer
	else
		status=error
	fi
	if [ $status = ok ]; then
		if [ "$be" = local ] && [ "$r" = 1 ]; then
			REF=$ids
		fi
		# A shorter run must print the reference's first n ids.
		if [ -n "$ids" ] && [ "$ids" = "$(echo "$REF" | cut -d' ' -f1-"$n")" ]; then
			match=1
		else
			match=0
			MISMATCH=1
		fi
		printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$name" "$kind" "$r" "$be" \
			"$(jget "$WORK/err" tok_s)" "$(jget "$WORK/err" ms_p50)" "$(jget "$WORK/err" ms_p95)" \
			"$(jget "$WORK/err" bytes_per_token)" "$(jget "$WORK/err" faults_per_token)" "$match" >> "$CSV"
		printf '%s,%s,%s,%s,ok,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$name" "$kind" "$r" "$be" \
			"$(jget "$WORK/err" tok_s)" "$(jget "$WORK/err" ms_p50)" "$(jget "$WORK/err" ms_p95)" \
			"$(jget "$WORK/err" bytes_per_token)" "$(jget "$WORK/err" faults_per_token)" "$match" \
			"$size" "$(jget "$WORK/err" hot_bytes_per_token)" \
			"$(jget "$WORK/err" expert_cold_ms_p50)" "$(jget "$WORK/err" expert_cold_ms_p95)" \
			"$(jget "$WORK/err" expert_hits)" "$(jget "$WORK/err" expert_misses)" "$wall" "$limit" "$peak" "$n" >> "$DET"
		say "$(printf '%-6s %-5s %-4s %-11s %8s tok/s  p50 %9s ms  ids %s  (%s s)' "$kind" "$SIZE" "$r" "$be" \
			"$(jget "$WORK/err" tok_s)" "$(jget "$WORK/err" ms_p50)" "$match" "$wall")"
	else
		case $status in error|killed)
			FAILED=1; say "$be at $r on $name: $status (exit $rc):"; tail -5 "$WORK/err" >&2 ;;
		esac
		[ "$be" = local ] && [ "$r" = 1 ] && die "the all-local reference run failed"
		printf '%s,%s,%s,%s,0,,,,,NA\n' "$name" "$kind" "$r" "$be" >> "$CSV"
		printf '%s,%s,%s,%s,%s,0,,,,,NA,%s,,,,,,%s,%s,%s,%s\n' "$name" "$kind" "$r" "$be" "$status" \
			"$size" "$wall" "$limit" "$peak" "$n" >> "$DET"
		say "$(printf '%-6s %-5s %-4s %-11s %s after %s s (limit %s s)' "$kind" "$SIZE" "$r" "$be" "$status" "$wall" "$TO")"
	fi
}

START=$(date +%s)
for k in $KINDS; do
	m=$(model_path "$k")
	REF=
	# The reference first: every other run is compared with its ids.
	run_one "$m" "$k" 1 local
	for r in $RATIOS; do
		for be in $BACKENDS; do
			[ "$be" = local ] && continue
			run_one "$m" "$k" "$r" "$be"
		done
	done
done
swap_off
ELAPSED=$(($(date +%s) - START))

# ---- tables and chart -----------------------------------------------------
cp "$CSV" "$OUT/llm.csv"
cp "$DET" "$OUT/llm-detail.csv"
CMDLINE="bench/llm/run.sh$([ $QUICK = 1 ] && echo " --quick") --size $SIZE --steps $STEPS --swap-steps $SWAP_STEPS --timeout $TO --$NET"
{
	echo "# LLM inference over the pool: $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "Command: \`$CMDLINE\` ($(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), node on $NET, $ELAPSED s)."
	echo "Limit per run: model size x ratio + $ALLOW (cgroup v1), page cache dropped before each run;"
	echo "MoE routed by the Zipf override (\`$ROUTER\`). Greedy tokens per run (the first, cold, one included):"
	echo "$STEPS dense, $((2 * STEPS)) MoE, $SWAP_STEPS for swap (its ids compared as a prefix). A run over $TO s, loading included, is cut off."
	echo
	echo "| model | ratio | backend | tok/s | x local | ms/token p50 | p95 | MB from backing tier / token | faults / token | expert cold-load ms p50 / p95 | ids |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|"
	awk -F, -v TO="$TO" 'NR > 1 {
		if ($4 == "local" && $3 == 1) ref[$1] = $6
		row[NR] = $0
	} END {
		for (i = 2; i <= NR; i++) {
			split(row[i], f, ",")
			pct = (f[3] * 100) "%"
			if (f[5] != "ok") {
				what = f[5] == "cutoff" ? ("cut off after " TO " s") : f[5]
				printf "| %s | %s | %s | %s | | | | | | | |\n", f[1], pct, f[4], what
				continue
			}
			cold = ""
			if (f[2] == "moe" && f[4] != "local" && f[17] > 0)
				cold = sprintf("%.2f / %.2f", f[14], f[15])
			x = ref[f[1]] > 0 ? f[6] / ref[f[1]] : 0
			printf "| %s | %s | %s | %.2f | %.2f | %.1f | %.1f | %.0f | %.1f | %s | %s |\n", f[1], pct, f[4], \
				f[6], x, f[7], f[8], f[9] / 1048576, f[10], cold, \
				f[11] == 1 ? "same" : "DIFFER"
		}
	}' "$DET"
	echo
	echo "Goals of issue 5, judged from this run (bench/llm/goals.sh):"
	echo
	"$ROOT/bench/llm/goals.sh" "$DET" "$TO"
} > "$OUT/llm.md"

if command -v gnuplot >/dev/null; then
	# One data block per model: rows backends, columns ratios (tok/s; cut-off
	# runs plotted at 0, which a log axis leaves out).
	awk -F, 'NR > 1 && $4 != "local" { v[$1, $4, $3] = $6 + 0 }
		NR > 1 && $4 == "local" { loc[$1] = $6 + 0; order[++nm] = $1 }
		END {
			for (i = 1; i <= nm; i++) {
				m = order[i]
				if (i > 1) printf "\n\n"
				# "#" lines are the titles; all-local only at 100%
				printf "# %s\n", m
				printf "local %g 0 0\n", loc[m]
				split("mmap swap pool-map pool-stream", bs, " ")
				for (j = 1; j <= 4; j++)
					printf "%s %g %g %g\n", bs[j], v[m, bs[j], 1], v[m, bs[j], 0.5], v[m, bs[j], 0.25]
			}
		}' "$DET" > "$WORK/chart.dat"
	NM=$(grep -c '^# ' "$WORK/chart.dat")
	TITLES=$(grep '^# ' "$WORK/chart.dat" | sed 's/^# //' | tr '\n' ' ')
	if echo 'set terminal' | gnuplot 2>&1 | grep -q pngcairo; then
		TERMINAL="pngcairo size $((720 * NM)),480 noenhanced"
	else
		TERMINAL="png size $((720 * NM)),480 noenhanced"
	fi
	gnuplot <<EOF 2>"$WORK/gnuplot.err" || say "gnuplot failed: $(cat "$WORK/gnuplot.err")"
set terminal $TERMINAL
set output "$OUT/llm.png"
set multiplot layout 1,$NM title "ethermem-llm decode tokens/s by local-memory ratio ($NET node)"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y
set yrange [0.05:*]
set ylabel "tokens/s (log scale)"
set xtics font ",10"
set key top right
set grid ytics
titles = "$TITLES"
do for [i=0:$((NM - 1))] {
	set title word(titles, i + 1)
	plot "$WORK/chart.dat" index i using 2:xtic(1) title "100%", '' index i using 3 title "50%", '' index i using 4 title "25%"
}
unset multiplot
EOF
	[ -s "$OUT/llm.png" ] || say "no PNG written (a gnuplot without png terminals?)"
else
	say "gnuplot not installed (Debian: gnuplot-nox): no chart"
fi

cat "$OUT/llm.md"
say "wrote $OUT/llm.csv, llm-detail.csv, llm.md$([ -s "$OUT/llm.png" ] && echo ", llm.png") in $ELAPSED s"
[ $MISMATCH = 0 ] || die "FAIL: some backend produced other token ids than all-local"
[ $FAILED = 0 ] || die "FAIL: some runs failed (not cut off: failed)"
exit 0
