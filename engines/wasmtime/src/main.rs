//! `containerd-shim-wasmtime-v1`: runs WebAssembly containers with Wasmtime.

mod compiler;
mod engine;
mod sandbox;

fn main() {
    wasmrunner_shim::run::<engine::WasmtimeShim>(engine::INFO);
}
