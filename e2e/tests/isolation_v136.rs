//! Isolation a Kubernetes 1.36 node asks of its runtime, through the real daemon: recursive
//! read-only volumes (a volume's submounts read-only too) and the Strict supplemental groups
//! policy (none of the image's `/etc/group`), with the identity `ContainerStatus.user` reports.
//! Every test removes what it made and ends with `Node::finish`, which checks that nothing is
//! left.

use std::path::Path;

use carapace_e2e::node::{
    Node, container, log_until, security, share_pid_namespace, shared_pid_container, stdout_of,
};
use carapace_e2e::{cri, mounts_under};
use tonic::Code;

/// The default handler's features and the runtime's, as `Status` reports them.
async fn features(n: &mut Node) -> (cri::RuntimeHandlerFeatures, cri::RuntimeFeatures) {
    let st =
        n.rt.status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    let handler = st
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .and_then(|h| h.features)
        .expect("the default handler's features");
    (handler, st.features.expect("the runtime's features"))
}

fn volume(host: &Path, readonly: bool, recursive: bool) -> cri::Mount {
    cri::Mount {
        container_path: "/mnt".into(),
        host_path: host.display().to_string(),
        readonly,
        recursive_read_only: recursive,
        ..Default::default()
    }
}

/// A volume whose host directory has a tmpfs mounted below it, as critest makes it: read-only
/// asks for the volume's own mount alone, so the tmpfs stays writable; recursive read-only makes
/// it read-only too. Asked without `readonly`, or with a propagation that could bring in a
/// writable submount later, it is refused, as the CRI says.
#[tokio::test]
async fn a_recursive_read_only_volume_is_read_only_down_to_its_submounts() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let (mut n, pod, pod_id) =
        Node::with_running_pod(210, "rro", "0d1e2f30-0000-4000-8000-000000000210").await;
    let (handler, _) = features(&mut n).await;
    assert!(handler.recursive_read_only_mounts, "{handler:?}");

    let vol = n.d.config.dir().join("vols/rro");
    let sub = vol.join("tmpfs");
    std::fs::create_dir_all(&sub).unwrap();
    mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();

    let mut rro = container("rro", &["sleep", "1000"]);
    rro.mounts = vec![volume(&vol, true, true)];
    let rro_id = n.create_started(&pod_id, &pod, &rro).await;
    let mut ro = container("ro", &["sleep", "1000"]);
    ro.mounts = vec![volume(&vol, true, false)];
    let ro_id = n.create_started(&pod_id, &pod, &ro).await;

    let touch = |f: &str| ["sh", "-c", &format!("touch {f} 2>&1")].map(str::to_owned);
    for (id, f, writable) in [
        (&rro_id, "/mnt/tmpfs/from-rro", false),
        (&rro_id, "/mnt/from-rro", false),
        (&ro_id, "/mnt/tmpfs/from-ro", true),
        (&ro_id, "/mnt/from-ro", false),
    ] {
        let cmd = touch(f);
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let r = n.exec_sync(id, &cmd, 5).await.unwrap();
        let out = String::from_utf8_lossy(&r.stdout);
        if writable {
            assert_eq!(r.exit_code, 0, "touch {f}: {out}");
        } else {
            assert_ne!(r.exit_code, 0, "touch {f} succeeded");
            assert!(out.contains("Read-only file system"), "touch {f}: {out}");
        }
    }
    // Only the writable one reached the host's tmpfs.
    assert!(sub.join("from-ro").exists());
    assert!(!sub.join("from-rro").exists());
    let (st, _) = n.status(&rro_id).await;
    assert!(
        st.mounts
            .iter()
            .any(|m| m.container_path == "/mnt" && m.readonly && m.recursive_read_only),
        "{:?}",
        st.mounts
    );

    // Refused at create, as the CRI says: without readonly, or not private.
    let mut bad = container("bad", &["true"]);
    bad.mounts = vec![volume(&vol, false, true)];
    let e = n.create(&pod_id, &pod, &bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    for p in [
        cri::MountPropagation::PropagationHostToContainer,
        cri::MountPropagation::PropagationBidirectional,
    ] {
        let mut bad = container("bad", &["true"]);
        bad.mounts = vec![cri::Mount {
            propagation: p as i32,
            ..volume(&vol, true, true)
        }];
        security(&mut bad).privileged = true;
        let e = n.create(&pod_id, &pod, &bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{p:?}: {e}");
    }

    n.stop_container(&rro_id, 0).await;
    n.stop_container(&ro_id, 0).await;
    umount2(&sub, MntFlags::MNT_DETACH).unwrap();
    assert!(mounts_under(&vol).is_empty());
    n.remove_all(&pod_id).await;
}

/// The image's user 1000 is listed in its `/etc/group` as a member of group 50000 (critest's
/// `test-image-predefined-group` has the same). Merge, the default, gives it that group beside
/// the pod's; Strict leaves it out. `ContainerStatus.user` says which groups the process has.
#[tokio::test]
async fn strict_supplemental_groups_leave_out_the_images_groups() {
    let mut n = Node::start(211).await;
    let (_, runtime) = features(&mut n).await;
    assert!(runtime.supplemental_groups_policy, "{runtime:?}");
    n.registry
        .push_with_files(
            "e2e/groups",
            &[
                (
                    "/etc/passwd",
                    "root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n",
                ),
                (
                    "/etc/group",
                    "root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n",
                ),
            ],
        )
        .await;
    let image = format!("{}/e2e/groups:v1", carapace_e2e::registry::REGISTRY);
    n.pull_image(&image).await;
    let pod = n.pod("groups", "0d1e2f30-0000-4000-8000-000000000211");
    let pod_id = n.run_pod(&pod).await;

    let sorted = |s: &str| {
        let mut g: Vec<i64> = s.split_whitespace().map(|g| g.parse().unwrap()).collect();
        g.sort_unstable();
        g.dedup();
        g
    };
    for (name, policy, want) in [
        (
            "merge",
            cri::SupplementalGroupsPolicy::Merge,
            vec![1000, 1234, 50000],
        ),
        (
            "strict",
            cri::SupplementalGroupsPolicy::Strict,
            vec![1000, 1234],
        ),
    ] {
        let mut c = container(name, &["sh", "-c", "id -G; sleep 1000"]);
        c.image.as_mut().unwrap().image = image.clone();
        let sc = security(&mut c);
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
        sc.supplemental_groups = vec![1234];
        sc.supplemental_groups_policy = policy as i32;
        let id = n.create_started(&pod_id, &pod, &c).await;
        let log = n.log_path(&id).await;
        let lines = log_until(&log, "id -G", |l| l.1 == "stdout").await;
        assert_eq!(sorted(&stdout_of(&lines)), want, "{name}: {lines:?}");
        let r = n.exec_sync(&id, &["id", "-G"], 5).await.unwrap();
        assert_eq!(
            sorted(&String::from_utf8_lossy(&r.stdout)),
            want,
            "{name}: exec {r:?}"
        );
        let user = |st: cri::ContainerStatus| {
            let u = st.user.and_then(|u| u.linux).expect("ContainerStatus.user");
            let mut groups = u.supplemental_groups.clone();
            groups.sort_unstable();
            (u.uid, u.gid, groups)
        };
        // Running: what the kernel says the process has.
        let (st, _) = n.status(&id).await;
        assert_eq!(user(st), (1000, 1000, want.clone()), "{name}");
        // Exited: what it was given.
        n.stop_container(&id, 0).await;
        let (st, _) = n.status(&id).await;
        assert_eq!(user(st), (1000, 1000, want.clone()), "{name} exited");
    }
    n.remove_all(&pod_id).await;
}

/// The pod-level policy, as the kubelet sends it for `supplementalGroupsPolicy` (it copies it
/// into each container's security context too, where it takes effect): Merge and Strict are
/// taken, any other value is refused with nothing left behind, as the container-level field is.
/// With no pause container the pod's only process of its own is the infra process of a shared
/// PID namespace, which runs no pod user: it holds no supplementary group, not the daemon's
/// (root's) either, so a container sees none on `/proc/1`.
#[tokio::test]
async fn a_pods_supplemental_groups_policy_is_checked_and_its_infra_holds_no_group() {
    let mut n = Node::start(7).await;
    let uid = "0d1e2f30-0000-4000-8000-000000000007";
    let with_policy = |pod: &mut cri::PodSandboxConfig, policy: i32| {
        let sc = pod
            .linux
            .get_or_insert_default()
            .security_context
            .get_or_insert_default();
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
        sc.supplemental_groups = vec![1234];
        sc.supplemental_groups_policy = policy;
    };

    let mut bad = n.pod("badpolicy", uid);
    with_policy(&mut bad, 7);
    let e =
        n.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("supplemental_groups_policy"), "{e}");
    assert!(n.d.pods().await.is_empty());

    for (name, policy) in [
        ("mergepod", cri::SupplementalGroupsPolicy::Merge),
        ("strictpod", cri::SupplementalGroupsPolicy::Strict),
    ] {
        let mut pod = n.pod(name, uid);
        share_pid_namespace(&mut pod);
        with_policy(&mut pod, policy as i32);
        let pod_id = n.run_pod(&pod).await;
        let id = n
            .create_started(
                &pod_id,
                &pod,
                &shared_pid_container("c", &["sleep", "1000"]),
            )
            .await;
        let r = n
            .exec_sync(&id, &["cat", "/proc/1/status"], 5)
            .await
            .unwrap();
        let status = String::from_utf8_lossy(&r.stdout);
        let groups = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .unwrap_or_else(|| panic!("{name}: no Groups in /proc/1/status: {r:?}"));
        assert_eq!(groups.trim(), "", "{name}: the infra process's groups");
        n.stop_container(&id, 0).await;
        n.remove_container(&id).await;
        n.remove_pod(&pod_id).await;
    }
    n.finish().await;
}
