//! An image as a registry holds it, in memory: the documents (manifests and indexes) from the
//! leaves up to the root the tag names, and the blobs (configs and layers) they reference.
//! Built from OCI image-layout archives for a push, or from a pull; written back as an
//! archive that `ctr image import` and `wasm-oci inspect` read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::RegistryError;
use crate::blob::sha256_digest;
use crate::error::OciError;
use crate::inspect::ArchiveFiles;
use crate::json::to_canonical_vec;
use crate::media_types::{CONTAINERD_IMAGE_NAME, DOCKER_MANIFEST_LIST, OCI_REF_NAME};
use crate::reference::tag_of;
use crate::tarball::TarWriter;

/// The OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// How many indexes may be nested below the root.
const MAX_DEPTH: usize = 8;

/// A content descriptor: what a manifest or index says about what it references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    /// `os/arch` of the descriptor's platform, if it has one.
    pub fn platform_name(&self) -> Option<String> {
        let platform = self.platform.as_ref()?;
        let os = platform.get("os")?.as_str()?;
        let arch = platform.get("architecture")?.as_str()?;
        Some(format!("{os}/{arch}"))
    }

    fn without_annotations(&self) -> Self {
        Self {
            annotations: None,
            ..self.clone()
        }
    }
}

/// What a manifest or index references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Children {
    /// An index: the manifests (or indexes) it lists.
    Index(Vec<Descriptor>),
    /// A manifest: its config, then its layers.
    Manifest(Vec<Descriptor>),
}

/// A manifest or index with its bytes, exactly as pushed or pulled.
#[derive(Debug, Clone)]
pub struct Document {
    pub descriptor: Descriptor,
    pub bytes: Vec<u8>,
    pub children: Children,
}

impl Document {
    /// Parses `bytes` as the document `descriptor` names, after checking its digest and size.
    pub fn parse(descriptor: Descriptor, bytes: Vec<u8>) -> Result<Self, RegistryError> {
        check_blob(&descriptor, &bytes, "manifest")?;
        let bad = |reason: String| RegistryError::BadDocument {
            digest: descriptor.digest.clone(),
            reason,
        };
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let list = |key: &str| -> Result<Vec<Descriptor>, RegistryError> {
            match value.get(key) {
                None => Ok(Vec::new()),
                Some(items) => serde_json::from_value(items.clone())
                    .map_err(|e| bad(format!("bad {key} descriptors: {e}"))),
            }
        };
        let children = if value.get("manifests").is_some() {
            Children::Index(list("manifests")?)
        } else if let Some(config) = value.get("config") {
            let config: Descriptor = serde_json::from_value(config.clone())
                .map_err(|e| bad(format!("bad config descriptor: {e}")))?;
            Children::Manifest(std::iter::once(config).chain(list("layers")?).collect())
        } else {
            return Err(bad(
                "neither an image index nor an image manifest".to_owned()
            ));
        };
        Ok(Self {
            descriptor,
            bytes,
            children,
        })
    }

    pub fn is_index(&self) -> bool {
        matches!(self.children, Children::Index(_))
    }
}

/// Fails unless `bytes` has the size and sha256 digest `descriptor` declares.
pub(crate) fn check_blob(
    descriptor: &Descriptor,
    bytes: &[u8],
    what: &'static str,
) -> Result<(), RegistryError> {
    let actual = sha256_digest(bytes);
    if descriptor.digest.starts_with("sha256:") && actual != descriptor.digest {
        return Err(RegistryError::DigestMismatch {
            what,
            expected: descriptor.digest.clone(),
            actual,
        });
    }
    let size = bytes.len() as u64;
    if size != descriptor.size {
        return Err(RegistryError::SizeMismatch {
            digest: descriptor.digest.clone(),
            declared: descriptor.size,
            actual: size,
        });
    }
    Ok(())
}

/// A whole image: documents children first (the root, which a tag names, last) and blobs.
#[derive(Debug, Clone, Default)]
pub struct ImageContent {
    pub documents: Vec<Document>,
    pub blobs: HashMap<String, Vec<u8>>,
}

impl ImageContent {
    /// The document the tag names.
    pub fn root(&self) -> Option<&Document> {
        self.documents.last()
    }

    /// The platforms of the manifests an index root lists (`os/arch`), or the root's own.
    pub fn platforms(&self) -> Vec<String> {
        match self.root().map(|r| (&r.children, &r.descriptor)) {
            Some((Children::Index(children), _)) => children
                .iter()
                .filter_map(Descriptor::platform_name)
                .collect(),
            Some((_, descriptor)) => descriptor.platform_name().into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Bytes of all blobs (not documents).
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.values().map(|b| b.len() as u64).sum()
    }

    /// Reads the images of one or more archives. One archive naming one image gives that
    /// image; several images (in one archive's `index.json`, or one per archive) become the
    /// manifests of a new image index, each with its platform.
    pub fn from_archives(archives: Vec<impl Read>) -> Result<Self, RegistryError> {
        let mut content = Self::default();
        let mut tops = Vec::new();
        for reader in archives {
            let files = ArchiveFiles::read(reader)?;
            let index_bytes = files.get("index.json").ok_or_else(|| {
                OciError::InvalidArchive("no index.json: not an OCI image layout".to_owned())
            })?;
            let index = Document::parse_layout_index(index_bytes)?;
            let Children::Index(manifests) = index.children else {
                return Err(
                    OciError::InvalidArchive("index.json is not an index".to_owned()).into(),
                );
            };
            for top in manifests {
                content.add_from_archive(&files, &top, 0)?;
                tops.push(top.without_annotations());
            }
        }
        let mut seen = BTreeSet::new();
        tops.retain(|top| seen.insert(top.digest.clone()));
        match tops.len() {
            0 => Err(OciError::InvalidArchive("the archive names no image".to_owned()).into()),
            1 => {
                // Keep the root last: move the top document behind everything else.
                let digest = &tops[0].digest;
                if let Some(at) = content
                    .documents
                    .iter()
                    .rposition(|d| &d.descriptor.digest == digest)
                {
                    let root = content.documents.remove(at);
                    content.documents.push(root);
                }
                Ok(content)
            }
            _ => {
                if let Some(missing) = tops.iter().find(|t| t.platform.is_none()) {
                    return Err(OciError::InvalidArchive(format!(
                        "manifest {} has no platform: an index of several images needs one per image",
                        missing.digest
                    ))
                    .into());
                }
                let index = new_index(&tops)?;
                content.documents.push(index);
                Ok(content)
            }
        }
    }

    fn add_from_archive(
        &mut self,
        files: &ArchiveFiles,
        descriptor: &Descriptor,
        depth: usize,
    ) -> Result<(), RegistryError> {
        if self
            .documents
            .iter()
            .any(|d| d.descriptor.digest == descriptor.digest)
        {
            return Ok(());
        }
        let bytes = files
            .required_blob(&parse_digest(&descriptor.digest)?)?
            .to_vec();
        let document = Document::parse(descriptor.without_annotations(), bytes)?;
        match &document.children {
            Children::Index(children) => {
                if depth >= MAX_DEPTH {
                    return Err(OciError::InvalidArchive(format!(
                        "indexes nested more than {MAX_DEPTH} deep"
                    ))
                    .into());
                }
                for child in children {
                    self.add_from_archive(files, child, depth + 1)?;
                }
            }
            Children::Manifest(blobs) => {
                for blob in blobs {
                    let bytes = files.required_blob(&parse_digest(&blob.digest)?)?;
                    check_blob(blob, bytes, "blob")?;
                    self.blobs.insert(blob.digest.clone(), bytes.to_vec());
                }
            }
        }
        self.documents.push(document);
        Ok(())
    }

    /// The image as an OCI image-layout tar, named `reference` for `ctr image import`.
    pub fn to_archive(&self, reference: &str) -> Result<Vec<u8>, RegistryError> {
        let root = self
            .root()
            .ok_or_else(|| OciError::InvalidArchive("no image to write".to_owned()))?;
        let mut out = Vec::new();
        let mut tar = TarWriter::new(&mut out);
        tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        tar.dir("blobs")?;
        tar.dir("blobs/sha256")?;
        let mut written = BTreeSet::new();
        let blobs = self.blobs.iter();
        let documents = self
            .documents
            .iter()
            .map(|d| (&d.descriptor.digest, &d.bytes));
        for (digest, bytes) in blobs.chain(documents) {
            if written.insert(digest.clone()) {
                tar.file(&layout_path(digest)?, 0o644, bytes)?;
            }
        }
        let mut top = root.descriptor.clone();
        top.annotations = Some(BTreeMap::from([
            (CONTAINERD_IMAGE_NAME.to_owned(), reference.to_owned()),
            (OCI_REF_NAME.to_owned(), tag_of(reference).to_owned()),
        ]));
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [top],
        });
        tar.file(
            "index.json",
            0o644,
            &to_canonical_vec(&index, "index.json")?,
        )?;
        tar.finish()?;
        Ok(out)
    }
}

impl Document {
    /// `index.json` of a layout: an index without a digest of its own.
    fn parse_layout_index(bytes: &[u8]) -> Result<Self, RegistryError> {
        let descriptor = Descriptor {
            media_type: OCI_INDEX.to_owned(),
            digest: sha256_digest(bytes),
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
        };
        Self::parse(descriptor, bytes.to_vec())
    }
}

/// A new OCI image index listing `manifests`.
fn new_index(manifests: &[Descriptor]) -> Result<Document, RegistryError> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    });
    let bytes = to_canonical_vec(&index, "image index")?;
    let descriptor = Descriptor {
        media_type: OCI_INDEX.to_owned(),
        digest: sha256_digest(&bytes),
        size: bytes.len() as u64,
        platform: None,
        annotations: None,
    };
    Document::parse(descriptor, bytes)
}

/// Whether `media_type` is an index (OCI or Docker manifest list).
pub fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

fn parse_digest(digest: &str) -> Result<oci_spec::image::Digest, RegistryError> {
    digest.parse().map_err(|e: oci_spec::OciSpecError| {
        RegistryError::Archive(OciError::InvalidArchive(format!(
            "bad digest {digest:?}: {e}"
        )))
    })
}

fn layout_path(digest: &str) -> Result<String, RegistryError> {
    Ok(crate::blob::layout_path(&parse_digest(digest)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Flavour, ImageSpec, Platform, build_archive};

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn archive(name: &str, flavour: Flavour, platform: Option<Platform>) -> Vec<u8> {
        let mut spec = ImageSpec::new(name, flavour)
            .file("/hello.wasm", MODULE.to_vec())
            .entrypoint(["/hello.wasm"]);
        spec.platform = platform;
        let mut out = Vec::new();
        build_archive(&spec, &mut out).expect("archive builds");
        out
    }

    #[test]
    fn one_archive_is_one_manifest_with_its_blobs() -> Result<(), RegistryError> {
        let tar = archive("r/hello:1", Flavour::RunwasiArtifact, None);
        let content = ImageContent::from_archives(vec![tar.as_slice()])?;
        assert_eq!(content.documents.len(), 1);
        let root = content.root().expect("a root");
        assert!(!root.is_index());
        assert_eq!(content.blobs.len(), 2, "config and one wasm layer");
        assert_eq!(content.platforms(), vec!["wasi/wasm".to_owned()]);
        assert!(
            root.descriptor.annotations.is_none(),
            "names are not pushed"
        );
        Ok(())
    }

    #[test]
    fn several_archives_become_an_index_of_their_platforms() -> Result<(), RegistryError> {
        let wasm = archive("r/hello:1", Flavour::RunwasiArtifact, None);
        let native = archive(
            "r/hello:1",
            Flavour::Image,
            Some(Platform::new("linux", "amd64")),
        );
        let content = ImageContent::from_archives(vec![wasm.as_slice(), native.as_slice()])?;
        let root = content.root().expect("a root");
        assert!(root.is_index());
        assert_eq!(root.descriptor.media_type, OCI_INDEX);
        assert_eq!(content.platforms(), vec!["wasi/wasm", "linux/amd64"]);
        assert_eq!(content.documents.len(), 3);
        // Written out and read back, it is the same index.
        let tar = content.to_archive("127.0.0.1:5000/r/hello:1")?;
        let again = ImageContent::from_archives(vec![tar.as_slice()])?;
        let again_root = again.root().expect("a root");
        assert_eq!(again_root.descriptor.digest, root.descriptor.digest);
        assert_eq!(again.blobs.len(), content.blobs.len());
        let inspection = crate::inspect_archive(tar.as_slice())?;
        assert_eq!(inspection.images[0].names, vec!["127.0.0.1:5000/r/hello:1"]);
        assert_eq!(inspection.images[0].manifests.len(), 2);
        Ok(())
    }

    #[test]
    fn a_corrupt_blob_in_the_archive_is_refused() {
        let descriptor = Descriptor {
            media_type: "application/wasm".into(),
            digest: sha256_digest(b"abc"),
            size: 3,
            platform: None,
            annotations: None,
        };
        assert!(check_blob(&descriptor, b"abc", "blob").is_ok());
        let error = check_blob(&descriptor, b"abd", "blob").expect_err("mismatch");
        assert!(
            matches!(error, RegistryError::DigestMismatch { .. }),
            "{error}"
        );
        let short = Descriptor {
            size: 4,
            ..descriptor
        };
        let error = check_blob(&short, b"abc", "blob").expect_err("size");
        assert!(error.to_string().contains("has 3 bytes"), "{error}");
    }

    #[test]
    fn documents_of_unknown_shape_are_refused() {
        let bytes = br#"{"schemaVersion":2}"#.to_vec();
        let descriptor = Descriptor {
            media_type: OCI_INDEX.into(),
            digest: sha256_digest(&bytes),
            size: bytes.len() as u64,
            platform: None,
            annotations: None,
        };
        let error = Document::parse(descriptor, bytes).expect_err("no manifests, no config");
        assert!(error.to_string().contains("neither"), "{error}");
    }
}
