//! What the shim asks of an engine beyond runwasi's contract.
//!
//! runwasi's `Sandbox::run_wasi` hands an engine a `RuntimeContext` (args, env, entrypoint)
//! and lets it find everything else itself. wasmrunner's container init process has more to
//! give, decided by the shim at Create: the node cache's compiled code and the capability
//! policy. [`RunWorkload`] takes it all in one [`Workload`], so nothing reaches the engine
//! by a side channel.

use std::future::Future;

use containerd_shim_wasm::shim::Shim;

use crate::failure::WorkloadError;
use crate::version::EngineInfo;
use crate::workload::Workload;

/// An engine's sandbox, run by the container's init process.
pub trait RunWorkload: Default {
    /// The engine's names and what it can do, including the capability keys it enforces.
    const ENGINE: EngineInfo;

    /// Runs `workload`: its policy was checked against [`EngineInfo::capabilities`] already.
    /// Returns the guest's exit status, or why it could not run or finish.
    fn run_workload(
        &self,
        workload: Workload<'_>,
    ) -> impl Future<Output = Result<i32, WorkloadError>>;
}

/// A wasmrunner engine: runwasi's `Shim` whose sandbox also runs prepared workloads.
pub trait Engine: Shim<Sandbox: RunWorkload> {}

impl<T: Shim<Sandbox: RunWorkload>> Engine for T {}
