//! What the node runs and how quickly: pods and containers by state, CNI ADD/DEL latency,
//! container start latency, and the per-container monitor processes (count and memory). The
//! gauges are set by the daemon's stores from a scrape hook ([`crate::Metrics::on_scrape`]), so
//! keeping them costs nothing between scrapes.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::Error;

/// From a bridge ADD on an idle node (tens of ms) to a plugin that hangs until its timeout.
const CNI_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// From a warm start (a few ms) to a stalled one.
const START_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The node's pod, container and monitor metrics.
#[derive(Clone)]
pub struct NodeMetrics {
    pods: IntGaugeVec,
    containers: IntGaugeVec,
    cni: HistogramVec,
    container_start: Histogram,
    monitors: IntGauge,
    monitor_rss: IntGauge,
}

/// The states [`NodeMetrics::set_pods`] reports, each always present (0 when none).
pub const POD_STATES: &[&str] = &["ready", "notready"];
/// The states [`NodeMetrics::set_containers`] reports.
pub const CONTAINER_STATES: &[&str] = &["created", "running", "exited", "unknown"];

impl NodeMetrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, Error> {
        let pods = IntGaugeVec::new(
            Opts::new("carapace_pods", "Pod sandboxes on the node, by state."),
            &["state"],
        )?;
        let containers = IntGaugeVec::new(
            Opts::new("carapace_containers", "Containers on the node, by state."),
            &["state"],
        )?;
        let cni = HistogramVec::new(
            HistogramOpts::new(
                "carapace_cni_operation_duration_seconds",
                "Time a CNI ADD or DEL of a pod's network took, by operation and outcome.",
            )
            .buckets(CNI_BUCKETS.to_vec()),
            &["operation", "outcome"],
        )?;
        let container_start = Histogram::with_opts(
            HistogramOpts::new(
                "carapace_container_start_duration_seconds",
                "Time from StartContainer's arrival to the container's process running.",
            )
            .buckets(START_BUCKETS.to_vec()),
        )?;
        let monitors = IntGauge::new(
            "carapace_monitor_processes",
            "Per-container monitor processes alive (one per running container).",
        )?;
        let monitor_rss = IntGauge::new(
            "carapace_monitor_resident_memory_bytes",
            "Resident memory of all container monitor processes together.",
        )?;
        for s in POD_STATES {
            pods.with_label_values(&[s]).set(0);
        }
        for s in CONTAINER_STATES {
            containers.with_label_values(&[s]).set(0);
        }
        registry.register(Box::new(pods.clone()))?;
        registry.register(Box::new(containers.clone()))?;
        registry.register(Box::new(cni.clone()))?;
        registry.register(Box::new(container_start.clone()))?;
        registry.register(Box::new(monitors.clone()))?;
        registry.register(Box::new(monitor_rss.clone()))?;
        Ok(Self {
            pods,
            containers,
            cni,
            container_start,
            monitors,
            monitor_rss,
        })
    }

    /// Pods by state: each of [`POD_STATES`] with its count; a state not given reads 0.
    pub fn set_pods(&self, counts: &[(&str, i64)]) {
        set_all(&self.pods, POD_STATES, counts);
    }

    /// Containers by state: each of [`CONTAINER_STATES`] with its count.
    pub fn set_containers(&self, counts: &[(&str, i64)]) {
        set_all(&self.containers, CONTAINER_STATES, counts);
    }

    /// One CNI operation (`"add"` or `"del"`), whether it succeeded, and how long it took.
    pub fn observe_cni(&self, operation: &str, ok: bool, seconds: f64) {
        self.cni
            .with_label_values(&[operation, if ok { "success" } else { "error" }])
            .observe(seconds);
    }

    /// One successful container start.
    pub fn observe_container_start(&self, seconds: f64) {
        self.container_start.observe(seconds);
    }

    /// The monitor processes alive and their resident memory together.
    pub fn set_monitors(&self, count: i64, rss_bytes: i64) {
        self.monitors.set(count);
        self.monitor_rss.set(rss_bytes);
    }
}

fn set_all(g: &IntGaugeVec, states: &[&str], counts: &[(&str, i64)]) {
    for s in states {
        let n = counts.iter().filter(|(k, _)| k == s).map(|(_, n)| n).sum();
        g.with_label_values(&[s]).set(n);
    }
}
