# Convenience front end over CMake: `make`, `make test`, and one target per
# CI leg (`make asan`, `make tsan`, `make fuzz`) that builds and tests with
# the CMake preset of the same name, as scripts/test.sh does, so sanitizer
# flags and test selections live only in CMakePresets.json.
# `make install` (PREFIX=DIR, else CMake's /usr/local; DESTDIR honoured),
# `make format` / `make format-check` run scripts/format.sh;
# `make bench-llm` (QUICK=1 for the CI smoke run), `make bench-kv`,
# `make bench-run` (ordinary programs under `ethermem run`; QUICK=1 for CI).
BUILD ?= build
JOBS ?= $(shell nproc)

all:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: all
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 300

asan tsan fuzz:
	@cmake --preset $@ >/dev/null
	@cmake --build --preset $@ -j $(JOBS)
	ctest --preset $@

install: all
	cmake --install $(BUILD) $(if $(PREFIX),--prefix $(PREFIX),)

format:
	scripts/format.sh

format-check:
	scripts/format.sh --check

# LLM inference over the pool against disk and swap.
bench-llm: all
	bench/llm/run.sh $(if $(QUICK),--quick,)

# The KV cache in the pool: TTFT with prefixes fetched, decode with KV in the pool.
bench-kv: all
	bench/llm/kv.sh

# Ordinary programs under `ethermem run` against plain and swap runs.
bench-run: all
	bench/run/run.sh $(if $(QUICK),--quick,)

clean:
	rm -rf build build-asan build-tsan build-fuzz

.PHONY: all test asan tsan fuzz install format format-check clean bench-llm bench-kv bench-run
