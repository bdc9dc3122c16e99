//! The files of an archive, read into memory and looked up by path or digest.

use std::collections::HashMap;
use std::io::Read;

use oci_spec::image::{Digest, DigestAlgorithm};

use crate::blob::{layout_path, sha256_digest};
use crate::error::OciError;

/// Regular files of a tar archive, keyed by normalized path (no `./` or `/` prefix).
pub(crate) struct ArchiveFiles {
    files: HashMap<String, Vec<u8>>,
}

impl ArchiveFiles {
    pub fn read(reader: impl Read) -> Result<Self, OciError> {
        let mut archive = tar::Archive::new(reader);
        let entries = archive
            .entries()
            .map_err(|e| OciError::io("reading archive", e))?;
        let mut files = HashMap::new();
        for entry in entries {
            let mut entry = entry.map_err(|e| OciError::io("reading archive entry", e))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry
                .path()
                .map_err(|e| OciError::io("reading archive entry path", e))?
                .to_string_lossy()
                .into_owned();
            let mut contents = Vec::new();
            entry
                .read_to_end(&mut contents)
                .map_err(|e| OciError::io(format!("reading {path} from archive"), e))?;
            files.insert(normalize(&path).to_owned(), contents);
        }
        Ok(Self { files })
    }

    /// The file at `path`, if present.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// The blob for `digest`, checked against it when it is a sha256 digest.
    /// `Ok(None)` when the archive does not hold it.
    pub fn blob(&self, digest: &Digest) -> Result<Option<&[u8]>, OciError> {
        let Some(bytes) = self.get(&layout_path(digest)) else {
            return Ok(None);
        };
        if *digest.algorithm() == DigestAlgorithm::Sha256 {
            let actual = sha256_digest(bytes);
            if actual != digest.to_string() {
                return Err(OciError::DigestMismatch {
                    digest: digest.to_string(),
                    actual,
                });
            }
        }
        Ok(Some(bytes))
    }

    /// Like [`Self::blob`], but a missing blob is an error.
    pub fn required_blob(&self, digest: &Digest) -> Result<&[u8], OciError> {
        self.blob(digest)?
            .ok_or_else(|| OciError::MissingBlob(digest.to_string()))
    }
}

fn normalize(mut path: &str) -> &str {
    loop {
        let trimmed = path.trim_start_matches('/');
        let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
        if trimmed == path {
            return path;
        }
        path = trimmed;
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalizes_prefixes() {
        assert_eq!(normalize("./index.json"), "index.json");
        assert_eq!(normalize("/./blobs/sha256/x"), "blobs/sha256/x");
        assert_eq!(normalize("oci-layout"), "oci-layout");
    }
}
