//! Compute: `probe compute N` (a CPU-bound loop that times itself with the guest's
//! monotonic clock and prints `checksum=HEX elapsed_us=MICROS`) in a container of every
//! engine and mode, against the same module on the same engine outside any container:
//!
//! - Wasmtime: linked into this binary, configured as `engines/wasmtime/src/engine.rs` does;
//! - WasmEdge: `target/release/examples/run-on-host` (built from `engines/wasmedge`), a
//!   process of its own, timed like the container (spawn to exit);
//! - Wasmer (not shipped, measured once `make wasmer` built it): its own `run-on-host`, in
//!   `target/wasmer/release/examples`, timed the same way.
//!
//! The loop's own time is compared, so the ratio is about compute; what surrounds it
//! (container start and teardown, or compiling and instantiating on the host) is reported
//! apart as startup. An engine that interprets the module (WasmEdge runs a `.wasm` file from a
//! normal image in its interpreter) runs [`INTERPRETER_ROUNDS_DIVISOR`] times fewer rounds,
//! so that the section stays short.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use wasmrunner_e2e::fixtures::{self, Target};
use wasmrunner_e2e::paths::{bin_dir, repo_root};
use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::bench::Bench;
use crate::runtime::{INTERPRETER_ROUNDS_DIVISOR, Runtime, engine_names};
use crate::signals;
use crate::stats::Summary;

/// What one run of `probe compute N` printed, and how long the whole run took.
#[derive(Debug, Clone, Serialize)]
pub struct ComputeRun {
    pub checksum: String,
    /// The loop, by the guest's clock.
    pub loop_s: f64,
    /// Everything: `ctr run --rm` for a container; instantiate + run on the host (Wasmtime),
    /// or the `run-on-host` process from spawn to exit (WasmEdge).
    pub wall_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Place {
    /// The loop count this place ran.
    pub rounds: u64,
    pub runs: Vec<ComputeRun>,
    pub loop_s: Option<Summary>,
    pub wall_s: Option<Summary>,
    /// Per run, wall time minus loop time.
    pub startup_s: Option<Summary>,
}

impl Place {
    fn of(rounds: u64, runs: Vec<ComputeRun>) -> Self {
        let loops: Vec<f64> = runs.iter().map(|r| r.loop_s).collect();
        let walls: Vec<f64> = runs.iter().map(|r| r.wall_s).collect();
        let startups: Vec<f64> = runs.iter().map(|r| r.wall_s - r.loop_s).collect();
        Self {
            rounds,
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
    /// The loop count of compiled engines and of the native build under runc.
    pub rounds: u64,
    /// The loop count of each engine (lower for an engine that interprets the module).
    pub engine_rounds: BTreeMap<String, u64>,
    /// Compiling the probe module in this process with Wasmtime (once), in seconds.
    pub host_compile_s: Option<f64>,
    /// What each engine's "no container" place is.
    pub hosts: BTreeMap<String, String>,
    /// `<engine>_host` (same engine, no container), every runtime key (`wasmtime_per_pod`,
    /// ...), and `runc` (the native build of the same program, for reference).
    pub places: BTreeMap<String, Place>,
}

impl Compute {
    pub fn place(&self, key: &str) -> Option<&Place> {
        self.places.get(key)
    }

    pub fn rounds_of(&self, engine: &str) -> u64 {
        self.engine_rounds
            .get(engine)
            .copied()
            .unwrap_or(self.rounds)
    }
}

/// The place key of `engine` run outside any container.
pub fn host_key(engine: &str) -> String {
    format!("{engine}_host")
}

/// The loop count of a runtime: fewer rounds for an interpreter.
fn rounds_for(runtime: &Runtime, rounds: u64) -> u64 {
    if runtime.interprets() {
        (rounds / INTERPRETER_ROUNDS_DIVISOR).max(1)
    } else {
        rounds
    }
}

/// The same engine outside any container.
enum Host {
    /// Wasmtime in this process.
    InProcess(HostEngine),
    /// A program that runs `MODULE ARGS...` with the engine, and the module's path.
    Process { program: PathBuf, module: PathBuf },
}

impl Host {
    fn for_engine(engine: &str, bench: &Bench, module_bytes: &[u8]) -> Result<Option<Host>> {
        let (program, build) = match engine {
            "wasmtime" => return Ok(Some(Host::InProcess(HostEngine::new(module_bytes)?))),
            "wasmedge" => (
                bin_dir().join("examples/run-on-host"),
                "`cargo build --release -p wasmrunner-wasmedge --examples` (`make bench` does)",
            ),
            // Wasmer's workspace of its own (issue #16) builds into target/wasmer.
            "wasmer" => (
                repo_root().join("target/wasmer/release/examples/run-on-host"),
                "`make wasmer`",
            ),
            _ => return Ok(None),
        };
        if !program.is_file() {
            bail!("{} is missing: build it with {build}", program.display());
        }
        let module = bench.scratch("probe.wasm");
        std::fs::write(&module, module_bytes)
            .with_context(|| format!("writing {}", module.display()))?;
        Ok(Some(Host::Process { program, module }))
    }

    fn describe(&self) -> String {
        match self {
            Host::InProcess(_) => {
                "Wasmtime in the bench process, configured as the shim (compiled once)".into()
            }
            Host::Process { program, .. } => {
                format!("{} MODULE compute N, spawn to exit", program.display())
            }
        }
    }

    fn run(&self, rounds: &str) -> Result<ComputeRun> {
        match self {
            Host::InProcess(engine) => engine.run(&["/probe.wasm", "compute", rounds]),
            Host::Process { program, module } => {
                let mut command = Command::new(program);
                command.arg(module).args(["compute", rounds]);
                let started = Instant::now();
                let outcome = wasmrunner_e2e::run_command(&mut command)?;
                let wall_s = started.elapsed().as_secs_f64();
                let outcome = outcome
                    .ok()
                    .with_context(|| format!("{}", program.display()))?;
                let (checksum, loop_s) = parse(&outcome.stdout)
                    .with_context(|| format!("{}: {outcome}", program.display()))?;
                Ok(ComputeRun {
                    checksum,
                    loop_s,
                    wall_s,
                })
            }
        }
    }

    fn compile_s(&self) -> Option<f64> {
        match self {
            Host::InProcess(engine) => Some(engine.compile_s),
            Host::Process { .. } => None,
        }
    }
}

pub fn run(bench: &Bench) -> Result<Compute> {
    let rounds = bench.sizes.compute_rounds;
    let repeats = bench.sizes.compute_runs;

    let module_bytes = fixtures::bytes("probe", Target::WasiP1)?;
    let mut hosts: Vec<(String, u64, Host)> = Vec::new();
    let mut engine_rounds = BTreeMap::new();
    for engine in engine_names() {
        let engine_rounds_here = Runtime::wasm()
            .iter()
            .find(|r| r.engine_name() == engine)
            .map_or(rounds, |r| rounds_for(r, rounds));
        engine_rounds.insert(engine.clone(), engine_rounds_here);
        if let Some(host) = Host::for_engine(&engine, bench, &module_bytes)? {
            hosts.push((engine, engine_rounds_here, host));
        }
    }
    let _keeper = bench.keep_managers_alive()?;
    let runtimes = Runtime::all();
    let mut images = Vec::new();
    for runtime in &runtimes {
        let (image, probe) = runtime.probe_image();
        images.push((bench.image(image)?, probe));
    }
    // Round-robin, so that the machine's load drifts over every place alike.
    let mut runs: BTreeMap<String, (u64, Vec<ComputeRun>)> = BTreeMap::new();
    for _ in 0..repeats {
        for (engine, engine_rounds, host) in &hosts {
            signals::check()?;
            let run = host
                .run(&engine_rounds.to_string())
                .with_context(|| format!("{engine} outside any container"))?;
            runs.entry(host_key(engine))
                .or_insert_with(|| (*engine_rounds, Vec::new()))
                .1
                .push(run);
        }
        for (runtime, (image, probe)) in runtimes.iter().zip(&images) {
            signals::check()?;
            let rounds_here = rounds_for(runtime, rounds);
            let rounds_text = rounds_here.to_string();
            let id = bench.id(&format!("compute-{}", runtime.tag()));
            let (elapsed, outcome) =
                bench.run_rm(runtime, &[], image, &id, &[probe, "compute", &rounds_text])?;
            let (checksum, loop_s) = parse(&outcome.stdout)
                .with_context(|| format!("{} container {id}: {outcome}", runtime.label()))?;
            runs.entry(runtime.key())
                .or_insert_with(|| (rounds_here, Vec::new()))
                .1
                .push(ComputeRun {
                    checksum,
                    loop_s,
                    wall_s: elapsed.as_secs_f64(),
                });
        }
    }
    let places: BTreeMap<String, Place> = runs
        .into_iter()
        .map(|(key, (rounds, runs))| (key, Place::of(rounds, runs)))
        .collect();

    // The same program computes the same thing everywhere for the same loop count (u64
    // arithmetic only), the native build included.
    let mut expected: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for (key, place) in &places {
        for run in &place.runs {
            match expected.get(&place.rounds) {
                Some((checksum, first)) if *checksum != run.checksum => bail!(
                    "{key} computed checksum {} for {} rounds but {first} {checksum}",
                    run.checksum,
                    place.rounds
                ),
                Some(_) => {}
                None => {
                    expected.insert(place.rounds, (run.checksum.clone(), key.clone()));
                }
            }
        }
    }
    Ok(Compute {
        rounds,
        engine_rounds,
        host_compile_s: hosts.iter().find_map(|(_, _, host)| host.compile_s()),
        hosts: hosts
            .iter()
            .map(|(engine, _, host)| (engine.clone(), host.describe()))
            .collect(),
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
        let mut store = shim_store(&self.engine, wasi);
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

/// The shim's own Wasmtime configuration (`wasmrunner_wasmtime::new_engine`): precompiled
/// code is only loaded by an engine configured like the one that compiled it, and the
/// comparison is only fair with the same code generation, epoch checks included. A store of
/// it must have an epoch deadline set (see [`shim_store`]).
pub fn new_engine() -> Result<Engine> {
    wasmrunner_wasmtime::new_engine().map_err(wasmtime_error("configuring Wasmtime"))
}

/// A store as the shim makes one: the epoch deadline one tick away, a tick that only a CPU
/// deadline would give, so that the guest runs with the shim's checks and is never stopped.
pub fn shim_store<T>(engine: &Engine, data: T) -> Store<T> {
    let mut store = Store::new(engine, data);
    store.set_epoch_deadline(1);
    store
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
