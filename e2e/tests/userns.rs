//! User namespaces through the real daemon (`userns_options` in mode POD, with mappings as the
//! kubelet allocates them: 65536 ids at a multiple of 65536): root inside is the mapped id on the
//! host, id-mapped volumes and root filesystem keep ownership what it looks like inside, two pods
//! get the disjoint ranges they were given, and exec and attach land in the pod's namespace.
//! Every test removes what it made and ends with `Node::finish`, which checks nothing is left.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use carapace_e2e::cri;
use carapace_e2e::node::{Node, container, security, share_pid_namespace};
use carapace_e2e::stream::RemoteCommand;
use tonic::Code;

/// The kubelet's allocation for a pod: 65536 ids from the `block`th multiple of 65536.
fn kubelet_range(block: u32) -> cri::IdMapping {
    cri::IdMapping {
        container_id: 0,
        host_id: block * 65536,
        length: 65536,
    }
}

fn userns(mapping: cri::IdMapping) -> cri::UserNamespace {
    cri::UserNamespace {
        mode: cri::NamespaceMode::Pod as i32,
        uids: vec![mapping],
        gids: vec![mapping],
    }
}

/// `pod` with its own user namespace, as the kubelet sends `hostUsers: false`.
fn in_userns(mut pod: cri::PodSandboxConfig, u: &cri::UserNamespace) -> cri::PodSandboxConfig {
    let linux = pod.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    sc.namespace_options
        .get_or_insert_with(Default::default)
        .userns_options = Some(u.clone());
    pod
}

/// The kubelet restates the pod's namespace options on each container.
fn container_in(pod: &cri::PodSandboxConfig, name: &str, cmd: &[&str]) -> cri::ContainerConfig {
    let mut c = container(name, cmd);
    let ns = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = ns;
    c
}

async fn host_pid(n: &mut Node, id: &str) -> i64 {
    let (_, info) = n.status(id).await;
    info["pid"].as_i64().expect("the verbose info has the pid")
}

/// `Uid:` of `/proc/<pid>/status` on the host: real, effective, saved, filesystem.
fn host_uids(pid: i64) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect()
}

/// A uid_map's lines as numbers, whatever the spacing.
fn map_of(text: &str) -> Vec<Vec<u64>> {
    text.lines()
        .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .filter(|v: &Vec<u64>| !v.is_empty())
        .collect()
}

async fn exec_out(n: &mut Node, id: &str, cmd: &[&str]) -> String {
    let r = n.exec_sync(id, cmd, 10).await.unwrap();
    assert_eq!(
        r.exit_code,
        0,
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&r.stdout),
        String::from_utf8_lossy(&r.stderr)
    );
    String::from_utf8_lossy(&r.stdout).into_owned()
}

/// The container's root is uid 0 inside and the range's first id on the host; a file it writes
/// to a host-path volume is owned on the host by the uid `id -u` prints inside (0), as is what it
/// writes to its root filesystem, whose image files are root's inside too. The pod's hostname,
/// hosts and resolv.conf are as without a user namespace, and the statuses report the mapping.
#[tokio::test]
async fn a_userns_pods_root_is_root_inside_and_its_mapped_id_on_the_host() {
    let mut n = Node::start(250).await;
    let st =
        n.rt.status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    let handler = st.runtime_handlers.iter().find(|h| h.name.is_empty());
    assert!(
        handler
            .and_then(|h| h.features)
            .is_some_and(|f| f.user_namespaces),
        "{st:?}"
    );
    let range = kubelet_range(4000);
    let u = userns(range);
    let pod = in_userns(n.pod("userns", "0d1e2f30-0000-4000-8000-000000000250"), &u);
    let pod_id = n.run_pod(&pod).await;
    let (pst, _) = n.d.pod_status(&pod_id).await;
    let reported = pst
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|ns| ns.options)
        .and_then(|o| o.userns_options);
    assert_eq!(reported.as_ref(), Some(&u), "PodSandboxStatus");
    // The CNI plugins, run from the host's user namespace, attached the pod's network.
    let ip = pst.network.map(|n| n.ip).unwrap_or_default();
    assert!(!ip.is_empty(), "no pod IP");

    let vol = n.d.config.dir().join("vols/userns");
    std::fs::create_dir_all(&vol).unwrap();
    let mut c = container_in(&pod, "root", &["sleep", "1000"]);
    // As the kubelet sends a volume of a userns pod: with the pod's mappings (KEP-127).
    c.mounts = vec![cri::Mount {
        container_path: "/mnt".into(),
        host_path: vol.display().to_string(),
        uid_mappings: vec![range],
        gid_mappings: vec![range],
        ..Default::default()
    }];
    let id = n.create_started(&pod_id, &pod, &c).await;

    let pid = host_pid(&mut n, &id).await;
    assert_eq!(host_uids(pid), vec![range.host_id; 4], "host uids of {pid}");
    assert_eq!(exec_out(&mut n, &id, &["id", "-u"]).await.trim(), "0");
    assert_eq!(exec_out(&mut n, &id, &["id", "-g"]).await.trim(), "0");
    let want_map = vec![vec![0, range.host_id as u64, range.length as u64]];
    assert_eq!(
        map_of(&exec_out(&mut n, &id, &["cat", "/proc/self/uid_map"]).await),
        want_map
    );
    assert_eq!(
        map_of(&std::fs::read_to_string(format!("/proc/{pid}/gid_map")).unwrap()),
        want_map
    );

    // The volume: what root writes inside is root's on the host.
    exec_out(&mut n, &id, &["sh", "-c", "echo hi > /mnt/made-inside"]).await;
    let meta = std::fs::metadata(vol.join("made-inside")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "owner on the host");
    // And the host's root-owned files are root's inside.
    std::fs::write(vol.join("made-outside"), "x").unwrap();
    let listing = exec_out(
        &mut n,
        &id,
        &["ls", "-lnd", "/mnt/made-outside", "/bin", "/"],
    )
    .await;
    let owners: Vec<(&str, &str)> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[2], f[3])
        })
        .collect();
    assert_eq!(owners, [("0", "0"); 3], "{listing}");
    // The root filesystem is root's to write, as without a user namespace.
    exec_out(
        &mut n,
        &id,
        &["sh", "-c", "echo x > /made-in-root && mkdir /etc/new"],
    )
    .await;
    // The pod's files behave as they do without a user namespace.
    assert_eq!(
        exec_out(&mut n, &id, &["hostname"]).await.trim(),
        "userns-host"
    );
    exec_out(
        &mut n,
        &id,
        &["sh", "-c", "echo '10.9.9.9 extra' >> /etc/hosts"],
    )
    .await;
    assert!(
        exec_out(&mut n, &id, &["cat", "/etc/hosts", "/etc/resolv.conf"])
            .await
            .contains("extra")
    );
    exec_out(
        &mut n,
        &id,
        &[
            "sh",
            "-c",
            "echo x > /dev/shm/f && ls /proc/1 /sys/class/net/eth0",
        ],
    )
    .await;
    // `/dev` is root's as without a user namespace: it can make a file there.
    let addr = exec_out(&mut n, &id, &["cat", "/proc/net/fib_trie"]).await;
    assert!(addr.contains(&ip), "{addr}");
    let dev = exec_out(
        &mut n,
        &id,
        &["sh", "-c", "mkdir /dev/made && ls -lnd /dev"],
    )
    .await;
    let f: Vec<&str> = dev.split_whitespace().collect();
    assert_eq!((f[2], f[3]), ("0", "0"), "{dev}");

    let (cst, _) = n.status(&id).await;
    let m = cst
        .mounts
        .iter()
        .find(|m| m.container_path == "/mnt")
        .expect("the volume in ContainerStatus");
    assert_eq!(
        (m.uid_mappings.clone(), m.gid_mappings.clone()),
        (vec![range], vec![range])
    );

    n.stop_container(&id, 0).await;
    n.remove_container(&id).await;
    std::fs::remove_dir_all(&vol).unwrap();
    n.remove_pod(&pod_id).await;
    n.finish().await;
}

/// Two pods given the kubelet's disjoint ranges run in those ranges and no other; requests the
/// kubelet never sends (two ranges, a range not starting at 0, modes CONTAINER and TARGET, with
/// the host's network) are refused as invalid, with nothing left behind.
#[tokio::test]
async fn two_userns_pods_get_the_disjoint_ranges_they_are_given() {
    let mut n = Node::start(251).await;
    let mut seen = Vec::new();
    let mut made = Vec::new();
    for (i, block) in [(1u32, 4100u32), (2, 4101)] {
        let range = kubelet_range(block);
        let mut pod = n.pod(
            &format!("userns{i}"),
            &format!("0d1e2f30-0000-4000-800{i}-000000000251"),
        );
        // The second shares its PID namespace (`shareProcessNamespace: true`) too.
        if i == 2 {
            share_pid_namespace(&mut pod);
        }
        let pod = in_userns(pod, &userns(range));
        let pod_id = n.run_pod(&pod).await;
        let mut c = container_in(&pod, "c", &["sleep", "1000"]);
        // The first's root filesystem is read-only, as asked, its /dev/shm still writable.
        if i == 1 {
            security(&mut c).readonly_rootfs = true;
        }
        let id = n.create_started(&pod_id, &pod, &c).await;
        if i == 1 {
            let out = exec_out(
                &mut n,
                &id,
                &[
                    "sh",
                    "-c",
                    "touch /x 2>&1; echo > /dev/shm/y && echo shm-ok",
                ],
            )
            .await;
            assert!(
                out.contains("Read-only file system") && out.contains("shm-ok"),
                "{out}"
            );
        }
        if i == 2 {
            // PID 1 is the pod's infra process, the container's sleep beside it.
            let ps = exec_out(
                &mut n,
                &id,
                &["sh", "-c", "cat /proc/1/cmdline; echo; id -u"],
            )
            .await;
            assert!(!ps.contains("sleep") && ps.ends_with("0\n"), "{ps:?}");
        }
        let pid = host_pid(&mut n, &id).await;
        let uid = host_uids(pid)[0];
        assert!(
            (range.host_id..range.host_id + range.length).contains(&uid),
            "pod {i}: host uid {uid} outside {range:?}"
        );
        seen.push((range.host_id, range.host_id + range.length, uid));
        made.push((pod_id, id));
    }
    let (a, b) = (seen[0], seen[1]);
    assert!(a.1 <= b.0 || b.1 <= a.0, "ranges overlap: {seen:?}");
    assert_ne!(a.2, b.2);

    let bad = |uids: Vec<cri::IdMapping>, mode: cri::NamespaceMode| cri::UserNamespace {
        mode: mode as i32,
        gids: uids.clone(),
        uids,
    };
    let cases = [
        (
            "two ranges",
            bad(
                vec![kubelet_range(4102), kubelet_range(4103)],
                cri::NamespaceMode::Pod,
            ),
            false,
        ),
        (
            "container id 0 unmapped",
            bad(
                vec![cri::IdMapping {
                    container_id: 1,
                    ..kubelet_range(4102)
                }],
                cri::NamespaceMode::Pod,
            ),
            false,
        ),
        (
            "CONTAINER",
            bad(vec![], cri::NamespaceMode::Container),
            false,
        ),
        ("TARGET", bad(vec![], cri::NamespaceMode::Target), false),
        (
            "host network",
            bad(vec![kubelet_range(4102)], cri::NamespaceMode::Pod),
            true,
        ),
    ];
    for (what, u, host_net) in cases {
        let mut pod = in_userns(n.pod("bad", "0d1e2f30-0000-4000-8009-000000000251"), &u);
        if host_net {
            let ns = pod
                .linux
                .as_mut()
                .unwrap()
                .security_context
                .as_mut()
                .unwrap();
            ns.namespace_options.as_mut().unwrap().network = cri::NamespaceMode::Node as i32;
        }
        let e =
            n.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e}");
    }

    for (pod_id, id) in made {
        n.stop_container(&id, 0).await;
        n.remove_container(&id).await;
        n.remove_pod(&pod_id).await;
    }
    n.finish().await;
}

/// ExecSync and attach reach the container in the pod's user namespace: both see the mapping the
/// container's init has (read on the host), and exec's root is the same mapped id.
#[tokio::test]
async fn exec_and_attach_into_a_userns_pod_keep_its_mapping() {
    let mut n = Node::start(252).await;
    let range = kubelet_range(4200);
    let pod = in_userns(
        n.pod("userns-exec", "0d1e2f30-0000-4000-8000-000000000252"),
        &userns(range),
    );
    let pod_id = n.run_pod(&pod).await;
    let mut c = container_in(
        &pod,
        "reader",
        &[
            "sh",
            "-c",
            "while read x; do cat /proc/self/uid_map; id -u; done",
        ],
    );
    c.stdin = true;
    let id = n.create_started(&pod_id, &pod, &c).await;
    let pid = host_pid(&mut n, &id).await;
    let init_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        map_of(&init_map),
        vec![vec![0, range.host_id as u64, range.length as u64]]
    );

    let exec_map = exec_out(&mut n, &id, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(map_of(&exec_map), map_of(&init_map), "exec");
    // The exec'd process itself, seen from the host.
    let out = exec_out(
        &mut n,
        &id,
        &["sh", "-c", "cat /proc/self/status | grep ^Uid"],
    )
    .await;
    let inside: Vec<&str> = out.split_whitespace().skip(1).collect();
    assert_eq!(inside, ["0", "0", "0", "0"], "{out}");

    let url = n
        .attach_url(cri::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap();
    let mut s = RemoteCommand::connect(&url).await.unwrap();
    s.stdin(b"go\n").await;
    let want = format!("{}", range.host_id);
    s.wait_for(&want, Duration::from_secs(10)).await;
    let attached = s.output.stdout_text();
    assert_eq!(
        map_of(attached.lines().next().unwrap_or_default()),
        map_of(&init_map),
        "attach: {attached}"
    );
    s.hang_up().await;

    // With CAP_SYS_ADMIN its root may mount in its own mount namespace, as without a user
    // namespace, but cannot take off what the runtime mounted (a masked path's bind) to look
    // beneath: those mounts are locked to the user namespace.
    let mut admin = container_in(&pod, "admin", &["sleep", "1000"]);
    security(&mut admin).capabilities = Some(cri::Capability {
        add_capabilities: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    let admin_id = n.create_started(&pod_id, &pod, &admin).await;
    exec_out(
        &mut n,
        &admin_id,
        &[
            "sh",
            "-c",
            "mkdir /m && mount -t tmpfs t /m && touch /m/f && umount /m",
        ],
    )
    .await;
    let out = exec_out(
        &mut n,
        &admin_id,
        &["sh", "-c", "umount /proc/keys 2>&1; echo rc=$?"],
    )
    .await;
    assert!(
        !out.contains("rc=0") && out.contains("Invalid argument"),
        "a masked path was unmounted: {out}"
    );
    n.stop_container(&admin_id, 0).await;
    n.remove_container(&admin_id).await;

    n.stop_container(&id, 0).await;
    n.remove_container(&id).await;
    n.remove_pod(&pod_id).await;
    n.finish().await;
}

/// Sysctls are set inside the pod's user namespace, by its root: one that namespace may not set
/// (a ping group range reaching ids it does not map) is refused as an invalid request that names
/// it, leaving nothing behind; within the range, and other namespaced ones, are set.
#[tokio::test]
async fn a_sysctl_the_pods_user_namespace_cannot_set_is_refused_as_invalid() {
    let mut n = Node::start(253).await;
    let u = userns(kubelet_range(4300));
    let with_sysctls = |n: &Node, name: &str, sysctls: &[(&str, &str)]| {
        let mut pod = in_userns(n.pod(name, "0d1e2f30-0000-4000-8000-000000000253"), &u);
        pod.linux.as_mut().unwrap().sysctls = sysctls
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        pod
    };
    let pod = with_sysctls(&n, "bad", &[("net.ipv4.ping_group_range", "0 2147483647")]);
    let e =
        n.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("ping_group_range"), "{e}");
    assert!(n.d.pods().await.is_empty());

    let pod = with_sysctls(
        &n,
        "good",
        &[
            ("net.ipv4.ping_group_range", "0 65535"),
            ("net.ipv4.ip_unprivileged_port_start", "80"),
            ("kernel.shm_rmid_forced", "1"),
        ],
    );
    let pod_id = n.run_pod(&pod).await;
    let id = n
        .create_started(&pod_id, &pod, &container_in(&pod, "c", &["sleep", "1000"]))
        .await;
    let got = exec_out(
        &mut n,
        &id,
        &[
            "cat",
            "/proc/sys/net/ipv4/ping_group_range",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
            "/proc/sys/kernel/shm_rmid_forced",
        ],
    )
    .await;
    assert_eq!(
        got.split_whitespace().collect::<Vec<_>>(),
        ["0", "65535", "80", "1"]
    );
    n.stop_container(&id, 0).await;
    n.remove_container(&id).await;
    n.remove_pod(&pod_id).await;
    n.finish().await;
}

/// A userns pod outlives a daemon restart: its container keeps running in the pod's namespace,
/// an exec after the restart still lands in it, the statuses still report the mapping, and the
/// pod (its user namespace pin included) is removed without leaving anything.
#[tokio::test]
async fn a_userns_pod_survives_a_daemon_restart() {
    let mut n = Node::start(254).await;
    let range = kubelet_range(4400);
    let u = userns(range);
    let pod = in_userns(
        n.pod("userns-restart", "0d1e2f30-0000-4000-8000-000000000254"),
        &u,
    );
    let pod_id = n.run_pod(&pod).await;
    let id = n
        .create_started(&pod_id, &pod, &container_in(&pod, "c", &["sleep", "1000"]))
        .await;
    let pid = host_pid(&mut n, &id).await;

    n.d = n.d.restart().await;
    n.rt = n.d.runtime().await;
    assert_eq!(host_pid(&mut n, &id).await, pid);
    let want = vec![vec![0, range.host_id as u64, range.length as u64]];
    assert_eq!(
        map_of(&exec_out(&mut n, &id, &["cat", "/proc/self/uid_map"]).await),
        want
    );
    let (pst, _) = n.d.pod_status(&pod_id).await;
    let reported = pst
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|ns| ns.options)
        .and_then(|o| o.userns_options);
    assert_eq!(reported, Some(u));

    n.stop_container(&id, 0).await;
    n.remove_container(&id).await;
    n.remove_pod(&pod_id).await;
    n.finish().await;
}
