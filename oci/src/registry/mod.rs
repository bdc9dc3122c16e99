//! Pushing images to, and pulling them from, an OCI distribution registry; listing tags.
//!
//! The HTTP side (the distribution API's requests, the `WWW-Authenticate` challenge and its
//! basic or bearer-token answer, chunked and monolithic uploads, cross-repository mounts,
//! digest checks of what comes back) is the [`oci_client`] crate's, release 0.18: the ORAS
//! project's maintained Rust client, which wasmtime's, Krustlet's and runwasi's own tools
//! used before it, that speaks the OCI distribution spec rather than one vendor's API, and
//! leaves the manifests' bytes alone (it pushes and pulls raw documents). What this module
//! adds is the image model around it: whole images with their index, manifests and blobs
//! taken from our archives (or several archives, one per platform, made into an index),
//! pushed children first and blobs only when the registry lacks them, pulled into an archive
//! that `ctr image import` reads, with every document and blob checked against its digest and
//! size, errors named by what went wrong (unreachable, unauthorized, not found, corrupt), and
//! a progress line on a terminal.
//!
//! The client is async (tokio and reqwest); [`Registry`] drives it on a runtime of its own so
//! that callers (the `wasm-oci` command, the test harness) stay blocking.

mod content;
mod credentials;
mod error;
mod progress;
mod pull;
mod push;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

pub use content::{Children, Descriptor, Document, ImageContent, OCI_INDEX, is_index_type};
pub use credentials::{Credentials, docker_config_path, from_docker_config};
pub use error::RegistryError;
pub use progress::ProgressMode;
pub use push::{BlobOutcome, PushReport, PushedBlob};

use error::ErrorContext;

/// How blobs are uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Upload {
    /// A POST, then PATCHes of up to 4 MiB each, then the closing PUT.
    #[default]
    Chunked,
    /// A POST, then one PUT with the whole blob.
    Monolithic,
}

/// How to reach a registry and what to send it.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Talk HTTP instead of HTTPS.
    pub plain_http: bool,
    /// PEM files of CAs to trust besides the system's.
    pub ca_files: Vec<PathBuf>,
    /// Credentials; `None` is anonymous access.
    pub credentials: Option<Credentials>,
    pub upload: Upload,
    /// Repositories of the same registry to mount missing blobs from before uploading them.
    pub mount_from: Vec<String>,
    pub progress: ProgressMode,
    /// How long a connection may take to open.
    pub connect_timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            plain_http: false,
            ca_files: Vec::new(),
            credentials: None,
            upload: Upload::default(),
            mount_from: Vec::new(),
            progress: ProgressMode::Never,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// A client for one or more registries, with one set of options.
pub struct Registry {
    runtime: tokio::runtime::Runtime,
    client: Client,
    options: RegistryOptions,
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Result<Self, RegistryError> {
        let mut certificates = Vec::new();
        for path in &options.ca_files {
            let data = std::fs::read(path).map_err(|e| {
                crate::OciError::io(format!("reading CA file {}", path.display()), e)
            })?;
            certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: if options.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: certificates,
            use_monolithic_push: options.upload == Upload::Monolithic,
            platform_resolver: None,
            connect_timeout: Some(options.connect_timeout),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: concat!("wasm-oci/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::OciError::io("starting the registry client's runtime", e))?;
        Ok(Self {
            runtime,
            client: Client::new(config),
            options,
        })
    }

    fn auth(&self) -> RegistryAuth {
        match &self.options.credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    fn context<'a>(&'a self, reference: &'a Reference, text: &'a str) -> ErrorContext<'a> {
        ErrorContext {
            registry: reference.registry(),
            username: self
                .options
                .credentials
                .as_ref()
                .map(|c| c.username.as_str()),
            reference: text,
        }
    }

    /// The tags of `repository` (`registry/name`, a tag or digest after it is ignored), in the
    /// registry's order, following its pages.
    pub fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        const PAGE: usize = 100;
        let reference = parse_reference(repository)?;
        let context = self.context(&reference, repository);
        let auth = self.auth();
        self.runtime.block_on(async {
            let mut tags = Vec::new();
            loop {
                let last = tags.last().cloned();
                let page = self
                    .client
                    .list_tags(&reference, &auth, Some(PAGE), last.as_deref())
                    .await
                    .map_err(|e| {
                        context.classify(format!("listing the tags of {repository}"), e)
                    })?;
                let count = page.tags.len();
                tags.extend(page.tags);
                if count < PAGE {
                    return Ok(tags);
                }
            }
        })
    }
}

/// Parses `text` as a registry reference, docker-style (`hello` is `docker.io/library/hello`).
pub fn parse_reference(text: &str) -> Result<Reference, RegistryError> {
    Reference::from_str(text).map_err(|e| RegistryError::InvalidReference {
        reference: text.to_owned(),
        reason: e.to_string(),
    })
}
