# lib.sh - shell helpers for the script tests: a node on a kernel-chosen
# port, cleaned up by a trap on every exit path.
set -u
B=${EM_BUILD_DIR:?EM_BUILD_DIR must name the build directory}
T=$(mktemp -d /tmp/emtest.XXXXXX)
NODE_PIDS=""
cleanup() {
	for p in $NODE_PIDS; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT INT TERM
fail() { echo "FAIL: $*" >&2; exit 1; }
printf 'a cluster secret for the tests, 40 bytes\n' > "$T/secret"
export ETHERMEM_SECRET_FILE="$T/secret"

# start_node NAME CAPACITY: sets PORT_<NAME>
start_node() {
	rm -f "$T/$1.port"
	"$B/ethermemd" --listen tcp://127.0.0.1:0 --capacity "$2" \
		--port-file "$T/$1.port" 2>"$T/$1.log" &
	NODE_PIDS="$NODE_PIDS $!"
	for _ in $(seq 500); do
		[ -s "$T/$1.port" ] && break
		sleep 0.01
	done
	[ -s "$T/$1.port" ] || fail "node $1 did not start: $(cat "$T/$1.log")"
	eval "PORT_$1=$(cat "$T/$1.port")"
}
