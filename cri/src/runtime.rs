//! `runtime.v1.RuntimeService`: the node-level calls (version, status, runtime configuration) and,
//! as later work lands, pod sandboxes and containers.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::runtime_service_server::RuntimeService;
use crate::api::*;
use crate::error::Error;
use crate::{Node, RUNTIME_API_VERSION, RUNTIME_NAME};

pub struct RuntimeApi {
    node: Arc<Node>,
}

impl RuntimeApi {
    pub(crate) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

type Rpc<T> = Result<Response<T>, Status>;

/// An RPC that is not built yet: a clear `Unimplemented` that names it, never a panic.
fn unimplemented<T>(rpc: &'static str) -> Rpc<T> {
    Err(Error::Unimplemented(rpc).into())
}

/// The `NetworkReady` condition: true once the CNI configuration directory holds a network
/// configuration, as containerd and CRI-O report it (the kubelet keeps pods off a node until then).
fn network_condition(conf_dir: &Path) -> RuntimeCondition {
    let found = std::fs::read_dir(conf_dir).ok().and_then(|entries| {
        entries.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
    });
    match found {
        Some(p) => RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: true,
            reason: "NetworkConfigFound".into(),
            message: format!("network configuration {}", p.display()),
        },
        None => RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: format!(
                "Network plugin returns error: no network config found in {}",
                conf_dir.display()
            ),
        },
    }
}

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
            runtime_handlers: vec![RuntimeHandler {
                name: String::new(),
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: false,
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
        _: Request<RunPodSandboxRequest>,
    ) -> Rpc<RunPodSandboxResponse> {
        unimplemented("RunPodSandbox")
    }
    async fn stop_pod_sandbox(
        &self,
        _: Request<StopPodSandboxRequest>,
    ) -> Rpc<StopPodSandboxResponse> {
        unimplemented("StopPodSandbox")
    }
    async fn remove_pod_sandbox(
        &self,
        _: Request<RemovePodSandboxRequest>,
    ) -> Rpc<RemovePodSandboxResponse> {
        unimplemented("RemovePodSandbox")
    }
    async fn pod_sandbox_status(
        &self,
        _: Request<PodSandboxStatusRequest>,
    ) -> Rpc<PodSandboxStatusResponse> {
        unimplemented("PodSandboxStatus")
    }
    async fn list_pod_sandbox(
        &self,
        _: Request<ListPodSandboxRequest>,
    ) -> Rpc<ListPodSandboxResponse> {
        unimplemented("ListPodSandbox")
    }
    async fn create_container(
        &self,
        _: Request<CreateContainerRequest>,
    ) -> Rpc<CreateContainerResponse> {
        unimplemented("CreateContainer")
    }
    async fn start_container(
        &self,
        _: Request<StartContainerRequest>,
    ) -> Rpc<StartContainerResponse> {
        unimplemented("StartContainer")
    }
    async fn stop_container(&self, _: Request<StopContainerRequest>) -> Rpc<StopContainerResponse> {
        unimplemented("StopContainer")
    }
    async fn remove_container(
        &self,
        _: Request<RemoveContainerRequest>,
    ) -> Rpc<RemoveContainerResponse> {
        unimplemented("RemoveContainer")
    }
    async fn list_containers(
        &self,
        _: Request<ListContainersRequest>,
    ) -> Rpc<ListContainersResponse> {
        unimplemented("ListContainers")
    }
    async fn container_status(
        &self,
        _: Request<ContainerStatusRequest>,
    ) -> Rpc<ContainerStatusResponse> {
        unimplemented("ContainerStatus")
    }
    async fn update_container_resources(
        &self,
        _: Request<UpdateContainerResourcesRequest>,
    ) -> Rpc<UpdateContainerResourcesResponse> {
        unimplemented("UpdateContainerResources")
    }
    async fn reopen_container_log(
        &self,
        _: Request<ReopenContainerLogRequest>,
    ) -> Rpc<ReopenContainerLogResponse> {
        unimplemented("ReopenContainerLog")
    }
    async fn exec_sync(&self, _: Request<ExecSyncRequest>) -> Rpc<ExecSyncResponse> {
        unimplemented("ExecSync")
    }
    async fn exec(&self, _: Request<ExecRequest>) -> Rpc<ExecResponse> {
        unimplemented("Exec")
    }
    async fn attach(&self, _: Request<AttachRequest>) -> Rpc<AttachResponse> {
        unimplemented("Attach")
    }
    async fn port_forward(&self, _: Request<PortForwardRequest>) -> Rpc<PortForwardResponse> {
        unimplemented("PortForward")
    }
    async fn container_stats(
        &self,
        _: Request<ContainerStatsRequest>,
    ) -> Rpc<ContainerStatsResponse> {
        unimplemented("ContainerStats")
    }
    async fn list_container_stats(
        &self,
        _: Request<ListContainerStatsRequest>,
    ) -> Rpc<ListContainerStatsResponse> {
        unimplemented("ListContainerStats")
    }
    async fn pod_sandbox_stats(
        &self,
        _: Request<PodSandboxStatsRequest>,
    ) -> Rpc<PodSandboxStatsResponse> {
        unimplemented("PodSandboxStats")
    }
    async fn list_pod_sandbox_stats(
        &self,
        _: Request<ListPodSandboxStatsRequest>,
    ) -> Rpc<ListPodSandboxStatsResponse> {
        unimplemented("ListPodSandboxStats")
    }
    async fn checkpoint_container(
        &self,
        _: Request<CheckpointContainerRequest>,
    ) -> Rpc<CheckpointContainerResponse> {
        unimplemented("CheckpointContainer")
    }

    type GetContainerEventsStream = Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<ContainerEventResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> Rpc<Self::GetContainerEventsStream> {
        unimplemented("GetContainerEvents")
    }
    async fn list_metric_descriptors(
        &self,
        _: Request<ListMetricDescriptorsRequest>,
    ) -> Rpc<ListMetricDescriptorsResponse> {
        unimplemented("ListMetricDescriptors")
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<ListPodSandboxMetricsRequest>,
    ) -> Rpc<ListPodSandboxMetricsResponse> {
        unimplemented("ListPodSandboxMetrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn api(config: Config) -> RuntimeApi {
        RuntimeApi::new(Arc::new(Node {
            config,
            version: "9.9.9".into(),
            pod_cidr: Default::default(),
        }))
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
        std::fs::write(dir.path().join("10-net.conflist"), "{}").unwrap();
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
    async fn unbuilt_rpcs_are_unimplemented_and_named() {
        let e = api(Config::default())
            .run_pod_sandbox(Request::new(RunPodSandboxRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(e.message().contains("RunPodSandbox"));
    }
}
