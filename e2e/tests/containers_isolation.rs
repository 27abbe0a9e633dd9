//! Containers kept apart and held to their limits, through the real daemon as in
//! `containers.rs`: memory and pids limits and a resources update, user, groups, capabilities
//! and seccomp, a stop timeout for a container that ignores SIGTERM, copy-on-write writes that
//! stay in their container, and mount propagation between a volume and the host. Every test
//! removes what it made and ends with `Node::finish`, which checks that no container, pod,
//! cgroup, mount or process is left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carapace_e2e::node::{
    Node, container, dirs_below, hugepage_sizes, log_until, resources, security, stdout_of,
};
use carapace_e2e::{cri, eventually, mounts_under};
use tonic::Code;

/// A v1 cgroup directory of `pod` (cgroupfs driver, as the pod's `cgroup_parent` names it), or of
/// its container `id`.
fn cgroup_dir(controller: &str, pod: &cri::PodSandboxConfig, id: Option<&str>) -> PathBuf {
    let parent = &pod.linux.as_ref().unwrap().cgroup_parent;
    let dir = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(parent.trim_start_matches('/'));
    match id {
        Some(id) => dir.join(id),
        None => dir,
    }
}

#[tokio::test]
async fn memory_and_pids_limits_hold_and_an_update_changes_the_memory_limit() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(50, "limits", "0d1e2f30-0000-4000-8000-000000000050").await;

    // Over its memory limit: the kernel's OOM killer, reported as OOMKilled.
    let mut hog = container("hog", &["sh", "-c", "a=x; while true; do a=$a$a; done"]);
    resources(&mut hog).memory_limit_in_bytes = 32 << 20;
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &hog).await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (137, "OOMKilled"),
        "{st:?}\n{lines:?}"
    );

    // UpdateContainerResources: the container's memory cgroup follows, and so does its status.
    let mut sleeper = container("sleeper", &["sleep", "1000"]);
    resources(&mut sleeper).memory_limit_in_bytes = 32 << 20;
    let sleeper_id = n.create_started(&pod_id, &pod, &sleeper).await;
    let limit_file = cgroup_dir("memory", &pod, Some(&sleeper_id)).join("memory.limit_in_bytes");
    let limit = || {
        std::fs::read_to_string(&limit_file)
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(limit(), (32 << 20).to_string());
    n.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: sleeper_id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", n.d.log_text()));
    assert_eq!(limit(), (64 << 20).to_string());
    let (st, _) = n.status(&sleeper_id).await;
    let shown = st
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.memory_limit_in_bytes);
    assert_eq!(shown, Some(64 << 20));
    n.stop_container(&sleeper_id, 0).await;

    // The CRI has no per-container pids limit: the kubelet puts its podPidsLimit on the pod's
    // cgroup. Set that way, it holds for the container in it: a fork loop stops at the limit.
    std::fs::write(cgroup_dir("pids", &pod, None).join("pids.max"), "10").unwrap();
    let forker = container(
        "forker",
        &[
            "sh",
            "-c",
            "i=0; while true; do sleep 1000 & i=$((i+1)); echo $i; done",
        ],
    );
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &forker).await;
    let forked = lines
        .iter()
        .filter(|l| l.1 == "stdout")
        .filter_map(|l| l.3.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    assert!(
        forked > 0 && forked < 10,
        "{forked} processes forked under a pids limit of 10"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.1 == "stderr" && l.3.contains("can't fork")),
        "{lines:?}"
    );
    assert_ne!(st.exit_code, 0, "{st:?}");

    n.remove_all(&pod_id).await;
}

/// The kubelet sends a hugepage limit for every page size the kernel has with every container
/// (limit 0 for a pod that asks for none). On a node without the hugetlb controller mounted (this
/// one: the kernel has it, attached to the unused cgroup2 mount) they were refused whole with an
/// Internal "subsystems is empty", and no kubelet container could start. Skipped now, as runc and
/// containerd skip them; where the controller is mounted, they are applied.
#[tokio::test]
async fn the_kubelets_hugepage_limits_do_not_stop_a_container() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(57, "hugepages", "0d1e2f30-0000-4000-8000-000000000057").await;
    let sizes = hugepage_sizes();
    let mut c = container("huge", &["echo", "ran"]);
    resources(&mut c).hugepage_limits = sizes
        .iter()
        .map(|s| cri::HugepageLimit {
            page_size: s.clone(),
            limit: 0,
        })
        .collect();
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &c).await;
    assert_eq!(
        (st.exit_code, stdout_of(&lines).as_str()),
        (0, "ran"),
        "hugepage limits {sizes:?}: {lines:?}"
    );
    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn user_groups_capabilities_and_seccomp_apply_as_asked() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(51, "identity", "0d1e2f30-0000-4000-8000-000000000051").await;

    let mut user = container("user", &["id"]);
    let sc = security(&mut user);
    sc.run_as_user = Some(cri::Int64Value { value: 1000 });
    sc.run_as_group = Some(cri::Int64Value { value: 3000 });
    sc.supplemental_groups = vec![4000, 5000];
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &user).await;
    let id = stdout_of(&lines);
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert!(id.contains("uid=1000") && id.contains("gid=3000"), "{id}");
    let groups = id.split("groups=").nth(1).unwrap_or_default();
    assert!(groups.contains("4000") && groups.contains("5000"), "{id}");

    // NET_RAW (bit 13) and CHOWN (bit 0) dropped, KILL (bit 5) kept from the default set.
    let mut capped = container("caps", &["cat", "/proc/self/status"]);
    security(&mut capped).capabilities = Some(cri::Capability {
        drop_capabilities: vec!["NET_RAW".into(), "CAP_CHOWN".into()],
        ..Default::default()
    });
    let (_, _, lines) = n.run_to_exit(&pod_id, &pod, &capped).await;
    let status = stdout_of(&lines);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let mask = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{set}:")))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or_else(|| panic!("no {set} in {status}"));
        assert_eq!(
            mask & (1 << 13 | 1),
            0,
            "{set} {mask:x} has a dropped capability"
        );
        assert_ne!(mask & (1 << 5), 0, "{set} {mask:x} lacks CAP_KILL");
    }
    // No signal ignored: the runtime's own (Rust ignores SIGPIPE, bit 12; a daemon started in a
    // shell's background job SIGINT and SIGQUIT) must not reach the container through execve.
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    assert_eq!(ignored, Some(0), "{status}");

    // Docker's default profile refuses unshare(2) to a container without CAP_SYS_ADMIN; the
    // kernel alone lets root make a user namespace, as the unconfined container shows.
    let probe = [
        "sh",
        "-c",
        "unshare -U true && echo unshare=ok || echo unshare=refused",
    ];
    let mut outcome = HashMap::new();
    for (name, profile) in [
        (
            "confined",
            cri::security_profile::ProfileType::RuntimeDefault,
        ),
        ("unconfined", cri::security_profile::ProfileType::Unconfined),
    ] {
        let mut c = container(name, &probe);
        security(&mut c).seccomp = Some(cri::SecurityProfile {
            profile_type: profile as i32,
            ..Default::default()
        });
        let (_, _, lines) = n.run_to_exit(&pod_id, &pod, &c).await;
        outcome.insert(name, (stdout_of(&lines), lines));
    }
    assert_eq!(
        outcome["unconfined"].0, "unshare=ok",
        "{:?}",
        outcome["unconfined"]
    );
    assert_eq!(
        outcome["confined"].0, "unshare=refused",
        "{:?}",
        outcome["confined"]
    );
    assert!(
        outcome["confined"]
            .1
            .iter()
            .any(|l| l.1 == "stderr" && l.3.contains("Operation not permitted")),
        "{:?}",
        outcome["confined"]
    );

    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn sigterm_ignored_is_killed_after_the_timeout_and_writes_stay_in_their_container() {
    let mut n = Node::start(52).await;
    // An image whose top layer holds a file of its own.
    let data = tempfile::Builder::new()
        .prefix("carapace-e2e-cow.")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::write(data.path().join("f"), "image\n").unwrap();
    n.registry
        .push("e2e/cow", &[data.path().to_str().unwrap()])
        .await;
    let cow_image = format!("{}/e2e/cow:v1", carapace_e2e::registry::REGISTRY);
    n.pull_image(&cow_image).await;
    let pod = n.pod("sigterm", "0d1e2f30-0000-4000-8000-000000000052");
    let pod_id = n.run_pod(&pod).await;

    let stubborn = container(
        "stubborn",
        &["sh", "-c", "trap '' TERM; echo ready; sleep 1000"],
    );
    let id = n.create_started(&pod_id, &pod, &stubborn).await;
    let log = n.log_path(&id).await;
    log_until(&log, "the trap to be set", |l| l.3 == "ready").await;
    let t = Instant::now();
    n.stop_container(&id, 3).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "stop with a 3 s timeout took {took:?}"
    );
    let (st, _) = n.status(&id).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (137, "Error"), "{st:?}");

    // Two containers of one image each write the image's file.
    let file = data.path().join("f").display().to_string();
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let mut c = container(
            name,
            &[
                "sh",
                "-c",
                &format!("echo from-{name} > {file}; sleep 1000"),
            ],
        );
        c.image.as_mut().unwrap().image = cow_image.clone();
        ids.push((name, n.create_started(&pod_id, &pod, &c).await));
    }
    for (name, id) in &ids {
        let rt = n.rt.clone();
        let out = eventually(Duration::from_secs(5), "the write", || {
            let mut rt = rt.clone();
            let (id, file) = (id.clone(), file.clone());
            async move {
                let r = rt
                    .exec_sync(cri::ExecSyncRequest {
                        container_id: id,
                        cmd: vec!["cat".into(), file],
                        timeout: 5,
                    })
                    .await
                    .ok()?
                    .into_inner();
                let out = String::from_utf8_lossy(&r.stdout).into_owned();
                (out != "image\n").then_some(out)
            }
        })
        .await;
        assert_eq!(
            out,
            format!("from-{name}\n"),
            "container {name} sees another's write"
        );
    }
    // The image's layer, in the daemon's snapshots, still holds the image's content.
    let rel = file.trim_start_matches('/');
    let in_layers: Vec<PathBuf> = dirs_below(&n.d.config.root(), 5)
        .into_iter()
        .filter(|d| d.ends_with("/fs"))
        .map(|d| Path::new(&d).join(rel))
        .filter(|f| f.exists())
        .collect();
    assert_eq!(in_layers.len(), 1, "{in_layers:?}");
    assert_eq!(std::fs::read_to_string(&in_layers[0]).unwrap(), "image\n");

    n.remove_all(&pod_id).await;
}

/// A tmpfs at `dir`, shared with peers as a kubelet's volume must be for propagation.
fn shared_tmpfs(dir: &Path) {
    use nix::mount::{MsFlags, mount};
    std::fs::create_dir_all(dir).unwrap();
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
}

#[tokio::test]
async fn mounts_propagate_from_a_bidirectional_volume_to_the_host_and_back() {
    use nix::mount::{MntFlags, umount2};
    let (mut n, pod, pod_id) =
        Node::with_running_pod(55, "propagate", "0d1e2f30-0000-4000-8000-000000000055").await;
    let vols = n.d.config.dir().join("vols");
    let (bidi, h2c, private) = (vols.join("bidi"), vols.join("h2c"), vols.join("private"));
    shared_tmpfs(&bidi);
    shared_tmpfs(&h2c);
    std::fs::create_dir_all(&private).unwrap();
    let volume = |host: &Path, at: &str, p: cri::MountPropagation| cri::Mount {
        container_path: at.into(),
        host_path: host.display().to_string(),
        propagation: p as i32,
        ..Default::default()
    };

    let mut c = container(
        "prop",
        &[
            "sh",
            "-c",
            "mkdir /bidi/inner && mount -t tmpfs tmpfs /bidi/inner && echo from-container > /bidi/inner/f && sleep 1000",
        ],
    );
    security(&mut c).privileged = true;
    c.mounts = vec![
        volume(
            &bidi,
            "/bidi",
            cri::MountPropagation::PropagationBidirectional,
        ),
        volume(
            &h2c,
            "/h2c",
            cri::MountPropagation::PropagationHostToContainer,
        ),
    ];
    let id = n.create_started(&pod_id, &pod, &c).await;
    // The container's mount reached the host.
    let seen = eventually(
        Duration::from_secs(5),
        "the container's mount on the host",
        || {
            let f = std::fs::read_to_string(bidi.join("inner/f")).ok();
            async move { f }
        },
    )
    .await;
    assert_eq!(seen, "from-container\n");
    assert!(mounts_under(&bidi).contains(&bidi.join("inner")));
    // A host mount reaches the container.
    std::fs::create_dir(h2c.join("sub")).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &h2c.join("sub"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    std::fs::write(h2c.join("sub/f"), "from-host\n").unwrap();
    let r = n.exec_sync(&id, &["cat", "/h2c/sub/f"], 5).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "from-host\n", "{r:?}");

    // A Bidirectional volume on a private host mount cannot propagate: refused at create.
    let mut bad = container("bad", &["true"]);
    security(&mut bad).privileged = true;
    bad.mounts = vec![volume(
        &private,
        "/v",
        cri::MountPropagation::PropagationBidirectional,
    )];
    let e = n.create(&pod_id, &pod, &bad).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("not a shared"), "{e}");

    n.stop_container(&id, 0).await;
    for m in [bidi.join("inner"), h2c.join("sub"), bidi, h2c] {
        umount2(&m, MntFlags::MNT_DETACH).unwrap();
    }
    n.remove_all(&pod_id).await;
}
