#!/bin/bash
# run.sh TEST - runs python/tests/TEST.py with Debian's interpreter against
# two real memory nodes on loopback, importing the package from the build
# directory. Skips (77) when the interpreter lacks NumPy (or PyTorch for the
# torch tests), which scripts/deps.sh installs.
. "$(dirname "$0")/../../tests/lib.sh"
PY=${EM_PYTHON:-/usr/bin/python3}
need=numpy
[ "$1" = test_torch ] && need="numpy, torch"
"$PY" -c "import $need" 2>/dev/null || { echo "SKIP: $PY lacks $need"; exit 77; }
[ -d "$B/python/ethermem" ] || fail "the package is not built in $B/python"
start_node a 256M
start_node b 256M
export ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a,tcp://127.0.0.1:$PORT_b"
export EM_TEST_NODE_PID=$PID_b EM_TEST_TMP=$T
# no -X faulthandler: the mapping serves its page faults from a SIGBUS
# handler, which faulthandler's would shadow
cd "$(dirname "$0")" && PYTHONPATH="$B/python" "$PY" -m unittest -v "$1"
