//! The snapshotter: one directory per layer, `<root>/snapshots/<chain id hex>/fs`, unpacked once and
//! shared by every image whose layer stack starts with the same chain. A layer is unpacked into
//! `.tmp-*`, its diff ID checked, synced to disk and only then renamed into place, so a directory
//! named by a chain ID is always complete. It never mounts anything: the runtime stacks these dirs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::unpack::{UnpackLimits, unpack};
use crate::{ChainId, Digest, Error};

pub struct Snapshotter {
    root: PathBuf,
    inflight: Mutex<HashMap<ChainId, Weak<tokio::sync::Mutex<()>>>>,
    next_temp: AtomicU64,
}

impl Snapshotter {
    /// Opens (creating) `root` and removes what an interrupted unpack or removal left.
    pub fn open(root: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        let rd = std::fs::read_dir(root)
            .map_err(|e| Error::io(format!("listing {}", root.display()), e))?;
        for e in rd.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let p = e.path();
                tracing::info!(path = %p.display(), "removing an interrupted unpack");
                std::fs::remove_dir_all(&p)
                    .map_err(|e| Error::io(format!("removing {}", p.display()), e))?;
            }
        }
        Ok(Self {
            root: root.to_owned(),
            inflight: Mutex::new(HashMap::new()),
            next_temp: AtomicU64::new(0),
        })
    }

    /// The snapshot's filesystem: a lower dir for overlayfs.
    pub fn fs_dir(&self, chain: &ChainId) -> PathBuf {
        self.root.join(chain.hex()).join("fs")
    }

    pub fn exists(&self, chain: &ChainId) -> bool {
        self.root.join(chain.hex()).is_dir()
    }

    /// Serialises work on one chain ID across concurrent pulls.
    pub(crate) async fn lock(&self, chain: &ChainId) -> tokio::sync::OwnedMutexGuard<()> {
        self.mutex(chain).lock_owned().await
    }

    /// [`Self::lock`] for blocking code (imports run off the async threads).
    pub(crate) fn lock_blocking(&self, chain: &ChainId) -> tokio::sync::OwnedMutexGuard<()> {
        self.mutex(chain).blocking_lock_owned()
    }

    fn mutex(&self, chain: &ChainId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        match map.get(chain).and_then(Weak::upgrade) {
            Some(m) => m,
            None => {
                let m = Arc::new(tokio::sync::Mutex::new(()));
                map.insert(chain.clone(), Arc::downgrade(&m));
                m
            }
        }
    }

    /// Unpacks the layer `blob` as snapshot `chain`, checking it against `diff_id`. Blocking: run
    /// it off the async threads. Does nothing if the snapshot exists.
    pub fn unpack(
        &self,
        chain: &ChainId,
        diff_id: &Digest,
        blob: &Path,
        limits: &UnpackLimits,
    ) -> Result<(), Error> {
        if self.exists(chain) {
            return Ok(());
        }
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join(format!(".tmp-{}-{n}", chain.hex()));
        let res = self.unpack_into(&tmp, chain, diff_id, blob, limits);
        if res.is_err() {
            if let Err(e) = std::fs::remove_dir_all(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %e, "removing a failed unpack");
            }
        }
        res
    }

    fn unpack_into(
        &self,
        tmp: &Path,
        chain: &ChainId,
        diff_id: &Digest,
        blob: &Path,
        limits: &UnpackLimits,
    ) -> Result<(), Error> {
        let fs = tmp.join("fs");
        std::fs::create_dir_all(&fs)
            .map_err(|e| Error::io(format!("creating {}", fs.display()), e))?;
        carapace_crashpoint::hit("snapshot: temp dir made");
        let what = format!("layer {diff_id}");
        let got = unpack(blob, &fs, limits, &what)?;
        carapace_crashpoint::hit("snapshot: layer unpacked");
        if &got != diff_id {
            return Err(Error::Verification {
                digest: diff_id.clone(),
                reason: format!(
                    "the uncompressed layer hashes to {got}, the image config says {diff_id}"
                ),
            });
        }
        // One syncfs rather than an fsync per file: the rename below must not reach the disk
        // before the files it names.
        let dir = std::fs::File::open(tmp)
            .map_err(|e| Error::io(format!("opening {}", tmp.display()), e))?;
        rustix::fs::syncfs(&dir).map_err(|e| Error::io("syncfs", e.into()))?;
        let dest = self.root.join(chain.hex());
        std::fs::rename(tmp, &dest)
            .map_err(|e| Error::io(format!("renaming into {}", dest.display()), e))?;
        carapace_crashpoint::hit("snapshot: committed");
        crate::content::sync_dir(&self.root).map_err(|e| Error::io("fsync snapshots dir", e))
    }

    /// Removes snapshot `chain`: renamed away first, so a crash mid-removal leaves no partial
    /// snapshot under its real name.
    pub fn remove(&self, chain: &ChainId) -> Result<(), Error> {
        let dir = self.root.join(chain.hex());
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join(format!(".tmp-del-{}-{n}", chain.hex()));
        match std::fs::rename(&dir, &tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            r => r.map_err(|e| Error::io(format!("removing {}", dir.display()), e))?,
        }
        std::fs::remove_dir_all(&tmp)
            .map_err(|e| Error::io(format!("removing {}", tmp.display()), e))
    }

    /// Every complete snapshot.
    pub fn list(&self) -> Result<Vec<ChainId>, Error> {
        let rd = std::fs::read_dir(&self.root)
            .map_err(|e| Error::io(format!("listing {}", self.root.display()), e))?;
        Ok(rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| Digest::from_hex(n).ok())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::tests::file;

    #[test]
    fn unpack_once_verify_diff_id_and_leave_nothing_on_failure_or_refusal() {
        let d = tempfile::tempdir().unwrap();
        let s = Snapshotter::open(&d.path().join("snapshots")).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "a", b"1");
        let tar = b.into_inner().unwrap();
        let blob = d.path().join("blob");
        std::fs::write(&blob, &tar).unwrap();
        let diff = Digest::of(&tar);
        let chain = crate::chain_ids(std::slice::from_ref(&diff)).remove(0);

        let wrong = Digest::of(b"other");
        let e = s
            .unpack(&chain, &wrong, &blob, &UnpackLimits::default())
            .unwrap_err();
        assert!(matches!(e, Error::Verification { .. }), "{e}");
        assert!(s.list().unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(d.path().join("snapshots"))
                .unwrap()
                .count(),
            0
        );

        // A hostile layer: refused, and no snapshot (nor a temp dir) is left.
        let mut b = tar::Builder::new(Vec::new());
        file(&mut b, "ok", b"1");
        crate::unpack::tests::raw(&mut b, "/abs", tar::EntryType::Regular, "", b"x");
        let hostile = b.into_inner().unwrap();
        let hostile_blob = d.path().join("hostile");
        std::fs::write(&hostile_blob, &hostile).unwrap();
        let hostile_diff = Digest::of(&hostile);
        let hostile_chain = crate::chain_ids(std::slice::from_ref(&hostile_diff)).remove(0);
        let e = s
            .unpack(
                &hostile_chain,
                &hostile_diff,
                &hostile_blob,
                &UnpackLimits::default(),
            )
            .unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        assert_eq!(
            std::fs::read_dir(d.path().join("snapshots"))
                .unwrap()
                .count(),
            0
        );

        s.unpack(&chain, &diff, &blob, &UnpackLimits::default())
            .unwrap();
        assert_eq!(std::fs::read(s.fs_dir(&chain).join("a")).unwrap(), b"1");
        assert_eq!(s.list().unwrap(), vec![chain.clone()]);
        s.remove(&chain).unwrap();
        s.remove(&chain).unwrap();
        assert!(!s.exists(&chain));

        std::fs::create_dir_all(d.path().join("snapshots/.tmp-x/fs")).unwrap();
        Snapshotter::open(&d.path().join("snapshots")).unwrap();
        assert!(!d.path().join("snapshots/.tmp-x").exists());
    }
}
