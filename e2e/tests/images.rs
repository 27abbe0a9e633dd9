//! The image service against a real registry on loopback: Debian's `docker-registry`, filled by
//! `skopeo` from OCI layouts that the tests build out of `/bin/busybox` or craft entry by entry,
//! reached through a `hosts.toml` in the daemon's private `certs.d`. Pull (OCI and Docker formats,
//! multi-platform, basic auth), list, status, re-pull without fetching, whiteouts as an overlay
//! mount sees them, shared base layers, corrupt and hostile layers, remove with garbage
//! collection, the error codes, and `carapace image import` with and without a daemon.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use carapace_e2e::registry::{Entry, Platform, REGISTRY, Registry, build_layout, native_arch};
use carapace_e2e::{Daemon, DaemonConfig, carapace_bin, cri};
use cri::image_service_client::ImageServiceClient;
use tonic::Code;
use tonic::transport::Channel;

type Images = ImageServiceClient<Channel>;

/// A daemon whose `certs.d` sends `REGISTRY` to the local registry.
async fn daemon(registry: &Registry) -> Daemon {
    registry.daemon().await
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// The value of an unlabelled counter on the daemon's /metrics page.
fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn blobs(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("content/blobs/sha256"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Everything in the snapshots folder: complete snapshots and any temp dir.
fn snapshots(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("snapshots"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

async fn pull_as(
    images: &mut Images,
    name: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    images
        .pull_image(cri::PullImageRequest {
            image: spec(name),
            auth,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn pull(images: &mut Images, name: &str) -> Result<String, tonic::Status> {
    pull_as(images, name, None).await
}

/// `ImageStatus` with `verbose`: the image and its info (config, lower dirs top first).
async fn status(images: &mut Images, name: &str) -> Option<(cri::Image, serde_json::Value)> {
    let r = images
        .image_status(cri::ImageStatusRequest {
            image: spec(name),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info = serde_json::from_str(&r.info["info"]).ok()?;
    Some((r.image?, info))
}

fn lower_dirs(info: &serde_json::Value) -> Vec<PathBuf> {
    info["lowerDirs"]
        .as_array()
        .expect("lowerDirs")
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

async fn image_ids(images: &mut Images) -> Vec<String> {
    let list = images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    list.into_iter().map(|i| i.id).collect()
}

/// After a refused pull: no image, no blob, no snapshot (nor a half-unpacked one).
async fn assert_nothing_stored(d: &Daemon, images: &mut Images) {
    assert!(image_ids(images).await.is_empty());
    let root = d.config.root();
    assert!(blobs(&root).is_empty(), "blobs left: {:?}", blobs(&root));
    assert!(
        snapshots(&root).is_empty(),
        "snapshots left: {:?}",
        snapshots(&root)
    );
}

/// A read-only overlay mount of a snapshot chain (lower dirs top first), as a container's rootfs
/// stacks it; unmounted on drop.
struct OverlayView {
    dir: tempfile::TempDir,
}

impl OverlayView {
    fn mount(lower: &[PathBuf]) -> OverlayView {
        let dir = tempfile::Builder::new()
            .prefix("carapace-e2e-overlay.")
            .tempdir_in("/tmp")
            .unwrap();
        let lowerdir: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
        nix::mount::mount(
            Some("overlay"),
            dir.path(),
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(format!("lowerdir={}", lowerdir.join(":")).as_str()),
        )
        .unwrap_or_else(|e| panic!("mounting overlay of {lowerdir:?}: {e}"));
        OverlayView { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The names in folder `rel`, sorted.
    fn names(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path().join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for OverlayView {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount(self.dir.path()) {
            eprintln!("unmounting {}: {e}", self.dir.path().display());
        }
    }
}

/// A temp dir outside every store, holding `keep`: hostile layers aim at it.
struct Canary {
    dir: tempfile::TempDir,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::Builder::new()
            .prefix("carapace-e2e-canary.")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(dir.path().join("keep"), b"keep").unwrap();
        Canary { dir }
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn assert_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keep"], "something was written outside the store");
        assert_eq!(
            std::fs::read(self.dir.path().join("keep")).unwrap(),
            b"keep"
        );
    }
}

/// `carapace image import` with the daemon's configuration; `stdin` feeds `-`.
fn import(cfg: &DaemonConfig, args: &[&str], stdin: Option<&Path>) -> std::process::Output {
    let mut cmd = std::process::Command::new(carapace_bin());
    cmd.args(["image", "import", "--config"])
        .arg(cfg.write())
        .args(args);
    match stdin {
        Some(p) => cmd.stdin(std::fs::File::open(p).unwrap()),
        None => cmd.stdin(Stdio::null()),
    };
    cmd.output().expect("running carapace image import")
}

/// The `name id` lines `carapace image import` printed, checked to have succeeded.
fn imported(out: &std::process::Output) -> Vec<(String, String)> {
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (name, id) = l.split_once(' ').expect("`name id` lines");
            (name.to_owned(), id.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn pull_list_status_repull_and_remove_through_the_cri() {
    let registry = Registry::start().await;
    let d = daemon(&registry).await;
    let mut images = d.images().await;
    let name = format!("{REGISTRY}/e2e/busybox:v1");

    let pulled = pull(&mut images, &name)
        .await
        .unwrap_or_else(|e| panic!("pull: {e}\n{}", d.log_text()));
    assert!(pulled.starts_with("sha256:"), "{}", pulled);
    let fetched = counter(
        &d.metrics_text().await,
        "carapace_image_blobs_fetched_total",
    );
    assert_eq!(fetched, 2.0, "config and one layer");

    let list = images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, pulled);
    assert_eq!(list[0].repo_tags, std::slice::from_ref(&name));
    assert!(list[0].repo_digests[0].starts_with(&format!("{REGISTRY}/e2e/busybox@sha256:")));
    assert_eq!(list[0].uid.as_ref().map(|u| u.value), Some(0));
    assert!(
        list[0].size > 500_000,
        "busybox is not that small: {}",
        list[0].size
    );

    let status = images
        .image_status(cri::ImageStatusRequest {
            image: spec("registry.e2e.test/e2e/busybox:v1"),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.image.as_ref().unwrap().id, pulled);
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "/bin/sh");
    let lower = PathBuf::from(info["lowerDirs"][0].as_str().unwrap());
    assert!(lower.starts_with(d.config.root()));
    assert_eq!(
        std::fs::read(lower.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        std::fs::read_link(lower.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );

    // Again, and in Docker's format (same layer): nothing is fetched but the new config.
    pull(&mut images, &name).await.unwrap();
    let docker = pull(&mut images, &format!("{REGISTRY}/e2e/busybox:docker"))
        .await
        .unwrap();
    let m = d.metrics_text().await;
    assert!(
        counter(&m, "carapace_image_blobs_fetched_total") <= 3.0,
        "re-pull fetched blobs:\n{m}"
    );
    assert!(
        counter(&m, "carapace_image_blobs_reused_total") >= 3.0,
        "{m}"
    );

    let fs = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(usage.used_bytes.as_ref().unwrap().value > 1_000_000);
    assert!(usage.inodes_used.as_ref().unwrap().value > 5);

    // Remove both (by tag, then by ID), twice: the second time is a no-op.
    for _ in 0..2 {
        images
            .remove_image(cri::RemoveImageRequest { image: spec(&name) })
            .await
            .unwrap();
        images
            .remove_image(cri::RemoveImageRequest {
                image: spec(&docker),
            })
            .await
            .unwrap();
    }
    let list = images
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(list.is_empty(), "{list:?}");
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: spec(&name),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none());
    assert!(
        blobs(&d.config.root()).is_empty(),
        "content left after removal"
    );
    assert!(!lower.exists(), "snapshot left after removal");

    registry.stop().await;
    d.stop().await;
}

#[tokio::test]
async fn bad_references_and_missing_images_have_their_codes() {
    let registry = Registry::start().await;
    let d = daemon(&registry).await;
    let mut images = d.images().await;

    for bad in ["UPPER/case", "busybox@sha256:short", ""] {
        let e = pull(&mut images, bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e}");
    }
    let e = pull(&mut images, &format!("{REGISTRY}/e2e/nothing:here"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(e.message().contains("not found"), "{e}");
    assert!(blobs(&d.config.root()).is_empty());

    registry.stop().await;
    d.stop().await;
}

/// Not a test: pull time of a ~100 MB three-layer image from the local registry, several runs,
/// each into an empty store. Run with
/// `cargo test -p carapace-e2e --test images -- --ignored --nocapture pull_benchmark`.
#[tokio::test]
#[ignore]
async fn pull_benchmark() {
    let dirs = ["/usr/lib/python3.11", "/usr/lib/python3"];
    let mut registry = Registry::empty().await;
    registry.push("bench/big", &dirs).await;
    let name = format!("{REGISTRY}/bench/big:v1");
    let mut times = Vec::new();
    let runs: usize = std::env::var("CARAPACE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    for _ in 0..runs {
        let d = daemon(&registry).await;
        let mut images = d.images().await;
        let t = Instant::now();
        let image_ref = pull(&mut images, &name)
            .await
            .unwrap_or_else(|e| panic!("pull: {e}\n{}", d.log_text()));
        times.push(t.elapsed());
        let t = Instant::now();
        pull(&mut images, &name).await.unwrap();
        let again = t.elapsed();
        let size = images
            .image_status(cri::ImageStatusRequest {
                image: spec(&image_ref),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .image
            .unwrap()
            .size;
        println!(
            "pull of {size} compressed bytes: {:?} (cached re-pull {again:?})",
            times.last().unwrap()
        );
        let log = d.stop().await;
        for l in log.lines().filter(|l| {
            l.contains("unpacked layer") || l.contains("pulled image") || l.contains("in progress")
        }) {
            println!("  {l}");
        }
    }
    times.sort();
    println!("median cold pull: {:?}", times[times.len() / 2]);
    registry.stop().await;
}

/// kill -9 in the middle of a pull: after a restart nothing half-written is visible, and the
/// same pull completes.
#[tokio::test]
async fn a_pull_killed_midway_completes_after_a_restart() {
    let mut registry = Registry::empty().await;
    registry.push("e2e/big", &["/usr/lib/python3.11"]).await;
    let name = format!("{REGISTRY}/e2e/big:v1");
    let mut d = daemon(&registry).await;
    let mut images = d.images().await;
    let pull = tokio::spawn({
        let name = name.clone();
        async move {
            images
                .pull_image(cri::PullImageRequest {
                    image: spec(&name),
                    ..Default::default()
                })
                .await
        }
    });
    // Kill once a blob is being written or a layer unpacked: the pull is truly midway.
    let root = d.config.root();
    let midway = || {
        let busy = |p: PathBuf, dot: bool| {
            std::fs::read_dir(p).is_ok_and(|rd| {
                rd.filter_map(|e| e.ok())
                    .any(|e| !dot || e.file_name().to_string_lossy().starts_with(".tmp-"))
            })
        };
        busy(root.join("content/ingest"), false) || busy(root.join("snapshots"), true)
    };
    let started = Instant::now();
    while !midway() && !pull.is_finished() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        !pull.is_finished(),
        "the pull ended before it could be killed"
    );
    // Killed and reaped before the next daemon starts: a process that is still exiting (its
    // blocking threads mid-write) holds the root's lock, and the next daemon refuses the root.
    let cfg = d.kill().await;
    let _ = pull.await;
    drop(d);
    let d = Daemon::start_with(cfg).await;
    let leftovers: Vec<_> = std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-unpacked snapshots: {leftovers:?}"
    );
    assert_eq!(
        std::fs::read_dir(root.join("content/ingest"))
            .unwrap()
            .count(),
        0
    );

    let mut images = d.images().await;
    let r = images
        .pull_image(cri::PullImageRequest {
            image: spec(&name),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pull after restart: {e}\n{}", d.log_text()))
        .into_inner();
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: spec(&r.image_ref),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    let top = PathBuf::from(info["lowerDirs"][0].as_str().unwrap());
    assert!(top.join("usr/lib/python3.11/os.py").is_file());
    // Every stored blob is what its name says.
    for b in blobs(&root) {
        let out = std::process::Command::new("sha256sum")
            .arg(&b)
            .output()
            .unwrap();
        let sum = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            sum.split(' ').next().unwrap(),
            b.file_name().unwrap().to_str().unwrap(),
            "blob {} does not verify",
            b.display()
        );
    }
    registry.stop().await;
    d.stop().await;
}

#[tokio::test]
async fn basic_auth_pull_with_the_right_password_and_a_clear_refusal_without() {
    let registry = Registry::with_basic_auth("secure.e2e.test", "alice", "s3cret-pw").await;
    registry
        .push_crafted(
            "e2e/private",
            &[Platform::native(vec![vec![Entry::file("secret", "data")]])],
        )
        .await;
    let d = daemon(&registry).await;
    let mut images = d.images().await;
    let name = registry.image("e2e/private", "v1");
    let auth = |user: &str, password: &str| {
        Some(cri::AuthConfig {
            username: user.into(),
            password: password.into(),
            ..Default::default()
        })
    };

    for (what, creds) in [
        ("wrong password", auth("alice", "wrong")),
        ("anonymous", None),
    ] {
        let e = pull_as(&mut images, &name, creds).await.unwrap_err();
        assert!(
            matches!(e.code(), Code::PermissionDenied | Code::Unauthenticated),
            "{what}: {e}"
        );
        assert!(
            e.message().contains("secure.e2e.test"),
            "{what}: the message names no registry: {e}"
        );
    }
    assert_nothing_stored(&d, &mut images).await;

    let id = pull_as(&mut images, &name, auth("alice", "s3cret-pw"))
        .await
        .unwrap_or_else(|e| panic!("pull with the password: {e}\n{}", d.log_text()));
    let (_, info) = status(&mut images, &name).await.expect("pulled image");
    assert_eq!(
        std::fs::read(lower_dirs(&info)[0].join("secret")).unwrap(),
        b"data"
    );
    assert_eq!(image_ids(&mut images).await, [id]);
    registry.stop().await;
    d.stop().await;
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_show_in_an_overlay_of_the_snapshot_chain() {
    let registry = Registry::empty().await;
    let base = vec![
        Entry::dir("etc"),
        Entry::file("etc/gone", "deleted above"),
        Entry::file("etc/kept", "kept"),
        Entry::dir("opq"),
        Entry::file("opq/old", "hidden above"),
        Entry::dir("opq/olddir"),
        Entry::file("opq/olddir/deep", "hidden above"),
    ];
    let middle = vec![
        Entry::file("etc/.wh.gone", ""),
        Entry::file("etc/added", "middle"),
    ];
    let top = vec![
        Entry::dir("opq"),
        Entry::file("opq/.wh..wh..opq", ""),
        Entry::file("opq/new", "top"),
    ];
    registry
        .push_crafted("e2e/layers", &[Platform::native(vec![base, middle, top])])
        .await;
    let d = daemon(&registry).await;
    let mut images = d.images().await;

    // The same image pushed in OCI and in Docker's format: the same files either way.
    for tag in ["v1", "docker"] {
        let name = registry.image("e2e/layers", tag);
        pull(&mut images, &name)
            .await
            .unwrap_or_else(|e| panic!("pull {name}: {e}\n{}", d.log_text()));
        let (img, info) = status(&mut images, &name).await.expect("pulled image");
        assert!(img.repo_tags.contains(&name), "{:?}", img.repo_tags);
        let lower = lower_dirs(&info);
        assert_eq!(lower.len(), 3, "{name}: one snapshot per layer");
        let view = OverlayView::mount(&lower);
        assert_eq!(view.names("etc"), ["added", "kept"], "{name}");
        assert!(!view.path().join("etc/gone").exists());
        assert_eq!(view.names("opq"), ["new"], "{name}: opaque dir");
        assert_eq!(std::fs::read(view.path().join("opq/new")).unwrap(), b"top");
        assert_eq!(
            std::fs::read(view.path().join("etc/kept")).unwrap(),
            b"kept"
        );
    }
    // Both formats name the same layers: stored once.
    assert_eq!(snapshots(&d.config.root()).len(), 3);
    registry.stop().await;
    d.stop().await;
}

#[tokio::test]
async fn a_multi_platform_index_pulls_only_this_nodes_image() {
    let registry = Registry::empty().await;
    let native = native_arch();
    let other = if native == "arm64" { "amd64" } else { "arm64" };
    let platforms: Vec<Platform> = [other, native.as_str()]
        .iter()
        .map(|arch| Platform {
            arch: arch.to_string(),
            layers: vec![vec![Entry::file("arch", arch)]],
        })
        .collect();
    registry.push_crafted("e2e/multi", &platforms).await;
    let d = daemon(&registry).await;
    let mut images = d.images().await;
    let name = registry.image("e2e/multi", "v1");

    pull(&mut images, &name)
        .await
        .unwrap_or_else(|e| panic!("pull: {e}\n{}", d.log_text()));
    let (img, info) = status(&mut images, &name).await.expect("pulled image");
    assert_eq!(info["imageSpec"]["architecture"], native.as_str());
    assert_eq!(
        std::fs::read_to_string(lower_dirs(&info)[0].join("arch")).unwrap(),
        native
    );
    assert!(
        img.repo_digests[0].starts_with(&format!("{REGISTRY}/e2e/multi@sha256:")),
        "{:?}",
        img.repo_digests
    );
    let m = d.metrics_text().await;
    assert_eq!(
        counter(&m, "carapace_image_blobs_fetched_total"),
        2.0,
        "only this platform's config and layer:\n{m}"
    );
    registry.stop().await;
    d.stop().await;
}

#[tokio::test]
async fn images_sharing_a_base_layer_store_it_once_and_a_repull_fetches_nothing() {
    let registry = Registry::empty().await;
    let base = || vec![Entry::dir("base"), Entry::file("base/file", "shared")];
    for app in ["one", "two"] {
        registry
            .push_crafted(
                &format!("e2e/{app}"),
                &[Platform::native(vec![
                    base(),
                    vec![Entry::file("app", app)],
                ])],
            )
            .await;
    }
    let d = daemon(&registry).await;
    let mut images = d.images().await;
    let fetched = |m: &str| counter(m, "carapace_image_blobs_fetched_total");

    let mut bottoms = Vec::new();
    for app in ["one", "two"] {
        let name = registry.image(&format!("e2e/{app}"), "v1");
        pull(&mut images, &name)
            .await
            .unwrap_or_else(|e| panic!("pull {name}: {e}\n{}", d.log_text()));
        let (_, info) = status(&mut images, &name).await.expect("pulled image");
        let lower = lower_dirs(&info);
        assert_eq!(std::fs::read(lower[0].join("app")).unwrap(), app.as_bytes());
        bottoms.push(lower[1].clone());
    }
    assert_eq!(bottoms[0], bottoms[1], "both images stack the same base");
    assert_eq!(snapshots(&d.config.root()).len(), 3, "base, one, two");
    let m = d.metrics_text().await;
    assert_eq!(
        fetched(&m),
        5.0,
        "3 blobs for one, then its base is reused:\n{m}"
    );
    assert_eq!(counter(&m, "carapace_image_blobs_reused_total"), 1.0, "{m}");

    for app in ["one", "two"] {
        pull(&mut images, &registry.image(&format!("e2e/{app}"), "v1"))
            .await
            .unwrap();
    }
    let m = d.metrics_text().await;
    assert_eq!(fetched(&m), 5.0, "a re-pull fetched blobs:\n{m}");

    // Removing the images leaves nothing.
    for id in image_ids(&mut images).await {
        images
            .remove_image(cri::RemoveImageRequest { image: spec(&id) })
            .await
            .unwrap();
    }
    assert_nothing_stored(&d, &mut images).await;
    registry.stop().await;
    d.stop().await;
}

#[tokio::test]
async fn a_layer_whose_bytes_do_not_match_its_digest_is_refused_and_leaves_nothing() {
    let registry = Registry::start().await;
    // The busybox layer is the largest blob; one byte of it changes, its size does not.
    let layer = registry
        .blob_files()
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&layer).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let d = daemon(&registry).await;
    let mut images = d.images().await;

    let e = pull(&mut images, &Registry::busybox()).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e}");
    assert!(e.message().contains("does not verify"), "{e}");
    assert_nothing_stored(&d, &mut images).await;
    registry.stop().await;
    d.stop().await;
}

#[tokio::test]
async fn hostile_layers_are_refused_and_touch_nothing_outside_the_store() {
    let registry = Registry::empty().await;
    let canary = Canary::new();
    let target = canary.path();
    let mut cases = [
        (
            "traversal",
            vec![Entry::file(
                format!(
                    "{}{}/evil",
                    "../".repeat(16),
                    target.trim_start_matches('/')
                ),
                "x",
            )],
            "`..`",
        ),
        (
            "absolute",
            vec![Entry::file(format!("{target}/evil"), "x")],
            "is absolute",
        ),
        (
            "symlink",
            vec![
                Entry::symlink("escape", target.clone()),
                Entry::file("escape/evil", "x"),
            ],
            "symlink",
        ),
    ];
    for (repo, layer, _) in &mut cases {
        registry
            .push_crafted(
                &format!("e2e/{repo}"),
                &[Platform::native(vec![
                    vec![Entry::file("fine", "a harmless base")],
                    std::mem::take(layer),
                ])],
            )
            .await;
    }
    let d = daemon(&registry).await;
    let mut images = d.images().await;
    for (repo, _, reason) in &cases {
        let e = pull(&mut images, &registry.image(&format!("e2e/{repo}"), "v1"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{repo}: {e}");
        assert!(
            e.message().contains("refused") && e.message().contains(reason),
            "{repo}: {e}"
        );
        canary.assert_untouched();
        assert_nothing_stored(&d, &mut images).await;
    }
    registry.stop().await;
    d.stop().await;
}

#[tokio::test]
async fn image_import_of_oci_and_docker_archives_with_and_without_a_daemon() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    build_layout(&layout, &work.path().join("build"), &[]);
    let oci_tar = work.path().join("oci.tar");
    let docker_tar = work.path().join("docker.tar");
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&oci_tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let out = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!(
            "docker-archive:{}:offline.test/saved:v1",
            docker_tar.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No registry anywhere: the daemon's certs.d is empty.
    let d = Daemon::start().await;
    let admin = d.config.state().join("admin.sock");
    assert_eq!(
        std::fs::metadata(&admin).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let got = imported(&import(
        &d.config,
        &[
            oci_tar.to_str().unwrap(),
            "--base-name",
            "offline.test/layout",
        ],
        None,
    ));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "offline.test/layout:v1");
    let from_stdin = imported(&import(&d.config, &["-"], Some(&docker_tar)));
    assert_eq!(from_stdin[0].0, "offline.test/saved:v1");
    let saved = imported(&import(&d.config, &[docker_tar.to_str().unwrap()], None));
    assert_eq!(saved, from_stdin);
    // One image, two archives: the same ID and the same layer.
    assert_eq!(saved[0].1, got[0].1);

    let mut images = d.images().await;
    assert_eq!(image_ids(&mut images).await, [got[0].1.clone()]);
    for name in ["offline.test/layout:v1", "offline.test/saved:v1"] {
        let (img, info) = status(&mut images, name)
            .await
            .unwrap_or_else(|| panic!("{name} is not listed"));
        assert_eq!(img.id, got[0].1);
        assert_eq!(
            std::fs::read(lower_dirs(&info)[0].join("bin/busybox")).unwrap(),
            std::fs::read("/bin/busybox").unwrap()
        );
    }

    // Not an archive: a clear error and a failed exit, through the daemon.
    let junk = work.path().join("junk.tar");
    std::fs::write(&junk, vec![b'x'; 2048]).unwrap();
    let out = import(&d.config, &[junk.to_str().unwrap()], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.tar"), "{err}");

    // With the daemon stopped, the command imports into the root itself.
    let (_, cfg) = d.stop_keeping_config().await;
    let offline = imported(&import(
        &cfg,
        &[
            oci_tar.to_str().unwrap(),
            "--base-name",
            "offline.test/later",
        ],
        None,
    ));
    assert_eq!(
        offline[0],
        ("offline.test/later:v1".to_owned(), got[0].1.clone())
    );
    let out = import(&cfg, &[junk.to_str().unwrap()], None);
    assert!(!out.status.success());
    let d = Daemon::start_with(cfg).await;
    let mut images = d.images().await;
    let (mut img, _) = status(&mut images, "offline.test/later:v1")
        .await
        .expect("the offline import is listed");
    img.repo_tags.sort();
    assert_eq!(
        img.repo_tags,
        [
            "offline.test/later:v1",
            "offline.test/layout:v1",
            "offline.test/saved:v1"
        ]
    );
    d.stop().await;
}
