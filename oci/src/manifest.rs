//! The image manifest blob.

use oci_spec::image::{ImageManifestBuilder, MediaType, SCHEMA_VERSION};

use crate::blob::Blob;
use crate::error::OciError;
use crate::json::to_canonical_vec;
use crate::media_types::WASM_CONFIG;
use crate::spec::{Flavour, ImageSpec};

/// Builds the manifest of `spec` referencing `config` and `layers`, with the spec's
/// annotations.
pub(crate) fn build_manifest(
    spec: &ImageSpec,
    config: &Blob,
    layers: &[Blob],
) -> Result<Blob, OciError> {
    let mut builder = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor())
        .layers(layers.iter().map(Blob::descriptor).collect::<Vec<_>>());
    if spec.flavour == Flavour::CncfArtifact {
        builder = builder.artifact_type(MediaType::Other(WASM_CONFIG.to_owned()));
    }
    if !spec.annotations.is_empty() {
        builder = builder.annotations(
            spec.annotations
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    let manifest = builder.build()?;
    Blob::new(
        MediaType::ImageManifest,
        to_canonical_vec(&manifest, "image manifest")?,
    )
}
