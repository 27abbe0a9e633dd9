//! Containers through the real daemon: a busybox image pulled from a real registry on loopback
//! (see `carapace_e2e::registry`), a pod on a real bridge network, then the container lifecycle
//! as the kubelet drives it — create, start, status, CRI logs, list filters, ExecSync, stop,
//! remove — plus containers that exit by themselves, a read-only rootfs, kubelet retries, log
//! reopening, a daemon restart and a daemon killed with SIGKILL, bad requests and a streaming
//! exec over WebSocket. Limits, identity and isolation are in `containers_isolation.rs`. Every
//! test removes what it made and ends with `Node::finish`, which checks that no container, pod,
//! cgroup, mount or process is left.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carapace_e2e::node::{LogLine, Node, container, cri_log, log_until, pod_cgroups};
use carapace_e2e::registry::Registry;
use carapace_e2e::{Daemon, DaemonConfig, cri, eventually, mounts_under, processes_naming};
use tonic::Code;

/// A container logging `tick <n>` every 100 ms.
fn ticker() -> cri::ContainerConfig {
    container(
        "ticker",
        &[
            "sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
        ],
    )
}

/// `2006-01-02T15:04:05.999999999Z07:00`, loosely: a date, a `T`, a time, a zone.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with('Z') || matches!(b[b.len() - 6], b'+' | b'-'))
}

#[tokio::test]
async fn a_container_runs_logs_execs_stops_and_is_removed() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(10, "life", "0d1e2f30-0000-4000-8000-000000000010").await;

    let before = SystemTimeNanos::now();
    let cfg = container("main", &["sh", "-c", "echo out; echo err >&2; sleep 1000"]);
    let id = n.create_started(&pod_id, &pod, &cfg).await;
    let (st, info) = n.status(&id).await;
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    assert!(st.started_at >= before.0, "started_at {}", st.started_at);
    assert!(st.created_at > 0 && st.created_at <= st.started_at);
    assert_eq!(st.metadata.as_ref().unwrap().name, "main");
    assert_eq!(st.labels["c"], "main");
    assert_eq!(st.image.as_ref().unwrap().image, Registry::busybox());
    let pid = info["pid"].as_i64().expect("verbose info has the pid");
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} is not running"
    );

    // The log file, in the CRI format, under the pod's log directory.
    let log_path = PathBuf::from(&st.log_path);
    assert_eq!(
        log_path,
        Path::new(&pod.log_directory).join("main/0.log"),
        "log path"
    );
    let lines = eventually(Duration::from_secs(5), "both log lines", || {
        let lines = cri_log(&log_path);
        async move { (lines.len() >= 2).then_some(lines) }
    })
    .await;
    for (ts, _, _, _) in &lines {
        assert!(is_rfc3339(ts), "timestamp {ts:?} in {lines:?}");
    }
    let mut streams: Vec<_> = lines
        .iter()
        .map(|(_, s, t, c)| (s.as_str(), t.as_str(), c.as_str()))
        .collect();
    streams.sort();
    assert_eq!(streams, [("stderr", "F", "err"), ("stdout", "F", "out")]);

    // The container's monitor (its parent) sleeps while nothing happens: a node with a hundred
    // idle pods should not pay a hundred timers. (Once quiet for a second it wakes one time, to
    // give back what setting up used.)
    let monitor = carapace_e2e::proc_status_field(pid, "PPid");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let wakeups = carapace_e2e::proc_status_field(monitor, "voluntary_ctxt_switches");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        carapace_e2e::proc_status_field(monitor, "voluntary_ctxt_switches"),
        wakeups,
        "the idle monitor {monitor} woke up"
    );

    // The kubelet's poll, unfiltered (kept between calls while nothing changes).
    let full = |l: Vec<cri::Container>| l.into_iter().map(|c| (c.id, c.state)).collect::<Vec<_>>();
    let running = cri::ContainerState::ContainerRunning as i32;
    assert_eq!(
        full(n.list(Default::default()).await),
        [(id.clone(), running)]
    );

    // A second container, created but not started, for the list filters.
    let idle = n
        .create(&pod_id, &pod, &container("idle", &["sleep", "1000"]))
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", n.d.log_text()));
    let ids = |l: Vec<cri::Container>| l.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let mut both = vec![id.clone(), idle.clone()];
    both.sort();
    let mut want = vec![
        (id.clone(), running),
        (idle.clone(), cri::ContainerState::ContainerCreated as i32),
    ];
    want.sort();
    assert_eq!(full(n.list(Default::default()).await), want);
    let by_pod = n
        .list(cri::ContainerFilter {
            pod_sandbox_id: pod_id.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(by_pod), both);
    let other_pod = n
        .list(cri::ContainerFilter {
            pod_sandbox_id: "f".repeat(64),
            ..Default::default()
        })
        .await;
    assert!(other_pod.is_empty(), "{other_pod:?}");
    let running = n
        .list(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(running), [id.as_str()]);
    let created = n
        .list(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerCreated as i32,
            }),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(created), [idle.as_str()]);
    let labelled = n
        .list(cri::ContainerFilter {
            label_selector: HashMap::from([("c".into(), "idle".into())]),
            ..Default::default()
        })
        .await;
    assert_eq!(ids(labelled), [idle.as_str()]);
    let by_id = n
        .list(cri::ContainerFilter {
            id: id.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(by_id.len(), 1);
    assert_eq!(by_id[0].pod_sandbox_id, pod_id);
    assert_eq!(by_id[0].state, cri::ContainerState::ContainerRunning as i32);

    // ExecSync: the pod's hostname, exit codes, a timeout.
    let r = n.exec_sync(&id, &["hostname"], 0).await.unwrap();
    assert_eq!(
        (String::from_utf8_lossy(&r.stdout).trim(), r.exit_code),
        ("life-host", 0),
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let r = n.exec_sync(&id, &["sh", "-c", "exit 3"], 0).await.unwrap();
    assert_eq!(r.exit_code, 3);
    let t = Instant::now();
    let e = n.exec_sync(&id, &["sleep", "10"], 1).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // The timed-out process is killed, not left running in the container.
    eventually(
        Duration::from_secs(5),
        "the timed-out exec to go",
        || async { (!sleep_10_running()).then_some(()) },
    )
    .await;

    // Stop with a 2 s grace: sh as PID 1 ignores SIGTERM, so SIGKILL after 2 s.
    let t = Instant::now();
    n.stop_container(&id, 2).await;
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    let mut want = vec![
        (id.clone(), cri::ContainerState::ContainerExited as i32),
        (idle.clone(), cri::ContainerState::ContainerCreated as i32),
    ];
    want.sort();
    assert_eq!(full(n.list(Default::default()).await), want);
    let (st, _) = n.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert!(
        [137, 143].contains(&st.exit_code),
        "exit code {}",
        st.exit_code
    );
    assert!(st.finished_at >= st.started_at);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} is still there"
    );
    // Stopping again is fine.
    n.stop_container(&id, 2).await;

    for _ in 0..2 {
        n.remove_container(&id).await;
        n.remove_container(&idle).await;
    }
    assert_eq!(full(n.list(Default::default()).await), []);
    let e =
        n.rt.container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    n.remove_pod(&pod_id).await;
    n.finish().await;
}

/// Whether a process runs `sleep 10` (the timed-out exec; no other test runs it).
fn sleep_10_running() -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x0010\x00"))
}

/// Nanoseconds since the epoch, as CRI timestamps are.
struct SystemTimeNanos(i64);

impl SystemTimeNanos {
    fn now() -> Self {
        Self(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64,
        )
    }
}

#[tokio::test]
async fn containers_that_exit_by_themselves_and_a_read_only_rootfs() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(11, "exits", "0d1e2f30-0000-4000-8000-000000000011").await;

    let failing = n
        .create_started(&pod_id, &pod, &container("fails", &["sh", "-c", "exit 3"]))
        .await;
    let st = n.exited(&failing).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"), "{st:?}");
    assert!(st.finished_at >= st.started_at && st.started_at > 0);

    let ok = n
        .create_started(&pod_id, &pod, &container("succeeds", &["true"]))
        .await;
    let st = n.exited(&ok).await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{st:?}"
    );

    // ListContainers is served from memory: a container listed as running is listed as exited
    // once it ends by itself, without any other call about it in between.
    let brief = n
        .create_started(&pod_id, &pod, &container("brief", &["sleep", "2"]))
        .await;
    let in_state = |s: cri::ContainerState| cri::ContainerFilter {
        id: brief.clone(),
        state: Some(cri::ContainerStateValue { state: s as i32 }),
        ..Default::default()
    };
    assert_eq!(
        n.list(in_state(cri::ContainerState::ContainerRunning))
            .await
            .len(),
        1
    );
    // A listed container shows what its status shows (lists are answered from encodings kept
    // between calls, with the state added per answer).
    let listed = n
        .list(in_state(cri::ContainerState::ContainerRunning))
        .await;
    let (st, _) = n.status(&brief).await;
    let l = &listed[0];
    assert_eq!(
        (&l.id, &l.pod_sandbox_id, &l.metadata, l.created_at),
        (&st.id, &pod_id, &st.metadata, st.created_at)
    );
    // Lists carry the image ID in both image fields (what a kubelet's image garbage collection
    // matches against ListImages); the status shows the repo digest as `image_ref`.
    assert!(st.image_id.starts_with("sha256:"), "{}", st.image_id);
    assert_eq!((&l.image_ref, &l.image_id), (&st.image_id, &st.image_id));
    assert!(st.image_ref.contains("@sha256:"), "{}", st.image_ref);
    assert_eq!((&l.labels, &l.annotations), (&st.labels, &st.annotations));
    assert_eq!(
        l.image.as_ref().map(|i| &i.image),
        st.image.as_ref().map(|i| &i.image)
    );
    assert_eq!(
        l.labels.get("c").map(String::as_str),
        Some("brief"),
        "{l:?}"
    );
    // The kubelet's poll, unfiltered: the same answer while nothing changes (kept between
    // calls); the exit below, which no call reports, makes a new one.
    let brief_in_full_list =
        |l: Vec<cri::Container>| l.into_iter().find(|c| c.id == brief).map(|c| c.state);
    for _ in 0..2 {
        assert_eq!(
            brief_in_full_list(n.list(Default::default()).await),
            Some(cri::ContainerState::ContainerRunning as i32)
        );
    }
    // Polled unfiltered only: another call about it would read its state and count a change.
    let rt = n.rt.clone();
    let brief_id = brief.clone();
    eventually(
        Duration::from_secs(10),
        "the brief container listed as exited",
        || {
            let mut rt = rt.clone();
            let brief = brief_id.clone();
            async move {
                let l = rt
                    .list_containers(cri::ListContainersRequest {
                        filter: Some(Default::default()),
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .containers;
                l.iter()
                    .any(|c| {
                        c.id == brief && c.state == cri::ContainerState::ContainerExited as i32
                    })
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        n.list(in_state(cri::ContainerState::ContainerExited))
            .await
            .len(),
        1
    );
    assert!(
        n.list(in_state(cri::ContainerState::ContainerRunning))
            .await
            .is_empty()
    );

    // A read-only rootfs: writing to / fails, in the container and in an exec.
    let mut ro = container("ro", &["sh", "-c", "touch /x; echo touch=$?; sleep 1000"]);
    ro.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .readonly_rootfs = true;
    let ro_id = n.create_started(&pod_id, &pod, &ro).await;
    let log = PathBuf::from(n.status(&ro_id).await.0.log_path);
    let lines = eventually(Duration::from_secs(5), "the touch result", || {
        let lines = cri_log(&log);
        async move {
            lines
                .iter()
                .any(|l| l.3.starts_with("touch="))
                .then_some(lines)
        }
    })
    .await;
    assert!(
        lines.iter().any(|l| l.3 == "touch=1"),
        "touch /x succeeded on a read-only rootfs: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.1 == "stderr" && l.3.contains("Read-only file system")),
        "{lines:?}"
    );
    let r = n.exec_sync(&ro_id, &["touch", "/y"], 5).await.unwrap();
    assert_ne!(r.exit_code, 0, "touch /y in an exec succeeded");
    // The pod's files are mounted read-only too.
    let r = n
        .exec_sync(&ro_id, &["sh", "-c", "echo x >> /etc/hosts"], 5)
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0, "/etc/hosts is writable");

    n.stop_container(&ro_id, 0).await;
    for id in [&failing, &ok, &ro_id] {
        n.remove_container(id).await;
    }
    n.remove_pod(&pod_id).await;
    n.finish().await;
}

#[tokio::test]
async fn a_retried_create_container_returns_the_same_container() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(12, "retry", "0d1e2f30-0000-4000-8000-000000000012").await;
    let cfg = container("main", &["sleep", "1000"]);
    let first = n
        .create(&pod_id, &pod, &cfg)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", n.d.log_text()));
    let again = n.create(&pod_id, &pod, &cfg).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(n.list(cri::ContainerFilter::default()).await.len(), 1);
    // A new attempt is a new container.
    let mut next = cfg.clone();
    next.metadata.as_mut().unwrap().attempt = 1;
    let second = n.create(&pod_id, &pod, &next).await.unwrap();
    assert_ne!(second, first);

    for id in [&first, &second] {
        n.remove_container(id).await;
    }
    n.remove_pod(&pod_id).await;
    n.finish().await;
}

#[tokio::test]
async fn a_running_container_survives_a_daemon_restart() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(13, "restart", "0d1e2f30-0000-4000-8000-000000000013").await;
    let id = n
        .create_started(&pod_id, &pod, &container("main", &["sleep", "1000"]))
        .await;
    let (before, info) = n.status(&id).await;
    let pid = info["pid"].as_i64().unwrap();

    n.d = n.d.restart().await;
    n.rt = n.d.runtime().await;
    let (after, info) = n.status(&id).await;
    assert_eq!(
        after.state,
        cri::ContainerState::ContainerRunning as i32,
        "{after:?}\n{}",
        n.d.log_text()
    );
    assert_eq!(info["pid"].as_i64(), Some(pid));
    assert_eq!(after.started_at, before.started_at);
    assert_eq!(after.log_path, before.log_path);
    let r = n.exec_sync(&id, &["echo", "alive"], 5).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "alive\n");
    assert_eq!(
        n.list(cri::ContainerFilter {
            pod_sandbox_id: pod_id.clone(),
            ..Default::default()
        })
        .await
        .len(),
        1
    );

    n.stop_container(&id, 2).await;
    assert_eq!(
        n.status(&id).await.0.state,
        cri::ContainerState::ContainerExited as i32
    );
    n.remove_container(&id).await;
    n.remove_pod(&pod_id).await;
    n.finish().await;
}

#[tokio::test]
async fn bad_container_requests_get_clear_codes() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(14, "bad", "0d1e2f30-0000-4000-8000-000000000014").await;
    let good = container("main", &["sleep", "1000"]);

    let e = n.create(&"e".repeat(64), &pod, &good).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "unknown sandbox: {e}");

    let mut unpulled = good.clone();
    unpulled.image.as_mut().unwrap().image = format!("{}/e2e/never:pulled", "registry.e2e.test");
    let e = n.create(&pod_id, &pod, &unpulled).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "image not pulled: {e}");

    let mut no_metadata = good.clone();
    no_metadata.metadata = None;
    let e = n.create(&pod_id, &pod, &no_metadata).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "no metadata: {e}");

    for bad in ["../escape.log", "main/../../escape.log", "/etc/passwd"] {
        let mut escaping = good.clone();
        escaping.log_path = bad.into();
        let e = n.create(&pod_id, &pod, &escaping).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "log_path {bad:?}: {e}");
    }

    let e =
        n.rt.start_container(cri::StartContainerRequest {
            container_id: "d".repeat(64),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "start of an unknown id: {e}");

    // None of these made a container, and the good config still works (no name left reserved).
    assert!(n.list(cri::ContainerFilter::default()).await.is_empty());
    let id = n.create(&pod_id, &pod, &good).await.unwrap();
    n.remove_container(&id).await;
    n.remove_pod(&pod_id).await;
    n.finish().await;
}

#[tokio::test]
async fn a_streaming_exec_over_websocket_carries_stdin_stdout_and_the_exit_code() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let (mut n, pod, pod_id) =
        Node::with_running_pod(15, "stream", "0d1e2f30-0000-4000-8000-000000000015").await;
    let id = n
        .create_started(&pod_id, &pod, &container("main", &["sleep", "1000"]))
        .await;

    let url =
        n.rt.exec(cri::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into(), "-c".into(), "cat; exit 3".into()],
            tty: false,
            stdin: true,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap_or_else(|e| panic!("Exec: {e}\n{}", n.d.log_text()))
        .into_inner()
        .url;
    let rest = url
        .strip_prefix("http://127.0.0.1:")
        .unwrap_or_else(|| panic!("exec URL {url}"));
    let (port, token) = rest.split_once("/exec/").unwrap();
    assert!(port.parse::<u16>().is_ok() && !token.is_empty(), "{url}");

    let mut req = url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .unwrap_or_else(|e| panic!("WebSocket handshake: {e}\n{}", n.d.log_text()));
    assert_eq!(
        resp.headers()["sec-websocket-protocol"],
        "v5.channel.k8s.io"
    );
    ws.send(Message::binary(b"\x00hello from stdin\n".to_vec()))
        .await
        .unwrap();
    // v5: close stdin.
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Vec::new());
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Binary(b) if !b.is_empty() => match b[0] {
                    1 => out.extend_from_slice(&b[1..]),
                    2 => err.extend_from_slice(&b[1..]),
                    3 => status.extend_from_slice(&b[1..]),
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the exec session did not end");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "hello from stdin\n",
        "stderr: {}",
        String::from_utf8_lossy(&err)
    );
    let status: serde_json::Value = serde_json::from_slice(&status)
        .unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(&status)));
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");

    // The URL is single-use.
    let mut again = url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    again.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    assert!(
        tokio_tungstenite::client_async(again, tcp).await.is_err(),
        "a used exec URL was accepted again"
    );

    n.stop_container(&id, 0).await;
    n.remove_container(&id).await;
    n.remove_pod(&pod_id).await;
    n.finish().await;
}

/// Regression: the daemon as the other e2e tests configure it, `state` under the test's dir in /tmp,
/// 30 bytes long. Starting a container failed when its monitor socket path was longer than a
/// unix socket address holds (the monitor now binds through /proc/self/fd).
#[tokio::test]
async fn a_container_starts_with_the_default_test_state_path() {
    let mut n = Node::start_with(16, DaemonConfig::new()).await;
    let pod = n.pod("long", "0d1e2f30-0000-4000-8000-000000000016");
    let pod_id = n.run_pod(&pod).await;
    let id = n
        .create(&pod_id, &pod, &container("main", &["sleep", "1000"]))
        .await
        .unwrap();
    let started =
        n.rt.start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await;
    let failed = started.as_ref().err().map(|e| e.to_string());
    n.remove_container(&id).await;
    n.remove_pod(&pod_id).await;
    let log = n.finish().await;
    assert!(failed.is_none(), "StartContainer: {failed:?}\n{log}");
}

#[tokio::test]
async fn exec_sync_reports_both_streams_and_reopen_log_after_a_rename_writes_a_new_file() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(53, "rotate", "0d1e2f30-0000-4000-8000-000000000053").await;
    let id = n.create_started(&pod_id, &pod, &ticker()).await;

    let r = n
        .exec_sync(&id, &["sh", "-c", "echo out; echo err >&2; exit 7"], 5)
        .await
        .unwrap();
    assert_eq!(
        (r.stdout.as_slice(), r.stderr.as_slice(), r.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 7)
    );

    // Rotation as the kubelet does it: rename, then ReopenContainerLog.
    let log = n.log_path(&id).await;
    log_until(&log, "a tick", |l| l.3.starts_with("tick ")).await;
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    n.rt.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("ReopenContainerLog: {e}\n{}", n.d.log_text()));
    let fresh = log_until(&log, "a tick in the new file", |l| l.3.starts_with("tick ")).await;
    let old = cri_log(&rotated);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cri_log(&rotated), old, "the renamed file still grows");
    let tick = |l: &LogLine| -> u64 { l.3.trim_start_matches("tick ").parse().unwrap() };
    assert!(
        tick(fresh.first().unwrap()) > tick(old.last().unwrap()),
        "{old:?} then {fresh:?}"
    );
    assert!(
        fresh.iter().all(|l| is_rfc3339(&l.0) && l.2 == "F"),
        "{fresh:?}"
    );

    // Not running: nothing to reopen.
    n.stop_container(&id, 0).await;
    let e =
        n.rt.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn a_daemon_killed_with_sigkill_finds_its_containers_and_the_exit_it_missed() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(54, "killed", "0d1e2f30-0000-4000-8000-000000000054").await;
    let ticker_id = n.create_started(&pod_id, &pod, &ticker()).await;
    // Exits with 7 once the host creates `go` in its volume.
    let trigger = n.d.config.dir().join("trigger");
    std::fs::create_dir(&trigger).unwrap();
    let mut waiter = container(
        "waiter",
        &[
            "sh",
            "-c",
            "while [ ! -e /trigger/go ]; do sleep 0.1; done; exit 7",
        ],
    );
    waiter.mounts = vec![cri::Mount {
        container_path: "/trigger".into(),
        host_path: trigger.display().to_string(),
        ..Default::default()
    }];
    let waiter_id = n.create_started(&pod_id, &pod, &waiter).await;
    let (before, info) = n.status(&ticker_id).await;
    let ticker_pid = info["pid"].as_i64().unwrap();
    let waiter_pid = n.status(&waiter_id).await.1["pid"].as_i64().unwrap();

    let cfg = n.d.kill().await;
    std::fs::write(trigger.join("go"), "").unwrap();
    eventually(Duration::from_secs(5), "the waiter to exit", || async {
        (!Path::new(&format!("/proc/{waiter_pid}")).exists()).then_some(())
    })
    .await;
    let log = PathBuf::from(&before.log_path);
    let ticks_while_down = cri_log(&log).len();
    n.d = Daemon::start_with(cfg).await;
    n.rt = n.d.runtime().await;

    let (after, info) = n.status(&ticker_id).await;
    assert_eq!(
        after.state,
        cri::ContainerState::ContainerRunning as i32,
        "{after:?}\n{}",
        n.d.log_text()
    );
    assert_eq!(info["pid"].as_i64(), Some(ticker_pid));
    assert_eq!(after.started_at, before.started_at);
    assert_eq!(n.list(cri::ContainerFilter::default()).await.len(), 2);
    eventually(Duration::from_secs(5), "more ticks", || {
        let more = cri_log(&log).len() > ticks_while_down + 2;
        async move { more.then_some(()) }
    })
    .await;
    let (st, _) = n.status(&waiter_id).await;
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (cri::ContainerState::ContainerExited as i32, 7, "Error"),
        "{st:?}"
    );
    assert!(st.finished_at > st.started_at, "{st:?}");

    n.remove_all(&pod_id).await;
}

/// A test that fails halfway (here one that panics with a pod and a running container) leaves
/// nothing for the next run of the suite to trip on: its node sweeps the processes, mounts and
/// cgroups of its pods on the way out.
#[tokio::test]
async fn a_test_that_panics_leaves_nothing_behind() {
    let (tx, rx) = std::sync::mpsc::channel();
    let body = tokio::spawn(async move {
        let (mut n, pod, pod_id) =
            Node::with_running_pod(56, "panics", "0d1e2f30-0000-4000-8000-000000000056").await;
        let id = n
            .create_started(&pod_id, &pod, &container("left", &["sleep", "600"]))
            .await;
        let _ = tx.send((n.state().to_path_buf(), id));
        panic!("deliberately, with a container running");
    });
    let err = body.await.expect_err("the body panics");
    assert!(err.is_panic(), "{err}");
    let (state, id) = rx.recv().expect("the body got as far as its container");
    assert!(pod_cgroups(56).is_empty(), "{:?}", pod_cgroups(56));
    assert_eq!(processes_naming(&state), vec![]);
    assert_eq!(processes_naming(Path::new(&id)), vec![]);
    assert_eq!(mounts_under(&state), Vec::<PathBuf>::new());
    assert!(!state.exists(), "{} is left", state.display());
}
