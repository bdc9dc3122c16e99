//! `pull`: the document a reference names, what it references (every platform of an index,
//! or the one asked for), every blob; each checked against its digest and size.

use futures_util::StreamExt;
use oci_client::manifest::OciDescriptor;
use oci_client::{Reference, RegistryOperation};

use super::content::{Children, Descriptor, Document, ImageContent, OCI_INDEX, check_blob};
use super::error::{ErrorContext, RegistryError, digest_mismatch_of};
use super::progress::{Progress, short};
use super::{Registry, parse_reference};
use crate::media_types::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST};

/// The document types a pull accepts.
const ACCEPT: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];
/// How many indexes may be nested below the root.
const MAX_DEPTH: usize = 8;

impl Registry {
    /// Pulls the image `reference` names. With `platform` (`os/arch`) and an index at the
    /// root, only that platform's manifest is pulled and becomes the root.
    pub fn pull(
        &self,
        reference: &str,
        platform: Option<&str>,
    ) -> Result<ImageContent, RegistryError> {
        let source = parse_reference(reference)?;
        let context = self.context(&source, reference);
        self.runtime.block_on(async {
            self.client
                .auth(&source, &self.auth(), RegistryOperation::Pull)
                .await
                .map_err(|e| {
                    context.classify(format!("authenticating to {}", source.registry()), e)
                })?;
            let (bytes, digest) = self
                .client
                .pull_manifest_raw(&source, &self.auth(), &ACCEPT)
                .await
                .map_err(|e| context.classify(format!("pulling the manifest of {reference}"), e))?;
            let descriptor = Descriptor {
                media_type: media_type_of(&bytes),
                digest,
                size: bytes.len() as u64,
                platform: None,
                annotations: None,
            };
            let mut root = Document::parse(descriptor, bytes.to_vec())?;
            if let (Some(wanted), Children::Index(children)) = (platform, &root.children) {
                let chosen = children
                    .iter()
                    .find(|c| c.platform_name().as_deref() == Some(wanted))
                    .cloned()
                    .ok_or_else(|| RegistryError::NotFound {
                        reference: format!("{reference} for platform {wanted}"),
                    })?;
                root = self.document(&source, &context, chosen).await?;
            }
            let mut content = ImageContent::default();
            self.pull_tree(&source, &context, root, 0, &mut content)
                .await?;
            Ok(content)
        })
    }

    /// Pulls what `document` references, then adds it (children first).
    async fn pull_tree(
        &self,
        source: &Reference,
        context: &ErrorContext<'_>,
        document: Document,
        depth: usize,
        content: &mut ImageContent,
    ) -> Result<(), RegistryError> {
        match &document.children {
            Children::Index(children) => {
                if depth >= MAX_DEPTH {
                    return Err(RegistryError::BadDocument {
                        digest: document.descriptor.digest.clone(),
                        reason: format!("indexes nested more than {MAX_DEPTH} deep"),
                    });
                }
                for child in children {
                    if content
                        .documents
                        .iter()
                        .any(|d| d.descriptor.digest == child.digest)
                    {
                        continue;
                    }
                    let child = self.document(source, context, child.clone()).await?;
                    Box::pin(self.pull_tree(source, context, child, depth + 1, content)).await?;
                }
            }
            Children::Manifest(blobs) => {
                for blob in blobs {
                    if content.blobs.contains_key(&blob.digest) {
                        continue;
                    }
                    let bytes = self.blob(source, context, blob).await?;
                    content.blobs.insert(blob.digest.clone(), bytes);
                }
            }
        }
        content.documents.push(document);
        Ok(())
    }

    /// The manifest or index `descriptor` names, by digest.
    async fn document(
        &self,
        source: &Reference,
        context: &ErrorContext<'_>,
        descriptor: Descriptor,
    ) -> Result<Document, RegistryError> {
        let by_digest = Reference::with_digest(
            source.registry().to_owned(),
            source.repository().to_owned(),
            descriptor.digest.clone(),
        );
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&by_digest, &self.auth(), &ACCEPT)
            .await
            .map_err(|e| context.classify(format!("pulling manifest {}", descriptor.digest), e))?;
        Document::parse(descriptor, bytes.to_vec())
    }

    /// One blob, streamed (with a progress line on a terminal) and checked.
    async fn blob(
        &self,
        source: &Reference,
        context: &ErrorContext<'_>,
        blob: &Descriptor,
    ) -> Result<Vec<u8>, RegistryError> {
        let layer = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.clone(),
            size: i64::try_from(blob.size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(source, &layer)
            .await
            .map_err(|e| context.classify(format!("pulling blob {}", blob.digest), e))?;
        let mut progress = Progress::new(
            self.options.progress,
            format!("pull {}", short(&blob.digest)),
            blob.size,
        );
        let mut bytes = Vec::with_capacity(usize::try_from(blob.size).unwrap_or(0).min(1 << 30));
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| {
                digest_mismatch_of(&e).unwrap_or_else(|| {
                    context.classify(format!("pulling blob {}", blob.digest), e.into())
                })
            })?;
            progress.advance(piece.len() as u64);
            bytes.extend_from_slice(&piece);
            if bytes.len() as u64 > blob.size {
                return Err(RegistryError::SizeMismatch {
                    digest: blob.digest.clone(),
                    declared: blob.size,
                    actual: bytes.len() as u64,
                });
            }
        }
        progress.finish();
        check_blob(blob, &bytes, "blob")?;
        Ok(bytes)
    }
}

/// A document's `mediaType`, or what its shape says it is (an OCI manifest may omit it).
fn media_type_of(bytes: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if let Some(media_type) = value.get("mediaType").and_then(|m| m.as_str()) {
        return media_type.to_owned();
    }
    if value.get("manifests").is_some() {
        OCI_INDEX.to_owned()
    } else {
        ACCEPT[0].to_owned()
    }
}
