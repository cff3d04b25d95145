#!/bin/bash
# test_settings.sh - the settings table as users meet it: README's table is
# exactly `ethermem config --markdown`; every ETHERMEM_ variable the sources
# read is a row of the table (read nowhere but through it); and a bad value
# stops ethermem and ethermemd with exit status 2 and a message naming the
# setting and the value, from the environment, a flag or a config file.
set -u
. "$(dirname "$0")/lib.sh"
E="$B/ethermem"
S=$(cd "$(dirname "$0")/.." && pwd)

"$E" config --markdown >"$T/table" || fail "ethermem config --markdown"
sed -n '/<!-- settings:begin -->/,/<!-- settings:end -->/p' "$S/README.md" |
	sed '1d;$d' >"$T/readme"
diff -u "$T/readme" "$T/table" >"$T/diff" || {
	FAIL_SHOW="$T/diff"
	fail "README's settings differ from the table (replace them with: ethermem config --markdown)"
}
"$E" config | grep -q '^ETHERMEM_TIMEOUT_MS' || fail "ethermem config lists the variables"
"$B/ethermemd" --help-settings | grep -q '^-  *max-clients' || fail "ethermemd --help-settings"

# every variable named in a getenv() of the sources is a row, and only
# config.c calls getenv() on one
grep -rhoE 'getenv\("ETHERMEM_[A-Z0-9_]+"' "$S/src" | grep -oE 'ETHERMEM_[A-Z0-9_]+' | sort -u |
	while read -r v; do
		grep -q "^$v " <("$E" config) || echo "$v"
	done >"$T/missing"
[ -s "$T/missing" ] && fail "read but not in the table: $(tr '\n' ' ' <"$T/missing")"
grep -rn 'getenv("ETHERMEM_' "$S/src" >"$T/direct"
[ -s "$T/direct" ] && { FAIL_SHOW="$T/direct"; fail "read around the table (use em_cfg_env)"; }

# the sample files say only what the table knows, in values it accepts
for f in client ethermemd; do
	w=client
	[ $f = ethermemd ] && w=node
	sed 's/#.*//' "$S/dist/$f.conf" | awk -F' *= *' 'NF == 2 { print $1 }' | while read -r k; do
		"$E" config | grep -qE "^[A-Z_-]+ +$k " || echo "$f.conf: $k"
	done
done >"$T/unknown"
[ -s "$T/unknown" ] && fail "keys not in the table: $(tr '\n' ' ' <"$T/unknown")"

expect_bad() { # WHAT NEEDLE CMD...: exit status 2 and NEEDLE on stderr
	local what=$1 needle=$2 rc
	shift 2
	"$@" >/dev/null 2>"$T/err"
	rc=$?
	[ $rc -eq 2 ] || fail "$what: exit status $rc, want 2"
	grep -qF -- "$needle" "$T/err" || fail "$what: no '$needle' in: $(cat "$T/err")"
}
printf 'sixteen-byte-secret!\n' >"$T/secret"
chmod 600 "$T/secret"
export ETHERMEM_NODES=tcp://127.0.0.1:1 ETHERMEM_SECRET_FILE="$T/secret"
expect_bad "timeout abc" "ETHERMEM_TIMEOUT_MS: 'abc'" env ETHERMEM_TIMEOUT_MS=abc "$E" status
expect_bad "negative spin" "ETHERMEM_POLL_US: '-1'" env ETHERMEM_POLL_US=-1 "$E" status
expect_bad "bad bool" "ETHERMEM_MAP_HUGE: 'perhaps'" env ETHERMEM_MAP_HUGE=perhaps "$E" region ls
expect_bad "flag" "--timeout-ms: 'x'" "$E" --timeout-ms x status
expect_bad "transport" "carrier-pigeon" "$E" --transport carrier-pigeon status
expect_bad "node flag" "max-clients: '-4'" "$B/ethermemd" --capacity 64M --max-clients -4
expect_bad "node poll" "poll-us: '1e3'" "$B/ethermemd" --capacity 64M --poll-us 1e3
expect_bad "node mode" "ox-mode: '2'" "$B/ethermemd" --capacity 64M --ox-mode 2
printf 'capacity = 64M\nio-timeout = forever\n' >"$T/node.conf"
expect_bad "node file" "io-timeout: 'forever'" "$B/ethermemd" --config "$T/node.conf"
printf 'capacity = 64M\nmlock = sometimes\n' >"$T/node.conf"
expect_bad "node bool" "mlock: 'sometimes'" "$B/ethermemd" --config "$T/node.conf"
# and a good file still starts a node
printf 'capacity = 64M\nmlock = no\npoll-us = 0\nmax-clients = 8\n' >"$T/node.conf"
start_node a 64M --config "$T/node.conf"
ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a" ETHERMEM_POLL_US=0 "$E" status >/dev/null ||
	fail "status with good settings"
echo ok
