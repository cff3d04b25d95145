#!/bin/bash
# test_cli.sh - the ethermem and ethermemd commands as a user meets them:
# --help and --version everywhere, exit status 0 on success and non-zero
# with a message on stderr otherwise, region create/ls/rm and status.
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
grep -q '^weights .* 104857600 .* 2$' "$T/ls" || fail "ls weights: $(cat "$T/ls")"
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
"$E" --secret-file "$T/bad" status 2>"$T/err" && fail "wrong secret"
grep -q 'secret' "$T/err" || fail "wrong-secret message: $(cat "$T/err")"
echo "cli: ok"
