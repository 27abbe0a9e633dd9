//! `PodSandboxStats`, `ListPodSandboxStats` and `ListPodSandboxMetrics`: each pod's cgroup and
//! network counters read on the blocking pool, with its containers' samples from
//! [`crate::container`], turned into the CRI's messages by [`crate::stats`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use carapace_podsandbox::{InterfaceStats, Sandbox, SandboxState, Sandboxes};
use carapace_runtime::stats::CgroupStats;

use crate::api::*;
use crate::container::ContainerApi;
use crate::error::Error;
use crate::stats::{
    ContainerSample, CpuSample, StatsCache, container_metrics, cpu_usage, io_usage, memory_usage,
    network_usage, pod_metrics, u64v,
};

/// What a pod's stats call read besides its containers.
struct PodSample {
    sandbox: Sandbox,
    cgroup: Option<CgroupStats>,
    nano_cores: Option<u64>,
    network: Vec<InterfaceStats>,
    timestamp: i64,
}

/// The pod stats and pod metrics calls, over the sandbox and container stores.
#[derive(Clone)]
pub(crate) struct PodStatsApi {
    pub containers: Option<ContainerApi>,
    pub sandboxes: Option<Arc<Sandboxes>>,
    /// The pods' previous CPU samples.
    pub cache: Arc<StatsCache>,
}

impl PodStatsApi {
    fn sandboxes(&self) -> Result<Arc<Sandboxes>, Error> {
        self.sandboxes
            .clone()
            .ok_or_else(|| Error::Unavailable("the pod sandbox store".into()))
    }

    /// Reads the pods (blocking pool) and the containers of the pods.
    async fn read(
        &self,
        pods: Vec<Sandbox>,
    ) -> Result<Vec<(PodSample, Vec<ContainerSample>)>, Error> {
        let store = self.sandboxes()?;
        let cache = self.cache.clone();
        let samples = tokio::task::spawn_blocking(move || {
            let networks = store.network_stats_of(&pods);
            pods.into_iter()
                .zip(networks)
                .map(|(sb, network)| read_pod(&cache, sb, network))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("pod stats task: {e}")))?;
        let mut containers: HashMap<String, Vec<ContainerSample>> = HashMap::new();
        if let Some(c) = self.containers.as_ref().filter(|_| !samples.is_empty()) {
            let only = match samples.as_slice() {
                [one] => one.sandbox.id.clone(),
                _ => String::new(),
            };
            let filter = ContainerStatsFilter {
                pod_sandbox_id: only,
                ..Default::default()
            };
            for s in c.samples(&filter).await? {
                containers.entry(s.sandbox_id.clone()).or_default().push(s);
            }
        }
        Ok(samples
            .into_iter()
            .map(|p| {
                let cs = containers.remove(&p.sandbox.id).unwrap_or_default();
                (p, cs)
            })
            .collect())
    }

    /// The ready sandboxes `keep` selects.
    fn ready_pods(&self, keep: impl Fn(&Sandbox) -> bool) -> Result<Vec<Sandbox>, Error> {
        Ok(self
            .sandboxes()?
            .list()
            .into_iter()
            .filter(|sb| sb.state == SandboxState::Ready && keep(sb))
            .collect())
    }

    fn layers_mountpoint(&self) -> String {
        self.containers
            .as_ref()
            .map(|c| c.layers_mountpoint())
            .unwrap_or_default()
    }

    /// PodSandboxStats of one pod, ready or not (a stopped pod's usage reads as zero).
    pub(crate) async fn pod(&self, id: &str) -> Result<PodSandboxStats, Error> {
        let store = self.sandboxes()?;
        let id = store.resolve(id)?;
        tracing::Span::current().record("pod_id", id.as_str());
        let sb = store
            .get(&id)
            .ok_or_else(|| Error::NotFound(format!("sandbox {id}")))?;
        let fs = self.layers_mountpoint();
        self.read(vec![sb])
            .await?
            .into_iter()
            .next()
            .map(|(p, cs)| pod_to_cri(p, &cs, &fs))
            .ok_or_else(|| Error::NotFound(format!("sandbox {id}")))
    }

    /// ListPodSandboxStats: the ready pods the filter selects, as containerd lists them.
    pub(crate) async fn list(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Result<Vec<PodSandboxStats>, Error> {
        let f = filter.unwrap_or_default();
        let pods = self.ready_pods(|sb| {
            sb.id.starts_with(&f.id)
                && f.label_selector
                    .iter()
                    .all(|(k, v)| sb.config.labels.get(k) == Some(v))
        })?;
        let fs = self.layers_mountpoint();
        Ok(self
            .read(pods)
            .await?
            .into_iter()
            .map(|(p, cs)| pod_to_cri(p, &cs, &fs))
            .collect())
    }

    /// ListPodSandboxMetrics: every ready pod's network metrics and its containers' metrics.
    pub(crate) async fn metrics(&self) -> Result<Vec<PodSandboxMetrics>, Error> {
        let pods = self.ready_pods(|_| true)?;
        let fs = self.layers_mountpoint();
        Ok(self
            .read(pods)
            .await?
            .into_iter()
            .map(|(p, cs)| PodSandboxMetrics {
                pod_sandbox_id: p.sandbox.id.clone(),
                metrics: pod_metrics(
                    &p.sandbox.id,
                    &p.sandbox.config.metadata.name,
                    &p.network,
                    p.timestamp,
                ),
                container_metrics: cs.iter().map(|c| container_metrics(c, &fs)).collect(),
            })
            .collect())
    }
}

/// One pod's cgroup and network counters (blocking). What cannot be read reads as zero, with a
/// debug line: a pod being torn down must not fail the whole list.
fn read_pod(
    cache: &StatsCache,
    sandbox: Sandbox,
    network: Result<Vec<carapace_podsandbox::InterfaceStats>, carapace_podsandbox::Error>,
) -> PodSample {
    let timestamp = now_nanos();
    let cgroup = sandbox.cgroup.as_ref().and_then(|c| {
        carapace_runtime::stats::cgroup_stats(&c.path.to_string_lossy())
            .inspect_err(|e| tracing::debug!(pod_id = %sandbox.id, error = %e, "pod cgroup stats"))
            .ok()
    });
    let nano_cores = cgroup.and_then(|cg| {
        cache.rate(
            &sandbox.id,
            CpuSample {
                usage_ns: cg.cpu.usage_ns,
                at: Instant::now(),
            },
        )
    });
    let network = network
        .inspect_err(|e| tracing::debug!(pod_id = %sandbox.id, error = %e, "pod network stats"))
        .unwrap_or_default();
    PodSample {
        sandbox,
        cgroup,
        nano_cores,
        network,
        timestamp,
    }
}

fn pod_to_cri(p: PodSample, containers: &[ContainerSample], fs: &str) -> PodSandboxStats {
    let ts = p.timestamp;
    let cg = p.cgroup.as_ref();
    let md = &p.sandbox.config.metadata;
    PodSandboxStats {
        attributes: Some(PodSandboxAttributes {
            id: p.sandbox.id.clone(),
            metadata: Some(PodSandboxMetadata {
                name: md.name.clone(),
                uid: md.uid.clone(),
                namespace: md.namespace.clone(),
                attempt: md.attempt,
            }),
            labels: p.sandbox.config.labels.clone().into_iter().collect(),
            annotations: p.sandbox.config.annotations.clone().into_iter().collect(),
        }),
        linux: Some(LinuxPodSandboxStats {
            cpu: Some(cpu_usage(cg, p.nano_cores, ts)),
            memory: Some(memory_usage(cg, ts)),
            // None, not empty, when no interface was read (host network, a pod being torn down):
            // the kubelet (v1.36, PodAndContainerStatsFromCRI) reads the default interface of any
            // network stats it is given, and crashed on empty ones.
            network: (!p.network.is_empty()).then(|| network_usage(&p.network, ts)),
            process: Some(ProcessUsage {
                timestamp: ts,
                process_count: u64v(cg.map(|c| c.processes).unwrap_or(0)),
            }),
            containers: containers.iter().map(|c| c.to_cri(fs)).collect(),
            io: io_usage(cg, ts),
        }),
        windows: None,
    }
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
