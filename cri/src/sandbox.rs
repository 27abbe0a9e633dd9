//! `RunPodSandbox`, `StopPodSandbox`, `RemovePodSandbox`, `PodSandboxStatus`, `ListPodSandbox` and the
//! `NetworkReady` condition: CRI messages turned into [`carapace_podsandbox`] plain data and back.
//! The sandbox store blocks (namespaces, CNI plugins), so every call runs on the blocking pool.
//!
//! Interpretations: Stop and Remove of an unknown id succeed (the kubelet retries them after a
//! restart); ids may be given as a unique prefix, as crictl users do.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use carapace_podsandbox as pods;
use prost::Message;

use crate::api::*;
use crate::error::Error;
use crate::listing::{EncodedItems, KeptAnswer, POD_STATE, answer};

/// What the RPC handlers call; `None` store: the daemon was built without one.
#[derive(Clone)]
pub(crate) struct SandboxApi {
    store: Option<Arc<pods::Sandboxes>>,
    /// Each pod's ListPodSandbox item, encoded once.
    encoded: Arc<EncodedItems>,
    /// The last unfiltered answer.
    unfiltered: Arc<KeptAnswer>,
}

impl SandboxApi {
    pub(crate) fn new(store: Option<Arc<pods::Sandboxes>>) -> Self {
        Self {
            store,
            encoded: Default::default(),
            unfiltered: Default::default(),
        }
    }

    fn store(&self) -> Result<Arc<pods::Sandboxes>, Error> {
        self.store
            .clone()
            .ok_or_else(|| Error::Unavailable("the pod sandbox store".into()))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&pods::Sandboxes) -> Result<T, pods::Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.store()?;
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Internal(format!("sandbox task: {e}")))?
            .map_err(Error::from)
    }

    pub(crate) async fn run(
        &self,
        req: RunPodSandboxRequest,
    ) -> Result<RunPodSandboxResponse, Error> {
        let config = sandbox_config(req.config.unwrap_or_default(), req.runtime_handler)?;
        tracing::Span::current().record("pod_id", config.metadata.sandbox_name().as_str());
        let id = self.blocking(move |s| s.run(config)).await?;
        Ok(RunPodSandboxResponse { pod_sandbox_id: id })
    }

    pub(crate) async fn stop(
        &self,
        req: StopPodSandboxRequest,
    ) -> Result<StopPodSandboxResponse, Error> {
        let id = req.pod_sandbox_id;
        tracing::Span::current().record("pod_id", id.as_str());
        match self.blocking(move |s| s.stop(&id)).await {
            Ok(()) | Err(Error::Sandbox(pods::Error::NotFound(_))) => Ok(StopPodSandboxResponse {}),
            Err(e) => Err(e),
        }
    }

    /// UpdatePodSandboxResources: the pod cgroup sized anew from the request's resources and
    /// overhead, summed as for RunPodSandbox; the containers' own limits stay. NotFound for an
    /// unknown pod (a resize is not idempotent the way a stop is).
    pub(crate) async fn update_resources(
        &self,
        req: UpdatePodSandboxResourcesRequest,
    ) -> Result<UpdatePodSandboxResourcesResponse, Error> {
        let id = req.pod_sandbox_id;
        if id.is_empty() {
            return Err(Error::InvalidArgument("pod_sandbox_id is required".into()));
        }
        tracing::Span::current().record("pod_id", id.as_str());
        let linux = LinuxPodSandboxConfig {
            resources: req.resources,
            overhead: req.overhead,
            ..Default::default()
        };
        let resources = resources(&linux);
        self.blocking(move |s| s.update_resources(&id, resources))
            .await?;
        Ok(UpdatePodSandboxResourcesResponse {})
    }

    pub(crate) async fn remove(
        &self,
        req: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse, Error> {
        let id = req.pod_sandbox_id;
        tracing::Span::current().record("pod_id", id.as_str());
        match self.blocking(move |s| s.remove(&id)).await {
            Ok(()) | Err(Error::Sandbox(pods::Error::NotFound(_))) => {
                Ok(RemovePodSandboxResponse {})
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn status(
        &self,
        req: PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse, Error> {
        let store = self.store()?;
        let id = store.resolve(&req.pod_sandbox_id)?;
        let sb = store
            .get(&id)
            .ok_or(Error::Sandbox(pods::Error::NotFound(id)))?;
        let mut info = HashMap::new();
        if req.verbose {
            info.insert("info".to_owned(), verbose_info(&sb).to_string());
        }
        Ok(PodSandboxStatusResponse {
            status: Some(status(&sb)),
            info,
            ..Default::default()
        })
    }

    /// ListPodSandbox as the daemon answers it: encoded, from each pod's kept encoding.
    pub(crate) async fn list_encoded(&self, req: ListPodSandboxRequest) -> Result<Bytes, Error> {
        let store = self.store()?;
        let filter = req.filter.unwrap_or_default();
        let unfiltered = filter == PodSandboxFilter::default();
        let changes = store.changes();
        if unfiltered && let Some(answer) = self.unfiltered.get(changes) {
            return Ok(answer);
        }
        let mut kept = self.encoded.lock();
        let mut seen = 0usize;
        let items = store.list_map(|sb| {
            seen += 1;
            if !matches(&filter, sb) {
                return None;
            }
            let bytes = kept.get(&sb.id, sb.created_at, || {
                // The state is appended per answer: encoded as the default, it is left out.
                PodSandbox {
                    id: sb.id.clone(),
                    metadata: Some(metadata(&sb.config.metadata)),
                    state: 0,
                    created_at: sb.created_at,
                    labels: to_map(&sb.config.labels),
                    annotations: to_map(&sb.config.annotations),
                    runtime_handler: sb.config.runtime_handler.clone(),
                }
                .encode_to_vec()
            });
            Some((bytes, state(sb.state) as i32))
        });
        if kept.len() > seen {
            // Pods were removed: forget their items (the locks in the same order as above).
            let live: HashSet<String> = store
                .list_map(|sb| Some(sb.id.clone()))
                .into_iter()
                .collect();
            kept.prune(live.len(), |id| live.contains(id));
        }
        let answer = answer(items.iter().map(|(b, s)| (&b[..], *s)), POD_STATE);
        if unfiltered {
            self.unfiltered.keep(changes, &answer);
        }
        Ok(answer)
    }

    /// ListPodSandbox as a message, decoded from the answer the daemon sends.
    pub(crate) async fn list(
        &self,
        req: ListPodSandboxRequest,
    ) -> Result<ListPodSandboxResponse, Error> {
        crate::listing::decode(self.list_encoded(req).await?, "pod list")
    }
}

/// The `NetworkReady` condition: true while the CNI configuration dir holds a valid network, as
/// containerd and CRI-O report it; read afresh on every call, so it turns true without a restart.
pub(crate) fn network_condition(conf_dir: &std::path::Path) -> RuntimeCondition {
    match carapace_cni::load_network(conf_dir) {
        Ok(n) => RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: true,
            reason: "NetworkConfigFound".into(),
            message: format!("network {:?} from {}", n.name(), n.source().display()),
        },
        Err(e) => RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: format!("Network plugin returns error: {e}"),
        },
    }
}

fn matches(f: &PodSandboxFilter, sb: &pods::Sandbox) -> bool {
    (f.id.is_empty() || sb.id.starts_with(&f.id))
        && f.state
            .as_ref()
            .is_none_or(|s| s.state == state(sb.state) as i32)
        && f.label_selector
            .iter()
            .all(|(k, v)| sb.config.labels.get(k) == Some(v))
}

fn state(s: pods::SandboxState) -> PodSandboxState {
    match s {
        pods::SandboxState::Ready => PodSandboxState::SandboxReady,
        pods::SandboxState::Creating | pods::SandboxState::NotReady => {
            PodSandboxState::SandboxNotready
        }
    }
}

fn metadata(m: &pods::Metadata) -> PodSandboxMetadata {
    PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

fn to_map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn mode_to_cri(m: pods::NamespaceMode) -> i32 {
    (match m {
        pods::NamespaceMode::Pod => NamespaceMode::Pod,
        pods::NamespaceMode::Container => NamespaceMode::Container,
        pods::NamespaceMode::Node => NamespaceMode::Node,
        pods::NamespaceMode::Target => NamespaceMode::Target,
    }) as i32
}

fn mode_from_cri(m: i32) -> Result<pods::NamespaceMode, Error> {
    match NamespaceMode::try_from(m) {
        Ok(NamespaceMode::Pod) => Ok(pods::NamespaceMode::Pod),
        Ok(NamespaceMode::Container) => Ok(pods::NamespaceMode::Container),
        Ok(NamespaceMode::Node) => Ok(pods::NamespaceMode::Node),
        Ok(NamespaceMode::Target) => Ok(pods::NamespaceMode::Target),
        Err(_) => Err(Error::InvalidArgument(format!(
            "unknown namespace mode {m}"
        ))),
    }
}

pub(crate) fn status(sb: &pods::Sandbox) -> PodSandboxStatus {
    let ns = sb.config.namespaces;
    let mut ips = sb.ips.iter().map(|ip| ip.to_string());
    PodSandboxStatus {
        id: sb.id.clone(),
        metadata: Some(metadata(&sb.config.metadata)),
        state: state(sb.state) as i32,
        created_at: sb.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: ips.next().unwrap_or_default(),
            additional_ips: ips.map(|ip| PodIp { ip }).collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(NamespaceOption {
                    network: mode_to_cri(ns.network),
                    pid: mode_to_cri(ns.pid),
                    ipc: mode_to_cri(ns.ipc),
                    userns_options: Some(userns_to_cri(sb.config.userns.as_ref())),
                    ..Default::default()
                }),
            }),
        }),
        labels: to_map(&sb.config.labels),
        annotations: to_map(&sb.config.annotations),
        runtime_handler: sb.config.runtime_handler.clone(),
    }
}

fn mappings_to_cri(m: &[pods::IdMapping]) -> Vec<IdMapping> {
    m.iter()
        .map(|m| IdMapping {
            host_id: m.host_id,
            container_id: m.container_id,
            length: m.length,
        })
        .collect()
}

fn mappings_from_cri(m: &[IdMapping]) -> Vec<pods::IdMapping> {
    m.iter()
        .map(|m| pods::IdMapping {
            host_id: m.host_id,
            container_id: m.container_id,
            length: m.length,
        })
        .collect()
}

/// The pod's user namespace as the CRI reports it: its mappings in mode POD, or mode NODE.
pub(crate) fn userns_to_cri(u: Option<&pods::UserNamespace>) -> UserNamespace {
    match u {
        Some(u) => UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: mappings_to_cri(&u.uids),
            gids: mappings_to_cri(&u.gids),
        },
        None => UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        },
    }
}

/// `userns_options`: none or NODE is the host's user namespace; POD is one of the pod's own with
/// the kubelet's mappings (checked by the store); CONTAINER and TARGET do not exist for it.
pub(crate) fn userns_from_cri(
    u: Option<&UserNamespace>,
) -> Result<Option<pods::UserNamespace>, Error> {
    let Some(u) = u else { return Ok(None) };
    match NamespaceMode::try_from(u.mode) {
        Ok(NamespaceMode::Node) if u.uids.is_empty() && u.gids.is_empty() => Ok(None),
        Ok(NamespaceMode::Node) => Err(Error::InvalidArgument(
            "user namespace mode NODE takes no mappings".into(),
        )),
        Ok(NamespaceMode::Pod) => Ok(Some(pods::UserNamespace {
            uids: mappings_from_cri(&u.uids),
            gids: mappings_from_cri(&u.gids),
        })),
        _ => Err(Error::InvalidArgument(format!(
            "user namespace mode {} is not supported (only POD and NODE are)",
            u.mode
        ))),
    }
}

/// The verbose `info`: where the sandbox's pieces are, for crictl inspectp and debugging.
fn verbose_info(sb: &pods::Sandbox) -> serde_json::Value {
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    serde_json::json!({
        "id": sb.id,
        "dir": sb.dir.display().to_string(),
        "hostname": sb.hostname,
        "network": sb.network,
        "namespaces": {
            "network": path(&sb.namespaces.net),
            "ipc": path(&sb.namespaces.ipc),
            "uts": path(&sb.namespaces.uts),
            "pid": path(&sb.namespaces.pid),
            "user": path(&sb.namespaces.user),
        },
        "infraPid": sb.infra.map(|i| i.pid),
        "cgroupParent": sb.config.cgroup_parent,
        "cgroupPath": sb.cgroup.as_ref().map(|c| c.path.display().to_string()),
        "files": {
            "hostname": sb.hostname_path.display().to_string(),
            "hosts": sb.hosts_path.display().to_string(),
            "resolvConf": sb.resolv_conf_path.display().to_string(),
            "shm": path(&sb.shm),
        },
    })
}

fn positive<T: TryFrom<i64>>(v: i64) -> Option<T> {
    if v > 0 { T::try_from(v).ok() } else { None }
}

/// The pod cgroup's limits: its resources plus its overhead, as the kubelet sizes the pod cgroup.
fn resources(linux: &LinuxPodSandboxConfig) -> pods::PodResources {
    let sum = |f: fn(&LinuxContainerResources) -> i64| {
        let total: i64 = [&linux.resources, &linux.overhead]
            .into_iter()
            .flatten()
            .map(f)
            .filter(|v| *v > 0)
            .sum();
        total
    };
    let period = [&linux.resources, &linux.overhead]
        .into_iter()
        .flatten()
        .map(|r| r.cpu_period)
        .find(|p| *p > 0);
    // Files, not amounts: the resources' value of a key stands, the overhead adds only its own.
    let unified = [&linux.overhead, &linux.resources]
        .into_iter()
        .flatten()
        .flat_map(|r| r.unified.clone())
        .collect();
    pods::PodResources {
        cpu_shares: positive(sum(|r| r.cpu_shares)),
        cpu_quota: positive(sum(|r| r.cpu_quota)),
        cpu_period: period.and_then(positive),
        memory_limit: positive(sum(|r| r.memory_limit_in_bytes)),
        unified,
    }
}

/// A `PodSandboxConfig` as plain data; only shape is checked here, the store checks the rest.
pub(crate) fn sandbox_config(
    c: PodSandboxConfig,
    runtime_handler: String,
) -> Result<pods::SandboxConfig, Error> {
    let m = c
        .metadata
        .ok_or_else(|| Error::InvalidArgument("PodSandboxConfig.metadata is required".into()))?;
    let linux = c.linux.unwrap_or_default();
    let ns = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    // Merge or Strict: both are the containers' business (the kubelet copies the pod's policy into
    // each container's security context); the pod's infra process carries no group of its own.
    let policy = linux
        .security_context
        .as_ref()
        .map(|s| s.supplemental_groups_policy)
        .unwrap_or_default();
    if SupplementalGroupsPolicy::try_from(policy).is_err() {
        return Err(Error::InvalidArgument(format!(
            "unknown supplemental_groups_policy {policy}"
        )));
    }
    let port_mappings = c
        .port_mappings
        .iter()
        .map(|p| {
            let port = |v: i32, what: &str| {
                u16::try_from(v)
                    .map_err(|_| Error::InvalidArgument(format!("{what} {v} out of range")))
            };
            let protocol = match Protocol::try_from(p.protocol) {
                Ok(Protocol::Tcp) => "tcp",
                Ok(Protocol::Udp) => "udp",
                Ok(Protocol::Sctp) => "sctp",
                Err(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown protocol {}",
                        p.protocol
                    )));
                }
            };
            Ok(pods::PortMapping {
                protocol: protocol.into(),
                container_port: port(p.container_port, "container port")?,
                host_port: port(p.host_port, "host port")?,
                host_ip: p.host_ip.clone(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    // The daemon makes this directory: a relative one would land under its own working directory,
    // and `..` anywhere else on the node.
    if !c.log_directory.is_empty()
        && (!c.log_directory.starts_with('/')
            || c.log_directory.contains('\0')
            || std::path::Path::new(&c.log_directory)
                .components()
                .any(|p| p == std::path::Component::ParentDir))
    {
        return Err(Error::InvalidArgument(format!(
            "log_directory {:?} must be an absolute path without `..`",
            c.log_directory
        )));
    }
    Ok(pods::SandboxConfig {
        metadata: pods::Metadata {
            name: m.name,
            uid: m.uid,
            namespace: m.namespace,
            attempt: m.attempt,
        },
        hostname: c.hostname,
        log_directory: (!c.log_directory.is_empty()).then(|| c.log_directory.into()),
        dns: c.dns_config.map(|d| pods::DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        port_mappings,
        labels: c.labels.into_iter().collect(),
        annotations: c.annotations.into_iter().collect(),
        namespaces: pods::NamespaceOptions {
            network: mode_from_cri(ns.network)?,
            pid: mode_from_cri(ns.pid)?,
            ipc: mode_from_cri(ns.ipc)?,
        },
        resources: resources(&linux),
        cgroup_parent: linux.cgroup_parent,
        sysctls: linux.sysctls.into_iter().collect(),
        userns: userns_from_cri(ns.userns_options.as_ref())?,
        runtime_handler,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            labels: [("app".to_owned(), name.to_owned())].into(),
            port_mappings: vec![PortMapping {
                protocol: Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: String::new(),
            }],
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                resources: Some(LinuxContainerResources {
                    cpu_shares: 512,
                    memory_limit_in_bytes: 100,
                    ..Default::default()
                }),
                overhead: Some(LinuxContainerResources {
                    cpu_shares: 10,
                    memory_limit_in_bytes: 20,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn userns_options_become_the_pods_user_namespace_and_are_reported_back() {
        let m = IdMapping {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        };
        let pod = UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: vec![m],
            gids: vec![m],
        };
        let u = userns_from_cri(Some(&pod)).unwrap().unwrap();
        assert_eq!(userns_to_cri(Some(&u)), pod);
        assert_eq!(userns_from_cri(None).unwrap(), None);
        let node = UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..Default::default()
        };
        assert_eq!(userns_from_cri(Some(&node)).unwrap(), None);
        assert_eq!(userns_to_cri(None), node);
        for mode in [NamespaceMode::Container, NamespaceMode::Target] {
            let bad = UserNamespace {
                mode: mode as i32,
                ..Default::default()
            };
            assert!(matches!(
                userns_from_cri(Some(&bad)),
                Err(Error::InvalidArgument(_))
            ));
        }
        let node_with_maps = UserNamespace {
            mode: NamespaceMode::Node as i32,
            ..pod
        };
        assert!(userns_from_cri(Some(&node_with_maps)).is_err());
    }

    #[test]
    fn config_is_translated_with_overhead_added() {
        let c = sandbox_config(request("web"), "runc".into()).unwrap();
        assert_eq!(c.metadata.sandbox_name(), "web_default_uid-web_0");
        assert_eq!(c.namespaces.pid, pods::NamespaceMode::Container);
        assert_eq!(c.namespaces.network, pods::NamespaceMode::Pod);
        assert_eq!(c.port_mappings[0].protocol, "udp");
        assert_eq!(c.resources.cpu_shares, Some(522));
        assert_eq!(c.resources.memory_limit, Some(120));
        assert_eq!(c.resources.cpu_quota, None);
        assert!(c.resources.unified.is_empty());
        let mut with_unified = request("web");
        if let Some(l) = with_unified.linux.as_mut() {
            let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
            if let Some(r) = l.resources.as_mut() {
                r.unified = [kv("memory.oom.group", "1"), kv("memory.high", "max")].into();
            }
            if let Some(o) = l.overhead.as_mut() {
                o.unified = [kv("memory.high", "10"), kv("memory.min", "5")].into();
            }
        }
        let c = sandbox_config(with_unified, "runc".into()).unwrap();
        assert_eq!(
            c.resources.unified,
            [
                ("memory.high".to_owned(), "max".to_owned()),
                ("memory.min".to_owned(), "5".to_owned()),
                ("memory.oom.group".to_owned(), "1".to_owned()),
            ]
            .into()
        );
        assert!(sandbox_config(PodSandboxConfig::default(), String::new()).is_err());
        let mut bad = request("x");
        bad.port_mappings[0].host_port = 70000;
        assert!(sandbox_config(bad, String::new()).is_err());
        let mut strict = request("x");
        let sc = strict
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        sc.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        assert!(sandbox_config(strict, String::new()).is_ok());
        let mut bad = request("x");
        let sc = bad
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        sc.supplemental_groups_policy = 7;
        let e = sandbox_config(bad, String::new()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        for dir in ["logs/pod", "/var/log/pods/../../etc"] {
            let mut bad = request("x");
            bad.log_directory = dir.into();
            let e = sandbox_config(bad, String::new()).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{dir}: {e}");
        }
    }

    #[tokio::test]
    async fn without_a_store_sandbox_calls_are_unavailable() {
        let api = SandboxApi::new(None);
        let e = api
            .list(ListPodSandboxRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)));
    }

    #[tokio::test]
    async fn lifecycle_over_a_recording_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts =
            pods::Options::new(dir.path().join("state"), dir.path().join("net.d"), vec![]);
        opts.cgroup_root = dir.path().join("cgroup");
        let store =
            pods::Sandboxes::open(opts, Arc::new(pods::kernel::Recording::default())).unwrap();
        let api = SandboxApi::new(Some(Arc::new(store)));
        // Host network needs no CNI; the host's resolv.conf and hosts are copied.
        let mut cfg = request("web");
        if let Some(l) = cfg.linux.as_mut() {
            l.security_context = Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let run = |cfg: PodSandboxConfig| RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        };
        let id = api.run(run(cfg.clone())).await.unwrap().pod_sandbox_id;
        assert_eq!(
            api.run(run(cfg)).await.unwrap().pod_sandbox_id,
            id,
            "a retry is the same sandbox"
        );

        let s = api
            .status(PodSandboxStatusRequest {
                pod_sandbox_id: id[..10].into(),
                verbose: true,
            })
            .await
            .unwrap();
        let st = s.status.unwrap();
        assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
        let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
        assert_eq!(info["namespaces"]["network"], serde_json::Value::Null);

        let list = |filter: PodSandboxFilter| {
            let api = api.clone();
            async move {
                api.list(ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await
                .unwrap()
                .items
                .len()
            }
        };
        let labels = |v: &str| [("app".to_owned(), v.to_owned())].into();
        assert_eq!(
            list(PodSandboxFilter {
                label_selector: labels("web"),
                ..Default::default()
            })
            .await,
            1
        );
        assert_eq!(
            list(PodSandboxFilter {
                label_selector: labels("db"),
                ..Default::default()
            })
            .await,
            0
        );
        api.stop(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
        let not_ready = PodSandboxStateValue {
            state: PodSandboxState::SandboxNotready as i32,
        };
        assert_eq!(
            list(PodSandboxFilter {
                state: Some(not_ready),
                ..Default::default()
            })
            .await,
            1
        );
        api.remove(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
        api.remove(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
        api.stop(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
        let e = api
            .status(PodSandboxStatusRequest {
                pod_sandbox_id: id,
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::NotFound);
    }
}
