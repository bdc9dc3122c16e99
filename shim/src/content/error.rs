//! What can go wrong between the shim and containerd's content store.

use containerd_client::tonic::{Code, Status};

/// An error from [`ContentStore`](super::ContentStore). Each message names the container,
/// image or digest involved, so it can be shown to the user as it is.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The containerd gRPC socket could not be reached.
    #[error("cannot connect to containerd at {address}: {reason}")]
    Connect { address: String, reason: String },

    /// The namespace cannot be sent as gRPC metadata.
    #[error("invalid containerd namespace {namespace:?}: it must be printable ASCII")]
    InvalidNamespace { namespace: String },

    /// containerd has no container with this id in the namespace.
    #[error("container {id:?} does not exist in containerd namespace {namespace:?}")]
    ContainerNotFound { id: String, namespace: String },

    /// The container's image is not (or no longer) in containerd's image store.
    #[error(
        "image {image:?} of container {container:?} does not exist in containerd namespace {namespace:?}"
    )]
    ImageNotFound {
        image: String,
        container: String,
        namespace: String,
    },

    /// The image record has no target descriptor.
    #[error("image {image:?} has no target in containerd's image store")]
    MissingTarget { image: String },

    /// A blob the image refers to is not in the content store.
    #[error("{what} ({digest}) is not in containerd's content store")]
    ContentNotFound { what: String, digest: String },

    /// A digest (from an image record, a descriptor or a label) does not parse.
    #[error("invalid digest {digest:?} in {what}: {reason}")]
    InvalidDigest {
        what: String,
        digest: String,
        reason: String,
    },

    /// A manifest or index blob does not parse.
    #[error("{what} ({digest}) is not a valid {kind}: {reason}")]
    InvalidDocument {
        what: String,
        digest: String,
        kind: &'static str,
        reason: String,
    },

    /// The image target is neither a manifest nor an index.
    #[error(
        "{what} ({digest}) has media type {media_type:?}, which is neither an image manifest nor an index"
    )]
    UnsupportedDocument {
        what: String,
        digest: String,
        media_type: String,
    },

    /// An index has entries for wasm or this host, but containerd fetched none of their
    /// manifests (a pull for another platform).
    #[error(
        "image {image:?}: containerd's content store holds none of the manifests of index {index} that this shim can run: {entries}; pull the image for this platform or for wasi/wasm"
    )]
    NoManifestInStore {
        image: String,
        index: String,
        entries: String,
    },

    /// Indexes nested in indexes beyond reason.
    #[error("image {image:?}: indexes are nested more than {max} deep")]
    IndexTooDeep { image: String, max: usize },

    /// A blob read back from the store has another size than its descriptor says.
    #[error("{what} ({digest}) is {actual} bytes, but its descriptor says {expected}")]
    SizeMismatch {
        what: String,
        digest: String,
        expected: u64,
        actual: u64,
    },

    /// A blob read back from the store does not hash to its digest: it is not used (its code
    /// would run in containers).
    #[error("{what}: the content store returned bytes whose digest is {actual}, not {digest}")]
    DigestMismatch {
        what: String,
        digest: String,
        actual: String,
    },

    /// The engine's compiler broke the `Compiler::compile` contract.
    #[error("the {engine} compiler returned {got} results for {expected} layers")]
    CompilerContract {
        engine: String,
        expected: usize,
        got: usize,
    },

    /// containerd answered a write in a way the protocol does not allow.
    #[error("writing {digest} to containerd's content store: {reason}")]
    Write { digest: String, reason: String },

    /// Any other failed containerd call.
    #[error("containerd could not {action}: {message} ({code:?})")]
    Rpc {
        action: String,
        code: Code,
        message: String,
    },
}

impl ContentError {
    /// A failed call, described by what it was trying to do.
    pub(crate) fn rpc(action: impl Into<String>, status: &Status) -> Self {
        Self::Rpc {
            action: action.into(),
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// `err` and its sources, joined with ": ".
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
