//! `containerd-shim-runwasi-standin-v1`: the stand-in for runwasi the bench used before
//! upstream runwasi's own shim was at hand, kept as a second, labelled column. runwasi's shim
//! CLI (`containerd_shim_wasm::shim::Cli`, from containerd-shim-wasm, one shim process per
//! container with its own sandbox and instance handling) driving wasmrunner's Wasmtime engine
//! (`wasmrunner_wasmtime::WasmtimeShim`, the engine code of `containerd-shim-wasmtime-v1`).
//! The bench runs it as `io.containerd.runwasi-standin.v1`: with the engine held fixed, the
//! gap to wasmrunner's shims is what wasmrunner's shim layer costs or saves.

use containerd_shim_wasm::shim::Cli;
use wasmrunner_wasmtime::WasmtimeShim;

fn main() {
    WasmtimeShim::run(None);
}
