# Convenience front end over CMake: `make`, `make test`, `make asan`,
# `make install` (PREFIX=DIR, else CMake's /usr/local; DESTDIR honoured),
# `make bench-llm` (QUICK=1 for the CI smoke run).
BUILD ?= build
JOBS ?= $(shell nproc)

all:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: all
	cd $(BUILD) && ctest --output-on-failure -j 2 --timeout 300

asan:
	@cmake -S . -B build-asan -DEM_SANITIZE=address,undefined >/dev/null
	@cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j 2 --timeout 600 -LE nosan

install: all
	cmake --install $(BUILD) $(if $(PREFIX),--prefix $(PREFIX),)

# LLM inference over the pool against disk and swap (issue 5).
bench-llm: all
	bench/llm/run.sh $(if $(QUICK),--quick,)

clean:
	rm -rf build build-asan build-tsan build-fuzz

.PHONY: all test asan install clean bench-llm
