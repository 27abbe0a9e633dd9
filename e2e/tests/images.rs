//! The image service against a real registry on loopback: Debian's `docker-registry`, filled by
//! `skopeo` from an OCI layout that the test builds out of `/bin/busybox`, reached through a
//! `hosts.toml` in the daemon's private `certs.d`. Pull (OCI and Docker formats), list, status,
//! re-pull without fetching, remove with garbage collection, and the error codes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carapace_e2e::registry::{REGISTRY, Registry};
use carapace_e2e::{Daemon, cri};
use tonic::Code;

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

#[tokio::test]
async fn pull_list_status_repull_and_remove_through_the_cri() {
    let registry = Registry::start().await;
    let d = daemon(&registry).await;
    let mut images = d.images().await;
    let name = format!("{REGISTRY}/e2e/busybox:v1");

    let pulled = images
        .pull_image(cri::PullImageRequest {
            image: spec(&name),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pull: {e}\n{}", d.log_text()))
        .into_inner();
    assert!(
        pulled.image_ref.starts_with("sha256:"),
        "{}",
        pulled.image_ref
    );
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
    assert_eq!(list[0].id, pulled.image_ref);
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
    assert_eq!(status.image.as_ref().unwrap().id, pulled.image_ref);
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
    images
        .pull_image(cri::PullImageRequest {
            image: spec(&name),
            ..Default::default()
        })
        .await
        .unwrap();
    let docker = images
        .pull_image(cri::PullImageRequest {
            image: spec(&format!("{REGISTRY}/e2e/busybox:docker")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
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
                image: spec(&docker.image_ref),
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
        let e = images
            .pull_image(cri::PullImageRequest {
                image: spec(bad),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {e}");
    }
    let e = images
        .pull_image(cri::PullImageRequest {
            image: spec(&format!("{REGISTRY}/e2e/nothing:here")),
            ..Default::default()
        })
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
        let r = images
            .pull_image(cri::PullImageRequest {
                image: spec(&name),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("pull: {e}\n{}", d.log_text()))
            .into_inner();
        times.push(t.elapsed());
        let t = Instant::now();
        images
            .pull_image(cri::PullImageRequest {
                image: spec(&name),
                ..Default::default()
            })
            .await
            .unwrap();
        let again = t.elapsed();
        let size = images
            .image_status(cri::ImageStatusRequest {
                image: spec(&r.image_ref),
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
    nix::sys::signal::kill(d.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = pull.await;
    // The config moves to the new daemon; the dead one's Drop reaps it.
    let cfg = std::mem::take(&mut d.config);
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
