#!/bin/sh
# test_install.sh - the install tree is complete and usable the way a
# distribution's package is: `cmake --install --prefix` into a temporary
# prefix, then examples/hello.c built against the installed header and
# library with nothing but `pkg-config --cflags --libs ethermem` (shared,
# and static from libethermem.a), run against a node started from the
# installed ethermemd.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${EM_BUILD_DIR:-build}" && pwd)
command -v pkg-config >/dev/null || { echo "no pkg-config"; exit 77; }
command -v cc >/dev/null || { echo "no cc"; exit 77; }
. "$(dirname "$0")/lib.sh"
tmp=$T

prefix=$tmp/usr
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; fail "cmake --install"; }
pc=$(ls "$prefix"/lib*/pkgconfig/ethermem.pc "$prefix"/lib/*/pkgconfig/ethermem.pc 2>/dev/null | head -1)
[ -n "$pc" ] || fail "no ethermem.pc under $prefix/lib*"
libdir=$(dirname "$(dirname "$pc")")
for f in include/ethermem.h bin/ethermemd bin/ethermem bin/ethermem-llm \
	share/man/man1/ethermem.1 share/man/man3/libethermem.3 share/man/man8/ethermemd.8 \
	lib/systemd/system/ethermemd.service \
	share/doc/ethermem/examples/ethermemd.conf share/doc/ethermem/examples/client.conf; do
	[ -e "$prefix/$f" ] || fail "not installed: $f"
done
for f in libethermem.so libethermem.so.0 libethermem.a libethermem-preload.so; do
	[ -e "$libdir/$f" ] || fail "not installed: $libdir/$f"
done
grep -q "^ExecStart=$prefix/bin/ethermemd " "$prefix/lib/systemd/system/ethermemd.service" ||
	fail "the unit does not start this prefix's ethermemd"
# the installed header is the one the build used, and nothing private came along
cmp -s "$prefix/include/ethermem.h" "$src/include/ethermem.h" || fail "installed header differs"
[ "$(ls "$prefix/include")" = "ethermem.h" ] || fail "more than ethermem.h under include/"

export PKG_CONFIG_PATH="$libdir/pkgconfig"
[ "$(pkg-config --modversion ethermem)" = "$(sed -n 's/^#define EM_VERSION_STRING "\(.*\)"/\1/p' "$src/include/ethermem.h")" ] ||
	fail "ethermem.pc's version is not the header's"
# a build from outside: no -I into the source tree, only what pkg-config says
cp "$src/examples/hello.c" "$tmp/hello.c"
# shellcheck disable=SC2046
cc -Wall -Werror -o "$tmp/hello" "$tmp/hello.c" $(pkg-config --cflags --libs ethermem) -lpthread ||
	fail "hello.c does not build against the installed library"
# shellcheck disable=SC2046
cc -Wall -Werror -o "$tmp/hello-static" "$tmp/hello.c" $(pkg-config --cflags ethermem) \
	"$libdir/libethermem.a" $(pkg-config --static --libs ethermem | sed 's/-lethermem//') ||
	fail "hello.c does not link against the installed libethermem.a"

# a node from the installed binary, and the program against it
B=$prefix/bin
start_node a 64M
export ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a"
LD_LIBRARY_PATH="$libdir" ldd "$tmp/hello" | grep -q "$libdir/libethermem.so.0" ||
	fail "hello does not load the installed libethermem.so.0"
LD_LIBRARY_PATH="$libdir" "$tmp/hello" 8 >"$tmp/hello.out" || { cat "$tmp/hello.out"; fail "hello (shared)"; }
grep -q "= 20000 (expected 20000)" "$tmp/hello.out" || { cat "$tmp/hello.out"; fail "hello's count"; }
"$tmp/hello-static" 8 >"$tmp/hello.out" || { cat "$tmp/hello.out"; fail "hello (static)"; }
"$prefix/bin/ethermem" status >"$tmp/status.out" || fail "installed ethermem status"
grep -q "127.0.0.1" "$tmp/status.out" || { cat "$tmp/status.out"; fail "status names no node"; }
# the installed CLI finds the installed preload shim (PREFIX/LIBDIR), and
# the shim its libethermem.so.0 beside it
"$prefix/bin/ethermem" run -- /bin/sh -c 'echo ran' >"$tmp/run.out" 2>&1 || { cat "$tmp/run.out"; fail "installed ethermem run"; }
grep -qx ran "$tmp/run.out" || { cat "$tmp/run.out"; fail "ethermem run did not run the program"; }
echo "ok: installed under $prefix, hello built with pkg-config ran (shared and static)"
