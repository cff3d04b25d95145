#!/bin/sh
# test_exports.sh - the shared library exports exactly the calls the public
# header declares, each listed by name in libethermem.map, plus the private
# node's names and nothing else; and test_nullargs.c calls every one of them.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
lib=${EM_BUILD_DIR:-build}/libethermem.so
. "$(dirname "$0")/lib.sh"
tmp=$T
command -v nm >/dev/null || { echo "no nm"; exit 77; }
[ -f "$lib" ] || { echo "no $lib"; exit 1; }

# prototypes start at the left margin; comments never do
grep -oE '^[a-z][a-z0-9_ ]*[ *]em_[a-z0-9_]+\(' "$src/include/ethermem.h" |
	sed -E 's/.*[ *](em_[a-z0-9_]+)\($/\1/' | sort -u >"$tmp/header"
# public nodes are ETHERMEM_<digits>...; names are listed one per line
awk '/^ETHERMEM_[0-9]/ { pub = 1 } /^ETHERMEM_PRIVATE/ { pub = 0; priv = 1 }
     /^}/ { pub = 0; priv = 0 }
     /^[ \t]+[a-z_][a-z0-9_]*;/ { gsub(/[ \t;]/, ""); if (pub) print > "'"$tmp"'/map"; if (priv) print > "'"$tmp"'/private" }' \
	"$src/src/lib/libethermem.map"
sort -u -o "$tmp/map" "$tmp/map"
nm -D --defined-only "$lib" | awk '{ print $3 }' | sed 's/@.*//' | sort -u >"$tmp/nm"

fail=0
if ! diff -u "$tmp/header" "$tmp/map"; then
	echo "FAIL: ethermem.h (-) and libethermem.map (+) disagree"
	fail=1
fi
grep -vxF -f "$tmp/private" "$tmp/nm" | grep -v '^ETHERMEM_' >"$tmp/nm_pub" || true
if ! diff -u "$tmp/header" "$tmp/nm_pub"; then
	echo "FAIL: ethermem.h (-) and the library's exports (+) disagree"
	fail=1
fi
if grep -v '^em_' "$tmp/nm_pub"; then
	echo "FAIL: exported names without the em_ prefix (above)"
	fail=1
fi
while read -r f; do
	grep -q "\b$f(" "$src/tests/test_nullargs.c" || { echo "FAIL: test_nullargs.c never calls $f"; fail=1; }
done <"$tmp/header"
[ "$fail" = 0 ] && echo "ok: $(wc -l <"$tmp/header") calls, header = map = exports"
exit $fail
