# The Makefile is the contract CI and developers share: `make test` is what CI runs.
CARGO ?= cargo
SHIM_PACKAGES := -p wasmrunner-wasmtime -p wasmrunner-wasmedge -p wasmrunner-oci -p wasmrunner-installer
# containerd releases the end-to-end suite runs against: the system one (Debian 12: 1.6.20)
# and the ones test/containerd/fetch.sh unpacks from Debian's newer suites (1.7, 2.x).
CONTAINERD_MATRIX ?= system target/containerd/trixie/bin target/containerd/sid/bin

.PHONY: all setup build fixtures test unit e2e bench-check lint fmt demo clean

all: build

## setup: install what building and testing need (Debian packages, rustup targets, containerd matrix)
setup:
	scripts/setup-debian.sh --containerd-matrix

## build: the shim binaries and the wasm-oci CLI, in release mode. Each engine binary also
## goes under its shared-manager name (containerd-shim-<engine>d-v1): the same program, a
## hard link, which selects the mode from the name it is started under.
ENGINES := wasmtime wasmedge
build:
	$(CARGO) build --release $(SHIM_PACKAGES) --bins
	@for engine in $(ENGINES); do \
		ln -f target/release/containerd-shim-$$engine-v1 target/release/containerd-shim-$${engine}d-v1; \
	done

## test: everything CI runs: setup, build, lint (fmt and clippy), unit tests, the end-to-end
## suite on every containerd, and a quick benchmark run (a check that it still works; timings
## are not judged)
test: setup build lint unit e2e bench-check

## unit: the crates' own tests
unit:
	$(CARGO) test --release --workspace --exclude wasmrunner-e2e
	$(CARGO) test --release -p wasmrunner-e2e --lib

## e2e: the end-to-end suite against each containerd in CONTAINERD_MATRIX, then the load
## suite (tests/load: short tasks under a CPU hog, every output checked): LOAD_TASKS ctr runs
## and LOAD_CRI_TASKS CRI containers per mode on the newest containerd (the last of the
## matrix), a tenth as many on the others, to keep CI within its time.
LOAD_TASKS ?= 2000
LOAD_CRI_TASKS ?= 200
LOAD_BURST ?= 100
e2e: build
	@set -e; last=$(lastword $(CONTAINERD_MATRIX)); for dir in $(CONTAINERD_MATRIX); do \
		if [ "$$dir" = system ]; then unset WASMRUNNER_CONTAINERD_BIN; else export WASMRUNNER_CONTAINERD_BIN=$(CURDIR)/$$dir; fi; \
		echo "=== e2e against containerd: $$dir"; \
		$(CARGO) test --release -p wasmrunner-e2e --test e2e; \
		if [ "$$dir" = "$$last" ]; then share=1; else share=10; fi; \
		echo "=== load against containerd: $$dir"; \
		WASMRUNNER_LOAD_TASKS=$$(( $(LOAD_TASKS) / share )) WASMRUNNER_LOAD_CRI_TASKS=$$(( $(LOAD_CRI_TASKS) / share )) \
			WASMRUNNER_LOAD_BURST=$$(( $(LOAD_BURST) / share )) \
			$(CARGO) test --release -p wasmrunner-e2e --test load; \
	done

## load: the load suite alone, against the newest containerd of the matrix (LOAD_TASKS=10000
## for the figure issue #20 asks for)
.PHONY: load
load: build
	WASMRUNNER_CONTAINERD_BIN=$(CURDIR)/$(lastword $(CONTAINERD_MATRIX)) WASMRUNNER_LOAD_TASKS=$(LOAD_TASKS) \
		WASMRUNNER_LOAD_CRI_TASKS=$(LOAD_CRI_TASKS) $(CARGO) test --release -p wasmrunner-e2e --test load

## soak: the load suite as a soak: SOAK_TASKS tasks of the mix (clean exits, own statuses,
## traps, kills) per engine and mode on both engines, then what is left of them (processes,
## mounts, cgroups, the manager's descriptors, threads and memory) against the start
SOAK_TASKS ?= 10000
SOAK_CRI_TASKS ?= 1000
.PHONY: soak
soak: build
	WASMRUNNER_CONTAINERD_BIN=$(CURDIR)/$(lastword $(CONTAINERD_MATRIX)) WASMRUNNER_LOAD_TASKS=$(SOAK_TASKS) \
		WASMRUNNER_LOAD_CRI_TASKS=$(SOAK_CRI_TASKS) WASMRUNNER_LOAD_ENGINES=wasmtime,wasmedge \
		$(CARGO) test --release -p wasmrunner-e2e --test load

## bench: wasmrunner beside runc through a private containerd (cold start, throughput,
## memory, big modules, compute, serving); prints a table, writes target/bench/results.json.
## BENCH_ARGS=--quick for the short run CI does; see `wasmrunner-bench --help`.
BENCH_ARGS ?=
.PHONY: bench
bench: build bench-bins bench-tools
	$(CARGO) run --release -p wasmrunner-bench -- --json target/bench/results.json $(BENCH_ARGS)

## bench-check: the quick run CI does. It does not build bench-tools (wasmtime-cli takes too
## long for CI): without them the serving section measures wasmrunner alone and says its
## `wasmtime serve` baseline was not measured.
bench-check: build bench-bins
	$(CARGO) run --release -p wasmrunner-bench -- --quick --json target/bench/quick.json

## bench-tools: what the bench compares with that is not in the tree: `wasmtime serve` of the
## Wasmtime release the shim embeds (the serving section's baseline), built from the crate
## registry into target/bench-tools once (a release build of Wasmtime's CLI: long on 2 cores).
## component-model-async is what lets `wasmtime serve` link WASIp3 handlers too; it is in the
## build the bench was first measured with.
WASMTIME_CLI_VERSION := 48.0.8
WASMTIME_CLI_ROOT := target/bench-tools/wasmtime-$(WASMTIME_CLI_VERSION)
.PHONY: bench-tools
bench-tools: $(WASMTIME_CLI_ROOT)/bin/wasmtime

$(WASMTIME_CLI_ROOT)/bin/wasmtime:
	$(CARGO) install wasmtime-cli@$(WASMTIME_CLI_VERSION) --locked --no-default-features \
		--features run,serve,cranelift,pooling-allocator,parallel-compilation,cache,component-model-async \
		--root $(WASMTIME_CLI_ROOT) --target-dir target/bench-tools/build

## bench-bins: what the bench runs besides the shims: the null shim (the floor), the runwasi
## stand-in, and WasmEdge's run-on-host (compute's "no container" place). Upstream runwasi's
## shim comes from ../shared/anchors/runwasi (see `wasmrunner-bench --help`).
.PHONY: bench-bins
bench-bins:
	$(CARGO) build --release -p wasmrunner-bench --bins
	$(CARGO) build --release -p wasmrunner-wasmedge --examples

## lint: formatting and clippy, warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## demo: set up, build, and run a Wasm container through a private containerd
demo: setup build
	scripts/demo.sh

clean:
	$(CARGO) clean
