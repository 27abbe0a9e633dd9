//! A container's cgroup with `cgroups-rs` (cgroupfs driver): created under the pod's at create,
//! limits applied and updated live, the process list, the OOM-kill count, and removal.
//! v1 is what this node has; v2 goes through the same calls (`cgroups-rs` picks the hierarchy).
//! It never decides limits, only applies what the spec says.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::{Cgroup, Hierarchy};
use cgroups_rs::{FsManager, Manager};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

use crate::error::{Error, Result};

/// The cgroup of one container, by its path relative to each hierarchy's root.
#[derive(Debug, Clone)]
pub struct ContainerCgroup {
    path: String,
}

/// Where the v1 hierarchies are mounted (None on a unified v2 node), read once per process:
/// `hierarchies::auto()` parses `/proc/self/mountinfo` on every call, and on a node with many pods
/// that table is long (every pod adds its namespace pins, shm and rootfs mounts).
fn v1() -> Option<&'static hierarchies::V1> {
    static V1: std::sync::OnceLock<Option<hierarchies::V1>> = std::sync::OnceLock::new();
    V1.get_or_init(|| (!hierarchies::is_cgroup2_unified_mode()).then(hierarchies::V1::new))
        .as_ref()
}

/// On a hybrid node (v1 hierarchies, cgroup2 at `/sys/fs/cgroup/unified`), an OCI runtime
/// also puts its containers in the cgroup2 hierarchy, making the pod's directory there, which
/// carapace does not use: removed with the pod (`rel`, relative to the hierarchy's root), once
/// its containers are gone. Nothing to do elsewhere, or when it is not there.
pub fn remove_hybrid_unified(rel: &str) -> Result<()> {
    if v1().is_none() {
        return Ok(());
    }
    let rel = rel.trim_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
        return Ok(());
    }
    let dir = std::path::Path::new("/sys/fs/cgroup/unified").join(rel);
    match std::fs::remove_dir(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(cg_err("remove", &dir.display().to_string(), e)),
    }
}

fn hierarchy() -> Box<dyn Hierarchy> {
    match v1() {
        Some(v1) => Box::new(v1.clone()),
        None => Box::new(hierarchies::V2::new()),
    }
}

fn cg_err(what: &str, path: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("cgroup {what} {path}: {e}"))
}

impl ContainerCgroup {
    pub fn new(path: &str) -> Self {
        Self {
            path: path.trim_matches('/').to_string(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn is_v2() -> bool {
        v1().is_none()
    }

    /// Every directory of this cgroup, one per v1 controller (or the single v2 one).
    pub fn dirs(&self) -> Vec<PathBuf> {
        if Self::is_v2() {
            return vec![hierarchy().root().join(&self.path)];
        }
        Cgroup::load(hierarchy(), &self.path)
            .subsystems()
            .iter()
            .map(|s| cgroups_rs::fs::Controller::path(s.to_controller()).to_path_buf())
            .collect()
    }

    /// Creates the cgroup (parents included) and applies `resources`. On failure the cgroup is
    /// removed again from every hierarchy (the parents stay: they are the pod's): a container
    /// cgroup left behind keeps the pod's from ever being removed.
    pub fn create(&self, resources: &LinuxResources) -> Result<()> {
        // A parent made by someone else (a QoS cgroup, another pod's) can be removed by its
        // owner between cgroups-rs's mkdir of it and of ours, in a hierarchy our pod has no
        // cgroup in (seen with the tests' daemons, which take empty QoS parents away): the walk
        // is tried again, as the pod cgroup's is.
        let mut made = Cgroup::new(hierarchy(), &self.path).map(|_| ());
        for _ in 0..2 {
            if made.is_ok() {
                break;
            }
            made = Cgroup::new(hierarchy(), &self.path).map(|_| ());
        }
        let made = made
            .map_err(|e| cg_err("create", &self.path, e))
            .and_then(|()| self.update(resources));
        if let Err(e) = &made {
            // Nothing runs in it yet: rmdir succeeds at once or not at all.
            if let Err(undo) = self.destroy(Duration::from_secs(1)) {
                tracing::warn!(
                    cgroup = %self.path, error = %e, undo = %undo,
                    "removing a cgroup whose limits failed"
                );
            }
        }
        made
    }

    /// Applies `resources` to the existing cgroup (UpdateContainerResources). Device rules, when
    /// `resources` has any, are applied first, so no process runs under the limits without them.
    pub fn update(&self, resources: &LinuxResources) -> Result<()> {
        if let Some(rules) = resources.devices() {
            self.set_devices(rules)?;
        }
        // Ours, not cgroups-rs's: it writes a wildcard major or minor as 0, which would allow the
        // wrong device (`c 0:0`) instead of every minor of a major.
        let mut limits = resources.clone();
        limits.set_devices(None);
        // cgroups-rs does not write them; checked and written below, once the rest is set.
        let unified = limits.unified_mut().take().unwrap_or_default();
        self.check_unified(&unified)?;
        self.skip_unavailable(&mut limits);
        let mut m = FsManager::new(&self.path).map_err(|e| cg_err("open", &self.path, e))?;
        m.set(&limits)
            .map_err(|e| cg_err("set limits on", &self.path, e))?;
        self.set_unified(&unified)
    }

    /// The controllers this cgroup can be limited by: on v1 the mounted hierarchies (read once
    /// per process, as the hierarchies are); on v2 its `cgroup.controllers`, which lists exactly
    /// what the parent's `cgroup.subtree_control` enables.
    fn controllers(&self) -> std::collections::BTreeSet<String> {
        match v1() {
            Some(v1) => {
                static MOUNTED: std::sync::OnceLock<std::collections::BTreeSet<String>> =
                    std::sync::OnceLock::new();
                MOUNTED
                    .get_or_init(|| {
                        v1.subsystems()
                            .iter()
                            .map(|s| s.controller_name())
                            .collect()
                    })
                    .clone()
            }
            None => std::fs::read_to_string(
                hierarchy()
                    .root()
                    .join(&self.path)
                    .join("cgroup.controllers"),
            )
            .map(|c| c.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        }
    }

    /// Drops the limits of controllers this cgroup does not have, as runc and containerd do: the
    /// kubelet sends hugepage limits for every page size the kernel has, with every container,
    /// and on a node whose hugetlb controller is not mounted (v1) or not enabled here (v2)
    /// cgroups-rs refuses the whole set. The pod runs, and nothing could have held it to such a
    /// limit anyway. Each controller is named in one warning per process. Device rules are not
    /// here: without the devices controller a container is refused (see `set_devices`).
    fn skip_unavailable(&self, limits: &mut LinuxResources) {
        let have = self.controllers();
        let v2 = Self::is_v2();
        let skip = |controller: &str| {
            if have.contains(controller) {
                return false;
            }
            static LOGGED: std::sync::Mutex<std::collections::BTreeSet<String>> =
                std::sync::Mutex::new(std::collections::BTreeSet::new());
            let first = LOGGED
                .lock()
                .map(|mut l| l.insert(controller.to_owned()))
                .unwrap_or(false);
            if first {
                tracing::warn!(
                    controller,
                    "cgroup controller not available: its limits are skipped"
                );
            }
            true
        };
        if let Some(cpu) = limits.cpu_mut() {
            let cfs = cpu.shares().is_some()
                || cpu.quota().is_some()
                || cpu.period().is_some()
                || cpu.realtime_runtime().is_some()
                || cpu.realtime_period().is_some()
                || cpu.idle().is_some()
                || cpu.burst().is_some();
            if cfs && skip("cpu") {
                cpu.set_shares(None);
                cpu.set_quota(None);
                cpu.set_period(None);
                cpu.set_realtime_runtime(None);
                cpu.set_realtime_period(None);
                cpu.set_idle(None);
                cpu.set_burst(None);
            }
            if (cpu.cpus().is_some() || cpu.mems().is_some()) && skip("cpuset") {
                cpu.set_cpus(None);
                cpu.set_mems(None);
            }
        }
        if limits.memory().is_some() && skip("memory") {
            limits.set_memory(None);
        }
        if limits.pids().is_some() && skip("pids") {
            limits.set_pids(None);
        }
        if limits.block_io().is_some() && skip(if v2 { "io" } else { "blkio" }) {
            limits.set_block_io(None);
        }
        if limits
            .hugepage_limits()
            .as_ref()
            .is_some_and(|h| !h.is_empty())
            && skip("hugetlb")
        {
            limits.set_hugepage_limits(None);
        }
        if let Some(net) = limits.network_mut() {
            // v2 has neither: packets are classified by the cgroup's path there.
            if net.class_id().is_some() && skip("net_cls") {
                net.set_class_id(None);
            }
            if net.priorities().as_ref().is_some_and(|p| !p.is_empty()) && skip("net_prio") {
                net.set_priorities(None);
            }
        }
        if limits.rdma().as_ref().is_some_and(|r| !r.is_empty()) && skip("rdma") {
            limits.set_rdma(None);
        }
    }

    /// `unified` keys name files of the container's cgroup v2 directory, so each must be a file
    /// this node's cgroup has: the files of an enabled controller or of the cgroup itself. A key
    /// the node has no file for is refused, naming it, rather than dropped: the client asked for
    /// that exact file. The cgroup's own interface files (`cgroup.procs`, `cgroup.kill`, ...) are
    /// the runtime's and refused too. On a v1 or hybrid node the containers' cgroups are in the
    /// v1 hierarchies and have no v2 directory at all (the hybrid node's cgroup2 mount holds
    /// none of their controllers), so every key is refused, as runc refuses `unified` on v1.
    fn check_unified(&self, unified: &std::collections::HashMap<String, String>) -> Result<()> {
        let mut keys: Vec<&String> = unified.keys().collect();
        keys.sort();
        for key in keys {
            let plain = !key.is_empty()
                && !key.contains('/')
                && !key.contains('\0')
                && key != "."
                && key != "..";
            if !plain {
                return Err(Error::InvalidArgument(format!(
                    "unified key {key:?} is not a cgroup file name"
                )));
            }
            if key.starts_with("cgroup.") {
                return Err(Error::InvalidArgument(format!(
                    "unified key {key:?}: the cgroup's own interface files are the runtime's"
                )));
            }
            if !Self::is_v2() {
                return Err(Error::InvalidArgument(format!(
                    "unified key {key:?}: this node's containers are in cgroup v1 hierarchies, \
                     which have no such file (unified keys apply on a cgroup v2 node)"
                )));
            }
            let file = hierarchy().root().join(&self.path).join(key);
            if !std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
                return Err(Error::InvalidArgument(format!(
                    "unified key {key:?}: this node's cgroup has no such file (its controller is \
                     not enabled here, or the kernel has no such setting)"
                )));
            }
        }
        Ok(())
    }

    /// Writes the checked `unified` keys, in key order.
    fn set_unified(&self, unified: &std::collections::HashMap<String, String>) -> Result<()> {
        let dir = hierarchy().root().join(&self.path);
        let mut keys: Vec<(&String, &String)> = unified.iter().collect();
        keys.sort();
        for (key, value) in keys {
            let file = dir.join(key);
            std::fs::write(&file, value).map_err(|e| {
                Error::InvalidArgument(format!("unified key {key:?} = {value:?}: {e}"))
            })?;
        }
        Ok(())
    }

    /// The device rules, in order (later rules win): on v1 each line to `devices.deny` or
    /// `devices.allow`; on v2, which has no such files, an eBPF program attached to the cgroup.
    fn set_devices(&self, rules: &[LinuxDeviceCgroup]) -> Result<()> {
        use std::io::Write;
        // No rules changes nothing, on v2 as on v1 (an empty program would allow every device).
        if rules.is_empty() {
            return Ok(());
        }
        if Self::is_v2() {
            let dir = hierarchy().root().join(&self.path);
            return crate::devices::attach(&dir, rules);
        }
        let dir = self
            .dirs()
            .into_iter()
            .find(|d| d.join("devices.allow").exists())
            .ok_or_else(|| {
                // Running a container with every device reachable is not an option.
                Error::FailedPrecondition(
                    "the devices cgroup controller is not mounted: containers cannot be confined"
                        .into(),
                )
            })?;
        for rule in rules {
            let file = dir.join(if rule.allow() {
                "devices.allow"
            } else {
                "devices.deny"
            });
            // One rule per write: the kernel parses one rule per write(2).
            std::fs::OpenOptions::new()
                .write(true)
                .open(&file)
                .and_then(|mut f| f.write_all(rule.to_string().as_bytes()))
                .map_err(|e| cg_err(&format!("write {rule} to"), &file.display().to_string(), e))?;
        }
        Ok(())
    }

    /// The files a freshly forked, single-threaded child writes `0` to so as to move itself in
    /// (see [`join_self`]).
    pub(crate) fn join_files(&self) -> Vec<PathBuf> {
        let file = if Self::is_v2() {
            "cgroup.procs"
        } else {
            "tasks"
        };
        self.dirs().into_iter().map(|d| d.join(file)).collect()
    }

    pub fn exists(&self) -> bool {
        Cgroup::load(hierarchy(), &self.path).exists()
    }

    /// The processes in the cgroup.
    pub fn procs(&self) -> Vec<i32> {
        let cg = Cgroup::load(hierarchy(), &self.path);
        if !cg.exists() {
            return vec![];
        }
        cg.procs().into_iter().map(|p| p.pid as i32).collect()
    }

    /// Sends `signal` to every process in the cgroup, as `runc kill --all` does: with the cgroup
    /// frozen, so that none can fork a child the signal misses, and thawed again after (the
    /// signal takes effect then). Where there is no freezer, in a few rounds instead. On v2 a
    /// SIGKILL goes through `cgroup.kill`, which the kernel applies to the whole cgroup at once.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let v2_dir = Self::is_v2().then(|| hierarchy().root().join(&self.path));
        if let Some(dir) = &v2_dir
            && signal == Signal::SIGKILL
            && std::fs::write(dir.join("cgroup.kill"), b"1").is_ok()
        {
            return;
        }
        let freezer = self.freeze();
        // One pass with the cgroup frozen; without it, again for children forked meanwhile.
        let rounds = if freezer.is_some() { 1 } else { 3 };
        for _ in 0..rounds {
            let pids = match &freezer {
                Some(f) => procs_in(&f.dir),
                None => self.procs(),
            };
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
        if let Some(f) = freezer {
            f.thaw();
        }
    }

    /// Freezes the cgroup (v1 `freezer.state`, v2 `cgroup.freeze`) and waits up to a second for
    /// the kernel to have stopped every task; `None` where it has no freezer. Whatever the wait
    /// gives, the result thaws it when asked.
    fn freeze(&self) -> Option<Frozen> {
        let v2 = Self::is_v2();
        let dir = if v2 {
            hierarchy().root().join(&self.path)
        } else {
            self.dirs()
                .into_iter()
                .find(|d| d.join("freezer.state").exists())?
        };
        let (file, value) = if v2 {
            ("cgroup.freeze", "1")
        } else {
            ("freezer.state", "FROZEN")
        };
        std::fs::write(dir.join(file), value).ok()?;
        let frozen = || {
            if v2 {
                std::fs::read_to_string(dir.join("cgroup.events"))
                    .is_ok_and(|t| t.lines().any(|l| l.trim() == "frozen 1"))
            } else {
                std::fs::read_to_string(dir.join("freezer.state"))
                    .is_ok_and(|t| t.trim() == "FROZEN")
            }
        };
        // Freezing is asynchronous: a task in an uninterruptible sleep is frozen once it leaves.
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut pause = Duration::from_micros(100);
        while !frozen() && Instant::now() < deadline {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
        }
        Some(Frozen { dir, v2 })
    }

    /// How often the kernel OOM-killed a process here (v1 `memory.oom_control`, v2 `memory.events`).
    pub fn oom_kills(&self) -> u64 {
        let file = if Self::is_v2() {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.dirs()
            .into_iter()
            .filter(|d| Self::is_v2() || d.components().any(|c| c.as_os_str() == "memory"))
            .filter_map(|d| std::fs::read_to_string(d.join(file)).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.strip_prefix("oom_kill "))
                    .filter_map(|n| n.trim().parse::<u64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// Removes the cgroup once its processes are gone; waits up to `timeout` for the kernel to
    /// finish reaping them (rmdir says EBUSY until then). Missing is success.
    pub fn destroy(&self, timeout: Duration) -> Result<()> {
        // rmdir per controller directory ourselves: every hierarchy must lose the directory (a
        // memory cgroup left behind keeps the pod cgroup from ever being removed), and EBUSY while
        // the last task is reaped is retried until the deadline.
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(250);
        for dir in self.dirs() {
            loop {
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(cg_err("remove", &dir.display().to_string(), e));
                    }
                    Err(_) => {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(20));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Moves the calling thread into the cgroup whose `join_files` these are. Meant for a child right
/// after fork, while it is the process's only thread, so the thread is the whole process.
///
/// On v1, a thread writing `0` to `tasks` moves itself without the kernel's global threadgroup
/// lock, whose first taking waits out an RCU grace period (8-20 ms measured here); writing a pid
/// to `cgroup.procs` from the parent took it on every container start and exec.
pub(crate) fn join_self(files: &[PathBuf]) -> Result<()> {
    use std::io::Write;
    for f in files {
        std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .and_then(|mut file| file.write_all(b"0"))
            .map_err(|e| cg_err("join", &f.display().to_string(), e))?;
    }
    Ok(())
}

/// A cgroup [`ContainerCgroup::freeze`] froze.
struct Frozen {
    dir: PathBuf,
    v2: bool,
}

impl Frozen {
    fn thaw(self) {
        let (file, value) = if self.v2 {
            ("cgroup.freeze", "0")
        } else {
            ("freezer.state", "THAWED")
        };
        let _ = std::fs::write(self.dir.join(file), value);
    }
}

/// The pids in `dir`'s `cgroup.procs`.
fn procs_in(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn refused(key: &str) -> String {
        let cg = ContainerCgroup::new("carapace-unit/none");
        match cg.check_unified(&HashMap::from([(key.to_owned(), "1".to_owned())])) {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("{key}: {other:?}"),
        }
    }

    /// What is kept is exactly what the node has a controller for (on this node's v1 layout:
    /// no hugetlb, no net_cls, no rdma).
    #[test]
    fn limits_of_controllers_the_node_lacks_are_dropped_and_no_others() {
        let cg = ContainerCgroup::new("carapace-unit/none");
        let have = cg.controllers();
        let mut limits: LinuxResources = serde_json::from_value(serde_json::json!({
            "cpu": {"shares": 2, "quota": 50000, "period": 100000},
            "memory": {"limit": 1048576},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "network": {"classID": 7},
            "rdma": {"mlx5_0": {"hcaHandles": 1}},
        }))
        .unwrap();
        cg.skip_unavailable(&mut limits);
        let kept = |c: &str| have.contains(c);
        assert_eq!(
            limits.cpu().as_ref().and_then(|c| c.shares()).is_some(),
            kept("cpu")
        );
        assert_eq!(limits.memory().is_some(), kept("memory"));
        assert_eq!(limits.hugepage_limits().is_some(), kept("hugetlb"));
        assert_eq!(
            limits
                .network()
                .as_ref()
                .and_then(|n| n.class_id())
                .is_some(),
            kept("net_cls")
        );
        assert_eq!(limits.rdma().is_some(), kept("rdma"));
    }

    #[test]
    fn unified_keys_without_a_file_are_refused_by_name() {
        for key in ["../memory.max", "", "cgroup.procs", "a/b"] {
            assert!(refused(key).contains(&format!("{key:?}")), "{key}");
        }
        // The cgroup does not exist: on v2 no file is there, on v1 there is no v2 directory.
        let m = refused("memory.oom.group");
        assert!(m.contains("\"memory.oom.group\""), "{m}");
        assert!(
            ContainerCgroup::new("x")
                .check_unified(&HashMap::new())
                .is_ok()
        );
    }
}
