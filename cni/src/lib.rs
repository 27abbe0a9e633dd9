//! A CNI client that follows the CNI specification: it loads network configuration lists from the
//! configuration directory, finds plugins in the plugin directories, runs ADD, CHECK and DEL with the
//! environment and stdin the spec defines, and parses their results. It knows nothing of pods beyond
//! a container id, a network namespace path, an interface name and the `CNI_ARGS` it is handed; it
//! never enters a namespace itself (the plugins do).
//!
//! Supported versions are those whose result format is the one of 0.3.0 onwards (0.3.0 to 1.1.0);
//! results are converted to the network's version when chained as `prevResult`, as libcni does.
#![deny(unsafe_code)]

mod attachment;
mod cache;
mod error;
mod exec;
#[doc(hidden)]
pub mod fuzzing;
mod network;
mod result;

pub use attachment::{Attachment, Bandwidth, Capabilities, DnsCapability, IpRange, PortMapping};
pub use cache::{remove_stale_temps, write_durable};
pub use error::Error;
pub use exec::{Cni, DEFAULT_TIMEOUT};
pub use network::{Network, load_network};
pub use result::{AttachmentResult, Dns, Interface, IpConfig, Route};

/// CNI versions whose configuration and result carapace understands.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// `(major, minor, patch)` of a version string, or `None` if it is not one.
pub(crate) fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let parsed = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(parsed)
}

pub(crate) fn is_supported(v: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&v)
}

/// A name that is safe both for the CNI spec (network names, container ids) and as a cache file
/// name component: starts alphanumeric, then alphanumerics, `_`, `.`, `-`.
pub(crate) fn is_safe_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && s.len() <= 255
}
