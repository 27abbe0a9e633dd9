//! CreateContainer requests a hostile or buggy client sends: a seccomp profile path that is no
//! profile, resources the node cannot give. Each is refused with InvalidArgument, quickly, and
//! leaves the daemon and the pod as they were (a kubelet retries a failed create for ever).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carapace_e2e::cri;
use carapace_e2e::node::{Node, container, dirs_below, resources, security};
use tonic::Code;

/// The daemon's resident memory, KiB.
/// The daemon's anonymous memory: what reading a profile would grow. Its file-backed pages (code
/// the new calls run, faulted in 64 KiB at a time) are not the concern and moved the total by
/// 4.1 MiB in a CI run.
fn daemon_rss_kib(n: &Node) -> i64 {
    carapace_e2e::proc_status_field(n.d.pid().as_raw() as i64, "RssAnon")
}

/// Class: a profile path naming a device, a FIFO or a huge file. The daemon read the whole file
/// into memory: `/dev/urandom` grew it until the OOM killer took it (and every pod's CRI with
/// it), `/dev/zero` ran to the deadline, a FIFO parked a daemon thread for ever.
#[tokio::test]
async fn seccomp_profiles_that_are_not_small_regular_files_are_refused_at_once() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(100, "profiles", "0d1e2f30-0000-4000-8000-000000000100").await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("profile.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo: {made}");
    // A valid profile but for its size: only the size can be why it is refused.
    let big = dir.path().join("big.json");
    let mut text = String::from(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
    text.push_str(&" ".repeat(10 << 20));
    std::fs::write(&big, text).unwrap();

    let rss_before = daemon_rss_kib(&n);
    // The FIFO first: on a daemon that reads without bounds it fails the test harmlessly, before
    // the devices could grow it.
    let paths: [PathBuf; 4] = [
        fifo.clone(),
        big.clone(),
        "/dev/zero".into(),
        "/dev/urandom".into(),
    ];
    for p in &paths {
        let mut c = container("confined", &["true"]);
        security(&mut c).seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: p.display().to_string(),
        });
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(1), n.create(&pod_id, &pod, &c)).await;
        match r {
            Err(_) => panic!("a profile at {} was not refused within 1 s", p.display()),
            Ok(Ok(id)) => {
                n.remove_container(&id).await;
                panic!("a profile at {} was accepted", p.display());
            }
            Ok(Err(e)) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{}: {e}", p.display());
                assert!(
                    e.message().contains(&p.display().to_string()),
                    "{}: {e}",
                    p.display()
                );
            }
        }
        eprintln!("{} refused in {:?}", p.display(), t.elapsed());
    }
    let rss_after = daemon_rss_kib(&n);
    assert!(
        rss_after <= rss_before + 4096,
        "the daemon grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Still serving: a small regular profile is taken.
    let ok = dir.path().join("ok.json");
    std::fs::write(&ok, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
    let mut c = container("confined", &["true"]);
    security(&mut c).seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Localhost as i32,
        localhost_ref: ok.display().to_string(),
    });
    let id = n
        .create(&pod_id, &pod, &c)
        .await
        .unwrap_or_else(|e| panic!("a small profile: {e}\n{}", n.d.log_text()));
    n.remove_container(&id).await;

    n.remove_all(&pod_id).await;
}

/// The pod's cgroup directory in every v1 hierarchy (or the one v2 directory) that has it.
fn pod_cgroup_dirs(uid: &str) -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|h| h.path().join(format!("kubepods/besteffort/pod{uid}")))
        .filter(|d| d.is_dir())
        .collect()
}

/// Every directory below the pod's cgroups: the containers' cgroups.
fn container_cgroups(uid: &str) -> Vec<String> {
    let mut v: Vec<String> = pod_cgroup_dirs(uid)
        .iter()
        .flat_map(|d| dirs_below(d, 2))
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Class: limits the kernel refuses. CreateContainer made the container's cgroup, failed to set
/// the limit (Internal) and left the cgroup in every hierarchy: RemovePodSandbox then failed
/// with EBUSY for ever. Each value is refused up front, naming it, and nothing is left.
#[tokio::test]
async fn resources_the_node_cannot_give_are_refused_and_leave_no_cgroup() {
    let uid = "0d1e2f30-0000-4000-8000-000000000101";
    let (mut n, pod, pod_id) = Node::with_running_pod(101, "badres", uid).await;
    assert!(!pod_cgroup_dirs(uid).is_empty(), "the pod has no cgroup");
    let before = container_cgroups(uid);
    let online = read(Path::new("/sys/devices/system/cpu/online"));
    eprintln!("online CPUs: {}", online.trim());
    type Set = fn(&mut cri::LinuxContainerResources);
    let cases: [(&str, &str, Set); 8] = [
        ("cpuset_cpus", "\"99\"", |r| r.cpuset_cpus = "99".into()),
        ("cpuset_cpus", "\"0-\"", |r| r.cpuset_cpus = "0-".into()),
        ("cpuset_cpus", "\"3-1\"", |r| r.cpuset_cpus = "3-1".into()),
        ("cpuset_mems", "\"99\"", |r| r.cpuset_mems = "99".into()),
        ("cpu_quota", "1", |r| r.cpu_quota = 1),
        ("cpu_period", "1099511627776", |r| r.cpu_period = 1 << 40),
        ("cpu_period", "999", |r| {
            r.cpu_period = 999;
            r.cpu_quota = 50_000;
        }),
        ("memory_swap_limit", "33554432", |r| {
            r.memory_limit_in_bytes = 64 << 20;
            r.memory_swap_limit_in_bytes = 32 << 20;
        }),
    ];
    for (field, value, set) in &cases {
        let mut c = container("limited", &["sleep", "3600"]);
        set(resources(&mut c));
        match n.create(&pod_id, &pod, &c).await {
            Ok(id) => {
                n.remove_container(&id).await;
                panic!("{field} {value} was accepted");
            }
            Err(e) => {
                assert_eq!(e.code(), Code::InvalidArgument, "{field} {value}: {e}");
                let m = e.message();
                assert!(
                    m.contains(field) && m.contains(value.trim_matches('"')),
                    "{field} {value}: {e}"
                );
            }
        }
        assert_eq!(container_cgroups(uid), before, "after {field} {value}");
    }
    assert!(n.list(cri::ContainerFilter::default()).await.is_empty());

    // The same values in UpdateContainerResources are refused the same way, and the container's
    // limits stay what they were.
    let id = n
        .create_started(&pod_id, &pod, &container("limited", &["sleep", "3600"]))
        .await;
    let cpu_dir = pod_cgroup_dirs(uid)
        .into_iter()
        .map(|d| d.join(&id))
        .find(|d| d.join("cpu.cfs_quota_us").exists());
    let quota_before = cpu_dir.as_ref().map(|d| read(&d.join("cpu.cfs_quota_us")));
    for (field, value, set) in &cases {
        let mut r = cri::LinuxContainerResources::default();
        set(&mut r);
        let e =
            n.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(r),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .expect_err(&format!("update with {field} {value} was accepted"));
        assert_eq!(e.code(), Code::InvalidArgument, "{field} {value}: {e}");
        assert!(e.message().contains(field), "{field} {value}: {e}");
    }
    assert_eq!(
        cpu_dir.as_ref().map(|d| read(&d.join("cpu.cfs_quota_us"))),
        quota_before
    );
    n.stop_container(&id, 0).await;
    n.remove_container(&id).await;
    assert_eq!(container_cgroups(uid), before);

    n.remove_all(&pod_id).await;
}

/// Class: a limit the kernel refuses that no up-front check sees. On cgroup v1 a child's CPU
/// quota may not exceed its parent's, so a container asking more than its pod's quota fails
/// after its cgroup is made: that cgroup must go with the failed create.
#[tokio::test]
async fn a_limit_the_kernel_refuses_after_the_cgroup_is_made_leaves_no_cgroup() {
    let uid = "0d1e2f30-0000-4000-8000-000000000102";
    let mut n = Node::start(102).await;
    let mut pod = n.pod("overquota", uid);
    let linux = pod.linux.get_or_insert_default();
    linux.resources = Some(cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 10_000,
        ..Default::default()
    });
    let pod_id = n.run_pod(&pod).await;
    let before = container_cgroups(uid);
    let cpu_pod = pod_cgroup_dirs(uid)
        .into_iter()
        .find(|d| d.join("cpu.cfs_quota_us").exists());
    let v1 = cpu_pod.is_some();
    if let Some(d) = &cpu_pod {
        assert_eq!(read(&d.join("cpu.cfs_quota_us")).trim(), "10000");
    }

    let mut c = container("greedy", &["sleep", "3600"]);
    let r = resources(&mut c);
    r.cpu_period = 100_000;
    r.cpu_quota = 50_000;
    match n.create(&pod_id, &pod, &c).await {
        Ok(id) => {
            // cgroup v2 takes the smaller of the two instead of refusing.
            assert!(!v1, "a quota above the pod's was accepted on cgroup v1");
            n.remove_container(&id).await;
        }
        Err(e) => {
            assert!(v1, "{e}");
            eprintln!("refused: {e}");
        }
    }
    assert_eq!(container_cgroups(uid), before);
    assert!(n.list(cri::ContainerFilter::default()).await.is_empty());

    // The pod is unharmed: a container within its quota runs.
    let mut c = container("modest", &["sleep", "3600"]);
    let r = resources(&mut c);
    r.cpu_period = 100_000;
    r.cpu_quota = 5_000;
    n.create_started(&pod_id, &pod, &c).await;

    n.remove_all(&pod_id).await;
}
