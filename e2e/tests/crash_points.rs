//! Crash-point exploration: each mutating CRI call is made on a daemon armed to die (SIGKILL, no
//! destructor) at its N-th named step, for N = 1, 2, … until the call completes. After each
//! crash a new daemon starts, the call is retried as the kubelet retries it, everything is
//! removed, and the node must be back where it started: no mount, veth, iptables rule, cgroup,
//! IPAM lease, process, state or root file, or record beyond what was there before the call.
//! The points are `carapace_crashpoint::hit` calls in the daemon (debug builds only); see
//! `docs/crash-points.md`. Pod-network indexes 140-149.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use carapace_e2e::node::{Node, container, pod_cgroups};
use carapace_e2e::registry::Registry;
use carapace_e2e::{Daemon, cri, mounts_under, processes_naming};

/// The line the daemon writes before it dies (`carapace_crashpoint::MARK`).
const MARK: &str = "crash point ";

/// One mutating call, as the walk makes it.
trait Call {
    /// Makes what the call needs, on an unarmed daemon, before each step.
    async fn prepare(&mut self, _node: &mut Node) {}
    /// The call itself (on the armed daemon).
    async fn call(&mut self, node: &mut Node) -> Result<(), tonic::Status>;
    /// The kubelet's retry after the daemon died in the call (on a new, unarmed daemon).
    async fn retry(&mut self, node: &mut Node) {
        if let Err(e) = self.call(node).await {
            panic!("the retry failed: {e}\n{}", node.d.log_text());
        }
    }
    /// Removes what the call and its retry made, back to the state before `prepare`.
    async fn cleanup(&mut self, node: &mut Node);
}

/// What a node has that a call may leak, as sets to compare.
#[derive(Debug, PartialEq)]
struct Snapshot {
    mounts: BTreeSet<String>,
    bridge_ports: BTreeSet<String>,
    iptables_rules: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    leases: BTreeSet<String>,
    processes: BTreeSet<String>,
    /// Image records and holds naming what is gone: none, ever.
    dangling: BTreeSet<String>,
    root: BTreeSet<String>,
    state: BTreeSet<String>,
}

impl Snapshot {
    fn take(node: &Node, index: u8) -> Snapshot {
        let root = node.d.config.root();
        let state = node.state().to_path_buf();
        let mounts = mounts_under(&root)
            .into_iter()
            .chain(mounts_under(&state))
            .map(|p| p.display().to_string())
            .collect();
        let ports = command(&[
            "ip",
            "-o",
            "link",
            "show",
            "master",
            &format!("cre2e{index}"),
        ]);
        let bridge_ports = ports
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .collect();
        let subnet = format!("10.213.{index}.");
        let iptables_rules = command(&["iptables-save"])
            .lines()
            .filter(|l| l.contains(&subnet))
            .map(str::to_owned)
            .collect();
        let leases = std::fs::read_dir(format!("/var/lib/cni/networks/carapace-e2e-{index}"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
            .collect();
        Snapshot {
            mounts,
            bridge_ports,
            iptables_rules,
            cgroups: pod_cgroups(index).into_iter().collect(),
            leases,
            processes: processes_naming(&state)
                .into_iter()
                .map(|(_, cmd)| cmd)
                .collect(),
            dangling: dangling_records(node).into_iter().collect(),
            root: listing(&root),
            state: listing(&state),
        }
    }

    /// What differs from `base`, a line per part, for the assertion's message.
    fn diff(&self, base: &Snapshot) -> String {
        let mut out = String::new();
        let mut part = |name: &str, now: &BTreeSet<String>, then: &BTreeSet<String>| {
            let extra: Vec<_> = now.difference(then).collect();
            let gone: Vec<_> = then.difference(now).collect();
            if !extra.is_empty() || !gone.is_empty() {
                out += &format!("{name}: left {extra:?}, gone {gone:?}\n");
            }
        };
        part("mounts", &self.mounts, &base.mounts);
        part("bridge ports", &self.bridge_ports, &base.bridge_ports);
        part("iptables rules", &self.iptables_rules, &base.iptables_rules);
        part("cgroups", &self.cgroups, &base.cgroups);
        part("IPAM leases", &self.leases, &base.leases);
        part("processes", &self.processes, &base.processes);
        part(
            "records naming what is gone",
            &self.dangling,
            &base.dangling,
        );
        part("root", &self.root, &base.root);
        part("state", &self.state, &base.state);
        out
    }
}

fn command(argv: &[&str]) -> String {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every path below `dir`, relative to it; the daemon's socket aside (it is no state).
fn listing(dir: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(base)
                .unwrap_or(&path)
                .display()
                .to_string();
            if rel == "carapace.sock" {
                continue;
            }
            out.insert(rel);
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, base, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Replaces the node's daemon by a new one on the same configuration, armed with `armed` (a
/// `CARAPACE_CRASH_AT` value) if given.
async fn restart(node: &mut Node, armed: Option<&str>) {
    let cfg = node.d.kill().await;
    node.d = match armed {
        Some(at) => Daemon::start_with_env(cfg, &[("CARAPACE_CRASH_AT", at)]).await,
        None => Daemon::start_with(cfg).await,
    };
    node.rt = node.d.runtime().await;
}

/// Walks the crash points of `rpc` (see the module's doc) and returns the matrix's rows.
///
/// A traced run names the points the call passes, in order; then each is a step: its call is
/// made on a daemon armed to die at that point (by name and occurrence, as which point comes
/// N-th can change between runs: the pods' record writer is a thread of its own, and a parent
/// cgroup another test's pod made may be gone in the next run).
async fn walk(node: &mut Node, index: u8, rpc: &str, c: &mut impl Call) -> Vec<String> {
    // Once through unarmed first: the directories a first call makes for every later one
    // (`<root>/cni/results`) belong in the baseline, not in the leaks.
    c.prepare(node).await;
    if let Err(e) = c.call(node).await {
        panic!("{rpc} fails unarmed: {e}\n{}", node.d.log_text());
    }
    c.cleanup(node).await;
    let base = Snapshot::take(node, index);

    c.prepare(node).await;
    restart(node, Some(&format!("{rpc}:trace"))).await;
    if let Err(e) = c.call(node).await {
        panic!("{rpc} fails traced: {e}\n{}", node.d.log_text());
    }
    // A background step (the pods' record writer) may come just after the answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let passed = format!("{MARK}passed ");
    let mut steps: Vec<(u64, String)> = Vec::new();
    for line in node.d.log_text().lines() {
        let Some((_, p)) = line.split_once(&passed) else {
            continue;
        };
        let name = p.split_once(": ").map_or(p, |x| x.1).to_owned();
        let k = steps.iter().filter(|(_, n)| *n == name).count() as u64 + 1;
        steps.push((k, name));
    }
    restart(node, None).await;
    c.cleanup(node).await;
    check(node, index, &base, rpc, 0, "the traced call");

    let mut rows = Vec::new();
    for (i, (k, name)) in steps.iter().enumerate() {
        let step = i + 1;
        c.prepare(node).await;
        restart(node, Some(&format!("{rpc}:{k}:{name}"))).await;
        let result = c.call(node).await;
        let grace = if result.is_err() {
            Duration::from_secs(10)
        } else {
            Duration::from_millis(300)
        };
        let Some((status, cfg)) = node.d.ended_within(grace).await else {
            if let Err(e) = result {
                panic!(
                    "{rpc} failed at {name:?} without a crash: {e}\n{}",
                    node.d.log_text()
                );
            }
            // Not reached this time (a parent cgroup was there already): the count stays armed
            // in this daemon, so the cleanup runs on another.
            restart(node, None).await;
            c.cleanup(node).await;
            check(node, index, &base, rpc, step, name);
            rows.push(format!("{step:>4}  {name}  (not reached in this run)"));
            continue;
        };
        let log = node.d.log_text();
        let crashed = log
            .lines()
            .find_map(|l| l.split_once(MARK).map(|(_, p)| p.to_owned()))
            .unwrap_or_else(|| {
                panic!("{rpc} at {name:?}: the daemon ended ({status}) at no crash point:\n{log}")
            });
        assert!(
            crashed.ends_with(&format!(" {rpc}: {name}")),
            "{rpc}: armed at {name:?}, crashed at {crashed:?}"
        );
        node.d = Daemon::start_with(cfg).await;
        node.rt = node.d.runtime().await;
        c.retry(node).await;
        c.cleanup(node).await;
        check(node, index, &base, rpc, step, name);
        rows.push(format!("{step:>4}  {name}"));
    }
    rows.push(format!("{:>4}  completed", steps.len() + 1));
    rows
}

fn check(node: &Node, index: u8, base: &Snapshot, rpc: &str, n: usize, point: &str) {
    let now = Snapshot::take(node, index);
    assert!(
        now == *base,
        "{rpc}: after a crash at step {n} ({point}), the retry and the removal, the node is not \
         back at its start:\n{}",
        now.diff(base)
    );
}

fn print_matrix(rpc: &str, rows: &[String]) {
    let crashed = rows.len() - 1 - rows.iter().filter(|r| r.ends_with("run)")).count();
    println!(
        "{rpc}: {crashed} crash points, each recovered, retried and cleaned up\n{}",
        rows.join("\n")
    );
}

fn uid(index: u8, n: u8) -> String {
    format!("c7a50000-0000-4000-8{n:03}-{index:012}")
}

struct RunPod {
    pod: cri::PodSandboxConfig,
}

impl RunPod {
    async fn stop_and_remove_all(node: &mut Node, only_notready: bool) {
        for p in node.d.pods().await {
            if !only_notready || p.state == cri::PodSandboxState::SandboxNotready as i32 {
                node.d.remove_pod(&p.id).await;
            }
        }
    }
}

impl Call for RunPod {
    async fn call(&mut self, node: &mut Node) -> Result<(), tonic::Status> {
        node.rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(self.pod.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map(drop)
    }

    /// The kubelet stops and removes the sandbox it sees NOTREADY, then runs the pod again.
    async fn retry(&mut self, node: &mut Node) {
        Self::stop_and_remove_all(node, true).await;
        if let Err(e) = self.call(node).await {
            panic!("the retry failed: {e}\n{}", node.d.log_text());
        }
    }

    async fn cleanup(&mut self, node: &mut Node) {
        Self::stop_and_remove_all(node, false).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn run_pod_sandbox() {
    const INDEX: u8 = 140;
    let mut node = Node::start(INDEX).await;
    let pod = node.pod("crash-run", &uid(INDEX, 1));
    let rows = walk(&mut node, INDEX, "RunPodSandbox", &mut RunPod { pod }).await;
    print_matrix("RunPodSandbox", &rows);
    node.finish().await;
}

/// A pod to put containers in, made once for a container call's walk (it is in the baseline).
async fn pod_for_containers(node: &mut Node, index: u8) -> (cri::PodSandboxConfig, String) {
    let pod = node.pod("crash-ctr", &uid(index, 2));
    let id = node.run_pod(&pod).await;
    (pod, id)
}

/// A container that ends at once on SIGTERM (as PID 1 a plain `sleep` would ignore it).
fn sleeper() -> cri::ContainerConfig {
    container(
        "sleeper",
        &["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
    )
}

/// Stops and removes every container of the node, as the kubelet does when it deletes a pod.
async fn remove_containers(node: &mut Node) {
    for c in node.list(cri::ContainerFilter::default()).await {
        node.stop_container(&c.id, 0).await;
        node.remove_container(&c.id).await;
    }
}

/// The one container of the node, if any, and its state.
async fn the_container(node: &mut Node) -> Option<(String, i32)> {
    let l = node.list(cri::ContainerFilter::default()).await;
    assert!(l.len() <= 1, "more than one container: {l:?}");
    l.first().map(|c| (c.id.clone(), c.state))
}

struct CreateContainer {
    pod: cri::PodSandboxConfig,
    pod_id: String,
}

impl Call for CreateContainer {
    async fn call(&mut self, node: &mut Node) -> Result<(), tonic::Status> {
        let (pod_id, pod) = (self.pod_id.clone(), self.pod.clone());
        node.create(&pod_id, &pod, &sleeper()).await.map(drop)
    }

    async fn cleanup(&mut self, node: &mut Node) {
        remove_containers(node).await;
    }
}

/// A container created (unarmed) before each step; the call starts it.
struct StartContainer {
    pod: cri::PodSandboxConfig,
    pod_id: String,
    id: String,
}

impl Call for StartContainer {
    async fn prepare(&mut self, node: &mut Node) {
        let (pod_id, pod) = (self.pod_id.clone(), self.pod.clone());
        self.id = node.create(&pod_id, &pod, &sleeper()).await.unwrap();
    }

    async fn call(&mut self, node: &mut Node) -> Result<(), tonic::Status> {
        node.rt
            .start_container(cri::StartContainerRequest {
                container_id: self.id.clone(),
            })
            .await
            .map(drop)
    }

    /// The kubelet starts it again only if it still shows as created.
    async fn retry(&mut self, node: &mut Node) {
        let state = the_container(node).await.map(|c| c.1);
        if state == Some(cri::ContainerState::ContainerCreated as i32) {
            let id = self.id.clone();
            node.start_container(&id).await;
        }
    }

    async fn cleanup(&mut self, node: &mut Node) {
        remove_containers(node).await;
    }
}

/// A container created and started (unarmed) before each step; the call stops it.
struct StopContainer {
    pod: cri::PodSandboxConfig,
    pod_id: String,
    id: String,
}

impl Call for StopContainer {
    async fn prepare(&mut self, node: &mut Node) {
        let (pod_id, pod) = (self.pod_id.clone(), self.pod.clone());
        self.id = node.create_started(&pod_id, &pod, &sleeper()).await;
    }

    async fn call(&mut self, node: &mut Node) -> Result<(), tonic::Status> {
        node.rt
            .stop_container(cri::StopContainerRequest {
                container_id: self.id.clone(),
                timeout: 10,
            })
            .await
            .map(drop)
    }

    async fn cleanup(&mut self, node: &mut Node) {
        remove_containers(node).await;
    }
}

/// A container created and started (unarmed) before each step; the call removes it.
struct RemoveContainer {
    pod: cri::PodSandboxConfig,
    pod_id: String,
    id: String,
}

impl Call for RemoveContainer {
    async fn prepare(&mut self, node: &mut Node) {
        let (pod_id, pod) = (self.pod_id.clone(), self.pod.clone());
        self.id = node.create_started(&pod_id, &pod, &sleeper()).await;
    }

    /// As the kubelet removes a container: unknown is done (carapace answers it with success).
    async fn call(&mut self, node: &mut Node) -> Result<(), tonic::Status> {
        node.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: self.id.clone(),
            })
            .await
            .map(drop)
    }

    async fn cleanup(&mut self, node: &mut Node) {
        remove_containers(node).await;
    }
}

/// Runs the walk of a container call in a pod of its own, then removes the pod.
async fn walk_in_pod<C: Call>(
    index: u8,
    rpc: &str,
    make: impl FnOnce(cri::PodSandboxConfig, String) -> C,
) {
    let mut node = Node::start(index).await;
    let (pod, pod_id) = pod_for_containers(&mut node, index).await;
    let mut call = make(pod, pod_id.clone());
    let rows = walk(&mut node, index, rpc, &mut call).await;
    print_matrix(rpc, &rows);
    node.remove_pod(&pod_id).await;
    node.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_container() {
    walk_in_pod(141, "CreateContainer", |pod, pod_id| CreateContainer {
        pod,
        pod_id,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn start_container() {
    walk_in_pod(142, "StartContainer", |pod, pod_id| StartContainer {
        pod,
        pod_id,
        id: String::new(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_container() {
    walk_in_pod(143, "StopContainer", |pod, pod_id| StopContainer {
        pod,
        pod_id,
        id: String::new(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_container() {
    walk_in_pod(144, "RemoveContainer", |pod, pod_id| RemoveContainer {
        pod,
        pod_id,
        id: String::new(),
    })
    .await;
}

/// A pod with a running container, made (unarmed) before each step; the call stops the pod.
struct StopPod {
    pod: cri::PodSandboxConfig,
    id: String,
}

impl Call for StopPod {
    async fn prepare(&mut self, node: &mut Node) {
        let pod = self.pod.clone();
        self.id = node.run_pod(&pod).await;
        let id = self.id.clone();
        node.create_started(&id, &pod, &sleeper()).await;
    }

    async fn call(&mut self, node: &mut Node) -> Result<(), tonic::Status> {
        node.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: self.id.clone(),
            })
            .await
            .map(drop)
    }

    async fn cleanup(&mut self, node: &mut Node) {
        remove_containers(node).await;
        RunPod::stop_and_remove_all(node, false).await;
    }
}

/// A pod with a container, stopped (unarmed, as the kubelet stops before it removes) before
/// each step; the call removes the pod.
struct RemovePod {
    pod: cri::PodSandboxConfig,
    id: String,
}

impl Call for RemovePod {
    async fn prepare(&mut self, node: &mut Node) {
        let pod = self.pod.clone();
        self.id = node.run_pod(&pod).await;
        let id = self.id.clone();
        node.create_started(&id, &pod, &sleeper()).await;
        node.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }

    /// As the kubelet removes a pod: NotFound counts as removed.
    async fn call(&mut self, node: &mut Node) -> Result<(), tonic::Status> {
        match node
            .rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: self.id.clone(),
            })
            .await
        {
            Err(e) if e.code() == tonic::Code::NotFound => Ok(()),
            r => r.map(drop),
        }
    }

    async fn cleanup(&mut self, node: &mut Node) {
        remove_containers(node).await;
        RunPod::stop_and_remove_all(node, false).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_pod_sandbox() {
    const INDEX: u8 = 145;
    let mut node = Node::start(INDEX).await;
    let pod = node.pod("crash-stop", &uid(INDEX, 3));
    let mut call = StopPod {
        pod,
        id: String::new(),
    };
    let rows = walk(&mut node, INDEX, "StopPodSandbox", &mut call).await;
    print_matrix("StopPodSandbox", &rows);
    node.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_pod_sandbox() {
    const INDEX: u8 = 146;
    let mut node = Node::start(INDEX).await;
    let pod = node.pod("crash-remove", &uid(INDEX, 4));
    let mut call = RemovePod {
        pod,
        id: String::new(),
    };
    let rows = walk(&mut node, INDEX, "RemovePodSandbox", &mut call).await;
    print_matrix("RemovePodSandbox", &rows);
    node.finish().await;
}

/// Every image record of the root dir's image store that names a blob or snapshot the store
/// lacks, and every hold of a container that no longer exists, as `what: which` lines.
fn dangling_records(node: &Node) -> Vec<String> {
    let root = node.d.config.root();
    let mut out = Vec::new();
    let mut stores = Vec::new();
    let mut find = vec![root.clone()];
    while let Some(dir) = find.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_name() == "images.json" {
                stores.push(dir.clone());
            } else if e.file_type().is_ok_and(|t| t.is_dir()) && dir == root {
                find.push(e.path());
            }
        }
    }
    let hex = |v: &serde_json::Value| {
        let s = v.as_str().unwrap_or_default();
        s.rsplit(':').next().unwrap_or(s).to_owned()
    };
    for store in stores {
        let text = std::fs::read_to_string(store.join("images.json")).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let blob = |d: &serde_json::Value| store.join("content/blobs/sha256").join(hex(d));
        let snapshot = |c: &serde_json::Value| store.join("snapshots").join(hex(c));
        for img in file["images"].as_array().into_iter().flatten() {
            let blobs = std::iter::once(&img["id"])
                .chain(img["manifests"].as_array().into_iter().flatten())
                .chain(img["layers"].as_array().into_iter().flatten());
            for d in blobs {
                if !blob(d).exists() {
                    out.push(format!("image {}: blob {d}", img["id"]));
                }
            }
            for c in img["chain_ids"].as_array().into_iter().flatten() {
                if !snapshot(c).exists() {
                    out.push(format!("image {}: snapshot {c}", img["id"]));
                }
            }
        }
        for (holder, chains) in file["holds"].as_object().into_iter().flatten() {
            if !node.state().join("containers").join(holder).exists() {
                out.push(format!("hold of a container gone: {holder}"));
            }
            for c in chains.as_array().into_iter().flatten() {
                if !snapshot(c).exists() {
                    out.push(format!("hold {holder}: snapshot {c}"));
                }
            }
        }
    }
    out
}

/// Pulls the registry's busybox; the cleanup removes it (and the collection its content).
struct PullImage;

impl PullImage {
    async fn remove(node: &mut Node) {
        node.d
            .images()
            .await
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: Registry::busybox(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|e| panic!("RemoveImage: {e}\n{}", node.d.log_text()));
    }
}

impl Call for PullImage {
    async fn call(&mut self, node: &mut Node) -> Result<(), tonic::Status> {
        node.d
            .images()
            .await
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: Registry::busybox(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .map(drop)
    }

    async fn cleanup(&mut self, node: &mut Node) {
        Self::remove(node).await;
    }
}

/// Busybox pulled (unarmed) before each step; the call removes it, and with it the content and
/// snapshots no other image uses.
struct RemoveImage;

impl Call for RemoveImage {
    async fn prepare(&mut self, node: &mut Node) {
        node.pull_image(&Registry::busybox()).await;
    }

    async fn call(&mut self, node: &mut Node) -> Result<(), tonic::Status> {
        node.d
            .images()
            .await
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: Registry::busybox(),
                    ..Default::default()
                }),
            })
            .await
            .map(drop)
    }

    async fn cleanup(&mut self, node: &mut Node) {
        PullImage::remove(node).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_image() {
    const INDEX: u8 = 147;
    let mut node = Node::start(INDEX).await;
    let rows = walk(&mut node, INDEX, "PullImage", &mut PullImage).await;
    print_matrix("PullImage", &rows);
    node.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_image() {
    const INDEX: u8 = 148;
    let mut node = Node::start(INDEX).await;
    let rows = walk(&mut node, INDEX, "RemoveImage", &mut RemoveImage).await;
    print_matrix("RemoveImage", &rows);
    node.finish().await;
}
