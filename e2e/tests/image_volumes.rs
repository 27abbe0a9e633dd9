//! Image volumes (CRI `Mount.image`, KEP-4639) over the socket: an image's layers mounted
//! read-only in a container, whole or one path of it (`image_sub_path`); sub paths that leave the
//! image or do not exist refused by CreateContainer; the image's layers kept while a container
//! mounts it (through RemoveImage and a daemon restart) and collected once it is removed. Each test
//! has its own daemon and `PodNetwork` index (230..232), and removes what it made; `Node::finish`
//! checks no mount is left.

use std::path::{Path, PathBuf};

use carapace_e2e::cri;
use carapace_e2e::node::{Node, container, security};
use carapace_e2e::registry::{Entry, Platform, REGISTRY};

fn uid(index: u8) -> String {
    format!("1a6e0000-0000-4000-8000-{index:012}")
}

/// Pushes and pulls `e2e/<repo>:v1`, two layers: the top one overrides `data/hello.txt`; symlinks
/// lead inside the image (`inside`), out of it by an absolute target (`abs`) and by `..` above
/// its root (`up`). Returns the image ref PullImage answered, as the kubelet passes it.
async fn volume_image(n: &Node, repo: &str) -> String {
    let bottom = vec![
        Entry::dir("data"),
        Entry::file("data/hello.txt", "from the bottom layer"),
        Entry::file("data/base.txt", "base"),
    ];
    let top = vec![
        Entry::file("data/hello.txt", "hello"),
        Entry::symlink("inside", "data"),
        Entry::symlink("abs", "/data"),
        Entry::symlink("up", "../../../etc"),
    ];
    n.registry
        .push_crafted(repo, &[Platform::native(vec![bottom, top])])
        .await;
    n.pull_image(&format!("{REGISTRY}/{repo}:v1")).await
}

fn volume(container_path: &str, image: &str, sub_path: &str) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

/// `sh -c script` in the container: (exit code, stdout, stderr).
async fn sh(n: &mut Node, id: &str, script: &str) -> (i32, String, String) {
    let r = n
        .exec_sync(id, &["sh", "-c", script], 10)
        .await
        .unwrap_or_else(|e| panic!("ExecSync {script:?}: {e}"));
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

fn snapshots(root: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(root.join("snapshots"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    s.sort();
    s
}

#[tokio::test]
async fn an_image_volume_and_its_sub_paths_are_mounted_read_only() {
    let (mut n, pod, pod_id) = Node::with_running_pod(230, "ivol", &uid(230)).await;
    let image = volume_image(&n, "e2e/vol").await;
    let mut c = container("reader", &["sleep", "3600"]);
    // Privileged, so even a remount is in its power: the volume must stay read-only anyway.
    security(&mut c).privileged = true;
    c.mounts = vec![
        volume("/vol", &image, ""),
        volume("/sub", &image, "data"),
        volume("/file", &image, "data/hello.txt"),
        volume("/linked", &image, "inside/"),
    ];
    let id = n.create_started(&pod_id, &pod, &c).await;

    // The layers stacked, the top one winning; a sub path is that directory or file alone.
    let (code, out, err) = sh(
        &mut n,
        &id,
        "cat /vol/data/hello.txt /vol/data/base.txt /sub/hello.txt /file /linked/base.txt; \
         ls /sub",
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "hellobasehellohellobasebase.txt\nhello.txt\n");

    for target in ["/vol/new", "/vol/data/hello.txt", "/sub/new", "/file"] {
        let (code, _, err) = sh(&mut n, &id, &format!("echo x > {target}")).await;
        assert_ne!(code, 0, "writing {target} succeeded");
        assert!(err.contains("Read-only file system"), "{target}: {err}");
    }
    // An overlay without an upper layer cannot become writable: the remount fails, and writes
    // still do.
    let (code, _, err) = sh(&mut n, &id, "mount -o remount,rw /vol").await;
    assert_ne!(code, 0, "remounting /vol read-write succeeded: {err}");
    let (code, _, err) = sh(&mut n, &id, "echo x > /vol/new").await;
    assert!(code != 0 && err.contains("Read-only file system"), "{err}");

    // ContainerStatus shows the mounts as the kubelet gave them.
    let (st, _) = n.status(&id).await;
    let sub = st
        .mounts
        .iter()
        .find(|m| m.container_path == "/sub")
        .expect("/sub in the status");
    assert_eq!(sub.image.as_ref().map(|i| i.image.as_str()), Some(&*image));
    assert_eq!(sub.image_sub_path, "data");
    assert!(sub.readonly && sub.host_path.is_empty());

    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn image_volume_sub_paths_that_leave_the_image_or_are_missing_are_refused() {
    let (mut n, pod, pod_id) = Node::with_running_pod(231, "ivolbad", &uid(231)).await;
    let image = volume_image(&n, "e2e/volbad").await;
    for (sub, says) in [
        ("missing", "does not exist"),
        ("data/missing/x", "does not exist"),
        ("data/hello.txt/x", "does not exist"),
        ("../etc", "`..`"),
        ("data/../../etc", "`..`"),
        ("/etc", "absolute"),
        ("abs", "leads out of the image"),
        ("up", "leads out of the image"),
    ] {
        let mut c = container("bad", &["sleep", "3600"]);
        c.mounts = vec![volume("/vol", &image, sub)];
        let e = n
            .create(&pod_id, &pod, &c)
            .await
            .expect_err(&format!("sub path {sub:?} accepted"));
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{sub:?}: {e}");
        assert!(e.message().contains(says), "{sub:?}: {e}");
    }
    // An image that was not pulled: NotFound, naming it.
    let missing = format!("sha256:{}", "0".repeat(64));
    let mut c = container("bad", &["sleep", "3600"]);
    c.mounts = vec![volume("/vol", &missing, "")];
    let e = n.create(&pod_id, &pod, &c).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    assert!(e.message().contains(&missing), "{e}");
    // A host path and an image at once.
    let mut both = volume("/vol", &image, "");
    both.host_path = "/tmp".into();
    c.mounts = vec![both];
    let e = n.create(&pod_id, &pod, &c).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");

    // Nothing of the refused creates is left, and the name is free for a good one.
    assert!(n.list(cri::ContainerFilter::default()).await.is_empty());
    c.mounts = vec![volume("/vol", &image, "data")];
    let id = n.create_started(&pod_id, &pod, &c).await;
    let (code, out, err) = sh(&mut n, &id, "cat /vol/hello.txt").await;
    assert_eq!((code, out.as_str()), (0, "hello"), "{err}");
    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn an_image_volume_keeps_its_image_while_mounted_and_lets_it_go_after() {
    let (mut n, pod, pod_id) = Node::with_running_pod(232, "ivolgc", &uid(232)).await;
    let root = n.d.config.root();
    let before = snapshots(&root);
    let image = volume_image(&n, "e2e/volgc").await;
    let layers: Vec<PathBuf> = snapshots(&root)
        .into_iter()
        .filter(|s| !before.contains(s))
        .collect();
    assert_eq!(layers.len(), 2, "{layers:?}");
    let mut c = container("user", &["sleep", "3600"]);
    c.mounts = vec![volume("/vol", &image, "")];
    let id = n.create_started(&pod_id, &pod, &c).await;

    // Removed while mounted: the image is gone from the list, its layers stay for the container.
    let mut images = n.d.images().await;
    let spec = Some(cri::ImageSpec {
        image: image.clone(),
        ..Default::default()
    });
    images
        .remove_image(cri::RemoveImageRequest { image: spec })
        .await
        .unwrap();
    let listed = images.list_images(cri::ListImagesRequest::default()).await;
    let listed = listed.unwrap().into_inner().images;
    assert!(listed.iter().all(|i| i.id != image), "{listed:?}");
    assert!(layers.iter().all(|l| l.exists()), "layers collected");
    let (code, out, err) = sh(&mut n, &id, "cat /vol/data/hello.txt").await;
    assert_eq!((code, out.as_str()), (0, "hello"), "{err}");

    // Still so after the daemon is killed and started again (which collects at start).
    n.d = n.d.kill_and_restart().await;
    n.rt = n.d.runtime().await;
    assert!(layers.iter().all(|l| l.exists()), "layers collected");
    let (code, out, err) = sh(&mut n, &id, "cat /vol/data/base.txt").await;
    assert_eq!((code, out.as_str()), (0, "base"), "{err}");

    // Once the container is removed, nothing holds them.
    n.stop_container(&id, 0).await;
    n.remove_container(&id).await;
    assert!(layers.iter().all(|l| !l.exists()), "layers kept");
    n.remove_all(&pod_id).await;
}
