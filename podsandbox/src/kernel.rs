//! The seam between sandbox logic and the kernel: every mount, namespace and process operation a
//! sandbox needs, behind [`Kernel`]. [`Linux`] does them for real (root needed); [`Recording`]
//! only records them and makes plain files, so the lifecycle is unit-tested without root.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use crate::UserNamespace;
use crate::infra::{self, InfraCommand, InfraProcess};
use crate::sysctl::Sysctl;

/// New namespaces for a pod, each pinned at its path; `None` is the host's (nothing created).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceRequest {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// Set in the new UTS namespace.
    pub hostname: Option<String>,
    /// Written inside the new namespaces.
    pub sysctls: Vec<Sysctl>,
    /// A user namespace of the pod's own: made first, and the other new namespaces made inside
    /// it, so that they are its (its root may then set their sysctls, and mount sysfs).
    pub user: Option<UserRequest>,
}

/// A pod's user namespace: its id maps and the pin; the daemon is multi-threaded and so cannot
/// unshare one itself, a helper process (this binary's infra role) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRequest {
    pub pin: PathBuf,
    pub userns: UserNamespace,
    pub helper: InfraCommand,
}

pub trait Kernel: Send + Sync + std::fmt::Debug {
    /// Creates the requested namespaces, configures them (hostname, loopback up, sysctls) and
    /// pins each at its path. On error some pins may exist: [`Kernel::unpin`] removes them.
    fn create_namespaces(&self, req: &NamespaceRequest) -> io::Result<()>;
    /// Unmounts a pin or mount (lazily) and removes the file or directory; a path that is not
    /// mounted or does not exist is fine.
    fn unpin(&self, path: &Path) -> io::Result<()>;
    /// Mounts a tmpfs for `/dev/shm` at `path` (a directory it creates).
    fn mount_shm(&self, path: &Path, size: u64) -> io::Result<()>;
    /// Starts the infra process and pins its PID namespace at `pin`.
    fn start_infra(&self, cmd: &InfraCommand, pin: &Path) -> io::Result<InfraProcess>;
    fn stop_infra(&self, infra: &InfraProcess) -> io::Result<()>;
    /// The infra process whose PID namespace is pinned at `pin`, if one runs.
    fn find_infra(&self, _pin: &Path) -> Option<InfraProcess> {
        None
    }
    /// The host's name.
    fn hostname(&self) -> io::Result<String>;
    /// Removes an (empty) cgroup directory; a missing one is fine.
    fn remove_cgroup(&self, dir: &Path) -> io::Result<()>;
    /// `/proc/net/dev` as seen inside the network namespace pinned at `netns`.
    fn read_net_dev(&self, netns: &Path) -> io::Result<String>;
    /// [`Kernel::read_net_dev`] of each of `netns`, in order.
    fn read_net_devs(&self, netns: &[PathBuf]) -> Vec<io::Result<String>> {
        netns.iter().map(|ns| self.read_net_dev(ns)).collect()
    }
}

/// The real kernel.
#[derive(Debug, Default)]
pub struct Linux;

/// Bind-mounts a namespace file (or any file) onto `pin`, creating the pin file.
pub(crate) fn bind_pin(source: &Path, pin: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(pin)?;
    mount(
        Some(source),
        pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    Ok(())
}

impl Kernel for Linux {
    fn create_namespaces(&self, req: &NamespaceRequest) -> io::Result<()> {
        if let Some(user) = &req.user {
            return infra::create_in_userns(req, user);
        }
        let req = req.clone();
        // unshare() changes only the calling thread's net/IPC/UTS namespaces: a thread of its
        // own does it, pins them, and ends, so the daemon's threads never change namespace.
        std::thread::Builder::new()
            .name("carapace-pin".into())
            .spawn(move || configure_new_namespaces(&req))?
            .join()
            .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }

    fn unpin(&self, path: &Path) -> io::Result<()> {
        match umount2(path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point; ENOENT: gone already.
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let r = if path.is_dir() {
            std::fs::remove_dir(path)
        } else {
            std::fs::remove_file(path)
        };
        match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn mount_shm(&self, path: &Path, size: u64) -> io::Result<()> {
        std::fs::create_dir_all(path)?;
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(
            Some("shm"),
            path,
            Some("tmpfs"),
            flags,
            Some(format!("mode=1777,size={size}").as_str()),
        )?;
        Ok(())
    }

    fn start_infra(&self, cmd: &InfraCommand, pin: &Path) -> io::Result<InfraProcess> {
        infra::start(cmd, pin)
    }

    fn stop_infra(&self, infra: &InfraProcess) -> io::Result<()> {
        infra::stop(infra)
    }

    fn find_infra(&self, pin: &Path) -> Option<InfraProcess> {
        infra::find_by_pin(pin)
    }

    fn hostname(&self) -> io::Result<String> {
        Ok(nix::unistd::gethostname()?.to_string_lossy().into_owned())
    }

    fn remove_cgroup(&self, dir: &Path) -> io::Result<()> {
        match std::fs::remove_dir(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn read_net_dev(&self, netns: &Path) -> io::Result<String> {
        let ns = std::fs::File::open(netns)?;
        // setns() changes only the calling thread: a thread of its own enters, reads and ends.
        // `/proc/thread-self`, not `/proc/self`: the latter is the main thread's namespace.
        std::thread::Builder::new()
            .name("carapace-netstat".into())
            .spawn(move || {
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)?;
                std::fs::read_to_string("/proc/thread-self/net/dev")
            })?
            .join()
            .map_err(|_| io::Error::other("the netns reader thread panicked"))?
    }

    fn read_net_devs(&self, netns: &[PathBuf]) -> Vec<io::Result<String>> {
        // One thread goes from namespace to namespace: a thread per pod cost ListPodSandboxStats
        // 60 of its 95 ms with 250 pods. The thread ends in the last one it entered.
        let netns = netns.to_vec();
        let n = netns.len();
        let read = std::thread::Builder::new()
            .name("carapace-netstat".into())
            .spawn(move || {
                netns
                    .iter()
                    .map(|path| {
                        let ns = std::fs::File::open(path)?;
                        nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)?;
                        std::fs::read_to_string("/proc/thread-self/net/dev")
                    })
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string())
            .and_then(|t| {
                t.join()
                    .map_err(|_| "the netns reader thread panicked".to_owned())
            });
        match read {
            Ok(v) => v,
            Err(e) => (0..n).map(|_| Err(io::Error::other(e.clone()))).collect(),
        }
    }
}

/// Runs on the dedicated thread: unshare, configure, pin.
fn configure_new_namespaces(req: &NamespaceRequest) -> io::Result<()> {
    let mut flags = CloneFlags::empty();
    if req.net.is_some() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if req.ipc.is_some() {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if req.uts.is_some() {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    if flags.is_empty() {
        return Ok(());
    }
    unshare(flags)?;
    if let (Some(_), Some(h)) = (&req.uts, &req.hostname) {
        nix::unistd::sethostname(h)?;
    }
    if req.net.is_some() {
        crate::sys::loopback_up()?;
    }
    // /proc/sys resolves net and IPC settings in the namespaces of the thread that opens them.
    for s in &req.sysctls {
        let path = Path::new("/proc/sys").join(&s.path);
        std::fs::write(&path, &s.value)
            .map_err(|e| io::Error::new(e.kind(), format!("sysctl {}: {e}", path.display())))?;
    }
    let pins = [("net", &req.net), ("ipc", &req.ipc), ("uts", &req.uts)];
    for (kind, pin) in pins {
        if let Some(pin) = pin {
            bind_pin(&Path::new("/proc/thread-self/ns").join(kind), pin)?;
            carapace_crashpoint::hit_in("sandbox: namespace pinned", kind);
        }
    }
    Ok(())
}

/// A kernel that records what it is asked and makes plain files in place of mounts, for tests.
/// `fail_on` makes one operation fail, to test the undo of every step.
#[derive(Debug, Default)]
pub struct Recording {
    pub calls: Mutex<Vec<String>>,
    pub fail_on: Mutex<Option<&'static str>>,
    pub requests: Mutex<Vec<NamespaceRequest>>,
}

impl Recording {
    fn record(&self, op: &'static str, what: String) -> io::Result<()> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{op} {what}"));
        if *self.fail_on.lock().unwrap_or_else(|e| e.into_inner()) == Some(op) {
            return Err(io::Error::other(format!("injected failure of {op}")));
        }
        Ok(())
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Kernel for Recording {
    fn create_namespaces(&self, req: &NamespaceRequest) -> io::Result<()> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(req.clone());
        let user = req.user.as_ref().map(|u| &u.pin);
        for p in [&req.net, &req.ipc, &req.uts]
            .into_iter()
            .flatten()
            .chain(user)
        {
            std::fs::write(p, "")?;
        }
        self.record("create_namespaces", String::new())
    }
    fn unpin(&self, path: &Path) -> io::Result<()> {
        self.record("unpin", path.display().to_string())?;
        let r = if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        match r {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
    fn mount_shm(&self, path: &Path, _size: u64) -> io::Result<()> {
        std::fs::create_dir_all(path)?;
        self.record("mount_shm", path.display().to_string())
    }
    fn start_infra(&self, _cmd: &InfraCommand, pin: &Path) -> io::Result<InfraProcess> {
        self.record("start_infra", String::new())?;
        std::fs::write(pin, "")?;
        Ok(InfraProcess {
            pid: 1 << 22,
            start_time: 1,
            pid1: (1 << 22) + 1,
        })
    }
    fn stop_infra(&self, infra: &InfraProcess) -> io::Result<()> {
        self.record("stop_infra", infra.pid.to_string())
    }
    fn hostname(&self) -> io::Result<String> {
        Ok("node1".into())
    }
    fn read_net_dev(&self, netns: &Path) -> io::Result<String> {
        self.record("read_net_dev", netns.display().to_string())?;
        Ok("h1\nh2\n  eth0: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n".into())
    }
    fn remove_cgroup(&self, dir: &Path) -> io::Result<()> {
        self.record("remove_cgroup", dir.display().to_string())?;
        // As cgroupfs: a cgroup with child cgroups is busy (its own files go with it).
        let has_child = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().is_dir());
        if has_child {
            return Err(io::Error::from(io::ErrorKind::ResourceBusy));
        }
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
