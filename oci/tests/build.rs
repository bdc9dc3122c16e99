//! Building each flavour and checking the archive, both raw and through `inspect_archive`.

mod common;

use common::{COMPONENT, MODULE, follow, json, sha256, tar_files, temp_path};
use serde_json::Value;
use wasmrunner_oci::{
    Flavour, ImageFile, ImageSpec, OciError, Platform, WasmKind, build_archive, inspect_archive,
    write_archive,
};

const NAME: &str = "docker.io/wasmrunner/hello:v1";

fn build(spec: &ImageSpec) -> Vec<u8> {
    let mut out = Vec::new();
    build_archive(spec, &mut out).expect("archive builds");
    out
}

/// Checks the layout files every flavour shares and returns the parsed manifest
/// and config JSON.
fn check_layout(archive: &[u8], platform: &Platform) -> (Value, Value) {
    let files = tar_files(archive);
    assert_eq!(
        json(&files["oci-layout"]),
        serde_json::json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = json(&files["index.json"]);
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1);
    let descriptor = &manifests[0];
    assert_eq!(
        descriptor["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(descriptor["annotations"]["io.containerd.image.name"], NAME);
    assert_eq!(
        descriptor["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    assert_eq!(descriptor["platform"]["os"], platform.os.as_str());
    assert_eq!(
        descriptor["platform"]["architecture"],
        platform.architecture.as_str()
    );

    let manifest = json(follow(&files, descriptor));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = json(follow(&files, &manifest["config"]));
    let layers = manifest["layers"].as_array().expect("layers");
    for layer in layers {
        follow(&files, layer);
    }

    // The docker-style manifest.json names the same blobs.
    let docker = json(&files["manifest.json"]);
    let entry = &docker[0];
    assert_eq!(entry["RepoTags"], serde_json::json!([NAME]));
    assert_eq!(
        entry["Config"],
        common::blob_path(manifest["config"]["digest"].as_str().expect("digest"))
    );
    let docker_layers: Vec<String> = layers
        .iter()
        .map(|l| common::blob_path(l["digest"].as_str().expect("digest")))
        .collect();
    assert_eq!(entry["Layers"], serde_json::json!(docker_layers));
    (manifest, config)
}

fn layer_digests(manifest: &Value) -> Vec<Value> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].clone())
        .collect()
}

#[test]
fn image_flavour_is_a_normal_oci_image() {
    let spec = ImageSpec::new(NAME, Flavour::Image)
        .file("/hello.wasm", MODULE)
        .add_file(ImageFile::new("/etc/app/config.toml", b"x = 1\n".to_vec()).with_mode(0o644))
        .entrypoint(["/hello.wasm"])
        .cmd(["--verbose"])
        .env(["RUST_LOG=debug"]);
    let archive = build(&spec);
    let platform = Platform::host_linux();
    let (manifest, config) = check_layout(&archive, &platform);

    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], platform.architecture.as_str());
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        Value::Array(layer_digests(&manifest))
    );
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/hello.wasm"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["--verbose"]));
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["RUST_LOG=debug"])
    );

    // The layer holds the files and their parent directories.
    let files = tar_files(&archive);
    let layer_blob = follow(&files, &layers[0]);
    let layer_files = tar_files(layer_blob);
    assert_eq!(layer_files["hello.wasm"], MODULE);
    assert_eq!(layer_files["etc/app/config.toml"], b"x = 1\n");
    let mut dirs = Vec::new();
    let mut layer = tar::Archive::new(layer_blob);
    for entry in layer.entries().expect("entries") {
        let entry = entry.expect("entry");
        if entry.header().entry_type().is_dir() {
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            dirs.push((
                path.trim_end_matches('/').to_owned(),
                entry.header().mode().expect("mode"),
            ));
        }
    }
    assert_eq!(
        dirs,
        [("etc".to_owned(), 0o755), ("etc/app".to_owned(), 0o755)]
    );

    let inspection = inspect_archive(&archive[..]).expect("inspectable");
    assert_eq!(inspection.names(), [NAME]);
    let manifests: Vec<_> = inspection.manifests().collect();
    assert_eq!(manifests.len(), 1);
    let inspected = manifests[0];
    assert_eq!(inspected.platform.as_ref(), Some(&platform));
    let inspected_config = inspected.config.as_ref().expect("config");
    assert_eq!(
        inspected_config.entrypoint.as_deref(),
        Some(&["/hello.wasm".to_owned()][..])
    );
    assert_eq!(
        inspected_config.cmd.as_deref(),
        Some(&["--verbose".to_owned()][..])
    );
    assert_eq!(
        inspected_config.env.as_deref(),
        Some(&["RUST_LOG=debug".to_owned()][..])
    );
    let inspected_layer = &inspected.layers[0];
    assert_eq!(inspected_layer.digest, sha256(layer_blob));
    assert_eq!(inspected_layer.size, layer_blob.len() as u64);
    assert_eq!(inspected_layer.wasm, None);
    assert_eq!(inspected_layer.wasm_files.len(), 1);
    assert_eq!(inspected_layer.wasm_files[0].path, "/hello.wasm");
    assert_eq!(inspected_layer.wasm_files[0].kind, WasmKind::Module);
}

/// Config labels and manifest annotations (what a module declares it needs, for instance)
/// land where containerd and the shims read them, and inspection reports them.
#[test]
fn labels_go_in_the_config_and_annotations_in_the_manifest() {
    for flavour in [Flavour::Image, Flavour::RunwasiArtifact] {
        let spec = ImageSpec::new(NAME, flavour)
            .file("/hello.wasm", MODULE)
            .entrypoint(["/hello.wasm"])
            .label("wasmrunner.dev/network", "connect=127.0.0.1:9")
            .label("org.opencontainers.image.title", "hello")
            .annotation("wasmrunner.dev/env", "APP_NAME");
        let archive = build(&spec);
        let (manifest, config) = check_layout(&archive, &spec.effective_platform());
        assert_eq!(
            config["config"]["Labels"],
            serde_json::json!({
                "org.opencontainers.image.title": "hello",
                "wasmrunner.dev/network": "connect=127.0.0.1:9",
            }),
            "{flavour}"
        );
        assert_eq!(
            manifest["annotations"],
            serde_json::json!({"wasmrunner.dev/env": "APP_NAME"}),
            "{flavour}"
        );
        let inspection = inspect_archive(&archive[..]).expect("inspectable");
        let inspected = inspection.manifests().next().expect("a manifest");
        assert_eq!(
            inspected
                .annotations
                .get("wasmrunner.dev/env")
                .map(String::as_str),
            Some("APP_NAME")
        );
        let labels = &inspected.config.as_ref().expect("config").labels;
        assert_eq!(labels.len(), 2, "{labels:?}");
        assert!(
            inspection
                .to_string()
                .contains("label wasmrunner.dev/network=connect=127.0.0.1:9")
        );
    }
    // Without any, neither key is written.
    let plain = build(&ImageSpec::new(NAME, Flavour::Image).file("/hello.wasm", MODULE));
    let (manifest, config) = check_layout(&plain, &Platform::host_linux());
    assert!(manifest.get("annotations").is_none(), "{manifest}");
    assert!(config["config"].get("Labels").is_none(), "{config}");
    // The CNCF config has no labels: refused rather than dropped.
    let cncf = ImageSpec::new(NAME, Flavour::CncfArtifact)
        .file("/hello.wasm", MODULE)
        .label("wasmrunner.dev/env", "APP_NAME");
    let mut out = Vec::new();
    assert!(matches!(
        build_archive(&cncf, &mut out),
        Err(OciError::NoConfigLabels { .. })
    ));
}

#[test]
fn runwasi_flavour_has_one_raw_wasm_layer_per_file() {
    let spec = ImageSpec::new(NAME, Flavour::RunwasiArtifact)
        .file("/hello.wasm", MODULE)
        .file("/lib/component.wasm", COMPONENT)
        .entrypoint(["/hello.wasm"]);
    let archive = build(&spec);
    let platform = Platform::new("wasi", "wasm");
    let (manifest, config) = check_layout(&archive, &platform);

    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2);
    let wasm_type = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
    assert!(layers.iter().all(|l| l["mediaType"] == wasm_type));
    assert_eq!(layers[0]["digest"], sha256(MODULE));
    assert_eq!(layers[1]["digest"], sha256(COMPONENT));
    assert_eq!(config["os"], "wasi");
    assert_eq!(config["architecture"], "wasm");
    // Wasm layers are not filesystem layers: containerd skips them on unpack and expects no
    // diff ID for them.
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!([]));
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/hello.wasm"])
    );

    let inspection = inspect_archive(&archive[..]).expect("inspectable");
    let inspected = inspection.manifests().next().expect("a manifest");
    assert_eq!(inspected.platform.as_ref(), Some(&platform));
    let kinds: Vec<_> = inspected.layers.iter().map(|l| l.wasm).collect();
    assert_eq!(kinds, [Some(WasmKind::Module), Some(WasmKind::Component)]);
    let text = inspection.to_string();
    assert!(text.starts_with(&format!("image {NAME}\n")), "{text}");
    assert!(text.contains("(wasi/wasm)"), "{text}");
    assert!(text.contains("entrypoint [\"/hello.wasm\"]"), "{text}");
    assert!(
        text.contains(&format!(
            "layer {wasm_type} 8 bytes {} (wasm module)",
            sha256(MODULE)
        )),
        "{text}"
    );
    assert!(text.contains("(wasm component)"), "{text}");
}

#[test]
fn cncf_flavour_follows_the_wasm_artifact_layout() {
    let module = ImageSpec::new(NAME, Flavour::CncfArtifact).file("/hello.wasm", MODULE);
    let archive = build(&module);
    let (manifest, config) = check_layout(&archive, &Platform::new("wasip1", "wasm"));
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(layers[0]["digest"], sha256(MODULE));
    assert_eq!(config["os"], "wasip1");
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["author"], "wasmrunner");
    assert!(config["created"].is_string());
    assert_eq!(config["layerDigests"], serde_json::json!([sha256(MODULE)]));
    assert!(config.get("component").is_none());

    let component = ImageSpec::new(NAME, Flavour::CncfArtifact).file("/hello.wasm", COMPONENT);
    let archive = build(&component);
    let (_, config) = check_layout(&archive, &Platform::new("wasip2", "wasm"));
    assert_eq!(config["os"], "wasip2");
    assert_eq!(
        config["component"],
        serde_json::json!({"exports": [], "imports": []})
    );

    let inspection = inspect_archive(&archive[..]).expect("inspectable");
    let inspected = inspection.manifests().next().expect("a manifest");
    let inspected_config = inspected.config.as_ref().expect("config");
    assert_eq!(
        inspected_config.media_type,
        "application/vnd.wasm.config.v0+json"
    );
    assert!(inspected_config.component);
    assert_eq!(inspected_config.entrypoint, None);
    assert_eq!(inspected_config.layer_ids, [sha256(COMPONENT)]);
    assert_eq!(inspected.layers[0].wasm, Some(WasmKind::Component));
}

#[test]
fn cncf_rejects_non_wasm_files() {
    let spec = ImageSpec::new(NAME, Flavour::CncfArtifact)
        .file("/hello.wasm", MODULE)
        .file("/README", b"not wasm".to_vec());
    let mut out = Vec::new();
    let error = build_archive(&spec, &mut out).expect_err("non-wasm file must be rejected");
    assert!(
        matches!(&error, OciError::NotWasm { path, flavour: "cncf" } if path == "/README"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "/README is not a wasm binary; the cncf flavour only holds wasm files"
    );
}

#[test]
fn builds_are_byte_identical() {
    for flavour in Flavour::ALL {
        let spec = ImageSpec::new(NAME, flavour)
            .file("/a/hello.wasm", MODULE)
            .file("/b.wasm", COMPONENT)
            .entrypoint(["/a/hello.wasm"])
            .env(["A=1", "B=2"]);
        let first = build(&spec);
        let second = build(&spec);
        assert!(first == second, "{flavour} builds differ");
    }
}

#[test]
fn summary_matches_the_archive() {
    let spec = ImageSpec::new(NAME, Flavour::RunwasiArtifact)
        .file("/hello.wasm", MODULE)
        .file("/data.txt", b"data".to_vec())
        .entrypoint(["/hello.wasm"]);
    let path = temp_path("summary.tar");
    let summary = write_archive(&spec, &path).expect("written");
    let archive = std::fs::read(&path).expect("archive exists");
    std::fs::remove_file(&path).expect("cleanup");

    assert_eq!(archive, build(&spec));
    assert_eq!(summary.name, NAME);
    assert_eq!(summary.flavour, Flavour::RunwasiArtifact);
    assert_eq!(summary.platform, Platform::new("wasi", "wasm"));
    let files = tar_files(&archive);
    let index = json(&files["index.json"]);
    assert_eq!(
        index["manifests"][0]["digest"],
        summary.manifest.digest.as_str()
    );
    // Plain files go into a tar layer ahead of the wasm layer.
    let types: Vec<&str> = summary
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
        ]
    );
    assert_eq!(summary.layers[1].digest, sha256(MODULE));
    for blob in summary
        .layers
        .iter()
        .chain([&summary.config, &summary.manifest])
    {
        let bytes = &files[&common::blob_path(&blob.digest)];
        assert_eq!(sha256(bytes), blob.digest);
        assert_eq!(bytes.len() as u64, blob.size);
    }
}

#[test]
fn explicit_platform_is_used_everywhere() {
    let spec = ImageSpec::new(NAME, Flavour::Image)
        .file("/hello.wasm", MODULE)
        .platform(Platform::new("linux", "arm64"));
    let archive = build(&spec);
    let (_, config) = check_layout(&archive, &Platform::new("linux", "arm64"));
    assert_eq!(config["architecture"], "arm64");
}

#[test]
fn write_archive_reports_the_path_on_failure() {
    let spec = ImageSpec::new(NAME, Flavour::Image).file("/hello.wasm", MODULE);
    let path = temp_path("missing-dir").join("out.tar");
    let error = write_archive(&spec, &path).expect_err("directory does not exist");
    assert!(
        error
            .to_string()
            .starts_with(&format!("writing {}: ", path.display())),
        "{error}"
    );
}
