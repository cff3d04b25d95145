#!/bin/bash
# test.sh - the whole test suite, as CI runs it (.ci/run calls this):
#   1. a -Werror build with gcc and every ctest test;
#   2. the same tests built with AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. the mapping tests under ThreadSanitizer;
#   4. the fuzz targets with clang's libFuzzer, for a bounded time each;
#   5. the inference benchmark's quick mode (checks ids across backends).
# Ends with one line "total: N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh || exit 1
JOBS=$(nproc)
PASS=0 FAIL=0 SKIP=0
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

# leg NAME BUILD_DIR "CMAKE ARGS" "CTEST ARGS"
leg() {
	local name=$1 dir=$2 cargs=$3 targs=$4 log="$LOGS/$1.log" p t s
	echo "== $name"
	if ! { cmake -S . -B "$dir" $cargs >/dev/null && cmake --build "$dir" -j "$JOBS" >"$LOGS/$name.build" 2>&1; }; then
		tail -40 "$LOGS/$name.build"
		echo "$name: build failed"
		FAIL=$((FAIL + 1))
		return
	fi
	(cd "$dir" && ctest --output-on-failure --timeout 600 $targs) 2>&1 | tee "$log" | grep -E '^ *[0-9]+/[0-9]+ Test|tests passed|Failed|\*\*\*' || true
	t=$(sed -n 's/.*tests failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
	p=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of.*/\1/p' "$log" | tail -1)
	s=$(grep -c '(Skipped)' "$log")
	if [ -z "$t" ]; then
		grep -q 'No tests were found' "$log" && return
		echo "$name: ctest did not finish"; FAIL=$((FAIL + 1)); return
	fi
	# show what the failures printed
	[ "$p" != 0 ] && sed -n '/Start /h; /\*\*\*Failed\|\*\*\*Timeout\|\*\*\*Exception/,/Start /p' "$log" | head -200
	FAIL=$((FAIL + p))
	PASS=$((PASS + t - p - s))
	SKIP=$((SKIP + s))
}

leg gcc build "-DCMAKE_BUILD_TYPE=RelWithDebInfo" ""
# The paging layer serves faults from its own SIGBUS handler, so ASan must
# leave SIGBUS alone; and the preload shim cannot be injected, ASan-built,
# into uninstrumented programs such as sort(1), so map_run sits this leg out.
ASAN_OPTIONS=handle_sigbus=0:detect_leaks=1 \
	leg asan build-asan "-DEM_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=Debug" "-LE nosan -E fuzz|map_run"
# map_run preloads the sanitized shim into sort(1) (impossible, as for ASan),
# so it sits this leg out; every other mapping test runs under TSan.
leg tsan build-tsan "-DEM_SANITIZE=thread -DCMAKE_BUILD_TYPE=Debug" "-R ^map_ -LE nosan -E map_run"
CC=clang leg fuzz build-fuzz "-DCMAKE_BUILD_TYPE=RelWithDebInfo -DEM_FUZZ_SECONDS=${EM_FUZZ_SECONDS:-30}" "-R fuzz"
if [ -x bench/llm/run.sh ]; then
	echo "== bench-llm quick"
	if make -s bench-llm QUICK=1 > "$LOGS/llm.log" 2>&1; then
		PASS=$((PASS + 1)); tail -20 "$LOGS/llm.log"
	else
		FAIL=$((FAIL + 1)); tail -40 "$LOGS/llm.log"; echo "bench-llm quick: failed"
	fi
fi
echo
echo "total: $PASS passed, $FAIL failed, $SKIP skipped"
[ "$FAIL" = 0 ]
