//! `containerd-shim-wasmedge-v1`: runs WebAssembly containers with WasmEdge.

fn main() {
    wasmrunner_shim::run::<wasmrunner_wasmedge::WasmEdgeShim>();
}
