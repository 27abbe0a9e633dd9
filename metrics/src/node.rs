//! What the node runs and how quickly: pods and containers by state, CNI ADD/DEL latency,
//! container start latency, and the per-container monitor processes (count, memory, fds, CPU). The
//! gauges are set by the daemon's stores from a scrape hook ([`crate::Metrics::on_scrape`]), so
//! keeping them costs nothing between scrapes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::{
    Counter, Histogram, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry,
};

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
    monitor_fds: IntGauge,
    monitor_cpu: Counter,
    /// Each monitor's CPU seconds at the last scrape, by pid: what the counter has counted.
    monitor_cpu_seen: Arc<Mutex<HashMap<i32, f64>>>,
}

/// One container monitor process as a scrape finds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonitorUsage {
    pub pid: i32,
    pub rss_bytes: i64,
    pub open_fds: i64,
    /// CPU time (user and system) it has used since it started.
    pub cpu_seconds: f64,
}

/// The states [`NodeMetrics::set_pods`] reports, each always present (0 when none).
pub const POD_STATES: &[&str] = &["ready", "notready"];
/// The states [`NodeMetrics::set_containers`] reports.
pub const CONTAINER_STATES: &[&str] = &["created", "running", "exited", "unknown"];
/// The operations [`NodeMetrics::observe_cni`] is given.
const CNI_OPERATIONS: &[&str] = &["add", "del"];

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
        let monitor_fds = IntGauge::new(
            "carapace_monitor_open_fds",
            "Open file descriptors of all container monitor processes together.",
        )?;
        let monitor_cpu = Counter::new(
            "carapace_monitor_cpu_seconds_total",
            "CPU time the container monitor processes used, counted at each scrape for the monitors alive then.",
        )?;
        for s in POD_STATES {
            pods.with_label_values(&[s]).set(0);
        }
        for s in CONTAINER_STATES {
            containers.with_label_values(&[s]).set(0);
        }
        // The error series exist at 0 from the start: `increase()` cannot see the first failure
        // of a series that appears with it, and the CNI alert is an increase of these.
        for op in CNI_OPERATIONS {
            cni.with_label_values(&[op, "error"]);
        }
        registry.register(Box::new(pods.clone()))?;
        registry.register(Box::new(containers.clone()))?;
        registry.register(Box::new(cni.clone()))?;
        registry.register(Box::new(container_start.clone()))?;
        registry.register(Box::new(monitors.clone()))?;
        registry.register(Box::new(monitor_rss.clone()))?;
        registry.register(Box::new(monitor_fds.clone()))?;
        registry.register(Box::new(monitor_cpu.clone()))?;
        Ok(Self {
            pods,
            containers,
            cni,
            container_start,
            monitors,
            monitor_rss,
            monitor_fds,
            monitor_cpu,
            monitor_cpu_seen: Arc::default(),
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

    /// The monitor processes alive: their count, and their memory and fds together. Their CPU
    /// counter grows by what each used since the last call; a monitor that exits between two
    /// calls takes its last moments with it, which a counter can only under-count.
    pub fn set_monitors(&self, alive: &[MonitorUsage]) {
        self.monitors.set(alive.len() as i64);
        self.monitor_rss
            .set(alive.iter().map(|m| m.rss_bytes).sum());
        self.monitor_fds.set(alive.iter().map(|m| m.open_fds).sum());
        let mut seen = self
            .monitor_cpu_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut now = HashMap::with_capacity(alive.len());
        for m in alive {
            let before = seen.get(&m.pid).copied().unwrap_or(0.0);
            // Less than before: a new monitor that got a number an exited one had.
            let used = if m.cpu_seconds >= before {
                m.cpu_seconds - before
            } else {
                m.cpu_seconds
            };
            self.monitor_cpu.inc_by(used);
            now.insert(m.pid, m.cpu_seconds);
        }
        *seen = now;
    }
}

fn set_all(g: &IntGaugeVec, states: &[&str], counts: &[(&str, i64)]) {
    for s in states {
        let n = counts.iter().filter(|(k, _)| k == s).map(|(_, n)| n).sum();
        g.with_label_values(&[s]).set(n);
    }
}

#[cfg(test)]
mod tests {
    use crate::Metrics;

    #[test]
    fn cni_error_series_are_exposed_at_zero_before_any_failure() {
        let m = Metrics::new("1").unwrap();
        let text = String::from_utf8(m.render()).unwrap();
        for op in ["add", "del"] {
            let line = format!(
                "carapace_cni_operation_duration_seconds_count{{operation=\"{op}\",outcome=\"error\"}} 0"
            );
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        m.node().observe_cni("add", false, 0.01);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(
            r#"carapace_cni_operation_duration_seconds_count{operation="add",outcome="error"} 1"#
        ));
    }

    #[test]
    fn monitor_cpu_counts_what_each_monitor_used_between_scrapes() {
        use super::MonitorUsage;
        let m = Metrics::new("1").unwrap();
        let usage = |pid, cpu_seconds| MonitorUsage {
            pid,
            rss_bytes: 1000,
            open_fds: 7,
            cpu_seconds,
        };
        let node = m.node();
        node.set_monitors(&[usage(10, 0.5), usage(11, 0.25)]);
        // 10 used 0.25 s more; 11 exited; 12 is new; then 10's number is taken by a new monitor.
        node.set_monitors(&[usage(10, 0.75), usage(12, 0.125)]);
        let text = String::from_utf8(m.render()).unwrap();
        for line in [
            "carapace_monitor_cpu_seconds_total 1.125",
            "carapace_monitor_processes 2",
            "carapace_monitor_resident_memory_bytes 2000",
            "carapace_monitor_open_fds 14",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        node.set_monitors(&[usage(10, 0.0625)]);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("carapace_monitor_cpu_seconds_total 1.1875"),
            "{text}"
        );
        assert!(text.contains("carapace_monitor_processes 1"), "{text}");
    }
}
