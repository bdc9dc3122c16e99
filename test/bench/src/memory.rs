//! Memory: with K long-running containers (`probe sleep`, started with `ctr run -d`), the PSS
//! of every process the runtime keeps for them, summed and divided by K.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wasmrunner_e2e::procs::wakeups_per_second;

use crate::bench::Bench;
use crate::procs::{Footprint, footprint, own_processes};
use crate::runtime::Runtime;
use crate::signals;

/// How many `ctr run -d` at once while filling up.
const STARTERS: usize = 4;

/// How long the runtime's own processes are watched for wake-ups while every container
/// sleeps.
const IDLE_WINDOW: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub containers: usize,
    pub total_pss_kib: u64,
    pub pss_per_container_kib: f64,
    pub footprint: Footprint,
    /// How long the footprint took to settle after the last start.
    pub settle_s: f64,
    /// How often per second the runtime's own processes (not the containers') woke up
    /// while every container slept: what idle pods cost the node's CPU.
    pub idle_wakeups_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// By runtime key (`runc`, `wasmtime_per_pod`, ...).
    pub runtimes: BTreeMap<String, Vec<Point>>,
    pub workload: &'static str,
}

impl Memory {
    pub fn per_container_mib(&self, runtime: &Runtime, containers: usize) -> Option<f64> {
        self.runtimes
            .get(&runtime.key())?
            .iter()
            .find(|p| p.containers == containers)
            .map(|p| p.pss_per_container_kib / 1024.0)
    }

    pub fn idle_wakeups_per_s(&self, runtime: &Runtime, containers: usize) -> Option<f64> {
        self.runtimes
            .get(&runtime.key())?
            .iter()
            .find(|p| p.containers == containers)
            .map(|p| p.idle_wakeups_per_s)
    }
}

pub fn run(bench: &Bench) -> Result<Memory> {
    let mut counts = bench.sizes.containers.clone();
    counts.sort_unstable();
    counts.dedup();
    let mut runtimes = BTreeMap::new();
    for runtime in &Runtime::all() {
        let mut started: Vec<String> = Vec::new();
        let result = measure(bench, runtime, &counts, &mut started);
        let removed = bench.remove_containers(&started);
        let points = result?;
        removed?;
        // Per-pod shims exit with their container; a shared manager after its idle time
        // (footprints are filtered by binary name, so an idle one does not count for the
        // next runtime).
        let left =
            bench.wait_for_shims_to_exit(Some(&runtime.shim_binary()), Duration::from_secs(5));
        if !runtime.is_shared() && !left.is_empty() {
            bail!(
                "{} shims still running after their containers were deleted: {left:?}",
                runtime.label()
            );
        }
        runtimes.insert(runtime.key(), points);
    }
    Ok(Memory {
        runtimes,
        workload: "probe sleep (wasip1 module in a normal image; static native build for runc)",
    })
}

fn measure(
    bench: &Bench,
    runtime: &Runtime,
    counts: &[usize],
    started: &mut Vec<String>,
) -> Result<Vec<Point>> {
    let (image, probe) = runtime.probe_image();
    let image = bench.image(image)?;
    let mut points = Vec::new();
    for &k in counts {
        signals::check()?;
        let wanted = k - started.len();
        let ids: Vec<String> = (0..wanted)
            .map(|_| bench.id(&format!("mem-{}", runtime.tag())))
            .collect();
        // Recorded before starting, so that a failed start is still cleaned up.
        started.extend(ids.iter().cloned());
        start_all(&ids, |id| start_one(bench, runtime, &image, probe, id))?;
        let settle = Instant::now();
        let footprint = settled(bench, runtime, k)?;
        let settle_s = settle.elapsed().as_secs_f64();
        let own = own_processes(&runtime.shim_binary(), &bench.socket(), bench.namespace());
        let idle_wakeups_per_s = wakeups_per_second(&own, IDLE_WINDOW);
        let total = footprint.total_kib();
        let point = Point {
            containers: k,
            total_pss_kib: total,
            pss_per_container_kib: total as f64 / k as f64,
            footprint,
            settle_s,
            idle_wakeups_per_s,
        };
        eprintln!(
            "memory: {} K={k}: {:.2} MiB per container, {idle_wakeups_per_s:.1} wake-ups/s idle",
            runtime.label(),
            point.pss_per_container_kib / 1024.0
        );
        points.push(point);
    }
    Ok(points)
}

/// `start` of each id (a `ctr run -d`), a few at a time; stops at the first failure of each
/// starter thread.
pub(crate) fn start_all(ids: &[String], start: impl Fn(&str) -> Result<()> + Sync) -> Result<()> {
    let failures: Vec<String> = std::thread::scope(|scope| {
        let chunk = ids.len().div_ceil(STARTERS).max(1);
        let start = &start;
        let handles: Vec<_> = ids
            .chunks(chunk)
            .map(|chunk| {
                scope.spawn(move || -> Vec<String> {
                    let mut failures = Vec::new();
                    for id in chunk {
                        if signals::interrupted() {
                            break;
                        }
                        if let Err(e) = start(id) {
                            failures.push(format!("{e:#}"));
                            break;
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec!["a starter thread panicked".into()])
            })
            .collect()
    });
    signals::check()?;
    if !failures.is_empty() {
        bail!("starting containers: {}", failures.join("; "));
    }
    Ok(())
}

/// `ctr run -d --null-io` of `probe sleep` as `id`.
fn start_one(bench: &Bench, runtime: &Runtime, image: &str, probe: &str, id: &str) -> Result<()> {
    let mut command = bench.ctr_command();
    command
        .args(["run", "-d", "--null-io", "--runtime"])
        .arg(runtime.runtime_name())
        .arg(image)
        .arg(id)
        .args([probe, "sleep"]);
    wasmrunner_e2e::run_command(&mut command)?
        .ok()
        .with_context(|| format!("starting {} container {id}", runtime.label()))?;
    Ok(())
}

/// Measures until the total changes by less than 1% between two readings a second apart
/// (each container compiled its module and went to sleep), and every container has its
/// process; at most 30 s.
pub(crate) fn settled(bench: &Bench, runtime: &Runtime, k: usize) -> Result<Footprint> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let shim = runtime.shim_binary();
    let read = || footprint(&shim, &bench.socket(), bench.namespace());
    let mut last = read()?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        signals::check()?;
        let now = read()?;
        let (a, b) = (last.total_kib() as f64, now.total_kib() as f64);
        let steady = a > 0.0 && ((b - a).abs() / a) < 0.01;
        if steady && now.containers_with_processes == k {
            return Ok(now);
        }
        if Instant::now() > deadline {
            if now.containers_with_processes != k {
                bail!(
                    "{} of {k} {} containers have a process after 30 s",
                    now.containers_with_processes,
                    runtime.label()
                );
            }
            return Ok(now);
        }
        last = now;
    }
}
