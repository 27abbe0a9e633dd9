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
    #[error("{0} is unavailable")]
    Unavailable(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    #[error(transparent)]
    Container(#[from] carapace_runtime::Error),
    #[error(transparent)]
    Image(#[from] carapace_imageservice::Error),
    #[error(transparent)]
    Sandbox(#[from] carapace_podsandbox::Error),
    #[error(transparent)]
    Stream(#[from] crate::stream::StreamError),
}

/// Sandbox errors by kind. A CNI plugin's failure keeps the plugin's message in the status.
fn sandbox_code(e: &carapace_podsandbox::Error) -> Code {
    use carapace_podsandbox::Error as E;
    match e {
        E::InvalidConfig(_)
        | E::InvalidSysctl { .. }
        | E::InvalidCgroupParent { .. }
        | E::Ambiguous(_) => Code::InvalidArgument,
        E::NotFound(_) => Code::NotFound,
        // The node is not set up for this pod yet: no CNI network, no infra program.
        E::NetworkNotReady(_) | E::NoInfraProgram => Code::FailedPrecondition,
        // The kernel refusing a value the pod asked for (a sysctl value it cannot parse) is the
        // request's fault, not the node's.
        E::Kernel { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput => {
            Code::InvalidArgument
        }
        // A plugin killed at `cni.plugin_timeout_secs`: a deadline passed, not a plugin's
        // verdict, and the run was undone, so the kubelet's retry starts afresh.
        E::Network(carapace_cni::Error::Timeout { .. }) => Code::DeadlineExceeded,
        E::Network(_) | E::Kernel { .. } | E::Io { .. } | E::State { .. } | E::Teardown { .. } => {
            Code::Internal
        }
    }
}

/// Container runtime errors: the runtime's kinds are the gRPC codes' already.
fn container_code(e: &carapace_runtime::Error) -> Code {
    use carapace_runtime::Error as E;
    match e {
        E::NotFound(_) => Code::NotFound,
        E::InvalidArgument(_) => Code::InvalidArgument,
        E::FailedPrecondition(_) => Code::FailedPrecondition,
        E::AlreadyExists(_) => Code::AlreadyExists,
        // The kubelet reads DeadlineExceeded from ExecSync as a probe timeout.
        E::DeadlineExceeded(_) => Code::DeadlineExceeded,
        E::Internal(_) => Code::Internal,
    }
}

/// Streaming-server errors: a bad Exec/Attach/PortForward request, or too many pending URLs.
fn stream_code(e: &crate::stream::StreamError) -> Code {
    use crate::stream::StreamError as E;
    match e {
        E::InvalidRequest(_) => Code::InvalidArgument,
        E::TooManyPending(_) => Code::ResourceExhausted,
        E::Bind { .. } | E::Random(_) => Code::Internal,
    }
}

/// Image errors by kind: the caller's mistake, the registry's answer, or ours.
fn image_code(e: &carapace_imageservice::Error) -> Code {
    use carapace_imageservice::Error as E;
    match e {
        E::InvalidReference { .. } => Code::InvalidArgument,
        E::ImageNotFound(_) | E::NotFoundInRegistry { .. } => Code::NotFound,
        E::Unauthorized { .. } => Code::PermissionDenied,
        // A registry that is down or stalls may answer on the next try.
        E::Registry { .. } | E::Stalled { .. } => Code::Unavailable,
        // The image itself is unusable (hostile or malformed layer, bad manifest).
        E::Refused { .. } => Code::InvalidArgument,
        // Schema1, artifacts, no manifest for this platform: fixable only by a new push.
        E::Unsupported(_) => Code::FailedPrecondition,
        // The operator's hosts.toml or CA file is wrong.
        E::Config { .. } => Code::FailedPrecondition,
        E::Verification { .. } => Code::DataLoss,
        // The node's disk is full: the operator (or the kubelet's image GC) must free space.
        E::DiskFull { .. } => Code::ResourceExhausted,
        E::Io { .. } | E::Internal(_) => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::Internal(_) => Code::Internal,
            Error::Unavailable(_) => Code::Unavailable,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Container(c) => container_code(c),
            Error::Image(i) => image_code(i),
            Error::Sandbox(s) => sandbox_code(s),
            Error::Stream(s) => stream_code(s),
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "CRI call failed");
        } else {
            tracing::debug!(error = %e, "CRI call refused");
        }
        Status::new(code, cut_inputs(&e.to_string()))
    }
}

/// The longest run without whitespace a status message keeps (an id, a path, an image reference or
/// a sysctl value echoed from the request), and the longest message. A client's header limits
/// (16 KiB for most) would otherwise turn a NotFound for a 100 KB id into RESOURCE_EXHAUSTED.
const MAX_ECHOED: usize = 256;
const MAX_MESSAGE: usize = 2048;

/// `msg` with every run longer than [`MAX_ECHOED`] cut, and the whole kept under [`MAX_MESSAGE`],
/// each cut marked with how much was left out.
fn cut_inputs(msg: &str) -> String {
    fn head(s: &str, max: usize) -> &str {
        let mut end = max.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        &s[..end]
    }
    if msg.len() <= MAX_ECHOED {
        return msg.to_owned();
    }
    let mut out = String::with_capacity(msg.len().min(MAX_MESSAGE + 64));
    let mut rest = msg;
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, after) = rest.split_at(word_end);
        if word.len() > MAX_ECHOED {
            let kept = head(word, MAX_ECHOED);
            out.push_str(kept);
            out.push_str(&format!("...({} bytes cut)", word.len() - kept.len()));
        } else {
            out.push_str(word);
        }
        let space_end = after
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(after.len());
        out.push_str(&after[..space_end]);
        rest = &after[space_end..];
        if out.len() > MAX_MESSAGE {
            let kept = head(&out, MAX_MESSAGE).len();
            let cut = out.len() - kept + rest.len();
            out.truncate(kept);
            out.push_str(&format!("...({cut} bytes cut)"));
            break;
        }
    }
    out
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

    #[test]
    fn echoed_inputs_are_cut_to_a_header_a_client_accepts() {
        let id = "a".repeat(100_000);
        let s: Status = Error::NotFound(format!("container {id:?}")).into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().len() < 400, "{}", s.message().len());
        assert!(
            s.message().starts_with("container \"aaaa"),
            "{}",
            s.message()
        );
        assert!(s.message().contains("bytes cut)"), "{}", s.message());
        // Many short words: the message as a whole is bounded too.
        let words = "ab ".repeat(10_000);
        let s: Status = Error::InvalidArgument(words).into();
        assert!(
            s.message().len() < MAX_MESSAGE + 64,
            "{}",
            s.message().len()
        );
        assert!(s.message().ends_with("bytes cut)"));
        // Short messages and multi-byte text are kept whole or cut on a char boundary.
        assert_eq!(cut_inputs("not found"), "not found");
        let wide = "é".repeat(300);
        assert!(cut_inputs(&wide).contains("bytes cut)"));
    }

    #[test]
    fn sandbox_errors_map_by_kind() {
        use carapace_podsandbox::Error as E;
        let s: Status = Error::from(E::InvalidSysctl {
            key: "kernel.core_pattern".into(),
            reason: "not a namespaced sysctl".into(),
        })
        .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let s: Status = Error::from(E::NotFound("abc".into())).into();
        assert_eq!(s.code(), Code::NotFound);
        let plugin = carapace_cni::Error::Plugin {
            plugin: "bridge".into(),
            command: "ADD",
            code: 11,
            msg: "no IP addresses available".into(),
            details: String::new(),
        };
        let s: Status = Error::from(E::Network(plugin)).into();
        assert_eq!(s.code(), Code::Internal);
        assert!(
            s.message().contains("no IP addresses available"),
            "{}",
            s.message()
        );
        let hung = carapace_cni::Error::Timeout {
            plugin: "hang".into(),
            command: "ADD",
            after: std::time::Duration::from_secs(2),
        };
        let s: Status = Error::from(E::Network(hung)).into();
        assert_eq!(s.code(), Code::DeadlineExceeded);
        assert!(
            s.message().contains("hang ADD timed out"),
            "{}",
            s.message()
        );
    }

    #[test]
    fn container_errors_map_by_kind() {
        use carapace_runtime::Error as E;
        let s: Status = Error::from(E::DeadlineExceeded("exec timed out".into())).into();
        assert_eq!(s.code(), Code::DeadlineExceeded);
        let s: Status = Error::from(E::FailedPrecondition("not running".into())).into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            Status::from(Error::AlreadyExists("x".into())).code(),
            Code::AlreadyExists
        );
    }

    #[test]
    fn image_errors_map_by_kind() {
        use carapace_imageservice::Error as E;
        let s: Status = Error::from(E::Unauthorized {
            host: "r".into(),
            message: "401: bad password".into(),
        })
        .into();
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(s.message().contains("bad password"), "{}", s.message());
        let bad = carapace_imageservice::Reference::parse("Bad").unwrap_err();
        assert_eq!(Status::from(Error::from(bad)).code(), Code::InvalidArgument);
        let s: Status = Error::from(E::ImageNotFound("x".into())).into();
        assert_eq!(s.code(), Code::NotFound);
        let s: Status = Error::from(E::DiskFull {
            root: "/var/lib/carapace".into(),
            context: "writing a blob".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        })
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(s.message().contains("/var/lib/carapace"), "{}", s.message());
    }
}
