//! What keeps a Wasm guest to what it is granted: nothing of the shim, the manager, the
//! zygote, the node or another pod.
//!
//! The container's init process is a fork of the shim (see `container`), so it starts with
//! the shim's memory, descriptors, environment and command line. Three layers take that
//! away before any guest byte is parsed:
//!
//! - [`guest_spec`]: the OCI spec a Wasm workload is built from is the bundle's, hardened:
//!   no capabilities, `no_new_privs`, and `/proc`, `/sys` and `/dev` masked (an empty
//!   read-only tmpfs over each, after libcontainer has set the container up), so neither the
//!   guest's preopened `/` nor native code that escaped the engine can reach
//!   `/proc/self/mem`, `/proc/self/fd` or a device. Native containers (pause, sidecars) keep
//!   the spec exactly as containerd wrote it.
//! - [`scrub`]: in the init process, just before the engine runs: every descriptor but
//!   stdio and the workload's compiled code is closed, the shim's environment and command
//!   line are wiped from the process (what `/proc/PID/environ` and `cmdline` show becomes the
//!   container's own), and the process is made non-dumpable.
//! - [`seccomp`]: an allow-list made for the engine process, stacked on whatever profile
//!   the pod asked for (libcontainer applied that one already).
//!
//! Why not re-execute a clean runner, as runc re-executes `runc init`? libcontainer runs the
//! workload after `pivot_root`, in the image's rootfs, which for a Wasm image holds a
//! `.wasm` file and no dynamic loader or libc: the shim binaries are dynamically linked
//! (the WasmEdge one against a private glibc and libLLVM), so an `execve` there cannot
//! start. Scrubbing in place reaches the same state for what a guest can observe.

mod compile_limits;
pub mod guest_spec;
pub mod scrub;
pub mod seccomp;

use serde::{Deserialize, Serialize};

pub use compile_limits::{COMPILE_MAX_CPU_ENV, COMPILE_MAX_MEMORY_ENV, CompileLimits};

/// The node-wide switch that turns wasmrunner's own seccomp filter off (`off`), set in the
/// environment containerd starts shims with. A pod cannot set it: the container's env
/// reaches only the container.
pub const GUEST_SECCOMP_ENV: &str = "WASMRUNNER_GUEST_SECCOMP";

/// Set to `1` in containerd's environment, lets a container's env ask for fault injection
/// (see `container::FAULT_STARTUP_RACE`): only the test harness does this. Without it a
/// pod's env triggers nothing.
pub const TEST_FAULTS_ENV: &str = "WASMRUNNER_TEST_FAULTS";

/// The largest module a container may run, in MiB (default [`DEFAULT_MAX_MODULE_MIB`]):
/// a larger one fails its Create with a clear error instead of being read and compiled.
pub const MAX_MODULE_ENV: &str = "WASMRUNNER_MAX_MODULE_MIB";
pub const DEFAULT_MAX_MODULE_MIB: u64 = 256;

/// How this node isolates Wasm guests, read once from the serving process's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePolicy {
    /// Apply [`seccomp::guest_profile`] to every Wasm workload.
    pub guest_seccomp: bool,
    /// Honour fault-injection requests in a container's env (tests only).
    pub test_faults: bool,
    /// What one compile on the host may use.
    pub compile: CompileLimits,
    /// The largest module a container may run (its file in the image, or its layer).
    pub max_module_bytes: u64,
}

impl Default for NodePolicy {
    fn default() -> Self {
        Self {
            guest_seccomp: true,
            test_faults: false,
            compile: CompileLimits::default(),
            max_module_bytes: DEFAULT_MAX_MODULE_MIB << 20,
        }
    }
}

impl NodePolicy {
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        Self {
            guest_seccomp: !var(GUEST_SECCOMP_ENV).eq_ignore_ascii_case("off"),
            test_faults: var(TEST_FAULTS_ENV) == "1",
            compile: CompileLimits::from_env(),
            max_module_bytes: var(MAX_MODULE_ENV)
                .parse::<u64>()
                .map_or(DEFAULT_MAX_MODULE_MIB, |mib| mib)
                << 20,
        }
    }
}

/// Why a Wasm workload could not be isolated (the container is then not built).
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("writing the guest's spec to {path}: {source}")]
    WriteSpec {
        path: String,
        source: std::io::Error,
    },
    #[error("the bundle's spec has no root")]
    NoRoot,
    #[error("building the guest's spec: {0}")]
    Spec(String),
    #[error("reading this process's memory layout from /proc/self/stat: {0}")]
    ProcessLayout(String),
    #[error("closing the shim's descriptors: {0}")]
    CloseDescriptors(std::io::Error),
    #[error("loading the guest's seccomp filter: {0}")]
    Seccomp(String),
}
