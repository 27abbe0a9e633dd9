//! The pod cgroup: the kubelet's `cgroup_parent` turned into a path for the configured driver, the
//! directories created where missing (in every v1 hierarchy, or once on v2), and the pod's limits.
//! Only directories this module created are removed again; the kubelet owns the ones it made.
//! Without systemd running, a `systemd`-driver slice is laid out the way systemd would lay it out.

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
    /// v1 hierarchies that are directories there (symlinks such as `cpu,cpuacct` aliases skipped).
    pub fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() {
            return Self::V2 { root: root.into() };
        }
        let hierarchies = V1_HIERARCHIES
            .iter()
            .filter(|h| std::fs::symlink_metadata(root.join(h)).is_ok_and(|m| m.is_dir()))
            .map(|h| h.to_string())
            .collect();
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

/// Creates the pod cgroup where missing. Each directory made is pushed onto `created` as soon as
/// it exists, so a failure half-way leaves an exact record for the undo.
pub fn create(layout: &CgroupLayout, rel: &Path, created: &mut Vec<PathBuf>) -> Result<(), Error> {
    for dir in layout.dirs(rel) {
        // A parent found in place can be gone a moment later (the last pod in it removed, by
        // another runtime or test daemon): then the walk starts again.
        let mut attempts = 3;
        'walk: loop {
            attempts -= 1;
            let mut missing = Vec::new();
            let mut d = dir.as_path();
            while !d.exists() {
                missing.push(d.to_path_buf());
                d = match d.parent() {
                    Some(p) => p,
                    None => break,
                };
            }
            for m in missing.into_iter().rev() {
                match std::fs::create_dir(&m) {
                    Ok(()) => created.push(m),
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

/// Whether the pod cgroup `rel` can be limited by `controller`: on v1 a hierarchy of that name
/// under the root, on v2 the controller in the cgroup's `cgroup.controllers` (what the parent's
/// `cgroup.subtree_control` enables). A limit of a controller it cannot have is skipped, as
/// runc and containerd skip it, with one warning per controller and process: the pod runs.
fn can_limit(layout: &CgroupLayout, rel: &Path, controller: &str) -> bool {
    let have = match layout {
        // Through a symlink too: `cpu` is often one to a `cpu,cpuacct` mount.
        CgroupLayout::V1 { root, .. } => root.join(controller).is_dir(),
        CgroupLayout::V2 { root } => {
            std::fs::read_to_string(root.join(rel).join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == controller))
        }
    };
    if !have {
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
    have
}

/// Writes the pod's limits in the files of the layout's version, skipping a controller the pod
/// cgroup does not have.
pub fn apply(layout: &CgroupLayout, rel: &Path, r: &PodResources) -> Result<(), Error> {
    let write = |path: PathBuf, value: String| {
        std::fs::write(&path, value).map_err(|source| Error::Io { path, source })
    };
    let cpu = r.cpu_shares.is_some() || r.cpu_quota.is_some() || r.cpu_period.is_some();
    let cpu = cpu && can_limit(layout, rel, "cpu");
    let memory = r.memory_limit.is_some() && can_limit(layout, rel, "memory");
    match layout {
        CgroupLayout::V1 { root, .. } => {
            let dir = root.join("cpu").join(rel);
            if let Some(s) = r.cpu_shares.filter(|_| cpu) {
                write(dir.join("cpu.shares"), s.to_string())?;
            }
            if let Some(p) = r.cpu_period.filter(|_| cpu) {
                write(dir.join("cpu.cfs_period_us"), p.to_string())?;
            }
            if let Some(q) = r.cpu_quota.filter(|_| cpu) {
                write(dir.join("cpu.cfs_quota_us"), q.to_string())?;
            }
            if let Some(m) = r.memory_limit.filter(|_| memory) {
                write(
                    root.join("memory").join(rel).join("memory.limit_in_bytes"),
                    m.to_string(),
                )?;
            }
        }
        CgroupLayout::V2 { root } => {
            let dir = root.join(rel);
            if let Some(s) = r.cpu_shares.filter(|_| cpu) {
                // The conversion runc and the kubelet use between v1 shares and v2 weight.
                let weight = 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142;
                write(dir.join("cpu.weight"), weight.to_string())?;
            }
            if cpu && (r.cpu_quota.is_some() || r.cpu_period.is_some()) {
                let quota = match r.cpu_quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".into(),
                };
                write(
                    dir.join("cpu.max"),
                    format!("{quota} {}", r.cpu_period.unwrap_or(100_000)),
                )?;
            }
            if let Some(m) = r.memory_limit.filter(|_| memory) {
                write(dir.join("memory.max"), m.to_string())?;
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
        };
        apply(&layout, &rel, &r).unwrap();
        let read = |f: &str| std::fs::read_to_string(d.path().join(&rel).join(f)).unwrap();
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("memory.max"), "4096");
    }
}
