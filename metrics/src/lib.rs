//! Prometheus metrics for carapace: one registry ([`Metrics`]) that every part of the daemon
//! registers into, the tower layer that counts and times every CRI call ([`CriMetricsLayer`]), and
//! the `GET /metrics` HTTP endpoint ([`serve`]). It owns metric names and labels; it never decides
//! what the daemon does.
#![deny(unsafe_code)]

mod grpc;
mod http_endpoint;

pub use grpc::{CriMetricsLayer, CriMetricsService};
pub use http_endpoint::serve;

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

/// The daemon's metric registry and the metrics every part shares.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    cri_requests: IntCounterVec,
    cri_duration: HistogramVec,
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
        Ok(Self {
            registry,
            cri_requests,
            cri_duration,
        })
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
}
