//! What one compile on the host may use (see `container::BoundedCompiler`, which applies
//! these limits in the compiling child).

use serde::{Deserialize, Serialize};

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
    pub(crate) fn apply(&self) -> Result<(), String> {
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
