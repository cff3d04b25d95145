#!/bin/bash
# lib_apart.sh - the command's tools stay out of libethermem: no em_cli_*
# command, no fault-path floor or huge-page lender, in the shared library's
# symbol table (exported or not), and no import of the calls only a tool
# makes (system, popen, exec*, fork, writing vm.nr_hugepages needs flock).
# The ethermem binary, where they belong, must have them.
# Exit 0 pass, 1 fail, 77 skip (no nm).
set -u
B=${EM_BUILD_DIR:?EM_BUILD_DIR must name the build directory}
L="$B/libethermem.so"
command -v nm >/dev/null || exit 77
fail() { echo "FAIL: $*" >&2; exit 1; }
[ -f "$L" ] || fail "no $L"
syms=$(nm "$L" 2>/dev/null) || fail "nm $L"
bad=$(echo "$syms" | grep -E ' (em_cli_[a-z_]+|emm_floor_[a-z_]+|em_cli_huge_adjust|emm_b_[a-z_]+)$')
[ -z "$bad" ] || fail "tools inside the library: $bad"
imports=$(nm -D --undefined-only "$L" | awk '{sub(/@.*/, "", $2); print $2}')
for f in system popen execvp execv execl fork vfork flock; do
	echo "$imports" | grep -qx "$f" && fail "the library imports $f"
done
# the same names are in the command, so the check above looks for the right ones
nm "$B/ethermem" | grep -q ' em_cli_bench_map$' || fail "em_cli_bench_map not in ethermem"
nm "$B/ethermem" | grep -q ' emm_floor_paths$' || fail "emm_floor_paths not in ethermem"
nm -D --undefined-only "$B/ethermem" | grep -q ' system@' || fail "ethermem does not import system (pattern stale?)"
echo "lib_apart: ok"
