//! The end-to-end harness: a private containerd with its own root, state and sockets, the
//! shim binaries under test on its `PATH`, fixture programs built from `test/fixtures`,
//! images built with `wasmrunner-oci` and imported with `ctr`, and checks that a deleted
//! container left no process, mount or cgroup behind. Its CRI plugin is on, for the CRI
//! suite ([`cri`]): the calls kubelet makes for pods with a wasm RuntimeClass handler.
//!
//! Environment:
//! - `WASMRUNNER_BIN_DIR`: where the shim binaries are (default `target/release`);
//! - `WASMRUNNER_CONTAINERD_BIN`: a folder with `containerd`, `ctr` and
//!   `containerd-shim-runc-v2` (default: the ones on `PATH`);
//! - `WASMRUNNER_ENGINES`: the engines to test, comma-separated (default: all of
//!   [`engine::ENGINES`]);
//! - `WASMRUNNER_MODES`: `per-pod`, `shared` or both (the default).
//!
//! The registry area ([`registry`]) starts Debian's `docker-registry` on loopback ports; the
//! tracing area an OTLP trace receiver ([`otlp`]), also on loopback.

pub mod command;
pub mod containerd;
pub mod cri;
pub mod engine;
pub mod fixtures;
pub mod http;
pub mod images;
pub mod leaks;
pub mod otlp;
pub mod paths;
pub mod procs;
pub mod registry;
pub mod run;
pub mod suite;
pub mod third_party;
pub mod wasm_bytes;

pub use command::{Outcome, run_command};
pub use containerd::{Containerd, ContainerdVersion};
pub use engine::Engine;
pub use suite::{Case, Env};
