//! Issue 19, the pod's infra process: in a pod whose containers share a PID namespace
//! (Kubernetes `shareProcessNamespace`), the infra process is the `/proc/1` every container sees.
//! It must hand a container nothing of the host: no capability, no way to gain one, no seccomp
//! freedom, and a root and mount table of its own, not the host's. The pod still works as a
//! shared-PID pod: containers see each other, PID 1 reaps orphans, and stopping and removing the
//! pod leaves no process.

use std::collections::HashSet;
use std::time::Duration;

use carapace_e2e::node::{Node, security, share_pid_namespace, shared_pid_container};
use carapace_e2e::{cri, eventually};

/// A host process, named by pid and start time (field 22 of its stat) so a recycled pid is not
/// taken for it.
fn start_time(pid: i64) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // A zombie is gone as far as the pod is concerned: only the host's init has to reap it.
    (fields.first() != Some(&"Z")).then(|| fields.get(19).map(|s| s.to_string()))?
}

/// The (device, root, mount point) of each line of a mountinfo text.
fn mount_keys(mountinfo: &str) -> HashSet<(String, String, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((
                f.get(2)?.to_string(),
                f.get(3)?.to_string(),
                f.get(4)?.to_string(),
            ))
        })
        .collect()
}

/// A capability mask of a /proc status text.
fn mask(status: &str, set: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{set}:")))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {set} in {status}"))
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// Runs `sh -c script` in container `id`; returns (exit code, stdout, stderr).
async fn sh(n: &mut Node, id: &str, script: &str) -> (i32, String, String) {
    let r = n
        .exec_sync(id, &["sh", "-c", script], 10)
        .await
        .unwrap_or_else(|e| panic!("ExecSync {script}: {e}\n{}", n.d.log_text()));
    (
        r.exit_code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

#[tokio::test]
async fn shared_pid_pod_infra_is_powerless() {
    let mut n = Node::start(70).await;
    let mut pod = n.pod("infra", "0d1e2f30-0000-4000-8000-000000000070");
    share_pid_namespace(&mut pod);
    let pod_id = n.run_pod(&pod).await;
    let (_, info) = n.d.pod_status(&pod_id).await;
    let infra = info["infraPid"]
        .as_i64()
        .unwrap_or_else(|| panic!("a shared-PID pod without an infra process: {info}"));
    let infra_start = start_time(infra).expect("the infra process runs");

    // Something only the host's root holds: a file in the test's own dir.
    let marker = n.d.config.dir().join("host-root-marker");
    std::fs::write(&marker, "only-on-the-host\n").unwrap();

    // The strongest attacker the pod allows: root, the default capabilities and SYS_PTRACE.
    let mut attacker = shared_pid_container("attacker", &["sleep", "3601"]);
    security(&mut attacker).capabilities = Some(cri::Capability {
        add_capabilities: vec!["SYS_PTRACE".into()],
        ..Default::default()
    });
    let attacker = n.create_started(&pod_id, &pod, &attacker).await;
    let watcher = shared_pid_container("watcher", &["sleep", "3602"]);
    let watcher = n.create_started(&pod_id, &pod, &watcher).await;

    // The attacker really is that strong: CAP_SYS_PTRACE (bit 19) is in its effective set.
    let (_, own, _) = sh(&mut n, &attacker, "cat /proc/self/status").await;
    assert_ne!(mask(&own, "CapEff") & (1 << 19), 0, "{own}");

    // PID 1 is the infra process, and it holds nothing.
    let (code, status, err) = sh(&mut n, &attacker, "cat /proc/1/status").await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(field(&status, "NSpid"), "1", "{status}");
    let host_view = std::fs::read_to_string(format!("/proc/{infra}/status")).unwrap();
    assert_eq!(field(&host_view, "NSpid"), format!("{infra}\t1"));
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            mask(&status, set),
            0,
            "PID 1 has {set} capabilities:\n{status}"
        );
    }
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{status}");
    assert_eq!(field(&status, "Seccomp"), "2", "{status}");

    // Its root is not the host's: not the marker, none of the host's top-level names.
    let (_, leaked, _) = sh(
        &mut n,
        &attacker,
        &format!("cat /proc/1/root{}", marker.display()),
    )
    .await;
    assert!(
        !leaked.contains("only-on-the-host"),
        "the host's root through /proc/1/root: {leaked}"
    );
    let (code, listing, err) = sh(&mut n, &attacker, "ls -a /proc/1/root/").await;
    assert_eq!(code, 0, "ls /proc/1/root: {err}");
    let host_top: HashSet<String> = std::fs::read_dir("/")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let shown: Vec<&str> = listing
        .split_whitespace()
        .filter(|e| host_top.contains(*e))
        .collect();
    assert!(shown.is_empty(), "/proc/1/root shows the host's {shown:?}");

    // Nor are its mounts the host's.
    let (code, mountinfo, err) = sh(&mut n, &attacker, "cat /proc/1/mountinfo").await;
    assert_eq!(code, 0, "{err}");
    let host = mount_keys(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    let common: Vec<_> = mount_keys(&mountinfo)
        .intersection(&host)
        .cloned()
        .collect();
    assert!(
        common.is_empty(),
        "PID 1 lists {} of the host's mounts, e.g. {:?}",
        common.len(),
        common.first()
    );

    // The pod still shares its PID namespace: the watcher sees the attacker's process.
    let (_, ps, _) = sh(&mut n, &watcher, "ps").await;
    assert!(ps.contains("sleep 3601"), "{ps}");

    // PID 1 still reaps: an orphan is reparented to it and, once it exits, gone, not a zombie.
    let (_, orphan, _) = sh(&mut n, &watcher, "sleep 2 >/dev/null 2>&1 & echo $!").await;
    let orphan = orphan.trim().to_owned();
    let (_, st, _) = sh(&mut n, &watcher, &format!("cat /proc/{orphan}/status")).await;
    assert_eq!(field(&st, "PPid"), "1", "{st}");
    let w = watcher.clone();
    let rt = n.rt.clone();
    eventually(Duration::from_secs(10), "PID 1 to reap the orphan", || {
        let (mut rt, w, orphan) = (rt.clone(), w.clone(), orphan.clone());
        async move {
            let r = rt
                .exec_sync(cri::ExecSyncRequest {
                    container_id: w,
                    cmd: vec!["cat".into(), format!("/proc/{orphan}/stat")],
                    timeout: 5,
                })
                .await
                .ok()?
                .into_inner();
            (r.exit_code != 0).then_some(())
        }
    })
    .await;

    // The containers' processes, as the host numbers them, to check they go with the pod.
    let mut procs = vec![(infra, infra_start)];
    for id in [&attacker, &watcher] {
        let pid = n.status(id).await.1["pid"].as_i64().unwrap();
        procs.push((pid, start_time(pid).expect("the container runs")));
    }
    std::fs::remove_file(&marker).unwrap();

    // A restarted daemon still finds PID 1 (by pid and start time) to kill with the pod.
    n.d = n.d.restart().await;
    n.rt = n.d.runtime().await;
    let (st, _) = n.d.pod_status(&pod_id).await;
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    n.remove_all(&pod_id).await;
    for (pid, started) in procs {
        assert_ne!(
            start_time(pid),
            Some(started),
            "process {pid} outlived its pod"
        );
    }
}
