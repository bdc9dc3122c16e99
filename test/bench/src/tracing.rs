//! What tracing costs (issue #17): cold starts with tracing on, every span going to an OTLP
//! receiver on loopback, beside the same starts with tracing off, round-robin in one run;
//! and, timed in-process, what a Task API call spends on tracing when it is off.
//!
//! Tracing is set in containerd's environment, which its shims inherit, so the traced starts
//! go through a second containerd of the same build started with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (HTTP/protobuf, the default protocol), and the untraced ones through the bench's own.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, ensure};
use serde::Serialize;
use wasmrunner_e2e::containerd::DaemonEnv;
use wasmrunner_e2e::images::HELLO;
use wasmrunner_e2e::otlp::{Protocol, Receiver};
use wasmrunner_shim::telemetry::Telemetry;

use crate::bench::Bench;
use crate::runtime::Runtime;
use crate::signals;
use crate::stats::Summary;

/// The engine whose starts are timed: tracing is the shim's, the same for every engine.
const ENGINE: &str = "wasmtime";

/// Task API calls timed per loop of [`off_call_ns`], and loops (the best one counts).
const OFF_CALLS: u32 = 1_000_000;
const OFF_LOOPS: usize = 5;

/// How long the spans of the last traced starts may take to arrive, and how long the count
/// must stay the same to be taken as complete: a shared manager sends in batches every 5 s.
const ARRIVAL: Duration = Duration::from_secs(20);
const SETTLED: Duration = Duration::from_secs(6);

#[derive(Debug, Clone, Serialize)]
pub struct TracingMode {
    pub runtime: String,
    pub label: String,
    /// `ctr run --rm` of the hello image through the untraced containerd, in seconds.
    pub off_s: Vec<f64>,
    /// The same through the traced containerd.
    pub on_s: Vec<f64>,
    pub off: Option<Summary>,
    pub on: Option<Summary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tracing {
    pub runs: usize,
    /// By runtime key (`wasmtime_per_pod`, `wasmtime_shared`).
    pub modes: BTreeMap<String, TracingMode>,
    /// The shims' spans the receiver got per traced container (warm-ups included; containerd
    /// 2.x's own spans, which it sends to the same receiver, left out): tracing was on.
    pub spans_per_container: f64,
    /// Tracing off, what one Task API call spends on it (its span opened and ended, a phase
    /// and an attribute recorded), in nanoseconds: best of [`OFF_LOOPS`] loops.
    pub off_call_ns: f64,
}

impl Tracing {
    pub fn mode(&self, runtime: &Runtime) -> Option<&TracingMode> {
        self.modes.get(&runtime.key())
    }
}

/// Times `bench.sizes.cold_runs` cold starts per Wasmtime mode with tracing off and on,
/// alternating, after an untimed warm-up of each.
pub fn run(bench: &Bench) -> Result<Tracing> {
    let receiver = Receiver::start()?;
    let traced = bench
        .with_env(
            DaemonEnv::new()
                .remove_prefixed("OTEL_")
                .set(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    &receiver.endpoint(Protocol::Http),
                )
                .set("OTEL_EXPORTER_OTLP_PROTOCOL", Protocol::Http.env_value()),
        )
        .context("starting a traced containerd")?;
    let measured = measure(bench, &traced, &receiver);
    let cleanup = traced.finish(None);
    let measured = measured?;
    cleanup.context("stopping the traced containerd")?;
    Ok(measured)
}

fn measure(bench: &Bench, traced: &Bench, receiver: &Receiver) -> Result<Tracing> {
    let runs = bench.sizes.cold_runs;
    let runtimes: Vec<Runtime> = Runtime::wasm()
        .into_iter()
        .filter(|r| r.engine_name() == ENGINE)
        .collect();
    ensure!(
        !runtimes.is_empty(),
        "{ENGINE} is not among the engines measured"
    );
    let mut modes = BTreeMap::new();
    let mut images = Vec::new();
    let mut traced_runs = 0usize;
    for runtime in &runtimes {
        let off_image = bench.image(runtime.hello_image())?;
        let on_image = traced.image(runtime.hello_image())?;
        once(bench, runtime, &off_image, "off")?;
        once(traced, runtime, &on_image, "on")?;
        traced_runs += 1;
        images.push((off_image, on_image));
        modes.insert(
            runtime.key(),
            TracingMode {
                runtime: runtime.runtime_name(),
                label: runtime.label(),
                off_s: Vec::new(),
                on_s: Vec::new(),
                off: None,
                on: None,
            },
        );
    }
    let _off_keeper = bench.keep_managers_alive()?;
    let _on_keeper = traced.keep_managers_alive()?;
    for _ in 0..runs {
        for (runtime, (off_image, on_image)) in runtimes.iter().zip(&images) {
            signals::check()?;
            let off = once(bench, runtime, off_image, "off")?;
            let on = once(traced, runtime, on_image, "on")?;
            traced_runs += 1;
            if let Some(mode) = modes.get_mut(&runtime.key()) {
                mode.off_s.push(off);
                mode.on_s.push(on);
            }
        }
    }
    for mode in modes.values_mut() {
        mode.off = Summary::of(&mode.off_s);
        mode.on = Summary::of(&mode.on_s);
    }
    let spans = settled_span_count(receiver);
    ensure!(
        spans > 0,
        "the traced containerd's shims sent no span to {}",
        receiver.endpoint(Protocol::Http)
    );
    Ok(Tracing {
        runs,
        modes,
        spans_per_container: spans as f64 / traced_runs.max(1) as f64,
        off_call_ns: off_call_ns(),
    })
}

/// One `ctr run --rm` of the hello image, in seconds. `tracing` ("on", "off") is in the
/// container's id: both containerds put their containers' cgroups under the same namespace.
fn once(bench: &Bench, runtime: &Runtime, image: &str, tracing: &str) -> Result<f64> {
    let id = bench.id(&format!("tracing-{tracing}-{}", runtime.tag()));
    let (elapsed, outcome) = bench.run_rm(runtime, &[], image, &id, &[])?;
    ensure!(
        outcome.stdout.contains(HELLO),
        "{} container {id} did not greet: {outcome}",
        runtime.label()
    );
    Ok(elapsed.as_secs_f64())
}

/// How many of the receiver's spans are the shims', once that count has stopped growing for
/// [`SETTLED`] (or [`ARRIVAL`] is up).
fn settled_span_count(receiver: &Receiver) -> usize {
    let count_now = || {
        receiver
            .spans()
            .iter()
            .filter(|span| span.service_name.starts_with("containerd-shim-"))
            .count()
    };
    let deadline = Instant::now() + ARRIVAL;
    let mut count = count_now();
    let mut steady_since = Instant::now();
    while Instant::now() < deadline && steady_since.elapsed() < SETTLED {
        std::thread::sleep(Duration::from_millis(100));
        let now = count_now();
        if now != count {
            count = now;
            steady_since = Instant::now();
        }
    }
    count
}

/// What a Task API call spends on tracing when it is off: the shim's own telemetry, as its
/// service uses it for every call, timed in a loop (best of [`OFF_LOOPS`]).
fn off_call_ns() -> f64 {
    let telemetry = Telemetry::off();
    let metadata: HashMap<String, Vec<String>> = HashMap::new();
    let now = SystemTime::now();
    (0..OFF_LOOPS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..OFF_CALLS {
                let call = telemetry.call(
                    black_box("Create"),
                    black_box(&metadata),
                    black_box("container"),
                    black_box("namespace"),
                );
                if black_box(call.recording()) {
                    call.phase("mount rootfs", now, now, Vec::new());
                    call.attribute("k8s.pod.name", String::new());
                }
                drop(black_box(call));
            }
            started.elapsed().as_nanos() as f64 / f64::from(OFF_CALLS)
        })
        .fold(f64::INFINITY, f64::min)
}
