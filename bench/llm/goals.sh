#!/bin/sh
# bench/llm/goals.sh - the goals, judged from one run's
# llm-detail.csv (run.sh writes it), printed as a Markdown list.
#
# Kept apart from run.sh so a recorded run can be judged again without
# rerunning it.  "Best pool" is the faster of pool-map and pool-stream at that
# ratio.  A swap run that was cut off has no rate; the bound it gives (fewer
# than `steps` tokens in `timeout` seconds) is used and said to be a bound.
# Usage: bench/llm/goals.sh DETAIL_CSV [TIMEOUT_S]
CSV=${1:?usage: goals.sh llm-detail.csv [timeout_s]}
TO=${2:-0}
awk -F, -v TO="$TO" '
NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
{
	k = $col["kind"]; r = $col["ratio"] + 0; b = $col["backend"]
	st[k, r, b] = $col["status"]; t[k, r, b] = $col["tok_s"] + 0
	by[k, r, b] = $col["bytes_per_token"] + 0; hot[k] = $col["hot_bytes_per_token"] + 0 > 0 ? $col["hot_bytes_per_token"] + 0 : hot[k]
	c50[k, r, b] = $col["expert_cold_ms_p50"] + 0; steps[k, r, b] = $col["steps"] + 0
	kinds[k] = 1
}
function best(k, r) {
	bb = t[k, r, "pool-map"] >= t[k, r, "pool-stream"] ? "pool-map" : "pool-stream"
	return bb
}
function verdict(ok) { return ok ? "**met**" : "**not met**" }
function vs(k, r, base, want,    p, x, bound) {
	if (st[k, r, base] == "" || st[k, r, "pool-stream"] st[k, r, "pool-map"] == "")
		return
	p = best(k, r)
	if (st[k, r, base] == "ok" && t[k, r, base] > 0) {
		x = t[k, r, p] / t[k, r, base]
		printf "- %s %g%%: best pool (%s, %.2f tok/s) / %s (%.3f tok/s) = %.2fx, goal >= %gx: %s\n", \
			k, r * 100, p, t[k, r, p], base, t[k, r, base], x, want, verdict(x >= want)
	} else if (st[k, r, base] == "cutoff" && TO > 0) {
		bound = steps[k, r, base] / TO
		x = t[k, r, p] / bound
		v = (x >= want) ? "**met** (against the bound)" : "undecided (the bound is too loose)"
		printf "- %s %g%%: %s was cut off (< %.3f tok/s: %d tokens not done in %d s, loading included); best pool (%s, %.2f tok/s) is > %.1fx that bound, goal >= %gx: %s\n", \
			k, r * 100, base, bound, steps[k, r, base], TO, p, t[k, r, p], x, want, v
	} else {
		printf "- %s %g%%: no %s figure (%s)\n", k, r * 100, base, st[k, r, base]
	}
}
END {
	if ("dense" in kinds) {
		for (i = 1; i <= 2; i++) {
			r = i == 1 ? 0.5 : 0.25
			vs("dense", r, "mmap", 2)
			vs("dense", r, "swap", 5)
		}
		p = best("dense", 0.5); x = t["dense", 1, "local"] > 0 ? t["dense", 0.5, p] / t["dense", 1, "local"] : 0
		printf "- dense 50%%: best pool / all-local = %.2fx, goal >= 0.3x (aim 0.5x): %s\n", x, verdict(x >= 0.3)
	}
	if ("moe" in kinds) {
		p = best("moe", 0.5); x = t["moe", 1, "local"] > 0 ? t["moe", 0.5, p] / t["moe", 1, "local"] : 0
		printf "- moe 50%% (Zipf): best pool (%s) / all-local = %.2fx, goal >= 0.7x: %s\n", p, x, verdict(x >= 0.7)
		for (j = 1; j <= 2; j++) {
			pb = j == 1 ? "pool-stream" : "pool-map"
			if (c50["moe", 0.5, "mmap"] > 0 && c50["moe", 0.5, pb] > 0) {
				x = 1 - c50["moe", 0.5, pb] / c50["moe", 0.5, "mmap"]
				printf "- moe 50%%: expert cold-load p50 %s %.2f ms vs mmap (disk) %.2f ms: %.0f%% %s, goal >= 90%% lower: %s\n", \
					pb, c50["moe", 0.5, pb], c50["moe", 0.5, "mmap"], (x < 0 ? -x : x) * 100, \
					(x < 0 ? "higher" : "lower"), verdict(x >= 0.9)
			}
		}
	}
	for (k in kinds)
		for (i = 1; i <= 2; i++) {
			r = i == 1 ? 0.5 : 0.25
			for (j = 1; j <= 2; j++) {
				pb = j == 1 ? "pool-stream" : "pool-map"
				if (st[k, r, pb] != "ok" || hot[k] <= 0)
					continue
				opt = (1 - r) * hot[k]
				x = by[k, r, pb] / opt
				printf "- %s %g%% %s: %.0f MB fetched per token, (1 - ratio) x %.0f MB read = %.0f MB, ratio %.2f, goal <= 1.2: %s\n", \
					k, r * 100, pb, by[k, r, pb] / 1048576, hot[k] / 1048576, opt / 1048576, x, verdict(x <= 1.2)
			}
		}
}' "$CSV"
