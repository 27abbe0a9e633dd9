//! Image identity as cri-api v0.36 states it, over the socket: `Image.id`,
//! `PullImageResponse.image_ref`, `ContainerStatus.image_id` and `Container.image_id` are one
//! value; a container's `ImageSpec.image_ref` (that value) names its image; RemoveImage by one tag
//! removes the image under every tag. Each test has its own daemon and `PodNetwork` index
//! (220..222), and removes what it made.

use carapace_e2e::cri;
use carapace_e2e::node::{Node, container};
use carapace_e2e::registry::{REGISTRY, Registry};

fn uid(index: u8) -> String {
    format!("c0360000-0000-4000-8000-{index:012}")
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// The image `name` names, as ImageStatus answers (None: not there).
async fn image_status(n: &Node, name: &str) -> Option<cri::Image> {
    n.d.images()
        .await
        .image_status(cri::ImageStatusRequest {
            image: spec(name),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
}

async fn list_images(n: &Node) -> Vec<cri::Image> {
    n.d.images()
        .await
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images
}

#[tokio::test]
async fn an_image_removed_by_one_tag_is_gone_under_every_tag() {
    let n = Node::start(220).await;
    // The busybox image under a second tag: the same manifest, so the same image.
    let out = tokio::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{}/e2e/busybox:v1", n.registry.addr))
        .arg(format!("docker://{}/e2e/again:two", n.registry.addr))
        .output()
        .await
        .expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (one, two) = (Registry::busybox(), format!("{REGISTRY}/e2e/again:two"));
    let id = n.pull_image(&one).await;
    assert_eq!(n.pull_image(&two).await, id);
    let mut img = image_status(&n, &two).await.expect("pulled");
    img.repo_tags.sort();
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, [two.clone(), one.clone()]);

    n.d.images()
        .await
        .remove_image(cri::RemoveImageRequest { image: spec(&one) })
        .await
        .unwrap();
    assert_eq!(image_status(&n, &one).await, None);
    assert_eq!(image_status(&n, &two).await, None, "the other tag stayed");
    assert_eq!(image_status(&n, &id).await, None);
    assert_eq!(list_images(&n).await, []);
    // Again by the other tag, and by id: nothing there is no error.
    for name in [&two, &id] {
        n.d.images()
            .await
            .remove_image(cri::RemoveImageRequest { image: spec(name) })
            .await
            .unwrap();
    }
    n.finish().await;
}

#[tokio::test]
async fn the_image_id_is_one_value_everywhere_and_image_ref_names_the_image() {
    let uid = uid(221);
    let (mut n, pod, pod_id) = Node::with_running_pod(221, "ident", &uid).await;
    let pulled = n.pull_image(&Registry::busybox()).await;
    assert!(pulled.starts_with("sha256:"), "{pulled}");
    let images = list_images(&n).await;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, pulled);

    // As a kubelet 1.36 sends it: the name the pod asked for and the id PullImage answered.
    // The name is one this node does not hold; the id decides.
    let mut c = container("byref", &["sleep", "3600"]);
    c.image = Some(cri::ImageSpec {
        image: format!("{REGISTRY}/e2e/busybox:not-pulled"),
        image_ref: pulled.clone(),
        ..Default::default()
    });
    let id = match n.create(&pod_id, &pod, &c).await {
        Ok(id) => id,
        Err(e) => panic!("CreateContainer with image_ref: {e}"),
    };
    n.start_container(&id).await;
    let plain = n
        .create_started(&pod_id, &pod, &container("plain", &["sleep", "3600"]))
        .await;
    for cid in [&id, &plain] {
        let (st, _) = n.status(cid).await;
        assert_eq!(st.image_id, pulled, "ContainerStatus.image_id");
        let listed = n
            .list(cri::ContainerFilter {
                id: cid.to_string(),
                ..Default::default()
            })
            .await;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].image_id, pulled, "Container.image_id");
    }

    // Neither a name nor an id: refused.
    let mut none = container("none", &["true"]);
    none.image = spec("");
    let e = n.create(&pod_id, &pod, &none).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    n.remove_all(&pod_id).await;
}
