//! The HTTP/1.1 front of the streaming server: accepts connections (bounded), routes
//! `/exec|attach|portforward/<token>`, consumes the token, negotiates the transport (SPDY/3.1 or
//! WebSocket) and its subprotocol, answers `101 Switching Protocols` and hands the upgraded
//! connection to the session code. Every refusal is a plain-text HTTP answer that says why.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONNECTION, HeaderMap, HeaderValue, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role as WsRole, WebSocketConfig};

use super::remotecommand::{Command, Version, WsProto};
use super::token::Pending;
use super::{Inner, portforward, remotecommand};

pub(super) const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const ACCEPTED_PROTOCOLS_HEADER: &str = "x-accepted-stream-protocol-versions";
const WS_PROTOCOL_HEADER: &str = "sec-websocket-protocol";

/// remotecommand over SPDY, newest first; the server picks the newest the client offers.
const SPDY_COMMAND_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const SPDY_PORTFORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
/// remotecommand over WebSocket, newest first.
const WS_COMMAND_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];
/// Port-forward over WebSocket as client-go (and so crictl `--transport websocket`) does it: the
/// SPDY session tunnelled in binary messages.
const WS_PORTFORWARD_PROTOCOLS: &[&str] = &["SPDY/3.1+portforward.k8s.io"];

/// How long a client has to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

type Body = Full<Bytes>;

pub(super) async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.clone();
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of fds, most likely: back off rather than spin.
                    tracing::warn!(error = %e, "streaming server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = super::stopped(&mut shutdown) => return,
        };
        let Ok(permit) = inner.connections.clone().try_acquire_owned() else {
            tracing::warn!("streaming server: too many connections, closing a new one");
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut shutdown = inner.shutdown.clone();
            let svc_inner = inner.clone();
            let svc = service_fn(move |req| {
                let inner = svc_inner.clone();
                async move { Ok::<_, Infallible>(route(inner, req)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades();
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "streaming server: connection ended");
                },
                _ = super::stopped(&mut shutdown) => {}
            }
        });
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Every value of `name`, split at commas (HTTP allows both forms for lists).
fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    list(headers, name.as_str())
        .iter()
        .any(|v| v.eq_ignore_ascii_case(token))
}

/// The newest of `supported` that the client offers; `Some("")` when it offers none.
fn negotiate(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    if offered.is_empty() {
        return Some("");
    }
    supported
        .iter()
        .find(|s| offered.iter().any(|o| o == *s))
        .copied()
}

fn refuse_protocol(offered: &[String], supported: &[&str], header: &'static str) -> Response<Body> {
    let mut r = text(
        StatusCode::FORBIDDEN,
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, \
             server supports {supported:?}"
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&supported.join(", ")) {
        r.headers_mut().insert(header, v);
    }
    r
}

fn route(inner: Arc<Inner>, mut req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_start_matches('/');
    let Some((kind, token)) = path.split_once('/') else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    if req.method() != Method::GET && req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
    }
    let Some(pending) = inner.tokens.take(token, kind) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("{kind}: unknown, used or expired token; ask the runtime for a new URL"),
        );
    };
    let headers = req.headers();
    let upgrade = has_token(headers, CONNECTION, "upgrade");
    let websocket = upgrade && has_token(headers, UPGRADE, "websocket");
    let spdy = upgrade && has_token(headers, UPGRADE, "SPDY/3.1");
    if !websocket && !spdy {
        return text(
            StatusCode::BAD_REQUEST,
            "this URL needs an upgrade: `Connection: Upgrade` with `Upgrade: SPDY/3.1` or \
             `Upgrade: websocket`",
        );
    }
    let (offered, supported, header) = match (websocket, &pending) {
        (false, Pending::PortForward(_)) => (
            list(headers, STREAM_PROTOCOL_HEADER),
            SPDY_PORTFORWARD_PROTOCOLS,
            ACCEPTED_PROTOCOLS_HEADER,
        ),
        (false, _) => (
            list(headers, STREAM_PROTOCOL_HEADER),
            SPDY_COMMAND_PROTOCOLS,
            ACCEPTED_PROTOCOLS_HEADER,
        ),
        (true, Pending::PortForward(_)) => (
            list(headers, WS_PROTOCOL_HEADER),
            WS_PORTFORWARD_PROTOCOLS,
            WS_PROTOCOL_HEADER,
        ),
        (true, _) => (
            list(headers, WS_PROTOCOL_HEADER),
            WS_COMMAND_PROTOCOLS,
            WS_PROTOCOL_HEADER,
        ),
    };
    let protocol = match negotiate(&offered, supported) {
        // A tunnelled port-forward needs its subprotocol; without one there is nothing to speak.
        Some("") if websocket && matches!(pending, Pending::PortForward(_)) => None,
        p => p,
    };
    let Some(protocol) = protocol else {
        return refuse_protocol(&offered, supported, header);
    };
    let ws_key = if websocket {
        let version_ok = headers
            .get("sec-websocket-version")
            .is_some_and(|v| v.as_bytes() == b"13");
        match headers.get("sec-websocket-key") {
            Some(k) if version_ok => Some(derive_accept_key(k.as_bytes())),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "websocket upgrade needs Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key",
                );
            }
        }
    } else {
        None
    };
    let Ok(permit) = inner.sessions.clone().try_acquire_owned() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many streaming sessions; try again later",
        );
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, "");
    *resp.body_mut() = Full::new(Bytes::new());
    let h = resp.headers_mut();
    h.remove(hyper::header::CONTENT_TYPE);
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(accept) = ws_key {
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert("sec-websocket-accept", v);
        }
        if !protocol.is_empty() {
            h.insert(WS_PROTOCOL_HEADER, HeaderValue::from_static(protocol));
        }
    } else {
        h.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        if !protocol.is_empty() {
            h.insert(STREAM_PROTOCOL_HEADER, HeaderValue::from_static(protocol));
        }
    }
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(error = %e, "streaming server: upgrade failed");
                return;
            }
        };
        run(inner, pending, websocket, protocol, upgraded, permit).await;
    });
    resp
}

async fn run(
    inner: Arc<Inner>,
    pending: Pending,
    websocket: bool,
    protocol: &'static str,
    io: TokioIo<hyper::upgrade::Upgraded>,
    _permit: OwnedSemaphorePermit,
) {
    let mut shutdown = inner.shutdown.clone();
    let kind = pending.kind();
    tracing::debug!(kind, protocol, websocket, "streaming session started");
    let work = async {
        match (pending, websocket) {
            (Pending::PortForward(req), false) => portforward::serve(inner.clone(), req, io).await,
            (Pending::PortForward(req), true) => {
                let ws = websocket_stream(&inner, io).await;
                let tunnel = super::ws::tunnel(ws, inner.limits.max_frame);
                portforward::serve(inner.clone(), req, tunnel).await
            }
            (Pending::Exec(req), ws) => command(&inner, Command::Exec(req), ws, protocol, io).await,
            (Pending::Attach(req), ws) => {
                command(&inner, Command::Attach(req), ws, protocol, io).await
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = super::stopped(&mut shutdown) => {}
    }
    tracing::debug!(kind, "streaming session ended");
}

async fn command(
    inner: &Arc<Inner>,
    cmd: Command,
    websocket: bool,
    protocol: &'static str,
    io: TokioIo<hyper::upgrade::Upgraded>,
) {
    if websocket {
        let ws = websocket_stream(inner, io).await;
        remotecommand::serve_ws(inner.clone(), cmd, WsProto::from_name(protocol), ws).await
    } else {
        remotecommand::serve_spdy(inner.clone(), cmd, Version::from_name(protocol), io).await
    }
}

async fn websocket_stream<S>(inner: &Inner, io: S) -> WebSocketStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default()
        .max_message_size(Some(inner.limits.max_frame))
        .max_frame_size(Some(inner.limits.max_frame));
    WebSocketStream::from_raw_socket(io, WsRole::Server, Some(config)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_newest_offered() {
        let offered = vec!["v2.channel.k8s.io".to_string(), "v4.channel.k8s.io".into()];
        assert_eq!(
            negotiate(&offered, SPDY_COMMAND_PROTOCOLS),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(negotiate(&[], SPDY_COMMAND_PROTOCOLS), Some(""));
        assert_eq!(
            negotiate(&["v9.channel.k8s.io".into()], SPDY_COMMAND_PROTOCOLS),
            None
        );
    }
}
