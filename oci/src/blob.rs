//! Content-addressed blobs: bytes with their sha256 digest and media type.

use oci_spec::image::{Descriptor, Digest, MediaType, Sha256Digest};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::error::OciError;

/// Hex-encoded sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// Path of a blob inside an OCI image layout.
pub(crate) fn layout_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.digest())
}

/// A blob ready to be written into the layout.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    pub media_type: MediaType,
    pub bytes: Vec<u8>,
    pub digest: Digest,
    /// What the descriptor says the size is, when it is not the real one (a broken image
    /// built on purpose).
    pub declared_size: Option<u64>,
}

impl Blob {
    pub fn new(media_type: MediaType, bytes: Vec<u8>) -> Result<Self, OciError> {
        let hex: Sha256Digest = sha256_hex(&bytes).parse()?;
        Ok(Self {
            media_type,
            bytes,
            digest: hex.into(),
            declared_size: None,
        })
    }

    pub fn size(&self) -> u64 {
        // usize always fits in u64 on supported targets.
        self.bytes.len() as u64
    }

    /// A plain descriptor (media type, digest, size) for this blob; the size is the declared
    /// one if there is one.
    pub fn descriptor(&self) -> Descriptor {
        let size = self.declared_size.unwrap_or_else(|| self.size());
        Descriptor::new(self.media_type.clone(), size, self.digest.clone())
    }

    pub fn layout_path(&self) -> String {
        layout_path(&self.digest)
    }

    pub fn summary(&self) -> BlobSummary {
        BlobSummary {
            media_type: self.media_type.to_string(),
            digest: self.digest.to_string(),
            size: self.size(),
        }
    }
}

/// Media type, digest and size of a blob that was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobSummary {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn blob_descriptor_and_path() {
        let blob = Blob::new(MediaType::EmptyJSON, b"{}".to_vec()).expect("valid blob");
        let hex = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(blob.layout_path(), format!("blobs/sha256/{hex}"));
        let descriptor = blob.descriptor();
        assert_eq!(descriptor.size(), 2);
        assert_eq!(descriptor.digest().to_string(), format!("sha256:{hex}"));
        assert_eq!(descriptor.media_type(), &MediaType::EmptyJSON);
    }
}
