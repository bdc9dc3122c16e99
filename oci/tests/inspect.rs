//! `inspect_archive` on hand-made layouts like those `ctr image export` writes.

mod common;

use common::{COMPONENT, MODULE, make_tar, sha256};
use serde_json::json;
use wasmrunner_oci::{OciError, Platform, WasmKind, inspect_archive};

fn blob_entry(bytes: &[u8]) -> (String, Vec<u8>) {
    (common::blob_path(&sha256(bytes)), bytes.to_vec())
}

fn to_bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serializable")
}

/// An index.json → index → two manifests (one of them absent) layout, as exported
/// from containerd for a multi-platform image, without manifest.json and with
/// `./`-prefixed paths.
#[test]
fn follows_nested_indexes_to_every_manifest() {
    let config = to_bytes(&json!({
        "architecture": "wasm",
        "os": "wasi",
        "config": {"Entrypoint": ["/app.wasm"], "Env": ["A=1"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(COMPONENT)]}
    }));
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(&config),
            "size": config.len()
        },
        "layers": [{
            "mediaType": "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
            "digest": sha256(COMPONENT),
            "size": COMPONENT.len()
        }]
    }));
    let absent_manifest_digest = sha256(b"not in the archive");
    let nested = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(&manifest),
                "size": manifest.len(),
                "platform": {"os": "wasi", "architecture": "wasm"}
            },
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": absent_manifest_digest,
                "size": 18,
                "platform": {"os": "linux", "architecture": "arm64"}
            }
        ]
    }));
    let index = to_bytes(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha256(&nested),
            "size": nested.len(),
            "annotations": {
                "io.containerd.image.name": "ghcr.io/example/app:2",
                "org.opencontainers.image.ref.name": "2"
            }
        }]
    }));
    let blobs = [
        blob_entry(&config),
        blob_entry(&manifest),
        blob_entry(&nested),
        blob_entry(COMPONENT),
    ];
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        (
            "./oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("./index.json".to_owned(), index),
    ];
    entries.extend(
        blobs
            .into_iter()
            .map(|(path, bytes)| (format!("./{path}"), bytes)),
    );
    let entries: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(path, bytes)| (path.as_str(), bytes.as_slice()))
        .collect();
    let archive = make_tar(&entries);

    let inspection = inspect_archive(&archive[..]).expect("inspectable");
    assert_eq!(inspection.names(), ["ghcr.io/example/app:2"]);
    assert!(inspection.repo_tags.is_empty());
    let image = &inspection.images[0];
    assert_eq!(image.indexes.len(), 1);
    assert_eq!(image.indexes[0].digest, sha256(&nested));
    assert_eq!(image.indexes[0].manifests, 2);
    assert_eq!(image.manifests.len(), 2);

    let present = &image.manifests[0];
    assert!(present.in_archive);
    assert_eq!(present.digest, sha256(&manifest));
    assert_eq!(present.platform, Some(Platform::new("wasi", "wasm")));
    let config = present.config.as_ref().expect("config");
    assert_eq!(
        config.entrypoint.as_deref(),
        Some(&["/app.wasm".to_owned()][..])
    );
    assert_eq!(config.env.as_deref(), Some(&["A=1".to_owned()][..]));
    assert_eq!(config.cmd, None);
    assert_eq!(present.layers.len(), 1);
    assert_eq!(present.layers[0].wasm, Some(WasmKind::Component));
    assert_eq!(present.layers[0].size, COMPONENT.len() as u64);

    let absent = &image.manifests[1];
    assert!(!absent.in_archive);
    assert_eq!(absent.digest, absent_manifest_digest);
    assert_eq!(absent.platform, Some(Platform::new("linux", "arm64")));
    assert!(absent.config.is_none());

    let text = inspection.to_string();
    assert!(
        text.contains(&format!("  index {} (2 entries)", sha256(&nested))),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "  manifest {absent_manifest_digest} (linux/arm64) not in archive"
        )),
        "{text}"
    );

    let as_json = serde_json::to_value(&inspection).expect("serializable");
    assert_eq!(
        as_json["images"][0]["manifests"][0]["layers"][0]["wasm"],
        "component"
    );
}

#[test]
fn detects_tampered_blobs() {
    let layer = MODULE;
    let config = br#"{"architecture":"wasm","os":"wasi","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(config),
            "size": config.len()
        },
        "layers": [{
            "mediaType": "application/wasm",
            "digest": sha256(layer),
            "size": layer.len()
        }]
    }));
    let index = to_bytes(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len()
        }]
    }));
    let layer_path = common::blob_path(&sha256(layer));
    let config_path = common::blob_path(&sha256(config));
    let manifest_path = common::blob_path(&sha256(&manifest));
    let tampered: &[u8] = b"\0asm\x01\0\0\0tampered";
    let archive = make_tar(&[
        ("index.json", &index),
        (&manifest_path, &manifest),
        (&config_path, config),
        (&layer_path, tampered),
    ]);
    let error = inspect_archive(&archive[..]).expect_err("tampered blob");
    assert!(
        matches!(&error, OciError::DigestMismatch { digest, actual }
            if *digest == sha256(layer) && *actual == sha256(tampered)),
        "{error:?}"
    );

    // The same archive with the right layer inspects fine; unnamed images are reported so.
    let archive = make_tar(&[
        ("index.json", &index),
        (&manifest_path, &manifest),
        (&config_path, config),
        (&layer_path, layer),
    ]);
    let inspection = inspect_archive(&archive[..]).expect("inspectable");
    assert!(inspection.names().is_empty());
    let manifest = inspection.manifests().next().expect("manifest");
    // No platform on the descriptor: it comes from the config.
    assert_eq!(manifest.platform, Some(Platform::new("wasi", "wasm")));
    assert!(
        inspection
            .to_string()
            .starts_with("image (unnamed) sha256:")
    );
}

#[test]
fn rejects_archives_without_an_index() {
    let archive = make_tar(&[("hello.txt", b"hi")]);
    let error = inspect_archive(&archive[..]).expect_err("not a layout");
    assert!(matches!(error, OciError::InvalidArchive(_)), "{error:?}");
    assert!(inspect_archive(&b"not a tar at all"[..]).is_err());
}

#[test]
fn missing_config_is_an_error() {
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha256(b"{}"),
            "size": 2
        },
        "layers": []
    }));
    let index = to_bytes(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len()
        }]
    }));
    let manifest_path = common::blob_path(&sha256(&manifest));
    let archive = make_tar(&[("index.json", &index), (&manifest_path, &manifest)]);
    let error = inspect_archive(&archive[..]).expect_err("config missing");
    assert!(
        matches!(&error, OciError::MissingBlob(digest) if *digest == sha256(b"{}")),
        "{error:?}"
    );
}
