//! What a network is attached to: one container's network namespace and interface, with the
//! `CNI_ARGS` and capability arguments (`runtimeConfig`) of the call.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Error, is_safe_name};

/// One attachment of a network to a container (the CNI spec's "container" and "ifname").
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Attachment {
    /// `CNI_CONTAINERID`; for a pod, the sandbox id.
    pub container_id: String,
    /// `CNI_NETNS`: the path of the network namespace (a pinned nsfs file).
    pub netns: PathBuf,
    /// `CNI_IFNAME`, `eth0` for a pod's primary network.
    pub ifname: String,
    /// `CNI_ARGS` pairs, sent after `IgnoreUnknown=1` (e.g. `K8S_POD_NAMESPACE`).
    pub args: Vec<(String, String)>,
    /// Capability arguments, each sent in `runtimeConfig` only to plugins that declare it.
    pub capabilities: Capabilities,
}

/// The well-known CNI capability arguments a runtime passes (CNI `CONVENTIONS.md`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub port_mappings: Vec<PortMapping>,
    pub ip_ranges: Vec<Vec<IpRange>>,
    pub dns: Option<DnsCapability>,
    pub bandwidth: Option<Bandwidth>,
    pub cgroup_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(default, rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsCapability {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// Rates in bits per second, bursts in bits, as the bandwidth plugin takes them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<u64>,
}

impl Capabilities {
    /// The capability arguments that are set, under their CNI names.
    pub(crate) fn to_runtime_config(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        if !self.port_mappings.is_empty() {
            put("portMappings", to_value(&self.port_mappings));
        }
        if !self.ip_ranges.is_empty() {
            put("ipRanges", to_value(&self.ip_ranges));
        }
        if let Some(dns) = &self.dns {
            put("dns", to_value(dns));
        }
        if let Some(b) = &self.bandwidth {
            put("bandwidth", to_value(b));
        }
        if let Some(c) = &self.cgroup_path {
            put("cgroupPath", Value::String(c.clone()));
        }
        m
    }
}

fn to_value<T: Serialize>(t: &T) -> Value {
    // These types are plain data with string keys: serialising them cannot fail.
    serde_json::to_value(t).unwrap_or(Value::Null)
}

impl Attachment {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |s: String| Err(Error::InvalidAttachment(s));
        if !is_safe_name(&self.container_id) {
            return bad(format!("invalid container id {:?}", self.container_id));
        }
        // IFNAMSIZ is 16 with the NUL; the kernel refuses `/`, whitespace, "." and "..".
        let ifname_ok = !self.ifname.is_empty()
            && self.ifname.len() < 16
            && self.ifname != "."
            && self.ifname != ".."
            && self
                .ifname
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
        if !ifname_ok {
            return bad(format!("invalid interface name {:?}", self.ifname));
        }
        for (k, v) in &self.args {
            let clean = |s: &str| !s.is_empty() && !s.contains([';', '=', '\0', '\n']);
            if !clean(k) || v.contains([';', '=', '\0', '\n']) {
                return bad(format!("invalid CNI_ARGS pair {k:?}={v:?}"));
            }
        }
        Ok(())
    }

    /// `CNI_ARGS`: `IgnoreUnknown=1` first so plugins accept keys they do not know.
    pub(crate) fn cni_args(&self) -> String {
        let mut s = String::from("IgnoreUnknown=1");
        for (k, v) in &self.args {
            s.push(';');
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_config_has_only_set_capabilities_with_cni_names() {
        let c = Capabilities {
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            ..Default::default()
        };
        let m = c.to_runtime_config();
        assert_eq!(m.len(), 1);
        assert_eq!(
            Value::Object(m)["portMappings"][0],
            serde_json::json!({"hostPort":8080,"containerPort":80,"protocol":"tcp"})
        );
    }

    #[test]
    fn cni_args_refuse_separators() {
        let mut a = Attachment {
            container_id: "abc".into(),
            ifname: "eth0".into(),
            args: vec![("K8S_POD_NAME".into(), "web".into())],
            ..Default::default()
        };
        a.validate().unwrap();
        assert_eq!(a.cni_args(), "IgnoreUnknown=1;K8S_POD_NAME=web");
        a.args.push(("X".into(), "a;Y=b".into()));
        assert!(a.validate().is_err());
        a.args.pop();
        a.ifname = "../eth0".into();
        assert!(a.validate().is_err());
    }
}
