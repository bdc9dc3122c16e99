//! What an inspection reports.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::spec::Platform;
use crate::wasm::WasmKind;

/// The images found in an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// One entry per descriptor of the top-level `index.json`.
    pub images: Vec<InspectedImage>,
    /// `RepoTags` of a docker-style `manifest.json`, when the archive has one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repo_tags: Vec<String>,
}

impl Inspection {
    /// All image names, in archive order.
    pub fn names(&self) -> Vec<&str> {
        self.images
            .iter()
            .flat_map(|image| image.names.iter().map(String::as_str))
            .collect()
    }

    /// Every manifest of every image.
    pub fn manifests(&self) -> impl Iterator<Item = &InspectedManifest> {
        self.images.iter().flat_map(|image| image.manifests.iter())
    }
}

/// A descriptor of the top-level index and the manifests it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectedImage {
    /// From the `io.containerd.image.name` annotation, or else
    /// `org.opencontainers.image.ref.name`.
    pub names: Vec<String>,
    pub media_type: String,
    pub digest: String,
    /// Nested indexes passed through on the way to the manifests.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<InspectedIndex>,
    pub manifests: Vec<InspectedManifest>,
}

/// A nested image index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectedIndex {
    pub digest: String,
    pub media_type: String,
    /// How many descriptors it lists.
    pub manifests: usize,
}

/// One image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectedManifest {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// From the descriptor pointing at the manifest, or else from the config.
    pub platform: Option<Platform>,
    /// False when the archive holds the descriptor but not the manifest itself
    /// (e.g. other platforms of an image exported without `--all-platforms`).
    pub in_archive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The manifest's `annotations`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub config: Option<InspectedConfig>,
    pub layers: Vec<InspectedLayer>,
}

/// The config blob of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectedConfig {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub os: Option<String>,
    pub architecture: Option<String>,
    /// Only for OCI (or docker) image configs.
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    /// `config.Labels` of an image config.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `rootfs.diff_ids` of an image config, or `layerDigests` of a wasm config.
    pub layer_ids: Vec<String>,
    /// Whether a wasm config describes a component.
    pub component: bool,
}

/// One layer of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectedLayer {
    pub media_type: String,
    pub size: u64,
    pub digest: String,
    pub in_archive: bool,
    /// The kind of wasm binary the blob is, when it is one.
    pub wasm: Option<WasmKind>,
    /// Wasm binaries inside an uncompressed tar layer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wasm_files: Vec<InspectedWasmFile>,
}

/// A wasm binary found inside a tar layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectedWasmFile {
    pub path: String,
    pub size: u64,
    pub kind: WasmKind,
}
