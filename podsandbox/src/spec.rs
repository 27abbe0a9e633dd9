//! What a sandbox is asked to be: plain data that the CRI layer builds from a `PodSandboxConfig`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The pod a sandbox belongs to; together with `attempt`, what makes a `RunPodSandbox` the same call.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
}

impl Metadata {
    /// The unique name of a sandbox, as containerd forms it: a kubelet retry carries the same one.
    pub fn sandbox_name(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.name, self.namespace, self.uid, self.attempt
        )
    }
}

/// Whose namespace a pod uses, as the CRI's `NamespaceMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    /// One namespace for the whole pod.
    #[default]
    Pod,
    /// One per container: the sandbox creates none.
    Container,
    /// The host's.
    Node,
    /// Another container's; for the sandbox itself the same as `Container`.
    Target,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamespaceOptions {
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
}

impl NamespaceOptions {
    pub fn host_network(&self) -> bool {
        self.network == NamespaceMode::Node
    }
    pub fn host_ipc(&self) -> bool {
        self.ipc == NamespaceMode::Node
    }
}

/// One range of a user namespace's id map: `length` ids from `container_id` inside are
/// `host_id` onwards outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

/// A pod's own user namespace (the CRI's `userns_options` in mode POD), as the kubelet maps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: String,
}

/// Limits of the pod cgroup (the pod's resources plus its overhead), where the kubelet gives them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodResources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub memory_limit: Option<u64>,
    /// cgroup v2 files of the pod cgroup and their values (`linux.resources.unified`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unified: BTreeMap<String, String>,
}

impl PodResources {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Everything a sandbox is made from.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SandboxConfig {
    pub metadata: Metadata,
    /// Empty: the host's name.
    pub hostname: String,
    pub log_directory: Option<PathBuf>,
    /// `None`: the host's `resolv.conf`.
    pub dns: Option<DnsConfig>,
    pub port_mappings: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub namespaces: NamespaceOptions,
    /// As the kubelet sends it for the configured cgroup driver; empty: no pod cgroup.
    pub cgroup_parent: String,
    pub sysctls: BTreeMap<String, String>,
    /// `None`: the host's user namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<UserNamespace>,
    pub resources: PodResources,
    pub runtime_handler: String,
}
