//! `RunPodSandbox` and `CreateContainer` exactly as the kubelet builds them (its
//! `kuberuntime_sandbox*.go`, `kuberuntime_container*.go`, `helpers*.go`, `pkg/kubelet/cm/`), for
//! each QoS class and both cgroup drivers, and the container checked to run with what was asked:
//! the limits in its cgroup files, its OOM score, seccomp, masked and read-only paths, the
//! kubelet's `/etc/hosts` and `/dev/termination-log` binds, its log file, labels and annotations,
//! and a restart as attempt 1 under the same name. The kubelet makes the QoS and pod cgroups
//! itself before `RunPodSandbox`; so do these tests, and they remove them again.
//!
//! What the kubelet sends on this node (cgroup v1 with swap accounting, not unified): cpu shares
//! from the request (2 for none), a CFS quota from the limit (0 for none) with period 100000,
//! the memory limit, `memory_swap_limit_in_bytes` equal to the memory limit (its "no swap" on
//! v1), a hugepage limit (0 unless asked) for every page size in `/sys/kernel/mm/hugepages`, and
//! no `unified` (it sends `memory.oom.group` and `memory.swap.max` only on a unified node; what
//! carapace does with them here is tested below).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use carapace_e2e::node::{Node, cri_log, hugepage_sizes, stdout_of};
use carapace_e2e::registry::Registry;
use carapace_e2e::{DaemonConfig, cri};
use tonic::Code;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Qos {
    BestEffort,
    Burstable,
    Guaranteed,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Driver {
    Cgroupfs,
    Systemd,
}

/// A container's resources in the kubelet's terms: millicores and bytes, 0 for none.
#[derive(Clone, Copy, Debug, Default)]
struct Asked {
    cpu_request: i64,
    cpu_limit: i64,
    memory_request: i64,
    memory_limit: i64,
}

const MI: i64 = 1 << 20;

impl Qos {
    fn asked(self) -> Asked {
        match self {
            Qos::BestEffort => Asked::default(),
            Qos::Burstable => Asked {
                cpu_request: 100,
                cpu_limit: 500,
                memory_request: 64 * MI,
                memory_limit: 128 * MI,
            },
            Qos::Guaranteed => Asked {
                cpu_request: 250,
                cpu_limit: 250,
                memory_request: 96 * MI,
                memory_limit: 96 * MI,
            },
        }
    }

    /// The kubelet's QoS cgroup name; Guaranteed pods sit directly under `kubepods`.
    fn dir(self) -> Option<&'static str> {
        match self {
            Qos::BestEffort => Some("besteffort"),
            Qos::Burstable => Some("burstable"),
            Qos::Guaranteed => None,
        }
    }
}

/// The kubelet's `MilliCPUToShares`.
fn shares(milli: i64) -> i64 {
    if milli == 0 {
        return 2;
    }
    (milli * 1024 / 1000).max(2)
}

/// The kubelet's `milliCPUToQuota` with the default period.
fn quota(milli: i64) -> i64 {
    if milli == 0 {
        return 0;
    }
    (milli * 100_000 / 1000).max(1000)
}

/// The kubelet's `calculateLinuxResources` (cgroup v1, CFS quota on, period 100 ms).
fn linux_resources(
    cpu_request: i64,
    cpu_limit: i64,
    memory_limit: i64,
) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        // No request but a limit: the request defaults to the limit.
        cpu_shares: shares(if cpu_request == 0 {
            cpu_limit
        } else {
            cpu_request
        }),
        cpu_quota: quota(cpu_limit),
        cpu_period: 100_000,
        memory_limit_in_bytes: memory_limit,
        ..Default::default()
    }
}

/// The node's memory, as cAdvisor reports it to the kubelet (MemTotal).
fn memory_capacity() -> i64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: i64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// The kubelet's `GetContainerOOMScoreAdjust`.
fn oom_score_adj(qos: Qos, a: Asked) -> i64 {
    match qos {
        Qos::Guaranteed => -997,
        Qos::BestEffort => 1000,
        Qos::Burstable => {
            let adj = 1000 - (1000 * a.memory_request) / memory_capacity();
            if adj < 3 {
                3
            } else if adj == 1000 {
                999
            } else {
                adj
            }
        }
    }
}

/// The kubelet's default masked and read-only paths (`pkg/securitycontext`), sent with every
/// unprivileged container.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// One pod of the matrix: who it is and where the kubelet would keep its things.
struct Pod {
    qos: Qos,
    driver: Driver,
    name: String,
    uid: String,
    namespace: String,
    /// The kubelet's pod dir (`/var/lib/kubelet/pods/<uid>`), under the test's dir.
    pod_dir: PathBuf,
    /// `/var/log/pods/<ns>_<name>_<uid>`, under the test's dir.
    log_dir: PathBuf,
}

impl Pod {
    fn new(base: &Path, qos: Qos, driver: Driver, index: u8) -> Pod {
        let n = match qos {
            Qos::BestEffort => 1,
            Qos::Burstable => 2,
            Qos::Guaranteed => 3,
        };
        let uid = format!("6b0d{n:04}-0000-4000-8000-{index:012}");
        let name = format!("shape-{}", format!("{qos:?}").to_lowercase());
        let namespace = "kubelet-shapes".to_string();
        let pod_dir = base.join("var/lib/kubelet/pods").join(&uid);
        let log_dir = base
            .join("var/log/pods")
            .join(format!("{namespace}_{name}_{uid}"));
        Pod {
            qos,
            driver,
            name,
            uid,
            namespace,
            pod_dir,
            log_dir,
        }
    }

    /// The kubelet's `cgroup_parent`: `pcm.GetPodContainerName` for the driver.
    fn cgroup_parent(&self) -> String {
        match (self.driver, self.qos.dir()) {
            (Driver::Cgroupfs, Some(q)) => format!("/kubepods/{q}/pod{}", self.uid),
            (Driver::Cgroupfs, None) => format!("/kubepods/pod{}", self.uid),
            (Driver::Systemd, q) => {
                let uid = self.uid.replace('-', "_");
                match q {
                    Some(q) => format!("kubepods-{q}-pod{uid}.slice"),
                    None => format!("kubepods-pod{uid}.slice"),
                }
            }
        }
    }

    /// The cgroup directories the kubelet makes, parents first, relative to each hierarchy.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        match self.driver {
            Driver::Cgroupfs => {
                let mut dirs = vec![PathBuf::from("kubepods")];
                if let Some(q) = self.qos.dir() {
                    dirs.push(PathBuf::from(format!("kubepods/{q}")));
                }
                dirs.push(PathBuf::from(self.cgroup_parent().trim_start_matches('/')));
                dirs
            }
            Driver::Systemd => {
                // systemd's slice layout: each `-` a level.
                let stem = self.cgroup_parent();
                let stem = stem.trim_end_matches(".slice");
                let parts: Vec<&str> = stem.split('-').collect();
                let mut path = PathBuf::new();
                (1..=parts.len())
                    .map(|n| {
                        path.push(format!("{}.slice", parts[..n].join("-")));
                        path.clone()
                    })
                    .collect()
            }
        }
    }

    fn pod_cgroup(&self) -> PathBuf {
        self.cgroup_dirs().pop().unwrap()
    }

    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            ("app".into(), self.name.clone()),
            ("io.kubernetes.pod.name".into(), self.name.clone()),
            ("io.kubernetes.pod.namespace".into(), self.namespace.clone()),
            ("io.kubernetes.pod.uid".into(), self.uid.clone()),
        ])
    }

    /// The pod's overhead (a RuntimeClass's `overhead.podFixed`), for the Burstable pod only.
    fn overhead(&self) -> Option<(i64, i64)> {
        (self.qos == Qos::Burstable).then_some((250, 120 * MI))
    }

    /// `generatePodSandboxConfig` and `applySandboxResources`.
    fn sandbox_config(&self, seccomp: cri::security_profile::ProfileType) -> cri::PodSandboxConfig {
        let a = self.qos.asked();
        let overhead = match self.overhead() {
            // Overhead is treated as guaranteed: request = limit.
            Some((cpu, mem)) => linux_resources(cpu, cpu, mem),
            None => cri::LinuxContainerResources::default(),
        };
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            hostname: self.name.clone(),
            log_directory: self.log_dir.display().to_string(),
            dns_config: Some(cri::DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec![
                    format!("{}.svc.cluster.local", self.namespace),
                    "svc.cluster.local".into(),
                    "cluster.local".into(),
                ],
                options: vec!["ndots:5".into()],
            }),
            labels: self.labels(),
            annotations: HashMap::from([
                ("kubernetes.io/config.source".into(), "file".into()),
                ("kubernetes.io/config.hash".into(), "0f3c2a".into()),
                (
                    "kubernetes.io/config.seen".into(),
                    "2026-12-07T21:00:00.000000000Z".into(),
                ),
            ]),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Pod as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    seccomp: Some(cri::SecurityProfile {
                        profile_type: seccomp as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                resources: Some(linux_resources(a.cpu_request, a.cpu_limit, a.memory_limit)),
                overhead: Some(overhead),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The files the kubelet makes for a container before creating it: the pod's managed
    /// `etc-hosts` and an empty termination-log file, and their mounts.
    fn kubelet_files(&self, container: &str, attempt: u32) -> Vec<cri::Mount> {
        let hosts = self.pod_dir.join("etc-hosts");
        if !hosts.exists() {
            std::fs::create_dir_all(&self.pod_dir).unwrap();
            std::fs::write(
                &hosts,
                format!(
                    "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost\n\
                     10.88.0.7\t{}\n",
                    self.name
                ),
            )
            .unwrap();
        }
        let dir = self.pod_dir.join("containers").join(container);
        std::fs::create_dir_all(&dir).unwrap();
        let termination = dir.join(format!("5e1f{attempt:04}"));
        std::fs::write(&termination, "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&termination, std::fs::Permissions::from_mode(0o666)).unwrap();
        vec![
            cri::Mount {
                container_path: "/etc/hosts".into(),
                host_path: hosts.display().to_string(),
                ..Default::default()
            },
            cri::Mount {
                container_path: "/dev/termination-log".into(),
                host_path: termination.display().to_string(),
                ..Default::default()
            },
        ]
    }

    /// `generateContainerConfig` for a busybox container named `app`, restart `attempt`.
    fn container_config(
        &self,
        attempt: u32,
        seccomp: cri::security_profile::ProfileType,
    ) -> cri::ContainerConfig {
        let a = self.qos.asked();
        let mut resources = linux_resources(a.cpu_request, a.cpu_limit, a.memory_limit);
        resources.oom_score_adj = oom_score_adj(self.qos, a);
        resources.hugepage_limits = hugepage_sizes()
            .into_iter()
            .map(|page_size| cri::HugepageLimit {
                page_size,
                limit: 0,
            })
            .collect();
        // `ConfigureNoSwap` on v1 with swap accounting: memory+swap = memory.
        resources.memory_swap_limit_in_bytes = resources.memory_limit_in_bytes;
        let image = Registry::busybox();
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt,
            }),
            image: Some(cri::ImageSpec {
                image: image.clone(),
                user_specified_image: image,
                ..Default::default()
            }),
            command: vec!["sh".into()],
            args: vec!["-c".into(), "echo ready; exec sleep 3600".into()],
            envs: vec![
                cri::KeyValue {
                    key: "KUBERNETES_SERVICE_HOST".into(),
                    value: "10.96.0.1".into(),
                },
                cri::KeyValue {
                    key: "KUBERNETES_SERVICE_PORT".into(),
                    value: "443".into(),
                },
            ],
            mounts: self.kubelet_files("app", attempt),
            log_path: format!("app/{attempt}.log"),
            labels: HashMap::from([
                ("io.kubernetes.container.name".into(), "app".into()),
                ("io.kubernetes.pod.name".into(), self.name.clone()),
                ("io.kubernetes.pod.namespace".into(), self.namespace.clone()),
                ("io.kubernetes.pod.uid".into(), self.uid.clone()),
            ]),
            annotations: crate::kubelet_container_annotations(attempt),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(resources),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Pod as i32,
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    // The image names no user: the kubelet sends root.
                    run_as_user: Some(cri::Int64Value { value: 0 }),
                    seccomp: Some(cri::SecurityProfile {
                        profile_type: seccomp as i32,
                        ..Default::default()
                    }),
                    masked_paths: MASKED.iter().map(|s| s.to_string()).collect(),
                    readonly_paths: READONLY.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    /// Makes the QoS and pod cgroups in every v1 hierarchy, as the kubelet's cgroupfs manager
    /// does before `RunPodSandbox` (cpuset values copied down from the parent, as libcontainer
    /// does, so a task can join). Returns what this call created, to remove at the end.
    fn make_cgroups(&self) -> KubeletCgroups {
        let mut made = KubeletCgroups(Vec::new());
        for h in hierarchies() {
            for rel in self.cgroup_dirs() {
                let dir = h.join(&rel);
                match std::fs::create_dir(&dir) {
                    Ok(()) => made.0.push(dir.clone()),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => panic!("mkdir {}: {e}", dir.display()),
                }
                if h.ends_with("cpuset") {
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        let v = std::fs::read_to_string(dir.parent().unwrap().join(f)).unwrap();
                        std::fs::write(dir.join(f), v.trim()).unwrap();
                    }
                }
            }
        }
        made
    }
}

/// The cgroups a test made as the kubelet, parents first. [`KubeletCgroups::remove`] removes
/// them as the kubelet does once the pod is gone; dropped otherwise (a failed test), it kills
/// what runs in them and removes them, so the next run does not trip over them (the fixtures'
/// sweep knows only the cgroupfs layout).
struct KubeletCgroups(Vec<PathBuf>);

impl KubeletCgroups {
    /// Removes the pod's cgroup, which must be empty by now (no container's left in it), and
    /// the QoS and `kubepods` parents where no other test's pod is in them.
    fn remove(mut self, pod: &Pod, what: &str) {
        for dir in std::mem::take(&mut self.0).iter().rev() {
            let res = std::fs::remove_dir(dir);
            if dir.ends_with(pod.pod_cgroup()) {
                res.unwrap_or_else(|e| panic!("{what}: removing {}: {e}", dir.display()));
            }
        }
    }
}

impl Drop for KubeletCgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            for _ in 0..50 {
                let mut busy = false;
                let children = std::fs::read_dir(dir).into_iter().flatten().flatten();
                for child in children.map(|e| e.path()).filter(|p| p.is_dir()) {
                    let procs =
                        std::fs::read_to_string(child.join("cgroup.procs")).unwrap_or_default();
                    for pid in procs.lines().filter_map(|l| l.trim().parse().ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    busy |= std::fs::remove_dir(&child).is_err();
                }
                if !busy {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The v1 hierarchies the kubelet makes pod cgroups in: every one mounted.
fn hierarchies() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.ends_with("unified") && p.join("cgroup.procs").exists())
        .collect();
    out.sort();
    out
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Whether the daemon may lower an OOM score (CAP_SYS_RESOURCE): without it the kernel keeps a
/// container at the score it inherits rather than the kubelet's -997.
fn has_sys_resource(pid: u32) -> bool {
    let status = read(format!("/proc/{pid}/status"));
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    eff & (1 << 24) != 0
}

/// A node on `driver`, with a `state` path short enough for the monitors' sockets.
async fn node(index: u8, driver: Driver) -> (Node, tempfile::TempDir) {
    let state = tempfile::Builder::new()
        .prefix("cs.")
        .tempdir_in("/tmp")
        .unwrap();
    let mut cfg = DaemonConfig::new();
    cfg.set(
        "state",
        toml::Value::String(state.path().display().to_string()),
    );
    if driver == Driver::Systemd {
        cfg.set("cgroup.driver", toml::Value::String("systemd".into()));
    }
    (Node::start_with(index, cfg).await, state)
}

/// One pod of the matrix through the kubelet's calls, checked; everything it made removed.
async fn pod_as_the_kubelet_runs_it(n: &mut Node, pod: &Pod) {
    use cri::security_profile::ProfileType;
    // RuntimeDefault for the Burstable pod (what `seccompDefault: true` sends), Unconfined (the
    // kubelet's default) for the others.
    let seccomp = if pod.qos == Qos::Burstable {
        ProfileType::RuntimeDefault
    } else {
        ProfileType::Unconfined
    };
    let made = pod.make_cgroups();
    let config = pod.sandbox_config(seccomp);
    std::fs::create_dir_all(&pod.log_dir).unwrap();
    let pod_id = n.run_pod(&config).await;
    let what = format!("{:?} {:?}", pod.qos, pod.driver);

    // The pod cgroup has the pod's resources plus its overhead.
    let a = pod.qos.asked();
    let (ocpu, omem) = pod.overhead().unwrap_or((0, 0));
    let pod_cpu = Path::new("/sys/fs/cgroup/cpu").join(pod.pod_cgroup());
    let pod_shares = shares(if a.cpu_request == 0 {
        a.cpu_limit
    } else {
        a.cpu_request
    }) + if ocpu > 0 { shares(ocpu) } else { 0 };
    assert_eq!(
        read(pod_cpu.join("cpu.shares")),
        pod_shares.to_string(),
        "{what}"
    );
    let pod_quota = quota(a.cpu_limit) + quota(ocpu);
    if pod_quota > 0 {
        assert_eq!(
            read(pod_cpu.join("cpu.cfs_quota_us")),
            pod_quota.to_string(),
            "{what}"
        );
    }
    if a.memory_limit > 0 {
        let pod_mem = Path::new("/sys/fs/cgroup/memory").join(pod.pod_cgroup());
        assert_eq!(
            read(pod_mem.join("memory.limit_in_bytes")),
            (a.memory_limit + omem).to_string(),
            "{what}"
        );
    }

    let c0 = pod.container_config(0, seccomp);
    let id = n.create_started(&pod_id, &config, &c0).await;
    let (st, info) = n.status(&id).await;
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "{what}: {st:?}"
    );
    assert_eq!(st.labels, c0.labels, "{what}");
    assert_eq!(st.annotations, c0.annotations, "{what}");
    assert_eq!(
        Path::new(&st.log_path),
        pod.log_dir.join("app/0.log"),
        "{what}"
    );
    let pid = info["pid"]
        .as_u64()
        .expect("the verbose info names the pid") as u32;

    // The limits, in the container's own cgroup files.
    let cg = |controller: &str| {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(pod.pod_cgroup())
            .join(&id)
    };
    let r = c0.linux.as_ref().unwrap().resources.as_ref().unwrap();
    assert_eq!(
        read(cg("cpu").join("cpu.shares")),
        r.cpu_shares.to_string(),
        "{what}"
    );
    assert_eq!(
        read(cg("cpu").join("cpu.cfs_period_us")),
        "100000",
        "{what}"
    );
    let want_quota = if r.cpu_quota > 0 { r.cpu_quota } else { -1 };
    assert_eq!(
        read(cg("cpu").join("cpu.cfs_quota_us")),
        want_quota.to_string(),
        "{what}"
    );
    if r.memory_limit_in_bytes > 0 {
        assert_eq!(
            read(cg("memory").join("memory.limit_in_bytes")),
            r.memory_limit_in_bytes.to_string(),
            "{what}"
        );
        if cg("memory").join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read(cg("memory").join("memory.memsw.limit_in_bytes")),
                r.memory_swap_limit_in_bytes.to_string(),
                "{what}"
            );
        }
    }
    // Hugepage limits where hugetlb is mounted; skipped (and the container runs) where not.
    let hugetlb = cg("hugetlb");
    if hugetlb.exists() {
        for size in hugepage_sizes() {
            let f = hugetlb.join(format!("hugetlb.{size}.limit_in_bytes"));
            assert_eq!(read(f), "0", "{what}");
        }
    }
    let procs = read(cg("pids").join("cgroup.procs"));
    assert_eq!(procs, pid.to_string(), "{what}: the container's processes");

    // The OOM score: the kubelet's, but -997 only where the daemon may lower a score.
    let adj: i64 = read(format!("/proc/{pid}/oom_score_adj")).parse().unwrap();
    let daemon_pid = n.d.pid().as_raw() as u32;
    let want_adj = if r.oom_score_adj >= 0 || has_sys_resource(daemon_pid) {
        r.oom_score_adj
    } else {
        read(format!("/proc/{daemon_pid}/oom_score_adj"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        adj, want_adj,
        "{what}: oom_score_adj (kubelet: {})",
        r.oom_score_adj
    );

    // Seccomp as asked: 0 unconfined, 2 a filter.
    let status = read(format!("/proc/{pid}/status"));
    let mode = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .unwrap()
        .trim()
        .to_string();
    let want_mode = if seccomp == ProfileType::RuntimeDefault {
        "2"
    } else {
        "0"
    };
    assert_eq!(mode, want_mode, "{what}: seccomp");

    // Masked and read-only paths, the hosts file and the termination message, from inside.
    let script = "wc -c </proc/keys; ls -A /sys/firmware | wc -l; \
                  echo h >/proc/sysrq-trigger 2>/dev/null && echo wrote || echo refused; \
                  cat /etc/hosts; echo bye-from-app >/dev/termination-log";
    let out = n
        .exec_sync(&id, &["sh", "-c", script], 10)
        .await
        .unwrap_or_else(|e| panic!("{what}: ExecSync: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next().map(str::trim),
        Some("0"),
        "{what}: /proc/keys masked: {stdout}"
    );
    assert_eq!(
        lines.next().map(str::trim),
        Some("0"),
        "{what}: /sys/firmware masked: {stdout}"
    );
    assert_eq!(
        lines.next(),
        Some("refused"),
        "{what}: /proc/sysrq-trigger read-only: {stdout}"
    );
    let hosts: Vec<&str> = lines.collect();
    assert_eq!(
        hosts.join("\n"),
        read(pod.pod_dir.join("etc-hosts")),
        "{what}: /etc/hosts is the kubelet's"
    );
    let termination = PathBuf::from(&c0.mounts[1].host_path);
    assert_eq!(read(&termination), "bye-from-app", "{what}");

    // The log file where the kubelet reads it (a 0.25-CPU quota may hold the first line back).
    let log = first_lines(&pod.log_dir.join("app/0.log")).await;
    assert_eq!(stdout_of(&log), "ready", "{what}: {log:?}");

    // The kubelet lists its containers by the pod's uid label.
    let listed = n
        .list(cri::ContainerFilter {
            label_selector: HashMap::from([("io.kubernetes.pod.uid".into(), pod.uid.clone())]),
            ..Default::default()
        })
        .await;
    assert_eq!(listed.len(), 1, "{what}: {listed:?}");
    assert_eq!(listed[0].annotations, c0.annotations, "{what}");

    // A restart: the old container is killed and kept; attempt 1 under the same name.
    n.stop_container(&id, 0).await;
    let c1 = pod.container_config(1, seccomp);
    let id1 = n.create_started(&pod_id, &config, &c1).await;
    assert_ne!(id1, id);
    let (st1, _) = n.status(&id1).await;
    assert_eq!(
        (st1.state, st1.metadata.as_ref().map(|m| m.attempt)),
        (cri::ContainerState::ContainerRunning as i32, Some(1)),
        "{what}"
    );
    assert_eq!(Path::new(&st1.log_path), pod.log_dir.join("app/1.log"));
    let log1 = first_lines(&pod.log_dir.join("app/1.log")).await;
    assert_eq!(stdout_of(&log1), "ready", "{what}");
    assert_eq!(
        read(cg("cpu").join("cpu.shares")),
        r.cpu_shares.to_string(),
        "{what}: the old container's cgroup is still there"
    );

    // Teardown in the kubelet's order: containers, the sandbox, then its own cgroups.
    for c in [&id1, &id] {
        n.stop_container(c, 0).await;
        n.remove_container(c).await;
    }
    n.remove_pod(&pod_id).await;
    made.remove(pod, &what);
}

/// The CRI log at `path` once it has a line.
async fn first_lines(path: &Path) -> Vec<carapace_e2e::node::LogLine> {
    carapace_e2e::eventually(
        Duration::from_secs(10),
        "the container's first line",
        || {
            let path = path.to_path_buf();
            async move {
                let l = cri_log(&path);
                (!l.is_empty()).then_some(l)
            }
        },
    )
    .await
}

async fn matrix(index: u8, driver: Driver) {
    let (mut n, _state) = node(index, driver).await;
    let base = n.d.config.dir().to_path_buf();
    for qos in [Qos::BestEffort, Qos::Burstable, Qos::Guaranteed] {
        let pod = Pod::new(&base, qos, driver, index);
        pod_as_the_kubelet_runs_it(&mut n, &pod).await;
    }
    n.finish().await;
}

/// cgroupfs driver: `/kubepods/besteffort/pod<uid>`, `/kubepods/burstable/pod<uid>`,
/// `/kubepods/pod<uid>`.
#[tokio::test]
async fn kubelet_pods_of_every_qos_class_run_as_asked_with_the_cgroupfs_driver() {
    matrix(160, Driver::Cgroupfs).await;
}

/// systemd driver (`[cgroup] driver = "systemd"`): `kubepods-besteffort-pod<uid_>.slice` and
/// the like. Without systemd running, carapace lays the slices out as systemd would
/// (`kubepods.slice/kubepods-besteffort.slice/...`), as the kubelet's own systemd manager does
/// when it falls back to cgroupfs paths; the kubelet made them there first, here the test.
#[tokio::test]
async fn kubelet_pods_of_every_qos_class_run_as_asked_with_the_systemd_driver() {
    matrix(161, Driver::Systemd).await;
}

/// `unified` names cgroup v2 files. The kubelet sends them only on a unified node
/// (`memory.oom.group` for `singleProcessOOMKill: false`, `memory.swap.max` for its swap
/// behaviour, `memory.min`/`memory.high` for MemoryQoS). On this node the containers' cgroups
/// are v1 hierarchies, with no such file: each key is refused, named, at create and at update,
/// and nothing is left of the refused container.
#[tokio::test]
async fn unified_keys_the_node_has_no_file_for_are_refused_by_name() {
    let index = 164;
    let (mut n, _state) = node(index, Driver::Cgroupfs).await;
    let base = n.d.config.dir().to_path_buf();
    let pod = Pod::new(&base, Qos::BestEffort, Driver::Cgroupfs, index);
    let made = pod.make_cgroups();
    let config = pod.sandbox_config(cri::security_profile::ProfileType::Unconfined);
    std::fs::create_dir_all(&pod.log_dir).unwrap();
    let pod_id = n.run_pod(&config).await;
    let pod_dir = Path::new("/sys/fs/cgroup/memory").join(pod.pod_cgroup());

    let v2_node = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mut c = pod.container_config(0, cri::security_profile::ProfileType::Unconfined);
    let unified = HashMap::from([("memory.oom.group".to_string(), "1".to_string())]);
    c.linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .unified = unified.clone();
    if !v2_node {
        let e = n.create(&pod_id, &config, &c).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains("memory.oom.group"), "{e}");
        let left: Vec<_> = std::fs::read_dir(&pod_dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .collect();
        assert!(
            left.is_empty(),
            "the refused container's cgroup is left: {left:?}"
        );
    }

    // A key no kernel has a file for, at update of a running container.
    c.linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .unified
        .clear();
    let id = n.create_started(&pod_id, &config, &c).await;
    let mut update = c.linux.as_ref().unwrap().resources.clone().unwrap();
    update.unified = HashMap::from([("memory.no_such_knob".to_string(), "1".to_string())]);
    let e =
        n.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(update),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("memory.no_such_knob"), "{e}");
    // The update without it, as the kubelet resizes: applied.
    let mut update = c.linux.as_ref().unwrap().resources.clone().unwrap();
    update.cpu_shares = 512;
    n.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(update),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", n.d.log_text()));
    let shares_file = Path::new("/sys/fs/cgroup/cpu")
        .join(pod.pod_cgroup())
        .join(&id)
        .join("cpu.shares");
    assert_eq!(read(shares_file), "512");

    n.stop_container(&id, 0).await;
    n.remove_container(&id).await;
    n.remove_pod(&pod_id).await;
    made.remove(&pod, "unified");
    n.finish().await;
}

/// The pod's own `unified` (RunPodSandbox `linux.resources.unified`; a kubelet on a unified node
/// sends `memory.oom.group` there) is checked as a container's: on this node the pod cgroup is in
/// the v1 hierarchies, with no such file, so RunPodSandbox is refused naming the key, and nothing
/// of the pod is left: no pod, no state (its network namespace pin), and no pod cgroup, which
/// carapace made itself here (the kubelet's cgroups are not made first).
#[tokio::test]
async fn pod_unified_keys_the_node_has_no_file_for_are_refused_by_name() {
    let index = 180;
    let (mut n, _state) = node(index, Driver::Cgroupfs).await;
    let base = n.d.config.dir().to_path_buf();
    let pod = Pod::new(&base, Qos::Burstable, Driver::Cgroupfs, index);
    let mut config = pod.sandbox_config(cri::security_profile::ProfileType::Unconfined);
    std::fs::create_dir_all(&pod.log_dir).unwrap();
    config
        .linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .unified = HashMap::from([("memory.oom.group".to_string(), "1".to_string())]);
    let run =
        n.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await;
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        // A unified node: the pod cgroup has the file, and gets the value.
        let pod_id = run.unwrap().into_inner().pod_sandbox_id;
        let file = Path::new("/sys/fs/cgroup")
            .join(pod.pod_cgroup())
            .join("memory.oom.group");
        assert_eq!(read(file), "1");
        n.remove_pod(&pod_id).await;
    } else {
        let e = run.expect_err("RunPodSandbox with a unified key the pod cgroup has no file for");
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.message().contains("\"memory.oom.group\""), "{e}");
        let pods = n.d.pods().await;
        assert!(pods.is_empty(), "the refused pod is listed: {pods:?}");
        let sandboxes: Vec<_> = std::fs::read_dir(n.state().join("sandboxes"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            sandboxes.is_empty(),
            "the refused pod's state is left: {sandboxes:?}"
        );
        let cgroups = carapace_e2e::node::pod_cgroups(index);
        assert!(
            cgroups.is_empty(),
            "the refused pod's cgroup is left: {cgroups:?}"
        );
    }
    n.finish().await;
}
