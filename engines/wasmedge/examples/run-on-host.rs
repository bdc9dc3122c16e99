//! Runs a WASI module with WasmEdge in this process, outside any container:
//! `run-on-host MODULE [ARGS...]`. The benchmarks compare it with the same module run in a
//! container, to show what the container around the engine costs.

fn main() {
    wasmrunner_shim::run_on_host(
        wasmrunner_wasmedge::INFO.name,
        wasmrunner_wasmedge::run_on_host,
    )
}
