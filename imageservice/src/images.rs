//! The image store the CRI talks to: pull (resolve, fetch, verify, unpack, record), list, status,
//! remove with garbage collection of what no image or container uses, disk usage, and the lower
//! dirs of an image for a container's overlay mount. It ties the content store, snapshotter,
//! metadata and registry client together and owns their locking.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::content::ContentStore;
use crate::hosts::Hosts;
use crate::manifest::{self, Descriptor, Document, ImageConfig, Platform};
use crate::metadata::{Image, Metadata};
use crate::metrics::{self, PullMetrics};
use crate::reference::is_hex64;
use crate::registry::{Credentials, RegistryClient, Session};
use crate::snapshot::Snapshotter;
use crate::unpack::UnpackLimits;
use crate::{ChainId, Digest, Error, Reference, chain_ids};

/// How the image store is set up.
#[derive(Debug, Clone)]
pub struct ImagesConfig {
    /// Holds `content/`, `snapshots/` and `images.json`.
    pub root: PathBuf,
    /// containerd-style `certs.d` folder.
    pub hosts_dir: PathBuf,
    /// A download that receives nothing for this long fails (containerd's
    /// `image_pull_progress_timeout`).
    pub stall_timeout: Duration,
    /// Blobs downloaded at once, over all pulls.
    pub max_concurrent_downloads: usize,
    pub limits: UnpackLimits,
    /// The platform chosen from multi-platform images.
    pub platform: Platform,
    /// How often a running pull logs its progress.
    pub progress_interval: Duration,
}

impl ImagesConfig {
    pub fn new(root: impl Into<PathBuf>, hosts_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            hosts_dir: hosts_dir.into(),
            stall_timeout: Duration::from_secs(300),
            max_concurrent_downloads: 3,
            limits: UnpackLimits::default(),
            platform: Platform::host(),
            progress_interval: Duration::from_secs(10),
        }
    }
}

/// Bytes and inodes used by the image store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FsUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// What a garbage collection removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcReport {
    pub blobs: usize,
    pub snapshots: usize,
}

/// The image store. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Images {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ImagesConfig,
    content: ContentStore,
    snapshots: Snapshotter,
    meta: Mutex<Metadata>,
    hosts: Hosts,
    registry: Arc<RegistryClient>,
    metrics: PullMetrics,
    /// Pulls hold it shared, garbage collection exclusively: GC never removes a blob a running
    /// pull has stored but not yet recorded.
    gc: tokio::sync::RwLock<()>,
    /// A removal found a pull running; the last pull to finish collects.
    gc_pending: AtomicBool,
    downloads: Arc<tokio::sync::Semaphore>,
    usage_cache: Mutex<Option<(Instant, FsUsage)>>,
    /// Pulls running now, so the daemon can tell when the last one is over.
    pulling: AtomicUsize,
    /// Pulls started since the store opened, so the daemon can tell a quiet spell from a new
    /// burst that came and went.
    pulls_started: AtomicU64,
}

/// What [`Images::record`] stores.
struct Recorded<'a> {
    id: Digest,
    config: &'a ImageConfig,
    size: u64,
    manifests: Vec<Digest>,
    layers: Vec<Digest>,
    chains: Vec<ChainId>,
    repo_tag: Option<String>,
    repo_digest: Option<String>,
}

#[path = "import.rs"]
mod import;

struct Progress {
    bytes: AtomicU64,
    layers_done: AtomicUsize,
}

/// Counts a pull in [`Inner::pulling`] until it ends, however it ends (a cancelled call
/// included).
struct Pulling<'a>(&'a AtomicUsize);

impl<'a> Pulling<'a> {
    fn count(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Pulling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Aborts the progress logger when the pull ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a computed disk usage is served again: the kubelet asks every few seconds and a walk
/// of every snapshot is not free.
const USAGE_TTL: Duration = Duration::from_secs(10);

impl Images {
    /// Opens the store under `cfg.root` (creating it), reloads the image records, collects what an
    /// interrupted pull left, and registers the pull metrics in `registry`.
    pub fn open(cfg: ImagesConfig, registry: &prometheus::Registry) -> Result<Self, Error> {
        std::fs::create_dir_all(&cfg.root)
            .map_err(|e| Error::io(format!("creating {}", cfg.root.display()), e))?;
        let content = ContentStore::open(&cfg.root.join("content"))?;
        let snapshots = Snapshotter::open(&cfg.root.join("snapshots"))?;
        let meta = Metadata::load(&cfg.root.join("images.json"))?;
        let metrics = PullMetrics::register(registry)?;
        let inner = Inner {
            hosts: Hosts::new(&cfg.hosts_dir),
            registry: Arc::new(RegistryClient::new(cfg.stall_timeout)),
            downloads: Arc::new(tokio::sync::Semaphore::new(
                cfg.max_concurrent_downloads.max(1),
            )),
            cfg,
            content,
            snapshots,
            meta: Mutex::new(meta),
            metrics,
            gc: tokio::sync::RwLock::new(()),
            gc_pending: AtomicBool::new(false),
            usage_cache: Mutex::new(None),
            pulling: AtomicUsize::new(0),
            pulls_started: AtomicU64::new(0),
        };
        // Holds are persisted with the images, so this never takes a container's layers.
        let report = inner.collect()?;
        if report.blobs + report.snapshots > 0 {
            tracing::info!(
                blobs = report.blobs,
                snapshots = report.snapshots,
                "removed content no image uses"
            );
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.cfg.root
    }

    /// How many pulls are running now.
    pub fn pulls_in_flight(&self) -> usize {
        self.inner.pulling.load(Ordering::SeqCst)
    }

    /// How many pulls have started since the store opened.
    pub fn pulls_started(&self) -> u64 {
        self.inner.pulls_started.load(Ordering::SeqCst)
    }

    /// Pulls `reference` and returns the stored image; its `id` is what `PullImage` answers.
    pub async fn pull(&self, reference: &str, creds: &Credentials) -> Result<Image, Error> {
        self.inner.pulls_started.fetch_add(1, Ordering::SeqCst);
        let _pulling = Pulling::count(&self.inner.pulling);
        let start = Instant::now();
        let res = self
            .pull_inner(reference, creds)
            .await
            .map_err(|e| name_the_registry(e, reference).naming_a_full_disk(self.root()));
        let secs = start.elapsed().as_secs_f64();
        match &res {
            Ok(img) => {
                self.inner.metrics.pull_done("success", secs);
                tracing::info!(reference, image_id = %img.id, seconds = secs, "pulled image");
            }
            Err(e) => {
                self.inner.metrics.pull_done(metrics::outcome(e), secs);
                tracing::warn!(reference, error = %e, seconds = secs, "pull failed");
                // A refused or corrupt image will not get better: what it stored (blobs, lower
                // snapshots) goes. So does what a pull stopped by a full disk stored: the space
                // is what the node lacks, and the retry after space returns fetches it again.
                // After a network failure it stays, for the kubelet's retry.
                if matches!(
                    e,
                    Error::Refused { .. }
                        | Error::Verification { .. }
                        | Error::Unsupported(_)
                        | Error::DiskFull { .. }
                ) {
                    self.inner.gc_pending.store(true, Ordering::SeqCst);
                }
            }
        }
        self.collect_if_pending().await;
        res
    }

    async fn pull_inner(&self, reference: &str, creds: &Credentials) -> Result<Image, Error> {
        let r = Reference::parse(reference)?;
        let inner = &self.inner;
        let _pulling = inner.gc.read().await;
        let session = Arc::new(Session {
            client: inner.registry.clone(),
            hosts: inner.hosts.for_registry(r.domain())?,
            repository: r.repository().to_owned(),
            creds: creds.clone(),
        });
        let shown = r.to_string();
        tracing::info!(reference = %shown, "pulling image");

        let (top_ref, by_digest) = match (r.digest(), r.tag()) {
            (Some(d), _) => (d.to_string(), true),
            (None, Some(t)) => (t.to_owned(), false),
            (None, None) => {
                return Err(Error::Internal(
                    "reference with neither tag nor digest".into(),
                ));
            }
        };
        let (bytes, ct, _host) = session.manifest(&top_ref, by_digest).await?;
        let top = Digest::of(&bytes);
        if let Some(want) = r.digest() {
            if want != &top {
                return Err(Error::Verification {
                    digest: want.clone(),
                    reason: format!("the registry's manifest hashes to {top}"),
                });
            }
        }
        inner.content.write(&top, &bytes)?;
        let mut manifests = vec![top.clone()];
        let manifest = match manifest::parse_document(&bytes, ct.as_deref(), &shown)? {
            Document::Manifest(m) => m,
            Document::Index(index) => {
                let platform = &inner.cfg.platform;
                let d = manifest::select(&index, platform).ok_or_else(|| {
                    let have: Vec<String> = index
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref())
                        .map(|p| {
                            format!(
                                "{}/{}{}",
                                p.os,
                                p.architecture,
                                p.variant
                                    .as_deref()
                                    .map(|v| format!("/{v}"))
                                    .unwrap_or_default()
                            )
                        })
                        .collect();
                    Error::Unsupported(format!(
                        "{shown} has no image for {}/{} (it has: {})",
                        platform.os,
                        platform.architecture,
                        have.join(", ")
                    ))
                })?;
                if d.size > manifest::MAX_MANIFEST_BYTES {
                    return Err(Error::refused(
                        format!("manifest {}", d.digest),
                        "too large",
                    ));
                }
                let (b, ct, _) = session.manifest(d.digest.as_str(), true).await?;
                if Digest::of(&b) != d.digest || b.len() as u64 != d.size {
                    return Err(Error::Verification {
                        digest: d.digest.clone(),
                        reason: "the manifest the index names does not match its digest and size"
                            .into(),
                    });
                }
                inner.content.write(&d.digest, &b)?;
                manifests.push(d.digest.clone());
                match manifest::parse_document(&b, ct.as_deref(), &shown)? {
                    Document::Manifest(m) => m,
                    Document::Index(_) => {
                        return Err(Error::refused(
                            format!("manifest {}", d.digest),
                            "an index inside an index",
                        ));
                    }
                }
            }
        };
        for l in &manifest.layers {
            manifest::check_layer_type(&l.media_type)?;
        }

        let progress = Arc::new(Progress {
            bytes: AtomicU64::new(0),
            layers_done: AtomicUsize::new(0),
        });
        let _logger = AbortOnDrop(tokio::spawn({
            let progress = progress.clone();
            let total = manifest.layers.len();
            let every = inner.cfg.progress_interval;
            let shown = shown.clone();
            async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    tracing::info!(
                        reference = %shown,
                        bytes = progress.bytes.load(Ordering::Relaxed),
                        layers_done = progress.layers_done.load(Ordering::Relaxed),
                        layers = total,
                        "pull in progress"
                    );
                }
            }
        }));

        self.ensure_blob(&session, &manifest.config, &progress)
            .await?;
        let config_bytes = inner.content.read(&manifest.config.digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
            Error::refused(
                format!("image config {}", manifest.config.digest),
                e.to_string(),
            )
        })?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(Error::refused(
                format!("image config {}", manifest.config.digest),
                format!(
                    "{} diff_ids for {} layers",
                    diff_ids.len(),
                    manifest.layers.len()
                ),
            ));
        }
        let chains = chain_ids(diff_ids);

        let mut tasks = tokio::task::JoinSet::new();
        let unpacks = Arc::new(tokio::sync::RwLock::new(()));
        for ((layer, diff_id), chain) in manifest.layers.iter().zip(diff_ids).zip(&chains) {
            let this = self.clone();
            let (session, progress) = (session.clone(), progress.clone());
            let (layer, diff_id, chain) = (layer.clone(), diff_id.clone(), chain.clone());
            let unpacks = unpacks.clone();
            tasks.spawn(async move {
                this.layer(&session, &layer, diff_id, chain, &progress, unpacks)
                    .await
            });
        }
        // The first failure ends the pull: the other downloads are aborted, but an unpack already
        // running cannot be, and must end before this pull lets garbage collection in, or its
        // snapshot would appear after the collection, owned by no one.
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = res
                .map_err(|e| Error::Internal(format!("layer task: {e}")))
                .and_then(|r| r)
            {
                tasks.shutdown().await;
                let _quiet = unpacks.write().await;
                return Err(e);
            }
        }

        let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        self.record(Recorded {
            id: manifest.config.digest.clone(),
            config: &config,
            size,
            manifests,
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            chains,
            repo_tag: r.repo_tag(),
            repo_digest: Some(r.with_digest(&top)),
        })
    }

    /// Adds (or updates) an image record once all its content is stored and unpacked.
    fn record(&self, rec: Recorded<'_>) -> Result<Image, Error> {
        let (uid, username) = manifest::user_of(rec.config);
        let id = rec.id.clone();
        self.update(|images| {
            let img = images.images.entry(id.clone()).or_insert_with(|| Image {
                id: id.clone(),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                size: rec.size,
                uid,
                username: username.clone(),
                pinned: false,
                manifests: Vec::new(),
                layers: rec.layers.clone(),
                chain_ids: rec.chains.clone(),
            });
            for m in &rec.manifests {
                if !img.manifests.contains(m) {
                    img.manifests.push(m.clone());
                }
            }
            if let Some(d) = &rec.repo_digest {
                if !img.repo_digests.contains(d) {
                    img.repo_digests.push(d.clone());
                }
            }
            if let Some(tag) = &rec.repo_tag {
                if !img.repo_tags.contains(tag) {
                    img.repo_tags.push(tag.clone());
                }
                images.retag(tag, &id);
            }
            images
                .images
                .get(&id)
                .cloned()
                .ok_or_else(|| Error::Internal("image vanished while recorded".into()))
        })
    }

    /// Fetches one layer blob (unless stored) and unpacks it (unless its snapshot exists).
    async fn layer(
        &self,
        session: &Session,
        layer: &Descriptor,
        diff_id: Digest,
        chain: ChainId,
        progress: &Progress,
        unpacks: Arc<tokio::sync::RwLock<()>>,
    ) -> Result<(), Error> {
        self.ensure_blob(session, layer, progress).await?;
        let inner = &self.inner;
        let unpacking = inner.snapshots.lock(&chain).await;
        if !inner.snapshots.exists(&chain) {
            let this = self.inner.clone();
            let blob = inner.content.path(&layer.digest);
            let started = Instant::now();
            let c = chain.clone();
            let in_flight = unpacks.read_owned().await;
            // The guards go with the unpack, which outlives this task if the task is aborted.
            tokio::task::spawn_blocking(move || {
                let _guards = (unpacking, in_flight);
                this.snapshots.unpack(&c, &diff_id, &blob, &this.cfg.limits)
            })
            .await
            .map_err(|e| Error::Internal(format!("unpack task: {e}")))??;
            tracing::debug!(%chain, seconds = started.elapsed().as_secs_f64(), "unpacked layer");
        }
        progress.layers_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes blob `desc` present in the content store: reused if it is, downloaded once however
    /// many pulls want it at the same time.
    async fn ensure_blob(
        &self,
        session: &Session,
        desc: &Descriptor,
        progress: &Progress,
    ) -> Result<(), Error> {
        let inner = &self.inner;
        let check = |size: Option<u64>| -> Result<bool, Error> {
            match size {
                Some(s) if s == desc.size => Ok(true),
                Some(s) => Err(Error::Verification {
                    digest: desc.digest.clone(),
                    reason: format!("stored blob has {s} bytes, the manifest says {}", desc.size),
                }),
                None => Ok(false),
            }
        };
        if check(inner.content.size(&desc.digest))? {
            inner.metrics.blobs_reused.inc();
            return Ok(());
        }
        let _writing = inner.content.lock(&desc.digest).await;
        if check(inner.content.size(&desc.digest))? {
            inner.metrics.blobs_reused.inc();
            return Ok(());
        }
        let _slot = inner
            .downloads
            .acquire()
            .await
            .map_err(|e| Error::Internal(format!("download slots: {e}")))?;
        let mut ingest = inner.content.ingest(&desc.digest, desc.size).await?;
        carapace_crashpoint::hit("content: ingest file made");
        session
            .blob(&desc.digest, &mut ingest, &progress.bytes)
            .await?;
        carapace_crashpoint::hit("content: blob downloaded");
        ingest.commit(&inner.content).await?;
        inner.metrics.bytes.inc_by(desc.size);
        inner.metrics.blobs_fetched.inc();
        Ok(())
    }

    /// Changes the records through `f` on a copy, persists it, then makes it current: a failed
    /// write leaves memory as it was on disk.
    fn update<T>(&self, f: impl FnOnce(&mut Metadata) -> Result<T, Error>) -> Result<T, Error> {
        self.update_with(true, f)
    }

    /// [`Self::update`], fsync'd only when `durable`.
    fn update_with<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&mut Metadata) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut meta = self.inner.meta.lock().unwrap_or_else(|p| p.into_inner());
        let before = meta.clone();
        let res = f(&mut meta).and_then(|t| meta.save(durable).map(|()| t));
        if res.is_err() {
            *meta = before;
        }
        *self
            .inner
            .usage_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        res
    }

    /// Every image.
    pub fn list(&self) -> Vec<Image> {
        let meta = self.inner.meta.lock().unwrap_or_else(|p| p.into_inner());
        meta.images.values().cloned().collect()
    }

    /// The image that `name_or_id` names (an ID, `sha256:`ID, a tag or a digest reference), if
    /// any. Only a name that does not parse is an error.
    pub fn status(&self, name_or_id: &str) -> Result<Option<Image>, Error> {
        self.resolve(name_or_id)
    }

    fn resolve(&self, s: &str) -> Result<Option<Image>, Error> {
        let meta = self.inner.meta.lock().unwrap_or_else(|p| p.into_inner());
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if is_hex64(hex) {
            let id = Digest::from_hex(hex)?;
            return Ok(meta.images.get(&id).cloned());
        }
        let r = Reference::parse(s)?;
        if let Some(d) = r.digest() {
            let want = r.with_digest(d);
            return Ok(meta
                .images
                .values()
                .find(|i| i.repo_digests.contains(&want))
                .cloned());
        }
        let Some(tag) = r.repo_tag() else {
            return Ok(None);
        };
        Ok(meta
            .images
            .values()
            .find(|i| i.repo_tags.contains(&tag))
            .cloned())
    }

    /// The image's config as JSON, for verbose status and for creating containers.
    pub fn config(&self, image: &Image) -> Result<serde_json::Value, Error> {
        let b = self.inner.content.read(&image.id)?;
        serde_json::from_slice(&b).map_err(|e| Error::Internal(format!("config {}: {e}", image.id)))
    }

    /// Removes the image `name_or_id` names (its ID, a digest or any one of its tags) with all
    /// its tags and digests, as the CRI's RemoveImage says: the next ListImages does not show it
    /// under any name. Returns whether anything matched; then collects the content nothing uses
    /// any more.
    pub async fn remove(&self, name_or_id: &str) -> Result<bool, Error> {
        let Some(img) = self.resolve(name_or_id)? else {
            return Ok(false);
        };
        self.update(|meta| {
            meta.images.remove(&img.id);
            Ok(())
        })?;
        tracing::info!(image = name_or_id, image_id = %img.id, "removed image");
        self.inner.gc_pending.store(true, Ordering::SeqCst);
        self.collect_if_pending().await;
        Ok(true)
    }

    /// Removes every blob and snapshot that no image and no container hold. Waits for running
    /// pulls to finish.
    pub async fn gc(&self) -> Result<GcReport, Error> {
        let _exclusive = self.inner.gc.write().await;
        let this = self.inner.clone();
        tokio::task::spawn_blocking(move || this.collect())
            .await
            .map_err(|e| Error::Internal(format!("gc task: {e}")))?
    }

    /// Collects now if a removal asked for it and no pull is running; else the last running pull
    /// will.
    async fn collect_if_pending(&self) {
        if !self.inner.gc_pending.load(Ordering::SeqCst) {
            return;
        }
        let Ok(_exclusive) = self.inner.gc.try_write() else {
            return;
        };
        self.inner.gc_pending.store(false, Ordering::SeqCst);
        let this = self.inner.clone();
        match tokio::task::spawn_blocking(move || this.collect()).await {
            Ok(Ok(r)) => tracing::info!(
                blobs = r.blobs,
                snapshots = r.snapshots,
                "garbage collected"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "garbage collection"),
            Err(e) => tracing::warn!(error = %e, "garbage collection task"),
        }
    }

    /// Marks the snapshots of `images` as used by `holder` (a container ID: its own image and
    /// those its image volumes mount) until [`Self::release`]: they outlive the images' removal,
    /// and a restart of the daemon (holds are persisted, without fsync: a reboot ends the
    /// containers that hold them).
    pub fn hold(&self, holder: &str, images: &[&Image]) -> Result<(), Error> {
        let mut chains: Vec<ChainId> = Vec::new();
        for c in images.iter().flat_map(|i| &i.chain_ids) {
            if !chains.contains(c) {
                chains.push(c.clone());
            }
        }
        self.update_with(false, |meta| {
            meta.holds.insert(holder.to_owned(), chains);
            Ok(())
        })
    }

    /// Drops the holds of every holder `live` says is gone, and collects what they alone kept.
    /// Blocking: for the daemon's start, once it knows its containers.
    pub fn keep_holds_of(&self, live: impl Fn(&str) -> bool) -> Result<(), Error> {
        let stale = {
            let meta = self.inner.meta.lock().unwrap_or_else(|p| p.into_inner());
            meta.holds.keys().any(|h| !live(h))
        };
        if stale {
            let dropped = self.update_with(false, |meta| {
                let before = meta.holds.len();
                meta.holds.retain(|holder, _| live(holder));
                Ok(before - meta.holds.len())
            })?;
            let report = self.inner.collect()?;
            tracing::info!(
                holds = dropped,
                blobs = report.blobs,
                snapshots = report.snapshots,
                "dropped the image holds of containers that are gone"
            );
        }
        Ok(())
    }

    /// Drops `holder`'s hold (none is fine) and collects what it alone kept.
    pub async fn release(&self, holder: &str) -> Result<(), Error> {
        let had = self.update_with(false, |meta| Ok(meta.holds.remove(holder).is_some()))?;
        if had {
            self.inner.gc_pending.store(true, Ordering::SeqCst);
            self.collect_if_pending().await;
        }
        Ok(())
    }

    /// Overlay lower dirs of `image`, top layer first, as `lowerdir=` lists them.
    pub fn lower_dirs(&self, image: &Image) -> Vec<PathBuf> {
        image
            .chain_ids
            .iter()
            .rev()
            .map(|c| self.inner.snapshots.fs_dir(c))
            .collect()
    }

    /// Bytes and inodes used by the content store, snapshots and records.
    pub async fn fs_usage(&self) -> Result<FsUsage, Error> {
        if let Some((at, u)) = *self
            .inner
            .usage_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            if at.elapsed() < USAGE_TTL {
                return Ok(u);
            }
        }
        let root = self.inner.cfg.root.clone();
        let u = tokio::task::spawn_blocking(move || {
            let mut seen = HashSet::new();
            let mut u = FsUsage::default();
            for p in ["content", "snapshots", "images.json"] {
                walk(&root.join(p), &mut seen, &mut u);
            }
            u
        })
        .await
        .map_err(|e| Error::Internal(format!("usage task: {e}")))?;
        *self
            .inner
            .usage_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), u));
        Ok(u)
    }

    /// Sets or clears an image's pin (pinned images are, e.g., the sandbox image).
    pub fn set_pinned(&self, image_id: &Digest, pinned: bool) -> Result<(), Error> {
        self.update(|meta| {
            let img = meta
                .images
                .get_mut(image_id)
                .ok_or_else(|| Error::ImageNotFound(image_id.to_string()))?;
            img.pinned = pinned;
            Ok(())
        })
    }
}

impl Inner {
    /// The garbage collection itself; the caller holds the GC lock exclusively (or is `open`).
    fn collect(&self) -> Result<GcReport, Error> {
        let (blobs, chains) = {
            let meta = self.meta.lock().unwrap_or_else(|p| p.into_inner());
            let mut blobs = HashSet::new();
            let mut chains = HashSet::new();
            for img in meta.images.values() {
                blobs.insert(img.id.clone());
                blobs.extend(img.manifests.iter().cloned());
                blobs.extend(img.layers.iter().cloned());
                chains.extend(img.chain_ids.iter().cloned());
            }
            for held in meta.holds.values() {
                chains.extend(held.iter().cloned());
            }
            (blobs, chains)
        };
        let mut report = GcReport::default();
        for d in self.content.list()? {
            if !blobs.contains(&d) {
                self.content.remove(&d)?;
                carapace_crashpoint::hit("gc: blob removed");
                report.blobs += 1;
            }
        }
        for c in self.snapshots.list()? {
            if !chains.contains(&c) {
                self.snapshots.remove(&c)?;
                carapace_crashpoint::hit("gc: snapshot removed");
                report.snapshots += 1;
            }
        }
        *self.usage_cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(report)
    }
}

/// An error from a mirror or server that `hosts.toml` chose also names the registry the caller
/// asked for, which is the name the operator knows.
fn name_the_registry(mut e: Error, reference: &str) -> Error {
    let Ok(r) = Reference::parse(reference) else {
        return e;
    };
    if let Error::Unauthorized { host, .. }
    | Error::Registry { host, .. }
    | Error::NotFoundInRegistry { host, .. }
    | Error::Stalled { host, .. } = &mut e
    {
        if host != r.domain() {
            *host = format!("{} (at {host})", r.domain());
        }
    }
    e
}

/// Adds what is under `p` to `u`, each inode once (hard links are shared across layers of one
/// tar), never following symlinks.
fn walk(p: &Path, seen: &mut HashSet<(u64, u64)>, u: &mut FsUsage) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return;
    };
    if seen.insert((m.dev(), m.ino())) {
        u.inodes += 1;
        u.bytes += m.blocks() * 512;
    }
    if m.is_dir() {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                walk(&e.path(), seen, u);
            }
        }
    }
}
