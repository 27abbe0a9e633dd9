//! Host devices for the tests of device access: a loop device of the test's own.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A 1 MiB file of the test's, starting with a 16-byte marker, attached to a free loop device;
/// detached (and the file removed) on drop, panics included: a leaked loop device would hold the
/// file and the device for the next run.
pub struct LoopDevice {
    pub device: PathBuf,
    pub backing: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDevice {
    pub fn new(marker: &[u8; 16]) -> LoopDevice {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("disk.img");
        let mut bytes = vec![0u8; 1 << 20];
        bytes[..16].copy_from_slice(marker);
        std::fs::write(&backing, bytes).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&backing)
            .output()
            .expect("running losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        LoopDevice {
            device,
            backing,
            _dir: dir,
        }
    }

    /// `(major, minor)` of the loop device.
    pub fn numbers(&self) -> (u64, u64) {
        numbers(&self.device)
    }

    /// The backing file's bytes from 100 to 116, where a container's write of 16 bytes at byte
    /// 100 lands.
    pub fn written(&self) -> Vec<u8> {
        std::fs::read(&self.backing).unwrap()[100..116].to_vec()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

/// `(major, minor)` of a device node (glibc's gnu_dev_major/gnu_dev_minor).
pub fn numbers(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(path).unwrap().rdev();
    (
        ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff),
        (rdev & 0xff) | ((rdev >> 12) & !0xff),
    )
}
