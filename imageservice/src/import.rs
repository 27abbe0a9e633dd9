//! Importing images from an archive, for air-gapped nodes (`carapace image import FILE.tar`): an
//! OCI image layout or a `docker save` archive, plain or gzip-compressed. Every file of the archive
//! is stored as a blob under its own digest, so the references inside the archive are checked by
//! the store itself: a descriptor whose blob is absent or of another size is refused.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::Ordering;

use serde::Deserialize;

use super::{Images, Recorded};
use crate::manifest::{self, Descriptor, Document, ImageConfig, Manifest};
use crate::unpack::components;
use crate::{Digest, Error, Image, Reference, chain_ids};

/// The OCI annotations that name an image in a layout.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Symlinks inside an archive (old `docker save` shares identical layers that way) are followed
/// at most this deep.
const MAX_LINKS: usize = 8;

/// Paths of the archive (normalised, `/`-joined) to the blob holding each file.
type Files = HashMap<String, Digest>;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl Images {
    /// Imports every named image in the archive at `path`. `base_name` (e.g. `example.com/app`)
    /// names OCI layout entries that carry only a tag; entries with no name at all are skipped.
    pub async fn import(&self, path: &Path, base_name: Option<&str>) -> Result<Vec<Image>, Error> {
        let res = {
            let _importing = self.inner.gc.read().await;
            let this = self.clone();
            let path = path.to_owned();
            let base = base_name.map(str::to_owned);
            tokio::task::spawn_blocking(move || this.import_blocking(&path, base.as_deref()))
                .await
                .map_err(|e| Error::Internal(format!("import task: {e}")))?
        };
        // The archive's other files (VERSION, repositories, ...) became blobs too; they go now.
        self.inner.gc_pending.store(true, Ordering::SeqCst);
        self.collect_if_pending().await;
        res
    }

    fn import_blocking(&self, path: &Path, base: Option<&str>) -> Result<Vec<Image>, Error> {
        let files = self.store_archive(path)?;
        let imported = if files.contains_key("index.json") {
            self.import_layout(&files, base)?
        } else if files.contains_key("manifest.json") {
            self.import_docker(&files)?
        } else {
            return Err(Error::refused(
                path.display().to_string(),
                "neither an OCI image layout (index.json) nor a docker save archive (manifest.json)",
            ));
        };
        if imported.is_empty() {
            return Err(Error::refused(
                path.display().to_string(),
                "no image in the archive has a name (give a base name for tag-only entries)",
            ));
        }
        Ok(imported)
    }

    /// Stores every regular file of the archive as a blob; resolves symlinks inside it.
    fn store_archive(&self, path: &Path) -> Result<Files, Error> {
        let what = path.display().to_string();
        let f = std::fs::File::open(path).map_err(|e| Error::io(format!("opening {what}"), e))?;
        let mut br = BufReader::new(f);
        let head = br
            .fill_buf()
            .map_err(|e| Error::io(format!("reading {what}"), e))?;
        let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(br))
        } else {
            Box::new(br)
        };
        let limits = &self.inner.cfg.limits;
        let mut ar = tar::Archive::new(reader);
        let mut files = Files::new();
        let mut links = Vec::new();
        let entries = ar
            .entries()
            .map_err(|e| Error::refused(&what, format!("not a tar: {e}")))?;
        for (n, entry) in entries.enumerate() {
            if n as u64 >= limits.max_entries {
                return Err(Error::refused(&what, "too many entries"));
            }
            let mut entry =
                entry.map_err(|e| Error::refused(&what, format!("reading tar: {e}")))?;
            let p = entry
                .path()
                .map_err(|e| Error::refused(&what, e.to_string()))?
                .into_owned();
            let key = key(&p).map_err(|r| Error::refused(&what, r))?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let (d, _) = self
                        .inner
                        .content
                        .ingest_reader(&mut entry, limits.max_bytes)?;
                    files.insert(key, d);
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| Error::refused(&what, e.to_string()))?
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    let hard = entry.header().entry_type() == tar::EntryType::Link;
                    links.push((key, target, hard));
                }
                _ => {}
            }
        }
        // Hard links name the target from the archive's root, symlinks from their own folder.
        for _ in 0..MAX_LINKS {
            let mut progress = false;
            for (k, target, hard) in &links {
                if files.contains_key(k) {
                    continue;
                }
                let base = if *hard {
                    ""
                } else {
                    k.rsplit_once('/').map_or("", |(d, _)| d)
                };
                let Some(t) = resolve(base, target) else {
                    continue;
                };
                if let Some(d) = files.get(&t).cloned() {
                    files.insert(k.clone(), d);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        Ok(files)
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, files: &Files, p: &str) -> Result<T, Error> {
        let b = self.small_blob(files, p)?;
        serde_json::from_slice(&b)
            .map_err(|e| Error::refused(format!("archive file {p}"), e.to_string()))
    }

    fn small_blob(&self, files: &Files, p: &str) -> Result<Vec<u8>, Error> {
        let d = files
            .get(p)
            .ok_or_else(|| Error::refused("archive", format!("it has no {p}")))?;
        if self.inner.content.size(d).unwrap_or(0) > manifest::MAX_CONFIG_BYTES {
            return Err(Error::refused(format!("archive file {p}"), "too large"));
        }
        self.inner.content.read(d)
    }

    /// A descriptor's blob as the layout stores it; its digest was computed on the way in.
    fn described(&self, d: &Descriptor) -> Result<Vec<u8>, Error> {
        match self.inner.content.size(&d.digest) {
            Some(s) if s == d.size => {}
            _ => {
                return Err(Error::refused(
                    "archive",
                    format!("it lacks blob {} of {} bytes", d.digest, d.size),
                ));
            }
        }
        if d.size > manifest::MAX_CONFIG_BYTES {
            return Err(Error::refused(format!("blob {}", d.digest), "too large"));
        }
        self.inner.content.read(&d.digest)
    }

    fn import_layout(&self, files: &Files, base: Option<&str>) -> Result<Vec<Image>, Error> {
        let index_bytes = self.small_blob(files, "index.json")?;
        let Document::Index(index) = manifest::parse_document(&index_bytes, None, "index.json")?
        else {
            return Err(Error::refused("index.json", "not an image index"));
        };
        let mut out = Vec::new();
        for desc in &index.manifests {
            let name = desc.annotations.get(CONTAINERD_NAME).cloned().or_else(|| {
                let r = desc.annotations.get(REF_NAME)?;
                if r.contains(['/', ':', '@']) {
                    Some(r.clone())
                } else {
                    base.map(|b| format!("{b}:{r}"))
                }
            });
            let Some(name) = name else {
                tracing::warn!(digest = %desc.digest, "skipping an unnamed image of the layout");
                continue;
            };
            let r = Reference::parse(&name)?;
            let bytes = self.described(desc)?;
            let mut manifests = vec![desc.digest.clone()];
            let m = match manifest::parse_document(&bytes, Some(&desc.media_type), &name)? {
                Document::Manifest(m) => m,
                Document::Index(i) => {
                    let d = manifest::select(&i, &self.inner.cfg.platform).ok_or_else(|| {
                        Error::Unsupported(format!("{name} has no image for this platform"))
                    })?;
                    let b = self.described(d)?;
                    manifests.push(d.digest.clone());
                    match manifest::parse_document(&b, Some(&d.media_type), &name)? {
                        Document::Manifest(m) => m,
                        Document::Index(_) => {
                            return Err(Error::refused(&name, "an index inside an index"));
                        }
                    }
                }
            };
            let mut img =
                self.import_manifest(&m, manifests, &r, Some(r.with_digest(&desc.digest)))?;
            // The archive's names, not those the image had already.
            img.repo_tags.retain(|t| Some(t) == r.repo_tag().as_ref());
            out.push(img);
        }
        Ok(out)
    }

    fn import_manifest(
        &self,
        m: &Manifest,
        manifests: Vec<Digest>,
        r: &Reference,
        repo_digest: Option<String>,
    ) -> Result<Image, Error> {
        let config_bytes = self.described(&m.config)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
            Error::refused(format!("image config {}", m.config.digest), e.to_string())
        })?;
        for l in &m.layers {
            manifest::check_layer_type(&l.media_type)?;
            if self.inner.content.size(&l.digest) != Some(l.size) {
                return Err(Error::refused(
                    "archive",
                    format!("it lacks layer {}", l.digest),
                ));
            }
        }
        let layers: Vec<Digest> = m.layers.iter().map(|l| l.digest.clone()).collect();
        let size = m.config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
        self.unpack_and_record(
            &m.config.digest,
            &config,
            size,
            manifests,
            layers,
            r.repo_tag(),
            repo_digest,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn unpack_and_record(
        &self,
        id: &Digest,
        config: &ImageConfig,
        size: u64,
        manifests: Vec<Digest>,
        layers: Vec<Digest>,
        repo_tag: Option<String>,
        repo_digest: Option<String>,
    ) -> Result<Image, Error> {
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != layers.len() {
            return Err(Error::refused(
                format!("image config {id}"),
                format!("{} diff_ids for {} layers", diff_ids.len(), layers.len()),
            ));
        }
        let chains = chain_ids(diff_ids);
        let snapshots = &self.inner.snapshots;
        for ((layer, diff_id), chain) in layers.iter().zip(diff_ids).zip(&chains) {
            let _unpacking = snapshots.lock_blocking(chain);
            snapshots.unpack(
                chain,
                diff_id,
                &self.inner.content.path(layer),
                &self.inner.cfg.limits,
            )?;
        }
        self.record(Recorded {
            id: id.clone(),
            config,
            size,
            manifests,
            layers,
            chains,
            repo_tag,
            repo_digest,
        })
    }

    fn import_docker(&self, files: &Files) -> Result<Vec<Image>, Error> {
        let entries: Vec<DockerEntry> = self.json(files, "manifest.json")?;
        let mut out = Vec::new();
        for e in entries {
            let tags = e.repo_tags.unwrap_or_default();
            if tags.is_empty() {
                tracing::warn!(config = %e.config, "skipping an untagged image of the archive");
                continue;
            }
            let refs = tags
                .iter()
                .map(|t| Reference::parse(t))
                .collect::<Result<Vec<_>, _>>()?;
            let id = files
                .get(&key(Path::new(&e.config)).map_err(|r| Error::refused("manifest.json", r))?)
                .cloned()
                .ok_or_else(|| Error::refused("archive", format!("it has no {}", e.config)))?;
            let config: ImageConfig =
                self.json(files, &key(Path::new(&e.config)).unwrap_or_default())?;
            let mut layers = Vec::new();
            let mut size = self.inner.content.size(&id).unwrap_or(0);
            for l in &e.layers {
                let k = key(Path::new(l)).map_err(|r| Error::refused("manifest.json", r))?;
                let d = files
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| Error::refused("archive", format!("it has no layer {l}")))?;
                size += self.inner.content.size(&d).unwrap_or(0);
                layers.push(d);
            }
            let mut img = None;
            for r in &refs {
                img = Some(self.unpack_and_record(
                    &id,
                    &config,
                    size,
                    Vec::new(),
                    layers.clone(),
                    r.repo_tag(),
                    None,
                )?);
            }
            if let Some(mut img) = img {
                let named: Vec<String> = refs.iter().filter_map(Reference::repo_tag).collect();
                img.repo_tags.retain(|t| named.contains(t));
                out.push(img);
            }
        }
        Ok(out)
    }
}

/// A path inside the archive as a map key; `..` is refused.
fn key(p: &Path) -> Result<String, String> {
    let c = components(p)?;
    Ok(c.iter()
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/"))
}

/// `target` seen from folder `base`, kept inside the archive's root.
fn resolve(base: &str, target: &Path) -> Option<String> {
    let mut parts: Vec<String> = if target.is_absolute() {
        Vec::new()
    } else {
        base.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    for c in target.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop()?;
            }
            _ => {}
        }
    }
    Some(parts.join("/"))
}
