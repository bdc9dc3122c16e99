//! The processes a runtime keeps alive for its containers, and what memory they use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// One process, as `/proc` shows it.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    /// The command line's words.
    pub cmdline: Vec<String>,
    /// The cgroup paths it is in, one per hierarchy (`/ns/id`).
    pub cgroups: Vec<String>,
}

impl Proc {
    /// The program's file name (argv\[0\] without its folder).
    pub fn program(&self) -> &str {
        self.cmdline
            .first()
            .map(|argv0| argv0.rsplit('/').next().unwrap_or(argv0))
            .unwrap_or("")
    }

    /// Whether the process was started with `-address <socket>` (how containerd starts
    /// shims, and how shims start their serving processes).
    pub fn serves(&self, socket: &str) -> bool {
        self.cmdline
            .windows(2)
            .any(|w| w[0] == "-address" && w[1] == socket)
    }

    /// The container id of the cgroup `/<namespace>/<id>` it is in, if any.
    pub fn container(&self, namespace: &str) -> Option<String> {
        let prefix = format!("/{namespace}/");
        self.cgroups.iter().find_map(|path| {
            let rest = path.strip_prefix(&prefix)?;
            let id = rest.split('/').next().filter(|id| !id.is_empty())?;
            Some(id.to_string())
        })
    }
}

/// Every process on the host (those that exit while being read are skipped).
pub fn all() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            read(pid, &entry.path())
        })
        .collect()
}

fn read(pid: u32, dir: &Path) -> Option<Proc> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let ppid = after_comm.split_whitespace().nth(1)?.parse().ok()?;
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    let cmdline = cmdline
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let cgroups = std::fs::read_to_string(dir.join("cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2).map(str::to_string))
        .collect();
    Some(Proc {
        pid,
        ppid,
        cmdline,
        cgroups,
    })
}

/// The proportional set size of a process, in KiB (`Pss:` of `/proc/<pid>/smaps_rollup`).
pub fn pss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find(|line| line.starts_with("Pss:"))
        .with_context(|| format!("no Pss line in {path}"))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("unreadable Pss line in {path}: {line:?}"))
}

/// What one process is to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The shim or shared manager serving the Task API.
    Shim,
    /// A process the shim forked that is in no container (zygotes).
    Helper,
    /// A process in a container's cgroup (the init process running the engine, or the
    /// native program).
    Container,
}

/// The memory of a runtime's processes at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    /// PSS in KiB by role.
    pub pss_kib: BTreeMap<Role, u64>,
    /// Number of processes by role.
    pub processes: BTreeMap<Role, usize>,
    /// Containers (of the namespace) with at least one process.
    pub containers_with_processes: usize,
}

impl Footprint {
    pub fn total_kib(&self) -> u64 {
        self.pss_kib.values().sum()
    }
}

/// The serving processes of `shim_binary` for the containerd at `socket`: those started with
/// its address whose parent is not one of them (a zygote is forked from the shim, so it has
/// the same command line).
pub fn serving(procs: &[Proc], shim_binary: &str, socket: &str) -> BTreeSet<u32> {
    let matching: BTreeSet<u32> = procs
        .iter()
        .filter(|p| p.program() == shim_binary && p.serves(socket))
        .map(|p| p.pid)
        .collect();
    procs
        .iter()
        .filter(|p| matching.contains(&p.pid) && !matching.contains(&p.ppid))
        .map(|p| p.pid)
        .collect()
}

/// The processes a runtime keeps: the serving processes of `shim_binary` (see [`serving`]),
/// everything they forked, and every process in a cgroup of `namespace` (with its container
/// id), each with its role.
pub fn members(
    procs: &[Proc],
    shim_binary: &str,
    socket: &str,
    namespace: &str,
) -> Vec<(u32, Role, Option<String>)> {
    let shims = serving(procs, shim_binary, socket);
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut descendants = BTreeSet::new();
    let mut stack: Vec<u32> = shims.iter().copied().collect();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if descendants.insert(child) {
                stack.push(child);
            }
        }
    }
    procs
        .iter()
        .filter_map(|p| {
            let container = p.container(namespace);
            let role = if container.is_some() {
                Role::Container
            } else if shims.contains(&p.pid) {
                Role::Shim
            } else if descendants.contains(&p.pid) {
                Role::Helper
            } else {
                return None;
            };
            Some((p.pid, role, container))
        })
        .collect()
}

/// The memory of [`members`], summed by role.
pub fn footprint(shim_binary: &str, socket: &str, namespace: &str) -> Result<Footprint> {
    let procs = all();
    let mut footprint = Footprint {
        pss_kib: BTreeMap::new(),
        processes: BTreeMap::new(),
        containers_with_processes: 0,
    };
    let mut containers = BTreeSet::new();
    for (pid, role, container) in members(&procs, shim_binary, socket, namespace) {
        if let Some(id) = container {
            containers.insert(id);
        }
        // A process that exited since the listing holds no memory any more.
        let Ok(pss) = pss_kib(pid) else { continue };
        *footprint.pss_kib.entry(role).or_default() += pss;
        *footprint.processes.entry(role).or_default() += 1;
    }
    footprint.containers_with_processes = containers.len();
    Ok(footprint)
}

/// The runtime's own processes (serving processes and what they forked, not containers):
/// what [`wasmrunner_e2e::procs::wakeups_per_second`] watches while containers sleep.
pub fn own_processes(shim_binary: &str, socket: &str, namespace: &str) -> Vec<u32> {
    members(&all(), shim_binary, socket, namespace)
        .into_iter()
        .filter(|(_, role, _)| *role != Role::Container)
        .map(|(pid, _, _)| pid)
        .collect()
}

/// The CPU time a process has used so far, its threads included (`utime + stime` of
/// `/proc/<pid>/stat`), in seconds; `None` once it has exited.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after `(comm)`: state is the first, utime the 12th, stime the 13th.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) as f64 / ticks.max(1) as f64)
}

/// Sends `signal` to each of `pids` (processes this run started, directly or through its
/// containerd).
pub fn signal(pids: &[u32], signal: libc::c_int) {
    for &pid in pids {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            continue;
        };
        // SAFETY: `kill` has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_listed_with_its_pss() -> Result<()> {
        let me = std::process::id();
        let procs = all();
        let mine = procs
            .iter()
            .find(|p| p.pid == me)
            .context("this process is not listed")?;
        assert!(!mine.program().is_empty());
        assert!(pss_kib(me)? > 0);
        assert!(cpu_seconds(me).is_some_and(|s| s >= 0.0));
        Ok(())
    }

    #[test]
    fn containers_are_found_by_cgroup_path() {
        let p = Proc {
            pid: 1,
            ppid: 0,
            cmdline: vec![
                "/x/containerd-shim-runc-v2".into(),
                "-address".into(),
                "/s".into(),
            ],
            cgroups: vec!["/".into(), "/ns-1/abc".into()],
        };
        assert_eq!(p.container("ns-1").as_deref(), Some("abc"));
        assert_eq!(p.container("ns"), None);
        assert_eq!(p.program(), "containerd-shim-runc-v2");
        assert!(p.serves("/s"));
        assert!(!p.serves("/t"));
    }
}
