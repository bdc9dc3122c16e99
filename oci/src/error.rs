//! The library's error type.

use std::io;

/// Everything that can go wrong while building or inspecting an archive.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// An I/O operation failed; `context` says what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// The image reference is empty or contains characters that cannot be used.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// A flavour name that is not one of `image`, `cncf`, `runwasi`.
    #[error("unknown flavour {0:?} (expected image, cncf or runwasi)")]
    UnknownFlavour(String),

    /// A platform string that is not `os/arch`.
    #[error("invalid platform {0:?} (expected os/arch, e.g. linux/amd64)")]
    InvalidPlatform(String),

    /// A path inside the image that is not absolute and normalized.
    #[error("invalid path in image {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    /// Two files (or a file and a directory) claim the same path.
    #[error("path {0:?} is used more than once in the image")]
    DuplicatePath(String),

    /// The spec holds no files at all.
    #[error("the image has no files")]
    NoFiles,

    /// An artifact flavour needs at least one wasm binary.
    #[error("the {flavour} flavour needs at least one wasm binary")]
    NoWasmFiles { flavour: &'static str },

    /// A non-wasm file was given to a flavour that only holds wasm layers.
    #[error("{path} is not a wasm binary; the {flavour} flavour only holds wasm files")]
    NotWasm { path: String, flavour: &'static str },

    /// Labels were given for a flavour whose config has no `Labels` (the CNCF artifact's).
    #[error("the {flavour} flavour's config has no labels; use manifest annotations")]
    NoConfigLabels { flavour: &'static str },

    /// A label or annotation with an empty key.
    #[error("a label or annotation key is empty")]
    EmptyKey,

    /// An `oci-spec` builder or parser rejected a value.
    #[error("OCI structure: {0}")]
    Spec(#[from] oci_spec::OciSpecError),

    /// JSON (de)serialization failed; `context` names the document.
    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },

    /// The archive is not an OCI image layout we understand.
    #[error("invalid archive: {0}")]
    InvalidArchive(String),

    /// A descriptor points to a blob that is not in the archive.
    #[error("blob {0} is referenced but not in the archive")]
    MissingBlob(String),

    /// A blob's content does not match its digest.
    #[error("blob {digest} has content with digest {actual}")]
    DigestMismatch { digest: String, actual: String },

    /// `ctr` could not be started.
    #[error("running {program}: {source}")]
    CtrSpawn {
        program: String,
        #[source]
        source: io::Error,
    },

    /// `ctr` ran but failed.
    #[error("{command} failed ({status}): {stderr}")]
    CtrFailed {
        command: String,
        status: String,
        stderr: String,
    },
}

impl OciError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            context: context.into(),
            source,
        }
    }
}
