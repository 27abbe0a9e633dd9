//! The figures behind `ContainerStats`, `ListContainerStats`, `PodSandboxStats`,
//! `ListPodSandboxStats`, `ListMetricDescriptors` and `ListPodSandboxMetrics`: what the runtime
//! reads from cgroups and the pod's network namespace, turned into the CRI's messages and into the
//! cAdvisor-named metrics the kubelet re-exports on `/metrics/cadvisor` (so a node needs no
//! cAdvisor). The calls read them in [`crate::container`] and [`crate::pod_stats`].
//!
//! It owns two small memories: the previous CPU sample of each container and pod, for the current
//! rate in nano-cores (as containerd keeps one), and each writable layer's disk usage for a few
//! seconds, because walking a layer costs more than anything else here and the kubelet asks for
//! container and pod stats back to back. Every read runs on the blocking pool.
//!
//! Interpretations: the first sample of a container has no `usage_nano_cores` (there is no rate
//! yet); a rate needs samples at least [`MIN_RATE_WINDOW`] apart, the previous sample is kept until
//! then so two calls close together still answer a rate over a real window.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use carapace_podsandbox::InterfaceStats;
use carapace_runtime::stats::{CgroupStats, DiskUsage, Pressure, PressureData};

use crate::api::*;

/// The shortest window a CPU rate is computed over.
pub(crate) const MIN_RATE_WINDOW: Duration = Duration::from_secs(1);
/// How long a writable layer's walked usage is served from memory.
const LAYER_USAGE_TTL: Duration = Duration::from_secs(5);

/// One CPU reading: cumulative nanoseconds at a monotonic instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    pub usage_ns: u64,
    pub at: Instant,
}

/// The CPU rate between two samples in nano-cores (1e9 = one core busy); `None` when the window
/// is too short. A counter that went backwards (a new cgroup under the same id) reads as 0.
pub(crate) fn nano_cores(prev: CpuSample, now: CpuSample) -> Option<u64> {
    let window = now.at.checked_duration_since(prev.at)?;
    if window < MIN_RATE_WINDOW {
        return None;
    }
    let used = now.usage_ns.saturating_sub(prev.usage_ns) as u128;
    Some((used * 1_000_000_000 / window.as_nanos().max(1)) as u64)
}

/// The stats memories, shared by the container and pod calls.
#[derive(Default)]
pub(crate) struct StatsCache {
    cpu: Mutex<HashMap<String, CpuSample>>,
    layers: Mutex<HashMap<String, (DiskUsage, Instant)>>,
}

impl StatsCache {
    /// The rate since the kept sample of `key`; keeps `now` when there was none or the window
    /// was long enough to answer.
    pub(crate) fn rate(&self, key: &str, now: CpuSample) -> Option<u64> {
        let mut m = self.cpu.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(key).copied() {
            None => {
                m.insert(key.to_owned(), now);
                None
            }
            Some(prev) => {
                let r = nano_cores(prev, now);
                if r.is_some() {
                    m.insert(key.to_owned(), now);
                }
                r
            }
        }
    }

    /// The writable layer's usage of container `id`, walked with `walk` when not known or stale.
    pub(crate) fn layer_usage(&self, id: &str, walk: impl FnOnce() -> DiskUsage) -> DiskUsage {
        if let Some((u, at)) = self
            .layers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            && at.elapsed() < LAYER_USAGE_TTL
        {
            return *u;
        }
        let u = walk();
        self.layers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), (u, Instant::now()));
        u
    }

    /// Drops what is known about `id` (a container or pod removed).
    pub(crate) fn forget(&self, id: &str) {
        self.cpu
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.layers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

pub(crate) fn u64v(value: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value })
}

/// What a container's stats call read: its cgroup (`None` before the cgroup exists), its
/// writable layer and the CPU rate.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContainerSample {
    pub attributes: ContainerAttributes,
    pub sandbox_id: String,
    pub created_at: i64,
    pub cgroup: Option<CgroupStats>,
    pub nano_cores: Option<u64>,
    pub layer: DiskUsage,
    /// Nanoseconds since the epoch.
    pub timestamp: i64,
}

pub(crate) fn cpu_usage(cg: Option<&CgroupStats>, nano_cores: Option<u64>, ts: i64) -> CpuUsage {
    CpuUsage {
        timestamp: ts,
        usage_core_nano_seconds: u64v(cg.map(|c| c.cpu.usage_ns).unwrap_or(0)),
        usage_nano_cores: nano_cores.and_then(u64v),
        psi: psi_stats(cg.and_then(|c| c.cpu_pressure.as_ref())),
    }
}

fn psi_data(d: &PressureData) -> PsiData {
    PsiData {
        // The kernel counts stall time in microseconds, the CRI in nanoseconds.
        total: d.total_us.saturating_mul(1000),
        avg10: d.avg10,
        avg60: d.avg60,
        avg300: d.avg300,
    }
}

/// A cgroup's pressure as the CRI shows it; absent, not zero, where the cgroup has no
/// `*.pressure` file (cgroup v1, a kernel without PSI), and `full` likewise where the file has no
/// such line, so the kubelet does not report stalls that were never measured as none.
pub(crate) fn psi_stats(p: Option<&Pressure>) -> Option<PsiStats> {
    p.map(|p| PsiStats {
        full: p.full.as_ref().map(psi_data),
        some: Some(psi_data(&p.some)),
    })
}

/// `ContainerStats.io` / `LinuxPodSandboxStats.io`: only IO pressure is reported there, so the
/// whole message is absent where that is.
pub(crate) fn io_usage(cg: Option<&CgroupStats>, ts: i64) -> Option<IoUsage> {
    let psi = psi_stats(cg.and_then(|c| c.io_pressure.as_ref()))?;
    Some(IoUsage {
        timestamp: ts,
        psi: Some(psi),
    })
}

pub(crate) fn memory_usage(cg: Option<&CgroupStats>, ts: i64) -> MemoryUsage {
    let m = cg.map(|c| c.memory).unwrap_or_default();
    MemoryUsage {
        timestamp: ts,
        working_set_bytes: u64v(m.working_set),
        available_bytes: m
            .limit
            .map(|l| l.saturating_sub(m.working_set))
            .and_then(u64v),
        usage_bytes: u64v(m.usage),
        rss_bytes: u64v(m.rss),
        page_faults: u64v(m.page_faults),
        major_page_faults: u64v(m.major_page_faults),
        psi: psi_stats(cg.and_then(|c| c.memory_pressure.as_ref())),
    }
}

/// The filesystem the writable layers live on, as `ContainerStats` and `ImageFsInfo` name it.
pub(crate) fn layer_fs(mountpoint: &str, usage: DiskUsage, ts: i64) -> FilesystemUsage {
    FilesystemUsage {
        timestamp: ts,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: mountpoint.to_owned(),
        }),
        used_bytes: u64v(usage.bytes),
        inodes_used: u64v(usage.inodes),
    }
}

impl ContainerSample {
    pub(crate) fn to_cri(&self, layers_mountpoint: &str) -> ContainerStats {
        let ts = self.timestamp;
        let cg = self.cgroup.as_ref();
        ContainerStats {
            attributes: Some(self.attributes.clone()),
            cpu: Some(cpu_usage(cg, self.nano_cores, ts)),
            memory: Some(memory_usage(cg, ts)),
            writable_layer: Some(layer_fs(layers_mountpoint, self.layer, ts)),
            swap: None,
            io: io_usage(cg, ts),
        }
    }
}

/// The pod-level figures of a `PodSandboxStats`.
pub(crate) fn network_usage(ifaces: &[InterfaceStats], ts: i64) -> NetworkUsage {
    let iface = |i: &InterfaceStats| NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: u64v(i.rx_bytes),
        rx_errors: u64v(i.rx_errors),
        tx_bytes: u64v(i.tx_bytes),
        tx_errors: u64v(i.tx_errors),
    };
    NetworkUsage {
        timestamp: ts,
        // The interface CNI made, else the first one.
        default_interface: ifaces
            .iter()
            .find(|i| i.name == carapace_podsandbox::POD_IFNAME)
            .or(ifaces.first())
            .map(iface),
        interfaces: ifaces.iter().map(iface).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// cAdvisor-named metrics for ListMetricDescriptors / ListPodSandboxMetrics.
// ---------------------------------------------------------------------------------------------

/// The label keys every metric starts with: the container's (or pod's) id and name. The kubelet
/// appends `namespace`, `pod` and `container` itself, so they are not ours to send.
const BASE_LABELS: &[&str] = &["id", "name"];

struct Descriptor {
    name: &'static str,
    help: &'static str,
    extra: &'static [&'static str],
    kind: MetricType,
}

const fn d(
    name: &'static str,
    help: &'static str,
    extra: &'static [&'static str],
    kind: MetricType,
) -> Descriptor {
    Descriptor {
        name,
        help,
        extra,
        kind,
    }
}

use MetricType::{Counter, Gauge};

/// Every metric carapace sends, with cAdvisor's names, help and extra label keys.
const DESCRIPTORS: &[Descriptor] = &[
    d(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        &["cpu"],
        Counter,
    ),
    d(
        "container_cpu_user_seconds_total",
        "Cumulative user cpu time consumed in seconds.",
        &[],
        Counter,
    ),
    d(
        "container_cpu_system_seconds_total",
        "Cumulative system cpu time consumed in seconds.",
        &[],
        Counter,
    ),
    d(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        &[],
        Gauge,
    ),
    d(
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        &[],
        Gauge,
    ),
    d("container_memory_rss", "Size of RSS in bytes.", &[], Gauge),
    d(
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        &[],
        Gauge,
    ),
    d(
        "container_memory_failures_total",
        "Cumulative count of memory allocation failures.",
        &["failure_type", "scope"],
        Counter,
    ),
    d(
        "container_oom_events_total",
        "Count of out of memory events observed for the container",
        &[],
        Counter,
    ),
    d(
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        &[],
        Gauge,
    ),
    d(
        "container_processes",
        "Number of processes running inside the container.",
        &[],
        Gauge,
    ),
    d(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        &[],
        Gauge,
    ),
    d(
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        &["device"],
        Gauge,
    ),
    d(
        "container_fs_inodes_used",
        "Number of inodes used by the container on this filesystem.",
        &["device"],
        Gauge,
    ),
    d(
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received",
        &["interface"],
        Counter,
    ),
    d(
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted",
        &["interface"],
        Counter,
    ),
    d(
        "container_network_receive_errors_total",
        "Cumulative count of errors encountered while receiving",
        &["interface"],
        Counter,
    ),
    d(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting",
        &["interface"],
        Counter,
    ),
];

/// cAdvisor's pressure stall metrics: the cumulative `full` ("stalled") and `some` ("waiting")
/// time, offered where the node has PSI ([`node_has_psi`]).
const PRESSURE_DESCRIPTORS: &[Descriptor] = &[
    d(
        "container_pressure_cpu_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to CPU congestion.",
        &[],
        Counter,
    ),
    d(
        "container_pressure_cpu_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to CPU congestion.",
        &[],
        Counter,
    ),
    d(
        "container_pressure_memory_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to memory congestion.",
        &[],
        Counter,
    ),
    d(
        "container_pressure_memory_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to memory congestion.",
        &[],
        Counter,
    ),
    d(
        "container_pressure_io_stalled_seconds_total",
        "Total time duration no tasks in the container could make progress due to IO congestion.",
        &[],
        Counter,
    ),
    d(
        "container_pressure_io_waiting_seconds_total",
        "Total time duration tasks in the container have waited due to IO congestion.",
        &[],
        Counter,
    ),
];

/// Whether containers' cgroups have `*.pressure` files: a cgroup v2 node whose kernel accounts
/// PSI (`/proc/pressure/cpu` reads; it fails on kernels booted with `psi=0`). A hybrid node has
/// PSI in its unified hierarchy only, where carapace puts no container.
fn node_has_psi() -> bool {
    carapace_runtime::cgroup::ContainerCgroup::is_v2()
        && std::fs::read_to_string("/proc/pressure/cpu")
            .ok()
            .and_then(|t| carapace_runtime::stats::parse_pressure(&t))
            .is_some()
}

/// ListMetricDescriptors' answer.
pub(crate) fn metric_descriptors() -> Vec<MetricDescriptor> {
    descriptors(node_has_psi())
}

fn descriptors(psi: bool) -> Vec<MetricDescriptor> {
    let pressure: &[Descriptor] = if psi { PRESSURE_DESCRIPTORS } else { &[] };
    DESCRIPTORS
        .iter()
        .chain(pressure)
        .map(|d| MetricDescriptor {
            name: d.name.into(),
            help: d.help.into(),
            label_keys: BASE_LABELS
                .iter()
                .chain(d.extra)
                .map(|s| (*s).to_owned())
                .collect(),
        })
        .collect()
}

/// Builds metrics with the base label values of one container or pod.
struct Emitter<'a> {
    base: [&'a str; 2],
    ts: i64,
    out: Vec<Metric>,
}

impl Emitter<'_> {
    fn push(&mut self, name: &'static str, extra: &[&str], value: u64) {
        let Some(d) = DESCRIPTORS
            .iter()
            .chain(PRESSURE_DESCRIPTORS)
            .find(|d| d.name == name)
        else {
            return;
        };
        debug_assert_eq!(d.extra.len(), extra.len(), "{name}");
        self.out.push(Metric {
            name: name.into(),
            timestamp: self.ts,
            metric_type: d.kind as i32,
            label_values: self
                .base
                .iter()
                .chain(extra)
                .map(|s| (*s).to_owned())
                .collect(),
            value: u64v(value),
        });
    }
}

const NS_PER_S: u64 = 1_000_000_000;
const US_PER_S: u64 = 1_000_000;

impl Emitter<'_> {
    /// A cgroup's `full` and `some` stall time as cAdvisor's `stalled`/`waiting` counters; none
    /// where the cgroup has no pressure file (or, for `full`, no such line).
    fn pressure(&mut self, p: Option<&Pressure>, stalled: &'static str, waiting: &'static str) {
        let Some(p) = p else { return };
        if let Some(full) = &p.full {
            self.push(stalled, &[], full.total_us / US_PER_S);
        }
        self.push(waiting, &[], p.some.total_us / US_PER_S);
    }
}

/// A container's metrics.
pub(crate) fn container_metrics(s: &ContainerSample, device: &str) -> ContainerMetrics {
    let name = s
        .attributes
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or_default();
    let mut e = Emitter {
        base: [&s.attributes.id, name],
        ts: s.timestamp,
        out: Vec::with_capacity(DESCRIPTORS.len()),
    };
    let cg = s.cgroup.unwrap_or_default();
    e.push(
        "container_cpu_usage_seconds_total",
        &["total"],
        cg.cpu.usage_ns / NS_PER_S,
    );
    e.push(
        "container_cpu_user_seconds_total",
        &[],
        cg.cpu.user_ns / NS_PER_S,
    );
    e.push(
        "container_cpu_system_seconds_total",
        &[],
        cg.cpu.system_ns / NS_PER_S,
    );
    e.push("container_memory_usage_bytes", &[], cg.memory.usage);
    e.push(
        "container_memory_working_set_bytes",
        &[],
        cg.memory.working_set,
    );
    e.push("container_memory_rss", &[], cg.memory.rss);
    e.push("container_memory_cache", &[], cg.memory.cache);
    let minor = cg
        .memory
        .page_faults
        .saturating_sub(cg.memory.major_page_faults);
    e.push(
        "container_memory_failures_total",
        &["pgfault", "container"],
        minor,
    );
    e.push(
        "container_memory_failures_total",
        &["pgmajfault", "container"],
        cg.memory.major_page_faults,
    );
    e.push("container_oom_events_total", &[], cg.oom_kills);
    e.push(
        "container_spec_memory_limit_bytes",
        &[],
        cg.memory.limit.unwrap_or(0),
    );
    e.push("container_processes", &[], cg.processes);
    e.push(
        "container_start_time_seconds",
        &[],
        (s.created_at.max(0) as u64) / NS_PER_S,
    );
    e.push("container_fs_usage_bytes", &[device], s.layer.bytes);
    e.push("container_fs_inodes_used", &[device], s.layer.inodes);
    let cg = s.cgroup.as_ref();
    e.pressure(
        cg.and_then(|c| c.cpu_pressure.as_ref()),
        "container_pressure_cpu_stalled_seconds_total",
        "container_pressure_cpu_waiting_seconds_total",
    );
    e.pressure(
        cg.and_then(|c| c.memory_pressure.as_ref()),
        "container_pressure_memory_stalled_seconds_total",
        "container_pressure_memory_waiting_seconds_total",
    );
    e.pressure(
        cg.and_then(|c| c.io_pressure.as_ref()),
        "container_pressure_io_stalled_seconds_total",
        "container_pressure_io_waiting_seconds_total",
    );
    ContainerMetrics {
        container_id: s.attributes.id.clone(),
        metrics: e.out,
    }
}

/// A pod's own metrics: its network interfaces (the pod's containers share them).
pub(crate) fn pod_metrics(id: &str, name: &str, ifaces: &[InterfaceStats], ts: i64) -> Vec<Metric> {
    let mut e = Emitter {
        base: [id, name],
        ts,
        out: Vec::with_capacity(ifaces.len() * 4),
    };
    for i in ifaces {
        let n = [i.name.as_str()];
        e.push("container_network_receive_bytes_total", &n, i.rx_bytes);
        e.push("container_network_transmit_bytes_total", &n, i.tx_bytes);
        e.push("container_network_receive_errors_total", &n, i.rx_errors);
        e.push("container_network_transmit_errors_total", &n, i.tx_errors);
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64, usage_ns: u64) -> CpuSample {
        CpuSample {
            usage_ns,
            at: base + Duration::from_millis(ms),
        }
    }

    #[test]
    fn nano_cores_is_cpu_time_over_wall_time() {
        let t = Instant::now();
        // Half a core for two seconds.
        assert_eq!(
            nano_cores(at(t, 0, 0), at(t, 2000, 1_000_000_000)),
            Some(500_000_000)
        );
        // Two cores busy.
        assert_eq!(
            nano_cores(at(t, 0, 5), at(t, 1000, 2_000_000_005)),
            Some(2_000_000_000)
        );
        // Too short a window, or time running backwards: no rate.
        assert_eq!(nano_cores(at(t, 0, 0), at(t, 500, 1)), None);
        assert_eq!(nano_cores(at(t, 2000, 0), at(t, 0, 1)), None);
        // A counter that restarted reads as idle, not as a huge number.
        assert_eq!(nano_cores(at(t, 0, 900), at(t, 1000, 100)), Some(0));
    }

    #[test]
    fn the_cache_keeps_the_old_sample_until_a_rate_can_be_given() {
        let c = StatsCache::default();
        let t = Instant::now();
        assert_eq!(c.rate("a", at(t, 0, 0)), None, "first sample: no rate");
        assert_eq!(c.rate("a", at(t, 300, 100)), None, "window too short");
        assert_eq!(c.rate("a", at(t, 1000, 250_000_000)), Some(250_000_000));
        assert_eq!(c.rate("a", at(t, 3000, 250_000_000)), Some(0));
        c.forget("a");
        assert_eq!(c.rate("a", at(t, 4000, 0)), None);
    }

    #[test]
    fn layer_usage_is_walked_once_while_fresh() {
        let c = StatsCache::default();
        let mut walks = 0;
        for _ in 0..3 {
            c.layer_usage("x", || {
                walks += 1;
                DiskUsage {
                    bytes: 4096,
                    inodes: 1,
                }
            });
        }
        assert_eq!(walks, 1);
    }

    fn pressure(total_us: u64, full: bool) -> Pressure {
        let data = PressureData {
            avg10: 1.5,
            avg60: 0.25,
            avg300: 0.03,
            total_us,
        };
        Pressure {
            some: data,
            full: full.then_some(PressureData {
                total_us: total_us / 2,
                ..data
            }),
        }
    }

    #[test]
    fn pressure_maps_to_the_cri_in_nanoseconds_and_absent_stays_absent() {
        let psi = psi_stats(Some(&pressure(2_500_000, true))).unwrap();
        let some = psi.some.unwrap();
        assert_eq!(some.total, 2_500_000_000);
        assert_eq!((some.avg10, some.avg60, some.avg300), (1.5, 0.25, 0.03));
        assert_eq!(psi.full.unwrap().total, 1_250_000_000);
        // A file without a `full` line (older kernels' cpu.pressure): no full, not a zero one.
        assert_eq!(psi_stats(Some(&pressure(7, false))).unwrap().full, None);

        // v1 (this node): every psi and io absent.
        let v1 = CgroupStats::default();
        assert_eq!(cpu_usage(Some(&v1), None, 1).psi, None);
        assert_eq!(memory_usage(Some(&v1), 1).psi, None);
        assert_eq!(io_usage(Some(&v1), 1), None);
        assert_eq!(io_usage(None, 1), None);

        let v2 = CgroupStats {
            cpu_pressure: Some(pressure(1_000, true)),
            memory_pressure: Some(pressure(2_000, true)),
            io_pressure: Some(pressure(3_000, false)),
            ..Default::default()
        };
        let total = |p: Option<PsiStats>| p.unwrap().some.unwrap().total;
        assert_eq!(total(cpu_usage(Some(&v2), None, 1).psi), 1_000_000);
        assert_eq!(total(memory_usage(Some(&v2), 1).psi), 2_000_000);
        let io = io_usage(Some(&v2), 9).unwrap();
        assert_eq!(io.timestamp, 9);
        assert_eq!(total(io.psi), 3_000_000);
        let s = ContainerSample {
            cgroup: Some(v2),
            timestamp: 9,
            ..Default::default()
        };
        assert_eq!(s.to_cri("/x").io, Some(io));
    }

    #[test]
    fn pressure_metrics_are_cadvisors_in_seconds_and_only_where_measured() {
        let names = |psi| -> Vec<String> { descriptors(psi).into_iter().map(|d| d.name).collect() };
        assert!(
            !names(false)
                .iter()
                .any(|n| n.starts_with("container_pressure_"))
        );
        assert_eq!(
            names(true)
                .iter()
                .filter(|n| n.starts_with("container_pressure_"))
                .count(),
            6
        );
        let descs: HashMap<String, usize> = descriptors(true)
            .into_iter()
            .map(|d| (d.name, d.label_keys.len()))
            .collect();
        let sample = |cg| ContainerSample {
            attributes: ContainerAttributes {
                id: "c1".into(),
                ..Default::default()
            },
            cgroup: Some(cg),
            ..Default::default()
        };
        let v2 = CgroupStats {
            cpu_pressure: Some(pressure(4_000_000, true)),
            memory_pressure: Some(pressure(0, true)),
            io_pressure: Some(pressure(6_000_000, false)),
            ..Default::default()
        };
        let got: HashMap<String, u64> = container_metrics(&sample(v2), "/d")
            .metrics
            .into_iter()
            .filter(|m| m.name.starts_with("container_pressure_"))
            .map(|m| {
                assert_eq!(descs.get(&m.name), Some(&m.label_values.len()));
                (m.name, m.value.unwrap().value)
            })
            .collect();
        assert_eq!(
            got,
            HashMap::from([
                ("container_pressure_cpu_stalled_seconds_total".into(), 2),
                ("container_pressure_cpu_waiting_seconds_total".into(), 4),
                ("container_pressure_memory_stalled_seconds_total".into(), 0),
                ("container_pressure_memory_waiting_seconds_total".into(), 0),
                ("container_pressure_io_waiting_seconds_total".into(), 6),
            ])
        );
        let v1 = container_metrics(&sample(CgroupStats::default()), "/d");
        assert!(
            !v1.metrics
                .iter()
                .any(|m| m.name.starts_with("container_pressure_"))
        );
    }

    #[test]
    fn every_metric_has_as_many_label_values_as_its_descriptor_has_keys() {
        let descs: HashMap<String, usize> = metric_descriptors()
            .into_iter()
            .map(|d| (d.name, d.label_keys.len()))
            .collect();
        let s = ContainerSample {
            attributes: ContainerAttributes {
                id: "c1".into(),
                metadata: Some(ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            cgroup: Some(CgroupStats::default()),
            ..Default::default()
        };
        let cm = container_metrics(&s, "/var/lib/carapace/containers");
        let ifaces = [InterfaceStats {
            name: "eth0".into(),
            ..Default::default()
        }];
        let pm = pod_metrics("p1", "pod", &ifaces, 1);
        assert_eq!(pm.len(), 4);
        for m in cm.metrics.iter().chain(&pm) {
            assert_eq!(
                descs.get(&m.name),
                Some(&m.label_values.len()),
                "{}",
                m.name
            );
        }
        for want in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_memory_rss",
            "container_memory_usage_bytes",
            "container_fs_usage_bytes",
            "container_processes",
        ] {
            assert!(cm.metrics.iter().any(|m| m.name == want), "{want}");
        }
    }
}
