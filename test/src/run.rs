//! The start and end of a suite run, shared by the suites' mains: the engines' binaries
//! checked, the fixtures built and a private containerd started; at the end, what the run
//! left behind found and removed, and containerd stopped (its scratch dir kept on failure).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::containerd::Containerd;
use crate::engine::Engine;
use crate::{cri, fixtures, leaks};

/// Checks that every engine's shim is built, builds the fixtures and starts the private
/// containerd (the one in `WASMRUNNER_CONTAINERD_BIN`, or on `PATH`) for `engines`.
pub fn start(engines: &[Engine]) -> Result<Arc<Containerd>> {
    for engine in engines {
        engine.binary()?;
    }
    fixtures::build_all()?;
    Ok(Arc::new(Containerd::start(
        &Containerd::bin_dir_from_env()?,
        engines,
    )?))
}

/// Ends a run that `failed` or not: removes and names what it left (containers, pods, the
/// namespace's cgroup, shims or managers still running), then stops containerd, keeping its
/// scratch dir if anything failed or was left. Returns whether the run was clean.
pub fn finish(containerd: Arc<Containerd>, failed: bool) -> Result<bool> {
    let mut leftovers = containerd.remove_leftover_containers()?;
    if !leftovers.is_empty() {
        eprintln!("containers left in containerd after the run: {leftovers:?}");
    }
    // runc and the shims create the namespace's parent cgroup and leave it, empty.
    let namespace_cgroup = format!("/{}", containerd.namespace);
    for failure in leaks::remove_cgroup(&namespace_cgroup) {
        eprintln!("cannot remove the run's cgroup: {failure}");
    }
    let cri_leftovers = cri::clean_up_after_suite(&containerd);
    if !cri_leftovers.is_empty() {
        eprintln!("left by the CRI cases after the run: {cri_leftovers:?}");
    }
    leftovers.extend(cri_leftovers);
    // Per-pod shims exit with their last task, managers shortly after (the harness sets
    // their idle time to 3 s): none may outlive the run.
    let shims = containerd.wait_for_no_shims(Duration::from_secs(15));
    if !shims.is_empty() {
        eprintln!("shims or managers still running after the run: {shims:?}");
        leftovers.extend(
            shims
                .into_iter()
                .map(|(pid, cmdline)| format!("process {pid}: {cmdline}")),
        );
    }
    let containerd = Arc::try_unwrap(containerd)
        .map_err(|_| anyhow::anyhow!("a case still holds containerd"))?;
    let clean = !failed && leftovers.is_empty();
    containerd.stop(!clean).context("stopping containerd")?;
    Ok(clean)
}
