//! gVisor as a runtime handler, through the real daemon: `[runtimes.runsc]` names Debian's
//! runsc (0.0~20221219, ptrace platform) with `--network=host`, and a pod run with
//! `runtime_handler: "runsc"` has each of its containers be a gVisor sandbox of its own (there
//! is no pause container to host them all) in the pod's network namespace. carapace's monitor
//! still writes their CRI logs, records their exit codes, serves ExecSync (`runsc exec`),
//! attach and a terminal, and outlives a daemon restart; stats read the cgroup the sandbox
//! runs in. Every test removes what it made and ends with `Node::finish` (no container, pod,
//! cgroup, mount or process left), and runsc's state directory is empty again. Skipped, with
//! a note, where runsc is not installed.
//!
//! `--network=host`, not runsc's default `sandbox`: this runsc tells a pod's namespace from
//! the host's by whether `/proc/sys/net/core/rmem_default` exists, which it does in every
//! namespace on this kernel (6.18), so it refuses every pod ("cannot run with network enabled
//! in root network namespace"); and `sandbox` moves the pod's addresses into the first
//! container's sandbox, leaving none for the pod's other containers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use carapace_e2e::node::{Node, container, cri_log, log_until, output_of, security, stdout_of};
use carapace_e2e::stream::RemoteCommand;
use carapace_e2e::{DaemonConfig, cri};
use tonic::Code;

const RUNSC: &str = "/usr/bin/runsc";

/// The node's daemon with `[runtimes.runsc]`, its state under `root`; `None`, with a note,
/// when runsc is not installed.
async fn node_with_runsc(index: u8, root: &Path) -> Option<Node> {
    if !Path::new(RUNSC).exists() {
        eprintln!("SKIPPED: {RUNSC} is not installed (Debian's runsc package, gVisor)");
        return None;
    }
    let root = root.display().to_string();
    Some(
        Node::start_configured(index, move |cfg: &mut DaemonConfig| {
            cfg.set(
                "runtimes.runsc.runtime_path",
                toml::Value::String(RUNSC.into()),
            );
            cfg.set("runtimes.runsc.runtime_root", toml::Value::String(root));
            cfg.set(
                "runtimes.runsc.runtime_args",
                toml::Value::Array(vec![toml::Value::String("--network=host".into())]),
            );
        })
        .await,
    )
}

/// A directory for runsc's state, removed with the guard.
fn runsc_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("runsc-root.")
        .tempdir_in("/tmp")
        .unwrap();
    let root = dir.path().join("state");
    (dir, root)
}

/// What `runsc state <id>` says of a container: its JSON, or `None` when runsc does not know it.
fn runsc_state(root: &Path, id: &str) -> Option<serde_json::Value> {
    let out = std::process::Command::new(RUNSC)
        .arg("--root")
        .arg(root)
        .args(["state", id])
        .output()
        .expect("running runsc state");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("runsc state prints JSON"))
}

/// What runsc's state directory holds.
fn runsc_files(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

async fn run_runsc_pod(n: &mut Node, pod: &cri::PodSandboxConfig) -> String {
    match n
        .rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: "runsc".into(),
        })
        .await
    {
        Ok(r) => r.into_inner().pod_sandbox_id,
        Err(e) => panic!("RunPodSandbox: {e}\n{}", n.d.log_text()),
    }
}

/// The output of `cmd` run in `id` (ExecSync, exit code 0) once `done` says it is the one
/// waited for.
async fn exec_until(
    n: &Node,
    id: &str,
    cmd: &[&str],
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    carapace_e2e::eventually(Duration::from_secs(10), what, || {
        let mut rt = n.rt.clone();
        let req = cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.clone(),
            timeout: 5,
        };
        let done = &done;
        async move {
            let r = rt.exec_sync(req).await.ok()?.into_inner();
            let out = String::from_utf8_lossy(&r.stdout).into_owned();
            (r.exit_code == 0 && done(&out)).then_some(out)
        }
    })
    .await
}

#[tokio::test]
async fn a_runsc_pod_runs_logs_execs_stops_and_is_removed() {
    let (_guard, root) = runsc_root();
    let Some(mut n) = node_with_runsc(225, &root).await else {
        return;
    };
    let st =
        n.rt.status(cri::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
    let names: Vec<&str> = st
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["", "runsc"], "{:?}", st.runtime_handlers);
    // This runsc has no `features` subcommand: nothing beyond the spec's basics is reported.
    let runsc = st.runtime_handlers[1].features.unwrap_or_default();
    assert!(
        !runsc.recursive_read_only_mounts,
        "{:?}",
        st.runtime_handlers
    );

    let pod = n.pod("runsc", "0d1e2f30-0000-4000-8000-000000000225");
    let t = Instant::now();
    let pod_id = run_runsc_pod(&mut n, &pod).await;
    let pod_start = t.elapsed();
    assert_eq!(n.d.pods().await[0].runtime_handler, "runsc");

    // A container that runs until told to stop, and says so: gVisor's kernel started it (its
    // dmesg), runsc knows it with the pid CRI reports (the sandbox's), and its output is in
    // the CRI log.
    let main = container(
        "main",
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 0' TERM; echo out-from-gvisor; echo err-from-gvisor >&2; \
             dmesg | head -1; while :; do sleep 0.2; done",
        ],
    );
    let t = Instant::now();
    let id = n.create_started(&pod_id, &pod, &main).await;
    let container_start = t.elapsed();
    eprintln!("runsc: RunPodSandbox {pod_start:?}, Create+StartContainer {container_start:?}");
    let (st, info) = n.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    let state = runsc_state(&root, &id).unwrap_or_else(|| {
        panic!(
            "runsc does not know container {id}: it was not run by runsc\n{}",
            n.d.log_text()
        )
    });
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(
        state["pid"].as_i64(),
        info["pid"].as_i64(),
        "{state}\n{info}"
    );
    let log = n.log_path(&id).await;
    let lines = log_until(&log, "the container's output in the CRI log", |l| {
        l.3.contains("Starting gVisor")
    })
    .await;
    for (stream, text) in [("stdout", "out-from-gvisor"), ("stderr", "err-from-gvisor")] {
        assert!(
            lines.iter().any(|l| l.1 == stream && l.3 == text),
            "{}",
            output_of(&lines)
        );
    }

    // ExecSync through runsc exec: output and exit code.
    let r = n
        .exec_sync(
            &id,
            &["sh", "-c", "echo exec-out; echo exec-err >&2; exit 3"],
            10,
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "exec-out\n");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "exec-err\n");
    assert_eq!(r.exit_code, 3);
    // A timeout answers DeadlineExceeded and ends the command, inside the sandbox: killing
    // `runsc exec` (the pid runsc writes for it) would leave it running there.
    let e = n.exec_sync(&id, &["sleep", "31"], 1).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    exec_until(
        &n,
        &id,
        &["busybox", "ps", "-o", "args"],
        "the command's end",
        |ps| !ps.contains("sleep 31"),
    )
    .await;

    // Stats: the cgroup carapace made holds the sandbox (its kernel and gofer, so their
    // memory counts too).
    let stats = n.container_stats(&id).await;
    let mem = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value);
    assert!(mem.is_some_and(|v| v > 0), "{mem:?}");
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value);
    assert!(cpu.is_some_and(|v| v > 0), "{cpu:?}");

    // Another container of the pod is another sandbox, in the same network namespace: the
    // first reaches its server on the pod's loopback (with nc: busybox's wget, inside this
    // gVisor on the host's network stack, fails reading the answer with EAGAIN).
    let web = n
        .create_started(
            &pod_id,
            &pod,
            &container(
                "web",
                &[
                    "sh",
                    "-c",
                    "mkdir -p /www; echo pod-net-$((6*7)) > /www/index.html; \
                     exec busybox httpd -f -p 8080 -h /www",
                ],
            ),
        )
        .await;
    let request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc 127.0.0.1 8080";
    let body = exec_until(&n, &id, &["sh", "-c", request], "the pod's server", |out| {
        out.contains("pod-net-")
    })
    .await;
    assert!(body.ends_with("\r\n\r\npod-net-42\n"), "{body:?}");

    // A container that exits by itself: its exit code and output; through its volume (served
    // by the sandbox's gofer) it read a file of the host's and wrote one.
    let vol = tempfile::tempdir().unwrap();
    std::fs::write(vol.path().join("in"), "from-host\n").unwrap();
    let mut cfg = container(
        "done",
        &[
            "sh",
            "-c",
            "cat /data/in; echo from-gvisor > /data/out; exit 7",
        ],
    );
    cfg.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: vol.path().display().to_string(),
        ..Default::default()
    }];
    let done = n.create_started(&pod_id, &pod, &cfg).await;
    let st = n.exited(&done).await;
    assert_eq!(st.exit_code, 7, "{st:?}");
    assert_eq!(stdout_of(&cri_log(&n.log_path(&done).await)), "from-host");
    assert_eq!(
        std::fs::read_to_string(vol.path().join("out")).unwrap(),
        "from-gvisor\n"
    );

    // A recursive read-only volume: refused for a runtime that does not list `rro`, as Status
    // said (a runtime that ignored it would leave the submounts writable).
    let mut rro = container("rro", &["true"]);
    rro.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: vol.path().display().to_string(),
        readonly: true,
        recursive_read_only: true,
        ..Default::default()
    }];
    let e = n.create(&pod_id, &pod, &rro).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("\"runsc\" does not support"), "{e:?}");

    // A command the image does not have: StartContainer fails with runsc's reason.
    let bad = n
        .create(&pod_id, &pod, &container("bad", &["/no/such/cmd"]))
        .await
        .unwrap();
    let e =
        n.rt.start_container(cri::StartContainerRequest {
            container_id: bad.clone(),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("/no/such/cmd"), "{e:?}");
    assert!(e.message().contains("runsc"), "{e:?}");
    n.remove_container(&bad).await;
    assert!(
        runsc_state(&root, &bad).is_none(),
        "runsc still knows {bad}"
    );
    // A privileged container gets every capability the node has, and this runsc refuses those
    // newer than it (CAP_PERFMON, CAP_BPF, CAP_CHECKPOINT_RESTORE): StartContainer says which,
    // not only runsc's exit status (its reason is in a log line without a newline).
    let mut c = container("priv", &["true"]);
    security(&mut c).privileged = true;
    let privileged = n.create(&pod_id, &pod, &c).await.unwrap();
    if let Err(e) =
        n.rt.start_container(cri::StartContainerRequest {
            container_id: privileged.clone(),
        })
        .await
    {
        assert!(e.message().contains("invalid capability \"CAP_"), "{e:?}");
    }
    n.remove_container(&privileged).await;

    // Stop: the stop signal reaches the container's shell inside the sandbox, which exits 0;
    // one that ignores it is killed after the grace period (137).
    let stubborn = n
        .create_started(
            &pod_id,
            &pod,
            &container(
                "stubborn",
                &["sh", "-c", "trap '' TERM; while :; do sleep 0.2; done"],
            ),
        )
        .await;
    n.stop_container(&id, 10).await;
    let st = n.exited(&id).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let lines = cri_log(&log);
    assert!(
        lines.iter().any(|l| l.3 == "got-term"),
        "{}",
        output_of(&lines)
    );
    n.stop_container(&stubborn, 1).await;
    let st = n.exited(&stubborn).await;
    assert_eq!(st.exit_code, 137, "{st:?}");
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);

    for c in [&id, &web, &done, &stubborn] {
        n.stop_container(c, 0).await;
        n.remove_container(c).await;
        assert!(runsc_state(&root, c).is_none(), "runsc still knows {c}");
    }
    n.remove_pod(&pod_id).await;
    assert!(runsc_files(&root).is_empty(), "{:?}", runsc_files(&root));
    n.finish().await;
    assert!(
        carapace_e2e::processes_naming(&root).is_empty(),
        "{:?}",
        carapace_e2e::processes_naming(&root)
    );
}

/// A runsc container with a terminal and stdin: attach reaches its shell through the terminal
/// runsc made (and resizes it), a streaming exec with a terminal gets one inside the sandbox,
/// and the container, its monitor and runsc's record of it live through a daemon restart.
#[tokio::test]
async fn a_runsc_container_with_a_terminal_is_attached_execd_and_survives_a_restart() {
    const WAIT: Duration = Duration::from_secs(15);
    let (_guard, root) = runsc_root();
    let Some(mut n) = node_with_runsc(226, &root).await else {
        return;
    };
    let pod = n.pod("runsctty", "0d1e2f30-0000-4000-8000-000000000226");
    let pod_id = run_runsc_pod(&mut n, &pod).await;
    let mut c = container("shell", &["sh"]);
    c.tty = true;
    c.stdin = true;
    let id = n.create_started(&pod_id, &pod, &c).await;
    let (_, info) = n.status(&id).await;
    let pid = info["pid"].as_i64();
    assert_eq!(
        runsc_state(&root, &id).map(|s| s["pid"].as_i64()),
        Some(pid),
        "runsc does not know {id}"
    );

    let attach = |id: &str| cri::AttachRequest {
        container_id: id.into(),
        stdin: true,
        tty: true,
        stdout: true,
        stderr: false,
    };
    let url = n.attach_url(attach(&id)).await.unwrap();
    let mut s = RemoteCommand::connect(&url).await.unwrap();
    s.resize(100, 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.stdin(b"busybox stty size; [ -t 1 ] && echo term-$((6*7))\n")
        .await;
    s.wait_for("30 100", WAIT).await;
    s.wait_for("term-42", WAIT).await;
    s.hang_up().await;
    let log = n.log_path(&id).await;
    log_until(&log, "the terminal's line in the log", |l| l.3 == "term-42").await;

    // A streaming exec with a terminal, which the command has as its stdin.
    let url = n
        .exec_url(cri::ExecRequest {
            container_id: id.clone(),
            cmd: ["sh", "-c", "[ -t 0 ] && echo exec-tty-$((6*7)); exit 5"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            tty: true,
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .await;
    let out = RemoteCommand::connect(&url)
        .await
        .unwrap()
        .finish(WAIT)
        .await;
    let text = out.stdout_text();
    assert!(text.contains("exec-tty-42"), "{text:?}\n{out:?}");
    assert_eq!(out.exit_code(), Some(5), "{out:?}");

    // A daemon restart: the container, its monitor and runsc's record of it carry on.
    n.d = n.d.restart().await;
    n.rt = n.d.runtime().await;
    let (st, info) = n.status(&id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(info["pid"].as_i64(), pid);
    let r = n.exec_sync(&id, &["echo", "alive"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "alive\n");
    let url = n.attach_url(attach(&id)).await.unwrap();
    let mut s = RemoteCommand::connect(&url).await.unwrap();
    s.stdin(b"echo after-$((6*7))\n").await;
    s.wait_for("after-42", WAIT).await;
    s.hang_up().await;

    n.remove_all(&pod_id).await;
    assert!(runsc_files(&root).is_empty(), "{:?}", runsc_files(&root));
}
