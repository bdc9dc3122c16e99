//! `push`: an image's blobs (those the registry lacks), then its manifests by digest, then
//! the root under the tag.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::{Reference, RegistryOperation};
use serde::Serialize;

use super::content::{Children, ImageContent};
use super::error::RegistryError;
use super::progress::{Progress, short};
use super::{Registry, Upload, parse_reference};

/// What became of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobOutcome {
    /// Sent to the registry.
    Uploaded,
    /// The repository already had it.
    Existed,
    /// Mounted from another repository of the registry.
    Mounted(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushedBlob {
    pub digest: String,
    pub size: u64,
    pub outcome: BlobOutcome,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushReport {
    /// `registry/repository:tag`.
    pub reference: String,
    /// The digest of the root document (what `@sha256:...` pulls).
    pub digest: String,
    pub media_type: String,
    pub platforms: Vec<String>,
    pub manifests: usize,
    pub blobs: Vec<PushedBlob>,
}

impl Registry {
    /// Pushes `content` and tags its root as `reference` (`registry/repository[:tag]`).
    pub fn push(
        &self,
        content: &ImageContent,
        reference: &str,
    ) -> Result<PushReport, RegistryError> {
        let target = parse_reference(reference)?;
        if target.digest().is_some() {
            return Err(RegistryError::InvalidReference {
                reference: reference.to_owned(),
                reason: "a push names a tag, not a digest".to_owned(),
            });
        }
        let root = content
            .root()
            .ok_or_else(|| RegistryError::InvalidReference {
                reference: reference.to_owned(),
                reason: "nothing to push".to_owned(),
            })?;
        let context = self.context(&target, reference);
        let tag = target.tag().unwrap_or("latest").to_owned();
        let registry = target.registry().to_owned();
        let repository = target.repository().to_owned();
        self.runtime.block_on(async {
            self.client
                .auth(&target, &self.auth(), RegistryOperation::Push)
                .await
                .map_err(|e| context.classify(format!("authenticating to {registry}"), e))?;
            let mut blobs = Vec::new();
            let mut done = BTreeSet::new();
            for document in &content.documents {
                if let Children::Manifest(children) = &document.children {
                    for child in children {
                        if !done.insert(child.digest.clone()) {
                            continue;
                        }
                        let bytes = content
                            .blobs
                            .get(&child.digest)
                            .ok_or_else(|| crate::OciError::MissingBlob(child.digest.clone()))?;
                        let outcome = self
                            .push_blob(&target, &child.digest, bytes)
                            .await
                            .map_err(|e| {
                                context.classify(format!("pushing blob {}", child.digest), e)
                            })?;
                        blobs.push(PushedBlob {
                            digest: child.digest.clone(),
                            size: bytes.len() as u64,
                            outcome,
                        });
                    }
                }
                let is_root = std::ptr::eq(document, root);
                let name = if is_root {
                    Reference::with_tag(registry.clone(), repository.clone(), tag.clone())
                } else {
                    Reference::with_digest(
                        registry.clone(),
                        repository.clone(),
                        document.descriptor.digest.clone(),
                    )
                };
                let content_type = document.descriptor.media_type.parse().map_err(|_| {
                    RegistryError::BadDocument {
                        digest: document.descriptor.digest.clone(),
                        reason: format!(
                            "media type {:?} is not a header value",
                            document.descriptor.media_type
                        ),
                    }
                })?;
                self.client
                    .push_manifest_raw(&name, document.bytes.clone(), content_type)
                    .await
                    .map_err(|e| {
                        context.classify(
                            format!("pushing manifest {}", document.descriptor.digest),
                            e,
                        )
                    })?;
            }
            Ok(PushReport {
                reference: format!("{registry}/{repository}:{tag}"),
                digest: root.descriptor.digest.clone(),
                media_type: root.descriptor.media_type.clone(),
                platforms: content.platforms(),
                manifests: content.documents.len(),
                blobs,
            })
        })
    }

    /// One blob: nothing if the repository has it, a mount if another repository named in
    /// the options has it, else an upload.
    async fn push_blob(
        &self,
        target: &Reference,
        digest: &str,
        bytes: &[u8],
    ) -> oci_client::errors::Result<BlobOutcome> {
        if self.client.blob_exists(target, digest).await? {
            return Ok(BlobOutcome::Existed);
        }
        for source in &self.options.mount_from {
            let from = Reference::with_tag(
                target.registry().to_owned(),
                source.clone(),
                "latest".to_owned(),
            );
            // A registry that lacks the blob there answers 202 and starts an upload
            // instead: the upload below goes on as if no mount had been tried.
            if self.client.mount_blob(target, &from, digest).await.is_ok()
                && self.client.blob_exists(target, digest).await?
            {
                return Ok(BlobOutcome::Mounted(source.clone()));
            }
        }
        // Pieces as large as the client's chunks, so that each PATCH is one piece; smaller
        // ones for a monolithic PUT, so that the progress line moves as the body goes out.
        let piece = match self.options.upload {
            Upload::Chunked => 4 << 20,
            Upload::Monolithic => 256 << 10,
        };
        let pieces: Vec<Bytes> = bytes.chunks(piece).map(Bytes::copy_from_slice).collect();
        let progress = Arc::new(Mutex::new(Progress::new(
            self.options.progress,
            format!("push {}", short(digest)),
            bytes.len() as u64,
        )));
        let counter = Arc::clone(&progress);
        let stream = futures_util::stream::iter(pieces).map(move |piece| {
            if let Ok(mut progress) = counter.lock() {
                progress.advance(piece.len() as u64);
            }
            Ok(piece)
        });
        self.client
            .push_blob_stream(target, stream, digest, Some(bytes.len() as u64))
            .await?;
        if let Ok(progress) = Arc::try_unwrap(progress)
            && let Ok(progress) = progress.into_inner()
        {
            progress.finish();
        }
        Ok(BlobOutcome::Uploaded)
    }
}
