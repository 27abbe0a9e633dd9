//! One test's node as the kubelet sees it: a registry on loopback with the busybox image, a pod
//! network of the test's own, a daemon that has pulled the image, and the CRI calls a test makes
//! on pods and containers. Each call panics with the daemon's log when it fails, unless the test
//! wants the error ([`Node::create`], [`Node::exec_sync`]). [`Node::finish`] checks the test
//! removed what it made and that nothing is left on the host.
//!
//! Also the configs the kubelet sends: [`pod_config`] and [`container`], and the CRI log readers
//! [`cri_log`] and [`log_until`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use carapace_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::registry::Registry;
use crate::{Daemon, DaemonConfig, PodNetwork, cri, eventually, mounts_under, processes_naming};

/// A pod config as the kubelet sends it: namespace `e2e`, hostname `<name>-host`, label
/// `app=<name>`, and a cgroup parent named after `uid` (cgroupfs driver).
pub fn pod_config(name: &str, uid: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        labels: HashMap::from([("app".into(), name.into())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A busybox container config as the kubelet sends it: its own PID namespace, a log file
/// `<name>/0.log` under the pod's log directory, label `c=<name>`.
pub fn container(name: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: Registry::busybox(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("c".into(), name.into())]),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The security context of a [`container`] config, to adjust.
pub fn security(cfg: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    cfg.linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
}

/// The resources of a [`container`] config, to adjust.
pub fn resources(cfg: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
    cfg.linux
        .get_or_insert_default()
        .resources
        .get_or_insert_default()
}

/// One line of a CRI log file: (timestamp, stream, tag, content).
pub type LogLine = (String, String, String, String);

/// Makes `pod` one whose containers share a PID namespace (Kubernetes `shareProcessNamespace`),
/// as the kubelet asks for it.
pub fn share_pid_namespace(pod: &mut cri::PodSandboxConfig) {
    pod.linux.get_or_insert_default().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            pid: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
}

/// A busybox container in the pod's PID namespace, as the kubelet asks for one in a pod with
/// `shareProcessNamespace: true` (see [`share_pid_namespace`]).
pub fn shared_pid_container(name: &str, command: &[&str]) -> cri::ContainerConfig {
    let mut c = container(name, command);
    security(&mut c)
        .namespace_options
        .get_or_insert_default()
        .pid = cri::NamespaceMode::Pod as i32;
    c
}

/// The stdout of a CRI log, lines joined with `\n`.
pub fn stdout_of(lines: &[LogLine]) -> String {
    lines
        .iter()
        .filter(|l| l.1 == "stdout")
        .map(|l| l.3.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Both streams of a CRI log, a line each as `<stream> <text>`, for assertion messages.
pub fn output_of(lines: &[LogLine]) -> String {
    lines
        .iter()
        .map(|l| format!("{} {}", l.1, l.3))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The lines of a CRI log file (none if it cannot be read).
pub fn cri_log(path: &Path) -> Vec<LogLine> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let mut next = || it.next().unwrap_or_default().to_owned();
            (next(), next(), next(), next())
        })
        .collect()
}

/// Waits up to 10 s until a line of the CRI log at `path` satisfies `pred`; returns the lines.
pub async fn log_until(path: &Path, what: &str, pred: impl Fn(&LogLine) -> bool) -> Vec<LogLine> {
    eventually(Duration::from_secs(10), what, || {
        let lines = cri_log(path);
        let found = lines.iter().any(&pred);
        async move { found.then_some(lines) }
    })
    .await
}

/// Directories below `dir`, `depth` levels deep at most.
pub fn dirs_below(dir: &Path, depth: u32) -> Vec<String> {
    let mut out = Vec::new();
    if depth == 0 {
        return out;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.path().display().to_string());
            out.extend(dirs_below(&e.path(), depth - 1));
        }
    }
    out
}

/// One test's node. Tests reach the daemon (`d`) and its runtime client (`rt`) directly for
/// what the helpers here do not cover; after replacing `d` (a restart), they set `rt` again.
pub struct Node {
    pub d: Daemon,
    /// Declared right after `d`: on a panic it runs once the daemon is killed, before the
    /// network, registry and short state dir go.
    sweep: Sweep,
    pub rt: RuntimeServiceClient<Channel>,
    pub registry: Registry,
    net: PodNetwork,
    /// The test's index: its bridge, subnet and the last group of its pod uids.
    index: u8,
    /// The daemon's `state` directory.
    state: PathBuf,
    /// The short `state` directory [`Node::start`] made (see there).
    _short_state: Option<tempfile::TempDir>,
}

impl Node {
    /// A node whose daemon has the default test configuration but for a short `state` path.
    /// The daemon binds each container's monitor socket at
    /// `<state>/containers/<64 hex id>/monitor.sock`; a `state` outside the test's longer dir
    /// keeps that path within a unix socket address (107 bytes) whatever the daemon does.
    ///
    /// `index`: the test's own bridge and subnet (see [`PodNetwork::bridge`]); the uids of the
    /// test's pods end in it, as [`Node::finish`] looks for their cgroups by it.
    pub async fn start(index: u8) -> Node {
        Self::start_configured(index, |_| {}).await
    }

    /// [`Node::start`], with `configure` setting more of the daemon's configuration first.
    pub async fn start_configured(index: u8, configure: impl FnOnce(&mut DaemonConfig)) -> Node {
        let state = tempfile::Builder::new()
            .prefix("cs.")
            .tempdir_in("/tmp")
            .expect("creating the state dir");
        let mut cfg = DaemonConfig::new();
        cfg.set(
            "state",
            toml::Value::String(state.path().display().to_string()),
        );
        configure(&mut cfg);
        let mut node = Self::start_with(index, cfg).await;
        node._short_state = Some(state);
        node
    }

    /// [`Node::start`], then a pod from [`Node::pod`] run on it; returns the node and the pod's
    /// config and id.
    pub async fn with_running_pod(
        index: u8,
        name: &str,
        uid: &str,
    ) -> (Node, cri::PodSandboxConfig, String) {
        let mut node = Self::start(index).await;
        let pod = node.pod(name, uid);
        let pod_id = node.run_pod(&pod).await;
        (node, pod, pod_id)
    }

    /// A node whose daemon runs on `cfg` as it is.
    pub async fn start_with(index: u8, cfg: DaemonConfig) -> Node {
        let registry = Registry::start().await;
        registry.configure(&cfg);
        let net = PodNetwork::bridge(&cfg, index);
        let state = cfg.state();
        let d = Daemon::start_with(cfg).await;
        let rt = d.runtime().await;
        let node = Node {
            d,
            sweep: Sweep {
                index,
                state: state.clone(),
                armed: true,
            },
            rt,
            registry,
            net,
            index,
            state,
            _short_state: None,
        };
        node.pull_image(&Registry::busybox()).await;
        node
    }

    /// The daemon's `state` directory.
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// A reboot of the node under the daemon, as far as a test can make one without touching
    /// other tests: the daemon is SIGKILLed, then every process of this test's pods (by their
    /// cgroups) and every helper naming its state dir (monitors, infra processes); everything
    /// mounted under the state dir is unmounted (the pods' namespaces go, and their veths with
    /// them) and the state dir is emptied, as a tmpfs is after a boot. The root dir and the
    /// CNI's IPAM leases stay, as on a disk; so do the (empty) cgroups, which a test cannot take
    /// from the kernel without also doing the daemon's work for it. Then a daemon starts again
    /// on the same configuration and `rt` is connected to it.
    pub async fn simulate_reboot(&mut self) {
        let cfg = self.d.kill().await;
        for _ in 0..50 {
            if kill_processes(self.index, &self.state) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            kill_processes(self.index, &self.state),
            0,
            "processes of the test's pods outlived SIGKILL"
        );
        for _ in 0..10 {
            let mounts = mounts_under(&self.state);
            if mounts.is_empty() {
                break;
            }
            for m in mounts.iter().rev() {
                let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let mounts = mounts_under(&self.state);
        assert!(mounts.is_empty(), "mounts that would not go: {mounts:?}");
        for e in std::fs::read_dir(&self.state).expect("reading the state dir") {
            let path = e.expect("reading the state dir").path();
            let removed = if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.unwrap_or_else(|e| panic!("emptying the state dir: {}: {e}", path.display()));
        }
        self.d = Daemon::start_with(cfg).await;
        self.rt = self.d.runtime().await;
    }

    /// Pulls `image` and returns its image ref.
    pub async fn pull_image(&self, image: &str) -> String {
        self.try_pull_image(image)
            .await
            .unwrap_or_else(|e| panic!("PullImage: {e}\n{}", self.d.log_text()))
    }

    /// Pulls `image`: its image ref, or the status the daemon answered.
    pub async fn try_pull_image(&self, image: &str) -> Result<String, tonic::Status> {
        self.d
            .images()
            .await
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().image_ref)
    }

    /// A [`pod_config`] with a log directory under the test's dir, made as the kubelet makes it.
    pub fn pod(&self, name: &str, uid: &str) -> cri::PodSandboxConfig {
        let log_directory = self
            .d
            .config
            .dir()
            .join("pods")
            .join(format!("e2e_{name}_{uid}"));
        std::fs::create_dir_all(&log_directory).expect("creating the pod's log directory");
        cri::PodSandboxConfig {
            log_directory: log_directory.display().to_string(),
            ..pod_config(name, uid)
        }
    }

    pub async fn run_pod(&mut self, pod: &cri::PodSandboxConfig) -> String {
        self.d.run_pod(pod).await
    }

    /// StopPodSandbox then RemovePodSandbox, as the kubelet does.
    pub async fn remove_pod(&mut self, id: &str) {
        self.d.remove_pod(id).await
    }

    pub async fn create(
        &mut self,
        pod_id: &str,
        pod: &cri::PodSandboxConfig,
        config: &cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config.clone()),
                sandbox_config: Some(pod.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub async fn start_container(&mut self, id: &str) {
        if let Err(e) = self
            .rt
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await
        {
            panic!("StartContainer: {e}\n{}", self.d.log_text());
        }
    }

    /// Creates and starts a container.
    pub async fn create_started(
        &mut self,
        pod_id: &str,
        pod: &cri::PodSandboxConfig,
        config: &cri::ContainerConfig,
    ) -> String {
        let id = match self.create(pod_id, pod, config).await {
            Ok(id) => id,
            Err(e) => panic!("CreateContainer: {e}\n{}", self.d.log_text()),
        };
        self.start_container(&id).await;
        id
    }

    /// Runs `config` to its exit and returns its id, status and CRI log.
    pub async fn run_to_exit(
        &mut self,
        pod_id: &str,
        pod: &cri::PodSandboxConfig,
        config: &cri::ContainerConfig,
    ) -> (String, cri::ContainerStatus, Vec<LogLine>) {
        let id = self.create_started(pod_id, pod, config).await;
        let st = self.exited(&id).await;
        // The monitor writes the last lines before it records the exit.
        let lines = cri_log(Path::new(&st.log_path));
        (id, st, lines)
    }

    /// The container's status and its verbose info.
    pub async fn status(&mut self, id: &str) -> (cri::ContainerStatus, serde_json::Value) {
        let r = self
            .rt
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}\n{}", self.d.log_text()))
            .into_inner();
        let info = r
            .info
            .get("info")
            .map(|i| serde_json::from_str(i).expect("the verbose info is JSON"))
            .unwrap_or_default();
        (r.status.expect("ContainerStatus without a status"), info)
    }

    /// The container's CRI log file.
    pub async fn log_path(&mut self, id: &str) -> PathBuf {
        PathBuf::from(self.status(id).await.0.log_path)
    }

    /// Waits for the container to exit and returns its status.
    pub async fn exited(&mut self, id: &str) -> cri::ContainerStatus {
        let rt = self.rt.clone();
        eventually(Duration::from_secs(10), "the container to exit", || {
            let mut rt = rt.clone();
            let id = id.to_owned();
            async move {
                let st = rt
                    .container_status(cri::ContainerStatusRequest {
                        container_id: id,
                        verbose: false,
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .status?;
                (st.state == cri::ContainerState::ContainerExited as i32).then_some(st)
            }
        })
        .await
    }

    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, tonic::Status> {
        self.rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The streaming server's URL for an exec.
    pub async fn exec_url(&mut self, req: cri::ExecRequest) -> String {
        self.rt
            .exec(req)
            .await
            .unwrap_or_else(|e| panic!("Exec: {e}\n{}", self.d.log_text()))
            .into_inner()
            .url
    }

    /// The streaming server's URL for an attach, or the refusal.
    pub async fn attach_url(&mut self, req: cri::AttachRequest) -> Result<String, tonic::Status> {
        self.rt.attach(req).await.map(|r| r.into_inner().url)
    }

    /// The containers `filter` selects, sorted by id.
    pub async fn list(&mut self, filter: cri::ContainerFilter) -> Vec<cri::Container> {
        let mut l = self
            .rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .unwrap_or_else(|e| panic!("ListContainers: {e}\n{}", self.d.log_text()))
            .into_inner()
            .containers;
        l.sort_by(|a, b| a.id.cmp(&b.id));
        l
    }

    pub async fn container_stats(&mut self, id: &str) -> cri::ContainerStats {
        self.rt
            .container_stats(cri::ContainerStatsRequest {
                container_id: id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStats: {e}\n{}", self.d.log_text()))
            .into_inner()
            .stats
            .expect("ContainerStats without stats")
    }

    pub async fn pod_stats(&mut self, id: &str) -> cri::PodSandboxStats {
        self.rt
            .pod_sandbox_stats(cri::PodSandboxStatsRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("PodSandboxStats: {e}\n{}", self.d.log_text()))
            .into_inner()
            .stats
            .expect("PodSandboxStats without stats")
    }

    pub async fn stop_container(&mut self, id: &str, timeout: i64) {
        if let Err(e) = self
            .rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
        {
            panic!("StopContainer {id}: {e}\n{}", self.d.log_text());
        }
    }

    pub async fn remove_container(&mut self, id: &str) {
        if let Err(e) = self
            .rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
        {
            panic!("RemoveContainer {id}: {e}\n{}", self.d.log_text());
        }
    }

    /// Stops and removes every container, then the pod `pod_id`, then [`Node::finish`].
    pub async fn remove_all(mut self, pod_id: &str) -> String {
        for c in self.list(cri::ContainerFilter::default()).await {
            self.stop_container(&c.id, 0).await;
            self.remove_container(&c.id).await;
        }
        self.remove_pod(pod_id).await;
        self.finish().await
    }

    /// Checks the test removed every container and pod it made and that no cgroup of its pods
    /// is left, then stops the daemon (which checks no mount or process is left under the test's
    /// dir), checks the same for the `state` dir, and stops the registry. Returns the daemon's
    /// log.
    pub async fn finish(mut self) -> String {
        let left = self.list(cri::ContainerFilter::default()).await;
        assert!(left.is_empty(), "containers left: {left:?}");
        let pods = self.d.pods().await;
        assert!(pods.is_empty(), "pods left: {pods:?}");
        let Node {
            d,
            mut sweep,
            registry,
            net,
            index,
            state,
            _short_state,
            ..
        } = self;
        // No pod or container cgroup of this test's pods is left in any hierarchy.
        let cgroups = pod_cgroups(index);
        assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
        remove_empty_pod_parents();
        let log = d.stop().await;
        let mounts = mounts_under(&state);
        assert!(
            mounts.is_empty(),
            "mounts left in the state dir: {mounts:?}"
        );
        let procs = processes_naming(&state);
        assert!(
            procs.is_empty(),
            "processes left naming the state dir: {procs:?}"
        );
        registry.stop().await;
        drop(net);
        // Every check passed: nothing for the failure path to sweep.
        sweep.armed = false;
        log
    }
}

/// The cgroups, in every hierarchy, of the pods of the test numbered `index` (their uids end in
/// it), deepest first.
pub fn pod_cgroups(index: u8) -> Vec<String> {
    let suffix = format!("-{index:012}");
    let mut cgroups: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|c| dirs_below(&c.path().join("kubepods"), 4))
        .filter(|p| p.contains(&suffix))
        .collect();
    cgroups.sort_by_key(|p| std::cmp::Reverse(p.len()));
    cgroups
}

/// SIGKILLs every process in the cgroups of the pods of test `index` and every process naming
/// `state`; returns how many it found.
fn kill_processes(index: u8, state: &Path) -> usize {
    let pids: Vec<i32> = pod_cgroups(index)
        .iter()
        .flat_map(|cg| {
            std::fs::read_to_string(format!("{cg}/cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .chain(processes_naming(state).into_iter().map(|(pid, _)| pid))
        .collect();
    for &pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    pids.len()
}

/// Removes `kubepods/besteffort` and `kubepods` in every hierarchy where no pod is left in them.
/// The tests' daemons (one per test) share these parents; a daemon hands a parent its removed
/// pod made to another of its own pods, never to another daemon's, so the last test out takes
/// them away. A daemon making a pod meanwhile finds them gone and makes them again.
fn remove_empty_pod_parents() {
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for parent in ["kubepods/besteffort", "kubepods"] {
            let _ = std::fs::remove_dir(h.path().join(parent));
        }
    }
}

/// A test's failure path: a panic before [`Node::finish`] leaves its containers running (they
/// outlive the daemon by design), their monitors, mounts and cgroups, and the next run of the
/// suite then fails on what this one left. Dropped armed, it kills what the test's pods run and
/// takes their mounts and cgroups away.
struct Sweep {
    index: u8,
    state: PathBuf,
    armed: bool,
}

impl Drop for Sweep {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The pods' processes by cgroup, and the monitors by the state dir they name.
        let kill_all = || kill_processes(self.index, &self.state);
        // Killed processes leave their cgroups once the kernel has reaped them.
        for _ in 0..50 {
            if kill_all() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for m in mounts_under(&self.state).iter().rev() {
            let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
        }
        for cg in pod_cgroups(self.index) {
            let _ = std::fs::remove_dir(&cg);
        }
        remove_empty_pod_parents();
        eprintln!(
            "swept what test {} left: its pods' processes, mounts under {} and cgroups",
            self.index,
            self.state.display()
        );
    }
}

/// Every page size the kernel has, named as the kubelet names them (`2MB`, `1GB`), sorted: the
/// kubelet sends a hugepage limit for each with every container.
pub fn hugepage_sizes() -> Vec<String> {
    let mut sizes: Vec<String> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let kib: u64 = e
                .file_name()
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(if kib >= 1 << 20 {
                format!("{}GB", kib >> 20)
            } else {
                format!("{}MB", kib >> 10)
            })
        })
        .collect();
    sizes.sort();
    sizes
}
