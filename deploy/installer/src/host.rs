//! Facts about the node the installer runs on: is PID 1 systemd, is the cgroup hierarchy
//! cgroup v2, are we in another mount namespace than PID 1 (a DaemonSet pod with `hostPID`),
//! which containerd is installed. The paths are fields so tests can point them at fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use crate::config::{ContainerdVersion, parse_containerd_version};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProbe {
    /// Exists on a unified (cgroup v2) hierarchy: `/sys/fs/cgroup/cgroup.controllers`.
    pub cgroup_controllers: PathBuf,
    /// PID 1's command name: `/proc/1/comm`.
    pub pid1_comm: PathBuf,
    /// Exists when the host booted with systemd (`sd_booted()`): `/run/systemd/system`.
    pub run_systemd_system: PathBuf,
    /// Mount namespaces of PID 1 and of this process.
    pub pid1_mnt_ns: PathBuf,
    pub self_mnt_ns: PathBuf,
}

impl Default for HostProbe {
    fn default() -> Self {
        Self::at_root(Path::new("/"))
    }
}

impl HostProbe {
    /// The probe paths under another root (tests build a fake root in a temp dir).
    pub fn at_root(root: &Path) -> Self {
        Self {
            cgroup_controllers: root.join("sys/fs/cgroup/cgroup.controllers"),
            pid1_comm: root.join("proc/1/comm"),
            run_systemd_system: root.join("run/systemd/system"),
            pid1_mnt_ns: root.join("proc/1/ns/mnt"),
            self_mnt_ns: root.join("proc/self/ns/mnt"),
        }
    }

    /// True on a pure cgroup v2 hierarchy. A hybrid layout (v2 mounted at
    /// `/sys/fs/cgroup/unified`) has no `cgroup.controllers` directly under `/sys/fs/cgroup`.
    pub fn is_cgroup2(&self) -> bool {
        self.cgroup_controllers.is_file()
    }

    /// True when PID 1 is systemd: its command name says so, or (inside a container that shares
    /// the host's `/run/systemd`) the host booted with systemd.
    pub fn pid1_is_systemd(&self) -> bool {
        let comm = std::fs::read_to_string(&self.pid1_comm).unwrap_or_default();
        comm.trim() == "systemd" || self.run_systemd_system.is_dir()
    }

    /// True when PID 1 lives in another mount namespace than this process, i.e. we run in a
    /// container that shares the host's PID namespace: host commands need `nsenter`.
    pub fn in_other_mount_ns_than_pid1(&self) -> bool {
        match (
            std::fs::read_link(&self.pid1_mnt_ns),
            std::fs::read_link(&self.self_mnt_ns),
        ) {
            (Ok(pid1), Ok(me)) => pid1 != me,
            _ => false,
        }
    }
}

/// Builds a command that runs on the host: directly, or through `nsenter` into PID 1's
/// namespaces when the installer runs in a pod with `hostPID: true`.
pub fn host_command(probe: &HostProbe, program: &str, args: &[&str]) -> Command {
    if probe.in_other_mount_ns_than_pid1() {
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--",
        ]);
        cmd.arg(program).args(args);
        cmd
    } else {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    }
}

/// Renders a command for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Error)]
pub enum HostError {
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("`{command}`: {source}")]
    Version {
        command: String,
        source: crate::config::ConfigError,
    },
}

/// Runs a command to completion, returning its standard output.
pub fn run(mut cmd: Command) -> Result<String, HostError> {
    let command = describe(&cmd);
    let out = cmd.output().map_err(|source| HostError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(HostError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The version of the node's containerd (`containerd --version`, run on the host).
pub fn containerd_version(
    probe: &HostProbe,
    containerd: &str,
) -> Result<ContainerdVersion, HostError> {
    let cmd = host_command(probe, containerd, &["--version"]);
    let command = describe(&cmd);
    let out = run(cmd)?;
    parse_containerd_version(&out).map_err(|source| HostError::Version { command, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_a_fake_root() {
        let root = tempfile::tempdir().unwrap();
        let probe = HostProbe::at_root(root.path());
        assert!(!probe.is_cgroup2());
        assert!(!probe.pid1_is_systemd());
        assert!(!probe.in_other_mount_ns_than_pid1());

        std::fs::create_dir_all(root.path().join("sys/fs/cgroup")).unwrap();
        std::fs::write(&probe.cgroup_controllers, "cpu memory\n").unwrap();
        assert!(probe.is_cgroup2());

        std::fs::create_dir_all(root.path().join("proc/1")).unwrap();
        std::fs::write(&probe.pid1_comm, "bash\n").unwrap();
        assert!(!probe.pid1_is_systemd());
        std::fs::write(&probe.pid1_comm, "systemd\n").unwrap();
        assert!(probe.pid1_is_systemd());

        std::fs::write(&probe.pid1_comm, "pause\n").unwrap();
        std::fs::create_dir_all(&probe.run_systemd_system).unwrap();
        assert!(probe.pid1_is_systemd());
    }

    #[test]
    fn mount_namespace_comparison_uses_links() {
        let root = tempfile::tempdir().unwrap();
        let probe = HostProbe::at_root(root.path());
        std::fs::create_dir_all(root.path().join("proc/1/ns")).unwrap();
        std::fs::create_dir_all(root.path().join("proc/self/ns")).unwrap();
        std::os::unix::fs::symlink("mnt:[1]", &probe.pid1_mnt_ns).unwrap();
        std::os::unix::fs::symlink("mnt:[1]", &probe.self_mnt_ns).unwrap();
        assert!(!probe.in_other_mount_ns_than_pid1());
        assert_eq!(
            describe(&host_command(
                &probe,
                "systemctl",
                &["restart", "containerd"]
            )),
            "systemctl restart containerd"
        );
        std::fs::remove_file(&probe.self_mnt_ns).unwrap();
        std::os::unix::fs::symlink("mnt:[2]", &probe.self_mnt_ns).unwrap();
        assert!(probe.in_other_mount_ns_than_pid1());
        assert_eq!(
            describe(&host_command(
                &probe,
                "systemctl",
                &["restart", "containerd"]
            )),
            "nsenter --target 1 --mount --uts --ipc --net --pid -- systemctl restart containerd"
        );
    }

    #[test]
    fn run_reports_failures() {
        assert!(matches!(
            run(Command::new("/nonexistent/binary")),
            Err(HostError::Spawn { .. })
        ));
        assert!(matches!(
            run(Command::new("false")),
            Err(HostError::Failed { .. })
        ));
        let mut echo = Command::new("echo");
        echo.arg("hi");
        assert_eq!(run(echo).unwrap(), "hi\n");
    }
}
