//! `runtime.v1.RuntimeService`: the node-level calls (version, status, runtime configuration) and,
//! as later work lands, pod sandboxes and containers.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::api::runtime_service_server::RuntimeService;
use crate::api::*;
use crate::container::ContainerApi;
use crate::error::Error;
use crate::list_stream;
use crate::pod_stats::PodStatsApi;
use crate::sandbox::{SandboxApi, network_condition};
use crate::stream::StreamServer;
use crate::{Node, RUNTIME_API_VERSION, RUNTIME_NAME};

pub struct RuntimeApi {
    node: Arc<Node>,
    sandboxes: SandboxApi,
    stores: Stores,
    pod_stats: PodStatsApi,
}

/// The stores behind the container and streaming calls; a missing one makes its calls answer
/// `Unavailable`.
#[derive(Default)]
pub(crate) struct Stores {
    pub(crate) containers: Option<ContainerApi>,
    pub(crate) images: Option<carapace_imageservice::Images>,
    pub(crate) sandboxes: Option<Arc<carapace_podsandbox::Sandboxes>>,
    pub(crate) stream: Option<Arc<StreamServer>>,
}

impl RuntimeApi {
    pub(crate) fn new(node: Arc<Node>, sandboxes: SandboxApi, stores: Stores) -> Self {
        let pod_stats = PodStatsApi {
            containers: stores.containers.clone(),
            sandboxes: stores.sandboxes.clone(),
            cache: Default::default(),
        };
        Self {
            node,
            sandboxes,
            stores,
            pod_stats,
        }
    }

    /// ListPodSandbox, encoded (see [`crate::listing`]).
    pub(crate) async fn list_pods_encoded(
        &self,
        req: ListPodSandboxRequest,
    ) -> Result<bytes::Bytes, Error> {
        self.sandboxes.list_encoded(req).await
    }

    /// ListContainers, encoded (see [`crate::listing`]).
    pub(crate) async fn list_containers_encoded(
        &self,
        req: ListContainersRequest,
    ) -> Result<bytes::Bytes, Error> {
        self.containers()?.list_encoded(req).await
    }

    fn containers(&self) -> Result<&ContainerApi, Error> {
        self.stores
            .containers
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the container store".into()))
    }

    fn stream(&self) -> Result<&StreamServer, Error> {
        self.stores
            .stream
            .as_deref()
            .ok_or_else(|| Error::Unavailable("the streaming server".into()))
    }

    /// The full id of a sandbox, for the container calls a sandbox call makes first; `None` when
    /// no sandbox matches (the sandbox call itself then answers as it does for unknown ids).
    async fn sandbox_id(&self, id: &str) -> Option<String> {
        let store = self.stores.sandboxes.clone()?;
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || store.resolve(&id).ok())
            .await
            .ok()
            .flatten()
    }
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn version(&self, _req: Request<VersionRequest>) -> Rpc<VersionResponse> {
        Ok(Response::new(VersionResponse {
            // The kubelet checks only that this is "0.1.0"; crictl prints it as "Version".
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: self.node.version.clone(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn status(&self, req: Request<StatusRequest>) -> Rpc<StatusResponse> {
        let runtime = RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: "RuntimeIsReady".into(),
            message: "carapace is serving the CRI".into(),
        };
        let conf_dir = self.node.config.cni.conf_dir.clone();
        let network = tokio::task::spawn_blocking(move || network_condition(&conf_dir))
            .await
            .map_err(|e| Error::Internal(format!("checking the network configuration: {e}")))?;
        let mut info = HashMap::new();
        if req.get_ref().verbose {
            let config = serde_json::to_string(&self.node.config)
                .map_err(|e| Error::Internal(format!("encoding the configuration: {e}")))?;
            info.insert("config".to_owned(), config);
            let cidr = self.node.pod_cidr.read().await.clone();
            info.insert(
                "podCIDR".to_owned(),
                serde_json::Value::String(cidr).to_string(),
            );
        }
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info,
            runtime_handlers: std::iter::once(RuntimeHandler {
                name: String::new(),
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: carapace_runtime::mount_setattr_supported(),
                    user_namespaces: self
                        .node
                        .user_namespaces
                        .load(std::sync::atomic::Ordering::Relaxed),
                }),
            })
            // An OCI runtime's handler: recursive read-only mounts where the runtime lists
            // `rro`; never a user namespace, which pods of it are refused.
            .chain(self.node.config.runtimes.keys().map(|name| RuntimeHandler {
                name: name.clone(),
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts:
                        crate::container::runtime_handlers::recursive_read_only(name),
                    user_namespaces: false,
                }),
            }))
            .collect(),
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: true,
                // A pod's user namespace owns its network namespace: never the host's.
                user_namespaces_host_network: false,
            }),
        }))
    }

    async fn runtime_config(
        &self,
        _req: Request<RuntimeConfigRequest>,
    ) -> Rpc<RuntimeConfigResponse> {
        let driver = match self.node.config.cgroup.driver {
            crate::config::CgroupDriver::Systemd => CgroupDriver::Systemd,
            crate::config::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
        };
        Ok(Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<UpdateRuntimeConfigRequest>,
    ) -> Rpc<UpdateRuntimeConfigResponse> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        // An empty CIDR means "nothing to change", as the kubelet sends it before the node has one.
        if !cidr.is_empty() {
            tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
            *self.node.pod_cidr.write().await = cidr;
        }
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<RunPodSandboxRequest>,
    ) -> Rpc<RunPodSandboxResponse> {
        carapace_crashpoint::rpc("RunPodSandbox");
        let req = req.into_inner();
        crate::container::runtime_handlers::oci_runtime(&req.runtime_handler)?;
        let wants_userns = req
            .config
            .as_ref()
            .and_then(|c| {
                c.linux
                    .as_ref()?
                    .security_context
                    .as_ref()?
                    .namespace_options
                    .as_ref()
            })
            .and_then(|n| n.userns_options.as_ref())
            .is_some_and(|u| NamespaceMode::try_from(u.mode) == Ok(NamespaceMode::Pod));
        if wants_userns && !req.runtime_handler.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "runtime handler {:?} does not support user namespaces",
                req.runtime_handler
            ))
            .into());
        }
        if wants_userns
            && !self
                .node
                .user_namespaces
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(Error::FailedPrecondition(
                "this node cannot run pods in user namespaces (no id-mapped mounts here; see the \
                 daemon's start log)"
                    .into(),
            )
            .into());
        }
        Ok(Response::new(self.sandboxes.run(req).await?))
    }
    async fn stop_pod_sandbox(
        &self,
        req: Request<StopPodSandboxRequest>,
    ) -> Rpc<StopPodSandboxResponse> {
        carapace_crashpoint::rpc("StopPodSandbox");
        let req = req.into_inner();
        if let (Some(id), Some(c)) = (
            self.sandbox_id(&req.pod_sandbox_id).await,
            self.stores.containers.as_ref(),
        ) {
            // As containerd: the pod's containers are killed at once, the kubelet stopped
            // them gracefully before if it wanted to.
            c.stop_sandbox_containers(&id, std::time::Duration::ZERO)
                .await?;
        }
        Ok(Response::new(self.sandboxes.stop(req).await?))
    }
    async fn remove_pod_sandbox(
        &self,
        req: Request<RemovePodSandboxRequest>,
    ) -> Rpc<RemovePodSandboxResponse> {
        carapace_crashpoint::rpc("RemovePodSandbox");
        let req = req.into_inner();
        if let (Some(id), Some(c)) = (
            self.sandbox_id(&req.pod_sandbox_id).await,
            self.stores.containers.as_ref(),
        ) {
            c.remove_sandbox_containers_releasing(&id, self.stores.images.as_ref())
                .await?;
            if let Some(store) = self.stores.sandboxes.clone() {
                // What an OCI runtime made beside the pod cgroup carapace made.
                tokio::task::spawn_blocking(move || {
                    let sb = store.get(&id)?;
                    if sb.config.runtime_handler.is_empty() {
                        return None;
                    }
                    let rel = sb.cgroup.as_ref()?.path.to_string_lossy().into_owned();
                    if let Err(e) = carapace_runtime::cgroup::remove_hybrid_unified(&rel) {
                        tracing::warn!(pod_id = %id, error = %e, "removing the pod's cgroup2 directory");
                    }
                    Some(())
                })
                .await
                .ok();
            }
        }
        Ok(Response::new(self.sandboxes.remove(req).await?))
    }
    async fn pod_sandbox_status(
        &self,
        req: Request<PodSandboxStatusRequest>,
    ) -> Rpc<PodSandboxStatusResponse> {
        Ok(Response::new(
            self.sandboxes.status(req.into_inner()).await?,
        ))
    }
    async fn list_pod_sandbox(
        &self,
        req: Request<ListPodSandboxRequest>,
    ) -> Rpc<ListPodSandboxResponse> {
        Ok(Response::new(self.sandboxes.list(req.into_inner()).await?))
    }
    async fn create_container(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Rpc<CreateContainerResponse> {
        carapace_crashpoint::rpc("CreateContainer");
        let c = self.containers()?;
        let images = self
            .stores
            .images
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the image store".into()))?;
        let sandboxes = self
            .stores
            .sandboxes
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the pod sandbox store".into()))?;
        Ok(Response::new(
            c.create_from_stores(req.into_inner(), images, sandboxes)
                .await?,
        ))
    }
    async fn start_container(
        &self,
        req: Request<StartContainerRequest>,
    ) -> Rpc<StartContainerResponse> {
        carapace_crashpoint::rpc("StartContainer");
        Ok(Response::new(
            self.containers()?.start(req.into_inner()).await?,
        ))
    }
    async fn stop_container(
        &self,
        req: Request<StopContainerRequest>,
    ) -> Rpc<StopContainerResponse> {
        carapace_crashpoint::rpc("StopContainer");
        Ok(Response::new(
            self.containers()?.stop(req.into_inner()).await?,
        ))
    }
    async fn remove_container(
        &self,
        req: Request<RemoveContainerRequest>,
    ) -> Rpc<RemoveContainerResponse> {
        carapace_crashpoint::rpc("RemoveContainer");
        let c = self.containers()?;
        let resp = match self.stores.images.as_ref() {
            Some(images) => c.remove_releasing(req.into_inner(), images).await?,
            None => c.remove(req.into_inner()).await?,
        };
        Ok(Response::new(resp))
    }
    async fn list_containers(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Rpc<ListContainersResponse> {
        Ok(Response::new(
            self.containers()?.list(req.into_inner()).await?,
        ))
    }
    async fn container_status(
        &self,
        req: Request<ContainerStatusRequest>,
    ) -> Rpc<ContainerStatusResponse> {
        Ok(Response::new(
            self.containers()?.status(req.into_inner()).await?,
        ))
    }
    async fn update_container_resources(
        &self,
        req: Request<UpdateContainerResourcesRequest>,
    ) -> Rpc<UpdateContainerResourcesResponse> {
        Ok(Response::new(
            self.containers()?
                .update_resources(req.into_inner())
                .await?,
        ))
    }
    async fn reopen_container_log(
        &self,
        req: Request<ReopenContainerLogRequest>,
    ) -> Rpc<ReopenContainerLogResponse> {
        Ok(Response::new(
            self.containers()?.reopen_log(req.into_inner()).await?,
        ))
    }
    async fn exec_sync(&self, req: Request<ExecSyncRequest>) -> Rpc<ExecSyncResponse> {
        Ok(Response::new(
            self.containers()?.exec_sync(req.into_inner()).await?,
        ))
    }
    async fn exec(&self, req: Request<ExecRequest>) -> Rpc<ExecResponse> {
        let req = req.into_inner();
        // The URL is only handed out for a container that runs now.
        self.containers()?.pid(&req.container_id).await?;
        let url = self
            .stream()?
            .exec_url(crate::stream::ExecRequest {
                container_id: req.container_id,
                cmd: req.cmd,
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            })
            .map_err(Error::from)?;
        Ok(Response::new(ExecResponse { url }))
    }
    async fn attach(&self, req: Request<AttachRequest>) -> Rpc<AttachResponse> {
        let req = req.into_inner();
        self.containers()?
            .check_attach(&req.container_id, req.stdin)
            .await?;
        let url = self
            .stream()?
            .attach_url(crate::stream::AttachRequest {
                container_id: req.container_id,
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            })
            .map_err(Error::from)?;
        Ok(Response::new(AttachResponse { url }))
    }
    async fn port_forward(&self, req: Request<PortForwardRequest>) -> Rpc<PortForwardResponse> {
        let req = req.into_inner();
        if self.sandbox_id(&req.pod_sandbox_id).await.is_none() {
            return Err(Error::NotFound(format!("sandbox {:?}", req.pod_sandbox_id)).into());
        }
        let url = self
            .stream()?
            .port_forward_url(crate::stream::PortForwardRequest {
                pod_sandbox_id: req.pod_sandbox_id,
                ports: req.port,
            })
            .map_err(Error::from)?;
        Ok(Response::new(PortForwardResponse { url }))
    }
    async fn container_stats(
        &self,
        req: Request<ContainerStatsRequest>,
    ) -> Rpc<ContainerStatsResponse> {
        Ok(Response::new(
            self.containers()?.stats(req.into_inner()).await?,
        ))
    }
    async fn list_container_stats(
        &self,
        req: Request<ListContainerStatsRequest>,
    ) -> Rpc<ListContainerStatsResponse> {
        Ok(Response::new(
            self.containers()?.list_stats(req.into_inner()).await?,
        ))
    }
    async fn pod_sandbox_stats(
        &self,
        req: Request<PodSandboxStatsRequest>,
    ) -> Rpc<PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        if id.is_empty() {
            return Err(Error::InvalidArgument("pod_sandbox_id is required".into()).into());
        }
        Ok(Response::new(PodSandboxStatsResponse {
            stats: Some(self.pod_stats.pod(&id).await?),
        }))
    }
    async fn list_pod_sandbox_stats(
        &self,
        req: Request<ListPodSandboxStatsRequest>,
    ) -> Rpc<ListPodSandboxStatsResponse> {
        Ok(Response::new(ListPodSandboxStatsResponse {
            stats: self.pod_stats.list(req.into_inner().filter).await?,
        }))
    }
    async fn checkpoint_container(
        &self,
        req: Request<CheckpointContainerRequest>,
    ) -> Rpc<CheckpointContainerResponse> {
        Ok(Response::new(
            self.containers()?.checkpoint(req.into_inner()).await?,
        ))
    }

    type GetContainerEventsStream = crate::events::EventStream;

    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        Ok(Response::new(self.containers()?.events()))
    }
    async fn list_metric_descriptors(
        &self,
        _: Request<ListMetricDescriptorsRequest>,
    ) -> Rpc<ListMetricDescriptorsResponse> {
        Ok(Response::new(ListMetricDescriptorsResponse {
            descriptors: crate::stats::metric_descriptors(),
        }))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<ListPodSandboxMetricsRequest>,
    ) -> Rpc<ListPodSandboxMetricsResponse> {
        Ok(Response::new(ListPodSandboxMetricsResponse {
            pod_metrics: self.pod_stats.metrics().await?,
        }))
    }

    // The list streams (see `crate::list_stream`): each the unary List's items with its filter.
    // `crate::service` answers StreamPodSandboxes and StreamContainers from the kept encodings
    // before they reach these two.
    type StreamPodSandboxesStream = BoxStream<StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        req: Request<StreamPodSandboxesRequest>,
    ) -> Rpc<Self::StreamPodSandboxesStream> {
        let filter = req.into_inner().filter;
        let items = self
            .sandboxes
            .list(ListPodSandboxRequest { filter })
            .await?;
        Ok(Response::new(list_stream::stream(
            items.items,
            |pod_sandboxes| StreamPodSandboxesResponse { pod_sandboxes },
        )))
    }

    type StreamContainersStream = BoxStream<StreamContainersResponse>;

    async fn stream_containers(
        &self,
        req: Request<StreamContainersRequest>,
    ) -> Rpc<Self::StreamContainersStream> {
        let filter = req.into_inner().filter;
        let items = self
            .containers()?
            .list(ListContainersRequest { filter })
            .await?;
        Ok(Response::new(list_stream::stream(
            items.containers,
            |containers| StreamContainersResponse { containers },
        )))
    }

    type StreamContainerStatsStream = BoxStream<StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        req: Request<StreamContainerStatsRequest>,
    ) -> Rpc<Self::StreamContainerStatsStream> {
        let filter = req.into_inner().filter;
        let items = self
            .containers()?
            .list_stats(ListContainerStatsRequest { filter })
            .await?;
        Ok(Response::new(list_stream::stream(
            items.stats,
            |container_stats| StreamContainerStatsResponse { container_stats },
        )))
    }

    type StreamPodSandboxStatsStream = BoxStream<StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        req: Request<StreamPodSandboxStatsRequest>,
    ) -> Rpc<Self::StreamPodSandboxStatsStream> {
        let items = self.pod_stats.list(req.into_inner().filter).await?;
        Ok(Response::new(list_stream::stream(
            items,
            |pod_sandbox_stats| StreamPodSandboxStatsResponse { pod_sandbox_stats },
        )))
    }

    type StreamPodSandboxMetricsStream = BoxStream<StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _: Request<StreamPodSandboxMetricsRequest>,
    ) -> Rpc<Self::StreamPodSandboxMetricsStream> {
        let items = self.pod_stats.metrics().await?;
        Ok(Response::new(list_stream::stream(
            items,
            |pod_sandbox_metrics| StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            },
        )))
    }

    async fn update_pod_sandbox_resources(
        &self,
        req: Request<UpdatePodSandboxResourcesRequest>,
    ) -> Rpc<UpdatePodSandboxResourcesResponse> {
        Ok(Response::new(
            self.sandboxes.update_resources(req.into_inner()).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn api(config: Config) -> RuntimeApi {
        RuntimeApi::new(
            Arc::new(Node {
                config,
                version: "9.9.9".into(),
                pod_cidr: Default::default(),
                user_namespaces: Default::default(),
            }),
            SandboxApi::new(None),
            Stores::default(),
        )
    }

    #[tokio::test]
    async fn version_names_carapace_and_v1() {
        let v = api(Config::default())
            .version(Request::new(VersionRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (
                v.runtime_name.as_str(),
                v.runtime_version.as_str(),
                v.runtime_api_version.as_str()
            ),
            ("carapace", "9.9.9", "v1")
        );
    }

    #[tokio::test]
    async fn network_ready_follows_the_cni_conf_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.cni.conf_dir = dir.path().into();
        let api = api(config);
        let cond = |s: StatusResponse| s.status.unwrap().conditions[1].clone();
        let r = api
            .status(Request::new(StatusRequest { verbose: false }))
            .await
            .unwrap();
        let c = cond(r.into_inner());
        assert!(!c.status);
        assert_eq!(c.reason, "NetworkPluginNotReady");
        // An invalid file is not a network; the reason names it.
        std::fs::write(dir.path().join("05-bad.conflist"), "{}").unwrap();
        let r = api
            .status(Request::new(StatusRequest { verbose: false }))
            .await
            .unwrap();
        let c = cond(r.into_inner());
        assert!(
            !c.status && c.message.contains("05-bad.conflist"),
            "{}",
            c.message
        );
        std::fs::write(
            dir.path().join("10-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"podnet","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        let r = api
            .status(Request::new(StatusRequest { verbose: false }))
            .await
            .unwrap();
        assert!(cond(r.into_inner()).status);
    }

    #[tokio::test]
    async fn verbose_status_carries_config_and_pod_cidr() {
        let api = api(Config::default());
        let update = UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig {
                    pod_cidr: "10.88.0.0/16".into(),
                }),
            }),
        };
        api.update_runtime_config(Request::new(update))
            .await
            .unwrap();
        // An empty CIDR later keeps the one we have.
        api.update_runtime_config(Request::new(UpdateRuntimeConfigRequest::default()))
            .await
            .unwrap();
        let r = api
            .status(Request::new(StatusRequest { verbose: true }))
            .await
            .unwrap()
            .into_inner();
        let cfg: serde_json::Value = serde_json::from_str(&r.info["config"]).unwrap();
        assert_eq!(cfg["root"], "/var/lib/carapace");
        assert_eq!(r.info["podCIDR"], "\"10.88.0.0/16\"");
    }

    #[tokio::test]
    async fn runtime_config_reports_the_cgroup_driver() {
        let mut config = Config::default();
        config.cgroup.driver = crate::config::CgroupDriver::Systemd;
        let r = api(config)
            .runtime_config(Request::new(RuntimeConfigRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.linux.unwrap().cgroup_driver, CgroupDriver::Systemd as i32);
    }

    #[tokio::test]
    async fn container_calls_without_a_store_are_unavailable() {
        let e = api(Config::default())
            .create_container(Request::new(CreateContainerRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
    }
}
