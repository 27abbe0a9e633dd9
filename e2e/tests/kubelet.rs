//! A real kubelet on carapace (issue 21), opt-in: the tests that run one are `#[ignore]`d
//! (counted as ignored, never as passed) and run with `--ignored` where the binaries are at hand:
//!
//! - `CARAPACE_KUBELET`: a kubelet binary. The kubelet runs standalone against the test's own
//!   daemon with a static pod: two init containers run in order, an app with exec liveness and
//!   readiness probes, a container that exits every 10 s and is restarted; logs and the summary
//!   API are read through the kubelet's :10250 server.
//! - also `CARAPACE_KUBE_APISERVER` and `CARAPACE_ETCD` (the controller manager and scheduler are
//!   `CARAPACE_KUBE_CONTROLLER_MANAGER` / `CARAPACE_KUBE_SCHEDULER`, by default beside the API
//!   server; `CARAPACE_KUBECTL`, by default beside the kubelet): a one-node cluster with
//!   certificates the test makes. `kubectl` creates a pod and a 5-replica Deployment and uses
//!   logs, exec, exec with stdin, port-forward and the summary API through the kubelet's
//!   authenticated :10250 server.
//!
//! A kubelet kills every sandbox it did not create, so each test has its own daemon; the tests
//! run one at a time (both would use :10250). Pods go under a cgroup root of the test's own
//! (`/carapace-kubelet-<index>`), so the kubelet's cleanup of pod cgroups it does not know never
//! reaches another test's. The kubelet sets kernel tunables (`vm.overcommit_memory`,
//! `kernel.panic_on_oops`, ...) and iptables chains when it starts; the tests put both back as
//! they found them. Everything ends with the node's checks that nothing is left. The seconds to
//! Ready, to a Deployment available and to teardown are printed (`--nocapture`).
//!
//! What those runs found that a CRI client alone shows is tested without a kubelet too (not
//! ignored): pod stats for a host-network pod carry no network figures.
//!
//! The kubelet runs on `deploy/kubelet-config.yaml` as shipped, with a drop-in of the test's
//! (`--config-dir`) for its socket, directories and ports. `CARAPACE_KUBELET_SOAK_SECS` keeps the
//! standalone pod running that long before the checks (the issue's 5-minute run: 300). The tests
//! use `curl`, `openssl` and `ip` from the host. Pod network indexes 170..179. Run with e.g.
//!
//! ```text
//! CARAPACE_KUBELET=$K/kubelet CARAPACE_KUBE_APISERVER=$K/kube-apiserver CARAPACE_ETCD=/usr/bin/etcd \
//!   cargo test -p carapace-e2e --test kubelet -- --ignored --nocapture
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use carapace_e2e::node::Node;
use carapace_e2e::registry::Registry;
use carapace_e2e::{cri, free_port, mounts_under};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// One kubelet at a time: both tests serve on :10250, and each sets the node's kernel tunables.
static ONE_KUBELET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const KUBELET_PORT: u16 = 10250;
const HEALTHZ_PORT: u16 = 10248;

/// The binary named by `var`; panics if unset, as running an opt-in test without it proves
/// nothing.
fn binary(var: &str) -> PathBuf {
    let p = PathBuf::from(
        std::env::var_os(var)
            .unwrap_or_else(|| panic!("{var} must name the binary (see this file's header)")),
    );
    assert!(p.exists(), "{var}={} does not exist", p.display());
    p
}

/// `var`, or the file `name` beside the binary `beside`.
fn binary_or_beside(var: &str, beside: &Path, name: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(_) => binary(var),
        None => beside.with_file_name(name),
    }
}

/// A process the test started, its stdout and stderr in `<dir>/<name>.log`; killed if dropped
/// unstopped, with the end of its log printed.
struct Proc {
    name: String,
    child: Option<Child>,
    pid: i32,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, bin: &Path, args: &[String], dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Proc {
            name: name.into(),
            pid: child.id().map_or(0, |p| p as i32),
            child: Some(child),
            log,
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Panics with the end of its log if it has exited (a zombie until the test reaps it).
    fn assert_running(&self) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
        if matches!(state, None | Some('Z' | 'X')) {
            panic!("{} exited:\n{}", self.name, self.log_tail(60));
        }
    }

    /// Prints the lines of its log that tell of a failed CRI call (`rpc error`), for the reader
    /// of a kubelet run: some are expected (NotFound on a container the kubelet races to remove).
    fn print_rpc_errors(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let errors: Vec<&str> = text.lines().filter(|l| l.contains("rpc error")).collect();
        eprintln!("{}: {} log lines with `rpc error`", self.name, errors.len());
        for l in errors.iter().take(20) {
            eprintln!("  {l}");
        }
    }

    /// SIGTERM, then SIGKILL after 20 s.
    async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            eprintln!("--- {} (last lines) ---\n{}", self.name, self.log_tail(40));
        }
    }
}

/// Polls `f` every 250 ms (most polls run kubectl or read the kubelet's API) until it returns
/// `Some`, or panics after `timeout` naming `what`.
async fn until<T, F, Fut>(timeout: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    carapace_e2e::eventually_every(Duration::from_millis(250), timeout, what, f).await
}

/// Runs `cmd` to its end; its stdout, or the failure with both streams.
async fn output(cmd: &mut Command, stdin: Option<&[u8]>) -> Result<String, String> {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).await.map_err(|e| e.to_string())?;
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .map_err(|_| format!("{cmd:?} did not finish in 120 s"))?
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{cmd:?}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The kernel tunables the kubelet sets at start (unless `protectKernelDefaults`), as they were;
/// put back when dropped.
struct KernelTunables(Vec<(String, String)>);

impl KernelTunables {
    fn save() -> Self {
        let keys = [
            "vm/overcommit_memory",
            "vm/panic_on_oom",
            "kernel/panic",
            "kernel/panic_on_oops",
            "kernel/keys/root_maxkeys",
            "kernel/keys/root_maxbytes",
        ];
        KernelTunables(
            keys.iter()
                .filter_map(|k| {
                    let p = format!("/proc/sys/{k}");
                    Some((p.clone(), std::fs::read_to_string(&p).ok()?))
                })
                .collect(),
        )
    }
}

impl Drop for KernelTunables {
    fn drop(&mut self) {
        for (p, v) in &self.0 {
            let _ = std::fs::write(p, v);
        }
    }
}

/// The iptables chains the kubelet makes at start (a hint chain, KUBE-FIREWALL with jumps from
/// INPUT and OUTPUT, canaries): removed when dropped, unless they were there before.
struct KubeletChains {
    existed: bool,
}

impl KubeletChains {
    fn note() -> Self {
        let existed = std::process::Command::new("iptables")
            .args(["-t", "mangle", "-S", "KUBE-IPTABLES-HINT"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        KubeletChains { existed }
    }
}

impl Drop for KubeletChains {
    fn drop(&mut self) {
        if self.existed {
            return;
        }
        for ipt in ["iptables", "ip6tables"] {
            let run = |args: &[&str]| {
                let _ = std::process::Command::new(ipt)
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            };
            for chain in ["INPUT", "OUTPUT"] {
                run(&["-t", "filter", "-D", chain, "-j", "KUBE-FIREWALL"]);
            }
            for (table, chain) in [
                ("filter", "KUBE-FIREWALL"),
                ("mangle", "KUBE-IPTABLES-HINT"),
                ("mangle", "KUBE-KUBELET-CANARY"),
                ("nat", "KUBE-KUBELET-CANARY"),
                ("filter", "KUBE-KUBELET-CANARY"),
            ] {
                run(&["-t", table, "-F", chain]);
                run(&["-t", table, "-X", chain]);
            }
        }
    }
}

/// The test's cgroup root (`cgroupRoot` of the kubelet) in every hierarchy: the kubelet makes
/// `kubepods` and its QoS cgroups below it, and the pods' below those. Dropped, it kills what is
/// left in it and removes it.
struct CgroupRoot {
    name: String,
}

impl CgroupRoot {
    fn hierarchies() -> Vec<PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup")
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    }

    fn make(index: u8) -> Self {
        let name = format!("carapace-kubelet-{index}");
        let root = CgroupRoot { name };
        root.sweep();
        for h in Self::hierarchies() {
            let dir = h.join(&root.name);
            std::fs::create_dir_all(&dir).unwrap();
            // A new cpuset cgroup has no CPUs or memory nodes: its tasks could not run.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(h.join(f)) {
                    std::fs::write(dir.join(f), v.trim()).unwrap();
                }
            }
        }
        root
    }

    /// Every cgroup below the root, in every hierarchy, deepest first.
    fn below(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), out);
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        for h in Self::hierarchies() {
            walk(&h.join(&self.name), &mut out);
        }
        out
    }

    /// The pod cgroups (`pod<uid>`) left below the root, and any process in it.
    fn pods_and_processes(&self) -> (Vec<PathBuf>, Vec<String>) {
        let mut all = self.below();
        let pods = all
            .iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("pod"))
            })
            .cloned()
            .collect();
        all.extend(Self::hierarchies().iter().map(|h| h.join(&self.name)));
        let procs = all
            .iter()
            .flat_map(|cg| {
                std::fs::read_to_string(cg.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect();
        (pods, procs)
    }

    fn sweep(&self) {
        for _ in 0..50 {
            let (_, procs) = self.pods_and_processes();
            if procs.is_empty() {
                break;
            }
            for p in procs {
                if let Ok(pid) = p.trim().parse() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for cg in self.below() {
            let _ = std::fs::remove_dir(cg);
        }
        for h in Self::hierarchies() {
            let _ = std::fs::remove_dir(h.join(&self.name));
        }
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        self.sweep();
    }
}

/// What a kubelet run leaves on the host that the node's checks do not see: the pods' cgroups
/// under the test's root, symlinks in `/var/log/containers` (a fixed path) to its pods' logs,
/// mounts under its root dir.
fn assert_kubelet_left_nothing(cgroups: &CgroupRoot, pod_logs: &Path, kubelet_root: &Path) {
    let (pods, procs) = cgroups.pods_and_processes();
    assert!(pods.is_empty(), "pod cgroups left: {pods:?}");
    assert!(
        procs.is_empty(),
        "processes left in the pods' cgroups: {procs:?}"
    );
    let needle = pod_logs.display().to_string();
    let links: Vec<String> = std::fs::read_dir("/var/log/containers")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.display().to_string().starts_with(&needle))
        })
        .map(|e| e.path().display().to_string())
        .collect();
    assert!(links.is_empty(), "log symlinks left: {links:?}");
    // The kubelet bind-mounts its root dir onto itself to make it a shared mount, and leaves
    // that in place when it stops (on a node: /var/lib/kubelet); any other mount is a leak.
    let (own, left): (Vec<PathBuf>, Vec<PathBuf>) = mounts_under(kubelet_root)
        .into_iter()
        .partition(|m| m == kubelet_root);
    assert!(left.is_empty(), "kubelet mounts left: {left:?}");
    for _ in own {
        nix::mount::umount2(kubelet_root, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
}

/// The kubelet's configuration: `deploy/kubelet-config.yaml` as shipped, and a drop-in of the
/// test's (`--config-dir`) pointing it at the test's daemon, directories, cgroup root and ports,
/// plus `extra`.
struct KubeletSetup {
    root: PathBuf,
    pod_logs: PathBuf,
    args: Vec<String>,
}

/// `address`: where the kubelet serves :10250, its node IP too when it is not loopback (the
/// kubelet refuses a loopback node IP).
fn kubelet_setup(
    n: &Node,
    node_name: &str,
    cgroup_root: &str,
    address: &str,
    extra: Value,
) -> KubeletSetup {
    let dir = n.d.config.dir().join("kubelet");
    let root = dir.join("root");
    let pod_logs = dir.join("pod-logs");
    let dropins = dir.join("config.d");
    for d in [&root, &pod_logs, &dropins] {
        std::fs::create_dir_all(d).unwrap();
    }
    let endpoint = format!("unix://{}", n.d.config.socket().display());
    let mut cfg = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "podLogsDir": pod_logs,
        "cgroupRoot": format!("/{cgroup_root}"),
        "volumePluginDir": dir.join("volume-plugins"),
        "address": address,
        "port": KUBELET_PORT,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": HEALTHZ_PORT,
        "fileCheckFrequency": "1s",
        // A shared build machine's disk and memory must not get the test's pods evicted.
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%"
        },
    });
    if let (Some(c), Value::Object(e)) = (cfg.as_object_mut(), extra) {
        c.extend(e);
    }
    std::fs::write(dropins.join("90-e2e.conf"), cfg.to_string()).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubelet-config.yaml");
    let mut args = vec![
        format!("--config={}", shipped.display()),
        format!("--config-dir={}", dropins.display()),
        format!("--root-dir={}", root.display()),
        format!("--hostname-override={node_name}"),
        "--v=2".into(),
    ];
    if address != "127.0.0.1" {
        args.push(format!("--node-ip={address}"));
    }
    KubeletSetup {
        root,
        pod_logs,
        args,
    }
}

async fn wait_healthz(kubelet: &Proc) {
    let addr = format!("127.0.0.1:{HEALTHZ_PORT}").parse().unwrap();
    let start = Instant::now();
    loop {
        kubelet.assert_running();
        if let Ok((200, _)) = carapace_e2e::try_http_get(addr, "/healthz").await {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the kubelet's /healthz did not answer within 60 s:\n{}",
            kubelet.log_tail(60)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A GET on the kubelet's :10250 server (TLS, anonymous in the standalone test).
async fn kubelet_get(path: &str) -> Result<String, String> {
    output(
        Command::new("curl").args([
            "-sSkf",
            "--max-time",
            "20",
            &format!("https://127.0.0.1:{KUBELET_PORT}{path}"),
        ]),
        None,
    )
    .await
}

/// The address of the node's default route: the kubelet's node IP in the cluster, where the API
/// server reaches its :10250 (the kubelet refuses a loopback node IP).
fn host_ip() -> String {
    let out = std::process::Command::new("ip")
        // A route lookup only: nothing is sent.
        .args(["-4", "-o", "route", "get", "1.1.1.1"])
        .output()
        .expect("running ip route get");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words
        .find(|w| *w == "src")
        .and_then(|_| words.next())
        .unwrap_or_else(|| panic!("no source address in `ip route get`: {text}"))
        .to_owned()
}

/// The status of `container` (a regular one) in a pod's JSON.
fn container_status<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == container)
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The pods and containers carapace has, as (ready pods, running containers).
async fn cri_counts(n: &mut Node) -> (usize, usize) {
    let pods =
        n.d.pods()
            .await
            .iter()
            .filter(|p| p.state == cri::PodSandboxState::SandboxReady as i32)
            .count();
    let running = n
        .list(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        })
        .await
        .len();
    (pods, running)
}

/// Waits until carapace has no ready pod and no running container; returns how long it took.
async fn wait_nothing_running(n: &mut Node, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let counts = cri_counts(n).await;
        if counts == (0, 0) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "after {timeout:?} carapace still has (ready pods, running containers) {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the kubelet's garbage collection (every minute) has removed the deleted pods'
/// sandboxes and containers from carapace.
async fn wait_cri_empty(n: &mut Node, kubelet: &Proc) {
    let start = Instant::now();
    loop {
        kubelet.assert_running();
        let pods = n.d.pods().await;
        let containers = n.list(cri::ContainerFilter::default()).await;
        if pods.is_empty() && containers.is_empty() {
            eprintln!(
                "kubelet: sandboxes and containers removed by its GC {:.1} s after the pods went",
                start.elapsed().as_secs_f64()
            );
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "the kubelet left in carapace after 150 s: pods {pods:?}\ncontainers {containers:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks the summary API's entry for `ns/pod` carries carapace's CRI stats: with
/// PodAndContainerStatsFromCRI the pod's network (read by carapace in the pod's netns; cAdvisor
/// has none for a runtime it does not know), process count and each container's CPU and memory.
fn assert_summary_has_cri_stats(summary: &Value, ns: &str, pod: &str, containers: &[&str]) {
    let entry = summary["pods"]
        .as_array()
        .and_then(|ps| {
            ps.iter()
                .find(|p| p["podRef"]["name"] == pod && p["podRef"]["namespace"] == ns)
        })
        .unwrap_or_else(|| panic!("no {ns}/{pod} in the summary:\n{summary:#}"));
    let ifaces = entry["network"]["interfaces"].as_array();
    assert!(
        ifaces.is_some_and(|i| i
            .iter()
            .any(|i| i["name"] == "eth0" && i["rxBytes"].as_u64() > Some(0))),
        "no pod network stats (eth0 with bytes received) in the summary: \
         is PodAndContainerStatsFromCRI on?\n{entry:#}"
    );
    assert!(
        entry["process_stats"]["process_count"].as_u64() >= Some(1),
        "no process count for the pod:\n{entry:#}"
    );
    for c in containers {
        let cs = entry["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|x| x["name"] == *c))
            .unwrap_or_else(|| panic!("no container {c} in the summary:\n{entry:#}"));
        assert!(
            cs["cpu"]["usageCoreNanoSeconds"].as_u64() > Some(0),
            "no CPU for {c}:\n{cs:#}"
        );
        assert!(
            cs["memory"]["workingSetBytes"].as_u64() > Some(0),
            "no memory for {c}:\n{cs:#}"
        );
    }
}

/// The busybox image the node pulled; the kubelet finds it present and pulls nothing.
fn image() -> String {
    Registry::busybox()
}

#[tokio::test]
#[ignore = "needs a kubelet binary: CARAPACE_KUBELET=/path (see the file's header)"]
async fn a_standalone_kubelet_runs_a_static_pod_with_init_containers_probes_and_restarts() {
    let kubelet_bin = binary("CARAPACE_KUBELET");
    let soak = std::env::var("CARAPACE_KUBELET_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0u64);
    let _one = ONE_KUBELET.lock().await;
    let index = 170;
    let node_name = format!("carapace-e2e-{index}");
    let mut n = Node::start(index).await;
    let tunables = KernelTunables::save();
    let chains = KubeletChains::note();
    let cgroups = CgroupRoot::make(index);
    let manifests = n.d.config.dir().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let setup = kubelet_setup(
        &n,
        &node_name,
        &cgroups.name,
        "127.0.0.1",
        json!({
            "staticPodPath": manifests,
            "readOnlyPort": 0,
            // No API server to ask: the loopback-only server lets the test read logs and stats.
            "authentication": { "anonymous": { "enabled": true }, "webhook": { "enabled": false } },
            "authorization": { "mode": "AlwaysAllow" },
        }),
    );
    let started = Instant::now();
    let kubelet = Proc::spawn("kubelet", &kubelet_bin, &setup.args, n.d.config.dir());
    wait_healthz(&kubelet).await;
    eprintln!(
        "kubelet: healthy {:.2} s after its start",
        started.elapsed().as_secs_f64()
    );

    // Init containers write, in order, to a volume the app reads; the app is live while
    // /tmp/healthy exists and ready while the init file does; "flaky" exits every 10 s.
    let work = json!([{ "name": "work", "mountPath": "/work" }]);
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "life", "namespace": "e2e" },
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "initContainers": [
                { "name": "init-1", "image": image(), "imagePullPolicy": "IfNotPresent",
                  "command": ["sh", "-c", "echo first > /work/order; echo init-1 done"],
                  "volumeMounts": work },
                { "name": "init-2", "image": image(), "imagePullPolicy": "IfNotPresent",
                  "command": ["sh", "-c", "echo second >> /work/order; echo init-2 done"],
                  "volumeMounts": work },
            ],
            "containers": [
                { "name": "app", "image": image(), "imagePullPolicy": "IfNotPresent",
                  "command": ["sh", "-c", "cat /work/order; touch /tmp/healthy; echo app up; exec sleep 3600"],
                  "volumeMounts": work,
                  "livenessProbe": { "exec": { "command": ["cat", "/tmp/healthy"] },
                                     "periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 2 },
                  "readinessProbe": { "exec": { "command": ["cat", "/work/order"] },
                                      "periodSeconds": 1, "timeoutSeconds": 2 } },
                { "name": "flaky", "image": image(), "imagePullPolicy": "IfNotPresent",
                  "command": ["sh", "-c", "echo started; sleep 10; echo exiting; exit 3"] },
            ],
            "volumes": [{ "name": "work", "emptyDir": {} }],
        }
    });
    let created = Instant::now();
    std::fs::write(manifests.join("life.json"), pod.to_string()).unwrap();
    let pod_name = format!("life-{node_name}");
    let pods_url = "/pods";
    let the_pod = || async {
        let list: Value = serde_json::from_str(&kubelet_get(pods_url).await.ok()?).ok()?;
        list["items"]
            .as_array()?
            .iter()
            .find(|p| p["metadata"]["name"] == pod_name.as_str())
            .cloned()
    };
    until(
        Duration::from_secs(60),
        "the app container running",
        || async {
            let p = the_pod().await?;
            container_status(&p, "app")?["state"]["running"]
                .is_object()
                .then_some(())
        },
    )
    .await;
    let to_running = created.elapsed();
    let pod_now = until(Duration::from_secs(60), "the pod Ready", || async {
        let p = the_pod().await?;
        pod_ready(&p).then_some(p)
    })
    .await;
    eprintln!(
        "kubelet standalone: static pod app Running {:.2} s, pod Ready {:.2} s after the manifest \
         was written",
        to_running.as_secs_f64(),
        created.elapsed().as_secs_f64()
    );
    let inits = pod_now["status"]["initContainerStatuses"]
        .as_array()
        .unwrap_or_else(|| panic!("no init container statuses: {pod_now:#}"));
    assert_eq!(inits.len(), 2, "{pod_now:#}");
    for i in inits {
        assert_eq!(i["state"]["terminated"]["exitCode"], 0, "{i:#}");
    }
    let logs = |c: &str, previous: bool| {
        let path = format!(
            "/containerLogs/e2e/{pod_name}/{c}{}",
            if previous { "?previous=true" } else { "" }
        );
        async move { kubelet_get(&path).await }
    };
    assert_eq!(logs("init-1", false).await.unwrap(), "init-1 done\n");
    assert_eq!(logs("init-2", false).await.unwrap(), "init-2 done\n");
    assert_eq!(logs("app", false).await.unwrap(), "first\nsecond\napp up\n");

    // "flaky" exits every 10 s and is restarted (with the kubelet's back-off: 10 s, 20 s, ...).
    let restarted = until(
        Duration::from_secs(120),
        "flaky restarted twice",
        || async {
            let p = the_pod().await?;
            let c = container_status(&p, "flaky")?;
            (c["restartCount"].as_u64()? >= 2).then(|| c.clone())
        },
    )
    .await;
    assert_eq!(
        restarted["lastState"]["terminated"]["exitCode"], 3,
        "{restarted:#}"
    );
    let prev = logs("flaky", true).await.unwrap();
    assert_eq!(prev, "started\nexiting\n", "the previous attempt's log");

    if soak > 0 {
        let until_t = Instant::now() + Duration::from_secs(soak);
        while Instant::now() < until_t {
            kubelet.assert_running();
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let p = the_pod().await.expect("the pod after the soak");
        let flaky = container_status(&p, "flaky").unwrap();
        let app = container_status(&p, "app").unwrap();
        eprintln!(
            "kubelet standalone: after {soak} s more: flaky restarts {}, app restarts {}, \
             app ready {}",
            flaky["restartCount"], app["restartCount"], app["ready"]
        );
        assert_eq!(app["restartCount"], 0, "the app failed its probes: {p:#}");
        assert_eq!(app["ready"], true, "{p:#}");
        assert_eq!(logs("app", false).await.unwrap(), "first\nsecond\napp up\n");
        assert!(logs("flaky", true).await.unwrap().starts_with("started\n"));
    }

    // The liveness probe fails once /tmp/healthy is gone: the kubelet restarts the app.
    let app_id = container_status(&pod_now, "app").unwrap()["containerID"]
        .as_str()
        .and_then(|s| s.split("://").nth(1))
        .unwrap()
        .to_owned();
    let rm = n
        .exec_sync(&app_id, &["busybox", "rm", "/tmp/healthy"], 5)
        .await
        .unwrap();
    assert_eq!(rm.exit_code, 0);
    until(
        Duration::from_secs(60),
        "the app restarted by its liveness probe",
        || async {
            let p = the_pod().await?;
            let c = container_status(&p, "app")?;
            (c["restartCount"] == 1 && c["state"]["running"].is_object()).then_some(())
        },
    )
    .await;

    // A pod on the host's network: carapace has no pod network to count for it. The kubelet
    // (v1.36) dereferences the default interface of any network stats a runtime sends, and
    // crashed on the empty ones carapace sent for such a pod, every time it made a summary.
    let hostnet = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "hostnet", "namespace": "e2e" },
        "spec": {
            "hostNetwork": true,
            "terminationGracePeriodSeconds": 1,
            "containers": [{ "name": "sleep", "image": image(), "imagePullPolicy": "IfNotPresent",
                             "command": ["sleep", "3600"] }],
        }
    });
    std::fs::write(manifests.join("hostnet.json"), hostnet.to_string()).unwrap();
    let hostnet_name = format!("hostnet-{node_name}");

    // The summary API, from carapace's CRI stats.
    let summary: Value = until(
        Duration::from_secs(60),
        "the summary with both pods",
        || async {
            kubelet.assert_running();
            let s: Value = serde_json::from_str(&kubelet_get("/stats/summary").await.ok()?).ok()?;
            let pods = s["pods"].as_array()?;
            let life = pods.iter().any(|p| {
                p["podRef"]["name"] == pod_name.as_str() && p["network"]["interfaces"].is_array()
            });
            let host = pods.iter().any(|p| {
                p["podRef"]["name"] == hostnet_name.as_str() && !p["containers"].is_null()
            });
            (life && host).then_some(s)
        },
    )
    .await;
    assert_summary_has_cri_stats(&summary, "e2e", &pod_name, &["app"]);
    // Two more summaries (the kubelet's eviction manager makes one every 10 s too).
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        kubelet_get("/stats/summary").await.unwrap();
    }
    kubelet.assert_running();

    // Removing the manifest stops the pod; the kubelet's GC removes it from carapace.
    let removed = Instant::now();
    std::fs::remove_file(manifests.join("life.json")).unwrap();
    std::fs::remove_file(manifests.join("hostnet.json")).unwrap();
    wait_nothing_running(&mut n, Duration::from_secs(60)).await;
    eprintln!(
        "kubelet standalone: pods torn down (no ready sandbox, no running container) {:.2} s \
         after the manifests were removed",
        removed.elapsed().as_secs_f64()
    );
    wait_cri_empty(&mut n, &kubelet).await;
    kubelet.print_rpc_errors();
    kubelet.stop().await;
    drop((tunables, chains));
    assert_kubelet_left_nothing(&cgroups, &setup.pod_logs, &setup.root);
    drop(cgroups);
    n.finish().await;
}

/// A certificate authority and the certificates of a one-node cluster, made with `openssl`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn make(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let pki = Pki { dir: dir.into() };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=carapace-e2e-ca",
        ]);
        pki.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-out",
            "sa.key",
        ]);
        pki.openssl(&["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("running openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `<name>.crt` and `<name>.key` for `subject`, signed by the CA, with `san` (may be empty).
    fn cert(&self, name: &str, subject: &str, san: &str) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ]);
        let mut ext = String::from(
            "keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        );
        if !san.is_empty() {
            ext.push_str(&format!("subjectAltName={san}\n"));
        }
        let ext_file = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext_file), ext).unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &ext_file,
        ]);
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    /// A kubeconfig for `user`'s certificate.
    fn kubeconfig(&self, user: &str, server: &str) -> PathBuf {
        let cfg = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "e2e", "cluster": {
                "server": server, "certificate-authority": self.path("ca.crt") } }],
            "users": [{ "name": user, "user": {
                "client-certificate": self.path(&format!("{user}.crt")),
                "client-key": self.path(&format!("{user}.key")) } }],
            "contexts": [{ "name": "e2e", "context": { "cluster": "e2e", "user": user } }],
            "current-context": "e2e",
        });
        let p = self.dir.join(format!("{user}.kubeconfig"));
        std::fs::write(&p, cfg.to_string()).unwrap();
        p
    }
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args);
        c
    }

    async fn try_run(&self, args: &[&str]) -> Result<String, String> {
        output(&mut self.cmd(args), None).await
    }

    async fn run(&self, args: &[&str]) -> String {
        self.try_run(args).await.unwrap_or_else(|e| panic!("{e}"))
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> String {
        output(&mut self.cmd(args), Some(stdin))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.try_run(&a).await.ok()?).ok()
    }

    async fn apply(&self, obj: &Value) {
        self.run_with_stdin(&["apply", "-f", "-"], obj.to_string().as_bytes())
            .await;
    }
}

#[tokio::test]
#[ignore = "needs kubelet, kube-apiserver and etcd binaries: CARAPACE_KUBELET, \
            CARAPACE_KUBE_APISERVER, CARAPACE_ETCD (see the file's header)"]
async fn a_one_node_cluster_runs_pods_with_logs_exec_port_forward_and_stats_on_carapace() {
    let kubelet_bin = binary("CARAPACE_KUBELET");
    let apiserver_bin = binary("CARAPACE_KUBE_APISERVER");
    let etcd_bin = binary("CARAPACE_ETCD");
    let kcm_bin = binary_or_beside(
        "CARAPACE_KUBE_CONTROLLER_MANAGER",
        &apiserver_bin,
        "kube-controller-manager",
    );
    let scheduler_bin =
        binary_or_beside("CARAPACE_KUBE_SCHEDULER", &apiserver_bin, "kube-scheduler");
    let kubectl_bin = binary_or_beside("CARAPACE_KUBECTL", &kubelet_bin, "kubectl");
    let _one = ONE_KUBELET.lock().await;
    let index = 171;
    let node_name = format!("carapace-e2e-{index}");
    let mut n = Node::start(index).await;
    let dir = n.d.config.dir().to_path_buf();
    let node_ip = host_ip();
    let pki = Pki::make(&dir.join("pki"));
    pki.cert(
        "apiserver",
        "/CN=kube-apiserver",
        "IP:127.0.0.1,DNS:localhost,IP:10.96.0.1",
    );
    pki.cert("admin", "/O=system:masters/CN=e2e-admin", "");
    pki.cert(
        "apiserver-kubelet",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "",
    );
    pki.cert(
        "kubelet",
        &format!("/O=system:nodes/CN=system:node:{node_name}"),
        "",
    );
    pki.cert(
        "kubelet-serving",
        &format!("/CN={node_name}"),
        &format!("IP:{node_ip},DNS:{node_name}"),
    );

    // etcd
    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let etcd = Proc::spawn(
        "etcd",
        &etcd_bin,
        &[
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
        ],
        &dir,
    );
    let etcd_addr = format!("127.0.0.1:{etcd_port}").parse().unwrap();
    until(Duration::from_secs(30), "etcd healthy", || async {
        etcd.assert_running();
        matches!(
            carapace_e2e::try_http_get(etcd_addr, "/health").await,
            Ok((200, _))
        )
        .then_some(())
    })
    .await;

    let p = |f: &str| pki.path(f);
    let apiserver = Proc::spawn(
        "kube-apiserver",
        &apiserver_bin,
        &[
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={api_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!(
                "--kubelet-client-certificate={}",
                p("apiserver-kubelet.crt")
            ),
            format!("--kubelet-client-key={}", p("apiserver-kubelet.key")),
            format!("--kubelet-certificate-authority={}", p("ca.crt")),
            "--kubelet-preferred-address-types=InternalIP".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--endpoint-reconciler-type=none".into(),
        ],
        &dir,
    );
    let server = format!("https://127.0.0.1:{api_port}");
    let kubectl = Kubectl {
        bin: kubectl_bin,
        kubeconfig: pki.kubeconfig("admin", &server),
    };
    let admin_kubeconfig = kubectl.kubeconfig.display().to_string();
    until(Duration::from_secs(120), "the API server ready", || async {
        apiserver.assert_running();
        kubectl.try_run(&["get", "--raw", "/readyz"]).await.ok()
    })
    .await;
    let kcm = Proc::spawn(
        "kube-controller-manager",
        &kcm_bin,
        &[
            format!("--kubeconfig={admin_kubeconfig}"),
            format!("--authentication-kubeconfig={admin_kubeconfig}"),
            format!("--authorization-kubeconfig={admin_kubeconfig}"),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()),
        ],
        &dir,
    );
    let scheduler = Proc::spawn(
        "kube-scheduler",
        &scheduler_bin,
        &[
            format!("--kubeconfig={admin_kubeconfig}"),
            format!("--authentication-kubeconfig={admin_kubeconfig}"),
            format!("--authorization-kubeconfig={admin_kubeconfig}"),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={}", free_port()),
        ],
        &dir,
    );

    let tunables = KernelTunables::save();
    let chains = KubeletChains::note();
    let cgroups = CgroupRoot::make(index);
    let kubelet_kubeconfig = pki.kubeconfig("kubelet", &server);
    let mut setup = kubelet_setup(
        &n,
        &node_name,
        &cgroups.name,
        &node_ip,
        json!({
            "readOnlyPort": 0,
            "tlsCertFile": p("kubelet-serving.crt"),
            "tlsPrivateKeyFile": p("kubelet-serving.key"),
            // The API server's client certificate, checked against the CA, and authorised
            // by the API server (SubjectAccessReview): the authenticated :10250 server.
            "authentication": {
                "anonymous": { "enabled": false },
                "webhook": { "enabled": true },
                "x509": { "clientCAFile": p("ca.crt") }
            },
            "authorization": { "mode": "Webhook" },
        }),
    );
    setup
        .args
        .push(format!("--kubeconfig={}", kubelet_kubeconfig.display()));
    let started = Instant::now();
    let kubelet = Proc::spawn("kubelet", &kubelet_bin, &setup.args, &dir);
    let node_path = format!("node/{node_name}");
    until(Duration::from_secs(120), "the node Ready", || async {
        kubelet.assert_running();
        kcm.assert_running();
        scheduler.assert_running();
        let node = kubectl.json(&["get", &node_path]).await?;
        let ready = node["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let tainted = node["spec"]["taints"]
            .as_array()
            .is_some_and(|t| !t.is_empty());
        (ready && !tainted).then_some(())
    })
    .await;
    eprintln!(
        "kubelet cluster: node Ready and untainted {:.2} s after the kubelet's start",
        started.elapsed().as_secs_f64()
    );

    // A namespace of the test's; pods need its default service account, and the fork's
    // admission mounts the kube-root-ca.crt and openshift-service-ca.crt ConfigMaps into them.
    let ns = "carapace-e2e";
    kubectl.run(&["create", "namespace", ns]).await;
    until(
        Duration::from_secs(60),
        "the namespace's service account and CA ConfigMaps",
        || async {
            for obj in [
                "serviceaccount/default",
                "configmap/kube-root-ca.crt",
                "configmap/openshift-service-ca.crt",
            ] {
                kubectl.try_run(&["-n", ns, "get", obj]).await.ok()?;
            }
            Some(())
        },
    )
    .await;

    // A pod: httpd behind an HTTP readiness probe (the kubelet reaches the pod's address).
    let web = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "web", "namespace": ns },
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "web", "image": image(), "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "echo hello-from-web; mkdir -p /www; \
                             echo hello-from-httpd > /www/index.html; \
                             exec busybox httpd -f -p 8080 -h /www"],
                "ports": [{ "containerPort": 8080 }],
                "readinessProbe": { "httpGet": { "path": "/", "port": 8080 }, "periodSeconds": 1 },
            }],
        }
    });
    let created = Instant::now();
    kubectl.apply(&web).await;
    kubectl
        .run(&[
            "-n",
            ns,
            "wait",
            "--for=jsonpath={.status.phase}=Running",
            "pod/web",
            "--timeout=120s",
        ])
        .await;
    let to_running = created.elapsed();
    kubectl
        .run(&[
            "-n",
            ns,
            "wait",
            "--for=condition=Ready",
            "pod/web",
            "--timeout=120s",
        ])
        .await;
    eprintln!(
        "kubelet cluster: pod Running {:.2} s, Ready {:.2} s after kubectl apply",
        to_running.as_secs_f64(),
        created.elapsed().as_secs_f64()
    );

    // logs, exec, exec with stdin, port-forward.
    let logs = kubectl.run(&["-n", ns, "logs", "web"]).await;
    assert_eq!(logs, "hello-from-web\n");
    let hostname = kubectl
        .run(&["-n", ns, "exec", "web", "--", "cat", "/etc/hostname"])
        .await;
    assert_eq!(hostname.trim(), "web");
    let upper = kubectl
        .run_with_stdin(
            &[
                "-n", ns, "exec", "-i", "web", "--", "busybox", "tr", "a-z", "A-Z",
            ],
            b"hello through stdin\n",
        )
        .await;
    assert_eq!(upper, "HELLO THROUGH STDIN\n");
    let sa_files = kubectl
        .run(&[
            "-n",
            ns,
            "exec",
            "web",
            "--",
            "ls",
            "/var/run/secrets/kubernetes.io/serviceaccount",
        ])
        .await;
    for f in ["ca.crt", "namespace", "service-ca.crt", "token"] {
        assert!(
            sa_files.lines().any(|l| l == f),
            "{f} missing from the service account volume: {sa_files}"
        );
    }
    let local = free_port();
    let pf = Proc::spawn(
        "port-forward",
        &kubectl.bin,
        &[
            format!("--kubeconfig={admin_kubeconfig}"),
            "-n".into(),
            ns.into(),
            "port-forward".into(),
            "--address=127.0.0.1".into(),
            "pod/web".into(),
            format!("{local}:8080"),
        ],
        &dir,
    );
    let local_addr = format!("127.0.0.1:{local}").parse().unwrap();
    let body = until(
        Duration::from_secs(30),
        "an answer through port-forward",
        || async {
            pf.assert_running();
            match carapace_e2e::try_http_get(local_addr, "/").await {
                Ok((200, body)) => Some(body),
                _ => None,
            }
        },
    )
    .await;
    assert_eq!(body, "hello-from-httpd\n");
    pf.stop().await;

    // The summary API through the API server's proxy to the kubelet's :10250 (client
    // certificate, webhook authorisation), from carapace's CRI stats.
    let summary_path = format!("/api/v1/nodes/{node_name}/proxy/stats/summary");
    let summary: Value = until(
        Duration::from_secs(60),
        "the summary with the pod's network",
        || async {
            let s: Value = serde_json::from_str(
                &kubectl
                    .try_run(&["get", "--raw", &summary_path])
                    .await
                    .ok()?,
            )
            .ok()?;
            let found = s["pods"]
                .as_array()?
                .iter()
                .any(|p| p["podRef"]["name"] == "web" && p["network"]["interfaces"].is_array());
            found.then_some(s)
        },
    )
    .await;
    assert_summary_has_cri_stats(&summary, ns, "web", &["web"]);
    let anonymous = output(
        Command::new("curl").args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://{node_ip}:{KUBELET_PORT}/stats/summary"),
        ]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        anonymous, "401",
        "the kubelet's server answered an anonymous client"
    );

    // A 5-replica Deployment.
    let deploy = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "five", "namespace": ns },
        "spec": {
            "replicas": 5,
            "selector": { "matchLabels": { "app": "five" } },
            "template": {
                "metadata": { "labels": { "app": "five" } },
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{ "name": "sleep", "image": image(),
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"] }],
                },
            },
        }
    });
    let created = Instant::now();
    kubectl.apply(&deploy).await;
    kubectl
        .run(&[
            "-n",
            ns,
            "wait",
            "--for=jsonpath={.status.availableReplicas}=5",
            "deployment/five",
            "--timeout=180s",
        ])
        .await;
    eprintln!(
        "kubelet cluster: 5-replica Deployment available {:.2} s after kubectl apply",
        created.elapsed().as_secs_f64()
    );
    assert_eq!(cri_counts(&mut n).await, (6, 6));

    // Teardown: deleted through the API, the pods' containers stopped, volumes and cgroups
    // cleaned by the kubelet; then its GC removes them from carapace.
    let deleting = Instant::now();
    kubectl
        .run(&[
            "-n",
            ns,
            "delete",
            "deployment/five",
            "pod/web",
            "--wait=true",
            "--timeout=120s",
        ])
        .await;
    until(
        Duration::from_secs(120),
        "the Deployment's pods gone",
        || async {
            let pods = kubectl.json(&["-n", ns, "get", "pods"]).await?;
            pods["items"].as_array()?.is_empty().then_some(())
        },
    )
    .await;
    wait_nothing_running(&mut n, Duration::from_secs(60)).await;
    eprintln!(
        "kubelet cluster: 6 pods torn down (gone from the API, nothing running in carapace) \
         {:.2} s after kubectl delete",
        deleting.elapsed().as_secs_f64()
    );
    wait_cri_empty(&mut n, &kubelet).await;
    kubectl
        .run(&["delete", "namespace", ns, "--wait=false"])
        .await;

    kubelet.print_rpc_errors();
    kubelet.stop().await;
    scheduler.stop().await;
    kcm.stop().await;
    apiserver.stop().await;
    etcd.stop().await;
    drop((tunables, chains));
    assert_kubelet_left_nothing(&cgroups, &setup.pod_logs, &setup.root);
    drop(cgroups);
    n.finish().await;
}

/// The kubelet (v1.36, PodAndContainerStatsFromCRI) reads the default interface of any pod
/// network stats a runtime sends, and crashed on the empty ones carapace sent for a pod on the
/// host's network: stats for such a pod carry no network figures at all, while a pod with its
/// own network has them with its default interface.
#[tokio::test]
async fn a_host_network_pod_has_no_network_stats_the_kubelet_would_trip_on() {
    let index = 172;
    let mut n = Node::start(index).await;
    let own = n.pod("ownnet", "4b1e0000-0000-4000-8000-000000000172");
    let own_id = n.run_pod(&own).await;
    let mut host = n.pod("hostnet", "4b1e0001-0000-4000-8000-000000000172");
    host.linux.get_or_insert_default().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let host_id = n.run_pod(&host).await;
    let sleep = carapace_e2e::node::container("sleep", &["sleep", "60"]);
    n.create_started(&host_id, &host, &sleep).await;
    n.create_started(&own_id, &own, &sleep).await;

    let host_stats = n.pod_stats(&host_id).await;
    let linux = host_stats.linux.as_ref().unwrap();
    assert!(
        linux.network.is_none(),
        "network stats for a host-network pod: {:?}",
        linux.network
    );
    assert!(linux.cpu.is_some() && linux.memory.is_some());
    let own_stats = n.pod_stats(&own_id).await;
    let net = own_stats.linux.unwrap().network.unwrap();
    assert_eq!(net.default_interface.unwrap().name, "eth0");

    // The kubelet asks for every pod at once.
    let all =
        n.rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .stats;
    assert_eq!(all.len(), 2);
    for s in &all {
        let net = s.linux.as_ref().and_then(|l| l.network.as_ref());
        assert!(
            net.is_none_or(|n| n.default_interface.is_some()),
            "network stats without a default interface: {s:?}"
        );
    }

    for c in n.list(cri::ContainerFilter::default()).await {
        n.stop_container(&c.id, 0).await;
        n.remove_container(&c.id).await;
    }
    n.remove_pod(&host_id).await;
    n.remove_pod(&own_id).await;
    n.finish().await;
}
