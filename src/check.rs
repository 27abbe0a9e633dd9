//! `carapace check`: the facts of this node that decide whether pods will run, each as one
//! finding (what was checked, what was found, what it means, how to fix it) with a status.
//!
//! Every fact is probed once, here ([`Facts::probe`], and [`registry_findings`] for the network
//! probes of registries), and [`findings`] turns the facts into the report; the daemon logs the
//! same findings' WARN and FAIL lines once at start ([`log_at_start`]). This module only reads:
//! it never changes the node, mounts nothing, and writes no file.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carapace_cri::config::{CgroupDriver, Config};
use serde::Serialize;

/// Where carapace (and the kubelet) look for cgroup hierarchies.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Read when `--kubelet-config` is not given, if it exists (kubeadm's path).
const DEFAULT_KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
/// Other CRI runtimes' sockets at their packaged paths.
const OTHER_RUNTIMES: &[(&str, &str)] = &[
    ("containerd", "/run/containerd/containerd.sock"),
    ("CRI-O", "/var/run/crio/crio.sock"),
];
/// A host's `GET /v2/` gets this long (connect included).
const REGISTRY_TIMEOUT: Duration = Duration::from_secs(3);
/// A CNI plugin's `VERSION` or `iptables -V` gets this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report; `--json` prints these as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub check: String,
    pub status: Status,
    pub found: String,
    /// What it means for pods; may be empty when the finding says it all.
    pub meaning: String,
    /// What to do; empty when nothing is to be done.
    pub fix: String,
}

impl Finding {
    fn new(status: Status, check: impl Into<String>, found: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            status,
            found: found.into(),
            meaning: String::new(),
            fix: String::new(),
        }
    }

    fn meaning(mut self, m: impl Into<String>) -> Self {
        self.meaning = m.into();
        self
    }

    fn fix(mut self, f: impl Into<String>) -> Self {
        self.fix = f.into();
        self
    }

    /// `STATUS check: found — meaning. Fix: fix`, on one line whatever the fields hold.
    pub fn line(&self) -> String {
        let one = |s: &str| s.replace(['\n', '\r'], " ");
        let mut l = format!(
            "{:<4} {}: {}",
            self.status.word(),
            one(&self.check),
            one(&self.found)
        );
        if !self.meaning.is_empty() {
            l.push_str(" — ");
            l.push_str(&one(&self.meaning));
        }
        if !self.fix.is_empty() {
            l.push_str(if self.meaning.is_empty() {
                " — Fix: "
            } else {
                ". Fix: "
            });
            l.push_str(&one(&self.fix));
        }
        l
    }
}

fn ok(check: &str, found: impl Into<String>) -> Finding {
    Finding::new(Status::Ok, check, found)
}

fn warn(check: &str, found: impl Into<String>) -> Finding {
    Finding::new(Status::Warn, check, found)
}

fn fail(check: &str, found: impl Into<String>) -> Finding {
    Finding::new(Status::Fail, check, found)
}

/// Whether a system call exists in this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Syscall {
    Present,
    /// ENOSYS.
    Missing,
    /// Some other error, which says nothing either way (e.g. a seccomp filter around us).
    Unknown(String),
}

/// A cgroup filesystem mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub mount_point: PathBuf,
    /// 1 or 2.
    pub version: u8,
    /// v1: the controllers bound to the hierarchy (and `name=...`); v2: empty.
    pub controllers: Vec<String>,
}

/// A controller the kernel has, from `/proc/cgroups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelController {
    pub name: String,
    /// 0 when no v1 hierarchy has it (it is free for cgroup2, or unused).
    pub hierarchy: u32,
    pub enabled: bool,
}

/// The cgroup filesystem as mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    V1,
    V2,
    /// v1 hierarchies plus a cgroup2 mount beside them (systemd's "hybrid").
    Hybrid,
    /// No cgroup filesystem under [`CGROUP_ROOT`].
    None,
}

#[derive(Debug, Clone)]
pub struct Space {
    /// The directory measured: `root`, or its nearest existing ancestor.
    pub path: PathBuf,
    pub avail_bytes: u64,
    pub total_bytes: u64,
    pub avail_files: u64,
    pub total_files: u64,
}

#[derive(Debug, Clone)]
pub struct PluginFacts {
    pub name: String,
    /// Where it was found and the versions it says it supports.
    pub found: Result<(PathBuf, Vec<String>), String>,
}

#[derive(Debug, Clone)]
pub struct NetworkFacts {
    pub name: String,
    pub cni_version: String,
    pub source: PathBuf,
    pub plugins: Vec<PluginFacts>,
}

#[derive(Debug, Clone)]
pub struct SocketFacts {
    pub path: PathBuf,
    /// The directory's mode and owner, if it exists.
    pub dir: Option<(u32, u32)>,
    /// The socket file's type-is-socket and mode, if something is there.
    pub file: Option<(bool, u32)>,
    /// A daemon accepted a connection on it.
    pub answering: bool,
}

/// What carapace compares in the kubelet's configuration file.
#[derive(Debug, Clone)]
pub struct KubeletKeys {
    pub cgroup_driver: Option<String>,
    pub runtime_endpoint: Option<String>,
}

/// Everything `carapace check` looks at, probed once.
#[derive(Debug, Clone)]
pub struct Facts {
    pub config_source: String,
    pub euid: u32,
    pub kernel_release: Option<String>,
    pub overlay_loaded: bool,
    pub overlay_module: bool,
    pub open_tree: Syscall,
    pub mount_setattr: Syscall,
    pub pidfd_open: Syscall,
    /// `/proc/sys/kernel/seccomp/actions_avail`, if the kernel has seccomp filters.
    pub seccomp_actions: Option<Vec<String>>,
    /// The resources under `/proc/pressure`.
    pub psi: Vec<String>,
    pub kernel_controllers: Vec<KernelController>,
    pub cgroup_mounts: Vec<CgroupMount>,
    /// `cgroup.controllers` of the cgroup2 mount, if there is one.
    pub v2_controllers: Option<Vec<String>>,
    /// What the runtime itself decided: it drives the unified hierarchy.
    pub runtime_uses_v2: bool,
    /// Huge page sizes the kernel offers, as the kubelet names them (`2MB`, `1GB`).
    pub hugepage_sizes: Vec<String>,
    pub pid1: Option<String>,
    pub cap_bounding: Option<u64>,
    pub cap_last: u32,
    pub oom_score_adj: Option<i32>,
    pub ip_forward: Option<String>,
    pub bridge_nf_call_iptables: Option<String>,
    pub iptables: Result<String, String>,
    /// The kubelet configuration read, if any: its path, and its keys or why it was unreadable.
    pub kubelet: Option<(PathBuf, Result<KubeletKeys, String>)>,
    pub network: Result<NetworkFacts, String>,
    pub root_space: Result<Space, String>,
    /// The state directory (or its nearest existing ancestor) and whether it is on a tmpfs.
    pub state_tmpfs: Result<(PathBuf, bool), String>,
    pub socket: SocketFacts,
    pub other_runtimes: Vec<(String, PathBuf)>,
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_trimmed(path: impl AsRef<Path>) -> Option<String> {
    read(path).map(|s| s.trim().to_owned())
}

/// `path` or the nearest ancestor of it that exists: what a directory not made yet will be on.
fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

impl Facts {
    /// Probes the node for `config`; `kubelet_config` is the kubelet's configuration file, if
    /// known (else [`DEFAULT_KUBELET_CONFIG`] when it exists). Blocks for up to a few seconds
    /// (CNI plugins' `VERSION`, `iptables -V`).
    pub fn probe(config: &Config, config_source: String, kubelet_config: Option<&Path>) -> Self {
        let release = read_trimmed("/proc/sys/kernel/osrelease");
        let overlay_module = release.as_ref().is_some_and(|r| {
            Path::new("/lib/modules")
                .join(r)
                .join("kernel/fs/overlayfs")
                .exists()
        });
        let cgroup_mounts = read("/proc/self/mountinfo")
            .map(|t| parse_mountinfo_cgroups(&t))
            .unwrap_or_default();
        let v2_controllers = cgroup_mounts
            .iter()
            .find(|m| m.version == 2)
            .and_then(|m| read(m.mount_point.join("cgroup.controllers")))
            .map(|t| t.split_whitespace().map(str::to_owned).collect());
        let status = read("/proc/self/status").unwrap_or_default();
        let kubelet_path = kubelet_config.map(Path::to_path_buf).or_else(|| {
            let p = PathBuf::from(DEFAULT_KUBELET_CONFIG);
            p.exists().then_some(p)
        });
        let kubelet = kubelet_path.map(|p| {
            let keys = std::fs::read_to_string(&p)
                .map(|t| KubeletKeys {
                    cgroup_driver: kubelet_key(&t, "cgroupDriver"),
                    runtime_endpoint: kubelet_key(&t, "containerRuntimeEndpoint"),
                })
                .map_err(|e| e.to_string());
            (p, keys)
        });
        Self {
            config_source,
            euid: nix::unistd::geteuid().as_raw(),
            overlay_loaded: read("/proc/filesystems").is_some_and(|t| {
                t.lines()
                    .any(|l| l.split_whitespace().last() == Some("overlay"))
            }),
            overlay_module,
            kernel_release: release,
            open_tree: sys::probe_open_tree(),
            mount_setattr: sys::probe_mount_setattr(),
            pidfd_open: sys::probe_pidfd_open(),
            seccomp_actions: read("/proc/sys/kernel/seccomp/actions_avail")
                .map(|t| t.split_whitespace().map(str::to_owned).collect()),
            psi: ["cpu", "io", "memory"]
                .iter()
                .filter(|r| Path::new("/proc/pressure").join(r).exists())
                .map(|r| r.to_string())
                .collect(),
            kernel_controllers: read("/proc/cgroups")
                .map(|t| parse_proc_cgroups(&t))
                .unwrap_or_default(),
            cgroup_mounts,
            v2_controllers,
            runtime_uses_v2: carapace_runtime::cgroup::ContainerCgroup::is_v2(),
            hugepage_sizes: hugepage_sizes(Path::new("/sys/kernel/mm/hugepages")),
            pid1: read_trimmed("/proc/1/comm"),
            cap_bounding: status_field(&status, "CapBnd")
                .and_then(|v| u64::from_str_radix(v, 16).ok()),
            cap_last: read_trimmed("/proc/sys/kernel/cap_last_cap")
                .and_then(|v| v.parse().ok())
                .unwrap_or(40),
            oom_score_adj: read_trimmed("/proc/self/oom_score_adj").and_then(|v| v.parse().ok()),
            ip_forward: read_trimmed("/proc/sys/net/ipv4/ip_forward"),
            bridge_nf_call_iptables: read_trimmed("/proc/sys/net/bridge/bridge-nf-call-iptables"),
            iptables: run_briefly(Command::new("iptables").arg("-V")),
            kubelet,
            network: probe_network(config),
            root_space: probe_space(&config.root),
            state_tmpfs: probe_tmpfs(&config.state),
            socket: probe_socket(&config.grpc.address),
            other_runtimes: OTHER_RUNTIMES
                .iter()
                .filter(|(_, p)| {
                    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
                })
                .map(|(n, p)| (n.to_string(), PathBuf::from(p)))
                .collect(),
        }
    }

    /// The layout under [`CGROUP_ROOT`].
    pub fn layout(&self) -> Layout {
        layout(&self.cgroup_mounts)
    }
}

fn probe_network(config: &Config) -> Result<NetworkFacts, String> {
    let n = carapace_cni::load_network(&config.cni.conf_dir).map_err(|e| e.to_string())?;
    // The cache dir is never touched by VERSION.
    let cni = carapace_cni::Cni::new(config.cni.bin_dirs.clone(), &config.state.join("cni"))
        .with_timeout(COMMAND_TIMEOUT);
    let plugins = n
        .binaries()
        .into_iter()
        .map(|b| PluginFacts {
            name: b.to_owned(),
            found: cni.plugin_versions(b).map_err(|e| e.to_string()),
        })
        .collect();
    Ok(NetworkFacts {
        name: n.name().to_owned(),
        cni_version: n.cni_version().to_owned(),
        source: n.source().to_owned(),
        plugins,
    })
}

fn probe_space(root: &Path) -> Result<Space, String> {
    let path = existing_ancestor(root);
    let s = nix::sys::statvfs::statvfs(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let frag = s.fragment_size();
    Ok(Space {
        avail_bytes: s.blocks_available().saturating_mul(frag),
        total_bytes: s.blocks().saturating_mul(frag),
        avail_files: s.files_available(),
        total_files: s.files(),
        path,
    })
}

fn probe_tmpfs(state: &Path) -> Result<(PathBuf, bool), String> {
    let path = existing_ancestor(state);
    let s = nix::sys::statfs::statfs(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC))
}

fn probe_socket(path: &Path) -> SocketFacts {
    let dir = path
        .parent()
        .and_then(|d| std::fs::metadata(d).ok())
        .map(|m| (m.mode() & 0o7777, m.uid()));
    let file = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.file_type().is_socket(), m.mode() & 0o7777));
    let answering =
        file.is_some_and(|(s, _)| s) && std::os::unix::net::UnixStream::connect(path).is_ok();
    SocketFacts {
        path: path.to_owned(),
        dir,
        file,
        answering,
    }
}

/// Runs a short command and returns its first line of output; a command that does not end in
/// [`COMMAND_TIMEOUT`] is killed.
fn run_briefly(cmd: &mut Command) -> Result<String, String> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer in {COMMAND_TIMEOUT:?}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if !status.success() {
        return Err(format!("exited with {status}"));
    }
    Ok(out.lines().next().unwrap_or_default().trim().to_owned())
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup mounts of a `/proc/self/mountinfo` text.
pub fn parse_mountinfo_cgroups(text: &str) -> Vec<CgroupMount> {
    // Mount options that are not controllers.
    const FLAGS: &[&str] = &[
        "rw",
        "ro",
        "noprefix",
        "clone_children",
        "xattr",
        "cpuset_v2_mode",
        "favordynmods",
    ];
    let mut out = Vec::new();
    for line in text.lines() {
        // `id parent dev root mount_point options [optional...] - fstype source super_options`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mut r = right.split_whitespace();
        let (Some(fstype), _, super_opts) = (r.next(), r.next(), r.next().unwrap_or_default())
        else {
            continue;
        };
        let version = match fstype {
            "cgroup" => 1,
            "cgroup2" => 2,
            _ => continue,
        };
        let controllers = if version == 1 {
            super_opts
                .split(',')
                .filter(|o| !FLAGS.contains(o) && (!o.contains('=') || o.starts_with("name=")))
                .map(str::to_owned)
                .collect()
        } else {
            Vec::new()
        };
        out.push(CgroupMount {
            mount_point: PathBuf::from(unescape(mount_point)),
            version,
            controllers,
        });
    }
    out
}

/// The controllers of a `/proc/cgroups` text.
pub fn parse_proc_cgroups(text: &str) -> Vec<KernelController> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [name, hierarchy, _, enabled, ..] => Some(KernelController {
                    name: name.to_string(),
                    hierarchy: hierarchy.parse().ok()?,
                    enabled: *enabled == "1",
                }),
                _ => None,
            }
        })
        .collect()
}

pub fn layout(mounts: &[CgroupMount]) -> Layout {
    let root = Path::new(CGROUP_ROOT);
    let under = |m: &&CgroupMount| m.mount_point.starts_with(root);
    if mounts
        .iter()
        .any(|m| m.version == 2 && m.mount_point == root)
    {
        return Layout::V2;
    }
    let v1 = mounts.iter().filter(under).any(|m| m.version == 1);
    let v2 = mounts.iter().filter(under).any(|m| m.version == 2);
    match (v1, v2) {
        (true, true) => Layout::Hybrid,
        (true, false) => Layout::V1,
        _ => Layout::None,
    }
}

/// A top-level key of a kubelet configuration file (YAML, or JSON): just enough YAML for a
/// `key: value` line at the top level, quoted or not, with a trailing comment.
pub fn kubelet_key(text: &str, key: &str) -> Option<String> {
    if text.trim_start().starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        return v.get(key)?.as_str().map(str::to_owned);
    }
    let quoted = format!("\"{key}\"");
    for line in text.lines() {
        // Nested keys are indented; only the document's own keys start the line.
        let Some(rest) = line
            .strip_prefix(key)
            .or_else(|| line.strip_prefix(quoted.as_str()))
        else {
            continue;
        };
        let Some(value) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let value = value.trim();
        let value = match value.find(" #") {
            Some(i) => value[..i].trim_end(),
            None if value.starts_with('#') => "",
            None => value,
        };
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        return Some(value.to_owned());
    }
    None
}

/// Capability names by number (`capability.h`), up to CAP_CHECKPOINT_RESTORE.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn cap_name(bit: u32) -> String {
    CAPABILITIES
        .get(bit as usize)
        .map_or_else(|| format!("capability {bit}"), |n| n.to_string())
}

/// The capabilities from 0 to `last` that `mask` (a `CapBnd` value) lacks.
pub fn missing_capabilities(mask: u64, last: u32) -> Vec<String> {
    (0..=last.min(63))
        .filter(|b| mask & (1u64 << b) == 0)
        .map(cap_name)
        .collect()
}

/// The huge page sizes under `/sys/kernel/mm/hugepages`, as the kubelet writes them in a CRI
/// request (`hugepages-2048kB` is `2MB`).
fn hugepage_sizes(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut kib: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()
        })
        .collect();
    kib.sort_unstable();
    kib.into_iter().map(page_size_name).collect()
}

pub fn page_size_name(kib: u64) -> String {
    if kib >= 1 << 20 && kib % (1 << 20) == 0 {
        format!("{}GB", kib >> 20)
    } else if kib >= 1 << 10 && kib % (1 << 10) == 0 {
        format!("{}MB", kib >> 10)
    } else {
        format!("{kib}KB")
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn percent(part: u64, whole: u64) -> u64 {
    (part.saturating_mul(100)).checked_div(whole).unwrap_or(0)
}

/// The report for `facts` under `config`, in a fixed order: kernel, cgroups, privileges,
/// network, CNI, storage, socket, other runtimes.
pub fn findings(facts: &Facts, config: &Config) -> Vec<Finding> {
    let mut out = vec![ok("configuration", facts.config_source.clone())];
    if facts.euid != 0 {
        out.push(
            warn("user", format!("uid {}", facts.euid))
                .meaning(
                    "carapace serve runs as root; this report may miss what only root can read",
                )
                .fix("run carapace check as root"),
        );
    }
    kernel_findings(facts, &mut out);
    cgroup_findings(facts, config, &mut out);
    privilege_findings(facts, &mut out);
    network_findings(facts, &mut out);
    cni_findings(facts, config, &mut out);
    storage_findings(facts, config, &mut out);
    out
}

fn syscall_finding(check: &str, s: &Syscall, missing: Finding) -> Finding {
    match s {
        Syscall::Present => ok(check, "present"),
        Syscall::Missing => missing,
        Syscall::Unknown(e) => warn(check, format!("probe failed: {e}"))
            .meaning("cannot tell whether the kernel has it (a seccomp filter around carapace?)"),
    }
}

fn kernel_findings(f: &Facts, out: &mut Vec<Finding>) {
    out.push(match &f.kernel_release {
        Some(r) => ok("kernel", r.clone()),
        None => {
            warn("kernel", "/proc/sys/kernel/osrelease unreadable").meaning("is /proc mounted?")
        }
    });
    out.push(if f.overlay_loaded {
        ok("overlayfs", "in /proc/filesystems")
    } else if f.overlay_module {
        ok("overlayfs", "module not loaded yet").meaning("the kernel loads it at the first mount")
    } else {
        fail("overlayfs", "not in /proc/filesystems and no module")
            .meaning("images are unpacked as overlay snapshots: no container can start")
            .fix("load the overlay module (modprobe overlay; add it to /etc/modules-load.d)")
    });
    out.push(syscall_finding(
        "open_tree/move_mount",
        &f.open_tree,
        fail("open_tree/move_mount", "missing (ENOSYS)")
            .meaning("volumes and read-only paths are bound through them: no container can start")
            .fix("run Linux 5.2 or later"),
    ));
    out.push(
        syscall_finding(
            "mount_setattr (id-mapped mounts)",
            &f.mount_setattr,
            ok("mount_setattr (id-mapped mounts)", "missing (ENOSYS)"),
        )
        .meaning(
            "carapace runs no user-namespaced pods yet (it reports user_namespaces: false), \
             so nothing needs id-mapped mounts today",
        ),
    );
    out.push(syscall_finding(
        "pidfd_open",
        &f.pidfd_open,
        fail("pidfd_open", "missing (ENOSYS)")
            .meaning(
                "container monitors wait on their process through a pidfd: no container can start",
            )
            .fix("run Linux 5.3 or later"),
    ));
    out.push(match &f.seccomp_actions {
        Some(actions) => {
            let needed = ["allow", "errno", "kill_process", "kill_thread"];
            let lacking: Vec<&str> = needed
                .iter()
                .filter(|a| !actions.iter().any(|x| x == *a))
                .copied()
                .collect();
            let notif = if actions.iter().any(|a| a == "user_notif") {
                "user_notif available, though carapace refuses SCMP_ACT_NOTIFY profiles"
            } else {
                "no user_notif (carapace refuses SCMP_ACT_NOTIFY profiles anyway)"
            };
            if lacking.is_empty() {
                ok(
                    "seccomp",
                    format!("filter mode; actions: {}", actions.join(" ")),
                )
                .meaning(notif)
            } else {
                fail("seccomp", format!("actions lack {}", lacking.join(", ")))
                    .meaning("the RuntimeDefault profile cannot be loaded: containers with it fail")
                    .fix("run a kernel with CONFIG_SECCOMP_FILTER")
            }
        }
        None => fail("seccomp", "no /proc/sys/kernel/seccomp/actions_avail")
            .meaning(
                "no seccomp filters: containers with a RuntimeDefault or Localhost profile fail",
            )
            .fix("run a kernel with CONFIG_SECCOMP_FILTER"),
    });
    out.push(if f.psi.len() == 3 {
        ok("PSI", format!("/proc/pressure: {}", f.psi.join(", "))).meaning(
            "pressure stall information is there; carapace does not report it in stats yet",
        )
    } else {
        warn("PSI", "no /proc/pressure")
            .meaning("no pressure stall information for the kubelet or carapace to read")
            .fix("boot with psi=1 (a kernel with CONFIG_PSI)")
    });
}

/// The v1 controllers carapace uses, in report order.
const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "hugetlb", "blkio",
    "net_cls", "net_prio", "rdma",
];

fn cgroup_findings(f: &Facts, config: &Config, out: &mut Vec<Finding>) {
    let v1_mounts: Vec<&CgroupMount> = f.cgroup_mounts.iter().filter(|m| m.version == 1).collect();
    let v2_mount = f.cgroup_mounts.iter().find(|m| m.version == 2);
    let v1_list = |ms: &[&CgroupMount]| {
        ms.iter()
            .flat_map(|m| m.controllers.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(",")
    };
    let kubelet_v1 = "Kubernetes keeps cgroup v1 in maintenance mode: recent kubelets start on it only with failCgroupV1: false";
    out.push(match f.layout() {
        Layout::Hybrid => warn(
            "cgroup layout",
            format!(
                "hybrid: v1 hierarchies ({}) under {CGROUP_ROOT}, cgroup2 at {}",
                v1_list(&v1_mounts),
                v2_mount.map_or_else(String::new, |m| m.mount_point.display().to_string())
            ),
        )
        .meaning(format!(
            "carapace drives the v1 hierarchies; the cgroup2 mount holds no limits; {kubelet_v1}"
        ))
        .fix("boot with the unified hierarchy (systemd.unified_cgroup_hierarchy=1, or cgroup2 mounted at /sys/fs/cgroup) when you can"),
        Layout::V1 => warn(
            "cgroup layout",
            format!("v1: hierarchies ({}) under {CGROUP_ROOT}", v1_list(&v1_mounts)),
        )
        .meaning(kubelet_v1)
        .fix("boot with the unified hierarchy (cgroup2 at /sys/fs/cgroup) when you can"),
        Layout::V2 => ok("cgroup layout", format!("v2: cgroup2 at {CGROUP_ROOT}")),
        Layout::None => fail("cgroup layout", format!("no cgroup filesystem under {CGROUP_ROOT}"))
            .meaning("no limits and no device confinement: no container can start")
            .fix(format!("mount cgroup2 at {CGROUP_ROOT}")),
    });
    if f.layout() == Layout::None {
        return;
    }
    for name in CONTROLLERS {
        out.push(controller_finding(f, name, &v1_mounts, v2_mount));
    }
    cgroup_driver_findings(f, config, out);
}

fn controller_finding(
    f: &Facts,
    name: &str,
    v1_mounts: &[&CgroupMount],
    v2_mount: Option<&CgroupMount>,
) -> Finding {
    let check = format!("cgroup {name}");
    let kernel = f.kernel_controllers.iter().find(|c| c.name == name);
    // cgroup2 calls blkio `io`.
    let v2_name = if name == "blkio" { "io" } else { name };
    let on_v2 = f
        .v2_controllers
        .as_ref()
        .is_some_and(|cs| cs.iter().any(|c| c == v2_name));
    let v2_at = v2_mount.map_or_else(String::new, |m| m.mount_point.display().to_string());
    let found = if f.runtime_uses_v2 {
        // cgroup2 has no devices or freezer controller: eBPF and cgroup.freeze do their jobs.
        match name {
            "devices" => return ok(&check, "cgroup2: an eBPF device program per container"),
            "freezer" => return ok(&check, "cgroup2: cgroup.freeze"),
            "net_cls" | "net_prio" => {
                return ok(&check, "cgroup2 has no such controller").meaning(
                    "packets are told apart by the cgroup's path there; a class id or priority in a container's spec is skipped",
                );
            }
            _ if on_v2 => return ok(&check, format!("available in {v2_at}/cgroup.controllers")),
            _ => format!("not in {v2_at}/cgroup.controllers"),
        }
    } else {
        if let Some(m) = v1_mounts
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == name))
        {
            return ok(&check, format!("mounted at {}", m.mount_point.display()));
        }
        match kernel {
            None => "not in this kernel (/proc/cgroups)".to_owned(),
            Some(k) if !k.enabled => "disabled at boot (/proc/cgroups enabled 0)".to_owned(),
            Some(_) if on_v2 => format!(
                "not mounted as a v1 hierarchy; the kernel has it, attached to the cgroup2 at {v2_at}, which carapace does not use for limits"
            ),
            Some(_) => "not mounted as a v1 hierarchy (the kernel has it)".to_owned(),
        }
    };
    let fix = if kernel.is_none() && !f.runtime_uses_v2 {
        format!("run a kernel with the {name} controller (/proc/cgroups lists it) if pods need it")
    } else if f.runtime_uses_v2 {
        format!(
            "enable it: echo +{v2_name} > {v2_at}/cgroup.subtree_control (and down to the kubepods cgroups)"
        )
    } else {
        format!(
            "mount it before the kubelet starts: mkdir -p {CGROUP_ROOT}/{name} && mount -t cgroup -o {name} cgroup {CGROUP_ROOT}/{name}"
        )
    };
    let (status, meaning) = absent_controller(name, f.runtime_uses_v2, &f.hugepage_sizes);
    Finding::new(status, &check, found)
        .meaning(meaning)
        .fix(fix)
}

/// What a controller missing from the cgroups carapace makes means for pods. Where the runtime
/// skips the controller's limits (as runc and containerd do) rather than failing, it says so,
/// and which requests lose what.
fn absent_controller(name: &str, v2: bool, hugepage_sizes: &[String]) -> (Status, String) {
    use Status::{Fail, Warn};
    let skipped = "carapace skips them here (as runc and containerd do)";
    let also = "as runc and containerd skip it";
    // The kubelet's own check on a v1 node: it does not start without these.
    let kubelet = if v2 {
        ""
    } else {
        "; the kubelet refuses to start on a v1 node without it"
    };
    let (status, meaning) = match name {
        "devices" => (
            Fail,
            "carapace refuses to run a container it cannot confine to its devices: no container can start".to_owned(),
        ),
        "cpu" => (
            Fail,
            format!(
                "the kubelet sends CPU shares and quotas with every container and pod: {skipped}, so none is held to its CPU request or limit{kubelet}"
            ),
        ),
        "cpuset" => (
            Fail,
            format!(
                "the kubelet's static CPU manager pins Guaranteed containers to CPUs with cpuset limits: {skipped}, so none is pinned{kubelet}"
            ),
        ),
        "memory" => (
            Fail,
            format!(
                "the kubelet sends memory limits with containers and pods: {skipped}, so none is held to its limit, and OOM kills are not counted{kubelet}"
            ),
        ),
        "hugetlb" if hugepage_sizes.is_empty() => (
            Warn,
            "the kernel offers no huge page size, so the kubelet sends no hugepage limit: harmless until it does (carapace would skip them, as runc and containerd do)".to_owned(),
        ),
        "hugetlb" => (
            Warn,
            format!(
                "the kubelet sends a hugepage limit for every page size the kernel has ({}) with every container: \
                 {skipped}, so no container is held to a hugepage limit",
                hugepage_sizes.join(", ")
            ),
        ),
        "freezer" => (
            Warn,
            "stopping a container that shares a PID namespace kills its processes without freezing them first: one that forks meanwhile can outlive the kill".to_owned(),
        ),
        "cpuacct" => (
            Warn,
            "no CPU usage in container and pod stats".to_owned(),
        ),
        "pids" => (
            Warn,
            format!(
                "no process-count limits (the kubelet's podPidsLimit) in the cgroups carapace makes: a pids limit in a container's spec is skipped, {also}"
            ),
        ),
        "blkio" => (
            Warn,
            format!(
                "no block I/O stats, and a block I/O limit in a container's spec (the CRI sends none) is skipped, {also}"
            ),
        ),
        // The CRI has no field for these: no kubelet can ask for one.
        "net_cls" | "net_prio" | "rdma" => (
            Status::Ok,
            format!(
                "the CRI has no {name} limit, so nothing a kubelet runs misses it; one in a container's spec is skipped, {also}"
            ),
        ),
        _ => (Warn, format!("{name} limits are not applied")),
    };
    (status, meaning)
}

fn driver_name(d: CgroupDriver) -> &'static str {
    match d {
        CgroupDriver::Cgroupfs => "cgroupfs",
        CgroupDriver::Systemd => "systemd",
    }
}

fn cgroup_driver_findings(f: &Facts, config: &Config, out: &mut Vec<Finding>) {
    let ours = driver_name(config.cgroup.driver);
    let check = "cgroup driver";
    out.push(match &f.kubelet {
        None => ok(check, format!("{ours} (cgroup.driver)"))
            .meaning(format!("no kubelet configuration to compare with ({DEFAULT_KUBELET_CONFIG} is not there)"))
            .fix("pass --kubelet-config <the kubelet's config file> to compare"),
        Some((p, Err(e))) => warn(check, format!("{ours}; {}: {e}", p.display()))
            .meaning("cannot compare with the kubelet's"),
        Some((p, Ok(keys))) => {
            // The kubelet's default is cgroupfs.
            let theirs = keys.cgroup_driver.as_deref().unwrap_or("cgroupfs");
            let found = format!("{ours} (cgroup.driver), kubelet {theirs} ({})", p.display());
            if theirs == ours {
                ok(check, found)
            } else {
                fail(check, found)
                    .meaning("the kubelet names pod cgroups for its driver, and carapace refuses parents in the other form: no pod can start")
                    .fix(format!("set cgroup.driver = \"{theirs}\" in carapace's config, or cgroupDriver: {ours} in the kubelet's"))
            }
        }
    });
    let systemd = f.pid1.as_deref() == Some("systemd");
    let found = match &f.pid1 {
        Some(c) if systemd => c.clone(),
        Some(c) => format!("{c} (not systemd)"),
        None => "unreadable".into(),
    };
    out.push(match (config.cgroup.driver, systemd) {
        (CgroupDriver::Systemd, false) => warn("init (PID 1)", found)
            .meaning("with the systemd driver carapace lays the slices out as systemd would, but no systemd manages them")
            .fix("use the cgroupfs driver here (and in the kubelet)"),
        (CgroupDriver::Cgroupfs, true) => warn("init (PID 1)", found)
            .meaning("systemd and the kubelet both manage the cgroup tree (the kubelet's docs advise against it)")
            .fix("use the systemd driver (cgroup.driver here and cgroupDriver in the kubelet)"),
        _ => ok("init (PID 1)", found),
    });
    if let Some((
        p,
        Ok(KubeletKeys {
            runtime_endpoint: Some(endpoint),
            ..
        }),
    )) = &f.kubelet
    {
        let ours = format!("unix://{}", config.grpc.address.display());
        out.push(
            if *endpoint == ours || *endpoint == config.grpc.address.display().to_string() {
                ok("kubelet runtime endpoint", endpoint.clone())
            } else {
                warn(
                    "kubelet runtime endpoint",
                    format!("{endpoint} ({})", p.display()),
                )
                .meaning("the kubelet talks to another socket than carapace's")
                .fix(format!("set containerRuntimeEndpoint: {ours}"))
            },
        );
    }
}

fn privilege_findings(f: &Facts, out: &mut Vec<Finding>) {
    let check = "capability bounding set";
    let Some(mask) = f.cap_bounding else {
        out.push(warn(check, "CapBnd unreadable in /proc/self/status"));
        return;
    };
    let missing = missing_capabilities(mask, f.cap_last);
    let has = |c: &str| !missing.iter().any(|m| m == c);
    let found = if missing.is_empty() {
        format!("all {} capabilities", f.cap_last + 1)
    } else {
        format!("missing {}", missing.join(", "))
    };
    let essential: Vec<&str> = [
        "CAP_SYS_ADMIN",
        "CAP_NET_ADMIN",
        "CAP_SYS_CHROOT",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_KILL",
        "CAP_MKNOD",
    ]
    .into_iter()
    .filter(|c| !has(c))
    .collect();
    out.push(if !essential.is_empty() {
        fail(check, found)
            .meaning(format!("carapace needs {} to make sandboxes and containers", essential.join(", ")))
            .fix("start carapace with a full bounding set (as root, without a CapabilityBoundingSet= in its unit)")
    } else if !has("CAP_SYS_RESOURCE") {
        let current = f.oom_score_adj.map_or_else(
            || "carapace's own score".to_owned(),
            |v| format!("carapace's own score ({v})"),
        );
        warn(check, found)
            .meaning(format!(
                "oom_score_adj below the current value is clamped: containers keep {current}, so the \
                 kubelet's -997 (Guaranteed) and -998 (node-critical) do not shield them from the OOM killer"
            ))
            .fix("start carapace with CAP_SYS_RESOURCE in its bounding set (whatever starts it drops it)")
    } else if !missing.is_empty() {
        warn(check, found).meaning("containers asking for these capabilities run without them")
    } else {
        ok(check, found)
    });
}

fn network_findings(f: &Facts, out: &mut Vec<Finding>) {
    out.push(match f.ip_forward.as_deref() {
        Some("1") => ok("ip_forward", "1"),
        Some(v) => warn("ip_forward", v.to_owned())
            .meaning("pod traffic is not routed off the node unless a CNI plugin turns it on (bridge does with isGateway)")
            .fix("sysctl -w net.ipv4.ip_forward=1 (and in /etc/sysctl.d)"),
        None => warn("ip_forward", "unreadable"),
    });
    out.push(match f.bridge_nf_call_iptables.as_deref() {
        Some("1") => ok("br_netfilter", "bridge-nf-call-iptables = 1"),
        Some(v) => warn("br_netfilter", format!("bridge-nf-call-iptables = {v}"))
            .meaning("traffic between pods on one bridge skips iptables: Service rules (kube-proxy) do not apply to it")
            .fix("sysctl -w net.bridge.bridge-nf-call-iptables=1 (and in /etc/sysctl.d)"),
        None => warn("br_netfilter", "not loaded (no /proc/sys/net/bridge/bridge-nf-call-iptables)")
            .meaning("traffic between pods on one bridge skips iptables: Service rules (kube-proxy) do not apply to it")
            .fix("modprobe br_netfilter; add it to /etc/modules-load.d"),
    });
    out.push(match &f.iptables {
        Ok(v) => {
            let flavour = if v.contains("nf_tables") {
                "nf_tables"
            } else if v.contains("legacy") {
                "legacy"
            } else {
                "unknown flavour"
            };
            ok("iptables", v.clone()).meaning(format!(
                "CNI plugins (portmap) and kube-proxy must use the same flavour: {flavour} here"
            ))
        }
        Err(e) => warn("iptables", format!("iptables -V: {e}"))
            .meaning("the portmap plugin (hostPort) and kube-proxy's iptables mode need it")
            .fix("install iptables"),
    });
}

fn cni_findings(f: &Facts, config: &Config, out: &mut Vec<Finding>) {
    let n = match &f.network {
        Ok(n) => n,
        Err(e) => {
            out.push(
                warn("CNI network", e.clone())
                    .meaning("the node reports NetworkReady=false: only host-network pods run until a network config is there")
                    .fix(format!(
                        "install a network add-on, or write a .conflist into {}",
                        config.cni.conf_dir.display()
                    )),
            );
            return;
        }
    };
    out.push(
        ok(
            "CNI network",
            format!(
                "{} (cniVersion {}, {}, plugins {})",
                n.name,
                n.cni_version,
                n.source.display(),
                n.plugins
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .meaning("the first valid file by name: the pod network"),
    );
    let dirs = config
        .cni
        .bin_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    for p in &n.plugins {
        let check = format!("CNI plugin {}", p.name);
        out.push(match &p.found {
            Ok((path, versions)) if versions.contains(&n.cni_version) => ok(
                &check,
                format!("{}, supports {}", path.display(), versions.join(" ")),
            ),
            Ok((path, versions)) => fail(
                &check,
                format!("{}, supports {}", path.display(), versions.join(" ")),
            )
            .meaning(format!(
                "the network is cniVersion {}: pod network setup fails",
                n.cni_version
            ))
            .fix("install a newer plugin, or lower the network's cniVersion"),
            Err(e) if e.contains("not found") => fail(&check, format!("not in {dirs}"))
                .meaning("pod network setup fails: RunPodSandbox fails for every pod without host network")
                .fix(format!("install the CNI plugins (Debian: containernetworking-plugins) into one of {dirs}")),
            Err(e) => warn(&check, e.clone()).meaning("its VERSION answer was not understood"),
        });
    }
}

fn storage_findings(f: &Facts, config: &Config, out: &mut Vec<Finding>) {
    out.push(match &f.root_space {
        Ok(s) => {
            let found = format!(
                "{} free of {} ({}%), {} of {} inodes free ({}%) at {}",
                gib(s.avail_bytes),
                gib(s.total_bytes),
                percent(s.avail_bytes, s.total_bytes),
                s.avail_files,
                s.total_files,
                percent(s.avail_files, s.total_files),
                s.path.display()
            );
            let low_space = percent(s.avail_bytes, s.total_bytes) < 15;
            // Filesystems without an inode limit report 0 of 0.
            let low_inodes = s.total_files > 0 && percent(s.avail_files, s.total_files) < 5;
            if s.avail_bytes < 1 << 30 {
                fail("root space", found)
                    .meaning("less than 1 GiB: image pulls fail")
                    .fix(format!("free space under {}", config.root.display()))
            } else if low_space || low_inodes {
                warn("root space", found)
                    .meaning("below the kubelet's default eviction thresholds (15% imagefs, 5% inodes): it will evict pods and remove images")
                    .fix(format!("free space under {}", config.root.display()))
            } else {
                ok("root space", found)
            }
        }
        Err(e) => warn("root space", e.clone()),
    });
    out.push(match &f.state_tmpfs {
        Ok((p, true)) => ok("state on tmpfs", format!("{} is on a tmpfs", p.display())),
        Ok((p, false)) => warn(
            "state on tmpfs",
            format!("{} ({}) is not on a tmpfs", config.state.display(), p.display()),
        )
        .meaning("state is written without fsync for a tmpfs a reboot empties: on a disk, records of pods a reboot ended outlive it, and a crash can leave them torn")
        .fix("put state on a tmpfs (e.g. under /run, if /run is one)"),
        Err(e) => warn("state on tmpfs", e.clone()),
    });
    let s = &f.socket;
    let dir = s.path.parent().unwrap_or(Path::new("/"));
    let mut found = match s.dir {
        Some((mode, uid)) => format!("{} mode {mode:04o} uid {uid}", dir.display()),
        None => format!("{} absent (made 0711 at start)", dir.display()),
    };
    match s.file {
        Some((true, _)) if s.answering => found.push_str("; a daemon serves on the socket"),
        Some((true, _)) => found.push_str("; a stale socket (replaced at start)"),
        Some((false, _)) => found.push_str(&format!("; {} is not a socket", s.path.display())),
        None => {}
    }
    out.push(match s.dir {
        Some((mode, uid)) if uid != 0 || mode & 0o022 != 0 => warn("socket directory", found)
            .meaning("someone other than root can replace carapace's socket")
            .fix(format!("chown root {0}; chmod 0711 {0}", dir.display())),
        _ if matches!(s.file, Some((false, _))) => fail("socket directory", found)
            .meaning("carapace cannot bind its socket there")
            .fix(format!("remove {}", s.path.display())),
        _ => ok("socket directory", found),
    });
    out.push(if f.other_runtimes.is_empty() {
        ok("other runtimes", "no containerd or CRI-O socket")
    } else {
        let names: Vec<String> = f
            .other_runtimes
            .iter()
            .map(|(n, p)| format!("{n} ({})", p.display()))
            .collect();
        warn("other runtimes", names.join(", "))
            .meaning("another CRI runtime serves on this node: two runtimes on one CNI network hand out the same pod addresses, and the kubelet must name carapace's socket")
            .fix(format!(
                "stop and disable it, and set the kubelet's containerRuntimeEndpoint to unix://{}",
                config.grpc.address.display()
            ))
    });
}

/// Whether CheckpointContainer can work: CRIU's own `criu check`. Only `carapace check` asks
/// (not the daemon's start, which would spawn CRIU, and its namespace probes, every start).
pub fn criu_finding(criu: Result<&str, carapace_runtime::Error>) -> Finding {
    let check = "checkpoint (CRIU)";
    match criu {
        Ok(version) => ok(check, format!("criu {version} passes `criu check`")),
        Err(e) => {
            let why = match e {
                carapace_runtime::Error::FailedPrecondition(why) => why,
                other => other.to_string(),
            };
            let fix = if why.contains("no `criu` binary") {
                "install CRIU (Debian: apt-get install criu)"
            } else {
                "install a CRIU release that supports this kernel"
            };
            warn(check, why)
                .meaning(
                    "CheckpointContainer (crictl checkpoint, the kubelet's checkpoint API) answers \
                     FailedPrecondition; pods and containers are not affected",
                )
                .fix(fix)
        }
    }
}

/// The registries with a `hosts.toml` in `registry.config_path`, each host answering `GET /v2/`
/// (concurrently, each within [`REGISTRY_TIMEOUT`]).
pub async fn registry_findings(config: &Config) -> Vec<Finding> {
    use carapace_imageservice::hosts::Hosts;
    let dir = &config.registry.config_path;
    let mut folders: Vec<String> = std::fs::read_dir(dir)
        .map(|es| {
            es.filter_map(|e| e.ok())
                .filter(|e| e.path().join("hosts.toml").is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    folders.sort();
    if folders.is_empty() {
        return vec![
            ok("registries", format!("no hosts.toml in {}", dir.display()))
                .meaning("pulls go to each registry's own server"),
        ];
    }
    let mut out = Vec::new();
    let mut probes = tokio::task::JoinSet::new();
    let hosts = Hosts::new(dir);
    for (i, folder) in folders.iter().enumerate() {
        let list = match hosts.for_registry(folder) {
            Ok(l) => l,
            Err(e) => {
                out.push((
                    i,
                    0,
                    fail(&format!("registry {folder}"), e.to_string())
                        .meaning("every pull from this registry fails")
                        .fix("correct the file"),
                ));
                continue;
            }
        };
        let n = list.len();
        for (j, h) in list.into_iter().enumerate() {
            // `_default` without a `server` key gets a made-up server named after the folder.
            if folder == "_default" && h.authority() == "_default" {
                continue;
            }
            let folder = folder.clone();
            probes.spawn(async move {
                let check = format!("registry {folder} host {}", h.authority());
                let f = match carapace_imageservice::ping(&h, REGISTRY_TIMEOUT).await {
                    Ok(code @ (200 | 401)) => ok(&check, format!("GET {}/ answered {code}", h.api)),
                    Ok(code) => warn(&check, format!("GET {}/ answered {code}", h.api))
                        .meaning("not a registry API answer: pulls skip this host"),
                    // The innermost cause says it: refused, timed out, no such name, TLS.
                    Err(e) => warn(
                        &check,
                        format!(
                            "GET {}/: {}",
                            h.api,
                            e.to_string().rsplit(": ").next().unwrap_or_default()
                        ),
                    )
                    .meaning(if j + 1 < n {
                        "pulls skip it and try the next host"
                    } else {
                        "the last host of this registry: pulls fail unless an earlier one has the image"
                    }),
                };
                (i, j, f)
            });
        }
    }
    while let Some(r) = probes.join_next().await {
        if let Ok(f) = r {
            out.push(f);
        }
    }
    out.sort_by_key(|(i, j, _)| (*i, *j));
    out.into_iter().map(|(_, _, f)| f).collect()
}

/// Where the configuration came from, for the report's first line.
pub fn config_source(path: Option<&Path>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None if Path::new(carapace_cri::config::DEFAULT_PATH).exists() => {
            carapace_cri::config::DEFAULT_PATH.to_owned()
        }
        None => format!(
            "{} absent: the defaults",
            carapace_cri::config::DEFAULT_PATH
        ),
    }
}

/// `carapace check`: prints the report; `Ok(true)` when something FAILed.
pub fn run(
    config_path: Option<&Path>,
    kubelet_config: Option<&Path>,
    json: bool,
) -> anyhow::Result<bool> {
    let config = crate::serve::load_config(config_path)?;
    let facts = Facts::probe(&config, config_source(config_path), kubelet_config);
    let mut report = findings(&facts, &config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    report.extend(rt.block_on(registry_findings(&config)));
    report.push(criu_finding(
        carapace_runtime::criu::usable().map(|c| c.version.as_str()),
    ));
    let failed = report.iter().any(|f| f.status == Status::Fail);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report {
            println!("{}", f.line());
        }
    }
    Ok(failed)
}

/// The daemon's start-time run: the same findings, WARN and FAIL ones logged. Probes in a
/// blocking thread, registries after, so neither start nor the CRI waits on them.
pub async fn log_at_start(config: Config) {
    let cfg = config.clone();
    let local = tokio::task::spawn_blocking(move || {
        findings(&Facts::probe(&cfg, config_source(None), None), &cfg)
    })
    .await
    .unwrap_or_default();
    for f in local.iter().filter(|f| f.status != Status::Ok) {
        log(f);
    }
    for f in registry_findings(&config)
        .await
        .iter()
        .filter(|f| f.status != Status::Ok)
    {
        log(f);
    }
}

fn log(f: &Finding) {
    tracing::warn!(
        check = %f.check,
        status = %f.status.word(),
        found = %f.found,
        fix = %f.fix,
        "node check: {}",
        f.meaning
    );
}

/// The raw system call probes. Each passes arguments the kernel rejects before touching any
/// memory of ours, so the answer is ENOSYS (no such call) or EINVAL/EBADF (the call exists).
#[allow(unsafe_code)]
mod sys {
    use super::Syscall;
    use nix::libc;

    fn answer(rc: libc::c_long) -> Syscall {
        if rc >= 0 {
            return Syscall::Present;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOSYS) => Syscall::Missing,
            Some(libc::EINVAL | libc::EBADF | libc::ENOENT) => Syscall::Present,
            _ => Syscall::Unknown(e.to_string()),
        }
    }

    pub fn probe_mount_setattr() -> Syscall {
        // SAFETY: a size of 0 is refused with EINVAL before the kernel reads the path or the
        // attributes; both are valid pointers anyway (a static empty string, a null attr with
        // size 0). No fd is created.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                -1,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                std::ptr::null::<u8>(),
                0usize,
            )
        };
        answer(rc)
    }

    pub fn probe_open_tree() -> Syscall {
        // SAFETY: an unknown flag bit is refused with EINVAL before the path is read; the path
        // is a static empty string. No fd is created.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                -1,
                c"".as_ptr(),
                0x8000_0000u32 as libc::c_uint,
            )
        };
        answer(rc)
    }

    pub fn probe_pidfd_open() -> Syscall {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes two integers and touches no memory of ours.
        let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, std::process::id(), 0) };
        if rc >= 0 {
            // SAFETY: a non-negative return is a new fd nothing else owns; dropping closes it.
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(rc as libc::c_int) });
        }
        answer(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_that_cannot_run_is_a_warning_with_its_reason() {
        let f = criu_finding(Err(carapace_runtime::Error::FailedPrecondition(
            "criu 3.17.1 cannot work on this kernel".into(),
        )));
        assert_eq!(f.status, Status::Warn);
        assert_eq!(f.found, "criu 3.17.1 cannot work on this kernel");
        assert!(f.fix.contains("supports this kernel"), "{f:?}");
        let f = criu_finding(Err(carapace_runtime::Error::FailedPrecondition(
            "no `criu` binary is installed".into(),
        )));
        assert!(f.fix.contains("apt-get install criu"), "{f:?}");
        assert_eq!(criu_finding(Ok("4.1")).status, Status::Ok);
    }

    const MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime shared:5 - cgroup cgroup rw,cpuset,clone_children
36 31 0:33 / /sys/fs/cgroup/net_cls,net_prio rw - cgroup cgroup rw,net_cls,net_prio
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 22 0:40 / /mnt/with\\040space rw - cgroup cgroup rw,pids
";

    #[test]
    fn mountinfo_gives_cgroup_mounts_and_their_controllers() {
        let ms = parse_mountinfo_cgroups(MOUNTINFO);
        let names: Vec<(&str, u8, Vec<&str>)> = ms
            .iter()
            .map(|m| {
                (
                    m.mount_point.to_str().unwrap(),
                    m.version,
                    m.controllers.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("/sys/fs/cgroup/cpu", 1, vec!["cpu"]),
                ("/sys/fs/cgroup/cpuset", 1, vec!["cpuset"]),
                (
                    "/sys/fs/cgroup/net_cls,net_prio",
                    1,
                    vec!["net_cls", "net_prio"]
                ),
                ("/sys/fs/cgroup/systemd", 1, vec!["name=systemd"]),
                ("/sys/fs/cgroup/unified", 2, vec![]),
                ("/mnt/with space", 1, vec!["pids"]),
            ]
        );
        assert_eq!(layout(&ms), Layout::Hybrid);
    }

    #[test]
    fn layouts() {
        let m = |p: &str, v| CgroupMount {
            mount_point: p.into(),
            version: v,
            controllers: vec![],
        };
        assert_eq!(layout(&[m("/sys/fs/cgroup", 2)]), Layout::V2);
        assert_eq!(layout(&[m("/sys/fs/cgroup/memory", 1)]), Layout::V1);
        assert_eq!(
            layout(&[
                m("/sys/fs/cgroup/memory", 1),
                m("/sys/fs/cgroup/unified", 2)
            ]),
            Layout::Hybrid
        );
        assert_eq!(layout(&[m("/elsewhere", 2)]), Layout::None);
        assert_eq!(layout(&[]), Layout::None);
    }

    #[test]
    fn proc_cgroups_gives_hierarchy_and_enabled() {
        let cs = parse_proc_cgroups(
            "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\nhugetlb\t0\t1\t1\nmemory\t4\t568\t0\nbroken\n",
        );
        assert_eq!(
            cs,
            [
                KernelController {
                    name: "cpuset".into(),
                    hierarchy: 3,
                    enabled: true
                },
                KernelController {
                    name: "hugetlb".into(),
                    hierarchy: 0,
                    enabled: true
                },
                KernelController {
                    name: "memory".into(),
                    hierarchy: 4,
                    enabled: false
                },
            ]
        );
    }

    #[test]
    fn kubelet_cgroup_driver_from_yaml_and_json() {
        let yaml = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                    authentication:\n  cgroupDriver: nested\ncgroupDriver: \"systemd\" # set by kubeadm\n";
        assert_eq!(
            kubelet_key(yaml, "cgroupDriver").as_deref(),
            Some("systemd")
        );
        assert_eq!(
            kubelet_key("cgroupDriver: cgroupfs\n", "cgroupDriver").as_deref(),
            Some("cgroupfs")
        );
        assert_eq!(
            kubelet_key("cgroupDriver:   'systemd'\n", "cgroupDriver").as_deref(),
            Some("systemd")
        );
        assert_eq!(
            kubelet_key("kind: KubeletConfiguration\n", "cgroupDriver"),
            None
        );
        assert_eq!(kubelet_key("cgroupDriverX: a\n", "cgroupDriver"), None);
        assert_eq!(
            kubelet_key(
                r#"{"kind":"KubeletConfiguration","cgroupDriver":"systemd"}"#,
                "cgroupDriver"
            )
            .as_deref(),
            Some("systemd")
        );
        assert_eq!(
            kubelet_key(
                "containerRuntimeEndpoint: unix:///run/carapace/carapace.sock\n",
                "containerRuntimeEndpoint"
            )
            .as_deref(),
            Some("unix:///run/carapace/carapace.sock")
        );
    }

    #[test]
    fn bounding_set_decodes_to_missing_names() {
        // This node's: every capability up to 40 but CAP_SYS_RESOURCE (24).
        assert_eq!(
            missing_capabilities(0x1fffeffffff, 40),
            ["CAP_SYS_RESOURCE"]
        );
        assert!(missing_capabilities(0x1ffffffffff, 40).is_empty());
        assert_eq!(
            missing_capabilities(0x1ffffffffff & !(1 << 21) & !(1 << 12), 40),
            ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
        );
        // A newer kernel's capability past the table keeps a name.
        assert_eq!(missing_capabilities(0x1ffffffffff, 41), ["capability 41"]);
    }

    #[test]
    fn page_sizes_are_named_as_the_kubelet_names_them() {
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1048576), "1GB");
        assert_eq!(page_size_name(64), "64KB");
    }

    /// The controllers whose limits the runtime skips, as runc and containerd do, where the node
    /// lacks them (the runtime's `ContainerCgroup::skip_unavailable`, and the pod cgroup's cpu
    /// and memory).
    const SKIPPED_WHEN_ABSENT: &[&str] = &[
        "cpu", "cpuset", "memory", "pids", "blkio", "hugetlb", "net_cls", "net_prio", "rdma",
    ];

    /// Every controller whose limits the runtime skips where the node lacks it is named so in its
    /// finding, on v1 and v2; the others' findings say what they cost instead.
    #[test]
    fn every_controller_the_runtime_skips_is_said_to_be_skipped() {
        let sizes = ["2MB".to_owned(), "1GB".to_owned()];
        for name in SKIPPED_WHEN_ABSENT {
            assert!(CONTROLLERS.contains(name), "{name} is not checked");
            for v2 in [false, true] {
                let (_, meaning) = absent_controller(name, v2, &sizes);
                assert!(
                    meaning.contains("skips them") || meaning.contains("is skipped"),
                    "{name} (v2 {v2}): {meaning}"
                );
            }
        }
        for name in CONTROLLERS
            .iter()
            .filter(|c| !SKIPPED_WHEN_ABSENT.contains(c))
        {
            let (_, meaning) = absent_controller(name, false, &sizes);
            assert!(!meaning.contains("skip"), "{name}: {meaning}");
        }
        // What the node's missing hugetlb means, as the e2e check reads it here.
        let (status, meaning) = absent_controller("hugetlb", false, &sizes);
        assert_eq!(status, Status::Warn);
        assert!(meaning.contains("skips them") && meaning.contains("2MB, 1GB"));
        // The CRI cannot ask for these: nothing a kubelet runs misses them.
        for name in ["net_cls", "net_prio", "rdma"] {
            assert_eq!(
                absent_controller(name, false, &sizes).0,
                Status::Ok,
                "{name}"
            );
        }
        // Without these a kubelet container runs unlimited: still a failure of the node.
        for name in ["cpu", "cpuset", "memory", "devices"] {
            assert_eq!(
                absent_controller(name, true, &sizes).0,
                Status::Fail,
                "{name}"
            );
        }
        assert!(
            absent_controller("memory", false, &sizes)
                .1
                .contains("kubelet refuses")
        );
        assert!(
            !absent_controller("memory", true, &sizes)
                .1
                .contains("kubelet refuses")
        );
    }

    #[test]
    fn a_line_is_one_line_with_the_status_first() {
        let f = warn("cgroup hugetlb", "not\nmounted").meaning("m").fix("f");
        assert_eq!(f.line(), "WARN cgroup hugetlb: not mounted — m. Fix: f");
        assert_eq!(ok("kernel", "6.1").line(), "OK   kernel: 6.1");
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["status"], "WARN");
        assert_eq!(json["check"], "cgroup hugetlb");
    }
}
