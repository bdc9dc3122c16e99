//! The results: one table on stdout, everything measured in a JSON file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};
use wasmrunner_e2e::engine::{Engine, Mode};

use crate::bigmodule::BigModule;
use crate::cold::Cold;
use crate::compute::{Compute, host_key};
use crate::memory::Memory;
use crate::runtime::{Runtime, engine_names};
use crate::serving::{SERVE_KEY, Serving};
use crate::shimtask::ShimThroughput;
use crate::stats::Summary;
use crate::targets;
use crate::throughput::Throughput;
use crate::tracing::Tracing;
use crate::{Section, Sizes};

/// What a section came to.
pub enum SectionOutcome {
    Cold(Cold),
    Throughput(Throughput),
    ShimThroughput(ShimThroughput),
    Memory(Memory),
    BigModule(BigModule),
    Compute(Compute),
    Serving(Serving),
    Tracing(Tracing),
    Skipped(String),
    Failed(String),
}

/// How a figure is shown, and which way is worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Seconds,
    TasksPerSecond,
    Mib,
    WakeupsPerSecond,
    Nanoseconds,
}

impl Unit {
    fn show(self, value: f64) -> String {
        match self {
            Unit::Seconds if value < 10.0 => format!("{value:.3} s"),
            Unit::Seconds => format!("{value:.2} s"),
            Unit::TasksPerSecond => format!("{value:.1}/s"),
            Unit::Mib => format!("{value:.2} MiB"),
            Unit::WakeupsPerSecond => format!("{value:.1}/s"),
            Unit::Nanoseconds => format!("{value:.1} ns"),
        }
    }

    /// wasmrunner's cost relative to the baseline: more than 1 means slower, fewer tasks per
    /// second, or more memory.
    fn cost(self, value: f64, baseline: f64) -> Option<f64> {
        if value <= 0.0 || baseline <= 0.0 {
            return None;
        }
        Some(match self {
            Unit::TasksPerSecond => baseline / value,
            Unit::Seconds | Unit::Mib | Unit::WakeupsPerSecond | Unit::Nanoseconds => {
                value / baseline
            }
        })
    }
}

/// One line of the table: a figure of one engine in both modes, beside its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub section: &'static str,
    pub figure: String,
    /// `wasmtime`, `wasmedge`, ...
    pub engine: String,
    pub unit: Unit,
    pub per_pod: Option<f64>,
    pub shared: Option<f64>,
    pub baseline: Option<f64>,
    pub baseline_is: String,
    /// Cost relative to the baseline (> 1: wasmrunner is slower or bigger).
    pub per_pod_cost: Option<f64>,
    pub shared_cost: Option<f64>,
    /// Whether the baseline is the floor containerd sets with runc (the figures the
    /// largest-gap line looks at).
    pub against_floor: bool,
    /// Upstream runwasi's own shim (Wasmtime rows).
    pub runwasi: Option<f64>,
    /// The null shim, a process per task and one for every task: what containerd and the
    /// client cost with a shim that runs nothing.
    pub null_per_pod: Option<f64>,
    pub null_shared: Option<f64>,
    /// Extra text for the value cells (min-max), not in the JSON.
    #[serde(skip)]
    notes: [Option<String>; 3],
}

/// An engine's two modes, as the runtimes the sections keyed their figures by.
struct Modes {
    engine: String,
    per_pod: Runtime,
    shared: Runtime,
}

impl Modes {
    fn of(engine: &str) -> Self {
        Self {
            engine: engine.to_string(),
            per_pod: Runtime::Wasm(Engine::new(engine, Mode::PerPod)),
            shared: Runtime::Wasm(Engine::new(engine, Mode::Shared)),
        }
    }

    /// Every engine measured.
    fn all() -> Vec<Self> {
        engine_names().iter().map(|e| Self::of(e)).collect()
    }
}

impl Row {
    #[allow(clippy::too_many_arguments)]
    fn new(
        section: Section,
        figure: impl Into<String>,
        engine: &str,
        unit: Unit,
        per_pod: Option<f64>,
        shared: Option<f64>,
        baseline: Option<f64>,
        baseline_is: &str,
        against_floor: bool,
    ) -> Self {
        let cost = |value: Option<f64>| match (value, baseline) {
            (Some(v), Some(b)) => unit.cost(v, b),
            _ => None,
        };
        Self {
            section: section.key(),
            figure: figure.into(),
            engine: engine.to_string(),
            unit,
            per_pod,
            shared,
            baseline,
            baseline_is: baseline_is.to_string(),
            per_pod_cost: cost(per_pod),
            shared_cost: cost(shared),
            against_floor,
            runwasi: None,
            null_per_pod: None,
            null_shared: None,
            notes: [None, None, None],
        }
    }

    fn with_notes(mut self, notes: [Option<String>; 3]) -> Self {
        self.notes = notes;
        self
    }

    /// Upstream runwasi's figure, on the Wasmtime row only (it is a Wasmtime shim).
    fn with_runwasi(mut self, value: impl FnOnce(&Runtime) -> Option<f64>) -> Self {
        if self.engine == "wasmtime" {
            self.runwasi = value(&Runtime::Runwasi);
        }
        self
    }

    /// The null shim's figures in both modes.
    fn with_floors(mut self, value: impl Fn(&Runtime) -> Option<f64>) -> Self {
        self.null_per_pod = value(&Runtime::Null(Mode::PerPod));
        self.null_shared = value(&Runtime::Null(Mode::Shared));
        self
    }
}

pub struct Report {
    quick: bool,
    containerd_version: String,
    containerd_dir: PathBuf,
    namespace: String,
    sizes: Sizes,
    /// Where upstream runwasi's shim came from, or why it was not measured.
    runwasi: Result<PathBuf, String>,
    started: SystemTime,
    duration: Duration,
    sections: Vec<(Section, SectionOutcome)>,
}

impl Report {
    pub fn new(
        quick: bool,
        containerd_version: String,
        containerd_dir: &Path,
        namespace: &str,
        sizes: &Sizes,
        runwasi: Result<PathBuf, String>,
    ) -> Self {
        Self {
            quick,
            containerd_version,
            containerd_dir: containerd_dir.to_path_buf(),
            namespace: namespace.to_string(),
            sizes: sizes.clone(),
            runwasi,
            started: SystemTime::now(),
            duration: Duration::ZERO,
            sections: Vec::new(),
        }
    }

    pub fn add(&mut self, section: Section, outcome: SectionOutcome) {
        self.sections.push((section, outcome));
    }

    pub fn finish(&mut self, duration: Duration) {
        self.duration = duration;
    }

    pub fn all_ok(&self) -> bool {
        !self.sections.iter().any(|(_, outcome)| match outcome {
            SectionOutcome::Failed(_) => true,
            SectionOutcome::ShimThroughput(t) => !t.failed.is_empty(),
            SectionOutcome::Serving(s) => !s.failed.is_empty(),
            _ => false,
        })
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (section, outcome) in &self.sections {
            match outcome {
                SectionOutcome::Cold(cold) => rows.extend(cold_rows(cold)),
                SectionOutcome::Throughput(t) => rows.extend(throughput_rows(t, &self.sizes)),
                SectionOutcome::ShimThroughput(t) => {
                    rows.extend(shim_throughput_rows(t, &self.sizes))
                }
                SectionOutcome::Memory(m) => rows.extend(memory_rows(m, &self.sizes)),
                SectionOutcome::BigModule(big) => {
                    let floor = self.sections.iter().find_map(|(_, o)| match o {
                        SectionOutcome::Cold(cold) => cold.median(&Runtime::Runc),
                        _ => None,
                    });
                    rows.extend(big_module_rows(big, floor));
                }
                SectionOutcome::Compute(c) => rows.extend(compute_rows(c)),
                SectionOutcome::Tracing(t) => rows.extend(tracing_rows(t)),
                // Its own table (a row per runtime, columns per connection count).
                SectionOutcome::Serving(_) => {}
                SectionOutcome::Skipped(_) | SectionOutcome::Failed(_) => {
                    let _ = section;
                }
            }
        }
        rows
    }

    fn section_json(outcome: &SectionOutcome) -> Value {
        let data = |value: Result<Value, serde_json::Error>| match value {
            Ok(data) => json!({ "status": "ok", "data": data }),
            Err(e) => json!({ "status": "failed", "reason": format!("serializing: {e}") }),
        };
        match outcome {
            SectionOutcome::Cold(x) => data(serde_json::to_value(x)),
            SectionOutcome::Throughput(x) => data(serde_json::to_value(x)),
            SectionOutcome::ShimThroughput(x) => data(serde_json::to_value(x)),
            SectionOutcome::Memory(x) => data(serde_json::to_value(x)),
            SectionOutcome::BigModule(x) => data(serde_json::to_value(x)),
            SectionOutcome::Compute(x) => data(serde_json::to_value(x)),
            SectionOutcome::Serving(x) => data(serde_json::to_value(x)),
            SectionOutcome::Tracing(x) => data(serde_json::to_value(x)),
            SectionOutcome::Skipped(reason) => json!({ "status": "skipped", "reason": reason }),
            SectionOutcome::Failed(reason) => json!({ "status": "failed", "reason": reason }),
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let sections: BTreeMap<&str, Value> = self
            .sections
            .iter()
            .map(|(section, outcome)| (section.key(), Self::section_json(outcome)))
            .collect();
        let started = self
            .started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let document = json!({
            "tool": "wasmrunner-bench",
            "quick": self.quick,
            "started_unix": started,
            "duration_s": self.duration.as_secs_f64(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "containerd": {
                "version": self.containerd_version,
                "bin_dir": self.containerd_dir,
                "namespace": self.namespace,
            },
            "runtimes": Runtime::all_and_floors()
                .into_iter()
                .chain([Runtime::RunwasiStandIn])
                .map(|r| (r.key(), r.runtime_name()))
                .collect::<BTreeMap<_, _>>(),
            "runwasi": match &self.runwasi {
                Ok(path) => json!({ "measured": true, "shim": path }),
                Err(reason) => json!({ "measured": false, "reason": reason }),
            },
            "targets": targets::check(&self.sections)
                .iter()
                .map(targets::Target::to_json)
                .collect::<Vec<_>>(),
            "engines": engine_names(),
            "baseline": BASELINE,
            "sizes": self.sizes,
            "sections": sections,
            "rows": self.rows(),
        });
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let text = serde_json::to_string_pretty(&document).context("serializing the report")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The table, plain text with aligned columns, then the baseline and largest-gap lines.
    pub fn table(&self) -> String {
        let rows = self.rows();
        let header = [
            "section",
            "figure",
            "engine",
            "per-pod",
            "shared",
            "baseline",
            "baseline is",
            "per-pod/base",
            "shared/base",
            "runwasi",
            "null per-pod",
            "null shared",
        ];
        let mut lines: Vec<[String; 12]> = vec![header.map(str::to_string)];
        for row in &rows {
            let cell = |value: Option<f64>, note: &Option<String>| match (value, note) {
                (Some(v), Some(n)) => format!("{} {n}", row.unit.show(v)),
                (Some(v), None) => row.unit.show(v),
                (None, _) => "-".to_string(),
            };
            let ratio = |cost: Option<f64>| cost.map_or("-".to_string(), |c| format!("{c:.2}x"));
            lines.push([
                row.section.to_string(),
                row.figure.clone(),
                row.engine.clone(),
                cell(row.per_pod, &row.notes[0]),
                cell(row.shared, &row.notes[1]),
                cell(row.baseline, &row.notes[2]),
                row.baseline_is.clone(),
                ratio(row.per_pod_cost),
                ratio(row.shared_cost),
                cell(row.runwasi, &None),
                cell(row.null_per_pod, &None),
                cell(row.null_shared, &None),
            ]);
        }
        let mut widths = [0usize; 12];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = format!(
            "wasmrunner-bench: containerd {}, {} cores, {} run, {:.0} s\n\n",
            self.containerd_version,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            if self.quick { "quick" } else { "default" },
            self.duration.as_secs_f64()
        );
        // A run of sections with tables of their own (serving) has no rows here.
        let lines = if rows.is_empty() { Vec::new() } else { lines };
        for (i, line) in lines.iter().enumerate() {
            let text: Vec<String> = line
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(column, (cell, width))| {
                    // Numbers right-aligned, words left-aligned.
                    if column >= 3 && column != 6 {
                        format!("{cell:>width$}")
                    } else {
                        format!("{cell:<width$}")
                    }
                })
                .collect();
            out.push_str(text.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                let total = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
                out.push_str(&"-".repeat(total));
                out.push('\n');
            }
        }
        for (section, outcome) in &self.sections {
            match outcome {
                SectionOutcome::ShimThroughput(t) => {
                    for (runtime, reason) in &t.failed {
                        out.push_str(&format!("{}: {runtime} FAILED: {reason}\n", section.key()));
                    }
                }
                SectionOutcome::BigModule(big) => {
                    for (runtime, reason) in &big.skipped {
                        out.push_str(&format!(
                            "{}: {runtime} not measured: {reason}\n",
                            section.key()
                        ));
                    }
                }
                SectionOutcome::Serving(serving) => {
                    for (runtime, reason) in &serving.failed {
                        out.push_str(&format!("{}: {runtime} FAILED: {reason}\n", section.key()));
                    }
                }
                SectionOutcome::Skipped(reason) => {
                    out.push_str(&format!("{}: skipped: {reason}\n", section.key()));
                }
                SectionOutcome::Failed(reason) => {
                    out.push_str(&format!("{}: FAILED: {reason}\n", section.key()));
                }
                _ => {}
            }
        }
        if !rows.is_empty() {
            out.push('\n');
            out.push_str(&format!("Baseline: {BASELINE}.\n"));
            out.push_str(
                "x/base: wasmrunner's cost over the baseline (time, time per task, memory); 1.00x = no gap.\n",
            );
            if let Some(gap) = largest_gap(&rows) {
                out.push_str(&gap);
                out.push('\n');
            }
            match &self.runwasi {
                Ok(path) => out.push_str(&format!(
                    "runwasi: upstream runwasi's Wasmtime shim, {}, measured in this run.\n",
                    path.display()
                )),
                Err(reason) => out.push_str(&format!("runwasi: not measured: {reason}\n")),
            }
            out.push_str(NULL_SHIM);
            out.push('\n');
        }
        for (_, outcome) in &self.sections {
            match outcome {
                SectionOutcome::Throughput(t) => out.push_str(&targets::phases_table(t)),
                SectionOutcome::Serving(s) => out.push_str(&serving_table(s)),
                _ => {}
            }
        }
        out.push_str(&targets::table(&targets::check(&self.sections)));
        out
    }
}

const BASELINE: &str = "runc (io.containerd.runc.v2) running static native builds of the same programs \
     through the same containerd, measured in the same run: the floor containerd itself sets \
     (compute: the same engine outside any container)";

const NULL_SHIM: &str = "null per-pod / null shared: the null shim (containerd-shim-null-v1, a \
     process per task, and containerd-shim-nulld-v1, one process for every task) answers the Task \
     API at once and runs nothing: what containerd and its client cost by themselves, the floor no \
     shim can beat. A runtime's own share is its figure less the floor's.";

fn largest_gap(rows: &[Row]) -> Option<String> {
    let mut worst: Option<(f64, String)> = None;
    for row in rows.iter().filter(|r| r.against_floor) {
        for (mode, cost) in [("per-pod", row.per_pod_cost), ("shared", row.shared_cost)] {
            let Some(cost) = cost else { continue };
            if worst.as_ref().is_none_or(|(w, _)| cost > *w) {
                worst = Some((
                    cost,
                    format!(
                        "Largest gap to the floor: {} {} ({} {mode}): {cost:.2}x {}",
                        row.section, row.figure, row.engine, row.baseline_is
                    ),
                ));
            }
        }
    }
    worst.map(|(_, text)| text)
}

fn range(summary: Option<&Summary>) -> Option<String> {
    summary.map(|s| format!("({:.3}-{:.3})", s.min, s.max))
}

fn cold_rows(cold: &Cold) -> Vec<Row> {
    let engines = Modes::all();
    let runc = Runtime::Runc;
    let figure = format!("ctr run --rm hello, median (min-max) of {}", cold.runs);
    let mut rows = Vec::new();
    for m in &engines {
        rows.push(
            Row::new(
                Section::Cold,
                figure.clone(),
                &m.engine,
                Unit::Seconds,
                cold.median(&m.per_pod),
                cold.median(&m.shared),
                cold.median(&runc),
                "runc, native hello",
                true,
            )
            .with_notes([
                range(cold.summary(&m.per_pod)),
                range(cold.summary(&m.shared)),
                range(cold.summary(&runc)),
            ])
            .with_runwasi(|r| cold.median(r))
            .with_floors(|r| cold.median(r)),
        );
    }
    let wasmtime = Modes::of("wasmtime");
    if cold.median(&Runtime::RunwasiStandIn).is_some() {
        rows.push(
            Row::new(
                Section::Cold,
                figure.clone(),
                &wasmtime.engine,
                Unit::Seconds,
                cold.median(&wasmtime.per_pod),
                cold.median(&wasmtime.shared),
                cold.median(&Runtime::RunwasiStandIn),
                "runwasi stand-in (runwasi CLI, our engine)",
                false,
            )
            .with_notes([
                range(cold.summary(&wasmtime.per_pod)),
                range(cold.summary(&wasmtime.shared)),
                range(cold.summary(&Runtime::RunwasiStandIn)),
            ]),
        );
    }
    for m in &engines {
        rows.push(
            Row::new(
                Section::Cold,
                "first run, untimed above (shared: spawns the manager)",
                &m.engine,
                Unit::Seconds,
                cold.warm_up(&m.per_pod),
                cold.warm_up(&m.shared),
                cold.warm_up(&runc),
                "runc, native hello",
                false,
            )
            .with_runwasi(|r| cold.warm_up(r))
            .with_floors(|r| cold.warm_up(r)),
        );
    }
    rows
}

fn throughput_rows(t: &Throughput, sizes: &Sizes) -> Vec<Row> {
    let mut rows = Vec::new();
    for &m in &sizes.concurrency {
        for e in Modes::all() {
            rows.push(
                Row::new(
                    Section::Throughput,
                    format!("{} tasks, {m} at a time (gRPC)", t.tasks),
                    &e.engine,
                    Unit::TasksPerSecond,
                    t.tasks_per_s(&e.per_pod, m),
                    t.tasks_per_s(&e.shared, m),
                    t.tasks_per_s(&Runtime::Runc, m),
                    "runc, native hello",
                    true,
                )
                .with_runwasi(|r| t.tasks_per_s(r, m))
                .with_floors(|r| t.tasks_per_s(r, m)),
            );
        }
    }
    if let Some(widest) = sizes.concurrency.iter().max() {
        for e in Modes::all() {
            rows.push(
                Row::new(
                    Section::Throughput,
                    format!("{} ctr run --rm, {widest} at a time", t.tasks),
                    &e.engine,
                    Unit::TasksPerSecond,
                    t.ctr_tasks_per_s(&e.per_pod),
                    t.ctr_tasks_per_s(&e.shared),
                    t.ctr_tasks_per_s(&Runtime::Runc),
                    "runc, native hello",
                    true,
                )
                .with_runwasi(|r| t.ctr_tasks_per_s(r))
                .with_floors(|r| t.ctr_tasks_per_s(r)),
            );
        }
    }
    rows
}

fn shim_throughput_rows(t: &ShimThroughput, sizes: &Sizes) -> Vec<Row> {
    let mut rows = Vec::new();
    for &m in &sizes.concurrency {
        for e in Modes::all() {
            rows.push(
                Row::new(
                    Section::ShimThroughput,
                    format!(
                        "{} tasks, {m} at a time (shim ttrpc, no containerd)",
                        t.tasks
                    ),
                    &e.engine,
                    Unit::TasksPerSecond,
                    t.tasks_per_s(&e.per_pod, m),
                    t.tasks_per_s(&e.shared, m),
                    t.tasks_per_s(&Runtime::Runc, m),
                    "runc shim, native hello",
                    true,
                )
                .with_runwasi(|r| t.tasks_per_s(r, m))
                .with_floors(|r| t.tasks_per_s(r, m)),
            );
        }
    }
    rows
}

fn memory_rows(m: &Memory, sizes: &Sizes) -> Vec<Row> {
    let mut counts = sizes.containers.clone();
    counts.sort_unstable();
    counts.dedup();
    // One row per engine of `figure` at `k` containers alive, beside runc's and runwasi's.
    let rows_of = |figure: String,
                   unit: Unit,
                   baseline_is: &str,
                   against_floor: bool,
                   value: &dyn Fn(&Runtime) -> Option<f64>| {
        Modes::all()
            .into_iter()
            .map(|e| {
                Row::new(
                    Section::Memory,
                    figure.clone(),
                    &e.engine,
                    unit,
                    value(&e.per_pod),
                    value(&e.shared),
                    value(&Runtime::Runc),
                    baseline_is,
                    against_floor,
                )
                .with_runwasi(value)
            })
            .collect::<Vec<_>>()
    };
    let mut rows = Vec::new();
    for &k in &counts {
        rows.extend(rows_of(
            format!("PSS per container, {k} alive"),
            Unit::Mib,
            "runc, native probe sleep",
            true,
            &|r| m.per_container_mib(r, k),
        ));
    }
    // Idle wake-ups at the largest count only: they grow with the shims alive.
    if let Some(&k) = counts.last() {
        rows.extend(rows_of(
            format!("idle wake-ups of the shims (not the containers), {k} alive"),
            Unit::WakeupsPerSecond,
            "runc shims",
            false,
            &|r| m.idle_wakeups_per_s(r, k),
        ));
    }
    rows
}

fn big_module_rows(big: &BigModule, floor: Option<f64>) -> Vec<Row> {
    let first = |r: &Runtime| big.get(r).map(|b| b.first_start_s);
    let second = |r: &Runtime| big.get(r).map(|b| b.second_start_s);
    // Only the engines the section measured; each engine's module size (WasmEdge's LLVM
    // compile gets a smaller one).
    let engines: Vec<(Modes, String)> = Modes::all()
        .into_iter()
        .filter_map(|m| {
            let measured = big.get(&m.per_pod).or_else(|| big.get(&m.shared))?;
            let size = format!("{:.1} MiB", measured.module_bytes as f64 / (1 << 20) as f64);
            Some((m, size))
        })
        .collect();
    let mut rows = Vec::new();
    for (m, size) in &engines {
        let (host, host_is) = if m.engine == "wasmtime" {
            (big.host_compile_s, "compile alone, on the host")
        } else {
            (None, "-")
        };
        rows.push(
            Row::new(
                Section::BigModule,
                format!("{size} artifact, first start (compiles)"),
                &m.engine,
                Unit::Seconds,
                first(&m.per_pod),
                first(&m.shared),
                host,
                host_is,
                false,
            )
            .with_runwasi(first),
        );
    }
    for (m, size) in &engines {
        rows.push(
            Row::new(
                Section::BigModule,
                format!("{size} artifact, second start (cached)"),
                &m.engine,
                Unit::Seconds,
                second(&m.per_pod),
                second(&m.shared),
                floor,
                "runc cold start, native hello",
                false,
            )
            .with_runwasi(second),
        );
    }
    rows
}

fn compute_rows(c: &Compute) -> Vec<Row> {
    let loop_of = |key: &str| c.place(key).and_then(|p| p.loop_best());
    let startup_of = |key: &str| c.place(key).and_then(|p| p.startup_median());
    let engines = Modes::all();
    let mut rows = Vec::new();
    for m in &engines {
        let host = host_key(&m.engine);
        let runs = c
            .place(&m.per_pod.key())
            .or_else(|| c.place(&m.shared.key()))
            .map_or(0, |p| p.runs.len());
        let rounds = c.rounds_of(&m.engine);
        let note = if rounds != c.rounds {
            format!(
                " (interpreter: 1/{} of the rounds)",
                c.rounds / rounds.max(1)
            )
        } else {
            String::new()
        };
        rows.push(
            Row::new(
                Section::Compute,
                format!("probe compute {rounds}{note}: the loop, best of {runs}"),
                &m.engine,
                Unit::Seconds,
                loop_of(&m.per_pod.key()),
                loop_of(&m.shared.key()),
                loop_of(&host),
                "same engine, no container",
                true,
            )
            .with_runwasi(|r| loop_of(&r.key())),
        );
    }
    for m in &engines {
        let host = host_key(&m.engine);
        let in_process = m.engine == "wasmtime";
        let baseline = startup_of(&host).map(|s| {
            if in_process {
                s + c.host_compile_s.unwrap_or(0.0)
            } else {
                s
            }
        });
        rows.push(
            Row::new(
                Section::Compute,
                "startup around the loop (wall - loop), median".to_string(),
                &m.engine,
                Unit::Seconds,
                startup_of(&m.per_pod.key()),
                startup_of(&m.shared.key()),
                baseline,
                if in_process {
                    "host compile + instantiate"
                } else {
                    "run-on-host process, wall - loop"
                },
                false,
            )
            .with_runwasi(|r| startup_of(&r.key())),
        );
    }
    if let Some(native) = loop_of(&Runtime::Runc.key()) {
        for m in engines
            .iter()
            .filter(|m| c.rounds_of(&m.engine) == c.rounds)
        {
            rows.push(Row::new(
                Section::Compute,
                "the loop: Wasm vs native code (runc)".to_string(),
                &m.engine,
                Unit::Seconds,
                loop_of(&m.per_pod.key()),
                loop_of(&m.shared.key()),
                Some(native),
                "native build under runc",
                false,
            ));
        }
    }
    rows
}

fn tracing_rows(t: &Tracing) -> Vec<Row> {
    let mut rows = Vec::new();
    for runtime in Runtime::wasm() {
        let Some(mode) = t.mode(&runtime) else {
            continue;
        };
        let on = mode.on.as_ref().map(|s| s.median);
        let off = mode.off.as_ref().map(|s| s.median);
        let (per_pod, shared) = if runtime.is_shared() {
            (None, on)
        } else {
            (on, None)
        };
        rows.push(Row::new(
            Section::Tracing,
            format!(
                "cold start, tracing on ({:.0} shim spans a container), median of {}",
                t.spans_per_container, t.runs
            ),
            runtime.engine_name(),
            Unit::Seconds,
            per_pod,
            shared,
            off,
            "tracing off, same run",
            false,
        ));
    }
    rows.push(Row::new(
        Section::Tracing,
        "tracing off: what a Task API call spends on it, in-process",
        "all",
        Unit::Nanoseconds,
        Some(t.off_call_ns),
        Some(t.off_call_ns),
        None,
        "(no span, no exporter, no thread)",
        false,
    ));
    rows
}

/// The serving section's table: a row per runtime, then wasmrunner's over `wasmtime serve`;
/// for each connection count requests/s, p50 and p99 latency and errors. Then the PSS per
/// idle served pod, each side's CPU at the most connections, and the errors seen.
fn serving_table(s: &Serving) -> String {
    const PER_POINT: usize = 4;
    let mut header = vec!["runtime".to_string()];
    for _ in &s.connections {
        header.extend(["req/s", "p50 ms", "p99 ms", "errors"].map(str::to_string));
    }
    // A row of cells, or a label and one text across the figures.
    let mut lines: Vec<(Vec<String>, Option<String>)> = vec![(header, None)];
    for (key, label) in &s.order {
        let Some(served) = s.runtimes.get(key) else {
            let why = if key == SERVE_KEY {
                s.wasmtime_serve
                    .not_measured
                    .as_ref()
                    .map(|_| "not measured: run `make bench-tools`".to_string())
            } else {
                None
            };
            let why = why
                .or_else(|| s.failed.get(key).map(|_| "FAILED (below)".to_string()))
                .unwrap_or_else(|| "not measured".to_string());
            lines.push((vec![label.clone()], Some(why)));
            continue;
        };
        let mut cells = vec![label.clone()];
        for &c in &s.connections {
            match served.points.iter().find(|p| p.connections == c) {
                Some(p) => cells.extend([
                    format!("{:.0}", p.requests_per_s),
                    p.p50_ms.map_or("-".into(), |v| format!("{v:.3}")),
                    p.p99_ms.map_or("-".into(), |v| format!("{v:.3}")),
                    p.errors.to_string(),
                ]),
                None => cells.extend(std::iter::repeat_n("-".to_string(), PER_POINT)),
            }
        }
        lines.push((cells, None));
    }
    if s.runtimes.contains_key(SERVE_KEY) {
        for (key, label) in s.order.iter().filter(|(k, _)| k != SERVE_KEY) {
            if !s.runtimes.contains_key(key) {
                continue;
            }
            let mut cells = vec![format!("{label} / wasmtime serve")];
            for &c in &s.connections {
                let (ours, theirs) = (s.point(key, c), s.point(SERVE_KEY, c));
                let of = |f: fn(&crate::serving::Point) -> Option<f64>| match (
                    ours.and_then(f),
                    theirs.and_then(f),
                ) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                    _ => "-".to_string(),
                };
                cells.extend([
                    of(|p| Some(p.requests_per_s)),
                    of(|p| p.p50_ms),
                    of(|p| p.p99_ms),
                    String::new(),
                ]);
            }
            lines.push((cells, None));
        }
    }
    let columns = 1 + PER_POINT * s.connections.len();
    let mut widths = vec![0usize; columns];
    for (cells, _) in &lines {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
    // Each connection count's name over its four columns.
    let groups: Vec<String> = s
        .connections
        .iter()
        .map(|&c| format!("{c} connection{}", if c == 1 { "" } else { "s" }))
        .collect();
    for (i, group) in groups.iter().enumerate() {
        let span: usize = widths[1 + i * PER_POINT..1 + (i + 1) * PER_POINT]
            .iter()
            .sum::<usize>()
            + 2 * (PER_POINT - 1);
        if group.len() > span {
            widths[1 + i * PER_POINT] += group.len() - span;
        }
    }
    let separator = "  |  ";
    let render = |cells: &[String]| -> String {
        let mut text = format!("{:<width$}", cells[0], width = widths[0]);
        for (i, chunk) in cells[1..].chunks(PER_POINT).enumerate() {
            text.push_str(separator);
            let parts: Vec<String> = chunk
                .iter()
                .zip(&widths[1 + i * PER_POINT..])
                .map(|(cell, width)| format!("{cell:>width$}"))
                .collect();
            text.push_str(&parts.join("  "));
        }
        text.trim_end().to_string()
    };
    let mut out = format!(
        "\nServing: {}; {} s warm-up, then {} s counted per point (a 200 with the body counts, \
         anything else is an error); the load generator is this process (hyper, 2 threads).\n",
        s.workload, s.warmup_s, s.seconds
    );
    let mut group_line = " ".repeat(widths[0]);
    for (i, group) in groups.iter().enumerate() {
        let span: usize = widths[1 + i * PER_POINT..1 + (i + 1) * PER_POINT]
            .iter()
            .sum::<usize>()
            + 2 * (PER_POINT - 1);
        group_line.push_str(separator);
        group_line.push_str(&format!("{group:^span$}"));
    }
    out.push_str(group_line.trim_end());
    out.push('\n');
    for (i, (cells, text)) in lines.iter().enumerate() {
        match text {
            Some(text) => out.push_str(&format!(
                "{:<width$}{separator}{text}",
                cells[0],
                width = widths[0]
            )),
            None => out.push_str(&render(cells)),
        }
        out.push('\n');
        if i == 0 {
            let total = widths.iter().sum::<usize>()
                + 2 * (columns - 1 - s.connections.len())
                + separator.len() * s.connections.len();
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    if !s.idle.is_empty() {
        let pods = s.idle.values().map(|i| i.pods).max().unwrap_or(0);
        let each: Vec<String> = s
            .order
            .iter()
            .filter_map(|(key, label)| {
                let idle = s.idle.get(key)?;
                let roles: Vec<String> = idle
                    .footprint
                    .pss_kib
                    .iter()
                    .map(|(role, kib)| {
                        let n = idle.footprint.processes.get(role).copied().unwrap_or(0);
                        let role = format!("{role:?}").to_lowercase();
                        format!("{role} {n}: {:.1} MiB", *kib as f64 / 1024.0)
                    })
                    .collect();
                Some(format!(
                    "{label} {:.2} MiB ({})",
                    idle.pss_per_pod_kib / 1024.0,
                    roles.join(", ")
                ))
            })
            .collect();
        out.push_str(&format!(
            "PSS per idle served pod, {pods} alive (each answered one GET /): {}\n",
            each.join("; ")
        ));
    }
    if let Some(&most) = s.connections.iter().max() {
        let each: Vec<String> = s
            .order
            .iter()
            .filter_map(|(key, label)| {
                let cpu = &s.point(key, most)?.cpu;
                let server = cpu.server_cores.map_or("-".into(), |c| format!("{c:.2}"));
                let ctr = cpu
                    .ctr_cores
                    .map_or(String::new(), |c| format!(" + ctr {c:.2}"));
                Some(format!(
                    "{label} {server}{ctr} (client {:.2})",
                    cpu.client_cores
                ))
            })
            .collect();
        if !each.is_empty() {
            out.push_str(&format!(
                "CPU at {most} connections, cores (server processes + ctr relaying stdout; the load generator): {}\n",
                each.join("; ")
            ));
        }
    }
    for (key, label) in &s.order {
        let Some(served) = s.runtimes.get(key) else {
            continue;
        };
        for p in served.points.iter().filter(|p| !p.error_kinds.is_empty()) {
            out.push_str(&format!(
                "errors, {label} at {} connections: {:?}\n",
                p.connections, p.error_kinds
            ));
        }
    }
    match &s.wasmtime_serve.not_measured {
        None => {
            if let Some(served) = s.runtimes.get(SERVE_KEY) {
                out.push_str(&format!("wasmtime serve: `{}`\n", served.command));
            }
        }
        Some(reason) => out.push_str(&format!("wasmtime serve: not measured: {reason}\n")),
    }
    out
}
