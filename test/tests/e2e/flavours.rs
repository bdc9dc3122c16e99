//! Each packaging `wasm-oci` builds runs (or fails clearly where containerd cannot import it).

use anyhow::{Result, ensure};
use wasmrunner_e2e::engine::Engine;
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{HELLO, TestImage};
use wasmrunner_e2e::suite::Needs;
use wasmrunner_e2e::{Case, Env};
use wasmrunner_oci::Flavour;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("runwasi_artifact_module", runwasi_artifact_module).needs(&[Needs::WasmLayers]),
        Case::new("runwasi_artifact_component", runwasi_artifact_component)
            .needs(&[Needs::WasmLayers]),
        Case::new("cncf_artifact_import", cncf_artifact_import),
    ]
}

fn runwasi_artifact_module(env: &Env) -> Result<()> {
    let image = TestImage::Hello(Target::WasiP1, Flavour::RunwasiArtifact);
    let out = env.run_rm(image, &[])?.ok()?;
    ensure!(out.stdout.trim_end() == HELLO, "unexpected output: {out}");
    // The first run compiled the layer and stored the result in containerd's content store.
    let content = env.containerd.ctr(&["content", "ls"])?.ok()?;
    let label = format!("runwasi.io/precompiled/{}", env.engine.name);
    ensure!(
        content.stdout.contains(&label),
        "no precompiled module labelled {label} in the content store: {content}"
    );
    // The second run loads the precompiled code.
    let out = env.run_rm(image, &[])?.ok()?;
    ensure!(
        out.stdout.trim_end() == HELLO,
        "unexpected output from precompiled code: {out}"
    );
    Ok(())
}

fn runwasi_artifact_component(env: &Env) -> Result<()> {
    let image = TestImage::Hello(Target::WasiP2, Flavour::RunwasiArtifact);
    if !env.engine.runs_components() {
        env.run_rm(image, &[])?
            .expect_status(126)?
            .expect_output(Engine::COMPONENT_REFUSAL)?;
        return Ok(());
    }
    let out = env.run_rm(image, &[])?.ok()?;
    ensure!(out.stdout.trim_end() == HELLO, "unexpected output: {out}");
    Ok(())
}

/// `ctr` cannot run the CNCF artifact: 1.6 fails its layer check on import ("mismatched image
/// rootfs and manifest layers"); 1.7 and 2.x import it but reject its config media type
/// (`application/vnd.wasm.config.v0+json`) on `ctr run`. containerd is at fault, not the
/// shim: the container is never created. Where a containerd does run it, it must print hello.
fn cncf_artifact_import(env: &Env) -> Result<()> {
    let image = TestImage::Hello(Target::WasiP1, Flavour::CncfArtifact);
    let import = env.import_outcome(image)?;
    let outcome = if import.success() {
        env.run_rm(image, &[])?
    } else {
        import
    };
    if outcome.success() {
        ensure!(
            outcome.stdout.trim_end() == HELLO,
            "unexpected output: {outcome}"
        );
    } else {
        ensure!(
            outcome.output().contains("unknown image config media type")
                || outcome
                    .output()
                    .contains("mismatched image rootfs and manifest layers"),
            "the CNCF artifact failed for another reason than containerd's known limits: {outcome}"
        );
    }
    Ok(())
}
