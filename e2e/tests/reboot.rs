//! A reboot of the node under the daemon: the state dir (a tmpfs on a node) comes back empty
//! while the root dir keeps the images, the pods' records and the CNI cache, and host-local keeps
//! its leases. The daemon must report the pods it had as NOTREADY, so the kubelet stops and
//! removes them, and their stop must release what their CNI ADD took. Pod-network index 120.

use std::path::Path;

use carapace_e2e::cri;
use carapace_e2e::node::{Node, container};

const INDEX: u8 = 120;

/// Every path under `dir` whose name contains `id`.
fn paths_naming(dir: &Path, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().contains(id) {
            found.push(path.display().to_string());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(paths_naming(&path, id));
        }
    }
    found
}

/// The host-side interfaces enslaved to the test's bridge: one veth per pod attached to it.
fn bridge_ports(bridge: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("running ip");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_reboot_leaves_the_pods_notready_and_their_stop_releases_their_leases() {
    let mut n = Node::start(INDEX).await;
    let root = n.d.config.root();
    let bridge = format!("cre2e{INDEX}");
    let uid = format!("7e1b0070-0000-4000-8000-{INDEX:012}");
    let pod = n.pod("booted", &uid);
    let pod_id = n.run_pod(&pod).await;
    let (status, _) = n.d.pod_status(&pod_id).await;
    let ip = status.network.expect("a pod network status").ip;
    let lease = format!("/var/lib/cni/networks/carapace-e2e-{INDEX}/{ip}");
    assert!(Path::new(&lease).exists(), "no lease {lease} after the run");
    let ctr = n
        .create_started(&pod_id, &pod, &container("sleeper", &["sleep", "3600"]))
        .await;
    assert!(
        !paths_naming(&root, &ctr).is_empty(),
        "the container's writable layer is under the root dir"
    );

    n.simulate_reboot().await;

    // The pod is still there, NOTREADY, as the kubelet needs it to stop and remove it; its
    // container's record went with the state dir.
    let pods = n.d.pods().await;
    assert_eq!(pods.len(), 1, "pods after the reboot: {pods:?}");
    assert_eq!(pods[0].id, pod_id);
    assert_eq!(pods[0].state, cri::PodSandboxState::SandboxNotready as i32);
    assert_eq!(pods[0].metadata, pod.metadata);
    assert_eq!(pods[0].labels, pod.labels);
    let (status, _) = n.d.pod_status(&pod_id).await;
    assert_eq!(status.state, cri::PodSandboxState::SandboxNotready as i32);
    let ctrs = n.list(cri::ContainerFilter::default()).await;
    assert!(ctrs.is_empty(), "containers after the reboot: {ctrs:?}");
    assert!(
        paths_naming(&root, &ctr).is_empty(),
        "the writable layer of a container the reboot ended is left: {:?}",
        paths_naming(&root, &ctr)
    );
    // The reboot took the namespace and its veth, not host-local's lease.
    assert_eq!(bridge_ports(&bridge), "", "a veth outlived the reboot");
    assert!(
        Path::new(&lease).exists(),
        "the lease {lease} is gone before any DEL"
    );

    // What a DEL needs outlived the reboot under the root dir: the pod's record and its ADD.
    let kept = [
        root.join(format!("sandboxes/{pod_id}.json")),
        root.join(format!("cni/results/carapace-e2e-{INDEX}-{pod_id}-eth0")),
    ];
    for p in &kept {
        assert!(p.exists(), "{} is gone", p.display());
    }

    // What the kubelet does with a NOTREADY pod: StopPodSandbox, RemovePodSandbox.
    n.remove_pod(&pod_id).await;
    assert!(
        !Path::new(&lease).exists(),
        "the lease {lease} of the rebooted pod leaked"
    );
    let left = paths_naming(&root, &pod_id);
    assert!(
        left.is_empty(),
        "left of the pod under the root dir: {left:?}"
    );
    assert!(n.d.pods().await.is_empty());

    // The node runs pods again, and the kubelet's new attempt gets an address.
    let again = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            attempt: 1,
            ..pod.metadata.clone().expect("metadata")
        }),
        ..pod.clone()
    };
    let new_id = n.run_pod(&again).await;
    assert_ne!(new_id, pod_id);
    let (status, _) = n.d.pod_status(&new_id).await;
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    assert!(!status.network.expect("a pod network status").ip.is_empty());
    let c = n
        .create_started(&new_id, &again, &container("sleeper", &["sleep", "3600"]))
        .await;
    let (st, _) = n.status(&c).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    n.stop_container(&c, 0).await;
    n.remove_container(&c).await;
    n.remove_pod(&new_id).await;
    assert_eq!(bridge_ports(&bridge), "", "a veth is left");
    let leases: Vec<_> = std::fs::read_dir(format!("/var/lib/cni/networks/carapace-e2e-{INDEX}"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .map(|e| e.path())
        .collect();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    n.finish().await;
}
