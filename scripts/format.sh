#!/bin/bash
# format.sh [--check] [FILE...] - the C sources in the house style
# (.clang-format at the top of the tree). Without --check it rewrites the
# files in place; with --check it changes nothing, lists the files that
# would change and exits 1 if there are any. Without FILEs it takes every
# .c and .h file git tracks.
set -uo pipefail
cd "$(dirname "$0")/.."
CF=${CLANG_FORMAT:-clang-format}
check=0
if [ "${1:-}" = --check ]; then
	check=1
	shift
fi
case "${1:-}" in -*) echo "usage: scripts/format.sh [--check] [FILE...]" >&2; exit 2 ;; esac
command -v "$CF" >/dev/null || { echo "format.sh: $CF not found (scripts/deps.sh installs it)" >&2; exit 2; }
if [ $# -gt 0 ]; then
	files=("$@")
else
	mapfile -t files < <(git ls-files '*.c' '*.h')
fi
if [ $check = 0 ]; then
	"$CF" -i --style=file "${files[@]}"
	exit
fi
n=0
for f in "${files[@]}"; do
	if ! "$CF" --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then
		echo "$f"
		n=$((n + 1))
	fi
done
echo "format.sh: $n of ${#files[@]} files would change" >&2
[ $n = 0 ]
