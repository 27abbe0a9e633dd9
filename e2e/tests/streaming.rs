//! Exec, attach and port-forward through the real daemon's streaming server with the test clients
//! of `carapace_e2e::stream`: a terminal and its resizes, stdin echoed back, exit codes in the
//! status, attach to a running container's output and input (also with a terminal, and after a
//! daemon restart, since the monitor outlives the daemon), port-forward to busybox `httpd` in a
//! pod, used tokens and malformed upgrades refused. Every test removes what it made and ends with
//! `Daemon::stop`, which checks that no mount or process is left.

use std::path::Path;
use std::time::Duration;

use carapace_e2e::node::{Node, container, cri_log};
use carapace_e2e::stream::{RemoteCommand, SpdyClient, refused_status};
use carapace_e2e::{cri, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(15);

fn exec_req(id: &str, cmd: &[&str], tty: bool, stdin: bool) -> cri::ExecRequest {
    cri::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

/// A node running pod `name` (its uid ends in `index`) with a container `main` sleeping in it;
/// returns the node and the ids of the pod and the container.
async fn sleeping_main(index: u8, name: &str) -> (Node, String, String) {
    let uid = format!("5e7ea000-0000-4000-8000-{index:012}");
    let (mut n, pod, pod_id) = Node::with_running_pod(index, name, &uid).await;
    let id = n
        .create_started(&pod_id, &pod, &container("main", &["sleep", "1000"]))
        .await;
    (n, pod_id, id)
}

fn log_path(pod: &cri::PodSandboxConfig, name: &str) -> std::path::PathBuf {
    Path::new(&pod.log_directory).join(format!("{name}/0.log"))
}

#[tokio::test]
async fn exec_with_a_tty_sees_the_resize_and_merges_stderr() {
    let (mut n, pod_id, id) = sleeping_main(40, "tty").await;

    // The command waits for a line, so the resize has landed before `stty size` asks.
    let url = n
        .exec_url(exec_req(
            &id,
            &[
                "sh",
                "-c",
                "read go; busybox stty size; echo to-stderr >&2; [ -t 0 ] && echo is-a-tty; exit 4",
            ],
            true,
            true,
        ))
        .await;
    let mut s = RemoteCommand::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("upgrade: {e}\n{}", n.d.log_text()));
    s.resize(120, 40).await;
    s.stdin(b"go\n").await;
    let out = s.finish(WAIT).await;
    let text = out.stdout_text();
    assert!(text.contains("40 120"), "stty size: {out:?}");
    assert!(text.contains("to-stderr"), "stderr is merged: {out:?}");
    assert!(text.contains("is-a-tty"), "stdin is a terminal: {out:?}");
    // The terminal turns \n into \r\n, as a user's terminal expects.
    assert!(text.contains("40 120\r\n"), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(out.exit_code(), Some(4), "{out:?}");

    // A tty exec without stdin still runs and reports success.
    let url = n
        .exec_url(exec_req(&id, &["echo", "no-input"], true, false))
        .await;
    let out = RemoteCommand::connect(&url)
        .await
        .unwrap()
        .finish(WAIT)
        .await;
    assert_eq!(out.stdout_text(), "no-input\r\n", "{out:?}");
    assert_eq!(out.exit_code(), Some(0), "{out:?}");

    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn exec_without_a_tty_echoes_stdin_and_reports_the_exit_code() {
    let (mut n, pod_id, id) = sleeping_main(41, "pipe").await;

    let url = n
        .exec_url(exec_req(
            &id,
            &["sh", "-c", "cat; echo oops >&2; exit 7"],
            false,
            true,
        ))
        .await;
    let mut s = RemoteCommand::connect(&url).await.unwrap();
    let big: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    s.stdin(b"hello from stdin\n").await;
    s.stdin(big.as_bytes()).await;
    s.close_stdin().await;
    let out = s.finish(WAIT).await;
    assert_eq!(
        out.stdout_text(),
        format!("hello from stdin\n{big}"),
        "stderr: {}",
        out.stderr_text()
    );
    assert_eq!(out.stderr_text(), "oops\n");
    let status = out.status.as_ref().expect("a status");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(out.exit_code(), Some(7), "{status}");

    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn used_tokens_get_404_and_a_malformed_upgrade_harms_nothing() {
    let (mut n, pod_id, id) = sleeping_main(42, "tokens").await;

    let url = n.exec_url(exec_req(&id, &["true"], false, false)).await;
    let out = RemoteCommand::connect(&url)
        .await
        .unwrap()
        .finish(WAIT)
        .await;
    assert_eq!(out.exit_code(), Some(0), "{out:?}");
    let e = RemoteCommand::connect(&url)
        .await
        .err()
        .expect("reused URL accepted");
    assert_eq!(refused_status(&e), Some(404), "{e}");
    let unknown = format!(
        "{}/exec/{}",
        url.rsplit_once("/exec/").unwrap().0,
        "x".repeat(20)
    );
    let e = RemoteCommand::connect(&unknown)
        .await
        .err()
        .expect("made-up token accepted");
    assert_eq!(refused_status(&e), Some(404), "{e}");

    // A WebSocket upgrade without its key, then garbage: refused, and the server goes on.
    let url = n.exec_url(exec_req(&id, &["true"], false, false)).await;
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 1024];
    let got = tokio::time::timeout(WAIT, tcp.read(&mut answer))
        .await
        .expect("no answer to a malformed upgrade")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..got]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let mut junk = tokio::net::TcpStream::connect(addr).await.unwrap();
    junk.write_all(b"\x16\x03\x01\x00\xff not http at all\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, junk.read_to_end(&mut sink)).await;

    let url = n
        .exec_url(exec_req(&id, &["echo", "still-serving"], false, false))
        .await;
    let out = RemoteCommand::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("after a bad upgrade: {e}\n{}", n.d.log_text()))
        .finish(WAIT)
        .await;
    assert_eq!(out.stdout_text(), "still-serving\n");

    n.remove_all(&pod_id).await;
}

/// A container reading lines from its stdin and answering each.
fn echo_container(name: &str, tty: bool, stdin_once: bool) -> cri::ContainerConfig {
    let mut c = container(
        name,
        &[
            "sh",
            "-c",
            "echo ready; while read l; do echo got:$l; done; echo stdin-closed",
        ],
    );
    c.stdin = true;
    c.stdin_once = stdin_once;
    c.tty = tty;
    c
}

fn attach_req(id: &str, tty: bool, stdin: bool) -> cri::AttachRequest {
    cri::AttachRequest {
        container_id: id.into(),
        stdin,
        tty,
        stdout: true,
        stderr: !tty,
    }
}

#[tokio::test]
async fn attach_carries_a_running_containers_output_and_input() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(43, "attach", "5e7ea000-0000-4000-8000-000000000043").await;
    let id = n
        .create_started(&pod_id, &pod, &echo_container("echo", false, false))
        .await;
    let quiet = n
        .create_started(&pod_id, &pod, &container("quiet", &["sleep", "1000"]))
        .await;
    let log = log_path(&pod, "echo");
    eventually(WAIT, "the container's first line", || {
        let log = log.clone();
        async move { cri_log(&log).iter().any(|l| l.3 == "ready").then_some(()) }
    })
    .await;

    let url = n.attach_url(attach_req(&id, false, true)).await.unwrap();
    let mut s = RemoteCommand::connect(&url).await.unwrap();
    s.stdin(b"hello\n").await;
    s.wait_for("got:hello\n", WAIT).await;
    // Output from before the attach is in the log, not replayed.
    assert!(!s.output.stdout_text().contains("ready"), "{:?}", s.output);
    // Two clients at once both see the output.
    let url2 = n.attach_url(attach_req(&id, false, false)).await.unwrap();
    let mut watcher = RemoteCommand::connect(&url2).await.unwrap();
    // The second session is registered once its upgrade is answered; a line after that reaches it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.stdin(b"both\n").await;
    s.wait_for("got:both\n", WAIT).await;
    watcher.wait_for("got:both\n", WAIT).await;
    s.hang_up().await;
    watcher.hang_up().await;
    // Leaving did not close the container's stdin (no stdin_once): it still answers.
    let url = n.attach_url(attach_req(&id, false, true)).await.unwrap();
    let mut s = RemoteCommand::connect(&url).await.unwrap();
    s.stdin(b"again\n").await;
    s.wait_for("got:again\n", WAIT).await;
    s.hang_up().await;
    let lines = cri_log(&log);
    for want in ["got:hello", "got:both", "got:again"] {
        assert!(
            lines.iter().any(|l| l.1 == "stdout" && l.3 == want),
            "{want} in {lines:?}"
        );
    }

    // Input for a container made without stdin is refused; tty with stderr too.
    let e = n
        .attach_url(attach_req(&quiet, false, true))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let mut bad = attach_req(&id, true, false);
    bad.stderr = true;
    let e = n.attach_url(bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = n
        .attach_url(attach_req(&"f".repeat(64), false, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");

    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn attach_to_a_tty_container_resizes_its_terminal_and_logs_plain_lines() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(44, "ttyattach", "5e7ea000-0000-4000-8000-000000000044").await;
    let mut c = container("shell", &["sh"]);
    c.tty = true;
    c.stdin = true;
    let id = n.create_started(&pod_id, &pod, &c).await;

    let url = n.attach_url(attach_req(&id, true, true)).await.unwrap();
    let mut s = RemoteCommand::connect(&url).await.unwrap();
    s.resize(100, 30).await;
    // Let the resize land before the shell runs stty.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.stdin(b"busybox stty size; [ -t 1 ] && echo term-$((6*7))\n")
        .await;
    s.wait_for("30 100", WAIT).await;
    s.wait_for("term-42", WAIT).await;
    s.hang_up().await;

    let log = log_path(&pod, "shell");
    let lines = eventually(WAIT, "the terminal's lines in the log", || {
        let log = log.clone();
        async move {
            let l = cri_log(&log);
            l.iter().any(|l| l.3 == "term-42").then_some(l)
        }
    })
    .await;
    assert!(
        lines
            .iter()
            .all(|l| l.1 == "stdout" && !l.3.ends_with('\r')),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.3 == "30 100"), "{lines:?}");

    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn attach_works_after_a_daemon_restart_and_stdin_once_ends_the_input() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(45, "restart", "5e7ea000-0000-4000-8000-000000000045").await;
    let id = n
        .create_started(&pod_id, &pod, &echo_container("echo", false, true))
        .await;

    n.d = n.d.restart().await;
    n.rt = n.d.runtime().await;

    let url = n.attach_url(attach_req(&id, false, true)).await.unwrap();
    let mut s = RemoteCommand::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("attach after restart: {e}\n{}", n.d.log_text()));
    s.stdin(b"after-restart\n").await;
    s.wait_for("got:after-restart\n", WAIT).await;
    // stdin_once: the end of this session's input closes the container's stdin, its loop ends,
    // it exits 0 and the session ends with it.
    s.close_stdin().await;
    s.wait_for("stdin-closed\n", WAIT).await;
    let out = s.finish(WAIT).await;
    assert_eq!(out.exit_code(), Some(0), "{out:?}");
    let st = n.exited(&id).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    let e = n
        .attach_url(attach_req(&id, false, false))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "attach to an exited container: {e}"
    );

    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn port_forward_over_websocket_reaches_httpd_in_the_pod() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(46, "pf", "5e7ea000-0000-4000-8000-000000000046").await;
    n.create_started(
        &pod_id,
        &pod,
        &container(
            "web",
            &[
                "sh",
                "-c",
                "busybox mkdir -p /www && echo hello-from-httpd > /www/index.html && \
                     exec busybox httpd -f -p 8080 -h /www",
            ],
        ),
    )
    .await;

    let url =
        n.rt.port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod_id.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.contains("/portforward/"), "{url}");
    let mut pf = SpdyClient::port_forward(&url).await.unwrap();
    // httpd may still be starting: each try is a new connection in the same session.
    let mut body = String::new();
    for attempt in 0..50u32 {
        let request = attempt.to_string();
        let hdr = |t: &'static str| [("streamtype", t), ("port", "8080"), ("requestid", "")];
        let mut h = hdr("error");
        h[2].1 = &request;
        let err_id = pf.open(&h, true).await;
        let mut h = hdr("data");
        h[2].1 = &request;
        let data_id = pf.open(&h, false).await;
        // The whole request, then the end of this side, as a client's closed socket does.
        pf.data(
            data_id,
            b"GET /index.html HTTP/1.0\r\nHost: pod\r\n\r\n",
            true,
        )
        .await;
        let got = pf.read_until_ended(&[err_id, data_id], WAIT).await;
        body = String::from_utf8_lossy(&got[1].data).into_owned();
        if body.contains("hello-from-httpd") {
            assert!(got[0].data.is_empty(), "error stream: {:?}", got[0]);
            break;
        }
        // Refused (not listening yet): the error stream says so.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        body.starts_with("HTTP/1.") && body.contains("hello-from-httpd"),
        "{body}"
    );
    pf.close().await;

    // A port nothing listens on: the error stream carries the dial error.
    let url =
        n.rt.port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod_id.clone(),
            port: vec![8081],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut pf = SpdyClient::port_forward(&url).await.unwrap();
    let err_id = pf
        .open(
            &[
                ("streamtype", "error"),
                ("port", "8081"),
                ("requestid", "0"),
            ],
            true,
        )
        .await;
    let _data_stream = pf
        .open(
            &[("streamtype", "data"), ("port", "8081"), ("requestid", "0")],
            false,
        )
        .await;
    let got = pf.read_until_ended(&[err_id], WAIT).await;
    let msg = String::from_utf8_lossy(&got[0].data).into_owned();
    assert!(msg.contains("8081"), "{msg}");
    pf.close().await;

    n.remove_all(&pod_id).await;
}

#[tokio::test]
async fn an_attached_client_that_never_reads_holds_up_neither_the_container_nor_its_log() {
    let (mut n, pod, pod_id) =
        Node::with_running_pod(47, "slow", "5e7ea000-0000-4000-8000-000000000047").await;
    let id = n
        .create_started(
            &pod_id,
            &pod,
            &container(
                "flood",
                &["sh", "-c", "sleep 1; while true; do cat /bin/busybox; done"],
            ),
        )
        .await;
    let url = n.attach_url(attach_req(&id, false, false)).await.unwrap();
    // Connected and then never read from: every buffer on its way fills up.
    let stalled = RemoteCommand::connect(&url).await.unwrap();
    let log = log_path(&pod, "flood");
    let size = || std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    // Far more than the socket buffers, the daemon's pipes and the monitor's per-client buffer.
    const WANT: u64 = 64 << 20;
    eventually(Duration::from_secs(60), "the log to keep growing", || {
        let s = size();
        async move { (s > WANT).then_some(()) }
    })
    .await;
    // The daemon still answers for this container.
    let r =
        n.rt.exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["echo".into(), "responsive".into()],
            timeout: 10,
        })
        .await
        .unwrap_or_else(|e| panic!("ExecSync: {e}\n{}", n.d.log_text()))
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "responsive\n");
    // Nothing buffered the flood for the stalled client: the monitor stays small.
    let started: serde_json::Value = serde_json::from_slice(
        &std::fs::read(n.state().join("containers").join(&id).join("runtime.json")).unwrap(),
    )
    .unwrap();
    let monitor = started["monitor_pid"].as_i64().unwrap();
    // Anonymous memory only: the mapped binary's pages are not the monitor's buffers.
    let anon_kib = carapace_e2e::proc_status_field(monitor, "RssAnon");
    assert!(anon_kib < 4 * 1024, "monitor anonymous RSS {anon_kib} KiB");
    drop(stalled);

    n.remove_all(&pod_id).await;
}

/// The kubelet's (and crictl's default) transport: a plain SPDY/3.1 upgrade, one stream per
/// remotecommand stream, the status on the error stream.
#[tokio::test]
async fn exec_with_a_tty_over_spdy_sees_the_resize_and_reports_the_exit_code() {
    let (mut n, pod_id, id) = sleeping_main(48, "spdy").await;
    let url = n
        .exec_url(exec_req(
            &id,
            &["sh", "-c", "read go; busybox stty size; exit 5"],
            true,
            true,
        ))
        .await;
    let mut s = SpdyClient::upgrade(&url, "v4.channel.k8s.io")
        .await
        .unwrap_or_else(|e| panic!("SPDY upgrade: {e}\n{}", n.d.log_text()));
    let error = s.open(&[("streamtype", "error")], true).await;
    let stdin = s.open(&[("streamtype", "stdin")], false).await;
    let stdout = s.open(&[("streamtype", "stdout")], true).await;
    let resize = s.open(&[("streamtype", "resize")], false).await;
    s.data(resize, b"{\"Width\":120,\"Height\":40}\n", false)
        .await;
    // The resize travels on its own stream: give it a moment before the command asks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.data(stdin, b"go\n", false).await;
    let got = s.read_until_ended(&[error, stdout], WAIT).await;
    let out = String::from_utf8_lossy(&got[1].data).into_owned();
    assert!(out.contains("40 120\r\n"), "stdout: {out:?}");
    let status: serde_json::Value =
        serde_json::from_slice(&got[0].data).unwrap_or_else(|e| panic!("status {:?}: {e}", got[0]));
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "5", "{status}");
    s.finish(stdin).await;
    s.close().await;

    n.remove_all(&pod_id).await;
}
