//! End-to-end fixtures: the real `carapace` binary started with a private root, state dir, socket
//! and metrics port, a CRI client on its socket, and checks that it left nothing behind.
//!
//! The binary is `$CARAPACE_BIN`, else `target/debug/carapace` of this workspace (built by
//! `make test` before the tests run).
//!
//! [`registry`] has a real image registry on loopback with a busybox image, for the image and
//! container tests. [`node`] puts a daemon, a registry and a pod network together as one test's
//! node, with the pod and container calls of the kubelet. [`stream`] has clients for the
//! streaming server (exec, attach, port-forward).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use carapace_cri_api::v1::image_service_client::ImageServiceClient;
use carapace_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint, Uri};

pub use carapace_cri_api::v1 as cri;

pub mod devices;
pub mod node;
pub mod prometheus;
pub mod registry;
pub mod stream;

/// How long the daemon may take to answer on its socket before a test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long it may take to stop after SIGTERM (its own grace is 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The carapace binary under test.
pub fn carapace_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CARAPACE_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/carapace")
}

/// A free loopback port for a server the test starts later. Drawn below the kernel's ephemeral
/// range (32768 and up by default), so no outgoing connection made in between takes it (a
/// daemon once failed to bind its metrics port that way), and never the same twice in one test
/// process: a daemon that a test stops and starts again keeps its port, and a test running
/// beside it must not be handed that port while it is briefly free (seen in CI).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 20000 + (h.finish() % 12000) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port in 20000-31999")
}

/// A daemon's configuration: private paths under one temp dir, plus whatever a test sets.
pub struct DaemonConfig {
    dir: tempfile::TempDir,
    table: toml::Table,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl DaemonConfig {
    pub fn new() -> Self {
        // Under /tmp, not the target dir: the socket path must stay under 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("carapace-e2e.")
            .tempdir_in("/tmp")
            .expect("creating the test's temp dir");
        let d = dir.path().to_path_buf();
        let mut cfg = Self {
            dir,
            table: toml::Table::new(),
        };
        let path = |p: &str| toml::Value::String(d.join(p).display().to_string());
        cfg.set("root", path("root"));
        cfg.set("state", path("state"));
        cfg.set("grpc.address", path("state/carapace.sock"));
        cfg.set(
            "metrics.address",
            toml::Value::String(format!("127.0.0.1:{}", free_port())),
        );
        cfg.set("cni.conf_dir", path("cni/net.d"));
        cfg.set("registry.config_path", path("certs.d"));
        cfg.set("log.level", toml::Value::String("debug".into()));
        cfg
    }

    /// Sets a key by its dotted path (`"cni.conf_dir"`), creating tables on the way.
    pub fn set(&mut self, key: &str, value: toml::Value) -> &mut Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("empty key");
        let mut table = &mut self.table;
        for p in parts {
            table = table
                .entry(p)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .expect("key path crosses a non-table");
        }
        table.insert(last.to_owned(), value);
        self
    }

    /// The test's private directory (root, state, socket, config, CNI and registry dirs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn get(&self, key: &str) -> Option<&str> {
        let mut v: Option<&toml::Value> = None;
        let mut table = Some(&self.table);
        for p in key.split('.') {
            v = table?.get(p);
            table = v.and_then(|v| v.as_table());
        }
        v?.as_str()
    }

    pub fn socket(&self) -> PathBuf {
        self.get("grpc.address").expect("grpc.address").into()
    }

    pub fn root(&self) -> PathBuf {
        self.get("root").expect("root").into()
    }

    pub fn state(&self) -> PathBuf {
        self.get("state").expect("state").into()
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.get("metrics.address")
            .expect("metrics.address")
            .parse()
            .expect("metrics.address")
    }

    /// Writes the configuration file and returns its path.
    pub fn write(&self) -> PathBuf {
        let path = self.dir().join("config.toml");
        std::fs::write(
            &path,
            toml::to_string(&self.table).expect("encoding config"),
        )
        .expect("writing config");
        path
    }

    /// Runs `carapace serve` with this configuration to completion (for configurations that must
    /// be refused) and returns its exit status and stderr.
    pub async fn run_to_exit(&self) -> (ExitStatus, String) {
        let out = tokio::time::timeout(
            START_TIMEOUT,
            Command::new(carapace_bin())
                .args(["serve", "--config"])
                .arg(self.write())
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("carapace did not exit")
        .expect("running carapace");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A running daemon. Stop it with [`Daemon::stop`], which checks it exits cleanly and leaves
/// nothing behind; dropping it unstopped kills it and cleans up as best it can.
pub struct Daemon {
    child: Option<Child>,
    pub config: DaemonConfig,
    log: PathBuf,
    /// Time from spawning the process to the first answered CRI call.
    pub ready_after: Duration,
}

impl Daemon {
    /// Starts a daemon with a default private configuration.
    pub async fn start() -> Daemon {
        Self::start_with(DaemonConfig::new()).await
    }

    pub async fn start_with(config: DaemonConfig) -> Daemon {
        Self::start_with_env(config, &[]).await
    }

    /// [`Daemon::start_with`], the daemon's environment having `env` besides the test's.
    pub async fn start_with_env(config: DaemonConfig, env: &[(&str, &str)]) -> Daemon {
        let bin = carapace_bin();
        assert!(
            bin.exists(),
            "{} is missing: build it first (`cargo build --bin carapace`, or `make test`)",
            bin.display()
        );
        let cfg_path = config.write();
        let log = config.dir().join("carapace.log");
        let log_file = std::fs::File::create(&log).expect("creating the daemon log");
        let spawned = Instant::now();
        let child = Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning carapace");
        let mut d = Daemon {
            child: Some(child),
            config,
            log,
            ready_after: Duration::ZERO,
        };
        d.wait_ready(spawned).await;
        d
    }

    async fn wait_ready(&mut self, spawned: Instant) {
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("carapace exited early with {status}:\n{}", self.log_text());
            }
            if let Ok(mut c) = self.runtime_client().await
                && c.version(cri::VersionRequest::default()).await.is_ok()
            {
                self.ready_after = spawned.elapsed();
                return;
            }
            if spawned.elapsed() > START_TIMEOUT {
                panic!(
                    "carapace did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(
            self.child
                .as_ref()
                .and_then(|c| c.id())
                .expect("daemon not running") as i32,
        )
    }

    /// What the daemon has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        connect(self.config.socket()).await
    }

    pub async fn runtime_client(
        &self,
    ) -> Result<RuntimeServiceClient<Channel>, tonic::transport::Error> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    pub async fn image_client(
        &self,
    ) -> Result<ImageServiceClient<Channel>, tonic::transport::Error> {
        Ok(ImageServiceClient::new(self.channel().await?))
    }

    /// The runtime client, for tests (panics with the daemon's log if it cannot connect).
    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        match self.runtime_client().await {
            Ok(c) => c,
            Err(e) => panic!("connecting to carapace: {e}\n{}", self.log_text()),
        }
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        match self.image_client().await {
            Ok(c) => c,
            Err(e) => panic!("connecting to carapace: {e}\n{}", self.log_text()),
        }
    }

    /// RunPodSandbox; returns the pod's id.
    pub async fn run_pod(&self, config: &cri::PodSandboxConfig) -> String {
        self.runtime()
            .await
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", self.log_text()))
            .into_inner()
            .pod_sandbox_id
    }

    /// The pod's status and its verbose info.
    pub async fn pod_status(&self, id: &str) -> (cri::PodSandboxStatus, serde_json::Value) {
        let r = self
            .runtime()
            .await
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e}\n{}", self.log_text()))
            .into_inner();
        let info = serde_json::from_str(&r.info["info"]).expect("the verbose info is JSON");
        (r.status.expect("PodSandboxStatus without a status"), info)
    }

    /// Every pod the daemon lists.
    pub async fn pods(&self) -> Vec<cri::PodSandbox> {
        self.pods_where(cri::PodSandboxFilter::default()).await
    }

    /// The pods `filter` selects.
    pub async fn pods_where(&self, filter: cri::PodSandboxFilter) -> Vec<cri::PodSandbox> {
        self.runtime()
            .await
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
            .unwrap_or_else(|e| panic!("ListPodSandbox: {e}\n{}", self.log_text()))
            .into_inner()
            .items
    }

    /// StopPodSandbox then RemovePodSandbox, as the kubelet does.
    pub async fn remove_pod(&self, id: &str) {
        let mut rt = self.runtime().await;
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}\n{}", self.log_text()));
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}\n{}", self.log_text()));
    }

    /// The daemon's `/metrics` page.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = http_get(self.config.metrics_addr(), "/metrics").await;
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// Sends `sig` to the daemon and waits for it to exit (the fixture then owns no child).
    async fn signal_and_wait(&mut self, sig: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("daemon already stopped");
        let pid = Pid::from_raw(child.id().expect("daemon pid") as i32);
        kill(pid, sig).unwrap_or_else(|e| panic!("sending {sig}: {e}"));
        tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .unwrap_or_else(|_| panic!("carapace did not exit on {sig} within {STOP_TIMEOUT:?}"))
            .expect("waiting for carapace")
    }

    /// Stops the daemon with SIGTERM and starts it again on the same configuration, as an
    /// operator's `systemctl restart` does: pods and containers are meant to live on.
    pub async fn restart(mut self) -> Daemon {
        let status = self.signal_and_wait(Signal::SIGTERM).await;
        assert!(
            status.success(),
            "carapace exited with {status}:\n{}",
            self.log_text()
        );
        // Take the config out without running Drop's cleanup (the child is already gone).
        let config = std::mem::take(&mut self.config);
        Daemon::start_with(config).await
    }

    /// Kills the daemon with SIGKILL (no shutdown of its own at all, as after an OOM kill or a
    /// crash) and starts a new one on the same configuration.
    pub async fn kill_and_restart(mut self) -> Daemon {
        Daemon::start_with(self.kill().await).await
    }

    /// Whether the daemon has ended of its own (a crash), waiting up to `grace` for it: then its
    /// exit status and its configuration, for a new daemon; what is left of `self` owns nothing.
    pub async fn ended_within(&mut self, grace: Duration) -> Option<(ExitStatus, DaemonConfig)> {
        let child = self.child.as_mut()?;
        let status = tokio::time::timeout(grace, child.wait()).await.ok()?.ok()?;
        self.child = None;
        Some((status, std::mem::take(&mut self.config)))
    }

    /// Kills the daemon with SIGKILL and returns its configuration, for a test that acts while no
    /// daemon runs and then starts one again with [`Daemon::start_with`]. What is left of `self`
    /// owns nothing.
    pub async fn kill(&mut self) -> DaemonConfig {
        self.signal_and_wait(Signal::SIGKILL).await;
        // Take the config out without running Drop's cleanup (the child is already gone).
        std::mem::take(&mut self.config)
    }

    /// SIGTERM, then checks: exit status 0, socket removed, no mount under the test's dir, no
    /// process left that names the test's dir. Returns the daemon's log.
    pub async fn stop(self) -> String {
        self.stop_keeping_config().await.0
    }

    /// [`Daemon::stop`], handing back the configuration (and with it the root) for a tool or a
    /// later daemon to use.
    pub async fn stop_keeping_config(mut self) -> (String, DaemonConfig) {
        let status = self.signal_and_wait(Signal::SIGTERM).await;
        let log = self.log_text();
        assert!(status.success(), "carapace exited with {status}:\n{log}");
        assert!(
            !self.config.socket().exists(),
            "the socket {} was left behind",
            self.config.socket().display()
        );
        let dir = self.config.dir().to_path_buf();
        let mounts = mounts_under(&dir);
        assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
        let procs = processes_naming(&dir);
        assert!(procs.is_empty(), "processes left behind: {procs:?}");
        (log, std::mem::take(&mut self.config))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            // Best effort on the failure path: a test that panicked must not leak mounts.
            for m in mounts_under(self.config.dir()).iter().rev() {
                let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
            }
            eprintln!("--- carapace log ---\n{}", self.log_text());
        }
    }
}

/// A tonic channel over a unix socket.
pub async fn connect(socket: PathBuf) -> Result<Channel, tonic::transport::Error> {
    // The URI is required by tonic and ignored by the connector.
    Endpoint::from_static("http://carapace.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

/// Mount points at or below `dir`, from this process's mount table.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn unescape_mount_path(s: &str) -> PathBuf {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// Processes whose command line names `dir` (the daemon's helpers carry its paths in their args).
pub fn processes_naming(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.display().to_string();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(&needle).then_some((pid, cmd))
        })
        .collect()
}

/// A numeric field of /proc/PID/status (`Threads`, `PPid`, `RssAnon` in KiB, ...).
pub fn proc_status_field(pid: i64, field: &str) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

/// A minimal HTTP/1.0 GET on loopback, enough for /metrics and the Prometheus API.
pub async fn http_get(addr: SocketAddr, path_and_query: &str) -> (u16, String) {
    try_http_get(addr, path_and_query)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path_and_query}: {e}"))
}

/// `http_get` that hands back transport errors, for probes of a server that may still be
/// starting (a listener can reset a connection it accepted while it comes up).
pub async fn try_http_get(
    addr: SocketAddr,
    path_and_query: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// Percent-encodes a query parameter value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Makes `path` executable by its owner (for fake plugins and scripts written by tests).
pub fn make_executable(path: &Path) {
    let mut perm = std::fs::metadata(path).expect("stat").permissions();
    perm.set_mode(0o755);
    std::fs::set_permissions(path, perm).expect("chmod");
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(Duration::from_millis(100), timeout, what, f).await
}

/// [`eventually`] polling every `every` (a poll that runs a command wants fewer).
pub async fn eventually_every<T, F, Fut>(
    every: Duration,
    timeout: Duration,
    what: &str,
    mut f: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// A pod network for one test: a bridge + host-local conflist in the daemon's private CNI
/// directory, with a bridge name and subnet of the test's own. Dropping it deletes the bridge and
/// the IPAM leases, so nothing outlives the test on the host.
pub struct PodNetwork {
    pub name: String,
    pub bridge: String,
    /// The first three octets of the /24, e.g. "10.213.7".
    pub prefix: String,
}

impl PodNetwork {
    /// `index` (0..=255) keeps concurrent tests apart: bridge `cre2e<index>`, subnet 10.213.<index>.0/24.
    pub fn bridge(config: &DaemonConfig, index: u8) -> PodNetwork {
        let net = PodNetwork {
            name: format!("carapace-e2e-{index}"),
            bridge: format!("cre2e{index}"),
            prefix: format!("10.213.{index}"),
        };
        let conf_dir = config.dir().join("cni/net.d");
        std::fs::create_dir_all(&conf_dir).expect("creating the CNI conf dir");
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": net.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": net.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": format!("{}.0/24", net.prefix) }]],
                        "routes": [{ "dst": "0.0.0.0/0" }]
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true } }
            ]
        });
        std::fs::write(conf_dir.join("10-e2e.conflist"), conflist.to_string())
            .expect("writing the conflist");
        net
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(format!("/var/lib/cni/networks/{}", self.name));
    }
}

/// Runs `cmd` inside the network namespace pinned at `netns` and returns its stdout.
pub fn in_netns(netns: &str, cmd: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(cmd)
        .output()
        .expect("running nsenter");
    assert!(
        out.status.success(),
        "nsenter {netns} {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
