//! Image volumes (CRI `Mount.image`, KEP-4639): an image's layers stacked by overlayfs with no
//! upper layer, mounted whole or one path of it (`image_sub_path`) at the volume's destination.
//! Without an upper layer overlayfs is read-only for good: no remount makes it writable, so not
//! even a privileged container can write into layers other containers share.
//!
//! Like the root's overlay, the volume is mounted by the container's init inside the container's
//! own mount namespace, so it ends with the container's last process: nothing is mounted on the
//! host, and a crash or restart of the daemon leaves nothing to unmount. At create the daemon
//! mounts it detached (attached nowhere, gone with its fd) only to resolve the sub path, so a
//! bad one is refused by CreateContainer rather than at start.
//!
//! The sub path is resolved beneath the image's root (openat2 `RESOLVE_BENEATH`): `..` above it
//! or an absolute symlink is refused, never followed on the host nor silently redirected.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat2};
use nix::mount::{MntFlags, umount2};
use nix::sys::stat::Mode;
use oci_spec::runtime::Mount as OciMount;

use crate::config::{ImageVolume, Mount};
use crate::error::{Context, Error, Result};
use crate::fsutil::Kind;
use crate::sys;

/// In the bundle: the empty bottom layer of every image volume (overlayfs wants two lower layers
/// when it has no upper one, and an image may have a single layer)...
const EMPTY_LAYER: &str = "image-volume-empty";
/// ...and, in the container's own mount namespace only, where a volume with a sub path is
/// attached for the moment it takes to copy the sub path's mount out of it.
const STAGING: &str = "image-volume-staging";

/// How the spec carries an image volume: an `overlay` mount whose options are these.
pub(crate) const TYPE: &str = "overlay";
const LAYER_OPTION: &str = "lowerdir+=";
const SUB_PATH_OPTION: &str = "x-carapace.image-sub-path=";
const FLAGS: [&str; 3] = ["ro", "nosuid", "nodev"];

/// The spec's mount for volume `v` of `m`, in the container whose bundle is `bundle`.
pub(crate) fn oci_mount(m: &Mount, v: &ImageVolume, bundle: &Path) -> serde_json::Value {
    let mut options: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
    options.extend(
        layers(v, bundle)
            .iter()
            .map(|l| format!("{LAYER_OPTION}{}", l.display())),
    );
    options.push(format!("{SUB_PATH_OPTION}{}", v.sub_path));
    serde_json::json!({
        "destination": m.container_path,
        "type": TYPE,
        "source": TYPE,
        "options": options,
    })
}

fn layers(v: &ImageVolume, bundle: &Path) -> Vec<PathBuf> {
    let mut l = v.layers.clone();
    l.push(bundle.join(EMPTY_LAYER));
    l
}

/// At create: makes the bundle's directories the volumes need, then mounts each volume detached
/// and resolves its sub path, so what the container could not mount is refused now.
pub(crate) fn check(config: &crate::config::ContainerConfig, bundle: &Path) -> Result<()> {
    let volumes: Vec<(&Mount, &ImageVolume)> = config
        .mounts
        .iter()
        .filter_map(|m| Some((m, m.image.as_ref()?)))
        .collect();
    if volumes.is_empty() {
        return Ok(());
    }
    for d in [EMPTY_LAYER, STAGING] {
        let d = bundle.join(d);
        std::fs::create_dir_all(&d).map_err(|e| Error::io("create", &d, e))?;
    }
    for (m, v) in volumes {
        if let Some(l) = v.layers.iter().find(|l| !l.is_dir()) {
            return Err(Error::NotFound(format!(
                "layer {} of the image of volume {}",
                l.display(),
                m.container_path
            )));
        }
        let mnt = overlay(&layers(v, bundle))?;
        open_sub_path(&mnt, &v.sub_path)?;
    }
    Ok(())
}

fn overlay(layers: &[PathBuf]) -> Result<OwnedFd> {
    let layers: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    sys::overlay_detached(&layers)
}

/// The sub path, beneath the root of the overlay open at `mnt` (`O_PATH`).
fn open_sub_path(mnt: &OwnedFd, sub: &str) -> Result<OwnedFd> {
    let rel = if sub.trim_matches('/').is_empty() {
        "."
    } else {
        sub
    };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    openat2(mnt.as_fd(), rel, how).map_err(|e| match e {
        Errno::ENOENT | Errno::ENOTDIR => Error::InvalidArgument(format!(
            "image_sub_path {sub:?} does not exist in the image"
        )),
        Errno::EXDEV => Error::InvalidArgument(format!(
            "image_sub_path {sub:?} leads out of the image (through `..` or an absolute symlink)"
        )),
        Errno::ELOOP => Error::InvalidArgument(format!(
            "image_sub_path {sub:?} goes through too many symlinks"
        )),
        e => Error::Internal(format!("open image_sub_path {sub:?}: {}", e.desc())),
    })
}

/// In the container's init, after the root's overlay and before pivot_root: the detached mount to
/// attach at the volume's destination, and whether it is a directory or a file. `root` is the
/// spec's root, inside the bundle.
pub(crate) fn tree(m: &OciMount, root: &Path) -> Result<(OwnedFd, Kind)> {
    let mut layers = Vec::new();
    let mut sub = String::new();
    for o in m.options().iter().flatten() {
        if let Some(l) = o.strip_prefix(LAYER_OPTION) {
            layers.push(PathBuf::from(l));
        } else if let Some(s) = o.strip_prefix(SUB_PATH_OPTION) {
            sub = s.to_owned();
        } else if !FLAGS.contains(&o.as_str()) {
            return Err(Error::InvalidArgument(format!("image volume option {o:?}")));
        }
    }
    let mnt = overlay(&layers)?;
    let at = open_sub_path(&mnt, &sub)?;
    let kind = match nix::sys::stat::fstat(&at)
        .ctx("stat image_sub_path")?
        .st_mode
        & libc::S_IFMT
    {
        libc::S_IFDIR => Kind::Dir,
        _ => Kind::File,
    };
    if sub.trim_matches('/').is_empty() {
        return Ok((mnt, kind));
    }
    // A sub path's own mount is copied out of the overlay, which the kernel does for a mount of
    // this namespace: attached for that moment at the bundle's staging point (in this namespace
    // only, whose mounts do not propagate to the host), then detached again.
    let staging = root
        .parent()
        .map(|b| b.join(STAGING))
        .ok_or_else(|| Error::InvalidArgument(format!("root {}", root.display())))?;
    let point = open(
        &staging,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(format_args!("open {}", staging.display()))?;
    sys::attach_mount_tree(&mnt, &point)?;
    let copied = sys::clone_mount_tree_of(at.as_fd(), false);
    umount2(&staging, MntFlags::MNT_DETACH).ctx("detach the image volume's staging mount")?;
    Ok((copied?, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ContainerConfig;

    fn config(layers: &[PathBuf], sub_path: &str) -> ContainerConfig {
        let volume = ImageVolume {
            layers: layers.to_vec(),
            sub_path: sub_path.into(),
        };
        ContainerConfig {
            mounts: vec![Mount::image_volume("/vol", volume)],
            ..Default::default()
        }
    }

    /// Root only (the runtime's tests run as root): the sub path is resolved in the stacked
    /// layers, the top one winning, and refused where it leaves the image or leads nowhere.
    #[test]
    fn sub_paths_resolve_inside_the_stacked_layers_only() {
        if !crate::root_or_skip() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (top, bottom, bundle) = (
            dir.path().join("top"),
            dir.path().join("bottom"),
            dir.path().join("bundle"),
        );
        std::fs::create_dir_all(bottom.join("data/deep")).unwrap();
        std::fs::create_dir_all(&top).unwrap();
        std::fs::write(bottom.join("data/file"), "x").unwrap();
        std::os::unix::fs::symlink("data/deep", top.join("inside")).unwrap();
        std::os::unix::fs::symlink("/data", top.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", top.join("up")).unwrap();
        std::os::unix::fs::symlink("loop", top.join("loop")).unwrap();
        let layers = [top.clone(), bottom];
        for ok in ["", "data", "data/file", "inside", "inside/", "./data/deep"] {
            check(&config(&layers, ok), &bundle).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
        for (bad, says) in [
            ("missing", "does not exist"),
            ("data/file/x", "does not exist"),
            ("abs", "leads out"),
            ("up", "leads out"),
            ("inside/../../..", "leads out"),
            ("loop", "symlinks"),
        ] {
            let e = check(&config(&layers, bad), &bundle).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains(says)),
                "{bad:?}: {e}"
            );
        }
        // A single layer is enough (the bundle's empty one goes under it); a missing one is named.
        check(&config(std::slice::from_ref(&top), "inside"), &bundle).unwrap_err();
        check(&config(std::slice::from_ref(&top), "abs/.."), &bundle).unwrap_err();
        check(&config(std::slice::from_ref(&top), ""), &bundle).unwrap();
        let gone = dir.path().join("gone");
        let e = check(&config(&[gone], ""), &bundle).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("gone")),
            "{e}"
        );
    }
}
