//! The engine contract: names, the shared Wasmtime configuration, and the precompiler.

use containerd_shim_wasm::shim::{Compiler, Shim, Version};
use wasmrunner_shim::EngineInfo;
use wasmrunner_shim::capabilities::Key;

use crate::compiler::WasmtimeCompiler;
use crate::sandbox::WasmtimeSandbox;

/// The Wasmtime release this binary links (kept beside the dependency in the workspace manifest).
pub const WASMTIME_VERSION: &str = "48.0.8";

pub const INFO: EngineInfo = EngineInfo {
    name: "wasmtime",
    engine_version: WASMTIME_VERSION,
    features: &[
        "wasi-p1",
        "wasi-p2-components",
        "wasi-http-serve",
        "entrypoint-function",
        "precompile-cache",
        wasmrunner_shim::module_cache::NODE_MODULE_CACHE,
        wasmrunner_shim::module_cache::MAPPED_CODE,
        "native-executables",
    ],
    capabilities: &Key::ALL,
};

pub struct WasmtimeShim;

impl Shim for WasmtimeShim {
    type Sandbox = WasmtimeSandbox;

    fn name() -> &'static str {
        INFO.name
    }

    fn version() -> Version {
        wasmrunner_shim::runwasi_version()
    }

    async fn compiler() -> Option<impl Compiler> {
        match WasmtimeCompiler::new() {
            Ok(compiler) => Some(compiler),
            Err(err) => {
                tracing::warn!("precompilation disabled: {err:#}");
                None
            }
        }
    }
}

/// One configuration for compiling and for running: precompiled code is only loaded by an
/// engine whose configuration matches the one that compiled it.
pub fn new_engine() -> wasmtime::Result<wasmtime::Engine> {
    wasmtime::Engine::new(&config())
}

/// The engine inside a container: the same code settings, compiling on the calling thread.
/// A thread pool would leave a malloc arena per thread behind, megabytes of freed but
/// resident memory in every long-running container (see `wasmrunner_shim::release_loader_memory`).
pub fn new_container_engine() -> wasmtime::Result<wasmtime::Engine> {
    wasmtime::Engine::new(&container_config())
}

/// The configuration of [`new_container_engine`], for an engine that also changes how it
/// allocates instances (a served component's pooling engine).
pub(crate) fn container_config() -> wasmtime::Config {
    let mut config = config();
    config.parallel_compilation(false);
    config
}

fn config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    // Compiled code checks the engine's epoch at loop heads and calls, so that a guest can be
    // stopped at its CPU deadline (`wasmrunner.dev/cpu-deadline`). It is a setting of the
    // code, not of a store: every module is compiled with it, whether its pod sets a deadline
    // or not, so the node's compiled code serves every pod.
    config.epoch_interruption(true);
    config
}
