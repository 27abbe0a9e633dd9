//! Seccomp: the RuntimeDefault profile (the same syscall policy as Docker's and containerd's default
//! profile, built for the container's capabilities), loading a Localhost profile, and compiling an
//! OCI `LinuxSeccomp` into a classic BPF program for the native architecture.
//!
//! Why our own compiler rather than `seccompiler` or libseccomp: `seccompiler` gives a whole filter
//! one match action, while OCI profiles give each rule its own (Docker's default mixes ALLOW with
//! `ERRNO(ENOSYS)` for clone3), and libseccomp is a C library to link. OCI semantics fit a short
//! linear program: per syscall, rules in order, conditions ANDed, 64-bit compares as two 32-bit
//! halves. This module only produces instructions; installing them is `sys`'s job.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator, LinuxSyscall,
};

use crate::error::{Error, Result};

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

// The syscall names Docker's default profile allows to everyone (profiles/seccomp/default.json).
// Not io_uring_*, which Docker and containerd took out: a ring carries operations (open, connect,
// ...) to the kernel without a syscall this filter could see.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // Allowed on kernels >= 4.8, where ptrace can no longer bypass seccomp.
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];

/// Syscalls the default profile allows only to holders of a capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Namespace flags of clone(2) (`CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET`):
/// without CAP_SYS_ADMIN a clone carrying any of them is refused.
const CLONE_NS_FLAGS: u64 = 0x7E02_0000;

fn allow(names: &[&str]) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(LinuxSeccompAction::ScmpActAllow);
    s
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let mut a = oci_spec::runtime::LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(v2) = value_two {
        a = a.value_two(v2);
    }
    // Every field is set above, so the builder cannot fail; fall back to the default anyway.
    a.build().unwrap_or_default()
}

/// Docker's default profile for a container holding `capabilities` (names like `CAP_SYS_ADMIN`),
/// for the architecture this binary runs on.
pub fn runtime_default(capabilities: &BTreeSet<String>) -> LinuxSeccomp {
    let has = |c: &str| capabilities.contains(c);
    let mut rules = vec![allow(ALLOWED)];
    // socket(2) for everything but AF_VSOCK (40).
    let mut socket = allow(&["socket"]);
    socket.set_args(Some(vec![arg(
        0,
        40,
        None,
        LinuxSeccompOperator::ScmpCmpNe,
    )]));
    rules.push(socket);
    // personality(2) only with the harmless personas (PER_LINUX, PER_LINUX32, UNAME26 variants,
    // and the query value 0xffffffff).
    for persona in [0u64, 8, 131_072, 131_080, 4_294_967_295] {
        let mut p = allow(&["personality"]);
        p.set_args(Some(vec![arg(
            0,
            persona,
            None,
            LinuxSeccompOperator::ScmpCmpEq,
        )]));
        rules.push(p);
    }
    if cfg!(target_arch = "x86_64") {
        rules.push(allow(&["arch_prctl", "modify_ldt"]));
    }
    if cfg!(target_arch = "aarch64") {
        rules.push(allow(&[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ]));
    }
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            rules.push(allow(names));
        }
    }
    if !has("CAP_SYS_ADMIN") {
        // clone without namespace flags; clone3 answers ENOSYS so libc falls back to clone, whose
        // flags a BPF filter can inspect (clone3 passes them in memory).
        let mut clone = allow(&["clone"]);
        clone.set_args(Some(vec![arg(
            0,
            CLONE_NS_FLAGS,
            Some(0),
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        )]));
        rules.push(clone);
        let mut clone3 = LinuxSyscall::default();
        clone3.set_names(vec!["clone3".into()]);
        clone3.set_action(LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(ENOSYS));
        rules.push(clone3);
    }
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(EPERM));
    profile.set_syscalls(Some(rules));
    profile
}

/// A Localhost profile: OCI/Docker-format JSON. Docker-only keys (`archMap`, `includes`) are
/// ignored; what reaches the spec is the OCI subset. Only a regular file of at most 1 MiB is
/// read: anything else is InvalidArgument naming the path.
pub fn load_localhost(path: &Path) -> Result<LinuxSeccomp> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // Docker's default profile is about 20 KiB.
    const MAX_PROFILE: u64 = 1 << 20;
    let refuse =
        |why: &str| Error::InvalidArgument(format!("seccomp profile {}: {why}", path.display()));
    // The request names the path, so it may name a device, a FIFO or a huge file. O_PATH resolves
    // it without opening what it names: no device's open runs (a watchdog's arms it) and no
    // FIFO's blocks. Symlinks are followed, the last one too: profiles are legitimately reached
    // through links (a ConfigMap's `..data`, an operator's directory), and whatever the links
    // lead to is checked below on the inode itself, which is all O_NOFOLLOW would guard.
    let pinned = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .map_err(|e| Error::io("seccomp profile", path, e))?;
    let meta = pinned
        .metadata()
        .map_err(|e| Error::io("seccomp profile", path, e))?;
    if !meta.file_type().is_file() {
        return Err(refuse("not a regular file"));
    }
    if meta.len() > MAX_PROFILE {
        return Err(refuse("larger than 1 MiB"));
    }
    // Opened again through the pinned inode, so what is read is what was checked; read capped
    // all the same, as a regular file may still grow while read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", pinned.as_raw_fd()))
        .map_err(|e| Error::io("seccomp profile", path, e))?;
    let mut text = Vec::new();
    file.take(MAX_PROFILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| Error::io("seccomp profile", path, e))?;
    if text.len() as u64 > MAX_PROFILE {
        return Err(refuse("larger than 1 MiB"));
    }
    serde_json::from_slice(&text).map_err(|e| refuse(&e.to_string()))
}

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
// BPF_LD | BPF_W | BPF_ABS (the first two are 0).
const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x04 | 0x50;
const JMP_JEQ_K: u16 = 0x05 | 0x10;
const JMP_JGT_K: u16 = 0x05 | 0x20;
const JMP_JGE_K: u16 = 0x05 | 0x30;
const RET_K: u16 = 0x06;

// Return values (linux/seccomp.h).
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_KILL_THREAD: u32 = 0x0000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRACE: u32 = 0x7ff0_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_00b7;
/// x32 syscalls arrive with the x86_64 audit arch and this bit set in the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8i (little-endian halves).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;

fn ret_of(action: LinuxSeccompAction, errno: Option<u32>) -> Result<u32> {
    Ok(match action {
        LinuxSeccompAction::ScmpActAllow => RET_ALLOW,
        LinuxSeccompAction::ScmpActErrno => RET_ERRNO | (errno.unwrap_or(EPERM) & 0xffff),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => RET_KILL_THREAD,
        LinuxSeccompAction::ScmpActKillProcess => RET_KILL_PROCESS,
        LinuxSeccompAction::ScmpActTrap => RET_TRAP,
        LinuxSeccompAction::ScmpActTrace => RET_TRACE | (errno.unwrap_or(EPERM) & 0xffff),
        LinuxSeccompAction::ScmpActLog => RET_LOG,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(Error::InvalidArgument(
                "seccomp SCMP_ACT_NOTIFY is not supported".into(),
            ));
        }
    })
}

type Label = usize;
/// The instruction right after the jump (offset 0).
const NEXT: Label = 0;

enum Insn {
    Stmt(u16, u32),
    Jump {
        code: u16,
        k: u32,
        jt: Label,
        jf: Label,
    },
    Here(Label),
}

/// A tiny assembler: forward jumps to labels, resolved once the program is complete.
#[derive(Default)]
struct Asm {
    insns: Vec<Insn>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        self.labels
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.insns.push(Insn::Stmt(code, k));
    }
    fn jump(&mut self, code: u16, k: u32, jt: Label, jf: Label) {
        self.insns.push(Insn::Jump { code, k, jt, jf });
    }
    fn here(&mut self, l: Label) {
        self.insns.push(Insn::Here(l));
    }
    fn finish(self) -> Result<Vec<SockFilter>> {
        let mut pos = vec![usize::MAX; self.labels + 1];
        let mut n = 0;
        for i in &self.insns {
            match i {
                Insn::Here(l) => pos[*l] = n,
                _ => n += 1,
            }
        }
        let mut out = Vec::with_capacity(n);
        for i in self.insns {
            match i {
                Insn::Here(_) => {}
                Insn::Stmt(code, k) => out.push(SockFilter {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Insn::Jump { code, k, jt, jf } => {
                    let next = out.len() + 1;
                    let off = |l: Label| -> Result<u8> {
                        if l == NEXT {
                            return Ok(0);
                        }
                        pos[l]
                            .checked_sub(next)
                            .and_then(|d| u8::try_from(d).ok())
                            .ok_or_else(|| {
                                Error::InvalidArgument("seccomp rule too large to compile".into())
                            })
                    };
                    out.push(SockFilter {
                        code,
                        jt: off(jt)?,
                        jf: off(jf)?,
                        k,
                    });
                }
            }
        }
        if out.len() > 4096 {
            return Err(Error::InvalidArgument(format!(
                "seccomp profile compiles to {} instructions, over the kernel's 4096",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// Emits a check of one argument: falls through when it holds, jumps to `fail` when not.
fn condition(asm: &mut Asm, a: &LinuxSeccompArg, fail: Label) -> Result<()> {
    if a.index() > 5 {
        return Err(Error::InvalidArgument(format!(
            "seccomp arg index {} > 5",
            a.index()
        )));
    }
    let lo_off = 16 + 8 * a.index() as u32;
    let hi_off = lo_off + 4;
    let (v, v2) = (a.value(), a.value_two().unwrap_or(0));
    let (hi, lo) = ((v >> 32) as u32, v as u32);
    let pass = asm.label();
    match a.op() {
        LinuxSeccompOperator::ScmpCmpEq => {
            asm.stmt(LD_W_ABS, hi_off);
            asm.jump(JMP_JEQ_K, hi, NEXT, fail);
            asm.stmt(LD_W_ABS, lo_off);
            asm.jump(JMP_JEQ_K, lo, pass, fail);
        }
        LinuxSeccompOperator::ScmpCmpNe => {
            asm.stmt(LD_W_ABS, hi_off);
            let cont = asm.label();
            asm.jump(JMP_JEQ_K, hi, cont, pass);
            asm.here(cont);
            asm.stmt(LD_W_ABS, lo_off);
            asm.jump(JMP_JEQ_K, lo, fail, pass);
        }
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let (h2, l2) = ((v2 >> 32) as u32, v2 as u32);
            asm.stmt(LD_W_ABS, hi_off);
            asm.stmt(ALU_AND_K, hi);
            asm.jump(JMP_JEQ_K, h2, NEXT, fail);
            asm.stmt(LD_W_ABS, lo_off);
            asm.stmt(ALU_AND_K, lo);
            asm.jump(JMP_JEQ_K, l2, pass, fail);
        }
        op @ (LinuxSeccompOperator::ScmpCmpGt | LinuxSeccompOperator::ScmpCmpGe) => {
            // hi > v.hi: pass; hi < v.hi: fail; equal: compare the low halves.
            let last = if op == LinuxSeccompOperator::ScmpCmpGt {
                JMP_JGT_K
            } else {
                JMP_JGE_K
            };
            asm.stmt(LD_W_ABS, hi_off);
            asm.jump(JMP_JGT_K, hi, pass, NEXT);
            asm.jump(JMP_JEQ_K, hi, NEXT, fail);
            asm.stmt(LD_W_ABS, lo_off);
            asm.jump(last, lo, pass, fail);
        }
        op @ (LinuxSeccompOperator::ScmpCmpLt | LinuxSeccompOperator::ScmpCmpLe) => {
            // a < v is !(a >= v); a <= v is !(a > v).
            let last = if op == LinuxSeccompOperator::ScmpCmpLt {
                JMP_JGE_K
            } else {
                JMP_JGT_K
            };
            asm.stmt(LD_W_ABS, hi_off);
            asm.jump(JMP_JGT_K, hi, fail, NEXT);
            asm.jump(JMP_JEQ_K, hi, NEXT, pass);
            asm.stmt(LD_W_ABS, lo_off);
            asm.jump(last, lo, fail, pass);
        }
    }
    asm.here(pass);
    Ok(())
}

/// Whether a filter answering `ret` refuses the syscall (ALLOW and LOG let it run).
fn denies(ret: u32) -> bool {
    ret != RET_ALLOW && ret != RET_LOG
}

/// Compiles `profile` for the native architecture.
///
/// A syscall name this architecture's table lacks (another architecture's, a newer kernel's, or
/// a misspelling: without every architecture's table we cannot tell them apart) is skipped, as
/// runc skips the names libseccomp does not know, when that leaves the syscall where the rule
/// would: a rule that allows, or one that denies under a default that denies too. A rule that
/// denies it under a default that lets it through is refused: skipping it would fail open.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<SockFilter>> {
    let default = ret_of(profile.default_action(), profile.default_errno_ret())?;
    // Group rules by syscall number, keeping the profile's order inside each group.
    let mut groups: Vec<(u32, Vec<&LinuxSyscall>)> = Vec::new();
    for rule in profile.syscalls().iter().flatten() {
        for name in rule.names() {
            let Ok(nr) = syscalls::Sysno::from_str(name) else {
                if denies(ret_of(rule.action(), rule.errno_ret())?) && !denies(default) {
                    return Err(Error::InvalidArgument(format!(
                        "seccomp profile denies syscall {name:?}, which this runtime does not \
                         know on {}: the rule could not be enforced",
                        std::env::consts::ARCH
                    )));
                }
                continue;
            };
            let nr = nr.id() as u32;
            match groups.iter_mut().find(|(n, _)| *n == nr) {
                Some((_, rules)) => rules.push(rule),
                None => groups.push((nr, vec![rule])),
            }
        }
    }
    let mut asm = Asm::default();
    let arch_ok = asm.label();
    let bad = asm.label();
    asm.stmt(LD_W_ABS, OFF_ARCH);
    asm.jump(JMP_JEQ_K, AUDIT_ARCH_NATIVE, arch_ok, bad);
    asm.here(bad);
    // Another ABI (i386, x32) gets nothing: we compiled no rules for its numbers.
    asm.stmt(RET_K, RET_ERRNO | ENOSYS);
    asm.here(arch_ok);
    asm.stmt(LD_W_ABS, OFF_NR);
    let native = asm.label();
    asm.jump(JMP_JGE_K, X32_SYSCALL_BIT, NEXT, native);
    asm.stmt(RET_K, RET_ERRNO | ENOSYS);
    asm.here(native);
    for (nr, rules) in groups {
        let body = asm.label();
        let next_syscall = asm.label();
        asm.jump(JMP_JEQ_K, nr, body, next_syscall);
        asm.here(body);
        for rule in rules {
            let next_rule = asm.label();
            for a in rule.args().iter().flatten() {
                condition(&mut asm, a, next_rule)?;
            }
            asm.stmt(RET_K, ret_of(rule.action(), rule.errno_ret())?);
            asm.here(next_rule);
        }
        asm.stmt(RET_K, default);
        asm.here(next_syscall);
        // The argument checks clobbered the accumulator: reload the number for the next test.
        asm.stmt(LD_W_ABS, OFF_NR);
    }
    asm.stmt(RET_K, default);
    asm.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic-BPF interpreter for the instructions `compile` emits.
    fn run(prog: &[SockFilter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for a in args {
            data.extend_from_slice(&a.to_le_bytes());
        }
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    let o = i.k as usize;
                    acc = u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
                }
                ALU_AND_K => acc &= i.k,
                RET_K => return i.k,
                JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K => {
                    let t = match i.code {
                        JMP_JEQ_K => acc == i.k,
                        JMP_JGT_K => acc > i.k,
                        _ => acc >= i.k,
                    };
                    pc += usize::from(if t { i.jt } else { i.jf });
                }
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn nr(name: &str) -> u32 {
        syscalls::Sysno::from_str(name).unwrap().id() as u32
    }

    fn default_caps() -> BTreeSet<String> {
        crate::capabilities::resolve(false, &[], &[]).unwrap()
    }

    #[test]
    fn runtime_default_allows_common_and_refuses_privileged_syscalls() {
        let prog = compile(&runtime_default(&default_caps())).unwrap();
        let a = AUDIT_ARCH_NATIVE;
        assert_eq!(run(&prog, a, nr("read"), [0; 6]), RET_ALLOW);
        assert_eq!(run(&prog, a, nr("mount"), [0; 6]), RET_ERRNO | EPERM);
        assert_eq!(run(&prog, a, nr("unshare"), [0; 6]), RET_ERRNO | EPERM);
        for ring in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
            assert_eq!(run(&prog, a, nr(ring), [0; 6]), RET_ERRNO | EPERM, "{ring}");
        }
        // clone3 answers ENOSYS so libc falls back to clone.
        assert_eq!(run(&prog, a, nr("clone3"), [0; 6]), RET_ERRNO | ENOSYS);
        // clone: threads yes, new namespaces no.
        assert_eq!(
            run(&prog, a, nr("clone"), [0x3d0f00, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(&prog, a, nr("clone"), [0x2000_0000, 0, 0, 0, 0, 0]),
            RET_ERRNO | EPERM
        );
        // socket: anything but AF_VSOCK.
        assert_eq!(run(&prog, a, nr("socket"), [2, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            run(&prog, a, nr("socket"), [40, 0, 0, 0, 0, 0]),
            RET_ERRNO | EPERM
        );
        // personality: only the listed personas; 64-bit compare sees the high half.
        assert_eq!(
            run(&prog, a, nr("personality"), [0xffff_ffff, 0, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            run(&prog, a, nr("personality"), [1 << 32, 0, 0, 0, 0, 0]),
            RET_ERRNO | EPERM
        );
        // Another ABI and x32 numbers get nothing.
        assert_eq!(
            run(&prog, 0x4000_0003, nr("read"), [0; 6]),
            RET_ERRNO | ENOSYS
        );
        assert_eq!(
            run(&prog, a, X32_SYSCALL_BIT | nr("read"), [0; 6]),
            RET_ERRNO | ENOSYS
        );
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        let mut caps = default_caps();
        caps.insert("CAP_SYS_ADMIN".into());
        let prog = compile(&runtime_default(&caps)).unwrap();
        assert_eq!(
            run(&prog, AUDIT_ARCH_NATIVE, nr("mount"), [0; 6]),
            RET_ALLOW
        );
        assert_eq!(
            run(
                &prog,
                AUDIT_ARCH_NATIVE,
                nr("clone"),
                [0x2000_0000, 0, 0, 0, 0, 0]
            ),
            RET_ALLOW
        );
    }

    #[test]
    fn ordered_comparisons_are_unsigned_64_bit() {
        let mut rule = LinuxSyscall::default();
        rule.set_names(vec!["write".into()]);
        rule.set_action(LinuxSeccompAction::ScmpActAllow);
        let mut profile = LinuxSeccomp::default();
        profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
        type Case<'a> = (LinuxSeccompOperator, u64, &'a [(u64, bool)]);
        let cases: [Case; 4] = [
            (
                LinuxSeccompOperator::ScmpCmpGt,
                1 << 32,
                &[((1 << 32) + 1, true), (1 << 32, false), (5, false)],
            ),
            (
                LinuxSeccompOperator::ScmpCmpGe,
                1 << 32,
                &[(1 << 32, true), ((1 << 32) - 1, false)],
            ),
            (
                LinuxSeccompOperator::ScmpCmpLt,
                1 << 32,
                &[((1 << 32) - 1, true), (1 << 32, false), (1 << 33, false)],
            ),
            (
                LinuxSeccompOperator::ScmpCmpLe,
                7,
                &[(7, true), (8, false), (1 << 32, false)],
            ),
        ];
        for (op, value, checks) in cases {
            rule.set_args(Some(vec![arg(2, value, None, op)]));
            profile.set_syscalls(Some(vec![rule.clone()]));
            let prog = compile(&profile).unwrap();
            for (x, allowed) in checks {
                let got = run(&prog, AUDIT_ARCH_NATIVE, nr("write"), [0, 0, *x, 0, 0, 0]);
                assert_eq!(got == RET_ALLOW, *allowed, "{op:?} {value} vs {x}");
            }
        }
    }

    #[test]
    fn notify_is_refused_and_localhost_profiles_load() {
        let mut profile = runtime_default(&default_caps());
        profile.set_default_action(LinuxSeccompAction::ScmpActNotify);
        assert!(matches!(compile(&profile), Err(Error::InvalidArgument(_))));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        std::fs::write(
            &p,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let prog = compile(&load_localhost(&p).unwrap()).unwrap();
        assert_eq!(
            run(&prog, AUDIT_ARCH_NATIVE, nr("mkdirat"), [0; 6]),
            RET_ALLOW
        );
        assert_eq!(
            run(&prog, AUDIT_ARCH_NATIVE, nr("mkdir"), [0; 6]),
            RET_ERRNO | EPERM
        );
        assert!(load_localhost(&dir.path().join("missing.json")).is_err());
    }

    #[test]
    fn localhost_profiles_are_only_small_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.json");
        let mut text = br#"{"defaultAction":"SCMP_ACT_ALLOW"}"#.to_vec();
        text.resize((1 << 20) + 1, b' ');
        std::fs::write(&big, &text).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        for p in [
            big.as_path(),
            link.as_path(),
            dir.path(),
            Path::new("/dev/zero"),
            Path::new("/dev/null"),
        ] {
            let e = load_localhost(p).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains(&p.display().to_string())),
                "{}: {e}",
                p.display()
            );
        }
        // Exactly 1 MiB, and through a symlink: taken.
        text.truncate(1 << 20);
        std::fs::write(&big, &text).unwrap();
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&big, &link).unwrap();
        load_localhost(&link).unwrap();
    }

    #[test]
    fn unknown_syscall_names_are_refused_only_where_skipping_fails_open() {
        let profile = |default: &str, action: &str| -> LinuxSeccomp {
            serde_json::from_str(&format!(
                r#"{{"defaultAction":"{default}","syscalls":[
                    {{"names":["notasyscall","mkdir"],"action":"{action}"}}]}}"#
            ))
            .unwrap()
        };
        for deny in [
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_KILL",
            "SCMP_ACT_KILL_PROCESS",
            "SCMP_ACT_TRAP",
        ] {
            for default in ["SCMP_ACT_ALLOW", "SCMP_ACT_LOG"] {
                let e = compile(&profile(default, deny)).unwrap_err();
                assert!(
                    matches!(&e, Error::InvalidArgument(m) if m.contains("notasyscall")),
                    "{default} {deny}: {e}"
                );
            }
            // Denied by the default anyway, as in Docker's profile naming other architectures'.
            let prog = compile(&profile("SCMP_ACT_ERRNO", deny)).unwrap();
            assert_eq!(
                run(&prog, AUDIT_ARCH_NATIVE, nr("read"), [0; 6]),
                RET_ERRNO | EPERM
            );
        }
        // An allow rule's unknown name is skipped: the default still applies to it.
        let prog = compile(&profile("SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW")).unwrap();
        assert_eq!(
            run(&prog, AUDIT_ARCH_NATIVE, nr("mkdir"), [0; 6]),
            RET_ALLOW
        );
    }
}
