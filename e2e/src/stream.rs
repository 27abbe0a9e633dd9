//! Clients for the daemon's streaming server, written for the tests from the wire protocol:
//! remotecommand over WebSocket (`v5.channel.k8s.io`, what `crictl --transport websocket` and
//! kubectl's newer clients offer) for exec and attach, port-forward as client-go does it over
//! WebSocket (`SPDY/3.1+portforward.k8s.io`: a SPDY/3.1 session carried in binary messages), and
//! exec over a plain SPDY/3.1 upgrade, as the kubelet and crictl's default transport do.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// `http://127.0.0.1:<port>/...` → the address to dial.
fn addr_of(url: &str) -> String {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("streaming URL without http://: {url}"));
    rest.split('/').next().unwrap_or_default().to_owned()
}

/// Upgrades `url` to a WebSocket offering `protocol`.
pub async fn ws_connect(
    url: &str,
    protocol: &str,
) -> Result<WebSocketStream<TcpStream>, tungstenite::Error> {
    let mut req = url.replace("http://", "ws://").into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protocol.parse().expect("protocol header"),
    );
    let tcp = TcpStream::connect(addr_of(url)).await?;
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await?;
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    assert_eq!(chosen.as_deref(), Some(protocol), "negotiated subprotocol");
    Ok(ws)
}

/// The HTTP status a refused upgrade got (e.g. 404 for a used token).
pub fn refused_status(e: &tungstenite::Error) -> Option<u16> {
    match e {
        tungstenite::Error::Http(resp) => Some(resp.status().as_u16()),
        _ => None,
    }
}

/// What an exec or attach session delivered.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The `metav1.Status` from the error channel, if one came.
    pub status: Option<serde_json::Value>,
    /// The server closed the session.
    pub closed: bool,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The exit code a client reads from the status: 0 on Success, the `ExitCode` cause on
    /// `NonZeroExitCode`.
    pub fn exit_code(&self) -> Option<i32> {
        let s = self.status.as_ref()?;
        match s["status"].as_str()? {
            "Success" => Some(0),
            _ if s["reason"] == "NonZeroExitCode" => s["details"]["causes"]
                .as_array()?
                .iter()
                .find(|c| c["reason"] == "ExitCode")?["message"]
                .as_str()?
                .parse()
                .ok(),
            _ => None,
        }
    }
}

/// An exec or attach session over WebSocket `v5.channel.k8s.io`: channel 0 stdin, 1 stdout,
/// 2 stderr, 3 the status, 4 terminal sizes; `[255, 0]` closes stdin.
pub struct RemoteCommand {
    ws: WebSocketStream<TcpStream>,
    pub output: Output,
}

impl RemoteCommand {
    pub async fn connect(url: &str) -> Result<Self, tungstenite::Error> {
        Ok(Self {
            ws: ws_connect(url, "v5.channel.k8s.io").await?,
            output: Output::default(),
        })
    }

    async fn send(&mut self, channel: u8, data: &[u8]) {
        let mut m = vec![channel];
        m.extend_from_slice(data);
        self.ws
            .send(Message::binary(m))
            .await
            .expect("sending on the session");
    }

    pub async fn stdin(&mut self, data: &[u8]) {
        self.send(0, data).await;
    }

    /// v5's close signal for stdin.
    pub async fn close_stdin(&mut self) {
        self.ws
            .send(Message::binary(vec![255, 0]))
            .await
            .expect("closing stdin");
    }

    pub async fn resize(&mut self, width: u16, height: u16) {
        let msg = serde_json::json!({"Width": width, "Height": height}).to_string();
        self.send(4, msg.as_bytes()).await;
    }

    /// Reads one message into `output`; false once the session is over.
    async fn read_one(&mut self) -> bool {
        match self.ws.next().await {
            Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                match b[0] {
                    1 => self.output.stdout.extend_from_slice(&b[1..]),
                    2 => self.output.stderr.extend_from_slice(&b[1..]),
                    3 if b.len() > 1 => {
                        self.output.status = Some(
                            serde_json::from_slice(&b[1..])
                                .unwrap_or_else(|e| panic!("status {:?}: {e}", &b[1..])),
                        )
                    }
                    _ => {}
                }
                true
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                self.output.closed = true;
                false
            }
            Some(Ok(_)) => true,
        }
    }

    /// Reads until stdout contains `needle`; panics with what came after `timeout`.
    pub async fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.output.stdout_text().contains(needle) {
            match tokio::time::timeout_at(deadline, self.read_one()).await {
                Ok(true) => {}
                Ok(false) => panic!("session ended before {needle:?} came: {:?}", self.output),
                Err(_) => panic!("no {needle:?} within {timeout:?}: {:?}", self.output),
            }
        }
    }

    /// Reads until the server ends the session.
    pub async fn finish(mut self, timeout: Duration) -> Output {
        let read = async { while self.read_one().await {} };
        if tokio::time::timeout(timeout, read).await.is_err() {
            panic!(
                "the session did not end within {timeout:?}: {:?}",
                self.output
            );
        }
        self.output
    }

    /// Hangs up from the client's side (as a user leaving `crictl attach`).
    pub async fn hang_up(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A minimal SPDY/3.1 client side, enough for port-forward: SYN_STREAM with headers, DATA, and
/// reading DATA / FIN / RST_STREAM for the streams it opened. Header blocks go out as stored
/// (uncompressed) zlib blocks without a dictionary, which any inflater reads; the server's header
/// blocks are never needed and so never inflated.
pub struct SpdyClient {
    io: Transport,
    next_id: u32,
    /// The zlib stream's two-byte header goes before the first header block only.
    zlib_started: bool,
    inbound: Vec<u8>,
}

/// What carries the SPDY bytes.
enum Transport {
    /// Binary messages of a WebSocket.
    Ws(Box<WebSocketStream<TcpStream>>),
    /// The TCP connection itself, after an HTTP upgrade.
    Tcp(TcpStream),
}

impl Transport {
    async fn send(&mut self, bytes: Vec<u8>) {
        match self {
            Transport::Ws(ws) => ws
                .send(Message::binary(bytes))
                .await
                .expect("sending a SPDY frame"),
            Transport::Tcp(t) => {
                use tokio::io::AsyncWriteExt;
                t.write_all(&bytes).await.expect("sending a SPDY frame")
            }
        }
    }

    /// The next bytes from the server; `None` once the connection ended.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        match self {
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => return Some(b.to_vec()),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            },
            Transport::Tcp(t) => {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 64 * 1024];
                match t.read(&mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(n) => Some(buf[..n].to_vec()),
                }
            }
        }
    }

    async fn close(&mut self) {
        match self {
            Transport::Ws(ws) => {
                let _ = WebSocketStream::close(ws, None).await;
            }
            Transport::Tcp(t) => {
                use tokio::io::AsyncWriteExt;
                let _ = t.shutdown().await;
            }
        }
    }
}

/// One stream's inbound side as the client saw it.
#[derive(Debug, Default, Clone)]
pub struct SpdyStreamData {
    pub data: Vec<u8>,
    pub fin: bool,
    pub reset: bool,
}

impl SpdyClient {
    /// Port-forward over WebSocket, as client-go's tunnelling dialer does it.
    pub async fn port_forward(url: &str) -> Result<Self, tungstenite::Error> {
        Ok(Self {
            io: Transport::Ws(Box::new(
                ws_connect(url, "SPDY/3.1+portforward.k8s.io").await?,
            )),
            next_id: 1,
            zlib_started: false,
            inbound: Vec::new(),
        })
    }

    /// Exec or attach over a plain SPDY/3.1 upgrade offering `protocol` (e.g.
    /// `v4.channel.k8s.io`); the error is the server's answer when it refused.
    pub async fn upgrade(url: &str, protocol: &str) -> Result<Self, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = addr_of(url);
        let path = url
            .strip_prefix("http://")
            .and_then(|r| r.find('/').map(|i| &r[i..]))
            .unwrap_or("/");
        let mut tcp = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
        );
        tcp.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match tcp.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => {
                    return Err(format!(
                        "connection ended: {}",
                        String::from_utf8_lossy(&head)
                    ));
                }
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(head);
        }
        let chosen = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("x-stream-protocol-version")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        assert_eq!(chosen, protocol, "negotiated protocol: {head}");
        Ok(Self {
            io: Transport::Tcp(tcp),
            next_id: 1,
            zlib_started: false,
            inbound: Vec::new(),
        })
    }

    fn header_block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut z = Vec::new();
        if !self.zlib_started {
            // CMF/FLG: deflate, 32 KiB window, no preset dictionary.
            z.extend_from_slice(&[0x78, 0x01]);
            self.zlib_started = true;
        }
        // One stored, non-final block: byte-aligned, so the next one continues the stream.
        let len = raw.len() as u16;
        z.push(0x00);
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(&raw);
        z
    }

    /// Opens a stream with `headers` (half-closed at once with `fin`); returns its id.
    pub async fn open(&mut self, headers: &[(&str, &str)], fin: bool) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let block = self.header_block(headers);
        let mut body = Vec::new();
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes()); // associated stream
        body.extend_from_slice(&[0, 0]); // priority, slot
        body.extend_from_slice(&block);
        self.control(1, u8::from(fin), &body).await;
        id
    }

    /// Half-closes a stream this side opened.
    pub async fn finish(&mut self, id: u32) {
        self.data(id, &[], true).await;
    }

    async fn control(&mut self, kind: u16, flags: u8, body: &[u8]) {
        let mut f = vec![0x80, 0x03];
        f.extend_from_slice(&kind.to_be_bytes());
        f.push(flags);
        f.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(body);
        self.io.send(f).await;
    }

    pub async fn data(&mut self, id: u32, data: &[u8], fin: bool) {
        let mut f = Vec::new();
        f.extend_from_slice(&id.to_be_bytes());
        f.push(u8::from(fin));
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        self.io.send(f).await;
    }

    /// Reads frames until every stream in `ids` has ended (FIN or reset); returns what each got.
    pub async fn read_until_ended(
        &mut self,
        ids: &[u32],
        timeout: Duration,
    ) -> Vec<SpdyStreamData> {
        let mut got = vec![SpdyStreamData::default(); ids.len()];
        let work = async {
            while got.iter().any(|s| !s.fin && !s.reset) {
                // Whole frames from what has arrived so far.
                while self.inbound.len() >= 8 {
                    let len =
                        u32::from_be_bytes([0, self.inbound[5], self.inbound[6], self.inbound[7]])
                            as usize;
                    if self.inbound.len() < 8 + len {
                        break;
                    }
                    let frame: Vec<u8> = self.inbound.drain(..8 + len).collect();
                    let flags = frame[4];
                    let body = &frame[8..];
                    if frame[0] & 0x80 == 0 {
                        let id = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                        if let Some(i) = ids.iter().position(|x| *x == id) {
                            got[i].data.extend_from_slice(body);
                            got[i].fin |= flags & 1 != 0;
                        }
                        continue;
                    }
                    let kind = u16::from_be_bytes([frame[2], frame[3]]);
                    let stream =
                        || u32::from_be_bytes([body[0], body[1], body[2], body[3]]) & 0x7fff_ffff;
                    match kind {
                        // SYN_REPLY may carry FIN.
                        2 if body.len() >= 4 => {
                            if let Some(i) = ids.iter().position(|x| *x == stream()) {
                                got[i].fin |= flags & 1 != 0;
                            }
                        }
                        3 if body.len() >= 4 => {
                            if let Some(i) = ids.iter().position(|x| *x == stream()) {
                                got[i].reset = true;
                            }
                        }
                        _ => {}
                    }
                }
                if !got.iter().any(|s| !s.fin && !s.reset) {
                    break;
                }
                match self.io.recv().await {
                    Some(b) => self.inbound.extend_from_slice(&b),
                    None => {
                        for s in got.iter_mut() {
                            s.reset |= !s.fin;
                        }
                    }
                }
            }
        };
        if tokio::time::timeout(timeout, work).await.is_err() {
            panic!("SPDY streams {ids:?} did not end within {timeout:?}");
        }
        got
    }

    pub async fn close(mut self) {
        self.io.close().await;
    }
}
