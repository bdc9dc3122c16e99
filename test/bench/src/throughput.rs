//! Throughput: N tasks of the hello image, each created, started, waited for and deleted
//! through containerd's gRPC API (see [`crate::grpc`]), M at a time, with the time of each
//! call recorded (where the time goes); then N `ctr run --rm` processes of it, the largest M
//! at a time (what a user's script or a CI job does).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use crate::bench::Bench;
use crate::grpc::{Client, Phases, Template};
use crate::runtime::Runtime;
use crate::signals;
use crate::stats::Summary;

#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub concurrency: usize,
    pub tasks: usize,
    pub wall_s: f64,
    pub tasks_per_s: f64,
    /// One task's life (create to delete), in seconds.
    pub latency_s: Option<Summary>,
    pub latency_p95_s: Option<f64>,
    /// Through the gRPC API: the median of each call, in seconds, by [`Phases::NAMES`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases_median_s: Option<BTreeMap<&'static str, f64>>,
}

impl Level {
    /// A level from its wall time and its tasks' latencies; fails unless every task ran.
    pub fn measured(
        concurrency: usize,
        tasks: usize,
        wall_s: f64,
        latencies: &[Duration],
    ) -> Result<Self> {
        let seconds: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
        anyhow::ensure!(
            seconds.len() == tasks,
            "{} of {tasks} tasks ran",
            seconds.len()
        );
        Ok(Level {
            concurrency,
            tasks,
            wall_s,
            tasks_per_s: tasks as f64 / wall_s,
            latency_s: Summary::of(&seconds),
            latency_p95_s: Summary::percentile(&seconds, 0.95),
            phases_median_s: None,
        })
    }

    /// A level of gRPC tasks, with the median of each call.
    pub fn with_phases(
        concurrency: usize,
        tasks: usize,
        wall_s: f64,
        phases: &[Phases],
    ) -> Result<Self> {
        let totals: Vec<Duration> = phases.iter().map(Phases::total).collect();
        let mut level = Self::measured(concurrency, tasks, wall_s, &totals)?;
        let medians = Phases::NAMES
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let seconds: Vec<f64> =
                    phases.iter().map(|p| p.values()[i].as_secs_f64()).collect();
                Summary::of(&seconds).map(|s| (*name, s.median))
            })
            .collect();
        level.phases_median_s = Some(medians);
        Ok(level)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub tasks: usize,
    /// By runtime key (`runc`, `wasmtime_per_pod`, ...), then concurrency.
    pub runtimes: BTreeMap<String, Vec<Level>>,
    pub via: &'static str,
    /// `ctr run --rm` processes, the largest concurrency at a time, by runtime key.
    pub ctr: BTreeMap<String, Level>,
}

impl Throughput {
    pub fn tasks_per_s(&self, runtime: &Runtime, concurrency: usize) -> Option<f64> {
        tasks_per_s(&self.runtimes, runtime, concurrency)
    }

    pub fn ctr_tasks_per_s(&self, runtime: &Runtime) -> Option<f64> {
        self.ctr.get(&runtime.key()).map(|l| l.tasks_per_s)
    }

    /// The median of each gRPC call at concurrency 1 (one task at a time: no queueing).
    pub fn phases(&self, runtime: &Runtime) -> Option<&BTreeMap<&'static str, f64>> {
        self.runtimes
            .get(&runtime.key())?
            .iter()
            .find(|l| l.concurrency == 1)?
            .phases_median_s
            .as_ref()
    }
}

/// The rate `runtime` reached at `concurrency`, from levels keyed by runtime.
pub fn tasks_per_s(
    runtimes: &BTreeMap<String, Vec<Level>>,
    runtime: &Runtime,
    concurrency: usize,
) -> Option<f64> {
    runtimes
        .get(&runtime.key())?
        .iter()
        .find(|l| l.concurrency == concurrency)
        .map(|l| l.tasks_per_s)
}

pub fn run(bench: &Bench) -> Result<Throughput> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let client = tokio.block_on(Client::connect(&bench.socket(), bench.namespace()))?;
    let _keeper = bench.keep_managers_alive()?;
    let mut runtimes = BTreeMap::new();
    let mut ctr = BTreeMap::new();
    let widest = bench.sizes.concurrency.iter().copied().max().unwrap_or(1);
    for runtime in &Runtime::all_and_floors() {
        let template = template(bench, &tokio, &client, runtime)?;
        // Untimed: the first task loads binaries (and starts the shared manager).
        tokio
            .block_on(client.run_task(&template, &bench.id(&format!("tp-{}", runtime.tag()))))
            .with_context(|| format!("warm-up task of {}", runtime.label()))?;
        let mut levels = Vec::new();
        for &concurrency in &bench.sizes.concurrency {
            signals::check()?;
            let level = tokio
                .block_on(level(
                    bench,
                    &client,
                    &template,
                    runtime,
                    concurrency,
                    bench.sizes.tasks,
                ))
                .with_context(|| format!("{} at concurrency {concurrency}", runtime.label()))?;
            eprintln!(
                "throughput: {} M={concurrency}: {:.1} tasks/s",
                runtime.label(),
                level.tasks_per_s
            );
            levels.push(level);
        }
        runtimes.insert(runtime.key(), levels);
        signals::check()?;
        let level = ctr_level(bench, runtime, widest, bench.sizes.tasks)
            .with_context(|| format!("{} through ctr, {widest} at a time", runtime.label()))?;
        eprintln!(
            "throughput: {} ctr run --rm, M={widest}: {:.1} tasks/s",
            runtime.label(),
            level.tasks_per_s
        );
        ctr.insert(runtime.key(), level);
    }
    Ok(Throughput {
        tasks: bench.sizes.tasks,
        runtimes,
        via: "containerd gRPC (Containers, Snapshots, Tasks services)",
        ctr,
    })
}

/// `tasks` `ctr run --rm` of the hello image, `concurrency` processes at a time.
fn ctr_level(bench: &Bench, runtime: &Runtime, concurrency: usize, tasks: usize) -> Result<Level> {
    let image = bench.image(runtime.hello_image())?;
    let (wall, latencies) = in_pool(concurrency, tasks, |_| {
        let id = bench.id(&format!("tpc-{}", runtime.tag()));
        bench
            .run_rm(runtime, &[], &image, &id, &[])
            .map(|(elapsed, _)| elapsed)
    })?;
    Level::measured(concurrency, tasks, wall, &latencies)
}

/// Runs `job(0)` to `job(tasks - 1)`, `concurrency` at a time on threads of their own; returns
/// the wall time in seconds and every job's result. The first error stops the pool.
pub fn in_pool<T: Send>(
    concurrency: usize,
    tasks: usize,
    job: impl Fn(usize) -> Result<T> + Sync,
) -> Result<(f64, Vec<T>)> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let results: Vec<Result<Vec<T>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency.min(tasks))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while !stop.load(Ordering::SeqCst) && !signals::interrupted() {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= tasks {
                            break;
                        }
                        match job(i) {
                            Ok(result) => done.push(result),
                            Err(err) => {
                                stop.store(true, Ordering::SeqCst);
                                return Err(err);
                            }
                        }
                    }
                    Ok(done)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow!("a worker panicked")))
            })
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let mut done = Vec::new();
    for result in results {
        done.extend(result?);
    }
    signals::check()?;
    Ok((wall, done))
}

/// `ctr containers create` makes the record `ctr run` would; it is read back and deleted.
pub fn template(
    bench: &Bench,
    tokio: &tokio::runtime::Runtime,
    client: &Client,
    runtime: &Runtime,
) -> Result<Template> {
    let image = bench.image(runtime.hello_image())?;
    let id = bench.id(&format!("template-{}", runtime.tag()));
    let runtime_name = runtime.runtime_name();
    bench
        .ctr(&[
            "containers",
            "create",
            "--runtime",
            &runtime_name,
            &image,
            &id,
        ])?
        .ok()
        .with_context(|| format!("creating the template container of {}", runtime.label()))?;
    let template = tokio.block_on(client.template(&id));
    bench
        .ctr(&["containers", "delete", &id])?
        .ok()
        .with_context(|| format!("deleting the template container {id}"))?;
    template
}

async fn level(
    bench: &Bench,
    client: &Client,
    template: &Template,
    runtime: &Runtime,
    concurrency: usize,
    tasks: usize,
) -> Result<Level> {
    let ids: Arc<Vec<String>> = Arc::new(
        (0..tasks)
            .map(|_| bench.id(&format!("tp-{}-m{concurrency}", runtime.tag())))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(tasks) {
        let (client, template) = (client.clone(), template.clone());
        let (ids, next, stop) = (Arc::clone(&ids), Arc::clone(&next), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                if stop.load(Ordering::SeqCst) || signals::interrupted() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(id) = ids.get(i) else { break };
                match client.run_task(&template, id).await {
                    Ok(phases) => latencies.push(phases),
                    Err(err) => {
                        stop.store(true, Ordering::SeqCst);
                        return Err(err);
                    }
                }
            }
            Ok::<Vec<Phases>, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    let mut first_error = None;
    for worker in workers {
        match worker.await {
            Ok(Ok(mine)) => latencies.extend(mine),
            Ok(Err(err)) => {
                first_error.get_or_insert(err);
            }
            Err(join) => {
                first_error.get_or_insert(anyhow!("a worker failed: {join}"));
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    if let Some(err) = first_error {
        return Err(err);
    }
    signals::check()?;
    Level::with_phases(concurrency, tasks, wall, &latencies)
}
