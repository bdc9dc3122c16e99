//! Exit statuses of container processes. containerd-shim's reaper (the shim is a subreaper)
//! waits for every child and reports `(pid, status)` to its monitor; one thread here turns
//! those reports into calls to the waiting task.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use containerd_shim::monitor::{Subject, Topic, monitor_subscribe};

type OnExit = Box<dyn FnOnce(i32) + Send>;

/// Exits that arrived before anyone watched for them are kept, up to this many.
const EARLY_EXITS_KEPT: usize = 1024;

#[derive(Default)]
struct Watches {
    waiting: HashMap<i32, OnExit>,
    early: VecDeque<(i32, i32)>,
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
                    let on_exit = match watches.lock() {
                        Ok(mut watches) => match watches.waiting.remove(&pid) {
                            Some(on_exit) => Some(on_exit),
                            None => {
                                if watches.early.len() == EARLY_EXITS_KEPT {
                                    watches.early.pop_front();
                                }
                                watches.early.push_back((pid, event.exit_code));
                                None
                            }
                        },
                        Err(_) => None,
                    };
                    if let Some(on_exit) = on_exit {
                        on_exit(event.exit_code);
                    }
                }
            })?;
        Ok(watcher)
    }

    /// Calls `on_exit` with the exit status of `pid` (128 + N when killed by signal N), at
    /// once if it already exited.
    pub fn watch(&self, pid: i32, on_exit: impl FnOnce(i32) + Send + 'static) {
        let early = match self.watches.lock() {
            Ok(mut watches) => {
                let early = watches
                    .early
                    .iter()
                    .position(|(exited, _)| *exited == pid)
                    .and_then(|index| watches.early.remove(index));
                if early.is_none() {
                    watches.waiting.insert(pid, Box::new(on_exit));
                    return;
                }
                early
            }
            Err(_) => return,
        };
        if let Some((_, status)) = early {
            on_exit(status);
        }
    }
}
