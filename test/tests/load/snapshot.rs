//! What the node holds for wasmrunner, taken before and after many tasks. Processes, mounts
//! and cgroups must be back exactly; the manager's descriptors and threads within
//! [`MANAGER_SLACK`].

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use wasmrunner_e2e::Env;
use wasmrunner_e2e::leaks::cgroups_below;

/// How long the node may take to let go of the last tasks (shims exiting, idle threads).
const SETTLE: Duration = Duration::from_secs(20);
/// The manager's resident memory may grow this much over a run of at least
/// [`RSS_CHECKED_FROM`] tasks.
const RSS_GROWTH_PERCENT: f64 = 5.0;
const RSS_CHECKED_FROM: usize = 1000;
/// How many more descriptors or threads than after the warm-up a manager may hold at the
/// end: it keeps the log fifos of its newest tasks and a ttrpc connection (with its threads)
/// per containerd client, whose numbers vary by one or two with what ran last. A leak of one
/// per task would show as hundreds.
const MANAGER_SLACK: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Processes of the engine's shim binary serving this containerd (a shared manager, its
    /// zygotes, per-pod shims).
    pub shim_processes: usize,
    /// Lines of the mount table.
    pub mounts: usize,
    /// Cgroups under `/<namespace>`, where `ctr` puts its containers.
    pub cgroups: usize,
    /// The shared manager serving the namespace, in shared mode.
    pub manager: Option<Manager>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manager {
    pub pid: u32,
    pub rss_kib: u64,
    pub fds: usize,
    pub threads: usize,
}

impl fmt::Display for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RSS {} KiB, {} descriptors, {} threads",
            self.rss_kib, self.fds, self.threads
        )
    }
}

impl Snapshot {
    pub fn take(env: &Env) -> Self {
        let binary = env.engine.binary_name();
        let shim_processes = env
            .containerd
            .shim_processes()
            .into_iter()
            .filter(|(_, cmdline)| {
                cmdline
                    .split_whitespace()
                    .next()
                    .is_some_and(|program| program.ends_with(&binary))
            })
            .count();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|table| table.lines().count())
            .unwrap_or(0);
        let manager = env.engine.manager_binary().and_then(|binary| {
            let pid = *env
                .containerd
                .managers(&binary, &env.containerd.namespace)
                .first()?;
            Manager::read(pid)
        });
        Self {
            shim_processes,
            mounts,
            cgroups: cgroups_below(&env.containerd.namespace),
            manager,
        }
    }

    /// A snapshot once the node has let go of finished tasks: as soon as it holds no more
    /// than `target` does, or, without a target, once it has not changed for a second; at
    /// the latest after [`SETTLE`].
    pub fn settled(env: &Env, target: Option<&Snapshot>) -> Self {
        let deadline = Instant::now() + SETTLE;
        let mut last = Self::take(env);
        let mut stable_since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = Self::take(env);
            let done = match target {
                Some(target) => now.holds_no_more_than(target),
                None => {
                    if !now.same_counts(&last) {
                        stable_since = Instant::now();
                    }
                    stable_since.elapsed() >= Duration::from_secs(1)
                }
            };
            if done || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    fn same_counts(&self, other: &Snapshot) -> bool {
        let counts = |s: &Snapshot| {
            (
                s.shim_processes,
                s.mounts,
                s.cgroups,
                s.manager.as_ref().map(|m| (m.pid, m.fds, m.threads)),
            )
        };
        counts(self) == counts(other)
    }

    fn holds_no_more_than(&self, target: &Snapshot) -> bool {
        let manager_ok = match (&self.manager, &target.manager) {
            (Some(now), Some(then)) => {
                now.fds <= then.fds + MANAGER_SLACK && now.threads <= then.threads + MANAGER_SLACK
            }
            (None, None) => true,
            _ => false,
        };
        self.shim_processes <= target.shim_processes
            && self.mounts <= target.mounts
            && self.cgroups <= target.cgroups
            && manager_ok
    }

    /// What `self` (after `tasks` tasks) holds beyond `before`, as a line for the report;
    /// an error if anything is left over or the manager's memory grew past the bound.
    pub fn compare(&self, before: &Snapshot, tasks: usize) -> Result<String> {
        let mut left = Vec::new();
        let check = |left: &mut Vec<String>, what: &str, then: usize, now: usize| {
            if now > then {
                left.push(format!("{what} {then} -> {now}"));
            }
        };
        check(
            &mut left,
            "shim processes",
            before.shim_processes,
            self.shim_processes,
        );
        check(&mut left, "mounts", before.mounts, self.mounts);
        check(&mut left, "cgroups", before.cgroups, self.cgroups);
        let mut line = format!(
            "left over against the start: shim processes {:+}, mounts {:+}, cgroups {:+}",
            diff(before.shim_processes, self.shim_processes),
            diff(before.mounts, self.mounts),
            diff(before.cgroups, self.cgroups)
        );
        match (&before.manager, &self.manager) {
            (Some(then), Some(now)) => {
                if now.pid != then.pid {
                    left.push(format!(
                        "the manager changed: pid {} -> {}",
                        then.pid, now.pid
                    ));
                }
                check(
                    &mut left,
                    "manager descriptors (allowed)",
                    then.fds + MANAGER_SLACK,
                    now.fds,
                );
                check(
                    &mut left,
                    "manager threads (allowed)",
                    then.threads + MANAGER_SLACK,
                    now.threads,
                );
                let growth = (now.rss_kib as f64 - then.rss_kib as f64) * 100.0
                    / (then.rss_kib.max(1) as f64);
                line.push_str(&format!(
                    "; manager descriptors {} -> {}, threads {} -> {}, RSS {} -> {} KiB ({growth:+.1}%)",
                    then.fds, now.fds, then.threads, now.threads, then.rss_kib, now.rss_kib
                ));
                if tasks >= RSS_CHECKED_FROM && growth > RSS_GROWTH_PERCENT {
                    left.push(format!(
                        "the manager's RSS grew {growth:.1}% over {tasks} tasks (at most {RSS_GROWTH_PERCENT}%)"
                    ));
                }
            }
            (None, None) => {}
            (then, now) => left.push(format!("the manager was {then:?} and is {now:?}")),
        }
        if !left.is_empty() {
            bail!("{line}; LEFT OVER: {}", left.join(", "));
        }
        Ok(line)
    }
}

impl Manager {
    fn read(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
        Some(Self {
            pid,
            rss_kib: field("VmRSS:")?,
            fds,
            threads: usize::try_from(field("Threads:")?).ok()?,
        })
    }
}

fn diff(before: usize, after: usize) -> i64 {
    after as i64 - before as i64
}
