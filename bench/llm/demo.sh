#!/bin/bash
# bench/llm/demo.sh - the point of the pool in under two minutes: a dense
# model that does not fit in the memory it is given (a cgroup limit of half
# its size), decoded with its weights read from disk (mmap, page cache
# dropped) and then streamed from a memory node, against all in memory.
# A thin front end over run.sh (same setup, same cleanup, same id check);
# results go to a temporary directory, bench/results is left alone.
# Usage: bench/llm/demo.sh [SIZE (default 512M)] [RATIO (default 0.5)]
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SIZE=${1:-512M}
RATIO=${2:-0.5}
OUT=$(mktemp -d /tmp/ethermem-llm-demo.XXXXXX) || exit 1
trap 'rm -rf "$OUT"' EXIT
"$HERE/run.sh" --quick --size "$SIZE" --kinds dense --ratios "$RATIO" \
	--backends "mmap pool-stream" --steps 8 --timeout 60 --out "$OUT" 2>&1 |
	grep -E "^bench-llm: .*(tok/s|cutoff|killed|error|FAIL|SKIP|memory node)" >&2
rc=${PIPESTATUS[0]}
[ -s "$OUT/llm-detail.csv" ] || exit "$rc"
awk -F, -v r="$RATIO" 'NR > 1 { t[$4] = $6; mb[$4] = $9 / 1048576; ok[$4] = $11 }
	END {
		printf "\n%s model, local memory limited to %g%% of it:\n", "'"$SIZE"'", r * 100
		printf "  all in memory:        %8.2f tok/s\n", t["local"]
		printf "  weights from disk:    %8.2f tok/s  (%.0f MB read per token)\n", t["mmap"], mb["mmap"]
		printf "  weights from the pool:%8.2f tok/s  (%.0f MB fetched per token)\n", t["pool-stream"], mb["pool-stream"]
		if (t["mmap"] > 0)
			printf "  pool / disk: %.1fx; same token ids: %s\n", t["pool-stream"] / t["mmap"], \
				(ok["mmap"] == 1 && ok["pool-stream"] == 1) ? "yes" : "NO"
	}' "$OUT/llm-detail.csv"
exit "$rc"
