//! What can go wrong talking to a registry.

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

use crate::error::OciError;

/// Errors of push, pull and tag listing, each saying which registry or blob it is about.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse as `[registry/]repository[:tag][@digest]`.
    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// No connection could be made (nothing listens, DNS, TLS handshake).
    #[error("cannot reach registry {registry}: {detail}")]
    Unreachable { registry: String, detail: String },

    /// The registry refused the credentials (or asked for some and got none).
    #[error("registry {registry} refused the credentials{user}: unauthorized", user = user_suffix(.username))]
    Unauthorized {
        registry: String,
        username: Option<String>,
    },

    /// The tag or digest is not in the repository.
    #[error("{reference} not found in the registry")]
    NotFound { reference: String },

    /// A blob or manifest's bytes do not hash to its digest.
    #[error(
        "{what} {expected} has content with digest {actual}: corrupt in the registry or in transit"
    )]
    DigestMismatch {
        what: &'static str,
        expected: String,
        actual: String,
    },

    /// A blob's length is not the one its descriptor declares.
    #[error("blob {digest} has {actual} bytes, its descriptor says {declared}")]
    SizeMismatch {
        digest: String,
        declared: u64,
        actual: u64,
    },

    /// A manifest or index that is not JSON of a shape we know.
    #[error("{digest}: {reason}")]
    BadDocument { digest: String, reason: String },

    /// The docker config file cannot be read or parsed.
    #[error("docker config {path}: {reason}")]
    DockerConfig { path: String, reason: String },

    /// Reading the archive, or writing the pulled one.
    #[error(transparent)]
    Archive(#[from] OciError),

    /// Any other failure of the distribution client; `what` says what was being done.
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: OciDistributionError,
    },
}

fn user_suffix(username: &Option<String>) -> String {
    match username {
        Some(name) => format!(" of user {name:?}"),
        None => " (none were given)".to_owned(),
    }
}

/// Who the request was for, so that a client error can be named precisely.
pub(crate) struct ErrorContext<'a> {
    pub registry: &'a str,
    pub username: Option<&'a str>,
    pub reference: &'a str,
}

impl ErrorContext<'_> {
    /// Turns a distribution-client error into the most specific [`RegistryError`].
    pub fn classify(&self, what: impl Into<String>, error: OciDistributionError) -> RegistryError {
        let unauthorized = || RegistryError::Unauthorized {
            registry: self.registry.to_owned(),
            username: self.username.map(str::to_owned),
        };
        let not_found = || RegistryError::NotFound {
            reference: self.reference.to_owned(),
        };
        match &error {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => return unauthorized(),
            OciDistributionError::ServerError { code: 401, .. } => return unauthorized(),
            OciDistributionError::ImageManifestNotFoundError(_) => return not_found(),
            OciDistributionError::ServerError { code: 404, .. } => return not_found(),
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    return unauthorized();
                }
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                    )
                }) {
                    return not_found();
                }
            }
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => {
                return RegistryError::DigestMismatch {
                    what: "manifest",
                    expected: expected.clone(),
                    actual: actual.clone(),
                };
            }
            OciDistributionError::RequestError(request)
                if request
                    .status()
                    .is_some_and(|s| s.as_u16() == 401 || s.as_u16() == 403) =>
            {
                return unauthorized();
            }
            OciDistributionError::RequestError(request) if request.is_connect() => {
                let mut detail = innermost(request);
                if detail.contains("wrong version number") {
                    detail.push_str(" (it does not speak TLS: plain HTTP?)");
                }
                return RegistryError::Unreachable {
                    registry: self.registry.to_owned(),
                    detail,
                };
            }
            _ => {}
        }
        RegistryError::Client {
            what: what.into(),
            source: error,
        }
    }
}

/// The last cause of `error`: for a refused connection, "Connection refused".
fn innermost(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The digest mismatch inside a blob stream's I/O error, if that is what it is.
pub(crate) fn digest_mismatch_of(error: &std::io::Error) -> Option<RegistryError> {
    match error.get_ref()?.downcast_ref::<DigestError>()? {
        DigestError::VerificationError { expected, actual } => {
            Some(RegistryError::DigestMismatch {
                what: "blob",
                expected: expected.clone(),
                actual: actual.clone(),
            })
        }
        _ => None,
    }
}
