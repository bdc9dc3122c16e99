//! wasmrunner's node installer: copies the `containerd-shim-<engine>-v1` binaries onto a node
//! and registers one CRI runtime handler per engine in containerd's config (or in a k3s/rke2
//! config template), so that a Kubernetes RuntimeClass with `handler: wasmtime` runs its pods
//! with wasmrunner's shim.
//!
//! The edits keep the user's comments and formatting (`toml_edit`), are idempotent, and are
//! recorded beside the edited file so that [`uninstall`] removes exactly what [`install`] added.
//!
//! A test harness that runs a private containerd prepares its config with
//! [`install_into_config`]:
//!
//! ```no_run
//! use wasmrunner_installer::{Options, install_into_config, runtimes};
//!
//! let mut opts = Options::with_runtimes(&runtimes::select(&["wasmtime"]).unwrap());
//! opts.containerd_version = Some("1.7.24".parse().unwrap());
//! let report = install_into_config(std::path::Path::new("/tmp/ctd/config.toml"), &opts).unwrap();
//! for line in &report.actions {
//!     println!("{line}");
//! }
//! ```

pub mod binaries;
pub mod cgroup;
pub mod config;
pub mod diff;
pub mod fsutil;
pub mod host;
pub mod install;
pub mod k3s;
pub mod registry_hosts;
pub mod restart;
pub mod runtimes;
pub mod state;

pub use cgroup::SystemdCgroupMode;
pub use config::{ConfigVersion, ContainerdVersion};
pub use host::HostProbe;
pub use install::{
    InstallError, Options, Report, ShimCopy, Target, install, install_into_config,
    install_into_k3s_template, uninstall, uninstall_from_config, uninstall_from_k3s_template,
};
pub use runtimes::{RUNTIMES, RuntimeSpec};
