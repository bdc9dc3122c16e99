//! What the container's init process runs once libcontainer has set it up: a native
//! executable through `execve`, or the engine's sandbox, in a process emptied of the shim.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use containerd_shim_wasm::sandbox::context::{RuntimeContext, WasmLayer};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use oci_spec::runtime::Spec;
use wasmrunner_capabilities::Capabilities;

use super::Runs;
use super::context::WorkloadContext;
use crate::engine::{Engine, RunWorkload};
use crate::failure::WorkloadError;
use crate::isolation::scrub::{ProcessStrings, Scrub};
use crate::isolation::seccomp::apply_guest_profile;
use crate::milestones::{Milestone, Milestones};
use crate::module_cache::OfferedCode;
use crate::workload::Workload;

/// The exit status when the engine itself fails before it could report, or panics
/// (126: cannot execute).
const ENGINE_FAILURE: i32 = 126;

pub struct WorkloadExecutor<S: Engine> {
    runs: Runs,
    /// The init process's command line and environment memory (Wasm workloads only).
    strings: Option<ProcessStrings>,
    wasm_layers: Arc<Vec<WasmLayer>>,
    /// The node cache's compiled code for the rootfs module, open since the build.
    compiled: Arc<Mutex<Option<OfferedCode>>>,
    /// Where the init process tells the shim when the guest got going (traced tasks only).
    milestones: Milestones,
    _engine: PhantomData<fn() -> S>,
}

impl<S: Engine> Clone for WorkloadExecutor<S> {
    fn clone(&self) -> Self {
        Self {
            strings: self.strings,
            runs: self.runs.clone(),
            wasm_layers: Arc::clone(&self.wasm_layers),
            compiled: Arc::clone(&self.compiled),
            milestones: self.milestones.clone(),
            _engine: PhantomData,
        }
    }
}

impl<S: Engine> WorkloadExecutor<S> {
    pub fn new(
        runs: Runs,
        strings: Option<ProcessStrings>,
        wasm_layers: Vec<WasmLayer>,
        compiled: Option<OfferedCode>,
        milestones: Milestones,
    ) -> Self {
        Self {
            runs,
            strings,
            wasm_layers: Arc::new(wasm_layers),
            compiled: Arc::new(Mutex::new(compiled)),
            milestones,
            _engine: PhantomData,
        }
    }

    /// Runs the workload and exits with its status; a panic on the way ends the container
    /// with [`ENGINE_FAILURE`] (the panic message is on its stderr already).
    fn run_wasm(
        &self,
        spec: &Spec,
        seccomp: bool,
        capabilities: &Result<Capabilities, String>,
    ) -> ! {
        let status = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.isolated(spec, seccomp, capabilities)
        }))
        .unwrap_or(ENGINE_FAILURE);
        std::process::exit(status)
    }

    /// Empties the process of the shim, loads the guest filter, then runs the engine.
    fn isolated(
        &self,
        spec: &Spec,
        seccomp: bool,
        capabilities: &Result<Capabilities, String>,
    ) -> i32 {
        let engine = <S::Sandbox as RunWorkload>::ENGINE;
        let fail = |what: &str, err: &dyn std::fmt::Display| {
            eprintln!("wasmrunner ({}): error: {what}: {err}", engine.name);
            self.milestones.failed(&format!("{what}: {err}"));
            ENGINE_FAILURE
        };
        let report = |err: WorkloadError| {
            self.milestones.failed(&err.to_string());
            err.report(engine.name)
        };
        let code = self.compiled.lock().ok().and_then(|mut code| code.take());
        let ctx = WorkloadContext::new(spec, &self.wasm_layers);
        let Some(strings) = self.strings else {
            return fail("isolating the workload", &"no process layout was read");
        };
        let scrub = Scrub {
            strings,
            args: ctx.args(),
            env: ctx.envs(),
            keep_fds: (code.as_ref().map(|code| code.file.as_raw_fd()).into_iter())
                .chain(self.milestones.raw_fds())
                .collect(),
        };
        if let Err(err) = scrub.apply() {
            return fail("isolating the workload", &err);
        }
        if let Err(err) = seccomp.then(apply_guest_profile).transpose() {
            return fail("isolating the workload", &err);
        }
        if let Err(err) = crate::signals::exit_on_termination_signals() {
            tracing::warn!("cannot install termination signal handlers: {err}");
        }
        let prepared = capabilities
            .clone()
            .map_err(WorkloadError::Policy)
            .and_then(|capabilities| {
                capabilities
                    .check_enforceable(engine.name, engine.capabilities)
                    .map_err(|e| WorkloadError::Policy(e.to_string()))?;
                Workload::load(&ctx, code, capabilities, self.milestones.clone())
            });
        let workload = match prepared {
            Ok(workload) => workload,
            Err(err) => return report(err),
        };
        self.milestones.mark(Milestone::Loaded);
        // One thread: the guest runs on it, and nothing else in this process needs more.
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime
                .block_on(S::Sandbox::default().run_workload(workload))
                .unwrap_or_else(report),
            Err(err) => fail("cannot start the engine's runtime", &err),
        }
    }
}

impl<S: Engine> Executor for WorkloadExecutor<S> {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        match self.runs {
            Runs::Native => DefaultExecutor {}.exec(spec),
            Runs::Wasm {
                seccomp,
                ref capabilities,
                ..
            } => self.run_wasm(spec, seccomp, capabilities),
        }
    }

    /// A native program gets the container's env in its process (libcontainer's default). A
    /// Wasm guest gets it through WASI, and its process's env is emptied by the scrub: setting
    /// it first would only be undone.
    fn setup_envs(&self, envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        match self.runs {
            Runs::Native => DefaultExecutor {}.setup_envs(envs),
            Runs::Wasm { .. } => Ok(()),
        }
    }

    /// Everything is accepted here: a native entrypoint was already found in the image
    /// (libcontainer's own check would also insist on a `PATH` variable, which CRI's pause
    /// containers lack), and a workload that cannot run says why on its stderr and in its
    /// exit status, where the user looks, rather than as a failed create.
    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        Ok(())
    }
}
