//! The daemon's binary on a read-only bind mount, made once at start: every helper process (monitor,
//! exec helper, pod infra) is started from it, so `/proc/<pid>/exe` of any process a container can
//! see names a file that cannot be opened for writing (CVE-2019-5736). Helpers started any other
//! way seal themselves (see `monitor::seal_exe`), at the price of a second exec and a private mount
//! namespace each; sealing once in the daemon saves both on every container start and `ExecSync`.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statvfs::{FsFlags, statvfs};

use crate::error::{Context, Error, Result};

/// The read-only bind of this binary; unmounted (lazily: helpers may still run from it) on drop.
#[derive(Debug)]
pub struct SealedExe {
    path: PathBuf,
}

impl SealedExe {
    /// Binds `/proc/self/exe` read-only at `<state>/carapace.exe`, replacing what a killed daemon
    /// left there (its helpers keep running from the detached old mount).
    pub fn prepare(state: &Path) -> Result<SealedExe> {
        let path = state.join("carapace.exe");
        detach_all(&path);
        std::fs::write(&path, b"").map_err(|e| Error::io("create", &path, e))?;
        let exe = std::fs::read_link("/proc/self/exe").ctx("readlink /proc/self/exe")?;
        mount(
            Some(&exe),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx("bind the daemon's binary")?;
        let sealed = SealedExe { path };
        mount(
            None::<&str>,
            &sealed.path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .ctx("remount the daemon's binary read-only")?;
        Ok(sealed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SealedExe {
    fn drop(&mut self) {
        detach_all(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Unmounts every mount stacked on `path` (EINVAL: nothing mounted there any more).
fn detach_all(path: &Path) {
    for _ in 0..16 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot unmount the sealed binary");
                return;
            }
        }
    }
}

/// Whether this process runs from a binary on a read-only mount, i.e. is already sealed.
pub(crate) fn running_sealed() -> bool {
    statvfs("/proc/self/exe").is_ok_and(|s| s.flags().contains(FsFlags::ST_RDONLY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_binary_on_a_writable_mount_is_not_sealed() {
        // cargo's target dir is writable, so the test binary itself must read as not sealed.
        assert!(!running_sealed());
    }
}
