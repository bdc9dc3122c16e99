//! Containers, one per task: created, started, signalled and deleted with libcontainer
//! (youki), always from the zygote.
//!
//! The shim serves the Task API from many threads; forking there could leave a lock held
//! in the child. So every libcontainer operation runs in the *zygote*, a single-threaded
//! copy of the shim forked before any thread started. The container's init process is
//! forked from the zygote (small: no runtime, no caches), re-parented to the shim (a
//! subreaper), and runs the workload: the engine's `Sandbox` for Wasm, `execve` for native
//! executables.

mod compile;
mod context;
mod executor;
mod stdio;
mod zygote;
mod zygotes;

use std::path::{Path, PathBuf};

use crate::engine::Engine;
use containerd_shim_wasm::sandbox::context::WasmLayer;
use serde::{Deserialize, Serialize};

use wasmrunner_capabilities::Capabilities;

use crate::isolation::NodePolicy;
use crate::module_cache::CompiledModule;

pub use compile::BoundedCompiler;
pub use context::WorkloadContext;
pub use stdio::{HeldOutput, OUTPUT_STALL, UnreadOutput};
pub use zygotes::{SPARE_NAME as ZYGOTE_SPARE_NAME, ZYGOTE_NAME, init as init_zygote};

/// What a container is built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    /// Where libcontainer reads the `config.json` to build from: containerd's bundle for a
    /// native program, the hardened copy of `isolation::guest_spec` for a Wasm workload.
    pub bundle: PathBuf,
    /// What the init process runs, decided once from the image.
    pub runs: Runs,
    /// Where libcontainer keeps this namespace's container state.
    pub state_root: PathBuf,
    /// containerd's fifos; empty when the stream is not wanted.
    pub stdin: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// Let systemd manage the cgroups (`SystemdCgroup` in the runtime options).
    pub systemd_cgroup: bool,
    /// The image's wasm layers, when it has any (else the entrypoint is a file in the rootfs).
    pub wasm_layers: Vec<WasmLayer>,
    /// The node cache's compiled code for the rootfs module, when the engine uses the cache.
    pub compiled_module: Option<CompiledModule>,
    /// Fault injection for tests: the first build counts as lost to libcontainer's start-up
    /// race (see [`FAULT_STARTUP_RACE`]).
    pub inject_startup_race: bool,
    /// The task's milestones FIFO, whose write end the init process inherits (Wasm tasks,
    /// see `crate::milestones`).
    pub milestones: Option<PathBuf>,
    /// A traced task's request FIFO, whose write end the init process inherits too (see
    /// `crate::served_requests`).
    pub requests: Option<PathBuf>,
}

/// What a container's init process runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per container, made once at Create: its size costs nothing worth a box"
)]
pub enum Runs {
    /// A native program (a pause container, a sidecar), executed with the spec as containerd
    /// wrote it.
    Native,
    /// A Wasm workload, in a process emptied of the shim (`isolation::scrub`), with
    /// wasmrunner's seccomp filter on top of the pod's unless the node turned it off.
    Wasm {
        seccomp: bool,
        /// The spec's supplementary groups, which the builder sets on itself for the init
        /// process to inherit (see `isolation::guest_spec::harden`).
        groups: Vec<u32>,
        /// What the guest may touch, resolved by the shim from the container's annotations,
        /// the image's declarations and its memory limit; or why the policy cannot be
        /// applied, which the init process reports on the container's stderr (status 126)
        /// instead of running the guest.
        capabilities: Result<Capabilities, String>,
    },
}

/// A container whose process env sets this to `1` is built twice, as if its first build had
/// lost libcontainer's start-up race: how the end-to-end tests exercise that path. It costs
/// the container one extra build and changes nothing else. Honoured only on a node whose
/// containerd runs with `isolation::TEST_FAULTS_ENV=1` (the test harness's): a pod's env
/// alone triggers nothing.
pub const FAULT_STARTUP_RACE: &str = "WASMRUNNER_FAULT_STARTUP_RACE";

/// Whether the container's spec asks for [`FAULT_STARTUP_RACE`] on a node that allows it.
pub fn startup_race_injected(policy: &NodePolicy, spec: &oci_spec::runtime::Spec) -> bool {
    let wanted = format!("{FAULT_STARTUP_RACE}=1");
    policy.test_faults
        && spec
            .process()
            .as_ref()
            .and_then(|process| process.env().as_ref())
            .is_some_and(|env| env.contains(&wanted))
}

/// Why a container operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("cannot create container {id}: {reason}")]
    Create { id: String, reason: String },
    #[error("cannot {operation} container {id}: {reason}")]
    Operation {
        operation: &'static str,
        id: String,
        reason: String,
    },
    #[error("the zygote process failed: {0}")]
    Zygote(String),
}

/// Creates the container (its init process waits for `start`) and returns the init's pid.
pub fn create<S: Engine>(config: ContainerConfig) -> Result<u32, ContainerError> {
    zygote::create::<S>(config)
}

/// Lets the init process run the workload.
pub fn start(state_root: &Path, id: &str) -> Result<(), ContainerError> {
    zygote::operate(state_root, id, zygote::Operation::Start)
}

/// Sends `signal` to the container's init process, or with `all` to each of its processes.
///
/// Only `all` goes through the cgroup: libcontainer freezes it, signals every pid and thaws
/// it, and freezing interrupts whatever the processes were blocked in (WasmEdge's
/// `poll_oneoff` then fails a guest's sleep, and a Rust guest panics before the signal lands:
/// status 134 instead of 143). containerd asks for `all` only for `ctr task kill --all`.
pub fn kill(state_root: &Path, id: &str, signal: u32, all: bool) -> Result<(), ContainerError> {
    zygote::operate(state_root, id, zygote::Operation::Kill { signal, all })
}

/// Removes the container: its processes (killed if still running), cgroups and state.
/// Deleting a container that no longer exists succeeds.
pub fn delete(state_root: &Path, id: &str) -> Result<(), ContainerError> {
    zygote::operate(state_root, id, zygote::Operation::Delete)
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{ProcessBuilder, SpecBuilder};

    use super::*;

    /// A pod's env cannot trigger a test hook: only a node set up for tests honours it.
    #[test]
    fn fault_injection_needs_the_nodes_consent() {
        let spec = SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .env(vec![format!("{FAULT_STARTUP_RACE}=1")])
                    .build()
                    .expect("process"),
            )
            .build()
            .expect("spec");
        let production = NodePolicy::default();
        let test_node = NodePolicy {
            test_faults: true,
            ..NodePolicy::default()
        };
        assert!(!startup_race_injected(&production, &spec));
        assert!(startup_race_injected(&test_node, &spec));
        assert!(!startup_race_injected(
            &test_node,
            &SpecBuilder::default().build().expect("spec")
        ));
    }
}
