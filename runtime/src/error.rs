//! The one error type of `carapace-runtime`. Its variants are the kinds the CRI layer maps to gRPC
//! codes (NotFound, InvalidArgument, FailedPrecondition, AlreadyExists, DeadlineExceeded, Internal);
//! this module never builds a gRPC status itself.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The container (or a file the request names) does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request is malformed or names something that cannot be used.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The container is in a state that does not allow the call (e.g. start twice, delete running).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A container with this id already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A call with a deadline (exec, stop) ran out of time.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The system failed us: a syscall, a file, a cgroup.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn internal(what: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        Error::Internal(format!("{what}: {err}"))
    }

    /// An I/O failure on `path`; a missing file becomes NotFound so callers can tell them apart.
    pub(crate) fn io(what: &str, path: &Path, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(format!("{what} {}", path.display()))
        } else {
            Error::Internal(format!("{what} {}: {err}", path.display()))
        }
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::Internal(e.desc().to_string())
    }
}

/// Adds what was being done to a nix/io error, as `.ctx("mount /proc")?`.
pub(crate) trait Context<T> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| Error::Internal(format!("{what}: {}", e.desc())))
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| Error::Internal(format!("{what}: {e}")))
    }
}
