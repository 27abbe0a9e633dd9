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

use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::config::{ContainerConfig, Mount, OciRuntime, Propagation};
use crate::error::{Context, Error, Result};
use crate::executor::{InitStdio, Overlay};
use crate::sys;

/// The runtime's log (`--log`, JSON lines; errors and warnings only at its default level), read
/// back to say why a call failed. Removed before each create.
const LOG: &str = "runtime.log";
const PID_FILE: &str = "init.pid";
const CONSOLE_SOCKET: &str = "console.sock";
/// The bundle's directory of Bidirectional volumes' mount points (see `start`).
const PROPAGATED: &str = "propagated";
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// The Bidirectional volumes of `config`, each with the place in the bundle (relative) where
/// `start` attaches the monitor's peer copy of it and the spec names as its source.
fn bidirectional(config: &ContainerConfig) -> impl Iterator<Item = (PathBuf, &Mount)> {
    config
        .mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| m.image.is_none() && m.propagation == Propagation::Bidirectional)
        .map(|(i, m)| (Path::new(PROPAGATED).join(i.to_string()), m))
}

/// An empty directory, or file for a file volume, to attach a volume's copy on; one already
/// there is used as it is.
fn make_spot(spot: &Path, is_dir: bool) -> Result<()> {
    if let Some(parent) = spot.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    let made = if is_dir {
        std::fs::create_dir(spot)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(spot)
            .map(drop)
    };
    match made {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(Error::io("create", spot, e))
        }
        _ => Ok(()),
    }
}

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
        .and_then(|text| logged_errors(&text));
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

/// The errors a runtime's JSON log holds, in order, each by its end (where Go's wrapped errors
/// keep the cause), joined: runsc logs the sandbox's reason first, then its own generic one.
fn logged_errors(text: &str) -> Option<String> {
    const KEEP: usize = 300;
    let errors: Vec<String> = text
        .lines()
        // One object a line from runc; runsc (Debian's 2022 build) leaves out some newlines.
        .flat_map(|l| {
            serde_json::Deserializer::from_str(l)
                .into_iter::<serde_json::Value>()
                .map_while(|v| v.ok())
        })
        .filter(|v| v["level"] == "error" || v["level"] == "fatal")
        .filter_map(|v| {
            let msg = v["msg"].as_str()?;
            Some(match msg.char_indices().rev().nth(KEEP - 1) {
                Some((i, _)) if i > 0 => format!("...{}", &msg[i..]),
                _ => msg.to_owned(),
            })
        })
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// Creates and starts the container with the runtime; returns the init's pid, or the line to
/// report instead (`error ...`). The monitor must be single-threaded, with SIGCHLD blocked (it
/// reaps the runtime's processes itself here, by pid).
pub(crate) fn start(
    bundle: &Path,
    config: &ContainerConfig,
    rt: &OciRuntime,
    overlay: &Overlay,
    stdio: InitStdio,
) -> Result<std::result::Result<(Pid, Option<OwnedFd>), String>> {
    let id = config.id.as_str();
    // The init is the child of `<runtime> create`, which exits once it is set up: as a
    // subreaper the monitor inherits it.
    nix::sys::prctl::set_child_subreaper(true).ctx("become a subreaper")?;
    // In a mount namespace of the monitor's own, which the runtime copies for the container:
    // the overlay goes with the monitor, after the container, whatever ends it. Host mounts
    // still reach it (and the container); none of its reach the host, but for the mounts the
    // container makes in a Bidirectional volume. So it is a copy of the daemon's namespace, not
    // of the slave one a helper that sealed itself runs in (`monitor::seal_exe`): our copies of
    // the host's shared mounts are peers of them until `/` is made rslave below.
    if let Some(ns) = crate::executor::host_mount_ns() {
        setns(ns, CloneFlags::CLONE_NEWNS).ctx("join the daemon's mount namespace")?;
    }
    unshare(CloneFlags::CLONE_NEWNS).ctx("unshare mount namespace")?;
    let trees = bidirectional(config)
        .map(|(at, m)| {
            sys::clone_mount_tree(&m.host_path)
                .map(|tree| (bundle.join(at), m.host_path.is_dir(), tree))
        })
        .collect::<Result<Vec<_>>>()?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .ctx("make / rslave")?;
    // Attached under the bundle, the spec's source for the volume (see `adapt_spec`), on a
    // slave mount now: attaching there reaches no other namespace, and the runtime's `rbind` of
    // a peer is a peer of the host's mount too. Over the host path itself it could be under a
    // shared mount of ours (another Bidirectional volume's) and be copied back to the host.
    for (spot, is_dir, tree) in &trees {
        make_spot(spot, *is_dir)?;
        let target = nix::fcntl::open(
            spot,
            OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .ctx(format_args!("open {}", spot.display()))?;
        sys::attach_mount_tree(tree, &target)?;
    }
    // Attached, they live with the namespace; their fds would stay open for the container's life.
    drop(trees);
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
/// command's (a pty slave with `tty`: runc relays it through a terminal of its own, runsc gives
/// it to the command as its terminal).
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
    // gVisor's pid file names `runsc exec` itself, which waits in the command's place; the
    // command is only reached inside the sandbox, by the pid it has there.
    let gvisor = is_gvisor(rt);
    let internal_pid_file = bundle.join(format!("exec-{}.ipid", std::process::id()));
    let process_file = bundle.join(format!("exec-{}.json", std::process::id()));
    let mut cmd = command(rt, bundle);
    let mut cmd_args: Vec<std::ffi::OsString> = Vec::new();
    cmd_args.push("exec".into());
    if tty && !gvisor {
        cmd_args.push("--tty".into());
    }
    cmd_args.push("--pid-file".into());
    cmd_args.push(pid_file.clone().into());
    if gvisor {
        cmd_args.push("--internal-pid-file".into());
        cmd_args.push(internal_pid_file.clone().into());
    }
    if tty && gvisor {
        // runsc has no `--tty`, and (Debian's 2022 build) makes its stdin the command's
        // terminal only when a process file says `terminal`: the container's process, then.
        let mut process = crate::spec::load(bundle)?
            .process()
            .clone()
            .ok_or_else(|| Error::Internal("spec has no process".into()))?;
        process.set_args(Some(args.to_vec()));
        process.set_terminal(Some(true));
        let json = serde_json::to_vec(&process).map_err(|e| Error::internal("process file", e))?;
        std::fs::write(&process_file, json).map_err(|e| Error::io("write", &process_file, e))?;
        cmd_args.push("--process".into());
        cmd_args.push(process_file.clone().into());
        cmd_args.push(id.into());
    } else {
        cmd_args.push(id.into());
        cmd_args.extend(args.iter().map(Into::into));
    }
    let spawned = cmd.args(cmd_args).spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&process_file);
            return Err(Error::internal(format!("run {}", rt.binary.display()), e));
        }
    };
    let runtime = child.id() as i32;
    let timed_out = !timeout.is_zero() && !crate::sys::wait_exited(runtime, timeout);
    if timed_out {
        let read_pid = |file: &Path| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .filter(|p| *p > 0)
        };
        // The command, by the pid the runtime wrote; the runtime then exits with it.
        if gvisor {
            if let Some(pid) = read_pid(&internal_pid_file) {
                let _ = command(rt, bundle)
                    .args(["kill", "--pid", &pid.to_string(), id, "9"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        } else if let Some(pid) = read_pid(&pid_file) {
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
    let _ = std::fs::remove_file(&internal_pid_file);
    let _ = std::fs::remove_file(&process_file);
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

/// gVisor's `runsc`, known by its file name, whose `exec` differs from runc's (see `exec`).
fn is_gvisor(rt: &OciRuntime) -> bool {
    rt.binary
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"runsc"))
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
    // A runtime that runs a pod as one instance (runsc, Kata) reads containerd's type
    // "container" as joining the instance the pod's sandbox container started, under the
    // sandbox-id annotation; carapace starts none there (no pause container), so each container
    // is an instance of its own, which is what no type says.
    if let Some(mut annotations) = spec.annotations().clone() {
        annotations.remove(CONTAINER_TYPE);
        spec.set_annotations(Some(annotations));
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
    // A Bidirectional volume is bound from the monitor's peer copy of it, in the bundle (see
    // `start`): the host path itself is a slave mount in the namespace the runtime starts from,
    // whose copies would never send the container's mounts back to the host.
    if let Some(bundle) = spec.root().as_ref().and_then(|r| r.path().parent())
        && let Some(mut mounts) = spec.mounts().clone()
    {
        let bundle = bundle.to_path_buf();
        for (at, volume) in bidirectional(config) {
            if let Some(m) = mounts
                .iter_mut()
                .find(|m| m.destination() == Path::new(&volume.container_path))
            {
                m.set_source(Some(bundle.join(at)));
            }
        }
        spec.set_mounts(Some(mounts));
    }
    Ok(())
}

#[cfg(test)]
mod log_tests {
    use super::*;

    #[test]
    fn errors_are_read_from_runc_lines_and_runscs_run_together_objects() {
        let runc = "{\"level\":\"info\",\"msg\":\"hi\"}\n\
                    {\"level\":\"error\",\"msg\":\"exec: \\\"/x\\\": no such file\"}\n";
        assert_eq!(
            logged_errors(runc).as_deref(),
            Some("exec: \"/x\": no such file")
        );
        let long = format!(
            "setCapsAndCallSelf({}): invalid capability",
            "x".repeat(500)
        );
        let runsc = format!(
            "{{\"msg\":\"{long}\",\"level\":\"error\"}}{{\"msg\":\"waiting: EOF\",\"level\":\"error\"}}"
        );
        let got = logged_errors(&runsc).unwrap();
        assert!(got.starts_with("...x"), "{got}");
        assert!(
            got.ends_with("x): invalid capability; waiting: EOF"),
            "{got}"
        );
        assert_eq!(got.chars().count(), 3 + 300 + "; waiting: EOF".len());
        assert_eq!(
            logged_errors("{\"level\":\"warning\",\"msg\":\"w\"}\nnot json\n"),
            None
        );
    }

    #[test]
    fn gvisor_is_known_by_its_file_name() {
        let rt = |binary: &str| OciRuntime {
            handler: "h".into(),
            binary: binary.into(),
            root: "/run/r".into(),
            args: vec![],
        };
        assert!(is_gvisor(&rt("/usr/bin/runsc")));
        assert!(is_gvisor(&rt("/opt/gvisor/runsc-20221219")));
        assert!(!is_gvisor(&rt("/usr/sbin/runc")));
        assert!(!is_gvisor(&rt("/opt/runsc/crun")));
    }
}

#[cfg(test)]
mod propagation_tests {
    use super::*;

    #[test]
    fn bidirectional_volumes_are_bound_from_their_spots_in_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "").unwrap();
        let volume = |host: &Path, at: &str, propagation| Mount {
            host_path: host.into(),
            container_path: at.into(),
            readonly: false,
            propagation,
            recursive_readonly: false,
            image: None,
        };
        let config = ContainerConfig {
            id: "c1".into(),
            process: crate::config::Process {
                args: vec!["true".into()],
                ..Default::default()
            },
            rootfs: crate::config::RootFs {
                lower_dirs: vec!["/lower".into()],
                readonly: false,
            },
            mounts: vec![
                volume(dir.path(), "/private", Propagation::Private),
                volume(dir.path(), "/bidi", Propagation::Bidirectional),
                volume(dir.path(), "/h2c", Propagation::HostToContainer),
                volume(&dir.path().join("f"), "/file", Propagation::Bidirectional),
            ],
            ..Default::default()
        };
        let mut spec = crate::spec::build(&config, Path::new("/b/rootfs")).unwrap();
        adapt_spec(&mut spec, &config).unwrap();
        let source = |at: &str| {
            spec.mounts()
                .iter()
                .flatten()
                .find(|m| m.destination() == Path::new(at))
                .and_then(|m| m.source().clone())
                .unwrap()
        };
        // Named by the volume's index among the config's mounts, as `start` attaches them.
        assert_eq!(source("/bidi"), Path::new("/b/propagated/1"));
        assert_eq!(source("/file"), Path::new("/b/propagated/3"));
        assert_eq!(source("/private"), dir.path());
        assert_eq!(source("/h2c"), dir.path());
        let spots: Vec<_> = bidirectional(&config).map(|(at, _)| at).collect();
        assert_eq!(spots, ["propagated/1", "propagated/3"].map(PathBuf::from));
    }
}
