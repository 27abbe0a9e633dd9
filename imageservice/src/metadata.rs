//! Image records (ID, tags, digests, size, user, the blobs and snapshots they use) in
//! `<root>/images.json`, rewritten whole on every change through a temp file, fsync and rename, so
//! a crash leaves the old or the new file and never a torn one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ChainId, Digest, Error};

/// One image, as the CRI lists it. Its ID is the digest of its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub id: Digest,
    /// `domain/path:tag`, normalised.
    pub repo_tags: Vec<String>,
    /// `domain/path@sha256:...` of the manifest (or index) it was pulled by.
    pub repo_digests: Vec<String>,
    /// Bytes of the config and compressed layers: what a pull downloads.
    pub size: u64,
    /// From the config's `User`: a numeric user...
    pub uid: Option<i64>,
    /// ...or a user name.
    pub username: String,
    /// Pinned images are never removed by garbage collection.
    #[serde(default)]
    pub pinned: bool,
    /// Every manifest and index blob that led to this image (kept while it exists).
    pub manifests: Vec<Digest>,
    /// Compressed layer blobs, bottom first.
    pub layers: Vec<Digest>,
    /// Snapshot keys, bottom first; the last one is the image's top layer.
    pub chain_ids: Vec<ChainId>,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    images: Vec<Image>,
    /// Snapshots held by containers (holder ID -> chain IDs), persisted so that garbage
    /// collection at start never takes a running container's layers.
    #[serde(default)]
    holds: BTreeMap<String, Vec<ChainId>>,
}

const VERSION: u32 = 1;

#[derive(Clone)]
pub(crate) struct Metadata {
    path: PathBuf,
    pub(crate) images: BTreeMap<Digest, Image>,
    pub(crate) holds: BTreeMap<String, Vec<ChainId>>,
}

impl Metadata {
    /// Reads the records at `path`. Called at start only (by the image service's open): a save
    /// the process died in before its rename left its temp file, removed here, before any save
    /// of this process; the records are those of the last save that completed.
    pub(crate) fn load(path: &Path) -> Result<Self, Error> {
        let tmp = temp_path(path);
        match std::fs::remove_file(&tmp) {
            Ok(()) => tracing::info!(path = %tmp.display(), "removed a temp file a crash left"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Left for the next save, which truncates and renames it.
            Err(e) => {
                tracing::warn!(path = %tmp.display(), error = %e, "removing a temp file a crash left")
            }
        }
        let (images, holds) = match std::fs::read(path) {
            Ok(b) => {
                let f: File = serde_json::from_slice(&b)
                    .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
                if f.version != VERSION {
                    return Err(Error::Internal(format!(
                        "{}: version {} is not {VERSION}",
                        path.display(),
                        f.version
                    )));
                }
                let images = f.images.into_iter().map(|i| (i.id.clone(), i)).collect();
                (images, f.holds)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (BTreeMap::new(), BTreeMap::new())
            }
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        Ok(Self {
            path: path.to_owned(),
            images,
            holds,
        })
    }

    /// Persists the records; `durable` adds the fsyncs that make them survive a power loss, which
    /// image records need and container holds (whose containers a reboot ends) do not.
    pub(crate) fn save(&self, durable: bool) -> Result<(), Error> {
        let f = File {
            version: VERSION,
            images: self.images.values().cloned().collect(),
            holds: self.holds.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&f).map_err(|e| Error::Internal(e.to_string()))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = temp_path(&self.path);
        let res = (|| {
            let mut t = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut t, &bytes)?;
            if durable {
                t.sync_all()?;
            }
            // A daemon dying here leaves the temp file beside the records.
            carapace_crashpoint::hit("images: records temp written");
            std::fs::rename(&tmp, &self.path)?;
            carapace_crashpoint::hit("images: records written");
            if durable {
                crate::content::sync_dir(dir)?;
            }
            Ok(())
        })();
        res.map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }

    /// Moves `tag` to image `id`: any other image loses it, and one left with no name at all is
    /// dropped (its content goes at the next garbage collection).
    pub(crate) fn retag(&mut self, tag: &str, id: &Digest) {
        for img in self.images.values_mut().filter(|i| &i.id != id) {
            img.repo_tags.retain(|t| t != tag);
        }
        self.images
            .retain(|k, i| k == id || !i.repo_tags.is_empty() || !i.repo_digests.is_empty());
    }
}

/// The temp file a save writes and renames over the records at `path`.
fn temp_path(path: &Path) -> PathBuf {
    path.with_extension("json.tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(n: u8, tags: &[&str]) -> Image {
        Image {
            id: Digest::of(&[n]),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![],
            size: 1,
            uid: Some(0),
            username: String::new(),
            pinned: false,
            manifests: vec![],
            layers: vec![],
            chain_ids: vec![],
        }
    }

    #[test]
    fn saved_and_reloaded_and_tags_move() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("images.json");
        let mut m = Metadata::load(&p).unwrap();
        assert!(m.images.is_empty());
        let a = img(1, &["r/a:1"]);
        let b = img(2, &["r/b:1"]);
        m.images.insert(a.id.clone(), a.clone());
        m.images.insert(b.id.clone(), b.clone());
        m.retag("r/a:1", &b.id);
        // a lost its only name and is gone; b does not carry the tag yet (the caller adds it).
        assert_eq!(m.images.len(), 1);
        m.save(true).unwrap();
        let m2 = Metadata::load(&p).unwrap();
        assert_eq!(m2.images, m.images);
        assert!(!d.path().join("images.json.tmp").exists());
        std::fs::write(&p, b"{not json").unwrap();
        assert!(Metadata::load(&p).is_err());
    }

    #[test]
    fn a_temp_file_a_crash_left_is_removed_at_load_and_the_last_save_kept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("images.json");
        let mut m = Metadata::load(&p).unwrap();
        let a = img(1, &["r/a:1"]);
        m.images.insert(a.id.clone(), a);
        m.save(false).unwrap();
        // A save the process died in before its rename.
        std::fs::write(d.path().join("images.json.tmp"), b"{\"half").unwrap();
        let again = Metadata::load(&p).unwrap();
        assert!(!d.path().join("images.json.tmp").exists());
        assert_eq!(again.images, m.images);
    }
}
