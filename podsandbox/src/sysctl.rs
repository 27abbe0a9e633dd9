//! Pod sysctls: only namespaced ones, and only for namespaces the pod owns, with keys and values
//! checked so that nothing but one setting is written per key. CRI-O's CVE-2022-0811 came from a
//! value that smuggled a second `key=value` into a joined list; here each key is written to its own
//! `/proc/sys` file, and values with separators or control characters are refused anyway.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::Error;

/// Which of the pod's namespaces a sysctl lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    Net,
    Ipc,
}

/// A validated sysctl: its path under `/proc/sys` and the value to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub path: PathBuf,
    pub value: String,
    pub namespace: SysctlNamespace,
}

/// The namespace of a sysctl from its dotted name, or `None` if it is not namespaced (the
/// Kubernetes list: `kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`, `net.*`).
fn namespace_of(name: &str) -> Option<SysctlNamespace> {
    if name.starts_with("net.") {
        Some(SysctlNamespace::Net)
    } else if name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name == "kernel.sem"
        || name.starts_with("fs.mqueue.")
    {
        Some(SysctlNamespace::Ipc)
    } else {
        None
    }
}

/// Splits a key in either form Kubernetes accepts: dotted (`net.ipv4.conf.eth0/100.rp_filter`,
/// where `/` stands for a dot inside a component) or slashed (`net/ipv4/conf/eth0.100/rp_filter`).
fn components(key: &str) -> Vec<String> {
    let slashed = match (key.find('.'), key.find('/')) {
        (Some(d), Some(s)) => s < d,
        (None, Some(_)) => true,
        _ => false,
    };
    if slashed {
        key.split('/').map(str::to_owned).collect()
    } else {
        key.split('.').map(|c| c.replace('/', ".")).collect()
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> Error {
    Error::InvalidSysctl {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Validates every sysctl of a pod against its namespace options.
pub fn validate(
    sysctls: &BTreeMap<String, String>,
    host_network: bool,
    host_ipc: bool,
) -> Result<Vec<Sysctl>, Error> {
    sysctls
        .iter()
        .map(|(key, value)| {
            if key.is_empty() || key.len() > 256 {
                return Err(invalid(key, "bad length"));
            }
            let parts = components(key);
            for p in &parts {
                let ok = !p.is_empty()
                    && p != "."
                    && p != ".."
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                if !ok {
                    return Err(invalid(key, format!("invalid component {p:?}")));
                }
            }
            let dotted = parts.join(".");
            let namespace =
                namespace_of(&dotted).ok_or_else(|| invalid(key, "not a namespaced sysctl"))?;
            match namespace {
                SysctlNamespace::Net if host_network => {
                    return Err(invalid(
                        key,
                        "a net.* sysctl needs the pod's own network namespace",
                    ));
                }
                SysctlNamespace::Ipc if host_ipc => {
                    return Err(invalid(
                        key,
                        "an IPC sysctl needs the pod's own IPC namespace",
                    ));
                }
                _ => {}
            }
            // Values are numbers or short words, sometimes several separated by blanks
            // (`kernel.sem`, `net.ipv4.ip_local_port_range`); nothing else is needed.
            let value_ok = !value.is_empty()
                && value.len() <= 256
                && value.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, ' ' | '\t' | '.' | '-' | '_' | ':' | ',')
                });
            if !value_ok {
                return Err(invalid(key, format!("invalid value {value:?}")));
            }
            Ok(Sysctl {
                path: parts.iter().collect(),
                value: value.clone(),
                namespace,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(k: &str, v: &str, host_net: bool) -> Result<Sysctl, Error> {
        validate(
            &BTreeMap::from([(k.to_owned(), v.to_owned())]),
            host_net,
            false,
        )
        .map(|mut v| v.remove(0))
    }

    #[test]
    fn namespaced_sysctls_pass_in_both_key_forms() {
        let s = one("net.ipv4.ip_unprivileged_port_start", "0", false).unwrap();
        assert_eq!(s.path, PathBuf::from("net/ipv4/ip_unprivileged_port_start"));
        assert_eq!(s.namespace, SysctlNamespace::Net);
        let s = one("net.ipv4.conf.eth0/100.rp_filter", "1", false).unwrap();
        assert_eq!(s.path, PathBuf::from("net/ipv4/conf/eth0.100/rp_filter"));
        let s = one("net/ipv4/conf/eth0.100/rp_filter", "1", false).unwrap();
        assert_eq!(s.path, PathBuf::from("net/ipv4/conf/eth0.100/rp_filter"));
        let s = one("kernel.sem", "250 32000 100 128", false).unwrap();
        assert_eq!(s.namespace, SysctlNamespace::Ipc);
        one("kernel.shm_rmid_forced", "1", true).unwrap();
        one("fs.mqueue.msg_max", "20", false).unwrap();
    }

    #[test]
    fn cve_2022_0811_values_cannot_smuggle_a_second_setting() {
        for v in [
            "1+kernel.core_pattern=|/tmp/x",
            "1\nkernel.core_pattern=|/tmp/x",
            "1=2",
            "1;kernel.shmmax=1",
            "",
            "1/../../x",
        ] {
            assert!(
                one("kernel.shm_rmid_forced", v, false).is_err(),
                "{v:?} accepted"
            );
        }
    }

    #[test]
    fn non_namespaced_or_malformed_keys_are_refused() {
        for k in [
            "kernel.core_pattern",
            "vm.overcommit_memory",
            "kernel.hostname",
            "net..ipv4",
            "net.ipv4.conf.all/../../../kernel.core_pattern",
            "net/../kernel/core_pattern",
            "net.ipv4.ip_forward+kernel.core_pattern",
            "fs.mqueue",
        ] {
            assert!(one(k, "1", false).is_err(), "{k:?} accepted");
        }
        // net.* needs the pod's own network namespace.
        assert!(one("net.ipv4.ip_forward", "1", true).is_err());
        let e = validate(
            &BTreeMap::from([("kernel.msgmax".into(), "1".into())]),
            false,
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("IPC"), "{e}");
    }
}
