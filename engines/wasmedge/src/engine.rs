//! The engine contract: names, the shared WasmEdge configuration, and the precompiler.

use containerd_shim_wasm::shim::{Compiler, Shim, Version, version};
use wasmedge_sdk::config::{CommonConfigOptions, CompilerConfigOptions, Config, ConfigBuilder};
use wasmedge_sdk::{CompilerOptimizationLevel, CompilerOutputFormat, WasmEdgeResult};
use wasmrunner_shim::EngineInfo;

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
};

pub struct WasmEdgeShim;

impl Shim for WasmEdgeShim {
    type Sandbox = WasmEdgeSandbox;

    fn name() -> &'static str {
        INFO.name
    }

    fn version() -> Version {
        version!()
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
pub fn run_config(shim_compiled: bool) -> WasmEdgeResult<Config> {
    configured(CommonConfigOptions::default().interpreter_mode(!shim_compiled))
}

fn configured(common: CommonConfigOptions) -> WasmEdgeResult<Config> {
    ConfigBuilder::new(common)
        .with_compiler_config(
            CompilerConfigOptions::default()
                .out_format(CompilerOutputFormat::Wasm)
                .optimization_level(CompilerOptimizationLevel::O2),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shim_compiled_code_runs_natively() {
        let untrusted = run_config(false).expect("config");
        assert!(untrusted.interpreter_mode_enabled());
        let precompiled = run_config(true).expect("config");
        assert!(!precompiled.interpreter_mode_enabled());
    }
}
