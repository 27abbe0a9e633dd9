//! What the kubelet does over a pod's life, each through the kubelet's own call sequence (read in
//! kubernetes/kubernetes `pkg/kubelet/kuberuntime/`, `pkg/kubelet/logs/`, `pkg/kubelet/images/`,
//! `pkg/kubelet/prober/`): init containers one after another, an exec probe every second, a
//! container restarted as its next attempt, the termination message, log rotation, image garbage
//! collection and an in-place resize. Each test is its own node (pod-network indexes 166–169 and
//! 190–193), so they run side by side.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carapace_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use carapace_e2e::node::{
    LogLine, Node, container, cri_log, hugepage_sizes, log_until, resources, stdout_of,
};
use carapace_e2e::{cri, eventually, proc_status_field};
use tonic::Code;

/// A pod uid for the test numbered `index` ([`Node::finish`] finds its cgroups by the suffix).
fn uid(index: u8) -> String {
    format!("0d1e2f30-0000-4000-8000-{index:012}")
}

/// The pod as the kubelet sends it: [`Node::pod`] with the kubelet's `io.kubernetes.pod.*`
/// labels, by which it lists the pod's containers again.
fn kubelet_pod(n: &Node, name: &str, uid: &str) -> cri::PodSandboxConfig {
    let mut pod = n.pod(name, uid);
    pod.labels.extend([
        ("io.kubernetes.pod.name".into(), name.into()),
        ("io.kubernetes.pod.namespace".into(), "e2e".into()),
        ("io.kubernetes.pod.uid".into(), uid.into()),
    ]);
    pod.annotations
        .insert("kubernetes.io/config.source".into(), "file".into());
    pod
}

/// A container as the kubelet builds it (`generateContainerConfig`): metadata with the restart
/// count as attempt, log path `<name>/<attempt>.log`, the `io.kubernetes.*` labels and
/// annotations (`restartCount` among them), termination message path and policy.
fn kubelet_container(
    pod: &cri::PodSandboxConfig,
    name: &str,
    attempt: u32,
    command: &[&str],
) -> cri::ContainerConfig {
    let meta = pod.metadata.as_ref().unwrap();
    let mut c = container(name, command);
    c.metadata = Some(cri::ContainerMetadata {
        name: name.into(),
        attempt,
    });
    c.log_path = format!("{name}/{attempt}.log");
    c.labels = HashMap::from([
        ("io.kubernetes.container.name".into(), name.into()),
        ("io.kubernetes.pod.name".into(), meta.name.clone()),
        ("io.kubernetes.pod.namespace".into(), meta.namespace.clone()),
        ("io.kubernetes.pod.uid".into(), meta.uid.clone()),
    ]);
    c.annotations = crate::kubelet_container_annotations(attempt);
    c
}

/// The kubelet's pod directory for `uid` (`/var/lib/kubelet/pods/<uid>`), under the test's dir.
fn pod_dir(n: &Node, uid: &str) -> PathBuf {
    n.d.config.dir().join("kubelet/pods").join(uid)
}

/// An emptyDir volume `name` of the pod, made as the kubelet makes it, and its mount at `at`.
fn empty_dir(n: &Node, uid: &str, name: &str, at: &str) -> cri::Mount {
    let host = pod_dir(n, uid)
        .join("volumes/kubernetes.io~empty-dir")
        .join(name);
    std::fs::create_dir_all(&host).unwrap();
    cri::Mount {
        container_path: at.into(),
        host_path: host.display().to_string(),
        ..Default::default()
    }
}

/// The kubelet's termination message file for container `name` (an empty file, mode 0666, at
/// `<pod dir>/containers/<name>/<random>`) and its mount at `/dev/termination-log`.
fn termination_log(n: &Node, uid: &str, name: &str) -> (PathBuf, cri::Mount) {
    use std::os::unix::fs::PermissionsExt;
    let dir = pod_dir(n, uid).join("containers").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    // The kubelet names it with 8 random hex digits (`makeUID`).
    let file = dir.join(format!("{:08x}", std::process::id()));
    std::fs::write(&file, "").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mount = cri::Mount {
        container_path: "/dev/termination-log".into(),
        host_path: file.display().to_string(),
        ..Default::default()
    };
    (file, mount)
}

/// The pod's containers in every state, as the kubelet's relist asks for them (by its uid label).
async fn pod_containers(n: &mut Node, uid: &str) -> Vec<cri::Container> {
    n.list(cri::ContainerFilter {
        label_selector: HashMap::from([("io.kubernetes.pod.uid".into(), uid.into())]),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn init_containers_run_one_after_another_to_exit_zero_then_the_app_container() {
    let uid = uid(166);
    let mut n = Node::start(166).await;
    let pod = kubelet_pod(&n, "init", &uid);
    let pod_id = n.run_pod(&pod).await;
    let work = empty_dir(&n, &uid, "work", "/work");

    // `computeInitContainerActions`: the next init container is created and started only once
    // the one before it has exited 0; each appends its name to a shared emptyDir and prints
    // what it found there.
    let mut finished_before = 0;
    let mut inits = Vec::new();
    for name in ["init-a", "init-b"] {
        let script = format!("cat /work/order 2>/dev/null; echo {name} >> /work/order; sleep 0.2");
        let mut c = kubelet_container(&pod, name, 0, &["sh", "-c", &script]);
        c.mounts.push(work.clone());
        let (id, st, lines) = n.run_to_exit(&pod_id, &pod, &c).await;
        assert_eq!(
            (st.exit_code, st.reason.as_str()),
            (0, "Completed"),
            "{st:?}"
        );
        assert!(
            st.started_at >= finished_before,
            "{name} started at {} before the previous one finished at {finished_before}",
            st.started_at
        );
        finished_before = st.finished_at;
        inits.push((id, lines));
    }
    assert_eq!(stdout_of(&inits[0].1), "", "init-a saw {:?}", inits[0].1);
    assert_eq!(
        stdout_of(&inits[1].1),
        "init-a",
        "init-b saw {:?}",
        inits[1].1
    );

    // Then the app container, which sees what both did.
    let mut app = kubelet_container(
        &pod,
        "app",
        0,
        &["sh", "-c", "cat /work/order; exec sleep 1000"],
    );
    app.mounts.push(work);
    let app_id = n.create_started(&pod_id, &pod, &app).await;
    let (st, _) = n.status(&app_id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    assert!(st.started_at >= finished_before, "{st:?}");
    let lines = log_until(&PathBuf::from(&st.log_path), "the app's output", |l| {
        l.3 == "init-b"
    })
    .await;
    assert_eq!(stdout_of(&lines), "init-a\ninit-b");

    // The kubelet's relist: the two init containers exited 0, the app runs.
    let listed: Vec<(String, i32)> = pod_containers(&mut n, &uid)
        .await
        .into_iter()
        .map(|c| (c.metadata.unwrap().name, c.state))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        listed,
        [
            ("app".into(), cri::ContainerState::ContainerRunning as i32),
            ("init-a".into(), cri::ContainerState::ContainerExited as i32),
            ("init-b".into(), cri::ContainerState::ContainerExited as i32),
        ]
    );

    n.remove_all(&pod_id).await;
}

/// Open fds, threads and child processes of `pid`, and its anonymous RSS in KiB.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Footprint {
    fds: usize,
    threads: i64,
    children: usize,
    rss_anon_kib: i64,
}

fn footprint(pid: i64) -> Footprint {
    let children = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(") ")?.1.to_owned();
                    rest.split(' ').nth(1)?.parse::<i64>().ok()
                })
                == Some(pid)
        })
        .count();
    Footprint {
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
        threads: proc_status_field(pid, "Threads"),
        children,
        rss_anon_kib: proc_status_field(pid, "RssAnon"),
    }
}

/// The pids in the v1 `pids` cgroup of container `id` of `pod`.
fn cgroup_procs(pod: &cri::PodSandboxConfig, id: &str) -> Vec<String> {
    let parent = &pod.linux.as_ref().unwrap().cgroup_parent;
    let dir = Path::new("/sys/fs/cgroup/pids")
        .join(parent.trim_start_matches('/'))
        .join(id);
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The pid of container `id`'s monitor, from the runtime's record.
fn monitor_pid(n: &Node, id: &str) -> i64 {
    let started: serde_json::Value = serde_json::from_slice(
        &std::fs::read(n.state().join("containers").join(id).join("runtime.json")).unwrap(),
    )
    .unwrap();
    started["monitor_pid"].as_i64().unwrap()
}

#[tokio::test]
async fn an_exec_probe_every_second_for_a_minute_leaks_no_fd_process_or_memory() {
    let uid = uid(167);
    let mut n = Node::start(167).await;
    let pod = kubelet_pod(&n, "probed", &uid);
    let pod_id = n.run_pod(&pod).await;
    let c = kubelet_container(
        &pod,
        "app",
        0,
        &["sh", "-c", "touch /tmp/healthy; exec sleep 1000"],
    );
    let id = n.create_started(&pod_id, &pod, &c).await;
    let daemon = n.d.pid().as_raw() as i64;
    let monitor = monitor_pid(&n, &id);

    // The prober's exec: `ExecSync(cmd, probe.timeoutSeconds)`; exit 0 is success, any other
    // exit a failure, DeadlineExceeded a timeout.
    const PROBE_TIMEOUT: i64 = 1;
    let probe = ["sh", "-c", "test -e /tmp/healthy"];
    // The kubelet probes once the container runs (and its initial delay is over): healthy once
    // the command has made the file. Five more warm up what the first calls set up once
    // (connection, buffers, pools).
    let rt = n.rt.clone();
    eventually(Duration::from_secs(10), "a healthy probe", || {
        let mut rt = rt.clone();
        let req = cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: probe.iter().map(|s| s.to_string()).collect(),
            timeout: PROBE_TIMEOUT,
        };
        async move { (rt.exec_sync(req).await.ok()?.into_inner().exit_code == 0).then_some(()) }
    })
    .await;
    for _ in 0..5 {
        let r = n.exec_sync(&id, &probe, PROBE_TIMEOUT).await.unwrap();
        assert_eq!(r.exit_code, 0, "{r:?}");
    }
    let before = (
        footprint(daemon),
        footprint(monitor),
        cgroup_procs(&pod, &id),
    );

    // A minute of probes, one a second; from the 20th to the 29th the container is unhealthy.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut slowest = Duration::ZERO;
    for i in 0..60 {
        tick.tick().await;
        if i == 20 {
            n.exec_sync(&id, &["busybox", "rm", "/tmp/healthy"], 5)
                .await
                .unwrap();
        }
        if i == 30 {
            n.exec_sync(&id, &["touch", "/tmp/healthy"], 5)
                .await
                .unwrap();
        }
        let t = Instant::now();
        let r = n
            .exec_sync(&id, &probe, PROBE_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("probe {i}: {e}"));
        slowest = slowest.max(t.elapsed());
        let want = if (20..30).contains(&i) { 1 } else { 0 };
        assert_eq!(r.exit_code, want, "probe {i}: {r:?}");
    }
    eprintln!("slowest probe: {slowest:?}");

    // A probe that outlives its timeout: DeadlineExceeded in about the timeout, and its
    // command is gone from the container.
    let t = Instant::now();
    let e = n
        .exec_sync(&id, &["sleep", "30"], PROBE_TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // Nothing is left of the 68 execs: the same fds, threads and children in the daemon and
    // the monitor (helper threads may take a while to go idle and end), the container's one
    // process, and memory within a small slack.
    let after = eventually(Duration::from_secs(20), "the footprint to settle", || {
        let now = (
            footprint(daemon),
            footprint(monitor),
            cgroup_procs(&pod, &id),
        );
        let settled = now.0.fds == before.0.fds
            && now.0.threads <= before.0.threads
            && now.0.children == before.0.children
            && now.1.fds == before.1.fds
            && now.1.threads <= before.1.threads
            && now.1.children == before.1.children
            && now.2 == before.2;
        async move { settled.then_some(now) }
    })
    .await;
    eprintln!("before {before:?}\nafter  {after:?}");
    assert!(
        after.0.rss_anon_kib <= before.0.rss_anon_kib + 1024,
        "daemon RssAnon grew from {} to {} KiB",
        before.0.rss_anon_kib,
        after.0.rss_anon_kib
    );
    assert!(
        after.1.rss_anon_kib <= before.1.rss_anon_kib + 64,
        "monitor RssAnon grew from {} to {} KiB",
        before.1.rss_anon_kib,
        after.1.rss_anon_kib
    );

    n.remove_all(&pod_id).await;
}

/// The kubelet's gRPC receive limit (`maxMsgSize` in its remote runtime client).
const KUBELET_MAX_MSG: usize = 16 << 20;

#[tokio::test]
async fn exec_sync_of_20_mib_on_each_stream_answers_truncated_within_the_kubelets_16_mib() {
    let (mut n, pod, pod_id) = Node::with_running_pod(168, "bigexec", &uid(168)).await;
    let id = n
        .create_started(&pod_id, &pod, &container("app", &["sleep", "1000"]))
        .await;

    // A client that takes what the kubelet takes, no more.
    let mut kubelet = RuntimeServiceClient::new(n.d.channel().await.unwrap())
        .max_decoding_message_size(KUBELET_MAX_MSG);
    let r = kubelet
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: [
                "sh",
                "-c",
                "busybox head -c 20971520 /dev/zero >&2 & busybox head -c 20971520 /dev/zero; wait; exit 3",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            timeout: 30,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync with 40 MiB of output: {e}\n{}", n.d.log_text()))
        .into_inner();
    let total = r.stdout.len() + r.stderr.len();
    assert_eq!(
        r.exit_code,
        3,
        "{} + {} bytes",
        r.stdout.len(),
        r.stderr.len()
    );
    assert!(
        total < KUBELET_MAX_MSG && total > KUBELET_MAX_MSG - (1 << 20),
        "{} + {} bytes",
        r.stdout.len(),
        r.stderr.len()
    );
    assert!(r.stdout.iter().chain(&r.stderr).all(|&b| b == 0));

    // The container and the daemon carry on.
    let r = n.exec_sync(&id, &["echo", "ok"], 5).await.unwrap();
    assert_eq!(r.stdout, b"ok\n");
    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn an_exited_container_restarts_as_the_next_attempt_and_the_old_one_goes_after_its_log() {
    let uid = uid(169);
    let mut n = Node::start(169).await;
    let pod = kubelet_pod(&n, "crashy", &uid);
    let pod_id = n.run_pod(&pod).await;
    let work = empty_dir(&n, &uid, "work", "/work");
    // Fails the first time it runs, then stays up.
    let script = "echo run; test -e /work/crashed && exec sleep 1000; touch /work/crashed; exit 3";
    let spec = |attempt| {
        let mut c = kubelet_container(&pod, "app", attempt, &["sh", "-c", script]);
        c.mounts.push(work.clone());
        c
    };

    let (old, st, lines) = n.run_to_exit(&pod_id, &pod, &spec(0)).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"), "{st:?}");
    assert_eq!(stdout_of(&lines), "run");

    // The relist: the pod's only container exited. `computePodActions` starts it again as
    // attempt restartCount+1, same name.
    let listed = pod_containers(&mut n, &uid).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(
        listed[0].annotations["io.kubernetes.container.restartCount"],
        "0"
    );
    let new = n.create_started(&pod_id, &pod, &spec(1)).await;
    let (st, _) = n.status(&new).await;
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    assert_eq!(
        st.metadata.as_ref().map(|m| (m.name.as_str(), m.attempt)),
        Some(("app", 1))
    );
    assert_eq!(st.annotations["io.kubernetes.container.restartCount"], "1");
    let logs = Path::new(&pod.log_directory).join("app");
    assert_eq!(PathBuf::from(&st.log_path), logs.join("1.log"));
    log_until(&logs.join("1.log"), "attempt 1's output", |l| l.3 == "run").await;

    // Both are listed, the old one kept for `kubectl logs --previous`.
    let mut both: Vec<(u32, i32)> = pod_containers(&mut n, &uid)
        .await
        .into_iter()
        .map(|c| (c.metadata.unwrap().attempt, c.state))
        .collect();
    both.sort();
    assert_eq!(
        both,
        [
            (0, cri::ContainerState::ContainerExited as i32),
            (1, cri::ContainerState::ContainerRunning as i32)
        ]
    );
    let (old_st, _) = n.status(&old).await;
    assert_eq!(PathBuf::from(&old_st.log_path), logs.join("0.log"));
    assert_eq!(stdout_of(&cri_log(Path::new(&old_st.log_path))), "run");

    // The container GC: `removeContainer` removes the log (ContainerStatus for its path),
    // then the container; a retried RemoveContainer finds nothing and succeeds.
    std::fs::remove_file(&old_st.log_path).unwrap();
    n.remove_container(&old).await;
    n.remove_container(&old).await;
    let left: Vec<String> = pod_containers(&mut n, &uid)
        .await
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(left, std::slice::from_ref(&new));
    let (st, _) = n.status(&new).await;
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    assert_eq!(stdout_of(&cri_log(&logs.join("1.log"))), "run");

    n.remove_all(&pod_id).await;
}

/// What the kubelet reads back as a container's termination message
/// (`getTerminationMessage`): the host file mounted at the message path, found through the
/// status's mounts, its last 4096 bytes.
fn termination_message(st: &cri::ContainerStatus) -> Option<String> {
    let m = st
        .mounts
        .iter()
        .find(|m| m.container_path == "/dev/termination-log")?;
    let data = std::fs::read(&m.host_path).ok()?;
    let from = data.len().saturating_sub(4096);
    Some(String::from_utf8_lossy(&data[from..]).into_owned())
}

#[tokio::test]
async fn the_termination_message_file_is_read_back_and_the_log_tail_stands_in_on_error() {
    let uid = uid(190);
    let mut n = Node::start(190).await;
    let pod = kubelet_pod(&n, "term", &uid);
    let pod_id = n.run_pod(&pod).await;

    // `terminationMessagePolicy: File`: the container writes the file.
    let (file, mount) = termination_log(&n, &uid, "writer");
    let mut c = kubelet_container(
        &pod,
        "writer",
        0,
        &[
            "sh",
            "-c",
            "echo -n 'all done' > /dev/termination-log; echo bye",
        ],
    );
    c.mounts.push(mount);
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &c).await;
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{st:?}\n{lines:?}"
    );
    assert_eq!(
        termination_message(&st).as_deref(),
        Some("all done"),
        "mounts {:?}, file {}",
        st.mounts,
        file.display()
    );

    // `FallbackToLogsOnError`: an empty file and a failure, so the kubelet reads the last 80
    // lines (2048 bytes at most) of the log instead; they are all there once it has exited.
    let (_, mount) = termination_log(&n, &uid, "failer");
    let mut c = kubelet_container(
        &pod,
        "failer",
        0,
        &[
            "sh",
            "-c",
            "for i in $(seq 1 100); do echo line $i; done; echo 'gave up' >&2; exit 2",
        ],
    );
    c.annotations.insert(
        "io.kubernetes.container.terminationMessagePolicy".into(),
        "FallbackToLogsOnError".into(),
    );
    c.mounts.push(mount);
    let (_, st, _) = n.run_to_exit(&pod_id, &pod, &c).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (2, "Error"), "{st:?}");
    assert_eq!(termination_message(&st).as_deref(), Some(""));
    let lines: Vec<LogLine> = cri_log(Path::new(&st.log_path));
    let tail: Vec<&str> = lines[lines.len().saturating_sub(80)..]
        .iter()
        .map(|l| l.3.as_str())
        .collect();
    assert_eq!(tail.len(), 80, "{lines:?}");
    assert_eq!(tail[78..], ["line 100", "gave up"], "{tail:?}");
    assert_eq!(tail[0], "line 22");

    n.remove_all(&pod_id).await;
}

/// `line <n>` → n.
fn counter(l: &LogLine) -> u64 {
    l.3.strip_prefix("line ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a counter line: {l:?}"))
}

#[tokio::test]
async fn log_rotation_as_the_kubelet_does_it_loses_and_repeats_no_line() {
    let uid = uid(191);
    let mut n = Node::start(191).await;
    let pod = kubelet_pod(&n, "rotated", &uid);
    let pod_id = n.run_pod(&pod).await;
    let c = kubelet_container(
        &pod,
        "app",
        0,
        &[
            "sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); done",
        ],
    );
    let id = n.create_started(&pod_id, &pod, &c).await;
    let log = n.log_path(&id).await;

    // `rotateLatestLog`, twice: rename `0.log` to `0.log.<YYYYmmdd-HHMMSS>`, then
    // ReopenContainerLog, while the container writes as fast as its shell can.
    let mut rotated = Vec::new();
    for round in 0..2 {
        let seen = cri_log(&log).len();
        eventually(Duration::from_secs(10), "lines to add up", || {
            let grown = cri_log(&log).len() >= seen + 50;
            async move { grown.then_some(()) }
        })
        .await;
        let stamp = rotation_stamp(round);
        let to = PathBuf::from(format!("{}.{stamp}", log.display()));
        std::fs::rename(&log, &to).unwrap();
        n.rt.reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("ReopenContainerLog: {e}\n{}", n.d.log_text()));
        rotated.push(to);
    }
    log_until(&log, "lines in the newest file", |_| true).await;
    n.stop_container(&id, 0).await;

    // Every line once, in order, across the files oldest first.
    let mut files: Vec<Vec<LogLine>> = rotated.iter().map(|p| cri_log(p)).collect();
    files.push(cri_log(&log));
    let counts: Vec<usize> = files.iter().map(Vec::len).collect();
    assert!(counts.iter().all(|&c| c > 0), "lines per file {counts:?}");
    let all: Vec<u64> = files.iter().flatten().map(counter).collect();
    let want: Vec<u64> = (0..all.len() as u64).collect();
    if all != want {
        let gaps: Vec<(u64, u64)> = all
            .windows(2)
            .filter(|w| w[1] != w[0] + 1)
            .map(|w| (w[0], w[1]))
            .collect();
        panic!("lines per file {counts:?}; out of sequence at {gaps:?}");
    }

    n.remove_all(&pod_id).await;
}

/// The kubelet's rotated-file suffix (`20060102-150405`), plus `round` seconds: the test's two
/// rotations come within a second, the kubelet's at least its monitor period apart.
fn rotation_stamp(round: u64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + round;
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y%m%d-%H%M%S"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// ImageFsInfo's used bytes of the image filesystem.
async fn image_fs_used(n: &Node) -> u64 {
    let r =
        n.d.images()
            .await
            .image_fs_info(cri::ImageFsInfoRequest {})
            .await
            .unwrap()
            .into_inner();
    r.image_filesystems
        .iter()
        .filter_map(|f| f.used_bytes.as_ref())
        .map(|u| u.value)
        .sum()
}

/// ListImages: each image's id and size.
async fn listed_images(n: &Node) -> HashMap<String, u64> {
    n.d.images()
        .await
        .list_images(cri::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .map(|i| (i.id, i.size))
        .collect()
}

async fn image_ids(n: &Node) -> BTreeSet<String> {
    listed_images(n).await.into_keys().collect()
}

#[tokio::test]
async fn image_gc_removes_the_unused_image_by_id_and_nothing_the_running_container_uses() {
    let uid = uid(192);
    let mut n = Node::start(192).await;
    // A second image: busybox's base layer and one of 4 MiB of its own.
    let extra = tempfile::tempdir().unwrap();
    let mut noise = vec![0u8; 4 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut noise))
        .unwrap();
    std::fs::write(extra.path().join("noise"), &noise).unwrap();
    n.registry
        .push("e2e/gc", &[extra.path().to_str().unwrap()])
        .await;
    let other = n.registry.image("e2e/gc", "v1");
    n.pull_image(&other).await;

    let pod = kubelet_pod(&n, "gc", &uid);
    let pod_id = n.run_pod(&pod).await;
    let c = kubelet_container(&pod, "app", 0, &["sleep", "1000"]);
    let running = n.create_started(&pod_id, &pod, &c).await;

    // `detectImages`: ListImages, and the images in use as the containers' image refs.
    let images = image_ids(&n).await;
    assert_eq!(images.len(), 2, "{images:?}");
    let containers = n.list(cri::ContainerFilter::default()).await;
    let in_use: BTreeSet<String> = containers
        .iter()
        .flat_map(|c| [c.image_ref.clone(), c.image_id.clone()])
        .filter(|r| !r.is_empty())
        .collect();
    assert!(
        in_use.iter().all(|r| images.contains(r)) && in_use.len() == 1,
        "the kubelet matches a container's image ref {in_use:?} against the image ids {images:?}"
    );
    // `freeSpace`: ImageFsInfo for the usage, then RemoveImage by id for each unused image.
    let used_before = image_fs_used(&n).await;
    let unused: Vec<String> = images.difference(&in_use).cloned().collect();
    assert_eq!(unused.len(), 1);
    // It counts what it frees by ListImages' sizes, and stops once it has freed enough.
    let sizes = listed_images(&n).await;
    assert!(sizes[&unused[0]] >= 4 << 20, "ListImages sizes {sizes:?}");
    let mut images_client = n.d.images().await;
    for id in unused.iter().chain(&unused) {
        // The second time: already gone, and still no error (RemoveImage is idempotent).
        images_client
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec {
                    image: id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_or_else(|e| panic!("RemoveImage {id}: {e}\n{}", n.d.log_text()));
    }
    assert_eq!(image_ids(&n).await, in_use);
    let used_after = image_fs_used(&n).await;
    assert!(
        used_after + (4 << 20) <= used_before,
        "ImageFsInfo used bytes {used_before} -> {used_after}"
    );

    // What is in use is whole: the running container execs, and a new container of its image
    // (the base layer the removed image shared) starts.
    let r = n
        .exec_sync(&running, &["ls", "/bin/busybox"], 5)
        .await
        .unwrap();
    assert_eq!(
        (r.exit_code, r.stdout.as_slice()),
        (0, &b"/bin/busybox\n"[..])
    );
    let c = kubelet_container(&pod, "second", 0, &["ls", "/bin/busybox"]);
    let (_, st, lines) = n.run_to_exit(&pod_id, &pod, &c).await;
    assert_eq!(
        (st.exit_code, stdout_of(&lines).as_str()),
        (0, "/bin/busybox")
    );

    n.remove_all(&pod_id).await;
}

/// A v1 cgroup file of the container whose pid is `pid`, in `controller`'s hierarchy.
fn cgroup_file(pid: i64, controller: &str, file: &str) -> String {
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = table
        .lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_owned())
        })
        .unwrap_or_else(|| panic!("{controller} not in /proc/{pid}/cgroup:\n{table}"));
    let f = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path.trim_start_matches('/'))
        .join(file);
    std::fs::read_to_string(&f)
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        .trim()
        .to_owned()
}

/// The hugepage sizes the node has, as the kubelet names them (`2MB`, `1GB`), each limit 0.
fn hugepage_limits() -> Vec<cri::HugepageLimit> {
    hugepage_sizes()
        .into_iter()
        .map(|page_size| cri::HugepageLimit {
            page_size,
            limit: 0,
        })
        .collect()
}

/// What the kubelet sends for cpu `millis` and memory `bytes` (`generateLinuxContainerResources`
/// on cgroup v1, swap off).
fn kubelet_resources(millis: i64, bytes: i64) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: millis * 100,
        cpu_shares: millis * 1024 / 1000,
        memory_limit_in_bytes: bytes,
        memory_swap_limit_in_bytes: bytes,
        hugepage_limits: hugepage_limits(),
        ..Default::default()
    }
}

#[tokio::test]
async fn update_container_resources_resizes_cpu_and_memory_in_place() {
    let uid = uid(193);
    let mut n = Node::start(193).await;
    let pod = kubelet_pod(&n, "resize", &uid);
    let pod_id = n.run_pod(&pod).await;
    let mut c = kubelet_container(&pod, "app", 0, &["sleep", "1000"]);
    *resources(&mut c) = kubelet_resources(250, 64 << 20);
    let id = n.create_started(&pod_id, &pod, &c).await;
    let (_, info) = n.status(&id).await;
    let pid = info["pid"].as_i64().expect("verbose info has the pid");
    let files = |pid| {
        [
            cgroup_file(pid, "cpu", "cpu.shares"),
            cgroup_file(pid, "cpu", "cpu.cfs_quota_us"),
            cgroup_file(pid, "cpu", "cpu.cfs_period_us"),
            cgroup_file(pid, "memory", "memory.limit_in_bytes"),
        ]
    };
    assert_eq!(files(pid), ["256", "25000", "100000", "67108864"]);

    // An in-place resize up (`doPodResizeAction`): the kubelet grows the pod cgroup itself, then
    // sends the container's new resources, then reads them back from ContainerStatus.
    let resized = kubelet_resources(1500, 128 << 20);
    n.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(resized.clone()),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", n.d.log_text()));
    assert_eq!(files(pid), ["1536", "150000", "100000", "134217728"]);
    let (st, info) = n.status(&id).await;
    assert_eq!(info["pid"].as_i64(), Some(pid), "the same process, resized");
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    let shown = st.resources.and_then(|r| r.linux).unwrap_or_default();
    assert_eq!(
        (
            shown.cpu_shares,
            shown.cpu_quota,
            shown.cpu_period,
            shown.memory_limit_in_bytes
        ),
        (1536, 150_000, 100_000, 128 << 20),
        "{shown:?}"
    );

    // And down again.
    n.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(kubelet_resources(100, 32 << 20)),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", n.d.log_text()));
    assert_eq!(files(pid), ["102", "10000", "100000", "33554432"]);

    n.remove_all(&pod_id).await;
}
