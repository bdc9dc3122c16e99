//! `wasmrunner-bench`: what running Wasm through wasmrunner costs, beside what containerd
//! itself costs. Every figure is measured in the same run as its baselines, against one
//! private containerd (the e2e harness's [`wasmrunner_e2e::Containerd`]), for every engine
//! (`wasmrunner_e2e::engine::ENGINES`, or `WASMRUNNER_ENGINES`) in each mode (per-pod and
//! shared, or `WASMRUNNER_MODES`). The baselines: runc with static native builds (the floor
//! containerd sets), upstream runwasi's own Wasmtime shim (`--runwasi`), and the null shim
//! (`containerd-shim-null-v1`, built from this crate: answers the Task API and runs nothing,
//! the floor for any shim):
//!
//! - cold start: `ctr run --rm` of the hello image, every runtime (and runwasi's CLI around
//!   wasmrunner's engine, the earlier stand-in, `containerd-shim-runwasi-standin-v1`);
//! - throughput: create + start + wait + delete of many tasks through containerd's gRPC API,
//!   M at a time, each call timed; then `ctr run --rm` processes, M at a time;
//! - shim throughput: the same straight over each shim's ttrpc Task API, no containerd (the
//!   shim alone);
//! - memory: PSS of every shim, manager, zygote and container process per live container;
//! - big module: first and second start of a >= 10 MiB module packaged as a runwasi artifact
//!   (compiled, then loaded from containerd's content store);
//! - compute: a CPU-bound loop in a container against the same engine outside any container
//!   (an engine that interprets the module runs fewer rounds);
//! - serving: a `wasi:http` component served by the Wasmtime shim in each mode against
//!   `wasmtime serve` of the same release on the host (requests/s and latency at 1, 16 and 64
//!   keep-alive connections), and the PSS per idle served pod;
//! - tracing: Wasmtime's cold start with tracing on (spans to an OTLP receiver on loopback,
//!   through a second containerd whose environment turns it on) against tracing off, and what
//!   a Task API call spends on tracing when it is off.
//!
//! `make bench` runs it; `--quick` is the short run CI does.

mod bench;
mod bigmodule;
mod cold;
mod compute;
mod grpc;
mod memory;
mod procs;
mod report;
mod runtime;
mod serving;
mod shimtask;
mod signals;
mod stats;
mod targets;
mod throughput;
mod tracing;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use wasmrunner_e2e::Containerd;
use wasmrunner_e2e::paths::repo_root;

use crate::bench::Bench;
use crate::report::{Report, SectionOutcome};

/// The parts of the benchmark, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Section {
    Cold,
    Throughput,
    #[value(name = "shim-throughput", alias = "shim")]
    ShimThroughput,
    Memory,
    #[value(name = "big-module", alias = "big")]
    BigModule,
    Compute,
    Serving,
    Tracing,
}

impl Section {
    pub const ALL: [Section; 8] = [
        Section::Cold,
        Section::Throughput,
        Section::ShimThroughput,
        Section::Memory,
        Section::BigModule,
        Section::Compute,
        Section::Serving,
        Section::Tracing,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Section::Cold => "cold",
            Section::Throughput => "throughput",
            Section::ShimThroughput => "shim_throughput",
            Section::Memory => "memory",
            Section::BigModule => "big_module",
            Section::Compute => "compute",
            Section::Serving => "serving",
            Section::Tracing => "tracing",
        }
    }
}

/// wasmrunner's shims beside runc, through a private containerd.
#[derive(Debug, Parser)]
#[command(name = "wasmrunner-bench", version)]
pub struct Args {
    /// Tiny sizes (what CI runs; about 2-3 minutes).
    #[arg(long)]
    pub quick: bool,
    /// The folder with `containerd`, `ctr` and `containerd-shim-runc-v2` (default:
    /// target/containerd/sid/bin when present, else WASMRUNNER_CONTAINERD_BIN or PATH).
    #[arg(long, value_name = "DIR")]
    pub containerd: Option<PathBuf>,
    /// Upstream runwasi's Wasmtime shim, the baseline of every section (default:
    /// WASMRUNNER_BENCH_RUNWASI, else ../shared/anchors/runwasi/containerd-shim-wasmtime-v1
    /// beside the repository).
    #[arg(long, value_name = "PATH")]
    pub runwasi: Option<PathBuf>,
    /// Run containerd (and so the shims) at debug level and copy its log here at the end: the
    /// shims log each Create and Delete phase by phase ("create ID: 52.1 ms (mount 0.4, ...)").
    /// Logging costs time: figures of such a run are not comparable with others.
    #[arg(long, value_name = "PATH")]
    pub containerd_log: Option<PathBuf>,
    /// Run only these sections (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Where to write the results as JSON (default: target/bench/results.json in the
    /// repository).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Cold start: `ctr run --rm` runs per runtime (default 20, quick 3).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Throughput: tasks per concurrency level (default 100, quick 20).
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Shim throughput (straight over the shims' ttrpc): tasks per concurrency level
    /// (default 50, quick 10).
    #[arg(long)]
    pub shim_tasks: Option<usize>,
    /// Throughput and shim throughput: concurrency levels (default 1,4,20).
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Memory: numbers of live containers to measure at (default 1,20,100; quick 1,5).
    #[arg(long, value_delimiter = ',')]
    pub containers: Vec<usize>,
    /// Big module: size of the generated module's code, in MiB (at least 10).
    #[arg(long, default_value_t = 10)]
    pub big_module_mib: usize,
    /// Big module: the size for engines that AOT-compile artifacts with LLVM (WasmEdge, about
    /// a minute per MiB here), in MiB; per-pod mode only, and not in a quick run.
    #[arg(long, default_value_t = 1)]
    pub big_module_aot_mib: usize,
    /// Compute: rounds of the probe's loop (default: about 2 s of Wasm, quick about 0.5 s).
    /// An engine that interprets the module (WasmEdge) runs 1/50 of them.
    #[arg(long)]
    pub compute_rounds: Option<u64>,
    /// Compute: runs per place (default 3, quick 2; the fastest loop and the median startup
    /// are reported).
    #[arg(long)]
    pub compute_runs: Option<usize>,
    /// Serving: `wasmtime` (48.0.8, with `serve`) for the `wasmtime serve` baseline (default:
    /// WASMRUNNER_BENCH_WASMTIME, else target/bench-tools/wasmtime-48.0.8/bin/wasmtime, which
    /// `make bench-tools` installs; without it the baseline is not measured).
    #[arg(long, value_name = "PATH")]
    pub wasmtime_serve: Option<PathBuf>,
    /// Serving: keep-alive connections at once, one point each (default 1,16,64).
    #[arg(long, value_delimiter = ',')]
    pub serving_connections: Vec<usize>,
    /// Serving: counted seconds per point, after a warm-up of a fifth as long (at least
    /// 0.5 s) (default 5, quick 1).
    #[arg(long)]
    pub serving_secs: Option<f64>,
    /// Serving: idle served pods alive when their PSS is measured (default 20, quick 5).
    #[arg(long)]
    pub serving_pods: Option<usize>,
}

/// The sizes of one run, from the flags.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sizes {
    pub cold_runs: usize,
    pub tasks: usize,
    pub shim_tasks: usize,
    pub concurrency: Vec<usize>,
    pub containers: Vec<usize>,
    pub big_module_bytes: usize,
    /// Big module: the size for engines that compile with LLVM (WasmEdge).
    pub big_module_aot_bytes: usize,
    /// Big module: both modes and a compile on the host (quick: per-pod only).
    pub big_module_thorough: bool,
    pub compute_rounds: u64,
    pub compute_runs: usize,
    /// Serving: connection counts, the warm-up and counted time per point, idle pods.
    pub serving_connections: Vec<usize>,
    pub serving_warmup_s: f64,
    pub serving_secs: f64,
    pub serving_pods: usize,
}

impl Sizes {
    fn from_args(args: &Args) -> Result<Self> {
        let quick = args.quick;
        let serving_secs = args.serving_secs.unwrap_or(if quick { 1.0 } else { 5.0 });
        let sizes = Self {
            cold_runs: args.runs.unwrap_or(if quick { 3 } else { 20 }),
            // The defaults keep `make bench` (five runtimes in every section) under 15
            // minutes on a 2-core machine, and `--quick` around 3.
            tasks: args.tasks.unwrap_or(if quick { 20 } else { 100 }),
            shim_tasks: args.shim_tasks.unwrap_or(if quick { 10 } else { 50 }),
            concurrency: if args.concurrency.is_empty() {
                vec![1, 4, 20]
            } else {
                args.concurrency.clone()
            },
            containers: if args.containers.is_empty() {
                if quick { vec![1, 5] } else { vec![1, 20, 100] }
            } else {
                args.containers.clone()
            },
            big_module_bytes: args.big_module_mib << 20,
            big_module_aot_bytes: args.big_module_aot_mib << 20,
            big_module_thorough: !quick,
            // About 10 ns a round here: 2 s of loop by default, 0.5 s quick.
            compute_rounds: args.compute_rounds.unwrap_or(if quick {
                50_000_000
            } else {
                200_000_000
            }),
            compute_runs: args.compute_runs.unwrap_or(if quick { 2 } else { 3 }),
            serving_connections: if args.serving_connections.is_empty() {
                vec![1, 16, 64]
            } else {
                args.serving_connections.clone()
            },
            serving_warmup_s: (serving_secs / 5.0).max(0.5),
            serving_secs,
            serving_pods: args.serving_pods.unwrap_or(if quick { 5 } else { 20 }),
        };
        anyhow::ensure!(sizes.cold_runs > 0, "--runs must be at least 1");
        anyhow::ensure!(sizes.tasks > 0, "--tasks must be at least 1");
        anyhow::ensure!(sizes.shim_tasks > 0, "--shim-tasks must be at least 1");
        anyhow::ensure!(
            sizes.concurrency.iter().all(|&m| m > 0),
            "--concurrency levels must be at least 1"
        );
        anyhow::ensure!(
            sizes.containers.iter().all(|&k| k > 0),
            "--containers counts must be at least 1"
        );
        anyhow::ensure!(
            args.big_module_mib >= 10,
            "--big-module-mib must be at least 10 (the benchmark is about big modules)"
        );
        anyhow::ensure!(
            args.big_module_aot_mib >= 1,
            "--big-module-aot-mib must be at least 1"
        );
        anyhow::ensure!(sizes.compute_runs > 0, "--compute-runs must be at least 1");
        anyhow::ensure!(
            sizes.serving_connections.iter().all(|&c| c > 0),
            "--serving-connections counts must be at least 1"
        );
        anyhow::ensure!(
            sizes.serving_secs.is_finite() && sizes.serving_secs >= 0.1,
            "--serving-secs must be at least 0.1"
        );
        anyhow::ensure!(sizes.serving_pods > 0, "--serving-pods must be at least 1");
        Ok(sizes)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("wasmrunner-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// containerd 2.x from `make setup` when it is there, else what the e2e harness would use.
fn containerd_dir(args: &Args) -> Result<PathBuf> {
    if let Some(dir) = &args.containerd {
        return Ok(dir.clone());
    }
    let sid = repo_root().join("target/containerd/sid/bin");
    if sid.join("containerd").is_file() {
        return Ok(sid);
    }
    Containerd::bin_dir_from_env()
}

/// Runs the selected sections; `Ok(false)` when one of them failed (the others still ran
/// and the report is still written).
fn run(args: &Args) -> Result<bool> {
    let started = Instant::now();
    let sizes = Sizes::from_args(args)?;
    let sections: Vec<Section> = if args.only.is_empty() {
        Section::ALL.to_vec()
    } else {
        Section::ALL
            .into_iter()
            .filter(|s| args.only.contains(s))
            .collect()
    };
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| repo_root().join("target/bench/results.json"));
    // Before any thread exists: the shared managers inherit it from containerd (unless the
    // harness sets its own), so the last one exits soon after the run.
    if std::env::var_os(runtime::MANAGER_IDLE_ENV).is_none() {
        // SAFETY: the process has a single thread here; nothing reads the environment
        // concurrently.
        unsafe { std::env::set_var(runtime::MANAGER_IDLE_ENV, "10") };
    }
    signals::install();

    wasmrunner_e2e::fixtures::build_all().context("building the fixtures")?;
    let upstream = runtime::upstream_runwasi(args.runwasi.as_deref());
    let runwasi_missing = runtime::install_baselines(&upstream)?;
    if let Some(reason) = &runwasi_missing {
        eprintln!("runwasi baseline: not measured: {reason}");
    }
    let dir = containerd_dir(args)?;
    eprintln!("starting containerd from {}", dir.display());
    let bench = Bench::start(&dir, sizes.clone(), args.containerd_log.is_some())?;
    eprintln!(
        "containerd {} at {} (namespace {})",
        bench.containerd().version,
        bench.containerd().root().display(),
        bench.containerd().namespace
    );

    let mut report = Report::new(
        args.quick,
        bench.containerd().version.to_string(),
        &dir,
        bench.namespace(),
        &sizes,
        runwasi_missing.map_or_else(|| Ok(upstream), Err),
    );
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for section in &sections {
            if signals::interrupted() {
                report.add(*section, SectionOutcome::Failed("interrupted".into()));
                continue;
            }
            eprintln!("== {}", section.key());
            let section_started = Instant::now();
            let outcome = run_section(&bench, *section, args);
            if let SectionOutcome::Failed(reason) = &outcome {
                eprintln!("{} failed: {reason}", section.key());
                // What the failed section left must not weigh on the next one.
                match bench.container_ids() {
                    Ok(ids) => {
                        if let Err(e) = bench.remove_containers(&ids) {
                            eprintln!("{e:#}");
                        }
                    }
                    Err(e) => eprintln!("listing containers: {e:#}"),
                }
            }
            eprintln!(
                "== {} took {:.1} s",
                section.key(),
                section_started.elapsed().as_secs_f64()
            );
            report.add(*section, outcome);
        }
    }));
    // containerd's log is worth keeping when something failed; it goes beside the JSON.
    let failed = !report.all_ok() || outcome.is_err();
    let log_path = json_path.with_file_name("containerd.log");
    let log_dir_ready = log_path
        .parent()
        .is_some_and(|dir| std::fs::create_dir_all(dir).is_ok());
    let save_log = match &args.containerd_log {
        Some(path) => Some(path.as_path()),
        None => (failed && log_dir_ready).then_some(log_path.as_path()),
    };
    let cleanup = bench.finish(save_log);
    if let Err(err) = &cleanup {
        eprintln!("cleaning up: {err:#}");
    }
    if outcome.is_err() {
        anyhow::bail!("a section panicked (everything it started was cleaned up)");
    }
    report.finish(started.elapsed());
    report.write_json(&json_path)?;
    println!("{}", report.table());
    println!("JSON: {}", json_path.display());
    Ok(report.all_ok() && cleanup.is_ok())
}

fn run_section(bench: &Bench, section: Section, args: &Args) -> SectionOutcome {
    let result = match section {
        Section::Cold => cold::run(bench).map(SectionOutcome::Cold),
        Section::Throughput => throughput::run(bench).map(SectionOutcome::Throughput),
        Section::ShimThroughput => shimtask::run(bench).map(SectionOutcome::ShimThroughput),
        Section::Memory => memory::run(bench).map(SectionOutcome::Memory),
        Section::BigModule => bigmodule::run(bench),
        Section::Compute => compute::run(bench).map(SectionOutcome::Compute),
        Section::Serving => serving::run(
            bench,
            &serving::wasmtime_path(args.wasmtime_serve.as_deref()),
        ),
        Section::Tracing => tracing::run(bench).map(SectionOutcome::Tracing),
    };
    match result {
        Ok(outcome) => outcome,
        Err(err) => SectionOutcome::Failed(format!("{err:#}")),
    }
}
