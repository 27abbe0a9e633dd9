//! The plain-data description of a container that the CRI layer fills in from the CRI
//! `ContainerConfig`, the sandbox and the image config. It owns no behaviour beyond validation and
//! must never name gRPC or CRI types: `runtime` is tested and used without them.

use std::collections::BTreeMap;
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
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Process {
    /// argv; `args[0]` is looked up in the container's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries, image first then config (the caller merges).
    pub env: Vec<String>,
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

/// A bind mount from the host (a CRI mount, or the sandbox's hosts/resolv.conf/hostname/shm).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub readonly: bool,
    pub propagation: Propagation,
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
        for m in &self.mounts {
            if !m.container_path.starts_with('/') {
                return Err(Error::InvalidArgument(format!(
                    "mount destination {:?} is not absolute",
                    m.container_path
                )));
            }
            if !m.host_path.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "mount source {} is not absolute",
                    m.host_path.display()
                )));
            }
        }
        for e in &self.process.env {
            if !e.contains('=') || e.contains('\0') {
                return Err(Error::InvalidArgument(format!("bad env entry {e:?}")));
            }
        }
        if self.cgroup.parent.split('/').any(|c| c == "..") {
            return Err(Error::InvalidArgument(
                "cgroup parent escapes the hierarchy".into(),
            ));
        }
        Ok(())
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

    #[test]
    fn relative_mount_destinations_are_refused() {
        let mut c = ContainerConfig {
            id: "c1".into(),
            ..Default::default()
        };
        c.process.args = vec!["sh".into()];
        c.rootfs.lower_dirs = vec!["/l".into()];
        c.validate().unwrap();
        c.mounts.push(Mount {
            host_path: "/tmp".into(),
            container_path: "data".into(),
            readonly: false,
            propagation: Propagation::Private,
        });
        assert!(matches!(c.validate(), Err(Error::InvalidArgument(_))));
    }
}
