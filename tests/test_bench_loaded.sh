#!/bin/bash
# test_bench_loaded.sh - `ethermem bench loaded --json` runs end to end
# against a real node and prints, for bulk reads and then bulk writes, one
# row per offered load (0, 0.25, 0.5, 0.8, 1) with the documented fields,
# and refuses bad arguments. It checks shape, not speed: the figures are
# the benchmark's business. Then the node's --bulk-slice: data intact.
set -u
. "$(dirname "$0")/lib.sh"
start_node a 256M
export ETHERMEM_NODES="tcp://127.0.0.1:$PORT_a"
"$B/ethermem" bench loaded --json --quick --time 0.2 --clients 1 > "$T/out" ||
	fail "bench loaded failed"
[ "$(wc -l < "$T/out")" = 10 ] || fail "want 10 rows, got: $(cat "$T/out")"
for bulk in read write; do
	for ld in 0.00 0.25 0.50 0.80 1.00; do
		grep -q "\"op\":\"loaded\",\"bulk_op\":\"$bulk\",\"load\":$ld," "$T/out" ||
			fail "no $bulk row at load $ld"
	done
done
while read -r line; do
	for f in op load transport probe_p50_us probe_p99_us probe_p999_us bulk_gbps \
		 bulk_alone_gbps bulk_ratio probe_samples; do
		case "$line" in *"\"$f\":"*) ;; *) fail "row without $f: $line" ;; esac
	done
	case "$line" in *'"transport":"tcp"'*) ;; *) fail "not over tcp: $line" ;; esac
	# every level measured the probe, and a loaded level moved bulk data
	case "$line" in *'"probe_samples":0,'*) fail "probe never ran: $line" ;; esac
	case "$line" in
	*'"load":0.00,'*) ;;
	*'"bulk_gbps":0.000,'*) fail "no bulk data moved under load: $line" ;;
	esac
done < "$T/out"
"$B/ethermem" bench loaded --reads-only --quick --time 0.2 --clients 1 > "$T/text" ||
	fail "text output failed"
grep -q "goal <= 2" "$T/text" || fail "no 80% summary: $(cat "$T/text")"
for bad in "--time 0" "--time abc" "--clients 0" "--clients 99" "--bogus"; do
	# shellcheck disable=SC2086
	"$B/ethermem" bench loaded $bad > "$T/bad" 2>&1 && fail "'$bad' accepted"
	grep -q "ethermem bench loaded:" "$T/bad" || fail "'$bad': no clear error: $(cat "$T/bad")"
done
# A node sending read replies in slices that divide nothing still returns
# every byte in place, and refuses a slice it cannot use.
start_node s 64M --bulk-slice 5000
head -c $((3 * 1048576 + 123)) /dev/urandom > "$T/file"
ETHERMEM_NODES="tcp://127.0.0.1:$PORT_s" "$B/ethermem" import "$T/file" sliced ||
	fail "import to the sliced node"
ETHERMEM_NODES="tcp://127.0.0.1:$PORT_s" "$B/ethermem" export sliced "$T/back" ||
	fail "export from the sliced node"
cmp -s "$T/file" "$T/back" || fail "sliced read replies corrupted the data"
"$B/ethermemd" --capacity 1M --secret-file "$ETHERMEM_SECRET_FILE" --bulk-slice 1x 2>"$T/bad" &&
	fail "--bulk-slice 1x accepted"
grep -q "bulk-slice" "$T/bad" || fail "--bulk-slice 1x: no clear error: $(cat "$T/bad")"
echo "bench loaded: $(wc -l < "$T/out") rows ok, sliced replies intact"
