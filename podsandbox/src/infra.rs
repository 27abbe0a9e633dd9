//! The infra process of a pod with a shared PID namespace: PID 1 of that namespace, which reaps
//! zombies and holds the namespace alive (a PID namespace whose PID 1 is gone takes no new
//! process). It is the `carapace` binary re-executed in an infra role, not a pause image.
//!
//! The daemon starts an *outer* process, which unshares a PID namespace, forks that namespace's
//! PID 1, reports its pid and exits: one process per pod stays, orphaned to the host's init (a
//! fork shares the binary's pages, so it costs little memory). Killing PID 1, even after a daemon
//! restart (pid and start time are recorded), ends the namespace. Sandboxes recorded by earlier
//! versions name a long-lived outer process whose PID 1 dies with it; stopping them is the same
//! kill.
//!
//! A container sharing the namespace sees PID 1 as `/proc/1`: PID 1 confines itself before it
//! reports (its own empty mount namespace, no capability, no_new_privs, not dumpable, a seccomp
//! allow-list; see `confine`), so that `/proc/1` leads nowhere on the host.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The line the outer process prints once PID 1 runs: `<marker><pid of PID 1 on the host>`.
const READY_MARKER: &str = "carapace-infra-pid1=";

/// How the daemon starts the infra process: a program and its arguments, e.g. the `carapace`
/// binary itself (`/proc/self/exe`) with the argument that selects the infra role, which must
/// call [`infra_main`] before starting any thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfraCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// A running infra process, as recorded in the sandbox state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfraProcess {
    /// The outer process (host PID namespace).
    pub pid: i32,
    /// Its start time in clock ticks since boot, so a recycled pid is never killed.
    pub start_time: u64,
    /// PID 1 of the pod's PID namespace, as the host numbers it.
    pub pid1: i32,
}

/// The entry point of the infra role; returns the exit code. Call it first thing in `main`
/// when the binary is started in that role, before any thread (tokio) exists.
pub fn infra_main() -> i32 {
    if std::env::args_os().nth(2).is_some_and(|a| a == USERNS_ARG) {
        return match userns_helper() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("carapace userns helper: {e}");
                1
            }
        };
    }
    match outer() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("carapace infra: {e}");
            1
        }
    }
}

fn outer() -> std::io::Result<i32> {
    use std::io::Read;
    // Our children, not we, land in the new namespace: the first one is its PID 1. A fork, not a
    // second exec: PID 1 shares our pages, which saves an exec per pod and most of its memory.
    unshare(CloneFlags::CLONE_NEWPID)?;
    let (armed_r, armed_w) = nix::unistd::pipe()?;
    let child = match crate::sys::fork_single_threaded()? {
        nix::unistd::ForkResult::Child => {
            drop(armed_r);
            std::process::exit(pid1(armed_w));
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(armed_w);
    // PID 1 writes `ARMED` and closes its end once it is confined and its signals are blocked,
    // or writes why it failed and exits; EOF alone means it died first.
    let mut said = Vec::new();
    std::fs::File::from(armed_r)
        .take(4096)
        .read_to_end(&mut said)?;
    if said != ARMED {
        return Err(std::io::Error::other(format!(
            "PID 1 did not start: {}",
            if said.is_empty() {
                "it died".into()
            } else {
                String::from_utf8_lossy(&said)
            }
        )));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY_MARKER}{child}")?;
    out.flush()?;
    // Our job is done: PID 1 lives on, orphaned to the host's init, which reaps it at the end.
    Ok(0)
}

/// What PID 1 writes to the outer process once it is ready.
const ARMED: &[u8] = b"1";

/// The syscalls PID 1 makes once confined: `sigwait` (rt_sigtimedwait), `waitpid` (wait4),
/// closing the pipe to the outer process, exiting, and returning from the runtime's fault
/// handlers or a restarted wait. `write` is allowed on that pipe only (see `sys`).
const PID1_SYSCALLS: &[nix::libc::c_long] = &[
    nix::libc::SYS_rt_sigtimedwait,
    nix::libc::SYS_wait4,
    nix::libc::SYS_close,
    nix::libc::SYS_exit,
    nix::libc::SYS_exit_group,
    nix::libc::SYS_rt_sigreturn,
    nix::libc::SYS_restart_syscall,
];

/// PID 1: blocks its signals, gives up everything it could hand to a container that shares its
/// PID namespace (see [`confine`]), reports to the outer process, then reaps until SIGTERM.
fn pid1(armed: std::os::fd::OwnedFd) -> i32 {
    let mut armed = std::fs::File::from(armed);
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    let ready = signals
        .thread_block()
        .map_err(|e| std::io::Error::other(format!("blocking signals: {e}")))
        .and_then(|()| confine(&armed));
    if let Err(e) = ready {
        // Our stderr may be /dev/null by now: the outer process reports for us.
        let _ = write!(armed, "{e}");
        return 1;
    }
    if armed.write_all(ARMED).is_err() {
        return 1;
    }
    drop(armed);
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap(),
            Ok(Signal::SIGTERM | Signal::SIGINT) => return 0,
            Ok(_) => {}
            Err(_) => return 1,
        }
    }
}

/// Leaves PID 1 nothing worth reaching: a container that shares its PID namespace sees it as
/// `/proc/1`, so with CAP_SYS_PTRACE its root, mounts and fds are the container's to open, and
/// it is the process a container would ptrace. PID 1 only reaps and waits for signals (the
/// daemon, host root, kills it from outside), so it gets an empty read-only root in a mount
/// namespace of its own, no supplementary group, no capability, no_new_privs, no dumpability
/// and a seccomp allow-list of the calls its loop makes. The order matters: each step needs
/// what the next one removes.
fn confine(armed: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // No parent-death signal: the outer process exits right away, and the daemon kills PID 1
    // itself. Not in the daemon's session either, so a terminal's hangup does not reach it.
    let _ = nix::unistd::setsid();
    // Our stdio are the daemon's (stderr its log, say): /dev/null instead, opened while the host's
    // root is still ours, so `/proc/1/fd` offers a container nothing.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| std::io::Error::other(format!("open /dev/null: {e}")))?;
    nix::unistd::dup2_stdin(&null).map_err(step("dup2 stdin"))?;
    nix::unistd::dup2_stdout(&null).map_err(step("dup2 stdout"))?;
    nix::unistd::dup2_stderr(&null).map_err(step("dup2 stderr"))?;
    drop(null);
    // Nor any other fd the daemon let through (one without close-on-exec), but our pipe.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| std::io::Error::other(format!("list /proc/self/fd: {e}")))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && *fd != armed.as_raw_fd())
        .collect();
    for fd in fds {
        // The listing's own fd is already closed: EBADF.
        let _ = nix::unistd::close(fd);
    }
    empty_root()?;
    // The daemon's supplementary groups (root's, as often as not) are none of the pod's: a
    // container sharing the PID namespace sees PID 1's, and a pod's Strict supplemental groups
    // policy promises only the groups of its spec. Needs CAP_SETGID, dropped below.
    crate::sys::drop_supplementary_groups()
        .map_err(|e| std::io::Error::other(format!("dropping the supplementary groups: {e}")))?;
    // The bounding set needs CAP_SETPCAP, the mounts above CAP_SYS_ADMIN: this comes after both.
    crate::sys::drop_all_capabilities()
        .map_err(|e| std::io::Error::other(format!("dropping capabilities: {e}")))?;
    // Not dumpable: its memory, environment and fds, or a ptrace attach, take CAP_SYS_PTRACE
    // rather than just the same uid (a container's root is uid 0 too).
    nix::sys::prctl::set_dumpable(false).map_err(step("PR_SET_DUMPABLE"))?;
    nix::sys::prctl::set_no_new_privs().map_err(step("PR_SET_NO_NEW_PRIVS"))?;
    // Last: the filter refuses every call above.
    let fd = u32::try_from(armed.as_raw_fd()).map_err(|_| std::io::Error::other("bad fd"))?;
    crate::sys::allow_list_filter(PID1_SYSCALLS, fd)
        .and_then(|filter| crate::sys::install_seccomp(&filter))
        .map_err(|e| std::io::Error::other(format!("seccomp: {e}")))
}

/// Names the step that failed: PID 1 reports it to the outer process as text.
fn step(what: &'static str) -> impl Fn(nix::errno::Errno) -> std::io::Error {
    move |e| std::io::Error::other(format!("{what}: {e}"))
}

/// Moves PID 1 into a mount namespace of its own whose only mount is an empty read-only tmpfs at
/// `/`: the host's mounts are detached, not just hidden, so none of them is pinned by it either.
fn empty_root() -> std::io::Result<()> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    unshare(CloneFlags::CLONE_NEWNS).map_err(step("unshare the mount namespace"))?;
    // Nothing below may propagate to the host's mounts.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(step("make the mounts private"))?;
    // Any directory every host has will do as the mount point of the new root: /proc.
    mount(
        Some("tmpfs"),
        "/proc",
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0555,size=4k"),
    )
    .map_err(step("mount the empty root"))?;
    nix::unistd::chdir("/proc").map_err(step("chdir to the empty root"))?;
    // pivot_root(".", ".") stacks the old root on the new one, where the detach below finds it:
    // no directory for it is needed in a root that is read-only.
    nix::unistd::pivot_root(".", ".").map_err(step("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(step("detach the host's root"))?;
    nix::unistd::chdir("/").map_err(step("chdir /"))?;
    Ok(())
}

/// Reaps every exited child: processes of the pod whose parents died are reparented to us.
fn reap() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A process's start time (field 22 of `/proc/<pid>/stat`), and whether it is a zombie.
pub(crate) fn proc_start(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let zombie = fields.first() == Some(&"Z");
    Some((fields.get(19)?.parse().ok()?, zombie))
}

/// The infra process whose PID namespace is pinned at `pin`: PID 1 of that namespace, found
/// through /proc. For a run the daemon died in after the pin and before the record of the
/// process: the pin, recorded first, is all that names it then.
pub(crate) fn find_by_pin(pin: &Path) -> Option<InfraProcess> {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata(pin).ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let m = std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok()?;
        if (m.dev(), m.ino()) != (ns.dev(), ns.ino()) {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let nspid = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
        if nspid.split_whitespace().last() != Some("1") {
            return None;
        }
        let (start_time, false) = proc_start(pid)? else {
            return None;
        };
        Some(InfraProcess {
            pid,
            start_time,
            pid1: pid,
        })
    })
}

/// Starts the infra process and pins its PID namespace at `pin`.
pub(crate) fn start(cmd: &InfraCommand, pin: &Path) -> std::io::Result<InfraProcess> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(&cmd.program)
        .args(&cmd.args)
        .current_dir("/")
        // Not in the daemon's process group: a ^C to the daemon is not a ^C to the pods.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut found = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find(READY_MARKER) {
                found = line[at + READY_MARKER.len()..].trim().parse::<i32>().ok();
                break;
            }
        }
        let _ = tx.send(found);
    });
    let pid1: i32 = match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Some(p)) => p,
        other => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!(
                "infra process {} did not start ({})",
                cmd.program.display(),
                if other.is_err() {
                    "timed out"
                } else {
                    "exited"
                }
            )));
        }
    };
    // The outer process exits once it reported; reap it.
    let _ = child.wait();
    let Some((start_time, false)) = proc_start(pid1) else {
        return Err(std::io::Error::other(
            "infra process exited right after starting",
        ));
    };
    // PID 1 itself is what stays and what is killed (by pid and start time).
    let infra = InfraProcess {
        pid: pid1,
        start_time,
        pid1,
    };
    let ns = PathBuf::from(format!("/proc/{pid1}/ns/pid"));
    if let Err(e) = crate::kernel::bind_pin(&ns, pin) {
        let _ = stop(&infra);
        return Err(e);
    }
    Ok(infra)
}

/// Kills the infra process (its PID 1 and so every process of the namespace follow), if it is
/// still the one that was started, and waits for it to go.
pub(crate) fn stop(infra: &InfraProcess) -> std::io::Result<()> {
    let alive = |p: i32| matches!(proc_start(p), Some((t, false)) if t == infra.start_time);
    if !alive(infra.pid) {
        return Ok(());
    }
    match nix::sys::signal::kill(Pid::from_raw(infra.pid), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => return Err(e.into()),
    }
    // For sandboxes of earlier versions `pid` is an outer process whose PID 1 dies of its
    // parent-death signal right after; wait for that too, so the namespace is empty when the
    // caller goes on to unpin it.
    let pid1_alive = || matches!(proc_start(infra.pid1), Some((_, false)));
    // The kernel takes a moment to tear a killed namespace down: look again soon, then less often.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut pause = Duration::from_micros(250);
    while std::time::Instant::now() < deadline {
        if !alive(infra.pid) && !pid1_alive() {
            return Ok(());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    Err(std::io::Error::other(format!(
        "infra process {} did not exit",
        infra.pid
    )))
}

/// The argument (after the infra role's own) that makes the infra program the user namespace
/// helper of a pod instead: see [`create_in_userns`].
const USERNS_ARG: &str = "userns";
/// The helper's lines to the daemon: its user namespace exists (the daemon writes the id maps),
/// and the rest of the pod's namespaces exist inside it (the daemon pins them).
const USERNS_READY: &str = "carapace-userns-ready";
const USERNS_DONE: &str = "carapace-userns-done";
/// Starts the line of a sysctl the namespace refused: `<marker><key>: <error>`.
const USERNS_SYSCTL_REFUSED: &str = "carapace-userns-sysctl-refused ";

/// What the helper makes inside the new user namespace, sent once the id maps are written.
#[derive(Debug, Serialize, Deserialize)]
struct UsernsPlan {
    net: bool,
    ipc: bool,
    uts: bool,
    hostname: Option<String>,
    /// `/proc/sys`-relative path and value.
    sysctls: Vec<(PathBuf, String)>,
}

/// The helper: a new user namespace, then (once the daemon has mapped it) new net, IPC and UTS
/// namespaces owned by it, configured by its root; it holds them until the daemon, done pinning,
/// closes its stdin.
fn userns_helper() -> std::io::Result<()> {
    use std::io::Read;
    unshare(CloneFlags::CLONE_NEWUSER)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{USERNS_READY}")?;
    out.flush()?;
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut line = String::new();
    input.read_line(&mut line)?;
    let plan: UsernsPlan = serde_json::from_str(&line).map_err(std::io::Error::other)?;
    // The namespace's root, so that what it makes is its root's (the creator holds every
    // capability in it until exec, whatever its ids).
    nix::unistd::setresgid(0.into(), 0.into(), 0.into())?;
    nix::unistd::setresuid(0.into(), 0.into(), 0.into())?;
    match make_in_userns(&plan) {
        Ok(()) => writeln!(out, "{USERNS_DONE}")?,
        Err(Refused::Sysctl(key, e)) => writeln!(out, "{USERNS_SYSCTL_REFUSED}{key}: {e}")?,
        Err(Refused::Other(e)) => return Err(e),
    }
    out.flush()?;
    // Until the daemon closes our stdin: what it pins must still exist when it does.
    let _ = input.read_to_end(&mut Vec::new());
    Ok(())
}

enum Refused {
    Sysctl(String, std::io::Error),
    Other(std::io::Error),
}

fn make_in_userns(plan: &UsernsPlan) -> Result<(), Refused> {
    let mut flags = CloneFlags::empty();
    for (asked, flag) in [
        (plan.net, CloneFlags::CLONE_NEWNET),
        (plan.ipc, CloneFlags::CLONE_NEWIPC),
        (plan.uts, CloneFlags::CLONE_NEWUTS),
    ] {
        if asked {
            flags |= flag;
        }
    }
    let other = |e: std::io::Error| Refused::Other(e);
    unshare(flags).map_err(|e| other(e.into()))?;
    if let (true, Some(h)) = (plan.uts, &plan.hostname) {
        nix::unistd::sethostname(h).map_err(|e| other(e.into()))?;
    }
    if plan.net {
        crate::sys::loopback_up().map_err(other)?;
    }
    for (path, value) in &plan.sysctls {
        if let Err(e) = std::fs::write(Path::new("/proc/sys").join(path), value) {
            let key = path.to_string_lossy().replace('/', ".");
            return Err(Refused::Sysctl(key, e));
        }
    }
    Ok(())
}

/// Makes the pod's user namespace with its id maps, and its other new namespaces inside it, and
/// pins them all: a helper process does the making (see [`userns_helper`]), the daemon writes
/// the maps (only a process outside the namespace with the capabilities may map host ids
/// other than its own) and pins what the helper made.
pub(crate) fn create_in_userns(
    req: &crate::kernel::NamespaceRequest,
    user: &crate::kernel::UserRequest,
) -> std::io::Result<()> {
    let plan = UsernsPlan {
        net: req.net.is_some(),
        ipc: req.ipc.is_some(),
        uts: req.uts.is_some(),
        hostname: req.hostname.clone(),
        sysctls: req
            .sysctls
            .iter()
            .map(|s| (s.path.clone(), s.value.clone()))
            .collect(),
    };
    in_user_namespace(&user.helper, &user.userns, &plan, |ns| {
        crate::kernel::bind_pin(&ns.join("user"), &user.pin)?;
        for (kind, pin) in [("net", &req.net), ("ipc", &req.ipc), ("uts", &req.uts)] {
            if let Some(pin) = pin {
                crate::kernel::bind_pin(&ns.join(kind), pin)?;
            }
        }
        Ok(())
    })
}

/// Runs `f` with the `/proc/<pid>/ns` directory of a helper in a new user namespace mapped as
/// `userns` (nothing else made in it): for probing what such a namespace can do.
pub fn with_user_namespace<T>(
    helper: &InfraCommand,
    userns: &crate::UserNamespace,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let plan = UsernsPlan {
        net: false,
        ipc: false,
        uts: false,
        hostname: None,
        sysctls: Vec::new(),
    };
    in_user_namespace(helper, userns, &plan, f)
}

fn in_user_namespace<T>(
    helper: &InfraCommand,
    userns: &crate::UserNamespace,
    plan: &UsernsPlan,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(&helper.program)
        .args(&helper.args)
        .arg(USERNS_ARG)
        .current_dir("/")
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let result = talk_to_userns_helper(&mut child, userns, plan).and_then(|()| {
        let ns = PathBuf::from(format!("/proc/{}/ns", child.id()));
        f(&ns)
    });
    // EOF on its stdin ends the helper; on an error it may be waiting for anything.
    drop(child.stdin.take());
    if result.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    result
}

fn talk_to_userns_helper(
    child: &mut std::process::Child,
    userns: &crate::UserNamespace,
    plan: &UsernsPlan,
) -> std::io::Result<()> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut next = || -> std::io::Result<String> {
        lines.next().unwrap_or_else(|| {
            Err(std::io::Error::other(
                "the user namespace helper exited early",
            ))
        })
    };
    if next()? != USERNS_READY {
        return Err(std::io::Error::other(
            "the user namespace helper said something unexpected",
        ));
    }
    let pid = child.id();
    let map = |m: &[crate::IdMapping]| {
        m.iter()
            .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.length))
            .collect::<String>()
    };
    std::fs::write(format!("/proc/{pid}/uid_map"), map(&userns.uids))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), map(&userns.gids))?;
    let mut text = serde_json::to_string(plan).map_err(std::io::Error::other)?;
    text.push('\n');
    stdin.write_all(text.as_bytes())?;
    stdin.flush()?;
    let said = next()?;
    // Held until the caller drops it: the helper must not exit before the pins exist.
    child.stdin = Some(stdin);
    if let Some(refused) = said.strip_prefix(USERNS_SYSCTL_REFUSED) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            refused.to_owned(),
        ));
    }
    if said != USERNS_DONE {
        return Err(std::io::Error::other(format!(
            "the user namespace helper: {said}"
        )));
    }
    Ok(())
}
