//! The device cgroup on cgroup v2: the OCI device rules (`linux.resources.devices`) compiled into
//! an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE and attached to the container's cgroup.
//! v2 has no `devices.allow`/`devices.deny` files; a program on the cgroup is its replacement
//! (runc and systemd do the same). The kernel runs it on every open and mknod of a device node
//! by a process in the cgroup or below, and refuses with EPERM when it returns 0.
//!
//! The rules mean what they mean on v1, so one spec confines a container the same way on both
//! hierarchies: they are replayed in order the way the v1 controller applies writes (a type-`a`
//! rule resets everything to allow-all or deny-all; a rule against the current default adds or
//! widens the exception with exactly its type, major and minor; a rule agreeing with the default
//! takes access away from exactly that exception, so, as on v1, it cannot punch a hole in a
//! wildcard one), and the program checks an access as v1 does against the resulting default and
//! exceptions. Before the first rule everything is allowed, as in a new v1 cgroup: on v2 the
//! kernel also runs the programs of every ancestor and allows only what all of them allow, so
//! "allowed" here means "whatever the parent allows", v1's inheritance. Every attach compiles the
//! whole list afresh and replaces the cgroup's program, so the list is the whole policy.
//!
//! The instructions are assembled here by hand, not with aya or libbpf: the program needs nine
//! kinds of instruction, libbpf is a C library to link into a binary we keep static and small,
//! and aya brings far more than a loader for one program. This module owns no `unsafe`: the
//! bpf(2) calls are `sys`'s.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{Error, Result};
use crate::sys;

/// One eBPF instruction, laid out as the kernel's `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// `dst_reg:4, src_reg:4`, a C bitfield: the first field takes the low nibble on a
    /// little-endian target and the high one on a big-endian target.
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        let regs = if cfg!(target_endian = "little") {
            dst | src << 4
        } else {
            dst << 4 | src
        };
        Self {
            code,
            regs,
            off,
            imm,
        }
    }
}

// Opcodes (<linux/bpf.h>, <linux/bpf_common.h>): class | operation | source.
/// BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off).
const LDX_W: u8 = 0x61;
/// BPF_ALU | BPF_AND | BPF_K: dst = (u32)dst & imm.
const AND32_K: u8 = 0x54;
/// BPF_ALU | BPF_RSH | BPF_K: dst = (u32)dst >> imm.
const RSH32_K: u8 = 0x74;
/// BPF_ALU | BPF_MOV | BPF_K: dst = (u32)imm.
const MOV32_K: u8 = 0xb4;
/// BPF_ALU | BPF_MOV | BPF_X: dst = (u32)src.
const MOV32_X: u8 = 0xbc;
/// BPF_JMP | BPF_JNE | BPF_K: if dst != imm goto +off.
const JNE_K: u8 = 0x55;
/// BPF_JMP | BPF_JEQ | BPF_K: if dst == imm goto +off.
const JEQ_K: u8 = 0x15;
/// BPF_JMP | BPF_JSET | BPF_K: if dst & imm goto +off.
const JSET_K: u8 = 0x45;
/// BPF_JMP | BPF_EXIT: return r0.
const EXIT: u8 = 0x95;

/// The return value, then the context (`struct bpf_cgroup_dev_ctx *`) on entry.
const R0: u8 = 0;
const R1: u8 = 1;
/// What the program keeps in registers: the device type, the access asked for, major, minor.
const R_TYPE: u8 = 2;
const R_ACCESS: u8 = 3;
const R_MAJOR: u8 = 4;
const R_MINOR: u8 = 5;

// `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`, where access_type is
// `(access << 16) | type`; the same values as v1's DEVCG_DEV_* and DEVCG_ACC_*.
const DEV_BLOCK: u8 = 1;
const DEV_CHAR: u8 = 2;
const ACC_MKNOD: u8 = 1;
const ACC_READ: u8 = 2;
const ACC_WRITE: u8 = 4;

/// The program calls no helper, so no helper's license requirement applies; the kernel only
/// insists on some string.
const LICENSE: &std::ffi::CStr = c"Apache-2.0";

/// A v1 exception: a device (or a wildcard class of them) and the access it is granted, in
/// deny-all mode, or refused, in allow-all mode. `None` is `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exception {
    typ: u8,
    major: Option<u32>,
    minor: Option<u32>,
    access: u8,
}

/// The state the v1 controller would be in after the rules: its default and its exceptions.
#[derive(Debug, PartialEq, Eq)]
struct Policy {
    default_allow: bool,
    exceptions: Vec<Exception>,
}

enum Rule {
    /// Type `a`: on v1 any such write resets the cgroup, whatever major, minor and access say.
    All,
    Device(Exception),
}

fn parse(rule: &LinuxDeviceCgroup) -> Result<Rule> {
    let invalid = |why: &str| Error::InvalidArgument(format!("device rule \"{rule}\": {why}"));
    let typ = match rule.typ().unwrap_or_default() {
        LinuxDeviceType::A => return Ok(Rule::All),
        LinuxDeviceType::B => DEV_BLOCK,
        LinuxDeviceType::C => DEV_CHAR,
        LinuxDeviceType::U | LinuxDeviceType::P => {
            return Err(invalid("the device cgroup knows only types a, b and c"));
        }
    };
    // Real numbers are far smaller (12-bit majors, 20-bit minors); refusing the rest keeps every
    // number a positive 32-bit immediate.
    let number = |n: Option<i64>| match n {
        None => Ok(None),
        Some(n) => i32::try_from(n)
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| Some(n as u32))
            .ok_or_else(|| invalid("major and minor must be in 0..2^31 or unset (any)")),
    };
    let mut access = 0;
    for c in rule.access().as_deref().unwrap_or("").chars() {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return Err(invalid("access is made of r, w and m")),
        };
    }
    Ok(Rule::Device(Exception {
        typ,
        major: number(rule.major())?,
        minor: number(rule.minor())?,
        access,
    }))
}

/// Replays `rules` as the v1 devices controller applies writes to `devices.allow`/`.deny`.
fn policy(rules: &[LinuxDeviceCgroup]) -> Result<Policy> {
    let mut p = Policy {
        default_allow: true,
        exceptions: Vec::new(),
    };
    for rule in rules {
        let ex = match parse(rule)? {
            Rule::All => {
                p.default_allow = rule.allow();
                p.exceptions.clear();
                continue;
            }
            Rule::Device(ex) => ex,
        };
        let same = p
            .exceptions
            .iter_mut()
            .find(|e| (e.typ, e.major, e.minor) == (ex.typ, ex.major, ex.minor));
        if rule.allow() != p.default_allow {
            match same {
                Some(e) => e.access |= ex.access,
                None => p.exceptions.push(ex),
            }
        } else if let Some(e) = same {
            e.access &= !ex.access;
        }
    }
    // One without access matches nothing: the kernel never asks about an access of 0.
    p.exceptions.retain(|e| e.access != 0);
    Ok(p)
}

/// The device program for `rules`: 1 allows the access, 0 refuses it. It checks the access
/// against each exception in turn, as v1 does: in deny-all mode an exception allows an access
/// that asks for nothing beyond what it grants; in allow-all mode one refuses an access that
/// asks for any of what it lists. Nothing matching, the default answers.
pub(crate) fn program(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Insn>> {
    let policy = policy(rules)?;
    let mut out = vec![
        Insn::new(LDX_W, R_TYPE, R1, 0, 0),
        Insn::new(AND32_K, R_TYPE, 0, 0, 0xffff),
        Insn::new(LDX_W, R_ACCESS, R1, 0, 0),
        Insn::new(RSH32_K, R_ACCESS, 0, 0, 16),
        Insn::new(LDX_W, R_MAJOR, R1, 4, 0),
        Insn::new(LDX_W, R_MINOR, R1, 8, 0),
    ];
    let verdict = |allow: bool| {
        [
            Insn::new(MOV32_K, R0, 0, 0, i32::from(allow)),
            Insn::new(EXIT, 0, 0, 0, 0),
        ]
    };
    for ex in &policy.exceptions {
        // Every test in the block jumps, when it fails, to the first instruction after it.
        let mut block = vec![Insn::new(JNE_K, R_TYPE, 0, 0, i32::from(ex.typ))];
        if let Some(major) = ex.major {
            block.push(Insn::new(JNE_K, R_MAJOR, 0, 0, major as i32));
        }
        if let Some(minor) = ex.minor {
            block.push(Insn::new(JNE_K, R_MINOR, 0, 0, minor as i32));
        }
        if policy.default_allow {
            // Refused when it asks for any of the listed access.
            block.extend([
                Insn::new(MOV32_X, R0, R_ACCESS, 0, 0),
                Insn::new(AND32_K, R0, 0, 0, i32::from(ex.access)),
                Insn::new(JEQ_K, R0, 0, 0, 0),
            ]);
        } else {
            // Any bit outside the grant, an unknown one included, is a miss.
            block.push(Insn::new(
                JSET_K,
                R_ACCESS,
                0,
                0,
                !i32::from(ex.access) & 0xffff,
            ));
        }
        block.extend(verdict(!policy.default_allow));
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            if !matches!(insn.code, JNE_K | JEQ_K | JSET_K) {
                continue;
            }
            insn.off = i16::try_from(len - i - 1)
                .map_err(|_| Error::Internal("device program block too long".into()))?;
        }
        out.extend(block);
    }
    out.extend(verdict(policy.default_allow));
    Ok(out)
}

/// Loads the program for `rules` and attaches it to the cgroup directory `cgroup_dir` in place
/// of the device programs already attached there. The new program goes on before the old ones
/// come off (runc's order), so there is no moment without a program; in between, an access must
/// pass both.
pub(crate) fn attach(cgroup_dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let insns = program(rules)?;
    let dir = open_dir(cgroup_dir)?;
    let old = attached_ids(&dir, cgroup_dir)?;
    let prog = load(&insns)?;
    sys::bpf_attach_device_program(dir.as_fd(), prog.as_fd())
        .map_err(|e| bpf_err("attach the device program to", cgroup_dir, e))?;
    for id in old {
        let old_prog = match sys::bpf_program_by_id(id) {
            Ok(fd) => fd,
            // Detached and freed since the query.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(bpf_err("open the old device program of", cgroup_dir, e)),
        };
        match sys::bpf_detach_device_program(dir.as_fd(), old_prog.as_fd()) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                return Err(bpf_err("detach the old device program from", cgroup_dir, e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The ids of the device programs attached to `cgroup_dir` itself.
#[cfg(test)]
fn attached(cgroup_dir: &Path) -> Result<Vec<u32>> {
    attached_ids(&open_dir(cgroup_dir)?, cgroup_dir)
}

fn attached_ids(dir: &OwnedFd, path: &Path) -> Result<Vec<u32>> {
    sys::bpf_device_program_ids(dir.as_fd())
        .map_err(|e| bpf_err("query the device programs of", path, e))
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| Error::io("open cgroup", path, e))
}

fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let first = match sys::bpf_load_device_program(insns, LICENSE, None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    // Again with the verifier's log, only to say in the error why it refused the program.
    let mut log = vec![0u8; 64 * 1024];
    if let Ok(fd) = sys::bpf_load_device_program(insns, LICENSE, Some(&mut log)) {
        return Ok(fd);
    }
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let log = String::from_utf8_lossy(&log[..end]);
    Err(Error::Internal(format!(
        "load the device program ({} instructions): {first}; verifier: {}",
        insns.len(),
        log.trim()
    )))
}

fn bpf_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{what} {}: {e}", path.display()))
}

/// A device node of the host, as a privileged container gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostDevice {
    /// The path under `/dev`, the same in the container.
    pub path: std::path::PathBuf,
    pub block: bool,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The directories of `/dev` whose nodes a container has its own of (its devpts, shm, mqueue,
/// the `fd` link) or that are container managers' bookkeeping, as containerd skips them.
const HOST_DEV_SKIPPED_DIRS: &[&str] =
    &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Every character and block node under the host's `dev` (normally `/dev`), subdirectories
/// included, as containerd lists them for a privileged container and runc then creates each in
/// the container's `/dev`. Symlinks are not followed (`/dev/disk/by-*` are links to nodes that
/// are listed anyway). Skipped: `console` (the container's is its terminal's) and `ptmx` (the
/// container's is its own devpts instance's; the host's would open the host's terminals). A
/// directory that cannot be read, or a node gone while listed, is left out: the list is what
/// the host has at that moment, and a host without `/dev` gives an empty one.
pub(crate) fn host_devices(dev: &Path) -> Vec<HostDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut dirs = vec![(dev.to_path_buf(), std::path::PathBuf::from("/dev"))];
    while let Some((dir, in_container)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            let ft = meta.file_type();
            let top = in_container == Path::new("/dev");
            if ft.is_dir() {
                if !(top && HOST_DEV_SKIPPED_DIRS.iter().any(|d| name == *d)) {
                    dirs.push((entry.path(), in_container.join(&name)));
                }
                continue;
            }
            if top && (name == "console" || name == "ptmx") {
                continue;
            }
            if !(ft.is_char_device() || ft.is_block_device()) {
                continue;
            }
            let rdev = meta.rdev();
            out.push(HostDevice {
                path: in_container.join(&name),
                block: ft.is_block_device(),
                major: nix::sys::stat::major(rdev),
                minor: nix::sys::stat::minor(rdev),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

    use super::*;

    /// A rule from v1's syntax, `c 1:3 rwm`.
    fn rule(allow: bool, line: &str) -> LinuxDeviceCgroup {
        let mut words = line.split_whitespace();
        let typ = match words.next().unwrap() {
            "a" => LinuxDeviceType::A,
            "b" => LinuxDeviceType::B,
            "c" => LinuxDeviceType::C,
            "u" => LinuxDeviceType::U,
            t => panic!("type {t}"),
        };
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(allow).set_typ(Some(typ));
        if let Some(numbers) = words.next() {
            let (major, minor) = numbers.split_once(':').unwrap();
            let n = |s: &str| (s != "*").then(|| s.parse::<i64>().unwrap());
            r.set_major(n(major)).set_minor(n(minor));
        }
        r.set_access(words.next().map(str::to_string));
        r
    }

    /// What the lead's spec sends: deny everything, then runc's default devices.
    fn default_rules() -> Vec<LinuxDeviceCgroup> {
        let mut rules = vec![rule(false, "a *:* rwm")];
        for dev in [
            "1:3", "1:5", "1:7", "1:8", "1:9", "5:0", "5:1", "5:2", "136:*",
        ] {
            rules.push(rule(true, &format!("c {dev} rwm")));
        }
        rules
    }

    /// Runs `prog` as the kernel would for one access; panics on an opcode it does not model
    /// (so a new kind of instruction needs a model here first), a backward jump or a fall off
    /// the end.
    fn run(prog: &[Insn], typ: u8, major: u32, minor: u32, access: &str) -> u64 {
        let access: u32 = access
            .chars()
            .map(|c| match c {
                'r' => 2,
                'w' => 4,
                'm' => 1,
                _ => panic!("access {c}"),
            })
            .sum();
        let ctx = [access << 16 | u32::from(typ), major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0;
        loop {
            let i = prog[pc];
            let (dst, src) = if cfg!(target_endian = "little") {
                (usize::from(i.regs & 0xf), usize::from(i.regs >> 4))
            } else {
                (usize::from(i.regs >> 4), usize::from(i.regs & 0xf))
            };
            let imm64 = i64::from(i.imm) as u64;
            // The verifier refuses what the instruction does not use, as "reserved fields".
            if !matches!(i.code, LDX_W | JNE_K | JEQ_K | JSET_K) {
                assert_eq!(i.off, 0, "offset in {i:?}");
            }
            if matches!(i.code, LDX_W | MOV32_X | EXIT) {
                assert_eq!(i.imm, 0, "immediate in {i:?}");
            }
            if !matches!(i.code, LDX_W | MOV32_X) {
                assert_eq!(src, 0, "source register in {i:?}");
            }
            pc += 1;
            let jump = match i.code {
                LDX_W => {
                    assert_eq!(src, usize::from(R1), "loads only from the context");
                    r[dst] = u64::from(ctx[usize::try_from(i.off).unwrap() / 4]);
                    false
                }
                AND32_K => {
                    r[dst] = u64::from(r[dst] as u32 & i.imm as u32);
                    false
                }
                RSH32_K => {
                    r[dst] = u64::from((r[dst] as u32) >> i.imm);
                    false
                }
                MOV32_K => {
                    r[dst] = u64::from(i.imm as u32);
                    false
                }
                MOV32_X => {
                    r[dst] = u64::from(r[src] as u32);
                    false
                }
                JNE_K => r[dst] != imm64,
                JEQ_K => r[dst] == imm64,
                JSET_K => r[dst] & imm64 != 0,
                EXIT => return r[0],
                c => panic!("opcode {c:#x} not modelled"),
            };
            if jump {
                assert!(i.off >= 0, "backward jump");
                pc += usize::try_from(i.off).unwrap();
            }
        }
    }

    fn allows(prog: &[Insn], dev: &str, access: &str) -> bool {
        let (typ, numbers) = dev.split_once(' ').unwrap();
        let typ = match typ {
            "b" => DEV_BLOCK,
            "c" => DEV_CHAR,
            t => panic!("type {t}"),
        };
        let (major, minor) = numbers.split_once(':').unwrap();
        match run(
            prog,
            typ,
            major.parse().unwrap(),
            minor.parse().unwrap(),
            access,
        ) {
            0 => false,
            1 => true,
            v => panic!("returned {v}"),
        }
    }

    fn check(rules: &[LinuxDeviceCgroup], cases: &[(&str, &str, bool)]) {
        let prog = program(rules).unwrap();
        for &(dev, access, want) in cases {
            assert_eq!(
                allows(&prog, dev, access),
                want,
                "{dev} {access} under {:?}",
                rules.iter().map(ToString::to_string).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn default_rules_allow_the_default_devices_and_nothing_else() {
        check(
            &default_rules(),
            &[
                ("c 1:3", "r", true), // null
                ("c 1:3", "rw", true),
                ("c 1:3", "m", true),
                ("c 1:5", "rw", true), // zero
                ("c 1:9", "r", true),  // urandom
                ("c 5:0", "rw", true), // tty
                ("c 5:2", "rw", true), // ptmx
                ("c 136:0", "rw", true),
                ("c 136:4095", "rwm", true), // pts: any minor
                ("c 1:1", "r", false),       // mem
                ("c 1:4", "rw", false),      // port
                ("c 4:1", "rw", false),      // tty1
                ("c 10:229", "rw", false),   // fuse, not asked for
                ("c 10:200", "rw", false),   // net/tun
                ("c 137:0", "r", false),
                ("c 0:3", "r", false),
                ("b 1:3", "r", false), // the type counts, not only the numbers
                ("b 8:0", "r", false), // sda
                ("b 8:0", "m", false),
                ("b 7:0", "rw", false), // loop0
            ],
        );
    }

    #[test]
    fn wildcard_major_and_partial_access() {
        let mut rules = default_rules();
        rules.push(rule(true, "c *:* m"));
        rules.push(rule(true, "b *:0 r"));
        rules.push(rule(true, "c 10:229 rw"));
        check(
            &rules,
            &[
                ("c 4:1", "m", true), // mknod of any char device...
                ("c 4:1", "r", false),
                ("c 4:1", "rm", false), // ...but nothing more
                ("c 1:3", "rwm", true),
                ("b 8:0", "r", true), // any major, minor 0
                ("b 8:0", "rw", false),
                ("b 8:1", "r", false),
                ("b 8:0", "m", false),
                ("c 10:229", "rw", true),
                ("c 10:229", "m", true),    // from c *:* m
                ("c 10:229", "rwm", false), // no single exception grants all three
            ],
        );
    }

    #[test]
    fn later_rules_override_earlier_ones_as_on_v1() {
        // Deny-all mode: a deny takes access away from the matching allow...
        let mut rules = default_rules();
        rules.push(rule(false, "c 1:3 w"));
        rules.push(rule(false, "c 1:5 rwm"));
        // ...but, as on v1, cannot punch a hole in a wildcard one.
        rules.push(rule(false, "c 136:3 rwm"));
        check(
            &rules,
            &[
                ("c 1:3", "r", true),
                ("c 1:3", "w", false),
                ("c 1:3", "rw", false),
                ("c 1:5", "r", false),
                ("c 1:7", "r", true),
                ("c 136:3", "rw", true),
            ],
        );
        // Allow-all mode: a deny refuses any overlapping access; an allow takes it back.
        check(
            &[
                rule(true, "a"),
                rule(false, "c 1:3 w"),
                rule(false, "b 8:* rwm"),
                rule(true, "b 8:* m"),
            ],
            &[
                ("c 1:3", "r", true),
                ("c 1:3", "rw", false),
                ("c 1:3", "m", true),
                ("c 1:5", "rw", true),
                ("b 8:0", "r", false),
                ("b 8:17", "m", true),
                ("b 9:0", "rw", true),
            ],
        );
        // A later `a` rule resets everything before it.
        let mut rules = default_rules();
        rules.push(rule(true, "a"));
        rules.push(rule(false, "c 1:3 rwm"));
        check(&rules, &[("c 1:3", "r", false), ("c 1:4", "rw", true)]);
        rules.push(rule(false, "a"));
        check(&rules, &[("c 1:3", "r", false), ("c 1:4", "rw", false)]);
    }

    #[test]
    fn before_any_rule_everything_is_allowed() {
        // As a new v1 cgroup: the parent's programs still apply on top.
        check(&[], &[("c 1:3", "rwm", true), ("b 8:0", "rw", true)]);
        check(
            &[rule(false, "c 1:4 rw")],
            &[("c 1:4", "r", false), ("c 1:3", "rwm", true)],
        );
    }

    #[test]
    fn invalid_rules_are_refused() {
        for bad in [
            rule(true, "u 1:3 rwm"),
            rule(true, "c 1:3 rx"),
            rule(true, "c -1:3 r"),
            rule(true, "c 1:4294967296 r"),
        ] {
            let err = program(std::slice::from_ref(&bad)).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
        }
        // As on v1, type `a` ignores the rest and an empty access grants nothing.
        check(
            &[rule(false, "a 1:3 x"), rule(true, "c 1:3")],
            &[("c 1:3", "r", false)],
        );
    }

    #[test]
    fn the_program_is_as_short_as_its_exceptions() {
        // Loads, then per exception: type, major, minor, access, verdict; then the default.
        let prog = program(&default_rules()).unwrap();
        assert_eq!(prog.len(), 6 + 8 * 6 + 5 + 2);
        assert_eq!(prog[0], Insn::new(LDX_W, R_TYPE, R1, 0, 0));
        assert_eq!(prog[prog.len() - 1].code, EXIT);
    }

    // --- against the kernel (root) ---

    /// A fresh cgroup v2 directory, removed on drop; None (with the reason printed) where the
    /// test cannot run.
    struct TempCgroup(PathBuf);

    impl TempCgroup {
        fn new(tag: &str) -> Option<Self> {
            if !nix::unistd::geteuid().is_root() {
                eprintln!("skipped: needs root");
                return None;
            }
            let Some(root) = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                .into_iter()
                .find(|p| {
                    nix::sys::statfs::statfs(*p)
                        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
                })
            else {
                eprintln!("skipped: no cgroup2 mount");
                return None;
            };
            let dir =
                Path::new(root).join(format!("carapace-devtest-{tag}-{}", std::process::id()));
            std::fs::create_dir(&dir).unwrap();
            Some(Self(dir))
        }

        /// Runs `script` in `sh` moved into this cgroup; its exit status and stderr.
        fn run(&self, script: &str) -> (bool, String) {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "echo $$ > \"$0/cgroup.procs\" || exit 99; {script}"
                ))
                .arg(&self.0)
                .output()
                .unwrap();
            assert_ne!(out.status.code(), Some(99), "could not join {:?}", self.0);
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }

        fn can_open(&self, dev: &str) -> bool {
            let (ok, stderr) = self.run(&format!("exec head -c 1 {dev} >/dev/null"));
            assert!(
                ok || stderr.contains("Operation not permitted"),
                "{dev}: {stderr}"
            );
            ok
        }
    }

    impl Drop for TempCgroup {
        fn drop(&mut self) {
            // The shells have been reaped; the kernel may still be taking them out.
            for _ in 0..200 {
                match std::fs::remove_dir(&self.0) {
                    Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    _ => return,
                }
            }
        }
    }

    #[test]
    fn the_kernel_enforces_the_program() {
        let Some(cg) = TempCgroup::new("enforce") else {
            return;
        };
        // Open, then confined: /dev/null only.
        assert!(cg.can_open("/dev/zero"));
        attach(&cg.0, &[rule(false, "a"), rule(true, "c 1:3 rwm")]).unwrap();
        assert!(cg.can_open("/dev/null"));
        assert!(
            !cg.can_open("/dev/zero"),
            "/dev/zero opened under the program"
        );
        assert!(!cg.can_open("/dev/full"));
        // The default list passes the verifier and lets a shell do its usual things.
        attach(&cg.0, &default_rules()).unwrap();
        let (ok, stderr) =
            cg.run("head -c 1 /dev/zero >/dev/null && exec head -c 1 /dev/urandom >/dev/null");
        assert!(ok, "{stderr}");
        assert!(!cg.can_open("/dev/loop0"));
        // Allow-all mode, whose blocks test access differently.
        attach(&cg.0, &[rule(true, "a"), rule(false, "c 1:5 w")]).unwrap();
        assert!(cg.can_open("/dev/zero"), "reading is not writing");
        let (ok, stderr) = cg.run(": > /dev/zero");
        assert!(
            !ok && stderr.contains("Operation not permitted"),
            "{stderr}"
        );
        let (ok, stderr) = cg.run(": > /dev/null");
        assert!(ok, "{stderr}");
        assert_eq!(attached(&cg.0).unwrap().len(), 1);
    }

    #[test]
    fn a_second_attach_replaces_the_first() {
        let Some(cg) = TempCgroup::new("replace") else {
            return;
        };
        assert_eq!(attached(&cg.0).unwrap(), Vec::<u32>::new());
        attach(&cg.0, &[rule(false, "a"), rule(true, "c 1:3 rwm")]).unwrap();
        let first = attached(&cg.0).unwrap();
        assert_eq!(first.len(), 1);
        assert!(!cg.can_open("/dev/zero"));
        attach(
            &cg.0,
            &[
                rule(false, "a"),
                rule(true, "c 1:3 rwm"),
                rule(true, "c 1:5 r"),
            ],
        )
        .unwrap();
        let second = attached(&cg.0).unwrap();
        assert_eq!(second.len(), 1, "programs attached: {second:?}");
        assert_ne!(second, first);
        // Had the first stayed, it would still refuse: every program must allow.
        assert!(cg.can_open("/dev/zero"));
        assert!(!cg.can_open("/dev/full"));
    }

    #[test]
    fn host_devices_are_every_node_below_dev_but_the_containers_own() {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        let d = tempfile::tempdir().unwrap();
        let node = |rel: &str, kind: SFlag, major: u64, minor: u64| {
            let p = d.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            mknod(
                &p,
                kind,
                Mode::from_bits_truncate(0o640),
                makedev(major, minor),
            )
            .unwrap();
        };
        node("null", SFlag::S_IFCHR, 1, 3);
        node("net/tun", SFlag::S_IFCHR, 10, 200);
        node("loop0", SFlag::S_IFBLK, 7, 0);
        // The container's own, or the host's terminals: left out.
        node("pts/ptmx", SFlag::S_IFCHR, 5, 2);
        node("ptmx", SFlag::S_IFCHR, 5, 2);
        node("console", SFlag::S_IFCHR, 5, 1);
        node("shm/x", SFlag::S_IFCHR, 1, 5);
        std::os::unix::fs::symlink("null", d.path().join("link")).unwrap();
        std::fs::write(d.path().join("file"), "").unwrap();
        let got: Vec<(String, bool, u64, u64, u32)> = host_devices(d.path())
            .into_iter()
            .map(|h| {
                (
                    h.path.display().to_string(),
                    h.block,
                    h.major,
                    h.minor,
                    h.mode,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/dev/loop0".to_string(), true, 7, 0, 0o640),
                ("/dev/net/tun".to_string(), false, 10, 200, 0o640),
                ("/dev/null".to_string(), false, 1, 3, 0o640),
            ]
        );
        assert!(host_devices(&d.path().join("missing")).is_empty());
    }
}
