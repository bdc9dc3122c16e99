//! Recursion that no stack can hold ends as a trap, quickly and with a clear message, on every
//! engine (issue #20): WasmEdge 0.14 has no call-depth limit of its own, so its shim rewrites
//! modules to count their stack use. Recursion of ordinary depth still runs.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use wasmrunner_e2e::images::{RECURSED, TestImage};
use wasmrunner_e2e::suite::Needs;
use wasmrunner_e2e::{Case, Env};
use wasmrunner_oci::Flavour;

/// How long a run that traps may take, container set-up (and, for an artifact, the first
/// compile) included. Without a bound, WasmEdge takes minutes and gigabytes.
const TRAP_WITHIN: Duration = Duration::from_secs(10);

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("infinite_recursion_traps", |env| {
            traps(env, Flavour::Image, "/recurse.wasm")
        }),
        Case::new("deep_recursion_is_cut_off", |env| {
            traps(env, Flavour::Image, "/recurse.wasm#deep")
        }),
        Case::new("moderate_recursion_runs", |env| runs(env, Flavour::Image)),
        Case::new("precompiled_infinite_recursion_traps", |env| {
            traps(env, Flavour::RunwasiArtifact, "/recurse.wasm")
        })
        .needs(&[Needs::WasmLayers]),
        Case::new("precompiled_deep_recursion_is_cut_off", |env| {
            traps(env, Flavour::RunwasiArtifact, "/recurse.wasm#deep")
        })
        .needs(&[Needs::WasmLayers]),
        Case::new("precompiled_moderate_recursion_runs", |env| {
            runs(env, Flavour::RunwasiArtifact)
        })
        .needs(&[Needs::WasmLayers]),
    ]
}

/// What the engine says when the guest's calls nest too deep: WasmEdge's shim, the call-depth
/// bound it adds to modules; Wasmtime, its own trap (after a backtrace of 20 frames); Wasmer,
/// its stack-overflow trap.
fn exhaustion_message(env: &Env) -> &'static str {
    match env.engine.name.as_str() {
        "wasmedge" => {
            "trapped: call stack exhausted: the guest's calls nested deeper than WasmEdge allows"
        }
        "wasmer" => "trapped: call stack exhausted",
        _ => "wasm trap: call stack exhausted",
    }
}

/// Runs `entrypoint` of the recursion image: it must trap (134) within [`TRAP_WITHIN`] and
/// say that the call stack is exhausted.
fn traps(env: &Env, flavour: Flavour, entrypoint: &str) -> Result<()> {
    let image = TestImage::Recursion(flavour);
    // The clock starts after the import; an artifact's first run includes its compile.
    env.image(image)?;
    let started = Instant::now();
    let out = env.run_rm(image, &[entrypoint])?;
    let took = started.elapsed();
    let out = out
        .expect_status(134)?
        .expect_output(exhaustion_message(env))?;
    ensure!(
        took < TRAP_WITHIN,
        "{entrypoint} took {took:?} to trap (at most {TRAP_WITHIN:?}): {out}"
    );
    Ok(())
}

/// Recursion 1,000 deep with a few locals per frame returns the right depth and exits 0.
fn runs(env: &Env, flavour: Flavour) -> Result<()> {
    let out = env
        .run_rm(TestImage::Recursion(flavour), &["/recurse.wasm#moderate"])?
        .ok()?;
    ensure!(
        out.stdout.trim_end() == RECURSED,
        "unexpected output: {out}"
    );
    Ok(())
}
