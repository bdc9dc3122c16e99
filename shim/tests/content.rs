//! `wasmrunner_shim::content` against real containerd daemons: a private containerd per
//! release (own root, state and socket; CRI off), images built with `wasmrunner-oci` and
//! imported with `ctr`, container records created through containerd's Containers API.
//!
//! containerd 1.6 comes from `WASMRUNNER_CONTAINERD_BIN` (default `/usr/bin`) and must be
//! there; 1.7 and 2.x come from `target/containerd/{trixie,sid}/bin` and are skipped, with
//! the reason printed, when they are not. Needs root, like containerd itself.

use std::future::Future;
use std::hash::Hash;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateRequest, DeleteContentRequest, DeleteRequest,
    GetImageRequest, Info, InfoRequest, ListRequest, UpdateRequest,
};
use containerd_client::tonic::Request;
use containerd_client::tonic::transport::Channel;
use containerd_shim_wasm::sandbox::context::WasmLayer;
use containerd_shim_wasm::shim::Compiler;
use sha2::{Digest as _, Sha256};
use wasmrunner_oci::{Flavour, ImageSpec};
use wasmrunner_shim::content::{ContentError, ContentStore, labels, precompiled_label};
use wasmrunner_shim::module_cache::CompiledModule;

/// The smallest valid module: magic and version.
const MODULE: &[u8] = b"\0asm\x01\0\0\0";
const RUNWASI_LAYER: &str = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
const SUPPORTED: &[&str] = &[RUNWASI_LAYER, "application/wasm"];
const ENGINE: &str = "content-test";
const NAMESPACE: &str = "wasmrunner-content-test";
const HELLO: &str = "docker.io/wasmrunner/content-hello:v1";
/// Longest any one call into the store may take before the test fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// The tests

#[test]
fn containerd_1_6_system() -> Result<()> {
    let dir = std::env::var_os("WASMRUNNER_CONTAINERD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin"));
    ensure!(
        dir.join("containerd").is_file(),
        "no containerd in {} (install containerd, or set WASMRUNNER_CONTAINERD_BIN)",
        dir.display()
    );
    run_suite(&dir)
}

#[test]
fn containerd_1_7() -> Result<()> {
    run_suite_if_present("trixie")
}

#[test]
fn containerd_2_x() -> Result<()> {
    run_suite_if_present("sid")
}

#[test]
fn connecting_to_a_missing_socket_names_it() -> Result<()> {
    let runtime = runtime()?;
    let missing = "/nonexistent/wasmrunner/containerd.sock";
    let err = runtime
        .block_on(ContentStore::connect(missing, NAMESPACE))
        .err()
        .context("connecting to a missing socket succeeded")?;
    assert!(matches!(err, ContentError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains(missing), "{err}");

    let bad = runtime
        .block_on(ContentStore::connect(missing, "bad\nnamespace"))
        .err()
        .context("a namespace with a newline was accepted")?;
    assert!(
        matches!(bad, ContentError::InvalidNamespace { .. }),
        "{bad:?}"
    );
    Ok(())
}

#[test]
fn label_is_runwasis() {
    use std::hash::{DefaultHasher, Hasher};
    let mut hasher = DefaultHasher::new();
    "v1".hash(&mut hasher);
    let expected = format!("runwasi.io/precompiled/wasmtime/{}", hasher.finish());
    assert_eq!(precompiled_label("wasmtime", "v1"), expected);
    assert_eq!(
        labels::gc_ref_label(&expected),
        format!("containerd.io/gc.ref.content.{expected}")
    );
}

#[test]
fn store_and_calls_can_move_between_threads() {
    fn assert_send<T: Send>(_: T) {}
    fn assert_shared<T: Send + Sync + Clone>() {}
    assert_shared::<ContentStore>();
    // Type-checked only: the future a task service would hand to another thread or spawn.
    let _ = |store: &ContentStore, compiler: &TestCompiler| {
        assert_send(store.image_content("id", ENGINE, SUPPORTED, Some(compiler), &no_node_code));
    };
}

/// No code on the node: every precompiled layer is read from containerd.
fn no_node_code(_sha256: &str) -> Option<CompiledModule> {
    None
}

fn run_suite_if_present(name: &str) -> Result<()> {
    let dir = repo_root().join("target/containerd").join(name).join("bin");
    if !dir.join("containerd").is_file() {
        eprintln!(
            "skipped: no containerd in {} (the e2e setup downloads it)",
            dir.display()
        );
        return Ok(());
    }
    run_suite(&dir)
}

/// Every scenario against one fresh containerd from `bin_dir`.
fn run_suite(bin_dir: &Path) -> Result<()> {
    let daemon = Daemon::start(bin_dir)?;
    eprintln!("containerd {} from {}", daemon.version, bin_dir.display());
    let result = scenarios(&daemon);
    if result.is_err() {
        eprintln!("containerd log:\n{}", daemon.log_tail());
    }
    result.with_context(|| format!("on containerd {}", daemon.version))
}

fn scenarios(daemon: &Daemon) -> Result<()> {
    let runtime = runtime()?;
    let block = |what: &str| format!("{what} (containerd {})", daemon.version);

    // Images: a runwasi artifact (also kept as its index), one per scenario that labels its
    // layer so they do not see each other's cache, and a normal image.
    let hello = HELLO;
    let hello_index = "docker.io/wasmrunner/content-hello:index";
    daemon.import(&wasm_image(hello, MODULE), Some(hello_index))?;
    let big = "docker.io/wasmrunner/content-big:v1";
    daemon.import(&wasm_image(big, &module_named("big")), None)?;
    let none = "docker.io/wasmrunner/content-none:v1";
    daemon.import(&wasm_image(none, &module_named("none")), None)?;
    let failing = "docker.io/wasmrunner/content-failing:v1";
    daemon.import(&wasm_image(failing, &module_named("fail")), None)?;
    let plain = "docker.io/wasmrunner/content-plain:v1";
    let plain_spec = ImageSpec::new(plain, Flavour::Image)
        .file("/hello.wasm", MODULE.to_vec())
        .entrypoint(["/hello.wasm"]);
    daemon.import(&plain_spec, None)?;

    runtime.block_on(async {
        let channel = containerd_client::connect(daemon.socket())
            .await
            .context("connecting the test's own client")?;
        for (id, image) in [
            ("hello", hello),
            ("hello-index", hello_index),
            ("big", big),
            ("none", none),
            ("failing", failing),
            ("plain", plain),
            ("no-image", ""),
            ("ghost", "docker.io/wasmrunner/content-missing:v1"),
        ] {
            create_container(&channel, id, image).await?;
        }
        let store = timed(ContentStore::connect(daemon.socket(), NAMESPACE)).await??;
        let ctx = Ctx {
            store,
            channel,
            daemon,
        };

        no_compiler(&ctx)
            .await
            .with_context(|| block("no compiler"))?;
        compiles_once_and_caches(&ctx)
            .await
            .with_context(|| block("precompiling"))?;
        recompiles_a_vanished_module(&ctx)
            .await
            .with_context(|| block("a vanished precompiled module"))?;
        garbage_collection_follows_the_label(&ctx)
            .await
            .with_context(|| block("garbage collection"))?;
        large_module_round_trips(&ctx)
            .await
            .with_context(|| block("a module larger than one message"))?;
        uncompilable_layers_come_back_raw(&ctx)
            .await
            .with_context(|| block("layers the compiler leaves alone"))?;
        normal_image_has_no_layers(&ctx)
            .await
            .with_context(|| block("a normal image"))?;
        unknown_container_is_named(&ctx)
            .await
            .with_context(|| block("an unknown container"))?;
        no_leases_left(&ctx)
            .await
            .with_context(|| block("leases after the run"))?;
        anyhow::Ok(())
    })
}

struct Ctx<'a> {
    store: ContentStore,
    channel: Channel,
    daemon: &'a Daemon,
}

/// (1) Without a compiler: the one wasm layer, as it is, through the manifest or the index.
async fn no_compiler(ctx: &Ctx<'_>) -> Result<()> {
    for container in ["hello", "hello-index"] {
        let layers = layers(ctx, container, None::<&TestCompiler>).await?;
        ensure!(
            layers.len() == 1,
            "{container}: {} layers, expected 1",
            layers.len()
        );
        let layer = &layers[0];
        assert_eq!(layer.layer, MODULE, "{container}: layer bytes");
        assert!(
            !layer.precompiled,
            "{container}: precompiled without a compiler"
        );
        assert_eq!(layer.config.media_type().to_string(), RUNWASI_LAYER);
        assert_eq!(layer.config.digest().to_string(), sha256(MODULE));
        assert_eq!(layer.config.size(), MODULE.len() as u64);
    }
    // A container without an image has no layers either.
    let layers = layers(ctx, "no-image", None::<&TestCompiler>).await?;
    ensure!(layers.is_empty(), "no-image: {} layers", layers.len());
    Ok(())
}

/// (2) The first call compiles, writes and labels; the next one reads the cache; another
/// cache key compiles again.
async fn compiles_once_and_caches(ctx: &Ctx<'_>) -> Result<()> {
    let compiler = TestCompiler::new("key-1", Mode::Prefix);
    let compiled = prefixed("key-1", MODULE);

    let first = layers(ctx, "hello", Some(&compiler)).await?;
    assert_eq!(compiler.calls(), 1, "first call compiles");
    assert_precompiled(&first, &compiled)?;

    let label = precompiled_label(ENGINE, "key-1");
    let layer = info(ctx, &sha256(MODULE)).await?;
    assert_eq!(
        layer.labels.get(&label),
        Some(&sha256(&compiled)),
        "layer labels: {:?}",
        layer.labels
    );
    assert_eq!(
        layer.labels.get(&labels::gc_ref_label(&label)),
        Some(&sha256(&compiled)),
        "layer labels: {:?}",
        layer.labels
    );
    let module = info(ctx, &sha256(&compiled)).await?;
    assert_eq!(module.size, compiled.len() as i64);
    assert_eq!(
        module.labels.get(&labels::original_label(&label)),
        Some(&sha256(MODULE))
    );
    // runwasi reads layer labels only once the image target has the label too.
    let target = ImagesClient::new(ctx.channel.clone())
        .get(namespaced(GetImageRequest {
            name: HELLO.to_owned(),
        }))
        .await
        .context("getting the image")?
        .into_inner()
        .image
        .and_then(|image| image.target)
        .context("no image target")?;
    let target_labels = info(ctx, &target.digest).await?.labels;
    assert_eq!(
        target_labels.get(&label).map(String::as_str),
        Some("true"),
        "{target_labels:?}"
    );
    let listed = ctx.daemon.ctr(&["content", "ls"])?;
    ensure!(
        listed.contains(&format!("{label}={}", sha256(&compiled))),
        "`ctr content ls` does not show the label:\n{listed}"
    );

    // The same image through its index: cached too.
    for container in ["hello", "hello-index"] {
        let again = layers(ctx, container, Some(&compiler)).await?;
        assert_eq!(
            compiler.calls(),
            1,
            "{container}: cached, not compiled again"
        );
        assert_precompiled(&again, &compiled)?;
    }

    // The same engine with another cache key compiles again, and both caches stay.
    let other = TestCompiler::new("key-2", Mode::Prefix);
    let third = layers(ctx, "hello", Some(&other)).await?;
    assert_eq!(other.calls(), 1, "another cache key compiles");
    assert_precompiled(&third, &prefixed("key-2", MODULE))?;
    let labels_now = info(ctx, &sha256(MODULE)).await?.labels;
    assert!(labels_now.contains_key(&label), "{labels_now:?}");
    assert!(
        labels_now.contains_key(&precompiled_label(ENGINE, "key-2")),
        "{labels_now:?}"
    );
    let again = layers(ctx, "hello", Some(&compiler)).await?;
    assert_eq!(compiler.calls(), 1, "the first key is still cached");
    assert_precompiled(&again, &compiled)?;
    Ok(())
}

/// A label whose module was deleted from the store: compile again and relabel.
async fn recompiles_a_vanished_module(ctx: &Ctx<'_>) -> Result<()> {
    let compiler = TestCompiler::new("key-1", Mode::Prefix);
    let compiled = prefixed("key-1", MODULE);
    let request = namespaced(DeleteContentRequest {
        digest: sha256(&compiled),
    });
    ContentClient::new(ctx.channel.clone())
        .delete(request)
        .await
        .context("deleting the precompiled module")?;
    let recompiled = layers(ctx, "hello", Some(&compiler)).await?;
    assert_eq!(compiler.calls(), 1, "compiled again");
    assert_precompiled(&recompiled, &compiled)?;
    let module = info(ctx, &sha256(&compiled)).await?;
    assert_eq!(module.size, compiled.len() as i64);
    let again = layers(ctx, "hello", Some(&compiler)).await?;
    assert_eq!(compiler.calls(), 1, "cached again");
    assert_precompiled(&again, &compiled)?;
    Ok(())
}

/// containerd's garbage collector keeps a precompiled module as long as its layer labels
/// it, and collects it once that reference is gone (after which it is compiled again).
async fn garbage_collection_follows_the_label(ctx: &Ctx<'_>) -> Result<()> {
    let compiled = sha256(&prefixed("key-1", MODULE));
    let layer = sha256(MODULE);
    let gc_ref = labels::gc_ref_label(&precompiled_label(ENGINE, "key-1"));

    collect_garbage(ctx).await?;
    info(ctx, &compiled)
        .await
        .context("the precompiled module was collected while its layer refers to it")?;
    info(ctx, &layer)
        .await
        .context("the image's layer was collected")?;

    remove_label(ctx, &layer, &gc_ref).await?;
    collect_garbage(ctx).await?;
    ensure!(
        info(ctx, &compiled).await.is_err(),
        "the precompiled module outlived the reference to it"
    );

    let compiler = TestCompiler::new("key-1", Mode::Prefix);
    let layers = layers(ctx, "hello", Some(&compiler)).await?;
    assert_eq!(compiler.calls(), 1, "compiled again");
    assert_precompiled(&layers, &prefixed("key-1", MODULE))?;
    collect_garbage(ctx).await?;
    info(ctx, &compiled)
        .await
        .context("the recompiled module was collected")?;
    Ok(())
}

/// (5) A compiled module of several write (and read) messages comes back byte for byte.
async fn large_module_round_trips(ctx: &Ctx<'_>) -> Result<()> {
    let compiler = TestCompiler::new("key-big", Mode::Big);
    let original = module_named("big");
    let expected = big_output(&original);
    assert!(expected.len() > 3 * 1024 * 1024);

    let first = layers(ctx, "big", Some(&compiler)).await?;
    assert_eq!(compiler.calls(), 1);
    assert_precompiled(&first, &expected)?;

    let stored = info(ctx, &sha256(&expected)).await?;
    assert_eq!(stored.size, expected.len() as i64, "stored size");
    let label = precompiled_label(ENGINE, "key-big");
    assert_eq!(
        info(ctx, &sha256(&original)).await?.labels.get(&label),
        Some(&sha256(&expected))
    );

    let cached = layers(ctx, "big", Some(&compiler)).await?;
    assert_eq!(compiler.calls(), 1, "read from the store, not compiled");
    assert_precompiled(&cached, &expected)?;
    Ok(())
}

/// A compiler that returns `None`, or fails: the layers come back raw and nothing is cached.
async fn uncompilable_layers_come_back_raw(ctx: &Ctx<'_>) -> Result<()> {
    for (container, name, mode) in [
        ("none", "none", Mode::Nothing),
        ("failing", "fail", Mode::Fail),
    ] {
        let original = module_named(name);
        let compiler = TestCompiler::new("key-raw", mode);
        for round in 1..=2 {
            let layers = layers(ctx, container, Some(&compiler)).await?;
            assert_eq!(
                compiler.calls(),
                round,
                "{container}: nothing cached, compiled again"
            );
            ensure!(layers.len() == 1, "{container}: {} layers", layers.len());
            assert!(!layers[0].precompiled, "{container}: marked precompiled");
            assert_eq!(layers[0].layer, original, "{container}: raw bytes");
        }
        let labels_now = info(ctx, &sha256(&original)).await?.labels;
        assert!(
            !labels_now.contains_key(&precompiled_label(ENGINE, "key-raw")),
            "{container}: labelled anyway: {labels_now:?}"
        );
    }
    Ok(())
}

/// (3) A normal image (one tar layer) has no wasm layers, with or without a compiler.
async fn normal_image_has_no_layers(ctx: &Ctx<'_>) -> Result<()> {
    let none = layers(ctx, "plain", None::<&TestCompiler>).await?;
    ensure!(none.is_empty(), "{} layers", none.len());
    let compiler = TestCompiler::new("key-1", Mode::Prefix);
    let none = layers(ctx, "plain", Some(&compiler)).await?;
    ensure!(none.is_empty(), "{} layers", none.len());
    assert_eq!(compiler.calls(), 0, "nothing to compile");
    Ok(())
}

/// (4) An unknown container, or one whose image is gone: an error that names them.
async fn unknown_container_is_named(ctx: &Ctx<'_>) -> Result<()> {
    let result = timed(ctx.store.image_content(
        "no-such-container",
        ENGINE,
        SUPPORTED,
        None::<&TestCompiler>,
        &no_node_code,
    ))
    .await?;
    let Err(err) = result else {
        bail!("an unknown container has layers");
    };
    assert!(
        matches!(err, ContentError::ContainerNotFound { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("no-such-container"), "{message}");
    assert!(message.contains(NAMESPACE), "{message}");

    // A container whose image was removed: an error naming both.
    let Err(err) = timed(ctx.store.image_content(
        "ghost",
        ENGINE,
        SUPPORTED,
        None::<&TestCompiler>,
        &no_node_code,
    ))
    .await?
    else {
        bail!("a container without its image has layers");
    };
    assert!(matches!(err, ContentError::ImageNotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("content-missing:v1"), "{message}");
    assert!(message.contains("ghost"), "{message}");
    Ok(())
}

/// Every lease taken while caching was given back.
async fn no_leases_left(ctx: &Ctx<'_>) -> Result<()> {
    let leases = LeasesClient::new(ctx.channel.clone())
        .list(namespaced(ListRequest { filters: vec![] }))
        .await
        .context("listing leases")?
        .into_inner()
        .leases;
    let ours: Vec<&str> = leases
        .iter()
        .map(|lease| lease.id.as_str())
        .filter(|id| id.starts_with("wasmrunner-"))
        .collect();
    ensure!(ours.is_empty(), "leases left behind: {ours:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Helpers

async fn layers(
    ctx: &Ctx<'_>,
    container: &str,
    compiler: Option<&TestCompiler>,
) -> Result<Vec<WasmLayer>> {
    timed(
        ctx.store
            .image_content(container, ENGINE, SUPPORTED, compiler, &no_node_code),
    )
    .await?
    .map(|content| content.wasm_layers)
    .with_context(|| format!("image_content({container:?})"))
}

fn assert_precompiled(layers: &[WasmLayer], expected: &[u8]) -> Result<()> {
    ensure!(layers.len() == 1, "{} layers, expected 1", layers.len());
    ensure!(layers[0].precompiled, "layer not marked precompiled");
    ensure!(
        layers[0].layer.len() == expected.len(),
        "{} bytes, expected {}",
        layers[0].layer.len(),
        expected.len()
    );
    ensure!(layers[0].layer == expected, "the bytes differ");
    assert_eq!(layers[0].config.media_type().to_string(), RUNWASI_LAYER);
    Ok(())
}

async fn timed<F: Future>(future: F) -> Result<F::Output> {
    tokio::time::timeout(CALL_TIMEOUT, future)
        .await
        .context("the call took longer than a minute")
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // What the shim does: a current-thread runtime it blocks on from a synchronous handler.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

fn namespaced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("containerd-namespace", NAMESPACE.parse().expect("ascii"));
    request
}

/// Runs containerd's garbage collector to completion: deleting a lease with `sync` does.
async fn collect_garbage(ctx: &Ctx<'_>) -> Result<()> {
    let mut leases = LeasesClient::new(ctx.channel.clone());
    let id = "content-test-gc".to_owned();
    leases
        .create(namespaced(CreateRequest {
            id: id.clone(),
            labels: Default::default(),
        }))
        .await
        .context("creating a lease")?;
    leases
        .delete(namespaced(DeleteRequest { id, sync: true }))
        .await
        .context("deleting a lease with sync")?;
    Ok(())
}

async fn remove_label(ctx: &Ctx<'_>, digest: &str, key: &str) -> Result<()> {
    // An empty value for a listed field path removes the label.
    let mut update = UpdateRequest {
        info: Some(Info {
            digest: digest.to_owned(),
            ..Default::default()
        }),
        update_mask: Some(Default::default()),
    };
    if let Some(mask) = update.update_mask.as_mut() {
        mask.paths = vec![format!("labels.{key}")];
    }
    ContentClient::new(ctx.channel.clone())
        .update(namespaced(update))
        .await
        .with_context(|| format!("removing label {key} from {digest}"))?;
    let labels_now = info(ctx, digest).await?.labels;
    ensure!(
        !labels_now.contains_key(key),
        "{key} still there: {labels_now:?}"
    );
    Ok(())
}

async fn info(ctx: &Ctx<'_>, digest: &str) -> Result<Info> {
    ContentClient::new(ctx.channel.clone())
        .info(namespaced(InfoRequest {
            digest: digest.to_owned(),
        }))
        .await
        .with_context(|| format!("content info of {digest}"))?
        .into_inner()
        .info
        .context("no info")
}

/// A container record, as `ctr containers create` or CRI would leave it (no snapshot needed).
async fn create_container(channel: &Channel, id: &str, image: &str) -> Result<()> {
    let mut container = Container {
        id: id.to_owned(),
        image: image.to_owned(),
        runtime: Some(Runtime {
            name: "io.containerd.runc.v2".to_owned(),
            options: None,
        }),
        spec: Some(Default::default()),
        ..Default::default()
    };
    if let Some(spec) = container.spec.as_mut() {
        spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Spec".to_owned();
        spec.value = b"{}".to_vec();
    }
    ContainersClient::new(channel.clone())
        .create(namespaced(CreateContainerRequest {
            container: Some(container),
        }))
        .await
        .with_context(|| format!("creating container {id:?}"))?;
    Ok(())
}

fn wasm_image(name: &str, module: &[u8]) -> ImageSpec {
    ImageSpec::new(name, Flavour::RunwasiArtifact)
        .file("/hello.wasm", module.to_vec())
        .entrypoint(["/hello.wasm"])
}

/// A valid module told apart from the others by a custom section named `name`.
fn module_named(name: &str) -> Vec<u8> {
    let mut module = MODULE.to_vec();
    module.push(0); // custom section
    module.push(u8::try_from(name.len() + 1).expect("short name"));
    module.push(u8::try_from(name.len()).expect("short name"));
    module.extend_from_slice(name.as_bytes());
    module
}

/// What [`Mode::Prefix`] compiles `module` to with cache key `key`.
fn prefixed(key: &str, module: &[u8]) -> Vec<u8> {
    [format!("compiled with {key}:").as_bytes(), module].concat()
}

/// 3 MiB and a bit: not a multiple of the write chunk, with no repeating 1 MiB block.
fn big_output(module: &[u8]) -> Vec<u8> {
    let len = 3 * 1024 * 1024 + 12_345;
    let mut out: Vec<u8> = (0..len)
        .map(|i: usize| (i.wrapping_mul(31) ^ (i >> 11)) as u8)
        .collect();
    out.extend_from_slice(module);
    out
}

fn sha256(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[derive(Clone, Copy)]
enum Mode {
    /// `compiled with <key>:` + the module.
    Prefix,
    /// [`big_output`].
    Big,
    /// `None` for every layer.
    Nothing,
    /// An error.
    Fail,
}

struct TestCompiler {
    key: &'static str,
    mode: Mode,
    calls: AtomicUsize,
}

impl TestCompiler {
    fn new(key: &'static str, mode: Mode) -> Self {
        Self {
            key,
            mode,
            calls: AtomicUsize::new(0),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Compiler for TestCompiler {
    fn cache_key(&self) -> impl Hash {
        self.key
    }

    async fn compile(&self, layers: &[WasmLayer]) -> anyhow::Result<Vec<Option<Vec<u8>>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        for layer in layers {
            anyhow::ensure!(!layer.precompiled, "asked to compile a precompiled layer");
        }
        Ok(match self.mode {
            Mode::Prefix => layers
                .iter()
                .map(|l| Some(prefixed(self.key, &l.layer)))
                .collect(),
            Mode::Big => layers.iter().map(|l| Some(big_output(&l.layer))).collect(),
            Mode::Nothing => layers.iter().map(|_| None).collect(),
            Mode::Fail => anyhow::bail!("this test compiler always fails"),
        })
    }
}

// ---------------------------------------------------------------------------------------
// A private containerd

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    version: String,
}

impl Daemon {
    fn start(bin_dir: &Path) -> Result<Self> {
        let containerd = bin_dir.join("containerd");
        let output = Command::new(&containerd)
            .arg("--version")
            .output()
            .with_context(|| format!("running {} --version", containerd.display()))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let version = text
            .split_whitespace()
            .nth(2)
            .with_context(|| format!("unexpected `containerd --version`: {text:?}"))?
            .trim_start_matches('v')
            .to_owned();
        let major: u32 = version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
            .with_context(|| format!("bad containerd version {version:?}"))?;

        // Short, so the socket path stays under the 108-byte limit.
        let dir = tempfile::Builder::new()
            .prefix("wr-content-")
            .tempdir()
            .context("creating a scratch dir")?;
        let root = dir.path();
        std::fs::write(root.join("config.toml"), config_toml(root, major))?;
        let log = std::fs::File::create(root.join("containerd.log"))?;
        let mut command = Command::new(&containerd);
        command
            .arg("--config")
            .arg(root.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: runs in the forked child before exec and only calls `prctl`, which is
        // async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(|| {
                // containerd dies with the test, even if the test is killed.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", containerd.display()))?;
        let mut daemon = Self {
            child,
            dir,
            bin_dir: bin_dir.to_path_buf(),
            version,
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("containerd exited with {status}:\n{}", self.log_tail());
            }
            if self.socket().exists() && self.ctr(&["version"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("containerd did not answer in 30 s:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Runs `ctr` on this daemon's socket and namespace; its stdout, or an error with both
    /// streams.
    fn ctr(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(self.bin_dir.join("ctr"))
            .arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(NAMESPACE)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running ctr")?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!(
                "`ctr {}` failed with {}:\n{stdout}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(stdout)
    }

    /// Builds `spec` into an archive and imports it without unpacking (containerd 1.6.20
    /// cannot unpack wasm layers); `index_name` also keeps the archive's index as an image.
    fn import(&self, spec: &ImageSpec, index_name: Option<&str>) -> Result<()> {
        let archive = self
            .dir
            .path()
            .join(format!("{}.tar", spec.name.replace(['/', ':'], "_")));
        wasmrunner_oci::write_archive(spec, &archive)
            .with_context(|| format!("building {}", spec.name))?;
        let archive = archive.to_string_lossy().into_owned();
        let mut args = vec!["image", "import", "--all-platforms", "--no-unpack"];
        if let Some(name) = index_name {
            args.extend(["--index-name", name]);
        }
        args.push(&archive);
        self.ctr(&args)?;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: `kill` has no memory-safety preconditions; the pid is our own child's.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn config_toml(root: &Path, major: u32) -> String {
    let root = root.display();
    // No CRI: it would want a sandbox image and CNI. No NRI: its socket is host-wide.
    let (version, disabled) = if major >= 2 {
        (
            3,
            r#""io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.nri.v1.nri""#,
        )
    } else {
        (2, r#""io.containerd.grpc.v1.cri""#)
    };
    format!(
        r#"version = {version}
root = "{root}/root"
state = "{root}/state"
disabled_plugins = [{disabled}]

[grpc]
  address = "{root}/containerd.sock"

[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
"#
    )
}
