//! WasmEdge on runwasi's engine contract: engine code only. The binary
//! `containerd-shim-wasmedge-v1` (src/main.rs) hands it to wasmrunner's shim.
//!
//! WasmEdge runs core modules (WASI preview 1); components get a clear error. Modules from
//! wasm-layer images are compiled ahead of time (WasmEdge's LLVM AOT compiler, universal wasm
//! format) and cached in containerd's content store; a module from the rootfs runs in
//! WasmEdge's interpreter. Either way the module is first rewritten to bound its own call
//! depth (`call_depth`), which libwasmedge 0.14 does not.

pub mod call_depth;
mod compiler;
mod engine;
mod sandbox;

pub use engine::{INFO, LIBWASMEDGE_VERSION, WasmEdgeShim, new_config};
pub use sandbox::run_on_host;
