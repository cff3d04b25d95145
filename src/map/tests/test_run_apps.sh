#!/bin/bash
# test_run_apps.sh CASE - `ethermem run` on what ordinary programs do to
# their memory: each case runs plainly and under the shim with a small
# budget, and the outputs must be the same (apps.c prints digests).
#   split   madvise/mprotect cutting a fetch unit (C, then NumPy)
#   alloc   a program linked with another allocator (Debian's redis-server,
#           jemalloc)
#   fork    fork children, fork + exec, posix_spawn (C), and Python's
#           multiprocessing fork pool
#   advise  MADV_DONTNEED/FREE/REMOVE, mprotect, hugepage hints
#   write   write(2)/read(2) with pool buffers
#   small   a heap of small objects only, with --small-objects: peak
#           resident within the budget plus slack, every byte checked,
#           realloc/calloc/memalign/usable size, a forked child
#   units   objects the size of a SQLite page-cache entry, each inside one
#           fetch unit of the arena (--small-objects)
#   threads eight threads faulting at once (served by several engine
#           threads), over twice the budget
#   redis   Debian's redis-server (jemalloc) with a data set four times
#           the budget: the same DEBUG DIGEST as a plain run, resident
#           memory bounded, and a BGSAVE whose dump a plain server loads
#           back to the same digest (the fork child writes it)
# Exit 0 pass, 1 fail, 77 skip (not root: no userfaultfd).
set -u
. "$(dirname "$0")/../../../tests/lib.sh"
need_root
D=$T
C=${1:?case}
PY=/usr/bin/python3

start_node a 1G
export ETHERMEM_NODES=tcp://127.0.0.1:$PORT_a

# run NAME LOCAL CMD...: plain, then under the shim (with $RUN_FLAGS);
# outputs compared, and the shim must have put something in the pool
run() {
	local name=$1 mem=$2
	shift 2
	timeout 60 "$@" > "$D/$name.plain" 2> "$D/$name.plain.err" \
		|| { cat "$D/$name.plain.err"; fail "$name: plain run"; }
	ETHERMEM_PRELOAD_STATS=1 timeout 60 "$B/ethermem" run --local-mem "$mem" ${RUN_FLAGS:-} -- "$@" \
		> "$D/$name.pool" 2> "$D/$name.err" || { rc=$?; cat "$D/$name.err"; fail "$name: under ethermem run (rc $rc)"; }
	cmp -s "$D/$name.plain" "$D/$name.pool" \
		|| { diff "$D/$name.plain" "$D/$name.pool" | head; cat "$D/$name.err"; fail "$name: output differs"; }
	grep -q "fetched [0-9]" "$D/$name.err" || { cat "$D/$name.err"; fail "$name: no statistics line"; }
	echo "$name: $(grep 'fetched' "$D/$name.err" | tail -1)"
}

case $C in
split)
	run split 4M "$B/test_map_apps" split
	if $PY -c 'import numpy' 2>/dev/null; then
		cat > "$D/np.py" <<'PY'
import numpy as np
a = np.empty(8 << 20, dtype=np.uint8)   # 8 MiB: NumPy asks for huge pages from base + 4 KiB
a[:] = 3
b = np.arange(1 << 20, dtype=np.float64) # 8 MiB
print(int(a.sum()), float((b * 2).sum()))
PY
		run numpy 16M $PY "$D/np.py"
	else
		echo "python3-numpy missing: NumPy case skipped"
	fi
	;;
alloc)
	need_cmd redis-server
	need_cmd redis-cli
	run redis-version 16M redis-server --version
	# a short run: values set, read back, then shut down
	P=$((20000 + RANDOM % 20000))
	ETHERMEM_PRELOAD_STATS=1 timeout 60 "$B/ethermem" run --local-mem 16M -- \
		redis-server --port $P --save "" --appendonly no --dir "$D" > "$D/redis.out" 2> "$D/redis.err" &
	R=$!
	for _ in $(seq 100); do redis-cli -p $P ping >/dev/null 2>&1 && break; sleep 0.1; done
	redis-cli -p $P ping | grep -q PONG || { cat "$D/redis.out" "$D/redis.err"; fail "redis did not start"; }
	awk 'BEGIN { v = sprintf("%64s", ""); gsub(/ /, "v", v); for (i = 1; i <= 200; i++) print "SET k" i " " v i }' \
		| redis-cli -p $P >/dev/null
	redis-cli -p $P GET k137 | grep -q "v137$" || fail "redis GET"
	[ "$(redis-cli -p $P DBSIZE)" = 200 ] || fail "redis DBSIZE"
	redis-cli -p $P SHUTDOWN NOSAVE >/dev/null 2>&1
	wait $R || { cat "$D/redis.err"; fail "redis under ethermem run exited badly"; }
	grep -q "fetched [0-9]" "$D/redis.err" || { cat "$D/redis.err"; fail "redis: no statistics line"; }
	;;
fork)
	run fork 4M "$B/test_map_apps" fork
	cat > "$D/mp.py" <<'PY'
import multiprocessing as mp
big = bytearray(b"x" * (32 << 20))   # a pool block the children inherit
def work(i):
    return sum(big[i * 4096:(i + 1) * 4096:64]) + i
if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(2) as p:
        print(sum(p.map(work, range(512))))
PY
	run mp-fork 8M $PY "$D/mp.py"
	;;
advise)
	run advise 4M "$B/test_map_apps" advise
	;;
write)
	run write 4M "$B/test_map_apps" write "$D"
	;;
small)
	# 8 MiB of objects of 8 B to 8 KiB (about 17 MiB resident plainly,
	# with realloc's moves) through a 2 MiB budget
	RUN_FLAGS=--small-objects run small 2M "$B/test_map_smallobj" 8
	plain=$(sed -n 's/^peak-rss-kib //p' "$D/small.plain.err")
	pool=$(sed -n 's/^peak-rss-kib //p' "$D/small.err")
	# the budget plus 8 MiB for the program, its libraries and the
	# shim's own: the plain run must be above that or the check says nothing
	bound=$(((2 + 8) * 1024))
	echo "peak resident: plain ${plain} KiB, under ethermem run --small-objects ${pool} KiB (bound ${bound})"
	[ "$plain" -gt "$bound" ] || fail "the plain run stays below the bound ($plain KiB): nothing checked"
	[ "$pool" -le "$bound" ] || fail "small objects not bounded: $pool KiB resident with a 2 MiB budget"
	grep -q "small-arena [1-9]" "$D/small.err" || fail "no arena was used"
	;;
units)
	# objects of a SQLite page-cache entry's size, each inside one 16 KiB
	# fetch unit (the default) of the small-object arena
	ETHERMEM_PRELOAD_STATS=1 timeout 60 "$B/ethermem" run --local-mem 2M --small-objects \
		-- "$B/test_map_smallobj" units 16384 > "$D/units.out" 2> "$D/units.err" ||
		{ cat "$D/units.out" "$D/units.err"; fail "objects cross a fetch unit's edge"; }
	cat "$D/units.out"
	grep -q "small-arena [1-9]" "$D/units.err" || fail "no arena was used"
	;;
threads)
	run threads 8M "$B/test_map_threadsort" 8 1 8
	;;
redis)
	need_cmd redis-server
	need_cmd redis-cli
	# redis_up NAME [WRAP...]: a server in $D/NAME on a free port ($RP)
	# with debug commands on, started through WRAP
	redis_up() {
		local name=$1
		shift
		mkdir -p "$D/$name"
		RP=$(free_port)
		spawn "$@" redis-server --port "$RP" --save "" --appendonly no --dir "$D/$name" \
			--enable-debug-command yes > "$D/$name.out" 2> "$D/$name.err"
		RPID=$!
		FAIL_SHOW="$FAIL_SHOW $D/$name.out $D/$name.err"
		wait_for 30 "redis $name to answer" sh -c "redis-cli -p $RP ping 2>/dev/null | grep -q PONG"
	}
	# load: 16000 values of 4 KiB (DEBUG POPULATE is deterministic) and
	# some of other sizes: 32 MiB of values plus Redis's own per-key memory
	load() {
		redis-cli -p "$RP" DEBUG POPULATE 8000 key 4096 | grep -q OK || fail "DEBUG POPULATE"
		awk 'BEGIN { for (i = 1; i <= 2000; i++) printf "SET s%d %0*d\n", i, 1 + i * 7 % 900, i }' \
			| redis-cli -p "$RP" > /dev/null
		redis-cli -p "$RP" DBSIZE | grep -qx 10000 || fail "DBSIZE after the load"
	}
	rss() { redis-cli -p "$RP" INFO memory | sed -n 's/^used_memory_rss:\([0-9]*\).*/\1/p'; }
	down() {
		redis-cli -p "$RP" SHUTDOWN NOSAVE > /dev/null 2>&1
		wait "$RPID" || fail "redis $1 exited badly"
	}

	redis_up plain
	load
	want=$(redis-cli -p "$RP" DEBUG DIGEST)
	plain_rss=$(rss)
	down plain

	ETHERMEM_PRELOAD_STATS=1 redis_up pool timeout 120 "$B/ethermem" run --local-mem 8M --
	load
	got=$(redis-cli -p "$RP" DEBUG DIGEST)
	pool_rss=$(rss)
	[ "$got" = "$want" ] || fail "digest under ethermem run $got, plain $want"
	# the budget plus 24 MiB for Redis itself, its libraries and what
	# jemalloc keeps below the threshold
	bound=$(((8 + 24) << 20))
	echo "resident: plain $plain_rss, under ethermem run --local-mem 8M $pool_rss (bound $bound)"
	[ "$plain_rss" -gt "$bound" ] || fail "the plain run stays below the bound ($plain_rss): nothing checked"
	[ "$pool_rss" -le "$bound" ] || fail "Redis not bounded: $pool_rss bytes resident with an 8 MiB budget"
	# BGSAVE forks a child that writes the whole data set
	redis-cli -p "$RP" BGSAVE | grep -q "started" || fail "BGSAVE did not start"
	wait_for 60 "BGSAVE to end" sh -c "redis-cli -p $RP INFO persistence | grep -q '^rdb_bgsave_in_progress:0'"
	redis-cli -p "$RP" INFO persistence | grep -q '^rdb_last_bgsave_status:ok' \
		|| { redis-cli -p "$RP" INFO persistence; fail "BGSAVE failed"; }
	[ "$(redis-cli -p "$RP" DEBUG DIGEST)" = "$want" ] || fail "digest changed after the fork"
	down pool
	grep -q "blocks [1-9][0-9]* faults [0-9]* fetched [1-9]" "$D/pool.err" \
		|| { cat "$D/pool.err"; fail "Redis did not use the pool"; }
	echo "redis: $(grep 'fetched' "$D/pool.err" | tail -1)"

	# the child's dump, loaded by a plain server
	mkdir -p "$D/load"
	cp "$D/pool/dump.rdb" "$D/load/" || fail "no dump written"
	redis_up load
	[ "$(redis-cli -p "$RP" DEBUG DIGEST)" = "$want" ] || fail "the BGSAVE dump loads to another digest"
	down load
	;;
*)
	fail "unknown case $C"
	;;
esac
echo ok
