use crate::engine::{Engine, RunWorkload};
use crate::failure::WorkloadError;
use crate::workload::Workload;

use crate::container;
use crate::isolation::NodePolicy;
use crate::module_cache::NODE_MODULE_CACHE;
use crate::service::{ServingConfig, ShimProcess, container_left};

use crate::version::{Mode, VersionReport};

/// The environment variable that sets the shim's log level (`error`, `warn`, `info`, `debug`,
/// `trace`). containerd's own `-debug` flag still turns on debug logs.
pub const LOG_LEVEL_ENV: &str = "WASMRUNNER_LOG";

/// Set to `shared` by a shared-mode `start` for the manager it spawns.
pub const MODE_ENV: &str = "WASMRUNNER_MODE";

/// The log level when [`LOG_LEVEL_ENV`] is unset: quiet on the hot path.
const DEFAULT_LOG_LEVEL: &str = "warn";

/// The `main` of an engine's `run-on-host` example: `run-on-host MODULE [ARGS...]` hands the
/// module at MODULE ([`Workload::on_host`]) to the engine's `run` in this process, outside any
/// container, and exits with its status: the bench's "same engine, no container" baseline.
pub fn run_on_host(
    engine: &str,
    run: impl FnOnce(Workload<'static>) -> Result<i32, WorkloadError>,
) -> ! {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: run-on-host MODULE [ARGS...]");
        std::process::exit(2);
    };
    let rest: Vec<String> = args.collect();
    let status = Workload::on_host(&path, &rest)
        .and_then(run)
        .unwrap_or_else(|err| err.report(engine));
    std::process::exit(status)
}

/// Runs an engine binary: answers `--version` itself, and hands every other invocation
/// (containerd's `start`, `delete`, and the serving shim) to wasmrunner's task service.
pub fn run<S: Engine>() {
    let info = <S::Sandbox as RunWorkload>::ENGINE;
    let asks_version = std::env::args()
        .skip(1)
        .any(|arg| matches!(arg.as_str(), "--version" | "-version" | "-v" | "--v"));
    if asks_version {
        print!("{}", VersionReport(&info));
        return;
    }

    // One malloc arena per process, not one per thread up to eight per core: the shim's
    // threads mostly wait, and each arena keeps dirty pages of its own. Measured with the
    // bench's memory section, 100 pods alive, per-pod: 0.2 MiB less per pod; the container
    // processes, forked from here, inherit it.
    // SAFETY: mallopt only tunes glibc's allocator; no other thread exists yet.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let default_log_level = std::env::var(LOG_LEVEL_ENV)
        .ok()
        .filter(|level| !level.is_empty())
        .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string());
    // Creating and deleting containers happens in the zygote: fork it while this process has
    // one thread, unless this invocation cannot need it. `start` only spawns the serving
    // process; `delete` (which containerd runs after every task) only removes a container
    // that is left.
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let flags = containerd_shim::parse(&args).unwrap_or_default();
    let needs_zygote = match flags.action.as_str() {
        "start" => false,
        "delete" => std::env::current_dir().map_or(true, |bundle| {
            container_left(&bundle, S::name(), &flags.namespace, &flags.id)
        }),
        _ => true,
    };
    if needs_zygote {
        container::init_zygote();
    }
    // Serving (no action): wasmrunner's own log, which never blocks (see `logging`).
    if flags.action.is_empty() {
        crate::logging::init(flags.debug, &default_log_level);
    }
    // The serving process learns the mode from `start` through the environment, since
    // `current_exe()` resolves a symlinked binary name away.
    let mode = if std::env::var(MODE_ENV).is_ok_and(|mode| mode == "shared") {
        Mode::Shared
    } else {
        std::env::args_os()
            .next()
            .map_or(Mode::PerPod, |argv0| Mode::of_binary(&info, &argv0))
    };
    let runtime_name = match mode {
        Mode::PerPod => info.runtime_name(),
        Mode::Shared => info.shared_runtime_name(),
    };
    let serving = ServingConfig {
        mode,
        node_module_cache: info.features.contains(&NODE_MODULE_CACHE),
        policy: NodePolicy::from_env(),
    };
    let ran = ShimProcess::<S>::new(flags, serving).and_then(ShimProcess::run);
    if let Err(err) = ran {
        // containerd shows what a failed `start` or `delete` prints here.
        eprintln!("{runtime_name}: {err:#}");
        std::process::exit(1);
    }
    // Serving ends here too: exit without tearing down what still runs on its threads (a
    // compile a gone-away containerd gave up on must not hold the exit).
    std::process::exit(0);
}
