//! A workload that cannot run gets a clear message and status, and leaves nothing behind.

use anyhow::Result;
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{HELLO, TestImage};
use wasmrunner_e2e::suite::Needs;
use wasmrunner_e2e::{Case, Env};
use wasmrunner_oci::Flavour;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("file_that_is_not_wasm", file_that_is_not_wasm),
        Case::new("module_without_start", module_without_start),
        Case::new("missing_named_export", missing_named_export),
        Case::new(
            "entrypoint_that_does_not_exist",
            entrypoint_that_does_not_exist,
        ),
        Case::new("truncated_module", truncated_module),
        Case::new("corrupted_wasm_layer", corrupted_wasm_layer).needs(&[Needs::WasmLayers]),
        Case::new("module_over_the_size_cap", module_over_the_size_cap),
    ]
}

/// Runs a bad image, checks its status and message, then checks the shim still runs good ones.
fn fails_clearly(env: &Env, image: TestImage, status: i32, message: &str) -> Result<()> {
    env.run_rm(image, &[])?
        .expect_status(status)?
        .expect_output(message)?;
    let out = env
        .run_rm(TestImage::Hello(Target::WasiP1, Flavour::Image), &[])?
        .ok()?;
    anyhow::ensure!(
        out.stdout.contains(HELLO),
        "a good module failed after a bad one: {out}"
    );
    Ok(())
}

/// A module over the node's size cap is refused at Create, before the shim reads or
/// compiles it, with the cap in the message; nothing of it is left, and the shim goes on.
fn module_over_the_size_cap(env: &Env) -> Result<()> {
    let out = env.run_rm(TestImage::Oversized, &[])?;
    anyhow::ensure!(!out.success(), "a module over the cap ran: {out}");
    let out =
        out.expect_output("this node runs modules of at most 8 MiB (WASMRUNNER_MAX_MODULE_MIB)")?;
    anyhow::ensure!(
        out.output().contains("/big.wasm is 10 MiB"),
        "the message does not name the module and its size: {out}"
    );
    let good = env
        .run_rm(TestImage::Hello(Target::WasiP1, Flavour::Image), &[])?
        .ok()?;
    anyhow::ensure!(
        good.stdout.contains(HELLO),
        "a good module failed after: {good}"
    );
    Ok(())
}

fn file_that_is_not_wasm(env: &Env) -> Result<()> {
    fails_clearly(
        env,
        TestImage::NotWasm,
        126,
        "/bad.wasm is not a WebAssembly module or component",
    )
}

fn module_without_start(env: &Env) -> Result<()> {
    fails_clearly(
        env,
        TestImage::NoStart,
        126,
        "has no callable export \"_start\"",
    )
}

fn missing_named_export(env: &Env) -> Result<()> {
    fails_clearly(
        env,
        TestImage::MissingExport,
        126,
        "has no callable export \"nope\"",
    )
}

fn entrypoint_that_does_not_exist(env: &Env) -> Result<()> {
    fails_clearly(
        env,
        TestImage::MissingEntrypoint,
        127,
        "entrypoint \"/missing.wasm\" not found",
    )
}

fn truncated_module(env: &Env) -> Result<()> {
    fails_clearly(
        env,
        TestImage::Truncated,
        126,
        "cannot load /truncated.wasm",
    )
}

fn corrupted_wasm_layer(env: &Env) -> Result<()> {
    fails_clearly(
        env,
        TestImage::GarbageLayer,
        126,
        "cannot load image layer sha256:",
    )
}
