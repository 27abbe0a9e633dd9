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
    /// The filesystem holding the image store is full (or its quota is used up): nothing the
    /// image or the registry can change; a pull succeeds again once space is freed there.
    #[error("no space left on the disk holding {root}: {context}: {source}")]
    DiskFull {
        root: PathBuf,
        context: String,
        #[source]
        source: std::io::Error,
    },
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

    /// `self`, naming the disk under `root` if it is a write a full disk refused: the writes
    /// deep in the store name a temp file, which is not what the operator must act on.
    pub(crate) fn naming_a_full_disk(self, root: &std::path::Path) -> Self {
        match self {
            Self::Io { context, source }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
                ) =>
            {
                Self::DiskFull {
                    root: root.to_owned(),
                    context,
                    source,
                }
            }
            e => e,
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
