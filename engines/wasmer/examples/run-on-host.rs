//! Runs a WASI module with Wasmer in this process, outside any container:
//! `run-on-host MODULE [ARGS...]`. The benchmarks compare it with the same module run in a
//! container, to show what the container around the engine costs.

fn main() {
    wasmrunner_shim::run_on_host(wasmrunner_wasmer::INFO.name, wasmrunner_wasmer::run_on_host)
}
