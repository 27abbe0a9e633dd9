//! What cri-api v0.36 added, over the socket with the client built from the vendored protos: the
//! six list streams giving their unary List's items with the same filters, a container's
//! `stop_signal` overriding the image's and reported in its status, env values as bytes, the
//! default runtime handler in `Status`, and `UpdatePodSandboxResources` resizing the pod cgroup.
//! Each test has its own daemon and `PodNetwork` index (200..205, 240), and removes what it made.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use carapace_e2e::node::{Node, container, log_until, stdout_of};
use carapace_e2e::{Daemon, cri};
use tonic::Streaming;

/// Every message of a stream until its end, or the status it failed with.
async fn drain<T>(mut s: Streaming<T>) -> Vec<T> {
    let mut out = Vec::new();
    while let Some(m) = s.message().await.expect("the stream failed") {
        out.push(m);
    }
    out
}

/// `items` sorted by `key`, which must be unique: each item exactly once.
fn once<T, K: Ord + Clone + std::hash::Hash + std::fmt::Debug>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let keys: HashSet<K> = items.iter().map(&key).collect();
    assert_eq!(keys.len(), items.len(), "an item came twice");
    items.sort_by_key(&key);
    items
}

fn uid(i: usize, index: u8) -> String {
    format!("c0360{i:03}-0000-4000-8000-{index:012}")
}

#[tokio::test]
async fn every_list_stream_gives_its_lists_items_with_the_same_filters() {
    const N: usize = 20;
    let mut n = Node::start(200).await;
    let mut pods = Vec::new();
    for i in 0..N {
        let mut pod = n.pod(&format!("p{i}"), &uid(i, 200));
        let group = if i % 2 == 0 { "even" } else { "odd" };
        pod.labels.insert("group".into(), group.into());
        let pod_id = n.run_pod(&pod).await;
        let mut c = container(&format!("c{i}"), &["sleep", "3600"]);
        c.labels.insert("group".into(), group.into());
        let cid = n.create_started(&pod_id, &pod, &c).await;
        pods.push((pod_id, cid));
    }
    // One pod stopped (its container exited with it): the state filters pick both sides.
    let stopped = pods[3].0.clone();
    n.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: stopped.clone(),
    })
    .await
    .unwrap();
    let even: HashMap<String, String> = [("group".to_string(), "even".to_string())].into();

    // Pods.
    let pod_filters = [
        None,
        Some(cri::PodSandboxFilter {
            label_selector: even.clone(),
            ..Default::default()
        }),
        Some(cri::PodSandboxFilter {
            id: pods[7].0.clone(),
            ..Default::default()
        }),
        Some(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxNotready as i32,
            }),
            ..Default::default()
        }),
        Some(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady as i32,
            }),
            label_selector: even.clone(),
            ..Default::default()
        }),
    ];
    let mut pod_counts = Vec::new();
    for filter in pod_filters {
        let list =
            n.rt.list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        let s =
            n.rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StreamPodSandboxes: {e}"))
            .into_inner();
        let streamed = drain(s).await;
        let streamed: Vec<_> = streamed.into_iter().flat_map(|m| m.pod_sandboxes).collect();
        pod_counts.push(list.len());
        assert_eq!(
            once(streamed, |p| p.id.clone()),
            once(list, |p| p.id.clone()),
            "filter {filter:?}"
        );
    }
    assert_eq!(pod_counts, [N, N / 2, 1, 1, N / 2]);

    // Containers.
    let container_filters = [
        None,
        Some(cri::ContainerFilter {
            label_selector: even.clone(),
            ..Default::default()
        }),
        Some(cri::ContainerFilter {
            id: pods[5].1.clone(),
            ..Default::default()
        }),
        Some(cri::ContainerFilter {
            pod_sandbox_id: pods[9].0.clone(),
            ..Default::default()
        }),
        Some(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }),
        Some(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerExited as i32,
            }),
            ..Default::default()
        }),
    ];
    let mut container_counts = Vec::new();
    for filter in container_filters {
        let list =
            n.rt.list_containers(cri::ListContainersRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        let s =
            n.rt.stream_containers(cri::StreamContainersRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StreamContainers: {e}"))
            .into_inner();
        let streamed: Vec<_> = drain(s)
            .await
            .into_iter()
            .flat_map(|m| m.containers)
            .collect();
        container_counts.push(list.len());
        assert_eq!(
            once(streamed, |c| c.id.clone()),
            once(list, |c| c.id.clone()),
            "filter {filter:?}"
        );
    }
    assert_eq!(container_counts, [N, N / 2, 1, 1, N - 1, 1]);

    // Container stats: the same containers in the same shape (the figures move between calls).
    let stats_filters = [
        None,
        Some(cri::ContainerStatsFilter {
            label_selector: even.clone(),
            ..Default::default()
        }),
        Some(cri::ContainerStatsFilter {
            id: pods[11].1.clone(),
            ..Default::default()
        }),
        Some(cri::ContainerStatsFilter {
            pod_sandbox_id: pods[12].0.clone(),
            ..Default::default()
        }),
    ];
    let mut stats_counts = Vec::new();
    for filter in stats_filters {
        let list =
            n.rt.list_container_stats(cri::ListContainerStatsRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
        let s =
            n.rt.stream_container_stats(cri::StreamContainerStatsRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StreamContainerStats: {e}"))
            .into_inner();
        let streamed: Vec<_> = drain(s)
            .await
            .into_iter()
            .flat_map(|m| m.container_stats)
            .collect();
        stats_counts.push(list.len());
        let shape = |s: &cri::ContainerStats| {
            (
                s.attributes.clone(),
                s.cpu.is_some(),
                s.memory.is_some(),
                s.writable_layer.as_ref().map(|w| w.fs_id.clone()),
                // PSI and IO: absent on this cgroup v1 node, not zero.
                s.cpu.as_ref().map(|c| c.psi.is_some()),
                s.memory.as_ref().map(|m| m.psi.is_some()),
                s.io.is_some(),
            )
        };
        let key = |s: &cri::ContainerStats| s.attributes.as_ref().unwrap().id.clone();
        let streamed: Vec<_> = once(streamed, key).iter().map(shape).collect();
        let list: Vec<_> = once(list, key).iter().map(shape).collect();
        assert_eq!(streamed, list, "filter {filter:?}");
        assert!(
            list.iter()
                .all(|s| s.4 == Some(false) && s.5 == Some(false) && !s.6)
        );
    }
    assert_eq!(stats_counts[1..], [N / 2, 1, 1]);
    assert!(stats_counts[0] >= N - 1, "{stats_counts:?}");

    // Pod stats.
    let pod_stats_filters = [
        None,
        Some(cri::PodSandboxStatsFilter {
            label_selector: even.clone(),
            ..Default::default()
        }),
        Some(cri::PodSandboxStatsFilter {
            id: pods[13].0.clone(),
            ..Default::default()
        }),
    ];
    let mut pod_stats_counts = Vec::new();
    for filter in pod_stats_filters {
        let list =
            n.rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats;
        let s =
            n.rt.stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StreamPodSandboxStats: {e}"))
            .into_inner();
        let streamed: Vec<_> = drain(s)
            .await
            .into_iter()
            .flat_map(|m| m.pod_sandbox_stats)
            .collect();
        pod_stats_counts.push(list.len());
        let shape = |s: &cri::PodSandboxStats| {
            let linux = s.linux.as_ref();
            (
                s.attributes.clone(),
                linux.map(|l| {
                    l.containers
                        .iter()
                        .map(|c| c.attributes.clone())
                        .collect::<Vec<_>>()
                }),
                linux.map(|l| l.io.is_some()),
            )
        };
        let key = |s: &cri::PodSandboxStats| s.attributes.as_ref().unwrap().id.clone();
        let streamed: Vec<_> = once(streamed, key).iter().map(shape).collect();
        let list: Vec<_> = once(list, key).iter().map(shape).collect();
        assert_eq!(streamed, list, "filter {filter:?}");
    }
    // The ready pods, as containerd lists them.
    assert_eq!(pod_stats_counts, [N - 1, N / 2, 1]);

    // Pod metrics (no filter in the protocol).
    let list =
        n.rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pod_metrics;
    let s =
        n.rt.stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {})
            .await
            .unwrap_or_else(|e| panic!("StreamPodSandboxMetrics: {e}"))
            .into_inner();
    let streamed: Vec<_> = drain(s)
        .await
        .into_iter()
        .flat_map(|m| m.pod_sandbox_metrics)
        .collect();
    let shape = |m: &cri::PodSandboxMetrics| {
        let names = |ms: &[cri::Metric]| {
            let mut v: Vec<String> = ms.iter().map(|m| m.name.clone()).collect();
            v.sort();
            v
        };
        let mut containers: Vec<_> = m
            .container_metrics
            .iter()
            .map(|c| (c.container_id.clone(), names(&c.metrics)))
            .collect();
        containers.sort();
        (m.pod_sandbox_id.clone(), names(&m.metrics), containers)
    };
    let key = |m: &cri::PodSandboxMetrics| m.pod_sandbox_id.clone();
    let streamed: Vec<_> = once(streamed, key).iter().map(shape).collect();
    let list: Vec<_> = once(list, key).iter().map(shape).collect();
    assert_eq!(list.len(), N - 1);
    assert_eq!(streamed, list);

    // Images.
    let mut images = n.d.images().await;
    for filter in [
        None,
        Some(cri::ImageFilter {
            image: Some(cri::ImageSpec {
                image: carapace_e2e::registry::Registry::busybox(),
                ..Default::default()
            }),
        }),
    ] {
        let list = images
            .list_images(cri::ListImagesRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .images;
        let s = images
            .stream_images(cri::StreamImagesRequest {
                filter: filter.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StreamImages: {e}"))
            .into_inner();
        let streamed: Vec<_> = drain(s).await.into_iter().flat_map(|m| m.images).collect();
        assert_eq!(list.len(), 1);
        assert_eq!(
            once(streamed, |i| i.id.clone()),
            once(list, |i| i.id.clone())
        );
    }

    for (pod_id, cid) in &pods {
        n.stop_container(cid, 0).await;
        n.remove_container(cid).await;
        n.remove_pod(pod_id).await;
    }
    n.finish().await;
}

#[tokio::test]
async fn a_stop_signal_in_the_config_is_the_one_stop_container_sends() {
    let uid = uid(0, 201);
    let (mut n, pod, pod_id) = Node::with_running_pod(201, "stopsig", &uid).await;
    // PID 1 ignores a signal it has no handler for: SIGTERM would do nothing here, and the
    // container would be killed at the timeout (137).
    let mut c = container(
        "trap",
        &[
            "sh",
            "-c",
            "trap 'echo got > /tmp/x; cat /tmp/x; exit 0' USR1; echo ready; \
             while :; do sleep 0.1; done",
        ],
    );
    c.stop_signal = cri::Signal::Sigusr1 as i32;
    let id = n.create_started(&pod_id, &pod, &c).await;
    let log = n.log_path(&id).await;
    log_until(&log, "the trap set", |l| l.3 == "ready").await;
    let (st, _) = n.status(&id).await;
    assert_eq!(
        cri::Signal::try_from(st.stop_signal),
        Ok(cri::Signal::Sigusr1)
    );

    // Without one, the runtime's default: SIGTERM (busybox names no StopSignal).
    let plain = n
        .create_started(&pod_id, &pod, &container("plain", &["sleep", "3600"]))
        .await;
    let (st, _) = n.status(&plain).await;
    assert_eq!(
        cri::Signal::try_from(st.stop_signal),
        Ok(cri::Signal::Sigterm)
    );

    let started = std::time::Instant::now();
    n.stop_container(&id, 20).await;
    let st = n.exited(&id).await;
    assert_eq!(st.exit_code, 0, "the trap did not run: {st:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        stdout_of(&carapace_e2e::node::cri_log(Path::new(&st.log_path))),
        "ready\ngot"
    );
    // The status after the stop still names the signal.
    let (st, _) = n.status(&id).await;
    assert_eq!(st.stop_signal, cri::Signal::Sigusr1 as i32);
    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn env_values_are_bytes_utf8_or_not_and_a_nul_is_refused_naming_the_key() {
    let uid = uid(0, 202);
    let (mut n, pod, pod_id) = Node::with_running_pod(202, "envbytes", &uid).await;
    let with_env = |name: &str, value: &[u8]| {
        let mut c = container(name, &["sh", "-c", "printf %s \"$V\" | od -An -tx1"]);
        c.envs = vec![cri::KeyValue {
            key: "V".into(),
            value: value.to_vec(),
        }];
        c
    };
    // UTF-8 beyond ASCII arrives byte for byte.
    let (_, st, lines) = n
        .run_to_exit(&pod_id, &pod, &with_env("utf8", "é€".as_bytes()))
        .await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(stdout_of(&lines).trim(), "c3 a9 e2 82 ac");

    // So do bytes that are not UTF-8, unchanged.
    let (_, st, lines) = n
        .run_to_exit(&pod_id, &pod, &with_env("latin1", b"caf\xe9"))
        .await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(stdout_of(&lines).trim(), "63 61 66 e9");

    // A NUL cannot be in an environment: refused, naming the variable but not its value.
    let e = n
        .create(&pod_id, &pod, &with_env("nul", b"a\0secret"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("\"V\""), "{}", e.message());
    assert!(!e.message().contains("secret"), "{}", e.message());
    let left = n.list(cri::ContainerFilter::default()).await;
    assert_eq!(left.len(), 2, "a refused create left a container: {left:?}");
    n.remove_all(&pod_id).await;
}

/// The `NAME=value` entries of an environ (`/proc/<pid>/environ`'s format).
fn environ_entries(environ: &[u8]) -> Vec<&[u8]> {
    environ
        .split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .collect()
}

/// The container's process's environment as the host sees it, by the pid in its verbose status.
async fn host_environ(n: &mut Node, id: &str) -> Vec<u8> {
    let (_, info) = n.status(id).await;
    let pid = info["pid"]
        .as_i64()
        .expect("the verbose status names no pid");
    std::fs::read(format!("/proc/{pid}/environ")).expect("reading the container's environ")
}

#[tokio::test]
async fn env_bytes_that_are_not_utf8_reach_the_process_and_survive_a_daemon_restart() {
    const RAW: &[u8] = b"X=\xff\xfe";
    let uid = uid(0, 240);
    let (mut n, pod, pod_id) = Node::with_running_pod(240, "envraw", &uid).await;
    let mut c = container("raw", &["sleep", "3600"]);
    c.envs = vec![
        cri::KeyValue {
            key: "X".into(),
            value: RAW[2..].to_vec(),
        },
        cri::KeyValue {
            key: "Y".into(),
            value: "é".into(),
        },
    ];
    // The process's own view (its PID namespace's init) and an exec'd command's, which gets the
    // container's environment too: every view must hold the bytes as they were given.
    async fn check(n: &mut Node, id: &str, when: &str) {
        for (what, environ) in [
            ("the host's /proc/<pid>/environ", host_environ(n, id).await),
            (
                "cat /proc/1/environ",
                n.exec_sync(id, &["cat", "/proc/1/environ"], 10)
                    .await
                    .unwrap()
                    .stdout,
            ),
            (
                "cat /proc/self/environ",
                n.exec_sync(id, &["cat", "/proc/self/environ"], 10)
                    .await
                    .unwrap()
                    .stdout,
            ),
        ] {
            let entries = environ_entries(&environ);
            assert!(
                entries.contains(&RAW) && entries.contains(&"Y=é".as_bytes()),
                "{when}: {what} lacks the entries: {:?}",
                String::from_utf8_lossy(&environ)
            );
        }
    }
    let running = n.create_started(&pod_id, &pod, &c).await;
    check(&mut n, &running, "started").await;
    let later = cri::ContainerConfig {
        envs: c.envs.clone(),
        ..container("later", &["sleep", "3600"])
    };
    let created = n.create(&pod_id, &pod, &later).await.unwrap();

    n.d = n.d.restart().await;
    n.rt = n.d.runtime().await;
    // Exec reads the container's saved spec; a start after the restart does too.
    check(&mut n, &running, "after the restart").await;
    n.start_container(&created).await;
    check(
        &mut n,
        &created,
        "created before the restart, started after",
    )
    .await;
    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn status_lists_the_default_handler_with_its_features() {
    let d = Daemon::start().await;
    let r = d
        .runtime()
        .await
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let default = r
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .unwrap_or_else(|| panic!("no default handler in {:?}", r.runtime_handlers));
    let f = default.features.as_ref().expect("the handler's features");
    // Recursive read-only mounts where the kernel has mount_setattr, user namespaces where the
    // start-up probe found id-mapped binds and overlays work: this node has both.
    assert!(f.recursive_read_only_mounts && f.user_namespaces, "{f:?}");
    let features = r.features.expect("the runtime's features");
    assert!(features.supplemental_groups_policy && !features.user_namespaces_host_network);
    d.stop().await;
}

/// A pod cgroup file in the cgroup v1 `controller` hierarchy.
fn pod_cgroup_file(controller: &str, uid: &str, file: &str) -> String {
    let p = format!("/sys/fs/cgroup/{controller}/kubepods/besteffort/pod{uid}/{file}");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn update_pod_sandbox_resources_resizes_the_pod_cgroup_alone() {
    const MI: i64 = 1 << 20;
    let uid = uid(0, 203);
    let mut n = Node::start(203).await;
    let mut pod = n.pod("resize", &uid);
    let linux = pod.linux.get_or_insert_default();
    linux.resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 256 * MI,
        cpu_period: 100_000,
        cpu_quota: 50_000,
        ..Default::default()
    });
    let pod_id = n.run_pod(&pod).await;
    let mut c = container("app", &["sleep", "3600"]);
    carapace_e2e::node::resources(&mut c).memory_limit_in_bytes = 128 * MI;
    let cid = n.create_started(&pod_id, &pod, &c).await;
    assert_eq!(
        pod_cgroup_file("memory", &uid, "memory.limit_in_bytes"),
        (256 * MI).to_string()
    );

    n.rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod_id.clone(),
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 512 * MI,
            cpu_period: 100_000,
            cpu_quota: 150_000,
            ..Default::default()
        }),
        overhead: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 * MI,
            cpu_quota: 10_000,
            ..Default::default()
        }),
    })
    .await
    .unwrap_or_else(|e| panic!("UpdatePodSandboxResources: {e}\n{}", n.d.log_text()));
    // Resources plus overhead, as for a run.
    assert_eq!(
        pod_cgroup_file("memory", &uid, "memory.limit_in_bytes"),
        (576 * MI).to_string()
    );
    assert_eq!(pod_cgroup_file("cpu", &uid, "cpu.cfs_quota_us"), "160000");
    // The container's own limit stays.
    let (st, _) = n.status(&cid).await;
    let r = st.resources.unwrap().linux.unwrap();
    assert_eq!(r.memory_limit_in_bytes, 128 * MI);

    let e =
        n.rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "0".repeat(64),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    n.remove_all(&pod_id).await;
}
