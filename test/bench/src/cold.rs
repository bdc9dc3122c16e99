//! Cold start: the wall time of `ctr run --rm` of the hello image, from spawning `ctr` to its
//! exit: image lookup, snapshot, shim start (or reuse of the shared manager), container
//! creation, the program's run, exit, and teardown.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, ensure};
use serde::Serialize;
use wasmrunner_e2e::images::HELLO;
use wasmrunner_e2e::paths::bin_dir;

use crate::bench::Bench;
use crate::procs;
use crate::runtime::{Runtime, STANDIN_BINARY};
use crate::signals;
use crate::stats::Summary;

#[derive(Debug, Clone, Serialize)]
pub struct ColdRuntime {
    pub runtime: String,
    pub label: String,
    pub image: String,
    /// The untimed first run (loads the binaries into the page cache; in shared mode, starts
    /// the manager), in seconds.
    pub warm_up_s: f64,
    /// Shared mode: the timed runs had one sleeping shared-mode container alive beside them
    /// (see `Bench::keep_managers_alive`).
    pub manager_kept_alive: bool,
    /// Timed runs, in seconds.
    pub samples_s: Vec<f64>,
    pub summary: Option<Summary>,
    /// Shared mode: the distinct manager processes seen after the timed runs (1 means every
    /// timed run was served by the manager the warm-up started).
    pub managers_seen: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cold {
    pub runs: usize,
    /// By runtime key (`runc`, `runwasi`, `null_per_pod`, `wasmtime_per_pod`, ...).
    pub runtimes: BTreeMap<String, ColdRuntime>,
}

impl Cold {
    pub fn median(&self, runtime: &Runtime) -> Option<f64> {
        self.summary(runtime).map(|s| s.median)
    }

    pub fn warm_up(&self, runtime: &Runtime) -> Option<f64> {
        self.runtimes.get(&runtime.key()).map(|r| r.warm_up_s)
    }

    pub fn summary(&self, runtime: &Runtime) -> Option<&Summary> {
        self.runtimes
            .get(&runtime.key())
            .and_then(|r| r.summary.as_ref())
    }
}

/// Runs each runtime `runs` times, round-robin (runc, every engine and mode, runwasi, the
/// floors, the stand-in, runc, ...), so that the machine's load drifts over all of them alike.
pub fn run(bench: &Bench) -> Result<Cold> {
    let runs = bench.sizes.cold_runs;
    let mut runtimes = Runtime::all_and_floors();
    if bin_dir().join(STANDIN_BINARY).is_file() {
        runtimes.push(Runtime::RunwasiStandIn);
    }
    let mut results: BTreeMap<String, ColdRuntime> = BTreeMap::new();
    let mut images = Vec::new();
    for runtime in &runtimes {
        let image = bench.image(runtime.hello_image())?;
        let (warm_up, _) = once(bench, runtime, &image)
            .with_context(|| format!("warm-up run of {}", runtime.label()))?;
        results.insert(
            runtime.key(),
            ColdRuntime {
                runtime: runtime.runtime_name(),
                label: runtime.label(),
                image: image.clone(),
                warm_up_s: warm_up,
                samples_s: Vec::new(),
                summary: None,
                manager_kept_alive: runtime.is_shared(),
                managers_seen: None,
            },
        );
        images.push(image);
    }
    // After the warm-ups: the shared warm-ups timed starts that spawn the managers.
    let _keeper = bench.keep_managers_alive()?;
    let mut managers: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for round in 0..runs {
        for (runtime, image) in runtimes.iter().zip(&images) {
            signals::check()?;
            let (seconds, serving) = once(bench, runtime, image)
                .with_context(|| format!("run {} of {}", round + 1, runtime.label()))?;
            managers.entry(runtime.key()).or_default().extend(serving);
            if let Some(result) = results.get_mut(&runtime.key()) {
                result.samples_s.push(seconds);
            }
        }
    }
    for runtime in &runtimes {
        if let Some(result) = results.get_mut(&runtime.key()) {
            result.summary = Summary::of(&result.samples_s);
            if runtime.is_shared() {
                result.managers_seen = managers.get(&runtime.key()).map(BTreeSet::len);
            }
        }
    }
    Ok(Cold {
        runs,
        runtimes: results,
    })
}

/// One timed `ctr run --rm`; returns its wall time and, in shared mode, the manager pids
/// serving right after it.
fn once(bench: &Bench, runtime: &Runtime, image: &str) -> Result<(f64, Vec<u32>)> {
    let id = bench.id(&format!("cold-{}", runtime.tag()));
    let (elapsed, outcome) = bench.run_rm(runtime, &[], image, &id, &[])?;
    ensure!(
        outcome.stdout.contains(HELLO),
        "{} container {id} did not greet: {outcome}",
        runtime.label()
    );
    let serving = if runtime.is_shared() {
        procs::serving(&procs::all(), &runtime.shim_binary(), &bench.socket())
            .into_iter()
            .collect()
    } else {
        Vec::new()
    };
    Ok((elapsed.as_secs_f64(), serving))
}
