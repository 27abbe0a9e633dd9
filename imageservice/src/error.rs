//! The image service's one error type. Each variant says what kind of failure it is, so the CRI
//! layer can map it to a gRPC code without reading messages.

use std::path::PathBuf;

use crate::Digest;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A reference or digest the caller gave does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// No image by that name or ID in the local store.
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    /// The registry (every configured host) says the image or a blob does not exist.
    #[error("{what} not found in registry {host}")]
    NotFoundInRegistry { host: String, what: String },
    /// The registry refused our credentials (or anonymous access): 401/403 after the auth flow.
    #[error("registry {host} denied access: {message}")]
    Unauthorized { host: String, message: String },
    /// The registry could not be reached or answered with a server error.
    #[error("registry {host}: {message}")]
    Registry { host: String, message: String },
    /// A download made no progress for the configured time.
    #[error("pull stalled: no data from {host} for {what} in {seconds}s")]
    Stalled {
        host: String,
        what: String,
        seconds: u64,
    },
    /// Something we do not pull: schema1 manifests, artifacts that are not images, no manifest
    /// for this node's platform.
    #[error("{0}")]
    Unsupported(String),
    /// Bytes from the registry do not match the digest or size that names them.
    #[error("content {digest} does not verify: {reason}")]
    Verification { digest: Digest, reason: String },
    /// A layer or manifest that is malformed or hostile (path escape, device node, too large).
    #[error("refused {what}: {reason}")]
    Refused { what: String, reason: String },
    /// The operator's configuration (hosts.toml, CA files) is wrong.
    #[error("registry configuration {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// A local filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The persisted metadata does not parse or the store is otherwise inconsistent.
    #[error("image store: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn refused(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Refused {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

impl From<prometheus::Error> for Error {
    fn from(e: prometheus::Error) -> Self {
        Self::Internal(format!("registering metrics: {e}"))
    }
}
