//! `carapace-bench`: one CRI client, the same workloads, several runtimes side by side.
//!
//! Every workload runs against each endpoint in turn, A B A B, so that drift on the machine
//! (page cache, CPU frequency, a noisy neighbour) lands on both runtimes alike. It prints, per
//! workload, p50 and p95 for each runtime and the ratio of the first endpoint to the second.
//! It is a benchmark, not a test: it asserts nothing about time.

mod soak;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use carapace_cri_api::v1 as cri;
use carapace_cri_api::v1::image_service_client::ImageServiceClient;
use carapace_cri_api::v1::runtime_service_client::RuntimeServiceClient;

const USAGE: &str = "usage: carapace-bench --endpoint NAME=unix:///PATH --endpoint NAME=unix:///PATH \
[--pid NAME=PID]... [--handler NAME=HANDLER]... --image REF [--pull-image REF] [--rounds N] [--pods N] [--churn N] [--poll-secs N] [--only w1,w2] [--no-restart]
[--soak-cycles N] [--load-clients N] [--load-secs N] [--load-pods N] [--work-dir DIR] [--bridge NAME] [--network NAME]
workloads: pod-start pod-start-userns pod-stop-remove container-start container-stop-remove churn churn-parallel exec-sync list pull memory poll-cpu,
and only when named in --only: soak load (once per runtime; both need --pid, soak also --work-dir, the dir both runtimes' root and state are under)
(--handler runs NAME's pods with that runtime handler, e.g. the same socket twice as
builtin= and runc= with --handler runc=runc; one --endpoint is enough for a single runtime's numbers; poll-cpu needs its --pid; the populated
workloads restart each daemon with its pods running, from its --pid's command line, unless --no-restart)";

struct Args {
    endpoints: Vec<(String, String)>,
    pids: BTreeMap<String, u32>,
    /// The runtime handler each endpoint's pods ask for (`""` when not named).
    handlers: BTreeMap<String, String>,
    image: String,
    pull_image: Option<String>,
    rounds: usize,
    pods: usize,
    churn: usize,
    poll_secs: u64,
    only: Option<Vec<String>>,
    /// Whether each populated pass restarts the daemons with their pods running.
    restart: bool,
    soak_cycles: usize,
    load_clients: usize,
    load_secs: u64,
    load_pods: usize,
    /// The dir the runtimes' root and state dirs are under (run.sh's work dir): the soak counts
    /// the mounts there.
    work_dir: Option<PathBuf>,
    /// The bridge and the CNI network name of the pods' network, as run.sh configures it.
    bridge: String,
    network: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        endpoints: Vec::new(),
        pids: BTreeMap::new(),
        handlers: BTreeMap::new(),
        image: String::new(),
        pull_image: None,
        rounds: 10,
        pods: 100,
        churn: 50,
        poll_secs: 60,
        only: None,
        restart: true,
        soak_cycles: 1000,
        load_clients: 50,
        load_secs: 300,
        load_pods: 100,
        work_dir: None,
        bridge: "cbench0".into(),
        network: "carapace-bench".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--endpoint" => {
                let v = val()?;
                let (n, e) = v.split_once('=').context("--endpoint NAME=unix:///PATH")?;
                a.endpoints.push((n.to_owned(), e.to_owned()));
            }
            "--pid" => {
                let v = val()?;
                let (n, p) = v.split_once('=').context("--pid NAME=PID")?;
                a.pids.insert(n.to_owned(), p.parse().context("--pid")?);
            }
            "--handler" => {
                let v = val()?;
                let (n, h) = v.split_once('=').context("--handler NAME=HANDLER")?;
                a.handlers.insert(n.to_owned(), h.to_owned());
            }
            "--image" => a.image = val()?,
            "--pull-image" => a.pull_image = Some(val()?),
            "--rounds" => a.rounds = val()?.parse()?,
            "--pods" => a.pods = val()?.parse()?,
            "--churn" => a.churn = val()?.parse()?,
            "--poll-secs" => a.poll_secs = val()?.parse()?,
            "--only" => a.only = Some(val()?.split(',').map(str::to_owned).collect()),
            "--no-restart" => a.restart = false,
            "--soak-cycles" => a.soak_cycles = val()?.parse()?,
            "--load-clients" => a.load_clients = val()?.parse()?,
            "--load-secs" => a.load_secs = val()?.parse()?,
            "--load-pods" => a.load_pods = val()?.parse()?,
            "--work-dir" => a.work_dir = Some(val()?.into()),
            "--bridge" => a.bridge = val()?,
            "--network" => a.network = val()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if a.endpoints.is_empty() || a.endpoints.len() > 2 || a.image.is_empty() {
        bail!("{USAGE}");
    }
    Ok(a)
}

/// A connection to one runtime.
#[derive(Clone)]
struct Runtime {
    name: String,
    endpoint: String,
    /// The daemon's pid (from `--pid`), followed across the restart the populated pass makes.
    pid: Option<u32>,
    /// The runtime handler its pods ask for.
    handler: String,
    rt: RuntimeServiceClient<H2>,
    img: ImageServiceClient<H2>,
}

async fn connect(name: &str, endpoint: &str, pid: Option<u32>) -> Result<Runtime> {
    let path = endpoint
        .strip_prefix("unix://")
        .with_context(|| format!("{endpoint}: only unix:// endpoints"))?
        .to_owned();
    let io = tokio::net::UnixStream::connect(&path)
        .await
        .with_context(|| format!("connecting to {name} at {endpoint}"))?;
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .with_context(|| format!("HTTP/2 with {name} at {endpoint}"))?;
    tokio::spawn(conn);
    let ch = H2 { send };
    Ok(Runtime {
        name: name.to_owned(),
        endpoint: endpoint.to_owned(),
        pid,
        handler: String::new(),
        rt: RuntimeServiceClient::new(ch.clone()),
        img: ImageServiceClient::new(ch),
    })
}

/// The client side of one HTTP/2 connection, with no request queue in front of it.
///
/// tonic's `Channel` hands each call to a queue task that hands it on to the connection task, and
/// on a multi-threaded runtime each hand-over can wake another thread: about 80 µs a call here,
/// the same for every runtime measured, which only blurred what the runtimes themselves take.
/// Calls go straight to the connection (the bench runs on one thread, so no hand-over wakes
/// another).
#[derive(Clone)]
struct H2 {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
}

/// A call that takes longer has hung (a pull of the largest bench image takes seconds).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.send.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        // tonic gives the path only; HTTP/2 wants a scheme and an authority beside it.
        let uri = http::Uri::builder()
            .scheme("http")
            .authority("bench.invalid")
            .path_and_query(req.uri().path())
            .build();
        let sent = uri.map(|uri| {
            *req.uri_mut() = uri;
            self.send.send_request(req)
        });
        Box::pin(async move {
            let resp = tokio::time::timeout(CALL_TIMEOUT, sent?).await;
            Ok(resp.map_err(|_| "no answer within 300 s")??)
        })
    }
}

/// Samples of one workload on one runtime, in milliseconds (or MiB for memory rows).
type Samples = Vec<f64>;

/// The `p`th percentile, interpolated between the two nearest samples (numpy's default). The
/// nearest-rank rule this replaced read the larger of two samples as their p50, and the rows
/// sampled once per pass (memory, churn, poll-cpu) have two samples per runtime.
fn percentile(s: &[f64], p: f64) -> f64 {
    if s.is_empty() {
        return f64::NAN;
    }
    let mut v = s.to_vec();
    v.sort_by(f64::total_cmp);
    // Clamped, so both neighbours are within the samples.
    let at = (p / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:x}-{n}", t & 0xffff_ffff)
}

/// The namespace of every pod the bench makes, so a failed pass's pods can be found and removed.
const BENCH_NAMESPACE: &str = "carapace-bench";
/// List calls timed per round of the `list` workload.
const LIST_SAMPLES: usize = 50;

fn pod_config(name: &str) -> cri::PodSandboxConfig {
    let uid = unique("uid");
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_owned(),
            uid: uid.clone(),
            namespace: BENCH_NAMESPACE.into(),
            attempt: 0,
        }),
        hostname: name.chars().take(60).collect(),
        log_directory: format!("/tmp/carapace-bench-logs/{uid}"),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(image: &str, name: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig {
            // The kubelet repeats the pod's namespace modes for each container.
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the kubelet sends for a pod without shareProcessNamespace: each container its own PID
/// namespace (the zero value, POD, is the shared one).
fn namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        pid: cri::NamespaceMode::Container as i32,
        ..Default::default()
    }
}

impl Runtime {
    async fn run_pod(&mut self) -> Result<(String, cri::PodSandboxConfig)> {
        self.run_pod_with(pod_config(&unique("pod"))).await
    }

    /// A pod with a user namespace of its own (`hostUsers: false`), mapped as the kubelet maps
    /// one: 65536 ids from a multiple of 65536 (the same range each time: one pod at a time).
    async fn run_pod_in_userns(&mut self) -> Result<(String, cri::PodSandboxConfig)> {
        let mut cfg = pod_config(&unique("pod"));
        let range = cri::IdMapping {
            container_id: 0,
            host_id: 3000 * 65536,
            length: 65536,
        };
        if let Some(ns) = cfg
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.userns_options = Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Pod as i32,
                uids: vec![range],
                gids: vec![range],
            });
        }
        self.run_pod_with(cfg).await
    }

    async fn run_pod_with(
        &mut self,
        cfg: cri::PodSandboxConfig,
    ) -> Result<(String, cri::PodSandboxConfig)> {
        let id = self
            .rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: self.handler.clone(),
            })
            .await
            .with_context(|| format!("{}: RunPodSandbox", self.name))?
            .into_inner()
            .pod_sandbox_id;
        Ok((id, cfg))
    }

    async fn remove_pod(&mut self, id: &str) -> Result<()> {
        self.rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .with_context(|| format!("{}: StopPodSandbox", self.name))?;
        self.rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .with_context(|| format!("{}: RemovePodSandbox", self.name))?;
        Ok(())
    }

    /// Removes every bench pod still there: a pass that failed half-way leaves its pods, and a
    /// runtime stopped with pods (containerd's shims and pause processes) leaks their netns.
    async fn remove_leftover_pods(&mut self) -> Result<()> {
        let items = self
            .rt
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .with_context(|| format!("{}: ListPodSandbox", self.name))?
            .into_inner()
            .items;
        for p in items {
            if p.metadata.is_some_and(|m| m.namespace == BENCH_NAMESPACE) {
                self.remove_pod(&p.id).await?;
            }
        }
        Ok(())
    }

    /// Create + start a container in `pod`, returning its id once it runs.
    async fn start_container(
        &mut self,
        pod: &str,
        pod_cfg: &cri::PodSandboxConfig,
        image: &str,
    ) -> Result<String> {
        let id = self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.to_owned(),
                config: Some(container_config(image, &unique("c"))),
                sandbox_config: Some(pod_cfg.clone()),
            })
            .await
            .with_context(|| format!("{}: CreateContainer", self.name))?
            .into_inner()
            .container_id;
        self.rt
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .with_context(|| format!("{}: StartContainer", self.name))?;
        loop {
            let st = self
                .rt
                .container_status(cri::ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                })
                .await?
                .into_inner()
                .status
                .context("ContainerStatus without status")?;
            match cri::ContainerState::try_from(st.state) {
                Ok(cri::ContainerState::ContainerRunning) => return Ok(id),
                Ok(cri::ContainerState::ContainerExited) => {
                    bail!("{}: container exited", self.name)
                }
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    /// StopContainer with no grace (SIGKILL at once, as the kubelet's force delete) then
    /// RemoveContainer.
    async fn stop_remove_container(&mut self, id: &str) -> Result<()> {
        self.rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_owned(),
                timeout: 0,
            })
            .await
            .with_context(|| format!("{}: StopContainer", self.name))?;
        self.rt
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.to_owned(),
            })
            .await
            .with_context(|| format!("{}: RemoveContainer", self.name))?;
        Ok(())
    }

    async fn ensure_image(&mut self, image: &str) -> Result<()> {
        self.img
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .with_context(|| format!("{}: PullImage {image}", self.name))?;
        Ok(())
    }
}

async fn timed<F, T>(f: F) -> Result<(T, f64)>
where
    F: std::future::Future<Output = Result<T>>,
{
    let t = Instant::now();
    let v = f.await?;
    Ok((v, t.elapsed().as_secs_f64() * 1000.0))
}

/// One pass of `workload` on `r`; returns samples.
async fn pass(r: &mut Runtime, workload: &str, a: &Args, rounds: usize) -> Result<Samples> {
    let mut s = Vec::new();
    match workload {
        "pod-start" => {
            for _ in 0..rounds {
                let ((id, _), ms) = timed(r.run_pod()).await?;
                s.push(ms);
                r.remove_pod(&id).await?;
            }
        }
        "pod-start-userns" => {
            for _ in 0..rounds {
                let ((id, _), ms) = timed(r.run_pod_in_userns()).await?;
                s.push(ms);
                r.remove_pod(&id).await?;
            }
        }
        "pod-stop-remove" => {
            for _ in 0..rounds {
                let (id, _) = r.run_pod().await?;
                let (_, ms) = timed(r.remove_pod(&id)).await?;
                s.push(ms);
            }
        }
        "container-start" => {
            let (pod, cfg) = r.run_pod().await?;
            for _ in 0..rounds {
                let (_, ms) = timed(r.start_container(&pod, &cfg, &a.image)).await?;
                s.push(ms);
            }
            r.remove_pod(&pod).await?;
        }
        "container-stop-remove" => {
            let (pod, cfg) = r.run_pod().await?;
            for _ in 0..rounds {
                let c = r.start_container(&pod, &cfg, &a.image).await?;
                let (_, ms) = timed(r.stop_remove_container(&c)).await?;
                s.push(ms);
            }
            r.remove_pod(&pod).await?;
        }
        "churn" => {
            let (_, ms) = timed(async {
                for _ in 0..a.churn {
                    let (pod, cfg) = r.run_pod().await?;
                    r.start_container(&pod, &cfg, &a.image).await?;
                    r.remove_pod(&pod).await?;
                }
                Ok(())
            })
            .await?;
            s.push(ms / a.churn as f64);
        }
        "churn-parallel" => {
            let (_, ms) = timed(async {
                let mut left = a.churn;
                while left > 0 {
                    let batch = left.min(10);
                    left -= batch;
                    let mut tasks = Vec::new();
                    for _ in 0..batch {
                        let mut r = r.clone();
                        let image = a.image.clone();
                        tasks.push(tokio::spawn(async move {
                            let (pod, cfg) = r.run_pod().await?;
                            r.start_container(&pod, &cfg, &image).await?;
                            r.remove_pod(&pod).await
                        }));
                    }
                    for t in tasks {
                        t.await??;
                    }
                }
                Ok(())
            })
            .await?;
            s.push(ms / a.churn as f64);
        }
        "exec-sync" => {
            let (pod, cfg) = r.run_pod().await?;
            let c = r.start_container(&pod, &cfg, &a.image).await?;
            for _ in 0..rounds {
                let (_, ms) = timed(async {
                    let out =
                        r.rt.exec_sync(cri::ExecSyncRequest {
                            container_id: c.clone(),
                            cmd: vec!["true".into()],
                            timeout: 10,
                        })
                        .await?
                        .into_inner();
                    if out.exit_code != 0 {
                        bail!("true exited {}", out.exit_code);
                    }
                    Ok(())
                })
                .await?;
                s.push(ms);
            }
            r.remove_pod(&pod).await?;
        }
        "pull" => {
            let Some(image) = a.pull_image.clone() else {
                return Ok(s);
            };
            for _ in 0..rounds.min(3) {
                let spec = cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                };
                // Removal lets the runtime collect the content, so the pull fetches it again.
                let _ = r
                    .img
                    .remove_image(cri::RemoveImageRequest {
                        image: Some(spec.clone()),
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let (_, ms) = timed(r.ensure_image(&image)).await?;
                s.push(ms);
            }
        }
        "soak" => s.push(soak::soak(r, a).await?),
        "load" => s.push(soak::load(r, a).await?),
        other => bail!("unknown workload {other}\n{USAGE}"),
    }
    Ok(s)
}

/// The workloads that take minutes: run only when `--only` names them, one pass per runtime
/// (see `soak.rs`).
const ONCE: [&str; 2] = ["soak", "load"];

/// The workloads measured on a node with `--pods` pods running, one container each. They share
/// one population per pass (bringing 100 pods up and down on containerd takes a minute), in
/// this order: memory (its baseline is read before the pods come), list, poll-cpu, then the rows
/// every populated pass adds (starts, stats lists and a restart with the pods running).
const POPULATED: [&str; 3] = ["memory", "list", "poll-cpu"];

/// Pod counts at which a populated pass reads the daemon's RSS on the way up, so its growth per
/// pod can be compared across node sizes (`--pods` itself is read too).
const RSS_CHECKPOINTS: [usize; 3] = [50, 100, 250];

/// Pod and container starts timed per populated pass with the population running.
const POPULATED_STARTS: usize = 10;

/// Timed `ListPodSandboxStats` + `ListContainerStats` calls per populated pass.
const STATS_SAMPLES: usize = 20;

/// One pass of the populated workloads in `wanted` on `r`; returns samples per workload.
async fn populated_pass(
    r: &mut Runtime,
    wanted: &[&str],
    a: &Args,
    rounds: usize,
) -> Result<BTreeMap<String, Samples>> {
    let mut out = BTreeMap::new();
    wait_quiet(&format!("  {}: node quiet", r.name)).await?;
    // Settling takes seconds: only when the memory row is wanted.
    let memory = wanted.contains(&"memory");
    let before = if memory {
        settled_mem_used_mib().await?
    } else {
        0.0
    };
    let helpers_before = helpers_mib()?;
    let daemon_before = match r.pid {
        Some(pid) => Some(rss_mib(pid)?),
        None => None,
    };
    let fds_before = r.pid.map(open_fds).unwrap_or(0);
    let mut populated = None;
    let mut pods = Vec::new();
    for k in 1..=a.pods {
        let (pod, cfg) = r.run_pod().await?;
        r.start_container(&pod, &cfg, &a.image).await?;
        pods.push(pod);
        if let (Some(pid), Some(daemon_before)) = (r.pid, daemon_before)
            && (RSS_CHECKPOINTS.contains(&k) || k == a.pods)
        {
            // What the daemon holds per pod it knows of, at several node sizes: growth faster
            // than linear shows as a per-pod figure rising with the count.
            let daemon = rss_mib(pid)?;
            let per_pod_kib = (daemon - daemon_before) * 1024.0 / k as f64;
            let fds = open_fds(pid);
            eprintln!(
                "  {}: daemon with {k} pods: RSS {daemon:.1} MiB ({per_pod_kib:.1} KiB/pod above idle), {fds} open fds ({} before the pods), {} threads",
                r.name,
                fds_before,
                threads(pid)
            );
            extra_kib_row(
                &r.name,
                &format!("daemon RSS growth per pod, at {k} pods"),
                per_pod_kib,
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    if memory {
        // Memory the node lost per running pod (+ one container), all processes and kernel
        // objects included: what an operator pays for each pod on this runtime.
        let after = settled_mem_used_mib().await?;
        let n = a.pods.max(1) as f64;
        populated = Some(after);
        let (rss, pss) = helpers_mib()?;
        let (helper_rss, helper_pss) = ((rss - helpers_before.0) / n, (pss - helpers_before.1) / n);
        eprintln!(
            "  {}: per-pod helper processes (shim/pause or monitor/infra): RSS {helper_rss:.2} MiB, PSS {helper_pss:.2} MiB",
            r.name
        );
        extra_row(
            &r.name,
            "helper RSS per pod (shim + pause / monitor + infra)",
            helper_rss,
        );
        extra_row(
            &r.name,
            "helper PSS per pod (shim + pause / monitor + infra)",
            helper_pss,
        );
        if let (Some(pid), Some(daemon_before)) = (r.pid, daemon_before) {
            let daemon = rss_mib(pid)?;
            extra_row(&r.name, &format!("daemon RSS with {} pods", a.pods), daemon);
            // What issue 8 calls the per-pod overhead: the processes the runtime adds for each
            // pod and what the daemon grows by per pod, in RSS as `ps` shows it.
            extra_row(
                &r.name,
                "memory overhead per pod, RSS (helpers per pod + daemon growth per pod)",
                helper_rss + (daemon - daemon_before) / n,
            );
        }
    }
    if wanted.contains(&"list") {
        // The pods' own start-up work (and the runtime's) is over before lists are timed.
        wait_quiet(&format!("  {}: quiet again", r.name)).await?;
        out.insert("list".to_owned(), list_samples(r, rounds).await?);
        stats_samples(r, a.pods).await?;
    }
    if wanted.contains(&"poll-cpu") {
        out.insert("poll-cpu".to_owned(), vec![poll_cpu(r, a).await?]);
    }
    if a.pods > 0 {
        populated_starts(r, a).await?;
        if a.restart {
            restart(r, a.pods).await?;
        }
    }
    for p in pods {
        r.remove_pod(&p).await?;
    }
    if let Some(after) = populated {
        // The baseline is the mean of the readings before the pods came and after they went:
        // the node's own memory drifts over a pass (the other runtime handing memory back,
        // caches of the previous workloads), and a drift that one reading would charge to the
        // pods cancels out between two.
        let end = settled_mem_used_mib().await?;
        let per_pod = (after - (before + end) / 2.0) / a.pods.max(1) as f64;
        out.insert("memory".to_owned(), vec![per_pod]);
        eprintln!(
            "  {}: node memory used per pod: {per_pod:.2} MiB ({before:.0} -> {after:.0} -> {end:.0} MiB)",
            r.name
        );
    }
    Ok(out)
}

/// Pod starts and container starts timed with the population running: what a node that is
/// already full of pods makes a new one wait. Each new pod is removed before the next.
async fn populated_starts(r: &mut Runtime, a: &Args) -> Result<()> {
    wait_quiet(&format!("  {}: quiet before the starts", r.name)).await?;
    let (mut pod_ms, mut ctr_ms) = (Vec::new(), Vec::new());
    for _ in 0..POPULATED_STARTS {
        let ((pod, cfg), ms) = timed(r.run_pod()).await?;
        pod_ms.push(ms);
        let (_, ms) = timed(r.start_container(&pod, &cfg, &a.image)).await?;
        ctr_ms.push(ms);
        r.remove_pod(&pod).await?;
    }
    eprintln!(
        "  {}: with {} pods running: p50 pod start {:.2} ms, container start {:.2} ms",
        r.name,
        a.pods,
        percentile(&pod_ms, 50.0),
        percentile(&ctr_ms, 50.0)
    );
    let n = a.pods;
    extra_ms_row(
        &r.name,
        &format!("pod-start with {n} pods running"),
        &pod_ms,
    );
    extra_ms_row(
        &r.name,
        &format!("container-start with {n} pods running"),
        &ctr_ms,
    );
    Ok(())
}

/// Timed `ListPodSandboxStats` and `ListContainerStats` on the pods present, each call on its
/// own: what the kubelet's stats provider asks every 10 s.
async fn stats_samples(r: &mut Runtime, pods: usize) -> Result<()> {
    let (mut ps, mut cs) = (Vec::new(), Vec::new());
    for _ in 0..STATS_SAMPLES {
        // containerd 1.6 refuses pod stats for pods without a cgroup parent (the bench gives
        // none): no sample for it then, rather than the time of a refusal.
        let t = Instant::now();
        if r.rt
            .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
            .await
            .is_ok()
        {
            ps.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (_, b) = timed(async {
            r.rt.list_container_stats(cri::ListContainerStatsRequest::default())
                .await?;
            Ok(())
        })
        .await?;
        cs.push(b);
    }
    extra_ms_row(&r.name, &format!("ListPodSandboxStats, {pods} pods"), &ps);
    extra_ms_row(&r.name, &format!("ListContainerStats, {pods} pods"), &cs);
    Ok(())
}

/// Restarts the daemon with its pods running (SIGTERM, as `systemctl restart` does, then the
/// same command line, working directory and log) and times from the new process's start to its
/// first `ListContainers` that answers with every container: how long a kubelet waits after an
/// upgrade or a crash-loop of the runtime before it sees its node again.
async fn restart(r: &mut Runtime, pods: usize) -> Result<()> {
    let Some(pid) = r.pid else {
        return Ok(());
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))?;
    let log = std::fs::read_link(format!("/proc/{pid}/fd/2"))?;
    let (prog, args) = argv.split_first().context("empty daemon command line")?;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let stopping = Instant::now();
    while alive(pid) {
        if stopping.elapsed() > Duration::from_secs(30) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = std::fs::OpenOptions::new().append(true).open(&log)?;
    let started = Instant::now();
    let child = std::process::Command::new(prog)
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("restarting {}", r.name))?;
    let new_pid = child.id();
    // Not waited for: run.sh stops it with the others (by its configuration file).
    drop(child);
    // What the last try saw, for the failure message: a restart that never answers is rare (once
    // in 12 with 250 pods) and its cause was lost with the work dir.
    let mut last = String::from("no connection");
    let ms = loop {
        if started.elapsed() > Duration::from_secs(120) {
            let state = if alive(new_pid) { "running" } else { "gone" };
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} did not answer within 120 s of its restart (new pid {new_pid} {state}; last try: {last}); the end of its log:\n{}",
                r.name,
                tail.join("\n")
            );
        }
        let listed = match connect(&r.name, &r.endpoint, Some(new_pid)).await {
            Ok(mut c) => match c
                .rt
                .list_containers(cri::ListContainersRequest::default())
                .await
            {
                Ok(l) => Some((c, l.into_inner().containers.len())),
                Err(e) => {
                    last = format!("ListContainers: {}", e.message());
                    None
                }
            },
            Err(e) => {
                last = format!("{e:#}");
                None
            }
        };
        if let Some((mut c, n)) = listed {
            last = format!("{n} of {pods} containers listed");
            if n < pods {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            c.handler = std::mem::take(&mut r.handler);
            *r = c;
            break ms;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!(
        "  {}: restarted with {pods} pods running: first full ListContainers after {ms:.0} ms",
        r.name
    );
    extra_ms_row(
        &r.name,
        &format!("restart to first full ListContainers, {pods} pods running"),
        &[ms],
    );
    Ok(())
}

/// How many fds `pid` has open (0 if it cannot be read).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// How many threads `pid` has (0 if it cannot be read).
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Whether `pid` still runs (a zombie has stopped: its parent, run.sh, reaps it later).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|st| {
            st.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
        .unwrap_or(false)
}

/// Timed `ListPodSandbox` + `ListContainers` pairs on the pods present.
async fn list_samples(r: &mut Runtime, rounds: usize) -> Result<Samples> {
    let mut s = Vec::new();
    // A list is quick and the kubelet repeats it every second: many samples per pass, so p50 is
    // the steady state rather than the first calls after 100 pods came up. Each call on its own
    // too, and `Version` (no work in any runtime) as the floor the transport and this client
    // set, so a reader can tell the runtime's share apart.
    // The answers' sizes: the client decodes every byte, so a runtime that says more per item
    // pays for it in this row.
    {
        use prost::Message;
        let p =
            r.rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await?
                .into_inner();
        let c =
            r.rt.list_containers(cri::ListContainersRequest::default())
                .await?
                .into_inner();
        eprintln!(
            "  {}: ListPodSandbox answer {} bytes ({} items), ListContainers {} bytes ({} items)",
            r.name,
            p.encoded_len(),
            p.items.len(),
            c.encoded_len(),
            c.containers.len()
        );
    }
    let (mut lps, mut lc, mut ver) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds * LIST_SAMPLES {
        let (_, a) = timed(async {
            r.rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await?;
            Ok(())
        })
        .await?;
        let (_, b) = timed(async {
            r.rt.list_containers(cri::ListContainersRequest::default())
                .await?;
            Ok(())
        })
        .await?;
        let (_, v) = timed(async {
            r.rt.version(cri::VersionRequest::default()).await?;
            Ok(())
        })
        .await?;
        s.push(a + b);
        lps.push(a);
        lc.push(b);
        ver.push(v);
    }
    eprintln!(
        "  {}: p50 ListPodSandbox {:.3} ms, ListContainers {:.3} ms, Version {:.3} ms",
        r.name,
        percentile(&lps, 50.0),
        percentile(&lc, 50.0),
        percentile(&ver, 50.0)
    );
    extra_ms_row(
        &r.name,
        "Version (no work: the transport and client floor)",
        &ver,
    );
    Ok(s)
}

/// The daemon's CPU over `poll_secs` of kubelet-like polling of the pods present:
/// ListPodSandbox + ListContainers every second, ListContainerStats + ListPodSandboxStats every
/// 10 s. Returns CPU milliseconds per minute.
async fn poll_cpu(r: &mut Runtime, a: &Args) -> Result<f64> {
    let pid = r
        .pid
        .with_context(|| format!("poll-cpu needs --pid {}=PID", r.name))?;
    let cpu0 = cpu_seconds(pid)?;
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(a.poll_secs) {
        tick.tick().await;
        r.rt.list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await?;
        r.rt.list_containers(cri::ListContainersRequest::default())
            .await?;
        if n % 10 == 0 {
            r.rt.list_container_stats(cri::ListContainerStatsRequest::default())
                .await?;
            // containerd 1.6 refuses pod stats for pods without a cgroup parent (the bench gives
            // none); its refusal still costs it the call, so go on.
            let _ =
                r.rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest::default())
                    .await;
        }
        n += 1;
    }
    let used = cpu_seconds(pid)? - cpu0;
    let per_minute = used * 60.0 / start.elapsed().as_secs_f64();
    eprintln!(
        "  {}: {:.2} s daemon CPU over {:.0} s of polling {} pods ({n} rounds)",
        r.name,
        used,
        start.elapsed().as_secs_f64(),
        a.pods
    );
    Ok(per_minute * 1000.0)
}

/// The process's user + system CPU time, from `/proc/<pid>/stat` (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(") ")
        .context("malformed /proc/<pid>/stat")?
        .1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .context("malformed /proc/<pid>/stat")
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

fn unit_of(workload: &str) -> &'static str {
    match workload {
        "memory" => " MiB/pod",
        "poll-cpu" => " ms CPU/min",
        "soak" => " ms/cycle",
        "load" => " calls/s",
        _ => " ms",
    }
}

/// Waits (at most 20 s) until the node's CPUs are idle: the previous pass leaves work behind
/// that runs in the background for seconds after its runtime answered (the kernel tearing down
/// 100 network namespaces, writeback of a pull's layers, a runtime's own clean-up), and a
/// populated pass measured on top of it times that work rather than its own runtime. Dirty pages
/// are written first. Prints `label` with the seconds waited and the last busy share seen.
async fn wait_quiet(label: &str) -> Result<()> {
    const IDLE_ENOUGH: f64 = 0.10;
    let start = Instant::now();
    tokio::task::spawn_blocking(|| {
        let _ = std::process::Command::new("sync").status();
    })
    .await?;
    let mut last = cpu_times()?;
    let mut busy = 1.0;
    let mut quiet = 0;
    while start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu_times()?;
        let (total, idle) = (now.0 - last.0, now.1 - last.1);
        busy = if total > 0.0 { 1.0 - idle / total } else { 0.0 };
        last = now;
        quiet = if busy < IDLE_ENOUGH { quiet + 1 } else { 0 };
        if quiet >= 2 {
            break;
        }
    }
    eprintln!(
        "{label} after {:.1} s (CPUs {:.0} % busy)",
        start.elapsed().as_secs_f64(),
        busy * 100.0
    );
    Ok(())
}

/// All CPUs' (total, idle + iowait) jiffies.
fn cpu_times() -> Result<(f64, f64)> {
    cpu_times_of(&std::fs::read_to_string("/proc/stat")?)
}

/// [`cpu_times`] from the text of /proc/stat.
fn cpu_times_of(stat: &str) -> Result<(f64, f64)> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        bail!("short cpu line in /proc/stat: {line}");
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: f64 = v.iter().take(8).sum();
    Ok((total, v[3] + v[4]))
}

/// The node's used memory once it stops moving: the kernel frees a torn-down pod's network
/// namespace and other objects in the background for seconds after the runtime answered, so a
/// reading taken right after the previous pass's 100 removals (or right after 100 starts) lands
/// anywhere in a ~20 MiB swing. Readings a second apart until three in a row agree within
/// 0.5 MiB, for at most 20 s.
async fn settled_mem_used_mib() -> Result<f64> {
    let mut last = mem_used_mib()?;
    let mut steady = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = mem_used_mib()?;
        steady = if (now - last).abs() < 0.5 {
            steady + 1
        } else {
            0
        };
        last = now;
        if steady >= 2 {
            break;
        }
    }
    Ok(last)
}

fn mem_used_mib() -> Result<f64> {
    let info = std::fs::read_to_string("/proc/meminfo")?;
    let field = |k: &str| -> Result<f64> {
        info.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("{k} missing from /proc/meminfo"))
    };
    Ok((field("MemTotal:")? - field("MemAvailable:")?) / 1024.0)
}

/// Rows measured inside other workloads: (row, runtime, sample, unit).
type Extra = (String, String, f64, &'static str);
static EXTRA: std::sync::Mutex<Vec<Extra>> = std::sync::Mutex::new(Vec::new());

fn extra_row(runtime: &str, row: &str, v: f64) {
    EXTRA.lock().unwrap_or_else(|p| p.into_inner()).push((
        row.to_owned(),
        runtime.to_owned(),
        v,
        " MiB",
    ));
}

fn extra_kib_row(runtime: &str, row: &str, v: f64) {
    EXTRA.lock().unwrap_or_else(|p| p.into_inner()).push((
        row.to_owned(),
        runtime.to_owned(),
        v,
        " KiB",
    ));
}

fn extra_ms_row(runtime: &str, row: &str, samples: &[f64]) {
    let mut e = EXTRA.lock().unwrap_or_else(|p| p.into_inner());
    for v in samples {
        e.push((row.to_owned(), runtime.to_owned(), *v, " ms"));
    }
}

/// Total RSS and PSS (MiB) of the per-pod processes a runtime keeps besides the workload:
/// containerd's shims and pause containers (the bench's pause image runs `sleep 2147483647`),
/// carapace's monitors and infra processes.
fn helpers_mib() -> Result<(f64, f64)> {
    let (mut rss, mut pss) = (0.0, 0.0);
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
        let helper = arg(0).contains("containerd-shim")
            || (arg(0) == "sleep" && arg(1) == "2147483647")
            || (arg(1) == "runtime-helper" && arg(2) == "monitor")
            || (arg(0).contains("carapace") && arg(1) == "infra");
        if !helper {
            continue;
        }
        let Ok(roll) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let field = |k: &str| {
            roll.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        rss += field("Rss:") / 1024.0;
        pss += field("Pss:") / 1024.0;
    }
    Ok((rss, pss))
}

/// How long the bench leaves the daemons idle after their first pull before reading RSS again.
const SETTLE: Duration = Duration::from_secs(12);

fn rss_mib(pid: u32) -> Result<f64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    st.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .context("VmRSS missing")
}

// One thread: the bench's own calls then never wait on a wake-up of another thread (see `H2`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = parse_args()?;
    let began = Instant::now();
    let mut rts = Vec::new();
    // Idle daemon RSS three ways: as started; right after its first pull (the multi-layer
    // `--pull-image` where given, else the bench image); and once that burst has settled
    // (runtimes hand memory back on timers: carapace once a pull has been over for a moment,
    // tokio ends idle blocking threads after 10 s, Go's scavenger runs in the background), so a
    // reader sees what an idle node agent holds and what a pull leaves behind.
    let rss_row = |name: &str, row: &str| -> Result<()> {
        if let Some(pid) = a.pids.get(name) {
            let mib = rss_mib(*pid)?;
            eprintln!("{name}: {row}: {mib:.1} MiB");
            extra_row(name, row, mib);
        }
        Ok(())
    };
    let first_pull = a.pull_image.clone().unwrap_or_else(|| a.image.clone());
    for (n, e) in &a.endpoints {
        let mut r = connect(n, e, a.pids.get(n).copied()).await?;
        r.handler = a.handlers.get(n).cloned().unwrap_or_default();
        rss_row(n, "daemon RSS idle, as started")?;
        r.ensure_image(&first_pull).await?;
        rss_row(n, "daemon RSS idle, right after its first pull")?;
        r.ensure_image(&a.image).await?;
        rts.push(r);
    }
    tokio::time::sleep(SETTLE).await;
    for (n, _) in &a.endpoints {
        rss_row(n, "daemon RSS idle, 12 s after its first pull")?;
    }
    // Whatever ran before the bench (another run's clean-up: the kernel ending its pods' network
    // namespaces) is over before the first workload is timed.
    wait_quiet("node quiet").await?;
    let all = [
        "pod-start",
        "pod-start-userns",
        "pod-stop-remove",
        "container-start",
        "container-stop-remove",
        "exec-sync",
        "churn",
        "churn-parallel",
        "pull",
        "memory",
        "list",
        "poll-cpu",
        "soak",
        "load",
    ];
    let workloads: Vec<&str> = match &a.only {
        Some(o) => all
            .iter()
            .copied()
            .filter(|w| o.iter().any(|x| x == w))
            .collect(),
        None => all.iter().copied().filter(|w| !ONCE.contains(w)).collect(),
    };
    // One step per workload, except the populated ones: they form one step, where the first of
    // them stands.
    let populated: Vec<&str> = workloads
        .iter()
        .copied()
        .filter(|w| POPULATED.contains(w))
        .collect();
    let mut steps: Vec<Vec<&str>> = Vec::new();
    for w in &workloads {
        if !POPULATED.contains(w) {
            steps.push(vec![*w]);
        } else if *w == populated[0] {
            steps.push(populated.clone());
        }
    }
    let mut rows = Vec::new();
    // A B A B: each runtime gets two half-passes, interleaved.
    let half = a.rounds.div_ceil(2).max(1);
    for step in steps {
        let label = step.join("+");
        let mut samples: Vec<Vec<Samples>> = vec![vec![Vec::new(); rts.len()]; step.len()];
        let passes = if ONCE.contains(&step[0]) { 1 } else { 2 };
        for _ in 0..passes {
            for (i, r) in rts.iter_mut().enumerate() {
                eprintln!("{label}: {} (at {} s)", r.name, began.elapsed().as_secs());
                let got = if step.len() == 1 && !POPULATED.contains(&step[0]) {
                    pass(r, step[0], &a, half)
                        .await
                        .map(|s| BTreeMap::from([(step[0].to_owned(), s)]))
                } else {
                    populated_pass(r, &step, &a, half).await
                };
                match got {
                    Ok(mut got) => {
                        for (k, w) in step.iter().enumerate() {
                            samples[k][i].extend(got.remove(*w).unwrap_or_default());
                        }
                    }
                    Err(e) => {
                        eprintln!("  {label} on {} failed: {e:#}", r.name);
                        if let Err(e) = r.remove_leftover_pods().await {
                            eprintln!("  removing {}'s leftover pods failed: {e:#}", r.name);
                        }
                    }
                }
            }
        }
        rows.extend(step.into_iter().zip(samples));
    }
    if rts.len() == 1 {
        let na = &rts[0].name;
        println!("| workload | {na} p50 | {na} p95 |");
        println!("|---|---|---|");
        for (w, s) in rows {
            let unit = unit_of(w);
            let (a50, a95) = (percentile(&s[0], 50.0), percentile(&s[0], 95.0));
            println!("| {w} | {a50:.2}{unit} | {a95:.2}{unit} |");
        }
        soak::print_reports();
        return Ok(());
    }
    let (na, nb) = (&rts[0].name, &rts[1].name);
    println!("| workload | {na} p50 | {na} p95 | {nb} p50 | {nb} p95 | ratio p50 {na}/{nb} |");
    println!("|---|---|---|---|---|---|");
    for (w, s) in rows {
        let unit = unit_of(w);
        let (a50, a95, b50, b95) = (
            percentile(&s[0], 50.0),
            percentile(&s[0], 95.0),
            percentile(&s[1], 50.0),
            percentile(&s[1], 95.0),
        );
        println!(
            "| {w} | {a50:.2}{unit} | {a95:.2}{unit} | {b50:.2}{unit} | {b95:.2}{unit} | {:.3} |",
            a50 / b50
        );
    }
    let extra = EXTRA.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut names: Vec<(&String, &str)> = Vec::new();
    for (row, _, _, unit) in &extra {
        if !names.iter().any(|(r, _)| *r == row) {
            names.push((row, unit));
        }
    }
    for (row, unit) in names {
        let of = |rt: &String| -> Vec<f64> {
            extra
                .iter()
                .filter(|(r, n, _, _)| r == row && n == rt)
                .map(|(_, _, v, _)| *v)
                .collect()
        };
        let (a, b) = (of(na), of(nb));
        let (a50, a95, b50, b95) = (
            percentile(&a, 50.0),
            percentile(&a, 95.0),
            percentile(&b, 50.0),
            percentile(&b, 95.0),
        );
        println!(
            "| {row} | {a50:.2}{unit} | {a95:.2}{unit} | {b50:.2}{unit} | {b95:.2}{unit} | {:.3} |",
            a50 / b50
        );
    }
    soak::print_reports();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{cpu_times_of, percentile};

    #[test]
    fn cpu_times_count_idle_and_iowait_as_idle() {
        let stat = "cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 3 0\n";
        let (total, idle) = cpu_times_of(stat).expect("parses");
        // user nice system idle iowait irq softirq steal; guest is inside user already.
        assert_eq!((total, idle), (1000.0, 840.0));
        assert!(cpu_times_of("cpu0 1 2 3 4 5\n").is_err());
        assert!(cpu_times_of("cpu  1 2 3\n").is_err());
    }

    #[test]
    fn percentiles_interpolate_between_samples() {
        assert_eq!(
            percentile(&[3.0, 1.0], 50.0),
            2.0,
            "the median of two is their mean"
        );
        assert_eq!(percentile(&[3.0, 1.0], 0.0), 1.0);
        assert_eq!(percentile(&[3.0, 1.0], 100.0), 3.0);
        assert_eq!(percentile(&[5.0], 95.0), 5.0);
        assert_eq!(percentile(&[4.0, 1.0, 2.0], 50.0), 2.0);
        let hundred: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 95.0), 96.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
