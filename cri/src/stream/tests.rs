//! End-to-end tests of the streaming server on loopback: a fake backend that runs host processes
//! and dials a local echo server, and clients that do what client-go's SPDY and WebSocket
//! executors and port-forwarder do on the wire.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::session::{Role, Session, SessionLimits, SpdyStream};
use super::*;

struct Fake {
    echo: std::net::SocketAddr,
}

impl StreamBackend for Fake {
    fn exec<'a>(
        &'a self,
        req: &'a ExecRequest,
        mut io: ProcessIo,
    ) -> BoxFuture<'a, Result<i32, crate::Error>> {
        Box::pin(async move {
            if req.container_id == "missing" {
                return Err(crate::Error::NotFound("container \"missing\"".into()));
            }
            // No pty here: with tty, report the first terminal size on stdout instead.
            if let (Some(rx), Some(out)) = (io.resize.as_mut(), io.stdout.as_mut()) {
                if let Some(s) = rx.recv().await {
                    let line = format!("size {}x{}\n", s.width, s.height);
                    out.write_all(line.as_bytes()).await.unwrap();
                }
            }
            let mut cmd = tokio::process::Command::new(&req.cmd[0]);
            cmd.args(&req.cmd[1..])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd
                .spawn()
                .map_err(|e| crate::Error::Internal(e.to_string()))?;
            let mut cin = child.stdin.take().unwrap();
            let mut cout = child.stdout.take().unwrap();
            let mut cerr = child.stderr.take().unwrap();
            let stdin = async {
                if let Some(mut i) = io.stdin.take() {
                    let _ = tokio::io::copy(&mut i, &mut cin).await;
                }
                drop(cin);
            };
            let stdout = async {
                if let Some(mut o) = io.stdout.take() {
                    let _ = tokio::io::copy(&mut cout, &mut o).await;
                    let _ = o.shutdown().await;
                }
            };
            let stderr = async {
                if let Some(mut o) = io.stderr.take() {
                    let _ = tokio::io::copy(&mut cerr, &mut o).await;
                    let _ = o.shutdown().await;
                }
            };
            let (_, _, _, status) = tokio::join!(stdin, stdout, stderr, child.wait());
            let status = status.map_err(|e| crate::Error::Internal(e.to_string()))?;
            Ok(status.code().unwrap_or(255))
        })
    }

    fn attach<'a>(
        &'a self,
        _req: &'a AttachRequest,
        io: ProcessIo,
    ) -> BoxFuture<'a, Result<(), crate::Error>> {
        // A container running `cat`.
        Box::pin(async move {
            if let (Some(mut i), Some(mut o)) = (io.stdin, io.stdout) {
                let _ = tokio::io::copy(&mut i, &mut o).await;
                let _ = o.shutdown().await;
            }
            Ok(())
        })
    }

    fn port_forward<'a>(
        &'a self,
        _pod: &'a str,
        port: u16,
    ) -> BoxFuture<'a, Result<Box<dyn PortStream>, crate::Error>> {
        Box::pin(async move {
            if port != self.echo.port() {
                return Err(crate::Error::Unavailable(format!(
                    "port {port}: connection refused"
                )));
            }
            let c = TcpStream::connect(self.echo)
                .await
                .map_err(|e| crate::Error::Internal(e.to_string()))?;
            Ok(Box::new(c) as Box<dyn PortStream>)
        })
    }
}

/// A TCP echo server on loopback, standing in for a port inside a pod.
async fn echo_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = c.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A server with the fake backend, and the port of the echo server it forwards to.
async fn server_with(limits: Limits) -> (StreamServer, u16) {
    let echo = echo_server().await;
    let srv = StreamServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(Fake { echo }),
        limits,
    )
    .await
    .unwrap();
    (srv, echo.port())
}

async fn server() -> StreamServer {
    server_with(Limits::default()).await.0
}

fn exec(cmd: &str, tty: bool, stdin: bool, stderr: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: vec!["sh".into(), "-c".into(), cmd.into()],
        tty,
        stdin,
        stdout: true,
        stderr,
    }
}

fn client_limits() -> SessionLimits {
    SessionLimits {
        max_streams: 64,
        max_frame: 1 << 20,
        inbound_budget: 4 << 20,
    }
}

/// The answer to an upgrade request that was refused.
#[derive(Debug)]
struct Refused {
    status: u16,
    body: String,
}

/// The refusal of a connect that was expected to fail.
trait Refusal {
    fn refused(self) -> Refused;
}

impl Refusal for Result<(Session, String), Refused> {
    fn refused(self) -> Refused {
        match self {
            Ok(_) => panic!("upgrade accepted"),
            Err(r) => r,
        }
    }
}

/// What client-go's SPDY round tripper sends: POST with the upgrade headers and the offered
/// protocol versions; on 101 a SPDY client session on the same connection.
async fn spdy_connect(url: &str, protocols: &[&str]) -> Result<(Session, String), Refused> {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    );
    for p in protocols {
        req += &format!("X-Stream-Protocol-Version: {p}\r\n");
    }
    req += "Content-Length: 0\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.unwrap();
    // Byte by byte, so that nothing of the SPDY session is read with the headers.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    if status != 101 {
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        tcp.read_exact(&mut body).await.unwrap();
        return Err(Refused {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    let version = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("x-stream-protocol-version")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let (session, _) = Session::start(tcp, Role::Client, client_limits()).unwrap();
    Ok((session, version))
}

async fn open(s: &Session, pairs: &[(&str, &str)]) -> SpdyStream {
    let headers = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    tokio::time::timeout(Duration::from_secs(5), s.open(headers))
        .await
        .expect("SYN_REPLY in time")
        .unwrap()
}

async fn read_all(s: &mut SpdyStream) -> Vec<u8> {
    let mut v = Vec::new();
    let read = async {
        while let Some(c) = s.reader.recv().await {
            v.extend_from_slice(&c.data);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("stream EOF in time");
    v
}

fn status(raw: &[u8]) -> serde_json::Value {
    serde_json::from_slice(raw).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(raw)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_exec_pipes_stdin_and_reports_the_exit_code() {
    let srv = server().await;
    let url = srv
        .exec_url(exec("cat; echo oops >&2; exit 3", false, true, true))
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let all = [
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    ];
    let (session, version) = spdy_connect(&url, &all).await.unwrap();
    assert_eq!(version, "v5.channel.k8s.io");
    // The order client-go opens them in.
    let mut error = open(&session, &[("streamType", "error")]).await;
    let stdin = open(&session, &[("streamType", "stdin")]).await;
    let mut stdout = open(&session, &[("streamType", "stdout")]).await;
    let mut stderr = open(&session, &[("streamType", "stderr")]).await;
    let big = "hello\n".repeat(20_000); // larger than every pipe and queue on the way
    stdin.writer.send(big.as_bytes()).await.unwrap();
    stdin.writer.finish().await.unwrap();
    let (out, err, st) = tokio::join!(
        read_all(&mut stdout),
        read_all(&mut stderr),
        read_all(&mut error)
    );
    assert_eq!(out.len(), big.len());
    assert_eq!(String::from_utf8(err).unwrap(), "oops\n");
    let st = status(&st);
    assert_eq!(st["status"], "Failure");
    assert_eq!(st["reason"], "NonZeroExitCode");
    assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(st["details"]["causes"][0]["message"], "3");
    tokio::time::timeout(Duration::from_secs(10), session.closed())
        .await
        .expect("server closes the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_exec_tty_sees_the_resize_and_succeeds() {
    let srv = server().await;
    let url = srv.exec_url(exec("cat", true, true, false)).unwrap();
    let (session, version) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    assert_eq!(version, "v4.channel.k8s.io");
    let mut error = open(&session, &[("streamType", "error")]).await;
    let stdin = open(&session, &[("streamType", "stdin")]).await;
    let mut stdout = open(&session, &[("streamType", "stdout")]).await;
    let resize = open(&session, &[("streamType", "resize")]).await;
    resize
        .writer
        .send(b"{\"Width\":100,\"Height\":30}\n")
        .await
        .unwrap();
    stdin.writer.send(b"typed\n").await.unwrap();
    stdin.writer.finish().await.unwrap();
    let out = read_all(&mut stdout).await;
    assert_eq!(String::from_utf8(out).unwrap(), "size 100x30\ntyped\n");
    assert_eq!(status(&read_all(&mut error).await)["status"], "Success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_v2_reports_failures_as_text_and_backend_errors_reach_the_client() {
    let srv = server().await;
    let url = srv.exec_url(exec("exit 7", false, false, true)).unwrap();
    let (session, version) = spdy_connect(&url, &["v2.channel.k8s.io"]).await.unwrap();
    assert_eq!(version, "v2.channel.k8s.io");
    let mut error = open(&session, &[("streamType", "error")]).await;
    let mut stdout = open(&session, &[("streamType", "stdout")]).await;
    let mut stderr = open(&session, &[("streamType", "stderr")]).await;
    read_all(&mut stdout).await;
    read_all(&mut stderr).await;
    let msg = String::from_utf8(read_all(&mut error).await).unwrap();
    assert!(msg.contains("exit status 7"), "{msg}");

    let mut req = exec("true", false, false, false);
    req.container_id = "missing".into();
    let url = srv.exec_url(req).unwrap();
    let (session, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let mut error = open(&session, &[("streamType", "error")]).await;
    let _stdout = open(&session, &[("streamType", "stdout")]).await;
    let st = status(&read_all(&mut error).await);
    assert_eq!(st["status"], "Failure");
    assert!(st["message"].as_str().unwrap().contains("missing"), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_attach_echoes_input() {
    let srv = server().await;
    let url = srv
        .attach_url(AttachRequest {
            container_id: "c1".into(),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .unwrap();
    let (session, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let mut error = open(&session, &[("streamType", "error")]).await;
    let stdin = open(&session, &[("streamType", "stdin")]).await;
    let mut stdout = open(&session, &[("streamType", "stdout")]).await;
    stdin.writer.send(b"attached\n").await.unwrap();
    stdin.writer.finish().await.unwrap();
    assert_eq!(read_all(&mut stdout).await, b"attached\n");
    assert_eq!(status(&read_all(&mut error).await)["status"], "Success");
}

/// One forwarded connection as client-go makes it: error stream (half-closed at once), then the
/// data stream, with the same port and request id.
async fn forward_once(
    session: &Session,
    port: u16,
    request: u32,
    payload: &[u8],
) -> (Vec<u8>, String) {
    let port = port.to_string();
    let request = request.to_string();
    let mut error = open(
        session,
        &[
            ("streamType", "error"),
            ("port", &port),
            ("requestID", &request),
        ],
    )
    .await;
    error.writer.finish().await.unwrap();
    let mut data = open(
        session,
        &[
            ("streamType", "data"),
            ("port", &port),
            ("requestID", &request),
        ],
    )
    .await;
    data.writer.send(payload).await.unwrap();
    data.writer.finish().await.unwrap();
    let back = read_all(&mut data).await;
    let err = String::from_utf8(read_all(&mut error).await).unwrap();
    (back, err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spdy_port_forward_round_trips_and_reports_dial_errors() {
    let (srv, echo_port) = server_with(Limits::default()).await;
    let url = srv
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            ports: vec![],
        })
        .unwrap();
    let (session, version) = spdy_connect(&url, &["portforward.k8s.io"]).await.unwrap();
    assert_eq!(version, "portforward.k8s.io");
    let payload = vec![42u8; 200 * 1024];
    let (back, err) = forward_once(&session, echo_port, 0, &payload).await;
    assert_eq!(back, payload);
    assert_eq!(err, "");
    let (back, err) = forward_once(&session, 1, 1, b"x").await;
    assert!(back.is_empty());
    assert!(err.contains("error forwarding port 1 to pod p1"), "{err}");
    // Several connections on one session.
    let (back, _) = forward_once(&session, echo_port, 2, b"again").await;
    assert_eq!(back, b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_expired_and_unknown_tokens_get_404() {
    let (srv, _) = server_with(Limits {
        token_ttl: Duration::from_millis(200),
        ..Limits::default()
    })
    .await;
    let url = srv.exec_url(exec("true", false, false, true)).unwrap();
    let (session, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    drop(session);
    let again = spdy_connect(&url, &["v4.channel.k8s.io"]).await.refused();
    assert_eq!(again.status, 404, "{again:?}");
    let base = url.rsplit_once('/').unwrap().0;
    let unknown = spdy_connect(&format!("{base}/0123"), &[]).await.refused();
    assert_eq!(unknown.status, 404);
    // An exec token is not an attach token.
    let url = srv.exec_url(exec("true", false, false, true)).unwrap();
    let wrong = url.replace("/exec/", "/attach/");
    assert_eq!(spdy_connect(&wrong, &[]).await.refused().status, 404);
    let url = srv.exec_url(exec("true", false, false, true)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(spdy_connect(&url, &[]).await.refused().status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_protocol_and_plain_requests_are_refused_clearly() {
    let srv = server().await;
    let url = srv.exec_url(exec("true", false, false, true)).unwrap();
    let r = spdy_connect(&url, &["v9.channel.k8s.io"]).await.refused();
    assert_eq!(r.status, 403);
    assert!(
        r.body.contains("unable to negotiate protocol"),
        "{}",
        r.body
    );
    assert!(r.body.contains("v9.channel.k8s.io"), "{}", r.body);
    // Port-forward speaks only portforward.k8s.io.
    let url = srv
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "p".into(),
            ports: vec![80],
        })
        .unwrap();
    assert_eq!(
        spdy_connect(&url, &["v4.channel.k8s.io"])
            .await
            .refused()
            .status,
        403
    );
    // No upgrade at all, and garbage: the server answers and keeps serving.
    let url = srv.exec_url(exec("true", false, false, true)).unwrap();
    let host = srv.local_addr();
    let mut tcp = TcpStream::connect(host).await.unwrap();
    let path = url.split_once(&host.to_string()).unwrap().1;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let mut junk = TcpStream::connect(host).await.unwrap();
    junk.write_all(b"\x80\x03\x00\x01garbage\r\n\r\n")
        .await
        .unwrap();
    let _ = junk.read(&mut buf).await;
    let url = srv.exec_url(exec("echo fine", false, false, true)).unwrap();
    let (session, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let mut error = open(&session, &[("streamType", "error")]).await;
    let mut stdout = open(&session, &[("streamType", "stdout")]).await;
    let _stderr = open(&session, &[("streamType", "stderr")]).await;
    assert_eq!(read_all(&mut stdout).await, b"fine\n");
    assert_eq!(status(&read_all(&mut error).await)["status"], "Success");
}

#[test]
fn requests_are_validated_before_a_url_is_made() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let srv = server().await;
        let none = ExecRequest {
            stdout: false,
            ..exec("true", false, false, false)
        };
        assert!(matches!(
            srv.exec_url(none),
            Err(StreamError::InvalidRequest(_))
        ));
        let tty_stderr = exec("true", true, false, true);
        assert!(matches!(
            srv.exec_url(tty_stderr),
            Err(StreamError::InvalidRequest(_))
        ));
        let nul = ExecRequest {
            cmd: vec!["echo".into(), "a\0b".into()],
            ..exec("true", false, false, true)
        };
        assert!(matches!(
            srv.exec_url(nul),
            Err(StreamError::InvalidRequest(m)) if m.contains("NUL")
        ));
        let bad_port = PortForwardRequest {
            pod_sandbox_id: "p".into(),
            ports: vec![70000],
        };
        assert!(srv.port_forward_url(bad_port).is_err());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed() {
    let (srv, _) = server_with(Limits {
        idle_timeout: Duration::from_millis(300),
        ..Limits::default()
    })
    .await;
    let url = srv.exec_url(exec("sleep 30", false, false, true)).unwrap();
    let (session, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let mut error = open(&session, &[("streamType", "error")]).await;
    let _stdout = open(&session, &[("streamType", "stdout")]).await;
    let _stderr = open(&session, &[("streamType", "stderr")]).await;
    let st = status(&read_all(&mut error).await);
    assert!(st["message"].as_str().unwrap().contains("idle"), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_limit_get_503() {
    let (srv, _) = server_with(Limits {
        max_sessions: 1,
        ..Limits::default()
    })
    .await;
    let url = srv.exec_url(exec("sleep 30", false, false, true)).unwrap();
    let (_busy, _) = spdy_connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let url = srv.exec_url(exec("true", false, false, true)).unwrap();
    let r = spdy_connect(&url, &["v4.channel.k8s.io"]).await.refused();
    assert_eq!(r.status, 503);
}

async fn ws_connect(url: &str, protocol: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let mut req = url
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    let host = url
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let tcp = TcpStream::connect(host).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        protocol
    );
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_v5_exec_closes_stdin_and_reports_the_exit_code() {
    use futures_util::{SinkExt, StreamExt};
    let srv = server().await;
    let url = srv
        .exec_url(exec("cat; exit 2", false, true, true))
        .unwrap();
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    ws.send(Message::binary(b"\x00hi\n".to_vec()))
        .await
        .unwrap();
    // v5: the stdin close signal.
    ws.send(Message::binary(vec![255, 0])).await.unwrap();
    let (mut out, mut st, mut first) = (Vec::new(), Vec::new(), None);
    let read = async {
        while let Some(Ok(m)) = ws.next().await {
            match m {
                Message::Binary(b) => {
                    first.get_or_insert(b.to_vec());
                    match b[0] {
                        1 => out.extend_from_slice(&b[1..]),
                        3 => st.extend_from_slice(&b[1..]),
                        _ => {}
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap();
    assert_eq!(first.unwrap(), vec![1], "an empty stdout message first");
    assert_eq!(out, b"hi\n");
    let st = status(&st);
    assert_eq!(st["reason"], "NonZeroExitCode");
    assert_eq!(st["details"]["causes"][0]["message"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_base64_exec_carries_output() {
    use base64::Engine;
    use futures_util::StreamExt;
    let srv = server().await;
    let url = srv.exec_url(exec("echo b64", false, false, true)).unwrap();
    let mut ws = ws_connect(&url, "base64.channel.k8s.io").await;
    let mut out = Vec::new();
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = &m {
            if let Some(rest) = t.as_str().strip_prefix('1') {
                out.extend(
                    base64::engine::general_purpose::STANDARD
                        .decode(rest)
                        .unwrap(),
                );
            }
        }
        if matches!(m, Message::Close(_)) {
            break;
        }
    }
    assert_eq!(out, b"b64\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnelled_port_forward_round_trips() {
    let (srv, echo_port) = server_with(Limits::default()).await;
    let url = srv
        .port_forward_url(PortForwardRequest {
            pod_sandbox_id: "p1".into(),
            ports: vec![i32::from(echo_port)],
        })
        .unwrap();
    let ws = ws_connect(&url, "SPDY/3.1+portforward.k8s.io").await;
    // The same bridge works on the client side: SPDY in binary messages.
    let pipe = super::ws::tunnel(ws, 1 << 20);
    let (session, _) = Session::start(pipe, Role::Client, client_limits()).unwrap();
    let (back, err) = forward_once(&session, echo_port, 0, b"through the tunnel").await;
    assert_eq!(back, b"through the tunnel");
    assert_eq!(err, "");
}
