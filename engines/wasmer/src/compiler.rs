//! Ahead-of-time compilation: the node's module cache and wasm-layer images (runwasi's
//! content-store protocol) keep what this returns, Wasmer's serialized module, under
//! [`Compiler::cache_key`], and each container loads it instead of compiling.

use std::hash::Hash;

use containerd_shim_wasm::sandbox::context::{WasmBinaryType, WasmLayer};
use containerd_shim_wasm::shim::Compiler;

use crate::engine::{WASMER_VERSION, new_engine};

pub struct WasmerCompiler {
    engine: wasmer::Engine,
}

impl WasmerCompiler {
    pub fn new() -> Self {
        Self {
            engine: new_engine(None),
        }
    }

    pub(crate) fn compile_module(&self, bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
        let module = wasmer::Module::new(&self.engine, bytes)?;
        Ok(module.serialize()?.to_vec())
    }
}

impl Compiler for WasmerCompiler {
    fn cache_key(&self) -> impl Hash {
        // The code changes with the Wasmer release, the compiler and its settings (the
        // engine's deterministic id) and the machine's target and CPU features.
        (
            WASMER_VERSION,
            self.engine.deterministic_id(),
            wasmer::sys::Target::default(),
        )
    }

    /// A layer that does not compile, and every component, is passed on as it is (`None`):
    /// the sandbox then reports what is wrong with it on the container's stderr.
    async fn compile(&self, layers: &[WasmLayer]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        Ok(layers
            .iter()
            .map(|layer| match WasmBinaryType::from_bytes(&layer.layer) {
                Some(WasmBinaryType::Module) => self
                    .compile_module(&layer.layer)
                    .inspect_err(|e| {
                        tracing::warn!("not precompiling {}: {e:#}", layer.config.digest());
                    })
                    .ok(),
                _ => None,
            })
            .collect())
    }
}
