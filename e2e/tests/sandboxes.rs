//! Pod sandboxes through the real daemon: pinned namespaces with a real bridge + host-local CNI
//! network, the pod's files, kubelet retries, a daemon restart, stop/remove idempotence, and no
//! mount, namespace, cgroup or IPAM lease left behind.

use std::collections::HashMap;
use std::time::Duration;

use carapace_e2e::{Daemon, DaemonConfig, PodNetwork, cri, in_netns, node};
use tonic::Code;

/// A [`node::pod_config`] with DNS settings, a sysctl and a PID namespace shared by the pod.
fn pod_config(name: &str, uid: &str) -> cri::PodSandboxConfig {
    let mut pod = node::pod_config(name, uid);
    pod.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["e2e.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let linux = pod.linux.get_or_insert_default();
    linux.sysctls = HashMap::from([("net.ipv4.ip_unprivileged_port_start".into(), "0".into())]);
    linux.security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            pid: cri::NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    pod
}

#[tokio::test]
async fn a_pod_gets_its_network_files_and_namespaces_and_leaves_nothing() {
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 1);
    let d = Daemon::start_with(cfg).await;
    let mut rt = d.runtime().await;

    // The node's network turns ready once the conflist is there.
    let s = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let network = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(network.status, "{network:?}");

    let pod = pod_config("web", "0d1e2f30-0000-4000-8000-000000000001");
    let id = d.run_pod(&pod).await;
    let (st, info) = d.pod_status(&id).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    let ip = st.network.as_ref().unwrap().ip.clone();
    assert!(ip.starts_with(&format!("{}.", net.prefix)), "pod IP {ip}");
    assert_eq!(st.labels["app"], "web");

    // Inside the pinned network namespace: eth0 has the IP, the sysctl is set.
    let netns = info["namespaces"]["network"].as_str().unwrap();
    let addrs = in_netns(netns, &["ip", "-4", "addr", "show", "eth0"]);
    assert!(addrs.contains(&ip), "{addrs}");
    let sysctl = in_netns(
        netns,
        &["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
    );
    assert_eq!(sysctl.trim(), "0");
    // The host reaches the pod over the bridge.
    let ping = std::process::Command::new("ping")
        .args(["-c", "1", "-W", "2", &ip])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "ping {ip}: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    let resolv = std::fs::read_to_string(info["files"]["resolvConf"].as_str().unwrap()).unwrap();
    assert!(
        resolv.contains("nameserver 10.96.0.10") && resolv.contains("search e2e.svc.cluster.local")
    );
    assert!(resolv.contains("options ndots:5"));
    let hostname = std::fs::read_to_string(info["files"]["hostname"].as_str().unwrap()).unwrap();
    assert_eq!(hostname.trim(), "web-host");
    assert!(
        info["infraPid"].as_u64().is_some(),
        "a shared PID namespace has an infra process"
    );
    let cgroup = info["cgroupPath"].as_str().unwrap().to_owned();

    // The kubelet's poll, unfiltered: the same answer while nothing changes (kept between
    // calls), a new one after each change below.
    let state_in_full_list =
        |l: Vec<cri::PodSandbox>| l.into_iter().find(|p| p.id == id).map(|p| p.state);
    for _ in 0..2 {
        assert_eq!(
            state_in_full_list(d.pods().await),
            Some(cri::PodSandboxState::SandboxReady as i32)
        );
    }

    // A kubelet retry after a timeout gets the same sandbox back.
    assert_eq!(d.run_pod(&pod).await, id);
    let list = d
        .pods_where(cri::PodSandboxFilter {
            label_selector: HashMap::from([("app".into(), "web".into())]),
            ..Default::default()
        })
        .await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);

    // Stop twice, remove twice: all fine; then it is gone.
    for _ in 0..2 {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    }
    let (st, _) = d.pod_status(&id).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    // The list shows the new state with the same item otherwise.
    let listed = d
        .pods_where(cri::PodSandboxFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].state,
        cri::PodSandboxState::SandboxNotready as i32
    );
    assert_eq!(
        (&listed[0].metadata, &listed[0].labels, listed[0].created_at),
        (&st.metadata, &st.labels, st.created_at)
    );
    assert_eq!(
        state_in_full_list(d.pods().await),
        Some(cri::PodSandboxState::SandboxNotready as i32)
    );
    for _ in 0..2 {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    }
    let err = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(state_in_full_list(d.pods().await), None);

    // Nothing left: the pod cgroup, the IPAM lease for its IP.
    assert!(
        !std::path::Path::new("/sys/fs/cgroup/memory")
            .join(cgroup.trim_start_matches('/'))
            .exists()
            && !std::path::Path::new(&cgroup).exists(),
        "cgroup {cgroup} left behind"
    );
    assert!(
        !std::path::Path::new(&format!("/var/lib/cni/networks/{}/{ip}", net.name)).exists(),
        "IPAM lease for {ip} left behind"
    );
    d.stop().await; // asserts no mount under the test's dir and no process left
}

#[tokio::test]
async fn pods_survive_a_daemon_restart_with_the_same_ip() {
    let cfg = DaemonConfig::new();
    let _net = PodNetwork::bridge(&cfg, 2);
    let d = Daemon::start_with(cfg).await;
    let id = d
        .run_pod(&pod_config("db", "0d1e2f30-0000-4000-8000-000000000002"))
        .await;
    let (before, _) = d.pod_status(&id).await;

    let d = d.restart().await;
    let (after, info) = d.pod_status(&id).await;
    assert_eq!(after.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(after.network.unwrap().ip, before.network.unwrap().ip);
    // The namespace is still pinned and usable.
    in_netns(
        info["namespaces"]["network"].as_str().unwrap(),
        &["ip", "link"],
    );

    let mut rt = d.runtime().await;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .unwrap();
    assert!(d.pods().await.is_empty());
    d.stop().await;
}

#[tokio::test]
async fn bad_pod_requests_get_clear_codes_and_leave_nothing() {
    let cfg = DaemonConfig::new();
    let _net = PodNetwork::bridge(&cfg, 3);
    let d = Daemon::start_with(cfg).await;
    let mut rt = d.runtime().await;

    // A sysctl that would smuggle a second setting (CVE-2022-0811).
    let mut pod = pod_config("evil", "0d1e2f30-0000-4000-8000-000000000003");
    pod.linux.as_mut().unwrap().sysctls = HashMap::from([(
        "kernel.shm_rmid_forced".into(),
        "1+kernel.core_pattern=|/x".into(),
    )]);
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    // No metadata at all.
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    // Stop and remove of an id that never existed are no-ops, as the kubelet expects.
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: "f".repeat(64),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: "f".repeat(64),
    })
    .await
    .unwrap();
    assert!(d.pods().await.is_empty());
    tokio::time::sleep(Duration::from_millis(10)).await;
    d.stop().await;
}
