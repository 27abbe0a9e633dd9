//! Container escapes through the runtime's own processes (issue 19), through the real daemon:
//! the exec helper must not be readable by the container between joining its namespaces and
//! exec'ing (CVE-2016-9962: a dumpable helper shows its host environment and fds through
//! `/proc/<pid>`), and an exec must never enter the namespaces of a process that merely took
//! over the pid recorded for the container's init. Every test removes what it made and ends with
//! `Node::finish`, which checks that no container, pod, cgroup, mount or process is left.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use carapace_e2e::node::{Node, container};
use carapace_e2e::{cri, eventually};
use tonic::Code;

/// `PATH` entries that each cost the exec helper an ELOOP lookup (`/l` is a symlink to itself in
/// the container): they hold the helper, its user and capabilities already the container's,
/// between its last setup step and exec for a good part of a second, long enough to be seen.
fn slow_path() -> String {
    let mut p = "/l:".repeat(20_000);
    p.push_str("/bin");
    p
}

/// The container reads `/proc/<pid>/environ` of every process it can see, in a loop, and notes
/// when it saw the exec helper's own environment (the daemon's request to it is there).
const WATCHER: &str = "/bin/busybox ln -s /l /l; \
    while :; do \
      if /bin/cat /proc/[0-9]*/environ 2>/dev/null | /bin/busybox grep -q _CARAPACE_EXEC_REQUEST; \
      then /bin/echo leak >> /seen; fi; \
    done";

/// CVE-2016-9962 class: a root container (default capabilities, no CAP_SYS_PTRACE) watching its
/// PID namespace never reads the environment of an ExecSync helper before the helper execs the
/// command. The container's own processes, the command included once it runs, stay readable to
/// each other: the kernel makes an exec'd process dumpable again.
#[tokio::test]
async fn the_exec_helper_is_not_dumpable_before_it_execs() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(95, "dumpable", "0d1e2f30-0000-4000-8000-000000000095").await;
    let mut watcher = container("watcher", &["/bin/sh", "-c", WATCHER]);
    watcher.envs = vec![cri::KeyValue {
        key: "PATH".into(),
        value: slow_path().into(),
    }];
    let id = n.create_started(&pod_id, &pod, &watcher).await;

    // `sleep` by name: found at the end of the slow PATH, after the helper's long lookup.
    for _ in 0..5 {
        let r = n.exec_sync(&id, &["sleep", "0"], 30).await.unwrap();
        assert_eq!(r.exit_code, 0, "{r:?}");
    }
    let seen = n
        .exec_sync(&id, &["/bin/sh", "-c", "/bin/cat /seen 2>/dev/null"], 30)
        .await
        .unwrap();
    let seen = String::from_utf8_lossy(&seen.stdout).into_owned();
    assert!(
        !seen.contains("leak"),
        "the container read an exec helper's environment before it exec'd ({} times)",
        seen.lines().count()
    );

    // Dumpable again after exec: the init's environment and, while it runs, an exec'd
    // command's are readable to another process of the container, and `ps` works.
    let init = n
        .exec_sync(&id, &["/bin/cat", "/proc/1/environ"], 30)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&init.stdout).contains("PATH=/l:"),
        "{init:?}"
    );
    let mut rt = n.rt.clone();
    let sleeper_id = id.clone();
    let sleeper = tokio::spawn(async move {
        rt.exec_sync(cri::ExecSyncRequest {
            container_id: sleeper_id,
            cmd: vec!["/bin/sleep".into(), "3".into()],
            timeout: 30,
        })
        .await
    });
    let probe = "for p in /proc/[0-9]*; do \
        if /bin/busybox grep -q '^/bin/sleep' $p/cmdline 2>/dev/null \
           && /bin/cat $p/environ 2>/dev/null | /bin/busybox grep -q PATH=; \
        then /bin/echo readable; fi; done";
    eventually(Duration::from_secs(3), "the exec'd sleep to show", || {
        let mut rt = n.rt.clone();
        let id = id.clone();
        async move {
            let r = rt
                .exec_sync(cri::ExecSyncRequest {
                    container_id: id,
                    cmd: vec!["/bin/sh".into(), "-c".into(), probe.into()],
                    timeout: 30,
                })
                .await
                .ok()?
                .into_inner();
            String::from_utf8_lossy(&r.stdout)
                .contains("readable")
                .then_some(())
        }
    })
    .await;
    sleeper.await.unwrap().unwrap();
    let ps = n.exec_sync(&id, &["/bin/busybox", "ps"], 30).await.unwrap();
    assert_eq!(ps.exit_code, 0, "{ps:?}");
    assert!(
        String::from_utf8_lossy(&ps.stdout).contains("/bin/sh"),
        "{ps:?}"
    );

    n.remove_all(&pod_id).await;
}

/// The pid recorded for a container's init names another process (the init died and its pid
/// was reused, here simulated by rewriting the record): an exec is refused and never runs in
/// that process's namespaces (a UTS namespace of its own named `imposter`).
#[tokio::test]
async fn exec_refuses_an_init_pid_taken_by_another_process() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(96, "reused", "0d1e2f30-0000-4000-8000-000000000096").await;
    let id = n
        .create_started(&pod_id, &pod, &container("victim", &["sleep", "1000"]))
        .await;
    let before = n.exec_sync(&id, &["hostname"], 10).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&before.stdout).trim(),
        "reused-host"
    );

    let mut imposter = std::process::Command::new("unshare")
        .args([
            "--uts",
            "--net",
            "sh",
            "-c",
            "hostname imposter && exec sleep 1000",
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let imposter_pid = imposter.id();
    eventually(Duration::from_secs(5), "the imposter to sleep", || {
        let comm = std::fs::read_to_string(format!("/proc/{imposter_pid}/comm"));
        async move { comm.is_ok_and(|c| c.trim() == "sleep").then_some(()) }
    })
    .await;

    let record = n.state().join("containers").join(&id).join("runtime.json");
    let original = std::fs::read_to_string(&record).unwrap();
    let mut started: serde_json::Value = serde_json::from_str(&original).unwrap();
    started["pid"] = serde_json::json!(imposter_pid);
    std::fs::write(&record, started.to_string()).unwrap();

    let r = n.exec_sync(&id, &["hostname"], 10).await;
    std::fs::write(&record, &original).unwrap();
    let _ = imposter.kill();
    let _ = imposter.wait();
    match r {
        Ok(r) => panic!(
            "the exec ran in the imposter's namespaces: exit {}, stdout {:?}, stderr {:?}",
            r.exit_code,
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        ),
        Err(e) => assert!(
            matches!(e.code(), Code::FailedPrecondition | Code::NotFound),
            "{e}"
        ),
    }
    // The record put back, the container is its own again.
    let after = n.exec_sync(&id, &["hostname"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&after.stdout).trim(), "reused-host");
    assert!(Path::new(&record).exists());

    n.remove_all(&pod_id).await;
}
