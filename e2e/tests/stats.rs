//! Stats, metrics and events through the real daemon, as the kubelet's CRI stats provider and
//! evented PLEG use them: a busy container's CPU rising with a current rate, a container's memory
//! in its working set and its writes in its writable layer, pod network bytes growing after
//! traffic between two pods, the cAdvisor-named metrics with consistent label sets, and the
//! events of a container that exits by itself. Each test has its own daemon and its own
//! `PodNetwork` index (30..39), and removes what it made.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Stdio};
use std::time::Duration;

use carapace_e2e::cri::runtime_service_client::RuntimeServiceClient;
use carapace_e2e::node::{Node, container, pod_config};
use carapace_e2e::{Daemon, DaemonConfig, PodNetwork, cri, eventually};
use tonic::transport::Channel;

const BUSYBOX: &str = "/bin/busybox";

fn v(x: &Option<cri::UInt64Value>) -> u64 {
    x.as_ref().map(|v| v.value).unwrap_or(0)
}

#[tokio::test]
async fn a_busy_container_shows_cpu_rising_and_a_current_rate() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(30, "busy", "5a7a0000-0000-4000-8000-000000000030").await;
    let spin = container("spin", &["sh", "-c", "while :; do :; done"]);
    let id = n.create_started(&pod_id, &pod, &spin).await;
    let first = n.container_stats(&id).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = n.container_stats(&id).await;
    let (c1, c2) = (first.cpu.unwrap(), second.cpu.unwrap());
    let (u1, u2) = (
        v(&c1.usage_core_nano_seconds),
        v(&c2.usage_core_nano_seconds),
    );
    assert!(
        u2 > u1 + 100_000_000,
        "CPU did not rise by 0.1 s in 1.5 s: {u1} -> {u2}"
    );
    let rate = v(&c2.usage_nano_cores);
    assert!(rate > 50_000_000, "a busy loop at {rate} nano-cores");
    assert!(c2.timestamp > c1.timestamp);
    assert_eq!(second.attributes.unwrap().metadata.unwrap().name, "spin");

    // The pod's CPU includes its container's; its process count sees the shell.
    let p1 = n.pod_stats(&pod_id).await.linux.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let p2 = n.pod_stats(&pod_id).await.linux.unwrap();
    let pcpu = p2.cpu.unwrap();
    assert!(
        v(&pcpu.usage_core_nano_seconds) >= u2,
        "pod CPU below its container's"
    );
    assert!(v(&pcpu.usage_nano_cores) > 50_000_000, "{pcpu:?}");
    assert!(v(&p2.process.unwrap().process_count) >= 1);
    assert_eq!(p1.containers.len(), 1);
    assert_eq!(p2.containers[0].attributes.as_ref().unwrap().id, id);

    // The node gauges and histograms count it.
    let text = n.d.metrics_text().await;
    for line in [
        "carapace_container_start_duration_seconds_count 1",
        "carapace_containers{state=\"running\"} 1",
        "carapace_pods{state=\"ready\"} 1",
        "carapace_monitor_processes 1",
        "carapace_cni_operation_duration_seconds_count{operation=\"add\",outcome=\"success\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from /metrics:\n{text}");
    }
    n.remove_pod(&pod_id).await;
    n.finish().await;
}

#[tokio::test]
async fn memory_shows_in_the_working_set_and_writes_in_the_writable_layer() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(31, "mem", "5a7a0000-0000-4000-8000-000000000031").await;
    // 50 MB held in a shell variable (used after the sleep, so the shell does not exec `sleep`
    // and drop it); 8 MiB written to the rootfs.
    let hog = container(
        "hog",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/blob bs=1048576 count=8 2>/dev/null; \
             x=$(head -c 50000000 /dev/zero | tr '\\0' a); sleep 600; echo ${#x}",
        ],
    );
    let id = n.create_started(&pod_id, &pod, &hog).await;
    let rt = n.rt.clone();
    // The layer's usage is walked at most every few seconds: wait for both.
    let stats = eventually(
        Duration::from_secs(30),
        "50 MB in the working set, 8 MiB in the layer",
        || {
            let (mut rt, id) = (rt.clone(), id.clone());
            async move {
                let s = rt
                    .container_stats(cri::ContainerStatsRequest { container_id: id })
                    .await
                    .ok()?
                    .into_inner()
                    .stats?;
                let ws = v(&s.memory.as_ref()?.working_set_bytes);
                let layer = v(&s.writable_layer.as_ref()?.used_bytes);
                (ws > 50_000_000 && layer >= 8 << 20).then_some(s)
            }
        },
    )
    .await;
    let mem = stats.memory.unwrap();
    assert!(v(&mem.usage_bytes) >= v(&mem.working_set_bytes));
    assert!(v(&mem.rss_bytes) > 40_000_000, "{mem:?}");
    assert!(v(&mem.page_faults) > 0);
    let layer = stats.writable_layer.unwrap();
    assert!(v(&layer.used_bytes) >= 8 << 20, "{layer:?}");
    assert!(v(&layer.inodes_used) >= 2, "{layer:?}");

    // ListContainerStats filters; ImageFsInfo reports the writable layers.
    let listed =
        n.rt.list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    let none =
        n.rt.list_container_stats(cri::ListContainerStatsRequest {
            filter: Some(cri::ContainerStatsFilter {
                label_selector: HashMap::from([("no".into(), "such".into())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert!(none.is_empty());
    let fs =
        n.d.images()
            .await
            .image_fs_info(cri::ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
    let cfs = &fs.container_filesystems[0];
    assert!(v(&cfs.used_bytes) >= 8 << 20, "{cfs:?}");
    assert_eq!(
        cfs.fs_id.as_ref().unwrap().mountpoint,
        layer.fs_id.unwrap().mountpoint
    );

    // The pod's memory holds its container's.
    let p = n.pod_stats(&pod_id).await.linux.unwrap();
    assert!(v(&p.memory.unwrap().working_set_bytes) > 50_000_000);

    // The metrics: names the kubelet reads, label values matching each descriptor's keys.
    let descriptors: HashMap<String, Vec<String>> =
        n.rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
            .await
            .unwrap()
            .into_inner()
            .descriptors
            .into_iter()
            .map(|d| (d.name, d.label_keys))
            .collect();
    let pods =
        n.rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
            .await
            .unwrap()
            .into_inner()
            .pod_metrics;
    assert_eq!(pods.len(), 1);
    let pm = &pods[0];
    assert_eq!(pm.pod_sandbox_id, pod_id);
    let cm = &pm.container_metrics[0];
    assert_eq!(cm.container_id, id);
    let mut names = HashSet::new();
    for m in pm.metrics.iter().chain(&cm.metrics) {
        let keys = descriptors
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(keys.len(), m.label_values.len(), "{m:?} vs {keys:?}");
        assert_eq!(keys[..2], ["id", "name"]);
        names.insert(m.name.as_str());
    }
    for want in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_memory_usage_bytes",
        "container_fs_usage_bytes",
        "container_processes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    let ws = cm
        .metrics
        .iter()
        .find(|m| m.name == "container_memory_working_set_bytes")
        .unwrap();
    assert_eq!(ws.label_values, [id.as_str(), "hog"]);
    assert!(v(&ws.value) > 50_000_000);
    let rx = pm
        .metrics
        .iter()
        .find(|m| m.name == "container_network_receive_bytes_total")
        .unwrap();
    assert_eq!(rx.label_values, [pod_id.as_str(), "mem", "eth0"]);

    n.remove_pod(&pod_id).await;
    n.finish().await;
}

/// A busybox httpd serving `dir` inside a pod's network namespace; killed on drop.
struct Httpd(Child);

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn netns_of(info: &serde_json::Value) -> String {
    info["namespaces"]["network"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn pod_network_bytes_grow_after_traffic_between_two_pods() {
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 32);
    let d = Daemon::start_with(cfg).await;
    let mut rt = d.runtime().await;
    let mut pods = Vec::new();
    for (name, uid) in [
        ("server", "5a7a0000-0000-4000-8000-000000000032"),
        ("client", "5a7a0000-0000-4000-8001-000000000032"),
    ] {
        let id = d.run_pod(&pod_config(name, uid)).await;
        let (st, info) = d.pod_status(&id).await;
        let ip = st.network.unwrap().ip;
        pods.push((id, netns_of(&info), ip));
    }
    let www = tempfile::Builder::new()
        .prefix("st-www.")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::write(www.path().join("big"), vec![b'x'; 2 << 20]).unwrap();
    let counters = |stats: &[cri::PodSandboxStats], id: &str| -> (u64, u64) {
        let s = stats
            .iter()
            .find(|s| s.attributes.as_ref().unwrap().id == id)
            .unwrap_or_else(|| panic!("no stats for {id}: {stats:?}"));
        let n = s.linux.as_ref().unwrap().network.as_ref().unwrap();
        let i = n.default_interface.as_ref().expect("eth0");
        assert_eq!(i.name, "eth0");
        (v(&i.rx_bytes), v(&i.tx_bytes))
    };
    let list = |mut rt: RuntimeServiceClient<Channel>| async move {
        rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                label_selector: HashMap::new(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
    };
    let before = list(rt.clone()).await;
    assert_eq!(before.len(), 2);
    let (server, client) = (&pods[0], &pods[1]);
    let (_, server_tx0) = counters(&before, &server.0);
    let (client_rx0, _) = counters(&before, &client.0);

    let httpd = Httpd(
        std::process::Command::new("nsenter")
            .arg(format!("--net={}", server.1))
            .args([BUSYBOX, "httpd", "-f", "-p", "8090", "-h"])
            .arg(www.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{}:8090/big", server.2);
    eventually(Duration::from_secs(10), "wget from the client pod", || {
        let (ns, url) = (client.1.clone(), url.clone());
        async move {
            // `timeout`, not wget's `-T`, which segfaults in a pod's netns (busybox 1.35).
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net={ns}"))
                .args(["timeout", "5", BUSYBOX, "wget", "-q", "-O", "-", &url])
                .output()
                .ok()?;
            (out.status.success() && out.stdout.len() == 2 << 20).then_some(())
        }
    })
    .await;
    drop(httpd);
    let after = list(rt.clone()).await;
    let (_, server_tx1) = counters(&after, &server.0);
    let (client_rx1, _) = counters(&after, &client.0);
    assert!(
        server_tx1 >= server_tx0 + (2 << 20),
        "server tx {server_tx0} -> {server_tx1}"
    );
    assert!(
        client_rx1 >= client_rx0 + (2 << 20),
        "client rx {client_rx0} -> {client_rx1}"
    );

    // One pod by id prefix.
    let one = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
            filter: Some(cri::PodSandboxStatsFilter {
                id: client.0[..12].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(one.len(), 1);
    let missing = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: "0123456789ab".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    for (id, _, _) in &pods {
        d.remove_pod(id).await;
    }
    d.stop().await;
    drop(net);
}

#[tokio::test]
async fn the_events_stream_reports_a_container_created_started_stopped_by_itself_and_deleted() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(33, "ev", "5a7a0000-0000-4000-8000-000000000033").await;
    let mut events =
        n.rt.get_container_events(cri::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
    let id = n
        .create(&pod_id, &pod, &container("brief", &["sh", "-c", "sleep 1"]))
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", n.d.log_text()));
    n.start_container(&id).await;
    // It exits by itself; nobody asks its status.
    let mut seen = Vec::new();
    let wait = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(ev) = events.message().await.unwrap() {
            if ev.container_id != id {
                continue;
            }
            let kind = cri::ContainerEventType::try_from(ev.container_event_type).unwrap();
            seen.push((kind, ev));
            if kind == cri::ContainerEventType::ContainerStoppedEvent {
                break;
            }
        }
    })
    .await;
    assert!(
        wait.is_ok(),
        "no STOPPED within 15 s; saw {:?}\n{}",
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        n.d.log_text()
    );
    n.rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let deleted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ev = events.message().await.unwrap().unwrap();
            if ev.container_id == id {
                return ev;
            }
        }
    })
    .await
    .expect("a DELETED event");
    use cri::ContainerEventType as T;
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        [
            T::ContainerCreatedEvent,
            T::ContainerStartedEvent,
            T::ContainerStoppedEvent
        ]
    );
    assert_eq!(
        deleted.container_event_type,
        T::ContainerDeletedEvent as i32
    );
    let stopped = &seen[2].1;
    assert_eq!(stopped.pod_sandbox_status.as_ref().unwrap().id, pod_id);
    let st = stopped
        .containers_statuses
        .iter()
        .find(|s| s.id == id)
        .expect("the container's status in its STOPPED event");
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 0);
    let started = &seen[1].1;
    assert_eq!(
        started
            .containers_statuses
            .iter()
            .find(|s| s.id == id)
            .unwrap()
            .state,
        cri::ContainerState::ContainerRunning as i32
    );
    assert!(
        seen.windows(2)
            .all(|w| w[0].1.created_at <= w[1].1.created_at)
    );
    drop(events);
    n.remove_pod(&pod_id).await;
    n.finish().await;
}
