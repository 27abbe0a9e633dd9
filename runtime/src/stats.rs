//! Usage figures for the CRI stats calls: a cgroup's CPU, memory and process count (a container's or
//! a pod's, by its path below the hierarchy roots) and a directory's disk use (a writable layer).
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

/// What `ContainerStats` and `PodSandboxStats` read from one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    /// Processes (v1/v2 `pids.current`: tasks, as the kubelet's process count reads it).
    pub processes: u64,
    pub oom_kills: u64,
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
    let rel = path.trim_matches('/');
    match hierarchy()? {
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
