//! The containerd calls the content store needs, one method each, with errors that say
//! what was being done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    AbortRequest, AddResourceRequest, Container, CreateRequest, DeleteRequest, GetContainerRequest,
    GetImageRequest, Image, Info, InfoRequest, ReadContentRequest, Resource, UpdateRequest,
    WriteAction, WriteContentRequest, WriteContentResponse,
};
use containerd_client::tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use containerd_client::tonic::metadata::AsciiMetadataValue;
use containerd_client::tonic::{Code, Request, Status, Streaming};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::ContentStore;
use super::error::ContentError;
use super::labels::{GC_EXPIRE_LABEL, rfc3339_utc};

/// gRPC metadata key containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// gRPC metadata key containerd reads the lease from.
const LEASE_HEADER: &str = "containerd-lease";

/// Bytes per `Write` message: well under containerd's 16 MiB gRPC message limit.
pub(crate) const WRITE_CHUNK_BYTES: usize = 1024 * 1024;

/// How long a lease protects what we write if we die before deleting it.
const LEASE_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// Most bytes reserved up front for a blob whose descriptor gives its size.
const MAX_PREALLOCATION: u64 = 64 * 1024 * 1024;

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in hash {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// A name no other writer or lease in this namespace uses.
/// Checks that `data` is what `digest` names. containerd verifies blobs as they are written;
/// this checks what came back, since precompiled code read here runs unchecked in
/// containers. Digests of another algorithm than sha256 are not checked (none is written by
/// the shim, and images use sha256).
fn verify_digest(digest: &str, what: &str, data: &[u8]) -> Result<(), ContentError> {
    if !digest.starts_with("sha256:") {
        return Ok(());
    }
    let actual = sha256_digest(data);
    if actual != digest {
        return Err(ContentError::DigestMismatch {
            what: what.to_owned(),
            digest: digest.to_owned(),
            actual,
        });
    }
    Ok(())
}

fn unique_name(purpose: &str) -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "wasmrunner-{purpose}-{}-{nanos}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

impl ContentStore {
    /// `message` with this store's namespace attached.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace_header.clone());
        request
    }

    pub(crate) async fn get_container(&self, id: &str) -> Result<Container, ContentError> {
        let request = self.request(GetContainerRequest { id: id.to_owned() });
        let action = || format!("get container {id:?}");
        match ContainersClient::new(self.channel.clone())
            .get(request)
            .await
        {
            Ok(response) => response.into_inner().container.ok_or_else(|| {
                ContentError::rpc(action(), &Status::internal("no container in the answer"))
            }),
            Err(status) if status.code() == Code::NotFound => {
                Err(ContentError::ContainerNotFound {
                    id: id.to_owned(),
                    namespace: self.namespace.clone(),
                })
            }
            Err(status) => Err(ContentError::rpc(action(), &status)),
        }
    }

    pub(crate) async fn get_image(
        &self,
        name: &str,
        container: &str,
    ) -> Result<Image, ContentError> {
        let request = self.request(GetImageRequest {
            name: name.to_owned(),
        });
        let action = || format!("get image {name:?} of container {container:?}");
        match ImagesClient::new(self.channel.clone()).get(request).await {
            Ok(response) => response.into_inner().image.ok_or_else(|| {
                ContentError::rpc(action(), &Status::internal("no image in the answer"))
            }),
            Err(status) if status.code() == Code::NotFound => Err(ContentError::ImageNotFound {
                image: name.to_owned(),
                container: container.to_owned(),
                namespace: self.namespace.clone(),
            }),
            Err(status) => Err(ContentError::rpc(action(), &status)),
        }
    }

    /// The content store's record of `digest`, labels included.
    pub(crate) async fn info(&self, digest: &str, what: &str) -> Result<Info, ContentError> {
        let request = self.request(InfoRequest {
            digest: digest.to_owned(),
        });
        match ContentClient::new(self.channel.clone()).info(request).await {
            Ok(response) => response.into_inner().info.ok_or_else(|| {
                ContentError::rpc(
                    format!("get the content info of {what} ({digest})"),
                    &Status::internal("no info in the answer"),
                )
            }),
            Err(status) => {
                Err(self.content_error(&status, digest, what, "get the content info of"))
            }
        }
    }

    /// The whole blob `digest`. When `expected_size` is given, the blob must have that size.
    pub(crate) async fn read(
        &self,
        digest: &str,
        what: &str,
        expected_size: Option<u64>,
    ) -> Result<Vec<u8>, ContentError> {
        let request = self.request(ReadContentRequest {
            digest: digest.to_owned(),
            offset: 0,
            size: 0,
        });
        let failed = |status: &Status| self.content_error(status, digest, what, "read");
        let mut stream = ContentClient::new(self.channel.clone())
            .read(request)
            .await
            .map_err(|status| failed(&status))?
            .into_inner();
        let capacity = expected_size.unwrap_or(0).min(MAX_PREALLOCATION);
        let mut data = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
        while let Some(chunk) = stream.message().await.map_err(|status| failed(&status))? {
            data.extend_from_slice(&chunk.data);
        }
        if let Some(expected) = expected_size {
            let actual = data.len() as u64;
            if actual != expected {
                return Err(ContentError::SizeMismatch {
                    what: what.to_owned(),
                    digest: digest.to_owned(),
                    expected,
                    actual,
                });
            }
        }
        verify_digest(digest, what, &data)?;
        Ok(data)
    }

    /// Sets `labels` on the content `digest`, leaving its other labels as they are.
    pub(crate) async fn set_labels(
        &self,
        digest: &str,
        what: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), ContentError> {
        // One field path per label: containerd then updates just those keys, so labels that
        // others set in the meantime are not lost.
        let paths = labels.keys().map(|key| format!("labels.{key}")).collect();
        let mut update = UpdateRequest {
            info: Some(Info {
                digest: digest.to_owned(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(Default::default()),
        };
        if let Some(mask) = update.update_mask.as_mut() {
            mask.paths = paths;
        }
        ContentClient::new(self.channel.clone())
            .update(self.request(update))
            .await
            .map_err(|status| self.content_error(&status, digest, what, "label"))?;
        Ok(())
    }

    /// A new lease that expires by itself after [`LEASE_LIFETIME`]; returns its id.
    pub(crate) async fn create_lease(&self) -> Result<String, ContentError> {
        let expires = SystemTime::now()
            .checked_add(LEASE_LIFETIME)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let request = self.request(CreateRequest {
            id: unique_name("precompile"),
            labels: HashMap::from([(GC_EXPIRE_LABEL.to_owned(), rfc3339_utc(expires))]),
        });
        let lease = LeasesClient::new(self.channel.clone())
            .create(request)
            .await
            .map_err(|status| ContentError::rpc("create a lease", &status))?
            .into_inner()
            .lease
            .ok_or_else(|| {
                ContentError::rpc(
                    "create a lease",
                    &Status::internal("no lease in the answer"),
                )
            })?;
        Ok(lease.id)
    }

    pub(crate) async fn delete_lease(&self, id: &str) -> Result<(), ContentError> {
        let request = self.request(DeleteRequest {
            id: id.to_owned(),
            sync: false,
        });
        LeasesClient::new(self.channel.clone())
            .delete(request)
            .await
            .map_err(|status| ContentError::rpc(format!("delete lease {id:?}"), &status))?;
        Ok(())
    }

    /// Puts existing content under `lease`, so it is not collected before it is labelled.
    async fn add_to_lease(&self, lease: &str, digest: &str) -> Result<(), ContentError> {
        let request = self.request(AddResourceRequest {
            id: lease.to_owned(),
            resource: Some(Resource {
                id: digest.to_owned(),
                r#type: "content".to_owned(),
            }),
        });
        LeasesClient::new(self.channel.clone())
            .add_resource(request)
            .await
            .map_err(|status| {
                ContentError::rpc(format!("add {digest} to lease {lease:?}"), &status)
            })?;
        Ok(())
    }

    /// Writes `data` as new content under `lease`, committed with `labels`; returns its
    /// digest. Content that is already there is kept (and put under the lease) as it is.
    ///
    /// The `Write` stream: a `Stat` opens the ingest (or says the blob already exists), then
    /// `Write`s of at most [`WRITE_CHUNK_BYTES`] at increasing offsets, then a `Commit` with
    /// the expected size and digest. containerd answers every message once.
    pub(crate) async fn write(
        &self,
        data: &[u8],
        lease: &str,
        labels: HashMap<String, String>,
    ) -> Result<String, ContentError> {
        let digest = sha256_digest(data);
        let total = i64::try_from(data.len()).map_err(|_| ContentError::Write {
            digest: digest.clone(),
            reason: "the blob is too large".to_owned(),
        })?;
        let reference = unique_name("ingest");
        match self
            .write_stream(data, total, &digest, &reference, lease, labels)
            .await
        {
            Ok(WriteOutcome::Committed) => Ok(digest),
            Ok(WriteOutcome::AlreadyExists) => {
                tracing::debug!("content {digest} is already in the store");
                self.add_to_lease(lease, &digest).await?;
                Ok(digest)
            }
            Err(err) => {
                // Best effort: drop a half-written ingest now rather than when the lease goes.
                let abort = self.request(AbortRequest { r#ref: reference });
                let _ = ContentClient::new(self.channel.clone()).abort(abort).await;
                Err(err)
            }
        }
    }

    async fn write_stream(
        &self,
        data: &[u8],
        total: i64,
        digest: &str,
        reference: &str,
        lease: &str,
        labels: HashMap<String, String>,
    ) -> Result<WriteOutcome, ContentError> {
        let failed = |status: &Status| ContentError::rpc(format!("write {digest}"), status);
        let protocol = |reason: String| ContentError::Write {
            digest: digest.to_owned(),
            reason,
        };
        let lease_header = AsciiMetadataValue::try_from(lease)
            .map_err(|_| protocol(format!("lease id {lease:?} is not ASCII")))?;

        let (sender, receiver) = mpsc::channel::<WriteContentRequest>(1);
        let mut stream = Session {
            sender,
            responses: None,
            digest,
        };
        stream
            .send(WriteContentRequest {
                action: WriteAction::Stat.into(),
                r#ref: reference.to_owned(),
                total,
                expected: digest.to_owned(),
                ..Default::default()
            })
            .await?;
        let mut request = self.request(ReceiverStream::new(receiver));
        request.metadata_mut().insert(LEASE_HEADER, lease_header);
        match ContentClient::new(self.channel.clone())
            .write(request)
            .await
        {
            Ok(response) => stream.responses = Some(response.into_inner()),
            Err(status) if status.code() == Code::AlreadyExists => {
                return Ok(WriteOutcome::AlreadyExists);
            }
            Err(status) => return Err(failed(&status)),
        }
        match stream.answer().await {
            Ok(_) => {}
            Err(status) if status.code() == Code::AlreadyExists => {
                return Ok(WriteOutcome::AlreadyExists);
            }
            Err(status) => return Err(failed(&status)),
        }

        // A fresh ref starts at offset 0; writing at 0 also makes containerd discard anything
        // an earlier writer left under it.
        let mut offset: i64 = 0;
        for chunk in data.chunks(WRITE_CHUNK_BYTES) {
            stream
                .send(WriteContentRequest {
                    action: WriteAction::Write.into(),
                    r#ref: reference.to_owned(),
                    offset,
                    data: chunk.to_vec(),
                    ..Default::default()
                })
                .await?;
            let answer = stream.answer().await.map_err(|status| failed(&status))?;
            offset += chunk.len() as i64;
            if answer.offset != offset {
                return Err(protocol(format!(
                    "containerd is at offset {} after a write that ended at {offset}",
                    answer.offset
                )));
            }
        }

        stream
            .send(WriteContentRequest {
                action: WriteAction::Commit.into(),
                r#ref: reference.to_owned(),
                offset: total,
                total,
                expected: digest.to_owned(),
                labels,
                ..Default::default()
            })
            .await?;
        let answer = match stream.answer().await {
            Ok(answer) => answer,
            // Someone else committed the same bytes meanwhile.
            Err(status) if status.code() == Code::AlreadyExists => {
                return Ok(WriteOutcome::AlreadyExists);
            }
            Err(status) => return Err(failed(&status)),
        };
        if answer.offset != total {
            return Err(protocol(format!(
                "containerd committed {} of {total} bytes",
                answer.offset
            )));
        }
        if answer.digest != digest {
            return Err(protocol(format!(
                "containerd committed digest {}",
                answer.digest
            )));
        }
        Ok(WriteOutcome::Committed)
    }

    /// A failed call on the content `digest`, with "not found" told apart.
    fn content_error(&self, status: &Status, digest: &str, what: &str, verb: &str) -> ContentError {
        if status.code() == Code::NotFound {
            ContentError::ContentNotFound {
                what: what.to_owned(),
                digest: digest.to_owned(),
            }
        } else {
            ContentError::rpc(format!("{verb} {what} ({digest})"), status)
        }
    }
}

enum WriteOutcome {
    Committed,
    AlreadyExists,
}

/// One `Write` stream: requests go in through `sender`, each answered on `responses`.
struct Session<'a> {
    sender: mpsc::Sender<WriteContentRequest>,
    responses: Option<Streaming<WriteContentResponse>>,
    digest: &'a str,
}

impl Session<'_> {
    async fn send(&mut self, request: WriteContentRequest) -> Result<(), ContentError> {
        self.sender
            .send(request)
            .await
            .map_err(|_| ContentError::Write {
                digest: self.digest.to_owned(),
                reason: "containerd closed the write stream".to_owned(),
            })
    }

    async fn answer(&mut self) -> Result<WriteContentResponse, Status> {
        let Some(responses) = self.responses.as_mut() else {
            return Err(Status::internal("the write stream is not open"));
        };
        responses
            .message()
            .await?
            .ok_or_else(|| Status::data_loss("containerd ended the write stream without an answer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_that_do_not_hash_to_their_digest_are_refused() {
        let data = b"precompiled code";
        let digest = sha256_digest(data);
        assert!(verify_digest(&digest, "blob", data).is_ok());
        let err = verify_digest(&digest, "blob", b"tampered code").expect_err("mismatch");
        assert!(err.to_string().contains(&digest), "{err}");
    }
}
