//! The engine contract: names, the shared Wasmer configuration, and the precompiler.

use containerd_shim_wasm::shim::{Compiler, Shim, Version};
use wasmer::sys::{Cranelift, CraneliftOptLevel, EngineBuilder};
use wasmrunner_shim::EngineInfo;
use wasmrunner_shim::capabilities::Key;

use crate::compiler::WasmerCompiler;
use crate::memory::CappedMemory;
use crate::sandbox::WasmerSandbox;

/// The Wasmer release this binary links (pinned beside the dependency in Cargo.toml).
pub const WASMER_VERSION: &str = "7.4.2";

pub const INFO: EngineInfo = EngineInfo {
    name: "wasmer",
    engine_version: WASMER_VERSION,
    features: &[
        "wasi-p1",
        "entrypoint-function",
        "precompile-cache",
        wasmrunner_shim::module_cache::NODE_MODULE_CACHE,
        "native-executables",
    ],
    // No socket policy (the guest gets no sockets at all), no fuel or epoch, and no table or
    // instance limit: a policy restricting those is refused (`Capabilities::check_enforceable`).
    capabilities: &[Key::Files, Key::Env, Key::Memory],
};

pub struct WasmerShim;

impl Shim for WasmerShim {
    type Sandbox = WasmerSandbox;

    fn name() -> &'static str {
        INFO.name
    }

    fn version() -> Version {
        wasmrunner_shim::runwasi_version()
    }

    async fn compiler() -> Option<impl Compiler> {
        Some(WasmerCompiler::new())
    }

    /// Only core modules: a component layer is still accepted here so that the container
    /// fails with a clear message on its stderr rather than an unknown-layer error.
    fn supported_layers_types() -> &'static [&'static str] {
        &[
            "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
            "application/wasm",
        ]
    }
}

/// One configuration for compiling and for running: Wasmer loads serialized code only into
/// an engine of the same target and features, and the memory styles compiled into the code
/// come from the tunables, which [`CappedMemory`] leaves as Wasmer's own.
/// `max_memory_pages` caps each linear memory the guest makes (`wasmrunner.dev/memory`).
pub fn new_engine(max_memory_pages: Option<u32>) -> wasmer::Engine {
    let mut compiler = Cranelift::new();
    compiler.opt_level(CraneliftOptLevel::Speed);
    let mut engine = EngineBuilder::new(compiler).engine();
    engine.set_tunables(CappedMemory::new(max_memory_pages));
    engine.into()
}
