//! The CRI v1 front of carapace: the tonic `RuntimeService` and `ImageService`, request validation,
//! and the one place where domain errors become gRPC status codes ([`error`]). It orchestrates the
//! domain crates (sandboxes, containers, images, CNI) and hands them plain data; nothing depends back
//! on it. It also owns the daemon's configuration ([`config`]), since it is what wires the parts.
#![deny(unsafe_code)]

pub mod config;
mod error;
mod image;
mod runtime;

use std::sync::Arc;

pub use error::Error;
pub use k8s_cri::v1 as api;

use api::image_service_server::ImageServiceServer;
use api::runtime_service_server::RuntimeServiceServer;
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
}

/// The CRI services of one daemon, ready to be added to a tonic server.
pub struct Cri {
    node: Arc<Node>,
}

impl Cri {
    /// `version` is the daemon's own version, reported by `Version` and in metrics.
    pub fn new(config: Config, version: impl Into<String>) -> Self {
        Self {
            node: Arc::new(Node {
                config,
                version: version.into(),
                pod_cidr: tokio::sync::RwLock::new(String::new()),
            }),
        }
    }

    pub fn runtime_service(&self) -> RuntimeServiceServer<runtime::RuntimeApi> {
        RuntimeServiceServer::new(runtime::RuntimeApi::new(self.node.clone()))
    }

    pub fn image_service(&self) -> ImageServiceServer<image::ImageApi> {
        ImageServiceServer::new(image::ImageApi::new(self.node.clone()))
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
