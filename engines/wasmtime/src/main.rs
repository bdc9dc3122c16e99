//! `containerd-shim-wasmtime-v1`: runs WebAssembly containers with Wasmtime.

fn main() {
    wasmrunner_shim::run::<wasmrunner_wasmtime::WasmtimeShim>();
}
