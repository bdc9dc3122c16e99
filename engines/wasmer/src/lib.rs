//! Wasmer on runwasi's engine contract: engine code only. The binary
//! `containerd-shim-wasmer-v1` (src/main.rs) hands it to wasmrunner's shim.
//!
//! Wasmer runs core modules (WASI preview 1) compiled with its Cranelift backend; components
//! get a clear error. A module is compiled once per node (the shim's node cache) or once per
//! wasm-layer image (runwasi's precompile cache in containerd's content store), and each
//! container loads the serialized code. Only WASI preview 1 is linked: a module that imports
//! Wasmer's WASIX extensions (processes, sockets, threads) is refused. The guest's files are
//! its grant's directories only, each reached beneath its own handle (src/files.rs), and its
//! stdio looks like a terminal only when it is one (src/stdio.rs).

mod compiler;
mod engine;
mod files;
mod memory;
mod sandbox;
mod stdio;

pub use engine::{INFO, WASMER_VERSION, WasmerShim};
pub use sandbox::run_on_host;
