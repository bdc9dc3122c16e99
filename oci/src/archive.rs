//! Writing the OCI image layout tar: `oci-layout`, `index.json`, blobs and a
//! docker-style `manifest.json`.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::Path;

use oci_spec::image::{
    DescriptorBuilder, ImageIndexBuilder, MediaType, OciLayoutBuilder, PlatformBuilder,
    SCHEMA_VERSION,
};
use serde::Serialize;

use crate::blob::{Blob, BlobSummary};
use crate::config::build_config;
use crate::error::OciError;
use crate::json::to_canonical_vec;
use crate::layers::build_layers;
use crate::manifest::build_manifest;
use crate::media_types::{CONTAINERD_IMAGE_NAME, OCI_REF_NAME};
use crate::reference::tag_of;
use crate::spec::{Flavour, ImageSpec, Platform};
use crate::tarball::TarWriter;

/// Mode of the files in the archive itself.
const ARCHIVE_FILE_MODE: u32 = 0o644;

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveSummary {
    pub name: String,
    pub flavour: Flavour,
    pub platform: Platform,
    pub manifest: BlobSummary,
    pub config: BlobSummary,
    pub layers: Vec<BlobSummary>,
}

/// Builds the archive for `spec` and writes it to `out`.
pub fn build_archive(spec: &ImageSpec, out: &mut impl Write) -> Result<ArchiveSummary, OciError> {
    spec.validate()?;
    let platform = spec.effective_platform();
    let layers = build_layers(spec)?;
    let config = build_config(spec, &platform, &layers)?;
    let manifest = build_manifest(spec, &config, &layers)?;

    let mut tar = TarWriter::new(out);
    tar.file("oci-layout", ARCHIVE_FILE_MODE, &oci_layout()?)?;
    tar.dir("blobs")?;
    tar.dir("blobs/sha256")?;
    let mut written = BTreeSet::new();
    for blob in layers.iter().chain([&config, &manifest]) {
        // Identical files give identical layers; store each blob once.
        if written.insert(blob.digest.to_string()) {
            tar.file(&blob.layout_path(), ARCHIVE_FILE_MODE, &blob.bytes)?;
        }
    }
    let index = index_json(&spec.name, &platform, &manifest)?;
    tar.file("index.json", ARCHIVE_FILE_MODE, &index)?;
    let docker = docker_manifest_json(&spec.name, &config, &layers)?;
    tar.file("manifest.json", ARCHIVE_FILE_MODE, &docker)?;
    tar.finish()?
        .flush()
        .map_err(|e| OciError::io("flushing archive", e))?;

    Ok(ArchiveSummary {
        name: spec.name.clone(),
        flavour: spec.flavour,
        platform,
        manifest: manifest.summary(),
        config: config.summary(),
        layers: layers.iter().map(Blob::summary).collect(),
    })
}

/// Builds the archive for `spec` into the file at `path`, which is only created
/// once the archive has been built completely.
pub fn write_archive(spec: &ImageSpec, path: &Path) -> Result<ArchiveSummary, OciError> {
    let mut bytes = Vec::new();
    let summary = build_archive(spec, &mut bytes)?;
    std::fs::write(path, bytes)
        .map_err(|e| OciError::io(format!("writing {}", path.display()), e))?;
    Ok(summary)
}

fn oci_layout() -> Result<Vec<u8>, OciError> {
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;
    to_canonical_vec(&layout, "oci-layout")
}

/// `index.json`: one manifest with its platform and the names `ctr import` uses.
fn index_json(name: &str, platform: &Platform, manifest: &Blob) -> Result<Vec<u8>, OciError> {
    let annotations: HashMap<String, String> = [
        (CONTAINERD_IMAGE_NAME.to_owned(), name.to_owned()),
        (OCI_REF_NAME.to_owned(), tag_of(name).to_owned()),
    ]
    .into_iter()
    .collect();
    let platform = PlatformBuilder::default()
        .os(platform.os.as_str())
        .architecture(platform.architecture.as_str())
        .build()?;
    let descriptor = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(manifest.digest.clone())
        .size(manifest.size())
        .platform(platform)
        .annotations(annotations)
        .build()?;
    let index = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor])
        .build()?;
    to_canonical_vec(&index, "index.json")
}

/// One entry of the docker `manifest.json` that older importers look for.
#[derive(Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn docker_manifest_json(name: &str, config: &Blob, layers: &[Blob]) -> Result<Vec<u8>, OciError> {
    let entries = [DockerManifestEntry {
        config: config.layout_path(),
        repo_tags: vec![name.to_owned()],
        layers: layers.iter().map(Blob::layout_path).collect(),
    }];
    to_canonical_vec(&entries, "manifest.json")
}
