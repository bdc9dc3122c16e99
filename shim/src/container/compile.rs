//! Compiling modules on the host without putting the serving process at risk. A module is
//! untrusted input: one that takes minutes or gigabytes to compile, or that crashes the
//! compiler, must not stall or kill the shim or manager that serves every other pod. Each
//! compile runs in a child forked from the zygote, under a memory and a CPU-time limit; the
//! child dies alone, and the caller falls back to compiling in the container (under the
//! pod's own limits).

use std::hash::Hash;
use std::marker::PhantomData;

use containerd_shim_wasm::sandbox::context::WasmLayer;
use containerd_shim_wasm::shim::{Compiler, Shim};
use serde::{Deserialize, Serialize};

use super::zygote::{die_with_parent, fork_child};
use crate::content::cache_key_hash;

/// The address space a compile may use, in MiB (default 4096).
pub const COMPILE_MAX_MEMORY_ENV: &str = "WASMRUNNER_COMPILE_MAX_MEMORY_MIB";
/// The CPU time a compile may use, in seconds, over all its threads (default 120).
pub const COMPILE_MAX_CPU_ENV: &str = "WASMRUNNER_COMPILE_MAX_CPU_SECS";

/// What one host-side compile may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileLimits {
    pub memory_bytes: u64,
    pub cpu_seconds: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 4096 << 20,
            cpu_seconds: 120,
        }
    }
}

impl CompileLimits {
    /// The defaults, with [`COMPILE_MAX_MEMORY_ENV`] and [`COMPILE_MAX_CPU_ENV`] applied.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let default = Self::default();
        Self {
            memory_bytes: var(COMPILE_MAX_MEMORY_ENV).map_or(default.memory_bytes, |mib| mib << 20),
            cpu_seconds: var(COMPILE_MAX_CPU_ENV).unwrap_or(default.cpu_seconds),
        }
    }

    /// Limits this process (the compiling child): past the CPU time the kernel sends
    /// SIGXCPU, which ends it; past the address space, allocations fail and it aborts.
    fn apply(&self) -> Result<(), String> {
        for (resource, limit, name) in [
            (libc::RLIMIT_AS, self.memory_bytes, "address space"),
            (libc::RLIMIT_CPU, self.cpu_seconds, "CPU time"),
        ] {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit reads the struct given, alive for the call, and changes only
            // this process's limits.
            if unsafe { libc::setrlimit(resource, &rlimit) } != 0 {
                return Err(format!(
                    "limiting the compile's {name}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(())
    }
}

/// The engine's compiler, run in a limited child for each compile (see the module docs).
/// Its cache key is the engine's, read once when it is made.
pub struct BoundedCompiler<S: Shim> {
    cache_key: String,
    limits: CompileLimits,
    _engine: PhantomData<fn() -> S>,
}

impl<S: Shim> BoundedCompiler<S> {
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

impl<S: Shim> Compiler for BoundedCompiler<S> {
    fn cache_key(&self) -> impl Hash {
        self.cache_key.clone()
    }

    async fn compile(&self, layers: &[WasmLayer]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        let limits = self.limits;
        let child = fork_child("a compiler").map_err(|reason| anyhow::anyhow!(reason))?;
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
fn compile_in_child<S: Shim>(
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
