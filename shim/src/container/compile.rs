//! Compiling modules on the host without putting the serving process at risk. A module is
//! untrusted input: one that takes minutes or gigabytes to compile, or that crashes the
//! compiler, must not stall or kill the shim or manager that serves every other pod. Each
//! compile runs in a child forked from the zygote (`wr-compile` in `ps`), under a memory and
//! a CPU-time limit; the child dies alone, and the caller falls back to compiling in the
//! container (under the pod's own limits).

use std::hash::Hash;
use std::marker::PhantomData;

use containerd_shim_wasm::sandbox::context::WasmLayer;
use containerd_shim_wasm::shim::Compiler;

use crate::engine::Engine;

use super::zygote::fork_child;
use super::zygotes::{COMPILER_NAME, die_with_parent};
use crate::content::cache_key_hash;
use crate::isolation::{COMPILE_MAX_CPU_ENV, COMPILE_MAX_MEMORY_ENV, CompileLimits};

/// The engine's compiler, run in a limited child for each compile (see the module docs).
/// Its cache key is the engine's, read once when it is made.
pub struct BoundedCompiler<S: Engine> {
    cache_key: String,
    limits: CompileLimits,
    _engine: PhantomData<fn() -> S>,
}

impl<S: Engine> BoundedCompiler<S> {
    /// `None` for an engine without a compiler.
    pub async fn new(limits: CompileLimits) -> Option<Self> {
        let compiler = S::compiler().await?;
        Some(Self {
            cache_key: cache_key_hash(compiler.cache_key()),
            limits,
            _engine: PhantomData,
        })
    }
}

impl<S: Engine> Compiler for BoundedCompiler<S> {
    fn cache_key(&self) -> impl Hash {
        self.cache_key.clone()
    }

    async fn compile(&self, layers: &[WasmLayer]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        let limits = self.limits;
        let child =
            fork_child("a compiler", COMPILER_NAME).map_err(|reason| anyhow::anyhow!(reason))?;
        let compiled = child
            .try_run(compile_in_child::<S>, (layers.to_vec(), limits))
            .map_err(|err| {
                anyhow::anyhow!(
                    "the compiling process ended before it finished ({err}); it may have gone \
                     over its limits of {} MiB ({COMPILE_MAX_MEMORY_ENV}) or {} s of CPU \
                     ({COMPILE_MAX_CPU_ENV})",
                    limits.memory_bytes >> 20,
                    limits.cpu_seconds
                )
            })?;
        compiled.map_err(|reason| anyhow::anyhow!(reason))
    }
}

// Runs in a child of the zygote, which exits when it returns.
fn compile_in_child<S: Engine>(
    (layers, limits): (Vec<WasmLayer>, CompileLimits),
) -> Result<Vec<Option<Vec<u8>>>, String> {
    die_with_parent(());
    limits.apply()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("starting the compiler's runtime: {e}"))?;
    runtime.block_on(async {
        let compiler = S::compiler()
            .await
            .ok_or_else(|| format!("{} has no compiler", S::name()))?;
        compiler
            .compile(&layers)
            .await
            .map_err(|e| format!("{e:#}"))
    })
}
