#!/bin/bash
# ox_interop.sh BUILD_DIR SRC_DIR - ethermem's OmniXtend against ETRI's
# published OmniXtend software, run for real over a veth pair between two
# network namespaces.  SRC_DIR holds any of these checkouts (a missing one is
# skipped), as cloned from GitHub:
#   omnixtend-c/   github.com/omnixtend/omnixtend-c (or swsok/omnixtend-c):
#                  the C endpoint, built twice, normal and WDE=1
#   oxmem-fuse/    github.com/MemoryInterconnect/oxmem-fuse (needs libfuse-dev)
#   MemoryNode/    github.com/MemoryInterconnect/MemoryNode
# Rows:
#   1. omnixtend-c as requester (both builds) against ethermemd --ox-export:
#      open, then its test command: 8-byte writes and reads back at 256
#      addresses; every value read must be the one written
#   2. oxmem-fuse as requester: mount the exported region as a file, write
#      4 MiB of random data with dd (pipelined 1 KiB writes), read it back,
#      compare (node with --ox-verbatim --ox-reply-per-frame)
#   3. MemoryNode as the memory node: ethermem's requester (ox-selftest
#      --lat, Gets) and ox-conform (whole words verified; narrow accesses
#      reported, as that node ignores byte lanes)
# Each program is built from SRC_DIR into a temporary directory with the
# flags noted beside it; their sources are not changed, except that the C
# endpoint's 4 GiB local memory (which a requester never uses, and which it
# zeroes at start) is made 256 MiB.
# Prints one line per row with ops and bytes verified; exit 0 when every row
# expected to work did.  Needs root; names carry "oxi" and our PID.
B=${1:?usage: ox_interop.sh BUILD_DIR SRC_DIR}
SRC=${2:?usage: ox_interop.sh BUILD_DIR SRC_DIR}
B=$(cd "$B" && pwd)
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)"; exit 1; }
for f in ethermemd ox-conform ox-selftest; do
	[ -x "$B/$f" ] || { echo "build first: no $B/$f"; exit 1; }
done

P=$$
N=oxin$P; C=oxic$P; VN=oxia$P; VC=oxib$P
MAC_N=02:0d:00:00:00:01
MAC_C=02:0d:00:00:00:02
T=$(mktemp -d /tmp/oxinterop.XXXXXX)
PIDS=""
cleanup() {
	[ -s "$T/fuse.pid" ] && PIDS="$PIDS $(cat "$T/fuse.pid")"
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	ip netns del $N 2>/dev/null
	ip netns del $C 2>/dev/null
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
BAD=0
row() { printf '%-44s %s\n' "$1" "$2"; }
bad() { row "$1" "FAILED: $2"; BAD=1; }

ip netns add $N && ip netns add $C || exit 1
ip -n $N link add $VN type veth peer name $VC
ip -n $N link set $VC netns $C
ip -n $N link set $VN address $MAC_N mtu 1500 up
ip -n $C link set $VC address $MAC_C mtu 1500 up
ip -n $N link set lo up
ip -n $C link set lo up
printf 'a secret for the interop run\n' > "$T/secret"
chmod 600 "$T/secret"

NODE=""
start_node() {   # extra ethermemd flags...
	ip netns exec $N "$B/ethermemd" --listen tcp://127.0.0.1:0 --secret-file "$T/secret" \
		--capacity 128M --ox $VN "$@" --ox-export interop@0x0 --ox-export-create 64M \
		--ox-allow $MAC_C 2>"$T/node.log" &
	NODE=$!
	PIDS="$PIDS $NODE"
	for _ in $(seq 300); do
		grep -q "exported at" "$T/node.log" 2>/dev/null && return 0
		sleep 0.01
	done
	echo "node did not start: $(cat "$T/node.log")"
	exit 1
}
stop_node() {
	kill "$NODE" 2>/dev/null
	wait "$NODE" 2>/dev/null
	NODE=""
}

# ---------------------------------------------------------- omnixtend-c
if [ -f "$SRC/omnixtend-c/tloe_endpoint.c" ]; then
	for build in normal WDE; do
		d=$T/omnixtend-c-$build
		cp -rL "$SRC/omnixtend-c" "$d"
		sed -i 's/^#define MEM_SIZE .*/#define MEM_SIZE (256ULL << 20)/' "$d/tilelink_handler.c"
		flags="-g -O1 -w"
		[ $build = WDE ] && flags="$flags -DWDE"
		if ! make -s -C "$d" tloe_endpoint CFLAGS="$flags" >"$T/make.log" 2>&1; then
			bad "omnixtend-c ($build) requester" "does not build: $(tail -3 "$T/make.log")"
			continue
		fi
		start_node
		# 't 100': 0x100 writes of 0x1000+i at 0x1000+0x1000*i, each read back
		{ echo c; sleep 3; echo "t 100"; sleep 4; echo s; sleep 0.3; echo q; } |
			timeout 15 ip netns exec $C stdbuf -o0 "$d/tloe_endpoint" -i $VC -d $MAC_N -m \
			>"$T/etri.out" 2>&1
		stop_node
		grep -E '^(> )?0x[0-9A-F]+$' "$T/etri.out" | sed 's/^> //' | sort -u >"$T/got"
		for i in $(seq 0 255); do printf '0x%X\n' $((0x1000 + i)); done | sort -u >"$T/want"
		n=$(grep -cE '^(> )?0x[0-9A-F]+$' "$T/etri.out")
		if ! grep -q "Open connection complete" "$T/etri.out"; then
			bad "omnixtend-c ($build) requester" "open never completed"
		elif cmp -s "$T/got" "$T/want" && [ "$n" = 256 ]; then
			row "omnixtend-c ($build) requester" "ok: open, 256 writes + 256 reads, $((n * 8)) bytes verified"
		else
			bad "omnixtend-c ($build) requester" "$n values read, $(comm -13 "$T/got" "$T/want" | wc -l) missing"
		fi
	done
else
	row "omnixtend-c" "skipped (no $SRC/omnixtend-c)"
fi

# ---------------------------------------------------------- oxmem-fuse
if [ -f "$SRC/oxmem-fuse/oxmem-fuse.c" ]; then
	d=$T/oxmem-fuse
	cp -rL "$SRC/oxmem-fuse" "$d"
	if ! (cd "$d" && cc -w -D_FILE_OFFSET_BITS=64 -DFUSE_USE_VERSION=22 oxmem-fuse.c \
		lib-ox-packet.c lib-queue.c -o oxmem-mount -lfuse -lpthread) >"$T/make.log" 2>&1; then
		row "oxmem-fuse requester" "skipped: does not build here (libfuse-dev?)"
	else
		start_node --ox-verbatim --ox-reply-per-frame
		head -c $((4 << 20)) /dev/urandom >"$T/src.bin"
		# the mount lives in the namespace's own mount namespace: one shell
		cat >"$T/fuse.sh" <<EOF
mkdir -p $T/mnt
$d/oxmem-mount -f --netdev=$VC --mac=$MAC_N --size=64 --base=0x0 $T/mnt >$T/fuse.log 2>&1 &
F=\$!
echo \$F >$T/fuse.pid
for _ in \$(seq 100); do [ -e $T/mnt/oxmem ] && break; sleep 0.05; done
[ -e $T/mnt/oxmem ] || { echo "no mount"; kill \$F; exit 1; }
dd if=$T/src.bin of=$T/mnt/oxmem bs=64k conv=notrunc 2>&1 | tail -1
dd if=$T/mnt/oxmem of=$T/back.bin bs=64k count=64 2>&1 | tail -1
umount $T/mnt 2>/dev/null || fusermount -u $T/mnt
sleep 0.3
kill \$F 2>/dev/null
EOF
		timeout 60 ip netns exec $C bash "$T/fuse.sh" >"$T/fuse.out" 2>&1
		stop_node
		if cmp -s "$T/src.bin" "$T/back.bin"; then
			row "oxmem-fuse requester" "ok: 4 MiB written, read back, 4194304 bytes verified ($(grep -c copied "$T/fuse.out") dd runs)"
		else
			bad "oxmem-fuse requester" "data differs or hung: $(tr '\n' ' ' <"$T/fuse.out")"
		fi
	fi
else
	row "oxmem-fuse" "skipped (no $SRC/oxmem-fuse)"
fi

# ---------------------------------------------------------- MemoryNode
if [ -f "$SRC/MemoryNode/memorynode.c" ]; then
	d=$T/MemoryNode
	cp -rL "$SRC/MemoryNode" "$d"
	# memorynode.c frees a pointer of a stack struct it never initialised
	# on its first frame; zero-initialised automatics make that free(NULL)
	if ! gcc -g -w -DSIM=1 -ftrivial-auto-var-init=zero -o "$d/memorynode" \
		"$d/ox_common.c" "$d/memorynode.c" >"$T/make.log" 2>&1; then
		bad "MemoryNode" "does not build: $(tail -3 "$T/make.log")"
	else
		mn() {
			ip netns exec $N "$d/memorynode" -i $VN -s 64M >"$T/mn.log" 2>&1 &
			MN=$!
			PIDS="$PIDS $MN"
			sleep 0.5
		}
		mn
		out=$(timeout 30 ip netns exec $C "$B/ox-selftest" --lat $VC --peer $MAC_N --size 64 \
			--count 2000 --verbatim 2>&1)
		if echo "$out" | grep -q "p50"; then
			row "MemoryNode + ethermem requester" "ok: 2000 Gets of 64 B ($(echo "$out" | grep -o 'p50 [0-9.]* us'))"
		else
			bad "MemoryNode + ethermem requester" "$(echo "$out" | tail -2 | tr '\n' ' ')"
		fi
		kill $MN 2>/dev/null; wait $MN 2>/dev/null
		mn
		out=$(timeout 60 ip netns exec $C "$B/ox-conform" --iface $VC --peer $MAC_N --base 0 \
			--len $((64 << 20)) --checks words --verbatim --no-credit 2>&1)
		if echo "$out" | grep -q "failures 0"; then
			row "MemoryNode + ox-conform, words 8 B-1 KiB" "ok: $(echo "$out" | grep -o 'ops.*')"
		else
			bad "MemoryNode + ox-conform, words 8 B-1 KiB" "$(echo "$out" | tail -3 | tr '\n' ' ')"
		fi
		kill $MN 2>/dev/null; wait $MN 2>/dev/null
		mn
		out=$(timeout 60 ip netns exec $C "$B/ox-conform" --iface $VC --peer $MAC_N --base 0 \
			--len $((64 << 20)) --checks narrow --verbatim --no-credit 2>&1)
		# expected to differ: that node puts narrow data at the start of
		# the flit, not in the byte lane of its address
		row "MemoryNode + ox-conform, narrow 1/2/4 B" "differs as known (byte lanes): $(echo "$out" | grep -o 'failures [0-9]*' | cut -d' ' -f2) of 31 checks (28 narrow Gets, 3 words after narrow Puts)"
		kill $MN 2>/dev/null; wait $MN 2>/dev/null
	fi
else
	row "MemoryNode" "skipped (no $SRC/MemoryNode)"
fi
exit $BAD
