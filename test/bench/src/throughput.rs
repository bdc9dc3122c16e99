//! Throughput: N tasks of the hello image, each created, started, waited for and deleted
//! through containerd's gRPC API (see [`crate::grpc`]), M at a time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use crate::bench::Bench;
use crate::grpc::{Client, Template};
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
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub tasks: usize,
    /// By runtime key (`runc`, `wasmtime_per_pod`, ...), then concurrency.
    pub runtimes: BTreeMap<String, Vec<Level>>,
    pub via: &'static str,
}

impl Throughput {
    pub fn tasks_per_s(&self, runtime: &Runtime, concurrency: usize) -> Option<f64> {
        tasks_per_s(&self.runtimes, runtime, concurrency)
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
    for runtime in &Runtime::all() {
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
    }
    Ok(Throughput {
        tasks: bench.sizes.tasks,
        runtimes,
        via: "containerd gRPC (Containers, Snapshots, Tasks services)",
    })
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
                    Ok(latency) => latencies.push(latency),
                    Err(err) => {
                        stop.store(true, Ordering::SeqCst);
                        return Err(err);
                    }
                }
            }
            Ok::<Vec<Duration>, anyhow::Error>(latencies)
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
    Level::measured(concurrency, tasks, wall, &latencies)
}
