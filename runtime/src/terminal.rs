//! Pseudo-terminals for containers and execs made with `tty`: the master stays with whoever relays
//! the process's stdio (the monitor, or the daemon for a streaming exec), the slave becomes the
//! process's stdin, stdout, stderr and controlling terminal. Every fd is close-on-exec and the
//! slave is opened without becoming the opener's controlling terminal.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use crate::error::{Context, Result};

/// Both ends of a new pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a new pty; the master is non-blocking, for a relay that polls it. Safe to call in a
/// multi-threaded process: nothing is ever open without `O_CLOEXEC`, so a concurrent fork+exec
/// elsewhere inherits neither end.
pub fn open_pty() -> Result<Pty> {
    let master = nix::pty::posix_openpt(
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
    )
    .ctx("posix_openpt")?;
    nix::pty::grantpt(&master).ctx("grantpt")?;
    nix::pty::unlockpt(&master).ctx("unlockpt")?;
    let name = nix::pty::ptsname_r(&master).ctx("ptsname")?;
    let slave = open(
        Path::new(&name),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(format_args!("open {name}"))?;
    Ok(Pty {
        master: master.into(),
        slave,
    })
}

/// Sets the terminal's size (columns, rows) through its master; the process sees SIGWINCH.
pub fn resize(master: BorrowedFd<'_>, width: u16, height: u16) -> Result<()> {
    crate::sys::set_window_size(master, width, height)
}

/// In a child between fork and exec: a new session whose controlling terminal is `slave`, which
/// also becomes stdin, stdout and stderr.
pub(crate) fn become_session_on(slave: &impl AsFd) -> Result<()> {
    nix::unistd::setsid().ctx("setsid")?;
    crate::sys::set_controlling_tty(slave.as_fd())?;
    nix::unistd::dup2_stdin(slave).ctx("stdin")?;
    nix::unistd::dup2_stdout(slave).ctx("stdout")?;
    nix::unistd::dup2_stderr(slave).ctx("stderr")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_pty_carries_bytes_both_ways_and_takes_a_size() {
        let pty = open_pty().unwrap();
        resize(pty.master.as_fd(), 120, 40).unwrap();
        let mut m = std::fs::File::from(pty.master);
        let mut s = std::fs::File::from(pty.slave);
        s.write_all(b"out\n").unwrap();
        let mut buf = [0u8; 16];
        // The master does not block: the bytes may take a moment to cross.
        let mut n = 0;
        for _ in 0..100 {
            match m.read(&mut buf) {
                Ok(got) => {
                    n = got;
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        // The line discipline turns \n into \r\n on the way out.
        assert_eq!(&buf[..n], b"out\r\n");
    }
}
