//! The syscall edge that needs `unsafe`: fork, installing a seccomp filter, marking every fd
//! close-on-exec, the two terminal ioctls (controlling tty, window size), the new mount API
//! (open_tree, move_mount, mount_setattr, and fsopen/fsconfig/fsmount for image volumes) and bpf(2) for the cgroup v2 device program. Everything else goes through `nix`'s safe wrappers. Each block says
//! why it is sound; nothing outside this module may use `unsafe`.
#![allow(unsafe_code)]

use nix::unistd::ForkResult;

use crate::error::{Error, Result};
use crate::seccomp::SockFilter;

/// How many threads this process has, from `/proc/self/status`.
fn thread_count() -> Result<usize> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::internal("read /proc/self/status", e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| Error::Internal("no Threads: line in /proc/self/status".into()))
}

/// fork(2), refused unless this process is single-threaded.
pub(crate) fn fork_single_threaded() -> Result<ForkResult> {
    if thread_count()? != 1 {
        return Err(Error::Internal(
            "refusing to fork a multi-threaded process; run the executor in the monitor".into(),
        ));
    }
    // SAFETY: with exactly one thread there is no other thread whose locks (allocator, stdio) the
    // child could inherit mid-update, so the child may run ordinary Rust code until it execs or
    // exits. We checked the count just above and nothing in this call starts a thread.
    unsafe { nix::unistd::fork() }.map_err(|e| Error::Internal(format!("fork: {}", e.desc())))
}

/// Installs `filter` on the calling thread (the container's init, single-threaded, just before
/// exec). The caller must have set no_new_privs or hold CAP_SYS_ADMIN.
pub(crate) fn install_seccomp(filter: &[SockFilter]) -> Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len())
            .map_err(|_| Error::InvalidArgument("seccomp filter too long".into()))?,
        // `SockFilter` is `#[repr(C)]` with the same fields as `struct sock_filter`.
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies the program
    // during prctl and keeps no pointer to our memory.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(Error::Internal(format!(
            "load seccomp filter: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The kernel's `struct sigaction` for rt_sigaction(2) on x86_64 and aarch64 (glibc's own type is
/// laid out differently, and glibc refuses its internal signals 32 and 33).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Puts every ignored signal back to its default action for the program about to be exec'd: an
/// ignored disposition survives execve, and ours are no business of the container's. Rust's
/// runtime ignores SIGPIPE in every process it starts (`yes | head` would spin on EPIPE instead of
/// ending), and a daemon started from a shell's background job ignores SIGINT and SIGQUIT. A
/// container starts with none ignored, as under runc. Handled signals need nothing: execve
/// resets them.
pub(crate) fn default_ignored_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let mut old = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: rt_sigaction only reads `act` (null here) and writes `old`, a live local of
        // the kernel's layout and size (the last argument is the kernel's sigset size, 8 bytes).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                8usize,
            )
        };
        if rc != 0 || old.handler != libc::SIG_IGN {
            continue;
        }
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: as above; SIG_DFL runs no code of ours, so nothing can be interrupted. A
        // failure (a Localhost seccomp profile may refuse rt_sigaction) leaves the signal
        // ignored, which is how the container would have started before: not worth refusing it.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
}

/// Marks every fd from 3 up close-on-exec, so nothing of the monitor's (or a leaked host directory,
/// CVE-2024-21626) survives into the container's process.
pub(crate) fn cloexec_from_3() -> Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on fds; it touches no memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if rc != 0 {
        return Err(Error::Internal(format!(
            "close_range: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Makes the terminal open at `fd` the controlling terminal of the calling process, which must
/// be a session leader without one (just after setsid, in the child before exec).
pub(crate) fn set_controlling_tty(fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal from another session) and reads
    // no memory of ours; a bad fd only makes it fail.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0 as libc::c_int) };
    if rc != 0 {
        return Err(Error::Internal(format!(
            "TIOCSCTTY: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Sets the window size of the terminal open at `fd` (the pty master); the kernel sends
/// SIGWINCH to the terminal's foreground process group.
pub(crate) fn set_window_size(
    fd: std::os::fd::BorrowedFd<'_>,
    width: u16,
    height: u16,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from the pointer, which points at `ws` on our
    // stack for the whole call; the kernel keeps no pointer to it.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            &ws as *const libc::winsize,
        )
    };
    if rc != 0 {
        return Err(Error::Internal(format!(
            "TIOCSWINSZ: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

// From <linux/mount.h>; not every libc release exports them for every target.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// open_tree(2) with `OPEN_TREE_CLONE | AT_RECURSIVE`: a detached copy of the mount tree at
/// `path`. A copy of a shared mount joins its peer group, which is how a Bidirectional volume
/// stays a peer of the host's mount inside the container's own mount namespace.
pub(crate) fn clone_mount_tree(path: &std::path::Path) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::InvalidArgument("NUL in mount source".into()))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(Error::Internal(format!(
            "open_tree {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: a non-negative return of open_tree is a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(rc as libc::c_int) })
}

/// [`clone_mount_tree`] of the file or directory open at `at` (an `O_PATH` fd is enough): the
/// exact inode already resolved, with no second lookup of a path someone could swap meanwhile.
/// Without `recursive`, only the mount at `at` is copied, as a plain (not `rbind`) bind does.
pub(crate) fn clone_mount_tree_of(
    at: std::os::fd::BorrowedFd<'_>,
    recursive: bool,
) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let empty = c"";
    // SAFETY: the empty path is a NUL-terminated static string the kernel only reads; `at` is
    // open for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            at.as_raw_fd(),
            empty.as_ptr(),
            OPEN_TREE_CLONE
                | if recursive { AT_RECURSIVE } else { 0 }
                | libc::AT_EMPTY_PATH as libc::c_uint
                | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(Error::Internal(format!(
            "open_tree: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: a non-negative return of open_tree is a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(rc as libc::c_int) })
}

/// move_mount(2) of the detached tree `tree` onto the directory open at `target` (by fd: a
/// `/proc/self/fd/N` path would name the magic link itself, which move_mount does not follow).
pub(crate) fn attach_mount_tree(
    tree: &std::os::fd::OwnedFd,
    target: &std::os::fd::OwnedFd,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let empty = c"";
    // SAFETY: the empty path is a NUL-terminated static string; both fds are open and ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(Error::Internal(format!(
            "move_mount: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

// From <linux/mount.h>, as above.
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const MOUNT_ATTR_NOSUID: libc::c_uint = 2;
const MOUNT_ATTR_NODEV: libc::c_uint = 4;

/// A read-only, nosuid, nodev overlayfs of `layers` (topmost first) without an upper layer, as a
/// detached mount (fsopen, fsconfig, fsmount): attached nowhere until `attach_mount_tree`, and
/// gone with its fd if never attached. Each layer is its own `lowerdir+` (Linux 6.8+), so no
/// list of paths has to fit a page of mount options. The error says which step failed.
pub(crate) fn overlay_detached(layers: &[&std::path::Path]) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let failed = |what: String| {
        Error::Internal(format!(
            "overlayfs {what}: {}",
            std::io::Error::last_os_error()
        ))
    };
    // SAFETY: the type is a NUL-terminated static string the kernel only reads.
    let rc = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) };
    if rc < 0 {
        return Err(failed("fsopen".into()));
    }
    // SAFETY: a non-negative return of fsopen is a new fd that nothing else owns.
    let fs = unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) };
    for layer in layers {
        let c = std::ffi::CString::new(layer.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::InvalidArgument("NUL in a layer path".into()))?;
        // SAFETY: key and value are NUL-terminated strings that outlive the call, only read;
        // `fs` is open.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                FSCONFIG_SET_STRING,
                c"lowerdir+".as_ptr(),
                c.as_ptr(),
                0,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // An older kernel does not know the key: the node cannot mount image volumes.
            return Err(match err.raw_os_error() {
                Some(libc::EINVAL) => Error::FailedPrecondition(format!(
                    "overlayfs refused lowerdir+ {}: image volumes need Linux 6.8 or later",
                    layer.display()
                )),
                Some(libc::ENOENT) => Error::NotFound(format!("layer {}", layer.display())),
                _ => Error::Internal(format!("overlayfs lowerdir+ {}: {err}", layer.display())),
            });
        }
    }
    // SAFETY: the create command takes no key or value (null, as the man page says); `fs` is open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if rc != 0 {
        return Err(failed("create".into()));
    }
    // SAFETY: plain integer arguments; `fs` is open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY as libc::c_uint | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    };
    if rc < 0 {
        return Err(failed("fsmount".into()));
    }
    // SAFETY: a non-negative return of fsmount is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) })
}

/// `struct mount_attr` of mount_setattr(2), its first (and so far only) version.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 1;

/// mount_setattr(2) with `AT_RECURSIVE` and `MOUNT_ATTR_RDONLY` on the mount whose root is open
/// at `mnt` (Linux 5.12+): it and every mount below it read-only, which a bind remount, reaching
/// only the one mount, cannot do. By fd, like the rest of the bind's setup.
pub(crate) fn make_tree_readonly(mnt: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    use std::os::fd::AsRawFd;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: the kernel reads `size_of::<MountAttr>()` bytes from `attr`, a live local of exactly
    // that size laid out as `struct mount_attr`, and the empty NUL-terminated static path; `mnt`
    // is open for the whole call. Nothing is written to our memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(Error::Internal(format!(
            "mount_setattr (recursive read-only): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// mount_setattr(2) with `MOUNT_ATTR_IDMAP` on the detached mount tree `mnt` (fresh from
/// open_tree(OPEN_TREE_CLONE), never attached: the kernel maps only those): ids on disk are read
/// as ids inside the user namespace `userns` and so show, and are written, as the ones its root
/// has inside. With `recursive` every mount of the tree (an `rbind`), else its top one only.
pub(crate) fn idmap_tree(
    mnt: std::os::fd::BorrowedFd<'_>,
    userns: std::os::fd::BorrowedFd<'_>,
    recursive: bool,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: as in `make_tree_readonly`: the kernel reads `attr` (a live local laid out as
    // `struct mount_attr`, the size passed with it) and the static empty path; both fds are open
    // for the whole call; nothing of ours is written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 },
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether this kernel has mount_setattr(2), which recursive read-only mounts need; asked once.
pub fn mount_setattr_supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(probe_mount_setattr)
}

/// Asks with flags no kernel accepts, which one with the call refuses with EINVAL before reading
/// anything; a kernel without it (or a seccomp filter hiding it) answers otherwise.
fn probe_mount_setattr() -> bool {
    // SAFETY: with invalid flags the kernel returns before it looks at the (null) path or
    // attribute pointers; no memory of ours is read or written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1 as libc::c_int,
            std::ptr::null::<libc::c_char>(),
            libc::c_uint::MAX,
            std::ptr::null::<MountAttr>(),
            0usize,
        )
    };
    rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
}

/// pidfd_open(2): a descriptor that becomes readable when `pid` exits (Linux 5.3+), so an exit can
/// be awaited without polling. Neither nix nor std wraps it yet.
pub(crate) fn pidfd_open(pid: i32) -> Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes two integers and touches no memory of ours; it returns a new
    // descriptor (close-on-exec by the kernel's rule for pidfds) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Error::Internal(format!(
            "pidfd_open {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits up to `timeout` for `pid` to exit (a zombie counts as exited) without polling; true once
/// it has. A pid that is already gone has exited.
pub(crate) fn wait_exited(pid: i32, timeout: std::time::Duration) -> bool {
    match pidfd_open(pid) {
        Ok(fd) => wait_readable(std::os::fd::AsFd::as_fd(&fd), timeout),
        Err(_) => true,
    }
}

/// Waits up to `timeout` for `fd` (a pidfd: its process exited) to become readable.
pub(crate) fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // Whole milliseconds, rounded up so a short wait is not a busy one.
        let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
            .unwrap_or(PollTimeout::MAX);
        match poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], ms) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) | Ok(_) => {}
            Err(_) => return false,
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
    }
}

/// Gives back what a long-lived helper used once while setting up and never touches again: free
/// heap chunks, the stack pages below the caller's frame (parsing the bundle and starting the
/// container run deep), and its mappings of the program's code and read-only data. Setting up
/// runs through megabytes of the binary; left mapped, each monitor would keep ~3 MiB of it
/// resident (shared with the daemon, but counted in every monitor's RSS) for code it never runs
/// again. The kernel maps back what the steady loop touches on its first use. A monitor lives as
/// long as its container, so all of this would otherwise be paid for once per container. The
/// monitor calls it once it has first been quiet for a while, so that what its first requests
/// ran (the daemon's status checks right after the start) is given back too.
#[inline(never)]
pub(crate) fn release_setup_memory() {
    // Read before the trims, so the text read is freed by them; only a fixed array survives.
    let Some(found) = read_setup_mappings() else {
        return;
    };
    // SAFETY: malloc_trim takes the allocator's lock and only returns pages of free chunks.
    unsafe {
        nix::libc::malloc_trim(0);
    }
    // The kernel's page size, not 4 KiB: madvise rounds the length up to whole pages, so on a
    // 64 KiB-page kernel a 4 KiB-aligned end would reach into live frames.
    let page = match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as usize,
        _ => return,
    };
    let here = 0u8;
    let sp = std::hint::black_box(&here) as *const u8 as usize;
    // Everything below the live frames is dead; one page of margin covers the only frame still
    // to come below this one, madvise's own. (A signal frame landing below later just faults
    // zero pages back in.)
    let end = sp.saturating_sub(page) & !(page - 1);
    if let Some(low) = found.stack_low.filter(|&low| low < end) {
        // SAFETY: [low, end) is the part of this thread's stack mapping below the deepest live
        // frame (less the margin): nothing refers to it. MADV_DONTNEED turns it back into
        // zero-fill pages, so a later deeper call simply faults fresh pages in.
        unsafe { dont_need(low, end) };
    }
    // Last, so that what runs after it is only the way back to the caller's loop.
    release_code_mappings(&found);
}

/// Gives back the daemon's mappings of the program's code and read-only data once it serves.
/// Starting (configuration, opening the stores, recovering pods and containers, the first polls
/// of every server) runs through megabytes of the binary that an idle daemon never runs again,
/// and those pages would stay in its RSS for its whole life. The kernel maps back, 64 KiB at a
/// time, what serving touches. The pages stay in the page cache (the monitors map the same
/// file), so this lowers the daemon's RSS, not what the node has used; what it changes for the
/// node is that pages no process maps are the first the kernel reclaims under pressure.
pub fn release_program_code() {
    if let Some(found) = read_setup_mappings() {
        release_code_mappings(&found);
    }
}

/// Gives back what a burst of work left behind once it is over: the pages of free heap chunks
/// and the mappings of the code it ran (see [`release_program_code`]). A pull runs the HTTP and
/// TLS clients, the decompressors and the unpacker, megabytes of code and buffers the daemon
/// then holds, idle, until the next pull.
pub fn release_idle_memory() {
    // SAFETY: malloc_trim takes the allocator's own locks and only returns pages of free chunks.
    unsafe {
        nix::libc::malloc_trim(0);
    }
    release_program_code();
}

/// This process's mappings as [`SetupMappings`], from one read of `/proc/self/smaps`.
fn read_setup_mappings() -> Option<SetupMappings> {
    // Sized for the whole file (10–20 KB) so it takes one read: a /proc file reports no size,
    // and `fs::read_to_string` then starts at 32 bytes and grows, a dozen reads in all.
    let mut smaps = String::with_capacity(64 * 1024);
    std::fs::File::open("/proc/self/smaps")
        .and_then(|mut f| std::io::Read::read_to_string(&mut f, &mut smaps))
        .ok()?;
    Some(setup_mappings(&smaps))
}

fn release_code_mappings(found: &SetupMappings) {
    for &(start, end) in found.code.iter().flatten() {
        // SAFETY: [start, end) is a private, read-only mapping of a file with no anonymous
        // (copied-on-write) page: every page in it is the file's own content, which the kernel
        // maps again on the next access, by this thread or any other. The file cannot change
        // under us: a running executable cannot be opened for writing, and a mapping that is not
        // writable gains no private page (no code of ours mprotects). This very code may be among
        // the dropped pages; returning to it faults it back in.
        unsafe { dont_need(start, end) };
    }
}

/// MADV_DONTNEED on `[start, end)`; failure only keeps the pages.
///
/// # Safety
/// Nothing may rely on the range's present contents unless the kernel gives them back on the next
/// access (a clean file mapping) or they are dead (stack below the live frames).
unsafe fn dont_need(start: usize, end: usize) {
    if let Some(addr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) {
        // SAFETY: the caller's contract.
        unsafe {
            let _ = nix::sys::mman::madvise(
                addr,
                end - start,
                nix::sys::mman::MmapAdvise::MADV_DONTNEED,
            );
        }
    }
}

/// What [`release_setup_memory`] gives back, read from `/proc/self/smaps` (no heap: it is kept
/// across the heap trim).
#[derive(Debug, Default, PartialEq, Eq)]
struct SetupMappings {
    /// Private, not writable, file-backed mappings with no anonymous page (code, read-only
    /// data). Relocated read-only data (RELRO) was written once, so it has anonymous pages and
    /// is left alone.
    code: [Option<(usize, usize)>; 8],
    /// The lowest address of the main thread's stack mapping.
    stack_low: Option<usize>,
}

fn setup_mappings(smaps: &str) -> SetupMappings {
    let mut found = SetupMappings::default();
    let mut slots = found.code.iter_mut();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') {
            // A mapping's header: range, perms, offset, device, inode, path.
            let range = mapping_range(first);
            let perms = words.next().unwrap_or("");
            let inode = words.nth(2).unwrap_or("0");
            let path = words.next().unwrap_or("");
            if path == "[stack]" {
                found.stack_low = range.map(|r| r.0);
            }
            let private_read_only = matches!(perms.as_bytes(), [b'r', b'-', _, b'p']);
            current = range.filter(|_| private_read_only && inode != "0");
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && words.next() == Some("0")
            && let Some(slot) = slots.next()
        {
            *slot = Some(range);
        }
    }
    found
}

/// The `(start, end)` of a smaps or maps header's first word, `start-end` in hex.
fn mapping_range(word: &str) -> Option<(usize, usize)> {
    let (lo, hi) = word.split_once('-')?;
    let range = (
        usize::from_str_radix(lo, 16).ok()?,
        usize::from_str_radix(hi, 16).ok()?,
    );
    (range.0 < range.1).then_some(range)
}

// bpf(2) for the cgroup v2 device filter (see `devices`). Neither libc nor nix has the bpf_attr
// layouts, so each command gets its own `#[repr(C)]` struct with the leading fields of the
// kernel's `union bpf_attr` (<linux/bpf.h>) that it uses. The kernel copies min(our size, its
// size) and zero-fills the rest, so a shorter struct means "those later fields are 0".
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Several programs on one cgroup, all of which must allow (and those of its ancestors too).
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// BPF_PROG_ATTACH and BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct BpfAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// Up to `revision`: newer kernels write that field back whatever size we pass, so it must be
/// ours.
#[repr(C)]
#[derive(Default)]
struct BpfQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

#[repr(C)]
#[derive(Default)]
struct BpfGetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// bpf(2) with `attr`.
///
/// # Safety
/// `attr` must be the struct the kernel reads for `cmd`, and every pointer in it must point at
/// memory that is valid (and writable where the kernel writes) for the whole call.
unsafe fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: the caller's contract; the size is exactly that of `*attr`, so the kernel reads and
    // writes back nothing beyond it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// Loads `insns` as a BPF_PROG_TYPE_CGROUP_DEVICE program. With `log`, the verifier writes its
/// log there (a too-small buffer makes the load fail with ENOSPC).
pub(crate) fn bpf_load_device_program(
    insns: &[crate::devices::Insn],
    license: &std::ffi::CStr,
    log: Option<&mut [u8]>,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"carapace_dev");
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = BpfProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::E2BIG))?,
        // `Insn` is `#[repr(C)]` with the layout of `struct bpf_insn`.
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        prog_name: name,
        // expected_attach_type stays 0 (not in this struct): the kernel checks it for no
        // device program, and kernels before 4.17 do not know the field.
        ..Default::default()
    };
    // SAFETY: BPF_PROG_LOAD reads `attr`, the instructions and the license string (all alive for
    // the call) and writes at most `log_size` bytes into the log buffer, which is ours and that
    // long. The kernel copies the program and keeps no pointer to our memory.
    let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr)? };
    // SAFETY: a successful BPF_PROG_LOAD returns a new fd (close-on-exec) that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Attaches the device program `prog` to the cgroup directory open at `cgroup`, beside any
/// programs already there (BPF_F_ALLOW_MULTI): a process there must pass all of them.
pub(crate) fn bpf_attach_device_program(
    cgroup: std::os::fd::BorrowedFd<'_>,
    prog: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    device_program_attachment(BPF_PROG_ATTACH, BPF_F_ALLOW_MULTI, cgroup, prog)
}

/// Detaches the device program `prog` from the cgroup directory open at `cgroup`.
pub(crate) fn bpf_detach_device_program(
    cgroup: std::os::fd::BorrowedFd<'_>,
    prog: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    device_program_attachment(BPF_PROG_DETACH, 0, cgroup, prog)
}

/// BPF_PROG_ATTACH or BPF_PROG_DETACH of a device program on a cgroup: the same argument block.
fn device_program_attachment(
    cmd: libc::c_int,
    attach_flags: u32,
    cgroup: std::os::fd::BorrowedFd<'_>,
    prog: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut attr = BpfAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags,
        ..Default::default()
    };
    // SAFETY: BPF_PROG_ATTACH and BPF_PROG_DETACH only read `attr` (two fds we hold open and
    // plain integers).
    unsafe { bpf(cmd, &mut attr)? };
    Ok(())
}

/// The ids of the device programs attached to the cgroup directory open at `cgroup` itself
/// (not those inherited from its ancestors).
pub(crate) fn bpf_device_program_ids(
    cgroup: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    let mut ids = vec![0u32; 8];
    loop {
        let mut attr = BpfQueryAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        // SAFETY: BPF_PROG_QUERY writes at most `prog_cnt` u32 ids into `ids` (ours, that long,
        // alive for the call) and a few fields of `attr`, which spans every field it writes.
        match unsafe { bpf(BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // More programs than room: the kernel said how many there are; ask again.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOSPC) && attr.prog_cnt as usize > ids.len() =>
            {
                ids = vec![0u32; attr.prog_cnt as usize];
            }
            Err(e) => return Err(e),
        }
    }
}

/// A new fd for the BPF program with id `id` (ENOENT once it is gone).
pub(crate) fn bpf_program_by_id(id: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let mut attr = BpfGetFdByIdAttr {
        prog_id: id,
        ..Default::default()
    };
    // SAFETY: BPF_PROG_GET_FD_BY_ID only reads `attr`.
    let fd = unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)? };
    // SAFETY: a successful call returns a new fd (close-on-exec) that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Takes ownership of a descriptor that recvmsg(2) just installed (SCM_RIGHTS).
pub(crate) fn own_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the kernel installed `fd` in our table for this message alone; nothing else in
    // the process knows or closes it, so the OwnedFd is its only owner.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::{
        SetupMappings, mapping_range, release_program_code, release_setup_memory, setup_mappings,
    };

    /// Resident KiB of the mappings `release_setup_memory` gives back, from `/proc/self/smaps`.
    fn code_rss_kib() -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let code = setup_mappings(&smaps).code;
        let (mut kib, mut ours) = (0, false);
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('-') {
                let range = mapping_range(first);
                ours = range.is_some() && code.contains(&range);
            } else if ours && first == "Rss:" {
                kib += line
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
        kib
    }

    /// Reads one byte of every page of the code mappings, so all of them are resident.
    fn touch_code() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        for (start, end) in setup_mappings(&smaps).code.into_iter().flatten() {
            for page in (start..end).step_by(4096) {
                // SAFETY: the range is one of this process's readable mappings of its own
                // executable, mapped for the life of the process.
                unsafe { std::ptr::read_volatile(page as *const u8) };
            }
        }
    }

    // One test for both releases, one after the other: run side by side, one's release would
    // land in the other's readings.
    #[test]
    fn released_code_is_unmapped_and_comes_back_when_run() {
        for (name, release) in [
            ("monitor", release_setup_memory as fn()),
            ("daemon", release_program_code),
        ] {
            touch_code();
            let before = code_rss_kib();
            release();
            // Reading smaps again runs code that faults back in; all of it was mapped before.
            let after = code_rss_kib();
            assert!(
                after < before / 2,
                "{name}: code and read-only data resident: {before} KiB before, {after} KiB after"
            );
        }
        // The code that runs after the releases works: it was mapped back from the file.
        assert_eq!(setup_mappings("").stack_low, None);
    }

    #[test]
    fn code_read_only_data_and_the_stack_are_found() {
        let smaps = "\
00200000-00454000 r--p 00000000 fe:00 5375932    /run/carapace/carapace.exe
Size:               9552 kB
Anonymous:             0 kB
00454000-00cb6000 r-xp 00253000 fe:00 5375932    /run/carapace/carapace.exe
Anonymous:             0 kB
00cb6000-00cbb000 r--p 00ab4000 fe:00 5375932    /run/carapace/carapace.exe
Anonymous:            20 kB
00cbb000-00cc2000 rw-p 00ab8000 fe:00 5375932    /run/carapace/carapace.exe
Anonymous:             0 kB
7f2408d74000-7f2408d78000 r--p 00000000 00:00 0  [vvar]
Anonymous:             0 kB
7f2408d7a000-7f2408d7c000 r-xp 00000000 00:00 0  [vdso]
Anonymous:             0 kB
7f2408e00000-7f2408e01000 r--s 00000000 fe:00 77  /dev/shm/x
Anonymous:             0 kB
7fff852c7000-7fff852e8000 rw-p 00000000 00:00 0  [stack]
Anonymous:            28 kB
";
        // Code and read-only data go; RELRO (written once), data, the vDSO and a shared mapping stay.
        let found = setup_mappings(smaps);
        assert_eq!(
            found.code[..3],
            [Some((0x200000, 0x454000)), Some((0x454000, 0xcb6000)), None]
        );
        assert_eq!(found.stack_low, Some(0x7fff852c7000));
        assert_eq!(
            setup_mappings("garbage\nAnonymous: 0 kB\n"),
            SetupMappings::default()
        );
    }
}
