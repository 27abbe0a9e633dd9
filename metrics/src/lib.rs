//! Prometheus metrics for carapace: one registry ([`Metrics`]) that every part of the daemon
//! registers into, the tower layer that counts and times every CRI call ([`CriMetricsLayer`]), and
//! the `GET /metrics` HTTP endpoint ([`serve`]). It owns metric names and labels; it never decides
//! what the daemon does.
#![deny(unsafe_code)]

mod grpc;
mod http_endpoint;
mod node;

pub use grpc::{CriMetricsLayer, CriMetricsService};
pub use http_endpoint::serve;
pub use node::{CONTAINER_STATES, MonitorUsage, NodeMetrics, POD_STATES};

use std::sync::{Arc, Mutex};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Errors from building the registry or serving it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registering metric: {0}")]
    Register(#[from] prometheus::Error),
    #[error("metrics endpoint on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Latency buckets for CRI calls: from 100µs (a List served from memory) to 2 minutes (an image
/// pull), so both ends of what a kubelet sees land in a bucket of their own.
const CRI_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Work run before each scrape, to refresh gauges that are cheaper to read than to track.
type ScrapeHook = Box<dyn Fn() + Send + Sync>;

/// The daemon's metric registry and the metrics every part shares.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    cri_requests: IntCounterVec,
    cri_duration: HistogramVec,
    node: NodeMetrics,
    hooks: Arc<Mutex<Vec<ScrapeHook>>>,
}

impl Metrics {
    /// A registry with the CRI call metrics, process metrics (RSS, fds, CPU) and a build-info gauge
    /// for `version`.
    pub fn new(version: &str) -> Result<Self, Error> {
        let registry = Registry::new();
        let cri_requests = IntCounterVec::new(
            Opts::new(
                "carapace_cri_requests_total",
                "CRI calls answered, by service, method and gRPC status code.",
            ),
            &["service", "method", "code"],
        )?;
        let cri_duration = HistogramVec::new(
            HistogramOpts::new(
                "carapace_cri_request_duration_seconds",
                "Time from a CRI call's arrival to the end of its response, by service, method and gRPC status code.",
            )
            .buckets(CRI_BUCKETS.to_vec()),
            &["service", "method", "code"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "carapace_build_info",
                "Always 1; the labels say which carapace build is running.",
            ),
            &["version", "cri_api_version"],
        )?;
        build_info.with_label_values(&[version, "v1"]).set(1);
        registry.register(Box::new(cri_requests.clone()))?;
        registry.register(Box::new(cri_duration.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let node = NodeMetrics::register(&registry)?;
        Ok(Self {
            registry,
            cri_requests,
            cri_duration,
            node,
            hooks: Arc::default(),
        })
    }

    /// The pod, container, CNI and monitor metrics.
    pub fn node(&self) -> &NodeMetrics {
        &self.node
    }

    /// Runs `hook` before every scrape (on a blocking thread, so it may read files), e.g. to set
    /// gauges from the stores.
    pub fn on_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(hook));
    }

    /// The registry, for other parts of the daemon to register their own collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one finished CRI call.
    pub fn observe_cri_call(&self, service: &str, method: &str, code: &str, seconds: f64) {
        let labels = [service, method, code];
        self.cri_requests.with_label_values(&labels).inc();
        self.cri_duration
            .with_label_values(&labels)
            .observe(seconds);
    }

    /// The registry in the Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        for hook in self.hooks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            hook();
        }
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail on I/O; a collector error leaves a partial page, which is
        // still better than no page for the scraper.
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_exposes_build_info_process_and_cri_metrics() {
        let m = Metrics::new("1.2.3").unwrap();
        m.observe_cri_call("runtime.v1.RuntimeService", "Version", "OK", 0.001);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(r#"carapace_build_info{cri_api_version="v1",version="1.2.3"} 1"#));
        assert!(text.contains(
            r#"carapace_cri_requests_total{code="OK",method="Version",service="runtime.v1.RuntimeService"} 1"#
        ));
        assert!(text.contains("carapace_cri_request_duration_seconds_bucket"));
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(text.contains("process_open_fds"));
    }

    #[test]
    fn node_gauges_list_every_state_and_scrape_hooks_run_before_rendering() {
        let m = Metrics::new("1").unwrap();
        let node = m.node().clone();
        m.on_scrape(move || {
            node.set_pods(&[("ready", 3)]);
            node.set_containers(&[("running", 2), ("exited", 1)]);
            let monitor = |pid| MonitorUsage {
                pid,
                rss_bytes: 2048,
                open_fds: 5,
                cpu_seconds: 0.5,
            };
            node.set_monitors(&[monitor(1), monitor(2)]);
        });
        m.node().observe_cni("add", true, 0.05);
        m.node().observe_container_start(0.01);
        let text = String::from_utf8(m.render()).unwrap();
        for line in [
            r#"carapace_pods{state="ready"} 3"#,
            r#"carapace_pods{state="notready"} 0"#,
            r#"carapace_containers{state="running"} 2"#,
            r#"carapace_containers{state="created"} 0"#,
            "carapace_monitor_processes 2",
            "carapace_monitor_resident_memory_bytes 4096",
            r#"carapace_cni_operation_duration_seconds_count{operation="add",outcome="success"} 1"#,
            "carapace_container_start_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing {line}");
        }
    }
}
