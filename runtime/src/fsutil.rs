//! File helpers every other module shares: crash-safe writes (temp, fsync, rename, fsync dir),
//! resolving and creating paths inside a container root without following symlinks out of it
//! (openat2 `RESOLVE_IN_ROOT`), and RFC 3339 timestamps. Nothing here mounts or spawns.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, mkdirat};

use crate::error::{Context, Error, Result};

/// Writes `bytes` to `path` for files under the state dir (bundles, monitor records): they
/// describe processes, mounts and namespaces that a reboot ends, so they must survive a crash of
/// the daemon, which the rename gives (the page cache outlives it), but need no fsync; on a node
/// the state dir is a tmpfs anyway. Readers see the old file or the whole new one.
pub fn write_state(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, false)
}

/// Writes `bytes` to `path` so that after a crash, of the machine too, the file holds either the
/// old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

/// A temporary file beside `path`, renamed over it; with `durable`, fsync'd before the rename and
/// the directory after it.
fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Internal(format!("{} has no parent", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io("write", &tmp, e))?;
        if durable {
            f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename to", path, e))?;
        if durable {
            // The rename itself must reach the disk too.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io("fsync", dir, e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The components of an absolute container path, refusing `..` so nothing climbs out even before
/// the kernel's scoping applies.
fn components(path: &str) -> Result<Vec<&str>> {
    let mut out = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_str().unwrap_or_default()),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::InvalidArgument(format!("path {path:?} has ..")));
            }
        }
    }
    Ok(out)
}

fn open_in_root(root: &OwnedFd, rel: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rel = if rel.is_empty() { "." } else { rel };
    openat2(root.as_fd(), rel, how)
}

/// What to create at the end of a mount target when it is missing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Opens (creating as needed) `path` inside the directory `root` as an `O_PATH` fd, resolving every
/// component — symlinks included — as if `root` were `/`. Mounting onto `/proc/self/fd/<fd>` then
/// hits exactly that inode, whatever a container image's symlinks say.
pub fn mkdir_all_in_root(root: &OwnedFd, path: &str, last: Kind) -> Result<OwnedFd> {
    let comps = components(path)?;
    let mut sofar = String::new();
    for (i, c) in comps.iter().enumerate() {
        let parent = sofar.clone();
        if !sofar.is_empty() {
            sofar.push('/');
        }
        sofar.push_str(c);
        let is_last = i + 1 == comps.len();
        match open_in_root(root, &sofar, OFlag::O_PATH) {
            Ok(fd) => {
                if is_last {
                    return Ok(fd);
                }
                continue;
            }
            Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(Error::Internal(format!(
                    "open {path} in root: {}",
                    e.desc()
                )));
            }
        }
        let dir = open_in_root(root, &parent, OFlag::O_DIRECTORY | OFlag::O_RDONLY)
            .ctx(format_args!("open {parent:?} in root"))?;
        if is_last && last == Kind::File {
            let how = OpenHow::new()
                .flags(OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
                .mode(Mode::from_bits_truncate(0o644))
                .resolve(ResolveFlag::RESOLVE_BENEATH);
            openat2(dir.as_fd(), *c, how).ctx(format_args!("create {path} in root"))?;
        } else {
            match mkdirat(dir.as_fd(), *c, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::Internal(format!("mkdir {path}: {}", e.desc()))),
            }
        }
    }
    open_in_root(root, &sofar, OFlag::O_PATH).ctx(format_args!("open {path} in root"))
}

/// The `/proc/self/fd/N` path of `fd`, to hand an exact inode to mount(2).
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// How the mount holding a path propagates, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPropagation {
    /// The mount point holding the path.
    pub mount_point: PathBuf,
    /// In a peer group (`shared:N`).
    pub shared: bool,
    /// Receives from a master (`master:N`).
    pub slave: bool,
}

/// The propagation of the mount holding `path` (made absolute and symlink-free first).
pub fn mount_propagation(path: &Path) -> Result<MountPropagation> {
    let real = std::fs::canonicalize(path).map_err(|e| Error::io("resolve", path, e))?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::internal("read /proc/self/mountinfo", e))?;
    propagation_in(&table, &real)
        .ok_or_else(|| Error::Internal(format!("no mount holds {}", real.display())))
}

/// The last (topmost) mount of `mountinfo` whose mount point is the longest prefix of `path`.
fn propagation_in(mountinfo: &str, path: &Path) -> Option<MountPropagation> {
    let mut best: Option<MountPropagation> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4).map(|p| unescape_octal(p)) else {
            continue;
        };
        if !path.starts_with(&point) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|b| point.components().count() >= b.mount_point.components().count());
        if longer {
            let optional = fields.iter().skip(6).take_while(|f| **f != "-");
            let (mut shared, mut slave) = (false, false);
            for f in optional {
                shared |= f.starts_with("shared:");
                slave |= f.starts_with("master:");
            }
            best = Some(MountPropagation {
                mount_point: point,
                shared,
                slave,
            });
        }
    }
    best
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// `time` as Go's `time.RFC3339Nano` in UTC (trailing zeros of the fraction trimmed), which is what
/// the kubelet parses in CRI logs.
pub fn rfc3339_nano(time: SystemTime) -> String {
    let d = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let nanos = d.subsec_nanos();
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Nanoseconds since the epoch, as the CRI reports times.
pub fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

/// Waits at most `left` (for ever with `None`) until one of `fds` can be read or has hung up, and
/// returns the positions of those that can; an interrupted wait returns none. For the loops that
/// read an exec's output to its end without a thread per pipe.
pub(crate) fn readable(
    fds: &[std::os::fd::BorrowedFd<'_>],
    left: Option<std::time::Duration>,
) -> nix::Result<Vec<usize>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut polled: Vec<PollFd> = fds
        .iter()
        .map(|f| PollFd::new(*f, PollFlags::POLLIN))
        .collect();
    // Whole milliseconds, rounded up, so the deadline is not spun towards.
    let wait = match left {
        Some(l) => {
            PollTimeout::try_from(l.as_millis().min(60_000) as i32 + 1).unwrap_or(PollTimeout::MAX)
        }
        None => PollTimeout::NONE,
    };
    match poll(&mut polled, wait) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    Ok(polled
        .iter()
        .enumerate()
        .filter(|(_, f)| f.revents().is_some_and(|r| !r.is_empty()))
        .map(|(i, _)| i)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_match_go_rfc3339nano() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.12Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::new(951_782_400, 1);
        assert_eq!(rfc3339_nano(leap), "2000-02-29T00:00:00.000000001Z");
    }

    #[test]
    fn the_topmost_longest_mount_gives_the_propagation() {
        let table = "\
1 0 8:1 / / rw - ext4 /dev/sda rw
2 1 0:5 / /mnt/vol rw shared:7 - tmpfs t rw
3 1 0:6 / /mnt/vol rw master:7 - tmpfs t rw
4 1 0:7 / /mnt/v\\040x rw shared:3 master:2 - tmpfs t rw
";
        let p = |path: &str| propagation_in(table, Path::new(path)).unwrap();
        let root = p("/mnt/volume");
        assert_eq!(root.mount_point, Path::new("/"));
        assert!(!root.shared && !root.slave);
        // Mounted over: the later entry wins.
        let vol = p("/mnt/vol/a/b");
        assert!(vol.slave && !vol.shared, "{vol:?}");
        let spaced = p("/mnt/v x/y");
        assert_eq!(spaced.mount_point, Path::new("/mnt/v x"));
        assert!(spaced.shared && spaced.slave);
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // An image symlink naming a host path resolves inside the root: dangling there, refused.
        std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
        let fd: OwnedFd = std::fs::File::open(root.path()).unwrap().into();
        assert!(mkdir_all_in_root(&fd, "/evil/x", Kind::Dir).is_err());
        assert!(!outside.path().join("x").exists());
        // An absolute symlink to a directory of the image is followed within the root.
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink("/real", root.path().join("ok")).unwrap();
        mkdir_all_in_root(&fd, "/ok/x", Kind::Dir).unwrap();
        assert!(root.path().join("real/x").is_dir());
        mkdir_all_in_root(&fd, "/etc/hosts", Kind::File).unwrap();
        assert!(root.path().join("etc/hosts").is_file());
        assert!(mkdir_all_in_root(&fd, "/../x", Kind::Dir).is_err());
    }
}
