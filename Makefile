# The Makefile is the contract CI and developers share: `make test` is what CI runs.
CARGO ?= cargo
SHIM_PACKAGES := -p wasmrunner-wasmtime -p wasmrunner-wasmedge -p wasmrunner-oci -p wasmrunner-installer
# containerd releases the end-to-end suite runs against: the system one (Debian 12: 1.6.20)
# and the ones test/containerd/fetch.sh unpacks from Debian's newer suites (1.7, 2.x).
CONTAINERD_MATRIX ?= system target/containerd/trixie/bin target/containerd/sid/bin

.PHONY: all setup build build-all fixtures test unit e2e bench-check lint fmt demo clean

all: build

## setup: install what building and testing need (Debian packages, rustup targets, containerd matrix)
setup:
	scripts/setup-debian.sh --containerd-matrix

## build: the shim binaries and the wasm-oci CLI, in release mode. Each engine binary also
## goes under its shared-manager name (containerd-shim-<engine>d-v1): the same program, a
## hard link, which selects the mode from the name it is started under.
ENGINES := wasmtime wasmedge
LINK_SHARED_NAMES = for engine in $(1); do \
		ln -f target/release/containerd-shim-$$engine-v1 target/release/containerd-shim-$${engine}d-v1; \
	done
build:
	$(CARGO) build --release $(SHIM_PACKAGES) --bins
	@$(call LINK_SHARED_NAMES,$(ENGINES))

## build-all: everything the suites and the bench run (the shims, every crate's tests, the
## e2e and load suites, the bench and its null shim, WasmEdge's examples), in two cargo calls over
## the whole workspace. Cargo unifies dependency features over the packages a call selects, so
## calls over different packages (`-p x`, `--exclude y`) compile the same dependencies again
## with other features: on 2 cores that was a quarter of CI's time. Every later step selects
## the whole workspace too, and so finds everything built.
build-all:
	@echo "=== build-all $$(date +%T)"
	$(CARGO) build --release --workspace --all-targets
	$(CARGO) build --release --workspace --test e2e --test load
	@$(call LINK_SHARED_NAMES,$(ENGINES))

## wasmer: the Wasmer engine, not shipped yet (issue #16), from its own workspace
## (engines/wasmer/Cargo.toml says why), into target/wasmer; its shim goes beside the others,
## under both names, for `WASMRUNNER_ENGINES=wasmer` runs of the e2e suite and for `make
## bench`, which then measures it too (its run-on-host example is the compute baseline).
## Its unit tests: `cargo test --release --manifest-path engines/wasmer/Cargo.toml
## --target-dir target/wasmer`.
.PHONY: wasmer
wasmer:
	$(CARGO) build --release --manifest-path engines/wasmer/Cargo.toml --target-dir target/wasmer --bins --examples
	@mkdir -p target/release
	ln -f target/wasmer/release/containerd-shim-wasmer-v1 target/release/containerd-shim-wasmer-v1
	@$(call LINK_SHARED_NAMES,wasmer)

## test: everything CI runs: setup, one build, lint (fmt and clippy), unit tests, the
## end-to-end suite on every containerd, and a quick benchmark run (a check that it still
## works; timings are not judged)
test: setup build-all lint unit e2e bench-check

## unit: the crates' own tests (the e2e and load suites are `test = false`: they run only
## when named, below)
unit: build-all
	@echo "=== unit $$(date +%T)"
	$(CARGO) test --release --workspace

## e2e: the end-to-end suite against each containerd in CONTAINERD_MATRIX, then the load
## suite (tests/load: short tasks under a CPU hog, every output checked): LOAD_TASKS ctr runs
## and LOAD_CRI_TASKS CRI containers per mode on the newest containerd (the last of the
## matrix), a tenth as many on the others, to keep CI within its time. The third_party area
## (released programs, a minute to build) runs on the newest containerd only: it tests the
## engines' WASI, which no containerd version changes.
LOAD_TASKS ?= 2000
LOAD_CRI_TASKS ?= 200
LOAD_BURST ?= 100
e2e: build-all
	@set -e; last=$(lastword $(CONTAINERD_MATRIX)); for dir in $(CONTAINERD_MATRIX); do \
		if [ "$$dir" = system ]; then unset WASMRUNNER_CONTAINERD_BIN; else export WASMRUNNER_CONTAINERD_BIN=$(CURDIR)/$$dir; fi; \
		if [ "$$dir" = "$$last" ]; then share=1; skip=; else share=10; skip="--skip ::third_party::"; fi; \
		echo "=== e2e against containerd: $$dir $$(date +%T)"; \
		$(CARGO) test --release --workspace --test e2e -- $$skip; \
		echo "=== load against containerd: $$dir $$(date +%T)"; \
		WASMRUNNER_LOAD_TASKS=$$(( $(LOAD_TASKS) / share )) WASMRUNNER_LOAD_CRI_TASKS=$$(( $(LOAD_CRI_TASKS) / share )) \
			WASMRUNNER_LOAD_BURST=$$(( $(LOAD_BURST) / share )) \
			$(CARGO) test --release --workspace --test load; \
	done

## load: the load suite alone, against the newest containerd of the matrix (LOAD_TASKS=10000
## for the figure issue #20 asks for)
.PHONY: load
load: build-all
	WASMRUNNER_CONTAINERD_BIN=$(CURDIR)/$(lastword $(CONTAINERD_MATRIX)) WASMRUNNER_LOAD_TASKS=$(LOAD_TASKS) \
		WASMRUNNER_LOAD_CRI_TASKS=$(LOAD_CRI_TASKS) $(CARGO) test --release --workspace --test load

## soak: the load suite as a soak: SOAK_TASKS tasks of the mix (clean exits, own statuses,
## traps, kills) per engine and mode on both engines, then what is left of them (processes,
## mounts, cgroups, the manager's descriptors, threads and memory) against the start
SOAK_TASKS ?= 10000
SOAK_CRI_TASKS ?= 1000
.PHONY: soak
soak: build-all
	WASMRUNNER_CONTAINERD_BIN=$(CURDIR)/$(lastword $(CONTAINERD_MATRIX)) WASMRUNNER_LOAD_TASKS=$(SOAK_TASKS) \
		WASMRUNNER_LOAD_CRI_TASKS=$(SOAK_CRI_TASKS) WASMRUNNER_LOAD_ENGINES=wasmtime,wasmedge \
		$(CARGO) test --release --workspace --test load

## bench: wasmrunner beside runc through a private containerd (cold start, throughput,
## memory, big modules, compute, serving); prints a table, writes target/bench/results.json.
## BENCH_ARGS=--quick for the short run CI does; see `wasmrunner-bench --help`. Besides the
## shims it runs the null shim (the floor) and WasmEdge's run-on-host example, from build-all,
## and the runwasi stand-in, built here (the feature selects one more binary of the bench
## crate, on the dependencies build-all built); upstream runwasi's shim comes from
## ../shared/anchors/runwasi.
BENCH_ARGS ?=
.PHONY: bench
bench: build-all bench-tools
	$(CARGO) build --release --workspace --features wasmrunner-bench/runwasi-standin \
		--bin containerd-shim-runwasi-standin-v1
	target/release/wasmrunner-bench --json target/bench/results.json $(BENCH_ARGS)

## bench-check: the quick run CI does. It builds neither bench-tools (wasmtime-cli takes too
## long for CI) nor the runwasi stand-in: without them the serving section measures wasmrunner
## alone and says its `wasmtime serve` baseline was not measured, and the cold-start section
## has no stand-in row (upstream runwasi's own shim is the runwasi column either way).
bench-check: build-all
	@echo "=== bench-check $$(date +%T)"
	target/release/wasmrunner-bench --quick --json target/bench/quick.json

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

## lint: formatting and clippy, warnings as errors
lint:
	@echo "=== lint $$(date +%T)"
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets --features wasmrunner-bench/runwasi-standin -- -D warnings

fmt:
	$(CARGO) fmt --all

## demo: set up, build, and run a Wasm container through a private containerd
demo: setup build
	scripts/demo.sh

clean:
	$(CARGO) clean
