//! The shim process as containerd drives it: `start` (spawn or reuse the serving process and
//! print its address), `delete` (clean up after a serving process that died), and serving.

use std::io::Write as _;
use std::marker::PhantomData;
use std::os::unix::fs::FileTypeExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::engine::Engine;
use anyhow::Context as _;
use containerd_shim::protos::protobuf::Message as _;
use containerd_shim::util::{read_address, write_address};
use containerd_shim::{DeleteResponse, ExitSignal, Flags, StartOpts};
use oci_spec::runtime::Spec;

use super::events::EventSink;
use super::task::timestamp;
use super::{TaskService, server, state_root, unmount_rootfs};
use crate::container;
use crate::isolation::NodePolicy;
use crate::module_cache::ModuleCache;
use crate::sys::ExclusiveLock;
use crate::version::Mode;

/// Where containerd tells a shim its ttrpc socket is (containerd-shim reads it too, and
/// refuses to start without it).
const TTRPC_ADDRESS: &str = "TTRPC_ADDRESS";

/// How long `shim start` waits for a running manager to answer.
const ANNOUNCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Tells the manager at `address` that containerd is about to create task `id` there, so it
/// does not exit as idle between this `start` and containerd's Create (which then failed with
/// "ttrpc: closed"); returns whether it answered.
fn announce(address: &str, id: &str) -> bool {
    use containerd_shim::protos::shim::shim::ConnectRequest;
    use containerd_shim::protos::shim::shim_ttrpc::TaskClient;
    let Ok(client) = containerd_shim::protos::ttrpc::Client::connect(address) else {
        return false;
    };
    let request = ConnectRequest {
        id: id.to_string(),
        ..Default::default()
    };
    let timeout = ANNOUNCE_TIMEOUT.as_nanos().try_into().unwrap_or(i64::MAX);
    TaskClient::new(client)
        .connect(
            containerd_shim::protos::ttrpc::context::with_timeout(timeout),
            &request,
        )
        .is_ok()
}

/// The lock a shared-mode `shim start` holds on `<manager socket>.lock` while it makes or
/// finds the manager. Without it, starts racing for a new manager could each find the
/// socket unusable and remove it, one failing with "remove socket: not found" or leaving a
/// second manager.
fn start_lock(address: &str) -> containerd_shim::Result<ExclusiveLock> {
    let socket = address.strip_prefix("unix://").unwrap_or(address);
    let path = PathBuf::from(format!("{socket}.lock"));
    let failed = |err: std::io::Error| {
        containerd_shim::Error::Other(format!("taking the start lock {}: {err}", path.display()))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    ExclusiveLock::take(&path).map_err(failed)
}

/// Removes the serving socket at `socket` (a path, or `unix://` address) when nothing
/// listens there any more: the one a serving process that exited, or was killed, leaves.
/// A socket something still listens on is kept: containerd runs `shim delete` after every
/// task, while the per-pod shim or manager it names may serve on.
///
/// A refused socket is checked again under the start lock in shared mode: a `start` that
/// made a new manager at the same path did so under that lock, so once it is ours, a socket
/// that refuses connections has no listener coming. A live one (every `shim delete` of a
/// running manager's task) costs one connect and no lock.
fn remove_dead_socket(socket: &str, mode: Mode) {
    let path = socket.strip_prefix("unix://").unwrap_or(socket);
    let dead = || {
        std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket())
            && matches!(
                std::os::unix::net::UnixStream::connect(path),
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused
            )
    };
    // Most often gone already (its serving process removed it on the way out), or alive.
    if !dead() {
        return;
    }
    let _one_at_a_time = match mode {
        Mode::Shared => match start_lock(path) {
            Ok(lock) => Some(lock),
            Err(err) => {
                tracing::warn!("{err}; the socket {path} is left");
                return;
            }
        },
        Mode::PerPod => None,
    };
    if dead()
        && let Err(err) = std::fs::remove_file(path)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing the socket {path} no process listens on: {err}");
    }
}

/// The path of the socket listening at `fd`, which containerd-shim's `spawn` bound.
fn listening_path(fd: std::os::fd::RawFd) -> Option<String> {
    // SAFETY: `fd` is the listening socket this process was started with; ManuallyDrop keeps
    // this borrowed view from closing it, and it is only asked for its address.
    let listener = std::mem::ManuallyDrop::new(unsafe {
        <std::os::unix::net::UnixListener as std::os::fd::FromRawFd>::from_raw_fd(fd)
    });
    let address = listener.local_addr().ok()?;
    Some(address.as_pathname()?.to_str()?.to_string())
}

/// `StartOpts` is not `Clone`.
fn copy_opts(opts: &StartOpts) -> StartOpts {
    StartOpts {
        id: opts.id.clone(),
        publish_binary: opts.publish_binary.clone(),
        address: opts.address.clone(),
        ttrpc_address: opts.ttrpc_address.clone(),
        namespace: opts.namespace.clone(),
        debug: opts.debug,
    }
}

/// Whether libcontainer still has state for container `id` of the bundle `bundle`: what
/// `shim delete` has to remove. containerd runs `shim delete` after every disconnect from a
/// serving process (containerd 2.x: after every task), almost always for a task the serving
/// process deleted already; then there is nothing to remove, and no zygote is needed.
pub fn container_left(bundle: &std::path::Path, engine: &str, namespace: &str, id: &str) -> bool {
    state_root(bundle, engine, namespace).join(id).exists()
}

/// The annotation CRI puts on every container of a pod.
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// How this process serves, chosen in `main` from the binary's name and the engine's
/// features.
#[derive(Debug, Clone, Copy)]
pub struct ServingConfig {
    pub mode: Mode,
    /// Compile rootfs modules once per node ([`crate::module_cache`]).
    pub node_module_cache: bool,
    /// How Wasm guests are isolated ([`crate::isolation`]).
    pub policy: NodePolicy,
}

/// One run of the shim binary as containerd drives it: `start`, `delete`, or serving.
pub struct ShimProcess<S: Engine> {
    mode: Mode,
    node_module_cache: bool,
    policy: NodePolicy,
    /// containerd's ttrpc socket, for events (`TTRPC_ADDRESS`).
    ttrpc_address: String,
    flags: Flags,
    _engine: PhantomData<fn() -> S>,
}

impl<S: Engine> ShimProcess<S> {
    /// containerd's command line and environment, as every action needs them.
    pub fn new(flags: Flags, serving: ServingConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !flags.namespace.is_empty(),
            "shim namespace cannot be empty"
        );
        let ttrpc_address = std::env::var(TTRPC_ADDRESS)
            .with_context(|| format!("{TTRPC_ADDRESS} is not set: only containerd runs a shim"))?;
        Ok(Self {
            mode: serving.mode,
            node_module_cache: serving.node_module_cache,
            policy: serving.policy,
            ttrpc_address,
            flags,
            _engine: PhantomData,
        })
    }

    /// Runs the action containerd asked for.
    pub fn run(self) -> anyhow::Result<()> {
        match self.flags.action.as_str() {
            "start" => {
                let address = self.start()?;
                let mut stdout = std::io::stdout().lock();
                write!(stdout, "{address}")
                    .and_then(|()| stdout.flush())
                    .context("writing the address")
            }
            "delete" => {
                let response = self.delete()?;
                let mut stdout = std::io::stdout().lock();
                response
                    .write_to_writer(&mut stdout)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| Ok(stdout.flush()?))
                    .context("writing the delete response")
            }
            _ => self.serve(),
        }
    }

    /// Per pod: one serving process per pod (containers of one pod are grouped by CRI's
    /// sandbox id; any other container gets its own). Shared: one manager per engine and
    /// containerd namespace; the first `start` spawns it, later ones find its socket.
    fn start(&self) -> containerd_shim::Result<String> {
        let opts = StartOpts {
            id: self.flags.id.clone(),
            publish_binary: self.flags.publish_binary.clone(),
            address: self.flags.address.clone(),
            ttrpc_address: self.ttrpc_address.clone(),
            namespace: self.flags.namespace.clone(),
            debug: self.flags.debug,
        };
        let grouping = match self.mode {
            Mode::Shared => format!("wasmrunner-{}-manager", S::name()),
            Mode::PerPod => {
                let spec = Spec::load("config.json").map_err(|e| {
                    containerd_shim::Error::InvalidArgument(format!(
                        "loading the bundle's config.json: {e}"
                    ))
                })?;
                spec.annotations()
                    .as_ref()
                    .and_then(|annotations| annotations.get(SANDBOX_ID))
                    .cloned()
                    .unwrap_or_else(|| opts.id.clone())
            }
        };
        let vars = match self.mode {
            Mode::Shared => vec![(crate::entry::MODE_ENV, "shared")],
            Mode::PerPod => Vec::new(),
        };
        let retry = copy_opts(&opts);
        // Shared: one `start` at a time makes or finds the manager, so two never remove each
        // other's socket or start a second manager.
        let _one_at_a_time = match self.mode {
            Mode::Shared => Some(start_lock(&containerd_shim::socket_address(
                &opts.address,
                &opts.namespace,
                &grouping,
            ))?),
            Mode::PerPod => None,
        };
        let (pid, mut address) = containerd_shim::spawn(opts, &grouping, vars.clone())?;
        // pid 0: a running manager was found rather than a new one started.
        if self.mode == Mode::Shared && pid == 0 && !announce(&address, &retry.id) {
            // It was exiting (idle) as this start reached it: start a new one.
            (_, address) = containerd_shim::spawn(retry, &grouping, vars)?;
        }
        write_address(&address)?;
        Ok(address)
    }

    /// Called in the bundle after the serving process is gone: removes what is left of the
    /// container (processes, cgroups, state).
    fn delete(&self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir()
            .map_err(|e| containerd_shim::Error::Other(format!("current dir: {e}")))?;
        let root = state_root(&bundle, S::name(), &self.flags.namespace);
        // containerd logs what this prints on stderr ("cleanup warnings").
        if container_left(&bundle, S::name(), &self.flags.namespace, &self.flags.id)
            && let Err(err) = container::delete(&root, &self.flags.id)
        {
            eprintln!("wasmrunner: cleaning up container {}: {err}", self.flags.id);
        }
        let _ = unmount_rootfs(&bundle);
        if let Ok(address) = read_address() {
            remove_dead_socket(&address, self.mode);
        }
        Ok(DeleteResponse {
            pid: 0,
            exit_status: 137,
            exited_at: timestamp(SystemTime::now()),
            ..Default::default()
        })
    }

    /// Serves the Task API until the service ends this process (a per-pod shim with nothing
    /// left to serve, an idle manager).
    fn serve(self) -> anyhow::Result<()> {
        // The subreaper first: every container init, and whatever it leaves behind, must end as
        // this process's child for the reaper (`exits`) to report it.
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).context("becoming a subreaper");
        }
        let socket = listening_path(server::SOCKET_FD);
        let exit = Arc::new(ExitSignal::default());
        let events = EventSink::start(&self.ttrpc_address, self.flags.namespace.clone());
        let module_cache = self
            .node_module_cache
            .then(|| ModuleCache::for_engine(S::name()))
            .flatten();
        let service = TaskService::<S>::new(
            self.mode,
            self.policy,
            module_cache,
            events,
            self.flags.namespace.clone(),
            self.flags.address.clone(),
            Arc::clone(&exit),
        )
        .context("starting the task service")?;
        let serving = server::serve(Arc::new(service)).context("serving ttrpc")?;
        exit.wait();
        serving.shutdown();
        // The socket `start` bound (a manager's outlives the bundle whose `address` file named
        // it); a shim killed outright leaves it to the `shim delete` containerd runs next.
        if let Some(socket) = socket {
            remove_dead_socket(&socket, self.mode);
        }
        Ok(())
    }
}
