//! The engine contract: names, the shared WasmEdge configuration, and the precompiler.

use containerd_shim_wasm::shim::{Compiler, Shim, Version};
use wasmedge_sdk::config::{
    CommonConfigOptions, CompilerConfigOptions, Config, ConfigBuilder, RuntimeConfigOptions,
};
use wasmedge_sdk::{CompilerOptimizationLevel, CompilerOutputFormat, WasmEdgeResult};
use wasmrunner_shim::EngineInfo;
use wasmrunner_shim::capabilities::Key;

use crate::compiler::WasmEdgeCompiler;
use crate::sandbox::WasmEdgeSandbox;

/// The libwasmedge release this binary was built against (from its `version.h`).
pub const LIBWASMEDGE_VERSION: &str = env!("LIBWASMEDGE_VERSION");

pub const INFO: EngineInfo = EngineInfo {
    name: "wasmedge",
    engine_version: LIBWASMEDGE_VERSION,
    features: &[
        "wasi-p1",
        "entrypoint-function",
        "aot-precompile-cache",
        "interpreter",
        "native-executables",
    ],
    // No socket policy, fuel or epoch, and no table or instance limit in WasmEdge's API: a
    // policy restricting those is refused (see `Capabilities::check_enforceable`).
    capabilities: &[Key::Files, Key::Env, Key::Memory],
};

pub struct WasmEdgeShim;

impl Shim for WasmEdgeShim {
    type Sandbox = WasmEdgeSandbox;

    fn name() -> &'static str {
        INFO.name
    }

    fn version() -> Version {
        wasmrunner_shim::runwasi_version()
    }

    async fn compiler() -> Option<impl Compiler> {
        match WasmEdgeCompiler::new() {
            Ok(compiler) => Some(compiler),
            Err(err) => {
                tracing::warn!("precompilation disabled: {err:#}");
                None
            }
        }
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

/// One configuration for compiling and for running: the AOT section of a precompiled module
/// is only used by a runtime whose configuration matches the one that compiled it.
pub fn new_config() -> WasmEdgeResult<Config> {
    configured(CommonConfigOptions::default())
}

/// The configuration a workload runs under. Only code this shim compiled (an image layer
/// precompiled into containerd's content store under this engine's key) may run as native
/// code. Any other module (a rootfs `.wasm`, an uncompiled layer) runs in the interpreter,
/// whatever AOT section it carries: an image must not bring its own machine code.
/// `max_memory_pages` caps each linear memory (`wasmrunner.dev/memory`): a `memory.grow`
/// past it fails inside the guest.
pub fn run_config(shim_compiled: bool, max_memory_pages: Option<u32>) -> WasmEdgeResult<Config> {
    let mut builder =
        ConfigBuilder::new(CommonConfigOptions::default().interpreter_mode(!shim_compiled));
    if let Some(pages) = max_memory_pages {
        builder =
            builder.with_runtime_config(RuntimeConfigOptions::default().max_memory_pages(pages));
    }
    with_compiler(builder).build()
}

fn configured(common: CommonConfigOptions) -> WasmEdgeResult<Config> {
    with_compiler(ConfigBuilder::new(common)).build()
}

fn with_compiler(builder: ConfigBuilder) -> ConfigBuilder {
    builder.with_compiler_config(
        CompilerConfigOptions::default()
            .out_format(CompilerOutputFormat::Wasm)
            .optimization_level(CompilerOptimizationLevel::O2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shim_compiled_code_runs_natively() {
        let untrusted = run_config(false, None).expect("config");
        assert!(untrusted.interpreter_mode_enabled());
        let precompiled = run_config(true, Some(512)).expect("config");
        assert!(!precompiled.interpreter_mode_enabled());
        assert_eq!(precompiled.max_memory_pages(), 512);
    }
}
