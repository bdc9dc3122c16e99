//! Exit statuses of this process's children. The serving process is a subreaper: every
//! container init (and every orphan under it) ends as its child. One thread here waits for
//! them on SIGCHLD and hands each status to the task watching that pid.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::failure::contain_panic;

type OnExit = Box<dyn FnOnce(i32) + Send>;

/// Exits that arrived before anyone watched for them are kept, up to this many...
const EARLY_EXITS_KEPT: usize = 1024;
/// ...and for this long. An init that fails while it is being created exits before its pid is
/// watched, by the length of a create; every other child (builder zygotes, libcontainer's
/// intermediate processes, a killed first attempt) is never watched. Pids come back (32768 of
/// them by default, a few thousand containers' worth in a busy manager): an exit kept longer
/// would be handed to a new container that got the same pid, which then "exited" at once.
const EARLY_EXIT_TTL: Duration = Duration::from_secs(30);

struct EarlyExit {
    pid: i32,
    status: i32,
    at: Instant,
}

#[derive(Default)]
struct Watches {
    waiting: HashMap<i32, OnExit>,
    early: VecDeque<EarlyExit>,
}

impl Watches {
    fn keep_early(&mut self, pid: i32, status: i32, now: Instant) {
        self.forget_stale(now);
        if self.early.len() == EARLY_EXITS_KEPT {
            self.early.pop_front();
        }
        self.early.push_back(EarlyExit {
            pid,
            status,
            at: now,
        });
    }

    fn take_early(&mut self, pid: i32, now: Instant) -> Option<i32> {
        self.forget_stale(now);
        let index = self.early.iter().position(|exit| exit.pid == pid)?;
        self.early.remove(index).map(|exit| exit.status)
    }

    fn forget_stale(&mut self, now: Instant) {
        while self
            .early
            .front()
            .is_some_and(|exit| now.duration_since(exit.at) > EARLY_EXIT_TTL)
        {
            self.early.pop_front();
        }
    }
}

#[derive(Clone, Default)]
pub struct ExitWatcher {
    watches: Arc<Mutex<Watches>>,
}

impl ExitWatcher {
    /// Takes over SIGCHLD (and SIGTERM and SIGINT, which a serving process outlives, as
    /// containerd's Go shims do: containerd ends a shim with Shutdown or SIGKILL) and starts
    /// the reaper thread.
    pub fn start() -> std::io::Result<Self> {
        let watcher = Self::default();
        let mut signals = Signals::new([SIGCHLD, SIGTERM, SIGINT])?;
        let reaper = watcher.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if signal == SIGCHLD {
                        reaper.reap();
                    } else {
                        tracing::debug!("signal {signal} received; serving on");
                    }
                }
            })?;
        Ok(watcher)
    }

    /// Waits for every child that has ended (one SIGCHLD may stand for several).
    fn reap(&self) {
        loop {
            let mut raw = 0;
            // SAFETY: waitpid only writes the status into `raw`, a local that outlives it.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
            if pid > 0 {
                let status = if libc::WIFSIGNALED(raw) {
                    128 + libc::WTERMSIG(raw)
                } else if libc::WIFEXITED(raw) {
                    libc::WEXITSTATUS(raw)
                } else {
                    continue;
                };
                // containerd-shim's own waits (its `mount_rootfs` runs `mount` in a child)
                // hear from its monitor.
                if let Err(err) = containerd_shim::monitor::monitor_notify_by_pid(pid, status) {
                    tracing::warn!("reporting the exit of pid {pid}: {err}");
                }
                self.deliver(pid, status);
                continue;
            }
            if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // 0: children left, none ended; ECHILD: no child at all.
            break;
        }
    }

    /// Hands `status` to the watch of `pid`, or keeps it for a watch that comes later.
    fn deliver(&self, pid: i32, status: i32) {
        let on_exit = {
            let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
            match watches.waiting.remove(&pid) {
                Some(on_exit) => Some(on_exit),
                None => {
                    watches.keep_early(pid, status, Instant::now());
                    None
                }
            }
        };
        if let Some(on_exit) = on_exit {
            contain_panic(&format!("the exit handler of pid {pid}"), || {
                on_exit(status)
            });
        }
    }

    /// Calls `on_exit` with the exit status of `pid` (128 + N when killed by signal N), at
    /// once if it already exited.
    pub fn watch(&self, pid: i32, on_exit: impl FnOnce(i32) + Send + 'static) {
        let early = {
            let mut watches = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
            let early = watches.take_early(pid, Instant::now());
            if early.is_none() {
                watches.waiting.insert(pid, Box::new(on_exit));
                return;
            }
            early
        };
        if let Some(status) = early {
            on_exit(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler that panics does not stop delivery: the next exit still arrives.
    #[test]
    fn a_panicking_handler_does_not_end_delivery() {
        let watcher = ExitWatcher::default();
        // Pids no process here has.
        let (first, second) = (i32::MAX - 7, i32::MAX - 8);
        watcher.watch(first, |_| panic!("a broken handler"));
        let (tx, rx) = std::sync::mpsc::channel();
        watcher.watch(second, move |status| {
            let _ = tx.send(status);
        });
        watcher.deliver(first, 1);
        watcher.deliver(second, 3);
        assert_eq!(
            rx.try_recv().ok(),
            Some(3),
            "the exit after a panicking handler was lost"
        );
    }

    #[test]
    fn an_early_exit_is_handed_to_a_watch_of_its_pid() {
        let mut watches = Watches::default();
        let now = Instant::now();
        watches.keep_early(42, 3, now);
        assert_eq!(watches.take_early(7, now), None);
        assert_eq!(
            watches.take_early(42, now + Duration::from_secs(1)),
            Some(3)
        );
        assert_eq!(watches.take_early(42, now), None, "handed out once");
    }

    #[test]
    fn a_stale_exit_is_not_handed_to_a_reused_pid() {
        let mut watches = Watches::default();
        let now = Instant::now();
        watches.keep_early(42, 137, now);
        let later = now + EARLY_EXIT_TTL + Duration::from_secs(1);
        assert_eq!(watches.take_early(42, later), None);
        assert!(watches.early.is_empty());
    }

    #[test]
    fn early_exits_are_bounded() {
        let mut watches = Watches::default();
        let now = Instant::now();
        for pid in 0..(EARLY_EXITS_KEPT as i32 + 10) {
            watches.keep_early(pid, 0, now);
        }
        assert_eq!(watches.early.len(), EARLY_EXITS_KEPT);
        assert_eq!(watches.take_early(0, now), None, "the oldest went first");
    }
}
