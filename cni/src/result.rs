//! Results of ADD (CNI spec "Success"), for versions 0.3.0 to 1.1.0, which share one format apart
//! from the per-IP `version` field that 1.0.0 dropped.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{is_supported, parse_version};

/// The parsed result of a network ADD, and the result as the plugin printed it (kept for
/// `prevResult` and the cache).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    raw: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The namespace path for an interface inside the container; empty for host-side interfaces.
    #[serde(default)]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination in CIDR notation.
    pub dst: String,
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Dns {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Deserialize)]
struct WireResult {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<WireIp>,
    #[serde(default)]
    routes: Vec<WireRoute>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Deserialize)]
struct WireIp {
    address: String,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct WireRoute {
    dst: String,
    #[serde(default)]
    gw: Option<IpAddr>,
}

impl AttachmentResult {
    /// Parses a result as a plugin printed it.
    pub fn from_json(value: Value) -> Result<Self, String> {
        // serde also reads a struct from an array of its fields in order, which no plugin
        // means: such a result would be chained to the next plugin as it is, unconverted.
        if !shaped_as_objects(&value) {
            return Err("result is not a JSON object of objects".into());
        }
        let wire: WireResult = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        if !is_supported(&wire.cni_version) {
            return Err(format!(
                "unsupported result cniVersion {:?}",
                wire.cni_version
            ));
        }
        let ips = wire
            .ips
            .into_iter()
            .map(|ip| {
                let (address, prefix_len) = parse_cidr(&ip.address)?;
                if let Some(i) = ip.interface
                    && i >= wire.interfaces.len()
                {
                    return Err(format!(
                        "ip {} names interface {i}, which does not exist",
                        ip.address
                    ));
                }
                Ok(IpConfig {
                    address,
                    prefix_len,
                    gateway: ip.gateway,
                    interface: ip.interface,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let routes = wire
            .routes
            .into_iter()
            .map(|r| {
                parse_cidr(&r.dst)?;
                Ok(Route {
                    dst: r.dst,
                    gw: r.gw,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            cni_version: wire.cni_version,
            interfaces: wire.interfaces,
            ips,
            routes,
            dns: wire.dns,
            raw: value,
        })
    }

    /// The result as the plugin printed it.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// The addresses assigned, in the plugin's order (the first is the pod's primary IP).
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.ips.iter().map(|i| i.address).collect()
    }

    /// The result in another version's format, as it is passed as `prevResult` to a plugin of
    /// that version (libcni converts the same way).
    pub(crate) fn converted_to(&self, version: &str) -> Value {
        let mut v = self.raw.clone();
        let Some(obj) = v.as_object_mut() else {
            return v;
        };
        obj.insert("cniVersion".into(), version.into());
        let pre_1 = parse_version(version).is_some_and(|(major, _, _)| major == 0);
        if let Some(Value::Array(ips)) = obj.get_mut("ips") {
            for (ip, parsed) in ips.iter_mut().zip(&self.ips) {
                if let Some(m) = ip.as_object_mut() {
                    if pre_1 {
                        let family = if parsed.address.is_ipv4() { "4" } else { "6" };
                        m.insert("version".into(), family.into());
                    } else {
                        m.remove("version");
                    }
                }
            }
        }
        v
    }
}

/// Whether the result and the entries of its lists are JSON objects, as the spec has them.
fn shaped_as_objects(v: &Value) -> bool {
    let list = |key: &str| {
        // null as absent: a Go plugin's nil slice without omitempty.
        v.get(key).is_none_or(|l| {
            l.is_null()
                || l.as_array()
                    .is_some_and(|items| items.iter().all(Value::is_object))
        })
    };
    v.is_object()
        && list("interfaces")
        && list("ips")
        && list("routes")
        && v.get("dns").is_none_or(|d| d.is_null() || d.is_object())
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not in CIDR notation"))?;
    let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?}: bad address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{s:?}: bad prefix length"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("{s:?}: prefix length over {max}"));
    }
    Ok((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_1_0_0_result_and_converts_to_0_4_0() {
        let r = AttachmentResult::from_json(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","sandbox":"/run/x/net"}],
            "ips": [{"address":"10.88.0.5/16","gateway":"10.88.0.1","interface":1},
                    {"address":"fd00::5/64","interface":1}],
            "routes": [{"dst":"0.0.0.0/0","gw":"10.88.0.1"}],
            "dns": {"nameservers":["10.0.0.10"],"search":["svc.cluster.local"]}
        }))
        .unwrap();
        assert_eq!(
            r.addresses(),
            [
                "10.88.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(r.ips[0].prefix_len, 16);
        assert_eq!(r.interfaces[1].sandbox, "/run/x/net");
        assert_eq!(r.dns.nameservers, ["10.0.0.10"]);
        let old = r.converted_to("0.4.0");
        assert_eq!(old["cniVersion"], "0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        let back = AttachmentResult::from_json(old)
            .unwrap()
            .converted_to("1.1.0");
        assert!(back["ips"][0].get("version").is_none());
    }

    #[test]
    fn refuses_bad_results() {
        assert!(AttachmentResult::from_json(json!({"cniVersion":"0.2.0","ip4":{}})).is_err());
        assert!(
            AttachmentResult::from_json(
                json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1"}]})
            )
            .is_err()
        );
        assert!(
            AttachmentResult::from_json(
                json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/8","interface":3}]})
            )
            .is_err()
        );
        assert!(
            AttachmentResult::from_json(
                json!({"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/33"}]})
            )
            .is_err()
        );
    }

    /// Found by fuzzing (fuzz/fuzz_targets/cni_result.rs): serde reads a struct from an array
    /// of its fields, so these parsed, and were chained as `prevResult` unconverted.
    #[test]
    fn refuses_results_that_are_arrays_rather_than_objects() {
        assert!(AttachmentResult::from_json(json!(["1.1.0", []])).is_err());
        assert!(
            AttachmentResult::from_json(
                json!({"cniVersion":"1.0.0","ips":[["10.0.0.1/8", null, 0]],"interfaces":[{"name":"eth0"}]})
            )
            .is_err()
        );
        assert!(
            AttachmentResult::from_json(
                json!({"cniVersion":"1.0.0","interfaces":[["eth0", "", 1500, ""]]})
            )
            .is_err()
        );
        assert!(AttachmentResult::from_json(json!({"cniVersion":"1.0.0","dns":[[]]})).is_err());
        assert!(
            AttachmentResult::from_json(json!({"cniVersion":"1.0.0","routes":[["0.0.0.0/0"]]}))
                .is_err()
        );
    }
}
