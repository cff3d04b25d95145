#!/bin/bash
# test_cli.sh - the ethermem and ethermemd commands as a user meets them:
# --help and --version everywhere, exit status 0 on success and non-zero
# with a message on stderr otherwise, region create/ls/rm and status, and
# the pool flags (whole names only; they reach every command).
set -u
. "$(dirname "$0")/lib.sh"
E="$B/ethermem"

"$E" --version | grep -q '^ethermem [0-9]' || fail "--version"
"$B/ethermemd" --version | grep -q '^ethermemd [0-9]' || fail "ethermemd --version"
"$E" --help | grep -q 'region create' || fail "--help"
"$B/ethermemd" --help | grep -q -- '--capacity' || fail "ethermemd --help"
for c in status "region" "region create" "region ls" "region rm" bench; do
	"$E" $c --help >/dev/null || fail "$c --help"
done
"$E" 2>/dev/null && fail "no command must fail"
"$E" frobnicate 2>"$T/err" && fail "unknown command must fail"
grep -q unknown "$T/err" || fail "unknown command message"
"$B/ethermemd" 2>"$T/err" && fail "ethermemd without capacity"
grep -q -- --capacity "$T/err" || fail "ethermemd capacity message"
"$B/ethermemd" --capacity lots --secret-file "$T/secret" 2>/dev/null && fail "bad capacity"

# no pool given
env -u ETHERMEM_SECRET_FILE ETHERMEM_NODES= "$E" status 2>"$T/err" && fail "status without pool"
grep -q 'no pool' "$T/err" || fail "no-pool message"

start_node a 64M
start_node b 64M
export ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a,tcp://127.0.0.1:$PORT_b"

"$E" status > "$T/st" || fail "status"
grep -q "capacity 64.0 MiB" "$T/st" || fail "status capacity: $(cat "$T/st")"
[ "$(grep -c '^node ' "$T/st")" = 2 ] || fail "status lists both nodes"
"$E" status --json | grep -q '"capacity":67108864' || fail "status --json"

"$E" region create weights 100M >/dev/null || fail "create striped"
"$E" region create small 4K >/dev/null || fail "create small"
"$E" region create small 4K --excl 2>"$T/err" && fail "excl create of an existing name"
grep -q 'exists' "$T/err" || fail "exists message"
"$E" region create huge 1T 2>"$T/err" && fail "too big"
grep -qi 'space' "$T/err" || fail "no-space message: $(cat "$T/err")"
"$E" region ls > "$T/ls" || fail "ls"
grep -q '^weights .* 104857600 .* 2 none  *healthy$' "$T/ls" || fail "ls weights: $(cat "$T/ls")"
grep -q '^small ' "$T/ls" || fail "ls small"
"$E" region ls --json | grep -q '"name":"weights","size":104857600' || fail "ls --json"
"$E" region rm weights || fail "rm"
"$E" region rm weights 2>"$T/err" && fail "rm twice"
grep -qi 'no such' "$T/err" || fail "rm message"
"$E" region ls | grep -q weights && fail "weights still listed"
"$E" region rm small || fail "rm small"

# pool flags on the command line win over the environment
ETHERMEM_NODES=tcp://127.0.0.1:1 "$E" --nodes "tcp://127.0.0.1:$PORT_a" status >/dev/null \
	|| fail "--nodes"
# a node that is not there, a wrong secret: non-zero with a message
"$E" --nodes tcp://127.0.0.1:1 status 2>"$T/err" && fail "refused node"
grep -q 'cannot connect' "$T/err" || fail "refused message"
printf 'a different secret of enough length\n' > "$T/bad"
chmod 600 "$T/bad"
"$E" --secret-file "$T/bad" status 2>"$T/err" && fail "wrong secret"
grep -q 'secret' "$T/err" || fail "wrong-secret message: $(cat "$T/err")"

# a flag matches by its whole name only: --nodesX is not --nodes
"$E" status --nodesX "tcp://127.0.0.1:$PORT_a" 2>"$T/err" && fail "--nodesX taken for --nodes"
grep -q -- "--nodesX" "$T/err" || fail "--nodesX message: $(cat "$T/err")"
"$E" --nodes=tcp://127.0.0.1:$PORT_a status >/dev/null || fail "--nodes=VALUE"
"$E" status --nodes 2>"$T/err" && fail "--nodes without a value"
grep -q 'needs a value' "$T/err" || fail "missing-value message: $(cat "$T/err")"
"$E" --transport udp status 2>"$T/err" && fail "unknown transport"
grep -q 'tcp or ox' "$T/err" || fail "unknown-transport message: $(cat "$T/err")"
"$E" --timeout-ms abc status 2>"$T/err" && fail "bad --timeout-ms"

# --transport and --ox-iface reach the paging commands: over OmniXtend on an
# interface that does not exist they must fail, not quietly use TCP
if [ -f "$B/libethermem-preload.so" ]; then # built with the paging layer
	NOIF=mapnoif0 # no such interface, named for this test
	head -c 300000 /dev/urandom > "$T/file"
	"$E" import --transport ox --ox-iface $NOIF "$T/file" imp 2>"$T/err" && fail "import ignored --transport ox"
	grep -q 'cannot connect' "$T/err" || fail "import ox message: $(cat "$T/err")"
	"$E" import --transport ox "$T/file" imp 2>"$T/err" && fail "import ox without an interface"
	grep -q -- '--ox-iface' "$T/err" || fail "import ox-iface message: $(cat "$T/err")"
	"$E" region ls | grep -q '^imp ' && fail "import over ox created the region"
	"$E" import --transport tcp "$T/file" imp || fail "import over tcp"
	"$E" export --transport ox --ox-iface $NOIF imp "$T/back" 2>"$T/err" && fail "export ignored --transport ox"
	grep -q 'cannot connect' "$T/err" || fail "export ox message: $(cat "$T/err")"
	[ -e "$T/back" ] && fail "failed export left a file"
	"$E" export --transport=tcp imp "$T/back" || fail "export over tcp"
	cmp -s "$T/file" "$T/back" || fail "export data"
	if [ "$(id -u)" = 0 ]; then
		"$E" bench map --transport ox --ox-iface $NOIF --size 16M --cache 1M --skip-baselines \
			>/dev/null 2>"$T/err" && fail "bench map ignored --transport ox"
		grep -q 'cannot connect' "$T/err" || fail "bench map ox message: $(cat "$T/err")"
	fi
	# run hands the pool to its program through the environment. A
	# sanitizer-built shim cannot be preloaded into an uninstrumented
	# env(1) (the runtime must come first), so sanitizer legs skip this.
	if ! ldd "$B/libethermem-preload.so" | grep -q 'lib[at]san'; then
		"$E" run --transport ox --ox-iface $NOIF -- env > "$T/env" || fail "run env"
		grep -qx 'ETHERMEM_TRANSPORT=ox' "$T/env" || fail "run: transport not passed on"
		grep -qx "ETHERMEM_OX_IFACE=$NOIF" "$T/env" || fail "run: interface not passed on"
	fi
	"$E" region rm imp || fail "rm imp"
fi
echo "cli: ok"
