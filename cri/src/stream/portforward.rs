//! Port-forward over a SPDY session (direct, or tunnelled in a WebSocket): the client opens a pair
//! of streams per forwarded connection (`streamtype` `error` and `data`, the same `port` and
//! `requestid`); each complete pair is dialled through the backend and bytes are copied both ways.
//! A failure is written as text on the pair's error stream, as the kubelet does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;

use super::session::{Role, Session, SessionLimits, SpdyStream};
use super::spdy::header;
use super::{Inner, Limits, PortForwardRequest};

pub(super) fn session_limits(l: &Limits) -> SessionLimits {
    SessionLimits {
        max_streams: l.max_streams,
        max_frame: l.max_frame,
        inbound_budget: l.session_buffer,
    }
}

#[derive(Default)]
struct Pair {
    data: Option<SpdyStream>,
    error: Option<SpdyStream>,
    port: u16,
    since: Option<Instant>,
}

fn port_of(s: &SpdyStream) -> Result<u16, String> {
    let p = header(&s.headers, "port").ok_or("\"port\" header is required")?;
    match p.parse::<u16>() {
        Ok(0) => Err(format!("port {p:?} must be > 0")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("unable to parse {p:?} as a port: {e}")),
    }
}

/// The pair a stream belongs to. Old clients send no request id: their error and data streams
/// are consecutive odd ids, so the error stream's id names the pair (the kubelet's rule).
fn request_id(s: &SpdyStream, kind: &str) -> String {
    match header(&s.headers, "requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ if kind == "data" => s.id.saturating_sub(2).to_string(),
        _ => s.id.to_string(),
    }
}

pub(super) async fn serve<T>(inner: Arc<Inner>, req: PortForwardRequest, io: T)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (session, mut incoming) =
        match Session::start(io, Role::Server, session_limits(&inner.limits)) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "port-forward: cannot start SPDY session");
                return;
            }
        };
    let pod = Arc::new(req.pod_sandbox_id);
    let timeout = inner.limits.stream_creation_timeout;
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(timeout));
    loop {
        tokio::select! {
            s = incoming.recv() => {
                let Some(s) = s else { break };
                let kind = match header(&s.headers, "streamtype") {
                    Some(k @ ("data" | "error")) => k.to_string(),
                    other => {
                        tracing::debug!(stream_type = ?other, "port-forward: bad stream type");
                        s.writer.reset().await;
                        continue;
                    }
                };
                let port = match port_of(&s) {
                    Ok(p) => p,
                    Err(msg) => {
                        tracing::debug!(%msg, "port-forward: bad port");
                        s.writer.reset().await;
                        continue;
                    }
                };
                let id = request_id(&s, &kind);
                let pair = pairs.entry(id.clone()).or_default();
                pair.since.get_or_insert_with(Instant::now);
                pair.port = port;
                let slot = if kind == "data" { &mut pair.data } else { &mut pair.error };
                if slot.is_some() {
                    let msg = format!("error processing stream for request {id}: {kind} stream already assigned");
                    if let Some(e) = &pair.error {
                        let _ = e.writer.send(msg.as_bytes()).await;
                    }
                    s.writer.reset().await;
                    continue;
                }
                *slot = Some(s);
                if pair.data.is_some() && pair.error.is_some() {
                    if let Some(Pair { data: Some(d), error: Some(e), port, .. }) = pairs.remove(&id) {
                        forwards.spawn(forward(inner.clone(), pod.clone(), port, d, e));
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let expired: Vec<String> = pairs
                    .iter()
                    .filter(|(_, p)| p.since.is_some_and(|t| now.duration_since(t) >= timeout))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in expired {
                    if let Some(p) = pairs.remove(&id) {
                        if let Some(e) = p.error {
                            let msg = format!("timed out waiting for the streams of request {id}");
                            let _ = e.writer.send(msg.as_bytes()).await;
                            let _ = e.writer.finish().await;
                        }
                        if let Some(d) = p.data {
                            d.writer.reset().await;
                        }
                    }
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
            _ = session.idle(inner.limits.idle_timeout) => {
                tracing::info!("port-forward: closing an idle session");
                break;
            }
            _ = session.closed() => break,
        }
    }
    forwards.abort_all();
    session.close().await;
}

/// One forwarded connection: dial, copy both ways, report a failure on the error stream.
async fn forward(
    inner: Arc<Inner>,
    pod: Arc<String>,
    port: u16,
    data: SpdyStream,
    error: SpdyStream,
) {
    // The client half-closes the error stream at once and never writes to it.
    drop(error.reader);
    let SpdyStream {
        reader: mut from_client,
        writer: to_client,
        ..
    } = data;
    let failure = match inner.backend.port_forward(&pod, port).await {
        Err(e) => Some(e.to_string()),
        Ok(conn) => {
            let (mut rd, mut wr) = tokio::io::split(conn);
            let up = async {
                while let Some(c) = from_client.recv().await {
                    wr.write_all(&c.data).await?;
                }
                wr.shutdown().await
            };
            let down = async {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    let n = rd.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(());
                    }
                    if to_client.send(&buf[..n]).await.is_err() {
                        // The client reset the stream: nothing more to deliver.
                        return Ok(());
                    }
                }
            };
            tokio::pin!(up, down);
            let (mut up_done, mut down_done) = (false, false);
            let mut failure: Option<std::io::Error> = None;
            while !(up_done && down_done) {
                tokio::select! {
                    r = &mut up, if !up_done => {
                        up_done = true;
                        if let Err(e) = r { failure.get_or_insert(e); }
                        // A client that is gone (reset) reads nothing more either.
                        if to_client.is_reset() { break; }
                    }
                    r = &mut down, if !down_done => {
                        down_done = true;
                        if let Err(e) = r { failure.get_or_insert(e); }
                        let _ = to_client.finish().await;
                    }
                }
            }
            failure.map(|e| e.to_string())
        }
    };
    if let Some(msg) = failure {
        let msg = format!("error forwarding port {port} to pod {pod}: {msg}");
        tracing::debug!(%msg, "port-forward failed");
        let _ = error.writer.send(msg.as_bytes()).await;
    }
    let _ = to_client.finish().await;
    let _ = error.writer.finish().await;
}
