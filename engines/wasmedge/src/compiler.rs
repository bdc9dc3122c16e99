//! Ahead-of-time compilation of wasm-layer images with WasmEdge's LLVM compiler. The output is
//! WasmEdge's universal wasm format: the original module plus a custom section with native
//! code, which any WasmEdge loads (and falls back to interpreting if the section does not fit).
//! runwasi's content-store protocol stores it under a label keyed by [`Compiler::cache_key`].

use std::hash::Hash;

use containerd_shim_wasm::sandbox::context::{WasmBinaryType, WasmLayer};
use containerd_shim_wasm::shim::Compiler;
use wasmedge_sdk::config::Config;

use crate::engine::{LIBWASMEDGE_VERSION, new_config};

pub struct WasmEdgeCompiler {
    config: Config,
}

impl WasmEdgeCompiler {
    pub fn new() -> anyhow::Result<Self> {
        let config = new_config().map_err(|e| anyhow::anyhow!("configuring WasmEdge: {e}"))?;
        // Fails when this libwasmedge was built without its LLVM compiler.
        wasmedge_sdk::Compiler::new(Some(&config))
            .map_err(|e| anyhow::anyhow!("WasmEdge's AOT compiler is not available: {e}"))?;
        Ok(Self { config })
    }

    fn compile_module(&self, layer: &WasmLayer) -> anyhow::Result<Vec<u8>> {
        let compiler = wasmedge_sdk::Compiler::new(Some(&self.config))
            .map_err(|e| anyhow::anyhow!("creating the AOT compiler: {e}"))?;
        // The compiler writes a file; it is read back and the directory goes with `out`.
        let out = tempfile::Builder::new()
            .prefix("wasmrunner-wasmedge-aot-")
            .tempdir()?;
        // The native code carries the same call-depth bound as interpreted code.
        let bounded = crate::call_depth::bound_call_depth(&layer.layer)?;
        let file = compiler
            .compile_from_bytes(&bounded, "module", out.path())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(std::fs::read(file)?)
    }
}

impl Compiler for WasmEdgeCompiler {
    fn cache_key(&self) -> impl Hash {
        // The code changes with the library, with the settings of `new_config`, and with the
        // rewrite that bounds the call depth.
        (
            LIBWASMEDGE_VERSION,
            wasmedge_sdk::utils::CoreVersion::version_string(),
            "O2-universal",
            crate::call_depth::REWRITE_VERSION,
        )
    }

    /// A layer that does not compile, and every component, is passed on as it is (`None`):
    /// the sandbox then reports what is wrong with it on the container's stderr.
    async fn compile(&self, layers: &[WasmLayer]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        Ok(layers
            .iter()
            .map(|layer| match WasmBinaryType::from_bytes(&layer.layer) {
                Some(WasmBinaryType::Module) => self
                    .compile_module(layer)
                    .inspect_err(|e| {
                        tracing::warn!("not precompiling {}: {e:#}", layer.config.digest());
                    })
                    .ok(),
                _ => None,
            })
            .collect())
    }
}
