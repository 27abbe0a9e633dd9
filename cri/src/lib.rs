//! The CRI v1 front of carapace: the tonic `RuntimeService` and `ImageService`, request validation,
//! and the one place where domain errors become gRPC status codes ([`error`]). It orchestrates the
//! domain crates (sandboxes, containers, images, CNI) and hands them plain data; nothing depends back
//! on it. It also owns the daemon's configuration ([`config`]), since it is what wires the parts.
#![deny(unsafe_code)]

pub mod config;
mod container;
mod error;
mod events;
#[doc(hidden)]
pub mod fuzzing;
mod image;
mod list_stream;
mod listing;
mod pod_stats;
mod runtime;
mod sandbox;
mod service;
mod stats;
pub mod stream;
mod streaming;

use std::sync::Arc;
use std::time::Duration;

pub use carapace_cri_api::v1 as api;
pub use carapace_podsandbox::{InfraCommand, infra_main};
pub use error::Error;
pub use service::RuntimeService;

use api::image_service_server::ImageServiceServer;
use config::Config;

/// The runtime's name in `Version`, as `crictl version` shows it.
pub const RUNTIME_NAME: &str = "carapace";
/// The CRI API version carapace speaks.
pub const RUNTIME_API_VERSION: &str = "v1";

/// What every service shares: the configuration and the node-level settings the kubelet pushes.
struct Node {
    config: Config,
    version: String,
    /// Pod CIDR from `UpdateRuntimeConfig`; kept for CNI plugins that ask for it.
    pod_cidr: tokio::sync::RwLock<String>,
    /// Whether pods may have user namespaces: found at start by [`probe_user_namespaces`].
    user_namespaces: std::sync::atomic::AtomicBool,
}

/// The CRI services of one daemon, ready to be added to a tonic server.
pub struct Cri {
    node: Arc<Node>,
    /// The image store, opened by [`Cri::open`]; an `Option` like the other stores so that a
    /// service built without it answers `Unavailable` rather than panicking.
    images: Option<carapace_imageservice::Images>,
    /// The pod sandbox store; `None` until [`Cri::with_sandboxes`], sandbox calls answer
    /// `Unavailable` until then.
    sandboxes: Option<Arc<carapace_podsandbox::Sandboxes>>,
    /// The container store; `None` until [`Cri::with_containers`].
    containers: Option<container::ContainerApi>,
    /// Where helper processes start from; set by [`Cri::with_containers`].
    helper_exe: Option<std::path::PathBuf>,
    /// The exec/port-forward server; `None` until [`Cri::with_streaming`].
    stream: Option<Arc<stream::StreamServer>>,
    /// The daemon's metrics; `None` until [`Cri::with_metrics`].
    metrics: Option<carapace_metrics::Metrics>,
}

/// Whether this node can run pods in user namespaces: a user namespace can be made (by the infra
/// program in its helper role), and binds of the root and state dirs and an overlay on the root
/// dir's filesystem can be id-mapped through it. Said once in the log either way.
fn probe_user_namespaces(
    helper: &InfraCommand,
    root: &std::path::Path,
    state: &std::path::Path,
) -> bool {
    let map = vec![carapace_podsandbox::IdMapping {
        container_id: 0,
        host_id: 1 << 30,
        length: 65536,
    }];
    let userns = carapace_podsandbox::UserNamespace {
        uids: map.clone(),
        gids: map,
    };
    let scratch = root.join("userns-probe");
    let found = carapace_podsandbox::with_user_namespace(helper, &userns, |ns| {
        carapace_runtime::executor::probe_idmap(
            &ns.join("user"),
            (1 << 30, 1 << 30),
            &[root, state],
            &scratch,
        )
        .map_err(std::io::Error::other)
    });
    match found {
        Ok(()) => {
            tracing::info!("user namespaces: supported (id-mapped binds and overlays work)");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "user namespaces: not supported here; pods asking for one are refused");
            false
        }
    }
}

impl Cri {
    /// Opens the stores under `config.root` (creating them, reloading image records, removing what
    /// an interrupted pull left) and registers their metrics in `metrics`. `version` is the
    /// daemon's own version, reported by `Version`.
    pub fn open(
        config: Config,
        version: impl Into<String>,
        metrics: &prometheus::Registry,
    ) -> Result<Self, Error> {
        let mut ic =
            carapace_imageservice::ImagesConfig::new(&config.root, &config.registry.config_path);
        ic.stall_timeout = Duration::from_secs(config.image.pull_progress_timeout_secs);
        ic.max_concurrent_downloads = config.image.max_concurrent_downloads;
        ic.limits.max_entries = config.image.max_layer_entries;
        ic.limits.max_bytes = config.image.max_layer_bytes;
        let images = carapace_imageservice::Images::open(ic, metrics)?;
        container::set_cdi_spec_dirs(config.cdi_spec_dirs.clone());
        let mut handlers = std::collections::BTreeMap::new();
        for name in config.runtimes.keys() {
            // Checked when the configuration was loaded; a binary gone since is refused here.
            let rt = config
                .oci_runtime(name)
                .map_err(|e| Error::FailedPrecondition(format!("runtime handler {name:?}: {e}")))?;
            handlers.insert(name.clone(), rt);
        }
        container::runtime_handlers::set(handlers);
        Ok(Self {
            node: Arc::new(Node {
                config,
                version: version.into(),
                pod_cidr: tokio::sync::RwLock::new(String::new()),
                user_namespaces: Default::default(),
            }),
            images: Some(images),
            sandboxes: None,
            containers: None,
            stream: None,
            helper_exe: None,
            metrics: None,
        })
    }

    /// Reports pods, containers, CNI and start latencies and the monitors into `metrics`. Call it
    /// before [`Cri::with_sandboxes`] and [`Cri::with_containers`], which hook into it.
    pub fn with_metrics(mut self, metrics: carapace_metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Opens the pod sandbox store under `config.state` (reloading every sandbox a previous run
    /// left), with the real kernel. `infra` starts the PID 1 of pods that share a PID namespace:
    /// the `carapace` binary in its infra role; `None` refuses such pods. Call it before
    /// [`Cri::runtime_service`], as root, in the host's namespaces.
    pub fn with_sandboxes(mut self, infra: Option<InfraCommand>) -> Result<Self, Error> {
        let c = &self.node.config;
        let mut opts =
            carapace_podsandbox::Options::new(&c.state, &c.cni.conf_dir, c.cni.bin_dirs.clone());
        opts.cni_timeout = std::time::Duration::from_secs(c.cni.plugin_timeout_secs);
        // The pods' records and the CNI cache outlive a reboot there (docs/cri.md).
        opts.root_dir = Some(c.root.clone());
        opts.cgroup_driver = match c.cgroup.driver {
            config::CgroupDriver::Cgroupfs => carapace_podsandbox::CgroupDriver::Cgroupfs,
            config::CgroupDriver::Systemd => carapace_podsandbox::CgroupDriver::Systemd,
        };
        if let Some(helper) = &infra {
            let ok = probe_user_namespaces(helper, &c.root, &c.state);
            self.node
                .user_namespaces
                .store(ok, std::sync::atomic::Ordering::Relaxed);
        }
        opts.infra = infra;
        if let Some(m) = &self.metrics {
            let node = m.node().clone();
            opts.cni_observer = Some(carapace_podsandbox::CniObserver(Arc::new(
                move |op, ok, took| {
                    let op = match op {
                        carapace_podsandbox::CniOp::Add => "add",
                        carapace_podsandbox::CniOp::Del => "del",
                    };
                    node.observe_cni(op, ok, took.as_secs_f64());
                },
            )));
        }
        let kernel = Arc::new(carapace_podsandbox::kernel::Linux);
        self.sandboxes = Some(Arc::new(carapace_podsandbox::Sandboxes::open(
            opts, kernel,
        )?));
        self.connect_stores();
        Ok(self)
    }

    /// Opens the container store under `root`/`state` and finds again the containers (and their
    /// monitors) that a previous run left. Blocks; call it before serving.
    pub fn with_containers(mut self) -> Result<Self, Error> {
        let c = &self.node.config;
        let opts = carapace_runtime::container::RuntimeOptions::for_daemon(
            c.root.clone(),
            c.state.clone(),
        )?;
        self.helper_exe = Some(opts.helper_exe().to_owned());
        let containers = container::ContainerApi::open(opts)?;
        remove_orphan_layers(&c.root.join("containers"), &c.state.join("containers"));
        // A container removed by a daemon that died before it released the container's image
        // hold (RemovePodSandbox removes them all, then releases): nothing would ever release it.
        if let Some(images) = &self.images {
            images.keep_holds_of(|id| containers.exists(id))?;
        }
        self.containers = Some(containers);
        self.connect_stores();
        Ok(self)
    }

    /// The read-only bind of this binary that [`Cri::with_containers`] made: what helper processes,
    /// the pod infra process included, are started from.
    pub fn helper_exe(&self) -> Option<&std::path::Path> {
        self.helper_exe.as_deref()
    }

    /// Starts the exec/attach/port-forward server on `[stream] address`. Without it, those RPCs
    /// answer `Unavailable`.
    pub async fn with_streaming(mut self) -> Result<Self, Error> {
        let backend = streaming::Backend {
            containers: self.containers.clone(),
            sandboxes: self.sandboxes.clone(),
        };
        let server = stream::StreamServer::start(
            self.node.config.stream.address,
            Arc::new(backend),
            stream::Limits::default(),
        )
        .await?;
        tracing::info!(address = %server.local_addr(), "streaming server listening");
        self.stream = Some(Arc::new(server));
        Ok(self)
    }

    /// Once both the container and the sandbox stores are open (in either order): the container
    /// events carry the pod's status, exits are watched, and the node gauges are refreshed from
    /// both before each scrape.
    fn connect_stores(&self) {
        let (Some(containers), Some(sandboxes)) = (&self.containers, &self.sandboxes) else {
            return;
        };
        containers.link(container::Links {
            sandboxes: Some(sandboxes.clone()),
            metrics: self.metrics.as_ref().map(|m| m.node().clone()),
        });
        if let Some(m) = &self.metrics {
            let (node, c, s) = (m.node().clone(), containers.clone(), sandboxes.clone());
            // Runs before each scrape, on a blocking thread.
            m.on_scrape(move || {
                let pods = s.list();
                let ready = pods
                    .iter()
                    .filter(|p| p.state == carapace_podsandbox::SandboxState::Ready)
                    .count() as i64;
                node.set_pods(&[("ready", ready), ("notready", pods.len() as i64 - ready)]);
                let (by_state, monitors) = c.census();
                node.set_containers(&by_state);
                node.set_monitors(&monitors);
            });
        }
    }

    pub fn runtime_service(&self) -> RuntimeService {
        RuntimeService::new(runtime::RuntimeApi::new(
            self.node.clone(),
            sandbox::SandboxApi::new(self.sandboxes.clone()),
            runtime::Stores {
                containers: self.containers.clone(),
                images: self.images.clone(),
                sandboxes: self.sandboxes.clone(),
                stream: self.stream.clone(),
            },
        ))
    }

    pub fn image_service(&self) -> ImageServiceServer<image::ImageApi> {
        ImageServiceServer::new(image::ImageApi::new(
            self.images.clone(),
            self.containers.clone(),
        ))
    }

    /// Loads the images of an OCI image layout or `docker save` archive into the image store
    /// (`carapace image import`), as `ListImages` will show them. `base_name` names layout
    /// entries that carry only a tag.
    pub async fn import_images(
        &self,
        archive: &std::path::Path,
        base_name: Option<&str>,
    ) -> Result<Vec<api::Image>, Error> {
        let images = image::ImageApi::new(self.images.clone(), None);
        images.import(archive, base_name).await
    }
}

/// Removes the writable layers under `layers` (`<root>/containers/<id>`) of containers that have
/// no bundle under `bundles` any more: a reboot emptied the state dir, which held their records,
/// or the daemon died between the two removals of a container. Nothing refers to them; nothing
/// else would ever remove them. At start, before serving, so no create is in flight.
fn remove_orphan_layers(layers: &std::path::Path, bundles: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(layers) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if bundles.join(&name).exists() {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::info!(container_id = %name.to_string_lossy(), "removed the writable layer of a container whose state is gone")
            }
            Err(e) => {
                tracing::warn!(path = %entry.path().display(), error = %e, "removing an orphaned writable layer")
            }
        }
    }
}

/// The span each CRI call runs in: its method, and the ids the handler fills in once it has read
/// the request, so every log line of a call says what it touched.
pub fn call_span<B>(req: &http::Request<B>) -> tracing::Span {
    let method = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .filter(|m| !m.is_empty() && m.len() <= 64)
        .unwrap_or("unknown");
    tracing::info_span!(
        "cri",
        method,
        pod_id = tracing::field::Empty,
        container_id = tracing::field::Empty,
        image = tracing::field::Empty,
    )
}
