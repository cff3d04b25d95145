#!/bin/bash
# deps.sh - installs the Debian packages ethermem needs to build, test and
# benchmark, skipping those already present (so a warm machine pays nothing).
set -euo pipefail
PKGS=(
	gcc make cmake pkg-config libsodium-dev      # build
	liburing-dev                                 # the node's --io uring (optional)
	libisal-dev                                  # erasure coding (ec:K+M regions)
	clang libclang-rt-14-dev                     # fuzzing (libFuzzer) and sanitizers
	clang-format                                 # scripts/format.sh
	iproute2 procps util-linux                   # namespaces, veth, swap, sysctl
	libbpf-dev libxdp-dev                        # AF_XDP measurements (optional path)
	redis-server redis-tools                     # the Redis benchmarks and the Redis case of bench/run
	sqlite3                                      # the SQLite case of bench/run
	gnuplot-nox                                  # the inference benchmark's chart
	python3                                      # small helpers in benchmark scripts
	libmicrohttpd-dev prometheus curl            # the node's /metrics, and its test
	python3-dev python3-setuptools python3-pip   # the Python package (for /usr/bin/python3)
	python3-numpy python3-torch
	etcd-server etcd-client                      # membership and region directory (cluster tests)
)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "deps: installing ${missing[*]}"
	if [ "$(id -u)" != 0 ]; then
		echo "deps: run as root (apt-get needs it), or install: ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# the packaged redis-server starts a system instance; we run our own
	systemctl disable --now redis-server >/dev/null 2>&1 || true
	# likewise the packaged Prometheus; the metrics test starts its own
	systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
	# likewise etcd: the tests start their own on free ports
	systemctl disable --now etcd >/dev/null 2>&1 || true
fi
