//! Following `index.json` → (index →)* manifest → config and layers.

use std::collections::BTreeMap;
use std::io::Read;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::model::{
    InspectedConfig, InspectedImage, InspectedIndex, InspectedLayer, InspectedManifest,
    InspectedWasmFile, Inspection,
};
use super::store::ArchiveFiles;
use crate::error::OciError;
use crate::media_types::{
    CONTAINERD_IMAGE_NAME, DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_REF_NAME,
    WASM_CONFIG, is_plain_tar_layer,
};
use crate::spec::Platform;
use crate::wasm::WasmKind;

/// How many indexes may be nested below `index.json`.
const MAX_INDEX_DEPTH: usize = 8;

pub(crate) fn inspect_files(files: &ArchiveFiles) -> Result<Inspection, OciError> {
    let index_bytes = files.get("index.json").ok_or_else(|| {
        OciError::InvalidArchive("no index.json: not an OCI image layout".to_owned())
    })?;
    let index: ImageIndex = parse(index_bytes, "index.json")?;
    let images = index
        .manifests()
        .iter()
        .map(|descriptor| inspect_image(files, descriptor))
        .collect::<Result<_, _>>()?;
    Ok(Inspection {
        images,
        repo_tags: docker_repo_tags(files)?,
    })
}

fn inspect_image(
    files: &ArchiveFiles,
    descriptor: &Descriptor,
) -> Result<InspectedImage, OciError> {
    let mut image = InspectedImage {
        names: names_of(descriptor),
        media_type: descriptor.media_type().to_string(),
        digest: descriptor.digest().to_string(),
        indexes: Vec::new(),
        manifests: Vec::new(),
    };
    visit(files, descriptor, 0, &mut image)?;
    Ok(image)
}

fn names_of(descriptor: &Descriptor) -> Vec<String> {
    let Some(annotations) = descriptor.annotations() else {
        return Vec::new();
    };
    [CONTAINERD_IMAGE_NAME, OCI_REF_NAME]
        .into_iter()
        .find_map(|key| annotations.get(key))
        .map(|name| vec![name.clone()])
        .unwrap_or_default()
}

fn visit(
    files: &ArchiveFiles,
    descriptor: &Descriptor,
    depth: usize,
    image: &mut InspectedImage,
) -> Result<(), OciError> {
    let media_type = descriptor.media_type().as_ref();
    if *descriptor.media_type() == MediaType::ImageIndex || media_type == DOCKER_MANIFEST_LIST {
        if depth >= MAX_INDEX_DEPTH {
            return Err(OciError::InvalidArchive(format!(
                "indexes nested more than {MAX_INDEX_DEPTH} deep"
            )));
        }
        let digest = descriptor.digest();
        let index: ImageIndex = parse(files.required_blob(digest)?, &format!("index {digest}"))?;
        image.indexes.push(InspectedIndex {
            digest: digest.to_string(),
            media_type: media_type.to_owned(),
            manifests: index.manifests().len(),
        });
        for child in index.manifests() {
            visit(files, child, depth + 1, image)?;
        }
        Ok(())
    } else if *descriptor.media_type() == MediaType::ImageManifest || media_type == DOCKER_MANIFEST
    {
        image.manifests.push(inspect_manifest(files, descriptor)?);
        Ok(())
    } else {
        Err(OciError::InvalidArchive(format!(
            "descriptor {} has media type {media_type}, which is neither an index nor a manifest",
            descriptor.digest()
        )))
    }
}

fn inspect_manifest(
    files: &ArchiveFiles,
    descriptor: &Descriptor,
) -> Result<InspectedManifest, OciError> {
    let digest = descriptor.digest();
    let descriptor_platform = descriptor
        .platform()
        .as_ref()
        .map(|p| Platform::new(p.os().to_string(), p.architecture().to_string()));
    let mut inspected = InspectedManifest {
        digest: digest.to_string(),
        media_type: descriptor.media_type().to_string(),
        size: descriptor.size(),
        platform: descriptor_platform,
        in_archive: false,
        artifact_type: None,
        annotations: BTreeMap::new(),
        config: None,
        layers: Vec::new(),
    };
    let Some(bytes) = files.blob(digest)? else {
        return Ok(inspected);
    };
    let manifest: ImageManifest = parse(bytes, &format!("manifest {digest}"))?;
    let config = inspect_config(files, manifest.config())?;
    if inspected.platform.is_none()
        && let (Some(os), Some(architecture)) = (&config.os, &config.architecture)
    {
        inspected.platform = Some(Platform::new(os, architecture));
    }
    inspected.in_archive = true;
    inspected.artifact_type = manifest.artifact_type().as_ref().map(|t| t.to_string());
    inspected.annotations = manifest
        .annotations()
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    inspected.config = Some(config);
    inspected.layers = manifest
        .layers()
        .iter()
        .map(|layer| inspect_layer(files, layer))
        .collect::<Result<_, _>>()?;
    Ok(inspected)
}

fn inspect_config(
    files: &ArchiveFiles,
    descriptor: &Descriptor,
) -> Result<InspectedConfig, OciError> {
    let digest = descriptor.digest();
    let bytes = files.required_blob(digest)?;
    let media_type = descriptor.media_type().as_ref();
    let mut config = InspectedConfig {
        media_type: media_type.to_owned(),
        digest: digest.to_string(),
        size: descriptor.size(),
        os: None,
        architecture: None,
        entrypoint: None,
        cmd: None,
        env: None,
        labels: BTreeMap::new(),
        layer_ids: Vec::new(),
        component: false,
    };
    let context = format!("config {digest}");
    if *descriptor.media_type() == MediaType::ImageConfig || media_type == DOCKER_CONFIG {
        let image: ImageConfiguration = parse(bytes, &context)?;
        config.os = Some(image.os().to_string());
        config.architecture = Some(image.architecture().to_string());
        if let Some(runtime) = image.config() {
            config.entrypoint = runtime.entrypoint().clone();
            config.cmd = runtime.cmd().clone();
            config.env = runtime.env().clone();
            config.labels = runtime
                .labels()
                .iter()
                .flatten()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
        }
        config.layer_ids = image.rootfs().diff_ids().clone();
    } else if media_type == WASM_CONFIG {
        let wasm: WasmConfigView = parse(bytes, &context)?;
        config.os = wasm.os;
        config.architecture = wasm.architecture;
        config.layer_ids = wasm.layer_digests;
        config.component = wasm.component.is_some();
    }
    Ok(config)
}

/// The parts of a CNCF wasm config that are reported.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfigView {
    os: Option<String>,
    architecture: Option<String>,
    #[serde(default)]
    layer_digests: Vec<String>,
    component: Option<serde_json::Value>,
}

fn inspect_layer(
    files: &ArchiveFiles,
    descriptor: &Descriptor,
) -> Result<InspectedLayer, OciError> {
    let media_type = descriptor.media_type().to_string();
    let blob = files.blob(descriptor.digest())?;
    let wasm_files = match blob {
        Some(bytes) if is_plain_tar_layer(&media_type) => wasm_files_in_tar(bytes),
        _ => Vec::new(),
    };
    Ok(InspectedLayer {
        size: descriptor.size(),
        digest: descriptor.digest().to_string(),
        in_archive: blob.is_some(),
        wasm: blob.and_then(WasmKind::detect),
        wasm_files,
        media_type,
    })
}

/// Wasm binaries among the regular files of a tar layer. A layer that is not a
/// readable tar yields what could be read before the error.
fn wasm_files_in_tar(bytes: &[u8]) -> Vec<InspectedWasmFile> {
    let mut found = Vec::new();
    let mut archive = tar::Archive::new(bytes);
    let Ok(entries) = archive.entries() else {
        return found;
    };
    for entry in entries {
        let Ok(entry) = entry else { break };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.size();
        let Ok(path) = entry.path().map(|p| p.to_string_lossy().into_owned()) else {
            continue;
        };
        let mut header = Vec::with_capacity(8);
        if entry.take(8).read_to_end(&mut header).is_err() {
            break;
        }
        if let Some(kind) = WasmKind::detect(&header) {
            let path = format!("/{}", path.trim_start_matches("./").trim_start_matches('/'));
            found.push(InspectedWasmFile { path, size, kind });
        }
    }
    found
}

/// `RepoTags` of every entry of a docker-style `manifest.json`, if there is one.
fn docker_repo_tags(files: &ArchiveFiles) -> Result<Vec<String>, OciError> {
    #[derive(Deserialize)]
    struct Entry {
        #[serde(rename = "RepoTags", default)]
        repo_tags: Option<Vec<String>>,
    }
    let Some(bytes) = files.get("manifest.json") else {
        return Ok(Vec::new());
    };
    let entries: Vec<Entry> = parse(bytes, "manifest.json")?;
    Ok(entries
        .into_iter()
        .flat_map(|entry| entry.repo_tags.unwrap_or_default())
        .collect())
}

fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|e| OciError::json(format!("parsing {what}"), e))
}
