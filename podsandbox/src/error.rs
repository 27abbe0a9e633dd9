use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid sandbox configuration: {0}")]
    InvalidConfig(String),
    #[error("sysctl {key:?} refused: {reason}")]
    InvalidSysctl { key: String, reason: String },
    #[error("cgroup parent {parent:?} refused: {reason}")]
    InvalidCgroupParent { parent: String, reason: String },
    #[error("pod sandbox {0:?} not found")]
    NotFound(String),
    #[error("pod sandbox id prefix {0:?} is ambiguous")]
    Ambiguous(String),
    #[error("the pod network is not ready: {0}")]
    NetworkNotReady(carapace_cni::Error),
    #[error(transparent)]
    Network(carapace_cni::Error),
    #[error("{op} {path}: {source}")]
    Kernel {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a shared PID namespace needs the infra program, and none is configured")]
    NoInfraProgram,
    #[error("sandbox state {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error(
        "pod sandbox {id} was not fully torn down (it is kept as NOTREADY; remove it again): {errors}"
    )]
    Teardown { id: String, errors: String },
}
