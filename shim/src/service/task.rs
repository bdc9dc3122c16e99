//! One task: a container and what containerd asks about it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim::protos::events::task::TaskExit;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;

use crate::cgroups::{ContainerCgroup, OomWatch};
use crate::container::{HeldOutput, UnreadOutput};
use crate::milestones::{GuestReport, Milestone, MilestoneReader};
use crate::telemetry::Parent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running,
    Stopped { status: u32, at: SystemTime },
}

pub struct Task {
    pub id: String,
    pub bundle: String,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    /// Where libcontainer keeps this container's state.
    pub state_root: PathBuf,
    /// The container's init process.
    pub pid: u32,
    phase: Mutex<Phase>,
    /// The init process has been reaped; its exit may not be told yet (it waits for the
    /// output to be read: see [`UnreadOutput`]).
    reaped: AtomicBool,
    stopped: Condvar,
    /// The same news for `Wait` calls, which wait on the serving runtime, not on a thread.
    stopped_news: tokio::sync::Notify,
    /// Found when the task starts; kept for stats after the process is gone.
    pub cgroup: Mutex<Option<ContainerCgroup>>,
    pub oom_watch: Mutex<Option<OomWatch>>,
    /// Orders `/tasks/start` before `/tasks/exit`: an exit seen before the start event went
    /// out waits here.
    pub start_gate: Mutex<StartGate>,
    /// The service's hold on the output fifos, until the workload exits.
    held_output: Mutex<Option<HeldOutput>>,
    /// What its init process reports (a Wasm task's), and the guest's spans when traced.
    pub guest_trace: Mutex<GuestTrace>,
    /// Whose container this is in log lines: the pod (`namespace/name`) for CRI's, else
    /// containerd's namespace.
    pub whose: String,
}

/// What a Wasm task's init process reports through its FIFO (see `crate::milestones`): read
/// once when it exits, for the reason of a workload that could not run, and at Delete, for a
/// traced task, its guest spans under the Start call's span.
#[derive(Default)]
pub struct GuestTrace {
    pub milestones: Option<MilestoneReader>,
    /// The Start call's span and when that call came.
    pub start: Option<(Parent, SystemTime)>,
    report: Option<GuestReport>,
}

impl GuestTrace {
    /// Reads what the init process wrote, once it has exited; returns why the workload could
    /// not run, if that is what it said.
    pub fn read_at_exit(&mut self) -> Option<String> {
        let report = self.report.get_or_insert_with(|| {
            self.milestones
                .as_ref()
                .map(MilestoneReader::read)
                .unwrap_or_default()
        });
        report.failure.clone()
    }

    /// Records `guest load` (Start to the workload read), `guest instantiate` (to the first
    /// instruction) and `guest run` (to `exited`), for what the init process reported.
    pub fn record(mut self, exited: SystemTime) {
        self.read_at_exit();
        let (Some(report), Some((parent, started))) = (self.report, self.start) else {
            return;
        };
        let loaded = report.at(Milestone::Loaded);
        let running = report.at(Milestone::Running);
        if let Some(loaded) = loaded {
            parent.phase("guest load", started, loaded, Vec::new());
        }
        if let (Some(loaded), Some(running)) = (loaded, running) {
            parent.phase("guest instantiate", loaded, running, Vec::new());
        }
        if let Some(running) = running {
            parent.phase("guest run", running, exited.max(running), Vec::new());
        }
    }
}

#[derive(Default)]
pub struct StartGate {
    pub start_published: bool,
    pub deferred_exit: Option<TaskExit>,
}

impl Task {
    pub fn new(
        id: String,
        bundle: String,
        stdio: [String; 3],
        state_root: PathBuf,
        pid: u32,
        held_output: HeldOutput,
        whose: String,
    ) -> Self {
        let [stdin, stdout, stderr] = stdio;
        Self {
            id,
            bundle,
            stdin,
            stdout,
            stderr,
            state_root,
            pid,
            phase: Mutex::new(Phase::Created),
            reaped: AtomicBool::new(false),
            stopped: Condvar::new(),
            stopped_news: tokio::sync::Notify::new(),
            cgroup: Mutex::new(None),
            oom_watch: Mutex::new(None),
            start_gate: Mutex::new(StartGate::default()),
            held_output: Mutex::new(Some(held_output)),
            guest_trace: Mutex::new(GuestTrace::default()),
            whose,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
            .lock()
            .map(|phase| *phase)
            .unwrap_or(Phase::Stopped {
                status: 255,
                at: SystemTime::now(),
            })
    }

    /// Created → Running. A task that already stopped (its workload ended at once) stays
    /// stopped; false when it was running already.
    pub fn mark_running(&self) -> bool {
        match self.phase.lock() {
            Ok(mut phase) => match *phase {
                Phase::Created => {
                    *phase = Phase::Running;
                    true
                }
                Phase::Stopped { .. } => true,
                Phase::Running => false,
            },
            Err(_) => false,
        }
    }

    /// Records that the init process is gone, before its exit is told.
    pub fn mark_reaped(&self) {
        self.reaped.store(true, Ordering::Release);
    }

    /// Whether the init process is gone: a stopped task, or one whose exit waits on its
    /// output being read.
    pub fn reaped(&self) -> bool {
        self.reaped.load(Ordering::Acquire)
    }

    /// Lets go of the output fifos: containerd's copy ends once the workload's own ends are
    /// closed too. What is left in them is still to be read (see [`UnreadOutput`]).
    pub fn release_output(&self) -> UnreadOutput {
        self.held_output
            .lock()
            .ok()
            .and_then(|mut held| held.take())
            .map(HeldOutput::release)
            .unwrap_or_default()
    }

    /// Records the exit, which happened `at`; the first report wins.
    pub fn mark_stopped(&self, status: u32, at: SystemTime) -> SystemTime {
        if let Ok(mut phase) = self.phase.lock() {
            if let Phase::Stopped { at, .. } = *phase {
                return at;
            }
            *phase = Phase::Stopped { status, at };
        }
        self.stopped.notify_all();
        self.stopped_news.notify_waiters();
        at
    }

    /// Waits until the task has stopped without holding a thread: containerd keeps a `Wait`
    /// open for the life of every task.
    pub async fn stopped(&self) -> Option<(u32, SystemTime)> {
        loop {
            let news = self.stopped_news.notified();
            tokio::pin!(news);
            // Registered before the look, so a stop between the two is not missed.
            news.as_mut().enable();
            if let Phase::Stopped { status, at } = *self.phase.lock().ok()? {
                return Some((status, at));
            }
            news.await;
        }
    }

    /// Waits until the task has stopped, up to `timeout` (forever when `None`).
    pub fn wait_stopped(&self, timeout: Option<Duration>) -> Option<(u32, SystemTime)> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut phase = self.phase.lock().ok()?;
        loop {
            if let Phase::Stopped { status, at } = *phase {
                return Some((status, at));
            }
            phase = match deadline {
                None => self.stopped.wait(phase).ok()?,
                Some(deadline) => {
                    let left = deadline.checked_duration_since(std::time::Instant::now())?;
                    self.stopped.wait_timeout(phase, left).ok()?.0
                }
            };
        }
    }
}

/// A protobuf timestamp for `at`.
pub fn timestamp(at: SystemTime) -> MessageField<Timestamp> {
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = since_epoch.as_secs() as i64;
    ts.nanos = since_epoch.subsec_nanos() as i32;
    MessageField::some(ts)
}
