#!/bin/bash
# run.sh TEST - runs python/tests/TEST.py with Debian's interpreter against
# two real memory nodes on loopback, importing the package from the build
# directory. Skips (77) when the interpreter lacks NumPy (or PyTorch for the
# torch tests), which scripts/deps.sh installs. For the API tests, when
# etcd is installed, a third node registers in etcd under a cluster of its
# own and requires encryption (EM_TEST_ETCD_URL, EM_TEST_CLUSTER); the
# tests that need it skip without etcd.
. "$(dirname "$0")/../../tests/lib.sh"
PY=${EM_PYTHON:-/usr/bin/python3}
need=numpy
[ "$1" = test_torch ] && need="numpy, torch"
"$PY" -c "import $need" 2>/dev/null || { echo "SKIP: $PY lacks $need"; exit 77; }
[ -d "$B/python/ethermem" ] || fail "the package is not built in $B/python"
start_node a 256M
start_node b 256M
export ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a,tcp://127.0.0.1:$PORT_b"
export EM_TEST_NODE_PID=$PID_b EM_TEST_NODE_PIDS="$PID_a $PID_b" EM_TEST_TMP=$T
if [ "$1" = test_api ] && [ -x "${EM_TEST_ETCD:-/usr/bin/etcd}" ] && command -v curl >/dev/null; then
	start_etcd
	# only the tests that ask for etcd use it
	unset ETHERMEM_ETCD
	export EM_TEST_ETCD_URL=$ETCD_URL EM_TEST_CLUSTER=pyapi$$
	start_node e 64M --etcd "$ETCD_URL" --cluster "$EM_TEST_CLUSTER" --lease-ttl 2 --encrypt
	wait_for 10 "node e to register in etcd" sh -c \
		"'$B/ethermem' node ls --json --etcd '$ETCD_URL' --cluster '$EM_TEST_CLUSTER' | grep -q '\"state\":\"up\"'"
fi
# no -X faulthandler: the mapping serves its page faults from a SIGBUS
# handler, which faulthandler's would shadow
cd "$(dirname "$0")" && PYTHONPATH="$B/python" "$PY" -m unittest -v "$1"
