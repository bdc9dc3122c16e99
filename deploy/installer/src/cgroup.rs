//! Choosing the `SystemdCgroup` option of the new runtime entries so that the wasm shims use the
//! same cgroup driver as the node's other pods (kubelet's `cgroupDriver` must match it).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::host::HostProbe;

/// `--systemd-cgroup auto|true|false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SystemdCgroupMode {
    #[default]
    Auto,
    True,
    False,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid --systemd-cgroup value `{0}` (expected auto, true or false)")]
pub struct BadMode(pub String);

impl FromStr for SystemdCgroupMode {
    type Err = BadMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "true" => Ok(Self::True),
            "false" => Ok(Self::False),
            other => Err(BadMode(other.to_string())),
        }
    }
}

/// Why a value was chosen (printed with the action lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Given on the command line.
    Explicit,
    /// Copied from the config's runc runtime options.
    FromRunc,
    /// cgroup v2 and systemd as PID 1.
    Cgroup2AndSystemd,
    /// Not cgroup v2, or PID 1 is not systemd.
    NotCgroup2OrNoSystemd,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Explicit => "set by --systemd-cgroup",
            Self::FromRunc => "copied from the runc runtime's options",
            Self::Cgroup2AndSystemd => "cgroup v2 and PID 1 is systemd",
            Self::NotCgroup2OrNoSystemd => "not (cgroup v2 and PID 1 is systemd)",
        })
    }
}

/// Decides `SystemdCgroup`: the explicit value, else runc's value from the same config, else
/// true exactly when the node has a unified cgroup v2 hierarchy and systemd as PID 1.
pub fn decide(
    mode: SystemdCgroupMode,
    runc_value: Option<bool>,
    probe: &HostProbe,
) -> (bool, Reason) {
    match mode {
        SystemdCgroupMode::True => (true, Reason::Explicit),
        SystemdCgroupMode::False => (false, Reason::Explicit),
        SystemdCgroupMode::Auto => match runc_value {
            Some(value) => (value, Reason::FromRunc),
            None if probe.is_cgroup2() && probe.pid1_is_systemd() => {
                (true, Reason::Cgroup2AndSystemd)
            }
            None => (false, Reason::NotCgroup2OrNoSystemd),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(cgroup2: bool, systemd: bool) -> (tempfile::TempDir, HostProbe) {
        let root = tempfile::tempdir().unwrap();
        let probe = HostProbe::at_root(root.path());
        if cgroup2 {
            std::fs::create_dir_all(probe.cgroup_controllers.parent().unwrap()).unwrap();
            std::fs::write(&probe.cgroup_controllers, "cpu io memory pids\n").unwrap();
        }
        std::fs::create_dir_all(probe.pid1_comm.parent().unwrap()).unwrap();
        std::fs::write(
            &probe.pid1_comm,
            if systemd { "systemd\n" } else { "init\n" },
        )
        .unwrap();
        (root, probe)
    }

    #[test]
    fn explicit_values_win() {
        let (_root, probe) = fake_host(true, true);
        assert_eq!(
            decide(SystemdCgroupMode::False, Some(true), &probe),
            (false, Reason::Explicit)
        );
        assert_eq!(
            decide(SystemdCgroupMode::True, Some(false), &probe),
            (true, Reason::Explicit)
        );
    }

    #[test]
    fn auto_copies_runc() {
        let (_root, probe) = fake_host(false, false);
        assert_eq!(
            decide(SystemdCgroupMode::Auto, Some(true), &probe),
            (true, Reason::FromRunc)
        );
        let (_root, probe) = fake_host(true, true);
        assert_eq!(
            decide(SystemdCgroupMode::Auto, Some(false), &probe),
            (false, Reason::FromRunc)
        );
    }

    #[test]
    fn auto_without_runc_needs_cgroup2_and_systemd() {
        for (cgroup2, systemd, expected) in [
            (true, true, true),
            (true, false, false),
            (false, true, false),
            (false, false, false),
        ] {
            let (_root, probe) = fake_host(cgroup2, systemd);
            assert_eq!(
                decide(SystemdCgroupMode::Auto, None, &probe).0,
                expected,
                "cgroup2={cgroup2} systemd={systemd}"
            );
        }
    }

    #[test]
    fn modes_parse() {
        assert_eq!("auto".parse(), Ok(SystemdCgroupMode::Auto));
        assert_eq!("true".parse(), Ok(SystemdCgroupMode::True));
        assert_eq!("false".parse(), Ok(SystemdCgroupMode::False));
        assert!("yes".parse::<SystemdCgroupMode>().is_err());
    }
}
