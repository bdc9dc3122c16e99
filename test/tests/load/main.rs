//! The load suite: many short tasks while a CPU hog keeps every core busy, and not one
//! output lost (issue #20). For each engine and mode under test:
//!
//! - `WASMRUNNER_LOAD_TASKS` (default 2,000) `ctr run --rm` of the hello image, 8 at a time;
//!   each must exit 0 having printed its line;
//! - `WASMRUNNER_LOAD_CRI_TASKS` (default 200) containers through CRI, 8 pods at a time, one
//!   container after another in each; each must exit 0 with its line in its CRI log file;
//! - in shared mode, the manager's resident memory before and after the ctr tasks is
//!   printed (it grew 4 KB a task before issue #20's fix; the soak figures are in the note).
//!
//! `WASMRUNNER_LOAD_ENGINES` picks the engines (default `wasmtime`: the container build and
//! output path under test is the shim's, the same for every engine); both modes run unless
//! `WASMRUNNER_MODES` says otherwise. Run it with `make load`, or as part of `make e2e`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use wasmrunner_e2e::Env;
use wasmrunner_e2e::command::run_command_within;
use wasmrunner_e2e::cri::{ContainerSpec, Network, Pod, PodSpec};
use wasmrunner_e2e::engine::{Engine, Mode};
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{HELLO, TestImage};
use wasmrunner_oci::Flavour;

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
    wasmrunner_e2e::run::finish(containerd, !passed)
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

/// The resident memory of the manager serving the ctr namespace, in KiB (shared mode).
fn manager_rss_kib(env: &Env) -> Option<u64> {
    let binary = env.engine.manager_binary()?;
    let pid = *env
        .containerd
        .managers(&binary, &env.containerd.namespace)
        .first()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
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

/// `ctr run --rm` of the hello image, `count` times: each prints its line and exits 0.
fn ctr_tasks(env: &Env, count: usize) -> Result<String> {
    let image = env.image(IMAGE)?;
    let run_one = |id: &str| -> Result<()> {
        let mut command = env.containerd.ctr_command();
        command.args([
            "run",
            "--rm",
            "--runtime",
            &env.engine.runtime(),
            &image,
            id,
        ]);
        let outcome = run_command_within(&mut command, RUN_LIMIT)?;
        ensure!(
            outcome.success() && outcome.stdout.lines().any(|line| line == HELLO),
            "{id}: lost its output or failed: {}",
            outcome.output()
        );
        Ok(())
    };
    run_one(&env.container_id("load-first"))?;
    let rss_after_first = manager_rss_kib(env);
    let started = Instant::now();
    let failures = in_parallel(count, |i| {
        let result = run_one(&env.container_id("load"));
        if (i + 1) % RSS_EVERY == 0
            && let Some(rss) = manager_rss_kib(env)
        {
            println!(
                "load: {} manager RSS after about {} tasks: {rss} KiB",
                env.engine.label(),
                i + 1
            );
        }
        result
    })?;
    let summary = judge(count, started, failures)?;
    // The first task started the manager; its memory after the warm-up and at the end.
    Ok(match (rss_after_first, manager_rss_kib(env)) {
        (Some(first), Some(last)) => {
            format!(
                "{summary}; manager RSS {first} KiB after the first task, {last} KiB after the last"
            )
        }
        _ => summary,
    })
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
