//! Which capabilities a container gets: containerd's default set, then the CRI's drop and add lists
//! (with `ALL`), or every capability for a privileged container. Pure name arithmetic; applying them
//! to a process is the executor's job, and this module must never touch the calling process.

use std::collections::BTreeSet;
use std::str::FromStr;

use crate::error::{Error, Result};

/// containerd's (and Docker's) default capability set for a non-privileged container.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// `NET_ADMIN`, `cap_net_admin` and `CAP_NET_ADMIN` all name one capability; `ALL` is kept as is.
fn normalize(name: &str) -> Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    caps::Capability::from_str(&full)
        .map(|c| c.to_string())
        .map_err(|_| Error::InvalidArgument(format!("unknown capability {name:?}")))
}

/// Every capability this build knows (the executor further limits it to the bounding set).
pub fn all_capabilities() -> BTreeSet<String> {
    caps::all().into_iter().map(|c| c.to_string()).collect()
}

/// The container's capability names, as containerd computes them: drops first (`ALL` empties the
/// set), then adds (`ALL` fills it). Privileged gets everything.
pub fn resolve(privileged: bool, add: &[String], drop: &[String]) -> Result<BTreeSet<String>> {
    if privileged {
        return Ok(all_capabilities());
    }
    let add = add
        .iter()
        .map(|n| normalize(n))
        .collect::<Result<Vec<_>>>()?;
    let drop = drop
        .iter()
        .map(|n| normalize(n))
        .collect::<Result<Vec<_>>>()?;
    let mut set: BTreeSet<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    if drop.iter().any(|d| d == "ALL") {
        set.clear();
    } else {
        for d in &drop {
            set.remove(d);
        }
    }
    if add.iter().any(|a| a == "ALL") {
        set = all_capabilities();
    } else {
        set.extend(add);
    }
    Ok(set)
}

/// The OCI spec's capability as the `caps` crate names it (`None` for one it does not know).
pub(crate) fn kernel_cap(c: &oci_spec::runtime::Capability) -> Option<caps::Capability> {
    serde_json::to_value(c).ok()?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_is_containerds() {
        let s = resolve(false, &[], &[]).unwrap();
        assert_eq!(s.len(), 14);
        assert!(s.contains("CAP_NET_RAW"));
        assert!(!s.contains("CAP_SYS_ADMIN"));
    }

    #[test]
    fn add_and_drop_accept_short_names() {
        let s = resolve(false, &["net_admin".into()], &["NET_RAW".into()]).unwrap();
        assert!(s.contains("CAP_NET_ADMIN"));
        assert!(!s.contains("CAP_NET_RAW"));
    }

    #[test]
    fn drop_all_then_add_keeps_only_the_added() {
        let s = resolve(false, &["CAP_KILL".into()], &["ALL".into()]).unwrap();
        assert_eq!(s.into_iter().collect::<Vec<_>>(), vec!["CAP_KILL"]);
    }

    #[test]
    fn unknown_names_are_invalid() {
        assert!(matches!(
            resolve(false, &["CAP_FLY".into()], &[]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn privileged_gets_everything() {
        assert!(resolve(true, &[], &[]).unwrap().contains("CAP_SYS_ADMIN"));
    }
}
