//! The load and soak suite: many tasks while a CPU hog keeps every core busy, not one output
//! lost and nothing left behind (issues #20 and #14). For each engine and mode under test:
//!
//! - `WASMRUNNER_LOAD_TASKS` (default 2,000) tasks through `ctr`, 8 at a time, a mix (see
//!   [`Kind`]): most print a line and exit 0, and of every ten one exits with its own status,
//!   one traps, and one runs until it is killed; each must end as its kind says;
//! - `WASMRUNNER_LOAD_CRI_TASKS` (default 200) containers through CRI, 8 pods at a time, one
//!   container after another in each; each must exit 0 with its line in its CRI log file;
//! - `WASMRUNNER_LOAD_BURST` (default 100) CRI pods created at once, for each engine in
//!   shared mode and for runc as the baseline (see `burst`), without the hog: each must
//!   start and exit right; the time until all had started and each pod's p50/p99 are printed;
//! - around the ctr tasks, what the node holds for wasmrunner (see [`Snapshot`]): shim
//!   processes, mounts and cgroups must be back where they were after a warm-up (a tenth of
//!   the run), and in shared mode the manager's descriptors and threads too; its resident
//!   memory may grow by at most 5% on a run of 1,000 tasks or more.
//!
//! `WASMRUNNER_LOAD_ENGINES` picks the engines (default `wasmtime`); both modes run unless
//! `WASMRUNNER_MODES` says otherwise. `make load` and `make e2e` run it for Wasmtime; `make
//! soak` runs 10,000 tasks on both engines.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use wasmrunner_e2e::Env;
use wasmrunner_e2e::cri::{ContainerSpec, Network, Pod, PodSpec, RUNC_HANDLER};
use wasmrunner_e2e::engine::{Engine, Mode};
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{HELLO, TestImage};
use wasmrunner_oci::Flavour;

mod burst;
mod mix;
mod snapshot;

use mix::Kind;
use snapshot::Snapshot;

const IMAGE: TestImage = TestImage::Hello(Target::WasiP1, Flavour::Image);
/// Tasks in flight at once, as in the report.
const CONCURRENCY: usize = 8;
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// How often (in tasks) a manager's resident memory is printed.
const RSS_EVERY: usize = 1000;
/// How long after its exit a container's line may take to reach its CRI log file.
const LOG_LIMIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("load: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn count_from_env(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value} is not a count")),
        Err(_) => Ok(default),
    }
}

fn engines() -> Vec<Engine> {
    let names = std::env::var("WASMRUNNER_LOAD_ENGINES").unwrap_or_else(|_| "wasmtime".into());
    names
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .flat_map(|name| {
            Mode::selected()
                .into_iter()
                .map(|mode| Engine::new(name, mode))
        })
        .collect()
}

fn run() -> Result<bool> {
    let tasks = count_from_env("WASMRUNNER_LOAD_TASKS", 2000)?;
    let cri_tasks = count_from_env("WASMRUNNER_LOAD_CRI_TASKS", 200)?;
    let burst_pods = count_from_env("WASMRUNNER_LOAD_BURST", 100)?;
    let engines = engines();
    let containerd = wasmrunner_e2e::run::start(&engines)?;
    println!(
        "load: containerd {}, {tasks} ctr tasks and {cri_tasks} CRI containers per engine and mode, {CONCURRENCY} at a time, under a CPU hog",
        containerd.version
    );
    let hog = CpuHog::start();
    let mut passed = true;
    for engine in &engines {
        let env = Env::new(Arc::clone(&containerd), engine.clone());
        for (what, result) in [
            ("ctr", ctr_tasks(&env, tasks)),
            ("cri", cri_containers(&env, cri_tasks)),
        ] {
            match result {
                Ok(summary) => println!("load: {} {what}: {summary}", engine.label()),
                Err(err) => {
                    passed = false;
                    println!("load: {} {what}: FAILED: {err:#}", engine.label());
                }
            }
        }
    }
    drop(hog);
    // The burst runs without the hog: its figures are start-up times, compared with runc's.
    if burst_pods > 0 {
        passed &= bursts(&containerd, &engines, burst_pods);
    }
    wasmrunner_e2e::run::finish(containerd, !passed)
}

/// `pods` CRI pods at once for each shared-mode engine, then for runc as the baseline;
/// whether all went well.
fn bursts(
    containerd: &Arc<wasmrunner_e2e::containerd::Containerd>,
    engines: &[Engine],
    pods: usize,
) -> bool {
    let mut passed = true;
    let mut runs: Vec<(String, Env, String, TestImage)> = engines
        .iter()
        .filter(|engine| engine.mode == Mode::Shared)
        .map(|engine| {
            let env = Env::new(Arc::clone(containerd), engine.clone());
            (engine.label(), env, engine.handler(), mix::PROBE)
        })
        .collect();
    if let Some(engine) = engines.first() {
        let env = Env::new(Arc::clone(containerd), engine.clone());
        runs.push((
            "runc (baseline)".to_string(),
            env,
            RUNC_HANDLER.to_string(),
            TestImage::Probe(Target::Native),
        ));
    }
    for (label, env, handler, image) in runs {
        match burst::burst(&env, &handler, image, pods) {
            Ok(figures) => println!("load: burst {label}: {figures}"),
            Err(err) => {
                passed = false;
                println!("load: burst {label}: FAILED: {err:#}");
            }
        }
    }
    passed
}

/// One busy thread per core, at the same priority as everything else, until dropped.
struct CpuHog {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHog {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Runs `count` jobs on [`CONCURRENCY`] threads; returns the failures (job index, why).
fn in_parallel(count: usize, job: impl Fn(usize) -> Result<()> + Sync) -> Result<Vec<String>> {
    let next = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..CONCURRENCY {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        break;
                    }
                    if let Err(err) = job(i)
                        && let Ok(mut failures) = failures.lock()
                    {
                        failures.push(format!("task {i}: {err:#}"));
                    }
                }
            });
        }
    });
    failures
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a task thread panicked"))
}

/// What a phase did, or why it failed: every task must have succeeded.
fn judge(count: usize, started: Instant, failures: Vec<String>) -> Result<String> {
    let seconds = started.elapsed().as_secs_f64();
    let summary = format!(
        "{count} tasks in {seconds:.0} s ({:.1}/s), {} lost or failed",
        count as f64 / seconds,
        failures.len()
    );
    if !failures.is_empty() {
        let shown: Vec<&String> = failures.iter().take(10).collect();
        bail!("{summary}; the first: {shown:#?}");
    }
    Ok(summary)
}

/// `count` tasks of the mix through `ctr`: each ends as its [`Kind`] says, and afterwards the
/// node holds what it held after the warm-up.
fn ctr_tasks(env: &Env, count: usize) -> Result<String> {
    let hello = env.image(IMAGE)?;
    env.image(mix::PROBE)?;
    // A task that lives through the whole run: the long-lived kind. It also keeps a shared
    // manager busy, so that the one measured at the end is the one measured at the start
    // (the test harness lets an idle manager go after 3 s).
    let resident = env.start_attached(mix::PROBE, &["/probe.wasm", "sleep"])?;
    let result = mixed_tasks(env, &hello, count);
    // Killed and removed whatever the run's fate, so that a failure leaves nothing running.
    resident.kill_and_remove(env, RUN_LIMIT)?;
    result
}

fn mixed_tasks(env: &Env, hello: &str, count: usize) -> Result<String> {
    // The warm-up, a tenth of the run (at least 40 tasks) in parallel like the run itself,
    // starts the manager (shared mode) and fills its caches, thread pools and allocator
    // arenas: what grows after it is what the run leaks.
    let warm_up = (count / 10).max(40);
    let failures = in_parallel(warm_up, |i| {
        let kind = Kind::of(i);
        kind.run(env, hello)
            .with_context(|| format!("warm-up {kind:?} task"))
    })?;
    if let Some(failure) = failures.first() {
        bail!("the warm-up failed: {failure}");
    }
    let before = Snapshot::settled(env, None);
    let started = Instant::now();
    let failures = in_parallel(count, |i| {
        let kind = Kind::of(i);
        let result = kind
            .run(env, hello)
            .with_context(|| format!("{kind:?} task"));
        if (i + 1) % RSS_EVERY == 0
            && let Some(manager) = Snapshot::take(env).manager
        {
            println!(
                "load: {} manager after about {} tasks: {manager}",
                env.engine.label(),
                i + 1
            );
        }
        result
    })?;
    let summary = judge(count, started, failures)?;
    let after = Snapshot::settled(env, Some(&before));
    Ok(format!("{summary}; {}", after.compare(&before, count)?))
}

/// `count` containers through CRI, one after another in each of [`CONCURRENCY`] pods: each
/// exits 0 with its line in its CRI log file (what `kubectl logs` reads).
fn cri_containers(env: &Env, count: usize) -> Result<String> {
    let pods: Vec<std::sync::Mutex<Pod<'_>>> = (0..CONCURRENCY)
        .map(|n| {
            let name = format!("load-{}-{n}", env.engine.label());
            Pod::run(
                env,
                PodSpec::new(&name, &env.engine.handler(), Network::Host),
            )
            .map(std::sync::Mutex::new)
        })
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let failures = in_parallel(count, |i| {
        let mut pod = pods[i % CONCURRENCY]
            .lock()
            .map_err(|_| anyhow::anyhow!("a pod's lock is poisoned"))?;
        let name = format!("hello-{i}");
        let id = pod.run_container(&ContainerSpec::new(&name, IMAGE, &[]))?;
        let status = pod.wait_exited(&id, RUN_LIMIT)?;
        let logged = pod.wait_for_stdout(&name, 0, HELLO, LOG_LIMIT);
        pod.remove_container(&id)?;
        ensure!(
            status.exit_code == 0,
            "container {name} exited {}",
            status.exit_code
        );
        logged.map(|_| ())
    })?;
    let summary = judge(count, started, failures);
    for pod in pods {
        let pod = pod
            .into_inner()
            .map_err(|_| anyhow::anyhow!("a pod's lock is poisoned"))?;
        pod.remove()?.assert_clean()?;
    }
    summary
}
