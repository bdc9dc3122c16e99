//! The image manifest blob.

use oci_spec::image::{ImageManifestBuilder, MediaType, SCHEMA_VERSION};

use crate::blob::Blob;
use crate::error::OciError;
use crate::json::to_canonical_vec;
use crate::media_types::WASM_CONFIG;
use crate::spec::Flavour;

/// Builds the manifest referencing `config` and `layers`.
pub(crate) fn build_manifest(
    flavour: Flavour,
    config: &Blob,
    layers: &[Blob],
) -> Result<Blob, OciError> {
    let mut builder = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(config.descriptor())
        .layers(layers.iter().map(Blob::descriptor).collect::<Vec<_>>());
    if flavour == Flavour::CncfArtifact {
        builder = builder.artifact_type(MediaType::Other(WASM_CONFIG.to_owned()));
    }
    let manifest = builder.build()?;
    Blob::new(
        MediaType::ImageManifest,
        to_canonical_vec(&manifest, "image manifest")?,
    )
}
