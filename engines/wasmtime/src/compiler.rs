//! Ahead-of-time compilation of wasm-layer images. runwasi stores what this returns in
//! containerd's content store, labelled with the cache key, and hands it back to the sandbox
//! as a precompiled layer on later runs.

use containerd_shim_wasm::sandbox::context::{WasmBinaryType, WasmLayer};
use containerd_shim_wasm::shim::Compiler;

use crate::engine::new_engine;

pub struct WasmtimeCompiler {
    engine: wasmtime::Engine,
}

impl WasmtimeCompiler {
    pub fn new() -> wasmtime::Result<Self> {
        Ok(Self {
            engine: new_engine()?,
        })
    }
}

impl Compiler for WasmtimeCompiler {
    fn cache_key(&self) -> impl std::hash::Hash {
        // Changes whenever the Wasmtime version or a setting that affects code does.
        self.engine.precompile_compatibility_hash()
    }

    /// A layer that does not compile is passed on as it is (`None`): the sandbox then fails
    /// to load it inside the container and says why on the container's stderr, where the
    /// user looks. An error here would only reach the shim's log.
    async fn compile(&self, layers: &[WasmLayer]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        Ok(layers
            .iter()
            .map(|layer| {
                let compiled = match WasmBinaryType::from_bytes(&layer.layer)? {
                    WasmBinaryType::Module => self.engine.precompile_module(&layer.layer),
                    WasmBinaryType::Component => self.engine.precompile_component(&layer.layer),
                };
                compiled
                    .inspect_err(|e| {
                        tracing::warn!("not precompiling {}: {e:#}", layer.config.digest());
                    })
                    .ok()
            })
            .collect())
    }
}
