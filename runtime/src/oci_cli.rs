//! Containers of a pod whose runtime handler names an OCI runtime (`[runtimes.<name>]`): the
//! monitor has the runtime's command line (`create`, `start`, `exec`, `delete`) do what the
//! built-in executor does, and keeps everything else: it is the container init's parent (a
//! subreaper, as containerd's shim), so it reaps it and records its exit; it owns the stdio
//! (the pipes are the runtime's own stdio, which it hands to the init; a terminal's master comes
//! back over a console socket), writes the CRI log and serves attach and signals.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::config::OciRuntime;
use crate::error::{Context, Error, Result};
use crate::executor::{InitStdio, Overlay};

/// The runtime's log (`--log`, JSON lines; errors and warnings only at its default level), read
/// back to say why a call failed. Removed before each create.
const LOG: &str = "runtime.log";
const PID_FILE: &str = "init.pid";
const CONSOLE_SOCKET: &str = "console.sock";

fn command(rt: &OciRuntime, bundle: &Path) -> Command {
    let mut cmd = Command::new(&rt.binary);
    cmd.arg("--root")
        .arg(&rt.root)
        .arg("--log")
        .arg(bundle.join(LOG))
        .arg("--log-format")
        .arg("json")
        .args(&rt.args);
    cmd
}

/// The last error the runtime logged, else what it printed, else its exit status.
fn failure(
    rt: &OciRuntime,
    bundle: &Path,
    what: &str,
    out: &[u8],
    status: std::process::ExitStatus,
) -> String {
    let logged = std::fs::read_to_string(bundle.join(LOG))
        .ok()
        .and_then(|text| {
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["level"] == "error" || v["level"] == "fatal")
                .filter_map(|v| v["msg"].as_str().map(str::to_owned))
                .next_back()
        });
    let printed = String::from_utf8_lossy(out).trim().to_string();
    let why = logged
        .or((!printed.is_empty()).then_some(printed))
        .unwrap_or_else(|| status.to_string());
    format!(
        "runtime handler {:?}: {} {what}: {}",
        rt.handler,
        rt.binary.display(),
        why.replace('\n', " ")
    )
}

/// Creates and starts the container with the runtime; returns the init's pid, or the line to
/// report instead (`error ...`). The monitor must be single-threaded, with SIGCHLD blocked (it
/// reaps the runtime's processes itself here, by pid).
pub(crate) fn start(
    bundle: &Path,
    id: &str,
    rt: &OciRuntime,
    overlay: &Overlay,
    stdio: InitStdio,
) -> Result<std::result::Result<(Pid, Option<OwnedFd>), String>> {
    // The init is the child of `<runtime> create`, which exits once it is set up: as a
    // subreaper the monitor inherits it.
    nix::sys::prctl::set_child_subreaper(true).ctx("become a subreaper")?;
    // In a mount namespace of the monitor's own, which the runtime copies for the container:
    // the overlay goes with the monitor, after the container, whatever ends it. Host mounts
    // still reach it (and the container); none of its reach the host.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).ctx("unshare mount namespace")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .ctx("make / rslave")?;
    let rootfs = bundle.join("rootfs");
    overlay.mount(&rootfs)?;
    for stale in [PID_FILE, LOG, CONSOLE_SOCKET] {
        let _ = std::fs::remove_file(bundle.join(stale));
    }
    let mut cmd = command(rt, bundle);
    cmd.arg("create")
        .arg("--bundle")
        .arg(bundle)
        .arg("--pid-file")
        .arg(bundle.join(PID_FILE));
    let mut console = None;
    match stdio {
        InitStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            // The runtime hands its own stdio to the init.
            cmd.stdin(stdin.map(Stdio::from).unwrap_or_else(Stdio::null))
                .stdout(Stdio::from(stdout))
                .stderr(Stdio::from(stderr));
        }
        InitStdio::Terminal(_) => {
            // Named through the open directory, by this process's pid for the runtime: the
            // bundle's own path may be longer than the 107 bytes a socket address holds.
            let dir = std::fs::File::open(bundle).map_err(|e| Error::io("open", bundle, e))?;
            let path = PathBuf::from(format!(
                "/proc/{}/fd/{}/{CONSOLE_SOCKET}",
                std::process::id(),
                dir.as_raw_fd()
            ));
            let listener = std::os::unix::net::UnixListener::bind(&path)
                .map_err(|e| Error::io("bind", &bundle.join(CONSOLE_SOCKET), e))?;
            cmd.arg("--console-socket")
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            console = Some((dir, listener));
        }
    }
    cmd.arg(id);
    let child = cmd
        .spawn()
        .map_err(|e| Error::internal(format!("run {}", rt.binary.display()), e))?;
    // The runtime's (and so the init's) copies are the only ones left open.
    drop(cmd);
    let master = match &console {
        Some((_, listener)) => match receive_master(listener, child.id() as i32) {
            Ok(m) => Some(m),
            Err(e) => {
                let out = child
                    .wait_with_output()
                    .map_err(|e| Error::internal("wait for the runtime", e))?;
                let _ = std::fs::remove_file(bundle.join(CONSOLE_SOCKET));
                return Ok(Err(format!(
                    "error {}: {e}\n",
                    failure(rt, bundle, "create", &out.stderr, out.status)
                )));
            }
        },
        None => None,
    };
    drop(console);
    let _ = std::fs::remove_file(bundle.join(CONSOLE_SOCKET));
    let out = child
        .wait_with_output()
        .map_err(|e| Error::internal("wait for the runtime", e))?;
    if !out.status.success() {
        return Ok(Err(format!(
            "error {}\n",
            failure(rt, bundle, "create", &out.stderr, out.status)
        )));
    }
    let pid = std::fs::read_to_string(bundle.join(PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::Internal(format!("{} create wrote no pid", rt.binary.display())))?;
    let out = command(rt, bundle)
        .arg("start")
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::internal(format!("run {}", rt.binary.display()), e))?;
    if !out.status.success() {
        let why = failure(rt, bundle, "start", &out.stderr, out.status);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        delete(rt, bundle, id);
        return Ok(Err(format!("error {why}\n")));
    }
    Ok(Ok((Pid::from_raw(pid), master)))
}

/// The pty master the runtime sends over the console socket (`--console-socket`), or an error
/// once the runtime (pid `runtime`) has exited without sending one.
fn receive_master(listener: &std::os::unix::net::UnixListener, runtime: i32) -> Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    listener.set_nonblocking(true).ctx("console socket")?;
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if crate::sys::wait_exited(runtime, Duration::from_millis(10)) {
                    // One more look: it may have connected just before exiting.
                    if let Ok((c, _)) = listener.accept() {
                        break c;
                    }
                    return Err(Error::Internal("the runtime sent no terminal".into()));
                }
            }
            Err(e) => return Err(Error::internal("accept on the console socket", e)),
        }
    };
    conn.set_nonblocking(false).ctx("console socket")?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .ctx("console socket")?;
    let mut name = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| Error::Internal(format!("receive the terminal: {}", e.desc())))?;
    for c in msg
        .cmsgs()
        .map_err(|e| Error::Internal(format!("receive the terminal: {}", e.desc())))?
    {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            let master = crate::sys::own_fd(fd);
            for &extra in &fds[1..] {
                drop(crate::sys::own_fd(extra));
            }
            return Ok(master);
        }
    }
    Err(Error::Internal("the runtime sent no terminal".into()))
}

/// `<runtime> delete --force`: the runtime's state and the cgroups it made. Best effort, and
/// quiet when the runtime does not know the container (never started, or already deleted).
pub(crate) fn delete(rt: &OciRuntime, bundle: &Path, id: &str) {
    let out = command(rt, bundle)
        .arg("delete")
        .arg("--force")
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let msg = String::from_utf8_lossy(&o.stderr);
            if !msg.contains("does not exist") {
                tracing::warn!(container_id = id, handler = %rt.handler, error = %msg.trim(), "runtime delete");
            }
        }
        Err(e) => {
            tracing::warn!(container_id = id, handler = %rt.handler, error = %e, "runtime delete")
        }
    }
}

/// Runs `args` in the container through `<runtime> exec`, with this process's stdio as the
/// command's (a pty slave with `tty`: the runtime relays it through a terminal of its own).
/// Returns the exit code (128 + signal when killed); on `timeout` (zero: none) the command is
/// killed and 124 returned.
pub(crate) fn exec(
    rt: &OciRuntime,
    bundle: &Path,
    id: &str,
    args: &[String],
    tty: bool,
    timeout: Duration,
) -> Result<u8> {
    let pid_file = bundle.join(format!("exec-{}.pid", std::process::id()));
    let mut cmd = command(rt, bundle);
    let mut cmd_args: Vec<std::ffi::OsString> = Vec::new();
    cmd_args.push("exec".into());
    if tty {
        cmd_args.push("--tty".into());
    }
    cmd_args.push("--pid-file".into());
    cmd_args.push(pid_file.clone().into());
    cmd_args.push(id.into());
    cmd_args.extend(args.iter().map(Into::into));
    let mut child = cmd
        .args(cmd_args)
        .spawn()
        .map_err(|e| Error::internal(format!("run {}", rt.binary.display()), e))?;
    let runtime = child.id() as i32;
    let timed_out = !timeout.is_zero() && !crate::sys::wait_exited(runtime, timeout);
    if timed_out {
        // The command, by the pid the runtime wrote; the runtime then exits with it.
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if !crate::sys::wait_exited(runtime, Duration::from_secs(2)) {
            let _ = child.kill();
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::internal("wait for the runtime", e));
    let _ = std::fs::remove_file(&pid_file);
    let status = status?;
    if timed_out {
        return Ok(124);
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c as u8,
        (None, Some(s)) => 128u8.wrapping_add(s as u8),
        _ => 255,
    })
}

/// What an OCI runtime reads differently from the built-in executor: `cgroupsPath` is relative
/// to the caller's own cgroup for a runtime's cgroupfs driver when it is not absolute, and the
/// container's cgroup is the one carapace made, relative to each hierarchy's root.
pub(crate) fn adapt_spec(
    spec: &mut oci_spec::runtime::Spec,
    config: &crate::config::ContainerConfig,
) -> Result<()> {
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(format!(
        "/{}",
        crate::spec::cgroup_path(config)
    ))));
    // runc refuses a hostname without a UTS namespace of the container's own or the pod's (a
    // host-network pod shares the host's); the built-in executor sets none there either.
    let private_uts = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Uts);
    spec.set_linux(Some(linux));
    if !private_uts {
        spec.set_hostname(None);
    }
    // runc applies every capability it is given and fails with EPERM on one the host's bounding
    // set lacks (this node has no CAP_SYS_RESOURCE), where the built-in executor leaves those
    // out; so does containerd's "all capabilities" for a privileged container (the current
    // process's). The same clamp, here.
    if let Some(mut process) = spec.process().clone()
        && let Some(mut caps) = process.capabilities().clone()
    {
        let bounding = ::caps::read(None, ::caps::CapSet::Bounding)
            .map_err(|e| Error::Internal(format!("reading the bounding set: {e}")))?;
        let keep = |set: &Option<oci_spec::runtime::Capabilities>| {
            set.as_ref().map(|s| {
                s.iter()
                    .filter(|c| {
                        crate::capabilities::kernel_cap(c).is_some_and(|c| bounding.contains(&c))
                    })
                    .copied()
                    .collect()
            })
        };
        caps.set_bounding(keep(caps.bounding()));
        caps.set_effective(keep(caps.effective()));
        caps.set_permitted(keep(caps.permitted()));
        caps.set_inheritable(keep(caps.inheritable()));
        caps.set_ambient(keep(caps.ambient()));
        process.set_capabilities(Some(caps));
        spec.set_process(Some(process));
    }
    Ok(())
}
