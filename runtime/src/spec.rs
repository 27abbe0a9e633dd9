//! The OCI runtime spec of a container, built from [`ContainerConfig`] as containerd builds it:
//! process, root, mounts (the standard ones, then the sandbox's and the CRI's binds), namespaces,
//! cgroup path and resources, capabilities, seccomp, masked and read-only paths. Persisted as
//! `config.json` in the bundle. This module computes and writes; it never mounts or execs.

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
    // Deny every device but the defaults, as containerd does for non-privileged containers; the
    // executor creates only the default device nodes anyway.
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
    Value::Object(out)
}

/// Resources as the OCI type, for a live update of a running container's cgroup.
pub fn linux_resources(r: &Resources) -> Result<oci_spec::runtime::LinuxResources> {
    serde_json::from_value(resources_json(r)).map_err(|e| Error::internal("resources", e))
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
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if let Some(h) = &config.hostname
        && !env.iter().any(|e| e.starts_with("HOSTNAME="))
    {
        env.push(format!("HOSTNAME={h}"));
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
        "env": env,
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
        mounts.push(json!({
            "destination": m.container_path,
            "type": "bind",
            "source": m.host_path,
            "options": ["rbind", prop, if m.readonly { "ro" } else { "rw" }],
        }));
    }
    if !config.mounts.iter().any(|m| m.container_path == "/dev/shm") {
        mounts.push(
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                           "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        );
    }

    let ns = &config.namespaces;
    let mut namespaces: Vec<Value> = vec![json!({"type": "mount"})];
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

    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroup_path(config),
        "resources": resources_json(&config.cgroup.resources),
        "maskedPaths": masked,
        "readonlyPaths": readonly,
        "rootfsPropagation": rootfs_propagation,
    });
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
        "annotations": config.annotations,
    });
    if let Some(h) = &config.hostname {
        spec["hostname"] = json!(h);
    }
    serde_json::from_value(spec).map_err(|e| Error::InvalidArgument(format!("spec: {e}")))
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
    fn binds_are_checked_sorted_and_carry_propagation() {
        let mut c = config();
        let dir = tempfile::tempdir().unwrap();
        c.mounts = vec![
            Mount {
                host_path: dir.path().into(),
                container_path: "/a/b".into(),
                readonly: true,
                propagation: Propagation::HostToContainer,
            },
            Mount {
                host_path: dir.path().into(),
                container_path: "/a".into(),
                readonly: false,
                propagation: Propagation::Private,
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
    fn saved_spec_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let spec = build(&config(), Path::new("/r")).unwrap();
        save(dir.path(), &spec).unwrap();
        assert_eq!(load(dir.path()).unwrap(), spec);
    }
}
