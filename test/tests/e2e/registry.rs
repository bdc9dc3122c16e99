//! Registry: images pushed with `wasm-oci` to a real registry (Debian's `docker-registry` on
//! loopback, see `wasmrunner_e2e::registry`) and pulled by containerd the way kubelet has it
//! pull them, CRI PullImage with the pod's credentials and the registry's `hosts.toml`, then
//! run in a pod on the engine and mode under test; `ctr image pull` with `--hosts-dir`; a
//! multi-platform index; and pulls that must fail (wrong password, missing tag, corrupt blob,
//! unreachable registry) with a clear error, leaving no image or content behind.
//!
//! containerd 1.6.20's CRI pull unpacks what it fetched and refuses an image whose layers
//! are not all tar layers ("mismatched image rootfs and manifest layers", the check `ctr
//! import` fails on too): the two artifact cases need [`Needs::WasmLayers`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use wasmrunner_e2e::cri::{ContainerSpec, K8S_NAMESPACE, Network, Pod, PodSpec};
use wasmrunner_e2e::engine::Engine;
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{HELLO, TestImage};
use wasmrunner_e2e::registry::{RegistryServer, Variant, free_port, hosts_dir};
use wasmrunner_e2e::suite::Needs;
use wasmrunner_e2e::wasm_bytes;
use wasmrunner_e2e::{Case, Env, Outcome};
use wasmrunner_installer::registry_hosts::RegistryHost;
use wasmrunner_oci::{Flavour, ImageSpec, Platform};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("image_pulled_by_cri", image_pulled_by_cri),
        Case::new(
            "runwasi_artifact_pulled_by_cri",
            runwasi_artifact_pulled_by_cri,
        )
        .needs(&[Needs::WasmLayers]),
        Case::new("cncf_artifact_pulled_by_cri", cncf_artifact_pulled_by_cri)
            .needs(&[Needs::WasmLayers]),
        Case::new("ctr_pull_with_user", ctr_pull_with_user),
        Case::new("multi_platform_index", multi_platform_index),
        Case::new("failed_pulls_leave_nothing", failed_pulls_leave_nothing),
        Case::new("push_pull_figures", push_pull_figures),
    ]
}

const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// `image`'s archive, written under the run's containerd root, made this engine's own (see
/// [`own_copy`]).
fn archive(env: &Env, image: TestImage) -> Result<PathBuf> {
    let spec = own_copy(image.spec()?, &env.engine.label());
    write(
        env,
        &format!("{}-{}", env.engine.label(), image.name()),
        &spec,
    )
}

/// `spec` with content of its own: a config label and, in each module, a custom section
/// naming `whose`. CRI's RemoveImage removes every name of an image ID (its config's
/// digest), so a pushed copy identical to one of the suite's images would take the suite's
/// name with it when a case removes what it pulled, and so would another engine's copy of
/// the same image (the CNCF config has no labels: its layer, the module, must differ).
fn own_copy(mut spec: ImageSpec, whose: &str) -> ImageSpec {
    for file in spec
        .files
        .iter_mut()
        .filter(|file| file.path_in_image.ends_with(".wasm"))
    {
        let mut payload = Vec::new();
        wasm_bytes::name(&mut payload, "wasmrunner-e2e-registry");
        payload.extend_from_slice(whose.as_bytes());
        wasm_bytes::section(&mut file.contents, 0, &payload);
    }
    match spec.flavour {
        Flavour::CncfArtifact => spec,
        Flavour::Image | Flavour::RunwasiArtifact => {
            spec.label("dev.wasmrunner.e2e.registry", whose)
        }
    }
}

fn write(env: &Env, label: &str, spec: &ImageSpec) -> Result<PathBuf> {
    let path = env
        .containerd
        .root()
        .join(format!("registry-{}.tar", label.replace(['/', ':'], "_")));
    wasmrunner_oci::write_archive(spec, &path).with_context(|| format!("building {label}"))?;
    Ok(path)
}

/// Pushes `image` to a registry of `variant`, has CRI pull it as kubelet does (the pod's
/// credentials, the registry's hosts.toml) and runs it in a pod with `command` (none: the
/// image's entrypoint): it must print hello.
fn push_pull_run(env: &Env, variant: Variant, image: TestImage, command: &[&str]) -> Result<()> {
    let name = format!(
        "e2e/{}:{}",
        wasmrunner_oci::tag_of(&image.name()),
        env.engine.label()
    );
    let (server, reference) =
        RegistryServer::with_image(variant, &[&archive(env, image)?], &name, &env.containerd)?;
    run_pulled(env, &server, &reference, command)
}

/// CRI pulls `reference` with the pod's credentials and runs it in a pod with `command`: it
/// must print hello and exit 0; then the pod and the image are removed.
fn run_pulled(env: &Env, server: &RegistryServer, reference: &str, command: &[&str]) -> Result<()> {
    let mut pod = Pod::run(
        env,
        PodSpec::new("pulled", &env.engine.handler(), Network::Host),
    )?;
    let client = env.cri_client()?;
    let pulled = client
        .pull_image(reference, server.auth(), Some(&pod.config))
        .with_context(|| format!("pulling {reference}\n{}", env.containerd.log_tail()))?;
    ensure!(
        pulled.starts_with("sha256:"),
        "PullImage answered {pulled:?}"
    );
    let spec = ContainerSpec::new("app", TestImage::Pause, &[]).command(command);
    let id = pod.run_pulled_container(&spec, reference)?;
    let status = pod.wait_exited(&id, EXIT_TIMEOUT)?;
    ensure!(
        status.exit_code == 0,
        "the pulled image exited with {}: {status:?}\n{}",
        status.exit_code,
        env.containerd.log_tail()
    );
    let lines = pod.wait_for_stdout("app", 0, HELLO, Duration::from_secs(20))?;
    ensure!(lines == [HELLO], "unexpected stdout: {lines:?}");
    pod.remove()?.assert_clean()?;
    client.remove_image(reference)?;
    ensure!(
        client.image_status(reference)?.image.is_none(),
        "{reference} is still listed after RemoveImage"
    );
    Ok(())
}

/// A normal image (the module in its rootfs), plain HTTP, anonymous.
fn image_pulled_by_cri(env: &Env) -> Result<()> {
    push_pull_run(
        env,
        Variant::Plain,
        TestImage::Hello(Target::WasiP1, Flavour::Image),
        &[],
    )
}

/// runwasi's wasm-layer artifact over HTTPS with the run's own CA.
fn runwasi_artifact_pulled_by_cri(env: &Env) -> Result<()> {
    push_pull_run(
        env,
        Variant::Tls,
        TestImage::Hello(Target::WasiP1, Flavour::RunwasiArtifact),
        &[],
    )
}

/// The CNCF artifact (`application/vnd.wasm.config.v0+json`), which `ctr` refuses, pulled
/// through CRI over HTTPS with basic auth and run. Its config has no entrypoint (containerd
/// would refuse the container: "no command specified"), so the pod names the module as its
/// `command`, as a pod spec for such an artifact must.
fn cncf_artifact_pulled_by_cri(env: &Env) -> Result<()> {
    push_pull_run(
        env,
        Variant::TlsAuth,
        TestImage::Hello(Target::WasiP1, Flavour::CncfArtifact),
        &["/hello.wasm"],
    )
}

/// `ctr image pull --hosts-dir --user`, then `ctr run` of what it pulled.
fn ctr_pull_with_user(env: &Env) -> Result<()> {
    let image = TestImage::Hello(Target::WasiP1, Flavour::Image);
    let name = format!("e2e/ctr:{}", env.engine.label());
    let (_server, reference) = RegistryServer::with_image(
        Variant::TlsAuth,
        &[&archive(env, image)?],
        &name,
        &env.containerd,
    )?;
    let refused = ctr_pull(env, "wrong", &reference)?;
    ensure!(
        !refused.success() && refused.output().contains("401"),
        "a wrong password should be refused with 401: {refused}"
    );
    ctr_pull(env, wasmrunner_e2e::registry::USER.1, &reference)?.ok()?;
    let id = env.container_id("pulled");
    let runtime = env.engine.runtime();
    let out = env
        .containerd
        .ctr(&["run", "--rm", "--runtime", &runtime, &reference, &id])?
        .ok()?;
    ensure!(out.stdout.trim_end() == HELLO, "unexpected output: {out}");
    env.assert_clean(&id)?;
    env.containerd.ctr(&["image", "rm", &reference])?.ok()?;
    Ok(())
}

/// `ctr image pull` of `reference` with the registry's hosts dir, as the test's user with
/// `password`.
fn ctr_pull(env: &Env, password: &str, reference: &str) -> Result<Outcome> {
    let hosts = hosts_dir(&env.containerd).display().to_string();
    let user = format!("{}:{password}", wasmrunner_e2e::registry::USER.0);
    env.containerd.ctr(&[
        "image",
        "pull",
        "--hosts-dir",
        &hosts,
        "--user",
        &user,
        reference,
    ])
}

/// One tag for two platforms: runwasi's artifact (wasi/wasm) and the native hello
/// (linux/amd64). `wasm-oci pull` sees both; CRI fetches only the node's platform, and the
/// shim, which prefers the index's wasm entry, follows the native one containerd holds and
/// runs it (the shim runs native programs too, as it runs pods' pause containers).
fn multi_platform_index(env: &Env) -> Result<()> {
    let wasm = archive(
        env,
        TestImage::Hello(Target::WasiP1, Flavour::RunwasiArtifact),
    )?;
    let native = archive(env, TestImage::Hello(Target::Native, Flavour::Image))?;
    let name = format!("e2e/multi:{}", env.engine.label());
    let (server, reference) =
        RegistryServer::with_image(Variant::Plain, &[&wasm, &native], &name, &env.containerd)?;
    let out_file = env
        .containerd
        .root()
        .join(format!("pulled-{}.tar", env.engine.label()));
    let out_arg = out_file.display().to_string();
    let pulled = server
        .wasm_oci("pull", &[&reference, "-o", &out_arg])?
        .ok()?;
    ensure!(
        pulled
            .stdout
            .contains("(wasi/wasm, linux/amd64; 3 manifests, 4 blobs"),
        "unexpected pull: {pulled}"
    );
    run_pulled(env, &server, &reference, &[])
}

/// Each failure: the pull fails, saying why, and CRI lists no image; containerd keeps no
/// content of it and no ingest; `wasm-oci pull` says the same and writes no file.
fn failed_pulls_leave_nothing(env: &Env) -> Result<()> {
    let client = env.cri_client()?;
    let image = TestImage::Hello(Target::WasiP1, Flavour::Image);
    let name = format!("e2e/hello:{}", env.engine.label());
    // A layer of its own (no other case's pull has it), so that containerd must fetch it.
    let own = image
        .spec()?
        .file("/engine.txt", env.engine.label().into_bytes());
    let own = write(env, &format!("own-{}", env.engine.label()), &own)?;
    let (plain, corrupt) =
        RegistryServer::with_image(Variant::Plain, &[&own], &name, &env.containerd)?;

    let missing = plain.reference(&format!("e2e/hello:missing-{}", env.engine.label()));
    let error = pull_error(env, &client, &missing, None)?;
    ensure!(error.contains("not found"), "missing tag: {error}");
    expect_wasm_oci_error(env, &plain, &missing, "not found in the registry")?;

    // The layer (the largest blob) changed in the registry's storage.
    let layer = largest_blob(&plain)?;
    let file = plain.blob_file(&layer)?;
    let mut bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).context("corrupting the layer")?;
    let error = pull_error(env, &client, &corrupt, None)?;
    ensure!(error.contains("digest"), "corrupt blob: {error}");
    no_content(env, &layer)?;
    expect_wasm_oci_error(
        env,
        &plain,
        &corrupt,
        "corrupt in the registry or in transit",
    )?;

    let name = format!("e2e/private:{}", env.engine.label());
    let (_auth, private) = RegistryServer::with_image(
        Variant::TlsAuth,
        &[&archive(env, image)?],
        &name,
        &env.containerd,
    )?;
    let error = pull_error(env, &client, &private, Some(("wasmrunner", "wrong")))?;
    ensure!(
        error.contains("401") || error.to_lowercase().contains("unauthorized"),
        "wrong password: {error}"
    );

    let nowhere = RegistryHost {
        host: format!("127.0.0.1:{}", free_port()?),
        plain_http: true,
        ca_file: None,
    };
    nowhere.write(&hosts_dir(&env.containerd))?;
    let unreachable = format!("{}/e2e/hello:1", nowhere.host);
    let error = pull_error(env, &client, &unreachable, None)?;
    ensure!(error.contains("connection refused"), "unreachable: {error}");
    Ok(())
}

/// PullImage of `reference`, which must fail; its error. CRI must not list the image after.
fn pull_error(
    env: &Env,
    client: &wasmrunner_e2e::cri::CriClient,
    reference: &str,
    auth: Option<(&str, &str)>,
) -> Result<String> {
    let error = match client.pull_image(reference, auth, None) {
        Ok(id) => anyhow::bail!("pulling {reference} should fail, got {id}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        client.image_status(reference)?.image.is_none(),
        "CRI lists {reference} after a failed pull"
    );
    let images = env
        .containerd
        .ctr_in(K8S_NAMESPACE, &["image", "ls", "-q"])?
        .ok()?;
    ensure!(
        !images.stdout.lines().any(|l| l == reference),
        "containerd keeps an image record of {reference}: {images}"
    );
    Ok(error)
}

/// The content store does not hold `digest` (an ingest of it is reported).
fn no_content(env: &Env, digest: &str) -> Result<()> {
    let hex = digest.trim_start_matches("sha256:");
    let content = env
        .containerd
        .ctr_in(K8S_NAMESPACE, &["content", "ls", "-q"])?
        .ok()?;
    ensure!(
        !content.stdout.contains(hex),
        "the corrupt blob {digest} is in the content store"
    );
    let active = env
        .containerd
        .ctr_in(K8S_NAMESPACE, &["content", "active"])?
        .ok()?;
    // containerd 1.7.24 and 2.1.9 keep the aborted ingest (`layer-sha256:...`) after the
    // digest check fails, until their content GC expires it: said, not failed on.
    if active.stdout.contains(hex) {
        println!("note: containerd kept the ingest of corrupt blob {digest} after the failed pull");
    }
    Ok(())
}

/// `wasm-oci pull` of `reference` fails with `needle` and writes no file.
fn expect_wasm_oci_error(
    env: &Env,
    server: &RegistryServer,
    reference: &str,
    needle: &str,
) -> Result<()> {
    let out = env
        .containerd
        .root()
        .join(format!("failed-{}.tar", env.engine.label()));
    let outcome = server.wasm_oci("pull", &[reference, "-o", &out.display().to_string()])?;
    ensure!(
        !outcome.success() && outcome.output().contains(needle),
        "wasm-oci pull {reference} should fail with {needle:?}: {outcome}"
    );
    ensure!(!out.exists(), "wasm-oci left {}", out.display());
    Ok(())
}

/// The digest of the largest blob the registry stores.
fn largest_blob(server: &RegistryServer) -> Result<String> {
    let root = server.blob_file("sha256:0000")?;
    let blobs = root
        .ancestors()
        .nth(3)
        .context("the registry's blob dir")?
        .to_path_buf();
    let mut largest: Option<(u64, String)> = None;
    for prefix in
        std::fs::read_dir(&blobs).with_context(|| format!("reading {}", blobs.display()))?
    {
        for blob in std::fs::read_dir(prefix?.path())? {
            let blob = blob?;
            let size = std::fs::metadata(blob.path().join("data"))?.len();
            let digest = format!("sha256:{}", blob.file_name().to_string_lossy());
            if largest.as_ref().is_none_or(|(s, _)| size > *s) {
                largest = Some((size, digest));
            }
        }
    }
    largest
        .map(|(_, d)| d)
        .context("the registry stores no blob")
}

/// A valid module of `bytes` bytes: the wasm header and one custom section of filler.
fn module_of_size(bytes: usize) -> Vec<u8> {
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    let mut payload = Vec::new();
    wasmrunner_e2e::wasm_bytes::name(&mut payload, "filler");
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    while payload.len() + module.len() + 6 < bytes {
        // xorshift: incompressible filler, as real code is.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        payload.extend_from_slice(&state.to_le_bytes());
    }
    wasmrunner_e2e::wasm_bytes::section(&mut module, 0, &payload);
    module
}

fn timed<T>(what: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let start = Instant::now();
    let value = what()?;
    Ok((value, start.elapsed()))
}

/// Push and pull of a 10 MiB module with `wasm-oci`, beside `ctr image pull` of a native
/// image of the same size, from the same registry in the same run; printed (once per run,
/// with the first engine) for the record.
fn push_pull_figures(env: &Env) -> Result<()> {
    let first = Engine::selected().first().map(Engine::label);
    if first.as_deref() != Some(env.engine.label().as_str()) {
        return Ok(());
    }
    const SIZE: usize = 10 << 20;
    let server = RegistryServer::start(Variant::Plain)?;
    let module = module_of_size(SIZE);
    let spec = ImageSpec::new("e2e/big:1", Flavour::RunwasiArtifact)
        .file("/big.wasm", module.clone())
        .entrypoint(["/big.wasm"]);
    let wasm = write(env, "big-wasm", &spec)?;
    let mut native = ImageSpec::new("e2e/native:1", Flavour::Image)
        .file("/big.bin", module)
        .entrypoint(["/big.bin"]);
    native.platform = Some(Platform::new("linux", "amd64"));
    let native = write(env, "big-native", &native)?;
    let (_, push) = timed(|| server.push(&[&wasm], "e2e/big:1"))?;
    let out = env.containerd.root().join("big-pulled.tar");
    let big = server.reference("e2e/big:1");
    let (_, pull) = timed(|| {
        server
            .wasm_oci("pull", &[&big, "-o", &out.display().to_string()])?
            .ok()
    })?;
    let pulled = std::fs::metadata(&out)?.len();
    ensure!(
        pulled > SIZE as u64,
        "the pulled archive has {pulled} bytes"
    );
    let (_, native_push) = timed(|| server.push(&[&native], "e2e/native:1"))?;
    let reference = server.reference("e2e/native:1");
    let (_, ctr_pull) = timed(|| {
        env.containerd
            .ctr(&["image", "pull", "--plain-http", &reference])?
            .ok()
    })?;
    env.containerd.ctr(&["image", "rm", &reference])?.ok()?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "registry figures (containerd {}): 10 MiB module: wasm-oci push {:.0} ms, wasm-oci pull {:.0} ms; \
         10 MiB native image: wasm-oci push {:.0} ms, ctr image pull {:.0} ms",
        env.containerd.version,
        ms(push),
        ms(pull),
        ms(native_push),
        ms(ctr_pull)
    );
    let _ = std::fs::remove_file(&out);
    let _: &Path = &wasm;
    Ok(())
}
