use std::path::PathBuf;
use std::time::Duration;

/// Everything a CNI operation can fail with. A plugin's own error (`{"code","msg","details"}` on its
/// stdout) comes back as [`Error::Plugin`] with the plugin's message intact, so the kubelet sees it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no valid CNI network configuration in {dir}{}", describe_skipped(.skipped))]
    NoNetwork {
        dir: PathBuf,
        /// Files that were read but refused, with the reason.
        skipped: Vec<(PathBuf, String)>,
    },
    #[error("invalid CNI configuration {path}: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("invalid CNI attachment: {0}")]
    InvalidAttachment(String),
    #[error("CNI plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("CNI plugin {plugin} {command} failed (code {code}): {msg}{}", describe_details(.details))]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} {command} failed with {status}: {stderr}")]
    PluginFailed {
        plugin: String,
        command: &'static str,
        status: String,
        stderr: String,
    },
    #[error("CNI plugin {plugin} {command} timed out after {after:?}")]
    Timeout {
        plugin: String,
        command: &'static str,
        after: Duration,
    },
    #[error("running CNI plugin {plugin}: {source}")]
    Exec {
        plugin: String,
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} returned an invalid result: {reason}")]
    BadResult { plugin: String, reason: String },
    #[error("unsupported CNI version {0:?}")]
    UnsupportedVersion(String),
    #[error(
        "no cached ADD result for network {network:?} container {container_id:?}: {what} needs one"
    )]
    NotCached {
        network: String,
        container_id: String,
        what: &'static str,
    },
    #[error("CNI result cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn describe_skipped(skipped: &[(PathBuf, String)]) -> String {
    skipped
        .iter()
        .map(|(p, r)| format!("; skipped {}: {r}", p.display()))
        .collect()
}

fn describe_details(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}
