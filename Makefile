# Thin driver over CMake. `make run` and `make test` do all set-up on a fresh Debian 12 machine (as root;
# `apt-get install make` first, the one tool such a machine lacks: README.md, tests/docker/fresh.sh).
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
FUZZ_SECONDS ?= 60
CMAKE_FLAGS ?= -DSOCKGATE_WERROR=ON

# Debian packages the build and tests need; only the missing ones are installed.
DEPS = build-essential cmake pkg-config libmicrohttpd-dev libjansson-dev libwslay-dev libcurl4-openssl-dev \
       libssl-dev openssl clang libclang-rt-14-dev python3 curl procps

# What `make run` builds: the programs a user runs (tests and load generators go to build/tests, build/bench).
PROGRAMS = sockgate sockgate-cli sockgate-echo sockgate-time sockgate-exec sockgate-file sockgate-chat

.PHONY: all deps build programs run test sanitize test-sanitize fuzz bench bench-quick clean

all: build

deps:
	@./scripts/install-deps.sh $(DEPS)

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

programs: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS) --target $(PROGRAMS)

# Starts the gateway with every backend embedded on 127.0.0.1:8080 (Ctrl-C stops it); SOCKGATE_LISTEN
# and every other SOCKGATE_* variable of `build/bin/sockgate --help` apply.
run: programs
	$(BUILD)/bin/sockgate --listen $${SOCKGATE_LISTEN:-127.0.0.1:8080}

# CTEST_ARGS: more ctest arguments (e.g. -E browser).
test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

sanitize: deps
	cmake -S . -B $(ASAN_BUILD) -DSOCKGATE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)

test-sanitize: sanitize
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS) -LE no-sanitize

fuzz: deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DSOCKGATE_FUZZ=ON -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Debug
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers
	./tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# Sockgate side by side with nginx, redis-server, iperf3 and bare loops (bench/run --help); writes
# docs/benchmarks.md and fails when a target is missed. Not part of `test`: timings are not tests.
bench: build
	./bench/run --build-dir $(BUILD)

# One short round of every pair, for a CI smoke check: fails when a measurement cannot be made, not
# when a target is missed (one short round on a shared machine says little); report in $(BUILD).
bench-quick: build
	./bench/run --quick --ignore-targets --build-dir $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
