//! Exit statuses of container processes. containerd-shim's reaper (the shim is a subreaper)
//! waits for every child and reports `(pid, status)` to its monitor; one thread here turns
//! those reports into calls to the waiting task.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use containerd_shim::monitor::{Subject, Topic, monitor_subscribe};

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
    /// Subscribes to the reaper's reports and starts the thread that dispatches them.
    pub fn start() -> std::io::Result<Self> {
        let watcher = Self::default();
        let subscription =
            monitor_subscribe(Topic::Pid).map_err(|e| std::io::Error::other(e.to_string()))?;
        let watches = Arc::clone(&watcher.watches);
        std::thread::Builder::new()
            .name("exits".into())
            .spawn(move || {
                for event in subscription.rx.iter() {
                    let Subject::Pid(pid) = event.subject else {
                        continue;
                    };
                    let on_exit = {
                        let mut watches = watches.lock().unwrap_or_else(PoisonError::into_inner);
                        match watches.waiting.remove(&pid) {
                            Some(on_exit) => Some(on_exit),
                            None => {
                                watches.keep_early(pid, event.exit_code, Instant::now());
                                None
                            }
                        }
                    };
                    if let Some(on_exit) = on_exit {
                        contain_panic(&format!("the exit handler of pid {pid}"), || {
                            on_exit(event.exit_code)
                        });
                    }
                }
            })?;
        Ok(watcher)
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
    /// A handler that panics does not stop the thread: the next exit is still delivered.
    #[test]
    fn a_panicking_handler_does_not_end_delivery() {
        let watcher = ExitWatcher::start().expect("watcher");
        // Pids no process here has: the reaper's monitor is only fed by this test.
        let (first, second) = (i32::MAX - 7, i32::MAX - 8);
        watcher.watch(first, |_| panic!("a broken handler"));
        let (tx, rx) = std::sync::mpsc::channel();
        watcher.watch(second, move |status| {
            let _ = tx.send(status);
        });
        containerd_shim::monitor::monitor_notify_by_pid(first, 1).expect("notify");
        containerd_shim::monitor::monitor_notify_by_pid(second, 3).expect("notify");
        let status = rx.recv_timeout(Duration::from_secs(5));
        assert_eq!(
            status.ok(),
            Some(3),
            "the exit after a panicking handler was lost"
        );
    }

    use super::*;

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
