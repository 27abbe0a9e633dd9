//! The one place where carapace's errors become gRPC status codes. Handlers return [`Error`] (or a
//! domain crate's error converted into it) and never build a `tonic::Status` themselves, so a
//! client sees the same code for the same failure whatever RPC it called.

use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not implemented by carapace yet")]
    Unimplemented(&'static str),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "CRI call failed");
        } else {
            tracing::debug!(error = %e, "CRI call refused");
        }
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_error_kind() {
        let s: Status = Error::Unimplemented("RunPodSandbox").into();
        assert_eq!(s.code(), Code::Unimplemented);
        assert!(s.message().contains("RunPodSandbox"));
        let s: Status = Error::NotFound("container \"abc\"".into()).into();
        assert_eq!(s.code(), Code::NotFound);
    }
}
