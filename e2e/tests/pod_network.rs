//! Pod networking through the real daemon and a real bridge + host-local + portmap CNI network:
//! two pods talking to each other, a hostPort, a host-network pod, refused sysctls, a broken
//! conflist, a SIGKILLed daemon, and concurrent kubelet retries. Each test has its own daemon and
//! its own `PodNetwork` index (20..29), so they run in parallel without meeting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use carapace_e2e::node::pod_config;
use carapace_e2e::{Daemon, DaemonConfig, PodNetwork, cri, free_port, in_netns};
use tonic::Code;

const BUSYBOX: &str = "/bin/busybox";

async fn run_err(d: &Daemon, cfg: cri::PodSandboxConfig) -> tonic::Status {
    match d
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        })
        .await
    {
        Ok(r) => panic!(
            "RunPodSandbox succeeded ({}) where it must fail",
            r.into_inner().pod_sandbox_id
        ),
        Err(e) => e,
    }
}

fn pod_ip(st: &cri::PodSandboxStatus) -> String {
    st.network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default()
}

fn netns_path(info: &serde_json::Value) -> String {
    info["namespaces"]["network"]
        .as_str()
        .unwrap_or_else(|| panic!("no network namespace in {info}"))
        .to_owned()
}

/// host-local's leases for `net`: the files in its directory whose names are IPs.
fn leases(net: &PodNetwork) -> usize {
    std::fs::read_dir(format!("/var/lib/cni/networks/{}", net.name))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.parse::<IpAddr>().is_ok())
                })
                .count()
        })
        .unwrap_or(0)
}

/// A busybox httpd serving `dir` inside a pod's network namespace; killed (and reaped) on drop.
struct Httpd {
    child: Child,
}

impl Httpd {
    fn start(netns: &str, port: u16, dir: &Path) -> Httpd {
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args([BUSYBOX, "httpd", "-f", "-p", &port.to_string(), "-h"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning busybox httpd");
        Httpd { child }
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A served directory holding `index.txt` with `content`.
fn www(content: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("carapace-e2e-www.")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::write(dir.path().join("index.txt"), content).unwrap();
    dir
}

/// `busybox wget -q -O - <url>`, in `netns` if given, else on the host; stdout on success.
fn wget(netns: Option<&str>, url: &str) -> Result<String, String> {
    // `timeout`, not wget's own `-T`: busybox 1.35's wget segfaults with `-T` in a pod's netns.
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("5");
    if let Some(ns) = netns {
        cmd.arg("nsenter").arg(format!("--net={ns}"));
    }
    let out = cmd
        .args([BUSYBOX, "wget", "-q", "-O", "-", url])
        .stdin(Stdio::null())
        .output()
        .expect("running busybox wget");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Retries `wget` until it answers (the server may still be starting), up to `timeout`.
async fn wget_eventually(
    netns: Option<&str>,
    url: &str,
    timeout: Duration,
) -> Result<String, String> {
    let start = Instant::now();
    loop {
        match wget(netns, url) {
            Ok(body) => return Ok(body),
            Err(e) if start.elapsed() > timeout => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn two_pods_get_distinct_ips_and_reach_each_other_and_release_their_leases() {
    let t = Instant::now();
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 20);
    let d = Daemon::start_with(cfg).await;
    let leases_before = leases(&net);

    let a = d
        .run_pod(&pod_config("a", "20000000-0000-4000-8000-00000000000a"))
        .await;
    let b = d
        .run_pod(&pod_config("b", "20000000-0000-4000-8000-00000000000b"))
        .await;
    let (sa, ia) = d.pod_status(&a).await;
    let (sb, ib) = d.pod_status(&b).await;
    let (ip_a, ip_b) = (pod_ip(&sa), pod_ip(&sb));
    assert_ne!(ip_a, ip_b, "two pods got the same IP");
    for ip in [&ip_a, &ip_b] {
        assert!(ip.starts_with(&format!("{}.", net.prefix)), "pod IP {ip}");
    }
    assert_eq!(leases(&net), leases_before + 2, "one lease per pod");
    let (ns_a, ns_b) = (netns_path(&ia), netns_path(&ib));
    assert_ne!(ns_a, ns_b);

    let content = "hello from pod a\n";
    let dir = www(content);
    let httpd = Httpd::start(&ns_a, 8080, dir.path());
    let url = format!("http://{ip_a}:8080/index.txt");
    let got = wget_eventually(Some(&ns_b), &url, Duration::from_secs(10)).await;
    drop(httpd);
    assert_eq!(got.as_deref(), Ok(content), "wget {url} from pod b");

    d.remove_pod(&a).await;
    d.remove_pod(&b).await;
    assert!(d.pods().await.is_empty());
    assert_eq!(leases(&net), leases_before, "IPAM leases not released");
    for ns in [&ns_a, &ns_b] {
        assert!(!Path::new(ns).exists(), "netns pin {ns} left behind");
    }
    d.stop().await;
    eprintln!("two_pods: {:?}", t.elapsed());
}

#[tokio::test]
async fn a_host_port_reaches_the_pod() {
    let t = Instant::now();
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 21);
    let d = Daemon::start_with(cfg).await;

    let host_port = free_port();
    let mut pod = pod_config("hp", "21000000-0000-4000-8000-000000000001");
    pod.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8081,
        host_port: host_port.into(),
        host_ip: String::new(),
    }];
    let id = d.run_pod(&pod).await;
    let (_, info) = d.pod_status(&id).await;
    let ns = netns_path(&info);

    let content = "hello through a hostPort\n";
    let dir = www(content);
    let httpd = Httpd::start(&ns, 8081, dir.path());
    // The server answers inside the pod first, so a failure below is the mapping's.
    let inside = wget_eventually(
        Some(&ns),
        "http://127.0.0.1:8081/index.txt",
        Duration::from_secs(10),
    )
    .await;
    let localhost = format!("http://127.0.0.1:{host_port}/index.txt");
    let gateway = format!("http://{}.1:{host_port}/index.txt", net.prefix);
    let via_localhost = wget_eventually(None, &localhost, Duration::from_secs(3)).await;
    let via_gateway = wget_eventually(None, &gateway, Duration::from_secs(3)).await;
    drop(httpd);
    assert_eq!(inside.as_deref(), Ok(content), "httpd inside the pod");
    eprintln!("hostPort via 127.0.0.1: {via_localhost:?}; via the gateway: {via_gateway:?}");
    // portmap's localhost DNAT may be off on this host; the bridge's host address must work.
    let got = via_localhost.or(via_gateway);
    assert_eq!(got.as_deref(), Ok(content), "wget {localhost} / {gateway}");

    d.remove_pod(&id).await;
    assert!(d.pods().await.is_empty());
    d.stop().await;
    eprintln!("host_port: {:?}", t.elapsed());
}

#[tokio::test]
async fn a_host_network_pod_has_no_ip_or_netns_of_its_own() {
    let t = Instant::now();
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 22);
    let d = Daemon::start_with(cfg).await;
    let leases_before = leases(&net);

    let mut pod = pod_config("hostnet", "22000000-0000-4000-8000-000000000001");
    pod.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["e2e.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    pod.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = d.run_pod(&pod).await;
    let (st, info) = d.pod_status(&id).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    let ip = pod_ip(&st);
    assert!(
        !ip.starts_with(&format!("{}.", net.prefix)),
        "a host-network pod got a pod IP {ip}"
    );
    if !ip.is_empty() {
        // If any, it is one of the host's own addresses.
        let host_addrs = String::from_utf8(
            std::process::Command::new("ip")
                .args(["-o", "addr"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert!(host_addrs.contains(&ip), "{ip} is not a host address");
    }
    assert!(
        info["namespaces"]["network"].is_null(),
        "network namespace of a host-network pod: {}",
        info["namespaces"]["network"]
    );
    assert_eq!(
        leases(&net),
        leases_before,
        "CNI ran for a host-network pod"
    );
    let resolv = std::fs::read_to_string(info["files"]["resolvConf"].as_str().unwrap()).unwrap();
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");

    d.remove_pod(&id).await;
    assert!(d.pods().await.is_empty());
    d.stop().await;
    eprintln!("host_network: {:?}", t.elapsed());
}

#[tokio::test]
async fn bad_and_non_namespaced_sysctls_are_invalid_arguments() {
    let t = Instant::now();
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 23);
    let d = Daemon::start_with(cfg).await;
    let leases_before = leases(&net);

    let cases: &[(&str, &str, bool)] = &[
        // Not namespaced: it would change the host.
        ("kernel.core_pattern", "|/tmp/x", false),
        ("vm.overcommit_memory", "1", false),
        // A namespaced key with a value that smuggles a second setting.
        (
            "net.ipv4.ip_forward",
            "1\nkernel.core_pattern=|/tmp/x",
            false,
        ),
        ("kernel.shm_rmid_forced", "1 kernel.core_pattern=x", false),
        // A malformed key.
        ("net.ipv4/../../kernel/core_pattern", "x", false),
        // net.* with host network.
        ("net.ipv4.ip_unprivileged_port_start", "0", true),
    ];
    let mut wrong = Vec::new();
    for (i, &(key, value, host_net)) in cases.iter().enumerate() {
        let mut pod = pod_config(
            &format!("sysctl-{i}"),
            &format!("23000000-0000-4000-8000-{i:012}"),
        );
        let linux = pod.linux.as_mut().unwrap();
        linux.sysctls = HashMap::from([(key.into(), value.into())]);
        if host_net {
            linux.security_context = Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let err = run_err(&d, pod).await;
        if err.code() != Code::InvalidArgument {
            wrong.push(format!("{key}={value:?} (host net {host_net}): {err}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "not InvalidArgument:\n{}",
        wrong.join("\n")
    );
    assert!(d.pods().await.is_empty(), "a refused pod was left listed");
    assert_eq!(leases(&net), leases_before, "a refused pod kept its lease");
    assert!(
        !std::fs::read_to_string("/proc/sys/kernel/core_pattern")
            .unwrap()
            .contains("/tmp/x"),
        "the host's core_pattern was changed"
    );
    d.stop().await;
    eprintln!("sysctls: {:?}", t.elapsed());
}

#[tokio::test]
async fn a_namespaced_sysctl_with_a_bad_value_is_an_invalid_argument() {
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 27);
    let d = Daemon::start_with(cfg).await;
    let leases_before = leases(&net);

    let mut pod = pod_config("badvalue", "27000000-0000-4000-8000-000000000001");
    pod.linux.as_mut().unwrap().sysctls = HashMap::from([(
        "net.ipv4.ip_unprivileged_port_start".into(),
        "not-a-number".into(),
    )]);
    let err = run_err(&d, pod).await;
    let left = d.pods().await;
    for p in &left {
        d.remove_pod(&p.id).await;
    }
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "{err} (pods left: {left:?})"
    );
    assert!(left.is_empty(), "a refused pod was left listed: {left:?}");
    assert_eq!(leases(&net), leases_before, "a refused pod kept its lease");
    d.stop().await;
}

#[tokio::test]
async fn a_missing_plugin_fails_run_pod_sandbox_with_its_name_and_leaks_nothing() {
    let t = Instant::now();
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 24);
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": net.name,
        "plugins": [
            {
                "type": "nosuchplugin",
                "bridge": net.bridge,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": format!("{}.0/24", net.prefix) }]]
                }
            }
        ]
    });
    std::fs::write(
        cfg.dir().join("cni/net.d/10-e2e.conflist"),
        conflist.to_string(),
    )
    .unwrap();
    let d = Daemon::start_with(cfg).await;
    let leases_before = leases(&net);

    let err = run_err(
        &d,
        pod_config("broken", "24000000-0000-4000-8000-000000000001"),
    )
    .await;
    assert!(
        err.message().contains("nosuchplugin"),
        "the error does not name the plugin: {err}"
    );
    let left = d.pods().await;
    // Clean up whatever was left, and say whether that even works, before asserting.
    let mut removing = Vec::new();
    for p in &left {
        let r = d
            .runtime()
            .await
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: p.id.clone(),
            })
            .await;
        removing.push(r.map(|_| ()).map_err(|e| e.to_string()));
    }
    assert!(
        left.is_empty(),
        "a failed pod was left listed (RunPodSandbox said: {err}): {left:?}; removing it: {removing:?}"
    );
    assert_eq!(leases(&net), leases_before);
    // The pods' pins and /dev/shm live under `sandboxes`; the daemon's own read-only bind of
    // its binary (state/carapace.exe) stays while it runs.
    let pods_dir = d.config.state().join("sandboxes");
    let pins: Vec<_> = carapace_e2e::mounts_under(&pods_dir);
    assert!(pins.is_empty(), "mounts left after a failed run: {pins:?}");
    d.stop().await; // no mount or process left under the daemon's dir
    eprintln!("broken_conflist: {:?}", t.elapsed());
}

#[tokio::test]
async fn pods_survive_a_sigkilled_daemon_and_are_removed_cleanly() {
    let t = Instant::now();
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 25);
    let d = Daemon::start_with(cfg).await;
    let leases_before = leases(&net);

    let ids = [
        d.run_pod(&pod_config("k1", "25000000-0000-4000-8000-000000000001"))
            .await,
        d.run_pod(&pod_config("k2", "25000000-0000-4000-8000-000000000002"))
            .await,
    ];
    let mut before = HashMap::new();
    for id in &ids {
        before.insert(id.clone(), pod_ip(&d.pod_status(id).await.0));
    }

    let d = d.kill_and_restart().await;
    let listed = d.pods().await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    for id in &ids {
        let (st, info) = d.pod_status(id).await;
        assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
        assert_eq!(pod_ip(&st), before[id], "pod {id} changed IP");
        let addrs = in_netns(&netns_path(&info), &["ip", "-4", "addr", "show", "eth0"]);
        assert!(addrs.contains(&before[id]), "{addrs}");
    }
    for id in &ids {
        d.remove_pod(id).await;
    }
    assert!(d.pods().await.is_empty());
    assert_eq!(leases(&net), leases_before, "IPAM leases not released");
    d.stop().await;
    eprintln!("sigkill: {:?}", t.elapsed());
}

#[tokio::test]
async fn the_same_run_pod_sandbox_twice_at_once_yields_one_sandbox() {
    let t = Instant::now();
    let cfg = DaemonConfig::new();
    let net = PodNetwork::bridge(&cfg, 26);
    let d = Daemon::start_with(cfg).await;
    let leases_before = leases(&net);

    let pod = pod_config("twice", "26000000-0000-4000-8000-000000000001");
    let req = || cri::RunPodSandboxRequest {
        config: Some(pod.clone()),
        runtime_handler: String::new(),
    };
    let (mut c1, mut c2) = (d.runtime().await, d.runtime().await);
    let (r1, r2) = tokio::join!(c1.run_pod_sandbox(req()), c2.run_pod_sandbox(req()));
    let id1 = r1
        .unwrap_or_else(|e| panic!("first RunPodSandbox: {e}\n{}", d.log_text()))
        .into_inner()
        .pod_sandbox_id;
    let id2 = r2
        .unwrap_or_else(|e| panic!("second RunPodSandbox: {e}\n{}", d.log_text()))
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(id1, id2);
    let listed = d.pods().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(leases(&net), leases_before + 1, "one lease for one pod");

    d.remove_pod(&id1).await;
    assert!(d.pods().await.is_empty());
    assert_eq!(leases(&net), leases_before);
    d.stop().await;
    eprintln!("concurrent_run: {:?}", t.elapsed());
}
