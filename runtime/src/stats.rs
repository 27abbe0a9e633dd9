//! Usage figures for the CRI stats calls: a cgroup's CPU, memory, process count and, on cgroup v2,
//! pressure (PSI) (a container's or a pod's, by its path below the hierarchy roots) and a
//! directory's disk use (a writable layer).
//! It reads a handful of cgroup files directly, with the hierarchy's mount points found once, so a
//! kubelet polling a hundred containers costs a few hundred small reads. It never writes.
//!
//! Working set, as cAdvisor and the kubelet's eviction define it: usage less the inactive file
//! cache (page cache the kernel can drop at once), on both cgroup versions.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat};

use crate::error::{Error, Result};

/// CPU time, cumulative, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuStats {
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
}

/// Memory, in bytes (faults are counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub usage: u64,
    /// Usage less inactive file cache ([`working_set`]).
    pub working_set: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss: u64,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub cache: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// `None`: unlimited.
    pub limit: Option<u64>,
}

/// One line of a PSI file: the share of wall time in which tasks stalled on the resource, as
/// percentages averaged over 10, 60 and 300 seconds, and the cumulative stall time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PressureData {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Microseconds, cumulative.
    pub total_us: u64,
}

/// A cgroup v2 `*.pressure` file (KEP-4205): `some` (at least one task stalled) and `full` (all
/// non-idle tasks stalled at once; `None` where the file has no such line: older kernels' cpu).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub some: PressureData,
    pub full: Option<PressureData>,
}

/// What `ContainerStats` and `PodSandboxStats` read from one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupStats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    /// Processes (v1/v2 `pids.current`: tasks, as the kubelet's process count reads it).
    pub processes: u64,
    pub oom_kills: u64,
    /// PSI of the cgroup: `None` where the node has none (a cgroup v1 or hybrid node, a kernel
    /// without PSI, an unreadable or malformed file), which is not the same as no pressure.
    pub cpu_pressure: Option<Pressure>,
    pub memory_pressure: Option<Pressure>,
    pub io_pressure: Option<Pressure>,
}

/// A directory tree's disk use: allocated bytes and inodes, hard links counted once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Working set: usage less the inactive file cache, never below zero.
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// Where the cgroup hierarchies are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hierarchy {
    /// Controller name → mount point.
    V1(HashMap<String, PathBuf>),
    V2(PathBuf),
}

/// From `/proc/self/mountinfo`: the v1 controllers' mount points when any is mounted (a hybrid
/// host is driven as v1, as cgroups-rs does), else the cgroup2 mount.
fn parse_mountinfo(text: &str) -> Option<Hierarchy> {
    let mut v1 = HashMap::new();
    let mut v2 = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let (fstype, _source, options) = (r.next(), r.next(), r.next().unwrap_or_default());
        match fstype {
            Some("cgroup") => {
                for opt in options.split(',') {
                    if matches!(opt, "cpuacct" | "memory" | "pids" | "cpu") {
                        v1.insert(opt.to_owned(), PathBuf::from(mount_point));
                    }
                }
            }
            Some("cgroup2") if v2.is_none() => v2 = Some(PathBuf::from(mount_point)),
            _ => {}
        }
    }
    if !v1.is_empty() {
        Some(Hierarchy::V1(v1))
    } else {
        v2.map(Hierarchy::V2)
    }
}

fn hierarchy() -> Result<&'static Hierarchy> {
    static H: OnceLock<Option<Hierarchy>> = OnceLock::new();
    H.get_or_init(|| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|t| parse_mountinfo(&t))
    })
    .as_ref()
    .ok_or_else(|| Error::Internal("no cgroup hierarchy is mounted".into()))
}

/// `key value` lines (memory.stat, cpu.stat, cpuacct.stat, memory.events) as a map.
fn key_values(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k, v.trim().parse().ok()?)))
        .collect()
}

fn read_u64(path: &Path) -> Result<u64> {
    let t = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    t.trim()
        .parse()
        .map_err(|e| Error::internal(path.display(), e))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))
}

/// The text of a PSI file (`some avg10=0.00 avg60=0.00 avg300=0.00 total=0`, then a `full` line
/// of the same form). Anything else, a missing `some` line, a repeated line, a value that is not
/// a finite non-negative number, is `None`: a figure we cannot vouch for is not reported.
pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let mut some = None;
    let mut full = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let slot = match words.next()? {
            "some" => &mut some,
            "full" => &mut full,
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
        let (mut avg10, mut avg60, mut avg300, mut total_us) = (None, None, None, None);
        for word in words {
            let (key, value) = word.split_once('=')?;
            let avg = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
            };
            let field = match key {
                "avg10" => &mut avg10,
                "avg60" => &mut avg60,
                "avg300" => &mut avg300,
                "total" => {
                    total_us = Some(value.parse::<u64>().ok()?);
                    continue;
                }
                // A key a later kernel may add is no reason to drop the ones we know.
                _ => continue,
            };
            *field = Some(avg()?);
        }
        *slot = Some(PressureData {
            avg10: avg10?,
            avg60: avg60?,
            avg300: avg300?,
            total_us: total_us?,
        });
    }
    Some(Pressure { some: some?, full })
}

/// The PSI file `name` of the cgroup directory `dir`, where it can be read and parsed.
fn read_pressure(dir: &Path, name: &str) -> Option<Pressure> {
    parse_pressure(&std::fs::read_to_string(dir.join(name)).ok()?)
}

/// USER_HZ, which cpuacct.stat counts in; 100 on every Linux architecture we build for.
const USER_HZ_NS: u64 = 10_000_000;

/// v1 memory figures from `memory.usage_in_bytes` and `memory.stat` (hierarchical `total_*`
/// counters, so a pod's cgroup includes its containers').
fn memory_v1(usage: u64, stat: &HashMap<&str, u64>) -> MemoryStats {
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    let limit = get("hierarchical_memory_limit");
    MemoryStats {
        usage,
        working_set: working_set(usage, get("total_inactive_file")),
        rss: get("total_rss"),
        cache: get("total_cache"),
        page_faults: get("total_pgfault"),
        major_page_faults: get("total_pgmajfault"),
        // The kernel's "unlimited" is the largest page-aligned i64.
        limit: (limit > 0 && limit < (i64::MAX as u64) & !0xfff).then_some(limit),
    }
}

/// v2 memory figures from `memory.current`, `memory.stat` and `memory.max`.
fn memory_v2(usage: u64, stat: &HashMap<&str, u64>, max: &str) -> MemoryStats {
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    MemoryStats {
        usage,
        working_set: working_set(usage, get("inactive_file")),
        rss: get("anon"),
        cache: get("file"),
        page_faults: get("pgfault"),
        major_page_faults: get("pgmajfault"),
        limit: max.trim().parse().ok(),
    }
}

/// Reads the cgroup at `path` (relative to the hierarchy roots). A missing cgroup is NotFound.
pub fn cgroup_stats(path: &str) -> Result<CgroupStats> {
    read_cgroup(hierarchy()?, path.trim_matches('/'))
}

fn read_cgroup(hierarchy: &Hierarchy, rel: &str) -> Result<CgroupStats> {
    match hierarchy {
        Hierarchy::V1(mounts) => {
            let dir = |c: &str| -> Result<PathBuf> {
                mounts.get(c).map(|m| m.join(rel)).ok_or_else(|| {
                    Error::Internal(format!("the {c} cgroup controller is not mounted"))
                })
            };
            let cpuacct = dir("cpuacct")?;
            let cpu_times = read_text(&cpuacct.join("cpuacct.stat"))?;
            let cpu_times = key_values(&cpu_times);
            let mem = dir("memory")?;
            let stat = read_text(&mem.join("memory.stat"))?;
            let oom = read_text(&mem.join("memory.oom_control")).unwrap_or_default();
            let processes = match dir("pids") {
                Ok(p) => read_u64(&p.join("pids.current"))?,
                // No pids controller: count the processes instead.
                Err(_) => read_text(&mem.join("cgroup.procs"))?.lines().count() as u64,
            };
            Ok(CgroupStats {
                cpu: CpuStats {
                    usage_ns: read_u64(&cpuacct.join("cpuacct.usage"))?,
                    user_ns: cpu_times.get("user").copied().unwrap_or(0) * USER_HZ_NS,
                    system_ns: cpu_times.get("system").copied().unwrap_or(0) * USER_HZ_NS,
                },
                memory: memory_v1(
                    read_u64(&mem.join("memory.usage_in_bytes"))?,
                    &key_values(&stat),
                ),
                processes,
                oom_kills: key_values(&oom).get("oom_kill").copied().unwrap_or(0),
                // PSI files are cgroup v2's; a v1 (or hybrid, driven as v1) node reports none.
                cpu_pressure: None,
                memory_pressure: None,
                io_pressure: None,
            })
        }
        Hierarchy::V2(root) => {
            let dir = root.join(rel);
            let cpu = read_text(&dir.join("cpu.stat"))?;
            let cpu = key_values(&cpu);
            let stat = read_text(&dir.join("memory.stat"))?;
            let max = read_text(&dir.join("memory.max")).unwrap_or_default();
            let events = read_text(&dir.join("memory.events")).unwrap_or_default();
            let usec = |k: &str| cpu.get(k).copied().unwrap_or(0) * 1000;
            Ok(CgroupStats {
                cpu: CpuStats {
                    usage_ns: usec("usage_usec"),
                    user_ns: usec("user_usec"),
                    system_ns: usec("system_usec"),
                },
                memory: memory_v2(
                    read_u64(&dir.join("memory.current"))?,
                    &key_values(&stat),
                    &max,
                ),
                processes: read_u64(&dir.join("pids.current")).unwrap_or(0),
                oom_kills: key_values(&events).get("oom_kill").copied().unwrap_or(0),
                cpu_pressure: read_pressure(&dir, "cpu.pressure"),
                memory_pressure: read_pressure(&dir, "memory.pressure"),
                io_pressure: read_pressure(&dir, "io.pressure"),
            })
        }
    }
}

/// Allocated blocks and inodes of a walk, each hard-linked inode once.
#[derive(Default)]
struct Tally {
    seen: HashSet<u64>,
    usage: DiskUsage,
}

impl Tally {
    fn count(&mut self, st: &FileStat) {
        if st.st_nlink <= 1 || self.seen.insert(st.st_ino) {
            self.usage.bytes += st.st_blocks as u64 * 512;
            self.usage.inodes += 1;
        }
    }

    /// Counts the entries of the open directory `dir` that are on `dev` (never following a
    /// symlink), and answers the names of its subdirectories.
    fn list(&mut self, dir: &OwnedFd, dev: u64) -> Vec<CString> {
        let mut subdirs = Vec::new();
        // A directory removed under us (the container writing) is simply not counted.
        let Ok(mut entries) = Dir::openat(dir, ".", DIR_FLAGS, Mode::empty()) else {
            return subdirs;
        };
        for e in entries.iter().flatten() {
            let name = e.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let Ok(st) = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            if st.st_dev != dev {
                continue;
            }
            self.count(&st);
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                subdirs.push(name.to_owned());
            }
        }
        subdirs
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// The disk use of the tree at `dir`, without following symlinks or crossing into other
/// filesystems; allocated blocks (what `du` shows), each hard-linked inode once. A missing `dir`
/// is zero. Walks the whole tree: call it off the async threads.
///
/// The tree is a container's writable layer, which the container changes while we walk: every
/// directory is opened from its parent's fd with `O_NOFOLLOW`, so one swapped for a symlink is
/// skipped, never followed out of the tree. Two directories are open at a time whatever the
/// depth: the walk climbs back through `..`, and only to the directory it came down from (one
/// the container moved meanwhile ends the walk with what was counted).
pub fn disk_usage(dir: &Path) -> Result<DiskUsage> {
    let root = match nix::fcntl::open(dir, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(DiskUsage::default()),
        Err(e) => return Err(Error::io("open", dir, e.into())),
    };
    let st = fstat(&root).map_err(|e| Error::io("stat", dir, e.into()))?;
    let dev = st.st_dev;
    let mut tally = Tally::default();
    tally.count(&st);
    // Per level down from `dir`: the directory's (dev, ino) and its subdirectories left to walk.
    let mut levels = vec![((st.st_dev, st.st_ino), tally.list(&root, dev))];
    let mut cur = root;
    while let Some((_, pending)) = levels.last_mut() {
        if let Some(name) = pending.pop() {
            // Removed, or swapped for a symlink or another filesystem, since it was listed.
            let Ok(child) = openat(&cur, name.as_c_str(), DIR_FLAGS, Mode::empty()) else {
                continue;
            };
            let Ok(cst) = fstat(&child) else { continue };
            if cst.st_dev != dev {
                continue;
            }
            let below = tally.list(&child, dev);
            levels.push(((cst.st_dev, cst.st_ino), below));
            cur = child;
            continue;
        }
        levels.pop();
        let Some((parent, _)) = levels.last() else {
            break;
        };
        let up = openat(
            &cur,
            "..",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        match up.and_then(|fd| fstat(&fd).map(|st| (fd, st))) {
            Ok((fd, st)) if (st.st_dev, st.st_ino) == *parent => cur = fd,
            _ => break,
        }
    }
    Ok(tally.usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_set_is_usage_less_inactive_file_never_negative() {
        assert_eq!(working_set(100 << 20, 30 << 20), 70 << 20);
        assert_eq!(working_set(10, 20), 0);
    }

    #[test]
    fn v1_memory_reads_the_hierarchical_counters() {
        let stat = "cache 1\nrss 2\ninactive_file 3\nhierarchical_memory_limit 9223372036854771712\n\
                    total_cache 4096000\ntotal_rss 52000000\ntotal_inactive_file 4000000\n\
                    total_pgfault 1234\ntotal_pgmajfault 5\n";
        let m = memory_v1(60_000_000, &key_values(stat));
        assert_eq!(m.working_set, 56_000_000);
        assert_eq!((m.rss, m.cache), (52_000_000, 4_096_000));
        assert_eq!((m.page_faults, m.major_page_faults), (1234, 5));
        assert_eq!(m.limit, None, "the kernel's unlimited is no limit");
        let limited = memory_v1(1, &key_values("hierarchical_memory_limit 268435456\n"));
        assert_eq!(limited.limit, Some(268_435_456));
    }

    #[test]
    fn v2_memory_reads_anon_file_and_inactive_file() {
        let stat = "anon 50000000\nfile 8000000\ninactive_file 6000000\npgfault 77\npgmajfault 1\n";
        let m = memory_v2(60_000_000, &key_values(stat), "max\n");
        assert_eq!(m.working_set, 54_000_000);
        assert_eq!((m.rss, m.cache, m.page_faults), (50_000_000, 8_000_000, 77));
        assert_eq!(m.limit, None);
        assert_eq!(
            memory_v2(0, &HashMap::new(), "1048576\n").limit,
            Some(1 << 20)
        );
    }

    #[test]
    fn mountinfo_prefers_v1_controllers_and_falls_back_to_cgroup2() {
        let hybrid = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";
        let Some(Hierarchy::V1(m)) = parse_mountinfo(hybrid) else {
            panic!("hybrid is v1")
        };
        assert_eq!(m["cpuacct"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert!(!m.contains_key("pids"));
        let unified = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parse_mountinfo(unified),
            Some(Hierarchy::V2("/sys/fs/cgroup".into()))
        );
        assert_eq!(
            parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"),
            None
        );
    }

    /// `/proc/pressure/{cpu,memory,io}` of the node the parser was written on (kernel 6.18),
    /// which have the format of a cgroup v2 `*.pressure` file; cpu's `full` line is zeros.
    const NODE_CPU_PRESSURE: &str = "some avg10=24.17 avg60=22.93 avg300=21.77 total=3377225044\n\
                                     full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
    const NODE_MEMORY_PRESSURE: &str = "some avg10=0.00 avg60=0.00 avg300=0.00 total=192730\n\
                                        full avg10=0.00 avg60=0.00 avg300=0.00 total=72457\n";
    const NODE_IO_PRESSURE: &str = "some avg10=0.63 avg60=1.08 avg300=1.07 total=153143263\n\
                                    full avg10=0.01 avg60=0.21 avg300=0.35 total=70169494\n";

    #[test]
    fn pressure_files_parse_into_some_and_full() {
        let cpu = parse_pressure(NODE_CPU_PRESSURE).unwrap();
        assert_eq!(
            cpu.some,
            PressureData {
                avg10: 24.17,
                avg60: 22.93,
                avg300: 21.77,
                total_us: 3_377_225_044
            }
        );
        assert_eq!(cpu.full, Some(PressureData::default()));
        let memory = parse_pressure(NODE_MEMORY_PRESSURE).unwrap();
        assert_eq!(memory.some.total_us, 192_730);
        assert_eq!(memory.full.unwrap().total_us, 72_457);
        let io = parse_pressure(NODE_IO_PRESSURE).unwrap();
        assert_eq!((io.some.avg10, io.some.avg60), (0.63, 1.08));
        assert_eq!(io.full.unwrap().avg300, 0.35);
        // An older kernel's cpu.pressure has no `full` line: absent, not zero.
        let old = parse_pressure("some avg10=1.50 avg60=0.25 avg300=0.05 total=42\n").unwrap();
        assert_eq!(old.full, None);
        assert_eq!(old.some.total_us, 42);
    }

    #[test]
    fn malformed_pressure_text_is_none_never_a_panic() {
        for bad in [
            "",
            "\n",
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00\n",
            "some avg10=0.00 avg60=0.00 total=0\n",
            "some avg10=x avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=NaN avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=inf avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=-1.00 avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=-5\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=99999999999999999999999\n",
            "some avg10 avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nsome avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\npartial avg10=0.00\n",
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00\n",
            "\u{0}\u{ffff}=",
        ] {
            assert_eq!(parse_pressure(bad), None, "{bad:?}");
        }
        // Cut anywhere, the node's text never panics.
        for text in [NODE_CPU_PRESSURE, NODE_MEMORY_PRESSURE, NODE_IO_PRESSURE] {
            for cut in 0..text.len() {
                let _ = parse_pressure(&text[..cut]);
            }
        }
    }

    /// A fake cgroup with the files `read_cgroup` reads, on each version.
    fn fake_cgroup(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn pressure_is_read_on_v2_where_the_files_are_and_absent_on_v1() {
        let d = tempfile::tempdir().unwrap();
        let v2 = d.path().join("v2");
        let base = [
            ("cpu.stat", "usage_usec 5\nuser_usec 3\nsystem_usec 2\n"),
            ("memory.stat", "anon 1\nfile 2\ninactive_file 1\n"),
            ("memory.current", "10\n"),
        ];
        fake_cgroup(&v2.join("pod"), &base);
        fake_cgroup(
            &v2.join("pod"),
            &[
                ("cpu.pressure", NODE_CPU_PRESSURE),
                ("memory.pressure", NODE_MEMORY_PRESSURE),
                ("io.pressure", "garbage\n"),
            ],
        );
        let s = read_cgroup(&Hierarchy::V2(v2.clone()), "pod").unwrap();
        assert_eq!(s.cpu_pressure, parse_pressure(NODE_CPU_PRESSURE));
        assert!(s.cpu_pressure.is_some());
        assert_eq!(s.memory_pressure.unwrap().some.total_us, 192_730);
        assert_eq!(s.io_pressure, None, "malformed: absent");
        // A kernel without PSI has no such files: absent, the rest still read.
        fake_cgroup(&v2.join("nopsi"), &base);
        let s = read_cgroup(&Hierarchy::V2(v2), "nopsi").unwrap();
        assert_eq!(s.cpu.usage_ns, 5000);
        assert_eq!(
            (s.cpu_pressure, s.memory_pressure, s.io_pressure),
            (None, None, None)
        );

        // v1: no PSI even where a pressure file lies about (a hybrid node's unified tree).
        let v1 = d.path().join("v1");
        let cpuacct = v1.join("cpu,cpuacct/pod");
        fake_cgroup(
            &cpuacct,
            &[
                ("cpuacct.stat", "user 1\nsystem 1\n"),
                ("cpuacct.usage", "7\n"),
                ("cpu.pressure", NODE_CPU_PRESSURE),
            ],
        );
        let memory = v1.join("memory/pod");
        fake_cgroup(
            &memory,
            &[
                ("memory.stat", "total_rss 1\n"),
                ("memory.usage_in_bytes", "9\n"),
                ("cgroup.procs", "1\n"),
            ],
        );
        let mounts = HashMap::from([
            ("cpuacct".to_owned(), v1.join("cpu,cpuacct")),
            ("memory".to_owned(), v1.join("memory")),
        ]);
        let s = read_cgroup(&Hierarchy::V1(mounts), "pod").unwrap();
        assert_eq!((s.cpu.usage_ns, s.memory.usage, s.processes), (7, 9, 1));
        assert_eq!(
            (s.cpu_pressure, s.memory_pressure, s.io_pressure),
            (None, None, None)
        );
    }

    #[test]
    fn disk_usage_counts_files_dirs_and_hard_links_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a"), vec![1u8; 100_000]).unwrap();
        std::fs::hard_link(d.path().join("sub/a"), d.path().join("b")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("link")).unwrap();
        let u = disk_usage(d.path()).unwrap();
        // root, sub, a (= b), link.
        assert_eq!(u.inodes, 4);
        assert!(u.bytes >= 100_000 && u.bytes < 200_000, "{u:?}");
        assert_eq!(
            disk_usage(&d.path().join("missing")).unwrap(),
            DiskUsage::default()
        );
    }

    #[test]
    fn disk_usage_never_follows_a_symlink_out_of_the_tree() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("big")).unwrap();
        std::fs::write(outside.path().join("big/f"), vec![1u8; 4 << 20]).unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        // Where a directory was, as a container swaps one mid-walk.
        std::os::unix::fs::symlink(outside.path().join("big"), d.path().join("a/b/c")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("up")).unwrap();
        let u = disk_usage(d.path()).unwrap();
        // root, a, b, c, up: the links themselves, nothing behind them.
        assert_eq!(u.inodes, 5);
        assert!(u.bytes < 1 << 20, "{u:?}");
        // The walked root itself given as a symlink is not followed either.
        let link = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), link.path().join("l")).unwrap();
        assert!(disk_usage(&link.path().join("l")).is_err());
    }

    #[test]
    fn disk_usage_walks_deep_trees_with_few_fds_and_climbs_back() {
        let d = tempfile::tempdir().unwrap();
        let mut p = d.path().to_path_buf();
        for _ in 0..300 {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("f"), b"x").unwrap();
        // A sibling after the deep branch: counted only if the walk came back up.
        std::fs::create_dir(d.path().join("e")).unwrap();
        std::fs::write(d.path().join("e/g"), b"y").unwrap();
        std::fs::create_dir(d.path().join("0")).unwrap();
        let u = disk_usage(d.path()).unwrap();
        // root, 300 d, f, e, g, 0.
        assert_eq!(u.inodes, 305);
    }
}
