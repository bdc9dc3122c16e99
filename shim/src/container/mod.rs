//! Containers, one per task: created, started, signalled and deleted with libcontainer
//! (youki), always from the zygote.
//!
//! The shim serves the Task API from many threads; forking there could leave a lock held
//! in the child. So every libcontainer operation runs in the *zygote*, a single-threaded
//! copy of the shim forked before any thread started. The container's init process is
//! forked from the zygote (small: no runtime, no caches), re-parented to the shim (a
//! subreaper), and runs the workload: the engine's `Sandbox` for Wasm, `execve` for native
//! executables.

mod context;
mod executor;
mod stdio;
mod zygote;

use std::path::{Path, PathBuf};

use containerd_shim_wasm::sandbox::context::WasmLayer;
use containerd_shim_wasm::shim::Shim;
use serde::{Deserialize, Serialize};

use crate::module_cache::CompiledModule;

pub use context::WorkloadContext;
pub use stdio::HeldOutput;
pub use zygote::init as init_zygote;

/// What a container is built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub id: String,
    /// The OCI bundle: `config.json` and the rootfs.
    pub bundle: PathBuf,
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
}

/// A container whose process env sets this to `1` is built twice, as if its first build had
/// lost libcontainer's start-up race: how the end-to-end tests exercise that path. It costs
/// the container one extra build and changes nothing else.
pub const FAULT_STARTUP_RACE: &str = "WASMRUNNER_FAULT_STARTUP_RACE";

/// Whether the container's spec asks for [`FAULT_STARTUP_RACE`].
pub fn startup_race_injected(spec: &oci_spec::runtime::Spec) -> bool {
    let wanted = format!("{FAULT_STARTUP_RACE}=1");
    spec.process()
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
pub fn create<S: Shim>(config: ContainerConfig) -> Result<u32, ContainerError> {
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
