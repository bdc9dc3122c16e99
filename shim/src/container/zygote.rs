//! The libcontainer calls, run in the zygote process.

use std::path::{Path, PathBuf};

use crate::engine::Engine;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use serde::{Deserialize, Serialize};
use zygote::Zygote;

use super::executor::WorkloadExecutor;
use super::stdio::{open_output, open_stdin};
use super::zygotes::{BUILDER_NAME, DELETER_NAME, die_with_parent, with_zygote};
use super::{ContainerConfig, ContainerError, Runs};
use crate::isolation::scrub::ProcessStrings;
use crate::milestones::Milestones;
use crate::module_cache::OfferedCode;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Operation {
    Start,
    /// A signal, to the init process only or (`all`) to every process of the container.
    Kill {
        signal: u32,
        all: bool,
    },
    Delete,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Start => "start",
            Operation::Kill { .. } => "signal",
            Operation::Delete => "delete",
        }
    }
}

/// How often a build that lost libcontainer's start-up race is tried again.
const BUILD_ATTEMPTS: u32 = 3;

/// libcontainer 0.6's intermediate process clones the init process and only then reports
/// its pid; an init scheduled first (a loaded node) reports "ready" before it, and the
/// build fails with this. Nothing is wrong with the container: remove it and build again.
const STARTUP_RACE: &str = "received unexpected message: InitReady";

/// Builds the container, retrying a build that lost libcontainer's start-up race.
///
/// The first attempt's init had opened containerd's output fifos; the task service holds
/// them open too (`stdio::HeldOutput`), so its death does not end containerd's copy of the
/// output that the rebuilt container writes.
pub fn create<S: Engine>(config: ContainerConfig) -> Result<u32, ContainerError> {
    let mut attempt = 1;
    let mut inject_race = config.inject_startup_race;
    loop {
        let result = build::<S>(config.clone());
        let lost_race = match &result {
            Err(ContainerError::Create { reason, .. }) => reason.contains(STARTUP_RACE),
            Ok(_) => std::mem::take(&mut inject_race),
            Err(_) => false,
        };
        if !lost_race || attempt >= BUILD_ATTEMPTS {
            return result;
        }
        let reason = match &result {
            Err(err) => err.to_string(),
            Ok(_) => format!("{STARTUP_RACE} (injected: {})", super::FAULT_STARTUP_RACE),
        };
        tracing::warn!("container {}: {reason}; building it again", config.id);
        operate(&config.state_root, &config.id, Operation::Delete)?;
        attempt += 1;
    }
}

/// Each container is built in a fresh copy of the zygote, which exits afterwards:
/// libcontainer's builder is not meant to run twice in one process (a second build in the
/// same process reads the first one's messages: "received unexpected message: InitReady").
fn build<S: Engine>(config: ContainerConfig) -> Result<u32, ContainerError> {
    let id = config.id.clone();
    let builder = fork_child("a builder", BUILDER_NAME).map_err(ContainerError::Zygote)?;
    builder
        .try_run(create_in_zygote::<S>, config)
        .map_err(|e| ContainerError::Zygote(e.to_string()))?
        .map_err(|reason| ContainerError::Create { id, reason })
}

/// A fresh copy of the zygote, for work that must not hold the global zygote (whose one
/// channel every container of the process shares) for long, named `name` in `ps`; it exits
/// when dropped.
pub(super) fn fork_child(purpose: &str, name: &str) -> Result<Zygote, String> {
    with_zygote(|zygote| zygote.fork(name))
        .map_err(|reason| format!("cannot fork {purpose} from the zygote: {reason}"))
}

/// Runs `operation` in a zygote. A delete, which may wait seconds for killed processes to
/// leave their cgroup, runs in a child of its own, so it never holds the global zygote
/// while other containers start, stop or are signalled.
pub fn operate(state_root: &Path, id: &str, operation: Operation) -> Result<(), ContainerError> {
    let (root, name) = (state_root.to_path_buf(), id.to_string());
    let result = match operation {
        Operation::Delete => fork_child("a deleter", DELETER_NAME)
            .map_err(ContainerError::Zygote)?
            .try_run(operate_in_zygote, (root, name, operation, false))
            .map_err(|e| e.to_string()),
        Operation::Start | Operation::Kill { .. } => {
            // `with_zygote` runs the work again on the spare when the zygote died under it.
            let tries = std::sync::atomic::AtomicU32::new(0);
            with_zygote(|zygote| {
                let again = tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0;
                zygote
                    .try_run(
                        operate_in_zygote,
                        (root.clone(), name.clone(), operation, again),
                    )
                    .map_err(|e| e.to_string())
            })
        }
    };
    result
        .map_err(ContainerError::Zygote)?
        .map_err(|reason| ContainerError::Operation {
            operation: operation.name(),
            id: id.to_string(),
            reason,
        })
}

// Runs in a builder zygote.
fn create_in_zygote<S: Engine>(config: ContainerConfig) -> Result<u32, String> {
    die_with_parent(());
    std::fs::create_dir_all(&config.state_root)
        .map_err(|e| format!("creating {}: {e}", config.state_root.display()))?;
    // The init process is a fork of this builder: same memory layout, read while `/proc`
    // is still there to read it from.
    let strings = match &config.runs {
        Runs::Wasm { groups, .. } => {
            set_groups(groups)?;
            Some(ProcessStrings::of_this_process().map_err(|e| e.to_string())?)
        }
        Runs::Native => None,
    };
    let mut builder = ContainerBuilder::new(config.id.clone(), SyscallType::Linux)
        .with_executor(WorkloadExecutor::<S>::new(
            config.runs,
            strings,
            config.wasm_layers,
            match config.compiled_module.as_ref() {
                Some(module) => OfferedCode::open(module)?,
                None => None,
            },
            Milestones::open(config.milestones.as_deref(), config.requests.as_deref()),
        ))
        .with_root_path(config.state_root.clone())
        .map_err(|e| format!("{e}"))?;
    if let Some(stdin) = open_stdin(&config.stdin)? {
        builder = builder.with_stdin(stdin);
    }
    if let Some(stdout) = open_output(&config.stdout)? {
        builder = builder.with_stdout(stdout);
    }
    if let Some(stderr) = open_output(&config.stderr)? {
        builder = builder.with_stderr(stderr);
    }
    let container = builder
        .as_init(&config.bundle)
        .as_sibling(true)
        .with_systemd(config.systemd_cgroup)
        .build()
        .map_err(|e| format!("{e}"))?;
    container
        .pid()
        .map(|pid| pid.as_raw() as u32)
        .ok_or_else(|| "libcontainer reported no init process".to_string())
}

/// Sets this builder's supplementary groups, which the container's init process inherits.
/// A Wasm workload's spec has none left for libcontainer to set (see
/// `isolation::guest_spec::harden`), so its groups are exactly the spec's, never the shim's.
fn set_groups(groups: &[u32]) -> Result<(), String> {
    // SAFETY: setgroups reads `groups.len()` gids from a live slice; it changes only this
    // process's credentials (a builder, forked for this one container).
    let set = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
    if set != 0 {
        return Err(format!(
            "setting the supplementary groups {groups:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Runs in the zygote. `again`: the first try's zygote died under it, and may have done the
/// operation already.
fn operate_in_zygote(
    (state_root, id, operation, again): (PathBuf, String, Operation, bool),
) -> Result<(), String> {
    let dir = state_root.join(&id);
    if !dir.exists() {
        return match operation {
            Operation::Delete => Ok(()),
            _ => Err("no such container".to_string()),
        };
    }
    let (mut container, restored) = load(&dir)?;
    let result = match operation {
        // The dead zygote's try got as far as starting it (its state says so, or its process
        // already ran and ended, or it died rewriting the state, which libcontainer does only
        // once the container runs): started, not a failed Start of a container that runs.
        Operation::Start if again && restored => container
            .set_status(ContainerStatus::Running)
            .save()
            .map(|_| ()),
        Operation::Start if again && container.status() != ContainerStatus::Created => Ok(()),
        Operation::Start => {
            keep_state_copy(&dir)?;
            container.start()
        }
        Operation::Kill { signal, all } => {
            let signal = Signal::try_from(signal as i32).map_err(|e| format!("{e}"))?;
            keep_state_copy(&dir)?;
            container.kill(signal, all)
        }
        Operation::Delete => return delete_until_gone(container, &dir),
    };
    result.map_err(|e| format!("{e}"))
}

/// libcontainer's state file, and the copy of it kept before each operation that rewrites it.
const STATE_FILE: &str = "state.json";
const STATE_COPY: &str = "state.json.before-last-operation";

/// Copies the container's state aside before an operation that rewrites it. libcontainer
/// rewrites `state.json` in place (truncate, then write): a zygote killed in between (the
/// OOM killer, `kill -9`) leaves it empty, and without the copy nothing could start, signal
/// or delete that container again; it would be left running, mounted, in its cgroup.
fn keep_state_copy(dir: &Path) -> Result<(), String> {
    let copying = dir.join(format!("{STATE_COPY}.new"));
    std::fs::copy(dir.join(STATE_FILE), &copying)
        .and_then(|_| std::fs::rename(&copying, dir.join(STATE_COPY)))
        .map_err(|e| format!("keeping a copy of the container's state: {e}"))
}

/// The container in `dir`; and whether its state had to be restored from the copy
/// [`keep_state_copy`] took, because a zygote died rewriting it.
fn load(dir: &Path) -> Result<(Container, bool), String> {
    let unreadable = match Container::load(dir.to_path_buf()) {
        Ok(container) => return Ok((container, false)),
        Err(err) => err,
    };
    let copy = dir.join(STATE_COPY);
    if !copy.exists() {
        return Err(format!("{unreadable}"));
    }
    std::fs::copy(&copy, dir.join(STATE_FILE))
        .map_err(|e| format!("{unreadable}; restoring the copy taken before: {e}"))?;
    let container = Container::load(dir.to_path_buf())
        .map_err(|e| format!("{unreadable}; the copy taken before is unreadable too: {e}"))?;
    Ok((container, true))
}

/// How long a delete keeps trying while killed processes are still leaving their cgroup.
const DELETE_RETRIES: u32 = 50;
const DELETE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// Deletes a container, killing what still runs in it. A cgroup cannot be removed until
/// the kernel has finished tearing down its killed processes, so a failed attempt is
/// retried for a few seconds (a manager that died leaves running containers behind, and
/// containerd's `shim delete` then finds them alive).
fn delete_until_gone(mut container: Container, dir: &Path) -> Result<(), String> {
    let mut attempt = 0;
    loop {
        match container.delete(true) {
            Ok(()) => return Ok(()),
            Err(err) if attempt >= DELETE_RETRIES => return Err(format!("{err}")),
            Err(_) => {
                attempt += 1;
                std::thread::sleep(DELETE_RETRY_PAUSE);
                if !dir.exists() {
                    return Ok(());
                }
                (container, _) = load(dir)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::container::State;

    /// A state file a killed zygote left empty is restored from the copy taken before the
    /// operation; with no copy, the failure says why.
    #[test]
    fn an_emptied_state_is_restored_from_its_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        // No pid: libcontainer's load finds the container stopped, and touches no process.
        State::new(
            "c1",
            ContainerStatus::Created,
            None,
            dir.path().to_path_buf(),
        )
        .save(dir.path())
        .expect("save");
        let (container, restored) = load(dir.path()).expect("load");
        assert_eq!((container.id(), restored), ("c1", false));

        keep_state_copy(dir.path()).expect("copy");
        std::fs::write(dir.path().join(STATE_FILE), "").expect("truncate");
        let (container, restored) = load(dir.path()).expect("restored");
        assert_eq!((container.id(), restored), ("c1", true));

        std::fs::remove_file(dir.path().join(STATE_COPY)).expect("remove copy");
        std::fs::write(dir.path().join(STATE_FILE), "").expect("truncate");
        assert!(
            load(dir.path()).is_err(),
            "an empty state with no copy loads"
        );
    }
}
