//! Restarting containerd (or k3s/rke2, which embed it) after its config changed:
//! `--restart auto|none|"<command>"`.

use std::process::Command;
use std::str::FromStr;

use thiserror::Error;

use crate::host::{HostError, HostProbe, describe, host_command, run};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RestartMode {
    /// systemd's unit when PID 1 is systemd, else tell the user what to restart.
    #[default]
    Auto,
    None,
    /// A shell command (`sh -c`).
    Command(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("--restart needs `auto`, `none` or a command")]
pub struct EmptyRestart;

impl FromStr for RestartMode {
    type Err = EmptyRestart;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" => Err(EmptyRestart),
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::None),
            cmd => Ok(Self::Command(cmd.to_string())),
        }
    }
}

/// Which service runs the containerd whose config was edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// A containerd with its own systemd unit `containerd`.
    Containerd,
    /// A kind node: systemd is PID 1 of the node container, containerd is its unit.
    Kind,
    /// k3s or rke2, whose embedded containerd restarts with the k3s/rke2 unit.
    K3s,
}

/// Units that run k3s's or rke2's embedded containerd, in the order they are tried.
pub const K3S_UNITS: &[&str] = &["k3s", "k3s-agent", "rke2-server", "rke2-agent"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartPlan {
    Nothing,
    Systemd {
        unit: String,
    },
    Command(String),
    /// Cannot restart automatically: this is what the user has to do.
    Manual {
        hint: String,
    },
}

/// Decides how to restart. `is_active` answers `systemctl is-active <unit>` (injected for tests).
pub fn plan(
    mode: &RestartMode,
    service: Service,
    probe: &HostProbe,
    is_active: &dyn Fn(&str) -> bool,
) -> RestartPlan {
    match mode {
        RestartMode::None => RestartPlan::Nothing,
        RestartMode::Command(cmd) => RestartPlan::Command(cmd.clone()),
        RestartMode::Auto => match service {
            Service::Kind => RestartPlan::Systemd {
                unit: "containerd".into(),
            },
            Service::Containerd if probe.pid1_is_systemd() => RestartPlan::Systemd {
                unit: "containerd".into(),
            },
            Service::Containerd => RestartPlan::Manual {
                hint: "PID 1 is not systemd: restart containerd the way it was started \
                       (or rerun with --restart \"<command>\")"
                    .into(),
            },
            Service::K3s if probe.pid1_is_systemd() => {
                match K3S_UNITS.iter().find(|unit| is_active(unit)) {
                    Some(unit) => RestartPlan::Systemd {
                        unit: unit.to_string(),
                    },
                    None => RestartPlan::Manual {
                        hint: format!(
                            "none of the units {} is active: restart k3s/rke2 so that it renders \
                             the template again",
                            K3S_UNITS.join(", ")
                        ),
                    },
                }
            }
            Service::K3s => RestartPlan::Manual {
                hint: "PID 1 is not systemd: restart k3s/rke2 (e.g. `rc-service k3s restart`) so \
                       that it renders the template again"
                    .into(),
            },
        },
    }
}

/// `systemctl is-active --quiet <unit>` on the host.
pub fn unit_is_active(probe: &HostProbe, unit: &str) -> bool {
    host_command(probe, "systemctl", &["is-active", "--quiet", unit])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[derive(Debug, Error)]
pub enum RestartError {
    #[error("restart failed: {0}")]
    Host(#[from] HostError),
}

/// The command a plan runs, if any.
pub fn command_of(plan: &RestartPlan, probe: &HostProbe) -> Option<Command> {
    match plan {
        RestartPlan::Systemd { unit } => Some(host_command(probe, "systemctl", &["restart", unit])),
        RestartPlan::Command(cmd) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(cmd);
            Some(c)
        }
        RestartPlan::Nothing | RestartPlan::Manual { .. } => None,
    }
}

/// Runs the plan. Returns the command line that ran, if one did.
pub fn execute(plan: &RestartPlan, probe: &HostProbe) -> Result<Option<String>, RestartError> {
    match command_of(plan, probe) {
        Some(cmd) => {
            let line = describe(&cmd);
            run(cmd)?;
            Ok(Some(line))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(systemd: bool) -> (tempfile::TempDir, HostProbe) {
        let root = tempfile::tempdir().unwrap();
        let probe = HostProbe::at_root(root.path());
        std::fs::create_dir_all(probe.pid1_comm.parent().unwrap()).unwrap();
        std::fs::write(&probe.pid1_comm, if systemd { "systemd\n" } else { "sh\n" }).unwrap();
        (root, probe)
    }

    #[test]
    fn modes_parse() {
        assert_eq!("auto".parse(), Ok(RestartMode::Auto));
        assert_eq!("none".parse(), Ok(RestartMode::None));
        assert_eq!(
            "systemctl restart containerd".parse(),
            Ok(RestartMode::Command("systemctl restart containerd".into()))
        );
        assert_eq!("  ".parse::<RestartMode>(), Err(EmptyRestart));
    }

    #[test]
    fn auto_uses_systemd_only_when_pid1_is_systemd() {
        let none = |_: &str| false;
        let (_r, with) = probe(true);
        let (_r2, without) = probe(false);
        assert_eq!(
            plan(&RestartMode::Auto, Service::Containerd, &with, &none),
            RestartPlan::Systemd {
                unit: "containerd".into()
            }
        );
        assert!(matches!(
            plan(&RestartMode::Auto, Service::Containerd, &without, &none),
            RestartPlan::Manual { .. }
        ));
        assert_eq!(
            plan(&RestartMode::None, Service::Containerd, &with, &none),
            RestartPlan::Nothing
        );
        assert_eq!(
            plan(
                &RestartMode::Command("true".into()),
                Service::K3s,
                &without,
                &none
            ),
            RestartPlan::Command("true".into())
        );
    }

    #[test]
    fn k3s_picks_the_active_unit() {
        let (_r, with) = probe(true);
        let agent = |unit: &str| unit == "k3s-agent";
        assert_eq!(
            plan(&RestartMode::Auto, Service::K3s, &with, &agent),
            RestartPlan::Systemd {
                unit: "k3s-agent".into()
            }
        );
        let rke2 = |unit: &str| unit == "rke2-server";
        assert_eq!(
            plan(&RestartMode::Auto, Service::K3s, &with, &rke2),
            RestartPlan::Systemd {
                unit: "rke2-server".into()
            }
        );
        assert!(matches!(
            plan(&RestartMode::Auto, Service::K3s, &with, &|_| false),
            RestartPlan::Manual { .. }
        ));
    }

    #[test]
    fn kind_always_restarts_the_containerd_unit() {
        let (_r, without) = probe(false);
        assert_eq!(
            plan(&RestartMode::Auto, Service::Kind, &without, &|_| false),
            RestartPlan::Systemd {
                unit: "containerd".into()
            }
        );
    }

    #[test]
    fn commands_run_through_sh() {
        let (_r, p) = probe(false);
        assert_eq!(
            execute(&RestartPlan::Command("exit 0".into()), &p).unwrap(),
            Some("sh -c exit 0".into())
        );
        assert!(execute(&RestartPlan::Command("exit 3".into()), &p).is_err());
        assert_eq!(execute(&RestartPlan::Nothing, &p).unwrap(), None);
    }
}
