#!/bin/bash
# test.sh - the whole test suite, as CI runs it (.ci/run calls this):
#   1. a -Werror build with gcc and every ctest test, then the Python
#      package installed for /usr/bin/python3 from that build (scripts/python.sh)
#      and imported from another directory;
#   2. the same tests built with AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. the mapping tests under ThreadSanitizer;
#   4. the fuzz targets with clang's libFuzzer, for a bounded time each
#      (EM_FUZZ_SECONDS, default in CMakePresets.json);
#   5. the inference benchmark's quick mode (checks ids across backends);
#   6. the corpus of ordinary programs in quick mode (bench/run: outputs
#      under `ethermem run` and under swap compared with plain runs);
#   and, first, the C sources in the house style (scripts/format.sh --check).
# Legs 1-4 are the CMake presets default, asan, tsan and fuzz.
# Each leg prints its wall time as it ends ("-- NAME: N s", the build
# apart from the tests for the CMake legs), and a table of them comes
# before the last line, "total: N passed, N failed, N skipped", so the
# next change to the suite can see where its minutes go.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh || exit 1
JOBS=$(nproc)
PASS=0 FAIL=0 SKIP=0
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
TIMES=""

# timed NAME DETAIL STARTED: records and prints how long NAME took since
# STARTED (a value of $SECONDS), DETAIL in brackets after it
timed() {
	local s=$((SECONDS - $3))
	TIMES="$TIMES$(printf '%-22s %5d s%s' "$1" "$s" "${2:+  $2}")
"
	echo "-- $1: $s s${2:+ ($2)}"
}

# leg NAME [CMAKE ARGS...]: configure, build and test with the CMake preset
# NAME (CMakePresets.json holds each leg's flags, test selection and
# sanitizer options; `make NAME` runs the same).
leg() {
	local name=$1 log="$LOGS/$1.log" p t s t0=$SECONDS t1
	shift
	echo "== $name"
	if ! { cmake --preset "$name" "$@" >"$LOGS/$name.conf" 2>&1 &&
		cmake --build --preset "$name" -j "$JOBS" >"$LOGS/$name.build" 2>&1; }; then
		tail -40 "$LOGS/$name.conf" "$LOGS/$name.build" 2>/dev/null
		echo "$name: build failed"
		FAIL=$((FAIL + 1))
		timed "$name" "build failed" $t0
		return
	fi
	t1=$SECONDS
	ctest --preset "$name" 2>&1 | tee "$log" | grep -E '^ *[0-9]+/[0-9]+ Test|tests passed|Failed|\*\*\*' || true
	timed "$name" "build $((t1 - t0)) s, tests $((SECONDS - t1)) s" $t0
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

# The house style (.clang-format): an unformatted file fails here.
echo "== format"
t0=$SECONDS
if scripts/format.sh --check > "$LOGS/format.log" 2>&1; then
	PASS=$((PASS + 1))
else
	FAIL=$((FAIL + 1)); cat "$LOGS/format.log"; echo "format: run scripts/format.sh"
fi
timed format "" $t0
leg default
# The package as users get it: installed against the default leg's library.
echo "== python package install"
t0=$SECONDS
if scripts/python.sh build > "$LOGS/python.log" 2>&1; then
	PASS=$((PASS + 1)); tail -1 "$LOGS/python.log"
else
	FAIL=$((FAIL + 1)); tail -30 "$LOGS/python.log"; echo "python package install: failed"
fi
timed python "" $t0
leg asan
leg tsan
leg fuzz ${EM_FUZZ_SECONDS:+-DEM_FUZZ_SECONDS=$EM_FUZZ_SECONDS}
# bench_leg NAME LINES: `make bench-NAME QUICK=1` when bench/NAME/run.sh
# exists, one pass or failure; the last LINES lines of its log on success
bench_leg() {
	local name=$1 lines=$2 t0=$SECONDS
	[ -x "bench/$name/run.sh" ] || return 0
	echo "== bench-$name quick"
	if make -s "bench-$name" QUICK=1 > "$LOGS/$name.log" 2>&1; then
		PASS=$((PASS + 1)); tail -"$lines" "$LOGS/$name.log"
	else
		FAIL=$((FAIL + 1)); tail -40 "$LOGS/$name.log"; echo "bench-$name quick: failed"
	fi
	timed "bench-$name" "" $t0
}
bench_leg llm 20
bench_leg run 15
echo
echo "wall time by leg:"
printf '%s' "$TIMES"
printf '%-22s %5d s\n' "all (deps included)" "$SECONDS"
echo "total: $PASS passed, $FAIL failed, $SKIP skipped"
[ "$FAIL" = 0 ]
