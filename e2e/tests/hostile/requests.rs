//! Requests a hostile or buggy client sends, answered with a clear status and nothing worse.

use std::process::Stdio;
use std::time::{Duration, Instant};

use carapace_e2e::node::{Node, container, security, share_pid_namespace};
use carapace_e2e::{Daemon, carapace_bin, cri, eventually, processes_naming};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tonic::Code;

/// A 100 KB id, image reference or sysctl echoed whole in a status passed the 16 KiB of headers
/// clients accept: they saw RESOURCE_EXHAUSTED instead of the answer.
#[tokio::test]
async fn a_huge_input_gets_its_status_with_a_short_message() {
    let d = Daemon::start().await;
    let mut rt = d.runtime().await;
    let id = "f".repeat(100_000);
    let e = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::NotFound,
        "{}",
        &e.message()[..200.min(e.message().len())]
    );
    assert!(e.message().len() < 1024, "{} bytes", e.message().len());
    assert!(e.message().contains("bytes cut"), "{}", e.message());
    let e = d
        .images()
        .await
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: format!("registry.e2e.test/{}", "x".repeat(100_000)),
                ..Default::default()
            }),
            verbose: false,
        })
        .await;
    match e {
        Ok(r) => assert!(r.into_inner().image.is_none()),
        Err(e) => {
            assert_ne!(e.code(), Code::ResourceExhausted);
            assert!(e.message().len() < 1024, "{} bytes", e.message().len());
        }
    }
    d.stop().await;
}

/// A relative log directory was made relative to the daemon's working directory.
#[tokio::test]
async fn a_relative_log_directory_is_refused() {
    let d = Daemon::start().await;
    let mut rt = d.runtime().await;
    let dir = "carapace-e2e-relative-logs";
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig {
                log_directory: format!("{dir}/pod"),
                ..carapace_e2e::node::pod_config("rel", "0d1e2f30-0000-4000-8000-0000000000a0")
            }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("log_directory"), "{e}");
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", d.pid())).unwrap();
    assert!(!cwd.join(dir).exists(), "made under {}", cwd.display());
    assert!(d.pods().await.is_empty());
    d.stop().await;
}

/// A running busybox container `sleep 3600` in a new pod of node `n`; returns the pod's config
/// and id and the container's id.
async fn pod_with_sleeper(
    n: &mut Node,
    name: &str,
    uid: &str,
) -> (cri::PodSandboxConfig, String, String) {
    let pod = n.pod(name, uid);
    let pod_id = n.run_pod(&pod).await;
    let c = n
        .create_started(&pod_id, &pod, &container("sleeper", &["sleep", "3600"]))
        .await;
    (pod, pod_id, c)
}

/// A NUL cannot reach exec(2): ExecSync said Internal (the helper's spawn failing) where
/// CreateContainer says InvalidArgument.
#[tokio::test]
async fn an_exec_sync_argument_with_a_nul_is_invalid() {
    let mut n = Node::start(120).await;
    let (_, pod_id, c) =
        pod_with_sleeper(&mut n, "execnul", "0d1e2f30-0000-4000-8000-000000000120").await;
    for cmd in [&["echo", "a\0b"][..], &["ec\0ho", "x"][..]] {
        let e = n.exec_sync(&c, cmd, 5).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{cmd:?}: {e}");
        assert!(e.message().contains("NUL"), "{e}");
    }
    // The container is unharmed.
    let r = n.exec_sync(&c, &["echo", "ok"], 5).await.unwrap();
    assert_eq!((r.exit_code, r.stdout.as_slice()), (0, &b"ok\n"[..]));
    n.remove_all(&pod_id).await;
}

/// StartContainer racing RemoveContainer (a kubelet removing a pod it just started) said
/// FailedPrecondition "container.json not found" or "monitor.sock not found": a container
/// removed is NotFound, and the race leaves nothing behind.
#[tokio::test]
async fn start_racing_remove_is_not_found() {
    let uid = "0d1e2f30-0000-4000-8000-000000000121";
    let (mut n, pod, pod_id) = Node::with_running_pod(121, "race", uid).await;
    let mut outcomes = Vec::new();
    for i in 0..20u64 {
        let c = n
            .create(
                &pod_id,
                &pod,
                &container(&format!("r{i}"), &["sleep", "3600"]),
            )
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", n.d.log_text()));
        let (mut a, mut b) = (n.rt.clone(), n.rt.clone());
        // Either call first, the other from "at once" to "while the first is under way".
        let (start_after, remove_after) = match (i % 2, Duration::from_millis(i / 2 % 5 * 4)) {
            (0, d) => (Duration::ZERO, d),
            (_, d) => (d, Duration::ZERO),
        };
        let start = async {
            tokio::time::sleep(start_after).await;
            a.start_container(cri::StartContainerRequest {
                container_id: c.clone(),
            })
            .await
        };
        let remove = async {
            tokio::time::sleep(remove_after).await;
            b.remove_container(cri::RemoveContainerRequest {
                container_id: c.clone(),
            })
            .await
        };
        let (started, removed) = tokio::join!(start, remove);
        if let Err(e) = &removed {
            panic!("RemoveContainer {c} (try {i}): {e}\n{}", n.d.log_text());
        }
        match &started {
            Ok(_) => outcomes.push("started"),
            Err(e) if e.code() == Code::NotFound => outcomes.push("not found"),
            Err(e) => panic!(
                "StartContainer racing RemoveContainer (try {i}): {:?} {}",
                e.code(),
                e.message()
            ),
        }
        let e =
            n.rt.container_status(cri::ContainerStatusRequest {
                container_id: c.clone(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e}");
    }
    eprintln!("start outcomes: {outcomes:?}");
    // Node::finish checks no container, cgroup, mount or process of them is left.
    n.remove_all(&pod_id).await;
}

/// A container in a stopped pod (the pod being torn down) could not start for an obscure reason:
/// "fork: Out of memory" (the pod's PID namespace has lost its PID 1). The pod is not ready.
#[tokio::test]
async fn start_in_a_stopped_pod_is_failed_precondition() {
    let mut n = Node::start(122).await;
    let mut pod = n.pod("stopped", "0d1e2f30-0000-4000-8000-000000000122");
    share_pid_namespace(&mut pod);
    let pod_id = n.run_pod(&pod).await;
    let mut cfg = container("late", &["sleep", "3600"]);
    security(&mut cfg)
        .namespace_options
        .get_or_insert_default()
        .pid = cri::NamespaceMode::Pod as i32;
    let c = n
        .create(&pod_id, &pod, &cfg)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", n.d.log_text()));
    n.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    let e =
        n.rt.start_container(cri::StartContainerRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("not ready"), "{e}");
    assert!(!e.message().contains("Out of memory"), "{e}");
    let (st, _) = n.status(&c).await;
    assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);
    n.remove_all(&pod_id).await;
}

/// ReopenContainerLog onto a directory where the log file goes said Internal: the node's state
/// is wrong, not the daemon, and the caller must be told which path.
#[tokio::test]
async fn reopen_log_onto_a_directory_is_failed_precondition() {
    let mut n = Node::start(123).await;
    let (_, pod_id, c) =
        pod_with_sleeper(&mut n, "reopen", "0d1e2f30-0000-4000-8000-000000000123").await;
    let log = n.log_path(&c).await;
    std::fs::rename(&log, log.with_extension("log.1")).unwrap();
    std::fs::create_dir(&log).unwrap();
    let e =
        n.rt.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains(&log.display().to_string()), "{e}");
    // Once the node is put right, the log is reopened.
    std::fs::remove_dir(&log).unwrap();
    n.rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: c.clone(),
    })
    .await
    .unwrap();
    assert!(log.is_file());
    n.remove_all(&pod_id).await;
}

/// Whether `pid` runs (not gone, not a zombie waiting for the test to reap it).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|st| st != 'Z' && st != 'X')
    })
}

/// A stop held up by an in-flight call (an ExecSync of `sleep 60`) logged "carapace stopped"
/// and gave the root lock back after the 10 s grace while the daemon lived on until the call
/// ended: a second daemon started on the root, and the first, exiting, removed the second's
/// `carapace.exe`, so every RunPodSandbox on it failed. The lock must be held until the process
/// is gone, and the stop must end by its deadline.
#[tokio::test]
async fn a_held_up_stop_keeps_the_root_until_the_daemon_exits_by_its_deadline() {
    let uid = "0d1e2f30-0000-4000-8000-000000000124";
    let mut n = Node::start(124).await;
    let (_, pod_id, c) = pod_with_sleeper(&mut n, "held", uid).await;
    let mut rt = n.rt.clone();
    let exec = tokio::spawn(async move {
        rt.exec_sync(cri::ExecSyncRequest {
            container_id: c,
            cmd: vec!["sleep".into(), "60".into()],
            timeout: 60,
        })
        .await
    });
    // The call is in flight: its helper runs.
    let state = n.state().to_path_buf();
    eventually(Duration::from_secs(10), "the exec helper to run", || {
        let found = processes_naming(&state)
            .iter()
            .any(|(_, cmd)| cmd.contains(" exec "));
        async move { found.then_some(()) }
    })
    .await;

    let first = n.d.pid();
    let cfg_path = n.d.config.write();
    let stopping = Instant::now();
    kill(first, Signal::SIGTERM).unwrap();
    let mut refusals = 0;
    while alive(first.as_raw()) {
        assert!(
            stopping.elapsed() < Duration::from_secs(17),
            "the daemon still runs {:?} after SIGTERM (its deadline is 15 s):\n{}",
            stopping.elapsed(),
            n.d.log_text()
        );
        let mut second = tokio::process::Command::new(carapace_bin())
            .args(["serve", "--config"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stderr = second.stderr.take().unwrap();
        match tokio::time::timeout(Duration::from_secs(5), second.wait()).await {
            Ok(status) => {
                let mut err = String::new();
                stderr.read_to_string(&mut err).await.unwrap();
                assert!(!status.unwrap().success(), "{err}");
                assert!(err.contains("carapace.lock"), "{err}");
                assert!(err.contains(&format!("pid {first}")), "{err}");
                refusals += 1;
            }
            // Still running: it took the root, which only a dead first daemon may have let go.
            Err(_) => {
                let first_alive = alive(first.as_raw());
                if let Some(pid) = second.id() {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
                }
                let _ = tokio::time::timeout(Duration::from_secs(15), second.wait()).await;
                assert!(
                    !first_alive,
                    "a second daemon started on the root {:?} after SIGTERM while the first \
                     (pid {first}) still runs:\n{}",
                    stopping.elapsed(),
                    n.d.log_text()
                );
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let took = stopping.elapsed();
    assert!(
        refusals > 0,
        "no second daemon was tried while the first ran"
    );
    assert!(
        took >= Duration::from_secs(10),
        "the call was not held up: {took:?}"
    );
    let log = n.d.log_text();
    assert!(log.contains("carapace stopped"), "{log}");
    // The client's call ended with the daemon.
    let _ = exec.await.unwrap();

    // The root is free: a second daemon serves, with its own sealed binary intact.
    let cfg = n.d.kill().await;
    n.d = Daemon::start_with(cfg).await;
    n.rt = n.d.runtime().await;
    assert!(n.state().join("carapace.exe").is_file());
    let (_, pod2, c2) = pod_with_sleeper(&mut n, "held2", &uid.replace("-4000-", "-4001-")).await;
    let r = n.exec_sync(&c2, &["echo", "served"], 5).await.unwrap();
    assert_eq!(r.stdout, b"served\n");
    n.remove_pod(&pod2).await;
    n.remove_all(&pod_id).await;
}
