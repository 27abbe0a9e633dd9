//! The container stats: `ContainerStats` and `ListContainerStats`, the samples the pod stats
//! and metrics are built from, and the writable layers' disk use.

use super::handlers::{ContainerApi, now_nanos, record_ids};
use super::table::{Inner, Meta, matches, to_hash};
use crate::api::*;
use crate::error::Error;
use crate::stats::{ContainerSample, CpuSample};

impl Inner {
    /// One container's stats (blocking). A container that never started or is gone has no
    /// cgroup: its usage reads as zero.
    fn sample(&self, m: &Meta) -> ContainerSample {
        let timestamp = now_nanos();
        let cgroup = self.runtime.get(&m.id).and_then(|c| c.cgroup_stats()).ok();
        let nano_cores = cgroup.and_then(|cg| {
            self.stats.rate(
                &m.id,
                CpuSample {
                    usage_ns: cg.cpu.usage_ns,
                    at: std::time::Instant::now(),
                },
            )
        });
        ContainerSample {
            sandbox_id: m.sandbox_id.clone(),
            attributes: ContainerAttributes {
                id: m.id.clone(),
                metadata: Some(ContainerMetadata {
                    name: m.metadata_name.clone(),
                    attempt: m.attempt,
                }),
                labels: to_hash(&m.labels),
                annotations: to_hash(&m.annotations),
            },
            created_at: m.created_at,
            cgroup,
            nano_cores,
            layer: self.layer_usage(&m.id),
            timestamp,
        }
    }

    /// A container's writable-layer usage, walked at most once per few seconds.
    fn layer_usage(&self, id: &str) -> carapace_runtime::stats::DiskUsage {
        self.stats.layer_usage(id, || {
            self.runtime
                .get(id)
                .and_then(|c| carapace_runtime::stats::disk_usage(&c.writable_layer()))
                .unwrap_or_default()
        })
    }
}

impl ContainerApi {
    /// ContainerStats for one container.
    pub(crate) async fn stats(
        &self,
        req: ContainerStatsRequest,
    ) -> Result<ContainerStatsResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        let filter = ContainerStatsFilter {
            id,
            ..Default::default()
        };
        let stats = self.collect_stats(&filter).await?.into_iter().next();
        Ok(ContainerStatsResponse { stats })
    }

    /// ListContainerStats: every container the filter selects, created and exited ones too (their
    /// usage reads as zero), as containerd lists them.
    pub(crate) async fn list_stats(
        &self,
        req: ListContainerStatsRequest,
    ) -> Result<ListContainerStatsResponse, Error> {
        let filter = req.filter.unwrap_or_default();
        Ok(ListContainerStatsResponse {
            stats: self.collect_stats(&filter).await?,
        })
    }

    async fn collect_stats(&self, f: &ContainerStatsFilter) -> Result<Vec<ContainerStats>, Error> {
        let fs = self.layers_mountpoint();
        Ok(self
            .samples(f)
            .await?
            .iter()
            .map(|s| s.to_cri(&fs))
            .collect())
    }

    /// Where the writable layers live: `ContainerStats.writable_layer.fs_id` and the containers'
    /// filesystem of `ImageFsInfo`.
    pub(crate) fn layers_mountpoint(&self) -> String {
        self.inner
            .runtime
            .writable_layers_dir()
            .to_string_lossy()
            .into_owned()
    }

    /// The disk use of every writable layer (`ImageFsInfo`'s container filesystem), from the
    /// same brief cache the stats calls use.
    pub(crate) async fn layers_usage(&self) -> Result<carapace_runtime::stats::DiskUsage, Error> {
        let ids: Vec<String> = self.inner.table().containers.keys().cloned().collect();
        self.blocking(move |i| {
            let mut total = carapace_runtime::stats::DiskUsage::default();
            for id in ids {
                let u = i.layer_usage(&id);
                total.bytes += u.bytes;
                total.inodes += u.inodes;
            }
            Ok(total)
        })
        .await
    }

    /// What the stats calls report of each container the filter selects, created and exited
    /// ones too (their usage reads as zero), as containerd lists them. cgroup files and layer
    /// walks are read on the blocking pool: a slow filesystem must not stall the gRPC threads.
    pub(crate) async fn samples(
        &self,
        f: &ContainerStatsFilter,
    ) -> Result<Vec<ContainerSample>, Error> {
        let filter = ContainerFilter {
            id: f.id.clone(),
            state: None,
            pod_sandbox_id: f.pod_sandbox_id.clone(),
            label_selector: f.label_selector.clone(),
        };
        let metas: Vec<Meta> = self
            .inner
            .table()
            .containers
            .values()
            .filter(|m| matches(&filter, m))
            .cloned()
            .collect();
        self.blocking(move |i| Ok(metas.iter().map(|m| i.sample(m)).collect()))
            .await
    }
}
