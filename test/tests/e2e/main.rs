//! The end-to-end suite: every case, for every engine under test, against one private
//! containerd (the one in `WASMRUNNER_CONTAINERD_BIN`, or on `PATH`).
//!
//! Run it with `make e2e` (every containerd version) or
//! `cargo test --release --workspace --test e2e` (one).

mod bad_input;
mod capabilities;
mod cri;
mod faults;
mod flavours;
mod isolation;
mod lifecycle;
mod module_cache;
mod recursion;
mod registry;
mod run;
mod serving;
mod shared;
mod third_party;
mod tracing;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use libtest_mimic::{Arguments, Failed, Trial};
use wasmrunner_e2e::{Case, Containerd, Engine, Env};

/// The area of released third-party programs, whose build [`prebuild_third_party`] starts.
const THIRD_PARTY: &str = "third_party";

/// A trial's name: `<engine>::<area>::<case>`.
fn trial_name(engine: &Engine, area: &str, case: &str) -> String {
    format!("{}::{area}::{case}", engine.label())
}

/// Every case, by area.
fn cases() -> Vec<(&'static str, Case)> {
    let areas: [(&str, Vec<Case>); 15] = [
        ("isolation", isolation::cases()),
        ("run", run::cases()),
        ("lifecycle", lifecycle::cases()),
        ("flavours", flavours::cases()),
        ("bad_input", bad_input::cases()),
        ("recursion", recursion::cases()),
        ("cri", cri::cases()),
        ("shared", shared::cases()),
        ("module_cache", module_cache::cases()),
        ("capabilities", capabilities::cases()),
        ("faults", faults::cases()),
        ("registry", registry::cases()),
        ("serving", serving::cases()),
        ("tracing", tracing::cases()),
        (THIRD_PARTY, third_party::cases()),
    ];
    areas
        .into_iter()
        .flat_map(|(area, cases)| cases.into_iter().map(move |case| (area, case)))
        .collect()
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // Cases mostly wait on containerd; more threads than cores keeps the run short.
    args.test_threads.get_or_insert(4);
    match run_suite(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("e2e: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_suite(args: &Arguments) -> Result<ExitCode> {
    let engines = Engine::selected();
    if args.list {
        let trials = trials(&engines, None, &Timings::default());
        return Ok(libtest_mimic::run(args, trials).exit_code());
    }
    let containerd = wasmrunner_e2e::run::start(&engines)?;
    println!(
        "containerd {} at {} (namespace {}; CRI in {})",
        containerd.version,
        containerd.root().display(),
        containerd.namespace,
        wasmrunner_e2e::cri::K8S_NAMESPACE,
    );
    for action in &containerd.installer_actions {
        println!("installer: {action}");
    }
    prebuild_third_party(args, &engines);
    let timings = Timings::default();
    let conclusion = libtest_mimic::run(args, trials(&engines, Some(&containerd), &timings));
    timings.print_slowest(SLOWEST_SHOWN);
    Ok(
        if wasmrunner_e2e::run::finish(containerd, conclusion.has_failed())? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

/// The third-party programs take a minute to build (`cargo install`): when a third-party case
/// is going to run, the build starts now, beside the first cases, instead of holding every
/// test thread that reaches such a case until it is done. The cases still wait for it, and
/// report its failure.
fn prebuild_third_party(args: &Arguments, engines: &[Engine]) {
    // libtest-mimic's own selection: the filter and each `--skip`, by substring or `--exact`.
    let matches = |pattern: &str, name: &str| {
        if args.exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    let wanted = engines.iter().any(|engine| {
        third_party::cases().iter().any(|case| {
            let name = trial_name(engine, THIRD_PARTY, case.name);
            args.filter
                .as_deref()
                .is_none_or(|filter| matches(filter, &name))
                && !args.skip.iter().any(|skip| matches(skip, &name))
        })
    });
    if wanted {
        std::thread::spawn(|| wasmrunner_e2e::third_party::build_all());
    }
}

/// One trial per case and engine, named `<engine>::<area>::<case>`. Cases this containerd
/// or engine cannot run are ignored, and why is printed.
fn trials(
    engines: &[Engine],
    containerd: Option<&Arc<Containerd>>,
    timings: &Timings,
) -> Vec<Trial> {
    let mut trials = Vec::new();
    for engine in engines {
        let env = containerd.map(|c| Arc::new(Env::new(Arc::clone(c), engine.clone())));
        for (area, case) in cases() {
            let name = trial_name(engine, area, case.name);
            let Some(env) = env.clone() else {
                trials.push(Trial::test(name, || Ok(())));
                continue;
            };
            let skip = case.skip_reason(&env);
            if let Some(reason) = &skip {
                println!("skipping {name}: {reason}");
            }
            let run = case.run;
            let timings = timings.clone();
            trials.push(
                Trial::test(name.clone(), move || {
                    let started = Instant::now();
                    let outcome = run(&env).map_err(|e| Failed::from(format!("{e:#}")));
                    timings.record(name, started.elapsed());
                    outcome
                })
                .with_ignored_flag(skip.is_some()),
            );
        }
    }
    trials
}

/// How many of the slowest cases a run names at its end.
const SLOWEST_SHOWN: usize = 15;

/// How long each case that ran took: the run ends by naming the slowest, so that a CI log
/// shows where the suite's time goes.
#[derive(Clone, Default)]
struct Timings(Arc<Mutex<Vec<(String, Duration)>>>);

impl Timings {
    fn record(&self, name: String, took: Duration) {
        // A case that panicked while holding the lock leaves it poisoned; the list is still
        // whole, so it is used as it is.
        let mut list = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        list.push((name, took));
    }

    fn print_slowest(&self, count: usize) {
        let mut list = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if list.is_empty() {
            return;
        }
        let total: Duration = list.iter().map(|(_, took)| *took).sum();
        list.sort_by(|a, b| b.1.cmp(&a.1));
        println!(
            "e2e: {} cases took {:.0} s of case time; the slowest:",
            list.len(),
            total.as_secs_f64()
        );
        for (name, took) in list.iter().take(count) {
            println!("  {:7.1} s  {name}", took.as_secs_f64());
        }
        // Case time by area (the second part of `<engine>::<area>::<case>`).
        let mut areas: Vec<(&str, Duration)> = Vec::new();
        for (name, took) in list.iter() {
            let area = name.split("::").nth(1).unwrap_or(name);
            match areas.iter_mut().find(|(known, _)| *known == area) {
                Some((_, sum)) => *sum += *took,
                None => areas.push((area, *took)),
            }
        }
        areas.sort_by(|a, b| b.1.cmp(&a.1));
        let by_area: Vec<String> = areas
            .iter()
            .map(|(area, sum)| format!("{area} {:.0} s", sum.as_secs_f64()))
            .collect();
        println!("e2e: case time by area: {}", by_area.join(", "));
    }
}
