//! The pod cgroup: the kubelet's `cgroup_parent` turned into a path for the configured driver, the
//! directories created where missing (in every v1 hierarchy, or once on v2), and the pod's limits.
//! Only directories this module created are removed again; the kubelet owns the ones it made.
//! Without systemd running, a `systemd`-driver slice is laid out the way systemd would lay it out.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, PodResources};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// How the cgroup filesystem is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupLayout {
    /// One hierarchy per controller under the root (`<root>/<controller>/...`).
    V1 {
        root: PathBuf,
        hierarchies: Vec<String>,
    },
    /// The unified hierarchy at the root.
    V2 { root: PathBuf },
}

/// v1 hierarchies a pod cgroup is created in, when mounted.
const V1_HIERARCHIES: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "systemd",
];

impl CgroupLayout {
    /// Looks at `root` (normally `/sys/fs/cgroup`): v2 if it holds `cgroup.controllers`, else the
    /// v1 hierarchies mounted there. A hierarchy's directory is named by its controllers, joined
    /// by a comma when they share one (`cpu,cpuacct` and `net_cls,net_prio` on a systemd v1
    /// node); the symlinks beside it (`cpu` -> `cpu,cpuacct`) are aliases of the same hierarchy
    /// and not listed, or the pod cgroup would be made and recorded under two names.
    pub fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() {
            return Self::V2 { root: root.into() };
        }
        let mut hierarchies: Vec<String> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            // The entry's own type: a symlink is not a directory here.
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|h| h.split(',').all(|c| V1_HIERARCHIES.contains(&c)))
            .collect();
        hierarchies.sort();
        Self::V1 {
            root: root.into(),
            hierarchies,
        }
    }

    /// The directories a relative cgroup path has: one per v1 hierarchy, or one on v2.
    pub(crate) fn dirs(&self, rel: &Path) -> Vec<PathBuf> {
        match self {
            Self::V1 { root, hierarchies } => {
                hierarchies.iter().map(|h| root.join(h).join(rel)).collect()
            }
            Self::V2 { root } => vec![root.join(rel)],
        }
    }
}

fn invalid(parent: &str, reason: &str) -> Error {
    Error::InvalidCgroupParent {
        parent: parent.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The relative cgroup path of a `cgroup_parent`: `/kubepods/burstable/pod<uid>` as is for
/// `cgroupfs`; `kubepods-burstable-pod<uid>.slice` expanded to
/// `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice` for `systemd`.
pub fn expand(driver: CgroupDriver, parent: &str) -> Result<PathBuf, Error> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
    };
    match driver {
        CgroupDriver::Cgroupfs => {
            let p = Path::new(parent);
            // `Path::components` drops `.`; refuse it (and `..`) on the string itself.
            if parent.split('/').any(|c| c == "." || c == "..") {
                return Err(invalid(parent, "`.` and `..` are not allowed"));
            }
            if !p.is_absolute() {
                return Err(invalid(
                    parent,
                    "must be an absolute path for the cgroupfs driver",
                ));
            }
            let mut rel = PathBuf::new();
            for c in p.components() {
                match c {
                    Component::RootDir => {}
                    Component::Normal(n) if name_ok(&n.to_string_lossy()) => rel.push(n),
                    _ => return Err(invalid(parent, "invalid path component")),
                }
            }
            if rel.as_os_str().is_empty() {
                return Err(invalid(parent, "must not be the root cgroup"));
            }
            Ok(rel)
        }
        CgroupDriver::Systemd => {
            let unit = parent.strip_prefix('/').unwrap_or(parent);
            let stem = unit.strip_suffix(".slice").ok_or_else(|| {
                invalid(
                    parent,
                    "must be a systemd slice name for the systemd driver",
                )
            })?;
            if unit.contains('/') || stem.is_empty() || stem == "-" || !name_ok(stem) {
                return Err(invalid(parent, "invalid slice name"));
            }
            let parts: Vec<&str> = stem.split('-').collect();
            if parts.iter().any(|p| p.is_empty()) {
                return Err(invalid(parent, "a slice name has no empty `-` component"));
            }
            Ok((1..=parts.len())
                .map(|n| format!("{}.slice", parts[..n].join("-")))
                .collect())
        }
    }
}

/// A pod cgroup as created: its relative path and the directories that did not exist before
/// (deepest last), which are the ones removed again.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodCgroup {
    pub path: PathBuf,
    pub created: Vec<PathBuf>,
}

/// The directories of the pod cgroup `rel` that do not exist yet, parents first: what
/// [`create`] is about to make, to record before it does (a crash between a mkdir and the record
/// would leave a cgroup nothing knows of).
pub fn missing(layout: &CgroupLayout, rel: &Path) -> Vec<PathBuf> {
    layout
        .dirs(rel)
        .iter()
        .flat_map(|dir| missing_from(dir))
        .collect()
}

/// `dir` and those of its parents that do not exist, parents first.
fn missing_from(dir: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d.to_path_buf());
        d = match d.parent() {
            Some(p) => p,
            None => break,
        };
    }
    missing.reverse();
    missing
}

/// Creates the pod cgroup where missing. Each directory made is pushed onto `created` as soon as
/// it exists, so a failure half-way leaves an exact record for the undo.
pub fn create(layout: &CgroupLayout, rel: &Path, created: &mut Vec<PathBuf>) -> Result<(), Error> {
    for dir in layout.dirs(rel) {
        // A parent found in place can be gone a moment later (the last pod in it removed, by
        // another runtime or test daemon): then the walk starts again.
        let mut attempts = 3;
        'walk: loop {
            attempts -= 1;
            for m in missing_from(&dir) {
                match std::fs::create_dir(&m) {
                    Ok(()) => {
                        created.push(m);
                        carapace_crashpoint::hit("sandbox: pod cgroup dir made");
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts > 0 => {
                        continue 'walk;
                    }
                    Err(source) => return Err(Error::Io { path: m, source }),
                }
            }
            break;
        }
    }
    Ok(())
}

/// The directory of the pod cgroup `rel` that holds `controller`'s files, if it can be limited
/// by it: on v1 the hierarchy `controller` is mounted in (alone or with others), on v2 the one
/// directory when the controller is in its `cgroup.controllers` (what the parent's
/// `cgroup.subtree_control` enables). A limit of a controller it cannot have is skipped, as
/// runc and containerd skip it, with one warning per controller and process: the pod runs.
fn limit_dir(layout: &CgroupLayout, rel: &Path, controller: &str) -> Option<PathBuf> {
    let dir = match layout {
        CgroupLayout::V1 { root, hierarchies } => hierarchies
            .iter()
            .find(|h| h.split(',').any(|c| c == controller))
            .map(|h| root.join(h).join(rel)),
        CgroupLayout::V2 { root } => {
            let dir = root.join(rel);
            std::fs::read_to_string(dir.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == controller))
                .then_some(dir)
        }
    };
    if dir.is_none() {
        static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
        let first = LOGGED.lock().is_ok_and(|mut l| {
            let new = !l.iter().any(|c| c == controller);
            if new {
                l.push(controller.to_owned());
            }
            new
        });
        if first {
            tracing::warn!(
                controller,
                "cgroup controller not available for pod cgroups: its limits are skipped"
            );
        }
    }
    dir
}

/// `unified` keys name files of the pod cgroup's v2 directory and are checked as a container's
/// are (the runtime's `ContainerCgroup::check_unified`; the two crates share no dependency to
/// hold one copy): a plain file name, none of the cgroup's own `cgroup.*` interface files (the
/// runtime's), and a file this pod cgroup has. Anything else is refused, naming the key, rather
/// than dropped: the client asked for that exact file. On a v1 or hybrid node the pod cgroup is
/// in the v1 hierarchies and has no v2 directory, so every key is refused.
fn check_unified(
    layout: &CgroupLayout,
    rel: &Path,
    unified: &BTreeMap<String, String>,
) -> Result<(), Error> {
    for key in unified.keys() {
        let refuse = |reason: &str| Error::InvalidConfig(format!("unified key {key:?}{reason}"));
        let plain = !key.is_empty()
            && !key.contains('/')
            && !key.contains('\0')
            && key != "."
            && key != "..";
        if !plain {
            return Err(refuse(" is not a cgroup file name"));
        }
        if key.starts_with("cgroup.") {
            return Err(refuse(
                ": the cgroup's own interface files are the runtime's",
            ));
        }
        let CgroupLayout::V2 { root } = layout else {
            return Err(refuse(
                ": this node's pod cgroups are in cgroup v1 hierarchies, which have no such file \
                 (unified keys apply on a cgroup v2 node)",
            ));
        };
        if !std::fs::symlink_metadata(root.join(rel).join(key)).is_ok_and(|m| m.is_file()) {
            return Err(refuse(
                ": this node's pod cgroup has no such file (its controller is not enabled \
                 here, or the kernel has no such setting)",
            ));
        }
    }
    Ok(())
}

/// Writes the pod's limits in the files of the layout's version, skipping a controller the pod
/// cgroup does not have. `unified` keys are checked before anything is written and written last.
pub fn apply(layout: &CgroupLayout, rel: &Path, r: &PodResources) -> Result<(), Error> {
    check_unified(layout, rel, &r.unified)?;
    let write = |path: PathBuf, value: String| {
        std::fs::write(&path, value).map_err(|source| Error::Io { path, source })
    };
    let cpu = r.cpu_shares.is_some() || r.cpu_quota.is_some() || r.cpu_period.is_some();
    let cpu = cpu.then(|| limit_dir(layout, rel, "cpu")).flatten();
    let memory = r
        .memory_limit
        .and_then(|m| Some((m, limit_dir(layout, rel, "memory")?)));
    match layout {
        CgroupLayout::V1 { .. } => {
            if let Some(dir) = &cpu {
                if let Some(s) = r.cpu_shares {
                    write(dir.join("cpu.shares"), s.to_string())?;
                }
                if let Some(p) = r.cpu_period {
                    write(dir.join("cpu.cfs_period_us"), p.to_string())?;
                }
                if let Some(q) = r.cpu_quota {
                    write(dir.join("cpu.cfs_quota_us"), q.to_string())?;
                }
            }
            if let Some((m, dir)) = memory {
                write(dir.join("memory.limit_in_bytes"), m.to_string())?;
            }
        }
        CgroupLayout::V2 { root } => {
            if let Some(dir) = &cpu {
                if let Some(s) = r.cpu_shares {
                    // The conversion runc and the kubelet use between v1 shares and v2 weight.
                    let weight = 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142;
                    write(dir.join("cpu.weight"), weight.to_string())?;
                }
                if r.cpu_quota.is_some() || r.cpu_period.is_some() {
                    let quota = match r.cpu_quota {
                        Some(q) if q > 0 => q.to_string(),
                        _ => "max".into(),
                    };
                    write(
                        dir.join("cpu.max"),
                        format!("{quota} {}", r.cpu_period.unwrap_or(100_000)),
                    )?;
                }
            }
            if let Some((m, dir)) = memory {
                write(dir.join("memory.max"), m.to_string())?;
            }
            let dir = root.join(rel);
            for (key, value) in &r.unified {
                std::fs::write(dir.join(key), value).map_err(|e| {
                    Error::InvalidConfig(format!("unified key {key:?} = {value:?}: {e}"))
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_slices_expand_as_systemd_lays_them_out() {
        assert_eq!(
            expand(CgroupDriver::Systemd, "kubepods-burstable-pod1234_ab.slice").unwrap(),
            PathBuf::from(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_ab.slice"
            )
        );
        assert_eq!(
            expand(CgroupDriver::Systemd, "kubepods.slice").unwrap(),
            PathBuf::from("kubepods.slice")
        );
        for bad in [
            "kubepods",
            "a--b.slice",
            "-.slice",
            "../x.slice",
            "a/b.slice",
            "a b.slice",
        ] {
            assert!(expand(CgroupDriver::Systemd, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cgroupfs_paths_stay_below_the_root() {
        assert_eq!(
            expand(CgroupDriver::Cgroupfs, "/kubepods/burstable/pod1234").unwrap(),
            PathBuf::from("kubepods/burstable/pod1234")
        );
        for bad in ["kubepods/pod", "/", "/kubepods/../../etc", "/kubepods/./x"] {
            assert!(expand(CgroupDriver::Cgroupfs, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_records_only_missing_dirs_and_applies_v1_limits() {
        let d = tempfile::tempdir().unwrap();
        for h in ["cpu", "memory"] {
            std::fs::create_dir_all(d.path().join(h).join("kubepods")).unwrap();
        }
        std::os::unix::fs::symlink(d.path().join("cpu"), d.path().join("cpuacct")).unwrap();
        let layout = CgroupLayout::detect(d.path());
        assert_eq!(
            layout,
            CgroupLayout::V1 {
                root: d.path().into(),
                hierarchies: vec!["cpu".into(), "memory".into()]
            }
        );
        let rel = expand(CgroupDriver::Cgroupfs, "/kubepods/burstable/podx").unwrap();
        let mut created = Vec::new();
        create(&layout, &rel, &mut created).unwrap();
        assert_eq!(
            created,
            [
                d.path().join("cpu/kubepods/burstable"),
                d.path().join("cpu/kubepods/burstable/podx"),
                d.path().join("memory/kubepods/burstable"),
                d.path().join("memory/kubepods/burstable/podx"),
            ]
        );
        let r = PodResources {
            cpu_shares: Some(512),
            memory_limit: Some(1 << 30),
            ..Default::default()
        };
        apply(&layout, &rel, &r).unwrap();
        let read = |p: &str| std::fs::read_to_string(d.path().join(p)).unwrap();
        assert_eq!(read("cpu/kubepods/burstable/podx/cpu.shares"), "512");
        assert_eq!(
            read("memory/kubepods/burstable/podx/memory.limit_in_bytes"),
            "1073741824"
        );
    }

    #[test]
    fn limits_of_a_controller_not_mounted_or_not_enabled_are_skipped() {
        let r = PodResources {
            cpu_shares: Some(2),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(4096),
            ..Default::default()
        };
        // v1 without a cpu hierarchy.
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("memory")).unwrap();
        let layout = CgroupLayout::detect(d.path());
        let rel = PathBuf::from("kubepods/besteffort/podx");
        create(&layout, &rel, &mut Vec::new()).unwrap();
        apply(&layout, &rel, &r).unwrap();
        let limit = d
            .path()
            .join("memory")
            .join(&rel)
            .join("memory.limit_in_bytes");
        assert_eq!(std::fs::read_to_string(limit).unwrap(), "4096");
        assert!(!d.path().join("cpu").exists());
        // v2 whose parent enables memory only: no cpu files are written.
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let layout = CgroupLayout::detect(d.path());
        let rel = PathBuf::from("kubepods.slice/kubepods-pod1.slice");
        create(&layout, &rel, &mut Vec::new()).unwrap();
        std::fs::write(d.path().join(&rel).join("cgroup.controllers"), "memory").unwrap();
        apply(&layout, &rel, &r).unwrap();
        assert!(!d.path().join(&rel).join("cpu.max").exists());
        assert!(!d.path().join(&rel).join("cpu.weight").exists());
        assert!(d.path().join(&rel).join("memory.max").exists());
    }

    #[test]
    fn v2_is_detected_and_gets_weight_and_max() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let layout = CgroupLayout::detect(d.path());
        let rel = PathBuf::from("kubepods.slice/kubepods-pod1.slice");
        let mut created = Vec::new();
        create(&layout, &rel, &mut created).unwrap();
        assert_eq!(created.len(), 2);
        std::fs::write(d.path().join(&rel).join("cgroup.controllers"), "cpu memory").unwrap();
        let r = PodResources {
            cpu_shares: Some(1024),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(4096),
            ..Default::default()
        };
        apply(&layout, &rel, &r).unwrap();
        let read = |f: &str| std::fs::read_to_string(d.path().join(&rel).join(f)).unwrap();
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("memory.max"), "4096");
    }

    /// A systemd v1 node mounts `cpu` with `cpuacct` and `net_cls` with `net_prio`, each pair at
    /// a comma-named directory with a symlink per controller: the pod cgroup is made in those
    /// hierarchies (once each) and its CPU limits are written there.
    #[test]
    fn co_mounted_v1_hierarchies_behind_symlinks_get_the_pod_cgroup() {
        let d = tempfile::tempdir().unwrap();
        for h in ["cpu,cpuacct", "net_cls,net_prio", "memory", "unified"] {
            std::fs::create_dir(d.path().join(h)).unwrap();
        }
        for (alias, h) in [
            ("cpu", "cpu,cpuacct"),
            ("cpuacct", "cpu,cpuacct"),
            ("net_cls", "net_cls,net_prio"),
            ("net_prio", "net_cls,net_prio"),
        ] {
            std::os::unix::fs::symlink(h, d.path().join(alias)).unwrap();
        }
        let layout = CgroupLayout::detect(d.path());
        assert_eq!(
            layout,
            CgroupLayout::V1 {
                root: d.path().into(),
                hierarchies: vec![
                    "cpu,cpuacct".into(),
                    "memory".into(),
                    "net_cls,net_prio".into()
                ]
            }
        );
        let rel = PathBuf::from("kubepods/podx");
        let mut created = Vec::new();
        create(&layout, &rel, &mut created).unwrap();
        assert_eq!(
            created,
            [
                d.path().join("cpu,cpuacct/kubepods"),
                d.path().join("cpu,cpuacct/kubepods/podx"),
                d.path().join("memory/kubepods"),
                d.path().join("memory/kubepods/podx"),
                d.path().join("net_cls,net_prio/kubepods"),
                d.path().join("net_cls,net_prio/kubepods/podx"),
            ]
        );
        let r = PodResources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            ..Default::default()
        };
        apply(&layout, &rel, &r).unwrap();
        let read =
            |f: &str| std::fs::read_to_string(d.path().join("cpu,cpuacct").join(&rel).join(f));
        assert_eq!(read("cpu.shares").unwrap(), "512");
        assert_eq!(read("cpu.cfs_quota_us").unwrap(), "50000");
    }

    fn refused(layout: &CgroupLayout, rel: &Path, key: &str) -> String {
        let r = PodResources {
            cpu_shares: Some(512),
            unified: BTreeMap::from([(key.to_owned(), "1".to_owned())]),
            ..Default::default()
        };
        match apply(layout, rel, &r) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("{key}: {other:?}"),
        }
    }

    /// As a container's: on v1 every key is refused by name, before any limit is written; on v2
    /// a key is written where the pod cgroup has the file, and refused by name where it has not.
    #[test]
    fn pod_unified_keys_are_written_where_the_file_is_and_else_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("cpu")).unwrap();
        let layout = CgroupLayout::detect(d.path());
        let rel = PathBuf::from("kubepods/podx");
        create(&layout, &rel, &mut Vec::new()).unwrap();
        for key in [
            "memory.oom.group",
            "../memory.max",
            "",
            "cgroup.procs",
            "a/b",
        ] {
            let m = refused(&layout, &rel, key);
            assert!(m.contains(&format!("{key:?}")), "{key}: {m}");
        }
        assert!(refused(&layout, &rel, "memory.oom.group").contains("v1"));
        assert!(!d.path().join("cpu").join(&rel).join("cpu.shares").exists());

        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let layout = CgroupLayout::detect(d.path());
        let rel = PathBuf::from("kubepods.slice/kubepods-pod1.slice");
        create(&layout, &rel, &mut Vec::new()).unwrap();
        let dir = d.path().join(&rel);
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory").unwrap();
        std::fs::write(dir.join("memory.oom.group"), "0").unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        for key in [
            "memory.no_such_knob",
            "cgroup.procs",
            "../cgroup.controllers",
        ] {
            let m = refused(&layout, &rel, key);
            assert!(m.contains(&format!("{key:?}")), "{key}: {m}");
        }
        assert!(!dir.join("cpu.weight").exists());
        let r = PodResources {
            unified: BTreeMap::from([("memory.oom.group".to_owned(), "1".to_owned())]),
            ..Default::default()
        };
        apply(&layout, &rel, &r).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.oom.group")).unwrap(),
            "1"
        );
    }
}
