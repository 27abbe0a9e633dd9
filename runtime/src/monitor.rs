//! The per-container monitor and the exec helper: roles of the `carapace` binary re-exec'd by the
//! daemon (`carapace runtime-helper monitor <bundle>` / `... exec <bundle>`). The monitor detaches
//! (fork + setsid) so it outlives the daemon, starts the container's init through the executor,
//! owns its stdout/stderr and writes them as CRI logs, reaps it, records the exit atomically and
//! answers a unix control socket (`reopen`, `kill <sig> [all]`, `ping`). Both roles first re-exec
//! from a read-only bind of their own binary, so no container process can ever open the host's
//! carapace binary for writing through `/proc/<pid>/exe` (CVE-2019-5736). It never talks CRI.

use std::ffi::{CString, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::attach;
use crate::cgroup::ContainerCgroup;
use crate::error::{Context, Error, Result};
use crate::executor;
use crate::fsutil::{unix_nanos, write_state};
use crate::logs::{LogWriter, MAX_LINE, Stream};

/// The hidden subcommand the `carapace` binary dispatches to [`helper_main`].
pub const HELPER_SUBCOMMAND: &str = "runtime-helper";
const SEALED_ENV: &str = "_CARAPACE_SEALED_EXE";

/// What the daemon persisted at create and the monitor reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub config: crate::config::ContainerConfig,
    pub overlay: executor::Overlay,
    pub cgroup_path: String,
    pub created_at: i64,
}

/// Written by the monitor once the init has exec'd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Started {
    pub pid: i32,
    pub monitor_pid: i32,
    pub started_at: i64,
    /// The init's start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`): with the
    /// pid, what tells the init from a later process given the same pid. `None` in records of
    /// monitors older than it.
    #[serde(default)]
    pub start_time: Option<u64>,
}

impl Started {
    /// The init's `/proc/<pid>` directory, once it is known to be the init's and not a later
    /// process's that took over the pid. Everything opened through it (its `ns/*`, `root`) is
    /// that process's or fails: the directory is bound to the process, not to the number, so it
    /// can be used to join the container's namespaces without racing a reuse.
    pub(crate) fn open_init(&self, cgroup: &ContainerCgroup) -> Result<OwnedFd> {
        use nix::fcntl::openat;
        let gone = || {
            Error::FailedPrecondition(format!(
                "the container's init (pid {}) has exited",
                self.pid
            ))
        };
        let dir = open(
            Path::new(&format!("/proc/{}", self.pid)),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|_| gone())?;
        let read = |name: &str| -> Result<String> {
            let fd = openat(
                &dir,
                name,
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|_| gone())?;
            let mut text = String::new();
            std::fs::File::from(fd)
                .read_to_string(&mut text)
                .map_err(|_| gone())?;
            Ok(text)
        };
        let same = match self.start_time {
            Some(t) => proc_start_time(&read("stat")?) == Some(t),
            // Recorded by an older monitor: a process of another pod or of the host is not in
            // this container's cgroup.
            None => in_cgroup(&read("cgroup")?, cgroup),
        };
        if !same {
            return Err(gone());
        }
        Ok(dir)
    }
}

/// Whether a `/proc/<pid>/cgroup` text places the process in `cgroup` (in any hierarchy).
fn in_cgroup(text: &str, cgroup: &ContainerCgroup) -> bool {
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|p| p.trim_matches('/') == cgroup.path())
}

/// The start time (field 22) of a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses: fields are counted after its last `)`.
fn proc_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Written by the monitor once the init has been reaped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or 128 + signal when killed by one.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// Nanoseconds since the epoch.
    pub finished_at: i64,
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::internal(path.display(), e))
}

pub(crate) fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec(v).map_err(|e| Error::internal(path.display(), e))?;
    write_state(path, &bytes)
}

/// Entry point of the helper roles: `args` are what follows [`HELPER_SUBCOMMAND`] on the command
/// line: `monitor <bundle>` or `exec <bundle>`. Call it before any thread (tokio) starts.
pub fn helper_main(args: Vec<OsString>) -> ExitCode {
    let role = args
        .first()
        .and_then(|a| a.to_str())
        .unwrap_or_default()
        .to_string();
    let Some(bundle) = args.get(1).map(PathBuf::from) else {
        eprintln!("usage: carapace {HELPER_SUBCOMMAND} monitor|exec <bundle>");
        return ExitCode::from(2);
    };
    // Not dumpable, for every role and each process they fork, until the container's process
    // execs (the kernel makes it dumpable again then): a process of the container that can see
    // one of ours (the exec helper's child once it joined the PID namespace, the init before its
    // exec) must not read its environment, fds or memory through /proc or ptrace it, as runc
    // does (CVE-2016-9962). The monitor holds the container's logs and stdio, so it too. Set on
    // each run of this function: the re-exec from the sealed binary resets it.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("carapace {role}: PR_SET_DUMPABLE: {}", e.desc());
        return ExitCode::from(125);
    }
    if let Err(e) = seal_exe(&bundle) {
        eprintln!("carapace {role}: {e}");
        return ExitCode::from(125);
    }
    let r = match role.as_str() {
        "monitor" => monitor(&bundle),
        "exec" => exec_helper(&bundle),
        _ => Err(Error::InvalidArgument(format!("unknown role {role:?}"))),
    };
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("carapace {role}: {e}");
            ExitCode::from(125)
        }
    }
}

/// Re-executes this process from a read-only bind mount of its own binary, in a private mount
/// namespace, then detaches that mount: `/proc/<pid>/exe` of every helper (and of the container's
/// init until it execs) names a file on a read-only mount, so it cannot be opened for writing.
fn seal_exe(bundle: &Path) -> Result<()> {
    if std::env::var_os(SEALED_ENV).is_some() || crate::sealed::running_sealed() {
        return Ok(());
    }
    // Kept open across the re-exec: a container's init starts from the daemon's mount namespace
    // so that its Bidirectional volumes are peers of the host's mounts, not slaves of ours.
    let host_ns = open("/proc/self/ns/mnt", OFlag::O_RDONLY, Mode::empty()).ctx("open mnt ns")?;
    unshare(CloneFlags::CLONE_NEWNS).ctx("unshare mount namespace")?;
    // Host mounts and unmounts still reach us; ours never reach the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .ctx("make / rslave")?;
    let spot = bundle.join(".exe");
    std::fs::write(&spot, b"").map_err(|e| Error::io("create", &spot, e))?;
    // By path: the file behind /proc/self/exe sits on a mount of the namespace we just left, which
    // bind(2) refuses; the same path in our copy of the namespace is the same file.
    let exe = std::fs::read_link("/proc/self/exe").ctx("readlink /proc/self/exe")?;
    mount(
        Some(&exe),
        &spot,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx("bind exe")?;
    mount(
        None::<&str>,
        &spot,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .ctx("remount exe read-only")?;
    let fd = open(&spot, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).ctx("open sealed exe")?;
    umount2(&spot, MntFlags::MNT_DETACH).ctx("detach sealed exe")?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_encoded_bytes()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::InvalidArgument("NUL in argv".into()))?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(format!("{SEALED_ENV}=1")).map_err(|e| Error::internal("env", e))?);
    let ns_env = format!("{}={}", executor::HOST_MNTNS_ENV, host_ns.as_raw_fd());
    env.push(CString::new(ns_env).map_err(|e| Error::internal("env", e))?);
    let e = nix::unistd::fexecve(fd.as_fd(), &args, &env).unwrap_err();
    Err(Error::Internal(format!(
        "re-exec sealed binary: {}",
        e.desc()
    )))
}

fn report(out: &mut Option<std::fs::File>, line: &str) {
    if let Some(mut f) = out.take() {
        let _ = f.write_all(line.as_bytes());
    }
}

fn monitor(bundle: &Path) -> Result<u8> {
    // Detach: the daemon waits for this first process only; the child lives on under init.
    match crate::sys::fork_single_threaded()? {
        ForkResult::Parent { .. } => return Ok(0),
        ForkResult::Child => {}
    }
    nix::unistd::setsid().ctx("setsid")?;
    // The daemon reads our stdout for one line: `ok <pid>` or `error <message>`.
    let mut out = Some(std::fs::File::from(
        nix::unistd::dup(std::io::stdout().as_fd()).ctx("dup stdout")?,
    ));
    let null = open(
        Path::new("/dev/null"),
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx("open /dev/null")?;
    for target in [0, 1, 2] {
        let _ = match target {
            0 => nix::unistd::dup2_stdin(&null),
            1 => nix::unistd::dup2_stdout(&null),
            _ => nix::unistd::dup2_stderr(&null),
        };
    }
    match run_monitor(bundle, &mut out) {
        Ok(()) => Ok(0),
        Err(e) => {
            report(&mut out, &format!("error {e}\n"));
            Ok(1)
        }
    }
}

/// Bytes queued for one attached client at most; a client further behind is disconnected, so it
/// never holds up the container or its log.
const CLIENT_BUFFER: usize = 256 * 1024;
/// Clients' input queued for the container's stdin at most; past it clients are not read (their
/// socket buffers fill and they wait), the container is never blocked on.
const STDIN_BUFFER: usize = 64 * 1024;
const READ_CHUNK: usize = attach::MAX_PAYLOAD;
/// Once the container's init exits, how long processes it left behind may keep its output open
/// before the monitor records the exit anyway.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long the monitor must have had nothing to do before it counts its setting up as over
/// (see `release_setup_memory`): the daemon's first calls after a start (status, the kubelet's
/// first look) wake it in the meantime, and would otherwise fault back code just given back.
const QUIET: Duration = Duration::from_secs(1);

/// One attached client: the connection, what it asked for, bytes waiting to go out to it.
struct Client {
    conn: UnixStream,
    streams: attach::Streams,
    out: Vec<u8>,
    input: attach::Decoder,
    /// Its input ended (closed or gone); counted once for `stdin_once`.
    stdin_ended: bool,
    gone: bool,
}

/// The container's stdio on the monitor's side.
struct Stdio {
    /// What the container writes: the stdout and stderr pipes, or the pty master alone.
    outputs: Vec<(Option<std::fs::File>, Stream)>,
    /// Where clients' input goes: the stdin pipe or the pty master; `None` without stdin or once
    /// it was closed.
    stdin: Option<std::fs::File>,
    queue: Vec<u8>,
    /// Close stdin once `queue` has drained (`stdin_once` and the first session's input ended).
    close_stdin: bool,
    /// The pty master, for resizes.
    master: Option<std::fs::File>,
    has_stdin: bool,
    stdin_once: bool,
}

fn nonblocking(f: &impl AsFd) -> Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL).ctx("F_GETFL")?);
    fcntl(f, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).ctx("F_SETFL")?;
    Ok(())
}

/// Makes the container's stdio: a pty with `terminal`, else pipes (and a stdin pipe with `stdin`).
fn make_stdio(config: &crate::config::Process) -> Result<(Stdio, executor::InitStdio)> {
    let mut io = Stdio {
        outputs: Vec::new(),
        stdin: None,
        queue: Vec::new(),
        close_stdin: false,
        master: None,
        has_stdin: config.stdin,
        stdin_once: config.stdin_once,
    };
    if config.terminal {
        let pty = crate::terminal::open_pty()?;
        let master = std::fs::File::from(pty.master);
        let clone = || master.try_clone().ctx("dup pty master");
        io.outputs.push((Some(clone()?), Stream::Stdout));
        if config.stdin {
            io.stdin = Some(clone()?);
        }
        io.master = Some(master);
        return Ok((io, executor::InitStdio::Terminal(pty.slave)));
    }
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx("pipe")?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx("pipe")?;
    io.outputs
        .push((Some(std::fs::File::from(out_r)), Stream::Stdout));
    io.outputs
        .push((Some(std::fs::File::from(err_r)), Stream::Stderr));
    let stdin = if config.stdin {
        let (in_r, in_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx("pipe")?;
        nonblocking(&in_w)?;
        io.stdin = Some(std::fs::File::from(in_w));
        Some(in_r)
    } else {
        None
    };
    Ok((
        io,
        executor::InitStdio::Pipes {
            stdin,
            stdout: out_w,
            stderr: err_w,
        },
    ))
}

impl Stdio {
    /// Makes `master` the container's terminal: an OCI runtime made it and sent it over the
    /// console socket, in place of the pty the monitor opened.
    fn use_master(&mut self, master: OwnedFd) -> Result<()> {
        nonblocking(&master)?;
        let master = std::fs::File::from(master);
        let clone = || master.try_clone().ctx("dup pty master");
        self.outputs = vec![(Some(clone()?), Stream::Stdout)];
        self.stdin = if self.has_stdin { Some(clone()?) } else { None };
        self.master = Some(master);
        Ok(())
    }

    /// A client's input ended: with `stdin_once` the first such end closes the container's stdin
    /// (a terminal gets an end-of-file character first, as a user's Ctrl-D).
    fn input_ended(&mut self) {
        if self.stdin_once && !self.close_stdin {
            self.close_stdin = true;
            if self.master.is_some() {
                self.queue.push(0x04);
            }
        }
    }

    /// Writes what it can of the queue, without blocking.
    fn flush_stdin(&mut self) {
        if let Some(f) = self.stdin.as_mut() {
            while !self.queue.is_empty() {
                match f.write(&self.queue) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.queue.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        // The container closed its stdin: nothing will ever read this.
                        self.queue.clear();
                        self.stdin = None;
                        break;
                    }
                }
            }
        } else {
            self.queue.clear();
        }
        if self.close_stdin && self.queue.is_empty() {
            self.stdin = None;
        }
    }

    /// Takes the frames a client sent.
    fn take_input(&mut self, c: &mut Client, data: &[u8]) {
        c.input.push(data);
        loop {
            match c.input.next_frame() {
                Ok(Some((attach::STDIN, d))) => {
                    if c.streams.stdin && !c.stdin_ended && self.stdin.is_some() {
                        self.queue.extend_from_slice(&d);
                    }
                }
                Ok(Some((attach::RESIZE, d))) => {
                    if let (Some(m), Some((w, h))) = (&self.master, attach::parse_resize(&d)) {
                        let _ = crate::terminal::resize(m.as_fd(), w, h);
                    }
                }
                Ok(Some((attach::STDIN_CLOSE, _))) => {
                    if c.streams.stdin && !c.stdin_ended {
                        c.stdin_ended = true;
                        self.input_ended();
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    c.gone = true;
                    break;
                }
            }
        }
    }
}

fn run_monitor(bundle: &Path, out: &mut Option<std::fs::File>) -> Result<()> {
    let record: Record = read_json(&bundle.join("container.json"))?;
    let cgroup = ContainerCgroup::new(&record.cgroup_path);
    let mut logs = LogWriter::new(record.config.log_path.clone(), MAX_LINE)?;
    // A terminal ends lines with \r\n; the log keeps the line, as containerd's does.
    logs.set_strip_cr(record.config.process.terminal);

    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block().ctx("block SIGCHLD")?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .ctx("signalfd")?;
    let _ = unsafe_free_ignore_sigpipe();

    let sock_path = bundle.join("monitor.sock");
    let _ = std::fs::remove_file(&sock_path);
    let listener = {
        // Bound through a /proc/self/fd path: the bundle's own path may be longer than the 107
        // bytes a socket address holds.
        let dir = std::fs::File::open(bundle).map_err(|e| Error::io("open", bundle, e))?;
        UnixListener::bind(short_path(&dir)).map_err(|e| Error::io("bind", &sock_path, e))?
    };
    listener.set_nonblocking(true).ctx("nonblocking socket")?;

    let (mut io, init_stdio) = make_stdio(&record.config.process)?;
    let started = match &record.config.oci_runtime {
        None => start_from_a_child(bundle, &record.overlay, &cgroup, init_stdio)?,
        Some(rt) => {
            match crate::oci_cli::start(bundle, &record.config, rt, &record.overlay, init_stdio)? {
                Ok((pid, master)) => {
                    if let Some(m) = master {
                        io.use_master(m)?;
                    }
                    Ok(pid)
                }
                Err(line) => Err(line),
            }
        }
    };
    let pid = match started {
        Ok(pid) => pid,
        Err(line) => {
            // The child's own report, passed on word for word.
            report(out, &line);
            let _ = std::fs::remove_file(&sock_path);
            return Ok(());
        }
    };
    // Read while the init cannot be reaped yet (we reap it, in the loop below), so the pid is
    // still the init's.
    let start_time = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| proc_start_time(&s));
    write_json(
        &bundle.join("runtime.json"),
        &Started {
            pid: pid.as_raw(),
            monitor_pid: std::process::id() as i32,
            started_at: unix_nanos(SystemTime::now()),
            start_time,
        },
    )?;
    report(out, &format!("ok {pid}\n"));
    // A container in a PID namespace it does not own (the pod's, another container's, the
    // host's) leaves its other processes running when its init exits, where the kernel would
    // have killed them with a namespace of its own: they go with the init, as containerd's shim
    // has `runc kill --all` do, so that no stop leaves them and no remove finds the cgroup busy.
    let kill_all_on_exit = !matches!(record.config.namespaces.pid, crate::config::NsMode::New);
    // The record was only needed to set up; what it held is free for the trim once quiet.
    drop(record);
    let mut released = false;

    #[derive(Clone, Copy)]
    enum Slot {
        Signal,
        Listener,
        Output(usize),
        Stdin,
        Client(usize),
    }
    let mut clients: Vec<Client> = Vec::new();
    let mut exit: Option<(WaitStatus, Instant)> = None;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let open_streams = io.outputs.iter().filter(|s| s.0.is_some()).count();
        if let Some((_, at)) = exit {
            // Once init is gone, wait a little for processes that still hold the pipes.
            if open_streams == 0 || at.elapsed() > EXIT_GRACE {
                break;
            }
        }
        let mut fds = vec![
            PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        let mut slots = vec![Slot::Signal, Slot::Listener];
        for (i, (f, _)) in io.outputs.iter().enumerate() {
            if let Some(f) = f {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Output(i));
            }
        }
        if let (Some(f), false) = (&io.stdin, io.queue.is_empty()) {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLOUT));
            slots.push(Slot::Stdin);
        }
        let room = io.queue.len() < STDIN_BUFFER;
        for (i, c) in clients.iter().enumerate() {
            let mut flags = PollFlags::empty();
            if room {
                flags |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.conn.as_fd(), flags));
            slots.push(Slot::Client(i));
        }
        // SIGCHLD arrives on the signalfd, so an idle monitor sleeps until something happens
        // (100 idle pods used to mean 500 wake-ups a second on the node); only the grace after
        // the exit needs a clock, and, until the monitor has once been quiet for `QUIET`, the
        // release of what setting up used: one wake-up in a container's life.
        let timeout = match exit {
            Some((_, at)) => {
                let left = EXIT_GRACE.saturating_sub(at.elapsed()).as_millis();
                PollTimeout::from(u16::try_from(left + 1).unwrap_or(u16::MAX))
            }
            None if !released => PollTimeout::from(QUIET.as_millis() as u16),
            None => PollTimeout::NONE,
        };
        match poll(&mut fds, timeout) {
            Ok(0) if exit.is_none() && !released => {
                drop(fds);
                crate::sys::release_setup_memory();
                released = true;
                continue;
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Internal(format!("poll: {}", e.desc()))),
        }
        let ready: Vec<(Slot, PollFlags)> = fds
            .iter()
            .zip(slots)
            .filter_map(|(f, s)| f.revents().filter(|r| !r.is_empty()).map(|r| (s, r)))
            .collect();
        drop(fds);
        for (slot, revents) in ready {
            match slot {
                Slot::Signal => {
                    while let Ok(Some(_)) = sigfd.read_signal() {}
                    loop {
                        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                            Ok(WaitStatus::StillAlive) | Err(_) => break,
                            Ok(s) if s.pid() == Some(pid) => {
                                exit = Some((s, Instant::now()));
                                // Before the exit is recorded: once a stop sees it, they are
                                // gone (their output ends with them, which ends the grace).
                                if kill_all_on_exit {
                                    cgroup.signal_all(Signal::SIGKILL);
                                }
                            }
                            Ok(_) => {}
                        }
                    }
                }
                Slot::Listener => {
                    while let Ok((conn, _)) = listener.accept() {
                        let mut state = Control {
                            pid,
                            exited: exit.is_some(),
                            cgroup: &cgroup,
                            logs: &mut logs,
                            io: &mut io,
                        };
                        if let Some(c) = state.serve(conn) {
                            clients.push(c);
                        }
                    }
                }
                Slot::Output(i) => {
                    let (f, stream) = &mut io.outputs[i];
                    let stream = *stream;
                    let n = f.as_mut().map(|f| f.read(&mut buf)).unwrap_or(Ok(0));
                    match n {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // EOF; a pty master reads EIO once no slave is open.
                        Ok(0) | Err(_) => {
                            logs.finish(stream);
                            *f = None;
                        }
                        Ok(n) => {
                            logs.write(stream, &buf[..n]);
                            let kind = match stream {
                                Stream::Stdout => attach::STDOUT,
                                Stream::Stderr => attach::STDERR,
                            };
                            let frame = attach::frame(kind, &buf[..n]);
                            for c in clients.iter_mut() {
                                let wanted = match stream {
                                    Stream::Stdout => c.streams.stdout,
                                    Stream::Stderr => c.streams.stderr,
                                };
                                if !wanted || c.gone {
                                    continue;
                                }
                                if c.out.len() + frame.len() > CLIENT_BUFFER {
                                    c.gone = true;
                                } else {
                                    c.out.extend_from_slice(&frame);
                                }
                            }
                        }
                    }
                }
                Slot::Stdin => io.flush_stdin(),
                Slot::Client(i) => {
                    let c = &mut clients[i];
                    if revents.contains(PollFlags::POLLOUT) && !c.out.is_empty() {
                        match (&c.conn).write(&c.out) {
                            Ok(n) => {
                                c.out.drain(..n);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => c.gone = true,
                        }
                    }
                    if revents
                        .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                    {
                        match (&c.conn).read(&mut buf) {
                            Ok(0) => c.gone = true,
                            Ok(n) => io.take_input(c, &buf[..n]),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => c.gone = true,
                        }
                    }
                }
            }
        }
        for c in clients.iter_mut().filter(|c| c.gone) {
            if c.streams.stdin && !c.stdin_ended {
                c.stdin_ended = true;
                io.input_ended();
            }
        }
        clients.retain(|c| !c.gone);
        io.flush_stdin();
    }
    for (f, stream) in &io.outputs {
        if f.is_some() {
            logs.finish(*stream);
        }
    }
    // The container's output has ended: hand each client what is queued for it, then hang up.
    for c in clients {
        let _ = c.conn.set_nonblocking(false);
        let _ = c.conn.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = (&c.conn).write_all(&c.out);
    }
    let (status, _) = exit.ok_or_else(|| Error::Internal("monitor lost its container".into()))?;
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, c) => (c, None),
        WaitStatus::Signaled(_, s, _) => (128 + s as i32, Some(s as i32)),
        _ => (255, None),
    };
    write_json(
        &bundle.join("exit.json"),
        &Exit {
            exit_code,
            signal,
            oom_killed: cgroup.oom_kills() > 0,
            finished_at: unix_nanos(SystemTime::now()),
        },
    )?;
    let _ = std::fs::remove_file(&sock_path);
    Ok(())
}

/// Starts the container from a short-lived child of the monitor and adopts it.
///
/// Reading the spec and setting the container up (mounts, namespaces, cgroups, seccomp) leave
/// the heap scattered with freed pieces around the few that live on, and every page of that
/// stays with a monitor for the container's whole life: 56 KiB of heap and 28 KiB of stack per
/// pod, found by reading a monitor's pages. Done in a child that exits, none of it reaches the
/// monitor. As a subreaper the monitor becomes the container's parent when that child exits, so
/// it still reaps the container and reads its exit status.
///
/// Returns the container's pid, or the line the child reported instead (`error ...`). The child
/// is not waited for here: its exit is off the container start's path, and the monitor's loop
/// reaps it with any other child that is not the container.
fn start_from_a_child(
    bundle: &Path,
    overlay: &executor::Overlay,
    cgroup: &ContainerCgroup,
    init_stdio: executor::InitStdio,
) -> Result<std::result::Result<Pid, String>> {
    nix::sys::prctl::set_child_subreaper(true).ctx("become a subreaper")?;
    let (answer, answer_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx("pipe")?;
    match crate::sys::fork_single_threaded()? {
        ForkResult::Child => {
            drop(answer);
            let line = match crate::spec::load(bundle)
                .and_then(|spec| executor::spawn_init(&spec, overlay, cgroup, init_stdio))
            {
                Ok(pid) => format!("ok {pid}\n"),
                Err(e) => format!("error {e}\n"),
            };
            let code = i32::from(
                std::fs::File::from(answer_w)
                    .write_all(line.as_bytes())
                    .is_err(),
            );
            std::process::exit(code)
        }
        ForkResult::Parent { .. } => {
            // The container's ends of its stdio belong to it alone: with a copy open here the
            // monitor would never see its output end.
            drop(init_stdio);
            drop(answer_w);
            // One line, not to the end: the end comes only once the child has exited.
            let mut line = String::new();
            BufReader::new(std::fs::File::from(answer))
                .read_line(&mut line)
                .ctx("read the starting child's answer")?;
            match line.trim().strip_prefix("ok ").map(str::parse::<i32>) {
                Some(Ok(pid)) => Ok(Ok(Pid::from_raw(pid))),
                _ if line.starts_with("error ") => Ok(Err(line)),
                _ => Err(Error::Internal(format!(
                    "the child starting the container answered {line:?}"
                ))),
            }
        }
    }
}

/// SIGPIPE would kill the monitor when a client hangs up mid-answer; writes then fail with EPIPE.
fn unsafe_free_ignore_sigpipe() -> Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    set.add(Signal::SIGHUP);
    set.thread_block().ctx("block SIGPIPE")
}

/// What a control request may act on.
struct Control<'a> {
    pid: Pid,
    exited: bool,
    cgroup: &'a ContainerCgroup,
    logs: &'a mut LogWriter,
    io: &'a mut Stdio,
}

impl Control<'_> {
    /// One control request: a line in, a line out; `attach` keeps the connection as a client.
    fn serve(&mut self, conn: UnixStream) -> Option<Client> {
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let mut line = String::new();
        let mut reader = BufReader::new(&conn);
        if reader.read_line(&mut line).is_err() {
            return None;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let pid = self.pid;
        let mut client = None;
        let answer = match words.as_slice() {
            ["ping"] => format!(
                "ok {pid} {}",
                if self.exited { "exited" } else { "running" }
            ),
            ["reopen"] => match self.logs.reopen() {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error {e}"),
            },
            ["kill", sig, rest @ ..] => match sig
                .parse::<i32>()
                .ok()
                .and_then(|s| Signal::try_from(s).ok())
            {
                Some(sig) => {
                    // Not after reaping: the pid may belong to someone else by now.
                    if !self.exited {
                        let _ = kill(pid, sig);
                    }
                    if rest.first() == Some(&"all") {
                        self.cgroup.signal_all(sig);
                    }
                    "ok".to_string()
                }
                None => "error bad signal".to_string(),
            },
            ["attach", flags @ ..] => match attach::Streams::parse(flags) {
                None => "error bad attach request".to_string(),
                Some(_) if self.exited => "error the container has exited".to_string(),
                Some(s) if s.stdin && !self.io.has_stdin => {
                    "error the container was not created with stdin".to_string()
                }
                Some(streams) => {
                    let mut c = Client {
                        conn: match conn.try_clone() {
                            Ok(c) => c,
                            Err(e) => return reply(&conn, &format!("error {e}")),
                        },
                        streams,
                        out: Vec::new(),
                        input: attach::Decoder::default(),
                        stdin_ended: false,
                        gone: false,
                    };
                    // Frames the client sent right behind its request line.
                    let early = reader.buffer().to_vec();
                    self.io.take_input(&mut c, &early);
                    client = Some(c);
                    format!("ok {}", u8::from(self.io.master.is_some()))
                }
            },
            _ => "error unknown command".to_string(),
        };
        reply(&conn, &answer);
        let c = client?;
        c.conn.set_nonblocking(true).ok()?;
        Some(c)
    }
}

fn reply(conn: &UnixStream, answer: &str) -> Option<Client> {
    let mut conn = conn;
    let _ = conn.write_all(format!("{answer}\n").as_bytes());
    None
}

/// An exec request, in the helper's environment.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ExecRequest {
    pub args: Vec<String>,
    pub timeout_ms: u64,
    /// The helper's stdin is a pty's slave: the command gets it as its controlling terminal.
    #[serde(default)]
    pub tty: bool,
    /// ExecSync: the helper relays the command's output and exits once it has ended, not only
    /// the command (see [`exec_relayed`]).
    #[serde(default)]
    pub sync: bool,
    /// When the daemon made the request (nanoseconds since the epoch; 0: unknown). The timeout
    /// runs from then, not from the helper's start, so that the helper has acted on it by the
    /// time the daemon stops waiting.
    #[serde(default)]
    pub sent_at: i64,
}

/// Once an ExecSync command without a timeout has exited, how long processes it left behind
/// may keep its output open before the helper stops reading it and returns.
const EXEC_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Where the daemon passes an exec request, leaving stdin to the process.
pub(crate) const EXEC_REQUEST_ENV: &str = "_CARAPACE_EXEC_REQUEST";

fn exec_helper(bundle: &Path) -> Result<u8> {
    // The request comes in the environment so that stdin stays the process's; the process gets
    // the spec's environment (execve), never the helper's.
    let input = std::env::var(EXEC_REQUEST_ENV).map_err(|_| {
        Error::InvalidArgument(format!("exec request: {EXEC_REQUEST_ENV} is not set"))
    })?;
    let req: ExecRequest = serde_json::from_str(&input)
        .map_err(|e| Error::InvalidArgument(format!("exec request: {e}")))?;
    let record: Record = read_json(&bundle.join("container.json"))?;
    let started: Started = read_json(&bundle.join("runtime.json"))?;
    let spec = crate::spec::load(bundle)?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| Error::Internal("spec has no process".into()))?;
    let cgroup = ContainerCgroup::new(&record.cgroup_path);
    let init = started.open_init(&cgroup)?;
    let mut timeout = Duration::from_millis(req.timeout_ms);
    if !timeout.is_zero() && req.sent_at > 0 {
        let waited = unix_nanos(SystemTime::now()).saturating_sub(req.sent_at);
        let waited = Duration::from_nanos(u64::try_from(waited).unwrap_or(0));
        // Never zero, which would mean no timeout.
        timeout = timeout.saturating_sub(waited).max(Duration::from_millis(1));
    }
    if let Some(rt) = &record.config.oci_runtime {
        return crate::oci_cli::exec(rt, bundle, &record.config.id, &req.args, req.tty, timeout);
    }
    process.set_args(Some(req.args));
    if req.sync && !req.tty {
        return exec_relayed(&init, &spec, &process, &cgroup, timeout);
    }
    let child = executor::spawn_in_container(&init, &spec, &process, &cgroup, req.tty)?;
    // Woken by the exit itself, not a timer: ExecSync returns as soon as the command ends.
    if !timeout.is_zero() && !crate::sys::wait_exited(child.as_raw(), timeout) {
        kill_group(child);
        return Ok(124);
    }
    reap(child)
}

/// The exit code of `child` (128 + signal when killed), once it has exited.
fn reap(child: Pid) -> Result<u8> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => return Ok(c as u8),
            Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128u8.wrapping_add(s as u8)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::Internal(format!("wait: {}", e.desc()))),
        }
    }
}

/// Kills an exec'd command and the processes it left in its process group (it leads one, see
/// `executor::spawn_in_container`), then reaps it. Only while it is not reaped: its pid, and so
/// the group's id, cannot go to another process until then.
fn kill_group(child: Pid) {
    let _ = kill(Pid::from_raw(-child.as_raw()), Signal::SIGKILL);
    let _ = kill(child, Signal::SIGKILL);
    let _ = waitpid(child, None);
}

/// ExecSync's command, with its stdout and stderr going through pipes of the helper's own,
/// which it copies to its stdout and stderr (the daemon's pipes). So the helper sees the output
/// end, and the command is done once it has exited and its output has closed, as containerd
/// waits for the exec's IO. A background child that keeps the output open is waited for up to
/// the timeout; then the command's process group is killed and the helper exits with 124
/// whatever still holds the output (a process that left the group is no longer read). Without
/// a timeout, the output is read for [`EXEC_DRAIN_GRACE`] after the command exited, and what
/// still holds it is left running. Either way the helper, the daemon pipes' only writer, exits
/// and the daemon's reads end.
fn exec_relayed(
    init: &OwnedFd,
    spec: &oci_spec::runtime::Spec,
    process: &oci_spec::runtime::Process,
    cgroup: &ContainerCgroup,
    timeout: Duration,
) -> Result<u8> {
    let began = Instant::now();
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx("pipe")?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ctx("pipe")?;
    // The daemon's pipes, aside and close-on-exec: the command never holds them.
    let daemon_out = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ctx("dup stdout")?;
    let daemon_err = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .ctx("dup stderr")?;
    nix::unistd::dup2_stdout(&out_w).ctx("stdout")?;
    nix::unistd::dup2_stderr(&err_w).ctx("stderr")?;
    drop((out_w, err_w));
    let spawned = executor::spawn_in_container(init, spec, process, cgroup, false);
    // Back to the daemon's, where the helper's own errors go.
    nix::unistd::dup2_stdout(&daemon_out).ctx("stdout")?;
    nix::unistd::dup2_stderr(&daemon_err).ctx("stderr")?;
    let child = spawned?;
    // Readable once the command has exited; it stays unreaped (and its pid its group's) until
    // the helper is done.
    let exited = crate::sys::pidfd_open(child.as_raw())?;
    let mut streams = [
        (
            Some(std::fs::File::from(out_r)),
            std::fs::File::from(daemon_out),
        ),
        (
            Some(std::fs::File::from(err_r)),
            std::fs::File::from(daemon_err),
        ),
    ];
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let open = streams.iter().any(|(r, _)| r.is_some());
        if exited_at.is_some() && !open {
            return reap(child);
        }
        let deadline = if timeout.is_zero() {
            exited_at.map(|at| at + EXEC_DRAIN_GRACE)
        } else {
            Some(began + timeout)
        };
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            if timeout.is_zero() {
                return reap(child);
            }
            kill_group(child);
            return Ok(124);
        }
        let mut fds = Vec::new();
        let mut slots = Vec::new();
        if exited_at.is_none() {
            fds.push(exited.as_fd());
            slots.push(None);
        }
        for (i, (r, _)) in streams.iter().enumerate() {
            if let Some(r) = r {
                fds.push(r.as_fd());
                slots.push(Some(i));
            }
        }
        let ready: Vec<Option<usize>> = crate::fsutil::readable(&fds, left)
            .map_err(|e| Error::Internal(format!("poll: {}", e.desc())))?
            .into_iter()
            .map(|p| slots[p])
            .collect();
        drop(fds);
        for slot in ready {
            let Some(i) = slot else {
                exited_at = Some(Instant::now());
                continue;
            };
            let (r, w) = &mut streams[i];
            let n = r.as_mut().map(|r| r.read(&mut buf)).unwrap_or(Ok(0));
            match n {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => *r = None,
                // The daemon stopped reading (its cap): the command's writes fail from now on,
                // as they did when it wrote to the daemon's pipe itself.
                Ok(n) => {
                    if w.write_all(&buf[..n]).is_err() {
                        *r = None;
                    }
                }
            }
        }
    }
}

/// `<dir>/monitor.sock` named through the open directory, so the address stays short whatever
/// the state dir's length.
pub(crate) fn short_path(dir: &std::fs::File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}/monitor.sock", dir.as_raw_fd()))
}

/// Sends one control request to a container's monitor; `None` when no monitor answers.
pub(crate) fn request(bundle: &Path, line: &str) -> Option<String> {
    let dir = std::fs::File::open(bundle).ok()?;
    let mut conn = std::os::unix::net::UnixStream::connect(short_path(&dir)).ok()?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    conn.write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut answer = String::new();
    BufReader::new(conn).read_line(&mut answer).ok()?;
    Some(answer.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_counted_after_the_command_name() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1 2";
        assert_eq!(proc_start_time(stat), Some(98765));
        assert_eq!(proc_start_time("42 (sleep) S 1"), None);
    }

    #[test]
    fn the_init_is_found_only_by_its_pid_and_start_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let started = |start_time| Started {
            pid,
            monitor_pid: 1,
            started_at: 0,
            start_time,
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = own.lines().next().unwrap().splitn(3, ':').nth(2).unwrap();
        let elsewhere = ContainerCgroup::new("kubepods/elsewhere/x");
        let t = proc_start_time(&stat).unwrap();

        assert!(started(Some(t)).open_init(&elsewhere).is_ok());
        // Another process under the same pid: it started at another time.
        let e = started(Some(t + 1)).open_init(&elsewhere).unwrap_err();
        assert!(matches!(e, Error::FailedPrecondition(_)), "{e}");
        // A record without the start time: the process must be in the container's cgroup.
        assert!(started(None).open_init(&ContainerCgroup::new(own)).is_ok());
        assert!(started(None).open_init(&elsewhere).is_err());

        // Resolved while it ran, the directory still names that process alone once it is gone.
        let dir = started(Some(t)).open_init(&elsewhere).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let ns = nix::fcntl::openat(&dir, "ns/net", OFlag::O_RDONLY, Mode::empty());
        assert!(ns.is_err(), "opened the namespace of a reaped process");
        assert!(started(Some(t)).open_init(&elsewhere).is_err());
    }
}
