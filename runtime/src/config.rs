//! The plain-data description of a container that the CRI layer fills in from the CRI
//! `ContainerConfig`, the sandbox and the image config. It owns no behaviour beyond validation and
//! must never name gRPC or CRI types: `runtime` is tested and used without them.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Everything needed to create one container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The container id: `[A-Za-z0-9_.-]{1,128}`, unique on the node.
    pub id: String,
    pub process: Process,
    pub rootfs: RootFs,
    pub mounts: Vec<Mount>,
    /// Host devices the container is given (CRI `devices`), besides the default ones.
    #[serde(default)]
    pub devices: Vec<Device>,
    pub namespaces: Namespaces,
    pub security: Security,
    pub cgroup: CgroupConfig,
    /// Set when a new UTS namespace is made; ignored when the pod's is joined (the pod set it).
    pub hostname: Option<String>,
    /// Where the monitor writes the CRI-format log; `None` discards output.
    pub log_path: Option<PathBuf>,
    /// Signal sent first by `stop` (the image's StopSignal); SIGTERM when `None`.
    pub stop_signal: Option<i32>,
    /// Annotations copied into the OCI spec.
    pub annotations: BTreeMap<String, String>,
    /// The OCI runtime of the pod's runtime handler; `None`: the built-in executor (handler `""`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci_runtime: Option<OciRuntime>,
}

/// An OCI runtime run through its command line (`runc`, `crun`, `runsc`...): what a
/// `[runtimes.<name>]` section of the daemon's configuration names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciRuntime {
    /// The handler's name, as RunPodSandbox gave it.
    pub handler: String,
    /// The runtime's binary.
    pub binary: PathBuf,
    /// Its state directory (`--root`).
    pub root: PathBuf,
    /// Global options put before every subcommand (e.g. `--debug`).
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Process {
    /// argv; `args[0]` is looked up in the container's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries, image first then config (the caller merges). Bytes, not text: CRI
    /// values are bytes since cri-api v0.36.3 and reach the process as they are.
    #[serde(with = "env_json")]
    pub env: Vec<OsString>,
    /// Absolute working directory inside the container; `/` when empty.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub rlimits: Vec<Rlimit>,
    /// Asked-for OOM score; the executor clamps it to what it may set.
    pub oom_score_adj: Option<i32>,
    pub no_new_privileges: bool,
    /// A pseudo-terminal from the monitor as stdin, stdout, stderr and controlling terminal.
    pub terminal: bool,
    /// Keep the container's stdin open in the monitor, for attach (else it reads /dev/null).
    #[serde(default)]
    pub stdin: bool,
    /// Close the container's stdin when the first attach session's input ends.
    #[serde(default)]
    pub stdin_once: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_NOFILE`, `RLIMIT_NPROC`, ...
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// The container's root: the image's snapshot chain read-only, under this container's own writable
/// upper layer (created by the runtime under its root dir).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RootFs {
    /// Lower dirs, topmost first (overlayfs `lowerdir` order).
    pub lower_dirs: Vec<PathBuf>,
    /// Remount `/` read-only once everything is mounted.
    pub readonly: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Propagation {
    #[default]
    Private,
    HostToContainer,
    Bidirectional,
}

/// A bind mount from the host (a CRI mount, or the sandbox's hosts/resolv.conf/hostname/shm), or
/// an image volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mount {
    /// Empty for an image volume.
    pub host_path: PathBuf,
    pub container_path: String,
    pub readonly: bool,
    pub propagation: Propagation,
    /// Every mount below the source read-only too (`readonly` alone reaches only the top one);
    /// only with `readonly` and private propagation, whose later submounts cannot arrive.
    #[serde(default)]
    pub recursive_readonly: bool,
    /// The source is this image rather than `host_path` (CRI `Mount.image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageVolume>,
}

/// An image mounted as a volume, always read-only: its layers stacked by overlayfs with no upper
/// layer, whole or only `sub_path` of it (see [`crate::image_volume`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageVolume {
    /// The image's layer dirs, topmost first (overlayfs `lowerdir` order).
    pub layers: Vec<PathBuf>,
    /// A path inside the image, relative and without `..`; empty for the whole image.
    #[serde(default)]
    pub sub_path: String,
}

impl Mount {
    /// An image volume at `container_path`: read-only and private, as nothing in an image can
    /// change or propagate.
    pub fn image_volume(container_path: impl Into<String>, image: ImageVolume) -> Self {
        Self {
            host_path: PathBuf::new(),
            container_path: container_path.into(),
            readonly: true,
            propagation: Propagation::Private,
            recursive_readonly: false,
            image: Some(image),
        }
    }
}

impl ImageVolume {
    /// The sub path's own text: relative, no `..` component, no NUL. Where it leads (a symlink
    /// out of the image, nothing at all) is checked against the image at create.
    pub fn check_sub_path(&self) -> Result<()> {
        let p = &self.sub_path;
        let bad = if p.starts_with('/') {
            Some("is absolute")
        } else if p.contains('\0') {
            Some("contains a NUL byte")
        } else if p.split('/').any(|c| c == "..") {
            Some("contains `..`")
        } else {
            None
        };
        match bad {
            Some(why) => Err(Error::InvalidArgument(format!(
                "image_sub_path {p:?} {why}: it must be a path inside the image"
            ))),
            None => Ok(()),
        }
    }
}

/// A host device node made in the container (CRI `Device`), and allowed by its device cgroup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Device {
    /// The host's device node (a symlink to one is followed: it is the node operator's input).
    pub host_path: PathBuf,
    /// Where the node appears in the container.
    pub container_path: String,
    /// What the container may do with it: a non-empty subset of `rwm` (read, write, mknod).
    pub permissions: String,
}

/// A namespace is either joined by path (the pod's, pinned by the sandbox) or new.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum NsMode {
    /// A fresh namespace for this container.
    #[default]
    New,
    /// Join the namespace at this path (e.g. `/run/carapace/netns/<pod>` or `/proc/<pid>/ns/pid`).
    Join(PathBuf),
    /// Stay in the host's (the monitor's) namespace: hostNetwork / hostPID / hostIPC.
    Host,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Namespaces {
    pub network: NsMode,
    pub ipc: NsMode,
    pub uts: NsMode,
    pub pid: NsMode,
    /// The pod's user namespace, joined last (just before the process half), with its maps: the
    /// root and every bind are id-mapped through it. `None`: the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserNs>,
}

/// A user namespace to join and the maps it was made with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserNs {
    pub path: PathBuf,
    pub uids: Vec<IdMap>,
    pub gids: Vec<IdMap>,
}

/// `length` ids from `container_id` inside are `host_id` onwards outside.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum SeccompProfile {
    /// The equivalent of Docker's / containerd's default profile.
    #[default]
    RuntimeDefault,
    /// An OCI/Docker-format JSON profile read from this file at create time.
    Localhost(PathBuf),
    Unconfined,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Security {
    /// Kubernetes' `privileged`: every capability, no masked/readonly paths, no seccomp, rw /sys.
    pub privileged: bool,
    /// Capability names (`CAP_NET_ADMIN` or `NET_ADMIN`, `ALL`) added to containerd's default set.
    pub add_capabilities: Vec<String>,
    /// Capability names dropped from the set (`ALL` drops all; adds are applied after an ALL drop).
    pub drop_capabilities: Vec<String>,
    pub seccomp: SeccompProfile,
    /// Masked paths; `None` means containerd's defaults (none when privileged).
    pub masked_paths: Option<Vec<String>>,
    /// Read-only paths; `None` means containerd's defaults (none when privileged).
    pub readonly_paths: Option<Vec<String>>,
}

/// The container's cgroup: `<parent>/<id>` on every controller (cgroupfs driver).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CgroupConfig {
    /// The pod's cgroup, relative to each hierarchy's root (e.g. `kubepods/besteffort/pod<uid>`).
    pub parent: String,
    pub resources: Resources,
}

/// Resource limits, as the CRI's `LinuxContainerResources`; `None`/0 means unset.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Bytes.
    pub memory_limit: Option<i64>,
    /// Memory + swap, bytes (v1 `memsw` semantics, as the kubelet sends it).
    pub memory_swap_limit: Option<i64>,
    pub pids_limit: Option<i64>,
    /// Page size (`2MB`, `1GB`) → limit in bytes.
    pub hugepage_limits: BTreeMap<String, u64>,
    /// cgroup v2 file → value, written as is; the cgroup refuses a key it has no file for.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unified: BTreeMap<String, String>,
}

/// The kernel's CFS bandwidth bounds, µs (`tg_set_cfs_bandwidth`): a period of 1 ms to 1 s, a
/// quota of at least 1 ms and at most `max_cfs_runtime` (2^44 - 1 µs); -1 is no quota.
const CFS_PERIOD_US: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
const CFS_QUOTA_US: std::ops::RangeInclusive<i64> = 1_000..=(1 << 44) - 1;

/// A CPU or memory-node list (`0-3,8`): numbers and ranges `a-b` with `a <= b`, comma-separated,
/// as the ranges it names, merged. Stricter than the kernel, which also takes strides and stray
/// commas: no client needs those, and a list the kernel would half-read is refused whole.
fn parse_list(s: &str) -> Option<Vec<(u32, u32)>> {
    let num = |x: &str| {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        x.parse::<u32>().ok()
    };
    let mut ranges = s
        .split(',')
        .map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b) = (num(a)?, num(b)?);
            (a <= b).then_some((a, b))
        })
        .collect::<Option<Vec<_>>>()?;
    ranges.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    Some(merged)
}

impl Resources {
    /// What the kernel would refuse whatever the node: limits outside its bounds, cpuset lists
    /// that are not lists, swap below memory. Refused here, before a cgroup exists, naming the
    /// field and value.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, value: &dyn std::fmt::Display, why: &str| {
            Err(Error::InvalidArgument(format!("{field} {value} {why}")))
        };
        if let Some(p) = self.cpu_period
            && !CFS_PERIOD_US.contains(&p)
        {
            return bad(
                "cpu_period",
                &p,
                "is outside the kernel's 1000..=1000000 µs",
            );
        }
        if let Some(q) = self.cpu_quota
            && q != -1
            && !CFS_QUOTA_US.contains(&q)
        {
            return bad(
                "cpu_quota",
                &q,
                "is neither -1 (none) nor within the kernel's 1000..=17592186044415 µs",
            );
        }
        for (field, list) in [
            ("cpuset_cpus", &self.cpuset_cpus),
            ("cpuset_mems", &self.cpuset_mems),
        ] {
            if let Some(l) = list.as_deref().filter(|l| !l.is_empty())
                && parse_list(l).is_none()
            {
                return bad(
                    field,
                    &format!("{l:?}"),
                    "is not a list of numbers and ranges a-b",
                );
            }
        }
        for (field, v) in [
            ("memory_limit", self.memory_limit),
            ("memory_swap_limit", self.memory_swap_limit),
            ("pids_limit", self.pids_limit),
        ] {
            if let Some(v) = v.filter(|v| *v < -1) {
                return bad(field, &v, "is negative");
            }
        }
        // v1's memory.memsw.limit_in_bytes is memory plus swap: never below the memory limit
        // (an unset or -1 memory limit is unlimited, which no swap limit reaches).
        if let Some(swap) = self.memory_swap_limit.filter(|s| *s > 0) {
            match self.memory_limit.filter(|m| *m > 0) {
                Some(m) if swap >= m => {}
                Some(m) => {
                    return bad(
                        "memory_swap_limit",
                        &swap,
                        &format!("is below memory_limit {m} (it counts memory plus swap)"),
                    );
                }
                None => {
                    return bad(
                        "memory_swap_limit",
                        &swap,
                        "is set without a memory_limit (it counts memory plus swap)",
                    );
                }
            }
        }
        Ok(())
    }

    /// What this node cannot give: CPUs or memory nodes that are not online. Read from sysfs on
    /// each call (CPUs come and go with hotplug); only when a cpuset is asked for.
    pub fn check_node(&self) -> Result<()> {
        self.check_node_in(std::path::Path::new("/sys/devices/system"))
    }

    fn check_node_in(&self, sys: &std::path::Path) -> Result<()> {
        // A kernel without NUMA has no node directory: node 0 is all there is.
        for (field, list, file, what, missing) in [
            ("cpuset_cpus", &self.cpuset_cpus, "cpu/online", "CPU", None),
            (
                "cpuset_mems",
                &self.cpuset_mems,
                "node/online",
                "memory node",
                Some("0"),
            ),
        ] {
            let Some(list) = list.as_deref().filter(|l| !l.is_empty()) else {
                continue;
            };
            let Some(want) = parse_list(list) else {
                return Err(Error::InvalidArgument(format!(
                    "{field} {list:?} is not a list of numbers and ranges a-b"
                )));
            };
            let online = match (std::fs::read_to_string(sys.join(file)), missing) {
                (Ok(t), _) => t,
                (Err(e), Some(m)) if e.kind() == std::io::ErrorKind::NotFound => m.to_owned(),
                // Unreadable: the kernel still refuses what it cannot give, and create undoes.
                (Err(_), _) => continue,
            };
            let online_text = online.trim();
            let Some(online) = parse_list(online_text) else {
                continue;
            };
            for (a, b) in want {
                if !online.iter().any(|&(x, y)| x <= a && b <= y) {
                    let which = if a == b {
                        format!("{a}")
                    } else {
                        format!("{a}-{b}")
                    };
                    return Err(Error::InvalidArgument(format!(
                        "{field} {list:?} names {what} {which}, which is not online \
                         (online: {online_text})"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The annotation recording which PID namespace a container joining another container's (CRI
/// `TARGET`) was created against: `<st_dev>:<st_ino>` of that namespace's file. The namespace is
/// named by `/proc/<pid>/ns/pid`, and a pid is reused once its process exits: at start the file
/// opened must still be the same namespace. Set by the CRI layer, never by a client.
pub const PID_NAMESPACE_ANNOTATION: &str = "io.carapace.pid-namespace";

/// The PID namespace identity recorded in `annotations` (see [`PID_NAMESPACE_ANNOTATION`]).
pub fn pid_namespace_identity(
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> Result<Option<(u64, u64)>> {
    let Some(v) = annotations.and_then(|a| a.get(PID_NAMESPACE_ANNOTATION)) else {
        return Ok(None);
    };
    v.split_once(':')
        .and_then(|(dev, ino)| Some((dev.parse().ok()?, ino.parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            Error::InvalidArgument(format!("annotation {PID_NAMESPACE_ANNOTATION}={v:?}"))
        })
}

/// The environment as JSON, where the container's record and spec keep it: an array whose
/// entries that are UTF-8 are strings, as every entry was before values became bytes (so state
/// written then still loads), and any other entry is `{"hex": "<its bytes in hex>"}`. Lossless,
/// and the common case reads as it always did.
pub mod env_json {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};

    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Hex {
        hex: String,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Text(String),
        Bytes(Hex),
    }

    pub fn serialize<S: Serializer>(env: &[OsString], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(env.len()))?;
        for e in env {
            match e.to_str() {
                Some(text) => seq.serialize_element(text)?,
                None => seq.serialize_element(&Hex {
                    hex: to_hex(e.as_bytes()),
                })?,
            }
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OsString>, D::Error> {
        Vec::<Entry>::deserialize(d)?
            .into_iter()
            .map(|e| match e {
                Entry::Text(t) => Ok(OsString::from(t)),
                Entry::Bytes(Hex { hex }) => from_hex(&hex)
                    .map(OsString::from_vec)
                    .ok_or_else(|| serde::de::Error::custom("env entry: \"hex\" is not hex bytes")),
            })
            .collect()
    }

    /// `env` as a JSON array in this encoding.
    pub fn to_string(env: &[OsString]) -> serde_json::Result<String> {
        let mut out = Vec::new();
        serialize(env, &mut serde_json::Serializer::new(&mut out))?;
        // serde_json writes UTF-8 only.
        String::from_utf8(out).map_err(serde::ser::Error::custom)
    }

    /// A JSON array in this encoding.
    pub fn from_str(s: &str) -> serde_json::Result<Vec<OsString>> {
        let mut d = serde_json::Deserializer::from_str(s);
        let env = deserialize(&mut d)?;
        d.end()?;
        Ok(env)
    }

    fn to_hex(b: &[u8]) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        b.iter()
            .flat_map(|&x| [DIGITS[usize::from(x >> 4)], DIGITS[usize::from(x & 0xf)]])
            .map(char::from)
            .collect()
    }

    fn from_hex(s: &str) -> Option<Vec<u8>> {
        let digit = |c: u8| {
            char::from(c)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
        };
        let s = s.as_bytes();
        if s.len() % 2 != 0 {
            return None;
        }
        s.chunks_exact(2)
            .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
            .collect()
    }
}

/// Files under `/proc` a volume may cover: the ones lxcfs emulates, runc's list (anything else
/// there is the kernel's interface to the container's own processes and the host's sysctls).
pub(crate) const PROC_MOUNTABLE: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
    "/proc/sys/crypto/fips_enabled",
];

/// `path` with `//`, `.` and `..` resolved lexically (`..` stops at `/`), as the kernel walks
/// it in the container's root before symlinks come in.
fn lexical_clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A volume over `/proc` could replace the files the runtime and the kernel's LSMs trust there
/// (or give the host's `/proc/sys` writable); one over the cgroup filesystem could hand an
/// unprivileged container a writable cgroup tree. A privileged container may mount cgroupfs
/// itself, so it keeps that (kind and systemd-in-a-pod ask for it).
fn check_destination(dest: &str, privileged: bool) -> Result<()> {
    let clean = lexical_clean(dest);
    let within = |dir: &str| {
        clean == dir
            || clean
                .strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if within("/proc") && !PROC_MOUNTABLE.contains(&clean.as_str()) {
        return Err(Error::InvalidArgument(format!(
            "mount destination {dest:?} is inside /proc: only {} may be mounted over",
            PROC_MOUNTABLE.join(", ")
        )));
    }
    if within("/sys/fs/cgroup") && !privileged {
        return Err(Error::InvalidArgument(format!(
            "mount destination {dest:?} is inside /sys/fs/cgroup: only a privileged container \
             may mount over its cgroup filesystem"
        )));
    }
    Ok(())
}

/// Ids are path components and cgroup names: keep them boring.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "invalid container id {id:?}"
        )))
    }
}

impl ContainerConfig {
    /// Checks what can be checked without touching the system (paths are checked at create).
    pub fn validate(&self) -> Result<()> {
        validate_id(&self.id)?;
        if self.process.args.is_empty() || self.process.args[0].is_empty() {
            return Err(Error::InvalidArgument("no command to run".into()));
        }
        if !self.process.cwd.is_empty() && !self.process.cwd.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "working directory {:?} is not absolute",
                self.process.cwd
            )));
        }
        if self.rootfs.lower_dirs.is_empty() {
            return Err(Error::InvalidArgument("rootfs has no lower dirs".into()));
        }
        if let Some(rt) = &self.oci_runtime
            && let Some(m) = self.mounts.iter().find(|m| m.image.is_some())
        {
            // The runtime would be handed a mount type only the built-in executor knows.
            return Err(Error::InvalidArgument(format!(
                "image volume {}: not supported with runtime handler {:?}",
                m.container_path, rt.handler
            )));
        }
        for m in &self.mounts {
            if !m.container_path.starts_with('/') {
                return Err(Error::InvalidArgument(format!(
                    "mount destination {:?} is not absolute",
                    m.container_path
                )));
            }
            match &m.image {
                Some(v) => {
                    if v.layers.is_empty() || v.layers.iter().any(|l| !l.is_absolute()) {
                        return Err(Error::InvalidArgument(format!(
                            "image volume {} has no layers or a relative one",
                            m.container_path
                        )));
                    }
                    v.check_sub_path()?;
                }
                None if !m.host_path.is_absolute() => {
                    return Err(Error::InvalidArgument(format!(
                        "mount source {} is not absolute",
                        m.host_path.display()
                    )));
                }
                None => {}
            }
            check_destination(&m.container_path, self.security.privileged)?;
            if m.recursive_readonly && (!m.readonly || m.propagation != Propagation::Private) {
                return Err(Error::InvalidArgument(format!(
                    "recursive read-only mount {} must be read-only with private propagation",
                    m.container_path
                )));
            }
        }
        for d in &self.devices {
            if !d.container_path.starts_with('/') || d.container_path.contains('\0') {
                return Err(Error::InvalidArgument(format!(
                    "device path {:?} in the container is not absolute",
                    d.container_path
                )));
            }
            if d.permissions.is_empty() || !d.permissions.chars().all(|c| "rwm".contains(c)) {
                return Err(Error::InvalidArgument(format!(
                    "device {} permissions {:?} are not a subset of \"rwm\"",
                    d.container_path, d.permissions
                )));
            }
        }
        for e in &self.process.env {
            let e = e.as_bytes();
            if !e.contains(&b'=') || e.contains(&0) {
                // The key only: the value may be a secret, and errors reach logs and clients.
                let key = e.split(|&b| b == b'=').next().unwrap_or_default();
                return Err(Error::InvalidArgument(format!(
                    "bad env entry {:?}",
                    String::from_utf8_lossy(key)
                )));
            }
        }
        if self.cgroup.parent.split('/').any(|c| c == "..") {
            return Err(Error::InvalidArgument(
                "cgroup parent escapes the hierarchy".into(),
            ));
        }
        self.cgroup.resources.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_a_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        validate_id("abc-123_x.y").unwrap();
    }

    /// The least config that validates: an id, a command, a layer.
    fn runnable() -> ContainerConfig {
        let mut c = ContainerConfig {
            id: "c1".into(),
            ..Default::default()
        };
        c.process.args = vec!["sh".into()];
        c.rootfs.lower_dirs = vec!["/l".into()];
        c
    }

    #[test]
    fn relative_mount_destinations_are_refused() {
        let mut c = runnable();
        c.validate().unwrap();
        c.mounts.push(Mount {
            host_path: "/tmp".into(),
            container_path: "data".into(),
            readonly: false,
            propagation: Propagation::Private,
            recursive_readonly: false,
            image: None,
        });
        assert!(matches!(c.validate(), Err(Error::InvalidArgument(_))));
        c.mounts[0].container_path = "/data".into();
        c.validate().unwrap();
        c.mounts[0].recursive_readonly = true;
        assert!(matches!(c.validate(), Err(Error::InvalidArgument(_))));
        c.mounts[0].readonly = true;
        c.validate().unwrap();
        c.mounts[0].propagation = Propagation::HostToContainer;
        assert!(matches!(c.validate(), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn image_sub_paths_must_stay_inside_the_image() {
        let mut c = runnable();
        let volume = |sub_path: &str| {
            Mount::image_volume(
                "/vol",
                ImageVolume {
                    layers: vec!["/snapshots/a/fs".into()],
                    sub_path: sub_path.into(),
                },
            )
        };
        for ok in ["", ".", "data", "data/", "./data/x", "a/.../b", "..a/b.."] {
            c.mounts = vec![volume(ok)];
            c.validate().unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for bad in ["/data", "/", "..", "../x", "data/..", "a/../../b", "a\0b"] {
            c.mounts = vec![volume(bad)];
            let e = c.validate().unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains("image_sub_path")),
                "{bad:?}: {e}"
            );
        }
        // Its layers are absolute paths, and there is at least one.
        for layers in [vec![], vec![PathBuf::from("snapshots/a/fs")]] {
            let mut m = volume("");
            m.image = Some(ImageVolume {
                layers,
                sub_path: String::new(),
            });
            c.mounts = vec![m];
            assert!(matches!(c.validate(), Err(Error::InvalidArgument(_))));
        }
    }

    #[test]
    fn image_volumes_are_refused_with_an_oci_runtime_naming_the_handler() {
        let mut c = runnable();
        c.mounts = vec![Mount::image_volume(
            "/vol",
            ImageVolume {
                layers: vec!["/snapshots/a/fs".into()],
                sub_path: String::new(),
            },
        )];
        c.validate().unwrap();
        c.oci_runtime = Some(OciRuntime {
            handler: "runc".into(),
            binary: "/usr/sbin/runc".into(),
            root: "/run/r".into(),
            args: vec![],
        });
        let e = c.validate().unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("/vol") && m.contains("runc")),
            "{e}"
        );
    }

    #[test]
    fn volumes_over_proc_and_the_cgroup_filesystem_are_refused() {
        for bad in [
            "/proc",
            "/proc/",
            "//proc",
            "/proc/sys",
            "/proc/./sys",
            "/proc/sys/../sys/kernel",
            "/tmp/../proc/1",
            "/proc/self/attr",
            "/proc/cpuinfo/../sys",
        ] {
            let e = check_destination(bad, true).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains(bad)),
                "{bad:?}: {e}"
            );
        }
        for bad in [
            "/sys/fs/cgroup",
            "/sys/fs//cgroup/memory",
            "/sys/./fs/cgroup/",
        ] {
            assert!(check_destination(bad, false).is_err(), "{bad:?}");
            check_destination(bad, true).unwrap();
        }
        for ok in [
            "/proc/cpuinfo",
            "//proc/./meminfo",
            "/procfs",
            "/data/proc",
            "/sys/fs/cgroupx",
            "/sys/class",
        ] {
            check_destination(ok, false).unwrap();
        }
    }

    #[test]
    fn resources_the_kernel_refuses_are_refused_naming_field_and_value() {
        let ok = |r: Resources| r.validate().unwrap();
        let bad = |r: Resources, field: &str, value: &str| {
            let e = r.validate().unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains(field) && m.contains(value)),
                "{field} {value}: {e}"
            );
        };
        let r = Resources::default;
        ok(r());
        ok(Resources {
            cpu_period: Some(100_000),
            cpu_quota: Some(1_000),
            cpuset_cpus: Some("0-1,3,5-5".into()),
            cpuset_mems: Some("0".into()),
            memory_limit: Some(64 << 20),
            memory_swap_limit: Some(64 << 20),
            ..r()
        });
        ok(Resources {
            cpu_quota: Some(-1),
            memory_limit: Some(-1),
            memory_swap_limit: Some(-1),
            ..r()
        });
        for (cpus, value) in [("99x", "99x"), ("0-", "0-"), ("3-1", "3-1"), ("0,", "0,")] {
            bad(
                Resources {
                    cpuset_cpus: Some(cpus.into()),
                    ..r()
                },
                "cpuset_cpus",
                value,
            );
        }
        bad(
            Resources {
                cpuset_mems: Some("-1".into()),
                ..r()
            },
            "cpuset_mems",
            "-1",
        );
        for q in [1, 999, -2, 1 << 44] {
            bad(
                Resources {
                    cpu_quota: Some(q),
                    ..r()
                },
                "cpu_quota",
                &q.to_string(),
            );
        }
        for p in [1, 999, 1_000_001, 1 << 40] {
            bad(
                Resources {
                    cpu_period: Some(p),
                    ..r()
                },
                "cpu_period",
                &p.to_string(),
            );
        }
        bad(
            Resources {
                memory_limit: Some(64 << 20),
                memory_swap_limit: Some(32 << 20),
                ..r()
            },
            "memory_swap_limit",
            "33554432",
        );
        bad(
            Resources {
                memory_swap_limit: Some(32 << 20),
                ..r()
            },
            "memory_swap_limit",
            "33554432",
        );
        bad(
            Resources {
                memory_limit: Some(-5),
                ..r()
            },
            "memory_limit",
            "-5",
        );
    }

    #[test]
    fn cpusets_name_only_what_is_online() {
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sys.path().join("cpu")).unwrap();
        std::fs::write(sys.path().join("cpu/online"), "0-3,6-7\n").unwrap();
        let cpus = |c: &str| Resources {
            cpuset_cpus: Some(c.into()),
            ..Default::default()
        };
        for ok in ["0", "0-3", "2-3,6", "7", "0-3,6-7"] {
            cpus(ok).check_node_in(sys.path()).unwrap();
        }
        for bad in ["4", "3-6", "8", "99", "0-4294967295"] {
            let e = cpus(bad).check_node_in(sys.path()).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains("cpuset_cpus") && m.contains(bad)),
                "{bad}: {e}"
            );
        }
        // No node directory: node 0 only.
        let mems = |m: &str| Resources {
            cpuset_mems: Some(m.into()),
            ..Default::default()
        };
        mems("0").check_node_in(sys.path()).unwrap();
        assert!(mems("1").check_node_in(sys.path()).is_err());
        std::fs::create_dir_all(sys.path().join("node")).unwrap();
        std::fs::write(sys.path().join("node/online"), "0-1\n").unwrap();
        mems("0-1").check_node_in(sys.path()).unwrap();
        assert!(mems("2").check_node_in(sys.path()).is_err());
    }

    #[test]
    fn env_is_saved_as_strings_where_utf8_and_as_hex_bytes_otherwise() {
        use std::os::unix::ffi::OsStringExt;
        let p = Process {
            env: vec![
                "PATH=/bin".into(),
                OsString::from_vec(b"X=\xff\xfe".to_vec()),
                "E=caf\u{e9}".into(),
                OsString::from_vec(b"\x80K=v".to_vec()),
            ],
            ..Default::default()
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(
            json["env"],
            serde_json::json!([
                "PATH=/bin",
                {"hex": "583dfffe"},
                "E=caf\u{e9}",
                {"hex": "804b3d76"},
            ])
        );
        let back: Process = serde_json::from_value(json).unwrap();
        assert_eq!(back.env, p.env);
        assert_eq!(
            env_json::from_str(&env_json::to_string(&p.env).unwrap()).unwrap(),
            p.env
        );
        // Every byte value survives.
        let all = vec![OsString::from_vec((1..=255u8).collect())];
        assert_eq!(
            env_json::from_str(&env_json::to_string(&all).unwrap()).unwrap(),
            all
        );
    }

    #[test]
    fn a_process_saved_before_env_became_bytes_still_loads() {
        // As `container.json` held it when `env` was a `Vec<String>`.
        let old = r#"{"args":["sh"],"env":["PATH=/usr/bin","A=\u00e9"],"cwd":"/","uid":0,
            "gid":0,"additional_gids":[],"rlimits":[],"oom_score_adj":null,
            "no_new_privileges":true,"terminal":false}"#;
        let p: Process = serde_json::from_str(old).unwrap();
        assert_eq!(
            p.env,
            vec![OsString::from("PATH=/usr/bin"), OsString::from("A=\u{e9}")]
        );
    }

    #[test]
    fn malformed_hex_env_entries_are_refused() {
        use std::os::unix::ffi::OsStringExt;
        for bad in [
            r#"[{"hex": "5"}]"#,
            r#"[{"hex": "zz"}]"#,
            r#"[{"hex": "41", "extra": 1}]"#,
            r#"[{}]"#,
            r#"[1]"#,
        ] {
            assert!(env_json::from_str(bad).is_err(), "{bad}");
        }
        assert_eq!(
            env_json::from_str(r#"[{"hex": "41Ff"}]"#).unwrap(),
            vec![OsString::from_vec(vec![0x41, 0xff])]
        );
    }

    #[test]
    fn env_entries_without_equals_or_with_nul_are_refused_naming_only_the_key() {
        use std::os::unix::ffi::OsStringExt;
        let mut c = ContainerConfig {
            id: "c1".into(),
            ..Default::default()
        };
        c.process.args = vec!["sh".into()];
        c.rootfs.lower_dirs = vec!["/l".into()];
        c.process.env = vec![OsString::from_vec(b"K=\xff".to_vec())];
        c.validate().unwrap();
        c.process.env = vec![OsString::from_vec(b"SECRETKEY=hunter2\0".to_vec())];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("SECRETKEY") && !e.contains("hunter2"), "{e}");
        c.process.env = vec!["NOEQUALS".into()];
        assert!(c.validate().is_err());
    }

    #[test]
    fn pid_namespace_identity_is_read_back() {
        let mut a = std::collections::HashMap::new();
        assert_eq!(pid_namespace_identity(Some(&a)).unwrap(), None);
        a.insert(
            PID_NAMESPACE_ANNOTATION.to_owned(),
            "4:4026531836".to_owned(),
        );
        assert_eq!(
            pid_namespace_identity(Some(&a)).unwrap(),
            Some((4, 4_026_531_836))
        );
        a.insert(PID_NAMESPACE_ANNOTATION.to_owned(), "4".to_owned());
        assert!(pid_namespace_identity(Some(&a)).is_err());
    }
}
