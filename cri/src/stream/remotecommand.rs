//! The remotecommand protocol behind exec and attach, over SPDY streams or WebSocket channels:
//! which streams a client opens for which request, pumping them to and from the backend's pipes,
//! terminal resizes, and the final status on the error stream (plain text before v4, a
//! `metav1.Status` from v4 on, with the exit code as a cause).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::session::{Role, Session, SpdyStream, StreamReader, StreamWriter};
use super::spdy::header;
use super::{AttachRequest, ExecRequest, Inner, PIPE_BUFFER, ProcessIo, TerminalSize};

/// How long output may keep draining after the backend returned (a daemonised child can hold
/// the pipe open forever).
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for the client to hang up after the status went out.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Resize messages decoded and not yet taken by the backend; more are dropped, not queued.
const RESIZE_QUEUE: usize = 8;
/// A resize message longer than this is not a terminal size.
const MAX_RESIZE_MESSAGE: usize = 4096;
const READ_CHUNK: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    V1,
    V2,
    V3,
    V4,
    V5,
}

impl Version {
    /// The negotiated subprotocol; none at all means the original, unversioned one.
    pub(crate) fn from_name(name: &str) -> Self {
        match name {
            "v5.channel.k8s.io" => Version::V5,
            "v4.channel.k8s.io" | "v4.base64.channel.k8s.io" => Version::V4,
            "v3.channel.k8s.io" => Version::V3,
            "v2.channel.k8s.io" => Version::V2,
            _ => Version::V1,
        }
    }
}

/// A WebSocket subprotocol: its remotecommand version and whether payloads are base64 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WsProto {
    pub version: Version,
    pub base64: bool,
}

impl WsProto {
    pub(crate) fn from_name(name: &str) -> Self {
        Self {
            version: Version::from_name(name),
            base64: name.contains("base64"),
        }
    }
}

pub(crate) enum Command {
    Exec(ExecRequest),
    Attach(AttachRequest),
}

impl Command {
    /// (tty, stdin, stdout, stderr)
    fn streams(&self) -> (bool, bool, bool, bool) {
        match self {
            Command::Exec(r) => (r.tty, r.stdin, r.stdout, r.stderr && !r.tty),
            Command::Attach(r) => (r.tty, r.stdin, r.stdout, r.stderr && !r.tty),
        }
    }
}

/// How the command ended.
enum Outcome {
    Exit(i32),
    Failed(String),
}

async fn run_backend(inner: &Inner, cmd: &Command, io: ProcessIo) -> Outcome {
    match cmd {
        Command::Exec(r) => match inner.backend.exec(r, io).await {
            Ok(code) => Outcome::Exit(code),
            Err(e) => Outcome::Failed(e.to_string()),
        },
        Command::Attach(r) => match inner.backend.attach(r, io).await {
            Ok(()) => Outcome::Exit(0),
            Err(e) => Outcome::Failed(e.to_string()),
        },
    }
}

/// What goes on the error stream at the end, if anything.
fn status_message(version: Version, outcome: &Outcome) -> Option<Vec<u8>> {
    if version < Version::V4 {
        return match outcome {
            Outcome::Exit(0) => None,
            Outcome::Exit(code) => Some(
                format!("command terminated with non-zero exit code: exit status {code}")
                    .into_bytes(),
            ),
            Outcome::Failed(msg) => Some(msg.clone().into_bytes()),
        };
    }
    let status = match outcome {
        Outcome::Exit(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exit(code) => {
            // Clients parse the cause as an 8-bit unsigned exit code.
            let code = if (1..=255).contains(code) { *code } else { 255 };
            serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                // metav1.StatusCause names its type field "reason" in JSON.
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            })
        }
        Outcome::Failed(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    };
    serde_json::to_vec(&status).ok()
}

/// Decodes the resize stream: JSON objects one after another (Go's encoder ends each with a
/// newline). Sizes the backend has not taken yet are dropped rather than queued.
pub(super) struct ResizeDecoder {
    pub(super) buf: Vec<u8>,
    pub(super) tx: mpsc::Sender<TerminalSize>,
}

impl ResizeDecoder {
    /// False once the stream is unusable (garbage or an oversized message).
    pub(super) fn push(&mut self, data: &[u8]) -> bool {
        self.buf.extend_from_slice(data);
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TerminalSize>();
        let mut consumed = 0;
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    consumed = it.byte_offset();
                    let _ = self.tx.try_send(size);
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "bad terminal resize message");
                    return false;
                }
                None => {
                    consumed = it.byte_offset();
                    break;
                }
            }
        }
        self.buf.drain(..consumed);
        self.buf.len() <= MAX_RESIZE_MESSAGE
    }
}

/// Pipes between the sessions and the backend: the backend gets one end of each in [`ProcessIo`],
/// the pumps the other.
struct Pipes {
    stdin: Option<DuplexStream>,
    stdout: Option<DuplexStream>,
    stderr: Option<DuplexStream>,
    resize: Option<mpsc::Sender<TerminalSize>>,
}

fn pipes(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> (ProcessIo, Pipes) {
    let pair = |on: bool| {
        on.then(|| tokio::io::duplex(PIPE_BUFFER))
            .map_or((None, None), |(a, b)| (Some(a), Some(b)))
    };
    let (p_in, s_in) = pair(stdin);
    let (p_out, s_out) = pair(stdout);
    let (p_err, s_err) = pair(stderr);
    let (resize_tx, resize_rx) = if tty {
        let (t, r) = mpsc::channel(RESIZE_QUEUE);
        (Some(t), Some(r))
    } else {
        (None, None)
    };
    (
        ProcessIo {
            stdin: p_in,
            stdout: p_out,
            stderr: p_err,
            resize: resize_rx,
            tty,
        },
        Pipes {
            stdin: s_in,
            stdout: s_out,
            stderr: s_err,
            resize: resize_tx,
        },
    )
}

/// Copies the process's output to `send` until EOF.
async fn pump_output<F, Fut>(mut pipe: DuplexStream, mut send: F)
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !send(Bytes::copy_from_slice(&buf[..n])).await {
                    return;
                }
            }
        }
    }
}

/// Runs the backend and the output pumps; resolves once the command ended and its output drained.
async fn run_with_output<O1, O2>(
    inner: &Inner,
    cmd: &Command,
    io: ProcessIo,
    out: O1,
    err: O2,
) -> Outcome
where
    O1: std::future::Future<Output = ()>,
    O2: std::future::Future<Output = ()>,
{
    let outputs = async {
        tokio::join!(out, err);
    };
    tokio::pin!(outputs);
    let backend = run_backend(inner, cmd, io);
    tokio::pin!(backend);
    let mut drained = false;
    let outcome = loop {
        tokio::select! {
            o = &mut backend => break o,
            _ = &mut outputs, if !drained => drained = true,
        }
    };
    if !drained {
        let _ = tokio::time::timeout(DRAIN_GRACE, outputs).await;
    }
    outcome
}

pub(super) async fn serve_spdy<T>(inner: Arc<Inner>, cmd: Command, version: Version, io: T)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (session, mut incoming) = match Session::start(
        io,
        Role::Server,
        super::portforward::session_limits(&inner.limits),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "streaming: cannot start SPDY session");
            return;
        }
    };
    let (tty, want_in, want_out, want_err) = cmd.streams();
    let want_resize = tty && version >= Version::V3;
    let expected = 1 + [want_in, want_out, want_err, want_resize]
        .iter()
        .filter(|w| **w)
        .count();

    let mut error: Option<SpdyStream> = None;
    let mut stdin: Option<SpdyStream> = None;
    let mut stdout: Option<SpdyStream> = None;
    let mut stderr: Option<SpdyStream> = None;
    let mut resize: Option<SpdyStream> = None;
    let mut got = 0;
    let deadline = tokio::time::sleep(inner.limits.stream_creation_timeout);
    tokio::pin!(deadline);
    while got < expected {
        tokio::select! {
            s = incoming.recv() => {
                let Some(s) = s else {
                    session.close().await;
                    return;
                };
                let slot = match header(&s.headers, "streamtype") {
                    Some("error") => &mut error,
                    Some("stdin") if want_in => &mut stdin,
                    Some("stdout") if want_out => &mut stdout,
                    Some("stderr") if want_err => &mut stderr,
                    Some("resize") if want_resize => &mut resize,
                    other => {
                        tracing::debug!(stream_type = ?other, "streaming: unexpected stream");
                        s.writer.reset().await;
                        continue;
                    }
                };
                if slot.is_some() {
                    s.writer.reset().await;
                    continue;
                }
                *slot = Some(s);
                got += 1;
            }
            _ = &mut deadline => {
                tracing::warn!("streaming: timed out waiting for the client to create streams");
                session.close().await;
                return;
            }
        }
    }
    let Some(error) = error else {
        session.close().await;
        return;
    };

    let (io, pipes) = pipes(tty, want_in, want_out, want_err);
    // Readers of streams the client only reads from are dropped, so stray data is discarded.
    let stdin_writer = stdin.as_ref().map(|s| s.writer.clone());
    let stdin_pump = spdy_stdin(stdin.map(|s| s.reader), pipes.stdin);
    let resize_pump = spdy_resize(resize.map(|s| s.reader), pipes.resize);
    let out = spdy_output(stdout.map(|s| s.writer), pipes.stdout);
    let err = spdy_output(stderr.map(|s| s.writer), pipes.stderr);
    if version == Version::V1 {
        // The first version closes the server's side of stdin at once.
        if let Some(w) = &stdin_writer {
            let _ = w.finish().await;
        }
    }

    let work = async {
        let inputs = async {
            tokio::join!(stdin_pump, resize_pump);
            std::future::pending::<()>().await
        };
        tokio::select! {
            o = run_with_output(&inner, &cmd, io, out, err) => Some(o),
            _ = inputs => None,
        }
    };
    let outcome = tokio::select! {
        o = work => o,
        _ = session.idle(inner.limits.idle_timeout) => {
            tracing::info!("streaming: closing an idle exec/attach session");
            Some(Outcome::Failed("streaming session idle for too long".into()))
        }
        _ = session.closed() => None,
    };
    if let Some(outcome) = outcome {
        if let Some(msg) = status_message(version, &outcome) {
            let _ = error.writer.send(&msg).await;
        }
    }
    let _ = error.writer.finish().await;
    if let Some(w) = stdin_writer {
        let _ = w.finish().await;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, session.closed()).await;
    session.close().await;
}

async fn spdy_stdin(reader: Option<StreamReader>, pipe: Option<DuplexStream>) {
    let (Some(mut reader), Some(mut pipe)) = (reader, pipe) else {
        return;
    };
    while let Some(chunk) = reader.recv().await {
        if pipe.write_all(&chunk.data).await.is_err() {
            // The process closed its stdin; drain what the client still sends.
            while reader.recv().await.is_some() {}
            return;
        }
    }
    // The client half-closed stdin: the process sees EOF.
    let _ = pipe.shutdown().await;
}

async fn spdy_resize(reader: Option<StreamReader>, tx: Option<mpsc::Sender<TerminalSize>>) {
    let (Some(mut reader), Some(tx)) = (reader, tx) else {
        return;
    };
    let mut dec = ResizeDecoder {
        buf: Vec::new(),
        tx,
    };
    while let Some(chunk) = reader.recv().await {
        if !dec.push(&chunk.data) {
            return;
        }
    }
}

async fn spdy_output(writer: Option<StreamWriter>, pipe: Option<DuplexStream>) {
    let (Some(writer), Some(pipe)) = (writer, pipe) else {
        return;
    };
    pump_output(pipe, |b| {
        let w = writer.clone();
        async move { w.send(&b).await.is_ok() }
    })
    .await;
    let _ = writer.finish().await;
}

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
pub(super) const RESIZE: u8 = 4;
/// v5: `[255, channel]` from the client closes that channel.
const CLOSE: u8 = 255;

/// One outgoing channel message in the negotiated encoding.
fn ws_message(proto: WsProto, channel: u8, data: &[u8]) -> Message {
    if proto.base64 {
        let mut s = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        s.push(char::from(b'0' + channel));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::text(s)
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(channel);
        v.extend_from_slice(data);
        Message::binary(v)
    }
}

/// A channel message from the client: (channel, payload).
pub(super) fn ws_decode(proto: WsProto, msg: Message) -> Option<(u8, Vec<u8>)> {
    let raw: Vec<u8> = match msg {
        Message::Binary(b) => b.to_vec(),
        Message::Text(t) => t.as_bytes().to_vec(),
        _ => return None,
    };
    let (&first, rest) = raw.split_first()?;
    if proto.version >= Version::V5 && first == CLOSE {
        return Some((CLOSE, rest.to_vec()));
    }
    if proto.base64 {
        let data = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        Some((first.wrapping_sub(b'0'), data))
    } else {
        Some((first, rest.to_vec()))
    }
}

pub(super) async fn serve_ws<S>(
    inner: Arc<Inner>,
    cmd: Command,
    proto: WsProto,
    ws: WebSocketStream<S>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = ws.split();
    let activity = super::Activity::new();
    let (tx, mut rx) = mpsc::channel::<Message>(16);
    let writer_activity = activity.clone();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() {
                return;
            }
            writer_activity.touch();
            if close {
                return;
            }
        }
    });

    let (tty, want_in, want_out, want_err) = cmd.streams();
    let (io, pipes) = pipes(tty, want_in, want_out, want_err);
    // Tells the client the channels are open: an empty message on the lowest writable channel.
    let first = if want_out {
        STDOUT
    } else if want_err {
        STDERR
    } else {
        ERROR
    };
    let _ = tx.send(ws_message(proto, first, &[])).await;

    let mut stdin = pipes.stdin;
    let mut resize = pipes.resize.map(|tx| ResizeDecoder {
        buf: Vec::new(),
        tx,
    });
    let read_activity = activity.clone();
    let reader = async move {
        while let Some(msg) = source.next().await {
            let Ok(msg) = msg else { return };
            read_activity.touch();
            if matches!(msg, Message::Close(_)) {
                return;
            }
            let Some((channel, data)) = ws_decode(proto, msg) else {
                continue;
            };
            match channel {
                CLOSE if data.first() == Some(&STDIN) => {
                    if let Some(mut p) = stdin.take() {
                        let _ = p.shutdown().await;
                    }
                }
                STDIN => {
                    if let Some(p) = stdin.as_mut() {
                        if p.write_all(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                RESIZE => {
                    if let Some(d) = resize.as_mut() {
                        if !d.push(&data) {
                            resize = None;
                        }
                    }
                }
                _ => {}
            }
        }
    };
    tokio::pin!(reader);

    let out_tx = tx.clone();
    let out = async {
        if let Some(p) = pipes.stdout {
            pump_output(p, |b| {
                let t = out_tx.clone();
                async move { t.send(ws_message(proto, STDOUT, &b)).await.is_ok() }
            })
            .await
        }
    };
    let err_tx = tx.clone();
    let err = async {
        if let Some(p) = pipes.stderr {
            pump_output(p, |b| {
                let t = err_tx.clone();
                async move { t.send(ws_message(proto, STDERR, &b)).await.is_ok() }
            })
            .await
        }
    };
    let outcome = tokio::select! {
        o = run_with_output(&inner, &cmd, io, out, err) => Some(o),
        _ = &mut reader => None,
        _ = activity.idle(inner.limits.idle_timeout) => {
            Some(Outcome::Failed("streaming session idle for too long".into()))
        }
    };
    if let Some(outcome) = outcome {
        if let Some(msg) = status_message(proto.version, &outcome) {
            let _ = tx.send(ws_message(proto, ERROR, &msg)).await;
        }
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        // Read on until the client answers the close, so that it gets everything.
        let _ = tokio::time::timeout(CLOSE_GRACE, &mut reader).await;
    }
    drop(tx);
    let _ = tokio::time::timeout(CLOSE_GRACE, writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_the_exit_code_as_a_cause() {
        let m = status_message(Version::V4, &Outcome::Exit(3)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let m = status_message(Version::V5, &Outcome::Exit(0)).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&m).unwrap()["status"],
            "Success"
        );
        assert!(status_message(Version::V3, &Outcome::Exit(0)).is_none());
        assert!(status_message(Version::V2, &Outcome::Exit(2)).is_some());
    }

    #[test]
    fn resize_messages_split_anywhere() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut d = ResizeDecoder {
            buf: Vec::new(),
            tx,
        };
        assert!(d.push(b"{\"Width\":80,\"Hei"));
        assert!(d.push(b"ght\":24}\n{\"Width\":100,\"Height\":30}\n"));
        assert_eq!(
            rx.try_recv().unwrap(),
            TerminalSize {
                width: 80,
                height: 24
            }
        );
        assert_eq!(
            rx.try_recv().unwrap(),
            TerminalSize {
                width: 100,
                height: 30
            }
        );
        assert!(!d.push(b"nonsense"));
    }

    #[test]
    fn base64_channels_round_trip() {
        let p = WsProto::from_name("base64.channel.k8s.io");
        assert_eq!(p.version, Version::V1);
        let m = ws_message(p, STDOUT, b"hi");
        assert_eq!(m, Message::text("1aGk="));
        assert_eq!(
            ws_decode(p, Message::text("0aGk=")),
            Some((STDIN, b"hi".to_vec()))
        );
        let v5 = WsProto::from_name("v5.channel.k8s.io");
        assert_eq!(
            ws_decode(v5, Message::binary(vec![255, 0])),
            Some((CLOSE, vec![0]))
        );
    }
}
