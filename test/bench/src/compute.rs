//! Compute: `probe compute N` (a CPU-bound loop that times itself with the guest's
//! monotonic clock and prints `checksum=HEX elapsed_us=MICROS`) in a container, against the
//! same module on the same engine configuration outside any container: Wasmtime linked into
//! this binary, configured as `engines/wasmtime/src/engine.rs` does.
//!
//! The loop's own time is compared, so the ratio is about compute; what surrounds it
//! (container start and teardown, or compiling and instantiating on the host) is reported
//! apart as startup.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use wasmrunner_e2e::fixtures::{self, Target};
use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::bench::Bench;
use crate::runtime::Runtime;
use crate::signals;
use crate::stats::Summary;

/// What one run of `probe compute N` printed, and how long the whole run took.
#[derive(Debug, Clone, Serialize)]
pub struct ComputeRun {
    pub checksum: String,
    /// The loop, by the guest's clock.
    pub loop_s: f64,
    /// Everything: `ctr run --rm` for a container; instantiate + run on the host.
    pub wall_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Place {
    pub runs: Vec<ComputeRun>,
    pub loop_s: Option<Summary>,
    pub wall_s: Option<Summary>,
    /// Per run, wall time minus loop time.
    pub startup_s: Option<Summary>,
}

impl Place {
    fn of(runs: Vec<ComputeRun>) -> Self {
        let loops: Vec<f64> = runs.iter().map(|r| r.loop_s).collect();
        let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
        let startups: Vec<f64> = runs.iter().map(|r| r.wall_s - r.loop_s).collect();
        Self {
            loop_s: Summary::of(&loops),
            wall_s: Summary::of(&walls),
            startup_s: Summary::of(&startups),
            runs,
        }
    }

    /// The fastest loop: on a shared machine, the run the least disturbed by others.
    pub fn loop_best(&self) -> Option<f64> {
        self.loop_s.as_ref().map(|s| s.min)
    }

    pub fn startup_median(&self) -> Option<f64> {
        self.startup_s.as_ref().map(|s| s.median)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Compute {
    pub rounds: u64,
    /// Compiling the probe module on the host (once), in seconds.
    pub host_compile_s: f64,
    /// `host` (same engine, no container), `per_pod`, `shared`, and `runc` (the native build
    /// of the same program, for reference).
    pub places: BTreeMap<&'static str, Place>,
}

impl Compute {
    pub fn place(&self, key: &str) -> Option<&Place> {
        self.places.get(key)
    }
}

pub const HOST: &str = "host";

pub fn run(bench: &Bench) -> Result<Compute> {
    let rounds = bench.sizes.compute_rounds;
    let repeats = bench.sizes.compute_runs;
    let rounds_text = rounds.to_string();

    let module_bytes = fixtures::bytes("probe", Target::WasiP1)?;
    let host = HostEngine::new(&module_bytes)?;
    let _keeper = bench.keep_manager_alive()?;
    let mut images = BTreeMap::new();
    for runtime in Runtime::ALL {
        let (image, probe) = runtime.probe_image();
        images.insert(runtime, (bench.image(image)?, probe));
    }
    // Round-robin, so that the machine's load drifts over every place alike.
    let mut runs: BTreeMap<&'static str, Vec<ComputeRun>> = BTreeMap::new();
    for _ in 0..repeats {
        signals::check()?;
        let run = host.run(&["/probe.wasm", "compute", &rounds_text])?;
        runs.entry(HOST).or_default().push(run);
        for runtime in Runtime::ALL {
            signals::check()?;
            let (image, probe) = &images[&runtime];
            let id = bench.id(&format!("compute-{}", runtime.tag()));
            let (elapsed, outcome) =
                bench.run_rm(runtime, &[], image, &id, &[probe, "compute", &rounds_text])?;
            let (checksum, loop_s) = parse(&outcome.stdout)
                .with_context(|| format!("{} container {id}: {outcome}", runtime.label()))?;
            runs.entry(runtime.key()).or_default().push(ComputeRun {
                checksum,
                loop_s,
                wall_s: elapsed.as_secs_f64(),
            });
        }
    }
    let places: BTreeMap<&'static str, Place> = runs
        .into_iter()
        .map(|(key, runs)| (key, Place::of(runs)))
        .collect();

    // The same program computes the same thing everywhere (u64 arithmetic only), the native
    // build included.
    let host_checksum = places[HOST].runs.first().map(|r| r.checksum.clone());
    for runtime in Runtime::ALL {
        for run in &places[runtime.key()].runs {
            if Some(&run.checksum) != host_checksum.as_ref() {
                bail!(
                    "{} computed checksum {} but the host {:?}",
                    runtime.label(),
                    run.checksum,
                    host_checksum
                );
            }
        }
    }
    Ok(Compute {
        rounds,
        host_compile_s: host.compile_s,
        places,
    })
}

/// `checksum=HEX elapsed_us=MICROS` → (checksum, seconds).
fn parse(stdout: &str) -> Result<(String, f64)> {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("checksum="))
        .context("no checksum line in the probe's output")?;
    let mut checksum = None;
    let mut micros = None;
    for word in line.split_whitespace() {
        if let Some(value) = word.strip_prefix("checksum=") {
            checksum = Some(value.to_string());
        } else if let Some(value) = word.strip_prefix("elapsed_us=") {
            micros = value.parse::<u64>().ok();
        }
    }
    match (checksum, micros) {
        (Some(checksum), Some(micros)) => Ok((checksum, micros as f64 / 1e6)),
        _ => bail!("unreadable probe output line {line:?}"),
    }
}

/// Wasmtime in this process, configured as the shim configures it, with the probe compiled.
struct HostEngine {
    engine: Engine,
    module: Module,
    compile_s: f64,
    tokio: tokio::runtime::Runtime,
}

impl HostEngine {
    fn new(bytes: &[u8]) -> Result<Self> {
        let engine = new_engine()?;
        let started = Instant::now();
        let module = Module::new(&engine, bytes)
            .map_err(wasmtime_error("compiling the probe on the host"))?;
        let compile_s = started.elapsed().as_secs_f64();
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok(Self {
            engine,
            module,
            compile_s,
            tokio,
        })
    }

    /// Instantiates the module with `args` and runs `_start`, as the shim does (WASI preview
    /// 1, async linker), with stdout captured.
    fn run(&self, args: &[&str]) -> Result<ComputeRun> {
        let started = Instant::now();
        let stdout = MemoryOutputPipe::new(1 << 20);
        let wasi = WasiCtxBuilder::new()
            .args(args)
            .stdout(stdout.clone())
            .inherit_stderr()
            .build_p1();
        let mut store = Store::new(&self.engine, wasi);
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&self.engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |wasi| wasi)
            .map_err(wasmtime_error("linking WASI"))?;
        let result: Result<()> = self.tokio.block_on(async {
            let instance = linker
                .instantiate_async(&mut store, &self.module)
                .await
                .map_err(wasmtime_error("instantiating the probe"))?;
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(wasmtime_error("the probe's _start"))?;
            match start.call_async(&mut store, ()).await {
                Ok(()) => Ok(()),
                Err(err) => match err.downcast_ref::<I32Exit>() {
                    Some(I32Exit(0)) => Ok(()),
                    Some(I32Exit(code)) => bail!("the probe exited with {code}"),
                    None => Err(wasmtime_error("running the probe")(err)),
                },
            }
        });
        result?;
        let wall_s = started.elapsed().as_secs_f64();
        let text = String::from_utf8_lossy(&stdout.contents()).into_owned();
        let (checksum, loop_s) = parse(&text).with_context(|| format!("host run: {text:?}"))?;
        Ok(ComputeRun {
            checksum,
            loop_s,
            wall_s,
        })
    }
}

/// The configuration of `engines/wasmtime/src/engine.rs`: precompiled code is only loaded by
/// an engine configured like the one that compiled it, and the comparison is only fair with
/// the same code generation.
pub fn new_engine() -> Result<Engine> {
    let mut config = wasmtime::Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    Engine::new(&config).map_err(wasmtime_error("configuring Wasmtime"))
}

/// Wasmtime's own error type, with its causes, as an anyhow error about `what`.
pub fn wasmtime_error(what: &'static str) -> impl FnOnce(wasmtime::Error) -> anyhow::Error {
    move |err| anyhow!("{what}: {err:#}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_parsed() -> Result<()> {
        let (sum, secs) = parse("checksum=00ff elapsed_us=1500000\n")?;
        assert_eq!(sum, "00ff");
        assert!((secs - 1.5).abs() < 1e-9);
        assert!(parse("nothing here").is_err());
        Ok(())
    }
}
