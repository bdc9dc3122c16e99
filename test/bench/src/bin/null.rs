//! `containerd-shim-null-v1` (and `containerd-shim-nulld-v1`): the floor of the benchmark.
//! A shim that answers containerd's Task API at once and runs nothing: Create records the
//! task's stdout fifo, Start writes the hello line into it and marks the task exited with
//! status 0, Wait returns that, Delete forgets the task. The task events containerd expects
//! (`/tasks/create`, `/tasks/start`, `/tasks/exit`, `/tasks/delete`) are published, as any
//! shim must for CRI to see the exit.
//!
//! What a run through it costs is what containerd and its client cost by themselves (image
//! lookup, snapshot, bundle, fifos, starting or finding the shim process, the ttrpc calls,
//! teardown): no shim can be faster, so the bench reports each runtime's own share as its
//! figure less this one.
//!
//! Started as `containerd-shim-null-v1`, each task gets a process of its own (like a per-pod
//! shim); as `containerd-shim-nulld-v1` (a hard link the bench makes), one process serves
//! every task of the namespace (like a shared manager) and exits once idle for
//! `WASMRUNNER_MANAGER_IDLE_SECS` (default 10 s).
//!
//! A benchmarking tool only: it never runs guest code, so it has nothing to isolate.

use std::collections::HashMap;
use std::io::Write;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::shim::shim::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, KillRequest, PidsRequest, PidsResponse, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, WaitRequest, WaitResponse,
};
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::protos::types::task::Status;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::util::write_address;
use containerd_shim::{
    Config, Context, ExitSignal, Flags, Shim, StartOpts, Task, TtrpcContext, TtrpcResult,
};

/// What the bench's hello prints (`wasmrunner_e2e::images::HELLO`; the bench checks that the
/// two agree).
const HELLO_LINE: &str = "Hello from WebAssembly, run by wasmrunner!\n";

/// Set in the serving process's environment when it serves every task (the shared name).
const SHARED_ENV: &str = "WASMRUNNER_NULL_SHIM_SHARED";
const IDLE_ENV: &str = "WASMRUNNER_MANAGER_IDLE_SECS";

fn main() {
    let shared_name = std::env::args()
        .next()
        .is_some_and(|name| name.ends_with("nulld-v1"));
    if shared_name {
        // SAFETY: nothing else runs yet: the process has a single thread here.
        unsafe { std::env::set_var(SHARED_ENV, "1") };
    }
    containerd_shim::run::<NullShim>("io.containerd.null.v1", None);
}

fn shared() -> bool {
    std::env::var_os(SHARED_ENV).is_some()
}

fn now() -> MessageField<Timestamp> {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = since_epoch.as_secs() as i64;
    ts.nanos = since_epoch.subsec_nanos() as i32;
    MessageField::some(ts)
}

fn error(code: Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

struct NullShim {
    namespace: String,
    exit: Arc<ExitSignal>,
}

impl Shim for NullShim {
    type T = NullTasks;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Self {
            namespace: args.namespace.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let (grouping, vars) = if shared() {
            ("null-manager".to_string(), vec![(SHARED_ENV, "1")])
        } else {
            (opts.id.clone(), Vec::new())
        };
        let (_, address) = containerd_shim::spawn(opts, &grouping, vars)?;
        write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        Ok(DeleteResponse {
            exit_status: 137,
            exited_at: now(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> NullTasks {
        let (events, rx) = channel::<(&'static str, Box<dyn MessageDyn>)>();
        let namespace = self.namespace.clone();
        // Events go out in order from a thread of their own, so no call waits on containerd.
        let _ = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for (topic, event) in rx {
                    let _ = publisher.publish(Context::default(), topic, &namespace, event);
                }
            });
        NullTasks {
            tasks: Arc::new(Mutex::new(HashMap::new())),
            changed: Condvar::new(),
            events,
            exit: Arc::clone(&self.exit),
            shared: shared(),
            last_active: Arc::new(Mutex::new(Instant::now())),
            idle_watch: std::sync::Once::new(),
        }
    }
}

struct NullTask {
    stdout: String,
    exited: Option<MessageField<Timestamp>>,
}

struct NullTasks {
    tasks: Arc<Mutex<HashMap<String, NullTask>>>,
    changed: Condvar,
    events: Sender<(&'static str, Box<dyn MessageDyn>)>,
    exit: Arc<ExitSignal>,
    shared: bool,
    /// Shared: when a task last came or went.
    last_active: Arc<Mutex<Instant>>,
    /// Shared: whether the thread that ends an idle manager runs.
    idle_watch: std::sync::Once,
}

impl NullTasks {
    fn tasks(&self) -> TtrpcResult<MutexGuard<'_, HashMap<String, NullTask>>> {
        self.tasks
            .lock()
            .map_err(|_| error(Code::INTERNAL, "the task table is poisoned"))
    }

    fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        let _ = self.events.send((topic, event));
    }

    fn touch(&self) {
        if let Ok(mut last) = self.last_active.lock() {
            *last = Instant::now();
        }
    }

    /// Shared: once the first task is gone, one thread ends the manager when it has had no
    /// task, and no task came or went, for the idle time.
    fn exit_once_idle(&self) {
        self.touch();
        self.idle_watch.call_once(|| {
            let idle_for = std::env::var(IDLE_ENV)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map_or(Duration::from_secs(10), Duration::from_secs);
            let (tasks, last_active, exit) = (
                Arc::clone(&self.tasks),
                Arc::clone(&self.last_active),
                Arc::clone(&self.exit),
            );
            let _ = std::thread::Builder::new()
                .name("idle".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_millis(500));
                        let quiet = last_active
                            .lock()
                            .is_ok_and(|last| last.elapsed() >= idle_for);
                        if quiet && tasks.lock().is_ok_and(|tasks| tasks.is_empty()) {
                            exit.signal();
                            return;
                        }
                    }
                });
        });
    }
}

impl Task for NullTasks {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let pid = std::process::id();
        self.tasks()?.insert(
            req.id.clone(),
            NullTask {
                stdout: req.stdout.clone(),
                exited: None,
            },
        );
        self.touch();
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id,
                bundle: req.bundle,
                pid,
                ..Default::default()
            }),
        );
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let pid = std::process::id();
        let stdout = match self.tasks()?.get(&req.id) {
            Some(task) => task.stdout.clone(),
            None => return Err(error(Code::NOT_FOUND, format!("no task {}", req.id))),
        };
        // containerd holds the fifo's read end open: this open does not block.
        if !stdout.is_empty() {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&stdout)
                .and_then(|mut fifo| fifo.write_all(HELLO_LINE.as_bytes()))
                .map_err(|e| error(Code::INTERNAL, format!("writing to {stdout}: {e}")))?;
        }
        let exited_at = now();
        if let Some(task) = self.tasks()?.get_mut(&req.id) {
            task.exited = Some(exited_at.clone());
        }
        self.changed.notify_all();
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            }),
        );
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(TaskExit {
                container_id: req.id.clone(),
                id: req.id,
                pid,
                exit_status: 0,
                exited_at,
                ..Default::default()
            }),
        );
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let tasks = self.tasks()?;
        let task = tasks
            .get(&req.id)
            .ok_or_else(|| error(Code::NOT_FOUND, format!("no task {}", req.id)))?;
        let status = if task.exited.is_some() {
            Status::STOPPED
        } else {
            Status::CREATED
        };
        Ok(StateResponse {
            id: req.id.clone(),
            pid: std::process::id(),
            status: status.into(),
            stdout: task.stdout.clone(),
            exited_at: task.exited.clone().unwrap_or_default(),
            ..Default::default()
        })
    }

    fn kill(
        &self,
        _ctx: &TtrpcContext,
        req: KillRequest,
    ) -> TtrpcResult<containerd_shim::protos::api::Empty> {
        if let Some(task) = self.tasks()?.get_mut(&req.id) {
            task.exited.get_or_insert_with(now);
        }
        self.changed.notify_all();
        Ok(Default::default())
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let removed = self.tasks()?.remove(&req.id);
        let exited_at = removed.and_then(|t| t.exited).unwrap_or_else(now);
        let pid = std::process::id();
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                id: req.id,
                pid,
                exit_status: 0,
                exited_at: exited_at.clone(),
                ..Default::default()
            }),
        );
        Ok(DeleteResponse {
            pid,
            exit_status: 0,
            exited_at,
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, _req: PidsRequest) -> TtrpcResult<PidsResponse> {
        Ok(PidsResponse::default())
    }

    /// Blocks until Start (or Kill) marks the task exited: `ctr run` calls it before Start.
    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let mut tasks = self.tasks()?;
        loop {
            match tasks.get(&req.id) {
                None => return Err(error(Code::NOT_FOUND, format!("no task {}", req.id))),
                Some(NullTask {
                    exited: Some(at), ..
                }) => {
                    return Ok(WaitResponse {
                        exit_status: 0,
                        exited_at: at.clone(),
                        ..Default::default()
                    });
                }
                Some(_) => {
                    tasks = self
                        .changed
                        .wait(tasks)
                        .map_err(|_| error(Code::INTERNAL, "the task table is poisoned"))?;
                }
            }
        }
    }

    fn connect(&self, _ctx: &TtrpcContext, _req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: std::process::id(),
            ..Default::default()
        })
    }

    fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: ShutdownRequest,
    ) -> TtrpcResult<containerd_shim::protos::api::Empty> {
        if self.tasks()?.is_empty() {
            if self.shared {
                self.exit_once_idle();
            } else {
                self.exit.signal();
            }
        }
        Ok(Default::default())
    }
}
