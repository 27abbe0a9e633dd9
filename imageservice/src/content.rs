//! The content store: blobs (manifests, configs, compressed layers) under
//! `<root>/content/blobs/sha256/<hex>`, each written to `ingest/` first, hashed while written,
//! checked for size and digest, fsynced and renamed into place. So a blob that is visible is
//! complete and verified, and a crash leaves at most a stray file in `ingest/`, removed at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{Digest, Error};

pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
    /// One lock per digest being written, so two pulls of one blob download it once: the second
    /// waits, then finds the blob present.
    inflight: Mutex<HashMap<Digest, Weak<tokio::sync::Mutex<()>>>>,
    next_temp: AtomicU64,
}

impl ContentStore {
    /// Opens (creating) the store under `root` and removes what an interrupted ingest left.
    pub fn open(root: &Path) -> Result<Self, Error> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        if ingest.exists() {
            std::fs::remove_dir_all(&ingest)
                .map_err(|e| Error::io(format!("clearing {}", ingest.display()), e))?;
        }
        for d in [&blobs, &ingest] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        Ok(Self {
            blobs,
            ingest,
            inflight: Mutex::new(HashMap::new()),
            next_temp: AtomicU64::new(0),
        })
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// The size of a stored blob, `None` if it is absent.
    pub fn size(&self, d: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    /// Reads a small stored blob (a manifest or config).
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, Error> {
        let p = self.path(d);
        std::fs::read(&p).map_err(|e| Error::io(format!("reading blob {d}"), e))
    }

    /// Stores `bytes` if they are the blob `d` (and it is not stored yet).
    pub fn write(&self, d: &Digest, bytes: &[u8]) -> Result<(), Error> {
        let got = Digest::of(bytes);
        if &got != d {
            return Err(Error::Verification {
                digest: d.clone(),
                reason: format!("content hashes to {got}"),
            });
        }
        if self.size(d) == Some(bytes.len() as u64) {
            return Ok(());
        }
        let tmp = self.temp_path(d);
        let res = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.path(d))?;
            carapace_crashpoint::hit("content: blob written");
            sync_dir(&self.blobs)
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res.map_err(|e| Error::io(format!("storing blob {d}"), e))
    }

    /// Waits until no one else is writing `d`, and holds that until the guard is dropped.
    pub(crate) async fn lock(&self, d: &Digest) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(d).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(d.clone(), Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }

    /// Starts writing blob `d` of `size` bytes.
    pub(crate) async fn ingest(&self, d: &Digest, size: u64) -> Result<Ingest, Error> {
        let path = self.temp_path(d);
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(Ingest {
            file: Some(tokio::io::BufWriter::with_capacity(256 * 1024, file)),
            path,
            hasher: Sha256::new(),
            written: 0,
            digest: d.clone(),
            size,
            committed: false,
        })
    }

    /// Stores what `r` yields (at most `max` bytes) as a blob named by its own digest. Blocking.
    pub(crate) fn ingest_reader(
        &self,
        mut r: impl std::io::Read,
        max: u64,
    ) -> Result<(Digest, u64), Error> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.ingest.join(format!("import-{n}"));
        let res = (|| -> Result<(Digest, u64), Error> {
            let io = |e| Error::io(format!("writing {}", tmp.display()), e);
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut size = 0u64;
            loop {
                let k = r
                    .read(&mut buf)
                    .map_err(|e| Error::refused("archive", e.to_string()))?;
                if k == 0 {
                    break;
                }
                size += k as u64;
                if size > max {
                    return Err(Error::refused(
                        "archive",
                        format!("a file larger than {max} bytes"),
                    ));
                }
                h.update(&buf[..k]);
                std::io::Write::write_all(&mut f, &buf[..k]).map_err(io)?;
            }
            f.sync_all().map_err(io)?;
            let d = Digest::from_hasher(h);
            std::fs::rename(&tmp, self.path(&d)).map_err(io)?;
            sync_dir(&self.blobs).map_err(io)?;
            Ok((d, size))
        })();
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res
    }

    /// Removes blob `d`; absent is fine.
    pub fn remove(&self, d: &Digest) -> Result<(), Error> {
        match std::fs::remove_file(self.path(d)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io(format!("removing blob {d}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Every stored blob.
    pub fn list(&self) -> Result<Vec<Digest>, Error> {
        let rd = std::fs::read_dir(&self.blobs)
            .map_err(|e| Error::io(format!("listing {}", self.blobs.display()), e))?;
        Ok(rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| Digest::from_hex(n).ok())
            })
            .collect())
    }

    fn temp_path(&self, d: &Digest) -> PathBuf {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        self.ingest.join(format!("{}-{n}", d.hex()))
    }
}

/// fsync a directory, so a rename into it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A blob being written. Dropped without [`Ingest::commit`], its temp file is removed.
pub(crate) struct Ingest {
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    path: PathBuf,
    hasher: Sha256,
    written: u64,
    digest: Digest,
    size: u64,
    committed: bool,
}

impl Ingest {
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.written += chunk.len() as u64;
        if self.written > self.size {
            return Err(Error::Verification {
                digest: self.digest.clone(),
                reason: format!("more than the {} bytes the manifest gives", self.size),
            });
        }
        self.hasher.update(chunk);
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| Error::Internal("ingest written after commit".into()))?;
        f.write_all(chunk)
            .await
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }

    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Starts over (after a host failed mid-download, before trying the next).
    pub(crate) async fn reset(&mut self) -> Result<(), Error> {
        let f = tokio::fs::File::create(&self.path)
            .await
            .map_err(|e| Error::io(format!("truncating {}", self.path.display()), e))?;
        self.file = Some(tokio::io::BufWriter::with_capacity(256 * 1024, f));
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    /// Verifies size and digest, then makes the blob visible at `dest`.
    pub(crate) async fn commit(mut self, store: &ContentStore) -> Result<(), Error> {
        let verify = |reason: String| Error::Verification {
            digest: self.digest.clone(),
            reason,
        };
        if self.written != self.size {
            return Err(verify(format!(
                "{} bytes received, the manifest gives {}",
                self.written, self.size
            )));
        }
        let got = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if got != self.digest {
            return Err(verify(format!("content hashes to {got}")));
        }
        let mut f = self
            .file
            .take()
            .ok_or_else(|| Error::Internal("ingest committed twice".into()))?;
        let io = |e| Error::io(format!("committing blob {}", self.digest), e);
        f.flush().await.map_err(io)?;
        f.get_mut().sync_all().await.map_err(io)?;
        drop(f);
        let dest = store.path(&self.digest);
        tokio::fs::rename(&self.path, &dest).await.map_err(io)?;
        carapace_crashpoint::hit("content: blob committed");
        let blobs = store.blobs.clone();
        tokio::task::spawn_blocking(move || sync_dir(&blobs))
            .await
            .map_err(|e| Error::Internal(format!("fsync task: {e}")))?
            .map_err(io)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a leftover is removed at the next start anyway.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ingest_verifies_size_and_digest_before_the_blob_is_visible() {
        let d = tempfile::tempdir().unwrap();
        let store = ContentStore::open(d.path()).unwrap();
        let good = Digest::of(b"hello");

        let mut i = store.ingest(&good, 5).await.unwrap();
        i.write(b"hellx").await.unwrap();
        let e = i.commit(&store).await.unwrap_err();
        assert!(matches!(e, Error::Verification { .. }), "{e}");
        assert_eq!(store.size(&good), None);

        let mut i = store.ingest(&good, 5).await.unwrap();
        assert!(i.write(b"hello!").await.is_err());
        drop(i);

        let mut i = store.ingest(&good, 5).await.unwrap();
        i.write(b"hel").await.unwrap();
        i.write(b"lo").await.unwrap();
        i.commit(&store).await.unwrap();
        assert_eq!(store.read(&good).unwrap(), b"hello");
        assert_eq!(store.list().unwrap(), vec![good.clone()]);
        // Nothing is left in ingest/.
        assert_eq!(
            std::fs::read_dir(d.path().join("ingest")).unwrap().count(),
            0
        );

        assert!(store.write(&good, b"other").is_err());
        store.remove(&good).unwrap();
        store.remove(&good).unwrap();
        assert!(store.list().unwrap().is_empty());
    }

    #[tokio::test]
    async fn open_clears_interrupted_ingests() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ingest")).unwrap();
        std::fs::write(d.path().join("ingest/partial"), b"x").unwrap();
        ContentStore::open(d.path()).unwrap();
        assert!(!d.path().join("ingest/partial").exists());
    }
}
