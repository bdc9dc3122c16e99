//! `containerd-shim-runwasi-v1`: the baseline for cold start. runwasi's own shim CLI
//! (`containerd_shim_wasm::shim::Cli`, from containerd-shim-wasm, which runs one shim process
//! per container with its own sandbox and instance handling) driving wasmrunner's Wasmtime
//! engine (`wasmrunner_wasmtime::WasmtimeShim`, the very engine code of
//! `containerd-shim-wasmtime-v1`). The bench runs it as `io.containerd.runwasi.v1`: the gap
//! between it and wasmrunner's shims is what wasmrunner's shim layer costs or saves, with
//! the engine held fixed.

use containerd_shim_wasm::shim::Cli;
use wasmrunner_wasmtime::WasmtimeShim;

fn main() {
    WasmtimeShim::run(None);
}
