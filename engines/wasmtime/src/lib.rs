//! Wasmtime on runwasi's engine contract: engine code only. The binary
//! `containerd-shim-wasmtime-v1` (src/main.rs) hands it to wasmrunner's shim.

mod compiler;
mod cpu_deadline;
mod engine;
mod guest;
mod sandbox;
mod serve;

pub use engine::{INFO, WASMTIME_VERSION, WasmtimeShim, new_engine};
