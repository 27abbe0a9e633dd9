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
            let code = pid1(armed_w).unwrap_or(1);
            std::process::exit(code);
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(armed_w);
    // PID 1 writes one byte once its signals are blocked; EOF means it died first.
    let mut byte = [0u8; 1];
    if std::fs::File::from(armed_r).read(&mut byte)? != 1 {
        return Err(std::io::Error::other("PID 1 did not start"));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY_MARKER}{child}")?;
    out.flush()?;
    // Our job is done: PID 1 lives on, orphaned to the host's init, which reaps it at the end.
    Ok(0)
}

fn pid1(armed: std::os::fd::OwnedFd) -> std::io::Result<i32> {
    // No parent-death signal: the outer process exits right away, and the daemon kills PID 1
    // itself. Not in the daemon's session either, so a terminal's hangup does not reach it.
    let _ = nix::unistd::setsid();
    // The daemon stops reading our stdout once the outer process reported.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    signals.thread_block()?;
    std::fs::File::from(armed).write_all(b"1")?;
    loop {
        match signals.wait()? {
            Signal::SIGCHLD => reap(),
            Signal::SIGTERM | Signal::SIGINT => return Ok(0),
            _ => {}
        }
    }
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
