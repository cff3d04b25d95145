# lib.sh - the one harness for the shell tests, sourced by every test
# script (sh or bash). It gives a scratch directory $T, a cluster secret,
# memory nodes on kernel-chosen ports, a bounded wait for a condition, and
# one cleanup on every exit path that stops what the test started (nodes,
# background programs, network namespaces) and removes $T.
#
#   B                      the build directory: EM_BUILD_DIR, or set by the
#                          test before sourcing (tests that take it as $1)
#   fail MSG / skip MSG    exit 1 / exit 77, printing MSG (fail also shows
#                          the tail of each node's log and of $FAIL_SHOW)
#   need_root, need_cmd C  skip unless root / unless command C exists
#   need_built PROG...     skip unless every PROG is built (executable in $B)
#   need_llm_pool          skip unless the LLM engine, its model generator,
#                          ethermemd and ethermem are built, the engine with
#                          its pool backend
#   wait_for SECS WHAT CMD...  run CMD until it succeeds; fail after SECS
#   spawn CMD...           run CMD in the background, stopped at exit ($!)
#   add_netns NAME         create a network namespace, deleted at exit
#   at_exit CMD            one more cleanup command
#   start_node NAME CAP [FLAGS...]  ethermemd; sets PORT_<NAME>, PID_<NAME>
#                          (NODE_WRAP: a command prefix such as
#                          "ip netns exec NS"; NODE_LISTEN: the address;
#                          EM_TEST_NODE_FLAGS: flags added to every node)
#   stop_node NAME         SIGTERM, wait; fails unless it exits 0
#   start_etcd             etcd on ETCD_HOST (default 127.0.0.1), its data
#                          under ETCD_DATA (default $T); ETCD_URL
#   netns_bridge PFX NET   a bridge PFXbr, NET.254 on this side
#   netns_nodes PFX NET FIRST LAST CAP [FLAGS...]  nodes nFIRST..nLAST, each
#                          in its namespace PFXn<k> at NET.<k>:7000 on it
# EM_TEST_KEEP=1 keeps $T for a look afterwards.
B=${B:-${EM_BUILD_DIR:-}}
T=$(mktemp -d /tmp/emtest.XXXXXX) || exit 1
EM_PIDS=""
EM_NETNS=""
EM_AT_EXIT=""
FAIL_SHOW=""
NODE_WRAP=""
NODE_LISTEN=tcp://127.0.0.1:0
ETCD_HOST=127.0.0.1

em_cleanup() {
	eval "$EM_AT_EXIT"
	for p in $EM_PIDS; do kill "$p" 2>/dev/null; done
	for p in $EM_PIDS; do wait "$p" 2>/dev/null; done
	for n in $EM_NETNS; do ip netns del "$n" 2>/dev/null; done
	if [ -n "${EM_TEST_KEEP:-}" ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap em_cleanup EXIT
trap 'exit 1' INT TERM HUP

fail() {
	echo "FAIL: $*" >&2
	for f in $FAIL_SHOW; do
		[ -s "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }
	done
	exit 1
}
skip() { echo "SKIP: $*"; exit 77; }
need_root() { [ "$(id -u)" = 0 ] || skip "not root"; }
need_cmd() { command -v "$1" >/dev/null || skip "no $1"; }
need_built() {
	for em_p in "$@"; do
		[ -x "$B/$em_p" ] || skip "$em_p not built in '$B'"
	done
}
need_llm_pool() {
	need_built ethermem-llm ethermem-llm-gen ethermemd ethermem
	"$B/ethermem-llm" --help | grep -q "Pool backend: not built" && skip "no pool backend linked"
}
at_exit() { EM_AT_EXIT="$EM_AT_EXIT
$*"; }

# wait_for SECS WHAT CMD...: polls CMD every 10 ms; the test fails with
# WHAT when it has not succeeded within SECS seconds.
wait_for() {
	em_secs=$1 em_what=$2
	shift 2
	em_end=$(($(date +%s) + em_secs))
	until "$@"; do
		[ "$(date +%s)" -lt "$em_end" ] || fail "timed out after ${em_secs}s waiting for $em_what"
		sleep 0.01
	done
}

spawn() {
	"$@" &
	EM_PIDS="$EM_PIDS $!"
}

add_netns() {
	ip netns add "$1" || return 1
	EM_NETNS="$EM_NETNS $1"
}

printf 'a cluster secret for the tests, 40 bytes\n' > "$T/secret"
chmod 600 "$T/secret"
ETHERMEM_SECRET_FILE="$T/secret"
export ETHERMEM_SECRET_FILE

# start_node NAME CAPACITY [FLAGS...]: a memory node, log in $T/NAME.log
start_node() {
	em_n=$1 em_cap=$2
	shift 2
	[ -x "$B/ethermemd" ] || fail "no ethermemd in '$B'"
	rm -f "$T/$em_n.port"
	$NODE_WRAP "$B/ethermemd" --listen "$NODE_LISTEN" --capacity "$em_cap" \
		--secret-file "$ETHERMEM_SECRET_FILE" --port-file "$T/$em_n.port" "$@" \
		${EM_TEST_NODE_FLAGS:-} \
		2>"$T/$em_n.log" &
	EM_PIDS="$EM_PIDS $!"
	eval "PID_$em_n=$!"
	case " $FAIL_SHOW " in *" $T/$em_n.log "*) ;; *) FAIL_SHOW="$FAIL_SHOW $T/$em_n.log" ;; esac
	wait_for 10 "node $em_n to listen" test -s "$T/$em_n.port"
	eval "PORT_$em_n=$(cat "$T/$em_n.port")"
}

# red_nodes: eight nodes n0..n7 on loopback for the redundancy tests, as a
# static list in NODES (their pids in PID_n0..PID_n7). n6 and n7 have the
# least memory, so placement leaves them free for what repair rebuilds: a
# replicate:2 region lands on n0 n1, an ec:4+2 one on n2..n5 (data) and
# n0 n1 (parity).
red_nodes() {
	NODES=""
	for em_i in 0 1 2 3 4 5 6 7; do
		start_node "n$em_i" $([ $em_i -lt 6 ] && echo 64M || echo 32M)
		eval "NODES=\"\$NODES\${NODES:+,}tcp://127.0.0.1:\$PORT_n$em_i\""
	done
}

# stop_node NAME: a clean exit too (sanitizer builds report leaks there)
stop_node() {
	eval "em_p=\$PID_$1"
	kill "$em_p"
	wait "$em_p"
	em_rc=$?
	EM_PIDS=$(echo " $EM_PIDS " | sed "s/ $em_p / /")
	[ "$em_rc" = 0 ] || fail "node $1 exited with $em_rc"
}

# free_port: a port the kernel calls free now (etcd cannot report one it
# picked itself).
free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_etcd: a one-member etcd on loopback in $T, with short heartbeats so
# that one-second leases are allowed; sets ETCD_URL, ETCD_PID and exports
# ETHERMEM_ETCD. Skips (77) when etcd is not installed (scripts/deps.sh).
start_etcd() {
	em_etcd=${EM_TEST_ETCD:-/usr/bin/etcd}
	[ -x "$em_etcd" ] || skip "no etcd at $em_etcd (scripts/deps.sh installs etcd-server)"
	need_cmd curl
	for em_try in 1 2 3; do
		em_cport=$(free_port)
		em_pport=$(free_port)
		[ "$em_cport" = "$em_pport" ] && continue
		rm -rf "${ETCD_DATA:-$T}/etcd.data"
		"$em_etcd" --name t --data-dir "${ETCD_DATA:-$T}/etcd.data" \
			--listen-client-urls "http://$ETCD_HOST:$em_cport" \
			--advertise-client-urls "http://$ETCD_HOST:$em_cport" \
			--listen-peer-urls "http://127.0.0.1:$em_pport" \
			--initial-advertise-peer-urls "http://127.0.0.1:$em_pport" \
			--initial-cluster "t=http://127.0.0.1:$em_pport" \
			--heartbeat-interval 50 --election-timeout 500 --logger zap --log-level warn \
			>"$T/etcd.log" 2>&1 &
		ETCD_PID=$!
		EM_PIDS="$EM_PIDS $ETCD_PID"
		em_i=0
		while [ $em_i -lt 750 ] && kill -0 "$ETCD_PID" 2>/dev/null; do
			if curl -fs "http://$ETCD_HOST:$em_cport/health" 2>/dev/null | grep -q '"health":"true"'; then
				ETCD_URL="http://$ETCD_HOST:$em_cport"
				ETHERMEM_ETCD=$ETCD_URL
				export ETHERMEM_ETCD
				return 0
			fi
			em_i=$((em_i + 1))
			sleep 0.02
		done
		kill "$ETCD_PID" 2>/dev/null
		wait "$ETCD_PID" 2>/dev/null
	done
	FAIL_SHOW="$FAIL_SHOW $T/etcd.log"
	fail "etcd did not start"
}

# netns_bridge PREFIX NET: the bridge PREFIXbr with NET.254 on this side
# (etcd may listen there); removed at exit.
netns_bridge() {
	need_root
	ip link add "${1}br" type bridge || skip "cannot create a bridge"
	at_exit "ip link del ${1}br 2>/dev/null"
	# a fixed address: else the bridge takes its ports' lowest, which
	# changes as ports join, and peers holding the old one in their ARP
	# cache lose their connections for a while
	ip link set "${1}br" address 02:e7:00:00:00:fe
	ip addr add "$2.254/24" dev "${1}br"
	ip link set "${1}br" up
}

# netns_nodes PREFIX NET FIRST LAST CAPACITY [FLAGS...]: memory nodes
# nFIRST..nLAST, node k in namespace PREFIXn<k> at NET.<k>:7000, on the
# bridge of netns_bridge.
netns_nodes() {
	em_pf=$1 em_net=$2 em_first=$3 em_last=$4 em_ncap=$5
	shift 5
	for em_k in $(seq "$em_first" "$em_last"); do
		add_netns "${em_pf}n$em_k" || fail "cannot create namespace ${em_pf}n$em_k"
		ip link add "${em_pf}v$em_k" type veth peer name eth0 netns "${em_pf}n$em_k"
		ip link set "${em_pf}v$em_k" master "${em_pf}br" up
		ip -n "${em_pf}n$em_k" addr add "$em_net.$em_k/24" dev eth0
		ip -n "${em_pf}n$em_k" link set eth0 up
		ip -n "${em_pf}n$em_k" link set lo up
		NODE_WRAP="ip netns exec ${em_pf}n$em_k" NODE_LISTEN="tcp://$em_net.$em_k:7000" \
			start_node "n$em_k" "$em_ncap" "$@"
	done
}
