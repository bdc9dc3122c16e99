//! Reading an OCI image layout tar back and describing what it holds.

mod display;
mod model;
mod store;

pub(crate) use store::ArchiveFiles;
mod walk;

use std::io::Read;

pub use model::{
    InspectedConfig, InspectedImage, InspectedIndex, InspectedLayer, InspectedManifest,
    InspectedWasmFile, Inspection,
};

use crate::error::OciError;

/// Reads an OCI image layout tar (ours, or one from `ctr image export`) and
/// reports its images, manifests, configs and layers. Blobs are checked against
/// their sha256 digests.
pub fn inspect_archive(reader: impl Read) -> Result<Inspection, OciError> {
    let files = store::ArchiveFiles::read(reader)?;
    walk::inspect_files(&files)
}
