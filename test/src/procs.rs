//! The host's processes as `/proc` shows them: who is whose child, what each is named, what
//! limits it runs under. For cases that find a shim's zygote or compiler and kill it.

use std::time::{Duration, Instant};

/// One process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub parent: u32,
    /// Its `comm`: what `ps` and `pgrep -x` match.
    pub name: String,
    /// The state letter (`R`, `S`, `Z`, ...).
    pub state: char,
}

impl Process {
    pub fn of(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses.
        let (head, tail) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1.to_string();
        let mut fields = tail.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let parent = fields.next()?.parse().ok()?;
        Some(Self {
            pid,
            parent,
            name,
            state,
        })
    }

    /// Alive: not gone, not a zombie waiting to be reaped.
    pub fn alive(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }

    /// Its CPU-time limit in seconds (`RLIMIT_CPU`, soft), `None` when unlimited.
    pub fn cpu_limit(&self) -> Option<u64> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).ok()?;
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max cpu time"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }
}

/// How many threads process `pid` has now; `None` once it has exited.
pub fn threads(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.count())
}

/// The context switches every thread of process `pid` has made so far (voluntary and not,
/// from `/proc/<pid>/task/*/status`): how often it woke up. `None` once it has exited.
pub fn context_switches(pid: u32) -> Option<u64> {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for thread in threads.flatten() {
        // A thread that ended since the listing made no more switches.
        let Ok(status) = std::fs::read_to_string(thread.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter(|line| line.contains("ctxt_switches:"))
            .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Some(total)
}

/// How many times per second the processes `pids` woke up over `window`, together (a
/// process that exits meanwhile counts what it made before).
pub fn wakeups_per_second(pids: &[u32], window: Duration) -> f64 {
    let before: Vec<Option<u64>> = pids.iter().map(|&pid| context_switches(pid)).collect();
    std::thread::sleep(window);
    let made: u64 = pids
        .iter()
        .zip(before)
        .filter_map(|(&pid, before)| Some(context_switches(pid)?.saturating_sub(before?)))
        .sum();
    made as f64 / window.as_secs_f64()
}

/// Every live process of the host.
pub fn all() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(Process::of)
        .filter(Process::alive)
        .collect()
}

/// The live children of `parent`.
pub fn children(parent: u32) -> Vec<Process> {
    all().into_iter().filter(|p| p.parent == parent).collect()
}

/// The live children of `parent` named `name`.
pub fn children_named(parent: u32, name: &str) -> Vec<u32> {
    children(parent)
        .into_iter()
        .filter(|p| p.name == name)
        .map(|p| p.pid)
        .collect()
}

/// The live descendants of `root` (children, their children, ...).
pub fn descendants(root: u32) -> Vec<Process> {
    let everyone = all();
    let mut found: Vec<Process> = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for process in everyone.iter().filter(|p| p.parent == parent) {
            parents.push(process.pid);
            found.push(process.clone());
        }
    }
    found
}

/// Whether process `pid` is alive (a zombie is not).
pub fn alive(pid: u32) -> bool {
    Process::of(pid).is_some_and(|p| p.alive())
}

/// Sends SIGKILL to `pid`.
pub fn kill9(pid: u32) -> std::io::Result<()> {
    signal(pid, libc::SIGKILL)
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout` until none of `pids` is alive; returns those still alive.
pub fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|pid| alive(*pid)).collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `find` every 10 ms until it returns something or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut find: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = find() {
            return Some(found);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
