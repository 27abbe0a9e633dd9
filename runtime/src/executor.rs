//! The built-in executor: from an OCI spec to a running process. In the monitor it forks the
//! container's init into the pod's namespaces and a new mount (and PID) namespace, mounts the
//! overlay root and everything the spec lists (targets resolved inside the root), pivots, masks
//! paths, then sets user, rlimits, capabilities (all five sets), no_new_privs and seccomp last, and
//! execs. In a pod with a user namespace the mounts are id-mapped through it and it is joined
//! last, after the mounts and rlimits, with the host's privileges used up to there. The exec
//! helper ([`exec_process`]) reuses the process half for ExecSync. It runs only in
//! single-threaded helper processes, never in the daemon.

use std::collections::BTreeSet;
use std::ffi::{CString, OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::{Mode, SFlag, fchmodat, fstat, makedev, mknodat, umask};
use nix::sys::statvfs::{FsFlags, fstatvfs};
use nix::unistd::{ForkResult, Gid, Pid, Uid, chdir, pipe2, pivot_root, symlinkat};
use oci_spec::runtime::{LinuxNamespaceType, Mount as OciMount, Process, Spec};

use crate::cgroup::ContainerCgroup;
use crate::error::{Context, Error, Result};
use crate::fsutil::{Kind, fd_path, mkdir_all_in_root};
use crate::seccomp;
use crate::sys;

/// The overlay that becomes the container's `/`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Overlay {
    pub lower_dirs: Vec<PathBuf>,
    pub upper_dir: PathBuf,
    pub work_dir: PathBuf,
}

/// mount(2) copies at most one page of options; longer ones (some 40 layers of
/// `<root>/snapshots/<64 hex>/fs`) must be shortened.
const MAX_MOUNT_DATA: usize = 4095;

/// `p` opened (O_PATH) and named by its `/proc/self/fd/N` path, the fd kept in `fds` for as long
/// as the path is used.
fn by_fd_path(p: &Path, fds: &mut Vec<OwnedFd>) -> Result<PathBuf> {
    let fd = open(
        p,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(format_args!("open {}", p.display()))?;
    let path = fd_path(&fd);
    fds.push(fd);
    Ok(path)
}

impl Overlay {
    /// Mounts the overlay at `target`. When the paths do not fit in one page of mount options, the
    /// directories are opened and named by their `/proc/self/fd/N` paths (17 bytes or so each).
    pub(crate) fn mount(&self, target: &Path) -> Result<()> {
        let mut options = self.options()?;
        let mut _fds = Vec::new();
        if options.len() > MAX_MOUNT_DATA {
            let mut short = |p: &Path| by_fd_path(p, &mut _fds);
            let by_fd = Overlay {
                lower_dirs: self
                    .lower_dirs
                    .iter()
                    .map(|p| short(p))
                    .collect::<Result<_>>()?,
                upper_dir: short(&self.upper_dir)?,
                work_dir: short(&self.work_dir)?,
            };
            options = by_fd.options()?;
            if options.len() > MAX_MOUNT_DATA {
                return Err(Error::InvalidArgument(format!(
                    "the image has too many layers ({}) for one overlay mount",
                    self.lower_dirs.len()
                )));
            }
        }
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .ctx("mount overlay rootfs")
    }

    /// [`Overlay::mount`] over id-mapped copies of its lower layers: each is a detached bind
    /// id-mapped through `userns`, named by its `/proc/self/fd/N` path, so the image's files,
    /// root's on disk, are the namespace root's, with no layer chowned. The upper dir, the
    /// container's own and empty until now, is given to `owner` (the namespace root's host ids)
    /// instead of being mapped too: overlayfs makes its work files as the mounter, the host's
    /// root, whom a mapped upper cannot represent (EOVERFLOW, and a read-only overlay). An
    /// overlay cannot be id-mapped itself here (6.18 refuses MOUNT_ATTR_IDMAP on one: EINVAL).
    pub(crate) fn mount_idmapped(
        &self,
        target: &Path,
        userns: &OwnedFd,
        owner: (u32, u32),
    ) -> Result<()> {
        let mapped = |p: &Path| -> Result<OwnedFd> {
            let at = open(
                p,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ctx(format_args!("open {}", p.display()))?;
            let tree = sys::clone_mount_tree_of(at.as_fd(), false)?;
            idmap(&tree, userns, false, &p.display().to_string())?;
            Ok(tree)
        };
        let lowers = self
            .lower_dirs
            .iter()
            .map(|p| mapped(p))
            .collect::<Result<Vec<_>>>()?;
        nix::unistd::chown(
            &self.upper_dir,
            Some(Uid::from_raw(owner.0)),
            Some(Gid::from_raw(owner.1)),
        )
        .ctx("chown the upper dir to the namespace's root")?;
        let by_fd = Overlay {
            lower_dirs: lowers.iter().map(fd_path).collect(),
            upper_dir: self.upper_dir.clone(),
            work_dir: self.work_dir.clone(),
        };
        let mut options = by_fd.options()?;
        let mut _fds = Vec::new();
        if options.len() > MAX_MOUNT_DATA {
            let mut short = |p: &Path| by_fd_path(p, &mut _fds);
            let shorter = Overlay {
                upper_dir: short(&self.upper_dir)?,
                work_dir: short(&self.work_dir)?,
                ..by_fd
            };
            options = shorter.options()?;
        }
        if options.len() > MAX_MOUNT_DATA {
            return Err(Error::InvalidArgument(format!(
                "the image has too many layers ({}) for one overlay mount",
                self.lower_dirs.len()
            )));
        }
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .ctx("mount the overlay of id-mapped layers")
    }

    fn options(&self) -> Result<String> {
        let bad = |p: &Path| {
            let s = p.to_string_lossy();
            s.contains(',') || s.contains(':') || s.contains('\\')
        };
        let all = self
            .lower_dirs
            .iter()
            .chain([&self.upper_dir, &self.work_dir]);
        if let Some(p) = all.clone().find(|p| bad(p)) {
            return Err(Error::InvalidArgument(format!(
                "overlay path {} has a character overlayfs cannot take",
                p.display()
            )));
        }
        let lower: Vec<String> = self
            .lower_dirs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        Ok(format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            self.upper_dir.display(),
            self.work_dir.display()
        ))
    }
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Time => CloneFlags::empty(),
    }
}

/// The environment variable naming the fd (inherited by a sealed helper) of the mount namespace
/// the daemon runs in.
pub(crate) const HOST_MNTNS_ENV: &str = "_CARAPACE_HOST_MNTNS_FD";

/// The daemon's mount namespace, when this helper was started with it (see `HOST_MNTNS_ENV`).
/// Reopened by its /proc path: the inherited fd number stays as it is, closed before exec.
pub(crate) fn host_mount_ns() -> Option<OwnedFd> {
    let fd: u32 = std::env::var(HOST_MNTNS_ENV).ok()?.parse().ok()?;
    open_ro(Path::new(&format!("/proc/self/fd/{fd}"))).ok()
}

/// Whether a bind mount asks for bidirectional propagation (`rshared`/`shared` in its options).
fn is_bidirectional(m: &OciMount) -> bool {
    let (flags, prop, _) = parse_options(m.options().as_deref().unwrap_or_default());
    (flags.contains(MsFlags::MS_BIND) || m.typ().as_deref() == Some("bind"))
        && prop.contains(MsFlags::MS_SHARED)
}

fn open_ro(path: &Path) -> Result<OwnedFd> {
    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(format_args!("open {}", path.display()))
}

/// The init's stdio, made by the monitor, which keeps the other ends.
pub(crate) enum InitStdio {
    /// The read end of a stdin pipe (`None`: /dev/null) and the write ends of the output pipes.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// The slave of the monitor's pty: stdin, stdout, stderr and controlling terminal.
    Terminal(OwnedFd),
}

impl InitStdio {
    /// In the child: installs the fds as 0, 1 and 2.
    fn install(self) -> Result<()> {
        match self {
            InitStdio::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                let stdin = match stdin {
                    Some(fd) => fd,
                    None => open(Path::new("/dev/null"), OFlag::O_RDWR, Mode::empty())
                        .ctx("open /dev/null")?,
                };
                nix::unistd::dup2_stdin(&stdin).ctx("stdin")?;
                nix::unistd::dup2_stdout(&stdout).ctx("stdout")?;
                nix::unistd::dup2_stderr(&stderr).ctx("stderr")?;
                Ok(())
            }
            InitStdio::Terminal(slave) => crate::terminal::become_session_on(&slave),
        }
    }
}

/// Starts the container's init; returns its pid once it has exec'd (or the error that stopped it).
pub(crate) fn spawn_init(
    spec: &Spec,
    overlay: &Overlay,
    cgroup: &ContainerCgroup,
    stdio: InitStdio,
) -> Result<Pid> {
    // Before any namespace is joined, and inherited by the init: not dumpable until it execs,
    // so a process of the pod's shared PID namespace cannot read it through /proc or ptrace it
    // while it still holds the host's fds (see `monitor::helper_main`, which sets it already).
    nix::sys::prctl::set_dumpable(false).ctx("PR_SET_DUMPABLE")?;
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("spec has no linux section".into()))?;
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    // A PID namespace applies to children: join or create it here, before fork.
    if let Some(pid_ns) = namespaces
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Pid)
    {
        match pid_ns.path() {
            Some(p) => {
                let ns = open_ro(p)?;
                // Another container's `/proc/<pid>/ns/pid`: the pid may have been reused since
                // create, so the namespace must still be the one recorded then.
                let want = crate::config::pid_namespace_identity(spec.annotations().as_ref())?;
                let st = nix::sys::stat::fstat(&ns).ctx("stat the pid namespace")?;
                if want.is_some_and(|w| w != (st.st_dev, st.st_ino)) {
                    return Err(Error::FailedPrecondition(format!(
                        "{} is no longer the PID namespace the container was created to join \
                         (the target container's process exited)",
                        p.display()
                    )));
                }
                setns(ns, CloneFlags::CLONE_NEWPID).ctx("join pid namespace")?
            }
            None => unshare(CloneFlags::CLONE_NEWPID).ctx("new pid namespace")?,
        }
    }
    let join = cgroup.join_files();
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).ctx("pipe")?;
    match sys::fork_single_threaded()? {
        ForkResult::Child => {
            drop(err_r);
            let mut err_w = std::fs::File::from(err_w);
            let result = (|| -> Result<std::convert::Infallible> {
                // In the cgroup before anything else.
                crate::cgroup::join_self(&join)?;
                // The monitor blocks signals it takes through a signalfd; the mask survives exec.
                nix::sys::signal::SigSet::empty()
                    .thread_set_mask()
                    .ctx("clear the signal mask")?;
                stdio.install()?;
                init_container(spec, overlay, cgroup)
            })();
            let Err(e) = result;
            let _ = err_w.write_all(e.to_string().as_bytes());
            std::process::exit(127);
        }
        ForkResult::Parent { child } => {
            drop((err_w, stdio));
            let mut msg = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
            if !msg.is_empty() {
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(Error::FailedPrecondition(format!("container init: {msg}")));
            }
            Ok(child)
        }
    }
}

/// Everything the init does between fork and exec. Returns only on error.
fn init_container(
    spec: &Spec,
    overlay: &Overlay,
    cgroup: &ContainerCgroup,
) -> Result<std::convert::Infallible> {
    let linux = spec.linux().clone().unwrap_or_default();
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    // The pod's user namespace is joined last, just before the process half: everything up to
    // there (mounts, the pod's namespaces, cgroup files) is done with the host's privileges, and
    // the root and the binds are id-mapped through it. Opened now, while the host's paths are ours.
    let userns = namespaces
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::User)
        .and_then(|n| n.path().as_ref())
        .map(|p| open_ro(p))
        .transpose()?;
    // Start from the daemon's mount namespace when this helper sealed itself into a private one
    // (a slave copy, see `monitor::seal_exe`): our copies of the daemon's shared mounts must be
    // peers of the host's, which Bidirectional volumes need.
    if let Some(ns) = host_mount_ns() {
        setns(ns, CloneFlags::CLONE_NEWNS).ctx("join the daemon's mount namespace")?;
    }
    let mut new = CloneFlags::empty();
    for ns in &namespaces {
        let t = ns.typ();
        if t == LinuxNamespaceType::Pid || t == LinuxNamespaceType::User {
            continue;
        }
        match ns.path() {
            Some(p) => setns(open_ro(p)?, ns_flag(t)).ctx(format_args!("join {t} namespace"))?,
            None => new |= ns_flag(t),
        }
    }
    unshare(new | CloneFlags::CLONE_NEWNS).ctx("unshare")?;
    // Cloned while our copies of the host's shared mounts are still their peers, and in the
    // namespace they will be attached in (the kernel refuses trees cloned elsewhere).
    let mut trees = std::collections::HashMap::new();
    for m in spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| is_bidirectional(m))
    {
        let source = m.source().clone().unwrap_or_default();
        let tree = sys::clone_mount_tree(&source)
            .map_err(|e| Error::Internal(format!("mount {}: {e}", m.destination().display())))?;
        if let Some(ns) = &userns {
            idmap(&tree, ns, true, &m.destination().to_string_lossy())?;
        }
        trees.insert(m.destination().clone(), tree);
    }
    // Nothing we mount from here on may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .ctx("make / rslave")?;
    umask(Mode::from_bits_truncate(0o022));

    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| Error::InvalidArgument("spec has no root".into()))?;
    match &userns {
        Some(ns) => overlay.mount_idmapped(&root, ns, namespace_root(&linux)?)?,
        None => overlay.mount(&root)?,
    }
    let root_fd = open(
        &root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx("open rootfs")?;

    // In a user namespace the kernel filesystems made for the container are its root's, as they
    // would be had it mounted them: `/dev` is root's to write in, `/dev/pts`'s tty group its own.
    let remapped;
    let mounts: &[OciMount] = match &userns {
        Some(_) => {
            remapped = owned_by_namespace(spec.mounts().as_deref().unwrap_or_default(), &linux)?;
            &remapped
        }
        None => spec.mounts().as_deref().unwrap_or_default(),
    };
    for m in mounts {
        mount_one(
            &root_fd,
            &root,
            m,
            cgroup,
            trees.remove(m.destination()),
            userns.as_ref(),
        )
        .map_err(|e| Error::Internal(format!("mount {}: {e}", m.destination().display())))?;
    }
    for d in linux.devices().iter().flatten() {
        make_device(&root_fd, d)?;
    }

    chdir(&root).ctx("chdir rootfs")?;
    pivot_root(".", ".").ctx("pivot_root")?;
    umount2(".", MntFlags::MNT_DETACH).ctx("detach old root")?;
    chdir("/").ctx("chdir /")?;
    // The root's own propagation (rslave, or rshared with a Bidirectional volume), applied once it
    // is `/`, as runc does.
    if let Some(p) = linux.rootfs_propagation() {
        let (_, prop, _) = parse_options(std::slice::from_ref(p));
        if !prop.is_empty() {
            mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
                .ctx(format_args!("make / {p}"))?;
        }
    }

    let new_root = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx("open /")?;
    // Read-only first, as runc does: a mask bound from inside a read-only path is read-only too.
    for p in linux.readonly_paths().iter().flatten() {
        readonly_path(&new_root, p)?;
    }
    let masked = linux.masked_paths().clone().unwrap_or_default();
    if !masked.is_empty() {
        let null = open_dev_null(&new_root)?;
        for p in &masked {
            mask_path(&new_root, p, &null)?;
        }
    }
    let new_uts = namespaces
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Uts && n.path().is_none());
    if let (true, Some(h)) = (new_uts, spec.hostname()) {
        nix::unistd::sethostname(h).ctx("sethostname")?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        remount_bind(&new_root, MsFlags::MS_RDONLY).ctx("remount / read-only")?;
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidArgument("spec has no process".into()))?;
    let join = userns.map(|ns| JoinUserns {
        ns,
        own_mount_ns: true,
    });
    let env = crate::spec::process_env(spec)?;
    exec_process(process, &env, linux.seccomp().as_ref(), join)
}

/// The host uid and gid of the user namespace's root, from the spec's maps.
fn namespace_root(linux: &oci_spec::runtime::Linux) -> Result<(u32, u32)> {
    let root = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        m.iter()
            .flatten()
            .find(|m| m.container_id() == 0 && m.size() > 0)
            .map(|m| m.host_id())
    };
    root(linux.uid_mappings())
        .zip(root(linux.gid_mappings()))
        .ok_or_else(|| {
            Error::InvalidArgument("a user namespace without a mapping for its root".into())
        })
}

/// `id` inside the namespace, as the host numbers it.
fn host_id(maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>, id: u32) -> Option<u32> {
    maps.iter().flatten().find_map(|m| {
        let off = id.checked_sub(m.container_id())?;
        (off < m.size())
            .then(|| m.host_id().checked_add(off))
            .flatten()
    })
}

/// `mounts` with the tmpfs and devpts ones owned by the user namespace's root: their `uid=`
/// and `gid=` options translated to host ids, and a tmpfs without them given the root's.
fn owned_by_namespace(
    mounts: &[OciMount],
    linux: &oci_spec::runtime::Linux,
) -> Result<Vec<OciMount>> {
    let (uid, gid) = namespace_root(linux)?;
    mounts
        .iter()
        .map(|m| {
            let typ = m.typ().as_deref().unwrap_or_default();
            if typ != "tmpfs" && typ != "devpts" {
                return Ok(m.clone());
            }
            let mut options = Vec::new();
            for o in m.options().iter().flatten() {
                let translated = match o.split_once('=') {
                    Some(("uid", n)) => Some(("uid", host_id(linux.uid_mappings(), parse_id(n)?))),
                    Some(("gid", n)) => Some(("gid", host_id(linux.gid_mappings(), parse_id(n)?))),
                    _ => None,
                };
                match translated {
                    Some((k, Some(id))) => options.push(format!("{k}={id}")),
                    Some((k, None)) => {
                        return Err(Error::InvalidArgument(format!(
                            "mount {}: {o} is not mapped in the user namespace ({k})",
                            m.destination().display()
                        )));
                    }
                    None => options.push(o.clone()),
                }
            }
            if typ == "tmpfs" {
                for (k, id) in [("uid", uid), ("gid", gid)] {
                    if !options.iter().any(|o| o.starts_with(&format!("{k}="))) {
                        options.push(format!("{k}={id}"));
                    }
                }
            }
            let mut m = m.clone();
            m.set_options(Some(options));
            Ok(m)
        })
        .collect()
}

fn parse_id(n: &str) -> Result<u32> {
    n.parse()
        .map_err(|_| Error::InvalidArgument(format!("mount option id {n:?}")))
}

/// Id-maps the detached tree `tree` through `userns`, saying which mount could not be.
fn idmap(tree: &OwnedFd, userns: &OwnedFd, recursive: bool, what: &str) -> Result<()> {
    sys::idmap_tree(tree.as_fd(), userns.as_fd(), recursive).map_err(|e| {
        Error::FailedPrecondition(format!(
            "id-mapping {what} for the pod's user namespace: {e} (its filesystem may not \
             support id-mapped mounts)"
        ))
    })
}

/// Mount flags and the data string from OCI mount options.
fn parse_options(options: &[String]) -> (MsFlags, MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut prop = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => {}
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "private" => prop = MsFlags::MS_PRIVATE,
            "rprivate" => prop = MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            "slave" => prop = MsFlags::MS_SLAVE,
            "rslave" => prop = MsFlags::MS_SLAVE | MsFlags::MS_REC,
            "shared" => prop = MsFlags::MS_SHARED,
            "rshared" => prop = MsFlags::MS_SHARED | MsFlags::MS_REC,
            // Not a mount(2) flag: see `mount_one`.
            "suid" | "dev" | "exec" | "atime" | "rro" => {}
            other => data.push(other.to_string()),
        }
    }
    (flags, prop, data)
}

/// Mounts `m` inside `root` (open at `root_path`); a bind whose source was cloned in the daemon's
/// namespace (`tree`) attaches that clone instead of binding the source anew.
fn mount_one(
    root: &OwnedFd,
    root_path: &Path,
    m: &OciMount,
    cgroup: &ContainerCgroup,
    tree: Option<OwnedFd>,
    userns: Option<&OwnedFd>,
) -> Result<()> {
    let dest = m.destination().to_string_lossy().to_string();
    let typ = m.typ().clone().unwrap_or_default();
    if typ == crate::image_volume::TYPE {
        let (tree, kind) = crate::image_volume::tree(m, root_path)?;
        let target = mkdir_all_in_root(root, &dest, kind)?;
        refuse_proc(&target, &dest)?;
        return sys::attach_mount_tree(&tree, &target);
    }
    let (flags, prop, data) = parse_options(m.options().as_deref().unwrap_or_default());
    if typ == "cgroup" {
        return mount_cgroup(root, &dest, cgroup, flags);
    }
    let is_bind = flags.contains(MsFlags::MS_BIND) || typ == "bind";
    let recursive_ro = m.options().iter().flatten().any(|o| o == "rro");
    if recursive_ro && !is_bind {
        return Err(Error::InvalidArgument(format!(
            "mount {dest}: rro applies to bind mounts only"
        )));
    }
    let source = m.source().clone().unwrap_or_default();
    let kind = if is_bind && !source.is_dir() {
        Kind::File
    } else {
        Kind::Dir
    };
    if is_bind && !source.exists() {
        return Err(Error::NotFound(format!(
            "mount source {}",
            source.display()
        )));
    }
    let target = mkdir_all_in_root(root, &dest, kind)?;
    if typ != "proc" {
        refuse_proc(&target, &dest)?;
    }
    let data = data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());
    if is_bind {
        // A detached copy attached onto the target fd: once attached, `tree` names the new mount
        // itself, so the read-only remount and the propagation below reach exactly it. Looking
        // `dest` up again instead would let a container sharing a volume swap the path for a
        // symlink in between and have another mount remounted (CVE-2021-30465).
        let tree = match tree {
            Some(tree) => tree,
            None => {
                let src = open(&source, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                    .ctx(format_args!("open {}", source.display()))?;
                let recursive = flags.contains(MsFlags::MS_REC);
                let tree = sys::clone_mount_tree_of(src.as_fd(), recursive)?;
                if let Some(ns) = userns {
                    idmap(&tree, ns, recursive, &dest)?;
                }
                tree
            }
        };
        sys::attach_mount_tree(&tree, &target)?;
        let extra = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !extra.is_empty() {
            remount_bind(&tree, extra).ctx("remount bind")?;
        }
        if recursive_ro {
            sys::make_tree_readonly(tree.as_fd())?;
        }
        if !prop.is_empty() {
            mount(
                None::<&str>,
                &fd_path(&tree),
                None::<&str>,
                prop,
                None::<&str>,
            )
            .ctx("propagation")?;
        }
        return Ok(());
    }
    mount(
        Some(&source),
        &fd_path(&target),
        Some(typ.as_str()),
        flags,
        data,
    )
    .ctx(&typ)?;
    if dest == "/dev" {
        let dev = mkdir_all_in_root(root, "/dev", Kind::Dir)?;
        let dev = open(
            &fd_path(&dev),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx("open /dev")?;
        make_devices(&dev)?;
    }
    Ok(())
}

/// The destination's text was checked against /proc at create; an image's symlink (`/foo` ->
/// `/proc`) can still lead there, so the resolved target is checked too, as runc does.
fn refuse_proc(target: &OwnedFd, dest: &str) -> Result<()> {
    if nix::sys::statfs::fstatfs(target)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
        && !crate::config::PROC_MOUNTABLE.contains(&dest)
    {
        return Err(Error::InvalidArgument(format!(
            "mount destination {dest} resolves into /proc"
        )));
    }
    Ok(())
}

/// The default device nodes every container gets, and the usual /dev symlinks.
fn make_devices(dev: &OwnedFd) -> Result<()> {
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        mknodat(
            dev.as_fd(),
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .ctx(format_args!("mknod /dev/{name}"))?;
        fchmodat(
            dev.as_fd(),
            name,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .ctx(format_args!("chmod /dev/{name}"))?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        symlinkat(target, dev.as_fd(), link).ctx(format_args!("symlink /dev/{link}"))?;
    }
    Ok(())
}

/// A device the request gave the container (the spec's `linux.devices`), made inside the root
/// with the host node's mode and owner. Its cgroup rule allows exactly this one device.
fn make_device(root: &OwnedFd, d: &oci_spec::runtime::LinuxDevice) -> Result<()> {
    let path = d.path().to_string_lossy();
    let (parent, name) = path
        .rsplit_once('/')
        .filter(|(_, n)| !n.is_empty() && *n != "." && *n != "..")
        .ok_or_else(|| Error::InvalidArgument(format!("device path {path}")))?;
    let dir = mkdir_all_in_root(
        root,
        if parent.is_empty() { "/" } else { parent },
        Kind::Dir,
    )?;
    let dir = open(
        &fd_path(&dir),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(format_args!("open the directory of {path}"))?;
    let kind = match d.typ() {
        oci_spec::runtime::LinuxDeviceType::B => SFlag::S_IFBLK,
        oci_spec::runtime::LinuxDeviceType::C | oci_spec::runtime::LinuxDeviceType::U => {
            SFlag::S_IFCHR
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "device {path} has type {}",
                other.as_str()
            )));
        }
    };
    let mode = Mode::from_bits_truncate(d.file_mode().unwrap_or(0o600));
    let dev = makedev(d.major() as u64, d.minor() as u64);
    // A file the image put there is replaced, as runc does.
    let _ = nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    mknodat(dir.as_fd(), name, kind, mode, dev).ctx(format_args!("mknod {path}"))?;
    // Owner and mode through an fd of the node just checked to be ours: the directory may be a
    // volume another container shares, and a name swapped for a symlink would be followed
    // against the host's root (we have not pivoted yet).
    let node = nix::fcntl::openat(
        &dir,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(format_args!("open {path}"))?;
    let st = nix::sys::stat::fstat(&node).ctx(format_args!("stat {path}"))?;
    if st.st_mode & libc::S_IFMT != kind.bits() || st.st_rdev != dev {
        return Err(Error::FailedPrecondition(format!(
            "device {path} was replaced while it was made"
        )));
    }
    nix::unistd::fchownat(
        &node,
        "",
        d.uid().map(Uid::from_raw),
        d.gid().map(Gid::from_raw),
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .ctx(format_args!("chown {path}"))?;
    // mknod's mode went through the umask; /proc/self/fd/N of an O_PATH fd is the node itself.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        &fd_path(&node),
        mode,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .ctx(format_args!("chmod {path}"))
}

/// The cgroup filesystem, read-only and showing only this container's own cgroup: on v1 a tmpfs
/// with each controller's directory bound in; on v2 the container's directory itself.
fn mount_cgroup(
    root: &OwnedFd,
    dest: &str,
    cgroup: &ContainerCgroup,
    flags: MsFlags,
) -> Result<()> {
    let target = mkdir_all_in_root(root, dest, Kind::Dir)?;
    let ro = flags & MsFlags::MS_RDONLY;
    let bind_ro = |src: &Path, fd: &OwnedFd| -> Result<()> {
        mount(
            Some(src),
            &fd_path(fd),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx("bind cgroup")?;
        Ok(())
    };
    if ContainerCgroup::is_v2() {
        let dir = cgroup
            .dirs()
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("no cgroup dir".into()))?;
        bind_ro(&dir, &target)?;
    } else {
        mount(
            Some("tmpfs"),
            &fd_path(&target),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        )
        .ctx("cgroup tmpfs")?;
        for dir in cgroup.dirs() {
            // .../<mountpoint>/<cgroup path>: the controller is the mountpoint's last component.
            let rel = Path::new(cgroup.path());
            let Some(mountpoint) = dir.ancestors().nth(rel.components().count()) else {
                continue;
            };
            let Some(name) = mountpoint.file_name() else {
                continue;
            };
            let sub = format!("{dest}/{}", name.to_string_lossy());
            let fd = mkdir_all_in_root(root, &sub, Kind::Dir)?;
            bind_ro(&dir, &fd)?;
            let fd = mkdir_all_in_root(root, &sub, Kind::Dir)?;
            mount(
                None::<&str>,
                &fd_path(&fd),
                None::<&str>,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .ctx("remount cgroup read-only")?;
        }
    }
    let target = mkdir_all_in_root(root, dest, Kind::Dir)?;
    mount(
        None::<&str>,
        &fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | ro
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .ctx("remount cgroup")?;
    Ok(())
}

/// The mount flags a bind remount must repeat to keep them: `MS_BIND | MS_REMOUNT` sets nosuid,
/// nodev, noexec and the atime mode to exactly what it is given, so a plain read-only remount
/// would silently drop a volume's nosuid or nodev.
const KEPT_FLAGS: [(FsFlags, MsFlags); 6] = [
    (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
    (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
    (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
    (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
    (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
];

/// Remounts the mount whose root is open at `mnt` (through its fd, never a path) with `add` on
/// top of the flags it has.
fn remount_bind(mnt: &OwnedFd, add: MsFlags) -> nix::Result<()> {
    let has = fstatvfs(mnt)?.flags();
    let mut keep = KEPT_FLAGS
        .iter()
        .filter(|(st, _)| has.contains(*st))
        .fold(MsFlags::empty(), |f, (_, ms)| f | *ms);
    let atime = MsFlags::MS_NOATIME | MsFlags::MS_RELATIME | MsFlags::MS_STRICTATIME;
    if add.intersects(atime) {
        keep &= !atime;
    } else if !keep.intersects(atime) {
        // statvfs has no flag for strictatime: it is the mode when neither of the others is set.
        keep |= MsFlags::MS_STRICTATIME;
    }
    mount(
        None::<&str>,
        &fd_path(mnt),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | keep | add,
        None::<&str>,
    )
}

/// Opens (`O_PATH`) a masked or read-only path of the running container, `None` when it does not
/// exist. Resolved from the container's `/` without magic links (`/proc/<pid>/root` and the like
/// lead into other mount namespaces); the mount then goes onto this exact inode.
fn open_in_container(root: &OwnedFd, p: &str) -> Result<Option<OwnedFd>> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(root.as_fd(), p.trim_start_matches('/'), how) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(Error::Internal(format!("open {p}: {}", e.desc()))),
    }
}

/// The container's `/dev/null`, opened once for every masked file and checked to be the null
/// device (1:3). With `/dev` a volume it is whatever the volume holds: a symlink planted there
/// (`null -> /proc/sys/kernel/core_pattern`) would otherwise turn each mask into a writable bind
/// of the host's sysctl (CVE-2025-31133).
fn open_dev_null(root: &OwnedFd) -> Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let null = openat2(root.as_fd(), "dev/null", how).map_err(|e| {
        Error::FailedPrecondition(format!(
            "masked paths need the container's /dev/null: {}",
            e.desc()
        ))
    })?;
    let st = fstat(&null).ctx("stat /dev/null")?;
    let is_char = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFCHR;
    if !is_char || st.st_rdev != makedev(1, 3) {
        return Err(Error::FailedPrecondition(
            "the container's /dev/null is not the null device (1:3); refusing to mask paths with it"
                .into(),
        ));
    }
    Ok(null)
}

/// Hides `p`: a read-only tmpfs over a directory, the checked null device over anything else.
fn mask_path(root: &OwnedFd, p: &str, null: &OwnedFd) -> Result<()> {
    let Some(target) = open_in_container(root, p)? else {
        return Ok(());
    };
    let st = fstat(&target).ctx(format_args!("stat {p}"))?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
    let r = if is_dir {
        mount(
            Some("tmpfs"),
            &fd_path(&target),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some(&fd_path(null)),
            &fd_path(&target),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    r.ctx(format_args!("mask {p}"))
}

/// Binds `p` onto itself and makes the new mount read-only, keeping its other flags.
fn readonly_path(root: &OwnedFd, p: &str) -> Result<()> {
    let Some(target) = open_in_container(root, p)? else {
        return Ok(());
    };
    let tree = sys::clone_mount_tree_of(target.as_fd(), true)?;
    sys::attach_mount_tree(&tree, &target)?;
    remount_bind(&tree, MsFlags::MS_RDONLY).ctx(format_args!("remount {p} read-only"))
}

/// Writes the OOM score, clamped: without CAP_SYS_RESOURCE a lower score than the current one is
/// refused by the kernel, so we keep the current one instead of failing the container.
fn set_oom_score_adj(adj: i32) -> Result<()> {
    let path = "/proc/self/oom_score_adj";
    match std::fs::write(path, adj.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => Ok(()),
        Err(e) => Err(Error::internal("write oom_score_adj", e)),
    }
}

fn rlimit_resource(kind: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource::*;
    Some(match kind {
        "RLIMIT_AS" => RLIMIT_AS,
        "RLIMIT_CORE" => RLIMIT_CORE,
        "RLIMIT_CPU" => RLIMIT_CPU,
        "RLIMIT_DATA" => RLIMIT_DATA,
        "RLIMIT_FSIZE" => RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => RLIMIT_NICE,
        "RLIMIT_NOFILE" => RLIMIT_NOFILE,
        "RLIMIT_NPROC" => RLIMIT_NPROC,
        "RLIMIT_RSS" => RLIMIT_RSS,
        "RLIMIT_RTPRIO" => RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => RLIMIT_STACK,
        _ => return None,
    })
}

fn cap_set<'a>(
    names: impl IntoIterator<Item = &'a oci_spec::runtime::Capability>,
    bounding_now: &caps::CapsHashSet,
) -> caps::CapsHashSet {
    names
        .into_iter()
        .filter_map(crate::capabilities::kernel_cap)
        // What the host's bounding set lacks cannot be granted (e.g. CAP_SYS_RESOURCE here).
        .filter(|c| bounding_now.contains(c))
        .collect()
}

/// The pod's user namespace for [`exec_process`] to join; `own_mount_ns` (the init's, not an
/// exec's) then moves to a copy of the mount namespace owned by it.
pub(crate) struct JoinUserns {
    pub ns: OwnedFd,
    pub own_mount_ns: bool,
}

/// The process half, shared by the container's init and ExecSync: OOM score, rlimits, user and
/// groups, capabilities, cwd (checked inside the root), no_new_privs, seccomp last, exec.
/// `env` is the process's environment ([`crate::spec::process_env`]), not `process.env`, which
/// lacks the entries that are not UTF-8.
/// `userns`, the pod's user namespace, is joined after the OOM score and rlimits (which the
/// host's capabilities may set lower or higher than its root could) and before the rest: the
/// user, groups and capabilities are then those of the namespace.
pub(crate) fn exec_process(
    process: &Process,
    env: &[OsString],
    seccomp_profile: Option<&oci_spec::runtime::LinuxSeccomp>,
    userns: Option<JoinUserns>,
) -> Result<std::convert::Infallible> {
    if let Some(adj) = process.oom_score_adj() {
        set_oom_score_adj(adj)?;
    }
    for r in process.rlimits().iter().flatten() {
        let kind = serde_json::to_value(r.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let res = rlimit_resource(&kind)
            .ok_or_else(|| Error::InvalidArgument(format!("rlimit {kind}")))?;
        nix::sys::resource::setrlimit(res, r.soft(), r.hard())
            .ctx(format_args!("setrlimit {kind}"))?;
    }
    if let Some(join) = userns {
        setns(join.ns, CloneFlags::CLONE_NEWUSER).ctx("join the pod's user namespace")?;
        if join.own_mount_ns {
            // A copy of the mounts made above in a mount namespace the user namespace owns, as
            // runc's would be: its root may mount there (as without one it may in its own), and
            // every mount made above is locked to it, none can be taken off to look beneath.
            unshare(CloneFlags::CLONE_NEWNS).ctx("a mount namespace of the user namespace")?;
        }
    }
    let filter = seccomp_profile.map(seccomp::compile).transpose()?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while we still have it.
    // The default profile allows every syscall the rest of the setup makes.
    if let (false, Some(f)) = (nnp, &filter) {
        sys::install_seccomp(f)?;
    }

    let bounding_now =
        caps::read(None, caps::CapSet::Bounding).map_err(|e| Error::internal("read caps", e))?;
    let c = process.capabilities().clone().unwrap_or_default();
    let bounding = cap_set(c.bounding().iter().flatten(), &bounding_now);
    for cap in bounding_now.difference(&bounding) {
        caps::drop(None, caps::CapSet::Bounding, *cap)
            .map_err(|e| Error::internal("drop bounding cap", e))?;
    }
    let user = process.user();
    nix::sys::prctl::set_keepcaps(true).ctx("keep caps")?;
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).ctx("setgroups")?;
    let (gid, uid) = (Gid::from_raw(user.gid()), Uid::from_raw(user.uid()));
    nix::unistd::setresgid(gid, gid, gid).ctx("setresgid")?;
    nix::unistd::setresuid(uid, uid, uid).ctx("setresuid")?;
    nix::sys::prctl::set_keepcaps(false).ctx("clear keep caps")?;
    // All five sets, explicitly. Effective must stay within permitted at every capset(2): shrink
    // effective first (still within the old permitted), then permitted, then the others.
    let set = |which, s: &caps::CapsHashSet| {
        caps::set(None, which, s)
            .map_err(|e| Error::internal(format_args!("set {which:?} caps"), e))
    };
    let effective = cap_set(c.effective().iter().flatten(), &bounding_now);
    let permitted = cap_set(c.permitted().iter().flatten(), &bounding_now);
    set(
        caps::CapSet::Effective,
        &effective.intersection(&permitted).copied().collect(),
    )?;
    set(caps::CapSet::Permitted, &permitted)?;
    set(
        caps::CapSet::Inheritable,
        &cap_set(c.inheritable().iter().flatten(), &bounding_now),
    )?;
    set(
        caps::CapSet::Ambient,
        &cap_set(c.ambient().iter().flatten(), &bounding_now),
    )?;

    chdir(process.cwd()).ctx(format_args!("chdir {}", process.cwd().display()))?;
    // CVE-2024-21626: a cwd reached through a leaked fd is outside the root; getcwd then does not
    // return an absolute path.
    // ENOENT is what getcwd says for a directory not reachable from the root.
    let cwd = match nix::unistd::getcwd() {
        Err(Errno::ENOENT) => PathBuf::from("(unreachable)"),
        r => r.ctx("getcwd")?,
    };
    if !cwd.is_absolute() || cwd.to_string_lossy().starts_with("(unreachable)") {
        return Err(Error::FailedPrecondition(
            "working directory is outside the container".into(),
        ));
    }
    let envp: Vec<CString> = env
        .iter()
        .filter_map(|e| CString::new(e.as_bytes()).ok())
        .collect();
    let args: Vec<CString> = process
        .args()
        .iter()
        .flatten()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::InvalidArgument("NUL in args".into()))?;
    let argv0 = args
        .first()
        .ok_or_else(|| Error::InvalidArgument("no args".into()))?;
    let path = lookup(argv0.to_str().unwrap_or_default(), env)?;

    sys::cloexec_from_3()?;
    sys::default_ignored_signals();
    if nnp {
        nix::sys::prctl::set_no_new_privs().ctx("no_new_privs")?;
    }
    if let (true, Some(f)) = (nnp, &filter) {
        sys::install_seccomp(f)?;
    }
    let err = nix::unistd::execve(&path, &args, &envp).unwrap_err();
    Err(Error::FailedPrecondition(format!(
        "exec {}: {}",
        path.to_string_lossy(),
        err.desc()
    )))
}

/// `argv[0]` as execvp finds it, in the container's `PATH`.
fn lookup(arg0: &str, env: &[OsString]) -> Result<CString> {
    let cstr = |p: &[u8]| CString::new(p).map_err(|_| Error::InvalidArgument("NUL in path".into()));
    if arg0.contains('/') {
        return cstr(arg0.as_bytes());
    }
    // Bytes: a PATH need not be UTF-8 any more than the directories it names.
    let path = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(|&b| b == b':').filter(|d| !d.is_empty()) {
        let candidate = [dir, b"/", arg0.as_bytes()].concat();
        let candidate = Path::new(OsStr::from_bytes(&candidate));
        if nix::unistd::access(candidate, nix::unistd::AccessFlags::X_OK).is_ok()
            && !candidate.is_dir()
        {
            return cstr(candidate.as_os_str().as_bytes());
        }
    }
    Err(Error::NotFound(format!("executable {arg0:?} in $PATH")))
}

/// For ExecSync: enter every namespace of the container's init and its cgroup, then fork the
/// command, which runs `exec_process` with the container's profile. Returns the child's pid.
/// `init` is the init's `/proc/<pid>` directory, checked to be the init's
/// ([`crate::monitor::Started::open_init`]): opened through it, the namespaces are the init's or
/// the open fails, never those of a process that took over its pid.
/// With `tty` the helper's stdin is the slave of a pty: the command gets it as its controlling
/// terminal in a session of its own.
pub(crate) fn spawn_in_container(
    init: &OwnedFd,
    spec: &Spec,
    process: &Process,
    cgroup: &ContainerCgroup,
    tty: bool,
) -> Result<Pid> {
    // Before joining anything, inherited by the command until it execs: once in the container's
    // PID namespace its processes see our child, which must not be readable or traceable by
    // them (CVE-2016-9962; `monitor::helper_main` sets it already).
    nix::sys::prctl::set_dumpable(false).ctx("PR_SET_DUMPABLE")?;
    let linux = spec.linux().clone().unwrap_or_default();
    // The container's environment, as its init got it.
    let env = crate::spec::process_env(spec)?;
    let open_init = |name: &str| {
        nix::fcntl::openat(
            init,
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            Error::FailedPrecondition(format!(
                "the container's init has exited ({name}: {})",
                e.desc()
            ))
        })
    };
    // Open all first: after joining the mount namespace /proc may be the container's.
    let mut fds = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let own = open_ro(Path::new(&format!("/proc/self/ns/{name}")))?;
        let theirs = open_init(&format!("ns/{name}"))?;
        let same = nix::sys::stat::fstat(&own).ok().map(|s| s.st_ino)
            == nix::sys::stat::fstat(&theirs).ok().map(|s| s.st_ino);
        if !same {
            fds.push((theirs, flag));
        }
    }
    // The user namespace is joined last (in `exec_process`), as the init did: the PID namespace
    // is the host's, and once in the pod's user namespace we would have no right to join it.
    // Looked at only when the spec has one, so an exec into any other container costs nothing.
    let in_userns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User);
    let userns = if in_userns {
        Some(JoinUserns {
            ns: open_init("ns/user")?,
            own_mount_ns: false,
        })
    } else {
        None
    };
    let root = open_init("root")?;
    // The mount namespace is joined in the child: once in it, our /proc/self is gone (that /proc
    // belongs to the container's PID namespace) and the fork check could not count our threads.
    let mut mnt = None;
    for (fd, flag) in fds {
        if flag == CloneFlags::CLONE_NEWNS {
            mnt = Some(fd);
        } else {
            setns(fd, flag).ctx("join container namespace")?;
        }
    }
    let join = cgroup.join_files();
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).ctx("pipe")?;
    match sys::fork_single_threaded()? {
        ForkResult::Child => {
            drop(err_r);
            let r = (|| -> Result<std::convert::Infallible> {
                // Into the container's cgroup first, by host paths (the container's mount
                // namespace, joined below, shows only its own cgroup).
                crate::cgroup::join_self(&join)?;
                // A process group of its own (with a tty, the new session's), which the helper
                // kills at the timeout: the command and the children it left in the group, not
                // only the command.
                if tty {
                    crate::terminal::become_session_on(&std::io::stdin())?;
                } else {
                    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)).ctx("setpgid")?;
                }
                if let Some(fd) = mnt {
                    setns(fd, CloneFlags::CLONE_NEWNS).ctx("join mount namespace")?;
                }
                nix::unistd::fchdir(root.as_fd()).ctx("fchdir root")?;
                nix::unistd::chroot(".").ctx("chroot")?;
                drop(root);
                // The init's host /proc/<pid> directory is no business of the command: closed
                // before its chdir, a working directory through /proc/self/fd cannot reach it
                // (CVE-2024-21626; the getcwd check below stays as the second guard). This
                // child's copy only: the parent's fd is untouched, and the child ends in exec
                // or _exit without dropping `init`.
                let _ = nix::unistd::close(init.as_raw_fd());
                exec_process(process, &env, linux.seccomp().as_ref(), userns)
            })();
            let Err(e) = r;
            let _ = std::fs::File::from(err_w).write_all(e.to_string().as_bytes());
            std::process::exit(127);
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            let mut msg = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
            if !msg.is_empty() {
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(Error::FailedPrecondition(format!(
                    "exec in container: {msg}"
                )));
            }
            let _ = root.as_raw_fd();
            Ok(child)
        }
    }
}

/// Whether pods with a user namespace can run here: a bind of each of `bind_dirs` (the root
/// dir, where volumes and the rootfs live, and the state dir, where the pod's files do) can be
/// id-mapped through the user namespace at `userns`, and an overlay of id-mapped layers made in
/// `scratch` (on the root dir's filesystem, as container roots are) mounts writable. Mounts only
/// detached copies, and one overlay it removes again.
pub fn probe_idmap(
    userns: &Path,
    owner: (u32, u32),
    bind_dirs: &[&Path],
    scratch: &Path,
) -> Result<()> {
    let ns = open_ro(userns)?;
    for dir in bind_dirs {
        let at = open(
            *dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(format_args!("open {}", dir.display()))?;
        let tree = sys::clone_mount_tree_of(at.as_fd(), false)?;
        idmap(&tree, &ns, false, &dir.display().to_string())?;
    }
    let overlay = Overlay {
        lower_dirs: vec![scratch.join("lower")],
        upper_dir: scratch.join("upper"),
        work_dir: scratch.join("work"),
    };
    let merged = scratch.join("merged");
    let _ = std::fs::remove_dir_all(scratch);
    for d in [
        &overlay.lower_dirs[0],
        &overlay.upper_dir,
        &overlay.work_dir,
        &merged,
    ] {
        std::fs::create_dir_all(d).map_err(|e| Error::io("probe dir", d, e))?;
    }
    let mapped = overlay.mount_idmapped(&merged, &ns, owner).and_then(|()| {
        // Read-only when overlayfs could not use its upper dir, which it only logs.
        let st = nix::sys::statvfs::statvfs(&merged).ctx("statvfs the probe overlay")?;
        if st.flags().contains(FsFlags::ST_RDONLY) {
            return Err(Error::FailedPrecondition(
                "an overlay of id-mapped layers mounts read-only".into(),
            ));
        }
        Ok(())
    });
    let _ = umount2(&merged, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir_all(scratch);
    mapped
}

/// Capability names of a set, for tests and status.
pub fn capability_names(set: &caps::CapsHashSet) -> BTreeSet<String> {
    set.iter().map(|c| c.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_filesystems_of_a_userns_container_are_its_roots() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "/r"},
            "mounts": [
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "mode=755"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["newinstance", "gid=5"]},
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/x", "type": "bind", "source": "/y", "options": ["rbind"]},
            ],
            "linux": {
                "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
                "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}],
            },
        }))
        .unwrap();
        let linux = spec.linux().clone().unwrap();
        let m = owned_by_namespace(spec.mounts().as_deref().unwrap(), &linux).unwrap();
        let opts = |i: usize| m[i].options().clone().unwrap_or_default();
        assert_eq!(opts(0), ["nosuid", "mode=755", "uid=100000", "gid=200000"]);
        assert_eq!(opts(1), ["newinstance", "gid=200005"]);
        assert_eq!(m[2], spec.mounts().as_ref().unwrap()[2]);
        assert_eq!(m[3], spec.mounts().as_ref().unwrap()[3]);
        // An id the namespace does not map cannot be given.
        let mut mounts = spec.mounts().clone().unwrap();
        mounts[1].set_options(Some(vec!["gid=70000".into()]));
        assert!(owned_by_namespace(&mounts, &linux).is_err());
    }

    /// Root only (the runtime's tests run as root): an image of 60 layers whose paths are as long
    /// as the snapshotter's makes overlay options of more than a page; the mount still works and
    /// shows the bottom layer's file under the top layer's.
    #[test]
    fn an_overlay_of_more_layers_than_a_page_of_options_mounts() {
        if !crate::root_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let lower_dirs: Vec<PathBuf> = (0..60)
            .map(|i| {
                let d = dir.path().join(format!("{i:064x}")).join("fs");
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join(format!("layer{i}")), i.to_string()).unwrap();
                d
            })
            .rev()
            .collect();
        let o = Overlay {
            lower_dirs,
            upper_dir: dir.path().join("upper"),
            work_dir: dir.path().join("work"),
        };
        for d in [&o.upper_dir, &o.work_dir, &dir.path().join("merged")] {
            std::fs::create_dir(d).unwrap();
        }
        assert!(o.options().unwrap().len() > MAX_MOUNT_DATA);
        let merged = dir.path().join("merged");
        o.mount(&merged).unwrap();
        let bottom = std::fs::read_to_string(merged.join("layer0"));
        let top = std::fs::read_to_string(merged.join("layer59"));
        umount2(&merged, MntFlags::MNT_DETACH).unwrap();
        assert_eq!((bottom.unwrap(), top.unwrap()), ("0".into(), "59".into()));
    }
}
