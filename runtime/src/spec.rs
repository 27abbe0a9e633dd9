//! The OCI runtime spec of a container, built from [`ContainerConfig`] as containerd builds it:
//! process, root, mounts (the standard ones, then the sandbox's and the CRI's binds), namespaces,
//! cgroup path and resources, capabilities, seccomp, masked and read-only paths. Persisted as
//! `config.json` in the bundle. This module computes and writes; it never mounts or execs.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::{Value, json};

use crate::capabilities;
use crate::config::{ContainerConfig, NsMode, Propagation, Resources, SeccompProfile};
use crate::error::{Error, Result};
use crate::seccomp;

/// containerd's default masked paths (unless privileged).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's default read-only paths (unless privileged).
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The character devices every unprivileged container may use, as runc and containerd allow them:
/// `(major, minor)`, `None` for any minor. The executor makes the first six in the container's
/// `/dev`; console and the pts devices come with the terminal and devpts. Every other device, and
/// mknod of any other device, is denied by the device cgroup unless the request names it.
pub const DEFAULT_DEVICES: &[(i64, Option<i64>)] = &[
    (1, Some(3)), // null
    (1, Some(5)), // zero
    (1, Some(7)), // full
    (1, Some(8)), // random
    (1, Some(9)), // urandom
    (5, Some(0)), // tty
    (5, Some(1)), // console
    (5, Some(2)), // ptmx
    (136, None),  // pts/*
];

/// The `PATH` a container gets when neither the image nor the config sets one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The cgroup path of a container: `<parent>/<id>` relative to each hierarchy's root.
pub fn cgroup_path(config: &ContainerConfig) -> String {
    let parent = config.cgroup.parent.trim_matches('/');
    if parent.is_empty() {
        config.id.clone()
    } else {
        format!("{parent}/{}", config.id)
    }
}

fn standard_mounts(privileged: bool) -> Vec<Value> {
    // /sys is read-only unless privileged, as containerd does.
    let sys_ro = if privileged { "rw" } else { "ro" };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", sys_ro]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", sys_ro]}),
    ]
}

fn resources_json(r: &Resources) -> Value {
    let mut cpu = serde_json::Map::new();
    if let Some(v) = r.cpu_shares.filter(|v| *v > 0) {
        cpu.insert("shares".into(), json!(v));
    }
    if let Some(v) = r.cpu_quota.filter(|v| *v != 0) {
        cpu.insert("quota".into(), json!(v));
    }
    if let Some(v) = r.cpu_period.filter(|v| *v > 0) {
        cpu.insert("period".into(), json!(v));
    }
    if let Some(v) = r.cpuset_cpus.as_ref().filter(|v| !v.is_empty()) {
        cpu.insert("cpus".into(), json!(v));
    }
    if let Some(v) = r.cpuset_mems.as_ref().filter(|v| !v.is_empty()) {
        cpu.insert("mems".into(), json!(v));
    }
    let mut memory = serde_json::Map::new();
    if let Some(v) = r.memory_limit.filter(|v| *v > 0) {
        memory.insert("limit".into(), json!(v));
    }
    if let Some(v) = r.memory_swap_limit.filter(|v| *v != 0) {
        memory.insert("swap".into(), json!(v));
    }
    let mut out = serde_json::Map::new();
    if !cpu.is_empty() {
        out.insert("cpu".into(), Value::Object(cpu));
    }
    if !memory.is_empty() {
        out.insert("memory".into(), Value::Object(memory));
    }
    if let Some(v) = r.pids_limit.filter(|v| *v > 0) {
        out.insert("pids".into(), json!({"limit": v}));
    }
    if !r.hugepage_limits.is_empty() {
        let h: Vec<Value> = r
            .hugepage_limits
            .iter()
            .map(|(size, limit)| json!({"pageSize": size, "limit": limit}))
            .collect();
        out.insert("hugepageLimits".into(), Value::Array(h));
    }
    if !r.unified.is_empty() {
        out.insert("unified".into(), json!(r.unified));
    }
    Value::Object(out)
}

/// Resources as the OCI type, for a live update of a running container's cgroup.
pub fn linux_resources(r: &Resources) -> Result<oci_spec::runtime::LinuxResources> {
    serde_json::from_value(resources_json(r)).map_err(|e| Error::internal("resources", e))
}

/// The device cgroup's rules: a privileged container may use every device; any other denies all,
/// then allows the defaults and the devices it was given (`devices`, as in the spec's
/// `linux.devices`). Later rules win, as in the kernel's v1 lists and our v2 program.
fn device_rules(privileged: bool, devices: &[Value]) -> Vec<Value> {
    if privileged {
        return vec![json!({"allow": true, "type": "a", "access": "rwm"})];
    }
    let mut rules = vec![json!({"allow": false, "type": "a", "access": "rwm"})];
    for (major, minor) in DEFAULT_DEVICES {
        let mut r = json!({"allow": true, "type": "c", "major": major, "access": "rwm"});
        if let Some(minor) = minor {
            r["minor"] = json!(minor);
        }
        rules.push(r);
    }
    for d in devices {
        rules.push(json!({
            "allow": true,
            "type": d["type"],
            "major": d["major"],
            "minor": d["minor"],
            "access": d["access"],
        }));
    }
    rules
}

/// The request's host devices as the spec's `linux.devices`, each with the access it was given
/// (`access`, dropped before the spec is parsed). The node is checked to be a device here, at
/// create, so a wrong path fails the create and not the container's start.
fn devices_json(config: &ContainerConfig) -> Result<Vec<Value>> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::with_capacity(config.devices.len());
    for d in &config.devices {
        let meta = std::fs::metadata(&d.host_path).map_err(|e| {
            Error::InvalidArgument(format!("device {}: {e}", d.host_path.display()))
        })?;
        let ft = meta.file_type();
        let typ = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else {
            return Err(Error::InvalidArgument(format!(
                "device {} is not a character or block device",
                d.host_path.display()
            )));
        };
        let rdev = meta.rdev();
        // The executor makes the node with mknod inside the container's cgroup: the rule must let
        // it, and mknod of a device the container may already open gives it nothing more.
        let mut access = d.permissions.clone();
        if !access.contains('m') {
            access.push('m');
        }
        out.push(json!({
            "path": d.container_path,
            "type": typ,
            "major": nix::sys::stat::major(rdev),
            "minor": nix::sys::stat::minor(rdev),
            "fileMode": meta.mode() & 0o7777,
            "uid": meta.uid(),
            "gid": meta.gid(),
            "access": access,
        }));
    }
    Ok(out)
}

fn namespace_json(kind: &str, mode: &NsMode) -> Option<Value> {
    match mode {
        NsMode::New => Some(json!({"type": kind})),
        NsMode::Join(path) => Some(json!({"type": kind, "path": path})),
        NsMode::Host => None,
    }
}

/// Builds the spec of `config`, whose root filesystem will be mounted at `rootfs`.
pub fn build(config: &ContainerConfig, rootfs: &Path) -> Result<Spec> {
    config.validate()?;
    let sec = &config.security;
    let caps = capabilities::resolve(
        sec.privileged,
        &sec.add_capabilities,
        &sec.drop_capabilities,
    )?;
    let caps_vec: Vec<&String> = caps.iter().collect();

    let mut env = config.process.env.clone();
    let has =
        |env: &[OsString], prefix: &[u8]| env.iter().any(|e| e.as_bytes().starts_with(prefix));
    if !has(&env, b"PATH=") {
        env.insert(0, DEFAULT_PATH.into());
    }
    if let Some(h) = &config.hostname
        && !has(&env, b"HOSTNAME=")
    {
        env.push(format!("HOSTNAME={h}").into());
    }
    // OCI's env is strings: it gets the entries that are UTF-8, and when any is not, the whole
    // environment, byte for byte, goes in ENV_ANNOTATION, which the executor then uses.
    let text: Vec<&str> = env.iter().filter_map(|e| e.to_str()).collect();
    let mut annotations = config.annotations.clone();
    // Only this function sets it: a client's would replace the environment.
    annotations.remove(ENV_ANNOTATION);
    if text.len() < env.len() {
        let all =
            crate::config::env_json::to_string(&env).map_err(|e| Error::internal("env", e))?;
        annotations.insert(ENV_ANNOTATION.to_owned(), all);
    }
    let rlimits: Vec<Value> = config
        .process
        .rlimits
        .iter()
        .map(|r| json!({"type": r.kind, "soft": r.soft, "hard": r.hard}))
        .collect();
    let cwd = if config.process.cwd.is_empty() {
        "/"
    } else {
        &config.process.cwd
    };
    let mut process = json!({
        "terminal": config.process.terminal,
        "user": {
            "uid": config.process.uid,
            "gid": config.process.gid,
            "additionalGids": config.process.additional_gids,
        },
        "args": config.process.args,
        "env": text,
        "cwd": cwd,
        // containerd leaves inheritable and ambient empty (CVE-2022-24769).
        "capabilities": {
            "bounding": caps_vec,
            "effective": caps_vec,
            "permitted": caps_vec,
            "inheritable": [],
            "ambient": [],
        },
        "rlimits": rlimits,
        "noNewPrivileges": config.process.no_new_privileges,
    });
    if let Some(adj) = config.process.oom_score_adj {
        process["oomScoreAdj"] = json!(adj);
    }

    let mut mounts = standard_mounts(sec.privileged);
    let mut binds: Vec<&crate::config::Mount> = config.mounts.iter().collect();
    // Parents before children, so a bind at /a/b is not hidden by a later one at /a.
    binds.sort_by_key(|m| {
        m.container_path
            .split('/')
            .filter(|c| !c.is_empty())
            .count()
    });
    // As runc's default: host mounts and unmounts still reach the container, nothing goes back.
    let mut rootfs_propagation = "rslave";
    for m in binds {
        if let Some(v) = &m.image {
            mounts.retain(|x| x["destination"] != json!(m.container_path));
            let bundle = rootfs.parent().unwrap_or(rootfs);
            mounts.push(crate::image_volume::oci_mount(m, v, bundle));
            continue;
        }
        if !m.host_path.exists() {
            return Err(Error::InvalidArgument(format!(
                "mount source {} does not exist",
                m.host_path.display()
            )));
        }
        let prop = match m.propagation {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => {
                rootfs_propagation = "rshared";
                "rshared"
            }
        };
        // A bind over an existing standard mount (e.g. the pod's /dev/shm) replaces it.
        mounts.retain(|x| x["destination"] != json!(m.container_path));
        let mut options = vec!["rbind", prop, if m.readonly { "ro" } else { "rw" }];
        // The OCI spec's (1.1) name for it: read-only down to every submount.
        if m.recursive_readonly {
            options.push("rro");
        }
        mounts.push(json!({
            "destination": m.container_path,
            "type": "bind",
            "source": m.host_path,
            "options": options,
        }));
    }
    if !config.mounts.iter().any(|m| m.container_path == "/dev/shm") {
        mounts.push(
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                           "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        );
    }

    let ns = &config.namespaces;
    // The user namespace first, as the OCI spec lists it for runc.
    let mut namespaces: Vec<Value> = ns
        .user
        .iter()
        .map(|u| json!({"type": "user", "path": u.path}))
        .collect();
    namespaces.push(json!({"type": "mount"}));
    namespaces.extend(namespace_json("network", &ns.network));
    namespaces.extend(namespace_json("ipc", &ns.ipc));
    namespaces.extend(namespace_json("uts", &ns.uts));
    namespaces.extend(namespace_json("pid", &ns.pid));

    let (masked, readonly): (Vec<String>, Vec<String>) = if sec.privileged {
        (vec![], vec![])
    } else {
        (
            sec.masked_paths
                .clone()
                .unwrap_or_else(|| DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect()),
            sec.readonly_paths.clone().unwrap_or_else(|| {
                DEFAULT_READONLY_PATHS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            }),
        )
    };

    let mut devices = devices_json(config)?;
    if sec.privileged {
        // Every node of the host's /dev, as containerd hands them to runc for a privileged
        // container (its device cgroup allows all); a device the request names keeps its own
        // entry.
        for d in crate::devices::host_devices(Path::new("/dev")) {
            if devices.iter().any(|x| x["path"] == json!(d.path)) {
                continue;
            }
            devices.push(json!({
                "path": d.path,
                "type": if d.block { "b" } else { "c" },
                "major": d.major,
                "minor": d.minor,
                "fileMode": d.mode,
                "uid": d.uid,
                "gid": d.gid,
            }));
        }
    }
    let mut resources = resources_json(&config.cgroup.resources);
    resources["devices"] = json!(device_rules(sec.privileged, &devices));
    let devices: Vec<Value> = devices
        .into_iter()
        .map(|mut d| {
            if let Some(o) = d.as_object_mut() {
                o.remove("access");
            }
            d
        })
        .collect();
    let id_maps = |m: &[crate::config::IdMap]| -> Vec<Value> {
        m.iter()
            .map(|m| json!({"containerID": m.container_id, "hostID": m.host_id, "size": m.length}))
            .collect()
    };
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroup_path(config),
        "resources": resources,
        "devices": devices,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
        "rootfsPropagation": rootfs_propagation,
    });
    if let Some(u) = &ns.user {
        linux["uidMappings"] = json!(id_maps(&u.uids));
        linux["gidMappings"] = json!(id_maps(&u.gids));
    }
    let seccomp = if sec.privileged {
        None
    } else {
        match &sec.seccomp {
            SeccompProfile::RuntimeDefault => Some(seccomp::runtime_default(&caps)),
            SeccompProfile::Localhost(p) => Some(seccomp::load_localhost(p)?),
            SeccompProfile::Unconfined => None,
        }
    };
    if let Some(s) = seccomp {
        // Compile once here so a bad profile fails at create, not in the container's init.
        seccomp::compile(&s)?;
        linux["seccomp"] = serde_json::to_value(&s).map_err(|e| Error::internal("seccomp", e))?;
    }

    let mut spec = json!({
        "ociVersion": "1.2.0",
        "process": process,
        "root": {"path": rootfs, "readonly": config.rootfs.readonly},
        "mounts": mounts,
        "linux": linux,
        "annotations": annotations,
    });
    if let Some(h) = &config.hostname {
        spec["hostname"] = json!(h);
    }
    serde_json::from_value(spec).map_err(|e| Error::InvalidArgument(format!("spec: {e}")))
}

/// The spec's annotation holding the process's whole environment, in
/// [`crate::config::env_json`]'s encoding, when some entry is not UTF-8 (and so is missing from
/// `process.env`). Set by [`build`] only.
pub const ENV_ANNOTATION: &str = "io.carapace.env";

/// The environment the spec's process gets, byte for byte: [`ENV_ANNOTATION`]'s when the spec
/// has it, else `process.env` (every spec saved before values became bytes).
pub fn process_env(spec: &Spec) -> Result<Vec<OsString>> {
    if let Some(all) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ENV_ANNOTATION))
    {
        // Not the error's text: it may quote the value.
        return crate::config::env_json::from_str(all).map_err(|_| {
            Error::InvalidArgument(format!("annotation {ENV_ANNOTATION} is not an environment"))
        });
    }
    Ok(spec
        .process()
        .as_ref()
        .and_then(|p| p.env().as_ref())
        .map(|env| env.iter().map(OsString::from).collect())
        .unwrap_or_default())
}

/// Writes `spec` as `<bundle>/config.json`, crash-safely.
pub fn save(bundle: &Path, spec: &Spec) -> Result<()> {
    // Compact: only programs read it, and the state directory is a tmpfs where every 4 KiB
    // started is memory held for the container's life (a pod's spec was 5.9 KB pretty, 4.0 KB
    // compact: one page instead of two).
    let bytes = serde_json::to_vec(spec).map_err(|e| Error::internal("spec", e))?;
    crate::fsutil::write_state(&bundle.join("config.json"), &bytes)
}

pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io("spec", &path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::internal(path.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mount, Process, RootFs};
    use oci_spec::runtime::{Capability, LinuxNamespaceType};

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "c1".into(),
            process: Process {
                args: vec!["sh".into(), "-c".into(), "true".into()],
                env: vec!["A=1".into()],
                uid: 1000,
                gid: 1000,
                additional_gids: vec![10],
                ..Default::default()
            },
            rootfs: RootFs {
                lower_dirs: vec!["/lower".into()],
                readonly: true,
            },
            hostname: Some("web".into()),
            ..Default::default()
        }
    }

    #[test]
    fn process_gets_user_env_path_and_default_capabilities() {
        let spec = build(&config(), Path::new("/b/rootfs")).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().additional_gids().as_ref().unwrap(), &vec![10]);
        let env = p.env().as_ref().unwrap();
        assert!(env[0].starts_with("PATH="));
        assert!(env.contains(&"HOSTNAME=web".to_string()));
        assert_eq!(p.cwd(), Path::new("/"));
        let caps = p.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
        assert!(
            caps.effective()
                .as_ref()
                .unwrap()
                .contains(&Capability::NetRaw)
        );
        assert!(caps.inheritable().as_ref().unwrap().is_empty());
        assert!(spec.root().as_ref().unwrap().readonly().unwrap());
    }

    #[test]
    fn namespaces_join_paths_and_skip_host() {
        let mut c = config();
        c.namespaces.network = NsMode::Join("/run/netns/p".into());
        c.namespaces.pid = NsMode::Host;
        let spec = build(&c, Path::new("/b/rootfs")).unwrap();
        let ns = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap();
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .unwrap();
        assert_eq!(net.path().as_deref(), Some(Path::new("/run/netns/p")));
        assert!(ns.iter().all(|n| n.typ() != LinuxNamespaceType::Pid));
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Mount));
    }

    #[test]
    fn a_pod_user_namespace_comes_first_with_its_maps() {
        let mut c = config();
        let map = crate::config::IdMap {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        };
        c.namespaces.user = Some(crate::config::UserNs {
            path: "/run/pod/ns/user".into(),
            uids: vec![map],
            gids: vec![map],
        });
        let spec = build(&c, Path::new("/b/rootfs")).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        assert_eq!(ns[0].typ(), LinuxNamespaceType::User);
        assert_eq!(ns[0].path().as_deref(), Some(Path::new("/run/pod/ns/user")));
        for maps in [linux.uid_mappings(), linux.gid_mappings()] {
            let m = &maps.as_ref().unwrap()[0];
            assert_eq!((m.container_id(), m.host_id(), m.size()), (0, 65536, 65536));
        }
        // Without one, none.
        let spec = build(&config(), Path::new("/b/rootfs")).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(
            linux
                .namespaces()
                .iter()
                .flatten()
                .all(|n| n.typ() != LinuxNamespaceType::User)
        );
        assert!(linux.uid_mappings().is_none());
    }

    #[test]
    fn binds_are_checked_sorted_and_carry_propagation() {
        let mut c = config();
        let dir = tempfile::tempdir().unwrap();
        c.mounts = vec![
            Mount {
                host_path: dir.path().into(),
                container_path: "/a/b".into(),
                readonly: true,
                propagation: Propagation::HostToContainer,
                recursive_readonly: false,
                image: None,
            },
            Mount {
                host_path: dir.path().into(),
                container_path: "/a".into(),
                readonly: true,
                propagation: Propagation::Private,
                recursive_readonly: true,
                image: None,
            },
        ];
        let spec = build(&c, Path::new("/b/rootfs")).unwrap();
        let binds: Vec<_> = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|m| m.typ().as_deref() == Some("bind"))
            .collect();
        assert_eq!(binds[0].destination(), Path::new("/a"));
        let opts = binds[1].options().as_ref().unwrap();
        assert!(opts.contains(&"ro".to_string()) && opts.contains(&"rslave".to_string()));
        assert!(!opts.contains(&"rro".to_string()));
        let opts = binds[0].options().as_ref().unwrap();
        assert!(opts.contains(&"rro".to_string()) && opts.contains(&"rprivate".to_string()));
        assert_eq!(
            spec.linux()
                .as_ref()
                .unwrap()
                .rootfs_propagation()
                .as_deref(),
            Some("rslave")
        );
        c.mounts[0].host_path = dir.path().join("missing");
        assert!(matches!(
            build(&c, Path::new("/r")),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn the_root_is_rslave_and_rshared_with_a_bidirectional_volume() {
        let root_prop = |c: &ContainerConfig| {
            build(c, Path::new("/r"))
                .unwrap()
                .linux()
                .as_ref()
                .unwrap()
                .rootfs_propagation()
                .clone()
        };
        let mut c = config();
        assert_eq!(root_prop(&c).as_deref(), Some("rslave"));
        let dir = tempfile::tempdir().unwrap();
        c.mounts = vec![Mount {
            host_path: dir.path().into(),
            container_path: "/vol".into(),
            readonly: false,
            propagation: Propagation::Bidirectional,
            recursive_readonly: false,
            image: None,
        }];
        assert_eq!(root_prop(&c).as_deref(), Some("rshared"));
        let spec = build(&c, Path::new("/r")).unwrap();
        let vol = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/vol"))
            .unwrap();
        assert!(vol.options().as_ref().unwrap().contains(&"rshared".into()));
    }

    #[test]
    fn privileged_has_no_masks_no_seccomp_and_all_caps() {
        let mut c = config();
        c.security.privileged = true;
        let spec = build(&c, Path::new("/r")).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().as_ref().unwrap().is_empty());
        assert!(linux.seccomp().is_none());
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert!(
            caps.bounding()
                .as_ref()
                .unwrap()
                .contains(&Capability::SysAdmin)
        );
    }

    #[test]
    fn default_masks_and_seccomp_for_unprivileged() {
        let spec = build(&config(), Path::new("/r")).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(
            linux
                .masked_paths()
                .as_ref()
                .unwrap()
                .contains(&"/proc/kcore".to_string())
        );
        assert!(
            linux
                .readonly_paths()
                .as_ref()
                .unwrap()
                .contains(&"/proc/sys".to_string())
        );
        assert!(linux.seccomp().is_some());
    }

    #[test]
    fn resources_reach_the_spec_and_cgroup_path_is_under_parent() {
        let mut c = config();
        c.cgroup.parent = "/kubepods/pod1/".into();
        c.cgroup.resources.memory_limit = Some(64 << 20);
        c.cgroup.resources.cpu_shares = Some(512);
        c.cgroup.resources.pids_limit = Some(100);
        c.cgroup.resources.hugepage_limits.insert("2MB".into(), 0);
        let spec = build(&c, Path::new("/r")).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("kubepods/pod1/c1"))
        );
        let r = linux.resources().as_ref().unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 100);
        assert_eq!(r.hugepage_limits().as_ref().unwrap()[0].page_size(), "2MB");
    }

    #[test]
    fn rlimits_and_oom_score_reach_the_process() {
        let mut c = config();
        c.process.rlimits = vec![crate::config::Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            soft: 1024,
            hard: 4096,
        }];
        c.process.oom_score_adj = Some(-998);
        let spec = build(&c, Path::new("/r")).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.rlimits().as_ref().unwrap()[0].hard(), 4096);
        assert_eq!(p.oom_score_adj(), Some(-998));
        c.process.rlimits[0].kind = "RLIMIT_WINGS".into();
        assert!(build(&c, Path::new("/r")).is_err());
    }

    #[test]
    fn the_device_cgroup_denies_all_but_the_defaults_and_what_was_asked() {
        let rules = |c: &ContainerConfig| -> Vec<String> {
            let spec = build(c, Path::new("/r")).unwrap();
            let linux = spec.linux().as_ref().unwrap();
            let r = linux.resources().as_ref().unwrap();
            r.devices()
                .as_ref()
                .unwrap()
                .iter()
                .map(|d| format!("{} {d}", if d.allow() { "allow" } else { "deny" }))
                .collect()
        };
        let mut c = config();
        let default = rules(&c);
        assert_eq!(default[0], "deny a *:* rwm");
        assert!(default.contains(&"allow c 1:3 rwm".to_string()));
        assert!(default.contains(&"allow c 136:* rwm".to_string()));
        // No mknod of any block device, nor any character device but the defaults.
        assert!(
            !default
                .iter()
                .any(|r| r.contains(" b ") || r.contains("c *:*"))
        );
        c.devices.push(crate::config::Device {
            host_path: "/dev/null".into(),
            container_path: "/dev/mynull".into(),
            permissions: "r".into(),
        });
        let asked = rules(&c);
        assert_eq!(asked.last().unwrap(), "allow c 1:3 rm");
        let spec = build(&c, Path::new("/r")).unwrap();
        let devices = spec.linux().as_ref().unwrap().devices().clone().unwrap();
        assert_eq!(devices[0].path(), Path::new("/dev/mynull"));
        assert_eq!((devices[0].major(), devices[0].minor()), (1, 3));
        c.devices[0].host_path = "/".into();
        assert!(matches!(
            build(&c, Path::new("/r")),
            Err(Error::InvalidArgument(_))
        ));
        c.devices.clear();
        c.security.privileged = true;
        assert_eq!(rules(&c), vec!["allow a *:* rwm".to_string()]);
    }

    #[test]
    fn env_that_is_not_utf8_reaches_the_process_through_the_saved_spec() {
        use std::os::unix::ffi::OsStringExt;
        let mut c = config();
        c.process.env = vec![
            "A=1".into(),
            OsString::from_vec(b"X=\xff\xfe".to_vec()),
            "B=2".into(),
        ];
        let spec = build(&c, Path::new("/r")).unwrap();
        let want: Vec<OsString> = vec![
            DEFAULT_PATH.into(),
            "A=1".into(),
            OsString::from_vec(b"X=\xff\xfe".to_vec()),
            "B=2".into(),
            "HOSTNAME=web".into(),
        ];
        assert_eq!(process_env(&spec).unwrap(), want);
        // OCI readers see the UTF-8 entries.
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, vec![DEFAULT_PATH, "A=1", "B=2", "HOSTNAME=web"]);
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &spec).unwrap();
        assert_eq!(process_env(&load(dir.path()).unwrap()).unwrap(), want);
    }

    #[test]
    fn utf8_env_has_no_annotation_and_a_clients_is_dropped() {
        let mut c = config();
        c.annotations
            .insert(ENV_ANNOTATION.to_owned(), r#"["EVIL=1"]"#.to_owned());
        let spec = build(&c, Path::new("/r")).unwrap();
        assert!(
            !spec
                .annotations()
                .clone()
                .unwrap()
                .contains_key(ENV_ANNOTATION)
        );
        assert_eq!(
            process_env(&spec).unwrap(),
            vec![
                OsString::from(DEFAULT_PATH),
                "A=1".into(),
                "HOSTNAME=web".into()
            ]
        );
    }

    #[test]
    fn a_spec_saved_before_env_became_bytes_gives_its_env() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.2.0","process":{"cwd":"/","user":{"uid":0,"gid":0},
               "args":["sh"],"env":["PATH=/bin","A=\u00e9"]},"root":{"path":"/r"}}"#,
        )
        .unwrap();
        let spec = load(dir.path()).unwrap();
        assert_eq!(
            process_env(&spec).unwrap(),
            vec![OsString::from("PATH=/bin"), OsString::from("A=\u{e9}")]
        );
    }

    #[test]
    fn saved_spec_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let spec = build(&config(), Path::new("/r")).unwrap();
        save(dir.path(), &spec).unwrap();
        assert_eq!(load(dir.path()).unwrap(), spec);
    }
}
