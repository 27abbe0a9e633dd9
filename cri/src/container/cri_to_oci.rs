//! The CRI → OCI translation: a CRI `ContainerConfig`, with plain data about the image
//! ([`ImageInfo`]) and the sandbox ([`SandboxInfo`]), mapped to the runtime's
//! [`rt::ContainerConfig`] by the Kubernetes rules. Pure but for reading the image's
//! `/etc/passwd` and `/etc/group` ([`super::image_users`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use carapace_runtime::config as rt;

use super::image_users::resolve_user;
use super::invalid;
use crate::api::*;
use crate::error::Error;

/// What the container layer needs to know about the image, filled from `carapace-imageservice`
/// (see [`ImageInfo::from_image`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ImageInfo {
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
    pub(super) fn from_image(
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
pub(super) struct SandboxInfo {
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
    /// The pod's own user namespace and its maps; `None`: the host's.
    pub user: Option<rt::UserNs>,
    /// The pod's runtime handler (`""`: the built-in executor).
    pub runtime_handler: String,
}

impl SandboxInfo {
    pub(super) fn from_sandbox(sb: &carapace_podsandbox::Sandbox) -> Self {
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
            user: match (&sb.namespaces.user, &sb.config.userns) {
                (Some(path), Some(u)) => {
                    let maps = |m: &[carapace_podsandbox::IdMapping]| {
                        m.iter()
                            .map(|m| rt::IdMap {
                                container_id: m.container_id,
                                host_id: m.host_id,
                                length: m.length,
                            })
                            .collect()
                    };
                    Some(rt::UserNs {
                        path: path.clone(),
                        uids: maps(&u.uids),
                        gids: maps(&u.gids),
                    })
                }
                _ => None,
            },
            runtime_handler: sb.config.runtime_handler.clone(),
        }
    }
}

/// The reserved name of a container, as containerd makes it: unique per pod and attempt.
pub(super) fn container_name(c: &ContainerMetadata, sb: &SandboxInfo) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        c.name, sb.pod_name, sb.pod_namespace, sb.pod_uid, c.attempt
    )
}

/// argv by the Kubernetes rules: `command` replaces the image's Entrypoint and drops its Cmd;
/// `args` alone replace the Cmd.
fn argv(command: &[String], args: &[String], image: &ImageInfo) -> Result<Vec<String>, Error> {
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

/// The image's env, then the config's: a config key replaces the image's value in place. CRI
/// values are bytes since cri-api v0.36.3 and go to the process as they are, UTF-8 or not.
fn merge_env(image: &[String], config: &[KeyValue]) -> Result<Vec<std::ffi::OsString>, Error> {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut env: Vec<OsString> = image
        .iter()
        .filter(|e| e.contains('='))
        .map(OsString::from)
        .collect();
    for kv in config {
        if kv.key.is_empty()
            || kv.key.contains('=')
            || kv.key.contains('\0')
            || kv.value.contains(&0)
        {
            // The key only: the value may be a secret.
            return Err(invalid(format!(
                "invalid environment variable {:?}",
                kv.key
            )));
        }
        let entry = OsString::from_vec([kv.key.as_bytes(), b"=", &kv.value].concat());
        let prefix = &entry.as_bytes()[..=kv.key.len()];
        match env.iter().position(|e| e.as_bytes().starts_with(prefix)) {
            Some(i) => env[i] = entry,
            None => env.push(entry),
        }
    }
    Ok(env)
}

/// Config, else image, else `/`. A relative image WORKDIR is taken from `/` as Docker does.
fn working_dir(config: &str, image: &str) -> Result<String, Error> {
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
pub(super) fn log_path(dir: Option<&Path>, rel: &str) -> Result<Option<PathBuf>, Error> {
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
    ("CLD", 17),
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
/// What the runtime sends first when neither the config nor the image names a stop signal.
pub(super) const SIGTERM: i32 = 15;
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// `SIGTERM`, `TERM`, `15`, `SIGRTMIN+3` → the signal number.
fn parse_signal(s: &str) -> Option<i32> {
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

/// `ContainerConfig.stop_signal` as a signal number; `None` for `RUNTIME_DEFAULT` (the image's
/// StopSignal then stands).
pub(super) fn signal_from_cri(v: i32) -> Result<Option<i32>, Error> {
    match Signal::try_from(v) {
        Ok(Signal::RuntimeDefault) => Ok(None),
        Ok(sig) => {
            // The enum names the real-time signals SIGRTMINPLUS3 and SIGRTMAXMINUS3.
            let name = sig
                .as_str_name()
                .replace("RTMINPLUS", "RTMIN+")
                .replace("RTMAXMINUS", "RTMAX-");
            parse_signal(&name)
                .map(Some)
                .ok_or_else(|| invalid(format!("stop_signal {name} is not a Linux signal")))
        }
        Err(_) => Err(invalid(format!("stop_signal {v} is not a CRI Signal"))),
    }
}

/// A signal number as the CRI `Signal` that names it (the first of aliases like SIGABRT and
/// SIGIOT); `RUNTIME_DEFAULT` for a number no name has.
pub(super) fn signal_to_cri(n: i32) -> Signal {
    (1..=Signal::Sigrtmax as i32)
        .filter_map(|v| Signal::try_from(v).ok())
        .find(|s| signal_from_cri(*s as i32).ok().flatten() == Some(n))
        .unwrap_or(Signal::RuntimeDefault)
}

/// The seccomp profile: `security_context.seccomp`, else the deprecated path field; nothing
/// asked means unconfined, as the kubelet means it (it sends RuntimeDefault when it wants it).
#[allow(deprecated)] // `seccomp_profile_path`: still sent by older kubelets.
fn seccomp(sc: Option<&LinuxContainerSecurityContext>) -> Result<rt::SeccompProfile, Error> {
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
pub(super) fn resources(r: &LinuxContainerResources) -> Result<(rt::Resources, i32), Error> {
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
pub(super) fn resources_to_cri(
    r: &rt::Resources,
    oom_score_adj: Option<i32>,
) -> LinuxContainerResources {
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

/// The layer dirs (topmost first) of the image each image volume of a config mounts, by the
/// volume's `container_path`: the caller looked each image up in the store (see
/// `ContainerApi::create_from_stores`), so this mapping stays pure.
pub(super) type VolumeLayers = HashMap<String, Vec<PathBuf>>;

/// Whether the mount is an image volume: `Mount.image` names an image.
pub(super) fn volume_image(m: &Mount) -> Option<&ImageSpec> {
    m.image
        .as_ref()
        .filter(|i| !i.image.is_empty() || !i.image_ref.is_empty())
}

/// The CRI mounts, then the sandbox's files where the CRI did not mount the same path (the
/// kubelet mounts its own `/etc/hosts` for most pods). `selinux_relabel` is ignored: no SELinux.
/// An image volume is read-only and private whatever the mount asks: nothing in an image can
/// change or propagate.
fn mounts(
    cri: &[Mount],
    sb: &SandboxInfo,
    readonly_rootfs: bool,
    volumes: &VolumeLayers,
) -> Result<Vec<rt::Mount>, Error> {
    let mut out = Vec::with_capacity(cri.len() + 4);
    for m in cri {
        // As the CRI has it: only with readonly, and only private, since a submount propagated
        // in later would not be read-only.
        if m.recursive_read_only
            && (!m.readonly || m.propagation != MountPropagation::PropagationPrivate as i32)
        {
            return Err(invalid(format!(
                "recursive read-only mount {} needs readonly and private propagation",
                m.container_path
            )));
        }
        if m.recursive_read_only && !carapace_runtime::mount_setattr_supported() {
            return Err(invalid(format!(
                "recursive read-only mount {}: this kernel has no mount_setattr(2)",
                m.container_path
            )));
        }
        if m.recursive_read_only
            && !super::runtime_handlers::recursive_read_only(&sb.runtime_handler)
        {
            return Err(invalid(format!(
                "recursive read-only mount {}: runtime handler {:?} does not support it",
                m.container_path, sb.runtime_handler
            )));
        }
        // Every bind of a user-namespaced pod is id-mapped through the pod's namespace: mappings
        // given per mount can only be those, and need that namespace.
        if (!m.uid_mappings.is_empty() || !m.gid_mappings.is_empty())
            && !sb.user.as_ref().is_some_and(|u| {
                same_maps(&m.uid_mappings, &u.uids) && same_maps(&m.gid_mappings, &u.gids)
            })
        {
            return Err(invalid(format!(
                "mount {}: id mappings other than the pod user namespace's are not supported",
                m.container_path
            )));
        }
        if !absolute_clean(&m.container_path) {
            return Err(invalid(format!(
                "mount container_path {:?} must be an absolute path without `..`",
                m.container_path
            )));
        }
        if volume_image(m).is_some() {
            if !m.host_path.is_empty() {
                return Err(invalid(format!(
                    "mount {} names both a host_path and an image, which exclude each other",
                    m.container_path
                )));
            }
            let layers = volumes.get(&m.container_path).cloned().ok_or_else(|| {
                Error::NotFound(format!("the image of volume {}", m.container_path))
            })?;
            out.push(rt::Mount::image_volume(
                &m.container_path,
                rt::ImageVolume {
                    layers,
                    sub_path: m.image_sub_path.clone(),
                },
            ));
            continue;
        }
        if !m.image_sub_path.is_empty() {
            return Err(invalid(format!(
                "mount {} has an image_sub_path but no image",
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
            recursive_readonly: m.recursive_read_only,
            image: None,
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
                recursive_readonly: false,
                image: None,
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
fn namespaces(
    opts: Option<&NamespaceOption>,
    sb: &SandboxInfo,
    target_pid_ns: &dyn Fn(&str) -> Result<PathBuf, Error>,
) -> Result<rt::Namespaces, Error> {
    let default = NamespaceOption::default();
    let opts = opts.unwrap_or(&default);
    // The user namespace is the pod's: a container may restate it (the kubelet sends the pod's
    // options), not ask for another.
    if let Some(u) = &opts.userns_options {
        let restated = match (NamespaceMode::try_from(u.mode), &sb.user) {
            (Ok(NamespaceMode::Node), None) => u.uids.is_empty() && u.gids.is_empty(),
            (Ok(NamespaceMode::Pod), Some(pod)) => {
                same_maps(&u.uids, &pod.uids) && same_maps(&u.gids, &pod.gids)
            }
            _ => false,
        };
        if !restated {
            return Err(invalid(
                "the container's user namespace options differ from its pod's",
            ));
        }
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
        user: sb.user.clone(),
    })
}

fn same_maps(cri: &[IdMapping], rt: &[rt::IdMap]) -> bool {
    cri.len() == rt.len()
        && cri.iter().zip(rt).all(|(c, r)| {
            c.container_id == r.container_id && c.host_id == r.host_id && c.length == r.length
        })
}

/// Everything the mapping needs besides the request.
pub(super) struct MapInput<'a> {
    pub id: &'a str,
    pub config: &'a ContainerConfig,
    pub image: &'a ImageInfo,
    pub sandbox: &'a SandboxInfo,
    pub target_pid_ns: &'a dyn Fn(&str) -> Result<PathBuf, Error>,
    pub volume_layers: &'a VolumeLayers,
}

/// The CRI container config → the runtime's, by the Kubernetes rules.
pub(super) fn runtime_config(input: &MapInput<'_>) -> Result<rt::ContainerConfig, Error> {
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
    let cdi_names = super::cdi::requested(&c.cdi_devices, &c.annotations)?;
    // Most containers ask for no device: no registry (its dirs cloned) for them.
    let cdi = if cdi_names.is_empty() {
        super::cdi::CdiEdits::default()
    } else {
        super::cdi::CdiRegistry::configured().resolve(&cdi_names)?
    };
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
    if let Some(u) = &sb.user {
        // Refused here rather than by setresuid(2) at start, with the id named.
        let mapped = |maps: &[rt::IdMap], id: u32| {
            maps.iter()
                .any(|m| id >= m.container_id && id - m.container_id < m.length)
        };
        let gids = std::iter::once(user.gid).chain(user.additional_gids.iter().copied());
        if !mapped(&u.uids, user.uid) {
            return Err(invalid(format!(
                "uid {} is not mapped in the pod's user namespace",
                user.uid
            )));
        }
        if let Some(g) = gids.into_iter().find(|g| !mapped(&u.gids, *g)) {
            return Err(invalid(format!(
                "gid {g} is not mapped in the pod's user namespace"
            )));
        }
    }
    if !env
        .iter()
        .any(|e| e.as_encoded_bytes().starts_with(b"HOME="))
    {
        env.push(format!("HOME={}", user.home.as_deref().unwrap_or("/")).into());
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
    let stop_signal = if let Some(n) = signal_from_cri(c.stop_signal)? {
        Some(n)
    } else if image.stop_signal.is_empty() {
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

    let mut config = rt::ContainerConfig {
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
        mounts: mounts(&c.mounts, sb, readonly_rootfs, input.volume_layers)?,
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
        oci_runtime: super::runtime_handlers::oci_runtime(&sb.runtime_handler)?,
    };
    // Last, so a device's env, nodes and mounts replace the container's own at the same key or
    // path, as the CDI library edits an OCI spec.
    cdi.apply(&mut config);
    config.validate()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::container::fixtures::*;

    // --- command, env, working dir -------------------------------------------------------------

    #[test]
    fn command_replaces_entrypoint_and_drops_image_cmd() {
        let img = image(&["/entry"], &["default-arg"]);
        assert_eq!(argv(&s(&["/bin/sh"]), &[], &img).unwrap(), s(&["/bin/sh"]));
        assert_eq!(
            argv(&s(&["/bin/sh"]), &s(&["-c", "true"]), &img).unwrap(),
            s(&["/bin/sh", "-c", "true"])
        );
    }

    #[test]
    fn args_alone_replace_image_cmd() {
        let img = image(&["/entry"], &["default-arg"]);
        assert_eq!(argv(&[], &s(&["x"]), &img).unwrap(), s(&["/entry", "x"]));
        assert_eq!(argv(&[], &[], &img).unwrap(), s(&["/entry", "default-arg"]));
        // No entrypoint: args are the whole argv.
        assert_eq!(
            argv(&[], &s(&["ls"]), &image(&[], &["sh"])).unwrap(),
            s(&["ls"])
        );
    }

    #[test]
    fn no_command_anywhere_is_invalid() {
        let e = argv(&[], &[], &image(&[], &[])).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(ref m) if m.contains("no command")),
            "{e}"
        );
        assert!(argv(&s(&[""]), &[], &image(&[], &[])).is_err());
    }

    /// `v` as the runtime's environment entries.
    fn os(v: &[&str]) -> Vec<std::ffi::OsString> {
        v.iter().map(std::ffi::OsString::from).collect()
    }

    #[test]
    fn config_env_wins_over_image_env_in_place() {
        let env = merge_env(
            &s(&["PATH=/bin", "A=image", "B=image", "AB=image"]),
            &[kv("A", "config"), kv("C", "new=with=equals")],
        )
        .unwrap();
        assert_eq!(
            env,
            os(&[
                "PATH=/bin",
                "A=config",
                "B=image",
                "AB=image",
                "C=new=with=equals"
            ])
        );
        assert!(merge_env(&[], &[kv("", "x")]).is_err());
        assert!(merge_env(&[], &[kv("A=B", "x")]).is_err());
        assert!(merge_env(&[], &[kv("A\0", "x")]).is_err());
    }

    #[test]
    fn env_values_that_are_not_utf8_arrive_as_bytes_and_nul_is_refused_naming_the_key() {
        use std::os::unix::ffi::OsStringExt;
        let bytes = |v: &[u8]| KeyValue {
            key: "RAW".into(),
            value: v.to_vec(),
        };
        let e = merge_env(&[], &[bytes(b"a\0secret")]).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(ref m) if m.contains("\"RAW\"") && !m.contains("secret")),
            "{e}"
        );
        for v in [&b"caf\xe9"[..], b"\xff\xfe", "caf\u{e9}".as_bytes(), b""] {
            let env = merge_env(&s(&["RAW=image", "Z=1"]), &[bytes(v)]).unwrap();
            let want = [&b"RAW="[..], v].concat();
            assert_eq!(
                env,
                vec![std::ffi::OsString::from_vec(want), "Z=1".into()],
                "{v:?}"
            );
        }
    }

    #[test]
    fn working_dir_is_config_then_image_then_root() {
        assert_eq!(working_dir("/work", "/img").unwrap(), "/work");
        assert_eq!(working_dir("", "/img").unwrap(), "/img");
        assert_eq!(working_dir("", "").unwrap(), "/");
        assert_eq!(working_dir("", "rel").unwrap(), "/rel");
        assert!(working_dir("relative", "").is_err());
    }

    #[test]
    fn cri_stop_signals_map_to_numbers_and_back() {
        assert_eq!(
            signal_from_cri(Signal::RuntimeDefault as i32).unwrap(),
            None
        );
        assert_eq!(signal_from_cri(Signal::Sigusr1 as i32).unwrap(), Some(10));
        assert_eq!(
            signal_from_cri(Signal::Sigrtminplus3 as i32).unwrap(),
            Some(37)
        );
        assert_eq!(
            signal_from_cri(Signal::Sigrtmaxminus1 as i32).unwrap(),
            Some(63)
        );
        assert!(signal_from_cri(999).is_err());
        for v in 1..=Signal::Sigrtmax as i32 {
            let n = signal_from_cri(v).unwrap().unwrap();
            assert_eq!(signal_from_cri(signal_to_cri(n) as i32).unwrap(), Some(n));
        }
        assert_eq!(signal_to_cri(6), Signal::Sigabrt);
        assert_eq!(signal_to_cri(15), Signal::Sigterm);
    }

    #[test]
    fn stop_signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("SIGQUIT"), Some(3));
        assert_eq!(parse_signal("term"), Some(15));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGRTMIN+3"), Some(37));
        assert_eq!(parse_signal("RTMAX-1"), Some(63));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("99"), None);
    }

    // --- log path, namespaces, seccomp, resources, mounts ------------------------------------------

    #[test]
    fn log_path_is_joined_and_escapes_are_rejected() {
        let dir = Path::new("/var/log/pods/ns_p_u");
        assert_eq!(
            log_path(Some(dir), "c/0.log").unwrap(),
            Some(dir.join("c/0.log"))
        );
        assert_eq!(log_path(Some(dir), "").unwrap(), None);
        assert_eq!(log_path(None, "c/0.log").unwrap(), None);
        for bad in ["../x.log", "/etc/passwd", "c/../../x.log", "c/..", "a\0b"] {
            assert!(
                matches!(log_path(Some(dir), bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        assert!(log_path(Some(Path::new("relative")), "c/0.log").is_err());
    }

    #[test]
    fn pid_namespace_follows_the_mode() {
        let mut sb = sandbox();
        let opts = |pid: NamespaceMode, target: &str| NamespaceOption {
            pid: pid as i32,
            target_id: target.into(),
            ..Default::default()
        };
        let ns = namespaces(Some(&opts(NamespaceMode::Container, "")), &sb, &no_target).unwrap();
        assert_eq!(ns.pid, rt::NsMode::New);
        assert_eq!(ns.network, sb.network);
        assert_eq!(ns.ipc, sb.ipc);
        assert_eq!(ns.uts, sb.uts);
        let ns = namespaces(Some(&opts(NamespaceMode::Node, "")), &sb, &no_target).unwrap();
        assert_eq!(ns.pid, rt::NsMode::Host);
        // POD on a sandbox without a shared PID namespace.
        assert!(matches!(
            namespaces(Some(&opts(NamespaceMode::Pod, "")), &sb, &no_target),
            Err(Error::FailedPrecondition(_))
        ));
        sb.pid = rt::NsMode::Join("/run/carapace/pidns/sb".into());
        let ns = namespaces(Some(&opts(NamespaceMode::Pod, "")), &sb, &no_target).unwrap();
        assert_eq!(ns.pid, rt::NsMode::Join("/run/carapace/pidns/sb".into()));
        let target = |id: &str| Ok(PathBuf::from(format!("/proc/{}/ns/pid", id.len())));
        let ns = namespaces(Some(&opts(NamespaceMode::Target, "abc")), &sb, &target).unwrap();
        assert_eq!(ns.pid, rt::NsMode::Join("/proc/3/ns/pid".into()));
        assert!(namespaces(Some(&opts(NamespaceMode::Target, "")), &sb, &target).is_err());
        assert!(namespaces(Some(&opts(NamespaceMode::Target, "x")), &sb, &no_target).is_err());
        // No options at all: the CRI default, POD.
        let ns = namespaces(None, &sb, &no_target).unwrap();
        assert_eq!(ns.pid, rt::NsMode::Join("/run/carapace/pidns/sb".into()));
        let mut host = sandbox();
        host.network = rt::NsMode::Host;
        let ns = namespaces(Some(&opts(NamespaceMode::Container, "")), &host, &no_target).unwrap();
        assert_eq!(ns.network, rt::NsMode::Host);
    }

    #[test]
    fn a_container_joins_its_pods_user_namespace_and_may_only_restate_it() {
        let map = |host_id| IdMapping {
            container_id: 0,
            host_id,
            length: 65536,
        };
        let rt_map = rt::IdMap {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        };
        let mut sb = sandbox();
        sb.pid = rt::NsMode::Join("/p".into());
        let userns = |mode: NamespaceMode, m: Vec<IdMapping>| NamespaceOption {
            userns_options: Some(UserNamespace {
                mode: mode as i32,
                uids: m.clone(),
                gids: m,
            }),
            ..Default::default()
        };
        // A pod without one: NODE (or nothing) only.
        assert_eq!(namespaces(None, &sb, &no_target).unwrap().user, None);
        namespaces(Some(&userns(NamespaceMode::Node, vec![])), &sb, &no_target).unwrap();
        assert!(matches!(
            namespaces(
                Some(&userns(NamespaceMode::Pod, vec![map(65536)])),
                &sb,
                &no_target
            ),
            Err(Error::InvalidArgument(_))
        ));
        sb.user = Some(rt::UserNs {
            path: "/pod/ns/user".into(),
            uids: vec![rt_map],
            gids: vec![rt_map],
        });
        // A pod with one: joined whether restated or not; another mapping or mode is refused.
        for opts in [None, Some(userns(NamespaceMode::Pod, vec![map(65536)]))] {
            let ns = namespaces(opts.as_ref(), &sb, &no_target).unwrap();
            assert_eq!(ns.user, sb.user);
        }
        for bad in [
            userns(NamespaceMode::Pod, vec![map(131072)]),
            userns(NamespaceMode::Node, vec![]),
            userns(NamespaceMode::Container, vec![]),
        ] {
            assert!(matches!(
                namespaces(Some(&bad), &sb, &no_target),
                Err(Error::InvalidArgument(_))
            ));
        }
        // Per-mount mappings: the pod's only.
        let vol = |m: Vec<IdMapping>| Mount {
            container_path: "/v".into(),
            host_path: "/tmp".into(),
            uid_mappings: m.clone(),
            gid_mappings: m,
            ..Default::default()
        };
        mounts(&[vol(vec![map(65536)])], &sb, false, &VolumeLayers::new()).unwrap();
        assert!(mounts(&[vol(vec![map(131072)])], &sb, false, &VolumeLayers::new()).is_err());
        sb.user = None;
        assert!(mounts(&[vol(vec![map(65536)])], &sb, false, &VolumeLayers::new()).is_err());
    }

    #[test]
    #[allow(deprecated)]
    fn seccomp_profile_selection() {
        use security_profile::ProfileType;
        let with = |t: ProfileType, r: &str| {
            let mut c = sc();
            c.seccomp = Some(SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            });
            c
        };
        assert_eq!(seccomp(None).unwrap(), rt::SeccompProfile::Unconfined);
        assert_eq!(
            seccomp(Some(&sc())).unwrap(),
            rt::SeccompProfile::Unconfined
        );
        assert_eq!(
            seccomp(Some(&with(ProfileType::RuntimeDefault, ""))).unwrap(),
            rt::SeccompProfile::RuntimeDefault
        );
        assert_eq!(
            seccomp(Some(&with(ProfileType::Unconfined, ""))).unwrap(),
            rt::SeccompProfile::Unconfined
        );
        assert_eq!(
            seccomp(Some(&with(
                ProfileType::Localhost,
                "/var/lib/kubelet/seccomp/p.json"
            )))
            .unwrap(),
            rt::SeccompProfile::Localhost("/var/lib/kubelet/seccomp/p.json".into())
        );
        assert!(seccomp(Some(&with(ProfileType::Localhost, "p.json"))).is_err());
        assert!(seccomp(Some(&with(ProfileType::Localhost, "/a/../b.json"))).is_err());
        // The deprecated string field.
        let mut c = sc();
        c.seccomp_profile_path = "runtime/default".into();
        assert_eq!(
            seccomp(Some(&c)).unwrap(),
            rt::SeccompProfile::RuntimeDefault
        );
        c.seccomp_profile_path = "localhost//etc/p.json".into();
        assert_eq!(
            seccomp(Some(&c)).unwrap(),
            rt::SeccompProfile::Localhost("/etc/p.json".into())
        );
        c.seccomp_profile_path = "bogus".into();
        assert!(seccomp(Some(&c)).is_err());
    }

    #[test]
    fn resources_map_and_zero_means_unset() {
        let (r, oom) = resources(&LinuxContainerResources::default()).unwrap();
        assert_eq!(r, rt::Resources::default());
        assert_eq!(oom, 0);
        let cri = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 999,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: HashMap::new(),
            memory_swap_limit_in_bytes: 64 << 20,
        };
        let (r, oom) = resources(&cri).unwrap();
        assert_eq!(oom, 999);
        assert_eq!(r.cpu_shares, Some(512));
        assert_eq!(r.cpu_quota, Some(50_000));
        assert_eq!(r.cpu_period, Some(100_000));
        assert_eq!(r.cpuset_cpus.as_deref(), Some("0-1"));
        assert_eq!(r.cpuset_mems.as_deref(), Some("0"));
        assert_eq!(r.memory_limit, Some(64 << 20));
        assert_eq!(r.memory_swap_limit, Some(64 << 20));
        assert_eq!(r.hugepage_limits.get("2MB"), Some(&(4 << 20)));
        assert_eq!(resources_to_cri(&r, Some(oom)), cri);

        for bad in [
            LinuxContainerResources {
                memory_limit_in_bytes: -1,
                ..Default::default()
            },
            LinuxContainerResources {
                cpu_shares: -2,
                ..Default::default()
            },
            LinuxContainerResources {
                oom_score_adj: 1001,
                ..Default::default()
            },
            LinuxContainerResources {
                cpuset_cpus: "0;rm".into(),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(resources(&bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sandbox_files_are_mounted_unless_the_kubelet_mounts_them() {
        let sb = sandbox();
        let cri = vec![
            Mount {
                container_path: "/etc/hosts".into(),
                host_path: "/var/lib/kubelet/pods/u/etc-hosts".into(),
                ..Default::default()
            },
            Mount {
                container_path: "/data".into(),
                host_path: "/srv/data".into(),
                readonly: true,
                selinux_relabel: true,
                propagation: MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            },
        ];
        let m = mounts(&cri, &sb, true, &VolumeLayers::new()).unwrap();
        let dests: Vec<&str> = m.iter().map(|m| m.container_path.as_str()).collect();
        assert_eq!(
            dests,
            [
                "/etc/hosts",
                "/data",
                "/etc/hostname",
                "/etc/resolv.conf",
                "/dev/shm"
            ]
        );
        assert_eq!(
            m[0].host_path,
            PathBuf::from("/var/lib/kubelet/pods/u/etc-hosts")
        );
        assert!(m[1].readonly && !m[1].recursive_readonly);
        assert_eq!(m[1].propagation, rt::Propagation::HostToContainer);
        let rro = Mount {
            container_path: "/d".into(),
            host_path: "/srv".into(),
            readonly: true,
            recursive_read_only: true,
            ..Default::default()
        };
        if carapace_runtime::mount_setattr_supported() {
            let m = mounts(std::slice::from_ref(&rro), &sb, false, &VolumeLayers::new()).unwrap();
            assert!(m[0].readonly && m[0].recursive_readonly);
        }
        // The pod's files follow readonly_rootfs; /dev/shm stays writable.
        assert!(m[2].readonly && m[3].readonly && !m[4].readonly);

        for bad in [
            Mount {
                container_path: "data".into(),
                host_path: "/srv".into(),
                ..Default::default()
            },
            Mount {
                container_path: "/data".into(),
                host_path: "srv".into(),
                ..Default::default()
            },
            Mount {
                container_path: "/data/../etc".into(),
                host_path: "/srv".into(),
                ..Default::default()
            },
            Mount {
                container_path: "/d".into(),
                host_path: "/srv".into(),
                propagation: 9,
                ..Default::default()
            },
            Mount {
                container_path: "/d".into(),
                host_path: "/srv".into(),
                recursive_read_only: true,
                ..Default::default()
            },
            Mount {
                container_path: "/d".into(),
                host_path: "/srv".into(),
                readonly: true,
                recursive_read_only: true,
                propagation: MountPropagation::PropagationHostToContainer as i32,
                ..Default::default()
            },
            Mount {
                container_path: "/d".into(),
                host_path: "/srv".into(),
                readonly: true,
                recursive_read_only: true,
                propagation: MountPropagation::PropagationBidirectional as i32,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(
                    mounts(std::slice::from_ref(&bad), &sb, false, &VolumeLayers::new()),
                    Err(Error::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn image_volumes_map_read_only_with_their_layers_and_sub_path() {
        let sb = sandbox();
        let volume = |path: &str, sub: &str| Mount {
            container_path: path.into(),
            image: Some(ImageSpec {
                image: "sha256:aa".into(),
                ..Default::default()
            }),
            image_sub_path: sub.into(),
            propagation: MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        };
        let layers: VolumeLayers = [(
            "/models".to_owned(),
            vec![PathBuf::from("/s/2/fs"), PathBuf::from("/s/1/fs")],
        )]
        .into();
        let m = mounts(&[volume("/models", "v2/weights")], &sb, false, &layers).unwrap();
        assert_eq!(m[0].container_path, "/models");
        assert!(m[0].readonly && m[0].host_path.as_os_str().is_empty());
        assert_eq!(m[0].propagation, rt::Propagation::Private);
        assert_eq!(
            m[0].image,
            Some(rt::ImageVolume {
                layers: layers["/models"].clone(),
                sub_path: "v2/weights".into(),
            })
        );
        // An image the caller could not find is NotFound, naming the volume.
        let e = mounts(&[volume("/other", "")], &sb, false, &layers).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("/other")),
            "{e}"
        );
        // A host path and an image exclude each other; a sub path needs an image.
        let mut both = volume("/models", "");
        both.host_path = "/srv".into();
        let sub_only = Mount {
            container_path: "/d".into(),
            host_path: "/srv".into(),
            image_sub_path: "x".into(),
            ..Default::default()
        };
        for bad in [both, sub_only] {
            assert!(
                matches!(
                    mounts(std::slice::from_ref(&bad), &sb, false, &layers),
                    Err(Error::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn full_mapping_of_a_typical_container() {
        let t = tempfile::tempdir().unwrap();
        let l = layer(
            t.path(),
            "l",
            &[("etc/passwd", PASSWD), ("etc/group", GROUP)],
        );
        let mut img = image(&["/bin/sh"], &["-c", "default"]);
        img.env = s(&["PATH=/usr/bin:/bin", "FOO=image"]);
        img.stop_signal = "SIGQUIT".into();
        img.lower_dirs = vec![l.clone()];
        let sb = sandbox();
        let c = cri_config();
        let rc = runtime_config(&MapInput {
            id: "abcd",
            config: &c,
            image: &img,
            sandbox: &sb,
            target_pid_ns: &no_target,
            volume_layers: &VolumeLayers::new(),
        })
        .unwrap();
        assert_eq!(rc.id, "abcd");
        assert_eq!(rc.process.args, s(&["/bin/sh", "-c", "sleep 1"]));
        assert_eq!(
            rc.process.env,
            os(&["PATH=/usr/bin:/bin", "FOO=bar", "HOME=/home/app"])
        );
        assert_eq!(rc.process.cwd, "/");
        assert_eq!((rc.process.uid, rc.process.gid), (1000, 1000));
        assert_eq!(rc.process.additional_gids, vec![1000, 50, 29]);
        assert_eq!(rc.process.oom_score_adj, Some(100));
        assert!(rc.process.no_new_privileges);
        assert!(rc.rootfs.readonly);
        assert_eq!(rc.rootfs.lower_dirs, vec![l]);
        assert_eq!(rc.namespaces.pid, rt::NsMode::New);
        assert_eq!(rc.security.seccomp, rt::SeccompProfile::RuntimeDefault);
        assert_eq!(rc.security.add_capabilities, s(&["NET_ADMIN"]));
        assert_eq!(rc.security.drop_capabilities, s(&["MKNOD"]));
        assert_eq!(rc.security.masked_paths, Some(s(&["/proc/kcore"])));
        // Empty in the CRI: the runtime's defaults.
        assert_eq!(rc.security.readonly_paths, None);
        assert_eq!(rc.cgroup.parent, sb.cgroup_parent);
        assert_eq!(rc.cgroup.resources.memory_limit, Some(1 << 30));
        assert_eq!(
            rc.log_path,
            Some(PathBuf::from("/var/log/pods/default_web_uid-1/app/2.log"))
        );
        assert_eq!(rc.stop_signal, Some(3));
        // The config's stop_signal wins over the image's StopSignal.
        let mut usr1 = cri_config();
        usr1.stop_signal = Signal::Sigusr1 as i32;
        let over = runtime_config(&MapInput {
            id: "abcd",
            config: &usr1,
            image: &img,
            sandbox: &sb,
            target_pid_ns: &no_target,
            volume_layers: &VolumeLayers::new(),
        })
        .unwrap();
        assert_eq!(over.stop_signal, Some(10));
        assert_eq!(rc.hostname.as_deref(), Some("web"));
        assert_eq!(rc.annotations.get("a").map(String::as_str), Some("b"));
        assert_eq!(
            rc.annotations
                .get("io.kubernetes.cri.sandbox-id")
                .map(String::as_str),
            Some("sb1234")
        );
        assert_eq!(rc.mounts.len(), 4);

        // Privileged: no seccomp whatever was asked.
        let mut p = cri_config();
        if let Some(sc) = p.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            sc.privileged = true;
        }
        let rc = runtime_config(&MapInput {
            id: "abcd",
            config: &p,
            image: &img,
            sandbox: &sb,
            target_pid_ns: &no_target,
            volume_layers: &VolumeLayers::new(),
        })
        .unwrap();
        assert!(rc.security.privileged);
        assert_eq!(rc.security.seccomp, rt::SeccompProfile::Unconfined);
    }

    #[test]
    fn a_user_the_pods_user_namespace_does_not_map_is_refused_at_create() {
        let t = tempfile::tempdir().unwrap();
        let mut img = image(&["/bin/sh"], &[]);
        img.lower_dirs = vec![layer(
            t.path(),
            "l",
            &[("etc/passwd", PASSWD), ("etc/group", GROUP)],
        )];
        let c = cri_config();
        let mut sb = sandbox();
        let with_length = |sb: &mut SandboxInfo, length| {
            let m = rt::IdMap {
                container_id: 0,
                host_id: 65536,
                length,
            };
            sb.user = Some(rt::UserNs {
                path: "/pod/ns/user".into(),
                uids: vec![m],
                gids: vec![m],
            });
        };
        let map = |sb: &SandboxInfo| {
            runtime_config(&MapInput {
                id: "abcd",
                config: &c,
                image: &img,
                sandbox: sb,
                target_pid_ns: &no_target,
                volume_layers: &VolumeLayers::new(),
            })
        };
        // The config runs as `app`, uid 1000 (and its groups).
        with_length(&mut sb, 65536);
        let rc = map(&sb).unwrap();
        assert_eq!(rc.namespaces.user, sb.user);
        with_length(&mut sb, 1000);
        let e = map(&sb).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidArgument(m) if m.contains("uid 1000")),
            "{e:?}"
        );
    }

    #[test]
    fn mapping_refuses_what_it_cannot_honour() {
        let t = tempfile::tempdir().unwrap();
        let mut img = image(&["/bin/sh"], &[]);
        img.lower_dirs = vec![layer(t.path(), "l", &[("etc/passwd", PASSWD)])];
        let sb = sandbox();
        let map = |c: &ContainerConfig| {
            runtime_config(&MapInput {
                id: "abcd",
                config: c,
                image: &img,
                sandbox: &sb,
                target_pid_ns: &no_target,
                volume_layers: &VolumeLayers::new(),
            })
        };
        let mut c = cri_config();
        c.log_path = "../../escape.log".into();
        assert!(matches!(map(&c), Err(Error::InvalidArgument(_))));
        let mut c = cri_config();
        c.metadata = None;
        assert!(matches!(map(&c), Err(Error::InvalidArgument(_))));
        let mut c = cri_config();
        c.devices.push(Device::default());
        assert!(matches!(map(&c), Err(Error::InvalidArgument(_))));
        let mut c = cri_config();
        if let Some(sc) = c.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            sc.apparmor = Some(SecurityProfile {
                profile_type: security_profile::ProfileType::Localhost as i32,
                localhost_ref: "my-profile".into(),
            });
        }
        assert!(matches!(map(&c), Err(Error::InvalidArgument(_))));
        // The runtime's own validation maps to InvalidArgument too (a bad id).
        let c = cri_config();
        let e = runtime_config(&MapInput {
            id: "../x",
            config: &c,
            image: &img,
            sandbox: &sb,
            target_pid_ns: &no_target,
            volume_layers: &VolumeLayers::new(),
        })
        .unwrap_err();
        assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn image_info_comes_from_the_image_config() {
        let img = carapace_imageservice::Image {
            id: carapace_imageservice::Digest::of(b"config"),
            repo_tags: vec!["docker.io/library/nginx:1".into()],
            repo_digests: vec!["docker.io/library/nginx@sha256:aa".into()],
            size: 1,
            uid: None,
            username: "www".into(),
            pinned: false,
            manifests: vec![],
            layers: vec![],
            chain_ids: vec![],
        };
        let config = serde_json::json!({"config": {
            "Entrypoint": ["/docker-entrypoint.sh"], "Cmd": ["nginx", "-g", "daemon off;"],
            "Env": ["PATH=/bin"], "WorkingDir": "/srv", "User": "www:www", "StopSignal": "SIGQUIT"
        }});
        let info = ImageInfo::from_image(&img, &config, vec!["/l".into()], "nginx:1");
        assert_eq!(info.id, img.id.to_string());
        assert_eq!(info.name, "docker.io/library/nginx:1");
        assert_eq!(info.image_ref, "docker.io/library/nginx@sha256:aa");
        assert_eq!(info.entrypoint, s(&["/docker-entrypoint.sh"]));
        assert_eq!(info.cmd, s(&["nginx", "-g", "daemon off;"]));
        assert_eq!(info.env, s(&["PATH=/bin"]));
        assert_eq!(info.working_dir, "/srv");
        assert_eq!(info.user, "www:www");
        assert_eq!(info.stop_signal, "SIGQUIT");
        // A config without the `config` object (e.g. `FROM scratch` minimal).
        let bare = ImageInfo::from_image(&img, &serde_json::json!({}), vec![], "nginx:1");
        assert!(bare.entrypoint.is_empty() && bare.cmd.is_empty() && bare.user.is_empty());
    }

    // --- names, filters, idempotence ----------------------------------------------------------------

    #[test]
    fn reserved_name_is_containerd_s() {
        let md = ContainerMetadata {
            name: "app".into(),
            attempt: 3,
        };
        assert_eq!(container_name(&md, &sandbox()), "app_web_default_uid-1_3");
    }
}
