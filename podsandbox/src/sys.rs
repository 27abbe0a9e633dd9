//! The one place with `unsafe`: the ioctl that brings a network namespace's loopback up, fork, and
//! what the infra process's PID 1 needs to give up its power (the capability bounding set, capset,
//! a seccomp filter), which no safe wrapper offers. Everything else goes through `nix`'s safe
//! functions.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// Sets `lo` up in the calling thread's network namespace.
pub fn loopback_up() -> io::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is a plain C struct (arrays and a union of integers) for which all-zero
    // bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sock` is an open socket for the whole call and `req` a valid, exclusively borrowed
    // `ifreq` whose name is NUL-terminated; SIOCGIFFLAGS writes only `ifr_flags` inside it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled the union's `ifru_flags` member, so reading it is defined.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// fork(2), refused unless this process is single-threaded (the infra role, before any thread).
pub fn fork_single_threaded() -> io::Result<nix::unistd::ForkResult> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok());
    if threads != Some(1) {
        return Err(io::Error::other(
            "refusing to fork a multi-threaded process",
        ));
    }
    // SAFETY: with exactly one thread no other thread can hold a lock (allocator, stdio) that the
    // child would inherit mid-update, so the child may run ordinary Rust code. The count was read
    // just above and nothing in this call starts a thread.
    Ok(unsafe { nix::unistd::fork() }?)
}

/// Leaves the calling process no supplementary group. Needs CAP_SETGID.
pub fn drop_supplementary_groups() -> io::Result<()> {
    // SAFETY: with a count of 0 setgroups reads no list, so the null pointer is never read.
    if unsafe { libc::setgroups(0, std::ptr::null()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Empties every capability set of the calling process, the bounding set included, so neither it
/// nor anything it could exec holds a capability. Needs CAP_SETPCAP when called (the bounding set
/// goes first, while the process still has it).
pub fn drop_all_capabilities() -> io::Result<()> {
    // The kernel answers EINVAL past its last capability; 64 bounds the loop whatever it says.
    for cap in 0..64 {
        // SAFETY: PR_CAPBSET_READ takes an integer and touches no memory of ours.
        let held = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        if held < 0 {
            break;
        }
        // SAFETY: as above, for PR_CAPBSET_DROP.
        if held == 1
            && unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    // linux/capability.h; libc has neither the structs nor a capset wrapper.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let none = Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    };
    // Version 3 takes two 32-bit halves. Ambient capabilities need to be permitted and
    // inheritable too, so the kernel clears them with these.
    let data = [none; 2];
    // SAFETY: `header` and `data` are laid out as the kernel's `__user_cap_header_struct` and
    // `__user_cap_data_struct[2]` (version 3) and outlive the call, which only reads them.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// Classic BPF as in linux/filter.h and linux/seccomp.h: load a word of `struct seccomp_data`,
// compare the accumulator with a constant, return a verdict.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const RET_K: u16 = 0x06;
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
/// The low half of args[0] (little-endian).
const OFF_ARG0_LO: u32 = 16;
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_00b7;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// A seccomp filter that allows the native syscalls `allowed`, and `write` to `write_fd` only;
/// every other call fails with EPERM. Another ABI (i386) is refused by its audit arch, and x32
/// numbers carry a high bit no allowed number has. EPERM rather than a kill: a call we did not
/// foresee (a libc cleanup at exit, say) fails instead of killing PID 1 and with it the pod.
pub fn allow_list_filter(
    allowed: &[libc::c_long],
    write_fd: u32,
) -> io::Result<Vec<libc::sock_filter>> {
    let n = u8::try_from(allowed.len())
        .ok()
        .filter(|n| *n <= 240)
        .ok_or_else(|| io::Error::other("seccomp allow-list too long"))?;
    // Layout: [0] load arch, [1] native?, [2] load nr, [3..3+n) allowed numbers, [3+n] write?,
    // [4+n] load fd, [5+n] that fd?, [6+n] deny, [7+n] allow. A jump counts from the next
    // instruction.
    let deny_from = |at: u8| 6 + n - (at + 1);
    let allow_from = |at: u8| 7 + n - (at + 1);
    let mut prog = vec![
        insn(LD_W_ABS, 0, 0, OFF_ARCH),
        insn(JEQ_K, 0, deny_from(1), AUDIT_ARCH_NATIVE),
        insn(LD_W_ABS, 0, 0, OFF_NR),
    ];
    for (i, nr) in (0..n).zip(allowed) {
        let nr = u32::try_from(*nr).map_err(|_| io::Error::other("negative syscall number"))?;
        prog.push(insn(JEQ_K, allow_from(3 + i), 0, nr));
    }
    prog.extend([
        insn(JEQ_K, 0, deny_from(3 + n), libc::SYS_write as u32),
        // The kernel takes the fd as an unsigned int: the low half is all it reads.
        insn(LD_W_ABS, 0, 0, OFF_ARG0_LO),
        insn(JEQ_K, allow_from(5 + n), 0, write_fd),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]);
    Ok(prog)
}

/// Installs `filter` on the calling process, which must be single-threaded and have set
/// no_new_privs (or hold CAP_SYS_ADMIN).
pub fn install_seccomp(filter: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len())
            .map_err(|_| io::Error::other("seccomp filter too long"))?,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies the program
    // during prctl, only reads it, and keeps no pointer to our memory.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the instructions `allow_list_filter` emits on one call.
    fn run(prog: &[libc::sock_filter], arch: u32, nr: u32, arg0: u64) -> u32 {
        let (mut pc, mut acc) = (0, 0);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0_LO => arg0 as u32,
                        k => panic!("load at {k}"),
                    }
                }
                JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                RET_K => return i.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn the_allow_list_filter_allows_its_calls_and_writes_to_one_fd_only() {
        let allowed = [libc::SYS_wait4, libc::SYS_exit_group];
        let prog = allow_list_filter(&allowed, 7).unwrap();
        let deny = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let call = |nr: libc::c_long, arg0| run(&prog, AUDIT_ARCH_NATIVE, nr as u32, arg0);
        assert_eq!(call(libc::SYS_wait4, 0), libc::SECCOMP_RET_ALLOW);
        assert_eq!(call(libc::SYS_exit_group, 0), libc::SECCOMP_RET_ALLOW);
        assert_eq!(call(libc::SYS_write, 7), libc::SECCOMP_RET_ALLOW);
        assert_eq!(call(libc::SYS_write, 2), deny);
        for refused in [
            libc::SYS_mount,
            libc::SYS_openat,
            libc::SYS_kill,
            libc::SYS_ptrace,
        ] {
            assert_eq!(call(refused, 0), deny);
        }
        // The same number under another ABI, or with the x32 bit, is refused.
        assert_eq!(run(&prog, 0x4000_0003, libc::SYS_wait4 as u32, 0), deny);
        assert_eq!(
            run(
                &prog,
                AUDIT_ARCH_NATIVE,
                libc::SYS_wait4 as u32 | 0x4000_0000,
                0
            ),
            deny
        );
    }
}
