//! Unpacking one layer tar (gzip, zstd or plain) into an empty directory, as overlayfs wants it:
//! Docker/OCI whiteouts become 0/0 character devices and `trusted.overlay.opaque` xattrs. The tar
//! is hostile until proven otherwise: every entry is created relative to a directory fd opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so no symlink can make us write outside the
//! directory; `..` and absolute paths are refused outright, as are device nodes, and entries and
//! bytes are capped.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use sha2::{Digest as _, Sha256};

use crate::{Digest, Error};

/// Caps on what one layer may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Entries in the tar, of every type.
    pub max_entries: u64,
    /// Uncompressed bytes of the tar stream.
    pub max_bytes: u64,
    /// Character and block devices other than whiteouts. Off by default: an image has no business
    /// shipping `/dev/sda` nodes, and the runtime gives containers their `/dev`.
    pub allow_devices: bool,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_entries: 1_000_000,
            max_bytes: 64 << 30,
            allow_devices: false,
        }
    }
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Hashes (for the diff ID) and counts what the tar reader consumes, and stops at the byte cap.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    max: u64,
    exceeded: bool,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.max {
            self.exceeded = true;
            return Err(std::io::Error::other(
                "layer larger than the configured maximum",
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks the layer blob at `blob` into the empty directory `dest` and returns its diff ID
/// (the digest of the uncompressed tar). `what` names the layer in errors.
pub fn unpack(
    blob: &Path,
    dest: &Path,
    limits: &UnpackLimits,
    what: &str,
) -> Result<Digest, Error> {
    let f = File::open(blob).map_err(|e| Error::io(format!("opening {}", blob.display()), e))?;
    let mut br = BufReader::with_capacity(256 * 1024, f);
    let head = br
        .fill_buf()
        .map_err(|e| Error::io(format!("reading {}", blob.display()), e))?;
    // The magic bytes decide, not the media type: registries are not always right about it.
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(br))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(br)
                .map_err(|e| Error::io(format!("starting zstd for {what}"), e))?,
        )
    } else {
        Box::new(br)
    };
    let mut hashing = Hashing {
        inner: reader,
        hasher: Sha256::new(),
        count: 0,
        max: limits.max_bytes,
        exceeded: false,
    };
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("opening {}", dest.display()), e.into()))?;
    let mut w = Writer {
        root,
        dest: dest.to_owned(),
        limits,
        what,
        entries: 0,
        dirs: Vec::new(),
    };
    let res = w.entries(&mut hashing);
    if hashing.exceeded {
        return Err(Error::refused(
            what,
            format!("more than {} uncompressed bytes", limits.max_bytes),
        ));
    }
    res?;
    // The tar ends with zero blocks the reader may not have consumed; the diff ID covers them.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| {
        if hashing.exceeded {
            Error::refused(
                what,
                format!("more than {} uncompressed bytes", limits.max_bytes),
            )
        } else {
            Error::refused(what, format!("corrupt compressed stream: {e}"))
        }
    })?;
    w.finish_dirs();
    Ok(Digest::from_hasher(hashing.hasher))
}

struct Writer<'a> {
    root: OwnedFd,
    dest: PathBuf,
    limits: &'a UnpackLimits,
    what: &'a str,
    entries: u64,
    /// Directory times are set last: creating their children changes them.
    dirs: Vec<(Vec<OsString>, Timestamps)>,
}

/// The metadata of one entry that is applied after it is created.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// A path from the tar as components below the root. `..` and absolute paths are refused: no
/// honest image builder writes them (tar itself strips the `/`), so one is a sign of a crafted
/// layer, and refusing says so instead of quietly landing it elsewhere. `./` is dropped.
pub(crate) fn components(p: &Path) -> Result<Vec<OsString>, String> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s.to_owned()),
            Component::CurDir => {}
            Component::RootDir => return Err(format!("path {:?} is absolute", p.display())),
            Component::ParentDir => return Err(format!("path {:?} contains `..`", p.display())),
            Component::Prefix(_) => return Err(format!("path {:?} has a prefix", p.display())),
        }
    }
    Ok(out)
}

/// xattrs from the tar that we write: not `trusted.overlay.*`, which would let a layer steer
/// overlayfs itself (redirects, metacopy, opaque flags of its choosing).
fn xattr_allowed(name: &str) -> bool {
    (name.starts_with("user.")
        || name.starts_with("security.")
        || name.starts_with("trusted.")
        || name == "system.posix_acl_access"
        || name == "system.posix_acl_default")
        && !name.starts_with("trusted.overlay.")
}

fn pax_time(s: &str) -> Option<Timespec> {
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let tv_sec: i64 = sec.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let tv_nsec: i64 = digits.parse().unwrap_or(0);
    Some(Timespec {
        tv_sec,
        tv_nsec: tv_nsec as _,
    })
}

impl Writer<'_> {
    fn refused(&self, reason: impl Into<String>) -> Error {
        Error::refused(self.what, reason)
    }

    fn entries<R: Read>(&mut self, r: R) -> Result<(), Error> {
        let mut ar = tar::Archive::new(r);
        let iter = ar
            .entries()
            .map_err(|e| self.refused(format!("not a tar: {e}")))?;
        for entry in iter {
            let mut entry = entry.map_err(|e| self.refused(format!("reading tar: {e}")))?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(self.refused(format!("more than {} entries", self.limits.max_entries)));
            }
            self.entry(&mut entry)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), Error> {
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader) {
            return Ok(());
        }
        let path = entry
            .path()
            .map_err(|e| self.refused(format!("bad path: {e}")))?
            .into_owned();
        let comps = components(&path).map_err(|r| self.refused(r))?;
        let meta = self.meta(entry)?;
        let Some((name, parents)) = comps.split_last() else {
            // The layer's root itself (`./`): only its metadata.
            if kind.is_dir() {
                let fd = self.root.try_clone().map_err(|e| Error::io("dup", e))?;
                self.apply_fd(&fd, &meta)?;
                self.dirs.push((Vec::new(), times(meta.mtime)));
            }
            return Ok(());
        };
        let name_str = name.to_string_lossy();
        if let Some(target) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            let parent = self.parent(parents, true)?;
            if name_str == OPAQUE {
                return rustix::fs::fsetxattr(
                    &parent,
                    "trusted.overlay.opaque",
                    b"y",
                    XattrFlags::empty(),
                )
                .map_err(|e| self.io(&path, "marking opaque", e));
            }
            if target.starts_with(WHITEOUT_PREFIX)
                || target.is_empty()
                || target == "."
                || target == ".."
            {
                // Other `.wh..wh.` names are AUFS bookkeeping with no meaning here.
                return Ok(());
            }
            self.clear(&parent, parents, OsStr::new(target), false)?;
            return rustix::fs::mknodat(
                &parent,
                target,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|e| self.io(&path, "creating whiteout", e));
        }
        let parent = self.parent(parents, true)?;
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                self.clear(&parent, parents, name, true)?;
                match rustix::fs::mkdirat(&parent, name.as_os_str(), Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(self.io(&path, "creating directory", e)),
                }
                let fd = self.open_dir(&comps, false)?;
                self.apply_fd(&fd, &meta)?;
                self.dirs.push((comps.clone(), times(meta.mtime)));
                return Ok(());
            }
            T::Regular | T::Continuous => {
                self.clear(&parent, parents, name, false)?;
                let fd = rustix::fs::openat(
                    &parent,
                    name.as_os_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.io(&path, "creating file", e))?;
                let mut f = File::from(fd);
                std::io::copy(entry, &mut f).map_err(|e| {
                    Error::io(format!("{}: writing {}", self.what, path.display()), e)
                })?;
                self.apply_fd(
                    &f.as_fd()
                        .try_clone_to_owned()
                        .map_err(|e| Error::io("dup", e))?,
                    &meta,
                )?;
                rustix::fs::futimens(&f, &times(meta.mtime))
                    .map_err(|e| self.io(&path, "setting times", e))?;
                return Ok(());
            }
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.refused(format!("bad link: {e}")))?
                    .ok_or_else(|| {
                        self.refused(format!("symlink {} without a target", path.display()))
                    })?
                    .into_owned();
                self.clear(&parent, parents, name, false)?;
                // The target is stored as it is; it is never followed by us.
                rustix::fs::symlinkat(target.as_os_str(), &parent, name.as_os_str())
                    .map_err(|e| self.io(&path, "creating symlink", e))?;
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.refused(format!("bad link: {e}")))?
                    .ok_or_else(|| {
                        self.refused(format!("hard link {} without a target", path.display()))
                    })?
                    .into_owned();
                let tcomps = components(&target)
                    .map_err(|r| self.refused(format!("hard link target: {r}")))?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(
                        self.refused(format!("hard link {} to the layer root", path.display()))
                    );
                };
                let tparent = self.parent(tparents, false)?;
                if tcomps == comps {
                    return Ok(());
                }
                self.clear(&parent, parents, name, false)?;
                // Flags empty: link the target itself, never what a symlink there points to.
                return rustix::fs::linkat(
                    &tparent,
                    tname.as_os_str(),
                    &parent,
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| self.io(&path, &format!("linking to {}", target.display()), e));
            }
            T::Fifo | T::Char | T::Block => {
                let ft = match kind {
                    T::Fifo => FileType::Fifo,
                    _ if !self.limits.allow_devices => {
                        return Err(self.refused(format!("device node {}", path.display())));
                    }
                    T::Char => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                self.clear(&parent, parents, name, false)?;
                rustix::fs::mknodat(
                    &parent,
                    name.as_os_str(),
                    ft,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(|e| self.io(&path, "creating node", e))?;
            }
            other => {
                return Err(self.refused(format!(
                    "entry {} of unsupported type {other:?}",
                    path.display()
                )));
            }
        }
        // Symlinks and nodes: metadata through the parent fd and the name, never following.
        let flags = AtFlags::SYMLINK_NOFOLLOW;
        rustix::fs::chownat(
            &parent,
            name.as_os_str(),
            Some(uid(meta.uid)),
            Some(gid(meta.gid)),
            flags,
        )
        .map_err(|e| self.io(&path, "chown", e))?;
        if kind != T::Symlink {
            rustix::fs::chmodat(
                &parent,
                name.as_os_str(),
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(|e| self.io(&path, "chmod", e))?;
        }
        if !meta.xattrs.is_empty() {
            // lsetxattr needs a path; the parents were just opened without symlinks and no one
            // else writes in this directory, so this path names the entry itself.
            let p = self.dest.join(comps.iter().collect::<PathBuf>());
            for (k, v) in &meta.xattrs {
                rustix::fs::lsetxattr(&p, k.as_str(), v, XattrFlags::empty())
                    .map_err(|e| self.io(&path, &format!("setting xattr {k}"), e))?;
            }
        }
        rustix::fs::utimensat(&parent, name.as_os_str(), &times(meta.mtime), flags)
            .map_err(|e| self.io(&path, "setting times", e))?;
        Ok(())
    }

    fn io(&self, path: &Path, op: &str, e: Errno) -> Error {
        match e {
            Errno::LOOP | Errno::XDEV => self.refused(format!(
                "{}: {op} would go through a symlink",
                path.display()
            )),
            // openat2 answers ENOTDIR, not ELOOP, when the symlink is the last component.
            Errno::NOTDIR => self.refused(format!(
                "{}: {op}: a parent is not a directory (a symlink is never followed)",
                path.display()
            )),
            e => Error::io(format!("{}: {op} {}", self.what, path.display()), e.into()),
        }
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta, Error> {
        let h = entry.header();
        let mut m = Meta {
            uid: h
                .uid()
                .ok()
                .and_then(|u| u32::try_from(u).ok())
                .unwrap_or(0),
            gid: h
                .gid()
                .ok()
                .and_then(|g| u32::try_from(g).ok())
                .unwrap_or(0),
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            mtime: Timespec {
                tv_sec: h
                    .mtime()
                    .ok()
                    .and_then(|t| i64::try_from(t).ok())
                    .unwrap_or(0),
                tv_nsec: 0,
            },
            xattrs: Vec::new(),
        };
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let (Ok(key), Ok(val)) = (ext.key(), ext.value()) else {
                    if let Ok(k) = ext.key() {
                        if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                            if xattr_allowed(name) {
                                m.xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                            }
                        }
                    }
                    continue;
                };
                match key {
                    "uid" => m.uid = val.parse().unwrap_or(m.uid),
                    "gid" => m.gid = val.parse().unwrap_or(m.gid),
                    "mtime" => m.mtime = pax_time(val).unwrap_or(m.mtime),
                    k => {
                        if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                            if xattr_allowed(name) {
                                m.xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                            } else {
                                tracing::debug!(
                                    layer = self.what,
                                    xattr = name,
                                    "xattr not applied"
                                );
                            }
                        }
                    }
                }
            }
        }
        Ok(m)
    }

    /// Owner, mode and xattrs of an open file or directory (chown first: it clears set-id bits).
    fn apply_fd(&self, fd: &OwnedFd, m: &Meta) -> Result<(), Error> {
        let err = |op: &str, e: Errno| Error::io(format!("{}: {op}", self.what), e.into());
        rustix::fs::fchown(fd, Some(uid(m.uid)), Some(gid(m.gid))).map_err(|e| err("chown", e))?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(m.mode)).map_err(|e| err("chmod", e))?;
        for (k, v) in &m.xattrs {
            rustix::fs::fsetxattr(fd, k.as_str(), v, XattrFlags::empty())
                .map_err(|e| err(&format!("setting xattr {k}"), e))?;
        }
        Ok(())
    }

    /// Opens the directory at `comps` below the root without following any symlink.
    fn open_dir(&self, comps: &[OsString], _create: bool) -> Result<OwnedFd, Error> {
        let rel: PathBuf = if comps.is_empty() {
            PathBuf::from(".")
        } else {
            comps.iter().collect()
        };
        rustix::fs::openat2(
            &self.root,
            &rel,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH
                | ResolveFlags::NO_SYMLINKS
                | ResolveFlags::NO_MAGICLINKS
                | ResolveFlags::NO_XDEV,
        )
        .map_err(|e| self.io(&rel, "opening directory", e))
    }

    /// The parent directory of an entry; missing parents are created (0755, root) when `create`.
    fn parent(&self, parents: &[OsString], create: bool) -> Result<OwnedFd, Error> {
        match self.open_dir(parents, false) {
            Err(Error::Io { source, .. })
                if create && source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let mut fd = self.root.try_clone().map_err(|e| Error::io("dup", e))?;
        for (i, c) in parents.iter().enumerate() {
            match rustix::fs::mkdirat(&fd, c.as_os_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(self.io(Path::new(c), "creating parent", e)),
            }
            fd = self.open_dir(&parents[..=i], false)?;
        }
        Ok(fd)
    }

    /// Makes room for a new entry: an existing one is removed, except a directory that a new
    /// directory entry updates.
    fn clear(
        &self,
        parent: &OwnedFd,
        parents: &[OsString],
        name: &OsStr,
        new_is_dir: bool,
    ) -> Result<(), Error> {
        let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.io(Path::new(name), "stat", e)),
        };
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if is_dir && new_is_dir {
            return Ok(());
        }
        if is_dir {
            let p = self
                .dest
                .join(parents.iter().collect::<PathBuf>())
                .join(name);
            // remove_dir_all never follows symlinks, and the parents were opened without them.
            std::fs::remove_dir_all(&p)
                .map_err(|e| Error::io(format!("removing {}", p.display()), e))
        } else {
            rustix::fs::unlinkat(parent, name, AtFlags::empty())
                .map_err(|e| self.io(Path::new(name), "removing", e))
        }
    }

    fn finish_dirs(&self) {
        for (comps, t) in &self.dirs {
            // A directory a later entry replaced is gone or is something else now: skip it.
            if let Ok(fd) = self.open_dir(comps, false) {
                let _ = rustix::fs::futimens(&fd, t);
            }
        }
    }
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

fn uid(u: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(u)
}

fn gid(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    /// A tar entry written byte for byte, so tests can build what `tar::Builder` would refuse.
    pub(crate) fn raw(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: tar::EntryType,
        link: &str,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    pub(crate) fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        raw(b, path, tar::EntryType::Regular, "", data);
    }

    fn run(tar: &[u8], limits: &UnpackLimits) -> (tempfile::TempDir, Result<Digest, Error>) {
        let d = tempfile::tempdir().unwrap();
        let blob = d.path().join("blob");
        std::fs::write(&blob, tar).unwrap();
        let dest = d.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let r = unpack(&blob, &dest, limits, "test layer");
        (d, r)
    }

    #[test]
    fn files_links_modes_owners_times_and_whiteouts() {
        let mut b = tar::Builder::new(Vec::new());
        raw(&mut b, "./", tar::EntryType::Directory, "", b"");
        raw(&mut b, "etc/", tar::EntryType::Directory, "", b"");
        let mut h = tar::Header::new_gnu();
        h.set_path("etc/hello").unwrap();
        h.set_size(2);
        h.set_mode(0o4750);
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(1_234_567_890);
        h.set_cksum();
        b.append(&h, &b"hi"[..]).unwrap();
        raw(
            &mut b,
            "etc/link",
            tar::EntryType::Symlink,
            "/etc/hello",
            b"",
        );
        raw(&mut b, "etc/hard", tar::EntryType::Link, "etc/hello", b"");
        raw(&mut b, ".wh.gone", tar::EntryType::Regular, "", b"");
        raw(&mut b, "opq/.wh..wh..opq", tar::EntryType::Regular, "", b"");
        file(&mut b, "opq/keep", b"k");
        raw(&mut b, "deep/er/fifo", tar::EntryType::Fifo, "", b"");
        // A later entry replaces an earlier one, as in docker's tars.
        file(&mut b, "dup", b"1");
        file(&mut b, "dup", b"22");
        let tar = b.into_inner().unwrap();
        let (d, r) = run(&tar, &UnpackLimits::default());
        assert_eq!(r.unwrap(), Digest::of(&tar));
        let root = d.path().join("dest");
        let m = std::fs::metadata(root.join("etc/hello")).unwrap();
        assert_eq!(std::fs::read(root.join("etc/hello")).unwrap(), b"hi");
        assert_eq!(m.mode() & 0o7777, 0o4750);
        assert_eq!((m.uid(), m.gid()), (1000, 1001));
        assert_eq!(m.mtime(), 1_234_567_890);
        assert_eq!(m.nlink(), 2);
        assert_eq!(
            std::fs::read_link(root.join("etc/link")).unwrap(),
            Path::new("/etc/hello")
        );
        let w = std::fs::symlink_metadata(root.join("gone")).unwrap();
        assert!(w.file_type().is_char_device());
        assert_eq!(w.rdev(), 0);
        assert!(!root.join(".wh.gone").exists());
        let opq = rustix::fs::lgetxattr(root.join("opq"), "trusted.overlay.opaque", &mut [0u8; 4])
            .unwrap();
        assert_eq!(opq, 1);
        assert!(!root.join("opq/.wh..wh..opq").exists());
        assert!(
            std::fs::symlink_metadata(root.join("deep/er/fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(std::fs::read(root.join("dup")).unwrap(), b"22");
        assert_eq!(
            std::fs::metadata(root.join("etc")).unwrap().mtime(),
            1_600_000_000
        );

        // The same tar compressed gives the same diff ID.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let (_d, r) = run(&gz.finish().unwrap(), &UnpackLimits::default());
        assert_eq!(r.unwrap(), Digest::of(&tar));
        let zs = zstd::encode_all(&tar[..], 1).unwrap();
        let (_d, r) = run(&zs, &UnpackLimits::default());
        assert_eq!(r.unwrap(), Digest::of(&tar));
    }

    #[test]
    fn hostile_layers_are_refused_and_touch_nothing_outside() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"keep").unwrap();
        let out = outside.path().to_str().unwrap().to_owned();
        type Build = Box<dyn Fn(&mut tar::Builder<Vec<u8>>)>;
        let cases: Vec<(&str, Build)> = vec![
            ("dotdot", Box::new(|b| file(b, "../evil", b"x"))),
            ("dotdot-deep", Box::new(|b| file(b, "a/../../evil", b"x"))),
            ("absolute", {
                let out = out.clone();
                Box::new(move |b| file(b, &format!("{out}/evil"), b"x"))
            }),
            ("absolute-dir", {
                let out = out.clone();
                Box::new(move |b| raw(b, &format!("{out}/d/"), tar::EntryType::Directory, "", b""))
            }),
            ("absolute-whiteout", {
                let out = out.clone();
                Box::new(move |b| file(b, &format!("{out}/.wh.secret"), b""))
            }),
            ("hardlink-absolute", {
                let secret = format!("{out}/secret");
                Box::new(move |b| raw(b, "h", tar::EntryType::Link, &secret, b""))
            }),
            ("symlink-abs", {
                let out = out.clone();
                Box::new(move |b| {
                    raw(b, "l", tar::EntryType::Symlink, &out, b"");
                    file(b, "l/evil", b"x");
                })
            }),
            (
                "symlink-rel",
                Box::new(|b| {
                    raw(b, "l", tar::EntryType::Symlink, "../../../../../../..", b"");
                    file(b, "l/tmp/evil", b"x");
                }),
            ),
            (
                "hardlink-dotdot",
                Box::new(|b| raw(b, "h", tar::EntryType::Link, "../secret", b"")),
            ),
            ("hardlink-through-symlink", {
                let out = out.clone();
                Box::new(move |b| {
                    raw(b, "l", tar::EntryType::Symlink, &out, b"");
                    raw(b, "h", tar::EntryType::Link, "l/secret", b"");
                })
            }),
            ("whiteout-through-symlink", {
                let out = out.clone();
                Box::new(move |b| {
                    raw(b, "l", tar::EntryType::Symlink, &out, b"");
                    file(b, "l/.wh.secret", b"");
                })
            }),
            ("opaque-through-symlink", {
                let out = out.clone();
                Box::new(move |b| {
                    raw(b, "l", tar::EntryType::Symlink, &out, b"");
                    file(b, "l/.wh..wh..opq", b"");
                })
            }),
            (
                "device",
                Box::new(|b| raw(b, "dev/sda", tar::EntryType::Block, "", b"")),
            ),
            (
                "chardev",
                Box::new(|b| raw(b, "dev/mem", tar::EntryType::Char, "", b"")),
            ),
        ];
        for (name, build) in cases {
            let mut b = tar::Builder::new(Vec::new());
            build(&mut b);
            let tar = b.into_inner().unwrap();
            let (_d, r) = run(&tar, &UnpackLimits::default());
            match r {
                Err(Error::Refused { .. }) => {}
                other => panic!("{name}: expected a refusal, got {other:?}"),
            }
            assert_eq!(std::fs::read(&secret).unwrap(), b"keep", "{name}");
            let names: Vec<_> = std::fs::read_dir(outside.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["secret"], "{name} wrote outside");
            assert!(
                rustix::fs::lgetxattr(outside.path(), "trusted.overlay.opaque", &mut [0u8; 4])
                    .is_err()
            );
        }
    }

    #[test]
    fn refusals_name_the_entry_and_the_reason() {
        let cases: [(&str, tar::EntryType, &str, &str); 5] = [
            (
                "/etc/passwd",
                tar::EntryType::Regular,
                "",
                "\"/etc/passwd\" is absolute",
            ),
            ("./../x", tar::EntryType::Regular, "", "contains `..`"),
            ("h", tar::EntryType::Link, "/etc/passwd", "hard link target"),
            ("dev/null", tar::EntryType::Char, "", "device node dev/null"),
            ("/", tar::EntryType::Directory, "", "is absolute"),
        ];
        for (path, kind, link, want) in cases {
            let mut b = tar::Builder::new(Vec::new());
            file(&mut b, "first", b"1");
            raw(&mut b, path, kind, link, b"");
            let (_d, r) = run(&b.into_inner().unwrap(), &UnpackLimits::default());
            let e = r.unwrap_err();
            assert!(matches!(e, Error::Refused { .. }), "{path}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains("test layer") && msg.contains(want),
                "{path}: {msg}"
            );
        }
    }

    #[test]
    fn limits_are_enforced() {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..3 {
            file(&mut b, &format!("f{i}"), &[0u8; 2048]);
        }
        let tar = b.into_inner().unwrap();
        let few = UnpackLimits {
            max_entries: 2,
            ..Default::default()
        };
        let (_d, r) = run(&tar, &few);
        assert!(matches!(r, Err(Error::Refused { .. })), "{r:?}");
        let small = UnpackLimits {
            max_bytes: 4096,
            ..Default::default()
        };
        let (_d, r) = run(&tar, &small);
        assert!(matches!(r, Err(Error::Refused { .. })), "{r:?}");
        let (_d, r) = run(
            b"this is not a tar at all, just some text that goes on long enough",
            &UnpackLimits::default(),
        );
        assert!(r.is_err());
    }
}
