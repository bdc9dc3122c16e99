//! `containerd-shim-wasmer-v1`: runs WebAssembly containers with Wasmer.

fn main() {
    wasmrunner_shim::run::<wasmrunner_wasmer::WasmerShim>();
}
