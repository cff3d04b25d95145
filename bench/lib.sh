# bench/lib.sh - what the benchmark scripts that set the machine up around
# a run share: a scratch directory, a cgroup v1 tree, a swap file and a
# memory node, all removed on every exit path, and a few helpers. Sourced
# by bench/run/run.sh and bench/llm/run.sh (bash); bench/ox_bench.sh and
# bench/ox_ab.sh take only netns_pair from it, bench/encrypt.sh,
# bench/redundancy.sh and bench/llm/redundant.sh (sh) only bench_scratch.
#
# Before sourcing, the script sets BENCH (its name in messages: bench-BENCH)
# and may define bench_cleanup_more, called by the cleanup before the
# scratch directory goes (for what only that script creates).
#   say MSG / die MSG / skip MSG   a line on stderr; die exits 1, skip 77
#   bytes SIZE                     512M, 2G... in bytes (binary units)
#   bench_setup                    WORK, CGROOT, SWAP made; cleanup on exit
#   node_start CAP HOST [WRAP...]  ethermemd on HOST (port from the kernel),
#                                  started through WRAP (an `ip netns exec`);
#                                  NODE_PID, ETHERMEM_NODES and
#                                  ETHERMEM_SECRET_FILE exported
#   swap_on SIZE / swap_off        the swap file, once on at a time
#   bench_scratch NAME             the light setup of scripts that only
#                                  start nodes on loopback: T, a directory
#                                  /tmp/NAME.XXXXXX holding a cluster secret
#                                  (ETHERMEM_SECRET_FILE exported); the
#                                  programs in PIDS killed at exit, T removed
#   netns_pair NS1 NS2 IF1 IF2 NET  two namespaces joined by a veth pair
#                                  (IF1 in NS1 at NET.1, IF2 in NS2 at
#                                  NET.2, MTU 9000, loopbacks up); removing
#                                  the namespaces is the caller's
# RUN_PID: the measured run in progress, killed first by the cleanup.

say() { echo "bench-$BENCH: $*" >&2; }
die() { say "$*"; exit 1; }
skip() { say "SKIP: $*"; exit 77; }

bytes() {
	awk -v s="$1" 'BEGIN { n = s + 0; u = toupper(substr(s, length(s)));
		m = u == "K" ? 1024 : u == "M" ? 1048576 : u == "G" ? 1073741824 : u == "T" ? 1099511627776 : 1;
		printf "%.0f\n", n * m }'
}

bench_cleanup() {
	trap '' INT TERM HUP
	[ -n "$RUN_PID" ] && kill -KILL "$RUN_PID" 2>/dev/null
	# The measured program runs under timeout, in a cgroup: kill what is
	# left there, wait until it is gone, and lift the limit, because
	# swapoff charges the pages it brings back to that cgroup (ENOMEM at a
	# full limit otherwise).
	if [ -d "$CGROOT" ]; then
		for _ in $(seq 50); do
			busy=0
			for c in "$CGROOT"/*/; do
				[ -f "$c/cgroup.procs" ] || continue
				echo -1 > "$c/memory.limit_in_bytes" 2>/dev/null
				while read -r p; do busy=1; kill -KILL "$p" 2>/dev/null; done < "$c/cgroup.procs"
			done
			[ $busy = 0 ] && break
			sleep 0.1
		done
	fi
	[ -n "$NODE_PID" ] && kill "$NODE_PID" 2>/dev/null
	wait 2>/dev/null
	if [ $SWAP_ON = 1 ]; then
		for _ in 1 2 3 4 5; do
			swapoff "$SWAP" 2>/dev/null && { SWAP_ON=0; break; }
			sleep 0.5
		done
		[ $SWAP_ON = 1 ] && say "warning: swapoff $SWAP failed: run swapoff $SWAP by hand"
	fi
	[ $SWAP_ON = 0 ] && rm -f "$SWAP"
	if [ -d "$CGROOT" ]; then
		for _ in 1 2 3 4 5; do
			for c in "$CGROOT"/*/; do [ -d "$c" ] && rmdir "$c" 2>/dev/null; done
			rmdir "$CGROOT" 2>/dev/null && break
			sleep 0.2
		done
		[ -d "$CGROOT" ] && say "warning: could not remove $CGROOT"
	fi
	declare -F bench_cleanup_more >/dev/null && bench_cleanup_more
	[ $SWAP_ON = 0 ] && rm -rf "$WORK"
}

bench_setup() {
	ID=$$
	WORK=$(mktemp -d "/var/tmp/ethermem-bench-$BENCH.XXXXXX") || die "mktemp"
	CGROOT=/sys/fs/cgroup/memory/ethermem-$BENCH-$ID
	SWAP=$WORK/swapfile
	SWAP_ON=0 NODE_PID='' RUN_PID=''
	trap bench_cleanup EXIT
	trap 'say "interrupted"; exit 130' INT TERM HUP
	mkdir "$CGROOT" || die "cannot create $CGROOT"
}

node_start() {
	local cap=$1 host=$2
	shift 2
	echo "bench-$BENCH secret $ID $(date +%s%N)" > "$WORK/secret"
	chmod 600 "$WORK/secret"
	"$@" "$B/ethermemd" --listen "tcp://$host:0" --capacity "$cap" \
		--secret-file "$WORK/secret" --port-file "$WORK/port" 2>"$WORK/node.log" &
	NODE_PID=$!
	for _ in $(seq 200); do [ -s "$WORK/port" ] && break; sleep 0.05; done
	[ -s "$WORK/port" ] || die "ethermemd did not start: $(cat "$WORK/node.log")"
	ETHERMEM_NODES=tcp://$host:$(cat "$WORK/port")
	export ETHERMEM_NODES ETHERMEM_SECRET_FILE=$WORK/secret
}

swap_on() {
	[ $SWAP_ON = 1 ] && return 0
	rm -f "$SWAP"
	fallocate -l "$1" "$SWAP" && chmod 600 "$SWAP" && mkswap "$SWAP" >/dev/null || die "making a swap file"
	SWAP_ON=1 # the cleanup tries swapoff whatever happens next
	swapon "$SWAP" || die "swapon $SWAP"
}
swap_off() {
	[ $SWAP_ON = 1 ] || return 0
	swapoff "$SWAP" || die "swapoff $SWAP"
	SWAP_ON=0
	rm -f "$SWAP"
}

bench_scratch() {
	T=$(mktemp -d "/tmp/$1.XXXXXX") || exit 1
	PIDS=""
	trap 'kill $PIDS 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT
	printf 'a cluster secret for the benchmark, 40 bytes\n' > "$T/secret"
	chmod 600 "$T/secret"
	export ETHERMEM_SECRET_FILE="$T/secret"
}

# The OmniXtend benchmarks' two hosts: jumbo frames because OmniXtend
# carries up to 8 KiB of data per frame.
netns_pair() {
	local a=$1 b=$2 ia=$3 ib=$4 net=$5 n
	ip netns add "$a" && ip netns add "$b" &&
		ip link add "$ia" netns "$a" type veth peer name "$ib" netns "$b" &&
		ip -n "$a" addr add "$net.1/24" dev "$ia" &&
		ip -n "$b" addr add "$net.2/24" dev "$ib" || return 1
	for n in "$a" "$b"; do ip -n "$n" link set lo up || return 1; done
	ip -n "$a" link set "$ia" mtu 9000 up && ip -n "$b" link set "$ib" mtu 9000 up
}
