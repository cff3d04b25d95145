#!/bin/bash
# python.sh [BUILD_DIR] - builds the ethermem Python package against the
# in-tree libethermem (BUILD_DIR, default build/) and installs it for
# Debian's /usr/bin/python3 (another python3 may come first on PATH), with
# Debian's own pip and setuptools: no index, no build isolation.
#
# The extension finds libethermem.so at run time through an rpath to
# BUILD_DIR, so the installed package follows the library built there:
# keep that directory (rebuilding it in place is fine; rerun this script
# after moving it). ETHERMEM_LIB_DIR / ETHERMEM_INCLUDE_DIR point the build
# at an installed library instead (python/setup.py).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
B=$(realpath -m "${1:-build}")
PY=/usr/bin/python3
if [ ! -e "$B/libethermem.so" ]; then
	cmake -S . -B "$B" >/dev/null
	cmake --build "$B" -j "$(nproc)" --target ethermem
fi
# pip builds in the source tree; its leftovers stay out of the way
trap 'rm -rf "$SRC/python/build" "$SRC/python/ethermem.egg-info"' EXIT
ETHERMEM_BUILD_DIR="$B" "$PY" -m pip install --quiet --no-index --no-build-isolation \
	--no-deps --break-system-packages --root-user-action=ignore ./python
cd /
"$PY" -c 'import ethermem, ethermem.torch; print("ethermem", ethermem.__version__, "for /usr/bin/python3:", ethermem.__file__)'
