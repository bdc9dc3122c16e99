//! wasmrunner's task service: the shim v2 Task API that containerd calls over ttrpc, for
//! every container this process serves.

mod events;
mod exits;
mod forwarder;
mod options;
mod process;
mod server;
mod task;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock, RwLock};
use std::time::{Duration, Instant};

use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, Empty, ExecProcessRequest, KillRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::protos::types::task::Status;
use containerd_shim::{DeleteResponse, ExitSignal, TtrpcResult};
use containerd_shim_wasm::shim::Compiler as _;

use crate::engine::Engine;

use events::{Event, EventSink};
use exits::ExitWatcher;
use options::runtime_options;
pub use process::{ServingConfig, ShimProcess, container_left};
use task::{Phase, Task, timestamp};

use containerd_shim_wasm::sandbox::context::WasmLayer;
use oci_spec::runtime::Spec;
use wasmrunner_capabilities::{Capabilities, Origin, Statement};

use crate::cgroups::ContainerCgroup;
use crate::container::{self, BoundedCompiler, ContainerConfig, HeldOutput, OUTPUT_STALL, Runs};
use crate::content::{ContentStore, ImageContent, cache_key_hash};
use crate::entrypoint::ImageEntrypoint;
use crate::isolation::{NodePolicy, guest_spec};
use crate::laps::Laps;
use crate::milestones::MilestoneReader;
use crate::module_cache::{CompiledModule, ModuleCache};
use crate::served_requests::RequestReader;
use crate::telemetry::{Call, Telemetry};
use crate::version::Mode;

/// How long a serving process with nothing to serve stays up (an idle manager in shared
/// mode, a per-pod shim that no Create reached), unless `WASMRUNNER_MANAGER_IDLE_SECS` says.
const MANAGER_IDLE_EXIT: Duration = Duration::from_secs(300);

fn manager_idle_exit() -> Duration {
    std::env::var("WASMRUNNER_MANAGER_IDLE_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map_or(MANAGER_IDLE_EXIT, Duration::from_secs)
}

/// How long a thread that ran a Task API call waits for the next before it ends.
const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// A call's ttrpc metadata (containerd's `traceparent`, for one).
type Metadata = HashMap<String, Vec<String>>;

/// How long `Delete` waits for the exit status of a container it had to kill.
const DELETE_EXIT_WAIT: Duration = Duration::from_secs(5);

pub struct TaskService<S: Engine> {
    inner: Arc<Inner>,
    /// The engine's compiler, run in a limited child per compile; made on first use.
    compiler: OnceLock<Option<BoundedCompiler<S>>>,
}

struct Inner {
    mode: Mode,
    /// How Wasm guests are isolated on this node.
    policy: NodePolicy,
    /// The node's compiled-module cache, for engines that use it.
    module_cache: Option<ModuleCache>,
    namespace: String,
    containerd_address: String,
    tasks: RwLock<HashMap<String, Arc<Task>>>,
    events: EventSink,
    exits: ExitWatcher,
    exit: Arc<ExitSignal>,
    /// Serves the Task API (`server`) and drives the gRPC calls to containerd's content
    /// store.
    runtime: tokio::runtime::Runtime,
    /// The connection to containerd's content store, made on first use and kept.
    content_store: tokio::sync::OnceCell<ContentStore>,
    /// Creates under way: a manager is not idle while one is, even with no task listed yet.
    creating: AtomicUsize,
    /// Whether a Create ever reached this process (see `TaskService::exit_if_never_used`).
    used: AtomicBool,
    /// The same, by task id, each with whether containerd has given up on it (see
    /// `TaskService::shutdown`).
    in_flight: Mutex<HashMap<String, bool>>,
    /// A per-pod shim told to shut down while a Create ran: it exits once none runs.
    exit_after_creates: AtomicBool,
    /// When a task was last created or deleted, or `shim start` announced one, for the
    /// manager's idle exit.
    last_activity: Mutex<Instant>,
    /// Starts the one idle-exit thread: a manager's on its first Shutdown, any serving
    /// process's after a failed Create (see `TaskService::exit_once_idle`).
    idle_watch: Once,
    /// Spans of the Task API calls, when containerd's environment turns tracing on.
    telemetry: Telemetry,
}

impl Inner {
    /// Ends the serving process, once what it traced is sent.
    fn exit_now(&self) {
        self.telemetry.flush();
        self.exit.signal();
    }

    fn touch(&self) {
        if let Ok(mut last) = self.last_activity.lock() {
            *last = Instant::now();
        }
    }

    /// Whether containerd has given up on the Create of task `id` that is under way.
    fn abandoned(&self, id: &str) -> bool {
        self.in_flight
            .lock()
            .is_ok_and(|creates| creates.get(id) == Some(&true))
    }

    /// Marks the Create of task `id`, if one is under way, as given up on by containerd;
    /// returns whether one is.
    fn abandon(&self, id: &str) -> bool {
        self.in_flight
            .lock()
            .ok()
            .and_then(|mut creates| creates.get_mut(id).map(|abandoned| *abandoned = true))
            .is_some()
    }

    /// A per-pod shim that was told to shut down during a Create, once no Create runs and it
    /// serves no task.
    fn exit_if_shut_down(&self) {
        if self.exit_after_creates.load(Ordering::SeqCst)
            && self.creating.load(Ordering::SeqCst) == 0
            && self.tasks.read().is_ok_and(|tasks| tasks.is_empty())
        {
            self.exit_now();
        }
    }

    /// No task, no create under way, and nothing happened for `idle_for`.
    fn idle_for(&self, idle_for: Duration) -> bool {
        self.creating.load(Ordering::SeqCst) == 0
            && self.tasks.read().is_ok_and(|tasks| tasks.is_empty())
            && self
                .last_activity
                .lock()
                .is_ok_and(|last| last.elapsed() >= idle_for)
    }

    /// The manager's idle-exit thread: it wakes when the manager could first have been idle
    /// for `idle_for` and exits it if it was. One thread per manager: a sleeping thread per
    /// Shutdown held its stack for the whole idle period (about 4 KB a task, the growth of
    /// issue #20).
    fn exit_when_idle(&self, idle_for: Duration) {
        loop {
            let quiet = self
                .last_activity
                .lock()
                .map(|last| last.elapsed())
                .unwrap_or_default();
            if quiet < idle_for {
                std::thread::sleep(idle_for - quiet);
            } else if self.idle_for(idle_for) {
                self.exit_now();
                return;
            } else {
                std::thread::sleep(idle_for);
            }
        }
    }
}

/// Counts the create of a task as under way until dropped.
struct Creating<'a> {
    inner: &'a Inner,
    id: String,
}

impl<'a> Creating<'a> {
    fn new(inner: &'a Inner, id: &str) -> Self {
        inner.used.store(true, Ordering::SeqCst);
        inner.creating.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut creates) = inner.in_flight.lock() {
            creates.insert(id.to_string(), false);
        }
        inner.touch();
        Self {
            inner,
            id: id.to_string(),
        }
    }
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.inner.touch();
        if let Ok(mut creates) = self.inner.in_flight.lock() {
            creates.remove(&self.id);
        }
        self.inner.creating.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What an error says, without the wrapping of its ttrpc status.
fn rpc_message(err: &ttrpc::Error) -> String {
    match err {
        ttrpc::Error::RpcStatus(status) => status.message().to_string(),
        err => err.to_string(),
    }
}

/// What a Create that containerd gave up on fails with.
fn abandoned(id: &str) -> ttrpc::Error {
    status(
        ttrpc::Code::ABORTED,
        format!(
            "the create of task {id} was given up on by containerd (it was shut down during it); \
             nothing of it is kept"
        ),
    )
}

fn not_found(what: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(ttrpc::Code::NOT_FOUND, what.to_string()))
}

fn status(code: ttrpc::Code, message: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.to_string()))
}

fn internal(err: impl std::fmt::Display) -> ttrpc::Error {
    status(ttrpc::Code::INTERNAL, err)
}

fn no_exec(exec_id: &str) -> TtrpcResult<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(status(
            ttrpc::Code::UNIMPLEMENTED,
            "exec processes are not supported by wasmrunner",
        ))
    }
}

impl<S: Engine> TaskService<S> {
    pub(crate) fn new(
        mode: Mode,
        policy: NodePolicy,
        module_cache: Option<ModuleCache>,
        events: EventSink,
        namespace: String,
        containerd_address: String,
        exit: Arc<ExitSignal>,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("serving")
            // The threads that run Task API calls (see `server`) end when idle this long:
            // an idle shim keeps none.
            .thread_keep_alive(BLOCKING_KEEP_ALIVE)
            .enable_all()
            .build()?;
        let telemetry = Telemetry::from_env(&serving_binary(), &runtime);
        let service = Self {
            inner: Arc::new(Inner {
                mode,
                policy,
                module_cache,
                namespace,
                containerd_address,
                tasks: RwLock::new(HashMap::new()),
                events,
                exits: ExitWatcher::start()?,
                exit,
                runtime,
                content_store: tokio::sync::OnceCell::new(),
                creating: AtomicUsize::new(0),
                used: AtomicBool::new(false),
                in_flight: Mutex::new(HashMap::new()),
                exit_after_creates: AtomicBool::new(false),
                last_activity: Mutex::new(Instant::now()),
                idle_watch: Once::new(),
                telemetry,
            }),
            compiler: OnceLock::new(),
        };
        if mode == Mode::PerPod {
            service.exit_if_never_used(manager_idle_exit());
        }
        Ok(service)
    }

    /// A per-pod serving process that no Create reaches within `wait` of its start exits:
    /// containerd gave up on it between `shim start` and Create (it died, or its Create
    /// failed before reaching the shim), and nothing else would ever end it, its zygote and
    /// its spare. One timer on the runtime's existing thread, which looks once.
    fn exit_if_never_used(&self, wait: Duration) {
        let inner = Arc::clone(&self.inner);
        self.inner.runtime.spawn(async move {
            tokio::time::sleep(wait).await;
            if !inner.used.load(Ordering::SeqCst) {
                tracing::warn!(
                    "no task was created here in the {wait:?} after this shim started: \
                     containerd gave up on it; exiting"
                );
                inner.exit_now();
            }
        });
    }

    /// The runtime the ttrpc server runs on.
    pub(super) fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.inner.runtime
    }

    fn task(&self, id: &str) -> TtrpcResult<Arc<Task>> {
        self.inner
            .tasks
            .read()
            .map_err(internal)?
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(format!("task {id}")))
    }

    fn create_task(&self, req: CreateTaskRequest, call: &Call) -> TtrpcResult<CreateTaskResponse> {
        let created = {
            let _creating = Creating::new(&self.inner, &req.id);
            self.create_counted(&req, call)
        };
        if self.inner.mode == Mode::PerPod {
            self.inner.exit_if_shut_down();
        }
        created
    }

    fn create_counted(
        &self,
        req: &CreateTaskRequest,
        call: &Call,
    ) -> TtrpcResult<CreateTaskResponse> {
        if req.terminal {
            return Err(status(
                ttrpc::Code::INVALID_ARGUMENT,
                "wasmrunner does not support terminals (ctr run -t)",
            ));
        }
        if !req.checkpoint.is_empty() || !req.parent_checkpoint.is_empty() {
            return Err(status(
                ttrpc::Code::UNIMPLEMENTED,
                "checkpoints are not supported",
            ));
        }
        if self
            .inner
            .tasks
            .read()
            .map_err(internal)?
            .contains_key(&req.id)
        {
            return Err(status(
                ttrpc::Code::ALREADY_EXISTS,
                format!("task {}", req.id),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        crate::logging::add_fifo(&bundle.join("log"));
        tracing::debug!("creating task {}", req.id);
        let mut laps = Laps::start("create", &req.id, &self.inner.namespace, call);
        let created = mount_rootfs(&bundle, req).and_then(|()| {
            laps.lap("mount rootfs");
            self.create_mounted(req, &bundle, &mut laps)
        });
        if let Err(err) = &created {
            // What this Create mounted goes with it, as runc's shim does: containerd unmounts
            // it too when it deletes the bundle, but not when it died during the Create (it
            // then finds no task to delete, and only the serving process's exit makes it
            // clean the bundle up: see `exit_once_idle`).
            tracing::debug!(
                "task {} was not created ({}): unmounting its rootfs",
                req.id,
                rpc_message(err)
            );
            if let Err(err) = unmount_rootfs(&bundle) {
                tracing::warn!("unmounting the rootfs of {}: {err}", req.id);
            }
            self.exit_once_idle();
        }
        created
    }

    /// The rest of a Create, once the rootfs is mounted.
    fn create_mounted(
        &self,
        req: &CreateTaskRequest,
        bundle: &Path,
        laps: &mut Laps<'_>,
    ) -> TtrpcResult<CreateTaskResponse> {
        let spec = Spec::load(bundle.join("config.json")).map_err(|e| {
            status(
                ttrpc::Code::INVALID_ARGUMENT,
                format!("reading the bundle's config.json: {e}"),
            )
        })?;
        if no_args(&bundle.join("config.json")) {
            // libcontainer refuses such a spec in the init process, which then dies without a
            // word (status 255); runc refuses it at Create, and so does this shim.
            return Err(status(
                ttrpc::Code::INVALID_ARGUMENT,
                "the container has no entrypoint: the image sets no Entrypoint or Cmd, and the run gave no command",
            ));
        }
        let options = runtime_options(req)?;
        let state_root = state_root(bundle, S::name(), &self.inner.namespace);
        let mut whose = self.inner.namespace.clone();
        if let Some(pod) = pod_of(&spec) {
            whose = format!("{}/{}", pod.namespace, pod.name);
            laps.whose(whose.clone());
            laps.attribute("k8s.pod.name", pod.name);
            laps.attribute("k8s.namespace.name", pod.namespace);
        }
        laps.lap("read spec");
        let ImageContent {
            mut wasm_layers,
            declared,
            on_node,
        } = self.image_content(&req.id)?;
        laps.lap("image content");
        let entrypoint = if wasm_layers.is_empty() {
            ImageEntrypoint::find(bundle, &spec).unwrap_or_else(|err| {
                tracing::debug!("{}: looking up the entrypoint in the image: {err}", req.id);
                None
            })
        } else {
            None
        };
        let native = entrypoint.as_ref().is_some_and(ImageEntrypoint::is_native);
        if !native {
            self.check_module_sizes(entrypoint.as_ref(), &wasm_layers)?;
        }
        let compiled_module = match entrypoint {
            _ if native => None,
            _ if on_node.is_some() => on_node,
            _ if !wasm_layers.is_empty() => self.mapped_layer(&mut wasm_layers),
            entrypoint => entrypoint.and_then(|e| self.compiled_module(e)),
        };
        let cache = match &compiled_module {
            None => "none",
            Some(module) if module.compiled_now => "miss",
            Some(_) => "hit",
        };
        laps.note("wasmrunner.cache", cache);
        laps.lap("compiled code");
        // Nothing is written into the bundle for a Create that containerd gave up on during
        // the compile: it has deleted the bundle, or is about to.
        if self.inner.abandoned(&req.id) {
            return Err(abandoned(&req.id));
        }
        let (build_from, runs) = if native {
            (bundle.to_path_buf(), Runs::Native)
        } else {
            let guest = guest_spec::write_guest_bundle(bundle, &spec)
                .map_err(|e| internal(format!("isolating the workload: {e}")))?;
            let runs = Runs::Wasm {
                seccomp: self.inner.policy.guest_seccomp,
                groups: guest.groups,
                capabilities: guest_capabilities(&spec, &declared),
            };
            (guest.dir, runs)
        };
        let held_output = HeldOutput::open(Path::new(&req.stdout), Path::new(&req.stderr))
            .map_err(|e| internal(format!("holding the output fifos: {e}")))?;
        // A Wasm guest tells when it got going, and why it could not if it could not (see
        // `crate::milestones`).
        let task_fifo = |wanted: bool, suffix: &str| {
            let path = state_root.join(format!("{}.{suffix}", req.id));
            wanted.then_some(path)
        };
        let milestones = task_fifo(!native, "milestones").and_then(|path| {
            MilestoneReader::create(path)
                .inspect_err(|e| tracing::debug!("{}: no guest milestones: {e}", req.id))
                .ok()
        });
        // A traced task's server tells the shim about each request it answers, a span each
        // (see `crate::served_requests`).
        let requests = task_fifo(!native && laps.call().recording(), "requests").and_then(|path| {
            RequestReader::create(path)
                .inspect_err(|e| tracing::debug!("{}: no request spans: {e}", req.id))
                .ok()
        });
        laps.lap("guest bundle");
        let config = ContainerConfig {
            id: req.id.clone(),
            bundle: build_from,
            runs,
            state_root: state_root.clone(),
            stdin: req.stdin.clone().into(),
            stdout: req.stdout.clone().into(),
            stderr: req.stderr.clone().into(),
            systemd_cgroup: options.systemd_cgroup,
            wasm_layers,
            compiled_module,
            inject_startup_race: container::startup_race_injected(&self.inner.policy, &spec),
            milestones: milestones
                .as_ref()
                .map(|reader| reader.path().to_path_buf()),
            requests: requests.as_ref().map(|reader| reader.path().to_path_buf()),
        };
        let pid = container::create::<S>(config).map_err(internal)?;
        laps.lap("container build");
        if self.inner.abandoned(&req.id) {
            if let Err(err) = container::delete(&state_root, &req.id) {
                tracing::warn!("removing the abandoned container {}: {err}", req.id);
            }
            return Err(abandoned(&req.id));
        }
        // Read from now on: the container's process holds the write end until it exits.
        if let (Some(requests), Some(parent)) = (requests, laps.call().parent()) {
            let (id, namespace) = (req.id.clone(), self.inner.namespace.clone());
            self.inner.runtime.spawn(
                requests.read_until_closed(move |served| parent.served(&served, &id, &namespace)),
            );
        }
        let task = Arc::new(Task::new(
            req.id.clone(),
            req.bundle.clone(),
            [req.stdin.clone(), req.stdout.clone(), req.stderr.clone()],
            state_root,
            pid,
            held_output,
            whose,
        ));
        if let Ok(mut trace) = task.guest_trace.lock() {
            trace.milestones = milestones;
        }
        self.inner
            .tasks
            .write()
            .map_err(internal)?
            .insert(req.id.clone(), Arc::clone(&task));
        self.inner.events.send(Event::Create(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: false,
                ..Default::default()
            }),
            pid,
            ..Default::default()
        }));
        let events = self.inner.events.clone();
        let watched = Arc::clone(&task);
        let runtime = self.inner.runtime.handle().clone();
        self.inner.exits.watch(pid as i32, move |code| {
            let exited = std::time::SystemTime::now();
            watched.mark_reaped();
            let status = code as u32;
            // A workload that could not run says why on its stderr, and here for the
            // node's operator.
            let failure = (watched.guest_trace.lock().ok()).and_then(|mut g| g.read_at_exit());
            if let Some(reason) = failure {
                tracing::error!(
                    "container {} ({}) exited with {status}: {reason}",
                    watched.id,
                    watched.whose
                );
            }
            // An OOM kill is signalled before the killed process is reaped; stopping (and
            // joining) the watch here hands it out first, so containerd gets TaskOOM before
            // TaskExit and CRI reports the container as OOMKilled.
            if let Some(watch) = watched.oom_watch.lock().ok().and_then(|mut w| w.take()) {
                watch.stop();
            }
            // Told once its output has been read; waited for on the runtime, not on the
            // reaper thread, which reaps every container of a manager.
            let unread = watched.release_output();
            runtime.spawn(async move {
                if let Err(left) = unread.read(OUTPUT_STALL).await {
                    tracing::debug!(
                        "container {}: {left} bytes of its output were not read within \
                         {OUTPUT_STALL:?}; telling its exit",
                        watched.id
                    );
                }
                report_exit(&watched, &events, status, exited);
            });
        });
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    /// Refuses a workload whose module is over the node's size cap
    /// ([`crate::isolation::MAX_MODULE_ENV`]), before anything reads or compiles it.
    fn check_module_sizes(
        &self,
        entrypoint: Option<&ImageEntrypoint>,
        layers: &[WasmLayer],
    ) -> TtrpcResult<()> {
        let max = self.inner.policy.max_module_bytes;
        let sizes = entrypoint
            .and_then(|entry| Some((entry.path.clone(), entry.size().ok()?)))
            .into_iter()
            .chain(layers.iter().map(|layer| {
                (
                    format!("image layer {}", layer.config.digest()),
                    layer.config.size(),
                )
            }));
        for (what, bytes) in sizes {
            if bytes > max {
                return Err(status(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!(
                        "the module {what} is {} MiB; this node runs modules of at most {} MiB ({})",
                        bytes.div_ceil(1 << 20),
                        max >> 20,
                        crate::isolation::MAX_MODULE_ENV
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The engine's compiler (see [`BoundedCompiler`]), made once per process.
    fn compiler(&self) -> Option<&BoundedCompiler<S>> {
        self.compiler
            .get_or_init(|| {
                let limits = self.inner.policy.compile;
                self.inner.runtime.block_on(BoundedCompiler::new(limits))
            })
            .as_ref()
    }

    /// The image's wasm layers, from containerd's content store, precompiled by the engine
    /// (and cached there) when it can (empty for images whose rootfs holds the module), and
    /// the capabilities the image declares.
    fn image_content(&self, id: &str) -> TtrpcResult<ImageContent> {
        let inner = &self.inner;
        let compiler = self.compiler();
        inner
            .runtime
            .block_on(async {
                let store = inner
                    .content_store
                    .get_or_try_init(|| {
                        ContentStore::connect(&inner.containerd_address, &inner.namespace)
                    })
                    .await?;
                // The node cache's precompiled code, found by the digest containerd's label
                // names, so a cached start does not read the code from containerd.
                let cache_key = compiler.map(|c| cache_key_hash(c.cache_key()));
                let node_code = |sha256: &str| {
                    let cache = inner.module_cache.as_ref()?;
                    cache.precompiled_entry(cache_key.as_deref()?, sha256)
                };
                store
                    .image_content(
                        id,
                        S::name(),
                        S::supported_layers_types(),
                        compiler,
                        &node_code,
                    )
                    .await
            })
            .map_err(|e| internal(format!("reading the image's wasm layers: {e}")))
    }

    /// The node cache's compiled code for a rootfs entrypoint, compiled now on a miss. A
    /// failure only costs the container its own compile, so it is logged and passed over.
    fn compiled_module(&self, entrypoint: ImageEntrypoint) -> Option<CompiledModule> {
        let cache = self.inner.module_cache.as_ref()?;
        let compiler = self.compiler()?;
        match self
            .inner
            .runtime
            .block_on(cache.prepare(entrypoint, compiler))
        {
            Ok(module) => module,
            Err(err) => {
                tracing::warn!("node module cache: {err}");
                None
            }
        }
    }

    /// Moves a precompiled layer's code into the node cache, for the container to map: its
    /// bytes are then not sent (a copy per container otherwise). On any failure the layer
    /// goes as it is.
    fn mapped_layer(&self, layers: &mut [WasmLayer]) -> Option<CompiledModule> {
        let cache = self.inner.module_cache.as_ref()?;
        let [layer] = layers else {
            return None;
        };
        if !layer.precompiled {
            return None;
        }
        let cache_key = cache_key_hash(self.compiler()?.cache_key());
        match cache.keep_precompiled(&cache_key, &layer.layer) {
            Ok(module) => {
                layer.layer = Vec::new();
                Some(module)
            }
            Err(err) => {
                tracing::warn!("node module cache: {err}");
                None
            }
        }
    }

    fn start_task(&self, task: &Task, call: &Call) -> TtrpcResult<u32> {
        match task.phase() {
            Phase::Created => {}
            Phase::Running => {
                return Err(status(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("task {} was started already", task.id),
                ));
            }
            Phase::Stopped { .. } => {
                return Err(status(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("task {} has exited; it cannot be started", task.id),
                ));
            }
        }
        if let (Some(parent), Ok(mut trace)) = (call.parent(), task.guest_trace.lock()) {
            trace.start = Some((parent, std::time::SystemTime::now()));
        }
        let mut laps = Laps::start("start", &task.id, &self.inner.namespace, call);
        container::start(&task.state_root, &task.id).map_err(internal)?;
        laps.lap("container start");
        if !task.mark_running() {
            return Err(status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("task {} was started already", task.id),
            ));
        }
        match ContainerCgroup::of_process(task.pid) {
            Ok(cgroup) => {
                let events = self.inner.events.clone();
                let id = task.id.clone();
                match cgroup.watch_oom(move || {
                    events.send(Event::Oom(TaskOOM {
                        container_id: id.clone(),
                        ..Default::default()
                    }))
                }) {
                    Ok(watch) => {
                        if let Ok(mut slot) = task.oom_watch.lock() {
                            *slot = Some(watch);
                        }
                    }
                    Err(err) => tracing::warn!("no OOM events for {}: {err}", task.id),
                }
                if let Ok(mut slot) = task.cgroup.lock() {
                    *slot = Some(cgroup);
                }
            }
            // The task may already have exited.
            Err(err) => tracing::debug!("cgroup of {}: {err}", task.id),
        }
        let mut gate = task.start_gate.lock().map_err(internal)?;
        self.inner.events.send(Event::Start(TaskStart {
            container_id: task.id.clone(),
            pid: task.pid,
            ..Default::default()
        }));
        gate.start_published = true;
        if let Some(exit) = gate.deferred_exit.take() {
            self.inner.events.send(Event::Exit(exit));
        }
        Ok(task.pid)
    }

    /// The span of Task API call `name` about task `id` (nothing when tracing is off).
    fn call(&self, name: &'static str, metadata: &Metadata, id: &str) -> Call {
        self.inner
            .telemetry
            .call(name, metadata, id, &self.inner.namespace)
    }

    fn kill_task(&self, req: &KillRequest) -> TtrpcResult<Empty> {
        no_exec(&req.exec_id)?;
        let task = self.task(&req.id)?;
        if task.reaped() {
            return Err(not_found(format!(
                "process of task {} already finished",
                req.id
            )));
        }
        match container::kill(&task.state_root, &task.id, req.signal, req.all) {
            Ok(()) => Ok(Empty::new()),
            // It exited between the check and the signal.
            Err(_) if task.reaped() => Err(not_found(format!(
                "process of task {} already finished",
                req.id
            ))),
            Err(err) => Err(internal(err)),
        }
    }

    /// From now on, exit once serving nothing for [`manager_idle_exit`]: a manager after its
    /// first Shutdown, and any serving process after a failed Create. containerd follows a
    /// failed Create with Delete and Shutdown, which ends a per-pod shim at once; but if it
    /// died during the Create it never does, and the restarted containerd, which reconnects
    /// to every bundle's serving process, lists no task there to delete. Only the process's
    /// exit then makes containerd clean the bundle up (`shim delete`, as for a dead shim).
    fn exit_once_idle(&self) {
        self.inner.idle_watch.call_once(|| {
            let inner = Arc::clone(&self.inner);
            let idle_for = manager_idle_exit();
            let watch = std::thread::Builder::new()
                .name("idle-exit".into())
                .spawn(move || inner.exit_when_idle(idle_for));
            if let Err(err) = watch {
                tracing::warn!("this process will not exit when idle: {err}");
            }
        });
    }

    fn delete_task(&self, task: &Task, call: &Call) -> TtrpcResult<DeleteResponse> {
        let mut laps = Laps::start("delete", &task.id, &self.inner.namespace, call);
        container::delete(&task.state_root, &task.id).map_err(internal)?;
        laps.lap("container delete");
        let (status, at) = task
            .wait_stopped(Some(DELETE_EXIT_WAIT))
            .unwrap_or((137, std::time::SystemTime::now()));
        laps.lap("exit status");
        if let Ok(mut trace) = task.guest_trace.lock() {
            std::mem::take(&mut *trace).record(at);
        }
        if let Ok(mut watch) = task.oom_watch.lock() {
            watch.take();
        }
        task.release_output();
        // Touched first: a manager whose last task this is must not look idle to its
        // idle-exit thread between the removal and the touch, and exit before it answers.
        self.inner.touch();
        self.inner.tasks.write().map_err(internal)?.remove(&task.id);
        self.inner.events.send(Event::Delete(TaskDelete {
            container_id: task.id.clone(),
            pid: task.pid,
            exit_status: status,
            exited_at: timestamp(at),
            ..Default::default()
        }));
        Ok(DeleteResponse {
            pid: task.pid,
            exit_status: status,
            exited_at: timestamp(at),
            ..Default::default()
        })
    }
}

/// The Task API calls, as the ttrpc server (`server`) hands them over: those that block on
/// a pooled thread, `Wait` on the runtime.
impl<S: Engine> TaskService<S> {
    pub(super) fn create(
        &self,
        metadata: &Metadata,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let call = self.call("Create", metadata, &req.id);
        traced(&call, self.create_task(req, &call))
    }

    pub(super) fn start(
        &self,
        metadata: &Metadata,
        req: StartRequest,
    ) -> TtrpcResult<StartResponse> {
        let call = self.call("Start", metadata, &req.id);
        let started = no_exec(&req.exec_id)
            .and_then(|()| self.task(&req.id))
            .and_then(|task| self.start_task(&task, &call));
        traced(&call, started).map(|pid| StartResponse {
            pid,
            ..Default::default()
        })
    }

    pub(super) fn state(&self, req: StateRequest) -> TtrpcResult<StateResponse> {
        no_exec(&req.exec_id)?;
        let task = self.task(&req.id)?;
        let mut response = StateResponse {
            id: task.id.clone(),
            bundle: task.bundle.clone(),
            pid: task.pid,
            stdin: task.stdin.clone(),
            stdout: task.stdout.clone(),
            stderr: task.stderr.clone(),
            ..Default::default()
        };
        let phase = match task.phase() {
            Phase::Created => Status::CREATED,
            Phase::Running => Status::RUNNING,
            Phase::Stopped { status, at } => {
                response.exit_status = status;
                response.exited_at = timestamp(at);
                Status::STOPPED
            }
        };
        response.status = phase.into();
        Ok(response)
    }

    pub(super) fn kill(&self, metadata: &Metadata, req: KillRequest) -> TtrpcResult<Empty> {
        let call = self.call("Kill", metadata, &req.id);
        call.attribute("signal", req.signal.to_string());
        traced(&call, self.kill_task(&req))
    }

    pub(super) fn delete(
        &self,
        metadata: &Metadata,
        req: DeleteRequest,
    ) -> TtrpcResult<DeleteResponse> {
        let call = self.call("Delete", metadata, &req.id);
        let deleted = no_exec(&req.exec_id)
            .and_then(|()| self.task(&req.id))
            .and_then(|task| self.delete_task(&task, &call));
        traced(&call, deleted)
    }

    pub(super) fn pids(&self, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let task = self.task(&req.id)?;
        Ok(PidsResponse {
            processes: vec![ProcessInfo {
                pid: task.pid,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    pub(super) async fn wait(&self, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        no_exec(&req.exec_id)?;
        let task = self.task(&req.id)?;
        let (status, at) = task
            .stopped()
            .await
            .ok_or_else(|| internal(format!("lost the exit status of task {}", req.id)))?;
        Ok(WaitResponse {
            exit_status: status,
            exited_at: timestamp(at),
            ..Default::default()
        })
    }

    pub(super) fn stats(&self, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let task = self.task(&req.id)?;
        let known = task.cgroup.lock().ok().and_then(|c| c.clone());
        let cgroup = match known {
            Some(cgroup) => cgroup,
            None => ContainerCgroup::of_process(task.pid).map_err(internal)?,
        };
        let metrics = cgroup.metrics_any().map_err(internal)?;
        Ok(StatsResponse {
            stats: MessageField::some(metrics),
            ..Default::default()
        })
    }

    /// Also how `shim start` tells a manager that containerd is about to send it a task: the
    /// manager then stays up for another idle period (see `ShimProcess::start_shim`).
    pub(super) fn connect(&self, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        self.inner.touch();
        let task_pid = self.task(&req.id).map(|task| task.pid).unwrap_or_default();
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    /// containerd asks after every task delete. A per-pod shim exits once it serves no
    /// task; a manager stays up while idle for [`MANAGER_IDLE_EXIT`], so the next pod finds
    /// it warm, then exits.
    ///
    /// A Shutdown for a task whose Create is still under way means containerd gave up on
    /// that Create: containerd 1.7 and 2.x (seen with 1.7.24 and 2.1.9; 1.6.20 does not),
    /// restarted while a Create ran, find no task in the shim, take it for a leaked one
    /// (containerd#6860), delete and shut it down, and remove the bundle. The Create then stops before it writes into the bundle (it cannot be cut
    /// short in the middle of a compile), keeps nothing, and a per-pod shim exits after it.
    pub(super) fn shutdown(&self, req: ShutdownRequest) -> TtrpcResult<Empty> {
        if self.inner.abandon(&req.id) {
            tracing::warn!(
                "containerd shut down task {} while it was being created: its create is given up",
                req.id
            );
        }
        if !self.inner.tasks.read().map_err(internal)?.is_empty() {
            return Ok(Empty::new());
        }
        match self.inner.mode {
            Mode::PerPod if self.inner.creating.load(Ordering::SeqCst) > 0 => {
                self.inner.exit_after_creates.store(true, Ordering::SeqCst);
                // A Create that ended meanwhile did not see the flag.
                self.inner.exit_if_shut_down();
            }
            Mode::PerPod => self.inner.exit_now(),
            Mode::Shared => self.exit_once_idle(),
        }
        Ok(Empty::new())
    }

    pub(super) fn close_io(&self, _req: CloseIORequest) -> TtrpcResult<Empty> {
        Ok(Empty::new())
    }

    pub(super) fn resize_pty(&self, _req: ResizePtyRequest) -> TtrpcResult<Empty> {
        Ok(Empty::new())
    }

    pub(super) fn exec(&self, _req: ExecProcessRequest) -> TtrpcResult<Empty> {
        Err(status(
            ttrpc::Code::UNIMPLEMENTED,
            "exec processes are not supported by wasmrunner",
        ))
    }

    pub(super) fn update(&self, _req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        Err(status(
            ttrpc::Code::UNIMPLEMENTED,
            "updating a running container's resources is not supported by wasmrunner",
        ))
    }
}

/// Tells `Wait` callers and containerd (`/tasks/exit`, held back until `/tasks/start` is out)
/// that `task` exited with `status` at `exited`.
fn report_exit(task: &Task, events: &EventSink, status: u32, exited: std::time::SystemTime) {
    let at = task.mark_stopped(status, exited);
    let exit = TaskExit {
        container_id: task.id.clone(),
        id: task.id.clone(),
        pid: task.pid,
        exit_status: status,
        exited_at: timestamp(at),
        ..Default::default()
    };
    if let Ok(mut gate) = task.start_gate.lock() {
        if gate.start_published {
            events.send(Event::Exit(exit));
        } else {
            gate.deferred_exit = Some(exit);
        }
    }
}

/// `result`, with its failure recorded on the call's span.
fn traced<T>(call: &Call, result: TtrpcResult<T>) -> TtrpcResult<T> {
    if let Err(err) = &result {
        call.failed(&rpc_message(err));
    }
    result
}

/// The name this process was started under (`containerd-shim-wasmtime-v1`, or the shared
/// manager's `containerd-shim-wasmtimed-v1`): the service its spans belong to.
fn serving_binary() -> String {
    std::env::args_os()
        .next()
        .and_then(|arg0| {
            Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "containerd-shim-wasmrunner".to_string())
}

/// The Kubernetes pod a container belongs to, from the annotations containerd's CRI plugin
/// puts in its spec.
struct PodName {
    namespace: String,
    name: String,
}

fn pod_of(spec: &Spec) -> Option<PodName> {
    let annotations = spec.annotations().as_ref()?;
    Some(PodName {
        namespace: annotations
            .get("io.kubernetes.cri.sandbox-namespace")?
            .clone(),
        name: annotations.get("io.kubernetes.cri.sandbox-name")?.clone(),
    })
}

fn no_args(config: &Path) -> bool {
    let Ok(text) = std::fs::read(config) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&text)
        .ok()
        .and_then(|json| {
            json.get("process")?
                .get("args")?
                .as_array()
                .map(Vec::is_empty)
        })
        .unwrap_or(true)
}

/// What the guest may touch: the grant in the container's annotations (which CRI fills from
/// the pod's and container's, for the names the node installer passes through), narrowed by
/// what the image declares, with the container's memory limit as the default memory cap.
/// An error is kept as text for the init process to report on the container's stderr.
fn guest_capabilities(spec: &Spec, declared: &[(String, String)]) -> Result<Capabilities, String> {
    let annotations = spec.annotations().as_ref();
    let grant = Statement::parse(
        Origin::Grant,
        annotations
            .into_iter()
            .flatten()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    let image = Statement::parse(
        Origin::Image,
        declared
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    let memory_limit = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.resources().as_ref())
        .and_then(|resources| resources.memory().as_ref())
        .and_then(|memory| memory.limit())
        .and_then(|limit| u64::try_from(limit).ok())
        .filter(|limit| *limit > 0);
    grant
        .and_then(|grant| Ok((grant, image?)))
        .and_then(|(grant, image)| wasmrunner_capabilities::resolve(grant, image, memory_limit))
        .map_err(|e| e.to_string())
}

/// Unmounts what is mounted on the bundle's rootfs (all of it, for a rootfs of several
/// mounts); nothing mounted there is no error.
pub(crate) fn unmount_rootfs(bundle: &Path) -> std::io::Result<()> {
    let rootfs = std::ffi::CString::new(bundle.join("rootfs").as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    for _ in 0..MAX_ROOTFS_MOUNTS {
        // SAFETY: `rootfs` is a valid NUL-terminated path that outlives the call.
        if unsafe { libc::umount2(rootfs.as_ptr(), libc::MNT_DETACH) } != 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                // Not (or no longer) a mount point, or no rootfs at all.
                Some(libc::EINVAL | libc::ENOENT) => Ok(()),
                _ => Err(err),
            };
        }
    }
    Ok(())
}

/// More mounts than any rootfs is made of (containerd's snapshotters make one).
const MAX_ROOTFS_MOUNTS: usize = 16;

/// Mounts the rootfs containerd prepared (the snapshot) at the spec's root path.
fn mount_rootfs(bundle: &Path, req: &CreateTaskRequest) -> TtrpcResult<()> {
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(internal)?;
    for mount in &req.rootfs {
        let fs_type = Some(mount.type_.as_str()).filter(|t| !t.is_empty());
        let source = Some(mount.source.as_str()).filter(|s| !s.is_empty());
        containerd_shim::mount::mount_rootfs(fs_type, source, &mount.options, &rootfs)
            .map_err(|e| internal(format!("mounting the rootfs: {e}")))?;
    }
    Ok(())
}

/// Where libcontainer keeps state for `namespace`: beside containerd's own task state
/// (`<state>/io.containerd.runtime.v2.task/<ns>/<id>` is the bundle), so that two containerds
/// on one host never share it.
pub(crate) fn state_root(bundle: &Path, engine: &str, namespace: &str) -> PathBuf {
    let containerd_state = bundle
        .parent()
        .and_then(Path::parent)
        .filter(|dir| {
            dir.file_name()
                .is_some_and(|name| name == "io.containerd.runtime.v2.task")
        })
        .and_then(Path::parent);
    match containerd_state {
        Some(state) => state
            .join("io.containerd.wasmrunner.v1")
            .join(engine)
            .join(namespace),
        None => Path::new("/run/wasmrunner").join(engine).join(namespace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rootfs with nothing mounted on it, or none at all, is no error to unmount: a failed
    /// Create unmounts whatever it got to mount.
    #[test]
    fn unmounting_a_rootfs_that_is_not_mounted_succeeds() {
        let bundle = tempfile::tempdir().expect("tempdir");
        unmount_rootfs(bundle.path()).expect("no rootfs");
        std::fs::create_dir(bundle.path().join("rootfs")).expect("mkdir");
        unmount_rootfs(bundle.path()).expect("nothing mounted");
    }

    #[test]
    fn state_lives_beside_containerds_task_state() {
        let bundle = Path::new("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc");
        assert_eq!(
            state_root(bundle, "wasmtime", "k8s.io"),
            Path::new("/run/containerd/io.containerd.wasmrunner.v1/wasmtime/k8s.io")
        );
        assert_eq!(
            state_root(Path::new("/somewhere/else"), "wasmtime", "default"),
            Path::new("/run/wasmrunner/wasmtime/default")
        );
    }
}
