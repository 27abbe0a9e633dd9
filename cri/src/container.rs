//! The container half of `runtime.v1.RuntimeService`: `CreateContainer`, `StartContainer`,
//! `StopContainer`, `RemoveContainer`, `ListContainers`, `ContainerStatus`,
//! `UpdateContainerResources`, `ReopenContainerLog` and `ExecSync`.
//!
//! It owns two things: the pure mapping from a CRI `ContainerConfig` (plus plain data about the
//! image, [`ImageInfo`], and the sandbox, [`SandboxInfo`]) to the runtime's
//! [`rt::ContainerConfig`] by the Kubernetes rules, and the CRI metadata of each container
//! (name, labels, annotations, image, sandbox) kept next to the runtime's bundle as `cri.json`,
//! so a restarted daemon lists the same containers. It never looks up images or sandboxes itself
//! (the caller hands them over as plain data) and never runs container code: the runtime does.
//!
//! Interpretations (to record in `docs/cri.md`):
//! - `StopContainer` and `RemoveContainer` of an unknown id succeed. containerd answers NotFound
//!   to Stop; critest's idempotence specs and kubelet retries after a restart want no error.
//! - A `CreateContainer` retried with the same sandbox, name and attempt returns the container
//!   made by the first call (waiting for it if still in flight), never "name is reserved".
//! - Ids may be given as a unique prefix, as crictl users do.
// Until the RPC stubs in `runtime.rs` call these (the lead wires them).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use carapace_runtime as runtime;
use carapace_runtime::config as rt;
use carapace_runtime::container::{Runtime, RuntimeOptions, State};
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::api::*;
use crate::error::Error;
use crate::events::Events;
use crate::listing::{CONTAINER_STATE, answer};
use crate::stats::{ContainerSample, CpuSample};

/// What the container layer needs to know about the image, filled from `carapace-imageservice`
/// (see [`ImageInfo::from_image`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ImageInfo {
    /// `sha256:<hex>`, the image's config digest.
    pub id: String,
    /// What `ContainerStatus.image` shows: the first repo tag, else the name the kubelet asked for.
    pub name: String,
    /// What `ContainerStatus.image_ref` shows: the first repo digest, else the id.
    pub image_ref: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub working_dir: String,
    /// The image's `USER`: `name`, `uid`, `name:group`, `uid:gid` or empty.
    pub user: String,
    /// The image's `StopSignal` (`SIGQUIT`, `QUIT`, `3`); empty for SIGTERM.
    pub stop_signal: String,
    /// Overlay lower dirs, topmost first.
    pub lower_dirs: Vec<PathBuf>,
}

impl ImageInfo {
    /// From an image record, its config JSON (`Images::config`) and lower dirs
    /// (`Images::lower_dirs`). `requested` is the name in the CRI request.
    pub(crate) fn from_image(
        image: &carapace_imageservice::Image,
        config: &serde_json::Value,
        lower_dirs: Vec<PathBuf>,
        requested: &str,
    ) -> Self {
        let c = &config["config"];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let string = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        Self {
            id: image.id.to_string(),
            name: image
                .repo_tags
                .first()
                .cloned()
                .unwrap_or_else(|| requested.to_owned()),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.to_string()),
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env: strings(&c["Env"]),
            working_dir: string(&c["WorkingDir"]),
            user: string(&c["User"]),
            stop_signal: string(&c["StopSignal"]),
            lower_dirs,
        }
    }
}

/// What the container layer needs to know about the sandbox, filled from `carapace-podsandbox`
/// (see [`SandboxInfo::from_sandbox`]). The caller checks the sandbox is ready.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SandboxInfo {
    pub id: String,
    /// The pod's metadata, for the container's reserved name.
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub network: rt::NsMode,
    pub ipc: rt::NsMode,
    pub uts: rt::NsMode,
    /// The pod's PID namespace: `Join` when the pod shares one, `Host` with hostPID, else `New`.
    pub pid: rt::NsMode,
    /// Relative to each cgroup hierarchy's root; empty: none.
    pub cgroup_parent: String,
    /// Where container logs go (`/var/log/pods/<ns>_<name>_<uid>`); `None`: no logs.
    pub log_directory: Option<PathBuf>,
    pub hostname: String,
    pub hostname_path: Option<PathBuf>,
    pub hosts_path: Option<PathBuf>,
    pub resolv_conf_path: Option<PathBuf>,
    /// The pod's `/dev/shm`; `None` with host IPC.
    pub shm_path: Option<PathBuf>,
}

impl SandboxInfo {
    pub(crate) fn from_sandbox(sb: &carapace_podsandbox::Sandbox) -> Self {
        use carapace_podsandbox::NamespaceMode as M;
        let ns = sb.config.namespaces;
        let shared = |mode: M, path: &Option<PathBuf>| match (mode, path) {
            (M::Node, _) => rt::NsMode::Host,
            (_, Some(p)) => rt::NsMode::Join(p.clone()),
            (_, None) => rt::NsMode::New,
        };
        // The pod's UTS namespace follows its network one (hostNetwork means the host's name).
        let uts = match &sb.namespaces.uts {
            Some(p) => rt::NsMode::Join(p.clone()),
            None if ns.host_network() => rt::NsMode::Host,
            None => rt::NsMode::New,
        };
        let file = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| p.clone());
        Self {
            id: sb.id.clone(),
            pod_name: sb.config.metadata.name.clone(),
            pod_namespace: sb.config.metadata.namespace.clone(),
            pod_uid: sb.config.metadata.uid.clone(),
            network: shared(ns.network, &sb.namespaces.net),
            ipc: shared(ns.ipc, &sb.namespaces.ipc),
            uts,
            pid: shared(ns.pid, &sb.namespaces.pid),
            cgroup_parent: sb
                .cgroup
                .as_ref()
                .map(|c| c.path.to_string_lossy().into_owned())
                .unwrap_or_default(),
            log_directory: sb.config.log_directory.clone(),
            hostname: sb.hostname.clone(),
            hostname_path: file(&sb.hostname_path),
            hosts_path: file(&sb.hosts_path),
            resolv_conf_path: file(&sb.resolv_conf_path),
            shm_path: sb.shm.clone(),
        }
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

// ---------------------------------------------------------------------------------------------
// The mapping: CRI → runtime config. Pure but for reading the image's /etc/passwd and /etc/group.
// ---------------------------------------------------------------------------------------------

/// The reserved name of a container, as containerd makes it: unique per pod and attempt.
pub(crate) fn container_name(c: &ContainerMetadata, sb: &SandboxInfo) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        c.name, sb.pod_name, sb.pod_namespace, sb.pod_uid, c.attempt
    )
}

/// argv by the Kubernetes rules: `command` replaces the image's Entrypoint and drops its Cmd;
/// `args` alone replace the Cmd.
pub(crate) fn argv(
    command: &[String],
    args: &[String],
    image: &ImageInfo,
) -> Result<Vec<String>, Error> {
    let mut v: Vec<String> = if !command.is_empty() {
        command.iter().chain(args).cloned().collect()
    } else if !args.is_empty() {
        image.entrypoint.iter().chain(args).cloned().collect()
    } else {
        image.entrypoint.iter().chain(&image.cmd).cloned().collect()
    };
    if v.first().is_none_or(|a| a.is_empty()) {
        return Err(invalid(
            "no command: neither the container config nor the image specifies one",
        ));
    }
    if v.iter().any(|a| a.contains('\0')) {
        return Err(invalid("the command contains a NUL byte"));
    }
    v.shrink_to_fit();
    Ok(v)
}

/// The image's env, then the config's: a config key replaces the image's value in place.
pub(crate) fn merge_env(image: &[String], config: &[KeyValue]) -> Result<Vec<String>, Error> {
    let mut env: Vec<String> = image.iter().filter(|e| e.contains('=')).cloned().collect();
    for kv in config {
        if kv.key.is_empty()
            || kv.key.contains('=')
            || kv.key.contains('\0')
            || kv.value.contains('\0')
        {
            return Err(invalid(format!(
                "invalid environment variable {:?}",
                kv.key
            )));
        }
        let entry = format!("{}={}", kv.key, kv.value);
        let prefix = format!("{}=", kv.key);
        match env.iter_mut().find(|e| e.starts_with(&prefix)) {
            Some(e) => *e = entry,
            None => env.push(entry),
        }
    }
    Ok(env)
}

/// Config, else image, else `/`. A relative image WORKDIR is taken from `/` as Docker does.
pub(crate) fn working_dir(config: &str, image: &str) -> Result<String, Error> {
    if !config.is_empty() {
        if !config.starts_with('/') || config.contains('\0') {
            return Err(invalid(format!(
                "working_dir {config:?} is not an absolute path"
            )));
        }
        return Ok(config.to_owned());
    }
    if image.is_empty() || image.contains('\0') {
        return Ok("/".into());
    }
    Ok(if image.starts_with('/') {
        image.to_owned()
    } else {
        format!("/{image}")
    })
}

/// `<sandbox log dir>/<log_path>`; `log_path` must stay inside the directory.
pub(crate) fn log_path(dir: Option<&Path>, rel: &str) -> Result<Option<PathBuf>, Error> {
    let Some(dir) = dir.filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(None);
    };
    if rel.is_empty() {
        return Ok(None);
    }
    if !dir.is_absolute() {
        return Err(invalid(format!(
            "log directory {} is not absolute",
            dir.display()
        )));
    }
    let p = Path::new(rel);
    let escapes = rel.contains('\0')
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(invalid(format!(
            "log_path {rel:?} must be a relative path inside the sandbox's log directory"
        )));
    }
    Ok(Some(dir.join(p)))
}

/// Linux signal numbers (x86-64 and arm64 agree on these).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// `SIGTERM`, `TERM`, `15`, `SIGRTMIN+3` → the signal number.
pub(crate) fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (1..=SIGRTMAX).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(off) = name.strip_prefix("RTMIN") {
        let n = if off.is_empty() {
            0
        } else {
            off.strip_prefix('+')?.parse().ok()?
        };
        return (SIGRTMIN + n <= SIGRTMAX).then_some(SIGRTMIN + n);
    }
    if let Some(off) = name.strip_prefix("RTMAX") {
        let n = if off.is_empty() {
            0
        } else {
            off.strip_prefix('-')?.parse().ok()?
        };
        return (SIGRTMAX - n >= SIGRTMIN).then_some(SIGRTMAX - n);
    }
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// The largest `/etc/passwd` or `/etc/group` read from an image.
const MAX_ETC_FILE: u64 = 4 << 20;
/// Symlinks followed while resolving a path in the image, as the kernel's limit.
const MAX_SYMLINKS: usize = 40;

/// Lexically applies `.` and `..` (which stops at the root) to components below the root.
fn push_components(out: &mut Vec<String>, path: &Path) {
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Finds `path` in the merged (overlay) view of `layers`, topmost first, as `RESOLVE_IN_ROOT`
/// would: symlinks are resolved against the image's root (absolute targets and `..` never leave
/// it) and the host's filesystem is never consulted: each step is an `lstat` below a directory
/// already known to be a real directory of that layer. Returns the regular file's host path and
/// its metadata; `None` when it does not exist, is deleted (whiteout) or is not a regular file.
fn find_in_layers(
    layers: &[PathBuf],
    path: &str,
) -> Result<Option<(PathBuf, std::fs::Metadata)>, Error> {
    let mut want = Vec::new();
    push_components(&mut want, Path::new(path));
    'resolve: for _ in 0..=MAX_SYMLINKS {
        // The layers in which the prefix resolved so far is a directory, topmost first.
        let mut dirs: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
        let mut rel = PathBuf::new();
        for (i, comp) in want.iter().enumerate() {
            rel.push(comp);
            let last = i + 1 == want.len();
            let mut hit: Option<(&Path, std::fs::Metadata)> = None;
            let mut below = Vec::new();
            for l in &dirs {
                match std::fs::symlink_metadata(l.join(&rel)) {
                    Ok(m) => match &hit {
                        None => {
                            let dir = m.is_dir();
                            hit = Some((l, m));
                            if !dir {
                                break;
                            }
                            below.push(*l);
                        }
                        // A lower directory merges; anything else is hidden by the upper dir
                        // and hides what is below it.
                        Some(_) if m.is_dir() => below.push(*l),
                        Some(_) => break,
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::Internal(format!(
                            "reading {} in the image: {e}",
                            rel.display()
                        )));
                    }
                }
            }
            let Some((layer, meta)) = hit else {
                return Ok(None);
            };
            if is_whiteout(&meta) {
                return Ok(None);
            }
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(layer.join(&rel)).map_err(|e| {
                    Error::Internal(format!("reading link {} in the image: {e}", rel.display()))
                })?;
                let mut next: Vec<String> = if target.is_absolute() {
                    Vec::new()
                } else {
                    want[..i].to_vec()
                };
                push_components(&mut next, &target);
                next.extend(want[i + 1..].iter().cloned());
                want = next;
                continue 'resolve;
            }
            if last {
                return Ok(meta.is_file().then(|| (layer.join(&rel), meta)));
            }
            if !meta.is_dir() {
                return Ok(None);
            }
            dirs = below;
        }
        // The path resolved to the root itself.
        return Ok(None);
    }
    Err(invalid(format!(
        "too many levels of symbolic links resolving {path} in the image"
    )))
}

/// Reads a small text file of the image (e.g. `/etc/passwd`); `None` when it has none.
fn read_image_file(layers: &[PathBuf], path: &str) -> Result<Option<String>, Error> {
    let Some((host, meta)) = find_in_layers(layers, path)? else {
        return Ok(None);
    };
    if meta.len() > MAX_ETC_FILE {
        return Err(invalid(format!(
            "the image's {path} is larger than {MAX_ETC_FILE} bytes"
        )));
    }
    let file = std::fs::File::open(&host)
        .map_err(|e| Error::Internal(format!("opening the image's {path}: {e}")))?;
    // The file opened must be the one checked: a swap to a symlink in between is refused.
    let opened = file
        .metadata()
        .map_err(|e| Error::Internal(format!("reading the image's {path}: {e}")))?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(Error::Internal(format!(
            "the image's {path} changed while read"
        )));
    }
    let mut buf = Vec::new();
    file.take(MAX_ETC_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::Internal(format!("reading the image's {path}: {e}")))?;
    if buf.len() as u64 > MAX_ETC_FILE {
        return Err(invalid(format!(
            "the image's {path} is larger than {MAX_ETC_FILE} bytes"
        )));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The records of a colon-separated file (`/etc/passwd`, `/etc/group`): comment lines skipped,
/// and a record with fewer than `min_fields` fields or no name dropped, as is one `entry` refuses.
fn parse_records<T>(text: &str, min_fields: usize, entry: impl Fn(&[&str]) -> Option<T>) -> Vec<T> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < min_fields || f[0].is_empty() {
                return None;
            }
            entry(&f)
        })
        .collect()
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    parse_records(text, 4, |f| {
        Some(PasswdEntry {
            name: f[0].to_owned(),
            uid: f[2].trim().parse().ok()?,
            gid: f[3].trim().parse().ok()?,
            home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
        })
    })
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    parse_records(text, 3, |f| {
        Some(GroupEntry {
            name: f[0].to_owned(),
            gid: f[2].trim().parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// The process's identity inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub uid: u32,
    pub gid: u32,
    /// The primary gid first (CVE-2023-25173), then the user's groups, then the configured ones.
    pub additional_gids: Vec<u32>,
    /// From the image's passwd, for `HOME` when the env has none.
    pub home: Option<String>,
}

fn id_from_i64(v: i64, what: &str) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| invalid(format!("{what} {v} is out of range")))
}

/// Resolves the user the container runs as: `run_as_user`, else `run_as_username`, else the
/// image's USER, looked up in the image's own `/etc/passwd` and `/etc/group`.
pub(crate) fn resolve_user(
    layers: &[PathBuf],
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<User, Error> {
    let passwd = parse_passwd(&read_image_file(layers, "/etc/passwd")?.unwrap_or_default());
    let groups = parse_group(&read_image_file(layers, "/etc/group")?.unwrap_or_default());
    let by_uid = |uid: u32| passwd.iter().find(|p| p.uid == uid);
    let by_name = |name: &str| passwd.iter().find(|p| p.name == name);

    let run_as_user = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_username = sc.map(|s| s.run_as_username.as_str()).unwrap_or("");
    let run_as_group = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);

    // (user part, group part) of the effective user string.
    let (user_part, group_part): (String, Option<String>) = if let Some(uid) = run_as_user {
        (id_from_i64(uid, "run_as_user")?.to_string(), None)
    } else if !run_as_username.is_empty() {
        (run_as_username.to_owned(), None)
    } else {
        if run_as_group.is_some() && image_user.is_empty() {
            return Err(invalid(
                "run_as_group is set but neither run_as_user, run_as_username nor the image names a user",
            ));
        }
        match image_user.split_once(':') {
            Some((u, g)) => (u.to_owned(), Some(g.to_owned())),
            None => (image_user.to_owned(), None),
        }
    };

    let (uid, mut gid, entry) = if user_part.is_empty() {
        (0, 0, by_uid(0))
    } else if let Ok(uid) = user_part.parse::<u32>() {
        // A numeric user need not exist in the image; its group is then 0.
        let e = by_uid(uid);
        (uid, e.map(|e| e.gid).unwrap_or(0), e)
    } else {
        let e = by_name(&user_part).ok_or_else(|| {
            invalid(format!(
                "user {user_part:?} is not in the image's /etc/passwd"
            ))
        })?;
        (e.uid, e.gid, Some(e))
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| invalid(format!("group {g:?} is not in the image's /etc/group")))?,
        };
    }
    if let Some(g) = run_as_group {
        gid = id_from_i64(g, "run_as_group")?;
    }

    let mut gids = vec![gid];
    let mut add = |g: u32| {
        if !gids.contains(&g) {
            gids.push(g);
        }
    };
    let username = entry.map(|e| e.name.as_str()).unwrap_or(user_part.as_str());
    if !username.is_empty() {
        for g in groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == username))
        {
            add(g.gid);
        }
    }
    for g in sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or(&[]) {
        add(id_from_i64(*g, "supplemental group")?);
    }
    Ok(User {
        uid,
        gid,
        additional_gids: gids,
        home: entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()),
    })
}

/// The seccomp profile: `security_context.seccomp`, else the deprecated path field; nothing
/// asked means unconfined, as the kubelet means it (it sends RuntimeDefault when it wants it).
#[allow(deprecated)] // `seccomp_profile_path`: still sent by older kubelets.
pub(crate) fn seccomp(
    sc: Option<&LinuxContainerSecurityContext>,
) -> Result<rt::SeccompProfile, Error> {
    use security_profile::ProfileType;
    let Some(sc) = sc else {
        return Ok(rt::SeccompProfile::Unconfined);
    };
    if let Some(p) = &sc.seccomp {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(rt::SeccompProfile::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(rt::SeccompProfile::Unconfined),
            Ok(ProfileType::Localhost) => localhost_profile(&p.localhost_ref),
            Err(_) => Err(invalid(format!(
                "unknown seccomp profile type {}",
                p.profile_type
            ))),
        };
    }
    match sc.seccomp_profile_path.as_str() {
        "" | "unconfined" => Ok(rt::SeccompProfile::Unconfined),
        "runtime/default" | "docker/default" => Ok(rt::SeccompProfile::RuntimeDefault),
        p => match p.strip_prefix("localhost/") {
            Some(path) => localhost_profile(path),
            None => Err(invalid(format!("unknown seccomp profile {p:?}"))),
        },
    }
}

fn localhost_profile(path: &str) -> Result<rt::SeccompProfile, Error> {
    let p = Path::new(path);
    // The runtime reads it (only a small regular file); here only its shape is checked.
    if !absolute_clean(path) {
        return Err(invalid(format!(
            "seccomp localhost profile {path:?} must be an absolute path"
        )));
    }
    Ok(rt::SeccompProfile::Localhost(p.to_path_buf()))
}

/// CRI resources → runtime resources and the OOM score; 0 means unset, as the kubelet sends it.
pub(crate) fn resources(r: &LinuxContainerResources) -> Result<(rt::Resources, i32), Error> {
    let non_negative = |v: i64, what: &str| {
        if v < 0 {
            Err(invalid(format!("{what} {v} is negative")))
        } else {
            Ok(v)
        }
    };
    let cpu_shares = non_negative(r.cpu_shares, "cpu_shares")? as u64;
    let cpu_period = non_negative(r.cpu_period, "cpu_period")? as u64;
    let memory = non_negative(r.memory_limit_in_bytes, "memory_limit_in_bytes")?;
    if r.cpu_quota < -1 {
        return Err(invalid(format!("cpu_quota {} is invalid", r.cpu_quota)));
    }
    if r.memory_swap_limit_in_bytes < -1 {
        return Err(invalid(format!(
            "memory_swap_limit_in_bytes {} is invalid",
            r.memory_swap_limit_in_bytes
        )));
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(invalid(format!(
            "oom_score_adj {} is outside [-1000, 1000]",
            r.oom_score_adj
        )));
    }
    let cpuset = |s: &str, what: &str| -> Result<Option<String>, Error> {
        if s.is_empty() {
            return Ok(None);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
        {
            return Err(invalid(format!("{what} {s:?} is not a CPU/node list")));
        }
        Ok(Some(s.to_owned()))
    };
    let mut hugepage_limits = BTreeMap::new();
    for h in &r.hugepage_limits {
        let ok = !h.page_size.is_empty() && h.page_size.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(invalid(format!(
                "hugepage size {:?} is invalid",
                h.page_size
            )));
        }
        hugepage_limits.insert(h.page_size.clone(), h.limit);
    }
    Ok((
        rt::Resources {
            cpu_shares: (cpu_shares > 0).then_some(cpu_shares),
            cpu_quota: (r.cpu_quota != 0).then_some(r.cpu_quota),
            cpu_period: (cpu_period > 0).then_some(cpu_period),
            cpuset_cpus: cpuset(&r.cpuset_cpus, "cpuset_cpus")?,
            cpuset_mems: cpuset(&r.cpuset_mems, "cpuset_mems")?,
            memory_limit: (memory > 0).then_some(memory),
            memory_swap_limit: (r.memory_swap_limit_in_bytes != 0)
                .then_some(r.memory_swap_limit_in_bytes),
            pids_limit: None,
            hugepage_limits,
            // Checked against the node's files by the runtime, which has the cgroup.
            unified: r.unified.clone().into_iter().collect(),
        },
        r.oom_score_adj as i32,
    ))
}

/// Runtime resources back to the CRI's, for `ContainerStatus`.
fn resources_to_cri(r: &rt::Resources, oom_score_adj: Option<i32>) -> LinuxContainerResources {
    LinuxContainerResources {
        cpu_period: r.cpu_period.unwrap_or(0) as i64,
        cpu_quota: r.cpu_quota.unwrap_or(0),
        cpu_shares: r.cpu_shares.unwrap_or(0) as i64,
        memory_limit_in_bytes: r.memory_limit.unwrap_or(0),
        oom_score_adj: oom_score_adj.unwrap_or(0) as i64,
        cpuset_cpus: r.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: r.cpuset_mems.clone().unwrap_or_default(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|(page_size, limit)| HugepageLimit {
                page_size: page_size.clone(),
                limit: *limit,
            })
            .collect(),
        unified: r.unified.clone().into_iter().collect(),
        memory_swap_limit_in_bytes: r.memory_swap_limit.unwrap_or(0),
    }
}

fn propagation(p: i32) -> Result<rt::Propagation, Error> {
    match MountPropagation::try_from(p) {
        Ok(MountPropagation::PropagationPrivate) => Ok(rt::Propagation::Private),
        Ok(MountPropagation::PropagationHostToContainer) => Ok(rt::Propagation::HostToContainer),
        Ok(MountPropagation::PropagationBidirectional) => Ok(rt::Propagation::Bidirectional),
        Err(_) => Err(invalid(format!("unknown mount propagation {p}"))),
    }
}

fn absolute_clean(p: &str) -> bool {
    p.starts_with('/')
        && !p.contains('\0')
        && !Path::new(p).components().any(|c| c == Component::ParentDir)
}

/// The CRI mounts, then the sandbox's files where the CRI did not mount the same path (the
/// kubelet mounts its own `/etc/hosts` for most pods). `selinux_relabel` is ignored: no SELinux.
pub(crate) fn mounts(
    cri: &[Mount],
    sb: &SandboxInfo,
    readonly_rootfs: bool,
) -> Result<Vec<rt::Mount>, Error> {
    let mut out = Vec::with_capacity(cri.len() + 4);
    for m in cri {
        if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
            return Err(invalid(format!(
                "image volumes are not supported ({})",
                m.container_path
            )));
        }
        if m.recursive_read_only {
            return Err(invalid(format!(
                "recursive read-only mounts are not supported ({})",
                m.container_path
            )));
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(invalid(format!(
                "id-mapped mounts are not supported ({})",
                m.container_path
            )));
        }
        if !absolute_clean(&m.container_path) {
            return Err(invalid(format!(
                "mount container_path {:?} must be an absolute path without `..`",
                m.container_path
            )));
        }
        if !absolute_clean(&m.host_path) {
            return Err(invalid(format!(
                "mount host_path {:?} must be an absolute path without `..`",
                m.host_path
            )));
        }
        out.push(rt::Mount {
            host_path: PathBuf::from(&m.host_path),
            container_path: m.container_path.clone(),
            readonly: m.readonly,
            propagation: propagation(m.propagation)?,
        });
    }
    let files = [
        (&sb.hostname_path, "/etc/hostname", readonly_rootfs),
        (&sb.hosts_path, "/etc/hosts", readonly_rootfs),
        (&sb.resolv_conf_path, "/etc/resolv.conf", readonly_rootfs),
        (&sb.shm_path, "/dev/shm", false),
    ];
    for (host, dest, readonly) in files {
        let Some(host) = host else { continue };
        let taken = out
            .iter()
            .any(|m| Path::new(&m.container_path) == Path::new(dest));
        if !taken {
            out.push(rt::Mount {
                host_path: host.clone(),
                container_path: dest.into(),
                readonly,
                propagation: rt::Propagation::Private,
            });
        }
    }
    Ok(out)
}

/// The CRI's host devices. A directory of devices (which containerd expands) is refused by the
/// runtime as not a device; permissions default to `rwm`, as the kubelet's device plugins ask.
fn devices(cri: &[Device]) -> Result<Vec<rt::Device>, Error> {
    cri.iter()
        .map(|d| {
            if !absolute_clean(&d.host_path) {
                return Err(invalid(format!(
                    "device host_path {:?} must be an absolute path without `..`",
                    d.host_path
                )));
            }
            let container_path = if d.container_path.is_empty() {
                &d.host_path
            } else {
                &d.container_path
            };
            if !absolute_clean(container_path) {
                return Err(invalid(format!(
                    "device container_path {container_path:?} must be an absolute path without `..`"
                )));
            }
            Ok(rt::Device {
                host_path: PathBuf::from(&d.host_path),
                container_path: container_path.clone(),
                permissions: if d.permissions.is_empty() {
                    "rwm".into()
                } else {
                    d.permissions.clone()
                },
            })
        })
        .collect()
}

/// Net, IPC and UTS are the pod's; PID per `namespace_options.pid`. `target_pid_ns` answers the
/// PID namespace path of the target container of `TARGET`, or refuses one outside the pod.
pub(crate) fn namespaces(
    opts: Option<&NamespaceOption>,
    sb: &SandboxInfo,
    target_pid_ns: &dyn Fn(&str) -> Result<PathBuf, Error>,
) -> Result<rt::Namespaces, Error> {
    let default = NamespaceOption::default();
    let opts = opts.unwrap_or(&default);
    if let Some(u) = &opts.userns_options
        && NamespaceMode::try_from(u.mode) == Ok(NamespaceMode::Pod)
        && (!u.uids.is_empty() || !u.gids.is_empty())
    {
        return Err(invalid("user namespaces are not supported"));
    }
    let pid = match NamespaceMode::try_from(opts.pid) {
        Ok(NamespaceMode::Container) => rt::NsMode::New,
        Ok(NamespaceMode::Node) => rt::NsMode::Host,
        Ok(NamespaceMode::Pod) => match &sb.pid {
            rt::NsMode::Join(p) => rt::NsMode::Join(p.clone()),
            rt::NsMode::Host => rt::NsMode::Host,
            rt::NsMode::New => {
                return Err(Error::FailedPrecondition(format!(
                    "the container asks for the pod's PID namespace but sandbox {} has none",
                    sb.id
                )));
            }
        },
        Ok(NamespaceMode::Target) => {
            if opts.target_id.is_empty() {
                return Err(invalid("PID namespace mode TARGET needs a target_id"));
            }
            rt::NsMode::Join(target_pid_ns(&opts.target_id)?)
        }
        Err(_) => return Err(invalid(format!("unknown PID namespace mode {}", opts.pid))),
    };
    Ok(rt::Namespaces {
        network: sb.network.clone(),
        ipc: sb.ipc.clone(),
        uts: sb.uts.clone(),
        pid,
    })
}

/// Everything the mapping needs besides the request.
pub(crate) struct MapInput<'a> {
    pub id: &'a str,
    pub config: &'a ContainerConfig,
    pub image: &'a ImageInfo,
    pub sandbox: &'a SandboxInfo,
    pub target_pid_ns: &'a dyn Fn(&str) -> Result<PathBuf, Error>,
}

/// The CRI container config → the runtime's, by the Kubernetes rules.
pub(crate) fn runtime_config(input: &MapInput<'_>) -> Result<rt::ContainerConfig, Error> {
    let MapInput {
        id,
        config: c,
        image,
        sandbox: sb,
        ..
    } = *input;
    let name = c
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| invalid("container metadata.name is required"))?;
    if !c.cdi_devices.is_empty() {
        return Err(invalid("CDI devices are not supported yet"));
    }
    let linux = c.linux.clone().unwrap_or_default();
    let sc = linux.security_context.as_ref();
    if let Some(aa) = sc.and_then(|s| s.apparmor.as_ref())
        && security_profile::ProfileType::try_from(aa.profile_type)
            == Ok(security_profile::ProfileType::Localhost)
    {
        // No AppArmor support in the executor: a required profile must not be silently dropped.
        return Err(invalid(format!(
            "AppArmor profile {:?} cannot be applied: AppArmor is not supported",
            aa.localhost_ref
        )));
    }
    let privileged = sc.is_some_and(|s| s.privileged);
    let readonly_rootfs = sc.is_some_and(|s| s.readonly_rootfs);

    let args = argv(&c.command, &c.args, image)?;
    let mut env = merge_env(&image.env, &c.envs)?;
    let user = resolve_user(&image.lower_dirs, sc, &image.user)?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home.as_deref().unwrap_or("/")));
    }
    let (res, oom_score_adj) = match &linux.resources {
        Some(r) => {
            let (res, oom) = resources(r)?;
            (res, Some(oom))
        }
        None => (rt::Resources::default(), None),
    };
    let caps = sc.and_then(|s| s.capabilities.clone()).unwrap_or_default();
    if !caps.add_ambient_capabilities.is_empty() {
        // Fewer privileges than asked, never more: ambient capabilities stay empty.
        tracing::warn!(caps = ?caps.add_ambient_capabilities, "ignoring ambient capabilities");
    }
    let nonempty = |v: Option<&Vec<String>>| v.filter(|v| !v.is_empty()).cloned();
    let stop_signal = if image.stop_signal.is_empty() {
        None
    } else {
        let s = parse_signal(&image.stop_signal);
        if s.is_none() {
            tracing::warn!(signal = %image.stop_signal, "unknown image StopSignal; using SIGTERM");
        }
        s
    };
    let mut annotations: BTreeMap<String, String> = c
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.container-name", name),
        ("io.kubernetes.cri.sandbox-id", sb.id.as_str()),
        ("io.kubernetes.cri.sandbox-name", sb.pod_name.as_str()),
        (
            "io.kubernetes.cri.sandbox-namespace",
            sb.pod_namespace.as_str(),
        ),
        ("io.kubernetes.cri.sandbox-uid", sb.pod_uid.as_str()),
        ("io.kubernetes.cri.image-name", image.name.as_str()),
    ] {
        annotations.insert(k.into(), v.into());
    }

    let config = rt::ContainerConfig {
        id: id.to_owned(),
        process: rt::Process {
            args,
            env,
            cwd: working_dir(&c.working_dir, &image.working_dir)?,
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids,
            rlimits: Vec::new(),
            oom_score_adj,
            no_new_privileges: sc.is_some_and(|s| s.no_new_privs),
            terminal: c.tty,
            stdin: c.stdin,
            stdin_once: c.stdin_once,
        },
        rootfs: rt::RootFs {
            lower_dirs: image.lower_dirs.clone(),
            readonly: readonly_rootfs,
        },
        mounts: mounts(&c.mounts, sb, readonly_rootfs)?,
        devices: devices(&c.devices)?,
        namespaces: namespaces(
            sc.and_then(|s| s.namespace_options.as_ref()),
            sb,
            input.target_pid_ns,
        )?,
        security: rt::Security {
            privileged,
            add_capabilities: caps.add_capabilities,
            drop_capabilities: caps.drop_capabilities,
            seccomp: if privileged {
                rt::SeccompProfile::Unconfined
            } else {
                seccomp(sc)?
            },
            masked_paths: nonempty(sc.map(|s| &s.masked_paths)),
            readonly_paths: nonempty(sc.map(|s| &s.readonly_paths)),
        },
        cgroup: rt::CgroupConfig {
            parent: sb.cgroup_parent.clone(),
            resources: res,
        },
        hostname: (!sb.hostname.is_empty()).then(|| sb.hostname.clone()),
        log_path: log_path(sb.log_directory.as_deref(), &c.log_path)?,
        stop_signal,
        annotations,
    };
    config.validate()?;
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// CRI metadata, persisted per container.
// ---------------------------------------------------------------------------------------------

/// A CRI mount as `ContainerStatus` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct MountRecord {
    container_path: String,
    host_path: String,
    readonly: bool,
    selinux_relabel: bool,
    propagation: i32,
}

/// What the CRI knows of a container and the runtime does not: `cri.json` in its bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    id: String,
    /// The reserved name, [`container_name`].
    name: String,
    sandbox_id: String,
    metadata_name: String,
    attempt: u32,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// The image as the kubelet asked for it (`ImageSpec.image`).
    image_spec: String,
    image: String,
    image_ref: String,
    image_id: String,
    log_path: String,
    mounts: Vec<MountRecord>,
    created_at: i64,
}

const META_FILE: &str = "cri.json";

/// Temp file, rename: a crash of the daemon leaves the old file or the new one. No fsync: the
/// record lives in the bundle under the state dir, whose containers a reboot ends anyway.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent directory"))?;
    let tmp = dir.join(format!(".{META_FILE}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// A container's ListContainers item without its state, which each answer appends.
fn list_item(m: &Meta) -> Container {
    Container {
        id: m.id.clone(),
        pod_sandbox_id: m.sandbox_id.clone(),
        metadata: Some(ContainerMetadata {
            name: m.metadata_name.clone(),
            attempt: m.attempt,
        }),
        image: Some(ImageSpec {
            image: m.image.clone(),
            ..Default::default()
        }),
        // The image ID, as containerd lists it, not the repo digest ContainerStatus shows:
        // kubelets before `image_id` existed match in-use images for garbage collection by
        // this field against ListImages' ids.
        image_ref: m.image_id.clone(),
        state: 0,
        created_at: m.created_at,
        labels: to_hash(&m.labels),
        annotations: to_hash(&m.annotations),
        image_id: m.image_id.clone(),
    }
}

/// A random 64-hex container id.
fn new_id() -> Result<String, Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| Error::Internal(format!("random container id: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

// ---------------------------------------------------------------------------------------------
// The RPC handlers.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Table {
    containers: HashMap<String, Meta>,
    /// Reserved name → container id.
    names: HashMap<String, String>,
    /// Names whose create is in flight; the receiver closes when it ends.
    creating: HashMap<String, watch::Receiver<()>>,
}

struct Inner {
    runtime: Runtime,
    table: Mutex<Table>,
    stats: crate::stats::StatsCache,
    events: Events,
    /// Running containers whose exit no STOPPED event reported yet.
    watching: Mutex<HashSet<String>>,
    exits: OnceLock<runtime::exits::ExitWatcher>,
    links: OnceLock<Links>,
    /// Container states as last read, so that ListContainers (which the kubelet calls every
    /// second) is served from memory; see [`Inner::invalidate`].
    states: Mutex<HashMap<String, Known>>,
    /// Each container's ListContainers item, encoded once.
    encoded: crate::listing::EncodedItems,
    /// Changes to what ListContainers shows (a container made or forgotten, a state changed or
    /// learnt), counted after each is made; and the last unfiltered answer, by that count.
    changes: AtomicU64,
    unfiltered: crate::listing::KeptAnswer,
}

/// A container's state as last read from disk, and the number of changes seen so far: a read
/// that raced with a change (the version moved meanwhile) is not kept.
#[derive(Default)]
struct Known {
    version: u64,
    state: Option<State>,
}

/// What the container calls reach beyond the runtime, set once by [`ContainerApi::link`].
#[derive(Clone, Default)]
pub(crate) struct Links {
    /// For the pod status every container event carries.
    pub sandboxes: Option<Arc<carapace_podsandbox::Sandboxes>>,
    pub metrics: Option<carapace_metrics::NodeMetrics>,
}

impl Inner {
    fn table(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent across a panic (every update is one insert or remove).
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The full id of `id` or of the one container whose id starts with it.
    fn resolve(&self, id: &str) -> Result<String, Error> {
        if id.is_empty() {
            return Err(invalid("a container id is required"));
        }
        let t = self.table();
        if t.containers.contains_key(id) {
            return Ok(id.to_owned());
        }
        let mut found = t.containers.keys().filter(|k| k.starts_with(id));
        match (found.next(), found.next()) {
            (Some(k), None) => Ok(k.clone()),
            (Some(_), Some(_)) => Err(invalid(format!("container id prefix {id:?} is ambiguous"))),
            (None, _) => Err(Error::NotFound(format!("container {id:?}"))),
        }
    }

    fn meta(&self, id: &str) -> Option<Meta> {
        self.table().containers.get(id).cloned()
    }

    /// The sandbox a container belongs to (for events: no copy of the whole record).
    fn sandbox_of(&self, id: &str) -> Option<String> {
        self.table()
            .containers
            .get(id)
            .map(|m| m.sandbox_id.clone())
    }

    /// Forgets the state kept for `id`: called after everything that changes it (start, an exit
    /// noticed, stop, removal). Created and Exited only change through those; Running is kept
    /// only while the exit watcher watches the container, which reports its exit. Returns the
    /// new version, for [`Inner::keep_states`].
    fn invalidate(&self, id: &str) -> u64 {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let k = states.entry(id.to_owned()).or_default();
        k.version += 1;
        k.state = None;
        let version = k.version;
        self.changed();
        version
    }

    /// Counts a change to what ListContainers shows, once it is made.
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// The kept states of `ids`, with the versions to hand back to [`Inner::keep_states`].
    fn known_states<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<(u64, Option<State>)> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        ids.into_iter()
            .map(|id| states.get(id).map_or((0, None), |k| (k.version, k.state)))
            .collect()
    }

    /// The states of `ids` (None: unreadable): kept ones from memory, the others read from disk
    /// (blocking) and kept for next time.
    fn states_of(&self, ids: &[String]) -> Vec<Option<State>> {
        let mut read = Vec::new();
        let mut states = Vec::with_capacity(ids.len());
        let known = self.known_states(ids.iter().map(String::as_str));
        for (id, (version, kept)) in ids.iter().zip(known) {
            let state = kept.or_else(|| {
                let s = self.runtime.get(id).and_then(|c| c.status()).ok()?.state;
                read.push((id.clone(), version, s));
                Some(s)
            });
            states.push(state);
        }
        self.keep_states(read);
        states
    }

    /// Keeps states just read from disk, unless a change came in since `version` was taken.
    fn keep_states(&self, read: Vec<(String, u64, State)>) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let watching = self.watching.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.table();
        let mut learnt = false;
        for (id, version, state) in read {
            if !table.containers.contains_key(&id)
                || (state == State::Running && !watching.contains(&id))
            {
                continue;
            }
            let k = states.entry(id).or_default();
            if k.version == version && k.state != Some(state) {
                k.state = Some(state);
                learnt = true;
            }
        }
        // Only a state learnt counts (a metrics scrape reads states too, mostly known ones).
        if learnt {
            self.changed();
        }
    }

    fn forget(&self, id: &str) {
        {
            let mut t = self.table();
            if let Some(m) = t.containers.remove(id)
                && t.names.get(&m.name).is_some_and(|i| i == id)
            {
                t.names.remove(&m.name);
            }
        }
        // Not under the table's lock: `keep_states` takes the two in the other order.
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.changed();
    }

    /// `/proc/<pid>/ns/pid` of a running container of `sandbox_id`, for PID namespace mode
    /// TARGET, and that namespace's identity (`st_dev`, `st_ino`) for the start to check.
    /// Another pod's container is refused: joining its PID namespace would hand this pod its
    /// processes' environment, root and signals (containerd refuses it too).
    fn pid_ns_of(&self, id: &str, sandbox_id: &str) -> Result<(PathBuf, (u64, u64)), Error> {
        let id = self.resolve(id)?;
        let owner = self
            .table()
            .containers
            .get(&id)
            .map(|m| m.sandbox_id.clone());
        if owner.as_deref() != Some(sandbox_id) {
            return Err(invalid(format!(
                "target container {id} is not in pod sandbox {sandbox_id}: only a container of \
                 the same pod may be the target of PID namespace mode TARGET"
            )));
        }
        let running_pid = || -> Result<i32, Error> {
            let st = self.runtime.get(&id)?.status()?;
            match st.pid {
                Some(pid) if st.state == State::Running => Ok(pid),
                _ => Err(Error::FailedPrecondition(format!(
                    "target container {id} is not running"
                ))),
            }
        };
        let pid = running_pid()?;
        let path = PathBuf::from(format!("/proc/{pid}/ns/pid"));
        let ns = std::fs::metadata(&path).map_err(|e| {
            Error::FailedPrecondition(format!("target container {id}: {}: {e}", path.display()))
        })?;
        // Still running under the same pid once the namespace was read: it was that process's.
        if running_pid()? != pid {
            return Err(Error::FailedPrecondition(format!(
                "target container {id} exited"
            )));
        }
        Ok((path, (ns.dev(), ns.ino())))
    }

    /// The blocking part of create: map, create in the runtime, persist the metadata.
    fn create(
        &self,
        meta: Meta,
        config: &ContainerConfig,
        image: &ImageInfo,
        sb: &SandboxInfo,
    ) -> Result<(), Error> {
        let joined = std::cell::Cell::new(None);
        let target = |t: &str| {
            let (path, identity) = self.pid_ns_of(t, &sb.id)?;
            joined.set(Some(identity));
            Ok(path)
        };
        let mut rc = runtime_config(&MapInput {
            id: &meta.id,
            config,
            image,
            sandbox: sb,
            target_pid_ns: &target,
        })?;
        // Only the daemon records which namespace a TARGET join was checked against.
        rc.annotations.remove(rt::PID_NAMESPACE_ANNOTATION);
        if let Some((dev, ino)) = joined.get() {
            rc.annotations.insert(
                rt::PID_NAMESPACE_ANNOTATION.to_owned(),
                format!("{dev}:{ino}"),
            );
        }
        let c = self.runtime.create(rc)?;
        let written = serde_json::to_vec(&meta)
            .map_err(|e| Error::Internal(format!("encoding {META_FILE}: {e}")))
            .and_then(|b| {
                write_atomic(&c.bundle().join(META_FILE), &b).map_err(|e| {
                    Error::Internal(format!("writing {META_FILE} of {}: {e}", meta.id))
                })
            });
        if let Err(e) = written {
            if let Err(d) = c.delete() {
                tracing::warn!(container_id = %meta.id, error = %d, "undoing a failed create");
            }
            return Err(e);
        }
        let mut t = self.table();
        t.names.insert(meta.name.clone(), meta.id.clone());
        t.containers.insert(meta.id.clone(), meta);
        self.changed();
        Ok(())
    }

    /// One container's stats (blocking). A container that never started or is gone has no
    /// cgroup: its usage reads as zero.
    fn sample(&self, m: &Meta) -> ContainerSample {
        let timestamp = now_nanos();
        let cgroup = self.runtime.get(&m.id).and_then(|c| c.cgroup_stats()).ok();
        let nano_cores = cgroup.and_then(|cg| {
            self.stats.rate(
                &m.id,
                CpuSample {
                    usage_ns: cg.cpu.usage_ns,
                    at: std::time::Instant::now(),
                },
            )
        });
        ContainerSample {
            sandbox_id: m.sandbox_id.clone(),
            attributes: ContainerAttributes {
                id: m.id.clone(),
                metadata: Some(ContainerMetadata {
                    name: m.metadata_name.clone(),
                    attempt: m.attempt,
                }),
                labels: to_hash(&m.labels),
                annotations: to_hash(&m.annotations),
            },
            created_at: m.created_at,
            cgroup,
            nano_cores,
            layer: self.layer_usage(&m.id),
            timestamp,
        }
    }

    /// A container's writable-layer usage, walked at most once per few seconds.
    fn layer_usage(&self, id: &str) -> carapace_runtime::stats::DiskUsage {
        self.stats.layer_usage(id, || {
            self.runtime
                .get(id)
                .and_then(|c| carapace_runtime::stats::disk_usage(&c.writable_layer()))
                .unwrap_or_default()
        })
    }

    /// The CRI status of a container (blocking: reads its state files and asks its monitor).
    fn cri_status(
        &self,
        meta: &Meta,
        verbose: bool,
    ) -> Result<(ContainerStatus, HashMap<String, String>), Error> {
        let c = self.runtime.get(&meta.id)?;
        let spec = if verbose { c.spec().ok() } else { None };
        let (st, config) = (c.status()?, c.config()?);
        let mut info = HashMap::new();
        if verbose {
            let v = serde_json::json!({
                "sandboxID": meta.sandbox_id,
                "name": meta.name,
                "pid": st.pid,
                "image": meta.image_spec,
                "logPath": meta.log_path,
                "runtimeSpec": spec,
            });
            info.insert("info".to_owned(), v.to_string());
        }
        let status = ContainerStatus {
            id: meta.id.clone(),
            metadata: Some(ContainerMetadata {
                name: meta.metadata_name.clone(),
                attempt: meta.attempt,
            }),
            state: state_to_cri(st.state) as i32,
            created_at: meta.created_at,
            started_at: st.started_at,
            finished_at: st.finished_at,
            exit_code: st.exit_code.unwrap_or(0),
            image: Some(ImageSpec {
                image: meta.image.clone(),
                ..Default::default()
            }),
            image_ref: meta.image_ref.clone(),
            reason: st.reason,
            message: st.message,
            labels: to_hash(&meta.labels),
            annotations: to_hash(&meta.annotations),
            mounts: meta
                .mounts
                .iter()
                .map(|m| Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    selinux_relabel: m.selinux_relabel,
                    propagation: m.propagation,
                    ..Default::default()
                })
                .collect(),
            log_path: meta.log_path.clone(),
            resources: Some(ContainerResources {
                linux: Some(resources_to_cri(
                    &config.cgroup.resources,
                    config.process.oom_score_adj,
                )),
                windows: None,
            }),
            image_id: meta.image_id.clone(),
            user: Some(ContainerUser {
                linux: Some(LinuxContainerUser {
                    uid: config.process.uid.into(),
                    gid: config.process.gid.into(),
                    supplemental_groups: config
                        .process
                        .additional_gids
                        .iter()
                        .map(|g| i64::from(*g))
                        .collect(),
                }),
            }),
        };
        Ok((status, info))
    }

    /// Sends a container event with the pod's status and its containers' (blocking: reads their
    /// state). Nothing is read when nobody listens.
    fn send_event(&self, id: &str, sandbox_id: &str, kind: ContainerEventType) {
        if !self.events.has_subscribers() {
            return;
        }
        let pod_sandbox_status = self
            .links
            .get()
            .and_then(|l| l.sandboxes.as_ref())
            .and_then(|s| s.get(sandbox_id))
            .map(|sb| crate::sandbox::status(&sb));
        let metas: Vec<Meta> = self
            .table()
            .containers
            .values()
            .filter(|m| m.sandbox_id == sandbox_id)
            .cloned()
            .collect();
        let containers_statuses = metas
            .iter()
            .filter_map(|m| self.cri_status(m, false).ok().map(|(s, _)| s))
            .collect();
        self.events.send(ContainerEventResponse {
            container_id: id.to_owned(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status,
            containers_statuses,
        });
    }

    /// The STOPPED event of a container, once per start: whoever notices the exit first (the
    /// exit watcher, Stop or Remove) sends it.
    fn stopped(&self, id: &str) {
        self.invalidate(id);
        let first = self
            .watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if first && let Some(sb) = self.sandbox_of(id) {
            self.send_event(id, &sb, ContainerEventType::ContainerStoppedEvent);
        }
    }

    /// Watches the exit of a container that was just started or found running (its monitor
    /// ending) and reports it as STOPPED, so exits that happen by themselves reach the events
    /// stream without any polling.
    fn watch_exit(self: &Arc<Self>, id: &str) {
        let watcher = self.exits.get_or_init(|| {
            let weak = Arc::downgrade(self);
            runtime::exits::ExitWatcher::new(move |id| {
                if let Some(inner) = weak.upgrade() {
                    inner.stopped(id);
                }
            })
        });
        // Marked first: the exit may be reported before `watch` returns.
        self.watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned());
        match self.runtime.get(id).and_then(|c| watcher.watch(&c)) {
            Ok(true) => {}
            // It ran a moment ago: it exited already.
            Ok(false) => self.stopped(id),
            // Stop or Remove will still report it.
            Err(e) => {
                tracing::warn!(container_id = id, error = %e, "cannot watch the container's exit");
            }
        }
    }
}

/// Drops a name's in-flight mark (and with it the watch sender, waking waiters) however the
/// create ends, panics included.
struct CreatingGuard {
    inner: Arc<Inner>,
    name: String,
    _done: watch::Sender<()>,
}

impl Drop for CreatingGuard {
    fn drop(&mut self) {
        self.inner.table().creating.remove(&self.name);
    }
}

/// The container RPCs. Cheap to clone; every runtime call runs on the blocking pool.
#[derive(Clone)]
pub(crate) struct ContainerApi {
    inner: Arc<Inner>,
}

fn state_to_cri(s: State) -> ContainerState {
    match s {
        State::Created => ContainerState::ContainerCreated,
        State::Running => ContainerState::ContainerRunning,
        State::Exited => ContainerState::ContainerExited,
    }
}

fn to_hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// ListContainers' filter, before the state (which needs the runtime).
fn matches(f: &ContainerFilter, m: &Meta) -> bool {
    m.id.starts_with(&f.id)
        && m.sandbox_id.starts_with(&f.pod_sandbox_id)
        && f.label_selector
            .iter()
            .all(|(k, v)| m.labels.get(k) == Some(v))
}

impl ContainerApi {
    /// Opens the runtime under `root`/`state` and reloads every container a previous run left.
    /// A container without CRI metadata (the daemon died between the two writes of a create) is
    /// deleted. Blocks: call it at start-up, before serving.
    pub(crate) fn open(opts: RuntimeOptions) -> Result<Self, Error> {
        let runtime = Runtime::new(opts)?;
        let mut table = Table::default();
        for c in runtime.list()? {
            let path = c.bundle().join(META_FILE);
            let meta = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Meta>(&b).map_err(|e| e.to_string()));
            match meta {
                Ok(m) if m.id == c.id() => {
                    table.names.insert(m.name.clone(), m.id.clone());
                    table.containers.insert(m.id.clone(), m);
                }
                other => {
                    tracing::warn!(container_id = c.id(), problem = ?other.err(), "removing a container without CRI metadata");
                    if let Err(e) = c.delete() {
                        tracing::warn!(container_id = c.id(), error = %e, "removing a half-created container");
                    }
                }
            }
        }
        tracing::info!(containers = table.containers.len(), "containers reloaded");
        Ok(Self {
            inner: Arc::new(Inner {
                runtime,
                table: Mutex::new(table),
                stats: Default::default(),
                events: Events::default(),
                watching: Mutex::default(),
                exits: OnceLock::new(),
                links: OnceLock::new(),
                states: Mutex::default(),
                encoded: Default::default(),
                changes: AtomicU64::new(0),
                unfiltered: Default::default(),
            }),
        })
    }

    /// Connects the container calls to the sandbox store (for the pod status in events) and the
    /// node metrics (start latency), then watches the exits of the containers that run now, so
    /// their exits are reported. Call once, inside the tokio runtime; later calls change nothing.
    pub(crate) fn link(&self, links: Links) {
        if self.inner.links.set(links).is_err() {
            return;
        }
        let ids: Vec<String> = self.inner.table().containers.keys().cloned().collect();
        for id in ids {
            let running = self
                .inner
                .runtime
                .get(&id)
                .and_then(|c| c.status())
                .is_ok_and(|s| s.state == State::Running);
            if running {
                self.inner.watch_exit(&id);
            }
        }
    }

    /// GetContainerEvents: the events from now on.
    pub(crate) fn events(&self) -> crate::events::EventStream {
        self.inner.events.subscribe()
    }

    /// Containers by state and each live monitor's memory, fds and CPU, for the Prometheus
    /// gauges (blocking: states as ListContainers keeps them, read from disk only when unknown).
    pub(crate) fn census(
        &self,
    ) -> (
        Vec<(&'static str, i64)>,
        Vec<carapace_metrics::MonitorUsage>,
    ) {
        let ids: Vec<String> = self.inner.table().containers.keys().cloned().collect();
        let states = self.inner.states_of(&ids);
        let mut by_state: HashMap<&'static str, i64> = HashMap::new();
        let mut monitors = Vec::new();
        for (id, state) in ids.iter().zip(states) {
            let state = match state {
                Some(State::Created) => "created",
                Some(State::Running) => "running",
                Some(State::Exited) => "exited",
                None => "unknown",
            };
            *by_state.entry(state).or_default() += 1;
            if let Some(pid) = self
                .inner
                .runtime
                .get(id)
                .ok()
                .and_then(|c| c.monitor_pid())
                && let Some(usage) = monitor_usage(pid)
            {
                monitors.push(usage);
            }
        }
        (by_state.into_iter().collect(), monitors)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| Error::Internal(format!("container task: {e}")))?
    }

    /// The ids of the containers of a sandbox, for StopPodSandbox / RemovePodSandbox.
    pub(crate) fn ids_in_sandbox(&self, sandbox_id: &str) -> Vec<String> {
        self.inner
            .table()
            .containers
            .values()
            .filter(|m| m.sandbox_id == sandbox_id)
            .map(|m| m.id.clone())
            .collect()
    }

    /// Stops every container of a sandbox (StopPodSandbox does this first).
    pub(crate) async fn stop_sandbox_containers(
        &self,
        sandbox_id: &str,
        timeout: Duration,
    ) -> Result<(), Error> {
        for id in self.ids_in_sandbox(sandbox_id) {
            self.stop_id(id, timeout).await?;
        }
        Ok(())
    }

    /// Removes every container of a sandbox (RemovePodSandbox does this first). Returns the
    /// removed ids, whose image holds the caller releases.
    pub(crate) async fn remove_sandbox_containers(
        &self,
        sandbox_id: &str,
    ) -> Result<Vec<String>, Error> {
        let ids = self.ids_in_sandbox(sandbox_id);
        for id in &ids {
            self.remove_id(id.clone()).await?;
        }
        Ok(ids)
    }

    /// CreateContainer. The caller resolved the sandbox (and checked it is ready) and the image.
    pub(crate) async fn create(
        &self,
        req: CreateContainerRequest,
        sandbox: SandboxInfo,
        image: ImageInfo,
    ) -> Result<CreateContainerResponse, Error> {
        let span = tracing::Span::current();
        span.record("pod_id", sandbox.id.as_str());
        let config = req
            .config
            .ok_or_else(|| invalid("CreateContainer needs a container config"))?;
        let md = config
            .metadata
            .clone()
            .filter(|m| !m.name.is_empty())
            .ok_or_else(|| invalid("container metadata.name is required"))?;
        if req.pod_sandbox_id.is_empty() {
            return Err(invalid("pod_sandbox_id is required"));
        }
        if !sandbox.id.starts_with(&req.pod_sandbox_id) {
            return Err(Error::Internal(format!(
                "sandbox {} handed over for request naming {}",
                sandbox.id, req.pod_sandbox_id
            )));
        }
        let name = container_name(&md, &sandbox);

        // Reserve the name, or hand back what an earlier call with it made (a kubelet retry).
        let done = loop {
            let wait = {
                let mut t = self.inner.table();
                if let Some(id) = t.names.get(&name) {
                    let existing = t.containers.get(id).map(|m| m.sandbox_id.clone());
                    if existing.as_deref() == Some(sandbox.id.as_str()) {
                        span.record("container_id", id.as_str());
                        tracing::info!(name = %name, "CreateContainer retried: returning the existing container");
                        return Ok(CreateContainerResponse {
                            container_id: id.clone(),
                        });
                    }
                    return Err(Error::AlreadyExists(format!(
                        "container name {name:?} is reserved for {id} in sandbox {}",
                        existing.unwrap_or_default()
                    )));
                }
                match t.creating.get(&name) {
                    Some(rx) => rx.clone(),
                    None => {
                        let (tx, rx) = watch::channel(());
                        t.creating.insert(name.clone(), rx);
                        break tx;
                    }
                }
            };
            // Closed when the in-flight create ends, whichever way.
            let mut wait = wait;
            let _ = wait.changed().await;
        };
        // From here on, however this call ends, the name's in-flight mark goes.
        let guard = CreatingGuard {
            inner: self.inner.clone(),
            name: name.clone(),
            _done: done,
        };

        let id = new_id()?;
        span.record("container_id", id.as_str());
        let image_spec = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let meta = Meta {
            id: id.clone(),
            name: name.clone(),
            sandbox_id: sandbox.id.clone(),
            metadata_name: md.name.clone(),
            attempt: md.attempt,
            labels: config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            annotations: config
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            image: if image.name.is_empty() {
                image_spec.clone()
            } else {
                image.name.clone()
            },
            image_spec,
            image_ref: image.image_ref.clone(),
            image_id: image.id.clone(),
            log_path: log_path(sandbox.log_directory.as_deref(), &config.log_path)?
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            mounts: config
                .mounts
                .iter()
                .map(|m| MountRecord {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    selinux_relabel: m.selinux_relabel,
                    propagation: m.propagation,
                })
                .collect(),
            created_at: 0,
        };
        // Everything, the table included, happens on the blocking task: it completes even when
        // the kubelet gives up on this call, so its retry finds the container.
        let span2 = span.clone();
        tokio::task::spawn_blocking(move || {
            let _entered = span2.enter();
            let mut meta = meta;
            meta.created_at = now_nanos();
            let (id, sandbox_id) = (meta.id.clone(), meta.sandbox_id.clone());
            let r = guard.inner.create(meta, &config, &image, &sandbox);
            if r.is_ok() {
                guard
                    .inner
                    .send_event(&id, &sandbox_id, ContainerEventType::ContainerCreatedEvent);
            }
            drop(guard);
            r
        })
        .await
        .map_err(|e| Error::Internal(format!("container task: {e}")))??;
        tracing::info!("container created");
        Ok(CreateContainerResponse { container_id: id })
    }

    pub(crate) async fn start(
        &self,
        req: StartContainerRequest,
    ) -> Result<StartContainerResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        let began = std::time::Instant::now();
        let inner = self.inner.clone();
        let pid = self
            .blocking(move |i| {
                // A pod being stopped or removed is losing its namespaces: a start there fails
                // obscurely (fork in a PID namespace without its init: ENOMEM) or outlives the
                // pod's teardown. Asked again after a failed start, which may have raced a stop.
                let pod_not_ready = || {
                    let sandboxes = i.links.get()?.sandboxes.as_ref()?;
                    let sb = i.sandbox_of(&id)?;
                    let ready =
                        sandboxes.state(&sb) == Some(carapace_podsandbox::SandboxState::Ready);
                    (!ready).then(|| {
                        Error::FailedPrecondition(format!(
                            "pod sandbox {sb} of container {id} is not ready (stopped or being \
                             removed)"
                        ))
                    })
                };
                if let Some(e) = pod_not_ready() {
                    return Err(e);
                }
                let started = i.runtime.get(&id).and_then(|c| c.start());
                let version = i.invalidate(&id);
                let pid = match started {
                    Ok(pid) => pid,
                    // A container removed meanwhile is NotFound whatever its pod's state.
                    Err(e @ runtime::Error::NotFound(_)) => return Err(e.into()),
                    Err(e) => return Err(pod_not_ready().unwrap_or(e.into())),
                };
                if let Some(sb) = i.sandbox_of(&id) {
                    i.send_event(&id, &sb, ContainerEventType::ContainerStartedEvent);
                }
                // After STARTED is out, so a container that exits at once reports STOPPED second.
                inner.watch_exit(&id);
                // Its monitor just said it runs, and the watcher reports its end from now on: the
                // next list need not ask the monitor again (an exit noticed meanwhile changed the
                // version, and then nothing is kept).
                i.keep_states(vec![(id.clone(), version, State::Running)]);
                Ok(pid)
            })
            .await?;
        if let Some(m) = self.inner.links.get().and_then(|l| l.metrics.as_ref()) {
            m.observe_container_start(began.elapsed().as_secs_f64());
        }
        tracing::info!(pid, "container started");
        Ok(StartContainerResponse {})
    }

    async fn stop_id(&self, id: String, timeout: Duration) -> Result<(), Error> {
        self.blocking(move |i| match i.runtime.get(&id) {
            Ok(c) => {
                c.stop(timeout)?;
                i.stopped(&id);
                Ok(())
            }
            Err(runtime::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        })
        .await
    }

    /// The full id of `id` with the call's span filled in, or `None` for an id no container has:
    /// Stop and Remove of an unknown container succeed (see the module doc).
    fn resolve_if_known(&self, id: &str) -> Result<Option<String>, Error> {
        match self.inner.resolve(id) {
            Ok(full) => {
                record_ids(&self.inner, &full);
                Ok(Some(full))
            }
            Err(Error::NotFound(_)) => {
                tracing::Span::current().record("container_id", id);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// StopContainer: an unknown id is not an error (see the module doc).
    pub(crate) async fn stop(
        &self,
        req: StopContainerRequest,
    ) -> Result<StopContainerResponse, Error> {
        let Some(id) = self.resolve_if_known(&req.container_id)? else {
            return Ok(StopContainerResponse {});
        };
        let timeout = Duration::from_secs(req.timeout.max(0) as u64);
        self.stop_id(id, timeout).await?;
        Ok(StopContainerResponse {})
    }

    async fn remove_id(&self, id: String) -> Result<(), Error> {
        self.blocking(move |i| {
            match i.runtime.get(&id) {
                // A running container is killed first, as containerd's remove does; its STOPPED
                // event goes out before the DELETED one.
                Ok(c) => {
                    c.stop(Duration::ZERO)?;
                    i.stopped(&id);
                    c.delete()?;
                }
                Err(runtime::Error::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let sandbox_id = i.sandbox_of(&id);
            i.forget(&id);
            i.stats.forget(&id);
            if let Some(sb) = sandbox_id {
                i.send_event(&id, &sb, ContainerEventType::ContainerDeletedEvent);
            }
            Ok(())
        })
        .await
    }

    /// RemoveContainer: stops it first; an unknown id is not an error. The caller then releases
    /// the container's image hold (`Images::release(container_id)`).
    pub(crate) async fn remove(
        &self,
        req: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse, Error> {
        let Some(id) = self.resolve_if_known(&req.container_id)? else {
            return Ok(RemoveContainerResponse {});
        };
        self.remove_id(id).await?;
        tracing::info!("container removed");
        Ok(RemoveContainerResponse {})
    }

    /// ListContainers as the daemon answers it: encoded, from each container's kept encoding.
    pub(crate) async fn list_encoded(&self, req: ListContainersRequest) -> Result<Bytes, Error> {
        let filter = req.filter.unwrap_or_default();
        // The kubelet's poll: answered again as is while nothing changed. The count is read
        // before the records, so an answer is never kept under a count a later change made.
        let unfiltered = filter == ContainerFilter::default();
        let changes = self.inner.changes.load(Ordering::Acquire);
        if unfiltered && let Some(answer) = self.inner.unfiltered.get(changes) {
            return Ok(answer);
        }
        let items: Vec<(String, Bytes)> = {
            let table = self.inner.table();
            let mut kept = self.inner.encoded.lock();
            kept.prune(table.containers.len(), |id| {
                table.containers.contains_key(id)
            });
            table
                .containers
                .values()
                .filter(|m| matches(&filter, m))
                .map(|m| {
                    let bytes = kept.get(&m.id, m.created_at, || list_item(m).encode_to_vec());
                    (m.id.clone(), bytes)
                })
                .collect()
        };
        // From memory; only states not known yet (first call, just changed) are read from disk.
        let known = self
            .inner
            .known_states(items.iter().map(|(id, _)| id.as_str()));
        let all_known = known.iter().all(|(_, s)| s.is_some());
        let states: Vec<Option<State>> = if all_known {
            known.into_iter().map(|(_, s)| s).collect()
        } else {
            let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
            self.blocking(move |i| Ok(i.states_of(&ids))).await?
        };
        let want = filter.state.map(|s| s.state);
        let listed = items.iter().zip(states).filter_map(|((_, bytes), state)| {
            let state = state
                .map(state_to_cri)
                .unwrap_or(ContainerState::ContainerUnknown) as i32;
            want.is_none_or(|w| w == state)
                .then_some((&bytes[..], state))
        });
        let answer = answer(listed, CONTAINER_STATE);
        // Only states kept in memory are ones a change moves the count for.
        if unfiltered && all_known {
            self.inner.unfiltered.keep(changes, &answer);
        }
        Ok(answer)
    }

    /// ListContainers as a message, decoded from the answer the daemon sends.
    pub(crate) async fn list(
        &self,
        req: ListContainersRequest,
    ) -> Result<ListContainersResponse, Error> {
        crate::listing::decode(self.list_encoded(req).await?, "container list")
    }

    /// ContainerStats for one container.
    pub(crate) async fn stats(
        &self,
        req: ContainerStatsRequest,
    ) -> Result<ContainerStatsResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        let filter = ContainerStatsFilter {
            id,
            ..Default::default()
        };
        let stats = self.collect_stats(&filter).await?.into_iter().next();
        Ok(ContainerStatsResponse { stats })
    }

    /// ListContainerStats: every container the filter selects, created and exited ones too (their
    /// usage reads as zero), as containerd lists them.
    pub(crate) async fn list_stats(
        &self,
        req: ListContainerStatsRequest,
    ) -> Result<ListContainerStatsResponse, Error> {
        let filter = req.filter.unwrap_or_default();
        Ok(ListContainerStatsResponse {
            stats: self.collect_stats(&filter).await?,
        })
    }

    async fn collect_stats(&self, f: &ContainerStatsFilter) -> Result<Vec<ContainerStats>, Error> {
        let fs = self.layers_mountpoint();
        Ok(self
            .samples(f)
            .await?
            .iter()
            .map(|s| s.to_cri(&fs))
            .collect())
    }

    /// Where the writable layers live: `ContainerStats.writable_layer.fs_id` and the containers'
    /// filesystem of `ImageFsInfo`.
    pub(crate) fn layers_mountpoint(&self) -> String {
        self.inner
            .runtime
            .writable_layers_dir()
            .to_string_lossy()
            .into_owned()
    }

    /// The disk use of every writable layer (`ImageFsInfo`'s container filesystem), from the
    /// same brief cache the stats calls use.
    pub(crate) async fn layers_usage(&self) -> Result<carapace_runtime::stats::DiskUsage, Error> {
        let ids: Vec<String> = self.inner.table().containers.keys().cloned().collect();
        self.blocking(move |i| {
            let mut total = carapace_runtime::stats::DiskUsage::default();
            for id in ids {
                let u = i.layer_usage(&id);
                total.bytes += u.bytes;
                total.inodes += u.inodes;
            }
            Ok(total)
        })
        .await
    }

    /// What the stats calls report of each container the filter selects, created and exited
    /// ones too (their usage reads as zero), as containerd lists them. cgroup files and layer
    /// walks are read on the blocking pool: a slow filesystem must not stall the gRPC threads.
    pub(crate) async fn samples(
        &self,
        f: &ContainerStatsFilter,
    ) -> Result<Vec<ContainerSample>, Error> {
        let filter = ContainerFilter {
            id: f.id.clone(),
            state: None,
            pod_sandbox_id: f.pod_sandbox_id.clone(),
            label_selector: f.label_selector.clone(),
        };
        let metas: Vec<Meta> = self
            .inner
            .table()
            .containers
            .values()
            .filter(|m| matches(&filter, m))
            .cloned()
            .collect();
        self.blocking(move |i| Ok(metas.iter().map(|m| i.sample(m)).collect()))
            .await
    }
    pub(crate) async fn status(
        &self,
        req: ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        let meta = self
            .inner
            .meta(&id)
            .ok_or_else(|| Error::NotFound(format!("container {id}")))?;
        let verbose = req.verbose;
        let (status, info) = self.blocking(move |i| i.cri_status(&meta, verbose)).await?;
        Ok(ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    pub(crate) async fn update_resources(
        &self,
        req: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        let Some(linux) = req.linux else {
            return Ok(UpdateContainerResourcesResponse {});
        };
        // The OOM score cannot change live; the rest replaces the cgroup's settings.
        let (res, _oom) = resources(&linux)?;
        self.blocking(move |i| Ok(i.runtime.get(&id)?.update_resources(&res)?))
            .await?;
        Ok(UpdateContainerResourcesResponse {})
    }

    pub(crate) async fn reopen_log(
        &self,
        req: ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        self.blocking(move |i| Ok(i.runtime.get(&id)?.reopen_log()?))
            .await?;
        Ok(ReopenContainerLogResponse {})
    }

    /// ExecSync: `timeout` seconds (0: none); output capped by the runtime at just under 16 MiB,
    /// both streams together, so the reply fits the kubelet's 16 MiB gRPC limit;
    /// a timeout is DeadlineExceeded, which the kubelet reads as a probe timeout.
    pub(crate) async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResponse, Error> {
        let id = self.inner.resolve(&req.container_id)?;
        record_ids(&self.inner, &id);
        if req.cmd.is_empty() || req.cmd[0].is_empty() {
            return Err(invalid("ExecSync needs a command"));
        }
        // Refused before anything runs, as CreateContainer refuses it: exec(2) cannot take it.
        if req.cmd.iter().any(|a| a.contains('\0')) {
            return Err(invalid("the ExecSync command contains a NUL byte"));
        }
        let timeout = Duration::from_secs(req.timeout.max(0) as u64);
        let cmd = req.cmd;
        let out = self
            .blocking(move |i| Ok(i.runtime.get(&id)?.exec_sync(&cmd, timeout)?))
            .await?;
        Ok(ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        })
    }

    /// The pid of a running container (for the streaming server's exec/attach).
    /// The command for a streaming exec of `args` in a running container (see
    /// `Container::exec_command`).
    pub(crate) async fn exec_command(
        &self,
        container_id: &str,
        args: Vec<String>,
    ) -> Result<std::process::Command, Error> {
        let id = self.inner.resolve(container_id)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || -> Result<std::process::Command, Error> {
            Ok(inner.runtime.get(&id)?.exec_command(&args)?)
        })
        .await
        .map_err(|e| Error::Internal(format!("exec task: {e}")))?
    }

    /// As [`ContainerApi::exec_command`], with a new pty (see `Container::exec_command_tty`).
    pub(crate) async fn exec_command_tty(
        &self,
        container_id: &str,
        args: Vec<String>,
    ) -> Result<(std::process::Command, std::os::fd::OwnedFd), Error> {
        let id = self.inner.resolve(container_id)?;
        self.blocking(move |i| Ok(i.runtime.get(&id)?.exec_command_tty(&args)?))
            .await
    }

    /// Attach's check: the container runs and, when the client sends input, has a stdin.
    pub(crate) async fn check_attach(&self, container_id: &str, stdin: bool) -> Result<(), Error> {
        let id = self.inner.resolve(container_id)?;
        self.blocking(move |i| {
            let c = i.runtime.get(&id)?;
            if c.status()?.state != State::Running {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is not running"
                )));
            }
            if stdin && !c.config()?.process.stdin {
                return Err(invalid(format!(
                    "container {id} was not created with stdin, so it has no input to attach to"
                )));
            }
            Ok(())
        })
        .await
    }

    /// Connects to a running container's stdio through its monitor; returns the connection (see
    /// `carapace_runtime::attach`) and whether the container has a terminal.
    pub(crate) async fn attach(
        &self,
        container_id: &str,
        streams: carapace_runtime::attach::Streams,
    ) -> Result<(std::os::unix::net::UnixStream, bool), Error> {
        let id = self.inner.resolve(container_id)?;
        self.blocking(move |i| Ok(i.runtime.get(&id)?.attach(streams)?))
            .await
    }

    pub(crate) async fn pid(&self, container_id: &str) -> Result<i32, Error> {
        let id = self.inner.resolve(container_id)?;
        self.blocking(move |i| {
            let st = i.runtime.get(&id)?.status()?;
            match st.pid {
                Some(pid) if st.state == State::Running => Ok(pid),
                _ => Err(Error::FailedPrecondition(format!(
                    "container {id} is not running"
                ))),
            }
        })
        .await
    }
}

/// The glue to the other stores, so `runtime.rs` needs one call per RPC.
impl ContainerApi {
    /// CreateContainer end to end: resolves the sandbox (which must be ready) and the image,
    /// creates the container, then holds the image's snapshots for it.
    pub(crate) async fn create_from_stores(
        &self,
        req: CreateContainerRequest,
        images: &carapace_imageservice::Images,
        sandboxes: &carapace_podsandbox::Sandboxes,
    ) -> Result<CreateContainerResponse, Error> {
        if req.pod_sandbox_id.is_empty() {
            return Err(invalid("pod_sandbox_id is required"));
        }
        let sb_id = sandboxes.resolve(&req.pod_sandbox_id)?;
        tracing::Span::current().record("pod_id", sb_id.as_str());
        let sb = sandboxes
            .get(&sb_id)
            .ok_or_else(|| Error::NotFound(format!("sandbox {sb_id}")))?;
        if sb.state != carapace_podsandbox::SandboxState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "sandbox {sb_id} is not ready: containers can only be created in a ready sandbox"
            )));
        }
        let name = req
            .config
            .as_ref()
            .and_then(|c| c.image.as_ref())
            .map(|i| i.image.clone())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("the container config names no image"))?;
        tracing::Span::current().record("image", name.as_str());
        let img = images
            .status(&name)?
            .ok_or_else(|| Error::NotFound(format!("image {name:?}")))?;
        let config = {
            let (images, img) = (images.clone(), img.clone());
            tokio::task::spawn_blocking(move || images.config(&img))
                .await
                .map_err(|e| Error::Internal(format!("image config task: {e}")))??
        };
        let info = ImageInfo::from_image(&img, &config, images.lower_dirs(&img), &name);
        let resp = self
            .create(req, SandboxInfo::from_sandbox(&sb), info)
            .await?;
        // After the create: a hold needs the id. A failed hold leaves a working container whose
        // layers a later image removal could collect, so it is loud but not fatal.
        if let Err(e) = images.hold(&resp.container_id, &img) {
            tracing::error!(container_id = %resp.container_id, error = %e, "holding the image's snapshots");
        }
        Ok(resp)
    }

    /// RemoveContainer, then the container's image hold is released.
    pub(crate) async fn remove_releasing(
        &self,
        req: RemoveContainerRequest,
        images: &carapace_imageservice::Images,
    ) -> Result<RemoveContainerResponse, Error> {
        let id = self
            .inner
            .resolve(&req.container_id)
            .unwrap_or_else(|_| req.container_id.clone());
        let resp = self.remove(req).await?;
        if !id.is_empty() {
            images.release(&id).await?;
        }
        Ok(resp)
    }

    /// Removes every container of a sandbox and releases their image holds
    /// (RemovePodSandbox calls this before removing the sandbox).
    pub(crate) async fn remove_sandbox_containers_releasing(
        &self,
        sandbox_id: &str,
        images: Option<&carapace_imageservice::Images>,
    ) -> Result<(), Error> {
        for id in self.remove_sandbox_containers(sandbox_id).await? {
            if let Some(images) = images {
                images.release(&id).await?;
            }
        }
        Ok(())
    }
}

/// Puts the container's and its pod's ids on the call's span.
fn record_ids(inner: &Inner, id: &str) {
    let span = tracing::Span::current();
    span.record("container_id", id);
    if let Some(m) = inner.meta(id) {
        span.record("pod_id", m.sandbox_id.as_str());
    }
}

/// A monitor's resident memory (`VmRSS` of `/proc/<pid>/status`), open fds and CPU time;
/// `None` once it is gone.
fn monitor_usage(pid: i32) -> Option<carapace_metrics::MonitorUsage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as i64);
    // schedstat's first field is the time on a CPU in nanoseconds: no clock-tick unit to know.
    let cpu_ns: u64 = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some(carapace_metrics::MonitorUsage {
        pid,
        rss_bytes: kb * 1024,
        open_fds,
        cpu_seconds: cpu_ns as f64 / 1e9,
    })
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
