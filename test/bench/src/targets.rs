//! Issue #19's targets (and issue #13's for serving), checked against one run's figures, and
//! where the time of a task goes (the median of each containerd call, one task at a time),
//! each runtime beside the null shim's floor.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use wasmrunner_e2e::engine::{Engine, Mode};

use crate::Section;
use crate::compute::host_key;
use crate::grpc::Phases;
use crate::report::SectionOutcome;
use crate::runtime::Runtime;
use crate::serving::{SERVE_KEY, Serving};
use crate::throughput::Throughput;

/// Serving targets (issue #13) apply from this many connections at once (16 and 64 by
/// default).
pub const SERVING_TARGET_CONNECTIONS: usize = 16;
/// wasmrunner's requests/s over `wasmtime serve`'s, at least.
pub const SERVING_RATE_LIMIT: f64 = 0.9;
/// wasmrunner's p99 latency over `wasmtime serve`'s, at most.
pub const SERVING_P99_LIMIT: f64 = 1.2;

/// One target: a measured ratio against its limit.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// What the ratio is of, with the figures.
    pub detail: String,
    pub ratio: Option<f64>,
    pub limit: f64,
    /// A ratio at most the limit meets the target (else at least the limit).
    pub at_most: bool,
}

impl Target {
    pub fn met(&self) -> Option<bool> {
        self.ratio.map(|r| {
            if self.at_most {
                r <= self.limit
            } else {
                r >= self.limit
            }
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "target": self.name,
            "detail": self.detail,
            "ratio": self.ratio,
            "limit": self.limit,
            "at_most": self.at_most,
            "met": self.met(),
        })
    }
}

fn wasmtime(mode: Mode) -> Runtime {
    Runtime::Wasm(Engine::new("wasmtime", mode))
}

/// The floor of a runtime: the null shim that serves like it (a process per task, or one for
/// every task).
fn floor_of(runtime: &Runtime) -> Runtime {
    Runtime::Null(if runtime.is_shared() {
        Mode::Shared
    } else {
        Mode::PerPod
    })
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn show(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.3}{unit}"))
}

/// Every target the run has figures for (a target whose section did not run is left out; one
/// whose figures are missing is listed with no ratio).
pub fn check(sections: &[(Section, SectionOutcome)]) -> Vec<Target> {
    let mut targets = Vec::new();
    let cold = sections.iter().find_map(|(_, o)| match o {
        SectionOutcome::Cold(c) => Some(c),
        _ => None,
    });
    let throughput = sections.iter().find_map(|(_, o)| match o {
        SectionOutcome::Throughput(t) => Some(t),
        _ => None,
    });
    if let Some(cold) = cold {
        let own = |runtime: &Runtime| {
            let floor = cold.median(&floor_of(runtime))?;
            cold.median(runtime).map(|v| v - floor)
        };
        let runwasi_own = own(&Runtime::Runwasi);
        for (mode, limit) in [(Mode::Shared, 0.3), (Mode::PerPod, 0.6)] {
            let runtime = wasmtime(mode);
            let ours = own(&runtime);
            targets.push(Target {
                name: format!(
                    "cold start, wasmtime {}: own share over the floor, against runwasi's",
                    crate::runtime::mode_label(mode)
                ),
                detail: format!(
                    "{} - {} (null {}) vs runwasi {} - {} (null per-pod)",
                    show(cold.median(&runtime), " s"),
                    show(cold.median(&floor_of(&runtime)), " s"),
                    crate::runtime::mode_label(mode),
                    show(cold.median(&Runtime::Runwasi), " s"),
                    show(cold.median(&Runtime::Null(Mode::PerPod)), " s"),
                ),
                ratio: ratio(ours, runwasi_own),
                limit,
                at_most: true,
            });
        }
    }
    if let Some(t) = throughput {
        let widest = t
            .runtimes
            .values()
            .flat_map(|levels| levels.iter().map(|l| l.concurrency))
            .max()
            .unwrap_or(1);
        let shared = wasmtime(Mode::Shared);
        let per_pod = wasmtime(Mode::PerPod);
        let api = |r: &Runtime| t.tasks_per_s(r, widest);
        let ctr = |r: &Runtime| t.ctr_tasks_per_s(r);
        for (via, rate) in [
            ("gRPC API", &api as &dyn Fn(&Runtime) -> Option<f64>),
            ("ctr processes", &ctr),
        ] {
            targets.push(Target {
                name: format!("tasks/s, {widest} at a time ({via}): wasmtime shared over runwasi"),
                detail: format!(
                    "{} vs {} tasks/s",
                    show(rate(&shared), ""),
                    show(rate(&Runtime::Runwasi), "")
                ),
                ratio: ratio(rate(&shared), rate(&Runtime::Runwasi)),
                limit: 3.0,
                at_most: false,
            });
            targets.push(Target {
                name: format!("tasks/s, {widest} at a time ({via}): wasmtime shared over per-pod"),
                detail: format!(
                    "{} vs {} tasks/s",
                    show(rate(&shared), ""),
                    show(rate(&per_pod), "")
                ),
                ratio: ratio(rate(&shared), rate(&per_pod)),
                limit: 1.3,
                at_most: false,
            });
        }
    }
    for (_, outcome) in sections {
        match outcome {
            SectionOutcome::Memory(m) => {
                let most = m
                    .runtimes
                    .values()
                    .flat_map(|points| points.iter().map(|p| p.containers))
                    .max()
                    .unwrap_or(0);
                for (mode, limit) in [(Mode::Shared, 0.5), (Mode::PerPod, 2.0)] {
                    let value = m.per_container_mib(&wasmtime(mode), most);
                    targets.push(Target {
                        name: format!(
                            "PSS per container at {most} alive, wasmtime {} (MiB, target at 100)",
                            crate::runtime::mode_label(mode)
                        ),
                        detail: format!("{} MiB", show(value, "")),
                        ratio: value,
                        limit,
                        at_most: true,
                    });
                }
                let wasmedge = Runtime::Wasm(Engine::new("wasmedge", Mode::PerPod));
                let (edge, time) = (
                    m.per_container_mib(&wasmedge, 1),
                    m.per_container_mib(&wasmtime(Mode::PerPod), 1),
                );
                if edge.is_some() {
                    targets.push(Target {
                        name: "PSS with one container alive, WasmEdge over Wasmtime (per-pod)"
                            .to_string(),
                        detail: format!("{} vs {} MiB", show(edge, ""), show(time, "")),
                        ratio: ratio(edge, time),
                        limit: 1.3,
                        at_most: true,
                    });
                }
            }
            SectionOutcome::BigModule(big) => {
                for mode in [Mode::PerPod, Mode::Shared] {
                    let runtime = wasmtime(mode);
                    let Some(measured) = big.get(&runtime) else {
                        continue;
                    };
                    let tiny = cold.and_then(|c| c.median(&runtime));
                    targets.push(Target {
                        name: format!(
                            "big module's cached start over a tiny module's cold start, wasmtime {}",
                            crate::runtime::mode_label(mode)
                        ),
                        detail: format!(
                            "{} vs {}",
                            show(Some(measured.second_start_s), " s"),
                            show(tiny, " s")
                        ),
                        ratio: ratio(Some(measured.second_start_s), tiny),
                        limit: 1.1,
                        at_most: true,
                    });
                }
            }
            SectionOutcome::Serving(s) => targets.extend(serving(s)),
            SectionOutcome::Compute(c) => {
                let startup = |key: &str| c.place(key).and_then(|p| p.startup_median());
                let host =
                    startup(&host_key("wasmtime")).map(|s| s + c.host_compile_s.unwrap_or(0.0));
                for mode in [Mode::PerPod, Mode::Shared] {
                    let ours = startup(&wasmtime(mode).key());
                    targets.push(Target {
                        name: format!(
                            "startup around the compute loop over the host's, wasmtime {}",
                            crate::runtime::mode_label(mode)
                        ),
                        detail: format!("{} vs {}", show(ours, " s"), show(host, " s")),
                        ratio: ratio(ours, host),
                        limit: 1.2,
                        at_most: true,
                    });
                }
            }
            _ => {}
        }
    }
    targets
}

/// Issue #13's: at 16 connections and more, each Wasmtime mode's requests/s at least 0.9x
/// `wasmtime serve`'s and its p99 latency at most 1.2x (no ratio when `wasmtime serve` was
/// not measured).
fn serving(s: &Serving) -> Vec<Target> {
    let mut targets = Vec::new();
    let baseline_missing = s.wasmtime_serve.not_measured.is_some();
    for mode in [Mode::PerPod, Mode::Shared] {
        let key = wasmtime(mode).key();
        if !s.order.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let label = crate::runtime::mode_label(mode);
        for &c in s
            .connections
            .iter()
            .filter(|&&c| c >= SERVING_TARGET_CONNECTIONS)
        {
            let (ours, theirs) = (s.point(&key, c), s.point(SERVE_KEY, c));
            let detail = |figure: fn(&crate::serving::Point) -> Option<f64>, unit: &str| {
                let shown = |p: Option<&crate::serving::Point>| match p.and_then(figure) {
                    Some(v) if unit == "/s" => format!("{v:.0}{unit}"),
                    Some(v) => format!("{v:.3}{unit}"),
                    None => "-".to_string(),
                };
                if baseline_missing {
                    return format!(
                        "{}; wasmtime serve not measured: run `make bench-tools`",
                        shown(ours)
                    );
                }
                let errors = |p: Option<&crate::serving::Point>| p.map_or(0, |p| p.errors);
                format!(
                    "{} vs {} (wasmtime serve), errors {} vs {}",
                    shown(ours),
                    shown(theirs),
                    errors(ours),
                    errors(theirs)
                )
            };
            let rate = |p: &crate::serving::Point| Some(p.requests_per_s);
            let p99 = |p: &crate::serving::Point| p.p99_ms;
            targets.push(Target {
                name: format!(
                    "serving (#13), {c} connections: wasmtime {label} req/s over wasmtime serve's"
                ),
                detail: detail(rate, "/s"),
                ratio: ratio(ours.and_then(rate), theirs.and_then(rate)),
                limit: SERVING_RATE_LIMIT,
                at_most: false,
            });
            targets.push(Target {
                name: format!(
                    "serving (#13), {c} connections: wasmtime {label} p99 over wasmtime serve's"
                ),
                detail: detail(p99, " ms"),
                ratio: ratio(ours.and_then(p99), theirs.and_then(p99)),
                limit: SERVING_P99_LIMIT,
                at_most: true,
            });
        }
    }
    targets
}

/// The targets as text, one line each.
pub fn table(targets: &[Target]) -> String {
    if targets.is_empty() {
        return String::new();
    }
    let mut out = if targets.iter().any(|t| t.name.starts_with("serving (#13)")) {
        String::from("\nTargets (issue #19; serving: issue #13):\n")
    } else {
        String::from("\nTargets (issue #19):\n")
    };
    for t in targets {
        let verdict = match t.met() {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "no figure",
        };
        let sign = if t.at_most { "<=" } else { ">=" };
        out.push_str(&format!(
            "  {}: {} ({sign} {}): {verdict}  [{}]\n",
            t.name,
            show(t.ratio, ""),
            t.limit,
            t.detail
        ));
    }
    out
}

/// Where the time of one task goes through containerd's API, one task at a time: the median
/// of each call per runtime, then each runtime's own share of each (less its floor's).
pub fn phases_table(t: &Throughput) -> String {
    let runtimes: Vec<Runtime> = Runtime::all_and_floors()
        .into_iter()
        .filter(|r| t.phases(r).is_some())
        .collect();
    if runtimes.is_empty() {
        return String::new();
    }
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["where the time goes (ms, median, 1 at a time)".to_string()];
    header.extend(Phases::NAMES.iter().map(|n| n.to_string()));
    header.push("total".to_string());
    lines.push(header);
    let row = |label: String,
               values: &BTreeMap<&'static str, f64>,
               less: Option<&BTreeMap<&'static str, f64>>| {
        let mut line = vec![label];
        let mut total = 0.0;
        for name in Phases::NAMES {
            let value = values.get(name).copied().unwrap_or(0.0)
                - less.and_then(|l| l.get(name)).copied().unwrap_or(0.0);
            total += value;
            line.push(format!("{:.1}", value * 1000.0));
        }
        line.push(format!("{:.1}", total * 1000.0));
        line
    };
    for runtime in &runtimes {
        if let Some(values) = t.phases(runtime) {
            lines.push(row(runtime.label(), values, None));
        }
    }
    for runtime in runtimes
        .iter()
        .filter(|r| !r.is_null() && **r != Runtime::Runc)
    {
        let (Some(values), Some(floor)) = (t.phases(runtime), t.phases(&floor_of(runtime))) else {
            continue;
        };
        lines.push(row(
            format!(
                "{}, own share (less {})",
                runtime.label(),
                floor_of(runtime).label()
            ),
            values,
            Some(floor),
        ));
    }
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .filter_map(|l| l.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::from("\n");
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                if i == 0 {
                    format!("{cell:<width$}")
                } else {
                    format!("{cell:>width$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
