//! What every wasmrunner engine binary shares.
//!
//! An engine crate implements runwasi's engine contract (`Shim`, `Sandbox`, `Compiler`) and
//! calls [`run`] from its `main`. This crate owns everything around that contract that does
//! not depend on the engine: the command line (`--version`), logging configuration, how a
//! workload that cannot run is reported to the user, and signal handling inside the container.

pub mod cgroups;
pub mod container;
pub mod content;
mod engine;
mod entry;
mod entrypoint;
mod failure;
pub mod isolation;
mod laps;
mod logging;
mod memory;
mod milestones;
pub mod module_cache;
pub mod served_requests;
pub mod service;
mod signals;
mod sys;
pub mod telemetry;
#[cfg(test)]
mod test_fifo;
mod version;
mod workload;

pub use engine::{Engine, RunWorkload};
pub use entry::{run, run_on_host};
pub use failure::{WorkloadError, exit_code_for, func_signature, panic_reason};
pub use memory::release_loader_memory;
pub use signals::release_sigterm;
pub use version::{EngineInfo, Mode, runwasi_version};
/// The capability policy, for engines to enforce.
pub use wasmrunner_capabilities as capabilities;
pub use workload::{DEFAULT_FUNCTION, HTTP_ADDRESS_ENV, Workload, WorkloadKind, classify};
