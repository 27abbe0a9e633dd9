//! The long workloads: `soak` (pod lifecycles by the thousand, the node's counts read every 100)
//! and `load` (many clients at once on a node full of pods). Each runs once per runtime, not
//! A B A B: a pass takes minutes, and what they report (counts back to where they started, calls
//! that failed, tail latencies, a daemon's memory staying bounded) is not something drift on the
//! machine between two passes would move.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use carapace_cri_api::v1 as cri;

use crate::{
    Args, BENCH_NAMESPACE, Runtime, connect, container_config, extra_kib_row, extra_ms_row,
    open_fds, percentile, pod_config, rss_mib, threads, unique,
};

/// The tables the soak and load passes print after the side-by-side table.
static REPORTS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn report(text: String) {
    eprint!("{text}");
    REPORTS.lock().unwrap_or_else(|p| p.into_inner()).push(text);
}

/// Prints what the soak and load passes found, after the side-by-side table.
pub fn print_reports() {
    for r in REPORTS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        print!("\n{r}");
    }
}

/// The cgroup the soak's pods get their own under, as `/kubepods` is for the kubelet's: made by
/// the bench before the first pod and removed after the last, so that what a runtime leaves
/// under it is what the count shows.
const SOAK_CGROUP: &str = "carapace-bench-soak";
/// Cycles in flight at once.
const SOAK_PARALLEL: usize = 10;
/// Cycles between two readings of the node.
const SOAK_SAMPLE_EVERY: usize = 100;
/// How long the node is left idle before a reading: what a runtime finishes in the background
/// (a monitor's exit, the kernel freeing a network namespace) and idle threads ending (tokio ends
/// a blocking thread after 10 s idle) would otherwise show as a count that moves.
const SOAK_SETTLE: Duration = Duration::from_secs(12);

/// What one reading of the node counts, in the order of its columns.
const COLUMNS: [&str; 13] = [
    "mounts",
    "netns",
    "veths",
    "cgroups",
    "cg procs",
    "leases",
    "iptables",
    "ipt bench",
    "fds",
    "threads",
    "helpers",
    "RSS KiB",
    "anon KiB",
];
const RSS: usize = 11;
const ANON: usize = 12;

/// Where the bench's network and runtimes leave their traces on the node.
struct Node {
    /// run.sh's work dir: both runtimes' root and state (mounts, pinned namespaces) are under it.
    work: PathBuf,
    bridge: String,
    network: String,
    pid: u32,
}

impl Node {
    fn of(r: &Runtime, a: &Args) -> Result<Self> {
        Ok(Self {
            work: a
                .work_dir
                .clone()
                .context("soak needs --work-dir (run.sh passes it)")?,
            bridge: a.bridge.clone(),
            network: a.network.clone(),
            pid: r
                .pid
                .with_context(|| format!("soak needs --pid {}=PID", r.name))?,
        })
    }

    fn read(&self) -> Result<[i64; COLUMNS.len()]> {
        let (mounts, netns) = mounts_under(&self.work)?;
        let (ipt, ipt_bench) = iptables_rules(&[&self.bridge, &self.network])?;
        let cg = cgroup_dirs();
        Ok([
            mounts,
            netns,
            count_entries(&Path::new("/sys/class/net").join(&self.bridge).join("brif")),
            cg.iter().map(|d| count_dirs(d)).sum(),
            count_procs(&Path::new("/sys/fs/cgroup/pids").join(SOAK_CGROUP)),
            leases(&self.network),
            ipt,
            ipt_bench,
            open_fds(self.pid) as i64,
            threads(self.pid) as i64,
            helpers(&self.work),
            (rss_mib(self.pid)? * 1024.0).round() as i64,
            status_kib(self.pid, "RssAnon:")?,
        ])
    }

    /// A reading once the node has settled: two readings a second apart that agree on every
    /// count but RSS, after [`SOAK_SETTLE`] (at most 10 more tries).
    async fn settled(&self) -> Result<[i64; COLUMNS.len()]> {
        tokio::time::sleep(SOAK_SETTLE).await;
        let mut last = self.read()?;
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = self.read()?;
            let same = now[..RSS] == last[..RSS];
            last = now;
            if same {
                break;
            }
        }
        Ok(last)
    }
}

/// A `/proc/<pid>/status` field in KiB: `RssAnon:` is the heap and stacks of RSS, apart from the
/// binary's pages the daemon happened to touch (`RssFile:`), which the kernel can drop.
fn status_kib(pid: u32, key: &str) -> Result<i64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{key} missing from /proc/{pid}/status"))
}

/// What the daemon's fds point at and its threads' names, each kind counted (`socket`,
/// `anon_inode:[eventfd]`, a path; the inode numbers dropped): the difference between two tells
/// what a count that moved holds.
fn fd_kinds_and_threads(pid: u32) -> BTreeMap<String, i64> {
    let mut kinds = BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(t) = std::fs::read_link(e.path()) {
            let t = t.to_string_lossy().into_owned();
            let kind = match t.split_once(":[") {
                Some((k, _)) if !k.starts_with('/') && !k.starts_with("anon_inode") => k.to_owned(),
                _ => t,
            };
            *kinds.entry(format!("fd {kind}")).or_insert(0) += 1;
        }
    }
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(c) = std::fs::read_to_string(e.path().join("comm")) {
            *kinds.entry(format!("thread {}", c.trim_end())).or_insert(0) += 1;
        }
    }
    kinds
}

/// `after` less `before`, the kinds that differ only.
fn kinds_moved(before: &BTreeMap<String, i64>, after: &BTreeMap<String, i64>) -> String {
    let mut d: Vec<String> = Vec::new();
    for k in before
        .keys()
        .chain(after.keys().filter(|k| !before.contains_key(*k)))
    {
        let n = after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        if n != 0 {
            d.push(format!("{k} {n:+}"));
        }
    }
    if d.is_empty() {
        "none".into()
    } else {
        d.join(", ")
    }
}

/// Mounts whose mount point is under `dir`, and the pinned network namespaces under it or under
/// /run/netns (where containerd 1.6 pins its pods' whatever `netns_mounts_under` says, and `ip
/// netns` its own: a colleague's namespace there moves the count too).
fn mounts_under(dir: &Path) -> Result<(i64, i64)> {
    Ok(mounts_of(
        &std::fs::read_to_string("/proc/self/mountinfo")?,
        dir,
    ))
}

/// [`mounts_under`] from the text of a mountinfo file.
fn mounts_of(info: &str, dir: &Path) -> (i64, i64) {
    let prefix = format!("{}/", dir.display());
    let (mut mounts, mut netns) = (0, 0);
    for l in info.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let (Some(root), Some(point)) = (f.get(3), f.get(4)) else {
            continue;
        };
        let ours = point.starts_with(&prefix);
        if ours {
            mounts += 1;
        }
        let fstype = l.split(" - ").nth(1).and_then(|r| r.split(' ').next());
        // An nsfs mount's root names the namespace: `net:[4026532…]`.
        if fstype == Some("nsfs")
            && root.starts_with("net:")
            && (ours || point.starts_with("/run/netns/"))
        {
            netns += 1;
        }
    }
    (mounts, netns)
}

/// Lines of `iptables-save` (rules and chains of every table: the node's, so another user of
/// the node moves it too) and of them those naming the bench's bridge or network (the CNI
/// plugins' rules name the network in their comments).
fn iptables_rules(names: &[&str]) -> Result<(i64, i64)> {
    let out = std::process::Command::new("iptables-save")
        .output()
        .context("running iptables-save")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let ours = lines
        .iter()
        .filter(|l| names.iter().any(|n| l.contains(n)))
        .count();
    Ok((lines.len() as i64, ours as i64))
}

/// The soak's parent cgroup in every hierarchy mounted under /sys/fs/cgroup (v1 controllers and
/// the hybrid layout's unified one).
fn cgroup_dirs() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path().join(SOAK_CGROUP))
        .collect()
}

/// Directories below `dir`, at any depth (0 when it is missing).
fn count_dirs(dir: &Path) -> i64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| 1 + count_dirs(&e.path()))
        .sum()
}

/// Processes in `dir`'s cgroup and every one below it.
fn count_procs(dir: &Path) -> i64 {
    let own = std::fs::read_to_string(dir.join("cgroup.procs"))
        .map_or(0, |p| p.lines().filter(|l| !l.is_empty()).count() as i64);
    own + std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| count_procs(&e.path()))
        .sum::<i64>()
}

fn count_entries(dir: &Path) -> i64 {
    std::fs::read_dir(dir).map_or(0, |d| d.count() as i64)
}

/// host-local's leases of `network`: one file per address handed out.
fn leases(network: &str) -> i64 {
    std::fs::read_dir(Path::new("/var/lib/cni/networks").join(network))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n != "lock" && !n.starts_with("last_reserved_ip")
        })
        .count() as i64
}

/// The per-pod processes a runtime keeps beside its containers for the bench's work dir:
/// containerd's shims, carapace's monitors and infra processes (their command lines name the
/// state dir).
fn helpers(work: &Path) -> i64 {
    let w = work.to_string_lossy().into_owned();
    let carapace_state = format!("{w}/run/carapace/");
    let mut n = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if (cmd.contains("containerd-shim") && cmd.contains(&w)) || cmd.contains(&carapace_state) {
            n += 1;
        }
    }
    n
}

/// Removes what is left of a pod's cgroup once the pod is gone, as the kubelet does (it made it):
/// only empty directories go, so a container's cgroup a runtime left keeps it, and shows in the
/// count. Returns how many directories it removed.
fn remove_pod_cgroup(rel: &str) -> usize {
    cgroup_dirs()
        .iter()
        .filter_map(|d| d.parent().map(|h| h.join(rel)))
        .filter(|d| std::fs::remove_dir(d).is_ok())
        .count()
}

/// One soak cycle: a pod with the bench's network and a cgroup of its own under [`SOAK_CGROUP`],
/// a container started in it, `true` run in that by ExecSync, then the container stopped and
/// removed and the pod stopped and removed. Returns the pod cgroup directories the runtime left
/// for the kubelet to remove, and whether the container's process was seen in the pod cgroup
/// (the pids hierarchy's) while it ran: what shows that the cgroup count counts the right place.
async fn soak_cycle(mut r: Runtime, image: String) -> Result<(usize, bool)> {
    let mut cfg = pod_config(&unique("soak"));
    let uid = cfg
        .metadata
        .as_ref()
        .map(|m| m.uid.clone())
        .unwrap_or_default();
    let rel = format!("{SOAK_CGROUP}/pod{uid}");
    if let Some(l) = cfg.linux.as_mut() {
        l.cgroup_parent = format!("/{rel}");
    }
    let (pod, cfg) = r.run_pod_with(cfg).await?;
    let ran = async {
        let c = r.start_container(&pod, &cfg, &image).await?;
        let seen = count_procs(&Path::new("/sys/fs/cgroup/pids").join(&rel)) > 0;
        let out =
            r.rt.exec_sync(cri::ExecSyncRequest {
                container_id: c.clone(),
                cmd: vec!["true".into()],
                timeout: 30,
            })
            .await
            .with_context(|| format!("{}: ExecSync", r.name))?
            .into_inner();
        if out.exit_code != 0 {
            bail!("{}: ExecSync: true exited {}", r.name, out.exit_code);
        }
        r.stop_remove_container(&c).await?;
        Ok(seen)
    }
    .await;
    // The pod goes whatever happened to its container.
    let removed = r.remove_pod(&pod).await;
    let seen = ran?;
    removed?;
    Ok((remove_pod_cgroup(&rel), seen))
}

/// The `soak` workload: `--soak-cycles` cycles, [`SOAK_PARALLEL`] at a time, the node read
/// before the first and after every [`SOAK_SAMPLE_EVERY`] (between two batches, nothing of the
/// soak in flight). Prints the readings and whether each count came back to where it started.
/// Returns the milliseconds per cycle (batches' wall time over cycles, the readings' waits
/// left out).
pub async fn soak(r: &mut Runtime, a: &Args) -> Result<f64> {
    let node = Node::of(r, a)?;
    for d in cgroup_dirs() {
        if let Err(e) = std::fs::create_dir(&d)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(e).with_context(|| format!("creating {}", d.display()));
        }
    }
    let n = a.soak_cycles;
    let mut samples = vec![(0, node.settled().await?)];
    let kinds_start = fd_kinds_and_threads(node.pid);
    let mut kinds_base = kinds_start.clone();
    let (mut done, mut failed, mut left_for_kubelet, mut seen) = (0, 0, 0, 0);
    let mut errors: Vec<String> = Vec::new();
    let mut busy = Duration::ZERO;
    let began = Instant::now();
    while done < n {
        let batch = (n - done).min(SOAK_PARALLEL);
        let t = Instant::now();
        let tasks: Vec<_> = (0..batch)
            .map(|_| tokio::spawn(soak_cycle(r.clone(), a.image.clone())))
            .collect();
        for t in tasks {
            match t.await {
                Ok(Ok((left, s))) => {
                    left_for_kubelet += left;
                    seen += usize::from(s);
                }
                Ok(Err(e)) => {
                    failed += 1;
                    if errors.len() < 5 {
                        errors.push(format!("{e:#}"));
                    }
                }
                Err(e) => bail!("a soak cycle panicked: {e}"),
            }
        }
        busy += t.elapsed();
        done += batch;
        if done % SOAK_SAMPLE_EVERY == 0 || done == n {
            let s = node.settled().await?;
            eprintln!(
                "  {}: soak {done}/{n} cycles ({failed} failed, {:.0} s): {}",
                r.name,
                began.elapsed().as_secs_f64(),
                COLUMNS
                    .iter()
                    .zip(s)
                    .map(|(c, v)| format!("{c} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            samples.push((done, s));
            if done == SOAK_SAMPLE_EVERY {
                kinds_base = fd_kinds_and_threads(node.pid);
            }
        }
    }
    let per_cycle = busy.as_secs_f64() * 1000.0 / n.max(1) as f64;
    let end = samples.last().map(|s| s.1).unwrap_or_default();
    // Whatever the runtime could not remove keeps its directory; an empty parent goes.
    for d in cgroup_dirs() {
        let _ = std::fs::remove_dir(d);
    }

    let mut t = format!(
        "### soak on {}: {n} cycles (run pod + create + start + exec + stop + remove, {SOAK_PARALLEL} at a time, pod network {}), {per_cycle:.1} ms per cycle, {failed} failed\n\n",
        r.name, a.network
    );
    t += &format!("| cycle | {} |\n", COLUMNS.join(" | "));
    t += &format!("|---|{}\n", "---|".repeat(COLUMNS.len()));
    for (at, s) in &samples {
        let cells: Vec<String> = s.iter().map(i64::to_string).collect();
        t += &format!("| {at} | {} |\n", cells.join(" | "));
    }
    let start = samples[0].1;
    // RSS against the reading after the first 100 cycles: the first cycles pay once for what
    // the daemon keeps for its life (allocator arenas of the threads that served them, the
    // image's config read and cached, the CNI configuration loaded, connection buffers). What
    // grows per pod after that is a leak. The other counts are held to the start itself; one
    // that moved is shown against cycle 100 too, which tells a one-off from a growth.
    let base = samples
        .iter()
        .find(|(at, _)| *at == SOAK_SAMPLE_EVERY && *at < n)
        .map_or(("start", start), |(_, s)| ("cycle 100", *s));
    let mut back = Vec::new();
    let mut moved = Vec::new();
    for (i, c) in COLUMNS.iter().enumerate().take(RSS) {
        if end[i] == start[i] {
            back.push(*c);
        } else {
            moved.push(format!(
                "{c} {:+} ({} -> {}; {:+} against {})",
                end[i] - start[i],
                start[i],
                end[i],
                end[i] - base.1[i],
                base.0
            ));
        }
    }
    let rss_delta = end[RSS] - base.1[RSS];
    let anon_delta = end[ANON] - base.1[ANON];
    let rss_ok = rss_delta.abs() <= 1024;
    t += &format!(
        "\n{}: back to their start: {}. NOT back: {}. RSS {} KiB at the end, {:+} KiB against {} ({} KiB; anon {:+} KiB), {:+} KiB against the start: {}. Pod cgroup directories (one per hierarchy) the runtime left for the kubelet to remove: {left_for_kubelet}; cycles whose container was seen in its pod cgroup while it ran: {seen}.\n",
        r.name,
        if back.is_empty() {
            "none".to_owned()
        } else {
            back.join(", ")
        },
        if moved.is_empty() {
            "none".to_owned()
        } else {
            moved.join(", ")
        },
        end[RSS],
        rss_delta,
        base.0,
        base.1[RSS],
        anon_delta,
        end[RSS] - start[RSS],
        if rss_ok {
            "within 1 MiB"
        } else {
            "NOT within 1 MiB"
        }
    );
    let kinds_end = fd_kinds_and_threads(node.pid);
    t += &format!(
        "{}'s fds by what they point at and threads by name, at the end against the start: {}; against cycle {SOAK_SAMPLE_EVERY}: {}.\n",
        r.name,
        kinds_moved(&kinds_start, &kinds_end),
        kinds_moved(&kinds_base, &kinds_end)
    );
    if !errors.is_empty() {
        t += &format!("first failures: {}\n", errors.join(" / "));
    }
    report(t);
    extra_kib_row(
        &r.name,
        &format!(
            "soak: daemon RSS at the end against {} ({n} cycles)",
            base.0
        ),
        rss_delta as f64,
    );
    Ok(per_cycle)
}

/// Calls of one RPC in the load: each one's milliseconds, those that failed, the first errors.
#[derive(Default)]
struct Calls {
    ms: Vec<f64>,
    failed: usize,
    errors: Vec<String>,
}

type Stats = BTreeMap<&'static str, Calls>;

fn fail(s: &mut Stats, rpc: &'static str, why: String) {
    let c = s.entry(rpc).or_default();
    c.failed += 1;
    if c.errors.len() < 3 {
        c.errors.push(why);
    }
}

/// Times one call and counts it under `rpc`; its answer when it succeeded.
async fn call<T>(
    s: &mut Stats,
    rpc: &'static str,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    let t = Instant::now();
    let r = f.await;
    s.entry(rpc)
        .or_default()
        .ms
        .push(t.elapsed().as_secs_f64() * 1000.0);
    match r {
        Ok(v) => Some(v.into_inner()),
        Err(st) => {
            fail(s, rpc, format!("{:?}: {}", st.code(), st.message()));
            None
        }
    }
}

/// A small deterministic generator (xorshift64*): each client's mix of calls is the same from
/// run to run and runtime to runtime.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// The running pods (pod id, container id) the clients read and exec into.
type Targets = Arc<Vec<(String, String)>>;

/// One load client on a connection of its own: a pod of its own, then calls back to back until
/// `until`, then its pod removed. Out of 20 calls: 3 PodSandboxStatus, 3 ContainerStatus,
/// 2 ListPodSandbox, 2 ListContainers, 1 ListContainerStats, 4 ExecSync, 4 container lifecycles
/// in its own pod (create, start, stop, remove: four calls), 1 PullImage of the bench image.
async fn load_client(
    name: String,
    endpoint: String,
    handler: String,
    k: usize,
    targets: Targets,
    image: String,
    until: Instant,
) -> Result<Stats> {
    let mut r = connect(&name, &endpoint, None).await?;
    r.handler = handler;
    let mut s = Stats::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (k as u64 + 1).wrapping_mul(0x1000_0000_01b3));
    let cfg = pod_config(&unique(&format!("load-client-{k}")));
    let t = Instant::now();
    let own = match r.run_pod_with(cfg).await {
        Ok(p) => {
            s.entry("RunPodSandbox")
                .or_default()
                .ms
                .push(t.elapsed().as_secs_f64() * 1000.0);
            Some(p)
        }
        Err(e) => {
            fail(&mut s, "RunPodSandbox", format!("{e:#}"));
            None
        }
    };
    while Instant::now() < until {
        let (pod, ctr) = &targets[rng.below(targets.len())];
        match rng.below(20) {
            0..=2 => {
                call(
                    &mut s,
                    "PodSandboxStatus",
                    r.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                        pod_sandbox_id: pod.clone(),
                        verbose: false,
                    }),
                )
                .await;
            }
            3..=5 => {
                call(
                    &mut s,
                    "ContainerStatus",
                    r.rt.container_status(cri::ContainerStatusRequest {
                        container_id: ctr.clone(),
                        verbose: false,
                    }),
                )
                .await;
            }
            6..=7 => {
                call(
                    &mut s,
                    "ListPodSandbox",
                    r.rt.list_pod_sandbox(cri::ListPodSandboxRequest::default()),
                )
                .await;
            }
            8..=9 => {
                call(
                    &mut s,
                    "ListContainers",
                    r.rt.list_containers(cri::ListContainersRequest::default()),
                )
                .await;
            }
            10 => {
                call(
                    &mut s,
                    "ListContainerStats",
                    r.rt.list_container_stats(cri::ListContainerStatsRequest::default()),
                )
                .await;
            }
            11..=14 => {
                let out = call(
                    &mut s,
                    "ExecSync",
                    r.rt.exec_sync(cri::ExecSyncRequest {
                        container_id: ctr.clone(),
                        cmd: vec!["true".into()],
                        timeout: 30,
                    }),
                )
                .await;
                if let Some(out) = out
                    && out.exit_code != 0
                {
                    fail(&mut s, "ExecSync", format!("true exited {}", out.exit_code));
                }
            }
            15..=18 => {
                let Some((own_pod, own_cfg)) = &own else {
                    continue;
                };
                let created = call(
                    &mut s,
                    "CreateContainer",
                    r.rt.create_container(cri::CreateContainerRequest {
                        pod_sandbox_id: own_pod.clone(),
                        config: Some(container_config(&image, &unique("c"))),
                        sandbox_config: Some(own_cfg.clone()),
                    }),
                )
                .await;
                let Some(c) = created.map(|c| c.container_id) else {
                    continue;
                };
                call(
                    &mut s,
                    "StartContainer",
                    r.rt.start_container(cri::StartContainerRequest {
                        container_id: c.clone(),
                    }),
                )
                .await;
                call(
                    &mut s,
                    "StopContainer",
                    r.rt.stop_container(cri::StopContainerRequest {
                        container_id: c.clone(),
                        timeout: 0,
                    }),
                )
                .await;
                call(
                    &mut s,
                    "RemoveContainer",
                    r.rt.remove_container(cri::RemoveContainerRequest { container_id: c }),
                )
                .await;
            }
            _ => {
                call(
                    &mut s,
                    "PullImage",
                    r.img.pull_image(cri::PullImageRequest {
                        image: Some(cri::ImageSpec {
                            image: image.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                )
                .await;
            }
        }
    }
    if let Some((own_pod, _)) = own {
        call(
            &mut s,
            "StopPodSandbox",
            r.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: own_pod.clone(),
            }),
        )
        .await;
        call(
            &mut s,
            "RemovePodSandbox",
            r.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: own_pod,
            }),
        )
        .await;
    }
    Ok(s)
}

/// Runs `n` pods with a container each, 10 at a time, named `load-pod-…`.
async fn populate(r: &Runtime, image: &str, n: usize) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    while out.len() < n {
        let tasks: Vec<_> = (0..(n - out.len()).min(10))
            .map(|_| {
                let mut r = r.clone();
                let image = image.to_owned();
                tokio::spawn(async move {
                    let (pod, cfg) = r.run_pod_with(pod_config(&unique("load-pod"))).await?;
                    let c = r.start_container(&pod, &cfg, &image).await?;
                    Ok::<_, anyhow::Error>((pod, c))
                })
            })
            .collect();
        for t in tasks {
            out.push(t.await??);
        }
    }
    Ok(out)
}

/// Removes pods 10 at a time.
async fn remove_pods(r: &Runtime, pods: Vec<String>) -> Result<()> {
    for chunk in pods.chunks(10) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|p| {
                let mut r = r.clone();
                let p = p.clone();
                tokio::spawn(async move { r.remove_pod(&p).await })
            })
            .collect();
        for t in tasks {
            t.await??;
        }
    }
    Ok(())
}

/// The `load` workload: `--load-pods` pods running, then `--load-clients` clients calling back to
/// back for `--load-secs` (see [`load_client`]), the daemon's RSS, fds and threads read every
/// 10 s, then every pod removed and the runtime asked to list none of them. Prints calls,
/// failures and p50/p99/max per RPC. Returns the calls per second all clients made.
pub async fn load(r: &mut Runtime, a: &Args) -> Result<f64> {
    let pid = r
        .pid
        .with_context(|| format!("load needs --pid {}=PID", r.name))?;
    // The daemon idle with none of the load's pods, before and after: what the load left in it.
    let idle = || -> Result<(f64, usize, usize, f64)> {
        Ok((
            rss_mib(pid)?,
            open_fds(pid),
            threads(pid),
            status_kib(pid, "RssAnon:")? as f64 / 1024.0,
        ))
    };
    tokio::time::sleep(SOAK_SETTLE).await;
    let idle_before = idle()?;
    let t = Instant::now();
    let targets = Arc::new(populate(r, &a.image, a.load_pods).await?);
    eprintln!(
        "  {}: {} pods running after {:.0} s",
        r.name,
        targets.len(),
        t.elapsed().as_secs_f64()
    );
    if targets.is_empty() {
        bail!("load needs --load-pods of at least 1");
    }
    // The soak's counts with pods running: what a leak of each would look like.
    if let Ok(node) = Node::of(r, a) {
        let s = node.read()?;
        report(format!(
            "{} with the load's {} pods running: {}\n",
            r.name,
            targets.len(),
            COLUMNS
                .iter()
                .zip(s)
                .map(|(c, v)| format!("{c} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let mut got = Vec::new();
            loop {
                got.push((
                    began.elapsed().as_secs_f64(),
                    rss_mib(pid).unwrap_or(f64::NAN),
                    open_fds(pid),
                    threads(pid),
                ));
                for _ in 0..100 {
                    if stop.load(Ordering::Relaxed) {
                        return got;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };
    let until = Instant::now() + Duration::from_secs(a.load_secs);
    let began = Instant::now();
    let clients: Vec<_> = (0..a.load_clients)
        .map(|k| {
            tokio::spawn(load_client(
                r.name.clone(),
                r.endpoint.clone(),
                r.handler.clone(),
                k,
                targets.clone(),
                a.image.clone(),
                until,
            ))
        })
        .collect();
    let mut stats = Stats::new();
    let mut client_errors = Vec::new();
    for c in clients {
        match c.await? {
            Ok(s) => {
                for (rpc, c) in s {
                    let all = stats.entry(rpc).or_default();
                    all.ms.extend(c.ms);
                    all.failed += c.failed;
                    for e in c.errors {
                        if all.errors.len() < 3 {
                            all.errors.push(e);
                        }
                    }
                }
            }
            Err(e) => client_errors.push(format!("{e:#}")),
        }
    }
    let secs = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    remove_pods(r, targets.iter().map(|(p, _)| p.clone()).collect()).await?;
    tokio::time::sleep(SOAK_SETTLE).await;
    let idle_after = idle()?;

    // What the runtime still lists of the load's pods and their containers.
    let left_pods: Vec<String> =
        r.rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items
            .into_iter()
            .filter(|p| {
                p.metadata
                    .as_ref()
                    .is_some_and(|m| m.namespace == BENCH_NAMESPACE && m.name.starts_with("load-"))
            })
            .map(|p| p.id)
            .collect();
    let ours: Vec<&String> = targets.iter().map(|(_, c)| c).collect();
    let left_ctrs =
        r.rt.list_containers(cri::ListContainersRequest::default())
            .await?
            .into_inner()
            .containers
            .into_iter()
            .filter(|c| ours.contains(&&c.id) || left_pods.contains(&c.pod_sandbox_id))
            .count();

    let total: usize = stats.values().map(|c| c.ms.len()).sum();
    let failed: usize = stats.values().map(|c| c.failed).sum();
    let mut t = format!(
        "### load on {}: {} clients for {secs:.0} s on {} running pods: {total} calls ({:.1}/s), {failed} failed\n\n",
        r.name,
        a.load_clients,
        targets.len(),
        total as f64 / secs
    );
    t += "| RPC | calls | failed | p50 | p99 | max |\n|---|---|---|---|---|---|\n";
    for (rpc, c) in &stats {
        let max = c.ms.iter().copied().fold(0.0, f64::max);
        t += &format!(
            "| {rpc} | {} | {} | {:.2} ms | {:.2} ms | {max:.2} ms |\n",
            c.ms.len(),
            c.failed,
            percentile(&c.ms, 50.0),
            percentile(&c.ms, 99.0)
        );
        if a.load_clients > 0 {
            extra_ms_row(
                &r.name,
                &format!(
                    "load: p99 {rpc} ({} clients, {} pods)",
                    a.load_clients,
                    targets.len()
                ),
                &[percentile(&c.ms, 99.0)],
            );
        }
    }
    for (rpc, c) in &stats {
        if !c.errors.is_empty() {
            t += &format!("\n{rpc} failures (first): {}", c.errors.join(" / "));
        }
    }
    if !client_errors.is_empty() {
        t += &format!(
            "\nclients that never started: {}",
            client_errors.join(" / ")
        );
    }
    // Bounded: what the second half of the run reaches, the first half reached already (RSS
    // with 1 MiB of slack, as the soak's). The first reading, before any client connected, is
    // in neither half.
    let under_load = samples.get(1..).unwrap_or_default();
    let (first, second) = under_load.split_at(under_load.len() / 2);
    let max_of = |s: &[(f64, f64, usize, usize)], f: fn(&(f64, f64, usize, usize)) -> f64| {
        s.iter().map(f).fold(f64::NAN, f64::max)
    };
    let row = |label: &str, f: fn(&(f64, f64, usize, usize)) -> f64, slack: f64| -> String {
        let (m1, m2) = (max_of(first, f), max_of(second, f));
        let bounded = second.is_empty() || m2 <= m1 + slack;
        format!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |\n",
            samples.first().map_or(f64::NAN, f),
            max_of(&samples, f),
            m1,
            m2,
            samples.last().map_or(f64::NAN, f),
            if bounded { "bounded" } else { "GROWING" }
        )
    };
    t += &format!(
        "\n\ndaemon, read every 10 s ({} readings):\n\n| | first | max | max, first half | max, second half | last | |\n|---|---|---|---|---|---|---|\n",
        samples.len()
    );
    t += &row("RSS MiB", |s| s.1, 1.0);
    t += &row("open fds", |s| s.2 as f64, 0.0);
    t += &row("threads", |s| s.3 as f64, 0.0);
    t += &format!(
        "\nreadings (s: RSS MiB/fds/threads): {}\n",
        samples
            .iter()
            .map(|s| format!("{:.0}: {:.1}/{}/{}", s.0, s.1, s.2, s.3))
            .collect::<Vec<_>>()
            .join(", ")
    );
    t += &format!(
        "\nidle, {} s after the last pod was removed, against idle before the pods came: RSS {:.1} -> {:.1} MiB (anon {:.1} -> {:.1}), fds {} -> {}, threads {} -> {}\n",
        SOAK_SETTLE.as_secs(),
        idle_before.0,
        idle_after.0,
        idle_before.3,
        idle_after.3,
        idle_before.1,
        idle_after.1,
        idle_before.2,
        idle_after.2
    );
    t += &format!(
        "\nafter removing every pod: {} of the load's pods and {left_ctrs} of its containers still listed\n",
        left_pods.len()
    );
    report(t);
    if !left_pods.is_empty() || left_ctrs > 0 {
        bail!(
            "{}: {} load pods and {left_ctrs} containers still listed after their removal",
            r.name,
            left_pods.len()
        );
    }
    Ok(total as f64 / secs)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::{Rng, kinds_moved, mounts_of};

    #[test]
    fn mounts_count_under_the_dir_and_netns_also_under_run_netns() {
        let info = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw
90 25 0:50 / /tmp/w/run rw shared:40 - tmpfs tmpfs rw
91 90 0:4 net:[4026532301] /tmp/w/run/carapace/sandboxes/ab/net rw - nsfs nsfs rw
92 90 0:4 ipc:[4026532302] /tmp/w/run/carapace/sandboxes/ab/ipc rw - nsfs nsfs rw
93 25 0:4 net:[4026532400] /run/netns/cni-1 rw shared:5 - nsfs nsfs rw
94 25 0:51 / /tmp/w2/run rw - tmpfs tmpfs rw
";
        // The work dir's own mounts (not /tmp/w2's), and two network namespaces: one pinned
        // under it, one where containerd pins its pods'.
        assert_eq!(mounts_of(info, Path::new("/tmp/w")), (3, 2));
    }

    #[test]
    fn kinds_moved_names_what_differs_only() {
        let before = BTreeMap::from([("fd socket".to_owned(), 5), ("thread a".to_owned(), 1)]);
        let after = BTreeMap::from([("fd socket".to_owned(), 2), ("thread b".to_owned(), 1)]);
        assert_eq!(
            kinds_moved(&before, &after),
            "fd socket -3, thread a -1, thread b +1"
        );
        assert_eq!(kinds_moved(&after, &after), "none");
    }

    #[test]
    fn rng_spreads_over_its_range() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut seen = [0usize; 20];
        for _ in 0..20_000 {
            seen[r.below(20)] += 1;
        }
        assert!(seen.iter().all(|n| (700..1300).contains(n)), "{seen:?}");
    }
}
